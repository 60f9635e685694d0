//! Fuzz targets on stable Rust: every reader of user-supplied bytes (safetensors, `.pth`, ncnn
//! pairs, images, PNG text chunks, manifests, `--name` templates, every config.json, the
//! tokenizer folder) is fed mutated valid seeds, drawn by proptest from a fixed seed. The
//! invariant: no panic, no abort, no allocation out of proportion to the input, and a refusal
//! is an error with a message. CI runs a few hundred cases per target; `DIFFSR_FUZZ_CASES`,
//! `DIFFSR_FUZZ_SECONDS` and `DIFFSR_FUZZ_SEED` run it longer (docs/fuzzing.md). Failing
//! inputs are saved under `target/fuzz-failures/`; fixed ones become regression inputs under
//! `tests/fixtures/fuzz/`, replayed by [`fuzz_regressions`].

mod fuzz_support;
#[path = "support/ncnn_param.rs"]
mod ncnn_param;

use std::process::Command;

use diffsr_kernels::gated_alloc::GatedAllocator;
use fuzz_support::alloc::CAPPED_ALLOCATOR;
use fuzz_support::harness::{fuzz, inputs, is_raw_control, replay, save_failure, Verdict};
use fuzz_support::targets;

#[global_allocator]
static ALLOCATOR: GatedAllocator = CAPPED_ALLOCATOR;

#[test]
fn fuzz_safetensors_reader() {
    fuzz(targets::weights::safetensors_reader());
}

#[test]
fn fuzz_gan_safetensors() {
    fuzz(targets::gan::gan_safetensors());
}

#[test]
fn fuzz_gan_pth() {
    fuzz(targets::gan::gan_pth());
}

#[test]
fn fuzz_gan_ncnn() {
    fuzz(targets::gan::gan_ncnn());
}

#[test]
fn fuzz_png_text() {
    fuzz(targets::images::png_text());
}

#[test]
fn fuzz_images() {
    fuzz(targets::images::images());
}

#[test]
fn fuzz_manifest() {
    fuzz(targets::batch::manifest());
}

#[test]
fn fuzz_name_template() {
    fuzz(targets::batch::name_template());
}

#[test]
fn fuzz_unet_config() {
    fuzz(targets::configs::unet_config());
}

#[test]
fn fuzz_vae_config() {
    fuzz(targets::configs::vae_config());
}

#[test]
fn fuzz_clip_text_config() {
    fuzz(targets::configs::clip_text_config());
}

#[test]
fn fuzz_scheduler_config() {
    fuzz(targets::configs::scheduler_config());
}

#[test]
fn fuzz_model_index() {
    fuzz(targets::configs::model_index());
}

#[test]
fn fuzz_tokenizer() {
    fuzz(targets::configs::tokenizer());
}

#[test]
fn fuzz_prompt() {
    fuzz(targets::configs::prompt());
}

/// `diffsr info` itself on a few mutated PNGs: it exits with 0 or 1, never a panic (101) or a
/// signal, says why on failure, and prints no raw control character from the file (issue 14,
/// class 3). A process per case, so only a few cases.
#[test]
fn fuzz_info_binary() {
    let count = fuzz_support::harness::Settings::from_env()
        .cases
        .map_or(12, |n| n.min(200));
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("fuzz-info-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = Vec::new();
    for (n, input) in inputs("info_binary", &targets::images::info_inputs(), count)
        .into_iter()
        .enumerate()
    {
        let path = dir.join(format!("case{n}.png"));
        std::fs::write(&path, &input).unwrap();
        for json in [false, true] {
            let mut command = Command::new(env!("CARGO_BIN_EXE_diffsr"));
            command.arg("info").arg(&path);
            if json {
                command.arg("--json");
            }
            let out = command.output().expect("diffsr runs");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let broken = match out.status.code() {
                _ if stdout.chars().chain(stderr.chars()).any(is_raw_control) => Some(format!(
                    "printed a raw control character: {:?}",
                    format!("{stdout}{stderr}")
                )),
                Some(0) => None,
                Some(1) if !stderr.trim().is_empty() => None,
                Some(1) => Some("exit 1 without a message".to_string()),
                Some(code) => Some(format!("exit {code}: {}", stderr.trim())),
                None => Some(format!("killed by a signal: {}", out.status)),
            };
            if let Some(reason) = broken {
                let saved = save_failure("info_binary", &input, &reason);
                failures.push(format!("{reason} (input {})", saved.display()));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "fuzz info_binary: {count} inputs, {} failed runs",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "diffsr info broke:\n{}",
        failures.join("\n")
    );
}

/// Every saved regression input (`tests/fixtures/fuzz/<target>-*.bin`) passes its target.
#[test]
fn fuzz_regressions() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    let mut failures = Vec::new();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "bin"))
    {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let target = targets::NAMES
            .iter()
            .filter(|t| name.starts_with(&format!("{t}-")))
            .max_by_key(|t| t.len())
            .unwrap_or_else(|| panic!("{name}: no target of that name"));
        let target = targets::by_name(target).unwrap();
        let input = std::fs::read(file).unwrap();
        if let Verdict::Failed(reason) = replay(&target, &input) {
            failures.push(format!("{name}: {reason}"));
        }
    }
    assert!(
        failures.is_empty(),
        "regression inputs fail:\n{}",
        failures.join("\n")
    );
}
