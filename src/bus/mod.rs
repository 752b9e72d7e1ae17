//! Bus: the NATS link that spreads one feed over several nodes.
//!
//! A deployment has one **ingest** node and any number of **gateways**
//! (`serve --bus nats://… --role ingest|gateway`); `standalone`, the
//! default, is a single process with no bus. docs/SCALEOUT.md is the
//! operator's guide to it.
//!
//! - The ingest node owns the sources and the sequencer, exactly as a
//!   standalone node does, and reads the ring like one more fan-out worker:
//!   each tick goes to NATS on its key's subject ([`subject`]) as a compact
//!   binary payload ([`payload`]). A JetStream stream keeping one message
//!   per subject captures those subjects: it is the deployment's last-value
//!   store ([`last_values`]). On start the ingest node reads it back and
//!   continues every key's `seq` from there, so `seq` never restarts when
//!   the node does. It also publishes a [`heartbeat`].
//! - A gateway has no sources. Its workers report which keys their clients
//!   want ([`Interest`]); the bus thread holds one NATS subscription per
//!   wanted key (or one per channel for `*`) and drops it when the last
//!   local subscriber leaves. Ticks arrive with their `seq` and `rx` and
//!   enter the gateway's own ring unchanged
//!   ([`Ingest::publish_sequenced`]), which drops duplicates, so every
//!   gateway's clients see the same `seq`s. Snapshots come from JetStream,
//!   read after the subscription is in place ([`BusLink::prepare`]), so a
//!   snapshot is the same on every gateway and never older than the
//!   client's first live tick. No heartbeat for `stale_after` (ingest node
//!   gone, or NATS unreachable) makes the feed stale: clients get a
//!   `status` message, and another when it is live again.
//!
//! NATS reconnects are async-nats's own (it resubscribes by itself); this
//! module logs them, counts them in `/metrics` and, on a gateway, reads the
//! last values of every wanted key again after one, so clients catch up on
//! what the outage hid (as a `seq` gap, never a duplicate).
//!
//! Each node's side of the bus runs on a thread of its own, `tickwire-bus`,
//! with a single-threaded runtime; the workers reach it through
//! [`BusLink`] (and, on a gateway, [`Interest`]).
//!
//! | file | what it holds |
//! | --- | --- |
//! | `mod.rs` | [`Role`], [`BusError`]: what the rest of the server sees |
//! | `config.rs` | [`BusConfig`]; credentials and TLS from the URL |
//! | `link.rs` | [`BusLink`], the bus thread, the NATS connection and its events |
//! | `interest.rs` | what a gateway's clients want; commands to its bus thread |
//! | `ingest_node.rs` | the ingest node: `seq` continued, ticks and heartbeat published |
//! | `gateway.rs` | a gateway: subscriptions, ticks into the ring, snapshots, staleness |
//! | `last_values.rs` | the JetStream last-value store: created, read back |
//! | `heartbeat.rs` | the heartbeat's payload; live or stale |
//! | `subject.rs` | one NATS subject per key; symbol escaping |
//! | `payload.rs` | a tick's bytes on the bus |
//!
//! [`Ingest::publish_sequenced`]: crate::pipeline::ingest::Ingest::publish_sequenced
//! [`Interest`]: interest::Interest

mod config;
mod gateway;
mod heartbeat;
mod ingest_node;
mod interest;
mod last_values;
mod link;
pub mod payload;
pub mod subject;

use std::time::Duration;

pub use config::BusConfig;
pub(crate) use gateway::start_gateway;
pub(crate) use ingest_node::start_ingest;
pub(crate) use link::BusLink;

/// What a node does in a deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Role {
    /// One process: sources, sequencer and subscribers; no bus.
    #[default]
    Standalone,
    /// Sources and sequencer; publishes every tick to the bus (and serves
    /// subscribers of its own, like a standalone node).
    Ingest,
    /// No sources: ticks come from the bus.
    Gateway,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Ingest => "ingest",
            Role::Gateway => "gateway",
        }
    }
}

/// Errors of the bus link, with what an operator needs to act on them.
/// A node that cannot start its bus link stops with one of these; once
/// running, the link logs and counts its troubles instead.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot reach NATS at {url} within {timeout:?}: {message}")]
    Connect {
        url: String,
        timeout: Duration,
        message: String,
    },
    #[error("JetStream stream `{stream}` at {url}: {message} (is nats-server running with -js?)")]
    Stream {
        url: String,
        stream: String,
        message: String,
    },
    #[error("reading the last values back from `{stream}`: {message}")]
    Seed { stream: String, message: String },
    #[error("cannot start the bus thread: {0}")]
    Thread(std::io::Error),
}
