#!/usr/bin/env bash
# A throwaway redis-server for tests: 127.0.0.1 only, a free port, no persistence.
#
#   redis.sh start <statedir>   start, wait for PING, print "port=<port>" on stdout
#   redis.sh stop <statedir>    stop it (always succeeds)
#
# Files in <statedir>: redis.pid, redis.port, redis.log, redis/ (working dir).
# The system's own redis-server service is never used or touched.
set -euo pipefail

# shellcheck disable=SC2034 # read by lib.sh
SVC_NAME=redis.sh
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

START_TIMEOUT=${DANMAKU_REDIS_START_TIMEOUT:-20}

usage() {
    echo "usage: $0 start|stop <statedir>" >&2
    exit 2
}

# launch PORT: starts redis-server in the background and prints its pid.
launch() {
    local port=$1
    redis-server \
        --bind 127.0.0.1 --port "$port" --protected-mode yes \
        --save '' --appendonly no \
        --daemonize no --supervised no \
        --dir "$STATE/redis" --loglevel notice --logfile '' \
        </dev/null >>"$STATE/redis.log" 2>&1 &
    echo "$!"
}

# wait_ready PID PORT: 0 ready, 1 the server died (maybe the port was taken),
# 2 timeout.
wait_ready() {
    local pid=$1 port=$2 deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if [[ $(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]]; then
            return 0
        fi
        svc_alive "$pid" || return 1
        sleep 0.1
    done
    return 2
}

start() {
    local attempt port pid rc
    command -v redis-server >/dev/null || svc_die "redis-server not installed (run deploy/install-deps.sh)"
    command -v redis-cli >/dev/null || svc_die "redis-cli not installed (run deploy/install-deps.sh)"
    if [[ -f $STATE/redis.pid ]] && svc_pid_matches "$(<"$STATE/redis.pid")" redis-server; then
        svc_die "already running in $STATE (stop it first)"
    fi
    rm -rf -- "$STATE/redis" "$STATE/redis.port" "$STATE/redis.pid"
    mkdir -p -- "$STATE/redis"
    : >"$STATE/redis.log"

    for attempt in 1 2 3; do
        port=$(svc_free_ports 1)
        pid=$(launch "$port")
        rc=0
        wait_ready "$pid" "$port" || rc=$?
        if ((rc == 0)); then
            echo "$pid" >"$STATE/redis.pid"
            echo "$port" >"$STATE/redis.port"
            svc_log "ready on 127.0.0.1:$port (pid $pid)"
            echo "port=$port"
            return 0
        fi
        kill -KILL "$pid" 2>/dev/null || true
        svc_wait_gone "$pid" 5 || true
        if ((rc == 1)) && grep -q 'Address already in use' "$STATE/redis.log"; then
            svc_log "port $port was taken, retrying (attempt $attempt)"
            : >"$STATE/redis.log"
            continue
        fi
        break
    done
    rm -f -- "$STATE/redis.pid"
    svc_tail "$STATE/redis.log"
    if ((rc == 2)); then
        svc_die "redis-server did not answer PING within ${START_TIMEOUT}s"
    fi
    svc_die "redis-server failed to start"
}

stop() {
    local port=
    [[ -f $STATE/redis.port ]] && port=$(<"$STATE/redis.port")
    # redis-server rewrites its title to "redis-server 127.0.0.1:PORT".
    svc_stop_pidfile "$STATE/redis.pid" 10 redis-server "${port:+:$port}"
    rm -f -- "$STATE/redis.port"
    return 0
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
    stop
    ;;
*) usage ;;
esac
