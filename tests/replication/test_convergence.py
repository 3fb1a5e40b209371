"""Writes replicate to every region; concurrent writes to one document
converge to the winner last-writer-wins predicts (issue 4, tests 1 and 2).

Each test runs with the embedded store and with nginx WebDAV backends.
"""

import json
import uuid

import pytest

import replication_cluster as rc

WAN_DELAY_MS = rc.WAN_DELAY_MS
concurrently = rc.concurrently


def fresh(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def version_of(resp):
    v = resp.header("x-meridian-version")
    assert v and ":" in v, f"write answer without X-Meridian-Version: {resp}"
    return v


def assert_everywhere(cluster, doc_id, expect_doc, expect_version, timeout=10.0):
    status, doc, resps = cluster.wait_same(doc_id, timeout=timeout)

    def why():  # only evaluated when an assertion fails
        return f"expected {expect_version} {expect_doc}\n{cluster.explain(doc_id)}"
    assert status == 200, f"{doc_id}: {status} everywhere; {why()}"
    assert doc == expect_doc, why()
    for name, resp in resps.items():
        assert resp.header("x-meridian-version") == expect_version, (name, why())
        assert resp.header("x-meridian-crts"), (name, resp)
    return resps


# ------------------------------------------------------------------ test 1

def test_write_in_each_region_is_readable_everywhere(make_cluster, backend):
    cluster = make_cluster(backend)
    written = {}  # id -> (origin region, user doc, version)

    # A PUT and a POST in each region.
    for r in cluster.regions:
        doc_id = fresh(f"put-{r.name}")
        doc = {"id": doc_id, "tenantId": f"t-{r.name}", "version": 1,
               "origin": r.name, "items": [{"sku": "a", "qty": 2}], "note": "é ✓"}
        resp = r.put(doc_id, doc)
        assert resp.status in (200, 201), resp
        written[doc_id] = (r, doc, version_of(resp))

        doc_id = fresh(f"post-{r.name}")
        doc = {"id": doc_id, "tenantId": f"t-{r.name}", "version": 1, "via": "POST"}
        resp = r.request("POST", rc.ROUTE, body=doc)
        assert resp.status in (200, 201), resp
        written[doc_id] = (r, doc, version_of(resp))

    for doc_id, (origin, doc, version) in written.items():
        assert version.split(":")[0] == str(origin.id), (doc_id, version)
        resps = assert_everywhere(cluster, doc_id, doc, version)
        meta = resps["east"].json()["_meridian"]
        assert meta["region"] == origin.name and meta["regionId"] == origin.id, meta
        assert isinstance(resps["east"].json().get("_ts"), int)
        # every region holds the same bytes of metadata, not only the same user fields
        bodies = {json.dumps(resp.json(), sort_keys=True) for resp in resps.values()}
        assert len(bodies) == 1, bodies

    # Updates made one after the other from other regions (no conflict):
    # a PATCH (merge patch applied by Meridian) and a replacing PUT.
    ids = list(written)
    for i, doc_id in enumerate(ids):
        origin, doc, version = written[doc_id]
        updater = cluster.regions[(origin.id) % 3]  # a region other than the origin
        if i % 2 == 0:
            resp = updater.request("PATCH", rc.ROUTE + doc_id,
                                   body={"patched_by": updater.name, "version": 2},
                                   headers={"Content-Type": "application/merge-patch+json"})
            doc = dict(doc, patched_by=updater.name, version=2)
        else:
            doc = dict(doc, replaced_by=updater.name, version=2)
            resp = updater.put(doc_id, doc)
        assert resp.status in (200, 201, 204), resp
        written[doc_id] = (updater, doc, version_of(resp))
    for doc_id, (origin, doc, version) in written.items():
        assert_everywhere(cluster, doc_id, doc, version)

    # A delete replicates as a tombstone: 404 in every region.
    victim = ids[0]
    resp = cluster["south"].delete(victim)
    assert resp.status in (200, 204), resp
    status, _, _ = cluster.wait_same(victim)
    assert status == 404


WRITERS_PER_REGION = 8
WRITES_PER_WRITER = 40


def test_concurrent_writes_in_each_region_all_replicate(make_cluster, backend):
    """Many clients writing distinct documents at once in every region: the
    backend answers them in any order, and every acknowledged write must
    still be confirmed once and reach every region."""
    cluster = make_cluster(backend)
    tag = uuid.uuid4().hex[:8]

    def writer(region, t):
        acked = []
        for n in range(WRITES_PER_WRITER):
            doc_id = f"conc-{tag}-{region.name}-{t}-{n}"
            body = {"id": doc_id, "tenantId": f"t{t}", "version": 1, "n": n,
                    "pad": "p" * (n * 53 % 1500)}
            resp = region.put(doc_id, body)
            assert resp.status in (200, 201), resp
            acked.append((doc_id, body, version_of(resp)))
        return acked

    results = concurrently([lambda r=r, t=t: writer(r, t)
                            for r in cluster.regions for t in range(WRITERS_PER_REGION)])
    acked = [a for chunk in results for a in chunk]
    cluster.wait_quiet()

    feeds = {r.name: r.all_changes()[0] for r in cluster.regions}
    problems = []
    for r in cluster.regions:
        listed = {c["version"] for c in feeds[r.name]}
        missing = [(doc_id, v) for doc_id, _, v in acked if v not in listed]
        if missing:
            problems.append(f"{r.name}: {len(missing)} of {len(acked)} acknowledged writes "
                            f"missing from the change feed, e.g. {missing[:5]}")
    for doc_id, body, version in acked:
        seen = {}
        for r in cluster.regions:
            resp = r.get(doc_id)
            seen[r.name] = (resp.status, resp.header("x-meridian-version"),
                            resp.header("x-meridian-confirmed"))
            if resp.status != 200 or rc.user_fields(resp.json()) != body:
                problems.append(f"{doc_id} (acknowledged {version}): {seen}")
                break
        else:
            if {v for _, v, _ in seen.values()} != {version}:
                problems.append(f"{doc_id} (acknowledged {version}): {seen}")
        if len(problems) > 12:
            break
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------ test 2

def conflict_round(cluster, prefix, make_bodies):
    """PUTs make_bodies(doc_id)[region name] in every region at the same
    moment, on a fresh id, until the writes truly meet at the hub as two
    conflicts; returns (doc_id, bodies, {region name: write answer})."""
    names = [r.name for r in cluster.regions]
    made = {}

    def make_calls(n):
        doc_id = fresh(f"{prefix}{n}")
        made[doc_id] = bodies = make_bodies(doc_id)
        return doc_id, [lambda r=cluster[m], b=bodies[m]: r.put(doc_id, b) for m in names]
    doc_id, resps = rc.concurrent_round(cluster, make_calls, min_conflicts=2)
    answers = dict(zip(names, resps))
    for n, resp in answers.items():
        assert resp.status in (200, 201), (n, resp)
    return doc_id, made[doc_id], answers


@pytest.mark.parametrize("winner", ["east", "west", "south"])
def test_concurrent_writes_converge_to_highest_version(make_cluster, backend, winner):
    cluster = make_cluster(backend, delay_ms=WAN_DELAY_MS)
    others = [n for n in rc.REGION_NAMES if n != winner]
    versions = {winner: 30, others[0]: 20, others[1]: 10}
    doc_id, bodies, answers = conflict_round(cluster, f"lww-{winner}", lambda doc_id: {
        n: {"id": doc_id, "tenantId": "t1", "version": versions[n], "by": n}
        for n in rc.REGION_NAMES})

    assert_everywhere(cluster, doc_id, bodies[winner], version_of(answers[winner]))
    # Every region also agrees on the final metadata (whole document).
    _, _, resps = cluster.wait_same(doc_id)
    assert len({json.dumps(r.json(), sort_keys=True) for r in resps.values()}) == 1


@pytest.mark.parametrize("shapes", [
    {"east": 5, "west": None, "south": 7},       # one side lacks /version
    {"east": None, "west": 9, "south": "high"},  # missing and non-numeric
], ids=["missing", "missing-and-string"])
def test_missing_version_falls_back_to_hlc_and_regions_agree(make_cluster, backend, shapes):
    cluster = make_cluster(backend, delay_ms=WAN_DELAY_MS)

    def make_bodies(doc_id):
        bodies = {}
        for n, v in shapes.items():
            bodies[n] = {"id": doc_id, "tenantId": "t1", "by": n}
            if v is not None:
                bodies[n]["version"] = v
        return bodies
    doc_id, bodies, answers = conflict_round(cluster, "hlc", make_bodies)
    status, doc, resps = cluster.wait_same(doc_id)
    assert status == 200
    # some region's write won; which one the HLC picks is not predicted
    winner = doc["by"]

    def why():  # only evaluated when an assertion fails
        return (f"answers {[(n, version_of(a)) for n, a in answers.items()]}\n"
                f"{cluster.explain(doc_id)}")
    assert doc == bodies[winner], why()
    for name, resp in resps.items():
        assert resp.header("x-meridian-version") == version_of(answers[winner]), (name, why())


@pytest.mark.parametrize("deleter", ["west", "east"])
def test_delete_wins_over_concurrent_update(make_cluster, backend, deleter):
    cluster = make_cluster(backend)
    cluster.set_delay(WAN_DELAY_MS)

    def make_calls(n):
        doc_id = fresh(f"del-{deleter}{n}")
        base = {"id": doc_id, "tenantId": "t1", "version": 1, "by": "seed"}
        cluster.set_delay(0)
        resp = cluster["south"].put(doc_id, base)
        assert resp.status in (200, 201), resp
        assert_everywhere(cluster, doc_id, base, version_of(resp))
        cluster.set_delay(WAN_DELAY_MS)
        calls = []
        for r in cluster.regions:
            if r.name == deleter:
                calls.append(lambda r=r: r.delete(doc_id))
            else:
                # updates with a much higher /version: the delete still wins
                calls.append(lambda r=r: r.put(doc_id, dict(base, version=1000, by=r.name)))
        return doc_id, calls
    doc_id, answers = rc.concurrent_round(cluster, make_calls, min_conflicts=2)
    for r, resp in zip(cluster.regions, answers):
        assert resp.status in (200, 201, 204), (r.name, resp)

    status, _, _ = cluster.wait_same(doc_id)
    assert status == 404, cluster.explain(doc_id)
    # The tombstone is the last word in every region's change feed.
    for r in cluster.regions:
        mine = [c for c in r.all_changes()[0] if c["id"] == doc_id]
        assert mine and mine[-1]["op"] == "delete" and mine[-1].get("tombstone") is True, \
            (r.name, mine)
