//! Real, unmodified Binance client libraries (installed from PyPI by
//! `.ci/run` into venvs under `target/`) against the Binance endpoint,
//! pointed at it by configuration only: each replays bundled recordings and
//! asserts what the library received — every trade's exact price and
//! quantity, every bookTicker equal to tickwire's quotes, and the library's
//! own order book (REST snapshot + depth diffs) equal to tickwire's book,
//! and klines equal to 1m bars computed here from the replayed trades.
//!
//! Without the venvs the tests are skipped, unless
//! `TICKWIRE_REQUIRE_BINANCE_CLIENTS=1` (set by `.ci/run`), which makes a
//! missing client a failure.

mod binance_support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tickwire::model::decimal::Fixed;
use tickwire::model::tick::{Event, NewTick, Side};
use tickwire::server::ServerHandle;

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
    fn spawn(
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

/// How one client test runs: every test has this shape.
struct Setup {
    /// The venv under `target/` with the library.
    venv: &'static str,
    /// The script in tests/binance_clients/.
    script: &'static str,
    /// Arguments after the HTTP and WebSocket bases.
    args: &'static [&'static str],
    /// The endpoint speaks TLS (the client trusts the test CA).
    tls: bool,
    /// Replay ESM4's book too (the bar tests leave it out: its 2024 times
    /// would move the feed's clock past every 2020 BTCUSDT bar).
    books: bool,
    /// The first tick of each recording goes before the client starts
    /// (clients that load their markets first need the symbols).
    first_before: bool,
    /// Streams the client subscribes before the replay starts.
    streams: usize,
}

/// What a client test checks.
struct Outcome {
    h: ServerHandle,
    r: Replays,
    /// The ticks the client was started before.
    skipped: usize,
    /// The script's JSON result.
    got: Value,
    /// The CA file the client trusted, kept until the end.
    _ca: Option<tempfile::NamedTempFile>,
}

/// Starts a server with the Binance endpoint, the client script against
/// it, replays the recordings once its streams are subscribed, and hands
/// the script `done …` (from `done`, given the server and the replays).
/// `None`: the venv is missing (and not required).
async fn run_client(
    s: Setup,
    done: impl FnOnce(&ServerHandle, &Replays) -> String,
) -> Option<Outcome> {
    let py = python(s.venv)?;
    let (h, ca) = if s.tls {
        let (h, ca) = start_tls(|_| {});
        (h, Some(ca))
    } else {
        (start(|_| {}), None)
    };
    let r = Replays {
        btc: recording("btcusdt-20200222.twr.zst"),
        esm: if s.books {
            recording("esm4-mbo-20240508.twr.zst")
        } else {
            Vec::new()
        },
    };
    // A book exists before a client takes its REST snapshot.
    let esm_first = r.esm.len().min(1);
    let btc_first = usize::from(s.first_before);
    replay(h.ingest(), &r.esm[..esm_first], 1, Duration::ZERO).await;
    replay(h.ingest(), &r.btc[..btc_first], 1, Duration::ZERO).await;
    let addr = h.binance_addr().unwrap();
    let (http, ws) = if s.tls {
        let port = addr.port();
        (
            format!("https://localhost:{port}"),
            format!("wss://localhost:{port}"),
        )
    } else {
        (format!("http://{addr}"), format!("ws://{addr}"))
    };
    let mut args = vec![http, ws];
    args.extend(s.args.iter().map(|a| a.to_string()));
    let envs: Vec<(&str, &std::path::Path)> = match &ca {
        // Python trusts the test CA through SSL_CERT_FILE (requests:
        // REQUESTS_CA_BUNDLE).
        Some(ca) => vec![
            ("SSL_CERT_FILE", ca.path()),
            ("REQUESTS_CA_BUNDLE", ca.path()),
        ],
        None => Vec::new(),
    };
    let client = Client::spawn(&py, script(s.script), &args, &envs);
    wait_streams(&h, s.streams).await;
    replay(
        h.ingest(),
        &r.esm[esm_first..],
        20,
        Duration::from_millis(5),
    )
    .await;
    replay(
        h.ingest(),
        &r.btc[btc_first..],
        100,
        Duration::from_millis(10),
    )
    .await;
    let got = client.finish(&done(&h, &r));
    Some(Outcome {
        h,
        r,
        skipped: btc_first,
        got,
        _ca: ca,
    })
}

/// python-binance: `BinanceSocketManager.trade_socket`, a multiplex socket
/// of `@bookTicker`, and `DepthCacheManager` (REST snapshot + `@depth`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_binance_gets_every_trade_quote_and_the_book() {
    let setup = Setup {
        venv: "venv-binance",
        script: "python_binance.py",
        args: &["BTCUSDT", "ESM4"],
        tls: false,
        books: true,
        first_before: false,
        streams: 3,
    };
    let Some(o) = run_client(setup, |h, r| {
        let (seq, _) = h.ingest().book_state("ESM4").unwrap();
        let (t, q) = (trades_of(&r.btc).len(), quotes_of(&r.btc).len());
        format!("done {t} {q} {seq}")
    })
    .await
    else {
        return;
    };
    let (got, want_trades, want_quotes) = (&o.got, trades_of(&o.r.btc), quotes_of(&o.r.btc));
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
    let (seq, book) = o.h.ingest().book_state("ESM4").unwrap();
    assert_eq!(got["book"]["last_update_id"].as_u64(), Some(seq));
    assert_book(&book, &got["book"]);
    o.h.shutdown();
}

/// ccxt pro: `watch_trades` (BTC/USDT) and `watch_order_book` (ESM4/USD)
/// with `urls` overridden.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccxt_pro_watches_every_trade_and_the_book() {
    let setup = Setup {
        venv: "venv-binance",
        script: "ccxt_pro.py",
        args: &[],
        tls: false,
        books: true,
        // ccxt loads its markets first: BTCUSDT must be known by then
        // (every trade after the first is checked).
        first_before: true,
        streams: 2,
    };
    let Some(o) = run_client(setup, |h, r| {
        let (seq, _) = h.ingest().book_state("ESM4").unwrap();
        format!("done {} {seq}", trades_of(&r.btc[1..]).len())
    })
    .await
    else {
        return;
    };
    let want = trades_of(&o.r.btc[o.skipped..]);
    let trades = o.got["trades"].as_array().unwrap();
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
    let (seq, book) = o.h.ingest().book_state("ESM4").unwrap();
    assert_eq!(o.got["book"]["nonce"].as_u64(), Some(seq));
    assert_book(&book, &o.got["book"]);
    o.h.shutdown();
}

/// Binance's connector: `SpotWebsocketStreamClient` (custom `stream_url`,
/// combined, `time_unit="MICROSECOND"`, live SUBSCRIBE with an integer and
/// a string id) and `Spot(base_url=…).depth`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binance_connector_streams_trades_and_quotes_in_microseconds() {
    let setup = Setup {
        venv: "venv-binance-connector",
        script: "binance_connector.py",
        args: &[],
        tls: false,
        books: true,
        first_before: false,
        streams: 2,
    };
    let Some(o) = run_client(setup, |h, r| {
        let (t, q) = (trades_of(&r.btc).len(), quotes_of(&r.btc).len());
        // The script asks /api/v3/depth until it is this far (a REST book
        // is the last 100 ms flush's).
        let (seq, _) = h.ingest().book_state("ESM4").unwrap();
        format!("done {t} {q} {seq}")
    })
    .await
    else {
        return;
    };
    let (got, want, quotes) = (&o.got, trades_of(&o.r.btc), quotes_of(&o.r.btc));
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
    let (seq, book) = o.h.ingest().book_state("ESM4").unwrap();
    assert_eq!(got["depth"]["lastUpdateId"].as_u64(), Some(seq));
    assert_book(&book, &got["depth"]);
    o.h.shutdown();
}

/// cryptofeed: a `Binance` subclass with its endpoints overridden; TRADES
/// (`@aggTrade`), TICKER (`@bookTicker`) and L2_BOOK (REST snapshot +
/// `@depth@100ms`). cryptofeed refuses anything but wss://: the endpoint
/// speaks TLS here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cryptofeed_gets_trades_tickers_and_the_book() {
    let setup = Setup {
        venv: "venv-cryptofeed",
        script: "cryptofeed_feed.py",
        args: &[],
        tls: true,
        books: true,
        // cryptofeed reads exchangeInfo first: both symbols must exist.
        first_before: true,
        streams: 3,
    };
    let Some(o) = run_client(setup, |h, r| {
        let (seq, _) = h.ingest().book_state("ESM4").unwrap();
        let (t, q) = (trades_of(&r.btc[1..]).len(), quotes_of(&r.btc[1..]).len());
        format!("done {t} {q} {seq}")
    })
    .await
    else {
        return;
    };
    let rest = &o.r.btc[o.skipped..];
    let (got, want, quotes) = (&o.got, trades_of(rest), quotes_of(rest));
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
    let (seq, book) = o.h.ingest().book_state("ESM4").unwrap();
    assert_eq!(got["book"]["seq"].as_u64(), Some(seq));
    assert_book(&book, &got["book"]);
    o.h.shutdown();
}

/// One 1m bar computed here from the trades, independently of tickwire's
/// bar builder: open time (ms), o, h, l, c, volume, trades, quote volume,
/// buy volume, buy quote volume, first and last trade seq.
#[derive(Debug, PartialEq, Eq)]
struct MinuteBar {
    t: u64,
    ohlcv: [Fixed; 5],
    n: u64,
    q: i128,
    buy: i64,
    buy_q: i128,
    f: u64,
    l: u64,
}

/// The 1m bars of `ticks`' trades, whose `seq`s start at 1, in order.
fn minute_bars(ticks: &[NewTick]) -> Vec<MinuteBar> {
    const MIN: u64 = 60_000_000_000;
    let mut bars: Vec<MinuteBar> = Vec::new();
    let trades = ticks.iter().filter_map(|t| match t.event {
        Event::Trade { px, qty, side } => Some((t.ts, px, qty, side)),
        _ => None,
    });
    for (i, (ts, px, qty, side)) in trades.enumerate() {
        let seq = i as u64 + 1;
        // Each product truncated to 1e-9, as tickwire's quote volume.
        let notional = i128::from(px.0) * i128::from(qty.0) / 1_000_000_000;
        let buy = side == Side::Buy;
        let t = ts / MIN * 60_000;
        match bars.last_mut() {
            Some(b) if b.t == t => {
                b.ohlcv[1] = b.ohlcv[1].max(px);
                b.ohlcv[2] = b.ohlcv[2].min(px);
                b.ohlcv[3] = px;
                b.ohlcv[4] = Fixed(b.ohlcv[4].0 + qty.0);
                b.n += 1;
                b.q += notional;
                if buy {
                    b.buy += qty.0;
                    b.buy_q += notional;
                }
                b.l = seq;
            }
            _ => bars.push(MinuteBar {
                t,
                ohlcv: [px, px, px, px, qty],
                n: 1,
                q: notional,
                buy: if buy { qty.0 } else { 0 },
                buy_q: if buy { notional } else { 0 },
                f: seq,
                l: seq,
            }),
        }
    }
    bars
}

/// A decimal string (8 decimals at least, as Binance) in 1e-9 units.
fn units(v: &Value) -> i128 {
    i128::from(binance_support::wire::dec(v).0)
}

/// python-binance's kline socket: every closed 1m kline equals the bar
/// computed here from the replayed trades, field for field (f/L are the
/// trades' seqs), and none is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_binance_klines_equal_bars_computed_from_the_trades() {
    let setup = Setup {
        venv: "venv-binance",
        script: "python_binance_klines.py",
        args: &["BTCUSDT"],
        tls: false,
        books: false,
        first_before: false,
        streams: 1,
    };
    let Some(o) = run_client(setup, |_, r| {
        format!("done {}", minute_bars(&r.btc).last().unwrap().t)
    })
    .await
    else {
        return;
    };
    let want = minute_bars(&o.r.btc);
    // The last minute is still open (no later trade closes it).
    let want = &want[..want.len() - 1];
    assert!(want.len() > 100, "a day's minutes: {}", want.len());
    let closed = o.got["closed"].as_array().unwrap();
    let got: Vec<MinuteBar> = closed
        .iter()
        .map(|k| {
            assert_eq!((&k[2], &k[3]), (&json!("BTCUSDT"), &json!("1m")), "{k}");
            let t = k[0].as_u64().unwrap();
            assert_eq!(k[1].as_u64(), Some(t + 59_999), "T: {k}");
            MinuteBar {
                t,
                ohlcv: [6, 7, 8, 9, 10].map(|i| binance_support::wire::dec(&k[i])),
                n: k[11].as_u64().unwrap(),
                q: units(&k[12]),
                buy: units(&k[13]) as i64,
                buy_q: units(&k[14]),
                f: k[4].as_u64().unwrap(),
                l: k[5].as_u64().unwrap(),
            }
        })
        .collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g, w);
    }
    o.h.shutdown();
}

/// ccxt pro's `watch_ohlcv`: the last state of every 1m candle equals the
/// bar computed here from the replayed trades (t, o, h, l, c, v exact).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccxt_pro_watch_ohlcv_equals_bars_computed_from_the_trades() {
    let setup = Setup {
        venv: "venv-binance",
        script: "ccxt_ohlcv.py",
        args: &[],
        tls: false,
        books: false,
        // ccxt loads its markets first.
        first_before: true,
        streams: 1,
    };
    let Some(o) = run_client(setup, |_, r| {
        format!("done {}", minute_bars(&r.btc).last().unwrap().t)
    })
    .await
    else {
        return;
    };
    let want = minute_bars(&o.r.btc);
    let candles = o.got["candles"].as_array().unwrap();
    assert!(want.len() > 100, "a day's minutes: {}", want.len());
    assert_eq!(candles.len(), want.len());
    // The last candle may not have all its trades yet when ccxt stops.
    for (g, w) in candles.iter().zip(&want[..want.len() - 1]) {
        let got = (g[0].as_u64().unwrap(), [1, 2, 3, 4, 5].map(|i| d(&g[i])));
        assert_eq!(got, (w.t, w.ohlcv), "{g}");
    }
    assert_eq!(
        candles.last().unwrap()[0].as_u64(),
        Some(want.last().unwrap().t)
    );
    o.h.shutdown();
}
