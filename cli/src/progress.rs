//! The store's `Progress` drawn with indicatif: a bar with percentage, rate
//! and ETA once the total is known (a directory backup, a restore, a copy, a
//! check or repacking prune, a repair), a spinner with bytes and rate until
//! then (a stream backup), and the new bytes stored as its message.

use dedupe_store::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub(crate) struct Bar {
    pb: ProgressBar,
    visible: bool,
    new: AtomicU64,
}

impl Bar {
    pub(crate) fn new(visible: bool) -> Bar {
        let target = if visible { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let pb = ProgressBar::with_draw_target(None, target).with_style(
            ProgressStyle::with_template("{spinner} {bytes} read, {binary_bytes_per_sec} {msg}")
                .expect("template is valid"),
        );
        if visible {
            pb.enable_steady_tick(Duration::from_millis(200));
        }
        Bar { pb, visible, new: AtomicU64::new(0) }
    }

    /// A line on stdout, above the display.
    pub(crate) fn say(&self, line: &str) {
        self.pb.suspend(|| outln!("{line}"));
    }

    /// Removes the display (before the summary is printed).
    pub(crate) fn finish(&self) {
        self.pb.finish_and_clear();
    }
}

impl Progress for Bar {
    fn total(&self, n: u64) {
        self.pb.set_length(n);
        self.pb.set_style(
            ProgressStyle::with_template(
                "{bar:30} {percent:>3}% {bytes}/{total_bytes} {binary_bytes_per_sec}, ETA {eta} {msg}",
            )
            .expect("template is valid"),
        );
    }

    fn done(&self, n: u64) {
        self.pb.set_position(n);
    }

    fn committing(&self) {
        crate::interrupt::say("it was being committed: `dedupe snapshots` shows whether it landed");
    }

    fn stored(&self, n: u64) {
        let new = self.new.fetch_add(n, Ordering::Relaxed) + n;
        if self.visible {
            self.pb.set_message(format!("{} new", crate::ctx::human(new)));
        }
    }
}
