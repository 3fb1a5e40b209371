"""`meridian resolve`: a conflict-resolver procedure run offline through the
same worker the hub uses, asserting on what the operator sees: stdout,
stderr and the exit status."""

import json
import subprocess
import time

import meridian_harness as h

RESOLVERS = h.REPO / "tests" / "unit" / "fixtures" / "resolvers"
# The seed's ledger resolver, as the demo deploys it.
LEDGER = h.REPO / "deploy" / "local" / "resolvers" / "ledger.js"


def resolve(*args, timeout=20):
    p = subprocess.run([h.meridian_bin(), "resolve", *map(str, args)],
                       capture_output=True, text=True, timeout=timeout)
    for marker in h.SANITIZER_MARKERS:
        assert marker not in p.stderr, p.stderr
    return p


def write_doc(tmp_path, name, doc):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_ledger_resolution_is_printed(tmp_path):
    existing = write_doc(tmp_path, "existing.json", {"id": "t1", "status": 2, "by": "west"})
    incoming = write_doc(tmp_path, "incoming.json", {"id": "t1", "status": 1, "by": "east"})
    refund = write_doc(tmp_path, "refund.json", {"id": "t1", "status": 3, "by": "south"})

    p = resolve("--procedure", LEDGER,
                "--incoming", incoming, "--existing", existing)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"id": "t1", "status": 2, "by": "west"}
    assert p.stdout.count("\n") == 1 and " " not in p.stdout.strip()

    p = resolve("--procedure", LEDGER, "--incoming", incoming,
                "--existing", existing, "--conflicting", refund)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["by"] == "south"


def test_tombstone_without_incoming_prints_deleted(tmp_path):
    existing = write_doc(tmp_path, "existing.json", {"id": "o1", "lineItems": []})
    p = resolve("--procedure", RESOLVERS / "lineitems.js", "--existing", existing, "--tombstone")
    assert (p.returncode, p.stdout) == (0, "deleted\n"), p.stderr


def test_infinite_loop_times_out_with_exit_1(tmp_path):
    incoming = write_doc(tmp_path, "incoming.json", {"id": "x"})
    t0 = time.monotonic()
    p = resolve("--procedure", RESOLVERS / "loop.js", "--incoming", incoming, "--timeout-ms", "300")
    took = time.monotonic() - t0
    assert p.returncode == 1
    assert p.stdout == ""
    assert "timed out after 300 ms" in p.stderr
    assert took < 5, took


def test_bad_json_file_exits_2_naming_the_file(tmp_path):
    bad = write_doc(tmp_path, "bad.json", '{"id": "x",')
    p = resolve("--procedure", LEDGER, "--incoming", bad)
    assert p.returncode == 2
    assert str(bad) in p.stderr and "invalid JSON" in p.stderr

    array = write_doc(tmp_path, "array.json", "[1, 2]")
    p = resolve("--procedure", LEDGER, "--incoming", array)
    assert p.returncode == 2
    assert f"{array}: not a JSON object" in p.stderr

    p = resolve("--procedure", LEDGER, "--incoming", tmp_path / "missing.json")
    assert p.returncode == 2
    assert "missing.json: file not found" in p.stderr


def test_usage_errors_exit_2(tmp_path):
    p = resolve("--procedure", LEDGER)
    assert p.returncode == 2
    assert "usage:" in p.stderr
