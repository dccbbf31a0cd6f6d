"""Bad input, each with its expected reaction, and never a crash, leak or
stall: malformed and oversized HTTP requests, headers and bodies on the
ingest node; JSON edge cases of the comment body; JWT attacks through the
HTTP API; slowloris on HTTP and on the WebSocket handshake; floods past the
per-address and per-node connection limits of both nodes; and running out
of file descriptors (accepting pauses instead of spinning, and resumes by
itself).

Every table row is its own test and ends by checking that the node still
answers; every node a test starts must exit cleanly with no sanitizer
report. The JWT rows here go through the HTTP API; the verifier's own
rules are unit-tested in tests/unit/test_jwt.c. WebSocket frame rules are
in test_rfc6455.py."""

import base64
import hashlib
import hmac
import json
import os
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from dmtest import BIN, ROOT, SECRET_FILE, WSClient, metric, mint, start_broadcast, start_ingest

REQUEST_TIMEOUT_MS = 1500  # http_request_timeout_ms of the ingest nodes here
LEEWAY = 5                 # jwt_leeway_s of the ingest nodes here
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
RS_PRIVATE = os.path.join(FIXTURES, "jwt_rs256.pem")
RS_PUBLIC = os.path.join(FIXTURES, "jwt_rs256.pub.pem")
RS_OTHER_PRIVATE = os.path.join(FIXTURES, "jwt_rs256_kid2.pem")
ES_PRIVATE = os.path.join(FIXTURES, "jwt_es256.pem")
KID2_SECRET_FILE = os.path.join(FIXTURES, "dev-secret-kid2.txt")
ISSUER, AUDIENCE = "https://issuer.example", "danmaku"


def _secret(path):
    with open(path, "rb") as f:
        return f.read().rstrip(b"\n")


SECRET = _secret(SECRET_FILE)
KID2_SECRET = _secret(KID2_SECRET_FILE)


# ---------------------------------------------------------------------------
# Nodes


@pytest.fixture(scope="module")
def ingest():
    """One worker, so that the connection metrics are exact at once."""
    n = start_ingest("--workers", "1", "--http-request-timeout-ms", str(REQUEST_TIMEOUT_MS),
                     "--jwt-leeway-s", str(LEEWAY))
    yield n
    n.assert_clean_exit()


@pytest.fixture(scope="module")
def strict_ingest():
    """Issuer and audience required; a key directory holds kid k2."""
    keys = tempfile.mkdtemp(prefix="dm-keys-")
    shutil.copy(KID2_SECRET_FILE, os.path.join(keys, "k2.key"))
    n = start_ingest("--workers", "1", "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE,
                     "--jwt-key-dir", keys, "--jwt-leeway-s", str(LEEWAY))
    yield n
    n.assert_clean_exit()
    shutil.rmtree(keys)


@pytest.fixture(scope="module")
def rs_ingest():
    """RS256 pinned, verified with the RSA public key."""
    n = start_ingest("--workers", "1", "--jwt-alg", "RS256", "--jwt-key-file", RS_PUBLIC)
    yield n
    n.assert_clean_exit()


def eventually(fn, want, timeout=3.0):
    """fn() once it returns want (a connection a client just closed may not
    be seen closed by the node yet); the last value when it never does."""
    deadline = time.time() + timeout
    while True:
        got = fn()
        if got == want or time.time() > deadline:
            return got
        time.sleep(0.05)


def open_connections(port):
    """danmaku_http_connections, which counts the /metrics request itself."""
    return metric(port, "danmaku_http_connections")


def healthy(port, source=None):
    """The node answers a fresh connection."""
    c = Conn(port, source=source)
    c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = c.response()
    c.close()
    assert status == 200 and json.loads(body) == {"status": "ok"}, (status, body)


# ---------------------------------------------------------------------------
# A raw HTTP/1.1 client


class Conn:
    """One TCP connection; bytes go out exactly as given."""

    def __init__(self, port, source=None, timeout=5):
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout,
            source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.time()))
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("closed by the node")
        self.buf += chunk

    def response(self, timeout=5):
        """(status, {lower-case name: value}, body bytes) of the next answer."""
        deadline = time.time() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        version, status = lines[0].split(" ", 2)[:2]
        headers = {}
        for line in lines[1:]:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
        if int(status) in (100, 204, 304):
            length = 0
        elif "content-length" in headers:
            length = int(headers["content-length"])
        else:  # HTTP/1.0 style: the body ends with the connection
            try:
                while True:
                    self._fill(deadline)
            except EOFError:
                pass
            length = len(self.buf)
        while len(self.buf) < length:
            self._fill(deadline)
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(status), headers, body

    def closed(self, timeout=3):
        """True when the node closes the connection (EOF or RST) within timeout."""
        deadline = time.time() + timeout
        try:
            while time.time() < deadline:
                self._fill(deadline)
        except EOFError:
            return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        return False

    def close(self):
        self.sock.close()


def request(method="GET", path="/healthz", headers=(), body=b"", version="HTTP/1.1"):
    lines = [f"{method} {path} {version}".encode(), b"Host: x"]
    lines += [h if isinstance(h, bytes) else h.encode() for h in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def with_length(value):
    """A valid POST whose Content-Length header says value instead."""
    return post_raw(GOOD_BODY, "TOKEN").replace(b"Content-Length: 13", b"Content-Length: " + value)


def post_raw(body, token, content_type="application/json", extra=()):
    headers = [f"Authorization: Bearer {token}", f"Content-Type: {content_type}",
               f"Content-Length: {len(body)}"] + list(extra)
    return request("POST", "/v1/rooms/bad-input/danmaku", headers, body)


# ---------------------------------------------------------------------------
# Malformed and oversized HTTP

GOOD_BODY = b'{"text":"hi"}'

# Each row: request bytes (TOKEN is replaced by a valid token), the statuses
# allowed, the JSON error code (None: evhttp's own HTML answer, or no
# check), and whether the node must close the connection after answering.
HTTP_ROWS = [
    # -- request line
    pytest.param(b"GARBAGE\r\n\r\n", {400}, None, True, id="request-line-one-word-400"),
    pytest.param(b"GET\r\n\r\n", {400}, None, True, id="request-line-method-only-400"),
    pytest.param(b"GET /healthz\r\n\r\n", {400}, None, True, id="http-0.9-request-line-400"),
    pytest.param(b"GET /healthz HTTP/\r\n\r\n", {400}, None, True, id="version-without-number-400"),
    pytest.param(b"GET /healthz HTTP/2.0\r\n\r\n", {400, 505}, None, True, id="http-2.0-refused"),
    pytest.param(b"GET /healthz HTTP/9.9\r\n\r\n", {400, 505}, None, True, id="http-9.9-refused"),
    pytest.param(b"GET\t/healthz\tHTTP/1.1\r\n\r\n", {400}, None, True,
                 id="tabs-in-request-line-400"),
    pytest.param(b"GET /heal\x00thz HTTP/1.1\r\nHost: x\r\n\r\n", {400}, None, True,
                 id="nul-in-target-400"),
    pytest.param(b"\r\n\r\n", {400}, None, True, id="empty-request-line-400"),
    pytest.param(bytes(range(256)), {400}, None, True, id="binary-garbage-400"),
    # No line end ever comes: the request deadline answers.
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, {408},
                 "request_timeout", True, id="tls-client-hello-408-at-the-deadline"),
    pytest.param(request(path="/" + "a" * 20000), {400, 413, 414, 431}, None, True,
                 id="20k-target-refused"),
    pytest.param(request(path="/v1/rooms/%zz"), {400}, "invalid_room", False,
                 id="bad-percent-escape-in-room-400"),
    pytest.param(request(path="/v1/rooms/" + "r" * 65), {400}, "invalid_room", False,
                 id="65-char-room-400"),
    # evhttp takes an absolute-form target for a proxy request: answered, then closed.
    pytest.param(request(path="http://x/healthz"), {200}, None, True, id="absolute-form-target-ok"),
    pytest.param(request(version="HTTP/1.0").replace(b"Host: x\r\n", b""), {200}, None, True,
                 id="http-1.0-answered-then-closed"),
    # -- methods
    pytest.param(request("FOO", "/"), {501}, None, True, id="unknown-method-501"),
    pytest.param(request("get"), {501}, None, True, id="lower-case-method-501"),
    pytest.param(request("TRACE", "/"), {501}, None, True, id="trace-501"),
    pytest.param(request("CONNECT", "x:443"), {501}, None, True, id="connect-501"),
    pytest.param(request("PUT", "/v1/rooms/r1/danmaku", ["Content-Length: 0"]), {405},
                 "method_not_allowed", False, id="put-comments-405"),
    pytest.param(request("PATCH", "/v1/rooms/r1/danmaku", ["Content-Length: 0"]), {405},
                 "method_not_allowed", False, id="patch-comments-405"),
    pytest.param(request("POST", "/healthz", ["Content-Length: 0"]), {405},
                 "method_not_allowed", False, id="post-healthz-405"),
    pytest.param(request("DELETE", "/metrics"), {405}, "method_not_allowed", False,
                 id="delete-metrics-405"),
    # -- Content-Length
    pytest.param(request("POST", "/v1/rooms/r1/danmaku", ["Authorization: Bearer TOKEN",
                                                          "Content-Type: application/json"],
                         GOOD_BODY), {411}, "length_required", True,
                 id="post-without-content-length-411"),
    pytest.param(post_raw(GOOD_BODY, "TOKEN", extra=["Content-Length: 13"]), {400}, "bad_request",
                 True, id="content-length-twice-same-400"),
    pytest.param(post_raw(GOOD_BODY, "TOKEN", extra=["Content-Length: 5"]), {400}, "bad_request",
                 True, id="content-length-twice-different-400"),
    pytest.param(with_length(b"-1"),
                 {400}, None, True, id="content-length-negative-400"),
    pytest.param(with_length(b"abc"),
                 {400}, None, True, id="content-length-not-a-number-400"),
    pytest.param(with_length(b"+13"),
                 {400}, "bad_request", True, id="content-length-with-sign-400"),
    pytest.param(with_length(b"0x0d"),
                 {400}, None, True, id="content-length-hex-400"),
    pytest.param(with_length(b"99999999999999999999999"),
                 {413}, None, True, id="content-length-overflowing-413"),
    pytest.param(with_length(b"5000000"),
                 {413}, None, True, id="content-length-5MB-413-before-the-body"),
    pytest.param(post_raw(GOOD_BODY, "TOKEN").replace(b"Length: 13", b"Length : 13"),
                 {400}, "bad_request", True, id="space-before-colon-400"),
    # -- Transfer-Encoding
    pytest.param(post_raw(b"", "TOKEN", extra=["Transfer-Encoding: chunked"])
                 .replace(b"Content-Length: 0\r\n", b"") + b"d\r\n" + GOOD_BODY + b"\r\n0\r\n\r\n",
                 {201}, None, False, id="chunked-body-201"),
    pytest.param(post_raw(GOOD_BODY, "TOKEN", extra=["Transfer-Encoding: chunked"])
                 .replace(GOOD_BODY, b"d\r\n" + GOOD_BODY + b"\r\n0\r\n\r\n"),
                 {400}, None, True, id="content-length-and-chunked-400"),
    pytest.param(post_raw(b"", "TOKEN", extra=["Transfer-Encoding: chunked"])
                 .replace(b"Content-Length: 0\r\n", b"") + b"zz\r\n" + GOOD_BODY + b"\r\n0\r\n\r\n",
                 {400, 413}, None, True, id="chunk-size-not-hex-refused"),
    pytest.param(post_raw(b"", "TOKEN", extra=["Transfer-Encoding: chunked"])
                 .replace(b"Content-Length: 0\r\n", b"") + b"ffffffffffffffff\r\n" + GOOD_BODY,
                 {413}, None, True, id="chunk-size-2^64-1-413"),
    pytest.param(post_raw(b"", "TOKEN", extra=["Transfer-Encoding: chunked"])
                 .replace(b"Content-Length: 0\r\n", b"")
                 + (b"bb8\r\n" + b" " * 3000 + b"\r\n") * 2 + b"0\r\n\r\n",
                 {413}, "too_large", False, id="chunked-6000-bytes-over-max-body-413"),
    pytest.param(post_raw(b"", "TOKEN", extra=["Transfer-Encoding: gzip"])
                 .replace(b"Content-Length: 0\r\n", b"") + GOOD_BODY,
                 {501}, "not_implemented", True, id="transfer-coding-gzip-501"),
    pytest.param(post_raw(GOOD_BODY, "TOKEN", extra=["Transfer-Encoding: gzip"]),
                 {400}, None, True, id="transfer-coding-gzip-with-length-400"),
    pytest.param(post_raw(b"", "TOKEN", extra=["Transfer-Encoding: chunked",
                                               "Transfer-Encoding: chunked"])
                 .replace(b"Content-Length: 0\r\n", b"") + b"d\r\n" + GOOD_BODY + b"\r\n0\r\n\r\n",
                 {400}, None, True, id="transfer-encoding-twice-400"),
    # -- headers
    pytest.param(request(headers=["X-Big: " + "a" * 20000]), {400, 413, 431}, None, True,
                 id="20k-header-refused"),
    pytest.param(request(headers=["X-A: b"] * 3000), {400, 413, 431}, None, True,
                 id="3000-headers-refused"),
    pytest.param(request(headers=["X-Big: " + "a" * 8000]), {200}, None, False,
                 id="8k-header-accepted"),
    pytest.param(request(headers=["Host x"]), {400}, None, True, id="header-without-colon-400"),
    pytest.param(request(headers=["X-\x01: y"]), {400}, "bad_request", True,
                 id="control-char-in-header-name-400"),
    pytest.param(request(headers=[": y"]), {400}, "bad_request", True, id="empty-header-name-400"),
    pytest.param(request(headers=["Host: y"]), {400}, "bad_request", True, id="host-twice-400"),
    pytest.param(request(headers=["X-A: a", " folded"]), {200}, None, False,
                 id="obsolete-line-folding-joined"),
    pytest.param(post_raw(GOOD_BODY, "TOKEN", extra=["Expect: 200-ok"]), {417}, None, True,
                 id="unknown-expectation-417"),
    # -- bodies
    pytest.param(post_raw(GOOD_BODY + b" " * (4096 - len(GOOD_BODY)), "TOKEN"), {201}, None, False,
                 id="body-exactly-max-body-201"),
    pytest.param(post_raw(GOOD_BODY + b" " * (4097 - len(GOOD_BODY)), "TOKEN"), {413}, "too_large",
                 False, id="body-one-over-max-body-413"),
    pytest.param(post_raw(b'{"text":"' + b"a" * 8000 + b'"}', "TOKEN"), {413}, "too_large",
                 False, id="body-under-twice-max-body-413"),
    # Past twice max_body evhttp refuses it from Content-Length alone: a
    # request never costs more memory than that.
    pytest.param(post_raw(b'{"text":"' + b"a" * 200000 + b'"}', "TOKEN")[:-150000],
                 {413}, None, True, id="body-200k-413-without-reading-it"),
    pytest.param(post_raw(b"x" * (1024 * 1024 + 2), "TOKEN")[:-(1024 * 1024 + 2 - 1000)],
                 {413}, None, True, id="body-over-1MB-413-without-reading-it"),
    pytest.param(post_raw(GOOD_BODY, "TOKEN", "text/plain"), {415}, "unsupported_media_type", False,
                 id="text-plain-415"),
    pytest.param(post_raw(GOOD_BODY, "TOKEN", "application/jsonx"), {415},
                 "unsupported_media_type", False, id="application-jsonx-415"),
    pytest.param(post_raw(GOOD_BODY, "TOKEN", "multipart/form-data; boundary=x"), {415},
                 "unsupported_media_type", False, id="multipart-415"),
    pytest.param(post_raw(GOOD_BODY, "TOKEN").replace(b"Content-Type: application/json\r\n", b""),
                 {415}, "unsupported_media_type", False, id="no-content-type-415"),
    pytest.param(post_raw(GOOD_BODY, "TOKEN", "Application/JSON; charset=utf-8"), {201}, None,
                 False, id="content-type-case-and-charset-201"),
    pytest.param(post_raw(b"", "TOKEN"), {400}, "invalid_body", False, id="empty-body-400"),
]


def roundtrip(port, raw, token=None):
    c = Conn(port)
    c.send(raw.replace(b"TOKEN", (token or "").encode()))
    try:
        return c, c.response(timeout=8)
    except (EOFError, ConnectionResetError) as e:
        c.close()
        pytest.fail(f"no answer: {e}")


@pytest.mark.parametrize("raw,statuses,code,closes", HTTP_ROWS)
def test_malformed_http(ingest, raw, statuses, code, closes):
    token = mint("hal") if b"TOKEN" in raw else None
    c, (status, headers, body) = roundtrip(ingest.port, raw, token)
    assert status in statuses, (status, body[:200])
    if code is not None:
        assert headers.get("content-type", "").startswith("application/json")
        assert json.loads(body)["error"] == code, body
    if closes:
        assert c.closed(), "the node kept a connection whose framing it cannot trust"
    else:
        # Still usable: a second request on the same connection is answered.
        c.send(request())
        assert c.response()[0] == 200
    c.close()
    healthy(ingest.port)


def test_pipelined_requests_answered_in_order(ingest):
    c = Conn(ingest.port)
    c.send(request(path="/healthz") + request(path="/nope") + request(path="/readyz"))
    assert [c.response()[0] for _ in range(3)] == [200, 404, 200]
    c.close()


def test_expect_100_continue_then_body(ingest):
    token = mint("ida")
    c = Conn(ingest.port)
    c.send(post_raw(b"", token, extra=["Expect: 100-continue"])
           .replace(b"Content-Length: 0", b"Content-Length: 13"))
    assert c.response()[0] == 100
    c.send(GOOD_BODY)
    status, _, body = c.response()
    assert status == 201, body
    c.close()


def test_client_vanishing_mid_request_leaves_no_trace(ingest):
    """Half a head, half a body, a reset: nothing is left open."""
    before = eventually(lambda: open_connections(ingest.port), 1)
    token = mint("ida")
    for cut in (10, 60, len(post_raw(GOOD_BODY, token)) - 3):
        c = Conn(ingest.port)
        c.send(post_raw(GOOD_BODY, token)[:cut])
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()  # RST
    assert eventually(lambda: open_connections(ingest.port), before) == before
    healthy(ingest.port)


# ---------------------------------------------------------------------------
# JSON edge cases of the comment body


def _text(n, ch="弾"):
    return json.dumps({"text": ch * n}, ensure_ascii=False).encode()


# Each row: the raw body, the status, the error code (None with 201).
JSON_ROWS = [
    pytest.param(b'{"text":5}', 400, "invalid_body", id="text-number"),
    pytest.param(b'{"text":null}', 400, "invalid_body", id="text-null"),
    pytest.param(b'{"text":true}', 400, "invalid_body", id="text-bool"),
    pytest.param(b'{"text":{"a":"b"}}', 400, "invalid_body", id="text-object"),
    pytest.param(b'{"text":["hi"]}', 400, "invalid_body", id="text-array"),
    pytest.param(b"{}", 400, "invalid_body", id="no-text"),
    pytest.param(b"[]", 400, "invalid_body", id="body-array"),
    pytest.param(b"null", 400, "invalid_body", id="body-null"),
    pytest.param(b'"hi"', 400, "invalid_body", id="body-string"),
    pytest.param(b"42", 400, "invalid_body", id="body-number"),
    pytest.param(b"   ", 400, "invalid_body", id="body-only-whitespace"),
    pytest.param(b'{"text":"a","vt":1e400}', 400, "invalid_body", id="vt-overflowing-real"),
    pytest.param(b'{"text":"a","vt":99999999999999999999}', 400, "invalid_body",
                 id="vt-integer-over-int64"),
    pytest.param(b'{"text":"a","vt":9223372036854775807}', 201, None, id="vt-int64-max"),
    pytest.param(b'{"text":"a","vt":-1}', 400, "invalid_body", id="vt-negative"),
    pytest.param(b'{"text":"a","vt":1.5}', 400, "invalid_body", id="vt-fraction"),
    pytest.param(b'{"text":"a","vt":"5"}', 400, "invalid_body", id="vt-string"),
    pytest.param(b'{"text":"a","vt":NaN}', 400, "invalid_body", id="vt-nan"),
    pytest.param(b'{"text":"a","vt":Infinity}', 400, "invalid_body", id="vt-infinity"),
    pytest.param(b'{"text":"a","text":"b"}', 400, "invalid_body", id="duplicate-key"),
    pytest.param(b'{"text":"a\x00b"}', 400, "invalid_body", id="raw-nul-in-string"),
    pytest.param(b'{"text":"a\\u0000b"}', 400, "invalid_body", id="escaped-nul"),
    pytest.param(b'{"text":"a"}\x00', 400, "invalid_body", id="nul-after-object"),
    pytest.param(b'{"text":"\xff"}', 400, "invalid_body", id="utf8-invalid-byte-ff"),
    pytest.param(b'{"text":"\xc3\x28"}', 400, "invalid_body", id="utf8-bad-continuation"),
    pytest.param(b'{"text":"\xe2\x82"}', 400, "invalid_body", id="utf8-truncated-sequence"),
    pytest.param(b'{"text":"\xc0\xaf"}', 400, "invalid_body", id="utf8-overlong-2-byte-slash"),
    pytest.param(b'{"text":"\xe0\x80\xaf"}', 400, "invalid_body", id="utf8-overlong-3-byte"),
    pytest.param(b'{"text":"\xf0\x80\x80\xaf"}', 400, "invalid_body", id="utf8-overlong-4-byte"),
    pytest.param(b'{"text":"\xed\xa0\x80"}', 400, "invalid_body", id="utf8-raw-surrogate"),
    pytest.param(b'{"text":"\xf4\x90\x80\x80"}', 400, "invalid_body", id="utf8-above-U+10FFFF"),
    pytest.param(b'{"text":"\\ud800"}', 400, "invalid_body", id="escaped-lone-high-surrogate"),
    pytest.param(b'{"text":"\\udc00x"}', 400, "invalid_body", id="escaped-lone-low-surrogate"),
    pytest.param(b'{"text":"\\ud83d\\ude00"}', 201, None, id="escaped-surrogate-pair"),
    pytest.param('{"text":"\U0001F600 弾幕"}'.encode(), 201, None, id="raw-4-byte-utf8"),
    pytest.param(b'{"text":""}', 400, "invalid_body", id="empty-text"),
    pytest.param(b'{"text":"   "}', 400, "invalid_body", id="blank-text"),
    pytest.param(b'{"text":"\\u3000\\u00a0"}', 400, "invalid_body", id="unicode-blank-text"),
    pytest.param(b'{"text":"a\\u0007b"}', 400, "invalid_body", id="control-char-bel"),
    pytest.param(b'{"text":"a\\u007fb"}', 400, "invalid_body", id="control-char-del"),
    pytest.param(b'{"text":"a\\u0085b"}', 400, "invalid_body", id="control-char-c1"),
    pytest.param(b'{"text":"a\\nb"}', 400, "invalid_body", id="newline-in-text"),
    pytest.param(_text(100), 201, None, id="text-100-code-points-300-bytes"),
    pytest.param(_text(101), 400, "invalid_body", id="text-101-code-points"),
    pytest.param(_text(100, "\U0001F600"), 201, None, id="text-100-emoji-400-bytes"),
    pytest.param(_text(101, "\U0001F600"), 400, "invalid_body", id="text-101-emoji"),
    pytest.param(_text(101, "a"), 400, "invalid_body", id="text-101-ascii"),
    pytest.param(b'{"text":"a","extra":1}', 400, "invalid_body", id="unknown-field"),
    pytest.param(b'{"text":"a","TEXT":"b"}', 400, "invalid_body", id="field-names-case-sensitive"),
    pytest.param(b'{"text":"a","prio":5}', 400, "invalid_body", id="prio-never-from-the-body"),
    pytest.param(b'{"text":"a","uid":"root"}', 400, "invalid_body", id="uid-never-from-the-body"),
    pytest.param(b'{"text":"a"} x', 400, "invalid_body", id="trailing-garbage"),
    pytest.param(b'{"text":"a"}{"text":"b"}', 400, "invalid_body", id="two-objects"),
    pytest.param(b'{"text":"a"}\r\n\t ', 201, None, id="trailing-whitespace"),
    pytest.param(b'\xef\xbb\xbf{"text":"a"}', 400, "invalid_body", id="byte-order-mark"),
    pytest.param(b"{'text':'a'}", 400, "invalid_body", id="single-quotes"),
    pytest.param(b'{"text":"a",}', 400, "invalid_body", id="trailing-comma"),
    pytest.param(b'{"text":"a" /* c */}', 400, "invalid_body", id="comment"),
    pytest.param(b'{"text":"a"', 400, "invalid_body", id="unterminated-object"),
    pytest.param(b'{"text":"a', 400, "invalid_body", id="unterminated-string"),
    pytest.param(b"[" * 2047 + b"]" * 2047, 400, "invalid_body", id="2047-nested-arrays"),
    pytest.param(b'{"text":"a","vt":' + b"[" * 1500 + b"]" * 1500 + b"}", 400, "invalid_body",
                 id="deep-nesting-in-a-field"),
    pytest.param(b'{"text":"a","color":"#GGGGGG"}', 400, "invalid_body", id="color-not-hex"),
    pytest.param(b'{"text":"a","color":"#fff"}', 400, "invalid_body", id="color-short-form"),
    pytest.param(b'{"text":"a","color":"red"}', 400, "invalid_body", id="color-name"),
    pytest.param(b'{"text":"a","color":null}', 400, "invalid_body", id="color-null"),
    pytest.param(b'{"text":"a","color":"#aBcDeF"}', 201, None, id="color-mixed-case"),
    pytest.param(b'{"text":"a","mode":"diagonal"}', 400, "invalid_body", id="mode-unknown"),
    pytest.param(b'{"text":"a","mode":"TOP"}', 400, "invalid_body", id="mode-case-sensitive"),
    pytest.param(b'{"text":"a","size":1}', 400, "invalid_body", id="size-number"),
    pytest.param(b'{"text":"a","mode":"top","size":"large","vt":0}', 201, None,
                 id="every-optional-field"),
]


@pytest.fixture(scope="module")
def token():
    return mint("json-edge")


@pytest.mark.parametrize("body,status,code", JSON_ROWS)
def test_json_body(ingest, token, body, status, code):
    c, (got, headers, answer) = roundtrip(ingest.port, post_raw(body, token))
    c.close()
    assert got == status, answer
    if code is None:
        assert set(json.loads(answer)) >= {"id", "room", "partition", "offset", "ts"}
    else:
        err = json.loads(answer)
        assert err["error"] == code and isinstance(err["message"], str), err
    healthy(ingest.port)


# ---------------------------------------------------------------------------
# JWT attacks through the HTTP API


def b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwt(claims, header=None, key=SECRET, alg="HS256", sign_as=None):
    """A token: header and claims as given (dicts, or bytes taken as they
    are), signed with HMAC (sign_as: HS256/384/512, default from alg) or
    unsigned when key is None."""
    header = {"alg": alg, "typ": "JWT"} if header is None else header
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    signing = (b64(h) + "." + b64(p)).encode()
    if key is None:
        return signing.decode() + "."
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384,
              "HS512": hashlib.sha512}[sign_as or alg]
    return signing.decode() + "." + b64(hmac.new(key, signing, digest).digest())


def claims(**extra):
    c = {"sub": "mallory", "exp": int(time.time()) + 600}
    c.update(extra)
    return {k: v for k, v in c.items() if v is not None}


def tool_mint(alg, key_file, *extra):
    args = [os.path.join(BIN, "danmaku-token"), "mint", "--alg", alg, "--key-file", key_file,
            "--sub", "mallory", "--ttl", "600"] + list(extra)
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def post_with(port, authorization):
    """POST a valid comment with the given Authorization header value(s)
    (None: no header; a list: one header line each)."""
    values = [] if authorization is None else (
        authorization if isinstance(authorization, list) else [authorization])
    headers = [b"Authorization: " + (v if isinstance(v, bytes) else v.encode()) for v in values]
    headers += [b"Content-Type: application/json", b"Content-Length: 13"]
    c = Conn(port)
    c.send(request("POST", "/v1/rooms/jwt-room/danmaku", headers, GOOD_BODY))
    status, hdrs, body = c.response()
    c.close()
    return status, hdrs, json.loads(body)


def swap_payload(signed, other):
    """signed's header and signature around other's payload."""
    h, _, sig = signed.split(".")
    return ".".join([h, other.split(".")[1], sig])


def expect(status, reason=None):
    return (status, reason)


def _now():
    return int(time.time())


# Rows against the HS256 node (leeway 5 s): a function making the
# Authorization value (evaluated at run time, for the clock edges), then
# the expected status and, for 401, the reason in the message.
HS_ROWS = [
    pytest.param(lambda: "Bearer " + jwt(claims()), expect(201), id="valid-hs256-201"),
    pytest.param(lambda: "Bearer " + jwt(claims(), alg="none", key=None),
                 expect(401, "alg_mismatch"), id="alg-none-unsigned"),
    pytest.param(lambda: "Bearer " + jwt(claims(), {"alg": "none"}, sign_as="HS256"),
                 expect(401, "alg_mismatch"), id="alg-none-with-a-signature"),
    pytest.param(lambda: "Bearer " + jwt(claims(), {"alg": "None"}, key=None),
                 expect(401, "alg_mismatch"), id="alg-None-capitalised"),
    pytest.param(lambda: "Bearer " + jwt(claims(), {"alg": "NONE"}, key=None),
                 expect(401, "alg_mismatch"), id="alg-NONE"),
    pytest.param(lambda: "Bearer " + jwt(claims(), {"alg": "HS256"}, key=None),
                 expect(401, "bad_signature"), id="hs256-header-empty-signature"),
    pytest.param(lambda: "Bearer " + jwt(claims(), alg="HS512"), expect(401, "alg_mismatch"),
                 id="hs512-token-to-hs256-node"),
    pytest.param(lambda: "Bearer " + jwt(claims(), alg="HS384"), expect(401, "alg_mismatch"),
                 id="hs384-token-to-hs256-node"),
    pytest.param(lambda: "Bearer " + tool_mint("RS256", RS_PRIVATE), expect(401, "alg_mismatch"),
                 id="rs256-token-to-hs256-node"),
    pytest.param(lambda: "Bearer " + tool_mint("ES256", ES_PRIVATE), expect(401, "alg_mismatch"),
                 id="es256-token-to-hs256-node"),
    pytest.param(lambda: "Bearer " + jwt(claims(), {"typ": "JWT"}, sign_as="HS256"),
                 expect(401, "malformed"), id="header-without-alg"),
    pytest.param(lambda: "Bearer " + jwt(claims(), key=b"not the secret at all, but long enough"),
                 expect(401, "bad_signature"), id="wrong-secret"),
    pytest.param(lambda: "Bearer " + swap_payload(jwt(claims()),
                                                  jwt(claims(sub="admin", role="admin"))),
                 expect(401, "bad_signature"), id="payload-swapped-under-a-signature"),
    pytest.param(lambda: "Bearer " + jwt(claims()).rsplit(".", 1)[0],
                 expect(401, "malformed"), id="two-segments"),
    pytest.param(lambda: "Bearer " + jwt(claims()) + ".x", expect(401, "malformed"),
                 id="four-segments"),
    pytest.param(lambda: "Bearer a.b.c", expect(401, "malformed"), id="garbage-segments"),
    pytest.param(lambda: "Bearer " + jwt(b"[1,2]"), expect(401, "malformed"), id="payload-array"),
    pytest.param(lambda: "Bearer " + jwt(claims()).replace("-", "+").replace("_", "/") + "==",
                 expect(401, None), id="standard-base64-with-padding"),
    pytest.param(lambda: "Bearer " + "a" * 9000, expect(401, "too_large"), id="9000-byte-token"),
    pytest.param(lambda: "Bearer ", expect(401, None), id="bearer-without-token"),
    pytest.param(lambda: "Bearer " + jwt(claims(exp=None)), expect(401, "missing_exp"),
                 id="no-exp"),
    pytest.param(lambda: "Bearer " + jwt(claims(exp=str(_now() + 600))), expect(401, None),
                 id="exp-as-string"),
    pytest.param(lambda: "Bearer " + jwt(claims(exp=_now() - LEEWAY)), expect(401, "expired"),
                 id="exp-exactly-at-leeway-edge-expired"),
    pytest.param(lambda: "Bearer " + jwt(claims(exp=_now() - LEEWAY + 2)), expect(201),
                 id="exp-within-leeway-201"),
    pytest.param(lambda: "Bearer " + jwt(claims(exp=_now() - 3600)), expect(401, "expired"),
                 id="exp-an-hour-ago"),
    pytest.param(lambda: "Bearer " + jwt(claims(nbf=_now() + LEEWAY)), expect(201),
                 id="nbf-exactly-at-leeway-edge-201"),
    pytest.param(lambda: "Bearer " + jwt(claims(nbf=_now() + LEEWAY + 2)),
                 expect(401, "not_yet_valid"), id="nbf-past-leeway-not-yet-valid"),
    pytest.param(lambda: "Bearer " + jwt(claims(iat=_now() + LEEWAY + 60)),
                 expect(401, "not_yet_valid"), id="iat-in-the-future"),
    pytest.param(lambda: "Bearer " + jwt(claims(sub="")), expect(401, None), id="empty-sub"),
    pytest.param(lambda: "Bearer " + jwt(claims(sub=None)), expect(401, None), id="no-sub"),
    pytest.param(lambda: "Bearer " + jwt(claims(role="root")), expect(401, None),
                 id="unknown-role"),
    pytest.param(lambda: None, expect(401, "missing bearer token"), id="no-authorization"),
    pytest.param(lambda: "Basic dXNlcjpwYXNzd29yZA==", expect(401, "missing bearer token"),
                 id="basic-scheme"),
    pytest.param(lambda: "bearer " + jwt(claims()), expect(201), id="scheme-lower-case-201"),
    pytest.param(lambda: "BEARER " + jwt(claims()), expect(201), id="scheme-upper-case-201"),
    pytest.param(lambda: "Bearer  " + jwt(claims()), expect(201), id="two-spaces-201"),
    pytest.param(lambda: "Bearer" + jwt(claims()), expect(401, "missing bearer token"),
                 id="no-space-after-scheme"),
    pytest.param(lambda: "Bearer " + jwt(claims()) + " x", expect(401, "malformed"),
                 id="trailing-word-after-token"),
    pytest.param(lambda: ["Bearer " + jwt(claims()), "Bearer " + jwt(claims())],
                 expect(400, "bad_request"), id="authorization-twice-400"),
    pytest.param(lambda: ["Bearer " + jwt(claims()), "Bearer forged"],
                 expect(400, "bad_request"), id="authorization-twice-second-forged-400"),
]


def check_auth(port, authorization, want):
    status, headers, body = post_with(port, authorization)
    want_status, reason = want
    assert status == want_status, body
    if status == 401:
        assert body["error"] == "unauthorized"
        assert headers["www-authenticate"].startswith("Bearer")
        if reason is not None:
            assert body["message"] == reason, body
    elif status == 400:
        assert body["error"] == reason, body


@pytest.mark.parametrize("make,want", HS_ROWS)
def test_jwt_hs256(ingest, make, want):
    check_auth(ingest.port, make(), want)
    healthy(ingest.port)


def _pem_bytes(path, strip=False):
    with open(path, "rb") as f:
        data = f.read()
    return data.rstrip(b"\n") if strip else data


RS_ROWS = [
    pytest.param(lambda: "Bearer " + tool_mint("RS256", RS_PRIVATE), expect(201),
                 id="valid-rs256-201"),
    # Algorithm confusion: HMAC keyed with the public key the node holds.
    pytest.param(lambda: "Bearer " + jwt(claims(), key=_pem_bytes(RS_PUBLIC)),
                 expect(401, "alg_mismatch"), id="hs256-keyed-with-the-public-pem"),
    pytest.param(lambda: "Bearer " + jwt(claims(), key=_pem_bytes(RS_PUBLIC, strip=True)),
                 expect(401, "alg_mismatch"), id="hs256-keyed-with-the-public-pem-no-newline"),
    pytest.param(lambda: "Bearer " + jwt(claims(), alg="HS512", key=_pem_bytes(RS_PUBLIC)),
                 expect(401, "alg_mismatch"), id="hs512-keyed-with-the-public-pem"),
    pytest.param(lambda: "Bearer " + jwt(claims(), {"alg": "RS256"}, key=_pem_bytes(RS_PUBLIC),
                                         sign_as="HS256"),
                 expect(401, "bad_signature"), id="rs256-header-hmac-signature"),
    pytest.param(lambda: "Bearer " + jwt(claims(), alg="none", key=None),
                 expect(401, "alg_mismatch"), id="rs-node-alg-none"),
    pytest.param(lambda: "Bearer " + tool_mint("ES256", ES_PRIVATE), expect(401, "alg_mismatch"),
                 id="es256-token-to-rs256-node"),
    pytest.param(lambda: "Bearer " + tool_mint("RS256", RS_OTHER_PRIVATE),
                 expect(401, "bad_signature"), id="rs256-signed-by-another-key"),
    pytest.param(lambda: "Bearer " + jwt(claims()), expect(401, "alg_mismatch"),
                 id="hs256-with-the-dev-secret"),
]


@pytest.mark.parametrize("make,want", RS_ROWS)
def test_jwt_rs256_node(rs_ingest, make, want):
    check_auth(rs_ingest.port, make(), want)
    healthy(rs_ingest.port)


STRICT_ROWS = [
    pytest.param(lambda: jwt(claims(iss=ISSUER, aud=AUDIENCE)), expect(201),
                 id="right-iss-and-aud-201"),
    pytest.param(lambda: jwt(claims(iss="https://evil.example", aud=AUDIENCE)),
                 expect(401, "bad_issuer"), id="wrong-iss"),
    pytest.param(lambda: jwt(claims(aud=AUDIENCE)), expect(401, "bad_issuer"), id="missing-iss"),
    pytest.param(lambda: jwt(claims(iss=ISSUER + "/", aud=AUDIENCE)), expect(401, "bad_issuer"),
                 id="iss-with-trailing-slash"),
    pytest.param(lambda: jwt(claims(iss=[ISSUER], aud=AUDIENCE)), expect(401, "bad_issuer"),
                 id="iss-as-a-list"),
    pytest.param(lambda: jwt(claims(iss=ISSUER, aud="other")), expect(401, "bad_audience"),
                 id="wrong-aud"),
    pytest.param(lambda: jwt(claims(iss=ISSUER)), expect(401, "bad_audience"), id="missing-aud"),
    pytest.param(lambda: jwt(claims(iss=ISSUER, aud=["other", AUDIENCE])), expect(201),
                 id="aud-list-containing-ours-201"),
    pytest.param(lambda: jwt(claims(iss=ISSUER, aud=["other", "more"])),
                 expect(401, "bad_audience"), id="aud-list-without-ours"),
    pytest.param(lambda: jwt(claims(iss=ISSUER, aud=AUDIENCE),
                             {"alg": "HS256", "kid": "k2"}, key=KID2_SECRET),
                 expect(201), id="kid-k2-with-its-key-201"),
    pytest.param(lambda: jwt(claims(iss=ISSUER, aud=AUDIENCE), {"alg": "HS256", "kid": "k2"}),
                 expect(401, "bad_signature"), id="kid-k2-signed-with-the-default-key"),
    pytest.param(lambda: jwt(claims(iss=ISSUER, aud=AUDIENCE), key=KID2_SECRET),
                 expect(401, "bad_signature"), id="no-kid-signed-with-the-k2-key"),
    pytest.param(lambda: jwt(claims(iss=ISSUER, aud=AUDIENCE), {"alg": "HS256", "kid": "k9"}),
                 expect(401, "unknown_kid"), id="unknown-kid"),
    pytest.param(lambda: jwt(claims(iss=ISSUER, aud=AUDIENCE),
                             {"alg": "HS256", "kid": "../dev-secret"}),
                 expect(401, None), id="kid-path-traversal"),
    pytest.param(lambda: jwt(claims(iss=ISSUER, aud=AUDIENCE), {"alg": "HS256", "kid": 2}),
                 expect(401, "malformed"), id="kid-number"),
    pytest.param(lambda: jwt(claims(iss=ISSUER, aud=AUDIENCE), {"alg": "none", "kid": "k2"},
                             key=None),
                 expect(401, "alg_mismatch"), id="kid-k2-alg-none"),
]


@pytest.mark.parametrize("make,want", STRICT_ROWS)
def test_jwt_issuer_audience_and_kid(strict_ingest, make, want):
    check_auth(strict_ingest.port, "Bearer " + make(), want)
    healthy(strict_ingest.port)


# ---------------------------------------------------------------------------
# Slowloris on the ingest node


def trickle(c, data, every=0.2, until=6.0):
    """Sends data a byte at a time; returns the seconds until the node
    hung up (None: it never did within `until`)."""
    start = time.time()
    for i in range(len(data)):
        try:
            c.send(data[i:i + 1])
        except (BrokenPipeError, ConnectionResetError):
            return time.time() - start
        c.sock.settimeout(every)
        try:
            chunk = c.sock.recv(65536)
            c.buf += chunk
            if not chunk:
                return time.time() - start
        except socket.timeout:
            pass
        except ConnectionResetError:
            return time.time() - start
        if time.time() - start > until:
            return None
    return None


def test_trickled_head_is_closed_at_the_deadline(ingest):
    """One byte every 200 ms keeps evhttp's idle timeout happy forever; the
    request deadline ends it, with a 408, while others are served."""
    before = metric(ingest.port, "danmaku_http_request_timeouts_total")
    c = Conn(ingest.port)
    result = {}

    def slow():
        result["after"] = trickle(c, b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 200)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    for _ in range(3):
        start = time.time()
        healthy(ingest.port)
        assert time.time() - start < 0.5
        time.sleep(0.2)
    t.join()
    after = result["after"]
    assert after is not None, "the trickled request is still open"
    assert REQUEST_TIMEOUT_MS / 1000 - 0.2 < after < REQUEST_TIMEOUT_MS / 1000 + 1.5, after
    # The 408 may be lost to the reset our next byte provokes.
    assert c.buf == b"" or c.buf.startswith(b"HTTP/1.1 408 "), c.buf[:80]
    c.close()
    assert metric(ingest.port, "danmaku_http_request_timeouts_total") >= before + 1


def test_silent_connection_is_closed_at_the_deadline(ingest):
    c = Conn(ingest.port)
    start = time.time()
    assert c.closed(timeout=REQUEST_TIMEOUT_MS / 1000 + 2)
    assert time.time() - start > REQUEST_TIMEOUT_MS / 1000 - 0.2
    status, headers, body = c.response()
    assert status == 408 and json.loads(body)["error"] == "request_timeout"
    assert headers["connection"] == "close"
    c.close()


def test_trickled_body_is_closed_at_the_deadline(ingest):
    """A complete head and a body that never finishes (slow POST)."""
    c = Conn(ingest.port)
    c.send(post_raw(GOOD_BODY, mint("sam")).replace(b"Content-Length: 13", b"Content-Length: 200")
           .replace(GOOD_BODY, b""))
    after = trickle(c, b'{"text":"' + b"a" * 190)
    assert after is not None and after < REQUEST_TIMEOUT_MS / 1000 + 1.5, after
    assert c.buf == b"" or c.buf.startswith(b"HTTP/1.1 408 "), c.buf[:80]
    c.close()


def test_kept_alive_connection_may_idle_between_requests(ingest):
    """The deadline runs from a request's first byte: an idle keep-alive
    connection is evhttp's idle timeout's business (10 s here)."""
    c = Conn(ingest.port)
    c.send(request())
    assert c.response()[0] == 200
    time.sleep(REQUEST_TIMEOUT_MS / 1000 + 0.7)
    c.send(request())
    assert c.response()[0] == 200
    # ... but a trickled second request gets its own deadline.
    after = trickle(c, b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 200)
    assert after is not None and after < REQUEST_TIMEOUT_MS / 1000 + 1.5, after
    c.close()


def test_many_slowloris_connections_at_once(ingest):
    n = 60
    before = metric(ingest.port, "danmaku_http_request_timeouts_total")
    open_before = eventually(lambda: open_connections(ingest.port), 1)
    conns = [Conn(ingest.port) for _ in range(n)]
    start = time.time()
    hung_up = set()
    piece = b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 100
    i = 0
    while len(hung_up) < n and time.time() - start < 6:
        for k, c in enumerate(conns):
            if k in hung_up:
                continue
            try:
                c.send(piece[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                hung_up.add(k)
        i += 1
        if i % 3 == 0:
            s = time.time()
            healthy(ingest.port)  # a normal client is served meanwhile
            assert time.time() - s < 0.5
        time.sleep(0.1)
        for k, c in enumerate(conns):
            if k not in hung_up and c.closed(timeout=0.001):
                hung_up.add(k)
    elapsed = time.time() - start
    for c in conns:
        c.close()
    assert len(hung_up) == n, f"{n - len(hung_up)} slow ones still open after {elapsed:.1f} s"
    assert elapsed < REQUEST_TIMEOUT_MS / 1000 + 2.5
    assert metric(ingest.port, "danmaku_http_request_timeouts_total") >= before + n
    assert eventually(lambda: open_connections(ingest.port), open_before) == open_before


# ---------------------------------------------------------------------------
# Slowloris on the WebSocket handshake (one slow handshake is in
# test_rfc6455.py; here many at once, while a viewer still gets in)


def test_many_slow_handshakes_while_a_viewer_connects():
    node = start_broadcast("--handshake-timeout-ms", "1000", "--workers", "2")
    try:
        before = metric(node.port, 'danmaku_ws_closed_total{reason="handshake_timeout"}')
        n = 60
        conns = [Conn(node.port) for _ in range(n)]
        piece = b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nX-Slow: " + b"a" * 80
        start = time.time()
        hung_up = set()
        i = 0
        while len(hung_up) < n and time.time() - start < 6:
            for k, c in enumerate(conns):
                if k not in hung_up:
                    try:
                        c.send(piece[i:i + 1])
                    except (BrokenPipeError, ConnectionResetError):
                        hung_up.add(k)
            i += 1
            if i == 4:
                viewer = WSClient(node.port, "/v1/ws")
                assert viewer.status == 101
                assert viewer.recv_json()["op"] == "hello"
                viewer.close()
            time.sleep(0.1)
            for k, c in enumerate(conns):
                if k not in hung_up and c.closed(timeout=0.001):
                    hung_up.add(k)
        elapsed = time.time() - start
        for c in conns:
            c.close()
        assert len(hung_up) == n, f"{n - len(hung_up)} slow handshakes still open"
        assert elapsed < 3.5, elapsed
        after = metric(node.port, 'danmaku_ws_closed_total{reason="handshake_timeout"}')
        assert after >= before + n
    finally:
        node.assert_clean_exit()


# ---------------------------------------------------------------------------
# Connection floods: per address and per node


def refusal_first(sock, wait=0.3):
    """A refused connection is answered (503) and closed at once, before
    the client says anything: True when bytes arrive unasked."""
    readable, _, _ = select.select([sock], [], [], wait)
    return bool(readable)


def open_http(port, source):
    """A kept-alive HTTP connection from source that has been served once
    (so the node counts it), or the refusal (status, body) when refused."""
    c = Conn(port, source=source)
    if not refusal_first(c.sock):
        c.send(request())
    status, _, body = c.response()
    if status != 200:
        assert c.closed()
        c.close()
        return None, (status, body)
    return c, (status, body)


def refused(result):
    c, (status, body) = result
    if c is not None:
        c.close()
        return False
    assert status == 503 and json.loads(body)["error"] == "too_many_connections", (status, body)
    return True


def test_ingest_connection_limits():
    """Two workers share the process's counts: whichever accepts, the
    limits hold for the node as a whole."""
    node = start_ingest("--workers", "2", "--max-connections", "5", "--max-connections-per-ip",
                        "3")
    held = []
    try:
        for _ in range(3):
            c, _ = open_http(node.port, "127.0.0.1")
            assert c is not None
            held.append(c)
        assert refused(open_http(node.port, "127.0.0.1")), "a 4th from 127.0.0.1 was let in"
        c, _ = open_http(node.port, "127.0.0.2")
        assert c is not None, "another address is still served"
        held.append(c)
        c, _ = open_http(node.port, "127.0.0.3")
        assert c is not None
        held.append(c)
        assert refused(open_http(node.port, "127.0.0.4")), "a 6th connection was let in"
        # Connections that end give their place back.
        for c in held[:3]:
            c.close()
        held = held[3:]
        deadline = time.time() + 3
        while True:
            c, _ = open_http(node.port, "127.0.0.1")
            if c is not None or time.time() > deadline:
                break
            time.sleep(0.05)
        assert c is not None, "places of closed connections were not given back"
        c.close()
        for c in held:
            c.close()
        held = []
        time.sleep(0.2)
        assert metric(node.port, 'danmaku_connections_refused_total{reason="max_connections"}') >= 1
        assert metric(node.port,
                      'danmaku_connections_refused_total{reason="max_connections_per_ip"}') >= 1
        # This /metrics connection is the only one open.
        assert eventually(lambda: open_connections(node.port), 1) == 1
    finally:
        for c in held:
            c.close()
        node.assert_clean_exit()


def ws_connect(port, source):
    """A viewer past hello from source, or None when refused with 503."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    if refusal_first(sock):
        c = Conn.__new__(Conn)
        c.sock, c.buf = sock, b""
        status, _, body = c.response()
        assert status == 503 and json.loads(body)["error"] == "too_many_connections", body
        assert c.closed()
        sock.close()
        return None
    ws = WSClient(port, "/v1/ws", sock=sock)
    assert ws.status == 101
    assert ws.recv_json()["op"] == "hello"
    return ws


def test_broadcast_connection_limits():
    node = start_broadcast("--workers", "2", "--max-connections", "5",
                           "--max-connections-per-ip", "3")
    held = []
    try:
        for _ in range(3):
            ws = ws_connect(node.port, "127.0.0.1")
            assert ws is not None
            held.append(ws)
        assert ws_connect(node.port, "127.0.0.1") is None, "a 4th from 127.0.0.1 was let in"
        for source in ("127.0.0.2", "127.0.0.3"):
            ws = ws_connect(node.port, source)
            assert ws is not None, f"{source} refused"
            held.append(ws)
        assert ws_connect(node.port, "127.0.0.4") is None, "a 6th viewer was let in"
        for ws in held[:3]:
            ws.close()
        held = held[3:]
        deadline = time.time() + 3
        ws = None
        while ws is None and time.time() < deadline:
            ws = ws_connect(node.port, "127.0.0.1")
            time.sleep(0.05)
        assert ws is not None, "places of closed viewers were not given back"
        ws.close()
        for ws in held:
            ws.close()
        held = []
        time.sleep(0.3)
        # /metrics is plain HTTP on the same port: from a fifth address.
        status, _, text = http_from(node.port, "127.0.0.5", "/metrics")
        assert 'danmaku_connections_refused_total{reason="max_connections"}' in text
        values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                  if line.startswith("danmaku_connections_refused_total")}
        assert values['danmaku_connections_refused_total{reason="max_connections"}'] >= 1
        assert values['danmaku_connections_refused_total{reason="max_connections_per_ip"}'] >= 1
    finally:
        for ws in held:
            ws.close()
        node.assert_clean_exit()


def http_from(port, source, path):
    c = Conn(port, source=source)
    c.send(request(path=path))
    status, headers, body = c.response()
    c.close()
    return status, headers, body.decode()


def test_per_ip_limit_off_by_default(ingest):
    """Behind a load balancer every client shares one address: no limit
    unless configured."""
    held = [open_http(ingest.port, "127.0.0.1")[0] for _ in range(20)]
    assert all(c is not None for c in held)
    for c in held:
        c.close()


# ---------------------------------------------------------------------------
# Running out of file descriptors

NOFILE = 64


def cpu_over(node, seconds):
    start = node.cpu_seconds()
    time.sleep(seconds)
    return node.cpu_seconds() - start


def exhaust(port, handshake, count=120):
    """Opens count connections (the kernel accepts them into the backlog
    whether or not the node can) and sends each a request; returns them."""
    conns = []
    for _ in range(count):
        c = Conn(port, timeout=2)
        c.send(handshake)
        conns.append(c)
    return conns


def answered(conns, wait=0.5):
    """How many of conns have an answer waiting."""
    readable, _, _ = select.select([c.sock for c in conns], [], [], wait)
    return len(readable)


def test_ingest_out_of_file_descriptors():
    node = start_ingest("--workers", "1", "--http-request-timeout-ms", "60000",
                        "--http-timeout-ms", "60000", nofile=NOFILE)
    conns = []
    try:
        healthy(node.port)
        conns = exhaust(node.port, request())
        time.sleep(0.5)
        served = answered(conns)
        assert 0 < served < len(conns), f"{served} of {len(conns)} served with {NOFILE} fds"
        used = cpu_over(node, 2.0)
        assert used < 0.5, f"{used:.2f} s of CPU in 2 s while out of descriptors: spinning"
        for c in conns:
            c.close()
        conns = []
        # Accepting resumes by itself, within a pause.
        deadline = time.time() + 3
        while True:
            try:
                healthy(node.port)
                break
            except (AssertionError, OSError, EOFError):
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        assert metric(node.port, "danmaku_accept_pauses_total") >= 1
        assert "accept paused" in node.log()
    finally:
        for c in conns:
            c.close()
        node.assert_clean_exit()


def test_broadcast_out_of_file_descriptors():
    node = start_broadcast("--workers", "1", "--handshake-timeout-ms", "60000", nofile=NOFILE)
    conns = []
    key = base64.b64encode(os.urandom(16))
    handshake = (b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    try:
        conns = exhaust(node.port, handshake)
        time.sleep(0.5)
        served = answered(conns)
        assert 0 < served < len(conns), f"{served} of {len(conns)} served with {NOFILE} fds"
        used = cpu_over(node, 2.0)
        assert used < 0.5, f"{used:.2f} s of CPU in 2 s while out of descriptors: spinning"
        for c in conns:
            c.close()
        conns = []
        deadline = time.time() + 3
        ws = None
        while ws is None:
            try:
                ws = WSClient(node.port)
            except (ConnectionError, OSError):
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        assert ws.status == 101 and ws.recv_json()["op"] == "hello"
        ws.close()
        status, _, text = http_from(node.port, "127.0.0.1", "/metrics")
        pauses = [float(line.split()[1]) for line in text.splitlines()
                  if line.startswith("danmaku_accept_pauses_total ")]
        assert pauses and pauses[0] >= 1, pauses
    finally:
        for c in conns:
            c.close()
        node.assert_clean_exit()
