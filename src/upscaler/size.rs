//! The output size a request asks for: a factor of the input's, an exact size, or a long side;
//! neither is the model's own factor. Engine-neutral: [`crate::scale_plan`] reaches the size
//! with one or two engine passes and a resample.

use std::str::FromStr;

use crate::error::{Error, Result};

/// The largest output factor accepted.
pub const MAX_SCALE: f64 = 16.0;

/// The largest output side accepted (`--target`, `--long-side`): [`MAX_SCALE`] times the
/// largest input side ([`crate::image_io::MAX_SIDE`]). Whether a size is within
/// [`MAX_SCALE`] of a given input is checked per input.
pub const MAX_OUTPUT_SIDE: usize = 16 * crate::image_io::MAX_SIDE as usize;

/// A number for a message: plain when it reads well, else in scientific notation (`1e300`,
/// not 301 digits).
pub(crate) fn show(x: f64) -> String {
    if x.is_finite() && x != 0.0 && !(1e-4..1e9).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

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

    /// Checks what does not depend on the input: a factor above 0 and at most
    /// [`MAX_SCALE`]; target sides in 1..=[`MAX_OUTPUT_SIDE`].
    pub fn validate(&self) -> Result<()> {
        let sides_ok = |sides: &[usize]| sides.iter().all(|s| (1..=MAX_OUTPUT_SIDE).contains(s));
        match self.target {
            Some(TargetSize::Exact { width, height }) if !sides_ok(&[width, height]) => {
                return Err(Error::option(
                    "target",
                    format!(
                        "{width}x{height}: each side must be 1..={MAX_OUTPUT_SIDE} ({MAX_SCALE}× \
                         the largest input side)"
                    ),
                ));
            }
            Some(TargetSize::LongSide(n)) if !sides_ok(&[n]) => {
                return Err(Error::option(
                    "long_side",
                    format!(
                        "is {n}; expected 1..={MAX_OUTPUT_SIDE} ({MAX_SCALE}× the largest input \
                         side)"
                    ),
                ));
            }
            _ => {}
        }
        if let Some(scale) = self.scale {
            if !(scale.is_finite() && scale > 0.0 && scale <= MAX_SCALE) {
                return Err(Error::option(
                    "scale",
                    format!(
                        "is {}; expected a number above 0 and at most {MAX_SCALE}",
                        show(scale)
                    ),
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
            // Name the flag the size came from.
            let option = match self.target {
                Some(TargetSize::Exact { .. }) => "target",
                Some(TargetSize::LongSide(_)) => "long_side",
                None => "scale",
            };
            return Err(Error::option(
                option,
                format!(
                    "{width}x{height} to {}x{} is {}×; at most {MAX_SCALE}× the input is \
                     supported (at most {}x{} for this input)",
                    size.0,
                    size.1,
                    show((factor * 10.0).round() / 10.0),
                    (width as f64 * MAX_SCALE) as usize,
                    (height as f64 * MAX_SCALE) as usize,
                ),
            ));
        }
        Ok(size)
    }
}
