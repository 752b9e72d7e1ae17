//! Every call into libc, for the server and for the benchmark runner
//! (`tools/bench`), behind safe functions.
//!
//! This is the one module besides the ring allowed `unsafe` code: each block
//! is a single foreign call whose arguments are plain integers or structs
//! owned by the caller, with a `SAFETY:` comment saying why that holds.
//! Callers never see a `libc` type: signals are a [`Signal`], limits a
//! [`FdLimit`].

#![allow(unsafe_code)]

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

/// Clock ticks per second, the unit of CPU times in `/proc/*/stat`
/// (`None` if the system does not say).
pub fn clock_ticks_per_second() -> Option<u64> {
    // SAFETY: sysconf only reads a system constant; it has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0)
}

/// The page size in bytes, the unit of `/proc/*/statm` (`None` if the
/// system does not say).
pub fn page_size() -> Option<u64> {
    // SAFETY: sysconf only reads a system constant; it has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|&p| p > 0)
}

// The allocator's option table (mimalloc's own C API: the `mimalloc`
// crate does not wrap it).
use mimalloc as _;
unsafe extern "C" {
    fn mi_option_get(option: libc::c_int) -> libc::c_long;
    fn mi_option_set(option: libc::c_int, value: libc::c_long);
}

/// `mi_option_purge_delay`: its place in `mi_option_e` (include/mimalloc.h
/// of the mimalloc v2 the `mimalloc` crate builds; default 10 ms). The
/// unit test checks it by that default.
const MI_OPTION_PURGE_DELAY: libc::c_int = 15;

/// How long (ms) mimalloc keeps memory it no longer uses before returning
/// it to the OS, unless `MIMALLOC_PURGE_DELAY` in the environment says
/// (benches/README.md, "Where a book update cost more than a trade"):
/// v2's default of 10 ms made a server descheduled for longer give its
/// free pages back and fault them in again, zeroed (as huge pages), moments
/// later; mimalloc v3 defaults to 1000 ms.
pub fn set_allocator_purge_delay(ms: i64) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: mi_option_set stores an integer in mimalloc's option table;
    // it has no preconditions, and every value is valid for the purge
    // delay (-1: never).
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, ms as libc::c_long) }
}

/// mimalloc's purge delay in force (ms).
pub fn allocator_purge_delay() -> i64 {
    // SAFETY: mi_option_get reads mimalloc's option table (initialising
    // the option from the environment on first use); no preconditions.
    unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) as i64 }
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

/// Turns transparent huge pages off for this process (`prctl
/// PR_SET_THP_DISABLE`): from now on no page fault of the process is
/// served with a 2 MiB page, whatever `madvise` its allocator made.
///
/// Why: mimalloc advises `MADV_HUGEPAGE` on its segments, and where the
/// kernel's THP `defrag` setting is `madvise` (a common default) the first
/// touch of such a region zeroes a 2 MiB page and may compact memory
/// synchronously first: the worker thread stalls for 1–10 ms in the middle
/// of a fan-out pass (seen with `perf record` at light load, while the
/// history grew). 4 KiB faults cost a microsecond each, spread out.
pub fn disable_transparent_huge_pages() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and only
    // sets a flag on this process's memory descriptor.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1 as libc::c_ulong, 0, 0, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The option index is mimalloc's purge delay: it reads as that
    /// option's documented default (10 ms) until set, then as set.
    #[test]
    fn the_allocator_purge_delay_is_set_and_read_back() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // the environment decides; nothing of ours to check
        }
        assert_eq!(super::allocator_purge_delay(), 10);
        super::set_allocator_purge_delay(1000);
        assert_eq!(super::allocator_purge_delay(), 1000);
    }

    #[test]
    fn thread_cpu_time_counts_this_threads_work_only() {
        let before = super::thread_cpu_time();
        // Sleeping is not running...
        std::thread::sleep(std::time::Duration::from_millis(20));
        let slept = super::thread_cpu_time() - before;
        // ...and spinning is.
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(20) {
            std::hint::black_box(0u64);
        }
        let spun = super::thread_cpu_time() - before;
        assert!(slept < std::time::Duration::from_millis(10), "{slept:?}");
        assert!(spun > slept, "{spun:?} vs {slept:?}");
    }

    #[test]
    fn transparent_huge_pages_can_be_turned_off() {
        // The flag is per process and inherited: set it in a child.
        if std::env::var_os("TICKWIRE_THP_CHILD").is_some() {
            super::disable_transparent_huge_pages().unwrap();
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            assert!(status.contains("THP_enabled:\t0"), "{status}");
            return;
        }
        let me = std::env::current_exe().unwrap();
        let out = std::process::Command::new(me)
            .args([
                "--exact",
                "sys::tests::transparent_huge_pages_can_be_turned_off",
                "--nocapture",
            ])
            .env("TICKWIRE_THP_CHILD", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "{text}");
    }

    #[test]
    fn a_thread_enters_a_network_namespace_alone() {
        let here = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let r = std::thread::spawn(|| {
            super::enter_net_namespace(std::path::Path::new("/proc/1/ns/net"))
                .map(|()| std::fs::read_link("/proc/thread-self/ns/net").unwrap())
        })
        .join()
        .unwrap();
        match r {
            Ok(there) => {
                assert!(super::is_root());
                assert_eq!(there, std::fs::read_link("/proc/1/ns/net").unwrap());
            }
            // Not allowed without CAP_SYS_ADMIN: refused, not crashed.
            Err(e) => assert!(!super::is_root() || e.kind() != std::io::ErrorKind::NotFound),
        }
        // The calling thread did not move.
        assert_eq!(
            std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
            here
        );
    }

    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Child;
    use std::time::{Duration, Instant};

    /// Waits at most 10 s for a child; kills it and fails after that.
    fn wait_bounded(mut child: Child) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the child did not end within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn fd_limit_is_raised_never_lowered() {
        // Other tests raise the limit too, in parallel: each assertion holds
        // whatever they do in between (nobody lowers it).
        let l = raise_fd_limit(0, 0).unwrap();
        assert_eq!(l.soft, l.was, "nothing needed: nothing changes");
        assert!(l.soft <= l.hard);
        let up = raise_fd_limit(u64::MAX, u64::MAX).unwrap();
        assert!(up.was >= l.soft);
        assert_eq!(up.soft, up.hard);
        let again = raise_fd_limit(u64::MAX, 1).unwrap();
        assert_eq!(again.soft, again.was, "aiming lower does not lower it");
        assert_eq!(again.soft, up.soft);
    }

    #[test]
    fn system_constants_are_there() {
        assert!(clock_ticks_per_second().unwrap() >= 1);
        let page = page_size().unwrap();
        assert!(page >= 4096 && page.is_power_of_two());
    }

    #[test]
    fn thread_ids_are_this_process_threads() {
        let me = thread_id();
        let other = std::thread::spawn(thread_id).join().unwrap();
        assert_ne!(me, other);
        assert!(std::path::Path::new(&format!("/proc/self/task/{me}")).exists());
    }

    #[test]
    fn absolute_sleeps_end_at_or_after_their_deadline() {
        let start = monotonic_ns();
        let deadline = start + 2_000_000;
        sleep_until_monotonic(deadline);
        assert!(monotonic_ns() >= deadline);
        // A deadline in the past returns at once (no wrap-around).
        sleep_until_monotonic(start);
        assert!(monotonic_ns() >= start);
    }

    #[test]
    fn thread_priority_is_raised_or_refused_with_a_reason() {
        std::thread::spawn(|| {
            match set_thread_fifo(5) {
                Ok(()) => {
                    // SAFETY: pid 0 is this thread; the call takes no pointer.
                    let policy = unsafe { libc::sched_getscheduler(0) };
                    assert_eq!(policy, libc::SCHED_FIFO);
                }
                Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}"),
            }
        })
        .join()
        .unwrap();
        std::thread::spawn(|| {
            // Raising nice (lowering priority) is always allowed.
            set_thread_nice(5).unwrap();
            let tid = thread_id() as libc::id_t;
            // SAFETY: getpriority takes plain integers and reads thread `tid`'s nice.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
            assert_eq!(nice, 5);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn timer_slack_is_set_for_this_thread() {
        std::thread::spawn(|| {
            set_timer_slack(1000).unwrap();
            // SAFETY: PR_GET_TIMERSLACK takes no pointer; it returns the slack.
            let now = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
            assert_eq!(now, 1000);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn affinity_is_set_and_read_back_for_a_thread() {
        std::thread::spawn(|| {
            let all = affinity(0).unwrap();
            assert!(!all.is_empty());
            let one = [*all.last().unwrap()];
            set_affinity(0, &one).unwrap();
            assert_eq!(affinity(0).unwrap(), one);
            let me = thread_id() as u32;
            assert_eq!(affinity(me).unwrap(), one);
            assert_eq!(
                set_affinity(0, &[]).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
            assert!(set_affinity(0, &[1 << 20]).is_err());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn kill_sends_the_signal_asked_for() {
        for (signal, raw) in [
            (Signal::Interrupt, libc::SIGINT),
            (Signal::Terminate, libc::SIGTERM),
            (Signal::Kill, libc::SIGKILL),
        ] {
            let child = Command::new("sleep").arg("30").spawn().unwrap();
            kill(child.id(), signal).unwrap();
            assert_eq!(wait_bounded(child).signal(), Some(raw));
        }
        assert!(kill(u32::MAX, Signal::Terminate).is_err());
        assert!(kill(0, Signal::Terminate).is_err());
    }

    #[test]
    fn a_child_dies_with_the_thread_that_spawned_it() {
        let child = std::thread::spawn(|| {
            let mut cmd = Command::new("sleep");
            cmd.arg("30");
            die_with_parent(&mut cmd, Signal::Terminate);
            cmd.spawn().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(wait_bounded(child).signal(), Some(libc::SIGTERM));
    }

    #[test]
    fn fd_limit_reads_without_changing() {
        let a = fd_limit().unwrap();
        assert_eq!(a.was, a.soft);
        assert!(a.soft <= a.hard);
        assert_eq!(fd_limit().unwrap(), a);
    }

    #[test]
    fn a_child_starts_with_the_lowered_fd_limit() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "ulimit -n"]);
        start_with_fd_limit(&mut cmd, 200);
        let out = cmd.output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "200");
    }
}
