//! What the runner learns from the OS: CPU seconds and RSS of a process or
//! thread (from `/proc`), which local process listens on a port, and the
//! file-descriptor limit.

use std::net::SocketAddr;

use crate::tickwire_lib::sys;

/// Why the file-descriptor limit is not enough.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error(
        "the file-descriptor limit is {hard} (hard), but {need} connections need about {want}: raise it (e.g. `ulimit -Hn {want}` as root, or LimitNOFILE= in a unit) and run again"
    )]
    TooLow { hard: u64, need: usize, want: u64 },
    #[error("cannot read or set RLIMIT_NOFILE: {0}")]
    Os(#[source] std::io::Error),
}

/// Raises the soft RLIMIT_NOFILE to fit `connections` (plus a margin), up to
/// the hard limit. Returns a note when it changed something. A server the
/// runner spawns inherits the raised limit.
pub fn raise_fd_limit(connections: usize) -> Result<Option<String>, LimitError> {
    let want = connections as u64 + 256;
    let l = sys::raise_fd_limit(want, want.max(65_536)).map_err(LimitError::Os)?;
    if l.hard < want {
        return Err(LimitError::TooLow {
            hard: l.hard,
            need: connections,
            want,
        });
    }
    Ok((l.soft != l.was).then(|| {
        format!(
            "raised the soft file-descriptor limit from {} to {} for {connections} connections",
            l.was, l.soft
        )
    }))
}

fn clock_ticks() -> f64 {
    sys::clock_ticks_per_second().map_or(100.0, |t| t as f64)
}

fn page_size() -> u64 {
    sys::page_size().unwrap_or(4096)
}

/// user + system CPU seconds from a `/proc/.../stat` file.
fn cpu_from_stat(path: &str) -> Option<f64> {
    let s = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'. utime and stime are fields 14 and 15 (1-based).
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// A `/proc/.../schedstat` file's first two fields, ns: time on a CPU (the
/// scheduler's own runtime) and time runnable but waiting on a run queue.
pub fn schedstat(path: &std::path::Path) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(path).ok()?;
    let mut fields = s.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some((fields.next()??, fields.next()??))
}

/// Seconds on a CPU from a `/proc/.../schedstat` file.
fn cpu_from_schedstat(path: &std::path::Path) -> Option<f64> {
    schedstat(path).map(|(ns, _)| ns as f64 / 1e9)
}

/// CPU seconds (user + system) a process has used, all threads.
///
/// Summed from each live thread's `schedstat`, which the scheduler keeps
/// to the nanosecond, rather than `stat`'s utime + stime: on a kernel with
/// tick-based CPU accounting (`CONFIG_TICK_CPU_ACCOUNTING`, HZ=250 on the
/// test VM) those are samples, one every 4 ms, so a server using 0.3 cores
/// for 5 s was measured from ~375 samples (±5% per run) and its CPU per
/// delivery depended on how its wakeups fell against the tick. Falls back
/// to `stat` where `schedstat` is not available.
pub fn process_cpu(pid: u32) -> Option<f64> {
    process_cpu_precise(pid).or_else(|| cpu_from_stat(&format!("/proc/{pid}/stat")))
}

/// The sum of a process's live threads' `schedstat` runtimes, plus what
/// threads that have exited used (only `stat` keeps that: the process's
/// total less its live threads', in ticks). `None` when a file cannot be
/// read (the caller falls back to `stat`).
fn process_cpu_precise(pid: u32) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let (mut precise, mut sampled) = (0.0, 0.0);
    for t in tasks {
        let dir = t.ok()?.path();
        precise += cpu_from_schedstat(&dir.join("schedstat"))?;
        // A thread that exits between the listing and here is left to the
        // process total below.
        sampled += cpu_from_stat(&dir.join("stat").to_string_lossy()).unwrap_or(0.0);
    }
    let total = cpu_from_stat(&format!("/proc/{pid}/stat"))?;
    Some(precise + (total - sampled).max(0.0))
}

/// CPU seconds one thread of this process has used.
pub fn thread_cpu(tid: i32) -> Option<f64> {
    cpu_from_stat(&format!("/proc/self/task/{tid}/stat"))
}

/// The whole machine's CPU time so far, summed over cores, from the first
/// line of `/proc/stat`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemCpu {
    /// Seconds spent running processes (user, nice, system, steal).
    pub process: f64,
    /// Seconds in hard and soft interrupts. On loopback this is mostly the
    /// receive side of TCP, which no process is charged for: it belongs to
    /// the server and the runner, not to "other processes".
    pub interrupts: f64,
}

pub fn system_cpu() -> Option<SystemCpu> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest is in user).
    let hz = clock_ticks();
    Some(SystemCpu {
        process: (v[0] + v[1] + v[2] + v[7]) / hz,
        interrupts: (v[5] + v[6]) / hz,
    })
}

/// Resident set size in bytes.
pub fn process_rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// This thread's id, for [`thread_cpu`].
pub fn current_tid() -> i32 {
    sys::thread_id()
}

pub fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The local process that listens on `addr`'s port, found through the
/// socket inode in `/proc/net/tcp{,6}` and the processes' fd links. `None`
/// when it is not local or not visible to us.
pub fn find_listener_pid(addr: SocketAddr) -> Option<u32> {
    let port = format!(":{:04X}", addr.port());
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is field 1, st field 3 (0A = LISTEN), inode 9.
            if f.len() > 9 && f[1].ends_with(&port) && f[3] == "0A" {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| link.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        assert!(process_cpu(me).is_some());
        // Where the kernel has schedstat (Linux does by default), this
        // thread's runtime moves with a little work, long before a 4 ms tick
        // would be sure to sample it; bounded, and no timing asserted.
        let own = std::path::PathBuf::from(format!("/proc/self/task/{}/schedstat", current_tid()));
        if let Some(before) = cpu_from_schedstat(&own) {
            assert!(process_cpu_precise(me).is_some());
            let mut x = 0u64;
            let mut moved = false;
            for _ in 0..10_000 {
                for _ in 0..100_000 {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                if cpu_from_schedstat(&own).unwrap() > before {
                    moved = true;
                    break;
                }
            }
            assert!(moved, "schedstat runtime did not move");
        }
        assert!(process_rss(me).unwrap() > 1024 * 1024);
        assert!(thread_cpu(current_tid()).is_some());
        let sys = system_cpu().unwrap();
        assert!(sys.process > 0.0 && sys.interrupts >= 0.0);
        assert!(alive(me));
    }

    #[test]
    fn finds_a_listener_in_this_process_only_when_it_is_not_us() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // We skip our own pid on purpose (the runner is never the server).
        assert_eq!(find_listener_pid(l.local_addr().unwrap()), None);
    }

    #[test]
    fn fd_limit_for_a_few_connections_is_fine() {
        raise_fd_limit(10).unwrap();
        // Either above the hard limit or refused by the kernel: an error.
        assert!(raise_fd_limit(usize::MAX / 2).is_err());
    }
}
