#!/usr/bin/env bash
# `make test`: install what is missing, build the default, ASan+UBSan and
# TSan builds, start real Redis and a real Kafka broker, run every unit and
# integration test (the demo page's in headless Chromium among them) against
# the default and ASan+UBSan builds and the threaded paths (TSAN_TESTS)
# against the TSan build, then the deployment checks (tests/deploy) and the
# fuzzers, stop everything, and print one final line "N passed, N failed".
# Exit status 0 only when nothing failed. Test artifacts (the browser test's
# screenshots) land in DANMAKU_ARTIFACTS, build/test-artifacts by default.
#
#   TEST_MODES="default address thread"   builds to test (default: all three)
#   PYTEST_ARGS="-k pipeline"             extra pytest arguments (integration tests)
set -uo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
MODES=${TEST_MODES:-default address thread}
export DANMAKU_ARTIFACTS=${DANMAKU_ARTIFACTS:-$ROOT/build/test-artifacts}
# Under TSan (several times slower) the tests of the multi-threaded paths:
# worker threads, Kafka's threads, catch-up readers, the load tester's
# threads and processes. The timing-sensitive rest runs in the other modes.
TSAN_TESTS=(test_pipeline.py test_storm.py test_resume.py test_membership.py test_history.py
    test_loadtest.py)
JOBS=$(nproc 2>/dev/null || echo 2)
STATE=$(mktemp -d "${TMPDIR:-/tmp}/danmaku-test.XXXXXX")
passed=0
failed=0

cleanup() {
    tests/services/services.sh stop "$STATE" >/dev/null 2>&1 || true
    rm -rf -- "$STATE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
    echo "tests/run.sh: $*" >&2
    echo "0 passed, 1 failed"
    exit 1
}

# "passed failed" of a pytest JUnit XML file; "0 1" when it is unreadable
# (pytest crashed) or holds no test.
junit_counts() {
    "$PYTHON" - "$1" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print("0 1"); sys.exit()
suites = [root] if root.tag == "testsuite" else list(root)
total = sum(int(s.get("tests", 0)) for s in suites)
bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
print(total - bad - skipped, bad if total else 1)
PY
}

deploy/install-deps.sh || die "installing dependencies failed"
PYTHON=python3
"$PYTHON" -m pytest --version >/dev/null 2>&1 || PYTHON=/usr/bin/python3

# Two independent third-party WebSocket clients the tests use as viewers,
# pinned in tests/integration/{requirements.txt,node/package-lock.json}.
if ! "$PYTHON" -c 'import sys, websockets; sys.exit(int(websockets.__version__.split(".")[0]) < 13)' \
    2>/dev/null; then
    pip_flags=(--quiet --disable-pip-version-check)
    [[ $PYTHON == /usr/bin/python3 ]] && pip_flags+=(--break-system-packages)
    "$PYTHON" -m pip --version >/dev/null 2>&1 ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-pip >/dev/null
    "$PYTHON" -m pip install "${pip_flags[@]}" -r tests/integration/requirements.txt ||
        die "installing the Python WebSocket client failed"
fi
# Node: the ws client, and playwright-core driving Debian's Chromium in the
# demo page's browser test. Reinstalled when any pinned package is missing.
if ! (cd tests/integration/node && node -e '
        for (const d of Object.keys(require("./package.json").dependencies))
            require.resolve(d + "/package.json");' 2>/dev/null); then
    (cd tests/integration/node && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
        die "installing the Node packages of the tests failed"
fi
# The deployment checks' tools: helm (built from source with Go),
# kubernetes-validate and PyYAML (tests/deploy/install-tools.sh).
tests/deploy/install-tools.sh || die "installing the deployment checks' tools failed"

for mode in $MODES; do
    san=
    [[ $mode == default ]] || san="SANITIZER=$mode"
    echo "== build ($mode)"
    make -j"$JOBS" $san all >"$STATE/build-$mode.log" 2>&1 || {
        tail -50 "$STATE/build-$mode.log"
        die "build ($mode) failed"
    }
done

echo "== starting Redis and Kafka"
tests/services/services.sh start "$STATE" >/dev/null || die "could not start the test services"
# shellcheck disable=SC1091
. "$STATE/env"

# Sanitizer settings for every binary the tests start.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$ROOT/tests/lsan.supp:print_suppressions=0}
export TSAN_OPTIONS=${TSAN_OPTIONS:-suppressions=$ROOT/tests/tsan.supp:halt_on_error=0:second_deadlock_stack=1}

for mode in $MODES; do
    echo "== unit tests ($mode)"
    for t in build/"$mode"/tests/test_*; do
        [[ -x $t ]] || continue
        out=$("$t" 2>&1)
        rc=$?
        ok=$(grep -c '^ok ' <<<"$out")
        bad=$(grep -c '^not ok ' <<<"$out")
        if ((rc != 0 && bad == 0)); then
            bad=1 # crashed or reported a sanitizer error outside a check
        fi
        passed=$((passed + ok))
        failed=$((failed + bad))
        printf '   %-28s %4d passed, %d failed\n' "$(basename "$t")" "$ok" "$bad"
        ((bad == 0)) || grep -v '^ok ' <<<"$out" | tail -40
    done

    echo "== integration tests ($mode)"
    xml="$STATE/pytest-$mode.xml"
    selection=(tests/integration)
    [[ $mode == thread ]] && selection=("${TSAN_TESTS[@]/#/tests/integration/}")
    # The recovery storm runs a minute in the default build, 20 s under the
    # sanitizers (several times slower; the minute is covered once).
    storm_s=60
    [[ $mode == default ]] || storm_s=20
    # shellcheck disable=SC2086
    DANMAKU_STORM_SECONDS=${DANMAKU_STORM_SECONDS:-$storm_s} \
        DANMAKU_BUILD="$ROOT/build/$mode" "$PYTHON" -m pytest -q -p no:cacheprovider \
        --junitxml="$xml" ${PYTEST_ARGS:-} "${selection[@]}"
    counts=$(junit_counts "$xml")
    passed=$((passed + ${counts% *}))
    failed=$((failed + ${counts#* }))
done

# The Dockerfile, the Helm chart, the compose stack, the dashboard and alert
# rules, and the generated docs (tests/deploy), once, against the first
# build; the observability checks scrape live nodes on the running services.
first_mode=${MODES%% *}
echo "== deployment checks"
xml="$STATE/pytest-deploy.xml"
DANMAKU_BUILD="$ROOT/build/$first_mode" "$PYTHON" -m pytest -q -p no:cacheprovider \
    --junitxml="$xml" tests/deploy
counts=$(junit_counts "$xml")
passed=$((passed + ${counts% *}))
failed=$((failed + ${counts#* }))

# The libFuzzer harnesses (fuzz/README.md): each replays its committed corpus
# and regressions, then fuzzes for FUZZ_CI_SECONDS (0: replay only); one test
# per harness. About 1.5 minutes with the default 20 s.
fuzz_seconds=${FUZZ_CI_SECONDS:-20}
echo "== fuzzing (${fuzz_seconds} s per harness)"
if make -j"$JOBS" fuzz-build >"$STATE/build-fuzz.log" 2>&1; then
    fuzz_mode=ci
    ((fuzz_seconds > 0)) || fuzz_mode=regress
    for src in fuzz/fuzz_*.c; do
        if FUZZ_SECONDS=$((fuzz_seconds > 0 ? fuzz_seconds : 1)) \
            FUZZ_SCRATCH="$STATE/fuzz-corpus" fuzz/run.sh "$fuzz_mode" "$(basename "$src" .c)"; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
        fi
    done
else
    tail -50 "$STATE/build-fuzz.log"
    echo "   fuzz build failed"
    failed=$((failed + 1))
fi

echo
echo "test artifacts: ${DANMAKU_ARTIFACTS#"$ROOT"/}"
echo "$passed passed, $failed failed"
((failed == 0))
