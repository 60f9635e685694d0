//! Generation parameters in PNG text chunks: key `diffsr` holds them as JSON (what
//! `diffsr info` reads back), key `parameters` as one human-readable paragraph.

mod png_chunks;

use std::io::{BufReader, Read, Seek};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::load::MAX_FILE_BYTES;
use crate::error::{Error, Result};
use crate::input_file::open_image;

/// The text-chunk key of the JSON record.
pub const JSON_KEY: &str = "diffsr";
/// The text-chunk key of the human-readable summary.
pub const PARAMETERS_KEY: &str = "parameters";

/// Everything needed to reproduce a result from the file alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GenerationInfo {
    /// `diffusion` or `gan` (files written before the GAN path have no key: diffusion).
    #[serde(default = "diffusion")]
    pub engine: String,
    /// The requested output factor, when not the model's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: u64,
    pub steps: usize,
    /// Solver name, or `default` for the model's own scheduler config.
    pub scheduler: String,
    pub guidance: f64,
    pub noise_level: u32,
    pub eta: f64,
    pub diffsr_version: String,
}

fn diffusion() -> String {
    "diffusion".into()
}

impl GenerationInfo {
    /// One human-readable paragraph.
    pub fn summary(&self) -> String {
        if self.engine == "gan" {
            let mut s = format!("Engine: GAN, Model: {}", self.model);
            if let Some(r) = &self.revision {
                s.push_str(&format!(", Revision: {r}"));
            }
            if let Some(scale) = self.scale {
                s.push_str(&format!(", Scale: {scale}"));
            }
            s.push_str(&format!(", diffsr: {}", self.diffsr_version));
            return s;
        }
        let mut s = format!("{}\n", self.prompt);
        if !self.negative_prompt.is_empty() {
            s.push_str(&format!("Negative prompt: {}\n", self.negative_prompt));
        }
        s.push_str(&format!(
            "Steps: {}, Scheduler: {}, Guidance: {}, Noise level: {}, Eta: {}, Seed: {}, \
             Model: {}",
            self.steps,
            self.scheduler,
            self.guidance,
            self.noise_level,
            self.eta,
            self.seed,
            self.model
        ));
        if let Some(r) = &self.revision {
            s.push_str(&format!(", Revision: {r}"));
        }
        if let Some(scale) = self.scale {
            s.push_str(&format!(", Scale: {scale}"));
        }
        s.push_str(&format!(", diffsr: {}", self.diffsr_version));
        s
    }

    /// The (key, text) pairs written into a PNG.
    pub fn text_chunks(&self) -> Vec<(String, String)> {
        vec![
            (
                JSON_KEY.to_string(),
                serde_json::to_string(self).unwrap_or_default(),
            ),
            (PARAMETERS_KEY.to_string(), self.summary()),
        ]
    }

    /// The record in the texts of a PNG ([`read_png_text`]), if there is one.
    pub fn from_texts(path: &Path, texts: &[(String, String)]) -> Result<Option<Self>> {
        let Some((_, json)) = texts.iter().find(|(k, _)| k == JSON_KEY) else {
            return Ok(None);
        };
        serde_json::from_str(json)
            .map(Some)
            .map_err(|e| Error::Image {
                path: path.to_path_buf(),
                reason: format!("the `{JSON_KEY}` text chunk is malformed: {e}"),
            })
    }
}

/// All text chunks (tEXt, zTXt, iTXt) of a PNG, in file order by kind. A damaged file is an
/// error that says where (a CRC error in chunk tEXt, a truncation), not a file without text.
pub fn read_png_text(path: &Path) -> Result<Vec<(String, String)>> {
    let image_error = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    let (mut file, len) = open_image(path, MAX_FILE_BYTES)?;
    png_chunks::check(&mut BufReader::new(&file).take(len)).map_err(image_error)?;
    file.rewind().map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut options = png::DecodeOptions::default();
    options.set_skip_ancillary_crc_failures(false);
    let mut reader = png::Decoder::new_with_options(BufReader::new(file), options)
        .read_info()
        .map_err(|e| image_error(format!("is not a readable PNG: {e}")))?;
    // Text may follow the image data too: read to the end (the pixels are not kept).
    reader
        .finish()
        .map_err(|e| image_error(format!("is not a readable PNG: {e}")))?;
    let info = reader.info();
    let mut texts = Vec::new();
    for t in &info.uncompressed_latin1_text {
        texts.push((t.keyword.clone(), t.text.clone()));
    }
    for t in &info.compressed_latin1_text {
        let mut t = t.clone();
        if t.decompress_text().is_ok() {
            if let Ok(text) = t.get_text() {
                texts.push((t.keyword.clone(), text));
            }
        }
    }
    for t in &info.utf8_text {
        let mut t = t.clone();
        if t.decompress_text().is_ok() {
            if let Ok(text) = t.get_text() {
                texts.push((t.keyword.clone(), text));
            }
        }
    }
    Ok(texts)
}
