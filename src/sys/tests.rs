//! Each call of `sys`, made for real.

use super::*;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Child;
use std::process::Command;
use std::time::{Duration, Instant};

/// The option index is mimalloc's purge delay: it reads as that
/// option's documented default (10 ms) until set, then as set.
#[test]
fn the_allocator_purge_delay_is_set_and_read_back() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return; // the environment decides; nothing of ours to check
    }
    assert_eq!(allocator_purge_delay(), 10);
    set_allocator_purge_delay(1000);
    assert_eq!(allocator_purge_delay(), 1000);
}

#[test]
fn thread_cpu_time_counts_this_threads_work_only() {
    let before = thread_cpu_time();
    // Sleeping is not running...
    std::thread::sleep(std::time::Duration::from_millis(20));
    let slept = thread_cpu_time() - before;
    // ...and spinning is.
    let spin = std::time::Instant::now();
    while spin.elapsed() < std::time::Duration::from_millis(20) {
        std::hint::black_box(0u64);
    }
    let spun = thread_cpu_time() - before;
    assert!(slept < std::time::Duration::from_millis(10), "{slept:?}");
    assert!(spun > slept, "{spun:?} vs {slept:?}");
}

#[test]
fn transparent_huge_pages_can_be_turned_off() {
    // The flag is per process and inherited: set it in a child.
    if std::env::var_os("TICKWIRE_THP_CHILD").is_some() {
        disable_transparent_huge_pages().unwrap();
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
        enter_net_namespace(std::path::Path::new("/proc/1/ns/net"))
            .map(|()| std::fs::read_link("/proc/thread-self/ns/net").unwrap())
    })
    .join()
    .unwrap();
    match r {
        Ok(there) => {
            assert!(is_root());
            assert_eq!(there, std::fs::read_link("/proc/1/ns/net").unwrap());
        }
        // Not allowed without CAP_SYS_ADMIN: refused, not crashed.
        Err(e) => assert!(!is_root() || e.kind() != std::io::ErrorKind::NotFound),
    }
    // The calling thread did not move.
    assert_eq!(
        std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
        here
    );
}

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
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        // The child starts with the signal's default action whatever this
        // test inherited: a shell's background job (`cargo test &`, a CI
        // script started with `&`) runs with SIGINT ignored, and `sleep`
        // would inherit that and never end.
        // SAFETY: the closure runs in the forked child before exec; it makes
        // one `signal` call, which is async-signal-safe, and neither
        // allocates nor takes a lock.
        unsafe {
            cmd.pre_exec(move || {
                libc::signal(raw, libc::SIG_DFL);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
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
