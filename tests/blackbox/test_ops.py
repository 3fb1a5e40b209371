"""Operations endpoints on the client port: health, readiness, metrics."""

import uuid

import pytest

import meridian_harness as h


def metrics(node):
    r = node.get("/_meridian/metrics")
    assert r.status == 200, r
    assert (r.header("content-type") or "").startswith("text/plain"), r.headers
    return h.parse_metrics(r.body.decode())


# ------------------------------------------------------------ health / ready

def test_health(meridian, nginx):
    node = meridian(nginx.url)
    r = node.get("/_meridian/health")
    assert r.status == 200
    assert (r.header("content-type") or "").startswith("application/json")
    assert isinstance(r.json(), dict)


def test_health_is_not_proxied(meridian):
    """Meridian answers its own endpoints even when the backend is dead."""
    node = meridian(f"http://127.0.0.1:{h.free_port()}")
    assert node.get("/_meridian/health").status == 200


def test_ready_with_embedded_store(meridian):
    node = meridian("embedded")
    r = node.get("/_meridian/ready")
    assert r.status == 200, r
    assert r.json().get("ready") is True


def test_ready_with_backend_up(meridian, nginx):
    node = meridian(nginx.url)
    r = node.get("/_meridian/ready")
    assert r.status == 200, r
    assert r.json().get("ready") is True


def test_not_ready_when_backend_is_down_from_the_start(meridian):
    port = h.free_port()
    node = meridian(f"http://127.0.0.1:{port}")
    r = node.get("/_meridian/ready")
    assert r.status == 503, r
    j = r.json()
    assert j.get("ready") is False and isinstance(j.get("reason"), str) and j["reason"], j


def test_ready_follows_the_backend(meridian, fault):
    port = h.free_port()
    node = meridian(f"http://127.0.0.1:{port}",
                    limits={"upstream_connect_timeout_ms": 500, "upstream_response_timeout_ms": 1000})
    assert node.get("/_meridian/ready").status == 503
    try:
        backend = fault("ok", body=b'{"ok":true}', port=port)
    except OSError:
        pytest.skip("the port was taken by another process meanwhile")
    h.poll(lambda: node.get("/_meridian/ready").status == 200, timeout=10,
           what="ready once the backend is up")
    backend.close()
    r = h.poll(lambda: (lambda r: r if r.status == 503 else None)(node.get("/_meridian/ready")),
               timeout=10, what="not ready once the backend is gone")
    assert r.json().get("ready") is False and r.json().get("reason"), r


# ------------------------------------------------------------ metrics

def test_metrics_exposes_the_contract_families(meridian, nginx):
    node = meridian(nginx.url)
    assert node.get("/static/doc.json").status == 200
    s = metrics(node)
    assert h.metric_present(s, "meridian_requests_total", method="GET", status="200"), s
    assert h.metric_present(s, "meridian_connections_open")
    assert h.metric_present(s, "meridian_request_duration_seconds_bucket")
    assert h.metric_present(s, "meridian_upstream_duration_seconds_bucket")
    les = {l["le"] for n, l, _ in s if n == "meridian_request_duration_seconds_bucket"}
    assert "+Inf" in les, les


def test_request_counters_move_by_the_right_amount(meridian, nginx):
    node = meridian(nginx.url)
    before = metrics(node)
    for i in range(7):
        assert node.get(f"/static/n/{i}.json").status == 200
    for i in range(3):
        assert node.get(f"/static/missing-{i}.json").status == 404
    for i in range(2):
        assert node.request("PUT", f"/dav/{uuid.uuid4().hex}", body=b"{}").status == 201
    after = metrics(node)

    def delta(name, **labels):
        return h.metric_sum(after, name, **labels) - h.metric_sum(before, name, **labels)

    # the scrape in between may count itself as one GET 200
    assert delta("meridian_requests_total", method="GET", status="200") in (7, 8)
    assert delta("meridian_requests_total", method="GET", status="404") == 3
    assert delta("meridian_requests_total", method="PUT", status="201") == 2
    assert delta("meridian_upstream_duration_seconds_bucket", le="+Inf") >= 12
    assert delta("meridian_request_duration_seconds_bucket", le="+Inf") >= 12
    # histogram buckets are cumulative
    buckets = sorted(((float(l["le"]), v) for n, l, v in after
                      if n == "meridian_request_duration_seconds_bucket"
                      and set(l) == {"le"}), key=lambda x: x[0])
    if buckets:
        values = [v for _, v in buckets]
        assert values == sorted(values), buckets


def test_upstream_errors_are_counted(meridian):
    node = meridian(f"http://127.0.0.1:{h.free_port()}")
    before = metrics(node)
    for _ in range(3):
        assert node.get("/x").status == 502
    after = metrics(node)
    kinds = {l.get("kind") for n, l, _ in after if n == "meridian_upstream_errors_total"}
    assert kinds and None not in kinds, kinds
    d = (h.metric_sum(after, "meridian_upstream_errors_total")
         - h.metric_sum(before, "meridian_upstream_errors_total"))
    assert d == 3, d
    assert (h.metric_sum(after, "meridian_requests_total", method="GET", status="502")
            - h.metric_sum(before, "meridian_requests_total", method="GET", status="502")) == 3


def test_open_connections_gauge_follows_clients(meridian, nginx):
    node = meridian(nginx.url)
    base = h.metric_sum(metrics(node), "meridian_connections_open")
    conns = []
    try:
        for _ in range(5):
            c = node.raw()
            c.send(h.get_req("/static/n/1.json"))
            assert c.read_response().status == 200
            conns.append(c)
        up = h.metric_sum(metrics(node), "meridian_connections_open")
        assert up >= base + 5, (base, up)
    finally:
        for c in conns:
            c.close()
    h.poll(lambda: h.metric_sum(metrics(node), "meridian_connections_open") <= base,
           timeout=5, what="connections_open to come back down")


def test_metrics_with_embedded_store(meridian):
    node = meridian("embedded")
    before = metrics(node)
    for i in range(4):
        assert node.request("PUT", f"/orders/m{i}", body=b'{"tenantId":"t"}').status == 201
    after = metrics(node)
    d = (h.metric_sum(after, "meridian_requests_total", method="PUT", status="201")
         - h.metric_sum(before, "meridian_requests_total", method="PUT", status="201"))
    assert d == 4, d
