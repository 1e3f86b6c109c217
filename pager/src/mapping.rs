//! A whole file mapped into memory: the reserved address range, the pool of
//! slots blocks are loaded through, the fault handler and the transaction
//! boundaries (commit, abort, sync). The rules every `unsafe` block here
//! relies on are stated once in `docs/pager-design.md`; the short form:
//!
//! * **I1 (ownership)** the region and the pool are private anonymous
//!   mappings created and unmapped only by this module; nothing outside the
//!   pager writes them except through views handed out by [`Mapping`].
//! * **I2 (state lock)** page-table changes of the region (install, evict,
//!   write-protect) happen with the state mutex held, after the bookkeeping
//!   (`Table`/`Pool`) has been consulted, and the bookkeeping is updated
//!   before the ioctl that wakes a faulting thread. A pool slot is touched
//!   only by the loader that took it under the mutex, until it gives it back
//!   under the mutex.
//! * **I3 (content)** while `&Mapping` is borrowed a byte of the region reads
//!   as the source at the mapping's snapshot, or as the last value written to
//!   it through a [`ViewMut`] in this transaction; eviction preserves that
//!   (clean blocks only, refaulted from the same snapshot). The content may
//!   change otherwise only in `commit`/`abort`/`sync`, which take
//!   `&mut Mapping`, so no view is alive then.
//! * **I4 (no lost writes)** a write can reach a block only through a live
//!   [`ViewMut`]; while one is alive (`mut_views > 0`) clean blocks are
//!   installed write-protected atomically (`UFFDIO_COPY_MODE_WP`), otherwise
//!   by move-then-protect before the faulting thread is woken.

use std::collections::HashSet;
use std::fmt;
use std::ops::{Deref, DerefMut, Range};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::source::{BlockSource, DirtyBlock, Snapshot, SourceError};
use crate::table::{BlockState, Pool, Table};
use crate::uffd::{self, Fault, Features, Msg, Uffd};

/// Size of a PMD-mapped transparent huge page on x86-64 and arm64 (4 KiB
/// base pages): blocks of a multiple of this size can be mapped huge.
pub const HUGE_PAGE: usize = 2 << 20;
const PAGE: usize = 4096;

/// How blocks are put into place on a fault.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum InstallMode {
    /// `UFFDIO_MOVE` of a filled pool slot (huge pages kept) where the kernel
    /// has it (Linux ≥ 6.8), `UFFDIO_COPY` otherwise.
    #[default]
    Auto,
    /// Always `UFFDIO_COPY` (4 KiB pages): what kernels before 6.8 get.
    /// Exists to test and measure that path on newer kernels.
    Copy,
}

/// Tunables of a [`Mapping`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Bytes of blocks the mapping may keep resident. Clean blocks beyond it
    /// are evicted least-recently-faulted first; dirty blocks cannot be, so a
    /// transaction may dirty at most `budget - block_size` bytes. The pool
    /// holds up to `pool_keep` more blocks.
    pub budget: usize,
    /// Populated spare slots the pool keeps so loads skip the kernel's
    /// zeroing of fresh pages (each costs one block of memory).
    pub pool_keep: usize,
    /// How long the handler thread polls for the next fault, after serving
    /// one, before it sleeps. Polling saves the wake-up of the handler (a
    /// cross-core wake costs 10–20 µs on the reference machine) at the price
    /// of a busy core for that long after each burst of faults. The default
    /// (50 µs) catches a writer dirtying block after block: its first
    /// writes took 9.7–11.5 µs instead of 13–21 µs, first touch unchanged
    /// (docs/pager-design.md §10).
    pub handler_spin: Duration,
    /// Install strategy.
    pub install: InstallMode,
    /// Blocks the handler loads ahead of a sequential reader (a fault on a
    /// block whose predecessor is resident), while no other fault waits, so
    /// that loading overlaps the reader's work. Capped at a quarter of the
    /// budget; 0 disables it.
    pub readahead: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            budget: 1 << 30,
            pool_keep: 2,
            handler_spin: Duration::from_micros(50),
            install: InstallMode::Auto,
            readahead: 4,
        }
    }
}

impl Options {
    /// Default options with a memory budget of `bytes`.
    pub fn with_budget(bytes: usize) -> Self {
        Options {
            budget: bytes,
            ..Options::default()
        }
    }
}

/// Counters of what a mapping did, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Fault messages served by the handler.
    pub faults: u64,
    /// Blocks loaded from the source and installed.
    pub loads: u64,
    /// Installs done with `UFFDIO_MOVE`.
    pub moves: u64,
    /// Installs done with `UFFDIO_COPY`.
    pub copies: u64,
    /// Clean blocks dropped to respect the budget.
    pub evictions: u64,
    /// Blocks that became dirty.
    pub dirtied: u64,
    /// Clean blocks dropped because another transaction changed them.
    pub invalidations: u64,
    /// Blocks installed by readahead rather than for a waiting fault.
    pub readaheads: u64,
    /// Nanoseconds spent in `BlockSource::load` (filling slots).
    pub load_ns: u64,
    /// Nanoseconds spent placing loaded blocks (move/copy + protect + wake).
    pub place_ns: u64,
}

#[derive(Debug, Default)]
struct Counters {
    faults: AtomicU64,
    loads: AtomicU64,
    moves: AtomicU64,
    copies: AtomicU64,
    evictions: AtomicU64,
    dirtied: AtomicU64,
    invalidations: AtomicU64,
    readaheads: AtomicU64,
    load_ns: AtomicU64,
    place_ns: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn lock_plan(plan: &Mutex<Range<u64>>) -> MutexGuard<'_, Range<u64>> {
    plan.lock().unwrap_or_else(|e| e.into_inner())
}

fn add_ns(c: &AtomicU64, since: Instant) {
    c.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

/// Plain-old-data element types a typed view may be made of.
///
/// # Safety
/// Every bit pattern must be a valid value, the type must have no padding
/// and no drop glue, and its alignment must divide 4096 (views start at page
/// aligned addresses plus an offset checked against the alignment).
pub unsafe trait Element: Copy + Send + Sync + 'static {}

macro_rules! elements {
    ($($t:ty),*) => {$(
        // SAFETY: a primitive integer/float: any bits are a value, no padding,
        // alignment ≤ 16.
        unsafe impl Element for $t {}
    )*};
}
elements!(
    u8, i8, u16, i16, u32, i32, u64, i64, u128, i128, usize, isize, f32, f64
);

/// An owned anonymous mapping (invariant I1).
#[derive(Debug)]
struct Region {
    addr: usize,
    len: usize,
}

impl Region {
    /// Reserve `len` bytes aligned to `align` (a power of two), readable and
    /// writable, without committing memory.
    fn reserve(len: usize, align: usize) -> Result<Region, Error> {
        let total = len.checked_add(align).ok_or_else(|| Error::Config {
            what: format!("mapping of {len} bytes overflows the address space"),
        })?;
        // SAFETY: a new private anonymous mapping at an address the kernel
        // chooses; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::Syscall {
                op: "mmap",
                addr: 0,
                len: total,
                source: std::io::Error::last_os_error(),
            });
        }
        let start = p as usize;
        let aligned = (start + align - 1) & !(align - 1);
        let end = aligned + len;
        // SAFETY: both trimmed pieces lie inside the mapping just created and
        // are not part of the returned region; nothing references them.
        unsafe {
            if aligned > start {
                libc::munmap(start as *mut libc::c_void, aligned - start);
            }
            if start + total > end {
                libc::munmap(end as *mut libc::c_void, start + total - end);
            }
        }
        Ok(Region { addr: aligned, len })
    }

    fn advise(&self, advice: libc::c_int, op: &'static str) -> Result<(), Error> {
        // SAFETY: hugepage/dontfork advice changes no content of this region,
        // which we own (I1).
        let r = unsafe { libc::madvise(self.addr as *mut libc::c_void, self.len, advice) };
        if r != 0 {
            return Err(Error::Syscall {
                op,
                addr: self.addr,
                len: self.len,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the region is ours (I1) and is dropped only after the
        // handler thread has stopped and every view has ended (views borrow
        // the Mapping that owns it).
        unsafe {
            libc::munmap(self.addr as *mut libc::c_void, self.len);
        }
    }
}

/// Bookkeeping under the state mutex (I2).
#[derive(Debug)]
struct State {
    snapshot: Snapshot,
    table: Table,
    pool: Pool,
    /// A fault could not be served in this transaction.
    poisoned: Option<String>,
    /// Blocks being filled by a loader with this lock released.
    loading: HashSet<u64>,
    /// Bumped whenever the snapshot may change, so loads begun before are
    /// recognised as stale.
    generation: u64,
}

/// What the handler thread and the owning [`Mapping`] share.
struct Shared<S> {
    uffd: Uffd,
    region: Region,
    pool: Region,
    block_size: usize,
    budget_blocks: usize,
    use_move: bool,
    source: S,
    state: Mutex<State>,
    /// Signalled when a pool slot is given back.
    slot_freed: Condvar,
    /// Blocks the readahead thread is to load next.
    plan: Mutex<Range<u64>>,
    plan_cv: Condvar,
    /// Number of live [`ViewMut`]s (I4).
    mut_views: AtomicUsize,
    counters: Counters,
    stop: AtomicBool,
    /// eventfd the handler polls besides the userfaultfd, to be told to stop.
    stop_fd: OwnedFd,
    spin: Duration,
    /// Effective readahead window in blocks.
    readahead: u64,
    nblocks: u64,
}

impl<S> fmt::Debug for Shared<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("region", &self.region)
            .field("block_size", &self.block_size)
            .field("budget_blocks", &self.budget_blocks)
            .field("use_move", &self.use_move)
            .finish_non_exhaustive()
    }
}

impl<S: BlockSource> Shared<S> {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic with the lock held aborts the process (see `run_handler`
        // and the callers), so a poisoned lock is never observed in practice;
        // recover rather than propagate a second panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn block_addr(&self, block: u64) -> usize {
        self.region.addr + block as usize * self.block_size
    }

    fn slot_addr(&self, slot: usize) -> usize {
        self.pool.addr + slot * self.block_size
    }

    fn block_of(&self, addr: usize) -> Option<u64> {
        let off = addr.checked_sub(self.region.addr)?;
        (off < self.region.len).then(|| (off / self.block_size) as u64)
    }

    fn over_budget(&self, st: &State, block: u64) -> Error {
        Error::OverBudget {
            block,
            dirty: st.table.dirty_count() * self.block_size,
            budget: self.budget_blocks * self.block_size,
        }
    }

    /// Serve one fault message (handler thread). A fault that continues a
    /// sequential run (the previous block is resident) hands the next
    /// `readahead` blocks to the readahead thread.
    fn serve(&self, fault: Fault) {
        bump(&self.counters.faults);
        let Some(block) = self.block_of(fault.address) else {
            // Only the region is registered for missing faults and the pool
            // is never write-protected, so this cannot happen; waking is the
            // harmless answer.
            let _ = self.uffd.wake(fault.address & !(PAGE - 1), PAGE);
            return;
        };
        let write = fault.flags & (uffd::FLAG_WRITE | uffd::FLAG_WP) != 0;
        let mut st = self.lock();
        if st.loading.contains(&block) {
            // Another loader is filling this block; its wake releases the
            // thread (which faults again if it wants to write).
            return;
        }
        let mut ahead = None;
        let result = match st.table.get(block) {
            None => {
                let (g, r) = self.install(st, block, write);
                st = g;
                if r.is_ok()
                    && self.readahead > 0
                    && block > 0
                    && st.table.get(block - 1).is_some()
                    && self.mut_views.load(Ordering::SeqCst) == 0
                {
                    ahead = Some(block + 1..(block + 1 + self.readahead).min(self.nblocks));
                }
                r
            }
            Some(r) if r.state == BlockState::Clean && write => self.make_dirty(&mut st, block),
            // Already served (another thread faulted on the same block, or
            // the block became dirty meanwhile): let the thread retry.
            Some(_) => self.uffd.wake(self.block_addr(block), self.block_size),
        };
        if let Err(e) = result {
            self.fail_fault(&mut st, block, fault.tid, e);
        }
        drop(st);
        if let Some(range) = ahead {
            *lock_plan(&self.plan) = range;
            self.plan_cv.notify_one();
        }
    }

    /// Install `block` clean for the readahead thread, if it is still empty
    /// and readahead still makes sense (no live `ViewMut`: those installs
    /// would be slow copies). Errors are dropped: a fault on the block will
    /// meet them again and report them.
    fn read_ahead(&self, block: u64) {
        let st = self.lock();
        if st.table.get(block).is_none()
            && !st.loading.contains(&block)
            && st.poisoned.is_none()
            && self.mut_views.load(Ordering::SeqCst) == 0
        {
            let (_st, r) = self.install(st, block, false);
            if r.is_ok() {
                bump(&self.counters.readaheads);
            }
        }
    }

    /// The readahead thread: take blocks from the plan the handler posts and
    /// load them, in parallel with the handler's own loads.
    fn run_reader(&self) {
        loop {
            let block = {
                let mut plan = lock_plan(&self.plan);
                loop {
                    if self.stop.load(Ordering::Acquire) {
                        return;
                    }
                    if let Some(b) = plan.next() {
                        break b;
                    }
                    plan = self.plan_cv.wait(plan).unwrap_or_else(|e| e.into_inner());
                }
            };
            self.read_ahead(block);
        }
    }

    /// A fault that cannot be served: nothing can return an error from a
    /// memory access, and leaving the thread blocked would hang it, so it gets
    /// SIGBUS, as an I/O error on a mapped file does. The transaction is
    /// poisoned so commit refuses it.
    fn fail_fault(&self, st: &mut State, block: u64, tid: u32, e: Error) {
        let what = format!("block {block}: {e}");
        eprintln!("pager: cannot serve a page fault on {what}; raising SIGBUS in thread {tid}");
        st.poisoned.get_or_insert(what);
        if tid == 0 {
            // No UFFD_FEATURE_THREAD_ID: the thread cannot be singled out.
            std::process::abort();
        }
        // SAFETY: tgkill only sends a signal to a thread of this process.
        unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                libc::getpid(),
                tid as libc::pid_t,
                libc::SIGBUS,
            );
        }
    }

    /// Drop clean blocks until one more block fits the budget (blocks being
    /// loaded count as resident).
    fn make_room(&self, st: &mut State, block: u64, dirty: bool) -> Result<(), Error> {
        if dirty && st.table.dirty_count() + 1 > self.budget_blocks {
            return Err(self.over_budget(st, block));
        }
        while st.table.resident_count() + st.loading.len() + 1 > self.budget_blocks {
            let Some(victim) = st.table.lru_victim() else {
                return Err(self.over_budget(st, block));
            };
            self.drop_block(st, victim)?;
            bump(&self.counters.evictions);
        }
        Ok(())
    }

    /// Return a slot taken by `install`. Pages beyond the `pool_keep`
    /// populated spares are given back to the kernel, so the pool never holds
    /// more than it promised (the budget's slack).
    fn give_back(&self, st: &mut State, slot: usize, populated: bool) {
        let keep = !st.pool.full();
        if populated && !keep {
            let addr = self.slot_addr(slot);
            // SAFETY: the slot is still taken by the caller (I2) and nothing
            // references its content; it lies in our pool (I1).
            let r = unsafe {
                libc::madvise(
                    addr as *mut libc::c_void,
                    self.block_size,
                    libc::MADV_DONTNEED,
                )
            };
            st.pool.give_back(slot, r != 0);
        } else {
            st.pool.give_back(slot, populated);
        }
        self.slot_freed.notify_one();
    }

    /// Load `block` through a pool slot and install it: clean
    /// (write-protected) or dirty (writable, for a write fault); wake the
    /// threads waiting on it.
    ///
    /// The state lock is released while the source fills the slot, so the
    /// handler, the readahead thread and `prefetch` callers load in parallel;
    /// the block is recorded as *loading* meanwhile so nobody loads it twice.
    /// If the snapshot changed during the load (commit/abort/sync), the data
    /// is stale: it is dropped and the waiting threads retry.
    fn install<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        block: u64,
        dirty: bool,
    ) -> (MutexGuard<'a, State>, Result<(), Error>) {
        let bs = self.block_size;
        let dst = self.block_addr(block);
        let slot = loop {
            if st.table.get(block).is_some() || st.loading.contains(&block) {
                // Installed, or being installed, by another loader while we
                // waited for a slot; its wake (or this one) releases waiters.
                let r = self.uffd.wake(dst, bs);
                return (st, r);
            }
            if let Err(e) = self.make_room(&mut st, block, dirty) {
                return (st, Err(e));
            }
            if let Some(slot) = st.pool.take() {
                break slot;
            }
            st = self.slot_freed.wait(st).unwrap_or_else(|e| e.into_inner());
        };
        st.loading.insert(block);
        let (at, generation) = (st.snapshot, st.generation);
        drop(st);

        let src = self.slot_addr(slot);
        let t = Instant::now();
        let loaded = {
            // SAFETY: the slot was taken under the state lock and is given
            // back only by this call (I2), so this is the only reference to
            // it; the pool is ours (I1) and registered for write-protect only,
            // so writing it never raises a userfault.
            let buf = unsafe { std::slice::from_raw_parts_mut(src as *mut u8, bs) };
            self.source.load(at, block, buf)
        };
        add_ns(&self.counters.load_ns, t);

        let mut st = self.lock();
        st.loading.remove(&block);
        if let Err(source) = loaded {
            self.give_back(&mut st, slot, true);
            // Threads that faulted while we loaded retry (and fail again).
            let _ = self.uffd.wake(dst, bs);
            return (st, Err(Error::Load { block, at, source }));
        }
        if st.generation != generation {
            self.give_back(&mut st, slot, true);
            let r = self.uffd.wake(dst, bs);
            return (st, r);
        }
        let t = Instant::now();
        // I4: without a live ViewMut nothing can write the block between the
        // move and the write-protect below, and the faulting thread is not
        // woken before both are done.
        let by_move = self.use_move && (dirty || self.mut_views.load(Ordering::SeqCst) == 0);
        let placed = if by_move {
            // SAFETY: dst is an empty block of the region (not in the table,
            // not loading: I2), registered with our uffd; src is the slot we
            // filled, which no reference points into.
            match unsafe { self.uffd.move_pages(dst, src, bs) } {
                Ok(()) => {
                    self.give_back(&mut st, slot, false);
                    bump(&self.counters.moves);
                    if dirty {
                        Ok(())
                    } else {
                        self.uffd.write_protect(dst, bs, true)
                    }
                }
                Err(e) => {
                    self.give_back(&mut st, slot, true);
                    Err(e)
                }
            }
        } else {
            // SAFETY: dst is an empty block of the region registered with our
            // uffd in missing+wp mode; src is the filled slot, readable.
            let r = unsafe { self.uffd.copy(dst, src, bs, !dirty) };
            self.give_back(&mut st, slot, true);
            r.map(|()| bump(&self.counters.copies))
        };
        if let Err(e) = placed {
            // Leave the block empty again, whatever part of it was placed,
            // and let waiters retry.
            let r = self.discard(dst).and_then(|()| self.uffd.wake(dst, bs));
            return (st, r.and(Err(e)));
        }
        let state = if dirty {
            BlockState::Dirty
        } else {
            BlockState::Clean
        };
        st.table.insert(block, state, by_move);
        bump(&self.counters.loads);
        if dirty {
            bump(&self.counters.dirtied);
        }
        let woken = self.uffd.wake(dst, bs);
        add_ns(&self.counters.place_ns, t);
        (st, woken)
    }

    /// First write to a clean block: record it dirty, then lift the write
    /// protection, which wakes the writer.
    fn make_dirty(&self, st: &mut State, block: u64) -> Result<(), Error> {
        if st.table.dirty_count() + 1 > self.budget_blocks {
            return Err(self.over_budget(st, block));
        }
        st.table.mark_dirty(block);
        bump(&self.counters.dirtied);
        self.uffd
            .write_protect(self.block_addr(block), self.block_size, false)
    }

    /// Drop a resident block's pages: move them into the pool if it has room
    /// for one more populated slot (no zeroing when reused), else give them
    /// back to the kernel.
    fn drop_block(&self, st: &mut State, block: u64) -> Result<(), Error> {
        let Some(r) = st.table.remove(block) else {
            return Ok(());
        };
        let addr = self.block_addr(block);
        if r.moved
            && let Some(slot) = st.pool.for_evict()
        {
            st.pool.set_populated(slot);
            // SAFETY: the slot is empty per the pool bookkeeping and registered
            // with our uffd; the block is fully populated (installed whole) and
            // its content is reproducible from the source (clean) or being
            // discarded (abort), so moving it away preserves I3.
            if unsafe {
                self.uffd
                    .move_pages(self.slot_addr(slot), addr, self.block_size)
            }
            .is_ok()
            {
                return Ok(());
            }
        }
        self.discard(addr)
    }

    /// `MADV_DONTNEED` one block: its pages are freed and the next touch
    /// faults.
    fn discard(&self, addr: usize) -> Result<(), Error> {
        // SAFETY: addr is a block of our region (I1); dropping its pages keeps
        // I3 because only clean blocks (reloaded identically) are discarded
        // while views may be alive, and dirty ones only under `&mut Mapping`.
        let r = unsafe {
            libc::madvise(
                addr as *mut libc::c_void,
                self.block_size,
                libc::MADV_DONTNEED,
            )
        };
        if r != 0 {
            return Err(Error::Syscall {
                op: "madvise(MADV_DONTNEED)",
                addr,
                len: self.block_size,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Move to the source's head: drop clean blocks changed since the
    /// snapshot, except those whose newest change is `ours` (just committed
    /// from this mapping's memory).
    fn refresh(&self, st: &mut State, ours: Option<(Snapshot, &[u64])>) -> Result<Snapshot, Error> {
        let since = st.snapshot;
        // Loads in flight started at the old snapshot: make them stale.
        st.generation += 1;
        let changes = self
            .source
            .changes(since)
            .map_err(|source| Error::Changes { since, source })?;
        for c in &changes.blocks {
            if let Some((at, blocks)) = ours
                && c.at == at
                && blocks.binary_search(&c.index).is_ok()
            {
                continue;
            }
            if st.table.get(c.index).is_some() {
                self.drop_block(st, c.index)?;
                bump(&self.counters.invalidations);
            }
        }
        st.snapshot = changes.head;
        Ok(changes.head)
    }

    /// The handler thread's loop: read fault messages and serve them; when
    /// none is pending, poll for `spin`, then sleep in poll.
    fn run_handler(&self) {
        let mut msgs = [Msg::default(); 64];
        let mut idle_since = Instant::now();
        loop {
            match self.uffd.read(&mut msgs) {
                Ok(0) => {
                    if self.stop.load(Ordering::Acquire) {
                        return;
                    }
                    if idle_since.elapsed() < self.spin {
                        std::hint::spin_loop();
                        continue;
                    }
                    self.wait();
                    idle_since = Instant::now();
                }
                Ok(n) => {
                    for m in &msgs[..n] {
                        if let Some(f) = m.fault() {
                            self.serve(f);
                        }
                    }
                    idle_since = Instant::now();
                }
                Err(e) => {
                    eprintln!(
                        "pager: reading the userfaultfd failed: {e}; faulting threads cannot be served"
                    );
                    std::process::abort();
                }
            }
        }
    }

    fn wait(&self) {
        let mut fds = [
            libc::pollfd {
                fd: self.uffd.raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.stop_fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd for the whole call.
        // Errors (EINTR) just return to the read loop.
        unsafe {
            libc::poll(fds.as_mut_ptr(), 2, -1);
        }
    }
}

/// A block-structured file mapped into this process, loaded on first touch.
///
/// Created over a [`BlockSource`] with a length (reserved address space, not
/// memory): reading any byte of a block loads the whole block as of the
/// mapping's snapshot; the first write to a block marks it dirty; [`commit`]
/// stores exactly the dirty blocks, [`abort`] forgets them. Views
/// ([`bytes`], [`slice`], [`slice_mut`]) are ordinary slices, so code that
/// works on `&[T]`/`&mut [T]` (or an `ndarray` view built on them) works on
/// the file, and several threads may touch it at once.
///
/// [`commit`]: Mapping::commit
/// [`abort`]: Mapping::abort
/// [`bytes`]: Mapping::bytes
/// [`slice`]: Mapping::slice
/// [`slice_mut`]: Mapping::slice_mut
pub struct Mapping<S: BlockSource> {
    shared: Arc<Shared<S>>,
    /// The fault handler and the readahead thread.
    threads: Vec<JoinHandle<()>>,
    len: usize,
}

impl<S: BlockSource> fmt::Debug for Mapping<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping")
            .field("addr", &format_args!("{:#x}", self.shared.region.addr))
            .field("len", &self.len)
            .field("block_size", &self.shared.block_size)
            .field("snapshot", &self.snapshot())
            .finish_non_exhaustive()
    }
}

/// Whether and how this process can use userfaultfd: the features the
/// kernel offers, or the error (with how to enable it) that
/// [`Mapping::new`] would fail with.
pub fn probe() -> Result<Features, Error> {
    Uffd::probe()
}

impl<S: BlockSource> Mapping<S> {
    /// Map `len` bytes (rounded up to whole blocks) of the file `source`
    /// serves, as of its newest snapshot. Only address space is reserved; up
    /// to the 47-bit user address space may be asked for.
    pub fn new(source: S, len: usize, options: Options) -> Result<Self, Error> {
        let bs = source.block_size();
        if bs == 0 || !bs.is_multiple_of(PAGE) {
            return Err(Error::Config {
                what: format!("block size {bs} is not a positive multiple of the {PAGE}-byte page"),
            });
        }
        if len == 0 {
            return Err(Error::Config {
                what: "mapping length is 0".into(),
            });
        }
        let budget_blocks = options.budget / bs;
        if budget_blocks == 0 {
            return Err(Error::Config {
                what: format!(
                    "budget {} is smaller than one block of {bs} bytes",
                    options.budget
                ),
            });
        }
        let nblocks = len.div_ceil(bs);
        let rlen = nblocks.checked_mul(bs).ok_or_else(|| Error::Config {
            what: format!("length {len} overflows"),
        })?;
        let snapshot = source.head().map_err(|source| Error::Changes {
            since: Snapshot(0),
            source,
        })?;

        let uffd = Uffd::open(
            uffd::feature::PAGEFAULT_FLAG_WP | uffd::feature::THREAD_ID | uffd::feature::MOVE,
        )?;
        if !uffd.features().has_write_protect() {
            return Err(Error::UffdMissingFeature {
                feature: "write-protect faults (UFFD_FEATURE_PAGEFAULT_FLAG_WP)",
                why: "dirty tracking; anonymous memory needs Linux >= 5.7",
            });
        }
        let align = if bs.is_multiple_of(HUGE_PAGE) {
            HUGE_PAGE
        } else {
            PAGE
        };
        let region = Region::reserve(rlen, align)?;
        let pool = Region::reserve((options.pool_keep + 1) * bs, align)?;
        for r in [&region, &pool] {
            // Pages must stay exclusive to this process for UFFDIO_MOVE, and a
            // forked child must not inherit registered ranges.
            r.advise(libc::MADV_DONTFORK, "madvise(MADV_DONTFORK)")?;
            if align == HUGE_PAGE {
                // Fails (EINVAL) on kernels without transparent huge pages;
                // blocks then use 4 KiB pages, which is slower but correct.
                let _ = r.advise(libc::MADV_HUGEPAGE, "madvise(MADV_HUGEPAGE)");
            }
        }
        // SAFETY: both regions were just created by us and are owned by the
        // Shared that also owns the uffd (I1), so they outlive the
        // registration.
        let ioctls = unsafe {
            uffd.register(
                region.addr,
                region.len,
                uffd::REGISTER_MODE_MISSING | uffd::REGISTER_MODE_WP,
            )?
        };
        // The pool must be registered with the same uffd to be a UFFDIO_MOVE
        // destination (eviction). Write-protect mode only: missing faults in
        // the pool are served by the kernel, so the handler never faults on
        // its own descriptor while filling a slot.
        // SAFETY: as above.
        unsafe { uffd.register(pool.addr, pool.len, uffd::REGISTER_MODE_WP)? };
        let needed = uffd::IOCTL_COPY | uffd::IOCTL_WAKE | uffd::IOCTL_WRITEPROTECT;
        if ioctls & needed != needed {
            return Err(Error::UffdMissingFeature {
                feature: "UFFDIO_COPY/WAKE/WRITEPROTECT on anonymous memory",
                why: "installing blocks and dirty tracking",
            });
        }
        let use_move = options.install == InstallMode::Auto
            && uffd.features().has_move()
            && ioctls & uffd::IOCTL_MOVE != 0;

        // SAFETY: eventfd takes two ints and returns a new fd or -1.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if efd < 0 {
            return Err(Error::Syscall {
                op: "eventfd",
                addr: 0,
                len: 0,
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: eventfd just returned this fd and nothing else owns it.
        let stop_fd = unsafe { OwnedFd::from_raw_fd(efd) };

        let shared = Arc::new(Shared {
            uffd,
            region,
            pool,
            block_size: bs,
            budget_blocks,
            use_move,
            source,
            state: Mutex::new(State {
                snapshot,
                table: Table::default(),
                pool: Pool::new(options.pool_keep),
                poisoned: None,
                loading: HashSet::new(),
                generation: 0,
            }),
            slot_freed: Condvar::new(),
            plan: Mutex::new(0..0),
            plan_cv: Condvar::new(),
            mut_views: AtomicUsize::new(0),
            counters: Counters::default(),
            stop: AtomicBool::new(false),
            stop_fd,
            spin: options.handler_spin,
            readahead: options.readahead.min(budget_blocks / 4) as u64,
            nblocks: nblocks as u64,
        });
        let mut mapping = Mapping {
            shared,
            threads: Vec::with_capacity(2),
            len: rlen,
        };
        // On error `mapping` is dropped, which stops the threads started.
        mapping.spawn("pager-fault", Shared::run_handler)?;
        mapping.spawn("pager-readahead", Shared::run_reader)?;
        Ok(mapping)
    }

    fn spawn(&mut self, name: &str, body: fn(&Shared<S>)) -> Result<(), Error> {
        let shared = Arc::clone(&self.shared);
        let what = name.to_owned();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                if catch_unwind(AssertUnwindSafe(|| body(&shared))).is_err() {
                    // A bug; faulting threads would hang forever otherwise.
                    eprintln!("pager: thread {what} panicked; aborting");
                    std::process::abort();
                }
            })
            .map_err(Error::Thread)?;
        self.threads.push(handle);
        Ok(())
    }

    /// Mapped length in bytes (whole blocks).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: a mapping has at least a block).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The source's block size.
    pub fn block_size(&self) -> usize {
        self.shared.block_size
    }

    /// The snapshot this mapping's clean blocks show.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.lock().snapshot
    }

    /// The block source.
    pub fn source(&self) -> &S {
        &self.shared.source
    }

    /// Whether blocks are installed with `UFFDIO_MOVE` (huge pages) rather
    /// than `UFFDIO_COPY`.
    pub fn uses_move(&self) -> bool {
        self.shared.use_move
    }

    /// Dirty blocks, in increasing order.
    pub fn dirty_blocks(&self) -> Vec<u64> {
        self.shared.lock().table.dirty().collect()
    }

    /// Number of blocks currently resident (clean and dirty).
    pub fn resident_blocks(&self) -> usize {
        self.shared.lock().table.resident_count()
    }

    /// Address ranges of the mapping and of its pool: what the pager holds
    /// resident lives there (used to measure resident memory).
    pub fn address_ranges(&self) -> [Range<usize>; 2] {
        let r = &self.shared.region;
        let p = &self.shared.pool;
        [r.addr..r.addr + r.len, p.addr..p.addr + p.len]
    }

    /// What the mapping did so far.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            faults: g(&c.faults),
            loads: g(&c.loads),
            moves: g(&c.moves),
            copies: g(&c.copies),
            evictions: g(&c.evictions),
            dirtied: g(&c.dirtied),
            invalidations: g(&c.invalidations),
            readaheads: g(&c.readaheads),
            load_ns: g(&c.load_ns),
            place_ns: g(&c.place_ns),
        }
    }

    fn check(&self, start: usize, bytes: usize) -> Result<usize, Error> {
        match start.checked_add(bytes) {
            Some(end) if end <= self.len => Ok(self.shared.region.addr + start),
            _ => Err(Error::OutOfBounds {
                start,
                end: start.saturating_add(bytes),
                len: self.len,
            }),
        }
    }

    fn check_typed<T: Element>(&self, offset: usize, count: usize) -> Result<usize, Error> {
        let align = std::mem::align_of::<T>();
        if !offset.is_multiple_of(align) {
            return Err(Error::Misaligned {
                offset,
                align,
                ty: std::any::type_name::<T>(),
            });
        }
        let bytes = count
            .checked_mul(std::mem::size_of::<T>())
            .ok_or(Error::OutOfBounds {
                start: offset,
                end: usize::MAX,
                len: self.len,
            })?;
        self.check(offset, bytes)
    }

    /// Bytes `range` of the file, read-only. Blocks load as they are touched.
    pub fn bytes(&self, range: Range<usize>) -> Result<&[u8], Error> {
        self.slice::<u8>(range.start, range.end.saturating_sub(range.start))
    }

    /// `count` elements of type `T` starting at byte `offset` (which must be
    /// aligned for `T`), read-only.
    pub fn slice<T: Element>(&self, offset: usize, count: usize) -> Result<&[T], Error> {
        let addr = self.check_typed::<T>(offset, count)?;
        // SAFETY: the range lies in our region (checked) and is aligned for T
        // (region is page aligned, offset checked); any bits are a valid T.
        // The bytes read as the snapshot or this transaction's writes and do
        // not change while `&self` is borrowed (I3); no `&mut` to them exists
        // because ViewMut borrows the Mapping mutably.
        Ok(unsafe { std::slice::from_raw_parts(addr as *const T, count) })
    }

    /// Bytes `range` of the file, writable. Dirty tracking is per block: the
    /// first write to a block marks it dirty.
    pub fn bytes_mut(&mut self, range: Range<usize>) -> Result<ViewMut<'_, u8>, Error> {
        self.slice_mut::<u8>(range.start, range.end.saturating_sub(range.start))
    }

    /// `count` elements of type `T` starting at byte `offset`, writable.
    /// The view may be split (`split_at_mut`, `chunks_mut`) and handed to
    /// several threads.
    ///
    /// While a `ViewMut` is alive, blocks that are first *read* are installed
    /// with 4 KiB copies (the one install that is write-protected
    /// atomically), so read-mostly work is faster through [`Mapping::slice`].
    pub fn slice_mut<T: Element>(
        &mut self,
        offset: usize,
        count: usize,
    ) -> Result<ViewMut<'_, T>, Error> {
        let addr = self.check_typed::<T>(offset, count)?;
        {
            // Taking the lock orders this increment after any install in
            // progress (I4): that install finishes its write-protect first,
            // and later ones see the view.
            let _st = self.shared.lock();
            self.shared.mut_views.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: in bounds and aligned (checked); `&mut self` is borrowed for
        // the view's life, so no other view of the mapping exists and commit,
        // abort and sync cannot run (I3). Writes reach the pages through
        // write-protect faults that the handler resolves (I4).
        let data = unsafe { std::slice::from_raw_parts_mut(addr as *mut T, count) };
        Ok(ViewMut {
            data,
            views: &self.shared.mut_views,
        })
    }

    /// Start of the mapping, for code that needs a raw pointer (e.g. to build
    /// an array view). Dereferencing it follows the same rules as the views.
    pub fn as_ptr(&self) -> *const u8 {
        self.shared.region.addr as *const u8
    }

    /// Load the blocks overlapping `range` on the calling thread, so that
    /// touching them later does not fault, and report load errors as errors
    /// (a fault can only answer them with SIGBUS). Stops early if the budget
    /// is reached.
    pub fn prefetch(&self, range: Range<usize>) -> Result<(), Error> {
        if range.is_empty() {
            return Ok(());
        }
        self.check(range.start, range.end - range.start)?;
        let bs = self.shared.block_size;
        let first = (range.start / bs) as u64;
        let last = ((range.end - 1) / bs) as u64;
        for block in first..=last {
            let st = self.shared.lock();
            if let Some(w) = &st.poisoned {
                return Err(Error::Poisoned { what: w.clone() });
            }
            if st.table.get(block).is_none() && !st.loading.contains(&block) {
                if st.table.resident_count() + st.loading.len() >= self.shared.budget_blocks
                    && st.table.lru_victim().is_none()
                {
                    return Ok(());
                }
                self.shared.install(st, block, false).1?;
            }
        }
        Ok(())
    }

    /// Store exactly the dirty blocks in one transaction of the source, then
    /// re-arm them clean, and move to the source's newest snapshot (clean
    /// blocks changed by other transactions are dropped). On a conflict the
    /// dirty blocks are kept and [`Error::Conflict`] names the block: abort.
    /// If the store succeeded but the changes since could not be listed, the
    /// error is returned and the mapping is poisoned until `abort`.
    pub fn commit(&mut self) -> Result<Snapshot, Error> {
        let sh = &*self.shared;
        let mut st = sh.lock();
        if let Some(w) = &st.poisoned {
            return Err(Error::Poisoned { what: w.clone() });
        }
        let dirty: Vec<u64> = st.table.dirty().collect();
        if dirty.is_empty() {
            return sh.refresh(&mut st, None);
        }
        let base = st.snapshot;
        let new = {
            let blocks: Vec<DirtyBlock<'_>> = dirty
                .iter()
                .map(|&index| DirtyBlock {
                    index,
                    // SAFETY: a dirty block is resident and writable and stays
                    // so until this function re-arms it (dirty blocks are
                    // never evicted, and the state lock held here keeps every
                    // loader out, I2); `&mut self` excludes every view, so
                    // nothing writes it while the source reads.
                    data: unsafe {
                        std::slice::from_raw_parts(sh.block_addr(index) as *const u8, sh.block_size)
                    },
                })
                .collect();
            sh.source.store(base, &blocks).map_err(|e| match e {
                SourceError::Conflict {
                    block,
                    base,
                    changed_at,
                } => Error::Conflict {
                    block,
                    base,
                    changed_at,
                },
                source => Error::Store {
                    blocks: blocks.len(),
                    base,
                    source,
                },
            })?
        };
        // Re-arm: write-protect runs of consecutive dirty blocks, then record
        // them clean.
        let mut i = 0;
        while i < dirty.len() {
            let mut j = i + 1;
            while j < dirty.len() && dirty[j] == dirty[j - 1] + 1 {
                j += 1;
            }
            let r = sh
                .uffd
                .write_protect(sh.block_addr(dirty[i]), (j - i) * sh.block_size, true);
            if let Err(e) = r {
                st.poisoned
                    .get_or_insert(format!("re-arming after commit: {e}"));
                return Err(e);
            }
            i = j;
        }
        for &b in &dirty {
            st.table.mark_clean(b);
        }
        if let Err(e) = sh.refresh(&mut st, Some((new, &dirty))) {
            // Stored, but other transactions' changes could not be listed:
            // the clean blocks may now mix snapshots until the next refresh,
            // which `abort` performs.
            st.poisoned
                .get_or_insert(format!("committed as {new}, then: {e}"));
            return Err(e);
        }
        Ok(new)
    }

    /// Forget the dirty blocks (the next touch reads the stored data again)
    /// and move to the source's newest snapshot.
    pub fn abort(&mut self) -> Result<Snapshot, Error> {
        let sh = &*self.shared;
        let mut st = sh.lock();
        let dirty: Vec<u64> = st.table.dirty().collect();
        for b in dirty {
            sh.drop_block(&mut st, b)?;
        }
        st.poisoned = None;
        sh.refresh(&mut st, None)
    }

    /// Start a new transaction without changes: move to the source's newest
    /// snapshot, dropping clean blocks other transactions changed.
    pub fn sync(&mut self) -> Result<Snapshot, Error> {
        let sh = &*self.shared;
        let mut st = sh.lock();
        let dirty = st.table.dirty_count();
        if dirty > 0 {
            return Err(Error::DirtyAtSync { dirty });
        }
        sh.refresh(&mut st, None)
    }
}

impl<S: BlockSource> Drop for Mapping<S> {
    fn drop(&mut self) {
        {
            // Under the plan lock, so the readahead thread cannot miss it
            // between its check and its wait.
            let _plan = lock_plan(&self.shared.plan);
            self.shared.stop.store(true, Ordering::Release);
        }
        self.shared.plan_cv.notify_all();
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from `one` to our eventfd to wake the
        // handler's poll.
        unsafe {
            libc::write(
                self.shared.stop_fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

/// A writable view of part of a [`Mapping`]; derefs to `&mut [T]`.
pub struct ViewMut<'a, T: Element> {
    data: &'a mut [T],
    views: &'a AtomicUsize,
}

impl<T: Element> fmt::Debug for ViewMut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewMut")
            .field("addr", &self.data.as_ptr())
            .field("len", &self.data.len())
            .finish()
    }
}

impl<T: Element> Deref for ViewMut<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.data
    }
}

impl<T: Element> DerefMut for ViewMut<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.data
    }
}

impl<T: Element> Drop for ViewMut<'_, T> {
    fn drop(&mut self) {
        self.views.fetch_sub(1, Ordering::SeqCst);
    }
}
