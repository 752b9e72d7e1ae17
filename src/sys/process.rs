//! Other processes: signals, a child dying with its parent, root, and
//! network namespaces.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// A signal sent to another process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT: nats-server exits 0 on it (1 on SIGTERM).
    Interrupt,
    /// SIGTERM: the polite request to stop (`serve` shuts down with 1001).
    Terminate,
    /// SIGKILL: when asking did not work or there is no time left.
    Kill,
}

impl Signal {
    fn raw(self) -> libc::c_int {
        match self {
            Signal::Interrupt => libc::SIGINT,
            Signal::Terminate => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        }
    }
}

/// Whether this process runs as root (effective uid 0): what creating
/// network namespaces and qdiscs needs (the thin-link test).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Moves the calling thread into the network namespace at `path` (e.g.
/// `/var/run/netns/NAME`, as `ip netns add` makes): the sockets it creates
/// from then on live there; other threads are unaffected. Needs
/// CAP_SYS_ADMIN. For tests that put a client behind a link they shape.
pub fn enter_net_namespace(path: &std::path::Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(path)?;
    // SAFETY: setns takes a descriptor that `ns` keeps open for the call
    // and a flag constant; it changes only this thread's network namespace
    // and touches no memory of ours.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `signal` to process `pid`.
pub fn kill(pid: u32, signal: Signal) -> io::Result<()> {
    // 0 and values past pid_t's range would mean a process group or every
    // process: refused.
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: kill takes two integers and touches no memory of ours; the pid
    // is positive, so it names one process.
    if unsafe { libc::kill(pid, signal.raw()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the child that `cmd` spawns receive `signal` when the thread that
/// spawned it ends (PR_SET_PDEATHSIG): a crashed or killed runner then
/// leaves no server behind. Note that it is the spawning *thread*, not the
/// process: spawn from a thread that lives as long as the child should.
pub fn die_with_parent(cmd: &mut Command, signal: Signal) {
    let sig = signal.raw() as libc::c_ulong;
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed: it makes one prctl call, which
    // is one, and neither allocates nor takes a lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
