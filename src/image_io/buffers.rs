//! The two in-memory image types of the API: [`Rgb8`], what decoders give and every engine
//! takes, and [`RgbF32`], what every engine returns (floats keep the precision a 16-bit output
//! needs). The tensor conversions are diffusers' `VaeImageProcessor` (`image_processor.py`):
//! `pil_to_numpy` then `numpy_to_pt` (value / 255) in, `numpy_to_pil` (`(x * 255).round()`) out;
//! tensors are (1, 3, h, w) f32 in [0, 1]. Engines convert at their edges, so no caller builds a
//! tensor.

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// An 8-bit RGB image, interleaved rows (3 bytes a pixel, row-major).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    pub data: Vec<u8>,
    pub width: usize,
    pub height: usize,
}

impl Rgb8 {
    /// An image from its pixels; the length must be `width * height * 3`.
    pub fn new(data: Vec<u8>, width: usize, height: usize) -> Result<Self> {
        check_len(data.len(), width, height)?;
        Ok(Self {
            data,
            width,
            height,
        })
    }

    /// (width, height).
    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// Checks that the pixels make the size (the fields are public).
    pub(crate) fn check(&self) -> Result<()> {
        check_len(self.data.len(), self.width, self.height)
    }

    /// The image as a (1, 3, h, w) f32 tensor in [0, 1] on `device`.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        check_len(self.data.len(), self.width, self.height)?;
        let data = planar(&self.data, |v| v as f32 / 255.0);
        Ok(Tensor::from_vec(
            data,
            (1, 3, self.height, self.width),
            device,
        )?)
    }

    /// The first image of a (n, 3, h, w) tensor in [0, 1], rounded to 8 bits.
    pub fn from_tensor(image: &Tensor) -> Result<Self> {
        Ok(RgbF32::from_tensor(image)?.to_rgb8())
    }
}

/// An RGB image of floats in [0, 1], interleaved rows: an engine's result.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbF32 {
    pub data: Vec<f32>,
    pub width: usize,
    pub height: usize,
}

impl RgbF32 {
    /// (width, height).
    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// The first image of a (n, 3, h, w) tensor.
    pub fn from_tensor(image: &Tensor) -> Result<Self> {
        let (_, c, height, width) = image.dims4()?;
        if c != 3 {
            return Err(Error::option(
                "image",
                format!("expected 3 channels, got {c}"),
            ));
        }
        // One image-sized allocation: the planes are read in place (on the CPU) and
        // interleaved straight into the result.
        let data = crate::tensor_host::with_f32_values(&image.get(0)?, |planes| {
            let plane = width * height;
            let (r, rest) = planes.split_at(plane);
            let (g, b) = rest.split_at(plane);
            let mut data = Vec::with_capacity(plane * 3);
            for ((&r, &g), &b) in r.iter().zip(g).zip(b) {
                data.extend_from_slice(&[r, g, b]);
            }
            data
        })?;
        Ok(Self {
            data,
            width,
            height,
        })
    }

    /// The image as a (1, 3, h, w) f32 tensor on `device`.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        check_len(self.data.len(), self.width, self.height)?;
        let data = planar(&self.data, |v| v);
        Ok(Tensor::from_vec(
            data,
            (1, 3, self.height, self.width),
            device,
        )?)
    }

    /// Rounded to 8 bits as diffusers' `numpy_to_pil`, values clamped to [0, 1] first.
    pub fn to_rgb8(&self) -> Rgb8 {
        Rgb8 {
            data: self
                .data
                .iter()
                .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round_ties_even() as u8)
                .collect(),
            width: self.width,
            height: self.height,
        }
    }
}

/// Interleaved RGB samples as three planes (R, then G, then B), each value mapped by `f`: the
/// layout of a (3, h, w) tensor, built in one allocation.
fn planar<T: Copy>(interleaved: &[T], f: impl Fn(T) -> f32) -> Vec<f32> {
    let mut data = Vec::with_capacity(interleaved.len());
    for channel in 0..3 {
        data.extend(interleaved.iter().skip(channel).step_by(3).map(|&v| f(v)));
    }
    data
}

fn check_len(len: usize, width: usize, height: usize) -> Result<()> {
    if len != width * height * 3 {
        return Err(Error::option(
            "image",
            format!("{len} values do not make a {width}x{height} RGB image"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_round_trips() {
        let rgb = Rgb8::new((0..4 * 3 * 3).map(|i| (i * 11) as u8).collect(), 4, 3).unwrap();
        let t = rgb.to_tensor(&Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 3, 3, 4]);
        assert_eq!(Rgb8::from_tensor(&t).unwrap(), rgb);
        let f = RgbF32::from_tensor(&t).unwrap();
        assert_eq!(f.size(), (4, 3));
        let back = f.to_tensor(&Device::Cpu).unwrap();
        let diff = (back - &t).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        assert!(Rgb8::new(vec![0; 5], 1, 1).is_err());
    }
}
