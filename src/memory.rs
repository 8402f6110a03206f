//! The allocator settings of a grit process: the `grit` binary applies [`settle_allocator`] first
//! thing, and `grit serve` [`settle_server_allocator`] (also for library users who embed the
//! server). Both are glibc `mallopt`s; other C libraries are left alone.
//!
//! **One malloc arena.** glibc gives threads their own arenas, and memory freed into one arena
//! serves only the threads that allocate from it. A task's outputs travel across threads: the
//! FUSE thread holds a node per file while the script runs, a blocking thread turns them into
//! records, the store's writer thread publishes them. With an arena each, the freed memory of one
//! stage could not serve the next and the peaks added up: a source task writing 100,000 files
//! peaked at 85 MiB, and at 57 MiB with one arena (BENCHMARKS.md, issue 16). glibc's per-thread
//! caches still serve most small allocations without the arena's lock; a 3,000-task fan-out used
//! the same CPU time either way.
//!
//! **A fixed mmap threshold, in the server.** Every run through the FUSE capture mounts a filesystem served by
//! a new thread, and that thread's request buffer (fuser's `FuseReadBuf`) is a zeroed 16 MiB
//! allocation. glibc serves an allocation that big with `mmap` at first, but freeing it raises
//! its *dynamic* mmap threshold to 16 MiB (and its trim threshold to twice that): from then on
//! the buffer comes from the heap of whichever arena the run's thread uses, and on free its 16
//! MiB stay in that arena's top chunk (too small to trim at a 32 MiB threshold, and `malloc_trim`
//! does not trim the top of a non-main arena). In `grit serve`, RSS grew by about 17 MiB per
//! arena as runs landed on new arenas: 31 MiB -> 305 MiB after 50 runs on this 2-core machine,
//! with 7.6 MB in use (`malloc_stats`). Fixing the threshold at glibc's default (128 KiB) turns
//! the dynamic adjustment off, so such buffers are always mapped and unmapped, and their memory
//! goes back to the kernel when the run ends.

/// glibc's default mmap threshold: allocations of this size or more are mapped on their own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Malloc arenas: one, shared by every thread (see the module doc).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 1;

/// One arena for every thread. Call once, early, before threads start; a failure only costs
/// memory, so it is logged and not fatal.
pub fn settle_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets malloc's tuning parameters, under malloc's own lock; it
        // takes no pointers and is safe to call at any time from any thread.
        if unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) } != 1 {
            tracing::warn!("could not limit malloc's arenas: memory use may be higher");
        }
    }
}

/// For a long-lived process that runs many pipelines (`grit serve`): also the fixed mmap
/// threshold, so that each run's big buffers go back to the kernel. A single run leaves
/// glibc's dynamic threshold alone: it exits anyway, and mapping every buffer of 128 KiB or
/// more afresh would cost it page faults.
pub fn settle_server_allocator() {
    settle_allocator();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: as above.
        if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) } != 1 {
            tracing::warn!("could not fix malloc's mmap threshold: RSS may grow with runs");
        }
    }
}
