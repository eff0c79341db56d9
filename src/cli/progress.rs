//! The progress line of a long command (audit, migrate, demo, publish) on stderr.
//!
//! On a terminal: one line that redraws in place (indicatif, at most 10 redraws a second), with
//! the elapsed time in front. Otherwise (logs, CI, a pipe): the same text as a plain line at most
//! every 10 s, and always at the end, so a captured log shows the run without a flood of lines.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a non-terminal stderr gets a progress line.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// One progress line.
pub struct Progress {
    bar: Option<ProgressBar>,
    last_plain: Mutex<Option<Instant>>,
}

impl Progress {
    /// A progress line on stderr: drawn in place on a terminal, plain lines otherwise.
    pub fn stderr() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
            // The template is a constant: it cannot fail to parse; the default is a plain
            // message if it ever did.
            let style = ProgressStyle::with_template("[{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar
        });
        Progress {
            bar,
            last_plain: Mutex::new(None),
        }
    }

    /// Shows `line()` now on a terminal; otherwise at most every 10 s (the first call prints).
    /// `line` is only called when something is drawn.
    pub fn update(&self, line: impl FnOnce() -> String) {
        if let Some(bar) = &self.bar {
            bar.set_message(line());
            return;
        }
        let Ok(mut last) = self.last_plain.lock() else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() < PLAIN_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        eprintln!("{}", line());
    }

    /// Clears the line on a terminal; otherwise prints `line` once more if given.
    pub fn finish(&self, line: Option<String>) {
        match (&self.bar, line) {
            (Some(bar), Some(line)) => {
                bar.finish_and_clear();
                eprintln!("{line}");
            }
            (Some(bar), None) => bar.finish_and_clear(),
            (None, Some(line)) => eprintln!("{line}"),
            (None, None) => {}
        }
    }
}
