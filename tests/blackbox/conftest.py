"""Fixtures of the black-box tier: real nginx, real meridian, fault backends.

Every process a test starts is stopped by a finalizer even when the test
fails; the logs of every process alive during a failing test are attached to
its report. Ports are free loopback ports, directories are pytest temp dirs,
so the suite can run twice in a row and two runs can overlap.
"""

import pytest

import meridian_harness as h


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for p in list(h.ACTIVE):
            rep.sections.append((f"log of {p.label} ({p.log_path})", p.log()))
            cfg = getattr(p, "config_text", None)
            if cfg:
                rep.sections.append((f"config of {p.label}", cfg))


class MeridianFactory:
    """Starts Meridian nodes under `base`; finish() stops them all and fails
    if a sanitizer build reported an error."""

    def __init__(self, base_fn):
        self.base_fn = base_fn
        self.nodes = []

    def __call__(self, backend, start=True, **kw):
        node = h.Meridian(self.base_fn(), backend, **kw)
        self.nodes.append(node)
        if start:
            node.start()
        return node

    def finish(self):
        reports = []
        for node in self.nodes:
            try:
                node.stop()
            finally:
                report = node.sanitizer_report()
                node.finalize()
            if report:
                reports.append(f"{node.label}:\n{report}")
        if reports:
            pytest.fail("sanitizer reported errors:\n" + "\n".join(reports), pytrace=False)


@pytest.fixture
def meridian(tmp_path):
    """Factory: meridian(backend, containers=, limits=, proxy=, log=) -> started node."""
    counter = iter(range(1000))
    f = MeridianFactory(lambda: tmp_path / f"m{next(counter)}")
    yield f
    f.finish()


@pytest.fixture(scope="module")
def module_meridian(tmp_path_factory):
    """Same factory, for nodes shared by the tests of one module."""
    f = MeridianFactory(lambda: tmp_path_factory.mktemp("meridian"))
    yield f
    f.finish()


def _nginx(base):
    n = h.Nginx(base)
    try:
        n.start()
    except BaseException:
        n.finalize()
        raise
    return n


@pytest.fixture(scope="module")
def nginx_shared(tmp_path_factory):
    """One nginx for a whole module (tests use distinct paths under /dav/)."""
    n = _nginx(tmp_path_factory.mktemp("nginx"))
    yield n
    n.stop()
    n.finalize()


@pytest.fixture
def nginx(tmp_path):
    """An nginx of this test alone (for tests that stop it)."""
    n = _nginx(tmp_path / "nginx")
    yield n
    n.stop()
    n.finalize()


@pytest.fixture
def fault():
    """Factory: fault(mode, delay=None, body=...) -> FaultServer, closed at the end."""
    servers = []

    def make(mode, **kw):
        s = h.FaultServer(mode, **kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()
