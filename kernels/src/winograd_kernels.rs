//! The transform loops of the two Winograd variants in [`crate::winograd`], F(2×2, 3×3) and
//! F(4×4, 3×3) (Lavin & Gray 2015; the F(4×4) matrices with interpolation points 0, ±1, ±2, ∞
//! are theirs, and oneDNN's and ncnn's). Each runs along a whole row of tiles as plain vector
//! loops, compiled for the CPU running them (AVX-512 where there is one).
//!
//! Per variant with output tile m and input tile α = m + 2:
//! - `input_rows`: Bᵀ applied down α padded input rows, element by element;
//! - `input_cols`: B applied across each tile's α columns (tile t starts at column m·t) of one
//!   such row, one output row per ξ column index;
//! - `output_rows`: Aᵀ applied down α rows of M, giving m rows;
//! - `output_cols`: A across each tile's α values, m output columns per tile, interleaved, plus
//!   the bias.

use std::mem::MaybeUninit;

use crate::fast_math::multiversion;

/// A variant's transform loops, α = `A` and m = `M`.
pub struct Kernels<const A: usize, const M: usize> {
    pub input_rows: fn([&[f32]; A], [&mut [f32]; A]),
    pub input_cols: fn(&[f32], [&mut [f32]; A]),
    pub output_rows: fn([&[f32]; A], [&mut [f32]; M]),
    pub output_cols: fn([&[f32]; A], f32, &mut [f32]),
}

pub const F2: Kernels<4, 2> = Kernels {
    input_rows: input_rows_f2,
    input_cols: input_cols_f2,
    output_rows: output_rows_f2,
    output_cols: output_cols_f2,
};

pub const F4: Kernels<6, 4> = Kernels {
    input_rows: input_rows_f4,
    input_cols: input_cols_f4,
    output_rows: output_rows_f4,
    output_cols: output_cols_f4,
};

/// G of F(2×2, 3×3): U = G g Gᵀ.
pub const G_F2: [[f32; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// G of F(4×4, 3×3).
pub const G_F4: [[f32; 3]; 6] = [
    [0.25, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

// F(2×2, 3×3): Bᵀ = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]], Aᵀ = [[1,1,1,0],[0,1,-1,-1]].

multiversion! {
    pub fn input_rows_f2(x: [&[f32]; 4], d: [&mut [f32]; 4]) {
        let [x0, x1, x2, x3] = x;
        let [d0, d1, d2, d3] = d;
        let n = d0.len();
        let (x0, x1, x2, x3) = (&x0[..n], &x1[..n], &x2[..n], &x3[..n]);
        let (d1, d2, d3) = (&mut d1[..n], &mut d2[..n], &mut d3[..n]);
        for i in 0..n {
            d0[i] = x0[i] - x2[i];
            d1[i] = x1[i] + x2[i];
            d2[i] = x2[i] - x1[i];
            d3[i] = x1[i] - x3[i];
        }
    }
}

multiversion! {
    pub fn input_cols_f2(d: &[f32], v: [&mut [f32]; 4]) {
        let [w0, w1, w2, w3] = v;
        let tw = w0.len();
        let (w1, w2, w3) = (&mut w1[..tw], &mut w2[..tw], &mut w3[..tw]);
        let here = &d[..2 * tw];
        let next = &d[2..2 * tw + 2];
        for t in 0..tw {
            let (e, o, e1, o1) = (here[2 * t], here[2 * t + 1], next[2 * t], next[2 * t + 1]);
            w0[t] = e - e1;
            w1[t] = o + e1;
            w2[t] = e1 - o;
            w3[t] = o - o1;
        }
    }
}

multiversion! {
    pub fn output_rows_f2(m: [&[f32]; 4], s: [&mut [f32]; 2]) {
        let [s0, s1] = s;
        let n = s0.len();
        let [m0, m1, m2, m3] = m;
        let (m0, m1, m2, m3, s1) = (&m0[..n], &m1[..n], &m2[..n], &m3[..n], &mut s1[..n]);
        for t in 0..n {
            s0[t] = m0[t] + m1[t] + m2[t];
            s1[t] = m1[t] - m2[t] - m3[t];
        }
    }
}

multiversion! {
    pub fn output_cols_f2(q: [&[f32]; 4], bias: f32, y: &mut [f32]) {
        let [q0, q1, q2, q3] = q;
        let tw = y.len() / 2;
        let (q0, q1, q2, q3) = (&q0[..tw], &q1[..tw], &q2[..tw], &q3[..tw]);
        for t in 0..tw {
            y[2 * t] = q0[t] + q1[t] + q2[t] + bias;
            y[2 * t + 1] = q1[t] - q2[t] - q3[t] + bias;
        }
    }
}

// F(4×4, 3×3): Bᵀ = [[4,0,-5,0,1,0],[0,-4,-4,1,1,0],[0,4,-4,-1,1,0],[0,-2,-1,2,1,0],
// [0,2,-1,-2,1,0],[0,4,0,-5,0,1]], Aᵀ = [[1,1,1,1,1,0],[0,1,-1,2,-2,0],[0,1,1,4,4,0],
// [0,1,-1,8,-8,1]]. The shared sums are formed once, as ncnn and oneDNN do.

/// Bᵀ on six values.
#[inline(always)]
fn bt6(d: [f32; 6]) -> [f32; 6] {
    let [d0, d1, d2, d3, d4, d5] = d;
    let a = d4 - 4.0 * d2; // shared by rows 1 and 2
    let b = d3 - 4.0 * d1;
    let c = d4 - d2; // shared by rows 3 and 4
    let e = 2.0 * (d3 - d1);
    [
        4.0 * d0 - 5.0 * d2 + d4,
        a + b,
        a - b,
        c + e,
        c - e,
        4.0 * d1 - 5.0 * d3 + d5,
    ]
}

/// Aᵀ on six values.
#[inline(always)]
fn at6(m: [f32; 6]) -> [f32; 4] {
    let [m0, m1, m2, m3, m4, m5] = m;
    let (p12, n12) = (m1 + m2, m1 - m2);
    let (p34, n34) = (m3 + m4, m3 - m4);
    [
        m0 + p12 + p34,
        n12 + 2.0 * n34,
        p12 + 4.0 * p34,
        n12 + 8.0 * n34 + m5,
    ]
}

multiversion! {
    pub fn input_rows_f4(x: [&[f32]; 6], d: [&mut [f32]; 6]) {
        let n = d[0].len();
        let x = x.map(|r| &r[..n]);
        let [d0, d1, d2, d3, d4, d5] = d;
        let (d1, d2, d3, d4, d5) = (&mut d1[..n], &mut d2[..n], &mut d3[..n], &mut d4[..n], &mut d5[..n]);
        for i in 0..n {
            let r = bt6([x[0][i], x[1][i], x[2][i], x[3][i], x[4][i], x[5][i]]);
            d0[i] = r[0];
            d1[i] = r[1];
            d2[i] = r[2];
            d3[i] = r[3];
            d4[i] = r[4];
            d5[i] = r[5];
        }
    }
}

/// Tiles [`input_cols_f4`] deinterleaves at a time (on the stack).
const PHASE_CHUNK: usize = 64;

/// `s` as the f32 values it holds.
///
/// # Safety
/// Every element of `s` must have been written.
#[inline(always)]
unsafe fn assume_written(s: &[MaybeUninit<f32>]) -> &[f32] {
    // SAFETY: MaybeUninit<f32> has the layout of f32, and the caller guarantees every element
    // is initialised.
    unsafe { &*(s as *const [MaybeUninit<f32>] as *const [f32]) }
}

multiversion! {
    pub fn input_cols_f4(d: &[f32], v: [&mut [f32]; 6]) {
        let tw = v[0].len();
        let [v0, v1, v2, v3, v4, v5] = v;
        let (v1, v2, v3, v4, v5) = (&mut v1[..tw], &mut v2[..tw], &mut v3[..tw], &mut v4[..tw], &mut v5[..tw]);
        // Tile t reads columns 4t..4t+6. Read in place that is a stride-4 gather the compiler
        // leaves scalar; split first into the four column phases p[k][t] = d[4t + k] (a plain
        // interleaved load), the transform is a unit-stride vector loop over t, columns 4t + 4
        // and 4t + 5 being p[0][t + 1] and p[1][t + 1].
        // Left unwritten until each chunk writes the part it reads: zeroing the 1 KiB at every
        // call (tens of thousands per convolution) cost more than the loop over a narrow row.
        let mut p = [[MaybeUninit::<f32>::uninit(); PHASE_CHUNK + 1]; 4];
        let mut start = 0;
        while start < tw {
            let n = PHASE_CHUNK.min(tw - start);
            let src = &d[4 * start..4 * (start + n) + 2];
            let [p0, p1, p2, p3] = &mut p;
            for t in 0..n {
                p0[t].write(src[4 * t]);
                p1[t].write(src[4 * t + 1]);
                p2[t].write(src[4 * t + 2]);
                p3[t].write(src[4 * t + 3]);
            }
            p0[n].write(src[4 * n]);
            p1[n].write(src[4 * n + 1]);
            // SAFETY: elements 0..=n of p0 and p1 and 0..n of p2 and p3 were written just
            // above (n ≤ PHASE_CHUNK, inside the arrays).
            let (p0, p1, p2, p3) = unsafe {
                (
                    assume_written(&p0[..=n]),
                    assume_written(&p1[..=n]),
                    assume_written(&p2[..n]),
                    assume_written(&p3[..n]),
                )
            };
            for t in 0..n {
                let r = bt6([p0[t], p1[t], p2[t], p3[t], p0[t + 1], p1[t + 1]]);
                v0[start + t] = r[0];
                v1[start + t] = r[1];
                v2[start + t] = r[2];
                v3[start + t] = r[3];
                v4[start + t] = r[4];
                v5[start + t] = r[5];
            }
            start += n;
        }
    }
}

multiversion! {
    pub fn output_rows_f4(m: [&[f32]; 6], s: [&mut [f32]; 4]) {
        let n = s[0].len();
        let m = m.map(|r| &r[..n]);
        let [s0, s1, s2, s3] = s;
        let (s1, s2, s3) = (&mut s1[..n], &mut s2[..n], &mut s3[..n]);
        for t in 0..n {
            let r = at6([m[0][t], m[1][t], m[2][t], m[3][t], m[4][t], m[5][t]]);
            s0[t] = r[0];
            s1[t] = r[1];
            s2[t] = r[2];
            s3[t] = r[3];
        }
    }
}

multiversion! {
    pub fn output_cols_f4(q: [&[f32]; 6], bias: f32, y: &mut [f32]) {
        let tw = y.len() / 4;
        let q = q.map(|r| &r[..tw]);
        for t in 0..tw {
            let r = at6([q[0][t], q[1][t], q[2][t], q[3][t], q[4][t], q[5][t]]);
            y[4 * t] = r[0] + bias;
            y[4 * t + 1] = r[1] + bias;
            y[4 * t + 2] = r[2] + bias;
            y[4 * t + 3] = r[3] + bias;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BT4: [[f32; 6]; 6] = [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ];
    const AT4: [[f32; 6]; 4] = [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
        [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
    ];

    /// The factored forms equal the matrices they stand for.
    #[test]
    fn factored_transforms_equal_the_matrices() {
        let v = [0.5f32, -1.25, 2.0, 3.5, -0.75, 1.0];
        let bt = bt6(v);
        for (row, &got) in BT4.iter().zip(&bt) {
            let want: f32 = row.iter().zip(&v).map(|(a, b)| a * b).sum();
            assert_eq!(got, want);
        }
        let at = at6(v);
        for (row, &got) in AT4.iter().zip(&at) {
            let want: f32 = row.iter().zip(&v).map(|(a, b)| a * b).sum();
            assert_eq!(got, want);
        }
    }
}
