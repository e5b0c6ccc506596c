//! The daemon's heap kept to what it uses (glibc's allocator; elsewhere these do nothing).
//!
//! Why: a pass allocates and frees a lot (listings, granule records, DaCHS's output, TLS and
//! git state) on whichever threads it ran, and glibc keeps freed pages in one arena per thread
//! that allocated, returning them to the system only from the top of each. Measured on the
//! example (scripts/bench-footprint.sh), an idle agent held about twice the heap it used.

/// At most two arenas: the runtime's threads share them instead of each growing its own. Two,
/// not one, so that transfers on blocking threads and the HTTP endpoints do not queue on one
/// lock. Called before any thread is started.
pub fn limit_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a parameter of the allocator; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Free pages inside every arena handed back to the system: after a pass, not during one (it
/// walks the arenas under their locks).
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions; it only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}
