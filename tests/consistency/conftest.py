"""Fixtures of the consistency tier: three-region clusters for the history
checker's black-box runs.

Reuses the replication tier's conftest (tests/replication/conftest.py): its
failure report hook (every node's log and config, the relays' counters) and
its list of live clusters; loaded from its file under another module name,
since both files are called conftest.py. The cluster itself is
workload.ConsistencyCluster: replication_cluster.Cluster plus an environment
for the nodes (the debug switch) and an account section of its own.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "replication"))

import workload as wl  # noqa: E402  (puts tests/replication, blackbox and wan on sys.path)

_spec = importlib.util.spec_from_file_location("replication_tier_conftest",
                                               HERE.parent / "replication" / "conftest.py")
_replication = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_replication)

# A failing test's report carries every process's log and config and the
# relays' counters of the clusters in _replication._CLUSTERS.
pytest_runtest_makereport = _replication.pytest_runtest_makereport


@pytest.fixture
def consistency_cluster(tmp_path):
    """Factory: consistency_cluster(delay_ms=200, env=None, account=None,
    backend='embedded', limits=None) -> started workload.ConsistencyCluster;
    everything it started is stopped when the test ends."""
    def build(base, delay_ms=200, env=None, account=None, backend="embedded", limits=None):
        return wl.ConsistencyCluster(base, backend=backend, delay_ms=delay_ms, env=env,
                                     account=account, limits=limits)

    yield from _replication.cluster_factory(tmp_path, build)
