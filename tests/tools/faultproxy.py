"""A TCP fault-injection proxy for tests (Python 3 standard library only).

It listens on 127.0.0.1 (a free port unless one is given) and forwards every
connection to a target, with faults switched at run time from the test:

    proxy = FaultProxy(("127.0.0.1", redis_port)).start()
    node = start_ingest("--redis-port", str(proxy.port))
    proxy.latency(200)          # +200 ms each way (or latency(up_ms, down_ms))
    proxy.stall()               # nothing forwarded, connections kept open
    proxy.reset()               # RST every current connection (SO_LINGER 0)
    proxy.cut()                 # close all and refuse new ones (ECONNREFUSED);
                                # cut("reset"): accept then RST at once;
                                # cut("blackhole"): accept, then silence
    proxy.normal()              # forward again at full speed
    proxy.stop()                # also on failure: use it as a context manager

"up" is client -> target, "down" is target -> client. Latency delays each
chunk by the given time from when it was read, so a stream keeps its
throughput and its order; changing it applies to data already waiting.
A stall stops reading as well as writing, so the peers' kernel buffers fill
like those of a frozen process; the data waiting is delivered in order after
normal(). Every control call returns once the change is in effect.

The proxy runs an asyncio loop on a daemon thread of the calling process;
stats() gives counters for the test's figures."""

import asyncio
import socket
import struct
import threading
import time

UP, DOWN = "up", "down"
_CHUNK = 65536
_QUEUE_CHUNKS = 256  # per direction; a full queue stops reading (backpressure)
_CONTROL_TIMEOUT = 10.0


def _rst(transport):
    """Closes a transport's socket with an RST (SO_LINGER on, timeout 0)."""
    if transport is None or transport.is_closing():
        if transport is not None:
            transport.abort()
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


class _Conn:
    """One proxied connection: the client's side, the target's side and the
    two pumps between them."""

    def __init__(self, proxy, cr, cw):
        self.proxy = proxy
        self.cr, self.cw = cr, cw
        self.ur = self.uw = None
        self.tasks = []
        self.closed = False

    def abort(self, rst):
        if self.closed:
            return
        self.closed = True
        for w in (self.cw, self.uw):
            if w is None:
                continue
            if rst:
                _rst(w.transport)
            else:
                w.close()  # flushes what is buffered, then FIN
        for t in self.tasks:
            if t is not asyncio.current_task():
                t.cancel()
        self.proxy._conns.discard(self)


class FaultProxy:
    def __init__(self, target=None, port=0, host="127.0.0.1", name="proxy"):
        """target: (host, port) to forward to, or None until set_target()
        (connections accepted before are reset at once)."""
        self.name = name
        self.host = host
        self.port = port
        self._target = target
        self._loop = None
        self._thread = None
        self._server = None
        self._conns = set()
        self._held = set()  # blackholed client writers, no target side
        self._flowing = None  # asyncio.Event: clear while stalled
        self._latency = {UP: 0.0, DOWN: 0.0}
        self._cut = None  # None, "refuse", "reset" or "blackhole"
        self.mode = "normal"
        self._stats = {"accepted": 0, "refused": 0, "target_failed": 0, "reset": 0,
                       "bytes_up": 0, "bytes_down": 0}

    # -- life cycle ---------------------------------------------------------

    def start(self):
        ready = threading.Event()
        error = []

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._flowing = asyncio.Event()
                self._flowing.set()
                loop.run_until_complete(self._listen())
            except BaseException as e:  # reported to start()
                error.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=f"faultproxy-{self.name}", daemon=True)
        self._thread.start()
        ready.wait(_CONTROL_TIMEOUT)
        if error:
            raise error[0]
        if self._server is None:
            raise RuntimeError(f"{self.name}: did not start")
        return self

    def stop(self):
        """Closes everything; safe to call more than once, and after a failure."""
        if self._loop is None or self._thread is None:
            return
        if self._thread.is_alive():
            try:
                self._call(self._shutdown())
            except Exception:
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_CONTROL_TIMEOUT)
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- control (from any thread) -----------------------------------------

    def set_target(self, target):
        self._call(self._set(target=target))

    def latency(self, up_ms, down_ms=None):
        """Adds up_ms to client->target and down_ms (default: up_ms) to
        target->client; latency(0) removes it. Does not end a stall or cut."""
        down_ms = up_ms if down_ms is None else down_ms
        self._call(self._set(latency={UP: up_ms / 1000.0, DOWN: down_ms / 1000.0}))

    def stall(self):
        self._call(self._set_stall(True))

    def reset(self):
        """RSTs every current connection (both sides); new ones are served
        as the current mode says."""
        return self._call(self._reset_all())

    def cut(self, how="refuse"):
        """Closes every connection (RST) and then refuses ("refuse": the
        listener is closed, so connects get ECONNREFUSED), resets ("reset":
        accepted, then RST at once) or ignores ("blackhole": accepted, never
        answered) new ones."""
        if how not in ("refuse", "reset", "blackhole"):
            raise ValueError(how)
        self._call(self._set_cut(how))

    def normal(self):
        """No latency, no stall, no cut: forward everything again."""
        self._call(self._set_normal())

    def stats(self):
        s = dict(self._stats)
        s["open"] = len(self._conns)
        s["mode"] = self.mode
        return s

    def _call(self, coro):
        if self._loop is None or not self._thread or not self._thread.is_alive():
            coro.close()
            raise RuntimeError(f"{self.name}: not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_CONTROL_TIMEOUT)

    # -- on the loop ----------------------------------------------------------

    async def _listen(self):
        self._server = await asyncio.start_server(self._on_client, self.host, self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    def _close_listener(self):
        # close() shuts the listening socket at once; wait_closed() is not
        # awaited (from Python 3.12 on it waits for every accepted connection).
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _set(self, target=None, latency=None):
        if target is not None:
            self._target = target
        if latency is not None:
            self._latency = latency
            self._describe()

    def _describe(self):
        if self._cut:
            self.mode = "cut:" + self._cut
        elif not self._flowing.is_set():
            self.mode = "stall"
        elif self._latency[UP] or self._latency[DOWN]:
            self.mode = f"latency:{self._latency[UP] * 1000:.0f}/{self._latency[DOWN] * 1000:.0f}ms"
        else:
            self.mode = "normal"

    async def _set_stall(self, on):
        if on:
            self._flowing.clear()
        else:
            self._flowing.set()
        self._describe()

    async def _reset_all(self):
        n = len(self._conns) + len(self._held)
        for c in list(self._conns):
            c.abort(rst=True)
        for w in list(self._held):
            _rst(w.transport)
        self._held.clear()
        self._stats["reset"] += n
        return n

    async def _set_cut(self, how):
        self._cut = how
        self._describe()
        await self._reset_all()
        if how == "refuse":
            self._close_listener()

    async def _set_normal(self):
        self._latency = {UP: 0.0, DOWN: 0.0}
        self._cut = None
        self._flowing.set()
        # Connections held in a blackhole never had a target side.
        for w in list(self._held):
            _rst(w.transport)
        self._held.clear()
        if self._server is None:
            # The same port again (SO_REUSEADDR): clients keep their address.
            await self._listen()
        self._describe()

    async def _shutdown(self):
        self._cut = "refuse"
        self._flowing.set()
        await self._reset_all()
        self._close_listener()

    async def _on_client(self, cr, cw):
        self._stats["accepted"] += 1
        if self._cut == "blackhole":
            self._held.add(cw)
            return
        if self._cut is not None or self._target is None:
            self._stats["refused"] += 1
            _rst(cw.transport)
            return
        conn = _Conn(self, cr, cw)
        self._conns.add(conn)
        try:
            conn.ur, conn.uw = await asyncio.open_connection(*self._target)
        except OSError:
            self._stats["target_failed"] += 1
            conn.abort(rst=True)
            return
        if conn.closed:  # reset or cut while connecting
            _rst(conn.uw.transport)
            return
        conn.tasks = [asyncio.ensure_future(self._pump(conn, conn.cr, conn.uw, UP)),
                      asyncio.ensure_future(self._pump(conn, conn.ur, conn.cw, DOWN))]

    async def _pump(self, conn, reader, writer, direction):
        """Forwards one direction: a reader task stamps chunks with the time
        read, this task writes each once its latency has passed (and no
        stall holds it). End of stream or an error closes both sides."""
        loop = asyncio.get_running_loop()
        q = asyncio.Queue(_QUEUE_CHUNKS)

        async def read_side():
            try:
                while True:
                    await self._flowing.wait()
                    data = await reader.read(_CHUNK)
                    await q.put((loop.time(), data))
                    if not data:
                        return
            except (OSError, asyncio.IncompleteReadError):
                await q.put((loop.time(), b""))

        rtask = asyncio.ensure_future(read_side())
        try:
            while True:
                t, data = await q.get()
                while True:
                    await self._flowing.wait()
                    wait = t + self._latency[direction] - loop.time()
                    if wait <= 0:
                        break
                    # Short naps: a latency or stall change applies at once.
                    await asyncio.sleep(min(wait, 0.02))
                if not data:
                    break
                writer.write(data)
                self._stats["bytes_" + direction] += len(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            rtask.cancel()
            conn.abort(rst=False)


def _selftest():
    """python3 faultproxy.py: a quick check of each mode against an echo server."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def serve(c):
        try:
            for d in iter(lambda: c.recv(4096), b""):
                c.sendall(d)
        except OSError:
            pass  # reset by the proxy: expected here
        c.close()

    def echo():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=echo, daemon=True).start()
    with FaultProxy(srv.getsockname()) as p:
        def rtt(sock):
            t = time.monotonic()
            sock.sendall(b"x")
            assert sock.recv(1) == b"x"
            return time.monotonic() - t

        s = socket.create_connection(("127.0.0.1", p.port), timeout=3)
        print("normal rtt %.3f" % rtt(s))
        p.latency(100)
        print("latency 100 rtt %.3f" % rtt(s))
        p.normal()
        p.stall()
        s.sendall(b"y")
        s.settimeout(0.5)
        try:
            s.recv(1)
            raise AssertionError("stall forwarded")
        except socket.timeout:
            print("stall: nothing")
        p.normal()
        s.settimeout(3)
        assert s.recv(1) == b"y"
        print("after stall: delivered")
        print("reset:", p.reset())
        try:
            s.sendall(b"z")
            print("after reset:", s.recv(1))
        except OSError as e:
            print("after reset:", type(e).__name__)
        p.cut()
        try:
            socket.create_connection(("127.0.0.1", p.port), timeout=1)
            raise AssertionError("cut accepted")
        except ConnectionRefusedError:
            print("cut: refused")
        p.normal()
        s = socket.create_connection(("127.0.0.1", p.port), timeout=3)
        print("back: rtt %.3f" % rtt(s), p.stats())
    srv.close()


if __name__ == "__main__":
    _selftest()
