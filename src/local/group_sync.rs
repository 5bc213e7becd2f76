//! Making many small files durable together ([`GroupSync`]).
//!
//! A pulled file of one block has no journal, so nothing syncs it on its way, and syncing each
//! one (`fdatasync`) costs a disk flush per file: for thousands of small files that is most of
//! the run. Instead each such file waits, before it is marked done, for a sync of its whole
//! filesystem (`syncfs`) that started after its data was written. One sync covers every file
//! written before it started; while one runs, the files that arrive wait for the next (a group
//! commit), so the number of syncs follows the disk's pace, not the number of files. The
//! filesystem's other dirty data is written too, as `sync` would, which costs time, never
//! correctness. A sync that fails counts for nobody: each waiter then syncs again and gets its
//! own answer. Where there is no `syncfs` (not Linux), each file is synced on its own.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The syncs of each filesystem a transfer writes to, shared by its files.
#[derive(Debug, Default)]
pub struct GroupSync {
    /// By device number: a sync of one filesystem says nothing of another's files.
    filesystems: Mutex<HashMap<u64, Arc<Filesystem>>>,
}

/// The syncs of one filesystem.
#[derive(Debug, Default)]
struct Filesystem {
    /// Syncs started so far; each is numbered by the count once it started.
    started: AtomicU64,
    /// The number of the last sync that finished well. The lock is held while a sync runs, so
    /// syncs of one filesystem run one at a time and finish in the order they started.
    finished: tokio::sync::Mutex<u64>,
    /// Syncs actually made, for tests.
    made: AtomicU64,
}

impl GroupSync {
    pub fn new() -> GroupSync {
        GroupSync::default()
    }

    /// Returns once the data written to `file` before this call is on disk.
    pub async fn sync(&self, file: &File) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::MetadataExt;
            let filesystem = self.filesystem(file.metadata()?.dev());
            filesystem.sync_after(file).await
        }
        #[cfg(not(target_os = "linux"))]
        {
            let file = file.try_clone()?;
            tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .map_err(io::Error::other)?
        }
    }

    /// How many syncs were made, of every filesystem (where each file is synced on its own,
    /// none are counted).
    pub fn syncs_made(&self) -> u64 {
        let filesystems = self
            .filesystems
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        filesystems
            .values()
            .map(|filesystem| filesystem.made.load(Ordering::Relaxed))
            .sum()
    }

    fn filesystem(&self, device: u64) -> Arc<Filesystem> {
        let mut filesystems = self
            .filesystems
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        filesystems.entry(device).or_default().clone()
    }
}

impl Filesystem {
    /// Waits for a sync that started after this call began, starting one when none did.
    #[cfg(target_os = "linux")]
    async fn sync_after(&self, file: &File) -> io::Result<()> {
        // Every sync numbered above this one starts after now, so after the data was written.
        let needed = self.started.load(Ordering::Acquire) + 1;
        let mut finished = self.finished.lock().await;
        if *finished >= needed {
            return Ok(());
        }
        let number = self.started.fetch_add(1, Ordering::AcqRel) + 1;
        let handle = file.try_clone()?;
        tokio::task::spawn_blocking(move || nix::unistd::syncfs(&handle))
            .await
            .map_err(io::Error::other)?
            .map_err(io::Error::from)?;
        self.made.fetch_add(1, Ordering::Relaxed);
        *finished = number;
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Write;

    fn written(directory: &tempfile::TempDir, name: &str) -> File {
        let mut file = File::create(directory.path().join(name)).expect("create");
        file.write_all(name.as_bytes()).expect("write");
        file
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn files_that_wait_together_share_syncs() {
        let directory = tempfile::tempdir().expect("tempdir");
        let sync = Arc::new(GroupSync::new());
        let files: Vec<Arc<File>> = (0..200)
            .map(|index| Arc::new(written(&directory, &format!("f{index}"))))
            .collect();
        let mut waiting = tokio::task::JoinSet::new();
        for file in &files {
            let (sync, file) = (sync.clone(), file.clone());
            waiting.spawn(async move { sync.sync(&file).await });
        }
        while let Some(done) = waiting.join_next().await {
            done.expect("no panic").expect("synced");
        }
        let made = sync.syncs_made();
        // Each file waited for a sync of its own start or a later one: at least one sync,
        // and at most one per file; those that queued behind a running sync shared the next.
        assert!((1..=200).contains(&made), "{made} syncs");
        // A file written after every sync so far gets a new one.
        let late = written(&directory, "late");
        sync.sync(&late).await.expect("synced");
        assert_eq!(sync.syncs_made(), made + 1);
    }

    #[tokio::test]
    async fn a_sync_that_started_before_the_call_does_not_count() {
        let directory = tempfile::tempdir().expect("tempdir");
        let sync = GroupSync::new();
        let file = written(&directory, "one");
        let filesystem = {
            use std::os::unix::fs::MetadataExt;
            sync.filesystem(file.metadata().expect("metadata").dev())
        };
        // As if sync number 1 were running when the call began: the call must wait for it and
        // then make sync number 2, not take number 1's end for its own.
        filesystem.started.store(1, Ordering::Release);
        let mut running = filesystem.finished.lock().await;
        let waiter = {
            let filesystem = filesystem.clone();
            let handle = file.try_clone().expect("clone");
            tokio::spawn(async move { filesystem.sync_after(&handle).await })
        };
        tokio::task::yield_now().await;
        // Sync number 1 ends.
        *running = 1;
        drop(running);
        waiter.await.expect("no panic").expect("synced");
        assert_eq!(filesystem.started.load(Ordering::Acquire), 2);
        assert_eq!(*filesystem.finished.lock().await, 2);
        assert_eq!(filesystem.made.load(Ordering::Relaxed), 1);
    }
}
