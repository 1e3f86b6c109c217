"""Python reference timings for `zodbrs bench write` (the write side).

Usage: python py_write_bench.py commit DIR NTXN NOBJ
       python py_write_bench.py pack PATH TIME

commit: a new FileStorage in DIR; NTXN transactions of NOBJ new 100-byte
records each through the raw storage API (tpc_begin, store, tpc_vote,
tpc_finish: what ZEO's server and copyTransactionsFrom call). Prints
{"seconds": s, "txns": n}.
pack: FileStorage(PATH).pack(TIME, referencesf) with gc. Prints
{"seconds": s, "peak_anon_kb": the largest RssAnon sampled during the
pack} (anonymous memory: the heap, not the page cache; ru_maxrss would be
inherited from the parent process).
"""
import json
import os
import sys
import threading
import time

from ZODB.Connection import TransactionMetaData
from ZODB.FileStorage import FileStorage
from ZODB.serialize import referencesf
from ZODB.utils import p64, z64

RECORD = b"\x80\x03cbuiltins\nobject\nq\x00.\x80\x03C" + bytes([60]) + b"x" * 60 + b"q\x01."


def commit(d, ntxn, nobj):
    stor = FileStorage(os.path.join(d, "py.fs"))
    oid = 0
    t0 = time.perf_counter()
    for _ in range(ntxn):
        t = TransactionMetaData()
        stor.tpc_begin(t)
        for _ in range(nobj):
            oid += 1
            stor.store(p64(oid), z64, RECORD, "", t)
        stor.tpc_vote(t)
        stor.tpc_finish(t)
    s = time.perf_counter() - t0
    stor.close()
    return {"seconds": s, "txns": ntxn}


def rss_anon_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def pack(path, t):
    stor = FileStorage(path)
    peak = [rss_anon_kb()]
    done = threading.Event()

    def sample():
        while not done.wait(0.01):
            peak[0] = max(peak[0], rss_anon_kb())

    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.perf_counter()
    stor.pack(t, referencesf)
    s = time.perf_counter() - t0
    done.set()
    sampler.join()
    stor.close()
    return {"seconds": s, "peak_anon_kb": peak[0]}


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "commit":
        out = commit(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif mode == "pack":
        out = pack(sys.argv[2], float(sys.argv[3]))
    else:
        sys.exit("unknown mode " + mode)
    json.dump(out, sys.stdout)
