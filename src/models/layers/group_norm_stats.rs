//! Shared GroupNorm statistics for tiled decoding. A VAE decoder normalises every feature map
//! by its mean and variance per group; decoded tile by tile, each tile would use its own and
//! the tiles' tones would drift apart. Instead, one pass over a small (subsampled) copy of the
//! whole latent records every GroupNorm's statistics in call order, and the tile passes
//! replay them, so all tiles are normalised alike (the "GroupNorm estimation" of
//! pkuliyi2015's multidiffusion-upscaler Tiled VAE and StableSR's tiled decoder).
//!
//! The statistics travel as an explicit value: a forward pass that records or replays takes a
//! [`GroupNormMode`] and hands it to each of its GroupNorms in turn.

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

/// What the GroupNorms of one forward pass do with their statistics.
#[derive(Debug)]
pub enum GroupNormMode<'a> {
    /// Each computes its own from its input (the usual forward).
    Own,
    /// Each computes its own and appends the batch-averaged (mean, variance) to the tape.
    Record(&'a mut GroupNormStats),
    /// Each uses the next recorded pair instead of its own.
    Replay(Replay<'a>),
}

/// A replay's tape and position.
#[derive(Debug)]
pub struct Replay<'a> {
    stats: &'a GroupNormStats,
    next: usize,
}

/// What one GroupNorm call does, as its [`GroupNormMode`] says.
pub(crate) enum StatsStep {
    /// Compute the statistics from the input (and, with `record`, append them).
    Compute { record: bool },
    /// Use this (mean, var), each (groups,).
    Replay(Tensor, Tensor),
}

impl<'a> GroupNormMode<'a> {
    /// Records into `stats` (appending to what it holds).
    pub fn record(stats: &'a mut GroupNormStats) -> Self {
        Self::Record(stats)
    }

    /// Replays `stats` from its first pair.
    pub fn replay(stats: &'a GroupNormStats) -> Self {
        Self::Replay(Replay { stats, next: 0 })
    }

    /// Whether the GroupNorms compute their own statistics without recording them.
    pub(crate) fn is_own(&self) -> bool {
        matches!(self, Self::Own)
    }

    /// The next GroupNorm call's step (advancing a replay).
    pub(crate) fn step(&mut self) -> Result<StatsStep> {
        match self {
            Self::Own => Ok(StatsStep::Compute { record: false }),
            Self::Record(_) => Ok(StatsStep::Compute { record: true }),
            Self::Replay(Replay { stats, next }) => {
                let (mean, var) = stats.layers.get(*next).cloned().ok_or_else(|| {
                    Error::Tensor(candle_core::Error::Msg(format!(
                        "GroupNorm statistics replay: {} recorded, call {} asked for",
                        stats.layers.len(),
                        *next + 1
                    )))
                })?;
                *next += 1;
                Ok(StatsStep::Replay(mean, var))
            }
        }
    }

    /// Appends one recorded (mean, var) pair when recording.
    pub(crate) fn push(&mut self, mean: Tensor, var: Tensor) {
        if let Self::Record(stats) = self {
            stats.layers.push((mean, var));
        }
    }

    /// Checks, after a forward pass, that a replay used every recorded pair: fewer means the
    /// statistics came from a different network.
    pub fn finish(&self) -> Result<()> {
        match self {
            Self::Replay(Replay { stats, next }) if *next != stats.len() => {
                Err(Error::Tensor(candle_core::Error::Msg(format!(
                    "GroupNorm statistics replay: {} recorded, {next} used (a different network?)",
                    stats.len()
                ))))
            }
            _ => Ok(()),
        }
    }
}
