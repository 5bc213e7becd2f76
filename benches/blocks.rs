//! Benchmarks of the block core (`xfer::blocks`): hashing 1 MiB blocks on one thread and on
//! several, comparing the block hashes of two copies of a file of 100k blocks and finding what
//! must travel, and encoding and decoding a journal of 100k records.
//!
//! Run with `cargo bench --bench blocks`; add `-- --quick` for a short run.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::thread;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use xfer::blocks::journal::{self, JournalHeader};
use xfer::blocks::{
    BlockHash, BlockLayout, BlockSet, CompletionEntry, CompletionRecord, DEFAULT_BLOCK_SIZE,
    EntryKind, FileHasher, compare_hashes, hash_block,
};

const MIB: usize = 1 << 20;
const DIFF_BLOCKS: u64 = 100_000;
const JOURNAL_RECORDS: u64 = 100_000;

/// Incompressible-looking bytes from a xorshift generator, so no hashing shortcut applies.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn layout(file_size: u64) -> BlockLayout {
    BlockLayout::new(file_size, DEFAULT_BLOCK_SIZE).expect("benchmark layouts are valid")
}

fn threads() -> usize {
    thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// The hash of every block of `data` (cut by `layout`), each of `threads` threads hashing a
/// contiguous run of blocks, as the engine spreads a file's blocks over its cores.
fn hash_blocks(layout: BlockLayout, data: &[u8], threads: usize) -> Vec<BlockHash> {
    let block = layout.block_size() as usize;
    let mut hashes = vec![[0u8; 32]; layout.block_count() as usize];
    let per_thread = hashes.len().div_ceil(threads.max(1)).max(1);
    thread::scope(|scope| {
        for (out, bytes) in hashes
            .chunks_mut(per_thread)
            .zip(data.chunks(per_thread * block))
        {
            scope.spawn(move || {
                for (slot, block) in out.iter_mut().zip(bytes.chunks(block)) {
                    *slot = hash_block(block);
                }
            });
        }
    });
    hashes
}

/// One 1 MiB block: the keyed block hash against plain BLAKE3, then 64 blocks on one thread and
/// on every core.
fn block_hashing(c: &mut Criterion) {
    let block = pseudo_random(MIB);
    let mut group = c.benchmark_group("hash 1 MiB block");
    group.throughput(Throughput::Bytes(MIB as u64));
    group.bench_function("hash_block (keyed)", |b| {
        b.iter(|| hash_block(black_box(&block)))
    });
    group.bench_function("blake3::Hasher::update (plain)", |b| {
        b.iter(|| {
            let mut hasher = blake3::Hasher::new();
            hasher.update(black_box(&block));
            hasher.finalize()
        })
    });
    group.bench_function("FileHasher", |b| {
        b.iter(|| FileHasher::new().update(black_box(&block)).finish())
    });
    group.finish();

    let blocks = 64;
    let data = pseudo_random(blocks * MIB);
    let layout = layout(data.len() as u64);
    let mut group = c.benchmark_group("hash 64 blocks of 1 MiB");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(10);
    let mut counts = vec![1, 2, threads()];
    counts.sort_unstable();
    counts.dedup();
    for count in counts {
        group.bench_with_input(BenchmarkId::new("threads", count), &count, |b, &count| {
            b.iter(|| hash_blocks(layout, black_box(&data), count))
        });
    }
    group.finish();
}

/// A distinct, cheap hash per block, so hash lists of 100k blocks need no 100 GB of data.
fn synthetic_hash(index: u64, salt: u8) -> BlockHash {
    let mut hash = [salt; 32];
    hash[..8].copy_from_slice(&index.to_le_bytes());
    hash
}

/// Two copies of a file of 100k blocks differing in every 100th block: the local hashes (all
/// of them, or a journal's) compared with the remote's, the blocks that agree held, and what
/// must then travel.
fn diffing(c: &mut Criterion) {
    let layout = layout(DIFF_BLOCKS * MIB as u64);
    let remote: Vec<BlockHash> = (0..DIFF_BLOCKS).map(|i| synthetic_hash(i, 1)).collect();
    let local: BTreeMap<u64, BlockHash> = (0..DIFF_BLOCKS)
        .map(|i| (i, synthetic_hash(i, if i % 100 == 0 { 2 } else { 1 })))
        .collect();
    let header = journal_header(layout);
    let journal = journal::decode(&journal::encode(&header, &local).expect("valid journal"))
        .expect("valid journal");
    let to_fetch = |local: &BTreeMap<u64, BlockHash>| {
        let mut blocks = BlockSet::new(layout);
        blocks.hold_all_checked(compare_hashes(local, &remote).same);
        (blocks.missing_count(), blocks.bytes_needed())
    };
    assert_eq!(to_fetch(&local).0, 1000);

    let mut group = c.benchmark_group("blocks to fetch, 100k blocks");
    group.throughput(Throughput::Elements(DIFF_BLOCKS));
    group.bench_function("compare_hashes", |b| {
        b.iter(|| compare_hashes(black_box(&local), black_box(&remote)))
    });
    group.bench_function("local = every block", |b| {
        b.iter(|| to_fetch(black_box(&local)))
    });
    group.bench_function("local = journal", |b| {
        b.iter(|| to_fetch(black_box(journal.blocks())))
    });
    group.finish();
}

fn journal_header(layout: BlockLayout) -> JournalHeader {
    JournalHeader {
        block_size: layout.block_size(),
        file_size: layout.file_size(),
        source_mtime_seconds: 1_700_000_000,
        source_mtime_nanos: 123_456_789,
        source_id: "example.org:22:/srv/data/disk.img".to_owned(),
        destination_id: "/home/me/disk.img".to_owned(),
    }
}

/// A journal of 100k records appended one by one, and decoded whole.
fn journal_codec(c: &mut Criterion) {
    let layout = layout(JOURNAL_RECORDS * MIB as u64);
    let header = journal_header(layout);
    let hashes: Vec<BlockHash> = (0..JOURNAL_RECORDS).map(|i| synthetic_hash(i, 3)).collect();
    let encode = || {
        let mut bytes = journal::encode_header(&header).expect("valid header");
        bytes.reserve(hashes.len() * journal::RECORD_LEN);
        for (index, hash) in (0..).zip(&hashes) {
            bytes.extend_from_slice(&journal::encode_record(index, hash));
        }
        bytes
    };
    let bytes = encode();
    let mut group = c.benchmark_group("journal, 100k records");
    group.throughput(Throughput::Elements(JOURNAL_RECORDS));
    group.bench_function("encode", |b| b.iter(encode));
    group.bench_function("decode", |b| b.iter(|| journal::decode(black_box(&bytes))));
    group.finish();
}

/// A completion record of 10k files.
fn record_codec(c: &mut Criterion) {
    let entries = 10_000u32;
    let record = CompletionRecord {
        version: 1,
        unit_id: "example.org:22:/srv/photos".to_owned(),
        entries: (0..entries)
            .map(|i| CompletionEntry {
                name: format!("IMG_{i:05}.jpg"),
                kind: EntryKind::File,
                size: u64::from(i) * 4096,
                mtime_seconds: 1_700_000_000 + i64::from(i),
                mtime_nanos: i,
                mode: 0o100644,
                symlink_target: None,
                content_hash: Some([i as u8; 32]),
            })
            .collect(),
    };
    let bytes = record.encode().expect("valid record");
    let mut group = c.benchmark_group("completion record, 10k entries");
    group.throughput(Throughput::Elements(u64::from(entries)));
    group.bench_function("encode", |b| b.iter(|| black_box(&record).encode()));
    group.bench_function("decode", |b| {
        b.iter(|| CompletionRecord::decode(black_box(&bytes)))
    });
    group.finish();
}

criterion_group!(benches, block_hashing, diffing, journal_codec, record_codec);
criterion_main!(benches);
