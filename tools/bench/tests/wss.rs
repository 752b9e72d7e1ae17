//! `tickwire bench` against `serve --tls-cert` (wss://): a certificate for
//! `localhost` signed by the main crate's test CA (rcgen), trusted through
//! `--ca-file`; without it the runner refuses the server clearly.

mod support;
// The one test CA of the workspace (the bench reads only its PEM files).
#[allow(dead_code)]
#[path = "../../../tests/test_ca/mod.rs"]
mod test_ca;

use std::path::Path;
use std::time::Duration;

use support::{bench, start_server, tmpdir};

/// Writes the test CA of the main crate's TLS tests (`tests/test_ca`), and
/// a `localhost` certificate and key it signed, into `dir`; returns (ca,
/// cert, key) paths.
fn pki(dir: &Path) -> [String; 3] {
    let ca = test_ca::test_ca();
    let files = [
        ("ca.pem", ca.ca_pem),
        ("cert.pem", ca.cert_pem),
        ("key.pem", ca.key_pem),
    ];
    files.map(|(name, pem)| {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p.to_str().unwrap().to_owned()
    })
}

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn the_runner_measures_a_wss_server_and_refuses_an_untrusted_one() {
    let dir = tmpdir("wss");
    let [ca, cert, key] = pki(&dir);
    let (mut server, addr) = start_server(&dir, &["--tls-cert", &cert, "--tls-key", &key]);
    let port = addr.rsplit(':').next().unwrap();
    let url = format!("wss://localhost:{port}");
    let out_dir = dir.join("out");
    let out = bench(
        &[
            "--url",
            &url,
            "--ca-file",
            &ca,
            "--clients",
            "10",
            "--rate",
            "300",
            "--seconds",
            "2",
            "--warmup",
            "0.5",
            // Close, FIN and RST over TLS too, resumed.
            "--reconnect-every",
            "400ms",
            "--reconnect-share",
            "0.5",
            "--quiet",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap())
            .unwrap();
    let run = &doc["runs"][0];
    assert!(run["url"].as_str().unwrap().starts_with("wss://"), "{run}");
    let fast = &run["fast"];
    assert!(n(&fast["expected"]) > 0, "{fast}");
    assert_eq!(n(&fast["delivered"]), n(&fast["expected"]), "{stdout}");
    assert_eq!(n(&run["reconnect"]["ticks_lost"]), 0, "{stdout}");
    assert!(n(&run["reconnect"]["by_rst"]) > 0, "{stdout}");

    // Without --ca-file the test CA is trusted by nobody: a clear error.
    let out = bench(
        &["--url", &url, "--seconds", "1", "--quiet"],
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("TLS handshake failed") && stderr.contains("certificate"),
        "{stderr}"
    );
    // A --ca-file that is not a certificate is refused before anything runs.
    let out = bench(
        &["--url", &url, "--ca-file", &key, "--seconds", "1"],
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--ca-file"), "{stderr}");
    let _ = server.kill();
    let _ = server.wait();
}
