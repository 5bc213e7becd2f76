//! The glob(3) that ssh expands `Include` patterns with. OpenSSH does not use the C library's:
//! it carries its own copy of OpenBSD's (`openbsd-compat/glob.c`), called with `GLOB_TILDE`
//! only, and that one differs from glibc's where configurations can notice. `[!...]` negates a
//! bracket expression but `^` is an ordinary member (`[^a]` is the set of `^` and `a`); a
//! leading `.` of a name is matched only by a literal `.` (never by `*`, `?` or a bracket); `\`
//! quotes the next character, inside brackets too; a bracket expression that is never closed,
//! or closed only by its first character, is a literal `[`; an unknown `[:class:]` makes the
//! whole pattern match nothing. Names are compared byte by byte, results sorted by bytes.
//!
//! This module reads directories and never opens files; the caller reads what it returns.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::PathBuf;

/// glibc's `PATH_MAX`: longer patterns match nothing, longer paths are an error, as in glob.c.
const PATH_MAX: usize = 4096;

/// One compiled element of a pattern (glob.c's `Char` with its `M_*` meta values).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(u8),
    /// `*`: any run of bytes, adjacent ones collapsed.
    Star,
    /// `?`: any one byte.
    One,
    Set {
        negated: bool,
        members: Vec<Member>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Member {
    Byte(u8),
    Range(u8, u8),
    Class(CharacterClass),
}

/// The classes of glob.c's `cclasses` table, tested in the C locale as ssh runs glob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CharacterClass {
    Alnum,
    Alpha,
    Blank,
    Cntrl,
    Digit,
    Graph,
    Lower,
    Print,
    Punct,
    Space,
    Upper,
    Xdigit,
}

impl CharacterClass {
    fn from_name(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"alnum" => CharacterClass::Alnum,
            b"alpha" => CharacterClass::Alpha,
            b"blank" => CharacterClass::Blank,
            b"cntrl" => CharacterClass::Cntrl,
            b"digit" => CharacterClass::Digit,
            b"graph" => CharacterClass::Graph,
            b"lower" => CharacterClass::Lower,
            b"print" => CharacterClass::Print,
            b"punct" => CharacterClass::Punct,
            b"space" => CharacterClass::Space,
            b"upper" => CharacterClass::Upper,
            b"xdigit" => CharacterClass::Xdigit,
            _ => return None,
        })
    }

    fn contains(self, byte: u8) -> bool {
        match self {
            CharacterClass::Alnum => byte.is_ascii_alphanumeric(),
            CharacterClass::Alpha => byte.is_ascii_alphabetic(),
            CharacterClass::Blank => byte == b' ' || byte == b'\t',
            CharacterClass::Cntrl => byte.is_ascii_control(),
            CharacterClass::Digit => byte.is_ascii_digit(),
            CharacterClass::Graph => byte.is_ascii_graphic(),
            CharacterClass::Lower => byte.is_ascii_lowercase(),
            CharacterClass::Print => byte.is_ascii_graphic() || byte == b' ',
            CharacterClass::Punct => byte.is_ascii_punctuation(),
            // isspace: the vertical tab counts, unlike in Rust's is_ascii_whitespace.
            CharacterClass::Space => matches!(byte, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'),
            CharacterClass::Upper => byte.is_ascii_uppercase(),
            CharacterClass::Xdigit => byte.is_ascii_hexdigit(),
        }
    }
}

/// A pattern byte and whether a `\` quoted it (glob.c's `M_PROTECT`): a quoted byte is never
/// special.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Quoted {
    byte: u8,
    protected: bool,
}

impl Quoted {
    fn is(self, byte: u8) -> bool {
        !self.protected && self.byte == byte
    }
}

/// Expands `pattern` as ssh's `glob(pattern, GLOB_TILDE, ...)` does. `home` is what a leading
/// `~` or `~/` stands for; `~user` is looked up in the passwd database. Paths come back sorted;
/// a pattern that matches nothing gives none. `Err` where glob.c fails: more than
/// `max_matches` paths, or one longer than `PATH_MAX`.
pub(crate) fn expand(
    pattern: &[u8],
    home: &[u8],
    max_matches: usize,
) -> Result<Vec<PathBuf>, String> {
    if pattern.len() >= PATH_MAX {
        return Ok(Vec::new());
    }
    let quoted = expand_tilde(&quote(pattern), home);
    let Some(tokens) = compile(&quoted) else {
        return Ok(Vec::new());
    };
    if tokens.is_empty() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    walk(Vec::new(), &tokens, &mut found, max_matches)?;
    found.sort();
    Ok(found
        .into_iter()
        .map(|path| PathBuf::from(OsString::from_vec(path)))
        .collect())
}

/// glob(): `\x` protects `x`; a `\` at the very end stands for itself.
fn quote(pattern: &[u8]) -> Vec<Quoted> {
    let mut quoted = Vec::with_capacity(pattern.len());
    let mut bytes = pattern.iter().copied();
    while let Some(byte) = bytes.next() {
        if byte == b'\\' {
            let byte = bytes.next().unwrap_or(b'\\');
            quoted.push(Quoted {
                byte,
                protected: true,
            });
        } else {
            quoted.push(Quoted {
                byte,
                protected: false,
            });
        }
    }
    quoted
}

/// globtilde(): an unquoted `~` at the start, up to the first `/`, becomes a home directory,
/// whose bytes are then compiled like the rest (so glob characters in it are special, as in
/// glob.c). An unknown user leaves the pattern alone.
fn expand_tilde(pattern: &[Quoted], home: &[u8]) -> Vec<Quoted> {
    if !pattern.first().is_some_and(|first| first.is(b'~')) {
        return pattern.to_vec();
    }
    let name_end = pattern
        .iter()
        .position(|character| character.byte == b'/')
        .unwrap_or(pattern.len());
    let user: Vec<u8> = pattern[1..name_end]
        .iter()
        .map(|character| character.byte)
        .collect();
    let directory = if user.is_empty() {
        home.to_vec()
    } else {
        let found = std::str::from_utf8(&user)
            .ok()
            .and_then(|name| nix::unistd::User::from_name(name).ok().flatten());
        match found {
            Some(entry) => entry.dir.into_os_string().into_vec(),
            None => return pattern.to_vec(),
        }
    };
    let mut expanded: Vec<Quoted> = directory
        .into_iter()
        .map(|byte| Quoted {
            byte,
            protected: false,
        })
        .collect();
    expanded.extend_from_slice(&pattern[name_end..]);
    expanded
}

/// glob0(): the pattern as tokens. `None` for an unknown character class, which makes glob.c
/// return `GLOB_NOMATCH` for the whole pattern.
fn compile(pattern: &[Quoted]) -> Option<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut index = 0;
    while let Some(&character) = pattern.get(index) {
        index += 1;
        if character.is(b'*') {
            if tokens.last() != Some(&Token::Star) {
                tokens.push(Token::Star);
            }
        } else if character.is(b'?') {
            tokens.push(Token::One);
        } else if character.is(b'[') {
            match compile_set(pattern, index)? {
                Some((set, next)) => {
                    tokens.push(set);
                    index = next;
                }
                None => tokens.push(Token::Literal(b'[')),
            }
        } else {
            tokens.push(Token::Literal(character.byte));
        }
    }
    Some(tokens)
}

/// A bracket expression whose `[` came just before `start`. `Some(None)` when it is a literal
/// `[` (nothing after it, or no unquoted `]` after its first member); `None` for an unknown
/// character class.
fn compile_set(pattern: &[Quoted], start: usize) -> Option<Option<(Token, usize)>> {
    let mut index = start;
    let negated = pattern
        .get(index)
        .is_some_and(|character| character.is(b'!'));
    if negated {
        index += 1;
    }
    // The first member may be `]` itself: the closing `]` is looked for after it.
    let closed = pattern.get(index).is_some()
        && pattern
            .get(index + 1..)
            .is_some_and(|rest| rest.iter().any(|character| character.is(b']')));
    if !closed {
        return Some(None);
    }
    let mut members = Vec::new();
    let mut current = pattern[index];
    index += 1;
    loop {
        if current.is(b'[') && pattern.get(index).is_some_and(|next| next.is(b':')) {
            // One or more `[:name:]` in a row; `[` stays an ordinary member when what follows
            // is not a class.
            let mut ends_set = false;
            while current.is(b'[') && pattern.get(index).is_some_and(|next| next.is(b':')) {
                match character_class(pattern, index + 1) {
                    ClassParse::NotAClass => break,
                    ClassParse::Unknown => return None,
                    ClassParse::Class(class, next) => {
                        members.push(Member::Class(class));
                        index = next;
                        // The set is known to be closed, so a byte follows.
                        current = *pattern.get(index)?;
                        index += 1;
                        if current.is(b']') {
                            ends_set = true;
                            break;
                        }
                    }
                }
            }
            if ends_set {
                break;
            }
        }
        match (pattern.get(index), pattern.get(index + 1)) {
            (Some(dash), Some(high)) if dash.is(b'-') && !high.is(b']') => {
                members.push(Member::Range(current.byte, high.byte));
                index += 2;
            }
            _ => members.push(Member::Byte(current.byte)),
        }
        current = *pattern.get(index)?;
        index += 1;
        if current.is(b']') {
            break;
        }
    }
    Some(Some((Token::Set { negated, members }, index)))
}

enum ClassParse {
    NotAClass,
    Unknown,
    /// The class and the index just after its `:]`.
    Class(CharacterClass, usize),
}

/// g_charclass(): `name:]` starting at `start` (just after `[:`).
fn character_class(pattern: &[Quoted], start: usize) -> ClassParse {
    let Some(colon) = pattern
        .get(start..)
        .and_then(|rest| rest.iter().position(|character| character.is(b':')))
        .map(|offset| start + offset)
    else {
        return ClassParse::NotAClass;
    };
    if !pattern.get(colon + 1).is_some_and(|next| next.is(b']')) {
        return ClassParse::NotAClass;
    }
    // A quoted byte in the name never equals a class name's byte in glob.c.
    if pattern[start..colon]
        .iter()
        .any(|character| character.protected)
    {
        return ClassParse::Unknown;
    }
    let name: Vec<u8> = pattern[start..colon]
        .iter()
        .map(|character| character.byte)
        .collect();
    match CharacterClass::from_name(&name) {
        Some(class) => ClassParse::Class(class, colon + 2),
        None => ClassParse::Unknown,
    }
}

/// glob2() and glob3(): literal segments are copied (with their slashes) without looking at the
/// disk; a segment with a wildcard reads its directory (`.` for a relative start) and goes on
/// with each matching entry; at the end the path must exist (`lstat`).
fn walk(
    mut path: Vec<u8>,
    tokens: &[Token],
    found: &mut Vec<Vec<u8>>,
    max_matches: usize,
) -> Result<(), String> {
    let mut rest = tokens;
    loop {
        if rest.is_empty() {
            let exists = std::fs::symlink_metadata(std::ffi::OsStr::from_bytes(&path)).is_ok();
            if exists {
                if found.len() >= max_matches {
                    return Err(format!("more than {max_matches} matches"));
                }
                found.push(path);
            }
            return Ok(());
        }
        let segment_end = rest
            .iter()
            .position(|token| *token == Token::Literal(b'/'))
            .unwrap_or(rest.len());
        let (segment, after) = rest.split_at(segment_end);
        if segment
            .iter()
            .any(|token| !matches!(token, Token::Literal(_)))
        {
            return walk_directory(path, segment, after, found, max_matches);
        }
        for token in segment {
            if let Token::Literal(byte) = token {
                path.push(*byte);
            }
        }
        let slashes = after
            .iter()
            .take_while(|token| **token == Token::Literal(b'/'))
            .count();
        path.extend(std::iter::repeat_n(b'/', slashes));
        if path.len() >= PATH_MAX {
            return Err("a path longer than PATH_MAX".to_string());
        }
        rest = &after[slashes..];
    }
}

fn walk_directory(
    path: Vec<u8>,
    segment: &[Token],
    rest: &[Token],
    found: &mut Vec<Vec<u8>>,
    max_matches: usize,
) -> Result<(), String> {
    let directory = if path.is_empty() {
        std::ffi::OsStr::new(".")
    } else {
        std::ffi::OsStr::from_bytes(&path)
    };
    // glob.c gives up on a directory it cannot open without failing the whole pattern.
    let Ok(entries) = std::fs::read_dir(directory) else {
        return Ok(());
    };
    // readdir also returns `.` and `..`, which `.*` matches.
    let mut names: Vec<Vec<u8>> = vec![b".".to_vec(), b"..".to_vec()];
    names.extend(
        entries
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().into_vec()),
    );
    let literal_dot = segment.first() == Some(&Token::Literal(b'.'));
    for name in names {
        if name.first() == Some(&b'.') && !literal_dot {
            continue;
        }
        if !matches_name(segment, &name) {
            continue;
        }
        let mut next = path.clone();
        next.extend_from_slice(&name);
        if next.len() >= PATH_MAX {
            return Err("a path longer than PATH_MAX".to_string());
        }
        walk(next, rest, found, max_matches)?;
    }
    Ok(())
}

/// match(): the name against one segment. Iterative with one backtrack point, as glob.c's (which
/// keeps only the last `*`), so no pattern takes more than quadratic time.
fn matches_name(segment: &[Token], name: &[u8]) -> bool {
    let (mut token_index, mut name_index) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    loop {
        let step = match segment.get(token_index) {
            None => name_index == name.len(),
            Some(Token::Star) => {
                if token_index + 1 == segment.len() {
                    return true;
                }
                if name_index == name.len() {
                    return false;
                }
                backtrack = Some((token_index, name_index + 1));
                token_index += 1;
                continue;
            }
            Some(token) => match name.get(name_index) {
                Some(&byte) if token_matches(token, byte) => {
                    token_index += 1;
                    name_index += 1;
                    continue;
                }
                _ => false,
            },
        };
        if step {
            return true;
        }
        match backtrack {
            Some((star, resume)) if resume <= name.len() => {
                token_index = star + 1;
                name_index = resume;
                backtrack = Some((star, resume + 1));
            }
            _ => return false,
        }
    }
}

fn token_matches(token: &Token, byte: u8) -> bool {
    match token {
        Token::Literal(expected) => *expected == byte,
        Token::One => true,
        Token::Star => false,
        Token::Set { negated, members } => {
            let found = members.iter().any(|member| match member {
                Member::Byte(expected) => *expected == byte,
                Member::Range(low, high) => *low <= byte && byte <= *high,
                Member::Class(class) => class.contains(byte),
            });
            found != *negated
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, name: &str) -> bool {
        let tokens = compile(&quote(pattern.as_bytes())).expect("compiles");
        matches_name(&tokens, name.as_bytes())
    }

    #[test]
    fn caret_is_an_ordinary_member_and_bang_negates() {
        assert!(matches("[^a]x", "^x"));
        assert!(matches("[^a]x", "ax"));
        assert!(!matches("[^a]x", "bx"));
        assert!(matches("[!a]x", "bx"));
        assert!(!matches("[!a]x", "ax"));
    }

    #[test]
    fn brackets_ranges_classes_and_quotes() {
        assert!(matches("[a-c]?.conf", "b1.conf"));
        assert!(matches("[]a]", "]"));
        assert!(matches("[!]]", "x"));
        assert!(!matches("[!]]", "]"));
        assert!(matches("[a-]", "-"));
        assert!(matches("[[:digit:]]*", "10-x"));
        assert!(matches("[[:alpha:][:digit:]]", "7"));
        assert!(matches("[[:nope]", "["));
        assert!(compile(&quote(b"[[:nope:]]")).is_none());
        assert!(matches("\\*", "*"));
        assert!(!matches("\\*", "x"));
        assert!(matches("[\\]]", "]"));
        assert!(matches("[x", "[x"));
        assert!(matches("[]", "[]"));
        assert!(matches("a\\", "a\\"));
        assert!(matches("*.conf", "a.conf"));
        assert!(matches("a*b*c", "aXbYbc"));
        assert!(!matches("a*b*c", "aXbYbd"));
        assert!(!matches("*x", ""));
        assert!(matches("*", ""));
    }

    #[test]
    fn walks_directories_and_hides_dot_names() {
        let directory = tempfile::tempdir().expect("tempdir");
        for name in ["b.conf", "a.conf", ".c.conf", "d.txt", "^.conf"] {
            std::fs::write(directory.path().join(name), "").expect("write");
        }
        std::fs::create_dir(directory.path().join("sub")).expect("mkdir");
        std::fs::write(directory.path().join("sub/e.conf"), "").expect("write");
        let base = directory.path().as_os_str().as_bytes().to_vec();
        let names = |pattern: &str| -> Vec<String> {
            let mut full = base.clone();
            full.extend_from_slice(pattern.as_bytes());
            expand(&full, b"/nonexistent", 100)
                .expect("glob")
                .iter()
                .map(|path| {
                    path.strip_prefix(directory.path())
                        .expect("below")
                        .display()
                        .to_string()
                })
                .collect()
        };
        assert_eq!(names("/*.conf"), ["^.conf", "a.conf", "b.conf"]);
        assert_eq!(names("/[^a]*.conf"), ["^.conf", "a.conf"]);
        assert_eq!(names("/[!a]*.conf"), ["^.conf", "b.conf"]);
        assert_eq!(names("/.*.conf"), [".c.conf"]);
        assert_eq!(names("/*/*.conf"), ["sub/e.conf"]);
        assert_eq!(names("/missing/*"), Vec::<String>::new());
        assert_eq!(names("/a.conf"), ["a.conf"]);
        assert_eq!(names("/nothing.conf"), Vec::<String>::new());
        assert!(expand(&[base.as_slice(), b"/*"].concat(), b"/", 2).is_err());
    }

    #[test]
    fn tilde_is_the_home_given() {
        let directory = tempfile::tempdir().expect("tempdir");
        std::fs::write(directory.path().join("x.conf"), "").expect("write");
        let home = directory.path().as_os_str().as_bytes();
        let found = expand(b"~/*.conf", home, 10).expect("glob");
        assert_eq!(found, vec![directory.path().join("x.conf")]);
        assert!(
            expand(b"~xfer-surely-no-such-user/*", home, 10)
                .expect("glob")
                .is_empty()
        );
    }
}
