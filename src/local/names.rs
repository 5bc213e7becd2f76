//! Names that come from a server, checked before they reach the local filesystem.
//!
//! This file owns the one rule for what a single remote file name may be
//! ([`validate_component`]) and the relative paths built only from such names
//! ([`RelativePath`]); names are shown through [`crate::terminal::printable`]. A server may send
//! anything as a name: `..`, `/etc/passwd`, `a\b`, names with NUL bytes or terminal escape
//! sequences (scp CVE-2019-6111 and CVE-2018-20685 were exactly this). Nothing here touches the
//! filesystem; [`crate::local::Destination`] only accepts paths made of validated names.
//!
//! Names must be UTF-8. Linux allows any bytes but `/` and NUL, yet xfer shows names in
//! progress lines, logs and JSON, and builds remote paths as strings; a name in some legacy
//! encoding would be garbled in all of those, or silently turned into a different name by a
//! lossy conversion. Such names are refused with [`NameError::NotUtf8`], which says so.

use crate::error::{Error, ErrorKind};
use crate::terminal::{escape_char, printable};
use std::fmt;

/// The longest name a Linux filesystem accepts (`NAME_MAX`), in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Why a name is not one plain path component. Each variant is one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the name is {length} bytes long, more than the {MAX_NAME_BYTES} a file name may have")]
    TooLong { length: usize },
    #[error("the name contains a NUL byte")]
    Nul,
    #[error("the name contains '/', so it is a path rather than one name")]
    Slash,
    #[error("the name contains '\\', a path separator on Windows")]
    Backslash,
    #[error(
        "the name is not valid UTF-8 (bad byte at offset {offset}); xfer only transfers names \
         that are UTF-8"
    )]
    NotUtf8 { offset: usize },
    #[error("the name is '.', which means the directory itself")]
    CurrentDirectory,
    #[error("the name is '..', which means the parent directory")]
    ParentDirectory,
    #[error("the name contains the control character {} at offset {offset}", escape_char(*.character))]
    ControlCharacter { character: char, offset: usize },
    #[error("the name is only whitespace")]
    OnlyWhitespace,
}

impl NameError {
    /// The error to report when a server sent `name`: a remote fault, named terminal-safely.
    pub fn into_error(self, name: &[u8]) -> Error {
        Error::new(
            ErrorKind::Remote,
            format!(
                "the server sent an unsafe name \"{}\": {self}",
                printable(name)
            ),
        )
        .with_hint(REFUSED_HINT)
    }
}

const REFUSED_HINT: &str = "xfer refuses names that could escape the destination directory or \
                            disturb the terminal; if the file is genuine, rename it on the server";

/// Accepts `name` only if it is one plain path component; returns it as text.
///
/// The rules, in the order they are checked: not empty, at most [`MAX_NAME_BYTES`] bytes, no
/// NUL, no `/`, no `\`, valid UTF-8, not `.` or `..`, no control characters (C0, DEL, C1), and
/// not only whitespace. Spaces anywhere, dots (`.hidden`, `a..b`) and any other Unicode are
/// accepted: real files have them, and none of them can change which directory a name lands in.
pub fn validate_component(name: &[u8]) -> Result<&str, NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong { length: name.len() });
    }
    // Byte checks first: they are the ones that change where a write lands, and they hold
    // whatever the encoding.
    if name.contains(&0) {
        return Err(NameError::Nul);
    }
    if name.contains(&b'/') {
        return Err(NameError::Slash);
    }
    if name.contains(&b'\\') {
        return Err(NameError::Backslash);
    }
    let text = std::str::from_utf8(name).map_err(|error| NameError::NotUtf8 {
        offset: error.valid_up_to(),
    })?;
    match text {
        "." => return Err(NameError::CurrentDirectory),
        ".." => return Err(NameError::ParentDirectory),
        _ => {}
    }
    // `char::is_control` is exactly the Unicode Cc category: C0, DEL and C1.
    if let Some((offset, character)) = text.char_indices().find(|(_, c)| c.is_control()) {
        return Err(NameError::ControlCharacter { character, offset });
    }
    if text.chars().all(char::is_whitespace) {
        return Err(NameError::OnlyWhitespace);
    }
    Ok(text)
}

/// Why a text is not a [`RelativePath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path is empty")]
    Empty,
    #[error("the path is absolute; only paths relative to the destination are allowed")]
    Absolute,
    #[error("the path has an empty component (a doubled or trailing '/')")]
    EmptyComponent,
    /// `component` is already rendered with [`printable`].
    #[error("component \"{component}\" is refused: {error}")]
    Component { component: String, error: NameError },
}

impl PathError {
    /// The error to report when a server sent `path`: a remote fault, named terminal-safely.
    pub fn into_error(self, path: &str) -> Error {
        Error::new(
            ErrorKind::Remote,
            format!(
                "the server sent an unsafe path \"{}\": {self}",
                printable(path.as_bytes())
            ),
        )
        .with_hint(REFUSED_HINT)
    }
}

/// A path below the destination root, made only of names that passed [`validate_component`].
///
/// The empty path ([`RelativePath::root`]) is the destination root itself. There is no way to
/// build one holding `..`, `/` inside a component or an absolute path, so every value is safe to
/// hand to [`crate::local::Destination`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelativePath(Vec<String>);

impl RelativePath {
    /// The destination root itself.
    pub fn root() -> RelativePath {
        RelativePath(Vec::new())
    }

    /// Parses `a/b/c` as the transfer engine builds it. Refuses the empty text (use
    /// [`RelativePath::root`]), absolute paths, empty components (`a//b`, `a/`) and any component
    /// [`validate_component`] refuses, `.` and `..` included.
    pub fn parse(text: &str) -> Result<RelativePath, PathError> {
        if text.is_empty() {
            return Err(PathError::Empty);
        }
        if text.starts_with('/') {
            return Err(PathError::Absolute);
        }
        let mut components = Vec::new();
        for component in text.split('/') {
            if component.is_empty() {
                return Err(PathError::EmptyComponent);
            }
            let valid =
                validate_component(component.as_bytes()).map_err(|error| PathError::Component {
                    component: printable(component.as_bytes()),
                    error,
                })?;
            components.push(valid.to_owned());
        }
        Ok(RelativePath(components))
    }

    /// This path with one more component, which must pass [`validate_component`].
    pub fn join(&self, component: impl AsRef<[u8]>) -> Result<RelativePath, NameError> {
        let valid = validate_component(component.as_ref())?;
        let mut components = Vec::with_capacity(self.0.len() + 1);
        components.extend_from_slice(&self.0);
        components.push(valid.to_owned());
        Ok(RelativePath(components))
    }

    /// The validated components, outermost first; empty for the root.
    pub fn components(&self) -> &[String] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The last component; `None` for the root.
    pub fn file_name(&self) -> Option<&str> {
        self.0.last().map(String::as_str)
    }

    /// The directory holding this entry; `None` for the root.
    pub fn parent(&self) -> Option<RelativePath> {
        let (_, parent) = self.0.split_last()?;
        Some(RelativePath(parent.to_vec()))
    }

    /// The components joined with `/`, unescaped: for building protocol paths, not for a
    /// terminal (use `Display` there). Empty for the root.
    pub fn to_raw_string(&self) -> String {
        self.0.join("/")
    }
}

/// Terminal-safe: components go through [`printable`]; the root shows as `.`.
impl fmt::Display for RelativePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str(".");
        }
        for (index, component) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("/")?;
            }
            f.write_str(&printable(component.as_bytes()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_names_are_refused_with_the_rule_they_break() {
        let long = vec![b'a'; 256];
        let cases: Vec<(&[u8], NameError)> = vec![
            (b"", NameError::Empty),
            (&long, NameError::TooLong { length: 256 }),
            (b"a\0b", NameError::Nul),
            (b"a/b", NameError::Slash),
            (b"/etc", NameError::Slash),
            (b"a\\b", NameError::Backslash),
            (b"\xff\xfe", NameError::NotUtf8 { offset: 0 }),
            (b".", NameError::CurrentDirectory),
            (b"..", NameError::ParentDirectory),
            (
                b"\x1b[2J",
                NameError::ControlCharacter {
                    character: '\x1b',
                    offset: 0,
                },
            ),
            (
                b"a\x7f",
                NameError::ControlCharacter {
                    character: '\x7f',
                    offset: 1,
                },
            ),
            (
                "x\u{9b}".as_bytes(),
                NameError::ControlCharacter {
                    character: '\u{9b}',
                    offset: 1,
                },
            ),
            (
                b"  \t",
                NameError::ControlCharacter {
                    character: '\t',
                    offset: 2,
                },
            ),
            (b"   ", NameError::OnlyWhitespace),
            ("\u{3000}".as_bytes(), NameError::OnlyWhitespace),
        ];
        for (name, expected) in cases {
            assert_eq!(
                validate_component(name),
                Err(expected),
                "{}",
                printable(name)
            );
        }
    }

    #[test]
    fn ordinary_names_pass() {
        let longest = "é".repeat(127) + "a";
        assert_eq!(longest.len(), 255);
        for name in [
            "a",
            "report final.pdf",
            " leading and trailing ",
            ".hidden",
            "a..b",
            "...",
            "日本語.txt",
            "ünïcödé",
            longest.as_str(),
        ] {
            assert_eq!(validate_component(name.as_bytes()), Ok(name));
        }
    }

    #[test]
    fn errors_say_which_rule_failed() {
        let message = NameError::ControlCharacter {
            character: '\x1b',
            offset: 3,
        }
        .to_string();
        assert_eq!(
            message,
            "the name contains the control character \\x1b at offset 3"
        );
        let error = NameError::Slash.into_error(b"../\x1b[31mevil");
        assert_eq!(error.kind(), ErrorKind::Remote);
        assert!(
            error.message().contains("\"../\\x1b[31mevil\""),
            "{}",
            error.message()
        );
        assert!(!error.message().contains('\x1b'));
        assert!(error.hint().is_some());
    }

    #[test]
    fn relative_paths_parse_only_plain_components() {
        let path = RelativePath::parse("a/b c/.d").expect("a plain path parses");
        assert_eq!(path.components(), ["a", "b c", ".d"]);
        assert_eq!(path.to_raw_string(), "a/b c/.d");
        assert_eq!(path.file_name(), Some(".d"));
        assert_eq!(
            path.parent().map(|parent| parent.to_raw_string()),
            Some("a/b c".to_owned())
        );
        assert_eq!(RelativePath::parse(""), Err(PathError::Empty));
        assert_eq!(RelativePath::parse("/etc/passwd"), Err(PathError::Absolute));
        assert_eq!(RelativePath::parse("a//b"), Err(PathError::EmptyComponent));
        assert_eq!(RelativePath::parse("a/"), Err(PathError::EmptyComponent));
        for hostile in ["a/../b", "..", "./a", "a/.", "a\\..\\b", "a/\x1b[2J"] {
            assert!(
                matches!(
                    RelativePath::parse(hostile),
                    Err(PathError::Component { .. })
                ),
                "{hostile:?}"
            );
        }
        let error = RelativePath::parse("x/\x1b]0;title\x07")
            .expect_err("controls are refused")
            .to_string();
        assert!(!error.contains('\x1b'), "{error}");
    }

    #[test]
    fn join_validates_and_display_is_terminal_safe() {
        let root = RelativePath::root();
        assert!(root.is_root());
        assert_eq!(root.to_string(), ".");
        assert_eq!(root.parent(), None);
        let file = root
            .join("d")
            .and_then(|directory| directory.join(b"f\xe2\x80\xaetxt.exe"))
            .expect("valid components join");
        assert_eq!(file.to_string(), "d/f\\u{202e}txt.exe");
        assert_eq!(root.join(".."), Err(NameError::ParentDirectory));
        assert_eq!(root.join("a/b"), Err(NameError::Slash));
        assert_eq!(root.join(b"\xc0"), Err(NameError::NotUtf8 { offset: 0 }));
    }

    proptest! {
        #[test]
        fn accepted_names_are_plain_components(name in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(text) = validate_component(&name) {
                prop_assert!(!text.is_empty() && text.len() <= MAX_NAME_BYTES);
                prop_assert!(text != "." && text != "..");
                prop_assert!(!text.contains(['/', '\\', '\0']));
                prop_assert!(!text.chars().any(char::is_control));
                prop_assert_eq!(text.as_bytes(), &name[..]);
            }
        }

        #[test]
        fn accepted_text_names_are_plain_components(name in "\\PC{0,8}[./\\\\\\x00-\\x1f\\x7f\\u{80}-\\u{9f} ]{0,3}\\PC{0,8}") {
            if let Ok(text) = validate_component(name.as_bytes()) {
                prop_assert!(text != "." && text != "..");
                prop_assert!(!text.contains(['/', '\\', '\0']));
                prop_assert!(!text.chars().any(char::is_control));
                prop_assert!(!text.trim().is_empty());
            }
        }

        #[test]
        fn parsed_paths_round_trip(path in "[a-z. ]{1,4}(/[a-z. ]{1,4}){0,4}") {
            if let Ok(parsed) = RelativePath::parse(&path) {
                prop_assert_eq!(parsed.to_raw_string(), path.clone());
                for component in parsed.components() {
                    prop_assert!(validate_component(component.as_bytes()).is_ok());
                }
                prop_assert_eq!(RelativePath::parse(&parsed.to_raw_string()), Ok(parsed));
            } else {
                prop_assert!(path.split('/').any(|part| validate_component(part.as_bytes()).is_err()));
            }
        }
    }
}
