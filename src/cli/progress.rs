//! The progress line of a long command (audit, migrate, demo, publish) on stderr.
//!
//! On a terminal: one line that redraws in place (indicatif, at most 10 redraws a second), with
//! the elapsed time in front. Otherwise (logs, CI, a pipe): the same text as a plain line at most
//! every 10 s, so a captured log shows the run without a flood of lines.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a non-terminal stderr gets a progress line.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// One progress line; after [`Progress::finish`] the next update starts a new one (the
/// standalone migration loop draws one per cycle).
pub struct Progress {
    tty: bool,
    bar: Mutex<Option<ProgressBar>>,
    last_plain: Mutex<Option<Instant>>,
}

fn new_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
    // The template is a constant and parses; a plain spinner style if it ever did not.
    let style = ProgressStyle::with_template("[{elapsed_precise}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    bar.set_style(style);
    bar
}

impl Progress {
    /// A progress line on stderr: drawn in place on a terminal, plain lines otherwise.
    pub fn stderr() -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
            last_plain: Mutex::new(None),
        }
    }

    /// Shows `line()` now on a terminal; otherwise at most every 10 s (the first call prints).
    /// `line` is only called when something is drawn.
    pub fn update(&self, line: impl FnOnce() -> String) {
        self.update_with(false, line, |l| eprintln!("{l}"));
    }

    /// [`Self::update`] with the plain (non-terminal) output given by `plain` (e.g. a log
    /// event with fields), and `force` to emit it now whatever the 10 s spacing says.
    pub fn update_with(
        &self,
        force: bool,
        line: impl FnOnce() -> String,
        plain: impl FnOnce(String),
    ) {
        if self.tty {
            if let Ok(mut bar) = self.bar.lock() {
                bar.get_or_insert_with(new_bar).set_message(line());
            }
            return;
        }
        let Ok(mut last) = self.last_plain.lock() else {
            return;
        };
        if !force && last.is_some_and(|t| t.elapsed() < PLAIN_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        plain(line());
    }

    /// Clears the line on a terminal; then prints `line` once if given (on any stderr).
    pub fn finish(&self, line: Option<String>) {
        if let Ok(mut bar) = self.bar.lock()
            && let Some(bar) = bar.take()
        {
            bar.finish_and_clear();
        }
        if let Some(line) = line {
            eprintln!("{line}");
        }
    }
}
