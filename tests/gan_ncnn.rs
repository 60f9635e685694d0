//! Tests of the ncnn reader (`diffsr::gan::ncnn`): small `.param`/`.bin` pairs written here,
//! byte by byte as ncnn lays them out, then the real Real-ESRGAN ncnn models when present.

#[path = "support/ncnn_models.rs"]
mod ncnn_models;
#[path = "support/ncnn_param.rs"]
mod ncnn_param;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, ensure, Result};
use candle_core::{DType, Tensor};
use diffsr::gan::ncnn::{load_ncnn, ncnn_pair};
use diffsr::gan::StateDict;
use ncnn_models::ncnn_models;
use ncnn_param::Param;

/// How a test kernel is stored in the `.bin`.
#[derive(Clone, Copy, PartialEq)]
enum Enc {
    /// All-zero flag, raw f32.
    F32,
    /// fp16 tag, half floats padded to 4 bytes.
    F16,
    /// A nonzero flag: 256-entry f32 table, then u8 indices padded to 4 bytes.
    Table,
}

/// Test values: multiples of 1/8 in [-4, 4), exact in f32 and f16.
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7 + seed * 13) % 64) as f32 / 8.0 - 4.0)
        .collect()
}

/// IEEE half bits of `x`, for the exact values [`values`] makes.
fn f16_bits(x: f32) -> u16 {
    if x == 0.0 {
        return 0;
    }
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    assert!(
        (1..31).contains(&exp) && bits & 0x1fff == 0,
        "{x} is not exact in f16"
    );
    sign | (exp as u16) << 10 | ((bits >> 13) & 0x3ff) as u16
}

/// Builds a `.bin` and remembers what each tensor must hold.
#[derive(Default)]
struct Bin {
    bytes: Vec<u8>,
    expected: Vec<(String, Vec<usize>, DType, Vec<f32>)>,
}

impl Bin {
    fn f32s(&mut self, v: &[f32]) {
        v.iter().for_each(|x| self.bytes.extend(x.to_le_bytes()));
    }

    fn pad(&mut self) {
        while self.bytes.len() % 4 != 0 {
            self.bytes.push(0);
        }
    }

    /// A convolution's kernel and bias, named `prefix.weight` / `prefix.bias`.
    fn conv(&mut self, prefix: &str, shape: [usize; 4], enc: Enc, seed: usize) {
        let n = shape.iter().product();
        let w = values(n, seed);
        match enc {
            Enc::F32 => {
                self.bytes.extend([0u8; 4]);
                self.f32s(&w);
            }
            Enc::F16 => {
                self.bytes.extend(0x0130_6B47u32.to_le_bytes());
                w.iter()
                    .for_each(|&x| self.bytes.extend(f16_bits(x).to_le_bytes()));
                self.pad();
            }
            Enc::Table => {
                self.bytes.extend([1u8, 0, 0, 0]);
                // Table entry i holds i/8 - 4, so value v is index 8 * (v + 4).
                let table: Vec<f32> = (0..256).map(|i| i as f32 / 8.0 - 4.0).collect();
                self.f32s(&table);
                w.iter()
                    .for_each(|&x| self.bytes.push(((x + 4.0) * 8.0) as u8));
                self.pad();
            }
        }
        let dtype = if enc == Enc::F16 {
            DType::F16
        } else {
            DType::F32
        };
        self.expected
            .push((format!("{prefix}.weight"), shape.to_vec(), dtype, w));
        let b = values(shape[0], seed + 100);
        self.f32s(&b);
        self.expected
            .push((format!("{prefix}.bias"), vec![shape[0]], DType::F32, b));
    }

    fn prelu(&mut self, name: &str, n: usize, seed: usize) {
        let s = values(n, seed + 200);
        self.f32s(&s);
        self.expected
            .push((name.to_string(), vec![n], DType::F32, s));
    }
}

/// A scratch directory, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a pair into a fresh directory under the system temp dir; the directory lives as long
/// as the returned guard.
fn write_pair(name: &str, param: &str, bin: &[u8]) -> Result<(PathBuf, PathBuf, TempDir)> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("diffsr-gan-ncnn-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let guard = TempDir(dir.clone());
    let (p, b) = (
        dir.join(format!("{name}.param")),
        dir.join(format!("{name}.bin")),
    );
    std::fs::write(&p, param)?;
    std::fs::write(&b, bin)?;
    Ok((p, b, guard))
}

fn check_exact(dict: &StateDict, bin: &Bin) -> Result<()> {
    let names: Vec<&String> = dict.keys().collect();
    let mut expected: Vec<&String> = bin.expected.iter().map(|e| &e.0).collect();
    expected.sort();
    ensure!(names == expected, "names {names:?}, expected {expected:?}");
    for (name, shape, dtype, vals) in &bin.expected {
        let t: &Tensor = &dict[name];
        ensure!(
            t.dims() == shape.as_slice(),
            "{name}: shape {:?}, expected {shape:?}",
            t.dims()
        );
        ensure!(
            t.dtype() == *dtype,
            "{name}: dtype {:?}, expected {dtype:?}",
            t.dtype()
        );
        let got = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        ensure!(&got == vals, "{name}: values differ");
    }
    Ok(())
}

/// SRVGGNetCompact(num_in_ch 3, num_out_ch 3, feat, num_conv 1, upscale 2, act PReLU), kernels
/// stored as `encs` (first, body, last).
fn tiny_srvgg(feat: usize, encs: [Enc; 3]) -> (Param, Bin) {
    let (mut p, mut b) = (Param::default(), Bin::default());
    p.layer("Input", "in", &[], &["data"], "");
    p.layer("Split", "split", &["data"], &["d0", "d1"], "");
    let conv = |o: usize, i: usize| format!("0={o} 1=3 4=1 5=1 6={}", o * i * 9);
    p.layer("Convolution", "conv0", &["d1"], &["c0"], &conv(feat, 3));
    b.conv("body.0", [feat, 3, 3, 3], encs[0], 1);
    p.layer("PReLU", "act0", &["c0"], &["a0"], &format!("0={feat}"));
    b.prelu("body.1.weight", feat, 1);
    p.layer("Convolution", "conv1", &["a0"], &["c1"], &conv(feat, feat));
    b.conv("body.2", [feat, feat, 3, 3], encs[1], 2);
    p.layer("PReLU", "act1", &["c1"], &["a1"], &format!("0={feat}"));
    b.prelu("body.3.weight", feat, 2);
    p.layer("Convolution", "conv2", &["a1"], &["c2"], &conv(12, feat));
    b.conv("body.4", [12, feat, 3, 3], encs[2], 3);
    p.layer("PixelShuffle", "ps", &["c2"], &["up"], "0=2");
    p.layer(
        "Interp",
        "base",
        &["d0"],
        &["b"],
        "0=1 1=2.000000e+00 2=2.000000e+00",
    );
    p.layer("BinaryOp", "add", &["up", "b"], &["output"], "0=0");
    (p, b)
}

#[test]
fn srvgg_f32_exact() -> Result<()> {
    let (p, b) = tiny_srvgg(4, [Enc::F32; 3]);
    let (pp, bp, _dir) = write_pair("srvgg-f32", &p.text(), &b.bytes)?;
    check_exact(&load_ncnn(&pp, &bp)?, &b)
}

#[test]
fn srvgg_fp16_exact() -> Result<()> {
    let (p, b) = tiny_srvgg(4, [Enc::F16; 3]);
    let (pp, bp, _dir) = write_pair("srvgg-f16", &p.text(), &b.bytes)?;
    check_exact(&load_ncnn(&pp, &bp)?, &b)
}

/// feat 1 gives odd fp16 counts (27, 9), so the padding to 4 bytes is exercised; the table
/// format is mixed in.
#[test]
fn srvgg_fp16_padding_and_table() -> Result<()> {
    let (p, b) = tiny_srvgg(1, [Enc::F16, Enc::Table, Enc::F16]);
    let (pp, bp, _dir) = write_pair("srvgg-pad", &p.text(), &b.bytes)?;
    check_exact(&load_ncnn(&pp, &bp)?, &b)
}

/// RRDBNet(num_in_ch 3, num_out_ch 3, num_feat 4, num_block 1, num_grow_ch 2), x4.
fn tiny_rrdb() -> (Param, Bin) {
    let (nf, gc) = (4, 2);
    let (mut p, mut b) = (Param::default(), Bin::default());
    let mut seed = 0;
    let mut conv =
        |p: &mut Param, b: &mut Bin, name: &str, input: &str, shape: [usize; 4], act: bool| {
            seed += 1;
            let out = format!("{name}_out");
            let lrelu = if act {
                " 9=2 -23310=1,2.000000e-01"
            } else {
                ""
            };
            let n: usize = shape.iter().product();
            p.layer(
                "Convolution",
                name,
                &[input],
                &[&out],
                &format!("0={} 1=3 4=1 5=1 6={n}{lrelu}", shape[0]),
            );
            b.conv(name, shape, Enc::F32, seed);
            out
        };
    p.layer("Input", "in", &[], &["data"], "");
    let feat = conv(&mut p, &mut b, "conv_first", "data", [nf, 3, 3, 3], false);
    let mut x = feat.clone();
    for r in 1..=3 {
        let mut cat = vec![x.clone()];
        for c in 1..=5 {
            let input = if c == 1 {
                x.clone()
            } else {
                let name = format!("cat{r}{c}");
                let refs: Vec<&str> = cat.iter().map(String::as_str).collect();
                p.layer("Concat", &name, &refs, &[&name], "0=0");
                name
            };
            let out_ch = if c == 5 { nf } else { gc };
            let name = format!("body.0.rdb{r}.conv{c}");
            cat.push(conv(
                &mut p,
                &mut b,
                &name,
                &input,
                [out_ch, nf + (c - 1) * gc, 3, 3],
                c < 5,
            ));
        }
        let sum = format!("rdb{r}_sum");
        let refs = [cat[5].as_str(), x.as_str()];
        p.layer(
            "Eltwise",
            &sum,
            &refs,
            &[&sum],
            "0=1 -23301=2,2.000000e-01,1.000000e+00",
        );
        x = sum;
    }
    p.layer(
        "Eltwise",
        "block_sum",
        &[&x, &feat],
        &["block_sum"],
        "0=1 -23301=2,2.000000e-01,1.000000e+00",
    );
    let body = conv(
        &mut p,
        &mut b,
        "conv_body",
        "block_sum",
        [nf, nf, 3, 3],
        false,
    );
    p.layer("BinaryOp", "trunk", &[&feat, &body], &["trunk"], "0=0");
    p.layer("Interp", "up1", &["trunk"], &["up1"], "0=1 1=2.0 2=2.0");
    let u1 = conv(&mut p, &mut b, "conv_up1", "up1", [nf, nf, 3, 3], true);
    p.layer("Interp", "up2", &[&u1], &["up2"], "0=1 1=2.0 2=2.0");
    let u2 = conv(&mut p, &mut b, "conv_up2", "up2", [nf, nf, 3, 3], true);
    let hr = conv(&mut p, &mut b, "conv_hr", &u2, [nf, nf, 3, 3], true);
    conv(&mut p, &mut b, "conv_last", &hr, [3, nf, 3, 3], false);
    (p, b)
}

#[test]
fn rrdb_one_block_exact() -> Result<()> {
    let (p, b) = tiny_rrdb();
    let (pp, bp, _dir) = write_pair("rrdb", &p.text(), &b.bytes)?;
    let dict = load_ncnn(&pp, &bp)?;
    ensure!(dict.len() == 2 * (15 + 6), "{} tensors", dict.len());
    check_exact(&dict, &b)
}

/// The error of loading the pair, which must be `Error::Weights` about `blame`.
fn weights_error(param: &Path, bin: &Path, blame: &Path) -> Result<String> {
    match load_ncnn(param, bin) {
        Ok(_) => bail!("loaded, expected an error"),
        Err(diffsr::Error::Weights { path, message }) => {
            ensure!(
                path == blame,
                "error names {path:?}, expected {blame:?}: {message}"
            );
            let file = blame.file_name().unwrap().to_string_lossy().into_owned();
            ensure!(
                message.contains(&file),
                "message does not name {file}: {message}"
            );
            Ok(message)
        }
        Err(other) => bail!("unexpected error kind: {other}"),
    }
}

#[test]
fn truncated_bin() -> Result<()> {
    let (p, b) = tiny_srvgg(4, [Enc::F16; 3]);
    let (pp, bp, _dir) = write_pair("trunc", &p.text(), &b.bytes[..b.bytes.len() - 10])?;
    let msg = weights_error(&pp, &bp, &bp)?;
    ensure!(
        msg.contains("is truncated") && msg.contains("conv2 (Convolution)"),
        "{msg}"
    );
    ensure!(
        msg.contains(&format!("file ends at byte {}", b.bytes.len() - 10)),
        "{msg}"
    );
    Ok(())
}

#[test]
fn extra_bytes_in_bin() -> Result<()> {
    let (p, mut b) = tiny_srvgg(4, [Enc::F32; 3]);
    b.bytes.extend([0u8; 8]);
    let (pp, bp, _dir) = write_pair("extra", &p.text(), &b.bytes)?;
    let msg = weights_error(&pp, &bp, &bp)?;
    ensure!(
        msg.contains("has 8 bytes left") && msg.contains("mismatched pair"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn unknown_architecture() -> Result<()> {
    let (mut p, mut b) = (Param::default(), Bin::default());
    p.layer("Input", "in", &[], &["data"], "");
    p.layer("Convolution", "c1", &["data"], &["x1"], "0=2 1=1 5=1 6=6");
    b.conv("a", [2, 3, 1, 1], Enc::F32, 1);
    p.layer("Pooling", "pool", &["x1"], &["x2"], "0=0 1=2");
    p.layer("Convolution", "c2", &["x2"], &["x3"], "0=2 1=1 5=1 6=4");
    b.conv("b", [2, 2, 1, 1], Enc::F32, 2);
    p.layer("Convolution", "c3", &["x3"], &["out"], "0=2 1=1 5=1 6=4");
    b.conv("c", [2, 2, 1, 1], Enc::F32, 3);
    let (pp, bp, _dir) = write_pair("odd", &p.text(), &b.bytes)?;
    let msg = weights_error(&pp, &bp, &pp)?;
    ensure!(msg.contains("not a known architecture"), "{msg}");
    ensure!(
        msg.contains("Convolution x3") && msg.contains("Pooling x1"),
        "{msg}"
    );
    ensure!(
        msg.contains("SRVGGNetCompact") && msg.contains("RRDBNet"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn int8_refused() -> Result<()> {
    let (p, mut b) = tiny_srvgg(4, [Enc::F32; 3]);
    b.bytes[..4].copy_from_slice(&0x000D_4B38u32.to_le_bytes());
    let (pp, bp, _dir) = write_pair("int8", &p.text(), &b.bytes)?;
    let msg = weights_error(&pp, &bp, &bp)?;
    ensure!(
        msg.contains("int8-quantised ncnn models are not supported"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn malformed_param() -> Result<()> {
    let (p, b) = tiny_srvgg(4, [Enc::F32; 3]);
    let good = p.text();
    let cases: Vec<(String, &str)> = vec![
        (good.replacen("7767517", "7767518", 1), "magic"),
        (String::new(), "empty"),
        (good.replacen("10 11", "11 11", 1), "declares 11 layers"),
        (good.replacen("10 11", "10 99", 1), "declares 99 blobs"),
        (
            good.replacen("10 11", "ten 11", 1),
            "layer_count blob_count",
        ),
        (
            good.replacen("6=108", "6=abc", 1),
            "expected a 32-bit integer",
        ),
        (
            good.replacen("6=108", "6=1.5", 1),
            "expected a non-negative integer",
        ),
        (
            good.replacen("6=108", "6=-108", 1),
            "expected a non-negative integer",
        ),
        (good.replacen("6=108", "99=1", 1), "has id 99"),
        (
            good.replacen("0=2", "-23300=3,1,2", 1),
            "declares 3 array items",
        ),
        (
            good.replacen(
                "PixelShuffle ps 1 1",
                "PixelShuffle ps 1 99999999999999999999",
                1,
            ),
            "n_outputs",
        ),
        (
            good.replacen("PixelShuffle ps 1 1", "PixelShuffle ps 1 999999999", 1),
            "blob names",
        ),
        (
            good.replacen("Interp base 1 1 d0", "Interp base 1 1 nowhere", 1),
            "blob `nowhere`",
        ),
        (
            good.replacen("Convolution conv1", "ConvolutionDepthWise conv1", 1),
            "unsupported layer type",
        ),
    ];
    for (i, (text, expect)) in cases.iter().enumerate() {
        let (pp, bp, _dir) = write_pair(&format!("bad{i}"), text, &b.bytes)?;
        let msg = weights_error(&pp, &bp, &pp)?;
        ensure!(
            msg.contains(expect),
            "case {i}: expected `{expect}` in: {msg}"
        );
    }
    Ok(())
}

#[test]
fn pair_paths() {
    let (p, b) = (PathBuf::from("m/x4.param"), PathBuf::from("m/x4.bin"));
    assert_eq!(ncnn_pair(&p), Some((p.clone(), b.clone())));
    assert_eq!(ncnn_pair(&b), Some((p, b)));
    assert_eq!(ncnn_pair(Path::new("m/x4.pth")), None);
    assert_eq!(ncnn_pair(Path::new("m/x4.param.bin")), None);
    assert_eq!(ncnn_pair(Path::new("m/x4")), None);
}

fn load_real(dir: &Path, name: &str) -> Result<StateDict> {
    Ok(load_ncnn(
        &dir.join(format!("{name}.param")),
        &dir.join(format!("{name}.bin")),
    )?)
}

fn rrdb_blocks(dict: &StateDict) -> usize {
    (0..)
        .take_while(|b| dict.contains_key(&format!("body.{b}.rdb3.conv5.weight")))
        .count()
}

#[test]
fn real_models_load() -> Result<()> {
    let Some(dir) = ncnn_models() else {
        println!("skipped: no Real-ESRGAN ncnn models (set DIFFSR_REALESRGAN_NCNN_MODELS)");
        return Ok(());
    };
    for name in ["realesr-animevideov3-x4", "realesr-animevideov3-x2"] {
        let mut dict = load_real(&dir, name)?;
        // The x2 model is the x4 network with its final 0.5x Interp kept as one more entry.
        let resize = dict.remove(diffsr::gan::arch::OUTPUT_RESIZE_KEY);
        ensure!(
            resize.is_some() == name.ends_with("x2"),
            "{name}: output resize"
        );
        let rank = |r: usize| dict.values().filter(|t| t.rank() == r).count();
        ensure!(
            rank(1) == 17 + 18 && rank(4) == 18,
            "{name}: {} tensors",
            dict.len()
        );
        ensure!(
            dict["body.34.weight"].dims() == [48, 64, 3, 3],
            "{name}: last conv"
        );
        ensure!(
            dict["body.33.weight"].dims() == [64] && dict["body.0.weight"].dtype() == DType::F16
        );
    }
    let x4plus = load_real(&dir, "realesrgan-x4plus")?;
    ensure!(rrdb_blocks(&x4plus) == 23 && x4plus.len() == 2 * (23 * 15 + 6));
    ensure!(x4plus["conv_first.weight"].dims() == [64, 3, 3, 3]);
    ensure!(x4plus["conv_last.weight"].dims() == [3, 64, 3, 3]);
    let anime = load_real(&dir, "realesrgan-x4plus-anime")?;
    ensure!(rrdb_blocks(&anime) == 6 && anime.len() == 2 * (6 * 15 + 6));
    Ok(())
}
