//! A model directory in the hub's diffusers layout: `model_index.json`, then one folder per
//! component with its `config.json` and weights. Follows diffusers' `DiffusionPipeline`
//! loading: `<component>/config.json` plus `diffusion_pytorch_model.safetensors` (unet, vae) or
//! `model.safetensors` (text_encoder), with `.fp16` variants, sharded `*.safetensors.index.json`
//! and, for older revisions, `.bin` pickles (read without executing pickle code).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model_file::FileRole;

/// The fields of `model_index.json` diffsr reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ModelIndex {
    #[serde(rename = "_class_name")]
    pub class_name: Option<String>,
    /// Highest `noise_level` the upscaler was trained with (350 for the x4 upscaler).
    pub max_noise_level: Option<u32>,
}

/// Which weights file a component was loaded from.
#[derive(Debug, Clone)]
pub struct WeightFiles {
    pub files: Vec<PathBuf>,
    pub pickle: bool,
}

impl WeightFiles {
    /// The file named in error messages.
    pub fn display_path(&self) -> PathBuf {
        self.files.first().cloned().unwrap_or_default()
    }
}

/// An opened model directory.
#[derive(Debug, Clone)]
pub struct ModelDir {
    root: PathBuf,
    index: ModelIndex,
}

impl ModelDir {
    /// Opens `root`, which must hold `model_index.json`.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            return Err(Error::MissingComponent {
                dir: root.to_path_buf(),
                what:
                    "the directory itself (expected a model folder in the hub's diffusers layout)"
                        .into(),
            });
        }
        let path = root.join("model_index.json");
        if !path.is_file() {
            return Err(Error::MissingComponent {
                dir: root.to_path_buf(),
                what: "model_index.json (expected a model folder in the hub's diffusers layout)"
                    .into(),
            });
        }
        let index = read_json(&path)?;
        Ok(Self {
            root: root.to_path_buf(),
            index,
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The parsed `model_index.json`.
    pub fn index(&self) -> &ModelIndex {
        &self.index
    }

    /// `<root>/<component>/<file>`, which must exist.
    pub fn file(&self, component: &str, file: &str) -> Result<PathBuf> {
        let path = self.root.join(component).join(file);
        if path.is_file() {
            Ok(path)
        } else {
            Err(Error::MissingComponent {
                dir: self.root.clone(),
                what: format!("{component}/{file}"),
            })
        }
    }

    /// `<root>/<component>/`, which must exist.
    pub fn component(&self, component: &str) -> Result<PathBuf> {
        let path = self.root.join(component);
        if path.is_dir() {
            Ok(path)
        } else {
            Err(Error::MissingComponent {
                dir: self.root.clone(),
                what: format!("the `{component}/` component"),
            })
        }
    }

    /// Finds a component's weights: `<stem>.fp16.safetensors` first when `prefer_fp16`, then
    /// `<stem>.safetensors`, sharded indexes, and last the `.bin` pickles.
    pub fn weights(&self, component: &str, stem: &str, prefer_fp16: bool) -> Result<WeightFiles> {
        let dir = self.component(component)?;
        let bin_stem = if stem == "model" {
            "pytorch_model"
        } else {
            stem
        };
        let variants: &[&str] = if prefer_fp16 {
            &[".fp16", ""]
        } else {
            &["", ".fp16"]
        };
        for variant in variants {
            let single = dir.join(format!("{stem}{variant}.safetensors"));
            if single.is_file() {
                return Ok(WeightFiles {
                    files: vec![single],
                    pickle: false,
                });
            }
            let index = dir.join(format!("{stem}{variant}.safetensors.index.json"));
            if index.is_file() {
                return Ok(WeightFiles {
                    files: shard_files(&index)?,
                    pickle: false,
                });
            }
        }
        for variant in variants {
            let bin = dir.join(format!("{bin_stem}{variant}.bin"));
            if bin.is_file() {
                return Ok(WeightFiles {
                    files: vec![bin],
                    pickle: true,
                });
            }
        }
        Err(Error::MissingComponent {
            dir: self.root.clone(),
            what: format!(
                "weights for `{component}/` (expected {stem}.safetensors, \
                 {stem}.fp16.safetensors or {bin_stem}.bin)"
            ),
        })
    }

    /// A `VarBuilder` over a component's weights in `dtype` on `device`.
    pub fn var_builder(
        &self,
        component: &str,
        stem: &str,
        dtype: DType,
        device: &Device,
    ) -> Result<(VarBuilder<'static>, WeightFiles)> {
        let files = self.weights(component, stem, dtype != DType::F32)?;
        // Both read tensor by tensor, not memory-mapped (see `safetensors_reader`: peak memory),
        // with every declared size checked against the file and non-finite weights refused.
        let vb = if files.pickle {
            crate::pth_reader::var_builder(&files.files[0], dtype, device)?
        } else {
            crate::safetensors_reader::var_builder(&files.files, dtype, device)?
        };
        Ok((vb, files))
    }
}

/// Builds a model, turning candle's missing-tensor and shape errors into errors that name the
/// weights file as well as the tensor.
pub fn with_weights<T>(files: &WeightFiles, build: impl FnOnce() -> Result<T>) -> Result<T> {
    build().map_err(|e| match e {
        Error::Tensor(inner) => Error::Weights {
            path: files.display_path(),
            message: inner.to_string(),
        },
        other => other,
    })
}

/// Largest JSON file read (configs, shard indexes): the biggest real ones are a few hundred KB.
const MAX_JSON_BYTES: u64 = 64 << 20;

/// Reads a JSON file into `T`, naming the file and the JSON path of a bad value. The file must
/// be a regular file of at most 64 MB.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = crate::model_file::read_regular(path, MAX_JSON_BYTES, FileRole::Config)?;
    let text = String::from_utf8(bytes).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        message: format!(
            "not UTF-8 text (invalid byte at {})",
            e.utf8_error().valid_up_to()
        ),
    })?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        message: if e.path().to_string() == "." {
            e.inner().to_string()
        } else {
            format!("`{}`: {}", e.path(), e.inner())
        },
    })
}

fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    #[derive(Deserialize)]
    struct ShardIndex {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let parsed: ShardIndex = read_json(index)?;
    let dir = index.parent().unwrap_or(Path::new("."));
    // Shards sit beside their index: a name that climbs out (`..`, an absolute path) could
    // make a hostile index read any file, a device node included.
    if let Some(name) = parsed.weight_map.values().find(|name| {
        Path::new(name)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
            || name.contains('\\')
    }) {
        return Err(Error::Config {
            path: index.to_path_buf(),
            message: format!(
                "`weight_map` names shard `{name}` outside the index's folder; expected a file \
                 name beside it"
            ),
        });
    }
    let mut files: Vec<PathBuf> = parsed.weight_map.values().map(|f| dir.join(f)).collect();
    files.sort();
    files.dedup();
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        return Err(Error::Weights {
            path: index.to_path_buf(),
            message: format!("names shard {} which does not exist", missing.display()),
        });
    }
    Ok(files)
}
