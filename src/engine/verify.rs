//! Reading back what was written: block hashes of a local file, and the whole-file digests that
//! decide whether a file counts as done.

use crate::blocks::{BlockHash, BlockLayout, BlockSet};
use crate::error::{Error, Result};
use crate::file_hashing;
use std::collections::BTreeMap;
use std::fs::File;
use std::sync::atomic::AtomicBool;

/// The outcome of reading a whole file back.
#[derive(Debug, Clone, Default)]
pub struct Verification {
    /// Blocks whose bytes on disk differ from the expected hash.
    pub mismatched: Vec<u64>,
    /// Plain BLAKE3 of the whole file, as `b3sum` prints it, when asked for.
    pub blake3: Option<[u8; 32]>,
    /// SHA-256 of the whole file, when asked for.
    pub sha256: Option<[u8; 32]>,
}

/// BLAKE3 and SHA-256 of a whole file, each when asked for.
type WholeFileHashes = (Option<[u8; 32]>, Option<[u8; 32]>);

/// Which whole-file digests a verification computes (each costs a pass over the data).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WholeFileDigests {
    pub blake3: bool,
    pub sha256: bool,
}

/// A buffer for one block, no larger than the file: a megabyte zeroed for every small file
/// of a tree costs more than the file.
pub fn buffer_size(layout: &BlockLayout) -> usize {
    (layout.block_size() as u64).min(layout.file_size()) as usize
}

/// Reads `which` blocks of `file` and hashes each, on this thread; a block that cannot be read
/// whole (the file is shorter) is left out.
pub fn hash_blocks(
    file: &File,
    layout: &BlockLayout,
    which: impl Iterator<Item = u64>,
) -> BTreeMap<u64, BlockHash> {
    let which: Vec<u64> = which.collect();
    hash_blocks_on(file, layout, &which, 1, &AtomicBool::new(false))
}

/// The blocks of `recorded` (a journal's) whose bytes in `file` still hash to what was
/// recorded; hashes in `known` (read from this same file earlier in the run) stand in for
/// reading those blocks again.
pub fn still_matching(
    file: &File,
    layout: &BlockLayout,
    recorded: BTreeMap<u64, BlockHash>,
    known: &BTreeMap<u64, BlockHash>,
) -> BTreeMap<u64, BlockHash> {
    let mut on_disk = hash_blocks(
        file,
        layout,
        recorded
            .keys()
            .copied()
            .filter(|index| !known.contains_key(index)),
    );
    on_disk.extend(
        recorded
            .keys()
            .filter_map(|index| known.get(index).map(|hash| (*index, *hash))),
    );
    recorded
        .into_iter()
        .filter(|(index, hash)| on_disk.get(index) == Some(hash))
        .collect()
}

/// Reads and hashes the blocks `which` of `file` on several threads (files are large and the
/// blocks independent); a block that cannot be read whole is left out.
pub fn hash_blocks_parallel(
    file: &File,
    layout: &BlockLayout,
    which: &[u64],
) -> BTreeMap<u64, BlockHash> {
    hash_blocks_parallel_until(file, layout, which, &AtomicBool::new(false))
}

/// [`hash_blocks_parallel`], each thread stopping before its next block once `stop` is set:
/// the blocks hashed until then.
pub fn hash_blocks_parallel_until(
    file: &File,
    layout: &BlockLayout,
    which: &[u64],
    stop: &AtomicBool,
) -> BTreeMap<u64, BlockHash> {
    let threads = crate::cores::available().clamp(1, 8);
    hash_blocks_on(file, layout, which, threads, stop)
}

/// The blocks `which` read whole and their hashes, on up to `threads` threads; blocks that
/// could not be read whole (the file is shorter, or a read failed) are left out.
fn hash_blocks_on(
    file: &File,
    layout: &BlockLayout,
    which: &[u64],
    threads: usize,
    stop: &AtomicBool,
) -> BTreeMap<u64, BlockHash> {
    let range_of = |position: usize| layout.range(which[position]);
    let hashed = file_hashing::hash_ranges_parallel(file, which.len(), range_of, threads, stop)
        .unwrap_or_default();
    hashed
        .into_iter()
        .filter_map(|(position, result)| {
            let (read, hash) = result.ok()?;
            let index = which[position];
            (read == u64::from(layout.len_of(index))).then_some((index, hash))
        })
        .collect()
}

/// Reads the file back: compares every block with the hash `blocks` holds for it and computes
/// the whole-file digests asked for, on a second thread so the two passes overlap. Without
/// whole-file digests, blocks `blocks` marks checked (their bytes were read and found as
/// expected earlier in this run: kept from a journal, or equal on both sides of a delta) are
/// not read again. `display` names the file in errors.
pub fn verify_file(
    file: &File,
    blocks: &BlockSet,
    digests: WholeFileDigests,
    display: &str,
) -> Result<Verification> {
    let layout = &blocks.layout();
    if !digests.blake3 && !digests.sha256 {
        // Only the block check: spread it over the cores.
        let unchecked: Vec<u64> = (0..layout.block_count())
            .filter(|&index| !blocks.is_checked(index))
            .collect();
        let on_disk = hash_blocks_parallel(file, layout, &unchecked);
        if on_disk.len() != unchecked.len() {
            return Err(Error::new(
                crate::ErrorKind::LocalIo,
                format!("cannot read back {display}: it is shorter than it should be"),
            ));
        }
        let mismatched = unchecked
            .into_iter()
            .filter(|index| blocks.hash_of(*index) != on_disk.get(index))
            .collect();
        return Ok(Verification {
            mismatched,
            blake3: None,
            sha256: None,
        });
    }
    std::thread::scope(|scope| {
        let whole = (digests.blake3 || digests.sha256).then(|| {
            scope.spawn(move || -> Result<WholeFileHashes> {
                let size = layout.file_size();
                let (read, blake3, sha256) =
                    file_hashing::whole_file_digests(file, size, digests.blake3, digests.sha256)
                        .map_err(|error| {
                            Error::local_io(format!("cannot read back {display}"), error)
                        })?;
                if read != size {
                    return Err(Error::new(
                        crate::ErrorKind::LocalIo,
                        format!("cannot read back {display}: it is shorter than it should be"),
                    ));
                }
                Ok((blake3, sha256))
            })
        });
        let mut buffer = file_hashing::buffer_for(layout.block_size().into());
        let mut mismatched = Vec::new();
        for index in 0..layout.block_count() {
            let range = layout.range(index);
            let length = range.end - range.start;
            let (read, hash) = file_hashing::hash_block_at(file, range.start, length, &mut buffer)
                .map_err(|error| Error::local_io(format!("cannot read back {display}"), error))?;
            if read != length {
                return Err(Error::new(
                    crate::ErrorKind::LocalIo,
                    format!("cannot read back {display}: it is shorter than it should be"),
                ));
            }
            if blocks.hash_of(index) != Some(&hash) {
                mismatched.push(index);
            }
        }
        let (blake3, sha256) = match whole {
            Some(handle) => handle.join().map_err(|_| {
                Error::new(
                    crate::ErrorKind::LocalIo,
                    format!("hashing {display} failed"),
                )
            })??,
            None => (None, None),
        };
        Ok(Verification {
            mismatched,
            blake3,
            sha256,
        })
    })
}
