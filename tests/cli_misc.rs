//! Shell completions, device selection and thread flags, through the real binary.

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
    let dir = std::env::temp_dir().join(format!("diffsr-misc-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
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
