"""kill -9 of the hub and of a satellite at random moments during a write
load from every region, then restart on the same data dirs: nothing
acknowledged is lost and the three regions end identical (issue 4, test 4).

The seed of the random schedule is printed in a failing test's output; set
MERIDIAN_CRASH_SEED to replay one.
"""

import http.client
import itertools
import os
import random
import threading
import time
from collections import defaultdict

import replication_cluster as rc


THREADS_PER_REGION = 3
SHARED_IDS = 6
WRITE_TIMEOUT = 5.0


class Attempt:
    __slots__ = ("seq", "doc_id", "region", "body", "outcome", "status", "version", "error")

    def __init__(self, seq, doc_id, region, body):
        self.seq, self.doc_id, self.region, self.body = seq, doc_id, region, body
        self.outcome = None     # "ack" (2xx), "unknown" (no answer / not 2xx)
        self.status = self.version = self.error = None

    def __repr__(self):
        return (f"<{self.outcome} #{self.seq} {self.region} {self.doc_id} "
                f"status={self.status} version={self.version} error={self.error}>")


class WriteLoad:
    """THREADS_PER_REGION writers per region. Each writes its own ids
    (creating new ones or updating one of its earlier ones) and, one time in
    four, one of SHARED_IDS ids every writer updates. Every attempt is
    recorded with its outcome; /version is a global write sequence number."""

    def __init__(self, cluster, tag, rng):
        self.cluster = cluster
        self.tag = tag
        self.stop = threading.Event()
        self.seq = itertools.count(1)
        self.lock = threading.Lock()
        self.attempts = []
        self.shared = [f"shared-{tag}-{i}" for i in range(SHARED_IDS)]
        self.threads = []
        for r in cluster.regions:
            for t in range(THREADS_PER_REGION):
                wrng = random.Random(rng.random())
                th = threading.Thread(target=self._writer, args=(r, t, wrng), daemon=True,
                                      name=f"writer-{r.name}-{t}")
                self.threads.append(th)

    def start(self):
        for th in self.threads:
            th.start()

    def finish(self):
        self.stop.set()
        for th in self.threads:
            th.join(WRITE_TIMEOUT + 5)
        assert not any(th.is_alive() for th in self.threads), "a writer is stuck"

    def _writer(self, region, t, rng):
        mine = []
        while not self.stop.is_set():
            if rng.random() < 0.25:
                doc_id = rng.choice(self.shared)
            elif mine and rng.random() < 0.3:
                doc_id = rng.choice(mine)
            else:
                doc_id = f"{region.name}-{t}-{self.tag}-{len(mine)}"
                mine.append(doc_id)
            seq = next(self.seq)
            body = {"id": doc_id, "tenantId": f"t{seq % 4}", "version": seq,
                    "writer": f"{region.name}-{t}", "pad": "x" * rng.randrange(0, 300)}
            a = Attempt(seq, doc_id, region.name, body)
            try:
                resp = region.put(doc_id, body, timeout=WRITE_TIMEOUT)
                a.status = resp.status
                a.version = resp.header("x-meridian-version")
                a.outcome = "ack" if 200 <= resp.status < 300 else "unknown"
            except (OSError, http.client.HTTPException) as e:
                a.outcome, a.error = "unknown", repr(e)
            with self.lock:
                self.attempts.append(a)
            if a.outcome != "ack":
                self.stop.wait(0.03)  # the node is down: do not spin
            else:
                self.stop.wait(rng.uniform(0.005, 0.03))


def crash_schedule(cluster, rng, log):
    """Kills (SIGKILL to the meridian process) and restarts: the hub alone, a
    satellite alone, then a satellite and the hub down at the same time."""
    def pause(lo, hi):
        time.sleep(rng.uniform(lo, hi))

    def kill(r):
        log.append(f"{time.monotonic():.3f} kill -9 {r.name} (pid {r.proc.pid})")
        r.kill9()

    def restart(r):
        r.start()
        log.append(f"{time.monotonic():.3f} restarted {r.name}")

    sats = cluster.satellites
    pause(0.4, 1.0)
    kill(cluster.hub)
    pause(0.1, 0.7)
    restart(cluster.hub)
    pause(0.3, 1.0)
    sat = rng.choice(sats)
    kill(sat)
    pause(0.1, 0.7)
    restart(sat)
    pause(0.3, 1.0)
    sat = rng.choice(sats)
    kill(sat)
    pause(0.0, 0.4)
    kill(cluster.hub)
    pause(0.1, 0.6)
    for r in rng.sample([sat, cluster.hub], 2):
        restart(r)
    pause(0.5, 1.0)


def explain(cluster, dumps, feeds, attempts_by_id, doc_ids):
    """For a failure message: each id's document and feed entries in every
    region, the hub's decisions on it (confirmed-log stream, superseded
    entries included), and the test's attempts."""
    decisions = cluster.hub.confirmed_log(idle=0.5, limit_s=5)
    lines = []
    for doc_id in list(doc_ids)[:5]:
        lines.append(f"--- {doc_id}")
        for name in rc.REGION_NAMES:
            d = dumps[name][doc_id]
            listed = [(c["version"], c["op"], c["crts"]) for c in feeds[name] if c["id"] == doc_id]
            lines.append(f"  {name}: doc {d and d.get('_meridian')} v={d and d.get('version')}; "
                         f"feed {listed}")
        for e in decisions:
            w = e.get("write") or {}
            if w.get("id") == doc_id:
                lines.append(f"  hub decided crts {e['crts']}: {w['origin']}:{w['lsn']} "
                             f"base={w['base']} value={w.get('value')} delete={w['delete']} "
                             f"-> {e['outcome']} conflict={e.get('conflict')} "
                             f"head={(e.get('head') or {}).get('version')}")
        for a in attempts_by_id.get(doc_id, []):
            lines.append(f"  attempt {a} body.version={a.body['version']}")
    for r in cluster.regions:
        lines.append(f"status {r.name}: {cluster._status_or_err(r)}")
    return "\n".join(lines)


def test_kill9_hub_and_satellite_under_write_load(make_cluster, backend):
    seed = int(os.environ.get("MERIDIAN_CRASH_SEED") or random.randrange(1 << 30))
    print(f"MERIDIAN_CRASH_SEED={seed}")
    rng = random.Random(seed)
    cluster = make_cluster(backend)
    load = WriteLoad(cluster, tag=f"{seed:x}", rng=rng)
    events = []
    load.start()
    try:
        crash_schedule(cluster, rng, events)
    finally:
        load.finish()
    print("\n".join(events))
    attempts = load.attempts
    acks = [a for a in attempts if a.outcome == "ack"]
    unknown = [a for a in attempts if a.outcome == "unknown"]
    print(f"{len(attempts)} writes: {len(acks)} acknowledged, {len(unknown)} without answer")
    for a in unknown:
        if a.status is not None:
            print(f"  not 2xx: {a}")
    assert len(acks) > 100, "the load barely ran"
    for name in rc.REGION_NAMES:
        assert any(a.region == name for a in acks), f"no write acknowledged in {name}"

    # Versions name one write each: a restart must not hand out an LSN again.
    by_version = defaultdict(list)
    for a in acks:
        assert a.version, a
        by_version[a.version].append(a)
    reused = {v: l for v, l in by_version.items() if len(l) > 1}
    assert not reused, f"X-Meridian-Version acknowledged twice: {reused}"

    t0 = time.monotonic()
    cluster.wait_quiet(timeout=60)
    print(f"converged {time.monotonic() - t0:.2f} s after the load stopped")

    per_id = defaultdict(list)
    for a in sorted(attempts, key=lambda a: a.seq):
        per_id[a.doc_id].append(a)
    dumps = {r.name: cluster.dump(r, per_id) for r in cluster.regions}
    feeds = {r.name: r.all_changes()[0] for r in cluster.regions}

    problems = []
    for doc_id, tries in per_id.items():
        final = dumps["east"][doc_id]
        got = rc.user_fields(final) if final else None
        got_version = (f"{final['_meridian']['regionId']}:{final['_meridian']['lsn']}"
                       if final else None)
        if doc_id in load.shared:
            # Any acknowledged write may have lost a conflict; the survivor
            # must be a write of this id that was made, and never nothing.
            # A write whose answer was lost (node killed) may have been
            # committed and may win: allowed.
            candidates = [a for a in tries if a.outcome in ("ack", "unknown")]
            if any(a.outcome == "ack" for a in tries) and got is None:
                problems.append(f"{doc_id}: acknowledged writes {tries} but 404")
        else:
            # One writer, one write at a time: the last acknowledged write,
            # or one made after it whose answer was lost.
            last_ack = max((i for i, a in enumerate(tries) if a.outcome == "ack"), default=-1)
            candidates = tries[last_ack:] if last_ack >= 0 else tries
            if last_ack < 0:
                candidates = [None] + candidates
            elif got is None:
                problems.append(f"{doc_id}: acknowledged {tries[last_ack]} but 404 "
                                f"(all attempts: {tries})")
                continue
        match = [a for a in candidates
                 if (a is None and got is None) or (a is not None and a.body == got)]
        if not match:
            problems.append(f"{doc_id}: final {got} ({got_version}) is none of {candidates}")
            continue
        a = match[0]
        if a is not None and a.outcome == "ack" and a.version != got_version:
            problems.append(f"{doc_id}: body of {a} but version {got_version}")
    if problems:
        ids = [p.split(":")[0] for p in problems]
        raise AssertionError(f"{len(problems)} problems:\n" + "\n".join(problems[:40]) +
                             "\n" + explain(cluster, dumps, feeds, per_id, ids))

    # Every acknowledged write of a private id is a confirmed write: it is in
    # every region's change feed (exactly once).
    for name, feed in feeds.items():
        versions = [c["version"] for c in feed]
        assert len(versions) == len(set(versions)), f"{name}: duplicate versions in feed"
        crts = [c["crts"] for c in feed]
        assert crts == sorted(crts) and len(set(crts)) == len(crts), f"{name}: crts order"
        have = set(versions)
        lost = [a for a in acks if a.doc_id not in load.shared and a.version not in have]
        assert not lost, (f"{name}: acknowledged writes missing from the feed: {lost[:20]}\n" +
                          explain(cluster, dumps, feeds, per_id, [a.doc_id for a in lost]))

    # Full dump compare: the three regions hold the same documents, the same
    # metadata, and the same change feed.
    for name in ("west", "south"):
        diff = [i for i in per_id if dumps[name][i] != dumps["east"][i]]
        assert not diff, (f"{name} differs from east on {len(diff)} ids:\n" +
                          explain(cluster, dumps, feeds, per_id, diff))
        assert feeds[name] == feeds["east"], f"{name}'s change feed differs from east's"
