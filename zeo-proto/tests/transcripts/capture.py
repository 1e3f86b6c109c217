"""Capture real ZEO traffic into the golden transcripts of zeo-proto.

Starts Python's ``runzeo`` (FileStorage + blobs) on loopback, puts a logging
TCP proxy in front of it, and drives unmodified ``ZEO.ClientStorage`` clients
(plus a few raw-protocol clients for error paths) through every server method
a ZEO 5/6 client calls. Every frame that crosses the proxy is written as one
JSON line:

    {"conn": N, "dir": "C>S" | "S>C", "hex": <payload, no length prefix>,
     "kind": "handshake" | "message" | "raw", "py": <typed JSON or null>}

``py`` is what Python's own decoder (``pickle.loads`` / ``msgpack.unpackb``
exactly as ZEO calls it) makes of the frame, in a typed JSON that keeps the
Python types apart: null, true/false, {"int": "123"}, {"float": "<ieee hex>"},
{"bytes": hex}, {"str": s}, {"tuple": [...]}, {"list": [...]},
{"dict": [[k, v], ...]}, {"set": [...]}, {"frozenset": [...]},
{"object": "module.Class", "state": ...}. Lines {"step": "..."} mark the
scenario steps (frames of async traffic can trail their step a little).

Usage (from the workspace root):
    .venv/bin/python zeo-proto/tests/transcripts/capture.py Z  zeo-proto/tests/transcripts/z5.jsonl
    .venv/bin/python zeo-proto/tests/transcripts/capture.py M  zeo-proto/tests/transcripts/m5.jsonl
    .venv/bin/python zeo-proto/tests/transcripts/capture.py Z  zeo-proto/tests/transcripts/z5-ccr.jsonl --ccr
    .venv/bin/python zeo-proto/tests/transcripts/capture.py values zeo-proto/tests/transcripts/values.jsonl

The ``values`` mode needs no server: it writes tricky values (integer and
length boundaries, batches of 1000, sets, non-BMP text, ...) as pickled by
ZEO's marshal encoder and as packed by msgpack, for the encoder tests.
"""

import json
import os
import pickle
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import msgpack


HOST = '127.0.0.1'


def tj(v):
    """Typed JSON of a decoded Python value."""
    if v is None or v is True or v is False:
        return v
    if isinstance(v, int):
        return {"int": str(v)}
    if isinstance(v, float):
        return {"float": struct.pack('>d', v).hex()}
    if isinstance(v, (bytes, bytearray)):
        return {"bytes": bytes(v).hex()}
    if isinstance(v, str):
        return {"str": v}
    if isinstance(v, tuple):
        return {"tuple": [tj(x) for x in v]}
    if isinstance(v, list):
        return {"list": [tj(x) for x in v]}
    if isinstance(v, dict):
        return {"dict": [[tj(k), tj(x)] for k, x in v.items()]}
    if isinstance(v, frozenset):
        return {"frozenset": [tj(x) for x in v]}
    if isinstance(v, set):
        return {"set": [tj(x) for x in v]}
    cls = type(v)
    return {"object": cls.__module__ + '.' + cls.__name__,
            "state": tj(getattr(v, '__dict__', None))}


class Recorder:
    def __init__(self, path):
        self.out = open(path, 'w')
        self.lock = threading.Lock()
        self.conns = 0

    def new_conn(self):
        with self.lock:
            self.conns += 1
            return self.conns

    def write(self, obj):
        with self.lock:
            self.out.write(json.dumps(obj, sort_keys=True) + '\n')
            self.out.flush()

    def step(self, text):
        self.write({"step": text})


def decode(enc, direction, payload):
    """Decodes as the receiving side of ZEO does (server: restricted
    globals; client: exception classes and `__no_side_effects__` only)."""
    from ZEO.asyncio.marshal import decoder, server_decoder
    if direction == 'C>S':
        return server_decoder(enc)(payload)
    return decoder(enc)(payload)


class Proxy:
    """Logging proxy: frames are parsed per direction and recorded."""

    def __init__(self, rec, server_port):
        self.rec = rec
        self.server_port = server_port
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(50)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            c, _ = self.sock.accept()
            s = socket.create_connection((HOST, self.server_port))
            conn = self.rec.new_conn()
            state = {'enc': None}
            threading.Thread(target=self.pump, args=(conn, c, s, 'C>S', state),
                             daemon=True).start()
            threading.Thread(target=self.pump, args=(conn, s, c, 'S>C', state),
                             daemon=True).start()

    def pump(self, conn, src, dst, direction, state):
        buf = b''
        first = True
        while True:
            try:
                data = src.recv(1 << 16)
            except OSError:
                data = b''
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            buf += data
            while len(buf) >= 4:
                (n,) = struct.unpack('>I', buf[:4])
                if len(buf) < 4 + n:
                    break
                payload, buf = buf[4:4 + n], buf[4 + n:]
                entry = {"conn": conn, "dir": direction, "hex": payload.hex()}
                if first:
                    entry["kind"] = "handshake"
                    entry["py"] = None
                    if direction == 'S>C':
                        state['enc'] = payload[:1]
                    first = False
                elif payload[:1] == b'{':
                    entry["kind"] = "raw"   # the ruok JSON status
                    entry["py"] = None
                else:
                    entry["kind"] = "message"
                    try:
                        entry["py"] = tj(decode(state['enc'], direction, payload))
                    except Exception as e:  # recorded, e.g. a forbidden global
                        entry["py"] = None
                        entry["python_error"] = '%s: %s' % (type(e).__name__, e)
                self.rec.write(entry)
            try:
                dst.sendall(data)
            except OSError:
                return


def start_server(tmp, enc, ccr):
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    conf = os.path.join(tmp, 'zeo.conf')
    # client-conflict-resolution swaps tryToResolveConflict on the storage
    # object the server holds; with a <blobstorage> wrapper FileStorage
    # never sees it and keeps resolving itself, so the ccr capture serves a
    # plain FileStorage.
    storage = ('<filestorage 1>\n  path %s\n</filestorage>\n'
               % os.path.join(tmp, 'Data.fs'))
    if not ccr:
        storage = ('<blobstorage 1>\n  blob-dir %s\n'
                   '  <filestorage>\n    path %s\n  </filestorage>\n'
                   '</blobstorage>\n' % (os.path.join(tmp, 'blobs'),
                                          os.path.join(tmp, 'Data.fs')))
    with open(conf, 'w') as f:
        f.write('<zeo>\n  address %s:%d\n  msgpack %s\n'
                '  client-conflict-resolution %s\n</zeo>\n' % (
                    HOST, port, 'true' if enc == 'M' else 'false',
                    'true' if ccr else 'false') + storage)
    runzeo = os.path.join(os.path.dirname(sys.executable), 'runzeo')
    log = open(os.path.join(tmp, 'server.log'), 'wb')
    proc = subprocess.Popen([runzeo, '-C', conf], cwd=tmp, stdout=log,
                            stderr=log)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError('runzeo did not start')
            time.sleep(0.05)
    return proc, port


class Raw:
    """A minimal raw-protocol client, for the error paths ClientStorage
    never takes."""

    def __init__(self, port, version=None):
        from ZEO.asyncio.marshal import decoder, encoder
        self.s = socket.create_connection((HOST, port))
        self.s.settimeout(10)
        announced = self.recv()
        self.enc_letter = announced[:1]
        self.encode = encoder(self.enc_letter)
        self.decode = decoder(self.enc_letter)
        self.send_raw(version if version is not None else announced)

    def send_raw(self, payload):
        self.s.sendall(struct.pack('>I', len(payload)) + payload)

    def recv(self):
        hdr = b''
        while len(hdr) < 4:
            d = self.s.recv(4 - len(hdr))
            if not d:
                return None
            hdr += d
        (n,) = struct.unpack('>I', hdr)
        data = b''
        while len(data) < n:
            d = self.s.recv(n - len(data))
            if not d:
                return None
            data += d
        return data

    def call(self, msgid, name, *args, flag=False):
        self.send_raw(self.encode(msgid, flag, name, args))

    def reply(self):
        while True:
            data = self.recv()
            if data is None:
                return None
            msg = self.decode(data)
            if msg[2] == '.reply':
                return msg

    def closed(self):
        """Waits until the server closes the connection."""
        try:
            while self.recv() is not None:
                pass
        except OSError:
            pass
        self.s.close()


def scenario(rec, port, tmp, enc, ccr):
    import transaction
    import ZODB
    import ZODB.blob
    from BTrees.Length import Length
    from persistent.mapping import PersistentMapping
    from ZEO.ClientStorage import ClientStorage
    from ZODB.Connection import TransactionMetaData
    from ZODB.POSException import ConflictError
    from ZODB.utils import maxtid, p64, z64

    def cs(name, **kw):
        kw.setdefault('blob_dir', os.path.join(tmp, 'blobcache-' + name))
        return ClientStorage((HOST, port), wait=True, **kw)

    rec.step('ruok: the server announces, the client says ruok, gets JSON')
    r = socket.create_connection((HOST, port))
    r.settimeout(10)
    r.recv(6)
    r.sendall(struct.pack('>I', 4) + b'ruok')
    time.sleep(0.3)
    r.close()

    rec.step('bad handshake: a ZEO 4 client answers Z4 and is closed')
    raw = Raw(port, version=b'Z4' if enc == 'Z' else b'M4')
    raw.closed()

    if ccr:
        rec.step('client-conflict-resolution: two clients, one BTrees.Length')
        a = cs('a')
        db_a = ZODB.DB(a)
        b = cs('b')
        db_b = ZODB.DB(b)
        ca, cb = db_a.open(), db_b.open()
        ca.root()['n'] = Length()
        transaction.commit()
        cb.sync()
        tm_b = transaction.TransactionManager()
        cb.close()
        cb = db_b.open(transaction_manager=tm_b)
        cb.root()['n'].change(2)
        ca.root()['n'].change(1)
        transaction.commit()
        rec.step('vote returns a conflict dict; the client resolves, storea, votes again')
        tm_b.commit()
        ca.close()
        cb.close()
        db_a.close()
        db_b.close()
        return

    rec.step('client A connects: register, get_info; DB creates the root')
    a = cs('a')
    db_a = ZODB.DB(a)
    conn_a = db_a.open()
    root = conn_a.root()

    rec.step('client B connects (receives invalidations from now on)')
    b = cs('b')
    db_b = ZODB.DB(b)

    rec.step('commit: new PersistentMapping, BTrees.Length, extension, user')
    t = transaction.get()
    t.note('first commit')
    t.setUser('alice')
    t.setExtendedInfo('ext-int', 42)
    root['m'] = PersistentMapping(x=1)
    root['n'] = Length()
    transaction.commit()

    rec.step('commit: a blob of 2 chunks (storeBlobStart/Chunk/Chunk/End)')
    root['blob'] = blob = ZODB.blob.Blob()
    with blob.open('w') as f:
        f.write(b'0123456789' * 6000)
    transaction.commit()

    rec.step('client B: loadBefore of root and objects, sendBlob of the blob')
    time.sleep(0.5)  # let B's invalidations arrive
    conn_b = db_b.open()
    rb = conn_b.root()
    rb['m']['x']
    with rb['blob'].open('r') as f:
        f.read()
    conn_b.close()

    rec.step('resolved conflict: both change BTrees.Length; vote returns [oid]')
    tm_b = transaction.TransactionManager()
    conn_b = db_b.open(transaction_manager=tm_b)
    conn_b.root()['n'].change(5)
    root['n'].change(1)
    transaction.commit()
    tm_b.commit()

    time.sleep(0.3)
    rec.step('unresolved conflict: both change a PersistentMapping -> ConflictError')
    tm_b.begin()
    conn_b.root()['m']['x'] = 'b'
    root['m']['x'] = 'a'
    transaction.commit()
    try:
        tm_b.commit()
    except ConflictError:
        tm_b.abort()

    time.sleep(0.3)
    rec.step('read conflict: checkCurrentSerialInTransaction -> ReadConflictError')
    tm_b.begin()
    mb = conn_b.root()['m']
    mb._p_activate()
    conn_b.readCurrent(mb)
    conn_b.root()['other'] = 1
    root['m']['x'] = 'again'
    transaction.commit()
    try:
        tm_b.commit()
    except ConflictError:
        tm_b.abort()
    conn_b.close()

    rec.step('tpc_abort of a transaction with stores')
    root['m']['x'] = 'aborted'
    t = transaction.get()
    t.join(conn_a)
    conn_a.tpc_begin(t)
    conn_a.commit(t)
    conn_a.tpc_abort(t)
    transaction.abort()

    rec.step('history, loadSerial, getTid, lastTransaction, ping, server_status')
    oid_m = root['m']._p_oid
    h = a.history(oid_m, 3)
    a.loadSerial(oid_m, h[-1]['tid'])
    a.getTid(oid_m)
    a._call('lastTransaction')
    a.ping()
    a.server_status()
    a.record_iternext()

    rec.step('new_oids with 0 and 500, new_oid (AttributeError), missing oid (POSKeyError)')
    a._call('new_oids', 0)
    a._call('new_oids', 500)
    try:
        a._call('new_oid')
    except Exception:
        pass
    try:
        a.load(p64(0xdeadbeef))
    except Exception:
        pass

    rec.step('getInvalidations of an old tid and of a future tid')
    a._call('getInvalidations', h[-1]['tid'])
    a._call('getInvalidations', z64)

    rec.step('undoLog, undoInfo (with a ZopeUndo Prefix filter), undo of the last txn')
    log = db_a.undoLog(0, 10)
    try:
        from ZopeUndo.Prefix import Prefix
        # Prefix compares text with FileStorage's bytes fields: on Python 3
        # the server answers TypeError (captured as such).
        a.undoInfo(0, 10, {'user_name': Prefix('/ alice')})
    except TypeError:
        pass
    a.undoInfo(0, 10, None)
    db_a.undo(log[0]['id'])
    transaction.commit()

    rec.step('undo that fails: UndoError at vote')
    first = db_a.undoLog(0, 100)[-2]
    db_a.undo(first['id'])
    try:
        transaction.commit()
    except Exception:
        transaction.abort()

    rec.step('deleteObject (IExternalGC) in a raw two-phase commit')
    t = TransactionMetaData()
    a.tpc_begin(t)
    oid = a.new_oid()
    a.store(oid, z64, pickle.dumps(PersistentMapping, 3) + pickle.dumps({}, 3), '', t)
    a.tpc_vote(t)
    tid = a.tpc_finish(t)
    t = TransactionMetaData()
    a.tpc_begin(t)
    a.deleteObject(oid, tid, t)
    a.tpc_vote(t)
    a.tpc_finish(t)

    rec.step('restore: tpc_begin with tid and status, restorea')
    t = TransactionMetaData(b'restorer', b'restored txn', {})
    new_tid = p64(int.from_bytes(a.lastTransaction(), 'big') + 1000)
    a.tpc_begin(t, new_tid, 'p')
    a.restore(a.new_oid(), new_tid, pickle.dumps(PersistentMapping, 3) + pickle.dumps({}, 3),
              '', None, t)
    a.tpc_vote(t)
    a.tpc_finish(t)

    rec.step('iterator over all transactions and their records, then iterator_gc')
    for txn in a.iterator():
        for r in txn:
            pass
    t = transaction.get()
    root['after-iter'] = 1
    transaction.commit()

    rec.step('pack (wait) -> info to all clients')
    db_a.pack(time.time())

    rec.step('raw client: heartbeat, unknown storage, register read-only, ReadOnlyError')
    raw = Raw(port)
    raw.send_raw(raw.encode(-1, 0, '.reply', None))
    raw.call(1, 'register', 'nosuchstorage', False)
    raw.reply()
    raw.call(2, 'register', '1', True)
    raw.reply()
    raw.call(3, 'new_oids')
    raw.reply()
    rec.step('raw client: vote without tpc_begin -> StorageTransactionError; '
             'tpc_abort and tpc_finish of unknown txns; wrong arity -> TypeError')
    raw.s.close()
    raw = Raw(port)
    raw.call(1, 'register', '1', False)
    raw.reply()
    raw.call(2, 'vote', 12345)
    raw.reply()
    raw.call(3, 'tpc_abort', 12345)
    raw.reply()
    raw.call(4, 'tpc_finish', 12345)
    raw.reply()
    raw.call(5, 'lastTransaction', 'extra')
    raw.reply()
    raw.call(6, 'iterator_start', None, None)
    raw.reply()
    raw.call(7, 'iterator_next', 0)
    raw.reply()
    raw.call(8, 'iterator_record_start', 0, z64)
    raw.reply()
    raw.call(9, 'iterator_gc', [0, 1], flag=True)
    raw.call(10, 'loadBefore', z64, maxtid)
    raw.reply()
    rec.step('raw client: unknown method undo -> connection closed')
    raw.call(11, 'undo', b'x', 1)
    raw.closed()

    rec.step('raw client: a message with a forbidden global -> connection closed')
    raw = Raw(port)
    if enc == 'Z':
        # (1, False, 'register', (os.system('true'),))
        raw.send_raw(b'\x80\x03(K\x01\x89X\x08\x00\x00\x00register'
                     b'cos\nsystem\nX\x04\x00\x00\x00true\x85R\x85t.')
        raw.closed()
    else:
        raw.s.close()

    rec.step('clients close')
    conn_a.close()
    db_a.close()
    db_b.close()


def capture(enc, path, ccr):
    rec = Recorder(path)
    rec.write({"meta": {
        "zeo": __import__('importlib.metadata').metadata.version('ZEO'),
        "zodb": __import__('importlib.metadata').metadata.version('ZODB'),
        "msgpack": msgpack.version and '.'.join(map(str, msgpack.version)),
        "python": sys.version.split()[0],
        "encoding": enc,
        "client_conflict_resolution": ccr,
    }})
    tmp = tempfile.mkdtemp(prefix='zeo-capture-')
    proc, server_port = start_server(tmp, enc, ccr)
    try:
        proxy = Proxy(rec, server_port)
        scenario(rec, proxy.port, tmp, enc, ccr)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    rec.out.close()


def values(path):
    """Values at every encoding boundary, pickled as ZEO's marshal does and
    packed as msgpack does."""
    from ZEO.asyncio.marshal import encoder
    zenc = encoder(b'Z')
    menc = encoder(b'M')
    ints = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**31 - 1, 2**31,
            2**32 - 1, 2**32, 2**39, 2**40 - 1, 2**63 - 1, 2**63, 2**64 - 1,
            -1, -31, -32, -33, -127, -128, -129, -255, -256, -32768, -32769,
            -2**31, -2**31 - 1, -2**39, -2**39 - 1, -2**63, 140562528196048,
            2**64, 2**100, -2**100]
    vals = [None, True, False, 0.0, -0.0, 1.5, 1e300, float('inf'),
            b'', b'x' * 255, b'y' * 256, b'z' * 70000,
            '', 'a' * 31, 'b' * 32, 'c' * 255, 'd' * 256, 'e' * 65536,
            'caf\u00e9 \U0001f600',
            (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), tuple(range(16)),
            [], [1], [1, 2], list(range(1000)), list(range(1001)),
            list(range(2000)), {}, {'a': 1}, {'a': 1, 'b': (2, b'x')},
            {i: i for i in range(1000)}, {i: i for i in range(1001)},
            {str(i): i for i in range(20)},
            {1, 2}, frozenset([3]), set(),
            (b'\0' * 8, b'\xff' * 8), [{'oid': b'\0' * 8, 'serials': (b'1' * 8, b'2' * 8)}],
            ] + ints
    with open(path, 'w') as out:
        for v in vals:
            z = zenc(0, False, 'v', v)
            try:
                m = menc(0, False, 'v', v).hex()
            except Exception:
                m = None
            out.write(json.dumps({"py": tj((0, False, 'v', v)), "z": z.hex(),
                                  "m": m}, sort_keys=True) + '\n')


if __name__ == '__main__':
    if sys.argv[1] == 'values':
        values(sys.argv[2])
    else:
        capture(sys.argv[1], sys.argv[2], '--ccr' in sys.argv)
