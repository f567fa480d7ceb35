# What every shell script of this repository shares; sourced (test/common.sh, test/npu_smoke.sh,
# glue_scripts/preprocess_GLUE_tasks.sh), never run.

# choose_python REPO: the interpreter, in PYTHON. $PYTHON if set; else an activated virtualenv's (python3 on PATH);
# else REPO/.venv (`make install`) when present, so the scripts work without activating it; else python3 on PATH
choose_python() {
    [[ -n "${PYTHON:-}" ]] && return 0
    if [[ -z "${VIRTUAL_ENV:-}" && -x "$1/.venv/bin/python" ]]; then
        PYTHON="$1/.venv/bin/python"
    else
        PYTHON="$(command -v python3 || command -v python || echo python3)"
    fi
}

# check_device_name SCRIPT NAME: the device names a script accepts (fairseq_npu/device.py chooses among them);
# anything else is one line and exit 2
check_device_name() {
    case "$2" in
        auto|npu|cuda|cpu) ;;
        *) echo "$1: error: --device=$2: expected npu, cuda, cpu or auto" >&2; exit 2 ;;
    esac
}
