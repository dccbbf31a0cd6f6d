#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft, broker+controller in one JVM)
# for integration and end-to-end tests, run from the official Maven Central
# artifacts on the machine's JDK (DESIGN.md §9).
#
#   kafka.sh fetch              fill the jar cache (runs Maven once per version)
#   kafka.sh classpath          print the classpath (for Kafka's console tools)
#   kafka.sh start <statedir>   start on free 127.0.0.1 ports, create the topic,
#                               print "bootstrap=127.0.0.1:<port>" on stdout
#   kafka.sh stop <statedir>    stop it (always succeeds)
#   kafka.sh restart <statedir> start a broker that was stopped or killed again,
#                               on the same ports with the same data (cluster
#                               id, topic and records kept); prints the same
#                               "bootstrap=..." line (for fault-injection tests;
#                               after a SIGKILL it takes ~10 s more: the
#                               controller first waits out the dead broker's
#                               session, broker.session.timeout.ms)
#
# Environment:
#   DANMAKU_KAFKA_VERSION        Kafka version (default below; handed to pom.xml)
#   DANMAKU_KAFKA_CACHE          jar cache directory
#                                (default ${XDG_CACHE_HOME:-$HOME/.cache}/danmaku/kafka-<version>)
#   DANMAKU_TOPIC                topic to create (default danmaku.comments)
#   DANMAKU_PARTITIONS           its partition count (default 32)
#   DANMAKU_KAFKA_HEAP           JVM heap flags (default "-Xms128m -Xmx512m")
#   DANMAKU_KAFKA_START_TIMEOUT  seconds to wait for the broker (default 90)
#   DANMAKU_KAFKA_PORT           broker port for `start` (default: a free one)
#   DANMAKU_KAFKA_ADVERTISED_PORT
#                                port the broker advertises to clients (default:
#                                the broker port). For tests that put a TCP proxy
#                                between clients and the broker: clients reconnect
#                                to the advertised address after bootstrapping, so
#                                it must be the proxy's, and the proxy must already
#                                forward to DANMAKU_KAFKA_PORT when `start` runs
#                                (topic creation goes through it). Kept by `restart`.
#   DANMAKU_MVN                  Maven command (default mvn; only the first fetch runs it)
#   JAVA_HOME                    JDK to use (default: java on PATH)
#
# Files in <statedir>: kafka.pid, kafka.port (broker), kafka.controller.port,
# kafka.bootstrap, kafka.log (the broker JVM's output), kafka-tools.log (storage
# format and topic creation), kafka/ (config and data).
set -euo pipefail

# shellcheck disable=SC2034 # read by lib.sh
SVC_NAME=kafka.sh
HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
. "$HERE/lib.sh"

VERSION=${DANMAKU_KAFKA_VERSION:-3.9.2}
CACHE=${DANMAKU_KAFKA_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/danmaku/kafka-$VERSION}
TOPIC=${DANMAKU_TOPIC:-danmaku.comments}
PARTITIONS=${DANMAKU_PARTITIONS:-32}
HEAP=${DANMAKU_KAFKA_HEAP:--Xms128m -Xmx512m}
START_TIMEOUT=${DANMAKU_KAFKA_START_TIMEOUT:-90}
JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java
MVN=${DANMAKU_MVN:-mvn}
FIXED_PORT=${DANMAKU_KAFKA_PORT:-}
ADVERTISED_PORT=${DANMAKU_KAFKA_ADVERTISED_PORT:-}

BROKER_MAIN=kafka.Kafka
STORAGE_MAIN=kafka.tools.StorageTool
TOPIC_MAIN=org.apache.kafka.tools.TopicCommand

usage() {
    echo "usage: $0 fetch | classpath | start <statedir> | stop <statedir> | restart <statedir>" >&2
    exit 2
}

# The stamp records the version and the POM it was fetched with, so editing
# pom.xml refetches and an interrupted fetch never counts as complete.
stamp_text() {
    printf 'kafka=%s pom=%s\n' "$VERSION" "$(sha256sum <"$HERE/pom.xml" | cut -d' ' -f1)"
}

cache_complete() {
    [[ -f $CACHE/complete.stamp && $(<"$CACHE/complete.stamp") == "$(stamp_text)" ]]
}

fetch() {
    local tmp
    cache_complete && return 0
    command -v "$MVN" >/dev/null || svc_die "mvn not found (run deploy/install-deps.sh)"
    mkdir -p -- "$CACHE"
    # Concurrent test runs share the cache: one fetches, the others wait.
    exec 9>"$CACHE/.lock"
    flock -w 600 9 || svc_die "timed out waiting for another fetch into $CACHE"
    if ! cache_complete; then
        svc_log "fetching Apache Kafka $VERSION from Maven (first run only) into $CACHE"
        tmp=$(mktemp -d "$CACHE/.fetch.XXXXXX")
        if ! "$MVN" -q -B -Dstyle.color=never -f "$HERE/pom.xml" \
            -Dkafka.version="$VERSION" \
            dependency:copy-dependencies -DoutputDirectory="$tmp/libs" \
            </dev/null >"$CACHE/fetch.log" 2>&1; then
            rm -rf -- "$tmp"
            svc_tail "$CACHE/fetch.log"
            svc_die "Maven could not fetch org.apache.kafka:kafka_2.13:$VERSION"
        fi
        [[ -f $tmp/libs/kafka_2.13-$VERSION.jar ]] || {
            rm -rf -- "$tmp"
            svc_die "Maven finished but kafka_2.13-$VERSION.jar is missing"
        }
        rm -rf -- "$CACHE/libs"
        mv -- "$tmp/libs" "$CACHE/libs"
        rmdir -- "$tmp"
        stamp_text >"$CACHE/complete.stamp"
    fi
    exec 9>&-
}

classpath() {
    printf '%s/libs/*\n' "$CACHE"
}

check_java() {
    local line major
    command -v "$JAVA" >/dev/null || svc_die "java not found (run deploy/install-deps.sh)"
    line=$("$JAVA" -version 2>&1 | head -n1)
    major=$(sed -E -n 's/.*version "(1\.)?([0-9]+).*/\2/p' <<<"$line")
    [[ -n $major ]] || svc_die "cannot parse the Java version from: $line"
    ((major >= 11)) || svc_die "Kafka $VERSION needs Java 11 or newer, found: $line"
}

# java_tool MAIN ARGS...: runs one of Kafka's command-line classes in the
# foreground with quiet logging (a short-lived JVM: C1 only, small heap),
# appending its output to kafka-tools.log; shows that output on failure.
java_tool() {
    local main=$1 rc=0
    shift
    (cd -- "$STATE/kafka" && exec "$JAVA" -Xms32m -Xmx256m -XX:TieredStopAtLevel=1 \
        -XX:+UseSerialGC -Djava.awt.headless=true \
        -Dlog4j.configuration="file:$STATE/kafka/tools-log4j.properties" \
        -cp "$(classpath)" "$main" "$@") </dev/null >>"$STATE/kafka-tools.log" 2>&1 || rc=$?
    ((rc == 0)) || svc_tail "$STATE/kafka-tools.log" 20
    return "$rc"
}

write_config() {
    local bport=$1 cport=$2 aport=${3:-$1} dir=$STATE/kafka
    cat >"$dir/server.properties" <<EOF
# Single-node KRaft test broker written by tests/services/kafka.sh.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$bport,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$aport
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
log.retention.hours=24
log.cleaner.enable=true
EOF
    cat >"$dir/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, out
log4j.appender.out=org.apache.log4j.ConsoleAppender
log4j.appender.out.Target=System.out
log4j.appender.out.layout=org.apache.log4j.PatternLayout
log4j.appender.out.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.org.apache.kafka.storage.internals.log=WARN
log4j.logger.kafka.log=WARN
log4j.logger.kafka.server.KafkaConfig=WARN
EOF
    cat >"$dir/tools-log4j.properties" <<'EOF'
log4j.rootLogger=WARN, err
log4j.appender.err=org.apache.log4j.ConsoleAppender
log4j.appender.err.Target=System.err
log4j.appender.err.layout=org.apache.log4j.PatternLayout
log4j.appender.err.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
}

# A cluster id is 16 random bytes in unpadded base64url (Kafka's Uuid). Like
# Kafka's own generator it never starts with '-', which the storage tool's
# argument parser would take for an option (one run in ~64 failed so).
random_cluster_id() {
    local id
    while :; do
        id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
        [[ $id != -* ]] && break
    done
    printf '%s' "$id"
}

broker_pid_matches() {
    svc_pid_matches "$1" "$BROKER_MAIN" "$STATE/kafka/server.properties"
}

# launch: starts the broker JVM in the background and prints its pid (the
# subshell execs java, so $! is the JVM). It runs in its own directory (where a
# crashing JVM leaves hs_err files), reads nothing from stdin and writes only to
# kafka.log, so callers that capture this script's output are never held open.
launch() {
    # shellcheck disable=SC2086 # HEAP is a list of flags
    (cd -- "$STATE/kafka" && exec "$JAVA" $HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dlog4j.configuration="file:$STATE/kafka/log4j.properties" \
        -cp "$(classpath)" "$BROKER_MAIN" "$STATE/kafka/server.properties") \
        </dev/null >>"$STATE/kafka.log" 2>&1 &
    echo "$!"
}

# wait_ready PID PORT [FROM]: 0 once the broker logged that it started (after
# byte FROM of kafka.log, default 0) and accepts connections, 1 if the JVM
# died, 2 on timeout.
wait_ready() {
    local pid=$1 port=$2 from=${3:-0} deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        svc_alive "$pid" || return 1
        if tail -c +"$((from + 1))" -- "$STATE/kafka.log" | grep -q 'Kafka Server started' &&
            svc_port_open "$port"; then
            return 0
        fi
        sleep 0.2
    done
    return 2
}

STARTED_PID=
TAIL_BROKER_LOG=

on_start_exit() {
    local rc=$?
    if ((rc != 0)) && [[ -n $STARTED_PID ]]; then
        [[ -z $TAIL_BROKER_LOG ]] || svc_tail "$STATE/kafka.log"
        svc_log "stopping the half-started broker (pid $STARTED_PID)"
        kill -KILL "$STARTED_PID" 2>/dev/null || true
        svc_wait_gone "$STARTED_PID" 10 || true
        rm -f -- "$STATE/kafka.pid" "$STATE/kafka.port" "$STATE/kafka.controller.port" \
            "$STATE/kafka.bootstrap"
    fi
}

start() {
    local attempt ports bport cport pid rc p t0=$SECONDS
    [[ $PARTITIONS =~ ^[1-9][0-9]*$ ]] || svc_die "DANMAKU_PARTITIONS must be a positive integer"
    [[ $TOPIC =~ ^[A-Za-z0-9._-]{1,249}$ ]] || svc_die "DANMAKU_TOPIC is not a valid topic name"
    for p in "$FIXED_PORT" "$ADVERTISED_PORT"; do
        [[ -z $p || ($p =~ ^[1-9][0-9]{0,4}$ && $p -le 65535) ]] ||
            svc_die "DANMAKU_KAFKA_PORT and DANMAKU_KAFKA_ADVERTISED_PORT must be TCP ports"
    done
    if [[ -f $STATE/kafka.pid ]] && broker_pid_matches "$(<"$STATE/kafka.pid")"; then
        svc_die "already running in $STATE (stop it first)"
    fi
    check_java
    fetch

    trap on_start_exit EXIT
    for attempt in 1 2 3; do
        rm -rf -- "$STATE/kafka"
        rm -f -- "$STATE/kafka.pid" "$STATE/kafka.port" "$STATE/kafka.controller.port" \
            "$STATE/kafka.bootstrap"
        mkdir -p -- "$STATE/kafka/data"
        : >"$STATE/kafka.log"
        : >"$STATE/kafka-tools.log"
        ports=$(svc_free_ports 2) || svc_die "cannot find free ports (python3 missing?)"
        read -r bport cport <<<"$ports"
        if [[ -n $FIXED_PORT ]]; then
            bport=$FIXED_PORT
            [[ $cport != "$bport" ]] || cport=$(svc_free_ports 1)
        fi
        write_config "$bport" "$cport" "$ADVERTISED_PORT"
        java_tool "$STORAGE_MAIN" format --ignore-formatted \
            -t "$(random_cluster_id)" -c "$STATE/kafka/server.properties" ||
            svc_die "formatting the storage failed"

        pid=$(launch)
        STARTED_PID=$pid
        TAIL_BROKER_LOG=1
        echo "$pid" >"$STATE/kafka.pid"
        rc=0
        wait_ready "$pid" "$bport" || rc=$?
        ((rc == 0)) && break
        if ((rc == 1)) && grep -q 'Address already in use' "$STATE/kafka.log"; then
            svc_log "port $bport or $cport was taken, retrying (attempt $attempt)"
            STARTED_PID=
            continue
        fi
        ((rc == 2)) && svc_die "broker did not start within ${START_TIMEOUT}s"
        svc_die "broker exited during startup"
    done
    ((rc == 0)) || svc_die "no free ports after 3 attempts"

    TAIL_BROKER_LOG=
    java_tool "$TOPIC_MAIN" --bootstrap-server "127.0.0.1:$bport" --create \
        --topic "$TOPIC" --partitions "$PARTITIONS" --replication-factor 1 ||
        svc_die "creating topic $TOPIC failed"

    echo "$bport" >"$STATE/kafka.port"
    echo "$cport" >"$STATE/kafka.controller.port"
    echo "127.0.0.1:$bport" >"$STATE/kafka.bootstrap"
    STARTED_PID=
    trap - EXIT
    svc_log "Kafka $VERSION ready on 127.0.0.1:$bport (pid $pid, topic $TOPIC x$PARTITIONS, $((SECONDS - t0))s)"
    echo "bootstrap=127.0.0.1:$bport"
}

stop() {
    # A clean KRaft shutdown of a single node takes a few seconds.
    svc_stop_pidfile "$STATE/kafka.pid" 30 "$BROKER_MAIN" "$STATE/kafka/server.properties"
    rm -f -- "$STATE/kafka.port" "$STATE/kafka.controller.port" "$STATE/kafka.bootstrap"
    return 0
}

# restart: the broker of an earlier `start` in $STATE, stopped or killed since,
# runs again with its config (the same ports) and its data.
restart() {
    local bport cport pid rc from t0=$SECONDS props=$STATE/kafka/server.properties
    [[ -f $props && -f $STATE/kafka/data/meta.properties ]] ||
        svc_die "no broker was started in $STATE (use start)"
    if [[ -f $STATE/kafka.pid ]] && broker_pid_matches "$(<"$STATE/kafka.pid")"; then
        svc_die "already running in $STATE (stop it first)"
    fi
    bport=$(sed -n -E 's/^listeners=PLAINTEXT:\/\/127\.0\.0\.1:([0-9]+),.*/\1/p' "$props")
    cport=$(sed -n -E 's/^controller\.quorum\.voters=1@127\.0\.0\.1:([0-9]+)$/\1/p' "$props")
    [[ $bport =~ ^[0-9]+$ && $cport =~ ^[0-9]+$ ]] || svc_die "cannot read the ports from $props"
    check_java
    cache_complete || svc_die "the cache is empty: run '$0 fetch' first"

    trap on_start_exit EXIT
    from=$(stat -c %s -- "$STATE/kafka.log" 2>/dev/null || echo 0)
    pid=$(launch)
    STARTED_PID=$pid
    TAIL_BROKER_LOG=1
    echo "$pid" >"$STATE/kafka.pid"
    rc=0
    wait_ready "$pid" "$bport" "$from" || rc=$?
    if ((rc != 0)); then
        tail -c +"$((from + 1))" -- "$STATE/kafka.log" | grep -q 'Address already in use' &&
            svc_die "port $bport or $cport was taken since the broker stopped"
        ((rc == 2)) && svc_die "broker did not start again within ${START_TIMEOUT}s"
        svc_die "broker exited while starting again"
    fi
    echo "$bport" >"$STATE/kafka.port"
    echo "$cport" >"$STATE/kafka.controller.port"
    echo "127.0.0.1:$bport" >"$STATE/kafka.bootstrap"
    STARTED_PID=
    TAIL_BROKER_LOG=
    trap - EXIT
    svc_log "Kafka $VERSION running again on 127.0.0.1:$bport (pid $pid, $((SECONDS - t0))s)"
    echo "bootstrap=127.0.0.1:$bport"
}

case ${1:-} in
fetch)
    (($# == 1)) || usage
    fetch
    ;;
classpath)
    (($# == 1)) || usage
    cache_complete || svc_die "the cache is empty: run '$0 fetch' first"
    classpath
    ;;
start)
    (($# == 2)) || usage
    STATE=$(svc_statedir "$2")
    start
    ;;
stop)
    (($# == 2)) || usage
    [[ -d $2 ]] || exit 0
    STATE=$(svc_statedir "$2")
    stop
    ;;
restart)
    (($# == 2)) || usage
    STATE=$(svc_statedir "$2")
    restart
    ;;
*) usage ;;
esac
