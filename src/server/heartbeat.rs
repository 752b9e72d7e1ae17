//! Sends a subscriber its opt-in heartbeat ([`crate::wire::heartbeat`])
//! every interval, WebSocket or SSE alike, until the connection ends.

use std::rc::Rc;
use std::time::Duration;

use crate::model::tick::wall_clock_ns;
use crate::pipeline::fanout::ClientId;
use crate::server::context::Context;
use crate::wire::heartbeat;

/// Queues a heartbeat for client `id` every `every`; never returns (the
/// caller races it against the session). A client that is behind gets
/// none: its queue already tells it the feed is alive, and a heartbeat
/// queued behind old ticks would carry a stale clock.
pub(crate) async fn run(ctx: Rc<Context>, id: ClientId, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate: start one interval in
    loop {
        tick.tick().await;
        let mut st = ctx.fanout.state.borrow_mut();
        // Gone: the session ends with it and drops this future.
        let Some(c) = st.client(id) else { continue };
        // A client reading the history behind the worker has not had every
        // tick up to the worker's position yet: no position to tell it.
        if c.is_blocked() || c.is_closing() || c.catchup.is_catching_up() {
            continue;
        }
        // The global ingest offset of the last tick this worker handed to
        // its clients (this one's queue holds every tick of its keys up to
        // it): a position the client can resume from.
        let pos = st.delivered();
        let Some(c) = st.client(id) else { continue };
        c.push_control(heartbeat::message(c.encoding(), wall_clock_ns(), pos));
        st.flush_client(id);
    }
}
