"""Generate a Data.fs holding one big ZBigArray, for `zodbrs bench array`.

Usage: python gen_array_db.py PATH [--gib G] [--format ZBlk0|ZBlk1]
       [--blksize BYTES] [--blocks-per-txn K]

Writes a float64 ZBigArray of shape (G GiB / 8 / 64, 64), C order, through
a real ZODB connection with the wendelin.core stand-in classes of
zblk/tests/py/wendelin_standin.py: every block filled with random
(incompressible, NUL-free at the end) data and stored as ZBlk0 or ZBlk1,
K blocks per transaction. Prints the array's oid. Deterministic (fixed
seed). Keep the output outside the repository (e.g. /work/bench-data).
"""
import argparse
import os
import sys

import numpy
import transaction
import ZODB
from ZODB.FileStorage import FileStorage

# No __pycache__ beside the stand-in in the source tree.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'zblk', 'tests', 'py'))
import wendelin_standin as W  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('path')
    ap.add_argument('--gib', type=float, default=1.0)
    ap.add_argument('--format', default='ZBlk0', choices=['ZBlk0', 'ZBlk1'])
    ap.add_argument('--blksize', type=int, default=2 << 20)
    ap.add_argument('--blocks-per-txn', type=int, default=32)
    args = ap.parse_args()

    nbytes = int(args.gib * (1 << 30))
    cols = 64
    rows = nbytes // 8 // cols
    db = ZODB.DB(FileStorage(args.path))
    conn = db.open()
    root = conn.root()
    a = W.ZBigArray((rows, cols), numpy.float64, 'C', args.blksize)
    root['array'] = a
    transaction.commit()
    rng = numpy.random.default_rng(1)
    bs = args.blksize
    nblocks = (a.nbytes + bs - 1) // bs
    for blk in range(nblocks):
        data = rng.random(bs // 8).tobytes()
        end = min(bs, a.nbytes - blk * bs)
        block = data[:end].ljust(bs, b'\0')
        a.zfile.storeblk(blk, block, args.format)
        if (blk + 1) % args.blocks_per_txn == 0:
            transaction.commit()
            conn.cacheMinimize()
            print('%d/%d blocks' % (blk + 1, nblocks), file=sys.stderr)
    transaction.commit()
    print('%d' % int.from_bytes(a._p_oid, 'big'))
    conn.close()
    db.close()


if __name__ == '__main__':
    main()
