"""The broadcast node's WebSocket handling on the wire: control frames,
fragmentation, the close handshake and the close codes of protocol errors.
(The complete RFC 6455 table comes with the broadcast issue.)"""

import socket
import struct

import pytest

from dmtest import connected, start_broadcast


@pytest.fixture(scope="module")
def node():
    n = start_broadcast("--max-message", "1024")
    yield n
    n.assert_clean_exit()


def close_code(ws):
    """Reads until the server's close frame; returns its code."""
    while True:
        op, payload = ws.recv_frame()
        if op == 0x8:
            return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


def test_ping_gets_pong_with_the_same_payload(node):
    ws = connected(node.port)
    ws.send_frame(0x9, b"abc")
    assert ws.recv_frame() == (0xA, b"abc")
    ws.close()


def test_fragmented_text_with_a_ping_between_fragments(node):
    ws = connected(node.port)
    ws.send_frame(0x1, b'{"op":"pi', fin=False)
    ws.send_frame(0x9, b"x")
    ws.send_frame(0x0, b'ng","id":3}', fin=True)
    assert ws.recv_frame() == (0xA, b"x")
    assert ws.recv_json() == {"op": "pong", "id": 3}
    ws.close()


def test_close_handshake_echoes_the_code(node):
    ws = connected(node.port)
    ws.send_frame(0x8, struct.pack("!H", 1000) + b"bye")
    assert close_code(ws) == 1000
    assert ws.sock.recv(1) == b""  # then the server closes TCP


@pytest.mark.parametrize("name,frames,code", [
    ("binary message", [(0x2, b"\x00\x01", True)], 1003),
    ("invalid UTF-8", [(0x1, b"\xc3\x28", True)], 1007),
    ("message over max_message", [(0x1, b"x" * 2000, True)], 1009),
    ("continuation without a message", [(0x0, b"x", True)], 1002),
    ("reserved opcode", [(0x3, b"", True)], 1002),
    ("fragmented control frame", [(0x9, b"", False)], 1002),
    ("bad close code", [(0x8, struct.pack("!H", 1005), True)], 1002),
])
def test_protocol_errors_close_with_their_code(node, name, frames, code):
    ws = connected(node.port)
    for opcode, payload, fin in frames:
        ws.send_frame(opcode, payload, fin=fin)
    assert close_code(ws) == code, name


def test_unmasked_client_frame_is_a_protocol_error(node):
    ws = connected(node.port)
    ws.sock.sendall(bytes([0x81, 2]) + b"{}")
    assert close_code(ws) == 1002


def test_bad_json_gets_an_error_message_not_a_close(node):
    ws = connected(node.port)
    ws.send_json({"op": "dance"})
    msg = ws.recv_json()
    assert msg["op"] == "error" and msg["code"] == "bad_message"
    ws.send_json({"op": "join", "room": "no spaces"})
    assert ws.recv_json()["code"] == "bad_message"
    ws.send_json({"op": "leave", "room": "never-joined"})
    assert ws.recv_json()["code"] == "not_joined"
    ws.close()


def test_too_many_rooms(node):
    ws = connected(node.port)
    for i in range(8):
        ws.send_json({"op": "join", "room": f"many-{i}"})
    joined = 0
    for _ in range(8):
        joined += ws.recv_json(timeout=20)["op"] == "joined"
    assert joined == 8
    ws.send_json({"op": "join", "room": "many-9"})
    assert ws.recv_json()["code"] == "too_many_rooms"
    ws.close()


def test_handshake_refusals(node):
    def raw(request):
        s = socket.create_connection(("127.0.0.1", node.port), timeout=10)
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        return data

    up = b"Upgrade: websocket\r\nConnection: Upgrade\r\nHost: x\r\n"
    key = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    resp = raw(b"GET /v1/ws HTTP/1.1\r\n" + up + key + b"Sec-WebSocket-Version: 8\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 426") and b"Sec-WebSocket-Version: 13" in resp
    resp = raw(b"POST /v1/ws HTTP/1.1\r\n" + up + key + b"Sec-WebSocket-Version: 13\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 405")
    resp = raw(b"GET /v1/ws HTTP/1.1\r\n" + up + b"Sec-WebSocket-Version: 13\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 400")
    resp = raw(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 431")


def test_silent_peer_is_closed_after_the_idle_timeout():
    n = start_broadcast("--idle-timeout-ms", "400", "--heartbeat-ms", "10000",
                        "--handshake-timeout-ms", "300")
    try:
        ws = connected(n.port)
        assert close_code(ws) == 1001
        # A connection that never completes its handshake is dropped too.
        s = socket.create_connection(("127.0.0.1", n.port), timeout=10)
        s.sendall(b"GET /v1/ws HTTP/1.1\r\n")
        assert s.recv(1) == b""
        s.close()
    finally:
        n.assert_clean_exit()


def test_heartbeat_pings_arrive():
    n = start_broadcast("--heartbeat-ms", "200")
    try:
        ws = connected(n.port)
        assert ws.recv_frame(timeout=3)[0] == 0x9
        ws.close()
    finally:
        n.assert_clean_exit()


def test_a_peer_that_never_reads_is_closed_not_buffered():
    """Pings from a peer that never reads its pongs: the output bound holds
    and the peer is closed with 4008 (found in review: replies ignored it)."""
    import threading
    n = start_broadcast("--max-client-outbuf", "65536")
    try:
        ws = connected(n.port)
        ping = bytes([0x89, 0x80 | 125]) + b"\0\0\0\0" + b"p" * 125
        def flood():
            try:
                for _ in range(200):
                    ws.sock.sendall(ping * 500)
            except OSError:
                pass  # the server closed the connection: expected
        t = threading.Thread(target=flood)
        t.start()
        t.join(60)
        # The close frame may be lost to the reset a closing socket with
        # unread input sends; either way the server must have hung up.
        try:
            code = close_code(ws)
        except (ConnectionError, OSError):
            code = None
        assert code in (4008, None)
        assert 'reason=slow_consumer' in n.log()
    finally:
        n.assert_clean_exit()
