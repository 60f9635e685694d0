//! SRCNN's hyper-parameters (Dong et al. 2015, the common PyTorch port's `SRCNN(num_channels)`
//! generalised to the filter counts and kernel sizes its weights have: 9-5-5 and 9-1-5, 64 and
//! 32 filters) and what tiling and memory planning need of them. The scale is not in the
//! weights: it comes from the `diffsr.scale` entry ([`SRCNN_SCALE_KEY`]) or
//! [`crate::gan::GanModel::with_scale`], else [`DEFAULT_SCALE`].

use candle_core::DType;

use super::Srcnn;
use crate::error::Result;
use crate::gan::arch::{ArchConfig, SrNet, Weights};

/// The state-dict entry holding an SRCNN's scale (a `[1]` tensor), so that a converted model
/// keeps the factor it was trained for.
pub const SRCNN_SCALE_KEY: &str = "diffsr.scale";

/// The scale an SRCNN runs at when nothing says otherwise.
pub const DEFAULT_SCALE: usize = 2;

/// The scales an SRCNN may run at.
pub const MAX_SCALE: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub struct SrcnnParams {
    /// Channels the network sees: 1 (the Y of YCbCr, the common port) or 3 (RGB).
    pub net_channels: usize,
    /// Filters of the first and second layer (n1, n2: 64, 32).
    pub filters: [usize; 2],
    /// Kernel sizes of the three layers (f1, f2, f3: 9-5-5 or 9-1-5), odd, "same" padding.
    pub kernels: [usize; 3],
    /// Whether the convs have biases (the port's do).
    pub bias: bool,
    /// The bicubic upscale before the network.
    pub scale: usize,
}

impl SrcnnParams {
    /// The network's receptive radius in output pixels.
    fn net_radius(&self) -> usize {
        self.kernels.iter().map(|k| k / 2).sum()
    }
}

impl ArchConfig for SrcnnParams {
    fn scale(&self) -> usize {
        self.scale
    }

    /// The engine hands RGB in and takes RGB out whatever the network sees.
    fn in_channels(&self) -> usize {
        3
    }

    fn out_channels(&self) -> usize {
        3
    }

    /// Exact: the bicubic reads 2 input pixels around, the network `net_radius` output pixels
    /// (8 for 9-5-5), one more input pixel for the rounding of output to input pixels.
    fn context_radius(&self) -> usize {
        2 + self.net_radius().div_ceil(self.scale.max(1)) + 1
    }

    fn describe(&self) -> String {
        let [f1, f2, f3] = self.kernels;
        let [n1, n2] = self.filters;
        let on = if self.net_channels == 1 {
            "on Y of YCbCr"
        } else {
            "on RGB"
        };
        format!(
            "SRCNN x{} ({f1}-{f2}-{f3}, {n1}/{n2} filters, {on} after a bicubic upscale)",
            self.scale
        )
    }

    /// All at output size: the bicubic RGB and its YCbCr (6), the two feature maps (n1 + n2),
    /// the widest unfolded conv input (k² · channels in), the output (3).
    fn bytes_per_input_pixel(&self, dtype: DType) -> usize {
        let [f1, f2, f3] = self.kernels;
        let [n1, n2] = self.filters;
        let unfolded = (f1 * f1 * self.net_channels)
            .max(f2 * f2 * n1)
            .max(f3 * f3 * n2);
        let floats = (9 + n1 + n2 + unfolded) * self.scale * self.scale;
        floats * dtype.size_in_bytes()
    }

    fn build(&self, weights: &Weights<'_>) -> Result<Box<dyn SrNet>> {
        Ok(Box::new(Srcnn::new(self, weights)?))
    }
}
