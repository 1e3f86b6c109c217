"""Generate a large Data.fs with real ZODB for the read-side benchmarks.

Usage: python gen_bench_db.py PATH [--objects N] [--payload BYTES] [--txn-size K]
       [--rewrite-fraction F]

Writes N persistent objects (default 1,000,000) of a small class holding a
bytes payload and a reference to the previous object, committed K per
transaction through a real ZODB connection; then rewrites a fraction F of
them in later transactions so that objects have history (prev pointers,
several revisions). Deterministic: fixed seed, fixed clock.
"""
import argparse
import os
import random
import sys
import time

import persistent
import transaction
import ZODB
from ZODB.FileStorage import FileStorage


class Record(persistent.Persistent):
    """A benchmark object: payload bytes plus a link to the previous one."""

    def __init__(self, n, payload, prev):
        self.n = n
        self.payload = payload
        self.prev = prev


# Pickles name the class by module; make it importable as `bench.Record`.
Record.__module__ = "zodbrs_bench"
sys.modules["zodbrs_bench"] = sys.modules[__name__]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--objects", type=int, default=1_000_000)
    ap.add_argument("--payload", type=int, default=1000)
    ap.add_argument("--txn-size", type=int, default=1000)
    ap.add_argument("--rewrite-fraction", type=float, default=0.1)
    args = ap.parse_args()
    if os.path.exists(args.path):
        sys.exit(f"{args.path} exists")
    rnd = random.Random(1)
    clock = [1_700_000_000.0]

    def fake_time():
        clock[0] += 0.001
        return clock[0]

    time.time = fake_time
    storage = FileStorage(args.path)
    db = ZODB.DB(storage, cache_size=args.txn_size * 2)
    conn = db.open()
    root = conn.root()
    prev = None
    t0 = time.perf_counter()
    objs = []
    for i in range(args.objects):
        payload = rnd.randbytes(args.payload // 4) * 4
        r = Record(i, payload, prev)
        conn.add(r)
        objs.append(r._p_oid)
        prev = r
        if (i + 1) % args.txn_size == 0:
            root["last"] = r
            transaction.get().note(f"batch {i // args.txn_size}")
            transaction.commit()
            conn.cacheMinimize()
            if (i + 1) % 100_000 == 0:
                print(f"{i + 1} objects, {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    transaction.commit()
    nrew = int(args.objects * args.rewrite_fraction)
    for j in range(nrew):
        oid = objs[rnd.randrange(len(objs))]
        o = conn.get(oid)
        o.payload = rnd.randbytes(args.payload // 4) * 4
        if (j + 1) % args.txn_size == 0:
            transaction.commit()
            conn.cacheMinimize()
    transaction.commit()
    db.close()
    print(f"done: {os.path.getsize(args.path)} bytes in {time.perf_counter() - t0:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
