# Shared logic of the launch scripts test/train_*.sh; sourced, never run. The calling script sets
#   MODE          full | performance | eval
#   NPROC_DEFAULT processes (devices) per node when --nproc is not given: 1 for *_1p.sh, 8 for *_8p.sh
# and calls `launch "$@"`. Recipes, the fairseq command line, FPS and summary.json live in fairseq_npu/launch/.

set -o pipefail

TEST_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$TEST_DIR")"
SCRIPT="$(basename "${BASH_SOURCE[1]:-$0}")"
# shellcheck source=script_env.sh
source "$TEST_DIR/script_env.sh"
choose_python "$REPO"

usage() {
    cat <<EOF
usage: bash test/$SCRIPT --data_path=DIR [options] [-- extra fairseq args]

  --data_path=DIR        preprocessed GLUE task (TASK-bin with input0/ [input1/] label/)
  --model=roberta|albert (default roberta)
  --task=NAME            a GLUE task with a published recipe, sst2 or SST-2 alike (default SST-2; the tasks:
                         fairseq_npu/glue_tasks.py, their recipes: fairseq_npu/launch/recipes.py)
  --device=npu|cuda|cpu  (default: npu if present, else cuda, else cpu)
  --nproc=N              processes on this node, one per device (default $NPROC_DEFAULT)
  --output_dir=DIR       log, checkpoints, summary.json (default test/output/MODEL_TASK_MODE_Np)
  --restore-file=PATH    pretrained (converted) checkpoint to fine-tune; for train_eval: the checkpoint to evaluate
                         (default OUTPUT_DIR/checkpoints/checkpoint_best.pt)
  --batch-size=N         sentences per device per update (default: the recipe's)
  --lr=X                 peak learning rate (default: the recipe's)
  --max-epoch=N          epochs (default: the recipe's; the schedule follows)
  --max-update=N         performance runs: updates to time (default 1000)
  --max-tokens=N         token cap per batch (default 4400)
  --num-classes=N        (default: the task's)
  --preset=fast|stock    fast (default): the device's fastest settings on top of the recipe (length grouping,
                         fused_adamw, bf16 where the device has it natively, npu pad buckets); stock: fairseq's
                         adam and precision, for comparisons (fairseq_npu/launch/recipes.py, docs/launch.md)
  --precision=auto|fp32|fp16|bf16|amp   (auto: as the preset decides; stock: fp16 on npu/cuda, fp32 on cpu)
  --use-apex [--opt-level=O0|O1|O2]     apex AMP as the ModelZoo scripts used it (default: the plugin's,
                                        fairseq_npu/precision.py)
  --device_id=N          single-device runs: which device (default \$ASCEND_DEVICE_ID or 0)
  --nnodes=N --node_rank=R --master_addr=HOST --master_port=PORT   multi-node, passed to torchrun
  --seeds=1,2,3,4,5      full runs: one fine-tuning per seed into OUTPUT_DIR/seed<N>; OUTPUT_DIR/summary.json and
                         the Accuracy: line give the median over the seeds, with std, mean, min, max beside it
Anything else is passed to fairseq verbatim, after the recipe, so it overrides it.
EOF
}

die() {
    echo "$SCRIPT: error: $*" >&2
    exit 2
}

# the helpers in fairseq_npu/launch import no fairseq: FAIRSEQ_NPU_PLUGIN=off keeps fairseq_npu/__init__.py from
# importing it (several seconds per call) and from installing the hooks
launch_helper() {
    FAIRSEQ_NPU_PLUGIN=off PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m fairseq_npu.launch "$@"
}

parse_args() {
    DATA_PATH="" MODEL="roberta" TASK="SST-2" DEVICE="auto" NPROC="" OUTPUT_DIR="" RESTORE_FILE=""
    BATCH_SIZE="" LR="" MAX_EPOCH="" MAX_UPDATE="" MAX_TOKENS="" NUM_CLASSES="" PRECISION="auto" PRESET=""
    USE_APEX=0 OPT_LEVEL="" DEVICE_ID="${ASCEND_DEVICE_ID:-}"
    NNODES=1 NODE_RANK=0 MASTER_ADDR_ARG="" MASTER_PORT_ARG=""
    EXTRA=()
    declare -gA GIVEN=()  # variable -> the flag as the user spelled it, for the error lines
    while [ $# -gt 0 ]; do
        local arg="$1" name value
        case "$arg" in
            -h|--help) usage; exit 0 ;;
            --) shift; EXTRA+=("$@"); break ;;
            --use-apex|--use_apex) USE_APEX=1; shift; continue ;;
        esac
        name="${arg%%=*}"
        case "$name" in
            --data_path|--data-path|--model|--task|--device|--nproc|--output_dir|--output-dir|--restore-file|\
            --restore_file|--batch-size|--batch_size|--lr|--max-epoch|--max_epoch|--max-update|--max_update|\
            --max-tokens|--max_tokens|--num-classes|--num_classes|--precision|--preset|--opt-level|--opt_level|\
            --device_id|--device-id|--nnodes|--node_rank|--node-rank|--master_addr|--master-addr|\
            --master_port|--master-port)
                if [ "$name" != "$arg" ]; then
                    value="${arg#*=}"
                    shift
                else
                    [ $# -ge 2 ] || die "$name needs a value"
                    value="$2"
                    shift 2
                fi
                ;;
            *) EXTRA+=("$arg"); shift; continue ;;
        esac
        local key="${name#--}"
        key="${key//-/_}"
        GIVEN["${key^^}"]="$name"
        case "${name//_/-}" in
            --data-path) DATA_PATH="$value" ;;
            --model) MODEL="$value" ;;
            --task) TASK="$value" ;;
            --device) DEVICE="$value" ;;
            --nproc) NPROC="$value" ;;
            --output-dir) OUTPUT_DIR="$value" ;;
            --restore-file) RESTORE_FILE="$value" ;;
            --batch-size) BATCH_SIZE="$value" ;;
            --lr) LR="$value" ;;
            --max-epoch) MAX_EPOCH="$value" ;;
            --max-update) MAX_UPDATE="$value" ;;
            --max-tokens) MAX_TOKENS="$value" ;;
            --num-classes) NUM_CLASSES="$value" ;;
            --precision) PRECISION="$value" ;;
            --preset) PRESET="$value" ;;
            --opt-level) OPT_LEVEL="$value" ;;
            --device-id) DEVICE_ID="$value" ;;
            --nnodes) NNODES="$value" ;;
            --node-rank) NODE_RANK="$value" ;;
            --master-addr) MASTER_ADDR_ARG="$value" ;;
            --master-port) MASTER_PORT_ARG="$value" ;;
        esac
    done
    [ -n "$DATA_PATH" ] || die "--data_path=DIR is required (see --help)"
    check_numbers
    case "$MODEL" in roberta|albert) ;; *) die "--model=$MODEL: expected roberta or albert" ;; esac
    check_device_name "$SCRIPT" "$DEVICE"
}

# every number a user gives is checked here, before anything runs, and is then used as given: an impossible value
# (zero or negative sizes, epochs, updates, processes, learning rate) is one line naming the flag as it was typed
flag_of() { echo "${GIVEN[$1]:---$(echo "$1" | tr 'A-Z_' 'a-z_')}"; }
check_numbers() {
    local n
    for n in NPROC NNODES BATCH_SIZE MAX_EPOCH MAX_UPDATE MAX_TOKENS NUM_CLASSES; do
        [ -n "${!n}" ] || continue
        [[ "${!n}" =~ ^[0-9]+$ ]] && (( 10#${!n} >= 1 )) \
            || die "$(flag_of "$n")=${!n}: expected a whole number >= 1"
    done
    for n in NODE_RANK DEVICE_ID; do
        [ -n "${!n}" ] || continue
        [[ "${!n}" =~ ^[0-9]+$ ]] || die "$(flag_of "$n")=${!n}: expected a whole number >= 0"
    done
    (( 10#$NODE_RANK < 10#$NNODES )) || die "$(flag_of NODE_RANK)=$NODE_RANK: expected less than --nnodes=$NNODES"
    if [ -n "$MASTER_PORT_ARG" ]; then
        [[ "$MASTER_PORT_ARG" =~ ^[0-9]+$ ]] && (( 10#$MASTER_PORT_ARG >= 1 && 10#$MASTER_PORT_ARG <= 65535 )) \
            || die "$(flag_of MASTER_PORT)=$MASTER_PORT_ARG: expected a port number, 1 to 65535"
    fi
    # a flag this kind of run would not use is refused rather than dropped
    [ "$MODE" = full ] && [ -n "$MAX_UPDATE" ] && die "$(flag_of MAX_UPDATE)=$MAX_UPDATE: full runs train whole \
epochs (--max-epoch); to stop after N updates pass fairseq's own flag after --: -- --max-update N"
    if [ "$MODE" = eval ]; then
        for n in LR MAX_EPOCH MAX_UPDATE NUM_CLASSES; do
            [ -z "${!n}" ] || die "$(flag_of "$n")=${!n}: evaluation trains nothing (the checkpoint sets the model)"
        done
    fi
    if [ -n "$LR" ]; then
        [[ "$LR" =~ ^[+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?$ ]] \
            && awk -v x="$LR" 'BEGIN { exit !(x + 0 > 0) }' || die "$(flag_of LR)=$LR: expected a number > 0"
    fi
}

choose_device() {
    # the device and its count as fairseq_npu.device chooses them for training (npu > cuda > cpu when auto)
    local found asked="${NPROC:-$NPROC_DEFAULT}" have
    found="$(launch_helper device --device "$DEVICE")" || die "could not use --device=$DEVICE (see the message above)"
    read -r DEVICE have <<< "$found"
    # cpu "devices" are cores as nproc counts them (it honours OMP_NUM_THREADS), like the thread split below
    [ "$DEVICE" = cpu ] && have="$(nproc)"
    if [ "$DEVICE" = npu ] && [ -f "$TEST_DIR/env_npu.sh" ]; then
        CALLER_TASK_QUEUE="${TASK_QUEUE_ENABLE-}"  # a level the caller chose is kept (npu_task_queue)
        # shellcheck source=env_npu.sh
        source "$TEST_DIR/env_npu.sh"
    fi
    if [ "$asked" -gt "$have" ] && { [ "$DEVICE" != cpu ] || [ -z "$NPROC" ]; }; then
        local what="$DEVICE device(s)"
        [ "$DEVICE" = cpu ] && what="cpu core(s)"
        die "$asked processes asked, one per device, but only $have $what visible on this node; pass --nproc=N (N <= $have) to use fewer"
    fi
    NPROC="$asked"
    WORLD_SIZE_TOTAL=$((NPROC * NNODES))
    if [ "$DEVICE" = cpu ] && [ -z "${OMP_NUM_THREADS:-}" ]; then
        # share the cores between the gloo processes instead of oversubscribing them
        local threads=$(( $(nproc) / NPROC ))
        export OMP_NUM_THREADS=$(( threads > 0 ? threads : 1 ))
    fi
}

# --seeds=LIST is taken out before parse_args: each seed's run is this same script, without it (run_seeds)
split_seeds() {
    SEEDS="" LAUNCH_ARGS=() FAIRSEQ_TAIL=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --) FAIRSEQ_TAIL=("$@"); break ;;
            --seeds=*) SEEDS="${1#*=}"; [ -n "$SEEDS" ] || die "--seeds needs a value"; shift ;;
            --seeds) [ $# -ge 2 ] || die "--seeds needs a value"; SEEDS="$2"; shift 2 ;;
            *) LAUNCH_ARGS+=("$1"); shift ;;
        esac
    done
}

run_seeds() {
    [ "$MODE" = full ] || die "--seeds=$SEEDS: one fine-tuning per seed is for train_full_1p.sh and train_full_8p.sh"
    local a
    for a in "${EXTRA[@]}"; do
        case "$a" in --seed|--seed=*) die "--seeds=$SEEDS and $a together: --seeds sets each run's --seed" ;; esac
    done
    local list seed rc codes=()
    list="$(launch_helper seeds check --seeds "$SEEDS")" || die "could not use --seeds=$SEEDS (see the message above)"
    for seed in $list; do
        echo "$SCRIPT: seed $seed (of $list), output $OUTPUT_DIR/seed$seed"
        run_stoppable bash "$TEST_DIR/$SCRIPT" "${LAUNCH_ARGS[@]}" --output_dir="$OUTPUT_DIR/seed$seed" \
            --seed "$seed" "${FAIRSEQ_TAIL[@]}"
        rc=$?
        [ -n "$STOPPED_BY" ] && exit "$rc"
        [ "$rc" = 0 ] || echo "$SCRIPT: seed $seed failed (exit code $rc); going on with the other seeds" >&2
        codes+=("$rc")
    done
    # summary.json over the seeds, then the final lines; exits 1 when a seed failed (reported, not dropped)
    launch_helper seeds summarize --seeds "$SEEDS" --output-dir "$OUTPUT_DIR" --exit-codes "$(IFS=,; echo "${codes[*]}")"
    exit $?
}

launch() {
    split_seeds "$@"
    parse_args "${LAUNCH_ARGS[@]}" "${FAIRSEQ_TAIL[@]}"
    choose_device
    local mode_tag="$MODE"
    [ "$MODE" = performance ] && mode_tag=perf
    local task_tag="${TASK//[^A-Za-z0-9]/}"
    OUTPUT_DIR="${OUTPUT_DIR:-$REPO/test/output/${MODEL}_${task_tag}_${mode_tag}_${WORLD_SIZE_TOTAL}p}"
    mkdir -p "$OUTPUT_DIR" || die "--output_dir=$OUTPUT_DIR: cannot create it"
    OUTPUT_DIR="$(cd "$OUTPUT_DIR" && pwd)"
    DATA_PATH="$(realpath -m "$DATA_PATH")"
    lock_output_dir
    [ -n "$SEEDS" ] && run_seeds
    # evaluation writes its own files: evaluating into a training run's folder keeps that run's record
    local files=""
    [ "$MODE" = eval ] && files="eval_"
    rm -f "$OUTPUT_DIR/${files}summary.json"  # an earlier run's: the plan writes this run's (status running)

    local plan=(plan --mode "$MODE" --data "$DATA_PATH" --model "$MODEL" --task "$TASK" --device "$DEVICE"
                --world-size "$WORLD_SIZE_TOTAL" --nnodes "$NNODES" --output-dir "$OUTPUT_DIR"
                --precision "$PRECISION" --files-prefix "$files")
    [ -n "$PRESET" ] && plan+=(--preset "$PRESET")
    [ -n "$OPT_LEVEL" ] && plan+=(--opt-level "$OPT_LEVEL")
    [ -n "$RESTORE_FILE" ] && plan+=(--restore-file "$(realpath -m "$RESTORE_FILE")")
    [ -n "$BATCH_SIZE" ] && plan+=(--batch-size "$BATCH_SIZE")
    [ -n "$LR" ] && plan+=(--lr "$LR")
    [ -n "$MAX_EPOCH" ] && plan+=(--max-epoch "$MAX_EPOCH")
    [ -n "$MAX_UPDATE" ] && plan+=(--max-update "$MAX_UPDATE")
    [ -n "$MAX_TOKENS" ] && plan+=(--max-tokens "$MAX_TOKENS")
    [ -n "$NUM_CLASSES" ] && plan+=(--num-classes "$NUM_CLASSES")
    [ "$USE_APEX" = 1 ] && plan+=(--use-apex)
    local extra=("${EXTRA[@]}")
    if [ "$WORLD_SIZE_TOTAL" = 1 ] && [ -n "$DEVICE_ID" ] && [ "$DEVICE" != cpu ]; then
        extra=(--device-id "$DEVICE_ID" "${extra[@]}")
    fi
    launch_helper "${plan[@]}" -- "${extra[@]}" || die "could not plan the run (see the message above)"

    local fairseq_args=()
    mapfile -d '' -t fairseq_args < "$OUTPUT_DIR/${files}fairseq_args"
    npu_task_queue "${fairseq_args[@]}"
    local entry=(-m fairseq_cli.train) log="$OUTPUT_DIR/train.log"
    if [ "$MODE" = eval ]; then
        entry=(-m fairseq_npu.cli.evaluate)
        log="$OUTPUT_DIR/eval.log"
    fi
    local cmd=("$PYTHON")
    if [ "$WORLD_SIZE_TOTAL" -gt 1 ]; then
        cmd+=(-m torch.distributed.run --nproc_per_node="$NPROC" --nnodes="$NNODES" --node_rank="$NODE_RANK")
        if [ "$NNODES" -gt 1 ] || [ -n "$MASTER_ADDR_ARG" ]; then
            [ -n "$MASTER_ADDR_ARG" ] || die "--nnodes=$NNODES needs --master_addr=HOST (the node with --node_rank=0)"
            cmd+=(--master_addr="$MASTER_ADDR_ARG" --master_port="${MASTER_PORT_ARG:-29500}")
        else
            cmd+=(--standalone)  # one node: torchrun picks a free port
        fi
        # each worker is tied to the torchrun agent: an agent that dies takes its workers (tied.py)
        cmd+=("$TIED" "$PYTHON" -u)
    fi
    cmd+=("${entry[@]}" "${fairseq_args[@]}")

    printf '%q ' "${cmd[@]}" > "$OUTPUT_DIR/${files}command.sh"
    echo >> "$OUTPUT_DIR/${files}command.sh"
    echo "$SCRIPT: $DEVICE x $WORLD_SIZE_TOTAL ($NNODES node(s)), log $log"
    local start end rc
    start="$(date +%s.%N)"
    local log_fd tee_pid
    exec {log_fd}> >(trap '' INT TERM HUP; exec tee "$log")  # tee ignores the signals: it ends at the log's end
    tee_pid=$!
    run_stoppable "${cmd[@]}" >&"$log_fd" 2>&1
    rc=$?
    exec {log_fd}>&-
    wait "$tee_pid"  # the log is complete before it is read
    end="$(date +%s.%N)"

    local e2e summarize
    e2e="$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')"
    summarize=(summarize --mode "$MODE" --files-prefix "$files" --output-dir "$OUTPUT_DIR" --log "$log"
               --e2e-seconds "$e2e" --exit-code "$rc" --prog "$SCRIPT")
    [ -n "$STOPPED_BY" ] && summarize+=(--signal "$STOPPED_BY")
    # the summary step exits 1 (after writing summary.json and one error line) when the run failed or was stopped
    launch_helper "${summarize[@]}" || { [ "$rc" != 0 ] && exit "$rc"; exit 1; }
}

# torch_npu captures no NPU graph at TASK_QUEUE_ENABLE=2 (torch_npu/csrc/core/npu/NPUGraph.cpp,
# NPUGraph::capture_begin), the level env_npu.sh picks for eager runs: a run that captures (--update-mode graph, the
# fast preset's on npu) runs at level 1, unless the caller chose a level
npu_task_queue() {
    [ "$DEVICE" = npu ] || return 0
    local a mode="" prev=""
    for a in "$@"; do
        case "$a" in --update-mode=*) mode="${a#*=}" ;; esac
        [ "$prev" = --update-mode ] && mode="$a"
        prev="$a"
    done
    [ "$mode" = graph ] || return 0
    if [ -z "${CALLER_TASK_QUEUE:-}" ]; then
        export TASK_QUEUE_ENABLE=1
    elif [ "$CALLER_TASK_QUEUE" = 2 ]; then
        echo "$SCRIPT: warning: TASK_QUEUE_ENABLE=2 (set by the caller): torch_npu captures no graph at this level," \
             "so --update-mode graph runs eagerly; export TASK_QUEUE_ENABLE=1 to capture" >&2
    fi
}

# one run per output folder: OUTPUT_DIR/.lock stays locked while this script or anything it started lives
lock_output_dir() {
    exec {LOCK_FD}>>"$OUTPUT_DIR/.lock" || die "--output_dir=$OUTPUT_DIR: cannot write a lock file there"
    local busy="another run is using this folder; wait for it to end or pass another --output_dir"
    "$PYTHON" -c 'import fcntl, sys; fcntl.flock(int(sys.argv[1]), fcntl.LOCK_EX | fcntl.LOCK_NB)' "$LOCK_FD" \
        2>/dev/null || die "--output_dir=$OUTPUT_DIR: $busy"
}

# run_stoppable CMD...: run CMD in its own process group, tied to this script (fairseq_npu/launch/tied.py: it gets
# SIGTERM when the script dies, even by SIGKILL), and return its exit code. SIGTERM, SIGINT or SIGHUP to the script
# are passed to the whole group as SIGTERM; what still runs STOP_GRACE seconds later is killed (SIGKILL), so the
# script ends within STOP_GRACE + 1 seconds of the signal (plus its summary), with 128 + the signal's number. A
# child that ends on its own leaves nothing of its group behind either.
TIED="$REPO/fairseq_npu/launch/tied.py"
STOP_GRACE="${STOP_GRACE:-20}"
STOPPED_BY=""
run_stoppable() {
    local pid rc sig deadline
    setsid "$PYTHON" "$TIED" "$@" &
    pid=$!
    for sig in TERM INT HUP; do
        # shellcheck disable=SC2064
        trap "STOPPED_BY=SIG$sig; kill -TERM -- -$pid 2>/dev/null" "$sig"
    done
    wait "$pid"
    rc=$?
    if [ -n "$STOPPED_BY" ]; then  # the signal ended the wait: the group has its SIGTERM
        deadline=$((SECONDS + STOP_GRACE))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        kill -KILL -- "-$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    fi
    kill -KILL -- "-$pid" 2>/dev/null  # what the child left running in its group
    trap - TERM INT HUP
    case "$STOPPED_BY" in
        SIGTERM) rc=143 ;;
        SIGINT) rc=130 ;;
        SIGHUP) rc=129 ;;
    esac
    return "$rc"
}
