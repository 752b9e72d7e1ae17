//! What every streaming client goes through, WebSocket or SSE: the one
//! place each step is decided.
//!
//! - [`authorize`]: the API key check, with its counters and log lines; a
//!   refusal is a [`Refusal`] each front end writes in its own way (a hyper
//!   response before the upgrade, a hand-written one on `/v1/sse`).
//! - [`admit`]: the connection limits ([`crate::access::limits`]).
//! - [`ClientGuard`]: the client's registration with the fan-out worker
//!   (gauges, writer task, open and close log lines), undone on drop.
//! - [`withhold_unentitled`], [`Plan`] and [`subscribe()`]: the symbols the
//!   key may not see taken out, the rest interned and the key limit checked
//!   before anything waits or changes, then the bus made ready, the
//!   subscription put in place and the snapshot queued.
//!
//! | file | what it holds |
//! | --- | --- |
//! | `mod.rs` | [`SessionKind`], [`Front`]: what a client is and how it came |
//! | `admission.rs` | [`authorize`], [`admit`], [`Refusal`] |
//! | `guard.rs` | [`ClientGuard`], [`feed_status`] |
//! | `subscribe.rs` | [`withhold_unentitled`], [`Plan`], [`subscribe()`] |

mod admission;
mod guard;
mod resume;
mod subscribe;

use std::sync::atomic::AtomicI64;

use crate::access::auth::Role;
use crate::pipeline::stats::Stats;

pub(crate) use admission::{Presented, Refusal, admit, authorize};
pub(crate) use guard::{ClientGuard, TakenConn, feed_status};
pub(crate) use resume::{Outcome as ResumeOutcome, epoch_str};
pub(crate) use subscribe::{Plan, subscribe, withhold_unentitled};

/// What a connection is for: which endpoint it came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SessionKind {
    /// `/v1/stream` or `/v1/sse`.
    Subscriber,
    /// `/v1/publish`.
    Publisher,
    /// The conformance listener (`serve --echo-listen`, off by default):
    /// every text or binary message is sent back as one frame of the same
    /// opcode, through the same reader, limits and outbox as `/v1/stream`,
    /// so Autobahn's fuzzing cases test the framing stack subscribers get.
    Echo,
}

impl SessionKind {
    /// The name in log lines and in `hello.role`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SessionKind::Subscriber => "subscriber",
            SessionKind::Publisher => "publisher",
            SessionKind::Echo => "echo",
        }
    }

    /// The API key role the endpoint needs; `None`: no key is asked for.
    pub(crate) fn role(self) -> Option<Role> {
        match self {
            SessionKind::Subscriber => Some(Role::Subscriber),
            SessionKind::Publisher => Some(Role::Publisher),
            SessionKind::Echo => None,
        }
    }

    /// The gauge of open connections of this kind, if it has one.
    pub(crate) fn gauge(self, stats: &Stats) -> Option<&AtomicI64> {
        match self {
            SessionKind::Subscriber => Some(&stats.subscribers),
            SessionKind::Publisher => Some(&stats.publishers),
            SessionKind::Echo => None,
        }
    }
}

/// The front end a client came through: where the wording of a refusal or
/// of an error differs, it differs by this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Front {
    /// An HTTP upgrade to a WebSocket session.
    WebSocket,
    /// `GET /v1/sse`, answered by hand.
    Sse,
}
