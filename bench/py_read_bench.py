"""Python reference timings for `zodbrs bench fs` (the read side).

Usage: python py_read_bench.py PATH LOADS SEED

Prints one JSON object with, for Python ZODB on the same file:
- load_us: mean microseconds per FileStorage.load of a random current oid,
  single thread, index loaded (page cache warm: the file is read first);
- rebuild_s: seconds to open read-only without a .index (full read_index
  scan), through a symlink in a temporary directory so nothing is written
  beside the file;
- rebuild_records: number of oids indexed by that scan;
- fsdump_s: seconds for ZODB's fsdump of the whole file to /dev/null.
"""
import json
import os
import random
import sys
import tempfile
import time

from ZODB.FileStorage import FileStorage
from ZODB.FileStorage.fsdump import fsdump


def main():
    path, loads, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        link = os.path.join(tmp, "Data.fs")
        os.symlink(os.path.abspath(path), link)
        t0 = time.perf_counter()
        fs = FileStorage(link, read_only=True)
        out["rebuild_s"] = time.perf_counter() - t0
        out["rebuild_records"] = len(fs._index)
        oids = list(fs._index.keys())
        rnd = random.Random(seed)
        sample = [oids[rnd.randrange(len(oids))] for _ in range(loads)]
        load = fs.load
        ok = 0
        t0 = time.perf_counter()
        for oid in sample:
            try:
                load(oid)
                ok += 1
            except KeyError:
                pass
        out["load_us"] = (time.perf_counter() - t0) / loads * 1e6
        out["loads_ok"] = ok
        fs.close()
        with open(os.devnull, "w") as devnull:
            t0 = time.perf_counter()
            fsdump(link, file=devnull)
            out["fsdump_s"] = time.perf_counter() - t0
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
