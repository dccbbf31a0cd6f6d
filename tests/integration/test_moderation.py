"""Moderation through the ingest API: a moderator or admin retracts a
comment with DELETE; the retract travels through Kafka like the comments,
so viewers get it in the room's order, and the history forgets the comment.
Everyone else is refused."""

import time
import uuid

from dmtest import http, mint, post_comment, start_broadcast, start_ingest, viewer


def _delete(port, room, cid, token):
    headers = {"Authorization": "Bearer " + token} if token else {}
    return http(port, "DELETE", f"/v1/rooms/{room}/danmaku/{cid}", None, headers)


def test_moderator_retracts_a_comment_for_every_viewer():
    ingest, node = start_ingest(), start_broadcast()
    room = "mod-" + uuid.uuid4().hex[:8]
    try:
        ws = viewer(node.port, room)
        status, _, posted = post_comment(ingest.port, room, "regrettable", mint("nia"))
        assert status == 201
        keep = post_comment(ingest.port, room, "fine", mint("nia"))[2]
        got = ws.recv_json(timeout=10)
        assert got["op"] == "danmaku" and got["data"]["id"] == posted["id"]
        assert ws.recv_json(timeout=10)["data"]["id"] == keep["id"]

        status, _, body = _delete(ingest.port, room, posted["id"], mint("mod", role="moderator"))
        assert status == 200, body
        assert body["id"] == posted["id"] and body["room"] == room
        assert body["offset"] > keep["offset"] and body["partition"] == posted["partition"]
        retract = ws.recv_json(timeout=10)
        assert retract == {"op": "retract", "room": room, "offset": body["offset"],
                           "id": posted["id"]}, retract
        # An admin may too; the history no longer lists the comment.
        assert _delete(ingest.port, room, keep["id"], mint("boss", role="admin"))[0] == 200
        deadline = time.time() + 5
        while True:
            items = http(ingest.port, "GET", f"/v1/rooms/{room}/danmaku")[2]["items"]
            if not items or time.time() > deadline:
                break
            time.sleep(0.05)
        assert items == []
        ws.close()
    finally:
        node.assert_clean_exit()
        ingest.assert_clean_exit()


def test_retract_is_refused_to_everyone_else():
    ingest = start_ingest()
    room = "mod-" + uuid.uuid4().hex[:8]
    cid = "01JD0000000000000000000000"
    try:
        status, headers, body = _delete(ingest.port, room, cid, None)
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        status, _, body = _delete(ingest.port, room, cid, mint("pat"))
        assert status == 403 and body["error"] == "forbidden"
        other_rooms = mint("mod", role="moderator", rooms="elsewhere-*")
        assert _delete(ingest.port, room, cid, other_rooms)[0] == 403
        moderator = mint("mod", role="moderator")
        for bad in ("x" * 27, "has.dot", "%00"):
            status, _, body = _delete(ingest.port, room, bad, moderator)
            assert status == 400 and body["error"] == "invalid_id", (bad, body)
        assert _delete(ingest.port, "bad%20room", cid, moderator)[0] == 400
    finally:
        ingest.assert_clean_exit()
