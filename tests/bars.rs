//! OHLCV bars end to end over real sockets: bars built from a replayed
//! trade file equal bars computed here from the same file's trades (by
//! this test's own arithmetic, not tickwire's builder); the snapshot on
//! subscribe is the current bar; the bar clock closes a quiet symbol's
//! bar; binary subscribers get the documented 128-byte record; unknown
//! interval names are refused precisely.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::{Value, json};
use tickwire::model::decimal::Fixed;
use tickwire::model::speed::Speed;
use tickwire::model::tick::{Event, Side};
use tickwire::recordings::format::read_all;
use tickwire::server::config::FeedSource;

const NS: u64 = 1_000_000_000;

/// One bar as this test computes it, all values raw 1e-9 units.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RefBar {
    start: u64,
    open: i64,
    high: i64,
    low: i64,
    close: i64,
    volume: i64,
    quote_volume: i64,
    buy_volume: i64,
    trades: u64,
}

/// Bars of `len_ns` over `trades` (ts, px, qty, buy), in time order:
/// one per interval that has trades, aligned to the Unix epoch.
fn reference_bars(trades: &[(u64, i64, i64, bool)], len_ns: u64) -> BTreeMap<u64, RefBar> {
    let mut bars: BTreeMap<u64, RefBar> = BTreeMap::new();
    for &(ts, px, qty, buy) in trades {
        let start = ts / len_ns * len_ns;
        let notional = (i128::from(px) * i128::from(qty) / 1_000_000_000) as i64;
        let b = bars.entry(start).or_insert(RefBar {
            start,
            open: px,
            high: px,
            low: px,
            close: px,
            volume: 0,
            quote_volume: 0,
            buy_volume: 0,
            trades: 0,
        });
        b.high = b.high.max(px);
        b.low = b.low.min(px);
        b.close = px;
        b.volume += qty;
        b.quote_volume += notional;
        if buy {
            b.buy_volume += qty;
        }
        b.trades += 1;
    }
    bars
}

fn raw(v: &Value) -> i64 {
    Fixed::parse(&v.to_string()).unwrap().raw()
}

/// A bar message's values, in this test's terms.
fn from_message(m: &Value) -> RefBar {
    RefBar {
        start: m["start"].as_u64().unwrap(),
        open: raw(&m["open"]),
        high: raw(&m["high"]),
        low: raw(&m["low"]),
        close: raw(&m["close"]),
        volume: raw(&m["volume"]),
        quote_volume: raw(&m["quote_volume"]),
        buy_volume: raw(&m["buy_volume"]),
        trades: m["trades"].as_u64().unwrap(),
    }
}

/// Per interval: the last message received for each bar start, and
/// whether a closed message was seen.
#[derive(Default)]
struct Received {
    bars: BTreeMap<u64, (RefBar, bool)>,
    seq: u64,
}

impl Received {
    fn take(&mut self, m: &Value) {
        let seq = m["seq"].as_u64().unwrap();
        assert_eq!(seq, self.seq + 1, "bar seq is contiguous: {m}");
        self.seq = seq;
        let b = from_message(m);
        let closed = m["closed"].as_bool().unwrap();
        assert_eq!(
            m["end"].as_u64().unwrap() - b.start,
            match m["interval"].as_str().unwrap() {
                "1s" => NS,
                "1m" => 60 * NS,
                other => panic!("interval {other}"),
            }
        );
        if let Some((_, was_closed)) = self.bars.get(&b.start) {
            assert!(!was_closed, "a message after its bar closed: {m}");
        }
        assert!(
            self.bars.keys().next_back().is_none_or(|&s| s <= b.start),
            "bars go forward in time: {m}"
        );
        self.bars.insert(b.start, (b, closed));
    }

    /// Every bar equal to the reference, every one but the last closed.
    fn matches(&self, want: &BTreeMap<u64, RefBar>) -> bool {
        self.bars.len() == want.len()
            && self
                .bars
                .iter()
                .zip(want)
                .enumerate()
                .all(|(i, ((_, (got, closed)), (_, w)))| {
                    got == w && (*closed || i + 1 == want.len())
                })
    }
}

/// A recording bundled in replay-data/.
fn replay_data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("replay-data")
        .join(name)
}

/// The trades of `sym` in `file` stamped before `end`: (ts, px, qty, buy).
fn trades_of(file: &Path, sym: &str, end: u64) -> Vec<(u64, i64, i64, bool)> {
    read_all(file)
        .unwrap()
        .into_iter()
        .filter(|t| &*t.sym == sym && t.ts < end)
        .filter_map(|t| match t.event {
            Event::Trade { px, qty, side } => Some((t.ts, px.raw(), qty.raw(), side == Side::Buy)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bars_of_a_replayed_trade_file_equal_an_independent_computation() {
    let file = replay_data("btcusdt-20200222.twr.zst");
    let trades = trades_of(&file, "BTCUSDT", u64::MAX);
    assert_eq!(trades.len(), 9_999, "the README's count");
    let want_1s = reference_bars(&trades, NS);
    let want_1m = reference_bars(&trades, 60 * NS);
    assert!(want_1s.len() > 1000 && want_1m.len() > 100);

    let mut cfg = config();
    cfg.feed = FeedSource::Recording {
        path: file,
        speed: Speed::Max,
        looping: false,
    };
    let h = start(cfg);
    let mut ws = subscriber(h.addr()).await;
    // The replay may be done before the subscribe: resume from the start
    // of the stream (offset 0) takes every bar from the history, and
    // `catchup` reads it all without conflating a bar away.
    ws.send_json(json!({"op":"subscribe","id":1,"symbols":["BTCUSDT"],"channels":["bar_1s","bar_1m"],"resume":{"epoch":h.ingest().epoch().to_string(),"offset":0},"policy":{"bar_1s":"catchup","bar_1m":"catchup"}}))
        .await;
    let (reply, _) = ws.recv_until("subscribed").await;
    assert_eq!(reply["resumed"]["recovered"], true, "{reply}");
    let (mut got_1s, mut got_1m) = (Received::default(), Received::default());
    let deadline = tokio::time::Instant::now() + 6 * WAIT;
    while !(got_1s.matches(&want_1s) && got_1m.matches(&want_1m)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bars never matched: 1s {} of {} (first difference {:?}), 1m {} of {} (first difference {:?})",
            got_1s.bars.len(),
            want_1s.len(),
            first_difference(&got_1s, &want_1s),
            got_1m.bars.len(),
            want_1m.len(),
            first_difference(&got_1m, &want_1m),
        );
        let m = ws.recv_json().await;
        assert_eq!(m["type"], "bar", "{m}");
        assert_eq!(m["sym"], "BTCUSDT");
        match m["interval"].as_str() {
            Some("1s") => got_1s.take(&m),
            Some("1m") => got_1m.take(&m),
            _ => panic!("unexpected {m}"),
        }
    }
}

/// Two recordings of different dates (Binance BTCUSDT, 2020; CME ESM4,
/// 2024) replayed at once by two publishers over real sockets: every bar
/// of each symbol equals the independent computation over that symbol's
/// trades. One clock for the whole feed put the 2020 symbol in 2024 and
/// closed its bars before their trades were in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_of_different_dates_replayed_together_close_bars_by_their_own_time() {
    use tickwire::recordings::replay::client::{ReplayOptions, replay};
    use tickwire::recordings::selection::TimeSpec;
    let btc = replay_data("btcusdt-20200222.twr.zst");
    let esm = replay_data("esm4-mbo-20240508.twr.zst");
    // Ten minutes of BTCUSDT at 200× (3 s) beside the two seconds of ESM4
    // at recorded pace: they overlap, and many of BTCUSDT's 1 m bars are
    // open while ESM4's 2024 ticks arrive.
    let btc_first = read_all(&btc).unwrap()[0].ts;
    let btc_end = btc_first + 600 * NS;
    let mut want = BTreeMap::new();
    for (sym, file, end) in [("BTCUSDT", &btc, btc_end), ("ESM4", &esm, u64::MAX)] {
        let trades = trades_of(file, sym, end);
        assert!(!trades.is_empty(), "{sym} has trades");
        want.insert((sym, "1s"), reference_bars(&trades, NS));
        want.insert((sym, "1m"), reference_bars(&trades, 60 * NS));
    }
    assert!(want[&("BTCUSDT", "1m")].len() >= 10);

    let h = start(config());
    let url = format!("ws://{}/v1/publish", h.addr());
    let mut btc_opts = ReplayOptions::new(vec![btc], &url, Speed::Factor(200.0));
    btc_opts.selection.end = Some(TimeSpec::Absolute(btc_end));
    let esm_opts = ReplayOptions::new(vec![esm], &url, Speed::Factor(1.0));
    let (btc_report, esm_report) = tokio::join!(
        replay(&btc_opts, std::future::pending()),
        replay(&esm_opts, std::future::pending())
    );
    assert_eq!(btc_report.unwrap().server_errors, 0);
    assert_eq!(esm_report.unwrap().server_errors, 0);

    let mut ws = subscriber(h.addr()).await;
    let catchup = json!({"bar_1s":"catchup","bar_1m":"catchup"});
    ws.send_json(json!({"op":"subscribe","id":1,"symbols":["BTCUSDT","ESM4"],"channels":["bar_1s","bar_1m"],"resume":{"epoch":h.ingest().epoch().to_string(),"offset":0},"policy":catchup}))
        .await;
    let (reply, _) = ws.recv_until("subscribed").await;
    assert_eq!(reply["resumed"]["recovered"], true, "{reply}");
    let mut got: BTreeMap<(&str, &str), Received> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + 3 * WAIT;
    while !want
        .iter()
        .all(|(k, w)| got.get(k).is_some_and(|g| g.matches(w)))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bars never matched: {:?}",
            want.iter()
                .map(|(k, w)| (k, got.get(k).and_then(|g| first_difference(g, w))))
                .collect::<Vec<_>>()
        );
        let m = ws.recv_json().await;
        assert_eq!(m["type"], "bar", "{m}");
        let sym = if m["sym"] == "BTCUSDT" {
            "BTCUSDT"
        } else {
            "ESM4"
        };
        let interval = if m["interval"] == "1s" { "1s" } else { "1m" };
        got.entry((sym, interval)).or_default().take(&m);
    }
}

fn first_difference(got: &Received, want: &BTreeMap<u64, RefBar>) -> Option<(u64, String)> {
    want.iter()
        .find_map(|(start, w)| match got.bars.get(start) {
            Some((g, _)) if g == w => None,
            other => Some((*start, format!("got {other:?}, want {w:?}"))),
        })
}

/// A trade of symbol `BARS` at `ts`.
fn trade_at(ts: u64, px: &str, qty: &str, side: &str) -> Value {
    json!({"type":"trade","sym":"BARS","ts":ts,"px":px,"qty":qty,"side":side})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_is_the_current_bar_and_the_clock_closes_it() {
    let h = start(config());
    let mut publisher = publisher(h.addr()).await;
    let now = tickwire::model::tick::wall_clock_ns();
    // Two trades in this minute's bar.
    let t0 = now - now % (60 * NS);
    publisher
        .publish(&[
            trade_at(t0 + 1, "100.5", "2", "B"),
            trade_at(t0 + 2, "99", "1", "S"),
        ])
        .await;
    let mut ws = subscriber(h.addr()).await;
    ws.send_json(
        json!({"op":"subscribe","id":1,"symbols":["BARS"],"channels":["bar_1m","bar_1s"]}),
    )
    .await;
    ws.recv_until("subscribed").await;
    // The snapshot is each interval's current bar once it is published (at
    // most a second behind the trades): wait for the 1m bar holding both.
    let mut snap_seen = false;
    loop {
        let m = ws.recv_json().await;
        assert_eq!(m["type"], "bar", "{m}");
        if m["snap"] == true {
            snap_seen = true;
        }
        if m["interval"] == "1m" && m["trades"] == 2 {
            assert_eq!(m["start"].as_u64(), Some(t0));
            assert_eq!(
                (&m["open"], &m["high"], &m["low"], &m["close"]),
                (&json!(100.5), &json!(100.5), &json!(99), &json!(99))
            );
            assert_eq!((&m["volume"], &m["buy_volume"]), (&json!(3), &json!(2)));
            assert_eq!(m["quote_volume"], json!(300));
            break;
        }
    }
    assert!(snap_seen, "the current bars came as snapshots");
    // Nothing trades any more: the clock closes the 1s bar (its interval
    // ended, the feed went silent) without a later trade.
    loop {
        let m = ws.recv_json().await;
        if m["interval"] == "1s" && m["closed"] == true {
            assert_eq!(m["start"].as_u64(), Some(t0));
            assert_eq!(m["trades"], 2);
            break;
        }
    }
    // A new subscriber's snapshot of the 1s channel is the closed bar.
    let mut late = subscriber(h.addr()).await;
    late.subscribe(2, &["BARS"], Some(&["bar_1s"]), true).await;
    let m = late.recv_json().await;
    assert_eq!(
        (&m["snap"], &m["closed"]),
        (&json!(true), &json!(true)),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_subscribers_get_the_documented_bar_record() {
    let h = start(config());
    let mut publisher = publisher(h.addr()).await;
    let now = tickwire::model::tick::wall_clock_ns();
    let t0 = now - now % (60 * NS);
    let (mut ws, head) = connect_with(
        h.addr(),
        "/v1/stream",
        "Sec-WebSocket-Protocol: tickwire.bin.v1\r\n",
        None,
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    ws.recv_json().await;
    ws.send_json(json!({"op":"subscribe","id":1,"symbols":["BARS"],"channels":["bar_1m"]}))
        .await;
    let (reply, _) = ws.recv_until("subscribed").await;
    let id = reply["ids"]["BARS"].as_u64().unwrap();
    publisher
        .publish(&[trade_at(t0 + 5, "10.25", "4", "B")])
        .await;
    let frame = loop {
        if let Msg::Binary(b) = ws.recv().await {
            break b;
        }
    };
    assert_eq!(frame.len(), 128, "one bar record, alone in its frame");
    let u64_at = |o: usize| u64::from_le_bytes(frame[o..o + 8].try_into().unwrap());
    assert_eq!((frame[0], frame[1]), (4, 0), "kind 4, open, live");
    assert_eq!(u16::from_le_bytes([frame[2], frame[3]]), 2, "interval 1m");
    assert_eq!(
        u64::from(u32::from_le_bytes(frame[4..8].try_into().unwrap())),
        id
    );
    assert_eq!(u64_at(8), 1, "seq");
    assert_eq!(u64_at(16), t0 + 5, "ts: the newest trade");
    let px = 10_250_000_000u64;
    assert_eq!([u64_at(32), u64_at(40), u64_at(48), u64_at(56)], [px; 4]);
    assert_eq!(u64_at(64), 4 * NS, "volume");
    assert_eq!(u64_at(72), 41 * NS, "quote volume");
    assert_eq!(u64_at(80), 4 * NS, "buy volume");
    assert_eq!(u64_at(88), 1, "trades");
    assert_eq!((u64_at(96), u64_at(104)), (t0, t0 + 60 * NS));
    assert_eq!(u64_at(112) | u64_at(120), 0, "reserved");
}

#[tokio::test]
async fn unknown_bar_channels_are_refused_by_name() {
    let h = start(config());
    let mut ws = subscriber(h.addr()).await;
    ws.send_json(json!({"op":"subscribe","id":3,"symbols":["X"],"channels":["bar_1m","bar_5m"]}))
        .await;
    let err = ws.recv_json().await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "bad_field");
    assert_eq!(
        err["message"],
        "field `channels`: unknown channel `bar_5m`; channels are trade, quote, book, bar_1s, bar_1m, bar_1h and bar_1d"
    );
    // The connection stays usable.
    ws.subscribe(4, &["X"], Some(&["bar_1d"]), true).await;
    let body = http_get(h.addr(), "/v1/sse?symbols=X&channels=bar_1x").await;
    assert!(body.starts_with("HTTP/1.1 400"), "{body}");
    assert!(
        body.contains("unknown channel `bar_1x` in channels; channels are trade, quote, book, bar_1s, bar_1m, bar_1h and bar_1d"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_dbn_bars_replay_on_their_channel() {
    use tickwire::recordings::import::{Vendor, import};
    use tickwire::recordings::selection::Selection;
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/glbx-mdp3_futures_ohlcv-1m_20240701T2340-20240702T0010.dbn.zst");
    let twr = dir.path().join("bars.twr");
    import(Vendor::Dbn, &[src], &twr, false, &Selection::default()).unwrap();
    let want: Vec<_> = read_all(&twr)
        .unwrap()
        .into_iter()
        .filter(|t| &*t.sym == "ESU4")
        .map(|t| match t.event {
            Event::Bar(b) => (t.ts, *b),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(want.len(), 30);

    let mut cfg = config();
    cfg.feed = FeedSource::Recording {
        path: twr,
        speed: Speed::Max,
        looping: false,
    };
    let h = start(cfg);
    let mut ws = subscriber(h.addr()).await;
    ws.send_json(json!({"op":"subscribe","id":1,"symbols":["ESU4"],"channels":["bar_1m"],"resume":{"epoch":h.ingest().epoch().to_string(),"offset":0},"policy":{"bar_1m":"catchup"}}))
        .await;
    ws.recv_until("subscribed").await;
    for (i, (ts, bar)) in want.iter().enumerate() {
        let m = ws.recv_json().await;
        assert_eq!(m["seq"].as_u64(), Some(i as u64 + 1), "{m}");
        assert_eq!(m["ts"].as_u64(), Some(*ts));
        assert_eq!(m["closed"], true, "imported bars are closed");
        assert_eq!(m["trades"], 0, "DBN has no trade count");
        let got = from_message(&m);
        assert_eq!(
            (
                got.start, got.open, got.high, got.low, got.close, got.volume
            ),
            (
                bar.start,
                bar.open.raw(),
                bar.high.raw(),
                bar.low.raw(),
                bar.close.raw(),
                bar.volume.raw()
            )
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_bars_replay_instead_of_being_built_again() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use tickwire::recordings::record::{RecordProgress, Subscription, record_channels};
    let dir = tempfile::tempdir().unwrap();
    let h = start(config());
    let addr = h.addr();
    let progress = Arc::new(RecordProgress::default());
    let out = dir.path().join("rec.twr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let rec = tokio::spawn({
        let (progress, out) = (progress.clone(), out.clone());
        async move {
            let what = Subscription {
                symbols: vec!["*".into()],
                channels: vec!["trade".into(), "bar_1m".into()],
            };
            record_channels(
                &format!("ws://{addr}"),
                &Default::default(),
                &what,
                &out,
                async {
                    let _ = stop_rx.await;
                },
                progress,
            )
            .await
        }
    });
    eventually("the recorder subscribed", || {
        progress.subscribed.load(Ordering::Acquire) == 1
    })
    .await;
    // Trades in three minutes of feed time: two 1m bars close, one opens.
    let t0 = 1_700_000_040 * NS;
    let mut publ = publisher(addr).await;
    for (i, px) in ["10", "11", "12"].iter().enumerate() {
        let ts = t0 + i as u64 * 60 * NS;
        publ.publish(&[trade_at(ts, px, "1", "B"), trade_at(ts + 1, "9", "2", "S")])
            .await;
    }
    // 6 trades; 1m bars: the first bar's open, two closes, and the third
    // bar's open (published by the clock a second after the second bar's
    // open was held back: at most one open bar a second).
    eventually("the recorder has the trades and bars", || {
        progress.ticks.load(Ordering::Relaxed) >= 10
    })
    .await;
    stop_tx.send(()).unwrap();
    rec.await.unwrap().unwrap();
    let recorded: Vec<_> = read_all(&out)
        .unwrap()
        .into_iter()
        .filter_map(|t| match t.event {
            Event::Bar(b) => Some(*b),
            _ => None,
        })
        .collect();
    assert!(recorded.iter().all(|b| b.interval.as_str() == "1m"));
    assert_eq!(recorded.iter().filter(|b| b.closed).count(), 2);

    // Replayed: from the first recorded bar on, the 1m bars are the
    // recorded ones (nothing built beside them); before it, the first
    // trade (recorded ahead of the bar it opened) built the same open bar.
    let mut cfg = config();
    cfg.feed = FeedSource::Recording {
        path: out,
        speed: Speed::Max,
        looping: false,
    };
    let h2 = start(cfg);
    let mut ws = subscriber(h2.addr()).await;
    ws.send_json(json!({"op":"subscribe","id":1,"symbols":["BARS"],"channels":["bar_1m"],"resume":{"epoch":h2.ingest().epoch().to_string(),"offset":0},"policy":{"bar_1m":"catchup"}}))
        .await;
    ws.recv_until("subscribed").await;
    let key = |b: &RefBar, closed: bool| (b.start, b.trades, b.open, closed);
    let mut got = Vec::new();
    while let Ok(m) =
        tokio::time::timeout(std::time::Duration::from_millis(1500), ws.recv_json()).await
    {
        assert_eq!(m["seq"].as_u64(), Some(got.len() as u64 + 1), "{m}");
        got.push(key(&from_message(&m), m["closed"] == true));
    }
    let want: Vec<_> = recorded
        .iter()
        .map(|b| (b.start, b.trades, b.open.raw(), b.closed))
        .collect();
    assert!(
        got.ends_with(&want) && got.len() <= want.len() + 1,
        "replayed {got:?}, recorded {want:?}"
    );
    if got.len() > want.len() {
        assert_eq!(got[0], want[0], "the one built bar is the recorded open");
    }
}
