//! The tools behind the `zodbrs` binary, as library functions that write to
//! any `io::Write`, so tests compare their output with the Python tools'.
pub mod tidrange;
