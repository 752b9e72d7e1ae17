//! Throughput of the recorded-feed path, in ticks/s: reading recordings
//! (binary plain/zstd, JSON lines), importing the real Lean files, and
//! replaying at --speed max into a running in-process server.
//! Needs shared/data (found above the crate directory, as in the tests).

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickwire::model::speed::Speed;
use tickwire::recordings::format::{RecordingReader, RecordingWriter, read_all};
use tickwire::recordings::import::{Vendor, import};
use tickwire::recordings::replay::client::{ReplayOptions, replay};
use tickwire::recordings::selection::Selection;
use tickwire::server::config::{Config, FeedSource};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("shared").join("data"))
        .find(|d| d.join("README.md").is_file())
        .expect("shared/data above the crate directory")
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ticks = tickwire::recordings::replay::embedded_ticks().unwrap();
    let n = ticks.len() as u64;
    let mut files = Vec::new();
    for name in ["s.twr", "s.twr.zst", "s.jsonl", "s.jsonl.zst"] {
        let p = dir.path().join(name);
        let mut w = RecordingWriter::create(&p).unwrap();
        for t in &ticks {
            w.write(t).unwrap();
        }
        w.finish().unwrap();
        files.push((name, p));
    }
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Elements(n));
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for (name, p) in &files {
        g.bench_function(*name, |b| {
            b.iter(|| {
                let r = RecordingReader::open(p).unwrap();
                assert_eq!(r.count() as u64, n);
            })
        });
    }
    g.finish();

    let lean = data_dir().join("lean_equity_tick_20131007");
    let inputs: Vec<PathBuf> = ["aig", "bac", "ibm", "spy"]
        .iter()
        .map(|s| lean.join(format!("{s}_20131007_trade.zip")))
        .chain([lean.join("ibm_20131007_quote.zip")])
        .collect();
    let mut g = c.benchmark_group("import");
    g.throughput(Throughput::Elements(427_526));
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.bench_function("lean_all_5_zips_to_twr", |b| {
        b.iter(|| {
            let out = dir.path().join("lean.twr");
            import(Vendor::Lean, &inputs, &out, false, &Selection::default()).unwrap();
        })
    });
    g.finish();

    let server = tickwire::server::start(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        feed: FeedSource::None,
        workers: 1,
        ..Config::default()
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let src = &files[1].1; // the zstd binary session
    assert_eq!(read_all(src).unwrap().len() as u64, n);
    let opts = ReplayOptions::new(
        vec![src.clone()],
        format!("ws://{}/v1/publish", server.addr()),
        Speed::Max,
    );
    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(n));
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.bench_function("max_into_server_62k_ticks", |b| {
        b.iter(|| {
            let r = rt.block_on(replay(&opts, std::future::pending())).unwrap();
            assert_eq!(r.sent, n);
        })
    });
    g.finish();
    server.shutdown();
}

criterion_group!(benches, bench);
criterion_main!(benches);
