"""Real BTrees write conflicts and what ZODB makes of them, as JSON lines.

Two connections of one database (a FileStorage in a temporary directory)
start from the same committed state, each changes the same BTrees
structure at random (inserts, deletes, value changes), and both commit.
The second commit conflicts; FileStorage calls its
``tryToResolveConflict``, which this script wraps to record, for every
conflict:

- ``old``, ``committed``, ``new``: the three records (hex), exactly as the
  storage has them;
- ``resolved``: the record ``tryToResolveConflict`` returned (hex), or
- ``reason``: ``[p1, p2, p3, reason]`` of the ``BTreesConflictError`` that
  the class's ``_p_resolveConflict`` raises on those states, or
- ``error``: the name of any other exception it raises (a comparison
  Python refuses).

Usage: python btrees_conflicts.py SEED COUNT
"""

import json
import os
import random
import shutil
import sys
import tempfile

import transaction
from BTrees import (IFBTree, IIBTree, IOBTree, LFBTree, LLBTree, LOBTree,
                    OIBTree, OLBTree, OOBTree, QQBTree, UUBTree)
from BTrees.Interfaces import BTreesConflictError
from BTrees.Length import Length
from persistent.mapping import PersistentMapping
from ZODB import DB
from ZODB.ConflictResolution import PersistentReferenceFactory, find_global
from ZODB.ConflictResolution import state as record_state
from ZODB.FileStorage import FileStorage
from ZODB.POSException import ConflictError


MODULES = {
    'OO': OOBTree, 'IO': IOBTree, 'OI': OIBTree, 'II': IIBTree,
    'LO': LOBTree, 'OL': OLBTree, 'LL': LLBTree, 'IF': IFBTree,
    'LF': LFBTree, 'QQ': QQBTree, 'UU': UUBTree,
}
KINDS = ('Bucket', 'Set', 'BTree', 'TreeSet')


def reason_of(storage, oid, old, committed, new):
    """What the class's _p_resolveConflict raises on the three states."""
    prf = PersistentReferenceFactory()
    import io
    from ZODB._compat import PersistentUnpickler
    u = PersistentUnpickler(find_global, prf.persistent_load,
                            io.BytesIO(new))
    meta = u.load()
    klass = meta[0] if isinstance(meta, tuple) else meta
    new_state = u.load()
    old_state = record_state(storage, oid, None, prf, old)
    com_state = record_state(storage, oid, None, prf, committed)
    inst = klass.__new__(klass)
    try:
        inst._p_resolveConflict(old_state, com_state, new_state)
    except BTreesConflictError as e:
        return {'reason': [e.p1, e.p2, e.p3, e.reason]}
    except Exception as e:  # noqa: BLE001 what Python refuses, by name
        return {'error': type(e).__name__}
    return {'error': 'resolved on a second try'}


def capture(storage, cases):
    orig = storage.tryToResolveConflict

    def wrapper(oid, committedSerial, oldSerial, newpickle,
                committedData=b''):
        old = storage.loadSerial(oid, oldSerial)
        committed = committedData or storage.loadSerial(oid, committedSerial)
        case = {'old': old.hex(), 'committed': committed.hex(),
                'new': newpickle.hex()}
        try:
            res = orig(oid, committedSerial, oldSerial, newpickle,
                       committedData)
        except ConflictError:
            case.update(reason_of(storage, oid, old, committed, newpickle))
            cases.append(case)
            raise
        case['resolved'] = res.hex()
        cases.append(case)
        return res

    storage.tryToResolveConflict = wrapper


class Gen:
    def __init__(self, rnd, prefix, refs):
        self.r = rnd
        self.prefix = prefix
        self.refs = refs
        self.key_domain = rnd.choice(['str', 'short', 'int', 'bytes',
                                      'text']) if prefix[0] == 'O' else 'int'
        self.value_domain = rnd.choice(['str', 'int', 'mixed', 'refs'])

    def key(self):
        r, d = self.r, self.key_domain
        k = self.prefix[0]
        if k == 'I':
            return r.choice([r.randrange(-50, 50), r.randrange(-2**31, 2**31)])
        if k == 'L':
            return r.choice([r.randrange(-50, 50), r.randrange(-2**63, 2**63)])
        if k == 'U':
            return r.choice([r.randrange(0, 60), r.randrange(0, 2**32)])
        if k == 'Q':
            return r.choice([r.randrange(0, 60), r.randrange(0, 2**64)])
        if d == 'str':
            return 'k%03d' % r.randrange(200)
        if d == 'short':
            return r.choice('abcdefghijklmnopqrstuvwxyzé')
        if d == 'int':
            return r.randrange(-100, 100)
        if d == 'bytes':
            return bytes([r.randrange(256)]) * r.randrange(0, 3)
        return r.choice(['ä', 'ü', '日本', 'naïve', 'z', '', 'x' * 30])

    def value(self):
        r = self.r
        v = self.prefix[1]
        if v == 'I':
            return r.randrange(-2**31, 2**31)
        if v == 'L':
            return r.randrange(-2**63, 2**63)
        if v == 'U':
            return r.randrange(0, 2**32)
        if v == 'Q':
            return r.randrange(0, 2**64)
        if v == 'F':
            return r.choice([0.5, 1.25, -3.0, float(r.randrange(1000)) / 8])
        d = self.value_domain
        if d == 'str':
            return r.choice(['a', 'b', 'value', 'é', '', 'long' * 5])
        if d == 'int':
            return r.choice([0, 1, 2, 300, 2**40, -7])
        if d == 'refs':
            return r.choice(self.refs)
        return r.choice([None, 1, 2.5, 'x', b'y', b'', (1, 'a'), (),
                         2**70])


def mutate(obj, gen, is_set, n):
    r = gen.r
    for _ in range(n):
        keys = list(obj.keys())
        op = r.random()
        if keys and op < 0.35:
            if is_set:
                obj.remove(r.choice(keys))
            else:
                del obj[r.choice(keys)]
        elif keys and op < 0.65 and not is_set:
            obj[r.choice(keys)] = gen.value()
        else:
            k = gen.key()
            if is_set:
                obj.add(k)
            else:
                obj[k] = gen.value()


def split_case(rnd, db, i):
    """Trees with children: bucket splits on one or both sides, so that
    the tree nodes conflict (reason 11) or a bucket's next pointer moves
    under a change of the other side (reason 0)."""
    prefix = rnd.choice(['IO', 'II', 'LL', 'OO'])
    cls = getattr(MODULES[prefix], prefix + 'BTree')
    key = (lambda n: 'k%06d' % n) if prefix[0] == 'O' else (lambda n: n)
    tm = transaction.TransactionManager()
    c = db.open(tm)
    c.root()['obj%d' % i] = t = cls()
    for n in range(0, 3000, 5):
        t[key(n)] = 1
    tm.commit()
    c.close()
    lo = rnd.randrange(0, 2500)
    if rnd.random() < 0.5:
        # Both split buckets, far apart: only the tree nodes conflict.
        plans = [(lo, 300), (lo + 2000, 300)]
    else:
        # One splits the bucket the other adds a key to.
        plans = [(lo, 300), (lo + 1, 1)]
    conns = []
    for start, count in plans:
        tmx = transaction.TransactionManager()
        cx = db.open(tmx)
        tx = cx.root()['obj%d' % i]
        for n in range(start, start + count):
            if n % 5:
                tx[key(n)] = 2
        conns.append((tmx, cx))
    return conns


def one_case(rnd, db, i):
    if rnd.random() < 0.1:
        conns = split_case(rnd, db, i)
    elif rnd.random() < 0.08:
        tm = transaction.TransactionManager()
        c = db.open(tm)
        c.root()['obj%d' % i] = Length(rnd.randrange(-5, 100))
        tm.commit()
        c.close()
        conns = []
        for _ in range(2):
            tmx = transaction.TransactionManager()
            cx = db.open(tmx)
            cx.root()['obj%d' % i].change(rnd.randrange(-20, 20))
            conns.append((tmx, cx))
    else:
        prefix = rnd.choice(list(MODULES))
        kind = rnd.choice(KINDS)
        is_set = kind in ('Set', 'TreeSet')
        cls = getattr(MODULES[prefix], prefix + kind)
        tm = transaction.TransactionManager()
        c = db.open(tm)
        refs = []
        for j in range(3):
            m = PersistentMapping()
            c.root()['ref%d_%d' % (i, j)] = m
            refs.append(m)
        tm.commit()
        gen = Gen(rnd, prefix, refs)
        obj = cls()
        c.root()['obj%d' % i] = obj
        size = rnd.choice([0, 1, 3, 8, 20, 60, 150])
        mutate(obj, gen, is_set, size)
        tm.commit()
        c.close()
        conns = []
        for _ in range(2):
            tmx = transaction.TransactionManager()
            cx = db.open(tmx)
            gen.refs = [cx.root()['ref%d_%d' % (i, j)] for j in range(3)]
            mutate(cx.root()["obj%d" % i], gen, is_set,
                   rnd.choice([1, 2, 3, 4, 40]))
            conns.append((tmx, cx))
    for tmx, cx in conns:
        try:
            tmx.commit()
        except ConflictError:
            tmx.abort()
        except Exception:  # noqa: BLE001 a refused key type, say
            tmx.abort()
        cx.close()


def main():
    seed, count = int(sys.argv[1]), int(sys.argv[2])
    rnd = random.Random(seed)
    d = tempfile.mkdtemp(prefix='btrees_conflicts')
    try:
        fs = FileStorage(os.path.join(d, 'Data.fs'))
        cases = []
        capture(fs, cases)
        db = DB(fs)
        for i in range(count):
            one_case(rnd, db, i)
        db.close()
    finally:
        shutil.rmtree(d)
    for c in cases:
        print(json.dumps(c))


if __name__ == '__main__':
    main()
