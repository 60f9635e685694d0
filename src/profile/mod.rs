//! Where a run's time goes, as `tracing` spans (the approach of candle-transformers'
//! `with_tracing` and text-embeddings-inference): each model stage (convolution, linear layers,
//! attention product, normalisations, activations, resampling) is a TRACE span with target
//! [`STAGE_TARGET`] named after the stage ([`Stage::span_name`]), and each pipeline phase (text
//! encoder, UNet step, VAE decode, GAN network) one with target [`PHASE_TARGET`].
//!
//! The library only opens spans; whoever runs it decides what to do with them. With no
//! subscriber (the default) a span costs one check of a cached callsite interest. Any `tracing`
//! subscriber sees them (a flame graph, a log); with the `profiling` feature,
//! [`StageTimes`] is a `tracing_subscriber` layer that sums each stage's time and calls for
//! [`table`], as `diffsr upscale --profile` prints. Install it as the global default: the
//! engines run their work on thread-pool threads, which do not see a thread's scoped default.
//!
//! On the CPU candle runs every op eagerly and synchronously, so the time between a stage
//! span's entry and exit is that stage's own work; on GPUs launches are asynchronous and the
//! figures mean little. Stage spans are placed at the leaves (a linear layer inside an
//! attention is counted as `linear`, the attention product as `attention`), so stages never
//! overlap, and the rest of a run (residual adds, reshapes and copies between layers) is the
//! difference between the run's time and the stages' sum. Phases enclose stages.

#[cfg(feature = "profiling")]
mod collector;

use std::time::Duration;

#[cfg(feature = "profiling")]
pub use collector::{StageLayer, StageTimes};

/// The `tracing` target of the stage spans.
pub const STAGE_TARGET: &str = "diffsr::stage";
/// The `tracing` target of the pipeline phase spans.
pub const PHASE_TARGET: &str = "diffsr::phase";

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

    /// The stage as the profile table names it.
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

    /// The name of the stage's spans.
    pub fn span_name(self) -> &'static str {
        match self {
            Stage::Conv => "conv",
            Stage::Linear => "linear",
            Stage::Attention => "attention",
            Stage::GroupNorm => "group_norm",
            Stage::LayerNorm => "layer_norm",
            Stage::Activation => "activation",
            Stage::Resample => "resample",
        }
    }

    /// The stage whose spans are named `name`.
    pub fn from_span_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.span_name() == name)
    }
}

/// The phases of a pipeline run, which enclose the stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The text encoder over the prompts.
    TextEncoder,
    /// One guided UNet prediction of a denoising step (all its tiles).
    UnetStep,
    /// The VAE decode of the latents (all its tiles).
    VaeDecode,
    /// The GAN network on one tile (or the whole image).
    GanNetwork,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::TextEncoder,
        Phase::UnetStep,
        Phase::VaeDecode,
        Phase::GanNetwork,
    ];

    /// The phase as the profile table names it.
    pub fn name(self) -> &'static str {
        match self {
            Phase::TextEncoder => "text encoder",
            Phase::UnetStep => "UNet step",
            Phase::VaeDecode => "VAE decode",
            Phase::GanNetwork => "GAN network",
        }
    }

    /// The name of the phase's spans.
    pub fn span_name(self) -> &'static str {
        match self {
            Phase::TextEncoder => "text_encoder",
            Phase::UnetStep => "unet_step",
            Phase::VaeDecode => "vae_decode",
            Phase::GanNetwork => "gan_network",
        }
    }

    /// The phase whose spans are named `name`.
    pub fn from_span_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.span_name() == name)
    }
}

/// An entered span: the stage or phase lasts until it is dropped.
#[must_use = "the span closes when this is dropped"]
pub struct Scope(#[allow(dead_code)] tracing::span::EnteredSpan);

/// Enters a span of `stage` (one callsite per stage, so a subscriber can tell them apart
/// without reading fields).
#[inline]
pub fn scope(stage: Stage) -> Scope {
    let span = match stage {
        Stage::Conv => tracing::trace_span!(target: "diffsr::stage", "conv"),
        Stage::Linear => tracing::trace_span!(target: "diffsr::stage", "linear"),
        Stage::Attention => tracing::trace_span!(target: "diffsr::stage", "attention"),
        Stage::GroupNorm => tracing::trace_span!(target: "diffsr::stage", "group_norm"),
        Stage::LayerNorm => tracing::trace_span!(target: "diffsr::stage", "layer_norm"),
        Stage::Activation => tracing::trace_span!(target: "diffsr::stage", "activation"),
        Stage::Resample => tracing::trace_span!(target: "diffsr::stage", "resample"),
    };
    Scope(span.entered())
}

/// Runs `f` inside a span of `stage`.
#[inline]
pub fn time<T>(stage: Stage, f: impl FnOnce() -> T) -> T {
    let _scope = scope(stage);
    f()
}

/// Enters a span of `phase`.
#[inline]
pub fn phase(phase: Phase) -> Scope {
    let span = match phase {
        Phase::TextEncoder => tracing::trace_span!(target: "diffsr::phase", "text_encoder"),
        Phase::UnetStep => tracing::trace_span!(target: "diffsr::phase", "unet_step"),
        Phase::VaeDecode => tracing::trace_span!(target: "diffsr::phase", "vae_decode"),
        Phase::GanNetwork => tracing::trace_span!(target: "diffsr::phase", "gan_network"),
    };
    Scope(span.entered())
}

/// One stage's totals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageTotal {
    pub stage: Stage,
    pub time: Duration,
    pub calls: u64,
}

/// One phase's totals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhaseTotal {
    pub phase: Phase,
    pub time: Duration,
    pub calls: u64,
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

/// A Markdown table of the phases that ran, against a run of `wall`.
pub fn phase_table(totals: &[PhaseTotal], wall: Duration) -> String {
    let wall_s = wall.as_secs_f64().max(f64::MIN_POSITIVE);
    let mut s = String::from("| phase | time | share | calls |\n|---|---|---|---|\n");
    for t in totals.iter().filter(|t| t.calls > 0) {
        let secs = t.time.as_secs_f64();
        s.push_str(&format!(
            "| {} | {:.3} s | {:.1} % | {} |\n",
            t.phase.name(),
            secs,
            100.0 * secs / wall_s,
            t.calls
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_names_round_trip_and_the_table_accounts_for_the_rest() {
        for stage in Stage::ALL {
            assert_eq!(Stage::from_span_name(stage.span_name()), Some(stage));
        }
        for phase in Phase::ALL {
            assert_eq!(Phase::from_span_name(phase.span_name()), Some(phase));
        }
        // No subscriber: spans are inert.
        assert_eq!(time(Stage::Conv, || 7), 7);
        let totals = [
            StageTotal {
                stage: Stage::Conv,
                time: Duration::from_millis(5),
                calls: 1,
            },
            StageTotal {
                stage: Stage::Linear,
                time: Duration::ZERO,
                calls: 0,
            },
        ];
        let md = table(&totals, Duration::from_millis(20));
        assert!(md.contains("| convolution |"), "{md}");
        assert!(
            !md.contains("| linear |"),
            "stages without calls are listed: {md}"
        );
        assert!(md.contains("other"), "{md}");
    }
}
