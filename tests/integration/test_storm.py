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


def _closed_by_reason(port):
    """The node's ws_closed_total counters, by reason (non-zero ones)."""
    _, _, text = http(port, "GET", "/metrics")
    out = {}
    for line in text.splitlines():
        if line.startswith("danmaku_ws_closed_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            value = int(float(line.split()[-1]))
            if value:
                out[reason] = value
    return out


def test_recovery_storm_for_a_minute_loses_nothing():
    """A minute of churn (DANMAKU_STORM_SECONDS overrides it): 200 viewers
    over 4 rooms on two nodes, 40 comments/s through ingest, and every
    viewer drops its TCP connection every 1-3 s (the load tester closes the
    socket without a close frame: an abrupt disconnect, seen by the node as
    EOF or a reset) and resumes on the other node with its last (epoch,
    offset). Every viewer must end with every comment of its room exactly
    once, in order, every resume recovered."""
    seconds = float(os.environ.get("DANMAKU_STORM_SECONDS", "60"))
    viewers, rooms, rate, period, warmup, drain = 200, 4, 40, 2, 2, 3
    ingest = start_ingest()
    one, two = start_broadcast(), start_broadcast()
    out = os.path.join(tempfile.mkdtemp(prefix="dm-storm-minute-"), "storm.json")
    try:
        run = subprocess.run(
            [os.path.join(BIN, "danmaku-loadtest"), "--ws",
             f"127.0.0.1:{one.port},127.0.0.1:{two.port}", "--ingest",
             f"127.0.0.1:{ingest.port}", "--jwt-secret-file", SECRET_FILE,
             "--viewers", str(viewers), "--rooms", str(rooms), "--rate", str(rate),
             "--duration", str(seconds), "--warmup", str(warmup), "--drain", str(drain),
             "--reconnect-every", str(period), "--quiet", "--json", out],
            capture_output=True, text=True, timeout=seconds + 180)
        with open(out) as f:
            s = json.load(f)["summary"]
        closed = {"one": _closed_by_reason(one.port), "two": _closed_by_reason(two.port)}
        lat = s.get("latency_us", {})
        print(f"\nrecovery storm {seconds:g}s: viewers={s['viewers']} rooms={s['rooms']} "
              f"sent={s['sent']} acked={s['acked']} reconnects={s['reconnects']} "
              f"recovered={s['recovered']} not_recovered={s['not_recovered']} "
              f"expected={s['expected']} delivered={s['delivered']} lost={s['lost']} "
              f"duplicated={s['duplicated']} out_of_order={s['out_of_order']} "
              f"unrecoverable={s['unrecoverable']} unexpected={s['unexpected']} "
              f"p50_ms={lat.get('p50', 0) / 1000:.1f} p99_ms={lat.get('p99', 0) / 1000:.1f} "
              f"max_ms={lat.get('max', 0) / 1000:.1f} closes={s.get('closes_by_code')} "
              f"node_closes={closed}")
        assert run.returncode == 0, run.stdout + run.stderr
        assert s["connect_errors"] == 0 and s["send_errors"] == 0, s
        assert s["acked"] == s["sent"] and s["acked"] >= rate * seconds * 0.9, s
        assert s["lost"] == 0 and s["duplicated"] == 0 and s["out_of_order"] == 0, s
        assert s["unrecoverable"] == 0 and s["not_recovered"] == 0, s
        assert s["expected"] > 0 and s["delivered"] == s["expected"], s
        # Each viewer drops every 1-3 s (2 s on average) from its first join
        # to the end of the drain: about viewers * seconds / 2 reconnects.
        # The lower bound allows for slow (sanitizer) builds, where a resume
        # takes a while; the upper one for warm-up and drain, and nothing
        # else (a node closing viewers by itself would show here).
        low = 0.7 * viewers * seconds / period
        high = 1.15 * viewers * (seconds + warmup + drain + 5) / period
        assert low <= s["reconnects"] <= high, (low, high, s)
        # Every reconnect that completed was recovered; at most one per
        # viewer can still be under way when the tool stops.
        assert s["recovered"] + viewers >= s["reconnects"], s
    finally:
        for n in (one, two, ingest):
            n.assert_clean_exit()
