//! An opt-in wall-clock profile of the models by stage (convolution, linear layers, attention
//! core, normalisations, activations, resampling), to find where a UNet step or a VAE decode
//! spends its time.
//!
//! Off by default, when a scope costs one relaxed atomic load. When on ([`enable`], or the
//! `DIFFSR_PROFILE` environment variable read once), every [`scope`] adds its elapsed time and
//! one call to its stage's counters. On the CPU candle runs every op eagerly and
//! synchronously, so the time between a scope's start and its end is that stage's own work;
//! on GPUs launches are asynchronous and the figures mean little. Scopes are placed at the
//! leaves (a linear layer inside an attention is counted as `linear`, the attention product as
//! `attention`), so stages never overlap, and the rest of a run (residual adds, reshapes and
//! copies between layers) is the difference between the run's time and the stages' sum.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// The stages a model's work is split into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// 2-D convolutions (3×3 and 1×1).
    Conv,
    /// Linear layers: attention projections, feed-forward, time and text projections.
    Linear,
    /// The attention product itself: softmax(q kᵀ) v, head split and merge.
    Attention,
    /// GroupNorm, with its fused SiLU when there is one.
    GroupNorm,
    /// LayerNorm.
    LayerNorm,
    /// Stand-alone activations (GEGLU gate, SiLU of embeddings, quick-GELU).
    Activation,
    /// Nearest up-sampling and strided down-sampling.
    Resample,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Conv,
        Stage::Linear,
        Stage::Attention,
        Stage::GroupNorm,
        Stage::LayerNorm,
        Stage::Activation,
        Stage::Resample,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Conv => "convolution",
            Stage::Linear => "linear",
            Stage::Attention => "attention product",
            Stage::GroupNorm => "group norm (+SiLU)",
            Stage::LayerNorm => "layer norm",
            Stage::Activation => "activation",
            Stage::Resample => "up/down-sampling",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

const N: usize = Stage::ALL.len();

/// 0: not decided yet (read the environment), 1: off, 2: on.
static STATE: AtomicU8 = AtomicU8::new(0);
static NANOS: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
static CALLS: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];

/// Turns profiling on or off for the whole process.
pub fn enable(on: bool) {
    STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// Whether scopes record.
pub fn enabled() -> bool {
    let state = match STATE.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var_os("DIFFSR_PROFILE").is_some_and(|v| !v.is_empty() && v != "0");
            // A racing `enable` wins over the environment.
            let _ = STATE.compare_exchange(
                0,
                if on { 2 } else { 1 },
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            STATE.load(Ordering::Relaxed)
        }
        s => s,
    };
    state == 2
}

/// Records the time until it is dropped against its stage.
pub struct Scope {
    stage: Stage,
    start: Instant,
}

impl Drop for Scope {
    fn drop(&mut self) {
        let i = self.stage.index();
        let ns = self.start.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        NANOS[i].fetch_add(ns, Ordering::Relaxed);
        CALLS[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// A timing scope for `stage`, or `None` when profiling is off.
#[inline]
pub fn scope(stage: Stage) -> Option<Scope> {
    enabled().then(|| Scope {
        stage,
        start: Instant::now(),
    })
}

/// Runs `f` inside a scope of `stage`.
#[inline]
pub fn time<T>(stage: Stage, f: impl FnOnce() -> T) -> T {
    let _scope = scope(stage);
    f()
}

/// One stage's totals since the last [`reset`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageTotal {
    pub stage: Stage,
    pub time: Duration,
    pub calls: u64,
}

/// Every stage's totals since the last [`reset`], in [`Stage::ALL`] order.
pub fn totals() -> Vec<StageTotal> {
    Stage::ALL
        .iter()
        .map(|&stage| StageTotal {
            stage,
            time: Duration::from_nanos(NANOS[stage.index()].load(Ordering::Relaxed)),
            calls: CALLS[stage.index()].load(Ordering::Relaxed),
        })
        .collect()
}

/// Zeroes every counter.
pub fn reset() {
    for i in 0..N {
        NANOS[i].store(0, Ordering::Relaxed);
        CALLS[i].store(0, Ordering::Relaxed);
    }
}

/// A Markdown table of `totals` against a run of `wall` (the time of the runs they were
/// collected over), with the unaccounted rest as "other".
pub fn table(totals: &[StageTotal], wall: Duration) -> String {
    let wall_s = wall.as_secs_f64().max(f64::MIN_POSITIVE);
    let mut s = String::from("| stage | time | share | calls |\n|---|---|---|---|\n");
    let mut sum = 0.0;
    for t in totals.iter().filter(|t| t.calls > 0) {
        let secs = t.time.as_secs_f64();
        sum += secs;
        s.push_str(&format!(
            "| {} | {:.3} s | {:.1} % | {} |\n",
            t.stage.name(),
            secs,
            100.0 * secs / wall_s,
            t.calls
        ));
    }
    let other = (wall_s - sum).max(0.0);
    s.push_str(&format!(
        "| other (adds, copies, reshapes) | {:.3} s | {:.1} % | |\n",
        other,
        100.0 * other / wall_s
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_record_only_when_enabled_and_table_accounts_for_the_rest() {
        enable(false);
        reset();
        time(Stage::Conv, || std::thread::sleep(Duration::from_millis(2)));
        assert_eq!(totals()[0].calls, 0, "a disabled scope recorded");

        enable(true);
        time(Stage::Conv, || std::thread::sleep(Duration::from_millis(5)));
        time(Stage::GroupNorm, || ());
        let t = totals();
        enable(false);
        assert_eq!(t[Stage::Conv.index()].calls, 1);
        assert!(t[Stage::Conv.index()].time >= Duration::from_millis(5));
        assert_eq!(t[Stage::GroupNorm.index()].calls, 1);
        assert_eq!(t[Stage::Linear.index()].calls, 0);

        let md = table(&t, Duration::from_millis(20));
        assert!(md.contains("| convolution |"), "{md}");
        assert!(
            !md.contains("| linear |"),
            "stages without calls are listed: {md}"
        );
        assert!(md.contains("other"), "{md}");
        reset();
        assert!(totals().iter().all(|t| t.calls == 0));
    }
}
