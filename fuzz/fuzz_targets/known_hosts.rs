//! Feeds arbitrary text to the known_hosts line parser and host matcher. The first line of the
//! input is the host name to look up; every following line is a known_hosts line. Nothing may
//! panic, and matching must stay fast on pathological wildcard patterns.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xfer::ssh::known_hosts::{HostField, host_pattern_name, parse_line};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (host, lines) = text.split_once('\n').unwrap_or((&text, ""));
    let names = [
        host.to_owned(),
        host_pattern_name(host, 22),
        host_pattern_name(host, 2222),
    ];
    for line in lines.split('\n') {
        if let Some(entry) = parse_line(line) {
            for name in &names {
                let _ = entry.hosts.matches(name);
            }
        }
        // The matcher on its own, with the whole line as a pattern list, so wildcard and
        // negation handling is exercised even when the line is not a valid entry.
        let patterns = HostField::Patterns(line.to_owned());
        for name in &names {
            let _ = patterns.matches(name);
        }
    }
});
