//! Signatures and diffs: the list of block hashes of a file ([`Signature`]), built from bytes
//! fed in any pieces ([`SignatureBuilder`]) or from a buffer on several threads, and the
//! comparison that says which blocks a destination must fetch ([`blocks_to_fetch`]).
//!
//! The local side of a comparison need not be a whole signature: anything that knows some
//! block hashes under some layout ([`KnownBlocks`]) will do, such as a resume journal.

use std::collections::BTreeMap;
use std::thread;

use super::hash::{BlockHash, block_hasher, hash_block};
use super::layout::BlockLayout;

/// Why a signature could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "the signature expected {expected} bytes but was given {given}: the file changed size \
         or a read stopped short"
    )]
    LengthMismatch { expected: u64, given: u64 },
    #[error("{given} block hashes given for a layout of {expected} blocks")]
    HashCountMismatch { expected: u64, given: u64 },
}

/// The block hashes of a whole file: one [`hash_block`] hash per block of its layout, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Signature {
    layout: BlockLayout,
    hashes: Vec<BlockHash>,
}

impl Signature {
    /// A signature from hashes computed elsewhere (received from the remote side, say). There
    /// must be exactly one hash per block.
    pub fn from_parts(layout: BlockLayout, hashes: Vec<BlockHash>) -> Result<Self, SignatureError> {
        let given = hashes.len() as u64;
        if given != layout.block_count() {
            return Err(SignatureError::HashCountMismatch {
                expected: layout.block_count(),
                given,
            });
        }
        Ok(Signature { layout, hashes })
    }

    /// The signature of `data`, which must be the whole file (`layout.file_size()` bytes).
    pub fn of_bytes(layout: BlockLayout, data: &[u8]) -> Result<Self, SignatureError> {
        check_length(layout, data)?;
        let hashes = chunks(layout, data).map(hash_block).collect();
        Ok(Signature { layout, hashes })
    }

    /// Like [`of_bytes`](Self::of_bytes), hashing on up to `threads` threads at once (0 counts
    /// as 1). Each thread hashes a contiguous run of blocks.
    pub fn of_bytes_parallel(
        layout: BlockLayout,
        data: &[u8],
        threads: usize,
    ) -> Result<Self, SignatureError> {
        check_length(layout, data)?;
        // `data` is in memory, so the block count (and this allocation) is bounded by it.
        let block_count = usize::try_from(layout.block_count()).unwrap_or(usize::MAX);
        let mut hashes = vec![[0u8; 32]; block_count];
        let blocks_per_thread = block_count.div_ceil(threads.max(1)).max(1);
        let bytes_per_thread = blocks_per_thread.saturating_mul(block_size_usize(layout));
        thread::scope(|scope| {
            for (out, bytes) in hashes
                .chunks_mut(blocks_per_thread)
                .zip(data.chunks(bytes_per_thread))
            {
                scope.spawn(move || {
                    for (slot, block) in out.iter_mut().zip(chunks(layout, bytes)) {
                        *slot = hash_block(block);
                    }
                });
            }
        });
        Ok(Signature { layout, hashes })
    }

    pub fn layout(&self) -> BlockLayout {
        self.layout
    }

    /// One hash per block, in block order.
    pub fn hashes(&self) -> &[BlockHash] {
        &self.hashes
    }

    /// The hash of block `index`, or `None` past the last block.
    pub fn hash_of(&self, index: u64) -> Option<&BlockHash> {
        self.hashes.get(usize::try_from(index).ok()?)
    }

    pub fn into_hashes(self) -> Vec<BlockHash> {
        self.hashes
    }
}

fn check_length(layout: BlockLayout, data: &[u8]) -> Result<(), SignatureError> {
    let given = data.len() as u64;
    if given == layout.file_size() {
        Ok(())
    } else {
        Err(SignatureError::LengthMismatch {
            expected: layout.file_size(),
            given,
        })
    }
}

fn block_size_usize(layout: BlockLayout) -> usize {
    // At most 64 MiB: fits any usize xfer runs on.
    usize::try_from(layout.block_size()).unwrap_or(usize::MAX)
}

/// `data` cut into the layout's blocks (the last one short), given `data` starts on a block
/// boundary.
fn chunks(layout: BlockLayout, data: &[u8]) -> std::slice::Chunks<'_, u8> {
    data.chunks(block_size_usize(layout))
}

/// Builds a [`Signature`] from a file's bytes fed in order, in pieces of any size: a piece may
/// end mid-block or span many blocks. Hashes of completed blocks are available as they
/// complete ([`completed`](Self::completed)), so a caller can journal them while still reading.
#[derive(Debug, Clone)]
pub struct SignatureBuilder {
    layout: BlockLayout,
    /// Holds the part of the current block fed so far.
    hasher: blake3::Hasher,
    /// Bytes of the current block fed so far.
    in_block: u64,
    /// Bytes fed in all; counts bytes past the file size too, so `finish` can report them.
    fed: u64,
    hashes: Vec<BlockHash>,
}

impl SignatureBuilder {
    pub fn new(layout: BlockLayout) -> Self {
        SignatureBuilder {
            layout,
            hasher: block_hasher(),
            in_block: 0,
            fed: 0,
            // Grown as blocks complete, never sized from the layout: a layout may promise far
            // more blocks than will ever be fed.
            hashes: Vec::new(),
        }
    }

    pub fn layout(&self) -> BlockLayout {
        self.layout
    }

    /// Feeds the next bytes of the file. Bytes past the layout's file size are counted (so
    /// [`finish`](Self::finish) fails) and otherwise ignored.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let index = self.hashes.len() as u64;
            let block_len = u64::from(self.layout.len_of(index));
            if block_len == 0 {
                // Every block is complete: the rest is excess.
                self.fed = self.fed.saturating_add(data.len() as u64);
                return;
            }
            let wanted = block_len - self.in_block;
            let take = usize::try_from(wanted)
                .unwrap_or(usize::MAX)
                .min(data.len());
            let (head, tail) = data.split_at(take);
            self.hasher.update(head);
            self.in_block += head.len() as u64;
            self.fed += head.len() as u64;
            if self.in_block == block_len {
                self.hashes.push(self.hasher.finalize().into());
                self.hasher.reset();
                self.in_block = 0;
            }
            data = tail;
        }
    }

    /// The hashes of the blocks completed so far, in block order.
    pub fn completed(&self) -> &[BlockHash] {
        &self.hashes
    }

    /// How many bytes have been fed, including any past the file size.
    pub fn bytes_fed(&self) -> u64 {
        self.fed
    }

    /// The signature, provided exactly the layout's file size was fed.
    pub fn finish(self) -> Result<Signature, SignatureError> {
        if self.fed != self.layout.file_size() {
            return Err(SignatureError::LengthMismatch {
                expected: self.layout.file_size(),
                given: self.fed,
            });
        }
        Ok(Signature {
            layout: self.layout,
            hashes: self.hashes,
        })
    }
}

/// Block hashes known under some layout: a whole [`Signature`], a resume journal, a partial
/// map. Block `index` of it covers `layout().range(index)`.
pub trait KnownBlocks {
    /// The layout the hashes were taken under: its block size, and the file size that decides
    /// the length of the last block.
    fn layout(&self) -> BlockLayout;

    /// The hash of block `index`, or `None` when it is not known (never written, past the end).
    fn known_hash(&self, index: u64) -> Option<&BlockHash>;
}

impl KnownBlocks for Signature {
    fn layout(&self) -> BlockLayout {
        self.layout
    }

    fn known_hash(&self, index: u64) -> Option<&BlockHash> {
        self.hash_of(index)
    }
}

/// Some block hashes of a file, by index: what a caller has when it hashed only part of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialSignature {
    pub layout: BlockLayout,
    pub hashes: BTreeMap<u64, BlockHash>,
}

impl KnownBlocks for PartialSignature {
    fn layout(&self) -> BlockLayout {
        self.layout
    }

    fn known_hash(&self, index: u64) -> Option<&BlockHash> {
        self.hashes.get(&index)
    }
}

/// The indices, ascending, of the blocks of `want` that `have` does not already hold: blocks
/// whose hash is unknown or differs, and blocks whose length differs (beyond the end of a
/// shorter local file, the short last block of either side). When the block sizes differ no
/// block can be compared, so every block is fetched.
///
/// Blocks `have` holds past the end of `want` are not mentioned: the caller truncates the
/// destination to `want`'s size.
pub fn blocks_to_fetch<Have: KnownBlocks + ?Sized>(have: &Have, want: &Signature) -> Vec<u64> {
    let have_layout = have.layout();
    let want_layout = want.layout();
    let comparable = have_layout.block_size() == want_layout.block_size();
    (0u64..)
        .zip(want.hashes())
        .filter(|&(index, want_hash)| {
            let same = comparable
                && have_layout.len_of(index) == want_layout.len_of(index)
                && have.known_hash(index) == Some(want_hash);
            !same
        })
        .map(|(index, _)| index)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::layout::{LayoutError, MIN_BLOCK_SIZE};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const BLOCK: u32 = MIN_BLOCK_SIZE;

    fn layout(size: usize) -> Result<BlockLayout, LayoutError> {
        BlockLayout::new(size as u64, BLOCK)
    }

    fn signature(data: &[u8]) -> Result<Signature, TestCaseError> {
        let layout = layout(data.len()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        Signature::of_bytes(layout, data).map_err(|e| TestCaseError::fail(e.to_string()))
    }

    /// Blocks whose bytes differ between `have` and `want`, by direct comparison: the oracle.
    fn differing_blocks(have: &[u8], want: &[u8]) -> Vec<u64> {
        let block = BLOCK as usize;
        want.chunks(block)
            .enumerate()
            .filter(|&(index, want_block)| {
                let start = index * block;
                let end = (start + block).min(have.len());
                have.get(start..end) != Some(want_block)
            })
            .map(|(index, _)| index as u64)
            .collect()
    }

    /// Up to five blocks and a bit, so the last block is short or full at random.
    fn file_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..(5 * BLOCK as usize + 100))
    }

    #[test]
    fn builder_rejects_wrong_lengths() -> Result<(), LayoutError> {
        let mut short = SignatureBuilder::new(layout(5000)?);
        short.update(&[1; 4999]);
        assert_eq!(short.completed().len(), 1);
        assert_eq!(
            short.finish(),
            Err(SignatureError::LengthMismatch {
                expected: 5000,
                given: 4999
            })
        );
        let mut long = SignatureBuilder::new(layout(5000)?);
        long.update(&[1; 5000]);
        assert_eq!(long.completed().len(), 2);
        long.update(&[1; 3]);
        assert_eq!(long.bytes_fed(), 5003);
        assert!(long.finish().is_err());
        assert!(Signature::of_bytes(layout(10)?, &[0; 9]).is_err());
        assert!(Signature::from_parts(layout(5000)?, vec![[0; 32]]).is_err());
        Ok(())
    }

    #[test]
    fn empty_file_has_empty_signature() -> Result<(), Box<dyn std::error::Error>> {
        let built = SignatureBuilder::new(layout(0)?).finish()?;
        assert!(built.hashes().is_empty());
        assert_eq!(built, Signature::of_bytes_parallel(layout(0)?, &[], 4)?);
        assert!(blocks_to_fetch(&built, &built).is_empty());
        Ok(())
    }

    #[test]
    fn different_block_sizes_fetch_everything() -> Result<(), Box<dyn std::error::Error>> {
        let data = vec![9u8; 3 * 8192];
        let want = Signature::of_bytes(BlockLayout::new(data.len() as u64, 8192)?, &data)?;
        let have = Signature::of_bytes(layout(data.len())?, &data)?;
        assert_eq!(blocks_to_fetch(&have, &want), vec![0, 1, 2]);
        Ok(())
    }

    #[test]
    fn partial_signature_fetches_unknown_blocks() -> Result<(), Box<dyn std::error::Error>> {
        let data: Vec<u8> = (0..4 * BLOCK).map(|i| (i / 7) as u8).collect();
        let want = Signature::of_bytes(layout(data.len())?, &data)?;
        let mut have = PartialSignature {
            layout: want.layout(),
            hashes: BTreeMap::new(),
        };
        have.hashes.insert(1, want.hashes()[1]);
        have.hashes.insert(3, [0; 32]);
        assert_eq!(blocks_to_fetch(&have, &want), vec![0, 2, 3]);
        Ok(())
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_signature(
            data in file_bytes(),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            threads in 0usize..5,
        ) {
            let expected = signature(&data)?;
            let mut cuts: Vec<usize> = cuts.into_iter().map(|cut| cut % (data.len() + 1)).collect();
            cuts.sort_unstable();
            let mut builder = SignatureBuilder::new(expected.layout());
            let mut start = 0;
            for cut in cuts.into_iter().chain([data.len()]) {
                builder.update(&data[start..cut]);
                start = cut;
                prop_assert_eq!(builder.completed(), &expected.hashes()[..builder.completed().len()]);
            }
            prop_assert_eq!(builder.finish().map_err(|e| TestCaseError::fail(e.to_string()))?, expected.clone());
            let parallel = Signature::of_bytes_parallel(expected.layout(), &data, threads)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parallel, expected);
        }

        #[test]
        fn mutated_copy_fetches_exactly_the_mutated_blocks(
            data in file_bytes(),
            mutations in proptest::collection::vec((any::<usize>(), 1u8..=255), 0..8),
        ) {
            let mut copy = data.clone();
            let mut mutated = BTreeSet::new();
            for (position, flip) in mutations {
                if !copy.is_empty() {
                    let position = position % copy.len();
                    copy[position] ^= flip;
                    mutated.insert(position as u64 / u64::from(BLOCK));
                }
            }
            // A block flipped twice at the same byte may be back to the original.
            let expected: Vec<u64> = mutated
                .into_iter()
                .filter(|&index| differing_blocks(&copy, &data).contains(&index))
                .collect();
            let want = signature(&data)?;
            prop_assert_eq!(blocks_to_fetch(&signature(&copy)?, &want), expected);
        }

        #[test]
        fn resized_copy_fetches_the_blocks_that_differ(
            data in file_bytes(),
            new_len in 0usize..(6 * BLOCK as usize),
            filler in any::<u8>(),
        ) {
            let mut copy = data.clone();
            copy.resize(new_len, filler);
            let want = signature(&data)?;
            let fetch = blocks_to_fetch(&signature(&copy)?, &want);
            prop_assert_eq!(&fetch, &differing_blocks(&copy, &data));
            if new_len < data.len() {
                // Truncated: everything from the block holding the new end onwards.
                let first = (new_len / BLOCK as usize) as u64;
                let expected: Vec<u64> = (first..want.layout().block_count()).collect();
                prop_assert_eq!(fetch, expected);
            } else if new_len == data.len() || data.len() % BLOCK as usize == 0 {
                // Unchanged, or extended after a full last block: nothing to fetch.
                prop_assert!(fetch.is_empty());
            } else {
                // Extended after a short last block: only that block, which is now longer.
                prop_assert_eq!(fetch, vec![want.layout().block_count() - 1]);
            }
        }
    }
}
