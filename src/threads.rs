//! The thread pool an engine runs its CPU work in. An engine given a pool
//! ([`crate::pipeline::LoadOptions::threads`], [`crate::gan::GanOptions::threads`]) runs its
//! loading and each model pass under [`rayon::ThreadPool::install`], so candle's kernels and the
//! project's own split their work over that pool's threads; without one, rayon's global pool is
//! used. Nothing here reads or sets an environment variable.

use std::sync::Arc;

use rayon::ThreadPool;

use crate::error::{Error, Result};

/// The most threads [`pool`] starts: four times the hardware threads
/// ([`std::thread::available_parallelism`]), 256 where that is unknown. More only add
/// scheduling overhead to work that is split per core, and a mistyped count (100000) would
/// spend its time starting threads instead of failing.
pub fn max_threads() -> usize {
    std::thread::available_parallelism().map_or(256, |n| 4 * n.get())
}

/// A pool of `threads` threads, to share between engines; at most [`max_threads`].
pub fn pool(threads: usize) -> Result<Arc<ThreadPool>> {
    if threads == 0 {
        return Err(Error::option("threads", "must be at least 1"));
    }
    let max = max_threads();
    if threads > max {
        let cores = std::thread::available_parallelism().map_or_else(
            |_| "an unknown number of".to_string(),
            |n| n.get().to_string(),
        );
        return Err(Error::option(
            "threads",
            format!(
                "{threads} is too many: at most {max} (four times the {cores} hardware threads \
                 here; 256 where that is unknown)"
            ),
        ));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("diffsr-{i}"))
        .build()
        .map(Arc::new)
        .map_err(|e| Error::option("threads", format!("cannot start {threads} threads: {e}")))
}

/// Runs `work` in `pool`, or on the calling thread (rayon's global pool) without one.
pub(crate) fn install<R: Send>(pool: Option<&ThreadPool>, work: impl FnOnce() -> R + Send) -> R {
    match pool {
        Some(pool) => pool.install(work),
        None => work(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_runs_in_the_pool_given() {
        let pool = pool(2).unwrap();
        let (threads, name) = install(Some(&pool), || {
            (
                rayon::current_num_threads(),
                std::thread::current().name().map(str::to_string),
            )
        });
        assert_eq!(threads, 2);
        assert!(name.is_some_and(|n| n.starts_with("diffsr-")));
        assert!(super::pool(0).is_err());
        assert!(super::pool(max_threads() + 1).is_err());
    }
}
