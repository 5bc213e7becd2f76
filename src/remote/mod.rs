//! The one interface the transfer engine uses to reach the other side, and what serves it.
//!
//! [`Remote`] is what a pull or a push needs from a remote machine: metadata (stat, list a
//! directory, read a link), offset reads and writes on open files, syncing, attributes,
//! directories, links, and (where the remote can compute them) block hashes and a whole-file
//! digest. Names that come back from `list` are the peer's words: the engine validates every
//! one before it touches the local disk. A listing is the peer's size, too: [`ListingLimits`]
//! caps what one may hold, in entries and in bytes, for every remote.
//!
//! - [`sftp`] and [`agent`]: the two implementations over SSH; [`session`]: either, per
//!   connection; [`deploy`]: putting the agent on a host and starting it, [`bundle`]: which
//!   executable is the agent for a host's platform; [`home`]: `~user`.
//! - [`pool`]: where the engine gets its remotes ([`pool::Pool`], [`pool::SessionPool`]).
//! - [`read_only`]: a remote with every change refused, which a dry run plans through.
//! - [`memory`]: a host held in memory that can cut, stall and lie, for the engine's tests.

pub mod agent;
pub mod bundle;
pub mod deploy;
pub mod home;
pub mod memory;
pub mod pool;
pub mod read_only;
pub mod runner;
pub mod session;
pub mod sftp;
pub mod shell_only;

use crate::blocks::{BlockHash, BlockLayout};
use crate::error::{Error, Result};
use std::future::Future;

/// A directory with more entries than this is refused rather than listed into memory.
pub const MAX_DIRECTORY_ENTRIES: usize = 2_000_000;
/// What a listed entry counts besides its name's bytes: about what it takes in memory, the
/// entry itself (48 bytes), its name's allocation and the list's spare room.
pub const ENTRY_OVERHEAD: usize = 64;
/// The most bytes one directory listing may count, names plus [`ENTRY_OVERHEAD`] each: a
/// million entries with 40-byte names count 99 MiB and are listed, while a listing a server
/// makes as heavy as it can (long names, or as many short ones as the caps let through) keeps
/// xfer under 256 MiB: a listing of long names weighs about what it counts, one of short names
/// at most half as much again.
pub const MAX_LISTING_BYTES: usize = 128 << 20;

/// Caps on one directory listing, checked as its entries arrive, before they are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListingLimits {
    pub entries: usize,
    /// Bytes as [`ListingLimits::entry_bytes`] counts them.
    pub bytes: usize,
}

impl ListingLimits {
    /// What every remote listing is held to.
    pub const DEFAULT: ListingLimits = ListingLimits {
        entries: MAX_DIRECTORY_ENTRIES,
        bytes: MAX_LISTING_BYTES,
    };

    /// What one entry named with `name_length` bytes counts.
    pub fn entry_bytes(name_length: usize) -> usize {
        name_length.saturating_add(ENTRY_OVERHEAD)
    }

    /// Checks a listing that has grown to `entries` entries counting `bytes`.
    pub fn check(&self, entries: usize, bytes: usize) -> Result<(), ListingTooLarge> {
        if entries > self.entries {
            Err(ListingTooLarge::Entries(self.entries))
        } else if bytes > self.bytes {
            Err(ListingTooLarge::Bytes(self.bytes))
        } else {
            Ok(())
        }
    }
}

/// Why a listing was refused: which cap it went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ListingTooLarge {
    #[error("more than {0} entries; refusing to hold them all")]
    Entries(usize),
    #[error(
        "its names take more than {} (counting {ENTRY_OVERHEAD} bytes more per entry); refusing to hold them all",
        mebibytes(*.0)
    )]
    Bytes(usize),
}

/// `bytes` in MiB when it is a whole number of them, else in bytes.
fn mebibytes(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// What to do about a directory too large to list: said wherever one is refused.
pub const LISTING_HINT: &str = "xfer holds a directory's whole listing in memory: transfer the \
                                directory's subdirectories one by one, or split it into smaller \
                                directories on the remote (a server that lists this much for a \
                                small directory is misbehaving)";

impl ListingTooLarge {
    /// The error for listing `path` on the remote `label`: a remote fault, not retried.
    pub fn into_error(self, label: &str, path: &str) -> Error {
        Error::remote(format!("{label}: listing {path}: {self}"))
            .with_hint(LISTING_HINT)
            .transient(false)
    }
}

pub use crate::entry::EntryKind;

/// One remote directory entry or stat result, as the peer describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEntry {
    /// The name exactly as the peer sent it (unvalidated).
    pub name: String,
    pub kind: EntryKind,
    pub size: u64,
    /// Seconds since the epoch; SFTP v3 carries whole seconds only.
    pub mtime: i64,
    /// Permission bits (07777).
    pub mode: u32,
}

/// Attributes to set on a remote path; None leaves a field as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttributes {
    pub size: Option<u64>,
    pub mode: Option<u32>,
    pub mtime: Option<i64>,
}

/// A whole-file digest computed on the remote, for end-to-end verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteDigest {
    Blake3([u8; 32]),
    Sha256([u8; 32]),
}

/// The remote side of a transfer.
pub trait Remote: Send + Sync + 'static {
    /// An open file on the remote.
    type File: Clone + Send + Sync + 'static;

    /// How messages name this remote: `alias (user@host:port)`.
    fn label(&self) -> &str;

    /// The largest read or write this remote takes in one request.
    fn max_io_size(&self) -> u32;

    /// Metadata of a path, following a final symlink only if `follow`; None if it does not
    /// exist.
    fn stat(
        &self,
        path: &str,
        follow: bool,
    ) -> impl Future<Output = Result<Option<RemoteEntry>>> + Send;

    /// The entries of a directory, without `.` and `..`.
    fn list(&self, path: &str) -> impl Future<Output = Result<Vec<RemoteEntry>>> + Send;

    fn read_link(&self, path: &str) -> impl Future<Output = Result<String>> + Send;

    fn open_read(&self, path: &str) -> impl Future<Output = Result<Self::File>> + Send;

    /// Reads up to `length` bytes at `offset`; fewer at the end of the file, none past it.
    fn read_at(
        &self,
        file: &Self::File,
        offset: u64,
        length: u32,
    ) -> impl Future<Output = Result<Vec<u8>>> + Send;

    /// Opens for writing at offsets, creating the file (private until finished) if missing and
    /// never truncating it. A final symlink is never followed: a name that holds one (or,
    /// where the remote can tell, a file with other hard links) is replaced by a new file or
    /// refused, so another account on the host cannot redirect the write to another file.
    fn open_write(&self, path: &str) -> impl Future<Output = Result<Self::File>> + Send;

    fn write_at(
        &self,
        file: &Self::File,
        offset: u64,
        data: Vec<u8>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Makes what was written durable on the remote disk, where the remote can.
    fn sync(&self, file: &Self::File) -> impl Future<Output = Result<()>> + Send;

    /// [`Remote::sync`] for a small file among many being written at once: where the remote
    /// can, one sync of its whole filesystem covers every file waiting, instead of a disk
    /// flush each. By default the file is synced alone.
    fn sync_grouped(&self, file: &Self::File) -> impl Future<Output = Result<()>> + Send {
        self.sync(file)
    }

    fn close(&self, file: Self::File) -> impl Future<Output = Result<()>> + Send;

    /// Sets attributes of what `path` names (a directory, in practice) without following a
    /// final symlink.
    fn set_attributes(
        &self,
        path: &str,
        attributes: SetAttributes,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Sets attributes of an open file through its handle: they land on the file that was
    /// written, whatever has happened to its name since.
    fn set_file_attributes(
        &self,
        file: &Self::File,
        attributes: SetAttributes,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Creates one directory; an existing directory is not an error.
    fn make_directory(&self, path: &str, mode: u32) -> impl Future<Output = Result<()>> + Send;

    /// Creates `path` as a symlink to `target`, replacing a symlink or file already there.
    fn make_symlink(&self, path: &str, target: &str) -> impl Future<Output = Result<()>> + Send;

    fn remove_file(&self, path: &str) -> impl Future<Output = Result<()>> + Send;

    /// A whole-file digest computed on the remote, or None where the remote cannot.
    fn digest(&self, path: &str) -> impl Future<Output = Result<Option<RemoteDigest>>> + Send;

    /// Whether the connection under this remote has ended (then it is not reused).
    fn is_closed(&self) -> bool {
        false
    }

    /// Whether [`Remote::block_hashes`] can answer (an agent computes them; SFTP cannot).
    fn hashes_blocks(&self) -> bool {
        false
    }

    /// The [`crate::blocks::hash_block`] hashes of the blocks `blocks` of the file at `path`
    /// as `layout` cuts it (the last block may be short; blocks past the file's end are
    /// missing from the answer, which then ends early), computed on the remote; None where the
    /// remote cannot.
    fn block_hashes(
        &self,
        path: &str,
        layout: &BlockLayout,
        blocks: std::ops::Range<u64>,
    ) -> impl Future<Output = Result<Option<Vec<BlockHash>>>> + Send {
        let _ = (path, layout, blocks);
        async { Ok(None) }
    }

    /// Whether [`Remote::read_at_hashed`] comes with the remote's hash of what it read (an
    /// agent of protocol version 4 or later).
    fn hashes_reads(&self) -> bool {
        false
    }

    /// [`Remote::read_at`], with the remote's [`crate::blocks::hash_block`] hash of the bytes
    /// it read where it computes one (see [`Remote::hashes_reads`]), else None.
    fn read_at_hashed(
        &self,
        file: &Self::File,
        offset: u64,
        length: u32,
    ) -> impl Future<Output = Result<(Vec<u8>, Option<BlockHash>)>> + Send {
        read_unhashed(self, file, offset, length)
    }

    /// Whether [`Remote::put_small`] works on this remote.
    fn puts_small(&self) -> bool {
        false
    }

    /// A whole file of one block in one request: written at `path`, made durable with syncs
    /// shared by the files written at once, checked on the remote against its hash, then given
    /// its size, mode and mtime. An error leaves the file looking incomplete (one byte too
    /// long). Only where [`Remote::puts_small`].
    fn put_small(&self, path: &str, file: SmallPut) -> impl Future<Output = Result<()>> + Send {
        let _ = (path, file);
        async { Err(Error::internal("this remote takes no whole small files")) }
    }

    /// The whole content of a file of at most `max_length` bytes in one request, or None where
    /// the remote has no such request (then the caller opens and reads).
    fn read_small(
        &self,
        path: &str,
        max_length: u32,
    ) -> impl Future<Output = Result<Option<SmallFile>>> + Send {
        let _ = (path, max_length);
        async { Ok(None) }
    }
}

/// [`Remote::read_at`] without a hash: what [`Remote::read_at_hashed`] answers where the
/// remote does not hash what it reads.
pub async fn read_unhashed<R: Remote + ?Sized>(
    remote: &R,
    file: &R::File,
    offset: u64,
    length: u32,
) -> Result<(Vec<u8>, Option<BlockHash>)> {
    remote
        .read_at(file, offset, length)
        .await
        .map(|data| (data, None))
}

/// A small file to write whole in one request ([`Remote::put_small`]).
#[derive(Debug)]
pub struct SmallPut {
    pub data: Vec<u8>,
    /// [`crate::blocks::hash_block`] of `data` as the source holds it: the remote compares it
    /// with what it holds after writing.
    pub hash: BlockHash,
    pub mode: u32,
    pub mtime: i64,
}

/// A small file read whole in one request.
#[derive(Debug)]
pub struct SmallFile {
    pub data: Vec<u8>,
    /// The remote's own [`crate::blocks::hash_block`] of `data`, when it computes one in the
    /// same request (an agent of protocol version 2): the file's one block, checked end to end.
    pub block_hash: Option<BlockHash>,
}

/// Parses the 64 hex digits of a SHA-256 or BLAKE3 digest as a remote tool printed them.
pub fn parse_digest_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(bytes)
}

/// Joins a remote directory and a validated name with `/`.
pub fn join(directory: &str, name: &str) -> String {
    if directory.is_empty() || directory == "." {
        name.to_string()
    } else if directory.ends_with('/') {
        format!("{directory}{name}")
    } else {
        format!("{directory}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_are_capped_in_entries_and_in_bytes() {
        let limits = ListingLimits {
            entries: 10,
            bytes: 1000,
        };
        assert_eq!(ListingLimits::entry_bytes(36), 100);
        assert_eq!(limits.check(10, 1000), Ok(()));
        assert_eq!(limits.check(11, 100), Err(ListingTooLarge::Entries(10)));
        assert_eq!(limits.check(3, 1001), Err(ListingTooLarge::Bytes(1000)));
        assert!(
            ListingTooLarge::Bytes(1000)
                .to_string()
                .starts_with("its names take more than 1000 bytes")
        );
        assert_eq!(ListingLimits::entry_bytes(usize::MAX), usize::MAX);
        // What the defaults are for: a million 40-byte names are listed; the 300,000 names of
        // 4,000 bytes a hostile server sent are not, nor the most entries with 40-byte names.
        let counted =
            |entries: usize, name_length: usize| entries * ListingLimits::entry_bytes(name_length);
        let limits = ListingLimits::DEFAULT;
        assert_eq!(limits.check(1_000_000, counted(1_000_000, 40)), Ok(()));
        assert!(limits.check(300_000, counted(300_000, 4000)).is_err());
        assert!(
            limits
                .check(MAX_DIRECTORY_ENTRIES, counted(MAX_DIRECTORY_ENTRIES, 40))
                .is_err()
        );
        let error = ListingTooLarge::Bytes(MAX_LISTING_BYTES).into_error("host (u@h:22)", "/d");
        assert_eq!(
            error.message(),
            "host (u@h:22): listing /d: its names take more than 128 MiB (counting 64 bytes more per entry); refusing to hold them all"
        );
        assert_eq!(error.hint(), Some(LISTING_HINT));
        assert!(!error.is_transient());
    }

    #[test]
    fn join_paths() {
        assert_eq!(join("", "a"), "a");
        assert_eq!(join(".", "a"), "a");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/x", "a"), "/x/a");
        assert_eq!(join("/x/", "a"), "/x/a");
    }
}
