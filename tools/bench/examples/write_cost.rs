//! What one `write()` of a small WebSocket frame costs on this machine's
//! loopback: the figure deliveries per write multiplies (benches/README.md,
//! "Where the limit is").
//!
//! `cargo run --release -p tickwire-bench --example write_cost -- [CONNS] [WRITES] [BYTES] [SENDER_CPU] [RECEIVER_CPU] [CONGESTION]`
//! (defaults 100 connections, 400,000 writes, 100 bytes, CPUs 0 and 1, the
//! system's congestion control).
//!
//! One thread writes `BYTES`-byte frames round-robin to `CONNS` loopback TCP
//! connections (TCP_NODELAY, as a feed server's are), pinned to one CPU;
//! one receiver thread on another CPU drains them all with epoll-free
//! blocking reads in turn. The sender's cost is its own CPU time plus the
//! interrupt and softirq time of its CPU (on loopback the receive path runs
//! there, charged to no process), divided by the writes.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tickwire::sys;

/// CPU time of the calling thread, seconds (`CLOCK_THREAD_CPUTIME_ID`:
/// exact, where /proc's utime + stime move in 10 ms ticks).
fn thread_cpu() -> f64 {
    sys::thread_cpu_time().as_secs_f64()
}

/// (busy, irq + softirq) seconds of one CPU so far, from /proc/stat.
fn cpu_times(cpu: usize) -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks = sys::clock_ticks_per_second().unwrap_or(100) as f64;
    let name = format!("cpu{cpu} ");
    let line = s.lines().find(|l| l.starts_with(&name)).unwrap_or("");
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
    // user nice system idle iowait irq softirq steal
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    (busy / ticks, (at(5) + at(6)) / ticks)
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: usize| a.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (conns, writes, bytes) = (arg(0, 100), arg(1, 400_000), arg(2, 100));
    let (tx_cpu, rx_cpu) = (arg(3, 0), arg(4, 1));
    // The senders' congestion control (`cubic`, `reno`, …); the system's
    // default (`sysctl net.ipv4.tcp_congestion_control`) when absent.
    let congestion = a.get(5).cloned();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..conns {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        if let Some(cc) = &congestion {
            socket2::SockRef::from(&s)
                .set_tcp_congestion(cc.as_bytes())
                .expect("TCP_CONGESTION");
        }
        senders.push(s);
        receivers.push(listener.accept().expect("accept").0);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let rx_stop = stop.clone();
    let rx = std::thread::spawn(move || {
        let _ = sys::set_affinity(0, &[rx_cpu]);
        for r in &receivers {
            r.set_nonblocking(true).expect("nonblocking");
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0u64;
        while !rx_stop.load(Ordering::Relaxed) {
            for mut r in &receivers {
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got += n as u64;
                }
            }
        }
        got
    });
    sys::set_affinity(0, &[tx_cpu]).expect("pin the sender");
    // A WebSocket text frame: 2-byte header and payload.
    let mut frame = vec![b'x'; bytes];
    frame[0] = 0x81;
    frame[1] = (bytes - 2).min(125) as u8;
    let (busy0, irq0) = cpu_times(tx_cpu);
    let cpu0 = thread_cpu();
    let t0 = Instant::now();
    for i in 0..writes {
        senders[i % conns].write_all(&frame).expect("write");
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = thread_cpu() - cpu0;
    let (busy1, irq1) = cpu_times(tx_cpu);
    stop.store(true, Ordering::Relaxed);
    let got = rx.join().expect("receiver");
    let w = writes as f64;
    println!(
        "{writes} writes of {bytes} bytes to {conns} connections ({}) in {wall:.2} s ({:.0} writes/s on one CPU)",
        congestion.as_deref().unwrap_or("system congestion control"),
        w / wall
    );
    println!(
        "sender thread: {:.2} µs CPU per write · its CPU's irq+softirq: {:.2} µs per write · CPU {tx_cpu} busy: {:.2} µs per write",
        cpu / w * 1e6,
        (irq1 - irq0) / w * 1e6,
        (busy1 - busy0) / w * 1e6
    );
    println!("received {got} bytes (the rest was in flight)");
}
