//! The requests that read whole files to hash them: Digest (plain BLAKE3 of the file) and
//! BlockHashes (the block hashes of a range of blocks, read and hashed by several threads with
//! a bounded memory).

use super::files::open_regular;
use super::{Failure, HASH_MEMORY_PER_JOB};
use crate::agent::protocol::ErrorCode;
use crate::blocks::is_valid_block_size;
use crate::file_hashing;
use std::fs::{File, OpenOptions};
use std::io;
use std::sync::atomic::AtomicBool;

/// The plain BLAKE3 of everything in `file` (read as [`file_hashing`] reads).
pub(super) fn hash_whole(file: &File) -> io::Result<[u8; 32]> {
    let (_, blake3, _) = file_hashing::whole_file_digests(file, u64::MAX, true, false)?;
    Ok(blake3.unwrap_or_default())
}

pub(super) fn digest(path: &str) -> Result<[u8; 32], Failure> {
    let file = open_regular(path, OpenOptions::new().read(true))?;
    Ok(hash_whole(&file)?)
}

/// The hashes of blocks `first..first + count`, none past the end of the file. The blocks are
/// read and hashed by several threads; if the file shrinks meanwhile, the list ends with the
/// first block that came up short.
pub(super) fn block_hashes(
    path: &str,
    block_size: u32,
    first: u64,
    count: u32,
) -> Result<Vec<[u8; 32]>, Failure> {
    if !is_valid_block_size(block_size) {
        return Err(Failure::new(
            ErrorCode::Invalid,
            format!("block size {block_size} is not a power of two between 4 KiB and 64 MiB"),
        ));
    }
    let file = open_regular(path, OpenOptions::new().read(true))?;
    let size = file.metadata()?.len();
    let Some(range) = BlockRange::within(size, block_size, first, count) else {
        return Ok(Vec::new());
    };
    let hashed = hash_blocks(&file, &range)?;
    hashes_in_order(&range, hashed)
}

/// The blocks a BlockHashes request covers in a file of `size` bytes: from `first`, `blocks`
/// of them, none past the end of the file.
struct BlockRange {
    size: u64,
    block_size: u32,
    first: u64,
    blocks: usize,
}

impl BlockRange {
    /// Blocks `first..first + count`, cut at the end of the file; None when none is left.
    fn within(size: u64, block_size: u32, first: u64, count: u32) -> Option<BlockRange> {
        let end = first
            .saturating_add(u64::from(count))
            .min(size.div_ceil(u64::from(block_size)));
        (first < end).then(|| BlockRange {
            size,
            block_size,
            first,
            // At most `count` ≤ MAX_HASHES blocks.
            blocks: (end - first) as usize,
        })
    }

    /// The offset and length of the range's `index`th block: a whole block, or what is left of
    /// the file.
    fn block(&self, index: usize) -> (u64, usize) {
        let block = u64::from(self.block_size);
        let offset = (self.first + index as u64) * block;
        // Within the file: the block is at most block_size long.
        (offset, self.size.saturating_sub(offset).min(block) as usize)
    }

    /// How many threads hash the range: one per core, never more than there are blocks, nor
    /// more than [`HASH_MEMORY_PER_JOB`] has room for (each thread holds one block).
    fn threads(&self) -> usize {
        crate::cores::available()
            .min(self.blocks)
            .min((HASH_MEMORY_PER_JOB / self.block_size as usize).max(1))
            .max(1)
    }
}

/// One hashed block: its index among those asked for, how many bytes were read, its hash.
type HashedBlock = (usize, usize, [u8; 32]);

/// Hashes every block of `range` on [`BlockRange::threads`] threads, each taking the next block
/// no other has taken ([`file_hashing::hash_ranges_parallel`]); the blocks come in no
/// particular order.
fn hash_blocks(file: &File, range: &BlockRange) -> io::Result<Vec<HashedBlock>> {
    let range_of = |index: usize| {
        let (offset, length) = range.block(index);
        offset..offset + length as u64
    };
    let never = AtomicBool::new(false);
    file_hashing::hash_ranges_parallel(file, range.blocks, range_of, range.threads(), &never)?
        .into_iter()
        .map(|(index, hashed)| hashed.map(|(read, hash)| (index, read as usize, hash)))
        .collect()
}

/// The hashes in block order, ending after the first block that came up short (the file
/// shrank while it was read) or before the first that was empty.
fn hashes_in_order(range: &BlockRange, hashed: Vec<HashedBlock>) -> Result<Vec<[u8; 32]>, Failure> {
    let mut by_index: Vec<Option<(usize, [u8; 32])>> = vec![None; range.blocks];
    for (index, read, hash) in hashed {
        if let Some(slot) = by_index.get_mut(index) {
            *slot = Some((read, hash));
        }
    }
    let mut hashes = Vec::with_capacity(range.blocks);
    for (index, slot) in by_index.into_iter().enumerate() {
        let Some((read, hash)) = slot else {
            return Err(Failure::new(ErrorCode::Other, "a block was not hashed"));
        };
        if read == 0 {
            break;
        }
        hashes.push(hash);
        if read < range.block(index).1 {
            break;
        }
    }
    Ok(hashes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::hash_block;
    use std::fs;

    #[test]
    fn block_hashes_stop_at_the_end_of_the_file() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("f");
        let data: Vec<u8> = (0..3 * 4096 + 100).map(|i| (i % 251) as u8).collect();
        fs::write(&path, &data).expect("write");
        let path = path.to_str().expect("utf-8");
        let expected: Vec<[u8; 32]> = data.chunks(4096).map(hash_block).collect();
        assert_eq!(block_hashes(path, 4096, 0, 100).expect("hashes"), expected);
        assert_eq!(
            block_hashes(path, 4096, 1, 2).expect("hashes"),
            expected[1..3]
        );
        assert_eq!(
            block_hashes(path, 4096, 3, 1).expect("hashes"),
            expected[3..]
        );
        assert!(block_hashes(path, 4096, 4, 10).expect("hashes").is_empty());
        assert!(
            block_hashes(path, 4096, u64::MAX, 10)
                .expect("hashes")
                .is_empty()
        );
        assert_eq!(
            block_hashes(path, 1 << 16, 0, 10).expect("hashes"),
            vec![hash_block(&data)]
        );
        assert_eq!(
            block_hashes(path, 4095, 0, 1).expect_err("bad size").code,
            ErrorCode::Invalid
        );
        let empty = directory.path().join("empty");
        fs::write(&empty, b"").expect("write");
        assert!(
            block_hashes(empty.to_str().expect("utf-8"), 4096, 0, 5)
                .expect("hashes")
                .is_empty()
        );
    }
}
