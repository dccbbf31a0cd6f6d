"""Helpers for the integration tests: start the real binaries on port 0,
talk HTTP and WebSocket to them, and check their stderr for sanitizer
reports. The WebSocket client here is deliberately independent of
common/ws.c, so a bug there cannot hide itself."""

import atexit
import base64
import hashlib
import http.client as httpclient
import json
import os
import resource
import signal
import socket
import struct
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("DANMAKU_BUILD", os.path.join(ROOT, "build", "default"))
BIN = os.path.join(BUILD, "bin")
SECRET_FILE = os.path.join(ROOT, "tests", "fixtures", "dev-secret.txt")
# Each test run gets its own key space in the shared Redis.
REDIS_PREFIX = f"dmtest:{os.getpid()}:"
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "ThreadSanitizer", "panic:")


def env(name, default=None):
    value = os.environ.get(name, default)
    if value is None:
        raise RuntimeError(f"{name} is not set: run the tests through tests/run.sh")
    return value


def kafka_bootstrap():
    return env("DANMAKU_TEST_KAFKA_BOOTSTRAP")


def redis_port():
    return env("DANMAKU_TEST_REDIS_PORT")


def topic():
    return env("DANMAKU_TEST_TOPIC", "danmaku.comments")


def partitions():
    return int(env("DANMAKU_TEST_PARTITIONS", "32"))


def mint(sub="alice", ttl=600, **claims):
    args = [os.path.join(BIN, "danmaku-token"), "mint", "--alg", "HS256",
            "--secret-file", SECRET_FILE, "--sub", sub, "--ttl", str(ttl)]
    for key, value in claims.items():
        args += ["--" + key, str(value)]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


_started = []


@atexit.register
def _kill_leftovers():
    """Safety net: no server outlives the test run, whatever failed."""
    for node in _started:
        if node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()


class Node:
    """One server process started with port 0; its port is read from the port file."""

    def __init__(self, binary, args, port_flag, nofile=None):
        """nofile: a limit on the process's file descriptors (RLIMIT_NOFILE)."""
        self.dir = tempfile.mkdtemp(prefix="dm-node-")
        self.port_file = os.path.join(self.dir, "port")
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.stderr = open(self.stderr_path, "wb")
        cmd = [os.path.join(BIN, binary), "--listen-host", "127.0.0.1", port_flag, "0",
               "--port-file", self.port_file, "--log-level", "debug"] + args
        def limit_fds():
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.stderr,
                                     stdin=subprocess.DEVNULL,
                                     preexec_fn=limit_fds if nofile is not None else None)
        _started.append(self)
        self.port = self._wait_port()

    def _wait_port(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args[0]} exited {self.proc.returncode}:\n"
                                   + self.log())
            try:
                with open(self.port_file) as f:
                    return int(f.read().strip())
            except (FileNotFoundError, ValueError):
                time.sleep(0.02)
        raise RuntimeError("no port file from " + self.proc.args[0])

    def cpu_seconds(self):
        """User and system CPU time the process (all its threads) used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log(self):
        if not self.stderr.closed:
            self.stderr.flush()
        with open(self.stderr_path, errors="replace") as f:
            return f.read()

    def stop(self, timeout=20):
        """SIGTERM, wait, and return (exit status, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        return self.proc.returncode, self.log()

    def assert_clean_exit(self):
        code, log = self.stop()
        bad = [line for line in log.splitlines() if any(m in line for m in SANITIZER_MARKS)]
        assert not bad, "sanitizer or panic report:\n" + log[-6000:]
        assert code == 0, f"exit status {code}:\n" + log[-3000:]


# Rate limits far above what the tests post (a test user posts many
# comments at once), so every comment still goes through the limiter's
# script; test_ratelimit*.py set real ones.
GENEROUS_LIMITS = ["--ratelimit-user-rate", "100000", "--ratelimit-user-burst", "100000",
                   "--ratelimit-room-rate", "100000", "--ratelimit-room-burst", "100000"]


def start_ingest(*extra, brokers=None, nofile=None):
    """Later flags win, so extra can override any of these."""
    return Node("danmaku-ingest",
                ["--kafka-brokers", brokers or kafka_bootstrap(), "--kafka-topic", topic(),
                 "--kafka-partitions", str(partitions()), "--jwt-key-file", SECRET_FILE,
                 "--redis-port", redis_port(), "--redis-prefix", REDIS_PREFIX] +
                GENEROUS_LIMITS + list(extra),
                "--http-port", nofile=nofile)


def start_broadcast(*extra, nofile=None):
    return Node("danmaku-broadcast",
                ["--kafka-brokers", kafka_bootstrap(), "--kafka-topic", topic(),
                 "--kafka-partitions", str(partitions()), "--redis-port", redis_port(),
                 "--redis-prefix", REDIS_PREFIX, "--heartbeat-ms", "1000"] + list(extra),
                "--ws-port", nofile=nofile)


def http(port, method, path, body=None, headers=None, timeout=15):
    """Returns (status, headers dict with lower-case names, parsed JSON or raw text)."""
    conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    hdrs = dict(headers or {})
    if data is not None and "Content-Type" not in hdrs:
        hdrs["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw.decode(errors="replace")
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, parsed


def metric(port, series):
    """The value of one series of a node's /metrics, e.g.
    'danmaku_connections_refused_total{reason="max_connections"}'; 0 when absent."""
    _, _, text = http(port, "GET", "/metrics", timeout=5)
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def post_comment(port, room, text, token, **fields):
    body = {"text": text}
    body.update(fields)
    return http(port, "POST", f"/v1/rooms/{room}/danmaku", body,
                {"Authorization": "Bearer " + token})


class WSClient:
    """A small RFC 6455 client: masked frames out, unmasked frames in."""

    def __init__(self, port, path="/v1/ws", protocol="danmaku.v1", timeout=10, sock=None):
        """sock: an already connected socket to use (e.g. with a small
        receive buffer)."""
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n")
        if protocol:
            req += f"Sec-WebSocket-Protocol: {protocol}\r\n"
        self.sock.sendall((req + "\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during handshake: " + repr(self.buf))
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip()
                        for l in lines[1:]}
        if self.status == 101:
            expect = base64.b64encode(hashlib.sha1(
                (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
            assert self.headers.get("sec-websocket-accept") == expect

    def _recv_exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def recv_frame(self, timeout=10):
        """Returns (opcode, payload bytes)."""
        self.sock.settimeout(timeout)
        b0, b1 = self._recv_exact(2)
        assert b1 & 0x80 == 0, "server frames must not be masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._recv_exact(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._recv_exact(8))[0]
        return b0 & 0x0F, self._recv_exact(n)

    def recv_json(self, timeout=10, skip=("online",)):
        """Next text message as JSON, answering pings on the way and passing
        over the periodic ops in skip (online counts arrive any time)."""
        deadline = time.time() + timeout
        while True:
            op, payload = self.recv_frame(max(0.01, deadline - time.time()))
            if op == 0x9:
                self.send_frame(0xA, payload)
            elif op == 0x1:
                msg = json.loads(payload)
                if msg.get("op") in skip:
                    continue
                return msg
            elif op == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise ConnectionError(f"closed by server with {code}")

    def send_frame(self, opcode, payload, fin=True):
        mask = os.urandom(4)
        head = bytes([(0x80 if fin else 0) | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send_json(self, obj):
        self.send_frame(0x1, json.dumps(obj).encode())

    def close(self):
        try:
            self.send_frame(0x8, struct.pack("!H", 1000))
        except OSError:
            pass
        self.sock.close()


def connected(port, room=None):
    """A WebSocket viewer past `hello` (its `joined`, when room is given, is
    still to be read)."""
    ws = WSClient(port, f"/v1/ws?room={room}" if room else "/v1/ws")
    assert ws.status == 101
    assert ws.recv_json()["op"] == "hello"
    return ws


def viewer(port, room):
    """A viewer of room, past `hello` and `joined`."""
    ws = connected(port, room)
    assert ws.recv_json(timeout=20)["op"] == "joined"
    return ws
