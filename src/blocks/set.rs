//! What one file's transfer knows about each of its blocks ([`BlockSet`]), in either
//! direction, and the comparison of two sides' block hashes ([`compare_hashes`]).
//!
//! A block of the destination is *held* when the destination has it in place and its hash is
//! known: kept from a resume journal (its bytes still hash to what was recorded), found equal
//! on both sides by a delta, or written in this run and made durable. Every block that is not
//! held is *missing* and must travel: whole, or only the byte ranges that differ (its
//! *pieces*). Alongside that the set keeps three marks:
//!
//! - *checked*: the local copy's bytes of the block were read in this run and hashed to what
//!   the transfer expects of them, so the final read-back need not read them again;
//! - *confirmed*: the remote hashed its copy of the block in this run and agreed with the held
//!   hash, so the end-to-end check need not ask again;
//! - *pending*: written (a pull) or acknowledged (a push) but not yet durable and journaled;
//!   the engine drains the queue in batches, by the bytes it holds.
//!
//! The set does no IO: the engine reads, writes, syncs and journals, and tells the set.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use super::delta::covered;
use super::hash::BlockHash;
use super::layout::BlockLayout;

/// The state of every block of one file under transfer; see the [module docs](self).
///
/// Indices outside the layout are ignored by every method that records something, so the
/// queries never mention a block the file does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSet {
    layout: BlockLayout,
    /// Blocks in place at the destination, with the hash of their bytes.
    held: BTreeMap<u64, BlockHash>,
    /// Blocks whose local bytes were read in this run and found as expected. Not a subset of
    /// `held`: a push may find a journaled block gone from the remote while its local bytes
    /// are still good.
    checked: BTreeSet<u64>,
    /// Held blocks the remote hashed in this run and found equal.
    confirmed: BTreeSet<u64>,
    /// Blocks that differ only in some pieces: the byte ranges (in the file) that must travel.
    pieces: BTreeMap<u64, Vec<Range<u64>>>,
    /// Blocks written or acknowledged, in that order, with the hash they should read back as
    /// (None when another reference decides, such as the remote's own block hashes).
    pending: Vec<(u64, Option<BlockHash>)>,
    /// Bytes that travelled for the pending blocks.
    pending_bytes: u64,
}

impl BlockSet {
    /// A set in which nothing is known: every block is missing, whole.
    pub fn new(layout: BlockLayout) -> Self {
        BlockSet {
            layout,
            held: BTreeMap::new(),
            checked: BTreeSet::new(),
            confirmed: BTreeSet::new(),
            pieces: BTreeMap::new(),
            pending: Vec::new(),
            pending_bytes: 0,
        }
    }

    pub fn layout(&self) -> BlockLayout {
        self.layout
    }

    // Held blocks.

    /// Block `index` is in place at the destination and its bytes hash to `hash`. Holding a
    /// block again replaces its hash and drops its confirmation.
    pub fn hold(&mut self, index: u64, hash: BlockHash) {
        if self.layout.contains(index) && self.held.insert(index, hash) != Some(hash) {
            self.confirmed.remove(&index);
        }
    }

    /// [`hold`](Self::hold), and its local bytes were just read and hashed to `hash`.
    pub fn hold_checked(&mut self, index: u64, hash: BlockHash) {
        if self.layout.contains(index) {
            self.hold(index, hash);
            self.checked.insert(index);
        }
    }

    /// [`hold_checked`](Self::hold_checked) for every block of `blocks`.
    pub fn hold_all_checked(&mut self, blocks: impl IntoIterator<Item = (u64, BlockHash)>) {
        for (index, hash) in blocks {
            self.hold_checked(index, hash);
        }
    }

    /// Keeps only the held blocks for which `keep` says so; the others are missing again (and
    /// no longer confirmed; their local bytes stay checked).
    pub fn retain_held(&mut self, mut keep: impl FnMut(u64, &BlockHash) -> bool) {
        let confirmed = &mut self.confirmed;
        self.held.retain(|&index, hash| {
            let kept = keep(index, hash);
            if !kept {
                confirmed.remove(&index);
            }
            kept
        });
    }

    /// The hash of block `index`, if it is held.
    pub fn hash_of(&self, index: u64) -> Option<&BlockHash> {
        self.held.get(&index)
    }

    pub fn holds(&self, index: u64) -> bool {
        self.held.contains_key(&index)
    }

    /// The held blocks and their hashes, ascending.
    pub fn held(&self) -> &BTreeMap<u64, BlockHash> {
        &self.held
    }

    /// Whether no block is held.
    pub fn holds_none(&self) -> bool {
        self.held.is_empty()
    }

    /// How many blocks of `hashes` (the source's, one per block in order, perhaps too few) a
    /// held hash does not match: blocks not held, held with another hash, or with no hash in
    /// `hashes`.
    pub fn count_differing(&self, hashes: &[BlockHash]) -> u64 {
        (0..self.layout.block_count())
            .filter(|&index| {
                let theirs = usize::try_from(index).ok().and_then(|at| hashes.get(at));
                theirs != self.held.get(&index)
            })
            .count() as u64
    }

    // Checked and confirmed.

    /// Whether the local bytes of block `index` were read in this run and found as expected.
    pub fn is_checked(&self, index: u64) -> bool {
        self.checked.contains(&index)
    }

    /// The remote hashed block `index` and got `hash`: the block is confirmed if it is held
    /// with that hash. Returns whether it is.
    pub fn confirm(&mut self, index: u64, hash: &BlockHash) -> bool {
        let agrees = self.held.get(&index) == Some(hash);
        if agrees {
            self.confirmed.insert(index);
        }
        agrees
    }

    /// Every block held now is confirmed (the caller compared them all with the remote).
    pub fn confirm_held(&mut self) {
        self.confirmed.extend(self.held.keys().copied());
    }

    pub fn is_confirmed(&self, index: u64) -> bool {
        self.confirmed.contains(&index)
    }

    /// The blocks of the file not confirmed, ascending.
    pub fn unconfirmed(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.layout.block_count()).filter(|index| !self.confirmed.contains(index))
    }

    // What must travel.

    /// Blocks that differ only in some pieces, with the byte ranges that must travel (each
    /// inside its block); replaces any given before. Blocks outside the layout are left out.
    pub fn set_pieces(&mut self, pieces: BTreeMap<u64, Vec<Range<u64>>>) {
        let layout = self.layout;
        self.pieces = pieces;
        self.pieces.retain(|&index, _| layout.contains(index));
    }

    /// The byte ranges of block `index` that must travel when not all of it does.
    pub fn pieces_of(&self, index: u64) -> Option<&[Range<u64>]> {
        self.pieces.get(&index).map(Vec::as_slice)
    }

    /// How many blocks travel in pieces (held ones included).
    pub fn blocks_in_pieces(&self) -> usize {
        self.pieces.len()
    }

    /// The byte ranges of block `index` that travel: its pieces, or the whole block.
    pub fn ranges_to_move(&self, index: u64) -> Vec<Range<u64>> {
        match self.pieces.get(&index) {
            Some(ranges) => ranges.clone(),
            None => vec![self.layout.range(index)],
        }
    }

    /// The bytes of block `index` that travel when it is missing: its pieces, or all of it.
    pub fn bytes_to_move(&self, index: u64) -> u64 {
        match self.pieces.get(&index) {
            Some(ranges) => covered(ranges),
            None => u64::from(self.layout.len_of(index)),
        }
    }

    /// The blocks not held, ascending. Lazy: a layout may have many blocks.
    pub fn missing(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.layout.block_count()).filter(|index| !self.held.contains_key(index))
    }

    /// The first block at or after `from` that is not held.
    pub fn next_missing(&self, from: u64) -> Option<u64> {
        (from..self.layout.block_count()).find(|index| !self.held.contains_key(index))
    }

    /// How many blocks are not held.
    pub fn missing_count(&self) -> u64 {
        self.layout.block_count() - self.held.len() as u64
    }

    /// Whether every block is held.
    pub fn is_complete(&self) -> bool {
        self.missing_count() == 0
    }

    /// The bytes that must still travel: each missing block whole, or its pieces.
    pub fn bytes_needed(&self) -> u64 {
        self.missing()
            .map(|index| self.bytes_to_move(index))
            .fold(0, u64::saturating_add)
    }

    // Pending blocks.

    /// Block `index` was written or acknowledged, `bytes` of it having travelled; it is held
    /// once the engine made it durable and journaled it. `expected`: the hash it must read
    /// back as, when that is what decides.
    pub fn queue(&mut self, index: u64, expected: Option<BlockHash>, bytes: u64) {
        if self.layout.contains(index) {
            self.pending.push((index, expected));
            self.pending_bytes = self.pending_bytes.saturating_add(bytes);
        }
    }

    /// The blocks queued since the last drain, in the order they were queued.
    pub fn pending(&self) -> &[(u64, Option<BlockHash>)] {
        &self.pending
    }

    /// The bytes that travelled for the pending blocks.
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    /// Empties the queue and returns it, for the engine to make durable, read back and
    /// [`hold`](Self::hold) what it finds.
    pub fn take_pending(&mut self) -> Vec<(u64, Option<BlockHash>)> {
        self.pending_bytes = 0;
        std::mem::take(&mut self.pending)
    }

    /// The pending blocks whose hash is known, as a journal records them.
    pub fn pending_hashes(&self) -> Vec<(u64, BlockHash)> {
        self.pending
            .iter()
            .filter_map(|&(index, hash)| Some((index, hash?)))
            .collect()
    }

    /// Empties the queue into the held blocks: those whose hash is known are held with it
    /// (the engine journaled them).
    pub fn hold_pending(&mut self) {
        for (index, hash) in self.take_pending() {
            if let Some(hash) = hash {
                self.hold(index, hash);
            }
        }
    }
}

/// Blocks hashed on both sides, split by whether the hashes agree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Blocks whose hashes agree, with that hash.
    pub same: BTreeMap<u64, BlockHash>,
    /// Blocks hashed on both sides with different hashes, ascending.
    pub differing: Vec<u64>,
}

/// Compares local block hashes with the remote's (one per block in order, perhaps too few: a
/// shorter copy). A local block the remote has no hash for is in neither list.
pub fn compare_hashes(local: &BTreeMap<u64, BlockHash>, remote: &[BlockHash]) -> Comparison {
    let mut comparison = Comparison::default();
    for (&index, hash) in local {
        match usize::try_from(index).ok().and_then(|at| remote.get(at)) {
            Some(theirs) if theirs == hash => {
                comparison.same.insert(index, *hash);
            }
            Some(_) => comparison.differing.push(index),
            None => {}
        }
    }
    comparison
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::layout::MIN_BLOCK_SIZE;
    use proptest::prelude::*;

    const BLOCK: u32 = MIN_BLOCK_SIZE;

    fn hash(seed: u8) -> BlockHash {
        [seed; 32]
    }

    /// A layout of up to 40 blocks, the last one short or full at random.
    fn any_layout() -> impl Strategy<Value = BlockLayout> {
        (0u64..40 * u64::from(BLOCK)).prop_map(|size| {
            BlockLayout::new(size, BLOCK).unwrap_or_else(|_| unreachable!("a valid layout"))
        })
    }

    /// Steps a transfer may take, on indices a little past the layout too.
    #[derive(Debug, Clone)]
    enum Step {
        Hold(u64, u8),
        HoldChecked(u64, u8),
        Drop(u64),
        Confirm(u64, u8),
        Queue(u64, Option<u8>, u16),
        HoldPending,
        TakePending,
    }

    fn any_step() -> impl Strategy<Value = Step> {
        let index = 0u64..45;
        prop_oneof![
            (index.clone(), 0u8..3).prop_map(|(i, h)| Step::Hold(i, h)),
            (index.clone(), 0u8..3).prop_map(|(i, h)| Step::HoldChecked(i, h)),
            index.clone().prop_map(Step::Drop),
            (index.clone(), 0u8..3).prop_map(|(i, h)| Step::Confirm(i, h)),
            (index, proptest::option::of(0u8..3), any::<u16>())
                .prop_map(|(i, h, b)| Step::Queue(i, h, b)),
            Just(Step::HoldPending),
            Just(Step::TakePending),
        ]
    }

    /// A plain model of the set: a hash, a checked mark and a confirmed mark per block.
    #[derive(Default)]
    struct Model {
        held: BTreeMap<u64, BlockHash>,
        checked: BTreeSet<u64>,
        confirmed: BTreeSet<u64>,
        pending: Vec<(u64, Option<BlockHash>)>,
        pending_bytes: u64,
    }

    fn apply(set: &mut BlockSet, model: &mut Model, step: &Step) {
        let count = set.layout().block_count();
        let inside = |index: u64| index < count;
        match *step {
            Step::Hold(index, seed) => {
                set.hold(index, hash(seed));
                if inside(index) && model.held.insert(index, hash(seed)) != Some(hash(seed)) {
                    model.confirmed.remove(&index);
                }
            }
            Step::HoldChecked(index, seed) => {
                set.hold_checked(index, hash(seed));
                if inside(index) {
                    if model.held.insert(index, hash(seed)) != Some(hash(seed)) {
                        model.confirmed.remove(&index);
                    }
                    model.checked.insert(index);
                }
            }
            Step::Drop(index) => {
                set.retain_held(|at, _| at != index);
                model.held.remove(&index);
                model.confirmed.remove(&index);
            }
            Step::Confirm(index, seed) => {
                let agreed = set.confirm(index, &hash(seed));
                let agrees = model.held.get(&index) == Some(&hash(seed));
                assert_eq!(agreed, agrees);
                if agrees {
                    model.confirmed.insert(index);
                }
            }
            Step::Queue(index, seed, bytes) => {
                set.queue(index, seed.map(hash), u64::from(bytes));
                if inside(index) {
                    model.pending.push((index, seed.map(hash)));
                    model.pending_bytes += u64::from(bytes);
                }
            }
            Step::HoldPending => {
                assert_eq!(
                    set.pending_hashes(),
                    model
                        .pending
                        .iter()
                        .filter_map(|&(i, h)| Some((i, h?)))
                        .collect::<Vec<_>>()
                );
                set.hold_pending();
                for (index, hash) in std::mem::take(&mut model.pending) {
                    if let Some(hash) = hash
                        && model.held.insert(index, hash) != Some(hash)
                    {
                        model.confirmed.remove(&index);
                    }
                }
                model.pending_bytes = 0;
            }
            Step::TakePending => {
                assert_eq!(set.take_pending(), std::mem::take(&mut model.pending));
                model.pending_bytes = 0;
            }
        }
    }

    fn agrees_with(set: &BlockSet, model: &Model) -> Result<(), TestCaseError> {
        let layout = set.layout();
        let count = layout.block_count();
        prop_assert_eq!(set.held(), &model.held);
        prop_assert_eq!(set.pending(), &model.pending[..]);
        prop_assert_eq!(set.pending_bytes(), model.pending_bytes);
        for index in 0..count + 3 {
            prop_assert_eq!(set.hash_of(index), model.held.get(&index));
            prop_assert_eq!(set.is_checked(index), model.checked.contains(&index));
            prop_assert_eq!(set.is_confirmed(index), model.confirmed.contains(&index));
            // Only held blocks are ever confirmed.
            prop_assert!(!set.is_confirmed(index) || set.holds(index));
        }
        let missing: Vec<u64> = (0..count).filter(|i| !model.held.contains_key(i)).collect();
        prop_assert_eq!(set.missing().collect::<Vec<_>>(), missing.clone());
        prop_assert_eq!(set.missing_count(), missing.len() as u64);
        prop_assert_eq!(set.is_complete(), missing.is_empty());
        prop_assert_eq!(set.holds_none(), model.held.is_empty());
        prop_assert_eq!(set.next_missing(0), missing.first().copied());
        for from in 0..count + 2 {
            let expected = missing.iter().copied().find(|&index| index >= from);
            prop_assert_eq!(set.next_missing(from), expected);
        }
        let unconfirmed: Vec<u64> = (0..count)
            .filter(|i| !model.confirmed.contains(i))
            .collect();
        prop_assert_eq!(set.unconfirmed().collect::<Vec<_>>(), unconfirmed);
        // Without pieces, what travels is exactly the bytes of the blocks not held.
        let held_bytes: u64 = model
            .held
            .keys()
            .map(|&index| u64::from(layout.len_of(index)))
            .sum();
        prop_assert_eq!(set.bytes_needed() + held_bytes, layout.file_size());
        Ok(())
    }

    proptest! {
        #[test]
        fn the_set_follows_a_plain_model(
            layout in any_layout(),
            steps in proptest::collection::vec(any_step(), 0..60),
        ) {
            let mut set = BlockSet::new(layout);
            let mut model = Model::default();
            agrees_with(&set, &model)?;
            for step in &steps {
                apply(&mut set, &mut model, step);
                agrees_with(&set, &model)?;
            }
        }

        #[test]
        fn pieces_count_only_for_missing_blocks(
            layout in any_layout(),
            held in proptest::collection::btree_set(0u64..40, 0..40),
            cut in proptest::collection::btree_map(0u64..45, (0u32..BLOCK, 1u32..BLOCK), 0..20),
        ) {
            let mut set = BlockSet::new(layout);
            for &index in &held {
                set.hold(index, hash(1));
            }
            // One range inside each block given pieces.
            let pieces: BTreeMap<u64, Vec<Range<u64>>> = cut
                .iter()
                .filter(|&(&index, _)| layout.contains(index))
                .map(|(&index, &(start, length))| {
                    let range = layout.range(index);
                    let start = (range.start + u64::from(start)).min(range.end);
                    let end = (start + u64::from(length)).min(range.end);
                    (index, std::iter::once(start..end).collect())
                })
                .collect();
            let first_byte = || std::iter::once(0..1).collect();
            set.set_pieces(cut.keys().map(|&index| (index, first_byte())).collect());
            set.set_pieces(pieces.clone());
            prop_assert_eq!(set.blocks_in_pieces(), pieces.len());
            let mut expected = 0u64;
            for index in 0..layout.block_count() {
                let travels = match pieces.get(&index) {
                    Some(ranges) => covered(ranges),
                    None => u64::from(layout.len_of(index)),
                };
                prop_assert_eq!(set.bytes_to_move(index), travels);
                prop_assert_eq!(covered(&set.ranges_to_move(index)), travels);
                prop_assert_eq!(set.pieces_of(index), pieces.get(&index).map(Vec::as_slice));
                if !set.holds(index) {
                    expected += travels;
                }
            }
            prop_assert_eq!(set.bytes_needed(), expected);
        }

        #[test]
        fn comparison_splits_the_blocks_both_sides_hashed(
            local in proptest::collection::btree_map(0u64..50, 0u8..3, 0..50),
            remote in proptest::collection::vec(0u8..3, 0..50),
        ) {
            let local: BTreeMap<u64, BlockHash> =
                local.into_iter().map(|(index, seed)| (index, hash(seed))).collect();
            let remote: Vec<BlockHash> = remote.into_iter().map(hash).collect();
            let comparison = compare_hashes(&local, &remote);
            for (&index, local_hash) in &local {
                let theirs = remote.get(index as usize);
                prop_assert_eq!(comparison.same.get(&index), theirs.filter(|&h| h == local_hash));
                prop_assert_eq!(
                    comparison.differing.contains(&index),
                    theirs.is_some_and(|h| h != local_hash)
                );
            }
            prop_assert!(comparison.same.keys().all(|index| local.contains_key(index)));
            prop_assert!(comparison.differing.windows(2).all(|pair| pair[0] < pair[1]));
            prop_assert!(comparison.differing.iter().all(|index| local.contains_key(index)));

            // Holding the same blocks leaves exactly the others to fetch, which a source of
            // `remote` then finds differing.
            if let Ok(layout) = BlockLayout::new(remote.len() as u64 * u64::from(BLOCK), BLOCK) {
                let mut set = BlockSet::new(layout);
                set.hold_all_checked(comparison.same.clone());
                let missing: Vec<u64> = set.missing().collect();
                let expected: Vec<u64> = (0..remote.len() as u64)
                    .filter(|index| !comparison.same.contains_key(index))
                    .collect();
                prop_assert_eq!(set.count_differing(&remote), expected.len() as u64);
                prop_assert_eq!(missing, expected);
            }
        }
    }

    #[test]
    fn an_empty_file_is_complete() -> Result<(), crate::blocks::LayoutError> {
        let set = BlockSet::new(BlockLayout::new(0, BLOCK)?);
        assert!(set.is_complete());
        assert_eq!(set.bytes_needed(), 0);
        assert_eq!(set.next_missing(0), None);
        assert_eq!(set.count_differing(&[]), 0);
        Ok(())
    }

    #[test]
    fn a_short_list_of_hashes_differs_in_the_blocks_it_lacks()
    -> Result<(), crate::blocks::LayoutError> {
        let mut set = BlockSet::new(BlockLayout::new(3 * u64::from(BLOCK), BLOCK)?);
        for index in 0..3 {
            set.hold(index, hash(7));
        }
        assert_eq!(set.count_differing(&[hash(7); 3]), 0);
        assert_eq!(set.count_differing(&[hash(7); 2]), 1);
        assert_eq!(
            set.count_differing(&[hash(7), hash(8), hash(7), hash(7)]),
            1
        );
        Ok(())
    }
}
