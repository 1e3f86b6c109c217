"""Stand-ins for wendelin.core's persistent classes, for Python 3.11.

wendelin.core does not build on Python 3.11, but what it stores is defined
by a handful of small Python classes. This module defines classes with the
same module paths, names, __slots__ and __getstate__/__setstate__ as
Nexedi/wendelin.core master (bigfile/file_zodb.py, bigarray/__init__.py,
bigarray/array_zodb.py, lib/zodb.py, lib/mem.py), so ZODB pickles them
exactly as wendelin.core does and unpickles what wendelin.core wrote.

The virtual-memory layer (BigFile, file handles, mmap) is replaced by plain
reads and writes of whole blocks: loadblk/storeblk are wendelin's, and
`array_view` builds the ndarray BigArray.__getitem__ would build, over a
bytes copy of the file instead of a mapping.

Importing the module registers `wendelin`, `wendelin.bigfile`,
`wendelin.bigfile.file_zodb`, `wendelin.bigarray`,
`wendelin.bigarray.array_zodb` and `wendelin.lib.zodb` in sys.modules.
The text is also run as a prefix of the embedded bench script, so it
imports nothing from its own directory.
"""

import sys
import types
from inspect import getfullargspec

import numpy
from BTrees.IOBTree import IOBTree
from BTrees.LOBTree import LOBTree
from persistent import GHOST, Persistent


def _module(name):
    m = sys.modules.get(name)
    if m is None:
        m = types.ModuleType(name)
        sys.modules[name] = m
        parent, _, child = name.rpartition('.')
        if parent:
            setattr(_module(parent), child, m)
    return m


_FILE = 'wendelin.bigfile.file_zodb'
_ARRAY = 'wendelin.bigarray.array_zodb'
_LIB = 'wendelin.lib.zodb'


# --- wendelin/lib/zodb.py, lib/mem.py, lib/calc.py

class LivePersistent(Persistent):
    __module__ = _LIB

    # don't allow us to go to ghost
    def _p_deactivate(self):
        return


def memdelta(buf1, buf2):
    l1, l2 = len(buf1), len(buf2)
    l = min(l1, l2)
    a1 = numpy.ndarray(l, buffer=buf1, dtype=numpy.uint8)
    a2 = numpy.ndarray(l, buffer=buf2, dtype=numpy.uint8)
    return (max(l1, l2) - l) + numpy.count_nonzero(a1 - a2)


def mul(args, start=1):
    v = start
    for x in args:
        v *= x
    return v


# --- wendelin/bigfile/file_zodb.py

class ZBlkBase(Persistent):
    __module__ = _FILE
    __slots__ = ('_v_zfile', '_v_blk')

    def __init__(self):
        self._v_zfile = None
        self._v_blk = None


class ZBlk0(ZBlkBase):
    __module__ = _FILE
    __slots__ = ('_v_blkdata',)

    def loadblkdata(self):
        if self._v_blkdata is None:
            Persistent._p_invalidate(self)
        blkdata = self._v_blkdata
        assert blkdata is not None
        self._v_blkdata = None
        return blkdata

    def setblkdata(self, buf):
        blkdata = memoryview(buf).tobytes()
        self._v_blkdata = blkdata.rstrip(b'\0')
        return True

    def __getstate__(self):
        assert self._v_blkdata is not None
        blkdata = self._v_blkdata
        self._v_blkdata = None
        return blkdata

    def __setstate__(self, state):
        super(ZBlk0, self).__init__()
        self._v_blkdata = state

    def __init__(self):
        self.__setstate__(None)


class ZData(Persistent):
    __module__ = _FILE
    __slots__ = ('data')

    def __init__(self, data):
        self.data = data

    def __getstate__(self):
        assert self._p_state is not GHOST
        data = self.data
        self._p_invalidate()
        return data

    def __setstate__(self, state):
        self.data = state


class ZBlk1(ZBlkBase):
    __module__ = _FILE
    __slots__ = ('chunktab')
    CHUNKSIZE = 4096

    def loadblkdata(self):
        if not self.chunktab:
            return b''
        tail_start = self.chunktab.maxKey()
        tail_chunk = self.chunktab[tail_start]
        blklen = tail_start + len(tail_chunk.data)
        blkdata = bytearray(blklen)
        blkdata[tail_start:] = tail_chunk.data
        stop = 0
        for start, chunk in self.chunktab.items(max=tail_start, excludemax=True):
            assert start >= stop
            stop = start + len(chunk.data)
            blkdata[start:stop] = chunk.data
        return blkdata

    def setblkdata(self, buf):
        buf = memoryview(buf)
        chunktab = self.chunktab
        CHUNKSIZE = self.CHUNKSIZE
        blkchanged = False
        for start, chunk in chunktab.items():
            if (start % CHUNKSIZE) or len(chunk.data) > CHUNKSIZE:
                chunktab.clear()
                break
        for start in range(0, len(buf), CHUNKSIZE):
            data = buf[start:start + CHUNKSIZE].tobytes().rstrip(b'\0')
            chunk = chunktab.get(start)
            if not data:
                if chunk is not None:
                    del chunktab[start]
                    chunk._p_deactivate()
                    blkchanged = True
            else:
                if chunk is None:
                    chunk = chunktab[start] = ZData(b'')
                if chunk.data != data:
                    chunk.data = data
                    blkchanged = True
                else:
                    chunk._p_deactivate()
        return blkchanged

    def __getstate__(self):
        return self.chunktab

    def __setstate__(self, state):
        super(ZBlk1, self).__init__()
        self.chunktab = state

    def __init__(self):
        super(ZBlk1, self).__init__()
        self.__setstate__(IOBTree())


# backward compatibility (early versions wrote ZBlk0 named as ZBlk)
ZBlk = ZBlk0


class LegacyZBlk(ZBlk0):
    """What wendelin.core v0.1-v0.4 wrote: format 0 named `ZBlk`, with the
    block stored unstripped. Only used to write; `ZBlk` is put back to the
    alias (as a reader sees it) once the write is committed."""
    __module__ = _FILE
    __slots__ = ()

    def setblkdata(self, buf):
        self._v_blkdata = memoryview(buf).tobytes()
        return True


LegacyZBlk.__name__ = LegacyZBlk.__qualname__ = 'ZBlk'

# Which class storeblk writes: 'ZBlk0', 'ZBlk1', 'auto' or 'ZBlk' (legacy).
ZBlk_fmt_write = 'ZBlk0'


class ZBigFile(LivePersistent):
    __module__ = _FILE

    def __init__(self, blksize):
        LivePersistent.__init__(self)
        self.__setstate__((blksize, LOBTree()))

    def __getstate__(self):
        return (self.blksize, self.blktab)

    def __setstate__(self, state):
        self.blksize, self.blktab = state

    def loadblk(self, blk, buf):
        zblk = self.blktab.get(blk)
        if zblk is None:
            return
        blkdata = zblk.loadblkdata()
        assert len(blkdata) <= self.blksize
        buf[:len(blkdata)] = blkdata

    def storeblk(self, blk, buf, fmt=None):
        fmt = fmt or ZBlk_fmt_write
        zblk = self.blktab.get(blk)
        if fmt == 'ZBlk':
            ztype = LegacyZBlk
        elif fmt == 'auto':
            ztype = self._zblk_fmt_heuristic(zblk, blk, buf)
        else:
            ztype = {'ZBlk0': ZBlk0, 'ZBlk1': ZBlk1}[fmt]
        self._setzblk(blk, zblk, buf, ztype)

    def _setzblk(self, blk, zblk, buf, zblk_type_write):
        if zblk is None or type(zblk) is not zblk_type_write:
            zblk = self.blktab[blk] = zblk_type_write()
        blkchanged = zblk.setblkdata(buf)
        if blkchanged:
            zblk._p_changed = True

    def _zblk_fmt_heuristic(self, zblk, blk, buf):
        new_data = bytes(buf).rstrip(b'\0')
        if zblk is None:
            old_data = b''
        else:
            assert not zblk._p_changed
            old_data = bytes(zblk.loadblkdata()).rstrip(b'\0')
        ndelta = memdelta(old_data, new_data)
        try:
            last_blk = self.blktab.maxKey()
        except ValueError:
            last_blk = -1
        append_oldblk = ((blk == last_blk) and (new_data[:len(old_data)] == old_data))
        append_newblk = ((blk == last_blk + 1) and (len(old_data) == 0))
        append = (append_oldblk or append_newblk)
        small = (ndelta < 0.5 * self.blksize)
        filled = (len(new_data) == self.blksize)
        if append:
            if append_newblk:
                zblk_prev = self.blktab.get(blk - 1)
                if zblk_prev is not None and zblk_prev._p_changed and \
                        type(zblk_prev) is not ZBlk0:
                    zblk_prev_data = zblk_prev.loadblkdata()
                    self._setzblk(blk - 1, zblk_prev, zblk_prev_data, ZBlk0)
            return ZBlk1 if (small and not filled) else ZBlk0
        else:
            return ZBlk1 if small else ZBlk0

    # --- the virtmem stand-in: the file as bytes

    def nblocks(self):
        try:
            return self.blktab.maxKey() + 1
        except ValueError:
            return 0

    def read(self, size):
        """File bytes [0, size), holes and unstored tails as zeros."""
        bs = self.blksize
        buf = bytearray(size)
        for blk in range(min(self.nblocks(), (size + bs - 1) // bs)):
            block = bytearray(bs)
            self.loadblk(blk, block)
            end = min(size, (blk + 1) * bs)
            buf[blk * bs:end] = block[:end - blk * bs]
        return buf

    def write(self, old, new, fmt=None):
        """Stores the blocks where `new` differs from `old` (bytes images
        of the file from offset 0), in ascending order as dirty pages are
        written out."""
        bs = self.blksize
        n = max(len(old), len(new))
        for blk in range((n + bs - 1) // bs):
            a = bytes(old[blk * bs:(blk + 1) * bs]).ljust(bs, b'\0')
            b = bytes(new[blk * bs:(blk + 1) * bs]).ljust(bs, b'\0')
            if a != b:
                self.storeblk(blk, b, fmt)


# --- wendelin/bigarray/__init__.py (geometry only) and array_zodb.py

class BigArray(object):
    __module__ = 'wendelin.bigarray'

    def __init__(self, shape, dtype_, bigfileh, order='C'):
        self._init0(shape, dtype_, order)
        self._v_fileh = bigfileh

    def _init0(self, shape, dtype_, order):
        shape = tuple(int(x) for x in (shape if hasattr(shape, '__iter__') else (shape,)))
        _dtype = numpy.dtype(dtype_)
        if _dtype.hasobject:
            raise TypeError("dtypes with object are not supported", _dtype)
        self._dtype = _dtype
        self._shape = shape
        self._order = order
        ordering = {
            'C': lambda i: mul(shape[i + 1:]),
            'F': lambda i: mul(shape[:i]),
        }
        Si = ordering.get(order)
        if Si is None:
            raise NotImplementedError('Order %s not supported' % order)
        self._stridev = tuple(Si(i) * self._dtype.itemsize for i in range(len(shape)))

    @property
    def _major_axis(self):
        return numpy.argmax(self._stridev)

    @property
    def shape(self):
        return self._shape

    @property
    def dtype(self):
        return self._dtype

    @property
    def nbytes(self):
        return self._dtype.itemsize * mul(self._shape)

    def resize(self, new_shape, refcheck=True):
        self._init0(new_shape, self.dtype, order=self._order)


_ = getfullargspec(BigArray.__init__)
BigArray_defaults = dict(zip(reversed(_.args), reversed(_.defaults)))


class ZBigArray(BigArray, LivePersistent):
    __module__ = _ARRAY
    __slots__ = (
        'zfile',
    )

    def __init__(self, shape, dtype, order='C', blksize=2 * 1024 * 1024):
        LivePersistent.__init__(self)
        BigArray._init0(self, shape, dtype, order)
        self.zfile = ZBigFile(blksize)
        self._v_fileh = None

    def __setstate__(self, state):
        super(ZBigArray, self).__setstate__(state)
        for k, v in BigArray_defaults.items():
            if not hasattr(self, '_' + k):
                setattr(self, '_' + k, v)
        self._v_fileh = None


def span(a):
    """One past the last file byte the array's elements touch."""
    if 0 in a._shape:
        return 0
    return a._dtype.itemsize + sum((d - 1) * s for d, s in zip(a._shape, a._stridev))


def array_view(a, image=None):
    """The ndarray `a[:]` gives in wendelin.core: `ndarray(shape, dtype,
    buffer, 0, _stridev)` over the file bytes (a copy here, a mapping
    there). `image`: the file bytes to use instead of reading them."""
    n = span(a)
    buf = a.zfile.read(n) if image is None else image
    if len(buf) < n:
        buf = buf + bytearray(n - len(buf))
    return numpy.ndarray(a._shape, a._dtype, buffer=buf, offset=0, strides=a._stridev)


def _install():
    for cls in (ZBlkBase, ZBlk0, ZData, ZBlk1, ZBigFile):
        setattr(_module(_FILE), cls.__name__, cls)
    setattr(_module(_FILE), 'ZBlk', ZBlk)
    setattr(_module(_LIB), 'LivePersistent', LivePersistent)
    setattr(_module('wendelin.bigarray'), 'BigArray', BigArray)
    setattr(_module(_ARRAY), 'ZBigArray', ZBigArray)


def use_legacy_name(on):
    """While on, `ZBlk` names the legacy class so that new format-0 blocks
    are pickled as `ZBlk`; off, it is the alias of ZBlk0 again."""
    setattr(_module(_FILE), 'ZBlk', LegacyZBlk if on else ZBlk0)


_install()
