"""Failover to the next region when a region's own backend fails (issue 7,
item 5). Every region has an nginx WebDAV store; west's is stopped: west's
clients keep being served by the next region in the configured order
(south), with X-Meridian-Served-By saying so, and west returns to its own
backend once nginx answers again. What was written meanwhile reaches west's
store through the confirmed log."""

import replication_cluster as rc

h = rc.h


def doc(version, **kw):
    return dict({"tenantId": "t", "version": version}, **kw)


def test_a_region_whose_backend_is_down_is_served_by_the_next_region(make_cluster):
    cluster = make_cluster(backend="nginx")
    west = cluster["west"]
    assert west.put("before", doc(1, v="b")).status in (200, 201)
    cluster.wait_same("before")

    cluster.stores["west"].stop()
    h.poll(lambda: west.get("before").header("x-meridian-served-by") == "south", timeout=10,
           what="west failing over to south")
    r = west.get("before")
    assert r.status == 200 and rc.user_fields(r.json())["v"] == "b", r
    w = west.put("during", doc(1, v="d"))
    assert w.status in (200, 201), w
    assert w.header("x-meridian-served-by") == "south", w
    assert w.header("x-meridian-version").startswith("3:"), "written as south's write"
    # The session goes on through the same region: the write is read back.
    g = west.get("during", headers={"X-Session-Token": w.header("x-session-token")})
    assert g.status == 200 and rc.user_fields(g.json())["v"] == "d", g
    m = west.metrics()
    assert h.metric_sum(m, "meridian_backend_up") == 0
    assert h.metric_sum(m, "meridian_failover_requests_total") >= 3

    cluster.stores["west"].start()
    h.poll(lambda: west.get("during").header("x-meridian-served-by") is None, timeout=15,
           what="west serving from its own backend again")
    cluster.wait_same("during", timeout=15)
    r = west.get("during")
    assert r.status == 200 and rc.user_fields(r.json())["v"] == "d"
    assert h.metric_sum(west.metrics(), "meridian_backend_up") == 1
