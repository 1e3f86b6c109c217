#!/usr/bin/env bash
# The pager's concurrency tests under AddressSanitizer (nightly Rust): the
# stress test (threads faulting, committing and aborting against a model),
# the transaction tests, and the ZODB integration (zblk's paged tests:
# readers of one snapshot while another array commits, crash cuts).
# Miri cannot run them: every path goes through userfaultfd and mmap.
#
#   scripts/sanitize.sh            # needs `rustup toolchain install nightly`
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="-Zsanitizer=address"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/asan}
target=$(rustc -vV | sed -n 's/^host: //p')
cargo +nightly test -p pager --test stress --test txn --target "$target"
cargo +nightly test -p zblk --test paged --test paged_crash --target "$target"
