#!/bin/bash
# GLUE tsv files -> fairseq binary data for sentence_prediction: DEST/TASK-bin/{input0,input1,label}.
# A thin shell over the Python preprocessor (fairseq_npu.preprocess); every option is passed through.
#
#   bash glue_scripts/preprocess_GLUE_tasks.sh GLUE_DIR TASK|ALL [--model roberta|albert] [--vocab-dir DIR]
#        [--dest DIR] [--workers N] [--spm-model FILE] [--train-spm VOCAB_SIZE] [--skip-bad-rows]
#
# RoBERTa output is byte-identical to fairseq's examples/roberta/preprocess_GLUE_tasks.sh. See
# docs/preprocessing.md, or run with --help for every option. Set PYTHON to choose the interpreter.
set -euo pipefail

if [[ $# -lt 2 && "${1:-}" != "-h" && "${1:-}" != "--help" ]]; then
  echo "usage: $0 GLUE_DIR TASK|ALL [--model roberta|albert] [--vocab-dir DIR] [--dest DIR] [--workers N] ..." >&2
  echo "       (--help for every option)" >&2
  exit 2
fi

# interpreter: $PYTHON; else an activated virtualenv's; else this repository's .venv (`make install`); else python3
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" && -z "${VIRTUAL_ENV:-}" && -x "$REPO/.venv/bin/python" ]]; then
  PYTHON="$REPO/.venv/bin/python"
fi
exec "${PYTHON:-python3}" -m fairseq_npu.preprocess "$@"
