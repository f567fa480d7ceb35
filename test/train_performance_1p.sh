#!/usr/bin/env bash
# Measure training throughput on one device: a fixed number of updates, no validation, no checkpoints.
# Writes OUTPUT_DIR/{train.log,summary.json}; prints ActualFPS: <samples/s> last.
# Usage: bash test/train_performance_1p.sh --data_path=DIR [--model=roberta|albert] [--task=SST-2] ... (--help for all options)
MODE=performance
NPROC_DEFAULT=1
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
launch "$@"
