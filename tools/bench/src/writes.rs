//! Deliveries per write: how many ticks the server hands the kernel per
//! `write()`-family call, the figure its batching exists to raise (on
//! loopback most of a delivery's cost is the kernel's, per write).
//!
//! Two sources, over the same window as the CPU figures (publish start to
//! the end of the drain):
//! - **tickwire's `/metrics`** (`tickwire_tick_writes_total`,
//!   `tickwire_tick_deliveries_total`), read before and after from every
//!   subscribe endpoint that has them; free, and always on.
//! - **System calls** (`--count-syscalls`): `perf stat` counts the target's
//!   `sendto`/`write`/`writev`/`sendmsg` and `recvfrom`/`read` calls, for
//!   any server (the uWS peer has no such metric). Needs `perf` and the
//!   right to trace the server's processes (root, or
//!   `kernel.perf_event_paranoid` ≤ -1). Deliveries per write is then the
//!   ticks the clients received over those calls.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::Serialize;

use crate::target::{self, Running};
use crate::tickwire_lib::sys::{self, Signal};

/// System calls counted as writes (every one a server may send with).
const WRITE_CALLS: [&str; 4] = ["sendto", "write", "writev", "sendmsg"];
/// System calls counted as reads.
const READ_CALLS: [&str; 2] = ["recvfrom", "read"];

/// What was counted, for the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WritesReport {
    /// From `/metrics`: writes that carried live ticks, and those ticks.
    pub metrics_tick_writes: Option<u64>,
    pub metrics_tick_deliveries: Option<u64>,
    /// Their ratio.
    pub metrics_deliveries_per_write: Option<f64>,
    /// From `perf stat` (`--count-syscalls`): write-family calls of the
    /// target's processes.
    pub syscall_writes: Option<u64>,
    /// Read-family calls (the publisher's socket among them).
    pub syscall_reads: Option<u64>,
    /// Ticks delivered to the clients per write-family call.
    pub syscall_deliveries_per_write: Option<f64>,
    /// Why a source gave nothing, when it was asked for.
    pub note: Option<String>,
}

impl WritesReport {
    /// The best figure there is: by system calls (the same for every
    /// server), else by tickwire's own counters.
    pub fn deliveries_per_write(&self) -> Option<f64> {
        self.syscall_deliveries_per_write
            .or(self.metrics_deliveries_per_write)
    }
}

/// Counting in progress; [`WriteCounter::finish`] reads the totals.
pub(crate) struct WriteCounter {
    /// Each subscribe endpoint's (writes, deliveries) when counting began.
    metrics: Vec<(SocketAddr, Option<(f64, f64)>)>,
    /// The `perf stat` process and its output file.
    perf: Option<(Child, PathBuf)>,
    note: Option<String>,
}

fn tick_counters(addr: SocketAddr) -> Option<(f64, f64)> {
    let m = target::fetch_metrics(addr, Duration::from_secs(2)).ok()?;
    Some((
        *m.get("tickwire_tick_writes_total")?,
        *m.get("tickwire_tick_deliveries_total")?,
    ))
}

impl WriteCounter {
    /// Starts counting for `running` (system calls too if `syscalls`).
    pub(crate) fn start(running: &Running, syscalls: bool) -> WriteCounter {
        let metrics = running
            .subscribe
            .iter()
            .map(|ep| (ep.addr, tick_counters(ep.addr)))
            .collect();
        let mut note = None;
        if running.subscribe.iter().any(|ep| ep.tls) {
            // fetch_metrics speaks plain HTTP only; a TLS port refuses it.
            note = Some(
                "wss://: /metrics is not read over TLS, so deliveries per write come only from --count-syscalls".into(),
            );
        }
        let pids = running.pids();
        let perf = if !syscalls {
            None
        } else if pids.is_empty() {
            note = Some("--count-syscalls: no local server process to count".into());
            None
        } else {
            match start_perf(&pids) {
                Ok(p) => Some(p),
                Err(e) => {
                    note = Some(format!("--count-syscalls: perf stat: {e}"));
                    None
                }
            }
        };
        WriteCounter {
            metrics,
            perf,
            note,
        }
    }

    /// Stops counting; `delivered` is what the clients received meanwhile.
    pub(crate) fn finish(self, delivered: u64) -> WritesReport {
        let mut r = WritesReport {
            note: self.note,
            ..WritesReport::default()
        };
        let mut sum = Some((0.0, 0.0));
        for (addr, before) in self.metrics {
            sum = match (sum, before, tick_counters(addr)) {
                (Some((w, d)), Some((w0, d0)), Some((w1, d1))) => Some((w + w1 - w0, d + d1 - d0)),
                _ => None,
            };
        }
        if let Some((w, d)) = sum.filter(|&(w, _)| w > 0.0) {
            r.metrics_tick_writes = Some(w as u64);
            r.metrics_tick_deliveries = Some(d as u64);
            r.metrics_deliveries_per_write = Some(d / w);
        }
        if let Some((child, out)) = self.perf {
            match stop_perf(child, &out) {
                Ok((writes, reads)) => {
                    r.syscall_writes = Some(writes);
                    r.syscall_reads = Some(reads);
                    r.syscall_deliveries_per_write =
                        (writes > 0).then(|| delivered as f64 / writes as f64);
                }
                Err(e) => r.note = Some(format!("--count-syscalls: perf stat: {e}")),
            }
        }
        r
    }
}

fn start_perf(pids: &[u32]) -> Result<(Child, PathBuf), String> {
    let out = std::env::temp_dir().join(format!(
        "tickwire-bench-perf-{}-{}.csv",
        std::process::id(),
        pids[0]
    ));
    let events: Vec<String> = WRITE_CALLS
        .iter()
        .chain(&READ_CALLS)
        .map(|c| format!("syscalls:sys_enter_{c}"))
        .collect();
    let pid_list: Vec<String> = pids.iter().map(u32::to_string).collect();
    let child = Command::new("perf")
        .args(["stat", "-x", ",", "-o"])
        .arg(&out)
        .args(["-e", &events.join(","), "-p", &pid_list.join(",")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start perf ({e}); install linux-perf"))?;
    // perf attaches asynchronously: give it a moment before the window opens.
    std::thread::sleep(Duration::from_millis(300));
    Ok((child, out))
}

/// Stops `perf stat` (SIGINT makes it print its counts) and reads them:
/// (write-family calls, read-family calls).
fn stop_perf(mut child: Child, out: &PathBuf) -> Result<(u64, u64), String> {
    let _ = sys::kill(child.id(), Signal::Interrupt);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while child.try_wait().ok().flatten().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("did not stop within 5 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(out).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(out);
    parse_perf_csv(&text)
}

/// `perf stat -x ,` output: `COUNT,UNIT,EVENT,…` per event.
fn parse_perf_csv(text: &str) -> Result<(u64, u64), String> {
    let (mut writes, mut reads, mut seen) = (0u64, 0u64, 0);
    for line in text.lines() {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 3 {
            continue;
        }
        let Some(call) = f[2].strip_prefix("syscalls:sys_enter_") else {
            continue;
        };
        let Ok(n) = f[0].trim().parse::<u64>() else {
            return Err(format!(
                "{call} not counted ({}): is tracing allowed?",
                f[0].trim()
            ));
        };
        seen += 1;
        if WRITE_CALLS.contains(&call) {
            writes += n;
        } else if READ_CALLS.contains(&call) {
            reads += n;
        }
    }
    if seen == 0 {
        return Err(format!(
            "no counts in its output: {}",
            text.lines().last().unwrap_or("")
        ));
    }
    Ok((writes, reads))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_csv_counts_writes_and_reads_apart() {
        let text = "# started on Wed\n\n600676,,syscalls:sys_enter_sendto,5000,100.00,,\n3,,syscalls:sys_enter_write,5000,100.00,,\n0,,syscalls:sys_enter_writev,5000,100.00,,\n0,,syscalls:sys_enter_sendmsg,5000,100.00,,\n3963,,syscalls:sys_enter_recvfrom,5000,100.00,,\n12,,syscalls:sys_enter_read,5000,100.00,,\n";
        assert_eq!(parse_perf_csv(text).unwrap(), (600_679, 3_975));
        assert!(
            parse_perf_csv("<not supported>,,syscalls:sys_enter_sendto,0,0,,\n")
                .unwrap_err()
                .contains("sendto")
        );
        assert!(parse_perf_csv("").is_err());
    }
}
