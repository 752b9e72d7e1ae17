//! Recorded feeds: the file format, vendor importers, replay and record.

pub mod connect;
pub mod convert;
pub mod format;
pub mod import;
pub mod interrupt;
pub mod journal;
pub mod record;
pub mod replay;
pub mod selection;
