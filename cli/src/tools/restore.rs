//! `restore`: zodbtools' `zodb restore`, which reads the raw `zodb dump`
//! format (see [`crate::tools::zodbdump`]) and commits every transaction in
//! it, with its tid and status, into a FileStorage.
//!
//! The grammar, as zodbtools' `DumpReader` reads it (`zodbdump.py`):
//!
//! ```text
//! txn <tid> "<status>"                 16 lowercase hex digits; one status byte
//! user <quoted>                        quoted as `qq` does (pygolang strconv)
//! description <quoted>
//! extension <quoted>                   the raw extension bytes (a pickle, or empty)
//! obj <oid> delete                     the object stops existing
//! obj <oid> from <tid>                 data as of <tid>, stored as a back pointer
//! obj <oid> <size> <hash>:<hex>        followed by <size> bytes of data and LF
//! obj <oid> <size> <hash>:<hex> -      `--hashonly`: no data, cannot be restored
//! <empty line>                         ends the transaction
//! ```
//!
//! `<hash>` is one of zodbtools' `hashRegistry` (`sha1`, which every dump
//! uses, `sha256`, `sha512`, `crc32`, `adler32`, `null`); the data is checked
//! against it before anything is written.
//!
//! Parsing is strict where zodbtools is loose only by accident: an `obj`
//! line must end after its last field (zodbtools' regex has no `$` there),
//! the hash must have the function's length, and data cut short by the end
//! of input is an error (zodbtools loops forever). Every error names the
//! line and what was expected; no input makes the parser panic or allocate
//! more than the data actually present.
//!
//! Committing follows zodbtools' `zodbcommit` with a restoring storage:
//! each transaction is begun with its own tid and status
//! ([`FileStorage::begin_restore`], which refuses a tid not later than the
//! storage's last), so restoring onto a non-empty storage appends, as with
//! zodbtools. `from <tid>` loads the object as of `<tid>` from the storage
//! being restored and restores it with `<tid>` as the back-pointer hint, so
//! the record is the same back pointer as in the dumped database. The one
//! deliberate difference: `delete` is restored as a record without data
//! (`restore(oid, None)`) where zodbtools calls `deleteObject` with the
//! serial read at the previous transaction. The bytes written are the same,
//! but `deleteObject` fails on an object whose current revision is already
//! a deletion (an undone creation followed by another undo), which a dump
//! of a real database can contain; a restore must not refuse its own dump.
//! A `txn 0000000000000000` (zodbtools' "commit with a new tid") is
//! committed as `zodb commit` does: a new tid, `store` and `deleteObject`
//! against the current serials.

use std::io::{BufRead, Read, Write};

use bytes::Bytes;
use sha1::Digest;
use zodb_core::{Oid, StorageError, Tid, TxnMeta, TxnStatus, WriteStorage};

use filestorage::FileStorage;

use crate::tools::qq::{UnquoteError, qq, unquote};

/// The longest header or `obj` line accepted. The longest a valid line can
/// be is `extension ` and 65535 bytes quoted as `\xNN` each (262 KB): a
/// longer line is garbage, and reading it whole would let garbage without
/// line breaks fill the memory.
const MAX_LINE: u64 = 1 << 20;

/// Data is read in pieces of at most this much ahead of the bytes actually
/// present, so a garbage size cannot make us allocate gigabytes.
const DATA_PREALLOC: u64 = 64 << 20;

/// A hash function of zodbtools' `hashRegistry`, which checks object data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashFunc {
    /// `null`: no check (the digest is always one zero byte).
    Null,
    /// `adler32`, big-endian, as zlib computes it.
    Adler32,
    /// `crc32`, big-endian, as zlib computes it.
    Crc32,
    /// `sha1`: what `zodb dump` writes.
    Sha1,
    /// `sha256`.
    Sha256,
    /// `sha512`.
    Sha512,
}

impl HashFunc {
    /// The function named `name` in a dump, if zodbtools knows it.
    pub fn from_name(name: &[u8]) -> Option<HashFunc> {
        Some(match name {
            b"null" => HashFunc::Null,
            b"adler32" => HashFunc::Adler32,
            b"crc32" => HashFunc::Crc32,
            b"sha1" => HashFunc::Sha1,
            b"sha256" => HashFunc::Sha256,
            b"sha512" => HashFunc::Sha512,
            _ => return None,
        })
    }

    /// The name written in dumps.
    pub fn name(self) -> &'static str {
        match self {
            HashFunc::Null => "null",
            HashFunc::Adler32 => "adler32",
            HashFunc::Crc32 => "crc32",
            HashFunc::Sha1 => "sha1",
            HashFunc::Sha256 => "sha256",
            HashFunc::Sha512 => "sha512",
        }
    }

    /// Length of the digest in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashFunc::Null => 1,
            HashFunc::Adler32 | HashFunc::Crc32 => 4,
            HashFunc::Sha1 => 20,
            HashFunc::Sha256 => 32,
            HashFunc::Sha512 => 64,
        }
    }

    /// The digest of `data`, as zodbtools' hasher's `digest()`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            HashFunc::Null => vec![0],
            HashFunc::Adler32 => adler32(data).to_be_bytes().to_vec(),
            HashFunc::Crc32 => crc32(data).to_be_bytes().to_vec(),
            HashFunc::Sha1 => sha1::Sha1::digest(data).to_vec(),
            HashFunc::Sha256 => sha2::Sha256::digest(data).to_vec(),
            HashFunc::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }
}

/// zlib's `adler32(data)` (starting value 1).
fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (1u32, 0u32);
    // 5552 bytes is the most that can be summed before `b` overflows u32.
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    b << 16 | a
}

/// zlib's `crc32(data)` (IEEE polynomial, reflected).
fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::LazyLock<[u32; 256]> = std::sync::LazyLock::new(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let t = &*TABLE;
    !data
        .iter()
        .fold(!0u32, |c, &x| t[usize::from((c as u8) ^ x)] ^ (c >> 8))
}

/// What an `obj` entry says about the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjBody {
    /// `delete`: the object no longer exists.
    Delete,
    /// `from <tid>`: the object's data as of `<tid>` (undo's back pointer).
    CopyFrom(Tid),
    /// The object's data, checked against its hash.
    Data(Bytes),
    /// `--hashonly`: the size and hash, but no data.
    HashOnly {
        /// The data's length.
        size: u64,
        /// How it was hashed.
        func: HashFunc,
        /// The digest.
        hash: Vec<u8>,
    },
}

/// One `obj` entry of a dumped transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpObj {
    /// The object.
    pub oid: Oid,
    /// The line of its `obj` entry.
    pub line: u64,
    /// What the entry says.
    pub body: ObjBody,
}

/// One transaction read from a dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpTxn {
    /// Its tid (zero: commit with a new tid).
    pub tid: Tid,
    /// Its status byte as written (restorable: `' '` or `'p'`).
    pub status: u8,
    /// User, description and extension.
    pub meta: TxnMeta,
    /// Its objects, in dump order.
    pub objs: Vec<DumpObj>,
    /// The line of its `txn` header.
    pub line: u64,
}

/// A dump that does not follow the grammar, and where.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    /// 1-based line of the input where the problem is.
    pub line: u64,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

/// What is wrong with a dump; texts quote the offending line as `qq` does.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The line should start a transaction.
    #[error("expected `txn <tid> \"<status>\"`, found {found}")]
    NoTxnStart {
        /// The line, quoted.
        found: String,
    },
    /// The header field `field` is missing.
    #[error("expected `{field} \"...\"`, found {found}")]
    NoField {
        /// `user`, `description` or `extension`.
        field: &'static str,
        /// The line, quoted.
        found: String,
    },
    /// A quoted value is malformed.
    #[error("{field}: {problem}")]
    Quoting {
        /// Which value.
        field: &'static str,
        /// How.
        problem: UnquoteError,
    },
    /// The status is not exactly one byte.
    #[error("status must be one byte, found {found}")]
    Status {
        /// The unquoted status, quoted again.
        found: String,
    },
    /// Neither an `obj` entry nor the empty line ending the transaction.
    #[error("expected `obj ...` or an empty line ending the transaction, found {found}")]
    NoObj {
        /// The line, quoted.
        found: String,
    },
    /// An `obj` line that does not parse.
    #[error("invalid obj entry ({why}): {found}")]
    BadObj {
        /// What part is wrong.
        why: &'static str,
        /// The line, quoted.
        found: String,
    },
    /// An unknown hash function.
    #[error("unknown hash function {name}")]
    UnknownHash {
        /// The name, quoted.
        name: String,
    },
    /// The hash has the wrong number of digits for its function.
    #[error("{func} hash must be {want} hex digits, found {got}")]
    HashLength {
        /// The function.
        func: &'static str,
        /// Digits expected.
        want: usize,
        /// Digits found.
        got: usize,
    },
    /// The input ended inside a transaction.
    #[error("unexpected end of input: expected {expected}")]
    Eof {
        /// What was expected.
        expected: &'static str,
    },
    /// The input ended inside an object's data.
    #[error("obj {oid}: data cut short: {got} of {size} bytes before the end of input")]
    Truncated {
        /// The object.
        oid: Oid,
        /// Its declared size.
        size: u64,
        /// Bytes present.
        got: u64,
    },
    /// The data is not followed by a line feed.
    #[error("obj {oid}: no LF after its {size} bytes of data")]
    NoLfAfterData {
        /// The object.
        oid: Oid,
        /// Its declared size.
        size: u64,
    },
    /// The data does not have the hash written before it.
    #[error("obj {oid}: data corrupt: {func} = {got}, expected {expected}")]
    DataCorrupt {
        /// The object.
        oid: Oid,
        /// The hash function.
        func: &'static str,
        /// Hex digest of the data present.
        got: String,
        /// Hex digest in the dump.
        expected: String,
    },
    /// A line longer than any valid one.
    #[error("line longer than 1 MiB: not a dump")]
    LineTooLong,
    /// Reading the input failed.
    #[error("reading the dump: {0}")]
    Io(#[from] std::io::Error),
}

/// A line for an error message: quoted as zodbtools quotes it, cut short.
fn show(line: &[u8]) -> String {
    const MAX: usize = 120;
    let mut s = String::from_utf8_lossy(&qq(line.get(..MAX).unwrap_or(line))).into_owned();
    if line.len() > MAX {
        s.push_str(&format!(" ({} bytes)", line.len()));
    }
    s
}

/// 16 lowercase hex digits (zodbtools' `[0-9a-f]{16}`), as a u64.
fn hex16(s: &[u8]) -> Option<u64> {
    if s.len() != 16 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u64::from(d))
    })
}

/// Lowercase hex of any length (zodbtools' `[0-9a-f]+`), as bytes.
fn hex_bytes(s: &[u8]) -> Option<Vec<u8>> {
    let lower = s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    // An odd length is refused by `hex::decode`; empty is no hash at all.
    (lower && !s.is_empty())
        .then(|| hex::decode(s).ok())
        .flatten()
}

/// Reads transactions from a raw `zodb dump` stream, one at a time (the
/// objects of one transaction are held in memory together, as zodbtools
/// holds them, since they are committed together).
#[derive(Debug)]
pub struct DumpReader<R> {
    r: R,
    /// Lines read so far (the number of the last line read).
    lineno: u64,
    /// Bytes consumed so far.
    pos: u64,
    line: Vec<u8>,
}

impl<R: BufRead> DumpReader<R> {
    /// A reader of the dump `r`.
    pub fn new(r: R) -> DumpReader<R> {
        DumpReader {
            r,
            lineno: 0,
            pos: 0,
            line: Vec::new(),
        }
    }

    /// Bytes of input consumed so far (for progress).
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn err(&self, kind: ParseErrorKind) -> ParseError {
        ParseError {
            line: self.lineno,
            kind,
        }
    }

    /// Reads the next line into `self.line` without its LF; false at the
    /// end of input.
    fn read_line(&mut self) -> Result<bool, ParseError> {
        self.line.clear();
        let read = (&mut self.r)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut self.line);
        let n = read.map_err(|e| self.err(e.into()))?;
        if n == 0 {
            return Ok(false);
        }
        self.pos += n as u64;
        self.lineno += 1;
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
        } else if n as u64 > MAX_LINE {
            return Err(self.err(ParseErrorKind::LineTooLong));
        }
        Ok(true)
    }

    /// The next transaction, or `None` at the end of input.
    pub fn read_txn(&mut self) -> Result<Option<DumpTxn>, ParseError> {
        if !self.read_line()? {
            return Ok(None);
        }
        let line = self.lineno;
        let no_start = |me: &Self| {
            me.err(ParseErrorKind::NoTxnStart {
                found: show(&me.line),
            })
        };
        let rest = self
            .line
            .strip_prefix(b"txn ")
            .ok_or_else(|| no_start(self))?;
        let (tid, status) = match rest.split_at_checked(16) {
            Some((tid, status)) => (hex16(tid), status.strip_prefix(b" ")),
            None => (None, None),
        };
        let (Some(tid), Some(status)) = (tid, status) else {
            return Err(no_start(self));
        };
        let status = unquote(status).map_err(|problem| {
            self.err(ParseErrorKind::Quoting {
                field: "status",
                problem,
            })
        })?;
        let [status] = status[..] else {
            return Err(self.err(ParseErrorKind::Status {
                found: show(&status),
            }));
        };
        let user = self.field("user")?;
        let description = self.field("description")?;
        let extension = self.field("extension")?;
        let mut objs = Vec::new();
        loop {
            if !self.read_line()? {
                return Err(self.err(ParseErrorKind::Eof {
                    expected: "`obj ...` or the empty line ending the transaction",
                }));
            }
            if self.line.is_empty() {
                break;
            }
            objs.push(self.obj()?);
        }
        Ok(Some(DumpTxn {
            tid: Tid(tid),
            status,
            meta: TxnMeta {
                user: user.into(),
                description: description.into(),
                extension: extension.into(),
            },
            objs,
            line,
        }))
    }

    /// A `<name> <quoted>` header line's value.
    fn field(&mut self, name: &'static str) -> Result<Vec<u8>, ParseError> {
        if !self.read_line()? {
            return Err(self.err(ParseErrorKind::Eof {
                expected: match name {
                    "user" => "`user \"...\"`",
                    "description" => "`description \"...\"`",
                    _ => "`extension \"...\"`",
                },
            }));
        }
        let value = self
            .line
            .strip_prefix(name.as_bytes())
            .and_then(|r| r.strip_prefix(b" "))
            .ok_or_else(|| {
                self.err(ParseErrorKind::NoField {
                    field: name,
                    found: show(&self.line),
                })
            })?;
        unquote(value).map_err(|problem| {
            self.err(ParseErrorKind::Quoting {
                field: name,
                problem,
            })
        })
    }

    /// Parses the `obj` line just read, and reads its data if it has some.
    fn obj(&mut self) -> Result<DumpObj, ParseError> {
        let line = self.lineno;
        let bad = |me: &Self, why| {
            me.err(ParseErrorKind::BadObj {
                why,
                found: show(&me.line),
            })
        };
        let Some(rest) = self.line.strip_prefix(b"obj ") else {
            return Err(self.err(ParseErrorKind::NoObj {
                found: show(&self.line),
            }));
        };
        let (oid, rest) = match rest.split_at_checked(16) {
            Some((oid, rest)) => (hex16(oid), rest.strip_prefix(b" ")),
            None => (None, None),
        };
        let Some(oid) = oid.map(Oid) else {
            return Err(bad(self, "oid must be 16 lowercase hex digits"));
        };
        let Some(rest) = rest else {
            return Err(bad(self, "nothing after the oid"));
        };
        if rest == b"delete" {
            return Ok(DumpObj {
                oid,
                line,
                body: ObjBody::Delete,
            });
        }
        if let Some(from) = rest.strip_prefix(b"from ") {
            let Some(from) = hex16(from) else {
                return Err(bad(self, "`from` needs a tid of 16 lowercase hex digits"));
            };
            return Ok(DumpObj {
                oid,
                line,
                body: ObjBody::CopyFrom(Tid(from)),
            });
        }
        // <size> <hashfunc>:<hash>[ -]
        let Some((size, rest)) = split_once(rest, b' ') else {
            return Err(bad(
                self,
                "expected `delete`, `from <tid>` or `<size> <hash>:<hex>`",
            ));
        };
        if size.is_empty() || !size.iter().all(u8::is_ascii_digit) {
            return Err(bad(self, "size must be decimal digits"));
        }
        let Some(size) = std::str::from_utf8(size)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            return Err(bad(self, "size too large"));
        };
        let Some((name, rest)) = split_once(rest, b':') else {
            return Err(bad(self, "expected `<hash>:<hex>` after the size"));
        };
        if name.is_empty() || !name.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_') {
            return Err(bad(self, "hash function name must be a word"));
        }
        let func = HashFunc::from_name(name).ok_or_else(|| {
            self.err(ParseErrorKind::UnknownHash {
                name: String::from_utf8_lossy(&qq(name)).into_owned(),
            })
        })?;
        let (hash, hash_only) = match rest.strip_suffix(b" -") {
            Some(h) => (h, true),
            None => (rest, false),
        };
        let Some(hash) = hex_bytes(hash).filter(|h| h.len() == func.digest_len()) else {
            if hash.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) && !hash.is_empty() {
                return Err(self.err(ParseErrorKind::HashLength {
                    func: func.name(),
                    want: 2 * func.digest_len(),
                    got: hash.len(),
                }));
            }
            return Err(bad(
                self,
                "hash must be lowercase hex digits (then ` -` or the end of the line)",
            ));
        };
        if hash_only {
            return Ok(DumpObj {
                oid,
                line,
                body: ObjBody::HashOnly { size, func, hash },
            });
        }
        let data = self.data(oid, size, line)?;
        let got = func.digest(&data);
        if got != hash {
            return Err(ParseError {
                line,
                kind: ParseErrorKind::DataCorrupt {
                    oid,
                    func: func.name(),
                    got: hex::encode(got),
                    expected: hex::encode(hash),
                },
            });
        }
        Ok(DumpObj {
            oid,
            line,
            body: ObjBody::Data(data),
        })
    }

    /// Reads `size` bytes of data and the LF after them.
    fn data(&mut self, oid: Oid, size: u64, line: u64) -> Result<Bytes, ParseError> {
        let want = size.saturating_add(1);
        let mut data = Vec::with_capacity(want.min(DATA_PREALLOC) as usize);
        let read = (&mut self.r).take(want).read_to_end(&mut data);
        let n = read.map_err(|e| ParseError {
            line,
            kind: e.into(),
        })? as u64;
        self.pos += n;
        self.lineno += data.iter().filter(|&&c| c == b'\n').count() as u64;
        if n < want {
            // The last byte may be the LF of a line, not data.
            return Err(ParseError {
                line,
                kind: ParseErrorKind::Truncated {
                    oid,
                    size,
                    got: n.min(size),
                },
            });
        }
        if data.pop() != Some(b'\n') {
            return Err(ParseError {
                line,
                kind: ParseErrorKind::NoLfAfterData { oid, size },
            });
        }
        Ok(data.into())
    }
}

impl<R: BufRead> Iterator for DumpReader<R> {
    type Item = Result<DumpTxn, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.read_txn().transpose()
    }
}

fn split_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&c| c == sep)?;
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// Why a restore stopped. Transactions before the one named were committed
/// (and are made durable before the error is returned, as with zodbtools,
/// which commits each transaction as it reads it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The dump is malformed.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The transaction's status is not one a storage commits.
    #[error("line {line}: txn {tid}: status {} cannot be restored (only \" \" and \"p\")", show(std::slice::from_ref(.status)))]
    Status {
        /// Line of the `txn` header.
        line: u64,
        /// The transaction.
        tid: Tid,
        /// Its status byte.
        status: u8,
    },
    /// A `--hashonly` dump has no data to restore.
    #[error(
        "line {line}: obj {oid}: only the hash of its data is in the dump \
         (made with --hashonly?); such a dump cannot be restored"
    )]
    HashOnly {
        /// Line of the `obj` entry.
        line: u64,
        /// The object.
        oid: Oid,
    },
    /// `from <tid>` names a revision the storage does not have.
    #[error("line {line}: obj {oid}: copy from {from}: no data as of that transaction")]
    NoDataToCopy {
        /// Line of the `obj` entry.
        line: u64,
        /// The object.
        oid: Oid,
        /// The transaction named.
        from: Tid,
    },
    /// The storage refused the transaction (its tid is not later than the
    /// storage's last, say) or failed to write it.
    #[error("line {line}: txn {tid}: {source}")]
    Txn {
        /// Line of the `txn` header.
        line: u64,
        /// The transaction.
        tid: Tid,
        /// The storage's error.
        source: StorageError,
    },
    /// The storage refused one object of a transaction.
    #[error("line {line}: obj {oid}: {source}")]
    Obj {
        /// Line of the `obj` entry.
        line: u64,
        /// The object.
        oid: Oid,
        /// The storage's error.
        source: StorageError,
    },
    /// Making the restored transactions durable failed.
    #[error("syncing the restored transactions: {0}")]
    Sync(#[source] filestorage::Error),
    /// Writing the restored tids failed.
    #[error("writing output: {0}")]
    Output(#[source] std::io::Error),
}

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Transactions committed.
    pub txns: u64,
    /// Object entries committed.
    pub objects: u64,
    /// Bytes of object data read from the dump.
    pub data_bytes: u64,
    /// The last tid committed.
    pub last_tid: Option<Tid>,
}

/// Restores every transaction of the dump `input` into `dst`, printing each
/// committed tid on its own line to `tids` (as `zodb restore` does) and
/// calling `progress` with the bytes of input consumed.
///
/// Commits are not synced one by one: open `dst` with
/// [`filestorage::Durability::Deferred`] for speed; this function syncs once
/// at the end, also when it stops on an error, so that every transaction it
/// reported is durable when it returns.
pub fn restore(
    dst: &FileStorage,
    input: &mut dyn BufRead,
    tids: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<RestoreReport, RestoreError> {
    let mut report = RestoreReport::default();
    let result = restore_all(dst, input, tids, progress, &mut report);
    let synced = dst.sync().map_err(RestoreError::Sync);
    result?;
    synced?;
    Ok(report)
}

/// [`restore`] into any writable storage (a ZEO server, say), which makes
/// each transaction durable as it commits it.
pub fn restore_into(
    dst: &dyn WriteStorage,
    input: &mut dyn BufRead,
    tids: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<RestoreReport, RestoreError> {
    let mut report = RestoreReport::default();
    restore_all(dst, input, tids, progress, &mut report)?;
    Ok(report)
}

fn restore_all(
    dst: &dyn WriteStorage,
    input: &mut dyn BufRead,
    tids: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
    report: &mut RestoreReport,
) -> Result<(), RestoreError> {
    let mut reader = DumpReader::new(input);
    while let Some(txn) = reader.read_txn()? {
        let objects = txn.objs.len() as u64;
        let data_bytes = txn
            .objs
            .iter()
            .map(|o| match &o.body {
                ObjBody::Data(d) => d.len() as u64,
                _ => 0,
            })
            .sum::<u64>();
        let tid = commit_txn(dst, txn)?;
        writeln!(tids, "{tid}").map_err(RestoreError::Output)?;
        report.txns += 1;
        report.objects += objects;
        report.data_bytes += data_bytes;
        report.last_tid = Some(tid);
        progress(reader.position());
    }
    tids.flush().map_err(RestoreError::Output)
}

/// Commits one dumped transaction; returns its tid.
fn commit_txn(dst: &dyn WriteStorage, t: DumpTxn) -> Result<Tid, RestoreError> {
    // Checked before beginning, so that nothing is written for it.
    if let Some(o) = t
        .objs
        .iter()
        .find(|o| matches!(o.body, ObjBody::HashOnly { .. }))
    {
        return Err(RestoreError::HashOnly {
            line: o.line,
            oid: o.oid,
        });
    }
    let txn_err = |source| RestoreError::Txn {
        line: t.line,
        tid: t.tid,
        source,
    };
    let restoring = t.tid != Tid::ZERO;
    let mut txn = if restoring {
        let status = match TxnStatus::from_byte(t.status) {
            Some(s @ (TxnStatus::Committed | TxnStatus::Packed)) => s,
            _ => {
                return Err(RestoreError::Status {
                    line: t.line,
                    tid: t.tid,
                    status: t.status,
                });
            }
        };
        dst.tpc_begin_restore(t.meta, t.tid, status)
    } else {
        dst.tpc_begin(t.meta)
    }
    .map_err(txn_err)?;
    for obj in t.objs {
        let (line, oid) = (obj.line, obj.oid);
        let obj_err = |source| RestoreError::Obj { line, oid, source };
        match obj.body {
            ObjBody::Data(data) if restoring => txn.restore(oid, Some(data), None),
            ObjBody::Data(data) => txn.store(oid, current_serial(dst, oid).map_err(obj_err)?, data),
            ObjBody::CopyFrom(from) => {
                let data = match dst.load_before(oid, from.next()) {
                    Ok(Some(rev)) => rev.data,
                    Ok(None) => return Err(RestoreError::NoDataToCopy { line, oid, from }),
                    Err(e) if e.is_pos_key_error() => {
                        return Err(RestoreError::NoDataToCopy { line, oid, from });
                    }
                    Err(e) => return Err(obj_err(e)),
                };
                if restoring {
                    txn.restore(oid, Some(data), Some(from))
                } else {
                    txn.store(oid, current_serial(dst, oid).map_err(obj_err)?, data)
                }
            }
            ObjBody::Delete if restoring => txn.restore(oid, None, None),
            ObjBody::Delete => txn.delete_object(oid, current_serial(dst, oid).map_err(obj_err)?),
            ObjBody::HashOnly { .. } => return Err(RestoreError::HashOnly { line, oid }),
        }
        .map_err(obj_err)?;
    }
    txn.vote().map_err(txn_err)?;
    txn.finish().map_err(txn_err)
}

/// The serial of `oid`'s current revision, zero if it has none or it is a
/// deletion (zodbtools' `_serial_at` for the last committed transaction).
fn current_serial(dst: &dyn WriteStorage, oid: Oid) -> Result<Tid, StorageError> {
    match dst.load(oid) {
        Ok((_, serial)) => Ok(serial),
        Err(e) if e.is_pos_key_error() => Ok(Tid::ZERO),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8]) -> Result<Vec<DumpTxn>, ParseError> {
        DumpReader::new(input).collect()
    }

    fn err(input: &[u8]) -> ParseError {
        read_all(input).expect_err("must not parse")
    }

    /// zodbtools' own DumpReader test input (`test_dump.py`).
    const ZODBTOOLS_INPUT: &[u8] = b"\
txn 0123456789abcdef \" \"
user \"my name\"
description \"o la-la...\"
extension \"zzz123 def\"
obj 0000000000000001 delete
obj 0000000000000002 from 0123456789abcdee
obj 0000000000000003 54 adler32:01234567 -
obj 0000000000000004 4 sha1:9865d483bc5a94f2e30056fc256ed3066af54d04
ZZZZ
obj 0000000000000005 9 crc32:52fdeac5
ABC

DEF!

txn 0123456789abcdf0 \" \"
user \"author2\"
description \"zzz\"
extension \"qqq\"

";

    #[test]
    fn reads_zodbtools_test_input() {
        let t = read_all(ZODBTOOLS_INPUT).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].tid, Tid(0x0123_4567_89ab_cdef));
        assert_eq!(t[0].status, b' ');
        assert_eq!(t[0].meta.user, &b"my name"[..]);
        assert_eq!(t[0].meta.description, &b"o la-la..."[..]);
        assert_eq!(t[0].meta.extension, &b"zzz123 def"[..]);
        let bodies: Vec<_> = t[0]
            .objs
            .iter()
            .map(|o| (o.oid, o.line, o.body.clone()))
            .collect();
        assert_eq!(
            bodies,
            vec![
                (Oid(1), 5, ObjBody::Delete),
                (Oid(2), 6, ObjBody::CopyFrom(Tid(0x0123_4567_89ab_cdee))),
                (
                    Oid(3),
                    7,
                    ObjBody::HashOnly {
                        size: 54,
                        func: HashFunc::Adler32,
                        hash: vec![1, 0x23, 0x45, 0x67]
                    }
                ),
                (Oid(4), 8, ObjBody::Data(Bytes::from_static(b"ZZZZ"))),
                (
                    Oid(5),
                    10,
                    ObjBody::Data(Bytes::from_static(b"ABC\n\nDEF!"))
                ),
            ]
        );
        assert_eq!(t[1].line, 15);
        assert_eq!(t[1].meta.user, &b"author2"[..]);
        assert!(t[1].objs.is_empty());
    }

    #[test]
    fn hashes_are_zlibs_and_hashlibs() {
        assert_eq!(crc32(b"hello"), 0x3610_a686);
        assert_eq!(crc32(b""), 0);
        assert_eq!(adler32(b""), 1);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
        // Long enough to need the modulo inside the loop.
        let long = vec![0xffu8; 100_000];
        let (mut a, mut b) = (1u64, 0u64);
        for &x in &long {
            a = (a + u64::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(u64::from(adler32(&long)), b << 16 | a);
        assert_eq!(
            hex::encode(HashFunc::Sha256.digest(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(HashFunc::Sha512.digest(b"").len(), 64);
        assert_eq!(HashFunc::Null.digest(b"x"), vec![0]);
    }

    #[test]
    fn zodbtools_error_cases() {
        let e = err(b"txn 0000000000000000 \" \"\nuser \"\"\ndescription \"\"\nextension \"\"\nobj 0000000000000001 1 xyz:0123 -\n\n");
        assert_eq!(e.line, 5);
        assert_eq!(e.to_string(), "line 5: unknown hash function \"xyz\"");
        let e = err(b"txn 0000000000000000 \" \"\nuser \"\"\ndescription \"\"\nextension \"\"\nobj 0000000000000001 5 crc32:01234567\nhello\n\n");
        assert_eq!(
            e.to_string(),
            "line 5: obj 0000000000000001: data corrupt: crc32 = 3610a686, expected 01234567"
        );
    }

    #[test]
    fn errors_name_the_line_and_what_was_expected() {
        let head = "txn 0285cbac258bf266 \" \"\nuser \"\"\ndescription \"\"\nextension \"\"\n";
        let cases: &[(String, u64, &str)] = &[
            (
                "hello\n".into(),
                1,
                "expected `txn <tid> \"<status>\"`, found \"hello\"",
            ),
            ("txn 0285CBAC258BF266 \" \"\n".into(), 1, "expected `txn"),
            (
                "txn 0285cbac258bf266 \"  \"\n".into(),
                1,
                "status must be one byte",
            ),
            (
                "txn 0285cbac258bf266 \" \"\n".into(),
                1,
                "unexpected end of input: expected `user",
            ),
            (
                "txn 0285cbac258bf266 \" \"\nuser x\n".into(),
                2,
                "user: no starting \"",
            ),
            (
                "txn 0285cbac258bf266 \" \"\nuzer \"\"\n".into(),
                2,
                "expected `user \"...\"`",
            ),
            (
                head.to_owned(),
                4,
                "unexpected end of input: expected `obj ...`",
            ),
            (format!("{head}obj 1 delete\n\n"), 5, "oid must be 16"),
            (
                format!("{head}objx\n\n"),
                5,
                "expected `obj ...` or an empty line",
            ),
            (
                format!("{head}obj 0000000000000001 delete x\n\n"),
                5,
                "invalid obj entry",
            ),
            (
                format!("{head}obj 0000000000000001 from 12\n\n"),
                5,
                "`from` needs a tid",
            ),
            (
                format!("{head}obj 0000000000000001 5\n\n"),
                5,
                "expected `delete`",
            ),
            (
                format!("{head}obj 0000000000000001 x5 sha1:00\n\n"),
                5,
                "size must be decimal",
            ),
            (
                format!("{head}obj 0000000000000001 99999999999999999999 sha1:00\n\n"),
                5,
                "size too large",
            ),
            (
                format!("{head}obj 0000000000000001 5 sha1:abcd\n\n"),
                5,
                "sha1 hash must be 40 hex digits, found 4",
            ),
            (
                format!("{head}obj 0000000000000001 5 sha1:ABCD\n\n"),
                5,
                "hash must be lowercase hex",
            ),
            (
                format!("{head}obj 0000000000000001 5 sha1:{{}}\nab"),
                5,
                "data cut short: 2 of 5 bytes",
            ),
            (
                format!("{head}obj 0000000000000001 5 sha1:{{}}\nabcdefg\n"),
                5,
                "no LF after its 5 bytes",
            ),
        ];
        let sha = "0".repeat(40);
        for (input, line, msg) in cases {
            let input = input.replace("{}", &sha);
            let e = err(input.as_bytes());
            assert_eq!(e.line, *line, "{input:?}: {e}");
            assert!(e.to_string().contains(msg), "{input:?}: {e}");
        }
    }

    #[test]
    fn data_lines_count_toward_line_numbers() {
        let input = b"txn 0285cbac258bf266 \" \"\nuser \"\"\ndescription \"\"\nextension \"\"\n\
obj 0000000000000001 3 sha1:a9993e364706816aba3e25717850c26c9cd0d89d\nabc\n\
obj 0000000000000002 2 sha1:0000000000000000000000000000000000000000\n\n\n\n";
        let e = err(input);
        // The entry's own line, though the data spans two more.
        assert_eq!(e.line, 7, "{e}");
        let mut r = DumpReader::new(&b"hello\nworld\n"[..]);
        assert!(r.read_txn().is_err());
        assert_eq!(r.position(), 6);
    }

    #[test]
    fn overlong_lines_and_sizes_do_not_exhaust_memory() {
        let long = vec![b'x'; (MAX_LINE + 10) as usize];
        let e = err(&long);
        assert!(matches!(e.kind, ParseErrorKind::LineTooLong), "{e}");
        let input = format!(
            "txn 0285cbac258bf266 \" \"\nuser \"\"\ndescription \"\"\nextension \"\"\nobj 0000000000000001 {} sha1:{}\nab",
            u64::MAX,
            "0".repeat(40)
        );
        let e = err(input.as_bytes());
        assert!(
            matches!(e.kind, ParseErrorKind::Truncated { got: 2, .. }),
            "{e}"
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_input_never_panics(input in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            for t in DumpReader::new(&input[..]) {
                if t.is_err() {
                    break;
                }
            }
        }

        /// Damaged valid dumps reach deeper into the grammar than random bytes.
        #[test]
        fn damaged_dumps_never_panic(
            cut in 0usize..ZODBTOOLS_INPUT.len(),
            flips in proptest::collection::vec((0usize..ZODBTOOLS_INPUT.len(), proptest::num::u8::ANY), 0..4),
        ) {
            let mut input = ZODBTOOLS_INPUT.to_vec();
            for (at, b) in flips {
                input[at] = b;
            }
            input.truncate(cut);
            for t in DumpReader::new(&input[..]) {
                if t.is_err() {
                    break;
                }
            }
        }

        #[test]
        fn unquote_inverts_qq(s in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            proptest::prop_assert_eq!(unquote(&qq(&s)).unwrap(), s);
        }
    }
}
