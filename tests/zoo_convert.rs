//! `diffsr convert` (`GanModel::save_safetensors`) on every model file of the zoo's fixtures:
//! the safetensors it writes is detected as the same architecture with the same weights
//! (`keep`), or the same weights rounded to f16 with integer buffers untouched (`f16`).

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::DType;
use diffsr::gan::GanModel;

fn zoo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/zoo")
}

/// Fixture files stored without the buffers their detection reads, to keep the repository small
/// (their own tests put zero buffers of the right shapes back before loading).
const STRIPPED: [&str; 1] = ["drct_w16_x2.safetensors"];

/// The model files among the fixtures: every .pth, and every .safetensors but the references
/// (`<arch>.safetensors`, `<arch>_ncnn.safetensors`, which hold inputs and outputs) and the
/// [`STRIPPED`] ones.
fn model_files() -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for arch in std::fs::read_dir(zoo())? {
        let dir = arch?.path();
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            let reference = stem == name || stem.starts_with(&format!("{name}_ncnn"));
            let stripped = STRIPPED.iter().any(|s| path.ends_with(s));
            if !stripped && (ext == "pth" || (ext == "safetensors" && !reference)) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn max_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> Result<f32> {
    let (a, b) = (a.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?);
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

fn round_trip(file: &Path, dir: &Path, dtype: Option<DType>) -> Result<()> {
    let model = GanModel::load(file)?;
    let out = dir.join(format!(
        "{}-{}.safetensors",
        file.file_stem().and_then(|s| s.to_str()).unwrap_or("m"),
        dtype.map_or("keep".to_string(), |d| format!("{d:?}"))
    ));
    model.save_safetensors(&out, dtype)?;
    let again = GanModel::load(&out).with_context(|| format!("reloading {}", out.display()))?;
    ensure!(
        again.arch() == model.arch(),
        "{}: {:?} became {:?}",
        file.display(),
        model.arch(),
        again.arch()
    );
    ensure!(
        again.weights().len() == model.weights().len(),
        "{}: tensor count",
        file.display()
    );
    for (name, t) in model.weights() {
        let u = again.weights().get(name).context(name.clone())?;
        ensure!(u.dims() == t.dims(), "{name}: shape");
        if !t.dtype().is_float() || name.starts_with("diffsr.") || dtype.is_none() {
            ensure!(
                u.dtype() == t.dtype(),
                "{}: {name} changed dtype",
                file.display()
            );
            ensure!(max_diff(t, u)? == 0.0, "{}: {name} changed", file.display());
        } else {
            ensure!(u.dtype() == DType::F16, "{name}: not f16");
            let tol = 1e-3 * max_diff(t, &t.zeros_like()?)?.max(1.0);
            ensure!(
                max_diff(t, u)? <= tol,
                "{}: {name} rounded too far",
                file.display()
            );
        }
    }
    Ok(())
}

#[test]
fn every_zoo_model_converts_to_safetensors_and_back() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("diffsr-zoo-convert-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let files = model_files()?;
    ensure!(
        files.len() >= 20,
        "only {} zoo model files found",
        files.len()
    );
    for file in &files {
        round_trip(file, &dir, None)?;
        round_trip(file, &dir, Some(DType::F16))?;
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
