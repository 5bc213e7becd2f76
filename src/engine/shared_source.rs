//! One local source pushed to several hosts: each block is read from disk and hashed once,
//! then handed to every host that sends it.
//!
//! Hosts of a fleet push run their own transfers (connections, plans, deltas, journals), and
//! each asks this window for the blocks it sends, in order. The first to ask for a block reads
//! and hashes it; the block then stays in memory for the other hosts at work that have not
//! passed it, until each has taken it, passed it (a delta that does not need it), finished
//! with its file, or ended. Nothing is evicted: when the window is full a block is simply not
//! kept, and a host that falls that far behind reads it again (from the page cache, most of
//! the time) rather than holding the others back. Two hosts asking for the same block at once do
//! not both read it: the second waits for the first's read, which is one block's `pread` and
//! hash, never a network wait.

use crate::blocks::{BlockHash, BlockLayout, hash_block};
use crate::local::FileIdentity;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// Blocks kept for the hosts that have not taken them yet, all files together. Hosts on
/// similar links stay within a few MiB of each other; this also covers one that connected a
/// fraction of a second later.
pub const DEFAULT_WINDOW: u64 = 32 << 20;

/// Files at least this large have their block hashes remembered for the other hosts when one
/// host hashes them to compare with its copy (a delta, a resume): hashing them again is a full
/// read. A smaller file costs little to hash again, and a tree of many would make the memory
/// grow with the tree.
pub const REMEMBERED_HASHES_MIN_SIZE: u64 = 16 << 20;

/// The block hashes of one source file known so far; one host at a time adds to them.
pub type HashMemory = Arc<tokio::sync::Mutex<BTreeMap<u64, BlockHash>>>;

/// One block of the source and its hash.
#[derive(Debug)]
pub struct SharedBlock {
    pub hash: BlockHash,
    pub data: Vec<u8>,
}

/// The blocks read for one fleet push.
#[derive(Debug)]
pub struct SharedSource {
    window_bytes: u64,
    window: Mutex<Window>,
    /// Signalled when a read finishes.
    loaded: Condvar,
    /// Bytes read from source files, for the run's debug log and tests.
    bytes_read: AtomicU64,
    /// Hashes of large files' blocks, by file.
    hashes: Mutex<HashMap<FileIdentity, HashMemory>>,
}

#[derive(Debug, Default)]
struct Window {
    /// The hosts at work: a block is kept for those that have not passed it.
    hosts: HashSet<u64>,
    files: HashMap<FileIdentity, FileWindow>,
    /// Bytes of the blocks held, all files together.
    bytes: u64,
    next_id: u64,
}

/// One file's blocks, and where each host is in it.
#[derive(Debug, Default)]
struct FileWindow {
    /// Where each host is: it reads in order, so it will never take a block below this.
    /// [`FINISHED`] once it is done with the file; a host not listed has not started it.
    positions: HashMap<u64, u64>,
    blocks: BTreeMap<u64, Slot>,
}

/// The position of a host that is done with a file.
const FINISHED: u64 = u64::MAX;

#[derive(Debug)]
enum Slot {
    /// A host is reading it now.
    Loading,
    Ready {
        block: Arc<SharedBlock>,
        /// The hosts that have not reached it yet.
        wanted_by: Vec<u64>,
    },
}

impl SharedSource {
    /// A window holding at most `window_bytes` of blocks.
    pub fn new(window_bytes: u64) -> SharedSource {
        SharedSource {
            window_bytes,
            window: Mutex::new(Window::default()),
            loaded: Condvar::new(),
            bytes_read: AtomicU64::new(0),
            hashes: Mutex::new(HashMap::new()),
        }
    }

    /// Bytes read from source files so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// A host starts its transfer: from now on, blocks read by the others are kept for it
    /// until it passes them, finishes their file, or its transfer ends.
    pub fn host(self: &Arc<Self>) -> SourceHost {
        let mut window = self.lock();
        let id = window.next_id;
        window.next_id += 1;
        window.hosts.insert(id);
        SourceHost {
            source: self.clone(),
            id,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One host's part in a fleet push; dropping it (its transfer ended) lets go of every block
/// kept for it.
#[derive(Debug)]
pub struct SourceHost {
    source: Arc<SharedSource>,
    id: u64,
}

impl SourceHost {
    /// The block hashes the hosts found so far for the file whose identity is `identity`:
    /// a host that needs hashes to compare with its copy locks them, hashes what is missing,
    /// and adds it, so that the others wait for it rather than read the file again.
    pub fn hash_memory(&self, identity: FileIdentity) -> HashMemory {
        self.source
            .hashes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(identity)
            .or_default()
            .clone()
    }

    /// This host starts sending the file whose identity is `identity`; it must ask for the
    /// file's blocks in increasing order. A second reader of the same file (a retry) starts
    /// from the beginning again.
    pub fn reader(&self, identity: FileIdentity) -> SourceReader {
        let mut window = self.source.lock();
        let file = window.files.entry(identity).or_default();
        file.positions.insert(self.id, 0);
        SourceReader {
            source: self.source.clone(),
            identity,
            host: self.id,
        }
    }
}

impl Drop for SourceHost {
    fn drop(&mut self) {
        let mut window = self.source.lock();
        let Window {
            hosts,
            files,
            bytes,
            ..
        } = &mut *window;
        hosts.remove(&self.id);
        for file in files.values_mut() {
            file.positions.remove(&self.id);
            file.release_all(self.id, bytes);
        }
        files.retain(|_, file| !file.is_over(hosts));
    }
}

/// One host's reading of one file; dropping it (the file is done, or failed) lets go of the
/// file's blocks kept for this host.
#[derive(Debug)]
pub struct SourceReader {
    source: Arc<SharedSource>,
    identity: FileIdentity,
    host: u64,
}

impl SourceReader {
    /// Block `index` of `file`: from the window if another host read it, otherwise read and
    /// hashed now (and kept for the hosts that have not reached it, if there is room).
    pub fn block(
        &self,
        file: &File,
        layout: &BlockLayout,
        index: u64,
    ) -> std::io::Result<Arc<SharedBlock>> {
        let source = &*self.source;
        let mut window = source.lock();
        loop {
            let Window { files, bytes, .. } = &mut *window;
            let file_window = files.entry(self.identity).or_default();
            // Blocks below this one will never be taken by this host.
            file_window.positions.insert(self.host, index);
            let passed: Vec<u64> = file_window
                .blocks
                .range(..index)
                .map(|(at, _)| *at)
                .collect();
            for at in passed {
                file_window.release(at, self.host, bytes);
            }
            match file_window.blocks.get(&index) {
                Some(Slot::Ready { block, .. }) => {
                    let block = block.clone();
                    file_window.release(index, self.host, bytes);
                    file_window.positions.insert(self.host, index + 1);
                    return Ok(block);
                }
                Some(Slot::Loading) => {
                    window = source
                        .loaded
                        .wait(window)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                None => {
                    file_window.blocks.insert(index, Slot::Loading);
                    break;
                }
            }
        }
        drop(window);
        // Whatever happens below, the slot leaves the loading state and the waiters wake.
        let mut loading = Loading {
            reader: self,
            index,
            done: false,
        };
        let range = layout.range(index);
        let mut data = vec![0u8; (range.end - range.start) as usize];
        file.read_exact_at(&mut data, range.start)?;
        source
            .bytes_read
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let block = Arc::new(SharedBlock {
            hash: hash_block(&data),
            data,
        });
        loading.keep(block.clone());
        Ok(block)
    }
}

impl Drop for SourceReader {
    fn drop(&mut self) {
        let mut window = self.source.lock();
        let Window {
            hosts,
            files,
            bytes,
            ..
        } = &mut *window;
        if let Some(file) = files.get_mut(&self.identity) {
            file.positions.insert(self.host, FINISHED);
            file.release_all(self.host, bytes);
            if file.is_over(hosts) {
                files.remove(&self.identity);
            }
        }
    }
}

impl FileWindow {
    /// `host` no longer wants block `index`; a block nobody wants goes.
    fn release(&mut self, index: u64, host: u64, bytes: &mut u64) {
        if let Some(Slot::Ready { block, wanted_by }) = self.blocks.get_mut(&index) {
            wanted_by.retain(|&id| id != host);
            if wanted_by.is_empty() {
                *bytes -= block.data.len() as u64;
                self.blocks.remove(&index);
            }
        }
    }

    fn release_all(&mut self, host: u64, bytes: &mut u64) {
        let held: Vec<u64> = self.blocks.keys().copied().collect();
        for index in held {
            self.release(index, host, bytes);
        }
    }

    /// Nothing held, and every host at work is done with the file: nothing to remember.
    fn is_over(&self, hosts: &HashSet<u64>) -> bool {
        self.blocks.is_empty()
            && hosts
                .iter()
                .all(|host| self.positions.get(host) == Some(&FINISHED))
    }
}

/// A block being read by one host.
struct Loading<'a> {
    reader: &'a SourceReader,
    index: u64,
    done: bool,
}

impl Loading<'_> {
    /// Keeps the block for the hosts that have not reached it, if the window has room.
    /// Nothing is dropped to make room: what the window holds is wanted by hosts behind this
    /// one, who need it sooner than anyone needs this block.
    fn keep(&mut self, block: Arc<SharedBlock>) {
        let source = &*self.reader.source;
        let size = block.data.len() as u64;
        let mut window = source.lock();
        let Window {
            hosts,
            files,
            bytes,
            ..
        } = &mut *window;
        if let Some(file_window) = files.get_mut(&self.reader.identity) {
            file_window.blocks.remove(&self.index);
            file_window
                .positions
                .insert(self.reader.host, self.index + 1);
            let wanted_by: Vec<u64> = hosts
                .iter()
                .copied()
                .filter(|&host| {
                    host != self.reader.host
                        && file_window.positions.get(&host).copied().unwrap_or(0) <= self.index
                })
                .collect();
            if !wanted_by.is_empty() && *bytes + size <= source.window_bytes {
                *bytes += size;
                file_window
                    .blocks
                    .insert(self.index, Slot::Ready { block, wanted_by });
            }
        }
        self.done = true;
        drop(window);
        source.loaded.notify_all();
    }
}

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        if !self.done {
            let source = &*self.reader.source;
            if let Some(file_window) = source.lock().files.get_mut(&self.reader.identity) {
                file_window.blocks.remove(&self.index);
            }
            source.loaded.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn source_file(length: usize) -> (tempfile::NamedTempFile, FileIdentity, BlockLayout) {
        let mut file = tempfile::NamedTempFile::new().expect("temporary file");
        let data: Vec<u8> = (0..length).map(|at| (at * 7 % 251) as u8).collect();
        file.write_all(&data).expect("write");
        let identity = FileIdentity::of_file(file.as_file()).expect("identity");
        let layout = BlockLayout::new(length as u64, 4096).expect("layout");
        (file, identity, layout)
    }

    fn held(source: &SharedSource) -> u64 {
        source.lock().bytes
    }

    fn hosts(source: &Arc<SharedSource>, count: usize) -> Vec<SourceHost> {
        (0..count).map(|_| source.host()).collect()
    }

    #[test]
    fn hosts_in_step_read_each_block_once() {
        let (file, identity, layout) = source_file(10 * 4096 + 100);
        let source = Arc::new(SharedSource::new(1 << 20));
        let hosts = hosts(&source, 3);
        let readers: Vec<SourceReader> = hosts.iter().map(|host| host.reader(identity)).collect();
        for index in 0..layout.block_count() {
            let first = readers[0]
                .block(file.as_file(), &layout, index)
                .expect("read");
            for reader in &readers[1..] {
                let again = reader.block(file.as_file(), &layout, index).expect("read");
                assert_eq!(again.hash, first.hash);
                assert_eq!(again.data, first.data);
            }
            // Every host took it: it is not held any more.
            assert_eq!(held(&source), 0);
        }
        assert_eq!(source.bytes_read(), 10 * 4096 + 100);
        drop(readers);
        assert!(
            source.lock().files.is_empty(),
            "every host is done with the file"
        );
    }

    #[test]
    fn blocks_wait_for_a_host_that_has_not_started_the_file() {
        let (file, identity, layout) = source_file(8 * 4096);
        let source = Arc::new(SharedSource::new(1 << 20));
        let (early, late) = (source.host(), source.host());
        let first = early.reader(identity);
        for index in 0..8 {
            first.block(file.as_file(), &layout, index).expect("read");
        }
        drop(first);
        assert_eq!(held(&source), 8 * 4096);
        // The late host (still connecting, say) starts the file now and reads nothing.
        let second = late.reader(identity);
        for index in 0..8 {
            second.block(file.as_file(), &layout, index).expect("read");
        }
        assert_eq!(source.bytes_read(), 8 * 4096);
        assert_eq!(held(&source), 0);
    }

    #[test]
    fn a_host_behind_the_window_reads_again_without_pushing_out_what_others_need() {
        let (file, identity, layout) = source_file(16 * 4096);
        let source = Arc::new(SharedSource::new(4 * 4096));
        let hosts = hosts(&source, 2);
        let (leader, laggard) = (hosts[0].reader(identity), hosts[1].reader(identity));
        // The leader reads everything; the first four blocks fit and stay for the laggard.
        for index in 0..16 {
            leader.block(file.as_file(), &layout, index).expect("read");
            assert!(held(&source) <= 4 * 4096);
        }
        assert_eq!(source.bytes_read(), 16 * 4096);
        assert_eq!(held(&source), 4 * 4096);
        // The laggard takes those four from memory and reads the other twelve itself, keeping
        // none of them: the leader has passed them.
        for index in 0..16 {
            let block = laggard.block(file.as_file(), &layout, index).expect("read");
            let range = layout.range(index);
            assert_eq!(block.data.len() as u64, range.end - range.start);
            assert!(held(&source) <= 4 * 4096);
        }
        assert_eq!(source.bytes_read(), 28 * 4096);
        assert_eq!(held(&source), 0);
    }

    #[test]
    fn blocks_a_host_skips_finishes_or_leaves_are_let_go() {
        let (file, identity, layout) = source_file(8 * 4096);
        let source = Arc::new(SharedSource::new(1 << 20));
        let hosts = hosts(&source, 4);
        let first = hosts[0].reader(identity);
        for index in 0..8 {
            first.block(file.as_file(), &layout, index).expect("read");
        }
        assert_eq!(held(&source), 8 * 4096);
        // A delta that needs only block 6 passes the others by.
        let skipping = hosts[1].reader(identity);
        skipping.block(file.as_file(), &layout, 6).expect("read");
        // A third host finishes the file having needed nothing of it.
        drop(hosts[2].reader(identity));
        // The fourth host's transfer ends (its link failed for good, say).
        let mut hosts = hosts;
        drop(hosts.pop());
        assert_eq!(held(&source), 4096, "only block 7 is still wanted");
        drop(skipping);
        assert_eq!(held(&source), 0);
        assert_eq!(source.bytes_read(), 8 * 4096);
    }

    #[test]
    fn one_host_keeps_nothing() {
        let (file, identity, layout) = source_file(8 * 4096);
        let source = Arc::new(SharedSource::new(1 << 20));
        let host = source.host();
        let reader = host.reader(identity);
        for index in 0..8 {
            reader.block(file.as_file(), &layout, index).expect("read");
        }
        assert_eq!(held(&source), 0);
        drop(reader);
        assert!(source.lock().files.is_empty());
    }

    #[test]
    fn hosts_at_the_same_block_at_once_read_it_once() {
        let (file, identity, layout) = source_file(64 * 4096);
        let source = Arc::new(SharedSource::new(1 << 20));
        let file = Arc::new(file.reopen().expect("reopen"));
        let hosts = hosts(&source, 4);
        let readers: Vec<SourceReader> = hosts.iter().map(|host| host.reader(identity)).collect();
        std::thread::scope(|scope| {
            for reader in &readers {
                let file = file.clone();
                scope.spawn(move || {
                    for index in 0..64 {
                        reader.block(&file, &layout, index).expect("read");
                    }
                });
            }
        });
        assert_eq!(source.bytes_read(), 64 * 4096);
        assert_eq!(held(&source), 0);
    }

    #[test]
    fn a_failed_read_wakes_the_others_and_is_not_kept() {
        let (file, identity, _) = source_file(4096);
        // A layout longer than the file: the read of block 1 fails.
        let layout = BlockLayout::new(2 * 4096, 4096).expect("layout");
        let source = Arc::new(SharedSource::new(1 << 20));
        let hosts = hosts(&source, 2);
        let (first, second) = (hosts[0].reader(identity), hosts[1].reader(identity));
        assert!(first.block(file.as_file(), &layout, 1).is_err());
        assert!(matches!(
            source
                .lock()
                .files
                .get(&identity)
                .map(|file| file.blocks.len()),
            Some(0)
        ));
        assert!(second.block(file.as_file(), &layout, 0).is_ok());
    }
}
