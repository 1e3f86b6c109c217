"""Python reference timings for `zodbrs bench array-write`.

Usage: python py_array_write_bench.py DIR NPY BLKSIZE FORMAT TXN_BLOCKS

The way wendelin.core writes a big array: a fresh FileStorage in DIR,
`root['a'] = ZBigArray(shape, dtype, order, blksize)` and commit, then
for every block ZBigFile.storeblk(blk, data) (the block's bytes, as
wendelin's virtual memory hands dirty pages to it at commit) in FORMAT
(ZBlk0, ZBlk1 or auto), a commit every TXN_BLOCKS blocks. Two runs:

- write_s: the array's bytes already in memory (the .npy read into a
  bytes object first, not timed): ZODB pickling, FileStorage writing and
  fsync per commit, what our Writer measures;
- import_s: the same from the .npy file (numpy.load with mmap_mode='r',
  the page-cached file read block by block), what `zodbrs array import`
  measures.

All-zero blocks are skipped as holes on both sides. Prints JSON.

`zodbrs bench` runs this text after wendelin_standin.py's, so the
stand-in classes are already defined when it is not importable.
"""
import json
import os
import sys
import time

import numpy
import transaction
import ZODB
from ZODB.FileStorage import FileStorage

try:
    import wendelin_standin as W
except ImportError:
    W = sys.modules['__main__']


def write(path, arr, blksize, fmt, txn_blocks, source):
    for suffix in ('', '.index', '.lock', '.tmp'):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    W.ZBlk_fmt_write = fmt
    t = time.perf_counter()
    db = ZODB.DB(FileStorage(path))
    conn = db.open()
    root = conn.root()
    a = W.ZBigArray(arr.shape, arr.dtype, 'F' if arr.flags.f_contiguous and not arr.flags.c_contiguous else 'C', blksize)
    root['a'] = a
    transaction.commit()
    zf = a.zfile
    n = len(source)
    pending = 0
    blocks = 0
    for blk in range((n + blksize - 1) // blksize):
        data = bytes(source[blk * blksize:(blk + 1) * blksize])
        if not data.strip(b'\0'):
            continue
        zf.storeblk(blk, data.ljust(blksize, b'\0'))
        blocks += 1
        pending += 1
        if pending >= txn_blocks:
            transaction.commit()
            pending = 0
    transaction.commit()
    conn.close()
    db.close()
    return time.perf_counter() - t, blocks


def main():
    d, npy, blksize, fmt, txn_blocks = sys.argv[1:6]
    blksize, txn_blocks = int(blksize), int(txn_blocks)
    path = os.path.join(d, 'py_write.fs')
    arr = numpy.load(npy, mmap_mode='r')
    raw = arr.reshape(-1, order='A').view(numpy.uint8)
    mem = bytes(raw)
    write_s, blocks = write(path, arr, blksize, fmt, txn_blocks, memoryview(mem))
    del mem
    size = os.path.getsize(path)
    import_s, _ = write(path, arr, blksize, fmt, txn_blocks, memoryview(raw))
    for suffix in ('', '.index', '.lock', '.tmp'):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    print(json.dumps({'write_s': write_s, 'import_s': import_s, 'blocks': blocks,
                      'nbytes': arr.nbytes, 'size': size}))


if __name__ == '__main__':
    main()
