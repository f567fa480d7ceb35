"""The embedded end-to-end run behind ``make demo``: no download, a few minutes on a laptop CPU.

1. writes the learnable synthetic task of ``fairseq_npu.synthetic`` in GLUE's SST-2 layout,
2. preprocesses it with the plugin's GLUE preprocessor in its from-scratch mode (a SentencePiece vocabulary trained
   on the train split, since no pretrained vocabulary is assumed),
3. fine-tunes a small model from scratch with the launch script ``test/train_full_1p.sh`` (stock ``fairseq-train
   --user-dir fairseq_npu --task sentence_prediction_npu --optimizer fused_adamw``),
4. prints dev accuracy and training samples/s from the run's ``summary.json``.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from fairseq_npu import synthetic
from fairseq_npu.preprocess.glue import preprocess_task

REPO = Path(__file__).resolve().parents[1]
SMALL_MODEL_ARGS = {  # a few hundred thousand parameters: trains in a minute on two cores
    "roberta": ["--encoder-layers", "2", "--encoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128",
                "--encoder-attention-heads", "4", "--max-positions", "64"],
    "albert": ["--encoder-layers", "2", "--encoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128",
               "--encoder-attention-heads", "4", "--embedding-dim", "32", "--max-positions", "64"],
}


def run_demo(workdir: Path, model: str, device: str, epochs: int) -> dict:
    raw = synthetic.write_task(workdir / "glue" / "SST-2", n_train=2000, n_dev=200, n_test=100)
    data = preprocess_task(workdir / "glue", "SST-2", dest=workdir / "data", model="albert", task_dir=raw,
                           train_spm_vocab_size=300)
    output_dir = workdir / f"{model}_SST-2_full_1p"
    command = [
        "bash", str(REPO / "test" / "train_full_1p.sh"), f"--data_path={data}", f"--model={model}", "--task=SST-2",
        f"--device={device}", f"--output_dir={output_dir}", "--lr=1e-3", f"--max-epoch={epochs}",
        "--batch-size=32", *SMALL_MODEL_ARGS[model], "--log-interval", "10",
    ]
    print("+ " + " ".join(command), flush=True)
    subprocess.run(command, cwd=REPO, check=True, env=dict(os.environ, PYTHON=sys.executable))
    return json.loads((output_dir / "summary.json").read_text())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("demo_output"))
    parser.add_argument("--model", choices=["roberta", "albert"], default="roberta")
    parser.add_argument("--device", choices=["npu", "cuda", "cpu"], default="cpu",
                        help="cpu by default so the demo behaves the same everywhere")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    summary = run_demo(args.workdir.resolve(), args.model, args.device, args.epochs)
    print(f"demo: {args.model} on {summary['device_type']}: best dev {summary['metric_name']} "
          f"{summary['best_metric']}, {summary['fps']} training samples/s "
          f"(summary: {args.workdir / f'{args.model}_SST-2_full_1p' / 'summary.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
