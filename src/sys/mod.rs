//! Every call into libc, for the server and for the benchmark runner
//! (`tools/bench`), behind safe functions.
//!
//! This is the one module besides the ring allowed `unsafe` code: each block
//! is a single foreign call whose arguments are plain integers or structs
//! owned by the caller, with a `SAFETY:` comment saying why that holds.
//! Callers never see a `libc` type: signals are a [`Signal`], limits a
//! [`FdLimit`].

#![allow(unsafe_code)]

mod limits;
mod memory;
mod process;
#[cfg(test)]
mod tests;
mod thread;

pub use limits::{FdLimit, fd_limit, raise_fd_limit, start_with_fd_limit};
pub use memory::{
    allocator_purge_delay, disable_transparent_huge_pages, page_size, set_allocator_purge_delay,
};
pub use process::{Signal, die_with_parent, enter_net_namespace, is_root, kill};
pub use thread::{
    affinity, clock_ticks_per_second, monotonic_ns, set_affinity, set_thread_fifo, set_thread_nice,
    set_timer_slack, sleep_until_monotonic, thread_cpu_time, thread_id,
};
