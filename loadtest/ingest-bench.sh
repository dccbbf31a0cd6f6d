#!/usr/bin/env bash
# The ingest node's own capacity: ingest alone on the first CPU, everything
# else (Kafka, Redis, a broadcast node and the load generator) on the others,
# so what ingest costs per comment is not mixed with the broker's share.
# `make bench` runs ingest beside Kafka and the broadcast node instead.
#
#   loadtest/ingest-bench.sh [RATE...]      default: 5000 10000 20000
#   INGEST_BENCH_KAFKA=real                 the real broker instead of the
#                                           embedded one (librdkafka's mock
#                                           cluster, much lighter than the JVM)
#   INGEST_BENCH_CONNS=256                  senders' keep-alive connections
#
# For each rate: 10 s of the ingest-max scenario (1,000 senders over 256
# keep-alive connections, 100 rooms), every comment through HS256 JWT, the
# rate limiter's Redis script (limits out of reach) and the Kafka ack. Prints
# accepted comments, the ack latency percentiles and the ingest process's CPU
# time per accepted comment (all its threads), whose inverse is what one core
# of ingest sustains. Stops everything it started.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
RATES=("$@")
((${#RATES[@]})) || RATES=(5000 10000 20000)
KAFKA_MODE=${INGEST_BENCH_KAFKA:-embedded}
# Senders' keep-alive connections, one request in flight each: few of them
# would queue comments in the generator (counted as latency) once the ack
# time times the rate exceeds their number.
CONNS=${INGEST_BENCH_CONNS:-256}
STATE=$(mktemp -d "${TMPDIR:-/tmp}/danmaku-ingest-bench.XXXXXX")
BIN=build/default/bin
# shellcheck disable=SC1091 # deploy/procs.sh, from the repository root
. deploy/procs.sh

cleanup() {
    stop_pids
    tests/services/services.sh stop "$STATE" >/dev/null 2>&1 || true
    rm -rf -- "$STATE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

NCPU=$(nproc)
if ((NCPU < 2)); then
    echo "ingest-bench: needs at least 2 CPUs (one for ingest alone)" >&2
    exit 1
fi
ALONE=(taskset -c 0)
REST=(taskset -c "1-$((NCPU - 1))")

deploy/install-deps.sh run
make -j"$NCPU" bins >/dev/null
"${REST[@]}" tests/services/services.sh start "$STATE" >/dev/null
# shellcheck disable=SC1091
. "$STATE/env"
BROKERS=$DANMAKU_TEST_KAFKA_BOOTSTRAP
if [[ $KAFKA_MODE == embedded ]]; then
    "${REST[@]}" "$BIN/danmaku-mock-kafka" --partitions 32 \
        --bootstrap-file "$STATE/kafka.mock" >"$STATE/mock.log" 2>&1 &
    PIDS+=($!)
    wait_file "$STATE/kafka.mock" 20
    BROKERS=$(<"$STATE/kafka.mock")
fi
head -c 48 /dev/urandom | base64 | tr -d '\n=' >"$STATE/secret"
common=(--listen-host 127.0.0.1 --kafka-brokers "$BROKERS" --redis-port "$DANMAKU_TEST_REDIS_PORT"
    --jwt-key-file "$STATE/secret" --log-level warn)
limits=(--ratelimit-user-rate 1000000 --ratelimit-user-burst 1000000
    --ratelimit-room-rate 1000000 --ratelimit-room-burst 1000000)
"${REST[@]}" "$BIN/danmaku-broadcast" "${common[@]}" --ws-port 0 \
    --port-file "$STATE/broadcast.port" 2>"$STATE/broadcast.log" &
PIDS+=($!)
wait_file "$STATE/broadcast.port" 20

echo "ingest alone on CPU 0, Kafka ($KAFKA_MODE), Redis, broadcast and generator on the rest"
for rate in "${RATES[@]}"; do
    rm -f "$STATE/ingest.port"
    "${ALONE[@]}" "$BIN/danmaku-ingest" "${common[@]}" "${limits[@]}" --workers 1 --http-port 0 \
        --port-file "$STATE/ingest.port" 2>"$STATE/ingest.log" &
    ingest=$!
    wait_file "$STATE/ingest.port" 20
    ticks0=$(awk '{print $14 + $15}' "/proc/$ingest/stat")
    "${REST[@]}" "$BIN/danmaku-loadtest" --ws "127.0.0.1:$(<"$STATE/broadcast.port")" \
        --ingest "127.0.0.1:$(<"$STATE/ingest.port")" --kafka-brokers "$BROKERS" \
        --jwt-secret-file "$STATE/secret" --quiet --scenario ingest-max --rate "$rate" \
        --http-conns "$CONNS" \
        --duration 10 --json "$STATE/r.json" >"$STATE/r.out" 2>&1 || true
    ticks1=$(awk '{print $14 + $15}' "/proc/$ingest/stat")
    kill -TERM "$ingest"
    wait "$ingest" || true
    python3 - "$STATE/r.json" "$rate" "$ticks0" "$ticks1" <<'PY'
import json, os, sys
s = json.load(open(sys.argv[1]))["summary"]
lat = s.get("ack_latency_us") or {}
cpu_us = (int(sys.argv[4]) - int(sys.argv[3])) / os.sysconf("SC_CLK_TCK") * 1e6
per = cpu_us / s["acked"] if s["acked"] else 0
print(f"rate {int(sys.argv[2]):>6}/s  accepted {s['acked']:>7}  errors {s.get('send_errors', 0)}  "
      f"ack p50 {lat.get('p50', 0) / 1000:.1f} ms  p99 {lat.get('p99', 0) / 1000:.1f} ms  "
      f"ingest CPU {per:.1f} us/comment (one core: {1e6 / per if per else 0:,.0f}/s)")
PY
done
