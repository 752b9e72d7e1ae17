//! How long this machine takes to wake a thread blocked on another CPU:
//! the floor under every latency figure, since each tick crosses at least
//! two such wake-ups (publisher → server, server → client) on loopback
//! (benches/README.md, "Quiet re-run, stop 6").
//!
//! `cargo run --release -p tickwire-bench --example wake_latency -- [GAP_US] [SAMPLES] [WRITER_CPU] [READER_CPU]`
//! (defaults 1000 µs between messages, 5,000 samples, CPUs 1 and 0).
//!
//! A writer thread pinned to one CPU sends its CLOCK_MONOTONIC time through
//! a Unix socket pair every `GAP_US`; a reader pinned to the other CPU,
//! blocked in `read`, stamps each on arrival. The gap lets the reader's CPU
//! go idle between messages, as a feed server's does at light load, so the
//! figure includes waking an idle CPU (in a VM: the hypervisor scheduling
//! the halted vCPU again).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use tickwire::sys;

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .map(|a| a.parse().expect("a number"))
        .unwrap_or(default)
}

fn main() {
    let gap = Duration::from_micros(arg(1, 1000));
    let samples = arg(2, 5000) as usize;
    let (writer_cpu, reader_cpu) = (arg(3, 1) as usize, arg(4, 0) as usize);
    let (mut tx, mut rx) = UnixStream::pair().expect("a socket pair");
    let reader = std::thread::spawn(move || {
        sys::set_affinity(0, &[reader_cpu]).expect("pinning the reader");
        let mut lat = Vec::with_capacity(samples);
        let mut buf = [0u8; 8];
        for _ in 0..samples {
            rx.read_exact(&mut buf).expect("a timestamp");
            lat.push(sys::monotonic_ns().saturating_sub(u64::from_le_bytes(buf)));
        }
        lat
    });
    sys::set_affinity(0, &[writer_cpu]).expect("pinning the writer");
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..samples {
        std::thread::sleep(gap);
        tx.write_all(&sys::monotonic_ns().to_le_bytes())
            .expect("writing a timestamp");
    }
    let mut lat = reader.join().expect("the reader");
    lat.sort_unstable();
    let at = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize] as f64 / 1e3;
    println!(
        "gap {} µs, {samples} wake-ups, CPU {writer_cpu} -> CPU {reader_cpu}: p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
        gap.as_micros(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        at(1.0)
    );
}
