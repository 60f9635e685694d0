//! Hostile model files (issue 14): every format diffsr reads (safetensors, PyTorch `.pth`,
//! ncnn `.param` / `.bin`, diffusers model folders) built here byte by byte, malformed on
//! purpose, and refused with one clear message naming the file and the tensor, field or layer,
//! never a panic, an abort or a hang. Also ncnn's final `Interp` (realesr-animevideov3-x2 / x3)
//! honoured, checked against an independent float reference and against ncnn itself.

#[path = "support/cli.rs"]
mod cli;
#[path = "support/ncnn_models.rs"]
mod ncnn_models;
#[path = "support/ncnn_param.rs"]
mod ncnn_param;
#[path = "support/ncnn_reference.rs"]
mod ncnn_reference;

use std::collections::HashMap;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use diffsr::gan::arch::{GanNetwork, OUTPUT_RESIZE_KEY};
use diffsr::gan::embedded::embedded_model;
use diffsr::gan::{GanModel, GanOptions, GanUpscaler, StateDict};
use ncnn_param::Param;

// ---------------------------------------------------------------------------------------------
// Scratch files.

/// A fresh directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "diffsr-hardening-models-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The error `GanModel::load` gives, or a note that it loaded.
fn load_error(path: &Path) -> String {
    match GanModel::load(path) {
        Ok(m) => format!("loaded as {}", m.arch().describe()),
        Err(e) => e.to_string(),
    }
}

/// Runs `f` on another thread and fails if it takes longer than `secs` (a hang).
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .context("timed out: it hangs")
}

// ---------------------------------------------------------------------------------------------
// State dicts and files.

/// Small deterministic values.
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + seed * 104_729) % 997) as f32 / 997.0 - 0.5) * 0.2)
        .collect()
}

fn tensor(shape: &[usize], seed: usize) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(values(n, seed), shape, &Device::Cpu).unwrap()
}

/// SRVGGNetCompact(3 channels, nf `nf`, `num_conv` middle convs, x`upscale`, PReLU).
fn srvgg(nf: usize, num_conv: usize, upscale: usize) -> StateDict {
    let mut dict = StateDict::new();
    for k in 0..=num_conv {
        let c_in = if k == 0 { 3 } else { nf };
        dict.insert(
            format!("body.{}.weight", 2 * k),
            tensor(&[nf, c_in, 3, 3], 10 * k + 1),
        );
        dict.insert(format!("body.{}.bias", 2 * k), tensor(&[nf], 10 * k + 2));
        dict.insert(
            format!("body.{}.weight", 2 * k + 1),
            tensor(&[nf], 10 * k + 3),
        );
    }
    let last = 2 * num_conv + 2;
    let c_out = 3 * upscale * upscale;
    dict.insert(
        format!("body.{last}.weight"),
        tensor(&[c_out, nf, 3, 3], 99),
    );
    dict.insert(format!("body.{last}.bias"), tensor(&[c_out], 98));
    dict
}

/// The smallest RRDBNet (nf 4, gc 2, one block) with `num_upsample` upsampling convs.
fn rrdb(num_upsample: usize) -> StateDict {
    let (nf, gc) = (4, 2);
    let mut convs = vec![("conv_first".to_string(), nf, 3)];
    for r in 1..=3 {
        for c in 1..=5 {
            let c_out = if c == 5 { nf } else { gc };
            convs.push((format!("body.0.rdb{r}.conv{c}"), c_out, nf + (c - 1) * gc));
        }
    }
    convs.push(("conv_body".into(), nf, nf));
    convs.extend((1..=num_upsample).map(|i| (format!("conv_up{i}"), nf, nf)));
    convs.push(("conv_hr".into(), nf, nf));
    convs.push(("conv_last".into(), 3, nf));
    let mut dict = StateDict::new();
    for (i, (name, o, c)) in convs.into_iter().enumerate() {
        dict.insert(format!("{name}.weight"), tensor(&[o, c, 3, 3], i));
        dict.insert(format!("{name}.bias"), tensor(&[o], i + 1000));
    }
    dict
}

fn save_safetensors(dir: &Scratch, name: &str, dict: &StateDict) -> PathBuf {
    let path = dir.path(name);
    let map: HashMap<String, Tensor> = dict.clone().into_iter().collect();
    candle_core::safetensors::save(&map, &path).unwrap();
    path
}

/// A safetensors file from a raw JSON header and data.
fn raw_safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// One tensor of a `.pth` as `torch.save` pickles it.
struct PthTensor {
    name: String,
    storage: &'static str,
    key: String,
    storage_len: u64,
    offset: u64,
    size: Vec<u64>,
    stride: Vec<u64>,
    /// The last stride written as -1.
    negative_stride: bool,
}

impl PthTensor {
    /// A contiguous f32 tensor with its own storage `key`.
    fn contiguous(name: &str, key: usize, size: &[u64]) -> Self {
        let mut stride = vec![1u64; size.len()];
        for d in (0..size.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * size[d + 1];
        }
        Self {
            name: name.into(),
            storage: "FloatStorage",
            key: key.to_string(),
            storage_len: size.iter().product(),
            offset: 0,
            size: size.to_vec(),
            stride,
            negative_stride: false,
        }
    }
}

/// Pickle opcodes (protocol 2), written by hand.
#[derive(Default)]
struct Pickle(Vec<u8>);

impl Pickle {
    fn op(&mut self, op: u8) -> &mut Self {
        self.0.push(op);
        self
    }

    fn str(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend((s.len() as u32).to_le_bytes());
        self.0.extend(s.as_bytes());
        self
    }

    /// The smallest encoding, as pickle writes ints: BININT1, BININT2, BININT, then LONG1.
    fn int(&mut self, v: u64) -> &mut Self {
        if v < 1 << 8 {
            self.0.extend([b'K', v as u8]);
        } else if v < 1 << 16 {
            self.0.push(b'M');
            self.0.extend((v as u16).to_le_bytes());
        } else if v < 1 << 31 {
            self.0.push(b'J');
            self.0.extend((v as u32).to_le_bytes());
        } else {
            // Two's complement: a top bit set needs a ninth, zero byte; 8 bytes are read here.
            self.0.extend([0x8a, 8]);
            self.0.extend(v.to_le_bytes());
        }
        self
    }

    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.0.push(b'c');
        self.0.extend(format!("{module}\n{name}\n").as_bytes());
        self
    }

    fn ints(&mut self, v: &[u64]) -> &mut Self {
        self.op(b'(');
        for &x in v {
            self.int(x);
        }
        self.op(b't')
    }

    /// `{name: _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())}`.
    fn state_dict(tensors: &[PthTensor]) -> Vec<u8> {
        let mut p = Pickle::default();
        p.op(0x80).op(2).op(b'}').op(b'(');
        for t in tensors {
            p.str(&t.name);
            p.global("torch._utils", "_rebuild_tensor_v2").op(b'(');
            p.op(b'(').str("storage").global("torch", t.storage);
            p.str(&t.key)
                .str("cpu")
                .int(t.storage_len)
                .op(b't')
                .op(b'Q');
            p.int(t.offset).ints(&t.size);
            if t.negative_stride {
                p.op(b'(');
                for &x in &t.stride[..t.stride.len() - 1] {
                    p.int(x);
                }
                p.0.extend([b'J', 0xff, 0xff, 0xff, 0xff]);
                p.op(b't');
            } else {
                p.ints(&t.stride);
            }
            p.op(0x89);
            p.global("collections", "OrderedDict").op(b')').op(b'R');
            p.op(b't').op(b'R');
        }
        p.op(b'u').op(b'.');
        p.0
    }
}

/// A zip-format `.pth`: `archive/data.pkl` and one stored entry per storage.
fn write_pth(path: &Path, pickle: &[u8], storages: &[(&str, Vec<u8>)]) {
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", options).unwrap();
    zip.write_all(pickle).unwrap();
    for (key, data) in storages {
        zip.start_file(format!("archive/data/{key}"), options)
            .unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A `.pth` of `dict`, every tensor contiguous f32 in its own storage.
fn pth_of(path: &Path, dict: &StateDict) {
    let mut records = Vec::new();
    let mut storages = Vec::new();
    for (i, (name, t)) in dict.iter().enumerate() {
        let size: Vec<u64> = t.dims().iter().map(|&d| d as u64).collect();
        records.push(PthTensor::contiguous(name, i, &size));
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        storages.push((i.to_string(), f32_bytes(&v)));
    }
    let storages: Vec<(&str, Vec<u8>)> = storages
        .iter()
        .map(|(k, d)| (k.as_str(), d.clone()))
        .collect();
    write_pth(path, &Pickle::state_dict(&records), &storages);
}

// ---------------------------------------------------------------------------------------------
// ncnn pairs.

/// Builds a `.param` (text) and its `.bin` (bytes) side by side.
#[derive(Default)]
struct Ncnn {
    param: Param,
    bin: Vec<u8>,
}

impl Ncnn {
    /// A 3x3 convolution with bias, f32 kernel (all-zero flag).
    fn conv(&mut self, name: &str, input: &str, output: &str, shape: [usize; 4], seed: usize) {
        let n: usize = shape.iter().product();
        self.param.layer(
            "Convolution",
            name,
            &[input],
            &[output],
            &format!("0={} 1=3 4=1 5=1 6={n}", shape[0]),
        );
        self.bin.extend([0u8; 4]);
        self.bin.extend(f32_bytes(&values(n, seed)));
        self.bin.extend(f32_bytes(&values(shape[0], seed + 1)));
    }

    fn prelu(&mut self, name: &str, input: &str, output: &str, n: usize, seed: usize) {
        self.param
            .layer("PReLU", name, &[input], &[output], &format!("0={n}"));
        // Positive slopes around 0.2, as trained PReLUs have.
        let slopes: Vec<f32> = values(n, seed).iter().map(|v| 0.2 + v).collect();
        self.bin.extend(f32_bytes(&slopes));
    }

    fn write(&self, dir: &Scratch, name: &str) -> PathBuf {
        dir.write(&format!("{name}.bin"), &self.bin);
        dir.write(&format!("{name}.param"), self.param.text().as_bytes())
    }
}

/// An ncnn SRVGGNetCompact x4 (nf 4, one middle conv), as realesr-animevideov3 is exported,
/// ending with `final_interp` (an `Interp` param string) when given.
fn ncnn_srvgg_x4(final_interp: Option<&str>) -> Ncnn {
    let mut n = Ncnn::default();
    n.param.layer("Input", "in", &[], &["data"], "");
    n.param
        .layer("Split", "split", &["data"], &["d0", "d1"], "");
    n.conv("conv0", "d1", "c0", [4, 3, 3, 3], 1);
    n.prelu("act0", "c0", "a0", 4, 3);
    n.conv("conv1", "a0", "c1", [4, 4, 3, 3], 5);
    n.prelu("act1", "c1", "a1", 4, 7);
    n.conv("conv2", "a1", "c2", [48, 4, 3, 3], 9);
    n.param.layer("PixelShuffle", "ps", &["c2"], &["up"], "0=4");
    n.param.layer(
        "Interp",
        "base",
        &["d0"],
        &["b"],
        "0=1 1=4.000000e+00 2=4.000000e+00",
    );
    match final_interp {
        None => n
            .param
            .layer("BinaryOp", "add", &["up", "b"], &["output"], "0=0"),
        Some(params) => {
            n.param
                .layer("BinaryOp", "add", &["up", "b"], &["sum"], "0=0");
            n.param
                .layer("Interp", "down", &["sum"], &["output"], params);
        }
    }
    n
}

// ---------------------------------------------------------------------------------------------
// Class 6: shapes validated against the architecture before any arithmetic.

#[test]
fn a_compact_model_with_an_empty_input_axis_is_refused_by_name() -> Result<()> {
    let dir = Scratch::new("empty-axis");
    let mut dict = srvgg(8, 1, 4);
    dict.insert(
        "body.0.weight".into(),
        Tensor::zeros((8, 0, 3, 3), DType::F32, &Device::Cpu)?,
    );
    let path = save_safetensors(&dir, "empty.safetensors", &dict);
    let err = load_error(&path);
    ensure!(
        err.contains("empty.safetensors")
            && err.contains("`body.0.weight`")
            && err.contains("[8, 0, 3, 3]"),
        "{err}"
    );
    Ok(())
}

#[test]
fn inconsistent_channel_counts_name_the_tensor_and_the_expected_shape() -> Result<()> {
    let dir = Scratch::new("channels");
    let mut dict = srvgg(8, 2, 4);
    dict.insert("body.4.weight".into(), tensor(&[8, 5, 3, 3], 1));
    let err = load_error(&save_safetensors(&dir, "c.safetensors", &dict));
    ensure!(
        err.contains("`body.4.weight`")
            && err.contains("[8, 5, 3, 3]")
            && err.contains("[8, 8, 3, 3]"),
        "{err}"
    );
    let mut dict = rrdb(2);
    dict.insert("body.0.rdb2.conv3.weight".into(), tensor(&[2, 7, 3, 3], 1));
    let err = load_error(&save_safetensors(&dir, "r.safetensors", &dict));
    ensure!(
        err.contains("`body.0.rdb2.conv3.weight`") && err.contains("[2, 8, 3, 3]"),
        "{err}"
    );
    // A missing bias is named too.
    let mut dict = srvgg(4, 1, 2);
    dict.remove("body.2.bias");
    let err = load_error(&save_safetensors(&dir, "b.safetensors", &dict));
    ensure!(err.contains("`body.2.bias`"), "{err}");
    Ok(())
}

#[test]
fn absurd_layer_counts_are_refused_with_the_limit() -> Result<()> {
    let dir = Scratch::new("counts");
    let mut dict = srvgg(4, 1, 2);
    dict.insert("body.100000.weight".into(), tensor(&[12, 4, 3, 3], 1));
    let err = load_error(&save_safetensors(&dir, "deep.safetensors", &dict));
    ensure!(err.contains("body.100000") && err.contains("256"), "{err}");
    let mut dict = rrdb(2);
    for b in 1..=300 {
        dict.insert(
            format!("body.{b}.rdb1.conv1.weight"),
            tensor(&[2, 4, 3, 3], b),
        );
    }
    let err = load_error(&save_safetensors(&dir, "blocks.safetensors", &dict));
    ensure!(
        err.contains("301 RRDB blocks") && err.contains("256"),
        "{err}"
    );
    // Channel counts beyond any model.
    let mut dict = srvgg(4, 1, 2);
    dict.insert(
        "body.0.weight".into(),
        Tensor::zeros((2000, 3, 3, 3), DType::F32, &Device::Cpu)?,
    );
    let err = load_error(&save_safetensors(&dir, "wide.safetensors", &dict));
    ensure!(
        err.contains("`body.0.weight`") && err.contains("1024"),
        "{err}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Class 8: an RRDB with 64 upsampling convs.

#[test]
fn an_rrdb_with_64_upsampling_convs_is_refused_not_detected_as_x1() -> Result<()> {
    let dir = Scratch::new("conv-up");
    let path = save_safetensors(&dir, "up64.safetensors", &rrdb(64));
    let err = load_error(&path);
    ensure!(
        err.contains("up64.safetensors")
            && err.contains("64 upsampling convs")
            && err.contains("x16"),
        "{err}"
    );
    // Four (x16) is the most accepted.
    let model = GanModel::load(&save_safetensors(&dir, "up4.safetensors", &rrdb(4)))?;
    ensure!(model.arch().scale() == 16);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Class 7: declared sizes checked against the data before anything is allocated.

#[test]
fn a_small_pth_declaring_a_huge_tensor_is_refused_before_allocating() -> Result<()> {
    let dir = Scratch::new("pth-huge");
    // 100000 x 100000 x 3 x 3 f32 would be 360 GB; the file holds 4 bytes of data.
    let mut huge = PthTensor::contiguous("body.0.weight", 0, &[100_000, 100_000, 3, 3]);
    let path = dir.path("huge.pth");
    write_pth(
        &path,
        &Pickle::state_dict(&[huge.clone_with(|_| {})]),
        &[("0", vec![0; 4])],
    );
    ensure!(std::fs::metadata(&path)?.len() < 2048);
    let err = load_error(&path);
    ensure!(
        err.contains("huge.pth")
            && err.contains("`body.0.weight`")
            && err.contains("holds 4 bytes"),
        "{err}"
    );
    // The storage declared small, the view huge.
    huge.storage_len = 1;
    write_pth(
        &path,
        &Pickle::state_dict(&[huge.clone_with(|_| {})]),
        &[("0", vec![0; 4])],
    );
    let err = load_error(&path);
    ensure!(
        err.contains("`body.0.weight`") && err.contains("beyond its storage"),
        "{err}"
    );
    // Sizes whose product overflows.
    let mut overflow = PthTensor::contiguous("w", 0, &[1]);
    overflow.size = vec![u64::MAX / 2, 4];
    overflow.stride = vec![4, 1];
    write_pth(
        &path,
        &Pickle::state_dict(&[overflow]),
        &[("0", vec![0; 4])],
    );
    let err = load_error(&path);
    ensure!(err.contains("`w`") && err.contains("overflows"), "{err}");
    Ok(())
}

impl PthTensor {
    fn clone_with(&self, f: impl FnOnce(&mut Self)) -> Self {
        let mut t = Self {
            name: self.name.clone(),
            storage: self.storage,
            key: self.key.clone(),
            storage_len: self.storage_len,
            offset: self.offset,
            size: self.size.clone(),
            stride: self.stride.clone(),
            negative_stride: self.negative_stride,
        };
        f(&mut t);
        t
    }
}

#[test]
fn pth_tensors_round_trip_including_fortran_order() -> Result<()> {
    let dir = Scratch::new("pth-ok");
    let dict = srvgg(4, 1, 2);
    let path = dir.path("ok.pth");
    pth_of(&path, &dict);
    let model = GanModel::load(&path)?;
    for (name, t) in &dict {
        let got = &model.weights()[name];
        ensure!(got.dims() == t.dims(), "{name}");
        let d = (got - t)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        ensure!(d == 0.0, "{name} differs");
    }
    // A 2 x 3 tensor stored column-major: storage [0 3 1 4 2 5], strides (1, 2).
    let t = PthTensor {
        name: "w".into(),
        storage: "FloatStorage",
        key: "0".into(),
        storage_len: 6,
        offset: 0,
        size: vec![2, 3],
        stride: vec![1, 2],
        negative_stride: false,
    };
    let path = dir.path("fortran.pth");
    write_pth(
        &path,
        &Pickle::state_dict(&[t]),
        &[("0", f32_bytes(&[0., 3., 1., 4., 2., 5.]))],
    );
    // Not a GAN, but its one tensor must read back in row-major order: the error lists it.
    let err = load_error(&path);
    ensure!(
        err.contains("not a known architecture") && err.contains('w'),
        "{err}"
    );
    Ok(())
}

/// `dict` as a `.pth` whose records `edit` may spoil.
fn pth_with(path: &Path, dict: &StateDict, edit: impl Fn(&mut PthTensor)) -> Result<()> {
    let mut records = Vec::new();
    let mut storages = Vec::new();
    for (i, (name, t)) in dict.iter().enumerate() {
        let size: Vec<u64> = t.dims().iter().map(|&d| d as u64).collect();
        let mut r = PthTensor::contiguous(name, i, &size);
        edit(&mut r);
        records.push(r);
        storages.push((
            i.to_string(),
            f32_bytes(&t.flatten_all()?.to_vec1::<f32>()?),
        ));
    }
    let storages: Vec<(&str, Vec<u8>)> = storages
        .iter()
        .map(|(k, d)| (k.as_str(), d.clone()))
        .collect();
    write_pth(path, &Pickle::state_dict(&records), &storages);
    Ok(())
}

#[test]
fn a_pth_with_a_bad_stride_says_so_not_unknown_architecture() -> Result<()> {
    let dir = Scratch::new("pth-stride");
    let dict = srvgg(4, 1, 2);
    let path = dir.path("stride.pth");
    // A negative stride on the tensor detection starts from (once skipped silently, then
    // reported as "not a known architecture").
    pth_with(&path, &dict, |r| {
        if r.name == "body.0.weight" {
            r.negative_stride = true;
        }
    })?;
    let err = load_error(&path);
    ensure!(
        err.contains("`body.0.weight`")
            && err.contains("stride[3]")
            && !err.contains("not a known"),
        "{err}"
    );
    // A stride one dimension short (once read as if it were right).
    pth_with(&path, &dict, |r| {
        if r.name == "body.2.weight" {
            r.stride.pop();
        }
    })?;
    let err = load_error(&path);
    ensure!(
        err.contains("`body.2.weight`") && err.contains("stride [36, 9, 3]"),
        "{err}"
    );
    Ok(())
}

#[test]
fn safetensors_headers_are_checked_and_name_the_tensor() -> Result<()> {
    let dir = Scratch::new("st");
    let case = |name: &str, bytes: Vec<u8>| load_error(&dir.write(name, &bytes));
    // A header length beyond the file.
    let mut bytes = raw_safetensors("{}", &[]);
    bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let err = case("len.safetensors", bytes);
    ensure!(
        err.contains("len.safetensors") && err.contains("header length"),
        "{err}"
    );
    // Offsets past the data.
    let err = case(
        "range.safetensors",
        raw_safetensors(
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8000]}}"#,
            &[0; 8],
        ),
    );
    ensure!(err.contains("`w`") && err.contains("0..8000"), "{err}");
    // dtype x shape not the byte length.
    let err = case(
        "len2.safetensors",
        raw_safetensors(
            r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            &[0; 8],
        ),
    );
    ensure!(err.contains("`w`") && err.contains("12 bytes"), "{err}");
    // A shape whose byte count overflows.
    let err = case(
        "overflow.safetensors",
        raw_safetensors(
            r#"{"big":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#,
            &[0; 8],
        ),
    );
    ensure!(err.contains("`big`") && err.contains("overflows"), "{err}");
    // Two tensors over the same bytes.
    let err = case(
        "overlap.safetensors",
        raw_safetensors(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            &[0; 12],
        ),
    );
    ensure!(
        err.contains("`a`") && err.contains("`b`") && err.contains("overlap"),
        "{err}"
    );
    // A bad entry and an unknown dtype.
    let err = case(
        "entry.safetensors",
        raw_safetensors(
            r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}"#,
            &[],
        ),
    );
    ensure!(err.contains("`w`"), "{err}");
    let err = case(
        "dtype.safetensors",
        raw_safetensors(
            r#"{"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}"#,
            &[0],
        ),
    );
    ensure!(err.contains("`w`") && err.contains("F8_E4M3"), "{err}");
    Ok(())
}

#[test]
fn ncnn_bin_sizes_are_checked_against_the_param() -> Result<()> {
    let dir = Scratch::new("ncnn-size");
    // A kernel declared at 500M values (2 GB) over a small `.bin`.
    let mut n = ncnn_srvgg_x4(None);
    // 500000004 = 36 x 13888889: a whole number of 4 x 3 x 3 filters.
    n.param.lines[2] = n.param.lines[2].replace("6=108", "6=500000004");
    let param = n.write(&dir, "huge");
    let err = load_error(&param);
    ensure!(
        err.contains("huge.bin") && err.contains("truncated"),
        "{err}"
    );
    // A `.bin` far larger than the `.param`'s layers can hold is not read.
    let mut n = ncnn_srvgg_x4(None);
    n.bin.extend(vec![0u8; 1 << 20]);
    let param = n.write(&dir, "long");
    let err = load_error(&param);
    ensure!(
        err.contains("long.bin") && err.contains("more than"),
        "{err}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Class 11 (model files): regular files only, checked before opening; bounded reads.

#[cfg(unix)]
#[test]
fn fifos_devices_and_directories_are_refused_without_hanging() -> Result<()> {
    let dir = Scratch::new("fifo");
    for name in ["model.pth", "model.safetensors", "model.param"] {
        let fifo = dir.path(name);
        cli::mkfifo(&fifo)?;
        let err = within(20, move || load_error(&fifo))?;
        ensure!(err.contains(name) && err.contains("FIFO"), "{name}: {err}");
    }
    // An ncnn `.bin` that is /dev/zero: refused, not read forever.
    let n = ncnn_srvgg_x4(None);
    let param = dir.write("zero.param", n.param.text().as_bytes());
    std::os::unix::fs::symlink("/dev/zero", dir.path("zero.bin"))?;
    let err = within(20, move || load_error(&param))?;
    ensure!(
        err.contains("zero.bin") && err.contains("character device"),
        "{err}"
    );
    // A directory with a model's name.
    std::fs::create_dir(dir.path("folder.pth"))?;
    let err = load_error(&dir.path("folder.pth"));
    ensure!(
        err.contains("folder.pth") && err.contains("a folder"),
        "{err}"
    );
    Ok(())
}

#[cfg(unix)]
#[test]
fn the_binary_refuses_a_fifo_model_without_hanging() -> Result<()> {
    let dir = Scratch::new("fifo-cli");
    let fifo = dir.path("model.pth");
    cli::mkfifo(&fifo)?;
    let photo = cli::fixtures().join("gan/photos/coffee.png");
    let mut command = cli::offline(&dir.0, &["upscale", cli::s(&photo), "-o"]);
    command
        .arg(dir.path("out.png"))
        .args(["--engine", "gan", "--model"])
        .arg(&fifo);
    let out = cli::output_within(&mut command, Duration::from_secs(30))?;
    let stderr = cli::stderr(&out);
    ensure!(!out.status.success() && stderr.contains("FIFO"), "{stderr}");
    ensure!(!dir.path("out.png").exists());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Class 14: NaN and infinite weights refused at load, naming the tensor.

#[test]
fn non_finite_weights_are_refused_naming_the_tensor_in_every_format() -> Result<()> {
    let dir = Scratch::new("nan");
    let mut dict = srvgg(4, 1, 2);
    let mut w = values(4 * 4 * 9, 1);
    w[7] = f32::NAN;
    dict.insert(
        "body.2.weight".into(),
        Tensor::from_vec(w, (4, 4, 3, 3), &Device::Cpu)?,
    );
    let err = load_error(&save_safetensors(&dir, "nan.safetensors", &dict));
    ensure!(
        err.contains("nan.safetensors") && err.contains("`body.2.weight`") && err.contains("NaN"),
        "{err}"
    );
    // f16 too, and infinity.
    let mut dict16 = dict.clone();
    dict16.insert(
        "body.2.weight".into(),
        tensor(&[4, 4, 3, 3], 1).to_dtype(DType::F16)?,
    );
    let b = Tensor::new(&[1f32, f32::INFINITY, 0.0, 0.0], &Device::Cpu)?.to_dtype(DType::F16)?;
    dict16.insert("body.0.bias".into(), b);
    let err = load_error(&save_safetensors(&dir, "inf16.safetensors", &dict16));
    ensure!(
        err.contains("`body.0.bias`") && err.contains("infinite"),
        "{err}"
    );
    // .pth.
    let path = dir.path("nan.pth");
    pth_of(&path, &dict);
    let err = load_error(&path);
    ensure!(
        err.contains("nan.pth") && err.contains("`body.2.weight`"),
        "{err}"
    );
    // ncnn: the layer is named.
    let mut n = ncnn_srvgg_x4(None);
    let at = 4 + 4 * 10; // conv0's flag, then its 11th weight
    n.bin[at..at + 4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    let err = load_error(&n.write(&dir, "inf"));
    ensure!(
        err.contains("inf.bin") && err.contains("conv0") && err.contains("infinite"),
        "{err}"
    );
    // The embedded model is checked the same way (bytes in memory).
    let mut bytes = std::fs::read(save_safetensors(&dir, "mem.safetensors", &dict))?;
    let len = bytes.len();
    bytes[len - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    let err = GanModel::from_safetensors_bytes(&bytes, Path::new("in-memory"))
        .err()
        .context("loaded")?
        .to_string();
    ensure!(err.contains("in-memory") && err.contains("NaN"), "{err}");
    Ok(())
}

#[test]
fn diffusion_weights_with_nan_are_refused_naming_the_tensor() -> Result<()> {
    let dir = Scratch::new("nan-diffusion");
    dir.write(
        "model_index.json",
        br#"{"_class_name": "StableDiffusionUpscalePipeline"}"#,
    );
    std::fs::create_dir_all(dir.path("vae"))?;
    let good = Tensor::ones((2, 2), DType::F32, &Device::Cpu)?;
    let bad = Tensor::new(&[1f32, f32::NAN], &Device::Cpu)?.to_dtype(DType::F16)?;
    let map: HashMap<String, Tensor> =
        [("good".to_string(), good), ("decoder.bad".to_string(), bad)].into();
    candle_core::safetensors::save(&map, dir.path("vae/diffusion_pytorch_model.safetensors"))?;
    let model = diffsr::model_dir::ModelDir::open(&dir.0)?;
    let (vb, _) = model.var_builder("vae", "diffusion_pytorch_model", DType::F32, &Device::Cpu)?;
    ensure!(vb.get((2, 2), "good").is_ok());
    let err = vb
        .get(2, "decoder.bad")
        .err()
        .context("NaN loaded")?
        .to_string();
    ensure!(
        err.contains("`decoder.bad`") && err.contains("NaN"),
        "{err}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Class 15: ncnn's final Interp (realesr-animevideov3-x2 / x3) honoured.

/// ncnn's bicubic (A = -0.75, align_corner 0, edges repeated), written out independently:
/// out[d] = Σ_k w_k(f) · in[clamp(floor(p) - 1 + k)], p = (d + 0.5) · len / out − 0.5.
fn ncnn_bicubic_reference(x: &[f64], h: usize, w: usize, factor: f64) -> (Vec<f64>, usize, usize) {
    let (oh, ow) = ((h as f64 * factor) as usize, (w as f64 * factor) as usize);
    let taps = |len: usize, out: usize| -> Vec<[(usize, f64); 4]> {
        (0..out)
            .map(|d| {
                let p = (d as f64 + 0.5) * len as f64 / out as f64 - 0.5;
                let s = p.floor();
                let t = p - s;
                let a = -0.75;
                let k = |x: f64| {
                    let x = x.abs();
                    if x <= 1.0 {
                        (a + 2.0) * x.powi(3) - (a + 3.0) * x * x + 1.0
                    } else if x < 2.0 {
                        a * x.powi(3) - 5.0 * a * x * x + 8.0 * a * x - 4.0 * a
                    } else {
                        0.0
                    }
                };
                let mut out = [(0, 0.0); 4];
                for (j, o) in out.iter_mut().enumerate() {
                    let i = (s as i64 - 1 + j as i64).clamp(0, len as i64 - 1) as usize;
                    *o = (i, k(t + 1.0 - j as f64));
                }
                out
            })
            .collect()
    };
    let (tx, ty) = (taps(w, ow), taps(h, oh));
    let mut rows = vec![0.0; h * ow];
    for y in 0..h {
        for (d, t) in tx.iter().enumerate() {
            rows[y * ow + d] = t.iter().map(|&(i, c)| c * x[y * w + i]).sum();
        }
    }
    let mut out = vec![0.0; oh * ow];
    for (d, t) in ty.iter().enumerate() {
        for xo in 0..ow {
            out[d * ow + xo] = t.iter().map(|&(i, c)| c * rows[i * ow + xo]).sum();
        }
    }
    (out, oh, ow)
}

fn network(model: &GanModel) -> Result<GanNetwork> {
    Ok(GanNetwork::new(
        model.arch(),
        model.weights(),
        DType::F32,
        &Device::Cpu,
        model.source(),
    )?)
}

#[test]
fn a_final_half_size_bicubic_interp_makes_an_x2_model_as_ncnn_computes_it() -> Result<()> {
    let dir = Scratch::new("interp");
    let x4 = GanModel::load(&ncnn_srvgg_x4(None).write(&dir, "x4"))?;
    let x2_param = ncnn_srvgg_x4(Some("0=3 1=5.000000e-01 2=5.000000e-01")).write(&dir, "x2");
    let x2 = GanModel::load(&x2_param)?;
    ensure!(
        x4.arch().scale() == 4 && x2.arch().scale() == 2,
        "{}",
        x2.arch().describe()
    );
    ensure!(
        x2.arch().describe().contains("bicubic"),
        "{}",
        x2.arch().describe()
    );
    let (h, w) = (9, 13);
    let input = Tensor::rand(0f32, 1.0, (1, 3, h, w), &Device::Cpu)?;
    let big = network(&x4)?.forward(&input)?;
    let got = network(&x2)?.forward(&input)?;
    ensure!(got.dims() == [1, 3, 2 * h, 2 * w], "{:?}", got.dims());
    for c in 0..3 {
        let plane: Vec<f64> = big
            .get(0)?
            .get(c)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(f64::from)
            .collect();
        let (want, oh, ow) = ncnn_bicubic_reference(&plane, 4 * h, 4 * w, 0.5);
        ensure!((oh, ow) == (2 * h, 2 * w));
        let got: Vec<f32> = got.get(0)?.get(c)?.flatten_all()?.to_vec1()?;
        for (g, w) in got.iter().zip(&want) {
            ensure!((*g as f64 - w).abs() < 1e-5, "channel {c}: {g} vs {w}");
        }
    }
    // Tiled output equals untiled: the tile context covers the resize's reach.
    let options = |tile| GanOptions {
        tile: Some(tile),
        pre_pad: 0,
        ..GanOptions::default()
    };
    let input = Tensor::rand(0f32, 1.0, (1, 3, 37, 45), &Device::Cpu)?;
    let whole = GanUpscaler::new(&x2, &options(0))?
        .upscale_tensor(&input, &mut |_, _| ControlFlow::Continue(()))?;
    let tiled = GanUpscaler::new(&x2, &options(24))?
        .upscale_tensor(&input, &mut |_, _| ControlFlow::Continue(()))?;
    let d = (whole - tiled)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    ensure!(d < 1e-5, "tiled differs by {d}");
    // `diffsr convert` keeps the resize: the safetensors file loads as x2 again.
    let out = dir.path("x2.safetensors");
    x2.save_safetensors(&out, None)?;
    let back = GanModel::load(&out)?;
    ensure!(back.arch() == x2.arch());
    // Bilinear, nearest and x3 load with their scales; align_corner and fixed sizes do not.
    for (params, scale) in [
        ("0=2 1=0.5 2=0.5", 2),
        ("0=1 1=0.5 2=0.5", 2),
        ("0=3 1=0.75 2=0.75", 3),
    ] {
        let m = GanModel::load(&ncnn_srvgg_x4(Some(params)).write(&dir, "v"))?;
        ensure!(m.arch().scale() == scale, "{params}");
    }
    for (params, why) in [
        ("0=2 1=0.5 2=0.5 6=1", "aligns corners"),
        ("0=2 3=10 4=10", "fixed"),
        ("0=3 1=0.5 2=0.25", "0.5 x 0.25"),
        ("0=3 1=0.3 2=0.3", "no whole scale"),
    ] {
        let err = load_error(&ncnn_srvgg_x4(Some(params)).write(&dir, "bad"));
        ensure!(err.contains(why), "{params}: {err}");
    }
    Ok(())
}

#[test]
fn the_binary_writes_an_x2_image_for_an_x2_ncnn_model() -> Result<()> {
    let dir = Scratch::new("interp-cli");
    let param = ncnn_srvgg_x4(Some("0=3 1=5.000000e-01 2=5.000000e-01")).write(&dir, "x2");
    let photo = cli::fixtures().join("gan/photos/coffee.png");
    let out_path = dir.path("out.png");
    let out = cli::diffsr(
        &dir.0,
        &[
            "upscale",
            cli::s(&photo),
            "-o",
            cli::s(&out_path),
            "--engine",
            "gan",
            "--model",
            cli::s(&param),
        ],
    )?;
    ensure!(out.status.success(), "{}", cli::stderr(&out));
    // The photo is 48 x 40.
    ensure!(image::image_dimensions(&out_path)? == (96, 80));
    Ok(())
}

/// `model` on the photos against ncnn's own output (scripts/fixtures/gan_ncnn_resize.py).
fn matches_ncnn(model: &GanModel, key: &str, photos: &[&str]) -> Result<()> {
    ncnn_reference::matches_ncnn(model, "ncnn_reference_resize.safetensors", key, photos)
}

/// The built-in realesr-animevideov3-x4 weights with the x2 / x3 models' final Interp: the
/// ncnn x2 and x3 files hold exactly these weights (the same `.bin`).
fn built_in_with_resize(factor: f32) -> Result<GanModel> {
    let mut dict = embedded_model()?.weights().clone();
    let marker = Tensor::new(&[3f32, factor, factor], &Device::Cpu)?;
    dict.insert(OUTPUT_RESIZE_KEY.to_string(), marker);
    Ok(GanModel::from_state_dict(
        dict,
        Path::new("animevideov3-resized"),
    )?)
}

#[test]
fn animevideov3_x2_and_x3_match_ncnn_on_photos() -> Result<()> {
    matches_ncnn(
        &built_in_with_resize(0.5)?,
        "realesr-animevideov3-x2",
        &["astronaut", "coffee", "chelsea"],
    )?;
    matches_ncnn(
        &built_in_with_resize(0.75)?,
        "realesr-animevideov3-x3",
        &["astronaut"],
    )
}

#[test]
fn animevideov3_x2_and_x3_ncnn_files_match_ncnn() -> Result<()> {
    let Some(dir) = ncnn_models::ncnn_models() else {
        println!("skipped: realesr-animevideov3-x2's ncnn files not found");
        return Ok(());
    };
    let x2 = GanModel::load(&dir.join("realesr-animevideov3-x2.param"))?;
    ensure!(x2.arch().scale() == 2, "{}", x2.arch().describe());
    matches_ncnn(
        &x2,
        "realesr-animevideov3-x2",
        &["astronaut", "coffee", "chelsea"],
    )?;
    let x3 = GanModel::load(&dir.join("realesr-animevideov3-x3.bin"))?;
    matches_ncnn(&x3, "realesr-animevideov3-x3", &["astronaut"])
}

// ---------------------------------------------------------------------------------------------
// Class 17: messages said once, naming the real cause.

#[test]
fn a_missing_model_file_is_said_once() -> Result<()> {
    let dir = Scratch::new("missing");
    let out = cli::offline(&dir.0, &["convert"])
        .arg(dir.path("absent.pth"))
        .arg(dir.path("out.safetensors"))
        .output()?;
    let stderr = cli::stderr(&out);
    ensure!(!out.status.success(), "{stderr}");
    ensure!(
        stderr.matches("no such model file").count() == 1 && stderr.contains("absent.pth"),
        "{stderr}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Mutated files: whatever the bytes, a load returns (an error or a model), never panics.

/// xorshift64*: a fixed-seed byte source.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// `bytes` with 1 to 4 random edits: a byte changed, an extreme byte, a cut, an insertion.
    fn mutate(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut b = bytes.to_vec();
        for _ in 0..1 + self.below(4) {
            let at = self.below(b.len());
            match self.below(5) {
                0 => b[at] = self.next() as u8,
                1 => b[at] = [0x00, 0xff, 0x7f, 0x80][self.below(4)],
                2 => b.truncate(at.max(1)),
                3 => {
                    let n = 1 + self.below(8);
                    let bytes: Vec<u8> = (0..n).map(|_| self.next() as u8).collect();
                    b.splice(at..at, bytes);
                }
                _ => {
                    // A little-endian length field set huge.
                    let end = (at + 8).min(b.len());
                    b[at..end].fill(0xff);
                }
            }
            if b.is_empty() {
                b.push(0);
            }
        }
        b
    }
}

#[test]
fn mutated_model_files_never_panic() -> Result<()> {
    let dir = Scratch::new("mutate");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let dict = srvgg(4, 1, 2);
    let st = std::fs::read(save_safetensors(&dir, "base.safetensors", &dict))?;
    let pth_path = dir.path("base.pth");
    pth_of(&pth_path, &dict);
    let pth = std::fs::read(&pth_path)?;
    let ncnn = ncnn_srvgg_x4(Some("0=3 1=0.5 2=0.5"));
    // The pickle alone, re-zipped after each mutation, so the unpickler sees the damage.
    let records: Vec<PthTensor> = dict
        .iter()
        .enumerate()
        .map(|(i, (n, t))| {
            let size: Vec<u64> = t.dims().iter().map(|&d| d as u64).collect();
            PthTensor::contiguous(n, i, &size)
        })
        .collect();
    let pickle = Pickle::state_dict(&records);
    let storages: Vec<(String, Vec<u8>)> = dict
        .values()
        .enumerate()
        .map(|(i, t)| {
            Ok((
                i.to_string(),
                f32_bytes(&t.flatten_all()?.to_vec1::<f32>()?),
            ))
        })
        .collect::<Result<_>>()?;
    let storages: Vec<(&str, Vec<u8>)> = storages
        .iter()
        .map(|(k, d)| (k.as_str(), d.clone()))
        .collect();
    // A longer run: DIFFSR_MODEL_MUTATIONS=20000 (and DIFFSR_MODEL_MUTATION_SEED).
    let rounds = std::env::var("DIFFSR_MODEL_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    if let Some(seed) = std::env::var("DIFFSR_MODEL_MUTATION_SEED")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        rng = Rng(seed | 1);
    }
    for _ in 0..rounds {
        load_error(&dir.write("m.safetensors", &rng.mutate(&st)));
        load_error(&dir.write("m.pth", &rng.mutate(&pth)));
        let p = dir.path("p.pth");
        write_pth(&p, &rng.mutate(&pickle), &storages);
        load_error(&p);
        dir.write("n.bin", &rng.mutate(&ncnn.bin));
        let param = dir.write("n.param", ncnn.param.text().as_bytes());
        load_error(&param);
        dir.write("n.bin", &ncnn.bin);
        let param = dir.write("n.param", &rng.mutate(ncnn.param.text().as_bytes()));
        load_error(&param);
    }
    Ok(())
}
