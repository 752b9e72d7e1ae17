//! Nothing lost on a reconnect: clients disconnect at random moments
//! (close, FIN, RST) while a publisher sends 2,000 ticks/s, resume from
//! their position, and must end with every tick of every key exactly once,
//! per-key `seq` contiguous. JSON and binary over WebSocket, and SSE with
//! `Last-Event-ID`; named keys and `*` (with symbols first seen while away).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tickwire::server::ServerHandle;
use tokio::io::AsyncWriteExt;

use tokio::net::TcpStream;

/// (symbol, channel).
type Key = (String, String);

/// A small deterministic generator (xorshift), so a failure replays.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Publishes 10 ticks every 5 ms (2,000/s) until told to stop: trades and
/// quotes over five symbols, plus a new symbol every 400 ticks (so `*`
/// clients meet symbols first seen while they are away). Returns the
/// number of ticks of every key.
fn spawn_publisher(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<HashMap<Key, u64>> {
    tokio::spawn(async move {
        let mut publ = publisher(addr).await;
        let mut counts: HashMap<Key, u64> = HashMap::new();
        let mut n = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let mut batch = Vec::new();
            for _ in 0..10 {
                n += 1;
                let sym = if n.is_multiple_of(400) {
                    format!("NEW{}", n / 400)
                } else {
                    format!("S{}", n % 5)
                };
                let (t, ch) = if n.is_multiple_of(3) {
                    (quote(&sym, n, "1", "2"), "quote")
                } else {
                    (trade(&sym, n, "1", "1"), "trade")
                };
                *counts.entry((sym, ch.to_string())).or_default() += 1;
                batch.push(t);
            }
            publ.send_json(Value::Array(batch)).await;
        }
        publ.sync().await;
        counts
    })
}

/// What a client has received so far, checked as it arrives.
#[derive(Default)]
struct Ledger {
    /// Every key's last `seq`: each new one must be exactly the next.
    seqs: BTreeMap<Key, u64>,
    ticks: u64,
}

impl Ledger {
    fn take(&mut self, sym: &str, channel: &str, seq: u64) {
        let last = self
            .seqs
            .entry((sym.to_string(), channel.to_string()))
            .or_default();
        assert_eq!(
            seq,
            *last + 1,
            "{sym} {channel}: got seq {seq} after {last} (gap or duplicate)"
        );
        *last = seq;
        self.ticks += 1;
    }

    /// `resume.seq`: `{"trade":{"S1":12,…},"quote":{…}}`.
    fn seq_json(&self) -> Value {
        let mut by: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
        for ((sym, ch), seq) in &self.seqs {
            by.entry(ch).or_default().insert(sym, *seq);
        }
        json!(by)
    }

    fn done(&self, want: &HashMap<Key, u64>) -> bool {
        want.iter().all(|(k, n)| self.seqs.get(k) == Some(n))
    }
}

/// Ends a connection one of three ways.
async fn disconnect(mut stream: TcpStream, how: u64) {
    match how {
        // A WebSocket Close (or, for SSE, just the FIN after it).
        0 => {
            let _ = stream
                .write_all(&encode_frame(true, 8, &[0x03, 0xe8]))
                .await;
            let _ = stream.shutdown().await;
        }
        // FIN without a Close.
        1 => {
            let _ = stream.shutdown().await;
        }
        // RST.
        _ => {
            // SO_LINGER 0: the close sends RST (it cannot block at 0).
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
        }
    }
    drop(stream);
}

const RECONNECTS: usize = 100;

/// Decodes what a WebSocket client gets into ticks for the ledger;
/// returns `true` when the frame held at least one tick.
fn ledger_frame(msg: &Msg, names: &mut HashMap<u64, String>, ledger: &mut Ledger) -> Option<Value> {
    match msg {
        Msg::Text(t) => {
            let v: Value = serde_json::from_str(t).unwrap();
            match v["type"].as_str() {
                Some("trade" | "quote") => {
                    assert!(
                        v.get("snap").is_none(),
                        "a resumed client gets no snapshot: {v}"
                    );
                    ledger.take(
                        v["sym"].as_str().unwrap(),
                        v["type"].as_str().unwrap(),
                        v["seq"].as_u64().unwrap(),
                    );
                    None
                }
                Some("symbol") => {
                    names.insert(
                        v["id"].as_u64().unwrap(),
                        v["sym"].as_str().unwrap().to_string(),
                    );
                    None
                }
                _ => Some(v),
            }
        }
        Msg::Binary(b) => {
            for (ch, id, seq) in resumed_bin_ticks(b) {
                let sym = names
                    .get(&id)
                    .unwrap_or_else(|| panic!("record of unannounced id {id}"))
                    .clone();
                ledger.take(&sym, ch, seq);
            }
            None
        }
        other => panic!("unexpected frame {other:?}"),
    }
}

/// How a test client meets the rest of the test.
#[derive(Clone)]
struct Cues {
    /// Met once the first subscription is in place (the publisher waits).
    subscribed: Arc<tokio::sync::Barrier>,
    /// Told when the client has made all its reconnects.
    rounds_done: tokio::sync::mpsc::Sender<()>,
    /// Every key's tick count, once the publisher has stopped.
    want: tokio::sync::watch::Receiver<Option<HashMap<Key, u64>>>,
}

impl Cues {
    /// The counts of the keys `symbols` covers, once known.
    async fn want(&mut self, symbols: &[&str]) -> HashMap<Key, u64> {
        let all = self
            .want
            .wait_for(|w| w.is_some())
            .await
            .unwrap()
            .clone()
            .unwrap();
        all.into_iter()
            .filter(|((s, _), _)| symbols.contains(&"*") || symbols.contains(&s.as_str()))
            .collect()
    }
}

/// One WebSocket client reconnecting `RECONNECTS` times, then reading
/// until it has every tick published.
async fn reconnecting_ws_client(
    addr: SocketAddr,
    symbols: Vec<&'static str>,
    binary: bool,
    seed: u64,
    mut cues: Cues,
) -> Ledger {
    let mut rng = Rng(seed);
    let mut ledger = Ledger::default();
    let mut names: HashMap<u64, String> = HashMap::new();
    let mut epoch: Option<String> = None;
    let mut offset = 0u64;
    let headers = if binary {
        "Sec-WebSocket-Protocol: tickwire.bin.v1\r\n"
    } else {
        ""
    };
    for round in 0..=RECONNECTS {
        let (mut ws, head) = connect_with(addr, "/v1/stream", headers, None).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let hello = ws.recv_json().await;
        if let Some(e) = &epoch {
            assert_eq!(
                &hello["epoch"],
                e.as_str(),
                "the epoch is the same on every connection"
            );
        }
        let mut req = json!({"op":"subscribe","id":round,"symbols":symbols,"snapshot":false});
        if let Some(e) = &epoch {
            req["resume"] = json!({"epoch": e, "seq": ledger.seq_json(), "offset": offset});
        }
        ws.send_json(req).await;
        let subscribed = loop {
            let m = ws.recv().await;
            if let Some(v) = ledger_frame(&m, &mut names, &mut ledger) {
                assert_eq!(v["type"], "subscribed", "{v}");
                break v;
            }
        };
        if let Some(ids) = subscribed["ids"].as_object() {
            for (n, i) in ids {
                names.insert(i.as_u64().unwrap(), n.clone());
            }
        }
        if epoch.is_some() {
            let r = &subscribed["resumed"];
            assert_eq!(r["recovered"], true, "round {round}: {subscribed}");
            for k in r["keys"].as_array().unwrap() {
                assert_eq!(k["recovered"], true, "round {round}: {k}");
            }
        } else {
            assert_eq!(subscribed["epoch"], hello["epoch"]);
            cues.subscribed.wait().await;
        }
        epoch = Some(subscribed["epoch"].as_str().unwrap().to_string());
        offset = subscribed["offset"].as_u64().unwrap();
        if round < RECONNECTS {
            // Read a random number of frames, then go away mid-stream.
            for _ in 0..rng.below(30) {
                let m = ws.recv().await;
                if let Some(v) = ledger_frame(&m, &mut names, &mut ledger) {
                    panic!("unexpected {v}");
                }
            }
            disconnect(ws.stream, rng.below(3)).await;
            continue;
        }
        cues.rounds_done.send(()).await.unwrap();
        let want = cues.want(&symbols).await;
        while !ledger.done(&want) {
            let m = ws.recv().await;
            if let Some(v) = ledger_frame(&m, &mut names, &mut ledger) {
                panic!("unexpected {v}");
            }
        }
        assert_eq!(
            ledger.ticks,
            want.values().sum::<u64>(),
            "every tick exactly once"
        );
    }
    ledger
}

/// Runs clients (each given its cues) against a publisher at 2,000
/// ticks/s that stops once they have all made their reconnects.
async fn with_publisher<F, Fut>(clients: usize, spawn: F)
where
    F: FnOnce(SocketAddr, Cues) -> Vec<tokio::task::JoinHandle<Fut>>,
    Fut: Send + 'static,
{
    let h = start(config());
    let addr = h.addr();
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel(clients);
    let (want_tx, want_rx) = tokio::sync::watch::channel(None);
    let tasks = spawn(
        addr,
        Cues {
            subscribed: barrier.clone(),
            rounds_done: done_tx,
            want: want_rx,
        },
    );
    barrier.wait().await;
    let stop = Arc::new(AtomicBool::new(false));
    let publ = spawn_publisher(addr, stop.clone());
    for _ in 0..clients {
        tokio::time::timeout(Duration::from_secs(120), done_rx.recv())
            .await
            .expect("reconnects finish")
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let counts = publ.await.unwrap();
    assert!(
        counts.keys().any(|(s, _)| s.starts_with("NEW")),
        "new symbols appeared while clients were away"
    );
    want_tx.send(Some(counts)).unwrap();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("client finishes")
            .unwrap();
    }
    assert_eq!(h.stats().catchup_gaps.load(Ordering::Relaxed), 0);
    assert!(
        h.stats().catchup_ticks.load(Ordering::Relaxed) > 0,
        "some ticks came from the history"
    );
}

async fn run_ws(binary: bool) {
    with_publisher(2, |addr, cues| {
        vec![
            tokio::spawn(reconnecting_ws_client(
                addr,
                vec!["S0", "S1", "S2", "S3", "S4"],
                binary,
                0x9e3779b97f4a7c15,
                cues.clone(),
            )),
            tokio::spawn(reconnecting_ws_client(
                addr,
                vec!["*"],
                binary,
                0x2545f4914f6cdd1d,
                cues,
            )),
        ]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_clients_resume_after_random_disconnects_and_lose_nothing() {
    run_ws(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_clients_resume_after_random_disconnects_and_lose_nothing() {
    run_ws(true).await;
}

/// An SSE client that reconnects `RECONNECTS` times with the
/// `Last-Event-ID` of the last event it got, as a browser's EventSource does.
async fn reconnecting_sse_client(
    addr: SocketAddr,
    symbols: Vec<&'static str>,
    seed: u64,
    mut cues: Cues,
) -> Ledger {
    let mut rng = Rng(seed);
    let mut ledger = Ledger::default();
    let mut last_id: Option<String> = None;
    // Catch-up keeps the event ids in offset order (a conflated stream's are
    // not), so the last id seen is an exact position.
    let path = format!(
        "/v1/sse?symbols={}&catchup=trade,quote",
        symbols.join(",").replace('*', "%2A")
    );
    let take = |e: &SseEvent, ledger: &mut Ledger| {
        let v: Value = serde_json::from_str(&e.data).unwrap();
        assert!(
            v.get("snap").is_none(),
            "a resumed stream gets no snapshot: {v}"
        );
        ledger.take(
            v["sym"].as_str().unwrap(),
            &e.event,
            v["seq"].as_u64().unwrap(),
        );
    };
    for round in 0..=RECONNECTS {
        let mut sse = SseStream::open(addr, &path, last_id.as_deref()).await;
        let first = sse.next().await;
        let v: Value = serde_json::from_str(&first.data).unwrap();
        if last_id.is_some() {
            assert_eq!(first.event, "resume", "round {round}: {}", first.data);
            assert_eq!(v["type"], "resume");
            assert_eq!(v["resumed"]["recovered"], true, "round {round}: {v}");
        } else {
            assert_eq!(first.event, "position");
            cues.subscribed.wait().await;
        }
        let id = first
            .id
            .expect("the first event carries the stream's position");
        assert_eq!(
            id,
            format!("{}:{}", v["epoch"].as_str().unwrap(), v["offset"])
        );
        last_id = Some(id);
        let handle = |e: SseEvent, ledger: &mut Ledger, last_id: &mut Option<String>| {
            match e.event.as_str() {
                "trade" | "quote" => take(&e, ledger),
                other => panic!("unexpected event {other}: {}", e.data),
            }
            if let Some(id) = e.id {
                *last_id = Some(id);
            }
        };
        if round < RECONNECTS {
            for _ in 0..rng.below(30) {
                let e = sse.next().await;
                handle(e, &mut ledger, &mut last_id);
            }
            disconnect(sse.into_stream(), 1 + rng.below(2)).await;
            continue;
        }
        cues.rounds_done.send(()).await.unwrap();
        let want = cues.want(&symbols).await;
        while !ledger.done(&want) {
            let e = sse.next().await;
            handle(e, &mut ledger, &mut last_id);
        }
        assert_eq!(
            ledger.ticks,
            want.values().sum::<u64>(),
            "every tick exactly once"
        );
    }
    ledger
}

// Ran on two workers: a client resuming on a worker that has not yet
// delivered up to its position got those ticks again (a duplicate in about
// one run in two on a loaded machine) until the resume set a floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_clients_resume_every_key_from_last_event_id_and_lose_nothing() {
    with_publisher(2, |addr, cues| {
        vec![
            tokio::spawn(reconnecting_sse_client(
                addr,
                vec!["S0", "S2", "S4"],
                0x51ed270b27b5d9c1,
                cues.clone(),
            )),
            tokio::spawn(reconnecting_sse_client(
                addr,
                vec!["*"],
                0x6a09e667f3bcc909,
                cues,
            )),
        ]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_resume_gets_a_precise_answer_and_the_rest_of_the_subscription_works() {
    let mut c = config();
    c.max_keys_per_connection = 4;
    // The offsets below count trades and quotes alone; built bars would
    // take offsets of their own (docs/PROTOCOL.md "Bars").
    c.bars = false;
    let h = start(c);
    let addr = h.addr();
    let mut publ = publisher(addr).await;
    for i in 1..=3 {
        publ.publish(&[trade("AAPL", i, "1", "1"), trade("MSFT", i, "1", "1")])
            .await;
    }
    let mut ws = subscriber(addr).await;
    let (reply, _) = ask(
        &mut ws,
        json!({"op":"subscribe","id":1,"symbols":["IBM"],"channels":["trade"]}),
    )
    .await;
    let epoch = reply["epoch"].as_str().unwrap().to_string();
    assert_eq!(reply["offset"], 6);

    // Another epoch: not recovered, the snapshot as on a fresh subscribe.
    let (reply, ticks) = ask(
        &mut ws,
        json!({"op":"subscribe","id":2,"symbols":["AAPL"],"channels":["trade"],
               "resume":{"epoch":"00000000000000ab","seq":{"trade":{"AAPL":1}}}}),
    )
    .await;
    let k = &reply["resumed"]["keys"][0];
    assert_eq!(
        (k["recovered"].as_bool(), k["reason"].as_str()),
        (Some(false), Some("other_epoch")),
        "{reply}"
    );
    assert_eq!(k["first_seq"], 1);
    assert_eq!(
        (ticks[0]["seq"].as_u64(), ticks[0]["snap"].as_bool()),
        (Some(3), Some(true))
    );

    // A future seq, and a key the subscription does not hold.
    let (reply, _) = ask(
        &mut ws,
        json!({"op":"subscribe","id":3,"symbols":["MSFT"],"channels":["trade"],
               "resume":{"epoch":epoch,"seq":{"trade":{"MSFT":9,"GOOG":1}}}}),
    )
    .await;
    let keys = reply["resumed"]["keys"].as_array().unwrap();
    let reasons: Vec<_> = keys
        .iter()
        .map(|k| (k["sym"].as_str().unwrap(), k["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [("GOOG", "not_subscribed"), ("MSFT", "future_seq")],
        "{reply}"
    );

    // An absurd time: refused for the whole subscription, with the reason.
    let (reply, _) = ask(
        &mut ws,
        json!({"op":"subscribe","id":4,"symbols":["MSFT"],"channels":["trade"],
               "resume":{"epoch":epoch,"ts":u64::MAX}}),
    )
    .await;
    assert_eq!(reply["resumed"]["recovered"], false);
    assert_eq!(reply["resumed"]["reason"], "ts_in_future");

    // Malformed and too many keys: errors naming the field; nothing changes.
    let (reply, _) = ask(
        &mut ws,
        json!({"op":"subscribe","id":5,"symbols":["AAPL"],"resume":{"epoch":epoch,"seq":{"trade":{"AAPL":-1}}}}),
    )
    .await;
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("bad_field"))
    );
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("resume.seq.trade.AAPL"),
        "{reply}"
    );
    let many: serde_json::Map<String, Value> =
        (0..5).map(|i| (format!("K{i}"), json!(1))).collect();
    let (reply, _) = ask(
        &mut ws,
        json!({"op":"subscribe","id":6,"symbols":["AAPL"],"resume":{"epoch":epoch,"seq":{"trade":many}}}),
    )
    .await;
    assert_eq!(reply["code"], "too_many_symbols", "{reply}");

    // The subscriptions made still deliver, once each.
    publ.publish(&[trade("AAPL", 4, "1", "1"), trade("MSFT", 4, "1", "1")])
        .await;
    let mut got = [ws.recv_json().await, ws.recv_json().await];
    got.sort_by_key(|v| v["sym"].as_str().unwrap().to_string());
    assert_eq!(
        (got[0]["sym"].as_str(), got[0]["seq"].as_u64()),
        (Some("AAPL"), Some(4))
    );
    assert_eq!(
        (got[1]["sym"].as_str(), got[1]["seq"].as_u64()),
        (Some("MSFT"), Some(4))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_older_than_the_history_is_refused_per_key_with_the_first_seq_it_holds() {
    let mut c = config();
    // Room for about four ticks (and no bars, which would take room).
    c.history.max_bytes = 1300;
    c.bars = false;
    let h = start(c);
    let addr = h.addr();
    let mut publ = publisher(addr).await;
    for i in 1..=10 {
        publ.publish(&[trade("AAPL", i, "1", "1")]).await;
    }
    let mut ws = subscriber(addr).await;
    let hello_epoch = {
        let (r, _) = ask(&mut ws, json!({"op":"subscribe","id":1,"symbols":["IBM"]})).await;
        r["epoch"].as_str().unwrap().to_string()
    };
    let (reply, ticks) = ask(
        &mut ws,
        json!({"op":"subscribe","id":2,"symbols":["AAPL"],"channels":["trade"],"snapshot":false,
               "resume":{"epoch":hello_epoch,"seq":{"trade":{"AAPL":2}}}}),
    )
    .await;
    let k = &reply["resumed"]["keys"][0];
    assert_eq!(
        (k["recovered"].as_bool(), k["reason"].as_str()),
        (Some(false), Some("history_too_short")),
        "{reply}"
    );
    let first = k["first_seq"].as_u64().unwrap();
    assert!(first > 3 && first <= 10, "{reply}");
    // Without a snapshot it gets what the history holds, from `first_seq`.
    let seqs: Vec<u64> = ticks.iter().map(|t| t["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (first..=10).collect::<Vec<_>>());
    // Within the history: recovered.
    let (reply, ticks) = ask(
        &mut ws,
        json!({"op":"subscribe","id":3,"symbols":["AAPL"],"channels":["quote"],"snapshot":false,
               "resume":{"epoch":hello_epoch,"offset":9}}),
    )
    .await;
    assert_eq!(reply["resumed"]["recovered"], true, "{reply}");
    assert!(ticks.is_empty(), "no quotes: {ticks:?}");
}

/// Reads ticks into the ledger until it holds `want`; other messages are
/// returned.
async fn read_all(ws: &mut RawWs, ledger: &mut Ledger, want: &HashMap<Key, u64>) -> Vec<Value> {
    let mut names = HashMap::new();
    let mut other = Vec::new();
    while !ledger.done(want) {
        let Some(m) = tokio::time::timeout(WAIT, ws.try_recv()).await.unwrap() else {
            panic!("EOF after {} ticks; other: {other:?}", ledger.ticks);
        };
        if let Some(v) = ledger_frame(&m, &mut names, ledger) {
            other.push(v);
        }
    }
    other
}

/// A client on `*` with the `catchup` policy on both channels, with a
/// small receive window so that a stall backs up into the server fast.
async fn catchup_star_client(addr: SocketAddr) -> RawWs {
    let (mut slow, _) = connect_with(addr, "/v1/stream", "", Some(4096)).await;
    slow.recv_json().await; // hello
    slow.send_json(
        json!({"op":"subscribe","id":1,"symbols":["*"],"snapshot":false,
                          "policy":{"trade":"catchup","quote":"catchup"}}),
    )
    .await;
    assert_eq!(slow.recv_until("subscribed").await.0["id"], 1);
    slow
}

/// Publishes for 3 s at 2,000 ticks/s while `slow` does not read, then
/// reads it all: every tick exactly once, per-key `seq` contiguous, no gap.
async fn stall_then_read_all(h: &ServerHandle, slow: &mut RawWs) {
    let stop = Arc::new(AtomicBool::new(false));
    let publ = spawn_publisher(h.addr(), stop.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let counts = publ.await.unwrap();
    assert!(
        h.stats().catchup_started.load(Ordering::Relaxed) > 0,
        "the client fell behind"
    );
    let mut ledger = Ledger::default();
    let other = read_all(slow, &mut ledger, &counts).await;
    assert!(other.iter().all(|v| v["type"] == "symbol"), "{other:?}");
    assert_eq!(
        ledger.ticks,
        counts.values().sum::<u64>(),
        "every tick exactly once"
    );
    assert_eq!(h.stats().catchup_gaps.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_catchup_client_loses_nothing_and_is_not_evicted_while_in_the_history() {
    let mut c = config();
    c.client_buffer_bytes = 16 * 1024;
    c.socket_send_buffer = 4096;
    c.evict_after = Duration::from_millis(500);
    let h = start(c);
    let addr = h.addr();
    let mut slow = catchup_star_client(addr).await;
    // A conflating client, stalled the same way, is evicted as today.
    let (mut conflating, _) = connect_with(addr, "/v1/stream", "", Some(4096)).await;
    conflating.recv_json().await;
    conflating
        .send_json(json!({"op":"subscribe","id":1,"symbols":["*"],"snapshot":false}))
        .await;
    conflating.recv_until("subscribed").await;
    // Stalled for 3 s at 2,000 ticks/s: six times the eviction deadline.
    stall_then_read_all(&h, &mut slow).await;

    // Its `lagging` and Close wait behind its full socket; the server
    // cuts it off when it does not take them either.
    assert_eq!(
        h.stats().clients_evicted.load(Ordering::Relaxed),
        1,
        "only the conflating client"
    );
    drop(conflating);
}

/// A catch-up replays the history in slices: each slice is written, then
/// the client's writer gives the worker's other tasks a turn before the
/// next (so a client reading seconds of history fast does not hold up the
/// fast clients), and still nothing is lost, duplicated or reordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catchup_client_replays_the_history_in_slices_and_loses_nothing() {
    let mut c = config();
    c.client_buffer_bytes = 16 * 1024;
    // Room for whole slices: when the socket is writable again, at least a
    // third of this is free, far more than one 16 KiB slice.
    c.socket_send_buffer = 256 * 1024;
    let h = start(c);
    let mut slow = catchup_star_client(h.addr()).await;
    stall_then_read_all(&h, &mut slow).await;
    assert!(
        h.stats().catchup_pauses.load(Ordering::Relaxed) > 0,
        "the history went out in slices"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catchup_client_that_falls_out_of_the_history_is_told_then_conflated_or_evicted() {
    let mut c = config();
    c.client_buffer_bytes = 4 * 1024;
    c.socket_send_buffer = 4096;
    // Room for about twenty ticks.
    c.history.max_bytes = 6_000;
    let h = start(c);
    let addr = h.addr();
    let mut clients = Vec::new();
    for on_gap in ["conflate", "evict"] {
        let (mut ws, _) = connect_with(addr, "/v1/stream", "", Some(4096)).await;
        ws.recv_json().await;
        ws.send_json(
            json!({"op":"subscribe","id":1,"symbols":["*"],"snapshot":false,
                            "policy":{"trade":"catchup","quote":"catchup"},"on_gap":on_gap}),
        )
        .await;
        ws.recv_until("subscribed").await;
        clients.push(ws);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let publ = spawn_publisher(addr, stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let counts = publ.await.unwrap();
    let mut evicting = clients.pop().unwrap();
    let mut conflating = clients.pop().unwrap();

    let (code, _, texts) = evicting.recv_close().await;
    assert_eq!(code, Some(4000));
    let lagging: Value = texts
        .iter()
        .map(|t| serde_json::from_str::<Value>(t).unwrap())
        .find(|v| v["type"] == "lagging")
        .expect("lagging");
    assert_eq!(
        (lagging["reason"].as_str(), lagging["then"].as_str()),
        (Some("out_of_history"), Some("evict"))
    );

    // Conflated: told, then the newest value of every key, then live.
    let (lagging, _) = conflating.recv_until("lagging").await;
    assert_eq!(lagging["then"], "conflate");
    assert!(lagging["history_from_offset"].as_u64() > lagging["lost_from_offset"].as_u64());
    let mut newest: HashMap<Key, u64> = HashMap::new();
    while newest.len() < counts.len() || counts.iter().any(|(k, n)| newest.get(k) != Some(n)) {
        let v = conflating.recv_json().await;
        if v["type"] == "trade" || v["type"] == "quote" {
            newest.insert(
                (
                    v["sym"].as_str().unwrap().to_string(),
                    v["type"].as_str().unwrap().to_string(),
                ),
                v["seq"].as_u64().unwrap(),
            );
        }
    }
    assert!(h.stats().catchup_gaps.load(Ordering::Relaxed) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_without_journal_a_resume_gets_a_new_epoch_and_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (first, addr) = serve_process(dir.path(), 0, &[]);
    let (mut c, old) = subscribed_to_r1_r2(addr).await;
    // A publisher sending until the server dies under it.
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = spawn_restart_publisher(addr, stop.clone());
    let mut had: HashMap<Key, u64> = HashMap::new();
    while had.values().sum::<u64>() < 50 {
        let v = c.recv_json().await;
        if v["type"] == "trade" || v["type"] == "quote" {
            let k = (
                v["sym"].as_str().unwrap().to_string(),
                v["type"].as_str().unwrap().to_string(),
            );
            had.insert(k, v["seq"].as_u64().unwrap());
        }
    }
    // kill -9, mid-stream.
    drop(first);
    stop.store(true, Ordering::Relaxed);
    let _ = publishing.await;
    c.expect_eof().await;

    // The same address, a new process: seq restarts, so does the epoch.
    let (_second, addr2) = serve_process(dir.path(), addr.port(), &[]);
    assert_eq!(addr2, addr);
    let mut publ = publisher(addr).await;
    for i in 1..=3 {
        publ.publish(&[trade("R1", i, "9", "1"), quote("R2", i, "8", "9")])
            .await;
    }
    let (mut ws, head) = connect_with(addr, "/v1/stream", "", None).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let hello = ws.recv_json().await;
    let new = hello["epoch"].as_str().unwrap().to_string();
    assert_ne!(new, old, "a restart without --journal is a new epoch");
    let mut positions = json!({"trade":{},"quote":{}});
    for ((sym, ch), seq) in &had {
        positions[ch][sym] = json!(seq);
    }
    let (reply, ticks) = ask(
        &mut ws,
        json!({"op":"subscribe","id":2,"symbols":["R1","R2"],
               "resume":{"epoch":old,"seq":positions}}),
    )
    .await;
    assert_eq!(reply["epoch"], new.as_str(), "{reply}");
    let keys = reply["resumed"]["keys"].as_array().unwrap();
    assert_eq!(keys.len(), had.len(), "{reply}");
    for k in keys {
        assert_eq!(
            (k["recovered"].as_bool(), k["reason"].as_str()),
            (Some(false), Some("other_epoch")),
            "{k}"
        );
    }
    // Then the snapshot of each key the new process has, at its new seq.
    let mut snaps: Vec<(String, String, u64)> = ticks
        .iter()
        .filter(|v| v["snap"] == true)
        .map(|v| {
            (
                v["sym"].as_str().unwrap().to_string(),
                v["type"].as_str().unwrap().to_string(),
                v["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    snaps.sort();
    assert_eq!(
        snaps,
        [
            ("R1".to_string(), "trade".to_string(), 3),
            ("R2".to_string(), "quote".to_string(), 3)
        ]
    );
    // And live ticks after it.
    publ.publish(&[trade("R1", 4, "9", "1")]).await;
    let (live, _) = ws.recv_until("trade").await;
    assert_eq!(
        (live["seq"].as_u64(), live["snap"].as_bool()),
        (Some(4), None)
    );
}

/// Publishes R1 trades and R2 quotes every 5 ms until `stop` or until the
/// server goes away.
fn spawn_restart_publisher(addr: SocketAddr, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut publ = publisher(addr).await;
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let batch = json!([trade("R1", n, "1", "1"), quote("R2", n, "1", "2")]);
            if publ
                .stream
                .write_all(&encode_frame(true, 1, batch.to_string().as_bytes()))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}
