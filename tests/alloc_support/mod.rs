//! A counting global allocator, for the tests that prove a path allocates
//! nothing. Use it from an integration test with `mod alloc_support;`: it
//! installs itself as the test binary's global allocator, and
//! [`allocations`] reads how many allocations the process has made so far
//! (all threads).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// The system allocator, counting its allocations.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by the process so far.
pub fn allocations() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

/// Panics unless the counting allocator is the one in use: a test counting
/// with another allocator in place would pass whatever the code does.
pub fn assert_counting() {
    let before = allocations();
    drop(std::hint::black_box(Box::new(0u64)));
    assert!(
        allocations() > before,
        "the counting allocator is not installed"
    );
}
