//! The `diffsr` command line.

mod cli;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use diffsr::memory::MallocMode;

#[derive(Parser)]
#[command(
    name = "diffsr",
    version,
    about = "Super-resolution: Stable Diffusion x4 upscaling and Real-ESRGAN"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the `upscale` arguments costs nothing worth boxing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Upscale images with the latent-diffusion upscaler or a Real-ESRGAN-family model.
    Upscale(cli::upscale::UpscaleArgs),
    /// Write a GAN model file (.pth, ncnn .param/.bin, safetensors) as safetensors.
    Convert(cli::convert::ConvertArgs),
    /// List the denoising solvers.
    Schedulers,
    /// Print a solver's timesteps and sigmas for a config and step count.
    Schedule(cli::schedule::ScheduleArgs),
    /// Print the generation parameters stored in a PNG written by `diffsr upscale`.
    Info(cli::info::InfoArgs),
    /// Time one stage (UNet step, VAE decode, GAN, whole upscale) on a device, random weights.
    Bench(cli::bench::BenchArgs),
    /// Manage hub models in the cache: pull, list, info, rm.
    #[command(subcommand)]
    Models(cli::models::ModelsCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any model loads: freed tensor buffers are kept for reuse (see the function);
    // `DIFFSR_MALLOC=system` leaves malloc alone.
    let malloc = match std::env::var("DIFFSR_MALLOC") {
        Ok(v) if v == "system" => MallocMode::System,
        _ => MallocMode::KeepFreedBlocks,
    };
    diffsr::memory::tune_allocator(malloc);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, each cause once, escaped, without a backtrace.
            eprintln!("error: {}", cli::error_text::error_text(&e));
            match e.downcast_ref::<cli::Exit>() {
                Some(exit) => ExitCode::from(exit.code),
                None => ExitCode::FAILURE,
            }
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Upscale(args) => cli::upscale::run(args),
        Command::Convert(args) => cli::convert::run(args),
        Command::Schedulers => {
            cli::schedule::list();
            Ok(())
        }
        Command::Schedule(args) => cli::schedule::run(args),
        Command::Models(command) => cli::models::run(command),
        Command::Info(args) => cli::info::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "diffsr", &mut std::io::stdout());
            Ok(())
        }
    }
}
