#!/usr/bin/python3
"""readsclient: the workload and the report of bench/reads.sh (stdlib only).

Subcommands

  run --region NAME=URL (x3, the hub first) --levels L1,L2,... [options]
      Read-after-write across regions. CLIENTS threads, each on its own
      keep-alive connections, loop without pause:
        1. PUT /orders/ID (a JSON object, ~--bytes bytes, "version" = a
           counter of the client, so LWW on /version keeps the newest) in a
           home region, with no session token and no consistency header
           (a new session starts with the write); note the answer's
           X-Meridian-Version and X-Session-Token.
        2. At once GET /orders/ID in another region at one level:
             session            X-Session-Token: the write's token
             eventual, bounded  no token
           with X-Consistency-Level: LEVEL unless LEVEL is the account's
           default (--default-level), which the request then gets by
           default.
      Operation n of client i uses the directed pair (home, read) number
      (n + i) mod 6 and the level number (n div 6 + i) mod len(levels), so
      every level sees the six pairs equally. Half the writes (at random)
      create a new document, the others update the client's document written
      longest ago, if that was at least 1 s ago (else create), so a stale
      read is either a 404 (create) or an older version (update).
      A write answered 429 (bounded staleness: the satellite's backlog is
      over the bound) is counted, the client sleeps Retry-After (at most
      1 s) and moves on without a read.
      A read is classified by its answer: fresh (200, the write's version),
      stale (200, another version), missing (404 without substatus),
      refused (404 with X-Meridian-Substatus: 1002), other; forwarded when
      it carries X-Meridian-Served-By.
      First --warmup seconds of the same workload, discarded; the clients
      stop, the nodes' metrics are read, --duration seconds are measured,
      the clients stop (each finishes its operation) and the metrics are
      read again. The served shares come from the difference of
      meridian_reads_total{level,served} summed over the three regions;
      forwarded reads are also served (and counted) by the region they were
      forwarded to, so that region's count is subtracted (see below).
      Prints a table and writes a JSON summary (--out) for `summary`.

  summary --rtt-ms MS FILE.json ...
      The ratios across the runs: per level p99 / RTT, and p50/p99 of each
      level against eventual's of the same cluster.

Uses Conn, fetch_metrics and metric of bench/replication/replclient.py.
"""

import argparse
import json
import os
import random
import signal
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in bench/replication
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "replication"))
from replclient import Conn, fetch_metrics, metric  # noqa: E402

LEVELS = ("eventual", "consistent_prefix", "session", "bounded_staleness")
SERVED = ("local", "after_wait", "forwarded", "refused")
KINDS = ("fresh", "stale", "missing", "refused", "other")


def _named(s):
    name, sep, url = s.partition("=")
    if not sep or not name or not url:
        raise argparse.ArgumentTypeError(f"expected NAME=URL, got {s!r}")
    return name, url.rstrip("/")


def pct(vals, q):
    """Nearest-rank percentile of a sorted list (nan when empty)."""
    if not vals:
        return float("nan")
    k = max(0, min(len(vals) - 1, int(-(-q * len(vals) // 1)) - 1))
    return vals[k]


class Level:
    """What the reads of one level saw."""

    def __init__(self):
        self.lat = []                      # ms, every read that got an answer
        self.kinds = dict.fromkeys(KINDS, 0)
        self.stale_404 = 0                 # missing after a create
        self.stale_old = 0                 # stale after an update
        self.served_by = {}                # region -> forwarded reads it served
        self.pairs = {}                    # (home, read) -> [lat...], and misses
        self.pair_miss = {}
        self.errors = 0                    # no answer at all
        self.other_status = {}

    def merge(self, o):
        self.lat += o.lat
        for k in KINDS:
            self.kinds[k] += o.kinds[k]
        self.stale_404 += o.stale_404
        self.stale_old += o.stale_old
        for k, v in o.served_by.items():
            self.served_by[k] = self.served_by.get(k, 0) + v
        for k, v in o.pairs.items():
            self.pairs.setdefault(k, []).extend(v)
        for k, v in o.pair_miss.items():
            self.pair_miss[k] = self.pair_miss.get(k, 0) + v
        self.errors += o.errors
        for k, v in o.other_status.items():
            self.other_status[k] = self.other_status.get(k, 0) + v


class Client:
    """One simulated user: its connections, its documents, its counts."""

    def __init__(self, bench, index):
        self.b, self.i = bench, index
        self.rng = random.Random(bench.seed * 1000 + index)
        self.conns = {name: Conn(url) for name, url in bench.regions}
        self.n = 0                         # operations so far (all phases)
        self.counter = 0                   # the "version" field
        self.docs = []                     # [id, version, t_written], oldest first
        self.made = 0
        self.reset()

    def reset(self):
        self.levels = {lv: Level() for lv in self.b.levels}
        self.wlat = {name: [] for name, _ in self.b.regions}
        self.w429 = 0
        self.werr = {}
        self.ops = 0

    def body(self, doc_id, version):
        head = ('{"id":"%s","tenantId":"t%d","version":%d,"client":%d,"pad":"'
                % (doc_id, self.i % 8, version, self.i))
        return (head + "x" * max(0, self.b.bytes - len(head) - 2) + '"}').encode()

    def run(self):
        b = self.b
        while not b.stop.is_set():
            try:
                self.one()
            except Exception as e:  # a broken connection: count it, go on
                self.werr[f"exception {type(e).__name__}"] = \
                    self.werr.get(f"exception {type(e).__name__}", 0) + 1
                time.sleep(0.05)

    def one(self):
        b = self.b
        home, read = b.pairs[(self.n + self.i) % len(b.pairs)]
        level = b.levels[(self.n // len(b.pairs) + self.i) % len(b.levels)]
        self.n += 1
        now = time.monotonic()
        if self.docs and self.rng.random() < 0.5 and self.docs[0][2] <= now - 1.0:
            doc = self.docs.pop(0)
            update = True
        else:
            self.made += 1
            doc = [f"{b.tag}-c{self.i}-{self.made}", 0, 0.0]
            update = False
        self.counter += 1
        doc[1] = self.counter
        path = f"/orders/{doc[0]}"

        t0 = time.perf_counter()
        status, hdrs, _ = self.conns[home].request(
            "PUT", path, body=self.body(doc[0], doc[1]),
            headers={"Content-Type": "application/json"})
        t1 = time.perf_counter()
        if status == 429:
            self.w429 += 1
            if not update:
                self.made -= 1
            else:
                self.docs.insert(0, doc)
            try:
                wait = min(1.0, float(hdrs.get("Retry-After", "1")))
            except ValueError:
                wait = 1.0
            b.stop.wait(wait)
            return
        if not 200 <= status <= 299:
            self.werr[status] = self.werr.get(status, 0) + 1
            if update:
                self.docs.insert(0, doc)
            return
        self.ops += 1
        self.wlat[home].append((t1 - t0) * 1000.0)
        version = hdrs.get("X-Meridian-Version")
        token = hdrs.get("X-Session-Token")
        doc[2] = time.monotonic()
        self.docs.append(doc)

        h = {}
        if level == "session" and token:
            h["X-Session-Token"] = token
        if level != b.default_level:
            h["X-Consistency-Level"] = level
        lv = self.levels[level]
        t2 = time.perf_counter()
        try:
            rs, rh, _ = self.conns[read].request("GET", path, headers=h)
        except OSError:
            lv.errors += 1
            return
        ms = (time.perf_counter() - t2) * 1000.0
        lv.lat.append(ms)
        lv.pairs.setdefault((home, read), []).append(ms)
        by = rh.get("X-Meridian-Served-By")
        if by:
            lv.served_by[by] = lv.served_by.get(by, 0) + 1
        if rs == 200:
            kind = "fresh" if rh.get("X-Meridian-Version") == version else "stale"
        elif rs == 404:
            kind = "refused" if rh.get("X-Meridian-Substatus") == "1002" else "missing"
        else:
            kind = "other"
            lv.other_status[rs] = lv.other_status.get(rs, 0) + 1
        lv.kinds[kind] += 1
        if kind in ("stale", "missing"):
            lv.pair_miss[(home, read)] = lv.pair_miss.get((home, read), 0) + 1
            if update:
                lv.stale_old += 1
            else:
                lv.stale_404 += 1


class Bench:
    def __init__(self, args):
        self.regions = args.region
        names = [n for n, _ in self.regions]
        self.pairs = [(a, c) for a in names for c in names if a != c]
        self.levels = args.levels
        self.default_level = args.default_level
        self.bytes = args.bytes
        self.seed = args.seed
        self.tag = args.tag
        self.stop = threading.Event()
        self.clients = [Client(self, i) for i in range(args.clients)]

    def phase(self, seconds):
        self.stop.clear()
        threads = []
        for c in self.clients:
            c.reset()
            t = threading.Thread(target=c.run, daemon=True)
            threads.append(t)
        t0 = time.monotonic()
        for t in threads:
            t.start()
        self.stop.wait(seconds)
        self.stop.set()
        for t in threads:
            t.join(30)
        return time.monotonic() - t0


def reads_metrics(regions, levels):
    """{region: {level: {served: count}}} of meridian_reads_total."""
    out = {}
    for name, url in regions:
        m = fetch_metrics(url)
        out[name] = {lv: {s: metric(m, "meridian_reads_total", level=lv, served=s) or 0.0
                          for s in SERVED} for lv in levels}
        out[name]["_throttled"] = metric(m, "meridian_writes_throttled_total") or 0.0
    return out


def cmd_run(args):
    for lv in args.levels:
        if lv not in LEVELS:
            raise SystemExit(f"readsclient: unknown level {lv!r}")
    bench = Bench(args)
    names = [n for n, _ in args.region]
    hub = names[0]
    if args.warmup > 0:
        bench.phase(args.warmup)
    before = reads_metrics(args.region, args.levels)
    elapsed = bench.phase(args.duration)
    time.sleep(0.2)
    after = reads_metrics(args.region, args.levels)

    lv_all = {lv: Level() for lv in args.levels}
    wlat = {n: [] for n in names}
    w429, werr, ops = 0, {}, 0
    for c in bench.clients:
        for lv in args.levels:
            lv_all[lv].merge(c.levels[lv])
        for n in names:
            wlat[n] += c.wlat[n]
        w429 += c.w429
        ops += c.ops
        for k, v in c.werr.items():
            werr[k] = werr.get(k, 0) + v
    throttled = sum(after[n]["_throttled"] - before[n]["_throttled"] for n in names)

    print(f"    {args.clients} clients, {elapsed:.0f} s measured (after {args.warmup:g} s warm-up):"
          f" {ops} write+read pairs, {ops / elapsed:.0f}/s")
    wl = sorted(x for v in wlat.values() for x in v)
    per = "  ".join(f"{n} {pct(sorted(wlat[n]), 0.5):.1f}/{pct(sorted(wlat[n]), 0.99):.1f}"
                    for n in names)
    print(f"    writes p50/p99 ms: all {pct(wl, 0.5):.1f}/{pct(wl, 0.99):.1f}   ({per})")
    if w429 or throttled or werr:
        print(f"    ! writes refused: {w429} answered 429 (meridian_writes_throttled_total"
              f" +{throttled:.0f}), other failures {werr or 0}")

    res = {"label": args.label, "account": args.default_level, "rtt_ms": args.rtt_ms,
           "wait_ms": args.wait_ms, "levels": {}}
    print(f"    {'level (*: default)':<19}{'reads':>6}  {'local':>6} {'waited':>6} {'fwd':>6} {'refused':>7}"
          f"  {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7}  missed the write")
    notes = []
    for lv in args.levels:
        L = lv_all[lv]
        L.lat.sort()
        n = len(L.lat)
        # metrics deltas over the three regions
        d = {s: sum(after[r][lv][s] - before[r][lv][s] for r in names) for s in SERVED}
        per_region = {r: {s: after[r][lv][s] - before[r][lv][s] for s in SERVED} for r in names}
        fwd_client = sum(L.served_by.values())
        # Reads answered for a peer have their own label (for_peer), so
        # each client read counts once in SERVED.
        d_client = dict(d)
        tot = sum(d_client.values())
        share = {s: (100.0 * d_client[s] / tot if tot > 0 else float("nan")) for s in SERVED}
        missed = L.kinds["stale"] + L.kinds["missing"]
        q = {k: pct(L.lat, k) for k in (0.5, 0.9, 0.99, 1.0)}
        print(f"    {lv + ('*' if lv == args.default_level else ''):<19}{n:>6}  "
              f"{share['local']:5.1f}% {share['after_wait']:5.1f}% {share['forwarded']:5.1f}%"
              f" {share['refused']:6.1f}%  {q[0.5]:7.1f} {q[0.9]:7.1f} {q[0.99]:7.1f} {q[1.0]:7.1f}"
              f"  {missed:>5} ({100.0 * missed / n if n else 0:4.1f}%)")
        res["levels"][lv] = {
            "n": n, "p50": q[0.5], "p90": q[0.9], "p99": q[0.99], "max": q[1.0],
            "share": share, "metrics": d, "metrics_per_region": per_region,
            "missed": missed, "missed_404": L.stale_404, "missed_old": L.stale_old,
            "kinds": L.kinds, "served_by": L.served_by,
        }
        # cross-checks and anomalies
        if abs(tot - n) > 0 or d["forwarded"] != fwd_client:
            notes.append(f"{lv}: metrics count {tot:.0f} reads ({d['forwarded']:.0f} forwarded),"
                         f" the client {n} ({fwd_client} with X-Meridian-Served-By)")
        if L.kinds["refused"]:
            notes.append(f"{lv}: {L.kinds['refused']} reads refused (404, substatus 1002)")
        if L.kinds["other"] or L.errors:
            notes.append(f"{lv}: {L.kinds['other']} other answers {L.other_status},"
                         f" {L.errors} without answer")
        if lv == "session" and missed:
            notes.append(f"session: {missed} reads MISSED the session's own write "
                         f"({L.stale_404} 404 after a create, {L.stale_old} older version)"
                         " -- read-your-writes violated")
        if lv == "session" and args.wait_ms > 0:
            # a session read is forwarded or refused only once its wait ran out
            hit = fwd_client + L.kinds["refused"]
            if hit:
                notes.append(f"session: {hit} reads waited the whole session_wait_ms"
                             f" ({args.wait_ms:g} ms), then were forwarded or refused")
            res["levels"][lv]["hit_bound"] = hit

    for lv in args.levels:
        r = res["levels"][lv]
        if r["missed"] and lv != "session":
            print(f"      {lv}: missed = {r['missed_404']} x 404 after a create +"
                  f" {r['missed_old']} x older version after an update")
    for lv in args.levels:
        r = res["levels"][lv]
        if r["served_by"]:
            by = ", ".join(f"{k} {v}" for k, v in sorted(r["served_by"].items()))
            print(f"      {lv}: X-Meridian-Served-By on {sum(r['served_by'].values())} reads ({by})")
    # where each level's time goes: per directed pair
    print(f"    per pair (write region -> read region), read p50/p99 ms"
          f" [missed %] ({hub} is the hub):")
    hdr = "".join(f"  {lv[:17]:>21}" for lv in args.levels)
    print(f"      {'pair':<15}{hdr}")
    for a, c in bench.pairs:
        row = ""
        for lv in args.levels:
            v = sorted(lv_all[lv].pairs.get((a, c), []))
            m = lv_all[lv].pair_miss.get((a, c), 0)
            cell = f"{pct(v, 0.5):.0f}/{pct(v, 0.99):.0f}" if v else "-"
            if v and lv != "session" or m:
                cell += f" [{100.0 * m / len(v):3.0f}%]" if v else ""
            row += f"  {cell:>21}"
        print(f"      {a + ' -> ' + c:<15}{row}")
    print("    metrics deltas, reads served (local/after_wait/forwarded/refused) per region:")
    for lv in args.levels:
        cells = "   ".join(
            f"{r} " + "/".join(f"{res['levels'][lv]['metrics_per_region'][r][s]:.0f}"
                               for s in SERVED) for r in names)
        print(f"      {lv:<18} {cells}")
    if not any(n.startswith(tuple(f"{lv}: metrics count" for lv in args.levels)) for n in notes):
        print("    cross-check: the metrics count every client read once, and as many forwarded"
              " reads as answers with X-Meridian-Served-By")
    for note in notes:
        print(f"    ! {note}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f)
    return 0


def cmd_summary(args):
    runs = []
    for path in args.files:
        try:
            with open(path) as f:
                runs.append(json.load(f))
        except (OSError, ValueError) as e:
            print(f"  ! {path}: {e}")
    rtt = args.rtt_ms
    for run in runs:
        ev = run["levels"].get("eventual")
        print(f"  {run['label']} (account.consistency: {run['account']})")
        for lv, r in run["levels"].items():
            sh = r["share"]
            line = (f"    {lv:<18} local/waited/fwd/refused {sh['local']:3.0f}/{sh['after_wait']:3.0f}/"
                    f"{sh['forwarded']:3.0f}/{sh['refused']:3.0f} %"
                    f"  missed {100.0 * r['missed'] / r['n'] if r['n'] else 0:5.1f}%"
                    f"  p50 {r['p50']:5.1f}  p99 {r['p99']:6.1f} ms  p99/RTT {r['p99'] / rtt:4.2f}x")
            if ev and lv != "eventual" and ev["p99"] > 0:
                line += (f"  p99/eventual's {r['p99'] / ev['p99']:5.1f}x"
                         f" ({r['p99'] - ev['p99']:+.0f} ms)")
            print(line)
    return 0


def main(argv):
    ap = argparse.ArgumentParser(prog="readsclient", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("run")
    p.add_argument("--region", type=_named, action="append", required=True,
                   help="NAME=URL, the hub first")
    p.add_argument("--levels", type=lambda s: [x for x in s.split(",") if x], required=True)
    p.add_argument("--default-level", required=True, help="the account's level")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--bytes", type=int, default=512)
    p.add_argument("--rtt-ms", type=float, required=True)
    p.add_argument("--wait-ms", type=float, default=1000.0, help="account.session_wait_ms")
    p.add_argument("--label", default="run")
    p.add_argument("--tag", default="")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("summary")
    p.add_argument("--rtt-ms", type=float, required=True)
    p.add_argument("files", nargs="+")
    p.set_defaults(fn=cmd_summary)

    args = ap.parse_args(argv)
    if args.cmd == "run" and not args.tag:
        args.tag = f"r{os.getpid()}"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
