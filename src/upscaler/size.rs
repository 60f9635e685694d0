//! The output size a request asks for: a factor of the input's, an exact size, or a long side;
//! neither is the model's own factor. Engine-neutral: [`crate::scale_plan`] reaches the size
//! with one or two engine passes and a resample.

use std::str::FromStr;

use crate::error::{Error, Result};

/// The largest output factor accepted.
pub const MAX_SCALE: f64 = 16.0;

/// An output size given other than as a factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetSize {
    /// Exactly this size (the aspect ratio may change).
    Exact { width: usize, height: usize },
    /// The longer side becomes this; the other keeps the aspect ratio.
    LongSide(usize),
}

impl FromStr for TargetSize {
    type Err = Error;

    /// `WxH`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::option(
                "target",
                format!("`{s}`: expected WIDTHxHEIGHT, e.g. 3840x2160"),
            )
        };
        let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
        let (width, height) = (
            w.trim().parse::<usize>().map_err(|_| bad())?,
            h.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if width == 0 || height == 0 {
            return Err(bad());
        }
        Ok(Self::Exact { width, height })
    }
}

/// The output size asked for: `target` wins over `scale`; neither is the model's own factor.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OutputSize {
    /// Output size as a factor of the input's (above 0, at most [`MAX_SCALE`]).
    pub scale: Option<f64>,
    /// An exact output size or long side instead of a factor.
    pub target: Option<TargetSize>,
}

impl OutputSize {
    /// The model's own factor.
    pub fn native() -> Self {
        Self::default()
    }

    /// `scale` × the input.
    pub fn scale(scale: f64) -> Self {
        Self {
            scale: Some(scale),
            target: None,
        }
    }

    /// Exactly `target`.
    pub fn target(target: TargetSize) -> Self {
        Self {
            scale: None,
            target: Some(target),
        }
    }

    /// Whether neither a factor nor a size is asked for.
    pub fn is_native(&self) -> bool {
        self.scale.is_none() && self.target.is_none()
    }

    /// Checks what does not depend on the input.
    pub fn validate(&self) -> Result<()> {
        match self.target {
            Some(TargetSize::Exact { width, height }) if width == 0 || height == 0 => {
                return Err(Error::option("target", "the size must be at least 1x1"));
            }
            Some(TargetSize::LongSide(0)) => {
                return Err(Error::option("long_side", "must be at least 1"));
            }
            _ => {}
        }
        if let Some(scale) = self.scale {
            if !(scale.is_finite() && scale > 0.0 && scale <= MAX_SCALE) {
                return Err(Error::option(
                    "scale",
                    format!("must be a number above 0 and at most {MAX_SCALE}, got {scale}"),
                ));
            }
        }
        Ok(())
    }

    /// The output size of a `width` × `height` input for a model of `native` scale: `target`,
    /// else `scale`, else the model's own factor. At most [`MAX_SCALE`] times the input.
    pub fn resolve(&self, width: usize, height: usize, native: usize) -> Result<(usize, usize)> {
        let size = match self.target {
            Some(TargetSize::Exact { width, height }) => (width, height),
            Some(TargetSize::LongSide(n)) => {
                let s = n as f64 / width.max(height) as f64;
                (
                    ((width as f64 * s).round() as usize).max(1),
                    ((height as f64 * s).round() as usize).max(1),
                )
            }
            None => {
                let s = self.scale.unwrap_or(native as f64);
                let (w, h) = ((width as f64 * s).round(), (height as f64 * s).round());
                if !(w >= 1.0 && h >= 1.0) {
                    return Err(Error::option(
                        "scale",
                        format!("{s} turns {width}x{height} into an empty image"),
                    ));
                }
                (w as usize, h as usize)
            }
        };
        let factor = (size.0 as f64 / width as f64).max(size.1 as f64 / height as f64);
        if factor > MAX_SCALE {
            return Err(Error::option(
                "scale",
                format!(
                    "{width}x{height} to {}x{} is {factor:.1}×; at most {MAX_SCALE}× is supported",
                    size.0, size.1,
                ),
            ));
        }
        Ok(size)
    }
}
