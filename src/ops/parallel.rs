//! Data-parallel loops for the CPU ops, on rayon's pool when kernels may use several threads
//! and inline on one. `run --jobs N` trains N runs at once with one thread each; routed
//! through a one-thread pool, their loops would queue on a single shared worker and pay a
//! thread wake-up per call.

use rayon::prelude::*;

fn parallel() -> bool {
    candle_core::utils::get_num_threads() > 1
}

/// `f(index, chunk)` for each `size`-long chunk of `data`.
pub fn for_each_chunk_mut<T: Send>(
    data: &mut [T],
    size: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let size = size.max(1);
    if parallel() {
        data.par_chunks_mut(size)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    } else {
        data.chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// `[f(0), f(1), …, f(n − 1)]`, in order.
pub fn map_indices<R: Send>(n: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    if parallel() {
        (0..n).into_par_iter().map(&f).collect()
    } else {
        (0..n).map(f).collect()
    }
}

/// `[f(item) for each item]`, in the items' order.
pub fn map_items<I: Send, R: Send>(items: Vec<I>, f: impl Fn(I) -> R + Sync + Send) -> Vec<R> {
    if parallel() {
        items.into_par_iter().map(f).collect()
    } else {
        items.into_iter().map(f).collect()
    }
}
