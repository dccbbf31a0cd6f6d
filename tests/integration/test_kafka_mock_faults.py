"""Broker-level faults from librdkafka's mock cluster (DESIGN.md §9): the real
danmaku-ingest and danmaku-broadcast against danmaku-mock-kafka (three mock
brokers) driven through its --control commands: request errors injected
into Produce and Fetch, brokers taken down and up, a high round-trip time,
partition leaders moved.

What must hold (DESIGN.md §5): a retriable Produce error is retried by the
producer and the comment accepted once; a non-retriable one is answered 503
with Retry-After (never a false 201) and the client's retry with its
Idempotency-Key publishes it once; with every broker down ingest answers
503 within the delivery timeout and 201 again once they are up; a slow
broker only makes answers slower; on the consumer side (Fetch errors, the
leader down or moved) the broadcast node keeps its viewers connected and
resumes with no gap and no duplicate. Each run ends by reading back what
the mock holds (a consumer in the mock process: `dump`) and comparing it
with the 201s and with what a viewer connected throughout received.

Redis is the shared test Redis (ingest's rate limits and idempotency keys).
Each test prints its figures (pytest -s) and puts them in its assertion
messages."""

import json
import os
import queue
import subprocess
import tempfile
import threading
import time
import uuid
from types import SimpleNamespace

import pytest

from dmtest import (BIN, SANITIZER_MARKS, connected, http, mint, start_broadcast, start_ingest,
                    topic)
from test_faults import (MARGIN_S, Poster, ViewerReader, _check_accepted_in_topic,
                         _join_posters, _metric, _post, _post_until_201, _ready, _run_posters,
                         _stop_node, _wait_ready)

BROKERS = 3
PARTITIONS = 4
DELIVERY_MS = 3000
LEADER = 1  # the broker leading every partition at the start


class MockKafka:
    """danmaku-mock-kafka --control: commands on its stdin, one answer line
    each on its stdout. The end of its stdin stops it, so it cannot outlive
    this process."""

    def __init__(self, brokers=BROKERS, partitions=PARTITIONS, extra=()):
        """extra: more flags, e.g. ("--log-level", "debug", "--rdkafka-debug", "mock")."""
        self.dir = tempfile.mkdtemp(prefix="dm-mock-kafka-")
        self.log_path = os.path.join(self.dir, "mock.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "danmaku-mock-kafka"), "--control", "--brokers", str(brokers),
             "--partitions", str(partitions), "--topic", topic(), "--log-level", "info"]
            + list(extra),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
            bufsize=1)
        self._lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        first = self._line(20)
        if not first.startswith("bootstrap="):
            self.stop()
            raise RuntimeError(f"danmaku-mock-kafka said {first!r}:\n{self.log()[-2000:]}")
        self.bootstrap = first.split("=", 1)[1]

    def _read(self):
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _line(self, timeout):
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError("danmaku-mock-kafka did not answer in time") from None
        if line is None:
            raise RuntimeError(f"danmaku-mock-kafka ended:\n{self.log()[-2000:]}")
        return line

    def cmd(self, line, timeout=30):
        """Runs one command; returns (the data after "ok", the "rec" lines)."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        recs = []
        while True:
            answer = self._line(timeout)
            if answer.startswith("rec "):
                recs.append(answer)
            elif answer == "ok" or answer.startswith("ok "):
                return answer[3:], recs
            else:
                raise RuntimeError(f"{line!r}: {answer}")

    def offsets(self, partition):
        low, high = self.cmd(f"offsets {partition}")[0].split()
        return int(low), int(high)

    def dump(self, partition, first=0):
        """Every record of the partition from first: [(offset, key, value)]."""
        _, high = self.offsets(partition)
        n, recs = self.cmd(f"dump {partition} {first} {max(0, high - first)}")
        out = []
        for r in recs:
            _, off, key, value = r.split(" ")
            out.append((int(off), bytes.fromhex(key).decode() if key != "-" else "",
                        bytes.fromhex(value).decode() if value != "-" else ""))
        assert [o for o, _, _ in out] == list(range(first, high)), \
            f"dump of partition {partition} is not offsets {first}..{high - 1}: {n}"
        return out

    def log(self):
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self):
        """Ends it through its stdin (SIGKILL if that fails); returns its exit
        status."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def assert_clean_exit(self):
        code = self.stop()
        log = self.log()
        bad = [line for line in log.splitlines() if any(m in line for m in SANITIZER_MARKS)]
        assert not bad, "sanitizer or panic report in danmaku-mock-kafka:\n" + log[-4000:]
        assert code == 0, f"danmaku-mock-kafka exit status {code}:\n" + log[-2000:]


@pytest.fixture
def stack(request):
    """A mock cluster, one ingest and one broadcast node on it, a fresh room
    (its partition led by broker LEADER) and a viewer of it, read in the
    background. Everything is stopped whatever the test did; logs are kept
    (and named) when it failed."""
    st = SimpleNamespace(mock=None, ingest=None, bcast=None, reader=None, ok=False)

    def fin():
        if st.reader is not None:
            st.reader.done.set()
            st.reader.ws.close()
            st.reader.join(5)
        if st.mock is not None and st.mock.proc.poll() is None:
            for line in ("up all", "rtt all 0", "clear Produce", "clear Fetch"):
                try:
                    st.mock.cmd(line)
                except RuntimeError:
                    pass
        try:
            _stop_node(st.bcast)
        finally:
            try:
                _stop_node(st.ingest)
            finally:
                if st.mock is not None:
                    st.mock.assert_clean_exit()
                if not st.ok:
                    for node in (st.ingest, st.bcast):
                        if node is not None:
                            print("log kept: " + node.stderr_path)
                    if st.mock is not None:
                        print("log kept: " + st.mock.log_path)

    request.addfinalizer(fin)
    st.mock = MockKafka()
    st.room = "mockf-" + uuid.uuid4().hex[:8]
    st.ingest = start_ingest("--kafka-partitions", str(PARTITIONS),
                             "--kafka-delivery-timeout-ms", str(DELIVERY_MS),
                             brokers=st.mock.bootstrap)
    status, _, info = http(st.ingest.port, "GET", f"/v1/rooms/{st.room}")
    assert status == 200, info
    st.partition = info["partition"]
    # Before any client asks for metadata: every partition is led by LEADER,
    # so errors injected on it hit whatever partition a client uses.
    for p in range(PARTITIONS):
        st.mock.cmd(f"leader {p} {LEADER}")
    st.bcast = start_broadcast("--kafka-brokers", st.mock.bootstrap,
                               "--kafka-partitions", str(PARTITIONS), "--density-cap", "0")
    _wait_ready(st.ingest.port, 30)
    ws = connected(st.bcast.port, st.room)
    st.joined = ws.recv_json(timeout=20)
    assert st.joined["op"] == "joined", st.joined
    st.reader = ViewerReader(ws)
    st.reader.start()
    st.token = mint("mockf-" + uuid.uuid4().hex[:6])
    st.run = uuid.uuid4().hex[:6]
    return st


def _keyed(st, tag, n):
    """n keyed comments, one after another, each sent once."""
    out = []
    for i in range(n):
        text = f"{tag}-{i}-{st.run}"
        out.append(_post(st.ingest.port, st.room, st.token, text, key=text, timeout=20))
    return out


def _fmt(attempts):
    return [(a.status, round(a.secs, 3)) for a in attempts]


def _verify(st, attempts, figures_out):
    """What the mock holds against the 201s and the viewer's stream: every
    201 exactly once at its offset, nothing published twice, the viewer saw
    every record of the partition (all the room's) after its join, in
    offset order, once, and nothing else. Fills figures_out; returns the
    records."""
    records = st.mock.dump(st.partition)
    figures, dup_texts = _check_accepted_in_topic(attempts, records, st.room)
    figures_out.update(figures)
    figures_out["published_twice"] = len(dup_texts)
    assert not dup_texts, f"published twice: {dict(list(dup_texts.items())[:3])} | {figures_out}"
    end = records[-1][0] if records else -1
    ok = st.reader.wait_offset(end, 20) if records else True
    seen = [(m["offset"], m["data"]["id"]) for m in list(st.reader.msgs)
            if m.get("op") == "danmaku"]
    in_topic = [(off, json.loads(v)["id"]) for off, _, v in records if off > st.joined["offset"]]
    others = [m for m in list(st.reader.msgs) if m.get("op") not in ("danmaku", "pong")]
    figures_out["viewer_msgs"] = len(seen)
    assert ok and st.reader.error is None, \
        f"viewer stopped short of offset {end}: {st.reader.error} | {figures_out}"
    assert not others, f"viewer got {others[:3]} | {figures_out}"
    assert seen == in_topic, \
        (f"the viewer's stream differs from the partition: seen {seen[:3]}..{seen[-3:]} "
         f"({len(seen)}), in the mock {in_topic[:3]}..{in_topic[-3:]} ({len(in_topic)}) "
         f"| {figures_out}")
    return records


# ---------------------------------------------------------------------------
# Producer path
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("error", ["NOT_LEADER_OR_FOLLOWER", "REQUEST_TIMED_OUT", "_TRANSPORT",
                                   "NOT_ENOUGH_REPLICAS"])
def test_retriable_produce_errors_are_retried_and_accepted_once(stack, error):
    """The leader fails the next 5 Produce requests with a retriable error
    (_TRANSPORT: it drops the connection). Ten keyed comments, one after
    another: each answered 201 on its first attempt (the producer retried),
    every injected error consumed, each comment once in the partition."""
    st = stack
    base = _keyed(st, "base", 3)
    st.mock.cmd(f"broker-err {LEADER} Produce 5 {error}")
    got = _keyed(st, "retried", 10)
    pending = int(st.mock.cmd(f"pending {LEADER} Produce")[0])
    figures = {"error": error, "answers": _fmt(got),
               "slowest": round(max(a.secs for a in got), 3), "errors_left": pending}
    records = _verify(st, base + got, figures)
    print(f"\n[produce {error}] {figures}")
    assert [a.status for a in base + got] == [201] * 13, figures
    assert pending == 0, f"the injected errors were not all hit | {figures}"
    assert figures["ghosts"] == 0 and figures["records"] == len(records) == 13, figures
    st.ok = True


@pytest.mark.parametrize("error", ["INVALID_RECORD", "MSG_SIZE_TOO_LARGE", "INVALID_MSG"])
def test_non_retriable_produce_error_is_503_then_accepted_once(stack, error):
    """The leader fails one Produce request with a non-retriable error: that
    comment is answered 503 with Retry-After within the delivery timeout
    (never 201); the client's retry with the same Idempotency-Key is
    accepted, and the comment is in the partition once; later comments are
    accepted as before."""
    st = stack
    base = _keyed(st, "base", 2)
    st.mock.cmd(f"broker-err {LEADER} Produce 1 {error}")
    text = f"refused-{st.run}"
    first = _post(st.ingest.port, st.room, st.token, text, key=text, timeout=20)
    accepted, retries = _post_until_201(st.ingest.port, st.room, st.token, text, key=text,
                                        timeout=20)
    after = _keyed(st, "after", 5)
    figures = {"error": error, "first": (first.status, round(first.secs, 3), first.body),
               "retry_after": first.headers.get("retry-after"),
               "retries": _fmt(retries), "after": _fmt(after)}
    _verify(st, base + [first] + retries + after, figures)
    print(f"\n[produce {error}] {figures}")
    assert first.status == 503 and first.body.get("error") == "unavailable", figures
    assert int(first.headers.get("retry-after", "0")) >= 1, figures
    assert first.secs < DELIVERY_MS / 1000 + MARGIN_S, figures
    assert [a.status for a in base + after] == [201] * 7, figures
    assert figures["ghosts"] == 0, figures
    st.ok = True


def _load(st, n=3):
    stop, abort = threading.Event(), threading.Event()
    posters = [Poster(st.ingest.port, st.room, f"mkp{i}-{uuid.uuid4().hex[:6]}", stop, abort,
                      pause=0.05) for i in range(n)]
    _run_posters(posters)
    return SimpleNamespace(posters=posters, stop=stop, abort=abort)


def _accepted(load):
    return sum(a.status == 201 for p in load.posters for a in list(p.attempts))


def _wait_load(load, n, timeout=20):
    t0 = time.monotonic()
    while _accepted(load) < n:
        assert time.monotonic() - t0 < timeout, f"fewer than {n} comments accepted"
        time.sleep(0.05)


def _finish_load(load, t_back, timeout=30):
    """Every client has a 201 sent after t_back; then they stop. Returns
    the seconds that took."""
    try:
        while not all(any(a.status == 201 and a.t0 > t_back for a in list(p.attempts))
                      for p in load.posters):
            assert time.monotonic() - t_back < timeout, "not every client accepted again"
            time.sleep(0.1)
        return time.monotonic() - t_back
    finally:
        load.stop.set()
        _join_posters(load.posters, 60)


def _statuses(attempts):
    out = {}
    for a in attempts:
        out[a.status] = out.get(a.status, 0) + 1
    return out


def test_all_brokers_down_503_within_delivery_timeout_then_201(stack):
    """Three clients post keyed comments (retrying 503s with their key);
    every broker goes down for 5 s. Nothing answered while they are down is
    a 201; 503s come with Retry-After within the delivery timeout (3 s) +
    MARGIN_S; once they are up every client is accepted again, every 201 is
    in the partition once and the viewer got them all in order."""
    st = stack
    load = _load(st)
    try:
        _wait_load(load, 15)
        t_down = time.monotonic()
        st.mock.cmd("down all")
        ready = []
        while time.monotonic() - t_down < 5:
            ready.append(_ready(st.ingest.port))
            time.sleep(0.5)
        st.mock.cmd("up all")
        t_up = time.monotonic()
        back_s = _finish_load(load, t_up)
    finally:
        load.abort.set()
        for p in load.posters:
            p.join(30)
    attempts = [a for p in load.posters for a in p.attempts]
    during = [a for a in attempts if t_down + 0.3 <= a.t1 < t_up]
    sent_down = [a for a in attempts if t_down <= a.t0 < t_up and a.status is not None]
    figures = {"statuses": _statuses(attempts),
               "answered_while_down": _statuses(during),
               "slowest_while_down": round(max([a.secs for a in sent_down], default=0), 3),
               "readyz_while_down": ready, "all_clients_back_after": round(back_s, 2),
               "unresolved": sum(len(p.unresolved) for p in load.posters),
               "outcome_unknown": sum(len(p.unknown) for p in load.posters)}
    _verify(st, attempts, figures)
    print(f"\n[brokers down] {figures}")
    assert set(figures["statuses"]) <= {201, 503, 409}, figures
    assert not [a for a in during if a.status == 201], \
        f"201 while every broker was down | {figures}"
    assert figures["answered_while_down"].get(503, 0) >= 1, figures
    for a in attempts:
        if a.status == 503:
            assert int(a.headers.get("retry-after", "0")) >= 1, (a.headers, figures)
    assert figures["slowest_while_down"] < DELIVERY_MS / 1000 + MARGIN_S, figures
    assert figures["unresolved"] == 0, figures
    st.ok = True


def _until_final(st, text, timeout=20):
    """Posts one keyed comment, retrying it with its key after a 503 or 409
    in_progress (honouring Retry-After) until a final answer: the attempts."""
    out = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        a = _post(st.ingest.port, st.room, st.token, text, key=text, timeout=20)
        out.append(a)
        if a.status == 201 or (a.status == 409 and a.body.get("error") == "outcome_unknown"):
            break
        assert a.status in (409, 503), (a.status, a.body)
        time.sleep(float(a.headers.get("retry-after", "1")))
    return out


def test_high_rtt_is_slower_but_correct(stack):
    """Every broker answers 400 ms late: keyed comments (retried with their
    key after a 503, as a client does) are all accepted, each 201 at least
    one round trip slower; first attempts are answered 201 or, rarely, 503
    (a retry then publishes the comment once); the viewer (whose fetches
    are as slow) gets them all, in order."""
    st = stack
    rtt_ms = 400
    base = _keyed(st, "base", 3)
    st.mock.cmd(f"rtt all {rtt_ms}")
    slow = [_until_final(st, f"slow-{i}-{st.run}") for i in range(6)]
    st.mock.cmd("rtt all 0")
    after = _keyed(st, "after", 3)
    attempts = base + [a for tries in slow for a in tries] + after
    finals = [tries[-1] for tries in slow]
    figures = {"rtt_ms": rtt_ms, "base": _fmt(base), "slow": [_fmt(t) for t in slow],
               "after": _fmt(after)}
    _verify(st, attempts, figures)
    print(f"\n[rtt {rtt_ms}ms] {figures}")
    assert [a.status for a in base + finals + after] == [201] * 12, figures
    assert {tries[0].status for tries in slow} <= {201, 503}, figures
    assert sum(len(t) > 1 for t in slow) <= 1, f"more than one retried comment | {figures}"
    assert min(a.secs for a in finals) >= 0.9 * rtt_ms / 1000, figures
    assert max(a.secs for tries in slow for a in tries) < DELIVERY_MS / 1000 + MARGIN_S, figures
    assert figures["ghosts"] == 0, figures
    st.ok = True


def test_rtt_beyond_delivery_timeout_never_a_false_201_or_a_duplicate(stack):
    """Every broker answers 4 s late, past the 3 s delivery timeout: the
    mock has stored each record when the producer gives up on it. Keyed
    comments, each retried with its key until final: the first attempt is
    503 with Retry-After within the delivery timeout + MARGIN_S (never a
    201 without the ack); the retries get 409 in_progress until the claim's
    deadline, then the 201 of the stored record, read back from Kafka:
    never a second copy, never a comment left without its answer; what a
    viewer receives matches the partition."""
    st = stack
    rtt_ms = 4000
    base = _keyed(st, "base", 2)
    st.mock.cmd(f"rtt all {rtt_ms}")
    firsts = _keyed(st, "late", 2)
    st.mock.cmd("rtt all 0")
    finals = [b for a in firsts for b in _until_final(st, a.text)]
    after = _keyed(st, "after", 2)
    figures = {"rtt_ms": rtt_ms, "delivery_timeout_ms": DELIVERY_MS, "first": _fmt(firsts),
               "retries": [(a.status, a.body.get("error") if a.status != 201 else a.body["id"])
                           for a in finals], "after": _fmt(after)}
    _verify(st, base + firsts + finals + after, figures)
    print(f"\n[rtt {rtt_ms}ms] {figures}")
    for a in firsts:
        assert a.status == 503 and int(a.headers.get("retry-after", "0")) >= 1, figures
        assert a.secs < DELIVERY_MS / 1000 + MARGIN_S, figures
    assert [a.status for a in base + after] == [201] * 4, figures
    texts = {a.text for a in finals if a.status == 201}
    assert texts == {a.text for a in firsts}, f"a comment without its 201 | {figures}"
    assert figures["ghosts"] == 0, f"a record nobody was told about | {figures}"
    st.ok = True


# ---------------------------------------------------------------------------
# Consumer path
# ---------------------------------------------------------------------------

def _consumer_fault(st, fault):
    """Applies the fault under load; returns when it is over."""
    p, m = st.partition, st.mock
    if fault == "fetch_errors":
        # On the leader, the only broker the viewer's node fetches from.
        for n, error in ((40, "NOT_LEADER_OR_FOLLOWER"), (10, "_TRANSPORT"),
                         (10, "UNKNOWN_TOPIC_OR_PART")):
            m.cmd(f"broker-err {LEADER} Fetch {n} {error}")
            t0 = time.monotonic()
            while int(m.cmd(f"pending {LEADER} Fetch")[0]) > 0 and time.monotonic() - t0 < 15:
                time.sleep(0.1)
            time.sleep(1)
    elif fault == "leader_down":
        m.cmd(f"down {LEADER}")
        time.sleep(4)
        m.cmd(f"up {LEADER}")
    elif fault == "leader_moves":
        for broker in (2, 3, LEADER):
            m.cmd(f"leader {p} {broker}")
            time.sleep(2)
    elif fault == "leaderless":
        m.cmd(f"leader {p} -1")
        time.sleep(4)
        m.cmd(f"leader {p} {LEADER}")
    else:
        raise ValueError(fault)


@pytest.mark.parametrize("fault", ["fetch_errors", "leader_down", "leader_moves", "leaderless"])
def test_consumer_faults_keep_viewers_and_resume_without_gap(stack, fault):
    """Three clients post keyed comments to the room throughout.
    fetch_errors: the leader fails 40 Fetch requests with
    NOT_LEADER_OR_FOLLOWER, then drops the connection on 10, then fails 10
    with UNKNOWN_TOPIC_OR_PART (each batch once the last was hit, then 1 s).
    leader_down: the partition's leader is down for 4 s (producing to it
    fails too: 503s, retried by the clients). leader_moves: the
    leader moves to broker 2, 3, then back, 2 s apart. leaderless: the
    partition has no leader for 4 s (503s as with leader_down). The viewer stays
    connected and ends up with every record of the partition after its join,
    once each, in offset order; every 201 is there once."""
    st = stack
    load = _load(st)
    try:
        _wait_load(load, 15)
        errors0 = _metric(st.bcast.port, "danmaku_kafka_consumer_errors_total")
        t_fault = time.monotonic()
        _consumer_fault(st, fault)
        t_back = time.monotonic()
        back_s = _finish_load(load, t_back)
    finally:
        load.abort.set()
        for p in load.posters:
            p.join(30)
    fetch_errors_left = int(st.mock.cmd(f"pending {LEADER} Fetch")[0])
    attempts = [a for p in load.posters for a in p.attempts]
    figures = {"fault": fault, "fault_for": round(t_back - t_fault, 1),
               "fetch_errors_left": fetch_errors_left,
               "statuses": _statuses(attempts),
               "slowest": round(max(a.secs for a in attempts), 3),
               "all_clients_back_after": round(back_s, 2),
               "consumer_errors": _metric(st.bcast.port, "danmaku_kafka_consumer_errors_total")
               - errors0,
               "partition_resets": _metric(st.bcast.port, "danmaku_kafka_partition_resets_total"),
               "unresolved": sum(len(p.unresolved) for p in load.posters),
               "outcome_unknown": sum(len(p.unknown) for p in load.posters)}
    _verify(st, attempts, figures)
    print(f"\n[consumer {fault}] {figures}")
    assert set(figures["statuses"]) <= {201, 503, 409}, figures
    if fault in ("fetch_errors", "leader_moves"):
        # Only the consumer (or a leader change the producer follows) is hit.
        assert set(figures["statuses"]) == {201}, figures
    assert figures["unresolved"] == 0, figures
    assert fetch_errors_left == 0, f"injected Fetch errors not hit | {figures}"
    st.ok = True


def _silent_gaps(msgs, offsets):
    """Gaps in a viewer's stream no `joined` explains: pairs of consecutive
    danmaku offsets (a, b) with records of the room between them that the
    viewer never got, and no `joined` (a new start) in between; plus
    offsets delivered twice. offsets: every record of the room."""
    seen, gaps, dups = set(), [], []
    prev = None
    for m in msgs:
        if m.get("op") == "joined":
            prev = None  # a new start: the viewer knows where it stands
        elif m.get("op") == "danmaku":
            o = m["offset"]
            if o in seen:
                dups.append(o)
            seen.add(o)
            if prev is not None:
                missed = [x for x in offsets if prev < x < o]
                if missed:
                    gaps.append((prev, o, missed[:5]))
            prev = o
    return gaps, dups


def test_fetch_offset_out_of_range_is_never_a_silent_gap(stack):
    """The leader answers one Fetch with OFFSET_OUT_OF_RANGE while clients
    post: the broadcast node cannot trust its position (auto.offset.reset
    is error), so it restarts the partition and tells the viewer with a new
    `joined` (recovered:false). Whatever it skips, the viewer is told: no
    gap without a `joined` before it, no duplicate, and from its last
    `joined` on it gets every record, in order."""
    st = stack
    load = _load(st)
    try:
        _wait_load(load, 15)
        st.mock.cmd(f"broker-err {LEADER} Fetch 1 OFFSET_OUT_OF_RANGE")
        time.sleep(3)
        back_s = _finish_load(load, time.monotonic())
    finally:
        load.abort.set()
        for p in load.posters:
            p.join(30)
    left = int(st.mock.cmd(f"pending {LEADER} Fetch")[0])
    attempts = [a for p in load.posters for a in p.attempts]
    records = st.mock.dump(st.partition)
    figures, dup_texts = _check_accepted_in_topic(attempts, records, st.room)
    end = records[-1][0]
    reached = st.reader.wait_offset(end, 20)
    msgs = list(st.reader.msgs)
    offsets = [off for off, _, _ in records if off > st.joined["offset"]]
    gaps, dups = _silent_gaps(msgs, offsets)
    joins = [(i, m) for i, m in enumerate(msgs) if m.get("op") == "joined"]
    after_last = [m["offset"] for m in msgs[joins[-1][0]:] if m.get("op") == "danmaku"] \
        if joins else []
    expected_after = [o for o in offsets if joins and o > joins[-1][1]["offset"]]
    figures.update({"statuses": _statuses(attempts), "errors_left": left,
                    "joined_again": [(m["offset"], m["recovered"]) for _, m in joins],
                    "viewer_msgs": sum(m.get("op") == "danmaku" for m in msgs),
                    "silent_gaps": gaps[:3], "duplicates": dups[:5],
                    "partition_resets": _metric(st.bcast.port,
                                                "danmaku_kafka_partition_resets_total"),
                    "all_clients_back_after": round(back_s, 2)})
    print(f"\n[fetch OFFSET_OUT_OF_RANGE] {figures}")
    assert left == 0, f"the injected error was not hit | {figures}"
    assert not dup_texts, figures
    assert reached and st.reader.error is None, (st.reader.error, figures)
    assert not gaps and not dups, figures
    assert all(not m["recovered"] for _, m in joins), figures
    assert after_last == expected_after, figures
    st.ok = True


def test_log_end_lookup_errors_delay_a_join_not_forever(stack):
    """A viewer joins a room of a partition the node does not read yet while
    the leader fails the node's log-end lookups (ListOffsets) with
    NOT_LEADER_OR_FOLLOWER, then with REQUEST_TIMED_OUT: its `joined`
    comes once a lookup succeeds (within 15 s), then it gets every comment
    posted to the room, once each, in order."""
    st = stack
    room = None
    for i in range(64):
        candidate = f"{st.room}-{i}"
        status, _, info = http(st.ingest.port, "GET", f"/v1/rooms/{candidate}")
        assert status == 200, info
        if info["partition"] != st.partition:
            room, partition = candidate, info["partition"]
            break
    assert room is not None
    st.mock.cmd(f"broker-err {LEADER} ListOffsets 3 NOT_LEADER_OR_FOLLOWER")
    st.mock.cmd(f"broker-err {LEADER} ListOffsets 3 REQUEST_TIMED_OUT")
    t0 = time.monotonic()
    ws = connected(st.bcast.port, room)
    try:
        joined = ws.recv_json(timeout=15)
        join_s = time.monotonic() - t0
        left = int(st.mock.cmd(f"pending {LEADER} ListOffsets")[0])
        posted = []
        for i in range(5):
            text = f"lookup-{i}-{st.run}"
            posted.append(_post(st.ingest.port, room, st.token, text, key=text))
        got = []
        while len(got) < len(posted):
            m = ws.recv_json(timeout=10)
            got.append(m)
    finally:
        ws.close()
    figures = {"joined": joined, "joined_after": round(join_s, 2), "errors_left": left,
               "posted": _fmt(posted), "partition": partition}
    print(f"\n[lookup errors] {figures}")
    assert joined["op"] == "joined" and left == 0, figures
    assert [a.status for a in posted] == [201] * 5, figures
    assert [(m.get("op"), m.get("offset"), m.get("data", {}).get("id")) for m in got] == \
        [("danmaku", a.body["offset"], a.body["id"]) for a in posted], f"{got} | {figures}"
    st.ok = True
