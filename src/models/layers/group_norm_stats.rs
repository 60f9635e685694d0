//! Shared GroupNorm statistics for tiled decoding. A VAE decoder normalises every feature map
//! by its mean and variance per group; decoded tile by tile, each tile would use its own and
//! the tiles' tones would drift apart. Instead, one pass over a small (subsampled) copy of the
//! whole latent records every GroupNorm's statistics in call order, and the tile passes
//! replay them, so all tiles are normalised alike (the "GroupNorm estimation" of
//! pkuliyi2015's multidiffusion-upscaler Tiled VAE and StableSR's tiled decoder).
//!
//! The tape is thread-local: a forward pass runs its layers on the calling thread (candle
//! parallelises inside ops), so recording and replaying never leak into other threads' runs.

use std::cell::RefCell;

use candle_core::Tensor;

use crate::{Error, Result};

/// Per-GroupNorm (mean, variance), each (groups,), in call order.
#[derive(Debug, Clone, Default)]
pub struct GroupNormStats {
    layers: Vec<(Tensor, Tensor)>,
}

impl GroupNormStats {
    /// How many GroupNorm calls were recorded.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

enum Tape {
    Record(Vec<(Tensor, Tensor)>),
    Replay { stats: GroupNormStats, next: usize },
}

thread_local! {
    static TAPE: RefCell<Option<Tape>> = const { RefCell::new(None) };
}

/// What a GroupNorm should do with its statistics right now.
pub(crate) enum StatsMode {
    /// Compute them from the input, as usual.
    Own,
    /// Compute them from the input (batch averaged) and record them.
    Record,
    /// Use these (mean, var), each (groups,).
    Replay(Tensor, Tensor),
}

/// The mode for the next GroupNorm call (advancing the replay position).
pub(crate) fn next_mode() -> Result<StatsMode> {
    TAPE.with(|tape| match &mut *tape.borrow_mut() {
        None => Ok(StatsMode::Own),
        Some(Tape::Record(_)) => Ok(StatsMode::Record),
        Some(Tape::Replay { stats, next }) => {
            let (mean, var) = stats.layers.get(*next).cloned().ok_or_else(|| {
                Error::Tensor(candle_core::Error::Msg(format!(
                    "GroupNorm statistics replay: {} recorded, call {} asked for",
                    stats.layers.len(),
                    *next + 1
                )))
            })?;
            *next += 1;
            Ok(StatsMode::Replay(mean, var))
        }
    })
}

/// Stores one recorded (mean, var) pair.
pub(crate) fn push_recorded(mean: Tensor, var: Tensor) {
    TAPE.with(|tape| {
        if let Some(Tape::Record(layers)) = &mut *tape.borrow_mut() {
            layers.push((mean, var));
        }
    });
}

/// Resets the tape when a run ends, even by an error.
struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        TAPE.with(|tape| *tape.borrow_mut() = None);
    }
}

fn start(tape: Tape) -> Result<Guard> {
    TAPE.with(|t| {
        let mut t = t.borrow_mut();
        if t.is_some() {
            return Err(Error::Tensor(candle_core::Error::Msg(
                "GroupNorm statistics: a recording or replay is already running".into(),
            )));
        }
        *t = Some(tape);
        Ok(())
    })?;
    Ok(Guard)
}

/// Runs `f`, recording the statistics of every GroupNorm it calls.
pub fn record_group_norm_stats<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, GroupNormStats)> {
    let guard = start(Tape::Record(Vec::new()))?;
    let out = f()?;
    let layers = TAPE.with(|t| match t.borrow_mut().take() {
        Some(Tape::Record(layers)) => layers,
        _ => Vec::new(),
    });
    drop(guard);
    Ok((out, GroupNormStats { layers }))
}

/// Runs `f` with every GroupNorm using the recorded statistics, in the same call order.
pub fn with_group_norm_stats<T>(
    stats: &GroupNormStats,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let _guard = start(Tape::Replay {
        stats: stats.clone(),
        next: 0,
    })?;
    let out = f()?;
    let used = TAPE.with(|t| match &*t.borrow() {
        Some(Tape::Replay { next, .. }) => *next,
        _ => 0,
    });
    if used != stats.len() {
        return Err(Error::Tensor(candle_core::Error::Msg(format!(
            "GroupNorm statistics replay: {} recorded, {used} used (a different network?)",
            stats.len()
        ))));
    }
    Ok(out)
}
