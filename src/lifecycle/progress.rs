//! Progress bars for `census` and `migrate`, drawn on stderr only when stderr is a terminal:
//! a script or a log file sees the final report and summary lines, never bar frames.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One bar; hidden when stderr is not a terminal.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar for `what`, with a total when known. Shows the count, the rate and the time left.
    pub fn new(what: &str, total: Option<u64>) -> Self {
        let bar = match total {
            Some(total) => ProgressBar::new(total),
            None => ProgressBar::no_length(),
        };
        if std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.enable_steady_tick(Duration::from_millis(250));
        } else {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        let template = if total.is_some() {
            "{prefix:>24} [{bar:30}] {pos}/{len} {per_sec} ETA {eta} {msg}"
        } else {
            "{prefix:>24} {spinner} {pos} {per_sec} {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(what.to_owned());
        Self { bar }
    }

    /// Whether the bar is drawn (stderr is a terminal).
    pub fn is_drawn(&self) -> bool {
        !self.bar.is_hidden()
    }

    /// Counts `n` more done.
    pub fn advance(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Raises the total, e.g. when a list says how many items remain.
    pub fn set_total(&self, total: u64) {
        self.bar.set_length(total);
    }

    /// A short message after the counts.
    pub fn message(&self, message: String) {
        self.bar.set_message(message);
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
