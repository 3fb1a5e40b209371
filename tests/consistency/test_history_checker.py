"""Self-tests of the history checker (history.py) on hand-made histories: a
clean history passes, and each rule has a minimal violating history that is
reported under that rule name, plus near misses that must NOT be reported
(ops that overlap in real time are not ordered, unavailable answers and
relaxed levels carry no session guarantee, ...). No cluster is started."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import history as hs  # noqa: E402
from history import OK, READ, UNAVAILABLE, WRITE, Op  # noqa: E402

T0_MS = 1_700_000_000_000     # wall clock of the made-up runs (epoch ms)


class H:
    """A history under construction. Times are seconds from the start of the
    run; the same numbers serve as monotonic times and (offset by T0_MS) as
    wall-clock times, and a write confirmed at time t gets crts (ms << 16)."""

    def __init__(self):
        self.ops = []
        self.feed = []
        self._last = 0

    def write(self, session, key, seq, region, t0, t1, status=OK):
        op = Op(session=session, kind=WRITE, region=region, key=key, value=f"{session}:{seq}",
                invoke=t0, complete=t1, invoke_wall=T0_MS / 1000 + t0,
                complete_wall=T0_MS / 1000 + t1, status=status)
        self.ops.append(op)
        return op

    def read(self, session, key, value, region, t0, t1, confirmed=True, level="session",
             status=OK, served_by=None):
        op = Op(session=session, kind=READ, region=region, key=key, value=value, invoke=t0,
                complete=t1, invoke_wall=T0_MS / 1000 + t0, complete_wall=T0_MS / 1000 + t1,
                confirmed=None if value is None else confirmed, level=level, status=status,
                served_by=served_by)
        self.ops.append(op)
        return op

    def confirm(self, key, value, at):
        """The hub confirms `value` of `key` at time `at` (seconds); returns its crts."""
        crts = max(self._last + 1, int(T0_MS + at * 1000) << 16)
        self._last = crts
        self.feed.append({"crts": crts, "id": key, "version": f"1:{len(self.feed) + 1}",
                          "region": "east", "op": "replace",
                          "doc": {"k": key, "v": value, "owner": value.split(":")[0]}})
        return crts

    def check(self, **kw):
        return hs.check(self.ops, self.feed, **kw)


def rules(violations):
    return sorted({v.rule for v in violations})


def only(violations, rule):
    """Asserts every violation is of `rule` (and there is at least one)."""
    assert violations, "expected a violation, the checker found none"
    assert rules(violations) == [rule], "\n".join(v.describe() for v in violations)
    return violations


def clean(violations):
    assert not violations, "\n".join(v.describe() for v in violations)


# ---------------------------------------------------------------- a clean history

def clean_history():
    """Two writers, a reader that moves between regions, an observer; every
    guarantee holds (tentative reads, 404s before the first write, an
    unavailable answer, forwarded reads)."""
    h = H()
    h.write("s1", "s1-k0", 1, "west", 0.0, 0.1)
    h.read("s1", "s1-k0", "s1:1", "west", 0.2, 0.3, confirmed=False)     # own tentative write
    h.read("s2", "s1-k0", None, "south", 0.2, 0.3)                       # not there yet
    c1 = h.confirm("s1-k0", "s1:1", 0.5)
    h.write("s2", "s2-k0", 1, "east", 0.6, 0.7)
    c2 = h.confirm("s2-k0", "s2:1", 0.65)
    h.read("s2", "s1-k0", "s1:1", "south", 1.0, 1.1)
    h.read("s2", "s2-k0", "s2:1", "west", 1.2, 1.3)                      # moved: token satisfied
    h.read("s2", "s1-k0", None, "east", 1.4, 1.5, status=UNAVAILABLE)    # 1002: skipped
    h.write("s2", "s2-k0", 2, "west", 1.6, 1.7)                          # after reading s1:1
    h.read("s2", "s2-k0", "s2:2", "south", 1.8, 1.9, served_by="west", confirmed=False)
    h.confirm("s2-k0", "s2:2", 2.0)
    h.write("s1", "s1-k0", 2, "south", 2.1, 2.2)
    h.confirm("s1-k0", "s1:2", 2.3)
    h.read("s1", "s1-k0", "s1:2", "west", 2.4, 2.5)
    h.read("obs", "s2-k0", "s2:1", "south", 0.9, 1.0, level="consistent_prefix")
    h.read("obs", "s1-k0", "s1:1", "south", 1.05, 1.06, level="consistent_prefix")
    h.read("obs", "s2-k0", "s2:2", "south", 2.5, 2.6, level="consistent_prefix")
    assert c1 < c2
    return h


def test_clean_history_passes():
    h = clean_history()
    clean(h.check())
    clean(h.check(staleness=(1, 1.0)))   # no read at bounded_staleness: nothing to bound


def test_empty_history_passes():
    clean(hs.check([], []))


def test_check_numbers_ops_and_report_is_readable():
    h = clean_history()
    h.read("s1", "s1-k0", "s1:1", "east", 3.0, 3.1, confirmed=False)     # MR + RYW
    vs = h.check()
    assert [op.id for op in h.ops] == list(range(len(h.ops)))
    text = hs.format_report(h.ops, h.feed, vs, events=[(0.5, "blackhole west")])
    assert "violations: 2 (read-your-writes 1, monotonic-reads 1)" in text
    assert "[read-your-writes]" in text and "[monotonic-reads]" in text
    assert "event +0.500s blackhole west" in text
    assert f"#{h.ops[-1].id} " in text


def test_history_round_trips_through_a_file(tmp_path):
    h = clean_history()
    h.read("s1", "s1-k0", "s1:1", "east", 3.0, 3.1, confirmed=False)
    hs.save_history(tmp_path / "h.json", h.ops, h.feed, staleness=None, events=[])
    ops, feed, meta = hs.load_history(tmp_path / "h.json")
    assert ops == h.ops and feed == h.feed
    assert rules(hs.check(ops, feed)) == ["monotonic-reads", "read-your-writes"]
    assert hs.main([str(tmp_path / "h.json")]) == 1


# ---------------------------------------------------------------- read-your-writes

def test_read_your_writes_violation():
    h = H()
    h.write("s1", "k", 1, "west", 0.0, 0.1)
    h.confirm("k", "s1:1", 0.2)
    h.write("s1", "k", 2, "west", 1.0, 1.1)
    h.read("s1", "k", "s1:1", "south", 1.2, 1.3)       # older than its own acknowledged s1:2
    h.confirm("k", "s1:2", 1.4)
    v = only(h.check(), "read-your-writes")
    assert v[0].ops == [h.ops[1], h.ops[2]] and v[0].key == "k"
    assert "s1:1" in v[0].why and "s1:2" in v[0].why


def test_read_your_writes_404_after_own_write():
    h = H()
    h.write("s1", "k", 1, "west", 0.0, 0.1)
    h.read("s1", "k", None, "south", 0.2, 0.3)
    h.confirm("k", "s1:1", 0.4)
    only(h.check(), "read-your-writes")


def test_read_your_writes_near_misses():
    h = H()
    h.write("s1", "k", 1, "west", 0.0, 0.1)
    h.write("s1", "k", 2, "west", 1.0, 1.5)
    h.read("s1", "k", "s1:1", "south", 1.2, 1.3)       # overlaps the write: not ordered
    h.write("s1", "k", 3, "west", 2.0, 2.1, status="timeout")
    h.read("s1", "k", "s1:2", "south", 2.2, 2.3)       # the timed-out write need not be seen
    h.write("s1", "k", 4, "west", 3.0, 3.1)
    h.read("s1", "k", None, "south", 3.2, 3.3, status=UNAVAILABLE)   # 1002: not a value
    h.read("s1", "k", "s1:2", "south", 3.4, 3.5, level="eventual")   # relaxed level
    h.read("s2", "k", "s1:1", "east", 3.4, 3.5)        # another session: no guarantee
    h.read("s1", "k", "s1:4", "south", 3.6, 3.7)
    for v, t in (("s1:1", 0.2), ("s1:2", 1.6), ("s1:3", 2.4), ("s1:4", 3.2)):
        h.confirm("k", v, t)
    clean(h.check())


# ---------------------------------------------------------------- monotonic reads

def test_monotonic_reads_violation():
    h = H()
    h.write("w", "k", 1, "east", 0.0, 0.1)
    h.write("w", "k", 2, "east", 0.2, 0.3)
    h.confirm("k", "w:1", 0.05)
    h.confirm("k", "w:2", 0.25)
    h.read("s1", "k", "w:2", "east", 1.0, 1.1)
    h.read("s1", "k", "w:1", "west", 1.2, 1.3)          # went back
    v = only(h.check(), "monotonic-reads")
    assert v[0].ops == [h.ops[2], h.ops[3]]


def test_monotonic_reads_404_after_a_value():
    h = H()
    h.write("w", "k", 1, "east", 0.0, 0.1)
    h.confirm("k", "w:1", 0.05)
    h.read("s1", "k", "w:1", "east", 1.0, 1.1)
    h.read("s1", "k", None, "south", 1.2, 1.3)
    only(h.check(), "monotonic-reads")


def test_monotonic_reads_tentative_value_then_older():
    """Monotonic reads count tentative values too: a session that saw w:2
    (tentative at west) must not read w:1 later anywhere."""
    h = H()
    h.write("w", "k", 1, "east", 0.0, 0.1)
    h.confirm("k", "w:1", 0.05)
    h.write("w", "k", 2, "west", 0.2, 0.3)
    h.read("s1", "k", "w:2", "west", 1.0, 1.1, confirmed=False)
    h.read("s1", "k", "w:1", "south", 1.2, 1.3)
    h.confirm("k", "w:2", 2.0)
    only(h.check(), "monotonic-reads")


def test_monotonic_reads_near_misses():
    h = H()
    h.write("w", "k", 1, "east", 0.0, 0.1)
    h.write("w", "k", 2, "east", 0.2, 0.3)
    h.confirm("k", "w:1", 0.05)
    h.confirm("k", "w:2", 0.25)
    h.read("s1", "k", "w:2", "east", 1.0, 1.5)
    h.read("s1", "k", "w:1", "west", 1.2, 1.3)          # overlaps: not ordered
    h.read("s1", "k", "w:2", "west", 2.0, 2.1)
    h.read("s1", "k", None, "south", 2.2, 2.3, status=UNAVAILABLE)
    h.read("s1", "k", None, "south", 2.4, 2.5, status="timeout")
    h.read("s1", "k", "w:1", "south", 2.6, 2.7, level="consistent_prefix")  # relaxed
    h.read("s2", "k", "w:1", "south", 2.6, 2.7)         # another session
    h.read("s1", "other", None, "south", 2.8, 2.9)      # another key
    h.read("s1", "k", "w:2", "south", 3.0, 3.1)
    clean(h.check())


# ---------------------------------------------------------------- monotonic writes / lost writes

def test_monotonic_writes_violation_in_the_feed():
    h = H()
    h.write("s1", "k", 1, "west", 0.0, 0.1)
    h.write("s1", "k", 2, "south", 0.2, 0.3)
    h.confirm("k", "s1:2", 0.4)
    h.confirm("k", "s1:1", 0.5)                          # older write confirmed last
    v = [x for x in h.check() if x.rule == "monotonic-writes"]
    assert len(v) == 1 and v[0].ops == [h.ops[1], h.ops[0]]
    # ... and the key ends on s1:1, so the acknowledged s1:2 is lost too
    assert rules(h.check()) == ["lost-write", "monotonic-writes"]


def test_monotonic_writes_near_miss_gaps_and_superseded():
    h = H()
    h.write("s1", "k", 1, "west", 0.0, 0.1)
    h.write("s1", "k", 2, "south", 0.2, 0.3)             # s1:1 superseded: never confirmed
    h.write("s1", "k", 3, "south", 0.4, 0.5, status="refused")   # 429: never written
    h.write("s1", "k", 4, "east", 0.6, 0.7)
    h.confirm("k", "s1:2", 0.4)
    h.confirm("k", "s1:4", 0.65)
    clean(h.check())


def test_lost_write():
    h = H()
    h.write("s1", "k", 1, "west", 0.0, 0.1)
    h.write("s1", "k", 2, "west", 0.2, 0.3)
    h.write("s1", "j", 3, "west", 0.4, 0.5)
    h.confirm("k", "s1:1", 0.4)
    v = only(h.check(), "lost-write")
    assert {x.key for x in v} == {"k", "j"}
    # a write that timed out may or may not have happened: not lost
    h2 = H()
    h2.write("s1", "k", 1, "west", 0.0, 0.1)
    h2.write("s1", "k", 2, "west", 0.2, 5.3, status="timeout")
    h2.confirm("k", "s1:1", 0.4)
    clean(h2.check())


# ---------------------------------------------------------------- writes follow reads

def test_writes_follow_reads_violation():
    h = H()
    h.write("s1", "a", 1, "west", 0.0, 0.1)
    h.read("s2", "a", "s1:1", "west", 0.2, 0.3, confirmed=False)   # tentative at west
    h.write("s2", "b", 1, "south", 0.4, 0.5)
    h.confirm("b", "s2:1", 0.6)                          # s2's write confirmed first
    h.confirm("a", "s1:1", 2.0)                          # west was cut off
    v = only(h.check(), "writes-follow-reads")
    assert v[0].ops == [h.ops[1], h.ops[2]] and v[0].key == "b"


def test_writes_follow_reads_near_misses():
    h = H()
    h.write("s1", "a", 1, "west", 0.0, 0.1)
    h.read("s2", "a", "s1:1", "west", 0.2, 0.5, confirmed=False)   # overlaps s2's write
    h.write("s2", "b", 1, "south", 0.4, 0.45)
    h.write("s4", "e", 1, "west", 0.1, 0.15)
    h.read("s4", "e", "s4:1", "west", 0.6, 0.7, confirmed=False)   # its own value: no dependency
    h.write("s4", "f", 2, "south", 0.8, 0.9)
    h.read("s3", "a", "s1:1", "west", 1.0, 1.1, level="eventual", confirmed=False)  # relaxed
    h.write("s3", "d", 1, "south", 1.2, 1.3)
    h.read("s5", "a", "s1:1", "west", 1.0, 1.1, status=UNAVAILABLE)  # no value
    h.write("s5", "g", 1, "south", 1.2, 1.3)
    h.confirm("b", "s2:1", 0.95)
    h.confirm("f", "s4:2", 0.96)
    h.confirm("d", "s3:1", 1.4)
    h.confirm("g", "s5:1", 1.41)
    h.confirm("a", "s1:1", 2.0)
    h.confirm("e", "s4:1", 2.1)
    clean(h.check())


# ---------------------------------------------------------------- consistent prefix

def prefix_history(region2="west", confirmed1=True, t2=(1.2, 1.3), level="consistent_prefix",
                   b_newer_at=None):
    """b:1 then a:1 then b:2 are confirmed (crts order); an observer reads
    a -> a:1 at west, then b: it must not get b:1 (older than b:2, which was
    confirmed before a:1)."""
    h = H()
    h.write("w", "b", 1, "east", 0.0, 0.01)
    h.write("w", "b", 2, "east", 0.1, 0.11)
    h.write("v", "a", 1, "east", 0.05, 0.06)
    h.confirm("b", "w:1", 0.01)
    if b_newer_at is None:
        h.confirm("b", "w:2", 0.11)
    h.confirm("a", "v:1", 0.2)
    if b_newer_at is not None:
        h.confirm("b", "w:2", b_newer_at)
    h.read("obs", "a", "v:1", "west", 1.0, 1.1, confirmed=confirmed1, level=level)
    h.read("obs", "b", "w:1", region2, *t2, level=level)
    return h


def test_consistent_prefix_violation():
    v = only(prefix_history().check(), "consistent-prefix")
    assert "region west" in v[0].why and "w:2" in v[0].why


def test_consistent_prefix_404_is_a_gap_too():
    h = prefix_history()
    h.ops[-1].value, h.ops[-1].confirmed = None, None
    only(h.check(), "consistent-prefix")


def test_consistent_prefix_holds_for_reads_of_any_session_in_the_region():
    h = prefix_history()
    h.ops[-1].session = "another"
    only(h.check(), "consistent-prefix")


def test_consistent_prefix_region_going_back_on_one_key():
    """The floor includes the version read itself: a region that showed b:2
    must not show b:1 afterwards, whoever asks."""
    h = prefix_history()
    h.read("obs2", "b", "w:2", "west", 2.0, 2.1, level="eventual")
    h.read("obs3", "b", "w:1", "west", 2.2, 2.3, level="eventual")
    v = only(h.check(), "consistent-prefix")
    assert len(v) == 2 and v[1].ops[-1] is h.ops[-1]


def test_consistent_prefix_near_misses():
    clean(prefix_history(region2="south").check())                 # another region
    clean(prefix_history(confirmed1=False).check())                # first read tentative
    clean(prefix_history(confirmed1=None).check())                 # headers did not match the body
    clean(prefix_history(t2=(1.05, 1.3)).check())                  # overlapping reads
    clean(prefix_history(b_newer_at=0.5).check())                  # b:2 confirmed after a:1
    h = prefix_history()
    h.ops[-1].confirmed = False                                    # own tentative write shown
    clean(h.check())
    h = prefix_history()
    h.ops[-2].served_by = "east"                                   # first read forwarded
    clean(h.check())


def test_forwarded_read_counts_for_the_region_that_served_it():
    h = prefix_history(region2="south")
    h.ops[-1].served_by = "west"
    only(h.check(), "consistent-prefix")


def test_session_prefix_violation_across_regions():
    h = prefix_history(region2="south", level="session")
    only(h.check(), "session-prefix")
    h = prefix_history(region2="south", level="session")
    h.ops[-1].session = "another"                                  # not the same session
    clean(h.check())


# ---------------------------------------------------------------- bounded staleness

def staleness_history(read_at, value="w:1", served_by=None):
    h = H()
    h.write("w", "k", 1, "east", 0.0, 0.01)
    h.write("w", "k", 2, "east", 1.0, 1.01)
    h.confirm("k", "w:1", 0.01)
    h.confirm("k", "w:2", 1.01)
    for i in range(10):                                            # other keys confirmed later
        h.write("x", f"o{i}", i + 1, "east", 2.0 + i * 0.1, 2.0 + i * 0.1)
        h.confirm(f"o{i}", f"x:{i + 1}", 2.0 + i * 0.1)
    h.read("s1", "k", value, "south", read_at, read_at + 0.1, level="bounded_staleness",
           served_by=served_by)
    return h


def test_bounded_staleness_time_violation():
    h = staleness_history(read_at=2.7)       # w:2 confirmed 1.69 s before the read
    v = only(h.check(staleness=(100, 1), slack=0.5), "bounded-staleness")
    assert "w:2" in v[0].why and "1.69" in v[0].why


def test_bounded_staleness_version_violation():
    h = staleness_history(read_at=2.5)       # 1 s after w:2 but 5 versions behind at 2.5 - 0.2
    only(h.check(staleness=(3, 10), slack=0.2), "bounded-staleness")
    clean(h.check(staleness=(5, 10), slack=0.2))    # w:2 + o0..o3 = 5 entries: within bound


def test_bounded_staleness_404_of_a_key_confirmed_long_ago():
    h = staleness_history(read_at=2.7, value=None)
    only(h.check(staleness=(100, 1), slack=0.5), "bounded-staleness")


def test_bounded_staleness_near_misses():
    clean(staleness_history(read_at=2.4).check(staleness=(100, 1), slack=0.5))   # 1.39 s <= 1.5
    clean(staleness_history(read_at=2.7, value="w:2").check(staleness=(1, 1)))  # newest value
    clean(staleness_history(read_at=2.7).check())                              # no bound given
    h = staleness_history(read_at=2.7)
    h.ops[-1].level = "session"                                                 # another level
    clean(h.check(staleness=(1, 1)))


# ---------------------------------------------------------------- integrity

def test_integrity_value_never_written():
    h = H()
    h.write("w", "k", 1, "east", 0.0, 0.1)
    h.confirm("k", "w:1", 0.05)
    h.read("s1", "k", "w:7", "east", 1.0, 1.1)
    h.read("s1", "j", "w:1", "east", 1.0, 1.1)          # a value of another key
    v = only(h.check(), "integrity")
    assert len(v) == 2


def test_integrity_read_from_the_future():
    h = H()
    h.read("s1", "k", "w:1", "east", 0.0, 0.1)
    h.write("w", "k", 1, "east", 0.2, 0.3)
    h.confirm("k", "w:1", 0.25)
    only(h.check(), "integrity")


def test_integrity_confirmed_value_missing_from_feed_and_duplicates():
    h = H()
    h.write("w", "k", 1, "west", 0.0, 0.1)
    h.write("w", "k", 2, "west", 0.2, 0.3)
    h.confirm("k", "w:2", 0.4)
    h.read("s1", "k", "w:1", "west", 0.15, 0.16, confirmed=True)    # superseded, yet "confirmed"
    only(h.check(), "integrity")
    h.ops[-1].confirmed = False                                      # tentative: fine
    clean(h.check())
    h.confirm("k", "w:2", 0.5)
    only(h.check(), "integrity")


def test_parse_value_and_seq():
    assert hs.parse_value("s3:7") == ("s3", 7)
    assert hs.parse_value("a:b:12") == ("a:b", 12)
    for bad in (None, 7, "s3", "s3:", ":4", "s3:x"):
        assert hs.parse_value(bad) is None
    assert hs.seq_of(None) == 0


def test_feed_ignores_documents_outside_the_workload():
    h = H()
    h.feed.append({"crts": 5, "id": "probe", "doc": {"probe": True}})
    h.feed.append({"crts": 6, "id": "gone", "tombstone": True})
    clean(h.check())


@pytest.mark.parametrize("rule", hs.RULES)
def test_every_rule_is_exercised_here(rule):
    """Guards this file: each rule name the checker can report appears in a test above."""
    text = Path(__file__).read_text()
    assert text.count(f'"{rule}"') >= 1, f"no test reports {rule}"


def test_first_newer_when_the_feed_is_out_of_writer_order():
    h = H()
    for seq in (1, 3, 2, 4):
        h.write("w", "k", seq, "east", 0.0, 0.1)
    for i, seq in enumerate((1, 3, 2, 4)):
        h.confirm("k", f"w:{seq}", 0.1 * (i + 1))
    fd = hs.Feed(h.feed)
    assert fd.first_newer("k", 1).value == "w:3"       # crts order, not seq order
    assert fd.first_newer("k", 3).value == "w:4"
    assert fd.first_newer("k", 4) is None
    h2 = H()
    for seq in (1, 2, 4):
        h2.confirm("k", f"w:{seq}", 0.1 * seq)
    fd2 = hs.Feed(h2.feed)
    assert [fd2.first_newer("k", s).value for s in (0, 1, 2, 3)] == ["w:1", "w:2", "w:4", "w:4"]
    assert fd2.first_newer("k", 4) is None and fd2.first_newer("nokey", 0) is None
