//! Ctrl-C and SIGTERM for the commands that write a file synchronously
//! (`import`, `convert`): the signal only sets a flag, which the write loop
//! checks between ticks, so the writer is dropped normally and removes its
//! `.partial` file (the default action would kill the process and leave
//! it). A second signal exits at once with status 130, for a loop that is
//! not checking (a long read phase).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once SIGINT or SIGTERM has arrived.
#[derive(Clone, Debug, Default)]
pub struct Interrupted(Arc<AtomicBool>);

impl Interrupted {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Installs the handlers (on a thread of their own, which waits for the
/// signals on a small tokio runtime) and returns the flag they set. If they
/// cannot be installed the flag never sets and signals keep their default
/// action.
pub fn on_interrupt() -> Interrupted {
    let flag = Interrupted::default();
    let set = flag.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                let _ = ready_tx.send(());
                return;
            };
            rt.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    let _ = ready_tx.send(());
                    return;
                };
                let _ = ready_tx.send(());
                for n in 0.. {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    if n > 0 {
                        std::process::exit(130);
                    }
                    set.0.store(true, Ordering::Relaxed);
                }
            });
        });
    if spawned.is_ok() {
        // Handlers in place before the caller creates any file.
        let _ = ready_rx.recv();
    }
    flag
}
