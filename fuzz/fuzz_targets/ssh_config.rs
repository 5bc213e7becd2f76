//! Feeds arbitrary text to the ssh_config resolver: the first line is the host, a second line
//! starting with `-o ` is a command-line option, the rest is the configuration. The local
//! context has a home directory that does not exist, so relative includes read nothing; the
//! resolver only ever reads files. Any panic, hang or unbounded allocation is a bug.
#![no_main]

use std::path::PathBuf;

use xfer::ssh::config::{
    CommandLineArgument, LocalContext, Overrides, parse_jump_hosts, resolve_from_text,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (host, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let mut overrides = Overrides::default();
    let config = match rest.split_once('\n') {
        Some((line, config)) if line.starts_with("-o ") => {
            overrides
                .arguments
                .push(CommandLineArgument::Option(line[3..].to_string()));
            config
        }
        _ => rest,
    };
    let local = LocalContext {
        user: "fuzz".to_string(),
        uid: 4242,
        home: PathBuf::from("/nonexistent/xfer-fuzz-home"),
        hostname: "fuzz.example.org".to_string(),
    };
    if let Ok(resolved) = resolve_from_text(host, &overrides, "fuzz-config", config, &local) {
        let _ = resolved.expand_proxy_command();
    }
    let _ = parse_jump_hosts(host);
});
