"""The walking skeleton end to end on the real Kafka broker and Redis:
POST -> ingest -> Kafka -> broadcast -> WebSocket viewers."""

import signal
import time
import uuid

import pytest

from dmtest import (WSClient, http, mint, partitions, post_comment, start_broadcast,
                    start_ingest)


def murmur2(data: bytes) -> int:
    """Kafka's Java murmur2, written independently of common/hash.c."""
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    n4 = len(data) // 4
    for i in range(n4):
        k = int.from_bytes(data[4 * i:4 * i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = data[4 * n4:]
    # Java reads the tail as signed bytes; sign extension changes the xor.
    signed = [b - 256 if b > 127 else b for b in tail]
    if len(tail) >= 3:
        h ^= (signed[2] & 0xFF) << 16
    if len(tail) >= 2:
        h ^= (signed[1] & 0xFF) << 8
    if len(tail) >= 1:
        h ^= signed[0] & 0xFF
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_of(room):
    return (murmur2(room.encode()) & 0x7FFFFFFF) % partitions()


def test_murmur2_vectors_match_kafka():
    assert murmur2(b"21") & 0x7FFFFFFF == 1173551340
    assert murmur2(b"abc") & 0x7FFFFFFF == 479470107


@pytest.fixture(scope="module")
def nodes():
    ingest = start_ingest()
    bcast = start_broadcast()
    yield ingest, bcast
    try:
        bcast.assert_clean_exit()
    finally:
        ingest.assert_clean_exit()


def pick_rooms():
    """Room a and b on different partitions, and c sharing a's partition, so
    the broadcast node must filter records by key, not only by partition."""
    run = uuid.uuid4().hex[:8]
    a = f"skel-a-{run}"
    b = next(f"skel-b-{run}-{i}" for i in range(1000)
             if partition_of(f"skel-b-{run}-{i}") != partition_of(a))
    c = next(f"skel-c-{run}-{i}" for i in range(100000)
             if partition_of(f"skel-c-{run}-{i}") == partition_of(a))
    return a, b, c


def join(port, room):
    ws = WSClient(port, f"/v1/ws?room={room}")
    assert ws.status == 101
    assert ws.headers.get("sec-websocket-protocol") == "danmaku.v1"
    hello = ws.recv_json()
    assert hello["op"] == "hello" and hello["heartbeat_ms"] == 1000 and hello["max_rooms"] >= 1
    joined = ws.recv_json(timeout=20)
    assert joined["op"] == "joined" and joined["room"] == room
    assert joined["recovered"] is False
    return ws, joined


def test_comments_reach_exactly_their_rooms_viewers_in_offset_order(nodes):
    ingest, bcast = nodes
    a, b, c = pick_rooms()
    viewers = {a: [join(bcast.port, a) for _ in range(3)],
               b: [join(bcast.port, b) for _ in range(2)],
               c: [join(bcast.port, c)]}
    token = mint("alice", name="Alice")

    sent = {a: [], b: [], c: []}
    rooms = [a, b, a, c, b, a, a, b, c, a, b, a]
    for i, room in enumerate(rooms):
        status, headers, body = post_comment(ingest.port, room, f"comment {i} in {room}", token,
                                             color="#FF8800", mode="top", size="large", vt=1000 + i)
        assert status == 201, body
        assert headers["content-type"] == "application/json"
        assert body["room"] == room and body["partition"] == partition_of(room)
        assert isinstance(body["offset"], int) and body["offset"] >= 0
        assert len(body["id"]) == 26 and body["ts"] > 0
        sent[room].append(body)

    for room, members in viewers.items():
        for ws, joined in members:
            got = [ws.recv_json(timeout=20) for _ in sent[room]]
            assert [m["op"] for m in got] == ["danmaku"] * len(sent[room])
            assert [m["offset"] for m in got] == [s["offset"] for s in sent[room]]
            assert all(m["offset"] > joined["offset"] for m in got)
            assert [m["data"]["id"] for m in got] == [s["id"] for s in sent[room]]
            for m, s in zip(got, sent[room]):
                d = m["data"]
                assert m["room"] == room and d["room"] == room
                assert d["uid"] == "alice" and d["name"] == "Alice"
                assert d["text"].endswith(f"in {room}")
                assert (d["color"], d["mode"], d["size"]) == ("#ff8800", "top", "large")
                assert d["ts"] == s["ts"] and d["vt"] >= 1000
            # Nothing else arrives: a ping round trip proves the stream is drained.
            ws.send_json({"op": "ping", "id": 7})
            assert ws.recv_json() == {"op": "pong", "id": 7}
            ws.close()


def test_joined_offsets_continue_where_the_stream_is(nodes):
    ingest, bcast = nodes
    a, _, _ = pick_rooms()
    first, joined1 = join(bcast.port, a)
    token = mint("bob")
    status, _, body = post_comment(ingest.port, a, "one", token)
    assert status == 201
    assert first.recv_json()["offset"] == body["offset"]
    # A second viewer joining now is told the offset it starts after.
    second, joined2 = join(bcast.port, a)
    assert joined2["offset"] >= body["offset"]
    # Both viewers may sit on different worker threads, whose counts meet
    # in Redis (the periodic `online` push has the sum).
    assert joined2["online"] in (1, 2)
    status, _, body2 = post_comment(ingest.port, a, "two", token)
    assert status == 201
    for ws in (first, second):
        assert ws.recv_json()["offset"] == body2["offset"]
        ws.close()


def test_several_rooms_per_connection_and_leave(nodes):
    ingest, bcast = nodes
    a, b, _ = pick_rooms()
    ws, _ = join(bcast.port, a)
    ws.send_json({"op": "join", "room": b})
    joined = ws.recv_json(timeout=20)
    assert joined["op"] == "joined" and joined["room"] == b
    ws.send_json({"op": "join", "room": b})
    assert ws.recv_json()["code"] == "already_joined"
    token = mint("carol")
    ids = [post_comment(ingest.port, r, "x", token)[2]["id"] for r in (a, b)]
    got = [ws.recv_json() for _ in range(2)]
    assert sorted(m["data"]["id"] for m in got) == sorted(ids)
    ws.send_json({"op": "leave", "room": a})
    post_comment(ingest.port, a, "not for you", token)
    _, _, last = post_comment(ingest.port, b, "for you", token)
    assert ws.recv_json()["data"]["id"] == last["id"]
    ws.close()


def test_ingest_errors(nodes):
    ingest, _ = nodes
    good = mint("dave")
    status, headers, body = post_comment(ingest.port, "room1", "hi", "not-a-token")
    assert status == 401 and body["error"] == "unauthorized"
    assert headers["www-authenticate"].startswith("Bearer")
    status, _, body = http(ingest.port, "POST", "/v1/rooms/room1/danmaku", {"text": "hi"})
    assert status == 401
    expired = mint("dave", ttl=-3600)
    assert post_comment(ingest.port, "room1", "hi", expired)[0] == 401
    status, _, body = post_comment(ingest.port, "room1", "", good)
    assert status == 400 and body["error"] == "invalid_body"
    assert post_comment(ingest.port, "room1", "hi", good, color="red")[0] == 400
    assert post_comment(ingest.port, "room1", "hi", good, extra=1)[0] == 400
    assert post_comment(ingest.port, "room1", "x" * 101, good)[0] == 400
    assert post_comment(ingest.port, "room1", "a\u0001b", good)[0] == 400
    status, _, body = http(ingest.port, "POST", "/v1/rooms/room1/danmaku", b"{not json",
                           {"Authorization": "Bearer " + good})
    assert status == 400
    status, _, _ = http(ingest.port, "POST", "/v1/rooms/room1/danmaku", b'{"text":"hi"}',
                        {"Authorization": "Bearer " + good, "Content-Type": "text/plain"})
    assert status == 415
    assert post_comment(ingest.port, "bad%20room!", "hi", good)[0] == 400
    assert http(ingest.port, "PUT", "/v1/rooms/room1/danmaku")[0] == 405
    assert http(ingest.port, "POST", "/v1/rooms/room1/danmaku/01ABC")[0] == 405
    assert http(ingest.port, "GET", "/v1/rooms/room1/elsewhere")[0] == 404
    assert http(ingest.port, "DELETE", "/v1/rooms/room1/danmaku/a/b")[0] == 404
    assert http(ingest.port, "GET", "/nope")[0] == 404
    status, _, body = http(ingest.port, "GET", "/healthz")
    assert status == 200 and body == {"status": "ok"}
    scoped = mint("erin", rooms="allowed-*")
    assert post_comment(ingest.port, "other", "hi", scoped)[0] == 403
    assert post_comment(ingest.port, "allowed-1", "hi", scoped)[0] == 201


def test_kafka_unreachable_answers_503_never_201():
    # A broker address where nothing listens: every comment must fail with 503.
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"127.0.0.1:{s.getsockname()[1]}"
    s.close()
    ingest = start_ingest("--kafka-delivery-timeout-ms", "1500", brokers=dead)
    try:
        status, headers, body = post_comment(ingest.port, "room1", "lost?", mint("frank"))
        assert status == 503 and body["error"] == "unavailable"
        assert int(headers["retry-after"]) >= 1
        status, _, body = http(ingest.port, "GET", "/readyz")
        assert status == 503 and "Kafka" in body["message"]
    finally:
        ingest.assert_clean_exit()


def test_broadcast_plain_http_and_bad_handshakes(nodes):
    _, bcast = nodes
    status, _, body = http(bcast.port, "GET", "/healthz")
    assert status == 200 and body == {"status": "ok"}
    status, headers, page = http(bcast.port, "GET", "/")
    assert status == 200 and "text/html" in headers["content-type"] and "WebSocket" in page
    ws = WSClient(bcast.port, "/v1/ws?room=bad%20room")
    assert ws.status == 400
    ws = WSClient(bcast.port, "/elsewhere")
    assert ws.status == 404


def _free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _readyz_until(port, want_status, timeout=10):
    deadline = time.time() + timeout
    while True:
        status, _, body = http(port, "GET", "/readyz")
        if status == want_status or time.time() > deadline:
            return status, body
        time.sleep(0.1)


def test_broadcast_readiness_follows_kafka_not_redis():
    """Ready once its consumer has a broker; a missing Redis is reported but
    does not take the node out of service (delivery goes on without it)."""
    dead_kafka = start_broadcast("--kafka-brokers", f"127.0.0.1:{_free_port()}")
    no_redis = start_broadcast("--redis-port", str(_free_port()))
    try:
        status, body = _readyz_until(dead_kafka.port, 200, timeout=3)
        assert status == 503 and body["status"] == "not_ready" and body["kafka"] == "down"
        status, body = _readyz_until(no_redis.port, 200)
        assert status == 200 and body == {"status": "ready", "kafka": "up", "redis": "down"}
        assert http(dead_kafka.port, "GET", "/healthz")[0] == 200
    finally:
        dead_kafka.assert_clean_exit()
        no_redis.assert_clean_exit()


def test_broadcast_ready_with_both(nodes):
    _, bcast = nodes
    status, body = _readyz_until(bcast.port, 200)
    assert status == 200 and body == {"status": "ready", "kafka": "up", "redis": "up"}


def test_sender_hanging_up_before_the_ack_does_not_hurt_the_node(nodes):
    import socket
    import json as _json
    ingest, _ = nodes
    token = mint("gina")
    body = _json.dumps({"text": "gone"}).encode()
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", ingest.port))
        s.sendall(b"POST /v1/rooms/hangup/danmaku HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer " + token.encode() + b"\r\n"
                  b"Content-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        s.close()
    # The node still answers, and later comments still get their 201.
    status, _, created = post_comment(ingest.port, "hangup", "still here", token)
    assert status == 201, created


def test_sigterm_answers_every_comment_in_flight(nodes):
    """SIGTERM while comments are in flight: each one gets a real answer, and
    every 201 reaches the room's viewer: nothing accepted is lost."""
    import threading
    _, bcast = nodes
    ingest = start_ingest()
    room = "sigterm-" + uuid.uuid4().hex[:8]
    viewer, _ = join(bcast.port, room)
    token = mint("henry")
    results = []
    lock = threading.Lock()

    def sender(n):
        for i in range(n):
            try:
                status, _, body = post_comment(ingest.port, room, f"c{i}", token)
            except OSError:
                status, body = None, None  # refused after the listener closed
            with lock:
                results.append((status, body))

    threads = [threading.Thread(target=sender, args=(40,)) for _ in range(8)]
    for t in threads:
        t.start()
    while True:
        with lock:
            if len(results) >= 40:
                break
        time.sleep(0.005)
    ingest.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join()
    ingest.assert_clean_exit()

    accepted = [b for s, b in results if s == 201]
    assert len(accepted) >= 40
    assert all(s in (201, 503, None) for s, _ in results), {s for s, _ in results}
    got = []
    while len(got) < len(accepted):
        got.append(viewer.recv_json(timeout=10)["data"]["id"])
    assert sorted(got) == sorted(b["id"] for b in accepted)
    viewer.close()


def test_metrics_count_what_happened(nodes):
    """/metrics on both nodes: Prometheus text whose counters move with the
    traffic of this test."""
    ingest, bcast = nodes

    def scrape(port):
        status, headers, text = http(port, "GET", "/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain")
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    before_i, before_b = scrape(ingest.port), scrape(bcast.port)
    room = "metrics-" + uuid.uuid4().hex[:8]
    ws, _ = join(bcast.port, room)
    token = mint("quinn")
    for i in range(3):
        assert post_comment(ingest.port, room, f"m{i}", token)[0] == 201
    assert post_comment(ingest.port, room, "", token)[0] == 400
    for _ in range(3):
        ws.recv_json()
    ws.close()
    # Figures the clients keep themselves (limiter decisions) reach the
    # registry on each worker's one-second tick.
    time.sleep(1.2)
    after_i, after_b = scrape(ingest.port), scrape(bcast.port)

    def delta(after, before, name):
        return after.get(name, 0) - before.get(name, 0)

    assert delta(after_i, before_i, 'danmaku_http_requests_total{code="201"}') == 3
    assert delta(after_i, before_i, 'danmaku_http_requests_total{code="400"}') == 1
    assert delta(after_i, before_i, "danmaku_kafka_produced_total") == 3
    assert delta(after_i, before_i, 'danmaku_http_requests_by_route_total{route="post"}') == 4
    assert delta(after_i, before_i, 'danmaku_http_requests_by_route_total{route="metrics"}') == 1
    # Every comment passed the limiter; the generous test limits admit them.
    assert delta(after_i, before_i, 'danmaku_ratelimit_decisions_total{verdict="admit"}') >= 3
    assert delta(after_b, before_b, "danmaku_deliveries_total") >= 3
    assert delta(after_b, before_b, "danmaku_joins_total") == 1
    assert delta(after_b, before_b, 'danmaku_ws_closed_total{reason="peer_close"}') == 1
    assert after_b["danmaku_kafka_partitions_assigned"] >= 1
    assert after_i["danmaku_kafka_delivery_latency_seconds_count"] >= 3
