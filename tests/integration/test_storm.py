"""Recovery under churn, measured by the bundled load tester against the real
system: viewers drop their connections every ~second and resume while
comments keep flowing; every viewer must end with every comment of its room
exactly once, in order. And a draining node tells its viewers to reconnect."""

import json
import os
import signal
import struct
import socket
import subprocess
import tempfile
import uuid

from dmtest import (BIN, SECRET_FILE, WSClient, http, kafka_bootstrap, partitions,
                    start_broadcast, start_ingest, topic)


def test_reconnect_storm_loses_nothing():
    ingest = start_ingest()
    one, two = start_broadcast(), start_broadcast()
    out = os.path.join(tempfile.mkdtemp(prefix="dm-storm-"), "storm.json")
    try:
        run = subprocess.run(
            [os.path.join(BIN, "danmaku-loadtest"), "--ws",
             f"127.0.0.1:{one.port},127.0.0.1:{two.port}", "--ingest",
             f"127.0.0.1:{ingest.port}", "--jwt-secret-file", SECRET_FILE,
             "--kafka-brokers", kafka_bootstrap(), "--kafka-topic", topic(),
             "--kafka-partitions", str(partitions()), "--viewers", "60", "--rooms", "3",
             "--rate", "60", "--duration", "8", "--warmup", "1", "--reconnect-every", "1",
             "--quiet", "--json", out],
            capture_output=True, text=True, timeout=120)
        with open(out) as f:
            s = json.load(f)["summary"]
        assert run.returncode == 0, run.stdout + run.stderr
        assert s["reconnects"] > 100, s
        assert s["lost"] == 0 and s["duplicated"] == 0 and s["out_of_order"] == 0, s
        # Viewers reconnect across both nodes: each resume was exact.
        assert s["unrecoverable"] == 0 and s["not_recovered"] == 0, s
        assert s["recovered"] >= s["reconnects"] * 0.95, s
    finally:
        for n in (one, two, ingest):
            n.assert_clean_exit()


def test_sigterm_drains_viewers_with_reconnect_and_1012():
    node = start_broadcast()
    ws = WSClient(node.port, "/v1/ws?room=draining")
    assert ws.recv_json()["op"] == "hello"
    assert ws.recv_json(timeout=20)["op"] == "joined"
    node.proc.send_signal(signal.SIGTERM)
    msg = ws.recv_json(timeout=10)
    assert msg["op"] == "reconnect" and msg["retry_ms"] > 0
    while True:
        op, payload = ws.recv_frame()
        if op == 0x8:
            assert struct.unpack("!H", payload[:2])[0] == 1012
            break
    ws.close()
    node.assert_clean_exit()


def test_slow_viewers_are_cut_off_and_the_others_lose_nothing():
    """A tenth of the viewers stop reading: each is closed with 4008 once its
    bounded output is full, and every other viewer still gets every comment,
    in order (slow viewers are left out of the tool's accounting)."""
    ingest = start_ingest()
    node = start_broadcast("--max-client-outbuf", "65536", "--workers", "1", "--density-cap", "0")
    out = os.path.join(tempfile.mkdtemp(prefix="dm-slow-"), "slow.json")
    try:
        run = subprocess.run(
            [os.path.join(BIN, "danmaku-loadtest"), "--ws", f"127.0.0.1:{node.port}",
             "--publish", "kafka", "--kafka-brokers", kafka_bootstrap(), "--kafka-topic",
             topic(), "--kafka-partitions", str(partitions()), "--viewers", "50", "--rooms", "1",
             "--rate", "1500", "--message-size", "1000", "--slow-share", "0.1", "--duration", "8",
             "--warmup", "1", "--quiet", "--json", out],
            capture_output=True, text=True, timeout=120)
        with open(out) as f:
            s = json.load(f)["summary"]
        assert run.returncode == 0, run.stdout + run.stderr
        # A viewer that stopped reading does not see its close frame; the
        # node counts them.
        status, _, text = http(node.port, "GET", "/metrics")
        slow = [l for l in text.splitlines()
                if l.startswith('danmaku_ws_closed_total{reason="slow_consumer"}')]
        assert slow and float(slow[0].split()[-1]) == 5, slow
        assert s["lost"] == 0 and s["duplicated"] == 0 and s["out_of_order"] == 0, s
        assert s["expected"] > 0 and s["delivered"] == s["expected"], s
    finally:
        node.assert_clean_exit()
        ingest.assert_clean_exit()


def _metric(port, name):
    _, _, text = http(port, "GET", "/metrics")
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return 0.0


def test_slow_viewer_sampled_instead_of_closed_and_told_exactly():
    """With slow_viewer_sample, a viewer that stops reading for a while is
    not closed: comments over its bound are dropped for it alone, and the
    `skipped` notices it gets afterwards add up exactly to what it missed;
    what it does get is in order, once. The others lose nothing."""
    node = start_broadcast("--max-client-outbuf", "65536", "--workers", "1", "--density-cap", "0",
                           "--slow-viewer-sample", "true")
    prefix = "sample-" + uuid.uuid4().hex[:8]
    room = prefix + "-0"
    out = os.path.join(tempfile.mkdtemp(prefix="dm-sample-"), "sample.json")
    # A small receive buffer, so the node's output bound is reached soon.
    slow = None
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", node.port))
    try:
        slow = WSClient(node.port, f"/v1/ws?room={room}", sock=sock)
        assert slow.recv_json()["op"] == "hello"
        assert slow.recv_json(timeout=20)["op"] == "joined"
        run = subprocess.Popen(
            [os.path.join(BIN, "danmaku-loadtest"), "--ws", f"127.0.0.1:{node.port}",
             "--publish", "kafka", "--kafka-brokers", kafka_bootstrap(), "--kafka-topic",
             topic(), "--kafka-partitions", str(partitions()), "--viewers", "20", "--rooms", "1",
             "--room-prefix", prefix, "--rate", "1500", "--message-size", "1000",
             "--duration", "6", "--warmup", "1", "--quiet", "--json", out],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # The slow viewer reads nothing until the load tester is done.
        output = run.communicate(timeout=120)[0]
        with open(out) as f:
            s = json.load(f)["summary"]
        assert run.returncode == 0, output
        assert s["lost"] == 0 and s["duplicated"] == 0 and s["out_of_order"] == 0, s
        sampled = _metric(node.port, "danmaku_slow_viewer_sampled_total")
        assert sampled > 0, "the viewer never went over its bound"
        assert _metric(node.port, 'danmaku_ws_closed_total{reason="slow_consumer"}') == 0

        got, skipped, last = 0, 0, -1
        while got + skipped < s["acked"]:
            msg = slow.recv_json(timeout=10)
            if msg["op"] == "danmaku":
                assert msg["offset"] > last, "out of order or twice"
                last = msg["offset"]
                got += 1
            elif msg["op"] == "skipped":
                skipped += msg["count"]
        assert got + skipped == s["acked"] and skipped == sampled, (got, skipped, sampled)
        assert got > 0
    finally:
        if slow is not None:
            slow.close()
        sock.close()
        node.assert_clean_exit()
