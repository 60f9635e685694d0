//! `diffsr info`: the generation parameters a PNG written by `diffsr upscale` carries, shown
//! with the control characters a crafted file may hold escaped.

use std::path::PathBuf;

use anyhow::{bail, Result};
use diffsr::image_io::{read_png_text, GenerationInfo};
use diffsr::text_escape;

#[derive(clap::Args)]
pub struct InfoArgs {
    /// A PNG written by `diffsr upscale`.
    image: PathBuf,
    /// Print the parameters as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(args: InfoArgs) -> Result<()> {
    let texts = read_png_text(&args.image)?;
    let Some(info) = GenerationInfo::from_texts(&args.image, &texts)? else {
        bail!(
            "{}: no diffsr parameters (it was not written by `diffsr upscale`, or its text \
             chunks were stripped)",
            text_escape::path(&args.image)
        );
    };
    if args.json {
        // JSON's escapes keep the text exact and the terminal safe.
        println!("{}", text_escape::to_json_pretty(&info)?);
        return Ok(());
    }
    let mut rows: Vec<(&str, String)> = vec![
        ("engine", info.engine.clone()),
        ("model", info.model.clone()),
        (
            "revision",
            info.revision.clone().unwrap_or_else(|| "-".into()),
        ),
    ];
    if info.engine != "gan" {
        rows.extend([
            ("prompt", info.prompt.clone()),
            ("negative prompt", info.negative_prompt.clone()),
            ("seed", info.seed.to_string()),
            ("steps", info.steps.to_string()),
            ("scheduler", info.scheduler.clone()),
            ("guidance", info.guidance.to_string()),
            ("noise level", info.noise_level.to_string()),
            ("eta", info.eta.to_string()),
        ]);
    }
    rows.push((
        "scale",
        info.scale
            .map_or_else(|| "model's own".into(), |s| s.to_string()),
    ));
    rows.push(("diffsr", info.diffsr_version.clone()));
    // The values come from the file: control characters are shown escaped, and a newline as
    // `\n`, so each field stays on its row.
    for (key, value) in rows {
        println!("{key:<16} {}", text_escape::text(&value));
    }
    Ok(())
}
