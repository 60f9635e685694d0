//! Shell completions, device selection, thread flags, `--quiet` and `--profile`, through the
//! real binary.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

fn diffsr(args: &[&str]) -> Result<std::process::Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_diffsr"))
        .args(args)
        .output()?)
}

#[test]
fn completions_for_each_shell_mention_the_subcommands() -> Result<()> {
    for shell in ["bash", "zsh", "fish"] {
        let out = diffsr(&["completions", shell])?;
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout)?;
        for word in ["upscale", "models", "schedule", "noise-level"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = diffsr(&["completions", "tcsh"])?;
    assert!(!out.status.success());
    Ok(())
}

#[test]
fn auto_device_says_which_and_threads_are_checked() -> Result<()> {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = scratch("device")?;
    let output = dir.join("out.png");
    let model = fixtures.join("tiny-x4-upscaler");
    let input = fixtures.join("images/chelsea-16x12.png");
    let base = [
        "upscale",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--steps",
        "1",
    ];
    let out = diffsr(&[&base[..], &["--threads", "1"]].concat())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // A CPU-only build finds no GPU and says so.
    assert!(stderr.contains("device: cpu"), "{stderr}");
    assert!(output.is_file());

    let out = diffsr(&[&base[..], &["--threads", "0"]].concat())?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threads"));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// A scratch folder of its own for each test (they run in parallel in one process).
fn scratch(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("diffsr-misc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[test]
fn quiet_silences_the_device_and_engine_lines() -> Result<()> {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = scratch("quiet")?;
    let input = fixtures.join("gan/photos/chelsea.png");
    let output = dir.join("out.png");
    // The built-in GAN: no model download, and it names itself on an `engine:` line.
    let base = [
        "upscale",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--engine",
        "gan",
        "--device",
        "auto",
    ];
    let lines = |out: &std::process::Output| -> Vec<String> {
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.starts_with("device:") || l.starts_with("engine:"))
            .map(str::to_string)
            .collect()
    };
    let out = diffsr(&base)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = lines(&out);
    assert!(said.iter().any(|l| l.starts_with("device:")), "{said:?}");
    assert!(said.iter().any(|l| l.starts_with("engine:")), "{said:?}");

    let out = diffsr(&[&base[..], &["-q"]].concat())?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(lines(&out).is_empty(), "-q printed {:?}", lines(&out));
    assert!(output.is_file());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn profile_prints_the_stage_and_phase_tables() -> Result<()> {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = scratch("profile")?;
    let output = dir.join("out.png");
    let input = fixtures.join("images/chelsea-16x12.png");
    let model = fixtures.join("tiny-x4-upscaler");
    let base = [
        "upscale",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
    ];
    let out = diffsr(&[&base[..], &["--steps", "2", "--profile"]].concat())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for row in [
        "| convolution |",
        "| other (adds",
        "| UNet step |",
        "| VAE decode |",
    ] {
        assert!(stderr.contains(row), "{row} missing: {stderr}");
    }
    let out = diffsr(&[&base[..], &["--steps", "1"]].concat())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("| stage |"),
        "a profile without --profile: {stderr}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
