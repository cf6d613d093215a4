//! Test-only global allocator that records, per thread, the largest single allocation: the
//! parser property tests use it to show that no header makes a parser allocate more than the
//! input justifies. (Unit tests only; the binary keeps mimalloc.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    // `const` initialiser, no destructor: reading it never allocates, so the allocator may use it.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

struct Probe;

// SAFETY: forwards every call to `System` unchanged; only records sizes on the side.
unsafe impl GlobalAlloc for Probe {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Probe = Probe;

fn record(size: usize) {
    // `try_with`: during thread teardown the slot may be gone; then nothing is recorded.
    let _ = LARGEST.try_with(|c| {
        if size > c.get() {
            c.set(size);
        }
    });
}

/// Runs `f` and returns its result with the largest single allocation this thread made in it.
pub(crate) fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LARGEST.with(|c| c.replace(0));
    let out = f();
    let largest = LARGEST.with(|c| c.replace(before.max(c.get())));
    (out, largest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_a_large_allocation() {
        let (v, largest) = largest_allocation(|| vec![0u8; 1 << 20]);
        assert_eq!(v.len(), 1 << 20);
        assert!(largest >= 1 << 20);
        let ((), small) = largest_allocation(|| {});
        assert!(small < 1 << 20);
    }
}
