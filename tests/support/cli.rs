//! Running the `diffsr` binary from the integration tests: offline (an empty hub cache, a hub
//! that refuses connections, no token, no backtraces), optionally killed past a time limit so
//! a hang fails the test instead of stalling the run; scratch folders, fixtures, stderr.
//! Included by the test files that need it with `#[path = "support/cli.rs"] mod cli;`.

// Each test crate uses a subset of these.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

/// `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A fresh, empty scratch folder, named after the test crate, `name` and the process.
pub fn scratch(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "diffsr-{}-{name}-{}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Copies the folder `from` to `to`, recursively (a model a test may damage).
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The binary with `args`, its hub cache under `dir` and a hub that refuses connections, so
/// nothing can come from the network; no token and no backtraces from the environment.
pub fn offline<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_diffsr"));
    command
        .args(args)
        .env("HF_HUB_CACHE", dir.join("hub-cache"))
        .env("HF_HOME", dir.join("hf-home"))
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    command
}

/// Runs [`offline`] to its end.
pub fn diffsr<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> Result<Output> {
    Ok(offline(dir, args).output()?)
}

/// Runs `command` with no stdin to its end, killing it (and failing the test) when it runs
/// past `limit`: a hang is the bug these tests look for.
pub fn output_within(command: &mut Command, limit: Duration) -> Result<Output> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Drained on threads: a full pipe must not look like a hang.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().context("stdout")?));
    let stderr = drain(Box::new(child.stderr.take().context("stderr")?));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap_or_default();
            anyhow::bail!(
                "diffsr {:?} hung for {limit:?}: killed\n{}",
                command.get_args().collect::<Vec<_>>(),
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A path as the `&str` argument lists want (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A FIFO at `path`, through `mkfifo(1)`.
#[cfg(unix)]
pub fn mkfifo(path: &Path) -> Result<()> {
    let status = Command::new("mkfifo").arg(path).status()?;
    ensure!(status.success(), "mkfifo {} failed", path.display());
    Ok(())
}
