//! Command-line targets: `alias:path`, `user@[::1]:path`, host specs. No input may panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(xfer::target::Location::Remote { host, .. }) = xfer::target::parse_location(text)
        {
            // Whatever parses must print and re-parse as the same host.
            let again =
                xfer::target::parse_host(&host.to_string()).expect("a parsed host re-parses");
            assert_eq!(again, host);
        }
        let _ = xfer::target::parse_host(text);
    }
});
