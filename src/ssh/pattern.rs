//! OpenSSH's host and user patterns (match.c), shared by ssh_config (`Host`, `Match`,
//! `IgnoreUnknown`) and known_hosts: `*` and `?` wildcards over bytes, and comma-separated lists
//! in which a `!` pattern that matches vetoes the whole list.
//!
//! The rules differ per caller exactly as they do in ssh, so the caller chooses them:
//! - `Host` arguments are single patterns, case-sensitive ([`matches`]), negation handled by the
//!   caller;
//! - `Match user`/`localuser` lists are case-sensitive ([`match_list`] with [`Case::Sensitive`]);
//! - `Match host`/`originalhost` lower both the name and the patterns ([`match_hostname`]);
//! - `IgnoreUnknown` and known_hosts lower the patterns only ([`Case::FoldPatterns`]): the name
//!   is taken as given.

/// match.c copies each comma-separated pattern into a 1024-byte buffer; a pattern of 1023 bytes
/// or more makes the whole list fail to match.
pub(crate) const MAX_PATTERN_BYTES: usize = 1022;

/// What a pattern list says about a name (ssh's 1, -1 and 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListMatch {
    /// No pattern matched, or only a negated one that did not.
    None,
    /// A plain pattern matched and no negated one did.
    Positive,
    /// A negated pattern matched: it wins over any positive one.
    Negative,
}

/// Whether the patterns are compared as written or lowered (ASCII) first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Case {
    Sensitive,
    /// match_pattern_list's `dolower`: the patterns are lowered, the name is not.
    FoldPatterns,
}

/// match_pattern: `*` and `?` wildcards, byte by byte, case-sensitive.
pub(crate) fn matches(text: &[u8], pattern: &[u8]) -> bool {
    wildcard_match(text, pattern, Case::Sensitive)
}

/// match_pattern_list: comma-separated patterns, `!` negating one. An empty pattern matches
/// only an empty name; an overlong one (see [`MAX_PATTERN_BYTES`]) fails the whole list.
pub(crate) fn match_list(text: &[u8], patterns: &[u8], case: Case) -> ListMatch {
    let mut positive = false;
    let mut rest = patterns;
    while !rest.is_empty() {
        let negated = rest[0] == b'!';
        if negated {
            rest = &rest[1..];
        }
        let end = rest
            .iter()
            .position(|byte| *byte == b',')
            .unwrap_or(rest.len());
        let pattern = &rest[..end];
        if pattern.len() > MAX_PATTERN_BYTES {
            return ListMatch::None;
        }
        rest = rest.get(end + 1..).unwrap_or(&[]);
        if wildcard_match(text, pattern, case) {
            if negated {
                return ListMatch::Negative;
            }
            positive = true;
        }
    }
    if positive {
        ListMatch::Positive
    } else {
        ListMatch::None
    }
}

/// match_hostname: a pattern list with both the host and the patterns lowered.
pub(crate) fn match_hostname(host: &str, patterns: &str) -> ListMatch {
    match_list(
        host.to_ascii_lowercase().as_bytes(),
        patterns.as_bytes(),
        Case::FoldPatterns,
    )
}

/// OpenSSH recurses, which is exponential on patterns like `*a*a*a*b`; this walks once,
/// remembering the last `*`, and accepts exactly the same strings.
fn wildcard_match(text: &[u8], pattern: &[u8], case: Case) -> bool {
    let fold = |byte: u8| match case {
        Case::Sensitive => byte,
        Case::FoldPatterns => byte.to_ascii_lowercase(),
    };
    let (mut at_text, mut at_pattern) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while at_text < text.len() {
        match pattern.get(at_pattern).copied().map(fold) {
            Some(b'*') => {
                at_pattern += 1;
                last_star = Some((at_pattern, at_text));
            }
            Some(expected) if expected == b'?' || expected == text[at_text] => {
                at_pattern += 1;
                at_text += 1;
            }
            _ => match last_star {
                Some((after_star, star_text)) => {
                    // Let the star swallow one more byte and retry from there.
                    at_pattern = after_star;
                    at_text = star_text + 1;
                    last_star = Some((after_star, star_text + 1));
                }
                None => return false,
            },
        }
    }
    pattern[at_pattern.min(pattern.len())..]
        .iter()
        .all(|byte| *byte == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// OpenSSH's recursive match_pattern, as the reference for the iterative one.
    fn reference_match(text: &[u8], pattern: &[u8], case: Case) -> bool {
        let fold = |byte: u8| match case {
            Case::Sensitive => byte,
            Case::FoldPatterns => byte.to_ascii_lowercase(),
        };
        match pattern.split_first() {
            None => text.is_empty(),
            Some((b'*', rest)) => {
                (0..=text.len()).any(|skip| reference_match(&text[skip..], rest, case))
            }
            Some((expected, rest)) => match text.split_first() {
                Some((actual, text_rest)) => {
                    (*expected == b'?' || fold(*expected) == *actual)
                        && reference_match(text_rest, rest, case)
                }
                None => false,
            },
        }
    }

    #[test]
    fn patterns_match_like_ssh() {
        assert!(matches(b"web1.example", b"web?.*"));
        assert!(!matches(b"web1.example", b"Web?.*"));
        assert!(matches(b"", b"*"));
        assert!(!matches(b"ab", b"a"));
        assert!(matches(
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab",
            b"*a*a*a*a*a*a*a*a*a*a*a*a*b"
        ));
        assert_eq!(
            match_hostname("Db.Example", "web*,db.*"),
            ListMatch::Positive
        );
        assert_eq!(match_hostname("db.example", "*,!db.*"), ListMatch::Negative);
        assert_eq!(
            match_list(b"bob", b"alice,bob", Case::Sensitive),
            ListMatch::Positive
        );
        assert_eq!(
            match_list(b"Bob", b"alice,bob", Case::Sensitive),
            ListMatch::None
        );
        assert_eq!(
            match_list(b"bob", "x".repeat(2000).as_bytes(), Case::Sensitive),
            ListMatch::None
        );
    }

    #[test]
    fn folding_lowers_the_patterns_only() {
        assert_eq!(
            match_list(b"host.example", b"HOST.*", Case::FoldPatterns),
            ListMatch::Positive
        );
        assert_eq!(
            match_list(b"HOST.example", b"host.*", Case::FoldPatterns),
            ListMatch::None
        );
    }

    #[test]
    fn negation_wins_and_alone_selects_nothing() {
        for list in [
            &b"*.example.com,!bad.example.com"[..],
            b"!bad.example.com,*",
        ] {
            assert_eq!(
                match_list(b"bad.example.com", list, Case::Sensitive),
                ListMatch::Negative
            );
        }
        assert_eq!(
            match_list(b"good", b"!bad", Case::Sensitive),
            ListMatch::None
        );
    }

    #[test]
    fn overlong_pattern_fails_the_whole_list() {
        let long = "a".repeat(MAX_PATTERN_BYTES + 1);
        assert_eq!(
            match_list(
                b"host",
                format!("host,{long}").as_bytes(),
                Case::FoldPatterns
            ),
            ListMatch::None
        );
        let fits = "a".repeat(MAX_PATTERN_BYTES);
        assert_eq!(
            match_list(
                b"host",
                format!("host,{fits}").as_bytes(),
                Case::FoldPatterns
            ),
            ListMatch::Positive
        );
    }

    #[test]
    fn pathological_patterns_are_fast() {
        let pattern = "*a".repeat(40) + "b";
        let text = "a".repeat(1000);
        assert!(!matches(text.as_bytes(), pattern.as_bytes()));
    }

    proptest! {
        #[test]
        fn pattern_matching_agrees_with_openssh(
            text in "[abAB.?*]{0,12}",
            pattern in "[abAB.?*]{0,10}",
        ) {
            for case in [Case::Sensitive, Case::FoldPatterns] {
                prop_assert_eq!(
                    wildcard_match(text.as_bytes(), pattern.as_bytes(), case),
                    reference_match(text.as_bytes(), pattern.as_bytes(), case)
                );
            }
        }
    }
}
