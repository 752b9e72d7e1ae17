//! The server under test: a URL someone else runs, or a `tickwire serve`
//! the runner starts in a child process (never in its own process: the
//! runner and the server must not share a runtime or an allocator).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::procstat;
use super::ws::{Endpoint, WsError};

/// Children to kill if the runner's hard timeout fires.
pub static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Why the server under test could not be started or reached.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Url(#[from] WsError),
    #[error("cannot find the tickwire binary to start a server: {0}")]
    Exe(#[source] std::io::Error),
    #[error("cannot start `tickwire serve`: {0}")]
    Spawn(#[source] std::io::Error),
    #[error(
        "`tickwire serve` exited ({status}) before listening; its log ({log}) ends with:\n{tail}"
    )]
    Exited {
        status: String,
        log: String,
        tail: String,
    },
    #[error("`tickwire serve` did not report its address within {0:?}")]
    NoAddress(Duration),
}

/// What to measure.
#[derive(Clone, Debug)]
pub enum Target {
    /// Start `tickwire serve` with these extra flags.
    Spawn {
        extra: Vec<String>,
    },
    Url(String),
}

impl Target {
    pub fn parse(s: &str, extra: &[String]) -> Target {
        if s == "self" {
            Target::Spawn {
                extra: extra.to_vec(),
            }
        } else {
            Target::Url(s.to_owned())
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Spawn { .. } => "tickwire".into(),
            Target::Url(u) => u.clone(),
        }
    }
}

/// A server being measured.
pub struct Running {
    pub endpoint: Endpoint,
    /// The server's process, when it is on this machine and visible.
    pub pid: Option<u32>,
    child: Option<Child>,
    pub log: Option<PathBuf>,
}

impl Running {
    pub fn spawned(&self) -> bool {
        self.child.is_some()
    }

    /// `Some(description)` once the server process has gone.
    pub fn exited(&mut self) -> Option<String> {
        if let Some(c) = &mut self.child {
            return match c.try_wait() {
                Ok(Some(st)) => Some(st.to_string()),
                _ => None,
            };
        }
        match self.pid {
            Some(pid) if !procstat::alive(pid) => Some("gone".into()),
            _ => None,
        }
    }

    /// Stops a spawned server (SIGTERM, then SIGKILL after 5 s). Returns a
    /// note when it did not exit cleanly.
    pub fn stop(mut self) -> Option<String> {
        let mut child = self.child.take()?;
        let pid = child.id();
        // SAFETY: kill() on our own child's pid.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break None,
            }
        };
        CHILDREN
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|&p| p != pid);
        match status {
            Some(st) if st.success() => {
                if let Some(log) = &self.log {
                    let _ = std::fs::remove_file(log);
                }
                None
            }
            Some(st) => Some(format!("the spawned server exited with {st} on SIGTERM")),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Some("the spawned server did not exit within 5 s of SIGTERM; killed".into())
            }
        }
    }
}

/// Starts or resolves the target. `pid` overrides the process to sample
/// for a URL target; otherwise a loopback server's pid is looked up.
pub fn start(target: &Target, pid: Option<u32>) -> Result<Running, TargetError> {
    match target {
        Target::Url(url) => {
            let endpoint = Endpoint::parse(url)?;
            let pid = pid.or_else(|| {
                endpoint
                    .is_loopback()
                    .then(|| procstat::find_listener_pid(endpoint.addr))
                    .flatten()
            });
            Ok(Running {
                endpoint,
                pid,
                child: None,
                log: None,
            })
        }
        Target::Spawn { extra } => spawn(extra),
    }
}

fn spawn(extra: &[String]) -> Result<Running, TargetError> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(TargetError::Exe)?;
    let dir = std::env::temp_dir();
    let tag = format!(
        "tickwire-bench-{}-{}",
        std::process::id(),
        crate::tick::wall_clock_ns()
    );
    let addr_file = dir.join(format!("{tag}.addr"));
    let log = dir.join(format!("{tag}.log"));
    let log_file = std::fs::File::create(&log).map_err(TargetError::Spawn)?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--no-feed",
        "--addr-file",
    ])
    .arg(&addr_file)
    .args(extra)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(log_file)
    // Per-connection logs at 10,000 clients would cost the server CPU.
    .env(
        "RUST_LOG",
        std::env::var("TICKWIRE_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
    );
    // SAFETY: prctl is async-signal-safe; it makes the server die with the
    // runner, so a crashed or killed runner leaves no server behind.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(TargetError::Spawn)?;
    CHILDREN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(child.id());
    let limit = Duration::from_secs(10);
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(&addr_file) {
            let _ = std::fs::remove_file(&addr_file);
            let endpoint = Endpoint::parse(&format!("ws://{}", text.trim()))?;
            return Ok(Running {
                endpoint,
                pid: Some(child.id()),
                child: Some(child),
                log: Some(log),
            });
        }
        if let Ok(Some(st)) = child.try_wait() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(10).collect();
            return Err(TargetError::Exited {
                status: st.to_string(),
                log: log.display().to_string(),
                tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(TargetError::NoAddress(limit));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
