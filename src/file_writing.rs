//! Writing received bytes into a file on this machine through the page cache: the engine's
//! pulls and the agent's writes for a push.
//!
//! The bytes go to the kernel [`WRITE_SIZE`] at a time, whatever the size of the block or
//! request that carried them. On Linux the page cache takes a large write into a large folio,
//! and where the kernel must first find memory for one (on a virtual machine whose free memory
//! is handed back to its host, say) filling large folios costs far more CPU than filling small
//! ones. Small writes avoid that; the extra system calls they cost are cheap in comparison.
//!
//! Writes through a descriptor opened with O_DSYNC do not come here: there each write waits
//! for the disk, so a block goes in one.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Bytes handed to the kernel per write (see the module documentation).
pub const WRITE_SIZE: usize = 64 << 10;

/// Writes all of `bytes` at `offset`, [`WRITE_SIZE`] at a time, in order.
pub fn write_all_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    let mut at = offset;
    for piece in bytes.chunks(WRITE_SIZE) {
        file.write_all_at(piece, at)?;
        at += piece.len() as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn every_piece_lands_at_its_offset() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("file");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create");
        // Not a multiple of the piece size, written after a gap: the gap reads as zeros and
        // every byte after it is where it belongs.
        let bytes: Vec<u8> = (0..(3 * WRITE_SIZE + 12_345))
            .map(|index| (index % 251) as u8)
            .collect();
        write_all_at(&file, &bytes, 1000).expect("write");
        let mut read = Vec::new();
        File::open(&path)
            .expect("open")
            .read_to_end(&mut read)
            .expect("read");
        assert_eq!(read.len(), 1000 + bytes.len());
        assert!(read[..1000].iter().all(|&byte| byte == 0));
        assert_eq!(&read[1000..], &bytes[..]);
    }

    #[test]
    fn nothing_to_write_writes_nothing() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("file");
        let file = File::create(&path).expect("create");
        write_all_at(&file, &[], 4096).expect("write");
        assert_eq!(file.metadata().expect("stat").len(), 0);
    }
}
