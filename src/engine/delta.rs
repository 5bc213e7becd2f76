//! The delta, both ways: which blocks of a file that exists on both sides must travel, and
//! which pieces of them.
//!
//! The remote hashes every block of its copy (an agent does, on all its cores) while the local
//! side hashes its own: blocks that agree stay where they are. A block that differs is hashed
//! again on both sides in [`SUB_BLOCK_SIZE`] pieces, and only the differing pieces travel (see
//! [`crate::blocks::delta`]). The comparison is by the same keyed BLAKE3 as everything else,
//! and the block a transfer assembles is checked whole afterwards, so the pieces never decide
//! what a file ends up holding, only what needs to move.

use crate::blocks::delta::{SUB_BLOCK_SIZE, differing_ranges, pieces_of};
use crate::blocks::{BlockHash, BlockLayout, Comparison, compare_hashes};
use crate::engine::verify::hash_blocks_parallel;
use crate::error::{Error, Result};
use crate::remote::Remote;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::ops::Range;
use std::sync::Arc;
use tokio::task::JoinSet;

/// Piece-hash requests in flight at once: enough to hide the round trip, few enough that
/// the agent's reads of the differing blocks stay bounded.
const PIECE_REQUESTS_IN_FLIGHT: usize = 16;

/// What the comparison found.
#[derive(Debug, Default)]
pub struct Delta {
    /// The remote's hash of every block of its copy (ends early if the copy is shorter).
    pub remote_hashes: Vec<BlockHash>,
    /// Blocks whose bytes agree on both sides, with their hash: they do not travel.
    pub same: BTreeMap<u64, BlockHash>,
    /// The local hash of every block compared (those that differ too: a sender need not
    /// hash them again).
    pub local: BTreeMap<u64, BlockHash>,
    /// Blocks that differ in some pieces only: the byte ranges (in the file) that must travel.
    /// A block that differs in every piece, or could not be compared, is not listed: it
    /// travels whole.
    pub pieces: BTreeMap<u64, Vec<Range<u64>>>,
}

/// The remote's hashes of every block of `path`, computed while the caller goes on.
pub fn remote_hashes_task<R: Remote>(
    remote: &Arc<R>,
    path: &str,
    layout: BlockLayout,
) -> RemoteTask {
    let remote = remote.clone();
    let path = path.to_string();
    tokio::spawn(async move {
        remote
            .block_hashes(&path, &layout, 0..layout.block_count())
            .await
    })
}

/// Data ranges beyond this many are not worth listing: the file is treated as all data.
const MAX_DATA_RANGES: usize = 1 << 16;

/// Which blocks of the first `length` bytes of the local `file` hold data, as the filesystem
/// knows it (`SEEK_DATA`/`SEEK_HOLE`). A block wholly inside a hole (space an interrupted run
/// reserved and never wrote) reads as zeros nobody sent: comparing it would cost hashing on
/// both sides and a piece round trip for nothing. Where the filesystem cannot say, every
/// block holds data.
pub fn blocks_with_data(file: &File, layout: &BlockLayout, length: u64) -> BTreeSet<u64> {
    use nix::unistd::{Whence, lseek};
    let length = length.min(layout.file_size());
    let block_size = u64::from(layout.block_size());
    let everything = || (0..length.div_ceil(block_size)).collect();
    let mut blocks = BTreeSet::new();
    let mut offset = 0u64;
    let mut ranges = 0usize;
    while offset < length {
        let Ok(at) = i64::try_from(offset) else {
            return everything();
        };
        let start = match lseek(file, at, Whence::SeekData) {
            Ok(start) => start as u64,
            // No data from here to the end.
            Err(nix::errno::Errno::ENXIO) => break,
            Err(_) => return everything(),
        };
        if start >= length {
            break;
        }
        let end = match lseek(file, start as i64, Whence::SeekHole) {
            Ok(end) => (end as u64).min(length),
            Err(_) => return everything(),
        };
        ranges += 1;
        if end <= start || ranges > MAX_DATA_RANGES {
            return everything();
        }
        blocks.extend(layout.index_of(start)..=layout.index_of(end - 1));
        offset = end;
    }
    blocks
}

/// The remote's answer to a block-hash request.
type Answer = Result<Option<Vec<BlockHash>>>;

/// The remote's block hashes, being computed.
pub type RemoteTask = tokio::task::JoinHandle<Answer>;

/// Compares the blocks `candidates` of the local `file` with the remote's `path`, both cut by
/// `layout`, whose hashes `remote_task` computes (see [`remote_hashes_task`]); candidates lie
/// wholly inside the data both copies hold. Local hashes in `known` (computed earlier in this
/// run) are not computed again. None when the remote cannot hash.
pub async fn compare<R: Remote>(
    remote: &Arc<R>,
    path: &str,
    file: &File,
    layout: BlockLayout,
    candidates: Vec<u64>,
    known: &BTreeMap<u64, BlockHash>,
    remote_task: RemoteTask,
) -> Result<Option<Delta>> {
    // Both sides hash at once: the remote on its cores, this side on blocking threads.
    let (known_candidates, to_hash): (Vec<u64>, Vec<u64>) = candidates
        .into_iter()
        .partition(|index| known.contains_key(index));
    let mut local = hash_on_thread(file, layout, to_hash).await?;
    for index in known_candidates {
        if let Some(hash) = known.get(&index) {
            local.insert(index, *hash);
        }
    }
    let Some(remote_hashes) = join(remote_task).await? else {
        return Ok(None);
    };
    let Comparison { same, differing } = compare_hashes(&local, &remote_hashes);
    Ok(Some(Delta {
        pieces: compare_pieces(remote, path, file, &layout, differing).await?,
        same,
        local,
        remote_hashes,
    }))
}

/// Hashes the pieces of each differing block on both sides and keeps the blocks where only
/// some pieces differ.
async fn compare_pieces<R: Remote>(
    remote: &Arc<R>,
    path: &str,
    file: &File,
    layout: &BlockLayout,
    differing: Vec<u64>,
) -> Result<BTreeMap<u64, Vec<Range<u64>>>> {
    let mut found = BTreeMap::new();
    // A file of one block is sent whole: the piece round trip would cost more than it saves.
    if differing.is_empty() || layout.block_count() <= 1 {
        return Ok(found);
    }
    let Some((pieces, _)) = pieces_of(layout, differing[0]) else {
        return Ok(found);
    };
    debug_assert_eq!(pieces.block_size(), SUB_BLOCK_SIZE);
    let local_indices: Vec<u64> = differing
        .iter()
        .filter_map(|&block| pieces_of(layout, block))
        .flat_map(|(_, indices)| indices)
        .collect();
    let local = hash_on_thread(file, pieces, local_indices);

    let mut requests: JoinSet<(u64, Range<u64>, Answer)> = JoinSet::new();
    let mut remote_pieces: BTreeMap<u64, (Range<u64>, Vec<BlockHash>)> = BTreeMap::new();
    let mut waiting = differing.into_iter();
    let asking = async {
        loop {
            while requests.len() < PIECE_REQUESTS_IN_FLIGHT {
                let Some(block) = waiting.next() else { break };
                let Some((_, indices)) = pieces_of(layout, block) else {
                    continue;
                };
                let remote = remote.clone();
                let path = path.to_string();
                requests.spawn(async move {
                    let hashes = remote.block_hashes(&path, &pieces, indices.clone()).await;
                    (block, indices, hashes)
                });
            }
            let Some(joined) = requests.join_next().await else {
                return Ok::<_, Error>(());
            };
            let (block, indices, hashes) = joined.map_err(task_failed)?;
            if let Some(hashes) = hashes? {
                remote_pieces.insert(block, (indices, hashes));
            }
        }
    };
    let (asked, local) = tokio::join!(asking, local);
    asked?;
    let local = local?;
    for (block, (indices, remote_hashes)) in remote_pieces {
        let local_hashes: Vec<BlockHash> = indices
            .clone()
            .map_while(|index| local.get(&index).copied())
            .collect();
        let ranges = differing_ranges(&pieces, indices, &remote_hashes, &local_hashes);
        let block_range = layout.range(block);
        let whole = ranges.len() == 1 && ranges[0] == block_range;
        if !ranges.is_empty() && !whole {
            found.insert(block, ranges);
        }
    }
    Ok(found)
}

pub(crate) async fn hash_on_thread(
    file: &File,
    layout: BlockLayout,
    which: Vec<u64>,
) -> Result<BTreeMap<u64, BlockHash>> {
    if which.is_empty() {
        return Ok(BTreeMap::new());
    }
    let file = file
        .try_clone()
        .map_err(|error| Error::local_io("cannot reopen a local file", error))?;
    tokio::task::spawn_blocking(move || hash_blocks_parallel(&file, &layout, &which))
        .await
        .map_err(task_failed)
}

pub async fn join(task: RemoteTask) -> Result<Option<Vec<BlockHash>>> {
    task.await.map_err(task_failed)?
}

fn task_failed(error: tokio::task::JoinError) -> Error {
    Error::internal(format!("a hashing task failed: {error}"))
}

/// The remote's hashes of the blocks `blocks` (ascending) of `path`, asked for in runs of
/// consecutive blocks, several runs at once. None where the remote cannot hash; a block the
/// remote could not hash (its copy is shorter) is missing from the answer.
pub async fn remote_hashes_of<R: Remote>(
    remote: &Arc<R>,
    path: &str,
    layout: &BlockLayout,
    blocks: &[u64],
) -> Result<Option<BTreeMap<u64, BlockHash>>> {
    if !remote.hashes_blocks() {
        return Ok(None);
    }
    let mut runs: Vec<Range<u64>> = Vec::new();
    for &index in blocks {
        match runs.last_mut() {
            Some(run) if run.end == index => run.end += 1,
            _ => runs.push(index..index + 1),
        }
    }
    let mut hashes = BTreeMap::new();
    let mut waiting = runs.into_iter();
    let mut requests: JoinSet<(Range<u64>, Answer)> = JoinSet::new();
    loop {
        while requests.len() < PIECE_REQUESTS_IN_FLIGHT {
            let Some(run) = waiting.next() else { break };
            let remote = remote.clone();
            let path = path.to_string();
            let layout = *layout;
            requests.spawn(async move {
                let answer = remote.block_hashes(&path, &layout, run.clone()).await;
                (run, answer)
            });
        }
        let Some(joined) = requests.join_next().await else {
            break;
        };
        let (run, answer) = joined.map_err(task_failed)?;
        let Some(answer) = answer? else {
            return Ok(None);
        };
        hashes.extend(run.zip(answer));
    }
    Ok(Some(hashes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn holes_are_not_data_and_written_blocks_are() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("partial");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create");
        let mebibyte = 1u64 << 20;
        // An interrupted pull: the whole size reserved, blocks 0 and 5 written.
        file.set_len(10 * mebibyte).expect("set_len");
        file.write_all_at(&vec![1u8; mebibyte as usize], 0)
            .expect("write");
        file.write_all_at(&vec![2u8; mebibyte as usize], 5 * mebibyte)
            .expect("write");
        file.sync_all().expect("sync");
        let layout = BlockLayout::new(10 * mebibyte, mebibyte as u32).expect("layout");
        let blocks = blocks_with_data(&file, &layout, 10 * mebibyte);
        // A filesystem that cannot tell holes apart reports everything as data.
        let all: BTreeSet<u64> = (0..10).collect();
        assert!(
            blocks == BTreeSet::from([0, 5]) || blocks == all,
            "unexpected data blocks {blocks:?}"
        );
        // Only the first length bytes count.
        let first = blocks_with_data(&file, &layout, mebibyte);
        assert!(first == BTreeSet::from([0]), "{first:?}");
        assert!(blocks_with_data(&file, &layout, 0).is_empty());
    }
}
