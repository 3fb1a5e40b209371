"""A region's store reuses the pages its writes free. LMDB can reuse a freed
page only once no read transaction still sees it, so a read transaction
left open between uses pins its snapshot and the data file grows with every
write for as long as it stays open. Until session 9 the journal's read
transaction on the loop stayed open from one journal read to the next: a
region taking writes that never read the journal (a path outside every
container) grew its file by a few pages per write, and LMDB's free list
with it, at 12k writes/s by 340 MB in 8 s in bench/replication.sh."""

import json

import replication_cluster as rc

h = rc.h

OVERWRITES = 1500


def data_file_bytes(region):
    return (region.data_dir / "data.mdb").stat().st_size


def test_writes_outside_the_journal_reuse_the_pages_they_free(make_cluster):
    cluster = make_cluster("embedded")
    west = cluster.satellites[0]
    # A replicated write reads the journal at west (its heads), so the
    # journal's read transaction exists from here on.
    resp = west.put("space-1", {"id": "space-1", "tenantId": "t", "version": 1})
    assert resp.status in (200, 201), resp
    cluster.wait_applied()
    pad = "x" * 1024

    def overwrite(n):
        for i in range(n):
            body = json.dumps({"id": "doc", "n": i, "pad": pad}).encode()
            resp = west.request("PUT", "/space/doc", body,
                                {"Content-Type": "application/json"})
            assert resp.status in (200, 201), resp

    overwrite(100)  # the store's trees at their working size
    before = data_file_bytes(west)
    overwrite(OVERWRITES)
    grown = data_file_bytes(west) - before
    # Each overwrite frees the pages its predecessor wrote (the document's
    # leaf, the trees' roots, the free list's own page): reused, the file
    # stays put; pinned, it grows by about 3 pages per write, 18 MB here.
    assert grown < 1 << 20, (
        f"west's data file grew by {grown} bytes over {OVERWRITES} overwrites of one "
        f"document: the pages they freed were not reused")
    # The replicated path still works after all that.
    resp = west.put("space-2", {"id": "space-2", "tenantId": "t", "version": 1})
    assert resp.status in (200, 201), resp
    cluster.wait_same("space-2")
