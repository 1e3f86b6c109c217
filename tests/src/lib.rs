//! Harness for the end-to-end tests: where the fixtures are, how to run the
//! Python oracle, and how to compare outputs readably.
//!
//! Compatibility is proven against the real Python ZODB, so most tests need
//! two things from outside the Rust code:
//!
//! * **fixtures**: the project's own databases and golden outputs under
//!   `fixtures/` (made by `fixtures/gen/gen_fixtures.py`, hashed in
//!   `fixtures/MANIFEST`), and the shared real-world databases in
//!   `../shared/fixtures` beside the workspace;
//! * **the oracle**: `tests/py/reftool.py` run by the venv Python
//!   (`scripts/setup-python.sh`), which prints exactly what the Python
//!   tools print, or the storage API's answers as JSON.
//!
//! On a developer machine either may be missing; the tests that need them
//! then skip with a one-line notice, so `cargo test` still works. In CI
//! (`CI=true`) a missing piece is a setup bug, and the harness panics
//! instead of letting tests pass without checking anything.
//!
//! Tests never write beside a fixture: [`TempCopy`] gives them a private
//! copy in a temporary directory.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

pub mod zeo;

/// The workspace root (the directory holding the workspace `Cargo.toml`).
///
/// Derived from this crate's manifest dir, so it is right whatever the
/// current directory of the test process is.
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .expect("the zodb-it crate lives in <workspace>/tests")
        .to_path_buf()
}

/// The project's own fixtures: `<workspace>/fixtures`.
pub fn project_fixtures() -> PathBuf {
    workspace_root().join("fixtures")
}

/// The shared real-world fixtures: `../shared/fixtures` beside the
/// workspace, or `None` (with a notice) when they are not there.
///
/// # Panics
/// In CI (`CI=true`) when the directory is missing: every golden test
/// would silently skip otherwise.
pub fn shared_fixtures() -> Option<PathBuf> {
    let dir = workspace_root().join("../shared/fixtures");
    if dir.is_dir() {
        return Some(dir);
    }
    missing(&format!("shared fixtures not found at {}", dir.display()))
}

/// The Python that runs the oracle: `$ZODB_PYTHON` if set, else the
/// workspace venv's `.venv/bin/python`; `None` (with a notice) when it does
/// not exist.
///
/// # Panics
/// In CI (`CI=true`) when no Python is found: `.ci/run` must have created
/// the venv.
pub fn python() -> Option<PathBuf> {
    let found = python_from(std::env::var_os("ZODB_PYTHON"), &workspace_root());
    if found.is_some() {
        return found;
    }
    missing("no Python oracle (set ZODB_PYTHON or run scripts/setup-python.sh)")
}

/// Where [`python`] looks, without the environment: kept apart so that it
/// can be tested without mutating the process environment.
fn python_from(env: Option<OsString>, root: &Path) -> Option<PathBuf> {
    let candidate = match env {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => root.join(".venv/bin/python"),
    };
    candidate.exists().then_some(candidate)
}

/// True when running in CI, where missing fixtures or oracle are errors.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn missing<T>(what: &str) -> Option<T> {
    if in_ci() {
        panic!("CI=true but {what}");
    }
    eprintln!("notice: {what}; skipping");
    None
}

/// Path of the oracle script, `tests/py/reftool.py`.
pub fn reftool_script() -> PathBuf {
    workspace_root().join("tests/py/reftool.py")
}

/// Runs `reftool.py ARGS` without judging the result; `None` when there is
/// no Python (see [`python`]).
///
/// Use it for the cases where the Python tool is expected to fail (e.g.
/// `fstest` on a corrupt file) and the test compares the error.
pub fn reftool_output<I, S>(args: I) -> Option<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let py = python()?;
    let out = Command::new(&py)
        .arg(reftool_script())
        .args(args)
        // Deterministic, and no __pycache__ written into the source tree.
        .env("PYTHONHASHSEED", "0")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", py.display()));
    Some(out)
}

/// Runs `reftool.py ARGS` and returns its output, asserting it succeeded.
///
/// Tests that need the oracle should first skip when it is absent:
/// `let Some(_) = zodb_it::python() else { return };`
///
/// # Panics
/// When there is no Python, or when the tool exits non-zero (the panic
/// message shows the command and its stderr).
pub fn reftool<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let Some(out) = reftool_output(&args) else {
        panic!("reftool {args:?}: no Python oracle; guard the test with zodb_it::python()");
    };
    assert!(
        out.status.success(),
        "reftool {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A private copy of a fixture database in a fresh temporary directory.
///
/// Tests that open files read-write, append, truncate or let a tool write an
/// `.index` must use a copy: fixtures are shared by every test and by the
/// hashes in `fixtures/MANIFEST`, and the shared ones are read-only. The
/// copy keeps the file name (`Data.fs`, `1.fs`, ...) and is writable; the
/// directory is removed on drop.
#[derive(Debug)]
pub struct TempCopy {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl TempCopy {
    /// Copies `src` alone (no `.index`: the storage must scan).
    pub fn new(src: impl AsRef<Path>) -> Self {
        Self::copy(src.as_ref(), false)
    }

    /// Copies `src` and, when it exists, `src.index` beside it.
    pub fn with_index(src: impl AsRef<Path>) -> Self {
        Self::copy(src.as_ref(), true)
    }

    fn copy(src: &Path, index: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("zodb-it-")
            .tempdir()
            .expect("create a temporary directory");
        let name = src
            .file_name()
            .unwrap_or_else(|| panic!("{} has no file name", src.display()));
        let path = dir.path().join(name);
        copy_writable(src, &path);
        if index {
            let src_index = index_path(src);
            if src_index.exists() {
                copy_writable(&src_index, &index_path(&path));
            }
        }
        TempCopy { dir, path }
    }

    /// The copied database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where its `.index` is (or would be).
    pub fn index_path(&self) -> PathBuf {
        index_path(&self.path)
    }

    /// The temporary directory holding the copy.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn index_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".index");
    PathBuf::from(s)
}

fn copy_writable(src: &Path, dst: &Path) {
    fs::copy(src, dst)
        .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", src.display(), dst.display()));
    // fs::copy keeps the mode, and the shared fixtures are read-only.
    let mut perm = fs::metadata(dst).expect("stat the copy").permissions();
    #[allow(clippy::permissions_set_readonly_false)] // only our own temp file
    perm.set_readonly(false);
    fs::set_permissions(dst, perm).expect("make the copy writable");
}

/// Reads a golden or fixture file, with the path in the panic message.
pub fn read(path: impl AsRef<Path>) -> Vec<u8> {
    let path = path.as_ref();
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Asserts two outputs are byte-identical, and on mismatch panics with a
/// readable report of the first differing line instead of two dumps of
/// megabytes (tool outputs are long, and may hold binary pickles).
pub fn assert_text_eq(expected: impl AsRef<[u8]>, actual: impl AsRef<[u8]>, what: &str) {
    if let Some(report) = first_difference(expected.as_ref(), actual.as_ref()) {
        panic!("{what}: output differs from the expected one\n{report}");
    }
}

/// Describes where `actual` first departs from `expected`, or `None` when
/// they are equal: line number and byte offset, the lines around it, and
/// the sizes.
fn first_difference(expected: &[u8], actual: &[u8]) -> Option<String> {
    if expected == actual {
        return None;
    }
    let offset = expected
        .iter()
        .zip(actual)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(actual.len()));
    let line_no = expected[..offset].iter().filter(|&&b| b == b'\n').count();
    let exp_lines: Vec<&[u8]> = expected.split(|&b| b == b'\n').collect();
    let act_lines: Vec<&[u8]> = actual.split(|&b| b == b'\n').collect();
    let mut r = String::new();
    let _ = writeln!(
        r,
        "first difference at byte {offset}, line {} (expected {} bytes / {} lines, actual {} bytes / {} lines)",
        line_no + 1,
        expected.len(),
        exp_lines.len(),
        actual.len(),
        act_lines.len()
    );
    let first = line_no.saturating_sub(2);
    for (i, l) in exp_lines[first..line_no].iter().enumerate() {
        let _ = writeln!(r, "   {:>6} | {}", first + i + 1, show(l));
    }
    let line = |lines: &[&[u8]]| {
        lines
            .get(line_no)
            .map_or("<end of output>".to_owned(), |l| show(l))
    };
    let _ = writeln!(r, "-  {:>6} | {}", line_no + 1, line(&exp_lines));
    let _ = write!(r, "+  {:>6} | {}", line_no + 1, line(&act_lines));
    Some(r)
}

/// One line for a report: escaped so control bytes show, and cut short.
fn show(line: &[u8]) -> String {
    const MAX: usize = 300;
    let text = String::from_utf8_lossy(&line[..line.len().min(MAX)]);
    let mut s = format!("{text:?}");
    if line.len() > MAX {
        let _ = write!(s, " ... ({} bytes)", line.len());
    }
    s
}

/// One line of `fixtures/MANIFEST`: a file and its expected sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Lowercase hex sha256.
    pub sha256: String,
    /// Relative to `fixtures/` (the shared inputs start with `../../shared/`).
    pub path: String,
}

/// Parses `fixtures/MANIFEST` (`sha256sum` format, `#` comments).
pub fn manifest() -> Vec<ManifestEntry> {
    parse_manifest(&String::from_utf8_lossy(&read(
        project_fixtures().join("MANIFEST"),
    )))
}

fn parse_manifest(text: &str) -> Vec<ManifestEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (sha, path) = l
                .split_once("  ")
                .unwrap_or_else(|| panic!("MANIFEST: bad line {l:?}"));
            ManifestEntry {
                sha256: sha.to_owned(),
                path: path.to_owned(),
            }
        })
        .collect()
}

/// Lowercase hex sha256 of a file.
pub fn sha256_file(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Checks that the MANIFEST entries under `prefix` (a path relative to
/// `fixtures/`, e.g. `"history"` or `"../../shared"`) match the files, and,
/// when `prefix` is a directory of `fixtures/`, that every file in it is
/// listed (an unlisted golden is one nobody regenerates).
///
/// # Panics
/// Listing every stale or unlisted file, with how to regenerate.
pub fn check_manifest(prefix: &str) {
    let root = project_fixtures();
    let entries: Vec<ManifestEntry> = manifest()
        .into_iter()
        .filter(|e| e.path.starts_with(&format!("{prefix}/")))
        .collect();
    assert!(
        !entries.is_empty(),
        "MANIFEST lists nothing under {prefix}/"
    );
    let mut problems = Vec::new();
    for e in &entries {
        let file = root.join(&e.path);
        if !file.exists() {
            problems.push(format!("missing: {}", e.path));
        } else if sha256_file(&file) != e.sha256 {
            problems.push(format!("changed: {}", e.path));
        }
    }
    let dir = root.join(prefix);
    if !prefix.starts_with("..") && dir.is_dir() {
        let listed: std::collections::HashSet<&str> =
            entries.iter().map(|e| e.path.as_str()).collect();
        for f in files_under(&dir) {
            let rel = f
                .strip_prefix(&root)
                .expect("under fixtures/")
                .to_string_lossy()
                .into_owned();
            if !listed.contains(rel.as_str()) {
                problems.push(format!("not in MANIFEST: {rel}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "fixtures/{prefix} is out of sync with fixtures/MANIFEST \
         (regenerate: .venv/bin/python fixtures/gen/gen_fixtures.py):\n  {}",
        problems.join("\n  ")
    );
}

/// Every file below `dir`, skipping Python's `__pycache__`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("list {}: {e}", d.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                if path.file_name() != Some(OsStr::new("__pycache__")) {
                    todo.push(path);
                }
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every fixture database: ours (`history`, `packed`, `empty`) and, when
/// present, the shared ones from the field (wendelin, zodbtools, fs1, btree).
pub fn all_databases() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let ours = project_fixtures();
    for d in ["history", "packed", "empty"] {
        out.push(ours.join(d).join("Data.fs"));
    }
    if let Some(shared) = shared_fixtures() {
        for k in ["py2_pickle1", "py2_pickle2", "py2_pickle3", "py3_pickle3"] {
            out.push(shared.join("wendelin").join(k).join("zblk.fs"));
            for h in ["1", "1_nozext"] {
                out.push(shared.join("zodbtools").join(h).join(k).join("data.fs"));
            }
        }
        out.push(shared.join("fs1/1.fs"));
        out.push(shared.join("btree/1.fs"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_is_the_workspace() {
        let toml = fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(toml.contains("[workspace]"));
        assert!(project_fixtures().join("MANIFEST").is_file());
        assert!(reftool_script().is_file());
    }

    #[test]
    fn python_lookup_prefers_the_environment() {
        let root = workspace_root();
        let me = std::env::current_exe().unwrap();
        assert_eq!(
            python_from(Some(me.clone().into_os_string()), &root),
            Some(me)
        );
        let nowhere = root.join("no/such/python");
        assert_eq!(python_from(Some(nowhere.into_os_string()), &root), None);
        let default = python_from(None, &root);
        assert_eq!(default.is_some(), root.join(".venv/bin/python").exists());
        assert_eq!(python_from(Some(OsString::new()), &root), default);
    }

    #[test]
    fn equal_outputs_have_no_difference() {
        assert_eq!(first_difference(b"a\nb\n", b"a\nb\n"), None);
        assert_text_eq("same", "same", "identity");
    }

    #[test]
    fn difference_names_line_and_offset() {
        let r = first_difference(b"one\ntwo\nthree\n", b"one\ntwo\nthr\x00e\n").unwrap();
        assert!(r.contains("byte 11, line 3"), "{r}");
        assert!(r.contains("-       3 | \"three\""), "{r}");
        assert!(r.contains("+       3 | \"thr\\0e\""), "{r}");
        assert!(r.contains("       2 | \"two\""), "{r}");
    }

    #[test]
    fn difference_when_one_output_is_a_prefix() {
        let r = first_difference(b"a\nb\n", b"a\n").unwrap();
        assert!(r.contains("byte 2, line 2"), "{r}");
        let r = first_difference(b"", b"x").unwrap();
        assert!(r.contains("byte 0, line 1"), "{r}");
    }

    #[test]
    fn long_lines_are_cut() {
        let long = vec![b'x'; 1000];
        let r = first_difference(&long, b"y").unwrap();
        assert!(r.contains("(1000 bytes)"), "{r}");
        assert!(r.len() < 1000, "{r}");
    }

    #[test]
    fn assert_text_eq_panics_with_the_report() {
        let err =
            std::panic::catch_unwind(|| assert_text_eq("a\n", "b\n", "fsdump of x")).unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(msg.starts_with("fsdump of x: output differs"), "{msg}");
        assert!(msg.contains("line 1"), "{msg}");
    }

    #[test]
    fn temp_copy_is_private_and_writable() {
        let src = project_fixtures().join("empty/Data.fs");
        let kept;
        {
            let c = TempCopy::with_index(&src);
            assert_eq!(c.path().file_name().unwrap(), "Data.fs");
            assert_eq!(read(c.path()), read(&src));
            assert_eq!(read(c.index_path()), read(index_path(&src)));
            assert!(c.path().starts_with(c.dir()));
            fs::OpenOptions::new().append(true).open(c.path()).unwrap();
            kept = c.dir().to_path_buf();
        }
        assert!(!kept.exists(), "removed on drop");
        let c = TempCopy::new(&src);
        assert!(!c.index_path().exists(), "new() copies no index");
    }

    #[test]
    fn manifest_parses_sha256sum_lines() {
        let m = parse_manifest("# comment\n\nabc  dir/a b.ok\n");
        assert_eq!(
            m,
            vec![ManifestEntry {
                sha256: "abc".into(),
                path: "dir/a b.ok".into()
            }]
        );
        // sha256 of the 4 bytes "FS30"
        assert_eq!(
            sha256_file(project_fixtures().join("empty/Data.fs")),
            "943b657bd2f857711fc4d4c3bac588e88170632a27494f5368861ee5e462a633"
        );
    }

    #[test]
    fn reftool_runs_the_oracle() {
        if python().is_none() {
            return;
        }
        let db = project_fixtures().join("empty/Data.fs");
        let out = reftool([OsStr::new("fsdumpv"), db.as_os_str()]);
        assert_text_eq(
            read(project_fixtures().join("empty/Data.fsdumpv.ok")),
            &out.stdout,
            "fsdumpv",
        );
        let out = reftool_output(["fstest", "/no/such/Data.fs"]).unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
        let err = std::panic::catch_unwind(|| reftool(["fstest", "/no/such/Data.fs"])).unwrap_err();
        assert!(
            err.downcast_ref::<String>()
                .unwrap()
                .contains("no such file")
        );
    }

    // One test per fixture directory: the goldens and databases are the ones
    // fixtures/MANIFEST was written for.

    #[test]
    fn manifest_history() {
        check_manifest("history");
    }

    #[test]
    fn manifest_packed() {
        check_manifest("packed");
    }

    #[test]
    fn manifest_empty() {
        check_manifest("empty");
    }

    /// The generator scripts (and reftool.py, whose output the goldens are).
    #[test]
    fn manifest_gen() {
        check_manifest("gen");
        check_manifest("../tests");
    }

    /// Our goldens of the shared databases.
    #[test]
    fn manifest_shared_goldens() {
        check_manifest("shared");
    }

    /// The shared databases and the shared goldens we reuse are the ones
    /// our goldens were made from.
    #[test]
    fn manifest_shared_inputs() {
        if shared_fixtures().is_none() {
            return;
        }
        check_manifest("../../shared");
    }
}
