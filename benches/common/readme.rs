//! Where a bench's results go: always `target/bench-results/<name>.md`, and, when
//! `DIFFSR_BENCH_WRITE_DOCS=1`, `docs/benchmarks.md` between the lines
//! `<!-- bench:<name>:begin -->` and `<!-- bench:<name>:end -->`, so the published figures
//! come from the bench itself.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::env;
use super::random_model::{crate_root, target_dir};

/// The variable that asks a bench to write its table into [`DOCS_PAGE`] too.
pub const WRITE_DOCS_VAR: &str = "DIFFSR_BENCH_WRITE_DOCS";

/// The page holding the published tables, relative to the crate root.
pub const DOCS_PAGE: &str = "docs/benchmarks.md";

/// Whether [`WRITE_DOCS_VAR`] is set: benches read it once at start, so a bad value fails
/// before the timing rather than after.
pub fn write_docs() -> Result<bool> {
    env::flag(WRITE_DOCS_VAR)
}

/// `<target>/bench-results`, created.
pub fn results_dir() -> Result<PathBuf> {
    let dir = target_dir().join("bench-results");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Writes `markdown` to `target/bench-results/<name>.md` and returns that path.
pub fn write_results(name: &str, markdown: &str) -> Result<PathBuf> {
    let path = results_dir()?.join(format!("{name}.md"));
    write_atomically(&path, markdown)?;
    Ok(path)
}

/// Writes `markdown` to `target/bench-results/<name>.md`, and into [`DOCS_PAGE`] between the
/// bench's markers when [`WRITE_DOCS_VAR`] is `1`.
pub fn publish(name: &str, markdown: &str) -> Result<()> {
    let path = write_results(name, markdown)?;
    println!("results written to {}", path.display());
    if write_docs()? {
        let page = crate_root().join(DOCS_PAGE);
        let text = std::fs::read_to_string(&page)
            .with_context(|| format!("reading {}", page.display()))?;
        let updated = replace_section(&text, name, markdown)
            .with_context(|| format!("updating {}", page.display()))?;
        write_atomically(&page, &updated)?;
        println!(
            "{DOCS_PAGE} updated between the bench:{name} markers ({})",
            page.display()
        );
    } else {
        println!("({WRITE_DOCS_VAR}=1 also writes it into {DOCS_PAGE})");
    }
    Ok(())
}

/// [`publish`] when every run worked. Otherwise only the results file is written: a failed
/// diffsr run is an error; failed reference runs are an error only when [`DOCS_PAGE`] was to
/// be written, else a warning.
pub fn finish(
    name: &str,
    markdown: &str,
    ours_failed: usize,
    reference_failed: usize,
) -> Result<()> {
    if ours_failed + reference_failed == 0 {
        return publish(name, markdown);
    }
    let path = write_results(name, markdown)?;
    println!(
        "results written to {} ({DOCS_PAGE} left alone)",
        path.display()
    );
    let what =
        format!("{ours_failed} diffsr and {reference_failed} reference run(s) failed (see above)");
    if ours_failed > 0 || write_docs()? {
        bail!("{what}");
    }
    eprintln!("warning: {what}");
    Ok(())
}

/// `text` with everything between the `bench:<name>` marker lines replaced by `body`
/// (blank lines around it, so Markdown renders a table right after the marker).
pub fn replace_section(text: &str, name: &str, body: &str) -> Result<String> {
    let begin = format!("<!-- bench:{name}:begin -->");
    let end = format!("<!-- bench:{name}:end -->");
    let find = |marker: &str| -> Result<usize> {
        let at: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.trim() == marker)
            .map(|(i, _)| i)
            .collect();
        match at[..] {
            [i] => Ok(i),
            [] => bail!(
                "the marker line `{marker}` is missing (put `{begin}` and `{end}`, each on a \
                 line of its own, where the bench's results belong)"
            ),
            _ => bail!("the marker line `{marker}` appears {} times", at.len()),
        }
    };
    let (b, e) = (find(&begin)?, find(&end)?);
    if e < b {
        bail!("`{end}` comes before `{begin}`");
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::with_capacity(text.len() + body.len());
    for line in &lines[..=b] {
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(body.trim());
    out.push_str("\n\n");
    for line in &lines[e..] {
        out.push_str(line);
        out.push('\n');
    }
    if !text.ends_with('\n') {
        out.pop();
    }
    Ok(out)
}

/// Writes a temporary file beside `path` and renames it into place.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?
        .to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    if let Ok(meta) = std::fs::metadata(path) {
        // Keep the file's permissions.
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("renaming {} to {}", tmp.display(), path.display())
    })
}

/// `text` as one Markdown paragraph wrapped at 95 columns, as the docs are written.
pub fn paragraph(text: &str) -> String {
    const WIDTH: usize = 95;
    let mut out = String::with_capacity(text.len() + text.len() / WIDTH + 1);
    let mut line = 0;
    for word in text.split_whitespace() {
        let len = word.chars().count();
        if line > 0 && line + 1 + len > WIDTH {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += len;
    }
    out.push('\n');
    out
}
