//! netrc files: read one machine's entry, and replace one machine's entry in a file while
//! keeping every other byte, for `xfer secret push --from-netrc MACHINE`.
//!
//! Pure text in, text out: reading and writing the files (0600, temporary file and rename) is
//! the caller's work. Passwords and accounts are held in [`SecretString`] from the moment they
//! are parsed, and every text that may hold one (a rendered entry, a merged file) is returned
//! as a [`SecretString`]. No error message and no `Debug` output quotes any text of the file:
//! errors say what is wrong and on which line, never with which words, because a stray word
//! may be half of a password written without quotes.
//!
//! # What is accepted
//!
//! A netrc file is read by curl (libcurl, and so git), by Python's `netrc` module (pip,
//! requests, wandb) and by others, and they disagree on details. This parser accepts what they
//! read the same way and refuses the rest, saying on which line and why; it never guesses. The
//! grammar, with the reader that forces each rule:
//!
//! - Words are separated by spaces, tabs and line ends (LF or CRLF); line ends mean nothing
//!   else. `machine NAME` starts an entry, `default` starts the entry that matches every host
//!   and must come after every `machine` (curl uses it for the machines after it), once
//!   (Python keeps the last, curl the first). An entry holds `login`, `password` and `account`,
//!   each at most once and each followed by its value (a value may be on the next line). Any
//!   other word in an entry is refused (Python refuses it, curl skips it); `user` is refused too
//!   (Python reads it as `login`, curl ignores it).
//! - A comment is a line whose first non-blank character is `#`. A `#` after other words on a
//!   line is refused: current curl drops only whole comment lines as it loads the file, and
//!   reads the words of any other comment as netrc words (keywords included). Python's lexer adds its own traps, which are refused
//!   too: it skips only the first word of a comment that follows a blank line, trailing
//!   blanks or a quoted value, and, before the first entry, of a comment whose first word is
//!   not a lone `#` (so `#note here` at the top of a file fails in Python).
//! - A value may be double-quoted, with `\"` and `\\` as the only escapes (curl turns `\n`
//!   into a line feed, Python into `n`), no line end inside, and a blank or line end after the
//!   closing quote. Outside quotes a value is printable ASCII without `\` (an escape to Python,
//!   a character to curl), and does not start with `#` (a comment to older curl). A value
//!   is never a netrc keyword in any letter case, quoted or not: curl acts on keywords wherever
//!   they appear outside the entry it is reading. An empty value is refused.
//! - `macdef NAME` must have its plain name alone at the end of its line; the macro body runs
//!   to the next empty line and is never read as words. A body line of only blanks is refused
//!   (current curl ends the macro there, Python does not). A macro is only accepted before the first
//!   entry: curl reads the body of a macro that follows an entry as more of that entry.
//! - In a file with CRLF line ends, a CR must directly follow a word or closing quote: current
//!   curl reports a syntax error for a blank line or trailing blanks before a CRLF. A CR that is not
//!   followed by LF is refused anywhere (Python counts it as a line end, curl as a blank).
//! - Control characters other than tab are refused outside comments and macro bodies, and so
//!   are non-ASCII characters outside quotes (current curl ends a word there where `char` is
//!   signed, as on x86). Comments and macro bodies may hold any UTF-8 but NUL.
//! - Limits: the whole file at most [`MAX_INPUT_LEN`] bytes, a line at most 16382 bytes, a word
//!   at most 4095 bytes, and at most about 128 KiB outside comment lines, which are curl's.
//!
//! # Lookup and merge
//!
//! Machine names are compared ignoring ASCII case, as curl does (DNS names are case-blind).
//! When a machine has several entries, [`Netrc::machine`] returns the first, as curl does.
//! [`merge`] replaces the first entry in place and removes the later ones, so that curl (first
//! wins) and Python (last wins) both read the new values. An entry's text runs from its
//! `machine` word to the end of its last value, plus the blanks and blank lines after it. A
//! comment between an entry's keys goes with the entry when it is replaced; a comment after
//! its last value stays. Removing a duplicate can, rarely, leave a comment after a quoted value
//! or trailing blanks, which Python misreads: [`merge`] then refuses rather than write that.
//!
//! An entry without a password is also read differently: curl goes on to the entries after
//! it and may take its values from another one (a later entry for the same machine, or
//! `default`), while Python uses it as written. Lookup returns it as written; the entries
//! `xfer secret push` writes have a password.
//!
//! # Writing
//!
//! [`render_stanza`] never quotes: curl before 7.84 (Ubuntu 22.04, Debian 11, RHEL 8 and 9)
//! does not understand quotes and would read a quoted value as several words. A value that
//! would need quotes (a blank, a leading `"` or `#`, a backslash, a control or non-ASCII
//! character), an empty one, an overlong one or a keyword is refused with an error naming the
//! field, never the value.

use std::cell::Cell;
use std::fmt;
use std::ops::Range;

use secrecy::zeroize::Zeroizing;
// Re-exported: building a [`Stanza`] and reading a merge's result take these.
pub use secrecy::{ExposeSecret, SecretString};

use crate::error::Error;

/// The largest netrc file read or written, in bytes.
pub const MAX_INPUT_LEN: usize = 1024 * 1024;

/// The longest line, without its LF: curl refuses a line of 16384 bytes with its LF and NUL.
const MAX_LINE_LEN: usize = 16_382;

/// The longest word, after unquoting: curl's token buffer holds 4096 bytes with the NUL.
const MAX_WORD_LEN: usize = 4095;

/// The most bytes outside comment lines (each line counted with an LF): curl's file buffer
/// holds 128 KiB with its NUL, and curl drops comment lines as it loads.
const MAX_CONTENT_LEN: usize = 128 * 1024 - 1;

/// The words with a meaning in netrc. curl compares them ignoring case.
const KEYWORDS: [&str; 6] = [
    "machine", "default", "macdef", "login", "password", "account",
];

/// One machine's entry. `Debug` shows the machine and login and hides the password and
/// account.
#[derive(Clone)]
pub struct Stanza {
    pub machine: String,
    pub login: Option<String>,
    pub password: Option<SecretString>,
    pub account: Option<SecretString>,
}

impl Stanza {
    /// An entry for `machine` with no keys.
    pub fn new(machine: impl Into<String>) -> Self {
        Stanza {
            machine: machine.into(),
            login: None,
            password: None,
            account: None,
        }
    }
}

impl fmt::Debug for Stanza {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |value: &Option<SecretString>| value.as_ref().map(|_| "[REDACTED]");
        f.debug_struct("Stanza")
            .field("machine", &self.machine)
            .field("login", &self.login)
            .field("password", &redacted(&self.password))
            .field("account", &redacted(&self.account))
            .finish()
    }
}

/// Which value of an entry an error is about. Errors name the field, never its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    MachineName,
    Login,
    Password,
    Account,
    MacroName,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::MachineName => "machine name",
            Field::Login => "login",
            Field::Password => "password",
            Field::Account => "account",
            Field::MacroName => "macdef name",
        })
    }
}

/// Why Python's `netrc` module would misread a comment line (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommentTrap {
    /// The comment follows a blank line, trailing blanks or a quoted value.
    AfterLineBreak,
    /// Before the first entry, the comment's first word is not a lone `#`.
    FirstWordNotHash,
    /// The comment's first word holds a backslash, an escape to Python's lexer.
    Backslash,
}

impl fmt::Display for CommentTrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CommentTrap::AfterLineBreak => {
                "it skips only the first word of a comment that follows a blank line, trailing \
                 blanks or a quoted value"
            }
            CommentTrap::FirstWordNotHash => {
                "before the first entry it skips only the first word of a comment that does \
                 not start with `# `"
            }
            CommentTrap::Backslash => "it reads a backslash in a comment's first word as an escape",
        })
    }
}

/// Why a netrc file or entry is refused. Messages give a line number and a reason, never any
/// text of the file or of a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetrcError {
    #[error("the netrc file is {len} bytes, over the {MAX_INPUT_LEN}-byte limit")]
    TooLarge { len: usize },
    #[error(
        "the netrc file holds over {MAX_CONTENT_LEN} bytes outside comment lines, which curl \
         refuses"
    )]
    ContentTooLarge,
    #[error("line {line}: not valid UTF-8")]
    InvalidUtf8 { line: usize },
    #[error("line {line}: longer than {MAX_LINE_LEN} bytes, which curl refuses")]
    LineTooLong { line: usize },
    #[error("line {line}: a NUL byte")]
    Nul { line: usize },
    #[error(
        "line {line}: a carriage return not followed by a line feed (Python reads it as a line \
         end, curl as a blank)"
    )]
    LoneCarriageReturn { line: usize },
    #[error(
        "line {line}: a blank line or trailing blank before a CRLF line end, which curl rejects \
         as a syntax error"
    )]
    BlankBeforeCrLf { line: usize },
    #[error("line {line}: a control character outside comments and quotes")]
    ControlCharacter { line: usize },
    #[error("line {line}: a non-ASCII character outside quotes, where curl may end the word")]
    NonAsciiOutsideQuotes { line: usize },
    #[error(
        "line {line}: a backslash outside quotes (Python reads it as an escape, curl as a \
         character)"
    )]
    BackslashOutsideQuotes { line: usize },
    #[error("line {line}: a quoted word is not closed")]
    UnterminatedQuote { line: usize },
    #[error("line {line}: a quoted word runs past the end of its line")]
    QuoteAcrossLines { line: usize },
    #[error(
        "line {line}: a backslash escape other than \\\" or \\\\ inside quotes (Python and curl \
         decode them differently)"
    )]
    BadEscape { line: usize },
    #[error("line {line}: a closing quote not followed by a blank or the end of the line")]
    QuoteNotSeparated { line: usize },
    #[error("line {line}: a word longer than {MAX_WORD_LEN} bytes, which curl refuses")]
    WordTooLong { line: usize },
    #[error("line {line}: the {field} is missing")]
    MissingValue { line: usize, field: Field },
    #[error("line {line}: the {field} is empty")]
    EmptyValue { line: usize, field: Field },
    #[error(
        "line {line}: the {field} is a netrc keyword, which curl may read as a keyword rather \
         than a value"
    )]
    KeywordValue { line: usize, field: Field },
    #[error(
        "line {line}: the {field} starts with `#`, which older curl reads as a comment and \
         Python as part of the value"
    )]
    HashValue { line: usize, field: Field },
    #[error("line {line}: a word where `machine`, `default` or `macdef` was expected")]
    UnexpectedWord { line: usize },
    #[error(
        "line {line}: a word where `login`, `password`, `account` or the next entry was expected"
    )]
    UnexpectedKey { line: usize },
    #[error("line {line}: `user` (Python reads it as `login`, curl ignores it)")]
    UserKey { line: usize },
    #[error("line {line}: a quoted word where a keyword was expected")]
    QuotedKeyword { line: usize },
    #[error("line {line}: the {field} is given twice in one entry")]
    DuplicateKey { line: usize, field: Field },
    #[error("line {line}: a comment after other words on the line")]
    CommentNotAlone { line: usize },
    #[error("line {line}: Python's netrc module misreads this comment: {trap}")]
    PythonComment { line: usize, trap: CommentTrap },
    #[error(
        "line {line}: `machine` after `default` (curl would use the default entry for this \
         machine)"
    )]
    MachineAfterDefault { line: usize },
    #[error("line {line}: a second `default` entry (Python uses the last one, curl the first one)")]
    SecondDefault { line: usize },
    #[error(
        "line {line}: `macdef` after an entry (curl reads the macro body as more of that entry)"
    )]
    MacroAfterEntry { line: usize },
    #[error("line {line}: the macdef name must be a plain word alone at the end of its line")]
    MacroNameNotAlone { line: usize },
    #[error("line {line}: the macdef starting here is not ended by an empty line")]
    UnterminatedMacro { line: usize },
    #[error(
        "line {line}: a line of only blanks inside a macro (curl ends the macro there, Python \
         does not)"
    )]
    BlankLineInMacro { line: usize },
    #[error("the {field} {problem}")]
    UnwritableValue { field: Field, problem: &'static str },
    #[error("the merged netrc file would be refused: {0}")]
    MergedInvalid(Box<NetrcError>),
    #[error("the merged netrc file does not hold the new entry as written")]
    MergedMismatch,
}

impl NetrcError {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<&'static str> {
        use NetrcError::*;
        Some(match self {
            TooLarge { .. } | ContentTooLarge | LineTooLong { .. } | WordTooLong { .. } => {
                "a netrc file holds a few short entries; check that this is the right file"
            }
            InvalidUtf8 { .. } | Nul { .. } | ControlCharacter { .. } => {
                "netrc files are UTF-8 text; remove the stray bytes"
            }
            LoneCarriageReturn { .. } | BlankBeforeCrLf { .. } => {
                "convert the file to LF line ends (dos2unix), or remove blank lines and trailing \
                 blanks"
            }
            NonAsciiOutsideQuotes { .. } => "put the value in double quotes",
            BackslashOutsideQuotes { .. } => {
                "put the value in double quotes and write each backslash as \\\\"
            }
            UnterminatedQuote { .. } | QuoteAcrossLines { .. } | QuoteNotSeparated { .. } => {
                "close the quote on the same line, followed by a blank or the line end"
            }
            BadEscape { .. } => "inside quotes, write only \\\" and \\\\ as escapes",
            MissingValue { .. } | EmptyValue { .. } => {
                "write the value after its keyword, e.g. `machine example.com login me \
                 password secret`"
            }
            KeywordValue { .. } => "xfer does not accept netrc keywords as values",
            HashValue { .. } => "put the value in double quotes",
            UnexpectedWord { .. } | UnexpectedKey { .. } | QuotedKeyword { .. } => {
                "an entry is `machine NAME` followed by `login`, `password` and `account` with \
                 their values; a value with blanks needs double quotes"
            }
            UserKey { .. } => "write `login` instead of `user`",
            DuplicateKey { .. } => "keep one of the two values",
            CommentNotAlone { .. } => "move the comment to a line of its own",
            PythonComment { .. } => {
                "start the comment with `# ` on the line right after a value (no blank line or \
                 trailing blank before it), or remove the blank line above it"
            }
            MachineAfterDefault { .. } => "move the `default` entry to the end of the file",
            SecondDefault { .. } => "keep one `default` entry, at the end of the file",
            MacroAfterEntry { .. } => "move macdef definitions before the first `machine`",
            MacroNameNotAlone { .. } | UnterminatedMacro { .. } | BlankLineInMacro { .. } => {
                "write `macdef NAME` alone on its line and end the body with an empty line"
            }
            UnwritableValue { .. } => {
                "xfer writes netrc values that every reader reads alike, without quotes: \
                 printable ASCII without blanks or backslashes, not starting with `#` or `\"`"
            }
            MergedInvalid(inner) => return inner.hint(),
            MergedMismatch => return None,
        })
    }
}

impl From<NetrcError> for Error {
    fn from(error: NetrcError) -> Self {
        let hint = error.hint();
        let converted = Error::config(error.to_string());
        match hint {
            Some(hint) => converted.with_hint(hint),
            None => converted,
        }
    }
}

/// A parsed netrc file: its entries and where each one is in the text.
#[derive(Debug)]
pub struct Netrc {
    /// The `machine` entries, in file order.
    entries: Vec<Entry>,
    default: Option<Entry>,
}

#[derive(Debug)]
struct Entry {
    stanza: Stanza,
    /// From the `machine` (or `default`) word to the end of the blanks and blank lines after
    /// the last value; see [`trailing_end`].
    span: Range<usize>,
    /// Where the last word of the entry ends.
    last_word_end: usize,
}

impl Netrc {
    /// The first entry for `name`, compared ignoring ASCII case as curl does. It does not fall
    /// back to the `default` entry.
    pub fn machine(&self, name: &str) -> Option<Stanza> {
        self.first(name).map(|entry| entry.stanza.clone())
    }

    /// Where the first entry for `name` is in the parsed text: from its `machine` word to the
    /// end of the blanks and blank lines that follow it, up to the next entry, comment line or
    /// line with other text.
    pub fn span(&self, name: &str) -> Option<Range<usize>> {
        self.first(name).map(|entry| entry.span.clone())
    }

    /// The machine names of all entries, in file order, duplicates included.
    pub fn machines(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .map(|entry| entry.stanza.machine.as_str())
    }

    /// Whether the file has a `default` entry.
    pub fn has_default(&self) -> bool {
        self.default.is_some()
    }

    fn first(&self, name: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|entry| entry.stanza.machine.eq_ignore_ascii_case(name))
    }
}

/// Checks the size and encoding of a netrc file's bytes and returns them as text.
pub fn decode(bytes: &[u8]) -> Result<&str, NetrcError> {
    if bytes.len() > MAX_INPUT_LEN {
        return Err(NetrcError::TooLarge { len: bytes.len() });
    }
    std::str::from_utf8(bytes).map_err(|error| NetrcError::InvalidUtf8 {
        line: line_number(bytes, error.valid_up_to()),
    })
}

/// Parses a netrc file, refusing anything its readers would read differently (see the module
/// documentation).
pub fn parse(text: &str) -> Result<Netrc, NetrcError> {
    check_lines(text)?;
    Parser::new(text).run()
}

/// The canonical text of an entry: `machine NAME`, then `login`, `password` and `account`
/// (those present) on indented lines, each line ending with LF.
pub fn render_stanza(stanza: &Stanza) -> Result<SecretString, NetrcError> {
    render(stanza, "\n")
}

/// Returns `existing` with `stanza` in it: replacing the first entry for the same machine
/// (ignoring ASCII case) in place and removing later ones, or else inserted before `default`
/// (with the comment lines directly above it), or else appended, after an added line end if
/// the file does not end with one. All other bytes are kept. An empty or blank file becomes
/// just the entry. In a file whose first line ends with CRLF the entry is written with CRLF.
///
/// The existing file must parse; the result is parsed again before it is returned, so a
/// merge never produces a file that [`parse`] refuses.
pub fn merge(existing: &str, stanza: &Stanza) -> Result<SecretString, NetrcError> {
    if existing.len() > MAX_INPUT_LEN {
        return Err(NetrcError::TooLarge {
            len: existing.len(),
        });
    }
    if existing.bytes().all(is_line_space) {
        return render(stanza, "\n");
    }
    let newline = if uses_crlf(existing) { "\r\n" } else { "\n" };
    let rendered = render(stanza, newline)?;
    let rendered_text = rendered.expose_secret();
    let netrc = parse(existing)?;

    // Never larger than the old file plus the new entry and a line end, so it never grows
    // (a reallocation would leave a copy of the secrets behind); zeroed when dropped.
    let mut merged = Zeroizing::new(String::with_capacity(
        existing.len() + rendered_text.len() + newline.len(),
    ));
    let mut matching = netrc
        .entries
        .iter()
        .filter(|entry| entry.stanza.machine.eq_ignore_ascii_case(&stanza.machine));
    if let Some(first) = matching.next() {
        merged.push_str(&existing[..first.span.start]);
        merged.push_str(rendered_text);
        // The blank lines after the old entry stay, so the file keeps its layout.
        merged.push_str(after_first_line_end(
            &existing[first.last_word_end..first.span.end],
        ));
        let mut cursor = first.span.end;
        for duplicate in matching {
            merged.push_str(&existing[cursor..duplicate.span.start]);
            cursor = remove_entry(&mut merged, existing, duplicate);
        }
        merged.push_str(&existing[cursor..]);
    } else if let Some(default) = &netrc.default {
        let at = insertion_point(existing, default.span.start);
        merged.push_str(&existing[..at]);
        merged.push_str(rendered_text);
        merged.push_str(&existing[at..]);
    } else {
        merged.push_str(existing);
        merged.push_str(match existing.as_bytes().last() {
            Some(b'\n') => "",
            // A CR after a blank is refused (see BlankBeforeCrLf), a lone LF is not.
            Some(b' ' | b'\t') => "\n",
            _ => newline,
        });
        merged.push_str(rendered_text);
    }
    // Copied at its exact length, so the conversion to a boxed str does not reallocate.
    let merged = SecretString::from(merged.as_str());
    let reparsed = parse(merged.expose_secret())
        .map_err(|error| NetrcError::MergedInvalid(Box::new(error)))?;
    match reparsed.machine(&stanza.machine) {
        Some(found) if same_values(&found, stanza) => Ok(merged),
        _ => Err(NetrcError::MergedMismatch),
    }
}

fn render(stanza: &Stanza, newline: &str) -> Result<SecretString, NetrcError> {
    let login = stanza.login.as_deref();
    let password = stanza.password.as_ref().map(|value| value.expose_secret());
    let account = stanza.account.as_ref().map(|value| value.expose_secret());
    check_writable(Field::MachineName, &stanza.machine)?;
    for (field, value) in [
        (Field::Login, login),
        (Field::Password, password),
        (Field::Account, account),
    ] {
        if let Some(value) = value {
            check_writable(field, value)?;
        }
    }
    let lines = [
        ("machine ", Some(stanza.machine.as_str())),
        ("  login ", login),
        ("  password ", password),
        ("  account ", account),
    ];
    let len = lines
        .iter()
        .filter_map(|(prefix, value)| value.map(|value| prefix.len() + value.len() + newline.len()))
        .sum();
    // Sized exactly, so no reallocation leaves a copy of the password behind.
    let mut text = String::with_capacity(len);
    for (prefix, value) in lines {
        if let Some(value) = value {
            text.push_str(prefix);
            text.push_str(value);
            text.push_str(newline);
        }
    }
    Ok(SecretString::from(text))
}

/// Accepts a value only if every netrc reader reads it back unchanged without quotes.
fn check_writable(field: Field, value: &str) -> Result<(), NetrcError> {
    let problem = if value.is_empty() {
        "is empty"
    } else if value.len() > MAX_WORD_LEN {
        "is longer than 4095 bytes, which curl refuses"
    } else if value.contains([' ', '\t']) {
        "contains a blank, which only quotes can hold, and curl before 7.84 does not read quotes"
    } else if value.chars().any(char::is_control) {
        "contains a line break or another control character"
    } else if !value.is_ascii() {
        "contains a non-ASCII character, which curl may split words at unless quoted, and curl \
         before 7.84 does not read quotes"
    } else if value.contains('\\') {
        "contains a backslash, which Python reads as an escape and curl as a character"
    } else if value.starts_with('#') {
        "starts with `#`, which older curl reads as a comment"
    } else if value.starts_with('"') {
        "starts with a double quote, which curl before 7.84 reads differently from Python"
    } else if is_keyword(value) {
        "is a netrc keyword, which curl may read as a keyword rather than a value"
    } else {
        return Ok(());
    };
    Err(NetrcError::UnwritableValue { field, problem })
}

/// Whether two entries hold the same machine name and values.
fn same_values(found: &Stanza, wanted: &Stanza) -> bool {
    fn same(left: &Option<SecretString>, right: &Option<SecretString>) -> bool {
        match (left, right) {
            (Some(left), Some(right)) => left.expose_secret() == right.expose_secret(),
            (None, None) => true,
            _ => false,
        }
    }
    found.machine == wanted.machine
        && found.login == wanted.login
        && same(&found.password, &wanted.password)
        && same(&found.account, &wanted.account)
}

/// Whether a value is a netrc keyword in any letter case.
fn is_keyword(word: &str) -> bool {
    KEYWORDS
        .iter()
        .any(|keyword| keyword.eq_ignore_ascii_case(word))
}

fn is_blank(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

fn is_line_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

/// A comment line: its first non-blank character is `#` (curl drops such lines on load).
fn is_comment_line(line: &[u8]) -> bool {
    line.iter().find(|&&byte| !is_blank(byte)) == Some(&b'#')
}

/// The 1-based line of a byte offset.
fn line_number(bytes: &[u8], offset: usize) -> usize {
    let end = offset.min(bytes.len());
    bytes[..end].iter().filter(|&&byte| byte == b'\n').count() + 1
}

/// Whether the first line ends with CRLF, so a new entry should too.
fn uses_crlf(text: &str) -> bool {
    text.find('\n')
        .is_some_and(|index| index > 0 && text.as_bytes()[index - 1] == b'\r')
}

/// What follows the first line end of `blanks` (the blank lines after an entry), or nothing.
fn after_first_line_end(blanks: &str) -> &str {
    blanks.find('\n').map_or("", |index| &blanks[index + 1..])
}

/// Where the start of a line is, if only blanks come before `offset` on it.
fn blank_line_start(text: &str, offset: usize) -> Option<usize> {
    let line_start = text[..offset].rfind('\n').map_or(0, |index| index + 1);
    text.as_bytes()[line_start..offset]
        .iter()
        .all(|&byte| is_blank(byte))
        .then_some(line_start)
}

/// Removes a later duplicate `entry` of `text`: `merged` holds the output up to the entry's
/// start; returns where in `text` copying resumes. The cut keeps lines whole. An entry alone
/// at the start of its line goes with its indentation and the blank lines above it, and the
/// blank lines below it stay: what follows keeps what it had in front of it, which matters to
/// Python for a comment. An entry sharing its line with earlier words leaves that line's end
/// (and the lines after it) in place, without the blanks that preceded it.
fn remove_entry(merged: &mut String, text: &str, entry: &Entry) -> usize {
    let trailing = &text[entry.last_word_end..entry.span.end];
    let line_start = merged.rfind('\n').map_or(0, |index| index + 1);
    if merged.as_bytes()[line_start..]
        .iter()
        .all(|&byte| is_blank(byte))
    {
        // Entries precede this one (at least the replaced first), so the text before it has a
        // last line with words, and no macro (whose empty line must stay) comes after those.
        let content_end = merged.trim_end_matches(is_line_space_char).len();
        let kept = merged[content_end..]
            .find('\n')
            .map_or(line_start, |index| content_end + index + 1);
        merged.truncate(kept);
        return trailing
            .find('\n')
            .map_or(entry.span.end, |index| entry.last_word_end + index + 1);
    }
    match trailing.find(['\r', '\n']) {
        Some(index) => {
            let kept = merged.trim_end_matches([' ', '\t']).len();
            merged.truncate(kept);
            entry.last_word_end + index
        }
        // The next entry follows on the same line, after the blank already copied.
        None => entry.span.end,
    }
}

fn is_line_space_char(character: char) -> bool {
    matches!(character, ' ' | '\t' | '\n' | '\r')
}

/// Where a new entry goes before the `default` entry at `offset`: above the comment lines
/// directly over it (they describe the default), or right before the word if it shares its
/// line with other words.
fn insertion_point(text: &str, offset: usize) -> usize {
    let Some(mut point) = blank_line_start(text, offset) else {
        return offset;
    };
    while point > 0 {
        let previous_start = text[..point - 1].rfind('\n').map_or(0, |index| index + 1);
        if !is_comment_line(&text.as_bytes()[previous_start..point]) {
            break;
        }
        point = previous_start;
    }
    point
}

/// The end of an entry whose last word ends at `from`: past the blanks and line ends that
/// follow, but not past the indentation of the line where the next text starts. At the end of
/// the file, everything.
fn trailing_end(bytes: &[u8], from: usize) -> usize {
    let mut position = from;
    let mut after_line_end = None;
    while let Some(&byte) = bytes.get(position) {
        match byte {
            b'\n' => {
                position += 1;
                after_line_end = Some(position);
            }
            b' ' | b'\t' | b'\r' => position += 1,
            _ => return after_line_end.unwrap_or(position),
        }
    }
    bytes.len()
}

/// The checks made line by line before reading words: size limits, NUL, lone CR.
fn check_lines(text: &str) -> Result<(), NetrcError> {
    if text.len() > MAX_INPUT_LEN {
        return Err(NetrcError::TooLarge { len: text.len() });
    }
    let mut content_len = 0usize;
    for (index, line) in text
        .as_bytes()
        .split_inclusive(|&byte| byte == b'\n')
        .enumerate()
    {
        let line_number = index + 1;
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        if body.len() > MAX_LINE_LEN {
            return Err(NetrcError::LineTooLong { line: line_number });
        }
        if body.contains(&0) {
            return Err(NetrcError::Nul { line: line_number });
        }
        let carriage_returns = body.iter().filter(|&&byte| byte == b'\r').count();
        let ends_with_crlf = line.ends_with(b"\r\n");
        if carriage_returns > usize::from(ends_with_crlf) {
            return Err(NetrcError::LoneCarriageReturn { line: line_number });
        }
        if !is_comment_line(body) {
            content_len += body.len() + 1;
        }
    }
    if content_len > MAX_CONTENT_LEN {
        return Err(NetrcError::ContentTooLarge);
    }
    Ok(())
}

/// One word of the file: `start..end` covers the quotes of a quoted word.
#[derive(Debug, Clone, Copy)]
struct Word {
    start: usize,
    end: usize,
    quoted: bool,
}

enum Item {
    Word(Word),
    /// A comment line starting at this offset.
    Comment(usize),
    /// A `#` after other words on its line.
    MisplacedHash(usize),
    End,
}

/// An entry being read.
struct Building {
    stanza: Stanza,
    is_default: bool,
    start: usize,
    last_word_end: usize,
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    position: usize,
    /// How far Python's netrc lexer has read when it reaches the current position: it eats
    /// one character after an unquoted word, nothing after a quoted one, and whole lines when
    /// it skips a comment or a macro. Its comment handling depends on whether a line end lies
    /// between this and the next `#` (see [`Parser::comment`]).
    python_position: usize,
    /// Whether the whitespace at `position` directly follows a word (a CR may only be there).
    follows_word: bool,
    /// The last offset asked for in [`Parser::line`], and its line.
    line_cache: Cell<(usize, usize)>,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            text,
            bytes: text.as_bytes(),
            position: 0,
            python_position: 0,
            follows_word: false,
            line_cache: Cell::new((0, 1)),
        }
    }

    /// The line of `offset`. Counting from the last answer keeps a whole parse linear, as
    /// offsets mostly grow.
    fn line(&self, offset: usize) -> usize {
        let offset = offset.min(self.bytes.len());
        let (known_offset, known_line) = self.line_cache.get();
        if offset < known_offset {
            return line_number(self.bytes, offset);
        }
        let line = known_line + line_number(&self.bytes[known_offset..offset], usize::MAX) - 1;
        self.line_cache.set((offset, line));
        line
    }

    fn run(mut self) -> Result<Netrc, NetrcError> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut default: Option<Entry> = None;
        let mut current: Option<Building> = None;
        loop {
            let word = match self.next_item()? {
                Item::End => break,
                Item::Comment(start) => {
                    let top_level = current.is_none() && entries.is_empty() && default.is_none();
                    self.comment(start, top_level)?;
                    continue;
                }
                Item::MisplacedHash(start) => {
                    return Err(NetrcError::CommentNotAlone {
                        line: self.line(start),
                    });
                }
                Item::Word(word) => word,
            };
            let text = self.text;
            let line = self.line(word.start);
            if word.quoted {
                return Err(NetrcError::QuotedKeyword { line });
            }
            let in_default = default.is_some() || current.as_ref().is_some_and(|c| c.is_default);
            match &text[word.start..word.end] {
                "machine" => {
                    if in_default {
                        return Err(NetrcError::MachineAfterDefault { line });
                    }
                    self.finish(current.take(), &mut entries, &mut default);
                    let name = self.value(Field::MachineName, line)?;
                    let machine = self.word_text(name);
                    check_not_keyword(&machine, Field::MachineName, self.line(name.start))?;
                    current = Some(Building {
                        stanza: Stanza::new(machine),
                        is_default: false,
                        start: word.start,
                        last_word_end: name.end,
                    });
                }
                "default" => {
                    if in_default {
                        return Err(NetrcError::SecondDefault { line });
                    }
                    self.finish(current.take(), &mut entries, &mut default);
                    current = Some(Building {
                        stanza: Stanza::new(String::new()),
                        is_default: true,
                        start: word.start,
                        last_word_end: word.end,
                    });
                }
                "macdef" => {
                    if current.is_some() || !entries.is_empty() || default.is_some() {
                        return Err(NetrcError::MacroAfterEntry { line });
                    }
                    self.macro_definition(word)?;
                }
                key @ ("login" | "password" | "account") => {
                    let Some(building) = current.as_mut() else {
                        return Err(NetrcError::UnexpectedWord { line });
                    };
                    let field = match key {
                        "login" => Field::Login,
                        "password" => Field::Password,
                        _ => Field::Account,
                    };
                    let stanza = &mut building.stanza;
                    let present = match field {
                        Field::Login => stanza.login.is_some(),
                        Field::Password => stanza.password.is_some(),
                        _ => stanza.account.is_some(),
                    };
                    if present {
                        return Err(NetrcError::DuplicateKey { line, field });
                    }
                    let value = self.value(field, line)?;
                    let value_line = self.line(value.start);
                    match field {
                        Field::Login => {
                            let login = self.word_text(value);
                            check_not_keyword(&login, field, value_line)?;
                            stanza.login = Some(login);
                        }
                        _ => {
                            // Wrapped before anything else looks at it.
                            let secret = SecretString::from(self.word_text(value));
                            check_not_keyword(secret.expose_secret(), field, value_line)?;
                            if field == Field::Password {
                                stanza.password = Some(secret);
                            } else {
                                stanza.account = Some(secret);
                            }
                        }
                    }
                    building.last_word_end = value.end;
                }
                "user" if current.is_some() => return Err(NetrcError::UserKey { line }),
                _ if current.is_some() => return Err(NetrcError::UnexpectedKey { line }),
                _ => return Err(NetrcError::UnexpectedWord { line }),
            }
        }
        self.finish(current.take(), &mut entries, &mut default);
        Ok(Netrc { entries, default })
    }

    fn finish(
        &self,
        building: Option<Building>,
        entries: &mut Vec<Entry>,
        default: &mut Option<Entry>,
    ) {
        let Some(building) = building else {
            return;
        };
        let entry = Entry {
            stanza: building.stanza,
            span: building.start..trailing_end(self.bytes, building.last_word_end),
            last_word_end: building.last_word_end,
        };
        if building.is_default {
            *default = Some(entry);
        } else {
            entries.push(entry);
        }
    }

    /// Reads the value after a key (or the name after `machine`), which was on `key_line`.
    fn value(&mut self, field: Field, key_line: usize) -> Result<Word, NetrcError> {
        let word = match self.next_item()? {
            Item::Word(word) => word,
            Item::End | Item::Comment(_) => {
                return Err(NetrcError::MissingValue {
                    line: key_line,
                    field,
                });
            }
            Item::MisplacedHash(start) => {
                return Err(NetrcError::HashValue {
                    line: self.line(start),
                    field,
                });
            }
        };
        let raw = &self.text[word.start..word.end];
        // `login` followed straight by `password` is a missing login far more often than a
        // login named "password".
        if !word.quoted && KEYWORDS.contains(&raw) {
            return Err(NetrcError::MissingValue {
                line: key_line,
                field,
            });
        }
        if word.quoted && raw.len() == 2 {
            return Err(NetrcError::EmptyValue {
                line: self.line(word.start),
                field,
            });
        }
        Ok(word)
    }

    /// The text of a word, unquoted, in a string of exactly its length (so turning it into a
    /// secret does not reallocate and leave a copy behind).
    fn word_text(&self, word: Word) -> String {
        if !word.quoted {
            return self.text[word.start..word.end].to_owned();
        }
        let inner = &self.text[word.start + 1..word.end - 1];
        let mut escapes = 0;
        let mut bytes = inner.bytes();
        while let Some(byte) = bytes.next() {
            if byte == b'\\' {
                escapes += 1;
                bytes.next();
            }
        }
        let mut text = String::with_capacity(inner.len() - escapes);
        let mut rest = inner;
        while let Some(index) = rest.find('\\') {
            text.push_str(&rest[..index]);
            // Escapes were checked by the lexer: a backslash is followed by `"` or `\`.
            let escaped = &rest[index + 1..];
            let next = escaped.get(..1).unwrap_or("");
            text.push_str(next);
            rest = &escaped[next.len()..];
        }
        text.push_str(rest);
        text
    }

    /// The next word, comment line or the end of the file, after skipping blanks and line ends.
    fn next_item(&mut self) -> Result<Item, NetrcError> {
        self.skip_whitespace()?;
        let start = self.position;
        let Some(&first) = self.bytes.get(start) else {
            return Ok(Item::End);
        };
        if first == b'#' {
            return Ok(if blank_line_start(self.text, start).is_some() {
                Item::Comment(start)
            } else {
                Item::MisplacedHash(start)
            });
        }
        let word = if first == b'"' {
            self.quoted_word()?
        } else {
            self.bare_word()?
        };
        self.follows_word = true;
        self.python_position = if word.quoted {
            word.end
        } else {
            match self.bytes.get(word.end) {
                None => word.end,
                // Python reads text with universal newlines: CRLF is one character.
                Some(b'\r') => word.end + 2,
                Some(_) => word.end + 1,
            }
        };
        Ok(Item::Word(word))
    }

    fn skip_whitespace(&mut self) -> Result<(), NetrcError> {
        let run_start = self.position;
        let follows_word = std::mem::take(&mut self.follows_word);
        while let Some(&byte) = self.bytes.get(self.position) {
            match byte {
                b' ' | b'\t' | b'\n' => self.position += 1,
                b'\r' => {
                    // check_lines made sure an LF follows.
                    if !(follows_word && self.position == run_start) {
                        return Err(NetrcError::BlankBeforeCrLf {
                            line: self.line(self.position),
                        });
                    }
                    self.position += 1;
                }
                _ => break,
            }
        }
        Ok(())
    }

    fn bare_word(&mut self) -> Result<Word, NetrcError> {
        let start = self.position;
        while let Some(&byte) = self.bytes.get(self.position) {
            match byte {
                b' ' | b'\t' | b'\n' | b'\r' => break,
                b'\\' => {
                    return Err(NetrcError::BackslashOutsideQuotes {
                        line: self.line(self.position),
                    });
                }
                0x00..=0x1f | 0x7f => {
                    return Err(NetrcError::ControlCharacter {
                        line: self.line(self.position),
                    });
                }
                0x80..=0xff => {
                    return Err(NetrcError::NonAsciiOutsideQuotes {
                        line: self.line(self.position),
                    });
                }
                _ => self.position += 1,
            }
        }
        if self.position - start > MAX_WORD_LEN {
            return Err(NetrcError::WordTooLong {
                line: self.line(start),
            });
        }
        Ok(Word {
            start,
            end: self.position,
            quoted: false,
        })
    }

    fn quoted_word(&mut self) -> Result<Word, NetrcError> {
        let start = self.position;
        let line = self.line(start);
        let mut position = start + 1;
        let mut unquoted_len = 0usize;
        loop {
            match self.bytes.get(position) {
                None => return Err(NetrcError::UnterminatedQuote { line }),
                Some(b'"') => break,
                Some(b'\\') => match self.bytes.get(position + 1) {
                    Some(b'"' | b'\\') => position += 2,
                    None => return Err(NetrcError::UnterminatedQuote { line }),
                    Some(_) => return Err(NetrcError::BadEscape { line }),
                },
                Some(b'\n' | b'\r') => return Err(NetrcError::QuoteAcrossLines { line }),
                Some(&byte) if byte != b'\t' && (byte < 0x20 || byte == 0x7f) => {
                    return Err(NetrcError::ControlCharacter { line });
                }
                Some(_) => position += 1,
            }
            unquoted_len += 1;
        }
        let end = position + 1;
        if !matches!(
            self.bytes.get(end),
            None | Some(b' ' | b'\t' | b'\n' | b'\r')
        ) {
            return Err(NetrcError::QuoteNotSeparated { line });
        }
        if unquoted_len > MAX_WORD_LEN {
            return Err(NetrcError::WordTooLong { line });
        }
        self.position = end;
        Ok(Word {
            start,
            end,
            quoted: true,
        })
    }

    /// Skips a comment line starting at `start`, refusing the ones Python's netrc lexer
    /// misreads. Python reads the comment's first word as a token; it then skips the rest of
    /// the line only if no line end was read while looking for that token and, before the
    /// first entry, only if the token is a lone `#`. Otherwise it goes on reading the rest of
    /// the line as netrc words, which is harmless only when there are none.
    fn comment(&mut self, start: usize, top_level: bool) -> Result<(), NetrcError> {
        let bytes = self.bytes;
        let line = self.line(start);
        let line_end = bytes[start..]
            .iter()
            .position(|&byte| byte == b'\n')
            .map_or(bytes.len(), |index| start + index);
        let next_line = (line_end + 1).min(bytes.len());
        let content_end = if line_end > start && bytes[line_end - 1] == b'\r' {
            line_end - 1
        } else {
            line_end
        };
        let first_word_end = bytes[start..content_end]
            .iter()
            .position(|&byte| is_blank(byte))
            .map_or(content_end, |index| start + index);
        let first_word = &bytes[start..first_word_end];
        if first_word.contains(&b'\\') {
            return Err(NetrcError::PythonComment {
                line,
                trap: CommentTrap::Backslash,
            });
        }
        let line_end_skipped = bytes[self.python_position.min(start)..start].contains(&b'\n');
        let more_words = bytes[first_word_end..content_end]
            .iter()
            .any(|&byte| !is_blank(byte));
        let lone_hash = first_word == b"#";
        if more_words && line_end_skipped {
            return Err(NetrcError::PythonComment {
                line,
                trap: CommentTrap::AfterLineBreak,
            });
        }
        if more_words && top_level && !lone_hash {
            return Err(NetrcError::PythonComment {
                line,
                trap: CommentTrap::FirstWordNotHash,
            });
        }
        let word_ends_line = first_word_end == content_end;
        let python_skips_line = !line_end_skipped && !word_ends_line && (!top_level || lone_hash);
        self.python_position = if python_skips_line || word_ends_line {
            next_line
        } else {
            // Python stopped after the blank that ends the first word.
            first_word_end + 1
        };
        self.position = next_line;
        self.follows_word = false;
        Ok(())
    }

    /// Reads `macdef NAME` and the macro body after it, up to and including its empty line.
    fn macro_definition(&mut self, keyword: Word) -> Result<(), NetrcError> {
        let line = self.line(keyword.start);
        let mut position = keyword.end;
        while self.bytes.get(position).copied().is_some_and(is_blank) {
            position += 1;
        }
        match self.bytes.get(position) {
            None | Some(b'\n' | b'\r') => {
                return Err(NetrcError::MissingValue {
                    line,
                    field: Field::MacroName,
                });
            }
            // Python would end a quoted name at its closing quote and take the rest of the
            // line as the first body line.
            Some(b'"') => return Err(NetrcError::MacroNameNotAlone { line }),
            Some(_) => {}
        }
        self.position = position;
        let name = self.bare_word()?;
        let mut position = match self.bytes.get(name.end) {
            Some(b'\n') => name.end + 1,
            Some(b'\r') => name.end + 2,
            None => return Err(NetrcError::UnterminatedMacro { line }),
            Some(_) => return Err(NetrcError::MacroNameNotAlone { line }),
        };
        loop {
            if position >= self.bytes.len() {
                return Err(NetrcError::UnterminatedMacro { line });
            }
            let line_end = self.bytes[position..]
                .iter()
                .position(|&byte| byte == b'\n')
                .map_or(self.bytes.len(), |index| position + index);
            let content = &self.bytes[position..line_end];
            let content = content.strip_suffix(b"\r").unwrap_or(content);
            let next_line = (line_end + 1).min(self.bytes.len());
            if content.is_empty() {
                position = next_line;
                break;
            }
            if content.iter().all(|&byte| is_blank(byte)) {
                return Err(NetrcError::BlankLineInMacro {
                    line: self.line(position),
                });
            }
            position = next_line;
        }
        self.position = position;
        self.python_position = position;
        self.follows_word = false;
        Ok(())
    }
}

fn check_not_keyword(value: &str, field: Field, line: usize) -> Result<(), NetrcError> {
    if is_keyword(value) {
        return Err(NetrcError::KeywordValue { line, field });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(machine: &str, login: Option<&str>, password: Option<&str>) -> Stanza {
        Stanza {
            machine: machine.to_owned(),
            login: login.map(str::to_owned),
            password: password.map(SecretString::from),
            account: None,
        }
    }

    fn exposed(value: &Option<SecretString>) -> Option<&str> {
        value.as_ref().map(|value| value.expose_secret())
    }

    /// The machine's login, password and account, as plain text for comparisons.
    fn values(
        netrc: &Netrc,
        name: &str,
    ) -> Option<(Option<String>, Option<String>, Option<String>)> {
        netrc.machine(name).map(|stanza| {
            (
                stanza.login.clone(),
                exposed(&stanza.password).map(str::to_owned),
                exposed(&stanza.account).map(str::to_owned),
            )
        })
    }

    fn owned(
        login: &str,
        password: &str,
    ) -> Option<(Option<String>, Option<String>, Option<String>)> {
        Some((Some(login.to_owned()), Some(password.to_owned()), None))
    }

    fn merged(existing: &str, stanza: &Stanza) -> String {
        match merge(existing, stanza) {
            Ok(text) => text.expose_secret().to_owned(),
            Err(error) => panic!("merge refused {existing:?}: {error}"),
        }
    }

    fn refusal(text: &str) -> NetrcError {
        match parse(text) {
            Ok(_) => panic!("accepted {text:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn lookup_returns_the_first_of_duplicate_entries() {
        let netrc =
            parse("machine a login first password one\nmachine a login second password two\n")
                .expect("parses");
        assert_eq!(values(&netrc, "a"), owned("first", "one"));
        assert_eq!(netrc.machines().collect::<Vec<_>>(), ["a", "a"]);
        assert_eq!(netrc.span("a"), Some(0..35));
    }

    #[test]
    fn lookup_ignores_ascii_case_like_curl() {
        let netrc = parse("machine API.Example.com login me password pw\nmachine api.example.com login late password x\n")
            .expect("parses");
        assert_eq!(values(&netrc, "api.example.COM"), owned("me", "pw"));
        assert_eq!(
            netrc.machine("api.example.com").map(|s| s.machine),
            Some("API.Example.com".to_owned())
        );
        assert!(netrc.machine("example.com").is_none());
    }

    #[test]
    fn lookup_does_not_fall_back_to_default() {
        let netrc = parse("machine a login b password c\ndefault login anonymous password guest\n")
            .expect("parses");
        assert!(netrc.has_default());
        assert!(netrc.machine("elsewhere").is_none());
        assert_eq!(netrc.machines().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn reads_every_layout_python_and_curl_agree_on() {
        let text = "# credentials\nmachine one.example login ann password a1 account acct\n\
                    machine host:8080\n  login bob\n  password\n    b2\n\
                    machine q login \"carol smith\" password \"say \\\"hi\\\" \\\\o/\"\n\
                    machine tabs\tlogin\tdan\tpassword\td4\n\
                    default login anonymous password guest\n";
        let netrc = parse(text).expect("parses");
        assert_eq!(
            values(&netrc, "one.example"),
            Some((Some("ann".into()), Some("a1".into()), Some("acct".into())))
        );
        assert_eq!(values(&netrc, "host:8080"), owned("bob", "b2"));
        assert_eq!(values(&netrc, "q"), owned("carol smith", "say \"hi\" \\o/"));
        assert_eq!(values(&netrc, "tabs"), owned("dan", "d4"));
        let keyless = parse("machine bare\n").expect("parses");
        assert_eq!(values(&keyless, "bare"), Some((None, None, None)));
        assert!(parse("").expect("empty parses").machines().next().is_none());
        assert!(parse("\n \n\t\n").is_ok());
    }

    #[test]
    fn spans_end_before_the_next_line_with_text() {
        let text = "machine a login b password c  \n\n  #about-d\nmachine d login e password f";
        let netrc = parse(text).expect("parses");
        assert_eq!(
            netrc.span("a").map(|span| &text[span]),
            Some("machine a login b password c  \n\n")
        );
        assert_eq!(
            netrc.span("d").map(|span| &text[span]),
            Some("machine d login e password f")
        );
        let one_line = "machine a login b password c machine d login e password f\n";
        let netrc = parse(one_line).expect("parses");
        assert_eq!(
            netrc.span("a").map(|span| &one_line[span]),
            Some("machine a login b password c ")
        );
    }

    #[test]
    fn debug_output_redacts_password_and_account() {
        let netrc = parse("machine a login user password hunter2secret account acct9secret\n")
            .expect("parses");
        let stanza = netrc.machine("a").expect("present");
        for debug in [
            format!("{stanza:?}"),
            format!("{netrc:?}"),
            format!("{stanza:#?}"),
        ] {
            assert!(!debug.contains("hunter2secret"), "{debug}");
            assert!(!debug.contains("acct9secret"), "{debug}");
            assert!(debug.contains("[REDACTED]"), "{debug}");
        }
        assert!(format!("{stanza:?}").contains("user"));
    }

    #[test]
    fn refusals_say_what_and_on_which_line() {
        use NetrcError::*;
        let cases: Vec<(&str, NetrcError)> = vec![
            (
                "machine a login b password \"open\n",
                QuoteAcrossLines { line: 1 },
            ),
            (
                "machine a login b password \"open",
                UnterminatedQuote { line: 1 },
            ),
            (
                "machine a\n login b\n password \"a\\nb\"\n",
                BadEscape { line: 3 },
            ),
            ("machine a password \"x\"y\n", QuoteNotSeparated { line: 1 }),
            (
                "machine a password x\\y\n",
                BackslashOutsideQuotes { line: 1 },
            ),
            (
                "machine a password caf\u{e9}\n",
                NonAsciiOutsideQuotes { line: 1 },
            ),
            ("machine a password a\u{b}b\n", ControlCharacter { line: 1 }),
            (
                "machine a password \"a\u{1}b\"\n",
                ControlCharacter { line: 1 },
            ),
            (
                "machine a login\n",
                MissingValue {
                    line: 1,
                    field: Field::Login,
                },
            ),
            (
                "machine a login\nmachine b\n",
                MissingValue {
                    line: 1,
                    field: Field::Login,
                },
            ),
            (
                "machine a password\n# note\n",
                MissingValue {
                    line: 1,
                    field: Field::Password,
                },
            ),
            (
                "machine\n",
                MissingValue {
                    line: 1,
                    field: Field::MachineName,
                },
            ),
            (
                "machine a password \"\"\n",
                EmptyValue {
                    line: 1,
                    field: Field::Password,
                },
            ),
            (
                "machine a login \"Machine\"\n",
                KeywordValue {
                    line: 1,
                    field: Field::Login,
                },
            ),
            (
                "machine a account Password\n",
                KeywordValue {
                    line: 1,
                    field: Field::Account,
                },
            ),
            (
                "machine \"default\"\n",
                KeywordValue {
                    line: 1,
                    field: Field::MachineName,
                },
            ),
            (
                "machine a password #x\n",
                HashValue {
                    line: 1,
                    field: Field::Password,
                },
            ),
            ("login a\n", UnexpectedWord { line: 1 }),
            ("machine a login b port 22\n", UnexpectedKey { line: 1 }),
            (
                "machine a login b password c d\n",
                UnexpectedKey { line: 1 },
            ),
            ("machine a\nuser b\n", UserKey { line: 2 }),
            ("machine a \"login\" b\n", QuotedKeyword { line: 1 }),
            (
                "machine a login b login c\n",
                DuplicateKey {
                    line: 1,
                    field: Field::Login,
                },
            ),
            ("machine a login b # note\n", CommentNotAlone { line: 1 }),
            (
                "default login x\nmachine a\n",
                MachineAfterDefault { line: 2 },
            ),
            ("default\ndefault\n", SecondDefault { line: 2 }),
            ("machine a\nmacdef m\nx\n\n", MacroAfterEntry { line: 2 }),
            (
                "macdef\n",
                MissingValue {
                    line: 1,
                    field: Field::MacroName,
                },
            ),
            ("macdef m x\nbody\n\n", MacroNameNotAlone { line: 1 }),
            ("macdef m \nbody\n\n", MacroNameNotAlone { line: 1 }),
            ("macdef \"m\"\nbody\n\n", MacroNameNotAlone { line: 1 }),
            ("macdef m\nbody\n", UnterminatedMacro { line: 1 }),
            ("macdef m", UnterminatedMacro { line: 1 }),
            ("macdef m\nbody\n  \nmore\n\n", BlankLineInMacro { line: 3 }),
            ("machine a\rlogin b\n", LoneCarriageReturn { line: 1 }),
            (
                "machine a\r\n\r\nmachine b\r\n",
                BlankBeforeCrLf { line: 2 },
            ),
            ("machine a login b \r\n", BlankBeforeCrLf { line: 1 }),
            ("machine a\0\n", Nul { line: 1 }),
        ];
        for (text, expected) in cases {
            assert_eq!(refusal(text), expected, "for {text:?}");
        }
    }

    #[test]
    fn comments_python_misreads_are_refused() {
        use CommentTrap::*;
        let trap = |text: &str| match refusal(text) {
            NetrcError::PythonComment { line, trap } => (line, trap),
            other => panic!("{text:?}: {other}"),
        };
        assert_eq!(
            trap("machine a login b password c\n\n# two words\n"),
            (3, AfterLineBreak)
        );
        assert_eq!(
            trap("machine a login b password c \n# two words\n"),
            (2, AfterLineBreak)
        );
        assert_eq!(
            trap("machine a password \"c d\"\n# two words\n"),
            (2, AfterLineBreak)
        );
        assert_eq!(trap("\n# two words\nmachine a\n"), (2, AfterLineBreak));
        assert_eq!(trap("#two words\nmachine a\n"), (1, FirstWordNotHash));
        assert_eq!(trap("# one\n\n# two words\n"), (3, AfterLineBreak));
        assert_eq!(trap("machine a\n#x\\ y\n"), (2, Backslash));
    }

    #[test]
    fn comments_python_reads_are_accepted() {
        for text in [
            "# credentials for the lab\n# second line\nmachine a login b password c\n",
            "#\n\n#\nmachine a\n",
            "#single\nmachine a\n",
            "machine a login b password c\n# after a value\n  #indented words here\nmachine d\n",
            "machine a login b password c\n\n#oneword\nmachine d\n",
            "machine a login b\n#inside the entry, words\n password c\n",
            "machine a password \"c d\"\n#oneword\n",
            "machine a login b\r\n# crlf comment\r\n",
            "# comment at the end without line end",
            "macdef m\nbody\n\n# after a macro\nmachine a\n",
        ] {
            assert!(
                parse(text).is_ok(),
                "refused {text:?}: {:?}",
                parse(text).err()
            );
        }
    }

    #[test]
    fn crlf_files_without_blank_lines_are_read() {
        let text =
            "machine a\r\n  login b\r\n  password \"c d\"\r\nmachine e login f password g\r\n";
        let netrc = parse(text).expect("parses");
        assert_eq!(values(&netrc, "a"), owned("b", "c d"));
        assert_eq!(values(&netrc, "e"), owned("f", "g"));
        assert!(parse("macdef m\r\nbody\r\n\r\nmachine a\r\n").is_ok());
    }

    #[test]
    fn macro_bodies_are_not_read_as_words() {
        let text = "macdef init\ncd /pub\nmachine evil login x password y\n\nmachine a login b password c\n";
        let netrc = parse(text).expect("parses");
        assert_eq!(netrc.machines().collect::<Vec<_>>(), ["a"]);
        assert!(parse("macdef m\n\nmacdef n\n\"unbalanced \\ body\u{e9}\n\n").is_ok());
    }

    #[test]
    fn limits_follow_curl() {
        let long_word = format!("machine a password {}\n", "x".repeat(MAX_WORD_LEN + 1));
        assert_eq!(refusal(&long_word), NetrcError::WordTooLong { line: 1 });
        let word = format!("machine a password {}\n", "x".repeat(MAX_WORD_LEN));
        assert!(parse(&word).is_ok());
        let long_quoted = format!(
            "machine a password \"{}\"\n",
            "\\\\".repeat(MAX_WORD_LEN + 1)
        );
        assert_eq!(refusal(&long_quoted), NetrcError::WordTooLong { line: 1 });
        let long_line = format!("\n# {}\n", "x".repeat(MAX_LINE_LEN));
        assert_eq!(refusal(&long_line), NetrcError::LineTooLong { line: 2 });
        let many = "machine a login b password c\n".repeat(MAX_CONTENT_LEN / 29 + 1);
        assert_eq!(refusal(&many), NetrcError::ContentTooLarge);
        let comments = "# a long comment line that curl drops on load\n".repeat(20_000);
        assert!(parse(&comments).is_ok());
        let huge = "#".repeat(MAX_INPUT_LEN + 1);
        assert_eq!(
            refusal(&huge),
            NetrcError::TooLarge {
                len: MAX_INPUT_LEN + 1
            }
        );
        assert!(matches!(
            merge(&huge, &entry("a", None, None)),
            Err(NetrcError::TooLarge { .. })
        ));
    }

    #[test]
    fn decode_checks_size_and_encoding() {
        assert_eq!(decode(b"machine a\n"), Ok("machine a\n"));
        assert_eq!(
            decode(b"machine a\nlogin \xff\n"),
            Err(NetrcError::InvalidUtf8 { line: 2 })
        );
        assert!(matches!(
            decode(&vec![b'#'; MAX_INPUT_LEN + 1]),
            Err(NetrcError::TooLarge { .. })
        ));
    }

    #[test]
    fn render_writes_the_canonical_form() {
        let mut stanza = entry("api.wandb.ai", Some("user"), Some("KEY-123"));
        let rendered = render_stanza(&stanza).expect("renders");
        assert_eq!(
            rendered.expose_secret(),
            "machine api.wandb.ai\n  login user\n  password KEY-123\n"
        );
        stanza.account = Some(SecretString::from("acct"));
        stanza.login = None;
        let rendered = render_stanza(&stanza).expect("renders");
        assert_eq!(
            rendered.expose_secret(),
            "machine api.wandb.ai\n  password KEY-123\n  account acct\n"
        );
        let punctuation = entry("h", Some("me@example.com"), Some("p\"a#ss:w0rd!"));
        assert!(render_stanza(&punctuation).is_ok());
    }

    #[test]
    fn render_refuses_values_naming_the_field_only() {
        let password = "hunter2 secret";
        let cases = [
            (entry("", None, None), Field::MachineName),
            (entry("host name", None, None), Field::MachineName),
            (entry("default", None, None), Field::MachineName),
            (entry("h", Some(""), None), Field::Login),
            (entry("h", Some("LOGIN"), None), Field::Login),
            (entry("h", Some("me"), Some(password)), Field::Password),
            (entry("h", None, Some("#hunter2")), Field::Password),
            (entry("h", None, Some("\"hunter2")), Field::Password),
            (entry("h", None, Some("hunter2\\x")), Field::Password),
            (entry("h", None, Some("hunter2\n")), Field::Password),
            (entry("h", None, Some("hunter2\u{e9}")), Field::Password),
            (
                entry("h", None, Some(&"h".repeat(MAX_WORD_LEN + 1))),
                Field::Password,
            ),
        ];
        for (stanza, expected) in cases {
            match render_stanza(&stanza) {
                Err(error @ NetrcError::UnwritableValue { field, .. }) => {
                    assert_eq!(field, expected, "{stanza:?}");
                    assert!(!error.to_string().contains("hunter2"), "{error}");
                    assert!(error.to_string().starts_with(&format!("the {expected} ")));
                }
                other => panic!("{stanza:?}: {other:?}"),
            }
        }
        let mut account = entry("h", None, None);
        account.account = Some(SecretString::from("two words"));
        assert!(matches!(
            render_stanza(&account),
            Err(NetrcError::UnwritableValue {
                field: Field::Account,
                ..
            })
        ));
    }

    #[test]
    fn errors_convert_to_config_errors_with_hints() {
        let error: Error = refusal("machine a login b # note\n").into();
        assert_eq!(error.kind(), crate::error::ErrorKind::Config);
        assert_eq!(
            error.message(),
            "line 1: a comment after other words on the line"
        );
        assert_eq!(error.hint(), Some("move the comment to a line of its own"));
        let nested = NetrcError::MergedInvalid(Box::new(NetrcError::UserKey { line: 3 }));
        assert_eq!(nested.hint(), Some("write `login` instead of `user`"));
    }

    #[test]
    fn merge_replaces_appends_or_inserts_before_default() {
        let new = entry("a", Some("me"), Some("NEW"));
        assert_eq!(merged("", &new), "machine a\n  login me\n  password NEW\n");
        assert_eq!(
            merged(" \n\r\n", &new),
            "machine a\n  login me\n  password NEW\n"
        );
        assert_eq!(
            merged("machine x login y password z", &new),
            "machine x login y password z\nmachine a\n  login me\n  password NEW\n"
        );
        assert_eq!(
            merged("machine x login y password z  ", &new),
            "machine x login y password z  \nmachine a\n  login me\n  password NEW\n"
        );
        assert_eq!(
            merged(
                "machine x login y\n  # the fallback\ndefault login d\n",
                &new
            ),
            "machine x login y\nmachine a\n  login me\n  password NEW\n  # the fallback\ndefault login d\n"
        );
        assert_eq!(
            merged("machine x login y default login d\n", &new),
            "machine x login y machine a\n  login me\n  password NEW\ndefault login d\n"
        );
        assert_eq!(
            merged("machine A login old password OLD\n\n\nmachine b\n", &new),
            "machine a\n  login me\n  password NEW\n\n\nmachine b\n"
        );
    }

    #[test]
    fn merge_removes_later_duplicates_keeping_lines_whole() {
        let new = entry("a", Some("me"), Some("NEW"));
        let rendered = "machine a\n  login me\n  password NEW\n";
        assert_eq!(
            merged(
                "machine a login 1\n  machine a login 2\n\nmachine b\n",
                &new
            ),
            format!("{rendered}\nmachine b\n")
        );
        assert_eq!(
            merged("machine a login 1\n\n\nmachine a login 2\n# after\n", &new),
            format!("{rendered}# after\n")
        );
        assert_eq!(
            merged(
                "machine a login 1 machine a login 2\n# after\nmachine b\n",
                &new
            ),
            format!("{rendered}# after\nmachine b\n")
        );
        assert_eq!(
            merged(
                "machine a login 1\nmachine x login y machine a login 2\n# after\n",
                &new
            ),
            format!("{rendered}machine x login y\n# after\n")
        );
        assert_eq!(
            merged(
                "machine a login 1\nmachine x login y machine a login 2 machine z\n",
                &new
            ),
            format!("{rendered}machine x login y machine z\n")
        );
        assert_eq!(
            merged(
                "machine a login 1\nmachine x login y\n  machine a login 2",
                &new
            ),
            format!("{rendered}machine x login y\n")
        );
    }

    #[test]
    fn merge_refuses_a_file_that_does_not_parse() {
        let new = entry("a", Some("me"), Some("NEW"));
        assert_eq!(
            merge("machine b login c password \"open\n", &new).err(),
            Some(NetrcError::QuoteAcrossLines { line: 1 })
        );
        assert_eq!(
            merge("default\nmachine b\n", &new).err(),
            Some(NetrcError::MachineAfterDefault { line: 2 })
        );
        assert_eq!(
            merge("machine b login\n", &new).err(),
            Some(NetrcError::MissingValue {
                line: 1,
                field: Field::Login
            })
        );
    }

    #[test]
    fn merge_writes_crlf_into_crlf_files() {
        let new = entry("a", Some("me"), Some("NEW"));
        assert_eq!(
            merged(
                "machine x login y\r\nmachine a login old\r\nmachine z\r\n",
                &new
            ),
            "machine x login y\r\nmachine a\r\n  login me\r\n  password NEW\r\nmachine z\r\n"
        );
        assert_eq!(
            merged("machine x login y", &new.clone()),
            "machine x login y\nmachine a\n  login me\n  password NEW\n"
        );
        assert_eq!(
            merged("machine x login y\r\nmachine z", &new),
            "machine x login y\r\nmachine z\r\nmachine a\r\n  login me\r\n  password NEW\r\n"
        );
    }

    // ---- Properties ----

    /// Values every reader reads alike without quotes (what render accepts).
    fn plain_value() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_.:@!$%&*+=?/-][A-Za-z0-9_.:@!$%&*+=?/#\"-]{0,11}"
            .prop_filter("not a keyword", |value| !is_keyword(value))
    }

    /// Values that need quotes in a file.
    fn quoted_value() -> impl Strategy<Value = String> {
        "[a-z\"\\\\#][a-z \"\\\\\u{e9}]{0,8}"
            .prop_filter("not a keyword", |value| !is_keyword(value))
    }

    fn any_value() -> impl Strategy<Value = String> {
        prop_oneof![3 => plain_value(), 1 => quoted_value()]
    }

    fn machine_name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_owned()),
            Just("A".to_owned()),
            Just("api.wandb.ai".to_owned()),
            Just("host:8080".to_owned()),
            "[a-z][a-z0-9.-]{0,6}",
        ]
        .prop_filter("not a keyword", |name| !is_keyword(name))
    }

    #[derive(Debug, Clone)]
    struct ModelEntry {
        machine: String,
        login: Option<String>,
        password: Option<String>,
        account: Option<String>,
        /// 0: one line; 1: one key a line; 2: values on the line after their key.
        layout: u8,
        /// A comment line (of several words) before the entry.
        comment: bool,
        /// Blank lines before the entry.
        blank_lines: u8,
    }

    #[derive(Debug, Clone)]
    struct Model {
        macro_first: bool,
        entries: Vec<ModelEntry>,
        default: Option<(String, String)>,
        crlf: bool,
        final_line_end: bool,
    }

    fn write_value(out: &mut String, value: &str) {
        let needs_quotes = value.is_empty()
            || value.starts_with(['#', '"'])
            || value.contains([' ', '\t', '\\'])
            || !value.is_ascii();
        if needs_quotes {
            out.push('"');
            for character in value.chars() {
                if character == '"' || character == '\\' {
                    out.push('\\');
                }
                out.push(character);
            }
            out.push('"');
        } else {
            out.push_str(value);
        }
    }

    fn needs_quotes(value: &str) -> bool {
        value.starts_with(['#', '"']) || value.contains([' ', '\t', '\\']) || !value.is_ascii()
    }

    impl Model {
        /// The file's text. Comments only follow a line ending in an unquoted word, without
        /// blank lines between, so Python's netrc module reads them.
        fn text(&self) -> String {
            let mut out = String::new();
            let mut last_quoted = false;
            if self.macro_first {
                out.push_str(
                    "# macros first\nmacdef init\ncd /pub\necho machine login password\n\n",
                );
                last_quoted = false;
            }
            for entry in &self.entries {
                let blank_lines = if self.crlf { 0 } else { entry.blank_lines };
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push('\n');
                }
                for _ in 0..blank_lines {
                    out.push('\n');
                }
                if entry.comment && blank_lines == 0 && !last_quoted {
                    out.push_str("# note about the next entry\n");
                }
                out.push_str("machine ");
                out.push_str(&entry.machine);
                let keys = [
                    ("login", &entry.login),
                    ("password", &entry.password),
                    ("account", &entry.account),
                ];
                last_quoted = false;
                for (key, value) in keys {
                    let Some(value) = value else { continue };
                    out.push_str(match entry.layout {
                        0 => " ",
                        _ => "\n  ",
                    });
                    out.push_str(key);
                    out.push_str(if entry.layout == 2 { "\n    " } else { " " });
                    write_value(&mut out, value);
                    last_quoted = needs_quotes(value);
                }
            }
            if let Some((login, password)) = &self.default {
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str("default login ");
                out.push_str(login);
                out.push_str(" password ");
                out.push_str(password);
            }
            if self.final_line_end && !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            if self.crlf {
                out = out.replace('\n', "\r\n");
            }
            out
        }

        /// What lookup must return: the first entry for the name, ignoring case.
        fn lookup(&self, name: &str) -> Option<&ModelEntry> {
            self.entries
                .iter()
                .find(|entry| entry.machine.eq_ignore_ascii_case(name))
        }
    }

    fn model_entry() -> impl Strategy<Value = ModelEntry> {
        (
            machine_name(),
            proptest::option::of(any_value()),
            proptest::option::of(any_value()),
            proptest::option::weighted(0.2, any_value()),
            0u8..3,
            any::<bool>(),
            0u8..3,
        )
            .prop_map(
                |(machine, login, password, account, layout, comment, blank_lines)| ModelEntry {
                    machine,
                    login,
                    password,
                    account,
                    layout,
                    comment,
                    blank_lines,
                },
            )
    }

    fn model() -> impl Strategy<Value = Model> {
        (
            any::<bool>(),
            proptest::collection::vec(model_entry(), 0..6),
            proptest::option::of((plain_value(), plain_value())),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(macro_first, entries, default, crlf, final_line_end)| Model {
                    macro_first,
                    entries,
                    default,
                    crlf,
                    final_line_end,
                },
            )
    }

    fn new_stanza() -> impl Strategy<Value = Stanza> {
        (
            machine_name(),
            proptest::option::of(plain_value()),
            plain_value(),
            proptest::option::weighted(0.2, plain_value()),
        )
            .prop_map(|(machine, login, password, account)| Stanza {
                machine,
                login,
                password: Some(SecretString::from(password)),
                account: account.map(SecretString::from),
            })
    }

    fn model_values(entry: &ModelEntry) -> (Option<String>, Option<String>, Option<String>) {
        (
            entry.login.clone(),
            entry.password.clone(),
            entry.account.clone(),
        )
    }

    fn stanza_values(stanza: &Stanza) -> (Option<String>, Option<String>, Option<String>) {
        (
            stanza.login.clone(),
            exposed(&stanza.password).map(str::to_owned),
            exposed(&stanza.account).map(str::to_owned),
        )
    }

    /// Short texts over netrc's own vocabulary, to reach deep into the parser.
    fn netrc_like() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("machine"),
                Just("default"),
                Just("macdef"),
                Just("login"),
                Just("password"),
                Just("account"),
                Just("user"),
                Just("a"),
                Just("b.c"),
                Just(" "),
                Just("\t"),
                Just("\n"),
                Just("\r\n"),
                Just("\r"),
                Just("\""),
                Just("\\"),
                Just("#"),
                Just("# x"),
                Just("\u{e9}"),
                Just("\u{0}"),
                Just("\u{b}"),
            ],
            0..40,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn parse_never_panics(text in prop_oneof![any::<String>(), netrc_like()]) {
            if let Ok(netrc) = parse(&text) {
                for name in netrc.machines() {
                    let span = netrc.span(name).expect("listed machines have spans");
                    prop_assert!(text.get(span).is_some());
                }
            }
            let _ = merge(&text, &entry("a", Some("me"), Some("pw")));
        }

        #[test]
        fn generated_files_parse_to_their_model(model in model()) {
            let text = model.text();
            let netrc = match parse(&text) {
                Ok(netrc) => netrc,
                Err(error) => return Err(TestCaseError::fail(format!("{error} in {text:?}"))),
            };
            for expected in &model.entries {
                let found = netrc.machine(&expected.machine).expect("present");
                let first = model.lookup(&expected.machine).expect("present");
                prop_assert_eq!(stanza_values(&found), model_values(first));
            }
            prop_assert_eq!(netrc.has_default(), model.default.is_some());
        }

        #[test]
        fn merge_sets_one_machine_and_keeps_the_others(model in model(), new in new_stanza()) {
            let text = model.text();
            let before = parse(&text).expect("generated files parse");
            let duplicates = model
                .entries
                .iter()
                .filter(|entry| entry.machine.eq_ignore_ascii_case(&new.machine))
                .count();
            let output = match merge(&text, &new) {
                Ok(output) => output,
                // Removing a duplicate can leave a comment after a quoted value, which Python
                // misreads; merge refuses that rather than writing it.
                Err(NetrcError::MergedInvalid(inner))
                    if duplicates > 1 && matches!(*inner, NetrcError::PythonComment { .. }) =>
                {
                    return Ok(());
                }
                Err(error) => return Err(TestCaseError::fail(format!("{error} in {text:?}"))),
            };
            let output = output.expose_secret();
            let after = parse(output).expect("merge output parses");
            let found = after.machine(&new.machine).expect("merged machine present");
            prop_assert_eq!(&found.machine, &new.machine);
            prop_assert_eq!(stanza_values(&found), stanza_values(&new));
            // Exactly one entry for the machine, so Python (last wins) agrees with curl.
            prop_assert_eq!(
                after.machines().filter(|name| name.eq_ignore_ascii_case(&new.machine)).count(),
                1
            );
            for name in before.machines().filter(|name| !name.eq_ignore_ascii_case(&new.machine)) {
                prop_assert_eq!(
                    after.machine(name).map(|s| stanza_values(&s)),
                    before.machine(name).map(|s| stanza_values(&s))
                );
                // The other entries are kept byte for byte.
                let span = before.span(name).expect("present");
                let kept = text[span].trim_end();
                prop_assert!(output.contains(kept), "{:?} lost from {:?}", kept, output);
            }
            prop_assert_eq!(after.has_default(), before.has_default());
            if before.has_default() {
                let default_at = output.rfind("default").expect("default kept");
                let machine_at = output.rfind("machine ").expect("entry present");
                prop_assert!(machine_at < default_at);
            }
            for comment in text.lines().filter(|line| line.trim_start().starts_with('#')) {
                prop_assert!(output.contains(comment));
            }
            // Merging the same entry again changes nothing.
            let again = merge(output, &new).expect("merges again");
            prop_assert_eq!(again.expose_secret(), output);
        }

        #[test]
        fn errors_never_contain_the_password(
            password in "[A-Za-z][A-Za-z0-9]{11,23}",
            template in 0usize..16,
            cut in any::<prop::sample::Index>(),
        ) {
            let texts = [
                format!("machine a login b password {password} bogus\n"),
                format!("machine a password {password}\nuser x\n"),
                format!("machine a password \"{password}"),
                format!("machine a password \"{password}\n\"\n"),
                format!("machine a password {password}\\x\n"),
                format!("password {password}\n"),
                format!("machine a login b password {password} # c\n"),
                format!("default login x password {password}\nmachine b\n"),
                format!("machine a password {password} password {password}\n"),
                format!("machine a password {password} \r\n"),
                format!("machine a password \"{password}\"x\n"),
                format!("machine a password {password}\u{e9}\n"),
                format!("machine a password \"{password}\\n\"\n"),
                format!("{password}\n"),
                format!("machine a password {password}\n\n# two words\n"),
                format!("machine a password my {password}\n"),
            ];
            let text = &texts[template];
            // Also the file cut short anywhere: the error must not quote what is left.
            let cut_at = cut.index(text.len() + 1);
            let prefix = text.get(..cut_at).unwrap_or(text);
            for candidate in [text.as_str(), prefix] {
                let mut errors = Vec::new();
                if let Err(error) = parse(candidate) {
                    errors.push(error);
                }
                if let Err(error) = merge(candidate, &entry("a", Some("me"), Some("pw"))) {
                    errors.push(error);
                }
                let bad = entry("b", Some("me"), Some(&format!("{password} x")));
                if let Err(error) = merge(candidate, &bad) {
                    errors.push(error);
                }
                for error in errors {
                    let converted: Error = error.clone().into();
                    for shown in [
                        error.to_string(),
                        format!("{error:?}"),
                        converted.to_string(),
                        format!("{converted:?}"),
                        converted.hint().unwrap_or_default().to_owned(),
                    ] {
                        prop_assert!(!shown.contains(&password), "{}", shown);
                    }
                }
            }
        }
    }
}
