//! Order books end to end over real sockets: random update streams
//! (snapshots, adds, removals, bursts) published on /v1/publish; JSON,
//! binary and SSE subscribers at every depth, some reading as fast as they
//! can, some stalled at random moments and then resumed, some joining
//! midway. Every client rebuilds its book from the snapshot and diffs it
//! receives; at every `seq` it reports, its book must equal the top of the
//! reference book (kept here, independently of the server's code) and the
//! message's checksum must match the one computed here.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tickwire::model::decimal::Fixed;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SYM: &str = "BK";
const BID: u8 = 0;
const ASK: u8 = 1;

/// A deterministic generator (xorshift64*): the seed is printed on failure.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Book as price → size in raw 1e-9 units, per side.
type Side = BTreeMap<i64, i64>;
#[derive(Clone, Default, PartialEq, Debug)]
struct RefBook {
    bids: Side,
    asks: Side,
}

impl RefBook {
    fn side(&mut self, s: u8) -> &mut Side {
        if s == BID {
            &mut self.bids
        } else {
            &mut self.asks
        }
    }
    fn set(&mut self, s: u8, px: i64, sz: i64) {
        if sz == 0 {
            self.side(s).remove(&px);
        } else {
            self.side(s).insert(px, sz);
        }
    }
    /// The top `n` levels per side (0 = all).
    fn top(&self, n: usize) -> RefBook {
        let n = if n == 0 { usize::MAX } else { n };
        RefBook {
            bids: self
                .bids
                .iter()
                .rev()
                .take(n)
                .map(|(a, b)| (*a, *b))
                .collect(),
            asks: self.asks.iter().take(n).map(|(a, b)| (*a, *b)).collect(),
        }
    }
}

/// Decimal text of a raw fixed-point value, as the protocol writes it.
fn text(raw: i64) -> String {
    Fixed(raw).to_string()
}

/// docs/PROTOCOL.md "Book checksum", computed independently.
fn checksum(b: &RefBook) -> u32 {
    let mut s = String::new();
    let mut push = |v: i64| {
        let t: String = text(v).chars().filter(|&c| c != '.').collect();
        s.push_str(t.trim_start_matches('0'));
    };
    for (px, sz) in b.asks.iter().take(10) {
        push(*px);
        push(*sz);
    }
    for (px, sz) in b.bids.iter().rev().take(10) {
        push(*px);
        push(*sz);
    }
    crc32fast::hash(s.as_bytes())
}

/// One update as the publisher sends it, and as the reference applies it.
#[derive(Clone)]
struct Update {
    snap: bool,
    levels: Vec<(u8, i64, i64)>,
}

impl Update {
    fn json(&self, ts: u64) -> Value {
        let side = |s: u8| -> Vec<Value> {
            self.levels
                .iter()
                .filter(|l| l.0 == s)
                .map(|l| json!([text(l.1), text(l.2)]))
                .collect()
        };
        json!({"type":"book","sym":SYM,"ts":ts,"snap":self.snap,"bids":side(BID),"asks":side(ASK)})
    }
}

const UNIT: i64 = 1_000_000_000;

/// A random stream: an opening snapshot, diffs of 1–8 levels (adds,
/// resizes, removals) around a fixed mid so the book never crosses, a
/// snapshot now and then, and a last diff at the best bid and ask, which
/// every depth sees.
fn stream(rng: &mut Rng, n: usize) -> Vec<Update> {
    let px = |rng: &mut Rng, s: u8| {
        let off = (rng.below(120) as i64 + 1) * UNIT / 2;
        if s == BID {
            1000 * UNIT - off
        } else {
            1000 * UNIT + off
        }
    };
    let sz = |rng: &mut Rng| (rng.below(20) as i64 + 1) * UNIT / 4;
    let snapshot = |rng: &mut Rng| {
        let mut seen = std::collections::HashSet::new();
        let mut levels = Vec::new();
        for _ in 0..60 {
            let s = (rng.below(2)) as u8;
            let p = px(rng, s);
            if seen.insert((s, p)) {
                levels.push((s, p, sz(rng)));
            }
        }
        Update { snap: true, levels }
    };
    let mut out = vec![snapshot(rng)];
    while out.len() < n - 1 {
        if rng.below(150) == 0 {
            out.push(snapshot(rng));
            continue;
        }
        let mut seen = std::collections::HashSet::new();
        let mut levels = Vec::new();
        for _ in 0..=rng.below(8) {
            let s = rng.below(2) as u8;
            let p = px(rng, s);
            let size = if rng.below(3) == 0 { 0 } else { sz(rng) };
            if seen.insert((s, p)) {
                levels.push((s, p, size));
            }
        }
        out.push(Update {
            snap: false,
            levels,
        });
    }
    // The best levels are at most 60 half-units away; resize the best
    // possible prices so every window changes.
    out.push(Update {
        snap: false,
        levels: vec![
            (BID, 1000 * UNIT - UNIT / 2, 7 * UNIT),
            (ASK, 1000 * UNIT + UNIT / 2, 7 * UNIT),
        ],
    });
    out
}

/// The reference book after each seq (index = seq). A diff that leaves
/// the book as it was (removals of absent levels, sizes sent again) takes
/// no seq (docs/PROTOCOL.md, "Publishing books"); a snapshot always does.
fn reference(updates: &[Update]) -> Vec<RefBook> {
    let mut books = vec![RefBook::default()];
    let mut b = RefBook::default();
    for u in updates {
        let before = b.clone();
        if u.snap {
            b = RefBook::default();
        }
        for &(s, px, sz) in &u.levels {
            b.set(s, px, sz);
        }
        if u.snap || b != before {
            books.push(b.clone());
        }
    }
    books
}

/// A book message as decoded from any encoding.
#[derive(Debug)]
struct BookMsg {
    snap: bool,
    seq: u64,
    from: u64,
    depth: u64,
    cs: u32,
    levels: Vec<(u8, i64, i64)>,
}

#[derive(Deserialize)]
struct JsonBook<'a> {
    #[serde(rename = "type")]
    kind: String,
    seq: u64,
    from: u64,
    depth: u64,
    #[serde(default)]
    snap: bool,
    #[serde(borrow)]
    bids: Vec<(&'a RawValue, &'a RawValue)>,
    #[serde(borrow)]
    asks: Vec<(&'a RawValue, &'a RawValue)>,
    cs: u32,
}

fn from_json(text: &str) -> Option<BookMsg> {
    let v: Value = serde_json::from_str(text).unwrap();
    if v["type"] != "book" {
        assert_ne!(v["type"], "error", "{text}");
        return None;
    }
    let j: JsonBook = serde_json::from_str(text).unwrap();
    assert_eq!(j.kind, "book");
    let raw = |r: &RawValue| Fixed::parse(r.get()).unwrap().raw();
    let mut levels: Vec<(u8, i64, i64)> =
        j.bids.iter().map(|(p, s)| (BID, raw(p), raw(s))).collect();
    levels.extend(j.asks.iter().map(|(p, s)| (ASK, raw(p), raw(s))));
    Some(BookMsg {
        snap: j.snap,
        seq: j.seq,
        from: j.from,
        depth: j.depth,
        cs: j.cs,
        levels,
    })
}

/// docs/PROTOCOL.md "Binary book frames".
fn from_binary(p: &[u8]) -> Option<BookMsg> {
    if p[0] != 3 {
        return None;
    }
    let u32_at = |o: usize| u32::from_le_bytes(p[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(p[o..o + 8].try_into().unwrap());
    let (nb, na) = (u32_at(44) as usize, u32_at(48) as usize);
    assert_eq!(
        p.len(),
        64 + 16 * (nb + na),
        "one frame holds the whole message"
    );
    let levels = (0..nb + na)
        .map(|i| {
            let o = 64 + 16 * i;
            let side = if i < nb { BID } else { ASK };
            (side, u64_at(o) as i64, u64_at(o + 8) as i64)
        })
        .collect();
    Some(BookMsg {
        snap: p[1] & 1 == 1,
        seq: u64_at(8),
        from: u64_at(32),
        depth: u64::from(u16::from_le_bytes([p[2], p[3]])),
        cs: u32_at(40),
        levels,
    })
}

/// Checks each message against the reference; returns the last seq seen.
struct Checker {
    name: String,
    depth: usize,
    refs: Arc<Vec<RefBook>>,
    book: RefBook,
    seq: u64,
    messages: u64,
}

impl Checker {
    fn apply(&mut self, m: BookMsg) {
        let who = &self.name;
        assert_eq!(m.depth as usize, self.depth, "{who}");
        if m.snap {
            self.book = RefBook::default();
        } else {
            assert!(self.seq > 0, "{who}: a diff before any snapshot");
            assert!(
                m.from <= self.seq + 1 && m.seq > self.seq,
                "{who}: diff {}..{} does not continue from {}",
                m.from,
                m.seq,
                self.seq
            );
        }
        assert!(m.seq >= self.seq, "{who}: seq went back");
        for (s, px, sz) in m.levels {
            self.book.set(s, px, sz);
        }
        self.seq = m.seq;
        self.messages += 1;
        let want = self.refs[m.seq as usize].top(self.depth);
        assert_eq!(
            self.book, want,
            "{who}: book differs from the server's at seq {}",
            m.seq
        );
        assert_eq!(
            m.cs,
            checksum(&self.book),
            "{who}: checksum at seq {}",
            m.seq
        );
    }
}

#[derive(Clone, Copy, Debug)]
enum Enc {
    Json,
    Binary,
    Sse,
}

fn depth_param(depth: usize) -> Value {
    if depth == 0 {
        json!("full")
    } else {
        json!(depth)
    }
}

/// A subscriber that rebuilds the book; `stall`: pauses at random moments.
async fn run_client(
    addr: SocketAddr,
    enc: Enc,
    depth: usize,
    stall: Option<u64>,
    refs: Arc<Vec<RefBook>>,
    last: u64,
) -> Checker {
    let name = format!("{enc:?} depth {depth} stall {stall:?}");
    let mut c = Checker {
        name,
        depth,
        refs,
        book: RefBook::default(),
        seq: 0,
        messages: 0,
    };
    let mut rng = stall.map(Rng);
    let rcvbuf = stall.map(|_| 4096);
    match enc {
        Enc::Json | Enc::Binary => {
            let proto = if matches!(enc, Enc::Binary) {
                "Sec-WebSocket-Protocol: tickwire.bin.v1\r\n"
            } else {
                ""
            };
            let (mut ws, head) = connect_with(addr, "/v1/stream", proto, rcvbuf).await;
            assert!(head.starts_with("HTTP/1.1 101"), "{head}");
            ws.recv_json().await;
            ws.send_json(json!({"op":"subscribe","id":1,"symbols":[SYM],"channels":["book"],"depth":depth_param(depth)}))
                .await;
            while c.seq < last {
                let m = match ws.recv().await {
                    Msg::Text(t) => from_json(&t),
                    Msg::Binary(b) => from_binary(&b),
                    other => panic!("{}: {other:?}", c.name),
                };
                if let Some(m) = m {
                    c.apply(m);
                }
                if let Some(r) = &mut rng
                    && r.below(40) == 0
                {
                    tokio::time::sleep(Duration::from_millis(50 + r.below(250))).await;
                }
            }
        }
        Enc::Sse => {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let d = if depth == 0 {
                "full".to_string()
            } else {
                depth.to_string()
            };
            s.write_all(
                format!(
                    "GET /v1/sse?symbols={SYM}&channels=book&depth={d} HTTP/1.1\r\nHost: x\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
            let mut buf = Vec::new();
            while c.seq < last {
                let mut tmp = [0u8; 8192];
                let n = tokio::time::timeout(WAIT, s.read(&mut tmp))
                    .await
                    .unwrap()
                    .unwrap();
                assert!(n > 0, "{}: EOF", c.name);
                buf.extend_from_slice(&tmp[..n]);
                while let Some(p) = buf.windows(2).position(|w| w == b"\n\n") {
                    let block = String::from_utf8(buf.drain(..p + 2).collect()).unwrap();
                    if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: "))
                        && block.contains("event: book")
                    {
                        let m = from_json(data).unwrap();
                        let id = block.lines().find_map(|l| l.strip_prefix("id: ")).unwrap();
                        assert_eq!(id, format!("{SYM}:book:{}", m.seq));
                        c.apply(m);
                    }
                }
            }
        }
    }
    c
}

async fn property_run(seed: u64, updates: usize) {
    let mut cfg = config();
    cfg.client_buffer_bytes = 8 * 1024;
    cfg.socket_send_buffer = 4096;
    cfg.evict_after = Duration::from_secs(60);
    let h = start(cfg);
    let addr = h.addr();
    let mut rng = Rng(seed);
    let ups = stream(&mut rng, updates);
    let refs = Arc::new(reference(&ups));
    let last = refs.len() as u64 - 1;
    assert!(
        last < ups.len() as u64 - 20,
        "the stream has diffs that change nothing ({} of {})",
        ups.len() as u64 - last,
        ups.len()
    );

    let mut clients = Vec::new();
    let mut spawn = |enc, depth, stall: Option<u64>| {
        clients.push(tokio::spawn(run_client(
            addr,
            enc,
            depth,
            stall,
            refs.clone(),
            last,
        )));
    };
    for depth in [10, 25, 0] {
        spawn(Enc::Json, depth, None);
        spawn(Enc::Json, depth, Some(seed ^ depth as u64 ^ 0x55));
    }
    spawn(Enc::Binary, 10, None);
    spawn(Enc::Binary, 0, Some(seed ^ 0xb1));
    spawn(Enc::Sse, 25, None);
    // Let them subscribe before the stream starts.
    eventually("subscribers", || {
        h.stats().subscribers.load(Ordering::Relaxed) == 9
    })
    .await;

    let mut publ = publisher(addr).await;
    let mut i = 0;
    let mut late = Vec::new();
    while i < ups.len() {
        let burst = 1 + rng.below(12) as usize;
        let batch: Vec<Value> = ups[i..(i + burst).min(ups.len())]
            .iter()
            .enumerate()
            .map(|(k, u)| u.json((i + k) as u64 + 1))
            .collect();
        i += batch.len();
        publ.send_json(Value::Array(batch)).await;
        if late.is_empty() && i > ups.len() / 2 {
            // Joiners midway start from the server's snapshot.
            publ.sync().await;
            late.push(tokio::spawn(run_client(
                addr,
                Enc::Json,
                10,
                None,
                refs.clone(),
                last,
            )));
            late.push(tokio::spawn(run_client(
                addr,
                Enc::Binary,
                25,
                Some(seed ^ 7),
                refs.clone(),
                last,
            )));
        }
        if rng.below(4) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    publ.sync().await;
    for c in clients.into_iter().chain(late) {
        let c = tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("client finishes")
            .unwrap();
        assert_eq!(c.seq, last, "{}", c.name);
        assert!(c.messages > 0);
    }
    assert!(
        h.stats().ticks_dropped_stale.load(Ordering::Relaxed) > 0,
        "no stalled client ever conflated: the test did not exercise merging"
    );
    drop(publ);
    assert_no_leaks(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_rebuilds_the_servers_book_at_every_seq_it_reports() {
    for seed in [0x1234_5678_9abc_def1, 0x0bad_cafe_f00d_1234] {
        eprintln!("seed {seed:#x}");
        property_run(seed, 1500).await;
    }
}

/// Bad book input: each refusal names what was wrong, changes nothing
/// (a later valid diff still lands on the unchanged book, checksum and
/// all), and the publisher's connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_book_updates_are_refused_precisely_and_change_nothing() {
    let mut cfg = config();
    cfg.max_book_levels = 4;
    let h = start(cfg);
    let addr = h.addr();
    let mut sub = subscriber(addr).await;
    sub.send_json(json!({"op":"subscribe","id":1,"symbols":[SYM],"channels":["book","quote"]}))
        .await;
    sub.recv_until("subscribed").await;
    let mut publ = publisher(addr).await;
    let book = |snap: bool, bids: Value, asks: Value| json!({"type":"book","sym":SYM,"ts":1,"snap":snap,"bids":bids,"asks":asks});
    let refused = |v: Value, code: &'static str, words: &'static str| (v, code, words);
    // Before any snapshot.
    for (msg, code, words) in [refused(
        book(false, json!([[99, 1]]), json!([])),
        "bad_book",
        "before any snapshot",
    )] {
        publ.send_json(msg).await;
        let e = publ.recv_json().await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some(code)),
            "{e}"
        );
        assert!(e["message"].as_str().unwrap().contains(words), "{e}");
    }
    publ.send_json(book(true, json!([[99, 1], [98, 2]]), json!([[101, 1]])))
        .await;
    publ.sync().await;
    let first = from_json(&sub.recv_until("book").await.0.to_string()).unwrap();
    assert!(first.snap);
    let q = sub.recv_until("quote").await.0;
    assert_eq!(
        (q["bid"].as_f64(), q["ask"].as_f64()),
        (Some(99.0), Some(101.0)),
        "{q}"
    );
    for (msg, code, words) in [
        refused(
            book(false, json!([[101, 1]]), json!([])),
            "bad_book",
            "locked",
        ),
        refused(
            book(false, json!([[102, 1]]), json!([])),
            "bad_book",
            "crossed",
        ),
        refused(
            book(false, json!([[97, -1]]), json!([])),
            "bad_field",
            "negative",
        ),
        refused(
            book(false, json!([["9x", 1]]), json!([])),
            "bad_field",
            "price",
        ),
        refused(
            book(false, json!([[0, 1]]), json!([])),
            "bad_book",
            "not above zero",
        ),
        refused(
            book(false, json!([[97, 1], [96, 1], [95, 1]]), json!([])),
            "bad_book",
            "--max-book-levels",
        ),
        refused(
            book(true, json!([[99, 0]]), json!([])),
            "bad_book",
            "size 0",
        ),
        refused(
            book(false, json!([[99, 1], [99, 2]]), json!([])),
            "bad_book",
            "twice",
        ),
    ] {
        publ.send_json(msg.clone()).await;
        let e = publ.recv_json().await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some(code)),
            "{msg}: {e}"
        );
        assert!(e["message"].as_str().unwrap().contains(words), "{msg}: {e}");
    }
    // The book is as the snapshot left it: this diff's checksum is that of
    // the snapshot's book plus the one new level.
    publ.send_json(book(false, json!([[97, 3]]), json!([])))
        .await;
    publ.sync().await;
    let d = from_json(&sub.recv_until("book").await.0.to_string()).unwrap();
    assert_eq!(d.seq, 2, "refused updates took no seq");
    let mut want = RefBook::default();
    for (s, px, sz) in [(BID, 99, 1), (BID, 98, 2), (ASK, 101, 1), (BID, 97, 3)] {
        want.set(s, px * UNIT, sz * UNIT);
    }
    assert_eq!(d.cs, checksum(&want));
    assert_eq!(d.levels, vec![(BID, 97 * UNIT, 3 * UNIT)]);
}

/// A quote subscriber of a book-fed symbol gets its best bid and ask,
/// once per change of the top of book.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_of_book_changes_produce_quote_ticks() {
    let h = start(config());
    let addr = h.addr();
    let mut sub = subscriber(addr).await;
    sub.subscribe(1, &[SYM], Some(&["quote"]), false).await;
    let mut publ = publisher(addr).await;
    let book = |snap: bool, bids: Value, asks: Value| json!({"type":"book","sym":SYM,"ts":1,"snap":snap,"bids":bids,"asks":asks});
    publ.publish(&[
        book(true, json!([[99, 1], [98, 2]]), json!([[101, 1]])),
        // Below the top: no quote.
        book(false, json!([[97, 5]]), json!([])),
        // Removes the best bid: the next one is the top.
        book(false, json!([[99, 0]]), json!([[100.5, 4]])),
    ])
    .await;
    let q1 = sub.recv_json().await;
    let q2 = sub.recv_json().await;
    assert_eq!(q1["type"], "quote");
    assert_eq!(
        [&q1["seq"], &q1["bid"], &q1["bsz"], &q1["ask"], &q1["asz"]].map(Value::to_string),
        ["1", "99", "1", "101", "1"]
    );
    assert_eq!(
        [&q2["seq"], &q2["bid"], &q2["bsz"], &q2["ask"], &q2["asz"]].map(Value::to_string),
        ["2", "98", "2", "100.5", "4"]
    );
    publ.sync().await;
    assert!(
        tokio::time::timeout(Duration::from_millis(200), sub.try_recv())
            .await
            .is_err(),
        "a change below the top made no quote"
    );
}

/// The README's Python client (examples/book_client.py, stdlib only)
/// rebuilds a book from /v1/sse and verifies every checksum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_python_client_rebuilds_and_verifies_a_book() {
    let h = start(config());
    let addr = h.addr();
    let mut publ = publisher(addr).await;
    let mut rng = Rng(99);
    let ups = stream(&mut rng, 60);
    // The client stops at the last seq: diffs that change nothing take none.
    let last = (reference(&ups).len() - 1).to_string();
    publ.publish(&[ups[0].json(1)]).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/book_client.py");
    let child = std::process::Command::new("python3")
        .args([script, &format!("http://{addr}"), SYM, "25", &last])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    eventually("the client subscribed", || {
        h.stats().subscribers.load(Ordering::Relaxed) == 1
    })
    .await;
    for (i, u) in ups[1..].iter().enumerate() {
        publ.send_json(u.json(i as u64 + 2)).await;
    }
    publ.sync().await;
    // The client stops at the last seq; a hang fails the outer wait.
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("the client finishes")
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.iter().all(|l| l.ends_with(" ok")), "{stdout}");
    assert_eq!(
        lines.last().unwrap().split(' ').next(),
        Some(last.as_str()),
        "{stdout}"
    );
}

/// Real data end to end: the CME `mbo` file imported (`import --from dbn`)
/// into both recording encodings, which read back the same; the `.twr`
/// played by `serve` into the book channel; a full-depth subscriber's book
/// equals the one the recording describes, checksum included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_mbo_recording_plays_into_the_book_channel() {
    use tickwire::model::book::BookChange;
    use tickwire::model::speed::Speed;
    use tickwire::recordings::format::read_all;
    use tickwire::recordings::import::{Vendor, import};
    use tickwire::recordings::selection::Selection;
    use tickwire::server::config::FeedSource;

    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/glbx-mdp3_orderbooks_mbo_20240508T000000-000002.dbn.zst");
    let dir = tempfile::tempdir().unwrap();
    let (twr, jsonl) = (dir.path().join("es.twr"), dir.path().join("es.jsonl"));
    for out in [&twr, &jsonl] {
        import(
            Vendor::Dbn,
            std::slice::from_ref(&src),
            out,
            false,
            &Selection::default(),
        )
        .unwrap();
    }
    let ticks = read_all(&twr).unwrap();
    assert_eq!(
        ticks,
        read_all(&jsonl).unwrap(),
        "both encodings hold the same"
    );
    let books: Vec<_> = ticks.iter().filter(|t| t.book.is_some()).collect();
    assert!(matches!(
        books[0].book.as_deref(),
        Some(BookChange::Snapshot(_))
    ));
    let sym = books[0].sym.to_string();
    let mut want = RefBook::default();
    // Records that change the book take a seq; a diff that changes nothing
    // takes none.
    let mut last_seq = 0;
    for t in &books {
        let before = want.clone();
        let snap = matches!(t.book.as_deref(), Some(BookChange::Snapshot(_)));
        if snap {
            want = RefBook::default();
        }
        for l in t.book.as_ref().unwrap().levels() {
            let side = if l.side == tickwire::model::book::BookSide::Bid {
                BID
            } else {
                ASK
            };
            want.set(side, l.px.raw(), l.sz.raw());
        }
        if snap || want != before {
            last_seq += 1;
        }
    }

    let mut cfg = config();
    cfg.feed = FeedSource::Recording {
        path: twr,
        speed: Speed::Max,
        looping: false,
    };
    let h = start(cfg);
    let mut refs = vec![RefBook::default(); last_seq as usize + 1];
    refs[last_seq as usize] = want.clone();
    let mut ws = subscriber(h.addr()).await;
    ws.send_json(
        json!({"op":"subscribe","id":1,"symbols":[sym],"channels":["book"],"depth":"full"}),
    )
    .await;
    let mut c = Checker {
        name: "replayed".into(),
        depth: 0,
        refs: Arc::new(refs),
        book: RefBook::default(),
        seq: 0,
        messages: 0,
    };
    // Messages before the last are checked for continuity and checksum
    // only (the reference is the final book).
    while c.seq < last_seq {
        if let Msg::Text(t) = ws.recv().await
            && let Some(m) = from_json(&t)
        {
            if m.seq < last_seq {
                if !m.snap {
                    assert!(m.from <= c.seq + 1 && m.seq > c.seq);
                } else {
                    c.book = RefBook::default();
                }
                for (s, px, sz) in m.levels {
                    c.book.set(s, px, sz);
                }
                c.seq = m.seq;
                assert_eq!(m.cs, checksum(&c.book), "checksum at seq {}", m.seq);
            } else {
                c.apply(m);
            }
        }
    }
    assert_eq!(c.book, want);
}
