//! Crash safety, proven by fault injection (redb's approach): a workload
//! runs with a write observer that records every change to Data.fs; from
//! that record we rebuild the file a crash could have left at every byte of
//! every write, at every sync point and at every truncation, and check that
//! a read-write open recovers it exactly as ZODB specifies: every finished
//! transaction intact, the half-written one gone into `Data.fs.tr0`,
//! nothing before it touched, and a second open a no-op.
//!
//! How the images are made and what each must recover to is in
//! `crash_util`; the same images are compared with Python ZODB's recovery
//! in `tests/tests/fs_crash.rs`.

mod crash_util;

use crash_util::{
    Event, Image, Kind, Op, Recording, Sampling, check_all, check_recovery, meta, noise, pickle,
};
use filestorage::Durability;
use filestorage::format::TxnHeader;
use zodb_core::Oid;

/// The mixed workload's transactions are cut after every byte, except the
/// one holding a 20 KiB object: its writes are cut at 64 bytes at each end,
/// around every field and record boundary, and at 32 random offsets.
const MIXED: Sampling = Sampling {
    every_byte_up_to: 8 << 10,
    edge: 64,
    random: 32,
    neighbours: true,
    seed: 0x0c0f_fee0_dead_beef,
};

fn mixed() -> (tempfile::TempDir, Recording) {
    let dir = crash_util::scratch_dir();
    let rec = crash_util::mixed_workload(dir.path());
    (dir, rec)
}

/// Counts of images by class, for the assertions that the sweep is as wide
/// as it claims and for the report.
#[derive(Debug, Default)]
struct Census {
    boundaries: usize,
    torn: usize,
    sync_points: usize,
    tails_saved: usize,
    tails_dropped: usize,
}

fn census(rec: &Recording, images: &[Image]) -> Census {
    let mut c = Census::default();
    for img in images {
        match img.kind {
            Kind::Prefix { bytes: 0, .. } => c.boundaries += 1,
            Kind::Prefix { .. } => c.torn += 1,
            Kind::ZeroTail { .. } => {}
        }
        c.sync_points += usize::from(img.sync_event.is_some());
        let want = rec.expected(img);
        if want.saved {
            c.tails_saved += 1;
        } else if !want.tail.is_empty() {
            c.tails_dropped += 1;
        }
    }
    c
}

/// ZODB's write protocol, as the observer sees it: a vote appends the whole
/// transaction with status `c` and does not sync; `finish` writes the one
/// status byte, syncs, and only then reports the commit; an abort after the
/// vote truncates back; nothing else ever rewrites a byte before the end.
#[test]
fn commits_follow_zodbs_byte_and_fsync_order() {
    let (_dir, rec) = mixed();
    let mut end = rec.initial.len() as u64;
    for v in &rec.votes {
        assert_eq!(v.pos, end, "vote of {} appends at the end", v.tid);
        let writes = &rec.events[v.events.clone()];
        let Some(Event::Write { pos, data }) = writes.first() else {
            panic!("vote of {} starts with {writes:?}", v.tid)
        };
        assert_eq!((*pos, data.get(16)), (v.pos, Some(&b'c')), "voted as 'c'");
        assert!(
            writes
                .iter()
                .all(|e| matches!(e, Event::Write { pos, .. } if *pos >= v.pos)),
            "a vote only writes after the end: {writes:?}"
        );
        let next = &rec.events[v.events.end..];
        if v.finished {
            let t = rec.txns.iter().find(|t| t.tid == v.tid).expect("model");
            assert_eq!(t.flip_event, v.events.end, "finish starts with the flip");
            assert_eq!(
                next[..3],
                [
                    Event::Write {
                        pos: v.pos + 16,
                        data: vec![t.status]
                    },
                    Event::Sync,
                    Event::Committed(v.tid)
                ],
                "finish: flip, fsync, then visible"
            );
            end = t.end;
        } else {
            assert_eq!(next[0], Event::SetLen(v.pos), "abort truncates the vote");
        }
    }
    assert_eq!(rec.votes.len(), rec.txns.len() + 1, "one vote was aborted");
    let syncs = rec.events.iter().filter(|e| **e == Event::Sync).count();
    assert_eq!(syncs, rec.txns.len(), "one fsync per commit, none at vote");
}

/// Every prefix of the mixed workload's write stream (every byte of its
/// small transactions, a sample of the big one's) recovers to exactly the
/// transactions whose status flip it holds, and every finished transaction
/// is durable as of the sync before `finish` returned.
#[test]
fn every_prefix_of_the_write_stream_recovers() {
    let (_dir, rec) = mixed();
    let images = crash_util::prefix_images(&rec, MIXED);
    let outcomes = check_all(&rec, &images);
    let sync_points: Vec<(usize, usize)> = images
        .iter()
        .zip(&outcomes)
        .filter_map(|(img, o)| Some((img.sync_event?, o.txns)))
        .collect();
    crash_util::assert_durable(&rec, &sync_points);
    // A transaction whose finish had not returned is visible only in the
    // window ZODB has too: its status byte (the commit point) is written,
    // the fsync has not returned.
    for img in &images {
        if img.visible > img.committed {
            let t = &rec.txns[img.visible - 1];
            assert!(
                img.visible == img.committed + 1
                    && matches!(img.kind, Kind::Prefix { event, bytes: 0 }
                        if t.flip_event < event && event <= t.committed_event),
                "{}: {} transactions visible, {} finished",
                img.label,
                img.visible,
                img.committed
            );
        }
    }

    let c = census(&rec, &images);
    eprintln!(
        "{} prefix images: {} torn inside a write, {} at write boundaries ({} sync points); \
         {} tails saved to .tr0, {} short tails dropped",
        images.len(),
        c.torn,
        c.boundaries,
        c.sync_points,
        c.tails_saved,
        c.tails_dropped
    );
    // The sweep covers what it claims: every byte of the small writes,
    // every commit's sync point, the abort, and both kinds of tail.
    let small_bytes: usize = rec
        .votes
        .iter()
        .flat_map(|v| &rec.events[v.events.clone()])
        .filter_map(|e| match e {
            Event::Write { data, .. } if data.len() < 8 << 10 => Some(data.len() - 1),
            _ => None,
        })
        .sum();
    assert!(c.torn > small_bytes, "{} torn images", c.torn);
    assert_eq!(c.sync_points, rec.txns.len());
    assert!(c.tails_saved > 0 && c.tails_dropped > 0);
    for n in 0..=rec.txns.len() {
        assert!(
            images.iter().any(|i| i.visible == n),
            "no image recovers to {n} transactions"
        );
    }
}

/// The file's size reached the disk but the data written since the last
/// sync did not (it reads as zeros): the zeros are junk at the end, cut
/// off like a torn transaction, and every synced transaction is intact.
#[test]
fn zero_filled_tails_recover() {
    let (_dir, rec) = mixed();
    let images = crash_util::zero_tail_images(&rec);
    check_all(&rec, &images);
    let c = census(&rec, &images);
    eprintln!(
        "{} zero-tail images: {} saved to .tr0, {} dropped",
        images.len(),
        c.tails_saved,
        c.tails_dropped
    );
    assert!(images.len() >= 4 * rec.txns.len());
    assert!(c.tails_saved > 0 && c.tails_dropped > 0);
}

/// A transaction whose records exceed 32 MiB is collected in `Data.fs.tmp`
/// and copied into Data.fs in 8 MiB writes at vote: cut inside its header,
/// at both ends of every chunk, at its record boundaries and inside its
/// trailer, it recovers like any other. Images are made and checked one at
/// a time (up to 33 MiB each), and sampled sparsely to keep this test at
/// a few seconds; the dense sweep is the mixed workload's.
#[test]
fn a_spilled_transaction_recovers_at_every_chunk() {
    let dir = crash_util::scratch_dir();
    let rec = crash_util::record(dir.path(), |d| {
        d.commit(
            meta("a", "before", b""),
            &[Op::Store(Oid(0), pickle("root"))],
        );
        d.commit(
            meta("b", "spills to Data.fs.tmp", crash_util::EXT),
            &[
                Op::Store(Oid(1), noise((32 << 20) + 4096, 7)),
                Op::Store(Oid(2), pickle("after the big one")),
            ],
        );
    });
    let big = &rec.votes[1];
    assert!(
        big.events.len() >= 4,
        "the 32 MiB transaction must be written from Data.fs.tmp in chunks: {:?}",
        big.events
    );
    let s = Sampling {
        every_byte_up_to: 0,
        edge: 1,
        random: 1,
        neighbours: false,
        seed: 7,
    };
    let scratch = crash_util::scratch_dir();
    let (mut count, mut sync_points) = (0, Vec::new());
    crash_util::for_each_prefix(&rec, s, |img| {
        let o = check_recovery(&rec, &img, scratch.path());
        if let Some(sync) = img.sync_event {
            sync_points.push((sync, o.txns));
        }
        count += 1;
    });
    crash_util::assert_durable(&rec, &sync_points);
    eprintln!("{count} images of a spilled transaction");
    assert!(count > 30);
}

/// A crash in the first transaction of a new file, leaving fewer bytes
/// than a header (dropped, no `.tr0`, as ZODB does) or exactly one header
/// (saved): the file goes back to its magic.
#[test]
fn a_crash_in_the_first_transaction_leaves_the_magic() {
    let (_dir, rec) = mixed();
    let first_vote = rec.votes[0].events.start;
    let images: Vec<Image> = crash_util::prefix_images(&rec, MIXED)
        .into_iter()
        .filter(|i| {
            matches!(i.kind, Kind::Prefix { event, bytes }
                if event == first_vote && [1, 22, 23].contains(&bytes))
        })
        .collect();
    assert_eq!(images.len(), 3);
    let scratch = crash_util::scratch_dir();
    for img in &images {
        let o = check_recovery(&rec, img, scratch.path());
        assert_eq!(o.data_fs, b"FS30", "{}", img.label);
        assert_eq!(o.trs.len(), usize::from(img.bytes.len() == 4 + 23));
    }
}

/// Regression: a vote torn right after an object whose data is a whole
/// Data.fs. The file then ends with a well-formed committed transaction,
/// later than the torn one, which the engine took for evidence of damage
/// in the middle of the file and refused to open (`truncated: needs N
/// bytes`), where ZODB cuts the tail. Recovery now asks for a chain of
/// transactions back to the torn one.
#[test]
fn a_vote_torn_after_a_stored_database_file_recovers() {
    let (_dir, rec) = mixed();
    let img = crash_util::stored_database_image(&rec);
    // The trap is set: the last 8 bytes are the length of a well-formed
    // transaction that starts inside the torn one and is later than it.
    let b = &img.bytes;
    let rtl = u64::from_be_bytes(b[b.len() - 8..].try_into().expect("8 bytes"));
    let inner = b.len() - 8 - rtl as usize;
    let h = TxnHeader::decode(b[inner..inner + 23].try_into().expect("23 bytes"));
    let torn = rec.expected(&img).end as usize;
    let torn_tid = TxnHeader::decode(b[torn..torn + 23].try_into().expect("23 bytes")).tid;
    assert!(inner > torn && h.tlen == rtl && h.status == b' ' && h.tid > torn_tid);
    let scratch = crash_util::scratch_dir();
    let o = check_recovery(&rec, &img, scratch.path());
    assert_eq!(o.trs.len(), 1, "{}", img.label);
}

/// With `Durability::Deferred` (bulk copies and imports) `finish` does not
/// fsync, so its `Committed` event is no durability point: a crash may lose
/// the transactions since the last `sync()`. What must hold still: every
/// image recovers to exactly the transactions whose status flip it holds,
/// never a partial one; and the file as of each `sync()` holds every
/// transaction finished before it.
#[test]
fn deferred_commits_are_atomic_and_durable_from_the_next_sync() {
    let dir = crash_util::scratch_dir();
    let rec = crash_util::record_with(dir.path(), Durability::Deferred, |d| {
        for i in 0..3 {
            d.commit(
                meta("bulk", "copied", b""),
                &[Op::Store(Oid(i), pickle(&format!("copied {i}")))],
            );
        }
        d.sync();
        d.commit(
            meta("bulk", "copied after the sync", b""),
            &[Op::Store(Oid(0), pickle("again"))],
        );
        d.sync();
    });
    let syncs: Vec<usize> = (0..rec.events.len())
        .filter(|&i| rec.events[i] == Event::Sync)
        .collect();
    assert_eq!(syncs.len(), 2, "one fsync per sync(), none per commit");
    let images = crash_util::prefix_images(&rec, MIXED);
    let outcomes = check_all(&rec, &images);
    let mut at_syncs = Vec::new();
    for (img, o) in images.iter().zip(&outcomes) {
        if let Some(sync) = img.sync_event {
            assert_eq!(o.txns, rec.committed_before(sync), "{}", img.label);
            at_syncs.push(sync);
        }
    }
    assert_eq!(at_syncs, syncs, "every sync() is a sync point of the sweep");
    eprintln!("{} images of deferred commits", images.len());
}
