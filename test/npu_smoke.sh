#!/usr/bin/env bash
# NPU bring-up check: every precision mode (fp32, --amp fp16/bf16, --fp16, --bf16, --use-apex O2/O1) with each
# optimizer (adam, fused_adamw) trains a tiny model for a few updates; checks that the loss falls, that the
# optimizer's kernel reads finite, non-zero gradients at every update, and that the first update's gradients match
# the fp32 run's. Prints a table; exits 1 if any pairing fails. A few minutes at most; no data needed.
#
#   bash test/npu_smoke.sh [--device=npu|cuda|cpu] [--updates N] [--modes fp32,amp-fp16,...]
#                          [--optimizers adam,fused_adamw] [--json FILE]
# (the options after --device go to python -m fairseq_npu.amp.smoke; see its --help)

set -o pipefail
TEST_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$TEST_DIR")"
# shellcheck source=script_env.sh
source "$TEST_DIR/script_env.sh"
choose_python "$REPO"

DEVICE="${FAIRSEQ_NPU_DEVICE:-auto}"
ARGS=()
for arg in "$@"; do
    case "$arg" in
        --device=*) DEVICE="${arg#--device=}" ;;
        *) ARGS+=("$arg") ;;
    esac
done
check_device_name npu_smoke.sh "$DEVICE"
if [[ "$DEVICE" == npu || "$DEVICE" == auto ]]; then
    # shellcheck source=env_npu.sh
    source "$TEST_DIR/env_npu.sh"
fi
export FAIRSEQ_NPU_DEVICE="$DEVICE"
cd "$REPO" && PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m fairseq_npu.amp.smoke "${ARGS[@]}"
