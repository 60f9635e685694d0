//! Output names under `--out-dir`: a template such as `{stem}-x{scale}.png` with placeholders
//! filled from the job. The template is checked when parsed, so a typo in a placeholder is an
//! argument error before anything runs, not a folder of oddly named files.

use std::path::{Component, Path};

use crate::error::{Error, Result};

/// The default `--name`: the input's stem, the scale, PNG.
pub const DEFAULT_TEMPLATE: &str = "{stem}-x{scale}.png";

/// The placeholders a template may use.
const PLACEHOLDERS: [&str; 8] = [
    "stem",
    "ext",
    "scale",
    "seed",
    "index",
    "scheduler",
    "steps",
    "dir",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(String),
}

/// A parsed output-name template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTemplate {
    text: String,
    pieces: Vec<Piece>,
}

/// The values a template is filled with for one job.
#[derive(Debug, Clone)]
pub struct TemplateVars<'a> {
    /// The input's file name without its extension.
    pub stem: &'a str,
    /// The input's extension, without the dot.
    pub ext: &'a str,
    /// The output factor (`4`, or `2.5` for a fractional --scale).
    pub scale: f64,
    pub seed: u64,
    /// The job's position in the full (unsharded) job list, from 0.
    pub index: usize,
    /// The solver name, or `default`.
    pub scheduler: &'a str,
    pub steps: usize,
    /// The input's folder relative to the folder argument it was found under (`--recursive`),
    /// empty for inputs given directly.
    pub dir: &'a str,
}

impl OutputTemplate {
    /// Parses `template`; `{{` and `}}` stand for literal braces.
    pub fn parse(template: &str) -> Result<Self> {
        let bad = |reason: String| Error::option("--name", format!("`{template}`: {reason}"));
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = template.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(bad("a `{` is never closed".into())),
                        }
                    }
                    if !PLACEHOLDERS.contains(&name.as_str()) {
                        return Err(bad(format!(
                            "unknown placeholder {{{name}}} (known: {})",
                            PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                        )));
                    }
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Var(name));
                }
                '}' => return Err(bad("a `}` without its `{` (write `}}` for a brace)".into())),
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        if pieces.is_empty() {
            return Err(bad("the name is empty".into()));
        }
        // What the template itself says must stay inside --out-dir; placeholders are checked
        // once filled (a `{stem}` can be `..`), by `inside_out_dir` on each rendered name.
        if template.starts_with('/') || Path::new(template).has_root() {
            return Err(bad(
                "is an absolute path; the name is relative to --out-dir".into(),
            ));
        }
        let parsed = Self {
            text: template.to_owned(),
            pieces,
        };
        let sample = parsed.render(&TemplateVars {
            stem: "x",
            ext: "x",
            scale: 4.0,
            seed: 0,
            index: 0,
            scheduler: "x",
            steps: 1,
            dir: "x",
        });
        if !inside_out_dir(&sample) {
            return Err(bad(
                "has a `..` component; the name must stay inside --out-dir".into(),
            ));
        }
        Ok(parsed)
    }

    /// The template as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The output's path relative to `--out-dir`.
    pub fn render(&self, vars: &TemplateVars<'_>) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(name) => match name.as_str() {
                    "stem" => out.push_str(vars.stem),
                    "ext" => out.push_str(vars.ext),
                    "scale" => out.push_str(&vars.scale.to_string()),
                    "seed" => out.push_str(&vars.seed.to_string()),
                    "index" => out.push_str(&vars.index.to_string()),
                    "scheduler" => out.push_str(vars.scheduler),
                    "steps" => out.push_str(&vars.steps.to_string()),
                    // `parse` admits only the names above; "dir" is the last.
                    _ => out.push_str(vars.dir),
                },
            }
        }
        out
    }
}

/// Whether a rendered name, taken relative to --out-dir (empty components dropped, as the
/// planner does), stays inside it: no `..`, no root or drive.
pub fn inside_out_dir(rendered: &str) -> bool {
    rendered.split('/').filter(|c| !c.is_empty()).all(|c| {
        Path::new(c)
            .components()
            .all(|k| matches!(k, Component::Normal(_) | Component::CurDir))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> TemplateVars<'static> {
        TemplateVars {
            stem: "cat",
            ext: "jpg",
            scale: 4.0,
            seed: 7,
            index: 3,
            scheduler: "ddim",
            steps: 20,
            dir: "a/b",
        }
    }

    #[test]
    fn renders_every_placeholder() {
        let t = OutputTemplate::parse(
            "{dir}/{index}-{stem}.{ext}-x{scale}-{seed}-{scheduler}-{steps}{{}}.png",
        )
        .unwrap();
        assert_eq!(t.render(&vars()), "a/b/3-cat.jpg-x4-7-ddim-20{}.png");
        let d = OutputTemplate::parse(DEFAULT_TEMPLATE).unwrap();
        assert_eq!(d.render(&vars()), "cat-x4.png");
        // Dots that are not a `..` component are names like any other.
        for fine in [
            "..{stem}.png",
            "{stem}...png",
            "./{stem}.png",
            "a..b/{stem}.png",
        ] {
            OutputTemplate::parse(fine).unwrap();
        }
        assert!(inside_out_dir("/a.png") && !inside_out_dir("a/../b.png"));
    }

    #[test]
    fn rejects_bad_templates() {
        for bad in [
            "{stme}.png",
            "{stem.png",
            "stem}.png",
            "",
            "../x.png",
            "a/../../x.png",
            "{dir}/../x.png",
            "/tmp/x.png",
            "..",
        ] {
            let e = OutputTemplate::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--name"), "{bad}: {e}");
        }
    }
}
