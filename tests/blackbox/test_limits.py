"""Limits and failures as a client sees them: 400, 408, 413, 431, 502, 504,
idle keep-alive close, and that a misbehaving client or backend does not stop
the node from serving everyone else."""

import json
import threading
import time
import uuid

import pytest

import meridian_harness as h
from meridian_harness import chunked, get_req

SMALL = {"max_header_bytes": 4096, "max_body_bytes": 1024, "header_timeout_ms": 500,
         "idle_timeout_ms": 1000, "upstream_connect_timeout_ms": 500,
         "upstream_response_timeout_ms": 500}


@pytest.fixture(scope="module")
def node(module_meridian, nginx_shared):
    return module_meridian(nginx_shared.url, limits=SMALL)


def assert_error(r, status, code=None):
    """Meridian's own error: the status, JSON {"error","reason"}, application/json."""
    assert r.status == status, r
    assert (r.header("content-type") or "").startswith("application/json"), r.headers
    j = r.json()
    assert isinstance(j.get("error"), str) and j["error"], j
    assert isinstance(j.get("reason"), str) and j["reason"], j
    if code is not None:
        assert j["error"] == code, j
    return j


def still_serving(node):
    r = node.get("/static/n/5.json", timeout=5)
    assert r.status == 200 and json.loads(r.body)["n"] == 5


# ------------------------------------------------------------ 431

def test_431_one_huge_header(node):
    r = node.get("/static/doc.json", headers={"X-Big": "a" * 8000})
    assert_error(r, 431)
    still_serving(node)


def test_431_many_headers_adding_up(node):
    hdrs = {f"X-H{i}": "b" * 100 for i in range(60)}   # ~6.6 KB in total
    r = node.get("/static/doc.json", headers=hdrs)
    assert_error(r, 431)


def test_headers_just_under_the_limit_pass(node):
    r = node.get("/static/doc.json", headers={"X-Big": "a" * 3000})
    assert r.status == 200


# ------------------------------------------------------------ 413

def test_413_content_length_over_limit(node, nginx_shared):
    path = f"/dav/{uuid.uuid4().hex}.json"
    body = b"x" * 2048
    with node.raw() as c:
        c.send(f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        r = c.read_response()
    assert_error(r, 413)
    assert h.request(nginx_shared.port, "GET", path).status == 404, "the write reached the backend"
    still_serving(node)


def test_413_chunked_body_over_limit(node, nginx_shared):
    path = f"/dav/{uuid.uuid4().hex}.json"
    with node.raw() as c:
        c.send(f"PUT {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
               + chunked(b"y" * 4096, [512]))
        r = c.read_response()
    assert_error(r, 413)
    assert h.request(nginx_shared.port, "GET", path).status == 404, "the write reached the backend"
    still_serving(node)


def test_body_at_the_limit_passes(node, nginx_shared):
    path = f"/dav/{uuid.uuid4().hex}.json"
    body = b"z" * 1024
    r = node.request("PUT", path, body=body)
    assert r.status == 201, r
    assert h.request(nginx_shared.port, "GET", path).body == body


def test_expect_100_with_too_large_content_length_gets_413_without_body(node):
    with node.raw(timeout=5) as c:
        c.send(b"PUT /dav/never.json HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n"
               b"Expect: 100-continue\r\n\r\n")
        r = c.read_response(interim=True)   # no body sent: must not wait for it
    assert_error(r, 413)


# ------------------------------------------------------------ 408

def test_408_half_a_header_then_silence(node):
    with node.raw(timeout=10) as c:
        t0 = time.monotonic()
        c.send(b"GET /static/doc.json HTTP/1.1\r\nHost: x\r\nX-Partial: ")
        r = c.read_response()
        elapsed = time.monotonic() - t0
        assert_error(r, 408)
        assert 0.3 <= elapsed < 5, elapsed
        assert c.wait_closed(3), "connection not closed after 408"
    still_serving(node)


def test_408_slowloris_trickle_does_not_reset_the_timer(node):
    """Bytes trickling in every 100 ms must not keep the connection forever."""
    line = b"GET /static/doc.json HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"s" * 200
    with node.raw(timeout=10) as c:
        t0 = time.monotonic()
        status = None
        for b in line:
            try:
                c.send(bytes([b]))
            except OSError:
                break
            if c.wait_closed(0.1):
                break
            if time.monotonic() - t0 > 5:
                break
        elapsed = time.monotonic() - t0
        assert elapsed < 4, f"a trickling client held the connection for {elapsed:.1f}s"
        if c.buf:
            status = c.read_response().status
        assert status in (None, 408), status


def test_silent_connection_is_closed(node):
    """A client that connects and sends nothing cannot hold the connection."""
    with node.raw() as c:
        assert c.wait_closed(5), "a silent connection stayed open"


# ------------------------------------------------------------ idle keep-alive

def test_idle_keep_alive_connection_is_closed(node):
    with node.raw() as c:
        c.send(get_req("/static/n/1.json"))
        assert c.read_response().status == 200
        t0 = time.monotonic()
        assert c.wait_closed(6), "idle keep-alive connection not closed"
        elapsed = time.monotonic() - t0
        assert 0.7 <= elapsed < 6, elapsed
    still_serving(node)


def test_active_keep_alive_connection_outlives_idle_timeout(node):
    """Idle means idle: a connection in use for longer than idle_timeout is kept."""
    with node.raw() as c:
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < 1.6:
            c.send(get_req(f"/static/n/{i % 100}.json"))
            r = c.read_response()
            assert r.status == 200
            i += 1
            time.sleep(0.2)


# ------------------------------------------------------------ 400

GARBAGE = [
    b"\x00\x01\x02\x03garbage\xff\xfe\r\n\r\n",
    b"THIS IS NOT HTTP\r\n\r\n",
    b"GET /static/doc.json HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n",
    b"GET /static/doc.json HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
    b"GET /static/doc.json HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /static/doc.json HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
    b"POST /dav/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nabc\r\n0\r\n\r\n",
    b"POST /dav/x HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"GET /static/doc.json HTTP/1.1\r\nHost: x\r\nX-Ctl: a\x01b\r\n\r\n",
]


@pytest.mark.parametrize("payload", GARBAGE, ids=[
    "binary", "not-http", "space-in-header-name", "no-colon", "cl-and-te",
    "two-content-lengths", "bad-chunk-size", "negative-content-length", "control-char-in-value"])
def test_malformed_request_gets_400_and_close(node, payload):
    with node.raw() as c:
        c.send(payload)
        r = c.read_response()
        assert_error(r, 400)
        assert c.wait_closed(3), "connection not closed after 400"
    still_serving(node)


def test_garbage_does_not_disturb_other_clients(node):
    """A keep-alive client opened before, and a client hammering in parallel,
    keep being served while other sockets throw garbage."""
    stop = threading.Event()
    failures, served = [], [0]

    def hammer():
        try:
            with node.raw() as c:
                i = 0
                while not stop.is_set():
                    c.send(get_req(f"/static/n/{i % 100}.json"))
                    r = c.read_response()
                    if r.status != 200 or json.loads(r.body)["n"] != i % 100:
                        failures.append(r)
                    served[0] += 1
                    i += 1
        except Exception as e:
            failures.append(repr(e))

    with node.raw() as before:
        before.send(get_req("/static/n/1.json"))
        assert before.read_response().status == 200
        t = threading.Thread(target=hammer)
        t.start()
        try:
            for rnd in range(3):
                for k, payload in enumerate(GARBAGE):
                    with node.raw() as g:
                        g.send(payload)
                        g.wait_closed(0.5)
                    # the connection opened before the garbage is still served
                    before.send(get_req(f"/static/n/{k}.json"))
                    r = before.read_response()
                    assert r.status == 200 and json.loads(r.body)["n"] == k
        finally:
            stop.set()
            t.join(10)
    assert failures == []
    assert served[0] > 0


# ------------------------------------------------------------ 502

def test_502_backend_refused(meridian):
    port = h.free_port()
    node = meridian(f"http://127.0.0.1:{port}", limits=SMALL)
    r = node.get("/static/doc.json")
    j = assert_error(r, 502)
    assert j.get("backend") == f"http://127.0.0.1:{port}", j


def test_502_backend_closes_without_answering(meridian, fault):
    f = fault("close")
    node = meridian(f.url, limits=SMALL)
    r = node.get("/anything")
    j = assert_error(r, 502)
    assert j.get("backend") == f.url, j
    assert f.count >= 1


def test_502_backend_resets_in_the_middle_of_the_headers(meridian, fault):
    f = fault("half_reset")
    node = meridian(f.url, limits=SMALL)
    r = node.get("/anything")
    j = assert_error(r, 502)
    assert j.get("backend") == f.url, j


def test_backend_reset_in_the_middle_of_the_body_is_not_passed_off_as_complete(meridian, fault):
    """Headers are already relayed, so a 502 is impossible: the client must see
    the response cut short, never a shorter body framed as complete."""
    f = fault("body_reset")
    node = meridian(f.url, limits=SMALL)
    with node.raw() as c:
        c.send(get_req("/anything"))
        try:
            version, status, reason, headers, head = c.read_head()
        except (EOFError, ConnectionResetError):
            return  # nothing relayed at all is fine too
        if status == 502:
            return
        r = h.Resp(status, reason, version, headers, b"")
        assert status == 200
        te = (r.header("transfer-encoding") or "").lower()
        if "chunked" in te:
            with pytest.raises((EOFError, ConnectionResetError, ValueError, AssertionError)):
                c.read_chunked()
        else:
            n = int(r.header("content-length"))
            assert n == 100000
            assert c.wait_closed(5)
            assert len(c.buf) < n, "got a full body from a backend that sent 1000 bytes"


def test_502_then_backend_recovers(meridian, fault):
    """Once the backend is back, requests succeed again (no poisoned pool)."""
    port = h.free_port()
    node = meridian(f"http://127.0.0.1:{port}", limits=SMALL)
    assert node.get("/x").status == 502
    try:
        fault("ok", body=b'{"back":true}', port=port)
    except OSError:
        pytest.skip("the port was taken by another process meanwhile")
    r = h.poll(lambda: (lambda r: r if r.status == 200 else None)(node.get("/x")),
               timeout=5, what="a 200 after the backend came back")
    assert r.body == b'{"back":true}'


# ------------------------------------------------------------ 504

def test_504_backend_never_answers(meridian, fault):
    f = fault("silent")
    node = meridian(f.url, limits=SMALL)
    t0 = time.monotonic()
    r = node.get("/slow", timeout=10)
    elapsed = time.monotonic() - t0
    j = assert_error(r, 504)
    assert j.get("backend") == f.url, j
    assert 0.4 <= elapsed < 5, elapsed
    assert f.received.is_set()


def test_504_does_not_block_other_clients(meridian, fault):
    f = fault("silent")
    node = meridian(f.url, limits=dict(SMALL, upstream_response_timeout_ms=1500))
    results = []
    threads = [threading.Thread(target=lambda: results.append(node.get("/slow").status))
               for _ in range(5)]
    for t in threads:
        t.start()
    h.poll(lambda: f.count >= 5, timeout=5, what="five requests at the silent backend")
    # while five requests wait on the silent backend, the node serves others
    t0 = time.monotonic()
    r = node.get("/_meridian/health", timeout=5)
    assert r.status == 200
    assert time.monotonic() - t0 < 1.0, "health check waited for the stuck backend"
    for t in threads:
        t.join(10)
    assert results == [504] * 5


def test_504_upstream_connect_timeout(meridian):
    bh = h.Blackhole()
    try:
        if not bh.connect_hangs():
            pytest.skip("cannot make a loopback connect hang on this kernel (SYN not dropped)")
        node = meridian(bh.url, limits=SMALL)
        t0 = time.monotonic()
        r = node.get("/x", timeout=10)
        elapsed = time.monotonic() - t0
        j = assert_error(r, 504)
        assert j.get("backend") == bh.url, j
        assert 0.4 <= elapsed < 5, elapsed
    finally:
        bh.close()
