#!/usr/bin/env bash
# Fine-tune on one device with the task's published recipe: validation every epoch, best checkpoint kept.
# Writes OUTPUT_DIR/{train.log,summary.json}; prints ActualFPS: <samples/s> and Accuracy: <dev metric> last.
# Usage: bash test/train_full_1p.sh --data_path=DIR [--model=roberta|albert] [--task=SST-2] ... (--help for all options)
MODE=full
NPROC_DEFAULT=1
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
launch "$@"
