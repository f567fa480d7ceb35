"""GLUE preprocessing: tsv files -> fairseq binary datasets for sentence_prediction (RoBERTa and ALBERT).

``preprocess_task`` is the Python entry point; ``fairseq-npu-preprocess-glue`` and
glue_scripts/preprocess_GLUE_tasks.sh are the command-line ones (see docs/preprocessing.md).
"""

from fairseq_npu.preprocess import glue  # noqa: F401
from fairseq_npu.preprocess.glue import GluePreprocessConfig, preprocess_task  # noqa: F401
from fairseq_npu.preprocess.tsv_reader import GlueInputError  # noqa: F401
