//! Pickle codec throughput and allocations on the fixture records: prints
//! records/s, MB/s and heap allocations per record for `decode_record`,
//! `references` (with a reused `RefScanner`), `class_name` and `dis`.
//!
//! `cargo bench -p zodb-core --bench pickle` (needs ../shared/fixtures).

#[path = "../tests/pickle_util/mod.rs"]
mod pickle_util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use zodb_core::pickle::{DisMemo, RefScanner, class_name, decode_record, dis};

/// Counts heap allocations, to show what decoding a record costs besides time.
struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` over all records until about a second has passed; prints the rates.
fn bench(name: &str, records: &[Bytes], mut f: impl FnMut(&Bytes)) {
    let bytes: usize = records.iter().map(Bytes::len).sum();
    let (mut rounds, start) = (0u32, Instant::now());
    let allocs_before = ALLOCS.load(Ordering::Relaxed);
    while start.elapsed() < Duration::from_secs(1) || rounds == 0 {
        records.iter().for_each(&mut f);
        rounds += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let n = records.len() as f64 * f64::from(rounds);
    let allocs = (ALLOCS.load(Ordering::Relaxed) - allocs_before) as f64 / n;
    println!(
        "{name:<28} {:>9.0} records/s {:>8.1} MB/s {:>6.1} allocs/record",
        n / secs,
        bytes as f64 * f64::from(rounds) / secs / 1e6,
        allocs
    );
}

fn main() {
    let Some(fx) = pickle_util::fixtures() else {
        return;
    };
    let all: Vec<Bytes> = pickle_util::databases(&fx)
        .iter()
        .flat_map(|p| pickle_util::records(p))
        .map(|(_, d)| d)
        .collect();
    let small: Vec<Bytes> = all.iter().filter(|d| d.len() < 512).cloned().collect();
    println!(
        "{} fixture records ({} under 512 bytes)",
        all.len(),
        small.len()
    );

    for (label, set) in [("all", &all), ("small", &small)] {
        println!("-- {label}");
        bench("decode_record", set, |d| {
            std::hint::black_box(decode_record(d).ok());
        });
        let mut scanner = RefScanner::new();
        let mut out = Vec::new();
        bench("references (RefScanner)", set, |d| {
            out.clear();
            std::hint::black_box(scanner.scan(d, &mut out).ok());
        });
        bench("class_name", set, |d| {
            std::hint::black_box(class_name(d));
        });
        let mut text = String::new();
        bench("dis (two pickles)", set, |d| {
            text.clear();
            let mut memo = DisMemo::new();
            if let Ok(end) = dis(d, 0, &mut text, &mut memo) {
                std::hint::black_box(dis(d, end, &mut text, &mut memo).ok());
            }
        });
    }
}
