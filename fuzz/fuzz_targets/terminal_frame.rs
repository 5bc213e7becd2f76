//! Terminal link frames (`xfer::terminal_link::frame`): any bytes, in either encoding and cut
//! anywhere, decode or are refused without panicking and never yield more data than arrived;
//! a refusal is final; and data framed by the encoder, then cut into the same pieces, decodes
//! to exactly itself.
#![no_main]

use xfer::terminal_link::frame::{Decoder, Encoder, Encoding};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let encoding = if control & 1 == 0 {
        Encoding::Escaped
    } else {
        Encoding::Base64
    };
    let piece = usize::from(control >> 1).max(1);

    // The input as it might arrive from a terminal.
    let mut decoder = Decoder::new(encoding);
    let mut out = Vec::new();
    let mut failed = false;
    for part in input.chunks(piece) {
        match decoder.feed(part, &mut out) {
            Ok(()) => assert!(!failed, "a decoder went on after refusing"),
            Err(_) => failed = true,
        }
    }
    assert!(out.len() <= input.len());

    // The input as data: framed, then decoded in pieces, it comes back unchanged.
    let mut wire = Vec::new();
    let mut encoder = Encoder::new(encoding);
    for message in input.chunks(piece * 7) {
        encoder.encode(message, &mut wire);
    }
    let mut decoder = Decoder::new(encoding);
    let mut out = Vec::new();
    for part in wire.chunks(piece) {
        decoder.feed(part, &mut out).expect("framed data decodes");
    }
    assert_eq!(out, input);
});
