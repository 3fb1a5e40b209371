#!/usr/bin/python3
"""bench/pagespy/classify.py LOG WRITES: pages per write, by database and
page kind, from a pagespy record of a Meridian node with the embedded store.

A page is told by its key (the second of the page, or its only one):
'/route/' + NUL + id: the store's documents; 'container' + NUL + id: the
heads index; 'journal.*': the main database (the named databases'
records); 'hlc', 'next_lsn', ...: the journal's meta; 'seq': the store's
meta; 8-byte keys: big-endian HLC-sized numbers are the confirmed log,
small little-endian ones LMDB's free list (transaction ids), the rest the
journal (big-endian LSNs)."""
import sys
from collections import Counter

META = {b"hlc", b"next_lsn", b"applied_crts", b"last_crts", b"hub_of"}


def named(key):
    """'name' + NUL + id, the name printable."""
    name = key.split(b"\0", 1)[0]
    return b"\0" in key and name and all(32 < c < 127 for c in name)


def database(key, ksize):
    if ksize == 8:  # (a container+NUL+id key of 8 bytes would land here too)
        if int.from_bytes(key, "little") < 1 << 32:
            return "free list"
        if int.from_bytes(key, "big") > 1 << 50:
            return "confirmed log"
        return "journal"
    if key.startswith(b"/") and named(key):
        return "store documents"
    if named(key):
        return "heads"
    if key.startswith(b"journal."):
        return "main"
    if key in META:
        return "journal meta"
    if key == b"seq":
        return "store meta"
    return "other"


def main():
    log, writes = sys.argv[1], int(sys.argv[2])
    count = Counter()
    for line in open(log):
        f = line.split()
        flags = int(f[1])
        kind = "branch" if flags & 1 else "leaf" if flags & 2 else "other"
        db = database(bytes.fromhex(f[4]), int(f[3])) if len(f) >= 5 else "no key"
        count[(db, kind)] += 1
    total = sum(count.values())
    for (db, kind), n in sorted(count.items(), key=lambda x: -x[1]):
        print(f"{n:8d} {n / writes:6.2f} per write  {db} ({kind})")
    print(f"{total:8d} {total / writes:6.2f} per write  in all ({writes} writes)")


if __name__ == "__main__":
    main()
