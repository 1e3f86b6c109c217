//! Memory budget: an array 4× the budget written and read end to end while
//! the pager's resident memory stays under budget + slack; a transaction
//! dirtying more than the budget is a clear error, not an OOM.

mod common;

use std::sync::Arc;

use common::{BS, rss_in};
use pager::{Mapping, MemSource, Options};

/// Slack over the budget: the pool's spare populated slots (`pool_keep`
/// blocks; blocks being loaded count toward the budget itself). Page tables
/// are not in smaps `Rss`.
fn slack(opts: &Options) -> usize {
    opts.pool_keep * BS
}

#[test]
fn array_four_times_the_budget_stays_within_budget() {
    require_uffd!();
    let budget = 64 << 20; // 32 blocks
    let nblocks = 4 * budget / BS; // 256 MiB array
    let opts = Options::with_budget(budget);
    let limit = budget + slack(&opts);
    let src = Arc::new(MemSource::new(BS));
    let mut m = Mapping::new(src.clone(), nblocks * BS, opts.clone()).unwrap();
    let ranges = m.address_ranges();
    let words = BS / 8;
    let mut peak = 0;
    // Write in transactions of a quarter of the budget.
    let per_txn = budget / BS / 4;
    for first in (0..nblocks).step_by(per_txn) {
        let n = per_txn.min(nblocks - first);
        {
            let mut v = m.slice_mut::<u64>(first * BS, n * words).unwrap();
            for (i, x) in v.iter_mut().enumerate() {
                *x = (first * words + i) as u64;
            }
        }
        peak = peak.max(rss_in(&ranges));
        m.commit().unwrap();
        peak = peak.max(rss_in(&ranges));
        assert!(m.resident_blocks() * BS <= budget);
    }
    // Read everything back, end to end, in one view.
    let v = m.slice::<u64>(0, nblocks * words).unwrap();
    for (i, x) in v.iter().enumerate() {
        if *x != i as u64 {
            panic!("word {i}: {x}");
        }
        if i % words == 0 {
            peak = peak.max(rss_in(&ranges));
        }
    }
    let st = m.stats();
    eprintln!(
        "peak pager RSS {} MiB, budget {} MiB, limit {} MiB, stats {st:?}",
        peak >> 20,
        budget >> 20,
        limit >> 20
    );
    assert!(peak <= limit, "resident {peak} > budget {budget} + slack");
    assert!(st.evictions >= (nblocks - budget / BS) as u64);
}

/// Runs in a child process: dirtying more than the budget must kill the
/// writer with SIGBUS after printing why.
#[test]
fn dirtying_more_than_the_budget_is_a_clear_error() {
    require_uffd!();
    if std::env::var_os("PAGER_OVER_BUDGET_CHILD").is_some() {
        let src = Arc::new(MemSource::new(BS));
        let mut m = Mapping::new(src, 16 * BS, Options::with_budget(4 * BS)).unwrap();
        m.bytes_mut(0..16 * BS).unwrap().fill(1);
        unreachable!("wrote 16 blocks with a budget of 4");
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "dirtying_more_than_the_budget_is_a_clear_error",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PAGER_OVER_BUDGET_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    use std::os::unix::process::ExitStatusExt;
    // Killed by SIGBUS (a sanitizer's handler may turn that into an exit).
    assert!(!out.status.success(), "child survived:\n{stderr}");
    if let Some(sig) = out.status.signal() {
        assert_eq!(sig, libc_sigbus(), "stderr:\n{stderr}");
    }
    assert!(
        stderr.contains("memory budget of 8388608 bytes exceeded at block 4"),
        "stderr:\n{stderr}"
    );
}

fn libc_sigbus() -> i32 {
    7 // SIGBUS on Linux x86-64 and arm64
}

#[test]
fn prefetch_reports_budget_and_load_on_the_calling_thread() {
    require_uffd!();
    let src = Arc::new(MemSource::new(BS));
    src.write(&[(3, &[1u8; 10])]).unwrap();
    let m = Mapping::new(src.clone(), 16 * BS, Options::with_budget(4 * BS)).unwrap();
    m.prefetch(0..16 * BS).unwrap();
    assert_eq!(m.resident_blocks(), 4, "prefetch evicts beyond the budget");
    let faults = m.stats().faults;
    assert_eq!(m.bytes(12 * BS..12 * BS + 1).unwrap()[0], 0);
    assert_eq!(
        m.stats().faults,
        faults,
        "prefetched block served without a fault"
    );
    m.prefetch(3 * BS..3 * BS + 1).unwrap();
    assert_eq!(m.bytes(3 * BS..3 * BS + 10).unwrap(), &[1u8; 10]);
}
