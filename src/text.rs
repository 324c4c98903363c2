//! Quoting what a stranger sent inside a message, at a bounded length.
//!
//! Error texts go back to clients, into logs and into stored records (an
//! order's history, a day's reconciliation); a value copied whole could make
//! any of them as large as the input. Every message that quotes input quotes
//! it through [`quote`], which keeps at most [`MAX_QUOTED_CHARS`] characters.

use std::fmt;

/// The most characters of an input value a message quotes.
pub const MAX_QUOTED_CHARS: usize = 100;

/// A value quoted as Rust's `{:?}` does (`"abc"`, escapes included), cut
/// after [`MAX_QUOTED_CHARS`] characters with `…` and the full length in
/// bytes, e.g. `"12345…" (30000000 bytes)`.
pub fn quote(value: &str) -> Quoted<'_> {
    Quoted(value)
}

/// See [`quote`].
#[derive(Clone, Copy)]
pub struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(MAX_QUOTED_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => {
                let shown = format!("{:?}", &self.0[..cut]);
                write!(f, "{}…\" ({} bytes)", &shown[..shown.len() - 1], self.0.len())
            }
        }
    }
}

impl fmt::Debug for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `text` itself when it is at most `max` characters; otherwise its first
/// `max` characters, `…` and the full length in bytes. For messages built
/// from parts that may be long (a serde error quoting the input, an
/// upstream's description).
pub fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => text.into(),
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_whole() {
        assert_eq!(quote("abc").to_string(), "\"abc\"");
        assert_eq!(quote("a\"b\n").to_string(), "\"a\\\"b\\n\"");
        assert_eq!(quote(&"x".repeat(100)).to_string(), format!("\"{}\"", "x".repeat(100)));
    }

    #[test]
    fn long_values_are_cut_at_a_character_with_their_length() {
        let huge = "9".repeat(30_000_000);
        let text = quote(&huge).to_string();
        assert_eq!(text, format!("\"{}…\" (30000000 bytes)", "9".repeat(100)));
        // Cut between characters, never inside one.
        let chinese = "元".repeat(150);
        assert_eq!(quote(&chinese).to_string(), format!("\"{}…\" (450 bytes)", "元".repeat(100)));
    }

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("0123456789ab", 10), "0123456789… (12 bytes)");
    }
}
