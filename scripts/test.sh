#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test of every crate,
# including the ones that compare with the Python reference (ZODB, ZEO,
# BTrees, zodbtools) installed into .venv by scripts/setup-python.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-python.sh
export ZODB_PYTHON="$PWD/.venv/bin/python"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# The fuzz targets live outside the workspace (cargo-fuzz needs nightly to
# run them); make sure they still build against the parsers.
(cd fuzz && cargo check --locked --quiet)
