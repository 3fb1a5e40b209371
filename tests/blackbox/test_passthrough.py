"""Meridian as a transparent HTTP/1.1 reverse proxy in front of a real nginx.

The nginx fixture serves static JSON (/static/), echoes the request headers it
received as X-Seen-* response headers (/echo/), stores files over WebDAV
(/dav/) and answers chunked (/chunked/). None of these paths is a container
route, so Meridian must pass them through untouched.
"""

import hashlib
import json
import threading
import uuid

import pytest

import meridian_harness as h
from meridian_harness import RawConn, chunked, get_req


@pytest.fixture(scope="module")
def node(module_meridian, nginx_shared):
    return module_meridian(nginx_shared.url)


def uniq():
    return uuid.uuid4().hex[:12]


# ------------------------------------------------------------ plain GET/HEAD

def test_get_static_json_is_byte_identical_to_nginx(node, nginx_shared):
    direct = h.request(nginx_shared.port, "GET", "/static/doc.json")
    via = node.get("/static/doc.json")
    assert direct.status == 200
    assert via.status == 200, via
    assert via.body == direct.body == nginx_shared.doc_bytes
    assert via.header("content-type") == "application/json"
    assert via.header("etag") == direct.header("etag")
    assert via.header("last-modified") == direct.header("last-modified")
    assert int(via.header("content-length")) == len(nginx_shared.doc_bytes)


def test_response_carries_via(node):
    r = node.get("/static/doc.json")
    assert r.status == 200
    assert any("1.1 meridian" in v for v in r.header_all("via")), r.headers


def test_backend_404_is_relayed_unchanged(node, nginx_shared):
    direct = h.request(nginx_shared.port, "GET", "/static/missing.json")
    via = node.get("/static/missing.json")
    assert via.status == 404 == direct.status
    assert via.body == direct.body


def test_head_has_no_body_and_connection_stays_usable(node, nginx_shared):
    with node.raw() as c:
        c.send(f"HEAD /static/doc.json HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response(method="HEAD")
        assert r.status == 200
        assert int(r.header("content-length")) == len(nginx_shared.doc_bytes)
        # If Meridian sent (or waited for) a body after HEAD, this next
        # response would be garbled or never come.
        c.send(get_req("/static/n/3.json"))
        r2 = c.read_response()
        assert r2.status == 200
        assert json.loads(r2.body)["n"] == 3


# ------------------------------------------------------------ headers

def test_forwarding_headers_reach_backend(node):
    r = node.get("/echo/headers", headers={"X-Custom": "hello"})
    assert r.status == 200, r
    assert r.header("x-seen-xff") == "127.0.0.1"
    assert r.header("x-seen-proto") == "http"
    assert "1.1 meridian" in (r.header("x-seen-via") or ""), r.headers
    assert r.header("x-seen-custom") == "hello"


def test_x_forwarded_for_is_appended_to(node):
    r = node.get("/echo/headers", headers={"X-Forwarded-For": "203.0.113.7"})
    assert r.status == 200
    assert [p.strip() for p in r.header("x-seen-xff").split(",")] == ["203.0.113.7", "127.0.0.1"]


def test_via_from_client_is_kept_and_meridian_appended(node):
    r = node.get("/echo/headers", headers={"Via": "1.0 edge"})
    via = r.header("x-seen-via") or ""
    assert "1.0 edge" in via and "1.1 meridian" in via, via


def test_host_header_is_forwarded(node):
    r = node.get("/echo/headers", headers={"Host": "api.example.test"})
    assert r.status == 200
    assert r.header("x-seen-host") == "api.example.test"


def test_hop_by_hop_headers_are_not_forwarded(node):
    with node.raw() as c:
        c.send("GET /echo/hop HTTP/1.1\r\nHost: x\r\n"
               "Connection: keep-alive, X-Secret\r\n"
               "X-Secret: 1\r\n"
               "Keep-Alive: timeout=5\r\n"
               "Proxy-Connection: keep-alive\r\n"
               "TE: trailers\r\n"
               "Trailer: X-Sum\r\n"
               "Upgrade: h2c\r\n"
               "X-Custom: kept\r\n\r\n")
        r = c.read_response()
    assert r.status == 200, r
    seen = {k.lower(): v for k, v in r.headers if k.lower().startswith("x-seen-")}
    for name in ("secret", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"):
        assert f"x-seen-{name}" not in seen, f"{name} reached the backend: {seen}"
    assert "x-secret" not in seen.get("x-seen-connection", "").lower(), seen
    assert seen.get("x-seen-custom") == "kept"


def test_hop_by_hop_response_headers_are_not_relayed(meridian, fault):
    f = fault("ok", body=b'{"hop":true}',
              headers=b"Connection: keep-alive, X-Internal\r\nX-Internal: secret\r\n"
                      b"Keep-Alive: timeout=30\r\nX-Public: yes\r\n")
    node = meridian(f.url)
    r = node.get("/hop")
    assert r.status == 200 and r.body == b'{"hop":true}'
    assert r.header("x-public") == "yes"
    assert not r.has_header("x-internal"), r.headers
    assert not r.has_header("keep-alive"), r.headers


def test_conditional_get_304_has_no_body(node):
    etag = node.get("/static/doc.json").header("etag")
    with node.raw() as c:
        c.send(get_req("/static/doc.json", extra=f"If-None-Match: {etag}\r\n"))
        r = c.read_response()
        assert r.status == 304, r
        c.send(get_req("/static/n/9.json"))
        r = c.read_response()
        assert r.status == 200 and json.loads(r.body)["n"] == 9


# ------------------------------------------------------------ backend connections

def test_backend_closing_an_idle_pooled_connection_is_not_a_502(meridian, fault):
    """The backend closes its keep-alive connection after each answer (as
    servers do on their keepalive_timeout): the next request must still work."""
    f = fault("ok_close", body=b'{"pooled":true}')
    node = meridian(f.url)
    for i in range(5):
        r = node.get(f"/p{i}")
        assert r.status == 200 and r.body == b'{"pooled":true}', (i, r)
        h.poll(lambda: f.closed_conns >= i + 1, timeout=5, what="the backend to close")


def test_close_delimited_backend_body_is_relayed(meridian, fault):
    body = b'{"until":"close"}' * 1000
    f = fault("raw", raw=b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Connection: close\r\n\r\n" + body)
    node = meridian(f.url)
    with node.raw() as c:
        c.send(get_req("/x"))
        r = c.read_response()
        assert r.status == 200 and r.body == body, r
        if r.has_header("content-length") or "chunked" in (r.header("transfer-encoding") or ""):
            # framed for the client: the connection may stay open and in sync
            c.send(get_req("/x"))
            assert c.read_response().body == body


def test_http10_backend_answer_is_relayed(meridian, fault):
    f = fault("raw", raw=b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 11\r\n\r\n{\"old\":1.0}")
    node = meridian(f.url)
    r = node.get("/x")
    assert r.status == 200 and r.body == b'{"old":1.0}', r


@pytest.mark.parametrize("uri", [
    "/echo/plain",
    "/echo/q?a=1&b=two&a=3",
    "/echo/enc%20oded/%2Fslash?x=%41%42&empty=&flag",
    "/echo/utf8/%E6%9D%B1%E4%BA%AC?k=%C3%A9",
    "/echo/dots/./../echo/x;matrix=1",
])
def test_request_uri_reaches_backend_unchanged(node, uri):
    with node.raw() as c:
        c.send(f"GET {uri} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        r = c.read_response()
    assert r.status == 200, r
    assert r.header("x-seen-uri") == uri


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"])
def test_methods_pass_through(node, method):
    body = b'{"m":1}' if method in ("POST", "PUT", "PATCH") else None
    r = node.request(method, "/echo/m", body=body)
    assert r.status == 200, r
    assert r.header("x-seen-method") == method


def test_repeated_response_headers_are_kept(meridian, fault):
    f = fault("ok", body=b"{}", headers=b"Set-Cookie: a=1; Path=/\r\nSet-Cookie: b=2\r\n"
                                       b"X-Empty:\r\n")
    node = meridian(f.url)
    r = node.get("/c")
    assert r.status == 200
    assert r.header_all("set-cookie") == ["a=1; Path=/", "b=2"], r.headers


# ------------------------------------------------------------ bodies

def test_large_file_streams_intact(node, nginx_shared):
    r = node.get("/static/big.json", timeout=30)
    assert r.status == 200
    assert len(r.body) == len(nginx_shared.big_bytes)
    assert hashlib.sha256(r.body).digest() == hashlib.sha256(nginx_shared.big_bytes).digest()


def test_large_file_to_slow_reader(node, nginx_shared):
    """A client that reads slowly still gets every byte (backpressure, no truncation)."""
    with node.raw(timeout=30) as c:
        c.send(get_req("/static/big.json"))
        head = c.read_head()
        assert head[1] == 200
        got = bytearray(c.buf)
        c.buf = b""
        want = len(nginx_shared.big_bytes)
        next_pause = 256 * 1024
        while len(got) < want:
            data = c.sock.recv(16384)
            assert data, f"closed after {len(got)} of {want} bytes"
            got += data
            if len(got) >= next_pause:   # stall, so the proxy's output backs up
                h.time.sleep(0.1)
                next_pause += 512 * 1024
        assert bytes(got) == nginx_shared.big_bytes


def test_parallel_large_downloads(node, nginx_shared):
    results = []

    def fetch():
        r = node.get("/static/big.json", timeout=30)
        results.append((r.status, hashlib.sha256(r.body).hexdigest()))

    threads = [threading.Thread(target=fetch) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    want = hashlib.sha256(nginx_shared.big_bytes).hexdigest()
    assert results == [(200, want)] * 6


def test_nginx_really_answers_chunked(nginx_shared):
    """Guard for the next tests: the backend path does produce a chunked answer."""
    with RawConn(nginx_shared.port) as c:
        c.send(get_req("/chunked/small.json"))
        r = c.read_response()
    assert r.status == 200
    assert r.header("transfer-encoding") == "chunked"
    assert not r.has_header("content-length")
    assert r.body == nginx_shared.chunked_small


@pytest.mark.parametrize("path,attr", [("/chunked/small.json", "chunked_small"),
                                       ("/chunked/big.json", "chunked_big")])
def test_chunked_response_relayed_to_http11_client(node, nginx_shared, path, attr):
    with node.raw(timeout=30) as c:
        c.send(get_req(path))
        r = c.read_response()
        assert r.status == 200
        assert (r.header("transfer-encoding") or "").lower() == "chunked", r.headers
        assert r.body == getattr(nginx_shared, attr)
        # the connection is still in sync after the last chunk
        c.send(get_req("/static/n/7.json"))
        r2 = c.read_response()
        assert r2.status == 200 and json.loads(r2.body)["n"] == 7


def test_chunked_response_to_http10_client_is_not_chunk_coded(node, nginx_shared):
    """An HTTP/1.0 client cannot read chunked coding: it must get the plain body."""
    with node.raw() as c:
        c.send(b"GET /chunked/small.json HTTP/1.0\r\nHost: x\r\n\r\n")
        r = c.read_response()
    assert r.status == 200
    assert "chunked" not in (r.header("transfer-encoding") or "").lower()
    assert r.body == nginx_shared.chunked_small


# ------------------------------------------------------------ WebDAV store

def test_webdav_put_get_delete(node, nginx_shared):
    path = f"/dav/{uniq()}/sub/doc.json"
    body = json.dumps({"id": "d1", "tenantId": "t1", "n": 1}).encode()
    r = node.request("PUT", path, body=body, headers={"Content-Type": "application/json"})
    assert r.status == 201, r
    r = node.get(path)
    assert r.status == 200 and r.body == body
    body2 = json.dumps({"id": "d1", "tenantId": "t1", "n": 2}).encode()
    r = node.request("PUT", path, body=body2)
    assert r.status == 204, r
    assert node.get(path).body == body2
    # what the proxy stored is what nginx serves directly
    assert h.request(nginx_shared.port, "GET", path).body == body2
    r = node.request("DELETE", path)
    assert r.status == 204, r
    assert node.get(path).status == 404
    assert h.request(nginx_shared.port, "GET", path).status == 404


def test_large_upload_with_content_length(node, nginx_shared):
    path = f"/dav/{uniq()}.bin"
    body = h.random.Random(8).randbytes(900_000)
    r = node.request("PUT", path, body=body, timeout=30)
    assert r.status == 201, r
    assert h.request(nginx_shared.port, "GET", path).body == body


def test_chunked_upload_to_webdav_arrives_intact(node, nginx_shared):
    path = f"/dav/{uniq()}.bin"
    body = h.random.Random(7).randbytes(200_000)
    with node.raw(timeout=30) as c:
        c.send(f"PUT {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        c.send(chunked(body, [1, 10, 1000, 65536, 7]))
        r = c.read_response()
    assert r.status == 201, r
    assert h.request(nginx_shared.port, "GET", path).body == body


def test_chunked_upload_is_forwarded_with_content_length(node):
    body = b'{"hello":"world","n":12345}'
    with node.raw() as c:
        c.send(b"POST /echo/chunk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        c.send(chunked(body, [5, 3]))
        r = c.read_response()
    assert r.status == 200, r
    assert r.header("x-seen-cl") == str(len(body)), r.headers
    assert not r.has_header("x-seen-transfer-encoding"), r.headers


def test_chunked_upload_sent_slowly_in_pieces(node, nginx_shared):
    path = f"/dav/{uniq()}.json"
    body = json.dumps({"rows": list(range(500))}).encode()
    enc = chunked(body, [100, 250])
    with node.raw() as c:
        c.send(f"PUT {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        for i in range(0, len(enc), 97):   # chunk boundaries split across writes
            c.send(enc[i:i + 97])
            h.time.sleep(0.002)
        r = c.read_response()
    assert r.status == 201, r
    assert h.request(nginx_shared.port, "GET", path).body == body


def test_expect_100_continue(node, nginx_shared):
    path = f"/dav/{uniq()}.json"
    body = json.dumps({"expect": "continue", "pad": "z" * 5000}).encode()
    with node.raw(timeout=5) as c:
        c.send(f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
               f"Expect: 100-continue\r\n\r\n".encode())
        interim = c.read_response(interim=True)   # times out if no 100 comes
        assert interim.status == 100, interim
        c.send(body)
        r = c.read_response()
    assert r.status == 201, r
    assert h.request(nginx_shared.port, "GET", path).body == body


# ------------------------------------------------------------ connections

def test_keep_alive_many_requests_on_one_socket(node):
    with node.raw() as c:
        for i in range(200):
            c.send(get_req(f"/static/n/{i % 100}.json"))
            r = c.read_response()
            assert r.status == 200, (i, r)
            assert json.loads(r.body)["n"] == i % 100
            assert (r.header("connection") or "").lower() != "close"


def test_http10_keep_alive_on_request(node):
    with node.raw() as c:
        for i in range(3):
            c.send(f"GET /static/n/{i}.json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".encode())
            r = c.read_response()
            assert r.status == 200
            assert json.loads(r.body)["n"] == i


def test_connection_close_is_honoured(node):
    with node.raw() as c:
        c.send(get_req("/static/n/1.json", extra="Connection: close\r\n"))
        r = c.read_response()
        assert r.status == 200
        assert c.wait_closed(5), "Meridian kept a Connection: close connection open"


def test_pipelined_requests_answered_in_order(node):
    with node.raw() as c:
        order = [17, 3, 99, 0, 42, 42, 5, 64, 8, 31]
        c.send(b"".join(get_req(f"/static/n/{i}.json") for i in order))
        for i in order:
            r = c.read_response()
            assert r.status == 200
            assert json.loads(r.body)["n"] == i


def test_pipelined_slow_big_answer_then_small_ones(node, nginx_shared):
    with node.raw(timeout=30) as c:
        c.send(get_req("/static/big.json") + get_req("/static/n/1.json")
               + get_req("/chunked/big.json") + get_req("/static/n/2.json"))
        assert c.read_response().body == nginx_shared.big_bytes
        assert json.loads(c.read_response().body)["n"] == 1
        assert c.read_response().body == nginx_shared.chunked_big
        assert json.loads(c.read_response().body)["n"] == 2


def test_pipelined_mix_of_methods(node, nginx_shared):
    path = f"/dav/{uniq()}.json"
    body = b'{"pipelined":true}'
    reqs = [
        get_req("/static/n/1.json"),
        f"HEAD /static/doc.json HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body,
        get_req(path),
        get_req("/chunked/small.json"),
        get_req("/static/missing.json"),
        get_req("/static/n/2.json"),
    ]
    with node.raw() as c:
        c.send(b"".join(reqs))
        r = c.read_response()
        assert r.status == 200 and json.loads(r.body)["n"] == 1
        r = c.read_response(method="HEAD")
        assert r.status == 200 and r.body == b""
        r = c.read_response()
        assert r.status == 201, r
        r = c.read_response()
        assert r.status == 200 and r.body == body
        r = c.read_response()
        assert r.status == 200 and r.body == nginx_shared.chunked_small
        r = c.read_response()
        assert r.status == 404
        r = c.read_response()
        assert r.status == 200 and json.loads(r.body)["n"] == 2


def test_many_concurrent_clients(node):
    errors = []

    def client(k):
        try:
            with node.raw() as c:
                for i in range(20):
                    n = (k * 7 + i) % 100
                    c.send(get_req(f"/static/n/{n}.json"))
                    r = c.read_response()
                    if r.status != 200 or json.loads(r.body)["n"] != n:
                        errors.append((k, i, r))
        except Exception as e:
            errors.append((k, repr(e)))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
