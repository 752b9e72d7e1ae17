//! The server under test: servers someone else runs (one URL, or a
//! deployment of several), a `tickwire serve` the runner starts in a child
//! process (never in its own process: the runner and the server must not
//! share a runtime or an allocator), or a whole bus deployment the runner
//! starts: nats-server, one ingest node and N gateways (`nats:N`).
//!
//! A target has one **publish** endpoint (where the publisher connects)
//! and one or more **subscribe** endpoints (clients are spread over them
//! round-robin, [`super::clients::endpoint_index`]). A single server is
//! both. Its **processes** are what CPU and RSS are summed over. A
//! `binance:` target's subscribers speak Binance's streams on the server's
//! Binance endpoint (`crate::binance`); its publisher still uses
//! `/v1/publish`.

mod spawn;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use self::spawn::{nats_server_exe, server_bin};
use super::procstat;
use super::ws::{Endpoint, WsError};
use crate::binance::Protocol;
use crate::tickwire_lib::sys::{self, Signal};

/// Children to kill if the runner's hard timeout fires.
pub static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// Temporary directories (NATS stores) to remove if the hard timeout fires.
pub static TEMP_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Most gateways a `nats:N` target may have.
pub const MAX_GATEWAYS: usize = 16;

/// Why the server under test could not be started or reached.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Url(#[from] WsError),
    #[error("cannot find the runner's own binary (to find tickwire beside it): {0}")]
    Exe(#[source] std::io::Error),
    #[error(
        "no tickwire binary at {path} to start a server: run `cargo build --release` at the repository root (it builds tickwire beside tickwire-bench), or give its path with --server-bin or TICKWIRE_BIN"
    )]
    NoServerBin { path: String },
    #[error("cannot start `tickwire serve`: {0}")]
    Spawn(#[source] std::io::Error),
    #[error(
        "cannot start {exe}: {source} (install nats-server, or set TICKWIRE_NATS_SERVER to its path)"
    )]
    NatsSpawn {
        exe: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} exited ({status}) before listening; its log ({log}) ends with:\n{tail}")]
    Exited {
        what: String,
        status: String,
        log: String,
        tail: String,
    },
    #[error("{what} did not report its address within {limit:?}")]
    NoAddress { what: String, limit: Duration },
    #[error(
        "`tickwire serve --binance-listen` did not report its Binance address (a tickwire without the Binance endpoint?)"
    )]
    NoBinance,
    #[error("the deployment was not ready within {limit:?}: {why}")]
    NotReady { limit: Duration, why: String },
}

/// What to measure.
#[derive(Clone, Debug)]
pub enum Target {
    /// Start `tickwire serve` with these extra flags (`own`: those given
    /// with the target itself, shown in its name).
    Spawn {
        extra: Vec<String>,
        own: Vec<String>,
    },
    /// Servers someone else runs: the publisher connects to `publish`,
    /// subscribers round-robin to `subscribe`.
    Urls {
        publish: String,
        subscribe: Vec<String>,
    },
    /// Start a bus deployment: nats-server, an ingest node (`--no-feed`,
    /// the publisher's end) and `gateways` gateways (the subscribers' end;
    /// with 0, subscribers use the ingest node). `extra` goes to every
    /// tickwire node.
    Nats {
        gateways: usize,
        extra: Vec<String>,
        own: Vec<String>,
    },
    /// `binance:` + a `self` or URL target: subscribers on Binance streams
    /// (a `self` server gets `--binance-listen`; URLs are Binance endpoints
    /// and the publisher's `pub:` URL the main endpoint).
    Binance(Box<Target>),
}

impl Target {
    /// `self`, `nats:N`, or a comma-separated list of URLs where one may be
    /// written `pub:ws://…` (the publisher's server, which then gets no
    /// subscribers; without it the publisher uses the first URL).
    ///
    /// `self` and `nats:N` may be followed, after spaces, by flags for the
    /// servers of that target only (after `--server-arg`'s), e.g.
    /// `"nats:1 --bus-memory"` or `"self --workers=1"`.
    pub fn parse(s: &str, extra: &[String]) -> Result<Target, String> {
        if let Some(rest) = s.strip_prefix("binance:") {
            return Target::parse(rest, extra)?.binance();
        }
        let mut words = s.split_whitespace();
        let name = words.next().unwrap_or("");
        let own: Vec<String> = words.map(str::to_owned).collect();
        let extra: Vec<String> = extra.iter().cloned().chain(own.iter().cloned()).collect();
        if name == "self" {
            return Ok(Target::Spawn { extra, own });
        }
        if let Some(n) = name.strip_prefix("nats:") {
            return match n.parse::<usize>() {
                Ok(g) if g <= MAX_GATEWAYS => Ok(Target::Nats {
                    gateways: g,
                    extra,
                    own,
                }),
                _ => Err(format!(
                    "`{s}`: write nats:N with N gateways, 0 to {MAX_GATEWAYS} (0: subscribers on the ingest node)"
                )),
            };
        }
        if own.iter().any(|w| w.starts_with('-')) {
            return Err(format!(
                "`{s}`: server flags after a target only apply to `self` and `nats:N`"
            ));
        }
        Target::urls(s, None)
    }

    /// A URL list (see [`Target::parse`]), with `--publish-url` if given.
    pub fn urls(list: &str, publish_url: Option<&str>) -> Result<Target, String> {
        let mut publish = publish_url.map(str::to_owned);
        let mut subscribe = Vec::new();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if let Some(p) = item.strip_prefix("pub:") {
                if publish.is_some() {
                    return Err(format!(
                        "`{list}`: one publish URL only (`pub:` or --publish-url)"
                    ));
                }
                publish = Some(p.to_owned());
            } else {
                subscribe.push(item.to_owned());
            }
        }
        if subscribe.is_empty() {
            return Err(format!(
                "`{list}`: no URL for the subscribers (write e.g. ws://127.0.0.1:8080)"
            ));
        }
        Ok(Target::Urls {
            publish: publish.unwrap_or_else(|| subscribe[0].clone()),
            subscribe,
        })
    }

    /// The same target with Binance subscribers: a `self` target, or URLs
    /// whose publish URL (the main endpoint) is given apart from them.
    pub fn binance(self) -> Result<Target, String> {
        match self {
            Target::Spawn { .. } => Ok(Target::Binance(Box::new(self))),
            Target::Urls {
                ref publish,
                ref subscribe,
            } if !subscribe.contains(publish) => Ok(Target::Binance(Box::new(self))),
            Target::Urls { .. } => Err(
                "Binance subscribers need the main endpoint for the publisher: give it as pub:ws://… (or --url with --binance-url)".into(),
            ),
            Target::Nats { .. } | Target::Binance(_) => {
                Err("binance: applies to `self` or to URLs".into())
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Binance(inner) => format!("binance {}", inner.describe()),
            Target::Spawn { own, .. } => with_flags("tickwire", own),
            Target::Nats { gateways, own, .. } => with_flags(&format!("nats:{gateways}"), own),
            Target::Urls { publish, subscribe } => {
                if subscribe.len() == 1 && subscribe[0] == *publish {
                    publish.clone()
                } else {
                    format!("{} (publish {publish})", subscribe.join(","))
                }
            }
        }
    }

    /// Short name for run labels.
    pub fn short(&self) -> String {
        match self {
            Target::Urls { publish, subscribe } if subscribe.len() == 1 => {
                let s = subscribe[0].trim_start_matches("ws://");
                if subscribe[0] == *publish {
                    s.to_owned()
                } else {
                    format!("{s}<{}", publish.trim_start_matches("ws://"))
                }
            }
            Target::Urls { subscribe, .. } => format!(
                "{}+{}",
                subscribe[0].trim_start_matches("ws://"),
                subscribe.len() - 1
            ),
            Target::Binance(inner) => format!("binance:{}", inner.short()),
            other => other.describe(),
        }
    }

    /// For a target the runner starts: raises the server's connection
    /// limits (total and per address) to at least `connections`, unless
    /// `--server-arg` sets them.
    pub fn with_connection_limits(self, connections: usize) -> Target {
        let raise = |mut extra: Vec<String>| {
            for (flag, default) in [
                ("--max-connections", 10_000),
                ("--max-connections-per-ip", 100),
            ] {
                let given = extra
                    .iter()
                    .any(|a| a == flag || a.starts_with(&format!("{flag}=")));
                if !given && connections > default {
                    extra.push(format!("{flag}={connections}"));
                }
            }
            extra
        };
        match self {
            Target::Spawn { extra, own } => Target::Spawn {
                extra: raise(extra),
                own,
            },
            Target::Nats {
                gateways,
                extra,
                own,
            } => Target::Nats {
                gateways,
                extra: raise(extra),
                own,
            },
            Target::Binance(inner) => {
                Target::Binance(Box::new(inner.with_connection_limits(connections)))
            }
            urls => urls,
        }
    }

    /// For a target the runner starts, pinned to `cpus` CPUs
    /// (`--pin-server`): `--workers=cpus` unless a server flag sets it
    /// (0: not pinned, unchanged).
    pub fn with_workers(self, cpus: usize) -> Target {
        let add = |mut extra: Vec<String>| {
            let given = extra
                .iter()
                .any(|a| a == "--workers" || a.starts_with("--workers="));
            if cpus > 0 && !given {
                extra.push(format!("--workers={cpus}"));
            }
            extra
        };
        match self {
            Target::Spawn { extra, own } => Target::Spawn {
                extra: add(extra),
                own,
            },
            Target::Nats {
                gateways,
                extra,
                own,
            } => Target::Nats {
                gateways,
                extra: add(extra),
                own,
            },
            Target::Binance(inner) => Target::Binance(Box::new(inner.with_workers(cpus))),
            urls => urls,
        }
    }

    pub fn is_deployment(&self) -> bool {
        matches!(self, Target::Nats { .. })
    }

    /// Whether the runner starts `tickwire serve` for this target.
    pub fn starts_servers(&self) -> bool {
        match self {
            Target::Binance(inner) => inner.starts_servers(),
            t => matches!(t, Target::Spawn { .. } | Target::Nats { .. }),
        }
    }

    /// The protocol its subscribers speak.
    pub fn protocol(&self) -> Protocol {
        match self {
            Target::Binance(_) => Protocol::Binance,
            _ => Protocol::Tickwire,
        }
    }
}

fn with_flags(name: &str, flags: &[String]) -> String {
    if flags.is_empty() {
        name.to_owned()
    } else {
        format!("{name} {}", flags.join(" "))
    }
}

/// One process of the target.
pub struct Proc {
    /// `tickwire`, `ingest`, `gateway-1`, `nats-server`, or for a URL
    /// target the address it listens on (or `--server-pid`).
    pub role: String,
    pub pid: u32,
    child: Option<Child>,
    log: Option<PathBuf>,
}

/// A target being measured.
pub struct Running {
    /// Where the publisher connects.
    pub publish: Endpoint,
    /// Where subscribers connect, round-robin.
    pub subscribe: Vec<Endpoint>,
    /// What the subscribers speak there.
    pub protocol: Protocol,
    /// The processes to sample (those on this machine we can see).
    pub procs: Vec<Proc>,
    /// The NATS store of a spawned deployment, removed at the end.
    store: Option<PathBuf>,
}

impl Running {
    pub fn spawned(&self) -> bool {
        self.procs.iter().any(|p| p.child.is_some())
    }

    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.pid).collect()
    }

    /// `Some(description)` once any of the target's processes has gone.
    pub fn exited(&mut self) -> Option<String> {
        let several = self.procs.len() > 1;
        for p in &mut self.procs {
            let gone = match &mut p.child {
                Some(c) => match c.try_wait() {
                    Ok(Some(st)) => Some(st.to_string()),
                    _ => None,
                },
                None => (!procstat::alive(p.pid)).then(|| "gone".into()),
            };
            if let Some(g) = gone {
                return Some(if several {
                    format!("{} (pid {}): {g}", p.role, p.pid)
                } else {
                    g
                });
            }
        }
        None
    }

    /// Stops what the runner started: the tickwire nodes first (SIGTERM,
    /// then SIGKILL after 5 s), nats-server last. Returns a note when
    /// something did not exit cleanly.
    pub fn stop(&mut self) -> Option<String> {
        let (nats, nodes): (Vec<Proc>, Vec<Proc>) = std::mem::take(&mut self.procs)
            .into_iter()
            .filter(|p| p.child.is_some())
            .partition(|p| p.role == "nats-server");
        let mut notes = stop_all(nodes);
        notes.extend(stop_all(nats));
        if let Some(dir) = self.store.take() {
            let _ = std::fs::remove_dir_all(&dir);
            lock(&TEMP_DIRS).retain(|d| *d != dir);
        }
        (!notes.is_empty()).then(|| notes.join("; "))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Asks every process to stop at once (SIGTERM; nats-server SIGINT, on
/// which it exits 0 rather than 1), then waits for each (5 s in all).
fn stop_all(procs: Vec<Proc>) -> Vec<String> {
    for p in &procs {
        let sig = if p.role == "nats-server" {
            Signal::Interrupt
        } else {
            Signal::Terminate
        };
        let _ = sys::kill(p.pid, sig);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut notes = Vec::new();
    for mut p in procs {
        let Some(mut child) = p.child.take() else {
            continue;
        };
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break None,
            }
        };
        lock(&CHILDREN).retain(|&pid| pid != p.pid);
        let what = if p.role == "tickwire" {
            "the spawned server".to_owned()
        } else {
            format!("the spawned {}", p.role)
        };
        match status {
            Some(st) if st.success() => {
                if let Some(log) = &p.log {
                    let _ = std::fs::remove_file(log);
                }
            }
            Some(st) => notes.push(format!("{what} exited with {st} when asked to stop")),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                notes.push(format!(
                    "{what} did not exit within 5 s of being asked to stop; killed"
                ));
            }
        }
    }
    notes
}

/// Starts or resolves the target. `pids` (from `--server-pid`) are the
/// processes to sample for a URL target; without them each loopback
/// server's pid is looked up from its listening socket. `server_bin` is
/// `--server-bin` (see [`server_bin`]).
pub fn start(
    target: &Target,
    pids: &[u32],
    server_bin: Option<&Path>,
) -> Result<Running, TargetError> {
    match target {
        Target::Urls { publish, subscribe } => {
            let publish = Endpoint::parse(publish)?;
            let subscribe = subscribe
                .iter()
                .map(|u| Endpoint::parse(u))
                .collect::<Result<Vec<_>, _>>()?;
            let procs = if pids.is_empty() {
                let mut seen = Vec::new();
                std::iter::once(&publish)
                    .chain(&subscribe)
                    .filter_map(|ep| {
                        let pid = ep
                            .is_loopback()
                            .then(|| procstat::find_listener_pid(ep.addr))
                            .flatten()?;
                        (!seen.contains(&pid)).then(|| {
                            seen.push(pid);
                            Proc {
                                role: ep.addr.to_string(),
                                pid,
                                child: None,
                                log: None,
                            }
                        })
                    })
                    .collect()
            } else {
                pids.iter()
                    .map(|&pid| Proc {
                        role: format!("pid {pid}"),
                        pid,
                        child: None,
                        log: None,
                    })
                    .collect()
            };
            Ok(Running {
                publish,
                subscribe,
                protocol: Protocol::Tickwire,
                procs,
                store: None,
            })
        }
        Target::Spawn { extra, .. } => {
            let (proc, endpoint, _) =
                spawn::spawn_node(&self::server_bin(server_bin)?, "tickwire", extra)?;
            Ok(Running {
                publish: endpoint.clone(),
                subscribe: vec![endpoint],
                protocol: Protocol::Tickwire,
                procs: vec![proc],
                store: None,
            })
        }
        Target::Binance(inner) => {
            let mut running = match &**inner {
                Target::Spawn { extra, .. } => {
                    let mut extra = extra.clone();
                    extra.extend(["--binance-listen".to_owned(), "127.0.0.1:0".to_owned()]);
                    let (proc, endpoint, binance) =
                        spawn::spawn_node(&self::server_bin(server_bin)?, "tickwire", &extra)?;
                    let mut running = Running {
                        publish: endpoint,
                        subscribe: Vec::new(),
                        protocol: Protocol::Binance,
                        procs: vec![proc],
                        store: None,
                    };
                    match binance {
                        Some(b) => running.subscribe.push(b),
                        None => {
                            running.stop();
                            return Err(TargetError::NoBinance);
                        }
                    }
                    running
                }
                other => start(other, pids, server_bin)?,
            };
            running.protocol = Protocol::Binance;
            Ok(running)
        }
        Target::Nats {
            gateways, extra, ..
        } => spawn::spawn_deployment(&self::server_bin(server_bin)?, *gateways, extra),
    }
}

/// `GET /metrics` of a tickwire server: each sample line's name (with its
/// labels, if any) and value.
pub fn fetch_metrics(addr: SocketAddr, limit: Duration) -> Result<HashMap<String, f64>, String> {
    let mut s = TcpStream::connect_timeout(&addr, limit).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(limit))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    s.read_to_end(&mut body).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&body);
    let (head, rest) = text.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or("").to_owned());
    }
    Ok(rest
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.trim().to_owned(), value.trim().parse().ok()?))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert!(matches!(
            Target::parse("self", &[]),
            Ok(Target::Spawn { .. })
        ));
        assert!(matches!(
            Target::parse("nats:2", &[]),
            Ok(Target::Nats { gateways: 2, .. })
        ));
        assert!(Target::parse("nats:x", &[]).is_err());
        assert!(Target::parse("nats:99", &[]).is_err());
        match Target::parse("ws://a:1", &[]) {
            Ok(Target::Urls { publish, subscribe }) => {
                assert_eq!(publish, "ws://a:1");
                assert_eq!(subscribe, ["ws://a:1"]);
            }
            other => panic!("{other:?}"),
        }
        match Target::parse("ws://g1:1, pub:ws://i:1,ws://g2:1", &[]) {
            Ok(Target::Urls { publish, subscribe }) => {
                assert_eq!(publish, "ws://i:1");
                assert_eq!(subscribe, ["ws://g1:1", "ws://g2:1"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(Target::parse("pub:ws://i:1", &[]).is_err());
        match Target::parse("nats:1 --bus-memory", &["--workers=1".into()]) {
            Ok(t @ Target::Nats { .. }) => {
                assert_eq!(t.describe(), "nats:1 --bus-memory");
                let Target::Nats { extra, .. } = t else {
                    unreachable!()
                };
                assert_eq!(extra, ["--workers=1", "--bus-memory"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(Target::parse("ws://a:1 --workers=1", &[]).is_err());
        assert!(Target::urls("pub:ws://i:1,ws://g:1", Some("ws://x:1")).is_err());
        match Target::urls("ws://g:1", Some("ws://i:1")) {
            Ok(t) => assert_eq!(t.short(), "g:1<i:1"),
            Err(e) => panic!("{e}"),
        }
    }
}
