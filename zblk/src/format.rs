//! The pickled states of wendelin.core's persistent classes (spec
//! wendelin.md §1-§6), as plain Rust values.
//!
//! Pure: these functions turn a decoded record into a typed state and do no
//! I/O. Loading and following references is the business of [`crate::file`],
//! [`crate::array`] and [`crate::btree`].
//!
//! The types keep what a writer needs to turn a state back into the same
//! pickle, not only what a reader needs: whether a block's bytes were a
//! Python 3 `bytes` or a Python 2 `str` ([`BinaryKind`]), whether a block
//! was written under the legacy class name `ZBlk`, the order of a
//! ZBigArray's attributes and whether `_order` was there at all, and the
//! whole numpy dtype state ([`DType`]).

use bytes::Bytes;
use zodb_core::Oid;
use zodb_core::pickle::{GlobalName, Node, ObjectKind, PersistentRef, Record, Value};

use crate::dtype::DType;
use crate::error::{Error, Result};

/// Module of the block and file classes.
pub const FILE_ZODB: &str = "wendelin.bigfile.file_zodb";
/// Module of `ZBigArray`.
pub const ARRAY_ZODB: &str = "wendelin.bigarray.array_zodb";

/// A persistent reference as the writer stored it: the target, and the
/// class it cached so that a ghost can be made without loading (spec
/// pickles.md §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjRef {
    /// The target object.
    pub oid: Oid,
    /// The cached class; `None` for a bare-oid reference. An old
    /// `(module, name)` tuple is read as the same global.
    pub class: Option<GlobalName>,
}

impl ObjRef {
    /// `(module, name)` of the cached class.
    pub fn class_path(&self) -> Option<(&str, &str)> {
        self.class.as_ref().map(|g| (g.module(), g.name()))
    }

    /// Reads a reference value the way ZODB's `ObjectReader` does: an
    /// `(oid, class)` tuple or a bare oid, the oid in any binary spelling
    /// (bytes, Python 2 str, or `_codecs.encode(text, 'latin1')`, which is
    /// how Python 3 pickles bytes below protocol 3). Weak and
    /// cross-database references are refused: wendelin never writes them,
    /// and following one would read another object than Python does.
    pub fn from_value(v: Value<'_>) -> Result<ObjRef, String> {
        let pid = v
            .as_persistent_id()
            .ok_or_else(|| format!("{} is not a persistent reference", describe(v)))?;
        let (oid, class) = match (pid.as_tuple(), pid.as_list()) {
            (Some(t), _) => match (t.get(0), t.get(1), t.len()) {
                (Some(oid), Some(class), 2) => (oid, Some(class)),
                _ => {
                    return Err(format!(
                        "persistent id {} is not (oid, class)",
                        describe(pid)
                    ));
                }
            },
            (None, Some(_)) => {
                return Err(match v.persistent_ref() {
                    Ok(PersistentRef::Weak { oid, .. }) => {
                        format!("weak reference to {oid} where a persistent reference is required")
                    }
                    Ok(PersistentRef::Multi { oid, database, .. }) => format!(
                        "reference to {oid} in database {database:?}: cross-database references \
                         are not supported"
                    ),
                    _ => format!("persistent id {} has no known form", describe(pid)),
                });
            }
            (None, None) => (pid, None),
        };
        let raw = oid
            .as_bytes()
            .or_else(|| {
                oid.as_text()
                    .filter(|t| t.is_ascii())
                    .map(|t| Bytes::copy_from_slice(t.as_bytes()))
            })
            .ok_or_else(|| format!("reference oid {} is not bytes", describe(oid)))?;
        let oid = Oid::from_slice(&raw)
            .ok_or_else(|| format!("reference oid is {} bytes, not 8", raw.len()))?;
        let class = match class {
            None => None,
            Some(c) => Some(match c.node() {
                Node::Global(g) => g.clone(),
                // Old data caches `(module, name)` instead of the class.
                _ => match c.as_tuple().map(|t| (t.len(), t.get(0), t.get(1))) {
                    Some((2, Some(m), Some(n))) => match (m.as_text(), n.as_text()) {
                        (Some(m), Some(n)) => GlobalName::new(m, n),
                        _ => return Err(bad_class(oid, c)),
                    },
                    _ => return Err(bad_class(oid, c)),
                },
            }),
        };
        Ok(ObjRef { oid, class })
    }
}

fn bad_class(oid: Oid, class: Value<'_>) -> String {
    format!(
        "reference to {oid} caches a class that is no global: {}",
        describe(class)
    )
}

/// How binary data was spelled in the pickle (spec pickles.md §5). The
/// bytes are the same; a writer reproducing a record needs the spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryKind {
    /// Python 3 `bytes` (SHORT_BINBYTES/BINBYTES).
    Bytes,
    /// Python 2 `str` (SHORT_BINSTRING/BINSTRING/STRING): what every
    /// Python 2 wendelin.core wrote, whatever the protocol.
    Str,
    /// Python 3 `bytes` pickled below protocol 3:
    /// `_codecs.encode(text, 'latin1')`.
    Latin1,
    /// Empty Python 3 `bytes` pickled below protocol 3: `bytes()`.
    EmptyBytesCall,
    /// A `bytearray` (protocol 5); never written by wendelin, accepted as
    /// Python would.
    ByteArray,
}

/// Block or chunk bytes, zero-copy out of the record they were read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binary {
    /// The bytes: a slice of the record, so a 2 MiB block costs no copy.
    pub data: Bytes,
    /// How they were pickled.
    pub kind: BinaryKind,
}

impl Binary {
    /// Reads binary data in any of the spellings of [`BinaryKind`].
    pub fn from_value(v: Value<'_>) -> Result<Binary, String> {
        let kind = match v.node() {
            Node::Bytes(_) => BinaryKind::Bytes,
            Node::Str(_) => BinaryKind::Str,
            Node::ByteArray(_) => BinaryKind::ByteArray,
            Node::Object(obj) if obj.kind == ObjectKind::Reduce => {
                match v.graph().value(obj.class).as_global() {
                    Some(("_codecs", "encode")) => BinaryKind::Latin1,
                    Some(("__builtin__" | "builtins", "bytes")) => BinaryKind::EmptyBytesCall,
                    _ => return Err(format!("expected bytes, got {}", describe(v))),
                }
            }
            _ => return Err(format!("expected bytes, got {}", describe(v))),
        };
        let data = v
            .as_bytes()
            .ok_or_else(|| format!("expected bytes, got {}", describe(v)))?;
        Ok(Binary { data, kind })
    }
}

/// The class a block object was written as (spec wendelin.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlockFormat {
    /// `ZBlk0`: the block's bytes in one object.
    ZBlk0,
    /// `ZBlk`: format 0 under its v0.1-v0.4 name, stored unstripped.
    LegacyZBlk,
    /// `ZBlk1`: the block cut into ZData chunks indexed by an IOBTree.
    ZBlk1,
}

impl BlockFormat {
    /// All formats, in the order reports list them.
    pub const ALL: [BlockFormat; 3] = [
        BlockFormat::ZBlk0,
        BlockFormat::LegacyZBlk,
        BlockFormat::ZBlk1,
    ];

    /// The class name in `wendelin.bigfile.file_zodb`.
    pub fn class_name(self) -> &'static str {
        match self {
            BlockFormat::ZBlk0 => "ZBlk0",
            BlockFormat::LegacyZBlk => "ZBlk",
            BlockFormat::ZBlk1 => "ZBlk1",
        }
    }

    /// The format of a class, `None` for any class that is no block.
    pub fn from_class(module: &str, name: &str) -> Option<BlockFormat> {
        if module != FILE_ZODB {
            return None;
        }
        match name {
            "ZBlk0" => Some(BlockFormat::ZBlk0),
            "ZBlk" => Some(BlockFormat::LegacyZBlk),
            "ZBlk1" => Some(BlockFormat::ZBlk1),
            _ => None,
        }
    }
}

/// State of a `ZBlk0` (or legacy `ZBlk`): the block's bytes, trailing NULs
/// stripped since v0.5, full length before (spec wendelin.md §2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZBlk0State {
    /// The bytes; a reader zero-pads them to blksize.
    pub data: Binary,
    /// Written under the legacy class name `ZBlk`.
    pub legacy_name: bool,
}

/// State of a `ZBlk1`: its chunk table, a separate IOBTree (spec
/// wendelin.md §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZBlk1State {
    /// The IOBTree mapping byte offset in the block to a ZData.
    pub chunktab: ObjRef,
}

/// State of a `ZData`: one chunk's bytes, trailing NULs stripped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZDataState {
    /// The chunk's bytes.
    pub data: Binary,
}

/// The state of any block object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ZBlkState {
    /// `ZBlk0` or legacy `ZBlk`.
    ZBlk0(ZBlk0State),
    /// `ZBlk1`.
    ZBlk1(ZBlk1State),
}

impl ZBlkState {
    /// Which class wrote it.
    pub fn format(&self) -> BlockFormat {
        match self {
            ZBlkState::ZBlk0(s) if s.legacy_name => BlockFormat::LegacyZBlk,
            ZBlkState::ZBlk0(_) => BlockFormat::ZBlk0,
            ZBlkState::ZBlk1(_) => BlockFormat::ZBlk1,
        }
    }

    /// Reads the state of a block of format `format`.
    pub fn from_state(format: BlockFormat, v: Value<'_>) -> Result<ZBlkState, String> {
        Ok(match format {
            BlockFormat::ZBlk0 | BlockFormat::LegacyZBlk => ZBlkState::ZBlk0(ZBlk0State {
                data: Binary::from_value(v)?,
                legacy_name: format == BlockFormat::LegacyZBlk,
            }),
            BlockFormat::ZBlk1 => ZBlkState::ZBlk1(ZBlk1State {
                chunktab: ObjRef::from_value(v)
                    .map_err(|e| format!("chunktab is not an IOBTree reference: {e}"))?,
            }),
        })
    }
}

impl ZDataState {
    /// Reads a ZData state.
    pub fn from_state(v: Value<'_>) -> Result<ZDataState, String> {
        Ok(ZDataState {
            data: Binary::from_value(v)?,
        })
    }
}

/// State of a `ZBigFile`: `(blksize, blktab)`, the same in every version
/// (spec wendelin.md §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZBigFileState {
    /// Block size in bytes (> 0).
    pub blksize: u64,
    /// The LOBTree mapping block number to ZBlk.
    pub blktab: ObjRef,
}

impl ZBigFileState {
    /// Reads a ZBigFile state.
    pub fn from_state(v: Value<'_>) -> Result<ZBigFileState, String> {
        let t = v
            .as_tuple()
            .ok_or_else(|| format!("state is {}, expected (blksize, blktab)", describe(v)))?;
        let (Some(blksize), Some(blktab), 2) = (t.get(0), t.get(1), t.len()) else {
            return Err(format!(
                "state is a tuple of {} items, expected (blksize, blktab)",
                t.len()
            ));
        };
        let blksize = blksize
            .as_int()
            .ok_or_else(|| format!("blksize is {}, expected an int", describe(blksize)))?;
        let blksize = u64::try_from(blksize)
            .ok()
            .filter(|&b| b > 0)
            .ok_or_else(|| format!("blksize {blksize} is not positive"))?;
        let blktab = ObjRef::from_value(blktab)
            .map_err(|e| format!("blktab is not a LOBTree reference: {e}"))?;
        Ok(ZBigFileState { blksize, blktab })
    }
}

/// Memory order of a ZBigArray.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Order {
    /// Row-major: the last index varies fastest.
    C,
    /// Column-major: the first index varies fastest.
    F,
}

impl Order {
    /// `'C'` or `'F'`.
    pub fn as_char(self) -> char {
        match self {
            Order::C => 'C',
            Order::F => 'F',
        }
    }
}

/// State of a `ZBigArray`: `(dict, {'zfile': ref})` (spec wendelin.md §6).
#[derive(Clone, Debug, PartialEq)]
pub struct ZBigArrayState {
    /// `_dtype`.
    pub dtype: DType,
    /// `_shape`.
    pub shape: Vec<u64>,
    /// `_order`; `None` in arrays saved before Fortran order existed
    /// (wendelin.core < v0.6), which load as `'C'`.
    pub order: Option<Order>,
    /// `_stridev`: byte strides, the addressing BigArray uses.
    pub stridev: Vec<u64>,
    /// The ZBigFile holding the bytes.
    pub zfile: ObjRef,
    /// The attribute names of the `__dict__` part in pickle order
    /// (`_dtype`, `_shape`, `_order`, `_stridev` in every version so far),
    /// so that a writer reproduces the dict as it was. Unknown attributes
    /// are listed too; their values are not kept.
    pub attrs: Vec<String>,
    /// Whether the state was `(dict, slots)` (every version) rather than a
    /// bare dict holding `zfile`.
    pub slots_form: bool,
}

impl ZBigArrayState {
    /// The order BigArray works with: `_order`, or `'C'` when missing (the
    /// compatibility default of `ZBigArray.__setstate__`).
    pub fn effective_order(&self) -> Order {
        self.order.unwrap_or(Order::C)
    }

    /// Reads a ZBigArray state.
    pub fn from_state(v: Value<'_>) -> Result<ZBigArrayState, String> {
        let (dict, slots) = match v.as_tuple() {
            Some(t) if t.len() == 2 => (t.get(0), t.get(1)),
            Some(t) => {
                return Err(format!(
                    "state is a tuple of {} items, expected (dict, slots)",
                    t.len()
                ));
            }
            None if v.dict_items().is_some() => (Some(v), None),
            None => return Err(format!("state is {}, expected (dict, slots)", describe(v))),
        };
        let dict = dict
            .filter(|d| !d.is_none())
            .ok_or("the instance dict is missing")?;
        let items = dict
            .dict_items()
            .ok_or_else(|| format!("instance dict is {}", describe(dict)))?;
        let mut attrs = Vec::with_capacity(items.len());
        for (k, _) in items.clone() {
            let name = k
                .as_text()
                .ok_or_else(|| format!("attribute name {} is not text", describe(k)))?;
            attrs.push(name.to_owned());
        }
        let get = |name: &str| items.get(name);
        let dtype = get("_dtype").ok_or("no _dtype")?;
        let dtype = DType::from_value(dtype).map_err(|e| format!("_dtype: {e}"))?;
        let shape = int_seq(get("_shape").ok_or("no _shape")?, "_shape")?;
        let stridev = int_seq(get("_stridev").ok_or("no _stridev")?, "_stridev")?;
        let order = match get("_order") {
            None => None,
            Some(o) => Some(match o.as_text() {
                Some("C") => Order::C,
                Some("F") => Order::F,
                _ => return Err(format!("_order is {}, expected 'C' or 'F'", describe(o))),
            }),
        };
        let zfile = match slots {
            Some(s) => s
                .dict_get("zfile")
                .ok_or_else(|| format!("slots {} have no zfile", describe(s)))?,
            None => get("zfile").ok_or("no zfile")?,
        };
        let zfile = ObjRef::from_value(zfile).map_err(|e| format!("zfile: {e}"))?;
        Ok(ZBigArrayState {
            dtype,
            shape,
            order,
            stridev,
            zfile,
            attrs,
            slots_form: slots.is_some(),
        })
    }
}

/// A tuple (or list) of non-negative ints.
fn int_seq(v: Value<'_>, what: &str) -> Result<Vec<u64>, String> {
    let items = v
        .as_tuple()
        .or_else(|| v.as_list())
        .ok_or_else(|| format!("{what} is {}, expected a tuple of ints", describe(v)))?;
    items
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let n = x
                .as_int()
                .ok_or_else(|| format!("{what}[{i}] is {}, expected an int", describe(x)))?;
            u64::try_from(n).map_err(|_| format!("{what}[{i}] is negative ({n})"))
        })
        .collect()
}

/// A short description of a value for messages: its repr, cut.
pub(crate) fn describe(v: Value<'_>) -> String {
    const MAX: usize = 80;
    let s = format!("{v:?}");
    if s.len() <= MAX {
        return s;
    }
    let mut cut = MAX;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", s.get(..cut).unwrap_or_default())
}

/// `module.name` of a record's class, or a description when it names none.
pub(crate) fn record_class(record: &Record) -> String {
    match record.class_path() {
        Some((m, n)) => format!("{m}.{n}"),
        None => format!("<class metadata {}>", describe(record.class())),
    }
}

/// Checks a record's class is `module.name`.
fn expect_class(
    oid: Oid,
    record: &Record,
    module: &str,
    names: &[&str],
    expected: &'static str,
) -> Result<()> {
    match record.class_path() {
        Some((m, n)) if m == module && names.contains(&n) => Ok(()),
        _ => Err(Error::Class {
            oid,
            found: record_class(record),
            expected,
        }),
    }
}

/// The state of block object `oid` (ZBlk0, ZBlk or ZBlk1).
pub fn decode_zblk(oid: Oid, record: &Record) -> Result<ZBlkState> {
    let format = record
        .class_path()
        .and_then(|(m, n)| BlockFormat::from_class(m, n))
        .ok_or_else(|| Error::Class {
            oid,
            found: record_class(record),
            expected: "wendelin.bigfile.file_zodb.ZBlk0, ZBlk or ZBlk1",
        })?;
    ZBlkState::from_state(format, record.state())
        .map_err(|e| Error::state(oid, (FILE_ZODB, format.class_name()), e))
}

/// The state of ZData `oid`.
pub fn decode_zdata(oid: Oid, record: &Record) -> Result<ZDataState> {
    expect_class(
        oid,
        record,
        FILE_ZODB,
        &["ZData"],
        "wendelin.bigfile.file_zodb.ZData",
    )?;
    ZDataState::from_state(record.state()).map_err(|e| Error::state(oid, (FILE_ZODB, "ZData"), e))
}

/// The state of ZBigFile `oid`.
pub fn decode_zbigfile(oid: Oid, record: &Record) -> Result<ZBigFileState> {
    expect_class(
        oid,
        record,
        FILE_ZODB,
        &["ZBigFile"],
        "wendelin.bigfile.file_zodb.ZBigFile",
    )?;
    ZBigFileState::from_state(record.state())
        .map_err(|e| Error::state(oid, (FILE_ZODB, "ZBigFile"), e))
}

/// The state of ZBigArray `oid`.
pub fn decode_zbigarray(oid: Oid, record: &Record) -> Result<ZBigArrayState> {
    expect_class(
        oid,
        record,
        ARRAY_ZODB,
        &["ZBigArray"],
        "wendelin.bigarray.array_zodb.ZBigArray",
    )?;
    ZBigArrayState::from_state(record.state())
        .map_err(|e| Error::state(oid, (ARRAY_ZODB, "ZBigArray"), e))
}
