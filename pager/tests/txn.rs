//! Dirty tracking, commit, abort, snapshot isolation and conflicts, on both
//! install paths (UFFDIO_MOVE where the kernel has it, and the UFFDIO_COPY
//! fallback of older kernels).

mod common;

use std::sync::Arc;

use common::{BS, pattern};
use pager::{Error, InstallMode, Mapping, MemSource, Options};

fn both_modes(test: impl Fn(Options)) {
    for install in [InstallMode::Auto, InstallMode::Copy] {
        eprintln!("install mode {install:?}");
        test(Options {
            install,
            ..Options::default()
        });
    }
}

fn filled_source(nblocks: u64) -> Arc<MemSource> {
    let src = Arc::new(MemSource::new(BS));
    let data: Vec<Vec<u8>> = (0..nblocks).map(|b| pattern(b, 0, BS)).collect();
    let blocks: Vec<(u64, &[u8])> = data
        .iter()
        .enumerate()
        .map(|(i, d)| (i as u64, &d[..]))
        .collect();
    src.write(&blocks).unwrap();
    src
}

#[test]
fn dirty_tracking_is_exact_per_block() {
    require_uffd!();
    both_modes(|opts| {
        let src = filled_source(8);
        let mut m = Mapping::new(src.clone(), 8 * BS, opts).unwrap();
        // Reads through shared views and through a mutable view dirty nothing.
        std::hint::black_box(m.bytes(0..8 * BS).unwrap().iter().fold(0u8, |a, &b| a ^ b));
        {
            let v = m.bytes_mut(0..8 * BS).unwrap();
            assert_eq!(v[5 * BS + 7], pattern(5, 0, BS)[7]);
            assert_eq!(std::hint::black_box(v[7 * BS]), pattern(7, 0, BS)[0]);
        }
        assert_eq!(m.dirty_blocks(), Vec::<u64>::new());
        // One byte in blocks 1 and 6, a word straddling 3/4.
        {
            let mut v = m.bytes_mut(0..8 * BS).unwrap();
            v[BS + 10] = 1;
            v[6 * BS + BS - 1] = 2;
            v[4 * BS - 2..4 * BS + 2].copy_from_slice(&[9, 9, 9, 9]);
        }
        assert_eq!(m.dirty_blocks(), vec![1, 3, 4, 6]);
        // Writing again to a dirty block changes nothing; a write to an
        // untouched (empty) block dirties it directly.
        let mut m2 = Mapping::new(src.clone(), 8 * BS, opts_clone(&m)).unwrap();
        m2.bytes_mut(7 * BS..7 * BS + 1).unwrap()[0] = 5;
        assert_eq!(m2.dirty_blocks(), vec![7]);
        assert_eq!(
            m2.bytes(7 * BS + 1..7 * BS + 2).unwrap()[0],
            pattern(7, 0, BS)[1],
            "loaded before the write"
        );
    });
}

fn opts_clone<S: pager::BlockSource>(m: &Mapping<S>) -> Options {
    Options {
        install: if m.uses_move() {
            InstallMode::Auto
        } else {
            InstallMode::Copy
        },
        ..Options::default()
    }
}

#[test]
#[allow(
    clippy::host_endian_bytes,
    reason = "typed views are in host byte order, like numpy's native dtypes"
)]
fn commit_stores_exactly_the_dirty_blocks_then_rearms() {
    require_uffd!();
    both_modes(|opts| {
        let src = filled_source(8);
        let mut m = Mapping::new(src.clone(), 8 * BS, opts.clone()).unwrap();
        std::hint::black_box(m.bytes(0..8 * BS).unwrap()[BS]); // block 1 resident clean
        m.slice_mut::<u64>(2 * BS, 1).unwrap()[0] = 42;
        m.slice_mut::<u64>(5 * BS + 8, 1).unwrap()[0] = 43;
        let at = m.commit().unwrap();
        assert_eq!(src.stored_in(at), vec![2, 5]);
        assert_eq!(m.snapshot(), at);
        assert!(m.dirty_blocks().is_empty());
        let mut want2 = pattern(2, 0, BS);
        want2[..8].copy_from_slice(&42u64.to_ne_bytes());
        assert_eq!(src.read(at, 2).unwrap(), want2);
        assert_eq!(src.read(at, 5).unwrap()[8..16], 43u64.to_ne_bytes());
        // Re-armed: the next write to block 2 is tracked again, and only it
        // is stored by the next commit.
        m.slice_mut::<u64>(2 * BS + 16, 1).unwrap()[0] = 44;
        assert_eq!(m.dirty_blocks(), vec![2]);
        let at2 = m.commit().unwrap();
        assert_eq!(src.stored_in(at2), vec![2]);
        assert_eq!(src.read(at2, 2).unwrap()[..8], 42u64.to_ne_bytes());
        // A fresh mapping sees everything committed.
        let fresh = Mapping::new(src.clone(), 8 * BS, opts.clone()).unwrap();
        assert_eq!(
            fresh.slice::<u64>(2 * BS, 3).unwrap(),
            &[
                42,
                u64::from_ne_bytes(pattern(2, 0, BS)[8..16].try_into().unwrap()),
                44
            ]
        );
        // Commit without changes stores nothing.
        let head = src.head_snapshot();
        assert_eq!(m.commit().unwrap(), head);
        assert_eq!(src.head_snapshot(), head);
    });
}

#[test]
fn abort_drops_dirty_blocks_and_refaults_stored_data() {
    require_uffd!();
    both_modes(|opts| {
        let src = filled_source(4);
        let mut m = Mapping::new(src.clone(), 4 * BS, opts).unwrap();
        m.bytes_mut(0..4 * BS).unwrap().fill(0xEE);
        assert_eq!(m.dirty_blocks(), vec![0, 1, 2, 3]);
        let head = src.head_snapshot();
        m.abort().unwrap();
        assert!(m.dirty_blocks().is_empty());
        assert_eq!(src.head_snapshot(), head, "abort stores nothing");
        for b in 0..4 {
            assert_eq!(
                m.bytes(b * BS..(b + 1) * BS).unwrap(),
                &pattern(b as u64, 0, BS)[..]
            );
        }
    });
}

#[test]
fn snapshot_isolation_and_invalidation_at_the_boundary() {
    require_uffd!();
    both_modes(|opts| {
        let src = filled_source(4);
        let mut a = Mapping::new(src.clone(), 4 * BS, opts.clone()).unwrap();
        let mut b = Mapping::new(src.clone(), 4 * BS, opts.clone()).unwrap();
        assert_eq!(a.bytes(0..1).unwrap()[0], pattern(0, 0, BS)[0]); // a holds block 0 clean
        b.bytes_mut(0..BS).unwrap().fill(7);
        b.bytes_mut(2 * BS..3 * BS).unwrap().fill(8);
        let at = b.commit().unwrap();
        // a still sees its snapshot, resident or not.
        assert_eq!(a.bytes(0..BS).unwrap(), &pattern(0, 0, BS)[..]);
        assert_eq!(a.bytes(2 * BS..3 * BS).unwrap(), &pattern(2, 0, BS)[..]);
        let inval0 = a.stats().invalidations;
        assert_eq!(a.sync().unwrap(), at);
        assert_eq!(
            a.stats().invalidations - inval0,
            2,
            "both changed clean blocks dropped"
        );
        assert!(a.bytes(0..BS).unwrap().iter().all(|&x| x == 7));
        assert!(a.bytes(2 * BS..3 * BS).unwrap().iter().all(|&x| x == 8));
        assert_eq!(
            a.bytes(BS..2 * BS).unwrap(),
            &pattern(1, 0, BS)[..],
            "unchanged block kept"
        );
        // Committing from a also moves it past other commits.
        std::hint::black_box(a.bytes(3 * BS..3 * BS + 1).unwrap()[0]); // a holds block 3 clean
        b.bytes_mut(3 * BS..4 * BS).unwrap().fill(9);
        b.commit().unwrap();
        a.bytes_mut(BS..BS + 1).unwrap()[0] = 1;
        let at_a = a.commit().unwrap();
        assert_eq!(src.stored_in(at_a), vec![1]);
        assert!(a.bytes(3 * BS..4 * BS).unwrap().iter().all(|&x| x == 9));
        assert_eq!(a.bytes(BS..BS + 1).unwrap()[0], 1);
        assert!(matches!(
            a.bytes_mut(0..1)
                .map(|mut v| v[0] = 3)
                .and_then(|()| a.sync()),
            Err(Error::DirtyAtSync { dirty: 1 })
        ));
        a.abort().unwrap();
    });
}

#[test]
fn a_dirty_block_changed_elsewhere_is_a_conflict() {
    require_uffd!();
    both_modes(|opts| {
        let src = filled_source(4);
        let mut a = Mapping::new(src.clone(), 4 * BS, opts.clone()).unwrap();
        let mut b = Mapping::new(src.clone(), 4 * BS, opts.clone()).unwrap();
        let base = a.snapshot();
        a.bytes_mut(BS..BS + 4).unwrap().copy_from_slice(b"aaaa");
        a.bytes_mut(2 * BS..2 * BS + 4)
            .unwrap()
            .copy_from_slice(b"aaaa");
        b.bytes_mut(BS..BS + 4).unwrap().copy_from_slice(b"bbbb");
        let at = b.commit().unwrap();
        match a.commit() {
            Err(Error::Conflict {
                block,
                base: got_base,
                changed_at,
            }) => {
                assert_eq!((block, got_base, changed_at), (1, base, at));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(
            a.dirty_blocks(),
            vec![1, 2],
            "dirty blocks kept after a conflict"
        );
        assert_eq!(src.head_snapshot(), at, "nothing stored");
        a.abort().unwrap();
        assert_eq!(a.bytes(BS..BS + 4).unwrap(), b"bbbb");
        assert_eq!(
            a.bytes(2 * BS..2 * BS + 4).unwrap(),
            &pattern(2, 0, BS)[..4]
        );
        // Retry succeeds.
        a.bytes_mut(2 * BS..2 * BS + 4)
            .unwrap()
            .copy_from_slice(b"aaaa");
        a.commit().unwrap();
    });
}
