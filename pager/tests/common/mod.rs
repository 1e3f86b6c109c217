//! Helpers shared by the pager's integration tests.
#![allow(dead_code)]

use std::ops::Range;
use std::sync::Arc;

use pager::{Mapping, MemSource, Options};

/// Block size used by most tests: wendelin's default, huge-page sized.
pub const BS: usize = 2 << 20;

/// Whether userfaultfd is usable; prints why a test skips when it is not.
pub fn uffd_usable(test: &str) -> bool {
    match pager::probe() {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIP {test}: {e}");
            false
        }
    }
}

/// Skip the calling test (returning early) when userfaultfd is unusable.
#[macro_export]
macro_rules! require_uffd {
    () => {
        // libtest names each test's thread after the test.
        let test = std::thread::current()
            .name()
            .unwrap_or(module_path!())
            .to_owned();
        if !common::uffd_usable(&test) {
            return;
        }
    };
}

/// A deterministic byte pattern for block `blk` at "version" `v`.
pub fn pattern(blk: u64, v: u64, len: usize) -> Vec<u8> {
    let mut x = blk.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ v.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_be_bytes());
    }
    out.truncate(len);
    out
}

/// xorshift64*: a tiny deterministic generator, so tests need no `rand`.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A source and a mapping of `nblocks` blocks over it.
pub fn setup(nblocks: usize, options: Options) -> (Arc<MemSource>, Mapping<Arc<MemSource>>) {
    let src = Arc::new(MemSource::new(BS));
    let m = Mapping::new(Arc::clone(&src), nblocks * BS, options).expect("mapping");
    (src, m)
}

/// Resident bytes (smaps `Rss`) of the memory areas overlapping `ranges`.
pub fn rss_in(ranges: &[Range<usize>]) -> usize {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let mut total = 0usize;
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            current = Some((a, b));
            continue;
        }
        if let Some(rest) = line.strip_prefix("Rss:")
            && let Some((a, b)) = current
            && ranges.iter().any(|r| a < r.end && r.start < b)
        {
            let kb: usize = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(0);
            total += kb * 1024;
        }
    }
    total
}

/// Whole-process resident memory from /proc/self/statm.
pub fn rss_process() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
