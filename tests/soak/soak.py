#!/usr/bin/env python3
"""`make soak`: a bounded soak test of the whole system.

Starts its own Redis and Kafka (tests/services/services.sh), two broadcast
nodes and one ingest node with short TTLs, warms them up, and records a
baseline once they are idle again: per process its open descriptors, RSS,
threads and connections, and Redis's keys and clients. Then it runs phases of
mixed load with danmaku-loadtest for SOAK_SECONDS (many rooms with reconnect
churn, a hot room through ingest beside slow viewers fed straight from Kafka,
a reconnect storm, a connect burst over many rooms; comments with an
Idempotency-Key, each sent twice, into a room of their own), with pauses
between them. Each phase must lose nothing: the load tester's lost,
duplicated, out_of_order, unrecoverable, not_recovered and errors all 0,
delivered + skipped (announced by density control) = expected; the keyed
comments each seen once, in order, and the retry right after a 201 answered
with the same 201. After the load it waits out the TTLs and checks that
everything went back to the baseline:

  connections   no viewer connection left: established sockets on the
                node's port 0, the node's gauge no more than the /metrics
                request reading it
  descriptors   baseline + FD_SLACK at most
  threads       baseline at most (catch-up readers end)
  Redis         the same keys as at the baseline, except one epoch key per
                Kafka partition (epoch:<topic>:<p>, no TTL by design: the
                stream's identity, DESIGN.md §10), at most P of them; every
                other key has a TTL, set short here, and must be gone
                (history: history_max per room and history_ttl_ms)
  Redis clients as at the baseline
  RSS           baseline + RSS_SHARE + RSS_SLACK_MB at most (not under ASan,
                whose quarantine keeps freed memory on purpose: there the
                leak check at exit is the memory check)

It prints a table, writes every figure to a JSON file, and exits 1 on any
violation. Every process it started is stopped on every exit path.

  SOAK_SECONDS=300       seconds of load (the pauses come on top)
  SOAK_BUILD=build/default  binaries to test (built with make when missing,
                         with SANITIZER=SOAK_SANITIZER or the directory's name
                         when that is address or thread)
  SOAK_SCALE=1           load scale (default 0.5 for an ASan build)
  SOAK_OUT=FILE          result JSON (default bench/results/soak-<date>-<commit>.json)
"""

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECONDS = float(os.environ.get("SOAK_SECONDS", "300"))
BUILD = os.environ.get("SOAK_BUILD", "build/default")
BUILD = BUILD if os.path.isabs(BUILD) else os.path.join(ROOT, BUILD)
BIN = os.path.join(BUILD, "bin")
SECRET_FILE = os.path.join(ROOT, "tests", "fixtures", "dev-secret.txt")
PREFIX = "soak:"

# Short lifetimes, so an idle system is back to its baseline within a minute.
MEMBERSHIP_TTL_MS = 3000
HISTORY_TTL_MS = 5000
HISTORY_MAX = 100
IDEMPOTENCY_TTL_MS = 5000
RECOVERY_AGE_MS = 15000  # an empty room lingers this long on a node
PARTITION_GRACE_MS = 3000
QUIET_S = max(MEMBERSHIP_TTL_MS, HISTORY_TTL_MS, IDEMPOTENCY_TTL_MS, RECOVERY_AGE_MS,
              PARTITION_GRACE_MS) / 1000 + 3
SETTLE_S = QUIET_S + 45

FD_SLACK = 2
# The broadcast node's danmaku_connections gauge counts every accepted TCP
# connection, the HTTP request for /metrics included: an idle node reads 1.
# Viewer connections are also counted exactly, as established sockets.
SCRAPE_CONNS = 1
# glibc keeps freed memory in its arenas (one per worker thread, and
# librdkafka's threads) and returns only what lies at the top of a heap, so
# RSS after a load stays above the idle baseline by the fragmentation of
# that load; it must not grow with the length of the run (the RSS at each
# pause is in the table: a leak climbs, fragmentation levels off). Measured
# on the 2-core machine: 5 minutes left a broadcast node 2-3 MB above its
# ~14 MB baseline and ingest 0.1 MB above its ~11 MB; a leak of 100 bytes
# per connection or per comment delivered would pass 8 MB within minutes.
RSS_SHARE = 0.20
RSS_SLACK_MB = 8

PHASE_S = 20   # measured seconds of a phase (warm-up and drain come on top)
PAUSE_S = 5
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "ThreadSanitizer", "panic:")

os.environ["DANMAKU_BUILD"] = BUILD
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import dmtest  # noqa: E402  (after DANMAKU_BUILD: it picks the binaries)


def log(msg):
    print(f"soak: {msg}", file=sys.stderr, flush=True)


class Violation(Exception):
    pass


def on_signal(signum, frame):
    raise SystemExit(128 + signum)


# ---- builds ----

def is_asan():
    try:
        out = subprocess.run(["ldd", os.path.join(BIN, "danmaku-broadcast")],
                             capture_output=True, text=True).stdout
    except OSError:
        return False
    return "libasan" in out


def ensure_built():
    need = ["danmaku-broadcast", "danmaku-ingest", "danmaku-loadtest", "danmaku-token"]
    if all(os.access(os.path.join(BIN, b), os.X_OK) for b in need):
        return
    rel = os.path.relpath(BUILD, ROOT)
    args = ["make", f"-j{os.cpu_count() or 2}", f"BUILD={rel}", "bins"]
    san = os.environ.get("SOAK_SANITIZER") or os.path.basename(BUILD)
    if san in ("address", "thread"):
        args.append(f"SANITIZER={san}")
    log(f"building {rel}: {' '.join(args)}")
    subprocess.run(args, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


# ---- Redis (a few commands over RESP, no client library needed) ----

class Redis:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.f = self.sock.makefile("rb")

    def cmd(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self._read()

    def _read(self):
        line = self.f.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError("redis: " + rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RuntimeError(f"redis: unexpected reply {line!r}")

    def keys(self):
        """Every key under the prefix: {name: (type, pttl, size)}."""
        found, cursor = {}, "0"
        while True:
            cursor, batch = self.cmd("SCAN", cursor, "MATCH", PREFIX + "*", "COUNT", 1000)
            for k in batch:
                found[k] = None
            if cursor == "0":
                break
        for k in list(found):
            kind = self.cmd("TYPE", k)
            size = {"zset": "ZCARD", "hash": "HLEN", "list": "LLEN", "set": "SCARD",
                    "string": "STRLEN"}.get(kind)
            found[k] = (kind, self.cmd("PTTL", k), self.cmd(size, k) if size else None)
        return {k: v for k, v in found.items() if v[0] != "none"}

    def clients(self):
        info = self.cmd("INFO", "clients")
        m = re.search(r"connected_clients:(\d+)", info)
        return int(m.group(1)) - 1  # not this one

    def close(self):
        self.sock.close()


# Keys an idle system keeps while its nodes run: the broadcast nodes'
# registry, refreshed by their heartbeats (it expires once they are gone).
LIVE_CLASSES = ("nodes",)


def key_class(name):
    """The key's kind: the first word after the prefix (online, hist, rl, ...)."""
    return name[len(PREFIX):].split(":", 1)[0]


# ---- the nodes ----

class Proc:
    """A node started on port 0, its stderr in the state directory."""

    def __init__(self, name, binary, port_flag, args, state):
        self.name = name
        self.port_file = os.path.join(state, name + ".port")
        self.log_path = os.path.join(state, name + ".log")
        self.stderr = open(self.log_path, "wb")
        cmd = [os.path.join(BIN, binary), "--listen-host", "127.0.0.1", port_flag, "0",
               "--port-file", self.port_file, "--node-id", "soak-" + name,
               "--log-level", "warn"] + args
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr)
        self.pid = self.proc.pid
        self.port = None

    def wait_port(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise Violation(f"{self.name} exited {self.proc.returncode} at start:\n"
                                + self.log_tail())
            try:
                with open(self.port_file) as f:
                    self.port = int(f.read().strip())
                    return
            except (FileNotFoundError, ValueError):
                time.sleep(0.05)
        raise Violation(f"{self.name}: no port file after {timeout}s")

    def log_tail(self, n=4000):
        self.stderr.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()[-n:]

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return "killed after SIGTERM timed out"
        if not self.stderr.closed:
            self.stderr.close()
        return None

    def sample(self):
        """Descriptors, RSS (kB), threads, sockets and established client
        connections on its port; the node's gauges from /metrics."""
        fds = os.listdir(f"/proc/{self.pid}/fd")
        sockets = set()
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{self.pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                sockets.add(target[8:-1])
        status = open(f"/proc/{self.pid}/status").read()
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
        threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
        # Before the scrape, so its own connection is not counted.
        established = established_on(self.port, sockets)
        gauges = metrics(self.port)
        return {"fds": len(fds), "rss_kb": rss, "threads": threads, "sockets": len(sockets),
                "established": established,
                "connections": int(gauges.get("danmaku_connections", 0)),
                "rooms": int(gauges.get("danmaku_rooms", 0)),
                "partitions": int(gauges.get("danmaku_kafka_partitions_assigned", 0)),
                "in_flight": int(gauges.get("danmaku_kafka_in_flight", 0))}


def established_on(port, inodes):
    """Established TCP connections of this process with local port `port`."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            cols = line.split()
            local_port = int(cols[1].split(":")[1], 16)
            if local_port == port and cols[3] == "01" and cols[9] in inodes:
                n += 1
    return n


def counters(procs):
    """Every counter of every node: {node: {series: value}}."""
    out = {}
    for p in procs:
        out[p.name] = {k: v for k, v in metrics(p.port).items() if "_total" in k}
    return out


def counter_deltas(before, after):
    out = {}
    for name, series in after.items():
        d = {k: int(v - before.get(name, {}).get(k, 0)) for k, v in series.items()}
        out[name] = {k: v for k, v in d.items() if v}
    return out


def node_sum(deltas, series):
    return sum(d.get(series, 0) for n, d in deltas.items() if n.startswith("broadcast"))


def metrics(port):
    try:
        _, _, text = dmtest.http(port, "GET", "/metrics", timeout=10)
    except OSError:
        return {}
    out = {}
    for line in text.splitlines() if isinstance(text, str) else ():
        if line.startswith("#") or not line:
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


# ---- load ----

def loadtest_args(spec, nodes, ingest, env, seconds, json_path):
    args = [os.path.join(BIN, "danmaku-loadtest"),
            "--ws", ",".join(f"127.0.0.1:{n.port}" for n in nodes),
            "--ingest", f"127.0.0.1:{ingest.port}", "--jwt-secret-file", SECRET_FILE,
            "--kafka-brokers", env["DANMAKU_TEST_KAFKA_BOOTSTRAP"],
            "--kafka-topic", env["DANMAKU_TEST_TOPIC"],
            "--kafka-partitions", env["DANMAKU_TEST_PARTITIONS"],
            "--duration", f"{seconds:g}", "--warmup", "2", "--drain", "3", "--quiet",
            "--json", json_path]
    for key, value in spec.items():
        args += ["--" + key.replace("_", "-"), str(value)]
    return args


def scaled(spec, scale):
    out = dict(spec)
    for key in ("viewers", "rate"):
        if key in out:
            out[key] = max(1, int(out[key] * scale))
    return out


# Each phase: one or more loadtest runs side by side. Slow viewers are fed
# 1 KB comments straight from Kafka so they reach the nodes' output bound and
# are cut with 4008 (that close path is part of the soak).
PHASES = [
    ("many-rooms-churn", [dict(viewers=400, rooms=40, rate=100, reconnect_every=3)]),
    ("hot-room+slow", [dict(viewers=400, rooms=8, hot_share=0.7, rate=150),
                       dict(viewers=100, rooms=1, rate=400, publish="kafka", slow_share=0.1,
                            message_size=1000)]),
    ("reconnect-storm", [dict(viewers=300, rooms=10, rate=60, reconnect_every=1)]),
    ("connect-burst", [dict(viewers=1500, rooms=100, rate=20, connect_rate=1000)]),
]


def check_summary(s, rc, out):
    bad = []
    if rc != 0:
        bad.append(f"loadtest exit {rc}: {out[-1500:]}")
    for key in ("lost", "duplicated", "out_of_order", "unrecoverable", "not_recovered",
                "send_errors", "connect_errors"):
        if s.get(key, 0) != 0:
            bad.append(f"{key}={s.get(key)}")
    # Density control may thin a burst above density_cap for a viewer; it
    # says so (`skipped`), and the tool counts that apart from loss.
    if (s.get("delivered", 0) + s.get("skipped", 0) != s.get("expected")
            or not s.get("expected")):
        bad.append(f"delivered {s.get('delivered')} + skipped {s.get('skipped')} of "
                   f"{s.get('expected')}")
    if s.get("acked") != s.get("sent"):
        bad.append(f"acked {s.get('acked')} of {s.get('sent')}")
    return bad


class IdemSender:
    """Comments with an Idempotency-Key into a room of their own, each sent
    twice (the second a retry: same key and body, must answer the same id
    and offset, marked replayed), watched by one WebSocket viewer that must
    see each exactly once, in offset order."""

    def __init__(self, ingest, node, room, token, rate=2.0):
        self.ingest, self.room, self.token, self.rate = ingest, room, token, rate
        self.ws = dmtest.viewer(node.port, room)
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.received = []  # (id, offset)
        self.accepted = {}  # id -> offset
        self.errors = []
        self.replays = 0
        self.in_progress = []  # keys whose retry right after the 201 was answered 409
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.writer = threading.Thread(target=self._write, daemon=True)
        self.reader.start()
        self.writer.start()

    def _next(self, wait):
        """The next message, or None when nothing arrived for `wait` seconds.
        Waits for data before reading, so a timeout never cuts a frame."""
        if not self.ws.buf:
            readable, _, _ = select.select([self.ws.sock], [], [], wait)
            if not readable:
                return None
        try:
            return self.ws.recv_json(timeout=10, skip=("online", "skipped"))
        except socket.timeout:
            return None  # only pings came

    def _read(self):
        while not self.stop_ev.is_set():
            try:
                msg = self._next(0.5)
                if msg is None:
                    continue
            except (OSError, ConnectionError, ValueError) as e:
                if not self.stop_ev.is_set():
                    self.errors.append(f"viewer: {e!r}")
                return
            if msg.get("op") == "danmaku":
                with self.lock:
                    self.received.append((msg["data"]["id"], msg["offset"]))

    def _write(self):
        n = 0
        while not self.stop_ev.wait(1.0 / self.rate):
            n += 1
            key = f"{self.room}-{n}"
            body = {"text": f"idem {n}"}
            hdrs = {"Authorization": "Bearer " + self.token, "Idempotency-Key": key}
            try:
                st1, _, r1 = dmtest.http(self.ingest.port, "POST",
                                         f"/v1/rooms/{self.room}/danmaku", body, hdrs)
                st2, h2, r2 = dmtest.http(self.ingest.port, "POST",
                                          f"/v1/rooms/{self.room}/danmaku", body, hdrs)
                if n % 10 == 0:
                    st3, _, _ = dmtest.http(self.ingest.port, "GET",
                                            f"/v1/rooms/{self.room}/danmaku?limit=20")
                    if st3 != 200:
                        self.errors.append(f"history: {st3}")
            except OSError as e:
                self.errors.append(f"post {key}: {e!r}")
                continue
            if st1 == 201 and st2 == 409 and isinstance(r2, dict) and \
                    r2.get("error") == "in_progress":
                # The client holds the 201, and the key still reads as in
                # progress: the answer is stored after it was sent. Retry
                # as a client would, to see that the same answer comes.
                self.in_progress.append(key)
                for _ in range(50):
                    time.sleep(0.1)
                    st2, h2, r2 = dmtest.http(self.ingest.port, "POST",
                                              f"/v1/rooms/{self.room}/danmaku", body, hdrs)
                    if st2 != 409:
                        break
            if st1 == 201:
                with self.lock:
                    self.accepted[r1["id"]] = r1["offset"]
            if st1 != 201 or st2 != 201:
                self.errors.append(f"post {key}: {st1} {r1} / retry {st2} {r2}")
                continue
            if (r1["id"], r1["offset"]) != (r2["id"], r2["offset"]):
                self.errors.append(f"retry of {key} answered {r2}, first {r1}")
            if h2.get("idempotent-replayed") == "true":
                self.replays += 1
            else:
                self.errors.append(f"retry of {key} not marked Idempotent-Replayed")

    def finish(self):
        """Stops sending, waits for the viewer to have everything, and checks."""
        self.stop_ev.set()
        self.writer.join(30)
        # The reader stopped too; read what is still due on this thread.
        self.reader.join(15)
        deadline = time.time() + 15
        while time.time() < deadline:
            with self.lock:
                got = {i for i, _ in self.received}
            if set(self.accepted) <= got:
                break
            try:
                msg = self._next(0.5)
                if msg is not None and msg.get("op") == "danmaku":
                    self.received.append((msg["data"]["id"], msg["offset"]))
            except (OSError, ConnectionError, ValueError) as e:
                self.errors.append(f"viewer: {e!r}")
                break
        self.ws.close()
        ids = [i for i, _ in self.received]
        offsets = [o for _, o in self.received]
        res = {"posted": len(self.accepted), "replayed": self.replays,
               "received": len(self.received),
               "missing": len(set(self.accepted) - set(ids)),
               "duplicated": len(ids) - len(set(ids)),
               "unexpected": len(set(ids) - set(self.accepted)),
               "out_of_order": sum(1 for a, b in zip(offsets, offsets[1:]) if b <= a),
               "in_progress_after_201": len(self.in_progress),
               "errors": self.errors[:10]}
        bad = [f"{k}={res[k]}" for k in ("missing", "duplicated", "unexpected", "out_of_order")
               if res[k]]
        if self.in_progress:
            bad.append(f"{len(self.in_progress)} of {res['posted']} retries sent right after "
                       f"their 201 were answered 409 in_progress instead of the same 201 "
                       f"(e.g. key {self.in_progress[0]}); a later retry got the 201")
        if self.errors:
            bad.append(f"{len(self.errors)} errors, first: {self.errors[0]}")
        if res["posted"] == 0:
            bad.append("no keyed comment accepted")
        return res, bad


# ---- the run ----

class Soak:
    def __init__(self):
        self.state = tempfile.mkdtemp(prefix="danmaku-soak.")
        self.svc = os.path.join(self.state, "svc")
        self.services_up = False
        self.procs = []
        self.loadtests = []
        self.redis = None
        self.series = []  # samples at each pause
        self.peak = {}
        self.violations = []
        self.phases = []
        self.sampler_stop = threading.Event()

    # -- start and stop --

    def start(self):
        log(f"state in {self.state}; starting Redis and Kafka")
        self.services_up = True  # stop is safe after a failed start too
        subprocess.run([os.path.join(ROOT, "tests", "services", "services.sh"), "start",
                        self.svc], check=True, stdout=subprocess.DEVNULL)
        self.env = {}
        with open(os.path.join(self.svc, "env")) as f:
            for line in f:
                m = re.match(r"export (\w+)=(.*)", line.strip())
                if m:
                    self.env[m.group(1)] = m.group(2)
        self.redis = Redis(int(self.env["DANMAKU_TEST_REDIS_PORT"]))
        common = ["--kafka-brokers", self.env["DANMAKU_TEST_KAFKA_BOOTSTRAP"],
                  "--kafka-topic", self.env["DANMAKU_TEST_TOPIC"],
                  "--kafka-partitions", self.env["DANMAKU_TEST_PARTITIONS"],
                  "--redis-port", self.env["DANMAKU_TEST_REDIS_PORT"], "--redis-prefix", PREFIX,
                  "--membership-ttl-ms", str(MEMBERSHIP_TTL_MS)]
        ingest = common + ["--jwt-key-file", SECRET_FILE, "--history-max", str(HISTORY_MAX),
                           "--history-ttl-ms", str(HISTORY_TTL_MS),
                           "--idempotency-ttl-ms", str(IDEMPOTENCY_TTL_MS)] + \
            dmtest.GENEROUS_LIMITS
        bcast = common + ["--recovery-age-ms", str(RECOVERY_AGE_MS),
                          "--partition-grace-ms", str(PARTITION_GRACE_MS),
                          "--max-client-outbuf", "262144", "--heartbeat-ms", "5000"]
        self.ingest = Proc("ingest", "danmaku-ingest", "--http-port", ingest, self.state)
        self.procs.append(self.ingest)
        self.nodes = []
        for name in ("broadcast-1", "broadcast-2"):
            p = Proc(name, "danmaku-broadcast", "--ws-port", bcast, self.state)
            self.procs.append(p)
            self.nodes.append(p)
        for p in self.procs:
            p.wait_port()
        self.token = dmtest.mint("soak-idem", ttl=24 * 3600)
        threading.Thread(target=self._sampler, daemon=True).start()

    def stop(self):
        self.sampler_stop.set()
        for lt in self.loadtests:
            if lt.poll() is None:
                lt.terminate()
                try:
                    lt.wait(10)
                except subprocess.TimeoutExpired:
                    lt.kill()
                    lt.wait()
        exits = {}
        for p in self.procs:
            note = p.stop()
            exits[p.name] = {"status": p.proc.returncode, "note": note}
        if self.redis is not None:
            self.redis.close()
        if self.services_up:
            subprocess.run([os.path.join(ROOT, "tests", "services", "services.sh"), "stop",
                            self.svc], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.services_up = False
        return exits

    # -- measuring --

    def _sampler(self):
        """Peak RSS, descriptors and threads of each node, once a second."""
        while not self.sampler_stop.wait(1.0):
            for p in self.procs:
                try:
                    fds = len(os.listdir(f"/proc/{p.pid}/fd"))
                    status = open(f"/proc/{p.pid}/status").read()
                except OSError:
                    continue
                rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
                thr = int(re.search(r"Threads:\s+(\d+)", status).group(1))
                pk = self.peak.setdefault(p.name, {"rss_kb": 0, "fds": 0, "threads": 0})
                pk["rss_kb"] = max(pk["rss_kb"], rss)
                pk["fds"] = max(pk["fds"], fds)
                pk["threads"] = max(pk["threads"], thr)

    def snapshot(self):
        for p in self.procs:
            if not p.alive():
                raise Violation(f"{p.name} died (exit {p.proc.returncode}):\n{p.log_tail()}")
        keys = self.redis.keys()
        return {"t": time.time(), "procs": {p.name: p.sample() for p in self.procs},
                "redis": {"dbsize": self.redis.cmd("DBSIZE"), "keys": keys,
                          "clients": self.redis.clients()}}

    def settled(self, snap, base):
        """What still differs from an idle system (and from base, if given)."""
        left = []
        for name, s in snap["procs"].items():
            for key in ("established", "rooms", "partitions", "in_flight"):
                if s[key] != 0:
                    left.append(f"{name} {key}={s[key]}")
            if s["connections"] > SCRAPE_CONNS:
                left.append(f"{name} connections={s['connections']}")
            if base is not None:
                b = base["procs"][name]
                if s["fds"] > b["fds"] + FD_SLACK:
                    left.append(f"{name} fds {b['fds']} -> {s['fds']}")
                if s["threads"] > b["threads"]:
                    left.append(f"{name} threads {b['threads']} -> {s['threads']}")
        keys = snap["redis"]["keys"]
        base_keys = base["redis"]["keys"] if base is not None else {}
        for k, (kind, ttl, size) in sorted(keys.items()):
            if key_class(k) == "epoch":
                continue
            if base is None and ttl >= 0 and key_class(k) not in LIVE_CLASSES:
                left.append(f"key {k} ({kind}, ttl {ttl} ms)")
            elif base is not None and k not in base_keys:
                left.append(f"key {k} ({kind}, ttl {ttl} ms, size {size})")
        if base is not None and snap["redis"]["clients"] != base["redis"]["clients"]:
            left.append(f"redis clients {base['redis']['clients']} -> "
                        f"{snap['redis']['clients']}")
        return left

    def settle(self, base, what):
        """Polls until idle (and back to base) or SETTLE_S passed; returns the
        last snapshot and what still differed. Not before QUIET_S: empty
        rooms linger on the nodes (recovery_age_ms) without showing in a
        gauge, and their memory belongs to the load."""
        deadline = time.time() + SETTLE_S
        t0 = time.time()
        while True:
            snap = self.snapshot()
            left = self.settled(snap, base)
            if time.time() - t0 < QUIET_S:
                if time.time() < deadline:
                    time.sleep(1)
                    continue
            if not left:
                log(f"{what}: settled in {time.time() - t0:.0f}s")
                time.sleep(2)  # and once more, steady
                snap = self.snapshot()
                left = self.settled(snap, base)
                if not left:
                    return snap, []
            if time.time() >= deadline:
                log(f"{what}: not settled after {SETTLE_S:.0f}s: {'; '.join(left[:8])}")
                return snap, left
            time.sleep(1)

    # -- load --

    def run_phase(self, index, name, specs, seconds, scale):
        log(f"phase {index} {name}: {seconds:.0f}s")
        node = self.nodes[index % 2]
        idem = IdemSender(self.ingest, node, f"soak-idem-{index}", self.token)
        counters_before = counters(self.procs)
        runs = []
        for j, spec in enumerate(specs):
            spec = scaled(spec, scale)
            stem = os.path.join(self.state, f"{'warmup' if index < 0 else 'phase'}{abs(index)}-{j}")
            path = stem + ".json"
            out = open(stem + ".out", "w")
            lt = subprocess.Popen(
                loadtest_args(spec, self.nodes, self.ingest, self.env, seconds, path),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            self.loadtests.append(lt)
            runs.append((spec, path, out, lt))
        result = {"index": index, "name": name, "seconds": seconds, "runs": []}
        bad = []
        for spec, path, out, lt in runs:
            try:
                rc = lt.wait(seconds + 180)
            except subprocess.TimeoutExpired:
                lt.kill()
                rc = lt.wait()
            out.close()
            with open(out.name, errors="replace") as f:
                text = f.read()
            try:
                with open(path) as f:
                    s = json.load(f)["summary"]
            except (OSError, ValueError, KeyError):
                s = {}
            lat = s.get("latency_us", {})
            figures = {k: s.get(k) for k in (
                "viewers", "rooms", "sent", "acked", "expected", "delivered", "lost",
                "duplicated", "out_of_order", "skipped", "reconnects", "recovered",
                "not_recovered", "unrecoverable", "unexpected", "connect_errors",
                "send_errors")}
            figures["p99_ms"] = lat.get("p99", 0) / 1000
            figures["closes_by_code"] = s.get("closes_by_code")
            result["runs"].append({"flags": spec, "exit": rc, "summary": figures})
            bad += [f"{name}: {b}" for b in check_summary(s, rc, text)]
            log(f"  {spec.get('publish', 'http')} viewers={figures['viewers']} "
                f"rooms={figures['rooms']} sent={figures['sent']} "
                f"delivered={figures['delivered']}/{figures['expected']} "
                f"lost={figures['lost']} dup={figures['duplicated']} "
                f"ooo={figures['out_of_order']} reconnects={figures['reconnects']} "
                f"not_recovered={figures['not_recovered']} p99={figures['p99_ms']:.1f}ms "
                f"closes={figures['closes_by_code']}")
        idem_res, idem_bad = idem.finish()
        result["idempotent"] = idem_res
        deltas = counter_deltas(counters_before, counters(self.procs))
        result["node_counters"] = deltas
        result["slow_consumer_closes"] = node_sum(
            deltas, 'danmaku_ws_closed_total{reason="slow_consumer"}')
        result["catchup_recovered"] = node_sum(deltas, "danmaku_catchup_recovered_total")
        log(f"  nodes: closed slow_consumer={result['slow_consumer_closes']} "
            f"density_skipped={node_sum(deltas, 'danmaku_density_skipped_total')} "
            f"catchup_recovered={result['catchup_recovered']} closes=" + str(
                {k.split('"')[1]: v for k, v in
                 ((k, node_sum(deltas, k)) for k in sorted(
                     {k for d in deltas.values() for k in d if k.startswith("danmaku_ws_closed")}))
                 if v}))
        bad += [f"{name} idempotent: {b}" for b in idem_bad]
        log(f"  idempotent: posted={idem_res['posted']} replayed={idem_res['replayed']} "
            f"received={idem_res['received']} missing={idem_res['missing']} "
            f"duplicated={idem_res['duplicated']}")
        result["violations"] = bad
        self.violations += bad
        self.phases.append(result)

    def pause_sample(self, label):
        time.sleep(PAUSE_S)
        snap = self.snapshot()
        row = {"after": label, "procs": {n: {k: s[k] for k in ("rss_kb", "fds", "threads",
                                                              "connections")}
                                         for n, s in snap["procs"].items()},
               "redis_keys": snap["redis"]["dbsize"]}
        self.series.append(row)
        log("  pause: " + "  ".join(
            f"{n} rss={s['rss_kb'] / 1024:.1f}MB fds={s['fds']} conns={s['connections']}"
            for n, s in snap["procs"].items()) + f"  keys={snap['redis']['dbsize']}")

    def run(self):
        asan = is_asan()
        scale = float(os.environ.get("SOAK_SCALE", "0.5" if asan else "1"))
        self.meta = {"seconds": SECONDS, "build": os.path.relpath(BUILD, ROOT), "asan": asan,
                     "scale": scale, "ttl_ms": {"membership": MEMBERSHIP_TTL_MS,
                                                "history": HISTORY_TTL_MS,
                                                "idempotency": IDEMPOTENCY_TTL_MS,
                                                "recovery_age": RECOVERY_AGE_MS,
                                                "partition_grace": PARTITION_GRACE_MS},
                     "history_max": HISTORY_MAX}
        self.start()

        log("warm-up: a little of every kind of load")
        for i, (name, specs) in enumerate(PHASES):
            self.run_phase(-1 - i, "warmup-" + name, specs, 4, scale * 0.25)
        warm_bad, self.violations = self.violations, []
        if warm_bad:
            raise Violation("warm-up lost comments: " + "; ".join(warm_bad))
        self.phases = []
        self.base, left = self.settle(None, "baseline")
        if left:
            raise Violation("never idle after the warm-up: " + "; ".join(left))
        self.peak = {}

        log(f"load: {SECONDS:.0f}s in phases of {PHASE_S}s, {PAUSE_S}s pauses")
        t0, i = time.time(), 0
        while True:
            remaining = SECONDS - (time.time() - t0)
            if remaining < 5:
                break
            name, specs = PHASES[i % len(PHASES)]
            # warm-up, drain and the loadtest's connect phase come on top
            self.run_phase(i, name, specs, min(PHASE_S, max(5, remaining - 7)), scale)
            self.pause_sample(name)
            i += 1
        self.load_seconds = time.time() - t0

        log("load over; waiting for the TTLs")
        self.after, self.left = self.settle(self.base, "after")
        self.violations += self.left

    # -- verdict --

    def verdict(self, exits):
        rows = []
        base, after = self.base["procs"], self.after["procs"]
        asan = self.meta["asan"]
        for p in self.procs:
            b, a = base[p.name], after[p.name]
            pk = self.peak.get(p.name, {})
            limit_kb = int(b["rss_kb"] * (1 + RSS_SHARE) + RSS_SLACK_MB * 1024)
            checks = {
                "connections": (b["connections"], a["connections"],
                                a["connections"] <= SCRAPE_CONNS),
                "established": (b["established"], a["established"], a["established"] == 0),
                "fds": (b["fds"], a["fds"], a["fds"] <= b["fds"] + FD_SLACK),
                "threads": (b["threads"], a["threads"], a["threads"] <= b["threads"]),
                "rss_kb": (b["rss_kb"], a["rss_kb"], asan or a["rss_kb"] <= limit_kb),
            }
            for what, (bv, av, ok) in checks.items():
                extra = ""
                if what == "connections" and p.name != "ingest":
                    extra = "the gauge counts the /metrics request reading it"
                elif what == "established":
                    extra = "client TCP connections on its port, from /proc/net/tcp"
                elif what == "rss_kb":
                    extra = (f"peak {pk.get('rss_kb', 0)}, limit {limit_kb}"
                             + (" (not enforced under ASan)" if asan else ""))
                elif what in ("fds", "threads"):
                    extra = f"peak {pk.get(what, 0)}"
                rows.append((p.name, what, bv, av, extra, ok))
                if not ok:
                    self.violations.append(f"{p.name} {what}: {bv} -> {av} {extra}")
        # Redis: the same keys, except epoch keys (at most one per partition).
        bk, ak = self.base["redis"]["keys"], self.after["redis"]["keys"]
        parts = int(self.env["DANMAKU_TEST_PARTITIONS"])
        classes = sorted({key_class(k) for k in list(bk) + list(ak)})
        for c in classes:
            bn = sum(1 for k in bk if key_class(k) == c)
            an = sum(1 for k in ak if key_class(k) == c)
            if c == "epoch":
                ok = an <= parts
                ttls = sorted({v[1] for k, v in ak.items() if key_class(k) == c})
                extra = (f"one per partition used (bound {parts}), the stream's identity; "
                         f"TTLs {ttls} (-1: none)")
            else:
                ok = set(k for k in ak if key_class(k) == c) <= set(
                    k for k in bk if key_class(k) == c)
                extra = "; ".join(f"{k}: {v[0]} of {v[2]}, ttl {v[1]} ms"
                                  for k, v in sorted(ak.items()) if key_class(k) == c)[:120]
            rows.append(("redis", f"keys {c}:*", bn, an, extra, ok))
            if not ok:
                self.violations.append(f"redis keys {c}:* {bn} -> {an}")
        # DESIGN.md §3: every key has a TTL or a bound; the epoch keys are the
        # bounded ones.
        for k, (kind, ttl, size) in sorted(ak.items()):
            if ttl == -1 and key_class(k) != "epoch":
                self.violations.append(f"redis key without a TTL: {k} type={kind} size={size}")
        leftovers = {k: v for k, v in ak.items() if k not in bk and key_class(k) != "epoch"}
        for k, (kind, ttl, size) in sorted(leftovers.items())[:20]:
            self.violations.append(f"redis key left: {k} type={kind} ttl_ms={ttl} size={size}")
        rows.append(("redis", "dbsize", self.base["redis"]["dbsize"],
                     self.after["redis"]["dbsize"], "", True))
        bc, ac = self.base["redis"]["clients"], self.after["redis"]["clients"]
        rows.append(("redis", "clients", bc, ac, "", ac == bc))
        # Clean exits, and no sanitizer report (LeakSanitizer runs at exit).
        for p in self.procs:
            e = exits.get(p.name, {})
            log_text = open(p.log_path, errors="replace").read()
            marks = [line for line in log_text.splitlines()
                     if any(m in line for m in SANITIZER_MARKS)]
            ok = e.get("status") == 0 and not marks and e.get("note") is None
            rows.append((p.name, "exit", "", e.get("status"),
                         "; ".join(marks[:2]) or (e.get("note") or ""), ok))
            if not ok:
                self.violations.append(f"{p.name} exit {e.get('status')} {e.get('note') or ''}"
                                       f" {marks[:3]}\n{log_text[-3000:]}")
        return rows


def print_table(soak, rows):
    print()
    print(f"soak: {soak.meta['seconds']:.0f}s of load ({soak.load_seconds:.0f}s with pauses), "
          f"build {soak.meta['build']}{' (ASan)' if soak.meta['asan'] else ''}, "
          f"scale {soak.meta['scale']}, {len(soak.phases)} phases")
    print(f"{'phase':<20} {'viewers':>7} {'sent':>6} {'delivered':>10} {'skipped':>7} "
          f"{'lost':>4} {'dup':>3} {'ooo':>3} {'reconn':>6} {'not_rec':>7} {'p99 ms':>7} "
          f"{'4008':>5}  idem posted/recv/409")
    for ph in soak.phases:
        for j, r in enumerate(ph["runs"]):
            s = r["summary"]
            first = j == 0
            idem = ph["idempotent"]
            print(f"{(ph['name'] if first else '  +'):<20} {s['viewers'] or 0:>7} "
                  f"{s['sent'] or 0:>6} {s['delivered'] or 0:>10} {s['skipped'] or 0:>7} "
                  f"{s['lost'] or 0:>4} {s['duplicated'] or 0:>3} {s['out_of_order'] or 0:>3} "
                  f"{s['reconnects'] or 0:>6} {s['not_recovered'] or 0:>7} "
                  f"{s['p99_ms']:>7.1f} "
                  + (f"{ph['slow_consumer_closes']:>5}  {idem['posted']}/{idem['received']}/"
                     f"{idem['in_progress_after_201']}" if first else ""))
    print()
    print("RSS (MB) and descriptors at each pause:")
    names = [p.name for p in soak.procs]
    print(f"{'after phase':<22} " + " ".join(f"{n + ' rss':>16} {'fds':>5}" for n in names)
          + f" {'keys':>6}")
    for row in soak.series:
        print(f"{row['after']:<22} " + " ".join(
            f"{row['procs'][n]['rss_kb'] / 1024:>16.1f} {row['procs'][n]['fds']:>5}"
            for n in names) + f" {row['redis_keys']:>6}")
    print()
    print(f"{'process':<12} {'figure':<14} {'baseline':>10} {'after':>10}  verdict  note")
    for name, what, b, a, extra, ok in rows:
        print(f"{name:<12} {what:<14} {str(b):>10} {str(a):>10}  {'ok' if ok else 'FAIL':<7}  "
              f"{extra}")
    notes = log_summary(soak.procs)
    if notes:
        print()
        print("node log lines at warn or above (count, process, message; the first):")
        for (name, msg), e in sorted(notes.items()):
            print(f"  {e['count']:>6}  {name:<12} {msg}\n          {e['first'][:160]}")


def log_summary(procs):
    """Warnings and errors in the nodes' logs, counted by message, with the
    first line of each."""
    out = {}
    for p in procs:
        try:
            text = open(p.log_path, errors="replace").read()
        except OSError:
            continue
        for line in text.splitlines():
            m = re.search(r'lvl=(\w+).*?msg="([^"]*)"', line)
            if m is None and line.strip():
                key = (p.name, line.strip()[:100])
            elif m is not None and m.group(1) in ("warn", "error"):
                key = (p.name, f"{m.group(1)}: {m.group(2)}")
            else:
                continue
            e = out.setdefault(key, {"count": 0, "first": line.strip()})
            e["count"] += 1
    return out


def main():
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    os.chdir(ROOT)
    os.environ.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:halt_on_error=1")
    os.environ.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    os.environ.setdefault("LSAN_OPTIONS", "suppressions=" + os.path.join(ROOT, "tests",
                                                                        "lsan.supp"))
    ensure_built()
    soak = Soak()
    rows, exits, error = [], {}, None
    try:
        soak.run()
    except Violation as e:
        error = str(e)
    except BaseException:
        exits = soak.stop()
        log(f"stopped; logs in {soak.state}")
        raise
    exits = soak.stop()
    if error is None:
        rows = soak.verdict(exits)
        print_table(soak, rows)
    else:
        soak.violations.append(error)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip() or "unknown"
    out = os.environ.get("SOAK_OUT") or os.path.join(
        ROOT, "bench", "results",
        f"soak-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{commit}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    result = {"tool": "danmaku-soak", "commit": commit, **getattr(soak, "meta", {}),
              "baseline": getattr(soak, "base", None), "after": getattr(soak, "after", None),
              "peak": soak.peak, "pauses": soak.series, "phases": soak.phases,
              "checks": [dict(zip(("process", "figure", "baseline", "after", "note", "ok"), r))
                         for r in rows],
              "exits": exits, "log_lines": [
                  {"process": n, "message": m, **e}
                  for (n, m), e in sorted(log_summary(soak.procs).items())],
              "violations": soak.violations,
              "passed": not soak.violations}
    with open(out, "w") as f:
        json.dump(result, f, indent=1, default=str)
    print(f"\nresults: {os.path.relpath(out, ROOT)}")
    if soak.violations:
        print(f"\nsoak FAILED ({len(soak.violations)} violations; logs in {soak.state}):")
        for v in soak.violations:
            print("  - " + v)
        return 1
    subprocess.run(["rm", "-rf", "--", soak.state])
    print("soak PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
