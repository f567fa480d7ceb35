#!/usr/bin/env bash
# Ascend runtime environment for the launch scripts (sourced by test/common.sh when --device=npu): the CANN
# toolkit's set_env.sh and the runtime variables the Ascend ModelZoo RoBERTa/ALBERT scripts used. Variables
# already set by the caller are kept. Sourcing it on a machine without CANN only prints a notice.

_cann_set_env=""
if [ -f /etc/Ascend/ascend_cann_install.info ]; then
    # the installer records where CANN went: Install_Path=/usr/local/Ascend (or a user directory)
    _cann_root="$(grep -E '^Install_Path=' /etc/Ascend/ascend_cann_install.info | cut -d= -f2)"
    for _f in "$_cann_root/ascend-toolkit/set_env.sh" "$_cann_root/nnae/set_env.sh"; do
        if [ -f "$_f" ]; then _cann_set_env="$_f"; break; fi
    done
fi
for _f in /usr/local/Ascend/ascend-toolkit/set_env.sh /usr/local/Ascend/nnae/set_env.sh; do
    if [ -z "$_cann_set_env" ] && [ -f "$_f" ]; then _cann_set_env="$_f"; fi
done
if [ -n "$_cann_set_env" ]; then
    # shellcheck disable=SC1090
    source "$_cann_set_env"
else
    echo "env_npu.sh: CANN set_env.sh not found (/etc/Ascend/ascend_cann_install.info, /usr/local/Ascend); using the current environment" >&2
fi
unset _cann_set_env _cann_root _f

# plog to files, errors only, no event logging: device logs otherwise slow every op down
export ASCEND_SLOG_PRINT_TO_STDOUT="${ASCEND_SLOG_PRINT_TO_STDOUT:-0}"
export ASCEND_GLOBAL_LOG_LEVEL="${ASCEND_GLOBAL_LOG_LEVEL:-3}"
export ASCEND_GLOBAL_EVENT_ENABLE="${ASCEND_GLOBAL_EVENT_ENABLE:-0}"
# host-side task queue and fused copies / combined non-contiguous ops
export TASK_QUEUE_ENABLE="${TASK_QUEUE_ENABLE:-1}"
export PTCOPY_ENABLE="${PTCOPY_ENABLE:-1}"
export COMBINED_ENABLE="${COMBINED_ENABLE:-1}"
export TRI_COMBINED_ENABLE="${TRI_COMBINED_ENABLE:-1}"
export DYNAMIC_OP="${DYNAMIC_OP:-ADD#MUL}"
# HCCL: any host may join, generous timeouts for the first (compiling) steps, the host's first address
export HCCL_WHITELIST_DISABLE="${HCCL_WHITELIST_DISABLE:-1}"
export HCCL_CONNECT_TIMEOUT="${HCCL_CONNECT_TIMEOUT:-1800}"
export HCCL_EXEC_TIMEOUT="${HCCL_EXEC_TIMEOUT:-1200}"
if [ -z "${HCCL_IF_IP:-}" ] && command -v hostname > /dev/null; then
    HCCL_IF_IP="$(hostname -I 2> /dev/null | awk '{print $1}')"
    [ -n "$HCCL_IF_IP" ] && export HCCL_IF_IP
fi
# device logs at error level only, on every device present
if command -v msnpureport > /dev/null; then
    for _d in 0 1 2 3 4 5 6 7; do msnpureport -g error -d "$_d" > /dev/null 2>&1 || true; done
    unset _d
fi
# many data-loader workers and HCCL sockets
ulimit -SHn 512000 2> /dev/null || true
