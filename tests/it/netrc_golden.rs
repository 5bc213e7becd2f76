//! Golden tests for `xfer::secret::netrc::merge`: each case under `tests/it/golden/netrc/` is a
//! netrc file (`NAME.input`), the entry merged into it (`NAME.stanza`, one `key value` a line)
//! and the exact bytes expected (`NAME.expected`). Every case also checks that the result
//! parses, holds the new values and every other machine's old values, keeps `default` last,
//! and is unchanged by a second merge. Refused files are checked against their exact messages.
//!
//! `XFER_UPDATE_GOLDEN=1 cargo test --test it netrc_golden::` rewrites the `.expected` files from
//! the current output; review the diff before keeping it.
//!
//! When `python3` is on the PATH, every accepted input and every output is also read with
//! Python's `netrc` module, which must see the same values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use secrecy::{ExposeSecret, SecretString};
use xfer::secret::netrc::{self, Netrc, NetrcError, Stanza};

type Values = (Option<String>, Option<String>, Option<String>);

const CASES: [&str; 18] = [
    "empty",
    "blank",
    "replace_existing",
    "default_stays_last",
    "comments_and_macdef",
    "comment_inside_entry",
    "account",
    "duplicates",
    "dots_and_ports",
    "no_trailing_newline",
    "no_trailing_newline_replace",
    "crlf",
    "crlf_append",
    "one_line",
    "one_line_last",
    "quoted_kept",
    "case_insensitive",
    "wandb_append",
];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/golden/netrc")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Reads a `.stanza` file: `machine NAME`, then optional `login`, `password`, `account` lines.
fn read_stanza(path: &Path) -> Stanza {
    let mut stanza = Stanza::new("");
    for line in read(path).lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "machine" => stanza.machine = value.to_owned(),
            "login" => stanza.login = Some(value.to_owned()),
            "password" => stanza.password = Some(SecretString::from(value)),
            "account" => stanza.account = Some(SecretString::from(value)),
            _ => panic!("{}: unknown key {key:?}", path.display()),
        }
    }
    stanza
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

#[test]
fn merges_match_the_golden_files() {
    let update = std::env::var_os("XFER_UPDATE_GOLDEN").is_some();
    let mut checked = 0;
    for case in CASES {
        let dir = golden_dir();
        let input = read(&dir.join(format!("{case}.input")));
        let stanza = read_stanza(&dir.join(format!("{case}.stanza")));
        let output = match netrc::merge(&input, &stanza) {
            Ok(output) => output,
            Err(error) => panic!("{case}: merge refused: {error}"),
        };
        let output = output.expose_secret();
        let expected_path = dir.join(format!("{case}.expected"));
        if update {
            std::fs::write(&expected_path, output).expect("writes the golden file");
        }
        let expected = read(&expected_path);
        assert_eq!(
            output, expected,
            "{case}: output differs from {case}.expected"
        );

        let before = netrc::parse(&input).unwrap_or_else(|error| panic!("{case}: {error}"));
        let after = netrc::parse(output).unwrap_or_else(|error| panic!("{case}: {error}"));
        assert_eq!(
            lookup(&after, &stanza.machine),
            Some(values_of(&stanza)),
            "{case}: the merged machine"
        );
        let same_machine = |name: &str| name.eq_ignore_ascii_case(&stanza.machine);
        assert_eq!(
            after.machines().filter(|name| same_machine(name)).count(),
            1,
            "{case}"
        );
        for name in before.machines().filter(|name| !same_machine(name)) {
            assert_eq!(
                lookup(&after, name),
                lookup(&before, name),
                "{case}: machine {name}"
            );
        }
        assert_eq!(after.has_default(), before.has_default(), "{case}");
        let again = netrc::merge(output, &stanza).expect("merges again");
        assert_eq!(
            again.expose_secret(),
            output,
            "{case}: a second merge changed the file"
        );
        checked += 1;
    }
    assert_eq!(checked, CASES.len());
}

#[test]
fn lookup_uses_the_first_of_duplicate_entries() {
    let input = read(&golden_dir().join("duplicates.input"));
    let netrc = netrc::parse(&input).expect("parses");
    let first = (Some("first".to_owned()), Some("first-key".to_owned()), None);
    assert_eq!(lookup(&netrc, "api.wandb.ai"), Some(first.clone()));
    assert_eq!(lookup(&netrc, "Api.Wandb.Ai"), Some(first));
    assert_eq!(
        netrc.machines().collect::<Vec<_>>(),
        [
            "api.wandb.ai",
            "example.org",
            "api.wandb.ai",
            "API.WANDB.AI",
            "last.example"
        ]
    );
}

#[test]
fn macro_bodies_are_not_entries() {
    let input = read(&golden_dir().join("comments_and_macdef.input"));
    let netrc = netrc::parse(&input).expect("parses");
    assert_eq!(
        netrc.machines().collect::<Vec<_>>(),
        ["huggingface.co", "api.wandb.ai"]
    );
}

/// Files merge refuses, with the exact message. None of them may show the password.
#[test]
fn broken_files_are_refused_with_line_numbers() {
    const PASSWORD: &str = "Sup3rSecretPassw0rd";
    let cases: [(&str, &str); 14] = [
        (
            "machine a login b password \"Sup3rSecretPassw0rd\nmachine c\n",
            "line 1: a quoted word runs past the end of its line",
        ),
        (
            "machine a login b password \"Sup3rSecretPassw0rd",
            "line 1: a quoted word is not closed",
        ),
        (
            "default login x password y\nmachine a password Sup3rSecretPassw0rd\n",
            "line 2: `machine` after `default` (curl would use the default entry for this machine)",
        ),
        (
            "machine a\n  login b\n  password\n",
            "line 3: the password is missing",
        ),
        (
            "machine a login b password Sup3rSecretPassw0rd extra\n",
            "line 1: a word where `login`, `password`, `account` or the next entry was expected",
        ),
        (
            "machine a password Sup3r Secret Passw0rd\n",
            "line 1: a word where `login`, `password`, `account` or the next entry was expected",
        ),
        (
            "machine a password Sup3rSecretPassw0rd # rotated\n",
            "line 1: a comment after other words on the line",
        ),
        (
            "machine a password Sup3rSecretPassw0rd\n\n# rotated in May\n",
            "line 3: Python's netrc module misreads this comment: it skips only the first word \
             of a comment that follows a blank line, trailing blanks or a quoted value",
        ),
        (
            "machine a\nuser b\npassword Sup3rSecretPassw0rd\n",
            "line 2: `user` (Python reads it as `login`, curl ignores it)",
        ),
        (
            "machine a password Sup3rSecretPassw0rd\r\n\r\nmachine b\r\n",
            "line 2: a blank line or trailing blank before a CRLF line end, which curl rejects as \
             a syntax error",
        ),
        (
            "machine a password Sup3rSecretPassw0rd\nmacdef init\nmachine b\n\n",
            "line 2: `macdef` after an entry (curl reads the macro body as more of that entry)",
        ),
        (
            "machine a password \"Sup3rSecret\\tPassw0rd\"\n",
            "line 1: a backslash escape other than \\\" or \\\\ inside quotes (Python and curl \
             decode them differently)",
        ),
        (
            "machine a password Sup3rSecretPassw0rd\\\n",
            "line 1: a backslash outside quotes (Python reads it as an escape, curl as a \
             character)",
        ),
        (
            "machine a password Sup3rSecretPassw0rd password Sup3rSecretPassw0rd\n",
            "line 1: the password is given twice in one entry",
        ),
    ];
    let stanza = Stanza {
        machine: "api.wandb.ai".to_owned(),
        login: Some("user".to_owned()),
        password: Some(SecretString::from("new-key")),
        account: None,
    };
    for (input, message) in cases {
        let error = netrc::merge(input, &stanza).expect_err(input);
        assert_eq!(error.to_string(), message, "for {input:?}");
        let parsed = netrc::parse(input).err().map(|error| error.to_string());
        assert_eq!(parsed.as_deref(), Some(message), "for {input:?}");
        let converted: xfer::Error = error.clone().into();
        for shown in [
            error.to_string(),
            format!("{error:?}"),
            format!("{converted:?}"),
            converted.hint().unwrap_or_default().to_owned(),
        ] {
            assert!(!shown.contains(PASSWORD), "{shown}");
            assert!(!shown.contains("Sup3r"), "{shown}");
        }
    }
}

#[test]
fn unwritable_values_name_the_field_not_the_value() {
    let stanza = Stanza {
        machine: "api.wandb.ai".to_owned(),
        login: Some("user".to_owned()),
        password: Some(SecretString::from("Sup3r Secret")),
        account: None,
    };
    let error = netrc::merge("", &stanza).expect_err("a blank needs quotes");
    assert!(matches!(error, NetrcError::UnwritableValue { .. }));
    assert_eq!(
        error.to_string(),
        "the password contains a blank, which only quotes can hold, and curl before 7.84 does \
         not read quotes"
    );
}

/// Reads a netrc file with Python's `netrc` module: machine name to (login, password,
/// account), with missing values as empty strings, as Python reports them.
fn python_hosts(text: &str) -> Option<BTreeMap<String, (String, String, String)>> {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("netrc");
    std::fs::write(&path, text).expect("writes");
    let script = "import json, netrc, sys\n\
                  n = netrc.netrc(sys.argv[1])\n\
                  print(json.dumps({h: [v[0], v[2], v[1]] for h, v in n.hosts.items()}))\n";
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .ok()?;
    assert!(
        output.status.success(),
        "python3 refused {text:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let hosts: BTreeMap<String, Vec<String>> =
        serde_json::from_slice(&output.stdout).expect("python prints JSON");
    Some(
        hosts
            .into_iter()
            .map(|(host, values)| {
                let field = |index: usize| values.get(index).cloned().unwrap_or_default();
                (host, (field(0), field(1), field(2)))
            })
            .collect(),
    )
}

/// Every golden input and output reads the same in Python, for each machine written once
/// (Python keeps the last of duplicates, and compares names case-sensitively).
#[test]
fn python_reads_the_same_values() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("python3 not found: skipping the comparison with Python's netrc module");
        return;
    }
    let dir = golden_dir();
    for case in CASES {
        for suffix in ["input", "expected"] {
            let text = read(&dir.join(format!("{case}.{suffix}")));
            let ours = netrc::parse(&text).expect("golden files parse");
            let Some(python) = python_hosts(&text) else {
                return;
            };
            let names: Vec<&str> = ours.machines().collect();
            for name in &names {
                if names
                    .iter()
                    .filter(|other| other.eq_ignore_ascii_case(name))
                    .count()
                    > 1
                {
                    continue;
                }
                let (login, password, account) =
                    lookup(&ours, name).expect("listed machines are found");
                let expected = (
                    login.unwrap_or_default(),
                    password.unwrap_or_default(),
                    account.unwrap_or_default(),
                );
                assert_eq!(
                    python.get(*name),
                    Some(&expected),
                    "{case}.{suffix}: {name}"
                );
            }
        }
    }
}
