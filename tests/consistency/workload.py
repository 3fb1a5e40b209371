"""Workload runner for the history checker (issue 6): randomized concurrent
client sessions against a three-region cluster through the WAN relays,
every request recorded as a history.Op; partitions and delay changes while
it runs; at the end the cluster is healed, settles, and the hub's change
feed is fetched.

    wl = Workload(cluster, sessions=6, duration=25, schedule=[...])
    ops, feed = wl.run()
    violations = history.check(ops, feed)

Workload convention (what makes history.check exact): session sN owns the
keys "sN-k0".."sN-k{K-1}" and is their only writer; it writes
{"k": key, "v": "sN:SEQ", "owner": "sN"} with SEQ increasing per session;
every session reads every key. A session has a home region and moves at
random; a "hop" writes one of its keys and at once reads it in another
region (what session tokens are for). It always sends the latest token it
received. Observers (one per region, never moving) read at a relaxed level
and feed the per-region consistent-prefix rule.

Also the cluster the runner needs: ConsistencyCluster is replication_cluster's
Cluster with an environment for the meridian processes (the debug switch
MERIDIAN_DEBUG_IGNORE_SESSION_TOKENS=1) and an account section of its own
(consistency level, bounded-staleness bounds).

Command line (the long run, see long_run.sh): python3 workload.py --help
"""

import argparse
import http.client
import json
import os
import random
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "replication"))

import history as hs  # noqa: E402
import replication_cluster as rc  # noqa: E402

h = rc.h
DEBUG_IGNORE_TOKENS = "MERIDIAN_DEBUG_IGNORE_SESSION_TOKENS"


# ---------------------------------------------------------------- the cluster

class EnvRegion(rc.Region):
    """A Region whose meridian process gets extra environment variables."""

    extra_env = {}

    def spawn(self, argv, env=None):
        merged = dict(os.environ if env is None else env)
        merged.update(self.extra_env)
        super().spawn(argv, env=merged)


def render_account(account):
    lines = ["account:"]
    for k, v in account.items():
        val = h._yaml_flow(v) if isinstance(v, dict) else h._yaml_scalar(v)
        lines.append(f"  {k}: {val}")
    return "\n".join(lines)


class ConsistencyCluster(rc.Cluster):
    """replication_cluster.Cluster plus `env` (added to every meridian
    process's environment, e.g. {DEBUG_IGNORE_TOKENS: "1"}) and `account`
    (replaces the configuration's account section, e.g. {"multi_region_writes":
    True, "consistency": "bounded_staleness", "bounded_staleness":
    {"max_lag_versions": 10, "max_lag_seconds": 1}})."""

    def __init__(self, base, *, env=None, account=None, **kw):
        super().__init__(base, **kw)
        self.env = dict(env or {})
        self.account = account
        for r in self.regions:
            r.__class__ = EnvRegion
            r.extra_env = self.env

    def _config(self, hub_peer):
        text = super()._config(hub_peer)
        if not self.account:
            return text
        head, sep, rest = text.partition("\nregions:\n")
        assert sep and head.startswith("account:"), f"unexpected configuration layout:\n{text}"
        return render_account(self.account) + sep + rest

    @property
    def account_level(self):
        return (self.account or {}).get("consistency", "session")


def bounded_account(max_versions, max_seconds, **extra):
    return dict({"multi_region_writes": True, "consistency": "bounded_staleness",
                 "bounded_staleness": {"max_lag_versions": max_versions,
                                       "max_lag_seconds": max_seconds}}, **extra)


# ---------------------------------------------------------------- schedules

def partition(satellite, at, seconds):
    """Schedule events: cut `satellite` off from the hub at `at` for `seconds`."""
    return [(at, "blackhole", satellite), (at + seconds, "pass", satellite)]


def delay(at, ms, satellite=None):
    """Schedule event: one-way delay of one satellite's relay (all when None)."""
    return [(at, "delay", (satellite, ms))]


def random_schedule(rng, duration, satellites=("west", "south"), base_delay_ms=200,
                    gap=(5.0, 20.0), cut=(2.0, 12.0), delays=(50, 200, 400, 800)):
    """Partitions that come and go (one satellite at a time, now and then both)
    and delay changes, over `duration` seconds; everything healed at the end."""
    events, t = [], rng.uniform(*gap) / 2
    while t < duration - 1.0:
        length = min(rng.uniform(*cut), duration - t - 0.5)
        victims = list(satellites) if rng.random() < 0.15 else [rng.choice(satellites)]
        for s in victims:
            events += partition(s, t, length)
        if rng.random() < 0.5:
            s = rng.choice(satellites)
            at = t + rng.uniform(0, length)
            events += delay(at, rng.choice(delays), s)
            events += delay(min(at + rng.uniform(2, 10), duration - 0.2), base_delay_ms, s)
        t += length + rng.uniform(*gap)
    return sorted(events, key=lambda e: e[0])


# ---------------------------------------------------------------- the runner

class _Session:
    def __init__(self, name, home, keys, level, observer=False):
        self.name = name
        self.region = home
        self.keys = keys            # the keys this session writes
        self.level = level
        self.observer = observer
        self.token = None
        self.seq = 0
        self.ops = []


class Workload:
    """Runs S client sessions (threads) for `duration` seconds against a
    started ConsistencyCluster (or replication_cluster.Cluster) and records
    every request.

    level: the sessions' level (sent as X-Consistency-Level when it differs
    from the account's). observers: one extra reader per region, pinned,
    at observer_level. p_move: chance per step of moving to another region;
    p_hop: write an own key then read it at once in another region; p_write:
    a plain write of an own key; otherwise a read of any key. timeout: the
    client's per-request timeout (a timeout is recorded, not a violation).
    schedule: [(at_seconds, "blackhole"|"pass"|"reset", satellite) |
    (at_seconds, "delay", (satellite or None, ms))]."""

    def __init__(self, cluster, *, sessions=6, duration=25.0, level=None, keys_per_session=2,
                 observers=True, observer_level="consistent_prefix", seed=None, timeout=6.0,
                 p_move=0.2, p_hop=0.2, p_write=0.2, think=(0.02, 0.08), schedule=(),
                 route=rc.ROUTE, settle_timeout=120.0, log=None):
        self.cluster = cluster
        self.account_level = getattr(cluster, "account_level", "session")
        self.level = level or self.account_level
        self.duration = duration
        self.seed = random.randrange(1 << 30) if seed is None else seed
        self.timeout = timeout
        self.p_move, self.p_hop, self.p_write = p_move, p_hop, p_write
        self.think = think
        self.schedule = sorted(schedule, key=lambda e: e[0])
        self.route = route
        self.settle_timeout = settle_timeout
        self.log = log or (lambda msg: None)
        names = [r.name for r in cluster.regions]
        self.regions = {r.name: r for r in cluster.regions}
        self.sessions = []
        for i in range(sessions):
            name = f"s{i + 1}"
            keys = [f"{name}-k{j}" for j in range(keys_per_session)]
            self.sessions.append(_Session(name, names[i % len(names)], keys, self.level))
        self.all_keys = [k for s in self.sessions for k in s.keys]
        if observers:
            for n in names:
                self.sessions.append(_Session(f"obs-{n}", n, [], observer_level, observer=True))
        self.events = []            # (monotonic time, text) of what the schedule did
        self.errors = []            # exceptions that stopped a thread (a bug here, not there)
        self.t0 = None
        self.feed = None
        self._stop = threading.Event()

    # -- one request

    def _request(self, sess, kind, region, key, value=None):
        r = self.regions[region]
        headers = {}
        if sess.token:
            headers["X-Session-Token"] = sess.token
        if sess.level != self.account_level:
            headers["X-Consistency-Level"] = sess.level
        body = None
        if kind == hs.WRITE:
            body = json.dumps({"k": key, "v": value, "owner": sess.name})
            headers["Content-Type"] = "application/json"
        op = hs.Op(session=sess.name, kind=kind, region=region, key=key, value=value,
                   token_sent=sess.token, level=sess.level)
        op.invoke_wall = time.time()
        op.invoke = time.monotonic()
        try:
            resp = h.request(r.port, "PUT" if kind == hs.WRITE else "GET", self.route + key,
                             body=body, headers=headers, timeout=self.timeout)
        except (socket.timeout, TimeoutError) as e:
            op.complete, op.complete_wall = time.monotonic(), time.time()
            op.status, op.error = hs.TIMEOUT, repr(e)
            return op
        except (OSError, ValueError, http.client.HTTPException) as e:  # refused, reset, garbage
            op.complete, op.complete_wall = time.monotonic(), time.time()
            op.status, op.error = hs.ERROR, repr(e)
            return op
        op.complete, op.complete_wall = time.monotonic(), time.time()
        op.http_status = resp.status
        tok = resp.header("x-session-token")
        op.token_received = tok
        if tok:
            sess.token = tok
        op.version = resp.header("x-meridian-version")
        op.served_by = resp.header("x-meridian-served-by")
        crts = resp.header("x-meridian-crts")
        op.crts = int(crts) if crts and crts.isdigit() else None
        if resp.status == 404 and resp.header("x-meridian-substatus") == "1002":
            op.status = hs.UNAVAILABLE
            if kind == hs.READ:
                op.value = None
        elif resp.status == 429:
            op.status = hs.REFUSED
        elif kind == hs.WRITE:
            if not 200 <= resp.status <= 299:    # nginx WebDAV answers 201 or 204
                op.status, op.error = hs.ERROR, resp.body[:200].decode("utf-8", "replace")
        elif resp.status == 404:
            op.value = None
        elif resp.status == 200:
            try:
                doc = json.loads(resp.body)
            except ValueError:
                op.status, op.error = hs.ERROR, f"body is not JSON: {resp.body[:200]!r}"
                return op
            op.value = rc.user_fields(doc).get("v")
            meta = doc.get("_meridian") or {}
            if "regionId" in meta and "lsn" in meta:
                op.body_version = f"{meta['regionId']}:{meta['lsn']}"
            hdr = resp.header("x-meridian-confirmed")
            # The headers come from the node's index, the body from its store:
            # they describe the same version unless a write or an apply ran
            # between the two. Only a matching pair says whether the body is
            # confirmed.
            if hdr in ("true", "false") and op.version and op.version == op.body_version:
                op.confirmed = hdr == "true"
        else:
            op.status, op.error = hs.ERROR, resp.body[:200].decode("utf-8", "replace")
        if kind == hs.READ and op.status != hs.OK:
            op.value = None
        return op

    # -- one session

    def _other_region(self, rng, current):
        return rng.choice([n for n in self.regions if n != current])

    def _write(self, sess, rng, region):
        key = rng.choice(sess.keys)
        sess.seq += 1
        sess.ops.append(self._request(sess, hs.WRITE, region, key, f"{sess.name}:{sess.seq}"))
        return key

    def _session_loop(self, sess, end):
        rng = random.Random(f"{self.seed}/{sess.name}")
        try:
            while time.monotonic() < end and not self._stop.is_set():
                if sess.observer:
                    sess.ops.append(self._request(sess, hs.READ, sess.region,
                                                  rng.choice(self.all_keys)))
                else:
                    if rng.random() < self.p_move:
                        sess.region = self._other_region(rng, sess.region)
                    x = rng.random()
                    if x < self.p_hop:
                        key = self._write(sess, rng, sess.region)
                        sess.region = self._other_region(rng, sess.region)
                        sess.ops.append(self._request(sess, hs.READ, sess.region, key))
                    elif x < self.p_hop + self.p_write:
                        self._write(sess, rng, sess.region)
                    else:
                        sess.ops.append(self._request(sess, hs.READ, sess.region,
                                                      rng.choice(self.all_keys)))
                pause = rng.uniform(*self.think)
                if pause:
                    time.sleep(pause)
        except BaseException as e:  # reported by run(): a bug of the runner
            self.errors.append((sess.name, e))

    # -- partitions and delays

    def _apply(self, action, arg):
        relays = self.cluster.relays
        if action == "delay":
            sat, ms = arg
            for name, relay in relays.items():
                if sat is None or name == sat:
                    relay.set_delay(ms)
            return f"delay {sat or 'all'} {ms} ms"
        relay = relays[arg]
        {"blackhole": relay.blackhole, "pass": relay.pass_through, "reset": relay.reset}[action]()
        return f"{action} {arg}"

    def _chaos_loop(self):
        try:
            for at, action, arg in self.schedule:
                if self._stop.wait(max(0.0, self.t0 + at - time.monotonic())):
                    return
                what = self._apply(action, arg)
                self.events.append((time.monotonic(), what))
                self.log(f"{time.monotonic() - self.t0:7.2f}s {what}")
        except BaseException as e:
            self.errors.append(("schedule", e))

    def heal(self):
        for name, relay in self.cluster.relays.items():
            relay.pass_through()
            relay.set_delay(self.cluster.delay_ms)
        self.events.append((time.monotonic(), f"healed: every relay passes, delay "
                                              f"{self.cluster.delay_ms} ms"))

    # -- the run

    def run(self):
        """Runs the workload; returns (ops, feed): every request as an Op in
        invoke order, and the hub's change feed after the cluster settled."""
        self.t0 = time.monotonic()
        end = self.t0 + self.duration
        threads = [threading.Thread(target=self._session_loop, args=(s, end), daemon=True,
                                    name=f"session {s.name}") for s in self.sessions]
        chaos = threading.Thread(target=self._chaos_loop, daemon=True, name="schedule")
        chaos.start()
        for t in threads:
            t.start()
        try:
            for t in threads:
                t.join(max(0.0, end - time.monotonic()) + self.timeout + 10)
        finally:
            self._stop.set()
            chaos.join(10)
            stuck = [t.name for t in threads if t.is_alive()]
            self.heal()
        if stuck or self.errors:
            raise AssertionError(f"workload threads failed: stuck {stuck}, errors {self.errors!r}")
        self.log(f"load done after {time.monotonic() - self.t0:.1f}s; waiting for the cluster "
                 "to settle")
        self.cluster.wait_quiet(timeout=self.settle_timeout)
        self.feed = self.cluster.hub.all_changes(route=self.route)[0]
        ops = sorted((op for s in self.sessions for op in s.ops), key=lambda o: o.invoke)
        for i, op in enumerate(ops):
            op.id = i
        self.ops = ops
        return ops, self.feed


# ---------------------------------------------------------------- feature probe

def session_routing_problem(cluster, route=rc.ROUTE, timeout=15.0):
    """None when the nodes route reads by session token; else a sentence
    saying which part of issue 6's node side is missing. Writes one probe
    document at west and reads it at once at south with the write's token
    (the WAN relays must add a delay, so south cannot have it yet)."""
    west, south = cluster["west"], cluster["south"]
    doc_id = f"probe-{time.monotonic_ns()}"
    w = west.put(doc_id, {"probe": True}, route=route, timeout=timeout)
    if w.status not in (200, 201):
        return f"probe write at west failed: {w!r}"
    token = w.header("x-session-token")
    if not token:
        return "a write answer carries no X-Session-Token"
    try:
        r = south.get(doc_id, route=route, headers={"X-Session-Token": token}, timeout=timeout)
    except OSError as e:
        return (f"a session read at south for a token naming west's fresh write got no answer "
                f"within {timeout}s ({e!r}): the read waits without bound")
    if not r.header("x-session-token"):
        return ("read answers carry no X-Session-Token (issue 6 node side: tokens on every "
                "answer, routing of reads by session token)")
    if r.status == 404 and r.header("x-meridian-substatus") == "1002":
        return None          # refused for the session: the token is honoured
    if r.status != 200:
        return (f"south answered {r.status} to a session read for a token naming west's "
                "fresh write: reads are not routed by session token (issue 6 node side)")
    return None


# ---------------------------------------------------------------- command line

def main(argv=None):
    ap = argparse.ArgumentParser(description="Long consistency run: three regions through "
                                 "WAN relays, partitions that come and go, the history checked.")
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the load (default 10)")
    ap.add_argument("--seconds", type=float, help="length of the load in seconds (overrides --minutes)")
    ap.add_argument("--sessions", type=int, default=9)
    ap.add_argument("--keys", type=int, default=2, help="keys per session")
    ap.add_argument("--delay-ms", type=float, default=200, help="one-way WAN delay")
    ap.add_argument("--level", default="session",
                    choices=("eventual", "consistent_prefix", "session", "bounded_staleness"),
                    help="the account's level and the sessions' level")
    ap.add_argument("--staleness", default="10,1",
                    help="K,T: bounded_staleness bounds (versions, seconds), with --level bounded_staleness")
    ap.add_argument("--slack", type=float, default=0.5, help="seconds of slack in the staleness rule")
    ap.add_argument("--backend", default="embedded", choices=("embedded", "nginx"))
    ap.add_argument("--no-partitions", action="store_true", help="no partitions or delay changes")
    ap.add_argument("--ignore-tokens", action="store_true",
                    help=f"start every node with {DEBUG_IGNORE_TOKENS}=1 (expect violations)")
    ap.add_argument("--timeout", type=float, default=6.0, help="client request timeout, seconds")
    ap.add_argument("--p-move", type=float, default=0.2, help="chance per step to move region")
    ap.add_argument("--p-hop", type=float, default=0.2,
                    help="chance per step to write an own key and read it at once elsewhere")
    ap.add_argument("--p-write", type=float, default=0.2, help="chance per step of a plain write")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--dir", help="where the cluster lives (default: a new temporary directory)")
    ap.add_argument("--history", help="where to save the history (JSON; default DIR/history.json); "
                    "re-check it with history.py")
    ap.add_argument("--keep", action="store_true",
                    help="keep the nodes' data directories after a clean run")
    ap.add_argument("--limit", type=int, default=10, help="violations shown per rule")
    a = ap.parse_args(argv)

    duration = a.seconds if a.seconds is not None else a.minutes * 60
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    staleness = None
    account = None
    if a.level == "bounded_staleness":
        k, t = a.staleness.split(",")
        staleness = (int(k), int(t))
        account = bounded_account(*staleness)
    elif a.level != "session":
        account = {"multi_region_writes": True, "consistency": a.level}
    base = Path(a.dir or tempfile.mkdtemp(prefix="meridian-consistency-"))
    history_path = Path(a.history) if a.history else base / "history.json"
    env = {DEBUG_IGNORE_TOKENS: "1"} if a.ignore_tokens else {}
    schedule = [] if a.no_partitions else random_schedule(rng, duration,
                                                          base_delay_ms=a.delay_ms)

    def log(msg):
        print(msg, flush=True)

    log(f"meridian {h.meridian_bin()}; cluster in {base}; seed {seed}; {a.sessions} sessions "
        f"for {duration:.0f}s at {a.level}; delay {a.delay_ms} ms; {len(schedule)} schedule events"
        + ("; session tokens IGNORED by the nodes" if env else ""))
    cluster = ConsistencyCluster(base, backend=a.backend, delay_ms=a.delay_ms, env=env,
                                 account=account)
    status = 2
    try:
        cluster.start()
        wl = Workload(cluster, sessions=a.sessions, duration=duration, keys_per_session=a.keys,
                      seed=seed, timeout=a.timeout, schedule=schedule, p_move=a.p_move,
                      p_hop=a.p_hop, p_write=a.p_write, log=log)
        ops, feed = wl.run()
        log(f"checking {len(ops)} ops against {len(feed)} feed entries")
        violations = hs.check(ops, feed, staleness=staleness, slack=a.slack)
        hs.save_history(history_path, ops, feed, staleness=staleness, seed=seed,
                        events=wl.events)
        log(hs.format_report(ops, feed, violations, events=wl.events, limit=a.limit))
        log(f"history saved to {history_path} (re-check: python3 {HERE / 'history.py'} "
            f"{history_path}); node logs in {base}")
        status = 1 if violations else 0
    except Exception:
        import traceback
        traceback.print_exc()
        log(f"the run itself failed; node logs and configs in {base}")
    finally:
        reports = cluster.finalize()
        for rep in reports:
            log(rep)
        if reports:
            status = 2
    if status == 0 and not a.keep:
        import shutil
        shutil.rmtree(base / "data", ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
