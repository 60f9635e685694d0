//! Valid seed inputs made in code or read from the fixtures: images in every format and
//! layout `load_image` reads, PNGs with diffsr's parameters in text chunks, a tiny CLIP
//! tokenizer folder. Mutations start from these, so they reach past the first format check.

use std::io::Cursor;
use std::path::Path;

use diffsr::image_io::{save_image, GenerationInfo, RgbF32, SaveOptions};
use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb};
use serde_json::json;

use super::bundle;

/// A `w`×`h` colour gradient (distinct width and height, so orientation changes show).
fn gradient(w: usize, h: usize) -> RgbF32 {
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            data.extend([x as f32 / w as f32, y as f32 / h as f32, 0.5]);
        }
    }
    RgbF32 {
        data,
        width: w,
        height: h,
    }
}

/// The bytes `save_image` writes to `name` (its extension picks the format).
fn saved(dir: &Path, name: &str, alpha: bool, options: SaveOptions) -> Vec<u8> {
    let rgb = gradient(9, 7);
    let alpha: Option<Vec<f32>> = alpha.then(|| (0..63).map(|i| i as f32 / 63.0).collect());
    let path = dir.join(name);
    save_image(&path, &rgb, alpha.as_deref(), &options).expect("seed image written");
    std::fs::read(&path).expect("seed image read")
}

/// What `diffsr upscale` records, diffusion and GAN.
pub fn generation_info(gan: bool) -> GenerationInfo {
    GenerationInfo {
        engine: if gan { "gan" } else { "diffusion" }.into(),
        scale: gan.then_some(2.5),
        model: "stabilityai/stable-diffusion-x4-upscaler".into(),
        revision: Some("main".into()),
        prompt: "a photo".into(),
        negative_prompt: "blurry".into(),
        seed: 42,
        steps: 20,
        scheduler: "ddim".into(),
        guidance: 9.0,
        noise_level: 20,
        eta: 0.0,
        diffsr_version: "0.1.0".into(),
    }
}

/// PNGs as diffsr writes them (parameters in text chunks, 8- and 16-bit, ICC profile), and
/// one with the same record in compressed (`zTXt`) and international (`iTXt`) chunks.
pub fn diffsr_pngs(dir: &Path) -> Vec<Vec<u8>> {
    let with = |gan: bool, bit_depth: u8, icc: bool| SaveOptions {
        metadata: Some(generation_info(gan)),
        bit_depth,
        icc_profile: icc.then(|| b"not really an ICC profile, but bytes".to_vec()),
        ..SaveOptions::default()
    };
    let mut out = vec![
        saved(dir, "a.png", false, with(false, 8, true)),
        saved(dir, "b.png", true, with(true, 16, false)),
    ];
    let mut png = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut png, 2, 2);
        encoder.set_color(png::ColorType::Rgb);
        let json = serde_json::to_string(&generation_info(false)).unwrap();
        encoder.add_ztxt_chunk("diffsr".into(), json).unwrap();
        encoder
            .add_itxt_chunk("parameters".into(), "Steps: 20 — ünïcode".into())
            .unwrap();
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&[9u8; 12]).unwrap();
        writer.finish().unwrap();
    }
    out.push(png);
    out
}

/// A JPEG with an EXIF block saying "rotate 90° clockwise" (orientation 6).
fn jpeg_with_orientation(jpeg: &[u8]) -> Vec<u8> {
    let mut tiff = b"II*\x00\x08\x00\x00\x00".to_vec();
    tiff.extend(1u16.to_le_bytes()); // one IFD entry
    tiff.extend(0x0112u16.to_le_bytes()); // Orientation
    tiff.extend(3u16.to_le_bytes()); // SHORT
    tiff.extend(1u32.to_le_bytes());
    tiff.extend(6u32.to_le_bytes());
    tiff.extend(0u32.to_le_bytes()); // no next IFD
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend(tiff);
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend([0xff, 0xe1]);
    out.extend(((app1.len() + 2) as u16).to_be_bytes());
    out.extend(app1);
    out.extend(&jpeg[2..]);
    out
}

fn encoded(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).expect("seed encoded");
    out.into_inner()
}

/// One small image per format and layout `load_image` reads.
pub fn images(dir: &Path) -> Vec<Vec<u8>> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images");
    let mut out: Vec<Vec<u8>> = ["astronaut-20x16.png", "chelsea-16x12.png"]
        .iter()
        .map(|n| std::fs::read(fixtures.join(n)).expect("fixture image"))
        .collect();
    out.extend(diffsr_pngs(dir).into_iter().take(2));
    let jpeg = saved(dir, "c.jpg", false, SaveOptions::default());
    out.push(jpeg_with_orientation(&jpeg));
    out.push(jpeg);
    out.push(saved(dir, "d.webp", true, SaveOptions::default()));
    out.push(saved(
        dir,
        "e.tif",
        true,
        SaveOptions {
            bit_depth: 16,
            ..SaveOptions::default()
        },
    ));
    out.push(saved(dir, "f.tif", false, SaveOptions::default()));
    let rgb = ImageBuffer::from_fn(7, 5, |x, y| Rgb([x as u8 * 30, y as u8 * 40, 7]));
    out.push(encoded(DynamicImage::ImageRgb8(rgb), ImageFormat::Bmp));
    let grey = ImageBuffer::from_fn(6, 5, |x, y| Luma([(x * y * 9) as u8]));
    out.push(encoded(DynamicImage::ImageLuma8(grey), ImageFormat::Png));
    let grey_alpha = ImageBuffer::from_fn(5, 6, |x, y| LumaA([x as u16 * 9000, y as u16 * 9000]));
    out.push(encoded(
        DynamicImage::ImageLumaA16(grey_alpha),
        ImageFormat::Png,
    ));
    out.push(palette_png());
    out
}

/// A 4×3 palette PNG with transparency.
fn palette_png() -> Vec<u8> {
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, 4, 3);
    encoder.set_color(png::ColorType::Indexed);
    encoder.set_depth(png::BitDepth::Two);
    encoder.set_palette(vec![0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]);
    encoder.set_trns(vec![255, 128]);
    let mut writer = encoder.write_header().unwrap();
    writer
        .write_image_data(&[0b0001_1011, 0b1110_0100, 0b0101_1010])
        .unwrap();
    writer.finish().unwrap();
    png
}

/// The character GPT-2's byte-level BPE uses for byte `b`.
fn byte_char(b: u8) -> char {
    let printable = (b'!'..=b'~').contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
    if printable {
        char::from(b)
    } else {
        // The others are numbered from U+0100 in byte order.
        let rank = (0..b)
            .filter(|&c| !((b'!'..=b'~').contains(&c) || (0xa1..=0xac).contains(&c) || c >= 0xae))
            .count() as u32;
        char::from_u32(0x100 + rank).unwrap()
    }
}

/// A tiny CLIP tokenizer folder (every byte, a few merges, the special tokens), as bundles:
/// one with `vocab.json` + `merges.txt`, one with a `tokenizer.json`.
pub fn tokenizer_folders() -> Vec<Vec<u8>> {
    let mut vocab = serde_json::Map::new();
    let mut add = |token: String| {
        let id = vocab.len();
        vocab.insert(token, json!(id));
    };
    for b in 0..=255u8 {
        add(byte_char(b).to_string());
    }
    for b in 0..=255u8 {
        add(format!("{}</w>", byte_char(b)));
    }
    let merges = ["t h", "th e</w>", "p h", "ph o"];
    for m in merges {
        add(m.replace(' ', ""));
    }
    add("<|startoftext|>".into());
    add("<|endoftext|>".into());
    let config = json!({
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "!",
        "unk_token": "<|endoftext|>",
        "model_max_length": 77,
        "tokenizer_class": "CLIPTokenizer"
    });
    let special = json!({
        "bos_token": {"content": "<|startoftext|>", "lstrip": false, "normalized": true},
        "eos_token": "<|endoftext|>",
        "pad_token": "!",
        "unk_token": "<|endoftext|>"
    });
    let vocab = serde_json::Value::Object(vocab);
    let merges_txt = format!("#version: 0.2\n{}\n", merges.join("\n"));
    let file = |name: &str, text: String| (name.to_string(), text.into_bytes());
    let classic = bundle::pack(&[
        file("tokenizer_config.json", config.to_string()),
        file("special_tokens_map.json", special.to_string()),
        file("vocab.json", vocab.to_string()),
        file("merges.txt", merges_txt),
    ]);
    let mut with_decoder = config.clone();
    with_decoder["added_tokens_decoder"] = json!({
        "49406": {"content": "<|startoftext|>", "special": true},
        "49407": {"content": "<|endoftext|>", "special": true}
    });
    let tokenizer_json = json!({
        "model": {"type": "BPE", "vocab": vocab, "merges": [["t", "h"], "th e</w>"]},
        "added_tokens": [{"id": 517, "content": "<|startoftext|>", "special": true}]
    });
    let modern = bundle::pack(&[
        file("tokenizer_config.json", with_decoder.to_string()),
        file("tokenizer.json", tokenizer_json.to_string()),
    ]);
    vec![classic, modern]
}
