"""`make run` as a newcomer uses it: start it, open a viewer on the printed
WebSocket URL, paste the printed curl command, and see the comment arrive
within a second; then Ctrl-C stops everything it started. The printed viewer
page URL carries the token, and the page posts to this run's ingest."""

import os
import re
import select
import signal
import subprocess
import time

from dmtest import ROOT, WSClient, http, redis_port


def read_until(proc, marker, timeout):
    out = ""
    deadline = time.time() + timeout
    while marker not in out:
        left = deadline - time.time()
        assert left > 0, "make run did not print its banner:\n" + out
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536).decode(errors="replace")
            assert chunk, "make run ended early:\n" + out
            out += chunk
    return out


def test_make_run_then_the_printed_curl_reaches_a_viewer():
    env = dict(os.environ, DANMAKU_HTTP_PORT="0", DANMAKU_WS_PORT="0",
               DANMAKU_REDIS_PORT=redis_port(), DANMAKU_REDIS_PREFIX="dmtest-run:")
    proc = subprocess.Popen(["make", "--no-print-directory", "run"], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        banner = read_until(proc, "Ctrl-C stops", 300)
        ws_url = re.search(r"ws://127\.0\.0\.1:(\d+)(/v1/ws\?room=demo)", banner)
        assert ws_url, banner
        curl = re.search(r"^  (curl -s .*?)\n\n", banner, re.S | re.M).group(1)
        curl = curl.replace("\\\n", " ")

        # The viewer page's address carries the sender token in its fragment,
        # and the page it serves posts to this run's ingest.
        token = re.search(r"sender token  (\S+)", banner).group(1)
        page = re.search(r"viewer page   http://127\.0\.0\.1:(\d+)(/\?room=demo)#token=(\S+)",
                         banner)
        assert page and page.group(3) == token, banner
        ingest_url = re.search(r"ingest API    (http://127\.0\.0\.1:\d+)/v1/", banner).group(1)
        status, _, html = http(int(page.group(1)), "GET", page.group(2))
        assert status == 200 and f'<meta name="dm-ingest" content="{ingest_url}">' in html

        viewer = WSClient(int(ws_url.group(1)), ws_url.group(2))
        assert viewer.recv_json()["op"] == "hello"
        assert viewer.recv_json(timeout=10)["op"] == "joined"
        sent = time.time()
        result = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=10)
        assert '"offset"' in result.stdout, result.stdout + result.stderr
        msg = viewer.recv_json(timeout=1)
        assert time.time() - sent < 1.0
        assert msg["op"] == "danmaku" and msg["data"]["text"] == "hello danmaku"
        viewer.close()
    finally:
        # Ctrl-C reaches the whole foreground process group.
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    # Nothing it started is left running.
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        left = subprocess.run(["pgrep", "-g", str(proc.pid), "-a"], capture_output=True,
                              text=True).stdout
        # Zombies (no init reaping in some sandboxes) hold nothing; anything else fails.
        alive = [l for l in left.splitlines()
                 if not open(f"/proc/{l.split()[0]}/stat").read().split()[2] == "Z"]
        assert not alive, "left running after Ctrl-C:\n" + "\n".join(alive)
