#!/usr/bin/env bash
# Real Redis and Kafka for integration and end-to-end tests (DESIGN.md §9).
#
#   services.sh start <statedir>   start both, write <statedir>/env, print its path
#   services.sh stop <statedir>    stop both (always succeeds, also after a failed start)
#
# <statedir>/env is meant to be sourced by test runners:
#   export DANMAKU_TEST_REDIS_HOST=127.0.0.1
#   export DANMAKU_TEST_REDIS_PORT=<port>
#   export DANMAKU_TEST_KAFKA_BOOTSTRAP=127.0.0.1:<port>
#   export DANMAKU_TEST_TOPIC=<topic>
#   export DANMAKU_TEST_PARTITIONS=<P>
# The topic and partition count come from DANMAKU_TOPIC and DANMAKU_PARTITIONS
# (defaults danmaku.comments and 32); see redis.sh and kafka.sh for the rest.
set -euo pipefail

# shellcheck disable=SC2034 # read by lib.sh
SVC_NAME=services.sh
HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
. "$HERE/lib.sh"

export DANMAKU_TOPIC=${DANMAKU_TOPIC:-danmaku.comments}
export DANMAKU_PARTITIONS=${DANMAKU_PARTITIONS:-32}

usage() {
    echo "usage: $0 start|stop <statedir>" >&2
    exit 2
}

stop_all() {
    "$HERE/kafka.sh" stop "$STATE" || true
    "$HERE/redis.sh" stop "$STATE" || true
    rm -f -- "$STATE/env"
}

on_start_exit() {
    local rc=$?
    if ((rc != 0)); then
        svc_log "start failed, stopping what was started"
        stop_all
    fi
}

start() {
    local redis_port bootstrap f t0=$SECONDS
    # Refuse before arming the cleanup trap, which would stop the running pair.
    for f in redis.pid kafka.pid; do
        if [[ -f $STATE/$f ]] && svc_alive "$(<"$STATE/$f")"; then
            svc_die "services are already running in $STATE (stop them first)"
        fi
    done
    rm -f -- "$STATE/env"
    trap on_start_exit EXIT
    "$HERE/redis.sh" start "$STATE" >/dev/null
    "$HERE/kafka.sh" start "$STATE" >/dev/null
    redis_port=$(<"$STATE/redis.port")
    bootstrap=$(<"$STATE/kafka.bootstrap")
    cat >"$STATE/env.tmp" <<EOF
export DANMAKU_TEST_REDIS_HOST=127.0.0.1
export DANMAKU_TEST_REDIS_PORT=$redis_port
export DANMAKU_TEST_KAFKA_BOOTSTRAP=$bootstrap
export DANMAKU_TEST_TOPIC=$DANMAKU_TOPIC
export DANMAKU_TEST_PARTITIONS=$DANMAKU_PARTITIONS
EOF
    mv -- "$STATE/env.tmp" "$STATE/env"
    trap - EXIT
    svc_log "ready in $((SECONDS - t0))s: redis 127.0.0.1:$redis_port, kafka $bootstrap"
    echo "$STATE/env"
}

(($# == 2)) || usage
case $1 in
start)
    STATE=$(svc_statedir "$2")
    start
    ;;
stop)
    [[ -d $2 ]] || exit 0
    STATE=$(svc_statedir "$2")
    stop_all
    ;;
*) usage ;;
esac
