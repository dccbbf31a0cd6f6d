"""danmaku-loadtest against a fake ingest and broadcast node that inject
known losses, duplicates and reorderings: the tool must report exactly
them, and its exit status must follow --max-loss and --slo-p99."""

import asyncio
import base64
import hashlib
import json
import os
import struct
import subprocess
import tempfile
import threading

import pytest

from dmtest import BIN, SANITIZER_MARKS

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class FakeCluster:
    """One asyncio loop serving HTTP (ingest) and WebSocket (broadcast).

    Viewer n (by connection order) is treated by rule n % 4:
      0 clean, 1 drops offsets % 5 == 0, 2 sends offsets % 4 == 1 twice,
      3 holds offsets % 6 == 2 back until the next comment (reordering).
    Everything actually sent is tallied per viewer, so the expected report
    is known exactly."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.offset = 99  # last assigned offset
        self.viewers = []  # dicts: writer, rule, joined, sent(list of offsets), held
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.http = self.loop.run_until_complete(
            asyncio.start_server(self._http, "127.0.0.1", 0))
        self.ws = self.loop.run_until_complete(asyncio.start_server(self._ws, "127.0.0.1", 0))
        self.http_port = self.http.sockets[0].getsockname()[1]
        self.ws_port = self.ws.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @staticmethod
    def frame(obj):
        data = json.dumps(obj, separators=(",", ":")).encode()
        n = len(data)
        head = bytes([0x81, n]) if n < 126 else bytes([0x81, 126]) + struct.pack("!H", n)
        return head + data

    def _send(self, v, offset, text, room):
        msg = self.frame({"op": "danmaku", "room": room, "offset": offset,
                          "data": {"id": str(offset), "room": room, "uid": "u", "name": "u",
                                   "text": text, "color": "#ffffff", "mode": "scroll",
                                   "size": "normal", "ts": 1}})
        v["writer"].write(msg)
        v["sent"].append(offset)

    def _deliver(self, offset, text, room):
        for v in self.viewers:
            rule = v["rule"]
            if rule == 1 and offset % 5 == 0:
                continue
            if rule == 3 and v["held"] is None and offset % 6 == 2:
                v["held"] = (offset, text)
                continue
            self._send(v, offset, text, room)
            if rule == 2 and offset % 4 == 1:
                self._send(v, offset, text, room)
            if rule == 3 and v["held"] is not None:
                self._send(v, *v["held"], room)
                v["held"] = None

    async def _http(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                length = next(int(l.split(":")[1]) for l in lines
                              if l.lower().startswith("content-length"))
                body = json.loads(await reader.readexactly(length))
                room = lines[0].split()[1].split("/")[3]
                self.offset += 1
                out = json.dumps({"id": str(self.offset), "room": room, "partition": 0,
                                  "offset": self.offset, "ts": 1}).encode()
                writer.write(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                             b"Content-Length: " + str(len(out)).encode() + b"\r\n\r\n" + out)
                self._deliver(self.offset, body["text"], room)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def _ws(self, reader, writer):
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        key = next(l.split(":", 1)[1].strip() for l in head.split("\r\n")
                   if l.lower().startswith("sec-websocket-key"))
        room = head.split()[1].split("room=")[1]
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept +
                      "\r\nSec-WebSocket-Protocol: danmaku.v1\r\n\r\n").encode())
        v = {"writer": writer, "rule": len(self.viewers) % 4, "joined": self.offset, "sent": [],
             "held": None}
        self.viewers.append(v)
        writer.write(self.frame({"op": "hello", "node": "fake", "heartbeat_ms": 15000,
                                 "max_rooms": 8}))
        writer.write(self.frame({"op": "joined", "room": room, "epoch": 0,
                                 "offset": self.offset, "recovered": False, "online": 1}))
        try:
            while await reader.read(65536):
                pass  # pongs and the close frame: nothing to answer
        except ConnectionError:
            pass

    def expected(self):
        """The report the tool owes: sums over viewers of what they were sent."""
        lost = dup = ooo = 0
        for v in self.viewers:
            owed = set(range(v["joined"] + 1, self.offset + 1))
            seen, top = set(), None
            for o in v["sent"]:
                if o in seen:
                    dup += 1
                    continue
                seen.add(o)
                if top is not None and o < top:
                    ooo += 1
                else:
                    top = o
            lost += len(owed - seen)
        return {"lost": lost, "duplicated": dup, "out_of_order": ooo}


def run_tool(fake, *extra):
    out = os.path.join(tempfile.mkdtemp(prefix="dm-lt-"), "r.json")
    html = out.replace(".json", ".html")
    proc = subprocess.run(
        [os.path.join(BIN, "danmaku-loadtest"), "--ws", f"127.0.0.1:{fake.ws_port}",
         "--ingest", f"127.0.0.1:{fake.http_port}", "--jwt-secret", "x" * 32, "--viewers", "8",
         "--rooms", "1", "--rate", "200", "--duration", "1.5", "--warmup", "0.3",
         "--drain", "1", "--http-conns", "1", "--quiet", "--json", out, "--html", html]
        + list(extra), capture_output=True, text=True, timeout=120)
    bad = [l for l in proc.stderr.splitlines() if any(m in l for m in SANITIZER_MARKS)]
    assert not bad, proc.stderr[-4000:]
    with open(out) as f:
        return proc, json.load(f), html


@pytest.mark.parametrize("procs,threads", [(1, 1), (1, 3), (2, 2)])
def test_injected_faults_are_reported_exactly(procs, threads):
    fake = FakeCluster()
    try:
        proc, res, html = run_tool(fake, "--max-loss", "1", "--procs", str(procs),
                                   "--threads", str(threads))
    finally:
        fake.stop()
    s = res["summary"]
    want = fake.expected()
    assert want["lost"] > 0 and want["duplicated"] > 0 and want["out_of_order"] > 0
    assert {k: s[k] for k in want} == want, proc.stdout
    assert s["sent"] == s["acked"] == fake.offset - 99
    assert s["expected"] == 8 * (fake.offset - 99)
    # Duplicates and reorderings always fail the run, whatever --max-loss says.
    assert proc.returncode == 2 and res["slo"]["passed"] is False
    page = open(html).read()
    assert "<script" in page and "http://" not in page and "https://" not in page
    # Saved results render again on their own.
    again = html + ".again.html"
    subprocess.run([os.path.join(BIN, "danmaku-loadtest"), "--render-html",
                    html.replace(".html", ".json"), again], check=True)
    assert open(again).read() == page


def test_exit_status_follows_max_loss_and_slo():
    fake = FakeCluster()
    try:
        fake_rules = fake  # only clean viewers: every 4th connection is rule 0
        proc, res, _ = run_tool(fake_rules, "--viewers", "1")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert res["summary"]["lost"] == 0 and res["slo"]["passed"] is True
        proc, res, _ = run_tool(fake_rules, "--viewers", "1", "--slo-p99", "0.000001")
        assert proc.returncode == 2 and any("p99" in f for f in res["slo"]["failures"])
    finally:
        fake.stop()


def test_usage_errors_exit_1():
    tool = os.path.join(BIN, "danmaku-loadtest")
    assert subprocess.run([tool, "--bogus"], capture_output=True).returncode == 1
    assert subprocess.run([tool, "--scenario", "nope"], capture_output=True).returncode == 1
    assert subprocess.run([tool, "--rate", "-1"], capture_output=True).returncode == 1
    help_run = subprocess.run([tool, "--help"], capture_output=True, text=True)
    assert help_run.returncode == 0 and not help_run.stderr, help_run.stderr
    assert "--max-loss" in help_run.stdout and "hot-room" in help_run.stdout
    listed = subprocess.run([tool, "--list-scenarios"], capture_output=True, text=True)
    assert listed.returncode == 0 and "reconnect-storm" in listed.stdout
