//! Image input and output of the library (`diffsr::image_io`): every format and bit depth
//! round trips, EXIF orientation, alpha, ICC profiles, PNG text metadata, and each kind of bad
//! input gets a message naming the file.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use anyhow::Result;
use diffsr::image_io::{
    check_output_path, load_image, read_png_text, save_image, GenerationInfo, OutputFormat, RgbF32,
    SaveOptions,
};
use image::metadata::Orientation;
use image::{ImageEncoder, ImageFormat};

fn scratch(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("diffsr-img-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/images")
        .join(name)
}

/// A smooth `w` × `h` RGB gradient in [0, 1] and an alpha ramp.
fn gradient(w: usize, h: usize) -> (RgbF32, Vec<f32>) {
    let mut data = Vec::new();
    let mut alpha = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            data.extend([fx, fy, 0.5 * (fx + fy)]);
            alpha.push(1.0 - 0.8 * fx);
        }
    }
    (
        RgbF32 {
            data,
            width: w,
            height: h,
        },
        alpha,
    )
}

fn max_diff_u8(a: &[u8], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f32 - y * 255.0).abs())
        .fold(0.0, f32::max)
}

#[test]
fn every_output_format_round_trips() -> Result<()> {
    let dir = scratch("roundtrip")?;
    let (rgb, alpha) = gradient(13, 9);
    let cases = [
        ("out.png", ImageFormat::Png, 8u8, true, 0.5f32),
        ("out16.png", ImageFormat::Png, 16, true, 0.5),
        ("out.tif", ImageFormat::Tiff, 8, true, 0.5),
        ("out16.tiff", ImageFormat::Tiff, 16, true, 0.5),
        ("out.webp", ImageFormat::WebP, 8, true, 0.5),
        ("out.jpg", ImageFormat::Jpeg, 8, false, 12.0),
    ];
    for (name, format, depth, keeps_alpha, tolerance) in cases {
        let path = dir.join(name);
        let options = SaveOptions {
            bit_depth: depth,
            ..Default::default()
        };
        save_image(&path, &rgb, Some(&alpha), &options)?;
        let loaded = load_image(&path)?;
        assert_eq!(loaded.format, format, "{name}");
        assert_eq!(loaded.size(), (13, 9), "{name}");
        assert_eq!(loaded.bit_depth, depth, "{name}");
        assert_eq!(loaded.alpha.is_some(), keeps_alpha, "{name}");
        let worst = max_diff_u8(&loaded.rgb.data, &rgb.data);
        assert!(worst <= tolerance, "{name}: off by {worst} levels");
        if let Some(a) = &loaded.alpha {
            let worst = a
                .iter()
                .zip(&alpha)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(worst <= 1.0 / 255.0, "{name}: alpha off by {worst}");
        }
        if depth == 16 {
            // The file really holds 16 bits: a value between two 8-bit levels survives.
            let decoded = image::open(&path)?;
            assert!(
                matches!(
                    decoded.color(),
                    image::ColorType::Rgba16 | image::ColorType::Rgb16
                ),
                "{name}: {:?}",
                decoded.color()
            );
        }
    }
    // --format overrides the extension.
    let forced = dir.join("forced.img");
    let options = SaveOptions {
        format: Some(OutputFormat::WebP),
        ..Default::default()
    };
    save_image(&forced, &rgb, None, &options)?;
    assert_eq!(load_image(&forced)?.format, ImageFormat::WebP);
    // JPEG quality changes the size.
    let (low, high) = (dir.join("q10.jpg"), dir.join("q100.jpg"));
    for (path, quality) in [(&low, 10), (&high, 100)] {
        let options = SaveOptions {
            quality,
            ..Default::default()
        };
        save_image(path, &rgb, None, &options)?;
    }
    assert!(std::fs::metadata(&low)?.len() < std::fs::metadata(&high)?.len());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Writes a PNG with the png crate directly (grey, palette, 16-bit, EXIF...).
fn write_png(path: &Path, info: png::Info<'_>, data: &[u8]) -> Result<()> {
    let file = std::fs::File::create(path)?;
    let mut writer = png::Encoder::with_info(file, info)?.write_header()?;
    writer.write_image_data(data)?;
    writer.finish()?;
    Ok(())
}

fn png_info(w: u32, h: u32, color: png::ColorType, depth: png::BitDepth) -> png::Info<'static> {
    let mut info = png::Info::with_size(w, h);
    info.color_type = color;
    info.bit_depth = depth;
    info
}

#[test]
fn reads_grey_palette_16_bit_and_bmp_inputs() -> Result<()> {
    let dir = scratch("inputs")?;
    // 8-bit grey.
    let grey = dir.join("grey.png");
    let info = png_info(4, 4, png::ColorType::Grayscale, png::BitDepth::Eight);
    write_png(&grey, info, &(0..16).map(|v| v * 16).collect::<Vec<u8>>())?;
    let loaded = load_image(&grey)?;
    assert_eq!((loaded.bit_depth, loaded.alpha.is_none()), (8, true));
    assert_eq!(&loaded.rgb.data[3..6], &[16, 16, 16]);
    // 16-bit grey.
    let grey16 = dir.join("grey16.png");
    let info = png_info(4, 4, png::ColorType::Grayscale, png::BitDepth::Sixteen);
    let data: Vec<u8> = (0..16u16).flat_map(|v| (v * 4096).to_be_bytes()).collect();
    write_png(&grey16, info, &data)?;
    let loaded = load_image(&grey16)?;
    assert_eq!(loaded.bit_depth, 16);
    assert_eq!(&loaded.rgb.data[3..6], &[16, 16, 16]);
    // Palette with a transparent entry.
    let palette = dir.join("palette.png");
    let mut info = png_info(4, 4, png::ColorType::Indexed, png::BitDepth::Eight);
    info.palette = Some(Cow::Owned(vec![255, 0, 0, 0, 0, 255]));
    info.trns = Some(Cow::Owned(vec![255, 0]));
    write_png(&palette, info, &[0, 1].repeat(8))?;
    let loaded = load_image(&palette)?;
    assert_eq!(&loaded.rgb.data[..6], &[255, 0, 0, 0, 0, 255]);
    assert_eq!(&loaded.alpha.as_deref().unwrap()[..2], &[1.0, 0.0]);
    // 16-bit RGBA TIFF and an 8-bit BMP through the image crate's encoders.
    let tiff = dir.join("in16.tiff");
    let data: Vec<u8> = (0..4 * 4 * 4u16)
        .flat_map(|v| (v * 1000).to_ne_bytes())
        .collect();
    image::codecs::tiff::TiffEncoder::new(std::fs::File::create(&tiff)?).write_image(
        &data,
        4,
        4,
        image::ExtendedColorType::Rgba16,
    )?;
    let loaded = load_image(&tiff)?;
    assert_eq!((loaded.bit_depth, loaded.alpha.is_some()), (16, true));
    let bmp = dir.join("in.bmp");
    image::RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 * 50, y as u8 * 60, 7]))
        .save(&bmp)?;
    let loaded = load_image(&bmp)?;
    assert_eq!((loaded.format, loaded.size()), (ImageFormat::Bmp, (5, 4)));
    assert_eq!(&loaded.rgb.data[3..6], &[50, 0, 7]);
    // The real photos.
    for name in [
        "astronaut-20x16.png",
        "chelsea-16x12.png",
        "coffee-18x14.png",
    ] {
        let loaded = load_image(&fixture(name))?;
        assert_eq!(loaded.bit_depth, 8, "{name}");
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// A big-endian TIFF-style EXIF block holding only an orientation tag.
fn exif_orientation(value: u16) -> Vec<u8> {
    let mut exif = b"MM\0\x2a\0\0\0\x08".to_vec();
    exif.extend(1u16.to_be_bytes()); // one entry
    exif.extend(0x0112u16.to_be_bytes()); // Orientation
    exif.extend(3u16.to_be_bytes()); // SHORT
    exif.extend(1u32.to_be_bytes()); // count
    exif.extend(value.to_be_bytes());
    exif.extend([0, 0]); // padding of the 4-byte value field
    exif.extend(0u32.to_be_bytes()); // no next IFD
    exif
}

/// A 3 × 2 image, red at the top left, the rest black.
fn red_corner() -> Vec<u8> {
    let mut data = vec![0u8; 3 * 2 * 3];
    data[0] = 255;
    data
}

#[test]
fn exif_orientation_is_applied() -> Result<()> {
    let dir = scratch("exif")?;
    // PNG with an eXIf chunk: orientation 6 (rotate 90° clockwise).
    let png_path = dir.join("rotated.png");
    let mut info = png_info(3, 2, png::ColorType::Rgb, png::BitDepth::Eight);
    info.exif_metadata = Some(Cow::Owned(exif_orientation(6)));
    write_png(&png_path, info, &red_corner())?;
    let loaded = load_image(&png_path)?;
    assert_eq!(loaded.orientation, Orientation::Rotate90);
    assert_eq!(loaded.size(), (2, 3));
    // The top-left corner moved to the top right.
    assert_eq!(&loaded.rgb.data[3..6], &[255, 0, 0]);
    // JPEG with an APP1 Exif segment: orientation 3 (rotate 180°).
    let jpeg_path = dir.join("rotated.jpg");
    let mut encoder =
        image::codecs::jpeg::JpegEncoder::new_with_quality(std::fs::File::create(&jpeg_path)?, 100);
    encoder.set_exif_metadata(exif_orientation(3))?;
    let big: Vec<u8> = (0..16 * 8)
        .flat_map(|i| {
            if i % 16 < 8 {
                [250, 250, 250]
            } else {
                [5, 5, 5]
            }
        })
        .collect();
    encoder.write_image(&big, 16, 8, image::ExtendedColorType::Rgb8)?;
    let loaded = load_image(&jpeg_path)?;
    assert_eq!(loaded.orientation, Orientation::Rotate180);
    assert_eq!(loaded.size(), (16, 8));
    // Bright half now on the right.
    assert!(loaded.rgb.data[0] < 60 && loaded.rgb.data[15 * 3] > 200);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn icc_profile_is_kept_by_every_format() -> Result<()> {
    let dir = scratch("icc")?;
    let (rgb, _) = gradient(8, 8);
    // Any bytes do for the round trip; a header-shaped blob keeps decoders happy.
    let mut icc = vec![0u8; 128];
    icc[..4].copy_from_slice(&128u32.to_be_bytes());
    icc[36..40].copy_from_slice(b"acsp");
    for name in ["icc.png", "icc.jpg", "icc.webp", "icc.tiff"] {
        let path = dir.join(name);
        let options = SaveOptions {
            icc_profile: Some(icc.clone()),
            ..Default::default()
        };
        save_image(&path, &rgb, None, &options)?;
        assert_eq!(
            load_image(&path)?.icc_profile.as_ref(),
            Some(&icc),
            "{name}"
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn png_carries_the_generation_parameters() -> Result<()> {
    let dir = scratch("meta")?;
    let (rgb, _) = gradient(8, 8);
    let meta = GenerationInfo {
        engine: "diffusion".into(),
        scale: Some(2.5),
        model: "stabilityai/stable-diffusion-x4-upscaler".into(),
        revision: Some("main".into()),
        prompt: "a café, “quoted”".into(),
        negative_prompt: "blurry".into(),
        seed: 42,
        steps: 20,
        scheduler: "dpmpp-2m-karras".into(),
        guidance: 9.0,
        noise_level: 20,
        eta: 0.0,
        diffsr_version: "0.1.0".into(),
    };
    let path = dir.join("meta.png");
    let options = SaveOptions {
        metadata: Some(meta.clone()),
        ..Default::default()
    };
    save_image(&path, &rgb, None, &options)?;
    let texts = read_png_text(&path)?;
    assert_eq!(GenerationInfo::from_texts(&path, &texts)?, Some(meta));
    let parameters = &texts.iter().find(|(k, _)| k == "parameters").unwrap().1;
    assert!(parameters.contains("Seed: 42") && parameters.contains("a café"));
    assert!(parameters.contains("Scale: 2.5"));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose header claims `w` × `h` (8-bit RGB) followed by `idat` and IEND, built by hand
/// so the size can be anything.
fn png_with_header(w: u32, h: u32, idat: &[u8]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", idat);
    chunk(b"IEND", &[]);
    out
}

fn error_of(path: &Path) -> String {
    match load_image(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_inputs_get_a_message_naming_the_file() -> Result<()> {
    let dir = scratch("bad")?;
    // Missing.
    let missing = dir.join("missing.png");
    let message = error_of(&missing);
    assert!(message.contains("missing.png"), "{message}");
    // Unreadable: a folder where a file should be (permissions do not stop root).
    let folder = dir.join("folder.png");
    std::fs::create_dir(&folder)?;
    let message = error_of(&folder);
    assert!(message.contains("folder.png"), "{message}");
    // Truncated PNG.
    let bytes = std::fs::read(fixture("astronaut-20x16.png"))?;
    let truncated = dir.join("truncated.png");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2])?;
    let message = error_of(&truncated);
    assert!(
        message.contains("truncated.png") && message.contains("cannot decode"),
        "{message}"
    );
    // Not an image.
    let text = dir.join("notes.png");
    std::fs::write(&text, "just some text")?;
    let message = error_of(&text);
    assert!(
        message.contains("notes.png") && message.contains("not an image"),
        "{message}"
    );
    // 0 × 0.
    let empty = dir.join("empty.png");
    std::fs::write(&empty, png_with_header(0, 0, &[]))?;
    let message = error_of(&empty);
    assert!(message.contains("empty.png"), "{message}");
    // 1 × 1 loads, but is too small for the upscaler.
    let tiny = dir.join("tiny.png");
    image::RgbImage::new(1, 1).save(&tiny)?;
    let message = load_image(&tiny)?
        .check_min_size(4)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("tiny.png") && message.contains("at least 4x4"),
        "{message}"
    );
    // A decompression bomb: a small file claiming 100000 × 100000 pixels.
    let bomb = dir.join("bomb.png");
    std::fs::write(
        &bomb,
        png_with_header(100_000, 100_000, &[0x78, 0x9c, 3, 0, 0, 0, 0, 1]),
    )?;
    let message = error_of(&bomb);
    assert!(
        message.contains("bomb.png") && message.contains("decompression bomb"),
        "{message}"
    );
    // Output in a folder that does not exist, and an output that is the input.
    let (rgb, _) = gradient(4, 4);
    let nowhere = dir.join("no/such/folder/out.png");
    let message = save_image(&nowhere, &rgb, None, &SaveOptions::default())
        .unwrap_err()
        .to_string();
    assert!(message.contains("does not exist"), "{message}");
    let message = check_output_path(&nowhere, &nowhere)
        .unwrap_err()
        .to_string();
    assert!(message.contains("out.png"), "{message}");
    let input = fixture("chelsea-16x12.png");
    let same = fixture("../images/chelsea-16x12.png");
    let message = check_output_path(&input, &same).unwrap_err().to_string();
    assert!(message.contains("overwrite the input"), "{message}");
    // An unknown extension without --format.
    let message = save_image(&dir.join("out.xyz"), &rgb, None, &SaveOptions::default())
        .unwrap_err()
        .to_string();
    assert!(message.contains("out.xyz"), "{message}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
