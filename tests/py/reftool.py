#!/usr/bin/env python3
"""Run a Python reference tool (the oracle) on a Data.fs and print its exact output.

The Rust end-to-end tests call this one script (through `zodb_it::reftool`)
instead of the individual console scripts, because the console scripts cannot
all be used as they are here:

* Python 3 ZODB refuses Python 2 `FS21` files only by comparing the magic
  with a module global; for such files we set that global (and fstest's own
  copy of it) to `FS21`, and unpickle Python 2 `str` the way ZODB 5 did on
  Python 3 (zodbpickle, encoding='ASCII', errors='bytes'), so that Python 3's
  tools print their Python 3 format on old files too. Nothing is patched for
  `FS30` files.
* zodbtools' `zodb` script fails to import here (no gdbm), its dump module
  needs `ZODB._compat.BytesIO` on ZODB 6, and it has no `catobj`: we call its
  module functions directly and implement catobj like the Go zodbtools do.
  zodbtools 0.0.0.dev9, the last release on PyPI, also has three Python 3
  bugs that the zodbtools master which made the shared goldens has not
  (zpickledis memo, analyze type keys, `info` ids printed as b'...'):
  prepare_zodbtools() fixes them, and fixtures/MANIFEST records that the
  result equals the shared goldens byte for byte.
* The engine tests need the storage API's answers (load, loadBefore,
  history, iteration, the index) in a form Rust can parse: JSON.

Every storage is opened read-only and nothing is written beside PATH: no
`.index`, no `.lock`, no `.tmp`.

Usage: reftool.py SUBCOMMAND [OPTIONS] PATH [ARGS]

  Text tools (stdout is exactly the tool's):
    fsdump PATH                  ZODB `fsdump` (ZODB.FileStorage.fsdump.fsdump)
    fsdumpv PATH                 ZODB.FileStorage.fsdump.Dumper(PATH).dump()
    fstail [-n N] PATH           ZODB `fstail` (default N = 10)
    fstest [-v[v]] PATH          ZODB.scripts.fstest (errors: stderr, exit 1)
    fsrefs [-v] PATH             ZODB `fsrefs`
    fsoids PATH OID...           ZODB `fsoids` (OIDs as Python ints: 0x1a, 26)
    zdump [--hashonly] [--pretty=raw|zpickledis] PATH [TIDRANGE]
                                 zodbtools `zodb dump`
    analyze [--csv] PATH [TIDRANGE]
                                 zodbtools `zodb analyze`
    info PATH [PARAM...]         zodbtools `zodb info` (name= is PATH as given)
    catobj [--hashonly|--raw] PATH OID[@TID]...
                                 Go zodbtools `zodb catobj`: per object
                                 "obj <oid> <len> sha1:<hex>\\n<data>\\n"
                                 ("... sha1:<hex> -\\n" with --hashonly, the
                                 bare data with --raw); @TID loads the revision
                                 current as of TID (inclusive).

  Storage API as JSON (one document, then a newline; see `jsonable` for how
  Python values are encoded; oids, tids and data are plain lowercase hex):
    load PATH OID [--before TID | --serial TID]
    history PATH OID [N]
    iterate PATH [--start TID] [--stop TID]
    hold PATH                    open read-write and keep the lock until stdin closes
    tryopen PATH                 try a read-write open; JSON says whether it worked
    pack [--no-gc] PATH TIME     pack read-write with ZODB to the Unix time TIME
    apply PATH PLAN              commit a JSON plan of transactions (fixed tids)
                                 through FileStorage's raw API, read-write
    readall PATH                 load, history, loadSerial and loadBefore of
                                 every revision of every oid in the index
    undolog PATH [FIRST LAST]
    checkindex PATH [INDEX]      load INDEX (default PATH.index) with fsIndex
                                 and compare it with a scan of PATH

  Writing (the only commands that write, and never beside PATH):
    copy PATH DST                ZODB's copyTransactionsFrom: copy PATH into
                                 a new FileStorage DST (DST must not exist;
                                 it gets the magic of PATH: FS21 stays FS21
                                 through the patch above)
    zrestore PATH < DUMP         zodbtools `zodb restore`: append the
                                 transactions of a raw `zodb dump` read from
                                 stdin to PATH (created if missing, with
                                 the FS30 magic)
    recover [--iterate] PATH...  open each PATH read-write, as after a crash
                                 (ZODB cuts a voted or torn tail into PATH.trN)

OIDs for the JSON and catobj commands: 16 hex digits, or a Python int literal
(`0x1a`, `26`). TIDs: 16 hex digits.
"""

import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import types


# --------------------------------------------------------------------------
# Environment: patches applied before the tools run.

def read_magic(path):
    """First 4 bytes of the file (b'' for an empty file)."""
    with open(path, 'rb') as f:
        return f.read(4)


def patch_for_fs21():
    """Let Python 3 ZODB read a Python 2 `FS21` file, as the spec describes.

    Records need no change: only the magic check and the decoding of
    Python 2 `str` in pickles (class metadata, ext, `.index`) differ.
    """
    import zodbpickle.pickle
    import ZODB._compat
    import ZODB.fsIndex
    import ZODB.utils
    import ZODB.FileStorage  # noqa: F401  (loads the module patched below)
    import ZODB.scripts.fstest

    # The package attribute `ZODB.FileStorage.FileStorage` is the class: reach
    # the module through sys.modules.
    sys.modules['ZODB.FileStorage.FileStorage'].packed_version = b'FS21'
    ZODB.scripts.fstest.packed_version = b'FS21'

    class Py2StrUnpickler(ZODB._compat.Unpickler):
        def __init__(self, f):
            zodbpickle.pickle.Unpickler.__init__(
                self, f, encoding='ASCII', errors='bytes')

    # `PersistentUnpickler` looks `Unpickler` up in ZODB._compat at call
    # time; utils and fsIndex imported the name, so patch them too.
    ZODB._compat.Unpickler = Py2StrUnpickler
    ZODB.utils.Unpickler = Py2StrUnpickler
    ZODB.fsIndex.Unpickler = Py2StrUnpickler


class SharedMemoPickletools:
    """Stand-in for the `pickletools` module inside zodbtools' dump module.

    A ZODB record is two pickles sharing one memo: the state pickle may GET
    what the class pickle PUT. zodbtools 0.0.0.dev9 (the last release on
    PyPI) disassembles them with two independent `pickletools.dis` calls and
    dies ("memo key 0 has never been stored into") on such records; zodbtools
    master, which made the shared `zdump.zpickledis.ok` goldens, passes one
    memo to both calls and uses zodbpickle's pickletools. This does the
    same: calls on the same stream object share a memo.
    """

    def __init__(self):
        from zodbpickle import pickletools_3
        self._dis = pickletools_3.dis
        self._stream = None
        self._memo = None

    def dis(self, pickle, out=None, memo=None, indentlevel=4, annotate=0):
        if pickle is not self._stream:
            self._stream, self._memo = pickle, {}
        return self._dis(pickle, out, self._memo if memo is None else memo,
                         indentlevel, annotate)


def analyze_type_name(name):
    """What zodbanalyze's `b()` must return for its type tables to agree.

    zodbanalyze keys its per-class tables by the class name, first as str
    and, for later revisions of an object, as `b(name)`. With the pygolang
    master that made the shared goldens `b()` gives a bstr, equal to and
    hashing like the str; pygolang 0.1 (PyPI) gives bytes, a different key,
    and the report dies with KeyError. Returning the str restores the
    reference behaviour.
    """
    return name.decode('utf-8') if isinstance(name, bytes) else name


def prepare_zodbtools():
    """Make zodbtools 0.0.0.dev9 behave on ZODB 6 as zodbtools master does.

    Fixes only what differs between the release we can install and the
    version that made the shared goldens (make_goldens.py checks both give
    the same bytes on the shared fixtures): BytesIO import, no gdbm,
    zpickledis memo, analyze's type keys, info's hex ids.
    """
    import ZODB._compat
    if not hasattr(ZODB._compat, 'BytesIO'):
        ZODB._compat.BytesIO = io.BytesIO
    # zodbanalyze imports dbm.gnu at module level but only uses it with
    # --dbm, which we never pass; this Python has no _gdbm.
    try:
        import dbm.gnu  # noqa: F401
    except ImportError:
        sys.modules['dbm.gnu'] = types.ModuleType('dbm.gnu')
    import zodbtools.zodbdump
    import zodbtools.zodbanalyze
    import zodbtools.zodbinfo
    zodbtools.zodbdump.pickletools = SharedMemoPickletools()
    zodbtools.zodbanalyze.b = analyze_type_name
    # `zodb info` and `zodb analyze` format ashex() with %s: master's bstr prints the bare hex
    # (as the Go zodbtools do); pygolang 0.1's bytes would print b'...'.
    zodbtools.zodbinfo.ashex = lambda s: s.hex()
    zodbtools.zodbanalyze.ashex = lambda s: s.hex()


def open_storage(path):
    from ZODB.FileStorage import FileStorage
    return FileStorage(path, read_only=True)


# --------------------------------------------------------------------------
# Parsing and encoding helpers.

def parse_oid(s):
    """16 hex digits, or any Python int literal (0x1a, 26)."""
    if len(s) == 16 and not s.startswith('0x'):
        n = int(s, 16)
    else:
        n = int(s, 0)
    return n.to_bytes(8, 'big')


def parse_tid(s):
    if len(s) != 16:
        raise ValueError('tid %r: want 16 hex digits' % s)
    return bytes.fromhex(s)


def hx(b):
    """Raw 8-byte ids and data as lowercase hex; None stays None."""
    return None if b is None else b.hex()


def jsonable(v):
    """Encode a Python value (history entries, extension dicts) for JSON.

    bytes -> {"bytes": "<hex>"}; str/int/float/bool/None as themselves;
    list and tuple -> list; dict with only str keys -> object in Python's
    order; other dicts -> {"dict": [[key, value], ...]}; anything else ->
    {"repr": repr(v)}.
    """
    if isinstance(v, bytes):
        return {'bytes': v.hex()}
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        if all(isinstance(k, str) for k in v):
            return {k: jsonable(x) for k, x in v.items()}
        return {'dict': [[jsonable(k), jsonable(x)] for k, x in v.items()]}
    return {'repr': repr(v)}


def emit_json(doc):
    sys.stdout.write(json.dumps(doc, ensure_ascii=True))
    sys.stdout.write('\n')


def error_name(e):
    return type(e).__name__


# --------------------------------------------------------------------------
# Text tools.

def cmd_fsdump(a):
    from ZODB.FileStorage.fsdump import fsdump
    fsdump(a.path)


def cmd_fsdumpv(a):
    from ZODB.FileStorage.fsdump import Dumper
    Dumper(a.path).dump()


def cmd_fstail(a):
    from ZODB.scripts.fstail import main
    main(a.path, a.n)


def cmd_fstest(a):
    import ZODB.scripts.fstest as fstest
    fstest.main(['-v'] * a.v + [a.path])


def cmd_fsrefs(a):
    import ZODB.scripts.fsrefs as fsrefs
    sys.argv = ['fsrefs'] + ['-v'] * a.v + [a.path]
    fsrefs.main()


def cmd_fsoids(a):
    import ZODB.scripts.fsoids as fsoids
    sys.argv = ['fsoids', a.path] + a.oids
    fsoids.main()


def cmd_zdump(a):
    prepare_zodbtools()
    from zodbtools.zodbdump import zodbdump
    from zodbtools.util import parse_tidrange
    tidmin, tidmax = parse_tidrange(a.tidrange) if a.tidrange else (None, None)
    stor = open_storage(a.path)
    try:
        zodbdump(stor, tidmin, tidmax, hashonly=a.hashonly, pretty=a.pretty,
                 out=sys.stdout.buffer)
    finally:
        stor.close()


def cmd_analyze(a):
    prepare_zodbtools()
    from zodbtools import zodbanalyze
    from zodbtools.util import parse_tidrange
    tidmin, tidmax = parse_tidrange(a.tidrange) if a.tidrange else (None, None)
    rep = zodbanalyze.analyze(a.path, use_dbm=False, delta_fs=False,
                              tidmin=tidmin, tidmax=tidmax)
    zodbanalyze.report(rep, csv=a.csv)


def cmd_info(a):
    prepare_zodbtools()
    from zodbtools.zodbinfo import zodbinfo
    stor = open_storage(a.path)
    try:
        zodbinfo(stor, a.params)
    finally:
        stor.close()


def catobj_load(stor, xid):
    """Data of OID[@TID]: the current revision, or the one current as of
    TID (inclusive, as the Go zodbtools' xid means it)."""
    from ZODB.POSException import POSKeyError
    from ZODB.utils import p64, u64
    oids, _, ats = xid.partition('@')
    oid = parse_oid(oids)
    if not ats:
        return stor.load(oid)[0]
    # loadBefore is exclusive: before TID+1 includes TID itself.
    r = stor.loadBefore(oid, p64(u64(parse_tid(ats)) + 1))
    if r is None:
        raise POSKeyError(oid)
    return r[0]


def cmd_catobj(a):
    if a.raw and (a.hashonly or len(a.xids) > 1):
        sys.exit('catobj: --raw takes one object and excludes --hashonly')
    stor = open_storage(a.path)
    out = sys.stdout.buffer
    try:
        for xid in a.xids:
            try:
                data = catobj_load(stor, xid)
            except Exception as e:  # POSKeyError: deleted, never existed
                sys.exit('catobj %s: %s: %r' % (xid, error_name(e), e))
            if a.raw:
                out.write(data)
                continue
            head = b'obj %s %d sha1:%s' % (
                parse_oid(xid.partition('@')[0]).hex().encode(), len(data),
                hashlib.sha1(data).hexdigest().encode())
            if a.hashonly:
                out.write(head + b' -\n')
            else:
                out.write(head + b'\n' + data + b'\n')
    finally:
        stor.close()


# --------------------------------------------------------------------------
# Storage API as JSON.

def cmd_load(a):
    """{"data": hex, "serial": hex, "next_serial": hex|null} or {"error": name}.

    Without option: load(oid) (no next_serial key). --before: loadBefore,
    which answers null when no revision is older than TID. --serial:
    loadSerial (no serial keys: the serial is the one asked for).
    """
    stor = open_storage(a.path)
    oid = parse_oid(a.oid)
    try:
        if a.before:
            r = stor.loadBefore(oid, parse_tid(a.before))
            doc = None if r is None else {
                'data': hx(r[0]), 'serial': hx(r[1]), 'next_serial': hx(r[2])}
        elif a.serial:
            doc = {'data': hx(stor.loadSerial(oid, parse_tid(a.serial)))}
        else:
            data, serial = stor.load(oid)
            doc = {'data': hx(data), 'serial': hx(serial)}
    except Exception as e:  # POSKeyError and friends are answers here
        doc = {'error': error_name(e)}
    finally:
        stor.close()
    emit_json(doc)


def cmd_history(a):
    """A list of history entries (jsonable dicts), or {"error": name}."""
    stor = open_storage(a.path)
    try:
        doc = [jsonable(d) for d in stor.history(parse_oid(a.oid), a.n)]
    except Exception as e:
        doc = {'error': error_name(e)}
    finally:
        stor.close()
    emit_json(doc)


def cmd_iterate(a):
    """The whole iterator() result plus what the storage says at open.

    {"magic", "last_transaction", "len", "size", "transactions": [{"tid",
    "status", "user", "description" (hex), "extension" (jsonable dict),
    "extension_bytes" (hex), "pos", "records": [{"oid", "tid", "data"
    (hex, null when deleted), "data_txn" (hex or null), "pos"}]}]}
    """
    stor = open_storage(a.path)
    try:
        txns = []
        start = parse_tid(a.start) if a.start else None
        stop = parse_tid(a.stop) if a.stop else None
        for t in stor.iterator(start, stop):
            txns.append({
                'tid': hx(t.tid),
                'status': t.status.decode('latin-1')
                if isinstance(t.status, bytes) else t.status,
                'user': hx(t.user),
                'description': hx(t.description),
                'extension': jsonable(t.extension),
                'extension_bytes': hx(t.extension_bytes),
                'pos': t._tpos,
                'records': [{
                    'oid': hx(r.oid), 'tid': hx(r.tid), 'data': hx(r.data),
                    'data_txn': hx(r.data_txn), 'pos': r.pos,
                } for r in t],
            })
        doc = {
            'magic': read_magic(a.path).decode('latin-1'),
            'last_transaction': hx(stor.lastTransaction()),
            'len': len(stor),
            'size': stor.getSize(),
            'transactions': txns,
        }
    finally:
        stor.close()
    emit_json(doc)


def cmd_readall(a):
    """Every read the storage API answers, for every oid in the index.

    {oid hex: {"load": {"data", "serial"} | {"error"},
               "history": [{"tid", "size", "user", "description"}] | {"error"},
               "revisions": {serial hex: {"serial": loadSerial data | {"error"},
                                          "before": loadBefore(serial),
                                          "before_next": loadBefore(serial+1)}}}}
    loadBefore results are {"data", "serial", "next_serial"}, null, or {"error"}.
    """
    from ZODB.utils import p64, u64
    stor = open_storage(a.path)

    def attempt(f):
        try:
            return f()
        except Exception as e:
            return {'error': error_name(e)}

    def before(oid, tid):
        r = stor.loadBefore(oid, tid)
        return None if r is None else {
            'data': hx(r[0]), 'serial': hx(r[1]), 'next_serial': hx(r[2])}

    doc = {}
    try:
        for oid in stor._index.keys():
            def load():
                data, serial = stor.load(oid)
                return {'data': hx(data), 'serial': hx(serial)}
            entry = {'load': attempt(load)}
            hist = attempt(lambda: stor.history(oid, 1 << 30))
            revisions = {}
            if isinstance(hist, list):
                entry['history'] = [{
                    'tid': hx(h['tid']), 'size': h['size'],
                    'user': hx(h['user_name']), 'description': hx(h['description']),
                } for h in hist]
                for h in hist:
                    s = h['tid']
                    nxt = p64(u64(s) + 1)
                    revisions[hx(s)] = {
                        'serial': attempt(lambda: {'data': hx(stor.loadSerial(oid, s))}),
                        'before': attempt(lambda: before(oid, s)),
                        'before_next': attempt(lambda: before(oid, nxt)),
                    }
            else:
                entry['history'] = hist
            entry['revisions'] = revisions
            doc[hx(oid)] = entry
    finally:
        stor.close()
    emit_json(doc)


def cmd_apply(a):
    """Commit a plan of transactions through FileStorage's raw API.

    The plan (JSON, from the file PLAN or '-' for stdin) is a list of
    transactions: {"tid": hex, "status": " "|"p" (default " "), "user",
    "description", "extension": hex strings, "ops": [...], "abort": bool}.
    Ops: {"op": "store", "oid", "serial", "data"}, {"op": "delete", "oid",
    "serial"}, {"op": "restore", "oid", "data" (hex or null), "prev_txn"
    (hex or null)}, {"op": "undo", "tid"}, {"op": "check", "oid",
    "serial"}. Every transaction gets the given tid (tpc_begin(t, tid,
    status)). Opens PATH read-write (creating it), prints one JSON line per
    transaction: {"tid", "resolved": [oids], "undone": [oids]} or
    {"error": name}, and closes (which writes PATH.index).
    """
    import transaction as txnmod
    from ZODB.Connection import TransactionMetaData
    from ZODB.FileStorage import FileStorage
    from ZODB.utils import p64
    plan = json.load(sys.stdin if a.plan == '-' else open(a.plan))
    stor = FileStorage(a.path)
    unhex = bytes.fromhex
    try:
        for t in plan:
            meta = TransactionMetaData(unhex(t.get('user', '')), unhex(t.get('description', '')))
            ext = unhex(t.get('extension', ''))
            if ext:
                from ZODB._compat import loads
                meta.extension = loads(ext)
            result = {}
            try:
                stor.tpc_begin(meta, unhex(t['tid']), t.get('status', ' '))
                undone = []
                for op in t['ops']:
                    kind = op['op']
                    if kind == 'store':
                        stor.store(unhex(op['oid']), unhex(op['serial']), unhex(op['data']), '', meta)
                    elif kind == 'delete':
                        stor.deleteObject(unhex(op['oid']), unhex(op['serial']), meta)
                    elif kind == 'restore':
                        data = op.get('data')
                        prev = op.get('prev_txn')
                        stor.restore(unhex(op['oid']), unhex(t['tid']), None if data is None else unhex(data),
                                     '', None if prev is None else unhex(prev), meta)
                    elif kind == 'undo':
                        import base64
                        _, oids = stor.undo(base64.encodebytes(unhex(op['tid'])).rstrip(), meta)
                        undone.extend(hx(o) for o in oids)
                    elif kind == 'check':
                        stor.checkCurrentSerialInTransaction(unhex(op['oid']), unhex(op['serial']), meta)
                    else:
                        raise ValueError(kind)
                resolved = stor.tpc_vote(meta) or []
                if t.get('abort'):
                    stor.tpc_abort(meta)
                    result = {'aborted': True}
                else:
                    tid = stor.tpc_finish(meta)
                    result = {'tid': hx(tid), 'resolved': sorted(hx(o) for o in resolved), 'undone': undone}
            except Exception as e:
                stor.tpc_abort(meta)
                result = {'error': error_name(e)}
            sys.stdout.write(json.dumps(result) + '\n')
    finally:
        stor.close()


def cmd_pack(a):
    """Pack PATH read-write with ZODB: storage.pack(T, referencesf, gc).

    T is a float Unix time as text. Prints {"result": "packed"|"unchanged"}
    or {"error": name, "message": text}; PATH.old is left as ZODB leaves it.
    """
    from ZODB.FileStorage import FileStorage
    from ZODB.serialize import referencesf
    stor = FileStorage(a.path)
    try:
        before = os.path.getsize(a.path)
        old = a.path + '.old'
        stor.pack(float(a.time), referencesf, gc=not a.no_gc)
        doc = {'result': 'packed' if os.path.exists(old) else 'unchanged', 'size_before': before}
    except Exception as e:
        doc = {'error': error_name(e), 'message': str(e)}
    finally:
        stor.close()
    emit_json(doc)


def tr_files(path):
    """[[name, size], ...] of the PATH.trN files beside PATH, by N."""
    d, base = os.path.split(os.path.abspath(path))
    found = []
    for name in os.listdir(d):
        n = name[len(base) + 3:]
        if name.startswith(base + '.tr') and n.isdigit():
            found.append((int(n), name, os.path.getsize(os.path.join(d, name))))
    return [[name, size] for _, name, size in sorted(found)]


def cmd_recover(a):
    """Open each PATH read-write with ZODB, as a restart after a crash does.

    ZODB's read_index truncates a voted (`c`) or torn last transaction after
    copying it to PATH.trN, and a tail shorter than a header without a copy.
    One JSON line per PATH: {"path", "last_transaction": lastTransaction()
    right after the open (hex), "size": PATH's size after the open,
    "tr_files": [[name, size], ...]}, or {"path", "error": name, "message"}
    when ZODB refuses the file. With --iterate, each line is followed by the
    `iterate` document of the recovered file (opened again, read-only).
    ZODB leaves PATH.index, .lock and .tmp behind. Every PATH must have the
    magic of the first (FS21 support is set up once per process).
    """
    from ZODB.FileStorage import FileStorage
    magic = read_magic(a.path)
    for path in [a.path] + a.paths:
        if read_magic(path) != magic:
            sys.exit('reftool: %s: magic %r differs from %s' % (path, read_magic(path), a.path))
        try:
            stor = FileStorage(path)
        except Exception as e:
            emit_json({'path': path, 'error': error_name(e), 'message': str(e)})
            continue
        try:
            doc = {'path': path, 'last_transaction': hx(stor.lastTransaction()),
                   'size': os.path.getsize(path), 'tr_files': tr_files(path)}
        finally:
            stor.close()
        emit_json(doc)
        if a.iterate:
            cmd_iterate(argparse.Namespace(path=path, start=None, stop=None))


def cmd_copy(a):
    """ZODB's BaseStorage.copy of PATH into a new FileStorage DST.

    The source is a FileIterator, what FileStorage.iterator() returns, so
    PATH is only read; DST is created (its close writes DST.index).
    """
    from ZODB.FileStorage import FileIterator, FileStorage
    if os.path.exists(a.dst):
        sys.exit('reftool: %s: exists' % a.dst)
    src = FileIterator(a.path)
    dst = FileStorage(a.dst, create=True)
    try:
        dst.copyTransactionsFrom(src)
    finally:
        dst.close()
        src.close()


def cmd_zrestore(a):
    """zodbtools' zodbrestore of the dump on stdin into FileStorage PATH.

    The storage is opened directly (zodbtools' storageFromURL needs
    zodburi); zodbrestore prints each restored tid, as `zodb restore` does.
    """
    prepare_zodbtools()
    from ZODB.FileStorage import FileStorage
    import zodbtools.util
    from zodbtools.zodbrestore import zodbrestore
    # DumpReader looks the hash name up as b(name): a bstr equal to the
    # str keys with pygolang master, plain bytes (never found) with
    # pygolang 0.1. Bytes keys beside the str ones restore the reference.
    reg = zodbtools.util.hashRegistry
    reg.update({k.encode(): v for k, v in list(reg.items()) if isinstance(k, str)})
    stor = FileStorage(a.path)
    try:
        zodbrestore(stor, sys.stdin.buffer,
                    lambda txn: sys.stdout.write(txn.tid.hex() + '\n'))
    finally:
        stor.close()


def cmd_hold(a):
    """Open PATH read-write (taking Data.fs.lock), print "locked <pid>", and
    keep it open until stdin closes; then close. For lock interop tests."""
    from ZODB.FileStorage import FileStorage
    stor = FileStorage(a.path)
    sys.stdout.write('locked %d\n' % os.getpid())
    sys.stdout.flush()
    sys.stdin.read()
    stor.close()


def cmd_tryopen(a):
    """Try to open PATH read-write; print {"opened": true} or {"error": name,
    "message": text}."""
    from ZODB.FileStorage import FileStorage
    try:
        FileStorage(a.path).close()
        doc = {'opened': True}
    except Exception as e:
        doc = {'error': error_name(e), 'message': str(e)}
    emit_json(doc)


def cmd_undolog(a):
    """undoLog(first, last) as a list of jsonable dicts (ids are bytes)."""
    stor = open_storage(a.path)
    try:
        doc = [jsonable(d) for d in stor.undoLog(a.first, a.last)]
    finally:
        stor.close()
    emit_json(doc)


def scan_index(path, upto):
    """fsIndex built by ZODB's own read_index over the first `upto` bytes."""
    from ZODB.FileStorage.FileStorage import read_index
    from ZODB.fsIndex import fsIndex
    tmpdir = tempfile.mkdtemp(prefix='reftool-')
    try:
        part = os.path.join(tmpdir, 'Data.fs')
        with open(path, 'rb') as src, open(part, 'wb') as dst:
            dst.write(src.read(upto))
        index = fsIndex()
        with open(part, 'rb') as f:
            pos, maxoid, ltid = read_index(f, part, index, {}, read_only=1)
        return index, pos, ltid
    finally:
        shutil.rmtree(tmpdir)


def cmd_checkindex(a):
    """Load an `.index` with ZODB's fsIndex and check it like ZODB would.

    {"index_path", "loaded": bool, "error": name|null, "pos", "entries":
    [[oid hex, pos], ...] (ascending oid), "sane_ltid": hex|null (ZODB's
    _check_sanity: the tid it finds, null when it rejects the index),
    "scan": {"pos", "ltid", "entries"}: ZODB's read_index over the bytes
    before `pos`, "matches_scan": bool}
    """
    from ZODB.fsIndex import fsIndex
    index_path = a.index or a.path + '.index'
    doc = {'index_path': index_path, 'loaded': False, 'error': None}
    try:
        info = fsIndex.load(index_path)
        index, pos = info['index'], int(info['pos'])
    except Exception as e:
        doc['error'] = error_name(e)
        emit_json(doc)
        return
    if not isinstance(index, fsIndex):  # pre-3.10 dict-based formats
        new = fsIndex()
        new.update(index)
        index = new
    entries = [[k.hex(), v] for k, v in index.items()]
    doc.update(loaded=True, pos=pos, entries=entries)
    stor = open_storage(a.path)
    try:
        ltid = stor._check_sanity(index, pos)
        doc['sane_ltid'] = hx(ltid) if ltid else None
    finally:
        stor.close()
    if pos <= os.path.getsize(a.path):
        sindex, spos, sltid = scan_index(a.path, pos)
        sentries = [[k.hex(), v] for k, v in sindex.items()]
        doc['scan'] = {'pos': spos, 'ltid': hx(sltid), 'entries': sentries}
        doc['matches_scan'] = (spos == pos and sentries == entries)
    else:
        doc['scan'] = None
        doc['matches_scan'] = False
    emit_json(doc)


# --------------------------------------------------------------------------

def build_parser():
    p = argparse.ArgumentParser(prog='reftool.py', description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True)

    def add(name, fn):
        s = sub.add_parser(name)
        s.set_defaults(fn=fn)
        return s

    add('fsdump', cmd_fsdump).add_argument('path')
    add('fsdumpv', cmd_fsdumpv).add_argument('path')
    s = add('fstail', cmd_fstail)
    s.add_argument('-n', type=int, default=10)
    s.add_argument('path')
    s = add('fstest', cmd_fstest)
    s.add_argument('-v', action='count', default=0)
    s.add_argument('path')
    s = add('fsrefs', cmd_fsrefs)
    s.add_argument('-v', action='count', default=0)
    s.add_argument('path')
    s = add('fsoids', cmd_fsoids)
    s.add_argument('path')
    s.add_argument('oids', nargs='+')
    s = add('zdump', cmd_zdump)
    s.add_argument('--hashonly', action='store_true')
    s.add_argument('--pretty', default='raw', choices=['raw', 'zpickledis'])
    s.add_argument('path')
    s.add_argument('tidrange', nargs='?')
    s = add('analyze', cmd_analyze)
    s.add_argument('--csv', action='store_true')
    s.add_argument('path')
    s.add_argument('tidrange', nargs='?')
    s = add('info', cmd_info)
    s.add_argument('path')
    s.add_argument('params', nargs='*')
    s = add('catobj', cmd_catobj)
    s.add_argument('--hashonly', action='store_true')
    s.add_argument('--raw', action='store_true')
    s.add_argument('path')
    s.add_argument('xids', nargs='+')
    s = add('load', cmd_load)
    s.add_argument('path')
    s.add_argument('oid')
    g = s.add_mutually_exclusive_group()
    g.add_argument('--before')
    g.add_argument('--serial')
    s = add('history', cmd_history)
    s.add_argument('path')
    s.add_argument('oid')
    s.add_argument('n', type=int, nargs='?', default=1)
    s = add('iterate', cmd_iterate)
    s.add_argument('path')
    s.add_argument('--start')
    s.add_argument('--stop')
    add('readall', cmd_readall).add_argument('path')
    add('hold', cmd_hold).add_argument('path')
    add('tryopen', cmd_tryopen).add_argument('path')
    s = add('pack', cmd_pack)
    s.add_argument('--no-gc', action='store_true')
    s.add_argument('path')
    s.add_argument('time')
    s = add('apply', cmd_apply)
    s.add_argument('path')
    s.add_argument('plan')
    s = add('undolog', cmd_undolog)
    s.add_argument('path')
    s.add_argument('first', type=int, nargs='?', default=0)
    s.add_argument('last', type=int, nargs='?', default=-20)
    s = add('checkindex', cmd_checkindex)
    s.add_argument('path')
    s.add_argument('index', nargs='?')
    s = add('copy', cmd_copy)
    s.add_argument('path')
    s.add_argument('dst')
    add('zrestore', cmd_zrestore).add_argument('path')
    s = add('recover', cmd_recover)
    s.add_argument('--iterate', action='store_true')
    s.add_argument('path')
    s.add_argument('paths', nargs='*')
    return p


def main(argv=None):
    a = build_parser().parse_args(argv)
    # Exact bytes whatever the locale: the tools print text, we want UTF-8
    # with '\n' line ends (what a Rust tool writes).
    sys.stdout.reconfigure(encoding='utf-8', errors='surrogateescape',
                           newline='\n')
    if not os.path.exists(a.path):
        if a.fn not in (cmd_apply, cmd_zrestore):  # these create the database
            sys.exit('reftool: %s: no such file' % a.path)
    elif read_magic(a.path) == b'FS21':
        patch_for_fs21()
    a.fn(a)
    sys.stdout.flush()


if __name__ == '__main__':
    main()
