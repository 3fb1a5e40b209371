"""Fixtures of the replication tier: whole three-region clusters.

Every process (meridian, nginx) is registered in meridian_harness.ACTIVE and
is stopped by a finalizer even when the test fails; relays are stopped too.
A failing test's report carries every node's log, its configuration, and the
relays' counters.
"""

import pytest

import replication_cluster as rc

h = rc.h
_CLUSTERS = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    for p in list(h.ACTIVE):
        rep.sections.append((f"log of {p.label} ({p.log_path})", p.log()))
        cfg = getattr(p, "config_text", None)
        if cfg:
            rep.sections.append((f"config of {p.label}", cfg))
    for c in _CLUSTERS:
        for name, relay in c.relays.items():
            try:
                rep.sections.append((f"relay {name} -> hub", repr(relay.stats())))
            except Exception as e:  # relay already stopped
                rep.sections.append((f"relay {name} -> hub", repr(e)))


def cluster_factory(tmp_path, build):
    """The body of the cluster fixtures: yields make(**kw), which starts
    build(base_dir, **kw) and returns it; when the test ends every cluster
    made is stopped, and sanitizer reports fail the test."""
    made = []

    def make(backend="embedded", **kw):
        c = build(tmp_path / f"c{len(made)}-{backend}", backend=backend, **kw)
        made.append(c)
        _CLUSTERS.append(c)
        c.start()
        return c

    yield make
    reports = []
    for c in made:
        try:
            reports += c.finalize()
        finally:
            _CLUSTERS.remove(c)
    if reports:
        pytest.fail("sanitizer reported errors:\n" + "\n".join(reports), pytrace=False)


@pytest.fixture
def make_cluster(tmp_path):
    """Factory: make_cluster(backend='embedded'|'nginx', delay_ms=0,
    containers=None, limits=None, account=None) -> started Cluster; everything
    it started is stopped when the test ends."""
    yield from cluster_factory(tmp_path, rc.Cluster)


@pytest.fixture(params=["embedded", "nginx"])
def backend(request):
    """Runs a test once with the embedded store and once with nginx WebDAV."""
    return request.param
