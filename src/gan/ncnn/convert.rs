//! Recognises which Real-ESRGAN architecture an ncnn graph is and names its tensors as the
//! PyTorch state dict of basicsr's architectures does (`SRVGGNetCompact` in
//! `basicsr/archs/srvgg_arch.py`, `RRDBNet` in `basicsr/archs/rrdbnet_arch.py`), so that an
//! ncnn model loads through the same path as a `.pth` or safetensors file.
//!
//! ncnn files carry no module names, only the layer order of the ONNX export, so the names
//! follow from the order of the weighted layers once the structure has been checked.

use std::collections::HashMap;
use std::path::Path;

use super::bin::LayerWeights;
use super::param::Layer;
use super::{file_name, weights_error};
use crate::error::Result;
use crate::gan::StateDict;

/// Layers that only route blobs; they carry no meaning for recognition.
const ROUTING: &[&str] = &["Input", "Split"];

/// Layer types an RRDBNet export may contain: `Reshape`/`Permute` are the pixel-unshuffle of
/// the x2/x1 models, `ReLU` an unfused leaky ReLU.
const RRDB_KINDS: &[&str] = &[
    "Input",
    "Split",
    "Concat",
    "Eltwise",
    "BinaryOp",
    "Interp",
    "Convolution",
    "ReLU",
    "Reshape",
    "Permute",
];

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
    Err(weights_error(
        param,
        format!(
            "{} is not a known architecture: found layers {}; expected SRVGGNetCompact \
             (Convolution/PReLU chain, PixelShuffle, nearest Interp of the input, BinaryOp add) \
             or RRDBNet (conv_first, 15 Convolutions with Concat/Eltwise per RRDB block, \
             conv_body, a Convolution after each of 2 or 3 nearest x2 Interps, conv_hr, \
             conv_last). Not SRVGGNetCompact: {srvgg}. Not RRDBNet: {rrdb}",
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

struct Graph<'a> {
    param: &'a Path,
    layers: &'a [Layer],
    weights: &'a [LayerWeights],
}

/// Why a graph is not one architecture; becomes part of the "not a known architecture" error.
type Reason = String;

impl Graph<'_> {
    /// Indices of the layers that matter for recognition, in file order.
    fn significant(&self) -> Vec<usize> {
        (0..self.layers.len())
            .filter(|&i| !ROUTING.contains(&self.layers[i].kind.as_str()))
            .collect()
    }

    fn kind(&self, i: Option<&usize>) -> &str {
        i.map_or("the end of the graph", |&i| self.layers[i].kind.as_str())
    }

    /// Adds `{prefix}.weight` and `{prefix}.bias` of the convolution at layer `i`.
    fn put_conv(
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

    fn conv_dims(&self, i: usize) -> Option<(usize, usize)> {
        match &self.weights[i] {
            LayerWeights::Conv { weight, .. } => Some((weight.dims()[0], weight.dims()[1])),
            _ => None,
        }
    }

    /// An integer param of layer `i`, with parse problems folded into the reason.
    fn int(&self, i: usize, id: u32, default: i32) -> std::result::Result<i32, Reason> {
        self.layers[i]
            .int(self.param, id, default)
            .map_err(|e| e.to_string())
    }

    /// Whether `blob` is the network input, looking through `Split` copies.
    fn is_network_input(&self, blob: &str) -> bool {
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

    /// SRVGGNetCompact: conv, act, (conv, act) x num_conv, conv, PixelShuffle, then the nearest
    /// upsampled input added. `body.{k}` counts every module of the PyTorch `body` list, so an
    /// activation without parameters (ReLU) still takes an index.
    fn srvgg(&self) -> std::result::Result<StateDict, Reason> {
        let seq = self.significant();
        let mut dict = StateDict::new();
        let mut pos = 0;
        let mut body = 0;
        let (in_ch, last) = loop {
            let Some(&conv) = seq
                .get(pos)
                .filter(|&&i| self.layers[i].kind == "Convolution")
            else {
                return Err(format!(
                    "expected a Convolution at position {pos}, found {}",
                    self.kind(seq.get(pos))
                ));
            };
            let next = seq.get(pos + 1);
            if self.kind(next) == "PixelShuffle" {
                if body < 2 {
                    return Err("the first Convolution is followed directly by PixelShuffle".into());
                }
                self.put_conv(&mut dict, conv, &format!("body.{body}"))?;
                let in_ch = self.conv_dims(seq[0]).map_or(0, |d| d.1);
                break (in_ch, conv);
            }
            self.put_conv(&mut dict, conv, &format!("body.{body}"))?;
            match (self.kind(next), next) {
                ("PReLU", Some(&act)) => {
                    if let LayerWeights::Slopes(s) = &self.weights[act] {
                        dict.insert(format!("body.{}.weight", body + 1), s.clone());
                    }
                    pos += 2;
                }
                ("ReLU", _) => pos += 2,
                // An activation fused into the convolution still is its own module in PyTorch.
                _ if self.int(conv, 9, 0)? != 0 => pos += 1,
                (found, _) => {
                    return Err(format!(
                        "expected PReLU or ReLU after a Convolution, found {found}"
                    ))
                }
            }
            body += 2;
        };
        let tail: Vec<&str> = seq[pos + 1..]
            .iter()
            .map(|&i| self.layers[i].kind.as_str())
            .collect();
        // The x2/x3 animevideov3 exports are the x4 network followed by a downscaling Interp.
        if !matches!(
            tail.as_slice(),
            ["PixelShuffle", "Interp", "BinaryOp"]
                | ["PixelShuffle", "Interp", "BinaryOp", "Interp"]
        ) {
            return Err(format!("expected PixelShuffle, Interp, BinaryOp after the last Convolution, found {tail:?}"));
        }
        let (shuffle, interp, add) = (seq[pos + 1], seq[pos + 2], seq[pos + 3]);
        let scale = self.int(shuffle, 0, 1)?;
        if self.int(interp, 0, 0)? != 1 {
            return Err("the Interp of the input is not nearest (param 0 = 1)".into());
        }
        if !self.layers[interp]
            .inputs
            .first()
            .is_some_and(|b| self.is_network_input(b))
        {
            return Err("the Interp does not upsample the network input".into());
        }
        if self.int(add, 0, 0)? != 0 {
            return Err("the BinaryOp is not an add (param 0 = 0)".into());
        }
        let out_ch = self.conv_dims(last).map_or(0, |d| d.0);
        let expected = (scale.max(0) as usize)
            .saturating_mul(scale.max(0) as usize)
            .saturating_mul(in_ch);
        if scale < 1 || out_ch != expected {
            return Err(format!(
                "the last Convolution has {out_ch} outputs, expected {in_ch} input channels x PixelShuffle {scale}^2"
            ));
        }
        Ok(dict)
    }

    /// RRDBNet: conv_first, nb x (3 RDBs x 5 convs), conv_body, conv_up per nearest x2 Interp,
    /// conv_hr, conv_last.
    fn rrdb(&self) -> std::result::Result<StateDict, Reason> {
        if let Some(odd) = self
            .layers
            .iter()
            .find(|l| !RRDB_KINDS.contains(&l.kind.as_str()))
        {
            return Err(format!("it has a {} layer ({})", odd.kind, odd.name));
        }
        let seq = self.significant();
        let of_kind = |k: &str| {
            seq.iter()
                .copied()
                .filter(|&i| self.layers[i].kind == k)
                .collect::<Vec<_>>()
        };
        let (convs, interps) = (of_kind("Convolution"), of_kind("Interp"));
        let n_up = interps.len();
        if !(2..=3).contains(&n_up) {
            return Err(format!("it has {n_up} Interp layers, expected 2 or 3"));
        }
        let body = convs
            .len()
            .checked_sub(3 + n_up)
            .filter(|&b| b > 0 && b % 15 == 0);
        let Some(nb) = body.map(|b| b / 15) else {
            return Err(format!(
                "it has {} Convolutions, expected 3 + {n_up} (upsampling) + 15 per RRDB block",
                convs.len()
            ));
        };
        // Per block: 4 Concats in each of 3 RDBs, a scaled residual Eltwise per RDB and one for
        // the block.
        for (kind, per_block) in [("Concat", 12), ("Eltwise", 4)] {
            let n = of_kind(kind).len();
            if n != per_block * nb {
                return Err(format!(
                    "it has {n} {kind} layers, expected {} for {nb} RRDB blocks",
                    per_block * nb
                ));
            }
        }
        if let Some(&first) = convs.first() {
            if let Some(odd) = seq.iter().find(|&&i| {
                i > first && ["Reshape", "Permute"].contains(&self.layers[i].kind.as_str())
            }) {
                return Err(format!(
                    "layer {} comes after conv_first",
                    self.layers[*odd].describe()
                ));
            }
        }
        for (k, &interp) in interps.iter().enumerate() {
            if self.int(interp, 0, 0)? != 1 {
                return Err(format!(
                    "Interp {} is not nearest (param 0 = 1)",
                    self.layers[interp].name
                ));
            }
            let next = seq.iter().find(|&&i| i > interp);
            if next != convs.get(15 * nb + 2 + k) {
                return Err(format!(
                    "Interp {} is not followed by conv_up{}",
                    self.layers[interp].name,
                    k + 1
                ));
            }
        }
        for (j, &conv) in convs[1..=15 * nb].iter().enumerate() {
            let activated = self.int(conv, 9, 0)? != 0
                || self.layers.get(conv + 1).is_some_and(|l| l.kind == "ReLU");
            if activated != (j % 5 != 4) {
                return Err(format!(
                    "Convolution {} is conv{} of an RDB but {} a leaky ReLU",
                    self.layers[conv].name,
                    j % 5 + 1,
                    if activated { "has" } else { "lacks" }
                ));
            }
        }
        let mut names = vec!["conv_first".to_string()];
        for b in 0..nb {
            for r in 1..=3 {
                names.extend((1..=5).map(|c| format!("body.{b}.rdb{r}.conv{c}")));
            }
        }
        names.push("conv_body".into());
        names.extend((1..=n_up).map(|k| format!("conv_up{k}")));
        names.extend(["conv_hr".to_string(), "conv_last".to_string()]);
        let mut dict = StateDict::new();
        for (name, &conv) in names.iter().zip(&convs) {
            self.put_conv(&mut dict, conv, name)?;
        }
        Ok(dict)
    }
}
