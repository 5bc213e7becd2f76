//! Hashing the local copy of a single large file while the connection comes up.
//!
//! A delta or a resume of one large file starts by hashing its local copy, a full pass over
//! the data, and connecting (TCP, SSH, the remote agent) takes several round trips during
//! which the CPU waits. So when the command names one local file that exists (the
//! destination of a pull, the source of a push), its blocks are hashed at once on blocking
//! threads, and the transfer uses those hashes only if the file it opens is that same file,
//! unchanged: the same [`FileIdentity`] before and after the hashing. Otherwise
//! they are dropped and the file is hashed as usual; they never decide anything a fresh hash
//! would not.

use crate::blocks::{BlockHash, BlockLayout, DEFAULT_BLOCK_SIZE};
use crate::engine::verify::hash_blocks_parallel_until;
use crate::local::FileIdentity;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Below this a file is hashed in a few milliseconds when needed: not worth guessing.
pub const EARLY_MIN_SIZE: u64 = 16 << 20;
/// The niceness of the early hashing threads (Linux: per thread; 0 is normal, 19 the lowest).
const EARLY_NICENESS: i32 = 10;

type Hashes = Option<Arc<BTreeMap<u64, BlockHash>>>;

/// The block hashes of one local file, being computed.
pub struct EarlyHashes {
    identity: FileIdentity,
    layout: BlockLayout,
    /// Set when the transfer goes on without waiting: the threads stop after their current
    /// block, and the blocks hashed by then are still used.
    stop: Arc<AtomicBool>,
    task: Mutex<Option<tokio::sync::oneshot::Receiver<Hashes>>>,
    done: tokio::sync::OnceCell<Hashes>,
}

impl EarlyHashes {
    /// Starts hashing `path` if it is a regular file (never through a symlink) of at least
    /// [`EARLY_MIN_SIZE`] bytes. Must run inside a tokio runtime.
    pub fn start(path: &Path) -> Option<Arc<EarlyHashes>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(path)
            .ok()?;
        let metadata = file.metadata().ok()?;
        if !metadata.is_file() || metadata.len() < EARLY_MIN_SIZE {
            return None;
        }
        let identity = FileIdentity::of(&metadata);
        let layout = BlockLayout::new(metadata.len(), DEFAULT_BLOCK_SIZE).ok()?;
        let (sender, task) = tokio::sync::oneshot::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::Builder::new()
            .name("early-hashes".into())
            .spawn(move || {
                // Speculative work yields to what the transfer waits for first (the
                // handshake, starting the agent, and on a shared machine the remote's own
                // hashing): the threads below inherit this thread's lower priority.
                let _ = rustix::process::setpriority_process(None, EARLY_NICENESS);
                let all: Vec<u64> = (0..layout.block_count()).collect();
                let hashes = hash_blocks_parallel_until(&file, &layout, &all, &stopping);
                let after = FileIdentity::of_file(&file);
                let hashes = (after == Some(identity)).then(|| Arc::new(hashes));
                let _ = sender.send(hashes);
            })
            .ok()?;
        tracing::debug!(path = %path.display(), "hashing the local file while connecting");
        Some(Arc::new(EarlyHashes {
            identity,
            layout,
            stop,
            task: Mutex::new(Some(task)),
            done: tokio::sync::OnceCell::new(),
        }))
    }

    /// [`for_file`](Self::for_file) without waiting for the rest: the hashing stops after the
    /// blocks it is on (a fraction of a millisecond each), and the blocks hashed so far are
    /// returned. For a transfer that only saves work with them: it hashes the others itself,
    /// and the early threads stop spending the CPU it needs on blocks it has hashed anyway.
    pub async fn for_file_so_far(
        &self,
        file: &File,
        layout: &BlockLayout,
    ) -> BTreeMap<u64, BlockHash> {
        self.stop.store(true, Ordering::Relaxed);
        self.for_file(file, layout).await
    }

    /// The hashes, if `file` (as the transfer opened it, before changing it) is the file
    /// hashed and it did not change while hashed; keyed by block in `layout`, only for blocks
    /// cut the same way in both layouts (the last block of a file whose size changed is not).
    pub async fn for_file(&self, file: &File, layout: &BlockLayout) -> BTreeMap<u64, BlockHash> {
        let same_file = FileIdentity::of_file(file) == Some(self.identity);
        if !same_file || layout.block_size() != self.layout.block_size() {
            return BTreeMap::new();
        }
        let hashes = self
            .done
            .get_or_init(|| async {
                let task = self.task.lock().ok().and_then(|mut task| task.take());
                match task {
                    Some(task) => task.await.ok().flatten(),
                    None => None,
                }
            })
            .await;
        let Some(hashes) = hashes else {
            return BTreeMap::new();
        };
        hashes
            .iter()
            .filter(|&(&index, _)| {
                layout.contains(index) && layout.range(index) == self.layout.range(index)
            })
            .map(|(&index, hash)| (index, *hash))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::verify::hash_blocks;

    use std::io::Write;

    fn file_of(size: usize) -> (tempfile::TempDir, std::path::PathBuf) {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("data");
        let mut file = File::create(&path).expect("create");
        let data: Vec<u8> = (0..size).map(|index| (index * 7 % 251) as u8).collect();
        file.write_all(&data).expect("write");
        (directory, path)
    }

    #[tokio::test]
    async fn hashes_are_those_of_the_same_unchanged_file() {
        let size = EARLY_MIN_SIZE as usize + 12345;
        let (_directory, path) = file_of(size);
        let early = EarlyHashes::start(&path).expect("started");
        let file = File::open(&path).expect("open");
        let layout = BlockLayout::new(size as u64, DEFAULT_BLOCK_SIZE).expect("layout");
        let all: Vec<u64> = (0..layout.block_count()).collect();
        let expected = hash_blocks(&file, &layout, all.iter().copied());
        assert_eq!(early.for_file(&file, &layout).await, expected);
        // Another size cuts the last block differently: that block is left out.
        let longer = BlockLayout::new(size as u64 + 10, DEFAULT_BLOCK_SIZE).expect("layout");
        let hashes = early.for_file(&file, &longer).await;
        assert_eq!(hashes.len() as u64, layout.block_count() - 1);
    }

    #[tokio::test]
    async fn hashing_stopped_early_yields_correct_hashes_of_some_blocks() {
        let size = 4 * EARLY_MIN_SIZE as usize;
        let (_directory, path) = file_of(size);
        let early = EarlyHashes::start(&path).expect("started");
        let file = File::open(&path).expect("open");
        let layout = BlockLayout::new(size as u64, DEFAULT_BLOCK_SIZE).expect("layout");
        let so_far = early.for_file_so_far(&file, &layout).await;
        let all: Vec<u64> = (0..layout.block_count()).collect();
        let expected = hash_blocks(&file, &layout, all.iter().copied());
        assert!(so_far.len() as u64 <= layout.block_count());
        for (index, hash) in &so_far {
            assert_eq!(expected.get(index), Some(hash), "block {index}");
        }
    }

    #[tokio::test]
    async fn a_changed_or_other_file_gets_nothing() {
        let size = EARLY_MIN_SIZE as usize;
        let (_directory, path) = file_of(size);
        let early = EarlyHashes::start(&path).expect("started");
        let layout = BlockLayout::new(size as u64, DEFAULT_BLOCK_SIZE).expect("layout");
        let (_other_directory, other) = file_of(size);
        let other = File::open(&other).expect("open");
        assert!(early.for_file(&other, &layout).await.is_empty());
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        file.set_len(size as u64 + 1).expect("grow");
        assert!(early.for_file(&file, &layout).await.is_empty());
    }

    #[test]
    fn small_files_and_directories_are_not_hashed() {
        let (directory, path) = file_of(4096);
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let _guard = runtime.enter();
        assert!(EarlyHashes::start(&path).is_none());
        assert!(EarlyHashes::start(directory.path()).is_none());
    }
}
