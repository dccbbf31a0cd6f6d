"""Rate limits and moderation through the ingest API, against the real Redis:
per-user and per-room limits answer 429 with Retry-After, moderators are
exempt, mutes answer 403 until lifted, slow mode and unique-chat apply per
room; without Redis the node limits locally and counts it. Exactness over
time is checked with an injected clock in tests/unit/test_ratelimit.c and
on the script in test_ratelimit_redis.py; here the bounds."""

import socket
import time
import uuid

from dmtest import http, mint, start_ingest


def _room():
    return "rl-" + uuid.uuid4().hex[:8]


def _post(port, room, token, text=None):
    return http(port, "POST", f"/v1/rooms/{room}/danmaku",
                {"text": text or uuid.uuid4().hex[:12]}, {"Authorization": "Bearer " + token})


def _metric(port, name):
    text = http(port, "GET", "/metrics")[2]
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def _limits(user_rate, user_burst, room_rate=100000, room_burst=100000):
    return ["--ratelimit-user-rate", str(user_rate), "--ratelimit-user-burst", str(user_burst),
            "--ratelimit-room-rate", str(room_rate), "--ratelimit-room-burst", str(room_burst)]


def test_user_limit_answers_429_with_retry_after_and_recovers():
    node = start_ingest(*_limits(1, 3))
    room, alice = _room(), mint("rl-alice-" + uuid.uuid4().hex[:6])
    try:
        assert [_post(node.port, room, alice)[0] for _ in range(3)] == [201] * 3
        status, headers, body = _post(node.port, room, alice)
        assert status == 429 and body["error"] == "rate_limited", body
        assert 1 <= int(headers["retry-after"]) <= 2
        # Another user is not affected; a moderator is exempt.
        assert _post(node.port, room, mint("rl-bob-" + uuid.uuid4().hex[:6]))[0] == 201
        mod = mint("rl-mod", role="moderator")
        assert [_post(node.port, room, mod)[0] for _ in range(6)] == [201] * 6
        time.sleep(int(headers["retry-after"]))
        assert _post(node.port, room, alice)[0] == 201
        assert _metric(node.port, 'danmaku_ratelimit_decisions_total{verdict="user_rate"}') >= 1
    finally:
        node.assert_clean_exit()


def test_room_limit_covers_every_sender():
    node = start_ingest(*_limits(100000, 100000, room_rate=1, room_burst=2))
    room = _room()
    try:
        users = [mint(f"rl-u{i}-" + uuid.uuid4().hex[:6]) for i in range(3)]
        assert [_post(node.port, room, u)[0] for u in users[:2]] == [201, 201]
        status, headers, body = _post(node.port, room, users[2])
        assert status == 429 and body["error"] == "rate_limited" and "room" in body["message"]
        assert _post(node.port, _room(), users[2])[0] == 201, "other rooms are not limited"
    finally:
        node.assert_clean_exit()


def test_mute_slow_mode_and_unique_chat():
    node = start_ingest()
    room = _room()
    uid = "rl-carol-" + uuid.uuid4().hex[:6]
    carol, mod = mint(uid), mint("rl-mod", role="moderator")
    auth = {"Authorization": "Bearer " + mod}
    try:
        # Only moderators and admins.
        assert http(node.port, "POST", f"/v1/rooms/{room}/mutes", {"uid": uid, "seconds": 60},
                    {"Authorization": "Bearer " + carol})[0] == 403
        status, _, body = http(node.port, "POST", f"/v1/rooms/{room}/mutes",
                               {"uid": uid, "seconds": 60}, auth)
        assert status == 200 and body == {"room": room, "uid": uid, "seconds": 60}, body
        status, _, body = _post(node.port, room, carol)
        assert status == 403 and body["error"] == "muted"
        assert _post(node.port, _room(), carol)[0] == 201, "muted in that room only"
        status, _, body = http(node.port, "DELETE", f"/v1/rooms/{room}/mutes/{uid}", None, auth)
        assert status == 200 and body["muted"] is False
        assert _post(node.port, room, carol)[0] == 201

        status, _, body = http(node.port, "PUT", f"/v1/rooms/{room}/modes",
                               {"slow": 30, "unique": 60}, auth)
        assert status == 200 and body == {"room": room, "slow": 30, "unique": 60}
        dave = mint("rl-dave-" + uuid.uuid4().hex[:6])
        assert _post(node.port, room, dave, "same words")[0] == 201
        status, headers, body = _post(node.port, room, dave, "other words")
        assert status == 429 and body["error"] == "slow_mode" and 1 <= int(headers["retry-after"]) <= 30
        # Slow mode off, unique-chat on: the same text again is refused.
        assert http(node.port, "PUT", f"/v1/rooms/{room}/modes", {"unique": 60}, auth)[0] == 200
        status, _, body = _post(node.port, room, dave, "same words")
        assert status == 429 and body["error"] == "duplicate", body
        assert _post(node.port, room, dave, "new words")[0] == 201

        for bad in ({"uid": uid}, {"uid": uid, "seconds": 0}, {"uid": "", "seconds": 5},
                    {"uid": uid, "seconds": 5, "extra": 1}, [1]):
            assert http(node.port, "POST", f"/v1/rooms/{room}/mutes", bad, auth)[0] == 400, bad
        assert http(node.port, "PUT", f"/v1/rooms/{room}/modes", {"slow": -1}, auth)[0] == 400
        assert http(node.port, "PUT", f"/v1/rooms/{room}/modes", {"slow": "1"}, auth)[0] == 400
        assert http(node.port, "GET", f"/v1/rooms/{room}/modes")[0] == 405
        assert http(node.port, "DELETE", f"/v1/rooms/{room}/mutes/%01", None, auth)[0] == 400
    finally:
        node.assert_clean_exit()


def test_without_redis_limits_are_local_and_counted():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = str(s.getsockname()[1])
    s.close()
    node = start_ingest(*_limits(1, 2), "--redis-port", dead, "--workers", "1")
    room, erin = _room(), mint("rl-erin-" + uuid.uuid4().hex[:6])
    try:
        t0 = time.time()
        statuses = [_post(node.port, room, erin)[0] for _ in range(3)]
        assert statuses == [201, 201, 429], statuses
        assert time.time() - t0 < 5, "never waits on the missing Redis"
        assert _metric(node.port, "danmaku_ratelimit_fallback_total") >= 3
    finally:
        node.assert_clean_exit()
