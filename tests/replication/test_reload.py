"""Configuration reload (issue 7, items 1 and 2): SIGHUP and a changed file
both reload; a valid file is swapped in without failing a request in flight;
an invalid one is refused (log, metric) and the running configuration keeps
serving; `check-config` gives the same verdict offline."""

import os
import signal
import subprocess
import threading
import time

import replication_cluster as rc

h = rc.h
EXTRA = {"name": "scratch", "route": "/scratch/", "partition_key": "/k",
         "conflict_resolution": {"mode": "last_writer_wins"}}


def reloads(region, result):
    return h.metric_sum(region.metrics(), "meridian_config_reloads_total", result=result)


def rewrite(cluster, region, containers=None, limits=None, account=None, text=None):
    """Writes region's configuration file anew (same topology)."""
    if text is None:
        saved = (cluster.containers, cluster.limits, cluster.account)
        cluster.containers = containers or saved[0]
        cluster.limits = dict(saved[1], **(limits or {}))
        cluster.account = account or saved[2]
        peer = (f"127.0.0.1:{region.peer_port}" if region is cluster.hub
                else f"127.0.0.1:{cluster.relays[region.name].port}")
        text = cluster._config(peer)
        cluster.containers, cluster.limits, cluster.account = saved
    tmp = region.config_path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, region.config_path)  # as editors and config managers do
    return text


def test_reloads_under_load_fail_no_request(make_cluster):
    cluster = make_cluster()
    stop = threading.Event()
    failures, done = [], [0]

    def client(region, n):
        token = None
        i = 0
        while not stop.is_set():
            key = f"{region.name}-{n}-{i % 5}"
            hdrs = {"X-Session-Token": token} if token else {}
            try:
                w = region.put(key, {"tenantId": "t", "version": i}, headers=hdrs, timeout=10)
                if w.status not in (200, 201):
                    failures.append(("PUT", region.name, w.status, w.body[:200]))
                token = w.header("x-session-token") or token
                g = region.get(key, headers={"X-Session-Token": token}, timeout=10)
                if g.status != 200 or rc.user_fields(g.json())["version"] != i:
                    failures.append(("GET", region.name, g.status, g.body[:200]))
                done[0] += 2
            except Exception as e:  # a reset or a timeout is a failed request
                failures.append(("EXC", region.name, repr(e)))
            i += 1

    threads = [threading.Thread(target=client, args=(r, n)) for r in cluster.regions
               for n in range(2)]
    for t in threads:
        t.start()
    try:
        for k in range(12):
            for r in cluster.regions:
                with_extra = rc.CONTAINER, EXTRA
                rewrite(cluster, r, containers=list(with_extra) if k % 2 else [rc.CONTAINER],
                        limits={"idle_timeout_ms": 30000 + k},
                        account={"multi_region_writes": True,
                                 "consistency": "session" if k % 3 else "eventual"})
                r.proc.send_signal(signal.SIGHUP)
            time.sleep(0.25)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not failures, f"{len(failures)} failed of {done[0]}: {failures[:5]}"
    assert done[0] > 100, done
    for r in cluster.regions:
        assert reloads(r, "refused") == 0, r.log()
        assert reloads(r, "ok") >= 12, r.name
    assert "configuration reloaded (SIGHUP)" in cluster.hub.log()


def test_invalid_files_are_refused_and_the_running_one_keeps_serving(make_cluster):
    cluster = make_cluster()
    west = cluster["west"]
    good = west.config_text
    bad_files = {
        "syntax": (good + "limits: [oops\n", "expected"),
        "strong": (good.replace("consistency: session", "consistency: strong"),
                   "'strong' is not allowed with multi_region_writes: true"),
        "mode": (good.replace("{ mode: last_writer_wins, path: /version }", "{ mode: custom }"),
                   "containers[0].conflict_resolution: 'orders' was created with another"),
        "path": (good.replace("{ mode: last_writer_wins, path: /version }",
                              "{ mode: last_writer_wins, path: /rev }"),
                 "containers[0].conflict_resolution: 'orders' was created with another"),
        "region": (good.replace(f"listen: 127.0.0.1:{west.port}",
                                f"listen: 127.0.0.1:{west.port + 1}"),
                   "regions[1].listen: changed"),
    }
    for n, (name, (text, reason)) in enumerate(bad_files.items(), start=1):
        assert text != good, name
        mark = west.log_mark()
        rewrite(cluster, west, text=text)
        west.proc.send_signal(signal.SIGHUP)
        # The watcher may refuse the file too, on a tick before the signal:
        # wait for the SIGHUP's refusal, which names the reason.
        h.poll(lambda: any("reload refused (SIGHUP), still serving the previous one" in ln
                           and reason in ln
                           for ln in west.log_lines_since(mark)),
               timeout=5, what=f"{name} refused on SIGHUP, naming {reason!r}")
        assert reloads(west, "refused") >= n, name
        r = west.put(f"after-{name}", {"tenantId": "t", "version": 1})
        assert r.status in (200, 201), f"{name}: the running configuration stopped serving: {r}"
        if name in ("syntax", "strong"):
            off = subprocess.run([h.meridian_bin(), "check-config", str(west.config_path)],
                                 capture_output=True, text=True, timeout=10)
            assert off.returncode == 1 and reason in off.stderr, (name, off.stderr)
    assert reloads(west, "ok") == 0

    # A valid file: a new container, picked up because the file changed (no signal).
    text = rewrite(cluster, west, containers=[rc.CONTAINER, EXTRA])
    h.poll(lambda: reloads(west, "ok") >= 1, timeout=5, what="the changed file reloaded")
    assert "configuration reloaded (the file changed)" in west.log()
    r = west.put("s1", {"k": "x"}, route="/scratch/")
    assert r.status in (200, 201) and r.header("x-meridian-version"), r
    west.config_text = text


def test_a_new_backend_url_is_picked_up_by_a_reload(make_cluster, tmp_path):
    """West's HTTP backend moves to another nginx: after the reload, new
    writes land there; requests already in flight finish on the old one."""
    cluster = make_cluster(backend="nginx")
    west = cluster["west"]
    assert west.put("old", {"tenantId": "t", "version": 1}).status in (200, 201)
    moved = rc.WebDavStore(tmp_path / "nginx-west-2", "west-2", h.free_ports(1)[0])
    moved.start()
    try:
        text = west.config_text.replace(cluster.stores["west"].url, moved.url)
        assert text != west.config_text
        rewrite(cluster, west, text=text)
        west.proc.send_signal(signal.SIGHUP)
        h.poll(lambda: reloads(west, "ok") >= 1, timeout=5, what="the reload")
        assert f"{moved.url} from now on" in west.log()
        assert west.put("new", {"tenantId": "t", "version": 1}).status in (200, 201)
        got = h.request(moved.port, "GET", "/orders/new", timeout=5)
        assert got.status == 200, "the write went to the new backend"
        assert h.request(moved.port, "GET", "/orders/old", timeout=5).status == 404
        west.config_text = text
    finally:
        moved.stop()
        moved.finalize()
