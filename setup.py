"""fairseq_npu: fine-tune RoBERTa and ALBERT on GLUE with stock fairseq-train on Ascend NPU, CUDA and CPU.

fairseq itself is NOT listed in install_requires: every fairseq distribution lists torchaudio, which pulls a
second multi-GB torch build. Install it beside this package with ``pip install --no-deps ve-fairseq==0.12.3``
(the fairseq build that imports on Python 3.11/3.12); `make install` does both. The requirements below are
fairseq's own (minus torchaudio) plus what the plugin uses.
"""

from setuptools import find_packages, setup

FAIRSEQ_REQUIREMENTS = [  # ve-fairseq 0.12.3's requirements without torchaudio
    "torch>=2.1",
    "hydra-core>=1.3.2",
    "omegaconf>=2.3",
    "numpy>=1.21.3",
    "regex",
    "sacrebleu>=1.4.12",
    "tqdm",
    "bitarray",
    "cffi",
    "cython",
    "packaging",
]

PLUGIN_REQUIREMENTS = [
    "scikit-learn",  # GLUE metrics (F1, Matthews correlation)
    "scipy",  # GLUE metrics (Pearson, Spearman)
    "sentencepiece>=0.1.99",  # ALBERT vocabulary
    "tiktoken>=0.8",  # fast GPT-2 byte-level BPE; ids checked identical to fairseq's encoder (tests)
    "safetensors",  # Hugging Face checkpoints
    # --tensorboard-logdir: fairseq writes with tensorboardX first (~0.1 MB + protobuf); the viewer (tensorboard,
    # ~30 MB with grpcio) is only needed where the logs are looked at
    "tensorboardX",
]

setup(
    name="fairseq_npu",
    version="0.1.0",
    description="fairseq --user-dir plugin: RoBERTa and ALBERT GLUE fine-tuning on Ascend NPU, CUDA and CPU",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["fairseq_npu", "fairseq_npu.*"]),
    install_requires=FAIRSEQ_REQUIREMENTS + PLUGIN_REQUIREMENTS,
    extras_require={
        # transformers is the parity reference in tests and reads Hugging Face configs in the converter
        # accelerate: what transformers.Trainer needs (the Hugging Face column of the benchmarks, which the GPU
        # check's dry run in the suite exercises too); transformers 5 asks for >= 1.1.0
        "test": ["pytest>=7", "pytest-xdist>=3", "transformers>=4.40", "accelerate>=1.1.0"],
        "convert": ["transformers>=4.40"],
        "bench": ["matplotlib", "transformers>=4.40", "accelerate>=1.1.0"],
    },
    entry_points={
        "console_scripts": [
            "fairseq-npu-preprocess-glue = fairseq_npu.preprocess.glue:cli_main",
            "fairseq-npu-convert = fairseq_npu.convert.cli:cli_main",
            "fairseq-npu-export = fairseq_npu.convert.export:cli_main",
            "fairseq-npu-evaluate = fairseq_npu.cli.evaluate:cli_main",
            "fairseq-npu-predict = fairseq_npu.cli.predict:cli_main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
