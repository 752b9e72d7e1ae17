//! Admission limits shared by every worker: WebSocket connections in total,
//! per client IP, per API key (when the key sets one), and publishers.
//!
//! A connection is counted from the moment its upgrade is accepted until its
//! session ends, by holding a [`Permit`]; a request over a limit is refused
//! with HTTP 503 before the upgrade, so a flood costs one HTTP exchange each,
//! never a session. Plain HTTP requests are not counted (the handshake
//! timeout bounds them). The counts sit under one short lock: they change
//! only on connect and disconnect, never per tick.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::access::auth::Identity;

/// Why a WebSocket upgrade was refused (the 503 body says it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("the server is at its limit of {limit} WebSocket connections; try again later")]
    Total { limit: usize },
    #[error("{ip} already has {limit} WebSocket connections open, the limit per client address")]
    PerAddress { ip: IpAddr, limit: usize },
    #[error("the server is at its limit of {limit} publishers")]
    Publishers { limit: usize },
    #[error("key `{name}` already has {limit} WebSocket connections open, its limit")]
    PerKey { name: String, limit: usize },
}

#[derive(Default)]
struct Counts {
    /// Connections holding a place.
    total: usize,
    /// Connections per client address (addresses with none are removed).
    per_ip: HashMap<IpAddr, usize>,
    /// Publishers among `total`.
    publishers: usize,
    /// Connections per API key, by [`Identity::index`] (keys with a limit).
    per_key: HashMap<usize, usize>,
}

/// The limits and the live counts.
pub(crate) struct Admission {
    /// `--max-connections`.
    max_total: usize,
    /// `--max-connections-per-ip`.
    max_per_ip: usize,
    /// `--max-publishers`.
    max_publishers: usize,
    /// Under one lock: taken only on connect and disconnect.
    counts: Mutex<Counts>,
}

/// One admitted connection; dropping it gives its place back.
pub(crate) struct Permit {
    /// Where the place is given back.
    admission: Arc<Admission>,
    /// The address it is counted under.
    ip: IpAddr,
    /// Whether it is counted among the publishers.
    publisher: bool,
    /// The key's index when its connections are counted.
    key: Option<usize>,
}

impl Admission {
    pub(crate) fn new(
        max_total: usize,
        max_per_ip: usize,
        max_publishers: usize,
    ) -> Arc<Admission> {
        Arc::new(Admission {
            max_total,
            max_per_ip,
            max_publishers,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Admits a connection from `ip` (a publisher if `publisher`),
    /// authenticated with `key` when the server has keys (a key may have its
    /// own connection limit), or says which limit it would break.
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        publisher: bool,
        key: Option<&Identity>,
    ) -> Result<Permit, Refused> {
        // An IPv4 client seen through an IPv6 socket counts as itself.
        let ip = ip.to_canonical();
        let mut c = self.counts.lock();
        if c.total >= self.max_total {
            return Err(Refused::Total {
                limit: self.max_total,
            });
        }
        let from_ip = c.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.max_per_ip {
            return Err(Refused::PerAddress {
                ip,
                limit: self.max_per_ip,
            });
        }
        if publisher && c.publishers >= self.max_publishers {
            return Err(Refused::Publishers {
                limit: self.max_publishers,
            });
        }
        let counted = key.and_then(|k| k.max_connections.map(|limit| (k, limit)));
        if let Some((k, limit)) = counted
            && c.per_key.get(&k.index).copied().unwrap_or(0) >= limit
        {
            return Err(Refused::PerKey {
                name: k.name.clone(),
                limit,
            });
        }
        c.total += 1;
        *c.per_ip.entry(ip).or_default() += 1;
        c.publishers += usize::from(publisher);
        if let Some((k, _)) = counted {
            *c.per_key.entry(k.index).or_default() += 1;
        }
        Ok(Permit {
            admission: self.clone(),
            ip,
            publisher,
            key: counted.map(|(k, _)| k.index),
        })
    }

    /// Connections counted now: (total, publishers).
    pub(crate) fn counts(&self) -> (usize, usize) {
        let c = self.counts.lock();
        (c.total, c.publishers)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.admission.counts.lock();
        c.total -= 1;
        c.publishers -= usize::from(self.publisher);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                // Keeps the map as small as the set of connected addresses.
                c.per_ip.remove(&self.ip);
            }
        }
        if let Some(k) = self.key
            && let Some(n) = c.per_key.get_mut(&k)
        {
            *n -= 1;
            if *n == 0 {
                c.per_key.remove(&k);
            }
        }
    }
}

pub use crate::sys::FdLimit;

/// Raises the soft open-file limit to the hard one. Every WebSocket
/// connection holds one descriptor, and the usual soft default (1,024) is
/// far below `max_connections`; the hard limit is the most an unprivileged
/// process may take. `serve` calls this at startup (the library never
/// changes process-wide limits by itself).
pub fn raise_fd_limit() -> std::io::Result<FdLimit> {
    crate::sys::raise_fd_limit(u64::MAX, u64::MAX)
}

/// Descriptors a server needs besides its WebSocket connections: stdio,
/// listeners, epoll and wake-up descriptors per worker, a recording file,
/// and plain HTTP requests (`/metrics`, handshakes not yet admitted).
pub fn fd_reserve(workers: usize) -> u64 {
    64 + 8 * workers as u64
}

/// The descriptors `max_connections` needs when `fd_limit` is too low for
/// them (plus [`fd_reserve`]), else `None`.
pub fn fd_shortfall(max_connections: usize, workers: usize, fd_limit: u64) -> Option<u64> {
    let need = max_connections as u64 + fd_reserve(workers);
    (need > fd_limit).then_some(need)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_limit_is_raised_and_checked() {
        let l = raise_fd_limit().unwrap();
        assert_eq!(l.soft, l.hard);
        assert!(l.was <= l.soft);
        assert_eq!(fd_shortfall(10_000, 2, 20_000), None);
        assert_eq!(fd_shortfall(10_000, 2, 1_024), Some(10_080));
        assert_eq!(fd_shortfall(19_990, 2, 20_000), Some(20_070));
    }

    #[test]
    fn limits_hold_and_places_come_back() {
        let a = Admission::new(3, 2, 1);
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = a.admit(one, true, None).unwrap();
        assert_eq!(
            a.admit(two, true, None).err(),
            Some(Refused::Publishers { limit: 1 })
        );
        let _p2 = a.admit(one, false, None).unwrap();
        assert_eq!(
            a.admit(one, false, None).err(),
            Some(Refused::PerAddress { ip: one, limit: 2 })
        );
        // IPv4-mapped IPv6 is the same client.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert!(a.admit(mapped, false, None).is_err());
        let _p3 = a.admit(two, false, None).unwrap();
        assert_eq!(
            a.admit(two, false, None).err(),
            Some(Refused::Total { limit: 3 })
        );
        drop(p1);
        assert_eq!(a.counts(), (2, 0));
        let _p4 = a.admit(two, true, None).unwrap();
    }
}
