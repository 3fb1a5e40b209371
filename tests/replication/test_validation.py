"""Bodies that are not JSON objects and bodies that forge Meridian's metadata
are refused with 400 in every region, and nothing of them is journaled or
replicated (issue 4, test 6)."""

import json
import time
import uuid

import pytest

import replication_cluster as rc

h = rc.h

NOT_OBJECTS = [b"[1, 2, 3]", b'"a string"', b"42", b"null", b"true", b"not json at all",
               b'{"id": "x", "tenantId": "t"', b"", b'{"a": 1} trailing']


def forged_bodies(doc_id):
    meta = {"region": "east", "regionId": 1, "lsn": 999999, "hlc": 1, "base": None}
    return [
        {"id": doc_id, "tenantId": "t", "version": 1, "_meridian": meta},
        {"id": doc_id, "tenantId": "t", "_meridian": {}},
        {"id": doc_id, "tenantId": "t", "_meridian": None},
        {"id": doc_id, "tenantId": "t", "_meridian": "west"},
    ]


def lsn_of(resp):
    rid, lsn = resp.header("x-meridian-version").split(":")
    return int(rid), int(lsn)


def good_write(region, doc_id, **extra):
    body = dict({"id": doc_id, "tenantId": "t", "version": 1, "by": region.name}, **extra)
    resp = region.put(doc_id, body)
    assert resp.status in (200, 201), resp
    return resp, body


def test_non_object_and_forged_bodies_are_refused_and_never_journaled(make_cluster):
    cluster = make_cluster("embedded")
    tag = uuid.uuid4().hex[:8]
    refused_ids = set()
    existing = {}

    # A document per region that the bad PATCHes and PUTs will target too.
    before = {}
    for r in cluster.regions:
        doc_id = f"ok-{tag}-{r.name}"
        resp, body = good_write(r, doc_id)
        existing[doc_id] = (body, resp.header("x-meridian-version"))
        before[r.name] = lsn_of(resp)
    cluster.wait_quiet()
    committed_before = {r.name: h.metric_sum(r.metrics(), "meridian_writes_committed_total")
                        for r in cluster.regions}

    for r in cluster.regions:
        own = f"ok-{tag}-{r.name}"
        n = 0
        attempts = []
        for raw in NOT_OBJECTS:
            doc_id = f"bad-{tag}-{r.name}-{n}"
            n += 1
            attempts += [("PUT", rc.ROUTE + doc_id, raw, doc_id),
                         ("POST", rc.ROUTE, raw, None),
                         ("PATCH", rc.ROUTE + own, raw, None)]
        for body in forged_bodies("placeholder"):
            doc_id = f"forged-{tag}-{r.name}-{n}"
            n += 1
            body = dict(body, id=doc_id)
            raw = json.dumps(body).encode()
            attempts += [("PUT", rc.ROUTE + doc_id, raw, doc_id),
                         ("POST", rc.ROUTE, raw, doc_id),
                         ("PUT", rc.ROUTE + own, json.dumps(dict(body, id=own)).encode(), None),
                         ("PATCH", rc.ROUTE + own,
                          json.dumps({"_meridian": body["_meridian"], "x": 1}).encode(), None)]
        for method, path, raw, doc_id in attempts:
            ctype = "application/merge-patch+json" if method == "PATCH" else "application/json"
            resp = h.request(r.port, method, path, body=raw, headers={"Content-Type": ctype})
            assert resp.status == 400, (r.name, method, path, raw, resp)
            assert resp.header("x-meridian-version") is None, resp
            if doc_id:
                refused_ids.add(doc_id)

    # The journal moved on by exactly one LSN per good write: the refused
    # ones took none, and writing still works in every region.
    after = {}
    for r in cluster.regions:
        doc_id = f"after-{tag}-{r.name}"
        resp, body = good_write(r, doc_id)
        rid, lsn = lsn_of(resp)
        assert (rid, lsn) == (r.id, before[r.name][1] + 1), \
            f"{r.name}: LSN went from {before[r.name]} to {(rid, lsn)} over refused writes"
        existing[doc_id] = (body, resp.header("x-meridian-version"))
        after[r.name] = lsn
    cluster.wait_quiet()
    for r in cluster.regions:
        metrics = r.metrics()
        committed = h.metric_sum(metrics, "meridian_writes_committed_total")
        assert committed == committed_before[r.name] + 1, (r.name, committed)
        # The group commit's counters: every acknowledged write was fsynced
        # (its meta page by the syncer, or covered by the next commit's fsync).
        syncs = h.metric_sum(metrics, "meridian_commit_syncs_total")
        covered = h.metric_sum(metrics, "meridian_commit_syncs_covered_total")
        batches = h.metric_sum(metrics, "meridian_commit_batches_total")
        jobs = h.metric_sum(metrics, "meridian_commit_jobs_total")
        assert 1 <= syncs + covered and syncs <= batches <= jobs, \
            (r.name, syncs, covered, batches, jobs)
        if syncs:
            assert h.metric_sum(metrics, "meridian_commit_sync_seconds_total") > 0, r.name
        assert h.metric_sum(metrics, "meridian_commit_seconds_total") > 0, r.name
        # Transactions held back for a durable job: each for 1 ms at most
        # (plus the time to be scheduled again, on a loaded machine).
        assert h.metric_present(metrics, "meridian_commit_gathers_total"), r.name
        gathers = h.metric_sum(metrics, "meridian_commit_gathers_total")
        held = h.metric_sum(metrics, "meridian_commit_gather_seconds_total")
        assert gathers <= batches and held <= gathers * 0.05, (r.name, gathers, held)
        if r is cluster.hub:
            # The hub's applier takes its own decisions from memory.
            assert h.metric_sum(metrics, "meridian_applied_total") > 0
            assert h.metric_sum(metrics, "meridian_apply_log_reads_total") == 0, metrics
        else:
            # Satellites ship their writes from memory (framed at commit).
            assert h.metric_sum(metrics, "meridian_ship_kept_writes_total") > 0, metrics

    # Nothing refused exists anywhere, documents targeted by refused writes
    # are unchanged, and the change feeds list only the good writes.
    for doc_id in refused_ids:
        for r in cluster.regions:
            resp = r.get(doc_id)
            assert resp.status == 404, (r.name, doc_id, resp)
    for doc_id, (body, version) in existing.items():
        status, doc, resps = cluster.wait_same(doc_id)
        assert status == 200 and doc == body, (doc_id, doc)
        assert all(x.header("x-meridian-version") == version for x in resps.values())
    feeds = {r.name: r.all_changes()[0] for r in cluster.regions}
    assert feeds["east"] == feeds["west"] == feeds["south"]
    assert sorted(c["version"] for c in feeds["east"]) == \
        sorted(v for _, v in existing.values())
    assert not {c["id"] for c in feeds["east"]} & refused_ids


def test_backend_refused_write_is_not_replicated_and_leaves_no_backlog(make_cluster):
    """A write the backend refuses (DELETE of a document that does not exist:
    404) is relayed unchanged, never replicated, and once the region's real
    writes are all decided its tentative backlog is back to zero."""
    cluster = make_cluster("embedded")
    south = cluster["south"]
    doc_id = f"real-{uuid.uuid4().hex[:8]}"
    resp, body = good_write(south, doc_id)
    cluster.wait_same(doc_id)

    missing = f"missing-{uuid.uuid4().hex[:8]}"
    resp = south.delete(missing)
    assert resp.status == 404, resp
    assert resp.header("x-meridian-version") is None, resp
    cluster.wait_applied()
    for r in cluster.regions:
        assert missing not in {c["id"] for c in r.all_changes()[0]}, r.name

    def backlog():
        return h.metric_sum(south.metrics(), "meridian_tentative_backlog", region="south")
    try:
        h.poll(lambda: backlog() == 0, timeout=5, what="south's tentative backlog to be 0")
    except AssertionError as e:
        raise AssertionError(f"{e}: meridian_tentative_backlog = {backlog()} with nothing "
                             f"pending (status {south.peer_status()})") from None


@pytest.mark.parametrize("region_name", ["east", "west"])
def test_forged_metadata_is_counted(make_cluster, region_name):
    cluster = make_cluster("embedded")
    r = cluster[region_name]
    before = h.metric_sum(r.metrics(), "meridian_writes_forged_total")
    doc_id = f"forged-{uuid.uuid4().hex[:8]}"
    resp = r.put(doc_id, {"id": doc_id, "tenantId": "t", "_meridian": {"region": "x"}})
    assert resp.status == 400, resp
    reason = resp.json().get("reason", "")
    assert "_meridian" in reason, resp
    assert h.metric_sum(r.metrics(), "meridian_writes_forged_total") == before + 1


def test_hub_rejects_the_first_bad_frame_alone(make_cluster):
    """A shipped batch is decided frame by frame up to the first bad one,
    which is rejected alone with its reason; a body that is not JSON is a
    400. (The hub reads frames without parsing their documents; a document
    that is not valid JSON must still make its frame bad.)"""
    cluster = make_cluster("embedded")
    hub, west = cluster.hub, cluster.regions[1]
    wid = west.id
    tag = uuid.uuid4().hex[:8]

    def frame(lsn, doc):
        return ('{"origin":%d,"lsn":%d,"hlc":%d,"base":null,"delete":false,'
                '"container":"orders","id":"%s-%d","doc":%s}'
                % (wid, lsn, (int(time.time() * 1000) << 16), tag, lsn, doc))

    good = '{"id":"%s-1","tenantId":"t","version":1, "n": 1.50}' % tag
    bad_docs = [b'{"a":"\xc3"}', b'{"a":01}', b'[1]']
    for k, bad in enumerate(bad_docs):
        base = 1000 * (k + 1)
        body = ('{"origin":%d,"hlc":1,"writes":[%s,%s,%s]}' % (
            wid, frame(base + 1, good.replace("-1", "-%d" % (base + 1))),
            frame(base + 2, "BAD"), frame(base + 3, "{}"))).encode().replace(b"BAD", bad)
        r = h.request(hub.peer_port, "POST", "/_meridian/v1/ship", body=body,
                      headers={"Content-Type": "application/json"})
        if k < 2:
            # Not JSON at all: the whole body is refused, nothing decided.
            assert r.status == 400, (bad, r)
            continue
        assert r.status == 200, (bad, r)
        ans = r.json()
        assert ans["decided_upto"] == base + 1, ans
        assert [x["frame"] for x in ans["rejected"]] == [1], ans
        assert "doc" in ans["rejected"][0]["reason"], ans
    r = h.request(hub.peer_port, "POST", "/_meridian/v1/ship", body=b'{"origin":2,"writes":[',
                  headers={"Content-Type": "application/json"})
    assert r.status == 400, r


def test_hub_decides_a_full_batch_and_rejects_a_late_bad_frame_alone(make_cluster):
    """All 1000 frames of a full shipped batch are decided, and a bad frame
    deep in a batch (the 201st) is rejected alone, after the frames before
    it."""
    cluster = make_cluster("embedded")
    hub, west = cluster.hub, cluster.regions[1]
    wid = west.id
    tag = uuid.uuid4().hex[:8]
    base = 50000

    def frame(lsn, doc=None):
        doc = doc or '{"id":"%s-%d","tenantId":"t","version":%d}' % (tag, lsn, lsn)
        return ('{"origin":%d,"lsn":%d,"hlc":%d,"base":null,"delete":false,'
                '"container":"orders","id":"%s-%d","doc":%s}'
                % (wid, lsn, (int(time.time() * 1000) << 16), tag, lsn, doc))

    def ship(first, n, bad_at=None):
        frames = [frame(first + i, "[1]" if i == bad_at else None) for i in range(n)]
        body = ('{"origin":%d,"hlc":1,"writes":[%s]}' % (wid, ",".join(frames))).encode()
        r = h.request(hub.peer_port, "POST", "/_meridian/v1/ship", body=body,
                      headers={"Content-Type": "application/json"})
        assert r.status == 200, r
        return r.json()

    ans = ship(base + 1, 1000)
    assert ans["decided_upto"] == base + 1000 and ans["rejected"] == [], ans
    ans = ship(base + 1001, 300, bad_at=200)
    assert [x["frame"] for x in ans["rejected"]] == [200], ans
    assert ans["decided_upto"] == base + 1200 and ans["decided"] == 200, ans
    # 1,200 entries to apply in every region: 12-16 s on the ASan build of a
    # loaded 2-core box (measured: steady progress, no stall), so more than
    # wait_applied's default 15 s.
    cluster.wait_applied(timeout=60)
    for r in cluster.regions:
        ids = {c["id"] for c in r.all_changes()[0] if c["id"].startswith(tag)}
        assert ids == {"%s-%d" % (tag, base + i) for i in range(1, 1201)}, (r.name, len(ids))
