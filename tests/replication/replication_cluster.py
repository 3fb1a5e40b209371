"""Multi-region harness: three real `meridian` processes on loopback, one WAN
relay (tests/wan/wanrelay.py) between each satellite and the hub, and, when
asked, one nginx WebDAV store per region as the backend.

Builds on tests/blackbox/meridian_harness.py (free ports, process groups,
HTTP client, log tails, the nginx process wrapper); imported from there, not
copied. Every process registers in meridian_harness.ACTIVE, so the conftest
of this folder prints every log when a test fails.

Topology. All regions share one configuration, except that each satellite
gets its own copy in which the hub's `peer_listen` is the address of that
satellite's relay. The hub binds its real peer port; a satellite ships its
writes to, and follows the confirmed log from, "the hub" = its relay. So one
satellite can be delayed or cut off alone:

    west  --ship/follow-->  relay[west]  --> hub peer port (east)
    south --ship/follow-->  relay[south] --> hub peer port (east)

Topology changes (issue 7: add_region, remove_region, reorder). Every node
is given a new file naming each region at its real peer address (the relays
keep running, unused) and is reloaded with SIGHUP; the hub is regions[0] of
the new list. A removed region is kept (Cluster.removed, cluster[name]) so
the test can still ask it things and so that finalize() stops it.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "blackbox"))
sys.path.insert(0, str(HERE.parent / "wan"))

import meridian_harness as h  # noqa: E402
from wanrelay import WanRelay  # noqa: E402

REGION_NAMES = ("east", "west", "south")
ROUTE = "/orders/"
CONTAINER = {"name": "orders", "route": ROUTE, "partition_key": "/tenantId",
             "conflict_resolution": {"mode": "last_writer_wins", "path": "/version"}}
NODE_LIMITS = {"drain_timeout_ms": 2000}


# ------------------------------------------------------------------ backends

class WebDavStore(h.Nginx):
    """nginx as a region's WebDAV document store: PUT/DELETE/GET of files
    under www/ (containers map to folders), nothing else. Reuses the blackbox
    nginx wrapper for ports, process group and logs; only its content and
    configuration differ."""

    label = "nginx webdav"

    def __init__(self, base, region, port):
        self.label = f"nginx webdav {region}"
        super().__init__(base)
        self.port = port  # chosen together with the cluster's other ports
        self._write_conf()

    def _write_content(self):
        (self.www / "health").write_text("ok")

    def _write_conf(self):
        b = self.base
        conf = h.nginx_conf_head(b) + f"""
  default_type application/json;
  keepalive_requests 100000;
  server {{
    listen 127.0.0.1:{self.port};
    root {b}/www;
    location / {{
      dav_methods PUT DELETE;
      create_full_put_path on;
      client_max_body_size 10m;
      log_not_found off;
    }}
  }}
}}
"""
        self.conf_path = b / "nginx.conf"
        self.conf_path.write_text(conf)

    def _ready(self):
        if not self.alive():
            raise AssertionError(f"nginx exited: {self.log()}")
        return h.request(self.port, "GET", "/health", timeout=2).status == 200


# ------------------------------------------------------------------ one region

class Region(h.Proc):
    """One meridian node serving one region of the cluster."""

    def __init__(self, base, name, rid, backend_url, ports):
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        super().__init__(self.base / f"meridian-{name}.log")
        self.name = name
        self.id = rid
        self.label = f"meridian {name} (id {rid})"
        self.port, self.peer_port = ports
        self.backend = backend_url
        self.data_dir = self.base / "data" / name
        self.config_path = self.base / f"meridian-{name}.yaml"
        self.config_text = ""
        self.starts = 0

    # -- lifecycle

    def start(self, timeout=20.0):
        binary = h.meridian_bin()
        if not os.access(binary, os.X_OK):
            raise AssertionError(f"meridian binary not found at {binary}: build it with "
                                 "`cmake -S . -B build && cmake --build build` or set MERIDIAN_BIN")
        self.starts += 1
        if getattr(self, "log_file", None):
            self.log_file.close()  # a restart reopens the log in append mode
        self.spawn([binary, "--config", str(self.config_path), "--region", self.name])
        h.poll(self._healthy, timeout=timeout, what=f"{self.label} /_meridian/health")
        return self

    def _healthy(self):
        if not self.alive():
            raise AssertionError(f"{self.label} exited with {self.proc.returncode}; "
                                 f"log:\n{self.log()}\nconfig:\n{self.config_text}")
        try:
            return h.request(self.port, "GET", "/_meridian/health", timeout=2).status == 200
        except OSError:
            return False

    def kill9(self):
        """SIGKILL to the meridian process itself (no wrapper in between)."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self):
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill9()

    def sanitizer_report(self):
        text = h.tail(self.log_path, 200000)
        return text if any(m in text for m in h.SANITIZER_MARKERS) else None

    # -- client side

    def request(self, method, path, body=None, headers=None, timeout=10.0):
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        hdrs.update(headers or {})
        return h.request(self.port, method, path, body=body, headers=hdrs, timeout=timeout)

    def put(self, doc_id, doc, route=ROUTE, **kw):
        return self.request("PUT", route + doc_id, body=doc, **kw)

    def delete(self, doc_id, route=ROUTE, **kw):
        return self.request("DELETE", route + doc_id, **kw)

    def get(self, doc_id, route=ROUTE, **kw):
        return self.request("GET", route + doc_id, **kw)

    def changes(self, since=0, limit=None, route=ROUTE):
        q = f"since={since}" + (f"&limit={limit}" if limit else "")
        r = self.request("GET", f"{route}_changes?{q}")
        assert r.status == 200, f"{self.name} change feed: {r}"
        return r.json()

    def all_changes(self, page=1000, route=ROUTE):
        """Every entry of this region's change feed, paging with since=last."""
        out, since = [], 0
        while True:
            feed = self.changes(since=since, limit=page, route=route)
            out.extend(feed["changes"])
            if not feed["changes"] or feed["last"] <= since:
                return out, feed
            since = feed["last"]

    def peer_status(self):
        r = h.request(self.peer_port, "GET", "/_meridian/v1/status", timeout=5)
        assert r.status == 200, f"{self.name} peer status: {r}"
        return r.json()

    def confirmed_log(self, since=0, idle=1.0, limit_s=10.0):
        """Diagnostics: the lines of this node's confirmed-log stream
        (GET /_meridian/v1/log on the peer port), read until the stream has
        been idle (heartbeats aside) for `idle` seconds; parsed JSON objects."""
        out = []
        try:
            with h.RawConn(self.peer_port, timeout=idle) as c:
                c.send(f"GET /_meridian/v1/log?since={since} HTTP/1.1\r\nHost: x\r\n\r\n")
                head = c.read_head()
                if head[1] != 200:
                    return [{"error": f"log stream answered {head[1]}"}]
                chunked_body = "chunked" in str(head[3]).lower()
                deadline = time.monotonic() + limit_s
                data, c.buf = c.buf, b""   # what came with the head
                while time.monotonic() < deadline:
                    try:
                        c._fill()
                    except (OSError, EOFError):
                        break
                    data += c.buf
                    c.buf = b""
                if chunked_body:  # good enough for diagnostics: drop chunk-size lines
                    lines = [ln for ln in data.split(b"\r\n") if ln.startswith(b"{")]
                else:
                    lines = data.split(b"\n")
                for ln in lines:
                    ln = ln.strip()
                    if ln.startswith(b"{"):
                        try:
                            out.append(json.loads(ln))
                        except ValueError:
                            pass
        except OSError as e:
            out.append({"error": repr(e)})
        return out

    def metrics(self):
        r = h.request(self.port, "GET", "/_meridian/metrics", timeout=5)
        assert r.status == 200, r
        return h.parse_metrics(r.body.decode())


def config_reloads(region, result):
    """meridian_config_reloads_total{result=...} of one node ("ok" or "refused")."""
    return h.metric_sum(region.metrics(), "meridian_config_reloads_total", result=result)


def user_fields(doc):
    """The document as the application wrote it: without Meridian's tags."""
    return {k: v for k, v in doc.items() if k not in ("_meridian", "_ts")}


# ------------------------------------------------------------------ the cluster

class Cluster:
    """east (hub, id 1), west (id 2), south (id 3) with a WanRelay in front of
    the hub's peer port for each satellite. backend: 'embedded' or 'nginx'."""

    def __init__(self, base, backend="embedded", delay_ms=0, containers=None, limits=None,
                 account=None):
        self.base = Path(base)
        self.account = account
        self.containers = containers or [CONTAINER]
        self.limits = dict(NODE_LIMITS, **(limits or {}))
        self.backend_kind = backend
        self.stores = {}
        self.regions = []
        self.relays = {}
        self.delay_ms = delay_ms
        # All ports in one go, so that no two of them can be the same.
        ports = h.free_ports(3 * len(REGION_NAMES))
        for i, name in enumerate(REGION_NAMES):
            url = "embedded"
            if backend == "nginx":
                store = WebDavStore(self.base / f"nginx-{name}", name, ports[3 * i + 2])
                self.stores[name] = store
                url = store.url
            self.regions.append(Region(self.base, name, i + 1, url, ports[3 * i:3 * i + 2]))
        self.by_name = {r.name: r for r in self.regions}
        self.removed = []   # regions taken out of the file, still to be stopped

    @property
    def hub(self):
        return self.regions[0]

    @property
    def satellites(self):
        return self.regions[1:]

    def __getitem__(self, name):
        return self.by_name[name]

    def _config(self, hub_peer):
        regions = []
        for r in self.regions:
            peer = hub_peer if r is self.hub else f"127.0.0.1:{r.peer_port}"
            regions.append({"name": r.name, "id": r.id, "listen": f"127.0.0.1:{r.port}",
                            "peer_listen": peer, "backend": r.backend,
                            "data_dir": str(r.data_dir)})
        return h.render_config(regions, containers=self.containers, limits=self.limits,
                               account=self.account,
                               log={"level": "info", "access": False})

    def start(self):
        for store in self.stores.values():
            store.start()
        for sat in self.satellites:
            self.relays[sat.name] = WanRelay("127.0.0.1", self.hub.peer_port,
                                             delay_ms=self.delay_ms).start()
        for r in self.regions:
            if r is self.hub:
                r.config_text = self._config(f"127.0.0.1:{r.peer_port}")
            else:
                r.config_text = self._config(f"127.0.0.1:{self.relays[r.name].port}")
            r.config_path.write_text(r.config_text)
        for r in self.regions:
            r.start()
        # A region with an empty data directory takes writes once it has
        # heard from the hub (it may be joining a running cluster): tests
        # that cut a region off must not do so before that.
        for r in self.regions:
            h.poll(lambda: h.request(r.port, "GET", "/_meridian/ready", timeout=2).status == 200,
                   timeout=20, what=f"{r.label} /_meridian/ready")
        return self

    def set_delay(self, ms):
        for relay in self.relays.values():
            relay.set_delay(ms)

    # -- topology changes (issue 7)

    def topology_config(self, names=None):
        """The YAML every node reads after a topology change: the regions
        `names` (default: the current list) in that order, the first being
        the hub, each at its real peer address (no relay in between)."""
        regions = [self.by_name[n] for n in (names or [r.name for r in self.regions])]
        return h.render_config(
            [{"name": r.name, "id": r.id, "listen": f"127.0.0.1:{r.port}",
              "peer_listen": f"127.0.0.1:{r.peer_port}", "backend": r.backend,
              "data_dir": str(r.data_dir)} for r in regions],
            containers=self.containers, limits=self.limits, account=self.account,
            log={"level": "info", "access": False})

    @staticmethod
    def write_config(region, text):
        """Replaces region's configuration file atomically (write, rename: as
        editors and config managers do) and remembers the text."""
        tmp = region.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, region.config_path)
        region.config_text = text

    def reload(self, texts, timeout=15.0):
        """Writes {region: text} and reloads each of those regions that is
        alive (SIGHUP), then waits until meridian_config_reloads_total
        {result="ok"} has grown on each of them. A refused reload fails at
        once with the node's reason. A dead region only gets its file."""
        alive = [r for r in texts if r.alive()]
        before = {r.name: (config_reloads(r, "ok"), config_reloads(r, "refused")) for r in alive}
        for r, text in texts.items():
            self.write_config(r, text)
        for r in alive:
            r.proc.send_signal(signal.SIGHUP)

        def reloaded(r):
            ok0, refused0 = before[r.name]
            if not r.alive():
                raise AssertionError(f"{r.label} exited after the reload; log:\n{r.log()}")
            if config_reloads(r, "refused") > refused0:
                why = [ln for ln in r.log().splitlines() if "reload refused" in ln]
                raise AssertionError(f"{r.label} refused the new configuration: "
                                     f"{why[-1:] or r.log()}\nconfig:\n{r.config_text}")
            return config_reloads(r, "ok") > ok0

        deadline = time.monotonic() + timeout
        waiting = list(alive)
        while waiting:
            waiting = [r for r in waiting if not reloaded(r)]
            if waiting and time.monotonic() > deadline:
                raise AssertionError(f"no reload counted within {timeout}s on "
                                     f"{[r.name for r in waiting]}; status: {self.statuses()}")
            if waiting:
                time.sleep(0.05)
        return alive

    def change_topology(self, names, timeout=15.0):
        """Makes `names` the region list (the first one the hub): every node
        of the old and the new list, and every removed node still running,
        gets the same new file and reloads. Regions left out move to
        self.removed (still reachable as cluster[name], still stopped by
        finalize); self.regions, hub and satellites follow the new list."""
        names = list(names)
        unknown = [n for n in names if n not in self.by_name]
        assert not unknown, f"unknown regions {unknown}"
        assert len(set(names)) == len(names), names
        text = self.topology_config(names)
        targets = {}
        for r in [self.by_name[n] for n in names] + self.regions + self.removed:
            if r.name in names or r in self.regions or r.alive():
                targets[r] = text  # a region removed earlier and dead is left alone
        gone = [r for r in self.regions if r.name not in names]
        self.regions = [self.by_name[n] for n in names]
        self.removed = [r for r in self.removed if r.name not in names] + gone
        return self.reload(targets, timeout=timeout)

    def add_region(self, name, rid, start=True, timeout=20.0):
        """Appends a new region (fresh ports and data dir; the cluster's
        backend kind, a new nginx store if that is nginx): the running nodes
        are given the new list and reloaded first, then the new node is
        started (start() waits for /_meridian/health, not ready: a node that
        joins is not ready until it has caught up). Returns the Region."""
        assert name not in self.by_name, f"{name} is already a region of this cluster"
        assert all(r.id != rid for r in self.by_name.values()), f"id {rid} is taken"
        ports = h.free_ports(3)
        url = "embedded"
        if self.backend_kind == "nginx":
            store = WebDavStore(self.base / f"nginx-{name}", name, ports[2]).start()
            self.stores[name] = store
            url = store.url
        r = Region(self.base, name, rid, url, ports[:2])
        assert not r.data_dir.exists(), f"{r.data_dir} is not fresh"
        self.by_name[name] = r
        self.change_topology(self.names() + [name], timeout=timeout)
        if start:
            r.start(timeout=timeout)
        return r

    def remove_region(self, name, timeout=15.0):
        """Takes `name` out of the list; the rest keep their order, so
        removing regions[0] makes the next region the hub. The removed node,
        if it still runs, reads the same file (it retires); a dead one is
        not signalled. Returns the removed Region."""
        assert name in [r.name for r in self.regions], f"{name} is not in {self.names()}"
        self.change_topology([r.name for r in self.regions if r.name != name], timeout=timeout)
        return self.by_name[name]

    def reorder(self, names, timeout=15.0):
        """The same regions in another order (the first one becomes hub)."""
        assert sorted(names) == sorted(self.names()), (names, self.names())
        return self.change_topology(names, timeout=timeout)

    def names(self):
        return [r.name for r in self.regions]

    def statuses(self, regions=None):
        """{name: peer status or the error asking it}, for messages; includes
        the removed regions by default."""
        out = {}
        for r in regions or (self.regions + self.removed):
            try:
                out[r.name] = r.peer_status()
            except Exception as e:
                out[r.name] = repr(e) if r.alive() else f"not running ({e!r})"
        return out

    def wait_state(self, region, state, hub=None, hub_name=None, timeout=20.0):
        """Polls region's peer status until its "state" is `state` (and,
        when given, "hub" is `hub` and "hub_name" is `hub_name`); returns it."""
        want = {"state": state}
        if hub is not None:
            want["hub"] = hub
        if hub_name is not None:
            want["hub_name"] = hub_name
        last = [None]

        def reached():
            st = region.peer_status()
            last[0] = st
            return st if all(st.get(k) == v for k, v in want.items()) else None
        try:
            return h.poll(reached, timeout=timeout, interval=0.05,
                          what=f"{region.name} to report {want}")
        except AssertionError as e:
            raise AssertionError(f"{e}; last status of {region.name}: {last[0]}; "
                                 f"all: {self.statuses()}") from None

    def finalize(self):
        """Stops everything, whatever state it is in; returns sanitizer reports."""
        reports = []
        for r in self.regions + self.removed:
            try:
                r.stop()
            except Exception:
                pass
            rep = r.sanitizer_report()
            if rep:
                reports.append(f"{r.label}:\n{rep}")
            r.finalize()
        for relay in self.relays.values():
            try:
                relay.stop()
            except Exception:
                pass
        for store in self.stores.values():
            try:
                store.stop()
            finally:
                store.finalize()
        return reports

    # -- convergence helpers

    def hub_crts(self):
        """The head of the hub's confirmed log (every decision it has made)."""
        return self.hub.peer_status()["stored_crts"]

    def wait_applied(self, timeout=15.0):
        """Waits until every region has applied the hub's confirmed log as it
        stood when called; the hub must already have decided what it needs."""
        target = self.hub_crts()
        h.poll(lambda: all(r.peer_status()["applied_crts"] >= target for r in self.regions),
               timeout=timeout, what=f"every region to apply crts {target}")
        return target

    def wait_quiet(self, timeout=30.0, stable_for=6.0):
        """Waits until the hub has decided every write the satellites made and
        every region (the hub included: it applies its own log to its
        backend) has applied the hub's confirmed log up to its head.

        A satellite is done when the hub has decided up to its last LSN
        (status shipped_upto == next_lsn - 1); an aborted write (backend
        non-2xx, or an intent recovery found not applied) takes an LSN that is
        never shipped, so a satellite whose decided mark and LSN have not
        moved for `stable_for` seconds, and that has no batch on its way to
        the hub (status `shipping`), counts as done too (longer than the
        shipper's longest retry backoff, 5 s, so a retrying shipper is not
        mistaken for a finished one; a batch of resolver conflicts can take
        longer than that at the hub under a sanitizer)."""
        deadline = time.monotonic() + timeout
        since = {}  # satellite -> (shipped_upto, next_lsn, first seen at)
        while True:
            try:
                st = {r.name: r.peer_status() for r in self.regions}
                head = st[self.hub.name]["stored_crts"]
                applied = all(s["applied_crts"] >= head for s in st.values())
                # After a topology change: a region still joining, or a hub
                # still taking over, has not settled whatever its marks say.
                settling = (st[self.hub.name].get("hub") is False or
                            any(s.get("state") in ("joining", "taking_over")
                                for s in st.values()))
                applied = applied and not settling
                now = time.monotonic()
                shipped = True
                for r in self.satellites:
                    s = st[r.name]
                    mark = (s["shipped_upto"], s["next_lsn"])
                    if since.get(r.name, (None,))[0] != mark:
                        since[r.name] = (mark, now)
                    if s["shipped_upto"] < s["next_lsn"] - 1 and (
                            s["shipping"] or now - since[r.name][1] < stable_for):
                        shipped = False
                if applied and shipped and self.hub_crts() == head:
                    return head
            except (OSError, AssertionError):
                st = None
            if time.monotonic() > deadline:
                raise AssertionError(f"cluster did not settle within {timeout}s; status: "
                                     f"{[self._status_or_err(r) for r in self.regions]}")
            time.sleep(0.05)

    @staticmethod
    def _status_or_err(r):
        try:
            return {r.name: r.peer_status()}
        except Exception as e:
            return {r.name: repr(e)}

    def read_all(self, doc_id, route=ROUTE):
        """{region: (status, user fields or None, response)}."""
        out = {}
        for r in self.regions:
            resp = r.get(doc_id, route=route)
            doc = user_fields(resp.json()) if resp.status == 200 else None
            out[r.name] = (resp.status, doc, resp)
        return out

    def wait_same(self, doc_id, timeout=10.0, confirmed=True, route=ROUTE):
        """Polls until every region answers the same status and body for
        doc_id (and, for 200s, X-Meridian-Confirmed: true); returns
        (status, doc, {region: response})."""
        def same():
            seen = self.read_all(doc_id, route=route)
            vals = {(s, json.dumps(d, sort_keys=True)) for s, d, _ in seen.values()}
            if len(vals) != 1:
                return None
            st = next(iter(vals))[0]
            if confirmed and st == 200 and any(
                    resp.header("x-meridian-confirmed") != "true" for _, _, resp in seen.values()):
                return None
            return seen
        try:
            seen = h.poll(same, timeout=timeout, interval=0.05,
                          what=f"{doc_id!r} identical in every region")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.explain(doc_id, route=route)}") from None
        s, d, _ = next(iter(seen.values()))
        return s, d, {k: v[2] for k, v in seen.items()}

    def explain(self, doc_id, route=ROUTE):
        """Diagnostics for a failure message: what each region holds for
        doc_id and every decision the hub made on it."""
        lines = [f"--- {doc_id}"]
        for r in self.regions:
            try:
                resp = r.get(doc_id, route=route)
                body = resp.json() if resp.status == 200 else None
                lines.append(f"  {r.name}: {resp.status} version={resp.header('x-meridian-version')} "
                             f"confirmed={resp.header('x-meridian-confirmed')} "
                             f"doc={body and user_fields(body)} meta={body and body.get('_meridian')}")
            except Exception as e:
                lines.append(f"  {r.name}: {e!r}")
        for e in self.hub.confirmed_log(idle=0.3, limit_s=3):
            w = e.get("write") or {}
            if w.get("id") == doc_id:
                lines.append(f"  hub decided crts {e['crts']}: {w['origin']}:{w['lsn']} "
                             f"hlc={w['hlc']} base={w['base']} value={w.get('value')} "
                             f"delete={w['delete']} -> {e['outcome']} "
                             f"conflict={e.get('conflict')} "
                             f"head={(e.get('head') or {}).get('version')}")
        return "\n".join(lines)

    def dump(self, region, ids):
        """{id: user fields or None (404)} of the given ids in one region,
        plus the full metadata of each found document."""
        out = {}
        for doc_id in sorted(ids):
            resp = region.get(doc_id)
            assert resp.status in (200, 404), f"{region.name} GET {doc_id}: {resp}"
            out[doc_id] = resp.json() if resp.status == 200 else None
        return out


# One-way delay the WAN relays add between each satellite and the hub while
# concurrent writes are made: far longer than the spread of the writers'
# start times, so no region sees another's write before writing its own.
WAN_DELAY_MS = 150


def concurrently(calls):
    """Runs the zero-argument callables at the same moment (one thread each,
    released together by a barrier); returns their results in order."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)
    errors = []

    def run(i, fn):
        try:
            barrier.wait(10)
            results[i] = fn()
        except BaseException as e:  # re-raised below, in the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, f"concurrent call failed: {errors!r}"
    return results


def hub_conflicts(cluster):
    """meridian_conflicts_total at the hub, all kinds and outcomes."""
    return h.metric_sum(cluster.hub.metrics(), "meridian_conflicts_total")


def concurrent_round(cluster, make_calls, min_conflicts, attempts=3):
    """Makes writes that must meet at the hub as conflicts: make_calls(n)
    returns (doc_id, [callables]) on a fresh id for attempt n; the callables
    run at the same moment (the WAN relays should add a delay). Once the
    hub has decided them, the round counts if the hub's conflict counter grew
    by min_conflicts; otherwise a writer thread started so late that it had
    already seen another region's write (a loaded machine), and the round is
    run again on a fresh id. Returns (doc_id, results)."""
    for n in range(attempts):
        before = hub_conflicts(cluster)
        doc_id, calls = make_calls(n)
        results = concurrently(calls)
        cluster.wait_quiet()
        if hub_conflicts(cluster) - before >= min_conflicts:
            return doc_id, results
        print(f"round on {doc_id} made fewer than {min_conflicts} conflicts; again")
    raise AssertionError(f"{attempts} rounds of concurrent writes never met at the hub as "
                         f"{min_conflicts} conflicts; last:\n{cluster.explain(doc_id)}")
