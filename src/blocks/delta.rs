//! Finer comparison inside a block that differs: which byte ranges of it must travel.
//!
//! Blocks are 1 MiB, the unit of resumption and of the journal. A delta that sent every
//! differing block whole would move 1 MiB for a 4-byte change; instead both sides hash the
//! differing block again in [`SUB_BLOCK_SIZE`] pieces, and only the pieces whose hashes differ
//! travel, merged into runs so neighbouring pieces go in one read or write. The block is then
//! assembled from the kept local bytes and the received pieces, and checked whole against the
//! source's hash of the 1 MiB block, so a wrong piece is never kept.

use crate::blocks::{BlockHash, BlockLayout};
use std::ops::Range;

/// The size of the pieces a differing block is compared in: 32 KiB, what rsync picks for a
/// 1 GiB file. Each piece costs 32 bytes of hash each way, only for blocks that differ: a
/// changed 1 MiB block costs 1 KiB of hashes and sends its changed 32 KiB pieces.
pub const SUB_BLOCK_SIZE: u32 = 32 << 10;

/// The layout of a file in pieces, and the piece indices of `block` (in `blocks`' layout).
/// None when the two layouts cannot be nested (the block size is not a multiple of the piece
/// size) or the block does not exist.
pub fn pieces_of(blocks: &BlockLayout, block: u64) -> Option<(BlockLayout, Range<u64>)> {
    if !blocks.contains(block) || !blocks.block_size().is_multiple_of(SUB_BLOCK_SIZE) {
        return None;
    }
    let pieces = BlockLayout::new(blocks.file_size(), SUB_BLOCK_SIZE).ok()?;
    let per_block = u64::from(blocks.block_size() / SUB_BLOCK_SIZE);
    let first = block.checked_mul(per_block)?;
    let end = first.saturating_add(per_block).min(pieces.block_count());
    Some((pieces, first..end))
}

/// The byte ranges of the pieces `indices` (in `pieces`' layout) whose hash in `source` differs
/// from the one in `destination` or is missing from either, adjacent ranges merged, ascending.
/// `source` and `destination` hold the hashes of those same pieces, in order.
pub fn differing_ranges(
    pieces: &BlockLayout,
    indices: Range<u64>,
    source: &[BlockHash],
    destination: &[BlockHash],
) -> Vec<Range<u64>> {
    let mut ranges: Vec<Range<u64>> = Vec::new();
    for (position, index) in indices.enumerate() {
        if !pieces.contains(index) {
            break;
        }
        let same = matches!(
            (source.get(position), destination.get(position)),
            (Some(a), Some(b)) if a == b
        );
        if same {
            continue;
        }
        let range = pieces.range(index);
        match ranges.last_mut() {
            Some(last) if last.end == range.start => last.end = range.end,
            _ => ranges.push(range),
        }
    }
    ranges
}

/// How many bytes `ranges` cover.
pub fn covered(ranges: &[Range<u64>]) -> u64 {
    ranges
        .iter()
        .map(|range| range.end.saturating_sub(range.start))
        .fold(0, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::{DEFAULT_BLOCK_SIZE, hash_block};
    use proptest::prelude::*;

    /// The pieces of one [`DEFAULT_BLOCK_SIZE`] block.
    const SUB_BLOCKS_PER_BLOCK: u64 = (DEFAULT_BLOCK_SIZE / SUB_BLOCK_SIZE) as u64;

    fn hashes(data: &[u8], pieces: &BlockLayout, indices: Range<u64>) -> Vec<BlockHash> {
        indices
            .filter(|&index| pieces.contains(index))
            .map(|index| {
                let range = pieces.range(index);
                hash_block(&data[range.start as usize..range.end as usize])
            })
            .collect()
    }

    #[test]
    fn a_block_is_cut_into_its_pieces() {
        let blocks = BlockLayout::new(3 * u64::from(DEFAULT_BLOCK_SIZE) + 100, DEFAULT_BLOCK_SIZE)
            .expect("layout");
        let (pieces, indices) = pieces_of(&blocks, 1).expect("pieces");
        assert_eq!(pieces.block_size(), SUB_BLOCK_SIZE);
        assert_eq!(indices, SUB_BLOCKS_PER_BLOCK..2 * SUB_BLOCKS_PER_BLOCK);
        // The short last block has one short piece.
        let (pieces, indices) = pieces_of(&blocks, 3).expect("pieces");
        assert_eq!(indices.clone().count(), 1);
        assert_eq!(pieces.range(indices.start), blocks.range(3));
        assert!(pieces_of(&blocks, 4).is_none());
    }

    #[test]
    fn adjacent_differing_pieces_merge() {
        let blocks =
            BlockLayout::new(u64::from(DEFAULT_BLOCK_SIZE), DEFAULT_BLOCK_SIZE).expect("layout");
        let (pieces, indices) = pieces_of(&blocks, 0).expect("pieces");
        let source: Vec<BlockHash> = (0..SUB_BLOCKS_PER_BLOCK)
            .map(|index| hash_block(&index.to_le_bytes()))
            .collect();
        let mut destination = source.clone();
        for index in [2usize, 3, 7] {
            destination[index] = hash_block(b"other");
        }
        let piece = u64::from(SUB_BLOCK_SIZE);
        assert_eq!(
            differing_ranges(&pieces, indices.clone(), &source, &destination),
            vec![2 * piece..4 * piece, 7 * piece..8 * piece]
        );
        // A side that could not hash (shorter file) differs everywhere it is missing.
        assert_eq!(
            differing_ranges(&pieces, indices, &source, &destination[..1]),
            vec![piece..u64::from(DEFAULT_BLOCK_SIZE)]
        );
    }

    proptest! {
        /// Copying the differing ranges of the source over the destination makes the block
        /// equal to the source's, and the ranges cover no more than the differing pieces.
        #[test]
        fn patching_the_ranges_reproduces_the_source(
            seed in any::<u64>(),
            extra in 0u64..(2 * u64::from(DEFAULT_BLOCK_SIZE)),
            edits in proptest::collection::vec((0u64..(3 << 20), 1u64..5000), 0..12),
        ) {
            let size = u64::from(DEFAULT_BLOCK_SIZE) + extra;
            let mut source = vec![0u8; size as usize];
            let mut state = seed;
            for byte in source.iter_mut() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                *byte = (state >> 56) as u8;
            }
            let mut destination = source.clone();
            for (offset, length) in &edits {
                let start = (*offset % size) as usize;
                let end = (start + *length as usize).min(size as usize);
                for byte in &mut destination[start..end] {
                    *byte = byte.wrapping_add(1);
                }
            }
            let blocks = BlockLayout::new(size, DEFAULT_BLOCK_SIZE).expect("layout");
            for block in 0..blocks.block_count() {
                let (pieces, indices) = pieces_of(&blocks, block).expect("pieces");
                let ranges = differing_ranges(
                    &pieces,
                    indices.clone(),
                    &hashes(&source, &pieces, indices.clone()),
                    &hashes(&destination, &pieces, indices.clone()),
                );
                let differing_pieces = indices
                    .clone()
                    .filter(|&index| {
                        let range = pieces.range(index);
                        source[range.start as usize..range.end as usize]
                            != destination[range.start as usize..range.end as usize]
                    })
                    .map(|index| u64::from(pieces.len_of(index)))
                    .sum::<u64>();
                prop_assert_eq!(covered(&ranges), differing_pieces);
                let mut patched = destination.clone();
                for range in &ranges {
                    let (start, end) = (range.start as usize, range.end as usize);
                    patched[start..end].copy_from_slice(&source[start..end]);
                }
                let block_range = blocks.range(block);
                let (start, end) = (block_range.start as usize, block_range.end as usize);
                prop_assert_eq!(&patched[start..end], &source[start..end]);
            }
        }
    }
}
