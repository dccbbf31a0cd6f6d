"""Reconnect and resume: a viewer that comes back with its last (epoch,
offset) gets exactly what it missed, then the live stream — no gap, no
duplicate, recovered:true — or, when this node cannot prove that,
recovered:false with the live position. Never a silent gap."""

import time
import uuid

import pytest

from dmtest import connected, mint, post_comment, start_broadcast, start_ingest


@pytest.fixture(scope="module")
def nodes():
    ingest = start_ingest()
    bcast = start_broadcast("--recovery-window", "8")
    yield ingest, bcast
    try:
        bcast.assert_clean_exit()
    finally:
        ingest.assert_clean_exit()


def post(ingest, room, n, token):
    out = []
    for i in range(n):
        status, _, body = post_comment(ingest.port, room, f"m{i}", token)
        assert status == 201
        out.append(body)
    return out


def test_exact_resume_on_the_same_node(nodes):
    ingest, bcast = nodes
    room = "resume-" + uuid.uuid4().hex[:8]
    token = mint("mo")
    ws = connected(bcast.port, room)
    joined = ws.recv_json(timeout=20)
    assert joined["epoch"] > 0
    seen = [ws.recv_json()["offset"] for _ in post(ingest, room, 3, token)]
    ws.sock.close()  # dropped, no close handshake
    missed = post(ingest, room, 4, token)
    time.sleep(0.3)

    ws = connected(bcast.port)
    ws.send_json({"op": "join", "room": room, "offset": seen[-1], "epoch": joined["epoch"]})
    again = ws.recv_json(timeout=20)
    assert again["op"] == "joined" and again["recovered"] is True
    assert again["offset"] == seen[-1] and again["epoch"] == joined["epoch"]
    got = [ws.recv_json() for _ in missed]
    assert [m["offset"] for m in got] == [b["offset"] for b in missed]
    assert [m["data"]["id"] for m in got] == [b["id"] for b in missed]
    live = post(ingest, room, 1, token)
    assert ws.recv_json()["offset"] == live[0]["offset"]
    ws.send_json({"op": "ping", "id": 1})
    assert ws.recv_json() == {"op": "pong", "id": 1}  # nothing more: no duplicate
    ws.close()


def test_unknown_epoch_or_too_old_is_not_recovered(nodes):
    ingest, bcast = nodes
    room = "stale-" + uuid.uuid4().hex[:8]
    token = mint("no")
    ws = connected(bcast.port, room)
    joined = ws.recv_json(timeout=20)
    first = post(ingest, room, 1, token)[0]
    assert ws.recv_json()["offset"] == first["offset"]

    # A wrong epoch: another stream, nothing can be promised.
    other = connected(bcast.port)
    other.send_json({"op": "join", "room": room, "offset": first["offset"],
                     "epoch": joined["epoch"] + 1})
    msg = other.recv_json(timeout=20)
    assert msg["recovered"] is False and msg["offset"] >= first["offset"]
    other.close()

    # More missed comments than the window holds (8).
    ws.sock.close()
    post(ingest, room, 12, token)
    time.sleep(0.3)
    late = connected(bcast.port)
    late.send_json({"op": "join", "room": room, "offset": first["offset"],
                    "epoch": joined["epoch"]})
    msg = late.recv_json(timeout=20)
    assert msg["recovered"] is False
    live = post(ingest, room, 1, token)
    # It starts at the live position: the next thing is the new comment.
    assert late.recv_json()["offset"] == live[0]["offset"]
    late.close()


def test_resume_on_another_node_reads_the_gap_back_from_kafka(nodes):
    ingest, bcast = nodes
    room = "nodes-" + uuid.uuid4().hex[:8]
    token = mint("ole")
    other = start_broadcast()
    try:
        a = connected(bcast.port, room)
        b = connected(other.port, room)
        ja, jb = a.recv_json(timeout=20), b.recv_json(timeout=20)
        assert ja["epoch"] == jb["epoch"] > 0
        seen = [a.recv_json()["offset"] for _ in post(ingest, room, 2, token)]
        for _ in seen:
            b.recv_json()
        b.close()
        a.sock.close()  # the viewer of node one loses its connection...
        missed = post(ingest, room, 5, token)
        # ...and comes back on node two, which never sent it anything.
        c = connected(other.port)
        c.send_json({"op": "join", "room": room, "offset": seen[-1], "epoch": ja["epoch"]})
        msg = c.recv_json(timeout=20)
        assert msg["op"] == "joined" and msg["recovered"] is True and msg["offset"] == seen[-1]
        got = [c.recv_json() for _ in missed]
        assert [m["data"]["id"] for m in got] == [x["id"] for x in missed]
        live = post(ingest, room, 1, token)
        assert c.recv_json()["offset"] == live[0]["offset"]
        c.send_json({"op": "ping", "id": 2})
        assert c.recv_json() == {"op": "pong", "id": 2}
        c.close()
    finally:
        other.assert_clean_exit()


def test_killed_node_viewers_recover_on_the_survivor_with_no_gap(nodes):
    """Two nodes serve a room while comments flow; one is killed with SIGKILL;
    its viewers reconnect to the survivor with their (epoch, offset) and end
    up with every comment exactly once, in order."""
    import signal
    import threading
    ingest, _ = nodes
    room = "kill-" + uuid.uuid4().hex[:8]
    token = mint("pat")
    survivor = start_broadcast()  # the default window: 500 comments
    doomed = start_broadcast()
    viewers = [connected(doomed.port, room) for _ in range(3)]
    joined = [v.recv_json(timeout=20) for v in viewers]
    epoch = joined[0]["epoch"]
    posted, stop = [], threading.Event()

    def publish():
        i = 0
        while not stop.is_set() and i < 400:
            status, _, body = post_comment(ingest.port, room, f"k{i}", token)
            assert status == 201
            posted.append(body)
            i += 1
            time.sleep(0.005)

    t = threading.Thread(target=publish)
    t.start()
    got = [[] for _ in viewers]
    while len(posted) < 20:
        time.sleep(0.01)
    for i, v in enumerate(viewers):
        for _ in range(5):
            got[i].append(v.recv_json()["data"]["id"])
    doomed.proc.send_signal(signal.SIGKILL)
    doomed.proc.wait()
    # Each viewer drains what reached it before the kill, then resumes.
    last = []
    for i, v in enumerate(viewers):
        offset = None
        try:
            while True:
                msg = v.recv_json(timeout=2)
                got[i].append(msg["data"]["id"])
                offset = msg["offset"]
        except (ConnectionError, OSError, TimeoutError):
            pass
        last.append(offset)
    resumed = []
    for i, off in enumerate(last):
        ws = connected(survivor.port)
        ws.send_json({"op": "join", "room": room, "offset": off, "epoch": epoch})
        msg = ws.recv_json(timeout=20)
        assert msg["op"] == "joined" and msg["recovered"] is True, msg
        resumed.append(ws)
    t.join()
    stop.set()
    for i, ws in enumerate(resumed):
        while len(got[i]) < len(posted):
            got[i].append(ws.recv_json(timeout=20)["data"]["id"])
        assert got[i] == [b["id"] for b in posted], f"viewer {i}"
        ws.close()
    survivor.assert_clean_exit()
