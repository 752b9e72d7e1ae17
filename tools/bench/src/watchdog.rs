//! The hard limit on the whole command (`--timeout`): runs are bounded one
//! by one, this catches whatever nothing else does. It kills every child
//! the runner started, removes their temporary directories and exits 3.

use std::time::Duration;

use crate::tickwire_lib::sys::{self, Signal};

/// Starts the watchdog thread: after `limit`, it stops everything.
pub(crate) fn start(limit: Duration) {
    let _ = std::thread::Builder::new()
        .name("bench-watchdog".into())
        .spawn(move || {
            std::thread::sleep(limit);
            eprintln!(
                "tickwire bench: hard timeout after {:.0} s: something hung; stopping (no report written)",
                limit.as_secs_f64()
            );
            for pid in crate::target::CHILDREN.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let _ = sys::kill(*pid, Signal::Kill);
            }
            for dir in crate::target::TEMP_DIRS.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let _ = std::fs::remove_dir_all(dir);
            }
            std::process::exit(3);
        });
}
