//! Turning the command line's INPUTs into a list of image files: a file is taken as given, a
//! folder gives the images in it (and below it with `recursive`), anything else with `*`, `?`
//! or `[` is a glob pattern. Folder and pattern matches are sorted and filtered by extension,
//! so every machine of a sharded run sees the same list in the same order. A FIFO, device or
//! socket is refused up front (reading one would block or never end), and so is `-`: images
//! are not read from stdin.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::input_file::{non_regular_kind, not_regular_reason};
use crate::output_file::is_temp_file_name;

/// Extensions (lower case) of the images a folder or pattern contributes.
pub const IMAGE_EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "webp", "tif", "tiff", "bmp"];

/// One input file of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub path: PathBuf,
    /// The file's folder relative to the folder argument it was found under ("" otherwise),
    /// for the `{dir}` placeholder, so a recursive run can mirror its tree.
    pub dir: String,
}

/// Whether `path`'s extension is one of [`IMAGE_EXTENSIONS`] (any case) and it is not one of
/// diffsr's temporary files (half-written outputs are never inputs).
pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        && !path.file_name().is_some_and(is_temp_file_name)
}

fn is_pattern(arg: &str) -> bool {
    arg.contains(['*', '?', '['])
}

/// Expands `args` in order; a file named twice (directly or through folders and patterns) is
/// kept once, at its first place. A folder or pattern that yields no image is an error, since
/// it is almost always a mistyped path; a plain path that does not exist is kept, so that the
/// run reports it as that input's failure and goes on with the others. `-` and a path that
/// exists but is neither a file nor a folder (a FIFO, a device) are errors.
pub fn expand_inputs(args: &[PathBuf], recursive: bool) -> Result<Vec<Input>> {
    let mut inputs: Vec<Input> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for arg in args {
        if arg.as_os_str() == "-" {
            return Err(Error::option(
                "INPUT",
                "`-`: diffsr does not read images from stdin; save the image to a file and \
                 give its path (a file named `-` is `./-`)",
            ));
        }
        if let Some(kind) = std::fs::metadata(arg)
            .ok()
            .and_then(|m| non_regular_kind(&m.file_type()))
            .filter(|_| !arg.is_dir())
        {
            return Err(Error::option(
                "INPUT",
                format!("{}: {}", arg.display(), not_regular_reason(kind)),
            ));
        }
        let found = if arg.is_dir() {
            let mut found = Vec::new();
            walk(arg, arg, recursive, &mut found)?;
            found.sort_by(|a: &Input, b| a.path.cmp(&b.path));
            if found.is_empty() {
                return Err(Error::option(
                    "INPUT",
                    format!(
                        "{}: the folder holds no image ({}){}",
                        arg.display(),
                        IMAGE_EXTENSIONS.join(", "),
                        if recursive {
                            ""
                        } else {
                            "; --recursive looks in subfolders"
                        }
                    ),
                ));
            }
            found
        } else if !arg.exists() && is_pattern(&arg.to_string_lossy()) {
            expand_pattern(arg)?
        } else {
            vec![Input {
                path: arg.clone(),
                dir: String::new(),
            }]
        };
        for input in found {
            let key = std::fs::canonicalize(&input.path).unwrap_or_else(|_| input.path.clone());
            if seen.insert(key) {
                inputs.push(input);
            }
        }
    }
    Ok(inputs)
}

fn expand_pattern(arg: &Path) -> Result<Vec<Input>> {
    let pattern = arg.to_string_lossy();
    let bad = |reason: String| Error::option("INPUT", format!("pattern `{pattern}`: {reason}"));
    let paths = glob::glob(&pattern).map_err(|e| bad(e.to_string()))?;
    let mut found = Vec::new();
    for entry in paths {
        // An entry the pattern could not read (a folder without permission) is skipped:
        // what the pattern names is the files it can see.
        let Ok(path) = entry else { continue };
        if path.is_file() && is_image_path(&path) {
            found.push(Input {
                path,
                dir: String::new(),
            });
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    if found.is_empty() {
        return Err(bad("matches no image file".into()));
    }
    Ok(found)
}

fn walk(root: &Path, dir: &Path, recursive: bool, found: &mut Vec<Input>) -> Result<()> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        // The entry's own type, not its target's: a link to a parent folder would loop.
        let real_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if real_dir {
            if recursive {
                walk(root, &path, recursive, found)?;
            }
        } else if path.is_file() && is_image_path(&path) {
            let rel = dir
                .strip_prefix(root)
                .map(|r| r.to_string_lossy().into_owned())
                .unwrap_or_default();
            found.push(Input { path, dir: rel });
        }
    }
    Ok(())
}
