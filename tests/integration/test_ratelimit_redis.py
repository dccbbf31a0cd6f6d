"""The ingest admission script (server/ratelimit.c) run by the test Redis with
explicit times: GCRA exactness, user and room limits that never charge each
other for a refusal, slow mode, unique chat, mutes, the verdict order, and
a TTL on every key it writes. The script text comes from the unit test
binary (`test_ratelimit --print-lua`), so this checks exactly what ingest
sends; the key layout is the one documented in server/ratelimit.h."""

import os
import socket
import subprocess
import uuid

import pytest

from dmtest import BUILD, REDIS_PREFIX, redis_port

ADMIT, USER_RATE, ROOM_RATE, SLOW_MODE, DUPLICATE, MUTED = range(6)
S = 1_000_000  # µs
T0 = 1_700_000_000_123_457  # a Unix time in µs, all 16 digits significant (< 2**53)
MODES_TTL_MS = 2_592_000_000
UNIQUE_MAX = 256


class Redis:
    """The smallest RESP2 client: one command at a time, replies parsed."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
        self.buf = b""

    def close(self):
        self.sock.close()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RuntimeError(f"bad reply {line!r}")

    def __call__(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._reply()


@pytest.fixture(scope="module")
def script():
    tool = os.path.join(BUILD, "tests", "test_ratelimit")
    text = subprocess.run([tool, "--print-lua"], check=True, capture_output=True,
                          text=True).stdout
    assert "redis.call" in text
    return text


@pytest.fixture()
def r():
    conn = Redis(redis_port())
    yield conn
    for key in conn("KEYS", REDIS_PREFIX + "rl-*"):
        conn("DEL", key)
    conn.close()


class Limiter:
    """One room/user namespace; check() runs the script like ingest does."""

    def __init__(self, r, script, user=(0, 1), room=(0, 1)):
        self.r, self.script = r, script
        self.ns = REDIS_PREFIX + "rl-" + uuid.uuid4().hex[:8] + ":"
        self.user_interval, self.user_burst = user
        self.room_interval, self.room_burst = room
        self.sha = r("SCRIPT", "LOAD", script)

    def keys(self, room, uid):
        p = self.ns
        return [f"{p}rl:user:{uid}", f"{p}rl:room:{{{room}}}", f"{p}room:{{{room}}}:modes",
                f"{p}mute:{{{room}}}:{uid}", f"{p}rl:slow:{{{room}}}:{uid}",
                f"{p}rl:uniq:{{{room}}}:{uid}"]

    def check(self, room, uid, now, text_hash="00000000000000aa", unique_max=UNIQUE_MAX):
        reply = self.r("EVALSHA", self.sha, 6, *self.keys(room, uid), now,
                       self.user_interval, self.user_burst, self.room_interval,
                       self.room_burst, text_hash, MODES_TTL_MS, unique_max)
        assert len(reply) == 4 and all(isinstance(x, int) for x in reply), reply
        return reply[0], reply[1]

    def modes(self, room, slow=0, unique=0):
        self.r("HSET", self.keys(room, "-")[2], "slow", slow, "unique", unique)
        self.r("PEXPIRE", self.keys(room, "-")[2], MODES_TTL_MS)

    def all_keys(self):
        return self.r("KEYS", self.ns + "*")


def test_gcra_is_exact(r, script):
    """rate 2/s, burst 3: three at t=0, the fourth waits exactly 500 ms."""
    lim = Limiter(r, script, user=(500_000, 3))
    assert [lim.check("room", "u", T0) for _ in range(3)] == [(ADMIT, 0)] * 3
    assert lim.check("room", "u", T0) == (USER_RATE, 500)
    assert lim.check("room", "u", T0 + 499_001) == (USER_RATE, 1)  # rounded up
    assert lim.check("room", "u", T0 + 500_000) == (ADMIT, 0)
    assert lim.check("room", "u", T0 + 500_000) == (USER_RATE, 500)
    assert lim.check("room", "u", T0 + 1_000_000) == (ADMIT, 0)
    # The TAT is stored exactly (µs since 1970 need 16 digits).
    assert int(r("GET", lim.keys("room", "u")[0])) == T0 + 2_500_000
    # A long pause refills the burst, never more.
    later = T0 + 60 * S
    assert [lim.check("room", "u", later)[0] for _ in range(4)] == [ADMIT] * 3 + [USER_RATE]
    # The user limit spans rooms; other users are independent.
    assert lim.check("elsewhere", "u", later) == (USER_RATE, 500)
    assert lim.check("room", "v", later) == (ADMIT, 0)


def test_refusals_charge_nothing(r, script):
    """User: one per 10 s; room: one per second."""
    lim = Limiter(r, script, user=(10 * S, 1), room=(1 * S, 1))
    assert lim.check("r", "a", T0) == (ADMIT, 0)
    assert lim.check("r", "b", T0) == (ROOM_RATE, 1000)
    # b's room refusal did not use b's user budget.
    assert lim.check("r", "b", T0 + 1 * S) == (ADMIT, 0)
    # a's user refusal does not use the room: c still gets the slot.
    assert lim.check("r", "a", T0 + 2 * S) == (USER_RATE, 8000)
    assert lim.check("r", "c", T0 + 2 * S) == (ADMIT, 0)
    assert lim.check("r", "d", T0 + 2 * S) == (ROOM_RATE, 1000)
    # Refused requests wrote nothing for d.
    assert r("EXISTS", lim.keys("r", "d")[0]) == 0


def test_slow_mode(r, script):
    lim = Limiter(r, script, user=(1000, 1000))
    lim.modes("slow-room", slow=30)
    assert lim.check("slow-room", "u", T0) == (ADMIT, 0)
    assert lim.check("slow-room", "u", T0 + 10 * S) == (SLOW_MODE, 20000)
    assert lim.check("slow-room", "v", T0 + 10 * S) == (ADMIT, 0)
    assert lim.check("other-room", "u", T0 + 10 * S) == (ADMIT, 0)
    assert lim.check("slow-room", "u", T0 + 30 * S) == (ADMIT, 0)
    assert int(r("GET", lim.keys("slow-room", "u")[4])) == T0 + 30 * S
    assert 0 < r("PTTL", lim.keys("slow-room", "u")[4]) <= 30000
    # Turning it off applies at once.
    lim.modes("slow-room", slow=0)
    assert lim.check("slow-room", "u", T0 + 31 * S) == (ADMIT, 0)


def test_unique_chat(r, script):
    lim = Limiter(r, script, user=(1000, 1000))
    lim.modes("uniq-room", unique=60)
    assert lim.check("uniq-room", "u", T0, "aaaa") == (ADMIT, 0)
    assert lim.check("uniq-room", "u", T0 + 1 * S, "aaaa") == (DUPLICATE, 59000)
    assert lim.check("uniq-room", "u", T0 + 1 * S, "bbbb") == (ADMIT, 0)
    assert lim.check("uniq-room", "v", T0 + 1 * S, "aaaa") == (ADMIT, 0)
    assert lim.check("uniq-room", "u", T0 + 60 * S, "aaaa") == (ADMIT, 0)
    zkey = lim.keys("uniq-room", "u")[5]
    # aaaa at T0 was pruned by the window when aaaa was admitted again.
    members = r("ZRANGE", zkey, 0, -1, "WITHSCORES")
    assert members[0::2] == ["bbbb", "aaaa"]
    assert [int(float(x)) for x in members[1::2]] == [T0 + 1 * S, T0 + 60 * S]
    assert 0 < r("PTTL", zkey) <= 60000
    # Bounded by count as well as by time.
    for i in range(6):
        assert lim.check("uniq-room", "w", T0 + i, f"t{i}", unique_max=3) == (ADMIT, 0)
    assert r("ZCARD", lim.keys("uniq-room", "w")[5]) == 3


def test_mute(r, script):
    lim = Limiter(r, script, user=(1000, 1000))
    mkey = lim.keys("m-room", "troll")[3]
    r("SET", mkey, "1", "PX", 120000)
    verdict, remaining = lim.check("m-room", "troll", T0)
    assert verdict == MUTED and 119000 < remaining <= 120000
    assert lim.check("other", "troll", T0) == (ADMIT, 0)
    r("DEL", mkey)
    assert lim.check("m-room", "troll", T0) == (ADMIT, 0)


def test_verdict_order_and_longest_wait(r, script):
    lim = Limiter(r, script, user=(2 * S, 1), room=(1000, 1000))
    lim.modes("both", slow=5, unique=60)
    assert lim.check("both", "u", T0, "x") == (ADMIT, 0)
    assert lim.check("both", "u", T0 + 1 * S, "x") == (DUPLICATE, 59000)
    assert lim.check("both", "u", T0 + 1 * S, "y") == (SLOW_MODE, 4000)
    assert lim.check("both", "u", T0 + 5 * S, "y") == (ADMIT, 0)
    r("SET", lim.keys("both", "u")[3], "1", "PX", 60000)
    assert lim.check("both", "u", T0 + 5 * S, "y")[0] == MUTED


def test_every_key_has_a_ttl(r, script):
    lim = Limiter(r, script, user=(S, 5), room=(S, 400))
    lim.modes("ttl-room", slow=10, unique=10)
    assert lim.check("ttl-room", "u", T0) == (ADMIT, 0)
    keys = lim.all_keys()
    assert len(keys) == 5  # user, room, modes, slow, uniq (no mute)
    for key in keys:
        assert r("PTTL", key) > 0, key
    # The modes hash is renewed by comments once under half its TTL.
    mkey = lim.keys("ttl-room", "u")[2]
    r("PEXPIRE", mkey, MODES_TTL_MS // 2 - 1000)
    lim.check("ttl-room", "v", T0)
    assert r("PTTL", mkey) > MODES_TTL_MS - 60000


def test_redis_clock(r, script):
    """ARGV[1] "time": the script keeps time with Redis TIME (what ingest sends)."""
    lim = Limiter(r, script, user=(10 * S, 2))
    assert lim.check("clock-room", "u", "time") == (ADMIT, 0)
    assert lim.check("clock-room", "u", "time") == (ADMIT, 0)
    verdict, wait = lim.check("clock-room", "u", "time")
    assert verdict == USER_RATE and 9000 < wait <= 10000
    now_s, now_us = r("TIME")
    tat = int(r("GET", lim.keys("clock-room", "u")[0]))
    assert abs(tat - (int(now_s) * S + int(now_us) + 20 * S)) < 2 * S  # two admitted
