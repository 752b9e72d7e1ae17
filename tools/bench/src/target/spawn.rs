//! Starting what a `self` or `nats:N` target runs: `tickwire serve` nodes
//! and nats-server in child processes that die with the runner, each
//! waited for until it listens (and, for a deployment, is ready).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{CHILDREN, Proc, Running, TEMP_DIRS, TargetError, fetch_metrics, lock, stop_all};
use crate::binance::Protocol;
use crate::tickwire_lib::sys::{self, Signal};
use crate::tickwire_lib::wall_clock_ns;
use crate::ws::Endpoint;

/// The `tickwire` binary to run `serve` with: `given` (`--server-bin` or
/// `TICKWIRE_BIN`), else `tickwire` beside this runner's binary, where
/// `cargo build` puts both.
pub fn server_bin(given: Option<&Path>) -> Result<PathBuf, TargetError> {
    let path = match given {
        Some(p) => p.to_owned(),
        None => std::env::current_exe()
            .map_err(TargetError::Exe)?
            .with_file_name("tickwire"),
    };
    if !path.is_file() {
        return Err(TargetError::NoServerBin {
            path: path.display().to_string(),
        });
    }
    Ok(path)
}

fn temp_tag() -> String {
    format!("tickwire-bench-{}-{}", std::process::id(), wall_clock_ns())
}

/// The last lines of a log, for an error message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(10).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Spawns a child that dies with the runner and is killed by the watchdog.
fn spawn_child(mut cmd: Command, log: &Path) -> std::io::Result<Child> {
    let log_file = std::fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file);
    // The server dies with the runner, so a crashed or killed runner leaves
    // no server behind.
    sys::die_with_parent(&mut cmd, Signal::Terminate);
    let child = cmd.spawn()?;
    lock(&CHILDREN).push(child.id());
    Ok(child)
}

/// Starts `exe serve --no-feed` with `extra` and waits for its address;
/// and its Binance endpoint's, when `extra` has `--binance-listen` (the
/// `--addr-file`'s `binance ADDR` line).
pub(super) fn spawn_node(
    exe: &Path,
    role: &str,
    extra: &[String],
) -> Result<(Proc, Endpoint, Option<Endpoint>), TargetError> {
    let dir = std::env::temp_dir();
    let tag = format!("{}-{role}", temp_tag());
    let addr_file = dir.join(format!("{tag}.addr"));
    let log = dir.join(format!("{tag}.log"));
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
    // Per-connection logs at 10,000 clients would cost the server CPU.
    .env(
        "RUST_LOG",
        std::env::var("TICKWIRE_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
    );
    let mut child = spawn_child(cmd, &log).map_err(TargetError::Spawn)?;
    let what = if role == "tickwire" {
        "`tickwire serve`".to_owned()
    } else {
        format!("`tickwire serve` ({role})")
    };
    let text = wait_for_file(&mut child, &addr_file, &log, &what)?;
    let mut lines = text.lines().map(str::trim);
    let endpoint = Endpoint::parse(&format!("ws://{}", lines.next().unwrap_or("")))?;
    let binance = match lines.find_map(|l| l.strip_prefix("binance ")) {
        Some(addr) => Some(Endpoint::parse(&format!("ws://{}", addr.trim()))?),
        None => None,
    };
    Ok((
        Proc {
            role: role.to_owned(),
            pid: child.id(),
            child: Some(child),
            log: Some(log),
        },
        endpoint,
        binance,
    ))
}

/// Waits (10 s at most) for a child to write `file`; returns its text.
fn wait_for_file(
    child: &mut Child,
    file: &Path,
    log: &Path,
    what: &str,
) -> Result<String, TargetError> {
    let limit = Duration::from_secs(10);
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(file)
            && !text.trim().is_empty()
        {
            let _ = std::fs::remove_file(file);
            return Ok(text);
        }
        if let Ok(Some(st)) = child.try_wait() {
            lock(&CHILDREN).retain(|&p| p != child.id());
            return Err(TargetError::Exited {
                what: what.to_owned(),
                status: st.to_string(),
                log: log.display().to_string(),
                tail: tail(log),
            });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            lock(&CHILDREN).retain(|&p| p != child.id());
            return Err(TargetError::NoAddress {
                what: what.to_owned(),
                limit,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The nats-server executable: `TICKWIRE_NATS_SERVER`, else `nats-server`
/// on PATH, else the Debian package's `/usr/sbin/nats-server`.
pub fn nats_server_exe() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TICKWIRE_NATS_SERVER") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let p = PathBuf::from("/usr/sbin/nats-server");
        p.is_file().then_some(p)
    })
}

/// Starts nats-server with JetStream on a free loopback port (`-p -1`,
/// the port read back from its ports file) and a store in `dir`.
fn spawn_nats(dir: &Path) -> Result<(Proc, String), TargetError> {
    let exe = nats_server_exe().unwrap_or_else(|| PathBuf::from("nats-server"));
    let log = dir.join("nats-server.log");
    let mut cmd = Command::new(&exe);
    cmd.args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
        .arg(dir.join("store"))
        .arg("--ports_file_dir")
        .arg(dir);
    let mut child = spawn_child(cmd, &log).map_err(|source| TargetError::NatsSpawn {
        exe: exe.display().to_string(),
        source,
    })?;
    let exe_name = exe
        .file_name()
        .map_or("nats-server".into(), |n| n.to_string_lossy().into_owned());
    let ports = dir.join(format!("{exe_name}_{}.ports", child.id()));
    let text = wait_for_file(&mut child, &ports, &log, "nats-server")?;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let url = v["nats"][0].as_str().map(str::to_owned);
    let proc = Proc {
        role: "nats-server".into(),
        pid: child.id(),
        child: Some(child),
        log: None,
    };
    match url {
        Some(url) => Ok((proc, url)),
        None => {
            stop_all(vec![proc]);
            Err(TargetError::NotReady {
                limit: Duration::ZERO,
                why: format!("nats-server's ports file is not what was expected: {text}"),
            })
        }
    }
}

/// Starts nats-server, an ingest node and `gateways` gateways, and waits
/// until every gateway is connected and has the ingest node's heartbeat.
/// On any failure what was started is stopped.
pub(super) fn spawn_deployment(
    exe: &Path,
    gateways: usize,
    extra: &[String],
) -> Result<Running, TargetError> {
    let dir = std::env::temp_dir().join(format!("{}-nats", temp_tag()));
    std::fs::create_dir_all(&dir).map_err(|source| TargetError::NatsSpawn {
        exe: format!("nats-server (store {})", dir.display()),
        source,
    })?;
    lock(&TEMP_DIRS).push(dir.clone());
    let mut running = Running {
        publish: Endpoint::parse("ws://127.0.0.1:1")?,
        subscribe: Vec::new(),
        protocol: Protocol::Tickwire,
        procs: Vec::new(),
        store: Some(dir.clone()),
    };
    let mut build = || -> Result<(), TargetError> {
        let (nats, url) = spawn_nats(&dir)?;
        running.procs.push(nats);
        let node_args = |role: &str| -> Vec<String> {
            let mut a = vec![
                "--bus".to_owned(),
                url.clone(),
                "--role".to_owned(),
                role.to_owned(),
            ];
            a.extend(extra.iter().cloned());
            a
        };
        let (ingest, ep, _) = spawn_node(exe, "ingest", &node_args("ingest"))?;
        running.procs.push(ingest);
        running.publish = ep;
        for g in 1..=gateways {
            let (gw, ep, _) = spawn_node(exe, &format!("gateway-{g}"), &node_args("gateway"))?;
            running.procs.push(gw);
            running.subscribe.push(ep);
        }
        if gateways == 0 {
            running.subscribe.push(running.publish.clone());
        }
        wait_ready(&mut running)
    };
    match build() {
        Ok(()) => Ok(running),
        Err(e) => {
            let _ = running.stop();
            Err(e)
        }
    }
}

/// Every node connected to NATS; every gateway has a live feed (the
/// ingest node's heartbeat arrived).
fn wait_ready(running: &mut Running) -> Result<(), TargetError> {
    let limit = Duration::from_secs(15);
    let deadline = Instant::now() + limit;
    let nodes: Vec<(String, SocketAddr, bool)> =
        std::iter::once(("ingest".to_owned(), running.publish.addr, false))
            .chain(
                running
                    .subscribe
                    .iter()
                    .enumerate()
                    .filter(|(_, ep)| ep.addr != running.publish.addr)
                    .map(|(i, ep)| (format!("gateway-{}", i + 1), ep.addr, true)),
            )
            .collect();
    loop {
        let mut waiting = None;
        for (name, addr, gateway) in &nodes {
            let ok = match fetch_metrics(*addr, Duration::from_secs(2)) {
                Ok(m) => {
                    m.get("tickwire_bus_connected") == Some(&1.0)
                        && (!gateway || m.get("tickwire_feed_stale") == Some(&0.0))
                }
                Err(_) => false,
            };
            if !ok {
                waiting = Some(name.clone());
                break;
            }
        }
        let Some(name) = waiting else {
            return Ok(());
        };
        if let Some(st) = running.exited() {
            return Err(TargetError::NotReady {
                limit,
                why: format!("a process exited: {st}"),
            });
        }
        if Instant::now() > deadline {
            return Err(TargetError::NotReady {
                limit,
                why: format!(
                    "{name} is not connected to NATS or has no heartbeat from the ingest node (its /metrics)"
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
