//! Recognition of basicsr's `SRVGGNetCompact` (`basicsr/archs/srvgg_arch.py`, the
//! realesr-animevideov3 and realesr-general models) in an ncnn graph, naming its tensors as the
//! PyTorch `body` list does.

use super::bin::LayerWeights;
use super::convert::{Graph, Reason};
use crate::gan::arch::{output_resize_tensor, OutputResize, ResizeMode, OUTPUT_RESIZE_KEY};
use crate::gan::StateDict;

impl Graph<'_> {
    /// SRVGGNetCompact: conv, act, (conv, act) x num_conv, conv, PixelShuffle, then the nearest
    /// upsampled input added. `body.{k}` counts every module of the PyTorch `body` list, so an
    /// activation without parameters (ReLU) still takes an index.
    pub(super) fn srvgg(&self) -> std::result::Result<StateDict, Reason> {
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
        // The x2/x3 animevideov3 exports are the x4 network followed by a downscaling Interp,
        // kept as the `OUTPUT_RESIZE_KEY` entry.
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
        if let Some(&resize) = seq.get(pos + 4) {
            self.output_resize(resize, add, &mut dict)?;
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

    /// The final `Interp` at layer `i` (reading the add at layer `add`), as the
    /// [`OUTPUT_RESIZE_KEY`] entry: a fixed factor for both sides, nearest, bilinear or
    /// bicubic, without align_corner (ncnn's params 0, 1, 2 and 6; a fixed output size,
    /// params 3 and 4, is not supported).
    fn output_resize(
        &self,
        i: usize,
        add: usize,
        dict: &mut StateDict,
    ) -> std::result::Result<(), Reason> {
        let layer = &self.layers[i];
        let name = &layer.name;
        if layer.inputs.first() != self.layers[add].outputs.first() {
            return Err(format!(
                "the final Interp {name} does not resize the network's output"
            ));
        }
        let mode = ResizeMode::from_ncnn(self.int(i, 0, 0)?.into()).ok_or_else(|| {
            format!("the final Interp {name} has resize_type (param 0) not 1, 2 or 3")
        })?;
        if self.int(i, 3, 0)? != 0 || self.int(i, 4, 0)? != 0 || self.int(i, 5, 0)? != 0 {
            return Err(format!(
                "the final Interp {name} resizes to a fixed or dynamic size (params 3, 4, 5), \
                 not by a factor"
            ));
        }
        if self.int(i, 6, 0)? != 0 {
            return Err(format!(
                "the final Interp {name} aligns corners (param 6), which is not supported"
            ));
        }
        let float = |id| {
            self.layers[i]
                .float(self.param, id, 1.0)
                .map_err(|e| e.to_string())
        };
        let (h, w) = (float(1)?, float(2)?);
        if h != w || !h.is_finite() || h <= 0.0 {
            return Err(format!(
                "the final Interp {name} scales by {h} x {w}; expected one positive factor for \
                 both sides"
            ));
        }
        let resize = OutputResize { mode, factor: h };
        let tensor = output_resize_tensor(&resize).map_err(|e| e.to_string())?;
        dict.insert(OUTPUT_RESIZE_KEY.to_string(), tensor);
        Ok(())
    }
}
