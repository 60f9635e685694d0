//! Opening a file diffsr reads as an image: only a regular file is read. A FIFO with no writer
//! would block forever and a device (`/dev/zero`, `/dev/urandom`) never ends, so both are
//! refused by their type before any read, and every read is bounded by the file's size at
//! open time.

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

/// Opens the image `path`, which must be a regular file (after links) of at most `max_bytes`;
/// returns it with its size, which bounds every read of it.
pub(crate) fn open_image(path: &Path, max_bytes: u64) -> Result<(File, u64)> {
    let io_error = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let refuse = |kind: &str| Error::Image {
        path: path.to_path_buf(),
        reason: not_regular_reason(kind),
    };
    // The type first, so that a device is never even opened (opening some has effects).
    let meta = std::fs::metadata(path).map_err(io_error)?;
    if let Some(kind) = non_regular_kind(&meta.file_type()) {
        return Err(refuse(kind));
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        // Should the file be swapped for a FIFO after the check, the open still returns at
        // once; the check below then refuses it. No effect on a regular file.
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(io_error)?;
    let meta = file.metadata().map_err(io_error)?;
    if let Some(kind) = non_regular_kind(&meta.file_type()) {
        return Err(refuse(kind));
    }
    let len = meta.len();
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
