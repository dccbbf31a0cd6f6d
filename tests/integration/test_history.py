"""Recent history in Redis: ingest writes each acknowledged comment there
(bounded by count, expiring after the room's last comment), the history API
reads it, and a broadcast node gives a fresh viewer a backfill from its own
window and, for what the window does not hold, from Redis — then the live
stream, in offset order."""

import subprocess
import time
import uuid

from dmtest import (REDIS_PREFIX, http, mint, post_comment, redis_port, start_broadcast,
                    start_ingest, viewer)


def _room(tag):
    return f"hist-{tag}-{uuid.uuid4().hex[:8]}"


def _post(ingest, room, texts):
    token = mint("hana")
    offsets = []
    for text in texts:
        status, _, body = post_comment(ingest.port, room, text, token)
        assert status == 201, body
        offsets.append(body["offset"])
    return offsets


def _redis(*args):
    return subprocess.run(["redis-cli", "-p", redis_port(), *args], check=True,
                          capture_output=True, text=True).stdout.strip()


def _history(ingest, room, query="", want=None):
    """The history as ingest answers it; waits until it holds `want` items
    (the write follows the 201 without being awaited)."""
    deadline = time.time() + 5
    while True:
        status, _, body = http(ingest.port, "GET", f"/v1/rooms/{room}/danmaku{query}")
        assert status == 200, body
        if want is None or len(body["items"]) == want or time.time() > deadline:
            return body
        time.sleep(0.05)


def test_history_api_is_bounded_and_pages_by_offset():
    ingest = start_ingest("--history-max", "4", "--history-ttl-ms", "60000")
    room = _room("api")
    try:
        offsets = _post(ingest, room, [f"c{i}" for i in range(6)])
        body = _history(ingest, room, want=4)
        # Only the last four are kept, oldest first, with their records.
        assert [i["offset"] for i in body["items"]] == offsets[2:]
        assert [i["data"]["text"] for i in body["items"]] == ["c2", "c3", "c4", "c5"]
        assert body["room"] == room and isinstance(body["partition"], int)
        assert body["items"][0]["data"]["room"] == room

        page = _history(ingest, room, f"?after={offsets[2]}&limit=2")
        assert [i["offset"] for i in page["items"]] == offsets[3:5]
        assert _history(ingest, room, f"?after={offsets[5]}")["items"] == []
        assert [i["offset"] for i in _history(ingest, room, "?limit=1")["items"]] == offsets[5:]

        key = f"{REDIS_PREFIX}hist:{room}"
        assert _redis("ZCARD", key) == "4"
        ttl = int(_redis("PTTL", key))
        assert 0 < ttl <= 60000

        for bad in ("?after=-1", "?after=x", "?limit=0", "?limit=5", "?after=1&limit=abc"):
            status, _, err = http(ingest.port, "GET", f"/v1/rooms/{room}/danmaku{bad}")
            assert status == 400 and err["error"] == "invalid_query", (bad, err)
        assert http(ingest.port, "GET", "/v1/rooms/bad%20room/danmaku")[0] == 400
        assert http(ingest.port, "PUT", f"/v1/rooms/{room}/danmaku")[0] == 405
        assert _history(ingest, _room("empty"))["items"] == []
    finally:
        ingest.assert_clean_exit()


def _read_danmaku(ws, n):
    got = []
    while len(got) < n:
        msg = ws.recv_json(timeout=10)
        assert msg["op"] == "danmaku", msg
        got.append(msg)
    return got


def test_fresh_join_backfill_from_redis_then_live():
    """A node that never saw the room serves the backfill from Redis."""
    ingest = start_ingest()
    room = _room("redis")
    try:
        offsets = _post(ingest, room, [f"old{i}" for i in range(5)])
        _history(ingest, room, want=5)
        node = start_broadcast("--join-backfill", "3")
        try:
            ws = viewer(node.port, room)
            got = _read_danmaku(ws, 3)
            assert [m["offset"] for m in got] == offsets[2:]
            assert [m["data"]["text"] for m in got] == ["old2", "old3", "old4"]
            new = _post(ingest, room, ["new"])
            live = _read_danmaku(ws, 1)[0]
            assert live["offset"] == new[0] and live["data"]["text"] == "new"
            ws.close()
        finally:
            node.assert_clean_exit()
    finally:
        ingest.assert_clean_exit()


def test_fresh_join_backfill_joins_window_and_redis_in_order():
    """The node's window holds the newest comments, Redis the older ones:
    the backfill is both, in order, each once, then live. Without Redis
    history (none written) only the window is used."""
    ingest = start_ingest()
    room = _room("mixed")
    node = start_broadcast("--join-backfill", "4")
    try:
        older = _post(ingest, room, ["a", "b", "c"])
        _history(ingest, room, want=3)
        first = viewer(node.port, room)  # the node starts reading the room here
        _read_danmaku(first, 3)          # its own backfill (from Redis)
        newer = _post(ingest, room, ["d", "e"])
        _read_danmaku(first, 2)
        ws = viewer(node.port, room)
        got = _read_danmaku(ws, 4)
        assert [m["offset"] for m in got] == older[1:] + newer
        assert [m["data"]["text"] for m in got] == ["b", "c", "d", "e"]
        live = _post(ingest, room, ["f"])
        assert _read_danmaku(ws, 1)[0]["offset"] == live[0]
        assert _read_danmaku(first, 1)[0]["offset"] == live[0]
        for w in (first, ws):
            w.close()
    finally:
        node.assert_clean_exit()
        ingest.assert_clean_exit()


def test_backfill_without_redis_uses_the_window_and_counts_it():
    ingest = start_ingest()
    room = _room("noredis")
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = str(s.getsockname()[1])
    s.close()
    # One worker: each worker keeps its own windows.
    node = start_broadcast("--join-backfill", "5", "--redis-port", dead, "--workers", "1")
    try:
        first = viewer(node.port, room)
        offsets = _post(ingest, room, ["x", "y"])
        _read_danmaku(first, 2)
        ws = viewer(node.port, room)
        assert [m["offset"] for m in _read_danmaku(ws, 2)] == offsets
        _, _, text = http(node.port, "GET", "/metrics")
        failed = [line for line in text.splitlines()
                  if line.startswith("danmaku_backfill_failed_total ")]
        assert failed and float(failed[0].split()[-1]) >= 2, failed
        for w in (first, ws):
            w.close()
    finally:
        node.assert_clean_exit()
        ingest.assert_clean_exit()
