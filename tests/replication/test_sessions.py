"""Reads by consistency level and session token across three regions
(issue 6). The WAN relays put 200 ms one way between each satellite and the
hub, so a write in west reaches south no sooner than ~400 ms later: a read in
south right after the write can only see it by waiting for apply or by being
forwarded.
"""

import threading
import time

import pytest

import replication_cluster as rc

h = rc.h
DELAY_MS = 200


@pytest.fixture
def cluster(make_cluster):
    return make_cluster(delay_ms=DELAY_MS)


def token_of(resp):
    t = resp.header("x-session-token")
    assert t, f"no X-Session-Token on {resp}"
    return t


def test_read_your_write_in_another_region_with_the_token(cluster):
    west, south = cluster["west"], cluster["south"]
    w = west.put("ryw", {"tenantId": "t", "version": 1, "v": "mine"})
    assert w.status in (200, 201), w
    r = south.get("ryw", headers={"X-Session-Token": token_of(w)})
    assert r.status == 200, r
    assert rc.user_fields(r.json())["v"] == "mine"
    assert r.header("x-meridian-version") == w.header("x-meridian-version")
    # The answer's token still names the write (merged, never lost).
    assert "2=" in token_of(r), token_of(r)
    m = south.metrics()
    served = {s: h.metric_sum(m, "meridian_reads_total", served=s, level="session")
              for s in ("local", "after_wait", "forwarded", "refused")}
    assert served["after_wait"] + served["forwarded"] >= 1, served


def test_without_the_token_an_eventual_read_misses_it(cluster):
    west, south = cluster["west"], cluster["south"]
    w = west.put("miss", {"tenantId": "t", "version": 1})
    assert w.status in (200, 201), w
    r = south.get("miss", headers={"X-Consistency-Level": "eventual"})
    assert r.status == 404, "the write cannot have crossed two 200 ms hops yet"
    assert r.header("x-meridian-substatus") is None
    assert r.header("x-session-token") is not None
    cluster.wait_same("miss")


def test_a_token_whose_origin_is_cut_off_is_forwarded_there(cluster):
    """West is cut off from the hub: its write can reach south only by
    forwarding the read to west itself (peer ports talk directly)."""
    west, south = cluster["west"], cluster["south"]
    cluster.relays["west"].blackhole()
    w = west.put("cut", {"tenantId": "t", "version": 1, "v": "from west"})
    assert w.status in (200, 201), w
    t0 = time.monotonic()
    r = south.get("cut", headers={"X-Session-Token": token_of(w)})
    assert r.status == 200, r
    assert rc.user_fields(r.json())["v"] == "from west"
    assert r.header("x-meridian-served-by") == "west", r
    assert r.header("x-meridian-confirmed") == "false"
    assert time.monotonic() - t0 < 5
    cluster.relays["west"].pass_through()
    cluster.wait_same("cut", timeout=20)


def test_a_token_nobody_reachable_can_serve_is_1002_never_stale(cluster):
    """West writes, then dies before the hub hears of it: south cannot serve
    the session (west is down, the hub never got the write): 404 with
    substatus 1002, not an old answer."""
    west, south = cluster["west"], cluster["south"]
    assert south.put("gone", {"tenantId": "t", "version": 1, "v": "old"}).status in (200, 201)
    cluster.wait_same("gone")
    cluster.relays["west"].blackhole()
    w = west.put("gone", {"tenantId": "t", "version": 2, "v": "new"})
    assert w.status in (200, 201), w
    west.kill9()
    r = south.get("gone", headers={"X-Session-Token": token_of(w)})
    assert r.status == 404 and r.header("x-meridian-substatus") == "1002", r
    assert "session not available" in r.json()["reason"]
    m = south.metrics()
    assert h.metric_sum(m, "meridian_reads_total", served="refused") >= 1


def test_bad_levels_and_tokens_are_400(cluster):
    south = cluster["south"]
    r = south.get("x", headers={"X-Consistency-Level": "strong"})
    assert r.status == 400 and "multi-region writes" in r.json()["reason"], r
    r = south.get("x", headers={"X-Consistency-Level": "bounded_staleness"})
    assert r.status == 400 and "stronger than the account's level 'session'" in r.json()["reason"]
    r = south.get("x", headers={"x-ms-consistency-level": "Linearizable"})
    assert r.status == 400 and "not a level" in r.json()["reason"]
    r = south.get("x", headers={"X-Session-Token": "1#x#2=3"})
    assert r.status == 400 and r.json()["error"] == "bad_session_token", r
    r = south.request("GET", "/orders/_changes", headers={"X-Session-Token": "garbage"})
    assert r.status == 400


def test_listing_and_change_feed_follow_the_session(cluster):
    west, south = cluster["west"], cluster["south"]
    w = west.put("feed-1", {"tenantId": "t", "version": 1})
    assert w.status in (200, 201)
    r = south.request("GET", "/orders/_changes?since=0",
                      headers={"X-Session-Token": token_of(w)})
    assert r.status == 200, r
    ids = [c["id"] for c in r.json()["changes"]]
    # Served by a region that has the write: either south after applying it,
    # or the region it was forwarded to; the write is confirmed by then
    # unless west served it (its own feed lists only confirmed writes).
    if r.header("x-meridian-served-by") != "west":
        assert "feed-1" in ids, r.json()
    listing = south.request("GET", "/orders/", headers={"X-Session-Token": token_of(w)})
    assert listing.status == 200, listing
    assert "feed-1" in listing.body.decode()


def test_a_read_token_covers_the_confirmed_version_it_returns(make_cluster):
    """The applier commits up to a window of entries at once and moves the
    applied position over the finished prefix only, so a document can be
    readable (its key's entry finished) before the position reaches its
    crts. A read's token must still name that crts: else the session, read
    next in a region that has applied less, is served an older version
    (a monotonic-reads violation the history test once caught under load).
    Reads at a satellite while the hub writes a burst: every answer's token
    position is at least the X-Meridian-Crts it shows."""
    cluster = make_cluster()
    hub, west = cluster.hub, cluster["west"]
    n = 300
    stop = threading.Event()
    checked, low = [], []

    def reader():
        while not stop.is_set():
            for i in range(30):
                r = west.get(f"cover-{i}")
                crts = r.header("x-meridian-crts")
                if r.status != 200 or not crts:
                    continue
                position = int(token_of(r).split("#")[1])
                checked.append(position)
                if position < int(crts):
                    low.append((f"cover-{i}", int(crts), position))

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        for i in range(n):
            hub.put(f"cover-{i % 30}", {"tenantId": "t", "version": i})
        cluster.wait_quiet()
    finally:
        stop.set()
        for t in readers:
            t.join(10)
    assert len(checked) > 100, f"only {len(checked)} confirmed reads checked"
    assert not low, f"{len(low)} of {len(checked)} reads' tokens name less than the crts shown: {low[:5]}"
