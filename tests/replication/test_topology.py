"""Topology changes at run time (issue 7): a region added under write load
bootstraps from the hub and catches up; the hub removed (alive, or killed
for good) hands over to the next region; a reordered list moves the hub;
changes a node cannot make while it runs are still refused.

Each test writes through Cluster.add_region / remove_region / reorder
(replication_cluster.py): every node gets the same new file, naming every
region at its real peer address, and reloads on SIGHUP.

What "no write lost, none decided twice" means here, for every test:
- every acknowledged (2xx) write of an id only one writer thread writes is
  the id's final value, unless a later write of that thread whose answer was
  lost replaced it; the region's X-Meridian-Version names that write;
- the change feed lists each version (origin region id, LSN) at most once,
  in strictly increasing crts, and lists every acknowledged write of such ids
  exactly once; it is the same list in every region;
- every region returns the same status, body and X-Meridian-Version for
  every id written (full dump compare).
"""

import http.client
import itertools
import random
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict

import replication_cluster as rc

h = rc.h

WRITE_TIMEOUT = 5.0


# ------------------------------------------------------------------ write load

class Attempt:
    __slots__ = ("seq", "doc_id", "region", "body", "phase", "status", "version", "error",
                 "retry_after", "exc")

    def __init__(self, seq, doc_id, region, body, phase):
        self.seq, self.doc_id, self.region, self.body, self.phase = seq, doc_id, region, body, phase
        self.status = self.version = self.error = self.retry_after = self.exc = None

    @property
    def outcome(self):
        """ack (2xx); refused (answered 4xx or 503: not made); unknown (no
        answer, or another 5xx: it may have been committed)."""
        if self.status is None:
            return "unknown"
        if 200 <= self.status < 300:
            return "ack"
        if self.status < 500 or self.status == 503:
            return "refused"
        return "unknown"

    def __repr__(self):
        return (f"<{self.outcome} #{self.seq} {self.region} {self.doc_id} phase={self.phase} "
                f"status={self.status} error={self.error} version={self.version} exc={self.exc}>")


class WriteLoad:
    """Writer threads doing PUT /orders/ID {"id": ID, "tenantId": "t", "version": n}
    (n: one global sequence). ids="shared": every thread picks among the
    same `shared_ids` ids; ids="private": each thread has its own ids, so
    the writes of one id are made one after the other by one thread. Every
    attempt is recorded with the phase the test was in."""

    def __init__(self, tag, ids="private", shared_ids=60, per_thread_ids=8):
        self.tag, self.ids = tag, ids
        self.shared = [f"topo-{tag}-{i}" for i in range(shared_ids)]
        self.per_thread_ids = per_thread_ids
        self.stop = threading.Event()
        self.seq = itertools.count(1)
        self.lock = threading.Lock()
        self.attempts = []
        self.threads = []
        self.phase = "before"

    def add(self, region, threads):
        """Starts `threads` more writers on region (the load may be running)."""
        for _ in range(threads):
            t = len([th for th in self.threads if th.name.startswith(f"w-{region.name}-")])
            th = threading.Thread(target=self._writer, args=(region, t), daemon=True,
                                  name=f"w-{region.name}-{t}")
            self.threads.append(th)
            th.start()

    def finish(self):
        self.stop.set()
        for th in self.threads:
            th.join(WRITE_TIMEOUT + 5)
        assert not any(th.is_alive() for th in self.threads), "a writer is stuck"

    def record(self, a):
        with self.lock:
            self.attempts.append(a)

    def write(self, region, doc_id):
        """One recorded write; returns the Attempt."""
        seq = next(self.seq)
        # "id" in the body: Meridian stores the id in the document anyway
        a = Attempt(seq, doc_id, region.name, {"id": doc_id, "tenantId": "t", "version": seq},
                    self.phase)
        try:
            resp = region.put(doc_id, a.body, timeout=WRITE_TIMEOUT)
            a.status = resp.status
            a.version = resp.header("x-meridian-version")
            a.retry_after = resp.header("retry-after")
            if resp.status >= 300:
                try:
                    a.error = resp.json().get("error")
                except (AssertionError, AttributeError):
                    a.error = resp.body[:100]
        except (OSError, http.client.HTTPException) as e:
            a.exc = repr(e)
        self.record(a)
        return a

    def _writer(self, region, t):
        rng = random.Random(f"{self.tag}-{region.name}-{t}")
        mine = [f"{region.name}-{t}-{self.tag}-{k}" for k in range(self.per_thread_ids)]
        while not self.stop.is_set():
            doc_id = rng.choice(self.shared if self.ids == "shared" else mine)
            a = self.write(region, doc_id)
            self.stop.wait(0.05 if a.outcome != "ack" else rng.uniform(0.003, 0.02))

    # -- views

    def acks(self):
        return [a for a in self.attempts if a.outcome == "ack"]

    def by_id(self):
        out = defaultdict(list)
        for a in sorted(self.attempts, key=lambda a: a.seq):
            out[a.doc_id].append(a)
        return out

    def summary(self):
        c = Counter((a.region, a.phase, a.outcome) for a in self.attempts)
        return ", ".join(f"{r}/{p}/{o}={n}" for (r, p, o), n in sorted(c.items()))


def run_for(seconds, load, phase):
    load.phase = phase
    time.sleep(seconds)


# ------------------------------------------------------------------ checks

def read_everything(regions, ids):
    """{region: {id: (status, user fields or None, X-Meridian-Version)}}."""
    out = {}
    for r in regions:
        got = {}
        for doc_id in sorted(ids):
            resp = r.get(doc_id)
            assert resp.status in (200, 404), f"{r.name} GET {doc_id}: {resp}"
            got[doc_id] = (resp.status, rc.user_fields(resp.json()) if resp.status == 200 else None,
                           resp.header("x-meridian-version"))
        out[r.name] = got
    return out


def feed_key(c):
    return (c["crts"], c["regionId"], c["lsn"], c["op"], c["id"])


def check_feed(name, feed):
    """Strictly increasing crts; no version (origin, lsn) listed twice."""
    crts = [c["crts"] for c in feed]
    back = [(a, b) for a, b in zip(crts, crts[1:]) if not a < b]
    assert not back, f"{name}: crts not strictly increasing at {back[:5]}"
    twice = [v for v, n in Counter((c["regionId"], c["lsn"]) for c in feed).items() if n > 1]
    assert not twice, (f"{name}: versions confirmed more than once: {twice[:10]}; entries: "
                       f"{[feed_key(c) for c in feed if (c['regionId'], c['lsn']) in twice[:3]]}")


def check_same_everywhere(cluster, dumps):
    ref = cluster.hub.name
    for name, dump in dumps.items():
        diff = [i for i in dump if dump[i] != dumps[ref][i]]
        assert not diff, (f"{name} differs from the hub {ref} on {len(diff)} ids:\n" +
                          "\n".join(f"  {i}: {name}={dump[i]} {ref}={dumps[ref][i]}"
                                    for i in diff[:10]) +
                          f"\n{cluster.explain(diff[0])}\nstatus: {cluster.statuses()}")


def check_private_ids(cluster, load, dumps):
    """Each id has one writer: its final value is the last acknowledged
    write, or a later write whose answer was lost; X-Meridian-Version names
    that write when it was acknowledged."""
    ref = dumps[cluster.hub.name]
    problems = []
    for doc_id, tries in load.by_id().items():
        status, got, version = ref[doc_id]
        last_ack = max((i for i, a in enumerate(tries) if a.outcome == "ack"), default=None)
        if last_ack is None:
            continue
        if status != 200:
            problems.append(f"{doc_id}: acknowledged {tries[last_ack]} but {status}")
            continue
        cands = [tries[last_ack]] + [a for a in tries[last_ack + 1:] if a.outcome == "unknown"]
        match = [a for a in cands if a.body == got]
        if not match:
            problems.append(f"{doc_id}: final {got} ({version}) is none of {cands}")
        elif match[0].outcome == "ack" and match[0].version != version:
            problems.append(f"{doc_id}: body of {match[0]} but X-Meridian-Version {version}")
    assert not problems, (f"{len(problems)} acknowledged writes lost or replaced:\n" +
                          "\n".join(problems[:20]) + "\n" +
                          cluster.explain(problems[0].split(":")[0]) +
                          f"\nload: {load.summary()}\nstatus: {cluster.statuses()}")


def check_acks_in_feed(name, feed, acks):
    """Every acknowledged write (of ids with one writer) listed exactly once."""
    listed = Counter(c["version"] for c in feed)
    missing = [a for a in acks if listed[a.version] == 0]
    twice = [a for a in acks if listed[a.version] > 1]
    assert not missing, (f"{name}: {len(missing)} acknowledged writes are not in the change "
                         f"feed: {missing[:10]}")
    assert not twice, f"{name}: acknowledged writes listed twice: {twice[:10]}"


def state_of(region):
    """The "state" of region's peer status; None if it cannot be asked."""
    try:
        return region.peer_status().get("state")
    except (OSError, AssertionError, http.client.HTTPException):
        return None


# ------------------------------------------------------------------ the tests

def test_a_fourth_region_added_under_write_load_catches_up(make_cluster, backend):
    """Three regions under a write load on 60 shared ids; region north (id 4)
    is added after ~1 s. While it joins its progress is visible (peer status
    "joining" with a join target, or, if it caught up before the first look,
    the join-target metric and a "joined" log line; the log names the
    snapshot), a write to it is 503 "joining" with Retry-After, and it is
    not ready; once serving it accepts writes. After the load stops, the
    four regions hold the same documents (status, body, version) and north's
    change feed is the hub's."""
    cluster = make_cluster(backend)
    for r in cluster.regions:
        st = r.peer_status()
        assert st.get("state") == "serving", f"a fresh cluster's {r.name} is not serving: {st}"
    tag = uuid.uuid4().hex[:8]
    load = WriteLoad(tag, ids="shared", shared_ids=60)
    samples = []          # (t, peer status of north)
    probes = []           # (state before, Attempt, state after)
    readies = []          # (state before, ready response, state after)
    try:
        for r in cluster.regions:
            load.add(r, 2)
        run_for(1.0, load, "before")

        load.phase = "joining"
        north = cluster.add_region("north", 4)
        stop_watch = threading.Event()

        def watch():
            while not stop_watch.is_set():
                try:
                    samples.append((time.monotonic(), north.peer_status()))
                except (OSError, AssertionError, http.client.HTTPException):
                    pass
                stop_watch.wait(0.02)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            deadline = time.monotonic() + 30
            n = 0
            while True:
                before = state_of(north)
                a = load.write(north, f"probe-{tag}-{n}")
                after = state_of(north)
                probes.append((before, a, after))
                n += 1
                if before == "joining":
                    ready = h.request(north.port, "GET", "/_meridian/ready", timeout=5)
                    readies.append((before, ready, state_of(north)))
                if before == "serving":
                    break
                assert time.monotonic() < deadline, (
                    f"north did not become serving within 30 s; last status "
                    f"{samples[-1:]}; all: {cluster.statuses()}")
                time.sleep(0.05)
        finally:
            stop_watch.set()
            watcher.join(5)

        load.add(north, 2)
        run_for(2.0, load, "after")
    finally:
        load.finish()
    print(f"load: {load.summary()}")

    # Progress was visible while north joined.
    joining = [st for _, st in samples if st.get("state") == "joining"]
    print(f"north: {len(joining)} joining samples of {len(samples)}; join targets "
          f"{sorted({st.get('join_target') for st in joining})}; probes "
          f"{[(b, a.status, a.error, x) for b, a, x in probes]}")
    log = north.log()
    m = north.metrics()
    if not any(st.get("join_target", 0) > 0 for st in joining):
        assert h.metric_present(m, "meridian_join_target_crts") and "joined" in log, (
            f"north never showed a join in progress (samples {[s for _, s in samples[:5]]}), "
            f"and neither the meridian_join_target_crts metric nor a 'joined' log line exists")
    assert any("snapshot" in ln for ln in log.splitlines()), \
        "north's log does not mention the snapshot it bootstrapped from"
    applied = [st["applied_crts"] for _, st in samples]
    assert applied == sorted(applied), f"north's applied_crts went backwards: {applied}"
    first_serving = next((st for _, st in samples if st.get("state") == "serving"), None)
    assert first_serving is not None, f"north never reported serving: {samples[-3:]}"
    target = max((st.get("join_target", 0) for st in joining), default=0)
    assert first_serving["applied_crts"] >= target, (
        f"north served before it caught up: join target {target}, {first_serving}")
    states = {st.get("state") for _, st in samples}
    assert states <= {"joining", "serving"}, f"north went through {states}"
    assert first_serving.get("hub") is False and first_serving.get("hub_name") == "east", \
        first_serving

    # A write while joining is refused with 503 "joining"; once serving, made.
    for before, a, after in probes:
        if before == after == "joining":
            assert a.status == 503 and a.error == "joining" and a.retry_after == "1", (
                f"a write to north while it joined: {a} retry_after={a.retry_after}")
        elif before == "serving":
            assert a.outcome == "ack", f"a write to north once serving: {a}"
        elif before == "joining":  # held while north finished joining: either answer
            assert a.outcome == "ack" or (a.status == 503 and a.error == "joining"), \
                f"a write to north as it finished joining: {a}"
    for before, ready, after in readies:
        if before == after == "joining":
            assert ready.status == 503 and b"join" in ready.body.lower(), \
                f"north's /_meridian/ready while joining: {ready}"
    assert any(a.region == "north" and a.outcome == "ack" and a.phase == "after"
               for a in load.attempts), f"no write acknowledged by north: {load.summary()}"
    acks = load.acks()
    assert len(acks) > 100, f"the load barely ran: {load.summary()}"

    cluster.wait_quiet(timeout=40)
    assert cluster.names() == ["east", "west", "south", "north"]
    ready = h.request(north.port, "GET", "/_meridian/ready", timeout=5)
    assert ready.status == 200, f"north not ready once it caught up: {ready}"
    m = north.metrics()
    assert h.metric_sum(m, "meridian_region_state", region="north", state="serving") == 1, \
        [s for s in m if s[0] == "meridian_region_state"]
    assert h.metric_sum(m, "meridian_region_state", region="north", state="joining") == 0

    # Full dump compare: every id written, in every region.
    by_id = load.by_id()
    dumps = read_everything(cluster.regions, by_id)
    check_same_everywhere(cluster, dumps)
    problems = []
    for doc_id, tries in by_id.items():
        status, got, version = dumps["east"][doc_id]
        made = [a for a in tries if a.outcome in ("ack", "unknown")]
        if any(a.outcome == "ack" for a in tries) and status != 200:
            problems.append(f"{doc_id}: acknowledged writes but {status}")
        elif status == 200 and not any(a.body == got for a in made):
            problems.append(f"{doc_id}: final {got} ({version}) is no write that was made")
    assert not problems, "\n".join(problems[:20]) + "\n" + cluster.explain(
        problems[0].split(":")[0])

    # north's change feed (its beginning served from the hub) is the hub's.
    feeds = {r.name: r.all_changes()[0] for r in cluster.regions}
    for name, feed in feeds.items():
        check_feed(name, feed)
    hub_feed = [feed_key(c) for c in feeds["east"]]
    assert hub_feed, "the hub's change feed is empty"
    for name in ("west", "south", "north"):
        mine = [feed_key(c) for c in feeds[name]]
        if mine != hub_feed:
            first = next((i for i, (x, y) in enumerate(zip(mine, hub_feed)) if x != y),
                         min(len(mine), len(hub_feed)))
            raise AssertionError(f"{name}'s change feed differs from the hub's from entry "
                                 f"{first}: {name} {mine[first:first + 3]} hub "
                                 f"{hub_feed[first:first + 3]} (lengths {len(mine)} / "
                                 f"{len(hub_feed)})")
    acked = {a.version for a in acks}
    assert acked & {c["version"] for c in feeds["north"]}, "no acknowledged write in north's feed"


def start_load(cluster, names, writers=2):
    """A load of private-id writers on the named regions, run ~1 s (phase
    "before"); the caller finishes it."""
    load = WriteLoad(uuid.uuid4().hex[:8], ids="private")
    for name in names:
        load.add(cluster[name], writers)
    run_for(1.0, load, "before")
    return load


def every_write_acknowledged(load, regions, phases):
    """Each region acknowledged writes in each phase, and no write failed."""
    print(f"load: {load.summary()}")
    for r in regions:
        for phase in phases:
            assert any(a.region == r and a.phase == phase and a.outcome == "ack"
                       for a in load.attempts), f"no write acknowledged in {r} {phase}: " \
                                                f"{load.summary()}"
    refused = [a for a in load.attempts if a.outcome != "ack"]
    assert not refused, f"writes failed while the hub moved: {refused[:10]}"


def handover_checks(cluster, load, new_hub, old_hub, old_alive):
    """The common end of the hub-change tests: the new hub serves, the
    others follow it, the old hub is retired (if it runs), and no write was
    lost or decided twice."""
    st = cluster.wait_state(new_hub, "serving", hub=True, timeout=30)
    assert st.get("hub_name") == new_hub.name, st
    cluster.wait_quiet(timeout=40)
    for r in cluster.satellites:
        st = cluster.wait_state(r, "serving", hub=False, hub_name=new_hub.name, timeout=10)
    if old_alive:
        st = old_hub.peer_status()
        if old_hub in cluster.removed:
            assert st.get("state") == "retired" and st.get("hub") is False, \
                f"the removed hub: {st}; all: {cluster.statuses()}"
            try:
                w = old_hub.put(f"late-{load.tag}", {"tenantId": "t", "version": 0})
            except (OSError, http.client.HTTPException) as e:
                time.sleep(0.2)
                raise AssertionError(f"a write to the removed region got no answer ({e!r}); "
                                     f"{old_hub.name} alive: {old_hub.alive()} (exit code "
                                     f"{old_hub.proc.poll()})") from None
            assert w.status == 503 and w.json().get("error") == "region_removed", \
                f"a write to the removed region: {w}"
            assert h.metric_sum(old_hub.metrics(), "meridian_region_state",
                                region=old_hub.name, state="retired") == 1
        else:
            assert st.get("hub") is False and st.get("state") == "serving", \
                f"the old hub: {st}; all: {cluster.statuses()}"
    for r in cluster.regions:
        changes = h.metric_sum(r.metrics(), "meridian_hub_changes_total")
        assert changes >= 1, f"{r.name}: meridian_hub_changes_total is {changes}"

    acks = load.acks()
    assert len(acks) > 50, f"the load barely ran: {load.summary()}"
    assert all(a.version for a in acks), [a for a in acks if not a.version][:5]
    reused = [v for v, n in Counter(a.version for a in acks).items() if n > 1]
    assert not reused, f"X-Meridian-Version acknowledged twice: {reused[:10]}"
    by_id = load.by_id()
    dumps = read_everything(cluster.regions, by_id)
    check_same_everywhere(cluster, dumps)
    check_private_ids(cluster, load, dumps)
    feeds = {r.name: r.all_changes()[0] for r in cluster.regions}
    for name, feed in feeds.items():
        check_feed(name, feed)
        check_acks_in_feed(name, feed, acks)
    ref = [feed_key(c) for c in feeds[new_hub.name]]
    for name, feed in feeds.items():
        assert [feed_key(c) for c in feed] == ref, \
            f"{name}'s change feed differs from the new hub's ({len(feed)} / {len(ref)} entries)"
    return feeds


def test_the_hub_removed_under_write_load_hands_over(make_cluster, backend):
    """Load on west and south (two writers each, ids of their own); after
    ~1 s east, the hub, is taken out of the file (it still runs and reloads
    too); the load goes on ~3 s. West becomes the hub and serves; south
    follows it; east is retired (503 "region_removed" to writes). Every
    acknowledged write is the final value of its id in west and south, the
    dumps are identical, and the change feed, the same in both, lists every
    acknowledged write exactly once in strictly increasing crts."""
    cluster = make_cluster(backend)
    east, west = cluster["east"], cluster["west"]
    load = start_load(cluster, ("west", "south"))
    try:
        load.phase = "handover"
        cluster.remove_region("east")
        assert cluster.hub is west and cluster.names() == ["west", "south"]
        run_for(3.0, load, "after")
    finally:
        load.finish()
    every_write_acknowledged(load, ("west", "south"), ("before", "after"))
    handover_checks(cluster, load, west, east, old_alive=True)


def test_the_hub_killed_for_good_then_removed_from_the_file(make_cluster):
    """Load on west and south; east (the hub) is killed with SIGKILL after
    ~1 s and never comes back. West and south keep accepting writes
    (tentatively) for ~2 s; then the operator removes east from the file
    (east is not signalled) and the load goes on ~2 s. West takes over from
    the most advanced log among the survivors; afterwards every acknowledged
    write is present in both, none is confirmed twice, dumps and feeds are
    identical."""
    cluster = make_cluster()
    east, west = cluster["east"], cluster["west"]
    load = start_load(cluster, ("west", "south"))
    try:
        east.kill9()
        run_for(2.0, load, "hub dead")
        load.phase = "handover"
        cluster.remove_region("east")
        assert cluster.hub is west and not east.alive()
        run_for(2.0, load, "after")
    finally:
        load.finish()
    every_write_acknowledged(load, ("west", "south"), ("before", "hub dead", "after"))
    handover_checks(cluster, load, west, east, old_alive=False)


def test_reordering_moves_the_hub_and_the_old_hub_follows(make_cluster, backend):
    """Under load in every region (two writers each, ids of their own; the
    old hub's writes in flight at the change must still be decided by it,
    the later ones by the new hub), the list becomes [west, east, south]: west becomes the hub, east a
    satellite that serves (hub false) and follows west, south follows west.
    A write at east afterwards is confirmed by west. Writes from all three
    converge; the feeds are identical, with no version twice."""
    cluster = make_cluster(backend)
    east, west = cluster["east"], cluster["west"]
    load = start_load(cluster, cluster.names())
    try:
        load.phase = "handover"
        cluster.reorder(["west", "east", "south"])
        assert cluster.hub is west and cluster.satellites[0] is east
        run_for(2.0, load, "after")
    finally:
        load.finish()
    every_write_acknowledged(load, ("east", "west", "south"), ("before", "after"))
    handover_checks(cluster, load, west, east, old_alive=True)

    body = {"id": f"after-{load.tag}", "tenantId": "t", "version": 1}
    w = east.put(body["id"], body, headers={"X-Meridian-Wait": "confirmed"})
    assert w.status in (200, 201), f"east's write once west is hub: {w}"
    status, doc, _ = cluster.wait_same(body["id"])
    assert status == 200 and doc == body, doc


def test_changes_a_node_cannot_make_while_running_are_still_refused(make_cluster):
    """Topology reloads are allowed, but not for a node's own addresses or a
    region's identity: west's own peer_listen changed, and south's id
    changed under the same name, are each refused (counted, logged) while
    the running configuration keeps serving; the valid file reloads again."""
    cluster = make_cluster()
    west = cluster["west"]
    good = west.config_text
    other_port = h.free_ports(1)[0]
    south_block = "  - name: south\n    id: 3\n"
    assert south_block in good, good
    bad = {
        "own peer_listen": (good.replace(f"peer_listen: 127.0.0.1:{west.peer_port}",
                                         f"peer_listen: 127.0.0.1:{other_port}"), "peer_listen"),
        "a region's id": (good.replace(south_block, "  - name: south\n    id: 7\n"), ".id"),
        "own data_dir": (good.replace(f"data_dir: {west.data_dir}",
                                      f"data_dir: {west.data_dir}-moved"), "data_dir"),
    }
    for what, (text, field) in bad.items():
        assert text != good, what
        mark = west.log_mark()
        ok_before = rc.config_reloads(west, "ok")
        refused_before = rc.config_reloads(west, "refused")
        rc.Cluster.write_config(west, text)
        west.proc.send_signal(signal.SIGHUP)
        # The file watcher may refuse the file first, on a tick between the
        # write and the signal: wait for the SIGHUP's refusal, which names the
        # field. After it, the watcher does not read this file again, so no
        # late refusal can land in the next step's counts.
        h.poll(lambda: any("reload refused (SIGHUP)" in ln and field in ln
                           for ln in west.log_lines_since(mark)),
               timeout=5, what=f"{what} refused on SIGHUP, naming {field!r} "
                               f"(log: {west.log().splitlines()[-3:]})")
        assert rc.config_reloads(west, "refused") > refused_before, what
        assert rc.config_reloads(west, "ok") == ok_before, f"{what}: counted as a good reload"
        w = west.put(f"after-{what.replace(' ', '-').replace(chr(39), '')}",
                     {"tenantId": "t", "version": 1})
        assert w.status in (200, 201), f"{what}: the running configuration stopped serving: {w}"
        st = west.peer_status()
        assert st["region"] == "west" and st["hub"] is False, st
    ok_before = rc.config_reloads(west, "ok")
    cluster.reload({west: good})
    assert rc.config_reloads(west, "ok") > ok_before



def test_a_joining_region_takes_no_writes_until_it_has_heard_the_hub(make_cluster):
    """North is added while its link to the hub is a blackholed WAN relay:
    it cannot learn the hub's log head, so it stays joining. A write waits
    account.session_wait_ms (1 s), then is 503 "joining" with Retry-After
    and a reason that says the hub has not been reached; /_meridian/ready is
    503. Once the link passes, north takes the snapshot, catches up, serves,
    and holds the documents written before it came."""
    cluster = make_cluster()
    east = cluster.hub
    for i in range(20):
        assert east.put(f"pre-{i}", {"tenantId": "t", "version": i}).status in (200, 201)
    north = cluster.add_region("north", 4, start=False)
    relay = rc.WanRelay("127.0.0.1", east.peer_port).start()
    cluster.relays["north"] = relay
    relay.blackhole()
    cluster.write_config(north, north.config_text.replace(
        f"peer_listen: 127.0.0.1:{east.peer_port}", f"peer_listen: 127.0.0.1:{relay.port}"))
    north.start()

    t0 = time.monotonic()
    w = north.put("early", {"tenantId": "t", "version": 1})
    waited = time.monotonic() - t0
    assert w.status == 503 and w.json().get("error") == "joining", w
    assert w.header("retry-after") == "1", w
    assert "has not been reached" in w.json().get("reason", ""), w
    assert waited >= 0.9, f"the write was refused after {waited:.2f} s, not held first"
    ready = h.request(north.port, "GET", "/_meridian/ready", timeout=5)
    assert ready.status == 503 and b"joining" in ready.body, ready
    st = north.peer_status()
    assert st["state"] == "joining" and st["applied_crts"] == 0, st

    relay.pass_through()
    st = cluster.wait_state(north, "serving", hub=False, hub_name="east", timeout=20)
    assert st["join_target"] >= 20 and st["applied_crts"] >= st["join_target"], st
    assert st["history_from"] > 0, f"north did not join by snapshot: {st}"
    assert "joined:" in north.log()
    w = north.put("late", {"tenantId": "t", "version": 1})
    assert w.status in (200, 201), w
    assert h.request(north.port, "GET", "/_meridian/ready", timeout=5).status == 200
    cluster.wait_quiet()
    dumps = read_everything(cluster.regions, [f"pre-{i}" for i in range(20)] + ["late"])
    check_same_everywhere(cluster, dumps)
    assert all(v[0] == 200 for v in dumps["north"].values()), dumps["north"]


def test_the_new_hub_killed_while_taking_over_finishes_after_a_restart(make_cluster):
    """Load on west and south; east is removed from the file and west, the
    new hub, is killed with SIGKILL at once, before its takeover can have
    finished, then started again: it does not know the old hub any more, so
    it continues from the most advanced log among the regions in the file.
    Writes acknowledged anywhere before and after are all there, none is
    confirmed twice, and west and south end identical."""
    cluster = make_cluster()
    east, west = cluster["east"], cluster["west"]
    load = start_load(cluster, ("west", "south"))
    try:
        load.phase = "handover"
        cluster.remove_region("east")
        west.kill9()
        assert "took over as hub" not in west.log(), "the takeover finished before the kill"
        run_for(0.5, load, "new hub down")
        west.start()
        run_for(2.0, load, "after")
    finally:
        load.finish()
    print(f"load: {load.summary()}")
    assert "previous hub is unknown after a restart" in west.log()
    for r in ("west", "south"):
        assert any(a.region == r and a.phase == "after" and a.outcome == "ack"
                   for a in load.attempts), f"no write acknowledged in {r}: {load.summary()}"
    handover_checks(cluster, load, west, east, old_alive=True)
