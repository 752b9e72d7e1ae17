//! `--pin-server` and `--pin-runner`: the server (every thread of every
//! process of the target, a peer found by its listening socket included)
//! on one set of CPUs, the runner's own threads (clients, publisher) on
//! another, so that on a small machine the server's efficiency is measured
//! apart from the runner's appetite for CPU. A tickwire server the runner
//! starts gets `--workers` equal to the CPUs it is given.
//!
//! Affinity is set with `sched_setaffinity` through `tickwire::sys`; a
//! thread created later inherits its creator's set, so pinning every thread
//! a process has once it is serving covers the ones it starts afterwards.

use std::io;

use crate::BenchError;
use crate::tickwire_lib::sys;

/// Which CPUs the server and the runner run on.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub(crate) struct Pinning {
    /// `--pin-server`: every thread of the target's processes; empty = not pinned.
    pub server: Vec<usize>,
    /// `--pin-runner`: this process (client threads, publisher); empty = not pinned.
    pub runner: Vec<usize>,
}

/// A CPU list flag's value (a type of its own: clap would read a bare
/// `Vec` as a flag given several times).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

/// [`parse_cpus`] for clap.
pub(crate) fn parse_cpu_list(s: &str) -> Result<CpuList, String> {
    parse_cpus(s).map(CpuList)
}

/// `0`, `0-3`, `0,2-3`: a CPU list as `taskset -c` writes it.
pub(crate) fn parse_cpus(s: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("`{s}`: write CPUs as taskset -c does, e.g. 0 or 0-1 or 0,2-3");
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if a > b || b >= 1024 {
            return Err(bad());
        }
        cpus.extend(a..=b);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

impl Pinning {
    /// The pinning the flags ask for, checked against the CPUs this runner
    /// may use (a CPU outside them could not be given to anyone).
    pub(crate) fn from_flags(
        server: Option<&CpuList>,
        runner: Option<&CpuList>,
    ) -> Result<Pinning, BenchError> {
        let p = Pinning {
            server: server.map(|c| c.0.clone()).unwrap_or_default(),
            runner: runner.map(|c| c.0.clone()).unwrap_or_default(),
        };
        if p.server.is_empty() && p.runner.is_empty() {
            return Ok(p);
        }
        let allowed = sys::affinity(0).map_err(BenchError::Thread)?;
        for c in p.server.iter().chain(&p.runner) {
            if !allowed.contains(c) {
                return Err(BenchError::Usage(format!(
                    "CPU {c} is not one this runner may use (allowed: {allowed:?})"
                )));
            }
        }
        Ok(p)
    }

    pub(crate) fn is_set(&self) -> bool {
        !self.server.is_empty() || !self.runner.is_empty()
    }

    /// Pins the calling thread (call it first on the main thread: every
    /// thread the runner starts afterwards inherits the set).
    pub(crate) fn pin_runner(&self) -> io::Result<()> {
        if self.runner.is_empty() {
            return Ok(());
        }
        sys::set_affinity(0, &self.runner)
    }

    /// Pins every thread of each process in `pids` to the server's CPUs;
    /// returns how many threads were pinned.
    pub(crate) fn pin_server(&self, pids: &[u32]) -> io::Result<usize> {
        if self.server.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        for &pid in pids {
            for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
                let Some(tid) = task?.file_name().to_str().and_then(|t| t.parse().ok()) else {
                    continue;
                };
                // A thread that ended meanwhile is no error.
                match sys::set_affinity(tid, &self.server) {
                    Ok(()) => n += 1,
                    Err(e) if e.raw_os_error() == Some(3) => {} // ESRCH
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(n)
    }

    /// How the report names it: `server 0, runner 1`.
    pub(crate) fn describe(&self) -> String {
        let list = |v: &[usize]| {
            if v.is_empty() {
                "any".to_owned()
            } else {
                v.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
            }
        };
        format!(
            "server on CPU {}, runner on CPU {}",
            list(&self.server),
            list(&self.runner)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_as_taskset_writes_them() {
        assert_eq!(parse_cpus("0").unwrap(), [0]);
        assert_eq!(parse_cpus("0-2").unwrap(), [0, 1, 2]);
        assert_eq!(parse_cpus("3,0-1,1").unwrap(), [0, 1, 3]);
        for bad in ["", "a", "2-1", "0,", "5000", "-1"] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
        use clap::Parser as _;
        let args = crate::BenchArgs::try_parse_from([
            "tickwire-bench",
            "--pin-server",
            "0",
            "--pin-runner",
            "1-2",
        ])
        .unwrap();
        assert_eq!(args.pin_server, Some(CpuList(vec![0])));
        assert_eq!(args.pin_runner, Some(CpuList(vec![1, 2])));
    }

    #[test]
    fn a_child_process_is_pinned_thread_by_thread() {
        let allowed = sys::affinity(0).unwrap();
        let one = vec![*allowed.last().unwrap()];
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let p = Pinning {
            server: one.clone(),
            runner: Vec::new(),
        };
        let n = p.pin_server(&[child.id()]);
        let got = sys::affinity(child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(n.unwrap(), 1);
        assert_eq!(got.unwrap(), one);
        assert!(
            Pinning::from_flags(Some(&CpuList(vec![1000])), None).is_err(),
            "a CPU this runner may not use is refused"
        );
    }
}
