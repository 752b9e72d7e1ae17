//! The calling thread: its id, CPU time, clocks and absolute sleeps, timer
//! slack, CPU affinity and scheduling priority.

use std::io;

/// Clock ticks per second, the unit of CPU times in `/proc/*/stat`
/// (`None` if the system does not say).
pub fn clock_ticks_per_second() -> Option<u64> {
    // SAFETY: sysconf only reads a system constant; it has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0)
}

/// The calling thread's id, as in `/proc/self/task/<tid>`.
pub fn thread_id() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// Sets the calling thread's timer slack: how late the kernel may wake it
/// from a sleep to batch wake-ups (the default is 50 µs).
pub fn set_timer_slack(ns: u64) -> io::Result<()> {
    // SAFETY: PR_SET_TIMERSLACK takes one integer and changes only this
    // thread's slack; the unused arguments must be 0.
    let r = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Restricts thread `tid` (0: the calling thread) to the CPUs `cpus`
/// (sched_setaffinity). Threads it creates afterwards inherit the set, so
/// pinning a process means pinning each of its threads (`/proc/PID/task`).
/// Refuses an empty set and CPU numbers the kernel's set cannot hold.
pub fn set_affinity(tid: u32, cpus: &[usize]) -> io::Result<()> {
    let tid =
        libc::pid_t::try_from(tid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if cpus.is_empty() || cpus.iter().any(|&c| c >= libc::CPU_SETSIZE as usize) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: cpu_set_t is a plain bit array, valid when zeroed.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: `c` < CPU_SETSIZE (checked above), so the bit is inside `set`.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is an initialised cpu_set_t owned by us and its size is
    // passed with it; the call only reads it.
    let r = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The CPUs thread `tid` (0: the calling thread) may run on.
pub fn affinity(tid: u32) -> io::Result<Vec<usize>> {
    let tid =
        libc::pid_t::try_from(tid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: cpu_set_t is a plain bit array, valid when zeroed.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most `size_of_val(&set)` bytes into `set`,
    // which we own.
    let r = unsafe { libc::sched_getaffinity(tid, std::mem::size_of_val(&set), &mut set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c` < CPU_SETSIZE, so the bit is inside `set`.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`, ns
/// precise): the coalescing window's measure of a busy worker. Zero if the
/// clock cannot be read (it always can on Linux).
pub fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec owned by this frame; the call only
    // writes it.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CLOCK_MONOTONIC now, ns: the clock [`sleep_until_monotonic`] sleeps on
/// (a schedule kept in these units needs no conversion from `Instant`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec owned by this frame; the call only
    // writes it.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until CLOCK_MONOTONIC reads `deadline_ns` (`clock_nanosleep`
/// with `TIMER_ABSTIME`): an absolute deadline, so the time spent before
/// the call is not added to the sleep, and a signal cannot stretch it.
pub fn sleep_until_monotonic(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: `ts` is a valid timespec; with TIMER_ABSTIME the
        // remaining-time pointer is not used, so null is allowed.
        let r = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        // EINTR: a signal woke us before the deadline; sleep on.
        if r != libc::EINTR {
            return;
        }
    }
}

/// Puts the calling thread under SCHED_FIFO at `priority` (1–99): it then
/// runs as soon as it wakes, ahead of every ordinary thread on its CPU.
/// Needs CAP_SYS_NICE (root) or an RLIMIT_RTPRIO allowance; EPERM if not.
pub fn set_thread_fifo(priority: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` is a valid sched_param owned by this frame; pid 0
    // is the calling thread, and the call only reads `param`.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the calling thread's nice value (Linux applies `setpriority` to
/// one thread when given its tid). Lowering it below 0 needs CAP_SYS_NICE.
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    let tid = thread_id() as libc::id_t;
    // SAFETY: setpriority takes plain integers and changes only the
    // scheduling weight of thread `tid`, this one.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
