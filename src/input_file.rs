//! Opening a file diffsr reads (an image here; model and config files through
//! [`crate::model_file`]): only a regular file is read. A FIFO with no writer would block
//! forever and a device (`/dev/zero`, `/dev/urandom`) never ends, so both are refused by their
//! type before any read, and every read is bounded by the file's size at open time.

use std::fs::{File, FileType};
use std::path::Path;

use crate::error::{Error, Result};

/// What a file of type `t` is, when it is not a regular file ("a FIFO (named pipe)", ...):
/// the one classifier of image inputs and model files ([`crate::model_file`]).
pub(crate) fn non_regular_kind(t: &FileType) -> Option<&'static str> {
    if t.is_file() {
        return None;
    }
    if t.is_dir() {
        return Some("a folder");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return Some("a FIFO (named pipe)");
        }
        if t.is_char_device() {
            return Some("a character device");
        }
        if t.is_block_device() {
            return Some("a block device");
        }
        if t.is_socket() {
            return Some("a socket");
        }
    }
    Some("not a regular file")
}

/// The reason an input of kind `kind` is refused.
pub(crate) fn not_regular_reason(kind: &str) -> String {
    if kind == "not a regular file" {
        "is not a regular file: diffsr reads images from regular files only".into()
    } else {
        format!("is {kind}, not a regular file: diffsr reads images from regular files only")
    }
}

/// Why [`open_regular_file`] did not open a file.
pub(crate) enum OpenFailure {
    /// The file system said no (missing, no permission, ...).
    Io(std::io::Error),
    /// It is not a regular file: what it is ([`non_regular_kind`]).
    NotRegular(&'static str),
}

/// Opens `path` (links followed) for reading when it is a regular file; returns it with its
/// size, which bounds every read of it. The type is checked before opening, so a device is
/// never even opened (opening some has effects), and again on the opened file, so one swapped
/// in between is caught too; the open itself never waits (O_NONBLOCK), so a FIFO swapped in
/// cannot block it. The one way images, model files and configs are opened.
pub(crate) fn open_regular_file(path: &Path) -> std::result::Result<(File, u64), OpenFailure> {
    let checked = |meta: std::io::Result<std::fs::Metadata>| {
        let meta = meta.map_err(OpenFailure::Io)?;
        match non_regular_kind(&meta.file_type()) {
            Some(kind) => Err(OpenFailure::NotRegular(kind)),
            None => Ok(meta.len()),
        }
    };
    checked(std::fs::metadata(path))?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        // No effect on a regular file.
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(OpenFailure::Io)?;
    let len = checked(file.metadata())?;
    Ok((file, len))
}

/// Opens the image `path`, which must be a regular file (after links) of at most `max_bytes`;
/// returns it with its size, which bounds every read of it.
pub(crate) fn open_image(path: &Path, max_bytes: u64) -> Result<(File, u64)> {
    let (file, len) = open_regular_file(path).map_err(|e| match e {
        OpenFailure::Io(source) => Error::Io {
            path: path.to_path_buf(),
            source,
        },
        OpenFailure::NotRegular(kind) => Error::Image {
            path: path.to_path_buf(),
            reason: not_regular_reason(kind),
        },
    })?;
    if len > max_bytes {
        return Err(Error::Image {
            path: path.to_path_buf(),
            reason: format!(
                "is {} MiB, over diffsr's limit of {} MiB for an image file",
                len >> 20,
                max_bytes >> 20
            ),
        });
    }
    Ok((file, len))
}
