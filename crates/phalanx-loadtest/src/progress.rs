//! The live progress bar (indicatif) on stderr, and the progress lines.
//!
//! The bar is drawn only when stderr is a terminal and `--quiet` is not given, so it never
//! mixes with the table on stdout or with a redirected log. Progress lines go above the bar when
//! it is shown, else straight to stderr.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What the bar shows, at one tick.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Snapshot {
    /// `warm-up`, `measure` or `grace`.
    pub(crate) phase: &'static str,
    /// Since the first user started.
    pub(crate) elapsed: Duration,
    /// Warm-up plus measured duration.
    pub(crate) total: Duration,
    /// Requests sent per second, over the last second or so.
    pub(crate) rate: f64,
    /// Errors so far, warm-up included.
    pub(crate) errors: u64,
    /// The p99 latency so far in the phase, in milliseconds.
    pub(crate) p99_ms: Option<f64>,
}

impl Snapshot {
    /// The text after the bar.
    pub(crate) fn message(&self) -> String {
        let p99 = self.p99_ms.map_or("-".to_owned(), |ms| format!("{ms:.2} ms"));
        format!(
            "{:.1}s/{:.0}s  {:.0} req/s  errors {}  p99 {p99}",
            self.elapsed.as_secs_f64(),
            self.total.as_secs_f64(),
            self.rate,
            self.errors
        )
    }
}

/// The progress bar, or its hidden stand-in. Cloning shares the bar.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    bar: ProgressBar,
    visible: bool,
}

/// The bar's length: elapsed time is its position, in milliseconds.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Progress {
    /// A bar on stderr when it is a terminal and `quiet` is false, else a hidden one.
    pub(crate) fn for_stderr(quiet: bool) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Self::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(8));
        let style = ProgressStyle::with_template("{prefix:>7.bold} [{bar:20.cyan/blue}] {msg}")
            .expect("a valid template")
            .progress_chars("=> ");
        bar.set_style(style);
        Progress { bar, visible: true }
    }

    /// Draws nothing; progress lines go to stderr.
    pub(crate) fn hidden() -> Self {
        Progress { bar: ProgressBar::hidden(), visible: false }
    }

    pub(crate) fn is_visible(&self) -> bool {
        self.visible
    }

    pub(crate) fn update(&self, snapshot: &Snapshot) {
        self.bar.set_length(millis(snapshot.total));
        self.bar.set_position(millis(snapshot.elapsed.min(snapshot.total)));
        self.bar.set_prefix(snapshot.phase);
        self.bar.set_message(snapshot.message());
    }

    /// A progress line: above the bar when it is shown, else on stderr.
    pub(crate) fn line(&self, line: String) {
        if self.visible {
            self.bar.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    /// Removes the bar, leaving the lines printed above it.
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_shows_time_rate_errors_and_p99() {
        let snapshot = Snapshot {
            phase: "measure",
            elapsed: Duration::from_millis(12_340),
            total: Duration::from_secs(70),
            rate: 9876.4,
            errors: 3,
            p99_ms: Some(4.567),
        };
        assert_eq!(snapshot.message(), "12.3s/70s  9876 req/s  errors 3  p99 4.57 ms");
        let empty = Snapshot { p99_ms: None, ..snapshot };
        assert!(empty.message().ends_with("p99 -"), "{}", empty.message());
    }

    #[test]
    fn a_quiet_bar_is_hidden_and_updates_are_harmless() {
        let progress = Progress::for_stderr(true);
        assert!(!progress.is_visible());
        progress.update(&Snapshot {
            phase: "warm-up",
            elapsed: Duration::from_secs(1),
            total: Duration::from_secs(2),
            rate: 1.0,
            errors: 0,
            p99_ms: None,
        });
        progress.finish();
    }
}
