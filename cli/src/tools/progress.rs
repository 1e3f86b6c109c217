//! Progress bars for tools that walk a whole database.
//!
//! The tools only report how far they are; whether and how that is shown is
//! decided here, once: on stderr, only when stderr is a terminal (so pipes,
//! logs and tests stay byte-exact and quiet), and only once the work has
//! taken more than a second (a small file should not flash a bar).
//!
//! Over the generic storage API the only measure of progress is the tid of
//! the transaction being processed. Tids encode commit times, so the bar
//! shows how much of the covered stretch of history is done; that is even
//! enough for a progress bar, and works the same over a ZEO client.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use zodb_core::Tid;

/// Bar resolution: positions are per-mille of the tid range.
const STEPS: u64 = 1000;

/// How long work must run before a bar appears.
const DELAY: Duration = Duration::from_secs(1);

/// Progress through the transactions of a tid range, drawn as described in
/// the module documentation. Dropping it clears the bar.
#[derive(Debug)]
pub struct TidProgress {
    /// Whether a bar may be drawn at all (stderr is a terminal).
    enabled: bool,
    what: &'static str,
    started: Instant,
    /// First and last tid of the range; the first is learnt from the first
    /// transaction reported when the range has no lower bound.
    lo: Option<u64>,
    hi: u64,
    /// Last position given to the bar, to skip redundant updates.
    pos: u64,
    bar: Option<ProgressBar>,
}

impl TidProgress {
    /// Progress of `what` (e.g. "dump") over transactions up to `last`.
    /// Draws nothing unless stderr is a terminal.
    pub fn new(what: &'static str, first: Option<Tid>, last: Tid) -> TidProgress {
        TidProgress::with_terminal(what, first, last, std::io::stderr().is_terminal())
    }

    /// As [`TidProgress::new`] but never drawing anything.
    pub fn hidden() -> TidProgress {
        TidProgress::with_terminal("", None, Tid::ZERO, false)
    }

    fn with_terminal(
        what: &'static str,
        first: Option<Tid>,
        last: Tid,
        enabled: bool,
    ) -> TidProgress {
        TidProgress {
            enabled,
            what,
            started: Instant::now(),
            lo: first.map(|t| t.0),
            hi: last.0,
            pos: 0,
            bar: None,
        }
    }

    /// Reports that the transaction `tid` is being processed.
    pub fn at(&mut self, tid: Tid) {
        if !self.enabled {
            return;
        }
        let lo = *self.lo.get_or_insert(tid.0);
        let span = self.hi.saturating_sub(lo);
        let done = tid.0.saturating_sub(lo).min(span);
        let pos = if span == 0 {
            0
        } else {
            // u128: the product of two tids' differences overflows u64.
            (u128::from(done) * u128::from(STEPS) / u128::from(span)) as u64
        };
        if pos == self.pos && self.bar.is_some() {
            return;
        }
        self.pos = pos;
        if self.bar.is_none() {
            if self.started.elapsed() < DELAY {
                return;
            }
            self.bar = Some(self.make_bar());
        }
        if let Some(bar) = &self.bar {
            bar.set_position(pos);
        }
    }

    fn make_bar(&self) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(Some(STEPS), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] {wide_bar} {percent:>3}% (eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(self.what);
        bar
    }
}

impl Drop for TidProgress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Progress through a file by byte position (scans, fsdump, pack): the
/// same rules as [`TidProgress`] (stderr, terminal only, after a second).
#[derive(Debug)]
pub struct ByteProgress {
    enabled: bool,
    what: &'static str,
    started: Instant,
    bar: Option<ProgressBar>,
}

impl ByteProgress {
    /// Progress of `what`; draws nothing unless stderr is a terminal.
    pub fn new(what: &'static str) -> ByteProgress {
        ByteProgress {
            enabled: std::io::stderr().is_terminal(),
            what,
            started: Instant::now(),
            bar: None,
        }
    }

    /// Reports that `pos` of `total` bytes are done.
    pub fn at(&mut self, pos: u64, total: u64) {
        if !self.enabled || (self.bar.is_none() && self.started.elapsed() < DELAY) {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_message(self.what);
            bar
        });
        bar.set_length(total);
        bar.set_position(pos.min(total));
    }
}

impl Drop for ByteProgress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Progress through a byte stream whose length may be unknown (a dump read
/// from a pipe): a bar when the total is known, else a running count with
/// the rate. Shown under the same rules as [`TidProgress`]: on stderr, only
/// on a terminal, only after a second. Dropping it clears it.
#[derive(Debug)]
pub struct StreamProgress {
    enabled: bool,
    what: &'static str,
    total: Option<u64>,
    started: Instant,
    bar: Option<ProgressBar>,
}

impl StreamProgress {
    /// Progress of `what` through `total` bytes, if known.
    pub fn new(what: &'static str, total: Option<u64>) -> StreamProgress {
        StreamProgress {
            enabled: std::io::stderr().is_terminal(),
            what,
            total,
            started: Instant::now(),
            bar: None,
        }
    }

    /// Reports that `done` bytes were consumed.
    pub fn at(&mut self, done: u64) {
        if !self.enabled {
            return;
        }
        if self.bar.is_none() {
            if self.started.elapsed() < DELAY {
                return;
            }
            let (bar, template) = match self.total {
                Some(total) => (
                    ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
                    "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
                ),
                None => (
                    ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
                    "{msg} [{elapsed_precise}] {spinner} {bytes} ({bytes_per_sec})",
                ),
            };
            let style = ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_message(self.what);
            self.bar = Some(bar);
        }
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
    }
}

impl Drop for StreamProgress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_never_draws() {
        let mut p = TidProgress::hidden();
        p.at(Tid(5));
        assert!(p.bar.is_none());
    }

    #[test]
    fn positions_are_per_mille_of_the_range() {
        let mut p = TidProgress::with_terminal("t", None, Tid(2000), true);
        p.started -= DELAY * 2;
        p.at(Tid(1000));
        assert_eq!(p.pos, 0);
        p.at(Tid(1500));
        assert_eq!(p.pos, 500);
        p.at(Tid(u64::MAX));
        assert_eq!(p.pos, STEPS);
        // Keep the test's terminal clean.
        if let Some(bar) = p.bar.take() {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
    }
}
