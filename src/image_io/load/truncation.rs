//! Telling a truncated file from a whole one where the decoder does not: zune-jpeg (through
//! `image`, which turns its strict mode off) fills a JPEG's missing scan data with grey and
//! reports success, so the JPEG's marker stream is walked for its end-of-image marker; a
//! WebP's RIFF header says how long the file is. Other formats' decoders fail on a short file,
//! and [`is_truncation`] recognises their "unexpected end" errors. Marker layout: ITU T.81
//! annex B; RIFF: the WebP container specification.

use image::ImageError;

/// Whether a JPEG's marker stream reaches its end-of-image marker (`FF D9`). Anything else
/// malformed (a bad segment length) is left to the decoder: only running out of data is
/// truncation. Bytes after the marker (camera trailers) are allowed.
pub(super) fn jpeg_reaches_end(data: &[u8]) -> bool {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return true;
    }
    let mut pos = 2;
    loop {
        // The next marker: 0xFF, fill 0xFFs, then its code. Stray bytes between segments are
        // skipped, as lenient decoders do.
        let Some(ff) = data[pos.min(data.len())..].iter().position(|&b| b == 0xFF) else {
            return false;
        };
        pos += ff;
        while data.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        let Some(&code) = data.get(pos) else {
            return false;
        };
        pos += 1;
        match code {
            0xD9 => return true,
            // Standalone markers (and a stuffed zero out of place): no length follows.
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            _ => {
                let Some(len) = data.get(pos..pos + 2) else {
                    return false;
                };
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                if len < 2 {
                    return true;
                }
                pos += len;
                if code == 0xDA {
                    // A scan's entropy-coded data runs to the next marker that is neither a
                    // stuffed zero (FF 00) nor a restart marker (FF D0..D7).
                    loop {
                        let Some(ff) = data[pos.min(data.len())..].iter().position(|&b| b == 0xFF)
                        else {
                            return false;
                        };
                        pos += ff;
                        match data.get(pos + 1) {
                            None => return false,
                            Some(0x00 | 0xD0..=0xD7) => pos += 2,
                            Some(0xFF) => pos += 1,
                            Some(_) => break,
                        }
                    }
                }
            }
        }
    }
}

/// Whether a RIFF file (WebP) declares more bytes than `file_len` holds. `head` is the
/// file's start.
pub(super) fn riff_is_cut(head: &[u8], file_len: u64) -> bool {
    match head.get(..8) {
        Some([b'R', b'I', b'F', b'F', a, b, c, d]) => {
            u64::from(u32::from_le_bytes([*a, *b, *c, *d])) + 8 > file_len
        }
        _ => false,
    }
}

/// Whether a decoder's error says that the data ended early: an I/O "unexpected end of file"
/// anywhere in its chain, or a message saying so (decoders that flatten their errors).
pub(super) fn is_truncation(e: &ImageError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::UnexpectedEof {
                return true;
            }
        }
        source = s.source();
    }
    let text = e.to_string().to_ascii_lowercase();
    [
        "unexpected end",
        "unexpected eof",
        "failed to fill whole buffer",
    ]
    .iter()
    .any(|t| text.contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SOI, an APP0 segment, SOS with entropy data holding a stuffed zero and a restart marker,
    /// EOI.
    const JPEG: &[u8] = &[
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0xAA, 0xBB, 0xFF, 0xDA, 0x00, 0x03, 0x01, 0x12, 0xFF,
        0x00, 0x34, 0xFF, 0xD3, 0x56, 0xFF, 0xD9,
    ];

    #[test]
    fn a_jpeg_is_whole_only_up_to_its_end_marker() {
        assert!(jpeg_reaches_end(JPEG));
        let mut trailer = JPEG.to_vec();
        trailer.extend_from_slice(b"camera trailer");
        assert!(jpeg_reaches_end(&trailer));
        for cut in 2..JPEG.len() {
            assert!(!jpeg_reaches_end(&JPEG[..cut]), "cut at {cut}");
        }
    }

    #[test]
    fn a_riff_shorter_than_declared_is_cut() {
        let mut head = b"RIFF".to_vec();
        head.extend_from_slice(&100u32.to_le_bytes());
        assert!(riff_is_cut(&head, 107));
        assert!(!riff_is_cut(&head, 108));
        assert!(!riff_is_cut(b"\x89PNG\r\n\x1a\n", 10));
    }
}
