"""Python reference timings for `zodbrs bench array`.

Usage: python py_array_bench.py PATH OID RUNS

The way wendelin.core gets a ZBigArray into memory: open the database,
load the array and its ZBigFile, then for every block ZBigFile.loadblk
(ZODB load + unpickle of the ZBlk, for ZBlk1 of its chunk tree and every
ZData, then the copy into the page: here a numpy array of nbytes). Each
run uses a fresh DB (no object cache); the page cache is warmed first.
Prints JSON: read_s (best run), nbytes, blocks.

`zodbrs bench` runs this text after wendelin_standin.py's, so the
stand-in classes are already defined when it is not importable.
"""
import json
import os
import sys
import time

import numpy
import ZODB
from ZODB.FileStorage import FileStorage

try:
    import wendelin_standin as W
except ImportError:
    W = sys.modules['__main__']


def read_array(path, oid):
    db = ZODB.DB(FileStorage(path, read_only=True))
    conn = db.open()
    a = conn.get(oid)
    f = a.zfile
    bs = f.blksize
    out = numpy.empty(a.nbytes, dtype=numpy.uint8)
    mem = memoryview(out)
    blocks = 0
    for blk in range((a.nbytes + bs - 1) // bs):
        page = mem[blk * bs:(blk + 1) * bs]
        zblk = f.blktab.get(blk)
        if zblk is None:
            page[:] = b'\0' * len(page)
            continue
        data = zblk.loadblkdata()
        n = min(len(data), len(page))
        page[:n] = data[:n]
        if n < len(page):
            page[n:] = b'\0' * (len(page) - n)
        blocks += 1
    view = numpy.ndarray(a.shape, a.dtype, buffer=out, strides=a._stridev)
    conn.close()
    db.close()
    return view, blocks


def main():
    path, oid, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with open(path, 'rb') as f:
        while f.read(1 << 24):
            pass
    best = None
    for _ in range(runs):
        t0 = time.perf_counter()
        view, blocks = read_array(path, oid.to_bytes(8, 'big'))
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
        nbytes = view.nbytes
        del view
    json.dump({'read_s': best, 'nbytes': nbytes, 'blocks': blocks}, sys.stdout)


if __name__ == '__main__':
    main()
