//! Which files of a repo the x4 upscaling pipeline needs for a dtype.

use std::path::Path;

use candle_core::DType;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Config and tokenizer files the pipeline cannot load without.
const REQUIRED: [&str; 8] = [
    "model_index.json",
    "unet/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "scheduler/scheduler_config.json",
    "low_res_scheduler/scheduler_config.json",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
];

/// Files the tokenizer reads when the repo has them.
const OPTIONAL: [&str; 2] = [
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
];

/// Weighted components: (folder, safetensors stem, pickle stem).
const WEIGHTED: [(&str, &str, &str); 3] = [
    ("unet", "diffusion_pytorch_model", "diffusion_pytorch_model"),
    ("vae", "diffusion_pytorch_model", "diffusion_pytorch_model"),
    ("text_encoder", "model", "pytorch_model"),
];

/// The files chosen from a repo listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    files: Vec<String>,
}

impl Selection {
    /// The chosen files, configs first. Sharded weights appear as their index file; the
    /// shards it names are added once the index is read.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// Whether every shard named by a chosen index exists under `dir`.
    pub fn shards_present(&self, dir: &Path) -> bool {
        self.indexes().all(|index| {
            shards_of(&dir.join(index))
                .is_ok_and(|shards| shards.iter().all(|s| dir.join(s).is_file()))
        })
    }

    /// The chosen files plus the shards their indexes name (read from `dir`).
    pub fn files_with_shards(&self, dir: &Path) -> Vec<String> {
        let mut out = self.files.clone();
        for index in self.indexes() {
            if let Ok(shards) = shards_of(&dir.join(index)) {
                out.extend(shards);
            }
        }
        out
    }

    /// Whether a chosen weights file is an fp16 variant.
    pub fn has_fp16_weights(&self) -> bool {
        self.files.iter().any(|f| f.contains(".fp16."))
    }

    fn indexes(&self) -> impl Iterator<Item = &String> {
        self.files
            .iter()
            .filter(|f| f.ends_with(".safetensors.index.json"))
    }
}

/// Chooses the files of `listing` (repo paths with `/`) the pipeline needs in `dtype`: the
/// configs, the tokenizer, and per weighted component the file `ModelDir` would load
/// (`*.fp16.safetensors` first for f16/bf16, plain `*.safetensors` first for f32, then
/// sharded indexes, then `.bin` pickles). `Err` lists what is missing.
pub fn select_files(
    listing: &[String],
    dtype: DType,
) -> std::result::Result<Selection, Vec<String>> {
    let has = |f: &str| listing.iter().any(|l| l == f);
    let mut files = Vec::new();
    let mut missing = Vec::new();
    for f in REQUIRED {
        if has(f) {
            files.push(f.to_string());
        } else {
            missing.push(f.to_string());
        }
    }
    files.extend(OPTIONAL.iter().filter(|f| has(f)).map(|f| f.to_string()));
    let variants: &[&str] = if dtype == DType::F32 {
        &["", ".fp16"]
    } else {
        &[".fp16", ""]
    };
    for (component, stem, bin_stem) in WEIGHTED {
        let mut candidates = Vec::new();
        for v in variants {
            candidates.push(format!("{component}/{stem}{v}.safetensors"));
            candidates.push(format!("{component}/{stem}{v}.safetensors.index.json"));
        }
        for v in variants {
            candidates.push(format!("{component}/{bin_stem}{v}.bin"));
        }
        match candidates.into_iter().find(|c| has(c)) {
            Some(found) => files.push(found),
            None => missing.push(format!("{component}/{stem}.safetensors")),
        }
    }
    if missing.is_empty() {
        Ok(Selection { files })
    } else {
        Err(missing)
    }
}

/// The shard files (repo paths) a `*.safetensors.index.json` names, relative to the repo.
pub(crate) fn shards_of(index: &Path) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct ShardIndex {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(index).map_err(|source| Error::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let parsed: ShardIndex = serde_json::from_str(&text).map_err(|e| Error::Config {
        path: index.to_path_buf(),
        message: e.to_string(),
    })?;
    // The index sits in the component folder; its shard names are relative to it.
    let component = index
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let mut shards: Vec<String> = Vec::new();
    for name in parsed.weight_map.values() {
        if name.contains("..") || name.contains('\\') || name.starts_with('/') {
            return Err(Error::Config {
                path: index.to_path_buf(),
                message: format!("shard name `{name}` leaves the component folder"),
            });
        }
        let path = format!("{component}/{name}");
        if !shards.contains(&path) {
            shards.push(path);
        }
    }
    shards.sort();
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(extra: &[&str]) -> Vec<String> {
        REQUIRED
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn prefers_the_dtype_variant() {
        let l = listing(&[
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "unet/diffusion_pytorch_model.bin",
            "vae/diffusion_pytorch_model.safetensors",
            "text_encoder/model.fp16.safetensors",
            "text_encoder/pytorch_model.bin",
            "README.md",
        ]);
        let f16 = select_files(&l, DType::F16).unwrap();
        assert!(f16
            .files()
            .contains(&"unet/diffusion_pytorch_model.fp16.safetensors".into()));
        assert!(f16
            .files()
            .contains(&"vae/diffusion_pytorch_model.safetensors".into()));
        assert!(f16
            .files()
            .contains(&"text_encoder/model.fp16.safetensors".into()));
        assert_eq!(f16.files().len(), REQUIRED.len() + 3);
        let f32 = select_files(&l, DType::F32).unwrap();
        assert!(f32
            .files()
            .contains(&"unet/diffusion_pytorch_model.safetensors".into()));
        assert!(f32
            .files()
            .contains(&"text_encoder/model.fp16.safetensors".into()));
    }

    #[test]
    fn names_what_is_missing() {
        let missing = select_files(&listing(&[]), DType::F32).unwrap_err();
        assert_eq!(missing.len(), 3, "{missing:?}");
    }
}
