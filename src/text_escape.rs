//! Showing text that came from a file (PNG text chunks, file names, error messages that quote
//! them) without letting it drive the terminal: control characters are escaped, so a crafted
//! file cannot set the window title, clear the screen, move the cursor or fake lines. Printable
//! text in any script is kept as it is.
//!
//! The escapes are Rust's (`\n`, `\r`, `\t`, `\x1b` below U+0080, `\u{9b}` above). Backslashes
//! are not doubled: escaping is meant for reading, not for parsing back, and it makes escaping
//! idempotent, so a message escaped where it is built and again where it is printed shows the
//! same. JSON keeps the exact text: [`to_json`] relies on JSON's own escapes, adding `\uXXXX`
//! for the characters JSON allows raw but a terminal acts on (DEL, C1 controls, ...).

use std::borrow::Cow;
use std::fmt::{self, Display, Write as _};
use std::path::Path;

use serde::Serialize;

/// Whether `c` must not reach a terminal raw: the C0 controls (newline and tab included), DEL,
/// the C1 controls (U+0080..U+009F, CSI among them), Unicode's line and paragraph separators,
/// and the bidirectional formatting characters (which reorder what is shown).
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// Writes `c`'s escape.
fn write_escape(out: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        c if (c as u32) < 0x80 => write!(out, "\\x{:02x}", c as u32),
        c => write!(out, "\\u{{{:x}}}", c as u32),
    }
}

fn write_escaped(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    let mut rest = text;
    while let Some((at, c)) = rest.char_indices().find(|&(_, c)| needs_escape(c)) {
        out.write_str(&rest[..at])?;
        write_escape(out, c)?;
        rest = &rest[at + c.len_utf8()..];
    }
    out.write_str(rest)
}

/// `text` with every [terminal-active](needs_escape) character escaped (borrowed when there is none).
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    // Writing to a String cannot fail.
    let _ = write_escaped(&mut out, text);
    Cow::Owned(out)
}

/// Formats as its text, escaped.
pub struct Escaped<'a>(Cow<'a, str>);

impl Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, &self.0)
    }
}

/// `text` for a format string, escaped.
pub fn text(text: &str) -> Escaped<'_> {
    Escaped(Cow::Borrowed(text))
}

/// `path` for a format string: as `Path::display` (a name that is not UTF-8 shows U+FFFD
/// where its bad bytes are), escaped, and [shortened](shortened) past [`MAX_SHOWN`] characters.
pub fn path(path: &Path) -> Escaped<'_> {
    Escaped(shortened(path.to_string_lossy()))
}

/// A one-line message for a format string: `text` without any backtrace appended to it (some
/// libraries' errors carry one when `RUST_BACKTRACE` is set), escaped, and
/// [shortened](shortened) past [`MAX_SHOWN`] characters.
pub fn message(text: &str) -> Escaped<'_> {
    Escaped(shortened(Cow::Borrowed(without_backtrace(text))))
}

/// The longest text [`message`] and [`path`] show whole. Messages quote what a file holds (a
/// config value, a header entry), and a crafted file can make that kilobytes long.
pub const MAX_SHOWN: usize = 1000;

/// `text` itself when it has at most [`MAX_SHOWN`] characters; otherwise its start and end with
/// the number of characters left out between them, so the cause (usually at the end) and
/// what it is about (at the start) both stay readable.
pub fn shortened(text: Cow<'_, str>) -> Cow<'_, str> {
    const HEAD: usize = 600;
    const TAIL: usize = 300;
    let count = text.chars().count();
    if count <= MAX_SHOWN {
        return text;
    }
    let head_end = text.char_indices().nth(HEAD).map_or(text.len(), |(i, _)| i);
    let tail_start = text
        .char_indices()
        .nth(count - TAIL)
        .map_or(text.len(), |(i, _)| i);
    Cow::Owned(format!(
        "{}… ({} characters left out) …{}",
        &text[..head_end],
        count - HEAD - TAIL,
        &text[tail_start..]
    ))
}

/// `text` up to the first line that starts a backtrace: `stack backtrace:` (std, anyhow) or a
/// first frame `   0: ...` (`std::backtrace::Backtrace`'s own format, which candle appends).
pub fn without_backtrace(text: &str) -> &str {
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        let header = trimmed.eq_ignore_ascii_case("stack backtrace:");
        let first_frame = trimmed.starts_with("0: ") && line.starts_with(' ');
        if start > 0 && (header || first_frame) {
            return text[..start].trim_end();
        }
        start += line.len();
    }
    text
}

/// `value` as one line of JSON whose strings carry no character a terminal acts on: JSON's
/// escapes for C0 controls, plus `\uXXXX` for the other [terminal-active](needs_escape) ones, so the text
/// reads back exactly.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    serde_json::to_string(value).map(escape_json)
}

/// As [`to_json`], indented.
pub fn to_json_pretty<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    serde_json::to_string_pretty(value).map(escape_json)
}

/// serde_json's output with the terminal-active characters it leaves raw escaped. They can only be
/// inside strings (outside them it writes ASCII punctuation, digits, letters, spaces and the
/// pretty printer's newlines), where `\uXXXX` stands for the same character.
fn escape_json(json: String) -> String {
    if !json.chars().any(|c| c != '\n' && needs_escape(c)) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if c != '\n' && needs_escape(c) {
            // All of them are in the Basic Multilingual Plane: one \u escape each.
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_printable_text_kept() {
        let hostile = "a\x1b]0;t\x07\r\n\t\x7f\u{9b}é猫\u{202e}z";
        assert_eq!(
            escape(hostile),
            r"a\x1b]0;t\x07\r\n\t\x7f\u{9b}é猫\u{202e}z"
        );
        assert!(matches!(escape("plain é"), Cow::Borrowed(_)));
        // Escaping twice shows the same.
        assert_eq!(escape(&escape(hostile)), escape(hostile));
        assert_eq!(text(hostile).to_string(), escape(hostile));
    }

    #[test]
    fn json_strings_read_back_exactly_and_carry_no_raw_control() {
        let hostile = "a\x1b]0;t\x07\r\n\x7f\u{85}\u{9b}\u{2028}é";
        for json in [
            to_json(&[hostile]).unwrap(),
            to_json_pretty(&[hostile]).unwrap(),
        ] {
            assert!(
                !json.chars().any(|c| c != '\n' && needs_escape(c)),
                "{json}"
            );
            let back: Vec<String> = serde_json::from_str(&json).unwrap();
            assert_eq!(back, [hostile]);
        }
    }

    #[test]
    fn backtraces_are_cut() {
        let candle = "shape mismatch for w, expected: [2], got: [3]\n   0: candle_core::error::Error::bt\n             at /x/error.rs:1:1\n   1: main";
        assert_eq!(
            without_backtrace(candle),
            "shape mismatch for w, expected: [2], got: [3]"
        );
        assert_eq!(
            without_backtrace("boom\n\nStack backtrace:\n   0: x"),
            "boom"
        );
        assert_eq!(without_backtrace("0: not a frame"), "0: not a frame");
        assert_eq!(message("a\n   0: f").to_string(), "a");
    }

    #[test]
    fn long_messages_are_shortened_keeping_both_ends() {
        let long = format!("tensor `w`: dtype {} is not known", "x".repeat(5000));
        let shown = message(&long).to_string();
        assert!(shown.chars().count() < MAX_SHOWN, "{}", shown.len());
        assert!(shown.starts_with("tensor `w`: dtype xxx"), "{shown}");
        assert!(shown.ends_with("xxx is not known"), "{shown}");
        assert!(shown.contains("characters left out"), "{shown}");
        // Short text is untouched, and shortening is idempotent.
        assert_eq!(message("short").to_string(), "short");
        assert_eq!(message(&shown).to_string(), shown);
        let wide = "é".repeat(2000);
        assert!(message(&wide)
            .to_string()
            .contains("(1100 characters left out)"));
    }
}
