"""History checker for Meridian's consistency levels (issue 6): the pure part.

A history is what clients saw: a list of `Op` (one per request, with its
invoke and completion times, region, tokens, status and the value written or
read) plus the hub's change feed after the run (every confirmed write in crts
order). `check(ops, feed)` returns the list of `Violation`s; no I/O, no
cluster. README.md in this folder states every rule precisely.

Workload convention that makes the checks exact (tests/consistency/workload.py
follows it):
  - every key has exactly ONE writer session, so there are no conflicts and
    the versions of a key are totally ordered by the writer's sequence;
  - a written value is "{session}:{seq}", seq increasing per writer (so per
    key too), and the document is {"k": key, "v": value, "owner": session};
  - there are no deletes; a plain 404 means "no version of the key here".

Stdlib only. `python3 history.py HISTORY.json [--staleness K,T]` re-checks a
history saved by `save_history`.
"""

import bisect
import dataclasses
import json
import sys
from collections import Counter, defaultdict

READ, WRITE = "read", "write"

# Op.status
OK = "ok"                  # 2xx, or a plain 404 for a read (value None)
UNAVAILABLE = "unavailable"  # 404 with X-Meridian-Substatus: 1002 (session not available)
REFUSED = "refused"        # 429 (bounded staleness backlog)
TIMEOUT = "timeout"        # no answer within the client's timeout
ERROR = "error"            # any other answer or a connection error

SESSION = "session"
BOUNDED = "bounded_staleness"

RULES = (
    "read-your-writes",
    "monotonic-reads",
    "monotonic-writes",
    "writes-follow-reads",
    "consistent-prefix",
    "session-prefix",
    "bounded-staleness",
    "lost-write",
    "integrity",
)


@dataclasses.dataclass
class Op:
    """One client request and what came back.

    Times: `invoke`/`complete` on the monotonic clock of the process that ran
    the workload (used for real-time order); `invoke_wall`/`complete_wall`
    in epoch seconds (compared with the hub's HLC for bounded staleness).
    `complete` is None for a request that never finished (treated as never
    completing: it orders nothing after it)."""

    session: str
    kind: str                       # READ or WRITE
    region: str                     # the region the client sent it to
    key: str
    value: str | None = None        # written, or read (None: 404 / no value)
    invoke: float = 0.0
    complete: float | None = None
    invoke_wall: float | None = None
    complete_wall: float | None = None
    token_sent: str | None = None
    token_received: str | None = None
    status: str = OK
    http_status: int | None = None
    version: str | None = None      # X-Meridian-Version
    body_version: str | None = None  # "regionId:lsn" from the document's metadata
    crts: int | None = None         # X-Meridian-Crts
    confirmed: bool | None = None   # X-Meridian-Confirmed, None when unknown or
                                    # when the headers describe another version than the body
    level: str = SESSION
    served_by: str | None = None    # X-Meridian-Served-By (a forwarded read); None: local
    error: str | None = None
    id: int | None = None           # position in the history, set by check()

    @property
    def served_region(self):
        return self.served_by or self.region

    def ended(self):
        return self.complete if self.complete is not None else float("inf")

    def describe(self, t0=0.0):
        t = f"{self.invoke - t0:+.3f}..{(self.complete - t0) if self.complete is not None else float('nan'):+.3f}s"
        where = self.region + (f"->{self.served_by}" if self.served_by else "")
        if self.kind == WRITE:
            what = f"write {self.key}={self.value}"
        else:
            what = f"read {self.key} -> {self.value if self.value is not None else '404'}"
        extra = [self.status if self.status != OK else None,
                 f"http {self.http_status}" if self.http_status is not None else None,
                 f"level={self.level}",
                 {True: "confirmed", False: "tentative", None: None}[self.confirmed],
                 f"version={self.version}" if self.version else None,
                 f"crts={self.crts}" if self.crts is not None else None,
                 f"token_sent={self.token_sent!r}" if self.token_sent else None,
                 f"token_received={self.token_received!r}" if self.token_received else None,
                 f"error={self.error}" if self.error else None]
        return (f"#{self.id} {t} {self.session}@{where} {what} "
                f"({', '.join(x for x in extra if x)})")


@dataclasses.dataclass
class Violation:
    rule: str
    ops: list
    why: str
    key: str | None = None

    def describe(self, t0=0.0):
        lines = [f"[{self.rule}] {self.why}"]
        lines += [f"    {op.describe(t0)}" for op in self.ops]
        return "\n".join(lines)


def parse_value(value):
    """("s3", 7) for "s3:7"; None when value is not of the workload's form."""
    if not isinstance(value, str):
        return None
    writer, sep, seq = value.rpartition(":")
    if not sep or not writer or not seq.isdigit():
        return None
    return writer, int(seq)


def seq_of(value):
    """The writer's sequence number of a value; 0 for None (no version)."""
    p = parse_value(value)
    return p[1] if p else 0


def hlc_ms(crts):
    """The wall-clock milliseconds of a crts (48-bit ms, 16-bit counter)."""
    return crts >> 16


# ---------------------------------------------------------------- the feed

class FeedVersion:
    __slots__ = ("crts", "key", "value", "seq", "entry")

    def __init__(self, crts, key, value, seq, entry):
        self.crts, self.key, self.value, self.seq, self.entry = crts, key, value, seq, entry

    def __repr__(self):
        return f"<{self.key}={self.value} crts={self.crts}>"


class Feed:
    """The hub's change feed as the checker uses it: per key, its versions in
    crts order; per value, its crts."""

    def __init__(self, entries):
        self.entries = sorted(entries, key=lambda e: e["crts"])
        self.crts = [e["crts"] for e in self.entries]
        self.by_key = defaultdict(list)     # key -> [FeedVersion] in crts order
        self.by_value = {}                  # value -> FeedVersion
        self.duplicates = []                # (first, again) for a value confirmed twice
        for e in self.entries:
            doc = e.get("doc")
            if e.get("tombstone") or not isinstance(doc, dict):
                continue                    # the workload never deletes
            value = doc.get("v")
            if parse_value(value) is None:
                continue                    # not a workload document (e.g. a probe)
            fv = FeedVersion(e["crts"], e["id"], value, seq_of(value), e)
            if value in self.by_value:
                self.duplicates.append((self.by_value[value], fv))
                continue
            self.by_value[value] = fv
            self.by_key[e["id"]].append(fv)
        self._key_crts = {k: [v.crts for v in vs] for k, vs in self.by_key.items()}
        self._key_seqs = {k: [v.seq for v in vs] for k, vs in self.by_key.items()}
        self._seq_ordered = {k: all(a < b for a, b in zip(seqs, seqs[1:]))
                             for k, seqs in self._key_seqs.items()}

    def crts_of(self, value):
        fv = self.by_value.get(value)
        return fv.crts if fv else None

    def floor(self, key, crts):
        """The newest version of key confirmed at or before crts, or None."""
        i = bisect.bisect_right(self._key_crts.get(key, ()), crts)
        return self.by_key[key][i - 1] if i else None

    def first_newer(self, key, seq):
        """The first version of key (crts order) whose seq is above seq."""
        if self._seq_ordered.get(key):
            versions = self.by_key[key]
            i = bisect.bisect_right(self._key_seqs[key], seq)
            return versions[i] if i < len(versions) else None
        for fv in self.by_key.get(key, ()):
            if fv.seq > seq:
                return fv
        return None

    def count_confirmed(self, from_crts, until_ms):
        """Feed entries (any key) with crts >= from_crts confirmed at or before
        the wall-clock millisecond until_ms."""
        hi = bisect.bisect_right(self.crts, (int(until_ms) << 16) | 0xFFFF)
        lo = bisect.bisect_left(self.crts, from_crts)
        return max(0, hi - lo)


# ---------------------------------------------------------------- real-time order

class Before:
    """Setters (time, rank, op); before(t) is the (rank, op) of highest rank
    among setters whose time is strictly below t (real time: a setter that
    completed before the op in question was invoked)."""

    def __init__(self, items):
        items = sorted(items, key=lambda x: x[0])
        self.times = [t for t, _, _ in items]
        self.best = []
        cur = None
        for _, rank, op in items:
            if cur is None or rank > cur[0]:
                cur = (rank, op)
            self.best.append(cur)

    def before(self, t):
        i = bisect.bisect_left(self.times, t)
        return self.best[i - 1] if i else None


# ---------------------------------------------------------------- the checker

def check(ops, feed, *, staleness=None, slack=0.5, session_levels=(SESSION,)):
    """Checks a history; returns [Violation], empty when it is clean.

    ops: [Op]; feed: the hub's change-feed entries ({"crts","id","doc"|"tombstone",...}).
    staleness: (max_versions, max_seconds) to check reads made at level
    bounded_staleness; slack: seconds of tolerance for clock and poll
    granularity in that rule. session_levels: the levels whose reads get the
    session guarantees (read-your-writes, monotonic reads, writes-follow-reads,
    session prefix)."""
    ops = list(ops)
    for i, op in enumerate(ops):
        if op.id is None:
            op.id = i
    fd = feed if isinstance(feed, Feed) else Feed(feed)
    out = []

    writes = [op for op in ops if op.kind == WRITE]
    writes_by_value = {w.value: w for w in writes if w.value is not None}
    answered = [op for op in ops if op.kind == READ and op.status == OK]

    # --- integrity: every value read was written, to that key, before the read ended
    suspect = set()
    for r in answered:
        if r.value is None:
            continue
        w = writes_by_value.get(r.value)
        if w is None or w.key != r.key:
            out.append(Violation("integrity", [r], f"read of {r.key} returned {r.value!r}, "
                                 "which no write of this key ever wrote", r.key))
            suspect.add(r.id)
        elif w.invoke > r.ended():
            out.append(Violation("integrity", [w, r], f"read of {r.key} returned {r.value!r} "
                                 "before the write of that value was even sent", r.key))
            suspect.add(r.id)
        elif r.confirmed is True and fd.crts_of(r.value) is None:
            out.append(Violation("integrity", [r], f"read of {r.key} returned {r.value!r} marked "
                                 "confirmed, but the hub's feed never lists that value", r.key))
            suspect.add(r.id)
    for first, again in fd.duplicates:
        out.append(Violation("integrity", [op for op in (writes_by_value.get(first.value),) if op],
                             f"value {first.value!r} of {first.key} is confirmed twice in the "
                             f"feed (crts {first.crts} and {again.crts})", first.key))
    reads = [r for r in answered if r.id not in suspect]
    session_reads = [r for r in reads if r.level in session_levels]

    by_session_key = defaultdict(list)
    for r in session_reads:
        by_session_key[(r.session, r.key)].append(r)
    acked_by_session_key = defaultdict(list)
    for w in writes:
        if w.status == OK and w.value is not None:
            acked_by_session_key[(w.session, w.key)].append(w)

    # --- read-your-writes
    for (session, key), rs in by_session_key.items():
        ws = acked_by_session_key.get((session, key))
        if not ws:
            continue
        mine = Before((w.ended(), seq_of(w.value), w) for w in ws)
        for r in rs:
            b = mine.before(r.invoke)
            if b and seq_of(r.value) < b[0]:
                got = r.value if r.value is not None else "404"
                out.append(Violation("read-your-writes", [b[1], r],
                                     f"{session} read {key} -> {got} at {r.served_region} after its "
                                     f"own write {b[1].value} had been acknowledged", key))

    # --- monotonic reads
    for (session, key), rs in by_session_key.items():
        seen = Before((r.ended(), seq_of(r.value), r) for r in rs)
        for r in rs:
            b = seen.before(r.invoke)
            if b and seq_of(r.value) < b[0]:
                got = r.value if r.value is not None else "404"
                out.append(Violation("monotonic-reads", [b[1], r],
                                     f"{session} read {key} -> {got} at {r.served_region} after "
                                     f"having read {b[1].value} at {b[1].served_region}", key))

    # --- monotonic writes: each key's versions in the feed in the writer's order
    for key, versions in fd.by_key.items():
        for prev, cur in zip(versions, versions[1:]):
            if cur.seq <= prev.seq:
                involved = [writes_by_value[v] for v in (prev.value, cur.value) if v in writes_by_value]
                out.append(Violation("monotonic-writes", involved,
                                     f"the hub confirmed {key}={cur.value} (crts {cur.crts}) after "
                                     f"{key}={prev.value} (crts {prev.crts}), against the order the "
                                     "writer made them", key))

    # --- lost write: the key ends on (at least) its last acknowledged write
    for (session, key), ws in acked_by_session_key.items():
        last = max(ws, key=lambda w: seq_of(w.value))
        versions = fd.by_key.get(key)
        final = versions[-1] if versions else None
        if final is None or final.seq < seq_of(last.value):
            ends = f"ends on {final.value} (crts {final.crts})" if final else "is not in the feed at all"
            out.append(Violation("lost-write", [last],
                                 f"{key}'s last acknowledged write {last.value} is lost: the hub's "
                                 f"feed {ends}", key))

    # --- writes follow reads: a session's write is confirmed after what it read
    reads_by_session = defaultdict(list)
    for r in session_reads:
        reads_by_session[r.session].append(r)
    writes_by_session = defaultdict(list)
    for w in writes:
        writes_by_session[w.session].append(w)
    for session, ws in writes_by_session.items():
        seen = Before((r.ended(), fd.crts_of(r.value), r)
                      for r in reads_by_session.get(session, ())
                      if r.value is not None and fd.crts_of(r.value) is not None
                      and (parse_value(r.value) or (None,))[0] != session)
        for w in ws:
            c = fd.crts_of(w.value)
            if c is None:
                continue
            b = seen.before(w.invoke)
            if b and c <= b[0]:
                out.append(Violation("writes-follow-reads", [b[1], w],
                                     f"{session} wrote {w.key}={w.value} after reading "
                                     f"{b[1].key}={b[1].value}, but the hub confirmed the write "
                                     f"first (crts {c} <= {b[0]})", w.key))

    # --- consistent prefix: per serving region (all levels), and per session
    def prefix(groups, rule, what, skip=frozenset()):
        for name, rs in groups.items():
            seen = Before((r.ended(), fd.crts_of(r.value), r) for r in rs
                          if r.value is not None and r.confirmed is True
                          and fd.crts_of(r.value) is not None)
            for r in rs:
                if r.id in skip:
                    continue
                if r.value is not None and r.confirmed is not True:
                    continue        # a tentative (or unknown) answer is not confirmed state
                b = seen.before(r.invoke)
                if not b:
                    continue
                fl = fd.floor(r.key, b[0])
                if fl is None:
                    continue
                c = fd.crts_of(r.value) if r.value is not None else None
                if r.value is not None and c is None:
                    continue        # reported under integrity
                if c is None or c < fl.crts:
                    got = f"{r.value} (crts {c})" if r.value is not None else "404"
                    out.append(Violation(rule, [b[1], r],
                                         f"{what} {name}: read {r.key} -> {got} after a read had "
                                         f"shown {b[1].key}={b[1].value} (crts {b[0]}), when "
                                         f"{r.key} was already {fl.value} (crts {fl.crts})", r.key))

    by_region = defaultdict(list)
    for r in reads:
        by_region[r.served_region].append(r)
    prefix(by_region, "consistent-prefix", "region")
    by_session = defaultdict(list)
    for r in session_reads:
        by_session[r.session].append(r)
    # a read already reported as going back on its own key is not reported again
    reported = {v.ops[-1].id for v in out if v.rule in ("read-your-writes", "monotonic-reads")}
    prefix(by_session, "session-prefix", "session", skip=reported)

    # --- bounded staleness
    if staleness is not None:
        max_versions, max_seconds = staleness
        for r in reads:
            if r.level != BOUNDED or r.invoke_wall is None:
                continue
            nxt = fd.first_newer(r.key, seq_of(r.value))
            if nxt is None:
                continue
            now_ms = r.invoke_wall * 1000.0
            got = r.value if r.value is not None else "404"
            age = (now_ms - hlc_ms(nxt.crts)) / 1000.0
            if age > max_seconds + slack:
                out.append(Violation("bounded-staleness", [r],
                                     f"read {r.key} -> {got} at {r.served_region}, but {nxt.value} "
                                     f"had been confirmed {age:.3f}s before the read (bound "
                                     f"{max_seconds}s + slack {slack}s)", r.key))
                continue
            behind = fd.count_confirmed(nxt.crts, now_ms - slack * 1000.0)
            if behind > max_versions:
                out.append(Violation("bounded-staleness", [r],
                                     f"read {r.key} -> {got} at {r.served_region}, {behind} versions "
                                     f"behind the hub (from {nxt.value}, crts {nxt.crts}; bound "
                                     f"{max_versions}, counting what was confirmed {slack}s before "
                                     "the read)", r.key))
    return out


# ---------------------------------------------------------------- reports

def summary(ops):
    """Counts for the report: ops by kind and status, forwarded reads, answers with a token."""
    c = Counter((op.kind, op.status) for op in ops)
    answered = [op for op in ops if op.status in (OK, UNAVAILABLE, REFUSED)]
    return {
        "ops": len(ops),
        "sessions": len({op.session for op in ops}),
        "reads": {s: n for (k, s), n in c.items() if k == READ},
        "writes": {s: n for (k, s), n in c.items() if k == WRITE},
        "forwarded_reads": sum(1 for op in ops if op.kind == READ and op.served_by),
        "answers_with_token": sum(1 for op in answered if op.token_received),
        "answers": len(answered),
    }


def format_report(ops, feed, violations, *, events=None, limit=5):
    """A readable report: what ran, violations per rule, the first `limit`
    of each with the ops involved (times relative to the first invoke)."""
    ops = list(ops)
    t0 = min((op.invoke for op in ops), default=0.0)
    s = summary(ops)
    n_feed = len(feed.entries) if isinstance(feed, Feed) else len(feed)
    lines = [f"history: {s['ops']} ops from {s['sessions']} sessions; reads {s['reads']}; "
             f"writes {s['writes']}; forwarded reads {s['forwarded_reads']}; answers with "
             f"a session token {s['answers_with_token']}/{s['answers']}; feed {n_feed} entries"]
    for at, what in events or ():
        lines.append(f"  event {at - t0:+.3f}s {what}")
    per_rule = Counter(v.rule for v in violations)
    lines.append(f"violations: {len(violations)}" + ("" if not violations else " (" + ", ".join(
        f"{rule} {per_rule[rule]}" for rule in RULES if per_rule[rule]) + ")"))
    for rule in RULES:
        vs = [v for v in violations if v.rule == rule]
        for v in vs[:limit]:
            lines.append(v.describe(t0))
        if len(vs) > limit:
            lines.append(f"  ... {len(vs) - limit} more {rule} violations")
    return "\n".join(lines)


def save_history(path, ops, feed, **meta):
    with open(path, "w") as f:
        json.dump({"meta": meta, "ops": [dataclasses.asdict(op) for op in ops], "feed": list(feed)}, f)


def load_history(path):
    with open(path) as f:
        data = json.load(f)
    return [Op(**o) for o in data["ops"]], data["feed"], data.get("meta", {})


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description="Re-check a saved history (see save_history).")
    ap.add_argument("history")
    ap.add_argument("--staleness", help="K,T: bound of bounded_staleness reads (versions, seconds)")
    ap.add_argument("--slack", type=float, default=0.5)
    ap.add_argument("--limit", type=int, default=5, help="violations shown per rule")
    a = ap.parse_args(argv)
    ops, feed, meta = load_history(a.history)
    staleness = meta.get("staleness")
    if a.staleness:
        k, t = a.staleness.split(",")
        staleness = (int(k), float(t))
    vs = check(ops, feed, staleness=staleness, slack=a.slack)
    print(format_report(ops, feed, vs, events=meta.get("events"), limit=a.limit))
    return 1 if vs else 0


if __name__ == "__main__":
    sys.exit(main())
