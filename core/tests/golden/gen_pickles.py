"""Writes pickles.txt: hand-made pickles with what the Python reference makes of them.

For every case: the pickle bytes, zodbpickle's pickletools_3.dis output (all
pickles of the case disassembled one after the other with one memo, as
`zodb dump --pretty=zpickledis` does for a record), and where it applies
repr() of the loaded value, ZODB's referencesf and get_pickle_metadata.
The Rust tests in ../pickle_golden.rs compare against this file, so they do
not need Python at test time.

Run from the workspace root with the project's venv:
    .venv/bin/python core/tests/golden/gen_pickles.py > core/tests/golden/pickles.txt
"""
import collections
import io
import os
import sys

from zodbpickle import pickle as zpickle
from zodbpickle import pickletools_3 as pt
from ZODB.serialize import referencesf
from ZODB.utils import get_pickle_metadata

OID = b"\x00\x00\x00\x00\x00\x00\x00\x05"
OID2 = b"\x00\x00\x00\x00\x00\x00\x01\x07"

cases = []  # (name, data, npickles, python_value_or_None, is_record)


def value_cases():
    shared = [1, 2]
    rec = []
    rec.append(rec)
    values = {
        "none": None,
        "bools": (True, False),
        "ints": (0, 1, 255, 256, 65535, 65536, -1, -256, 2**31 - 1, -2**31, 2**31, 2**63, -2**63 - 1, 2**200, -2**200),
        "floats": (0.0, -0.0, 1.5, 1e16, 1e15, 1e-5, 1e-4, 1.0 / 3, 1e300, 5e-324, float("inf"), float("-inf"), float("nan")),
        "text": ("", "abc", "it's", "a\"b'c", "é", "\u2028", "\U0001F600", "\x00\x7f\xa0\xad", "\ud800x", "\\u0041", "tab\tnl\nret\r"),
        "bytes": (b"", b"a", b"\x00\xff'\"", b"x" * 60),
        "tuples": ((), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)),
        "containers": ([], [1, [2, 3]], {}, {"a": 1, "b": [None]}, {1: {2: {}}}),
        "shared": (shared, shared, {"k": shared}, [shared]),
        "recursive": rec,
        # more than 256 memo entries: LONG_BINPUT/LONG_BINGET
        "big_memo": [[i] for i in range(260)],
        "set": {1, 2, 3},
        "frozenset": frozenset([1]),
        "ordered_dict": collections.OrderedDict([("a", 1), ("b", 2)]),
    }
    for name, v in values.items():
        for proto in (2,) if name == "big_memo" else (0, 1, 2, 3):
            data = zpickle.dumps(v, proto)
            plain = name not in ("set", "frozenset", "ordered_dict")
            # below protocol 3 Python 3 writes bytes through _codecs.encode
            if name == "bytes" and proto < 3:
                plain = False
            cases.append(("%s_p%d" % (name, proto), data, 1, v if plain else None, False))


def handmade():
    add = lambda name, data, n=1, record=False: cases.append((name, data, n, None, record))
    # protocol 0/1 text opcodes as Python 2 writes them
    add("text_int_bool_long", b"(I01\nI00\nI-12\nI12345678901234567890\nL7L\nL-99999999999999999999L\nF1.5\nF-0.0\nF1e+16\ntp0\n.")
    add("text_string", b"(S'a\\'b'\nS\"x'y\"\nS'\\x41\\n\\t\\\\'\nS'\\101\\0'\nS''\ntp1\n.")
    add("text_unicode", b"(Vabc\nV\\u00e9\\u20ac\nV\\U0001f600\nV\\\\u0041\nV\xe9\nt.")
    add("text_memo", b"(lp0\nI1\nag0\nap1\n(dp2\nS'k'\np3\ng3\nsag1\na.")
    add("binstring_latin1", b"(U\x03\xe9\xa0aT\x02\x00\x00\x00\x00\xffU\x01'U\x02'\"t.")
    add("long_forms", b"\x80\x02(\x8a\x00\x8a\x01\xff\x8a\x02\x00\x80\x8b\x03\x00\x00\x00\x01\x02\x03\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01t.")
    add("stack_ops", b"K\x01K\x022\x85\x86(K\x031(K\x04K\x0501K\x06\x87.")
    add("pop_mark_via_pop", b"N(0.")
    add("list_dict", b"(K\x01K\x02l(S'a'\nK\x01d\x86.")
    add("setitem_append", b"}q\x00U\x01kq\x01]q\x02K\x01aK\x02as.")
    add("long_binput_get", b"\x80\x02]r\x00\x01\x00\x00j\x00\x01\x00\x00a.")
    add("binunicode", b"X\x04\x00\x00\x00\xc3\xa9\xe2\x82.")  # error: invalid UTF-8
    add("binunicode_ok", b"X\x07\x00\x00\x00\xc3\xa9\xe2\x82\xac\xed\xa0.")  # error too
    add("binunicode_surrogate", b"X\x05\x00\x00\x00\xed\xa0\x80\xc3\xa9.")
    add("binbytes", b"\x80\x03(C\x00C\x02\x00'B\x03\x00\x00\x00\"'\\t.")
    add("binfloat", b"\x80\x03(G\x3f\xf8\x00\x00\x00\x00\x00\x00G\x7f\xf8\x00\x00\x00\x00\x00\x00G\xc3\x40\x00\x00\x00\x00\x00\x00t.")
    add("bools_none", b"\x80\x02(\x88\x89Nt.")
    # objects
    add("global_reduce_build", b"\x80\x02cdatetime\ndate\nq\x00C\x04\x07\xe9\x01\x02\x85q\x01Rq\x02}q\x03U\x01aK\x01sb.")
    add("newobj", b"\x80\x02ccollections\nOrderedDict\n)\x81(U\x01aK\x01u}b.")
    add("inst_obj", b"(K\x01icopy_reg\n_reconstructor\n(ccollections\nOrderedDict\nK\x02o\x86.")
    add("ext_codes", b"\x80\x02(\x82\x01\x83\x02\x01\x84\x03\x00\x00\x00t.")
    add("codecs_encode", b"\x80\x02c_codecs\nencode\nX\x02\x00\x00\x00\xc3\xa9X\x06\x00\x00\x00latin1\x86R.")
    add("empty_bytes_reduce", b"\x80\x02c__builtin__\nbytes\n)R.")
    add("global_escapes", b"cmod\\x41\nna\\tme\n.")
    add("persid_text", b"(P00000001\nPabc\nt.")
    # errors pickletools raises
    add("err_memo_redefined", b"K\x01q\x00q\x00.")
    add("err_memo_missing", b"h\x07.")
    add("err_no_mark", b"K\x01K\x02t.")
    add("err_stack_not_empty", b"K\x01K\x02.")
    add("err_put_mark", b"(q\x00.")
    add("err_proto4_opcode", b"\x80\x04\x8c\x01a.")
    add("err_unknown_opcode", b"\xff.")
    add("err_truncated", b"X\x05\x00\x00\x00ab")
    add("err_int_L", b"I12L\n.")
    add("err_long_too_big", b"\x8b" + (2000).to_bytes(4, "little") + b"\x7f" * 2000 + b".")
    add("err_string_quotes", b"S'abc\n.")
    add("err_string_non_ascii", b"S'\\xe9'\n.")
    add("odd_quote", b"S'\n.")
    # records: class pickle + state pickle with one memo
    klass = b"\x80\x03cBTrees.IOBTree\nIOBucket\nq\x00."
    add("rec_cross_memo", klass + b"\x80\x03(K\x01C\x08" + OID + b"q\x01h\x00\x86q\x02Qq\x03tq\x04C\x08" + OID2 + b"q\x05h\x00\x86q\x06Qq\x07\x86q\x08.", 2, True)
    add("rec_ref_forms", b"\x80\x03cfoo\nBar\nq\x00.\x80\x03(C\x08" + OID + b"QU\x08" + OID2 + b"Q(U\x01wC\x08" + OID + b"\x85lQ]C\x08" + OID2 + b"aQ(X\x01\x00\x00\x00nX\x02\x00\x00\x00dbC\x08" + OID + b"\x86lQ(X\x01\x00\x00\x00mX\x02\x00\x00\x00dbC\x08" + OID2 + b"h\x00\x87lQ(C\x08" + OID + b"(X\x03\x00\x00\x00modX\x04\x00\x00\x00namettQt.", 2, True)
    add("rec_pid_reuse", b"cfoo\nBar\nq\x01.(U\x08" + OID + b"q\x02h\x01\x86q\x03Qq\x04h\x03Qh\x04h\x02Qt.", 2, True)
    add("rec_py2_proto1", b"cfoo\nBar\nq\x01.}q\x02(U\x01a(U\x08" + OID + b"q\x03h\x01tQU\x01bK\x01u.", 2, True)
    add("rec_text_persid", b"cfoo\nBar\n.P\x00\x00\x00\x00\x00\x00\x00\x05\n.", 2, True)
    # class metadata forms of get_pickle_metadata
    add("meta_tuple_names", b"\x80\x03X\x03\x00\x00\x00modX\x04\x00\x00\x00nameq\x00\x86N\x86.\x80\x03N.", 2, True)
    add("meta_mark_global", b"(cfoo\nBar\nq\x01K\x01\x85t.N.", 2, True)
    add("meta_py2_names", b"((U\x03modU\x04nametNt.N.", 2, True)
    add("meta_int", b"K\x05.N.", 2, True)


def dis_text(data, n):
    f = io.BytesIO(data)
    out = io.StringIO()
    memo = {}
    try:
        for _ in range(n):
            pt.dis(f, out, memo)
        return "ok", out.getvalue()
    except Exception:
        return "error", out.getvalue()


def main():
    value_cases()
    handmade()
    w = sys.stdout
    w.write("# Generated by gen_pickles.py with Python %s, zodbpickle pickletools_3; do not edit.\n" % sys.version.split()[0])
    for name, data, n, value, record in cases:
        w.write("case %s\n" % name)
        w.write("pickle %s\n" % data.hex())
        w.write("pickles %d\n" % n)
        status, text = dis_text(data, n)
        w.write("dis %s\n" % status)
        if status == "ok":
            for line in text.splitlines():
                w.write("| %s\n" % line)
        if value is not None:
            loaded = zpickle.loads(data)
            assert repr(loaded) == repr(value) or value != value, name
            w.write("repr %s\n" % repr(loaded).encode("utf-8", "surrogatepass").hex())
        if record:
            try:
                w.write("refs %s\n" % ",".join(o.hex() for o in referencesf(data)))
            except Exception as e:
                w.write("refs !%s\n" % type(e).__name__)
            try:
                m, c = get_pickle_metadata(data)
                w.write("meta %s,%s\n" % (str(m).encode().hex(), str(c).encode().hex()))
            except Exception as e:
                w.write("meta !%s\n" % type(e).__name__)
        w.write("end\n")


main()
