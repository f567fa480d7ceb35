#!/usr/bin/env bash
# The GPU check in one call, on a machine with a CUDA GPU and no network:
#   bash benchmarks/gpu_check.sh OUT_DIR            (after `bash benchmarks/gpu_wheels.sh` filled .gpu_payload/)
#   bash benchmarks/gpu_check.sh --dry-run OUT_DIR  (the same steps on this machine's CPU at tiny sizes)
#   --models roberta     only that model's rows in the throughput table (default roberta,albert)
# 1. installs what the GPU machine lacks from .gpu_payload/wheels into OUT_DIR/site, first on PYTHONPATH for the
#    machine's python3 ($PYTHON overrides) and its torch, transformers and accelerate; the plugin and the
#    benchmarks run from this checkout;
# 2. runs the CUDA tests (`pytest -m cuda`): OUT_DIR/pytest_cuda.{log,xml};
# 3. runs the throughput table (python -m benchmarks.compare: stock fairseq fp16 recipe, the launch script's
#    defaults, HF Trainer best; roberta_base and albert_base; batch 32; real SST-2): OUT_DIR/compare.{json,md};
# 4. writes OUT_DIR/gpu_report.json and OUT_DIR/gpu_report.md.
# Exits 0 only when every step passed. FAIRSEQ_NPU_GPU_PAYLOAD overrides the payload folder.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PAYLOAD="${FAIRSEQ_NPU_GPU_PAYLOAD:-$REPO/.gpu_payload}"
DRY_RUN=0
OUT=""
MODELS="roberta,albert"
die() { echo "gpu_check.sh: error: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --models) [ $# -ge 2 ] || die "--models needs a value"; MODELS="$2"; shift ;;
        --models=*) MODELS="${1#*=}" ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) [ -z "$OUT" ] || die "one OUT_DIR expected, got $OUT and $1"; OUT="$1" ;;
    esac
    shift
done
[ -n "$OUT" ] || die "usage: bash benchmarks/gpu_check.sh [--dry-run] OUT_DIR"
mkdir -p "$OUT" || die "cannot create $OUT"
OUT="$(cd "$OUT" && pwd)"
START=$(date +%s)

if [ "$DRY_RUN" = 1 ]; then
    # this machine's environment as it is; tiny models, a few updates, one repeat
    if [ -z "${PYTHON:-}" ]; then
        PYTHON="$(command -v python3)"
        [ -x "$REPO/.venv/bin/python" ] && PYTHON="$REPO/.venv/bin/python"
    fi
    DATA="${FAIRSEQ_NPU_SHARED_DATA:-$REPO/../shared/data}"
    [ -d "$DATA/glue" ] || DATA="$PAYLOAD/data"
    COMPARE=(--device cpu --size tiny --warmup 10 --updates 10 --repeats 1)
else
    [ -f "$PAYLOAD/SHA256SUMS" ] || die "$PAYLOAD not found: run bash benchmarks/gpu_wheels.sh on a networked machine first"
    (cd "$PAYLOAD" && sha256sum --check --quiet SHA256SUMS) || die "$PAYLOAD does not match its SHA256SUMS"
    # into a folder put first on PYTHONPATH, for the machine's own python3 (whether it lives in the system, a
    # conda env or a venv): a new venv would not see the torch of an outer venv
    PYTHON="${PYTHON:-$(command -v python3)}"
    SITE="$OUT/site"
    echo "gpu_check.sh: installing from $PAYLOAD/wheels into $SITE (for $PYTHON)"
    "$PYTHON" -m pip install --disable-pip-version-check --no-index --no-deps --upgrade --target "$SITE" \
        "$PAYLOAD"/wheels/*.whl >"$OUT/install.log" 2>&1 || die "installing the wheels failed (see $OUT/install.log)"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH"
    "$PYTHON" -c "import fairseq, hydra, omegaconf, bitarray, sacrebleu, pytest, transformers, accelerate, torch; \
assert torch.cuda.is_available(), 'torch sees no CUDA GPU'; print('fairseq', fairseq.__version__, 'torch', \
torch.__version__, torch.cuda.get_device_name(0))" >>"$OUT/install.log" 2>&1 \
        || die "the environment does not import (see $OUT/install.log)"
    # one GPU for everything (tests and table): with more visible, fairseq-train would train on all of them
    export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
    CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES%%,*}"
    if [ -d "$PAYLOAD/bin" ]; then  # SST-2 binarized by gpu_wheels.sh: benchmarks/glue_data.py's cache
        mkdir -p "$REPO/work_dirs/benchmarks/data" && cp -rn "$PAYLOAD/bin/." "$REPO/work_dirs/benchmarks/data/"
    fi
    DATA="$PAYLOAD/data"
    COMPARE=(--device cuda --size base --warmup 50 --updates 250 --repeats 1)
fi
# no network: transformers must not wait on the Hub (the Trainer's models are built from configs)
export PYTHON FAIRSEQ_NPU_SHARED_DATA="$DATA" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
cd "$REPO" || die "cannot enter $REPO"

echo "gpu_check.sh: CUDA tests (pytest -m cuda), log $OUT/pytest_cuda.log"
# time limits: a hung step (an NCCL rendezvous, say) must not cost the steps after it
timeout 420 "$PYTHON" -m pytest -m cuda -q -p no:cacheprovider --continue-on-collection-errors \
    --junitxml="$OUT/pytest_cuda.xml" tests \
    >"$OUT/pytest_cuda.log" 2>&1
TESTS_RC=$?
tail -n 1 "$OUT/pytest_cuda.log"

echo "gpu_check.sh: throughput table (python -m benchmarks.compare ${COMPARE[*]}), log $OUT/compare.log"
timeout 900 "$PYTHON" -m benchmarks.compare "${COMPARE[@]}" --models "$MODELS" --data-dir "$DATA" --out-dir "$OUT" \
    >"$OUT/compare.log" 2>&1
COMPARE_RC=$?
[ "$COMPARE_RC" = 0 ] || tail -n 20 "$OUT/compare.log"

"$PYTHON" -m benchmarks.gpu_report --out-dir "$OUT" --tests-rc "$TESTS_RC" --compare-rc "$COMPARE_RC" \
    --seconds $(( $(date +%s) - START )) $([ "$DRY_RUN" = 1 ] && echo --dry-run)
REPORT_RC=$?
[ "$TESTS_RC" = 0 ] && [ "$COMPARE_RC" = 0 ] && [ "$REPORT_RC" = 0 ]
