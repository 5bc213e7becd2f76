//! Resume journals and completion records (`xfer::blocks`): any bytes decode or are refused
//! without panicking, and whatever decodes is consistent and re-encodes to the same bytes.
//!
//! Checksums cannot be forged by the fuzzer, so besides feeding it raw bytes this target also
//! wraps its bytes in a genuine journal header (mixing genuine records with raw garbage) and
//! builds completion records from them, to reach the code behind the checksums.
#![no_main]

use xfer::blocks::journal::{self, JournalHeader, RECORD_LEN};
use xfer::blocks::{CompletionEntry, CompletionRecord, EntryKind};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check_journal(data);
    check_journal(&after_genuine_header(data));
    if let Ok(record) = CompletionRecord::decode(data) {
        // The encoding is canonical: only the exact encoding of a record decodes to it.
        assert_eq!(record.encode().as_deref(), Ok(data));
    }
    check_record_round_trip(data);
});

/// Decodes `bytes` as a journal and checks what any successful decode must satisfy.
fn check_journal(bytes: &[u8]) {
    let Ok(journal) = journal::decode(bytes) else {
        return;
    };
    let header_len = journal.header_len();
    let valid_len = journal.valid_len();
    assert!(header_len <= valid_len && valid_len <= bytes.len());
    assert_eq!((valid_len - header_len) % RECORD_LEN, 0);
    assert_eq!(journal.damaged_tail(), valid_len != bytes.len());
    let block_count = journal.layout().block_count();
    assert!(journal.blocks().keys().all(|&index| index < block_count));
    assert!(journal.blocks().len() <= (valid_len - header_len) / RECORD_LEN);
    assert_eq!(
        journal::encode_header(journal.header()).as_deref(),
        Ok(&bytes[..header_len])
    );
    // The valid prefix is what the engine keeps: it decodes whole, to the same blocks.
    let kept = journal::decode(&bytes[..valid_len]).expect("the valid prefix decodes");
    assert!(!kept.damaged_tail());
    assert_eq!(kept.blocks(), journal.blocks());
    let compacted = journal::encode(journal.header(), journal.blocks()).expect("valid journal");
    let compacted = journal::decode(&compacted).expect("a compacted journal decodes");
    assert_eq!(compacted.blocks(), journal.blocks());
    assert!(journal.matches(compacted.header()));
}

/// A genuine header followed by the input read as commands: genuine records (some with indices
/// past the end) and runs of raw bytes.
fn after_genuine_header(data: &[u8]) -> Vec<u8> {
    let header = JournalHeader {
        block_size: 4096,
        file_size: 16 * 4096 + 5,
        source_mtime_seconds: 1_700_000_000,
        source_mtime_nanos: 0,
        source_id: "fuzz:22:/source".to_owned(),
        destination_id: "/destination".to_owned(),
    };
    let mut bytes = journal::encode_header(&header).expect("valid header");
    let mut rest = data;
    while let Some((&command, tail)) = rest.split_first() {
        if command & 1 == 0 {
            let index = u64::from(command >> 1) % 20;
            bytes.extend_from_slice(&journal::encode_record(index, &[command; 32]));
            rest = tail;
        } else {
            let len = usize::from(command >> 1).min(tail.len());
            let (raw, tail) = tail.split_at(len);
            bytes.extend_from_slice(raw);
            rest = tail;
        }
    }
    bytes
}

/// Builds a completion record from the input, checks it round-trips, and that a flipped byte in
/// its encoding is refused.
fn check_record_round_trip(data: &[u8]) {
    let entries: Vec<CompletionEntry> = (0u32..)
        .zip(data.chunks(9))
        .map(|(ordinal, chunk)| {
            let first = chunk.first().copied().unwrap_or(0);
            let kind = match first % 3 {
                0 => EntryKind::File,
                1 => EntryKind::Directory,
                _ => EntryKind::Symlink,
            };
            let name = String::from_utf8_lossy(chunk).into_owned();
            CompletionEntry {
                symlink_target: (kind == EntryKind::Symlink).then(|| name.chars().rev().collect()),
                content_hash: (chunk.len() % 2 == 1).then_some([first; 32]),
                name,
                kind,
                size: u64::from(first) << 20,
                mtime_seconds: i64::from(first) - 128,
                mtime_nanos: ordinal,
                mode: 0o100644,
            }
        })
        .collect();
    let record = CompletionRecord {
        version: data.len() as u32,
        unit_id: String::from_utf8_lossy(data.get(..32).unwrap_or(data)).into_owned(),
        entries,
    };
    let bytes = record.encode().expect("a record within the caps encodes");
    assert_eq!(CompletionRecord::decode(&bytes).as_ref(), Ok(&record));
    let mut damaged = bytes.clone();
    let position = data.len() % damaged.len();
    damaged[position] ^= 0x20;
    assert!(CompletionRecord::decode(&damaged).is_err());
}
