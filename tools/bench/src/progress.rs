//! The progress line on stderr while a run connects and publishes.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Progress on stderr: one line rewritten in place on a terminal, a line
/// every few seconds otherwise.
pub(crate) struct Progress {
    /// `--quiet`: no progress at all.
    quiet: bool,
    /// A terminal gets one line rewritten in place; a log gets new lines.
    tty: bool,
    /// When a line was last shown, and how often one is due.
    last: Instant,
    every: Duration,
}

impl Progress {
    pub(crate) fn new(quiet: bool) -> Progress {
        let tty = std::io::stderr().is_terminal();
        Progress {
            quiet,
            tty,
            last: Instant::now() - Duration::from_secs(60),
            every: Duration::from_secs(if tty { 1 } else { 5 }),
        }
    }
    /// Whether a new line is due (and, if so, counts it as shown).
    pub(crate) fn due(&mut self) -> bool {
        if self.quiet || self.last.elapsed() < self.every {
            return false;
        }
        self.last = Instant::now();
        true
    }
    pub(crate) fn show(&self, line: &str) {
        let mut e = std::io::stderr().lock();
        if self.tty {
            let _ = write!(e, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(e, "{line}");
        }
        let _ = e.flush();
    }
    /// Clears the line on a terminal.
    pub(crate) fn done(&self) {
        if !self.quiet && self.tty {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}
