"""What the broadcast node does with records before fan-out: density control
with priority lanes and `skipped` notices, retract events, and records it
must not pass on (foreign room key, malformed JSON, unknown types)."""

import json
import os
import subprocess
import time
import uuid

import pytest

from dmtest import (BIN, kafka_bootstrap, mint, partitions, post_comment, start_broadcast,
                    start_ingest, topic, viewer)


def produce(room, value):
    out = subprocess.run([os.path.join(BIN, "danmaku-test-produce"), kafka_bootstrap(), topic(),
                          str(partitions()), room, value if isinstance(value, str)
                          else json.dumps(value)],
                         capture_output=True, text=True, timeout=30, check=True)
    return int(out.stdout.split()[1])


@pytest.fixture(scope="module")
def nodes():
    ingest = start_ingest()
    bcast = start_broadcast("--density-cap", "10")
    yield ingest, bcast
    try:
        bcast.assert_clean_exit()
    finally:
        ingest.assert_clean_exit()


def test_density_cap_samples_and_says_how_many(nodes):
    """60 comments as fast as possible into a room capped at 10/s: the viewer
    gets a burst and then ~10/s, and the `skipped` notices account for every
    other one, exactly."""
    _, bcast = nodes
    room = "dense-" + uuid.uuid4().hex[:8]
    ws = viewer(bcast.port, room)
    offsets = [produce(room, {"id": f"id{i}", "room": room, "uid": "u", "name": "u",
                              "text": f"t{i}", "color": "#ffffff", "mode": "scroll",
                              "size": "normal", "ts": 1}) for i in range(60)]
    got, skipped = [], 0
    deadline = time.time() + 15
    while len(got) + skipped < 60:
        assert time.time() < deadline, (len(got), skipped)
        msg = ws.recv_json(timeout=5)
        if msg["op"] == "danmaku":
            got.append(msg["offset"])
        elif msg["op"] == "skipped":
            assert msg["room"] == room and msg["count"] > 0
            skipped += msg["count"]
    assert len(got) + skipped == 60
    assert skipped > 0 and len(got) >= 5, (len(got), skipped)
    assert got == sorted(got) and set(got) <= set(offsets)
    ws.close()


def test_priority_lane_and_retracts_are_never_sampled(nodes):
    ingest, bcast = nodes
    room = "prio-" + uuid.uuid4().hex[:8]
    ws = viewer(bcast.port, room)
    paid = mint("vip", prio=3)
    normal = mint("pleb")
    # Exhaust the bucket with normal comments, then send paid ones.
    for i in range(30):
        assert post_comment(ingest.port, room, f"n{i}", normal)[0] == 201
    paid_ids = []
    for i in range(5):
        status, _, body = post_comment(ingest.port, room, f"p{i}", paid)
        assert status == 201
        paid_ids.append(body["id"])
    retract_offset = produce(room, {"type": "retract", "room": room, "id": paid_ids[0]})
    seen, retracts, deadline = [], [], time.time() + 15
    while len(retracts) < 1 or not set(paid_ids) <= set(seen):
        assert time.time() < deadline, (seen, retracts)
        msg = ws.recv_json(timeout=5)
        if msg["op"] == "danmaku":
            seen.append(msg["data"]["id"])
            if msg["data"]["id"] in paid_ids:
                assert msg["data"]["prio"] == 3
        elif msg["op"] == "retract":
            retracts.append(msg)
    assert retracts == [{"op": "retract", "room": room, "offset": retract_offset,
                         "id": paid_ids[0]}]
    ws.close()


def test_records_that_must_not_reach_viewers(nodes):
    _, bcast = nodes
    room = "strict-" + uuid.uuid4().hex[:8]
    ws = viewer(bcast.port, room)
    produce(room, "{not json")
    produce(room, {"room": "another-room", "id": "x", "text": "wrong key"})
    produce(room, {"type": "mute", "room": room})
    produce(room, {"type": "retract", "room": room, "id": "bad\"id"})
    last = produce(room, {"id": "ok", "room": room, "uid": "u", "name": "u", "text": "fine",
                          "color": "#ffffff", "mode": "scroll", "size": "normal", "ts": 1})
    msg = ws.recv_json(timeout=10)
    assert msg["op"] == "danmaku" and msg["offset"] == last and msg["data"]["text"] == "fine"
    ws.close()
