//! Issue 14, classes 9 and 10 and one message of 17: the GAN path plans within `--max-memory`
//! (the output image included) and refuses what it cannot hold before decoding or allocating
//! it; a `--tile` over the budget and a budget below the smallest tiles are refused with the
//! numbers, naming the flag the user gave; `--threads` has a ceiling. Also: blending into the
//! host buffer (what images go through) gives the tensor accumulator's numbers.

#[path = "support/cli.rs"]
mod cli;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};
use cli::{scratch, stderr};
use diffsr::gan::{GanModel, GanOptions, GanUpscaler};
use diffsr::image_io::Rgb8;
use diffsr::tiling::{run_tiled, run_tiled_interleaved, TileOptions};

fn fixture(name: &str) -> PathBuf {
    cli::fixtures().join("gan").join(name)
}

/// Runs the binary offline, timed.
fn diffsr(dir: &Path, args: &[&str]) -> Result<(Output, Duration)> {
    let started = Instant::now();
    let out = cli::diffsr(dir, args)?;
    Ok((out, started.elapsed()))
}

/// A `width` × `height` 8-bit RGB PNG of one grey, valid to the last checksum. Its deflate
/// stream is written by hand (fixed Huffman codes: per row the filter byte, one pixel value,
/// then copies at distance 1), so a 16384² image (805 MB of pixels, 5 MB of file) takes a
/// fraction of a second where an encoder compressing every row takes tens of seconds.
fn flat_png(path: &Path, width: u32, height: u32) -> Result<()> {
    const VALUE: u8 = 128;
    let row_len = 1 + 3 * width as u64;
    let mut bits = BitWriter::default();
    bits.put(1, 1); // the final block
    bits.put(1, 2); // fixed Huffman codes
    for _ in 0..height {
        bits.literal(0); // filter: none
        bits.literal(VALUE);
        let mut left = 3 * width as usize - 1;
        while left > 0 {
            if left < 3 {
                bits.literal(VALUE);
                left -= 1;
                continue;
            }
            let mut len = left.min(258);
            if (1..3).contains(&(left - len)) {
                len = left - 3;
            }
            bits.copy_from_previous(len);
            left -= len;
        }
    }
    bits.symbol(256); // end of block
    let mut idat = vec![0x78, 0x01];
    idat.extend_from_slice(&bits.finish());
    idat.extend_from_slice(&flat_adler32(row_len, height as u64, VALUE).to_be_bytes());
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, no interlace
    let mut file = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(b"IHDR", &ihdr), (b"IDAT", &idat), (b"IEND", &Vec::new())] {
        file.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = file.len();
        file.extend_from_slice(kind);
        file.extend_from_slice(data);
        let crc = crc32(&file[start..]);
        file.extend_from_slice(&crc.to_be_bytes());
    }
    std::fs::write(path, file)?;
    Ok(())
}

/// Deflate's bit order: values least significant bit first, Huffman codes most significant
/// bit first.
#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    acc: u64,
    count: u32,
}

impl BitWriter {
    fn put(&mut self, value: u64, n: u32) {
        self.acc |= value << self.count;
        self.count += n;
        while self.count >= 8 {
            self.bytes.push(self.acc as u8);
            self.acc >>= 8;
            self.count -= 8;
        }
    }

    fn code(&mut self, code: u64, n: u32) {
        let reversed = (0..n).fold(0, |r, i| r | (((code >> i) & 1) << (n - 1 - i)));
        self.put(reversed, n);
    }

    /// A literal/length symbol in the fixed code.
    fn symbol(&mut self, symbol: u64) {
        match symbol {
            0..=143 => self.code(0x30 + symbol, 8),
            144..=255 => self.code(0x190 + symbol - 144, 9),
            256..=279 => self.code(symbol - 256, 7),
            _ => self.code(0xC0 + symbol - 280, 8),
        }
    }

    fn literal(&mut self, byte: u8) {
        self.symbol(byte as u64);
    }

    /// A copy of `len` (3..=258) bytes from distance 1.
    fn copy_from_previous(&mut self, len: usize) {
        const BASE: [usize; 29] = [
            3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99,
            115, 131, 163, 195, 227, 258,
        ];
        const EXTRA: [u32; 29] = [
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
        ];
        let k = BASE.iter().rposition(|&b| b <= len).unwrap();
        self.symbol(257 + k as u64);
        self.put((len - BASE[k]) as u64, EXTRA[k]);
        self.code(0, 5); // distance code 0: distance 1
    }

    fn finish(mut self) -> Vec<u8> {
        if self.count > 0 {
            self.bytes.push(self.acc as u8);
        }
        self.bytes
    }
}

/// Adler-32 of `rows` rows of a filter byte 0 and `row_len - 1` bytes `value`, in closed form.
fn flat_adler32(row_len: u64, rows: u64, value: u8) -> u32 {
    const M: u128 = 65521;
    let (len, rows, v) = (row_len as u128, rows as u128, value as u128);
    let n = len * rows;
    // a = 1 + Σ d_i; b = Σ_i (1 + Σ_{j<=i} d_j) = n + Σ_i (n - i + 1) d_i, i from 1.
    let a = 1 + v * (len - 1) * rows;
    // Byte j (0-based) of row k sits at i = k·len + j + 1 and weighs n - k·len - j.
    let weight_of_column = |j: u128| rows * (n - j) - len * rows * (rows - 1) / 2;
    let sum_weights: u128 = (1..len).map(weight_of_column).sum();
    let b = n + v * sum_weights;
    (((b % M) << 16) | (a % M)) as u32
}

fn crc32(bytes: &[u8]) -> u32 {
    let table: Vec<u32> = (0..256u32)
        .map(|n| {
            (0..8).fold(n, |c, _| {
                if c & 1 == 1 {
                    0xEDB88320 ^ (c >> 1)
                } else {
                    c >> 1
                }
            })
        })
        .collect();
    !bytes.iter().fold(!0u32, |c, &b| {
        table[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8)
    })
}

fn srvgg() -> PathBuf {
    fixture("srvgg_x4_leakyrelu.safetensors")
}

#[test]
fn an_output_too_large_for_the_budget_is_refused_before_decoding() -> Result<()> {
    let dir = scratch("huge")?;
    let huge = dir.join("huge.png");
    let started = Instant::now();
    flat_png(&huge, 16384, 16384)?;
    eprintln!("16384² PNG written in {:?}", started.elapsed());
    let small = dir.join("small.png");
    flat_png(&small, 16, 16)?;
    let model = srvgg();
    // Two inputs: the run is planned from the first one's header, before any image is decoded.
    let (out, took) = diffsr(
        &dir,
        &[
            "upscale",
            huge.to_str().unwrap(),
            small.to_str().unwrap(),
            "--out-dir",
            dir.join("out").to_str().unwrap(),
            "--engine",
            "gan",
            "--model",
            model.to_str().unwrap(),
            "--device",
            "cpu",
            // The input's own tensors take about 7 GiB: at 4G even a PNG output streamed to
            // disk in rows (which 8G allows: tests/gan_streaming.rs) does not fit.
            "--max-memory",
            "4G",
        ],
    )?;
    let err = stderr(&out);
    ensure!(out.status.code() == Some(2), "exit {:?}: {err}", out.status);
    for part in [
        "a 16384x16384 input makes a 65536x65536 output",
        "holding it needs about",
        "even streamed to disk in rows",
        "--max-memory is 4.0 GiB",
        "Give --max-memory",
        "or an input of at most about",
    ] {
        ensure!(err.contains(part), "`{part}` missing from: {err}");
    }
    ensure!(
        !err.contains("panicked") && !err.contains("memory allocation"),
        "{err}"
    );
    // Decoding 16384² alone takes longer than this on the CI machine.
    ensure!(took < Duration::from_secs(20), "took {took:?}");
    ensure!(!dir.join("out").exists() || std::fs::read_dir(dir.join("out"))?.next().is_none());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn the_hand_made_png_is_a_valid_image_of_one_grey() -> Result<()> {
    let dir = scratch("png")?;
    let path = dir.join("flat.png");
    flat_png(&path, 300, 7)?;
    let image = diffsr::image_io::load_image(&path)?;
    ensure!(image.size() == (300, 7) && image.rgb.data.iter().all(|&v| v == 128));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_budget_below_the_smallest_tiles_names_the_budget_not_a_tile() -> Result<()> {
    let dir = scratch("tiny-budget")?;
    let input = dir.join("in.png");
    flat_png(&input, 64, 64)?;
    // RRDBNet's tiles overlap by 43 pixels: its smallest tile is 88, above the old automatic
    // minimum of 64, which the old message blamed as `tile 64`.
    let model = fixture("rrdb_x4.safetensors");
    let (out, _) = diffsr(
        &dir,
        &[
            "upscale",
            input.to_str().unwrap(),
            "-o",
            dir.join("out.png").to_str().unwrap(),
            "--engine",
            "gan",
            "--model",
            model.to_str().unwrap(),
            "--device",
            "cpu",
            "--max-memory",
            "1K",
        ],
    )?;
    let err = stderr(&out);
    ensure!(out.status.code() == Some(2), "exit {:?}: {err}", out.status);
    ensure!(
        err.contains("--max-memory is 1 KiB") && err.contains("Give --max-memory"),
        "{err}"
    );
    ensure!(!err.contains("tile 64") && !err.contains("`tile`"), "{err}");
    ensure!(!dir.join("out.png").exists());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_tile_over_the_budget_is_refused_with_one_that_fits() -> Result<()> {
    let dir = scratch("tile")?;
    let input = dir.join("in.png");
    flat_png(&input, 128, 128)?;
    let model = srvgg();
    let run = |tile: &str| {
        diffsr(
            &dir,
            &[
                "upscale",
                input.to_str().unwrap(),
                "-o",
                dir.join("out.png").to_str().unwrap(),
                "--engine",
                "gan",
                "--model",
                model.to_str().unwrap(),
                "--device",
                "cpu",
                "--max-memory",
                "16M",
                "--tile",
                tile,
            ],
        )
    };
    // The whole 128² image at once needs ~20 MiB of activations; the output and the rest fit.
    let (out, _) = run("0")?;
    let err = stderr(&out);
    ensure!(out.status.code() == Some(2), "exit {:?}: {err}", out.status);
    ensure!(
        err.contains("--tile 0 (the whole image at once)")
            && err.contains("--max-memory is 16 MiB")
            && err.contains("Use --tile "),
        "{err}"
    );
    ensure!(!dir.join("out.png").exists());
    // The tile it suggests runs.
    let suggested = err
        .split("Use --tile ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    let (out, _) = run(&suggested)?;
    ensure!(out.status.success(), "--tile {suggested}: {}", stderr(&out));
    ensure!(image::image_dimensions(dir.join("out.png"))? == (512, 512));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn threads_beyond_the_ceiling_are_refused_at_once() -> Result<()> {
    let dir = scratch("threads")?;
    let input = dir.join("in.png");
    flat_png(&input, 16, 16)?;
    let model = srvgg();
    let (out, took) = diffsr(
        &dir,
        &[
            "upscale",
            input.to_str().unwrap(),
            "-o",
            dir.join("out.png").to_str().unwrap(),
            "--engine",
            "gan",
            "--model",
            model.to_str().unwrap(),
            "--threads",
            "100000",
        ],
    )?;
    let err = stderr(&out);
    ensure!(out.status.code() == Some(2), "exit {:?}: {err}", out.status);
    let max = diffsr::threads::max_threads();
    ensure!(
        err.contains("threads")
            && err.contains("100000 is too many")
            && err.contains(&format!("at most {max}")),
        "{err}"
    );
    ensure!(took < Duration::from_secs(10), "took {took:?}");
    ensure!(!dir.join("out.png").exists());
    // The ceiling itself is accepted.
    ensure!(diffsr::threads::pool(max.min(8)).is_ok());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Deterministic values in [0, 1) from a 64-bit LCG.
fn noise(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005) | 1;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

#[test]
fn the_host_blend_gives_the_tensor_blend_numbers() -> Result<()> {
    let (c, h, w) = (3, 37, 53);
    let image = Tensor::from_vec(noise(c * h * w, 3), (1, c, h, w), &Device::Cpu)?;
    // A local operator (3×3 mean, radius 1) upscaled ×2 by repetition.
    let mut f = |x: &Tensor| -> diffsr::Result<Tensor> {
        let blurred = x.avg_pool2d_with_stride(1, 1)?;
        Ok(blurred.upsample_nearest2d(x.dim(2)? * 2, x.dim(3)? * 2)?)
    };
    for (tile, batch, align, pad) in [(16, 1, 1, 0), (24, 3, 2, 5), (0, 1, 4, 3), (20, 2, 1, 2)] {
        let options = TileOptions {
            tile,
            overlap: 6,
            scale: 2,
            align,
            pad,
            batch,
        };
        let want = run_tiled(&image, &options, &mut f, &mut |_, _| {
            ControlFlow::Continue(())
        })?;
        let got = run_tiled_interleaved(&image, &options, &mut f, &mut |_, _| {
            ControlFlow::Continue(())
        })?;
        ensure!((got.width, got.height, got.channels) == (w * 2, h * 2, c));
        let want: Vec<f32> = want
            .squeeze(0)?
            .permute((1, 2, 0))?
            .flatten_all()?
            .to_vec1()?;
        ensure!(
            got.data == want,
            "tile {tile}, batch {batch}: values differ"
        );
    }
    Ok(())
}

#[test]
fn images_and_tensors_upscale_alike_in_tiles_grey_models_included() -> Result<()> {
    // Tiles of at least twice each model's overlap, on an image that takes several.
    for (name, tile, (w, h)) in [
        ("srvgg_x4_leakyrelu.safetensors", 96, (150, 110)),
        ("rrdb_x4_grey.pth", 96, (150, 110)),
        ("rrdb_x2.pth", 176, (250, 190)),
    ] {
        let model = GanModel::load(&fixture(name))?;
        let upscaler = GanUpscaler::new(
            &model,
            &GanOptions {
                tile: Some(tile),
                ..GanOptions::default()
            },
        )?;
        let pixels: Vec<u8> = noise(w * h * 3, 9)
            .iter()
            .map(|v| (v * 255.0) as u8)
            .collect();
        let image = Rgb8::new(pixels, w, h)?;
        ensure!(upscaler.tile_count(w, h)? > 1, "{name}: tiled");
        let got = upscaler.upscale_image(&image, &mut |_| ControlFlow::Continue(()))?;
        let want = upscaler.upscale_tensor(&image.to_tensor(&Device::Cpu)?, &mut |_, _| {
            ControlFlow::Continue(())
        })?;
        let want = diffsr::image_io::RgbF32::from_tensor(&want)?;
        ensure!(got == want, "{name}: the image and tensor paths differ");
        let plan = upscaler.memory_plan(w, h)?;
        ensure!(plan.tile == tile && plan.estimate.peak() > plan.estimate.output);
    }
    Ok(())
}
