//! Bytes read from a connection before its session took it over (the SSE
//! peek, the upgrade request's trailing frames, TLS records decrypted
//! early): served to the session's reader ahead of the socket.

use bytes::Bytes;
use tokio::io::ReadBuf;

/// Serves bytes read ahead of the session (they come before the socket's);
/// `false` when there are none left.
pub(crate) fn serve_first(ahead: &mut Bytes, buf: &mut ReadBuf<'_>) -> bool {
    if ahead.is_empty() {
        return false;
    }
    let n = buf.remaining().min(ahead.len());
    buf.put_slice(&ahead.split_to(n));
    if ahead.is_empty() {
        // An empty view still holds its allocation: let it go.
        *ahead = Bytes::new();
    }
    true
}
