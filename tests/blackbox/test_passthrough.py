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


# ------------------------------------------------------------ bodies

def test_large_file_streams_intact(node, nginx_shared):
    r = node.get("/static/big.json", timeout=30)
    assert r.status == 200
    assert len(r.body) == len(nginx_shared.big_bytes)
    assert hashlib.sha256(r.body).digest() == hashlib.sha256(nginx_shared.big_bytes).digest()


def test_large_file_to_slow_reader(node, nginx_shared):
    """A client that reads slowly still gets every byte (backpressure, no truncation)."""
    with node.raw(timeout=30) as c:
        c.sock.setsockopt(h.socket.SOL_SOCKET, h.socket.SO_RCVBUF, 4096)
        c.send(get_req("/static/big.json"))
        head = c.read_head()
        assert head[1] == 200
        got = bytearray(c.buf)
        c.buf = b""
        want = len(nginx_shared.big_bytes)
        reads = 0
        while len(got) < want:
            data = c.sock.recv(4096)
            assert data, f"closed after {len(got)} of {want} bytes"
            got += data
            reads += 1
            if reads % 64 == 0:
                h.time.sleep(0.01)
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


def test_chunked_upload_to_webdav_arrives_intact(node, nginx_shared):
    path = f"/dav/{uniq()}.bin"
    body = bytes(h.random.Random(7).getrandbits(8) for _ in range(200_000))
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
