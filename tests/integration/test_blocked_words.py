"""Blocked words at ingest: refused with 400 `blocked`, or masked before the
comment reaches Kafka (so viewers and the history see only the mask); a
bad action or an unreadable list refuses to start."""

import os
import time
import uuid

import pytest

from dmtest import ROOT, http, mint, post_comment, start_ingest

WORDS = os.path.join(ROOT, "tests", "fixtures", "blocked-words-test.txt")


def _room():
    return "bw-" + uuid.uuid4().hex[:8]


def _metric(port, name):
    for line in http(port, "GET", "/metrics")[2].splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_blocked_words_are_refused():
    node = start_ingest("--blocked-words-file", WORDS)
    room, token = _room(), mint("bw-amy")
    try:
        for text in ("a BADWORD here", "b a d w o r d", "this is 坏词!", "ｓｐａｍ ｌｉｎｋ"):
            status, _, body = post_comment(node.port, room, text, token)
            assert status == 400 and body["error"] == "blocked", (text, body)
        assert post_comment(node.port, room, "a fine comment", token)[0] == 201
        assert _metric(node.port, "danmaku_comments_blocked_total") == 4
    finally:
        node.assert_clean_exit()


def test_blocked_words_are_masked_before_publishing():
    node = start_ingest("--blocked-words-file", WORDS, "--blocked-words-action", "mask")
    room, token = _room(), mint("bw-ben")
    try:
        status, _, posted = post_comment(node.port, room, "x badword y 坏词", token)
        assert status == 201, posted
        deadline = time.time() + 5
        while True:
            items = http(node.port, "GET", f"/v1/rooms/{room}/danmaku")[2]["items"]
            if items or time.time() > deadline:
                break
            time.sleep(0.05)
        assert [i["data"]["text"] for i in items] == ["x ******* y **"]
        assert _metric(node.port, "danmaku_comments_masked_total") == 1
    finally:
        node.assert_clean_exit()


@pytest.mark.parametrize("flags", [["--blocked-words-action", "drop"],
                                   ["--blocked-words-file", "/nonexistent/words.txt"]])
def test_bad_blocked_words_settings_refuse_to_start(flags):
    with pytest.raises(RuntimeError, match="exited 1"):
        start_ingest(*flags)
