#!/usr/bin/python3
"""wanrelay: a small WAN emulator for tests (stdlib only, Python 3.11).

The kernel of the test machines has no netem, so region-to-region links are
emulated by a TCP relay placed in front of a region's peer port:

    client --> [WanRelay 127.0.0.1:port] --> target host:port

Every accepted connection is relayed to the one target given; nothing else is
ever connected to.  Each direction is a FIFO of chunks: a chunk read at time t
is written at t + delay (+ a uniform 0..jitter extra), but never before the
chunk read before it, so bytes are never reordered.  The round trip through
the relay therefore grows by 2 x delay.  EOF is delayed like data and then
propagated as shutdown(SHUT_WR) on the other side (half-close); a connection
is closed once both directions have seen EOF.  A reset (or any error) on one
side is propagated as a reset (SO_LINGER 0) to the other side.

Note that the relay accepts the client's connection and connects to the
target at once: connection set-up is not delayed, only bytes and EOFs are.

Modes, switchable at run time from any thread:

  pass       normal relaying.
  blackhole  every connection, existing or new, goes silent in both
             directions: bytes are read and discarded, nothing is forwarded
             or answered; new connections are accepted and held (the target
             never sees them).  Leaving blackhole mode resets (SO_LINGER 0)
             every connection that was silenced, so clients reconnect.
  reset      every existing connection is reset (SO_LINGER 0 on both sides)
             and every new one is reset right after accept.

Library use (tests/blackbox does `sys.path.insert(0, <repo>/tests/wan)`):

    from wanrelay import WanRelay
    with WanRelay("127.0.0.1", peer_port, delay_ms=20) as relay:
        ...connect to ("127.0.0.1", relay.port)...
        relay.set_delay(50, jitter_ms=5)
        relay.blackhole(); relay.pass_through(); relay.reset()
        relay.stats()   # dict of counters, see WanRelay.stats

Command line (for benchmark scripts):

    python3 tests/wan/wanrelay.py --listen 127.0.0.1:0 --target 127.0.0.1:7101 \
        --delay-ms 20 [--jitter-ms 0] [--control 127.0.0.1:0]

prints one JSON line {"listen": "127.0.0.1:P", "port": P, "control_port": C,
"target": "..."} on stdout and runs until SIGTERM or SIGINT.  The control
port takes one command per line and answers each with one JSON line:

    delay MS [JITTER]   -> {"ok": true, ...stats}
    blackhole | reset | pass | stats
                        -> {"ok": true, ...stats}
    anything else       -> {"ok": false, "error": "..."}

e.g. `echo blackhole | nc -q1 127.0.0.1 $C` or, without nc, bash's
/dev/tcp: `exec 3<>/dev/tcp/127.0.0.1/$C; echo pass >&3; read -r a <&3`.
"""

import argparse
import asyncio
import collections
import json
import random
import signal
import socket
import struct
import sys
import threading

__all__ = ["WanRelay", "MODES"]

MODES = ("pass", "blackhole", "reset")

_LINGER_RST = struct.pack("ii", 1, 0)
_EOF = None  # queue marker for end of stream


def _set_rst(transport):
    """Make the next close of `transport` send a RST (SO_LINGER on, 0 s)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    except OSError:
        pass


class _Pipe:
    """One direction of a relayed connection: a FIFO of (due time, bytes|EOF)
    drained to the destination transport when each head chunk falls due."""

    def __init__(self, conn, name):
        self.conn = conn
        self.name = name          # "up" (client -> target) or "down"
        self.src = None           # transport read from
        self.dst = None           # transport written to (None while connecting)
        self.queue = collections.deque()
        self.queued = 0           # bytes in queue
        self.last_due = 0.0
        self.timer = None
        self.dst_paused = False   # dst's write buffer is above its high mark
        self.src_paused = False   # we paused reading on src
        self.eof_out = False      # EOF written to dst

    def push(self, data):
        relay = self.conn.relay
        loop = relay._loop
        now = loop.time()
        due = now + relay._delay
        if relay._jitter > 0:
            due += random.uniform(0.0, relay._jitter)
        if due < self.last_due:
            due = self.last_due   # never overtake the previous chunk
        self.last_due = due
        self.queue.append((due, data))
        if data is not _EOF:
            self.queued += len(data)
        if self.timer is None:
            self.flush()
        else:
            self.update_src()

    def flush(self):
        self.timer = None
        conn = self.conn
        if conn.closed or conn.silenced or self.dst is None:
            return
        relay = conn.relay
        dst = self.dst
        now = relay._loop.time()
        q = self.queue
        while q and q[0][0] <= now:
            if dst.is_closing():
                return  # connection_lost will follow and tear the conn down
            _, data = q.popleft()
            if data is _EOF:
                self.eof_out = True
                try:
                    dst.write_eof()
                except OSError:
                    pass
                conn.check_done()
                return
            self.queued -= len(data)
            dst.write(data)
            relay._counters["bytes_" + self.name] += len(data)
        if q:
            self.timer = relay._loop.call_at(q[0][0], self.flush)
        self.update_src()

    def update_src(self):
        src = self.src
        if src is None or src.is_closing():
            return
        limit = self.conn.relay.max_buffer
        if self.conn.silenced:
            want_pause = False
        elif self.src_paused:
            want_pause = self.dst_paused or self.queued > limit // 2
        else:
            want_pause = self.dst_paused or self.queued > limit
        if want_pause != self.src_paused:
            self.src_paused = want_pause
            if want_pause:
                src.pause_reading()
            else:
                src.resume_reading()

    def drop(self):
        """Cancel the timer and forget queued bytes (silence / teardown)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        dropped = self.queued
        self.queue.clear()
        self.queued = 0
        return dropped


class _Side(asyncio.Protocol):
    """Protocol of one socket of a relayed connection (client or upstream)."""

    def __init__(self, conn, side):
        self.conn = conn
        self.side = side  # "client" or "upstream"
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.conn.relay._live.add(transport)
        self.conn.attach(self.side, transport)

    def data_received(self, data):
        self.conn.on_data(self.side, data)

    def eof_received(self):
        self.conn.on_eof(self.side)
        return True  # keep the transport open: half-close

    def pause_writing(self):
        self.conn.on_write_pause(self.side, True)

    def resume_writing(self):
        self.conn.on_write_pause(self.side, False)

    def connection_lost(self, exc):
        self.conn.relay._live.discard(self.transport)
        self.conn.on_lost(self.side, exc)


class _Conn:
    """A relayed connection: client transport, upstream transport, two pipes."""

    def __init__(self, relay):
        self.relay = relay
        self.client = None
        self.upstream = None
        self.up = _Pipe(self, "up")
        self.down = _Pipe(self, "down")
        self.silenced = False
        self.closed = False
        self.connect_task = None

    # -- events from the protocols

    def attach(self, side, transport):
        if side == "client":
            self.client = transport
            self.up.src = transport
            self.down.dst = transport
            self.relay._accepted(self)
            return
        self.upstream = transport
        if self.closed or self.silenced:
            # torn down or silenced while connecting: the target must not
            # see anything of this connection.
            _set_rst(transport)
            transport.abort()
            self.upstream = None
            return
        self.down.src = transport
        self.up.dst = transport
        self.up.flush()

    def on_data(self, side, data):
        if self.closed:
            return
        pipe = self.up if side == "client" else self.down
        if self.silenced:
            self.relay._counters["dropped_" + pipe.name] += len(data)
            return
        pipe.push(data)

    def on_eof(self, side):
        if self.closed or self.silenced:
            return
        (self.up if side == "client" else self.down).push(_EOF)

    def on_write_pause(self, side, paused):
        pipe = self.down if side == "client" else self.up
        pipe.dst_paused = paused
        if not self.closed:
            pipe.update_src()

    def on_lost(self, side, exc):
        if side == "upstream" and self.upstream is None:
            return
        if self.closed:
            return
        if self.silenced:
            # the other side stays held until blackhole mode is left
            if side == "client":
                self.client = None
            else:
                self.upstream = None
            self.up.src = self.down.dst = self.client
            self.down.src = self.up.dst = self.upstream
            if self.client is None and self.upstream is None:
                self.closed = True
                self.relay._conns.discard(self)
            return
        # an error (reset, broken pipe) on one side: reset the other one.
        self.abort(rst=True)

    # -- actions

    def check_done(self):
        if self.up.eof_out and self.down.eof_out and not self.closed:
            self.closed = True
            self.relay._conns.discard(self)
            for t in (self.client, self.upstream):
                if t is not None:
                    t.close()  # flushes what is still buffered

    def silence(self):
        if self.closed or self.silenced:
            return
        self.silenced = True
        c = self.relay._counters
        c["dropped_up"] += self.up.drop()
        c["dropped_down"] += self.down.drop()
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()
        self.up.update_src()
        self.down.update_src()

    def abort(self, rst=True):
        if self.closed and self.client is None and self.upstream is None:
            return
        self.closed = True
        self.relay._conns.discard(self)
        self.up.drop()
        self.down.drop()
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()
        for t in (self.client, self.upstream):
            if t is not None:
                if rst:
                    _set_rst(t)
                t.abort()
        self.client = self.upstream = None


class WanRelay:
    """TCP relay with delay, jitter, blackhole and reset; see the module doc.

    All methods are thread-safe; mode and delay changes are in effect when
    the call returns.  stop() is idempotent; the object is a context manager
    (start() on enter when not started yet, stop() on exit).
    """

    def __init__(self, target_host, target_port, listen_host="127.0.0.1",
                 listen_port=0, delay_ms=0, jitter_ms=0,
                 max_buffer=8 * 1024 * 1024):
        self.target_host = target_host
        self.target_port = int(target_port)
        self.listen_host = listen_host
        self.listen_port = int(listen_port)
        self.max_buffer = int(max_buffer)  # queued bytes per direction before
                                           # reading from the source pauses
        self._delay = 0.0
        self._jitter = 0.0
        self._apply_delay(delay_ms, jitter_ms)
        self._mode = "pass"
        self._counters = dict(accepted=0, bytes_up=0, bytes_down=0,
                              dropped_up=0, dropped_down=0, resets=0,
                              upstream_failures=0)
        self._conns = set()
        self._live = set()            # open transports
        self._control_tasks = set()
        self._control_writers = set()
        self._servers = []
        self._loop = None
        self._thread = None
        self._state = "new"           # new -> running -> stopped
        self._lock = threading.Lock()
        self.port = None
        self.control_port = None

    # ------------------------------------------------------------ lifecycle

    def start(self):
        """Bind the listening socket and run the relay in a background thread."""
        with self._lock:
            if self._state != "new":
                raise RuntimeError(f"WanRelay already {self._state}")
            self._state = "running"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"wanrelay->{self.target_port}")
        self._thread.start()
        try:
            fut = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
            self.port = fut.result(10)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Close every connection and socket and join the thread (idempotent)."""
        with self._lock:
            state, self._state = self._state, "stopped"
        if state != "running":
            return
        if threading.current_thread() is self._thread:
            raise RuntimeError("WanRelay.stop() called from the relay thread")
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self):
        if self._state == "new":
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return (f"<WanRelay {self.listen_host}:{self.port} -> "
                f"{self.target_host}:{self.target_port} {self._mode} "
                f"delay={self._delay * 1000:g}ms>")

    @property
    def address(self):
        return (self.listen_host, self.port)

    @property
    def mode(self):
        return self._mode

    # ------------------------------------------------------------ controls

    def set_delay(self, ms, jitter_ms=0):
        """One-way delay (each direction) and jitter for bytes read from now on."""
        self._call(self._apply_delay, ms, jitter_ms)

    def blackhole(self):
        """Silence every connection, existing and new, in both directions."""
        self._call(self._set_mode, "blackhole")

    def reset(self):
        """Reset every existing connection and every new one until pass_through()."""
        self._call(self._set_mode, "reset")

    def pass_through(self):
        """Back to normal relaying; connections silenced by blackhole() are reset."""
        self._call(self._set_mode, "pass")

    def stats(self):
        """Counters: accepted, active, bytes_up (client->target), bytes_down
        (target->client), dropped_up/down (discarded in blackhole mode), resets
        (connections reset by the relay), upstream_failures (connects to the
        target that failed); plus mode, delay_ms, jitter_ms, port, target."""
        return self._call(self._stats)

    def serve_control(self, host="127.0.0.1", port=0):
        """Open the line-based control port (see module doc); returns its port."""
        if self._state != "running":
            raise RuntimeError("WanRelay not running")
        fut = asyncio.run_coroutine_threadsafe(self._control_listen(host, port), self._loop)
        self.control_port = fut.result(10)
        return self.control_port

    # ------------------------------------------------------------ internals

    def _call(self, fn, *args):
        if self._state != "running" or threading.current_thread() is self._thread:
            return fn(*args)

        async def call():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(10)

    def _run(self):
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            asyncio.set_event_loop(None)

    async def _listen(self):
        server = await self._loop.create_server(
            lambda: _Side(_Conn(self), "client"), self.listen_host,
            self.listen_port, reuse_address=True, backlog=1024)
        self._servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def _shutdown(self):
        for server in self._servers:
            server.close()
        for w in list(self._control_writers):
            w.transport.abort()
        for t in list(self._control_tasks):
            t.cancel()
        for conn in list(self._conns):
            conn.abort(rst=False)
        for t in list(self._live):
            t.abort()
        if self._control_tasks:
            await asyncio.gather(*self._control_tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        # transports close their sockets in a callback after abort()
        for _ in range(1000):
            if not self._live:
                break
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        self._servers.clear()

    def _apply_delay(self, ms, jitter_ms=0):
        ms, jitter_ms = float(ms), float(jitter_ms or 0)
        if ms < 0 or jitter_ms < 0:
            raise ValueError("delay and jitter must be >= 0")
        self._delay = ms / 1000.0
        self._jitter = jitter_ms / 1000.0

    def _set_mode(self, mode):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        previous, self._mode = self._mode, mode
        conns = list(self._conns)
        if mode == "blackhole":
            for conn in conns:
                conn.silence()
        elif mode == "reset":
            for conn in conns:
                conn.abort(rst=True)
                self._counters["resets"] += 1
        elif previous == "blackhole":
            for conn in conns:
                if conn.silenced:
                    conn.abort(rst=True)

    def _stats(self):
        s = dict(self._counters)
        s.update(active=len(self._conns), mode=self._mode,
                 delay_ms=self._delay * 1000.0, jitter_ms=self._jitter * 1000.0,
                 port=self.port, target=f"{self.target_host}:{self.target_port}")
        return s

    def _accepted(self, conn):
        self._counters["accepted"] += 1
        self._conns.add(conn)
        if self._mode == "reset":
            self._counters["resets"] += 1
            conn.abort(rst=True)
        elif self._mode == "blackhole":
            conn.silence()
        else:
            conn.connect_task = self._loop.create_task(self._connect(conn))

    async def _connect(self, conn):
        try:
            await self._loop.create_connection(
                lambda: _Side(conn, "upstream"), self.target_host, self.target_port)
        except OSError:
            self._counters["upstream_failures"] += 1
            if not conn.silenced:
                conn.abort(rst=True)  # the client sees what a refused connect is

    # -- control port

    async def _control_listen(self, host, port):
        server = await asyncio.start_server(self._control_client, host, port)
        self._servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def _control_client(self, reader, writer):
        task = asyncio.current_task()
        self._control_tasks.add(task)
        self._control_writers.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                answer = self._control_command(line.decode("utf-8", "replace"))
                if answer is None:
                    continue
                writer.write((json.dumps(answer) + "\n").encode())
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._control_tasks.discard(task)
            self._control_writers.discard(writer)
            writer.transport.abort()

    def _control_command(self, line):
        words = line.split()
        if not words:
            return None
        cmd, args = words[0].lower(), words[1:]
        try:
            if cmd == "delay" and 1 <= len(args) <= 2:
                self._apply_delay(*args)
            elif cmd in ("blackhole", "reset", "pass") and not args:
                self._set_mode(cmd)
            elif cmd == "stats" and not args:
                pass
            else:
                return {"ok": False, "error": f"bad command: {line.strip()!r}; "
                        "expected delay MS [JITTER] | blackhole | reset | pass | stats"}
        except ValueError as e:
            return {"ok": False, "error": str(e)}
        answer = {"ok": True}
        answer.update(self._stats())
        return answer


# ---------------------------------------------------------------- CLI

def _hostport(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def main(argv=None):
    ap = argparse.ArgumentParser(description="TCP relay emulating a WAN link "
                                 "(delay, jitter, blackhole, reset).")
    ap.add_argument("--listen", type=_hostport, default=("127.0.0.1", 0),
                    metavar="HOST:PORT", help="address to accept on (port 0: any free)")
    ap.add_argument("--target", type=_hostport, required=True, metavar="HOST:PORT",
                    help="the only address connections are relayed to")
    ap.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay")
    ap.add_argument("--jitter-ms", type=float, default=0.0,
                    help="extra uniform 0..J ms per chunk (order is preserved)")
    ap.add_argument("--control", type=_hostport, metavar="HOST:PORT",
                    help="line-based control port (delay MS [J] | blackhole | reset | pass | stats)")
    args = ap.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    relay = WanRelay(args.target[0], args.target[1], listen_host=args.listen[0],
                     listen_port=args.listen[1], delay_ms=args.delay_ms,
                     jitter_ms=args.jitter_ms)
    relay.start()
    try:
        if args.control:
            relay.serve_control(*args.control)
        print(json.dumps({"listen": f"{relay.listen_host}:{relay.port}",
                          "port": relay.port, "control_port": relay.control_port,
                          "target": f"{relay.target_host}:{relay.target_port}"}),
              flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        relay.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
