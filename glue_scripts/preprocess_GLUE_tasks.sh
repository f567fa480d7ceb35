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

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../test/script_env.sh
source "$REPO/test/script_env.sh"
choose_python "$REPO"
exec "$PYTHON" -m fairseq_npu.preprocess "$@"
