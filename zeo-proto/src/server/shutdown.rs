//! Shutdown as each connection task sees it.
//!
//! A connection looks for shutdown on every turn of its loop, that is on
//! every request. A broadcast channel's receivers share one lock, taken at
//! each poll and again when the poll's future is dropped, so busy
//! connections on different worker threads would pass that lock's cache
//! line back and forth twice per request. Here each connection has a waker
//! slot of its own: a poll touches only that slot and reads a flag nobody
//! writes before shutdown. The shared list of slots is locked once per
//! connection, when it starts, and once at shutdown.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::Poll;

use futures_util::task::AtomicWaker;

#[derive(Debug, Default)]
struct Inner {
    stopped: AtomicBool,
    slots: Mutex<Vec<Weak<AtomicWaker>>>,
}

/// The listener's side: stops every connection at once.
#[derive(Debug, Default)]
pub(crate) struct Stopper {
    inner: Arc<Inner>,
}

impl Stopper {
    pub(crate) fn new() -> Stopper {
        Stopper::default()
    }

    /// A signal for one more connection.
    pub(crate) fn signal(&self) -> StopSignal {
        let slot = Arc::new(AtomicWaker::new());
        let mut slots = self
            .inner
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Forget the slots of connections that have ended, so the list is
        // as long as the live connections; a connection's start costs far
        // more than this pass.
        slots.retain(|w| w.strong_count() > 0);
        slots.push(Arc::downgrade(&slot));
        StopSignal {
            inner: Arc::clone(&self.inner),
            slot,
        }
    }

    /// Tells every connection, present and future, to stop.
    pub(crate) fn stop(&self) {
        self.inner.stopped.store(true, Ordering::Release);
        let slots = self
            .inner
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for slot in slots.iter().filter_map(Weak::upgrade) {
            slot.wake();
        }
    }
}

/// One connection's side.
#[derive(Debug)]
pub(crate) struct StopSignal {
    inner: Arc<Inner>,
    slot: Arc<AtomicWaker>,
}

impl StopSignal {
    /// Completes once the server is stopping.
    pub(crate) async fn stopped(&self) {
        poll_fn(|cx| {
            if self.inner.stopped.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.slot.register(cx.waker());
            // A stop between the first look and the registration woke
            // the previous waker (or none): look again.
            if self.inner.stopped.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_wakes_every_waiting_connection_and_later_ones() {
        let stopper = Stopper::new();
        let waiting: Vec<_> = (0..8)
            .map(|_| {
                let s = stopper.signal();
                tokio::spawn(async move { s.stopped().await })
            })
            .collect();
        // Ended connections leave no slot behind.
        for _ in 0..100 {
            drop(stopper.signal());
        }
        let slots = stopper.inner.slots.lock().expect("slots").len();
        assert!(slots <= 9, "{slots} slots for 8 live connections");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(waiting.iter().all(|t| !t.is_finished()));
        stopper.stop();
        for t in waiting {
            tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .expect("woken by stop")
                .expect("the waiting task ends cleanly");
        }
        let late = stopper.signal();
        tokio::time::timeout(Duration::from_secs(5), late.stopped())
            .await
            .expect("a connection after stop stops at once");
    }
}
