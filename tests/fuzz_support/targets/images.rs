//! Image inputs through `load_image` (every format and layout it reads), and the PNG text
//! chunks `diffsr info` reads back (`read_png_text`, then the parameters record).

use diffsr::image_io::{load_image, read_png_text, GenerationInfo, MAX_DECODED_BYTES, MAX_SIDE};
use proptest::prelude::*;
use proptest::sample::Index;

use super::{message, seed_dir};
use crate::fuzz_support::harness::{Memory, Target};
use crate::fuzz_support::json::{JsonOp, JsonPlan};
use crate::fuzz_support::{mutate, png, seeds};

/// Chunk-aware mutations for PNG seeds, byte mutations (headers favoured) for the others.
fn image_inputs(seeds: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    let plan = (
        any::<Index>(),
        proptest::collection::vec(png::png_op(), 1..=3),
        mutate::byte_ops(4),
    );
    plan.prop_map(move |(seed, png_ops, byte_ops)| {
        let seed = &seeds[seed.index(seeds.len())];
        if png::chunks(seed).is_some() && byte_ops.len() % 2 == 1 {
            png::mutate(seed, &png_ops, &seeds)
        } else {
            let mut bytes = seed.clone();
            mutate::apply_all(&mut bytes, &byte_ops, &seeds);
            bytes
        }
    })
    .boxed()
}

pub fn images() -> Target {
    let dir = seed_dir("images");
    let seeds = seeds::images(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    Target {
        name: "images",
        cases: 2500,
        // The decoder's documented limit, not the input's size: a small file may decode big.
        memory: Memory::Limit(MAX_DECODED_BYTES as usize + (64 << 20)),
        inputs: image_inputs(seeds),
        run: Box::new(|input, dir| {
            let path = dir.join("input");
            std::fs::write(&path, input).map_err(message)?;
            let image = load_image(&path).map_err(message)?;
            let (w, h) = image.size();
            assert!(
                (1..=MAX_SIDE as usize).contains(&w) && (1..=MAX_SIDE as usize).contains(&h),
                "decoded as {w}x{h}"
            );
            assert_eq!(image.rgb.data.len(), w * h * 3, "RGB buffer of {w}x{h}");
            if let Some(alpha) = &image.alpha {
                assert_eq!(alpha.len(), w * h, "alpha plane of {w}x{h}");
            }
            Ok(())
        }),
    }
}

pub fn png_text() -> Target {
    let dir = seed_dir("png_text");
    let seeds = seeds::diffsr_pngs(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    Target {
        name: "png_text",
        cases: 1500,
        memory: Memory::Input,
        inputs: png::mutated_png(seeds),
        run: Box::new(|input, dir| {
            let path = dir.join("result.png");
            std::fs::write(&path, input).map_err(message)?;
            let texts = read_png_text(&path).map_err(message)?;
            if let Some(info) = GenerationInfo::from_texts(&path, &texts).map_err(message)? {
                // What `diffsr info` prints, and what a re-save writes.
                let _ = info.summary();
                let _ = info.text_chunks();
                let _ = serde_json::to_string_pretty(&info).map_err(message)?;
            }
            Ok(())
        }),
    }
}

/// A string a terminal would act on: text around escape sequences and C0/C1 controls.
fn control_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\u{1b}]0;title\u{7}"),
        Just("\u{1b}[2J"),
        Just("\r"),
        Just("\u{8}"),
        Just("\u{9b}31m"),
        Just("\u{7f}"),
        Just("plain"),
    ];
    proptest::collection::vec(piece, 1..4).prop_map(|p| p.concat())
}

/// Inputs for the `diffsr info` binary test: diffsr PNGs whose parameters record holds control
/// characters in a value, or otherwise mutated.
pub fn info_inputs() -> BoxedStrategy<Vec<u8>> {
    let dir = seed_dir("info_binary");
    let seeds = seeds::diffsr_pngs(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let record = (any::<Index>(), control_string()).prop_map(|(node, text)| {
        png::PngOp::Record(JsonPlan {
            ops: vec![JsonOp::Replace {
                node,
                value: serde_json::Value::String(text),
            }],
            pretty: false,
            bytes: Vec::new(),
        })
    });
    let op = prop_oneof![2 => record, 1 => png::png_op()];
    (any::<Index>(), proptest::collection::vec(op, 1..=3))
        .prop_map(move |(seed, ops)| png::mutate(&seeds[seed.index(seeds.len())], &ops, &seeds))
        .boxed()
}
