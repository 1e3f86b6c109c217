//! NumPy dtypes as ZBigArray's `_dtype` pickles them (spec wendelin.md §6).
//!
//! NumPy pickles a dtype through its reduce protocol:
//! `numpy.dtype(typestr, align, copy)` (REDUCE), then BUILD with the state
//! tuple `(version, byteorder, subarray, names, fields, elsize, alignment,
//! flags[, metadata])`. Structured dtypes nest whole dtype pickles in
//! `fields` and `subarray`. [`DType`] keeps every element of that state, so
//! a writer can pickle it back, and derives what a reader needs: kind, item
//! size, NumPy's `dtype.str` and the `.npy` `descr`.
//!
//! Old layouts are accepted the way NumPy's `arraydescr_setstate` accepts
//! them: 5-tuples (version 0), 6-tuples (versions 1-2, names stored under
//! the key `-1` of `fields`), 7-, 8- (version 3) and 9-tuples (version 4,
//! with metadata: datetime units or a user dict).

use std::fmt::Write as _;

use bytes::Bytes;
use zodb_core::pickle::{GlobalName, Node, NodeId, ObjectKind, Value};

use crate::encode::StateBuilder;
use crate::format::describe;

/// Nested dtypes deeper than this are refused: real structured dtypes nest
/// a few levels, and a hostile (or cyclic, through the memo) pickle must
/// not exhaust the stack.
pub const MAX_DTYPE_DEPTH: usize = 32;

/// What `numpy.dtype` was called with (the first reduce argument).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScalarType {
    /// A type string, kind and size: `f8`, `u1`, `V12`, `U3`, `M8`...
    TypeStr(String),
    /// A scalar class, as NumPy writes for record dtypes of `numpy.record`.
    Class(GlobalName),
}

/// The byte order character of the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteOrder {
    /// `<`.
    Little,
    /// `>`.
    Big,
    /// `|`: single bytes, strings, voids and structured types.
    NotApplicable,
    /// `=`: NumPy resolves native order to `<` or `>` when pickling, so
    /// this only comes from hand-made pickles; it is read as little-endian.
    Native,
}

impl ByteOrder {
    /// The character.
    pub fn as_char(self) -> char {
        match self {
            ByteOrder::Little => '<',
            ByteOrder::Big => '>',
            ByteOrder::NotApplicable => '|',
            ByteOrder::Native => '=',
        }
    }

    /// The character NumPy's `dtype.str` shows: `=` resolved to `<`.
    fn str_char(self) -> char {
        match self {
            ByteOrder::Native => '<',
            other => other.as_char(),
        }
    }
}

/// A subarray dtype: `shape` items of `base` per element.
#[derive(Clone, Debug, PartialEq)]
pub struct SubArray {
    /// The item type.
    pub base: DType,
    /// The item shape.
    pub shape: Vec<u64>,
    /// The shape was pickled as a bare int, not a tuple.
    pub shape_is_int: bool,
}

/// One field of a structured dtype.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    /// The field's name.
    pub name: String,
    /// Its type.
    pub dtype: DType,
    /// Its byte offset in the element.
    pub offset: u64,
    /// Its title, if it has one (titles also appear as keys of `fields`).
    pub title: Option<String>,
}

/// Version-4 metadata (the 9th state element).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Metadata {
    /// No 9th element (versions 0-3).
    Absent,
    /// The 9th element is `None`.
    None,
    /// A datetime dtype's unit: `(metadata, (unit, num, den, events))`.
    Datetime {
        /// The unit, e.g. `ns`, `D`, `generic`.
        unit: String,
        /// Multiplier of the unit (`M8[25s]` has 25).
        num: i64,
        /// Legacy denominator (1).
        den: i64,
        /// Legacy events (1).
        events: i64,
        /// The first element was a metadata dict rather than `None`.
        has_dict: bool,
    },
    /// A user metadata dict (dropped by NumPy's `.npy` writer too).
    Dict,
}

/// A NumPy dtype (see the module documentation).
#[derive(Clone, Debug, PartialEq)]
pub struct DType {
    /// First reduce argument.
    pub scalar: ScalarType,
    /// Second reduce argument (`align`, always False from NumPy).
    pub align: bool,
    /// Third reduce argument (`copy`, always True from NumPy).
    pub copy: bool,
    /// State version (3, or 4 with metadata).
    pub version: i64,
    /// Byte order.
    pub byteorder: ByteOrder,
    /// Subarray, for dtypes like `('<f4', (2, 2))`.
    pub subarray: Option<Box<SubArray>>,
    /// Fields in `names` order, for structured dtypes.
    pub fields: Option<Vec<Field>>,
    /// The keys of the pickled `fields` dict in pickle order (names, then
    /// titles in NumPy's order), for re-pickling.
    pub field_keys: Vec<String>,
    /// State `elsize`: the item size for flexible types, -1 otherwise.
    pub elsize: i64,
    /// State `alignment`: for flexible types, -1 otherwise.
    pub alignment: i64,
    /// State `flags` (NumPy's dtype flags: has-object, aligned struct...).
    pub flags: i64,
    /// Version-4 metadata.
    pub metadata: Metadata,
    kind: char,
    itemsize: u64,
}

impl DType {
    /// Reads a pickled dtype.
    pub fn from_value(v: Value<'_>) -> Result<DType, String> {
        parse(v, 0)
    }

    /// NumPy's kind character: `b i u f c M m S U V O`.
    pub fn kind(&self) -> char {
        self.kind
    }

    /// Bytes per element.
    pub fn itemsize(&self) -> u64 {
        self.itemsize
    }

    /// Whether elements hold Python object pointers (BigArray refuses
    /// such dtypes: the bytes are addresses in some process).
    pub fn has_object(&self) -> bool {
        self.kind == 'O'
            || self.subarray.as_ref().is_some_and(|s| s.base.has_object())
            || self
                .fields
                .as_ref()
                .is_some_and(|f| f.iter().any(|f| f.dtype.has_object()))
    }

    /// NumPy's `dtype.str`: byte order, kind, size (`<f8`, `|S5`, `<U3`,
    /// `|V12`, `<M8[ns]`).
    pub fn numpy_str(&self) -> String {
        let mut s = String::new();
        s.push(self.byteorder.str_char());
        s.push(self.kind);
        match self.kind {
            'O' => {}
            'U' => {
                let _ = write!(s, "{}", self.itemsize / 4);
            }
            _ => {
                let _ = write!(s, "{}", self.itemsize);
            }
        }
        if let Metadata::Datetime { unit, num, .. } = &self.metadata
            && matches!(self.kind, 'M' | 'm')
            && unit != "generic"
        {
            if *num == 1 {
                let _ = write!(s, "[{unit}]");
            } else {
                let _ = write!(s, "[{num}{unit}]");
            }
        }
        s
    }

    /// The element type and extra dimensions NumPy uses for an array of
    /// this dtype: an ndarray never has a subarray dtype, it appends the
    /// subarray's shape to its own and uses the base type.
    pub fn expand_subarray(&self) -> (&DType, Vec<u64>) {
        let mut dt = self;
        let mut dims = Vec::new();
        while let Some(sub) = &dt.subarray {
            dims.extend_from_slice(&sub.shape);
            dt = &sub.base;
        }
        (dt, dims)
    }

    /// What NumPy's `.npy` writer stores as `descr` for this dtype
    /// (`numpy.lib.format.dtype_to_descr`): `dtype.str`, or for structured
    /// dtypes the field list with padding made explicit. Fails, as NumPy
    /// does, for fields that overlap or are out of order.
    pub fn npy_descr(&self) -> Result<Descr, String> {
        if self.fields.is_some() {
            self.array_descr(0)
        } else {
            Ok(Descr::Type(self.numpy_str()))
        }
    }

    /// NumPy's `_array_descr` (without metadata, which `.npy` drops).
    fn array_descr(&self, depth: usize) -> Result<Descr, String> {
        if depth > MAX_DTYPE_DEPTH {
            return Err("dtype nested too deeply".into());
        }
        let Some(fields) = &self.fields else {
            return match &self.subarray {
                None => Ok(Descr::Type(self.numpy_str())),
                Some(sub) => Ok(Descr::SubArray(
                    Box::new(sub.base.array_descr(depth + 1)?),
                    sub.shape.clone(),
                )),
            };
        };
        let mut out = Vec::with_capacity(fields.len());
        let mut offset = 0u64;
        for f in fields {
            if f.offset > offset {
                out.push(DescrField::padding(f.offset - offset));
                offset = f.offset;
            } else if f.offset < offset {
                return Err("dtype.descr is not defined for types with overlapping or \
                            out-of-order fields"
                    .into());
            }
            let (descr, shape) = match &f.dtype.subarray {
                Some(sub) => (sub.base.array_descr(depth + 1)?, Some(sub.shape.clone())),
                None => (f.dtype.array_descr(depth + 1)?, None),
            };
            out.push(DescrField {
                name: f.name.clone(),
                title: f.title.clone(),
                descr,
                shape,
            });
            offset = offset
                .checked_add(f.dtype.itemsize)
                .ok_or("field offsets overflow")?;
        }
        if self.itemsize > offset {
            out.push(DescrField::padding(self.itemsize - offset));
        }
        Ok(Descr::Fields(out))
    }
}

/// A `.npy` header `descr`, printed as a Python literal by
/// [`Descr::to_python`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Descr {
    /// A type string such as `'<f8'`.
    Type(String),
    /// `(descr, shape)`: a subarray (only inside fields).
    SubArray(Box<Descr>, Vec<u64>),
    /// A structured type's field list.
    Fields(Vec<DescrField>),
}

/// One entry of a structured [`Descr`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescrField {
    /// The field name (`''` for padding).
    pub name: String,
    /// Its title, printed as `(title, name)`.
    pub title: Option<String>,
    /// Its type.
    pub descr: Descr,
    /// Its subarray shape, printed as a third element.
    pub shape: Option<Vec<u64>>,
}

impl DescrField {
    fn padding(n: u64) -> DescrField {
        DescrField {
            name: String::new(),
            title: None,
            descr: Descr::Type(format!("|V{n}")),
            shape: None,
        }
    }
}

impl Descr {
    /// The Python literal NumPy writes (`repr`), except that characters
    /// outside ASCII are escaped: the header stays Latin-1 (format 1.0/2.0)
    /// and `ast.literal_eval` reads the same names back.
    pub fn to_python(&self) -> String {
        let mut s = String::new();
        self.write_python(&mut s);
        s
    }

    fn write_python(&self, s: &mut String) {
        match self {
            Descr::Type(t) => py_str(s, t),
            Descr::SubArray(d, shape) => {
                s.push('(');
                d.write_python(s);
                s.push_str(", ");
                py_tuple(s, shape);
                s.push(')');
            }
            Descr::Fields(fields) => {
                s.push('[');
                for (i, f) in fields.iter().enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    s.push('(');
                    match &f.title {
                        Some(t) => {
                            s.push('(');
                            py_str(s, t);
                            s.push_str(", ");
                            py_str(s, &f.name);
                            s.push(')');
                        }
                        None => py_str(s, &f.name),
                    }
                    s.push_str(", ");
                    f.descr.write_python(s);
                    if let Some(shape) = &f.shape {
                        s.push_str(", ");
                        py_tuple(s, shape);
                    }
                    s.push(')');
                }
                s.push(']');
            }
        }
    }
}

/// Python's `repr(tuple_of_ints)`.
pub(crate) fn py_tuple(s: &mut String, items: &[u64]) {
    s.push('(');
    for (i, n) in items.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{n}");
    }
    if items.len() == 1 {
        s.push(',');
    }
    s.push(')');
}

/// Python's `repr(str)` for ASCII text; other characters are escaped
/// (`\xe9`, `\u20ac`), which Python reads back as the same string.
pub(crate) fn py_str(s: &mut String, text: &str) {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    s.push(quote);
    for c in text.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if c == quote => {
                s.push('\\');
                s.push(c);
            }
            ' '..='~' => s.push(c),
            c if u32::from(c) <= 0xff => {
                let _ = write!(s, "\\x{:02x}", u32::from(c));
            }
            c if u32::from(c) <= 0xffff => {
                let _ = write!(s, "\\u{:04x}", u32::from(c));
            }
            c => {
                let _ = write!(s, "\\U{:08x}", u32::from(c));
            }
        }
    }
    s.push(quote);
}

fn text(v: Value<'_>, what: &str) -> Result<String, String> {
    if let Some(t) = v.as_text() {
        return Ok(t.to_owned());
    }
    match v.as_bytes() {
        Some(b) => String::from_utf8(b.to_vec()).map_err(|_| format!("{what} is not UTF-8")),
        None => Err(format!("{what} is {}, expected text", describe(v))),
    }
}

fn flag(v: Value<'_>, what: &str) -> Result<bool, String> {
    if let Some(b) = v.as_bool() {
        return Ok(b);
    }
    match v.as_int() {
        Some(n) => Ok(n != 0),
        None => Err(format!("{what} is {}, expected a bool", describe(v))),
    }
}

fn int(v: Value<'_>, what: &str) -> Result<i64, String> {
    v.as_int()
        .ok_or_else(|| format!("{what} is {}, expected an int", describe(v)))
}

/// The state tuple's parts under the names of NumPy's `arraydescr_setstate`.
struct StateParts<'g> {
    version: i64,
    endian: Value<'g>,
    subarray: Value<'g>,
    names: Option<Value<'g>>,
    fields: Value<'g>,
    elsize: i64,
    alignment: i64,
    flags: i64,
    metadata: Option<Value<'g>>,
}

fn state_parts(st: Value<'_>) -> Result<StateParts<'_>, String> {
    let t = st
        .as_tuple()
        .ok_or_else(|| format!("state is {}, expected a tuple", describe(st)))?;
    let items: Vec<Value<'_>> = t.iter().collect();
    Ok(match items.as_slice() {
        [v, e, sa, n, f, es, al, fl, md] => StateParts {
            version: int(*v, "version")?,
            endian: *e,
            subarray: *sa,
            names: Some(*n),
            fields: *f,
            elsize: int(*es, "elsize")?,
            alignment: int(*al, "alignment")?,
            flags: int(*fl, "flags")?,
            metadata: Some(*md),
        },
        [v, e, sa, n, f, es, al, fl] => StateParts {
            version: int(*v, "version")?,
            endian: *e,
            subarray: *sa,
            names: Some(*n),
            fields: *f,
            elsize: int(*es, "elsize")?,
            alignment: int(*al, "alignment")?,
            flags: int(*fl, "flags")?,
            metadata: None,
        },
        [v, e, sa, n, f, es, al] => StateParts {
            version: int(*v, "version")?,
            endian: *e,
            subarray: *sa,
            names: Some(*n),
            fields: *f,
            elsize: int(*es, "elsize")?,
            alignment: int(*al, "alignment")?,
            flags: 0,
            metadata: None,
        },
        [v, e, sa, f, es, al] => StateParts {
            version: int(*v, "version")?,
            endian: *e,
            subarray: *sa,
            names: None,
            fields: *f,
            elsize: int(*es, "elsize")?,
            alignment: int(*al, "alignment")?,
            flags: 0,
            metadata: None,
        },
        [e, sa, f, es, al] => StateParts {
            version: 0,
            endian: *e,
            subarray: *sa,
            names: None,
            fields: *f,
            elsize: int(*es, "elsize")?,
            alignment: int(*al, "alignment")?,
            flags: 0,
            metadata: None,
        },
        _ => return Err(format!("state has {} items, expected 5 to 9", items.len())),
    })
}

fn parse(v: Value<'_>, depth: usize) -> Result<DType, String> {
    if depth > MAX_DTYPE_DEPTH {
        return Err(format!("dtypes nested deeper than {MAX_DTYPE_DEPTH}"));
    }
    let obj = v
        .as_object()
        .filter(|o| o.kind() == ObjectKind::Reduce)
        .ok_or_else(|| format!("{} is not a pickled numpy dtype", describe(v)))?;
    match obj.class_path() {
        Some((m, "dtype")) if m == "numpy" || m.starts_with("numpy.") => {}
        _ => {
            return Err(format!("{} is not numpy.dtype(...)", describe(obj.class())));
        }
    }
    let args = obj.args();
    let args = args
        .as_tuple()
        .ok_or_else(|| format!("dtype arguments are {}", describe(args)))?;
    let (Some(scalar), align, copy) = (args.get(0), args.get(1), args.get(2)) else {
        return Err("dtype() without arguments".into());
    };
    let scalar = match scalar.node() {
        Node::Global(g) => ScalarType::Class(g.clone()),
        _ => ScalarType::TypeStr(text(scalar, "type string")?),
    };
    let align = align
        .map(|a| flag(a, "align"))
        .transpose()?
        .unwrap_or(false);
    let copy = copy.map(|c| flag(c, "copy")).transpose()?.unwrap_or(false);
    let st = obj.state().ok_or("dtype without state (no BUILD)")?;
    let p = state_parts(st)?;
    if !(0..=4).contains(&p.version) {
        return Err(format!(
            "can't handle version {} of numpy.dtype pickle",
            p.version
        ));
    }
    let byteorder = match text(p.endian, "byte order")?.as_str() {
        "<" => ByteOrder::Little,
        ">" => ByteOrder::Big,
        "|" => ByteOrder::NotApplicable,
        "=" => ByteOrder::Native,
        other => return Err(format!("byte order {other:?} is none of < > | =")),
    };

    let (kind, declared) = match &scalar {
        ScalarType::Class(_) => ('V', None),
        ScalarType::TypeStr(s) => parse_typestr(s)?,
    };
    let itemsize = match kind {
        'S' | 'V' | 'U' if p.elsize >= 0 => p.elsize.unsigned_abs(),
        'S' | 'V' => declared.ok_or("flexible type without size")?,
        'U' => declared
            .and_then(|n| n.checked_mul(4))
            .ok_or("unicode type without size")?,
        _ => declared.ok_or_else(|| format!("type {kind:?} without size"))?,
    };
    if kind == 'U' && itemsize % 4 != 0 {
        return Err(format!(
            "unicode item size {itemsize} is not a multiple of 4"
        ));
    }

    let subarray = if p.subarray.is_none() {
        None
    } else {
        let t = p
            .subarray
            .as_tuple()
            .filter(|t| t.len() == 2)
            .ok_or_else(|| {
                format!(
                    "subarray is {}, expected (dtype, shape)",
                    describe(p.subarray)
                )
            })?;
        let (Some(base), Some(shape)) = (t.get(0), t.get(1)) else {
            return Err("subarray is not (dtype, shape)".into());
        };
        let base = parse(base, depth + 1).map_err(|e| format!("subarray: {e}"))?;
        let (shape, shape_is_int) = match shape.as_int() {
            Some(n) => (
                vec![u64::try_from(n).map_err(|_| "negative subarray shape")?],
                true,
            ),
            None => (
                shape
                    .as_tuple()
                    .ok_or_else(|| format!("subarray shape is {}", describe(shape)))?
                    .iter()
                    .map(|x| {
                        x.as_int()
                            .and_then(|n| u64::try_from(n).ok())
                            .ok_or_else(|| format!("subarray dimension {}", describe(x)))
                    })
                    .collect::<Result<Vec<u64>, String>>()?,
                false,
            ),
        };
        let count = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or("subarray size overflows")?;
        if base.itemsize.checked_mul(count) != Some(itemsize) {
            return Err(format!(
                "subarray of {count} x {} bytes in an item of {itemsize} bytes",
                base.itemsize
            ));
        }
        Some(Box::new(SubArray {
            base,
            shape,
            shape_is_int,
        }))
    };

    let (fields, field_keys) = parse_fields(&p, itemsize, depth)?;
    let metadata = match p.metadata {
        None => Metadata::Absent,
        Some(m) if m.is_none() => Metadata::None,
        Some(m) if m.dict_items().is_some() => Metadata::Dict,
        Some(m) => {
            let bad = || {
                format!(
                    "metadata {} is not (dict, (unit, num, den, events))",
                    describe(m)
                )
            };
            let t = m.as_tuple().filter(|t| t.len() == 2).ok_or_else(bad)?;
            let (Some(dict), Some(dt)) = (t.get(0), t.get(1)) else {
                return Err(bad());
            };
            let dt: Vec<Value<'_>> = dt.as_tuple().ok_or_else(bad)?.iter().collect();
            let [unit, num, den, events] = dt.as_slice() else {
                return Err(bad());
            };
            Metadata::Datetime {
                unit: text(*unit, "datetime unit")?,
                num: int(*num, "datetime num")?,
                den: int(*den, "datetime den")?,
                events: int(*events, "datetime events")?,
                has_dict: !dict.is_none(),
            }
        }
    };
    Ok(DType {
        scalar,
        align,
        copy,
        version: p.version,
        byteorder,
        subarray,
        fields,
        field_keys,
        elsize: p.elsize,
        alignment: p.alignment,
        flags: p.flags,
        metadata,
        kind,
        itemsize,
    })
}

/// `f8` → ('f', Some(8)); `V` → ('V', None). `a` is Python 2's `S`.
fn parse_typestr(s: &str) -> Result<(char, Option<u64>), String> {
    let body = s.trim_start_matches(['<', '>', '|', '=']);
    let mut chars = body.chars();
    let kind = match chars.next() {
        Some('a') => 'S',
        Some(k @ ('b' | 'i' | 'u' | 'f' | 'c' | 'M' | 'm' | 'S' | 'U' | 'V' | 'O')) => k,
        _ => return Err(format!("type string {s:?} has an unknown kind")),
    };
    let digits = chars.as_str();
    if digits.is_empty() {
        return Ok((kind, None));
    }
    let n = digits
        .parse::<u64>()
        .map_err(|_| format!("type string {s:?} has a bad size"))?;
    Ok((kind, Some(n)))
}

type ParsedFields = (Option<Vec<Field>>, Vec<String>);

fn parse_fields(p: &StateParts<'_>, itemsize: u64, depth: usize) -> Result<ParsedFields, String> {
    if p.fields.is_none() {
        if p.names.is_some_and(|n| !n.is_none()) {
            return Err("inconsistent fields and names".into());
        }
        return Ok((None, Vec::new()));
    }
    let items = p
        .fields
        .dict_items()
        .ok_or_else(|| format!("fields is {}, expected a dict", describe(p.fields)))?;
    // Versions 0 and 1 keep the names under the int key -1.
    let names = match p.names {
        Some(n) if p.version >= 2 => n,
        _ => items
            .clone()
            .find(|(k, _)| k.as_int() == Some(-1))
            .map(|(_, v)| v)
            .ok_or("fields without names")?,
    };
    let names = names
        .as_tuple()
        .or_else(|| names.as_list())
        .ok_or_else(|| format!("names is {}, expected a tuple", describe(names)))?;
    let mut keys = Vec::with_capacity(items.len());
    let mut entries: Vec<(String, Value<'_>)> = Vec::with_capacity(items.len());
    for (k, v) in items {
        if k.as_int() == Some(-1) {
            continue;
        }
        let k = text(k, "field key")?;
        keys.push(k.clone());
        entries.push((k, v));
    }
    let mut fields = Vec::with_capacity(names.len());
    for name in names.iter() {
        let name = text(name, "field name")?;
        let (_, entry) = entries
            .iter()
            .rev()
            .find(|(k, _)| *k == name)
            .ok_or_else(|| format!("field {name:?} is named but not described"))?;
        let t: Vec<Value<'_>> = entry
            .as_tuple()
            .ok_or_else(|| format!("field {name:?} is {}", describe(*entry)))?
            .iter()
            .collect();
        let (dt, off, title) = match t.as_slice() {
            [dt, off] => (*dt, *off, None),
            [dt, off, title] => (*dt, *off, Some(*title).filter(|t| !t.is_none())),
            _ => return Err(format!("field {name:?} is not (dtype, offset[, title])")),
        };
        let dtype = parse(dt, depth + 1).map_err(|e| format!("field {name:?}: {e}"))?;
        let offset = int(off, "field offset")?;
        let offset =
            u64::try_from(offset).map_err(|_| format!("field {name:?} has offset {offset}"))?;
        if offset
            .checked_add(dtype.itemsize)
            .is_none_or(|end| end > itemsize)
        {
            return Err(format!(
                "field {name:?} ({} bytes at {offset}) ends past the item ({itemsize} bytes)",
                dtype.itemsize
            ));
        }
        let title = title.map(|t| text(t, "field title")).transpose()?;
        fields.push(Field {
            name,
            dtype,
            offset,
            title,
        });
    }
    Ok((Some(fields), keys))
}

/// NumPy's `NPY_FROM_FIELDS`: the flags a structured dtype inherits from
/// its fields (needs-init, list-pickle, item-refcount, needs-pyapi).
const NPY_FROM_FIELDS: i64 = 0x1b;
/// `NPY_NEEDS_PYAPI`, which NumPy sets on every structured dtype.
const NPY_NEEDS_PYAPI: i64 = 0x10;
/// `NPY_NEEDS_INIT`, set on unicode dtypes.
const NPY_NEEDS_INIT: i64 = 0x08;

/// Datetime units NumPy knows, as its pickles spell them.
const DATETIME_UNITS: &[&str] = &[
    "Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as", "generic",
];

impl DType {
    /// The dtype `numpy.load` gives for a `.npy` `descr`
    /// (`numpy.lib.format.descr_to_dtype`): a type string as
    /// `numpy.dtype(str)` reads it, a subarray `(descr, shape)`, or a
    /// field list turned into a dict-built structured dtype (explicit
    /// offsets and itemsize, padding fields dropped, titles kept).
    /// Object dtypes are refused: BigArray cannot hold them.
    pub fn from_descr(descr: &Descr) -> Result<DType, String> {
        from_descr(descr, 0)
    }

    /// Whether NumPy keeps this dtype as a process-wide singleton
    /// (`numpy.dtype('<f8') is numpy.dtype('<f8')`): the builtin numeric
    /// types in native (little-endian) or not-applicable byte order. Two
    /// fields of such a type share one dtype object, which the pickle
    /// shows as a memo GET.
    fn is_builtin_singleton(&self) -> bool {
        matches!(self.kind, 'b' | 'i' | 'u' | 'f' | 'c')
            && matches!(self.byteorder, ByteOrder::Little | ByteOrder::NotApplicable)
            && self.subarray.is_none()
            && self.fields.is_none()
            && matches!(self.scalar, ScalarType::TypeStr(_))
            && matches!(self.metadata, Metadata::Absent)
    }

    /// The alignment NumPy gives the type (`dtype.alignment`): the state's
    /// for flexible and composite types, the natural one for the others.
    fn true_alignment(&self) -> i64 {
        if self.alignment >= 0 {
            return self.alignment;
        }
        let size = i64::try_from(self.itemsize).unwrap_or(i64::MAX);
        match self.kind {
            'c' => size / 2,
            'S' | 'V' | 'b' => 1,
            'U' => 4,
            _ => size.max(1),
        }
    }

    /// The pickled dtype as NumPy's `__reduce__` makes it: `numpy.dtype`
    /// called with `(typestr, False, True)` (ints 0 and 1 on Python 2),
    /// then BUILD with the 8-tuple state (9 with datetime metadata). Names
    /// are shared between `names` and the `fields` keys, a title's entry is
    /// the same tuple as its field's, builtin native types are singletons
    /// (see [`StateBuilder`]).
    pub(crate) fn to_node(&self, sb: &mut StateBuilder, depth: usize) -> Result<NodeId, String> {
        if depth > MAX_DTYPE_DEPTH {
            return Err(format!("dtypes nested deeper than {MAX_DTYPE_DEPTH}"));
        }
        let singleton = self.is_builtin_singleton().then(|| self.numpy_str());
        if let Some(id) = singleton.as_ref().and_then(|k| sb.dtypes.get(k)) {
            return Ok(*id);
        }
        if !(3..=4).contains(&self.version) {
            return Err(format!(
                "dtype state version {} is not written (only 3 and 4)",
                self.version
            ));
        }
        let class = sb.global(&GlobalName::new("numpy", "dtype"));
        let scalar = match &self.scalar {
            ScalarType::TypeStr(t) => sb.text(t),
            ScalarType::Class(g) => sb.global(g),
        };
        let align = sb.flag(self.align);
        let copy = sb.flag(self.copy);
        let args = sb.tuple([scalar, align, copy]);
        let mut st = Vec::with_capacity(9);
        st.push(sb.int(self.version));
        st.push(sb.text(&self.byteorder.as_char().to_string()));
        st.push(match &self.subarray {
            None => sb.none(),
            Some(sub) => {
                let base = sub.base.to_node(sb, depth + 1)?;
                let shape = match (sub.shape_is_int, sub.shape.as_slice()) {
                    (true, [n]) => sb.int(i64::try_from(*n).map_err(|_| "subarray too big")?),
                    _ => sb.int_tuple(&sub.shape).map_err(|e| e.to_string())?,
                };
                sb.tuple([base, shape])
            }
        });
        match &self.fields {
            None => {
                st.push(sb.none());
                st.push(sb.none());
            }
            Some(fields) => {
                let (names, dict) = self.fields_nodes(sb, fields, depth)?;
                st.push(names);
                st.push(dict);
            }
        }
        st.push(sb.int(self.elsize));
        st.push(sb.int(self.alignment));
        st.push(sb.int(self.flags));
        match &self.metadata {
            Metadata::Absent => {}
            Metadata::None => st.push(sb.none()),
            Metadata::Datetime {
                unit,
                num,
                den,
                events,
                has_dict,
            } => {
                if *has_dict {
                    return Err("datetime metadata dicts are not kept".into());
                }
                let dict = sb.none();
                let unit = sb.data(Bytes::copy_from_slice(unit.as_bytes()));
                let (n, d, e) = (sb.int(*num), sb.int(*den), sb.int(*events));
                let dt = sb.tuple([unit, n, d, e]);
                st.push(sb.tuple([dict, dt]));
            }
            Metadata::Dict => return Err("dtype metadata dicts are not kept".into()),
        }
        if self.version == 4 && st.len() != 9 {
            return Err("a version 4 dtype state needs metadata".into());
        }
        let state = sb.tuple(st);
        let node = sb.builder().reduce(class, args, Some(state));
        if let Some(k) = singleton {
            sb.dtypes.insert(k, node);
        }
        Ok(node)
    }

    /// `names` and `fields` of a structured dtype: every key of `fields`
    /// in [`DType::field_keys`] order, each `(dtype, offset[, title])`
    /// tuple written once and shared by the name and the title.
    fn fields_nodes(
        &self,
        sb: &mut StateBuilder,
        fields: &[Field],
        depth: usize,
    ) -> Result<(NodeId, NodeId), String> {
        let name_nodes: Vec<NodeId> = fields.iter().map(|f| sb.text(&f.name)).collect();
        let names = sb.tuple(name_nodes.iter().copied());
        let mut titles: Vec<Option<NodeId>> = vec![None; fields.len()];
        let mut values: Vec<Option<NodeId>> = vec![None; fields.len()];
        let mut items = Vec::with_capacity(self.field_keys.len());
        for key in &self.field_keys {
            let by_name = fields.iter().position(|f| &f.name == key);
            let by_title = fields
                .iter()
                .position(|f| f.title.as_deref() == Some(key.as_str()));
            let (i, is_title) = match (by_name, by_title) {
                (Some(i), _) => (i, false),
                (None, Some(i)) => (i, true),
                (None, None) => return Err(format!("fields key {key:?} names no field")),
            };
            let f = fields.get(i).ok_or("field index")?;
            let value = match values.get(i).copied().flatten() {
                Some(v) => v,
                None => {
                    let dt = f.dtype.to_node(sb, depth + 1)?;
                    let off = sb.int(i64::try_from(f.offset).map_err(|_| "offset too big")?);
                    let mut t = vec![dt, off];
                    if let Some(title) = &f.title {
                        let tn = sb.text(title);
                        if let Some(slot) = titles.get_mut(i) {
                            *slot = Some(tn);
                        }
                        t.push(tn);
                    }
                    let v = sb.tuple(t);
                    if let Some(slot) = values.get_mut(i) {
                        *slot = Some(v);
                    }
                    v
                }
            };
            let k = if is_title {
                match titles.get(i).copied().flatten() {
                    Some(t) => t,
                    None => sb.text(key),
                }
            } else {
                name_nodes.get(i).copied().ok_or("field index")?
            };
            items.push((k, value));
        }
        Ok((names, sb.dict(items)))
    }
}

/// A dtype made by `numpy.dtype(...)` from scratch, NumPy's state values
/// filled in (see [`DType::from_descr`]).
fn plain(
    typestr: String,
    kind: char,
    byteorder: ByteOrder,
    itemsize: u64,
    flexible: bool,
    alignment: i64,
) -> DType {
    let size = i64::try_from(itemsize).unwrap_or(i64::MAX);
    DType {
        scalar: ScalarType::TypeStr(typestr),
        align: false,
        copy: true,
        version: 3,
        byteorder,
        subarray: None,
        fields: None,
        field_keys: Vec::new(),
        elsize: if flexible { size } else { -1 },
        alignment: if flexible { alignment } else { -1 },
        flags: if kind == 'U' { NPY_NEEDS_INIT } else { 0 },
        metadata: Metadata::Absent,
        kind,
        itemsize,
    }
}

/// `numpy.dtype(s)` for the type strings `dtype.str` gives (`<f8`, `|u1`,
/// `<U3`, `|S5`, `|V7`, `<M8[ns]`, `|b1`...).
fn from_typestr(s: &str) -> Result<DType, String> {
    let bad = || format!("type string {s:?} is not one numpy.save writes");
    let (order, body) = match s.chars().next() {
        Some(c @ ('<' | '>' | '|' | '=')) => (c, s.get(1..).unwrap_or_default()),
        _ => ('=', s),
    };
    let (body, unit) = match body.split_once('[') {
        Some((b, rest)) => (b, Some(rest.strip_suffix(']').ok_or_else(bad)?)),
        None => (body, None),
    };
    let (kind, size) = parse_typestr(body)?;
    let size = match (kind, size) {
        ('M' | 'm', None) => 8,
        (_, Some(n)) => n,
        (_, None) => return Err(bad()),
    };
    let big = order == '>';
    let numeric_order = if big {
        ByteOrder::Big
    } else {
        ByteOrder::Little
    };
    Ok(match kind {
        'O' => return Err("object dtypes cannot be stored in a BigArray".into()),
        'b' | 'i' | 'u' | 'f' | 'c' => {
            if !matches!(
                (kind, size),
                ('b', 1) | ('i' | 'u', 1 | 2 | 4 | 8) | ('f', 2 | 4 | 8 | 16) | ('c', 8 | 16 | 32)
            ) {
                return Err(bad());
            }
            let byteorder = if size == 1 {
                ByteOrder::NotApplicable
            } else {
                numeric_order
            };
            plain(format!("{kind}{size}"), kind, byteorder, size, false, -1)
        }
        'S' | 'V' => plain(
            format!("{kind}{size}"),
            kind,
            ByteOrder::NotApplicable,
            size,
            true,
            1,
        ),
        'U' => {
            let bytes = size.checked_mul(4).ok_or_else(bad)?;
            plain(format!("U{size}"), 'U', numeric_order, bytes, true, 4)
        }
        'M' | 'm' => {
            if size != 8 {
                return Err(bad());
            }
            let (unit, num) = match unit {
                None => ("generic".to_owned(), 1),
                Some(u) => {
                    let digits = u.chars().take_while(char::is_ascii_digit).count();
                    let (n, name) = u.split_at(digits);
                    let num = if n.is_empty() {
                        1
                    } else {
                        n.parse().map_err(|_| bad())?
                    };
                    if !DATETIME_UNITS.contains(&name) || name == "generic" {
                        return Err(bad());
                    }
                    (name.to_owned(), num)
                }
            };
            let mut d = plain(format!("{kind}8"), kind, numeric_order, 8, false, -1);
            d.version = 4;
            d.metadata = Metadata::Datetime {
                unit,
                num,
                den: 1,
                events: 1,
                has_dict: false,
            };
            d
        }
        _ => return Err(bad()),
    })
}

fn from_descr(descr: &Descr, depth: usize) -> Result<DType, String> {
    if depth > MAX_DTYPE_DEPTH {
        return Err(format!("descr nested deeper than {MAX_DTYPE_DEPTH}"));
    }
    match descr {
        Descr::Type(s) => from_typestr(s),
        Descr::SubArray(base, shape) => subarray(from_descr(base, depth + 1)?, shape.clone()),
        Descr::Fields(list) => {
            let mut fields = Vec::new();
            let mut keys = Vec::new();
            let mut offset = 0u64;
            for f in list {
                let base = from_descr(&f.descr, depth + 1)?;
                let dt = match &f.shape {
                    Some(shape) => subarray(base, shape.clone())?,
                    None => base,
                };
                let size = dt.itemsize;
                let padding = f.name.is_empty()
                    && f.title.is_none()
                    && dt.kind == 'V'
                    && dt.fields.is_none()
                    && dt.subarray.is_none();
                if !padding {
                    if fields.iter().any(|g: &Field| g.name == f.name) {
                        return Err(format!("field name {:?} appears twice", f.name));
                    }
                    keys.push(f.name.clone());
                    if let Some(t) = &f.title {
                        keys.push(t.clone());
                    }
                    fields.push(Field {
                        name: f.name.clone(),
                        dtype: dt,
                        offset,
                        title: f.title.clone(),
                    });
                }
                offset = offset.checked_add(size).ok_or("itemsize overflows")?;
            }
            let flags = fields.iter().fold(NPY_NEEDS_PYAPI, |acc, f| {
                acc | (f.dtype.flags & NPY_FROM_FIELDS)
            });
            let mut d = plain(
                format!("V{offset}"),
                'V',
                ByteOrder::NotApplicable,
                offset,
                true,
                1,
            );
            d.fields = Some(fields);
            d.field_keys = keys;
            d.flags = flags;
            Ok(d)
        }
    }
}

/// `numpy.dtype((base, shape))`.
fn subarray(base: DType, shape: Vec<u64>) -> Result<DType, String> {
    let count = shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or("subarray size overflows")?;
    let size = base
        .itemsize
        .checked_mul(count)
        .ok_or("subarray size overflows")?;
    let mut d = plain(
        format!("V{size}"),
        'V',
        ByteOrder::NotApplicable,
        size,
        true,
        base.true_alignment(),
    );
    d.flags = base.flags;
    d.subarray = Some(Box::new(SubArray {
        base,
        shape,
        shape_is_int: false,
    }));
    Ok(d)
}
