//! What identifies a local file and its content without reading it.
//!
//! Device, inode, size, and mtime and ctime to the nanosecond: any write through a file
//! descriptor changes the ctime, and since Linux 6.13 ext4, XFS, Btrfs and tmpfs give a change
//! that follows a `stat` a timestamp of its own (multigrain timestamps), so two stats that agree
//! saw the same content. On older kernels a write landing within the same clock tick (a few
//! milliseconds) as the previous change can go unseen; writes through a shared memory map
//! update the times only when a page is first dirtied after writeback. The transfer trusts
//! hashes taken earlier, and bytes sent earlier, only while the identity holds.

use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    device: u64,
    inode: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl FileIdentity {
    pub fn of(metadata: &Metadata) -> Self {
        FileIdentity {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            modified: (metadata.mtime(), metadata.mtime_nsec()),
            changed: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }

    /// The identity of an open file now; None when it cannot be read.
    pub fn of_file(file: &File) -> Option<Self> {
        file.metadata().ok().map(|metadata| Self::of(&metadata))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_write_of_the_same_bytes_changes_the_identity() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let path = directory.path().join("file");
        std::fs::write(&path, b"same bytes").expect("written");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("opened");
        let before = FileIdentity::of_file(&file).expect("stat");
        assert_eq!(FileIdentity::of_file(&file), Some(before));
        file.write_all(b"same bytes").expect("rewritten");
        let after = FileIdentity::of_file(&file).expect("stat");
        assert_ne!(before, after, "a write must change the identity");
    }
}
