//! Files diffsr must never damage (issue 14, classes 1, 2, 4 and 5), through the real binary:
//! device nodes, FIFOs, folders, symlinks and stdout as outputs; `convert` onto its own input
//! under any spelling; output permissions; `--name` templates that would leave `--out-dir`;
//! temporary files of a killed run; `--out-dir` naming a file. Every bad output is built in a
//! scratch folder (a FIFO, a link to /dev/null), never by writing to /dev itself.

#[path = "support/cli.rs"]
mod cli;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{ensure, Result};
use cli::{fixtures, s, scratch, stderr};

/// 16x12: the built-in GAN makes it 64x48 in a moment.
fn image() -> PathBuf {
    fixtures().join("images/chelsea-16x12.png")
}

/// A small SRVGG model file for `convert`.
fn model() -> PathBuf {
    fixtures().join("gan/srvgg_x2_relu.safetensors")
}

/// Runs the binary offline in `cwd` to its end, failing the test (after killing it) if it
/// takes over a minute: an output that blocks must show up as a failure, not as a test run
/// that never ends.
fn diffsr(cwd: &Path, args: &[&str]) -> Result<Output> {
    cli::output_within(
        cli::offline(cwd, args).current_dir(cwd),
        Duration::from_secs(60),
    )
}

/// `diffsr upscale IMAGE -o OUTPUT --engine gan EXTRA...` in `cwd`.
fn upscale(cwd: &Path, output: &str, extra: &[&str]) -> Result<Output> {
    let input = image();
    let mut args = vec!["upscale", s(&input), "-o", output, "--engine", "gan"];
    args.extend_from_slice(extra);
    diffsr(cwd, &args)
}

/// Exit code 2, one `error:` line naming every `words`, no panic.
fn ensure_usage_error(out: &Output, words: &[&str]) -> Result<()> {
    let err = stderr(out);
    ensure!(out.status.code() == Some(2), "exit {:?}: {err}", out.status);
    ensure!(err.matches("error:").count() == 1, "{err}");
    for w in words {
        ensure!(err.contains(w), "`{w}` missing from: {err}");
    }
    ensure!(!err.contains("panicked"), "{err}");
    Ok(())
}

#[cfg(unix)]
mod unix {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};

    use super::cli::mkfifo;
    use super::*;

    fn is_fifo(path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_fifo())
    }

    fn link_target(path: &Path) -> Option<PathBuf> {
        std::fs::read_link(path).ok()
    }

    #[test]
    fn a_fifo_with_no_reader_is_an_error_not_a_hang_and_stays_a_fifo() -> Result<()> {
        let dir = scratch("fifo")?;
        let fifo = dir.join("out.png");
        mkfifo(&fifo)?;
        let out = upscale(&dir, s(&fifo), &[])?;
        let err = stderr(&out);
        ensure!(!out.status.success(), "{err}");
        ensure!(err.contains("out.png") && err.contains("FIFO"), "{err}");
        ensure!(!err.contains("panicked"), "{err}");
        ensure!(is_fifo(&fifo), "the FIFO was replaced");

        let fifo = dir.join("model.safetensors");
        mkfifo(&fifo)?;
        let out = diffsr(&dir, &["convert", s(&model()), s(&fifo)])?;
        let err = stderr(&out);
        ensure!(!out.status.success(), "{err}");
        ensure!(
            err.contains("model.safetensors") && err.contains("FIFO"),
            "{err}"
        );
        ensure!(is_fifo(&fifo), "convert replaced the FIFO");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn a_fifo_with_a_reader_gets_the_image() -> Result<()> {
        let dir = scratch("fifo-reader")?;
        let fifo = dir.join("out.png");
        mkfifo(&fifo)?;
        // Opened for reading without blocking before diffsr starts; the image (a few KB) fits
        // in the pipe's buffer, so diffsr finishes and the whole of it is read here after.
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)?;
        let out = upscale(&dir, s(&fifo), &[])?;
        ensure!(out.status.success(), "{}", stderr(&out));
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut bytes)?;
        ensure!(
            image::load_from_memory(&bytes)?.width() == 64,
            "no image came through"
        );
        ensure!(is_fifo(&fifo));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn device_outputs_are_written_in_place_never_replaced() -> Result<()> {
        let dir = scratch("devices")?;
        let null_type = std::fs::metadata("/dev/null")?.file_type();
        ensure!(null_type.is_char_device());
        // Links in the scratch folder: were the fix wrong, only the links would be replaced.
        let null = dir.join("null.png");
        std::os::unix::fs::symlink("/dev/null", &null)?;
        let out = upscale(&dir, s(&null), &[])?;
        ensure!(out.status.success(), "{}", stderr(&out));
        ensure!(link_target(&null) == Some(PathBuf::from("/dev/null")));
        ensure!(std::fs::metadata("/dev/null")?.file_type().is_char_device());

        let null = dir.join("null.safetensors");
        std::os::unix::fs::symlink("/dev/null", &null)?;
        let out = diffsr(&dir, &["convert", s(&model()), s(&null)])?;
        ensure!(out.status.success(), "{}", stderr(&out));
        ensure!(link_target(&null) == Some(PathBuf::from("/dev/null")));

        if Path::new("/dev/full").exists() {
            let full = dir.join("full.png");
            std::os::unix::fs::symlink("/dev/full", &full)?;
            let out = upscale(&dir, s(&full), &[])?;
            let err = stderr(&out);
            ensure!(out.status.code() == Some(1), "{err}");
            ensure!(
                err.contains("full.png") && err.contains("No space left"),
                "{err}"
            );
            ensure!(!err.contains("panicked"), "{err}");
            ensure!(link_target(&full) == Some(PathBuf::from("/dev/full")));
        }
        ensure!(std::fs::metadata("/dev/null")?.file_type() == null_type);

        // Other character devices are refused before anything is written (/dev/urandom:
        // harmless, were the check wrong), as are kernel files under /proc.
        let random = dir.join("random.png");
        std::os::unix::fs::symlink("/dev/urandom", &random)?;
        for output in [random.as_path(), Path::new("/proc/self/comm")] {
            let out = upscale(&dir, s(output), &["--format", "png"])?;
            let err = stderr(&out);
            ensure!(out.status.code() == Some(2), "{}: {err}", output.display());
            ensure!(err.contains("diffsr writes"), "{err}");
        }
        ensure!(link_target(&random) == Some(PathBuf::from("/dev/urandom")));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn a_link_to_a_regular_file_is_replaced_and_its_target_kept() -> Result<()> {
        let dir = scratch("link")?;
        let target = dir.join("target.png");
        std::fs::write(&target, "keep me")?;
        let link = dir.join("link.png");
        std::os::unix::fs::symlink(&target, &link)?;
        let out = upscale(&dir, s(&link), &[])?;
        ensure!(out.status.success(), "{}", stderr(&out));
        ensure!(std::fs::symlink_metadata(&link)?.is_file(), "still a link");
        ensure!(image::image_dimensions(&link)? == (64, 48));
        ensure!(std::fs::read(&target)? == b"keep me");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn outputs_get_the_permissions_of_a_plain_new_file() -> Result<()> {
        let dir = scratch("mode")?;
        let plain = dir.join("plain");
        std::fs::File::create(&plain)?;
        let expected = std::fs::metadata(&plain)?.mode() & 0o777;
        let png = dir.join("out.png");
        let out = upscale(&dir, s(&png), &[])?;
        ensure!(out.status.success(), "{}", stderr(&out));
        let mode = std::fs::metadata(&png)?.mode() & 0o777;
        ensure!(mode == expected, "upscale: {mode:o}, expected {expected:o}");
        let converted = dir.join("out.safetensors");
        let out = diffsr(&dir, &["convert", s(&model()), s(&converted)])?;
        ensure!(out.status.success(), "{}", stderr(&out));
        let mode = std::fs::metadata(&converted)?.mode() & 0o777;
        ensure!(mode == expected, "convert: {mode:o}, expected {expected:o}");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn links_to_the_input_are_the_input() -> Result<()> {
        let dir = scratch("links-in")?;
        let model = dir.join("m.safetensors");
        std::fs::copy(super::model(), &model)?;
        let original = std::fs::read(&model)?;
        std::os::unix::fs::symlink(&model, dir.join("soft.safetensors"))?;
        std::fs::hard_link(&model, dir.join("hard.safetensors"))?;
        for output in ["soft.safetensors", "hard.safetensors"] {
            let out = diffsr(
                &dir,
                &["convert", "m.safetensors", output, "--dtype", "f16"],
            )?;
            ensure_usage_error(&out, &[output, "overwrite the input"])?;
        }
        ensure!(std::fs::read(&model)? == original, "the input changed");
        // upscale compares (device, inode) too.
        let png = dir.join("in.png");
        std::fs::copy(image(), &png)?;
        std::fs::hard_link(&png, dir.join("hard.png"))?;
        let out = diffsr(
            &dir,
            &["upscale", "in.png", "-o", "hard.png", "--engine", "gan"],
        )?;
        ensure_usage_error(&out, &["hard.png", "overwrite the input"])?;
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}

#[test]
fn a_folder_or_socket_output_is_refused_before_anything_runs() -> Result<()> {
    let dir = scratch("folder")?;
    let folder = dir.join("d.png");
    std::fs::create_dir(&folder)?;
    let out = upscale(&dir, s(&folder), &[])?;
    ensure_usage_error(&out, &["d.png", "folder"])?;
    ensure!(folder.is_dir());
    let folder = dir.join("d.safetensors");
    std::fs::create_dir(&folder)?;
    let out = diffsr(&dir, &["convert", s(&model()), s(&folder)])?;
    ensure_usage_error(&out, &["d.safetensors", "folder"])?;
    ensure!(folder.is_dir());
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let socket = dir.join("s.png");
        let _listener = std::os::unix::net::UnixListener::bind(&socket)?;
        let out = upscale(&dir, s(&socket), &[])?;
        ensure_usage_error(&out, &["s.png", "socket"])?;
        ensure!(std::fs::symlink_metadata(&socket)?.file_type().is_socket());
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn dash_writes_to_stdout_and_needs_a_format() -> Result<()> {
    let dir = scratch("stdout")?;
    let out = upscale(&dir, "-", &["--format", "png"])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    ensure!(image::load_from_memory(&out.stdout)?.width() == 64);
    ensure!(!dir.join("-").exists(), "wrote a file named -");

    let out = upscale(&dir, "-", &[])?;
    ensure_usage_error(&out, &["--format"])?;
    let out = upscale(&dir, "-", &["--format", "png", "--json"])?;
    ensure_usage_error(&out, &["--json"])?;

    let out = diffsr(&dir, &["convert", s(&model()), "-"])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    let header = u64::from_le_bytes(out.stdout[..8].try_into()?) as usize;
    ensure!(out.stdout[8] == b'{' && out.stdout.len() > 8 + header);
    ensure!(!dir.join("-").exists(), "wrote a file named -");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn convert_refuses_its_own_input_under_any_spelling() -> Result<()> {
    let dir = scratch("convert-same")?;
    std::fs::create_dir(dir.join("sub"))?;
    let input = dir.join("m.safetensors");
    std::fs::copy(model(), &input)?;
    let original = std::fs::read(&input)?;
    let absolute = input.to_str().unwrap().to_owned();
    for output in [
        "m.safetensors",
        "./m.safetensors",
        "sub/../m.safetensors",
        absolute.as_str(),
    ] {
        let out = diffsr(
            &dir,
            &["convert", "m.safetensors", output, "--dtype", "f16"],
        )?;
        ensure_usage_error(&out, &["overwrite the input"])?;
    }
    ensure!(std::fs::read(&input)? == original, "the input changed");
    let out = diffsr(&dir, &["convert", "m.safetensors", "m.pth"])?;
    ensure_usage_error(&out, &["m.pth", ".safetensors"])?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn name_templates_stay_inside_out_dir() -> Result<()> {
    let dir = scratch("names")?;
    let inputs = dir.join("in");
    std::fs::create_dir(&inputs)?;
    std::fs::copy(image(), inputs.join("a.png"))?;
    let out_dir = dir.join("deep/out");
    for name in [
        "../../x.png",
        "../x.png",
        "{stem}/../../x.png",
        "/tmp/x.png",
        "{dir}/../x.png",
    ] {
        let out = diffsr(
            &dir,
            &[
                "upscale",
                s(&inputs),
                "--out-dir",
                s(&out_dir),
                "--name",
                name,
                "--engine",
                "gan",
            ],
        )?;
        ensure_usage_error(&out, &["--name"])?;
    }
    ensure!(!dir.join("x.png").exists() && !dir.join("deep/x.png").exists());
    // `{stem}` is `..` for an input named `...png`: refused after expansion.
    std::fs::copy(image(), inputs.join("...png"))?;
    let out = diffsr(
        &dir,
        &[
            "upscale",
            s(&inputs.join("...png")),
            "--out-dir",
            s(&out_dir),
            "--name",
            "{stem}/x.png",
            "--engine",
            "gan",
        ],
    )?;
    ensure_usage_error(&out, &["--name", "...png"])?;
    ensure!(!dir.join("deep/x.png").exists());
    // A manifest's absolute `output` is its author's choice.
    let absolute = dir.join("elsewhere.png");
    let manifest = inputs.join("jobs.jsonl");
    std::fs::write(
        &manifest,
        format!(
            "{{\"input\": \"a.png\", \"output\": \"{}\"}}\n",
            absolute.display()
        ),
    )?;
    let out = diffsr(
        &dir,
        &["upscale", "--manifest", s(&manifest), "--engine", "gan"],
    )?;
    ensure!(out.status.success(), "{}", stderr(&out));
    ensure!(image::image_dimensions(&absolute)? == (64, 48));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// The temporary name diffsr gives `output`'s file while writing it, with a dead pid.
fn stale_partial(folder: &Path, output: &str) -> PathBuf {
    folder.join(format!(".{output}.diffsr-999999999-3.partial"))
}

#[test]
fn a_killed_runs_partials_are_removed_by_the_next_run_and_never_inputs() -> Result<()> {
    let dir = scratch("partials")?;
    // Inputs and outputs in one folder: the partials must not be taken for inputs either.
    let folder = dir.join("photos");
    std::fs::create_dir(&folder)?;
    std::fs::copy(image(), folder.join("a.png"))?;
    let stale = stale_partial(&folder, "a-x4.png");
    std::fs::write(&stale, "half an image")?;
    // Not diffsr's pattern for a-x4.png, or not diffsr's at all: left alone.
    let keep = [
        folder.join(".a-x4.png.diffsr-12-x.partial"),
        folder.join(".a-x4.png.12.partial"),
        folder.join("a-x4.png.partial"),
        stale_partial(&folder, "other.png"),
    ];
    for k in &keep {
        std::fs::write(k, "not ours")?;
    }
    let run = |input: &Path, extra: &[&str]| {
        let mut args = vec![
            "upscale",
            s(input),
            "--out-dir",
            s(&folder),
            "--engine",
            "gan",
        ];
        args.extend_from_slice(extra);
        diffsr(&dir, &args)
    };
    let out = run(&folder, &[])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    ensure!(!stale.exists(), "the stale partial is still there");
    ensure!(image::image_dimensions(folder.join("a-x4.png"))? == (64, 48));
    for k in &keep {
        ensure!(k.exists(), "{} was removed", k.display());
    }
    // A skipped job's leftovers go too.
    std::fs::write(&stale, "half an image")?;
    let out = run(&folder.join("a.png"), &["--skip-existing", "--json"])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    ensure!(String::from_utf8_lossy(&out.stdout).contains("skipped"));
    ensure!(!stale.exists(), "a skipped job's partial is still there");
    // No new partial is left, and only a-x4.png came of a.png (the folder held one image).
    let names: Vec<String> = std::fs::read_dir(&folder)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    ensure!(
        names.iter().filter(|n| n.ends_with(".png")).count() == 2,
        "{names:?}"
    );
    ensure!(names.len() == 2 + keep.len(), "{names:?}");

    // convert cleans its output's leftovers too.
    let converted = dir.join("m.safetensors");
    let stale = stale_partial(&dir, "m.safetensors");
    std::fs::write(&stale, "half a model")?;
    let out = diffsr(&dir, &["convert", s(&model()), s(&converted)])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    ensure!(!stale.exists() && converted.is_file());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn out_dir_that_is_a_file_is_one_early_error() -> Result<()> {
    let dir = scratch("out-dir-file")?;
    let file = dir.join("out");
    std::fs::write(&file, "a file")?;
    for out_dir in [file.clone(), file.join("sub")] {
        let out = diffsr(
            &dir,
            &[
                "upscale",
                s(&image()),
                s(&fixtures().join("images/coffee-18x14.png")),
                "--out-dir",
                s(&out_dir),
                "--engine",
                "gan",
            ],
        )?;
        ensure_usage_error(&out, &["--out-dir", "not a folder"])?;
    }
    ensure!(std::fs::read(&file)? == b"a file");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
