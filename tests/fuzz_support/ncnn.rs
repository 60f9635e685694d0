//! ncnn model pairs for the fuzzer: tiny valid seeds written in code (an SRVGGNetCompact with
//! PReLU and an RRDBNet, f32 and fp16 kernels, as realesrgan-ncnn-vulkan's files are laid
//! out), and mutations that know the formats: `.param` tokens and `id=value` params replaced
//! with awkward numbers, lines removed, duplicated or swapped; `.bin` words (the storage flags
//! and fp16 tags) rewritten, the data cut or padded.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use super::bundle;
use super::mutate::{apply as apply_bytes, byte_op, int_value, write_int, ByteOp, IntValue};
use crate::ncnn_param::Param;

/// The `.param` text and `.bin` bytes of a model, built layer by layer.
#[derive(Default)]
struct Pair {
    param: Param,
    bin: Vec<u8>,
}

impl Pair {
    /// A 3x3 convolution `c_in -> c_out` (`channels`) and its weights (f32, or fp16 when
    /// `half`).
    fn conv(
        &mut self,
        name: &str,
        input: &str,
        output: &str,
        channels: (usize, usize),
        extra: &str,
        half: bool,
    ) {
        let (c_in, c_out) = channels;
        let n = c_in * c_out * 9;
        self.param.layer(
            "Convolution",
            name,
            &[input],
            &[output],
            &format!("0={c_out} 1=3 4=1 5=1 6={n}{extra}"),
        );
        if half {
            self.bin.extend(0x0130_6B47u32.to_le_bytes());
            // 0x3c00 is 1.0 in half precision; alternate signs keep the sums small.
            for i in 0..n {
                self.bin
                    .extend(if i % 2 == 0 { 0x2c00u16 } else { 0xac00 }.to_le_bytes());
            }
            while self.bin.len() % 4 != 0 {
                self.bin.push(0);
            }
        } else {
            self.bin.extend([0u8; 4]);
            for i in 0..n {
                self.bin
                    .extend(((i % 7) as f32 * 0.01 - 0.03).to_le_bytes());
            }
        }
        for i in 0..c_out {
            self.bin.extend((i as f32 * 0.001).to_le_bytes());
        }
    }

    fn finish(self, name: &str) -> Vec<u8> {
        bundle::pack(&[
            (format!("{name}.param"), self.param.text().into_bytes()),
            (format!("{name}.bin"), self.bin),
        ])
    }
}

/// SRVGGNetCompact(3 -> 3, feat 4, one body conv, PReLU, x`scale`).
fn srvgg(scale: usize, half: bool) -> Vec<u8> {
    let feat = 4;
    let mut p = Pair::default();
    p.param.layer("Input", "in", &[], &["data"], "0=3");
    p.param
        .layer("Split", "split", &["data"], &["d0", "d1"], "");
    p.conv("conv0", "d1", "c0", (3, feat), "", half);
    p.param
        .layer("PReLU", "act0", &["c0"], &["a0"], &format!("0={feat}"));
    (0..feat).for_each(|_| p.bin.extend(0.25f32.to_le_bytes()));
    p.conv("conv1", "a0", "c1", (feat, feat), "", half);
    p.param
        .layer("PReLU", "act1", &["c1"], &["a1"], &format!("0={feat}"));
    (0..feat).for_each(|_| p.bin.extend(0.25f32.to_le_bytes()));
    p.conv("conv2", "a1", "c2", (feat, 3 * scale * scale), "", half);
    p.param.layer(
        "PixelShuffle",
        "ps",
        &["c2"],
        &["up"],
        &format!("0={scale}"),
    );
    p.param.layer(
        "Interp",
        "base",
        &["d0"],
        &["b"],
        &format!("0=1 1={scale}.000000e+00 2={scale}.000000e+00"),
    );
    p.param
        .layer("BinaryOp", "add", &["up", "b"], &["output"], "0=0");
    p.finish("srvgg")
}

/// RRDBNet(3 -> 3, nf 4, gc 2, one block), x4.
fn rrdb() -> Vec<u8> {
    let (nf, gc) = (4, 2);
    let lrelu = " 9=2 -23310=1,2.000000e-01";
    let mut p = Pair::default();
    p.param.layer("Input", "in", &[], &["data"], "0=3");
    p.conv("conv_first", "data", "feat", (3, nf), "", false);
    let mut x = "feat".to_string();
    for r in 1..=3 {
        let mut cat = vec![x.clone()];
        for c in 1..=5 {
            let input = if c == 1 {
                x.clone()
            } else {
                let name = format!("cat{r}{c}");
                let refs: Vec<&str> = cat.iter().map(String::as_str).collect();
                p.param.layer("Concat", &name, &refs, &[&name], "0=0");
                name
            };
            let out = format!("r{r}c{c}");
            let c_out = if c == 5 { nf } else { gc };
            let act = if c < 5 { lrelu } else { "" };
            p.conv(
                &format!("rdb{r}conv{c}"),
                &input,
                &out,
                (nf + (c - 1) * gc, c_out),
                act,
                r == 2,
            );
            cat.push(out);
        }
        let sum = format!("rdb{r}sum");
        let refs = [cat[5].as_str(), x.as_str()];
        p.param.layer(
            "Eltwise",
            &sum,
            &refs,
            &[&sum],
            "0=1 -23301=2,2.000000e-01,1.000000e+00",
        );
        x = sum;
    }
    p.param.layer(
        "Eltwise",
        "block_sum",
        &[&x, "feat"],
        &["block_sum"],
        "0=1 -23301=2,2.000000e-01,1.000000e+00",
    );
    p.conv("conv_body", "block_sum", "body", (nf, nf), "", false);
    p.param
        .layer("BinaryOp", "trunk", &["feat", "body"], &["trunk"], "0=0");
    p.param
        .layer("Interp", "up1", &["trunk"], &["up1"], "0=1 1=2.0 2=2.0");
    p.conv("conv_up1", "up1", "u1", (nf, nf), lrelu, false);
    p.param
        .layer("Interp", "up2", &["u1"], &["up2"], "0=1 1=2.0 2=2.0");
    p.conv("conv_up2", "up2", "u2", (nf, nf), lrelu, false);
    p.conv("conv_hr", "u2", "hr", (nf, nf), lrelu, false);
    p.conv("conv_last", "hr", "output", (nf, 3), "", false);
    p.finish("rrdb")
}

/// The seed pairs, as bundles.
pub fn seeds() -> Vec<Vec<u8>> {
    vec![srvgg(2, false), srvgg(4, true), rrdb()]
}

/// A replacement token for a `.param` file.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        int_value().prop_map(|v| v.get().to_string()),
        int_value().prop_map(|v| format!("-{}", v.get())),
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("nan".to_string()),
        Just("1e40".to_string()),
        Just("-23310=0".to_string()),
        Just("-23310=-5,1".to_string()),
        Just("-23310=100000,1".to_string()),
        Just("0=".to_string()),
        Just("=".to_string()),
        Just("\u{1b}[2J".to_string()),
        "[ -~]{1,8}",
    ]
}

/// One mutation of an ncnn pair.
#[derive(Debug, Clone)]
pub enum NcnnOp {
    /// Replaces the nth whitespace-separated token of the `.param`.
    Token {
        nth: Index,
        with: String,
    },
    /// Replaces the value of the nth `id=value` param, keeping its id.
    Value {
        nth: Index,
        with: String,
    },
    RemoveLine {
        line: Index,
    },
    DuplicateLine {
        line: Index,
        to: Index,
    },
    SwapLines {
        a: Index,
        b: Index,
    },
    /// Byte mutation of the `.param`.
    ParamBytes(ByteOp),
    /// Rewrites the nth 4-byte word of the `.bin` (flags, tags, values).
    BinWord {
        nth: Index,
        value: IntValue,
    },
    BinBytes(ByteOp),
}

pub fn ncnn_op() -> impl Strategy<Value = NcnnOp> {
    prop_oneof![
        3 => (any::<Index>(), token()).prop_map(|(nth, with)| NcnnOp::Token { nth, with }),
        4 => (any::<Index>(), token()).prop_map(|(nth, with)| NcnnOp::Value { nth, with }),
        1 => any::<Index>().prop_map(|line| NcnnOp::RemoveLine { line }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(line, to)| NcnnOp::DuplicateLine { line, to }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| NcnnOp::SwapLines { a, b }),
        1 => byte_op().prop_map(NcnnOp::ParamBytes),
        2 => (any::<Index>(), int_value()).prop_map(|(nth, value)| NcnnOp::BinWord { nth, value }),
        2 => byte_op().prop_map(NcnnOp::BinBytes),
    ]
}

/// Replaces the nth token of `text` for which `select` is true by `with(token)`.
fn replace_token(
    text: &str,
    nth: Index,
    select: impl Fn(&str) -> bool,
    with: impl Fn(&str) -> String,
) -> String {
    let tokens: Vec<(usize, &str)> = text
        .split_whitespace()
        .map(|t| (t.as_ptr() as usize - text.as_ptr() as usize, t))
        .filter(|(_, t)| select(t))
        .collect();
    if tokens.is_empty() {
        return text.to_string();
    }
    let (at, t) = tokens[nth.index(tokens.len())];
    format!("{}{}{}", &text[..at], with(t), &text[at + t.len()..])
}

/// `param` after a text mutation (`op` is one of the `.param` text ops).
fn edit_param(param: &str, op: &NcnnOp) -> String {
    let mut lines: Vec<&str> = param.lines().collect();
    let n = lines.len();
    match op {
        NcnnOp::Token { nth, with } => {
            return replace_token(param, *nth, |_| true, |_| with.clone())
        }
        NcnnOp::Value { nth, with } => {
            return replace_token(
                param,
                *nth,
                |t| t.contains('='),
                |t| {
                    let id = t.split('=').next().unwrap_or("");
                    format!("{id}={}", with.rsplit('=').next().unwrap_or(with))
                },
            )
        }
        _ if n == 0 => {}
        NcnnOp::RemoveLine { line } => {
            lines.remove(line.index(n));
        }
        NcnnOp::DuplicateLine { line, to } => {
            let l = lines[line.index(n)];
            lines.insert(to.index(n + 1), l);
        }
        NcnnOp::SwapLines { a, b } => lines.swap(a.index(n), b.index(n)),
        _ => {}
    }
    lines.join("\n")
}

/// A bundle (`.param`, `.bin`) mutated by `ops`.
pub fn mutate(pair: &[u8], ops: &[NcnnOp]) -> Vec<u8> {
    let Some(mut files) = bundle::unpack(pair).filter(|f| f.len() == 2) else {
        return pair.to_vec();
    };
    for op in ops {
        match op {
            NcnnOp::ParamBytes(op) => apply_bytes(&mut files[0].1, op, &[]),
            NcnnOp::BinBytes(op) => apply_bytes(&mut files[1].1, op, &[]),
            NcnnOp::BinWord { nth, value } => {
                let bin = &mut files[1].1;
                let words = bin.len() / 4;
                if words > 0 {
                    write_int(bin, 4 * nth.index(words), 4, false, value.get());
                }
            }
            text => {
                let param = String::from_utf8_lossy(&files[0].1).into_owned();
                files[0].1 = edit_param(&param, text).into_bytes();
            }
        }
    }
    bundle::pack(&files)
}

/// Mutations of the seed pairs.
pub fn mutated_pairs() -> BoxedStrategy<Vec<u8>> {
    let seeds = seeds();
    (any::<Index>(), vec(ncnn_op(), 1..=3))
        .prop_map(move |(seed, ops)| mutate(&seeds[seed.index(seeds.len())], &ops))
        .boxed()
}
