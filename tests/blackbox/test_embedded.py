"""The embedded document store (`backend: embedded`) through the client port:
statuses, ETags and preconditions, listing, bodies, and durability of every
acknowledged write across kill -9.

Documents are compared on the user's fields: Meridian's write path tags every
stored document with `_ts` and its metadata object `_meridian` (DESIGN.md,
write path step 3), which the tests check separately."""

import json
import os
import random
import re
import subprocess
import threading
from pathlib import Path

import pytest

import meridian_harness as h
from meridian_harness import chunked

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def node(meridian):
    return meridian("embedded")


META = ("_ts", "_meridian")


def user(doc):
    """The document without the fields Meridian adds."""
    assert isinstance(doc, dict), doc
    return {k: v for k, v in doc.items() if k not in META}


def body_of(r):
    return user(r.json())


def put(node, path, doc, headers=None):
    body = doc if isinstance(doc, (bytes, str)) else json.dumps(doc)
    return node.request("PUT", path, body=body, headers=dict(JSON, **(headers or {})))


def assert_error(r, status):
    assert r.status == status, r
    assert (r.header("content-type") or "").startswith("application/json"), r.headers
    j = r.json()
    assert isinstance(j.get("error"), str) and j["error"], j
    assert isinstance(j.get("reason"), str) and j["reason"], j
    return j


# ------------------------------------------------------------ PUT / GET / HEAD

def test_put_creates_then_replaces(node):
    doc = {"tenantId": "t1", "version": 1, "items": [1, 2, 3]}
    r = put(node, "/orders/a1", doc)
    assert r.status == 201, r
    assert (r.header("location") or "").endswith("/orders/a1"), r.headers
    assert r.header("etag"), r.headers
    assert body_of(r) == dict(doc, id="a1")
    etag1 = r.header("etag")

    doc2 = {"tenantId": "t1", "version": 2}
    r = put(node, "/orders/a1", doc2)
    assert r.status == 200, r
    assert body_of(r) == dict(doc2, id="a1")
    etag2 = r.header("etag")
    assert etag2 and etag2 != etag1

    r = node.get("/orders/a1")
    assert r.status == 200
    assert body_of(r) == dict(doc2, id="a1")
    assert r.header("etag") == etag2
    assert (r.header("content-type") or "").startswith("application/json")


def test_put_keeps_matching_body_id_and_rejects_different_one(node):
    r = put(node, "/orders/b1", {"id": "b1", "tenantId": "t"})
    assert r.status == 201
    assert r.json()["id"] == "b1"
    j = assert_error(put(node, "/orders/b2", {"id": "other", "tenantId": "t"}), 400)
    assert node.get("/orders/b2").status == 404
    assert node.get("/orders/other").status == 404, j


def test_get_missing_is_404_json(node):
    assert_error(node.get("/orders/nope"), 404)


def test_head(node):
    r = put(node, "/orders/h1", {"tenantId": "t", "n": 1})
    g = node.get("/orders/h1")
    with node.raw() as c:
        c.send(b"HEAD /orders/h1 HTTP/1.1\r\nHost: x\r\n\r\n")
        hr = c.read_response(method="HEAD")
        assert hr.status == 200
        assert hr.header("etag") == g.header("etag") == r.header("etag")
        if hr.has_header("content-length"):
            assert int(hr.header("content-length")) == len(g.body)
        c.send(b"HEAD /orders/missing HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response(method="HEAD").status == 404
        c.send(b"GET /orders/h1 HTTP/1.1\r\nHost: x\r\n\r\n")   # still in sync
        assert body_of(c.read_response()) == {"tenantId": "t", "n": 1, "id": "h1"}


def test_unicode_and_nested_content_round_trips(node):
    doc = {"tenantId": "t", "name": "Zoë — 東京 🚀", "esc": "a\"b\\c\n", "n": 1.5e300,
           "neg": -17, "deep": {"a": [{"b": [None, True, False, {}]}]}}
    assert put(node, "/orders/u1", doc).status == 201
    assert body_of(node.get("/orders/u1")) == dict(doc, id="u1")


# ------------------------------------------------------------ bad bodies

@pytest.mark.parametrize("body,word", [
    (b'{"tenantId": "t", ', "json"),
    (b"not json at all", "json"),
    (b"[1, 2, 3]", "object"),
    (b'"a string"', "object"),
    (b"42", "object"),
    (b"", None),
])
def test_body_that_is_not_a_json_object_is_400_naming_the_problem(node, body, word):
    j = assert_error(put(node, "/orders/bad", body), 400)
    if word:
        assert word in j["reason"].lower(), j
    assert node.get("/orders/bad").status == 404


# ------------------------------------------------------------ POST

def test_post_creates_with_id_from_body(node):
    doc = {"id": "p1", "tenantId": "t", "v": 1}
    r = node.request("POST", "/orders/", body=json.dumps(doc), headers=JSON)
    assert r.status == 201, r
    assert (r.header("location") or "").endswith("/orders/p1"), r.headers
    assert r.header("etag")
    assert body_of(node.get("/orders/p1")) == doc

    r = node.request("POST", "/orders/", body=json.dumps(dict(doc, v=2)), headers=JSON)
    assert_error(r, 409)
    assert body_of(node.get("/orders/p1")) == doc, "a refused POST changed the document"


def test_post_without_id_gets_an_id_from_meridian(node):
    """DESIGN.md write path: POST creates; the id comes from the body, or
    Meridian assigns one. Two such POSTs make two documents."""
    ids = []
    for n in (1, 2):
        r = node.request("POST", "/orders/", body=json.dumps({"tenantId": "t", "n": n}), headers=JSON)
        assert r.status == 201, r
        doc = r.json()
        assert isinstance(doc.get("id"), str) and doc["id"], doc
        assert (r.header("location") or "").endswith("/orders/" + doc["id"]), r.headers
        assert body_of(node.get("/orders/" + doc["id"])) == {"tenantId": "t", "n": n, "id": doc["id"]}
        ids.append(doc["id"])
    assert ids[0] != ids[1]
    listed = [d["id"] for d in node.get("/orders/?limit=10").json()["documents"]]
    assert sorted(listed) == sorted(ids)


# ------------------------------------------------------------ DELETE

def test_delete(node):
    assert put(node, "/orders/d1", {"tenantId": "t"}).status == 201
    r = node.request("DELETE", "/orders/d1")
    assert r.status == 200, r
    j = r.json()
    assert j.get("ok") is True and j.get("id") == "d1", j
    assert_error(node.get("/orders/d1"), 404)
    assert_error(node.request("DELETE", "/orders/d1"), 404)
    # and it can be created again
    assert put(node, "/orders/d1", {"tenantId": "t", "again": True}).status == 201


# ------------------------------------------------------------ preconditions

def test_if_match(node):
    r = put(node, "/orders/e1", {"tenantId": "t", "v": 1})
    etag = r.header("etag")
    assert_error(put(node, "/orders/e1", {"tenantId": "t", "v": 2}, {"If-Match": '"nope"'}), 412)
    assert node.get("/orders/e1").json()["v"] == 1
    r = put(node, "/orders/e1", {"tenantId": "t", "v": 3}, {"If-Match": etag})
    assert r.status == 200, r
    assert node.get("/orders/e1").json()["v"] == 3
    # the old ETag no longer matches
    assert_error(put(node, "/orders/e1", {"tenantId": "t", "v": 4}, {"If-Match": etag}), 412)
    assert_error(node.request("DELETE", "/orders/e1", headers={"If-Match": etag}), 412)
    assert node.get("/orders/e1").status == 200
    r = node.request("DELETE", "/orders/e1", headers={"If-Match": node.get("/orders/e1").header("etag")})
    assert r.status == 200


def test_if_none_match_star(node):
    r = put(node, "/orders/f1", {"tenantId": "t", "v": 1}, {"If-None-Match": "*"})
    assert r.status == 201, r
    assert_error(put(node, "/orders/f1", {"tenantId": "t", "v": 2}, {"If-None-Match": "*"}), 412)
    assert node.get("/orders/f1").json()["v"] == 1


def test_concurrent_create_only_one_wins(node):
    statuses = []

    def create(k):
        r = put(node, "/orders/race", {"tenantId": "t", "writer": k}, {"If-None-Match": "*"})
        statuses.append(r.status)

    threads = [threading.Thread(target=create, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(statuses) == [201] + [412] * 7, statuses


# ------------------------------------------------------------ listing

def test_listing_pages_in_id_order(node):
    ids = [f"d{i:02d}" for i in range(25)]
    shuffled = ids[:]
    random.Random(3).shuffle(shuffled)
    for i in shuffled:
        assert put(node, f"/orders/{i}", {"tenantId": "t", "n": int(i[1:])}).status == 201

    seen, after, pages = [], None, 0
    while True:
        q = "/orders/?limit=10" + (f"&after={after}" if after else "")
        r = node.get(q)
        assert r.status == 200, r
        j = r.json()
        docs = j["documents"]
        assert j["count"] == len(docs)
        for d in docs:
            assert user(d) == {"tenantId": "t", "n": int(d["id"][1:]), "id": d["id"]}
        seen += [d["id"] for d in docs]
        pages += 1
        assert pages <= 4, "paging does not end"
        if j["next"] is None:
            break
        assert j["next"] == docs[-1]["id"]
        after = j["next"]
    assert seen == ids
    assert pages == 3

    r = node.get("/orders/?limit=10")
    j = r.json()
    assert [d["id"] for d in j["documents"]] == ids[:10] and j["next"] == "d09"
    j = node.get("/orders/?limit=10&after=d19").json()
    assert [d["id"] for d in j["documents"]] == ids[20:] and j["count"] == 5 and j["next"] is None


def test_listing_after_an_id_that_does_not_exist(node):
    for i in ("a", "c", "e"):
        put(node, f"/orders/{i}", {"tenantId": "t"})
    j = node.get("/orders/?limit=10&after=b").json()
    assert [d["id"] for d in j["documents"]] == ["c", "e"]


def test_listing_empty_container(node):
    r = node.get("/orders/")
    assert r.status == 200
    j = r.json()
    assert j["documents"] == [] and j["count"] == 0 and j["next"] is None


def test_listing_does_not_show_deleted_documents(node):
    for i in ("x1", "x2", "x3"):
        put(node, f"/orders/{i}", {"tenantId": "t"})
    node.request("DELETE", "/orders/x2")
    j = node.get("/orders/?limit=100").json()
    assert [d["id"] for d in j["documents"]] == ["x1", "x3"]


# ------------------------------------------------------------ uploads

def test_chunked_upload_to_embedded_store(node):
    doc = {"tenantId": "t", "rows": [{"k": i, "v": "w" * (i % 50)} for i in range(400)]}
    body = json.dumps(doc).encode()
    with node.raw() as c:
        c.send(b"PUT /orders/ch1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body, [3, 333, 1024]))
        r = c.read_response()
    assert r.status == 201, r
    assert body_of(node.get("/orders/ch1")) == dict(doc, id="ch1")


def test_expect_100_continue_to_embedded_store(node):
    body = json.dumps({"tenantId": "t", "expect": True}).encode()
    with node.raw(timeout=5) as c:
        c.send(f"PUT /orders/ex1 HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
               f"Expect: 100-continue\r\n\r\n".encode())
        assert c.read_response(interim=True).status == 100
        c.send(body)
        assert c.read_response().status == 201
    assert body_of(node.get("/orders/ex1")) == {"tenantId": "t", "expect": True, "id": "ex1"}


def test_pipelined_writes_and_reads_in_order(node):
    reqs = []
    for i in range(10):
        b = json.dumps({"tenantId": "t", "n": i}).encode()
        reqs.append(f"PUT /orders/pp HTTP/1.1\r\nHost: x\r\nContent-Length: {len(b)}\r\n\r\n".encode() + b)
        reqs.append(b"GET /orders/pp HTTP/1.1\r\nHost: x\r\n\r\n")
    with node.raw() as c:
        c.send(b"".join(reqs))
        for i in range(10):
            w = c.read_response()
            assert w.status == (201 if i == 0 else 200), (i, w)
            g = c.read_response()
            assert g.status == 200 and g.json()["n"] == i, (i, g)


# ------------------------------------------------------------ durability

def test_documents_survive_graceful_restart(meridian):
    node = meridian("embedded")
    for i in range(20):
        assert put(node, f"/orders/g{i}", {"tenantId": "t", "n": i}).status == 201
    assert node.stop() == 0
    node.start()
    for i in range(20):
        assert body_of(node.get(f"/orders/g{i}")) == {"tenantId": "t", "n": i, "id": f"g{i}"}


def test_acknowledged_writes_survive_kill_9(meridian):
    node = meridian("embedded")
    acked = {}          # id -> the document the store acknowledged
    in_flight = {}      # id -> document sent, answer not (yet) seen
    counter_acked = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w):
        rnd = random.Random(w)
        try:
            with node.raw(timeout=10) as c:
                n = 0
                while not stop.is_set():
                    if w == 0:
                        doc_id, doc = "counter", {"tenantId": "t", "seq": n}
                    else:
                        doc_id = f"w{w}-{n:05d}"
                        doc = {"tenantId": f"t{w}", "seq": n,
                               "payload": "%x" % rnd.getrandbits(rnd.randrange(8, 4000))}
                    body = json.dumps(doc).encode()
                    with lock:
                        in_flight[doc_id] = doc
                    c.send(f"PUT /orders/{doc_id} HTTP/1.1\r\nHost: x\r\n"
                           f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                    r = c.read_response()
                    assert r.status in (200, 201), r
                    with lock:
                        if w == 0:
                            counter_acked[0] = n
                        acked[doc_id] = dict(doc, id=doc_id)
                        in_flight.pop(doc_id, None)
                    n += 1
        except (OSError, EOFError, AssertionError):
            pass   # the node was killed under us

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    h.poll(lambda: len(acked) >= 300, timeout=20, what="300 acknowledged writes")
    node.kill9()
    stop.set()
    for t in threads:
        t.join(10)
    with lock:
        acked_now, maybe = dict(acked), dict(in_flight)

    node.start()
    missing, wrong = [], []
    for doc_id, doc in acked_now.items():
        if doc_id == "counter":
            continue
        r = node.get(f"/orders/{doc_id}")
        if r.status != 200:
            missing.append(doc_id)
        elif body_of(r) != doc:
            wrong.append((doc_id, r.body[:200]))
    assert not missing, f"{len(missing)} acknowledged documents lost, e.g. {missing[:5]}"
    assert not wrong, f"acknowledged documents changed: {wrong[:3]}"
    c = node.get("/orders/counter").json()
    assert c["seq"] >= counter_acked[0], (c, counter_acked[0])
    # writes in flight at the kill: all or nothing
    for doc_id, doc in maybe.items():
        if doc_id == "counter":
            continue
        r = node.get(f"/orders/{doc_id}")
        assert r.status == 404 or body_of(r) == dict(doc, id=doc_id), (doc_id, r)
    # and the restarted store takes writes again
    assert put(node, "/orders/after-restart", {"tenantId": "t"}).status == 201


def test_data_dir_option_overrides_the_config(meridian, tmp_path):
    node = meridian("embedded", start=False)
    elsewhere = tmp_path / "elsewhere"
    node.extra_args = ["--data-dir", str(elsewhere)]
    node.start()
    assert put(node, "/orders/dd", {"tenantId": "t"}).status == 201
    assert node.stop() == 0
    assert elsewhere.is_dir() and any(elsewhere.rglob("*")), "nothing written under --data-dir"
    node.extra_args = []
    node.start()
    assert node.get("/orders/dd").status == 404, "--data-dir was ignored"
    node.stop()
    node.extra_args = ["--data-dir", str(elsewhere)]
    node.start()
    assert body_of(node.get("/orders/dd")) == {"tenantId": "t", "id": "dd"}


# ------------------------------------------------------------ power loss

STRACE_CALL = re.compile(r"^(\d+)\s+(?:<\.\.\. (\w+) resumed>|(\w+)\()(.*)$")


def syscalls_of(trace, file_suffix):
    """strace -f -y output -> [(start, end, name, args)] of the calls on the
    file whose path ends with file_suffix, start and end being the lines where
    the call was entered and returned (a call another thread interrupted is
    printed "<unfinished ...>", then "<... name resumed>")."""
    calls, open_calls = [], {}
    for i, line in enumerate(trace):
        m = STRACE_CALL.match(line)
        if not m:
            continue
        pid, resumed, name, rest = m.group(1), m.group(2), m.group(3), m.group(4)
        if resumed:
            start, name, args = open_calls.pop((pid, resumed))
            calls.append((start, i, name, args))
        elif rest.endswith("<unfinished ...>"):
            open_calls[(pid, name)] = (i, name, rest)
        else:
            calls.append((i, i, name, rest))
    return [c for c in calls if re.match(r"\d+<[^>]*" + re.escape(file_suffix) + ">", c[3])]


@pytest.mark.parametrize("backend", ["embedded", "nginx"])
def test_no_meta_page_is_written_before_the_data_pages_it_points_to_are_synced(
        meridian, tmp_path, request, backend):
    """LMDB's meta page names the root of the tree a transaction wrote: if it
    reached the disk before those pages did (a power loss during the fsync),
    the store could not be opened again. Under strace, every meta-page write
    to data.mdb (a pwrite shorter than a page into the first two pages) must
    come after an fsync that began after the last data-page write returned.
    (Whether the meta page is synced before a write is answered is the
    syncer's part, counted by test_validation.) With the embedded store that
    is the store's environment (the journal's databases are in it); with an
    HTTP backend, the journal's own."""
    route = "/orders/" if backend == "embedded" else "/dav/orders/"  # nginx's WebDAV location
    node = meridian("embedded" if backend == "embedded" else request.getfixturevalue("nginx").url,
                    containers=[dict(h.DEFAULT_CONTAINERS[0], route=route)])
    out = tmp_path / "strace.txt"
    tracer = subprocess.Popen(["strace", "-f", "-y", "-s", "0", "-o", str(out), "-p", str(node.proc.pid),
                               "-e", "trace=pwrite64,pwritev,pwritev2,writev,write,fdatasync,fsync"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        def attached():
            assert tracer.poll() is None, f"strace could not attach: {tracer.stderr.read().decode()}"
            tasks = list(Path(f"/proc/{node.proc.pid}/task").iterdir())
            return len(tasks) >= 3 and all(  # the loop, the committer, the syncer
                re.search(r"^TracerPid:\s*[1-9]", (t / "status").read_text(), re.M) for t in tasks)
        h.poll(attached, timeout=10, what="strace attached to every thread")

        refused = []

        def writer(w):
            for i in range(15):
                r = put(node, f"{route}pl-{w}-{i}", {"tenantId": "t", "n": i, "pad": "x" * 900})
                if r.status != 201:
                    refused.append(r)
        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not refused, refused[:3]
    finally:
        tracer.terminate()  # detaches
        tracer.wait(10)
    calls = syscalls_of(out.read_text().splitlines(), "/data.mdb")
    page = os.sysconf("SC_PAGE_SIZE")

    def is_meta(name, args):  # pwrite64(fd<path>, buf, count, offset) = n
        if name != "pwrite64":
            return False
        body = args.split(">", 1)[1].split(")")[0].split("<unfinished")[0]
        count, offset = [int(x) for x in re.findall(r"\d+", body)][-2:]
        return offset < 2 * page and count < page

    metas, datas, violations = 0, 0, []
    last_data_end = None   # the line where the last data-page write returned
    syncs = [(s, e) for s, e, name, _ in calls if name in ("fdatasync", "fsync")]
    for start, end, name, args in sorted(calls):
        if name in ("fdatasync", "fsync"):
            continue
        if not is_meta(name, args):
            datas += 1
            last_data_end = end
            continue
        metas += 1
        if last_data_end is not None and not any(s > last_data_end and e < start for s, e in syncs):
            violations.append((start, args))
        last_data_end = None
    assert datas >= 10 and metas >= 10, f"too few LMDB writes traced ({datas} data, {metas} meta)"
    assert not violations, (f"{len(violations)} of {metas} meta-page writes came before the data "
                            f"they point to was synced, e.g. trace line {violations[0][0]}")
