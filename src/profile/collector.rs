//! [`StageTimes`]: a `tracing_subscriber` layer that sums the time and calls of the stage and
//! phase spans ([`super::scope`], [`super::phase`]) into counters its owner reads. No global
//! state: the counters live in the value, shared by its clones and the layer it hands out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::{Phase, PhaseTotal, Stage, StageTotal, PHASE_TARGET, STAGE_TARGET};

const STAGES: usize = Stage::ALL.len();
const PHASES: usize = Phase::ALL.len();

#[derive(Default)]
struct Counters {
    nanos: [AtomicU64; STAGES + PHASES],
    calls: [AtomicU64; STAGES + PHASES],
}

/// Per-stage (and per-phase) time and calls, summed from the spans a run opens while
/// [`Self::layer`] is part of the subscriber. Clones share the counters.
///
/// ```no_run
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let times = diffsr::profile::StageTimes::new();
/// let subscriber = tracing_subscriber::registry().with(times.layer());
/// tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
/// // ... run an upscale ...
/// # let wall = std::time::Duration::from_secs(1);
/// eprintln!("{}", diffsr::profile::table(&times.totals(), wall));
/// ```
#[derive(Clone, Default)]
pub struct StageTimes {
    counters: Arc<Counters>,
}

impl std::fmt::Debug for StageTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageTimes")
            .field("stages", &self.totals())
            .field("phases", &self.phases())
            .finish()
    }
}

impl StageTimes {
    pub fn new() -> Self {
        Self::default()
    }

    /// The layer that feeds these counters.
    pub fn layer(&self) -> StageLayer {
        StageLayer {
            counters: Arc::clone(&self.counters),
        }
    }

    /// Every stage's totals, in [`Stage::ALL`] order.
    pub fn totals(&self) -> Vec<StageTotal> {
        Stage::ALL
            .iter()
            .enumerate()
            .map(|(i, &stage)| {
                let (time, calls) = self.read(i);
                StageTotal { stage, time, calls }
            })
            .collect()
    }

    /// Every phase's totals, in [`Phase::ALL`] order.
    pub fn phases(&self) -> Vec<PhaseTotal> {
        Phase::ALL
            .iter()
            .enumerate()
            .map(|(i, &phase)| {
                let (time, calls) = self.read(STAGES + i);
                PhaseTotal { phase, time, calls }
            })
            .collect()
    }

    /// Zeroes every counter.
    pub fn reset(&self) {
        for i in 0..STAGES + PHASES {
            self.counters.nanos[i].store(0, Ordering::Relaxed);
            self.counters.calls[i].store(0, Ordering::Relaxed);
        }
    }

    fn read(&self, i: usize) -> (Duration, u64) {
        (
            Duration::from_nanos(self.counters.nanos[i].load(Ordering::Relaxed)),
            self.counters.calls[i].load(Ordering::Relaxed),
        )
    }
}

/// Which counter a span feeds, and when it was entered.
struct Timing {
    slot: usize,
    entered: Option<Instant>,
}

/// The `tracing_subscriber` layer of a [`StageTimes`]; spans of other targets pass untouched.
pub struct StageLayer {
    counters: Arc<Counters>,
}

impl<S> Layer<S> for StageLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        let slot = match meta.target() {
            STAGE_TARGET => Stage::from_span_name(meta.name()).map(|s| s as usize),
            PHASE_TARGET => Phase::from_span_name(meta.name()).map(|p| STAGES + p as usize),
            _ => None,
        };
        if let (Some(slot), Some(span)) = (slot, ctx.span(id)) {
            span.extensions_mut().insert(Timing {
                slot,
                entered: None,
            });
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(timing) = span.extensions_mut().get_mut::<Timing>() {
                timing.entered = Some(Instant::now());
            }
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(timing) = span.extensions_mut().get_mut::<Timing>() {
                if let Some(start) = timing.entered.take() {
                    let ns = start.elapsed().as_nanos().min(u64::MAX as u128) as u64;
                    self.counters.nanos[timing.slot].fetch_add(ns, Ordering::Relaxed);
                    self.counters.calls[timing.slot].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
