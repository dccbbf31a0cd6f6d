"""Network faults between the nodes and their dependencies (DESIGN.md §5),
made with a TCP proxy (tests/tools/faultproxy.py) that both nodes reach
Redis or Kafka through: added latency, a stall (connections open, nothing
forwarded), a reset (RST of every connection) and a cut (everything closed,
new connections refused), each then back to normal.

Redis (a dedicated redis-server, ingest and broadcast both through the
proxy): latency below redis_timeout_ms changes nothing; latency above it or
a stall never holds an ingest request past the timeout (+ SLACK_S), rate
limits fall back (danmaku_ratelimit_fallback_total) and viewers keep
getting comments; after a reset or a cut Redis decides again and the
room's online count is rebuilt from the broadcast node's membership.

Kafka (a dedicated broker advertising the proxy's port, so every broker
connection goes through it): with latency 201s come, slower; during a stall
or a cut ingest answers 503 with Retry-After within the delivery timeout,
and recovers after; every 201 is in the topic exactly once (read back with
Kafka's console consumer) and a viewer connected throughout sees the
partition's records of its room once each, in offset order.

The faults touch only what these tests start. Each test prints its figures
(pytest -s) and puts them in its assertion messages."""

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from types import SimpleNamespace

import pytest

from dmtest import REDIS_PREFIX, ROOT, http, mint, start_broadcast, start_ingest, topic, viewer
from test_faults import (DEDICATED_PARTITIONS, FALLBACK, KAFKA_SH, MARGIN_S, DedicatedKafka,
                         DedicatedRedis, Poster, ViewerReader, _check_accepted_in_topic,
                         _free_port, _join_posters, _metric, _post, _post_until_201, _ready,
                         _run_posters, _stop_node, _wait_ready, read_partition)

sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from faultproxy import FaultProxy  # noqa: E402

REDIS_TIMEOUT_MS = 300
# An ingest request may take the Redis timeout plus this (a Kafka ack, the
# local decision, an ASan build on a loaded two-core machine).
SLACK_S = 0.6
MEMBERSHIP_TTL_MS = 2000
REDIS_ERRORS = "danmaku_redis_errors_total"
DELIVERY_MS = 3000


def _redis_call(port, *args, timeout=2.0):
    """One command straight to the dedicated Redis (never through the
    proxy); the parsed reply."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"".join(out))
        f = s.makefile("rb")

        def parse():
            line = f.readline()
            kind, rest = line[:1], line[1:-2]
            if kind == b"+":
                return rest.decode()
            if kind == b"-":
                raise RuntimeError(rest.decode())
            if kind == b":":
                return int(rest)
            if kind == b"$":
                n = int(rest)
                return None if n < 0 else f.read(n + 2)[:-2].decode()
            if kind == b"*":
                n = int(rest)
                return None if n < 0 else [parse() for _ in range(n)]
            raise ConnectionError(f"bad reply {line!r}")

        return parse()


def _online(port, room):
    """(status, online count or None) from ingest's GET /v1/rooms/{room}."""
    try:
        status, _, body = http(port, "GET", f"/v1/rooms/{room}", timeout=5)
    except OSError:
        return None, None
    return status, body.get("online") if isinstance(body, dict) else None


def _wait_until(pred, timeout, step=0.1):
    """Seconds until pred() was true, or None after timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(step)
    return None


def _ids_seen(readers):
    return [{m["data"]["id"] for m in list(r.msgs) if m.get("op") == "danmaku"} for r in readers]


def _wait_seen(readers, ids, timeout):
    """Seconds until every reader has seen every id (None: not in time)."""
    ids = set(ids)
    return _wait_until(lambda: all(ids <= seen for seen in _ids_seen(readers)), timeout)


def _median(values):
    return statistics.median(values) if values else 0.0


# ---------------------------------------------------------------------------
# Redis through the proxy
# ---------------------------------------------------------------------------

@pytest.fixture
def redis_stack(request):
    """A dedicated Redis, the proxy in front of it, and one ingest and one
    broadcast node using Redis only through the proxy. Everything is stopped
    whatever the test did; node logs are kept (and named) when it failed."""
    redis = DedicatedRedis()
    st = SimpleNamespace(redis=redis, proxy=None, ingest=None, bcast=None, readers=[], ok=False)

    def fin():
        for r in st.readers:
            r.done.set()
            r.ws.close()
            r.join(5)
        try:
            if st.proxy is not None:
                st.proxy.normal()  # let the nodes say goodbye to Redis
        except RuntimeError:
            pass
        try:
            _stop_node(st.bcast)
        finally:
            try:
                _stop_node(st.ingest)
            finally:
                if st.proxy is not None:
                    st.proxy.stop()
                redis.stop()
                if st.ok:
                    redis.remove()
                else:
                    for node in (st.ingest, st.bcast):
                        if node is not None:
                            print("log kept: " + node.stderr_path)

    request.addfinalizer(fin)
    st.proxy = FaultProxy(("127.0.0.1", redis.port), name="redis").start()
    # One worker each: /metrics is then exact at once (other workers' shares
    # of it are up to a second old).
    common = ["--redis-port", str(st.proxy.port), "--redis-timeout-ms", str(REDIS_TIMEOUT_MS),
              "--membership-ttl-ms", str(MEMBERSHIP_TTL_MS), "--workers", "1"]
    st.ingest = start_ingest(*common, "--kafka-delivery-timeout-ms", str(DELIVERY_MS))
    st.bcast = start_broadcast(*common, "--density-cap", "0")
    _wait_ready(st.ingest.port, 20)
    st.room = "fp-redis-" + uuid.uuid4().hex[:8]
    st.run = uuid.uuid4().hex[:6]
    return st


def _watch(st, n=1, room=None):
    """n viewers of the stack's room (or of room), read in the background."""
    for _ in range(n):
        r = ViewerReader(viewer(st.bcast.port, room or st.room))
        r.start()
        st.readers.append(r)
    return st.readers[-n:]


def _posts(st, tag, n=None, seconds=None, keyed=False, room=None):
    """Unkeyed comments (keyed: with an Idempotency-Key) from distinct
    users to the stack's room (or room), one after another: n of them, or
    for `seconds`."""
    out = []
    t0 = time.monotonic()
    i = 0
    while (n is not None and i < n) or (seconds is not None and time.monotonic() - t0 < seconds):
        i += 1
        text = f"{tag}-{i}-{st.run}"
        a = _post(st.ingest.port, room or st.room, mint(f"fp-{tag}-{i}-{st.run}"), text,
                  key=text if keyed else None, timeout=10)
        out.append(a)
    return out


def _fmt(attempts):
    return [(a.status, round(a.secs, 3)) for a in attempts]


def test_redis_latency_below_timeout_changes_nothing(redis_stack):
    """+60 ms each way (a 120 ms round trip, the timeout is 300 ms): every
    comment, keyed or not, is accepted and delivered, a viewer can join,
    the online count answers, and neither node counts a fallback or a
    Redis error. The added round trip shows in the answer times."""
    st = redis_stack
    latency_ms = 60
    readers = _watch(st)
    base = _posts(st, "base", n=8)
    assert [a.status for a in base] == [201] * 8, _fmt(base)
    f0 = _metric(st.ingest.port, FALLBACK)
    e0 = (_metric(st.ingest.port, REDIS_ERRORS), _metric(st.bcast.port, REDIS_ERRORS))

    st.proxy.latency(latency_ms)
    t0 = time.monotonic()
    slow = _posts(st, "lat", n=12)
    keyed = _posts(st, "latk", n=4, keyed=True)
    readers += _watch(st)  # joins (the stream's epoch) through the latency
    online_s = _wait_until(lambda: _online(st.ingest.port, st.room) == (200, 2), 10)
    delivered_s = _wait_seen(readers[:1], [a.body["id"] for a in base + slow + keyed], 10)
    late = _posts(st, "late", n=4)
    delivered_late_s = _wait_seen(readers, [a.body["id"] for a in late], 10)
    f1 = _metric(st.ingest.port, FALLBACK)
    e1 = (_metric(st.ingest.port, REDIS_ERRORS), _metric(st.bcast.port, REDIS_ERRORS))
    phase_s = time.monotonic() - t0
    st.proxy.normal()

    med_base, med_slow = _median([a.secs for a in base]), _median([a.secs for a in slow])
    med_keyed = _median([a.secs for a in keyed])
    figures = (f"latency=+{latency_ms}ms/direction timeout={REDIS_TIMEOUT_MS}ms "
               f"median_answer base={med_base:.3f}s unkeyed={med_slow:.3f}s "
               f"keyed={med_keyed:.3f}s slowest={max(a.secs for a in slow + keyed):.3f}s "
               f"fallback {f0:.0f}->{f1:.0f} redis_errors ingest/bcast {e0}->{e1} "
               f"online=2_after={online_s} delivered_after={delivered_s} "
               f"second_viewer_delivered_after={delivered_late_s} phase={phase_s:.1f}s "
               f"proxy={st.proxy.stats()}")
    print("\n[redis latency below timeout] " + figures)
    statuses = [a.status for a in slow + keyed + late]
    assert statuses == [201] * len(statuses), f"{_fmt(slow + keyed + late)} | {figures}"
    assert f1 == f0, "rate limits fell back although Redis answered in time | " + figures
    assert e1 == e0, "Redis errors counted although Redis answered in time | " + figures
    assert online_s is not None, "online count of 2 viewers not reported | " + figures
    assert delivered_s is not None and delivered_late_s is not None, \
        "a viewer missed comments | " + figures
    # The proxy is really in the path: one more round trip per limiter call.
    assert med_slow >= med_base + 0.8 * 2 * latency_ms / 1000, \
        "the added latency does not show | " + figures
    st.ok = True


@pytest.mark.parametrize("fault", ["latency", "stall"])
def test_redis_slow_or_stalled_falls_back_within_the_timeout(redis_stack, fault):
    """latency: +600 ms each way (twice the timeout, both ways); stall:
    nothing forwarded, connections kept open (like a frozen Redis). For
    4 s, comments from distinct users one after another: each is answered
    201 within redis_timeout_ms + SLACK_S, decided by the local limiter
    (the fallback counter rises by at least one per comment), and viewers
    receive them while the fault lasts, also one joining another room
    midway (its `joined` within the bound + 1 s); a keyed comment gets 503
    with Retry-After, as fast. After normal(), Redis decides again: the
    fallback counter stops rising."""
    st = redis_stack
    bound = REDIS_TIMEOUT_MS / 1000 + SLACK_S
    readers = _watch(st)
    base = _posts(st, "base", n=4)
    assert [a.status for a in base] == [201] * 4, _fmt(base)
    f0 = _metric(st.ingest.port, FALLBACK)

    if fault == "latency":
        st.proxy.latency(600)
    else:
        st.proxy.stall()
    during = _posts(st, "during", seconds=2)
    # A viewer joining another room now gets its `joined` (its partition's
    # epoch is asked of Redis) within the bound + 1 s, and the comments that
    # follow.
    room2 = st.room + "-b"
    t_join = time.monotonic()
    readers += _watch(st, room=room2)
    join_s = time.monotonic() - t_join
    later = _posts(st, "during2", seconds=2, room=room2)
    keyed = _posts(st, "keyed", n=1, keyed=True)[0]
    room_status = _online(st.ingest.port, st.room)[0]
    f1 = _metric(st.ingest.port, FALLBACK)
    delivered_s = _wait_seen(readers[:1], [a.body["id"] for a in during if a.status == 201], 10)
    delivered_late_s = _wait_seen(readers[1:], [a.body["id"] for a in later if a.status == 201],
                                  10)
    st.proxy.normal()
    t_back = time.monotonic()

    # Back to Redis: a comment decided without the fallback.
    redis_again_s = None
    while time.monotonic() - t_back < 15:
        f = _metric(st.ingest.port, FALLBACK)
        a = _posts(st, "probe", n=1)[0]
        assert a.status == 201, (a.status, a.body)
        if _metric(st.ingest.port, FALLBACK) == f:
            redis_again_s = time.monotonic() - t_back
            break
        time.sleep(0.2)
    f2 = _metric(st.ingest.port, FALLBACK)
    after = _posts(st, "after", n=5)
    f3 = _metric(st.ingest.port, FALLBACK)

    slowest = max(during + later, key=lambda a: a.secs)
    figures = (f"fault={fault} timeout={REDIS_TIMEOUT_MS}ms bound={bound:.2f}s "
               f"comments_during={len(during + later)} "
               f"statuses={sorted({a.status for a in during + later})} "
               f"slowest_answer={slowest.secs:.3f}s "
               f"median={_median([a.secs for a in during + later]):.3f}s "
               f"keyed={keyed.status} in {keyed.secs:.3f}s "
               f"retry_after={keyed.headers.get('retry-after')} room_info={room_status} "
               f"fallback before={f0:.0f} during={f1:.0f} (+{f1 - f0:.0f}) "
               f"after={f2:.0f}->{f3:.0f} "
               f"viewer_joined_in={join_s:.3f}s "
               f"delivered_during_fault_after={delivered_s} "
               f"to_the_new_viewer_after={delivered_late_s} redis_decides_after={redis_again_s} "
               f"proxy={st.proxy.stats()}")
    print(f"\n[redis {fault}] " + figures)
    assert during and all(a.status == 201 for a in during + later), \
        f"{_fmt(during + later)} | {figures}"
    assert slowest.secs < bound, \
        f"a request waited {slowest.secs:.3f}s for Redis (bound {bound:.2f}s) | {figures}"
    assert keyed.status == 503 and int(keyed.headers["retry-after"]) >= 1, figures
    assert keyed.secs < bound, figures
    assert join_s < bound + 1.0, f"joining took {join_s:.3f}s | {figures}"
    assert f1 - f0 >= len(during + later), \
        "comments decided without the fallback counted | " + figures
    assert delivered_s is not None and delivered_late_s is not None, \
        "a viewer did not get the comments | " + figures
    assert redis_again_s is not None, "Redis not used again within 15 s | " + figures
    assert [a.status for a in after] == [201] * 5 and f3 == f2, \
        "still falling back after the fault | " + figures
    st.ok = True


def _shares(st):
    return _redis_call(st.redis.port, "KEYS", f"{REDIS_PREFIX}online:{st.room}:*")


@pytest.mark.parametrize("fault", ["reset", "cut"])
def test_redis_reset_or_cut_then_membership_rebuilt(redis_stack, fault):
    """Two viewers in a room (membership_ttl_ms 2 s). reset: every
    connection to Redis gets an RST and Redis loses the membership state
    (its keys deleted, as after a restart). cut: connections closed and
    refused for 3.5 s, longer than the membership TTL, so the node's share
    expires in Redis. Comments keep being accepted and delivered throughout;
    after normal() Redis decides again (the fallback counter stops rising)
    and the room's online count is 2 again, from the rebuilt membership."""
    st = redis_stack
    bound = REDIS_TIMEOUT_MS / 1000 + SLACK_S
    readers = _watch(st, 2)

    def online():
        return _online(st.ingest.port, st.room)

    assert _wait_until(lambda: online() == (200, 2), 10) is not None, online()
    shares_before = _shares(st)
    assert len(shares_before) == 1, shares_before
    base = _posts(st, "base", n=3)
    f0 = _metric(st.ingest.port, FALLBACK)

    t_fault = time.monotonic()
    if fault == "reset":
        resets = st.proxy.reset()
        # Lost by construction: the share and the node registry deleted.
        lost = sum(_redis_call(st.redis.port, "DEL", key)
                   for key in shares_before + [f"{REDIS_PREFIX}nodes"]) == 2 or None
        during = _posts(st, "during", seconds=1.5)
    else:
        resets = st.proxy.stats()["open"]
        st.proxy.cut()
        during = _posts(st, "during", seconds=3.5)
        lost = _wait_until(lambda: _shares(st) == [], 2)
    fault_s = time.monotonic() - t_fault
    f1 = _metric(st.ingest.port, FALLBACK)
    st.proxy.normal()
    t_back = time.monotonic()

    rebuilt_s = _wait_until(lambda: online() == (200, 2), 15)
    redis_again_s = None
    while time.monotonic() - t_back < 15:
        f = _metric(st.ingest.port, FALLBACK)
        a = _posts(st, "probe", n=1)[0]
        assert a.status == 201, (a.status, a.body)
        if _metric(st.ingest.port, FALLBACK) == f:
            redis_again_s = time.monotonic() - t_back
            break
        time.sleep(0.2)
    after = _posts(st, "after", n=3)
    f2 = _metric(st.ingest.port, FALLBACK)
    accepted = [a.body["id"] for a in base + during + after if a.status == 201]
    delivered_s = _wait_seen(readers, accepted, 10)
    shares_after = _shares(st)

    slowest = max(a.secs for a in during)
    figures = (f"fault={fault} connections_reset={resets} fault_for={fault_s:.1f}s "
               f"state_lost={lost is not None} comments_during={len(during)} "
               f"statuses={sorted({a.status for a in during})} slowest_answer={slowest:.3f}s "
               f"fallback {f0:.0f}->{f1:.0f}->{f2:.0f} online_2_again_after={rebuilt_s} "
               f"redis_decides_after={redis_again_s} shares_after={len(shares_after)} "
               f"all_{len(accepted)}_delivered_to_both={delivered_s is not None} "
               f"proxy={st.proxy.stats()}")
    print(f"\n[redis {fault}] " + figures)
    assert lost is not None, "the membership state was not lost during the fault | " + figures
    assert during and all(a.status == 201 for a in during), f"{_fmt(during)} | {figures}"
    assert slowest < bound, figures
    # (after a reset the nodes reconnect within ~100 ms: a fallback then is
    # possible, not certain)
    assert f1 > f0 or fault == "reset", "no decision fell back during the cut | " + figures
    assert rebuilt_s is not None, "online count not rebuilt within 15 s | " + figures
    assert len(shares_after) == 1, figures
    assert redis_again_s is not None, "Redis not used again within 15 s | " + figures
    assert delivered_s is not None, "a viewer missed comments | " + figures
    assert all(r.error is None for r in readers), [r.error for r in readers]
    st.ok = True


# ---------------------------------------------------------------------------
# Kafka through the proxy
# ---------------------------------------------------------------------------

class ProxiedKafka(DedicatedKafka):
    """A dedicated broker (kafka.sh) advertising the proxy's port: clients
    bootstrap through the proxy and reconnect to it, so every Kafka
    connection of the nodes (and of the console consumer reading back)
    crosses the proxy."""

    def __init__(self, proxy, partitions=DEDICATED_PARTITIONS):
        # Not DedicatedKafka.__init__: the same start, with the ports set.
        self.dir = tempfile.mkdtemp(prefix="dm-fp-kafka-")
        self.paused = False
        broker_port = _free_port()
        proxy.set_target(("127.0.0.1", broker_port))
        env = dict(os.environ, DANMAKU_PARTITIONS=str(partitions), DANMAKU_TOPIC=topic(),
                   DANMAKU_KAFKA_PORT=str(broker_port),
                   DANMAKU_KAFKA_ADVERTISED_PORT=str(proxy.port))
        try:
            out = subprocess.run([KAFKA_SH, "start", self.dir], env=env, capture_output=True,
                                 text=True, timeout=180, stdin=subprocess.DEVNULL)
        except BaseException:
            self.stop()
            raise
        if out.returncode != 0:
            self.stop()
            raise RuntimeError("dedicated Kafka did not start:\n" + out.stderr[-3000:])
        assert out.stdout.strip() == f"bootstrap=127.0.0.1:{broker_port}", out.stdout
        self.bootstrap = f"127.0.0.1:{proxy.port}"


@pytest.fixture(scope="module")
def proxied_kafka():
    proxy = FaultProxy(name="kafka").start()
    kafka = None
    try:
        kafka = ProxiedKafka(proxy)
        yield SimpleNamespace(proxy=proxy, kafka=kafka)
    finally:
        try:
            proxy.normal()
        finally:
            if kafka is not None:
                kafka.stop()
                kafka.remove()
            proxy.stop()


def _kafka_run(kp, plan, label):
    """Runs one ingest and one broadcast node through the proxy, a viewer of
    one room and three clients posting keyed comments (retrying 503s with
    their key), through the phases of plan: [(name, seconds)], name one of
    normal, latency:<ms>, stall, cut, reset (a reset, then normal). After
    the last phase the proxy is normal until every client had a 201 again.
    Returns the figures and what the checks need."""
    proxy = kp.proxy
    proxy.normal()
    ingest = bcast = reader = None
    stop, abort = threading.Event(), threading.Event()
    posters = []
    ok = False
    try:
        ingest = start_ingest("--kafka-partitions", str(DEDICATED_PARTITIONS),
                              "--kafka-delivery-timeout-ms", str(DELIVERY_MS),
                              brokers=kp.kafka.bootstrap)
        bcast = start_broadcast("--kafka-brokers", kp.kafka.bootstrap,
                                "--kafka-partitions", str(DEDICATED_PARTITIONS),
                                "--density-cap", "0")
        _wait_ready(ingest.port, 30)
        room = "fp-kafka-" + uuid.uuid4().hex[:8]
        ws = viewer(bcast.port, room)
        reader = ViewerReader(ws)
        reader.start()
        # The partition's end before this run (the module's broker is shared).
        first, _ = _post_until_201(ingest.port, room, mint("fp-mark"), "start-" + room)
        joined_at = first.body["offset"] - 1
        assert reader.wait_offset(first.body["offset"], 20), reader.error

        posters = [Poster(ingest.port, room, f"fpk{i}-{uuid.uuid4().hex[:6]}", stop, abort)
                   for i in range(3)]
        t_start = time.monotonic()
        _run_posters(posters)
        while sum(a.status == 201 for p in posters for a in list(p.attempts)) < 15:
            assert time.monotonic() - t_start < 20, "no load before the faults"
            time.sleep(0.05)

        phases = []
        for name, secs in plan:
            t0 = time.monotonic()
            if name == "normal":
                proxy.normal()
            elif name.startswith("latency:"):
                proxy.normal()
                proxy.latency(int(name.split(":")[1]))
            elif name == "stall":
                proxy.stall()
            elif name == "cut":
                proxy.cut()
            elif name == "reset":
                proxy.normal()
                proxy.reset()
            else:
                raise ValueError(name)
            seen = []
            while time.monotonic() - t0 < secs:
                seen.append(_ready(ingest.port))
                time.sleep(0.5)
            phases.append((name, t0, time.monotonic(), seen))
        proxy.normal()
        t_back = time.monotonic()
        while not all(any(a.status == 201 and a.t0 > t_back for a in list(p.attempts))
                      for p in posters):
            assert time.monotonic() - t_back < 30, "no 201 for every client after the faults"
            time.sleep(0.1)
        recovered_s = time.monotonic() - t_back
        time.sleep(0.5)
        stop.set()
        _join_posters(posters, 60)

        last, _ = _post_until_201(ingest.port, room, mint("fp-mark"), "end-" + room)
        partition = last.body["partition"]
        assert first.body["partition"] == partition
        records = read_partition(kp.kafka.bootstrap, partition, first.body["offset"],
                                 last.body["offset"])
        attempts = [a for p in posters for a in p.attempts]
        figures, dup_texts = _check_accepted_in_topic(attempts + [first, last],
                                                      [r for r in records if r[1] == room], room)
        assert reader.wait_offset(last.body["offset"], 30), \
            f"viewer stopped short of {last.body['offset']}: {reader.error}"
        reader.done.set()
        seen = [(m["offset"], m["data"]["id"]) for m in reader.msgs if m.get("op") == "danmaku"]
        in_topic = [(off, json.loads(v)["id"]) for off, key, v in records
                    if key == room and off > joined_at]
        others = [m for m in reader.msgs if m.get("op") not in ("danmaku", "pong")]
        out = SimpleNamespace(attempts=attempts, phases=phases,
                              recovered_s=recovered_s, figures=figures, dup_texts=dup_texts,
                              seen=seen, in_topic=in_topic, others=others,
                              reader_error=reader.error,
                              unresolved=[t for p in posters for t in p.unresolved],
                              unknown=[t for p in posters for t in p.unknown],
                              total_s=time.monotonic() - t_start, proxy=proxy.stats())
        ok = True
        return out
    finally:
        abort.set()
        stop.set()
        for p in posters:
            p.join(30)
        proxy.normal()
        if reader is not None:
            reader.done.set()
            reader.ws.close()
            reader.join(10)
        try:
            _stop_node(bcast)
        finally:
            _stop_node(ingest)
            if not ok:
                print(f"---- [{label}] broker log tail ----\n" + kp.kafka.log_tail())
                for node in (ingest, bcast):
                    if node is not None:
                        print("log kept: " + node.stderr_path)


def _in_phase(run, name):
    """(start, end) of the first phase of that name."""
    return next((t0, t1) for n, t0, t1, _ in run.phases if n == name)


def _describe(run):
    statuses = {}
    for a in run.attempts:
        statuses[a.status] = statuses.get(a.status, 0) + 1
    per_phase = []
    for name, t0, t1, ready in run.phases:
        sent = [a for a in run.attempts if t0 <= a.t0 < t1]
        per_phase.append(
            f"{name}({t1 - t0:.1f}s): sent={len(sent)} "
            f"201={sum(a.status == 201 for a in sent)} 503={sum(a.status == 503 for a in sent)} "
            f"409={sum(a.status == 409 for a in sent)} "
            f"median={_median([a.secs for a in sent]):.3f}s "
            f"slowest={max([a.secs for a in sent], default=0):.3f}s readyz={ready}")
    return (f"attempts={len(run.attempts)} statuses={statuses} " + " | ".join(per_phase) +
            f" | recovered_after={run.recovered_s:.2f}s topic={run.figures} "
            f"published_twice={len(run.dup_texts)} outcome_unknown={len(run.unknown)} "
            f"viewer_msgs={len(run.seen)} total={run.total_s:.1f}s proxy={run.proxy}")


def _check_common(run, figures):
    statuses = {a.status for a in run.attempts}
    assert statuses <= {201, 503, 409}, f"unexpected answers {statuses} | {figures}"
    for a in run.attempts:
        if a.status == 503 or (a.status == 409 and a.body.get("error") == "in_progress"):
            assert int(a.headers.get("retry-after", "0")) >= 1, (a.headers, figures)
    assert not run.unresolved, f"comments never accepted: {run.unresolved[:5]} | {figures}"
    assert not run.dup_texts, \
        f"comments in the topic twice: {dict(list(run.dup_texts.items())[:3])} | {figures}"
    assert run.reader_error is None, f"viewer: {run.reader_error} | {figures}"
    assert not run.others, f"viewer got {run.others[:3]} | {figures}"
    assert run.seen == run.in_topic, \
        (f"the viewer's stream differs from the partition: {len(run.seen)} seen, "
         f"{len(run.in_topic)} in the topic | {figures}")


def _check_refused_phase(run, name, figures):
    """During a stall or cut: no 201 for anything sent, 503s with
    Retry-After, each within the delivery timeout (+ MARGIN_S)."""
    t0, t1 = _in_phase(run, name)
    # The requests the fault met: sent during it, or still waiting when it
    # began (a client that had just retried may send nothing new in it).
    sent = [a for a in run.attempts if a.t0 < t1 and a.t1 >= t0 + 0.3]
    answered_in = [a for a in run.attempts if t0 + 0.3 <= a.t1 < t1]
    assert sent, f"no request met the {name} | {figures}"
    assert not [a for a in answered_in if a.status == 201], \
        f"201 answered while Kafka was unreachable ({name}) | {figures}"
    assert sum(a.status == 503 for a in answered_in) >= 1, f"no 503 during the {name} | {figures}"
    slowest = max(a.secs for a in sent if a.status is not None)
    assert slowest < DELIVERY_MS / 1000 + MARGIN_S, \
        f"a request took {slowest:.2f}s during the {name} | {figures}"


def test_kafka_latency_then_stall(proxied_kafka):
    """+250 ms each way for 4 s: only 201s, each answer at least one
    proxied round trip (0.5 s) slower. Then a 5 s stall (connections open,
    nothing forwarded): no 201, 503s with Retry-After within the delivery
    timeout (3 s) + MARGIN_S. Then normal: every client gets 201s again;
    every 201 is in the topic once; the viewer saw the room's records in
    offset order with no gap or duplicate."""
    run = _kafka_run(proxied_kafka, [("normal", 1.0), ("latency:250", 4.0), ("normal", 1.0),
                                     ("stall", 5.0)], "latency+stall")
    figures = _describe(run)
    print("\n[kafka latency+stall] " + figures)
    _check_common(run, figures)
    t0, t1 = _in_phase(run, "latency:250")
    lat = [a for a in run.attempts if t0 + 0.1 <= a.t0 and a.t1 < t1]
    assert lat and all(a.status == 201 for a in lat), f"{_fmt(lat)} | {figures}"
    assert min(a.secs for a in lat) >= 0.45, f"latency not applied: {_fmt(lat)} | {figures}"
    t0, t1 = _in_phase(run, "normal")
    base = [a for a in run.attempts if t0 <= a.t0 and a.t1 < t1 and a.status == 201]
    assert _median([a.secs for a in lat]) > _median([a.secs for a in base]) + 0.4, figures
    _check_refused_phase(run, "stall", figures)


def test_kafka_reset_then_cut(proxied_kafka):
    """Every broker connection reset (RST) mid-load, 3 s to recover; then a
    5 s cut (closed, new connections refused): no 201, 503s with
    Retry-After within the delivery timeout + MARGIN_S; then normal: every
    client gets 201s again; every 201 is in the topic once; the viewer saw
    the room's records in offset order with no gap or duplicate."""
    run = _kafka_run(proxied_kafka, [("reset", 3.0), ("cut", 5.0)], "reset+cut")
    figures = _describe(run)
    print("\n[kafka reset+cut] " + figures)
    _check_common(run, figures)
    t0, t1 = _in_phase(run, "reset")
    assert any(a.status == 201 and a.t0 > t0 for a in run.attempts if a.t1 < t1), \
        "no 201 within 3 s of the reset | " + figures
    _check_refused_phase(run, "cut", figures)
