#!/usr/bin/env bash
# Fine-tune data-parallel on 8 devices (or --nproc=N) with the published recipe, its schedule scaled
# to the global batch size: validation every epoch, best checkpoint kept.
# Writes OUTPUT_DIR/{train.log,summary.json}; prints ActualFPS: <samples/s> and Accuracy: <dev metric> last.
# Usage: bash test/train_full_8p.sh --data_path=DIR [--model=roberta|albert] [--task=SST-2] ... (--help for all options)
MODE=full
NPROC_DEFAULT=8
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
launch "$@"
