//! The one writer of diffsr's outputs (images, converted models), built so that writing an
//! output can never damage something else that goes by its name.
//!
//! - A new name, or an existing regular file, is written atomically: a temporary file beside it
//!   (`.NAME.diffsr-PID-N.partial`, created exclusively with the mode a plain new file gets,
//!   `0666 & !umask`), synced, renamed over the name, and the folder synced. A reader never
//!   sees half a file and a killed run leaves only a temporary file, which the next run over
//!   that output removes ([`remove_stale_temp_files`]). A symbolic link at the name is replaced
//!   by the new file; the file it pointed to is left as it was (as `mv` and `sed -i` do).
//! - Something that is not a regular file is never renamed over. `-` and `/dev/stdout` are the
//!   process's standard output; an existing FIFO, and the sink devices `/dev/null`,
//!   `/dev/zero` and `/dev/full`, are opened without blocking and written in place, and a FIFO
//!   nobody reads is an error, not a wait; under `/dev`, `/proc` and `/sys` nothing is ever
//!   created or renamed (an existing regular file under `/dev` is written in place). Any other
//!   character device (a terminal, `/dev/mem`), a folder, a block device, a socket, a file
//!   under `/proc` or `/sys` and a new name under those folders are refused
//!   ([`check_destination`], before any work).

use std::ffi::OsStr;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// The names that mean the process's standard output.
const STDOUT_NAMES: [&str; 4] = ["-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"];

/// Folders of device and process files, where diffsr never creates or renames anything
/// (`/dev/shm` excepted).
const SYSTEM_FOLDERS: [&str; 3] = ["/dev", "/proc", "/sys"];

/// The character devices an output may be: sinks that take any bytes (`/dev/full` refuses
/// them with "No space left on device", which tests the error path).
const SINK_DEVICES: [&str; 3] = ["/dev/null", "/dev/zero", "/dev/full"];

/// What makes a temporary file's name diffsr's: `.NAME` + this + `PID-N.partial`.
const TEMP_MARK: &str = ".diffsr-";
const TEMP_EXTENSION: &str = ".partial";

/// Whether `path` names the standard output (`-`, `/dev/stdout`, `/dev/fd/1`,
/// `/proc/self/fd/1`).
pub fn is_stdout(path: &Path) -> bool {
    STDOUT_NAMES.iter().any(|n| path.as_os_str() == *n)
}

/// How an output is written, from what its name holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Destination {
    Stdout,
    /// An existing device or FIFO, or a name under a system folder: opened and written where
    /// it is.
    InPlace,
    /// A new name or a regular file: temporary file, then rename.
    Atomic,
}

/// Refuses, before any work, an output that diffsr would never write: a folder, a block device,
/// a socket, a new name under /dev, /proc or /sys, a name of diffsr's temporary-file pattern,
/// one naming no file (`out/..`), or standard output when it is a terminal.
/// Everything else is writable by [`write_output`] (whether the folder exists is not checked
/// here).
pub fn check_destination(path: &Path) -> Result<()> {
    destination(path).map(|_| ())
}

fn destination(path: &Path) -> Result<Destination> {
    let refuse = |what: &str| Error::option("output", format!("{}: {what}", path.display()));
    if is_stdout(path) {
        // As gzip and curl do: binary data would only garble the screen.
        if std::io::stdout().is_terminal() {
            return Err(refuse(
                "standard output is a terminal; redirect it to a file or a pipe",
            ));
        }
        return Ok(Destination::Stdout);
    }
    let wrong_kind = |what: &str| {
        refuse(&format!(
            "{what}; diffsr writes regular files, character devices, FIFOs and standard \
             output (-)"
        ))
    };
    let Some(name) = path.file_name() else {
        return Err(refuse("names no file"));
    };
    if is_temp_file_name(name) {
        return Err(refuse(
            "is named as diffsr's temporary files are, which a later run would remove",
        ));
    }
    // The link's target decides: a link to /dev/null is written as /dev/null is.
    let metadata = match std::fs::metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let Some(metadata) = metadata else {
        if system_folder(path).is_some() {
            return Err(refuse(
                "does not exist, and diffsr creates nothing under /dev, /proc or /sys",
            ));
        }
        return Ok(Destination::Atomic);
    };
    let kind = metadata.file_type();
    if kind.is_dir() {
        return Err(wrong_kind("is a folder, not a file"));
    }
    if kind.is_file() {
        return match system_folder(path) {
            None => Ok(Destination::Atomic),
            Some("/dev") => Ok(Destination::InPlace),
            // Kernel settings and triggers look like regular files there; an image written
            // into one could change the running system.
            Some(_) => Err(refuse(
                "is a kernel file under /proc or /sys; diffsr writes no output there",
            )),
        };
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_block_device() {
            return Err(wrong_kind("is a block device (a disk)"));
        }
        if kind.is_socket() {
            return Err(wrong_kind("is a socket"));
        }
        if kind.is_fifo() {
            return Ok(Destination::InPlace);
        }
        if kind.is_char_device() {
            // Only the sinks: bytes written to any other character device (a terminal, a
            // serial port, /dev/mem) would garble it or worse.
            let device = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
            if SINK_DEVICES.iter().any(|d| device == Path::new(d)) {
                return Ok(Destination::InPlace);
            }
            return Err(refuse(&format!(
                "is the character device {}; of devices, diffsr writes only to {}",
                device.display(),
                SINK_DEVICES.join(", ")
            )));
        }
    }
    Err(wrong_kind("is not a regular file"))
}

/// Which of /dev, /proc and /sys `path`'s folder is (under), after resolving links; /dev/shm,
/// an ordinary scratch folder, is none.
fn system_folder(path: &Path) -> Option<&'static str> {
    if !cfg!(unix) {
        return None;
    }
    let dir = std::fs::canonicalize(output_dir(path)).ok()?;
    if dir.starts_with("/dev/shm") {
        return None;
    }
    SYSTEM_FOLDERS.iter().copied().find(|s| dir.starts_with(s))
}

/// The folder `path` is written into (`.` for a bare file name).
pub fn output_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The folder `path` is written into ([`output_dir`]), or an error on the `output` option
/// when it does not exist.
pub(crate) fn existing_output_dir(path: &Path) -> Result<PathBuf> {
    let dir = output_dir(path);
    if !dir.is_dir() {
        return Err(Error::option(
            "output",
            format!(
                "{}: the folder {} does not exist",
                path.display(),
                dir.display()
            ),
        ));
    }
    Ok(dir)
}

/// Writes `bytes` to the output `path` (see the module header for what each kind of name
/// gets).
pub fn write_output(path: &Path, bytes: &[u8]) -> Result<()> {
    write_output_with(path, &mut |w| w.write_all(bytes))
}

/// Writes the output `path` by handing `write` a buffered writer, for outputs produced in
/// pieces (rows of an image too big to hold, a model's tensors one after another). An error
/// from `write` leaves no file under a new or regular `path` (the temporary one is removed);
/// what went to stdout, a device or a FIFO before the error stays sent.
pub fn write_output_with(
    path: &Path,
    write: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let io_error = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    match destination(path)? {
        Destination::Stdout => {
            let mut out = BufWriter::new(std::io::stdout().lock());
            write(&mut out).and_then(|()| out.flush()).map_err(io_error)
        }
        Destination::InPlace => {
            let file = open_in_place(path)?;
            let mut out = BufWriter::new(Patient(file));
            write(&mut out).and_then(|()| out.flush()).map_err(io_error)
        }
        Destination::Atomic => write_atomic(path, write),
    }
}

/// Opens an existing device, FIFO or system file for writing, never creating it and never
/// waiting: a FIFO with no reader fails at once (ENXIO) instead of blocking in `open`.
fn open_in_place(path: &Path) -> Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    options.open(path).map_err(|source| {
        #[cfg(unix)]
        if source.raw_os_error() == Some(libc::ENXIO) && is_fifo(path) {
            return Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    source.kind(),
                    "a FIFO that no process is reading (start its reader first)",
                ),
            };
        }
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(unix)]
fn is_fifo(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

/// A writer over a non-blocking file (a FIFO whose reader is slower than diffsr) that waits
/// for room instead of failing with `WouldBlock`. A reader that goes away ends the write
/// with a broken-pipe error.
struct Patient(std::fs::File);

impl Write for Patient {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                result => return result,
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn write_atomic(
    path: &Path,
    write: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let dir = existing_output_dir(path)?;
    let name = path.file_name().unwrap_or_default();
    let (tmp, file) = create_temp(&dir, name)?;
    let io_error = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let result = (|| {
        let mut out = BufWriter::new(file);
        write(&mut out)
            .and_then(|()| out.flush())
            .map_err(io_error)?;
        let file = out.into_inner().map_err(|e| io_error(e.into_error()))?;
        file.sync_all().map_err(io_error)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(io_error)?;
        // The rename itself made durable; a folder that cannot be synced is no error.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates a new temporary file for the output `name` in `dir`. `create_new` (O_EXCL) never
/// follows a link or reuses a file planted at that name; a name taken (a stale file of a
/// process that had this pid) moves on to the next number.
fn create_temp(dir: &Path, name: &OsStr) -> Result<(PathBuf, std::fs::File)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!("{TEMP_MARK}{pid}-{n}{TEMP_EXTENSION}"));
        let tmp = dir.join(tmp_name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 100 => {}
            Err(source) => return Err(Error::Io { path: tmp, source }),
        }
    }
}

/// The output name a temporary file of diffsr's stands for (`a.png` for
/// `.a.png.diffsr-12-0.partial`), or `None` for any other name.
fn temp_file_output(name: &OsStr) -> Option<&[u8]> {
    let rest = name
        .as_encoded_bytes()
        .strip_prefix(b".")?
        .strip_suffix(TEMP_EXTENSION.as_bytes())?;
    let mark = TEMP_MARK.as_bytes();
    let at = rest.windows(mark.len()).rposition(|w| w == mark)?;
    let numbers = &rest[at + mark.len()..];
    let digits = |d: &[u8]| !d.is_empty() && d.iter().all(u8::is_ascii_digit);
    let dash = numbers.iter().position(|&b| b == b'-')?;
    (at > 0 && digits(&numbers[..dash]) && digits(&numbers[dash + 1..])).then(|| &rest[..at])
}

/// Whether `name` is of diffsr's temporary-file pattern (`.NAME.diffsr-PID-N.partial`):
/// such a file is never an input or an output.
pub fn is_temp_file_name(name: &OsStr) -> bool {
    temp_file_output(name).is_some()
}

/// Removes what a killed run left while writing `outputs`: in each output's folder, the
/// regular files of diffsr's temporary-file pattern for that very output name, nothing else.
/// Returns the files removed. Folders that cannot be read are passed over (there is nothing
/// to clean, or writing there will say what is wrong).
pub fn remove_stale_temp_files<'a>(outputs: impl IntoIterator<Item = &'a Path>) -> Vec<PathBuf> {
    // Each folder read once, however many outputs it holds.
    let mut by_folder: std::collections::BTreeMap<PathBuf, std::collections::HashSet<&[u8]>> =
        Default::default();
    for output in outputs {
        if is_stdout(output) {
            continue;
        }
        if let Some(name) = output.file_name() {
            by_folder
                .entry(output_dir(output))
                .or_default()
                .insert(name.as_encoded_bytes());
        }
    }
    let mut removed = Vec::new();
    for (folder, names) in by_folder {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let ours = temp_file_output(&file_name).is_some_and(|o| names.contains(o));
            // The entry's own type: a link of that name is not a file diffsr made.
            if ours && entry.file_type().is_ok_and(|t| t.is_file()) {
                let path = entry.path();
                if std::fs::remove_file(&path).is_ok() {
                    removed.push(path);
                }
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised_exactly() {
        let output = |n: &str| temp_file_output(OsStr::new(n)).map(|o| o.to_vec());
        assert_eq!(
            output(".a.png.diffsr-12-0.partial"),
            Some(b"a.png".to_vec())
        );
        assert_eq!(
            output("..diffsr-1-2.png.diffsr-3-4.partial"),
            Some(b".diffsr-1-2.png".to_vec())
        );
        for other in [
            "a.png.diffsr-12-0.partial",
            ".a.png.diffsr-12-.partial",
            ".a.png.diffsr--0.partial",
            ".a.png.diffsr-1x-0.partial",
            ".a.png.12.partial",
            ".diffsr-1-2.partial",
            ".a.png.diffsr-1-2.partial.png",
            "a.png",
        ] {
            assert_eq!(output(other), None, "{other}");
        }
    }

    #[test]
    fn stdout_names() {
        assert!(is_stdout(Path::new("-")));
        assert!(is_stdout(Path::new("/dev/stdout")));
        assert!(!is_stdout(Path::new("./-")));
        assert!(!is_stdout(Path::new("out.png")));
    }
}
