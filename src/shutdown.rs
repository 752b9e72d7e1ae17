//! Graceful shutdown: one trigger, many listeners, across runtimes.

use tokio::sync::watch;

/// Held by whoever decides the server stops (the signal handler, a test).
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Handed down to every task that must stop when the server stops.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn shutdown_pair() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown has been triggered (at once if it already was).
    pub async fn triggered(&mut self) {
        // An error means the trigger was dropped: treat that as shutdown too.
        let _ = self.0.wait_for(|v| *v).await;
    }
}
