"""The Python reference for the encoder tests (pickle_encode_*.rs).

Reads cases on stdin, each a graph of values described one node a line
(the format pickle_encode_util/mod.rs writes), builds the same Python
objects with the same identities, pickles the given roots with one Pickler
(zodbpickle's, as ZODB sets it up, or the standard library's) and prints
one line per case: the pickles in hex, or "!" and the exception.

    case PROTOCOL z|zf|s ROOT [ROOT...]   (zf: zodbpickle in fast mode)
    N | B 0/1 | I dec | L hexle | F hexbe | Y hex | U hexutf8 | A hex
    T ids | Li ids | D k v ... | Se ids | Fs ids | G hexmod hexname
    P pid | O kind class args kwargs state listitems dictitems
    end

"-" is empty hex or an absent id. Globals that do not import are made up
as classes in made-up modules; objects reduce to exactly the callable,
arguments, state and items given (NEWOBJ through copyreg.__newobj__, as
object.__reduce_ex__ does), and a P object's persistent id is its pid.
Strings and bytes of length 0 or 1 are shared by value, as CPython caches
them.
"""
import copyreg
import importlib
import io
import pickle as stdpickle
import struct
import sys
import types

from zodbpickle import pickle as zpickle


class Base:
    """What the graph's objects are: they reduce to what they were given."""

    def __reduce_ex__(self, proto):
        li = None if self._li is None else iter(self._li)
        di = None if self._di is None else iter(self._di)
        if self._kind == "N":
            return (copyreg.__newobj__, (self._cls,) + self._args,
                    self._state, li, di)
        return (self._cls, self._args, self._state, li, di)


class Red(Base):
    pass


class P:
    __slots__ = ("pid",)


def persistent_id(obj):
    return obj.pid if type(obj) is P else None


def unhex(s):
    return b"" if s == "-" else bytes.fromhex(s)


def glob(module, name):
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        pass
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        mname = ".".join(parts[:i])
        if mname not in sys.modules:
            mod = types.ModuleType(mname)
            sys.modules[mname] = mod
            if i > 1:
                setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], mod)
    mod = sys.modules[module]
    if not hasattr(mod, name):
        cls = type(name, (Base,), {"__module__": module, "__qualname__": name})
        setattr(mod, name, cls)
    return getattr(mod, name)


SHORT = {}


def short(v):
    """CPython shares empty and one-character strings and bytes."""
    if len(v) > 1:
        return v
    return SHORT.setdefault((type(v), v), v)


def build(lines):
    toks = [line.split() for line in lines]
    n = len(toks)
    objs = [None] * n
    state = [0] * n  # 0 new, 1 building, 2 made
    mutable = {"Li", "D", "Se", "O", "P", "A"}

    def ids(ts):
        return [int(t) for t in ts]

    def get(i):
        if state[i] == 2:
            return objs[i]
        t = toks[i]
        k = t[0]
        if k in mutable:
            if k == "Li":
                o = []
            elif k == "D":
                o = {}
            elif k == "Se":
                o = set()
            elif k == "A":
                o = bytearray(unhex(t[1]))
            elif k == "P":
                o = P()
            else:  # O
                if t[1] == "N":
                    cls = get(int(t[2]))
                    o = cls.__new__(cls)
                else:
                    o = Red()
            objs[i] = o
            state[i] = 2
            return o
        if state[i] == 1:
            raise RecursionError("a cycle through immutable values")
        state[i] = 1
        if k == "N":
            o = None
        elif k == "B":
            o = t[1] == "1"
        elif k == "I":
            o = int(t[1])
        elif k == "L":
            o = int.from_bytes(unhex(t[1]), "little", signed=True)
        elif k == "F":
            o = struct.unpack(">d", unhex(t[1]))[0]
        elif k == "Y":
            o = short(unhex(t[1]))
        elif k == "U":
            o = short(unhex(t[1]).decode("utf-8", "surrogatepass"))
        elif k == "T":
            o = tuple(get(j) for j in ids(t[1:]))
        elif k == "Fs":
            o = frozenset(get(j) for j in ids(t[1:]))
        elif k == "G":
            o = glob(unhex(t[1]).decode(), unhex(t[2]).decode())
        else:
            raise ValueError("cannot make %r in Python 3" % k)
        objs[i] = o
        state[i] = 2
        return o

    for i in range(n):
        get(i)
    for i, t in enumerate(toks):
        k, o = t[0], objs[i]
        if k == "Li":
            o.extend(get(j) for j in ids(t[1:]))
        elif k == "D":
            kv = ids(t[1:])
            for a, b in zip(kv[::2], kv[1::2]):
                o[get(a)] = get(b)
        elif k == "Se":
            o.update(get(j) for j in ids(t[1:]))
        elif k == "P":
            o.pid = get(int(t[1]))
        elif k == "O":
            kind, cls, args, kwargs, st, li, di = t[1:8]
            if kind not in "RN" or kwargs != "-":
                raise ValueError("object kind %r" % kind)
            o._kind = kind
            o._cls = get(int(cls))
            o._args = get(int(args))
            o._state = None if st == "-" else get(int(st))
            o._li = None if li == "-" else [get(int(j)) for j in li.split(",")]
            if di == "-":
                o._di = None
            else:
                kv = [get(int(j)) for j in di.split(",")]
                o._di = list(zip(kv[::2], kv[1::2]))
    return objs


def run(head, lines):
    _, proto, which, *roots = head.split()
    objs = build(lines)
    f = io.BytesIO()
    mod = stdpickle if which == "s" else zpickle
    p = mod.Pickler(f, int(proto))
    p.persistent_id = persistent_id
    p.fast = which == "zf"  # as ZODB's fsIndex.save does
    for r in roots:
        p.dump(objs[int(r)])
    return f.getvalue().hex()


def main():
    sys.setrecursionlimit(10000)
    head, lines = None, []
    for line in sys.stdin:
        line = line.rstrip("\n")
        if head is None:
            head, lines = line, []
        elif line == "end":
            try:
                out = run(head, lines)
            except Exception as e:  # reported to the Rust side
                out = "!%s: %s" % (type(e).__name__, e)
            print(out or "-")
            head = None
        else:
            lines.append(line)


main()
