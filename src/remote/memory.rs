//! An in-memory remote host, for the engine's tests and benchmarks: no SSH, no disk, no waits.
//!
//! A [`MemoryHost`] holds a tree of files, directories and symlinks in a map. A [`MemoryPool`]
//! hands out [`MemoryRemote`]s on it, each standing for one connection, and counts what they
//! do: connections opened and open at once, bytes read and written. [`Faults`] make the host
//! misbehave the ways real peers and links do: a connection cut after some bytes (the request
//! that crosses the line fails as a dropped link does, and a write may land before its answer
//! is lost), a read that stalls until the watchdog's bound, sizes that lie, reads that return
//! other bytes than the host's own hashes describe, writes dropped on the floor. By default it
//! answers block hashes, small reads and whole-file digests as the xfer agent does; with
//! `no_block_hashes` and `no_digest` it is as bare as an SFTP server.
//!
//! Paths are absolute, `/`-separated, without `.` or `..` components.

use crate::blocks::{BlockHash, BlockLayout, file_hash_of, hash_block};
use crate::error::{Error, Result};
use crate::remote::pool::Pool;
use crate::remote::{
    EntryKind, Remote, RemoteDigest, RemoteEntry, SetAttributes, SmallFile, SmallPut,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How long a stalled read waits before it fails, as the agent's stall watchdog would make it.
pub const STALL: Duration = Duration::from_secs(60);

/// The largest read or write one request carries over an SFTP-like host.
pub const MAX_IO_SIZE: u32 = 256 << 10;
/// The largest read one request carries where reads come hashed, as the agent's do: a whole
/// block.
pub const HASHED_IO_SIZE: u32 = 1 << 20;

/// One entry of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File {
        data: Vec<u8>,
        mode: u32,
        mtime: i64,
    },
    Directory {
        mode: u32,
        mtime: i64,
    },
    Symlink {
        target: String,
    },
}

/// Ways the host misbehaves. The default is a host that does not.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Each connection opened from now on is cut once it has moved this many bytes (read and
    /// written together).
    pub cut_after: Option<u64>,
    /// How many connections are still to be cut; None cuts every one.
    pub cuts_left: Option<usize>,
    /// Reads on every connection stall (and then fail) once it has read this many bytes.
    pub stall_after: Option<u64>,
    /// Files are listed and stat as this many bytes larger (or smaller) than they are.
    pub size_lie: i64,
    /// Reads of this path return each byte flipped, while digests and block hashes describe
    /// the true content.
    pub corrupt_reads: Option<String>,
    /// Writes to this path are answered as done and never land.
    pub drop_writes: Option<String>,
    /// The host answers no block hashes nor small reads in one request (an SFTP server).
    pub no_block_hashes: bool,
    /// The host has no way to digest a whole file.
    pub no_digest: bool,
    /// Reads come without the host's hash of what was read (an agent older than protocol
    /// version 4), though block hashes are answered.
    pub no_hashed_reads: bool,
    /// A stat takes this long to answer, as over a far link.
    pub round_trip: Option<Duration>,
    /// The host takes no whole small files in one request (an agent older than protocol
    /// version 5, or SFTP).
    pub no_put_small: bool,
    /// Listing this directory is refused for good (permission denied); each try is counted
    /// in [`Counters::unlistable_tries`].
    pub unlistable: Option<String>,
}

/// What the host's connections did.
#[derive(Debug, Default)]
pub struct Counters {
    pub connections_opened: AtomicUsize,
    pub connections_open: AtomicUsize,
    pub most_open_at_once: AtomicUsize,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    /// Blocks hashed for block-hash requests (hashes that came with reads not counted).
    pub blocks_hashed: AtomicU64,
    /// The connections each call of the pool's `expect_data` asked for, in order.
    pub asked_ahead: Mutex<Vec<usize>>,
    /// Files synced alone, and synced with others ([`Remote::sync_grouped`]).
    pub syncs_alone: AtomicU64,
    pub syncs_grouped: AtomicU64,
    /// Whole small files taken in one request ([`Remote::put_small`]).
    pub puts_small: AtomicU64,
    /// Directories listed, those being listed now, and the most listed at once (a listing
    /// takes `Faults::round_trip`).
    pub listings: AtomicU64,
    pub listings_now: AtomicUsize,
    pub most_listings_at_once: AtomicUsize,
    /// Listings of [`Faults::unlistable`] tried.
    pub unlistable_tries: AtomicU64,
}

/// A remote machine's files, in memory.
#[derive(Debug, Default)]
pub struct MemoryHost {
    tree: Mutex<BTreeMap<String, Node>>,
    faults: Mutex<Faults>,
    pub counters: Counters,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The parent directory of an absolute path (`/` for a top-level entry).
fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(index) => &path[..index],
    }
}

fn name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn no_such(path: &str) -> Error {
    Error::remote(format!("memory: {path}: no such file or directory")).transient(false)
}

impl MemoryHost {
    /// An empty host: only `/`.
    pub fn new() -> Arc<MemoryHost> {
        let host = MemoryHost::default();
        lock(&host.tree).insert(
            "/".into(),
            Node::Directory {
                mode: 0o755,
                mtime: 0,
            },
        );
        Arc::new(host)
    }

    /// Puts `node` at `path`, making missing parent directories.
    pub fn put(&self, path: &str, node: Node) {
        let mut tree = lock(&self.tree);
        let mut ancestors = Vec::new();
        let mut current = parent(path);
        while current != "/" && !tree.contains_key(current) {
            ancestors.push(current.to_string());
            current = parent(current);
        }
        for directory in ancestors {
            tree.insert(
                directory,
                Node::Directory {
                    mode: 0o755,
                    mtime: 1_600_000_000,
                },
            );
        }
        tree.insert(path.to_string(), node);
    }

    /// Puts a file of `data` with mode 0644 and a fixed mtime.
    pub fn put_file(&self, path: &str, data: &[u8]) {
        self.put(
            path,
            Node::File {
                data: data.to_vec(),
                mode: 0o644,
                mtime: 1_600_000_000,
            },
        );
    }

    pub fn node(&self, path: &str) -> Option<Node> {
        lock(&self.tree).get(path).cloned()
    }

    /// The content of the file at `path`.
    pub fn file(&self, path: &str) -> Option<Vec<u8>> {
        match self.node(path)? {
            Node::File { data, .. } => Some(data),
            _ => None,
        }
    }

    /// Every path below `top` (itself included) with its node.
    pub fn tree_below(&self, top: &str) -> BTreeMap<String, Node> {
        let prefix = format!("{}/", top.trim_end_matches('/'));
        lock(&self.tree)
            .iter()
            .filter(|(path, _)| *path == top || path.starts_with(&prefix))
            .map(|(path, node)| (path.clone(), node.clone()))
            .collect()
    }

    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.faults) = faults;
    }

    pub fn faults(&self) -> Faults {
        lock(&self.faults).clone()
    }

    /// A new connection to the host, cut as the faults say.
    pub fn connect(self: &Arc<Self>) -> MemoryRemote {
        let budget = {
            let mut faults = lock(&self.faults);
            match (faults.cut_after, faults.cuts_left) {
                (Some(_), Some(0)) | (None, _) => None,
                (Some(bytes), Some(left)) => {
                    faults.cuts_left = Some(left - 1);
                    Some(bytes)
                }
                (Some(bytes), None) => Some(bytes),
            }
        };
        self.connection(budget)
    }

    /// A connection that is never cut: a planner's, which moves listings and no file data.
    pub fn connect_planner(self: &Arc<Self>) -> MemoryRemote {
        self.connection(None)
    }

    fn connection(self: &Arc<Self>, budget: Option<u64>) -> MemoryRemote {
        let counters = &self.counters;
        counters.connections_opened.fetch_add(1, Ordering::Relaxed);
        let open = counters.connections_open.fetch_add(1, Ordering::Relaxed) + 1;
        counters
            .most_open_at_once
            .fetch_max(open, Ordering::Relaxed);
        self.remote(budget, true)
    }

    /// A second session on the planner's connection: never cut, not counted as a connection.
    pub fn planner_session(self: &Arc<Self>) -> MemoryRemote {
        self.remote(None, false)
    }

    fn remote(self: &Arc<Self>, cut_after: Option<u64>, counted: bool) -> MemoryRemote {
        MemoryRemote {
            host: self.clone(),
            cut_after,
            moved: AtomicU64::new(0),
            read: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            counted,
        }
    }

    fn entry(&self, path: &str, node: &Node) -> RemoteEntry {
        let lie = lock(&self.faults).size_lie;
        let (kind, size, mtime, mode) = match node {
            Node::File { data, mode, mtime } => (
                EntryKind::File,
                (data.len() as i64).saturating_add(lie).max(0) as u64,
                *mtime,
                *mode,
            ),
            Node::Directory { mode, mtime } => (EntryKind::Directory, 0, *mtime, *mode),
            Node::Symlink { target } => (EntryKind::Symlink, target.len() as u64, 0, 0o777),
        };
        RemoteEntry {
            name: name(path).to_string(),
            kind,
            size,
            mtime,
            mode,
        }
    }
}

/// An open file: its path.
#[derive(Debug, Clone)]
pub struct MemoryFile {
    path: String,
}

/// One connection to a [`MemoryHost`].
#[derive(Debug)]
pub struct MemoryRemote {
    host: Arc<MemoryHost>,
    /// Bytes this connection moves before it is cut.
    cut_after: Option<u64>,
    moved: AtomicU64,
    read: AtomicU64,
    closed: AtomicBool,
    /// A connection of its own, counted among the host's (not a second session on one).
    counted: bool,
}

impl Drop for MemoryRemote {
    fn drop(&mut self) {
        if self.counted && !self.closed.load(Ordering::Relaxed) {
            self.host
                .counters
                .connections_open
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl MemoryRemote {
    /// Fails once the connection is closed.
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(Error::connect("memory: the connection was cut"));
        }
        Ok(())
    }

    /// Counts `bytes` more moved, cutting the connection when they cross its budget.
    fn carry(&self, bytes: u64) -> Result<()> {
        self.check_open()?;
        let moved = self.moved.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if self.cut_after.is_some_and(|budget| moved > budget) {
            self.cut();
            return Err(Error::connect("memory: the connection was cut"));
        }
        Ok(())
    }

    /// Closes the connection as a dropped link would.
    pub fn cut(&self) {
        if !self.closed.swap(true, Ordering::Relaxed) && self.counted {
            self.host
                .counters
                .connections_open
                .fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Hands read bytes of `path` over the connection, as its faults have it: stalled, cut,
    /// or corrupted.
    async fn deliver(&self, path: &str, mut chunk: Vec<u8>) -> Result<Vec<u8>> {
        let faults = self.host.faults();
        let read_before = self.read.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if faults
            .stall_after
            .is_some_and(|bytes| read_before + chunk.len() as u64 > bytes)
        {
            tokio::time::sleep(STALL).await;
            self.cut();
            return Err(Error::connect(format!(
                "memory: no answer for {} s; the connection is stalled",
                STALL.as_secs()
            )));
        }
        self.carry(chunk.len() as u64)?;
        if faults.corrupt_reads.as_deref() == Some(path) {
            chunk.iter_mut().for_each(|byte| *byte = !*byte);
        }
        self.host
            .counters
            .bytes_read
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Ok(chunk)
    }

    fn file_data(&self, path: &str) -> Result<Vec<u8>> {
        self.file_range(path, 0, u64::MAX)
    }

    /// The bytes of the file at `path` from `offset`, at most `length` of them (copying only
    /// those: tests pull files of many MiB a block at a time).
    fn file_range(&self, path: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        match lock(&self.host.tree).get(path) {
            Some(Node::File { data, .. }) => {
                let start = offset.min(data.len() as u64) as usize;
                let end = offset.saturating_add(length).min(data.len() as u64) as usize;
                Ok(data[start..end].to_vec())
            }
            Some(_) => Err(Error::remote(format!("memory: {path}: not a file")).transient(false)),
            None => Err(no_such(path)),
        }
    }
}

impl Remote for MemoryRemote {
    type File = MemoryFile;

    fn label(&self) -> &str {
        "memory"
    }

    fn max_io_size(&self) -> u32 {
        if self.hashes_reads() {
            HASHED_IO_SIZE
        } else {
            MAX_IO_SIZE
        }
    }

    async fn stat(&self, path: &str, follow: bool) -> Result<Option<RemoteEntry>> {
        self.check_open()?;
        if let Some(round_trip) = self.host.faults().round_trip {
            tokio::time::sleep(round_trip).await;
        }
        let mut path = path.to_string();
        for _ in 0..40 {
            match self.host.node(&path) {
                Some(Node::Symlink { target }) if follow => {
                    path = if target.starts_with('/') {
                        target
                    } else {
                        crate::remote::join(parent(&path), &target)
                    };
                }
                Some(node) => return Ok(Some(self.host.entry(&path, &node))),
                None => return Ok(None),
            }
        }
        Err(Error::remote(format!(
            "memory: {path}: too many levels of symbolic links"
        )))
    }

    async fn list(&self, path: &str) -> Result<Vec<RemoteEntry>> {
        self.check_open()?;
        let counters = &self.host.counters;
        counters.listings.fetch_add(1, Ordering::Relaxed);
        if let Some(round_trip) = self.host.faults().round_trip {
            let now = counters.listings_now.fetch_add(1, Ordering::Relaxed) + 1;
            counters
                .most_listings_at_once
                .fetch_max(now, Ordering::Relaxed);
            tokio::time::sleep(round_trip).await;
            counters.listings_now.fetch_sub(1, Ordering::Relaxed);
        }
        if self.host.faults().unlistable.as_deref() == Some(path) {
            counters.unlistable_tries.fetch_add(1, Ordering::Relaxed);
            return Err(
                Error::remote(format!("memory: {path}: permission denied")).transient(false)
            );
        }
        match self.host.node(path) {
            Some(Node::Directory { .. }) => {}
            Some(_) => {
                return Err(
                    Error::remote(format!("memory: {path}: not a directory")).transient(false)
                );
            }
            None => return Err(no_such(path)),
        }
        let tree = lock(&self.host.tree);
        Ok(tree
            .iter()
            .filter(|(child, _)| *child != "/" && parent(child) == path)
            .map(|(child, node)| self.host.entry(child, node))
            .collect())
    }

    async fn read_link(&self, path: &str) -> Result<String> {
        self.check_open()?;
        match self.host.node(path) {
            Some(Node::Symlink { target }) => Ok(target),
            _ => Err(Error::remote(format!("memory: {path}: not a symlink")).transient(false)),
        }
    }

    async fn open_read(&self, path: &str) -> Result<MemoryFile> {
        self.check_open()?;
        self.file_data(path)?;
        Ok(MemoryFile {
            path: path.to_string(),
        })
    }

    async fn read_at(&self, file: &MemoryFile, offset: u64, length: u32) -> Result<Vec<u8>> {
        let length = u64::from(length.min(self.max_io_size()));
        let data = self.file_range(&file.path, offset, length)?;
        self.deliver(&file.path, data).await
    }

    fn hashes_reads(&self) -> bool {
        let faults = self.host.faults();
        !faults.no_block_hashes && !faults.no_hashed_reads
    }

    async fn read_at_hashed(
        &self,
        file: &MemoryFile,
        offset: u64,
        length: u32,
    ) -> Result<(Vec<u8>, Option<BlockHash>)> {
        if !self.hashes_reads() {
            return super::read_unhashed(self, file, offset, length).await;
        }
        let length = u64::from(length.min(self.max_io_size()));
        let data = self.file_range(&file.path, offset, length)?;
        // The hash of the true bytes, whatever the delivery does to them.
        let hash = hash_block(&data);
        let delivered = self.deliver(&file.path, data).await?;
        Ok((delivered, Some(hash)))
    }

    async fn open_write(&self, path: &str) -> Result<MemoryFile> {
        self.check_open()?;
        match self.host.node(path) {
            Some(Node::File { .. }) => {}
            Some(Node::Symlink { .. }) | None => {
                if !matches!(self.host.node(parent(path)), Some(Node::Directory { .. })) {
                    return Err(no_such(parent(path)));
                }
                self.host.put(
                    path,
                    Node::File {
                        data: Vec::new(),
                        mode: 0o600,
                        mtime: 0,
                    },
                );
            }
            Some(Node::Directory { .. }) => {
                return Err(
                    Error::remote(format!("memory: {path}: is a directory")).transient(false)
                );
            }
        }
        Ok(MemoryFile {
            path: path.to_string(),
        })
    }

    async fn write_at(&self, file: &MemoryFile, offset: u64, data: Vec<u8>) -> Result<()> {
        self.check_open()?;
        let dropped = self.host.faults().drop_writes.as_deref() == Some(file.path.as_str());
        if !dropped {
            let mut tree = lock(&self.host.tree);
            let Some(Node::File { data: content, .. }) = tree.get_mut(&file.path) else {
                return Err(no_such(&file.path));
            };
            let end = offset as usize + data.len();
            if content.len() < end {
                content.resize(end, 0);
            }
            content[offset as usize..end].copy_from_slice(&data);
        }
        self.host
            .counters
            .bytes_written
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        // The write landed; the answer is what a cut loses.
        self.carry(data.len() as u64)
    }

    fn puts_small(&self) -> bool {
        !self.host.faults().no_put_small
    }

    /// As the agent does it: the file one byte too long while it is written, then checked
    /// against `hash`, and only then its size, mode and mtime.
    async fn put_small(&self, path: &str, put: SmallPut) -> Result<()> {
        let file = self.open_write(path).await?;
        let length = put.data.len();
        self.set_file_attributes(
            &file,
            SetAttributes {
                size: Some(crate::engine::plan::size_while_incomplete(length as u64)),
                ..SetAttributes::default()
            },
        )
        .await?;
        self.write_at(&file, 0, put.data).await?;
        self.host
            .counters
            .puts_small
            .fetch_add(1, Ordering::Relaxed);
        let held = self.host.file(path).unwrap_or_default();
        if held.get(..length).map(hash_block) != Some(put.hash) {
            return Err(Error::remote(format!(
                "memory: {path}: what the file holds after writing differs from what was sent"
            )));
        }
        self.set_file_attributes(
            &file,
            SetAttributes {
                size: Some(length as u64),
                mode: Some(put.mode),
                mtime: Some(put.mtime),
            },
        )
        .await
    }

    async fn sync(&self, _file: &MemoryFile) -> Result<()> {
        self.check_open()?;
        self.host
            .counters
            .syncs_alone
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn sync_grouped(&self, _file: &MemoryFile) -> Result<()> {
        self.check_open()?;
        self.host
            .counters
            .syncs_grouped
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn close(&self, _file: MemoryFile) -> Result<()> {
        self.check_open()?;
        if let Some(round_trip) = self.host.faults().round_trip {
            tokio::time::sleep(round_trip).await;
        }
        self.check_open()
    }

    async fn set_attributes(&self, path: &str, attributes: SetAttributes) -> Result<()> {
        self.check_open()?;
        let mut tree = lock(&self.host.tree);
        match tree.get_mut(path) {
            Some(Node::File { data, mode, mtime }) => {
                if let Some(size) = attributes.size {
                    data.resize(size as usize, 0);
                }
                *mode = attributes.mode.unwrap_or(*mode);
                *mtime = attributes.mtime.unwrap_or(*mtime);
                Ok(())
            }
            Some(Node::Directory { mode, mtime }) => {
                *mode = attributes.mode.unwrap_or(*mode);
                *mtime = attributes.mtime.unwrap_or(*mtime);
                Ok(())
            }
            Some(Node::Symlink { .. }) => Ok(()),
            None => Err(no_such(path)),
        }
    }

    async fn set_file_attributes(
        &self,
        file: &MemoryFile,
        attributes: SetAttributes,
    ) -> Result<()> {
        self.set_attributes(&file.path, attributes).await
    }

    async fn make_directory(&self, path: &str, mode: u32) -> Result<()> {
        self.check_open()?;
        match self.host.node(path) {
            Some(Node::Directory { .. }) => Ok(()),
            Some(_) => Err(Error::remote(format!("memory: {path}: exists")).transient(false)),
            None if !matches!(self.host.node(parent(path)), Some(Node::Directory { .. })) => {
                Err(no_such(parent(path)))
            }
            None => {
                self.host.put(path, Node::Directory { mode, mtime: 0 });
                Ok(())
            }
        }
    }

    async fn make_symlink(&self, path: &str, target: &str) -> Result<()> {
        self.check_open()?;
        self.host.put(
            path,
            Node::Symlink {
                target: target.to_string(),
            },
        );
        Ok(())
    }

    async fn remove_file(&self, path: &str) -> Result<()> {
        self.check_open()?;
        match lock(&self.host.tree).remove(path) {
            Some(_) => Ok(()),
            None => Err(no_such(path)),
        }
    }

    async fn digest(&self, path: &str) -> Result<Option<RemoteDigest>> {
        self.check_open()?;
        if self.host.faults().no_digest {
            return Ok(None);
        }
        Ok(Some(RemoteDigest::Blake3(file_hash_of(
            &self.file_data(path)?,
        ))))
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    fn hashes_blocks(&self) -> bool {
        !self.host.faults().no_block_hashes
    }

    async fn block_hashes(
        &self,
        path: &str,
        layout: &BlockLayout,
        blocks: std::ops::Range<u64>,
    ) -> Result<Option<Vec<BlockHash>>> {
        self.check_open()?;
        if !self.hashes_blocks() {
            return Ok(None);
        }
        let data = self.file_data(path)?;
        let block_size = u64::from(layout.block_size());
        let mut hashes = Vec::new();
        for index in blocks {
            let start = index.saturating_mul(block_size);
            if start >= data.len() as u64 {
                break;
            }
            let end = start.saturating_add(block_size).min(data.len() as u64);
            hashes.push(hash_block(&data[start as usize..end as usize]));
            self.host
                .counters
                .blocks_hashed
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(Some(hashes))
    }

    async fn read_small(&self, path: &str, max_length: u32) -> Result<Option<SmallFile>> {
        if !self.hashes_blocks() {
            return Ok(None);
        }
        let truth = self.file_data(path)?;
        let kept = truth.len().min(max_length as usize);
        let data = self.deliver(path, truth[..kept].to_vec()).await?;
        Ok(Some(SmallFile {
            data,
            block_hash: Some(hash_block(&truth[..kept])),
        }))
    }
}

/// Connections to one [`MemoryHost`]: the planner is one (never cut), every other request
/// takes one opened ahead or opens another.
pub struct MemoryPool {
    host: Arc<MemoryHost>,
    planner: Arc<MemoryRemote>,
    /// The scouts' listing session: another remote like the planner, never cut.
    lister: Arc<MemoryRemote>,
    ahead: Mutex<Vec<MemoryRemote>>,
}

impl MemoryPool {
    pub fn new(host: Arc<MemoryHost>) -> MemoryPool {
        MemoryPool {
            planner: Arc::new(host.connect_planner()),
            lister: Arc::new(host.planner_session()),
            host,
            ahead: Mutex::new(Vec::new()),
        }
    }

    /// A connection opened ahead that is still open, else a new one.
    fn take(&self) -> MemoryRemote {
        let mut ahead = lock(&self.ahead);
        while let Some(remote) = ahead.pop() {
            if !remote.is_closed() {
                return remote;
            }
        }
        self.host.connect()
    }
}

impl Pool for MemoryPool {
    type Remote = MemoryRemote;

    fn remote_id(&self) -> &str {
        "tester@memory:22"
    }

    fn planner(&self) -> Arc<MemoryRemote> {
        self.planner.clone()
    }

    async fn for_data(&self) -> Result<Arc<MemoryRemote>> {
        Ok(Arc::new(self.take()))
    }

    async fn open(&self) -> Result<Arc<MemoryRemote>> {
        Ok(Arc::new(self.take()))
    }

    fn expect_data(&self, more: usize) {
        lock(&self.host.counters.asked_ahead).push(more);
        lock(&self.ahead).extend((0..more).map(|_| self.host.connect()));
    }

    /// Not timed while connecting: the engine times a request, which `Faults::round_trip`
    /// slows on the clock tests pause.
    fn round_trip(&self) -> Option<std::time::Duration> {
        None
    }

    fn lister(&self) -> Option<Arc<MemoryRemote>> {
        Some(self.lister.clone())
    }
}
