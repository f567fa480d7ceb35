#!/usr/bin/env bash
# The GPU check in one call of at most BUDGET_TOTAL_S seconds, on a machine with a CUDA GPU and no network:
#   bash benchmarks/gpu_check.sh OUT_DIR            (after `bash benchmarks/gpu_wheels.sh` filled .gpu_payload/)
#   bash benchmarks/gpu_check.sh --dry-run OUT_DIR  (the same steps on this machine's CPU at tiny sizes)
#   --models M1,M2   the throughput table's models (default roberta,albert)
#   --rows R1,R2     the throughput table's rows (default all: stock,launch,hf,hf-compile,launch-eager)
#   --seeds S1,S2    the accuracy row's seeds, all at once (default 1,2,3; a seed not done in its budget is left out)
# 1. installs what the GPU machine lacks from .gpu_payload/wheels into work_dirs/gpu_site, first on PYTHONPATH
#    for the machine's python3 ($PYTHON overrides) and its torch, transformers and accelerate;
# 2. the CUDA tests (`pytest -m cuda`) and, alongside them on the same GPU, the equal-budget accuracy row (python -m
#    benchmarks.capture_accuracy --concurrent: one SST-2 epoch from scratch, update captured vs eager, the same
#    seeds, every run at once): neither times anything, and one after the other they would not fit the call;
# 3. alone on the GPU, the throughput table (python -m benchmarks.compare: stock fairseq fp16 recipe, the launch
#    script's defaults with the update captured and eager, HF Trainer best and best + torch_compile (roberta only:
#    its compilation alone takes about 75 s); roberta_base and albert_base; batch 32; real SST-2);
# 4. OUT_DIR gets five files: gpu_report.json and .md (the targets checked), compare.json, accuracy.json and
#    logs.tar.gz (every log); work files live in a work_dirs/gpu_check.XXXXXX folder of this call, removed at
#    the end (their logs are in the archive), and the installed wheels in work_dirs/gpu_site.
# Exits 0 only when every step ran completely. FAIRSEQ_NPU_GPU_PAYLOAD overrides the payload folder.
set -uo pipefail

# each step's time budget (seconds; benchmarks/gpu_report.py reads these lines for the report and the docs)
BUDGET_INSTALL_S=30  # install the payload and check the environment
BUDGET_TESTS_S=150  # CUDA tests (pytest -m cuda), alongside the accuracy row
BUDGET_ACCURACY_S=165  # accuracy row, captured vs eager (benchmarks.capture_accuracy), alongside the tests
BUDGET_THROUGHPUT_S=330  # throughput table (benchmarks.compare), alone on the GPU
BUDGET_TOTAL_S=540  # the whole call, the report and the log archive included

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PAYLOAD="${FAIRSEQ_NPU_GPU_PAYLOAD:-$REPO/.gpu_payload}"
DRY_RUN=0
OUT=""
MODELS="roberta,albert"
ROWS="stock,launch,hf,hf-compile,launch-eager"
SEEDS="1,2,3"
die() { echo "gpu_check.sh: error: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --models|--rows|--seeds)
            [ $# -ge 2 ] || die "$1 needs a value"
            case "$1" in --models) MODELS="$2" ;; --rows) ROWS="$2" ;; --seeds) SEEDS="$2" ;; esac; shift ;;
        --models=*) MODELS="${1#*=}" ;;
        --rows=*) ROWS="${1#*=}" ;;
        --seeds=*) SEEDS="${1#*=}" ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) [ -z "$OUT" ] || die "one OUT_DIR expected, got $OUT and $1"; OUT="$1" ;;
    esac
    shift
done
[ -n "$OUT" ] || die "usage: bash benchmarks/gpu_check.sh [--dry-run] OUT_DIR"
mkdir -p "$OUT" || die "cannot create $OUT"
OUT="$(cd "$OUT" && pwd)"
SITE="$REPO/work_dirs/gpu_site"
case "$OUT/" in "$REPO/work_dirs/"*) die "OUT_DIR must not lie inside $REPO/work_dirs (the check's work files)" ;; esac
START=$(date +%s)
# the dry run's CPU is slower than the GPU and shared: its limits are the budgets times SLACK
SLACK=1
[ "$DRY_RUN" = 1 ] && SLACK=4
# this call's files only: the output folder never mixes two checks, and two checks (or a check and the CPU
# benchmarks) never share a work folder
WORK="$(mkdir -p "$REPO/work_dirs" && mktemp -d "$REPO/work_dirs/gpu_check.XXXXXX")" \
    || die "cannot create a work folder in $REPO/work_dirs"
archive() {  # every log in one archive: this call's step logs and the runs' own (compare rows, accuracy arms)
    (cd "$WORK" && tar -czf "$OUT/logs.tar.gz" --exclude='*.pt' $(ls -A)) \
        || echo "gpu_check.sh: warning: the log archive is incomplete" >&2
}
# a check stopped early (die) still leaves its logs in OUT_DIR
trap '[ -f "$OUT/logs.tar.gz" ] || archive; rm -rf "$WORK"' EXIT
rm -f "$OUT"/{gpu_report.json,gpu_report.md,compare.json,accuracy.json,logs.tar.gz}

if [ "$DRY_RUN" = 1 ]; then
    # this machine's environment as it is; tiny models, a few updates, one repeat
    if [ -z "${PYTHON:-}" ]; then
        PYTHON="$(command -v python3)"
        [ -x "$REPO/.venv/bin/python" ] && PYTHON="$REPO/.venv/bin/python"
    fi
    DATA="${FAIRSEQ_NPU_SHARED_DATA:-$REPO/../shared/data}"
    [ -d "$DATA/glue" ] || DATA="$PAYLOAD/data"
    COMPARE=(--device cpu --size tiny --warmup 10 --updates 10 --repeats 1 --compile-backend eager)
    ACCURACY=(--device cpu --size tiny --max-update 20)
    echo "gpu_check.sh: dry run on this CPU with $PYTHON" >"$WORK/install.log"
else
    [ -f "$PAYLOAD/SHA256SUMS" ] || die "$PAYLOAD not found: run bash benchmarks/gpu_wheels.sh on a networked machine first"
    (cd "$PAYLOAD" && sha256sum --check --quiet SHA256SUMS) || die "$PAYLOAD does not match its SHA256SUMS"
    # into a folder put first on PYTHONPATH, for the machine's own python3 (whether it lives in the system, a
    # conda env or a venv): a new venv would not see the torch of an outer venv
    PYTHON="${PYTHON:-$(command -v python3)}"
    echo "gpu_check.sh: installing from $PAYLOAD/wheels into $SITE (for $PYTHON)"
    rm -rf "$SITE"
    timeout "$BUDGET_INSTALL_S" "$PYTHON" -m pip install --disable-pip-version-check --no-index --no-deps --upgrade \
        --target "$SITE" "$PAYLOAD"/wheels/*.whl >"$WORK/install.log" 2>&1 \
        || die "installing the wheels failed (see install.log in $OUT/logs.tar.gz)"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH"
    "$PYTHON" -c "import fairseq, hydra, omegaconf, bitarray, sacrebleu, tensorboardX, pytest, transformers, \
accelerate, torch; assert torch.cuda.is_available(), 'torch sees no CUDA GPU'; print('fairseq', fairseq.__version__, \
'torch', torch.__version__, torch.cuda.get_device_name(0))" >>"$WORK/install.log" 2>&1 \
        || die "the environment does not import (see install.log in $OUT/logs.tar.gz)"
    # one GPU for everything (tests and table): with more visible, fairseq-train would train on all of them
    export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
    CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES%%,*}"
    if [ -d "$PAYLOAD/bin" ]; then  # SST-2 binarized by gpu_wheels.sh: benchmarks/glue_data.py's cache
        mkdir -p "$REPO/work_dirs/benchmarks/data" && cp -rn "$PAYLOAD/bin/." "$REPO/work_dirs/benchmarks/data/"
    fi
    DATA="$PAYLOAD/data"
    # the compile row for roberta only: with albert's too the call would not fit BUDGET_TOTAL_S
    COMPARE=(--device cuda --size base --warmup 50 --updates 250 --repeats 1 --compile-models roberta)
    ACCURACY=(--device cuda --size base)
fi
INSTALL_S=$(( $(date +%s) - START ))
# no network: transformers must not wait on the Hub (the Trainer's models are built from configs)
export PYTHON FAIRSEQ_NPU_SHARED_DATA="$DATA" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
cd "$REPO" || die "cannot enter $REPO"

# each step under a time limit (a hung step, an NCCL rendezvous say, must not cost the steps after it); the
# table and the accuracy row also get their budget to plan by, and stop starting runs when it is spent.
# The accuracy row runs in the background while the CUDA tests run: both only check results, and the accuracy
# row's eager arm is host-bound, so the GPU has room for both. The table then runs with the GPU to itself.
ACC_BUDGET=$(( BUDGET_ACCURACY_S * SLACK ))
echo "gpu_check.sh: accuracy row, captured vs eager (python -m benchmarks.capture_accuracy ${ACCURACY[*]}" \
    "--concurrent, at most $ACC_BUDGET s), alongside the CUDA tests"
T0=$(date +%s)
( timeout $(( ACC_BUDGET + 15 * SLACK )) "$PYTHON" -m benchmarks.capture_accuracy "${ACCURACY[@]}" --seeds "$SEEDS" \
    --concurrent --time-budget "$ACC_BUDGET" --data-dir "$DATA" --out-dir "$WORK/accuracy" \
    --work-dir "$WORK/accuracy_runs" >"$WORK/accuracy.log" 2>&1
  echo $? >"$WORK/accuracy.rc"; echo $(( $(date +%s) - T0 )) >"$WORK/accuracy.seconds" ) &
ACC_PID=$!

echo "gpu_check.sh: CUDA tests (pytest -m cuda, at most $BUDGET_TESTS_S s)"
timeout $(( BUDGET_TESTS_S * SLACK )) "$PYTHON" -m pytest -m cuda -q -p no:cacheprovider \
    --continue-on-collection-errors \
    --junitxml="$WORK/pytest_cuda.xml" tests \
    >"$WORK/pytest_cuda.log" 2>&1
TESTS_RC=$?
TESTS_S=$(( $(date +%s) - T0 ))
tail -n 1 "$WORK/pytest_cuda.log"

# the accuracy row stops itself at its budget (its runs with it); the outer timeout is a backstop
wait "$ACC_PID"
ACCURACY_RC=$(cat "$WORK/accuracy.rc" 2>/dev/null || echo 5)
ACCURACY_S=$(cat "$WORK/accuracy.seconds" 2>/dev/null || echo $(( $(date +%s) - T0 )))
tail -n 1 "$WORK/accuracy.log"
[ -f "$WORK/accuracy/accuracy.json" ] && cp "$WORK/accuracy/accuracy.json" "$OUT/accuracy.json"

echo "gpu_check.sh: throughput table (python -m benchmarks.compare ${COMPARE[*]}, at most $BUDGET_THROUGHPUT_S s)"
T0=$(date +%s)
# planned to the budget less a margin for writing its table, and never past the call's end; the hard limit is
# the budget itself
LEFT=$(( BUDGET_TOTAL_S * SLACK - ($(date +%s) - START) - 15 ))  # 15 s for the report and the archive
TP_BUDGET=$(( LEFT < BUDGET_THROUGHPUT_S * SLACK ? LEFT : BUDGET_THROUGHPUT_S * SLACK ))
timeout "$TP_BUDGET" "$PYTHON" -m benchmarks.compare "${COMPARE[@]}" --models "$MODELS" \
    --rows "$ROWS" --time-budget $(( TP_BUDGET - 10 * SLACK )) --data-dir "$DATA" \
    --out-dir "$WORK/compare" --work-dir "$WORK/compare_runs" \
    >"$WORK/compare.log" 2>&1
COMPARE_RC=$?
THROUGHPUT_S=$(( $(date +%s) - T0 ))
grep -E "^[a-z]+ \| " "$WORK/compare.log"  # each run's line and the ratios
[ -f "$WORK/compare/compare.json" ] && cp "$WORK/compare/compare.json" "$OUT/compare.json"
# a table cut short (rows out of budget) is incomplete: the check must not pass with it
if [ "$COMPARE_RC" = 0 ] && ! grep -q '"complete": true' "$OUT/compare.json" 2>/dev/null; then COMPARE_RC=3; fi

"$PYTHON" -m benchmarks.gpu_report --out-dir "$OUT" --work-dir "$WORK" --seconds $(( $(date +%s) - START )) \
    --exit-codes "install=0,tests=$TESTS_RC,throughput=$COMPARE_RC,accuracy=$ACCURACY_RC" \
    --step-seconds "install=$INSTALL_S,tests=$TESTS_S,throughput=$THROUGHPUT_S,accuracy=$ACCURACY_S" \
    $([ "$DRY_RUN" = 1 ] && echo --dry-run)
REPORT_RC=$?
archive
echo "gpu_check.sh: $OUT: $(ls "$OUT" | tr '\n' ' ')($(( $(date +%s) - START )) s)"
[ "$TESTS_RC" = 0 ] && [ "$COMPARE_RC" = 0 ] && [ "$ACCURACY_RC" = 0 ] && [ "$REPORT_RC" = 0 ]
