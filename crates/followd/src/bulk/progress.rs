//! Progress on stderr: a bar with the count, the rate and the ETA when stderr is a terminal;
//! otherwise a plain line every few seconds (for logs and CI); nothing when quiet (tests).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::{Duration, Instant};

/// How often the plain line is printed.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// A progress report of one command.
pub struct Progress {
    label: &'static str,
    unit: &'static str,
    bar: Option<ProgressBar>,
    plain: bool,
    count: u64,
    done: u64,
    total: Option<u64>,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    /// A progress of `unit`s (lines, follows, accounts); `total` is in the units of [`Progress::advance`]'s
    /// `done` (bytes of a file, accounts), for the ETA. `quiet` prints nothing.
    pub fn new(label: &'static str, unit: &'static str, total: Option<u64>, quiet: bool) -> Progress {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = (!quiet && tty).then(|| {
            let bar = match total {
                Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
                None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            };
            let template = if total.is_some() { "{prefix} {msg} [{bar:30}] {percent}% ETA {eta}" } else { "{prefix} {msg} {elapsed}" };
            bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
            bar.set_prefix(label);
            bar
        });
        let now = Instant::now();
        Progress { label, unit, bar, plain: !quiet && !tty, count: 0, done: 0, total, started: now, last_line: now }
    }

    fn rate(&self) -> f64 {
        self.count as f64 / self.started.elapsed().as_secs_f64().max(1e-6)
    }

    fn eta(&self) -> Option<Duration> {
        let total = self.total?;
        if self.done == 0 || self.done >= total {
            return None;
        }
        let secs = self.started.elapsed().as_secs_f64() * (total - self.done) as f64 / self.done as f64;
        Some(Duration::from_secs_f64(secs))
    }

    /// `count` more units done; `done` is the new position towards the total.
    pub fn advance(&mut self, count: u64, done: u64) {
        self.count += count;
        self.done = done;
        let msg = format!("{} {}, {:.0}/s", self.count, self.unit, self.rate());
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            bar.set_message(msg);
        } else if self.plain && self.last_line.elapsed() >= LINE_EVERY {
            self.last_line = Instant::now();
            match (self.total, self.eta()) {
                (Some(t), Some(eta)) => {
                    eprintln!("{}: {msg}, {:.0}%, ETA {}s", self.label, 100.0 * done as f64 / t.max(1) as f64, eta.as_secs())
                }
                _ => eprintln!("{}: {msg}", self.label),
            }
        }
    }

    /// Units done so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Ends the bar (the summary is the caller's to print).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
