//! `tickwire record` loses nothing: a `--speed max` replay of the full
//! 2013-10-07 Lean SPY trades day (250,601 ticks, in tests/data) is
//! recorded whole, with 0 gaps, at the server's default byte cap. The
//! recorder subscribes with the `catchup` policy, so whenever it falls
//! behind the server feeds it from the shared history instead of conflating.

mod replay_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use replay_support::data;
use tickwire::model::speed::Speed;
use tickwire::recordings::import::{Vendor, import};
use tickwire::recordings::record::Ending;
use tickwire::recordings::replay::client::{ReplayOptions, replay};
use tickwire::recordings::selection::Selection;
use tickwire::server::config::{Config, FeedSource};
use tickwire::server::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_of_a_max_speed_replay_of_a_full_spy_day_keeps_every_tick() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("spy.twr");
    import(
        Vendor::Lean,
        &[data("lean_equity_tick_20131007/spy_20131007_trade.zip")],
        &src,
        false,
        &Selection::default(),
    )
    .unwrap();
    // The server's defaults (256 KiB byte cap, 5 s eviction): only the
    // catch-up policy keeps the recorder whole.
    let srv = start(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        feed: FeedSource::None,
        ..Config::default()
    })
    .unwrap();
    let addr = srv.addr();
    let out = dir.path().join("rec.twr");
    let replay_support::Recorder {
        progress,
        stop: stop_tx,
        task: rec,
    } = replay_support::start_recorder(addr, &["*"], &out).await;
    let opts = ReplayOptions::new(vec![src], format!("ws://{addr}/v1/publish"), Speed::Max);
    let report = replay(&opts, std::future::pending()).await.unwrap();
    assert_eq!(report.sent, 250_601);
    // Until every tick is in, or the recorder has made no progress for 10 s.
    let (mut seen, mut still) = (0, 0);
    while seen < 250_601 && still < 1_000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = progress.ticks.load(Ordering::Relaxed);
        still = if now == seen { still + 1 } else { 0 };
        seen = now;
    }
    stop_tx.send(()).unwrap();
    let r = rec.await.unwrap().unwrap();
    assert_eq!(r.ending, Ending::Stopped);
    assert_eq!(r.ticks, 250_601);
    assert_eq!((r.gaps, r.missing, r.out_of_history), (0, 0, 0));
    assert_eq!(
        r.epoch.as_deref(),
        Some(srv.ingest().epoch().to_string().as_str())
    );
    assert_eq!(
        tickwire::pipeline::stats::Stats::get(&srv.stats().ticks_dropped_stale),
        0
    );
}
