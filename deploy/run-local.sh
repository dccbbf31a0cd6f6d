#!/usr/bin/env bash
# `make run`: install what is missing, build, and start the whole system on
# this machine with embedded defaults:
#   - Redis: the one answering on 127.0.0.1:6379, or a private one started here
#   - Kafka: librdkafka's mock cluster in a helper process (no broker install)
#   - danmaku-ingest on :8080 and danmaku-broadcast on :8081 (127.0.0.1)
# then print the URLs (the viewer page's with a sender token, so its send box
# works), the token and a curl example. Ctrl-C stops everything this script
# started. Ports and every other setting can be changed with the usual
# DANMAKU_* variables (see --help of each binary).
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
BIN=build/default/bin
RUN=$(mktemp -d "${TMPDIR:-/tmp}/danmaku-run.XXXXXX")
# shellcheck disable=SC1091 # deploy/procs.sh, from the repository root
. deploy/procs.sh

stop_all() {
    trap - EXIT INT TERM
    stop_pids
    rm -rf -- "$RUN"
    echo "stopped."
}
trap stop_all EXIT
trap 'exit 0' INT TERM

deploy/install-deps.sh run
make -j"$(nproc)" bins

export DANMAKU_LISTEN_HOST=${DANMAKU_LISTEN_HOST:-127.0.0.1}
export DANMAKU_REDIS_PORT=${DANMAKU_REDIS_PORT:-6379}
export DANMAKU_KAFKA_PARTITIONS=${DANMAKU_KAFKA_PARTITIONS:-32}
export DANMAKU_KAFKA_TOPIC=${DANMAKU_KAFKA_TOPIC:-danmaku.comments}

if ! redis-cli -p "$DANMAKU_REDIS_PORT" ping >/dev/null 2>&1; then
    redis-server --port "$DANMAKU_REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$RUN" >"$RUN/redis.log" 2>&1 &
    PIDS+=($!)
fi

"$BIN/danmaku-mock-kafka" --topic "$DANMAKU_KAFKA_TOPIC" \
    --partitions "$DANMAKU_KAFKA_PARTITIONS" --bootstrap-file "$RUN/kafka.bootstrap" \
    >"$RUN/kafka.log" 2>&1 &
PIDS+=($!)
wait_file "$RUN/kafka.bootstrap" 10
export DANMAKU_KAFKA_BROKERS=$(<"$RUN/kafka.bootstrap")

# A fresh secret per run: the printed token works until this run stops.
head -c 32 /dev/urandom | base64 | tr -d '\n=' >"$RUN/jwt-secret"
export DANMAKU_JWT_KEY_FILE=$RUN/jwt-secret
export DANMAKU_JWT_ALG=HS256

"$BIN/danmaku-ingest" --port-file "$RUN/ingest.port" 2>"$RUN/ingest.log" &
PIDS+=($!)
wait_file "$RUN/ingest.port" 10 || { tail "$RUN/ingest.log"; exit 1; }
ingest_port=$(<"$RUN/ingest.port")
# A viewer opening the demo page sees the room's last comments at once, and
# its send box posts to this ingest (whatever port it got).
export DANMAKU_JOIN_BACKFILL=${DANMAKU_JOIN_BACKFILL:-20}
export DANMAKU_DEMO_INGEST_URL=${DANMAKU_DEMO_INGEST_URL:-http://127.0.0.1:$ingest_port}
"$BIN/danmaku-broadcast" --port-file "$RUN/broadcast.port" 2>"$RUN/broadcast.log" &
PIDS+=($!)
wait_file "$RUN/broadcast.port" 10 || { tail "$RUN/broadcast.log"; exit 1; }
ws_port=$(<"$RUN/broadcast.port")
token=$("$BIN/danmaku-token" mint --alg HS256 --secret-file "$RUN/jwt-secret" --sub demo-user \
    --name "Demo User" --ttl 86400)

cat <<EOT

danmaku is running (logs in $RUN).

  viewer page   http://127.0.0.1:$ws_port/?room=demo#token=$token
  WebSocket     ws://127.0.0.1:$ws_port/v1/ws?room=demo   (subprotocol danmaku.v1)
  ingest API    http://127.0.0.1:$ingest_port/v1/rooms/demo/danmaku

  sender token  $token

The viewer page's address carries the token (after #), so its send box works
as it is. Or send a comment to room "demo" from a shell (open the viewer page
first to watch it arrive):

  curl -s -X POST http://127.0.0.1:$ingest_port/v1/rooms/demo/danmaku \\
    -H 'Authorization: Bearer $token' \\
    -H 'Content-Type: application/json' \\
    -d '{"text":"hello danmaku","color":"#ffcc00"}'

Ctrl-C stops everything started here.
EOT

# Stop everything as soon as one process ends, or on Ctrl-C.
wait -n "${PIDS[@]}" || true
echo "a process ended; see the logs in $RUN" >&2
