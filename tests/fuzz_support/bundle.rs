//! Several files as one fuzz input (an ncnn `.param` + `.bin` pair, a tokenizer folder): the
//! harness saves and replays one byte string per case, so multi-file inputs travel in this
//! container. Layout: `DFZB`, then per file a u16 name length, the name, a u32 data length and
//! the data (little-endian). A single-file target's input is the file itself, not a bundle.

const MAGIC: &[u8; 4] = b"DFZB";

/// Packs `(name, data)` files.
pub fn pack(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for (name, data) in files {
        out.extend((name.len() as u16).to_le_bytes());
        out.extend(name.as_bytes());
        out.extend((data.len() as u32).to_le_bytes());
        out.extend(data);
    }
    out
}

/// Unpacks [`pack`]'s output; `None` when `bytes` is not a well-formed bundle.
pub fn unpack(bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut rest = bytes.strip_prefix(MAGIC)?;
    let mut files = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let len = u16::from_le_bytes(*len) as usize;
        let name = String::from_utf8(tail.get(..len)?.to_vec()).ok()?;
        let (data_len, tail) = tail.get(len..)?.split_first_chunk::<4>()?;
        let data_len = u32::from_le_bytes(*data_len) as usize;
        files.push((name, tail.get(..data_len)?.to_vec()));
        rest = &tail[data_len..];
    }
    Some(files)
}

#[test]
fn bundles_round_trip() {
    let files = vec![
        ("a.param".to_string(), b"x y".to_vec()),
        ("b".into(), vec![]),
    ];
    assert_eq!(unpack(&pack(&files)), Some(files));
    assert_eq!(unpack(b"DFZB\x05\x00ab"), None);
}
