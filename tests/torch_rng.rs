//! `TorchRng` against torch itself: the values `torch.randn` returned on a seeded CPU generator,
//! recorded by scripts/fixtures/torch_randn.py into tests/fixtures/torch_randn.safetensors (torch
//! 2.15 on an AVX-512 CPU, so the "seq"/"tens" groups come from torch's AVX2 f32 kernel, and the
//! "pseq" groups from its portable kernel, forced with `ATEN_CPU_CAPABILITY=default`).
//!
//! On x86-64 Linux with glibc (where the fixture was made) every value must be bit-identical.
//! Elsewhere the scalar (n < 16), f64 and portable paths go through another libm, which may round
//! `log`/`sin`/`cos` differently in rare cases, so there every value must be within one unit in
//! the last place of its dtype. Either way f32 values below 2 in magnitude must also be within
//! 4e-7 absolutely.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use diffsr::rng::TorchRng;

use diffsr::rng::NormalKernel;

const ABS_TOL: f64 = 4e-7;

/// Whether this platform computes exactly what the fixture machine did.
const BIT_EXACT: bool = cfg!(all(
    target_arch = "x86_64",
    target_os = "linux",
    target_env = "gnu"
));

fn fixture() -> Result<HashMap<String, Tensor>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_randn.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu)
        .with_context(|| format!("loading {}", path.display()))
}

fn seed_of(t: &Tensor) -> Result<u64> {
    let v: Vec<i64> = t.to_vec1()?;
    ensure!(v.len() == 1, "a seed is one int64");
    // Stored two's complement, as torch itself stores seeds >= 2^63.
    Ok(v[0] as u64)
}

/// Sorted group names ("seq000", "tens001", ...) with the given prefix.
fn groups(fx: &HashMap<String, Tensor>, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = fx
        .keys()
        .filter_map(|k| k.split_once('/').map(|(g, _)| g.to_string()))
        .filter(|g| g.starts_with(prefix))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The spacing of `dtype` values around `x` (one ulp), as f64.
fn ulp(x: f64, dtype: DType) -> f64 {
    let (mantissa_bits, min_exp) = match dtype {
        DType::F16 => (10, -14),
        DType::BF16 => (7, -126),
        DType::F32 => (23, -126),
        _ => (52, -1022),
    };
    let exp = if x == 0.0 {
        min_exp
    } else {
        (x.abs().log2().floor() as i32).max(min_exp)
    };
    2f64.powi(exp - mantissa_bits)
}

/// Agreement statistics of one comparison run.
#[derive(Default)]
struct Tally {
    values: usize,
    exact: usize,
    max_abs: f64,
    max_ulps: f64,
}

impl Tally {
    fn check(&mut self, what: &str, i: usize, got: f64, want: f64, dtype: DType) -> Result<()> {
        let diff = (got - want).abs();
        let ulps = diff / ulp(want, dtype);
        self.values += 1;
        self.exact += usize::from(got.to_bits() == want.to_bits() || got == want);
        self.max_abs = self.max_abs.max(diff);
        self.max_ulps = self.max_ulps.max(ulps);
        ensure!(
            !BIT_EXACT || diff == 0.0,
            "{what}: value {i} is {got:e}, torch gave {want:e} (not bit-identical)"
        );
        ensure!(
            ulps <= 1.0,
            "{what}: value {i} is {got:e}, torch gave {want:e} ({ulps} ulps of {dtype:?})"
        );
        ensure!(
            dtype != DType::F32 || want.abs() >= 2.0 || diff <= ABS_TOL,
            "{what}: value {i} is {got:e}, torch gave {want:e} (|diff| {diff:e} > {ABS_TOL:e})"
        );
        Ok(())
    }

    fn report(&self, what: &str) {
        eprintln!(
            "{what}: {} values, {} bit-identical, max |diff| {:e}, max {} ulp",
            self.values, self.exact, self.max_abs, self.max_ulps
        );
    }
}

fn to_f64(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?)
}

#[test]
fn randn_sequences_match_torch() -> Result<()> {
    check_sequences("seq", NormalKernel::Avx2, 40)
}

#[test]
fn randn_sequences_match_torch_portable_kernel() -> Result<()> {
    check_sequences("pseq", NormalKernel::Portable, 4)
}

/// Replays every sequence group named `prefix...`: successive randn calls of the recorded sizes
/// on one generator, compared with torch's concatenated outputs (or a sample of them).
fn check_sequences(prefix: &str, kernel: NormalKernel, min_groups: usize) -> Result<()> {
    let fx = fixture()?;
    let names = groups(&fx, prefix);
    ensure!(
        names.len() >= min_groups,
        "fixture holds only {} {prefix} groups",
        names.len()
    );
    let mut tally = Tally::default();
    let mut calls = 0;
    for g in &names {
        let seed = seed_of(&fx[&format!("{g}/seed")])?;
        let sizes: Vec<i64> = fx[&format!("{g}/sizes")].to_vec1()?;
        let values = &fx[&format!("{g}/values")];
        let dtype = values.dtype();
        let want = to_f64(values)?;

        let mut rng = TorchRng::with_kernel(seed, kernel);
        let mut got = Vec::new();
        for &n in &sizes {
            let n = usize::try_from(n)?;
            match dtype {
                DType::F32 => got.extend(rng.randn(n).into_iter().map(f64::from)),
                DType::F64 => got.extend(rng.randn_f64(n)),
                other => bail!("{g}: unexpected dtype {other:?}"),
            }
            calls += 1;
        }
        let index: Vec<usize> = match fx.get(&format!("{g}/index")) {
            Some(ix) => ix
                .to_vec1::<i32>()?
                .into_iter()
                .map(usize::try_from)
                .collect::<Result<_, _>>()?,
            None => (0..got.len()).collect(),
        };
        ensure!(index.len() == want.len(), "{g}: index and values disagree");
        let what = format!("{g} (seed {seed}, sizes {sizes:?})");
        for (&i, &w) in index.iter().zip(&want) {
            tally.check(&what, i, got[i], w, dtype)?;
        }
    }
    tally.report(&format!(
        "{kernel:?} kernel: {} sequences, {calls} randn calls",
        names.len()
    ));
    Ok(())
}

#[test]
fn randn_tensor_follows_the_pipeline_order() -> Result<()> {
    // Successive randn_tensor calls of torch-recorded shapes and dtypes: image noise
    // (1,3,16,12), then latents (1,4,16,12), then a step's noise, plus f16/bf16/f64 and tiny
    // shapes that take the scalar path, and half-precision sizes that are not multiples of 16
    // (torch draws fewer uniforms for those, which shifts every later draw).
    let fx = fixture()?;
    let names = groups(&fx, "tens");
    ensure!(
        names.len() >= 6,
        "fixture holds only {} tensor groups",
        names.len()
    );
    let mut tally = Tally::default();
    for g in &names {
        let seed = seed_of(&fx[&format!("{g}/seed")])?;
        let mut rng = TorchRng::with_kernel(seed, NormalKernel::Avx2);
        for i in 0.. {
            let Some(want) = fx.get(&format!("{g}/t{i}")) else {
                break;
            };
            let got = rng.randn_tensor(want.shape(), want.dtype(), &Device::Cpu)?;
            ensure!(got.dims() == want.dims(), "{g}/t{i}: shape");
            ensure!(got.dtype() == want.dtype(), "{g}/t{i}: dtype");
            let what = format!(
                "{g}/t{i} (seed {seed}, {:?} {:?})",
                want.dims(),
                want.dtype()
            );
            for (k, (a, b)) in to_f64(&got)?.into_iter().zip(to_f64(want)?).enumerate() {
                tally.check(&what, k, a, b, want.dtype())?;
            }
        }
    }
    tally.report("randn_tensor");
    Ok(())
}

#[test]
fn seeds_fold_to_their_low_32_bits_like_torch() -> Result<()> {
    // The fixture has torch's draws for 5 and 2^32+5; they must agree there and here.
    let fx = fixture()?;
    let mut by_seed: HashMap<u64, Vec<f64>> = HashMap::new();
    for g in groups(&fx, "seq") {
        let seed = seed_of(&fx[&format!("{g}/seed")])?;
        if (seed == 5 || seed == (1 << 32) + 5) && !fx.contains_key(&format!("{g}/index")) {
            let sizes: Vec<i64> = fx[&format!("{g}/sizes")].to_vec1()?;
            if sizes.first() == Some(&1) {
                by_seed.insert(seed, to_f64(&fx[&format!("{g}/values")])?);
            }
        }
    }
    ensure!(by_seed.len() == 2, "fixture lacks seeds 5 and 2^32+5");
    ensure!(
        by_seed[&5] == by_seed[&((1 << 32) + 5)],
        "torch itself folds seeds"
    );
    assert_eq!(
        TorchRng::new(5).randn(300),
        TorchRng::new((1 << 32) + 5).randn(300)
    );
    Ok(())
}
