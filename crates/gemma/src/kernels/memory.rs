//! How host memory is handed out, tuned for training on the CPU.
//!
//! glibc's `malloc` serves every block above 32 MiB with its own `mmap` and gives it back
//! with `munmap` on free, so the next block of that size arrives as fresh pages that the
//! kernel faults in and zeroes one by one. A CPU training step allocates and frees many
//! such blocks (the 671 MB embedding gradient, the head's logit chunks, large activations
//! and their gradients), and a profile of a Full-Finetune step on the 2-core bench machine
//! put about a third of all time in the kernel's page-fault and page-clearing code
//! (`docs/perf.md`). So blocks below [`LARGE_BLOCK`] stay in glibc's heap and are reused
//! ([`keep_freed_memory`]), and larger ones go to [`LargeBlocksMapped`], which keeps a
//! bounded number of freed mappings for reuse: in the heap, their changing sizes would
//! fragment it and raise the peak.

/// Makes glibc's `malloc` keep freed blocks for reuse instead of unmapping them (call
/// once, early, in a program that trains or evaluates on the CPU). A no-op on other C
/// libraries and platforms, and when `SWEELOL_KEEP_FREED_MEMORY=0`: glibc's defaults then
/// give each block above its `mmap` threshold back at once, at the page-fault cost above.
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
/// whole free pages inside the heap), and the freed mappings [`LargeBlocksMapped`] kept.
/// Call between jobs in one process (one technique's run and the next, training and
/// evaluation): the memory kept for the job that ended would otherwise stay resident under
/// the next one, and its fragments add to that job's peak.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory; live allocations are untouched.
    unsafe {
        libc::malloc_trim(0);
    }
    let kept = std::mem::take(&mut *CACHE.lock().unwrap_or_else(|e| e.into_inner()));
    for (addr, len) in kept {
        unmap(addr, len);
    }
}

/// The process's allocator for CPU training (install it with `#[global_allocator]` in a
/// binary, beside [`keep_freed_memory`]): blocks of [`LARGE_BLOCK`] bytes and more get
/// mappings of their own, asked for as transparent huge pages; smaller ones are glibc's.
///
/// Why: a step's large blocks (the head's logit chunks, the 671 MB embedding gradient, the
/// packed table) change size from batch to batch. Kept in glibc's heap they leave holes
/// that later blocks do not fit, and the heap's high-water mark grows: KD-Pruned's bench
/// peaked at 8.1 - 8.3 GiB that way, 7.6 GiB with this allocator (`docs/perf.md`). Fresh
/// mappings cost a fault and a clearing per page, so up to [`CACHED_BYTES`] of freed ones
/// are kept for the next large blocks: without that, KD's step was a fifth slower. Huge
/// pages (2 MiB) cut the faults 512-fold where the kernel grants them
/// (`/sys/kernel/mm/transparent_hugepage/enabled`: `always` or `madvise`).
pub struct LargeBlocksMapped;

/// Blocks from this size up are mapped on their own: glibc's own largest dynamic `mmap`
/// threshold.
pub const LARGE_BLOCK: usize = 32 << 20;

/// Freed large mappings kept for reuse, in all: about two of a step's largest blocks.
pub const CACHED_BYTES: usize = 1 << 30;

/// Huge-page size on x86-64 and aarch64 (4 KiB base pages): mappings are whole multiples.
const HUGE_PAGE: usize = 2 << 20;

fn mapped_len(size: usize) -> usize {
    size.div_ceil(HUGE_PAGE) * HUGE_PAGE
}

fn is_large(layout: &std::alloc::Layout) -> bool {
    cfg!(target_os = "linux") && layout.size() >= LARGE_BLOCK && layout.align() <= 4096
}

// SAFETY: a large block is a mapping of exactly `mapped_len(size)` bytes (page-aligned, so
// any alignment up to 4096 holds), fresh or cached; `dealloc` recomputes that length from
// the same layout and caches or unmaps it. Every other block is `System`'s.
unsafe impl std::alloc::GlobalAlloc for LargeBlocksMapped {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if !is_large(&layout) {
            return unsafe { std::alloc::System.alloc(layout) };
        }
        alloc_large(layout.size(), false)
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if !is_large(&layout) {
            return unsafe { std::alloc::System.alloc_zeroed(layout) };
        }
        alloc_large(layout.size(), true)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        if !is_large(&layout) {
            return unsafe { std::alloc::System.dealloc(ptr, layout) };
        }
        cache_or_unmap(ptr as usize, mapped_len(layout.size()));
    }
}

/// Freed mappings `(address, length)` kept for the next large blocks, oldest first.
static CACHE: std::sync::Mutex<Vec<(usize, usize)>> = std::sync::Mutex::new(Vec::new());

/// Bytes that callers keep for reuse themselves (the head's recycled table gradient): they
/// count against [`CACHED_BYTES`] too, so that what is kept in all stays within it.
static KEPT_ELSEWHERE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Says that a caller now keeps `bytes` more (or, negative, fewer) of memory it is done
/// with for its own reuse; the cache shrinks to make room.
pub fn kept_elsewhere(bytes: isize) {
    use std::sync::atomic::Ordering::Relaxed;
    if bytes >= 0 {
        KEPT_ELSEWHERE.fetch_add(bytes as usize, Relaxed);
        trim(&mut CACHE.lock().unwrap_or_else(|e| e.into_inner()));
    } else {
        let _ = KEPT_ELSEWHERE.fetch_update(Relaxed, Relaxed, |k| Some(k.saturating_sub(bytes.unsigned_abs())));
    }
}

/// Keeps a freed mapping for reuse, unmapping the oldest kept ones beyond [`CACHED_BYTES`].
fn cache_or_unmap(addr: usize, len: usize) {
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache.push((addr, len));
    trim(&mut cache);
}

/// Unmaps the oldest kept mappings until the cache and what callers keep fit [`CACHED_BYTES`].
fn trim(cache: &mut Vec<(usize, usize)>) {
    let limit = CACHED_BYTES.saturating_sub(KEPT_ELSEWHERE.load(std::sync::atomic::Ordering::Relaxed));
    while !cache.is_empty() && cache.iter().map(|c| c.1).sum::<usize>() > limit {
        let (a, l) = cache.remove(0);
        unmap(a, l);
    }
}

fn unmap(addr: usize, len: usize) {
    #[cfg(target_os = "linux")]
    // SAFETY: `addr..addr + len` is a whole mapping, or its tail, made by `map_fresh`.
    unsafe {
        libc::munmap(addr as *mut libc::c_void, len);
    }
}

/// The smallest cached mapping that holds `len` bytes, its tail beyond `len` unmapped.
fn from_cache(len: usize) -> Option<*mut u8> {
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let i = (0..cache.len()).filter(|&i| cache[i].1 >= len).min_by_key(|&i| cache[i].1)?;
    let (addr, have) = cache.remove(i);
    if have > len {
        unmap(addr + len, have - len);
    }
    Some(addr as *mut u8)
}

/// A large block of `size` bytes: a kept mapping that fits (cleared when `zeroed`), else a
/// fresh one, which is zero already. Null when the kernel refuses (the caller's allocation
/// error).
fn alloc_large(size: usize, zeroed: bool) -> *mut u8 {
    let len = mapped_len(size);
    match from_cache(len) {
        Some(p) => {
            if zeroed {
                // SAFETY: the kept mapping holds `len ≥ size` writable bytes.
                unsafe { std::ptr::write_bytes(p, 0, size) };
            }
            p
        }
        None => map_fresh(len),
    }
}

/// A fresh anonymous mapping of `len` bytes, huge pages asked for; null when refused.
fn map_fresh(len: usize) -> *mut u8 {
    #[cfg(target_os = "linux")]
    // SAFETY: an anonymous private mapping touches no existing memory; `madvise` only
    // states a preference for the range just mapped.
    unsafe {
        let p = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
        if p == libc::MAP_FAILED {
            return std::ptr::null_mut();
        }
        libc::madvise(p, len, libc::MADV_HUGEPAGE);
        p.cast()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = len;
        unreachable!("large blocks are mapped on Linux only")
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    use super::*;

    /// One test, since the cache is the process's: large blocks are mapped, reused once
    /// freed, zero when asked for even when reused, and all given back on release.
    #[test]
    fn large_blocks_are_mapped_reused_zeroed_and_released() {
        let a = LargeBlocksMapped;
        let large = Layout::from_size_align(LARGE_BLOCK + 12_345, 64).unwrap();
        let smaller = Layout::from_size_align(LARGE_BLOCK, 64).unwrap();
        release_freed_memory();
        unsafe {
            let p = a.alloc(large);
            assert!(!p.is_null() && (p as usize).is_multiple_of(4096), "a page-aligned mapping");
            std::ptr::write_bytes(p, 0xAB, large.size());
            a.dealloc(p, large);
            // The freed mapping serves the next large block that fits, zeroed on request.
            let q = a.alloc_zeroed(smaller);
            assert_eq!(q, p, "the kept mapping is reused");
            let bytes = std::slice::from_raw_parts(q, smaller.size());
            assert!(bytes.iter().all(|&b| b == 0), "alloc_zeroed on a reused mapping");
            a.dealloc(q, smaller);
            assert_eq!(CACHE.lock().unwrap().iter().map(|c| c.1).sum::<usize>(), mapped_len(smaller.size()));
            release_freed_memory();
            assert!(CACHE.lock().unwrap().is_empty(), "release unmaps what was kept");
            // Never more than CACHED_BYTES kept: the oldest go first.
            let blocks: Vec<*mut u8> = (0..CACHED_BYTES / LARGE_BLOCK + 3).map(|_| a.alloc(smaller)).collect();
            for &b in &blocks {
                a.dealloc(b, smaller);
            }
            let kept: Vec<usize> = CACHE.lock().unwrap().iter().map(|c| c.0).collect();
            assert_eq!(kept.len(), CACHED_BYTES / mapped_len(smaller.size()));
            assert_eq!(kept.last(), blocks.last().map(|&b| b as usize).as_ref(), "the newest is kept");
            release_freed_memory();
            // Small blocks are the system allocator's and never cached.
            let small = Layout::from_size_align(4096, 8).unwrap();
            let s = a.alloc(small);
            a.dealloc(s, small);
            assert!(CACHE.lock().unwrap().is_empty());
        }
    }
}
