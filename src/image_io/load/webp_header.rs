//! A lossless WebP's size as its header declares it. image-webp 0.2 computes `(1 + field) &
//! 0x3FFF` for the 14-bit size fields, which wraps a side of 16384 (the format's largest) to
//! 0, so such a file looked "empty (0x0)"; this reads the fields as the WebP lossless
//! bitstream specification (section 2, "RIFF header") defines them, for the message.

/// The (width, height) a simple-format lossless WebP (`RIFF....WEBPVP8L`) declares, from the
/// file's first 25 bytes.
pub(super) fn lossless_declared_size(head: &[u8]) -> Option<(u32, u32)> {
    if head.get(..4)? != b"RIFF" || head.get(8..16)? != b"WEBPVP8L" || *head.get(20)? != 0x2F {
        return None;
    }
    let bits = u32::from_le_bytes(head.get(21..25)?.try_into().ok()?);
    Some(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_up_to_16384_are_read() {
        let mut head = b"RIFF\0\0\0\0WEBPVP8L\0\0\0\0\x2f".to_vec();
        head.extend_from_slice(&(16383u32 | (99 << 14)).to_le_bytes());
        assert_eq!(lossless_declared_size(&head), Some((16384, 100)));
        assert_eq!(lossless_declared_size(b"RIFF"), None);
    }
}
