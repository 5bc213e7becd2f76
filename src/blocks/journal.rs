//! The resume journal codec: the bytes of the append-only file that records, for one
//! destination file, which blocks have been written and what they hashed to. This module only
//! turns headers and records into bytes and bytes back into a [`Journal`]; the engine owns the
//! file.
//!
//! # Byte format (version 1, all integers little-endian)
//!
//! Header:
//!
//! | bytes | field                                                            |
//! |-------|------------------------------------------------------------------|
//! | 8     | magic `XFERJNL\0`                                                |
//! | 2     | format version, `u16` = 1                                        |
//! | 4     | block size, `u32`                                                |
//! | 8     | file size, `u64`                                                 |
//! | 8     | source mtime seconds, `i64`                                      |
//! | 4     | source mtime nanoseconds, `u32` (< 10^9)                         |
//! | 4 + n | source id: `u32` byte length n ≤ 4096, then UTF-8                |
//! | 4 + m | destination id: `u32` byte length m ≤ 4096, then UTF-8           |
//! | 8     | checksum: keyed BLAKE3 of all the header bytes above, first 8    |
//!
//! Then any number of fixed-size records of [`RECORD_LEN`] = 48 bytes:
//!
//! | bytes | field                                                            |
//! |-------|------------------------------------------------------------------|
//! | 8     | block index, `u64`                                               |
//! | 32    | block hash ([`hash_block`](super::hash_block))                   |
//! | 8     | checksum: keyed BLAKE3 of the 40 bytes above, first 8            |
//!
//! The two checksum keys are derived from different context strings, so a record can never
//! pass for a header or the other way round. A record carries its own checksum so that a torn
//! append (a crash mid-write, a tail of zeros after power loss) is found and cut off while
//! every record before it is kept.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use super::codec::{Reader, checksum, nanos_in_range, put_string};
use super::hash::BlockHash;
use super::layout::{BlockLayout, LayoutError};

/// The first 8 bytes of every journal.
pub const JOURNAL_MAGIC: [u8; 8] = *b"XFERJNL\0";

/// The journal format version this build writes and reads.
pub const JOURNAL_VERSION: u16 = 1;

/// The cap on the source and destination ids, in bytes: a `host:port:path` whose path is at
/// the Linux `PATH_MAX` fits.
pub const MAX_ID_LEN: usize = 4096;

/// The length of one encoded record: index, hash and checksum.
pub const RECORD_LEN: usize = 8 + 32 + CHECKSUM_LEN;

const CHECKSUM_LEN: usize = 8;

/// The header bytes before the source id: magic, version, block size, file size, mtime.
const FIXED_HEADER_LEN: usize = 8 + 2 + 4 + 8 + 8 + 4;

const HEADER_CONTEXT: &str = "xfer journal header v1";
const RECORD_CONTEXT: &str = "xfer journal record v1";

static HEADER_KEY: LazyLock<[u8; 32]> = LazyLock::new(|| blake3::derive_key(HEADER_CONTEXT, b""));
static RECORD_KEY: LazyLock<[u8; 32]> = LazyLock::new(|| blake3::derive_key(RECORD_CONTEXT, b""));

/// What a journal is about: the destination file's layout and the identity of the source it is
/// being filled from. A journal whose header differs in any field from the current transfer's
/// is stale ([`Journal::matches`]): the source changed or the journal belongs elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JournalHeader {
    pub block_size: u32,
    pub file_size: u64,
    pub source_mtime_seconds: i64,
    pub source_mtime_nanos: u32,
    /// Where the data comes from, e.g. `host:port:path`; at most [`MAX_ID_LEN`] bytes.
    pub source_id: String,
    /// Where the data goes; at most [`MAX_ID_LEN`] bytes.
    pub destination_id: String,
}

impl JournalHeader {
    /// The layout of the destination file, if the block size and file size are acceptable.
    pub fn layout(&self) -> Result<BlockLayout, LayoutError> {
        BlockLayout::new(self.file_size, self.block_size)
    }
}

/// Why a journal header could not be encoded or a journal could not be decoded. Any of these
/// from [`decode`] means the whole journal is unusable: the engine starts the file afresh.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    #[error(
        "journal is truncated inside its header ({len} bytes): it was never completely written"
    )]
    TruncatedHeader { len: usize },
    #[error("not an xfer journal: bad magic bytes")]
    BadMagic,
    #[error(
        "journal format version {found} is not supported; this build reads version {JOURNAL_VERSION}"
    )]
    UnsupportedVersion { found: u16 },
    #[error("journal header {field} is {len} bytes, over the {MAX_ID_LEN}-byte cap")]
    IdTooLong { field: &'static str, len: u64 },
    #[error("journal header {field} is not valid UTF-8")]
    IdNotUtf8 { field: &'static str },
    #[error("journal header checksum mismatch")]
    HeaderChecksum,
    #[error("journal header source mtime nanoseconds {nanos} is not below one second")]
    BadNanos { nanos: u32 },
    #[error("journal header: {0}")]
    Layout(#[from] LayoutError),
    #[error("journal block index {index} beyond the file's {block_count} blocks")]
    IndexBeyondEnd { index: u64, block_count: u64 },
}

/// Why decoding stopped before the end of the input. The records before the damage are kept;
/// the engine truncates the file to [`Journal::valid_len`] and appends from there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TailDamage {
    #[error("journal record {record} at byte {offset}: torn, only {len} of {RECORD_LEN} bytes")]
    Torn {
        record: u64,
        offset: usize,
        len: usize,
    },
    #[error("journal record {record} at byte {offset}: checksum mismatch")]
    Checksum { record: u64, offset: usize },
    #[error(
        "journal record {record} at byte {offset}: block index {index} beyond the file's \
         {block_count} blocks"
    )]
    IndexBeyondEnd {
        record: u64,
        offset: usize,
        index: u64,
        block_count: u64,
    },
}

/// A decoded journal: its header and the last hash recorded for each block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    header: JournalHeader,
    layout: BlockLayout,
    blocks: BTreeMap<u64, BlockHash>,
    header_len: usize,
    valid_len: usize,
    tail_damage: Option<TailDamage>,
}

impl Journal {
    pub fn header(&self) -> &JournalHeader {
        &self.header
    }

    /// The destination file's layout, from the (validated) header.
    pub fn layout(&self) -> BlockLayout {
        self.layout
    }

    /// The hash last recorded for each block written; every index is below the block count.
    pub fn blocks(&self) -> &BTreeMap<u64, BlockHash> {
        &self.blocks
    }

    pub fn into_blocks(self) -> BTreeMap<u64, BlockHash> {
        self.blocks
    }

    /// The length of the encoded header, where the first record starts.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// The length of the valid prefix of the input: the header and every record kept. The
    /// engine truncates the file to this before appending, so new records follow good ones.
    pub fn valid_len(&self) -> usize {
        self.valid_len
    }

    /// Whether bytes after [`valid_len`](Self::valid_len) were dropped.
    pub fn damaged_tail(&self) -> bool {
        self.tail_damage.is_some()
    }

    /// Why bytes after [`valid_len`](Self::valid_len) were dropped, for the log.
    pub fn tail_damage(&self) -> Option<&TailDamage> {
        self.tail_damage.as_ref()
    }

    /// Whether this journal was written for exactly `header`. Any difference (another source
    /// mtime, size, block size, source or destination) makes the journal stale.
    pub fn matches(&self, header: &JournalHeader) -> bool {
        self.header == *header
    }
}

/// The bytes of a journal header, ready to be written at the start of a new journal file.
/// Refuses headers that [`decode`] would refuse.
pub fn encode_header(header: &JournalHeader) -> Result<Vec<u8>, JournalError> {
    header.layout()?;
    if !nanos_in_range(header.source_mtime_nanos) {
        return Err(JournalError::BadNanos {
            nanos: header.source_mtime_nanos,
        });
    }
    for (field, id) in [
        ("source id", &header.source_id),
        ("destination id", &header.destination_id),
    ] {
        if id.len() > MAX_ID_LEN {
            return Err(JournalError::IdTooLong {
                field,
                len: id.len() as u64,
            });
        }
    }
    let mut out = Vec::with_capacity(
        FIXED_HEADER_LEN + 8 + header.source_id.len() + header.destination_id.len() + CHECKSUM_LEN,
    );
    out.extend_from_slice(&JOURNAL_MAGIC);
    out.extend_from_slice(&JOURNAL_VERSION.to_le_bytes());
    out.extend_from_slice(&header.block_size.to_le_bytes());
    out.extend_from_slice(&header.file_size.to_le_bytes());
    out.extend_from_slice(&header.source_mtime_seconds.to_le_bytes());
    out.extend_from_slice(&header.source_mtime_nanos.to_le_bytes());
    put_string(&mut out, &header.source_id);
    put_string(&mut out, &header.destination_id);
    let sum: [u8; CHECKSUM_LEN] = checksum(&HEADER_KEY, &out);
    out.extend_from_slice(&sum);
    Ok(out)
}

/// The bytes of one record, to append after the header once block `index` is written and has
/// hashed to `hash`. A later record for the same index replaces an earlier one.
pub fn encode_record(index: u64, hash: &BlockHash) -> [u8; RECORD_LEN] {
    let mut out = [0u8; RECORD_LEN];
    let (body, sum) = out.split_at_mut(RECORD_LEN - CHECKSUM_LEN);
    let (index_bytes, hash_bytes) = body.split_at_mut(8);
    index_bytes.copy_from_slice(&index.to_le_bytes());
    hash_bytes.copy_from_slice(hash);
    sum.copy_from_slice(&checksum::<CHECKSUM_LEN>(&RECORD_KEY, body));
    out
}

/// A compacted journal: the header and one record per block of `blocks`, in index order.
/// Refuses indices beyond the file's blocks, which [`decode`] would drop.
pub fn encode(
    header: &JournalHeader,
    blocks: &BTreeMap<u64, BlockHash>,
) -> Result<Vec<u8>, JournalError> {
    let block_count = header.layout()?.block_count();
    if let Some((&index, _)) = blocks.last_key_value()
        && index >= block_count
    {
        return Err(JournalError::IndexBeyondEnd { index, block_count });
    }
    let mut out = encode_header(header)?;
    out.reserve(blocks.len().saturating_mul(RECORD_LEN));
    for (&index, hash) in blocks {
        out.extend_from_slice(&encode_record(index, hash));
    }
    Ok(out)
}

/// Decodes a journal file's bytes. A bad header is an error; damage after it only stops the
/// decoding there ([`Journal::tail_damage`]), keeping every record before it.
pub fn decode(bytes: &[u8]) -> Result<Journal, JournalError> {
    let truncated = JournalError::TruncatedHeader { len: bytes.len() };
    let mut reader = Reader::new(bytes);
    let magic: [u8; 8] = reader.array().ok_or(truncated.clone())?;
    if magic != JOURNAL_MAGIC {
        return Err(JournalError::BadMagic);
    }
    let version = reader.u16().ok_or(truncated.clone())?;
    if version != JOURNAL_VERSION {
        return Err(JournalError::UnsupportedVersion { found: version });
    }
    let block_size = reader.u32().ok_or(truncated.clone())?;
    let file_size = reader.u64().ok_or(truncated.clone())?;
    let source_mtime_seconds = reader.i64().ok_or(truncated.clone())?;
    let source_mtime_nanos = reader.u32().ok_or(truncated.clone())?;
    let source_id = read_id(&mut reader, "source id", &truncated)?;
    let destination_id = read_id(&mut reader, "destination id", &truncated)?;
    let header_body = bytes.get(..reader.position()).ok_or(truncated.clone())?;
    let sum: [u8; CHECKSUM_LEN] = reader.array().ok_or(truncated)?;
    // The checksum comes before any check of what the fields mean, so that damage is reported
    // as damage rather than as a strange block size.
    if sum != checksum::<CHECKSUM_LEN>(&HEADER_KEY, header_body) {
        return Err(JournalError::HeaderChecksum);
    }
    let layout = BlockLayout::new(file_size, block_size)?;
    if !nanos_in_range(source_mtime_nanos) {
        return Err(JournalError::BadNanos {
            nanos: source_mtime_nanos,
        });
    }
    let header = JournalHeader {
        block_size,
        file_size,
        source_mtime_seconds,
        source_mtime_nanos,
        source_id: to_string(source_id, "source id")?,
        destination_id: to_string(destination_id, "destination id")?,
    };
    let header_len = reader.position();
    let (blocks, valid_len, tail_damage) = decode_records(reader.rest(), header_len, layout);
    Ok(Journal {
        header,
        layout,
        blocks,
        header_len,
        valid_len,
        tail_damage,
    })
}

fn read_id<'a>(
    reader: &mut Reader<'a>,
    field: &'static str,
    truncated: &JournalError,
) -> Result<&'a [u8], JournalError> {
    let len = reader.u32().ok_or(truncated.clone())?;
    // Checked before the bytes are taken, so a huge length is refused as such, not as
    // truncation.
    let len = usize::try_from(len)
        .ok()
        .filter(|&len| len <= MAX_ID_LEN)
        .ok_or(JournalError::IdTooLong {
            field,
            len: u64::from(len),
        })?;
    reader.take(len).ok_or(truncated.clone())
}

fn to_string(bytes: &[u8], field: &'static str) -> Result<String, JournalError> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| JournalError::IdNotUtf8 { field })
}

/// Reads records until the input ends or a record is damaged. Returns the blocks, the length
/// of the valid prefix (counted from the start of the journal) and the damage, if any.
fn decode_records(
    records: &[u8],
    header_len: usize,
    layout: BlockLayout,
) -> (BTreeMap<u64, BlockHash>, usize, Option<TailDamage>) {
    let mut blocks = BTreeMap::new();
    let mut valid_len = header_len;
    for (record, bytes) in (0u64..).zip(records.chunks(RECORD_LEN)) {
        let offset = valid_len;
        let Ok(bytes) = <&[u8; RECORD_LEN]>::try_from(bytes) else {
            let damage = TailDamage::Torn {
                record,
                offset,
                len: bytes.len(),
            };
            return (blocks, valid_len, Some(damage));
        };
        let (body, sum) = bytes.split_at(RECORD_LEN - CHECKSUM_LEN);
        if sum != checksum::<CHECKSUM_LEN>(&RECORD_KEY, body) {
            return (
                blocks,
                valid_len,
                Some(TailDamage::Checksum { record, offset }),
            );
        }
        let mut reader = Reader::new(body);
        let (Some(index), Some(hash)) = (reader.u64(), reader.array::<32>()) else {
            // Unreachable: the body is exactly 40 bytes. Treated as damage all the same.
            return (
                blocks,
                valid_len,
                Some(TailDamage::Checksum { record, offset }),
            );
        };
        if !layout.contains(index) {
            let damage = TailDamage::IndexBeyondEnd {
                record,
                offset,
                index,
                block_count: layout.block_count(),
            };
            return (blocks, valid_len, Some(damage));
        }
        blocks.insert(index, hash);
        valid_len += RECORD_LEN;
    }
    (blocks, valid_len, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::hash::hash_block;
    use crate::blocks::layout::{MAX_BLOCK_COUNT, MIN_BLOCK_SIZE};
    use crate::blocks::set::{BlockSet, compare_hashes};
    use proptest::prelude::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn header(file_size: u64) -> JournalHeader {
        JournalHeader {
            block_size: MIN_BLOCK_SIZE,
            file_size,
            source_mtime_seconds: 1_700_000_000,
            source_mtime_nanos: 123_456_789,
            source_id: "example.org:22:/data/big.img".to_owned(),
            destination_id: "/home/me/big.img".to_owned(),
        }
    }

    /// A header whose checksum is right whatever its fields say, to reach the checks after it.
    fn sealed(body: &[u8]) -> Vec<u8> {
        let mut out = body.to_vec();
        out.extend_from_slice(&checksum::<CHECKSUM_LEN>(&HEADER_KEY, body));
        out
    }

    fn header_body(header: &JournalHeader) -> Result<Vec<u8>, JournalError> {
        let mut bytes = encode_header(header)?;
        bytes.truncate(bytes.len() - CHECKSUM_LEN);
        Ok(bytes)
    }

    #[test]
    fn round_trip_keeps_the_last_hash_per_block() -> TestResult {
        let header = header(3 * 4096 + 1);
        let mut bytes = encode_header(&header)?;
        let header_len = bytes.len();
        for (index, seed) in [(0u64, 1u8), (3, 2), (0, 3)] {
            bytes.extend_from_slice(&encode_record(index, &[seed; 32]));
        }
        let journal = decode(&bytes)?;
        assert_eq!(journal.header(), &header);
        assert!(journal.matches(&header));
        assert_eq!(journal.header_len(), header_len);
        assert_eq!(journal.valid_len(), bytes.len());
        assert!(!journal.damaged_tail());
        assert_eq!(
            journal.blocks(),
            &BTreeMap::from([(0, [3; 32]), (3, [2; 32])])
        );
        assert_eq!(
            encode(&header, journal.blocks())?.len(),
            header_len + 2 * RECORD_LEN
        );
        Ok(())
    }

    #[test]
    fn record_beyond_the_end_stops_decoding() -> TestResult {
        let header = header(12 * 4096);
        let mut bytes = encode_header(&header)?;
        let header_len = bytes.len();
        bytes.extend_from_slice(&encode_record(11, &[1; 32]));
        bytes.extend_from_slice(&encode_record(12, &[1; 32]));
        bytes.extend_from_slice(&encode_record(5, &[1; 32]));
        let journal = decode(&bytes)?;
        assert_eq!(journal.blocks().len(), 1);
        assert_eq!(journal.valid_len(), header_len + RECORD_LEN);
        let message = journal.tail_damage().map(ToString::to_string);
        assert_eq!(
            message.as_deref(),
            Some(
                format!(
                    "journal record 1 at byte {}: block index 12 beyond the file's 12 blocks",
                    header_len + RECORD_LEN
                )
                .as_str()
            )
        );
        assert!(matches!(
            encode(&header, &BTreeMap::from([(12, [0; 32])])),
            Err(JournalError::IndexBeyondEnd {
                index: 12,
                block_count: 12
            })
        ));
        Ok(())
    }

    #[test]
    fn zeroed_tail_is_dropped() -> TestResult {
        let mut bytes = encode_header(&header(1 << 20))?;
        bytes.extend_from_slice(&encode_record(2, &[5; 32]));
        let good_len = bytes.len();
        bytes.extend_from_slice(&[0; 3 * RECORD_LEN]);
        let journal = decode(&bytes)?;
        assert_eq!(journal.valid_len(), good_len);
        assert!(matches!(
            journal.tail_damage(),
            Some(TailDamage::Checksum { record: 1, .. })
        ));
        Ok(())
    }

    #[test]
    fn every_truncation_decodes_to_a_prefix() -> TestResult {
        let header = header(10 * 4096);
        let records: Vec<(u64, BlockHash)> = (0..6).map(|i| (i * 7 % 10, [i as u8; 32])).collect();
        let mut bytes = encode_header(&header)?;
        let header_len = bytes.len();
        for (index, hash) in &records {
            bytes.extend_from_slice(&encode_record(*index, hash));
        }
        for cut in 0..=bytes.len() {
            let decoded = decode(&bytes[..cut]);
            if cut < header_len {
                assert!(
                    matches!(decoded, Err(JournalError::TruncatedHeader { len }) if len == cut),
                    "{cut}: {decoded:?}"
                );
                continue;
            }
            let journal = decoded?;
            let whole = (cut - header_len) / RECORD_LEN;
            let expected: BTreeMap<u64, BlockHash> = records[..whole].iter().copied().collect();
            assert_eq!(journal.blocks(), &expected);
            assert_eq!(journal.valid_len(), header_len + whole * RECORD_LEN);
            assert_eq!(journal.damaged_tail(), journal.valid_len() != cut);
        }
        Ok(())
    }

    #[test]
    fn every_header_byte_is_protected() -> TestResult {
        let bytes = encode_header(&header(5000))?;
        for position in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[position] ^= flip;
                assert!(
                    decode(&damaged).is_err(),
                    "byte {position} flipped by {flip:#x}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn header_errors_say_what_is_wrong() -> TestResult {
        let good = encode_header(&header(5000))?;
        assert_eq!(
            decode(b"XFERJN"),
            Err(JournalError::TruncatedHeader { len: 6 })
        );
        assert_eq!(decode(b"XFERDONE and more"), Err(JournalError::BadMagic));
        let mut future = good.clone();
        future[8] = 2;
        assert_eq!(
            decode(&future),
            Err(JournalError::UnsupportedVersion { found: 2 })
        );
        let mut corrupt = good.clone();
        corrupt[20] ^= 1;
        let error = decode(&corrupt).err().map(|e| e.to_string());
        assert_eq!(error.as_deref(), Some("journal header checksum mismatch"));

        // A length over the cap is refused before anything is read or allocated for it.
        let mut huge = good[..FIXED_HEADER_LEN].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode(&huge),
            Err(JournalError::IdTooLong {
                field: "source id",
                len: u64::from(u32::MAX)
            })
        );

        // Well-sealed headers with impossible contents.
        let mut bad_size = header(5000);
        bad_size.block_size = 5000;
        let mut body = header_body(&header(5000))?;
        body[10..14].copy_from_slice(&5000u32.to_le_bytes());
        assert_eq!(
            decode(&sealed(&body)),
            Err(JournalError::Layout(LayoutError::BadBlockSize {
                block_size: 5000
            }))
        );
        assert!(encode_header(&bad_size).is_err());

        let mut body = header_body(&header(5000))?;
        body[14..22].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            decode(&sealed(&body)),
            Err(JournalError::Layout(LayoutError::TooManyBlocks { .. }))
        ));

        let mut body = header_body(&header(5000))?;
        body[30..34].copy_from_slice(&1_000_000_000u32.to_le_bytes());
        assert_eq!(
            decode(&sealed(&body)),
            Err(JournalError::BadNanos {
                nanos: 1_000_000_000
            })
        );

        let mut not_utf8 = header(5000);
        not_utf8.source_id = "ab".to_owned();
        let mut body = header_body(&not_utf8)?;
        body[FIXED_HEADER_LEN + 4] = 0xff;
        assert_eq!(
            decode(&sealed(&body)),
            Err(JournalError::IdNotUtf8 { field: "source id" })
        );
        Ok(())
    }

    #[test]
    fn ids_are_capped() {
        let mut long = header(5000);
        long.destination_id = "x".repeat(MAX_ID_LEN + 1);
        assert_eq!(
            encode_header(&long),
            Err(JournalError::IdTooLong {
                field: "destination id",
                len: MAX_ID_LEN as u64 + 1
            })
        );
        long.destination_id.pop();
        assert!(encode_header(&long).is_ok());
    }

    #[test]
    fn stale_journal_is_detected() -> TestResult {
        let base = header(5000);
        let journal = decode(&encode_header(&base)?)?;
        let changes: [fn(&mut JournalHeader); 6] = [
            |h| h.block_size *= 2,
            |h| h.file_size += 1,
            |h| h.source_mtime_seconds -= 1,
            |h| h.source_mtime_nanos += 1,
            |h| h.source_id.push('x'),
            |h| h.destination_id.push('x'),
        ];
        for change in changes {
            let mut other = base.clone();
            change(&mut other);
            assert!(!journal.matches(&other), "{other:?}");
        }
        Ok(())
    }

    #[test]
    fn journal_blocks_matching_the_source_leave_the_rest_to_fetch() -> TestResult {
        let data: Vec<u8> = (0..3 * 4096 + 10).map(|i| (i % 251) as u8).collect();
        let layout = BlockLayout::new(data.len() as u64, 4096)?;
        let source: Vec<BlockHash> = data.chunks(4096).map(hash_block).collect();
        let mut bytes = encode_header(&header(data.len() as u64))?;
        bytes.extend_from_slice(&encode_record(0, &hash_block(&data[..4096])));
        bytes.extend_from_slice(&encode_record(2, &[0; 32]));
        bytes.extend_from_slice(&encode_record(3, &hash_block(&data[3 * 4096..])));
        let journal = decode(&bytes)?;
        assert_eq!(journal.layout(), layout);
        let mut blocks = BlockSet::new(layout);
        blocks.hold_all_checked(compare_hashes(journal.blocks(), &source).same);
        assert_eq!(blocks.missing().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(blocks.bytes_needed(), 2 * 4096);
        Ok(())
    }

    fn any_header() -> impl Strategy<Value = JournalHeader> {
        (
            12u32..=26,
            any::<u64>(),
            any::<i64>(),
            0u32..1_000_000_000,
            "\\PC{0,40}",
            "\\PC{0,40}",
        )
            .prop_map(|(shift, size, seconds, nanos, source_id, destination_id)| {
                let block_size = 1u32 << shift;
                // Any size up to the block-count cap, and usually a small one.
                let cap = MAX_BLOCK_COUNT * u64::from(block_size);
                let file_size = if size % 2 == 0 {
                    size % (cap + 1)
                } else {
                    size % 40_000
                };
                JournalHeader {
                    block_size,
                    file_size,
                    source_mtime_seconds: seconds,
                    source_mtime_nanos: nanos,
                    source_id,
                    destination_id,
                }
            })
    }

    /// A header and records whose indices are in range (none for an empty file).
    fn journal_parts() -> impl Strategy<Value = (JournalHeader, Vec<(u64, BlockHash)>)> {
        any_header().prop_flat_map(|header| {
            let block_count = header.file_size.div_ceil(u64::from(header.block_size));
            let records = if block_count == 0 {
                Just(Vec::new()).boxed()
            } else {
                proptest::collection::vec((0..block_count, any::<BlockHash>()), 0..30).boxed()
            };
            (Just(header), records)
        })
    }

    fn encode_parts(
        header: &JournalHeader,
        records: &[(u64, BlockHash)],
    ) -> Result<(Vec<u8>, usize), TestCaseError> {
        let mut bytes = encode_header(header).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let header_len = bytes.len();
        for (index, hash) in records {
            bytes.extend_from_slice(&encode_record(*index, hash));
        }
        Ok((bytes, header_len))
    }

    fn decoded(bytes: &[u8]) -> Result<Journal, TestCaseError> {
        decode(bytes).map_err(|e| TestCaseError::fail(e.to_string()))
    }

    proptest! {
        #[test]
        fn round_trip((header, records) in journal_parts()) {
            let (bytes, header_len) = encode_parts(&header, &records)?;
            let journal = decoded(&bytes)?;
            prop_assert!(journal.matches(&header));
            prop_assert_eq!(journal.header_len(), header_len);
            prop_assert_eq!(journal.valid_len(), bytes.len());
            prop_assert!(!journal.damaged_tail());
            let expected: BTreeMap<u64, BlockHash> = records.iter().copied().collect();
            prop_assert_eq!(journal.blocks(), &expected);
            let compacted = encode(&header, &expected).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decoded(&compacted)?.into_blocks(), expected);
        }

        #[test]
        fn truncation_keeps_a_prefix((header, records) in journal_parts(), cut in any::<usize>()) {
            let (bytes, header_len) = encode_parts(&header, &records)?;
            let cut = header_len + cut % (bytes.len() - header_len + 1);
            let journal = decoded(&bytes[..cut])?;
            let whole = (cut - header_len) / RECORD_LEN;
            let expected: BTreeMap<u64, BlockHash> = records[..whole].iter().copied().collect();
            prop_assert_eq!(journal.blocks(), &expected);
            prop_assert_eq!(journal.valid_len(), header_len + whole * RECORD_LEN);
            prop_assert_eq!(journal.damaged_tail(), journal.valid_len() != cut);
        }

        #[test]
        fn flipped_record_byte_drops_that_record_and_the_rest(
            (header, records) in journal_parts(),
            pick in any::<usize>(),
            flip in 1u8..=255,
        ) {
            prop_assume!(!records.is_empty());
            let (mut bytes, header_len) = encode_parts(&header, &records)?;
            let position = header_len + pick % (bytes.len() - header_len);
            bytes[position] ^= flip;
            let damaged_record = (position - header_len) / RECORD_LEN;
            let journal = decoded(&bytes)?;
            let expected: BTreeMap<u64, BlockHash> = records[..damaged_record].iter().copied().collect();
            prop_assert_eq!(journal.blocks(), &expected);
            prop_assert_eq!(journal.valid_len(), header_len + damaged_record * RECORD_LEN);
            prop_assert!(journal.damaged_tail());
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
            let mut with_magic = JOURNAL_MAGIC.to_vec();
            with_magic.extend_from_slice(&JOURNAL_VERSION.to_le_bytes());
            with_magic.extend_from_slice(&bytes);
            let _ = decode(&with_magic);
        }

        #[test]
        fn random_tail_keeps_valid_records(
            (header, records) in journal_parts(),
            tail in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let (mut bytes, _) = encode_parts(&header, &records)?;
            let good_len = bytes.len();
            bytes.extend_from_slice(&tail);
            let journal = decoded(&bytes)?;
            // Garbage passes a record checksum with probability 2^-64 per record: never here.
            let expected: BTreeMap<u64, BlockHash> = records.iter().copied().collect();
            prop_assert_eq!(journal.blocks(), &expected);
            prop_assert_eq!(journal.valid_len(), good_len);
            prop_assert_eq!(journal.damaged_tail(), !tail.is_empty());
        }
    }
}
