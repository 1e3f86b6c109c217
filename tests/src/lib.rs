//! Harness for the end-to-end tests: fixture lookup and the Python oracle.
