//! What every connection on one worker thread shares.

use std::rc::Rc;
use std::sync::Arc;

use crate::access::limits::Admission;
use crate::bus::BusLink;
use crate::pipeline::fanout::Worker;
use crate::server::config::Config;

/// A worker thread's fan-out worker plus the server-wide settings, limits
/// and bus link its connections consult. One per worker thread; connections
/// hold it by `Rc` (single-threaded runtime).
pub(crate) struct Context {
    /// The fan-out worker: this thread's clients and subscription index.
    pub(crate) fanout: Rc<Worker>,
    /// The server's configuration, shared by every worker.
    pub(crate) config: Arc<Config>,
    /// Connection limits, shared with the other workers.
    pub(crate) admission: Arc<Admission>,
    /// The message bus link (`--bus`), if any: a gateway's subscribe waits
    /// on it for the bus subscription and snapshot.
    pub(crate) bus: Option<Arc<BusLink>>,
}
