//! What travels on a socket: WebSocket frames, the encode-once tick frames of
//! every encoding, server → client messages, and the parsing of what clients
//! and publishers send.

pub(crate) mod bar;
pub mod book;
pub mod encode;
pub(crate) mod error;
pub mod frame;
pub(crate) mod frame_guard;
pub(crate) mod frame_scan;
pub mod heartbeat;
pub(crate) mod json;
pub(crate) mod message;
pub(crate) mod oversized;
pub mod publish;
pub mod reference;
pub(crate) mod reply;
pub mod request;
pub mod resume;
pub(crate) mod sse;
pub mod ts_format;
