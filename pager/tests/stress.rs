//! Stress: threads fault random blocks of one mapping (with a budget small
//! enough to evict under them) while another thread commits through its own
//! mapping and another writes and aborts; every value read is checked
//! against a model of the committed history.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{BS, Rng};
use pager::{Error, Mapping, MemSource, Options, Snapshot};

const NBLOCKS: u64 = 24;
const WORDS: usize = BS / 8;

/// Committed history: block → [(snapshot, tag)], every word of the block
/// equals the tag (0 for never written).
#[derive(Default)]
struct Model {
    history: BTreeMap<u64, Vec<(Snapshot, u64)>>,
}

impl Model {
    fn tag(&self, block: u64, at: Snapshot) -> u64 {
        self.history
            .get(&block)
            .and_then(|v| v.iter().rev().find(|(s, _)| *s <= at))
            .map_or(0, |&(_, t)| t)
    }
}

fn check_word(m: &Mapping<Arc<MemSource>>, model: &Mutex<Model>, block: u64, word: usize) {
    let at = m.snapshot();
    let want = model.lock().unwrap().tag(block, at);
    let got = m.slice::<u64>(block as usize * BS + word * 8, 1).unwrap()[0];
    assert_eq!(got, want, "block {block} word {word} at {at}");
}

#[test]
fn faulting_threads_with_a_concurrent_committer_and_aborter() {
    require_uffd!();
    let src = Arc::new(MemSource::new(BS));
    let model = Mutex::new(Model::default());
    let stop = AtomicBool::new(false);
    let mut readers = Mapping::new(
        src.clone(),
        NBLOCKS as usize * BS,
        Options::with_budget(6 * BS),
    )
    .unwrap();
    let rounds = 12;
    std::thread::scope(|s| {
        // Committer: whole blocks filled with a fresh tag, committed; the
        // model is updated under its lock together with the commit so readers
        // never see a snapshot the model does not know yet.
        s.spawn(|| {
            let mut m = Mapping::new(
                src.clone(),
                NBLOCKS as usize * BS,
                Options::with_budget(8 * BS),
            )
            .unwrap();
            let mut rng = Rng(0xC0FFEE);
            let mut tag = 1u64 << 32;
            while !stop.load(Ordering::Relaxed) {
                let k = 1 + rng.below(3);
                let mut written = Vec::new();
                for _ in 0..k {
                    let b = rng.below(NBLOCKS);
                    tag += 1;
                    m.slice_mut::<u64>(b as usize * BS, WORDS)
                        .unwrap()
                        .fill(tag);
                    written.retain(|&(x, _)| x != b);
                    written.push((b, tag));
                }
                let mut model = model.lock().unwrap();
                match m.commit() {
                    Ok(at) => {
                        for (b, t) in written {
                            model.history.entry(b).or_default().push((at, t));
                        }
                    }
                    Err(Error::Conflict { .. }) => {
                        drop(model);
                        m.abort().unwrap();
                    }
                    Err(e) => panic!("commit: {e}"),
                }
            }
        });
        // Aborter: writes random blocks, checks its writes, aborts, checks
        // the committed values are back.
        s.spawn(|| {
            let mut m = Mapping::new(
                src.clone(),
                NBLOCKS as usize * BS,
                Options::with_budget(8 * BS),
            )
            .unwrap();
            let mut rng = Rng(0xAB0);
            while !stop.load(Ordering::Relaxed) {
                let b = rng.below(NBLOCKS);
                let w = rng.below(WORDS as u64) as usize;
                m.slice_mut::<u64>(b as usize * BS + w * 8, 1).unwrap()[0] = u64::MAX;
                assert_eq!(
                    m.slice::<u64>(b as usize * BS + w * 8, 1).unwrap()[0],
                    u64::MAX
                );
                m.abort().unwrap();
                check_word(&m, &model, b, w);
            }
        });
        // Readers: several threads fault random words of one mapping; between
        // rounds the mapping moves to the newest snapshot.
        let mut rng = Rng(0x5EED);
        for _round in 0..rounds {
            std::thread::scope(|rs| {
                for t in 0..3u64 {
                    let readers = &readers;
                    let model = &model;
                    let seed = rng.next() ^ t;
                    rs.spawn(move || {
                        let mut rng = Rng(seed | 1);
                        for i in 0..300 {
                            if i % 50 == 0 {
                                // A sequential scan of a few blocks: the
                                // readahead thread loads ahead of it.
                                let first = rng.below(NBLOCKS - 4);
                                for b in first..first + 4 {
                                    check_word(readers, model, b, 0);
                                    check_word(readers, model, b, WORDS - 1);
                                }
                            }
                            let b = rng.below(NBLOCKS);
                            let w = rng.below(WORDS as u64) as usize;
                            check_word(readers, model, b, w);
                        }
                    });
                }
            });
            readers.sync().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    let st = readers.stats();
    eprintln!("readers: {st:?}, head {}", src.head_snapshot());
    assert!(
        st.evictions > 0 && st.invalidations > 0,
        "stress exercised eviction and invalidation: {st:?}"
    );
}

/// Threads write disjoint pieces of the same blocks through one split
/// `ViewMut` (chunk borders inside blocks), mixing reads and writes: every
/// written block, and only those, must be dirty and stored.
#[test]
fn threads_sharing_blocks_through_a_split_view_lose_no_write() {
    require_uffd!();
    let n = 12usize;
    let src = Arc::new(MemSource::new(BS));
    let data: Vec<Vec<u8>> = (0..n as u64).map(|b| common::pattern(b, 3, BS)).collect();
    let blocks: Vec<(u64, &[u8])> = data
        .iter()
        .enumerate()
        .map(|(i, d)| (i as u64, &d[..]))
        .collect();
    src.write(&blocks).unwrap();
    let mut image: Vec<u8> = data.concat();
    let mut m = Mapping::new(src.clone(), n * BS, Options::default()).unwrap();
    let chunk = 3 * BS / 2 + 4096;
    let written: Vec<Vec<usize>> = {
        let mut v = m.bytes_mut(0..n * BS).unwrap();
        let image = &image;
        std::thread::scope(|s| {
            let hs: Vec<_> = v
                .chunks_mut(chunk)
                .enumerate()
                .map(|(i, c)| {
                    s.spawn(move || {
                        let base = i * chunk;
                        let mut rng = Rng(i as u64 * 7919 + 1);
                        let mut pos = Vec::new();
                        for _ in 0..64 {
                            let off = rng.below(c.len() as u64) as usize;
                            // Read first (installs the block clean), then maybe write.
                            assert_eq!(c[off], image[base + off], "chunk {i} offset {off}");
                            if rng.below(4) == 0 {
                                c[off] = c[off].wrapping_add(1);
                                pos.push(base + off);
                            }
                        }
                        pos
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let mut want_dirty: Vec<u64> = written.iter().flatten().map(|&p| (p / BS) as u64).collect();
    want_dirty.sort_unstable();
    want_dirty.dedup();
    for &p in written.iter().flatten() {
        image[p] = image[p].wrapping_add(1);
    }
    assert_eq!(m.dirty_blocks(), want_dirty);
    let at = m.commit().unwrap();
    assert_eq!(src.stored_in(at), want_dirty);
    for b in 0..n {
        assert!(
            src.read(at, b as u64).unwrap() == image[b * BS..(b + 1) * BS],
            "block {b}"
        );
    }
    let st = m.stats();
    eprintln!("{st:?}");
}
