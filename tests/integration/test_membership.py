"""Room membership in Redis: each broadcast node publishes its share of a
room's viewers; ingest's GET /v1/rooms/{room} sums the live nodes' shares."""

import signal
import time
import uuid

import pytest

from dmtest import http, start_broadcast, start_ingest, viewer

TTL = "1500"


def online(port, room):
    status, _, body = http(port, "GET", f"/v1/rooms/{room}")
    assert status == 200, body
    assert body["room"] == room and isinstance(body["partition"], int)
    return body["online"]


def wait_online(port, room, expected, timeout=8):
    deadline = time.time() + timeout
    value = None
    while time.time() < deadline:
        value = online(port, room)
        if value == expected:
            return
        time.sleep(0.05)
    pytest.fail(f"online count of {room} stayed {value}, expected {expected}")


def test_online_count_is_summed_over_live_nodes():
    room = "members-" + uuid.uuid4().hex[:8]
    ingest = start_ingest("--membership-ttl-ms", TTL)
    one = start_broadcast("--membership-ttl-ms", TTL)
    two = start_broadcast("--membership-ttl-ms", TTL)
    three = start_broadcast("--membership-ttl-ms", TTL)
    try:
        assert online(ingest.port, room) == 0
        on_one = [viewer(one.port, room) for _ in range(2)]
        on_two = [viewer(two.port, room)]
        on_three = [viewer(three.port, room) for _ in range(3)]
        wait_online(ingest.port, room, 6)

        # A viewer leaving is reflected quickly.
        on_one.pop().close()
        wait_online(ingest.port, room, 5)

        # A draining node withdraws its share at once.
        two.assert_clean_exit()
        wait_online(ingest.port, room, 4)

        # A killed node's share disappears with its TTL.
        three.proc.send_signal(signal.SIGKILL)
        three.proc.wait()
        wait_online(ingest.port, room, 1)
        for ws in on_one:
            ws.close()
        wait_online(ingest.port, room, 0)
    finally:
        one.assert_clean_exit()
        ingest.assert_clean_exit()


def test_room_info_errors():
    ingest = start_ingest()
    try:
        assert http(ingest.port, "GET", "/v1/rooms/bad%20room")[0] == 400
        assert http(ingest.port, "POST", "/v1/rooms/fine", {"text": "x"})[0] == 405
        # Ready once librdkafka reports a broker up (statistics every second).
        deadline = time.time() + 10
        while True:
            status, _, body = http(ingest.port, "GET", "/readyz")
            if status == 200 or time.time() > deadline:
                break
            time.sleep(0.1)
        assert status == 200, body
    finally:
        ingest.assert_clean_exit()


def test_redis_unreachable_answers_503_quickly():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = str(s.getsockname()[1])
    s.close()
    ingest = start_ingest("--redis-port", dead)
    try:
        t0 = time.time()
        status, headers, body = http(ingest.port, "GET", "/v1/rooms/anything")
        assert status == 503 and body["error"] == "unavailable" and "retry-after" in headers
        assert time.time() - t0 < 5
        status, _, body = http(ingest.port, "GET", "/readyz")
        assert status == 503 and "Redis" in body["message"]
    finally:
        ingest.assert_clean_exit()


def test_paused_redis_never_holds_a_request():
    """Redis stopped with SIGSTOP: answers come within the Redis timeout, and
    once it continues, the node reconnects and answers again."""
    import os
    import subprocess
    redis_pid = int(subprocess.run(["redis-cli", "-p", os.environ["DANMAKU_TEST_REDIS_PORT"],
                                    "info", "server"], capture_output=True, text=True)
                    .stdout.split("process_id:")[1].split()[0])
    ingest = start_ingest("--redis-timeout-ms", "200")
    try:
        assert online(ingest.port, "paused") == 0
        os.kill(redis_pid, signal.SIGSTOP)
        try:
            for _ in range(5):
                t0 = time.time()
                status, _, _ = http(ingest.port, "GET", "/v1/rooms/paused")
                assert status == 503 and time.time() - t0 < 2
        finally:
            os.kill(redis_pid, signal.SIGCONT)
        deadline = time.time() + 10
        while http(ingest.port, "GET", "/v1/rooms/paused")[0] != 200:
            assert time.time() < deadline, "no recovery after Redis continued"
            time.sleep(0.1)
    finally:
        ingest.assert_clean_exit()


def test_viewers_are_pushed_the_online_count_over_all_nodes():
    room = "pushed-" + uuid.uuid4().hex[:8]
    one = start_broadcast("--online-interval-ms", "300")
    two = start_broadcast("--online-interval-ms", "300")
    try:
        a = [viewer(one.port, room) for _ in range(2)]
        b = [viewer(two.port, room) for _ in range(3)]
        deadline = time.time() + 10
        count = None
        while count != 5:
            assert time.time() < deadline, f"online count stayed {count}"
            msg = a[0].recv_json(timeout=5, skip=())
            if msg["op"] == "online":
                assert msg["room"] == room
                count = msg["count"]
        for ws in a + b:
            ws.close()
    finally:
        one.assert_clean_exit()
        two.assert_clean_exit()
