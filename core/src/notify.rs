//! The stream of committed transactions.
//!
//! Everything above a storage that caches (a ZEO server's clients, the pager's
//! mapped blocks, a client's object cache) must learn which oids a commit
//! changed, in commit order. A storage owns one [`CommitHub`] and publishes each
//! finished transaction to it; every subscriber gets its own unbounded queue, so
//! a slow consumer never blocks a commit and no event is dropped for a live one.

use std::sync::{Arc, Mutex, PoisonError};

use crossbeam_channel::{Receiver, Sender};

use crate::{Oid, Tid};

/// One finished transaction: its tid and the oids it wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The transaction id.
    pub tid: Tid,
    /// Every oid with a new revision in it, in the order the transaction
    /// stored them (duplicates removed).
    pub oids: Arc<[Oid]>,
}

/// A storage's broadcaster of [`Committed`] events.
#[derive(Debug, Default)]
pub struct CommitHub {
    subscribers: Mutex<Vec<Sender<Committed>>>,
}

impl CommitHub {
    /// A hub with no subscribers.
    pub fn new() -> CommitHub {
        CommitHub::default()
    }

    /// Delivers `event` to every live subscriber, forgetting dropped ones.
    pub fn publish(&self, event: &Committed) {
        let mut subs = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        subs.retain(|tx| tx.send(event.clone()).is_ok());
    }

    /// A new subscription that sees every event published after this call.
    pub fn subscribe(&self) -> CommitWatch {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tx);
        CommitWatch { rx }
    }

    /// Number of live subscriptions (dropped ones are counted until the next publish).
    pub fn subscriber_count(&self) -> usize {
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// One subscriber's ordered queue of commits.
#[derive(Debug)]
pub struct CommitWatch {
    rx: Receiver<Committed>,
}

impl CommitWatch {
    /// The next commit, waiting for it; `None` once the storage is gone.
    pub fn recv(&self) -> Option<Committed> {
        self.rx.recv().ok()
    }

    /// The next commit if one is queued.
    pub fn try_recv(&self) -> Option<Committed> {
        self.rx.try_recv().ok()
    }

    /// Every queued commit, oldest first: what a transaction boundary must apply.
    pub fn drain(&self) -> Vec<Committed> {
        self.rx.try_iter().collect()
    }

    /// The underlying channel, for `select!` with other event sources.
    pub fn receiver(&self) -> &Receiver<Committed> {
        &self.rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subscriber_sees_commits_in_order() {
        let hub = CommitHub::new();
        let a = hub.subscribe();
        let e1 = Committed {
            tid: Tid(1),
            oids: Arc::from(vec![Oid(0)]),
        };
        hub.publish(&e1);
        let b = hub.subscribe();
        let e2 = Committed {
            tid: Tid(2),
            oids: Arc::from(vec![Oid(1), Oid(2)]),
        };
        hub.publish(&e2);
        assert_eq!(a.drain(), vec![e1, e2.clone()]);
        assert_eq!(b.drain(), vec![e2]);
        assert_eq!(a.try_recv(), None);
    }

    #[test]
    fn dropped_subscribers_are_forgotten() {
        let hub = CommitHub::new();
        let a = hub.subscribe();
        drop(hub.subscribe());
        hub.publish(&Committed {
            tid: Tid(1),
            oids: Arc::from(Vec::new()),
        });
        assert_eq!(hub.subscriber_count(), 1);
        drop(a);
        hub.publish(&Committed {
            tid: Tid(2),
            oids: Arc::from(Vec::new()),
        });
        assert_eq!(hub.subscriber_count(), 0);
    }
}
