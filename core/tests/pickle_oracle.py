"""The Python reference for pickle_oracle.rs.

Reads lines "rec HEX" (a data record) or "ext HEX" (a transaction
extension) on stdin and prints, for each, one line of four fields:

    refs      ZODB.serialize.referencesf(data)        (records only)
    refsb     the same, with Python 2 str read as bytes (errors='bytes')
    meta      ZODB.utils.get_pickle_metadata(data)    (records only)
    dis       zodbpickle pickletools_3.dis of its pickles with one memo

Values are hex (oids joined by ',', texts UTF-8 then hex); a field whose
Python call raised is '!' and the exception name; '-' means not applicable.
"""
import io
import sys

from zodbpickle import pickle as zpickle
from zodbpickle import pickletools_3 as pt
from ZODB.serialize import referencesf
from ZODB.utils import get_pickle_metadata


def refs_as_bytes(p):
    # referencesf, but unpickling Python 2 str the way ZODB unpickles
    # extensions, so non-ASCII py2 str does not stop it.
    refs = []
    u = zpickle.Unpickler(io.BytesIO(p), encoding="ASCII", errors="bytes")
    u.persistent_load = refs.append
    u.noload()
    u.noload()
    oids = []
    for r in refs:
        if isinstance(r, tuple):
            oid = r[0]
        elif isinstance(r, (bytes, str)):
            oid = r
        else:
            assert isinstance(r, list)
            continue
        if not isinstance(oid, bytes):
            oid = oid.encode("ascii")
        oids.append(oid)
    return oids


def field(f):
    try:
        return f()
    except Exception as e:
        return "!" + type(e).__name__


def dis(data, n):
    f = io.BytesIO(data)
    out = io.StringIO()
    memo = {}
    for _ in range(n):
        pt.dis(f, out, memo)
    return out.getvalue().encode("utf-8").hex()


for line in sys.stdin:
    kind, data = line.split()
    data = bytes.fromhex(data)
    if kind == "rec":
        refs = field(lambda: ",".join(o.hex() for o in referencesf(data)))
        refsb = field(lambda: ",".join(o.hex() for o in refs_as_bytes(data)))
        meta = field(lambda: ",".join(str(x).encode().hex() for x in get_pickle_metadata(data)))
        text = field(lambda: dis(data, 2))
    else:
        refs = refsb = meta = "-"
        text = field(lambda: dis(data, 1))
    print(refs or "=", refsb or "=", meta, text)
