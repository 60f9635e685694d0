//! Pillow's bicubic resampling (`libImaging/Resample.c`), which the reference uses to floor the
//! input to a multiple of the VAE scale factor. (The image ⇄ tensor conversions of diffusers'
//! `VaeImageProcessor` are [`crate::image_io::Rgb8::to_tensor`] and
//! [`crate::image_io::RgbF32::from_tensor`].)

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Pillow's per-output-pixel source window and fixed-point weights for one axis.
struct Coefficients {
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
    ksize: usize,
}

fn coefficients(in_size: usize, out_size: usize) -> Coefficients {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let k: Vec<f64> = (0..xmax)
            .map(|x| bicubic((x as f64 + xmin as f64 - center + 0.5) / filterscale))
            .collect();
        let total: f64 = k.iter().sum();
        for (x, w) in k.iter().enumerate() {
            let w = if total != 0.0 { w / total } else { *w };
            let fixed = w * (1u32 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if w < 0.0 {
                (fixed - 0.5) as i32
            } else {
                (fixed + 0.5) as i32
            };
        }
        bounds.push((xmin, xmax));
    }
    Coefficients {
        bounds,
        weights,
        ksize,
    }
}

fn clip8(acc: i64) -> u8 {
    if acc >= (1i64 << PRECISION_BITS) << 8 {
        255
    } else if acc <= 0 {
        0
    } else {
        (acc >> PRECISION_BITS) as u8
    }
}

/// One resampling pass along x (`horizontal`) or y, on interleaved RGB.
fn pass(src: &[u8], w: usize, h: usize, out_len: usize, horizontal: bool) -> Vec<u8> {
    let (in_len, other) = if horizontal { (w, h) } else { (h, w) };
    let c = coefficients(in_len, out_len);
    let (ow, oh) = if horizontal {
        (out_len, h)
    } else {
        (w, out_len)
    };
    let mut out = vec![0u8; ow * oh * 3];
    for o in 0..out_len {
        let (start, count) = c.bounds[o];
        let k = &c.weights[o * c.ksize..o * c.ksize + count];
        for line in 0..other {
            for ch in 0..3 {
                let mut acc: i64 = 1 << (PRECISION_BITS - 1);
                for (i, &wgt) in k.iter().enumerate() {
                    let (x, y) = if horizontal {
                        (start + i, line)
                    } else {
                        (line, start + i)
                    };
                    acc += src[(y * w + x) * 3 + ch] as i64 * wgt as i64;
                }
                let (x, y) = if horizontal { (o, line) } else { (line, o) };
                out[(y * ow + x) * 3 + ch] = clip8(acc);
            }
        }
    }
    out
}

/// `PIL.Image.resize((new_w, new_h), Image.BICUBIC)` on an RGB image: horizontal pass, then
/// vertical, each rounded to 8 bits as Pillow does. Same-size resizes return the input.
pub(crate) fn pil_bicubic_resize_rgb8(
    rgb: &[u8],
    width: usize,
    height: usize,
    new_width: usize,
    new_height: usize,
) -> Vec<u8> {
    let mut data = rgb.to_vec();
    let mut w = width;
    if new_width != width {
        data = pass(&data, w, height, new_width, true);
        w = new_width;
    }
    if new_height != height {
        data = pass(&data, w, height, new_height, false);
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity_and_constant_images_stay_constant() {
        let rgb: Vec<u8> = (0..10 * 7 * 3).map(|i| (i * 37 % 256) as u8).collect();
        assert_eq!(pil_bicubic_resize_rgb8(&rgb, 10, 7, 10, 7), rgb);
        let flat = vec![77u8; 18 * 13 * 3];
        let out = pil_bicubic_resize_rgb8(&flat, 18, 13, 16, 12);
        assert_eq!(out.len(), 16 * 12 * 3);
        assert!(out.iter().all(|&v| v == 77));
    }
}
