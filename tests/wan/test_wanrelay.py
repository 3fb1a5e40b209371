"""Tests of the WAN emulator (tests/wan/wanrelay.py) against local servers.

Run with: /usr/bin/python3 -m pytest tests/wan
"""

import json
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from wanrelay import WanRelay  # noqa: E402


# ---------------------------------------------------------------- helpers

class EchoServer:
    """Threaded loopback echo server: echoes until EOF, then half-closes.
    Counts accepted connections; stop() closes every socket and joins."""

    def __init__(self):
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.accepted = 0
        self.socks = set()
        self.threads = []
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while self.running:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                if not self.running:
                    s.close()
                    return
                self.accepted += 1
                self.socks.add(s)
                t = threading.Thread(target=self._serve, args=(s,), daemon=True)
                self.threads.append(t)
            t.start()

    def _serve(self, s):
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    s.shutdown(socket.SHUT_WR)
                    break
                s.sendall(data)
        except OSError:
            pass
        finally:
            with self.lock:
                self.socks.discard(s)
            s.close()

    def stop(self):
        with self.lock:
            self.running = False
            socks = list(self.socks)
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lsock.close()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.thread.join(5)
        for t in list(self.threads):
            t.join(5)


@pytest.fixture
def echo():
    srv = EchoServer()
    yield srv
    srv.stop()


@pytest.fixture
def relays():
    """Factory of started relays, all stopped at teardown."""
    made = []

    def make(*args, **kw):
        r = WanRelay(*args, **kw).start()
        made.append(r)
        return r
    yield make
    for r in made:
        r.stop()


def connect(port, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_all(s):
    buf = bytearray()
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return bytes(buf)
        buf += chunk


def ping(s, payload=b"ping"):
    t0 = time.monotonic()
    s.sendall(payload)
    assert recv_exact(s, len(payload)) == payload
    return time.monotonic() - t0


def echo_through(port, data):
    """Sends data while reading the echo, half-closes, returns all read until EOF."""
    s = connect(port, timeout=10)
    try:
        def send():
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        t = threading.Thread(target=send)
        t.start()
        got = recv_all(s)
        t.join(10)
        return got
    finally:
        s.close()


def wait_for(fn, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def expect_reset(s):
    """The peer reset the connection: recv raises ECONNRESET."""
    s.settimeout(3)
    with pytest.raises(ConnectionResetError):
        for _ in range(3):
            s.recv(100)  # (a plain EOF would loop and then fail the raises)


def connect_expect_reset(port):
    """A connection the relay resets right after accept: the client sees the
    reset either at connect (if it came before connect() returned) or at
    its first read."""
    try:
        s = connect(port)
    except ConnectionResetError:
        return
    with s:
        expect_reset(s)


# ---------------------------------------------------------------- relaying

def test_one_mib_random_both_ways_intact(echo, relays):
    relay = relays("127.0.0.1", echo.port)
    data = random.randbytes(1 << 20)
    assert echo_through(relay.port, data) == data
    st = wait_for(lambda: (lambda s: s if s["bytes_down"] == len(data) else None)(relay.stats()),
                  what="counters")
    assert st["accepted"] == 1
    assert st["bytes_up"] == len(data) and st["bytes_down"] == len(data)


def test_large_transfer_with_delay_and_many_connections(echo, relays):
    relay = relays("127.0.0.1", echo.port, delay_ms=5)
    blobs = [random.randbytes(random.randint(1, 200_000)) for _ in range(40)]
    results = [None] * len(blobs)

    def run(i):
        results[i] = echo_through(relay.port, blobs[i])
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(blobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert results == blobs
    st = relay.stats()
    assert st["accepted"] == len(blobs)
    assert st["bytes_up"] == sum(map(len, blobs))


def test_half_close_from_target_side(relays):
    """Target sends a greeting and shuts down its write side but keeps reading:
    the client sees EOF and can still send."""
    lsock = socket.create_server(("127.0.0.1", 0))
    got = []

    def serve():
        s, _ = lsock.accept()
        with s:
            s.sendall(b"hello")
            s.shutdown(socket.SHUT_WR)
            got.append(recv_all(s))
    t = threading.Thread(target=serve)
    t.start()
    try:
        relay = relays("127.0.0.1", lsock.getsockname()[1], delay_ms=10)
        with connect(relay.port) as c:
            assert recv_all(c) == b"hello"
            c.sendall(b"still talking")
            c.shutdown(socket.SHUT_WR)
            t.join(5)
        assert got == [b"still talking"]
    finally:
        lsock.close()
        t.join(5)


def test_delay_applies_to_round_trip_and_changes_at_run_time(echo, relays):
    relay = relays("127.0.0.1", echo.port)
    with connect(relay.port) as s:
        assert ping(s) < 0.05
        relay.set_delay(50)
        rtts = [ping(s) for _ in range(3)]
        assert min(rtts) >= 0.100, rtts
        assert max(rtts) < 0.100 + 0.080, rtts
        relay.set_delay(0)
        assert ping(s) < 0.05
    st = relay.stats()
    assert st["delay_ms"] == 0 and st["jitter_ms"] == 0


def test_jitter_never_reorders(echo, relays):
    relay = relays("127.0.0.1", echo.port, delay_ms=2, jitter_ms=15)
    n = 300
    with connect(relay.port) as s:
        def send():
            for i in range(n):
                s.sendall(struct.pack("!I", i))
                time.sleep(0.0005)
        t = threading.Thread(target=send)
        t0 = time.monotonic()
        t.start()
        data = recv_exact(s, 4 * n)
        t.join(5)
        elapsed = time.monotonic() - t0
    assert list(struct.unpack(f"!{n}I", data)) == list(range(n))
    assert elapsed >= 0.004


def test_blackhole_then_pass(echo, relays):
    relay = relays("127.0.0.1", echo.port)
    old = connect(relay.port)
    assert ping(old) < 0.5
    assert echo.accepted == 1

    relay.blackhole()
    old.settimeout(0.3)
    with pytest.raises(socket.timeout):
        ping(old)
    # a new connection is accepted and held, but goes nowhere
    new = connect(relay.port)
    new.settimeout(0.3)
    with pytest.raises(socket.timeout):
        ping(new)
    assert echo.accepted == 1, "a blackholed connection must not reach the target"
    st = relay.stats()
    assert st["mode"] == "blackhole" and st["accepted"] == 2
    assert st["dropped_up"] >= 8

    relay.pass_through()
    # the silenced connections were closed: they stay dead
    for s in (old, new):
        s.settimeout(3)
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
        s.close()
    with connect(relay.port) as fresh:
        assert ping(fresh) < 0.5
    assert echo.accepted == 2


def test_reset_existing_and_new_connections(echo, relays):
    relay = relays("127.0.0.1", echo.port, delay_ms=5)
    with connect(relay.port) as old:
        ping(old)
        relay.reset()
        expect_reset(old)
    connect_expect_reset(relay.port)
    st = relay.stats()
    assert st["mode"] == "reset" and st["resets"] == 2 and st["active"] == 0
    relay.pass_through()
    with connect(relay.port) as fresh:
        ping(fresh)
    assert echo.accepted == 2


def test_target_refusing_resets_client(relays):
    probe = socket.create_server(("127.0.0.1", 0))
    dead_port = probe.getsockname()[1]
    probe.close()
    relay = relays("127.0.0.1", dead_port)
    connect_expect_reset(relay.port)
    assert relay.stats()["upstream_failures"] == 1


# ---------------------------------------------------------------- lifecycle

def _fds():
    return set(os.listdir("/proc/self/fd"))


def _relay_threads():
    return [t for t in threading.enumerate() if t.name.startswith("wanrelay")]


def test_stop_leaves_no_thread_or_socket(echo):
    time.sleep(0.05)
    fds_before = len(_fds())
    threads_before = set(threading.enumerate())

    with WanRelay("127.0.0.1", echo.port, delay_ms=20) as relay:
        port = relay.port
        held = [connect(port) for _ in range(5)]
        for s in held[:3]:
            ping(s)
        held[3].sendall(b"in flight")   # still queued in the relay
        relay.stats()
    relay.stop()  # idempotent
    relay.stop()

    assert not _relay_threads()
    for s in held:
        s.close()
    # (the echo server's per-connection threads end once they see the close)
    wait_for(lambda: set(threading.enumerate()) <= threads_before,
             what="no thread left behind")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    # the echo server closes its side once the relay's sockets are gone
    wait_for(lambda: len(_fds()) <= fds_before, what=f"fds back to {fds_before}")
    wait_for(lambda: not echo.socks, what="echo connections closed")


def test_stop_without_start_and_restart_refused(echo):
    r = WanRelay("127.0.0.1", echo.port)
    r.stop()
    r.stop()
    r2 = WanRelay("127.0.0.1", echo.port).start()
    with pytest.raises(RuntimeError):
        r2.start()
    r2.stop()
    assert not _relay_threads()


def test_bad_delay_rejected(echo, relays):
    relay = relays("127.0.0.1", echo.port)
    with pytest.raises(ValueError):
        relay.set_delay(-1)
    assert relay.stats()["delay_ms"] == 0


# ---------------------------------------------------------------- CLI

def _readline(f, timeout=5.0):
    r, _, _ = select.select([f], [], [], timeout)
    assert r, "no output from wanrelay"
    return f.readline()


def test_cli_prints_port_obeys_control_and_exits_on_sigterm(echo):
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "wanrelay.py"), "--listen", "127.0.0.1:0",
         "--target", f"127.0.0.1:{echo.port}", "--delay-ms", "0",
         "--control", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(_readline(proc.stdout))
        port, cport = info["port"], info["control_port"]
        assert port > 0 and cport > 0 and info["listen"] == f"127.0.0.1:{port}"

        with connect(cport) as ctl, connect(port) as s:
            cf = ctl.makefile("rw")

            def command(line):
                cf.write(line + "\n")
                cf.flush()
                return json.loads(cf.readline())

            assert ping(s) < 0.05
            a = command("delay 30")
            assert a["ok"] and a["delay_ms"] == 30
            assert ping(s) >= 0.060
            a = command("delay 0 0")
            assert a["ok"] and a["delay_ms"] == 0 and a["jitter_ms"] == 0
            assert command("bogus")["ok"] is False
            assert command("delay x")["ok"] is False
            st = command("stats")
            assert st["ok"] and st["accepted"] == 1 and st["bytes_up"] == 8
            assert command("blackhole")["mode"] == "blackhole"
            assert command("pass")["mode"] == "pass"
            with connect(port) as s2:
                ping(s2)
            assert command("reset")["mode"] == "reset"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
