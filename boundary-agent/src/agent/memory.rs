//! Keeping the agent's resident size near what it keeps, not near its largest reload.

/// Runs `f` (parsing or compiling a policy) on a thread of its own, so that its allocations
/// come from another glibc arena than the main thread's.
///
/// Parsing and compiling a large policy allocates several times what the agent keeps: at
/// 100k rules about 200 MiB for the YAML parser's event list (`serde_yaml_ng` builds it in
/// full before deserializing) and 60 MiB of compiled tables, against about 15 MiB kept (rule
/// labels, the live generation's keys). Made on the main thread, those short-lived
/// allocations interleave with the long-lived ones, which then pin most of the freed pages:
/// measured, 75-100 MiB resident after trimming. In an arena of their own they are freed
/// whole and [`release_freed_memory`] hands them back (about 30 MiB resident).
pub fn off_main_arena<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("policy".into())
            .spawn_scoped(s, f)
            .expect("spawn the policy thread")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Hands the heap's free pages back to the kernel, after a policy was parsed, compiled and
/// applied (see [`off_main_arena`]). glibc returns little of it on its own, so the agent's
/// resident size would stay near the peak of its largest reload.
pub fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    #[expect(unsafe_code, reason = "malloc_trim(3) has no safe wrapper")]
    // SAFETY: malloc_trim only releases memory the allocator holds free; it takes no pointer.
    unsafe {
        libc::malloc_trim(0);
    }
}
