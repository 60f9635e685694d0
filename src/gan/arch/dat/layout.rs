//! Every tensor of a DAT state dict, named and shaped from the hyper-parameters: the module
//! tree of spandrel 0.4.2 `architectures/DAT/__arch/DAT.py` (`conv_first`, `before_RG.1`,
//! `layers.i.blocks.j.{norm1, attn, norm2, ffn}`, `layers.i.conv`, `norm`, `conv_after_body`,
//! the upsampler). Detection checks a file against it before anything is built, and the tests
//! build synthetic state dicts from it.

use super::{DatParams, DatUpsampler, ResiConnection};

/// What a tensor of the layout is to diffsr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorRole {
    /// A learned parameter or a batch-norm running statistic: the network reads it.
    Weight,
    /// A buffer the reference derives from the hyper-parameters (`rpe_biases`,
    /// `relative_position_index`, `attn_mask_*`) or that inference ignores
    /// (`num_batches_tracked`): diffsr rebuilds or ignores it, so a file may leave it out,
    /// but one that is there must have its shape.
    Buffer,
}

/// One tensor of the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: TensorRole,
}

/// Width of the dynamic position bias MLP: `DynamicPosBias(dim // 4)` of a
/// `Spatial_Attention(embed_dim // 2)`, whose `pos_dim` is its `dim // 4`.
pub(super) fn pos_dim(embed_dim: usize) -> usize {
    embed_dim / 2 / 4 / 4
}

struct Builder {
    entries: Vec<LayoutEntry>,
}

impl Builder {
    fn add(&mut self, name: String, shape: &[usize], role: TensorRole) {
        self.entries.push(LayoutEntry {
            name,
            shape: shape.to_vec(),
            role,
        });
    }

    fn weight(&mut self, name: String, shape: &[usize]) {
        self.add(name, shape, TensorRole::Weight);
    }

    /// `prefix.weight` of `shape` and, when `bias`, `prefix.bias` of its first dimension.
    fn layer(&mut self, prefix: &str, shape: &[usize], bias: bool) {
        self.weight(format!("{prefix}.weight"), shape);
        if bias {
            self.weight(format!("{prefix}.bias"), &shape[..1]);
        }
    }

    /// `nn.LayerNorm(dim)` or the affine half of `nn.BatchNorm2d(dim)`.
    fn norm(&mut self, prefix: &str, dim: usize) {
        self.weight(format!("{prefix}.weight"), &[dim]);
        self.weight(format!("{prefix}.bias"), &[dim]);
    }

    /// `nn.BatchNorm2d(dim)`: affine parameters, running statistics, the batch counter.
    fn batch_norm(&mut self, prefix: &str, dim: usize) {
        self.norm(prefix, dim);
        self.weight(format!("{prefix}.running_mean"), &[dim]);
        self.weight(format!("{prefix}.running_var"), &[dim]);
        self.add(
            format!("{prefix}.num_batches_tracked"),
            &[],
            TensorRole::Buffer,
        );
    }

    /// A `1conv` (`prefix`) or `3conv` (`prefix.0`, `.2`, `.4`) residual connection.
    fn resi(&mut self, prefix: &str, c: usize, kind: ResiConnection) {
        match kind {
            ResiConnection::OneConv => self.layer(prefix, &[c, c, 3, 3], true),
            ResiConnection::ThreeConv => {
                let q = c / 4;
                self.layer(&format!("{prefix}.0"), &[q, c, 3, 3], true);
                self.layer(&format!("{prefix}.2"), &[q, q, 1, 1], true);
                self.layer(&format!("{prefix}.4"), &[c, q, 3, 3], true);
            }
        }
    }

    /// The q, k, v and output projections, the conv branch and the interaction module that
    /// both attention kinds share.
    fn attention_common(&mut self, a: &str, c: usize, qkv_bias: bool) {
        self.layer(&format!("{a}.qkv"), &[3 * c, c], qkv_bias);
        self.layer(&format!("{a}.proj"), &[c, c], true);
        self.layer(&format!("{a}.dwconv.0"), &[c, 1, 3, 3], true);
        self.batch_norm(&format!("{a}.dwconv.1"), c);
        self.layer(
            &format!("{a}.channel_interaction.1"),
            &[c / 8, c, 1, 1],
            true,
        );
        self.batch_norm(&format!("{a}.channel_interaction.2"), c / 8);
        self.layer(
            &format!("{a}.channel_interaction.4"),
            &[c, c / 8, 1, 1],
            true,
        );
        self.layer(
            &format!("{a}.spatial_interaction.0"),
            &[c / 16, c, 1, 1],
            true,
        );
        self.batch_norm(&format!("{a}.spatial_interaction.1"), c / 16);
        self.layer(
            &format!("{a}.spatial_interaction.3"),
            &[1, c / 16, 1, 1],
            true,
        );
    }

    /// One window orientation's `Spatial_Attention` (`{a}.attns.{idx}`): its position tables
    /// and its dynamic position bias MLP.
    fn window(&mut self, a: &str, p: &DatParams, idx: usize, heads: usize) {
        let [s0, s1] = p.split_size;
        let n = s0 * s1;
        let w = format!("{a}.attns.{idx}");
        self.add(
            format!("{w}.rpe_biases"),
            &[(2 * s0 - 1) * (2 * s1 - 1), 2],
            TensorRole::Buffer,
        );
        self.add(
            format!("{w}.relative_position_index"),
            &[n, n],
            TensorRole::Buffer,
        );
        let pd = pos_dim(p.embed_dim);
        self.layer(&format!("{w}.pos.pos_proj"), &[pd, 2], true);
        for (k, out) in [(1, pd), (2, pd), (3, heads / 2)] {
            self.norm(&format!("{w}.pos.pos{k}.0"), pd);
            self.layer(&format!("{w}.pos.pos{k}.2"), &[out, pd], true);
        }
    }
}

impl DatParams {
    /// Every tensor a state dict of these hyper-parameters holds (grouped by module, not in
    /// the reference's exact order), with the shift masks of an `img_size` model. Shapes follow the reference's
    /// integer divisions (`embed_dim // 8`, ...), so they are meaningful only for parameters
    /// that detection accepted.
    pub fn state_dict_layout(&self) -> Vec<LayoutEntry> {
        let c = self.embed_dim;
        let mut b = Builder {
            entries: Vec::new(),
        };
        b.layer("conv_first", &[c, self.in_channels, 3, 3], true);
        b.norm("before_RG.1", c);
        let [s0, s1] = self.split_size;
        let windows = (self.img_size / s0) * (self.img_size / s1);
        let hidden = self.ffn_hidden;
        for (i, (&depth, &heads)) in self.depth.iter().zip(&self.num_heads).enumerate() {
            for j in 0..depth {
                let blk = format!("layers.{i}.blocks.{j}");
                let a = format!("{blk}.attn");
                b.norm(&format!("{blk}.norm1"), c);
                if j % 2 == 0 {
                    if Self::shifted(i, j) {
                        for m in 0..2 {
                            b.add(
                                format!("{a}.attn_mask_{m}"),
                                &[windows, s0 * s1, s0 * s1],
                                TensorRole::Buffer,
                            );
                        }
                    }
                    b.attention_common(&a, c, self.qkv_bias);
                    b.window(&a, self, 0, heads);
                    b.window(&a, self, 1, heads);
                } else {
                    b.weight(format!("{a}.temperature"), &[heads, 1, 1]);
                    b.attention_common(&a, c, self.qkv_bias);
                }
                b.layer(&format!("{blk}.ffn.fc1"), &[hidden, c], true);
                b.norm(&format!("{blk}.ffn.sg.norm"), hidden / 2);
                b.layer(&format!("{blk}.ffn.sg.conv"), &[hidden / 2, 1, 3, 3], true);
                b.layer(&format!("{blk}.ffn.fc2"), &[c, hidden / 2], true);
                b.norm(&format!("{blk}.norm2"), c);
            }
            b.resi(&format!("layers.{i}.conv"), c, self.resi_connection);
        }
        b.norm("norm", c);
        b.resi("conv_after_body", c, self.resi_connection);
        match self.upsampler {
            DatUpsampler::PixelShuffle => {
                let nf = self.num_feat;
                b.layer("conv_before_upsample.0", &[nf, c, 3, 3], true);
                for (k, r) in upsample_steps(self.upscale).into_iter().enumerate() {
                    b.layer(
                        &format!("upsample.{}", 2 * k),
                        &[r * r * nf, nf, 3, 3],
                        true,
                    );
                }
                b.layer("conv_last", &[self.in_channels, nf, 3, 3], true);
            }
            DatUpsampler::PixelShuffleDirect => {
                let s = self.upscale;
                b.layer("upsample.0", &[s * s * self.in_channels, c, 3, 3], true);
            }
        }
        b.entries
    }
}

/// The pixel-shuffle factors of `Upsample(scale)`: ×2 steps for a power of two (none for 1),
/// one ×3 step for 3; empty for other scales, which the reference refuses.
pub(super) fn upsample_steps(scale: usize) -> Vec<usize> {
    if scale.is_power_of_two() {
        vec![2; scale.trailing_zeros() as usize]
    } else if scale == 3 {
        vec![3]
    } else {
        Vec::new()
    }
}
