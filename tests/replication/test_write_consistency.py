"""The write side of consistency (issue 6): X-Meridian-Wait (the seeds'
custom synchronization, per request), writes that honour the session token,
the bounded-staleness backlog (429), and strong with a single write region.
The WAN relays put DELAY_MS one way between each satellite and the hub."""

import time

import pytest

import replication_cluster as rc

h = rc.h
DELAY_MS = 150


def doc(version, **kw):
    return dict({"tenantId": "t", "version": version}, **kw)


@pytest.fixture
def cluster(make_cluster):
    return make_cluster(delay_ms=DELAY_MS)


def test_wait_confirmed_holds_the_answer_until_the_hub_decided(cluster):
    west = cluster["west"]
    t0 = time.monotonic()
    r = west.put("wc", doc(1), headers={"X-Meridian-Wait": "confirmed"})
    took = time.monotonic() - t0
    assert r.status in (200, 201), r
    assert r.header("x-meridian-confirmed") == "true" and r.header("x-meridian-crts"), r
    assert took >= 2 * DELAY_MS / 1000, f"answered after {took:.3f}s: cannot have been confirmed"
    g = west.get("wc")
    assert g.header("x-meridian-confirmed") == "true"
    assert g.header("x-meridian-crts") == r.header("x-meridian-crts")


def test_wait_regions_holds_until_every_region_has_it(cluster):
    south = cluster["south"]
    r = south.put("wr", doc(1, v="everywhere"), headers={"X-Meridian-Wait": "regions=3"})
    assert r.status in (200, 201), r
    for region in cluster.regions:
        g = region.get("wr", headers={"X-Consistency-Level": "eventual"})
        assert g.status == 200, f"{region.name} does not have it yet: {g}"
        assert rc.user_fields(g.json())["v"] == "everywhere"
    m = south.metrics()
    assert h.metric_sum(m, "meridian_write_waits_total") == 1


def test_a_superseded_write_waiting_for_confirmation_gets_409_with_the_winner(cluster):
    """South writes /version 2; 50 ms later west, not having seen it, writes
    /version 1 and waits for the hub: south's write reached the hub first,
    west's conflicts with it and loses: 409 naming south's version."""
    west, south = cluster["west"], cluster["south"]
    for n in range(3):
        key = f"lose-{n}"
        before = rc.hub_conflicts(cluster)
        won = south.put(key, doc(2, by="south"))
        time.sleep(0.05)
        lost = west.put(key, doc(1, by="west"), headers={"X-Meridian-Wait": "confirmed"})
        cluster.wait_quiet()
        if rc.hub_conflicts(cluster) > before:
            break
    assert won.status in (200, 201), won
    assert lost.status == 409, lost
    assert lost.json()["error"] == "superseded"
    assert lost.header("x-meridian-winner") == won.header("x-meridian-version"), lost
    st, d, _ = cluster.wait_same(key)
    assert d["by"] == "south"


def test_a_wait_that_times_out_is_504_and_the_write_still_lands(cluster):
    west = cluster["west"]
    cluster.relays["west"].blackhole()
    r = west.put("slow", doc(1), headers={"X-Meridian-Wait": "confirmed",
                                          "X-Meridian-Wait-Timeout": "400"})
    assert r.status == 504, r
    assert "committed here" in r.json()["reason"], r.json()
    assert h.metric_sum(west.metrics(), "meridian_write_wait_timeouts_total") == 1
    cluster.relays["west"].pass_through()
    cluster.wait_same("slow", timeout=20)


def test_bad_wait_headers_are_400_and_write_nothing(cluster):
    west = cluster["west"]
    for hdrs in ({"X-Meridian-Wait": "soon"}, {"X-Meridian-Wait": "regions=4"},
                 {"X-Meridian-Wait": "regions=0"},
                 {"X-Meridian-Wait": "confirmed", "X-Meridian-Wait-Timeout": "-1"}):
        r = west.put("bad-wait", doc(1), headers=hdrs)
        assert r.status == 400 and r.json()["error"] == "bad_wait", (hdrs, r)
    assert west.get("bad-wait").status == 404


def test_a_write_honours_the_session_token(cluster):
    """West writes; the same session writes the document again in south at
    once: south first waits until it has west's write, so its write is
    based on it (no conflict at the hub) and wins."""
    west, south = cluster["west"], cluster["south"]
    a = west.put("chain", doc(5, step="west"))
    assert a.status in (200, 201), a
    before = rc.hub_conflicts(cluster)
    b = south.put("chain", doc(1, step="south"), headers={"X-Session-Token": a.header("x-session-token")})
    assert b.status in (200, 201), b
    st, d, _ = cluster.wait_same("chain")
    assert d["step"] == "south", "a lower /version still wins: it was written on west's write"
    cluster.wait_quiet()
    assert rc.hub_conflicts(cluster) == before
    m = south.metrics()
    assert h.metric_sum(m, "meridian_write_gate_total", served="after_wait") == 1


def test_a_write_whose_token_cannot_be_met_is_1002(make_cluster):
    cluster = make_cluster(delay_ms=DELAY_MS, account={"multi_region_writes": True,
                                                       "consistency": "session",
                                                       "session_wait_ms": 300})
    west, south = cluster["west"], cluster["south"]
    cluster.relays["west"].blackhole()
    a = west.put("stuck", doc(1))
    r = south.put("stuck", doc(2), headers={"X-Session-Token": a.header("x-session-token")})
    assert r.status == 404 and r.header("x-meridian-substatus") == "1002", r
    assert south.get("stuck", headers={"X-Consistency-Level": "eventual"}).status == 404


def test_bounded_staleness_reads_go_to_the_hub_and_writes_get_429(make_cluster):
    """max_lag_seconds 1 with 1.1 s one way between south and the hub: south's
    state is always more than a second old, so its bounded-staleness reads
    are served by the hub. Cut off, south's unconfirmed writes pile up past
    max_lag_versions: 429 with Retry-After, and reads that need the hub fail
    (503) rather than answer stale."""
    cluster = make_cluster(delay_ms=1100, account={
        "multi_region_writes": True, "consistency": "bounded_staleness",
        "bounded_staleness": {"max_lag_versions": 2, "max_lag_seconds": 1},
        "forward_timeout_ms": 4000})
    hub, south = cluster.hub, cluster["south"]
    assert hub.put("bs", doc(1, v="fresh")).status in (200, 201)
    g = south.get("bs")
    assert g.status == 200 and g.header("x-meridian-served-by") == "east", g
    assert rc.user_fields(g.json())["v"] == "fresh"
    m = south.metrics()
    assert h.metric_sum(m, "meridian_reads_total", level="bounded_staleness", served="forwarded") >= 1
    # At the hub itself a bounded read is local.
    assert hub.get("bs").header("x-meridian-served-by") is None

    cluster.relays["south"].blackhole()
    statuses = [south.put(f"own-{i}", doc(1)).status for i in range(5)]
    assert statuses[:3] == [201, 201, 201] and statuses[3:] == [429, 429], statuses
    r = south.put("own-x", doc(1))
    assert r.status == 429 and r.header("retry-after") == "1", r
    assert "bounded staleness" in r.json()["reason"]
    assert h.metric_sum(south.metrics(), "meridian_writes_throttled_total") >= 3
    r = south.get("bs")
    assert r.status == 503 and r.json()["error"] == "hub_unreachable", r
    # Relaxed to session, the same read is served here.
    assert south.get("bs", headers={"X-Consistency-Level": "session"}).status in (200, 404)
    cluster.relays["south"].pass_through()
    h.poll(lambda: south.put("own-after", doc(1)).status in (200, 201), timeout=30,
           what="south taking writes again once back within the bound")


def test_strong_with_a_single_write_region(make_cluster):
    """multi_region_writes: false + strong: a satellite forwards writes to the
    hub, which answers once every region has applied them; strong reads are
    served by the hub."""
    cluster = make_cluster(delay_ms=DELAY_MS, account={"multi_region_writes": False,
                                                       "consistency": "strong"})
    south, west = cluster["south"], cluster["west"]
    w = south.put("strong", doc(1, v="s"))
    assert w.status in (200, 201), w
    assert w.header("x-meridian-served-by") == "east", w
    assert w.header("x-meridian-version").startswith("1:"), "written by the hub"
    for region in cluster.regions:
        g = region.get("strong", headers={"X-Consistency-Level": "eventual"})
        assert g.status == 200, f"{region.name} lacks an acknowledged strong write: {g}"
    r = west.get("strong")
    assert r.status == 200 and r.header("x-meridian-served-by") == "east", r
    assert h.metric_sum(west.metrics(), "meridian_reads_total", level="strong",
                        served="forwarded") == 1
