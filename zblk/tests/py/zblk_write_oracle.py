"""The Python side of zblk's writer tests.

    zblk_write_oracle.py apply OPS.json DB
        Creates the FileStorage DB and runs the operation script OPS.json
        through ZODB 6.4, BTrees and the wendelin.core stand-ins, each
        transaction at the tid the script gives (FileStorage.tpc_begin is
        handed it, as `tpc_begin(txn, tid)` allows), so that the Rust
        writer, running the same script at the same tids, must produce the
        same file byte for byte.

    zblk_write_oracle.py verify OPS.json DB
        Opens DB read-only (Python 2 `FS21` files through the same patch as
        tests/py/reftool.py) and checks that every array the script made
        reads as the script's bytes say (`A[:]` as wendelin.core builds it,
        compared with an ndarray over the expected file image), that every
        blktab and chunktab passes BTrees' check() and _check(), and that
        every stored block has the format the script expects when it says.
        Prints `ok N`.

    zblk_write_oracle.py readall DB OUTDIR
        Opens DB read-only (FS21 through the patch) and, for every root entry
        that is a ZBigFile or ZBigArray, writes OUTDIR/KEY.bin: the file's
        bytes ((maxKey+1)*blksize, holes as zeros), or the array's `A[:]`
        bytes in its own order; checks every blktab and chunktab with
        BTrees' check(); prints a JSON summary (shape, dtype, order).

    zblk_write_oracle.py dtypes DESCRS.json
        Prints, as JSON, the hex of the pickle (protocol 3, zodbpickle) of
        numpy.lib.format.descr_to_dtype(descr) for every descr (a Python
        literal, as .npy headers hold).

The script: {"tids": [hex, ...], "txns": [[op, ...], ...]}. tids[0] is
the "initial database creation" transaction DB() makes, tids[i] the i-th
transaction of txns. Ops (data files hold raw bytes):

    {"op": "create", "key": K, "shape": [...], "descr": LITERAL, "order": "C"|"F", "blksize": N}
    {"op": "format", "fmt": "ZBlk0"|"ZBlk1"|"auto"}    format of the writeout at commit
    {"op": "write", "key": K, "offset": N, "data": PATH}  through virtual memory
    {"op": "storeblk", "key": K, "blk": N, "data": PATH, "fmt": F}  ZBigFile.storeblk now
    {"op": "resize", "key": K, "shape": [...]}
    {"op": "append", "key": K, "data": PATH}
    {"op": "convert", "key": K, "to": "ZBlk0"|"ZBlk1"}
    {"op": "drop_order", "key": K}   the array as saved before wendelin.core
                                     0.6 (no `_order`); Python side only

The script may also say "protocol" (ZODB's pickle protocol, default 3),
and "continue": true to run on an existing DB (tids[0] is then unused).

Writes go through a model of wendelin's virtual memory: every block a
write touches is a dirty page (loaded once, then changed in memory), and
before ZODB commits, the dirty pages of each file (files in the order they
were first written) are stored in ascending block order with the format in
force (fileh_dirty_writeout, which wendelin runs as a data manager sorting
before the Connection).
"""

import ast
import json
import os
import sys

import numpy
import transaction
from numpy.lib.format import descr_to_dtype

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def read_magic(path):
    with open(path, 'rb') as f:
        return f.read(4)


def patch_fs21_if_needed(path):
    if read_magic(path) == b'FS21':
        sys.path.insert(0, os.path.join(HERE, '..', '..', '..', 'tests', 'py'))
        import reftool
        reftool.patch_for_fs21()


class VM:
    """Dirty pages of the files written in one transaction."""

    def __init__(self):
        self.files = []     # [(zfile, {blk: bytearray})] in first-write order

    def pages(self, zf):
        for f, pages in self.files:
            if f is zf:
                return pages
        pages = {}
        self.files.append((zf, pages))
        return pages

    def write(self, zf, offset, data):
        bs = zf.blksize
        pages = self.pages(zf)
        pos = 0
        while pos < len(data):
            at = offset + pos
            blk, within = divmod(at, bs)
            n = min(bs - within, len(data) - pos)
            page = pages.get(blk)
            if page is None:
                page = bytearray(bs)
                zf.loadblk(blk, page)
                pages[blk] = page
            page[within:within + n] = data[pos:pos + n]
            pos += n

    def writeout(self, W):
        for zf, pages in self.files:
            for blk in sorted(pages):
                zf.storeblk(blk, bytes(pages[blk]))
        self.files = []


def major_axis(a):
    return int(numpy.argmax(a._stridev))


def slab_bytes(a):
    m = major_axis(a)
    n = a._dtype.itemsize
    for i, d in enumerate(a._shape):
        if i != m:
            n *= d
    return n


def load_data(path):
    with open(path, 'rb') as f:
        return f.read()


def apply(ops_path, db_path):
    import wendelin_standin as W
    from ZODB import DB
    from ZODB.FileStorage import FileStorage

    with open(ops_path) as f:
        ops = json.load(f)
    tids = [bytes.fromhex(t) for t in ops['tids']]
    if ops.get('protocol', 3) != 3:
        import ZODB.serialize
        ZODB.serialize._protocol = ops['protocol']
    fs = FileStorage(db_path, create=not ops.get('continue'))
    orig = fs.tpc_begin
    current = {'tid': tids[0]}

    def tpc_begin(txn, tid=None, status=' '):
        return orig(txn, current['tid'], status)
    fs.tpc_begin = tpc_begin
    db = DB(fs)
    conn = db.open()
    root = conn.root()
    vm = VM()
    W.ZBlk_fmt_write = 'ZBlk0'
    for i, txn in enumerate(ops['txns']):
        current['tid'] = tids[i + 1]
        for op in txn:
            kind = op['op']
            if kind == 'create':
                dt = descr_to_dtype(ast.literal_eval(op['descr']))
                root[op['key']] = W.ZBigArray(tuple(op['shape']), dt, op['order'], op['blksize'])
                continue
            if kind == 'format':
                W.ZBlk_fmt_write = op['fmt']
                continue
            a = root[op['key']]
            zf = a.zfile
            if kind == 'write':
                vm.write(zf, op['offset'], load_data(op['data']))
            elif kind == 'storeblk':
                data = load_data(op['data']).ljust(zf.blksize, b'\0')
                zf.storeblk(op['blk'], data, op['fmt'])
            elif kind == 'resize':
                a.resize(tuple(op['shape']))
            elif kind == 'append':
                data = load_data(op['data'])
                m = major_axis(a)
                slab = slab_bytes(a)
                n = a._shape[m]
                shape = list(a._shape)
                shape[m] = n + len(data) // slab
                a.resize(tuple(shape))
                vm.write(zf, n * slab, data)
            elif kind == 'drop_order':
                del a.__dict__['_order']
                a._p_changed = True
            elif kind == 'convert':
                for blk, z in list(zf.blktab.items()):
                    if type(z).__name__ == op['to']:
                        continue
                    buf = bytearray(zf.blksize)
                    zf.loadblk(blk, buf)
                    zf.storeblk(blk, bytes(buf), op['to'])
            else:
                raise SystemExit('unknown op %r' % kind)
        vm.writeout(W)
        transaction.commit()
    conn.close()
    db.close()
    print('ok')


class Model:
    """The script's arrays as plain bytes: what reading must give."""

    def __init__(self):
        self.arrays = {}

    def run(self, ops):
        for txn in ops['txns']:
            for op in txn:
                kind = op['op']
                if kind in ('format', 'drop_order'):
                    continue
                if kind == 'create':
                    dt = descr_to_dtype(ast.literal_eval(op['descr']))
                    self.arrays[op['key']] = {
                        'dtype': dt, 'shape': tuple(op['shape']), 'order': op['order'],
                        'image': bytearray(), 'blksize': op['blksize'], 'formats': {},
                    }
                    continue
                a = self.arrays[op['key']]
                if kind == 'write':
                    self.put(a, op['offset'], load_data(op['data']))
                elif kind == 'storeblk':
                    data = load_data(op['data']).ljust(a['blksize'], b'\0')
                    self.put(a, op['blk'] * a['blksize'], data)
                elif kind == 'resize':
                    a['shape'] = tuple(op['shape'])
                elif kind == 'append':
                    data = load_data(op['data'])
                    strides = self.strides(a)
                    m = int(numpy.argmax(strides))
                    slab = a['dtype'].itemsize
                    for i, d in enumerate(a['shape']):
                        if i != m:
                            slab *= d
                    n = a['shape'][m]
                    shape = list(a['shape'])
                    shape[m] = n + len(data) // slab
                    a['shape'] = tuple(shape)
                    self.put(a, n * slab, data)

    @staticmethod
    def put(a, offset, data):
        img = a['image']
        if len(img) < offset + len(data):
            img.extend(bytes(offset + len(data) - len(img)))
        img[offset:offset + len(data)] = data

    @staticmethod
    def strides(a):
        shape, item = a['shape'], a['dtype'].itemsize
        out = []
        for i in range(len(shape)):
            if a['order'] == 'C':
                n = 1
                for d in shape[i + 1:]:
                    n *= d
            else:
                n = 1
                for d in shape[:i]:
                    n *= d
            out.append(n * item)
        return tuple(out)


def verify(ops_path, db_path):
    patch_fs21_if_needed(db_path)
    import BTrees.check
    import wendelin_standin as W
    from ZODB import DB
    from ZODB.FileStorage import FileStorage

    with open(ops_path) as f:
        ops = json.load(f)
    model = Model()
    model.run(ops)
    db = DB(FileStorage(db_path, read_only=True))
    conn = db.open()
    root = conn.root()
    n = 0
    for key, want in sorted(model.arrays.items()):
        a = root[key]
        assert a._shape == want['shape'], (key, a._shape, want['shape'])
        assert a._dtype == want['dtype'], (key, a._dtype, want['dtype'])
        assert a._order == want['order'], (key, a._order, want['order'])
        strides = Model.strides(want)
        assert a._stridev == strides, (key, a._stridev, strides)
        got = W.array_view(a)
        span = W.span(a)
        img = bytes(want['image'][:span]).ljust(span, b'\0')
        exp = numpy.ndarray(want['shape'], want['dtype'], buffer=img, offset=0, strides=strides)
        assert got.tobytes(order='A') == exp.tobytes(order='A'), key
        tab = a.zfile.blktab
        tab._check()
        BTrees.check.check(tab)
        for blk, z in tab.items():
            if type(z).__name__ == 'ZBlk1':
                z.chunktab._check()
                BTrees.check.check(z.chunktab)
                for start, chunk in z.chunktab.items():
                    assert start % 4096 == 0, (key, blk, start)
                    assert 0 < len(chunk.data) <= 4096, (key, blk, start)
                    assert chunk.data[-1:] != b'\0', (key, blk, start)
            n += 1
        n += 1
    conn.close()
    db.close()
    print('ok %d' % n)


def readall(db_path, outdir):
    patch_fs21_if_needed(db_path)
    import BTrees.check
    import wendelin_standin as W
    from ZODB import DB
    from ZODB.FileStorage import FileStorage

    db = DB(FileStorage(db_path, read_only=True))
    conn = db.open()
    root = conn.root()
    summary = {}
    for key in sorted(root.keys()):
        v = root[key]
        if isinstance(v, W.ZBigArray):
            zf = v.zfile
            data = W.array_view(v).tobytes(order=v._order)
            summary[key] = {'shape': list(v._shape), 'dtype': v._dtype.str,
                            'order': v._order}
        elif isinstance(v, W.ZBigFile):
            zf = v
            data = zf.read(zf.nblocks() * zf.blksize)
            summary[key] = {'size': len(data)}
        else:
            continue
        zf.blktab._check()
        BTrees.check.check(zf.blktab)
        formats = {}
        for blk, z in zf.blktab.items():
            formats[type(z).__name__] = formats.get(type(z).__name__, 0) + 1
            if type(z).__name__ == 'ZBlk1':
                z.chunktab._check()
                BTrees.check.check(z.chunktab)
        summary[key]['formats'] = formats
        with open(os.path.join(outdir, key + '.bin'), 'wb') as f:
            f.write(bytes(data))
    conn.close()
    db.close()
    print(json.dumps(summary, sort_keys=True))


def dtypes(path):
    import zodbpickle.pickle
    with open(path) as f:
        descrs = json.load(f)
    out = []
    for d in descrs:
        dt = descr_to_dtype(ast.literal_eval(d))
        out.append(zodbpickle.pickle.dumps(dt, 3).hex())
    print(json.dumps(out))


def main():
    cmd = sys.argv[1]
    if cmd == 'apply':
        apply(sys.argv[2], sys.argv[3])
    elif cmd == 'verify':
        verify(sys.argv[2], sys.argv[3])
    elif cmd == 'readall':
        readall(sys.argv[2], sys.argv[3])
    elif cmd == 'dtypes':
        dtypes(sys.argv[2])
    else:
        raise SystemExit('unknown command %r' % cmd)


if __name__ == '__main__':
    main()
