"""The Python side of zblk's round-trip tests.

    zblk_oracle.py gen OUTDIR SEED [PROTOCOL]
        Builds OUTDIR/Data.fs with ZBigArrays of random shapes, dtypes
        (big-endian, structured, subarray, datetime, strings...), orders,
        block sizes and block formats (ZBlk0, ZBlk1, wendelin's `auto`
        heuristic, a per-block mix, legacy unstripped `ZBlk`), over several
        transactions of writes, zeroing, resizes and appends, some arrays
        losing `_order` as arrays saved before wendelin.core 0.6 lack it.
        PROTOCOL (default 3) is the pickle protocol ZODB writes with: below
        3, Python 3 bytes become `_codecs.encode(..., 'latin1')`.

        Then reopens the database and writes, for every array as of every
        transaction, what Python sees (`A[:]` as wendelin.core builds it):
        its bytes in C and in Fortran order, `np.save` of it, and a JSON
        manifest (OUTDIR/manifest.json) of the geometry and the blocks.

    zblk_oracle.py check-npy MANIFEST
        np.load()s every `ours` .npy the Rust test wrote next to the
        expected ones and checks it equals the array: shape, dtype,
        contiguity and bytes. Prints `ok N`.
"""

import json
import os
import sys

import numpy
import transaction
from numpy.lib import format as npformat
from ZODB import DB
from ZODB.FileStorage import FileStorage
from ZODB.utils import get_pickle_metadata, p64, u64

# No __pycache__ beside the stand-in in the source tree.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wendelin_standin as W  # noqa: E402

DTYPES = [
    '<f8', '>f8', '<i4', '>i4', 'u1', '?', '<u2', '>i8', '<c16', '>c8', '<f2', '>f4',
    'S5', '<U3', '>U2', 'V7', '<M8[ns]', '>m8[s]', '<M8[25s]',
    [('x', '<i4'), ('y', '>f8')],
    [('a', '<i2', (2, 3)), ('b', 'S3')],
    {'names': ['p', 'q'], 'formats': ['u1', '>f8'], 'offsets': [0, 8], 'itemsize': 24},
    [(('the title', 'x'), '<i4'), ('n', [('u', '>u2'), ('v', '<f4', (2,))])],
    ('<f4', (2, 2)),
]
FORMATS = ['ZBlk0', 'ZBlk1', 'auto', 'mix', 'ZBlk']
BLKSIZES = [4096, 8192, 65536, 2 << 20]


def make_dtype(spec, rng):
    if spec == 'aligned':
        return numpy.dtype([('x', 'u1'), ('y', '<i4')], align=True)
    return numpy.dtype(spec)


def random_array_spec(rng):
    dt = make_dtype(DTYPES[rng.integers(len(DTYPES))] if rng.random() < 0.95 else 'aligned', rng)
    ndim = int(rng.choice([0, 1, 1, 2, 2, 3]))
    blksize = int(rng.choice(BLKSIZES))
    budget = int(rng.choice([3000, 40000, 400000, 1200000]))
    nitems = max(1, budget // dt.itemsize)
    shape = []
    for i in range(ndim):
        left = max(1, nitems // max(1, mul(shape)))
        d = int(rng.integers(1, max(2, round(left ** (1.0 / (ndim - i))) * 2)))
        shape.append(d)
    if ndim and rng.random() < 0.05:
        shape[int(rng.integers(ndim))] = 0
    order = 'F' if (ndim >= 2 and rng.random() < 0.5) else 'C'
    fmt = str(rng.choice(FORMATS))
    return tuple(shape), dt, order, blksize, fmt


def mul(xs):
    v = 1
    for x in xs:
        v *= x
    return v


def random_values(rng, shape, dtype, sparse):
    n = mul(shape) * dtype.itemsize
    raw = rng.integers(0, 256, size=n, dtype=numpy.uint8)
    if sparse:
        raw[rng.random(n) < 0.9] = 0
    if n == 0:
        return numpy.zeros(shape, dtype)
    return numpy.frombuffer(raw.tobytes(), dtype=dtype).reshape(shape)


def random_index(rng, shape):
    idx = []
    for d in shape:
        if d == 0 or rng.random() < 0.4:
            idx.append(slice(None))
        else:
            a = int(rng.integers(d))
            b = int(rng.integers(a, d + 1))
            idx.append(slice(a, b))
    return tuple(idx)


def write(a, fmt, rng, idx, values):
    """a[idx] = values, through the file: read the image, change it in an
    ndarray view, store the blocks that changed."""
    size = max(W.span(a), a.zfile.nblocks() * a.zfile.blksize)
    old = a.zfile.read(size)
    new = bytearray(old)
    view = W.array_view(a, image=new)
    view[idx] = values
    if fmt == 'mix':
        bs = a.zfile.blksize
        n = max(len(old), len(new))
        for blk in range((n + bs - 1) // bs):
            part_old = bytes(old[blk * bs:(blk + 1) * bs])
            part_new = bytes(new[blk * bs:(blk + 1) * bs])
            if part_old != part_new:
                a.zfile.storeblk(blk, part_new.ljust(bs, b'\0'), str(rng.choice(['ZBlk0', 'ZBlk1'])))
    else:
        a.zfile.write(old, new, fmt)


def commit():
    # New format-0 blocks of the legacy kind pickle under the name `ZBlk`
    # only while the module's `ZBlk` is their class; ZBlk0 blocks pickle
    # under their own name either way.
    W.use_legacy_name(True)
    try:
        transaction.commit()
    finally:
        W.use_legacy_name(False)


def field_mask(dt):
    """Which bytes of an item belong to a field (hex, 'ff' or '00' per
    byte), '' when all do. NumPy copies structured items field by field
    into uninitialized memory, so the other bytes of `tobytes()` of a
    reordered array are garbage and must not be compared."""
    m = bytearray(dt.itemsize)

    def walk(d, base):
        if d.names is None:
            if d.subdtype is not None and d.subdtype[0].names is not None:
                sub, shape = d.subdtype
                for i in range(mul(shape)):
                    walk(sub, base + i * sub.itemsize)
            else:
                m[base:base + d.itemsize] = b'\xff' * d.itemsize
            return
        for name in d.names:
            fd, off = d.fields[name][:2]
            walk(fd, base + off)
    walk(dt, 0)
    return '' if all(m) else m.hex()


def gen(outdir, seed, protocol):
    if protocol != 3:
        import ZODB.serialize
        ZODB.serialize._protocol = protocol
    rng = numpy.random.default_rng(seed)
    path = os.path.join(outdir, 'Data.fs')
    db = DB(FileStorage(path))
    conn = db.open()
    root = conn.root()
    arrays = []
    for i in range(int(rng.integers(3, 7))):
        shape, dt, order, blksize, fmt = random_array_spec(rng)
        a = W.ZBigArray(shape, dt, order, blksize)
        root['a%d' % i] = a
        arrays.append({'name': 'a%d' % i, 'fmt': fmt, 'frozen': False})
    commit()
    tids = [conn._storage.lastTransaction()]
    for _ in range(int(rng.integers(3, 7))):
        for ent in arrays:
            if rng.random() < 0.4:
                continue
            a = root[ent['name']]
            if rng.random() < 0.15:
                ent['fmt'] = str(rng.choice(FORMATS))
            op = rng.random()
            if ent['frozen']:
                op = 0.0
            if op < 0.55 or not a.shape:
                idx = random_index(rng, a.shape)
                target = W.array_view(a, image=bytearray(W.span(a)))[idx]
                write(a, ent['fmt'], rng, idx,
                      random_values(rng, target.shape, target.dtype, rng.random() < 0.3))
            elif op < 0.65:
                idx = random_index(rng, a.shape)
                zeros = numpy.zeros((), W.array_view(a, image=bytearray(W.span(a))).dtype)
                write(a, ent['fmt'], rng, idx, zeros)
            elif op < 0.8:
                m = int(a._major_axis)
                shape = list(a.shape)
                shape[m] = int(rng.integers(0, shape[m] * 2 + 2))
                a.resize(tuple(shape))
            elif op < 0.93:
                m = int(a._major_axis)
                n = a.shape[m]
                delta = int(rng.integers(1, max(2, n // 2 + 2)))
                shape = list(a.shape)
                shape[m] = n + delta
                a.resize(tuple(shape))
                idx = [slice(None)] * len(shape)
                idx[m] = slice(n, None)
                target = W.array_view(a, image=bytearray(W.span(a)))[tuple(idx)]
                write(a, ent['fmt'], rng, tuple(idx),
                      random_values(rng, target.shape, target.dtype, rng.random() < 0.3))
            elif a._order == 'C':
                # An array as saved before _order existed (wendelin.core < 0.6).
                del a.__dict__['_order']
                a._p_changed = True
                ent['frozen'] = True
        commit()
        tids.append(conn._storage.lastTransaction())
    if not any(ent['frozen'] for ent in arrays):
        # Make sure one array lacks _order, as arrays from before 0.6 do.
        for ent in arrays:
            a = root[ent['name']]
            if a._order == 'C':
                del a.__dict__['_order']
                a._p_changed = True
                commit()
                tids.append(conn._storage.lastTransaction())
                break
    oids = {ent['name']: root[ent['name']]._p_oid for ent in arrays}
    conn.close()
    db.close()

    # What Python sees, read back through a fresh database.
    storage = FileStorage(path, read_only=True)
    db = DB(storage)
    checks = []
    for tid in sorted(set(tids)):
        conn = db.open(at=tid)
        for name, oid in sorted(oids.items()):
            a = conn.get(oid)
            view = W.array_view(a)
            base = '%s_%s' % (name, tid.hex())
            with open(os.path.join(outdir, base + '.C'), 'wb') as f:
                f.write(view.tobytes(order='C'))
            with open(os.path.join(outdir, base + '.F'), 'wb') as f:
                f.write(view.tobytes(order='F'))
            numpy.save(os.path.join(outdir, base + '.npy'), view)
            blocks = {}
            for blk, zref in a.zfile.blktab.items():
                data = storage.loadBefore(zref._p_oid, p64(u64(tid) + 1))[0]
                cls = get_pickle_metadata(data)[1]
                blocks[cls] = blocks.get(cls, 0) + 1
            hdr = npformat.header_data_from_array_1_0(view)
            # __setstate__ fills in a missing _order: look at the record.
            record = storage.loadBefore(oid, p64(u64(tid) + 1))[0]
            checks.append({
                'name': name,
                'oid': u64(oid),
                'tid': tid.hex(),
                'base': base,
                'shape': list(a._shape),
                'dtype_str': a._dtype.str,
                'descr': repr(hdr['descr']),
                'fortran_order': hdr['fortran_order'],
                'order': a._order if b'_order' in record else None,
                'stridev': list(a._stridev),
                'itemsize': a._dtype.itemsize,
                'nbytes': view.nbytes,
                'view_shape': list(view.shape),
                'field_mask': field_mask(view.dtype),
                'blksize': a.zfile.blksize,
                'nblocks': a.zfile.nblocks(),
                'blocks': blocks,
            })
        conn.close()
    db.close()
    with open(os.path.join(outdir, 'manifest.json'), 'w') as f:
        json.dump({'db': path, 'seed': seed, 'protocol': protocol, 'checks': checks}, f, indent=1)
    print('arrays %d checks %d' % (len(oids), len(checks)))


def check_npy(manifest):
    with open(manifest) as f:
        m = json.load(f)
    outdir = os.path.dirname(os.path.abspath(manifest))
    n = 0
    for c in m['checks']:
        want = numpy.load(os.path.join(outdir, c['base'] + '.npy'))
        got = numpy.load(os.path.join(outdir, c['base'] + '.ours.npy'))
        where = '%s@%s' % (c['name'], c['tid'])
        assert got.shape == want.shape, (where, got.shape, want.shape)
        assert got.dtype == want.dtype, (where, got.dtype, want.dtype)
        assert got.flags.f_contiguous == want.flags.f_contiguous, where
        assert got.flags.c_contiguous == want.flags.c_contiguous, where
        mask = bytes.fromhex(c['field_mask'])
        if mask:
            mask = numpy.frombuffer(mask * got.size, dtype=numpy.uint8).astype(bool)
            g = numpy.frombuffer(got.tobytes(order='A'), dtype=numpy.uint8)
            w = numpy.frombuffer(want.tobytes(order='A'), dtype=numpy.uint8)
            assert (g[mask] == w[mask]).all(), where
        else:
            assert got.tobytes(order='A') == want.tobytes(order='A'), where
        n += 1
    print('ok %d' % n)


def main():
    cmd = sys.argv[1]
    if cmd == 'gen':
        protocol = int(sys.argv[4]) if len(sys.argv) > 4 else 3
        gen(sys.argv[2], int(sys.argv[3]), protocol)
    elif cmd == 'check-npy':
        check_npy(sys.argv[2])
    else:
        raise SystemExit('unknown command %r' % cmd)


if __name__ == '__main__':
    main()
