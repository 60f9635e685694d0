//! A check the `png` decoder lacks: an indexed-colour PNG whose `PLTE` chunk is not a whole
//! number of RGB entries (a length that is not a multiple of 3) makes png 0.18's palette
//! expansion copy three bytes out of a one- or two-byte remainder and panic. The PNG
//! specification (ISO/IEC 15948, 11.2.3 PLTE) makes such a file invalid, and libpng refuses it.
//! Found by the fuzz target `images` (tests/fuzz.rs).
//!
//! Only the chunk headers before the image data are read; anything else that is wrong is left
//! to the decoder, which reports it.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

const SIGNATURE: [u8; 8] = *b"\x89PNG\r\n\x1a\n";
/// IHDR colour type of palette images.
const INDEXED: u8 = 3;

/// `Err(reason)` when `path` is an indexed PNG whose palette is not a whole number of entries.
/// A file that cannot be read this far passes: the decoder says what is wrong with it.
pub(crate) fn check_palette(path: &Path) -> Result<(), String> {
    let Ok(file) = std::fs::File::open(path) else {
        return Ok(());
    };
    match palette_length(&mut BufReader::new(file)) {
        Some(len) if len % 3 != 0 => Err(format!(
            "is a palette PNG whose PLTE chunk is {len} bytes, not a whole number of RGB entries \
             (a multiple of 3): the file is corrupt"
        )),
        _ => Ok(()),
    }
}

/// The length of the PLTE chunk of an indexed PNG, if it has one before its image data.
fn palette_length(reader: &mut (impl Read + Seek)) -> Option<u32> {
    let mut signature = [0u8; 8];
    reader.read_exact(&mut signature).ok()?;
    if signature != SIGNATURE {
        return None;
    }
    let mut color_type = None;
    loop {
        let mut header = [0u8; 8];
        reader.read_exact(&mut header).ok()?;
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        match &header[4..] {
            b"IHDR" => {
                let mut ihdr = [0u8; 13];
                reader.read_exact(&mut ihdr).ok()?;
                color_type = Some(ihdr[9]);
                // The rest of a (malformed) longer IHDR, and the CRC.
                reader
                    .seek(SeekFrom::Current(i64::from(len.checked_sub(13)?) + 4))
                    .ok()?;
            }
            b"PLTE" => return (color_type == Some(INDEXED)).then_some(len),
            b"IDAT" | b"IEND" => return None,
            _ => {
                reader.seek(SeekFrom::Current(i64::from(len) + 4)).ok()?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2x1 two-colour palette PNG whose palette holds `palette` (bytes as given).
    fn palette_png(palette: Vec<u8>) -> Vec<u8> {
        let mut png = Vec::new();
        let mut encoder = png::Encoder::new(&mut png, 2, 1);
        encoder.set_color(png::ColorType::Indexed);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_palette(palette);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&[0, 1]).unwrap();
        writer.finish().unwrap();
        png
    }

    #[test]
    fn palette_lengths() {
        let good = palette_png(vec![0, 0, 0, 255, 255, 255]);
        assert_eq!(palette_length(&mut std::io::Cursor::new(&good)), Some(6));
        let odd = palette_png(vec![0, 0, 0, 255, 255, 255, 7]);
        assert_eq!(palette_length(&mut std::io::Cursor::new(&odd)), Some(7));
        assert_eq!(palette_length(&mut std::io::Cursor::new(b"GIF89a")), None);
    }

    #[test]
    fn a_broken_palette_is_refused_before_decoding() {
        let dir = std::env::temp_dir().join(format!("diffsr-png-palette-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, palette, ok) in [
            ("good.png", vec![0, 0, 0, 255, 255, 255], true),
            ("one-extra.png", vec![0, 0, 0, 255, 255, 255, 9], false),
            ("two-extra.png", vec![0, 0, 0, 255, 255, 255, 9, 9], false),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, palette_png(palette)).unwrap();
            // Through the loader: before this check, png's palette expansion panicked.
            match crate::image_io::load_image(&path) {
                Ok(image) => assert!(ok && image.size() == (2, 1), "{name} loaded"),
                Err(e) => {
                    let e = e.to_string();
                    assert!(!ok, "{name}: {e}");
                    assert!(e.contains(name) && e.contains("PLTE chunk is"), "{e}");
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
