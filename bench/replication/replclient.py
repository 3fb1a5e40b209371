#!/usr/bin/python3
"""replclient: the measuring client of bench/replication.sh (stdlib only).

Subcommands

  ports N
      Print N distinct free TCP ports on 127.0.0.1, one per line. All N
      sockets are bound at the same time, so the ports differ from each other.

  drain --region NAME=URL ... [--timeout S]
      Wait until replication is quiet: every region's tentative backlog and
      lag are 0 and every region has applied the same number of confirmed-log
      entries, twice in a row (read from GET URL/_meridian/metrics). Prints
      one line, "drained SECONDS <state>" or "not-drained SECONDS <state>".

  lag --write NAME=URL --read NAME=URL [--read ...] [options]
      The "acknowledgement to applied in every region" measurement. For each
      of --samples writes, one at a time and spaced apart (no load):
        1. PUT a 1 KiB JSON document with a new id to the writing region's
           container route; t_ack = when its 2xx answer has been read.
        2. From t_ack on, --pollers threads per other region GET that
           document every --poll-ms, each on its own keep-alive connection,
           staggered, until the answer carries X-Meridian-Version equal to
           the write's version. The region's applied time is the arrival of
           the first such answer (an upper bound: the resolution is about
           poll-ms / pollers plus one GET on loopback).
        3. applied everywhere = the latest of the regions' applied times;
           the sample is (applied everywhere - t_ack).
      Prints p50/p90/p99/max of the samples, the ratio of p99 to the target
      (1.2 x RTT + 5 ms), and as a cross-check Meridian's own histogram
      meridian_replication_seconds{source=<writer>} of every region, as the
      difference between a snapshot before and after the samples, with the
      p50/p99 estimated the way Prometheus' histogram_quantile does.
      --out FILE also writes KEY=VALUE lines for the calling script.

  relay-rtt --relay PATH --delay-ms D [--samples N]
      Calibrates the WAN emulator alone: starts a TCP echo server here and
      one relay process (`python3 PATH --listen 127.0.0.1:0 --target <echo>
      --delay-ms D`, the same command line the benchmark uses), then times
      N round trips of a 1200-byte message through it, spaced apart. Prints
      "relay-rtt P50 P99 MAX" in ms: what the relay adds on this machine
      right now beyond the nominal 2 x D.
"""

import argparse
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse


def _hostport(url):
    u = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
    return u.hostname, u.port or 80


def _named(s):
    name, sep, url = s.partition("=")
    if not sep or not name or not url:
        raise argparse.ArgumentTypeError(f"expected NAME=URL, got {s!r}")
    return name, url.rstrip("/")


class Conn:
    """One keep-alive HTTP/1.1 connection that reconnects when it breaks."""

    def __init__(self, url, timeout=10.0):
        self.host, self.port = _hostport(url)
        self.timeout = timeout
        self.c = None

    def request(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            if self.c is None:
                self.c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self.c.connect()
                self.c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self.c.request(method, path, body=body, headers=headers or {})
                r = self.c.getresponse()
                data = r.read()
                return r.status, r.headers, data
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None


# ----------------------------------------------------------------- metrics

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)\s*$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def fetch_metrics(url):
    """[(name, {label: value}, float)] of GET url/_meridian/metrics."""
    c = Conn(url, timeout=5.0)
    try:
        status, _, data = c.request("GET", "/_meridian/metrics")
    finally:
        c.close()
    if status != 200:
        raise RuntimeError(f"GET {url}/_meridian/metrics answered {status}")
    out = []
    for line in data.decode("utf-8", "replace").splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group(2) or ""))
        try:
            out.append((m.group(1), labels, float(m.group(3))))
        except ValueError:
            pass
    return out


def metric(samples, name, **labels):
    for n, l, v in samples:
        if n == name and all(l.get(k) == x for k, x in labels.items()):
            return v
    return None


def histogram(samples, name, **labels):
    """{le (float, inf for +Inf): cumulative count} of one histogram series."""
    h = {}
    for n, l, v in samples:
        if n == name + "_bucket" and all(l.get(k) == x for k, x in labels.items()):
            h[float("inf") if l.get("le") == "+Inf" else float(l["le"])] = v
    return h


def hist_quantile(q, buckets):
    """Prometheus histogram_quantile over {le: cumulative count}; None if empty."""
    les = sorted(buckets)
    if not les:
        return None
    total = buckets[les[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le in les:
        c = buckets[le]
        if c >= rank:
            if le == float("inf"):
                return prev_le  # beyond the last finite bound: report that bound
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return les[-1]


# ------------------------------------------------------------------- ports

def cmd_ports(args):
    socks = []
    try:
        for _ in range(args.n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        for s in socks:
            print(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return 0


# ------------------------------------------------------------------- drain

def cmd_drain(args):
    """Quiet = no tentative backlog, no lag, and every region has applied the
    same number of confirmed-log entries, twice in a row. (The applied
    position itself is exported with 6 significant digits, too coarse to
    compare; the counters of nodes started together compare exactly.)"""
    t0 = time.monotonic()
    prev = None
    what = "no answer"
    while True:
        try:
            state = []
            for name, url in args.region:
                m = fetch_metrics(url)
                state.append((name,
                              metric(m, "meridian_tentative_backlog") or 0.0,
                              metric(m, "meridian_region_lag_ms") or 0.0,
                              metric(m, "meridian_applied_total")))
            busy = sum(b + l for _, b, l, _ in state)
            applied = {a for _, _, _, a in state}
            quiet = busy == 0 and len(applied) == 1 and None not in applied
            what = " ".join(f"{n}:backlog={b:.0f},lag_ms={l:.0f},applied={a:.0f}"
                            for n, b, l, a in state)
            if quiet and prev == state:
                print(f"drained {time.monotonic() - t0:.1f} {what}")
                return 0
            prev = state
        except (OSError, RuntimeError, http.client.HTTPException) as e:
            what = f"error: {e}"
            prev = None
        if time.monotonic() - t0 > args.timeout:
            print(f"not-drained {time.monotonic() - t0:.1f} {what}")
            return 0
        time.sleep(0.1)


# --------------------------------------------------------------------- lag

class Sample:
    def __init__(self, path, version, t_ack):
        self.path = path
        self.version = version
        self.t_ack = t_ack
        self.seen = {}          # region -> first matching answer's arrival
        self.other = {}         # region -> a different version seen (anomaly)
        self.statuses = {}      # region -> {status: count} of the polls
        self.done = threading.Event()


class Poller(threading.Thread):
    """Polls one region for the current sample, from a given phase offset."""

    def __init__(self, bench, region, url, index):
        super().__init__(daemon=True)
        self.bench, self.region, self.index = bench, region, index
        self.conn = Conn(url)

    def run(self):
        b = self.bench
        gen = 0
        while True:
            with b.cond:
                while b.gen == gen and not b.stop:
                    b.cond.wait()
                if b.stop:
                    return
                gen, s = b.gen, b.sample
            # stagger: poller i starts i/pollers of an interval late
            time.sleep(b.poll_s * self.index / b.pollers)
            deadline = s.t_ack + b.timeout_s
            while not s.done.is_set() and self.region not in s.seen:
                try:
                    status, hdrs, _ = self.conn.request("GET", s.path)
                except (OSError, http.client.HTTPException) as e:
                    status, hdrs = f"error {type(e).__name__}", {}
                t = time.perf_counter()
                with b.lock:
                    st = s.statuses.setdefault(self.region, {})
                    st[status] = st.get(status, 0) + 1
                    v = hdrs.get("X-Meridian-Version") if status == 200 else None
                    if v == s.version:
                        if self.region not in s.seen or t < s.seen[self.region]:
                            s.seen[self.region] = t
                        if len(s.seen) == len(b.readers):
                            s.done.set()
                        break
                    if v is not None:
                        s.other[self.region] = v
                if t > deadline:
                    break
                time.sleep(b.poll_s)


class LagBench:
    def __init__(self, args):
        self.writer_name, self.writer_url = args.write
        self.readers = args.read
        self.poll_s = args.poll_ms / 1000.0
        self.pollers = args.pollers
        self.timeout_s = args.timeout
        self.cond = threading.Condition()
        self.lock = threading.Lock()
        self.gen = 0
        self.sample = None
        self.stop = False
        self.threads = [Poller(self, name, url, i)
                        for name, url in self.readers for i in range(self.pollers)]
        for t in self.threads:
            t.start()
        self.wconn = Conn(self.writer_url)

    def close(self):
        with self.cond:
            self.stop = True
            self.cond.notify_all()

    def one(self, path, body):
        status, hdrs, data = self.wconn.request(
            "PUT", path, body=body, headers={"Content-Type": "application/json"})
        t_ack = time.perf_counter()
        if not 200 <= status <= 299:
            return None, f"write answered {status}: {data[:200]!r}"
        version = hdrs.get("X-Meridian-Version")
        if not version:
            return None, "write answer has no X-Meridian-Version"
        s = Sample(path, version, t_ack)
        with self.cond:
            self.sample = s
            self.gen += 1
            self.cond.notify_all()
        s.done.wait(self.timeout_s + 1.0)
        # let pollers that are mid-request notice, then account
        s.done.set()
        with self.lock:
            if len(s.seen) < len(self.readers):
                missing = [n for n, _ in self.readers if n not in s.seen]
                return s, f"not applied in {', '.join(missing)} after {self.timeout_s:.0f} s " \
                          f"(polls: {s.statuses}, other versions: {s.other})"
        return s, None


def _doc(doc_id, n, size):
    head = ('{"id":"%s","tenantId":"tenant-%d","version":%d,"status":"open","pad":"'
            % (doc_id, n % 16, n))
    return (head + "x" * max(0, size - len(head) - 2) + '"}').encode()


def _pct(sorted_vals, q):
    """Nearest-rank percentile of a sorted list."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, int(-(-q * len(sorted_vals) // 1)) - 1))
    return sorted_vals[k]


def cmd_lag(args):
    rtt_ms = args.rtt_ms
    target_ms = 1.2 * rtt_ms + 5.0
    all_regions = [args.write] + args.read
    random.seed(args.seed)
    tag = args.tag or f"lag{os.getpid()}"

    bench = LagBench(args)
    errors = []
    try:
        # warm-up: connections to every node and the peer links are up
        for i in range(args.warmup):
            bench.one(f"{args.route}{tag}-warm-{i}", _doc(f"{tag}-warm-{i}", i, args.bytes))
            time.sleep(args.spacing_ms / 1000.0)

        before = {n: fetch_metrics(u) for n, u in all_regions}
        lat, per_region = [], {n: [] for n, _ in args.read}
        t_start = time.monotonic()
        for i in range(args.samples):
            doc_id = f"{tag}-{i}"
            s, err = bench.one(f"{args.route}{doc_id}", _doc(doc_id, i, args.bytes))
            if err:
                errors.append(f"sample {i}: {err}")
            elif s is not None:
                lat.append((max(s.seen.values()) - s.t_ack) * 1000.0)
                for n in s.seen:
                    per_region[n].append((s.seen[n] - s.t_ack) * 1000.0)
                if s.other:
                    errors.append(f"sample {i}: saw other versions before {s.version}: {s.other}")
            # spaced apart, at a random phase so no periodic timer aliases
            lo = args.spacing_ms * 0.5
            time.sleep(random.uniform(lo, args.spacing_ms * 1.5) / 1000.0)
        elapsed = time.monotonic() - t_start
        time.sleep(0.2)
        after = {n: fetch_metrics(u) for n, u in all_regions}
    finally:
        bench.close()

    res = {}
    lat.sort()
    p = {q: _pct(lat, q) for q in (0.5, 0.9, 0.99, 1.0)}
    print(f"    {len(lat)} writes at {bench.writer_name}, {len(errors)} failed, "
          f"over {elapsed:.0f} s; polled {args.pollers} x every {args.poll_ms:g} ms "
          f"per region")
    for n, v in per_region.items():
        v.sort()
        print(f"    applied in {n:<8} p50 {_pct(v, 0.5):7.1f} ms   p99 {_pct(v, 0.99):7.1f} ms"
              f"   max {_pct(v, 1.0):7.1f} ms")
    print(f"    applied everywhere p50 {p[0.5]:7.1f} ms   p90 {p[0.9]:7.1f} ms   "
          f"p99 {p[0.99]:7.1f} ms   max {p[1.0]:7.1f} ms")
    ratio = p[0.99] / target_ms if lat else float("nan")
    verdict = "met" if ratio <= 1.0 else "NOT met"
    print(f"    ratio p99 / (1.2 x {rtt_ms:g} ms RTT + 5 ms = {target_ms:g} ms) = {ratio:.2f}x "
          f"(target <= 1.00x: {verdict})")
    res.update(LAG_N=len(lat), LAG_FAILED=len(errors), LAG_P50=f"{p[0.5]:.1f}",
               LAG_P99=f"{p[0.99]:.1f}", LAG_MAX=f"{p[1.0]:.1f}", LAG_TARGET=f"{target_ms:g}",
               LAG_RATIO=f"{ratio:.2f}")

    # cross-check: Meridian's own histogram, writes from the writer only
    print(f"    cross-check, meridian_replication_seconds{{source=\"{bench.writer_name}\"}} "
          f"(origin HLC -> applied), this phase only:")
    worst = None
    for n, _ in all_regions:
        hb = histogram(before[n], "meridian_replication_seconds",
                       source=bench.writer_name, target=n)
        ha = histogram(after[n], "meridian_replication_seconds",
                       source=bench.writer_name, target=n)
        d = {le: ha.get(le, 0.0) - hb.get(le, 0.0) for le in ha}
        cnt = d.get(float("inf"), 0.0)
        q50, q99 = hist_quantile(0.5, d), hist_quantile(0.99, d)
        role = "(writer: its own write confirmed back)" if n == bench.writer_name else ""
        if q99 is None:
            print(f"      at {n:<8} no observations {role}")
            continue
        shares = "/".join(f"{100 * d.get(le, 0.0) / cnt:.0f}" for le in (0.025, 0.05, 0.1))
        polled = ""
        if per_region.get(n):
            v = per_region[n]
            polled = "  (polled: " + "/".join(
                f"{100 * sum(1 for x in v if x <= ms) / len(v):.0f}" for ms in (25, 50, 100)) + ")"
        print(f"      at {n:<8} n={cnt:<4.0f} p50 ~{q50 * 1000:5.1f} ms  p99 ~{q99 * 1000:5.1f} ms"
              f"  <=25/50/100 ms: {shares} %{polled} {role}".rstrip())
        if n != bench.writer_name:
            worst = q99 if worst is None else max(worst, q99)
    if worst is not None:
        res["HIST_P99"] = f"{worst * 1000:.1f}"
        print(f"      worst p99 over the other regions ~{worst * 1000:.1f} ms (interpolated inside "
              f"the 25/50/100 ms buckets: coarse; the shares per bucket are exact)")
    for e in errors[:10]:
        print(f"    ! {e}")
    if len(errors) > 10:
        print(f"    ! ... {len(errors) - 10} more")
    if args.out:
        with open(args.out, "w") as f:
            for k, v in res.items():
                f.write(f"{k}={v}\n")
    return 0


def cmd_relay_rtt(args):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def echo():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                try:
                    d = c.recv(65536)
                except OSError:
                    d = b""
                if not d:
                    c.close()
                    break
                c.sendall(d)

    threading.Thread(target=echo, daemon=True).start()
    relay = subprocess.Popen(
        [sys.executable, args.relay, "--listen", "127.0.0.1:0",
         "--target", f"127.0.0.1:{srv.getsockname()[1]}", "--delay-ms", str(args.delay_ms)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = json.loads(relay.stdout.readline())["port"]
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        msg, ts = b"x" * 1200, []
        for _ in range(args.samples):
            t = time.perf_counter()
            s.sendall(msg)
            got = 0
            while got < len(msg):
                d = s.recv(65536)
                if not d:
                    raise OSError("relay closed the connection")
                got += len(d)
            ts.append((time.perf_counter() - t) * 1000.0)
            time.sleep(random.uniform(0.01, 0.03))
        s.close()
        ts.sort()
        print(f"relay-rtt {_pct(ts, 0.5):.1f} {_pct(ts, 0.99):.1f} {ts[-1]:.1f}")
    finally:
        relay.terminate()
        try:
            relay.wait(5)
        except subprocess.TimeoutExpired:
            relay.kill()
            relay.wait()
        srv.close()
    return 0


def main(argv):
    ap = argparse.ArgumentParser(prog="replclient", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("ports")
    p.add_argument("n", type=int)
    p.set_defaults(fn=cmd_ports)

    p = sub.add_parser("drain")
    p.add_argument("--region", type=_named, action="append", required=True)
    p.add_argument("--timeout", type=float, default=300.0)
    p.set_defaults(fn=cmd_drain)

    p = sub.add_parser("lag")
    p.add_argument("--write", type=_named, required=True, help="NAME=URL of the writing region")
    p.add_argument("--read", type=_named, action="append", required=True,
                   help="NAME=URL of every other region")
    p.add_argument("--route", default="/orders/")
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--bytes", type=int, default=1024)
    p.add_argument("--poll-ms", type=float, default=2.0)
    p.add_argument("--pollers", type=int, default=3)
    p.add_argument("--spacing-ms", type=float, default=60.0,
                   help="mean pause between samples (uniform 0.5x..1.5x)")
    p.add_argument("--timeout", type=float, default=10.0, help="per sample, seconds")
    p.add_argument("--rtt-ms", type=float, required=True)
    p.add_argument("--tag", default="")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out")
    p.set_defaults(fn=cmd_lag)

    p = sub.add_parser("relay-rtt")
    p.add_argument("--relay", required=True, help="path of tests/wan/wanrelay.py")
    p.add_argument("--delay-ms", type=float, required=True)
    p.add_argument("--samples", type=int, default=100)
    p.set_defaults(fn=cmd_relay_rtt)

    args = ap.parse_args(argv)
    # SIGTERM (the benchmark's cleanup) unwinds like an exception, so that
    # the relay process of relay-rtt is stopped by its `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
