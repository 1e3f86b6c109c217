//! Running the `zodbrs` binary from the end-to-end tests: one place for
//! the command and for the failure message that names the arguments and
//! shows what the tool printed on stderr.

#![allow(dead_code)] // each test file uses a part

use std::ffi::OsStr;
use std::fmt::Debug;
use std::process::{Command, Output};

/// `zodbrs args…` to its end, whatever its exit status.
pub fn zodbrs<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zodbrs"))
        .args(args)
        .output()
        .expect("run zodbrs")
}

/// `zodbrs args…`, which must succeed.
pub fn ok<S: AsRef<OsStr> + Debug>(args: &[S]) -> Output {
    let out = zodbrs(args);
    assert!(
        out.status.success(),
        "zodbrs {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The standard output of a `zodbrs args…` that must succeed, as text.
pub fn text<S: AsRef<OsStr> + Debug>(args: &[S]) -> String {
    String::from_utf8(ok(args).stdout).expect("zodbrs prints UTF-8")
}
