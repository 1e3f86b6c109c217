//! Pager benchmark: prints first-touch GB/s (against a memcpy baseline in the
//! same run), re-read GB/s, first-write latency and commit throughput.
//!
//! `cargo bench -p pager` (add `-- --gib N` for the array size, default 4,
//! `--repeat N` to keep the best of N runs of each first-touch figure, and
//! `--spin-us N` for the handler-polling variant, default 200).
//! Needs userfaultfd (root, or vm.unprivileged_userfaultfd=1) and about
//! 2·N GiB + 1 GiB of RAM.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pager::{
    BlockSource, Changes, DirtyBlock, InstallMode, Mapping, MemSource, Options, Snapshot,
    SourceError,
};

/// Loads from a MemSource; `store` only reads the data (checksum), to
/// measure what a commit costs the pager itself.
struct Sink {
    inner: Arc<MemSource>,
    base: Snapshot,
    head: AtomicU64,
    store_ns: AtomicU64,
}

impl Sink {
    fn new(inner: Arc<MemSource>) -> Self {
        let base = inner.head_snapshot();
        Sink {
            inner,
            base,
            head: AtomicU64::new(base.0),
            store_ns: AtomicU64::new(0),
        }
    }
}

impl BlockSource for Sink {
    fn block_size(&self) -> usize {
        self.inner.block_size()
    }
    fn head(&self) -> Result<Snapshot, SourceError> {
        Ok(Snapshot(self.head.load(Ordering::Relaxed)))
    }
    fn load(&self, _at: Snapshot, block: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        self.inner.load(self.base, block, buf)
    }
    fn store(&self, _base: Snapshot, blocks: &[DirtyBlock<'_>]) -> Result<Snapshot, SourceError> {
        let t = Instant::now();
        let mut x = 0u8;
        for b in blocks {
            x ^= b.data.iter().fold(0u8, |a, &c| a ^ c);
        }
        std::hint::black_box(x);
        self.store_ns
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(Snapshot(self.head.fetch_add(1, Ordering::Relaxed) + 1))
    }
    fn changes(&self, _since: Snapshot) -> Result<Changes, SourceError> {
        Ok(Changes {
            head: Snapshot(self.head.load(Ordering::Relaxed)),
            blocks: Vec::new(),
        })
    }
}

const BS: usize = 2 << 20;
const GB: f64 = 1e9;

fn gbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / GB / d.as_secs_f64()
}

/// Touch one word per 4 KiB page: the cost of faulting the data in.
fn touch(v: &[u64]) -> u64 {
    v.iter().step_by(512).fold(0, |a, &x| a ^ x)
}

/// Sum every word: a consumer that reads all data.
fn sum(v: &[u64]) -> u64 {
    v.iter().fold(0u64, |a, &x| a.wrapping_add(x))
}

fn sum_threads(v: &[u64], threads: usize) -> u64 {
    let chunk = v.len().div_ceil(threads);
    std::thread::scope(|s| {
        let hs: Vec<_> = v.chunks(chunk).map(|c| s.spawn(move || sum(c))).collect();
        hs.into_iter()
            .fold(0u64, |a, h| a.wrapping_add(h.join().unwrap()))
    })
}

fn anon_huge_kib(range: &std::ops::Range<usize>) -> usize {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut inside = false;
    let mut total = 0;
    for line in smaps.lines() {
        if let Some((a, rest)) = line.split_once('-')
            && let Ok(a) = usize::from_str_radix(a, 16)
            && let Some(b) = rest.split_whitespace().next()
            && let Ok(b) = usize::from_str_radix(b, 16)
        {
            inside = a < range.end && range.start < b;
            continue;
        }
        if inside && let Some(kb) = line.strip_prefix("AnonHugePages:") {
            total += kb
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<usize>()
                .unwrap_or(0);
        }
    }
    total
}

#[allow(
    clippy::host_endian_bytes,
    reason = "the source holds host-order words that the typed view reads back"
)]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let gib: usize = args
        .iter()
        .position(|a| a == "--gib")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let repeat: usize = args
        .iter()
        .position(|a| a == "--repeat")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let spin_us: u64 = args
        .iter()
        .position(|a| a == "--spin-us")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    if let Err(e) = pager::probe() {
        println!("pager bench skipped: {e}");
        return;
    }
    let len = gib << 30;
    let nblocks = len / BS;
    let words = len / 8;
    println!(
        "pager bench: {gib} GiB array, {nblocks} blocks of 2 MiB, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // The source: every block filled (nothing stripped), like a page-cached ZBlk0 file.
    let src = Arc::new(MemSource::new(BS));
    {
        let t = Instant::now();
        let mut block = vec![0u64; BS / 8];
        for b in 0..nblocks {
            for (i, w) in block.iter_mut().enumerate() {
                *w = (b * BS / 8 + i) as u64 | 1 << 63;
            }
            let bytes: Vec<u8> = block.iter().flat_map(|w| w.to_ne_bytes()).collect();
            src.write(&[(b as u64, &bytes)]).unwrap();
        }
        println!("  (source filled in {:.1} s)", t.elapsed().as_secs_f64());
    }
    let at = src.head_snapshot();
    let expect_sum = (0..words as u64).fold(0u64, |a, i| a.wrapping_add(i | 1 << 63));

    // Baseline: the same loads (MemSource::load = memcpy from its buffers)
    // into fresh memory and into memory already resident.
    let (base_fresh, base_resident) = {
        let mut dst = vec![0u8; len];
        let t = Instant::now();
        for (b, chunk) in dst.chunks_mut(BS).enumerate() {
            pager::BlockSource::load(&*src, at, b as u64, chunk).unwrap();
        }
        let fresh = gbps(len, t.elapsed());
        let t = Instant::now();
        for (b, chunk) in dst.chunks_mut(BS).enumerate() {
            pager::BlockSource::load(&*src, at, b as u64, chunk).unwrap();
        }
        (fresh, gbps(len, t.elapsed()))
    };
    println!(
        "baseline memcpy from the source's buffers: {base_fresh:.2} GB/s into fresh memory, {base_resident:.2} GB/s into resident memory"
    );

    // Best of `repeat` runs: the machine is shared, so a single run can be
    // slowed by others; the minimum is the pager's own cost.
    let run = |name: &str,
               opts: Options,
               consumer: &dyn Fn(&Mapping<Arc<MemSource>>) -> u64,
               check: bool|
     -> (f64, Mapping<Arc<MemSource>>) {
        let mut best: Option<(f64, pager::Stats, usize)> = None;
        let mut last = None;
        for _ in 0..repeat {
            drop(last.take());
            let m = Mapping::new(src.clone(), len, opts.clone()).unwrap();
            let t = Instant::now();
            let s = std::hint::black_box(consumer(&m));
            let d = t.elapsed();
            if check {
                assert_eq!(s, expect_sum, "{name}: wrong data");
            }
            let r = gbps(len, d);
            if best.as_ref().is_none_or(|(b, _, _)| r > *b) {
                best = Some((r, m.stats(), anon_huge_kib(&m.address_ranges()[0]) >> 10));
            }
            last = Some(m);
        }
        let (r, st, huge) = best.expect("repeat >= 1");
        let m = last.expect("repeat >= 1");
        let per = |ns: u64| ns as f64 / 1e3 / st.loads.max(1) as f64;
        println!(
            "first touch {name}: {r:.2} GB/s ({:.2}× memcpy-resident, {:.2}× memcpy-fresh)\n    \
             {} loads ({} read ahead), {} moves, {} copies; per block: load {:.0} µs, place {:.0} µs; \
             huge pages {} MiB",
            r / base_resident,
            r / base_fresh,
            st.loads,
            st.readaheads,
            st.moves,
            st.copies,
            per(st.load_ns),
            per(st.place_ns),
            huge
        );
        (r, m)
    };
    let budget = len + (256 << 20);
    let all = |m: &Mapping<Arc<MemSource>>| touch(m.slice::<u64>(0, words).unwrap());
    let summed = |m: &Mapping<Arc<MemSource>>| sum(m.slice::<u64>(0, words).unwrap());
    let opts = |readahead: usize, spin_us: u64| Options {
        readahead,
        handler_spin: Duration::from_micros(spin_us),
        ..Options::with_budget(budget)
    };

    run("(touch 1 word/page, no readahead)", opts(0, 0), &all, false);
    let (ft_touch, _) = run(
        "(touch 1 word/page, default options)",
        opts(4, 0),
        &all,
        false,
    );
    run(
        &format!("(touch, handler spins {spin_us} µs)"),
        opts(4, spin_us),
        &all,
        false,
    );
    run("(sum all words, no readahead)", opts(0, 0), &summed, true);
    run(
        &format!("(sum, handler spins {spin_us} µs)"),
        opts(4, spin_us),
        &summed,
        true,
    );
    let (ft_sum, m) = run(
        "(sum all words, default options)",
        opts(4, 0),
        &summed,
        true,
    );
    // Re-read of resident data.
    {
        let v = m.slice::<u64>(0, words).unwrap();
        for threads in [1, 2] {
            let mut best = 0.0f64;
            for _ in 0..3 {
                let t = Instant::now();
                let s = sum_threads(v, threads);
                let r = gbps(len, t.elapsed());
                assert_eq!(s, expect_sum);
                best = best.max(r);
            }
            println!(
                "re-read of resident data (sum, {threads} thread{}): {best:.2} GB/s",
                if threads > 1 { "s" } else { "" }
            );
        }
    }
    drop(m);
    let copy = Options {
        install: InstallMode::Copy,
        ..opts(4, 0)
    };
    run("(touch, 4 KiB UFFDIO_COPY fallback)", copy, &all, false);
    run(
        "(prefetch on the calling thread, no faults)",
        opts(4, 0),
        &|m| {
            m.prefetch(0..len).unwrap();
            touch(m.slice::<u64>(0, words).unwrap())
        },
        false,
    );
    let small = Options {
        budget: 1 << 30,
        ..opts(4, 0)
    };
    run(
        "(sum, budget 1 GiB: evicting while reading)",
        small,
        &summed,
        true,
    );

    // First write to a clean, resident block.
    {
        let n = 512.min(nblocks);
        let mut m = Mapping::new(src.clone(), n * BS, Options::with_budget(budget)).unwrap();
        m.prefetch(0..n * BS).unwrap();
        let mut lat = Vec::with_capacity(n);
        {
            let mut v = m.slice_mut::<u64>(0, n * BS / 8).unwrap();
            for b in 0..n {
                let t = Instant::now();
                v[b * BS / 8 + 3] = 7;
                lat.push(t.elapsed());
            }
        }
        lat.sort();
        let mean = lat.iter().sum::<Duration>() / n as u32;
        println!(
            "first write to a clean 2 MiB block: mean {:.1} µs, p50 {:.1} µs, p99 {:.1} µs ({} blocks, huge pages {} MiB)",
            mean.as_secs_f64() * 1e6,
            lat[n / 2].as_secs_f64() * 1e6,
            lat[n * 99 / 100].as_secs_f64() * 1e6,
            n,
            anon_huge_kib(&m.address_ranges()[0]) >> 10
        );
        // Commit of the dirty blocks (1 GiB when n = 512), then re-arm.
        {
            let mut v = m.slice_mut::<u64>(0, n * BS / 8).unwrap();
            for (i, w) in v.iter_mut().enumerate() {
                *w = i as u64 | 1;
            }
        }
        let t = Instant::now();
        let at = m.commit().unwrap();
        let d = t.elapsed();
        assert_eq!(src.stored_in(at).len(), n);
        println!(
            "commit of {} MiB of dirty blocks to MemSource (it copies them): {:.2} GB/s ({:.1} ms)",
            n * 2,
            gbps(n * BS, d),
            d.as_secs_f64() * 1e3
        );
    }
    // The pager's own share of a commit: a sink that only reads the data.
    {
        let n = 512.min(nblocks);
        let sink = Arc::new(Sink::new(src.clone()));
        let mut m = Mapping::new(sink.clone(), n * BS, Options::with_budget(budget)).unwrap();
        m.slice_mut::<u64>(0, n * BS / 8).unwrap().fill(3);
        let t = Instant::now();
        m.commit().unwrap();
        let d = t.elapsed();
        println!(
            "commit of {} MiB to a sink that only reads them: {:.2} GB/s ({:.1} ms, of which store {:.1} ms, re-arm + bookkeeping {:.2} ms)",
            n * 2,
            gbps(n * BS, d),
            d.as_secs_f64() * 1e3,
            sink.store_ns.load(Ordering::Relaxed) as f64 / 1e6,
            (d.as_nanos() as f64 - sink.store_ns.load(Ordering::Relaxed) as f64) / 1e6
        );
    }
    println!(
        "summary: first touch {ft_touch:.2} GB/s (touch) / {ft_sum:.2} GB/s (sum) vs memcpy {base_resident:.2} GB/s: \
         ratio {:.2} / {:.2}",
        ft_touch / base_resident,
        ft_sum / base_resident
    );
}
