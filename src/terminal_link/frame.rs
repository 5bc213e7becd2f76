//! The frames that carry a byte stream through a terminal, in both encodings; no IO.
//!
//! A frame is `SEQUENCE (4 bytes, big-endian) | DATA | CHECK (8 bytes)`, encoded, then
//! [`END`]. CHECK is the start of the BLAKE3 of sequence and data, so a byte a terminal or
//! relay changed, dropped or added fails the frame, and a whole frame lost or repeated breaks
//! the sequence. Either way the decoder stops with an error and the stream ends there: the
//! request in flight fails as on a dropped connection (and is retried), never the file, whose
//! blocks are checked end to end anyway.
//!
//! [`Encoding::Escaped`] sends printable ASCII and bytes 0x80-0xFF as they are and every
//! control character (0x00-0x1F, 0x7F: the interrupt and suspend characters, XON/XOFF, CR and
//! LF) as [`ESCAPE`] followed by the byte XOR 0x20, a printable character; for random data it
//! costs an eighth more bytes. [`Encoding::Base64`] sends 7-bit printable text only, a third
//! more bytes, for channels that strip the eighth bit or mangle high bytes. Neither ever sends
//! a raw CR or LF, so a decoder skips those: they can only be a relay's newline translation.

/// Ends every frame, in both encodings: never inside one.
pub const END: u8 = b'~';
/// Starts a two-byte escape in [`Encoding::Escaped`].
pub const ESCAPE: u8 = b'}';
/// The most data one frame carries; longer writes are cut into several frames.
pub const MAX_DATA: usize = 32 * 1024;
const SEQUENCE_LENGTH: usize = 4;
const CHECK_LENGTH: usize = 8;
/// The longest encoded frame a decoder accepts (escaped data may double), END excluded.
pub const MAX_ENCODED: usize = 2 * (MAX_DATA + SEQUENCE_LENGTH + CHECK_LENGTH);

/// How frames are spelled on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Control characters escaped, everything else as it is.
    Escaped,
    /// Standard base64 with padding.
    Base64,
}

impl Encoding {
    /// The letter a link handshake names the encoding by.
    pub fn letter(self) -> u8 {
        match self {
            Encoding::Escaped => b'e',
            Encoding::Base64 => b'b',
        }
    }

    pub fn from_letter(letter: u8) -> Option<Encoding> {
        match letter {
            b'e' => Some(Encoding::Escaped),
            b'b' => Some(Encoding::Base64),
            _ => None,
        }
    }
}

/// Whether `byte` travels escaped in [`Encoding::Escaped`].
fn needs_escape(byte: u8) -> bool {
    ESCAPED[usize::from(byte)]
}

/// [`needs_escape`] for every byte value: a lookup, as the encoder asks for every byte.
const ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] =
            byte < 0x20 || byte == 0x7f || byte == ESCAPE as usize || byte == END as usize;
        byte += 1;
    }
    table
};

/// Why a stream of frames cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a frame through the terminal is longer than {MAX_ENCODED} bytes")]
    TooLong,
    #[error("a frame through the terminal is malformed (a byte was changed on the way)")]
    Malformed,
    #[error("a frame through the terminal fails its check (a byte was changed on the way)")]
    Check,
    #[error("a frame through the terminal was lost or repeated")]
    Sequence,
}

fn check(sequence: u32, data: &[u8]) -> [u8; CHECK_LENGTH] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&sequence.to_be_bytes());
    hasher.update(data);
    let mut check = [0; CHECK_LENGTH];
    check.copy_from_slice(&hasher.finalize().as_bytes()[..CHECK_LENGTH]);
    check
}

/// Turns data into frames, numbering them.
#[derive(Debug)]
pub struct Encoder {
    encoding: Encoding,
    sequence: u32,
    scratch: Vec<u8>,
}

impl Encoder {
    pub fn new(encoding: Encoding) -> Encoder {
        Encoder {
            encoding,
            sequence: 0,
            scratch: Vec::new(),
        }
    }

    /// Appends `data` to `out` as frames of at most [`MAX_DATA`] bytes each (one empty frame
    /// for empty data).
    pub fn encode(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let mut chunks = data.chunks(MAX_DATA).peekable();
        if chunks.peek().is_none() {
            self.encode_frame(&[], out);
        }
        for chunk in chunks {
            self.encode_frame(chunk, out);
        }
    }

    fn encode_frame(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let sequence = self.sequence;
        self.sequence = self.sequence.wrapping_add(1);
        self.scratch.clear();
        self.scratch.extend_from_slice(&sequence.to_be_bytes());
        self.scratch.extend_from_slice(data);
        self.scratch.extend_from_slice(&check(sequence, data));
        match self.encoding {
            Encoding::Escaped => {
                out.reserve(self.scratch.len() + self.scratch.len() / 4 + 1);
                // Runs of bytes that pass as they are are copied whole.
                let mut rest = &self.scratch[..];
                while !rest.is_empty() {
                    let run = rest
                        .iter()
                        .position(|&byte| needs_escape(byte))
                        .unwrap_or(rest.len());
                    out.extend_from_slice(&rest[..run]);
                    if let Some(&byte) = rest.get(run) {
                        out.push(ESCAPE);
                        out.push(byte ^ 0x20);
                        rest = &rest[run + 1..];
                    } else {
                        rest = &[];
                    }
                }
            }
            Encoding::Base64 => {
                use base64::Engine;
                let start = out.len();
                let length = base64::encoded_len(self.scratch.len(), true).unwrap_or(0);
                out.resize(start + length, 0);
                // The buffer is exactly the encoded length, so this cannot come up short.
                let written = base64::engine::general_purpose::STANDARD
                    .encode_slice(&self.scratch, &mut out[start..])
                    .unwrap_or(0);
                out.truncate(start + written);
            }
        }
        out.push(END);
    }
}

/// Turns frames back into data, checking each.
#[derive(Debug)]
pub struct Decoder {
    encoding: Encoding,
    sequence: u32,
    /// The encoded bytes of the frame under way.
    pending: Vec<u8>,
    scratch: Vec<u8>,
    failed: Option<FrameError>,
}

impl Decoder {
    pub fn new(encoding: Encoding) -> Decoder {
        Decoder {
            encoding,
            sequence: 0,
            pending: Vec::new(),
            scratch: Vec::new(),
            failed: None,
        }
    }

    /// Whether part of a frame has arrived and not its end.
    pub fn in_frame(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Decodes what `input` completes, appending the data to `out`. After an error every
    /// later call fails the same way: nothing after a bad frame can be trusted.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let result = self.feed_inner(input, out);
        if let Err(error) = &result {
            self.failed = Some(error.clone());
        }
        result
    }

    fn feed_inner(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        while !input.is_empty() {
            let (part, ended) = match input.iter().position(|&byte| byte == END) {
                Some(end) => (&input[..end], Some(end)),
                None => (input, None),
            };
            if self.pending.len() + part.len() > MAX_ENCODED {
                return Err(FrameError::TooLong);
            }
            if part.iter().any(|&byte| byte == b'\r' || byte == b'\n') {
                let kept = part.iter().filter(|&&byte| byte != b'\r' && byte != b'\n');
                self.pending.extend(kept);
            } else {
                self.pending.extend_from_slice(part);
            }
            match ended {
                Some(end) => {
                    self.finish_frame(out)?;
                    input = &input[end + 1..];
                }
                None => break,
            }
        }
        Ok(())
    }

    fn finish_frame(&mut self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        self.scratch.clear();
        match self.encoding {
            Encoding::Escaped => {
                // Runs between escapes are copied whole; a control character in one (it
                // should have been escaped) is caught by the frame's check like any change.
                let mut rest = &self.pending[..];
                while !rest.is_empty() {
                    let run = rest
                        .iter()
                        .position(|&byte| byte == ESCAPE)
                        .unwrap_or(rest.len());
                    self.scratch.extend_from_slice(&rest[..run]);
                    if run == rest.len() {
                        break;
                    }
                    let escaped = *rest.get(run + 1).ok_or(FrameError::Malformed)? ^ 0x20;
                    if !needs_escape(escaped) {
                        return Err(FrameError::Malformed);
                    }
                    self.scratch.push(escaped);
                    rest = &rest[run + 2..];
                }
            }
            Encoding::Base64 => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode_vec(&self.pending, &mut self.scratch)
                    .map_err(|_| FrameError::Malformed)?;
            }
        }
        self.pending.clear();
        if self.scratch.len() < SEQUENCE_LENGTH + CHECK_LENGTH {
            return Err(FrameError::Malformed);
        }
        let (head, rest) = self.scratch.split_at(SEQUENCE_LENGTH);
        let (data, received) = rest.split_at(rest.len() - CHECK_LENGTH);
        let sequence = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if check(sequence, data) != received {
            return Err(FrameError::Check);
        }
        if sequence != self.sequence {
            return Err(FrameError::Sequence);
        }
        self.sequence = self.sequence.wrapping_add(1);
        out.extend_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(encoding: Encoding, messages: &[Vec<u8>]) -> Vec<u8> {
        let mut encoder = Encoder::new(encoding);
        let mut wire = Vec::new();
        for message in messages {
            encoder.encode(message, &mut wire);
        }
        let mut decoder = Decoder::new(encoding);
        let mut out = Vec::new();
        // Fed in uneven pieces, as a terminal delivers it.
        for piece in wire.chunks(7) {
            decoder.feed(piece, &mut out).unwrap();
        }
        assert!(!decoder.in_frame());
        out
    }

    #[test]
    fn every_byte_value_survives_both_encodings() {
        let all: Vec<u8> = (0..=255).collect();
        for encoding in [Encoding::Escaped, Encoding::Base64] {
            assert_eq!(round_trip(encoding, std::slice::from_ref(&all)), all);
        }
    }

    #[test]
    fn escaped_frames_hold_no_control_character_and_base64_no_high_byte() {
        let all: Vec<u8> = (0..=255).cycle().take(100_000).collect();
        let mut wire = Vec::new();
        Encoder::new(Encoding::Escaped).encode(&all, &mut wire);
        assert!(wire.iter().all(|&byte| byte >= 0x20 && byte != 0x7f));
        let mut wire = Vec::new();
        Encoder::new(Encoding::Base64).encode(&all, &mut wire);
        assert!(wire.iter().all(|&byte| (0x20..0x7f).contains(&byte)));
    }

    #[test]
    fn newlines_a_relay_adds_are_skipped() {
        let mut wire = Vec::new();
        Encoder::new(Encoding::Base64).encode(b"hello", &mut wire);
        let mut translated = Vec::new();
        for (index, byte) in wire.iter().enumerate() {
            translated.push(*byte);
            if index % 3 == 0 {
                translated.extend_from_slice(b"\r\n");
            }
        }
        let mut out = Vec::new();
        Decoder::new(Encoding::Base64)
            .feed(&translated, &mut out)
            .unwrap();
        assert_eq!(out, b"hello");
    }

    #[test]
    fn a_changed_byte_fails_the_frame_and_everything_after_it() {
        let mut wire = Vec::new();
        let mut encoder = Encoder::new(Encoding::Escaped);
        encoder.encode(b"first frame", &mut wire);
        encoder.encode(b"second frame", &mut wire);
        wire[6] ^= 0x01;
        let mut decoder = Decoder::new(Encoding::Escaped);
        let mut out = Vec::new();
        assert!(decoder.feed(&wire, &mut out).is_err());
        assert!(out.is_empty());
        assert!(decoder.feed(b"", &mut out).is_err());
    }

    #[test]
    fn the_eighth_bit_stripped_fails_rather_than_corrupts() {
        let data: Vec<u8> = (128..=255).collect();
        let mut wire = Vec::new();
        Encoder::new(Encoding::Escaped).encode(&data, &mut wire);
        let stripped: Vec<u8> = wire.iter().map(|byte| byte & 0x7f).collect();
        let mut out = Vec::new();
        assert!(
            Decoder::new(Encoding::Escaped)
                .feed(&stripped, &mut out)
                .is_err()
        );
        assert!(out.is_empty());
    }

    #[test]
    fn a_lost_frame_breaks_the_sequence() {
        let mut encoder = Encoder::new(Encoding::Base64);
        let mut first = Vec::new();
        encoder.encode(b"one", &mut first);
        let mut second = Vec::new();
        encoder.encode(b"two", &mut second);
        let mut out = Vec::new();
        assert_eq!(
            Decoder::new(Encoding::Base64).feed(&second, &mut out),
            Err(FrameError::Sequence)
        );
    }

    #[test]
    fn an_endless_frame_is_refused_at_the_cap() {
        let mut decoder = Decoder::new(Encoding::Escaped);
        let mut out = Vec::new();
        let junk = vec![b'a'; MAX_ENCODED + 1];
        assert_eq!(decoder.feed(&junk, &mut out), Err(FrameError::TooLong));
    }

    proptest! {
        #[test]
        fn any_data_round_trips(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..70_000), 1..4),
            base64 in any::<bool>(),
        ) {
            let encoding = if base64 { Encoding::Base64 } else { Encoding::Escaped };
            prop_assert_eq!(round_trip(encoding, &messages), messages.concat());
        }

        #[test]
        fn any_input_is_decoded_or_refused_without_panicking(
            input in proptest::collection::vec(any::<u8>(), 0..4096),
            base64 in any::<bool>(),
        ) {
            let encoding = if base64 { Encoding::Base64 } else { Encoding::Escaped };
            let mut out = Vec::new();
            let _ = Decoder::new(encoding).feed(&input, &mut out);
            prop_assert!(out.len() <= input.len());
        }
    }
}
