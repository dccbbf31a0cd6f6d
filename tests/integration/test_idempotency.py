"""Idempotency-Key: a retried POST gets the first answer and publishes
nothing new, on the same node or another; a reused key for another comment
is refused; concurrent duplicates publish once; a failed publish frees the
key for a retry. Checked against the comments that really reached Kafka
(through the Redis history ingest writes after each ack)."""

import socket
import threading
import time
import uuid

from dmtest import http, mint, start_ingest


def _post(port, room, text, token, key=None):
    headers = {"Authorization": "Bearer " + token}
    if key is not None:
        headers["Idempotency-Key"] = key
    return http(port, "POST", f"/v1/rooms/{room}/danmaku", {"text": text}, headers)


def _room():
    return "idem-" + uuid.uuid4().hex[:8]


def _published(port, room, settle=0.5):
    """The room's comments as Kafka acknowledged them (history)."""
    time.sleep(settle)
    status, _, body = http(port, "GET", f"/v1/rooms/{room}/danmaku?limit=100")
    assert status == 200, body
    return [item["data"] for item in body["items"]]


def test_retry_gets_the_first_answer_on_any_node():
    one, two = start_ingest(), start_ingest()
    room, token = _room(), mint("ivy")
    try:
        status, headers, first = _post(one.port, room, "once", token, key="k-1")
        assert status == 201 and "idempotent-replayed" not in headers
        for node in (one, two, one):
            status, headers, again = _post(node.port, room, "once", token, key="k-1")
            assert status == 201 and again == first, again
            assert headers["idempotent-replayed"] == "true"
        # Another user's identical key is theirs alone.
        status, _, other = _post(one.port, room, "once", mint("jon"), key="k-1")
        assert status == 201 and other["id"] != first["id"]
        texts = [c["text"] for c in _published(one.port, room)]
        assert texts == ["once", "once"], texts
    finally:
        one.assert_clean_exit()
        two.assert_clean_exit()


def test_reused_key_for_another_comment_is_refused():
    node = start_ingest()
    room, token = _room(), mint("kai")
    try:
        assert _post(node.port, room, "first", token, key="k-2")[0] == 201
        status, _, body = _post(node.port, room, "second", token, key="k-2")
        assert status == 422 and body["error"] == "idempotency_mismatch"
        status, _, body = _post(node.port, _room(), "first", token, key="k-2")
        assert status == 422, "the same key in another room is another request"
        for bad in ("", "x" * 129, "tab\there", "caf\u00e9"):
            headers = {"Authorization": "Bearer " + token, "Idempotency-Key": bad}
            try:
                status, _, body = http(node.port, "POST", f"/v1/rooms/{room}/danmaku",
                                       {"text": "bad key"}, headers)
            except UnicodeEncodeError:
                continue  # http.client refuses non-Latin-1 header values itself
            assert status == 400 and body["error"] == "invalid_idempotency_key", (bad, body)
        assert [c["text"] for c in _published(node.port, room)] == ["first"]
    finally:
        node.assert_clean_exit()


def test_concurrent_duplicates_publish_once():
    node = start_ingest()
    room, token = _room(), mint("lea")
    results = []

    def send():
        results.append(_post(node.port, room, "race", token, key="k-race"))

    try:
        threads = [threading.Thread(target=send) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(r[0] for r in results)
        assert statuses.count(201) >= 1 and set(statuses) <= {201, 409}, statuses
        ids = {r[2]["id"] for r in results if r[0] == 201}
        assert len(ids) == 1, ids
        for r in results:
            if r[0] == 409:
                assert r[2]["error"] == "in_progress" and int(r[1]["retry-after"]) >= 1
        assert [c["text"] for c in _published(node.port, room)] == ["race"]
    finally:
        node.assert_clean_exit()


def _dead_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_failed_publish_frees_the_key_and_redis_down_refuses_keys():
    room, token = _room(), mint("max")
    no_kafka = start_ingest("--kafka-delivery-timeout-ms", "1000",
                            brokers=f"127.0.0.1:{_dead_port()}")
    good = start_ingest()
    no_redis = start_ingest("--redis-port", str(_dead_port()))
    try:
        status, _, body = _post(no_kafka.port, room, "retry me", token, key="k-3")
        assert status == 503 and body["error"] == "unavailable"
        # Nothing was accepted, so the retry publishes (it is not told 409).
        status, _, accepted = _post(good.port, room, "retry me", token, key="k-3")
        assert status == 201, accepted
        assert _post(good.port, room, "retry me", token, key="k-3")[2] == accepted
        # Without Redis a key cannot be honoured: 503, never a duplicate; a
        # comment without a key still goes through.
        status, headers, body = _post(no_redis.port, room, "keyed", token, key="k-4")
        assert status == 503 and int(headers["retry-after"]) >= 1
        assert _post(no_redis.port, room, "unkeyed", token)[0] == 201
        # (The node without Redis wrote no history; the keyed retry is there once.)
        texts = [c["text"] for c in _published(good.port, room)]
        assert texts == ["retry me"], texts
    finally:
        for node in (no_kafka, good, no_redis):
            node.assert_clean_exit()


def test_a_retry_right_after_the_201_gets_it_again_on_any_worker():
    """The answer is stored before the 201 goes out: a retry sent the moment
    the first answer arrives, on a new connection (so possibly another
    worker, with its own Redis connection), must find it, never the claim
    (409 in_progress). Eight clients at once, to widen the race it had."""
    node = start_ingest("--workers", "2")
    room = _room()
    failures = []

    def client(n):
        token = mint(f"quick-{n}-" + uuid.uuid4().hex[:6])
        for i in range(100):
            first = _post(node.port, room, f"c{n}-{i}", token, key=f"k-{i}")
            again = _post(node.port, room, f"c{n}-{i}", token, key=f"k-{i}")
            if first[0] != 201 or again[0] != 201 or again[2] != first[2]:
                failures.append((n, i, first[0], again[0], again[2]))

    try:
        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures, f"{len(failures)} of 800 retries, e.g. {failures[:3]}"
    finally:
        node.assert_clean_exit()
