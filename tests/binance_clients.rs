//! Real, unmodified Binance client libraries (installed from PyPI by
//! `.ci/run` into venvs under `target/`) against the Binance endpoint,
//! pointed at it by configuration only: each replays bundled recordings and
//! asserts what the library received — every trade's exact price and
//! quantity, every bookTicker equal to tickwire's quotes, and the library's
//! own order book (REST snapshot + depth diffs) equal to tickwire's book.
//!
//! Without the venvs the tests are skipped, unless
//! `TICKWIRE_REQUIRE_BINANCE_CLIENTS=1` (set by `.ci/run`), which makes a
//! missing client a failure.

mod binance_support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tickwire::model::decimal::Fixed;
use tickwire::model::tick::{Event, NewTick, Side};

use binance_support::{recording, replay, start, start_tls, wait_streams};

/// The venv's python, or `None` (skip) when it is missing and not required.
fn python(venv: &str) -> Option<PathBuf> {
    let py = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(venv)
        .join("bin")
        .join("python");
    if py.exists() {
        return Some(py);
    }
    assert!(
        std::env::var_os("TICKWIRE_REQUIRE_BINANCE_CLIENTS").is_none(),
        "{} is missing: .ci/run installs it",
        py.display()
    );
    eprintln!("skipping: {} is missing (see .ci/run)", py.display());
    None
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("binance_clients")
        .join(name)
}

/// A client script's process: "ready" read from it, then "done …" sent to it.
struct Client {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Client {
    fn spawn(py: &PathBuf, script: PathBuf, args: &[String]) -> Client {
        Client::spawn_with(py, script, args, &[])
    }

    fn spawn_with(
        py: &PathBuf,
        script: PathBuf,
        args: &[String],
        envs: &[(&str, &std::path::Path)],
    ) -> Client {
        let mut child = Command::new(py)
            .arg(script)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python starts");
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut c = Client { child, out };
        assert_eq!(c.line().trim(), "ready");
        c
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.out.read_line(&mut l).unwrap();
        assert!(!l.is_empty(), "the client script exited early");
        l
    }

    /// Sends "done …" and reads the script's JSON result.
    fn finish(mut self, done: &str) -> Value {
        writeln!(self.child.stdin.as_mut().unwrap(), "{done}").unwrap();
        let v = serde_json::from_str(&self.line()).expect("the script's JSON");
        assert!(self.child.wait().unwrap().success());
        v
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn trades_of(ticks: &[NewTick]) -> Vec<(Fixed, Fixed, u64, bool)> {
    ticks
        .iter()
        .filter_map(|t| match t.event {
            Event::Trade { px, qty, side } => Some((px, qty, t.ts / 1_000_000, side == Side::Sell)),
            _ => None,
        })
        .collect()
}

fn quotes_of(ticks: &[NewTick]) -> Vec<[Fixed; 4]> {
    ticks
        .iter()
        .filter_map(|t| match t.event {
            Event::Quote { bid, bsz, ask, asz } => Some([bid, bsz, ask, asz]),
            _ => None,
        })
        .collect()
}

/// A decimal the library handed over as text.
fn d(v: &Value) -> Fixed {
    let s = v.as_str().unwrap_or_else(|| panic!("a string: {v}"));
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// python-binance: `BinanceSocketManager.trade_socket`, a multiplex socket
/// of `@bookTicker`, and `DepthCacheManager` (REST snapshot + `@depth`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_binance_gets_every_trade_quote_and_the_book() {
    let Some(py) = python("venv-binance") else {
        return;
    };
    let h = start(|_| {});
    let btc = recording("btcusdt-20200222.twr.zst");
    let esm = recording("esm4-mbo-20240508.twr.zst");
    // The book exists before the client takes its REST snapshot.
    replay(h.ingest(), &esm[..1], 1, Duration::ZERO).await;
    let addr = h.binance_addr().unwrap();
    let client = Client::spawn(
        &py,
        script("python_binance.py"),
        &[
            format!("http://{addr}"),
            format!("ws://{addr}"),
            "BTCUSDT".into(),
            "ESM4".into(),
        ],
    );
    wait_streams(&h, 3).await;
    replay(h.ingest(), &esm[1..], 20, Duration::from_millis(5)).await;
    replay(h.ingest(), &btc, 100, Duration::from_millis(10)).await;
    let (seq, book) = h.ingest().book_state("ESM4").unwrap();
    let want_trades = trades_of(&btc);
    let want_quotes = quotes_of(&btc);
    let got = client.finish(&format!(
        "done {} {} {seq}",
        want_trades.len(),
        want_quotes.len()
    ));

    let trades = got["trades"].as_array().unwrap();
    assert_eq!(trades.len(), want_trades.len());
    for (g, w) in trades.iter().zip(&want_trades) {
        let g = (
            d(&g[0]),
            d(&g[1]),
            g[2].as_u64().unwrap(),
            g[3].as_bool().unwrap(),
        );
        assert_eq!(&g, w);
    }
    assert!(trades.iter().all(|t| t[4] == "BTCUSDT" && t[5] == "trade"));
    let tickers = got["tickers"].as_array().unwrap();
    assert_eq!(tickers.len(), want_quotes.len());
    for (i, (g, w)) in tickers.iter().zip(&want_quotes).enumerate() {
        assert_eq!(g[0], "btcusdt@bookTicker");
        assert_eq!(g[1].as_u64(), Some(i as u64 + 1), "u is the quote's seq");
        assert_eq!([d(&g[3]), d(&g[4]), d(&g[5]), d(&g[6])], *w);
    }
    let lib = &got["book"];
    assert_eq!(lib["last_update_id"].as_u64(), Some(seq));
    assert_book(&book, lib);
    h.shutdown();
}

/// A library's book (`bids`/`asks` as `[price, qty]` text) equals
/// tickwire's levels.
fn assert_book(book: &[tickwire::model::book::Level], lib: &Value) {
    let side = |bids: bool| -> Vec<(Fixed, Fixed)> {
        book.iter()
            .filter(|l| (l.side == tickwire::model::book::BookSide::Bid) == bids)
            .map(|l| (l.px, l.sz))
            .collect()
    };
    let lib_side = |k: &str| -> Vec<(Fixed, Fixed)> {
        let mut v: Vec<_> = lib[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| (d(&l[0]), d(&l[1])))
            .collect();
        // Best first, as tickwire lists them.
        if k == "bids" {
            v.sort_by_key(|l| std::cmp::Reverse(l.0));
        } else {
            v.sort_by_key(|l| l.0);
        }
        v
    };
    assert_eq!(lib_side("bids"), side(true));
    assert_eq!(lib_side("asks"), side(false));
    assert!(side(true).len() > 100, "a deep book was compared");
}

/// The recordings a client test plays: BTCUSDT's day and ESM4's book.
struct Replays {
    btc: Vec<NewTick>,
    esm: Vec<NewTick>,
}

impl Replays {
    fn load() -> Replays {
        Replays {
            btc: recording("btcusdt-20200222.twr.zst"),
            esm: recording("esm4-mbo-20240508.twr.zst"),
        }
    }
}

/// ccxt pro: `watch_trades` (BTC/USDT) and `watch_order_book` (ESM4/USD)
/// with `urls` overridden.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccxt_pro_watches_every_trade_and_the_book() {
    let Some(py) = python("venv-binance") else {
        return;
    };
    let h = start(|_| {});
    let r = Replays::load();
    replay(h.ingest(), &r.esm[..1], 1, Duration::ZERO).await;
    // ccxt loads its markets first: BTCUSDT must be known by then, so its
    // first tick goes before (every trade after it is checked).
    replay(h.ingest(), &r.btc[..1], 1, Duration::ZERO).await;
    let addr = h.binance_addr().unwrap();
    let client = Client::spawn(
        &py,
        script("ccxt_pro.py"),
        &[format!("http://{addr}"), format!("ws://{addr}")],
    );
    wait_streams(&h, 2).await;
    replay(h.ingest(), &r.esm[1..], 20, Duration::from_millis(5)).await;
    replay(h.ingest(), &r.btc[1..], 100, Duration::from_millis(10)).await;
    let (seq, book) = h.ingest().book_state("ESM4").unwrap();
    let want = trades_of(&r.btc[1..]);
    let got = client.finish(&format!("done {} {seq}", want.len()));
    let trades = got["trades"].as_array().unwrap();
    assert_eq!(trades.len(), want.len());
    for (g, w) in trades.iter().zip(&want) {
        let side = if w.3 { "sell" } else { "buy" };
        assert_eq!(
            (
                d(&g[0]),
                d(&g[1]),
                g[2].as_u64().unwrap(),
                g[3].as_str().unwrap()
            ),
            (w.0, w.1, w.2, side)
        );
    }
    assert_eq!(got["book"]["nonce"].as_u64(), Some(seq));
    assert_book(&book, &got["book"]);
    h.shutdown();
}

/// Binance's connector: `SpotWebsocketStreamClient` (custom `stream_url`,
/// combined, `time_unit="MICROSECOND"`, live SUBSCRIBE with an integer and
/// a string id) and `Spot(base_url=…).depth`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binance_connector_streams_trades_and_quotes_in_microseconds() {
    let Some(py) = python("venv-binance-connector") else {
        return;
    };
    let h = start(|_| {});
    let r = Replays::load();
    let addr = h.binance_addr().unwrap();
    let client = Client::spawn(
        &py,
        script("binance_connector.py"),
        &[format!("http://{addr}"), format!("ws://{addr}")],
    );
    wait_streams(&h, 2).await;
    replay(h.ingest(), &r.esm, 50, Duration::ZERO).await;
    replay(h.ingest(), &r.btc, 100, Duration::from_millis(10)).await;
    let want = trades_of(&r.btc);
    let quotes = quotes_of(&r.btc);
    let (seq, book) = h.ingest().book_state("ESM4").unwrap();
    let got = client.finish(&format!("done {} {} {seq}", want.len(), quotes.len()));
    let mut replies = got["replies"].as_array().unwrap().clone();
    replies.sort_by_key(|r| r["id"].is_string());
    assert_eq!(
        replies,
        [
            serde_json::json!({"result": null, "id": 1}),
            serde_json::json!({"result": null, "id": "bt-2"})
        ]
    );
    let trades = got["trades"].as_array().unwrap();
    assert_eq!(trades.len(), want.len());
    for (g, w) in trades.iter().zip(&want) {
        assert_eq!(g[2].as_u64().unwrap() / 1_000, w.2, "T in µs");
        assert_eq!(
            (d(&g[0]), d(&g[1]), g[3].as_bool().unwrap()),
            (w.0, w.1, w.3)
        );
    }
    let tickers = got["tickers"].as_array().unwrap();
    assert_eq!(tickers.len(), quotes.len());
    for (g, w) in tickers.iter().zip(&quotes) {
        assert_eq!([d(&g[1]), d(&g[2]), d(&g[3]), d(&g[4])], *w);
    }
    assert_eq!(got["depth"]["lastUpdateId"].as_u64(), Some(seq));
    assert_book(&book, &got["depth"]);
    h.shutdown();
}

/// cryptofeed: a `Binance` subclass with its endpoints overridden; TRADES
/// (`@aggTrade`), TICKER (`@bookTicker`) and L2_BOOK (REST snapshot +
/// `@depth@100ms`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cryptofeed_gets_trades_tickers_and_the_book() {
    let Some(py) = python("venv-cryptofeed") else {
        return;
    };
    // cryptofeed refuses anything but wss://: the endpoint speaks TLS here,
    // and Python trusts the test CA through SSL_CERT_FILE (requests: REQUESTS_CA_BUNDLE).
    let (h, ca) = start_tls(|_| {});
    let r = Replays::load();
    // cryptofeed reads exchangeInfo first: both symbols must exist.
    replay(h.ingest(), &r.esm[..1], 1, Duration::ZERO).await;
    replay(h.ingest(), &r.btc[..1], 1, Duration::ZERO).await;
    let addr = h.binance_addr().unwrap();
    let port = addr.port();
    let client = Client::spawn_with(
        &py,
        script("cryptofeed_feed.py"),
        &[
            format!("https://localhost:{port}"),
            format!("wss://localhost:{port}"),
        ],
        &[
            ("SSL_CERT_FILE", ca.path()),
            ("REQUESTS_CA_BUNDLE", ca.path()),
        ],
    );
    wait_streams(&h, 3).await;
    replay(h.ingest(), &r.esm[1..], 20, Duration::from_millis(5)).await;
    replay(h.ingest(), &r.btc[1..], 100, Duration::from_millis(10)).await;
    let (seq, book) = h.ingest().book_state("ESM4").unwrap();
    let want = trades_of(&r.btc[1..]);
    let quotes = quotes_of(&r.btc[1..]);
    let got = client.finish(&format!("done {} {} {seq}", want.len(), quotes.len()));
    let trades = got["trades"].as_array().unwrap();
    assert_eq!(trades.len(), want.len());
    for (g, w) in trades.iter().zip(&want) {
        let side = if w.3 { "sell" } else { "buy" };
        assert_eq!(
            (
                d(&g[0]),
                d(&g[1]),
                g[2].as_str().unwrap(),
                g[3].as_str().unwrap()
            ),
            (w.0, w.1, side, "BTC-USDT")
        );
    }
    let tickers = got["tickers"].as_array().unwrap();
    assert_eq!(tickers.len(), quotes.len());
    for (g, w) in tickers.iter().zip(&quotes) {
        assert_eq!([d(&g[0]), d(&g[1])], [w[0], w[2]]);
    }
    assert_eq!(got["book"]["seq"].as_u64(), Some(seq));
    assert_book(&book, &got["book"]);
    h.shutdown();
}
