"""Token-gated viewing on the broadcast node: ?token= at the handshake, the
`auth` op, the rooms claim, expiry closing with 1008, and the Origin
allow-list."""

import base64
import hashlib
import hmac
import json
import socket
import struct
import time

import pytest

from dmtest import SECRET_FILE, WSClient, mint, start_broadcast


@pytest.fixture(scope="module")
def gated():
    n = start_broadcast("--jwt-key-file", SECRET_FILE, "--allow-anonymous", "false",
                        "--jwt-leeway-s", "0",
                        "--ws-allowed-origins", "https://good.example, https://also.example")
    yield n
    n.assert_clean_exit()


def _hs256(claims):
    """A token minted here, for claims the token tool does not make."""
    def b64(raw):
        return base64.urlsafe_b64encode(raw).rstrip(b"=")
    with open(SECRET_FILE, "rb") as f:
        secret = f.read().rstrip(b"\n")
    signing = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(claims).encode())
    return (signing + b"." + b64(hmac.new(secret, signing, hashlib.sha256).digest())).decode()


def hello(ws):
    assert ws.status == 101
    assert ws.recv_json()["op"] == "hello"


def close_code(ws):
    while True:
        op, payload = ws.recv_frame()
        if op == 0x8:
            return struct.unpack("!H", payload[:2])[0]


def test_anonymous_viewers_must_authenticate(gated):
    ws = WSClient(gated.port, "/v1/ws")
    hello(ws)
    ws.send_json({"op": "join", "room": "gated"})
    assert ws.recv_json()["code"] == "unauthorized"
    ws.send_json({"op": "auth", "token": mint("ivy")})
    ws.send_json({"op": "join", "room": "gated"})
    assert ws.recv_json(timeout=20)["op"] == "joined"
    ws.close()


def test_token_in_the_url_and_the_rooms_claim(gated):
    token = mint("jack", rooms="allowed-*")
    ws = WSClient(gated.port, f"/v1/ws?room=allowed-1&token={token}")
    hello(ws)
    assert ws.recv_json(timeout=20)["op"] == "joined"
    ws.send_json({"op": "join", "room": "elsewhere"})
    assert ws.recv_json()["code"] == "forbidden"
    ws.close()


def test_a_new_token_must_allow_the_rooms_already_joined(gated):
    """Otherwise a short-lived token for a private room could be swapped for
    a long-lived one for another room, and the viewer kept watching."""
    ws = WSClient(gated.port, f"/v1/ws?room=private-a&token={mint('max', rooms='private-a')}")
    hello(ws)
    assert ws.recv_json(timeout=20)["op"] == "joined"
    ws.send_json({"op": "auth", "token": mint("max", ttl=86400, rooms="public-*")})
    assert ws.recv_json()["code"] == "unauthorized"
    assert close_code(ws) == 1008
    # One that still allows the room is taken.
    ws = WSClient(gated.port, f"/v1/ws?room=private-b&token={mint('max', rooms='private-*')}")
    hello(ws)
    assert ws.recv_json(timeout=20)["op"] == "joined"
    ws.send_json({"op": "auth", "token": mint("max", ttl=86400, rooms="private-b")})
    ws.send_json({"op": "ping", "id": 7})
    assert ws.recv_json() == {"op": "pong", "id": 7}
    ws.close()


def test_the_largest_exp_is_no_overflow():
    """exp + leeway must not overflow (UBSan aborts the node in the ASan build)."""
    node = start_broadcast("--jwt-key-file", SECRET_FILE, "--allow-anonymous", "false",
                           "--jwt-leeway-s", "30")
    try:
        ws = WSClient(node.port, f"/v1/ws?room=far&token={_hs256({'sub': 'nat', 'exp': 2**63 - 1})}")
        hello(ws)
        assert ws.recv_json(timeout=20)["op"] == "joined"
        time.sleep(1.5)  # the expiry sweep runs every second
        ws.send_json({"op": "ping", "id": 1})
        assert ws.recv_json() == {"op": "pong", "id": 1}
        ws.close()
    finally:
        node.assert_clean_exit()


def test_bad_tokens(gated):
    ws = WSClient(gated.port, "/v1/ws?token=not.a.token")
    assert ws.status == 401
    ws = WSClient(gated.port, "/v1/ws")
    hello(ws)
    ws.send_json({"op": "auth", "token": mint("kim", ttl=-100)})
    assert ws.recv_json()["code"] == "unauthorized"
    assert close_code(ws) == 1008


def test_expired_token_closes_the_session(gated):
    ws = WSClient(gated.port, f"/v1/ws?room=short&token={mint('lee', ttl=2)}")
    hello(ws)
    assert ws.recv_json(timeout=20)["op"] == "joined"
    t0 = time.time()
    msg = ws.recv_json(timeout=10)
    assert msg["code"] == "token_expired"
    assert close_code(ws) == 1008
    assert time.time() - t0 < 6


def test_origin_allow_list(gated):
    def handshake(origin):
        s = socket.create_connection(("127.0.0.1", gated.port), timeout=10)
        req = (b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
        if origin:
            req += b"Origin: " + origin.encode() + b"\r\n"
        s.sendall(req + b"\r\n")
        status = s.recv(4096).split(b" ")[1]
        s.close()
        return int(status)

    assert handshake("https://evil.example") == 403
    assert handshake("https://good.example") == 101
    assert handshake("https://also.example") == 101
    assert handshake(None) == 101  # non-browser clients send no Origin


def test_no_key_and_no_anonymous_refuses_to_start():
    import subprocess, os
    from dmtest import BIN
    r = subprocess.run([os.path.join(BIN, "danmaku-broadcast"), "--allow-anonymous", "false",
                        "--ws-port", "0", "--listen-host", "127.0.0.1"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "allow_anonymous" in r.stderr
