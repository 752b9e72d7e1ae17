//! Which keys a gateway's clients want, and the commands that carry it to
//! the bus thread.
//!
//! Workers count their subscribers per key; they tell [`Interest`] only
//! when a key gains its first or loses its last subscriber on that worker,
//! so it is off the per-tick path. `Interest` sums those over workers and
//! tells the bus thread when a key's (or a channel's `*`) total crosses
//! zero: that is when a bus subscription must come or go.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::model::tick::{Channel, ChannelSet, KeyId};
use crate::pipeline::fanout::InterestSink;

/// What workers and subscribes tell the gateway's bus thread.
pub(super) enum Command {
    /// A key's interest count crossed zero: subscribe or unsubscribe.
    Key(KeyId),
    /// A channel's `*` interest crossed zero.
    Star(Channel),
    /// Answer once the subscriptions sent before are in place at the NATS
    /// server; with `fetch`, first read the last values of these keys (or
    /// of every key on `star`) into the local cache.
    Ready {
        keys: Vec<KeyId>,
        star: ChannelSet,
        fetch: bool,
        done: oneshot::Sender<()>,
    },
}

/// Which keys a gateway's clients want, counted over workers and holds;
/// the workers' way to the gateway's bus thread.
pub(crate) struct Interest {
    /// The totals; a mutex since every worker thread updates them.
    counts: Mutex<Counts>,
    /// To the bus thread, which owns the NATS subscriptions.
    commands: mpsc::UnboundedSender<Command>,
}

/// How many workers (and holds) want each key, and `*` on each channel.
#[derive(Default)]
struct Counts {
    /// Only keys wanted now: a key leaves the map when its count is 0, so
    /// the map's keys are the wanted keys.
    keys: HashMap<KeyId, u32>,
    /// Indexed by `Channel as usize`.
    star: [u32; 7],
}

impl InterestSink for Interest {
    fn add(&self, key: KeyId) {
        let mut c = self.counts.lock();
        let n = c.keys.entry(key).or_default();
        *n += 1;
        if *n == 1 {
            let _ = self.commands.send(Command::Key(key));
        }
    }

    fn remove(&self, key: KeyId) {
        let mut c = self.counts.lock();
        if let Some(n) = c.keys.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                c.keys.remove(&key);
                let _ = self.commands.send(Command::Key(key));
            }
        }
    }

    fn add_star(&self, ch: Channel) {
        let mut c = self.counts.lock();
        c.star[ch as usize] += 1;
        if c.star[ch as usize] == 1 {
            let _ = self.commands.send(Command::Star(ch));
        }
    }

    fn remove_star(&self, ch: Channel) {
        let mut c = self.counts.lock();
        let n = &mut c.star[ch as usize];
        if *n > 0 {
            *n -= 1;
            if *n == 0 {
                let _ = self.commands.send(Command::Star(ch));
            }
        }
    }
}

impl Interest {
    /// An interest with nothing wanted, and the receiving end of its
    /// commands for the bus thread.
    pub(super) fn new() -> (Interest, mpsc::UnboundedReceiver<Command>) {
        let (commands, rx) = mpsc::unbounded_channel();
        let interest = Interest {
            counts: Mutex::new(Counts::default()),
            commands,
        };
        (interest, rx)
    }

    pub(super) fn wants(&self, key: KeyId) -> bool {
        self.counts.lock().keys.contains_key(&key)
    }

    pub(super) fn wants_star(&self, ch: Channel) -> bool {
        self.counts.lock().star[ch as usize] > 0
    }

    /// The channels some local client wants `*` on.
    pub(super) fn wanted_star(&self) -> ChannelSet {
        let c = self.counts.lock();
        let mut set = ChannelSet::default();
        for ch in Channel::ALL {
            if c.star[ch as usize] > 0 {
                set.insert(ch);
            }
        }
        set
    }

    pub(super) fn wanted_keys(&self) -> Vec<KeyId> {
        self.counts.lock().keys.keys().copied().collect()
    }

    /// Counts `keys` and `*` on `star` as wanted until the [`Hold`] drops.
    pub(super) fn hold(self: &Arc<Self>, keys: &[KeyId], star: ChannelSet) -> Hold {
        for &k in keys {
            self.add(k);
        }
        for ch in star.iter() {
            self.add_star(ch);
        }
        Hold {
            interest: self.clone(),
            keys: keys.to_vec(),
            star,
        }
    }

    /// Asks the bus thread to answer once every subscription asked for
    /// before is in place (see [`Command::Ready`]). The answer never comes
    /// while the bus is down: the sender is dropped instead.
    pub(super) fn ready(
        &self,
        keys: &[KeyId],
        star: ChannelSet,
        fetch: bool,
    ) -> oneshot::Receiver<()> {
        let (done, answer) = oneshot::channel();
        let _ = self.commands.send(Command::Ready {
            keys: keys.to_vec(),
            star,
            fetch,
            done,
        });
        answer
    }
}

/// Interest held while a subscribe waits for its snapshot; released on drop.
pub(crate) struct Hold {
    /// Where the counts are given back.
    interest: Arc<Interest>,
    /// What was counted, to uncount exactly that.
    keys: Vec<KeyId>,
    star: ChannelSet,
}

impl Drop for Hold {
    fn drop(&mut self) {
        for &k in &self.keys {
            self.interest.remove(k);
        }
        for ch in self.star.iter() {
            self.interest.remove_star(ch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u32) -> KeyId {
        KeyId::new(id, Channel::Trade)
    }

    /// Every command waiting, as (kind, key or channel) pairs.
    fn drain(rx: &mut mpsc::UnboundedReceiver<Command>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(c) = rx.try_recv() {
            out.push(match c {
                Command::Key(k) => format!("key {}", k.symbol()),
                Command::Star(ch) => format!("star {}", ch.as_str()),
                Command::Ready { .. } => "ready".into(),
            });
        }
        out
    }

    #[test]
    fn only_crossing_zero_reaches_the_bus_thread() {
        let (interest, mut rx) = Interest::new();
        interest.add(key(1));
        interest.add(key(1));
        interest.add_star(Channel::Quote);
        assert_eq!(drain(&mut rx), ["key 1", "star quote"]);
        assert!(interest.wants(key(1)) && interest.wants_star(Channel::Quote));
        interest.remove(key(1));
        assert!(drain(&mut rx).is_empty());
        interest.remove(key(1));
        interest.remove_star(Channel::Quote);
        interest.remove_star(Channel::Quote); // one too many: ignored
        assert_eq!(drain(&mut rx), ["key 1", "star quote"]);
        assert!(interest.wanted_keys().is_empty() && interest.wanted_star().is_empty());
    }

    #[test]
    fn a_hold_gives_back_what_it_counted() {
        let (interest, mut rx) = Interest::new();
        let interest = Arc::new(interest);
        let mut star = ChannelSet::default();
        star.insert(Channel::Trade);
        let hold = interest.hold(&[key(2)], star);
        assert_eq!(interest.wanted_keys(), [key(2)]);
        assert!(interest.wanted_star().contains(Channel::Trade));
        drop(hold);
        assert!(interest.wanted_keys().is_empty() && interest.wanted_star().is_empty());
        assert_eq!(
            drain(&mut rx),
            ["key 2", "star trade", "key 2", "star trade"]
        );
    }
}
