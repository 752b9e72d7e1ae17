//! Replay, record and serve --replay end to end over real sockets on
//! 127.0.0.1, with real data imported from tests/data.

mod replay_support;

use std::path::{Path, PathBuf};

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use replay_support::data;
use tickwire::model::speed::Speed;
use tickwire::model::tick::NewTick;
use tickwire::recordings::format::read_all;
use tickwire::recordings::import::{Vendor, import};
use tickwire::recordings::record::Ending;
use tickwire::recordings::replay::client::{ReplayError, ReplayOptions, replay, summary};
use tickwire::recordings::selection::{Selection, TimeSpec};
use tickwire::server::config::{Config, FeedSource};
use tickwire::server::{ServerHandle, start};
use tickwire::wire::publish::{Published, parse_publish};
use tokio_tungstenite::tungstenite::Message;

fn server() -> ServerHandle {
    start(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        feed: FeedSource::None,
        // The recorder in these tests must see every tick, even in a debug
        // build that reads slower than replay at max sends: give its backlog
        // room under the byte cap instead of coalescing stale ticks.
        client_buffer_bytes: 256 * 1024 * 1024,
        evict_after: Duration::from_secs(60),
        workers: 1,
        ..Config::default()
    })
    .unwrap()
}

fn imported(dir: &Path, name: &str, vendor: Vendor, inputs: &[PathBuf], sel: Selection) -> PathBuf {
    let out = dir.join(name);
    import(vendor, inputs, &out, false, &sel).unwrap();
    out
}

fn btc() -> Vec<PathBuf> {
    vec![
        data("tardis_binance-futures_BTCUSDT_20200222_trades.csv"),
        data("tardis_binance-futures_BTCUSDT_20200222_quotes.csv"),
    ]
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..2_000 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_replay_at_max_record_round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let mut inputs = btc();
    let src = imported(
        dir.path(),
        "btc.twr",
        Vendor::Tardis,
        &inputs,
        Selection::default(),
    );
    inputs = vec![data("glbx-mdp3_ESU4_20240701_mbp-1.dbn.zst")];
    let es = imported(
        dir.path(),
        "es.jsonl.zst",
        Vendor::Dbn,
        &inputs,
        Selection::default(),
    );
    let mut want = read_all(&src).unwrap();
    want.extend(read_all(&es).unwrap()); // 2020 then 2024: merged order is file order
    assert_eq!(want.len(), 19_998 + 2_288);

    let srv = server();
    let addr = srv.addr();
    let out = dir.path().join("rec.twr.zst");
    let replay_support::Recorder {
        progress,
        stop: stop_tx,
        task: rec,
    } = replay_support::start_recorder(addr, &["*"], &out).await;

    let opts = ReplayOptions::new(
        vec![src.clone(), es.clone()],
        format!("ws://{addr}/v1/publish"),
        Speed::Max,
    );
    let report = replay(&opts, std::future::pending()).await.unwrap();
    assert_eq!(report.sent, want.len() as u64);
    assert!(report.pacing.is_none());
    assert_eq!(report.server_errors, 0, "{:?}", report.first_server_error);
    assert!(summary(&report, &opts.url).contains("pacing error: not measured at --speed max"));

    // The recorder keeps up (its backlog stays under the byte cap), so the
    // server drops nothing: every imported tick is recorded, exactly.
    let stats = srv.stats().clone();
    wait_for("every tick recorded", || {
        progress.ticks.load(Ordering::Relaxed) == want.len() as u64
    })
    .await;
    stop_tx.send(()).unwrap();
    let r = rec.await.unwrap().unwrap();
    assert_eq!(r.ending, Ending::Stopped);
    assert_eq!(r.ticks, want.len() as u64);
    assert_eq!(
        tickwire::pipeline::stats::Stats::get(&stats.ticks_dropped_stale),
        0
    );
    assert_eq!(r.missing, 0, "no seq gaps");
    let got = read_all(&out).unwrap();
    assert_eq!(got.len() as u64, r.ticks);
    // Ticks of one key keep their order; keys may interleave differently
    // (docs/PROTOCOL.md), so compare key by key.
    let by_key = |ticks: &[NewTick]| {
        let mut m: std::collections::BTreeMap<(String, u8), Vec<NewTick>> = Default::default();
        for t in ticks {
            m.entry((t.sym.to_string(), t.event.channel() as u8))
                .or_default()
                .push(t.clone());
        }
        m
    };
    assert_eq!(by_key(&got), by_key(&want));
    srv.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_at_speed_1_is_measured_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    // The first 6 s of BTCUSDT quotes: a few hundred ticks.
    let sel = Selection {
        end: Some(TimeSpec::parse("+6s").unwrap()),
        ..Selection::default()
    };
    let src = imported(dir.path(), "q.twr", Vendor::Tardis, &btc()[1..], sel);
    let ticks = read_all(&src).unwrap();
    assert!((100..1_000).contains(&ticks.len()), "{}", ticks.len());
    let span = Duration::from_nanos(ticks.last().unwrap().ts - ticks[0].ts);

    let srv = server();
    let opts = ReplayOptions::new(
        vec![src],
        format!("ws://{}/v1/publish", srv.addr()),
        Speed::Factor(1.0),
    );
    let report = replay(&opts, std::future::pending()).await.unwrap();
    assert_eq!(report.sent, ticks.len() as u64);
    let h = report
        .pacing
        .as_ref()
        .expect("a paced replay measures pacing");
    assert_eq!(h.len(), ticks.len() as u64, "one pacing sample per tick");
    assert!(h.value_at_quantile(0.5) <= h.value_at_quantile(0.99));
    assert!(h.value_at_quantile(0.99) <= h.max());
    assert!(
        report.duration >= span,
        "paced: {:?} < recorded {:?}",
        report.duration,
        span
    );
    let text = summary(&report, &opts.url);
    for w in [
        "pacing error (sent − scheduled)",
        "p50 ",
        "p99 ",
        "max ",
        "ticks/s",
        &format!("replayed {} ticks", ticks.len()),
    ] {
        assert!(text.contains(w), "{text}");
    }
    srv.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_and_symbols_select_what_is_played() {
    let dir = tempfile::tempdir().unwrap();
    let src = imported(
        dir.path(),
        "q.twr",
        Vendor::Tardis,
        &btc(),
        Selection::default(),
    );
    let srv = server();
    let mut opts = ReplayOptions::new(
        vec![src.clone()],
        format!("ws://{}", srv.addr()),
        Speed::Max,
    );
    opts.selection = Selection {
        start: Some(TimeSpec::parse("2020-02-22T00:00:10Z").unwrap()),
        end: Some(TimeSpec::parse("2020-02-22T00:01:00Z").unwrap()),
        symbols: vec!["BTCUSDT".into()],
    };
    let all = read_all(&src).unwrap();
    let want = all
        .iter()
        .filter(|t| (1_582_329_610_000_000_000..1_582_329_660_000_000_000).contains(&t.ts))
        .count();
    assert!(want > 100);
    assert_eq!(
        replay(&opts, std::future::pending()).await.unwrap().sent,
        want as u64
    );
    opts.selection.symbols = vec!["ETHUSDT".into()];
    let e = replay(&opts, std::future::pending()).await.unwrap_err();
    assert!(matches!(e, ReplayError::Empty { .. }), "{e}");
    // The error shows the window it computed and what the files hold.
    let msg = e.to_string();
    assert!(
        msg.contains("[2020-02-22T00:00:10Z, 2020-02-22T00:01:00Z) for ETHUSDT")
            && msg.contains(&format!("hold {} ticks, from 2020-02-22T00:00:", all.len())),
        "{msg}"
    );
    srv.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_end_counts_from_start_as_the_readme_example_says() {
    let dir = tempfile::tempdir().unwrap();
    let src = imported(
        dir.path(),
        "r.twr",
        Vendor::Tardis,
        &btc(),
        Selection::default(),
    );
    let all = read_all(&src).unwrap();
    let first = all[0].ts;
    // --start 20 s after the first tick, --end +10s: [first+20s, first+30s).
    let start = first + 20_000_000_000;
    let want = all
        .iter()
        .filter(|t| (start..start + 10_000_000_000).contains(&t.ts))
        .count();
    assert!(want > 10, "{want}");
    let srv = server();
    let mut opts = ReplayOptions::new(vec![src], format!("ws://{}", srv.addr()), Speed::Max);
    opts.selection = Selection {
        start: Some(TimeSpec::Absolute(start)),
        end: Some(TimeSpec::parse("+10s").unwrap()),
        symbols: vec![],
    };
    // Before, +10s counted from the first tick: a window ending before it began.
    assert_eq!(
        replay(&opts, std::future::pending()).await.unwrap().sent,
        want as u64
    );
    srv.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_recording_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let src = imported(
        dir.path(),
        "t.twr",
        Vendor::Tardis,
        &btc(),
        Selection::default(),
    );
    let bytes = std::fs::read(&src).unwrap();
    let cut = dir.path().join("cut.twr");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let srv = server();
    let opts = ReplayOptions::new(vec![cut], format!("ws://{}", srv.addr()), Speed::Max);
    let e = replay(&opts, std::future::pending()).await.unwrap_err();
    assert!(matches!(e, ReplayError::Recording(_)), "{e}");
    assert!(e.to_string().contains("cut.twr"), "{e}");
    // Nothing reached the server: it was checked before connecting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        srv.stats().connections_total.load(Ordering::Relaxed),
        0,
        "replay connected although the file was cut"
    );
    srv.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_goes_away_is_reported_by_replay_and_record_keeps_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = imported(
        dir.path(),
        "b.twr",
        Vendor::Tardis,
        &btc(),
        Selection::default(),
    );
    let srv = server();
    let addr = srv.addr();
    let out = dir.path().join("kept.jsonl");
    // Never stopped: the server going away ends it.
    let replay_support::Recorder {
        progress,
        stop: _keep_running,
        task: rec,
    } = replay_support::start_recorder(addr, &["BTCUSDT"], &out).await;
    // Recorded pace: the replay is still running when the server stops.
    let opts = ReplayOptions::new(
        vec![src],
        format!("ws://{addr}/v1/publish"),
        Speed::Factor(1.0),
    );
    let player = tokio::spawn(async move { replay(&opts, std::future::pending()).await });
    wait_for("some ticks recorded", || {
        progress.ticks.load(Ordering::Relaxed) >= 3
    })
    .await;
    tokio::task::spawn_blocking(move || srv.shutdown())
        .await
        .unwrap();

    let e = player.await.unwrap().unwrap_err();
    assert!(matches!(e, ReplayError::ServerGone { .. }), "{e}");
    assert!(e.to_string().contains("went away after"), "{e}");
    let r = rec.await.unwrap().unwrap();
    assert!(
        matches!(
            r.ending,
            Ending::ServerClosed(_) | Ending::ConnectionLost(_)
        ),
        "{:?}",
        r.ending
    );
    let kept = read_all(&out).unwrap();
    assert_eq!(kept.len() as u64, r.ticks);
    assert!(kept.len() >= 3);
}

async fn subscribe_and_collect(addr: std::net::SocketAddr, n: usize) -> Vec<NewTick> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/stream"))
        .await
        .unwrap();
    ws.send(Message::text(
        r#"{"op":"subscribe","symbols":["*"],"snapshot":false}"#,
    ))
    .await
    .unwrap();
    let mut got = Vec::new();
    while got.len() < n {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg
            && (t.contains("\"type\":\"trade\"") || t.contains("\"type\":\"quote\""))
            && let Some(Ok(Published::Tick(tick))) = parse_publish(t.as_bytes()).pop()
        {
            got.push(tick);
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_plays_a_recording_file_and_the_embedded_default_through_the_same_reader() {
    let dir = tempfile::tempdir().unwrap();
    let src = imported(
        dir.path(),
        "es.twr.zst",
        Vendor::Dbn,
        &[data("glbx-mdp3_ESU4_20240701_mbp-1.dbn.zst")],
        Selection::default(),
    );
    let want = read_all(&src).unwrap();
    let srv = start(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        feed: FeedSource::Recording {
            path: src,
            speed: Speed::Factor(20.0),
            looping: false,
        },
        ..Config::default()
    })
    .unwrap();
    let got = subscribe_and_collect(srv.addr(), 20).await;
    // The recording in order, values exact, nothing skipped (we may join late).
    let k = want
        .iter()
        .position(|t| *t == got[0])
        .expect("first received tick is in the file");
    assert_eq!(got, want[k..k + got.len()]);
    srv.shutdown();

    let embedded = tickwire::recordings::replay::embedded_ticks().unwrap();
    let srv = start(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        feed: FeedSource::Embedded {
            speed: tickwire::model::speed::Speed::Factor(1.0),
        },
        ..Config::default()
    })
    .unwrap();
    let got = subscribe_and_collect(srv.addr(), 5).await;
    for t in got {
        // ts is rebased to now; everything else comes from the recording.
        assert!(
            embedded
                .iter()
                .any(|e| e.sym == t.sym && e.event == t.event),
            "{t:?}"
        );
    }
    srv.shutdown();
}
