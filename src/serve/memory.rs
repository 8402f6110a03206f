//! The allocator settings of the long-lived server process.
//!
//! Every run through the FUSE capture mounts a filesystem served by a new thread, and that
//! thread's request buffer (fuser's `FuseReadBuf`) is a zeroed 16 MiB allocation. glibc's
//! malloc serves an allocation that big with `mmap` at first, but freeing it raises its
//! *dynamic* mmap threshold to 16 MiB (and its trim threshold to twice that): from then on the
//! buffer comes from the heap of whichever malloc arena the run's thread uses, and on free its
//! 16 MiB stay in that arena's top chunk (too small to trim at a 32 MiB threshold, and
//! `malloc_trim` does not trim the top of a non-main arena). With up to 8 arenas per core, the
//! server's RSS grew by about 17 MiB per arena as runs landed on new arenas: 31 MiB -> 305 MiB
//! after 50 runs on this 2-core machine, with 7.6 MB in use (`malloc_stats`). BENCHMARKS.md has
//! the measurements.
//!
//! Fixing the mmap threshold at glibc's default (128 KiB) turns the dynamic adjustment off, so
//! such buffers are always mapped and unmapped, and their memory goes back to the kernel when
//! the run ends.

/// glibc's default mmap threshold: allocations of this size or more are mapped on their own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Keep big short-lived allocations out of the malloc arenas for the life of the process. Call
/// once, early; a failure only costs memory, so it is logged and not fatal.
pub fn settle_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets malloc's tuning parameters, under malloc's own lock; it
        // takes no pointers and is safe to call at any time from any thread.
        let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        if set != 1 {
            tracing::warn!("could not fix malloc's mmap threshold: RSS may grow with runs");
        }
    }
}
