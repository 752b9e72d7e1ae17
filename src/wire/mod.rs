//! What travels on a socket: WebSocket frames, the encode-once tick frames of
//! every encoding, server → client messages, and the parsing of what clients
//! and publishers send.

pub mod encode;
pub mod error;
pub mod frame;
pub mod frame_guard;
pub mod json;
pub mod message;
pub mod publish;
pub mod request;
