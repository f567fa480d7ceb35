#!/usr/bin/env bash
# Evaluate a fine-tuned checkpoint on the task's dev set, data-parallel on 8 devices (or --nproc=N):
# official metric and evaluation throughput.
# Writes OUTPUT_DIR/{eval.log,eval_summary.json} (a training run's files there stay as they were);
# prints ActualFPS: <samples/s> and Accuracy: <dev metric> last.
# Usage: bash test/train_eval_8p.sh --data_path=DIR [--model=roberta|albert] [--task=SST-2] ... (--help for all options)
MODE=eval
NPROC_DEFAULT=8
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
launch "$@"
