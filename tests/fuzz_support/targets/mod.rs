//! The fuzz targets, one per reader: each gives its seeds' mutations and what to run on an
//! input. [`by_name`] finds a target for a regression input named `<target>-<anything>.bin`.

pub mod batch;
pub mod configs;
pub mod gan;
pub mod images;
pub mod weights;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::harness::Target;

/// Every target's name.
pub const NAMES: [&str; 15] = [
    "safetensors_reader",
    "gan_safetensors",
    "gan_pth",
    "gan_ncnn",
    "png_text",
    "images",
    "manifest",
    "name_template",
    "unet_config",
    "vae_config",
    "clip_text_config",
    "scheduler_config",
    "model_index",
    "tokenizer",
    "prompt",
];

/// The target called `name`.
pub fn by_name(name: &str) -> Option<Target> {
    Some(match name {
        "safetensors_reader" => weights::safetensors_reader(),
        "gan_safetensors" => gan::gan_safetensors(),
        "gan_pth" => gan::gan_pth(),
        "gan_ncnn" => gan::gan_ncnn(),
        "png_text" => images::png_text(),
        "images" => images::images(),
        "manifest" => batch::manifest(),
        "name_template" => batch::name_template(),
        "unet_config" => configs::unet_config(),
        "vae_config" => configs::vae_config(),
        "clip_text_config" => configs::clip_text_config(),
        "scheduler_config" => configs::scheduler_config(),
        "model_index" => configs::model_index(),
        "tokenizer" => configs::tokenizer(),
        "prompt" => configs::prompt(),
        _ => return None,
    })
}

/// A library error as the user reads it.
pub fn message(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Asserts that a secondary call's error has a message (the case's own error is checked by
/// the harness).
pub fn check_message(e: impl std::fmt::Display) {
    let m = e.to_string();
    assert!(!m.trim().is_empty(), "an error with an empty message");
}

/// A fixture file's bytes.
pub fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(fixture_path(path)).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

pub fn fixture_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// A folder for a target's seeds, made afresh (one per call: tests build seeds concurrently).
pub fn seed_dir(target: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("fuzz-seeds-{target}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("seed folder");
    dir
}

/// Writes the files of a bundle into `dir` (names reduced to their last component).
pub fn unpack_into(bundle: &[u8], dir: &Path) -> Result<Vec<PathBuf>, String> {
    let files = super::bundle::unpack(bundle).ok_or("not a bundle")?;
    let mut paths = Vec::new();
    for (name, data) in files {
        let name = Path::new(&name)
            .file_name()
            .ok_or("a bundle file without a name")?;
        let path = dir.join(name);
        std::fs::write(&path, data).map_err(|e| e.to_string())?;
        paths.push(path);
    }
    Ok(paths)
}
