//! Hot-path micro-benchmarks: ring hop, tick encoding, fan-out enqueue.
//!
//! `cargo bench --bench hot_path`. Figures are in README.md (Performance).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tickwire::model::decimal::Fixed;
use tickwire::model::tick::{Channel, Event, KeyId, Side, Tick};
use tickwire::pipeline::fanout::WorkerState;
use tickwire::pipeline::ring::ring;
use tickwire::pipeline::stats::Stats;
use tickwire::wire::encode::{EncodedTick, tick_json};

fn sample_tick(seq: u64) -> Tick {
    Tick {
        key: KeyId::new(7, Channel::Quote),
        sym: "AAPL".into(),
        seq,
        ts: 1_700_000_000_123_456_999,
        rx: 1_700_000_000_123_460_100,
        event: Event::Quote {
            bid: Fixed(189_220_000_000),
            bsz: Fixed(300_000_000_000),
            ask: Fixed(189_240_000_000),
            asz: Fixed(200_000_000_000),
        },
    }
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    let quote = sample_tick(43);
    let trade = Tick {
        event: Event::Trade {
            px: Fixed(189_230_000_000),
            qty: Fixed(100_000_000_000),
            side: Side::Buy,
        },
        ..sample_tick(42)
    };
    let mut buf = Vec::with_capacity(256);
    g.bench_function("tick_json/quote", |b| {
        b.iter(|| {
            buf.clear();
            tick_json(&mut buf, black_box(&quote), false);
            black_box(buf.len())
        })
    });
    g.bench_function("tick_json/trade", |b| {
        b.iter(|| {
            buf.clear();
            tick_json(&mut buf, black_box(&trade), false);
            black_box(buf.len())
        })
    });
    // What ingest does per tick: encode into its own shared frame.
    g.bench_function("encoded_tick/quote_frame", |b| {
        b.iter_batched(
            || quote.clone(),
            |t| black_box(EncodedTick::new(t)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn ring_hop(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring");
    const N: u64 = 1_000_000;
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    // One producer thread, one consumer thread. `u64` items measure the ring
    // itself; `Arc` items add what ingest carries: a refcount increment per
    // reader and a decrement when the slot is overwritten (each tick has its
    // own Arc, as in the server, so no refcount line is shared between ticks).
    fn run<T: Clone + Send + Sync + 'static>(make: impl Fn(u64) -> T) -> Duration {
        let (mut w, mut readers) = ring::<T>(65_536, 1);
        let mut r = readers.pop().unwrap();
        let items: Vec<T> = (0..4096).map(&make).collect();
        let start = Instant::now();
        let consumer = std::thread::spawn(move || {
            let mut out = Vec::with_capacity(1024);
            let mut got = 0u64;
            while got < N {
                out.clear();
                got += r.read_batch(&mut out, 1024) as u64;
            }
        });
        let mut sent = 0u64;
        while sent < N {
            if w.push(items[(sent % 4096) as usize].clone()).is_ok() {
                sent += 1;
            } else {
                std::hint::spin_loop();
            }
        }
        consumer.join().unwrap();
        start.elapsed()
    }
    g.bench_function("spsc_throughput_1M/u64", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| run(|i| i)).sum())
    });
    g.bench_function("spsc_throughput_1M/arc", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| run(Arc::new)).sum())
    });
    g.finish();

    // Hop latency: the time from push until the other thread has read it,
    // ping-ponged through two rings so one clock measures both ends.
    let mut g = c.benchmark_group("ring");
    g.throughput(Throughput::Elements(1));
    g.bench_function("hop_latency_round_trip", |b| {
        let (mut there_w, mut there_r) = ring::<u64>(1024, 1);
        let (mut back_w, mut back_r) = ring::<u64>(1024, 1);
        let mut there_r = there_r.pop().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let echo = std::thread::spawn(move || {
            let mut out = Vec::with_capacity(16);
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                out.clear();
                if there_r.read_batch(&mut out, 16) > 0 {
                    for v in &out {
                        while back_w.push(*v).is_err() {}
                    }
                }
            }
        });
        let mut back = back_r.pop().unwrap();
        let mut out = Vec::with_capacity(16);
        b.iter(|| {
            while there_w.push(1).is_err() {}
            loop {
                out.clear();
                if back.read_batch(&mut out, 16) > 0 {
                    break;
                }
                std::hint::spin_loop();
            }
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        echo.join().unwrap();
    });
    g.finish();
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    const SUBSCRIBERS: usize = 1_000;
    g.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    let stats = Arc::new(Stats::default());
    let mut st = WorkerState::default();
    let key = KeyId::new(7, Channel::Quote);
    let ids: Vec<_> = (0..SUBSCRIBERS)
        .map(|_| {
            let id = st.add_in_memory_client(stats.clone(), 256 * 1024);
            st.subscribe_keys(id, &[key]);
            id
        })
        .collect();
    let mut seq = 0;
    // One tick to 1,000 subscribers: an in-order append to each one's buffer.
    g.bench_function("one_tick_to_1000_subscribers", |b| {
        b.iter_batched(
            || {
                seq += 1;
                Arc::new(EncodedTick::new(sample_tick(seq)))
            },
            |item| {
                st.deliver(&item);
                for &id in &ids {
                    black_box(st.client(id).unwrap().take_output());
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// What bars cost a trade at ingest: admit + sequence + publish one trade
/// (1 ms of feed time apart, so a 1 s bar closes every 1,000 trades) into
/// a server with no clients (its one worker drains the ring), with bar
/// building off and on.
fn ingest_bars(c: &mut Criterion) {
    use tickwire::model::tick::NewTick;
    use tickwire::server::config::{Config, FeedSource};
    let mut g = c.benchmark_group("ingest_trade");
    g.throughput(Throughput::Elements(1));
    let h = tickwire::server::start(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        feed: FeedSource::None,
        workers: 1,
        ..Config::default()
    })
    .expect("server starts");
    let ingest = h.ingest();
    let mut ts = 1_700_000_000_000_000_000u64;
    for bars in [false, true] {
        ingest.set_bars(bars);
        let name = if bars { "bars_on" } else { "bars_off" };
        g.bench_function(name, |b| {
            b.iter(|| {
                ts += 1_000_000;
                let t = NewTick {
                    sym: "BTCUSDT".into(),
                    ts,
                    event: Event::Trade {
                        px: Fixed(9_666_740_000_000 + (ts / 1_000_000 % 100) as i64),
                        qty: Fixed(12_000_000),
                        side: Side::Buy,
                    },
                    book: None,
                };
                let a = ingest.admit(t).unwrap();
                while ingest.try_publish(std::slice::from_ref(&a)) == 0 {
                    std::thread::yield_now();
                }
            })
        });
    }
    g.finish();
    h.shutdown();
}

/// S1's shape in memory: 1,000 clients, each subscribed to 20 of 200 keys
/// (10 symbols × 2 channels of 100), so that their state (≈2.5 MB with the
/// key maps and buffers) does not fit one core's L2 and every delivery
/// finds its client cold, as at S1. One iteration is one pass: a tick on
/// each of 10 keys (~1,000 deliveries), then every client that got one
/// takes its output (the write, without the socket).
fn fanout_s1_shape(c: &mut Criterion) {
    const CLIENTS: usize = 1_000;
    const KEYS: u32 = 200;
    const PER_CLIENT: usize = 20;
    const PASS: u32 = 10;
    let stats = Arc::new(Stats::default());
    let mut st = WorkerState::default();
    let key = |k: u32| {
        KeyId::new(
            k / 2,
            if k.is_multiple_of(2) {
                Channel::Trade
            } else {
                Channel::Quote
            },
        )
    };
    let mut subscribers: Vec<Vec<usize>> = vec![Vec::new(); KEYS as usize];
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..CLIENTS {
        let id = st.add_in_memory_client(stats.clone(), 256 * 1024);
        let mut mine: Vec<u32> = Vec::new();
        while mine.len() < PER_CLIENT {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let k = (rng % u64::from(KEYS)) as u32;
            if !mine.contains(&k) {
                mine.push(k);
                subscribers[k as usize].push(id);
            }
        }
        let keys: Vec<KeyId> = mine.iter().map(|&k| key(k)).collect();
        st.subscribe_keys(id, &keys);
    }
    let mut next_key = 0u32;
    let mut seq = 0u64;
    let per_pass: usize = (0..PASS).map(|k| subscribers[k as usize].len()).sum();
    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(per_pass as u64));
    g.bench_function("s1_shape_pass_of_10_ticks_to_1000_clients", |b| {
        b.iter_batched(
            || {
                let first = next_key;
                next_key = (next_key + PASS) % KEYS;
                (0..PASS)
                    .map(|i| {
                        seq += 1;
                        let k = (first + i) % KEYS;
                        let tick = Tick {
                            key: key(k),
                            ..sample_tick(seq)
                        };
                        (k, Arc::new(EncodedTick::new(tick)))
                    })
                    .collect::<Vec<_>>()
            },
            |items| {
                for (_, item) in &items {
                    st.deliver(item);
                }
                for (k, _) in &items {
                    for &id in &subscribers[*k as usize] {
                        black_box(st.client(id).unwrap().take_output());
                    }
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    encode,
    ring_hop,
    fanout,
    fanout_s1_shape,
    ingest_bars
);
criterion_main!(benches);
