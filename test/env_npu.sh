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
# Operator dispatch (torch_npu 2.x; the current variables are listed in Ascend/pytorch
# docs/zh/environment_variable_reference/env_variable_list.md). PTCOPY_ENABLE, TRI_COMBINED_ENABLE and DYNAMIC_OP,
# which the ModelZoo scripts still export, exist only in the torch 1.5-era torch_npu branches and do nothing on 2.x.
# TASK_QUEUE_ENABLE: 1 (the default) moves operator launches onto a second host thread, 2 also moves their
# workspace work there; 2 is the recommended level, at the price of a somewhat higher device memory peak
# (docs/zh/environment_variable_reference/TASK_QUEUE_ENABLE.md). torch_npu refuses NPU graph capture at level 2:
# test/common.sh runs a launch that captures (--update-mode graph) at level 1 unless the caller set one.
export TASK_QUEUE_ENABLE="${TASK_QUEUE_ENABLE:-2}"
# COMBINED_ENABLE=1 (default 0): optimises combinations of two non-contiguous operators (COMBINED_ENABLE.md)
export COMBINED_ENABLE="${COMBINED_ENABLE:-1}"
# CPU_AFFINITY_CONF (left unset, i.e. off): 1 binds each NPU's process to its share of the CPU cores, 2 also pins
# torch_npu's main and dispatch threads to fixed cores in it; set it to 1 or 2 when the data loader and the
# dispatch threads compete for cores (docs/zh/environment_variable_reference/CPU_AFFINITY_CONF.md).
# HCCL (CANN environment variable reference): any host may join; the connect timeout generous for the first,
# compiling, steps; HCCL_EXEC_TIMEOUT kept at CANN's default of 1800 s (not shorter: a long first compile on one
# rank would otherwise time out the others).
export HCCL_WHITELIST_DISABLE="${HCCL_WHITELIST_DISABLE:-1}"
export HCCL_CONNECT_TIMEOUT="${HCCL_CONNECT_TIMEOUT:-1800}"
export HCCL_EXEC_TIMEOUT="${HCCL_EXEC_TIMEOUT:-1800}"
# HCCL_IF_IP (not set here): the host address HCCL uses for its control connections between nodes. Unset, HCCL
# picks the interface itself (HCCL_SOCKET_IFNAME selects one by name). On multi-node runs over hosts with several
# NICs, export HCCL_IF_IP=<this host's address on the network the nodes share> before launching; the first address
# of `hostname -I` is often a management or container interface, so it is not guessed here.
# device logs at error level only, on every device present
if command -v msnpureport > /dev/null; then
    for _d in 0 1 2 3 4 5 6 7; do msnpureport -g error -d "$_d" > /dev/null 2>&1 || true; done
    unset _d
fi
# many data-loader workers and HCCL sockets
ulimit -SHn 512000 2> /dev/null || true
