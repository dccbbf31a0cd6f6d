#!/usr/bin/env bash
# Installs the tools the deployment tests need, from package registries only:
#   helm                  built with Go from the Go module proxy into
#                         ${XDG_CACHE_HOME:-$HOME/.cache}/danmaku/tools/bin
#   kubernetes-validate   from PyPI, into the Python that runs pytest; it
#                         ships the Kubernetes JSON schemas, so validation
#                         needs no network at test time
# Debian packages (Go, promtool, haproxy, pip) are deploy/install-deps.sh's:
# tests/run.sh runs it first, and so should anyone running this alone.
# Idempotent and quiet: prints nothing when everything is already there, one
# line per tool it installed, and the failing step's output when one fails.
#
#   HELM_VERSION=v3.19.0           helm release to build
#   KUBERNETES_VALIDATE_VERSION=1.37.0
#   PYTHON=python3                 interpreter to install into (default: the
#                                  one whose pytest the tests run under)
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-v3.19.0}
KV_VERSION=${KUBERNETES_VALIDATE_VERSION:-1.37.0}
TOOLS=${XDG_CACHE_HOME:-$HOME/.cache}/danmaku/tools
BIN=$TOOLS/bin
LOG=$(mktemp "${TMPDIR:-/tmp}/danmaku-install-tools.XXXXXX")
trap 'rm -f -- "$LOG"' EXIT

# Runs "$@" with its output kept aside; shows it and stops when it fails.
quiet() {
    local what=$1
    shift
    if ! "$@" >"$LOG" 2>&1; then
        echo "install-tools.sh: $what failed:" >&2
        tail -n 40 "$LOG" >&2
        exit 1
    fi
}

missing() {
    echo "install-tools.sh: $1 is missing: run deploy/install-deps.sh first" >&2
    exit 1
}

# --- helm ------------------------------------------------------------------
if [[ ! -x $BIN/helm || "$(cat "$BIN/helm.version" 2>/dev/null)" != "$HELM_VERSION" ]]; then
    command -v go >/dev/null 2>&1 || missing go
    # Debian's Go may be older than helm's go.mod asks: let the go command
    # fetch the toolchain it names from the module proxy.
    export GOTOOLCHAIN=auto
    mkdir -p "$BIN"
    quiet "building helm $HELM_VERSION" env GOBIN="$BIN" \
        go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    echo "$HELM_VERSION" >"$BIN/helm.version"
    echo "install-tools.sh: helm $HELM_VERSION installed in $BIN"
fi

# --- kubernetes-validate -----------------------------------------------------
if [[ -z ${PYTHON:-} ]]; then
    PYTHON=python3
    "$PYTHON" -m pytest --version >/dev/null 2>&1 || PYTHON=/usr/bin/python3
fi
if ! "$PYTHON" - "$KV_VERSION" <<'PY' >/dev/null 2>&1; then
import sys
from importlib.metadata import version
sys.exit(version("kubernetes-validate") != sys.argv[1])
PY
    pip_flags=(--quiet --disable-pip-version-check --no-input)
    [[ $PYTHON == /usr/bin/python3 ]] && pip_flags+=(--break-system-packages)
    "$PYTHON" -m pip --version >/dev/null 2>&1 || missing "pip for $PYTHON"
    quiet "pip install kubernetes-validate==$KV_VERSION" \
        "$PYTHON" -m pip install "${pip_flags[@]}" "kubernetes-validate==$KV_VERSION"
    echo "install-tools.sh: kubernetes-validate $KV_VERSION installed for $PYTHON"
fi
