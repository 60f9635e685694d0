//! Checking a PNG's chunk structure before its text is read: the png crate skips an ancillary
//! chunk whose CRC is wrong, so a damaged text chunk made a file look as if it had no
//! parameters. This walks every chunk (PNG specification, section 5.3: length, type, data,
//! CRC-32 of type and data) and names the first damaged one. Reads are streamed, a block at a
//! time, so memory stays bounded whatever the chunk lengths say.

use std::io::Read;

/// The PNG file signature.
const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1A, b'\n'];

/// The largest chunk length the specification allows (2^31 - 1).
const MAX_CHUNK: u32 = 0x7FFF_FFFF;

/// Why a PNG is unreadable: a sentence to follow "image PATH: ".
pub(super) type Damage = String;

/// Walks the chunks of the PNG `input` up to IEND; `Err` says what is wrong and where.
pub(super) fn check(input: &mut impl Read) -> std::result::Result<(), Damage> {
    let mut signature = [0u8; 8];
    if read_full(input, &mut signature)? < 8 || signature != SIGNATURE {
        return Err("is not a PNG (its signature is missing)".into());
    }
    let table = crc_table();
    let mut offset = 8u64;
    let mut block = vec![0u8; 64 * 1024];
    loop {
        let mut header = [0u8; 8];
        match read_full(input, &mut header)? {
            8 => {}
            0 => return Err("is truncated: it ends before its IEND chunk".into()),
            _ => {
                return Err(format!(
                    "is truncated: it ends inside a chunk header at byte {offset}"
                ))
            }
        }
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let kind = [header[4], header[5], header[6], header[7]];
        let name = chunk_name(kind);
        if !kind.iter().all(u8::is_ascii_alphabetic) {
            return Err(format!(
                "is corrupt: the chunk at byte {offset} has an invalid type ({name})"
            ));
        }
        if len > MAX_CHUNK {
            return Err(format!(
                "is corrupt: chunk {name} at byte {offset} declares {len} bytes, more than a PNG \
                 chunk may hold"
            ));
        }
        let mut crc = update(&table, 0xFFFF_FFFF, &kind);
        let mut left = len as usize;
        while left > 0 {
            let want = left.min(block.len());
            let got = read_full(input, &mut block[..want])?;
            crc = update(&table, crc, &block[..got]);
            if got < want {
                return Err(format!(
                    "is truncated: it ends inside chunk {name} at byte {offset}"
                ));
            }
            left -= got;
        }
        let mut stored = [0u8; 4];
        if read_full(input, &mut stored)? < 4 {
            return Err(format!(
                "is truncated: it ends inside chunk {name} at byte {offset}"
            ));
        }
        if u32::from_be_bytes(stored) != crc ^ 0xFFFF_FFFF {
            return Err(format!(
                "is corrupt: CRC error in chunk {name} at byte {offset} (the file was damaged)"
            ));
        }
        if &kind == b"IEND" {
            return Ok(());
        }
        offset += 12 + u64::from(len);
    }
}

/// The chunk type for a message: its four letters, or its bytes when they are not letters.
fn chunk_name(kind: [u8; 4]) -> String {
    if kind.iter().all(u8::is_ascii_alphabetic) {
        String::from_utf8_lossy(&kind).into_owned()
    } else {
        format!("{kind:02x?}")
    }
}

/// Reads until `buf` is full or the input ends; the count read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::result::Result<usize, Damage> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot be read: {e}")),
        }
    }
    Ok(filled)
}

/// The CRC-32 (ISO 3309, polynomial 0xEDB88320 reflected) lookup table.
fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    for (n, entry) in table.iter_mut().enumerate() {
        let mut c = n as u32;
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *entry = c;
    }
    table
}

fn update(table: &[u32; 256], mut crc: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        crc = table[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let table = crc_table();
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = update(&table, update(&table, 0xFFFF_FFFF, kind), data) ^ 0xFFFF_FFFF;
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    #[test]
    fn the_crc_is_the_png_one() {
        // The CRC of an empty IEND chunk, as every PNG ends.
        assert_eq!(chunk(b"IEND", &[])[8..], [0xAE, 0x42, 0x60, 0x82]);
    }

    #[test]
    fn damage_is_named() {
        let mut png = SIGNATURE.to_vec();
        png.extend(chunk(b"tEXt", b"k\0v"));
        png.extend(chunk(b"IEND", &[]));
        assert_eq!(check(&mut png.as_slice()), Ok(()));
        let mut bad = png.clone();
        bad[8 + 8] ^= 1;
        let e = check(&mut bad.as_slice()).unwrap_err();
        assert!(e.contains("CRC error in chunk tEXt at byte 8"), "{e}");
        let e = check(&mut &png[..png.len() - 3]).unwrap_err();
        assert!(e.contains("truncated") && e.contains("IEND"), "{e}");
        let e = check(&mut &png[..20]).unwrap_err();
        assert!(e.contains("truncated") && e.contains("tEXt"), "{e}");
    }
}
