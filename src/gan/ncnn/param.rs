//! Parser for ncnn's text `.param` graph description, the format `ncnn::Net::load_param` reads:
//! the magic line `7767517`, a `layer_count blob_count` line, then one line per layer,
//! `Type Name n_inputs n_outputs in_blob... out_blob... id=value ...`.
//! Parameter values are parsed in [`super::value`]. Only the text form is read; ncnn's binary
//! `.param.bin` is not.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use super::value::{parse_param, ParamValue};
use super::{clip, file_name, weights_error};
use crate::error::Result;

/// The first line of every text `.param` file.
const MAGIC: &str = "7767517";

/// One layer line of a `.param` file.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The ncnn layer type, e.g. `Convolution`.
    pub kind: String,
    pub name: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub params: BTreeMap<u32, ParamValue>,
    /// 1-based line in the file, for messages.
    pub line: usize,
}

impl Layer {
    /// `Conv_17 (Convolution)`, how messages name a layer.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.name, self.kind)
    }

    /// Integer param `id`, or `default` when absent.
    pub fn int(&self, path: &Path, id: u32, default: i32) -> Result<i32> {
        match self.params.get(&id) {
            None => Ok(default),
            Some(ParamValue::Int(v)) => Ok(*v),
            Some(other) => Err(self.param_error(path, id, "an integer", other)),
        }
    }

    /// Non-negative integer param `id` (a size or count), or `default` when absent.
    pub fn count(&self, path: &Path, id: u32, default: usize) -> Result<usize> {
        match self.params.get(&id) {
            None => Ok(default),
            Some(ParamValue::Int(v)) if *v >= 0 => Ok(*v as usize),
            Some(other) => Err(self.param_error(path, id, "a non-negative integer", other)),
        }
    }

    /// Float param `id`, or `default` when absent; an integer value is accepted as a float
    /// because exporters write `2` and `2.0` interchangeably.
    pub fn float(&self, path: &Path, id: u32, default: f32) -> Result<f32> {
        match self.params.get(&id) {
            None => Ok(default),
            Some(ParamValue::Float(v)) => Ok(*v),
            Some(ParamValue::Int(v)) => Ok(*v as f32),
            Some(other) => Err(self.param_error(path, id, "a number", other)),
        }
    }

    fn param_error(
        &self,
        path: &Path,
        id: u32,
        expected: &str,
        found: &ParamValue,
    ) -> crate::Error {
        weights_error(
            path,
            format!(
                "{} line {}: layer {} has param {id} = {found:?}, expected {expected}",
                file_name(path),
                self.line,
                self.describe()
            ),
        )
    }
}

/// Parses the text of a `.param` file; `path` names it in errors.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Layer>> {
    let name = file_name(path);
    let err = |line: usize, message: String| {
        weights_error(path, format!("{name} line {line}: {message}"))
    };
    // ncnn reads the file with scanf, so blank lines carry no meaning; skip them.
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty());

    match lines.next() {
        Some((_, MAGIC)) => {}
        Some((line, found)) => {
            return Err(err(
                line,
                format!(
                    "found `{}` where the ncnn magic number {MAGIC} was expected: not a text ncnn \
                     .param file",
                    clip(found)
                ),
            ))
        }
        None => {
            return Err(weights_error(
                path,
                format!("{name} is empty: expected an ncnn .param file"),
            ))
        }
    }

    let (counts_line, counts) = lines.next().ok_or_else(|| {
        weights_error(
            path,
            format!("{name} ends after the magic number: expected a `layer_count blob_count` line"),
        )
    })?;
    let numbers: Vec<Option<usize>> = counts.split_whitespace().map(|t| t.parse().ok()).collect();
    let (layer_count, blob_count) = match numbers.as_slice() {
        [Some(l), Some(b)] => (*l, *b),
        _ => {
            return Err(err(
                counts_line,
                format!(
                    "found `{}`, expected two counts `layer_count blob_count`",
                    clip(counts)
                ),
            ))
        }
    };

    let mut layers = Vec::new();
    // Blob names produced so far: ncnn refuses a layer whose input no earlier layer produced.
    let mut blobs: HashSet<String> = HashSet::new();
    for (line, text) in lines {
        let layer = parse_layer(text).map_err(|m| err(line, m))?;
        let layer = Layer { line, ..layer };
        if let Some(missing) = layer.inputs.iter().find(|b| !blobs.contains(*b)) {
            return Err(err(
                line,
                format!(
                    "layer {} reads blob `{missing}`, which no earlier layer produces",
                    layer.describe()
                ),
            ));
        }
        blobs.extend(layer.outputs.iter().cloned());
        layers.push(layer);
    }
    if layers.len() != layer_count {
        return Err(err(
            counts_line,
            format!(
                "declares {layer_count} layers but the file has {} layer lines",
                layers.len()
            ),
        ));
    }
    if blobs.len() != blob_count {
        return Err(err(
            counts_line,
            format!(
                "declares {blob_count} blobs but the layers produce {} distinct blobs",
                blobs.len()
            ),
        ));
    }
    Ok(layers)
}

/// One layer line; the error is the message without the file and line prefix.
fn parse_layer(text: &str) -> std::result::Result<Layer, String> {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    if tokens.len() < 4 {
        return Err(format!(
            "found `{}`, expected a layer `Type Name n_inputs n_outputs blobs... params...`",
            clip(text)
        ));
    }
    let count = |t: &str, what: &str| {
        t.parse::<usize>().map_err(|_| {
            format!(
                "layer {}: {what} is `{}`, expected a count",
                tokens[1],
                clip(t)
            )
        })
    };
    let n_in = count(tokens[2], "n_inputs")?;
    let n_out = count(tokens[3], "n_outputs")?;
    // A huge count must not overflow: it simply asks for more tokens than the line has.
    let blobs_end = n_in.checked_add(n_out).and_then(|n| n.checked_add(4));
    let blobs_end = match blobs_end {
        Some(end) if end <= tokens.len() => end,
        _ => {
            return Err(format!(
                "layer {} declares {n_in} inputs and {n_out} outputs but the line has only {} blob names",
                tokens[1],
                tokens.len() - 4
            ))
        }
    };
    let mut params = BTreeMap::new();
    for token in &tokens[blobs_end..] {
        let (id, value) = parse_param(token)
            .map_err(|m| format!("layer {}: param `{}` {m}", tokens[1], clip(token)))?;
        params.insert(id, value);
    }
    Ok(Layer {
        kind: tokens[0].to_string(),
        name: tokens[1].to_string(),
        inputs: tokens[4..4 + n_in].iter().map(|s| s.to_string()).collect(),
        outputs: tokens[4 + n_in..blobs_end]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        params,
        line: 0,
    })
}
