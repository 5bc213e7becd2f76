//! Reading a file on this machine to hash it: block hashes (one range, or many on several
//! threads) and whole-file digests of what is on disk, for the engine (its own copy) and for the
//! agent (the remote's).
//!
//! The bytes go through a buffer of [`READ_SIZE`], each piece hashed before the next is read.
//! A buffer that small stays in the CPU's cache, so the kernel's copy out of the page cache
//! costs little; reading a whole 1 MiB block and hashing it afterwards can spend more in that
//! copy than in BLAKE3 itself.

use crate::blocks::{BlockHash, FileHash, FileHasher, block_hasher};
use sha2::Digest;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Bytes read at once when hashing (see the module documentation).
pub const READ_SIZE: usize = 64 << 10;

/// A buffer for reading ranges of at most `longest` bytes: no larger than that, nor than
/// [`READ_SIZE`].
pub fn buffer_for(longest: u64) -> Vec<u8> {
    vec![0u8; longest.min(READ_SIZE as u64).max(1) as usize]
}

/// Reads up to `length` bytes of `file` from `offset` through `buffer`, handing each piece to
/// `each` in order; fewer bytes only where the file ends. Returns how many were read.
pub fn read_pieces(
    file: &File,
    offset: u64,
    length: u64,
    buffer: &mut [u8],
    mut each: impl FnMut(&[u8]),
) -> io::Result<u64> {
    let mut done = 0u64;
    while done < length {
        let Some(at) = offset.checked_add(done) else {
            break;
        };
        let wanted = (length - done).min(buffer.len() as u64) as usize;
        match file.read_at(&mut buffer[..wanted], at) {
            Ok(0) => break,
            Ok(read) => {
                each(&buffer[..read]);
                done += read as u64;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(done)
}

/// The block hash ([`crate::blocks::hash_block`]) of up to `length` bytes of `file` from
/// `offset`, with how many bytes it covers (fewer only where the file ends).
pub fn hash_block_at(
    file: &File,
    offset: u64,
    length: u64,
    buffer: &mut [u8],
) -> io::Result<(u64, BlockHash)> {
    let mut hasher = block_hasher();
    let read = read_pieces(file, offset, length, buffer, |piece| {
        hasher.update(piece);
    })?;
    Ok((read, hasher.finalize().into()))
}

/// What reading one range gave: its position among the ranges asked for, and how many bytes
/// were read (fewer only where the file ends) with their block hash, or the read error.
pub type HashedRange = (usize, io::Result<(u64, BlockHash)>);

/// Block hashes ([`hash_block_at`]) of `count` ranges of `file`, `range_of(position)` each, read
/// on up to `threads` threads: files are large and blocks independent. Each thread takes the
/// next range no other has taken, so a slow read does not leave the others idle, and stops
/// before its next range once `stop` is set. Fewer threads are used when the system refuses
/// more; this one does the work when it refuses any.
///
/// Returns the ranges hashed, in no particular order: all of them unless `stop` was set. Fails
/// only when a hashing thread panicked.
pub fn hash_ranges_parallel(
    file: &File,
    count: usize,
    range_of: impl Fn(usize) -> Range<u64> + Sync,
    threads: usize,
    stop: &AtomicBool,
) -> io::Result<Vec<HashedRange>> {
    // One buffer per thread, sized for the longest range: a small file's one block is much
    // shorter than the block size.
    let longest = (0..count)
        .map(|position| {
            let range = range_of(position);
            range.end - range.start
        })
        .max()
        .unwrap_or(0);
    let next = AtomicUsize::new(0);
    let worker = || {
        let mut buffer = buffer_for(longest);
        let mut done = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let position = next.fetch_add(1, Ordering::Relaxed);
            if position >= count {
                break;
            }
            let range = range_of(position);
            let hashed = hash_block_at(file, range.start, range.end - range.start, &mut buffer);
            done.push((position, hashed));
        }
        done
    };
    let threads = threads.min(count).max(1);
    if threads == 1 {
        // No thread to start for one worker (a pull of small files asks for one hash per file).
        return Ok(worker());
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map_while(|_| {
                std::thread::Builder::new()
                    .name("xfer-hash".into())
                    .spawn_scoped(scope, worker)
                    .inspect_err(|error| tracing::debug!(%error, "fewer hashing threads"))
                    .ok()
            })
            .collect();
        if handles.is_empty() {
            return Ok(worker());
        }
        let mut hashed = Vec::with_capacity(count);
        for handle in handles {
            let done = handle
                .join()
                .map_err(|_| io::Error::other("a hashing thread panicked"))?;
            hashed.extend(done);
        }
        Ok(hashed)
    })
}

/// Whole-file digests of up to `length` bytes of `file` from its start (`u64::MAX`: to its
/// end), each only when asked for: the plain BLAKE3 (as `b3sum` prints it) and the SHA-256.
/// Returns how many bytes were read with them.
pub fn whole_file_digests(
    file: &File,
    length: u64,
    blake3: bool,
    sha256: bool,
) -> io::Result<(u64, Option<FileHash>, Option<[u8; 32]>)> {
    let mut blake3 = blake3.then(FileHasher::new);
    let mut sha256 = sha256.then(sha2::Sha256::new);
    let mut buffer = buffer_for(length);
    let read = read_pieces(file, 0, length, &mut buffer, |piece| {
        if let Some(hasher) = blake3.as_mut() {
            hasher.update(piece);
        }
        if let Some(hasher) = sha256.as_mut() {
            hasher.update(piece);
        }
    })?;
    Ok((
        read,
        blake3.map(|hasher| hasher.finish()),
        sha256.map(|hasher| hasher.finalize().into()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::hash_block;
    use std::io::Write;

    #[test]
    fn hashes_equal_those_of_the_bytes_read_whole() {
        let mut file = tempfile::tempfile().expect("temporary file");
        let data: Vec<u8> = (0..3 * READ_SIZE + 12_345)
            .map(|index| (index * 7 % 251) as u8)
            .collect();
        file.write_all(&data).expect("write");
        let mut buffer = buffer_for(1 << 20);
        assert_eq!(buffer.len(), READ_SIZE);
        // A range spanning several reads, one ending inside a read, one past the end.
        for (offset, length) in [
            (0u64, data.len() as u64),
            (100, 2 * READ_SIZE as u64 + 1),
            (5, 0),
        ] {
            let end = (offset + length) as usize;
            let (read, hash) = hash_block_at(&file, offset, length, &mut buffer).expect("hash");
            assert_eq!(read, length);
            assert_eq!(hash, hash_block(&data[offset as usize..end]));
        }
        let (read, hash) = hash_block_at(&file, 3 * READ_SIZE as u64, 1 << 20, &mut buffer)
            .expect("hash past the end");
        assert_eq!(read, 12_345);
        assert_eq!(hash, hash_block(&data[3 * READ_SIZE..]));
        // Pieces come in order and add up to the range.
        let mut joined = Vec::new();
        let mut small = buffer_for(1000);
        let read = read_pieces(&file, 10, 5000, &mut small, |piece| {
            joined.extend_from_slice(piece)
        })
        .expect("read");
        assert_eq!((read, &joined[..]), (5000, &data[10..5010]));
    }

    #[test]
    fn whole_file_digests_equal_those_of_the_bytes_read_whole() {
        let mut file = tempfile::tempfile().expect("temporary file");
        let data: Vec<u8> = (0..2 * READ_SIZE + 999)
            .map(|index| (index % 253) as u8)
            .collect();
        file.write_all(&data).expect("write");
        let (read, blake3, sha256) =
            whole_file_digests(&file, u64::MAX, true, true).expect("digests");
        assert_eq!(read, data.len() as u64);
        assert_eq!(blake3, Some(*::blake3::hash(&data).as_bytes()));
        assert_eq!(sha256, Some(<[u8; 32]>::from(sha2::Sha256::digest(&data))));
        let (read, blake3, sha256) = whole_file_digests(&file, 10, false, true).expect("digests");
        assert_eq!((read, blake3), (10, None));
        assert_eq!(
            sha256,
            Some(<[u8; 32]>::from(sha2::Sha256::digest(&data[..10])))
        );
    }

    #[test]
    fn parallel_ranges_hash_as_one_thread_does() {
        let mut file = tempfile::tempfile().expect("temporary file");
        let data: Vec<u8> = (0..10 * 4096 + 100)
            .map(|index| (index % 241) as u8)
            .collect();
        file.write_all(&data).expect("write");
        // Eleven 4 KiB blocks, the last short, and one past the end of the file.
        let range_of = |position: usize| {
            let start = position as u64 * 4096;
            start..start + 4096
        };
        for threads in [1, 3, 16] {
            let mut hashed =
                hash_ranges_parallel(&file, 12, range_of, threads, &AtomicBool::new(false))
                    .expect("hashed");
            hashed.sort_by_key(|(position, _)| *position);
            assert_eq!(hashed.len(), 12);
            for (position, result) in hashed {
                let (read, hash) = result.expect("read");
                let start = (position * 4096).min(data.len());
                let end = (start + 4096).min(data.len());
                assert_eq!(
                    (read, hash),
                    ((end - start) as u64, hash_block(&data[start..end]))
                );
            }
        }
        let stopped = hash_ranges_parallel(&file, 12, range_of, 4, &AtomicBool::new(true))
            .expect("nothing to fail");
        assert!(stopped.is_empty());
    }
}
