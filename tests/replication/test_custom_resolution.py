"""Custom conflict resolution across three real regions (issue 5).

Containers:
  ledger  mode custom, the seeds' payments-ledger resolver (deploy/local/
          resolvers/ledger.js, unchanged): the higher status wins, a refund
          (3) is final.
  notes   mode custom, no procedure: every conflict waits in the conflicts
          feed of every region until the application DELETEs it.
  loopy   mode custom, a procedure that never returns (bounded by
          limits.procedure_timeout_ms).

Conflicts are made the way they happen in production: the same document
written in two regions at the same moment, each region not yet having seen
the other's write (the WAN relays delay the satellites' traffic), so both
reach the hub with the same base.
"""

import collections
import subprocess
import threading
import time
from pathlib import Path

import pytest

import replication_cluster as rc

h = rc.h
ROOT = Path(__file__).resolve().parents[2]
LEDGER = {"name": "ledger", "route": "/ledger/", "partition_key": "/paymentId",
          "conflict_resolution": {"mode": "custom",
                                  "procedure": str(ROOT / "deploy/local/resolvers/ledger.js")}}
NOTES = {"name": "notes", "route": "/notes/", "partition_key": "/owner",
         "conflict_resolution": {"mode": "custom"}}
LOOPY = {"name": "loopy", "route": "/loopy/", "partition_key": "/owner",
         "conflict_resolution": {"mode": "custom",
                                 "procedure": str(ROOT / "tests/unit/fixtures/resolvers/loop.js")}}
CONTAINERS = [rc.CONTAINER, LEDGER, NOTES, LOOPY]


def status_of(resp):
    assert resp.status == 200, resp
    return resp.json()["status"]


def ledger_dump(region, ids):
    """{id: document (tags included) or None} of the ledger in one region."""
    out = {}
    for i in ids:
        r = region.get(i, route="/ledger/")
        assert r.status in (200, 404), r
        out[i] = r.json() if r.status == 200 else None
    return out


def feed(region, route):
    r = region.request("GET", f"{route}_conflicts")
    assert r.status == 200, f"{region.name} {route}_conflicts: {r}"
    return r.json()["conflicts"]


@pytest.fixture
def cluster(make_cluster):
    return make_cluster(delay_ms=rc.WAN_DELAY_MS, containers=CONTAINERS,
                        limits={"procedure_timeout_ms": 1500})


def payment_round(cluster, statuses, prefix, base_doc=None):
    """Writes each (region, status) of `statuses` to one payment at the same
    moment; retried on a fresh id until the hub saw a conflict. Returns the
    payment id."""
    def make(n):
        pid = f"{prefix}-{n}"
        if base_doc is not None:
            assert cluster.hub.put(pid, dict(base_doc, paymentId=pid),
                                   route="/ledger/").status in (200, 201)
            cluster.wait_same(pid, route="/ledger/")
        calls = [lambda r=r, s=s: r.put(pid, {"paymentId": pid, "status": s}, route="/ledger/")
                 for r, s in statuses]
        return pid, calls
    pid, results = rc.concurrent_round(cluster, make, min_conflicts=1)
    for resp in results:
        assert resp.status in (200, 201), resp
    return pid


def test_payments_incident_ends_captured_everywhere(make_cluster, backend):
    """The seed's incident: an authorization (1) in west and a capture (2) in
    south within the same second. With the ledger resolver every region ends
    captured, as the one new version the hub made (0:CRTS), and every
    region's change feed shows that resolution once. Also with nginx WebDAV
    as every region's backend: the resolution is written through it."""
    cluster = make_cluster(backend=backend, delay_ms=rc.WAN_DELAY_MS, containers=CONTAINERS,
                           limits={"procedure_timeout_ms": 1500})
    pid = payment_round(cluster, [(cluster["west"], 1), (cluster["south"], 2)], "pay")
    st, doc, resps = cluster.wait_same(pid, route="/ledger/")
    assert st == 200 and doc["status"] == 2, cluster.explain(pid, route="/ledger/")
    versions = {r.header("x-meridian-version") for r in resps.values()}
    assert len(versions) == 1 and next(iter(versions)).startswith("0:"), versions
    cluster.wait_quiet()
    feeds = [[c for c in r.all_changes(route="/ledger/")[0] if c["id"] == pid]
             for r in cluster.regions]
    assert all(f == feeds[0] for f in feeds), feeds
    resolved = [c for c in feeds[0] if "resolves" in c]
    assert len(resolved) == 1, feeds[0]
    assert resolved[0]["version"] == next(iter(versions))
    assert resolved[0]["doc"]["status"] == 2
    m = cluster.hub.metrics()
    assert h.metric_sum(m, "meridian_procedure_runs_total") >= 1
    assert h.metric_sum(m, "meridian_procedure_failures_total") == 0


def test_refund_is_never_overwritten(cluster):
    """A refund (3) racing a capture (2) on an authorized payment: the refund
    stays, whichever region wrote which."""
    for n, (a, b) in enumerate([("west", "south"), ("south", "west")]):
        pid = payment_round(cluster, [(cluster[a], 3), (cluster[b], 2)], f"refund{n}",
                            base_doc={"status": 1})
        st, doc, _ = cluster.wait_same(pid, route="/ledger/")
        assert st == 200 and doc["status"] == 3, cluster.explain(pid, route="/ledger/")


def test_notes_conflicts_fill_every_feed_and_leave_everywhere_on_delete(cluster):
    """Without a procedure the loser of a conflict waits in the conflicts
    feed of every region; the head stays the first write; a DELETE at a
    satellite removes it everywhere (from that satellite's own feed at once);
    a second DELETE is a 404."""
    def make(n):
        nid = f"note-{n}"
        return nid, [lambda r=r: r.put(nid, {"owner": "ann", "text": f"from {r.name}"},
                                       route="/notes/")
                     for r in (cluster["west"], cluster["south"])]
    nid, _ = rc.concurrent_round(cluster, make, min_conflicts=1)
    st, doc, resps = cluster.wait_same(nid, route="/notes/")
    assert st == 200
    head_version = resps["east"].header("x-meridian-version")
    h.poll(lambda: all(len(feed(r, "/notes/")) == 1 for r in cluster.regions), timeout=10,
           what="the conflict in every region's feed")
    entries = [feed(r, "/notes/")[0] for r in cluster.regions]
    assert all(e == entries[0] for e in entries), entries
    e = entries[0]
    assert e["kind"] == "insert" and e["docId"] == nid and e["container"] == "notes"
    assert e["head"]["version"] == head_version
    assert e["content"]["text"] != doc["text"], "the feed holds the loser, the head the winner"
    assert e["version"] != head_version and "error" not in e
    one = cluster["west"].request("GET", f"/notes/_conflicts/{e['id']}")
    assert one.status == 200 and one.json() == e
    assert h.metric_sum(cluster["west"].metrics(), "meridian_conflicts_feed") == 1

    gone = cluster["south"].request("DELETE", f"/notes/_conflicts/{e['id']}")
    assert gone.status == 200, gone
    assert gone.json()["dismissed"] == e["id"]
    assert feed(cluster["south"], "/notes/") == [], "the region that took the DELETE lists it"
    h.poll(lambda: all(feed(r, "/notes/") == [] for r in cluster.regions), timeout=10,
           what="the conflict gone from every feed")
    for r in cluster.regions:
        assert r.request("GET", f"/notes/_conflicts/{e['id']}").status == 404
    again = cluster["west"].request("DELETE", f"/notes/_conflicts/{e['id']}")
    assert again.status == 404 and "no conflict" in again.json()["reason"], again
    st2, doc2, _ = cluster.wait_same(nid, route="/notes/")
    assert (st2, doc2) == (st, doc), "dismissing a conflict leaves the document alone"


def test_bad_conflicts_feed_requests_name_the_problem(cluster):
    west = cluster["west"]
    r = west.request("GET", "/notes/_conflicts/abc")
    assert r.status == 400 and "decimal id" in r.json()["reason"]
    r = west.request("GET", "/notes/_conflicts?limit=0")
    assert r.status == 400 and "limit" in r.json()["reason"]
    r = west.request("PUT", "/notes/_conflicts/5", body={"x": 1})
    assert r.status == 405
    r = west.request("GET", "/notes/_conflicts/99")
    assert r.status == 404
    assert west.request("GET", "/orders/_conflicts").json()["conflicts"] == []


def test_looping_procedure_leaves_the_hub_answering_and_files_the_conflict(cluster):
    """A resolver that never returns is killed at procedure_timeout_ms; the
    hub keeps serving meanwhile, the conflict lands in the feed with the
    reason, and the first write stays the head everywhere."""
    hub = cluster.hub
    slow = []
    stop = threading.Event()

    def probe():
        while not stop.is_set():
            t0 = time.monotonic()
            r = hub.request("GET", "/_meridian/health", timeout=5)
            slow.append((r.status, time.monotonic() - t0))
            time.sleep(0.02)

    t = threading.Thread(target=probe)
    t.start()
    try:
        def make(n):
            lid = f"loop-{n}"
            return lid, [lambda r=r: r.put(lid, {"owner": "bob", "by": r.name}, route="/loopy/")
                         for r in (cluster["west"], cluster["south"])]
        lid, _ = rc.concurrent_round(cluster, make, min_conflicts=1)
    finally:
        stop.set()
        t.join(10)
    assert slow and all(s == 200 for s, _ in slow)
    assert max(d for _, d in slow) < 1.0, f"the hub stalled: {max(d for _, d in slow):.2f}s"
    h.poll(lambda: all(len(feed(r, "/loopy/")) == 1 for r in cluster.regions), timeout=10,
           what="the failed resolution in every feed")
    e = feed(cluster["west"], "/loopy/")[0]
    assert "timed out after 1500 ms" in e["error"], e
    cluster.wait_same(lid, route="/loopy/")
    assert h.metric_sum(hub.metrics(), "meridian_procedure_failures_total") >= 1
    # The hub still decides ordinary writes.
    assert cluster["west"].put("after-loop", {"tenantId": "t", "version": 1}).status in (200, 201)
    cluster.wait_same("after-loop")


def test_hub_kill9_during_a_conflict_burst_resolves_each_conflict_once(cluster):
    """kill -9 of the hub while west and south race on many payments, then
    restart: every payment ends captured in every region, every conflicting
    write was resolved at most once (no version is named by two
    resolutions), and the three regions' ledger feeds are identical."""
    west, south = cluster["west"], cluster["south"]
    n = 60
    acked = collections.Counter()

    def writer(region, status):
        for i in range(n):
            r = region.put(f"burst-{i}", {"paymentId": f"burst-{i}", "status": status},
                           route="/ledger/")
            if r.status in (200, 201):
                acked[(region.name, i)] += 1
            time.sleep(0.01)

    threads = [threading.Thread(target=writer, args=a) for a in ((west, 1), (south, 2))]
    for t in threads:
        t.start()
    time.sleep(0.3)
    cluster.hub.kill9()
    time.sleep(0.3)
    cluster.hub.start()
    for t in threads:
        t.join(60)
    assert len(acked) == 2 * n, "every write was acknowledged by its own region"
    cluster.wait_quiet(timeout=60)
    ids = [f"burst-{i}" for i in range(n)]
    dumps = [ledger_dump(r, ids) for r in cluster.regions]
    for d in dumps:
        for i in ids:
            assert d[i] is not None and d[i]["status"] == 2, (i, d[i], cluster.explain(i, route="/ledger/"))
    assert all(d == dumps[0] for d in dumps), "regions differ"
    feeds = [r.all_changes(route="/ledger/")[0] for r in cluster.regions]
    assert all(f == feeds[0] for f in feeds), "change feeds differ"
    resolves = [c["resolves"] for c in feeds[0] if "resolves" in c]
    assert len(resolves) == len(set(resolves)), f"a conflict was resolved twice: {resolves}"
    # Both writers raced on every payment well within one WAN round trip, so
    # (almost) every payment was a conflict the ledger resolver decided.
    assert len(resolves) >= n // 2, f"only {len(resolves)} resolutions for {n} races"
    assert cluster.hub.starts == 2
    crts = [c["crts"] for c in feeds[0]]
    assert crts == sorted(crts) and len(crts) == len(set(crts))


def test_a_changed_conflict_policy_is_refused_at_start(make_cluster):
    """A container's policy is fixed when it is created: a region restarted
    with notes switched to last_writer_wins refuses to start and says why;
    put back, it starts and still serves the container."""
    cluster = make_cluster(containers=CONTAINERS)
    west = cluster["west"]
    assert west.put("n1", {"owner": "ann"}, route="/notes/").status in (200, 201)
    west.stop()
    good = west.config_text
    bad = good.replace("conflict_resolution: { mode: custom }",
                       "conflict_resolution: { mode: last_writer_wins, path: /rev }")
    assert bad != good
    west.config_path.write_text(bad)
    run = subprocess.run([h.meridian_bin(), "--config", str(west.config_path), "--region", "west"],
                         capture_output=True, text=True, timeout=20)
    assert run.returncode != 0
    out = run.stdout + run.stderr
    assert "container 'notes'" in out and "fixed when it is created" in out, out
    assert "'custom'" in out and "'last_writer_wins on /rev'" in out, out
    west.config_path.write_text(good)
    west.start()
    r = west.get("n1", route="/notes/")
    assert r.status == 200 and r.json()["owner"] == "ann"
