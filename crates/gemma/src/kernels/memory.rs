//! How host memory is handed out, tuned for training on the CPU.
//!
//! glibc's `malloc` serves every block above 32 MiB with its own `mmap` and gives it back
//! with `munmap` on free, so the next block of that size arrives as fresh pages that the
//! kernel faults in and zeroes one by one. A CPU training step allocates and frees many
//! such blocks (the 671 MB embedding gradient, the head's logit chunks, every large
//! activation and its gradient), and a profile of a Full-Finetune step on the 2-core bench
//! machine put about a third of all time in the kernel's page-fault and page-clearing code
//! (`docs/perf.md`). Serving large blocks from the heap and keeping freed memory for reuse
//! removes that cost. Peak memory is unchanged in principle (freed memory is reused, not
//! added to); it only stays resident after the peak instead of going back to the OS.

/// Makes glibc's `malloc` keep large freed blocks for reuse instead of unmapping them
/// (call once, early, in a program that trains or evaluates on the CPU). A no-op on
/// other C libraries and platforms, and when `SWEELOL_KEEP_FREED_MEMORY=0`: glibc's
/// defaults then give each large block back at once, for a lower resident size between
/// peaks and fragmentation-free peaks, at the page-fault cost above.
pub fn keep_freed_memory() {
    if std::env::var("SWEELOL_KEEP_FREED_MEMORY").is_ok_and(|v| v == "0") {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation thresholds; it is safe to call at
    // any time, and before or after other allocations.
    unsafe {
        // No block gets its own mapping, so none is unmapped on free ...
        libc::mallopt(libc::M_MMAP_MAX, 0);
        // ... and the heap's free top is only returned to the OS above 2 GiB.
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Gives the heap's free memory back to the OS (glibc's `malloc_trim`: the free top, and
/// whole free pages inside the heap). Call between jobs in one process (one technique's
/// run and the next, training and evaluation): the memory [`keep_freed_memory`] kept for
/// the job that ended would otherwise stay resident under the next one, and its
/// fragments add to that job's peak. A no-op off glibc.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory; live allocations are untouched.
    unsafe {
        libc::malloc_trim(0);
    }
}
