# shellcheck shell=bash
# Sourced by the scripts that start the system's processes themselves
# (deploy/run-local.sh, loadtest/bench.sh, loadtest/ingest-bench.sh):
# the pids they started, stopped together, and waiting for a file a process
# writes when it is ready (a port file, a bootstrap address).
#
#   PIDS+=($!)            after starting a process in the background
#   stop_pids             SIGTERM to each, then wait for all of them
#   wait_file PATH [SEC]  0 once PATH is not empty, 1 after SEC seconds (10)

PIDS=()

stop_pids() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}

wait_file() {
    local i
    for ((i = 0; i < ${2:-10} * 10; i++)); do
        [[ -s $1 ]] && return 0
        sleep 0.1
    done
    echo "${0##*/}: timed out waiting for $1" >&2
    return 1
}
