#!/usr/bin/env bash
# Installs what building and testing danmaku needs on Debian 12, and only what
# is missing: safe to run on every `make test` / `make run`. Non-interactive
# (no prompts, no stdin), quiet unless something fails.
#
#   deploy/install-deps.sh [build|run|all]     (default: all)
#
#   build: build-essential pkg-config libevent-dev libhiredis-dev librdkafka-dev
#          libjansson-dev libjwt-dev libssl-dev: `make bins`, and all the
#          Dockerfile's build stage runs
#   run:   build + redis-server, curl: `make run`, `make bench`
#   all:   run + clang, libclang-rt-14-dev (libFuzzer and sanitizer runtimes),
#          clang-format, chromium (the demo page's browser test), prometheus
#          (promtool checks the alert rules), haproxy (checks the compose
#          stack's load balancer config), a JDK (default-jdk-headless, if
#          `java` is missing), maven (if `mvn` is missing), nodejs + npm (if
#          `node` is missing), golang-go (if `go` is missing: builds helm),
#          python3 + python3-pytest (if `python3 -m pytest` does not work):
#          `make test`
#
# The tests start their own redis-server on a free port; the package's own
# service (and prometheus's, haproxy's) is neither used nor started here (see
# hold_services below).
set -euo pipefail

GROUP=${1:-all}
case $GROUP in
build | run | all) ;;
*)
    echo "usage: $0 [build|run|all]" >&2
    exit 2
    ;;
esac

export DEBIAN_FRONTEND=noninteractive
export NEEDRESTART_MODE=a

log() {
    printf 'install-deps: %s\n' "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

BUILD_PKGS=(build-essential pkg-config libevent-dev libhiredis-dev librdkafka-dev
    libjansson-dev libjwt-dev libssl-dev)
PKGS=("${BUILD_PKGS[@]}")
COMMANDS=(cc pkg-config)
if [[ $GROUP != build ]]; then
    PKGS+=(redis-server curl)
    COMMANDS+=(redis-server redis-cli curl)
fi
if [[ $GROUP == all ]]; then
    # clang only recommends its runtimes (libFuzzer, ASan) and we install
    # without recommends: name them; 14 is Debian 12's clang.
    PKGS+=(clang libclang-rt-14-dev clang-format chromium prometheus haproxy)
    COMMANDS+=(clang-format chromium promtool haproxy java mvn node npm go python3)
fi

# No pipe into `grep -q` here: under pipefail, grep leaving early can kill
# dpkg with SIGPIPE and make an installed package look missing.
installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == *" installed" ]]
}

missing=()
for pkg in "${PKGS[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done
if [[ $GROUP == all ]]; then
    command -v java >/dev/null 2>&1 || missing+=(default-jdk-headless)
    command -v mvn >/dev/null 2>&1 || missing+=(maven)
    # Node runs the third-party WebSocket client in the conformance tests
    # and drives Chromium in the browser test.
    command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
    # Go builds helm for the chart's checks (tests/deploy/install-tools.sh).
    command -v go >/dev/null 2>&1 || missing+=(golang-go)
    # tests/run.sh uses the first of python3 and /usr/bin/python3 that has pytest.
    if ! python3 -m pytest --version >/dev/null 2>&1 &&
        ! /usr/bin/python3 -m pytest --version >/dev/null 2>&1; then
        installed python3 || missing+=(python3)
        installed python3-pytest || missing+=(python3-pytest)
    fi
fi

if ((${#missing[@]} == 0)); then
    log "all dependencies present"
    exit 0
fi

SUDO=()
if ((EUID != 0)); then
    command -v sudo >/dev/null 2>&1 || die "need root to install: ${missing[*]}"
    SUDO=(sudo -n)
fi
command -v apt-get >/dev/null 2>&1 || die "apt-get not found (Debian 12 expected); install by hand: ${missing[*]}"

work=$(mktemp -d)
policy_created=
cleanup() {
    if [[ -n $policy_created ]]; then
        "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d
    fi
    rm -rf -- "$work"
}
trap cleanup EXIT

# Keep package maintainer scripts from starting services (the system
# redis-server on port 6379): tests run their own instance on a free port.
# An existing policy (container images ship one) is left as it is.
hold_services() {
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\n# temporary, removed by danmaku deploy/install-deps.sh\nexit 101\n' |
            "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
        policy_created=1
    fi
}

apt() {
    if ! "${SUDO[@]}" apt-get -q -y -o DPkg::Lock::Timeout=300 \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "$@" </dev/null >>"$work/apt.log" 2>&1; then
        tail -n 30 "$work/apt.log" | sed 's/^/    /' >&2
        die "apt-get $1 failed"
    fi
}

log "installing: ${missing[*]}"
hold_services
apt update
apt install --no-install-recommends "${missing[@]}"

# Re-check what the tools need, so a half-working system fails here and not later.
for pkg in "${PKGS[@]}"; do
    installed "$pkg" || die "$pkg is still not installed"
done
for cmd in "${COMMANDS[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd is still missing"
done
[[ $GROUP == all ]] || {
    log "done"
    exit 0
}
python3 -m pytest --version >/dev/null 2>&1 ||
    log "warning: 'python3 -m pytest' still fails (a python3 other than Debian's on PATH?)"
log "done"
