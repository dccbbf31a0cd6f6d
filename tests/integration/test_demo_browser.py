"""The demo page the broadcast node serves at `/` (broadcast/demo.html), end
to end in headless Chromium against a real ingest, broadcast node, Kafka and
Redis: the page joins the room from its address, shows the online count,
sends a comment through the ingest API (CORS from another port) and draws it
on the stage with its colour, mode and size; comments from other senders,
top/bottom comments, priority comments and retracts show; no two visible
comments overlap, whatever their modes (scrolling, top, bottom: a fixed
comment takes no band a scrolling one will cross it in, and the other way
round), also across a resize; a top/bottom comment
waiting for a lane does not hold back scrolling ones; a room switch
rewrites the address; and across a broadcast node restart the page resumes
with offset and epoch, so what was posted while it was away appears exactly
once. The token never goes into the address: read from #token= and then
taken out of the address bar, sent to the node in {"op":"auth"} after
`hello`, so a node without anonymous viewing plays for it, and a refused
token shows as such (no quiet fall back to anonymous, no retry loop). A
crafted #ingest= to another host is ignored with a warning, and nothing is
sent there. A socket that goes silent (a stalled proxy) is given up after
two heartbeats and the page resumes through a new one. A screenshot of the
page is kept as a test artifact (DANMAKU_ARTIFACTS, default
build/test-artifacts): demo-page.png at an ordinary moment (a few comments
of each mode, colours, sizes, a priority one) and demo-page-burst.png during
the stress burst.

Chromium is Debian's `chromium` (/usr/bin/chromium, or DANMAKU_CHROMIUM),
driven by playwright-core (tests/integration/node, `npm ci`); the test fails,
never skips, without them. The tests without the browser check what the
node does with its two settings: demo_page=false answers 404, and
demo_ingest_url is escaped into the page, so no value can inject markup."""

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dmtest import (ROOT, SECRET_FILE, http, mint, post_comment, start_broadcast,
                    start_ingest)

sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from faultproxy import FaultProxy  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "node")
DRIVER = os.path.join(NODE_DIR, "demo_browser.mjs")
CHROMIUM = os.environ.get("DANMAKU_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = os.environ.get("DANMAKU_ARTIFACTS", os.path.join(ROOT, "build", "test-artifacts"))


def browser_missing():
    """Why the browser cannot run, or None."""
    if shutil.which("node") is None:
        return "node is not installed (Debian package nodejs)"
    if not os.path.isfile(os.path.join(NODE_DIR, "node_modules", "playwright-core",
                                       "package.json")):
        return "playwright-core is missing: run `npm ci` in tests/integration/node"
    if not os.access(CHROMIUM, os.X_OK):
        return f"Chromium not found at {CHROMIUM}: install Debian's chromium or set DANMAKU_CHROMIUM"
    return None


class Browser:
    """demo_browser.mjs in a subprocess: one command at a time."""

    def __init__(self):
        why = browser_missing()
        if why:
            pytest.fail("the demo page test needs a browser: " + why, pytrace=False)
        self.proc = subprocess.Popen(["node", DRIVER], cwd=NODE_DIR, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     bufsize=1)
        self.answers = queue.Queue()
        self.page_errors = []
        self.console = []
        self.websockets = []  # URLs of the sockets the page opened, in order
        self.frames = []      # text frames the page sent on them, parsed
        self.next_id = 0
        threading.Thread(target=self._pump, daemon=True).start()
        ready = self._get(60)
        if ready.get("event") != "ready":
            self.proc.kill()
            pytest.fail("the browser did not start: " + ready.get("error", json.dumps(ready))
                        + "\n" + self.proc.stderr.read()[-3000:], pytrace=False)

    def _pump(self):
        for line in self.proc.stdout:
            msg = json.loads(line)
            if msg.get("event") == "pageerror":
                self.page_errors.append(msg["message"])
            elif msg.get("event") == "console":
                self.console.append(f"{msg['type']}: {msg['text']}")
            elif msg.get("event") == "websocket":
                self.websockets.append(msg["url"])
            elif msg.get("event") == "wsframe":
                try:
                    self.frames.append(json.loads(msg["payload"]))
                except ValueError:
                    self.frames.append({"raw": msg["payload"]})
            else:
                self.answers.put(msg)
        self.answers.put(None)

    def _get(self, timeout):
        try:
            msg = self.answers.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no answer from the browser driver within {timeout} s")
        if msg is None:
            pytest.fail("the browser driver exited:\n" + self.proc.stderr.read()[-3000:])
        return msg

    def do(self, cmd, timeout=60, **args):
        self.next_id += 1
        self.proc.stdin.write(json.dumps(dict(args, id=self.next_id, cmd=cmd)) + "\n")
        self.proc.stdin.flush()
        msg = self._get(timeout)
        assert msg.get("id") == self.next_id, msg
        if not msg["ok"]:
            raise AssertionError(f"{cmd} failed: {msg['error']}\nconsole:\n"
                                 + "\n".join(self.console[-20:]))
        return msg["value"]

    def ops(self, since=0):
        """The ops of the frames the page sent, from frame `since` on."""
        return [f.get("op") for f in self.frames[since:]]

    def eval(self, fn, arg=None):
        return self.do("eval", fn=fn, arg=arg)

    def wait(self, fn, arg=None, timeout=20):
        """Polls fn(arg) in the page until it is truthy (timeout in seconds);
        returns that value."""
        return self.do("wait", timeout=timeout + 30, fn=fn, arg=arg, ms=timeout * 1000)

    def close(self):
        try:
            self.proc.stdin.write(json.dumps({"cmd": "close"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------------------
# Page probes (run in the page; the DOM is the page's interface).

# The stage element showing a comment text: its mode, lanes, colour and where
# it is relative to the stage.
FIND = """(text) => {
  const el = [...document.querySelectorAll('#stage .dm')].find(
      (e) => e.textContent === text && e.style.visibility !== 'hidden');
  if (!el) return null;
  const s = document.getElementById('stage').getBoundingClientRect();
  const b = el.getBoundingClientRect();
  return { mode: el.dataset.mode, size: el.dataset.size, lane: +el.dataset.lane,
           lanes: +el.dataset.lanes, color: getComputedStyle(el).color,
           classes: [...el.classList], fontSize: parseFloat(getComputedStyle(el).fontSize),
           top: b.top - s.top, bottom: s.bottom - b.bottom,
           center: (b.left + b.right) / 2 - (s.left + s.right) / 2,
           stageW: s.width, stageH: s.height };
}"""

# Every pair of visible comments whose boxes intersect, whatever their modes
# (scrolling, top, bottom, in any pairing: none may cover another).
OVERLAPS = """() => {
  const s = document.getElementById('stage').getBoundingClientRect();
  const r = [...document.querySelectorAll('#stage .dm')]
    .filter((e) => e.style.visibility !== 'hidden')
    .map((e) => ({ t: e.textContent, mode: e.dataset.mode, lane: +e.dataset.lane,
                   b: e.getBoundingClientRect() }))
    .filter((x) => x.b.right > s.left && x.b.left < s.right &&
                   x.b.bottom > s.top && x.b.top < s.bottom);
  const bad = [];
  let sameLane = 0;
  for (let i = 0; i < r.length; i++) {
    for (let j = i + 1; j < r.length; j++) {
      const a = r[i].b, b = r[j].b;
      const dx = Math.min(a.right, b.right) - Math.max(a.left, b.left);
      const dy = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (dx > 0.5 && dy > 0.5)
        bad.push([r[i].t, r[i].mode, r[i].lane, r[j].t, r[j].mode, r[j].lane, dx, dy]);
      if (r[i].mode === 'scroll' && r[j].mode === 'scroll' && r[i].lane === r[j].lane)
        sameLane++;
    }
  }
  const count = (m) => r.filter((x) => x.mode === m).length;
  return { visible: r.length, scroll: count('scroll'), top: count('top'),
           bottom: count('bottom'), sameLane, bad, texts: r.map((x) => x.t),
           elements: document.querySelectorAll('#stage .dm').length };
}"""

LOG_COUNT = """(text) => [...document.querySelectorAll('#log li .txt')]
                  .filter((e) => e.textContent === text).length"""

COUNTERS = """() => ({
  shown: +document.getElementById('shown').textContent,
  dropped: +document.getElementById('dropped').textContent,
  queued: +document.getElementById('queued').textContent,
  skipped: +document.getElementById('skipped').textContent,
  online: document.getElementById('online').textContent,
  state: document.getElementById('conn').dataset.state,
  notice: document.getElementById('notice').textContent,
  offsets: [...document.querySelectorAll('#log li')].map((li) => +li.dataset.offset),
})"""

CONN = """() => ({ state: document.getElementById('conn').dataset.state,
                  text: document.getElementById('conn-text').textContent,
                  notice: document.getElementById('notice').textContent })"""

QUEUED = "() => +document.getElementById('queued').textContent"

# How many lanes the stage has (the page's own formula).
LANES = """() => { const h = document.getElementById('stage').clientHeight;
  const font = Math.max(14, Math.min(40, Math.round(h / 20)));
  return Math.max(1, Math.floor((h - 6) / Math.ceil(font * 1.3))); }"""

LIVE = """() => document.getElementById('conn').dataset.state === 'live' &&
             /^[0-9]+$/.test(document.getElementById('online').textContent) &&
             +document.getElementById('online').textContent >= 1"""


def post_ok(port, room, text, token, **fields):
    status, _, body = post_comment(port, room, text, token, **fields)
    assert status == 201, (status, body)
    return body


def on_stage(browser, text, timeout=20):
    return browser.wait(FIND, text, timeout)


def broadcast_args(ingest):
    return ["--jwt-key-file", SECRET_FILE, "--demo-ingest-url", f"http://127.0.0.1:{ingest.port}",
            "--online-interval-ms", "1000", "--workers", "1"]



def shown_once_after_resume(browser, ingest, room, sender, away, before, after):
    """After the page resumed: what was posted while it was away (`away`),
    the comment before it left and one posted now are each shown exactly
    once, no offset twice, and no "could not resume" notice. Returns the
    page's counters."""
    for t in away:
        browser.wait(LOG_COUNT, t, timeout=20)
    post_ok(ingest.port, room, after, sender)
    browser.wait(LOG_COUNT, after)
    time.sleep(0.5)
    counters = browser.eval(COUNTERS)
    for t in away + [before, after]:
        assert browser.eval(LOG_COUNT, t) == 1, (t, counters)
    assert len(set(counters["offsets"])) == len(counters["offsets"]), counters
    assert "resume" not in counters["notice"], counters
    return counters

def test_demo_page_in_chromium():
    room = "demo-" + uuid.uuid4().hex[:10]
    sender = mint("page-user", name="Page User")
    other = mint("other-user", name="Other")
    paid = mint("paid-user", name="Paid", prio=2)
    moderator = mint("mod-user", role="moderator")
    browser = Browser()
    ingest = start_ingest()
    bcast = start_broadcast(*broadcast_args(ingest))
    try:
        # #ingest= in the address may move the API within the configured
        # ingest's origin (another base path there).
        browser.do("open", url=f"http://127.0.0.1:{bcast.port}/?room={room}-probe"
                              f"#ingest=http://127.0.0.1:{ingest.port}/elsewhere/")
        assert browser.eval("() => document.getElementById('ingest').value") == \
            f"http://127.0.0.1:{ingest.port}/elsewhere"
        assert browser.eval("() => document.getElementById('warning').hidden") is True
        url = (f"http://127.0.0.1:{bcast.port}/?room={room}#token="
               + urllib.parse.quote(sender))
        sockets = len(browser.websockets)
        browser.do("open", url=url)
        browser.wait(LIVE)
        assert browser.eval("() => document.getElementById('ingest').value") == \
            f"http://127.0.0.1:{ingest.port}"
        assert browser.eval("() => document.getElementById('token').value") == sender
        # The token was read and taken out of the address bar; it went to
        # the node in an auth message, never in the socket's URL.
        assert browser.eval("() => [location.hash, location.href]") == \
            ["", f"http://127.0.0.1:{bcast.port}/?room={room}"]
        assert browser.websockets[sockets:], browser.websockets
        assert not any("token" in u for u in browser.websockets), browser.websockets
        assert {"op": "auth", "token": sender} in browser.frames

        # Sent from the page's own send box: the ingest is on another port,
        # so this is a cross-origin POST with a CORS preflight.
        text = "from the page " + uuid.uuid4().hex[:6]
        browser.do("fill", selector="#text", value=text)
        browser.do("fill", selector="#color", value="#ff8800")
        browser.do("select", selector="#mode", value="scroll")
        browser.do("select", selector="#size", value="large")
        browser.do("click", selector="#send")
        result = browser.wait("""() => { const r = document.getElementById('send-result');
                                       return r.dataset.status && r.textContent; }""")
        assert result.startswith("201 sent"), result
        got = on_stage(browser, text)
        assert got["mode"] == "scroll" and got["size"] == "large", got
        assert got["color"] == "rgb(255, 136, 0)", got
        assert got["lane"] >= 0 and got["lanes"] >= 1, got
        # Marked as this page's own once the 201 is in (it may come second).
        browser.wait("""(t) => [...document.querySelectorAll('#stage .dm.mine')]
                                 .some((e) => e.textContent === t)""", text)
        assert browser.eval("() => document.getElementById('text').value") == ""

        # From another sender over HTTP: fixed comments at the top and the
        # bottom, centred; a priority comment shown as such.
        top = post_ok(ingest.port, room, "top comment", other, mode="top", color="#00ff66")
        bottom_text = "bottom comment"
        post_ok(ingest.port, room, bottom_text, other, mode="bottom", color="#66ccff",
                size="small")
        got = on_stage(browser, "top comment")
        assert got["mode"] == "top" and got["color"] == "rgb(0, 255, 102)", got
        assert got["top"] < got["stageH"] * 0.25 and abs(got["center"]) < 3, got
        got = on_stage(browser, bottom_text)
        assert got["mode"] == "bottom" and got["size"] == "small", got
        assert got["bottom"] < got["stageH"] * 0.25 and abs(got["center"]) < 3, got
        post_ok(ingest.port, room, "a paid comment", paid, color="#ffd24a")
        got = on_stage(browser, "a paid comment")
        assert "prio" in got["classes"], got

        # A moderator retracts the top comment while it is still shown.
        status, _, body = http(ingest.port, "DELETE",
                               f"/v1/rooms/{room}/danmaku/{top['id']}",
                               headers={"Authorization": "Bearer " + moderator})
        assert status == 200, body
        browser.wait("""(id) => !document.querySelector(`#stage .dm[data-id="${id}"]`) &&
                         document.querySelector(`#log li.retracted[data-id="${id}"]`)""",
                     top["id"])

        # A top comment waiting for lanes does not hold back a scrolling one
        # that has a lane: all top lanes but the last taken, a large top
        # comment (two lanes high) waits, a scrolling one takes the last lane.
        # First the stage clears enough that every top lane is free: no
        # fixed comment, and the scrolling ones past the centre (a top
        # comment takes no band a scrolling one is still to cross it in).
        browser.wait("""() => { const s = document.getElementById('stage').getBoundingClientRect();
                                 return [...document.querySelectorAll('#stage .dm')].every(
                                   (e) => e.dataset.mode === 'scroll' &&
                                     e.getBoundingClientRect().right < s.left + s.width * 0.45);
                               }""", timeout=12)
        lanes = browser.eval(LANES)
        rows = [f"row {i:02d}" for i in range(lanes - 1)]
        for t in rows:
            post_ok(ingest.port, room, t, other, mode="top", color="#c0c8ff")
        on_stage(browser, rows[-1])
        post_ok(ingest.port, room, "two lanes high, waits", other, mode="top", size="large")
        browser.wait(QUEUED)
        post_ok(ingest.port, room, "scrolls past the waiting top one", other)
        waiting = browser.wait(f"""(t) => ({FIND})(t) &&
                                   {{ queued: +document.getElementById('queued').textContent }}""",
                               "scrolls past the waiting top one", timeout=3)
        assert waiting["queued"] == 1, waiting
        assert on_stage(browser, "scrolls past the waiting top one")["lane"] == lanes - 1
        posted = 4 + len(rows) + 2
        browser.wait("() => !document.querySelector('#stage .dm.fixed') && "
                     "document.getElementById('queued').textContent === '0'", timeout=15)

        # An ordinary moment, for the artifact: a few comments of each mode
        # in their colours and sizes, a priority one among them, coming in
        # over a few seconds. None overlaps another, whatever the modes.
        showcase = [("welcome to the demo room", "top", "#ffd24a", "normal", paid),
                    ("top and bottom comments stay 4 s", "bottom", "#9ef0ff", "normal", other),
                    ("a small one at the top", "top", "#ff9ecb", "small", other),
                    ("scrolling ones take the free lanes", "scroll", "#ffffff", "normal", other),
                    ("big and red", "scroll", "#ff5c6c", "large", other),
                    ("a paid comment stands out", "scroll", "#ffd24a", "normal", paid),
                    ("small and green", "scroll", "#7cf29a", "small", other),
                    ("hello from the blue side", "scroll", "#6ec3ff", "normal", other),
                    ("purple, and large", "scroll", "#d58cff", "large", other),
                    ("just watching", "scroll", "#ffe14d", "normal", other),
                    ("a bottom one, small", "bottom", "#ffffff", "small", other),
                    ("lanes are shared by every mode", "scroll", "#ffffff", "small", other)]
        start = time.time()
        shot = None
        for i, (t, mode, color, size, tok) in enumerate(showcase):
            post_ok(ingest.port, room, t, tok, mode=mode, color=color, size=size)
            if i >= 2:
                time.sleep(0.2)
        while shot is None:
            geo = browser.eval(OVERLAPS)
            assert not geo["bad"], f"overlapping comments: {geo['bad']}"
            if time.time() > start + 2.3 and geo["top"] and geo["bottom"] and geo["scroll"] >= 4:
                shot = browser.do("screenshot", path=screenshot_path())
                print("demo page screenshot:", shot)
            assert time.time() < start + 12, f"no moment with every mode on the stage: {geo}"
            time.sleep(0.1)
        got = on_stage(browser, "a paid comment stands out")
        assert "prio" in got["classes"], got

        # A burst: more top and bottom comments than lanes (top ones grow
        # down, bottom ones up, and must not meet) while the showcase still
        # scrolls, and at once more scrolling comments than lanes, some
        # large, which start in the bands of fixed ones only when those go
        # before they get there. Sampled all along, no two visible ones may
        # overlap.
        burst = []
        more_fixed = [(f"{('top', 'bottom')[i % 2]} {i:02d} " + "yo" * (i % 5 + 1),
                       ("top", "bottom")[i % 2], ("#ffd24a", "#9ef0ff", "#ff9ecb")[i % 3],
                       ("normal", "small", "large")[i // 2 % 3]) for i in range(24)]
        total = posted + len(showcase) + len(more_fixed)
        for t, mode, color, size in more_fixed:
            post_ok(ingest.port, room, t, other, mode=mode, color=color, size=size)
        for i in range(36):
            t = f"burst {i:02d} " + "ha" * (i % 7 + 1)
            size = ("small", "normal", "large")[i % 3]
            color = ("#ffffff", "#ff5c6c", "#ffe14d", "#7cf29a", "#6ec3ff", "#d58cff")[i % 6]
            post_ok(ingest.port, room, t, other, size=size, color=color)
            burst.append(t)
        seen_shared = False
        samples = 0
        mixed = 0
        most_fixed = 0
        fixed_seen = set()
        start = time.time()
        shot = None
        while time.time() < start + 5:
            geo = browser.eval(OVERLAPS)
            assert not geo["bad"], f"overlapping comments: {geo['bad']}"
            assert geo["elements"] <= 300, geo
            seen_shared = seen_shared or geo["sameLane"] > 0
            samples += geo["visible"] > 1
            # Scrolling and fixed comments up together: those pairs were
            # checked too.
            mixed += geo["scroll"] > 0 and geo["top"] + geo["bottom"] > 0
            if geo["top"] and geo["bottom"]:
                most_fixed = max(most_fixed, geo["top"] + geo["bottom"])
            fixed_seen.update(t for t in geo["texts"]
                              if t.split(" ")[0] in ("top", "bottom") and t.split(" ")[1].isdigit())
            if shot is None and time.time() > start + 3.5:
                # The busy stage of the burst: the second artifact.
                shot = browser.do("screenshot", path=screenshot_path("demo-page-burst.png"))
                print("demo page burst screenshot:", shot)
            time.sleep(0.1)
        assert samples > 10, "the burst was never on the stage"
        assert seen_shared, "no lane ever held two comments at once: lanes are not reused"
        # Fixed comments of the overflow got bands among the scrolling ones
        # (those without one in time were dropped and counted, below).
        assert mixed > 5, mixed
        assert len(fixed_seen) >= 2, fixed_seen
        # Top and bottom ones up together, several of them.
        assert most_fixed >= 4, most_fixed
        # Every comment was either shown or counted as dropped, and each
        # element left the DOM when its animation ended.
        browser.wait("""(n) => { const c = +document.getElementById('shown').textContent +
                                          +document.getElementById('dropped').textContent;
                                 return c >= n && document.querySelectorAll('#stage .dm')
                                   .length === 0 && document.getElementById('queued')
                                   .textContent === '0'; }""", total + len(burst),
                     timeout=40)
        counters = browser.eval(COUNTERS)
        assert counters["shown"] + counters["dropped"] == total + len(burst), counters
        for t in burst:
            assert browser.eval(LOG_COUNT, t) == 1, t

        # Room picker: the address follows (and has no token in it), the new
        # room's comments show and the old room's no longer do.
        room2 = room + "-b"
        browser.do("fill", selector="#room-input", value=room2)
        browser.do("click", selector="#room-go")
        browser.wait("(r) => new URLSearchParams(location.search).get('room') === r && "
                     "location.hash === '' && !location.href.includes('token')", room2)
        browser.wait(LIVE)
        post_ok(ingest.port, room, "old room, not shown", other)
        post_ok(ingest.port, room2, "in the second room", other)
        on_stage(browser, "in the second room")
        assert browser.eval(LOG_COUNT, "old room, not shown") == 0

        # Resume across a node restart: posted while the page is away,
        # shown exactly once after it is back.
        post_ok(ingest.port, room2, "before the restart", other)
        browser.wait(LOG_COUNT, "before the restart")
        port = bcast.port
        code, log = bcast.stop()
        assert code == 0, log[-3000:]
        browser.wait("() => document.getElementById('conn').dataset.state !== 'live'")
        away = [f"while away {i}" for i in range(3)]
        for t in away:
            post_ok(ingest.port, room2, t, other)
        # The new node also samples (density control) beyond 5 comments a
        # second per viewer, for the skipped counter below.
        bcast = start_broadcast(*broadcast_args(ingest), "--ws-port", str(port),
                                "--density-cap", "5")
        browser.wait(LIVE, timeout=40)
        counters = shown_once_after_resume(browser, ingest, room2, other, away,
                                           "before the restart", "after the restart")
        assert int(counters["online"]) >= 1, counters
        # The reconnect authenticated again, the same way.
        assert not any("token" in u for u in browser.websockets), browser.websockets
        assert browser.ops().count("auth") >= 2, browser.ops()

        # Over the density cap: the comments sampled out are counted on the
        # page from the node's `skipped` notices.
        time.sleep(1.2)
        flood = [f"flood {i}" for i in range(12)]
        for t in flood:
            post_ok(ingest.port, room2, t, other)
        browser.wait("""(n) => { const skipped = +document.getElementById('skipped').textContent;
                                 const shown = [...document.querySelectorAll('#log li .txt')]
                                   .filter((e) => e.textContent.startsWith('flood ')).length;
                                 return skipped > 0 && skipped + shown === n; }""", len(flood))
        assert not browser.page_errors, browser.page_errors
    finally:
        browser.close()
        try:
            bcast.assert_clean_exit()
        finally:
            ingest.assert_clean_exit()


def quote(s):
    return urllib.parse.quote(s, safe="")


def send_from_page(browser, text):
    """Types text into the page's send box and sends it; the result line."""
    browser.do("fill", selector="#text", value=text)
    browser.do("click", selector="#send")
    return browser.wait("""() => { const r = document.getElementById('send-result');
                                 return r.dataset.status && r.textContent; }""")


def test_demo_page_token_without_anonymous_viewing():
    """A node with allow_anonymous=false plays for the page's token, sent in
    {"op":"auth"} after hello and before the join; a token it refuses shows
    as refused, with no retry loop and no anonymous fall back; no token at
    all shows that one is needed."""
    room = "auth-" + uuid.uuid4().hex[:10]
    token = mint("viewer-user", name="Viewer")
    other = mint("other-user", name="Other")
    head, payload, _ = token.split(".")
    forged = f"{head}.{payload}." + "A" * 43  # a well-formed token, wrong signature
    browser = Browser()
    ingest = start_ingest()
    bcast = start_broadcast(*broadcast_args(ingest), "--allow-anonymous", "false")
    base = f"http://127.0.0.1:{bcast.port}/"
    try:
        browser.do("open", url=f"{base}?room={room}#token={quote(token)}")
        browser.wait(LIVE)
        post_ok(ingest.port, room, "for token holders", other)
        on_stage(browser, "for token holders")
        assert not any("token" in u for u in browser.websockets), browser.websockets
        ops = browser.ops()
        assert "auth" in ops and ops.index("auth") < ops.index("join"), ops
        assert browser.frames[ops.index("auth")] == {"op": "auth", "token": token}

        # Refused: said so, and it stays so (one socket, no fall back).
        sockets, frames = len(browser.websockets), len(browser.frames)
        browser.do("open", url=f"{base}?room={room}-forged#token={quote(forged)}")
        got = browser.wait(f"() => document.getElementById('conn').dataset.state === "
                           f"'refused' && ({CONN})()")
        assert got["text"] == "token refused", got
        assert "refused the token" in got["notice"], got
        time.sleep(2.5)
        got = browser.eval(CONN)
        assert got["state"] == "refused" and got["text"] == "token refused", got
        assert browser.eval("() => document.getElementById('online').textContent") == "–"
        assert len(browser.websockets) == sockets + 1, browser.websockets[sockets:]
        assert browser.ops(frames).count("auth") == 1, browser.ops(frames)

        # No token: this node needs one, and the page says so.
        browser.do("open", url=f"{base}?room={room}-none")
        got = browser.wait(f"() => document.getElementById('conn').dataset.state === "
                           f"'refused' && ({CONN})()")
        assert got["text"] == "token needed" and "token" in got["notice"], got
        assert not browser.page_errors, browser.page_errors
    finally:
        browser.close()
        try:
            bcast.assert_clean_exit()
        finally:
            ingest.assert_clean_exit()


class Trap:
    """An HTTP server that only counts what reaches it."""

    def __init__(self):
        hits = self.hits = []

        class Handler(BaseHTTPRequestHandler):
            def answer(self):
                hits.append((self.command, self.path, self.headers.get("Authorization")))
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_OPTIONS = do_PUT = do_DELETE = answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_demo_page_ignores_a_foreign_ingest_link():
    """#ingest= to another host would send the token there: ignored, with a
    visible warning, and the page sends to the configured API instead. The
    page's own origin is accepted."""
    room = "link-" + uuid.uuid4().hex[:10]
    sender = mint("link-user", name="Link User")
    trap = Trap()
    browser = Browser()
    ingest = start_ingest()
    bcast = start_broadcast(*broadcast_args(ingest))
    base = f"http://127.0.0.1:{bcast.port}/"
    try:
        # The page's own origin (a proxy path in front of both nodes).
        browser.do("open", url=f"{base}?room={room}-own#ingest=/api/ingest/")
        assert browser.eval("() => document.getElementById('ingest').value") == "/api/ingest"
        assert browser.eval("() => document.getElementById('warning').hidden") is True

        foreign = f"http://127.0.0.1:{trap.port}/collect/"
        browser.do("open", url=f"{base}?room={room}#ingest={quote(foreign)}&token={quote(sender)}")
        browser.wait(LIVE)
        got = browser.eval("""() => ({ hash: location.hash, href: location.href,
          ingest: document.getElementById('ingest').value,
          warning: document.getElementById('warning').textContent,
          shown: !document.getElementById('warning').hidden &&
                 document.getElementById('warning').getBoundingClientRect().height > 0 })""")
        assert got["hash"] == "" and got["href"] == f"{base}?room={room}", got
        assert got["ingest"] == f"http://127.0.0.1:{ingest.port}", got
        assert got["shown"] and "Ignored" in got["warning"], got
        assert f"127.0.0.1:{trap.port}" in got["warning"], got

        # The token is still there (in the settings field) and sending works,
        # to the configured API only.
        text = "sent past the link " + uuid.uuid4().hex[:6]
        result = send_from_page(browser, text)
        assert result.startswith("201 sent"), result
        on_stage(browser, text)
        time.sleep(0.3)
        assert trap.hits == [], trap.hits
        assert not browser.page_errors, browser.page_errors
    finally:
        browser.close()
        trap.close()
        try:
            bcast.assert_clean_exit()
        finally:
            ingest.assert_clean_exit()


def test_demo_page_reconnects_from_a_dead_socket():
    """Through a proxy that stalls (the connection stays open, nothing
    moves): the page pings every heartbeat (1 s here), gives the socket up
    after two silent ones and resumes through a new one, token and all (the
    node lets no one watch without it), so what was posted meanwhile shows
    exactly once."""
    room = "dead-" + uuid.uuid4().hex[:10]
    token = mint("viewer-user", name="Viewer")
    other = mint("other-user", name="Other")
    browser = Browser()
    ingest = start_ingest()
    bcast = start_broadcast(*broadcast_args(ingest), "--allow-anonymous", "false")
    proxy = FaultProxy(("127.0.0.1", bcast.port), name="page").start()
    try:
        browser.do("open", url=f"http://127.0.0.1:{proxy.port}/?room={room}#token={quote(token)}")
        browser.wait(LIVE)
        post_ok(ingest.port, room, "before the stall", other)
        browser.wait(LOG_COUNT, "before the stall")
        time.sleep(1.5)  # a heartbeat: the page has pinged
        assert "ping" in browser.ops(), browser.ops()
        sockets = len(browser.websockets)

        proxy.stall()
        stalled = time.time()
        browser.wait("() => document.getElementById('conn').dataset.state !== 'live'",
                     timeout=10)
        took = time.time() - stalled
        # Two heartbeats of silence, counted from the last message.
        assert took < 5, took
        away = [f"during the stall {i}" for i in range(3)]
        for t in away:
            post_ok(ingest.port, room, t, other)
        time.sleep(0.5)
        proxy.normal()
        browser.wait(LIVE, timeout=30)
        shown_once_after_resume(browser, ingest, room, other, away,
                                "before the stall", "after the stall")
        assert len(browser.websockets) > sockets, browser.websockets
        assert browser.ops().count("auth") >= 2, browser.ops()
        assert not browser.page_errors, browser.page_errors
    finally:
        browser.close()
        proxy.stop()
        try:
            bcast.assert_clean_exit()
        finally:
            ingest.assert_clean_exit()


def test_demo_page_resize_keeps_comments_apart():
    """A resize changes the stage's width, font and lane height while
    comments fly: the new ones, on the new grid, never overlap the old,
    whatever the modes (fixed comments stay centred on the width they were
    placed on, as scrolling ones keep crossing it)."""
    room = "resize-" + uuid.uuid4().hex[:10]
    other = mint("other-user", name="Other")
    browser = Browser()
    ingest = start_ingest()
    bcast = start_broadcast(*broadcast_args(ingest))

    def burst(tag):
        for i in range(24):
            post_ok(ingest.port, room, f"{tag} {i:02d} " + "ha" * (i % 6 + 1), other,
                    size=("normal", "small", "large")[i % 3])
        for i in range(8):
            post_ok(ingest.port, room, f"{tag} fixed {i}", other, mode=("top", "bottom")[i % 2],
                    size=("normal", "large")[i // 2 % 2])

    modes_together = 0  # samples with scrolling and fixed comments up at once

    def sample(seconds):
        nonlocal modes_together
        mixed = False
        end = time.time() + seconds
        while time.time() < end:
            geo = browser.eval(OVERLAPS)
            assert not geo["bad"], f"overlapping comments: {geo['bad']}"
            tags = {t.split(" ")[0] for t in geo["texts"]}
            mixed = mixed or {"old", "new"} <= tags
            modes_together += geo["scroll"] > 0 and geo["top"] + geo["bottom"] > 0
            time.sleep(0.1)
        return mixed

    try:
        browser.do("open", url=f"http://127.0.0.1:{bcast.port}/?room={room}")
        browser.wait(LIVE)
        burst("old")
        sample(1.2)
        before = on_stage(browser, "old 00 ha")
        browser.do("viewport", width=1000, height=700)
        burst("new")
        mixed = sample(5)
        after = on_stage(browser, "new 00 ha")
        assert after["stageW"] < before["stageW"] - 100, (before, after)
        assert after["fontSize"] < before["fontSize"], (before, after)
        assert mixed, "old and new comments were never on the stage together"
        assert modes_together > 3, modes_together
        assert not browser.page_errors, browser.page_errors
    finally:
        browser.close()
        try:
            bcast.assert_clean_exit()
        finally:
            ingest.assert_clean_exit()


def screenshot_path(name="demo-page.png"):
    os.makedirs(ARTIFACTS, exist_ok=True)
    return os.path.join(ARTIFACTS, name)


# ---------------------------------------------------------------------------
# The node's side, no browser needed.


def get_page(port):
    return http(port, "GET", "/")


def test_demo_page_served_with_its_headers():
    bcast = start_broadcast()
    try:
        status, headers, body = get_page(bcast.port)
        assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
        assert "<div id=\"stage\"" in body and "</html>" in body
        # Empty demo_ingest_url: the page picks its own host name, port 8080.
        assert '<meta name="dm-ingest" content="">' in body
        csp = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
        assert headers["x-content-type-options"] == "nosniff"
    finally:
        bcast.assert_clean_exit()


def test_demo_page_off_answers_404():
    bcast = start_broadcast("--demo-page", "false")
    try:
        status, _, body = get_page(bcast.port)
        assert status == 404 and body["error"] == "not_found", body
        # Only the page is off.
        assert http(bcast.port, "GET", "/healthz")[0] == 200
    finally:
        bcast.assert_clean_exit()


HOSTILE = ("https://x.example/\"><script>alert(1)</script><meta x='"
           " onload=alert(2) &amp; </meta>")


def test_demo_ingest_url_is_escaped_into_the_page():
    bcast = start_broadcast("--demo-ingest-url", HOSTILE)
    try:
        status, _, body = get_page(bcast.port)
        assert status == 200
        escaped = ("https://x.example/&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;meta "
                   "x=&#39; onload=alert(2) &amp;amp; &lt;/meta&gt;")
        assert f'<meta name="dm-ingest" content="{escaped}">' in body
        # Nothing of the value escaped its attribute: the page has exactly
        # the markup of the template around it.
        assert "alert(" not in body.replace(escaped, "")
        assert body.count("<script") == 1 and body.count("<meta") == 3
    finally:
        bcast.assert_clean_exit()


def test_hostile_ingest_url_stays_data_in_chromium():
    """What the browser makes of the escaped value: the same string, as
    text, with no element or script added."""
    browser = Browser()
    bcast = start_broadcast("--demo-ingest-url", HOSTILE)
    try:
        browser.do("open", url=f"http://127.0.0.1:{bcast.port}/?room=hostile")
        got = browser.eval("""() => ({
          content: document.querySelector('meta[name=dm-ingest]').content,
          ingest: document.getElementById('ingest').value,
          scripts: document.scripts.length,
          metas: document.querySelectorAll('meta').length })""")
        assert got["content"] == HOSTILE, got
        # Shown as it is for the sender to see.
        assert got["ingest"] == HOSTILE, got
        assert got["scripts"] == 1 and got["metas"] == 3, got
        assert not browser.page_errors, browser.page_errors
    finally:
        browser.close()
        bcast.assert_clean_exit()


def test_demo_ingest_url_must_be_http_or_a_path():
    for good in ("/ingest", "http://127.0.0.1:9", "https://api.example.com/base"):
        node = start_broadcast("--demo-ingest-url", good)
        status, _, body = get_page(node.port)
        assert status == 200 and f'content="{good}"' in body
        node.assert_clean_exit()
    # Controls and backslashes too: browsers drop the one and read the
    # other as a slash ("/\\host" is another host).
    for bad in ("javascript:alert(1)", "//evil.example", "ftp://x", "/\\evil.example",
                "https://x/\ty", "/a\x7f"):
        with pytest.raises(RuntimeError, match="demo_ingest_url"):
            start_broadcast("--demo-ingest-url", bad)


def test_ingest_answers_the_page_preflight():
    """The page posts from the broadcast node's origin (another port) with a
    bearer token and a JSON body: the browser asks first."""
    ingest = start_ingest()
    try:
        origin = "http://127.0.0.1:8081"
        status, headers, _ = http(ingest.port, "OPTIONS", "/v1/rooms/demo/danmaku", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
        assert status == 204, headers
        assert headers["access-control-allow-origin"] == origin
        allowed = headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed
        assert "POST" in headers["access-control-allow-methods"]
        status, headers, _ = http(ingest.port, "POST", "/v1/rooms/demo/danmaku", {"text": "cors"},
                                  {"Origin": origin, "Authorization": "Bearer " + mint("cors")})
        assert status == 201 and headers["access-control-allow-origin"] == origin
    finally:
        ingest.assert_clean_exit()
