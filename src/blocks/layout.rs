//! Block layout: how a file of a given size is cut into fixed-size blocks, and the limits on
//! block sizes and block counts.
//!
//! A [`BlockLayout`] can only be built through [`BlockLayout::new`], which checks the block size
//! and the block count, so every method on it is total: no input makes it divide by zero,
//! overflow or panic, whatever the `u64` file size.

use std::ops::Range;

/// The block size xfer uses unless told otherwise: 1 MiB. See the [`crate::blocks`] module
/// documentation for why.
pub const DEFAULT_BLOCK_SIZE: u32 = 1 << 20;

/// The smallest block size accepted: one page, the smallest unit a filesystem writes in place.
pub const MIN_BLOCK_SIZE: u32 = 4096;

/// The largest block size accepted: 64 MiB. A block is held in memory while it is hashed and
/// re-fetched whole after a crash, so larger blocks only make resumes costlier.
pub const MAX_BLOCK_SIZE: u32 = 64 << 20;

/// The most blocks one file may have: 2^32. This bounds block-hash lists (128 GiB of hashes at the
/// cap) and journals, and keeps every block index representable in a `u32` should a future
/// format want it. At 1 MiB blocks it allows files of 4 PiB.
pub const MAX_BLOCK_COUNT: u64 = 1 << 32;

/// Why a block layout was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "block size {block_size} is not a power of two between {MIN_BLOCK_SIZE} and \
         {MAX_BLOCK_SIZE} bytes"
    )]
    BadBlockSize { block_size: u32 },
    #[error(
        "a {file_size}-byte file in {block_size}-byte blocks has {block_count} blocks, over the \
         cap of {MAX_BLOCK_COUNT}; use a larger block size"
    )]
    TooManyBlocks {
        file_size: u64,
        block_size: u32,
        block_count: u64,
    },
}

/// Whether `block_size` is a power of two between [`MIN_BLOCK_SIZE`] and [`MAX_BLOCK_SIZE`].
pub fn is_valid_block_size(block_size: u32) -> bool {
    block_size.is_power_of_two() && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
}

/// A file of `file_size` bytes cut into blocks of `block_size` bytes; the last block is short
/// when the size is not a multiple of the block size. An empty file has no blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockLayout {
    file_size: u64,
    block_size: u32,
}

impl BlockLayout {
    /// Checks that the block size is valid and that the file has at most [`MAX_BLOCK_COUNT`]
    /// blocks.
    pub fn new(file_size: u64, block_size: u32) -> Result<Self, LayoutError> {
        if !is_valid_block_size(block_size) {
            return Err(LayoutError::BadBlockSize { block_size });
        }
        let block_count = file_size.div_ceil(u64::from(block_size));
        if block_count > MAX_BLOCK_COUNT {
            return Err(LayoutError::TooManyBlocks {
                file_size,
                block_size,
                block_count,
            });
        }
        Ok(BlockLayout {
            file_size,
            block_size,
        })
    }

    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// How many blocks the file has, counting a short last block; 0 for an empty file.
    pub fn block_count(&self) -> u64 {
        self.file_size.div_ceil(u64::from(self.block_size))
    }

    /// The byte range of block `index`. The last block ends at the file size; an index past the
    /// last block gives the empty range at the end of the file, as slicing past the end would.
    pub fn range(&self, index: u64) -> Range<u64> {
        let block_size = u64::from(self.block_size);
        match index.checked_mul(block_size) {
            Some(start) if start < self.file_size => {
                start..start.saturating_add(block_size).min(self.file_size)
            }
            _ => self.file_size..self.file_size,
        }
    }

    /// The length of block `index` in bytes: the block size, less for the last block, 0 past the
    /// end.
    pub fn len_of(&self, index: u64) -> u32 {
        let range = self.range(index);
        // A range is never longer than the block size, which is a u32.
        u32::try_from(range.end - range.start).unwrap_or(self.block_size)
    }

    /// The index of the block holding byte `offset`. Offsets at or past the end of the file give
    /// indices at or past [`block_count`](Self::block_count), whose ranges are empty.
    pub fn index_of(&self, offset: u64) -> u64 {
        offset / u64::from(self.block_size)
    }

    /// Whether `index` names a block of this file.
    pub fn contains(&self, index: u64) -> bool {
        index < self.block_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn block_size_must_be_a_power_of_two_in_range() {
        for good in [MIN_BLOCK_SIZE, 8192, DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE] {
            assert!(BlockLayout::new(10, good).is_ok(), "{good}");
        }
        for bad in [
            0,
            1,
            2048,
            4095,
            4097,
            3 << 20,
            MAX_BLOCK_SIZE * 2,
            u32::MAX,
        ] {
            assert_eq!(
                BlockLayout::new(10, bad),
                Err(LayoutError::BadBlockSize { block_size: bad })
            );
        }
        let message = LayoutError::BadBlockSize { block_size: 5000 }.to_string();
        assert_eq!(
            message,
            "block size 5000 is not a power of two between 4096 and 67108864 bytes"
        );
    }

    #[test]
    fn block_count_is_capped() {
        let at_cap = MAX_BLOCK_COUNT * u64::from(MIN_BLOCK_SIZE);
        assert_eq!(
            BlockLayout::new(at_cap, MIN_BLOCK_SIZE)
                .map(|layout| layout.block_count())
                .ok(),
            Some(MAX_BLOCK_COUNT)
        );
        assert!(matches!(
            BlockLayout::new(at_cap + 1, MIN_BLOCK_SIZE),
            Err(LayoutError::TooManyBlocks { block_count, .. }) if block_count == MAX_BLOCK_COUNT + 1
        ));
        assert!(BlockLayout::new(u64::MAX, MAX_BLOCK_SIZE).is_err());
    }

    #[test]
    fn empty_file_has_no_blocks() -> Result<(), LayoutError> {
        let layout = BlockLayout::new(0, DEFAULT_BLOCK_SIZE)?;
        assert_eq!(layout.block_count(), 0);
        assert_eq!(layout.range(0), 0..0);
        assert_eq!(layout.len_of(0), 0);
        assert!(!layout.contains(0));
        Ok(())
    }

    #[test]
    fn last_block_is_short() -> Result<(), LayoutError> {
        let layout = BlockLayout::new(10_000, 4096)?;
        assert_eq!(layout.block_count(), 3);
        assert_eq!(layout.range(0), 0..4096);
        assert_eq!(layout.range(2), 8192..10_000);
        assert_eq!(layout.len_of(2), 1808);
        assert_eq!(layout.range(3), 10_000..10_000);
        assert_eq!(layout.range(u64::MAX), 10_000..10_000);
        assert_eq!(layout.len_of(u64::MAX), 0);
        assert_eq!(layout.index_of(8191), 1);
        assert_eq!(layout.index_of(8192), 2);
        assert_eq!(layout.index_of(u64::MAX), u64::MAX / 4096);
        Ok(())
    }

    #[test]
    fn exact_multiple_has_full_last_block() -> Result<(), LayoutError> {
        let layout = BlockLayout::new(3 * 4096, 4096)?;
        assert_eq!(layout.block_count(), 3);
        assert_eq!(layout.len_of(2), 4096);
        assert_eq!(layout.len_of(3), 0);
        Ok(())
    }

    /// A valid block size, as its log2.
    fn block_size() -> impl Strategy<Value = u32> {
        (12u32..=26).prop_map(|shift| 1 << shift)
    }

    proptest! {
        #[test]
        fn small_files_are_tiled_exactly(block_size in block_size(), blocks in 0u64..64, extra in 0u64..5000) {
            let file_size = blocks * u64::from(block_size) + extra.min(u64::from(block_size) - 1);
            let layout = BlockLayout::new(file_size, block_size).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut expected_start = 0;
            for index in 0..layout.block_count() {
                let range = layout.range(index);
                prop_assert_eq!(range.start, expected_start);
                prop_assert!(range.end > range.start);
                prop_assert!(range.end - range.start <= u64::from(block_size));
                prop_assert_eq!(u64::from(layout.len_of(index)), range.end - range.start);
                prop_assert_eq!(layout.index_of(range.start), index);
                prop_assert_eq!(layout.index_of(range.end - 1), index);
                prop_assert!(layout.contains(index));
                expected_start = range.end;
            }
            prop_assert_eq!(expected_start, file_size);
            prop_assert_eq!(layout.range(layout.block_count()), file_size..file_size);
        }

        #[test]
        fn any_size_is_tiled_exactly(block_size in block_size(), file_size in any::<u64>(), probe in any::<u64>()) {
            match BlockLayout::new(file_size, block_size) {
                Err(LayoutError::TooManyBlocks { block_count, .. }) => {
                    prop_assert!(block_count > MAX_BLOCK_COUNT);
                }
                Err(other) => return Err(TestCaseError::fail(other.to_string())),
                Ok(layout) => {
                    let count = layout.block_count();
                    prop_assert!(count <= MAX_BLOCK_COUNT);
                    if count == 0 {
                        prop_assert_eq!(file_size, 0);
                    } else {
                        // The first block starts at 0, the last ends at the file size, and any
                        // block ends where the next starts.
                        prop_assert_eq!(layout.range(0).start, 0);
                        prop_assert_eq!(layout.range(count - 1).end, file_size);
                        let index = probe % count;
                        let range = layout.range(index);
                        prop_assert!(range.end > range.start);
                        prop_assert_eq!(range.start, index * u64::from(block_size));
                        if index + 1 < count {
                            prop_assert_eq!(range.end, layout.range(index + 1).start);
                            prop_assert_eq!(layout.len_of(index), block_size);
                        }
                        prop_assert_eq!(layout.index_of(range.end - 1), index);
                    }
                    let past = layout.range(count.saturating_add(probe));
                    prop_assert_eq!(past, file_size..file_size);
                    prop_assert!(layout.index_of(probe) <= probe);
                }
            }
        }
    }
}
