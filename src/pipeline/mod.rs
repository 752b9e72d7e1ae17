//! The path of a tick: ingest (sequencing, encoding once) → ring → fan-out.

pub mod fanout;
pub mod history;
pub mod ingest;
pub mod ring;
pub mod stats;
