# shellcheck shell=bash
# Helpers shared by redis.sh, kafka.sh and services.sh (sourced, not run).
# Every wait is bounded; every stop succeeds.

svc_log() {
    printf '%s: %s\n' "${SVC_NAME:-services}" "$*" >&2
}

svc_die() {
    svc_log "error: $*"
    exit 1
}

# svc_statedir DIR: creates DIR and prints its absolute path (the pid checks
# below compare command lines, so every path handed to a daemon is absolute).
svc_statedir() {
    [[ -n ${1:-} ]] || svc_die "missing <statedir>"
    mkdir -p -- "$1" || svc_die "cannot create $1"
    (cd -- "$1" && pwd -P)
}

# svc_free_ports N: prints N distinct TCP ports that were free on 127.0.0.1.
# All N sockets are held open together so the ports differ; the kernel picks
# them, so parallel test runs do not collide (a port can still be taken between
# this check and the daemon's bind: callers retry on "address in use").
svc_free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

# svc_port_open PORT: true when something accepts TCP on 127.0.0.1:PORT.
svc_port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# svc_alive PID: true while PID runs (a zombie counts as gone).
svc_alive() {
    local state
    [[ -r /proc/$1/stat ]] || return 1
    state=$(sed -e 's/^.*) //' -e 's/ .*//' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

# svc_pid_matches PID WORD...: true when PID is alive and its command line
# contains every WORD, so a recycled pid is never signalled.
svc_pid_matches() {
    local pid=$1 cmdline word
    shift
    svc_alive "$pid" || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    for word in "$@"; do
        [[ $cmdline == *"$word"* ]] || return 1
    done
}

# svc_wait_gone PID SECONDS: waits until PID has exited; false on timeout.
svc_wait_gone() {
    local pid=$1 deadline=$((SECONDS + $2))
    while svc_alive "$pid"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# svc_stop_pidfile PIDFILE SECONDS WORD...: SIGTERM the process named in
# PIDFILE if it still is ours (see svc_pid_matches), wait up to SECONDS, then
# SIGKILL. Removes PIDFILE. Always succeeds.
svc_stop_pidfile() {
    local pidfile=$1 grace=$2 pid
    shift 2
    [[ -f $pidfile ]] || return 0
    pid=$(<"$pidfile") || pid=
    if [[ $pid =~ ^[0-9]+$ ]] && svc_pid_matches "$pid" "$@"; then
        kill -TERM "$pid" 2>/dev/null || true
        if ! svc_wait_gone "$pid" "$grace"; then
            svc_log "pid $pid did not stop within ${grace}s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            svc_wait_gone "$pid" 5 || svc_log "pid $pid survived SIGKILL"
        fi
    fi
    rm -f -- "$pidfile"
    return 0
}

# svc_tail FILE: shows the end of a daemon log after a failure.
svc_tail() {
    [[ -f $1 ]] || return 0
    svc_log "last lines of $1:"
    tail -n "${2:-40}" -- "$1" | sed 's/^/    /' >&2
}
