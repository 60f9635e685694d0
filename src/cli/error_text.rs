//! How the binary shows an error: its chain on one line, each cause once (a library error that
//! already ends with its source's text, as `PATH: No such file or directory`, does not repeat
//! it), control characters escaped and any backtrace cut (`diffsr::text_escape`).

use diffsr::text_escape;

/// The line printed after `error: ` (and sent as an `--json` `error` event).
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = text_escape::message(&cause.to_string()).to_string();
        if part.is_empty() || text.ends_with(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_shown_is_not_repeated() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e: anyhow::Error = diffsr::Error::Io {
            path: "a\x1b.png".into(),
            source: io,
        }
        .into();
        let e = e.context("reading the input");
        assert_eq!(
            error_text(&e),
            r"reading the input: a\x1b.png: entity not found"
        );
    }
}
