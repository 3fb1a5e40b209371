"""The change feed: every confirmed write once, in crts order, the same in
every region; superseded writes absent (issue 4, test 5)."""

import uuid

import replication_cluster as rc



def check_feed_shape(name, feed):
    crts = [c["crts"] for c in feed]
    assert all(a < b for a, b in zip(crts, crts[1:])), f"{name}: crts not strictly increasing"
    versions = [c["version"] for c in feed]
    dup = {v for v in versions if versions.count(v) > 1}
    assert not dup, f"{name}: versions listed more than once: {dup}"
    for c in feed:
        assert c["op"] in ("create", "replace", "delete"), c
        assert c["version"] == f"{c['regionId']}:{c['lsn']}", c
        assert c["region"] in rc.REGION_NAMES, c
        if c["op"] == "delete":
            assert c.get("tombstone") is True and "doc" not in c, c
        else:
            assert c["doc"]["id"] == c["id"], c
            meta = c["doc"]["_meridian"]
            assert (meta["regionId"], meta["lsn"], meta["hlc"]) == \
                (c["regionId"], c["lsn"], c["hlc"]), c


def test_change_feed_lists_each_confirmed_write_once_in_crts_order(make_cluster):
    cluster = make_cluster("embedded")
    tag = uuid.uuid4().hex[:8]
    acked = {}   # version -> (id, op, user doc or None)

    def write(region, method, doc_id, body=None):
        if method == "DELETE":
            resp = region.delete(doc_id)
        else:
            resp = region.request(method, rc.ROUTE + doc_id, body=body)
        assert 200 <= resp.status < 300, resp
        v = resp.header("x-meridian-version")
        assert v not in acked
        acked[v] = (doc_id, method, body)
        return v

    # Creates, replaces, merge patches and deletes from every region, one
    # after the other (no conflicts): each of them is confirmed.
    for i in range(6):
        for r in cluster.regions:
            doc_id = f"feed-{tag}-{r.name}-{i}"
            write(r, "PUT", doc_id, {"id": doc_id, "tenantId": "t", "version": 1, "i": i})
    cluster.wait_quiet()
    for i in range(6):
        for k, r in enumerate(cluster.regions):
            other = cluster.regions[(k + 1) % 3]
            doc_id = f"feed-{tag}-{other.name}-{i}"
            if i % 3 == 0:
                write(r, "PUT", doc_id, {"id": doc_id, "tenantId": "t", "version": 2, "i": i})
            elif i % 3 == 1:
                write(r, "PATCH", doc_id, {"patched": r.name})
            else:
                write(r, "DELETE", doc_id)
    cluster.wait_quiet()

    # A conflict the hub's write wins (highest /version, and confirmed
    # first): the satellites' writes are superseded and never confirmed.
    cluster.set_delay(rc.WAN_DELAY_MS)

    def make_calls(n):
        doc_id = f"feed-{tag}-conflict{n}"
        return doc_id, [lambda r=r, v=v: r.put(doc_id, {"id": doc_id, "tenantId": "t",
                                                         "version": v, "by": r.name})
                        for r, v in zip(cluster.regions, (30, 10, 20))]
    doc_id, resps = rc.concurrent_round(cluster, make_calls, min_conflicts=2)
    for resp in resps:
        assert resp.status in (200, 201), resp
    winner, losers = resps[0].header("x-meridian-version"), \
        [r.header("x-meridian-version") for r in resps[1:]]
    cluster.set_delay(0)
    status, doc, _ = cluster.wait_same(doc_id)
    assert status == 200 and doc["by"] == "east", doc
    cluster.wait_quiet()

    feeds = {}
    for r in cluster.regions:
        feed, last_page = r.all_changes()
        check_feed_shape(r.name, feed)
        # superseded decisions take a crts too but are not listed
        assert last_page["applied"] >= feed[-1]["crts"], last_page
        feeds[r.name] = feed

    # Identical in every region.
    assert feeds["east"] == feeds["west"] == feeds["south"]
    feed = feeds["east"]
    listed = {c["version"]: c for c in feed}

    # Every acknowledged non-conflicting write is listed exactly once, with
    # what was written.
    for v, (doc_id_, method, body) in acked.items():
        assert v in listed, f"confirmed write {v} ({method} {doc_id_}) missing from the feed"
        c = listed[v]
        assert c["id"] == doc_id_
        if method == "DELETE":
            assert c["op"] == "delete"
        elif method == "PUT":
            assert rc.user_fields(c["doc"]) == body
            assert c["op"] == ("create" if body["version"] == 1 else "replace")
        else:
            assert c["op"] == "replace" and c["doc"]["patched"] == body["patched"]

    # The conflict: the winner once, the superseded writes not at all.
    mine = [c for c in feed if c["id"] == doc_id]
    assert [c["version"] for c in mine] == [winner], mine
    for v in losers:
        assert v not in listed, f"superseded write {v} is in the feed"

    # Nothing but these writes is listed (and, had the conflict round been
    # run again on a fresh id, the writes of the earlier attempts).
    retried = {v for v, c in listed.items()
               if c["id"].startswith(f"feed-{tag}-conflict") and c["id"] != doc_id}
    assert set(listed) - retried == set(acked) | {winner}

    # Paging: since= and limit= cut the same sequence.
    for r in cluster.regions:
        paged, since = [], 0
        while True:
            page = r.changes(since=since, limit=7)
            assert len(page["changes"]) <= 7
            if not page["changes"]:
                break
            assert all(c["crts"] > since for c in page["changes"])
            paged += page["changes"]
            since = page["last"]
        assert paged == feeds[r.name], r.name
        mid = feed[len(feed) // 2]["crts"]
        assert r.changes(since=mid)["changes"] == [c for c in feed if c["crts"] > mid]
    # Bad parameters are refused, not misread.
    for q in ("since=abc", "limit=0", "limit=-1", "since=1&limit=x"):
        resp = cluster["west"].request("GET", f"{rc.ROUTE}_changes?{q}")
        assert resp.status == 400, (q, resp)
