//! The process's memory: page size, the allocator's purge delay and
//! transparent huge pages.

use std::io;

/// The page size in bytes, the unit of `/proc/*/statm` (`None` if the
/// system does not say).
pub fn page_size() -> Option<u64> {
    // SAFETY: sysconf only reads a system constant; it has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|&p| p > 0)
}

// The allocator's option table (mimalloc's own C API: the `mimalloc`
// crate does not wrap it).
use mimalloc as _;
unsafe extern "C" {
    fn mi_option_get(option: libc::c_int) -> libc::c_long;
    fn mi_option_set(option: libc::c_int, value: libc::c_long);
}

/// `mi_option_purge_delay`: its place in `mi_option_e` (include/mimalloc.h
/// of the mimalloc v2 the `mimalloc` crate builds; default 10 ms). The
/// unit test checks it by that default.
const MI_OPTION_PURGE_DELAY: libc::c_int = 15;

/// How long (ms) mimalloc keeps memory it no longer uses before returning
/// it to the OS, unless `MIMALLOC_PURGE_DELAY` in the environment says
/// (benches/README.md, "Where a book update cost more than a trade"):
/// v2's default of 10 ms made a server descheduled for longer give its
/// free pages back and fault them in again, zeroed (as huge pages), moments
/// later; mimalloc v3 defaults to 1000 ms.
pub fn set_allocator_purge_delay(ms: i64) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: mi_option_set stores an integer in mimalloc's option table;
    // it has no preconditions, and every value is valid for the purge
    // delay (-1: never).
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, ms as libc::c_long) }
}

/// mimalloc's purge delay in force (ms).
pub fn allocator_purge_delay() -> i64 {
    // SAFETY: mi_option_get reads mimalloc's option table (initialising
    // the option from the environment on first use); no preconditions.
    unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) as i64 }
}

/// Turns transparent huge pages off for this process (`prctl
/// PR_SET_THP_DISABLE`): from now on no page fault of the process is
/// served with a 2 MiB page, whatever `madvise` its allocator made.
///
/// Why: mimalloc advises `MADV_HUGEPAGE` on its segments, and where the
/// kernel's THP `defrag` setting is `madvise` (a common default) the first
/// touch of such a region zeroes a 2 MiB page and may compact memory
/// synchronously first: the worker thread stalls for 1–10 ms in the middle
/// of a fan-out pass (seen with `perf record` at light load, while the
/// history grew). 4 KiB faults cost a microsecond each, spread out.
pub fn disable_transparent_huge_pages() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and only
    // sets a flag on this process's memory descriptor.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1 as libc::c_ulong, 0, 0, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
