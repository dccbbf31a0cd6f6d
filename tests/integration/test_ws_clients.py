"""The broadcast node with two independent third-party WebSocket clients as
viewers: Python `websockets` (tests/integration/requirements.txt) and the
Node.js `ws` package (tests/integration/node, driven by ws_client.mjs).
Both validate the server side of RFC 6455 strictly (accept key, chosen
subprotocol, unmasked frames, RSV bits, UTF-8, close codes), so a node that
passes the raw-socket table but trips a real client shows up here.

Each client: connects to /v1/ws?room=R offering danmaku.v1, receives hello
and joined, receives a comment published through a real ingest and Kafka,
does a ping/pong round trip (control frame and JSON op), and closes
cleanly. Skipped, with the reason, when a library is not installed."""

import json
import os
import queue
import shutil
import subprocess
import threading
import time
import uuid

import pytest

from dmtest import mint, post_comment, start_broadcast, start_ingest

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "node")
NODE_SCRIPT = os.path.join(HERE, "ws_client.mjs")
TEXT = "弾幕 works 😀"  # non-ASCII on purpose: UTF-8 end to end


@pytest.fixture(scope="module")
def nodes():
    ingest = start_ingest()
    bcast = start_broadcast()
    yield ingest, bcast
    try:
        bcast.assert_clean_exit()
    finally:
        ingest.assert_clean_exit()


def new_room(lib):
    return f"clients-{lib}-{uuid.uuid4().hex[:10]}"


def check_hello(msg):
    assert msg["op"] == "hello", msg
    assert isinstance(msg["node"], str) and msg["node"]
    assert msg["heartbeat_ms"] == 1000  # dmtest.start_broadcast's setting
    assert isinstance(msg["max_rooms"], int) and msg["max_rooms"] >= 1


def check_joined(msg, room):
    assert msg["op"] == "joined" and msg["room"] == room, msg
    assert msg["recovered"] is False
    assert isinstance(msg["epoch"], int) and isinstance(msg["offset"], int)
    assert msg["online"] >= 1


def publish(ingest, room):
    token = mint("viewer-test", name="Viewer Test")
    status, _, body = post_comment(ingest.port, room, TEXT, token, color="#00AAFF")
    assert status == 201, body
    return body


def check_danmaku(msg, room, accepted, joined):
    assert msg["op"] == "danmaku", msg
    assert msg["room"] == room and msg["offset"] == accepted["offset"]
    assert msg["offset"] > joined["offset"]
    d = msg["data"]
    assert d["id"] == accepted["id"] and d["room"] == room
    assert d["uid"] == "viewer-test" and d["name"] == "Viewer Test"
    assert d["text"] == TEXT
    assert d["color"] == "#00aaff" and d["mode"] == "scroll" and d["size"] == "normal"
    assert d["ts"] == accepted["ts"]


# ---------------------------------------------------------------------------
# Python websockets


def test_python_websockets_viewer(nodes):
    pytest.importorskip(
        "websockets", minversion="13.0",
        reason="Python websockets missing: pip install -r tests/integration/requirements.txt")
    from websockets.sync.client import connect

    ingest, bcast = nodes
    room = new_room("py")
    url = f"ws://127.0.0.1:{bcast.port}/v1/ws?room={room}"
    with connect(url, subprotocols=["danmaku.v1"], compression=None, open_timeout=10,
                 max_size=1 << 20) as ws:
        assert ws.subprotocol == "danmaku.v1"
        check_hello(json.loads(ws.recv(timeout=10)))
        joined = json.loads(ws.recv(timeout=20))
        check_joined(joined, room)

        accepted = publish(ingest, room)
        check_danmaku(json.loads(ws.recv(timeout=20)), room, accepted, joined)

        # Control frame ping: the event is set when the pong with this payload came.
        assert ws.ping(b"py-ping-\x00\xff").wait(timeout=5), "no pong"
        # The protocol-level ping op.
        ws.send(json.dumps({"op": "ping", "id": 41}))
        assert json.loads(ws.recv(timeout=10)) == {"op": "pong", "id": 41}

        ws.close(code=1000, reason="bye")
        # websockets checked the node's close frame (code valid, reason UTF-8).
        assert ws.protocol.close_sent.code == 1000
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1000


def test_python_websockets_viewer_answers_heartbeats(nodes):
    """Server pings (every 1000 ms here) are answered by the library and the
    connection stays healthy across several of them."""
    pytest.importorskip(
        "websockets", minversion="13.0",
        reason="Python websockets missing: pip install -r tests/integration/requirements.txt")
    from websockets.sync.client import connect

    _, bcast = nodes
    with connect(f"ws://127.0.0.1:{bcast.port}/v1/ws", subprotocols=["danmaku.v1"],
                 compression=None, open_timeout=10) as ws:
        check_hello(json.loads(ws.recv(timeout=10)))
        time.sleep(2.5)
        ws.send(json.dumps({"op": "ping", "id": 42}))
        assert json.loads(ws.recv(timeout=10)) == {"op": "pong", "id": 42}
        ws.close()
        assert ws.protocol.close_rcvd.code == 1000


# ---------------------------------------------------------------------------
# Node.js ws


def node_ws_available():
    node = shutil.which("node")
    if node is None:
        return None, "node is not installed"
    if not os.path.isfile(os.path.join(NODE_DIR, "node_modules", "ws", "package.json")):
        return None, "Node ws missing: run `npm ci` in tests/integration/node"
    return node, None


class NodeViewer:
    """ws_client.mjs in a subprocess: JSON-line events out, commands in."""

    def __init__(self, url):
        node, why = node_ws_available()
        if node is None:
            pytest.skip(why)
        self.proc = subprocess.Popen([node, NODE_SCRIPT, url, "danmaku.v1"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self.events = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.events.put(json.loads(line))
        self.events.put(None)

    def next(self, timeout=20, skip=("ping",)):
        """Next event, skipping the heartbeat pings ws answers by itself."""
        deadline = time.time() + timeout
        while True:
            try:
                ev = self.events.get(timeout=max(0.01, deadline - time.time()))
            except queue.Empty:
                pytest.fail("no event from the Node ws viewer within %ss" % timeout)
            if ev is None:
                pytest.fail("Node ws viewer exited: " + self.proc.stderr.read())
            assert ev["event"] != "error", ev
            if ev["event"] not in skip:
                return ev

    def message(self, timeout=20):
        ev = self.next(timeout)
        assert ev["event"] == "message" and ev["binary"] is False, ev
        return json.loads(ev["data"])

    def command(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def finish(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def test_node_ws_viewer(nodes):
    ingest, bcast = nodes
    room = new_room("node")
    viewer = NodeViewer(f"ws://127.0.0.1:{bcast.port}/v1/ws?room={room}")
    try:
        opened = viewer.next()
        assert opened == {"event": "open", "protocol": "danmaku.v1"}
        check_hello(viewer.message())
        joined = viewer.message()
        check_joined(joined, room)

        accepted = publish(ingest, room)
        check_danmaku(viewer.message(), room, accepted, joined)

        viewer.command(cmd="ping", data="6e6f64652d70696e6700ff")
        assert viewer.next(10) == {"event": "pong", "data": "6e6f64652d70696e6700ff"}
        viewer.command(cmd="send", data=json.dumps({"op": "ping", "id": 51}))
        assert viewer.message(10) == {"op": "pong", "id": 51}

        viewer.command(cmd="close", code=1000, reason="bye")
        # ws emits close once the node's close frame came back and TCP ended;
        # it checked that frame (valid code, UTF-8 reason) on the way.
        closed = viewer.next(10)
        assert closed["event"] == "close" and closed["code"] == 1000, closed
    finally:
        viewer.finish()
    assert viewer.proc.returncode == 0
