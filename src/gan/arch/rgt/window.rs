//! One branch of RGT's rectangle-window self-attention (Rwin-SA), the reference's
//! `WindowAttention` (spandrel 0.4.2 `architectures/RGT/__arch/rgt.py`): the zero-padded
//! (and, in shifted blocks, cyclically rolled) q, k, v maps are cut into `hs × ws` windows,
//! each window attends within itself per head with a dynamic relative-position bias (an MLP
//! of the offsets, `DynamicPosBias`, computed once here at load) and, in shifted blocks, the
//! −100 mask between pixels the roll brought together from different regions.
//!
//! The reference pads, rolls and partitions with four copies of the map and builds the mask
//! as a (windows, n, n) tensor. Here the padding, the roll and the partition are index
//! arithmetic ([`Geometry`]): one gather writes q (scaled), k and v straight into
//! (3, windows × heads, n, d); the scores of all windows × heads come from one batched
//! matmul per chunk of windows (chunks bound the score memory, see
//! [`SCORE_FLOATS_PER_PIXEL`]); the bias and the mask (from per-token region labels, never a
//! mask tensor) are added in the pass that runs the softmax; the output stays in window
//! order until [`super::lsa`] writes both branches back to pixel order in one pass.

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use super::config::SCORE_FLOATS_PER_PIXEL;
use crate::error::{Error, Result};
use crate::gan::arch::Weights;
use crate::models::layers::cpu_dispatch::{cpu_threads, on_cpu_f32};
use crate::models::layers::layer_norm::layer_norm;
use crate::models::layers::softmax::softmax_last_dim;

/// What the shift mask adds between tokens of different regions.
const MASK: f32 = -100.0;
/// nn.LayerNorm's default epsilon.
const EPS: f32 = 1e-5;

/// Python's `range(n)[slice(start, stop)]` for the `slice(-a, -b)` / `slice(-a, None)` forms
/// of the reference's `calculate_mask` (`-0` is 0, not the end).
fn py_slice(n: usize, start: isize, stop: Option<isize>) -> std::ops::Range<usize> {
    let resolve = |i: isize| -> usize {
        if i < 0 {
            n.saturating_sub(i.unsigned_abs())
        } else {
            (i as usize).min(n)
        }
    };
    let (a, b) = (resolve(start), stop.map_or(n, resolve));
    a..b.max(a)
}

/// The region (0, 1, 2) `calculate_mask` gives coordinate `c` of an axis of length `n` with
/// window `s` and shift `t`: the last of its three slices that holds `c`.
fn region(c: usize, n: usize, s: usize, t: usize) -> u8 {
    let (s, t) = (s as isize, t as isize);
    let slices = [
        py_slice(n, 0, Some(-s)),
        py_slice(n, -s, Some(-t)),
        py_slice(n, -t, None),
    ];
    (0..3u8)
        .rev()
        .find(|&i| slices[i as usize].contains(&c))
        .unwrap_or(0)
}

/// Where each window token of one branch comes from: an h × w map zero-padded to hp × wp,
/// rolled up-left by (sh, sw), cut into hs × ws windows in row-major window order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Geometry {
    pub hs: usize,
    pub ws: usize,
    /// The roll (0, 0 in unshifted blocks).
    pub sh: usize,
    pub sw: usize,
    pub h: usize,
    pub w: usize,
    pub hp: usize,
    pub wp: usize,
}

impl Geometry {
    /// Windows across one padded map.
    pub(super) fn cols(&self) -> usize {
        self.wp / self.ws
    }

    /// Windows per image.
    pub(super) fn windows(&self) -> usize {
        (self.hp / self.hs) * self.cols()
    }

    pub(super) fn tokens(&self) -> usize {
        self.hs * self.ws
    }

    fn shifted(&self) -> bool {
        self.sh != 0 || self.sw != 0
    }

    /// The rolled-map coordinates of token `n` of window `win`.
    fn rolled(&self, win: usize, n: usize) -> (usize, usize) {
        let (wy, wx) = (win / self.cols(), win % self.cols());
        (wy * self.hs + n / self.ws, wx * self.ws + n % self.ws)
    }

    /// The pixel (y · w + x of the unpadded map) of token `n` of window `win`, or `None` in
    /// the zero padding.
    pub(super) fn source(&self, win: usize, n: usize) -> Option<usize> {
        let (ry, rx) = self.rolled(win, n);
        let (y, x) = ((ry + self.sh) % self.hp, (rx + self.sw) % self.wp);
        (y < self.h && x < self.w).then_some(y * self.w + x)
    }

    /// The (window, token) that pixel (y, x) of the unpadded map went to.
    pub(super) fn dest(&self, y: usize, x: usize) -> (usize, usize) {
        let ry = (y + self.hp - self.sh) % self.hp;
        let rx = (x + self.wp - self.sw) % self.wp;
        (
            (ry / self.hs) * self.cols() + rx / self.ws,
            (ry % self.hs) * self.ws + rx % self.ws,
        )
    }

    /// The mask's region label (3 · row region + column region) of every (window, token),
    /// or `None` in unshifted blocks (no mask).
    fn labels(&self) -> Option<Vec<u8>> {
        self.shifted().then(|| {
            (0..self.windows() * self.tokens())
                .map(|i| {
                    let (ry, rx) = self.rolled(i / self.tokens(), i % self.tokens());
                    3 * region(ry, self.hp, self.hs, self.sh)
                        + region(rx, self.wp, self.ws, self.sw)
                })
                .collect()
        })
    }
}

/// `WindowAttention` of one branch: its window, heads and precomputed position bias.
pub(super) struct WindowAttention {
    pub hs: usize,
    pub ws: usize,
    heads: usize,
    head_dim: usize,
    scale: f64,
    /// (heads, n, n), in the compute dtype and device.
    bias: Tensor,
}

impl WindowAttention {
    /// Branch `prefix` (`…attn.attns.{0,1}`) with an `hs × ws` window over `dim` channels
    /// in `heads` heads; `pos_dim` is its position-bias MLP's width.
    pub(super) fn new(
        w: &Weights,
        prefix: &str,
        (hs, ws): (usize, usize),
        dim: usize,
        heads: usize,
        pos_dim: usize,
    ) -> Result<Self> {
        let head_dim = dim / heads;
        let table = dynamic_pos_bias(
            &w.on_host(DType::F64),
            &format!("{prefix}.pos"),
            hs,
            ws,
            pos_dim,
            heads,
        )?;
        let bias = gather_bias(&table, hs, ws, heads)?
            .to_dtype(w.dtype)?
            .to_device(w.device)?;
        Ok(Self {
            hs,
            ws,
            heads,
            head_dim,
            scale: (head_dim as f64).powf(-0.5),
            bias,
        })
    }

    /// Attention of the branch whose q, k and v are channels `offset ..` of each third of
    /// `qkv` (B, h·w, 3·c): (B · windows · heads, n, d) in window order.
    pub(super) fn forward(
        &self,
        qkv: &Tensor,
        offset: usize,
        c: usize,
        geo: &Geometry,
    ) -> Result<Tensor> {
        let (b, _, _) = qkv.dims3()?;
        let (heads, n) = (self.heads, geo.tokens());
        let windows = b * geo.windows();
        let gathered = self.gather(qkv, offset, c, geo)?;
        let (q, k, v) = (gathered.get(0)?, gathered.get(1)?, gathered.get(2)?);
        let labels = geo.labels();
        // Windows per chunk: its scores within the per-pixel allowance, one window at least.
        let chunk = (windows * n * SCORE_FLOATS_PER_PIXEL / (heads * n * n)).clamp(1, windows);
        let mut outs = Vec::with_capacity(windows.div_ceil(chunk));
        for first in (0..windows).step_by(chunk) {
            let len = chunk.min(windows - first);
            let rows = |t: &Tensor| t.narrow(0, first * heads, len * heads);
            let scores = rows(&q)?.matmul(&rows(&k)?.t()?)?;
            let probs =
                self.biased_softmax(&scores, labels.as_deref(), first % geo.windows(), geo)?;
            drop(scores);
            outs.push(probs.matmul(&rows(&v)?)?);
        }
        Ok(Tensor::cat(&outs, 0)?)
    }

    /// q · scale, k and v of every window token: (3, B · windows · heads, n, d).
    fn gather(&self, qkv: &Tensor, offset: usize, c: usize, geo: &Geometry) -> Result<Tensor> {
        let (b, l, c3) = qkv.dims3()?;
        let (heads, d, n) = (self.heads, self.head_dim, geo.tokens());
        let windows = b * geo.windows();
        if l != geo.h * geo.w || c3 != 3 * c || offset + heads * d > c {
            return Err(Error::Tensor(candle_core::Error::Msg(format!(
                "RGT window attention: qkv {:?} does not fit {}x{} with {heads} heads of {d}",
                qkv.dims(),
                geo.h,
                geo.w
            ))));
        }
        let scale = self.scale as f32;
        let fast = on_cpu_f32([qkv], [], (3, windows * heads, n, d), |[src], []| {
            let part = windows * heads * n * d;
            let mut out = vec![0f32; 3 * part];
            // One window's heads of q, k and v at a time (three disjoint slices).
            let (q, rest) = out.split_at_mut(part);
            let (k, v) = rest.split_at_mut(part);
            let block = heads * n * d;
            q.par_chunks_mut(block)
                .zip(k.par_chunks_mut(block).zip(v.par_chunks_mut(block)))
                .enumerate()
                .for_each(|(bw, (q, (k, v)))| {
                    let (image, win) = (bw / geo.windows(), bw % geo.windows());
                    for t in 0..n {
                        let Some(p) = geo.source(win, t) else {
                            continue;
                        };
                        let row = &src[(image * l + p) * c3..][..c3];
                        for h in 0..heads {
                            let at = (h * n + t) * d;
                            let from = offset + h * d;
                            for (o, &x) in q[at..at + d].iter_mut().zip(&row[from..from + d]) {
                                *o = x * scale;
                            }
                            k[at..at + d].copy_from_slice(&row[c + from..c + from + d]);
                            v[at..at + d].copy_from_slice(&row[2 * c + from..2 * c + from + d]);
                        }
                    }
                });
            out
        })?;
        if let Some(g) = fast {
            return Ok(g);
        }
        // Rows of the map plus a zero row for the padding, gathered in window order.
        let index: Vec<u32> = (0..windows * n)
            .map(|i| {
                let (image, win, t) = (i / (geo.windows() * n), (i / n) % geo.windows(), i % n);
                geo.source(win, t).map_or(b * l, |p| image * l + p) as u32
            })
            .collect();
        let index = Tensor::from_vec(index, windows * n, qkv.device())?;
        let rows = Tensor::cat(
            &[
                qkv.reshape((b * l, c3))?,
                Tensor::zeros((1, c3), qkv.dtype(), qkv.device())?,
            ],
            0,
        )?;
        let picked = rows
            .index_select(&index, 0)?
            .reshape((windows, n, 3, c))?
            .narrow(3, offset, heads * d)?
            .reshape((windows, n, 3, heads, d))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?
            .reshape((3, windows * heads, n, d))?;
        let q = (picked.get(0)? * self.scale)?;
        Ok(Tensor::stack(&[q, picked.get(1)?, picked.get(2)?], 0)?)
    }

    /// softmax(scores + bias + mask) for the scores (len · heads, n, n) of windows
    /// `first ..` (counted within one image; a chunk never spans two images' labels
    /// wrongly, since labels repeat per image).
    fn biased_softmax(
        &self,
        scores: &Tensor,
        labels: Option<&[u8]>,
        first: usize,
        geo: &Geometry,
    ) -> Result<Tensor> {
        let (rows, n, _) = scores.dims3()?;
        let heads = self.heads;
        let per_image = geo.windows();
        let threads = cpu_threads();
        let fast = on_cpu_f32([scores, &self.bias], [], scores.shape(), |[s, bias], []| {
            let mut biased = vec![0f32; s.len()];
            biased
                .par_chunks_mut(n * n)
                .zip(s.par_chunks(n * n))
                .enumerate()
                .for_each(|(i, (o, s))| {
                    let h = i % heads;
                    let bias = &bias[h * n * n..][..n * n];
                    for ((o, &s), &b) in o.iter_mut().zip(s).zip(bias) {
                        *o = s + b;
                    }
                    if let Some(labels) = labels {
                        let win = (first + i / heads) % per_image;
                        let lab = &labels[win * n..][..n];
                        for (row, &li) in o.chunks_exact_mut(n).zip(lab) {
                            for (o, &lj) in row.iter_mut().zip(lab) {
                                if lj != li {
                                    *o += MASK;
                                }
                            }
                        }
                    }
                });
            diffsr_kernels::softmax::softmax_last_dim(&biased, n, threads)
        })?;
        if let Some(p) = fast {
            return Ok(p);
        }
        let len = rows / heads;
        let mut x = scores
            .reshape((len, heads, n, n))?
            .broadcast_add(&self.bias.unsqueeze(0)?)?;
        if let Some(labels) = labels {
            let mask: Vec<f32> = (0..len)
                .flat_map(|i| {
                    let lab = &labels[((first + i) % per_image) * n..][..n];
                    lab.iter().flat_map(move |&li| {
                        lab.iter().map(move |&lj| if li == lj { 0.0 } else { MASK })
                    })
                })
                .collect();
            let mask = Tensor::from_vec(mask, (len, 1, n, n), scores.device())?
                .to_dtype(scores.dtype())?;
            x = x.broadcast_add(&mask)?;
        }
        Ok(softmax_last_dim(&x.reshape((rows, n, n))?)?)
    }
}

/// The reference's `rpe_biases`: every offset (dy, dx), dy in 1 − hs ..= hs − 1 (outer),
/// dx in 1 − ws ..= ws − 1, as (rows, 2) f64.
fn offsets(hs: usize, ws: usize) -> Result<Tensor> {
    let (hs, ws) = (hs as i64, ws as i64);
    let values: Vec<f64> = (1 - hs..hs)
        .flat_map(|dy| (1 - ws..ws).flat_map(move |dx| [dy as f64, dx as f64]))
        .collect();
    let rows = values.len() / 2;
    Ok(Tensor::from_vec(values, (rows, 2), &Device::Cpu)?)
}

/// `DynamicPosBias` (residual off): pos3(pos2(pos1(pos_proj(offsets)))), each `posN` a
/// layer norm, ReLU and linear layer: (rows, heads) f64 for weights read in f64.
fn dynamic_pos_bias(
    w: &Weights,
    prefix: &str,
    hs: usize,
    ws: usize,
    pos_dim: usize,
    heads: usize,
) -> Result<Tensor> {
    let linear = |x: &Tensor, name: &str, o: usize, i: usize| -> Result<Tensor> {
        let weight = w.get(&format!("{prefix}.{name}.weight"), &[o, i])?;
        let bias = w.get(&format!("{prefix}.{name}.bias"), &[o])?;
        Ok(x.matmul(&weight.t()?)?.broadcast_add(&bias)?)
    };
    let mut x = linear(&offsets(hs, ws)?, "pos_proj", pos_dim, 2)?;
    for (k, out) in [(1, pos_dim), (2, pos_dim), (3, heads)] {
        let norm = format!("pos{k}.0");
        let g = w.get(&format!("{prefix}.{norm}.weight"), &[pos_dim])?;
        let b = w.get(&format!("{prefix}.{norm}.bias"), &[pos_dim])?;
        x = layer_norm(&x, &g, &b, EPS)?.relu()?;
        x = linear(&x, &format!("pos{k}.2"), out, pos_dim)?;
    }
    Ok(x)
}

/// The bias table (rows, heads) indexed as the reference's `relative_position_index`: token
/// (y1, x1) to (y2, x2) reads row (y1 − y2 + hs − 1)·(2ws − 1) + (x1 − x2 + ws − 1); into
/// (heads, n, n).
fn gather_bias(table: &Tensor, hs: usize, ws: usize, heads: usize) -> Result<Tensor> {
    let table = table.to_vec2::<f64>()?;
    let n = hs * ws;
    let mut out = vec![0f64; heads * n * n];
    for i in 0..n {
        for j in 0..n {
            let (y1, x1, y2, x2) = (i / ws, i % ws, j / ws, j % ws);
            let row = (y1 + hs - 1 - y2) * (2 * ws - 1) + (x1 + ws - 1 - x2);
            let values = table.get(row).ok_or_else(|| {
                Error::unsupported("RGT position bias", format!("has no row {row}"))
            })?;
            for (h, &v) in values.iter().enumerate().take(heads) {
                out[(h * n + i) * n + j] = v;
            }
        }
    }
    Ok(Tensor::from_vec(out, (heads, n, n), &Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's `calculate_mask` regions, written out for a 12-long axis, window 4,
    /// shift 2: [0, 8) → 0, [8, 10) → 1, [10, 12) → 2.
    #[test]
    fn regions_follow_pythons_slices() {
        let got: Vec<u8> = (0..12).map(|c| region(c, 12, 4, 2)).collect();
        assert_eq!(got, [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 2]);
        // Shift 0 (window 1): slice(-0, None) is the whole axis.
        assert!((0..5).all(|c| region(c, 5, 1, 0) == 2));
        assert!(py_slice(5, -2, Some(0)).is_empty());
        assert_eq!(py_slice(5, -2, None), 3..5);
    }

    #[test]
    fn sources_and_destinations_invert_each_other() {
        let geo = Geometry {
            hs: 2,
            ws: 4,
            sh: 1,
            sw: 2,
            h: 5,
            w: 7,
            hp: 8,
            wp: 8,
        };
        assert_eq!(geo.windows(), 8);
        let mut seen = 0;
        for win in 0..geo.windows() {
            for t in 0..geo.tokens() {
                if let Some(p) = geo.source(win, t) {
                    assert_eq!(geo.dest(p / geo.w, p % geo.w), (win, t));
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, 35);
        // Token 0 of window 0 comes from (1, 2): the roll moved the map up-left.
        assert_eq!(geo.source(0, 0), Some(9));
        // Rolled rows 4..8 are padding rows (5, 6, 7) then row 0.
        assert_eq!(geo.source(2 * geo.cols(), 0), None);
    }
}
