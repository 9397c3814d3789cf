//! What every fuzz target shares: a cap on single allocations, and picking
//! a variant from the input's first byte.

use std::alloc::{GlobalAlloc, Layout, System};

/// The largest single allocation a target may make. Inputs are at most a
/// few MB, so a bigger one means a size taken from the input unchecked.
/// libFuzzer's own `-malloc_limit_mb` needs a sanitizer's allocator; the
/// targets are built without one (`-s none`, see README.md), so this checks
/// it instead. An allocation that is reserved but never touched would not
/// show in `-rss_limit_mb`.
pub const MAX_ALLOCATION: usize = 256 << 20;

pub struct CappedAlloc;

// SAFETY: forwards to the system allocator unchanged; only refuses sizes
// over the cap, by aborting (which libFuzzer reports with the input).
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn check(size: usize) {
    if size > MAX_ALLOCATION {
        // No allocation here: write straight to stderr, then abort.
        let msg = b"strata-fuzz: single allocation over MAX_ALLOCATION (unbounded size from input?)\n";
        let _ = std::io::Write::write_all(&mut std::io::stderr(), msg);
        std::process::abort();
    }
}

#[global_allocator]
static GLOBAL: CappedAlloc = CappedAlloc;

/// Splits off the first byte as a selector over `n` variants.
pub fn pick(data: &[u8], n: usize) -> Option<(usize, &[u8])> {
    let (&first, rest) = data.split_first()?;
    Some((usize::from(first) % n, rest))
}

/// The input as text, as the parsers that take `&str` are handed it
/// (callers read files as UTF-8 first and reject what is not).
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}
