//! Recognises which architecture an ncnn graph is and names its tensors as the PyTorch state
//! dict does (`SRVGGNetCompact` in `basicsr/archs/srvgg_arch.py`, `RRDBNet` in
//! `basicsr/archs/rrdbnet_arch.py`, Real-CUGAN's `UpCunet` as spandrel has it), so that an ncnn
//! model loads through the same path as a `.pth` or safetensors file.
//!
//! ncnn files carry no module names, only the layer order of the ONNX export, so the names
//! follow from the order of the weighted layers once the structure has been checked. The
//! per-architecture checks live in `srvgg.rs`, `rrdb.rs` and `cugan.rs`; this file holds the dispatch, the
//! error and the graph helpers they share.

use std::collections::HashMap;
use std::path::Path;

use super::bin::LayerWeights;
use super::param::Layer;
use super::{file_name, weights_error};
use crate::error::Result;
use crate::gan::StateDict;

/// Layers that only route blobs; they carry no meaning for recognition.
const ROUTING: &[&str] = &["Input", "Split"];

/// Names the tensors of `layers` (with their `weights`, one entry per layer); `param` names the
/// file in errors.
pub fn to_state_dict(
    param: &Path,
    layers: &[Layer],
    weights: Vec<LayerWeights>,
) -> Result<StateDict> {
    let graph = Graph {
        param,
        layers,
        weights: &weights,
    };
    let srvgg = match graph.srvgg() {
        Ok(dict) => return Ok(dict),
        Err(reason) => reason,
    };
    let rrdb = match graph.rrdb() {
        Ok(dict) => return Ok(dict),
        Err(reason) => reason,
    };
    let cugan = match graph.cugan() {
        Ok(dict) => return Ok(dict),
        Err(reason) => reason,
    };
    Err(weights_error(
        param,
        format!(
            "{} is not a known architecture: found layers {}; expected SRVGGNetCompact \
             (Convolution/PReLU chain, PixelShuffle, nearest Interp of the input, BinaryOp add) \
             or RRDBNet (conv_first, 15 Convolutions with Concat/Eltwise per RRDB block, \
             conv_body, a Convolution after each of 2 or 3 nearest x2 Interps, conv_hr, \
             conv_last) or Real-CUGAN (two U-Nets of Convolution / Deconvolution layers, with \
             Pooling + InnerProduct squeeze-and-excitation or without). Not SRVGGNetCompact: \
             {srvgg}. Not RRDBNet: {rrdb}. Not Real-CUGAN: {cugan}",
            file_name(param),
            layer_census(layers)
        ),
    ))
}

/// `Convolution x3, Pooling x1`, in order of first appearance.
fn layer_census(layers: &[Layer]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for layer in layers {
        match counts.iter_mut().find(|(k, _)| *k == layer.kind) {
            Some((_, n)) => *n += 1,
            None => counts.push((&layer.kind, 1)),
        }
    }
    if counts.is_empty() {
        return "none".into();
    }
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{k} x{n}")).collect();
    parts.join(", ")
}

pub(super) struct Graph<'a> {
    pub(super) param: &'a Path,
    pub(super) layers: &'a [Layer],
    pub(super) weights: &'a [LayerWeights],
}

/// Why a graph is not one architecture; becomes part of the "not a known architecture" error.
pub(super) type Reason = String;

impl Graph<'_> {
    /// Indices of the layers that matter for recognition, in file order.
    pub(super) fn significant(&self) -> Vec<usize> {
        (0..self.layers.len())
            .filter(|&i| !ROUTING.contains(&self.layers[i].kind.as_str()))
            .collect()
    }

    pub(super) fn kind(&self, i: Option<&usize>) -> &str {
        i.map_or("the end of the graph", |&i| self.layers[i].kind.as_str())
    }

    /// Adds `{prefix}.weight` and `{prefix}.bias` of the convolution at layer `i`.
    pub(super) fn put_conv(
        &self,
        dict: &mut StateDict,
        i: usize,
        prefix: &str,
    ) -> std::result::Result<(), Reason> {
        match &self.weights[i] {
            LayerWeights::Conv { weight, bias } => {
                dict.insert(format!("{prefix}.weight"), weight.clone());
                if let Some(bias) = bias {
                    dict.insert(format!("{prefix}.bias"), bias.clone());
                }
                Ok(())
            }
            _ => Err(format!(
                "layer {} holds no convolution weights",
                self.layers[i].describe()
            )),
        }
    }

    pub(super) fn conv_dims(&self, i: usize) -> Option<(usize, usize)> {
        match &self.weights[i] {
            LayerWeights::Conv { weight, .. } => Some((weight.dims()[0], weight.dims()[1])),
            _ => None,
        }
    }

    /// An integer param of layer `i`, with parse problems folded into the reason.
    pub(super) fn int(&self, i: usize, id: u32, default: i32) -> std::result::Result<i32, Reason> {
        self.layers[i]
            .int(self.param, id, default)
            .map_err(|e| e.to_string())
    }

    /// Whether `blob` is the network input, looking through `Split` copies.
    pub(super) fn is_network_input(&self, blob: &str) -> bool {
        let producers: HashMap<&str, usize> = self
            .layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| l.outputs.iter().map(move |b| (b.as_str(), i)))
            .collect();
        let mut blob = blob;
        // Bounded by the layer count, so a malformed cycle cannot loop forever.
        for _ in 0..=self.layers.len() {
            match producers.get(blob).map(|&i| &self.layers[i]) {
                None => return true,
                Some(l) if l.kind == "Input" => return true,
                Some(l) if l.kind == "Split" && !l.inputs.is_empty() => blob = &l.inputs[0],
                Some(_) => return false,
            }
        }
        false
    }
}
