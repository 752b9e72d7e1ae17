//! Issue #15 item 1: only tickwire's own workers share its port. A second
//! `serve` on an address already in use fails at start, whoever holds it.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `tickwire serve --listen ADDR` and returns its exit status and
/// stderr once it exits (killing it after 20 s: a server that started is
/// exactly the failure under test).
fn serve_once(addr: std::net::SocketAddr) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["serve", "--no-feed", "--workers", "2", "--listen"])
        .arg(addr.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the second server is still running on {addr}: {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, std::fs::read_to_string(&log).unwrap())
}

#[test]
fn a_second_server_on_a_tickwire_port_fails_with_address_in_use() {
    // The first server: this test process's own, with SO_REUSEPORT workers
    // the second process's sockets could otherwise join.
    let first = common::start(tickwire::server::config::Config {
        workers: 2,
        ..common::config()
    });
    let (status, stderr) = serve_once(first.addr());
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("address in use") && stderr.contains(&first.addr().to_string()),
        "{stderr}"
    );
    // The first server still answers alone.
    let mut s = std::net::TcpStream::connect(first.addr()).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    first.shutdown();
}

#[test]
fn a_port_held_by_any_other_listener_fails_with_address_in_use() {
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (status, stderr) = serve_once(other.local_addr().unwrap());
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("address in use"), "{stderr}");
}
