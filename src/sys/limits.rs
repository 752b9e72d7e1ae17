//! The open-file limit: raised by `serve` and the runner, lowered for a
//! child in tests.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The open-file limit (RLIMIT_NOFILE) around a [`raise_fd_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit before: what the process was started with.
    pub was: u64,
    /// The soft limit now: how many descriptors the process can open.
    pub soft: u64,
    /// The ceiling an unprivileged process may raise its soft limit to.
    pub hard: u64,
}

/// Raises the soft open-file limit when it is below `need`: to `aim`, or to
/// the hard limit if that is lower. It never lowers it, and leaves it alone
/// when it is already at `need` or above.
///
/// `serve` passes `u64::MAX` twice (everything the hard limit allows: each
/// connection holds a descriptor); the runner passes what its clients need,
/// and checks [`FdLimit::hard`] itself.
pub fn raise_fd_limit(need: u64, aim: u64) -> io::Result<FdLimit> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let was = r.rlim_cur;
    let to = aim.min(r.rlim_max);
    if r.rlim_cur < need && r.rlim_cur < to {
        r.rlim_cur = to;
        // SAFETY: setrlimit reads the struct we own, nothing else.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(FdLimit {
        was,
        soft: r.rlim_cur,
        hard: r.rlim_max,
    })
}

/// The open-file limit now, without changing it (`was` equals `soft`).
pub fn fd_limit() -> io::Result<FdLimit> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(FdLimit {
        was: r.rlim_cur,
        soft: r.rlim_cur,
        hard: r.rlim_max,
    })
}

/// Makes the child that `cmd` spawns start with its soft open-file limit
/// lowered to `soft` (never raised): how tests start a server the way a
/// shell with `ulimit -n` would.
pub fn start_with_fd_limit(cmd: &mut Command, soft: u64) {
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed: getrlimit and setrlimit are, and
    // the closure neither allocates nor takes a lock.
    unsafe {
        cmd.pre_exec(move || {
            let mut r = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
                r.rlim_cur = r.rlim_cur.min(soft as libc::rlim_t);
                libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            }
            Ok(())
        });
    }
}
