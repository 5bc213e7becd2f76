//! Host lists as cluster tools write them: `gpu-[1-8,10]`, `node[001-128]`,
//! `rack[1-2]-gpu[1-4]`, `a,b,c`, and files of one host (or list) per line.
//!
//! The syntax is Slurm's and pdsh's: outside brackets a comma separates hosts; a bracket holds
//! numbers and ranges separated by commas, and a range whose first number has leading zeros
//! keeps that width (`[08-10]` gives `08 09 10`). Several brackets multiply out, left to right.
//! A bracket that holds a `:` is an IPv6 address, not a list. Lists are expanded before
//! anything connects, and a list that expands to more than [`MAX_HOSTS`] hosts is refused
//! rather than built: a typo like `[1-99999999]` must not allocate gigabytes.

use crate::error::{Error, Result};
use crate::terminal::printable;
use std::path::Path;

/// The most hosts one command may name, all lists together.
pub const MAX_HOSTS: usize = 4096;

/// The longest hosts file read: far more than [`MAX_HOSTS`] lines of host names.
const MAX_HOSTS_FILE: u64 = 4 << 20;

/// Whether `host` uses list syntax at all (a bracketed range or a comma).
pub fn is_list(host: &str) -> bool {
    host.contains(',') || (host.contains('[') && !host.contains(':'))
}

/// Expands one host list into hosts, in the order written. Each host is still to be checked
/// as a host name by the caller.
pub fn expand(list: &str) -> Result<Vec<String>> {
    let mut hosts = Vec::new();
    for item in split_top_level(list)? {
        if item.is_empty() {
            return Err(bad(list, "an empty entry between commas"));
        }
        expand_item(list, item, &mut hosts)?;
    }
    Ok(hosts)
}

/// Reads a hosts file: one host or host list per line; blank lines and `#` comments are
/// ignored. `-` reads standard input.
pub fn read_file(path: &Path) -> Result<Vec<String>> {
    use std::io::Read;
    let shown = path.display().to_string();
    let mut text = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin()
            .take(MAX_HOSTS_FILE + 1)
            .read_to_string(&mut text)
    } else {
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_HOSTS_FILE + 1).read_to_string(&mut text))
    };
    read.map_err(|error| Error::usage(format!("cannot read the hosts file {shown}: {error}")))?;
    if text.len() as u64 > MAX_HOSTS_FILE {
        return Err(Error::usage(format!(
            "the hosts file {shown} is larger than {} MiB",
            MAX_HOSTS_FILE >> 20
        )));
    }
    let mut hosts = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let expanded = expand(line)
            .map_err(|error| Error::usage(format!("{shown} line {}: {error}", number + 1)))?;
        hosts.extend(expanded);
        if hosts.len() > MAX_HOSTS {
            return Err(too_many(&shown));
        }
    }
    if hosts.is_empty() {
        return Err(Error::usage(format!(
            "the hosts file {shown} names no host"
        )));
    }
    Ok(hosts)
}

/// The hosts a command names: its arguments (each a host or a list) and the lines of a hosts
/// file, in that order. A host named twice is refused: it would get the same work twice at
/// once.
pub fn hosts_named(arguments: &[String], file: Option<&Path>) -> Result<Vec<String>> {
    let mut hosts = Vec::new();
    for argument in arguments {
        hosts.extend(expand(argument)?);
    }
    if let Some(file) = file {
        hosts.extend(read_file(file)?);
    }
    if hosts.len() > MAX_HOSTS {
        return Err(too_many("the command line"));
    }
    refuse_repeats(&hosts)?;
    Ok(hosts)
}

/// Refuses a host named twice.
pub fn refuse_repeats(hosts: &[String]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for host in hosts {
        if !seen.insert(host.to_ascii_lowercase()) {
            return Err(Error::usage(format!(
                "the host {} is named twice",
                printable(host)
            )));
        }
    }
    Ok(())
}

fn bad(list: &str, what: &str) -> Error {
    Error::usage(format!("host list '{}': {what}", printable(list)))
        .with_hint("write ranges as gpu-[1-8,10] or node[01-16]: numbers, ascending, in brackets")
}

fn too_many(list: &str) -> Error {
    Error::usage(format!(
        "host list '{}' names more than {MAX_HOSTS} hosts",
        printable(list)
    ))
}

/// Splits at the commas outside brackets.
fn split_top_level(list: &str) -> Result<Vec<&str>> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (at, character) in list.char_indices() {
        match character {
            '[' if depth > 0 => return Err(bad(list, "a '[' inside brackets")),
            '[' => depth = 1,
            ']' if depth == 0 => return Err(bad(list, "a ']' that closes nothing")),
            ']' => depth = 0,
            ',' if depth == 0 => {
                items.push(&list[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    if depth > 0 {
        return Err(bad(list, "a '[' it does not close"));
    }
    items.push(&list[start..]);
    Ok(items)
}

/// Expands one comma-free entry: its brackets multiply out, left to right.
fn expand_item(list: &str, item: &str, hosts: &mut Vec<String>) -> Result<()> {
    // An IPv6 address in brackets (`[::1]`, `me@[fe80::1%eth0]`) is one host.
    if item.contains(':') {
        hosts.push(item.to_string());
        return Ok(());
    }
    let mut partial = vec![String::new()];
    let mut rest = item;
    while let Some(open) = rest.find('[') {
        let close = rest[open..]
            .find(']')
            .map(|at| open + at)
            .ok_or_else(|| bad(list, "a '[' it does not close"))?;
        let numbers = numbers_in(list, &rest[open + 1..close])?;
        let prefix = &rest[..open];
        let room = MAX_HOSTS.saturating_sub(hosts.len());
        if partial.len().saturating_mul(numbers.len()) > room {
            return Err(too_many(list));
        }
        partial = partial
            .iter()
            .flat_map(|head| {
                numbers
                    .iter()
                    .map(move |number| format!("{head}{prefix}{number}"))
            })
            .collect();
        rest = &rest[close + 1..];
    }
    hosts.extend(partial.into_iter().map(|head| head + rest));
    if hosts.len() > MAX_HOSTS {
        return Err(too_many(list));
    }
    Ok(())
}

/// The numbers a bracket holds, formatted with their padding.
fn numbers_in(list: &str, inside: &str) -> Result<Vec<String>> {
    if inside.is_empty() {
        return Err(bad(list, "empty brackets"));
    }
    let mut numbers = Vec::new();
    for part in inside.split(',') {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let start = number(list, first)?;
        let end = number(list, last)?;
        if end < start {
            return Err(bad(list, &format!("the range {part} runs backwards")));
        }
        if (end - start) as usize >= MAX_HOSTS
            || numbers.len() + (end - start) as usize >= MAX_HOSTS
        {
            return Err(too_many(list));
        }
        // Slurm's rule: a leading zero asks for the first number's width.
        let width = if first.len() > 1 && first.starts_with('0') {
            first.len()
        } else {
            0
        };
        numbers.extend((start..=end).map(|value| format!("{value:0width$}")));
    }
    Ok(numbers)
}

fn number(list: &str, digits: &str) -> Result<u64> {
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(bad(
            list,
            &format!("'{}' is not a number or a range", printable(digits)),
        ));
    }
    digits
        .parse()
        .map_err(|_| bad(list, &format!("'{digits}' is not a number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &str) -> Vec<String> {
        expand(list).unwrap_or_else(|error| panic!("{list}: {error}"))
    }

    #[test]
    fn ranges_and_single_numbers() {
        assert_eq!(hosts("gpu-[1-3,10]"), ["gpu-1", "gpu-2", "gpu-3", "gpu-10"]);
        assert_eq!(hosts("gpu-[7]"), ["gpu-7"]);
        assert_eq!(hosts("plain"), ["plain"]);
        assert_eq!(hosts("n[1-2].cluster"), ["n1.cluster", "n2.cluster"]);
    }

    #[test]
    fn zero_padding_follows_the_first_number() {
        assert_eq!(
            hosts("node[08-11]"),
            ["node08", "node09", "node10", "node11"]
        );
        assert_eq!(hosts("node[001-002]"), ["node001", "node002"]);
        assert_eq!(hosts("node[0-1]"), ["node0", "node1"]);
        assert_eq!(hosts("node[9-10]"), ["node9", "node10"]);
    }

    #[test]
    fn commas_outside_brackets_separate_hosts() {
        assert_eq!(hosts("a,b[1-2],c"), ["a", "b1", "b2", "c"]);
        assert_eq!(hosts("me@a,you@b"), ["me@a", "you@b"]);
    }

    #[test]
    fn several_brackets_multiply_out() {
        assert_eq!(
            hosts("rack[1-2]-gpu[1-2]"),
            ["rack1-gpu1", "rack1-gpu2", "rack2-gpu1", "rack2-gpu2"]
        );
    }

    #[test]
    fn ipv6_brackets_are_addresses() {
        assert_eq!(hosts("[::1]"), ["[::1]"]);
        assert_eq!(hosts("me@[fe80::1%eth0]"), ["me@[fe80::1%eth0]"]);
        assert!(!is_list("[::1]"));
        assert!(is_list("gpu-[1-2]"));
        assert!(is_list("a,b"));
        assert!(!is_list("gpu-1"));
    }

    #[test]
    fn bad_syntax_is_refused_with_the_list_named() {
        for list in [
            "gpu-[3-1]",
            "gpu-[1-",
            "gpu-[]",
            "gpu-[a-b]",
            "gpu-[1-2",
            "gpu-1-2]",
            "gpu-[[1]]",
            "gpu-[1,,2]",
            "gpu-[-2]",
            "gpu-[1-2-3]",
            "a,,b",
            ",a",
            "gpu-[ 1]",
        ] {
            let error = expand(list).expect_err(list).to_string();
            assert!(error.contains("host list"), "{list}: {error}");
            assert!(error.contains(list), "{list}: {error}");
        }
    }

    #[test]
    fn huge_lists_are_refused_before_they_are_built() {
        assert!(expand("n[1-99999999999]").is_err());
        assert!(expand("n[1-99999999999999999999]").is_err());
        assert!(expand("a[1-100]b[1-100]").is_err());
        assert_eq!(
            expand("a[1-64]b[1-64]").map(|hosts| hosts.len()).ok(),
            Some(4096)
        );
    }

    #[test]
    fn a_host_named_twice_is_refused() {
        let named = |arguments: &[&str]| {
            let arguments: Vec<String> = arguments.iter().map(|text| text.to_string()).collect();
            hosts_named(&arguments, None)
        };
        assert_eq!(
            named(&["gpu-[1-2]", "head"]).expect("distinct"),
            ["gpu-1", "gpu-2", "head"]
        );
        let error = named(&["gpu-[1-3]", "gpu-2"])
            .expect_err("repeated")
            .to_string();
        assert!(error.contains("gpu-2 is named twice"), "{error}");
        assert!(named(&["gpu-[1-2,2]"]).is_err());
        assert!(named(&["Gpu-1", "gpu-1"]).is_err());
    }

    #[test]
    fn hosts_files_skip_comments_and_blank_lines() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("hosts");
        std::fs::write(
            &path,
            "# the fleet\nnode-1\n\n  node-[2-3]  # rack two\nme@head\n",
        )
        .expect("write");
        assert_eq!(
            read_file(&path).expect("reads"),
            ["node-1", "node-2", "node-3", "me@head"]
        );
        std::fs::write(&path, "node-1\nnode-[2-\n").expect("write");
        let error = read_file(&path).expect_err("bad line").to_string();
        assert!(error.contains("line 2"), "{error}");
        std::fs::write(&path, "# nothing\n\n").expect("write");
        assert!(read_file(&path).is_err());
        assert!(read_file(&directory.path().join("missing")).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(list in "[a-z0-9\\[\\],:@-]{0,40}") {
            let _ = expand(&list);
        }
    }
}
