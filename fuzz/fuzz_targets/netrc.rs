//! netrc files (`xfer::secret::netrc`): any text parses or is refused without panicking, and a
//! merge either is refused or yields a file that parses, holds exactly the new entry for its
//! machine, keeps every other machine's values, keeps `default`, and does not change when
//! merged again.
//!
//! The input's first line describes the entry to merge, as words separated by single spaces:
//! machine, login, password, account (missing words are absent fields, `-` skips one); the rest
//! of the input is the netrc file. Bytes that are not UTF-8 go to `decode` alone.
#![no_main]

use xfer::secret::netrc::{self, ExposeSecret, Netrc, SecretString, Stanza};

type Values = (Option<String>, Option<String>, Option<String>);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = netrc::decode(data) else {
        return;
    };
    let (head, file) = text.split_once('\n').unwrap_or((text, ""));
    let stanza = stanza_from(head);

    let parsed = netrc::parse(file);
    if let Ok(netrc) = &parsed {
        for name in netrc.machines() {
            let span = netrc.span(name).expect("listed machines have spans");
            assert!(
                file.get(span).is_some(),
                "spans fall on character boundaries"
            );
        }
    }
    let _ = netrc::render_stanza(&stanza);

    let Ok(merged) = netrc::merge(file, &stanza) else {
        return;
    };
    let merged = merged.expose_secret();
    let blank = file
        .bytes()
        .all(|byte| matches!(byte, b' ' | b'\t' | b'\n' | b'\r'));
    let before = match parsed {
        Ok(before) => Some(before),
        Err(error) => {
            // Only a blank file is replaced without being read.
            assert!(blank, "merge accepted a file parse refuses: {error}");
            None
        }
    };
    let after = netrc::parse(merged).expect("a merged file parses");
    assert_eq!(lookup(&after, &stanza.machine), Some(values_of(&stanza)));
    let same_machine = |name: &str| name.eq_ignore_ascii_case(&stanza.machine);
    assert_eq!(
        after.machines().filter(|name| same_machine(name)).count(),
        1
    );
    if let Some(before) = &before {
        for name in before.machines().filter(|name| !same_machine(name)) {
            assert_eq!(
                lookup(&after, name),
                lookup(before, name),
                "other stanzas are kept"
            );
        }
        assert_eq!(after.has_default(), before.has_default());
    }
    match netrc::merge(merged, &stanza) {
        Ok(again) => assert_eq!(
            again.expose_secret(),
            merged,
            "merging twice changes nothing"
        ),
        Err(error) => panic!("a merged file cannot be merged again: {error}"),
    }
});

fn stanza_from(head: &str) -> Stanza {
    let mut words = head.split(' ');
    let mut next = || words.next().filter(|word| *word != "-").map(str::to_owned);
    Stanza {
        machine: next().unwrap_or_default(),
        login: next(),
        password: next().map(SecretString::from),
        account: next().map(SecretString::from),
    }
}

fn values_of(stanza: &Stanza) -> Values {
    let exposed =
        |value: &Option<SecretString>| value.as_ref().map(|value| value.expose_secret().to_owned());
    (
        stanza.login.clone(),
        exposed(&stanza.password),
        exposed(&stanza.account),
    )
}

fn lookup(netrc: &Netrc, name: &str) -> Option<Values> {
    netrc.machine(name).map(|stanza| values_of(&stanza))
}
