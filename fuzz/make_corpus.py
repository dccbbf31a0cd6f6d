#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz harnesses to fuzz/corpus/<harness>/.

Hand-made valid and near-valid inputs, each file named for what it is; run
again after changing this script (files it no longer makes are not removed,
nor are entries merged in by `make fuzz FUZZ_MERGE=1`). The JWT seeds are
signed by the harness itself (FUZZ_JWT_WRITE_SEEDS), so it must be built
first: `make fuzz-build && python3 fuzz/make_corpus.py`.

Input layouts (see each harness's opening comment):
  fuzz_ws_frames, fuzz_ws_handshake: 1 settings byte, 4 split-seed bytes, data
  fuzz_comment: 1 settings byte, 1 prio byte, data
  fuzz_jwt: the token
"""
import base64
import os
import struct
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def write(harness, name, data):
    d = os.path.join(CORPUS, harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- fuzz_ws_frames -------------------------------------------------------

# Settings byte: bits 0-2 chunk class (0: 1 byte ... 7: any), bits 3-4
# max_message (0: 128, 1: 300, 2: 4096, 3: 65536).
def frames_input(data, chunks=0, max_message=2, seed=0x12345678):
    return bytes([chunks | max_message << 3]) + struct.pack("<I", seed) + data


def frame(opcode, payload=b"", fin=True, mask=b"\0\0\0\0", rsv=0, form=None):
    """A client frame; form forces the 16- or 64-bit length encoding."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    m = 0x80 if mask is not None else 0
    if form == 64 or (form is None and n > 0xFFFF):
        head += bytes([m | 127]) + struct.pack(">Q", n)
    elif form == 16 or (form is None and n >= 126):
        head += bytes([m | 126]) + struct.pack(">H", n)
    else:
        head += bytes([m | n])
    if mask is None:
        return head + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


TEXT, BINARY, CONT, CLOSE, PING, PONG = 1, 2, 0, 8, 9, 10
MASK = b"\x37\xfa\x21\x3d"


def close_payload(code, reason=b""):
    return struct.pack(">H", code) + reason


def frames_seeds():
    join = b'{"op":"join","room":"r1"}'
    seeds = {
        "text": frame(TEXT, join),
        "text-masked": frame(TEXT, join, mask=MASK),
        "fragmented-with-ping": frame(TEXT, b'{"op":', fin=False)
        + frame(PING, b"hb")
        + frame(CONT, b'"ping"}', fin=False, mask=MASK)
        + frame(CONT, b""),
        "utf8-split-across-fragments": frame(TEXT, "caf".encode() + b"\xc3", fin=False)
        + frame(CONT, b"\xa9 \xe2\x82", fin=False)
        + frame(CONT, b"\xac \xf0\x9f\x98\x80"),
        "pipelined": frame(PING, b"")
        + frame(PONG, b"x")
        + frame(TEXT, b'{"op":"ping","id":7}', mask=MASK)
        + frame(CLOSE, close_payload(1000, b"bye")),
        "close-normal": frame(CLOSE, close_payload(1000, "d\xe9part".encode())),
        "close-empty": frame(CLOSE),
        "close-one-byte": frame(CLOSE, b"\x03"),
        "close-code-1005": frame(CLOSE, close_payload(1005)),
        "close-code-4999": frame(CLOSE, close_payload(4999, b"app")),
        "close-bad-utf8": frame(CLOSE, close_payload(1000, b"\xc3\x28")),
        "binary": frame(BINARY, b"\x00\x01\x02"),
        "len16": frame(TEXT, b"a" * 200),
        "len64-nonminimal": frame(TEXT, b"hi", form=64),
        "len16-nonminimal": frame(PING, b"p", form=16),
        "too-big": frame(TEXT, b"b" * 300, form=16),
        "too-big-fragments": frame(TEXT, b"c" * 100, fin=False) + frame(CONT, b"c" * 100),
        "unmasked": frame(TEXT, b"x", mask=None),
        "rsv1": frame(TEXT, b"x", rsv=4),
        "opcode-3": frame(3, b"x"),
        "ping-fragmented": frame(PING, b"x", fin=False),
        "ping-126": frame(PING, b"p" * 126, form=16),
        "cont-without-start": frame(CONT, b"x"),
        "text-inside-message": frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"),
        "overlong-utf8": frame(TEXT, b"\xc0\xaf"),
        "surrogate": frame(TEXT, b"\xed\xa0\x80"),
        "above-10ffff": frame(TEXT, b"\xf4\x90\x80\x80"),
        "truncated-at-fin": frame(TEXT, b"ok\xe2\x82"),
        "bad-utf8-incomplete-frame": frame(TEXT, b"\xff" + b"z" * 60)[:20],
        "len64-top-bit": b"\x81\xff\x80" + b"\0" * 7 + b"\0\0\0\0",
    }
    for i, (name, data) in enumerate(sorted(seeds.items())):
        # Spread the settings: chunk classes 0..7, max_message 128..65536.
        chunks = i % 8
        max_message = 0 if name.startswith("too-big") else (2 if i % 3 else 1)
        write("fuzz_ws_frames", name, frames_input(data, chunks, max_message, 0x9E3779B9 + i))


# ---- fuzz_ws_handshake ----------------------------------------------------

# Settings byte: bits 0-2 chunk class, bits 3-4 max_header (0: 1024,
# 1: 8192, 2: 200, 3: 65536).
def hs_input(data, chunks=0, max_header=1, seed=0x2545F491):
    return bytes([chunks | max_header << 3]) + struct.pack("<I", seed) + data


KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def upgrade(target=b"/v1/ws", extra=b"", version=b"13", key=KEY, http=b"HTTP/1.1"):
    return (b"GET " + target + b" " + http + b"\r\n"
            b"Host: danmaku.example:8081\r\n"
            b"Upgrade: websocket\r\n"
            b"Connection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\n"
            b"Sec-WebSocket-Version: " + version + b"\r\n" + extra + b"\r\n")


def handshake_seeds():
    browser = (b"GET /v1/ws?room=live%3A42&token=eyJhbGciOiJIUzI1NiJ9.e30.sig HTTP/1.1\r\n"
               b"Host: 127.0.0.1:8081\r\n"
               b"Connection: keep-alive, Upgrade\r\n"
               b"Pragma: no-cache\r\n"
               b"User-Agent: Mozilla/5.0\r\n"
               b"Upgrade: websocket\r\n"
               b"Origin: http://127.0.0.1:8081\r\n"
               b"Sec-WebSocket-Version: 13\r\n"
               b"Accept-Encoding: gzip, deflate, br\r\n"
               b"Sec-WebSocket-Key: " + KEY + b"\r\n"
               b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
               b"Sec-WebSocket-Protocol: chat, danmaku.v1\r\n\r\n")
    seeds = {
        "browser-upgrade": browser,
        "minimal-upgrade": upgrade(),
        "upgrade-then-frame": upgrade() + b"\x81\x80\0\0\0\0",
        "upgrade-two-protocol-lines": upgrade(extra=b"Sec-WebSocket-Protocol: a\r\n"
                                              b"sec-websocket-protocol:  danmaku.v1 \r\n"),
        "upgrade-query-escapes": upgrade(b"/v1/ws?room=a%2Db+c&token=%41%42&x&room=dup#frag"),
        "upgrade-bad-escape": upgrade(b"/v1/ws?room=%zz&token=%00"),
        "upgrade-bare-lf": upgrade().replace(b"\r\n", b"\n"),
        "upgrade-leading-crlf": b"\r\n\r\n" + upgrade(),
        "upgrade-version-8": upgrade(version=b"8"),
        "upgrade-no-version": upgrade().replace(b"Sec-WebSocket-Version: 13\r\n", b""),
        "upgrade-bad-key": upgrade(key=b"short=="),
        "upgrade-http10": upgrade(http=b"HTTP/1.0"),
        "upgrade-no-connection": upgrade().replace(b"Connection: Upgrade\r\n", b""),
        "upgrade-content-length": upgrade(extra=b"Content-Length: 5\r\n"),
        "upgrade-content-length-0": upgrade(extra=b"Content-Length: 000\r\n"),
        "upgrade-chunked": upgrade(extra=b"Transfer-Encoding: chunked\r\n"),
        "upgrade-duplicate-host": upgrade(extra=b"Host: other\r\n"),
        "upgrade-long-path": upgrade(b"/" + b"p" * 300),
        "upgrade-obs-fold": upgrade(extra=b"X-A: 1\r\n  folded\r\n"),
        "upgrade-space-before-colon": upgrade(extra=b"X-A : 1\r\n"),
        "healthz": b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        "http10-no-host": b"GET / HTTP/1.0\r\n\r\n",
        "http11-no-host": b"GET / HTTP/1.1\r\n\r\n",
        "post": b"POST /v1/ws HTTP/1.1\r\nHost: x\r\n\r\n",
        "http2": b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        "absolute-target": b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
        "cr-in-header": b"GET / HTTP/1.1\r\nHost: x\ry\r\n\r\n",
        "tls-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        "bad-method-char": b"G@T / HTTP/1.1\r\n\r\n",
        "head-too-big": b"GET /" + b"a" * 250 + b" HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 40,
        # Server answers, for the client side of the same harness.
        "response-101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + ACCEPT + b"\r\n"
                        b"Sec-WebSocket-Protocol: danmaku.v1\r\n\r\n\x81\x02hi",
        "response-101-no-reason": b"HTTP/1.1 101\r\nupgrade: WebSocket\r\n"
                                  b"connection: keep-alive, upgrade\r\n"
                                  b"sec-websocket-accept: " + ACCEPT + b"\r\n\r\n",
        "response-wrong-accept": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: xxxx\r\n\r\n",
        "response-extension": b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              b"Sec-WebSocket-Accept: " + ACCEPT + b"\r\n"
                              b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        "response-426": b"HTTP/1.1 426 Upgrade Required\r\nConnection: Upgrade, close\r\n"
                        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                        b"Content-Length: 4\r\n\r\nold\n",
    }
    for i, (name, data) in enumerate(sorted(seeds.items())):
        max_header = 2 if name == "head-too-big" else (1 if i % 4 else 0)
        write("fuzz_ws_handshake", name, hs_input(data, i % 8, max_header, 0x6C078965 + i))


# ---- fuzz_comment ---------------------------------------------------------

# Settings byte: bits 0-1 max_text_chars (0: 1, 1: 20, 2: 200, 3: 1000),
# bits 2-3 the record's room (0: "r1", 1: "room:A-1", 2: 64 characters,
# 3: the input's own "room"). Then the prio byte.
def comment_input(data, max_text=3, room=0, prio=0):
    return bytes([max_text | room << 2, prio]) + data


def comment_seeds():
    record = (b'{"id":"01HZY3V2K0Q8T6S4R2P0N8M6K4","room":"r1","uid":"user-1",'
              b'"name":"Ada","text":"hello","color":"#ffffff","mode":"scroll",'
              b'"size":"normal","ts":1700000000123,"vt":5000,"prio":2}')
    seeds = {
        "post-minimal": (b'{"text":"hello"}', 3, 0),
        "post-all-fields": (b'{"text":"caf\\u00e9 \xf0\x9f\x8e\x89","color":"#A1b2C3",'
                            b'"mode":"top","size":"large","vt":123456}', 2, 0),
        "post-max-1": (b'{"text":"\xe7\x88\x86"}', 0, 0),
        "post-blank": (b'{"text":" \\u3000\\u200b"}', 3, 0),
        "post-control": (b'{"text":"a\\u0007b"}', 3, 0),
        "post-c1-control": (b'{"text":"a\\u0085b"}', 3, 0),
        "post-too-long": (b'{"text":"' + b"x" * 25 + b'"}', 1, 0),
        "post-unknown-field": (b'{"text":"hi","' + b"k" * 80 + b'":1}', 3, 0),
        "post-duplicate": (b'{"text":"a","text":"b"}', 3, 0),
        "post-vt-negative": (b'{"text":"a","vt":-1}', 3, 0),
        "post-vt-float": (b'{"text":"a","vt":1.5}', 3, 0),
        "post-bad-color": (b'{"text":"a","color":"#GGGGGG"}', 3, 0),
        "post-bad-mode": (b'{"text":"a","mode":"side","size":"huge"}', 3, 0),
        "post-array": (b'[{"text":"a"}]', 3, 0),
        "post-invalid-json": (b'{"text":"a",', 3, 0),
        "post-invalid-utf8": (b'{"text":"\xc3\x28"}', 3, 0),
        "msg-join": (b'{"op":"join","room":"live:42","offset":17,"epoch":1700000000}', 3, 0),
        "msg-leave": (b'{"op":"leave","room":"r1"}', 3, 0),
        "msg-auth": (b'{"op":"auth","token":"eyJhbGciOiJIUzI1NiJ9.e30.x"}', 3, 0),
        "msg-ping-id": (b'{"op":"ping","id":9223372036854775807}', 3, 0),
        "msg-bad-room": (b'{"op":"join","room":"no spaces"}', 3, 0),
        "msg-offset-string": (b'{"op":"join","room":"r1","offset":"1"}', 3, 0),
        "record-comment": (record, 3, 0),
        "record-own-room": (record.replace(b'"room":"r1"', b'"room":"room:A-1"'), 3, 3),
        "record-other-room": (record, 3, 1),
        "record-retract": (b'{"type":"retract","room":"r1","id":"01HZY3V2K0Q8T6S4R2P0N8M6K4",'
                           b'"by":"mod","ts":1}', 3, 0),
        "record-retract-no-id": (b'{"type":"retract","room":"r1"}', 3, 0),
        "record-retract-bad-id": (b'{"type":"retract","room":"r1","id":"a\\"b"}', 3, 0),
        "record-unknown-type": (b'{"type":"mute","room":"r1","uid":"u"}', 3, 0),
        "record-prio-99": (b'{"room":"r1","prio":99,"id":"' + b"A" * 27 + b'"}', 3, 0),
    }
    for i, (name, (data, max_text, room)) in enumerate(sorted(seeds.items())):
        write("fuzz_comment", name, comment_input(data, max_text, room, i % 10))


# ---- fuzz_jwt -------------------------------------------------------------

def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def jwt_seeds():
    h = b64url(b'{"alg":"HS256","typ":"JWT"}')
    p = b64url(b'{"sub":"u1","exp":1700003600}')
    hand = {
        "garbage-dots": b"a.b.c",
        "empty-segments": b"..",
        "two-segments": h + b"." + p,
        "four-segments": h + b"." + p + b".c2ln.eA",
        "padded": h + b"==." + p + b".c2ln",
        "header-not-object": b64url(b'["HS256"]') + b"." + p + b".c2ln",
        "kid-not-string": b64url(b'{"alg":"HS256","kid":7}') + b"." + p + b".c2ln",
        "kid-path": b64url(b'{"alg":"HS256","kid":"../../etc/passwd"}') + b"." + p + b".c2ln",
        "duplicate-alg": b64url(b'{"alg":"none","alg":"HS256"}') + b"." + p + b".c2ln",
    }
    for name, data in hand.items():
        write("fuzz_jwt", name, data)
    harness = os.environ.get("FUZZ_JWT", os.path.join(ROOT, "build", "fuzz", "fuzz_jwt"))
    if not os.access(harness, os.X_OK):
        sys.exit(f"make_corpus.py: {harness} not built; run `make fuzz-build` first")
    env = dict(os.environ, FUZZ_JWT_WRITE_SEEDS=os.path.join(CORPUS, "fuzz_jwt"))
    subprocess.run([harness, "-runs=0"], env=env, cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    frames_seeds()
    handshake_seeds()
    comment_seeds()
    jwt_seeds()
    for h in sorted(os.listdir(CORPUS)):
        print(f"{h}: {len(os.listdir(os.path.join(CORPUS, h)))} files")


if __name__ == "__main__":
    main()
