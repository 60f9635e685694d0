//! Where the time of one guided UNet step, one VAE decode or one text encoding of the full-size
//! x4 upscaler goes,
//! stage by stage (convolutions, linear layers, attention product, group norm, …), on the CPU
//! with random weights (no download). The stages are `tracing` spans (`diffsr::profile`); this
//! example installs `diffsr::profile::StageTimes` as the subscriber and reads it after the
//! timed runs.
//!
//! ```bash
//! cargo run --release --example profile_stages -- unet 64      # one guided step, 64×64 latent
//! cargo run --release --example profile_stages -- vae 32 3     # VAE decode, 3 timed runs
//! cargo run --release --example profile_stages -- text 77      # the text encoder, 2×77 tokens
//! cargo run --release --example profile_stages -- gan 128      # built-in realesr-animevideov3
//! ```

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use diffsr::models::clip_text::{ClipTextConfig, ClipTextModel};
use diffsr::models::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use diffsr::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use diffsr::profile::{self, StageTimes};
use tracing_subscriber::layer::SubscriberExt;

fn main() -> Result<()> {
    // As the `diffsr` binary does, so the figures are what its users get.
    diffsr::memory::tune_allocator(diffsr::memory::MallocMode::KeepFreedBlocks);
    let mut args = std::env::args().skip(1);
    let usage = "usage: profile_stages unet|vae|text|gan SIZE [RUNS]";
    let model = args.next().context(usage)?;
    let size: usize = args.next().context(usage)?.parse().context(usage)?;
    let runs: usize = match args.next() {
        Some(r) => r.parse().context(usage)?,
        None => 2,
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/x4-upscaler");
    let dev = Device::Cpu;
    // VarMap hands out freshly initialised variables (the layers' own init hints) by name.
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &dev);
    let run: Box<dyn Fn() -> Result<Tensor>> = match model.as_str() {
        "unet" => {
            let config = UNet2DConditionConfig::from_file(&root.join("unet_config.json"))?;
            let unet = UNet2DConditionModel::new(&config, vb)?;
            let sample = Tensor::randn(0f32, 1.0, (2, config.in_channels, size, size), &dev)?;
            // The text encoder's width (OpenCLIP ViT-H: 1024).
            let ehs = Tensor::randn(0f32, 1.0, (2, 77, 1024), &dev)?;
            let labels = Tensor::new(&[20u32, 20], &dev)?;
            Box::new(move || Ok(unet.forward(&sample, 500.0, &ehs, &labels)?))
        }
        "vae" => {
            let config = AutoencoderKLConfig::from_file(&root.join("vae_config.json"))?;
            let vae = AutoencoderKL::new(&config, vb)?;
            let latents = Tensor::randn(0f32, 1.0, (1, config.latent_channels, size, size), &dev)?;
            Box::new(move || Ok(vae.decode(&latents)?))
        }
        "text" => {
            // OpenCLIP ViT-H's text tower as the x4 upscaler ships it; SIZE is the token count
            // (77 in the pipeline), batch 2 as classifier-free guidance encodes.
            let config: ClipTextConfig = serde_json::from_value(serde_json::json!({
                "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23,
                "num_attention_heads": 16, "max_position_embeddings": 77, "hidden_act": "gelu",
                "vocab_size": 49408, "layer_norm_eps": 1e-5
            }))?;
            let model = ClipTextModel::new(&config, vb)?;
            let ids = Tensor::arange(0u32, (2 * size) as u32, &dev)?.reshape((2, size))?;
            Box::new(move || Ok(model.forward(&ids)?))
        }
        "gan" => {
            // The built-in realesr-animevideov3 on a SIZE×SIZE image, whole (no tiles).
            let model = diffsr::gan::embedded::embedded_model()?;
            let options = diffsr::gan::GanOptions {
                tile: Some(0),
                pre_pad: 0,
                ..Default::default()
            };
            let upscaler = diffsr::gan::GanUpscaler::new(&model, &options)?;
            let image = Tensor::rand(0f32, 1.0, (1, 3, size, size), &dev)?;
            Box::new(move || {
                Ok(upscaler
                    .upscale_tensor(&image, &mut |_, _| std::ops::ControlFlow::Continue(()))?)
            })
        }
        other => bail!("{other:?}: expected unet, vae, text or gan ({usage})"),
    };
    let times = StageTimes::new();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(times.layer()))?;
    run()?; // warm-up
    times.reset();
    let mut total = Duration::ZERO;
    for i in 0..runs {
        let t = Instant::now();
        run()?;
        let dt = t.elapsed();
        total += dt;
        eprintln!("run {i}: {:.3} s", dt.as_secs_f64());
    }
    println!(
        "{model} at {size}×{size}, {} threads, {runs} runs ({:.3} s each on average):\n{}",
        candle_core::utils::get_num_threads(),
        total.as_secs_f64() / runs as f64,
        profile::table(&times.totals(), total)
    );
    Ok(())
}
