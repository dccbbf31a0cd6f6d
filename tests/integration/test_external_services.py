"""The settings operators need for managed Kafka and Redis: a Redis password
(and ACL user) read from a file, librdkafka properties from a file (TLS,
SASL), and the drain deadline the Helm chart sizes its grace period from.
Each against the real Redis and Kafka, with a redis-server of this test's
own where Redis must require a password."""

import os
import re
import signal
import socket
import subprocess
import tempfile
import time

import pytest

import dmtest

PASSWORD = "dev only: p%s w0rd"  # spaces and % must reach Redis unchanged


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_cli(port, *args, password=None):
    cmd = ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "--no-auth-warning"]
    if password is not None:
        cmd += ["-a", password]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=10).stdout.strip()


@pytest.fixture
def secured_redis():
    """A redis-server that requires PASSWORD for the default user and knows
    an ACL user `danmaku` with the same password."""
    d = tempfile.mkdtemp(prefix="dm-redis-auth-")
    port = _free_port()
    log = open(os.path.join(d, "redis.log"), "wb")
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--daemonize", "no", "--dir", d, "--requirepass", PASSWORD],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    deadline = time.monotonic() + 15
    while _redis_cli(port, "PING", password=PASSWORD) != "PONG":
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("the password-protected redis-server did not start")
        time.sleep(0.05)
    assert _redis_cli(port, "ACL", "SETUSER", "danmaku", "on", ">" + PASSWORD, "~*", "+@all",
                      password=PASSWORD) == "OK"
    # Without the password Redis refuses: the nodes below really authenticate.
    assert "NOAUTH" in _redis_cli(port, "SET", "x", "1")
    yield port
    proc.terminate()
    proc.wait(10)
    log.close()


def _write(directory, name, text):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def _ready(port):
    status, _, body = dmtest.http(port, "GET", "/readyz", timeout=5)
    return status, body


def _wait_ready(port, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        status, body = _ready(port)
        if status == 200 or time.monotonic() > deadline:
            return status, body
        time.sleep(0.1)


@pytest.mark.parametrize("user", ["", "danmaku"])
def test_redis_password_file_authenticates_both_nodes(secured_redis, tmp_path, user):
    pw_file = _write(tmp_path, "redis-password", PASSWORD + "\n")
    auth = ["--redis-port", str(secured_redis), "--redis-password-file", pw_file,
            "--redis-user", user]
    ingest = dmtest.start_ingest(*auth)
    bcast = dmtest.start_broadcast(*auth, "--membership-ttl-ms", "3000")
    try:
        status, body = _wait_ready(ingest.port)
        assert status == 200, body
        viewer = dmtest.viewer(bcast.port, "auth-room")
        status, _, body = dmtest.post_comment(ingest.port, "auth-room", "through AUTH",
                                              dmtest.mint())
        assert status == 201, body
        assert viewer.recv_json()["data"]["text"] == "through AUTH"
        # Ingest wrote the history and the limiter's keys, broadcast its
        # online count: all through authenticated connections.
        keys = _redis_cli(secured_redis, "KEYS", dmtest.REDIS_PREFIX + "*", password=PASSWORD)
        assert "auth-room" in keys, keys
        deadline = time.monotonic() + 10
        while dmtest.http(ingest.port, "GET", "/v1/rooms/auth-room")[2].get("online") != 1:
            assert time.monotonic() < deadline, "online count never reached Redis"
            time.sleep(0.1)
        viewer.close()
    finally:
        ingest.assert_clean_exit()
        bcast.assert_clean_exit()
    assert PASSWORD not in ingest.log() and PASSWORD not in bcast.log()


def test_wrong_redis_password_leaves_ingest_unready_and_logs_it(secured_redis, tmp_path):
    pw_file = _write(tmp_path, "redis-password", "not the password\n")
    ingest = dmtest.start_ingest("--redis-port", str(secured_redis), "--redis-password-file",
                                 pw_file)
    try:
        time.sleep(2.0)
        status, body = _ready(ingest.port)
        assert status == 503 and body["message"] == "Redis is not reachable", body
        # Refused connections are retried ever slower (100 ms, doubling),
        # not ten times a second: about 5 tries per worker in 2 s.
        log = ingest.log()
        workers = int(re.search(r'msg="listening" .* workers=(\d+)', log).group(1))
        tries = log.count('msg="redis refused AUTH"')
        assert 1 <= tries <= 7 * workers, (tries, workers)
        # Fixing the secret (as a Kubernetes Secret update does) is picked up
        # at the next reconnect, without a restart.
        _write(tmp_path, "redis-password", PASSWORD)
        status, body = _wait_ready(ingest.port, timeout=15)
        assert status == 200, body
    finally:
        ingest.assert_clean_exit()
    log = ingest.log()
    assert 'msg="redis refused AUTH"' in log
    assert "not the password" not in log


def test_unreadable_redis_password_file_stops_start_up(tmp_path):
    for path, why in ((os.path.join(tmp_path, "missing"), "No such file"),
                      (_write(tmp_path, "empty", "\n"), "empty")):
        proc = subprocess.run([os.path.join(dmtest.BIN, "danmaku-ingest"),
                               "--redis-password-file", path, "--jwt-key-file",
                               dmtest.SECRET_FILE], capture_output=True, text=True, timeout=20)
        assert proc.returncode == 1 and "redis_password_file" in proc.stderr and \
            why in proc.stderr, proc.stderr


def test_kafka_properties_file_reaches_every_client(tmp_path):
    good = _write(tmp_path, "good.properties",
                  "# comments and blank lines are fine\n\n"
                  "client.id = danmaku-properties-test\n"
                  "security.protocol=plaintext\n")
    ingest = dmtest.start_ingest("--kafka-properties-file", good)
    bcast = dmtest.start_broadcast("--kafka-properties-file", good)
    try:
        viewer = dmtest.viewer(bcast.port, "props-room")
        status, _, body = dmtest.post_comment(ingest.port, "props-room", "with properties",
                                              dmtest.mint())
        assert status == 201, body
        assert viewer.recv_json()["data"]["text"] == "with properties"
        viewer.close()
    finally:
        ingest.assert_clean_exit()
        bcast.assert_clean_exit()

    # A property that cannot work against this plaintext broker: the node
    # never reaches Kafka, so the file really is applied to the producer.
    tls = _write(tmp_path, "tls.properties", "security.protocol = ssl\n")
    ingest = dmtest.start_ingest("--kafka-properties-file", tls,
                                 "--kafka-delivery-timeout-ms", "1000")
    try:
        time.sleep(1.5)
        status, body = _ready(ingest.port)
        assert status == 503 and body["message"] == "Kafka is not reachable", body
        status, _, body = dmtest.post_comment(ingest.port, "props-room", "refused",
                                              dmtest.mint())
        assert status == 503, body
    finally:
        ingest.assert_clean_exit()


@pytest.mark.parametrize("line, why", [
    ("no.such.property = 1", 'refuses property "no.such.property"'),
    ("acks = sometimes-secret", 'refuses property "acks"'),
    ("bootstrap.servers = 127.0.0.1:1", "kafka_brokers"),
    ("delivery.report.only.error = true", "not configurable"),
    ("client.id = " + "x" * 5000, "line longer than"),
    ("just words", "expected name = value"),
])
def test_bad_kafka_properties_stop_start_up_without_echoing_values(tmp_path, line, why):
    path = _write(tmp_path, "bad.properties", "client.id = ok\n" + line + "\n")
    for binary in ("danmaku-ingest", "danmaku-broadcast"):
        proc = subprocess.run([os.path.join(dmtest.BIN, binary), "--kafka-properties-file", path,
                               "--jwt-key-file", dmtest.SECRET_FILE],
                              capture_output=True, text=True, timeout=20)
        assert proc.returncode == 1, proc.stderr
        assert f"bad.properties:2: " in proc.stderr and why in proc.stderr, proc.stderr
        assert "sometimes-secret" not in proc.stderr


def _exit_seconds(node):
    start = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)
    node.proc.wait(30)
    return time.monotonic() - start


def test_drain_timeout_bounds_the_broadcast_shutdown(secured_redis, tmp_path):
    """On SIGTERM a broadcast node withdraws its rooms from Redis before it
    exits; a Redis that does not answer holds that until drain_timeout_ms,
    what the chart's grace period is sized from."""
    pw_file = _write(tmp_path, "redis-password", PASSWORD)
    pid = int(_redis_cli(secured_redis, "INFO", "server", password=PASSWORD)
              .split("process_id:")[1].split()[0])
    times = {}
    for drain_ms in (300, 3000):
        bcast = dmtest.start_broadcast("--drain-timeout-ms", str(drain_ms), "--redis-port",
                                       str(secured_redis), "--redis-password-file", pw_file,
                                       "--redis-timeout-ms", "20000")
        viewer = dmtest.viewer(bcast.port, "drain-room")
        os.kill(pid, signal.SIGSTOP)
        try:
            times[drain_ms] = _exit_seconds(bcast)
        finally:
            os.kill(pid, signal.SIGCONT)
        bcast.assert_clean_exit()
        viewer.close()
    assert times[300] < 2.0, times
    assert times[3000] >= 2.9, times


def _loadtest(bcast, properties):
    out = subprocess.run(
        [os.path.join(dmtest.BIN, "danmaku-loadtest"), "--ws", f"127.0.0.1:{bcast.port}",
         "--publish", "kafka", "--kafka-brokers", dmtest.kafka_bootstrap(), "--kafka-topic",
         dmtest.topic(), "--kafka-partitions", str(dmtest.partitions()),
         "--kafka-properties-file", properties, "--viewers", "4", "--rooms", "1", "--rate", "20",
         "--duration", "1.5", "--warmup", "0.5", "--drain", "2", "--quiet"],
        capture_output=True, text=True, timeout=60)
    return out


def test_loadtest_takes_the_same_kafka_properties(tmp_path):
    """The load tester publishing straight into Kafka reads the nodes' file
    format, so it can measure a cluster behind TLS/SASL too."""
    bcast = dmtest.start_broadcast()
    try:
        good = _write(tmp_path, "good.properties", "client.id = danmaku-loadtest-props\n")
        run = _loadtest(bcast, good)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        bad = _write(tmp_path, "bad.properties", "no.such.property = 1\n")
        run = _loadtest(bcast, bad)
        assert run.returncode == 1 and "bad.properties:1: " in run.stderr, run.stderr
    finally:
        bcast.assert_clean_exit()
