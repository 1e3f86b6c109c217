//! `info`: zodbtools' `zodb info`, general facts about a database, one per
//! line.
//!
//! Without parameters every fact is printed as `name=value`, in the order
//! `name`, `size`, `head`, `last_tid`; with parameters, the value of each
//! named one alone, in the order given. `last_tid` is a deprecated alias of
//! `head` and says so on stderr each time it is printed, as zodbtools does.
//! An unknown parameter stops the tool with an error after the values
//! before it were printed (zodbtools prints them, then exits 1).

use std::io::Write;

use filestorage::FileStorage;
use zodb_core::ReadStorage;

use crate::ToolError;

/// What `info` needs beyond [`ReadStorage`]: ZODB's `getSize()`, which the
/// generic read API does not carry (a ZEO client answers it from the
/// server's `get_info`).
pub trait StorageSize: ReadStorage {
    /// The storage's size in bytes as ZODB's `IStorage.getSize()` reports it.
    fn storage_size(&self) -> u64;
}

/// FileStorage's `getSize()` is the end of its last committed transaction
/// (a voted or torn tail is not counted).
impl StorageSize for FileStorage {
    fn storage_size(&self) -> u64 {
        self.end_pos()
    }
}

/// The parameters, in the order printed by default.
pub const PARAMETERS: [&str; 4] = ["name", "size", "head", "last_tid"];

/// Prints the `params` of `stor` (all of them, with names, when empty) to
/// `out`; warnings go to `warn`. `name` is what `zodb info` prints as the
/// storage's name: for a file, its path normalised as zodburi does
/// (see [`normpath`]).
pub fn zodbinfo(
    stor: &dyn StorageSize,
    name: &str,
    params: &[String],
    out: &mut dyn Write,
    warn: &mut dyn Write,
) -> Result<(), ToolError> {
    let want_names = params.is_empty();
    let all: Vec<String> = PARAMETERS.iter().map(|&p| p.to_owned()).collect();
    for p in if want_names { &all[..] } else { params } {
        let value = match p.as_str() {
            "name" => name.to_owned(),
            "size" => stor.storage_size().to_string(),
            "head" => stor.last_transaction().to_string(),
            "last_tid" => {
                writeln!(warn, "W: last_tid is deprecated alias for head")?;
                stor.last_transaction().to_string()
            }
            _ => return Err(ToolError::Usage(format!("invalid parameter: {p}"))),
        };
        if want_names {
            writeln!(out, "{p}={value}")?;
        } else {
            writeln!(out, "{value}")?;
        }
    }
    Ok(())
}

/// Python's `os.path.normpath` for POSIX paths, which zodburi applies to a
/// `file://` storage's path before opening it (so `zodb info ./a//b.fs`
/// prints `name=a/b.fs`): repeated and trailing slashes and `.` components
/// go, `..` cancels the component before it (lexically), two leading slashes
/// are kept, and an empty result is `.`.
pub fn normpath(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let initial = if path.starts_with("//") && !path.starts_with("///") {
        "//"
    } else if path.starts_with('/') {
        "/"
    } else {
        ""
    };
    let mut parts: Vec<&str> = Vec::new();
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." if initial.is_empty() && parts.last().is_none_or(|&l| l == "..") => {
                parts.push("..")
            }
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    if initial.is_empty() && joined.is_empty() {
        ".".into()
    } else {
        format!("{initial}{joined}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normpath_like_python() {
        for (p, want) in [
            ("", "."),
            ("a.fs", "a.fs"),
            ("./a//b.fs", "a/b.fs"),
            ("/x/../y/./z/", "/y/z"),
            ("//x", "//x"),
            ("///x", "/x"),
            ("../../a", "../../a"),
            ("a/../..", ".."),
            ("/..", "/"),
            (".", "."),
        ] {
            assert_eq!(normpath(p), want, "{p}");
        }
    }
}
