//! Whether a client may come in: its API key ([`authorize`]) and a place
//! under the connection limits ([`admit`]).

use std::net::IpAddr;
use std::sync::Arc;

use hyper::StatusCode;

use super::{Front, SessionKind};
use crate::access::auth::{Identity, Role, presented_key};
use crate::access::limits::Permit;
use crate::pipeline::stats::{Refusal as Counter, Stats};
use crate::server::context::Context;

/// A request refused before it streams anything; each front end turns it
/// into its own HTTP response.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    /// The reason, for the body (without its final newline).
    pub(crate) message: String,
    /// The `WWW-Authenticate` value, for a 401.
    pub(crate) challenge: Option<&'static str>,
    /// `Retry-After: 5`, for a refusal that may pass later (503).
    pub(crate) retry_after: bool,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
            challenge: None,
            retry_after: false,
        }
    }

    /// The same refusal, asking the client to come back in 5 s.
    pub(crate) fn retry_later(self) -> Refusal {
        Refusal {
            retry_after: true,
            ..self
        }
    }
}

/// The key a request may present, wherever its front end found it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Presented<'a> {
    /// The `Authorization` header's value.
    pub(crate) authorization: Option<&'a [u8]>,
    /// The raw query, for `token=KEY` (browsers cannot set headers on a
    /// WebSocket or an `EventSource`).
    pub(crate) query: Option<&'a str>,
    /// The request's path, for the log lines.
    pub(crate) path: &'a str,
}

/// The outcome of [`authorize`]: the key's identity (`None`: the server has
/// no keys, or the endpoint needs none), or why the request is refused.
pub(crate) type Decision = Result<Option<Arc<Identity>>, Refusal>;

/// Checks the API key a request presents, when the server has keys. A
/// refusal is counted (`tickwire_upgrades_refused_total`) and logged here;
/// the key itself is never logged, only its configured name.
pub(crate) fn authorize(
    ctx: &Context,
    front: Front,
    kind: SessionKind,
    presented: Presented<'_>,
    peer: IpAddr,
) -> Decision {
    let (Some(keys), Some(want)) = (&ctx.config.auth, kind.role()) else {
        return Ok(None);
    };
    let path = presented.path;
    let refuse = |status: StatusCode, counter: Counter, challenge, why: &str| {
        Stats::add(&ctx.fanout.stats.upgrades_refused[counter as usize], 1);
        Refusal {
            challenge,
            ..Refusal::new(status, why)
        }
    };
    let unauthorized = |challenge: &'static str, why: &str| {
        tracing::debug!(%peer, path, why, "upgrade refused: 401");
        refuse(
            StatusCode::UNAUTHORIZED,
            Counter::Unauthorized,
            Some(challenge),
            why,
        )
    };
    let Some(key) = presented_key(presented.authorization, presented.query) else {
        // On /v1/sse the URL already has a query (`?symbols=`).
        return Err(unauthorized(
            r#"Bearer realm="tickwire""#,
            match front {
                Front::WebSocket => {
                    "an API key is required: send `Authorization: Bearer KEY` or add `?token=KEY` to the URL"
                }
                Front::Sse => {
                    "an API key is required: send `Authorization: Bearer KEY` or add `&token=KEY` to the URL"
                }
            },
        ));
    };
    let Some(identity) = keys.find(key) else {
        return Err(unauthorized(
            r#"Bearer realm="tickwire", error="invalid_token""#,
            "the API key is not valid",
        ));
    };
    if identity.role != want {
        tracing::info!(%peer, key = identity.name, path, "upgrade refused: 403");
        let why = match identity.role {
            Role::Subscriber => "this API key may subscribe (/v1/stream) but not publish",
            Role::Publisher => "this API key may publish (/v1/publish) but not subscribe",
        };
        return Err(refuse(StatusCode::FORBIDDEN, Counter::Forbidden, None, why));
    }
    Ok(Some(identity))
}

/// Takes a place under the connection limits (total, per address, per key,
/// publishers), held by the returned [`Permit`] until the client is gone.
pub(crate) fn admit(
    ctx: &Context,
    front: Front,
    kind: SessionKind,
    identity: Option<&Identity>,
    peer: IpAddr,
) -> Result<Permit, Refusal> {
    ctx.admission
        .admit(peer, kind == SessionKind::Publisher, identity)
        .map_err(|refused| {
            tracing::debug!(%peer, %refused, "upgrade refused");
            // `/v1/sse` has never counted its limit refusals (only its 401
            // and 403): kept as it was.
            if front == Front::WebSocket {
                Stats::add(
                    &ctx.fanout.stats.upgrades_refused[Counter::Limit as usize],
                    1,
                );
            }
            Refusal::new(StatusCode::SERVICE_UNAVAILABLE, refused.to_string()).retry_later()
        })
}
