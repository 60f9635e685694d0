//! Planning a GAN run within the memory budget (`--max-memory`), as the diffusion path does
//! ([`crate::pipeline::plan_memory`]): the budget holds the weights, the input image and its
//! tensors, one tile's activations, the f32 output image and what comes after it (a resample
//! to the requested size, a colour fix, writing the file). The tiles are the largest that fit
//! what is left; a budget that even the smallest tiles cannot meet, an output too large to
//! hold, or a `--tile` whose activations do not fit is refused up front with the size that
//! would do, before any image-sized buffer is allocated.
//!
//! When the caller can take the output in rows ([`Streaming`]) and the whole output does not
//! fit, the run is planned streamed instead: the tiles run band by band
//! ([`crate::tiling::run_tiled_rows`]), only one band of the output (its padded width × one
//! tile's output height) is held, and each finished row goes to the PNG encoder. A resample
//! to another size or a colour fix needs the whole output, so those never stream.
//!
//! The per-pixel figures count the buffers the code holds at each phase (see the constants);
//! the activations are the architecture's own estimate
//! ([`crate::gan::GanArch::bytes_per_input_pixel`]).

use crate::error::{Error, Result};
use crate::upscaler::Streaming;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Bytes per input pixel of the input: the decoded 8-bit image (3) and its f32 tensor (12).
/// The reflect-padded f32 copy the tiles are cut from (12) is counted at the padded size.
const INPUT_BYTES_PER_PIXEL: u64 = 3 + 12;
const PADDED_INPUT_BYTES_PER_PIXEL: u64 = 12;
/// The f32 RGB output, per output pixel (at the padded size while the tiles are blended).
const OUTPUT_BYTES_PER_PIXEL: u64 = 12;
/// Writing the file, per output pixel, besides the f32 result: the quantised samples (3 for
/// 8-bit RGB, up to 8 for 16-bit RGBA) and the encoded file (its buffer grows to up to twice
/// the raw size): 24 covers a 16-bit RGBA output, twice what an 8-bit one needs.
const SAVE_BYTES_PER_PIXEL: u64 = 24;
/// The Lanczos resample to an exact size: its f32 RGBA intermediate (input width × output
/// height), per pixel.
const RESAMPLE_INTERMEDIATE_BYTES_PER_PIXEL: u64 = 16;
/// The colour fix: about six image-sized f32 buffers alive at once
/// ([`crate::color_fix::apply_color_fix`]) plus the result's tensor and the copy back.
const COLOR_FIX_BYTES_PER_PIXEL: u64 = 8 * 12;

/// Writing a streamed PNG, per output column: the encoder's current, previous and filtered
/// rows and the quantised row (8 bytes a pixel each for 16-bit RGBA).
const STREAM_ROW_BYTES_PER_COLUMN: u64 = 4 * 8;
/// Writing a streamed PNG, besides its rows: the deflate compressor's window and tables, its
/// output and the IDAT chunk buffers, the file's write buffer.
const STREAM_WRITER_BYTES: u64 = 2 * MIB;

/// Smallest automatic tile edge: below it the overlap dominates the work.
pub(super) const MIN_AUTO_TILE: usize = 64;
/// Largest automatic tile edge: beyond it the CPU gains nothing and a GPU little.
pub(super) const MAX_AUTO_TILE: usize = 512;

/// What a loaded GAN holds and how its run scales.
#[derive(Debug, Clone, PartialEq)]
pub struct GanFootprint {
    /// A short name of the model for messages, e.g. `SRVGGNetCompact x4 (...)`.
    pub model: String,
    /// Bytes of the weights as loaded (on the model's device).
    pub weights: u64,
    /// Activations of a tile per input pixel, the tile's own input and output copies included.
    pub tile_bytes_per_pixel: u64,
    pub scale: usize,
    /// Input sides the network takes are multiples of this.
    pub input_multiple: usize,
    /// Overlap between neighbouring tiles, input pixels: a tile must be at least twice that.
    pub overlap: usize,
    /// Reflect padding around the image, input pixels.
    pub pre_pad: usize,
    /// On the CPU the activations and the output share one memory; on a GPU the activations
    /// are on the device and the output in host memory, each held to the budget.
    pub shared_memory: bool,
}

/// The memory budget and where it came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub bytes: u64,
    /// Given by the user (`--max-memory`, [`crate::gan::GanOptions::max_memory`]) rather than
    /// the default ([`crate::memory::default_budget`]).
    pub given: bool,
}

impl Budget {
    fn describe(self) -> String {
        if self.given {
            format!("--max-memory is {}", size(self.bytes))
        } else {
            format!(
                "the memory budget is {} (the default: half the available RAM, at most 8 GiB, \
                 on the CPU; on a GPU its free memory less a reserve)",
                size(self.bytes)
            )
        }
    }
}

/// What happens to the output after the tiles: the size it is resampled to (the output size
/// itself when none), and whether a colour fix runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Finish {
    pub target: Option<(usize, usize)>,
    pub color_fix: bool,
}

/// What a run is expected to hold, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GanMemoryEstimate {
    pub weights: u64,
    /// The decoded input and its f32 tensors.
    pub input: u64,
    /// One tile's activations.
    pub tile: u64,
    /// The f32 output image (at the padded size while it is blended); streamed, the one band
    /// of it that is held.
    pub output: u64,
    /// Held besides the output after the tiles: resample, colour fix, writing the file;
    /// streamed, the PNG encoder's rows and buffers.
    pub finish: u64,
    pub shared_memory: bool,
}

impl GanMemoryEstimate {
    /// The largest of what the device and host memories hold at once (their sum on the CPU).
    pub fn peak(&self) -> u64 {
        let host = self.output
            + self
                .finish
                .max(if self.shared_memory { self.tile } else { 0 });
        if self.shared_memory {
            self.weights + self.input + host
        } else {
            (self.weights + self.input + self.tile).max(host)
        }
    }
}

/// The tiling of one input and its estimate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GanMemoryPlan {
    /// Tile edge in input pixels; 0: the whole image in one go.
    pub tile: usize,
    pub tiles: usize,
    pub estimate: GanMemoryEstimate,
    /// `Some(rows)`: the output is streamed to disk, at most `rows` output rows held at once
    /// (one band: a tile's output height); `None`: the whole output is held.
    pub streamed: Option<usize>,
}

impl GanMemoryPlan {
    /// One line for the user.
    pub fn describe(&self, budget: u64) -> String {
        let tiles = if self.tiles <= 1 {
            "untiled".to_string()
        } else {
            format!("{} tiles of {}", self.tiles, self.tile)
        };
        let output = match self.streamed {
            Some(rows) => format!(
                "; output streamed to disk in rows (bands of {rows} rows, {} held)",
                size(self.estimate.output)
            ),
            None => String::new(),
        };
        format!(
            "{tiles}{output}; estimated peak {} of a {} budget",
            size(self.estimate.peak()),
            size(budget)
        )
    }
}

/// `1 KiB`, `512 MiB`, `8.0 GiB`.
pub(crate) fn size(bytes: u64) -> String {
    if bytes < MIB {
        format!("{} KiB", bytes.div_ceil(1 << 10).max(1))
    } else if bytes < GIB {
        format!("{} MiB", bytes.div_ceil(MIB).max(1))
    } else {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    }
}

/// A `--max-memory` value at least `bytes`: `300M`, `52G`.
fn flag_value(bytes: u64) -> String {
    if bytes < GIB {
        format!("{}M", bytes.div_ceil(MIB).max(1))
    } else {
        format!("{}G", bytes.div_ceil(GIB))
    }
}

/// The sides of a `width` × `height` input as the tiles see them: pre-padded on both sides,
/// then up to the network's multiple.
fn padded(len: usize, footprint: &GanFootprint) -> u64 {
    (len + 2 * footprint.pre_pad).next_multiple_of(footprint.input_multiple.max(1)) as u64
}

impl GanFootprint {
    /// Automatic tile edges are multiples of this.
    fn tile_align(&self) -> usize {
        8 * self.input_multiple.max(1)
    }

    /// The smallest tile that keeps the overlap exact: twice the overlap, at least
    /// [`MIN_AUTO_TILE`], aligned.
    pub fn min_tile(&self) -> usize {
        MIN_AUTO_TILE
            .max(2 * self.overlap)
            .next_multiple_of(self.tile_align())
    }

    /// The side of a tile of edge `tile` (0: the whole image) along an input side of `len`,
    /// as [`crate::tiling::plan_tiles`] cuts it.
    fn tile_side(&self, len: usize, tile: usize) -> u64 {
        let align = self.input_multiple.max(1) as u64;
        let padded = padded(len, self);
        if tile == 0 {
            padded
        } else {
            (tile as u64).min(padded) / align * align
        }
    }

    /// Activations of one tile of edge `tile` (0: the whole image) of a `width` × `height`
    /// input.
    fn tile_bytes(&self, width: usize, height: usize, tile: usize) -> u64 {
        self.tile_side(width, tile) * self.tile_side(height, tile) * self.tile_bytes_per_pixel
    }

    /// Output rows held at once when the output of a `height`-row input in tiles of `tile` is
    /// streamed: one tile's output height.
    fn band_rows(&self, height: usize, tile: usize) -> u64 {
        self.tile_side(height, tile) * self.scale as u64
    }

    /// The estimate for a `width` × `height` input in tiles of `tile` with its output
    /// streamed to a PNG file: one band of the padded output instead of the whole, and the
    /// encoder's buffers instead of the quantised image and the encoded file.
    pub fn estimate_streamed(&self, width: usize, height: usize, tile: usize) -> GanMemoryEstimate {
        let s = self.scale as u64;
        let band = padded(width, self) * s * self.band_rows(height, tile) * OUTPUT_BYTES_PER_PIXEL;
        GanMemoryEstimate {
            output: band,
            finish: width as u64 * s * STREAM_ROW_BYTES_PER_COLUMN + STREAM_WRITER_BYTES,
            ..self.estimate(width, height, tile, Finish::default())
        }
    }

    /// The estimate for a `width` × `height` input in tiles of `tile`.
    pub fn estimate(
        &self,
        width: usize,
        height: usize,
        tile: usize,
        finish: Finish,
    ) -> GanMemoryEstimate {
        let s = self.scale as u64;
        let (w, h) = (width as u64, height as u64);
        let (pw, ph) = (padded(width, self), padded(height, self));
        let input = w * h * INPUT_BYTES_PER_PIXEL + pw * ph * PADDED_INPUT_BYTES_PER_PIXEL;
        let output = pw * s * ph * s * OUTPUT_BYTES_PER_PIXEL;
        let (ow, oh) = (w * s, h * s);
        let (tw, th) = finish
            .target
            .map_or((ow, oh), |(tw, th)| (tw as u64, th as u64));
        let target = tw * th;
        // Each later phase, counted with the output it starts from.
        let mut after = output + ow * oh * SAVE_BYTES_PER_PIXEL;
        if (tw, th) != (ow, oh) {
            let resample = output
                + ow * th * RESAMPLE_INTERMEDIATE_BYTES_PER_PIXEL
                + target * OUTPUT_BYTES_PER_PIXEL;
            let save = target * (OUTPUT_BYTES_PER_PIXEL + SAVE_BYTES_PER_PIXEL);
            after = resample.max(save);
        }
        if finish.color_fix {
            after = after.max(target * COLOR_FIX_BYTES_PER_PIXEL);
        }
        GanMemoryEstimate {
            weights: self.weights,
            input,
            tile: self.tile_bytes(width, height, tile),
            output,
            finish: after.saturating_sub(output),
            shared_memory: self.shared_memory,
        }
    }
}

/// Plans a `width` × `height` input under `budget`: the tile the user gave (`Some`, 0 for
/// the whole image) checked, or the largest automatic one that fits. With `stream`
/// [`Streaming::WhenNeeded`] and nothing after the tiles (`finish` default), an output the
/// budget cannot hold is planned streamed; [`Streaming::Always`] streams whenever `finish`
/// allows.
pub fn plan_gan_memory(
    footprint: &GanFootprint,
    width: usize,
    height: usize,
    user_tile: Option<usize>,
    budget: Budget,
    finish: Finish,
    stream: Streaming,
) -> Result<GanMemoryPlan> {
    let streamable = finish == Finish::default();
    match stream {
        Streaming::Always if streamable => {
            plan_streamed(footprint, width, height, user_tile, budget)
        }
        Streaming::WhenNeeded if streamable => {
            plan_held(footprint, width, height, user_tile, budget, finish)
                .or_else(|_| plan_streamed(footprint, width, height, user_tile, budget))
        }
        _ => plan_held(footprint, width, height, user_tile, budget, finish),
    }
}

/// Plans a run that holds its whole output.
fn plan_held(
    footprint: &GanFootprint,
    width: usize,
    height: usize,
    user_tile: Option<usize>,
    budget: Budget,
    finish: Finish,
) -> Result<GanMemoryPlan> {
    let min_tile = footprint.min_tile();
    let smallest = footprint.estimate(width, height, user_tile.unwrap_or(min_tile), finish);
    // The least this input can take: the smallest automatic tile, or a smaller one the user
    // gave.
    let least_tile = match user_tile {
        Some(tile) if tile > 0 => tile.min(min_tile),
        _ => min_tile,
    };
    let no_tile = GanMemoryEstimate {
        tile: 0,
        ..smallest
    };
    // What the budget leaves for the activations of one tile.
    let room = if footprint.shared_memory {
        budget
            .bytes
            .checked_sub(no_tile.weights + no_tile.input + no_tile.output)
    } else {
        budget.bytes.checked_sub(no_tile.weights + no_tile.input)
    };
    let least = footprint.estimate(width, height, least_tile, finish);
    if no_tile.peak() > budget.bytes || least.peak() > budget.bytes {
        return Err(too_little(footprint, width, height, budget, finish, &least));
    }
    let room = room.unwrap_or(0);
    let tile = match user_tile {
        Some(tile) => {
            if smallest.tile > room {
                return Err(tile_too_large(footprint, tile, &smallest, room, budget));
            }
            tile
        }
        None => auto_tile(footprint, width, height, room),
    };
    let estimate = footprint.estimate(width, height, tile, finish);
    Ok(GanMemoryPlan {
        tile,
        tiles: tile_count(footprint, width, height, tile),
        estimate,
        streamed: None,
    })
}

/// Plans a run whose output is streamed: the tile the user gave checked, or the largest
/// automatic one (up to [`MAX_AUTO_TILE`]) whose band and activations fit.
fn plan_streamed(
    footprint: &GanFootprint,
    width: usize,
    height: usize,
    user_tile: Option<usize>,
    budget: Budget,
) -> Result<GanMemoryPlan> {
    let fits = |tile: usize| {
        let estimate = footprint.estimate_streamed(width, height, tile);
        (estimate.peak() <= budget.bytes).then_some((tile, estimate))
    };
    // The largest automatic tile that fits, if any does.
    let automatic = || {
        let align = footprint.tile_align();
        let min_tile = footprint.min_tile();
        let largest = MAX_AUTO_TILE.max(min_tile) / align * align;
        (0..)
            .map(|k| largest.saturating_sub(k * align))
            .take_while(|&tile| tile >= min_tile)
            .find_map(fits)
    };
    let chosen = match user_tile {
        Some(tile) => match fits(tile) {
            Some(chosen) => chosen,
            None => {
                return Err(match automatic() {
                    Some((edge, _)) => {
                        streamed_tile_too_large(footprint, width, height, tile, edge, budget)
                    }
                    None => too_little_streamed(footprint, width, height, budget),
                })
            }
        },
        None => automatic().ok_or_else(|| too_little_streamed(footprint, width, height, budget))?,
    };
    let (tile, estimate) = chosen;
    Ok(GanMemoryPlan {
        tile,
        tiles: tile_count(footprint, width, height, tile),
        estimate,
        streamed: Some(footprint.band_rows(height, tile) as usize),
    })
}

/// A `--tile` that does not fit even with the output streamed, when a smaller one (`edge`)
/// does.
fn streamed_tile_too_large(
    footprint: &GanFootprint,
    width: usize,
    height: usize,
    tile: usize,
    edge: usize,
    budget: Budget,
) -> Error {
    let which = tile_flag(tile);
    let estimate = footprint.estimate_streamed(width, height, tile);
    Error::option(
        "tile",
        format!(
            "{which}: one tile's activations need about {} and, with the output streamed to \
             disk in rows ({} of it held), the run about {}; {}. Use --tile {edge} or less, \
             or leave --tile out",
            size(estimate.tile),
            size(estimate.output),
            size(estimate.peak()),
            budget.describe(),
        ),
    )
}

/// Even streamed in the smallest tiles, the run does not fit: say what it needs, and which
/// input would fit.
fn too_little_streamed(
    footprint: &GanFootprint,
    width: usize,
    height: usize,
    budget: Budget,
) -> Error {
    let s = footprint.scale;
    let min_tile = footprint.min_tile();
    let least = footprint.estimate_streamed(width, height, min_tile);
    let held = footprint.estimate(width, height, min_tile, Finish::default());
    let fits = largest_fitting_with(width, height, |f| {
        footprint
            .estimate_streamed(f(width), f(height), min_tile)
            .peak()
            <= budget.bytes
    });
    let smaller = smaller_input(fits, width, height);
    Error::option(
        "max-memory",
        format!(
            "a {width}x{height} input makes a {}x{} output with {}: holding it needs about {}, \
             and even streamed to disk in rows the run needs about {} (weights {}, input {}, \
             tiles {}, one band of the output {}, the PNG encoder {}); {}. Give --max-memory {} \
             or more{smaller}",
            width * s,
            height * s,
            footprint.model,
            size(held.output),
            size(least.peak()),
            size(least.weights),
            size(least.input),
            size(least.tile),
            size(least.output),
            size(least.finish),
            budget.describe(),
            flag_value(least.peak()),
        ),
    )
}

/// How the refusals name the `--tile` the user gave.
fn tile_flag(tile: usize) -> String {
    if tile == 0 {
        "--tile 0 (the whole image at once)".to_string()
    } else {
        format!("--tile {tile}")
    }
}

/// The refusals' closing suggestion: `, or an input of at most about WxH` when a smaller
/// input than `width` × `height` would fit (`fits`), else nothing.
fn smaller_input(fits: Option<(usize, usize)>, width: usize, height: usize) -> String {
    match fits {
        Some((w, h)) if w < width || h < height => {
            format!(", or an input of at most about {w}x{h}")
        }
        _ => String::new(),
    }
}

/// The largest automatic tile whose activations fit `room`: the whole image when it does and
/// is no larger than [`MAX_AUTO_TILE`], else an aligned edge from [`GanFootprint::min_tile`]
/// to [`MAX_AUTO_TILE`].
fn auto_tile(footprint: &GanFootprint, width: usize, height: usize, room: u64) -> usize {
    if footprint.tile_bytes(width, height, 0) <= room && width.max(height) <= MAX_AUTO_TILE {
        return 0;
    }
    let edge = largest_tile(footprint, room).unwrap_or(0);
    edge.clamp(
        footprint.min_tile(),
        MAX_AUTO_TILE.max(footprint.min_tile()),
    )
}

/// The largest aligned square tile whose activations fit `room`, if any of at least twice the
/// overlap does.
fn largest_tile(footprint: &GanFootprint, room: u64) -> Option<usize> {
    let per_pixel = footprint.tile_bytes_per_pixel.max(1);
    let align = footprint.tile_align();
    let edge = ((room / per_pixel) as f64).sqrt() as usize / align * align;
    (edge >= 2 * footprint.overlap && edge > 0).then_some(edge)
}

/// Tiles of edge `tile` over the padded input, as [`crate::tiling::plan_tiles`] lays them.
fn tile_count(footprint: &GanFootprint, width: usize, height: usize, tile: usize) -> usize {
    let align = footprint.input_multiple.max(1) as u64;
    let along = |len: usize| -> usize {
        let padded = padded(len, footprint);
        let side = if tile == 0 {
            padded
        } else {
            (tile as u64).min(padded) / align * align
        };
        let step = side.saturating_sub(footprint.overlap as u64) / align * align;
        if side >= padded || step == 0 {
            1
        } else {
            1 + (padded - side).div_ceil(step) as usize
        }
    };
    along(width) * along(height)
}

/// The budget cannot hold the run even in the smallest tiles: say what the output and the
/// whole run need, and which input would fit.
fn too_little(
    footprint: &GanFootprint,
    width: usize,
    height: usize,
    budget: Budget,
    finish: Finish,
    least: &GanMemoryEstimate,
) -> Error {
    let s = footprint.scale;
    let (ow, oh) = finish.target.unwrap_or((width * s, height * s));
    let need = least.peak();
    let fits = largest_fitting(footprint, width, height, budget.bytes, finish);
    // Would the same run have fitted with its output streamed?
    let streamed = footprint.estimate_streamed(width, height, footprint.min_tile());
    let hint = if streamed.peak() <= budget.bytes {
        format!(
            ". A PNG output at the model's own factor (x{s}) without --color-fix would stream \
             to disk in rows and fit (about {}); --scale, --target, --long-side, --color-fix, \
             two-pass plans and other formats need the whole output held",
            size(streamed.peak())
        )
    } else {
        String::new()
    };
    let smaller = smaller_input(fits, width, height);
    Error::option(
        "max-memory",
        format!(
            "a {width}x{height} input makes a {ow}x{oh} output with {}: holding it needs about \
             {}, writing it about {} more, and the whole run about {} (weights {}, input {}, \
             tiles {}); {}. Give --max-memory {} or more{smaller}{hint}",
            footprint.model,
            size(least.output),
            size(least.finish),
            size(need),
            size(least.weights),
            size(least.input),
            size(least.tile),
            budget.describe(),
            flag_value(need),
        ),
    )
}

/// A `--tile` whose activations do not fit what the rest of the run leaves.
fn tile_too_large(
    footprint: &GanFootprint,
    tile: usize,
    estimate: &GanMemoryEstimate,
    room: u64,
    budget: Budget,
) -> Error {
    let which = tile_flag(tile);
    let advice = match largest_tile(footprint, room) {
        Some(edge) => format!("Use --tile {edge} or less, or leave --tile out"),
        None => format!(
            "Leave --tile out, or give --max-memory {} or more",
            flag_value(budget.bytes - room + estimate.tile)
        ),
    };
    Error::option(
        "tile",
        format!(
            "{which}: one tile's activations need about {} and the rest of the run about {}; \
             {}. {advice}",
            size(estimate.tile),
            size(budget.bytes - room),
            budget.describe(),
        ),
    )
}

/// The largest input of the same aspect ratio whose run fits `budget` in the smallest tiles.
fn largest_fitting(
    footprint: &GanFootprint,
    width: usize,
    height: usize,
    budget: u64,
    finish: Finish,
) -> Option<(usize, usize)> {
    largest_fitting_with(width, height, |f| {
        // The target keeps its ratio to the input.
        let finish = Finish {
            target: finish.target.map(|(tw, th)| (f(tw), f(th))),
            ..finish
        };
        footprint
            .estimate(f(width), f(height), footprint.min_tile(), finish)
            .peak()
            <= budget
    })
}

/// The largest input of the aspect ratio of `width` × `height` for which `fits` holds, by
/// bisection on the long side. `fits` gets the scaling of a length to the candidate size
/// (`width` and `height` scale to the candidate's sides) and must grow false with the size.
fn largest_fitting_with(
    width: usize,
    height: usize,
    fits: impl Fn(&dyn Fn(usize) -> usize) -> bool,
) -> Option<(usize, usize)> {
    let long = width.max(height);
    let scaling = |n: usize| move |len: usize| (len * n).div_ceil(long).max(1);
    let fits_at = |n: usize| fits(&scaling(n));
    if !fits_at(1) {
        return None;
    }
    let (mut lo, mut hi) = (1, long);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits_at(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let f = scaling(lo);
    Some((f(width), f(height)))
}
