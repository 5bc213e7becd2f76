//! Byte-level helpers shared by the journal and completion-record codecs: a bounds-checked
//! little-endian reader, length-prefixed string writing, and keyed BLAKE3 checksums.
//!
//! Every read goes through [`Reader`], which answers `None` instead of panicking when the input
//! runs out, so the decoders above it cannot index past the end of untrusted bytes.

/// A cursor over untrusted bytes. Reads past the end return `None` and leave the cursor alone.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, position: 0 }
    }

    /// How many bytes have been read so far.
    pub(super) fn position(&self) -> usize {
        self.position
    }

    /// How many bytes are left to read.
    pub(super) fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.position)
    }

    /// Everything not yet read.
    pub(super) fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.position..).unwrap_or_default()
    }

    /// The next `len` bytes, or `None` (and nothing consumed) when fewer remain.
    pub(super) fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.position.checked_add(len)?;
        let slice = self.bytes.get(self.position..end)?;
        self.position = end;
        Some(slice)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[byte]| byte)
    }

    pub(super) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    pub(super) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    pub(super) fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_le_bytes)
    }
}

/// Appends `text` as a u32 little-endian byte length followed by its UTF-8 bytes. Callers check
/// the length against their cap first; the caps are far below `u32::MAX`, so the saturation
/// here never happens for a string that passed its cap.
pub(super) fn put_string(out: &mut Vec<u8>, text: &str) {
    let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// Keyed BLAKE3 of `data`, truncated to `N` bytes (`N` ≤ 32). Each codec passes its own key,
/// derived from its own context string, so a checksum of one kind never validates another.
pub(super) fn checksum<const N: usize>(key: &[u8; 32], data: &[u8]) -> [u8; N] {
    let full = blake3::keyed_hash(key, data);
    let mut out = [0u8; N];
    for (target, source) in out.iter_mut().zip(full.as_bytes()) {
        *target = *source;
    }
    out
}

/// Whether `mtime_nanos` is a valid nanosecond part of a timestamp.
pub(super) fn nanos_in_range(nanos: u32) -> bool {
    nanos < 1_000_000_000
}
