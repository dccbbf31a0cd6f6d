#!/usr/bin/env bash
# Runs the libFuzzer harnesses built by `make fuzz-build` (build/fuzz/).
#
#   fuzz/run.sh fuzz    [harness...]  fuzz each for FUZZ_SECONDS
#   fuzz/run.sh regress [harness...]  replay fuzz/corpus/<h>/ and fuzz/regressions/<h>/ once
#   fuzz/run.sh ci      [harness...]  regress, then fuzz for FUZZ_SECONDS (tests/run.sh)
#
# No harness named: all of them. One line per harness: executions, exec/s,
# seconds, corpus size. New corpus entries go to $FUZZ_SCRATCH/<h>/ (default
# build/fuzz/corpus/), and into fuzz/corpus/<h>/ only with FUZZ_MERGE=1
# (libFuzzer -merge=1: just the inputs that add coverage). A crash, leak,
# timeout or broken invariant is saved to build/fuzz/crashes/<h>/ and makes
# the script print where it is and exit 1 (after the other harnesses ran).
#
#   FUZZ_SECONDS=60  FUZZ_MERGE=0  FUZZ_BUILD=build/fuzz  FUZZ_SCRATCH=build/fuzz/corpus
#   FUZZ_FLAGS="-use_value_profile=1"   extra libFuzzer flags
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

MODE=${1:-}
[[ $# -gt 0 ]] && shift
case $MODE in
fuzz | regress | ci) ;;
*)
    echo "usage: fuzz/run.sh fuzz|regress|ci [harness...]" >&2
    exit 2
    ;;
esac

SECONDS_EACH=${FUZZ_SECONDS:-60}
MERGE=${FUZZ_MERGE:-0}
BUILD=${FUZZ_BUILD:-build/fuzz}
SCRATCH=${FUZZ_SCRATCH:-$BUILD/corpus}
read -r -a EXTRA <<<"${FUZZ_FLAGS:-}"
[[ $SECONDS_EACH =~ ^[0-9]+$ && $SECONDS_EACH -gt 0 ]] ||
    { echo "fuzz/run.sh: FUZZ_SECONDS must be a positive integer" >&2; exit 2; }

if (($# > 0)); then
    HARNESSES=("$@")
else
    HARNESSES=()
    for src in fuzz/fuzz_*.c; do
        HARNESSES+=("$(basename "$src" .c)")
    done
fi
for h in "${HARNESSES[@]}"; do
    [[ -x $BUILD/$h ]] || { echo "fuzz/run.sh: $BUILD/$h not built (make fuzz-build)" >&2; exit 2; }
done

# Per harness libFuzzer flags: JWTs are checked up to DM_JWT_MAX_TOKEN (8192).
harness_flags() {
    case $1 in
    fuzz_jwt) echo "-max_len=8400" ;;
    esac
}

# The existing input directories of harness $1.
input_dirs() {
    local d
    for d in fuzz/corpus/"$1" fuzz/regressions/"$1"; do
        [[ -d $d ]] && echo "$d"
    done
}

# Value of "stat::$2:" in log $1 (0 if absent).
log_stat() {
    local v
    v=$(sed -n "s/^stat::$2: *//p" "$1" | tail -1 || true)
    echo "${v:-0}"
}

# Tells where the finding of harness $1 is, from its log $2; fails.
report_finding() {
    local h=$1 log=$2 file
    file=$(sed -n "s/.*Test unit written to \(.*\)$/\1/p" "$log" | tail -1)
    echo "   $h: FAILED" >&2
    { grep -E '^(fuzz: invariant broken|panic:|SUMMARY:|==[0-9]+==ERROR)|runtime error' "$log" ||
        true; } | head -5 | sed 's/^/      /' >&2
    if [[ -n $file ]]; then
        echo "      input: $file" >&2
        echo "      reproduce: $BUILD/$h $file" >&2
        echo "      keep it as a regression test: cp $file fuzz/regressions/$h/<what-it-is>" >&2
    fi
    echo "      log: $log" >&2
}

# Replays every file of the committed corpus and the regressions once.
regress() {
    local h=$1
    local log=$BUILD/logs/$h.regress.log files=() d
    while IFS= read -r d; do
        while IFS= read -r -d '' f; do files+=("$f"); done < <(find "$d" -type f -print0 | sort -z)
    done < <(input_dirs "$h")
    REGRESSED=${#files[@]}
    ((REGRESSED > 0)) || return 0
    mkdir -p "$BUILD/crashes/$h"
    if ! "$BUILD/$h" -artifact_prefix="$BUILD/crashes/$h/" "${files[@]}" >"$log" 2>&1; then
        local last
        last=$(sed -n 's/^Running: //p' "$log" | tail -1)
        echo "   $h: regression input fails: ${last:-?}" >&2
        report_finding "$h" "$log"
        return 1
    fi
}

# Fuzzes harness $1 for SECONDS_EACH seconds; prints its line.
fuzz() {
    local h=$1
    local log=$BUILD/logs/$h.log scratch=$SCRATCH/$h start rc=0 dirs=()
    mapfile -t dirs < <(input_dirs "$h")
    mkdir -p "$scratch" "$BUILD/crashes/$h"
    start=$(date +%s)
    # shellcheck disable=SC2046
    "$BUILD/$h" -max_total_time="$SECONDS_EACH" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$BUILD/crashes/$h/" \
        $([[ -f fuzz/dict/$h.dict ]] && echo "-dict=fuzz/dict/$h.dict") \
        $(harness_flags "$h") "${EXTRA[@]}" "$scratch" "${dirs[@]}" >"$log" 2>&1 || rc=$?
    local took=$(($(date +%s) - start))
    local execs rate corpus
    execs=$(log_stat "$log" number_of_executed_units)
    rate=$(log_stat "$log" average_exec_per_sec)
    corpus=$(grep -o 'corp: [0-9]*/[0-9A-Za-z]*' "$log" | tail -1 | cut -d' ' -f2 || true)
    LINE=$(printf '%-18s %10s execs %7s exec/s %5s s  corpus %s inputs (%s)' "$h" "$execs" \
        "$rate" "$took" "${corpus%%/*}" "${corpus#*/}")
    if ((rc != 0)); then
        echo "   $LINE  FAILED"
        report_finding "$h" "$log"
        return 1
    fi
    if [[ $MERGE == 1 ]]; then
        local before after
        mkdir -p "fuzz/corpus/$h"
        before=$(find "fuzz/corpus/$h" -type f | wc -l)
        # shellcheck disable=SC2046
        "$BUILD/$h" -merge=1 $(harness_flags "$h") "fuzz/corpus/$h" "$scratch" \
            >"$BUILD/logs/$h.merge.log" 2>&1 ||
            { echo "   $h: merge failed, see $BUILD/logs/$h.merge.log" >&2; return 1; }
        after=$(find "fuzz/corpus/$h" -type f | wc -l)
        LINE="$LINE  merged +$((after - before)) into fuzz/corpus/$h"
    fi
    return 0
}

mkdir -p "$BUILD/logs"
failed=()
for h in "${HARNESSES[@]}"; do
    REGRESSED=0
    LINE=
    case $MODE in
    regress)
        if regress "$h"; then
            printf '   %-18s ok  %d inputs replayed\n' "$h" "$REGRESSED"
        else
            failed+=("$h")
        fi
        ;;
    fuzz)
        if fuzz "$h"; then echo "   $LINE  ok"; else failed+=("$h"); fi
        ;;
    ci)
        if ! regress "$h"; then
            failed+=("$h")
        elif fuzz "$h"; then
            echo "   $LINE  regress $REGRESSED  ok"
        else
            failed+=("$h")
        fi
        ;;
    esac
done

if ((${#failed[@]} > 0)); then
    echo "fuzz/run.sh: FAILED: ${failed[*]} (inputs in $BUILD/crashes/)" >&2
    exit 1
fi
