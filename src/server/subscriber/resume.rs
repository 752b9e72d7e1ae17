//! Resume: what a subscribe with a position can be given, decided per key.
//!
//! The outcome says, for every key, whether every tick the client missed is
//! still here (`recovered`), the `seq` the client already has (so neither a
//! snapshot nor a history tick at or below it is sent again) and the
//! history offset the client's cursor starts from. The cursor itself, and
//! the seam with live ticks, are the fan-out's (`pipeline::fanout::catchup`).
//!
//! Memory is bounded by the subscription (at most the connection's key
//! limit of positions, checked when parsing), never by what is asked.

use std::collections::HashSet;

use crate::model::epoch::Epoch;
use crate::model::tick::{ChannelSet, KeyId, wall_clock_ns};
use crate::pipeline::ingest::Ingest;
use crate::recordings::journal::Located;
use crate::wire::json::JsonObject;
use crate::wire::resume::{Resume, Since};

/// How far in the future a `resume.ts` may be before it is refused as
/// absurd (clocks of client and server differ by a little).
const TS_SLACK_NS: u64 = 60_000_000_000;

/// One key's resume, as the reply states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyResume {
    pub(crate) sym: String,
    pub(crate) key: Option<KeyId>,
    pub(crate) recovered: bool,
    /// The oldest `seq` of the key the server could give (when not
    /// recovered and it holds any).
    pub(crate) first_seq: Option<u64>,
    /// Why not (empty when recovered).
    pub(crate) reason: &'static str,
}

/// What a resume gives, decided before anything is applied.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The keys named in `resume.seq`, in request order.
    pub(crate) keys: Vec<KeyResume>,
    /// The connection-wide position, if given: recovered whole or not.
    pub(crate) since: Option<(bool, &'static str)>,
    /// The `seq` the client has of each key (no snapshot or history tick
    /// at or below it is sent).
    pub(crate) have: Vec<(KeyId, u64)>,
    /// Keys whose missed ticks are all here: no snapshot for them.
    pub(crate) no_snapshot: HashSet<KeyId>,
    /// `*` keys need no snapshot (the connection-wide position was served).
    pub(crate) star_served: bool,
    /// Where the client's history cursor starts, if it needs one.
    pub(crate) start: Option<u64>,
    /// A connection-wide position served whole: no tick at an offset below
    /// this reaches the client. The worker serving the resume may not yet
    /// have delivered up to the position the client holds (another worker
    /// served its last connection), and live ticks between must not repeat.
    pub(crate) floor: Option<u64>,
    /// The position the client holds everything after once this subscribe
    /// is served (`subscribed.offset`).
    pub(crate) offset: u64,
}

impl Outcome {
    fn start_at(&mut self, offset: u64) {
        self.start = Some(self.start.map_or(offset, |s| s.min(offset)));
    }

    /// The `resumed` object of `subscribed`.
    pub(crate) fn json(&self) -> Vec<u8> {
        let mut o = JsonObject::bare();
        if let Some((whole, reason)) = self.since {
            o.raw("recovered", if whole { b"true" } else { b"false" });
            if !reason.is_empty() {
                o.str("reason", reason);
            }
        }
        let mut keys = Vec::from(&b"["[..]);
        for (i, k) in self.keys.iter().enumerate() {
            if i > 0 {
                keys.push(b',');
            }
            let mut e = JsonObject::bare();
            e.str("sym", &k.sym);
            if let Some(key) = k.key {
                e.str("channel", key.channel().as_str());
            }
            e.raw("recovered", if k.recovered { b"true" } else { b"false" });
            if let Some(f) = k.first_seq {
                e.u64("first_seq", f);
            }
            if !k.reason.is_empty() {
                e.str("reason", k.reason);
            }
            keys.extend_from_slice(&e.into_bytes());
        }
        keys.push(b']');
        o.raw("keys", &keys);
        o.into_bytes()
    }
}

/// What of a resume only the journal holds, looked up on a blocking thread
/// (never the worker's): `None` without a journal, in another epoch, or
/// when the memory history holds every position asked.
pub(crate) async fn look_on_disk(ingest: &Ingest, resume: &Resume) -> Option<Located> {
    let archive = ingest.archive()?.clone();
    let epoch = ingest.epoch();
    if resume.epoch != epoch {
        return None;
    }
    let history = ingest.history();
    let table = ingest.symbols();
    let mut older = false;
    let mut ts = None;
    match resume.since {
        Some(Since::Offset(p)) => older |= p.saturating_add(1) < history.first_offset(),
        Some(Since::Ts(t)) if !history.offset_before_rx(t).1 => {
            older = true;
            ts = Some(t);
        }
        _ => {}
    }
    let seqs: Vec<(KeyId, u64)> = resume
        .seqs
        .iter()
        .filter_map(|(sym, channel, seq)| {
            let key = KeyId::new(table.lookup(sym)?.0, *channel);
            let missed =
                *seq < ingest.published_seq(key) && history.offset_of(key, seq + 1).is_none();
            missed.then_some((key, seq + 1))
        })
        .collect();
    if !older && seqs.is_empty() {
        return None;
    }
    archive.blocking(move |a| a.locate(epoch, ts, &seqs)).await
}

/// Decides a resume for a subscription to `keys` (named) and `star`
/// (channels subscribed through `*`), `delivered` being the offset this
/// worker has handed its clients up to.
pub(crate) fn plan(
    ingest: &Ingest,
    resume: &Resume,
    keys: &[KeyId],
    star: ChannelSet,
    delivered: u64,
    disk: Option<&Located>,
) -> Outcome {
    let history = ingest.history();
    let table = ingest.symbols();
    let same_epoch = resume.epoch == ingest.epoch();
    let mut out = Outcome {
        offset: delivered,
        ..Outcome::default()
    };
    let subscribed = |k: KeyId| keys.contains(&k) || star.contains(k.channel());
    let mut explicit: HashSet<KeyId> = HashSet::new();
    for (sym, channel, seq) in &resume.seqs {
        let key = table.lookup(sym).map(|(sid, _)| KeyId::new(sid, *channel));
        let mut r = KeyResume {
            sym: sym.clone(),
            key,
            recovered: false,
            first_seq: None,
            reason: "",
        };
        let Some(key) = key.filter(|&k| subscribed(k)) else {
            r.reason = "not_subscribed";
            // Still answered with its channel, for the client to match.
            r.key = key;
            out.keys.push(r);
            continue;
        };
        explicit.insert(key);
        let newest = ingest.published_seq(key);
        let span = history.key_span(key);
        r.first_seq = span.map(|s| s.first_seq);
        if !same_epoch {
            r.reason = "other_epoch";
        } else if *seq > newest {
            r.reason = "future_seq";
        } else if *seq == newest {
            r.recovered = true;
            out.have.push((key, *seq));
            out.no_snapshot.insert(key);
        } else if let Some(o) = history.offset_of(key, seq + 1).or_else(|| {
            // Older than memory: the journal's offset of it.
            disk.and_then(|d| d.key_offsets.iter().find(|(k, _)| *k == key))
                .map(|&(_, o)| o)
        }) {
            r.recovered = true;
            out.have.push((key, *seq));
            out.no_snapshot.insert(key);
            out.start_at(o);
        } else {
            r.reason = "history_too_short";
            out.have.push((key, *seq));
            if let Some(s) = span {
                out.start_at(s.first_offset);
            }
        }
        if r.recovered {
            r.first_seq = None;
        }
        out.keys.push(r);
    }
    let Some(since) = resume.since else {
        return out;
    };
    let now = wall_clock_ns();
    let (p, whole, reason) = if !same_epoch {
        (0, false, "other_epoch")
    } else {
        match since {
            Since::Offset(p) if p > ingest.newest_offset() => (0, false, "future_offset"),
            Since::Offset(p) => {
                let on_disk = disk.and_then(|d| d.oldest).is_some_and(|o| p + 1 >= o);
                let whole = p + 1 >= history.first_offset() || on_disk;
                (p, whole, if whole { "" } else { "history_too_short" })
            }
            Since::Ts(t) if t > now.saturating_add(TS_SLACK_NS) => (0, false, "ts_in_future"),
            Since::Ts(t) => match history.offset_before_rx(t) {
                (p, true) => (p, true, ""),
                (p, false) => match disk.and_then(|d| d.before_ts) {
                    Some(p) => (p, true, ""),
                    None => (p, false, "history_too_short"),
                },
            },
        }
    };
    out.since = Some((whole, reason));
    if !whole {
        return out;
    }
    // The client holds everything up to `p`, whatever this worker has
    // delivered so far.
    out.offset = p;
    out.floor = Some(p + 1);
    out.star_served = !star.is_empty();
    out.start_at(p + 1);
    // Every key of the subscription without its own position: the seq it
    // had at `p`. `*` also covers keys first seen after `p`.
    let mut implied: Vec<KeyId> = keys.to_vec();
    if !star.is_empty() {
        implied.extend(
            history
                .keys_after(p)
                .into_iter()
                .filter(|k| star.contains(k.channel()) && !keys.contains(k)),
        );
    }
    // Served from the journal: every tick after `p` comes from the cursor
    // (the floor drops older live ones), so no key needs a `seq` to start
    // after; the history's would hide the ticks only the journal holds.
    let from_disk = p + 1 < history.first_offset();
    for key in implied {
        if explicit.contains(&key) {
            continue;
        }
        out.no_snapshot.insert(key);
        if from_disk {
            continue;
        }
        if let Some(seq) = history.seq_at(key, p) {
            out.have.push((key, seq));
        } else {
            // No tick of it since `p`: the client has its newest.
            out.have.push((key, ingest.published_seq(key)));
        }
    }
    out
}

/// The epoch a reply names.
pub(crate) fn epoch_str(ingest: &Ingest) -> String {
    Epoch::to_string(&ingest.epoch())
}
