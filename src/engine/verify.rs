//! Reading back what was written: block hashes of a local file, and the whole-file digests that
//! decide whether a file counts as done.

use crate::blocks::{BlockHash, BlockLayout, FileHasher, hash_block};
use crate::error::{Error, Result};
use sha2::Digest;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// The outcome of reading a whole file back.
#[derive(Debug, Clone)]
pub struct Verification {
    /// Blocks whose bytes on disk differ from the expected hash.
    pub mismatched: Vec<u64>,
    /// Plain BLAKE3 of the whole file, as `b3sum` prints it.
    pub blake3: [u8; 32],
    pub sha256: Option<[u8; 32]>,
}

/// Reads `which` blocks of `file` and hashes each; a block that cannot be read whole (the file
/// is shorter) is left out.
pub fn hash_blocks(
    file: &File,
    layout: &BlockLayout,
    which: impl Iterator<Item = u64>,
) -> BTreeMap<u64, BlockHash> {
    let mut buffer = vec![0u8; layout.block_size() as usize];
    let mut hashes = BTreeMap::new();
    for index in which {
        let range = layout.range(index);
        let length = (range.end - range.start) as usize;
        let Some(slice) = buffer.get_mut(..length) else {
            continue;
        };
        if file.read_exact_at(slice, range.start).is_ok() {
            hashes.insert(index, hash_block(slice));
        }
    }
    hashes
}

/// Reads the whole file once: compares every block with `expected` and computes the whole-file
/// digests. `display` names the file in errors.
pub fn verify_file(
    file: &File,
    layout: &BlockLayout,
    expected: &BTreeMap<u64, BlockHash>,
    want_sha256: bool,
    display: &str,
) -> Result<Verification> {
    let mut buffer = vec![0u8; layout.block_size() as usize];
    let mut blake3 = FileHasher::new();
    let mut sha256 = want_sha256.then(sha2::Sha256::new);
    let mut mismatched = Vec::new();
    for index in 0..layout.block_count() {
        let range = layout.range(index);
        let length = (range.end - range.start) as usize;
        let slice = &mut buffer[..length];
        file.read_exact_at(slice, range.start)
            .map_err(|error| Error::local_io(format!("cannot read back {display}"), error))?;
        if expected.get(&index) != Some(&hash_block(slice)) {
            mismatched.push(index);
        }
        blake3.update(slice);
        if let Some(sha256) = sha256.as_mut() {
            sha256.update(&*slice);
        }
    }
    Ok(Verification {
        mismatched,
        blake3: blake3.finish(),
        sha256: sha256.map(|hasher| hasher.finalize().into()),
    })
}
