//! `--engine` of `diffsr upscale`: the flag, and the lines that say which engine runs. The
//! choice, the loading and the fallback are the library's [`diffsr::engine::select`].

use anyhow::Result;
use clap::ValueEnum;
use diffsr::engine::{select, EngineChoice, EngineConfig, SelectedEngine};
use diffsr::gan::embedded::EMBEDDED_NAME;
use diffsr::text_escape;
use diffsr::upscaler::Engine;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    /// Diffusion when its model is available or downloadable, else the GAN path.
    Auto,
    /// The latent-diffusion upscaler only.
    Diffusion,
    /// A Real-ESRGAN-family model (the built-in one unless --model names a file).
    Gan,
}

impl From<EngineArg> for EngineChoice {
    fn from(arg: EngineArg) -> Self {
        match arg {
            EngineArg::Auto => Self::Auto,
            EngineArg::Diffusion => Self::Diffusion,
            EngineArg::Gan => Self::Gan,
        }
    }
}

/// Loads the engine, printing the fallback warning (always) and the GAN engine's line (unless
/// `quiet`).
pub fn load_engine(config: &EngineConfig, quiet: bool) -> Result<SelectedEngine> {
    let selected = match select(config) {
        Ok(selected) => selected,
        Err(diffsr::Error::FallbackFailed { reason, cause }) => {
            warn_fallback(&reason);
            return Err((*cause).into());
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(reason) = &selected.fallback_reason {
        warn_fallback(reason);
    }
    if !quiet && selected.engine() == Engine::Gan {
        // The description names the model file, whose name may hold anything.
        eprintln!(
            "engine: gan, {}",
            text_escape::text(&selected.upscaler.describe())
        );
    }
    Ok(selected)
}

fn warn_fallback(reason: &str) {
    let reason = text_escape::message(reason);
    eprintln!(
        "warning: diffusion cannot run ({reason}); falling back to the GAN engine \
         ({EMBEDDED_NAME}); use --engine diffusion to make this an error"
    );
}
