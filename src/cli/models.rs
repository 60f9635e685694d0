//! `diffsr models pull|list|info|rm`: the hub cache; `inspect` reads a local model file.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use candle_core::DType;
use diffsr::hub::{self, HubCache, HubOptions, ModelSpec};

use super::upscale::DtypeArg;

#[derive(clap::Subcommand)]
pub enum ModelsCommand {
    /// Download what the x4 upscaler needs from a hub repo into the cache.
    Pull {
        /// Hub repo id, owner/name[@revision].
        #[arg(default_value = hub::DEFAULT_REPO)]
        repo: String,
        /// dtype the model will run in: f16 and bf16 fetch the fp16 weight variants.
        #[arg(long, value_enum, default_value = "f32")]
        dtype: DtypeArg,
        /// No progress output.
        #[arg(short, long)]
        quiet: bool,
    },
    /// List the cached repos with their size.
    List,
    /// Show a cached repo: revisions, path, files and sizes.
    Info {
        /// Hub repo id, owner/name[@revision].
        repo: String,
    },
    /// Delete a repo from the cache.
    Rm {
        /// Hub repo id, owner/name.
        repo: String,
    },
    /// What a GAN-family model file is: architecture, scale, hyper-parameters, parameters,
    /// dtype, tile overlap (read from the weights, as `upscale` detects them).
    Inspect(super::inspect::InspectArgs),
    /// The GAN-family architectures diffsr detects, with the tensors each is recognised by.
    Architectures,
}

/// Parses a hub repo argument (never a local path).
fn parse_repo(s: &str) -> Result<(String, String)> {
    match ModelSpec::parse(s)? {
        ModelSpec::Hub { repo, revision } => Ok((repo, revision)),
        ModelSpec::Dir(p) | ModelSpec::File(p) => bail!(
            "`{}` is a local path; `diffsr models` manages hub repos (owner/name)",
            p.display()
        ),
        spec @ ModelSpec::HubFile { .. } => {
            bail!("`{spec}` names a single file; `diffsr models` manages hub repos (owner/name)")
        }
    }
}

/// A progress callback for stderr: a live line on a terminal, one line per file otherwise.
pub fn progress_printer() -> hub::ProgressFn {
    let live = std::io::stderr().is_terminal();
    let last = Arc::new(Mutex::new(std::time::Instant::now()));
    Arc::new(move |p: &hub::DownloadProgress<'_>| {
        let mb = |b: u64| b as f64 / 1e6;
        if p.finished {
            if live {
                eprint!("\r\x1b[2K");
            }
            eprintln!("downloaded {} ({:.1} MB)", p.file, mb(p.total));
        } else if live {
            let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed().as_millis() >= 100 {
                *last = std::time::Instant::now();
                let pct = if p.total > 0 {
                    100.0 * p.downloaded as f64 / p.total as f64
                } else {
                    0.0
                };
                eprint!(
                    "\r\x1b[2K{} {:.1}/{:.1} MB ({pct:.0}%)",
                    p.file,
                    mb(p.downloaded),
                    mb(p.total)
                );
            }
        }
    })
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

pub fn run(command: ModelsCommand) -> Result<()> {
    match command {
        // Local files and the registry: no hub settings needed.
        ModelsCommand::Inspect(args) => super::inspect::run(args),
        ModelsCommand::Architectures => {
            super::inspect::architectures();
            Ok(())
        }
        hub_command => run_hub(hub_command),
    }
}

fn run_hub(command: ModelsCommand) -> Result<()> {
    let options = HubOptions::from_env(DType::F32)?;
    let cache = HubCache::new(options.cache_dir.clone());
    match command {
        ModelsCommand::Inspect(args) => super::inspect::run(args)?,
        ModelsCommand::Architectures => super::inspect::architectures(),
        ModelsCommand::Pull { repo, dtype, quiet } => {
            let (repo, revision) = parse_repo(&repo)?;
            let options = HubOptions {
                dtype: dtype.into(),
                refresh: true,
                progress: (!quiet).then(progress_printer),
                ..options
            };
            let snapshot = hub::pull(&repo, &revision, &options)?;
            if !quiet {
                eprintln!(
                    "{repo}@{revision}: commit {}, {} files ({} downloaded)",
                    snapshot.commit,
                    snapshot.files.len(),
                    snapshot.downloaded
                );
            }
            println!("{}", snapshot.dir.display());
        }
        ModelsCommand::List => {
            let repos = cache.list()?;
            if repos.is_empty() {
                eprintln!("no models in {}", cache.root().display());
            }
            for r in repos {
                let refs: Vec<String> = r.refs.iter().map(|(name, _)| name.clone()).collect();
                let partial = if r.partial > 0 {
                    format!(" (+{} interrupted)", human(r.partial))
                } else {
                    String::new()
                };
                println!(
                    "{}\t{}{partial}\t{}",
                    r.repo,
                    human(r.size),
                    if refs.is_empty() {
                        "-".to_string()
                    } else {
                        refs.join(",")
                    }
                );
            }
        }
        ModelsCommand::Info { repo } => {
            let (repo, revision) = parse_repo(&repo)?;
            let Some(cached) = cache.get(&repo) else {
                bail!(
                    "{repo} is not in the cache ({}); `diffsr models pull {repo}` downloads it",
                    cache.root().display()
                );
            };
            println!("repo: {}", cached.repo);
            println!("path: {}", cached.dir.display());
            println!("size: {}", human(cached.size));
            if cached.partial > 0 {
                println!(
                    "interrupted downloads: {} (resumed by the next pull)",
                    human(cached.partial)
                );
            }
            for (name, commit) in &cached.refs {
                println!("revision: {name} -> {commit}");
            }
            let (commit, dir) = cache
                .snapshot(&repo, &revision)
                .with_context(|| format!("{repo}: revision `{revision}` is not in the cache"))?;
            println!("snapshot: {commit} {}", dir.display());
            for (file, len) in hub::snapshot_files(&dir) {
                println!("  {file}\t{}", human(len));
            }
        }
        ModelsCommand::Rm { repo } => {
            let (repo, _) = parse_repo(&repo)?;
            if cache.remove(&repo)? {
                eprintln!("removed {repo} from {}", cache.root().display());
            } else {
                bail!("{repo} is not in the cache ({})", cache.root().display());
            }
        }
    }
    Ok(())
}
