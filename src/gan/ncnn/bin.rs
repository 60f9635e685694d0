//! Reader for ncnn's `.bin` weights, laid out as `ncnn::ModelBinFromDataReader` reads them:
//! the weights of each layer back to back, in the layer order of the `.param`, with no header
//! and no padding between layers. Only `Convolution` and `PReLU` (the layers of the
//! Real-ESRGAN family) and `Deconvolution` and `InnerProduct` (Real-CUGAN's transposed convs
//! and squeeze-and-excitation) are read; other layers that store weights are refused.
//!
//! A convolution's kernel is a "type 0" blob: a 4-byte flag says how the values are stored
//! (fp16, int8, raw f32, or an 8-bit index into a 256-entry f32 table). Biases and PReLU slopes
//! are "type 1" blobs: raw little-endian f32 with no flag.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::param::Layer;
use super::{file_name, weights_error};
use crate::error::Result;
use crate::model_file::count_non_finite;

/// Flag of a kernel stored as IEEE half floats.
const TAG_FP16: u32 = 0x0130_6B47;
/// Flag of an int8-quantised kernel.
const TAG_INT8: u32 = 0x000D_4B38;
/// Flag of raw f32 data (with a nonzero flag, unlike the usual all-zero one).
const TAG_RAW_F32: u32 = 0x0002_C056;
/// Entries of the lookup table of a table-quantised kernel.
const TABLE_LEN: usize = 256;

/// Layers that never read from the `.bin`, so they can be skipped safely.
const WEIGHTLESS: &[&str] = &[
    "Input",
    "Split",
    "Concat",
    "Eltwise",
    "Interp",
    "PixelShuffle",
    "BinaryOp",
    "ReLU",
    "Reshape",
    "Permute",
    "Crop",
    "Padding",
    "Pooling",
    "Sigmoid",
    "TanH",
    "Clip",
    "Slice",
    "Flatten",
    "Noop",
    "UnaryOp",
    "Dropout",
];

/// The tensors one layer read from the `.bin`.
#[derive(Debug, Clone)]
pub enum LayerWeights {
    None,
    /// Kernel `[out, in, kh, kw]` in its stored dtype, bias `[out]` f32. A `Deconvolution`'s
    /// kernel is stored in this order too (PyTorch's `ConvTranspose2d` holds `[in, out, kh,
    /// kw]`); an `InnerProduct`'s `[out, in]` is read as `[out, in, 1, 1]`.
    Conv {
        weight: Tensor,
        bias: Option<Tensor>,
    },
    /// PReLU slopes `[num_slope]` f32.
    Slopes(Tensor),
}

/// The most bytes the weights of `layers` can take in a `.bin` (every kernel in its largest
/// storage format), so that a `.bin` is never read past what its `.param` can use.
pub fn max_len(param: &Path, layers: &[Layer]) -> Result<u64> {
    let mut total: u64 = 0;
    for layer in layers {
        let bytes = match weighted_ids(&layer.kind) {
            Some((bias_id, size_id)) => {
                let n = layer.count(param, size_id, 0)? as u64;
                let bias = if layer.int(param, bias_id, 0)? != 0 {
                    layer.count(param, 0, 0)? as u64
                } else {
                    0
                };
                // Flag, then raw f32 or a 256-entry table with padded u8 indices.
                let kernel = n
                    .saturating_mul(4)
                    .max((TABLE_LEN as u64 * 4).saturating_add(n.saturating_add(3)));
                kernel
                    .saturating_add(4)
                    .saturating_add(bias.saturating_mul(4))
            }
            None if layer.kind == "PReLU" => (layer.count(param, 0, 0)? as u64).saturating_mul(4),
            None => 0,
        };
        total = total.saturating_add(bytes);
    }
    Ok(total)
}

/// The ids of the `bias_term` and `weight_data_size` params of a layer type that stores a
/// kernel and a bias.
fn weighted_ids(kind: &str) -> Option<(u32, u32)> {
    match kind {
        "Convolution" | "Deconvolution" => Some((5, 6)),
        "InnerProduct" => Some((1, 2)),
        _ => None,
    }
}

/// Reads the weights of every layer from `data` (the `.bin` file's bytes), one entry per layer;
/// errors about the graph name `param`, errors about the data name `bin`.
pub fn read(param: &Path, bin: &Path, data: &[u8], layers: &[Layer]) -> Result<Vec<LayerWeights>> {
    let mut reader = Reader {
        path: bin,
        data,
        pos: 0,
    };
    let mut out = Vec::with_capacity(layers.len());
    for layer in layers {
        let weights = match layer.kind.as_str() {
            "Convolution" | "Deconvolution" => read_conv(param, &mut reader, layer)?,
            "InnerProduct" => read_inner_product(param, &mut reader, layer)?,
            "PReLU" => {
                let n = layer.count(param, 0, 0)?;
                if n == 0 {
                    return Err(layer_error(
                        param,
                        layer,
                        "has num_slope (param 0) = 0, expected at least 1",
                    ));
                }
                LayerWeights::Slopes(reader.f32s(layer, n)?)
            }
            kind if WEIGHTLESS.contains(&kind) => LayerWeights::None,
            kind => {
                return Err(layer_error(
                    param,
                    layer,
                    &format!(
                        "unsupported layer type {kind}: diffsr reads the weights of Convolution, \
                         PReLU, Deconvolution and InnerProduct layers only (the Real-ESRGAN and \
                         Real-CUGAN families)"
                    ),
                ))
            }
        };
        out.push(weights);
    }
    if reader.pos != data.len() {
        return Err(weights_error(
            bin,
            format!(
                "{} has {} bytes left after the last layer: it does not belong to {} (mismatched pair)",
                file_name(bin),
                data.len() - reader.pos,
                file_name(param)
            ),
        ));
    }
    Ok(out)
}

fn read_conv(param: &Path, reader: &mut Reader, layer: &Layer) -> Result<LayerWeights> {
    let num_output = layer.count(param, 0, 0)?;
    let kernel_w = layer.count(param, 1, 0)?;
    let kernel_h = layer.count(param, 11, kernel_w)?;
    let bias_term = layer.int(param, 5, 0)? != 0;
    let data_size = layer.count(param, 6, 0)?;
    if layer.int(param, 8, 0)? != 0 {
        // int8_scale_term: the kernel is followed by quantisation scales.
        return Err(layer_error(
            param,
            layer,
            "is int8-quantised (param 8): int8-quantised ncnn models are not supported",
        ));
    }
    // dynamic_weight: param 19 of Convolution, 28 of Deconvolution (whose 19 is an output
    // padding, which the layer's own geometry accounts for).
    let dynamic = if layer.kind == "Deconvolution" {
        28
    } else {
        19
    };
    if layer.int(param, dynamic, 0)? != 0 {
        return Err(layer_error(
            param,
            layer,
            &format!(
                "takes its kernel as an input (dynamic_weight, param {dynamic}), which is not \
                 supported"
            ),
        ));
    }
    if num_output == 0 || kernel_w == 0 || kernel_h == 0 || data_size == 0 {
        return Err(layer_error(
            param,
            layer,
            &format!(
                "has num_output {num_output}, kernel {kernel_h}x{kernel_w}, weight_data_size \
                 {data_size}: expected all of them nonzero"
            ),
        ));
    }
    let per_input = num_output
        .checked_mul(kernel_h)
        .and_then(|n| n.checked_mul(kernel_w));
    let in_channels = match per_input {
        Some(p) if data_size % p == 0 => data_size / p,
        _ => {
            return Err(layer_error(
                param,
                layer,
                &format!(
                "has weight_data_size {data_size}, expected a multiple of num_output x kernel_h \
                     x kernel_w = {num_output} x {kernel_h} x {kernel_w}"
            ),
            ))
        }
    };
    let shape = [num_output, in_channels, kernel_h, kernel_w];
    let weight = reader.kernel(layer, data_size, &shape)?;
    let bias = if bias_term {
        Some(reader.f32s(layer, num_output)?)
    } else {
        None
    };
    Ok(LayerWeights::Conv { weight, bias })
}

/// An `InnerProduct` (a fully connected layer: ncnn's export of a 1×1 convolution applied to a
/// pooled map) as a `[out, in, 1, 1]` kernel and its bias.
fn read_inner_product(param: &Path, reader: &mut Reader, layer: &Layer) -> Result<LayerWeights> {
    let num_output = layer.count(param, 0, 0)?;
    let bias_term = layer.int(param, 1, 0)? != 0;
    let data_size = layer.count(param, 2, 0)?;
    if layer.int(param, 8, 0)? != 0 {
        return Err(layer_error(
            param,
            layer,
            "is int8-quantised (param 8): int8-quantised ncnn models are not supported",
        ));
    }
    if num_output == 0 || data_size == 0 || data_size % num_output != 0 {
        return Err(layer_error(
            param,
            layer,
            &format!(
                "has num_output {num_output} and weight_data_size {data_size}: expected a \
                 nonzero multiple of num_output"
            ),
        ));
    }
    let shape = [num_output, data_size / num_output, 1, 1];
    let weight = reader.kernel(layer, data_size, &shape)?;
    let bias = if bias_term {
        Some(reader.f32s(layer, num_output)?)
    } else {
        None
    };
    Ok(LayerWeights::Conv { weight, bias })
}

fn layer_error(param: &Path, layer: &Layer, message: &str) -> crate::Error {
    weights_error(
        param,
        format!(
            "{} line {}: layer {} {message}",
            file_name(param),
            layer.line,
            layer.describe()
        ),
    )
}

/// A cursor over the `.bin` bytes.
struct Reader<'a> {
    path: &'a Path,
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// The next `bytes` bytes; `what` says in the error what they were to hold.
    fn take(&mut self, layer: &Layer, bytes: Option<usize>, what: &str) -> Result<&'a [u8]> {
        let end = bytes.and_then(|b| self.pos.checked_add(b));
        match (bytes, end) {
            (Some(bytes), Some(end)) if end <= self.data.len() => {
                let slice = &self.data[self.pos..end];
                self.pos = end;
                debug_assert_eq!(slice.len(), bytes);
                Ok(slice)
            }
            _ => Err(weights_error(
                self.path,
                format!(
                    "{} is truncated: layer {} needs {what} at byte {} but the file ends at byte {}",
                    file_name(self.path),
                    layer.describe(),
                    self.pos,
                    self.data.len()
                ),
            )),
        }
    }

    /// A type-1 blob: `n` raw little-endian f32, shape `[n]`.
    fn f32s(&mut self, layer: &Layer, n: usize) -> Result<Tensor> {
        let values = self.f32_vec(layer, n, "f32 values")?;
        self.finite(layer, values.iter().filter(|v| !v.is_finite()).count(), n)?;
        Ok(Tensor::from_vec(values, n, &Device::Cpu)?)
    }

    /// Refuses a layer whose `n` values hold `bad` NaN or infinite ones.
    fn finite(&self, layer: &Layer, bad: usize, n: usize) -> Result<()> {
        if bad == 0 {
            return Ok(());
        }
        Err(weights_error(
            self.path,
            format!(
                "layer {} holds {bad} NaN or infinite value{} (of {n}): the weights are corrupt",
                layer.describe(),
                if bad == 1 { "" } else { "s" }
            ),
        ))
    }

    fn f32_vec(&mut self, layer: &Layer, n: usize, what: &str) -> Result<Vec<f32>> {
        let bytes = self.take(
            layer,
            n.checked_mul(4),
            &format!("{n} {what} ({} bytes)", n.saturating_mul(4)),
        )?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// A type-0 blob of `n` values: the 4-byte flag, then the values in the format it names.
    fn kernel(&mut self, layer: &Layer, n: usize, shape: &[usize]) -> Result<Tensor> {
        let flag = self.take(layer, Some(4), "the 4-byte weight format flag")?;
        let flag = [flag[0], flag[1], flag[2], flag[3]];
        let values = match u32::from_le_bytes(flag) {
            TAG_FP16 => {
                // ncnn pads the half-float data to a 4-byte boundary.
                let bytes = n.checked_mul(2);
                let padded = bytes.and_then(|b| b.checked_next_multiple_of(4));
                let what = format!("{n} fp16 weights ({} bytes)", n.saturating_mul(2));
                let raw = &self.take(layer, padded, &what)?[..n * 2];
                self.finite(layer, count_non_finite(raw, DType::F16), n)?;
                // Candle reads the buffer in host order; the file is little-endian.
                let mut native: Vec<u8> = raw.to_vec();
                if cfg!(target_endian = "big") {
                    native.chunks_exact_mut(2).for_each(|c| c.swap(0, 1));
                }
                return Ok(Tensor::from_raw_buffer(
                    &native,
                    DType::F16,
                    shape,
                    &Device::Cpu,
                )?);
            }
            TAG_INT8 => {
                return Err(weights_error(
                    self.path,
                    format!(
                        "{}: layer {} stores int8 weights (flag 0x{TAG_INT8:08X}): int8-quantised \
                         ncnn models are not supported",
                        file_name(self.path),
                        layer.describe()
                    ),
                ))
            }
            TAG_RAW_F32 => self.f32_vec(layer, n, "f32 weights")?,
            _ if flag == [0; 4] => self.f32_vec(layer, n, "f32 weights")?,
            _ => {
                // Any other nonzero flag: a 256-entry f32 table and one u8 index per weight.
                let table = self.f32_vec(layer, TABLE_LEN, "f32 quantisation table entries")?;
                let padded = n.checked_next_multiple_of(4);
                let indices = self.take(layer, padded, &format!("{n} u8 table indices"))?;
                indices[..n].iter().map(|&i| table[i as usize]).collect()
            }
        };
        self.finite(layer, values.iter().filter(|v| !v.is_finite()).count(), n)?;
        Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
    }
}
