//! The allocator every binary of the project uses, and the one setting it needs.
//!
//! Training allocates and frees many large, short-lived buffers (batches, activations,
//! gradients, im2col columns) from several threads. glibc's `malloc` returns such blocks to the
//! kernel and maps them again on every batch; mimalloc keeps small blocks but, by default,
//! still returns ("purges") freed memory to the kernel after a delay, so a training step of a
//! few seconds finds its buffers unmapped again and zero-fills them page by page (`perf`:
//! `clear_page_erms`). [`keep_freed_memory`] turns purging off: the process keeps its peak
//! footprint, which a training run reaches on its first step anyway.
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: deeprecog::alloc::MiMalloc = deeprecog::alloc::MiMalloc;
//!
//! fn main() {
//!     deeprecog::alloc::keep_freed_memory();
//!     // ...
//! }
//! ```

pub use mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (the same index in its v2 and v3 option enums).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never return freed memory to the operating system (mimalloc's `purge_delay = -1`, the
/// `MIMALLOC_PURGE_DELAY=-1` environment variable). Only has an effect when [`MiMalloc`] is the
/// global allocator; call it first thing in `main`.
pub fn keep_freed_memory() {
    // SAFETY: mi_option_set only stores an integer in mimalloc's option table; it is
    // thread-safe and valid at any time, whether or not mimalloc is the global allocator.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, -1);
    }
}
