//! Hostile inputs and the messages about them (issue 14, classes 3, 11, 13, 17, 18, 19):
//! control characters from file contents and names are printed escaped, JSON events stay valid
//! JSON, FIFOs and other non-regular inputs are refused without hanging, truncated images are
//! refused in every format, each message names its cause once, `--json` reports every failure
//! as an event, and no backtrace reaches the user. Every bad input is built here, at run time.

#[path = "support/cli.rs"]
mod cli;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
#[cfg(unix)]
use cli::mkfifo;
use cli::{fixtures, scratch};
use image::{ImageFormat, RgbImage};

/// The longest any command here may run before the test fails (a hang is the bug).
const TIMEOUT: Duration = Duration::from_secs(20);

/// Runs the binary offline with `env` set, failing the test when it runs past [`TIMEOUT`].
fn diffsr_env<S: AsRef<std::ffi::OsStr>>(
    dir: &Path,
    args: &[S],
    env: &[(&str, &str)],
) -> Result<Output> {
    let mut command = cli::offline(dir, args);
    command.envs(env.iter().copied());
    cli::output_within(&mut command, TIMEOUT)
}

fn diffsr<S: AsRef<std::ffi::OsStr>>(dir: &Path, args: &[S]) -> Result<Output> {
    diffsr_env(dir, args, &[])
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Fails when `bytes` (a stream the user's terminal shows) holds a control character other
/// than a newline: raw ESC, BEL, CR, DEL, C1 (U+0080..U+009F) or invalid UTF-8.
fn assert_printable(what: &str, bytes: &[u8]) -> Result<()> {
    let shown = std::str::from_utf8(bytes).with_context(|| format!("{what}: not UTF-8"))?;
    for c in shown.chars() {
        ensure!(
            c == '\n' || !c.is_control(),
            "{what} holds a raw control character U+{:04X}: {shown:?}",
            c as u32
        );
    }
    Ok(())
}

/// Every line of `stdout` as a JSON object.
fn json_lines(stdout: &[u8]) -> Result<Vec<serde_json::Value>> {
    text(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l:?}")))
        .collect()
}

/// A small image with detail everywhere, so every format's data spans the whole file.
fn busy_image() -> RgbImage {
    RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([((x * 7) ^ (y * 13)) as u8, (x * y) as u8, (x + y * 3) as u8])
    })
}

/// A 4x4 PNG with the given text chunks (key, value); `itxt` ones as iTXt.
fn png_with_texts(path: &Path, texts: &[(&str, &str)], itxt: &[(&str, &str)]) -> Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut encoder = png::Encoder::new(file, 4, 4);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    for (k, v) in texts {
        encoder.add_text_chunk(k.to_string(), v.to_string())?;
    }
    for (k, v) in itxt {
        encoder.add_itxt_chunk(k.to_string(), v.to_string())?;
    }
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&[128; 48])?;
    writer.finish()?;
    Ok(())
}

/// What a terminal must never receive raw: an OSC title sequence, BEL, CR, DEL, CSI (C1).
const HOSTILE: &str = "\x1b]0;pwned\x07\rfake line\x7f\u{9b}2J";

// ---- class 3: control characters escaped ------------------------------------------------

#[test]
fn info_escapes_control_characters_from_text_chunks() -> Result<()> {
    let dir = scratch("info-escape")?;
    let png = dir.join("hostile.png");
    let record = serde_json::json!({
        "engine": "diffusion", "model": HOSTILE, "prompt": format!("{HOSTILE}\nsecond line"),
        "negative_prompt": "\t", "seed": 1, "steps": 2, "scheduler": "ddim", "guidance": 1.0,
        "noise_level": 3, "eta": 0.0, "diffsr_version": HOSTILE,
    });
    png_with_texts(
        &png,
        &[("parameters", HOSTILE)],
        &[("diffsr", &record.to_string())],
    )?;
    let out = diffsr(&dir, &["info", png.to_str().unwrap()])?;
    ensure!(out.status.success(), "{}", text(&out.stderr));
    assert_printable("info stdout", &out.stdout)?;
    assert_printable("info stderr", &out.stderr)?;
    let shown = text(&out.stdout);
    // Escaped, not dropped: the user still sees what the file holds.
    ensure!(shown.contains(r"\x1b]0;pwned\x07\rfake line"), "{shown}");
    // One row a field: the prompt's newline cannot fake a row of its own.
    ensure!(
        !shown.lines().any(|l| l.starts_with("second line")),
        "{shown}"
    );

    let out = diffsr(&dir, &["info", "--json", png.to_str().unwrap()])?;
    ensure!(out.status.success(), "{}", text(&out.stderr));
    assert_printable("info --json stdout", &out.stdout)?;
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    // The JSON escapes are exact: the value reads back as the file holds it.
    ensure!(parsed["model"] == HOSTILE, "{parsed}");

    // A malformed record whose error quotes the file's text.
    let bad = dir.join("bad-record.png");
    let record = format!(
        r#"{{"engine": 5, "model": {}}}"#,
        serde_json::json!(HOSTILE)
    );
    png_with_texts(&bad, &[], &[("diffsr", &record)])?;
    let out = diffsr(&dir, &["info", bad.to_str().unwrap()])?;
    ensure!(!out.status.success());
    assert_printable("info stderr (malformed record)", &out.stderr)?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[cfg(unix)]
#[test]
fn file_names_with_control_characters_are_escaped_in_messages_and_json() -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let dir = scratch("name-escape")?;
    let hostile = dir.join(format!("bad{HOSTILE}.png"));
    std::fs::write(&hostile, b"not an image")?;
    let out_png = dir.join("out.png");
    let args = [
        "upscale".as_ref(),
        hostile.as_os_str(),
        "-o".as_ref(),
        out_png.as_os_str(),
        "--engine".as_ref(),
        "gan".as_ref(),
    ];
    let out = diffsr(&dir, &args)?;
    ensure!(!out.status.success());
    assert_printable("stderr", &out.stderr)?;
    ensure!(
        text(&out.stderr).contains(r"bad\x1b]0;pwned\x07\r"),
        "{}",
        text(&out.stderr)
    );

    let out = diffsr(&dir, &[&args[..], &["--json".as_ref()]].concat())?;
    ensure!(!out.status.success());
    assert_printable("stderr (--json)", &out.stderr)?;
    assert_printable("stdout (--json)", &out.stdout)?;
    let events = json_lines(&out.stdout)?;
    ensure!(!events.is_empty(), "no event on stdout");

    // A batch: a name that is not UTF-8 still gets its `failed` event, and the good image its
    // `done`.
    let not_utf8 = dir.join(std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9.png"));
    std::fs::write(&not_utf8, b"not an image")?;
    let good = fixtures().join("images/chelsea-16x12.png");
    let out_dir = dir.join("out");
    let args = [
        "upscale".as_ref(),
        hostile.as_os_str(),
        not_utf8.as_os_str(),
        good.as_os_str(),
        "--out-dir".as_ref(),
        out_dir.as_os_str(),
        "--engine".as_ref(),
        "gan".as_ref(),
        "--json".as_ref(),
    ];
    let out = diffsr(&dir, &args)?;
    assert_printable("batch stderr", &out.stderr)?;
    assert_printable("batch stdout", &out.stdout)?;
    let events = json_lines(&out.stdout)?;
    let count = |kind: &str| events.iter().filter(|e| e["event"] == kind).count();
    ensure!(
        count("failed") == 2 && count("done") == 1 && count("summary") == 1,
        "{}",
        text(&out.stdout)
    );
    let failed_inputs: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "failed")
        .map(|e| e["input"].as_str().unwrap_or_default().to_string())
        .collect();
    ensure!(
        failed_inputs.iter().any(|i| i.contains(HOSTILE)),
        "{failed_inputs:?}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

// ---- class 11: inputs must be regular files ---------------------------------------------

#[cfg(unix)]
#[test]
fn a_fifo_input_is_refused_without_hanging() -> Result<()> {
    let dir = scratch("fifo")?;
    let fifo = dir.join("in.png");
    mkfifo(&fifo)?;
    let fifo_s = fifo.to_str().unwrap();
    let out_png = dir.join("out.png");
    let out_s = out_png.to_str().unwrap();

    let out = diffsr(&dir, &["upscale", fifo_s, "-o", out_s, "--engine", "gan"])?;
    ensure!(!out.status.success());
    let err = text(&out.stderr);
    ensure!(err.contains("in.png") && err.contains("FIFO"), "{err}");

    let out = diffsr(&dir, &["info", fifo_s])?;
    ensure!(!out.status.success());
    ensure!(text(&out.stderr).contains("FIFO"), "{}", text(&out.stderr));

    // In a batch (a manifest: no up-front expansion), the FIFO is that job's failure and the
    // run goes on.
    let good = fixtures().join("images/chelsea-16x12.png");
    let manifest = dir.join("jobs.jsonl");
    std::fs::write(
        &manifest,
        format!(
            "{}\n{}\n",
            serde_json::json!({"input": fifo_s, "output": dir.join("a.png")}),
            serde_json::json!({"input": good, "output": dir.join("b.png")}),
        ),
    )?;
    let out = diffsr(
        &dir,
        &[
            "upscale",
            "--manifest",
            manifest.to_str().unwrap(),
            "--engine",
            "gan",
            "--json",
        ],
    )?;
    let events = json_lines(&out.stdout)?;
    let failed: Vec<_> = events.iter().filter(|e| e["event"] == "failed").collect();
    ensure!(
        failed.len() == 1 && failed[0]["error"].as_str().unwrap_or("").contains("FIFO"),
        "{}",
        text(&out.stdout)
    );
    ensure!(dir.join("b.png").is_file(), "{}", text(&out.stderr));

    // A device node is no image either.
    let out = diffsr(
        &dir,
        &["upscale", "/dev/zero", "-o", out_s, "--engine", "gan"],
    )?;
    ensure!(!out.status.success());
    ensure!(
        text(&out.stderr).contains("device"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn stdin_as_an_input_is_refused_clearly() -> Result<()> {
    let dir = scratch("stdin")?;
    let out_png = dir.join("out.png");
    let out = diffsr(&dir, &["upscale", "-", "-o", out_png.to_str().unwrap()])?;
    ensure!(out.status.code() == Some(2), "{}", text(&out.stderr));
    ensure!(text(&out.stderr).contains("stdin"), "{}", text(&out.stderr));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

// ---- class 13: truncated images refused -------------------------------------------------

#[test]
fn truncated_images_are_refused_in_every_format() -> Result<()> {
    let dir = scratch("truncated")?;
    let image = busy_image();
    for (format, ext) in [
        (ImageFormat::Png, "png"),
        (ImageFormat::Jpeg, "jpg"),
        (ImageFormat::WebP, "webp"),
        (ImageFormat::Tiff, "tif"),
        (ImageFormat::Bmp, "bmp"),
    ] {
        let full = dir.join(format!("full.{ext}"));
        image.save_with_format(&full, format)?;
        diffsr::image_io::load_image(&full)
            .with_context(|| format!("the whole {ext} must load"))?;
        let bytes = std::fs::read(&full)?;
        for percent in [25, 50, 75, 99] {
            let cut = dir.join(format!("cut{percent}.{ext}"));
            std::fs::write(&cut, &bytes[..bytes.len() * percent / 100])?;
            match diffsr::image_io::load_image(&cut) {
                Ok(_) => anyhow::bail!("{ext} cut at {percent}% was accepted"),
                Err(e) => {
                    let message = e.to_string();
                    ensure!(
                        message.contains(&format!("cut{percent}.{ext}"))
                            && message.contains("truncated"),
                        "{ext} at {percent}%: {message}"
                    );
                }
            }
        }
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

// ---- class 17: one cause, named once, the real one --------------------------------------

#[test]
fn a_missing_file_is_named_once() -> Result<()> {
    let dir = scratch("missing")?;
    let missing = dir.join("missing.png");
    for args in [
        vec!["info", missing.to_str().unwrap()],
        vec![
            "upscale",
            missing.to_str().unwrap(),
            "-o",
            dir.join("o.png").to_str().unwrap(),
        ],
    ] {
        let out = diffsr(&dir, &args)?;
        let err = text(&out.stderr);
        ensure!(!out.status.success());
        ensure!(
            err.matches("No such file or directory").count() == 1 && err.contains("missing.png"),
            "{err}"
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// A lossless WebP whose header claims `side`x`side` (14-bit fields of side - 1).
fn webp_claiming(side: u32) -> Vec<u8> {
    let bits = (side - 1) | ((side - 1) << 14);
    let mut vp8l = vec![0x2f];
    vp8l.extend_from_slice(&bits.to_le_bytes());
    vp8l.extend_from_slice(&[0; 11]);
    let mut riff = b"WEBP".to_vec();
    riff.extend_from_slice(b"VP8L");
    riff.extend_from_slice(&(vp8l.len() as u32).to_le_bytes());
    riff.extend_from_slice(&vp8l);
    let mut file = b"RIFF".to_vec();
    file.extend_from_slice(&(riff.len() as u32).to_le_bytes());
    file.extend_from_slice(&riff);
    file
}

#[test]
fn a_webp_claiming_16384_squared_says_its_size() -> Result<()> {
    let dir = scratch("webp-size")?;
    let path = dir.join("big.webp");
    std::fs::write(&path, webp_claiming(16384))?;
    let message = diffsr::image_io::load_image(&path)
        .err()
        .context("accepted")?
        .to_string();
    ensure!(
        message.contains("16384x16384") && !message.contains("empty"),
        "{message}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn info_on_a_png_with_a_bad_crc_says_it_is_corrupt() -> Result<()> {
    let dir = scratch("crc")?;
    let path = dir.join("crc.png");
    png_with_texts(&path, &[("parameters", "Steps: 20")], &[])?;
    let mut bytes = std::fs::read(&path)?;
    let at = bytes
        .windows(4)
        .position(|w| w == b"tEXt")
        .context("no tEXt")?;
    bytes[at + 6] ^= 0x20; // a byte of the keyword: the chunk's CRC no longer matches
    std::fs::write(&path, &bytes)?;
    let out = diffsr(&dir, &["info", path.to_str().unwrap()])?;
    let err = text(&out.stderr);
    ensure!(!out.status.success());
    ensure!(
        err.contains("CRC") && err.contains("tEXt") && !err.contains("not written by"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

// ---- class 18: with --json every failure is an event ------------------------------------

#[test]
fn json_reports_a_model_load_failure_as_an_event() -> Result<()> {
    let dir = scratch("json-model")?;
    let model = dir.join("broken.safetensors");
    std::fs::write(&model, b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")?;
    let input = fixtures().join("images/chelsea-16x12.png");
    let out = diffsr(
        &dir,
        &[
            "upscale",
            input.to_str().unwrap(),
            "-o",
            dir.join("o.png").to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--json",
        ],
    )?;
    ensure!(!out.status.success());
    let events = json_lines(&out.stdout)?;
    let failure = events
        .iter()
        .find(|e| e["event"] == "error" || e["event"] == "failed")
        .with_context(|| format!("no failure event: {}", text(&out.stdout)))?;
    ensure!(
        failure["error"]
            .as_str()
            .unwrap_or("")
            .contains("broken.safetensors"),
        "{failure}"
    );
    ensure!(
        events.last().is_some_and(|e| e["event"] == "summary"),
        "{}",
        text(&out.stdout)
    );

    // A bad flag found after parsing, too.
    let out = diffsr(
        &dir,
        &[
            "upscale",
            input.to_str().unwrap(),
            "-o",
            dir.join("o.png").to_str().unwrap(),
            "--device",
            "cuda:99",
            "--json",
        ],
    )?;
    ensure!(out.status.code() == Some(2), "{}", text(&out.stderr));
    let events = json_lines(&out.stdout)?;
    ensure!(
        events.iter().any(
            |e| e["event"] == "error" && e["error"].as_str().unwrap_or("").contains("--device")
        ),
        "{}",
        text(&out.stdout)
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

// ---- class 19: no backtraces ------------------------------------------------------------

/// The tiny x4 model with a VAE config that does not match its weights.
fn mismatched_model(dir: &Path) -> Result<PathBuf> {
    let src = fixtures().join("tiny-x4-upscaler");
    let model = dir.join("mismatched-x4");
    cli::copy_dir(&src, &model)?;
    let config = model.join("vae/config.json");
    let mut vae: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config)?)?;
    vae["block_out_channels"] = serde_json::json!([16, 48, 48]);
    std::fs::write(&config, vae.to_string())?;
    Ok(model)
}

#[test]
fn model_errors_carry_no_backtrace() -> Result<()> {
    let dir = scratch("bt-env")?;
    let model = mismatched_model(&dir)?;
    let input = fixtures().join("images/chelsea-16x12.png");
    for json in [false, true] {
        let mut args = vec![
            "upscale",
            input.to_str().unwrap(),
            "-o",
            dir.join("o.png").to_str().unwrap().to_string().leak(),
            "--model",
            model.to_str().unwrap().to_string().leak(),
            "--steps",
            "1",
            "--engine",
            "diffusion",
        ];
        if json {
            args.push("--json");
        }
        let out = diffsr_env(
            &dir,
            &args,
            &[("RUST_BACKTRACE", "1"), ("RUST_LIB_BACKTRACE", "1")],
        )?;
        let err = text(&out.stderr);
        let stdout = text(&out.stdout);
        ensure!(!out.status.success(), "{err}");
        ensure!(err.contains("shape"), "not the shape error: {err}");
        for shown in [&err, &stdout] {
            let frame = |line: &str| {
                let line = line.trim_start();
                line.starts_with("at ")
                    || line.to_ascii_lowercase().starts_with("stack backtrace")
                    || line
                        .split_once(": ")
                        .is_some_and(|(n, _)| n.parse::<u32>().is_ok())
            };
            ensure!(
                !shown.lines().any(frame),
                "a backtrace was printed: {shown}"
            );
        }
        // The message is one line.
        ensure!(err.trim_end().lines().count() <= 3, "{err}");
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
