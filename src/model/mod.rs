//! The feed's vocabulary: ticks, fixed-point decimals and the symbol table.
//! No I/O here; every other layer speaks these types.

pub mod bar;
pub mod book;
pub mod decimal;
pub mod epoch;
pub(crate) mod feed;
pub mod instrument;
pub mod speed;
pub(crate) mod symbols;
pub mod tick;
