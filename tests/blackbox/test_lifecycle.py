"""Process lifecycle: SIGTERM drain, fast exit, check-config, start-up errors,
and the unmatched-route policy."""

import signal
import subprocess
import threading
import time

import pytest

import meridian_harness as h


class InFlight:
    """One request running in a thread; .resp or .error when done."""

    def __init__(self, node, path):
        self.resp = self.error = None
        self.thread = threading.Thread(target=self._run, args=(node, path), daemon=True)
        self.thread.start()

    def _run(self, node, path):
        try:
            self.resp = node.get(path, timeout=15)
        except Exception as e:
            self.error = e

    def done(self):
        return not self.thread.is_alive()


def test_sigterm_drains_in_flight_request_and_exits_0(meridian, fault):
    backend = fault("hold", delay=10, body=b'{"slow":"done"}')
    node = meridian(backend.url, limits={"drain_timeout_ms": 10000})
    with node.raw() as idle:
        idle.send(h.get_req("/_meridian/health"))
        assert idle.read_response().status == 200
        req = InFlight(node, "/slow")
        assert backend.received.wait(5), "request never reached the backend"
        node.signal(signal.SIGTERM)
        # new connections are refused while the request is still in flight
        h.poll(lambda: h.connect_refused(node.port), timeout=5,
               what="the listener to stop accepting")
        assert not req.done(), "in-flight request ended before the backend answered"
        assert node.alive(), "exited without waiting for the in-flight request"
        # an idle keep-alive connection is closed during drain
        assert idle.wait_closed(5), "idle keep-alive connection kept open while draining"
    backend.release.set()
    req.thread.join(10)
    assert req.error is None, req.error
    assert req.resp.status == 200 and req.resp.body == b'{"slow":"done"}', req.resp
    assert node.wait(10) == 0


def test_sigterm_when_idle_exits_0_quickly(meridian, nginx):
    node = meridian(nginx.url)
    assert node.get("/static/doc.json").status == 200
    t0 = time.monotonic()
    node.signal(signal.SIGTERM)
    assert node.wait(5) == 0
    assert time.monotonic() - t0 < 3


def test_second_sigterm_exits_at_once(meridian, fault):
    backend = fault("hold", delay=30)
    node = meridian(backend.url, limits={"drain_timeout_ms": 30000,
                                         "upstream_response_timeout_ms": 30000})
    req = InFlight(node, "/slow")
    assert backend.received.wait(5)
    node.signal(signal.SIGTERM)
    time.sleep(0.3)   # let the first signal be taken as a drain request
    assert node.alive(), "first SIGTERM did not drain: it exited with a request in flight"
    t0 = time.monotonic()
    node.signal(signal.SIGTERM)
    node.wait(3)
    assert time.monotonic() - t0 < 3


def test_sigint_exits_at_once(meridian, fault):
    backend = fault("hold", delay=30)
    node = meridian(backend.url, limits={"drain_timeout_ms": 30000,
                                         "upstream_response_timeout_ms": 30000})
    InFlight(node, "/slow")
    assert backend.received.wait(5)
    t0 = time.monotonic()
    node.signal(signal.SIGINT)
    node.wait(3)
    assert time.monotonic() - t0 < 3


def test_drain_gives_up_after_drain_timeout(meridian, fault):
    backend = fault("hold", delay=30)
    node = meridian(backend.url, limits={"drain_timeout_ms": 1000,
                                         "upstream_response_timeout_ms": 30000})
    InFlight(node, "/slow")
    assert backend.received.wait(5)
    t0 = time.monotonic()
    node.signal(signal.SIGTERM)
    node.wait(6)
    assert 0.8 <= time.monotonic() - t0 < 6


def test_embedded_write_in_flight_at_sigterm_is_kept(meridian):
    node = meridian("embedded")
    body = b'{"tenantId":"t","last":true}'
    with node.raw() as c:
        # The 100 Continue proves the request is in flight before the signal.
        c.send(f"PUT /orders/last HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
               f"Expect: 100-continue\r\n\r\n".encode())
        assert c.read_response(interim=True).status == 100
        node.signal(signal.SIGTERM)
        h.poll(lambda: h.connect_refused(node.port), timeout=5, what="the listener to close")
        c.send(body)
        r = c.read_response()
    assert r.status == 201, r
    assert node.wait(10) == 0
    node.start()
    doc = {k: v for k, v in node.get("/orders/last").json().items() if k not in ("_ts", "_meridian")}
    assert doc == {"tenantId": "t", "last": True, "id": "last"}


# ------------------------------------------------------------ unmatched routes

def test_unmatched_refuse_answers_404_json(meridian, nginx):
    node = meridian(nginx.url, proxy={"unmatched": "refuse"})
    r = node.get("/static/doc.json")
    assert r.status == 404, r
    assert (r.header("content-type") or "").startswith("application/json"), r.headers
    j = r.json()
    assert j.get("error") and j.get("reason"), j
    # container routes still reach the backend
    r = node.get("/orders/doc.json")
    assert r.status == 200 and r.json() == {"from": "nginx-orders"}, r
    # and Meridian's own endpoints still answer
    assert node.get("/_meridian/health").status == 200


def test_unmatched_pass_is_the_default(meridian, nginx):
    node = meridian(nginx.url)
    r = node.get("/static/doc.json")
    assert r.status == 200 and r.body == nginx.doc_bytes


# ------------------------------------------------------------ check-config

def run(*args, timeout=20):
    return subprocess.run([h.meridian_bin(), *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def good_config(tmp_path):
    return h.render_config(
        [{"name": "east", "id": 1, "listen": "127.0.0.1:7001", "peer_listen": "127.0.0.1:7101",
          "backend": "embedded", "data_dir": str(tmp_path / "east")},
         {"name": "west", "id": 2, "listen": "127.0.0.1:7002", "peer_listen": "127.0.0.1:7102",
          "backend": "http://127.0.0.1:8080", "data_dir": str(tmp_path / "west")}],
        limits={"max_body_bytes": 1024}, proxy={"unmatched": "refuse"},
        log={"level": "info", "access": False})


def test_check_config_accepts_a_valid_file(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(good_config(tmp_path))
    p = run("check-config", str(path))
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert p.stdout.strip(), "no summary printed"


def _bad(text, needle, replacement):
    """text with the first `needle` replaced; and the line of the replacement's last line."""
    i = text.index(needle)
    out = text[:i] + replacement + text[i + len(needle):]
    return out, text[:i].count("\n") + 1 + replacement.count("\n")


BAD = [
    # (what, needle in the good file, replacement, key named in the message)
    ("strong with multi-region writes", "consistency: session", "consistency: strong", "consistency"),
    ("unknown consistency", "consistency: session", "consistency: sometimes", "consistency"),
    ("unknown key", "multi_region_writes: true", "multi_region_writes: true\n  colour: blue", "colour"),
    ("duplicate region name", "name: west", "name: east", "name"),
    ("duplicate region id", "id: 2", "id: 1", "id"),
    ("duplicate listen address", "listen: 127.0.0.1:7002", "listen: 127.0.0.1:7001", "listen"),
    ("bad listen address", "listen: 127.0.0.1:7002", "listen: nowhere", "listen"),
    ("bad backend", "backend: http://127.0.0.1:8080", "backend: ftp://x", "backend"),
    ("unknown conflict mode", "mode: last_writer_wins", "mode: coin_flip", "mode"),
    ("negative limit", "max_body_bytes: 1024", "max_body_bytes: -5", "max_body_bytes"),
    ("bad unmatched policy", "unmatched: refuse", "unmatched: maybe", "unmatched"),
]


@pytest.mark.parametrize("what,needle,replacement,key", BAD, ids=[b[0] for b in BAD])
def test_check_config_rejects_bad_file_naming_file_line_and_key(tmp_path, what, needle,
                                                                 replacement, key):
    text, line = _bad(good_config(tmp_path), needle, replacement)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    p = run("check-config", str(path))
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert f"{path}:" in p.stderr, p.stderr
    assert f"{path}:{line}:" in p.stderr, f"expected line {line}: {p.stderr}"
    assert key in p.stderr, p.stderr


def test_check_config_rejects_overlapping_routes(tmp_path):
    text = good_config(tmp_path) .replace(
        "containers:\n",
        "containers:\n  - name: all\n    route: /orders/eu/\n    partition_key: /tenantId\n"
        "    conflict_resolution: { mode: last_writer_wins, path: /version }\n", 1)
    path = tmp_path / "overlap.yaml"
    path.write_text(text)
    p = run("check-config", str(path))
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert f"{path}:" in p.stderr and "route" in p.stderr, p.stderr


def test_check_config_on_broken_yaml_and_missing_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("account: { multi_region_writes: true\nregions: [\n")
    p = run("check-config", str(path))
    assert p.returncode == 1 and str(path) in p.stderr, (p.stdout, p.stderr)
    missing = tmp_path / "missing.yaml"
    p = run("check-config", str(missing))
    assert p.returncode == 1 and str(missing) in p.stderr, (p.stdout, p.stderr)


def test_node_refuses_to_start_with_bad_config(tmp_path):
    text, _ = _bad(good_config(tmp_path), "consistency: session", "consistency: strong")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    p = run("--config", str(path), "--region", "east")
    assert p.returncode != 0
    assert f"{path}:" in p.stderr, p.stderr


def test_node_refuses_unknown_region(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(good_config(tmp_path))
    p = run("--config", str(path), "--region", "mars")
    assert p.returncode != 0
    assert "mars" in p.stderr, p.stderr
