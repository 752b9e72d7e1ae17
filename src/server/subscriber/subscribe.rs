//! The subscribe step: the symbols a key may not see taken out, the rest
//! checked into a [`Plan`], and the plan applied by [`subscribe`].

use std::time::Duration;

use super::resume::{self, Outcome};
use super::{ClientGuard, Front};
use crate::access::auth::Entitlement;
use crate::model::book::DepthClass;
use crate::model::symbols::{SymbolHold, TableFull};
use crate::model::tick::{Channel, ChannelSet, KeyId, SymbolId};
use crate::pipeline::fanout::Client;
use crate::pipeline::ingest::RingItem;
use crate::server::context::Context;
use crate::wire::request::SymbolList;
use crate::wire::resume::{Resume, SlowPolicy};

/// How long a subscribe on a gateway waits for the bus to deliver its
/// snapshot before answering from the node's own cache (bus down).
const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

/// Takes the names `entitlement` does not allow out of `symbols` and
/// returns them, in request order. A WebSocket subscribes the rest and says
/// what was left out; `/v1/sse`, with no error channel once it streams,
/// refuses the request whole.
pub(crate) fn withhold_unentitled(
    entitlement: Option<&Entitlement>,
    symbols: &mut SymbolList,
) -> Vec<String> {
    let mut denied = Vec::new();
    if let Some(e) = entitlement {
        symbols.names.retain(|n| {
            let ok = e.allows(n);
            if !ok {
                denied.push(n.clone());
            }
            ok
        });
    }
    denied
}

/// Why a subscribe was refused whole.
#[derive(Debug)]
pub(crate) enum SubscribeError {
    /// A new symbol would take the server past `--max-symbols`.
    Symbols(TableFull),
    /// The connection would hold more keys than `max_keys_per_connection`.
    TooManyKeys { total: usize, limit: usize },
}

impl SubscribeError {
    /// The reason as the front end words it: in an `error` message on a
    /// WebSocket, in a 400 on `/v1/sse`.
    pub(crate) fn message(&self, front: Front) -> String {
        match (self, front) {
            (SubscribeError::Symbols(e), _) => format!("{e}; nothing was subscribed"),
            (SubscribeError::TooManyKeys { total, limit }, Front::WebSocket) => format!(
                "this would make {total} subscribed (symbol, channel) keys on this connection; the limit is {limit}. Nothing was subscribed"
            ),
            (SubscribeError::TooManyKeys { total, limit }, Front::Sse) => {
                format!("{total} (symbol, channel) keys requested; the limit is {limit}")
            }
        }
    }
}

/// A subscribe checked and ready to apply: its symbols interned, its keys
/// within the connection's limit. Nothing has changed yet.
pub(crate) struct Plan<'a> {
    /// The request's symbols (`*` and names, entitled ones only).
    pub(crate) symbols: &'a SymbolList,
    /// Each named symbol with its id, in request order.
    pub(crate) named: Vec<(&'a str, SymbolId)>,
    /// Every named (symbol, channel) key.
    pub(crate) keys: Vec<KeyId>,
    pub(crate) channels: ChannelSet,
    /// Whether the keys' last values are sent first.
    pub(crate) snapshot: bool,
    /// The window book keys are kept at.
    pub(crate) depth: DepthClass,
    /// Keeps the named symbols' ids assigned until the subscription's own
    /// holds (in the worker's index) take over, or the plan is dropped.
    _holds: Vec<SymbolHold>,
    /// The position the client resumes from, if any.
    pub(crate) resume: Option<Resume>,
    /// Its slow-consumer policy.
    pub(crate) policy: SlowPolicy,
}

impl<'a> Plan<'a> {
    /// Interns the symbols and checks the key limit, counting the keys the
    /// client already holds (`client`: `None` before it is registered).
    pub(crate) fn new(
        ctx: &Context,
        client: Option<&ClientGuard>,
        symbols: &'a SymbolList,
        channels: ChannelSet,
        snapshot: bool,
    ) -> Result<Plan<'a>, SubscribeError> {
        let table = ctx.fanout.ingest.symbols();
        // The key limit first, from names the table knows: a refused
        // subscribe assigns no id to anything.
        {
            let st = ctx.fanout.state.borrow();
            let held = client.and_then(|g| st.clients.get(g.id()));
            let new: usize = symbols
                .names
                .iter()
                .map(|name| match (table.lookup(name), held) {
                    (Some((sid, _)), Some(c)) => channels
                        .iter()
                        .filter(|&ch| !c.is_subscribed(KeyId::new(sid, ch)))
                        .count(),
                    _ => channels.iter().count(),
                })
                .sum();
            let total = held.map_or(0, Client::named_keys) + new;
            let limit = ctx.config.max_keys_per_connection;
            if total > limit {
                return Err(SubscribeError::TooManyKeys { total, limit });
            }
        }
        let holds = symbols
            .names
            .iter()
            .map(|name| table.hold(name))
            .collect::<Result<Vec<_>, TableFull>>()
            .map_err(SubscribeError::Symbols)?;
        let named: Vec<(&str, SymbolId)> = symbols
            .names
            .iter()
            .zip(&holds)
            .map(|(name, h)| (name.as_str(), h.id()))
            .collect();
        let keys: Vec<KeyId> = named
            .iter()
            .flat_map(|&(_, sid)| channels.iter().map(move |ch| KeyId::new(sid, ch)))
            .collect();
        Ok(Plan {
            symbols,
            named,
            keys,
            channels,
            snapshot,
            depth: DepthClass::default(),
            _holds: holds,
            resume: None,
            policy: SlowPolicy::default(),
        })
    }

    /// The plan with book keys kept at `depth`.
    pub(crate) fn with_depth(mut self, depth: DepthClass) -> Plan<'a> {
        self.depth = depth;
        self
    }

    /// The channels subscribed for `*`, if it was named.
    fn star(&self) -> ChannelSet {
        if self.symbols.all {
            self.channels
        } else {
            ChannelSet::default()
        }
    }
}

/// Applies a [`Plan`] to a registered client. On a gateway it first waits
/// (at most [`SNAPSHOT_WAIT`]) until the bus subscriptions are in place and
/// the snapshot's last values are here, holding the interest until the
/// client's own subscription takes over. Then it subscribes the keys (and
/// `*`), decides what a resume can be given (`resume.rs`), lets the front
/// end queue its answer (`reply`: `subscribed`, or the SSE response head,
/// told the resume's outcome), queues the snapshot of every key not
/// resumed, starts the client's history cursor and flushes. All of it runs
/// between two ring batches of the worker, the sequencing point that makes
/// the seam between history and live ticks exact.
pub(crate) async fn subscribe(
    client: &ClientGuard,
    plan: &Plan<'_>,
    reply: impl FnOnce(&mut Client, &Outcome),
) {
    let ctx = client.context();
    let _hold = match &ctx.bus {
        Some(bus) => {
            bus.prepare(&plan.keys, plan.star(), plan.snapshot, SNAPSHOT_WAIT)
                .await
        }
        None => None,
    };
    // Positions older than memory are looked up in the journal first, on
    // a blocking thread; the plan below runs between two ring batches.
    let disk = match &plan.resume {
        Some(r) => resume::look_on_disk(&ctx.fanout.ingest, r).await,
        None => None,
    };
    let id = client.id();
    let mut st = ctx.fanout.state.borrow_mut();
    if st.client(id).is_none() {
        return;
    }
    let delivered = st.delivered();
    let outcome = match &plan.resume {
        Some(r) => resume::plan(
            &ctx.fanout.ingest,
            r,
            &plan.keys,
            plan.star(),
            delivered,
            disk.as_ref(),
        ),
        None => Outcome {
            offset: delivered,
            ..Outcome::default()
        },
    };
    st.subscribe_keys(id, &plan.keys);
    if plan.symbols.all {
        st.subscribe_star(id, plan.channels);
    }
    let book_keys: Vec<KeyId> = plan
        .keys
        .iter()
        .copied()
        .filter(|k| k.channel() == Channel::Book)
        .collect();
    if let Some(c) = st.client(id) {
        c.catchup.policy.0 |= plan.policy.catchup.0;
        c.catchup.on_gap = plan.policy.on_gap;
        for &(key, seq) in &outcome.have {
            c.resume_after(key, seq);
        }
        for &k in &book_keys {
            c.set_book_depth(k, plan.depth);
        }
        reply(c, &outcome);
    }
    if !plan.snapshot && !book_keys.is_empty() {
        // A book diff means nothing without the book it applies to: book
        // keys always start from their snapshot.
        let mut snaps: Vec<RingItem> = Vec::new();
        let mut held = Vec::new();
        ctx.fanout
            .ingest
            .last_values_held(book_keys, &mut snaps, &mut held);
        st.offer_snapshots(id, &snaps);
        st.hold_snapshots(id, held);
    }
    if plan.snapshot {
        // `*` takes every key's last value; the client's entitlement
        // filters them as it filters live ticks. Keys resumed whole get
        // none: their missed ticks come from the history instead.
        let mut last: Vec<RingItem> = Vec::new();
        let mut held = Vec::new();
        if plan.symbols.all && !outcome.star_served {
            ctx.fanout.ingest.all_last_values(plan.channels, &mut last);
        } else {
            ctx.fanout
                .ingest
                .last_values_held(plan.keys.iter().copied(), &mut last, &mut held);
        }
        st.hold_snapshots(id, held);
        // A book key always starts from its snapshot (its diffs need it).
        last.retain(|item| item.book.is_some() || !outcome.no_snapshot.contains(&item.tick.key));
        st.offer_snapshots(id, &last);
    }
    if let Some(floor) = outcome.floor
        && let Some(c) = st.client(id)
    {
        c.skip_before(floor);
    }
    if let Some(start) = outcome.start
        && start <= delivered
        && let Some(c) = st.client(id)
    {
        c.begin_catchup(start, plan.channels);
    }
    st.flush_client(id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::auth::Keys;

    #[test]
    fn unentitled_names_are_taken_out_in_request_order() {
        let keys = Keys::parse(
            "[[subscriber]]\nname=\"desk\"\nkey=\"desk-key-0123456789\"\nsymbols=[\"AAPL\", \"BTC*\"]",
        )
        .unwrap();
        let desk = keys.find(b"desk-key-0123456789").unwrap();
        let mut symbols = SymbolList {
            all: true,
            names: ["MSFT", "AAPL", "ETHUSD", "BTCUSD"]
                .map(String::from)
                .to_vec(),
        };
        let denied = withhold_unentitled(Some(&desk.entitlement), &mut symbols);
        assert_eq!(denied, ["MSFT", "ETHUSD"]);
        assert_eq!(symbols.names, ["AAPL", "BTCUSD"]);
        assert!(
            symbols.all,
            "`*` stays: the outbox filters what it delivers"
        );
        assert!(withhold_unentitled(None, &mut symbols).is_empty());
    }

    #[test]
    fn each_front_end_words_a_refused_subscribe_its_own_way() {
        let e = SubscribeError::TooManyKeys {
            total: 12,
            limit: 10,
        };
        assert_eq!(
            e.message(Front::WebSocket),
            "this would make 12 subscribed (symbol, channel) keys on this connection; the limit is 10. Nothing was subscribed"
        );
        assert_eq!(
            e.message(Front::Sse),
            "12 (symbol, channel) keys requested; the limit is 10"
        );
        let full = SubscribeError::Symbols(TableFull::Kept(3));
        for front in [Front::WebSocket, Front::Sse] {
            assert_eq!(
                full.message(front),
                "the server already tracks 3 symbols, its configured maximum; nothing was subscribed"
            );
        }
    }
}
