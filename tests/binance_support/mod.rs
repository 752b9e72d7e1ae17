//! Shared by the Binance endpoint tests: a server with the endpoint on
//! 127.0.0.1:0 and no feed of its own, and a paced replay of a recording
//! into it once the clients are subscribed.
#![allow(dead_code)]

pub mod wire;

#[path = "../test_ca/mod.rs"]
mod test_ca;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tickwire::binance::BinanceConfig;
use tickwire::model::tick::NewTick;
use tickwire::pipeline::ingest::Ingest;
use tickwire::pipeline::stats::Origin;
use tickwire::server::config::{Config, FeedSource};
use tickwire::server::{self, ServerHandle};

pub const WAIT: Duration = Duration::from_secs(20);

/// A server with the Binance endpoint and `limits` changed by `tune`.
pub fn start(tune: impl FnOnce(&mut BinanceConfig)) -> ServerHandle {
    start_with(tune, None)
}

/// [`start`] with `--max-connections-per-ip N`.
pub fn start_per_ip(n: usize) -> ServerHandle {
    server::start(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        feed: FeedSource::None,
        workers: 1,
        binance: Some(BinanceConfig::at("127.0.0.1:0".parse().unwrap())),
        max_connections_per_ip: n,
        ..Config::default()
    })
    .expect("server starts")
}

fn start_with(
    tune: impl FnOnce(&mut BinanceConfig),
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
) -> ServerHandle {
    let mut b = BinanceConfig::at("127.0.0.1:0".parse().unwrap());
    tune(&mut b);
    server::start(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        feed: FeedSource::None,
        workers: 1,
        binance: Some(b),
        tls,
        ..Config::default()
    })
    .expect("server starts")
}

/// [`start`] with TLS (`--tls-cert`): a test CA and a `localhost`
/// certificate it signed. Returns the CA's PEM file, for clients to trust.
pub fn start_tls(tune: impl FnOnce(&mut BinanceConfig)) -> (ServerHandle, tempfile::NamedTempFile) {
    let ca = test_ca::test_ca();
    let mut ca_file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut ca_file, ca.ca_pem.as_bytes()).unwrap();
    (start_with(tune, Some(ca.server)), ca_file)
}

pub fn replay_data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("replay-data")
        .join(name)
}

/// Every tick of a bundled recording.
pub fn recording(name: &str) -> Vec<NewTick> {
    tickwire::recordings::format::read_all(&replay_data(name)).expect("recording reads")
}

/// Publishes `ticks` in order, `chunk` at a time with `pause` between, as
/// `--replay` would (books through the book path).
pub async fn replay(ingest: &Ingest, ticks: &[NewTick], chunk: usize, pause: Duration) {
    for part in ticks.chunks(chunk.max(1)) {
        let mut batch = Vec::new();
        for t in part {
            if let Some(change) = &t.book {
                ingest.publish_from(&batch, Origin::Recorded).await;
                batch.clear();
                let b = ingest
                    .admit_book(&t.sym, t.ts, (**change).clone())
                    .expect("book admitted");
                ingest
                    .publish_book(&b, Origin::Recorded)
                    .await
                    .expect("book update applies");
            } else {
                batch.push(ingest.admit(t.clone()).expect("tick admitted"));
            }
        }
        ingest.publish_from(&batch, Origin::Recorded).await;
        tokio::time::sleep(pause).await;
    }
}

/// Waits until the endpoint holds `n` stream subscriptions in all.
pub async fn wait_streams(h: &ServerHandle, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while h.binance_streams() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {n} Binance streams (have {})",
            h.binance_streams()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the endpoint holds only `n` stream subscriptions: a
/// disconnected client's are gone.
pub async fn wait_streams_fall_to(h: &ServerHandle, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while h.binance_streams() > n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a disconnected client's streams are still held ({} > {n})",
            h.binance_streams()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
