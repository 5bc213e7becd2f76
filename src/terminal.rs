//! Text made safe for a terminal: whatever a peer, a file or a user supplied is escaped before it
//! is printed, so that nothing in it can move the cursor, retitle the window, change colours or
//! reorder the rest of the line.
//!
//! One rule, two uses:
//! - [`printable`] (and [`printable_cut`]) renders raw text, any bytes, a backslash included, so
//!   that the output says unambiguously what was received. Every piece of peer-supplied text
//!   (names, paths, stderr, status messages) goes through it before it joins a message.
//! - [`printable_message`] and [`printable_lines`] guard a whole message on its way out. The
//!   message already holds escaped pieces, so backslashes are left alone (their escapes stay
//!   readable instead of doubling); anything else a terminal would act on is escaped as above.
//!   [`printable_lines`] keeps line breaks, for messages such as an authentication failure that
//!   lists every key tried.
//!
//! C0 controls, DEL and bytes that are not UTF-8 become `\xNN`; C1 controls and the Unicode
//! characters that reorder or break displayed text (bidirectional overrides, line and paragraph
//! separators, as in "Trojan Source") become `\u{NNNN}`. Everything else, spaces and non-ASCII
//! letters included, is kept as is.

/// Renders any bytes so that printing them cannot disturb a terminal, for warnings and errors.
/// A backslash becomes `\\`, so an escape in the output always stands for what was received.
pub fn printable(text: impl AsRef<[u8]>) -> String {
    let text = text.as_ref();
    let mut out = String::with_capacity(text.len());
    for chunk in text.utf8_chunks() {
        for character in chunk.valid().chars() {
            push_char(&mut out, character, Backslash::Escape);
        }
        for byte in chunk.invalid() {
            push_byte(&mut out, *byte);
        }
    }
    out
}

/// [`printable`], cut after `max_chars` characters of output (then marked with `...`), for
/// warnings that name what a peer sent without letting one name fill the screen. An escape is
/// never cut in half.
pub fn printable_cut(text: impl AsRef<[u8]>, max_chars: usize) -> String {
    let mut out = String::new();
    let mut shown = 0;
    let mut piece = String::new();
    for chunk in text.as_ref().utf8_chunks() {
        let characters = chunk.valid().chars().map(Ok);
        for unit in characters.chain(chunk.invalid().iter().map(Err)) {
            piece.clear();
            match unit {
                Ok(character) => push_char(&mut piece, character, Backslash::Escape),
                Err(byte) => push_byte(&mut piece, *byte),
            }
            let width = piece.chars().count();
            if shown + width > max_chars {
                out.push_str("...");
                return out;
            }
            shown += width;
            out.push_str(&piece);
        }
    }
    out
}

/// A one-line message made terminal-safe before it is printed: controls (line breaks included)
/// and display-changing characters escaped, backslashes kept.
pub fn printable_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        push_char(&mut out, character, Backslash::Keep);
    }
    out
}

/// Like [`printable_message`], but keeps line breaks.
pub fn printable_lines(text: &str) -> String {
    text.split('\n')
        .map(printable_message)
        .collect::<Vec<_>>()
        .join("\n")
}

/// One character as [`printable`] shows it, for messages that name a single character.
pub(crate) fn escape_char(character: char) -> String {
    let mut out = String::new();
    push_char(&mut out, character, Backslash::Escape);
    out
}

#[derive(Clone, Copy)]
enum Backslash {
    Escape,
    Keep,
}

fn push_char(out: &mut String, character: char, backslash: Backslash) {
    let code = u32::from(character);
    if character == '\\' {
        out.push_str(match backslash {
            Backslash::Escape => "\\\\",
            Backslash::Keep => "\\",
        });
    } else if code < 0x20 || code == 0x7f {
        out.push_str(&format!("\\x{code:02x}"));
    } else if character.is_control() || is_display_changing(character) {
        out.push_str(&format!("\\u{{{code:x}}}"));
    } else {
        out.push(character);
    }
}

fn push_byte(out: &mut String, byte: u8) {
    out.push_str(&format!("\\x{byte:02x}"));
}

/// Format characters that change how the rest of a line is displayed without being controls.
fn is_display_changing(character: char) -> bool {
    matches!(
        character,
        '\u{061c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn printable_escapes_what_a_terminal_would_act_on() {
        assert_eq!(printable(b"plain name.txt"), "plain name.txt");
        assert_eq!(printable(b"\x1b[2J"), "\\x1b[2J");
        assert_eq!(printable(b"a\nb\rc\0"), "a\\x0ab\\x0dc\\x00");
        assert_eq!(printable(b"\x7f"), "\\x7f");
        assert_eq!(printable("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(printable(b"bad\xffbyte"), "bad\\xffbyte");
        assert_eq!(printable(b"a\\x41"), "a\\\\x41");
        assert_eq!(printable("txt.\u{202e}exe"), "txt.\\u{202e}exe");
        assert_eq!(printable("日本"), "日本");
    }

    #[test]
    fn cut_names_stay_printable_and_short() {
        assert_eq!(printable_cut(b"short", 80), "short");
        let long = "n".repeat(4000);
        assert_eq!(printable_cut(&long, 80), format!("{}...", &long[..80]));
        // Escapes count as what they show and are never cut in half.
        assert_eq!(printable_cut(b"ab\x1b[2J", 5), "ab...");
        assert_eq!(printable_cut(b"ab\x1b[2J", 6), "ab\\x1b...");
        assert_eq!(printable_cut(b"\xff\xfe", 4), "\\xff...");
        assert_eq!(printable_cut("日本語", 2), "日本...");
        assert_eq!(printable_cut(b"exact", 5), "exact");
    }

    #[test]
    fn messages_keep_their_escapes_and_lines_their_breaks() {
        let name = printable(b"dest\x1b[2J");
        let message = format!("{name} is a regular file\u{7}\n\u{202e}next");
        assert_eq!(
            printable_message(&message),
            "dest\\x1b[2J is a regular file\\x07\\x0a\\u{202e}next"
        );
        assert_eq!(
            printable_lines(&message),
            "dest\\x1b[2J is a regular file\\x07\n\\u{202e}next"
        );
    }

    proptest! {
        #[test]
        fn printable_output_has_no_controls(name in proptest::collection::vec(any::<u8>(), 0..64)) {
            let shown = printable(&name);
            prop_assert!(!shown.chars().any(|c| c.is_control() || is_display_changing(c)));
            // A cut is a prefix of the whole, within its length plus the mark.
            let cut = printable_cut(&name, 20);
            prop_assert!(cut.chars().count() <= 23);
            prop_assert!(shown.starts_with(cut.trim_end_matches("...")));
            if shown.chars().count() <= 20 {
                prop_assert_eq!(cut, shown);
            } else {
                prop_assert!(cut.ends_with("..."));
            }
        }

        #[test]
        fn printable_lines_output_has_no_controls_but_breaks(text in "\\PC*|[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}\\u{202a}-\\u{202e}a\\\\]{0,40}") {
            let shown = printable_lines(&text);
            prop_assert!(!shown.chars().any(|c| c != '\n' && (c.is_control() || is_display_changing(c))));
            prop_assert_eq!(shown.matches('\n').count(), text.matches('\n').count());
        }
    }
}
