#!/usr/bin/env bash
# `make bench`: measure the system on this machine the way its users will.
#
# Builds optimized, starts real Redis and a real Kafka broker (or the
# embedded mock: BENCH_KAFKA=embedded), one ingest and one broadcast node
# pinned to the server CPU(s), and runs the standard scenarios with the load
# generator pinned to the other CPU(s). Writes
#   bench/results/<date>-<commit>.json   every scenario's full results
#   bench/results/<date>-<commit>.html   one self-contained report
# (plus one JSON and HTML per scenario beside them) and prints a one-screen
# summary. Stops everything it started, also on failure or Ctrl-C.
#
#   BENCH_SCALE=0.2 make bench   smaller and shorter (a smoke run)
#   BENCH_ONLY="hot-room idle"   run only these scenarios
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
SCALE=${BENCH_SCALE:-1}
ONLY=${BENCH_ONLY:-}
KAFKA_MODE=${BENCH_KAFKA:-real}
STATE=$(mktemp -d "${TMPDIR:-/tmp}/danmaku-bench.XXXXXX")
BIN=build/default/bin
# shellcheck disable=SC1091 # deploy/procs.sh, from the repository root
. deploy/procs.sh

cleanup() {
    stop_pids
    [[ $KAFKA_MODE == real ]] && tests/services/services.sh stop "$STATE" >/dev/null 2>&1
    rm -rf -- "$STATE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf 'bench: %s\n' "$*" >&2; }

scaled() { # n -> n * SCALE, at least 1
    python3 -c "import sys; print(max(1, int(float(sys.argv[1]) * float(sys.argv[2]))))" "$1" "$SCALE"
}

# CPU split: servers on the first half of the CPUs, the generator on the rest.
NCPU=$(nproc)
if ((NCPU >= 2)); then
    SERVER_CPUS="0-$((NCPU / 2 - 1))"
    GEN_CPUS="$((NCPU / 2))-$((NCPU - 1))"
    PIN_SERVER=(taskset -c "$SERVER_CPUS")
    PIN_GEN=(taskset -c "$GEN_CPUS")
else
    SERVER_CPUS="0 (shared)"
    GEN_CPUS="0 (shared)"
    PIN_SERVER=()
    PIN_GEN=()
fi

deploy/install-deps.sh run
log "building (optimized)"
make -j"$NCPU" bins >/dev/null

if [[ $KAFKA_MODE == real ]]; then
    log "starting Redis and a real Kafka broker"
    "${PIN_SERVER[@]}" tests/services/services.sh start "$STATE" >/dev/null
    # shellcheck disable=SC1091
    . "$STATE/env"
    BROKERS=$DANMAKU_TEST_KAFKA_BOOTSTRAP
    REDIS_PORT=$DANMAKU_TEST_REDIS_PORT
else
    log "starting Redis and the embedded Kafka (librdkafka mock cluster)"
    REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "${PIN_SERVER[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
        --appendonly no >"$STATE/redis.log" 2>&1 &
    PIDS+=($!)
    "${PIN_SERVER[@]}" "$BIN/danmaku-mock-kafka" --partitions 32 \
        --bootstrap-file "$STATE/kafka.bootstrap" >"$STATE/kafka.log" 2>&1 &
    PIDS+=($!)
    wait_file "$STATE/kafka.bootstrap"
    BROKERS=$(<"$STATE/kafka.bootstrap")
fi

SECRET_FILE="$STATE/secret"
head -c 48 /dev/urandom | base64 | tr -d '\n=' >"$SECRET_FILE"
common=(--listen-host 127.0.0.1 --kafka-brokers "$BROKERS" --redis-port "$REDIS_PORT"
    --jwt-key-file "$SECRET_FILE" --log-level warn)
# Rate limiting stays on (every comment runs the limiter's Redis script) with
# limits no scenario reaches: the benches measure capacity, not refusals.
limits=(--ratelimit-user-rate 1000000 --ratelimit-user-burst 1000000
    --ratelimit-room-rate 1000000 --ratelimit-room-burst 1000000)
"${PIN_SERVER[@]}" "$BIN/danmaku-ingest" "${common[@]}" "${limits[@]}" --http-port 0 \
    --port-file "$STATE/ingest.port" 2>"$STATE/ingest.log" &
INGEST_PID=$!
PIDS+=("$INGEST_PID")
"${PIN_SERVER[@]}" "$BIN/danmaku-broadcast" "${common[@]}" --ws-port 0 \
    --port-file "$STATE/broadcast.port" --max-connections 19500 2>"$STATE/broadcast.log" &
BCAST_PID=$!
PIDS+=("$BCAST_PID")
wait_file "$STATE/ingest.port"
wait_file "$STATE/broadcast.port"
INGEST="127.0.0.1:$(<"$STATE/ingest.port")"
WS="127.0.0.1:$(<"$STATE/broadcast.port")"

COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT=bench/results
mkdir -p "$OUT"
BASE="$OUT/$STAMP-$COMMIT"

RUN_NO=0
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# CPU seconds (user + system) a process has used so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# A process's CPU share (100 = one core) from ticks and wall clock.
pct() {
    python3 -c "import os,sys; print(round(100*(int(sys.argv[2])-int(sys.argv[1]))/os.sysconf('SC_CLK_TCK')/(float(sys.argv[4])-float(sys.argv[3])),1))" "$@"
}
# The broadcast node's write counters: "writes frames deliveries".
ws_counters() {
    python3 - "$WS" <<'PY'
import sys, urllib.request
want = ["danmaku_ws_writes_total", "danmaku_ws_frames_written_total", "danmaku_deliveries_total"]
got = dict.fromkeys(want, 0)
try:
    text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in got:
            got[name] = int(float(value))
except OSError:
    pass
print(*(got[n] for n in want))
PY
}

# run NAME LOADTEST-FLAGS...: one scenario; records the broadcast node's
# RSS before and at the end of the connected phase.
run() {
    local name=$1
    shift
    if [[ -n $ONLY && " $ONLY " != *" $name "* ]]; then
        return 0
    fi
    log "scenario $name"
    local before peak=0 rc=0 cpu0 t0 cpu1 t1
    before=$(rss_kb "$BCAST_PID")
    cpu0=$(cpu_ticks "$BCAST_PID")
    local icpu0 icpu1
    icpu0=$(cpu_ticks "$INGEST_PID")
    local w0 w1
    w0=$(ws_counters)
    t0=$(date +%s.%N)
    "${PIN_GEN[@]}" "$BIN/danmaku-loadtest" --ws "$WS" --ingest "$INGEST" \
        --kafka-brokers "$BROKERS" --jwt-secret-file "$SECRET_FILE" --quiet \
        --commit "$COMMIT" --kafka-mode "$KAFKA_MODE" --server-cpus "$SERVER_CPUS" \
        --json "$BASE-$name.json" --html "$BASE-$name.html" "$@" \
        >"$STATE/$name.out" 2>&1 &
    local lt=$!
    : >"$STATE/$name.rss"
    while kill -0 "$lt" 2>/dev/null; do
        local now
        now=$(rss_kb "$BCAST_PID")
        ((now > peak)) && peak=$now
        echo "$now" >>"$STATE/$name.rss"
        sleep 0.5
    done
    # The connected phase: the median of the samples, so the connect burst
    # and the close burst at the end do not count as steady-state memory.
    local steady
    steady=$(sort -n "$STATE/$name.rss" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]+0}')
    wait "$lt" || rc=$?
    cpu1=$(cpu_ticks "$BCAST_PID")
    icpu1=$(cpu_ticks "$INGEST_PID")
    t1=$(date +%s.%N)
    w1=$(ws_counters)
    local writes frames deliveries
    read -r writes frames deliveries < <(paste -d' ' <(tr ' ' '\n' <<<"$w1") <(tr ' ' '\n' <<<"$w0") |
        awk '{printf "%d ", $1 - $2} END {print ""}')
    local cpu_pct ingest_cpu_pct
    cpu_pct=$(pct "$cpu0" "$cpu1" "$t0" "$t1")
    ingest_cpu_pct=$(pct "$icpu0" "$icpu1" "$t0" "$t1")
    RUN_NO=$((RUN_NO + 1))
    echo "{\"name\":\"$name\",\"exit\":$rc,\"rss_before_kb\":$before,\"rss_peak_kb\":$peak,\"rss_steady_kb\":$steady,\"server_cpu_pct\":$cpu_pct,\"ingest_cpu_pct\":$ingest_cpu_pct,\"ws_writes\":$writes,\"ws_frames\":$frames,\"deliveries\":$deliveries}" \
        >"$STATE/$(printf %02d "$RUN_NO")-$name.meta"
    ((rc == 0)) || log "$name: exit status $rc (see the table below)"
    cat "$STATE/$name.out"
    # Let the node settle: connections of this scenario close.
    sleep 2
}

V=$(scaled 5000)
# Idle memory first, while the node's heap is fresh: its growth over the
# connected phase divided by the connections is the cost of one viewer. 19,000
# is as many as one process holds here (20,000 descriptors per process).
run idle --viewers "$(scaled 19000)" --rooms 100 --rate 1 --publish kafka \
    --connect-rate 5000 --duration "$(scaled 10)" --warmup 2
run hot-room --scenario hot-room --viewers "$V" --rate "$(scaled 400)" \
    --duration "$(scaled 20)" --threads 1 --max-loss 0
# Twice that: density control (density_cap per viewer and room) samples the
# excess and says how much in `skipped`; nothing may be lost or pile up.
run hot-room-2x --scenario hot-room --viewers "$V" --rate "$(scaled 800)" \
    --duration "$(scaled 20)" --threads 1 --max-loss 0
run many-rooms --scenario many-rooms --viewers "$(scaled 1000)" --rooms 100 \
    --rate "$(scaled 1000)" --duration "$(scaled 20)"
run latency-1k --viewers "$(scaled 1000)" --rooms 1 --rate 2 --publish kafka \
    --duration "$(scaled 20)" --slo-p99 25
run latency-5k --viewers "$V" --rooms 1 --rate 2 --publish kafka --connect-rate 5000 \
    --duration "$(scaled 20)" --slo-p99 100
run ingest-max --scenario ingest-max --rate "$(scaled 20000)" --duration "$(scaled 10)"

python3 - "$BASE" "$STATE" "$SERVER_CPUS" "$GEN_CPUS" "$KAFKA_MODE" <<'PY'
import glob, json, os, sys
base, state, server_cpus, gen_cpus, kafka = sys.argv[1:6]
runs = []
for meta_path in sorted(glob.glob(os.path.join(state, "*.meta"))):
    meta = json.load(open(meta_path))
    path = f"{base}-{meta['name']}.json"
    if not os.path.exists(path):
        runs.append({"name": meta["name"], "exit": meta["exit"], "error": "no results"})
        continue
    res = json.load(open(path))
    res["name"] = meta["name"]
    res["exit"] = meta["exit"]
    res["server_rss_kb"] = {"before": meta["rss_before_kb"], "peak": meta["rss_peak_kb"],
                            "steady": meta.get("rss_steady_kb", meta["rss_peak_kb"])}
    res["server_cpu_pct"] = meta.get("server_cpu_pct")
    res["ingest_cpu_pct"] = meta.get("ingest_cpu_pct")
    # The broadcast node's writes over the scenario: frames per writev (a
    # frame is a room's block of comments) and comments per writev.
    writes = meta.get("ws_writes") or 0
    res["server_writes"] = {"writes": writes, "frames": meta.get("ws_frames", 0),
                            "deliveries": meta.get("deliveries", 0),
                            "frames_per_write": meta.get("ws_frames", 0) / writes if writes else None,
                            "comments_per_write": meta.get("deliveries", 0) / writes if writes else None}
    runs.append(res)
bench = {"tool": "danmaku-bench", "server_cpus": server_cpus, "generator_cpus": gen_cpus,
         "kafka": kafka, "runs": runs}
with open(base + ".json", "w") as f:
    json.dump(bench, f, indent=1)

def ms(us):
    return f"{us / 1000:.1f}" if isinstance(us, (int, float)) else "-"

print(f"\nbenchmark  servers on CPU {server_cpus}, generator on CPU {gen_cpus}, Kafka {kafka}")
print(f"{'scenario':<12} {'viewers':>7} {'deliv/s':>10} {'p50 ms':>7} {'p99 ms':>7} "
      f"{'max ms':>7} {'lost':>6} {'dup':>4} {'ooo':>4} {'gen cpu':>7} {'bc cpu':>6} "
      f"{'KB/conn':>8} {'cmt/wr':>6} {'in cpu':>6}  verdict")
for r in runs:
    s = r.get("summary")
    if s is None:
        print(f"{r['name']:<12} (failed: {r.get('error')})")
        continue
    lat = s.get("latency_us", {})
    rss = r["server_rss_kb"]
    conns = s.get("connections_ok") or 0
    per = (rss["steady"] - rss["before"]) / conns if conns else 0
    verdict = "PASS" if r["slo"]["passed"] else "FAIL: " + "; ".join(r["slo"]["failures"])
    cpw = r["server_writes"]["comments_per_write"]
    cpw = f"{cpw:.1f}" if cpw else "-"
    print(f"{r['name']:<12} {s['viewers']:>7} {s['deliveries_per_s']:>10,.0f} "
          f"{ms(lat.get('p50')):>7} {ms(lat.get('p99')):>7} {ms(lat.get('max')):>7} "
          f"{s['lost']:>6} {s['duplicated']:>4} {s['out_of_order']:>4} "
          f"{s['generator_cpu_pct']:>6.0f}% {r.get('server_cpu_pct') or 0:>5.0f}% "
          f"{per:>8.2f} {cpw:>6} {r.get('ingest_cpu_pct') or 0:>5.0f}%  {verdict}")
print("gen cpu: the load generator (100% = its core saturated: figures are a lower bound);"
      " bc cpu: the broadcast node over the whole run, connect and drain included;"
      " cmt/wr: comments per writev to a viewer (frames per write in the JSON);"
      " in cpu: the ingest node")
print(f"\nresults: {base}.json, {base}.html (and one file pair per scenario)")
PY
if "$BIN/danmaku-loadtest" --render-html "$BASE.json" "$BASE.html" 2>/dev/null; then
    :
else
    log "combined HTML not available; per-scenario reports are beside the JSON"
fi
