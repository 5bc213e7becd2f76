//! The completion record codec: the bytes that say a unit (a directory, say) was transferred
//! completely, listing each entry as it was when it was done, so a later run can skip a unit
//! whose entries are unchanged. This module only encodes and decodes; the engine decides where
//! records live and what "unchanged" means.
//!
//! # Byte format (format version 1, all integers little-endian)
//!
//! | bytes | field                                                              |
//! |-------|--------------------------------------------------------------------|
//! | 8     | magic `XFERDONE`                                                   |
//! | 2     | format version, `u16` = 1                                          |
//! | 4     | record version, `u32` ([`CompletionRecord::version`], the caller's)|
//! | 4 + n | unit id: `u32` byte length n ≤ 4096, then UTF-8                    |
//! | 4     | entry count, `u32` ≤ 10 000 000                                    |
//! |       | the entries, each:                                                 |
//! | 4 + n | name: `u32` byte length n ≤ 4096, then UTF-8                       |
//! | 1     | kind: 0 file, 1 directory, 2 symlink                               |
//! | 8     | size, `u64`                                                        |
//! | 8     | mtime seconds, `i64`                                               |
//! | 4     | mtime nanoseconds, `u32` (< 10^9)                                  |
//! | 4     | mode, `u32`                                                        |
//! | 1     | flags: bit 0 a symlink target follows, bit 1 a content hash follows|
//! | 4 + n | symlink target (if flagged): `u32` byte length n ≤ 4096, UTF-8     |
//! | 32    | content hash (if flagged)                                          |
//! |       | then:                                                              |
//! | 32    | checksum: keyed BLAKE3 of every byte above                         |
//!
//! The whole record is at most [`MAX_RECORD_LEN`] bytes. The encoding is canonical: a record
//! decodes only from the exact bytes [`CompletionRecord::encode`] gives for it.

use std::fmt;
use std::sync::LazyLock;

use super::codec::{Reader, checksum, nanos_in_range, put_string};

/// The first 8 bytes of every completion record.
pub const RECORD_MAGIC: [u8; 8] = *b"XFERDONE";

/// The byte format version this build writes and reads.
pub const RECORD_FORMAT_VERSION: u16 = 1;

/// The cap on the number of entries in one record.
pub const MAX_ENTRIES: usize = 10_000_000;

/// The cap on the unit id, each entry name and each symlink target, in bytes (Linux `PATH_MAX`).
pub const MAX_NAME_LEN: usize = 4096;

/// The cap on a whole encoded record: 1 GiB.
pub const MAX_RECORD_LEN: usize = 1 << 30;

const CHECKSUM_LEN: usize = 32;

/// The shortest possible entry: empty name, no symlink target, no content hash. Bounds the
/// capacity reserved for a claimed entry count by the bytes actually present.
const MIN_ENTRY_LEN: usize = 4 + 1 + 8 + 8 + 4 + 4 + 1;

const FLAG_SYMLINK_TARGET: u8 = 1;
const FLAG_CONTENT_HASH: u8 = 2;

const RECORD_CONTEXT: &str = "xfer completion record v1";

static RECORD_KEY: LazyLock<[u8; 32]> = LazyLock::new(|| blake3::derive_key(RECORD_CONTEXT, b""));

pub use crate::entry::EntryKind;

/// The kind byte of an entry. A record lists what a unit's transfer made, so special files,
/// which are skipped, have no code.
fn kind_code(kind: EntryKind) -> Option<u8> {
    match kind {
        EntryKind::File => Some(0),
        EntryKind::Directory => Some(1),
        EntryKind::Symlink => Some(2),
        EntryKind::Special => None,
    }
}

fn kind_from_code(code: u8) -> Option<EntryKind> {
    match code {
        0 => Some(EntryKind::File),
        1 => Some(EntryKind::Directory),
        2 => Some(EntryKind::Symlink),
        _ => None,
    }
}

/// One entry of a completed unit, as it was when the unit was completed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CompletionEntry {
    /// At most [`MAX_NAME_LEN`] bytes.
    pub name: String,
    pub kind: EntryKind,
    pub size: u64,
    pub mtime_seconds: i64,
    /// Below 10^9.
    pub mtime_nanos: u32,
    pub mode: u32,
    /// At most [`MAX_NAME_LEN`] bytes.
    pub symlink_target: Option<String>,
    /// The whole-file BLAKE3 hash ([`FileHash`](super::FileHash)), when it was computed.
    pub content_hash: Option<[u8; 32]>,
}

/// A unit transferred completely, and its entries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CompletionRecord {
    /// The caller's version of what a record means (which checks made the unit complete). It
    /// is stored and returned as is; the byte format has its own version, which this module
    /// owns. A record with an unexpected version is best treated as absent.
    pub version: u32,
    /// Which unit this is about; at most [`MAX_NAME_LEN`] bytes.
    pub unit_id: String,
    /// At most [`MAX_ENTRIES`].
    pub entries: Vec<CompletionEntry>,
}

/// Which string of a record an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    UnitId,
    Name { entry: u64 },
    SymlinkTarget { entry: u64 },
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::UnitId => f.write_str("unit id"),
            Field::Name { entry } => write!(f, "entry {entry} name"),
            Field::SymlinkTarget { entry } => write!(f, "entry {entry} symlink target"),
        }
    }
}

/// Why a completion record could not be encoded or decoded. A record that fails to decode is
/// best treated as absent: the unit is transferred (or checked) again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("completion record is {len} bytes, over the {MAX_RECORD_LEN}-byte cap")]
    TooLong { len: u64 },
    #[error("completion record is truncated at byte {offset}")]
    Truncated { offset: usize },
    #[error("not an xfer completion record: bad magic bytes")]
    BadMagic,
    #[error(
        "completion record format version {found} is not supported; this build reads version \
         {RECORD_FORMAT_VERSION}"
    )]
    UnsupportedVersion { found: u16 },
    #[error("completion record checksum mismatch: it is damaged or was not completely written")]
    Checksum,
    #[error("completion record {field} is {len} bytes, over the {MAX_NAME_LEN}-byte cap")]
    StringTooLong { field: Field, len: u64 },
    #[error("completion record {field} is not valid UTF-8")]
    NotUtf8 { field: Field },
    #[error("completion record has {count} entries, over the cap of {MAX_ENTRIES}")]
    TooManyEntries { count: u64 },
    #[error("completion record entry {entry}: unknown kind {kind}")]
    UnknownKind { entry: u64, kind: u8 },
    #[error("completion record entry {entry} is a special file, which records do not list")]
    SpecialKind { entry: u64 },
    #[error("completion record entry {entry}: unknown flags {flags:#04x}")]
    UnknownFlags { entry: u64, flags: u8 },
    #[error("completion record entry {entry}: mtime nanoseconds {nanos} is not below one second")]
    BadNanos { entry: u64, nanos: u32 },
    #[error("completion record has {count} bytes after its checksum")]
    TrailingBytes { count: usize },
}

impl CompletionRecord {
    /// The record's bytes. Refuses records over any cap, which [`decode`](Self::decode) would
    /// refuse.
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        check_string_len(&self.unit_id, Field::UnitId)?;
        if self.entries.len() > MAX_ENTRIES {
            return Err(RecordError::TooManyEntries {
                count: self.entries.len() as u64,
            });
        }
        let mut out = Vec::new();
        out.extend_from_slice(&RECORD_MAGIC);
        out.extend_from_slice(&RECORD_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        put_string(&mut out, &self.unit_id);
        // At most MAX_ENTRIES, checked above.
        let count = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_le_bytes());
        for (entry, item) in (0u64..).zip(&self.entries) {
            encode_entry(&mut out, entry, item)?;
            // Checked as we go so that an oversized record fails before it is fully built.
            if out.len() > MAX_RECORD_LEN - CHECKSUM_LEN {
                return Err(RecordError::TooLong {
                    len: (out.len() + CHECKSUM_LEN) as u64,
                });
            }
        }
        let sum: [u8; CHECKSUM_LEN] = checksum(&RECORD_KEY, &out);
        out.extend_from_slice(&sum);
        Ok(out)
    }

    /// Decodes a record, never panicking and never reserving memory for more entries than the
    /// input could hold. Damage is reported as [`RecordError::Checksum`]; the more specific
    /// errors are reported only for well-sealed records (from a buggy or foreign writer).
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() > MAX_RECORD_LEN {
            return Err(RecordError::TooLong {
                len: bytes.len() as u64,
            });
        }
        let mut reader = Reader::new(bytes);
        let magic: [u8; 8] = need(reader.array(), &reader)?;
        if magic != RECORD_MAGIC {
            return Err(RecordError::BadMagic);
        }
        let format_version = need(reader.u16(), &reader)?;
        if format_version != RECORD_FORMAT_VERSION {
            return Err(RecordError::UnsupportedVersion {
                found: format_version,
            });
        }
        // The body is parsed before the checksum is checked (its end is where the checksum
        // starts), so the parser sees damaged input too and must be, and is, bounds-checked.
        match parse(bytes, &mut reader) {
            Ok(record) => Ok(record),
            // Found once the body's own checksum was checked: accurate as they stand.
            Err(error @ (RecordError::Checksum | RecordError::TrailingBytes { .. })) => Err(error),
            Err(error) if sealed_by_tail(bytes) => Err(error),
            Err(_) => Err(RecordError::Checksum),
        }
    }
}

fn check_string_len(text: &str, field: Field) -> Result<(), RecordError> {
    if text.len() > MAX_NAME_LEN {
        return Err(RecordError::StringTooLong {
            field,
            len: text.len() as u64,
        });
    }
    Ok(())
}

fn encode_entry(out: &mut Vec<u8>, entry: u64, item: &CompletionEntry) -> Result<(), RecordError> {
    check_string_len(&item.name, Field::Name { entry })?;
    if let Some(target) = &item.symlink_target {
        check_string_len(target, Field::SymlinkTarget { entry })?;
    }
    if !nanos_in_range(item.mtime_nanos) {
        return Err(RecordError::BadNanos {
            entry,
            nanos: item.mtime_nanos,
        });
    }
    let kind = kind_code(item.kind).ok_or(RecordError::SpecialKind { entry })?;
    put_string(out, &item.name);
    out.push(kind);
    out.extend_from_slice(&item.size.to_le_bytes());
    out.extend_from_slice(&item.mtime_seconds.to_le_bytes());
    out.extend_from_slice(&item.mtime_nanos.to_le_bytes());
    out.extend_from_slice(&item.mode.to_le_bytes());
    let mut flags = 0;
    if item.symlink_target.is_some() {
        flags |= FLAG_SYMLINK_TARGET;
    }
    if item.content_hash.is_some() {
        flags |= FLAG_CONTENT_HASH;
    }
    out.push(flags);
    if let Some(target) = &item.symlink_target {
        put_string(out, target);
    }
    if let Some(hash) = &item.content_hash {
        out.extend_from_slice(hash);
    }
    Ok(())
}

/// `value`, or a truncation error at the reader's position.
fn need<T>(value: Option<T>, reader: &Reader<'_>) -> Result<T, RecordError> {
    value.ok_or(RecordError::Truncated {
        offset: reader.position(),
    })
}

/// Whether the last 32 bytes are the checksum of everything before them: the record was
/// written whole by some encoder, so a parse failure is not damage.
fn sealed_by_tail(bytes: &[u8]) -> bool {
    match bytes.len().checked_sub(CHECKSUM_LEN) {
        Some(body_len) => {
            let (body, sum) = bytes.split_at(body_len);
            sum == checksum::<CHECKSUM_LEN>(&RECORD_KEY, body)
        }
        None => false,
    }
}

/// Everything after the format version, the checksum check and the end-of-input check.
fn parse(bytes: &[u8], reader: &mut Reader<'_>) -> Result<CompletionRecord, RecordError> {
    let version = need(reader.u32(), reader)?;
    let unit_id = read_string(reader, Field::UnitId)?;
    let count = need(reader.u32(), reader)?;
    let count = usize::try_from(count)
        .ok()
        .filter(|&count| count <= MAX_ENTRIES)
        .ok_or(RecordError::TooManyEntries {
            count: u64::from(count),
        })?;
    // The claimed count is only believed as far as the remaining bytes could hold it.
    let mut entries = Vec::with_capacity(count.min(reader.remaining() / MIN_ENTRY_LEN));
    for entry in 0..count as u64 {
        entries.push(read_entry(reader, entry)?);
    }
    let body = bytes
        .get(..reader.position())
        .ok_or(RecordError::Checksum)?;
    let sum: [u8; CHECKSUM_LEN] = need(reader.array(), reader)?;
    if sum != checksum::<CHECKSUM_LEN>(&RECORD_KEY, body) {
        return Err(RecordError::Checksum);
    }
    if reader.remaining() > 0 {
        return Err(RecordError::TrailingBytes {
            count: reader.remaining(),
        });
    }
    Ok(CompletionRecord {
        version,
        unit_id,
        entries,
    })
}

fn read_string(reader: &mut Reader<'_>, field: Field) -> Result<String, RecordError> {
    let len = need(reader.u32(), reader)?;
    // Checked before the bytes are taken: a huge length is refused as such.
    let len = usize::try_from(len)
        .ok()
        .filter(|&len| len <= MAX_NAME_LEN)
        .ok_or(RecordError::StringTooLong {
            field,
            len: u64::from(len),
        })?;
    let bytes = need(reader.take(len), reader)?;
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| RecordError::NotUtf8 { field })
}

fn read_entry(reader: &mut Reader<'_>, entry: u64) -> Result<CompletionEntry, RecordError> {
    let name = read_string(reader, Field::Name { entry })?;
    let code = need(reader.u8(), reader)?;
    let kind = kind_from_code(code).ok_or(RecordError::UnknownKind { entry, kind: code })?;
    let size = need(reader.u64(), reader)?;
    let mtime_seconds = need(reader.i64(), reader)?;
    let mtime_nanos = need(reader.u32(), reader)?;
    if !nanos_in_range(mtime_nanos) {
        return Err(RecordError::BadNanos {
            entry,
            nanos: mtime_nanos,
        });
    }
    let mode = need(reader.u32(), reader)?;
    let flags = need(reader.u8(), reader)?;
    if flags & !(FLAG_SYMLINK_TARGET | FLAG_CONTENT_HASH) != 0 {
        return Err(RecordError::UnknownFlags { entry, flags });
    }
    let symlink_target = if flags & FLAG_SYMLINK_TARGET != 0 {
        Some(read_string(reader, Field::SymlinkTarget { entry })?)
    } else {
        None
    };
    let content_hash = if flags & FLAG_CONTENT_HASH != 0 {
        Some(need(reader.array(), reader)?)
    } else {
        None
    };
    Ok(CompletionEntry {
        name,
        kind,
        size,
        mtime_seconds,
        mtime_nanos,
        mode,
        symlink_target,
        content_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> CompletionRecord {
        CompletionRecord {
            version: 3,
            unit_id: "example.org:22:/data/photos".to_owned(),
            entries: vec![
                CompletionEntry {
                    name: "a.jpg".to_owned(),
                    kind: EntryKind::File,
                    size: 123_456,
                    mtime_seconds: 1_700_000_000,
                    mtime_nanos: 5,
                    mode: 0o100644,
                    symlink_target: None,
                    content_hash: Some([7; 32]),
                },
                CompletionEntry {
                    name: "sub".to_owned(),
                    kind: EntryKind::Directory,
                    size: 0,
                    mtime_seconds: -1,
                    mtime_nanos: 999_999_999,
                    mode: 0o40755,
                    symlink_target: None,
                    content_hash: None,
                },
                CompletionEntry {
                    name: "latest".to_owned(),
                    kind: EntryKind::Symlink,
                    size: 5,
                    mtime_seconds: 0,
                    mtime_nanos: 0,
                    mode: 0o120777,
                    symlink_target: Some("a.jpg".to_owned()),
                    content_hash: None,
                },
            ],
        }
    }

    /// Appends the right checksum to `body`, to reach the checks behind it.
    fn sealed(body: &[u8]) -> Vec<u8> {
        let mut out = body.to_vec();
        out.extend_from_slice(&checksum::<CHECKSUM_LEN>(&RECORD_KEY, body));
        out
    }

    /// The sample's bytes without the checksum.
    fn sample_body() -> Result<Vec<u8>, RecordError> {
        let mut bytes = sample().encode()?;
        bytes.truncate(bytes.len() - CHECKSUM_LEN);
        Ok(bytes)
    }

    /// Offset of the first entry's kind byte in the sample: magic, versions, unit id, count,
    /// name length and "a.jpg".
    fn first_kind_offset() -> usize {
        8 + 2 + 4 + 4 + sample().unit_id.len() + 4 + 4 + 5
    }

    #[test]
    fn round_trip() -> Result<(), RecordError> {
        let record = sample();
        let bytes = record.encode()?;
        assert_eq!(CompletionRecord::decode(&bytes)?, record);
        let empty = CompletionRecord {
            version: 0,
            unit_id: String::new(),
            entries: Vec::new(),
        };
        assert_eq!(CompletionRecord::decode(&empty.encode()?)?, empty);
        Ok(())
    }

    #[test]
    fn any_damage_is_refused() -> Result<(), RecordError> {
        let bytes = sample().encode()?;
        for cut in 0..bytes.len() {
            assert!(
                CompletionRecord::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        for position in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[position] ^= flip;
                assert!(
                    CompletionRecord::decode(&damaged).is_err(),
                    "byte {position}"
                );
            }
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            CompletionRecord::decode(&longer),
            Err(RecordError::TrailingBytes { count: 1 })
        );
        let mut torn = bytes.clone();
        torn.truncate(bytes.len() - 1);
        let message = CompletionRecord::decode(&torn).err().map(|e| e.to_string());
        assert_eq!(
            message.as_deref(),
            Some(
                "completion record checksum mismatch: it is damaged or was not completely written"
            )
        );
        Ok(())
    }

    #[test]
    fn header_errors_say_what_is_wrong() -> Result<(), RecordError> {
        assert_eq!(
            CompletionRecord::decode(b"XFER"),
            Err(RecordError::Truncated { offset: 0 })
        );
        assert_eq!(
            CompletionRecord::decode(b"XFERJNL\0\x01\x00"),
            Err(RecordError::BadMagic)
        );
        let mut future = sample().encode()?;
        future[8] = 9;
        assert_eq!(
            CompletionRecord::decode(&future),
            Err(RecordError::UnsupportedVersion { found: 9 })
        );
        Ok(())
    }

    #[test]
    fn sealed_but_malformed_records_say_what_is_wrong() -> Result<(), RecordError> {
        let kind_at = first_kind_offset();
        let mut body = sample_body()?;
        body[kind_at] = 7;
        assert_eq!(
            CompletionRecord::decode(&sealed(&body)),
            Err(RecordError::UnknownKind { entry: 0, kind: 7 })
        );

        let flags_at = kind_at + 1 + 8 + 8 + 4 + 4;
        let mut body = sample_body()?;
        body[flags_at] = 0x06;
        let error = CompletionRecord::decode(&sealed(&body))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("completion record entry 0: unknown flags 0x06")
        );

        let nanos_at = kind_at + 1 + 8 + 8;
        let mut body = sample_body()?;
        body[nanos_at..nanos_at + 4].copy_from_slice(&2_000_000_000u32.to_le_bytes());
        assert_eq!(
            CompletionRecord::decode(&sealed(&body)),
            Err(RecordError::BadNanos {
                entry: 0,
                nanos: 2_000_000_000
            })
        );

        let name_at = kind_at - 5;
        let mut body = sample_body()?;
        body[name_at] = 0xc3;
        assert_eq!(
            CompletionRecord::decode(&sealed(&body)),
            Err(RecordError::NotUtf8 {
                field: Field::Name { entry: 0 }
            })
        );

        // A huge claimed count or length is refused (or runs out of input) without reserving
        // memory for it.
        let count_at = kind_at - 5 - 4 - 4;
        let mut body = sample_body()?;
        body[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            CompletionRecord::decode(&sealed(&body)),
            Err(RecordError::TooManyEntries {
                count: u64::from(u32::MAX)
            })
        );
        let mut body = sample_body()?;
        body[count_at..count_at + 4].copy_from_slice(&(MAX_ENTRIES as u32).to_le_bytes());
        // Entries run into the checksum bytes and fail to parse, whatever they happen to be.
        assert!(CompletionRecord::decode(&sealed(&body)).is_err());
        assert_eq!(CompletionRecord::decode(&body), Err(RecordError::Checksum));
        let mut body = sample_body()?;
        body[count_at + 4..count_at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        let error = CompletionRecord::decode(&sealed(&body))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("completion record entry 0 name is 4294967295 bytes, over the 4096-byte cap")
        );
        Ok(())
    }

    #[test]
    fn caps_are_enforced_when_encoding() {
        let mut record = sample();
        record.unit_id = "u".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            record.encode(),
            Err(RecordError::StringTooLong {
                field: Field::UnitId,
                ..
            })
        ));
        let mut record = sample();
        record.entries[2].symlink_target = Some("t".repeat(MAX_NAME_LEN + 1));
        assert!(matches!(
            record.encode(),
            Err(RecordError::StringTooLong {
                field: Field::SymlinkTarget { entry: 2 },
                ..
            })
        ));
        let mut record = sample();
        record.entries[1].mtime_nanos = 1_000_000_000;
        assert!(matches!(
            record.encode(),
            Err(RecordError::BadNanos { entry: 1, .. })
        ));
        let mut record = sample();
        record.entries[0].name = "n".repeat(MAX_NAME_LEN);
        assert!(record.encode().is_ok());
    }

    #[test]
    fn oversized_input_is_refused_unread() {
        // Zeroed pages are never touched, so this costs address space, not memory.
        let huge = vec![0u8; MAX_RECORD_LEN + 1];
        assert_eq!(
            CompletionRecord::decode(&huge),
            Err(RecordError::TooLong {
                len: MAX_RECORD_LEN as u64 + 1
            })
        );
    }

    #[test]
    fn special_files_are_not_recorded() {
        let mut record = sample();
        record.entries[1].kind = EntryKind::Special;
        assert_eq!(record.encode(), Err(RecordError::SpecialKind { entry: 1 }));
    }

    fn any_entry() -> impl Strategy<Value = CompletionEntry> {
        (
            "\\PC{0,24}",
            prop_oneof![
                Just(EntryKind::File),
                Just(EntryKind::Directory),
                Just(EntryKind::Symlink)
            ],
            any::<u64>(),
            any::<i64>(),
            0u32..1_000_000_000,
            any::<u32>(),
            proptest::option::of("\\PC{0,24}"),
            proptest::option::of(any::<[u8; 32]>()),
        )
            .prop_map(
                |(
                    name,
                    kind,
                    size,
                    mtime_seconds,
                    mtime_nanos,
                    mode,
                    symlink_target,
                    content_hash,
                )| {
                    CompletionEntry {
                        name,
                        kind,
                        size,
                        mtime_seconds,
                        mtime_nanos,
                        mode,
                        symlink_target,
                        content_hash,
                    }
                },
            )
    }

    fn any_record() -> impl Strategy<Value = CompletionRecord> {
        (
            any::<u32>(),
            "\\PC{0,32}",
            proptest::collection::vec(any_entry(), 0..12),
        )
            .prop_map(|(version, unit_id, entries)| CompletionRecord {
                version,
                unit_id,
                entries,
            })
    }

    proptest! {
        #[test]
        fn any_record_round_trips(record in any_record()) {
            let bytes = record.encode().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let decoded = CompletionRecord::decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decoded, record);
        }

        #[test]
        fn flipped_byte_is_refused(record in any_record(), pick in any::<usize>(), flip in 1u8..=255) {
            let mut bytes = record.encode().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let position = pick % bytes.len();
            bytes[position] ^= flip;
            prop_assert!(CompletionRecord::decode(&bytes).is_err());
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = CompletionRecord::decode(&bytes);
            let mut with_magic = RECORD_MAGIC.to_vec();
            with_magic.extend_from_slice(&RECORD_FORMAT_VERSION.to_le_bytes());
            with_magic.extend_from_slice(&bytes);
            let _ = CompletionRecord::decode(&with_magic);
            // Sealed, so the errors past the checksum are reached too.
            let _ = CompletionRecord::decode(&sealed(&with_magic));
        }
    }
}
