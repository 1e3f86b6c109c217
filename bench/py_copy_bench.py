"""Python reference timing for `zodbrs bench copy`.

Usage: python py_copy_bench.py SRC DST NTXN FSYNC

Copies the first NTXN transactions of SRC into a new FileStorage DST with
ZODB's copyTransactionsFrom (BaseStorage.copy), the way `zodbrs copy` copies
the whole file, and prints one JSON object:
- seconds: from creating DST to closing it (close writes DST.index), the
  source iteration included;
- txns: transactions copied; bytes: DST's size, magic included;
- fsync: whether ZODB's fsync at every tpc_finish was left on (FSYNC=1, as
  ZODB ships) or turned off (FSYNC=0: the module-level `fsync` set to None,
  which isolates Python's own speed from the disk's).

The prefix is taken by handing copy() an iterator cut after NTXN
transactions: copy() only calls `.iterator()` on its source. SRC is read
through ZODB's FileIterator, which opens the file read-only and writes
nothing beside it. DST must not exist.
"""
import itertools
import json
import os
import sys
import time

from ZODB.FileStorage import FileIterator, FileStorage


class Prefix:
    """A copy() source: the first `n` transactions of a FileIterator."""

    def __init__(self, path, n):
        self._it = FileIterator(path)
        self._n = n

    def iterator(self):
        return itertools.islice(self._it, self._n)

    def close(self):
        self._it.close()


def main():
    src, dst, n, do_fsync = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
    if os.path.exists(dst):
        sys.exit(f"{dst} exists")
    if not do_fsync:
        sys.modules["ZODB.FileStorage.FileStorage"].fsync = None
    source = Prefix(src, n)
    t0 = time.perf_counter()
    dest = FileStorage(dst, create=True)
    dest.copyTransactionsFrom(source)
    dest.close()
    seconds = time.perf_counter() - t0
    source.close()
    copied = FileIterator(dst)
    count = sum(1 for _ in copied)
    copied.close()
    json.dump({"seconds": seconds, "txns": count, "bytes": os.path.getsize(dst), "fsync": do_fsync}, sys.stdout)


if __name__ == "__main__":
    main()
