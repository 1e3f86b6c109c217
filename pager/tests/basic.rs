//! First-touch loading, holes, typed views.

mod common;

use common::{BS, pattern, setup};
use pager::{Error, Options};

#[test]
fn first_touch_loads_the_whole_block_and_holes_are_zero() {
    require_uffd!();
    let (src, m) = setup(8, Options::default());
    let at = src
        .write(&[(1, &pattern(1, 1, BS)), (3, &pattern(3, 1, BS)[..100])])
        .unwrap();
    // The mapping was created before the write: it still shows snapshot 0.
    assert_eq!(m.bytes(BS..BS + 16).unwrap(), &[0u8; 16]);
    drop(m);
    let (_, m) = (
        src.clone(),
        pager::Mapping::new(src.clone(), 8 * BS, Options::default()).unwrap(),
    );
    assert_eq!(m.snapshot(), at);
    let loads0 = src.loads();
    // One byte in the middle of block 1 loads block 1 entirely.
    assert_eq!(
        m.bytes(BS + 12345..BS + 12346).unwrap()[0],
        pattern(1, 1, BS)[12345]
    );
    assert_eq!(src.loads(), loads0 + 1);
    assert_eq!(m.bytes(BS..2 * BS).unwrap(), &pattern(1, 1, BS)[..]);
    assert_eq!(
        src.loads(),
        loads0 + 1,
        "rest of the block was loaded by the first touch"
    );
    // Short stored data is zero padded; never-written blocks are zeros.
    let b3 = m.bytes(3 * BS..4 * BS).unwrap();
    assert_eq!(&b3[..100], &pattern(3, 1, BS)[..100]);
    assert!(b3[100..].iter().all(|&x| x == 0));
    assert!(m.bytes(5 * BS..6 * BS).unwrap().iter().all(|&x| x == 0));
    assert_eq!(m.resident_blocks(), 3);
    assert!(m.dirty_blocks().is_empty(), "reads dirty nothing");
    let st = m.stats();
    assert_eq!(st.loads, 3);
    if m.uses_move() {
        assert_eq!(st.moves, 3);
    }
}

#[test]
fn typed_views_check_bounds_and_alignment() {
    require_uffd!();
    let (_src, mut m) = setup(2, Options::default());
    assert!(matches!(
        m.slice::<u64>(3, 1),
        Err(Error::Misaligned { align: 8, .. })
    ));
    assert!(matches!(
        m.bytes(0..2 * BS + 1),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        m.slice::<f64>(2 * BS - 8, 2),
        Err(Error::OutOfBounds { .. })
    ));
    {
        let mut v = m.slice_mut::<f64>(BS - 16, 4).unwrap();
        v.copy_from_slice(&[1.0, 2.0, 3.0, 4.0]);
    }
    assert_eq!(m.slice::<f64>(BS - 16, 4).unwrap(), &[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(
        m.dirty_blocks(),
        vec![0, 1],
        "a write spanning two blocks dirties both"
    );
}

#[test]
fn many_threads_first_touch_the_same_and_different_blocks() {
    require_uffd!();
    let n = 16;
    let src = std::sync::Arc::new(pager::MemSource::new(BS));
    let data: Vec<Vec<u8>> = (0..n).map(|b| pattern(b as u64, 7, BS)).collect();
    let blocks: Vec<(u64, &[u8])> = data
        .iter()
        .enumerate()
        .map(|(i, d)| (i as u64, &d[..]))
        .collect();
    src.write(&blocks).unwrap();
    let m = pager::Mapping::new(src.clone(), n * BS, Options::default()).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let m = &m;
            let data = &data;
            s.spawn(move || {
                let mut rng = common::Rng(t + 1);
                for _ in 0..200 {
                    let b = rng.below(n as u64) as usize;
                    let off = rng.below(BS as u64) as usize;
                    assert_eq!(
                        m.bytes(b * BS + off..b * BS + off + 1).unwrap()[0],
                        data[b][off]
                    );
                }
            });
        }
    });
    assert_eq!(src.loads(), n as u64, "each block loaded exactly once");
}

/// A source whose block 2 cannot be loaded.
struct Failing(pager::MemSource);

impl pager::BlockSource for Failing {
    fn block_size(&self) -> usize {
        self.0.block_size()
    }
    fn head(&self) -> Result<pager::Snapshot, pager::SourceError> {
        self.0.head()
    }
    fn load(
        &self,
        at: pager::Snapshot,
        block: u64,
        buf: &mut [u8],
    ) -> Result<(), pager::SourceError> {
        if block == 2 {
            return Err(pager::SourceError::Backend {
                what: "reading block 2".into(),
                source: "disk on fire".into(),
            });
        }
        self.0.load(at, block, buf)
    }
    fn store(
        &self,
        base: pager::Snapshot,
        blocks: &[pager::DirtyBlock<'_>],
    ) -> Result<pager::Snapshot, pager::SourceError> {
        self.0.store(base, blocks)
    }
    fn changes(&self, since: pager::Snapshot) -> Result<pager::Changes, pager::SourceError> {
        self.0.changes(since)
    }
}

#[test]
fn load_errors_are_errors_on_prefetch_and_sigbus_on_a_fault() {
    require_uffd!();
    let m = pager::Mapping::new(
        Failing(pager::MemSource::new(BS)),
        4 * BS,
        Options::default(),
    )
    .unwrap();
    let err = m.prefetch(0..4 * BS).unwrap_err();
    assert!(matches!(err, Error::Load { block: 2, .. }), "{err}");
    assert!(err.to_string().contains("disk on fire"), "{err}");
    assert_eq!(
        m.resident_blocks(),
        2,
        "blocks before the bad one were loaded"
    );
    if std::env::var_os("PAGER_LOAD_ERROR_CHILD").is_some() {
        std::hint::black_box(m.bytes(2 * BS..2 * BS + 1).unwrap()[0]);
        unreachable!("read an unloadable block");
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "load_errors_are_errors_on_prefetch_and_sigbus_on_a_fault",
            "--nocapture",
        ])
        .env("PAGER_LOAD_ERROR_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "child survived:\n{stderr}");
    assert!(
        stderr.contains("cannot serve a page fault on block 2") && stderr.contains("disk on fire"),
        "stderr:\n{stderr}"
    );
}

/// A file of 32 TiB: only address space is reserved; blocks anywhere in it
/// load on touch and commit like any other.
#[test]
fn huge_sparse_mapping_reserves_only_address_space() {
    require_uffd!();
    let len = 1usize << 45;
    let (src, mut m) = common::setup(len / BS, Options::with_budget(8 * BS));
    assert_eq!(m.len(), len);
    let last = len - BS;
    m.bytes_mut(last..last + 3).unwrap().copy_from_slice(b"end");
    m.bytes_mut(0..5).unwrap().copy_from_slice(b"start");
    assert_eq!(m.dirty_blocks(), vec![0, (last / BS) as u64]);
    let at = m.commit().unwrap();
    assert_eq!(&src.read(at, (last / BS) as u64).unwrap()[..3], b"end");
    assert!(common::rss_in(&m.address_ranges()) <= 8 * BS);
}
