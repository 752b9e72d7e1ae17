//! Scale-out access and roles: a gateway refuses publishers, bad role
//! flags are explained, the bus can require TLS and a password (never
//! logged).
//!
//! Each runs a real `nats-server` (with JetStream) and `tickwire serve`
//! processes; the harness (and when a missing nats-server fails a test
//! rather than skip it: `TICKWIRE_REQUIRE_NATS`) is in
//! `tests/common/scaleout.rs`. The tests take one lock each: every one runs
//! a handful of processes, which on a 2-core machine is enough load
//! without running them together.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::scaleout::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_refuses_publishers_and_bad_role_flags_are_explained() {
    let _serial = SERIAL.lock().await;
    let out = Command::new(BIN)
        .args(["serve", "--role", "gateway"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--role gateway needs --bus"), "{err}");

    // An ingest node must read the last seqs before it assigns any: with no
    // NATS it does not start, and says why.
    let dead = format!("nats://127.0.0.1:{}", free_port());
    let err = ingest_refuses_to_start(&["--bus", &dead, "--bus-connect-timeout", "500ms"]);
    assert!(err.contains("cannot reach NATS at"), "{err}");

    let Some(nats) = Nats::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let gw = Node::gateway_starting(dir.path(), &nats, "gw").await;
    let (_, head) = connect_with(gw.addr, "/v1/publish", "", None).await;
    assert!(head.starts_with("HTTP/1.1 421"), "{head}");
}

/// A test CA and a certificate it signed for 127.0.0.1, as PEM files in
/// `dir`: (ca, cert, key).
fn pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_can_require_tls_and_a_password_which_is_never_logged() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path());
    let (ca, cert, key) = (
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    );
    let Some(nats) = Nats::start_with(&[
        "--user",
        "tw",
        "--pass",
        "s3cret",
        "--tls",
        "--tlscert",
        cert,
        "--tlskey",
        key,
    ])
    .await
    else {
        return;
    };
    let url = format!("tls://tw:s3cret@127.0.0.1:{}", nats.port);
    let ingest = Node::start(
        dir.path(),
        "ingest",
        &[
            "--no-feed",
            "--bus",
            &url,
            "--role",
            "ingest",
            "--bus-tls-ca",
            ca,
        ],
    )
    .await;
    let gw = Node::start(
        dir.path(),
        "gw",
        &["--bus", &url, "--role", "gateway", "--bus-tls-ca", ca],
    )
    .await;
    wait_metric(&gw, "tickwire_feed_stale", |v| v == 0.0).await;
    let mut c = subscriber(gw.addr).await;
    c.subscribe(1, &["SEC"], Some(&["trade"]), false).await;
    let mut p = publisher(ingest.addr).await;
    p.publish(&[trade("SEC", 1, "1", "1"), trade("SEC", 2, "2", "1")])
        .await;
    assert_eq!(recv_ticks(&mut c, 2).await[1]["seq"], 2);
    for log in [ingest.log(), gw.log()] {
        assert!(
            !log.contains("s3cret"),
            "a log shows the bus password:\n{log}"
        );
        assert!(log.contains("tls://***@127.0.0.1"), "{log}");
    }

    // A wrong password: the ingest node does not start, and says why
    // without showing the password it was given.
    let wrong = format!("tls://tw:wr0ng@127.0.0.1:{}", nats.port);
    let err = ingest_refuses_to_start(&[
        "--bus",
        &wrong,
        "--bus-tls-ca",
        ca,
        "--bus-connect-timeout",
        "2s",
    ]);
    assert!(
        err.contains("cannot reach NATS at tls://***@127.0.0.1"),
        "{err}"
    );
    assert!(err.to_lowercase().contains("authorization"), "{err}");
    assert!(!err.contains("wr0ng"), "{err}");

    // A certificate the node cannot verify (no CA given): no connection.
    let err = ingest_refuses_to_start(&["--bus", &url, "--bus-connect-timeout", "2s"]);
    assert!(
        err.contains("cannot reach NATS at tls://***@127.0.0.1"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}
