//! The `tickwire-bench` command (also run as `tickwire bench`): see the
//! library's documentation and benches/README.md.

use std::process::ExitCode;

use clap::Parser;

// The allocator `tickwire` uses; the runner ran inside it until it became a
// binary of its own, and its figures are comparable across that move.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tickwire_bench::run(tickwire_bench::BenchArgs::parse())
}
