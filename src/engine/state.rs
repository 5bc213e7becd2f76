//! xfer's own state on the local disk: where it lives, and the resume journals in it.
//!
//! All state sits under one directory (`XFER_STATE_DIR`, else `$XDG_STATE_HOME/xfer`, else
//! `~/.local/state/xfer`), never inside a transfer's source or destination, so it is never
//! transferred and never mistaken for user data. A journal is named by a hash of the transfer's
//! direction, source and destination, and holds the block codec's header followed by one
//! record per block that was written and synced. Records are appended after the data they
//! describe is durable, so a journal never claims a block that is not on disk; a damaged or
//! stale journal is detected by the codec and ignored, never trusted.

use crate::blocks::BlockHash;
use crate::blocks::journal::{self, JournalHeader, RECORD_LEN};
use crate::env;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The state directory of this user.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Finds (and creates, private to the user) the state directory.
    pub fn locate() -> Result<StateDir> {
        let root = if let Some(path) = env::var_path(env::XFER_STATE_DIR) {
            path
        } else if let Some(base) = env::var_path(env::XDG_STATE_HOME) {
            base.join("xfer")
        } else if let Some(home) = env::var_path(env::HOME) {
            home.join(".local/state/xfer")
        } else {
            return Err(Error::config(
                "no state directory: neither XFER_STATE_DIR nor HOME is set",
            )
            .with_hint("set XFER_STATE_DIR to a directory xfer may write"));
        };
        StateDir::at(root)
    }

    pub fn at(root: PathBuf) -> Result<StateDir> {
        for directory in [
            root.clone(),
            root.join("journals"),
            root.join("units"),
            root.join("converted"),
        ] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&directory)
                .map_err(|error| {
                    Error::local_io(
                        format!("cannot create the state directory {}", directory.display()),
                        error,
                    )
                    .with_hint("set XFER_STATE_DIR to a directory xfer may write")
                })?;
        }
        Ok(StateDir { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The journal file for one destination file of one transfer.
    pub fn journal_path(&self, direction: &str, source_id: &str, destination_id: &str) -> PathBuf {
        self.root.join("journals").join(format!(
            "{}.journal",
            state_key(&[direction, source_id, destination_id])
        ))
    }

    /// Where a file converted on the way (`--fix-crlf`) is staged: the converted bytes are
    /// what is sent, resumed and verified.
    pub fn converted_path(&self, source: &str) -> PathBuf {
        self.root
            .join("converted")
            .join(format!("{}.lf", state_key(&["crlf", source])))
    }

    /// The completion record file for one unit of a transfer.
    pub fn unit_path(&self, direction: &str, source_id: &str, destination_id: &str) -> PathBuf {
        self.root.join("units").join(format!(
            "{}.done",
            state_key(&[direction, source_id, destination_id])
        ))
    }
}

/// A short, stable file name for a state entry: the first 16 bytes of a BLAKE3 over its parts.
fn state_key(parts: &[&str]) -> String {
    let mut hasher = blake3::Hasher::new_derive_key("xfer state file name v1");
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().to_hex()[..32].to_string()
}

/// An open journal: the blocks it vouches for and the file to append to.
///
/// A fresh journal is written only when it first has a block to record: creating it costs a
/// sync, and a sync waits behind whatever the disk is busy writing back (in ext4's ordered
/// mode, for every file's dirty data; without a journal, as here, behind the queue that
/// writeback keeps full): a pull into a copy made a moment earlier waited 0.86 s for that
/// copy before fetching anything. A journal never written records nothing, as an absent one does.
pub struct JournalFile {
    path: PathBuf,
    file: Backing,
}

/// Where a journal's records go.
enum Backing {
    /// A journal on disk, appended to.
    Open(File),
    /// None on disk yet: the encoded header it will start with.
    Fresh(Vec<u8>),
}

impl JournalFile {
    /// Opens the journal at `path` for a transfer described by `header`. Returns the blocks a
    /// previous run recorded, or none if there was no journal or it was damaged or stale (it is
    /// removed then, and a fresh journal replaces it atomically on the first append).
    pub fn open(
        path: &Path,
        header: &JournalHeader,
    ) -> Result<(JournalFile, BTreeMap<u64, BlockHash>)> {
        let io_error = |what: &str, error| {
            Error::local_io(format!("{what} journal {}", path.display()), error)
        };
        let layout = header.layout().map_err(|error| {
            Error::new(
                crate::ErrorKind::LocalIo,
                format!("journal layout: {error}"),
            )
        })?;
        // A journal never needs more than its header and a few records per block; anything
        // larger is not ours to trust or to read whole.
        let cap = 64 * 1024
            + layout
                .block_count()
                .saturating_mul(RECORD_LEN as u64)
                .saturating_mul(4);
        if let Ok(mut existing) = OpenOptions::new().read(true).write(true).open(path) {
            let length = existing.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
            if length <= cap {
                let mut bytes = Vec::with_capacity(length as usize);
                if (&mut existing).take(cap).read_to_end(&mut bytes).is_ok() {
                    match journal::decode(&bytes) {
                        Ok(decoded) if decoded.matches(header) => {
                            if let Some(damage) = decoded.tail_damage() {
                                tracing::warn!(
                                    "{}: {damage}; keeping the records before it",
                                    path.display()
                                );
                            }
                            existing
                                .set_len(decoded.valid_len() as u64)
                                .map_err(|error| io_error("cannot truncate", error))?;
                            existing
                                .seek(SeekFrom::End(0))
                                .map_err(|error| io_error("cannot seek", error))?;
                            let blocks = decoded.into_blocks();
                            return Ok((
                                JournalFile {
                                    path: path.to_path_buf(),
                                    file: Backing::Open(existing),
                                },
                                blocks,
                            ));
                        }
                        Ok(_) => tracing::info!(
                            "{}: journal is stale (the source changed); starting afresh",
                            path.display()
                        ),
                        Err(error) => {
                            tracing::warn!("{}: ignoring damaged journal: {error}", path.display())
                        }
                    }
                }
            } else {
                tracing::warn!(
                    "{}: ignoring a journal larger than any real one",
                    path.display()
                );
            }
        }
        // Whatever is there is not to be trusted, now or by a later run.
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error("cannot remove", error)),
        }
        let header = journal::encode_header(header).map_err(|error| {
            Error::new(
                crate::ErrorKind::LocalIo,
                format!("cannot encode a journal header: {error}"),
            )
        })?;
        Ok((
            JournalFile {
                path: path.to_path_buf(),
                file: Backing::Fresh(header),
            },
            BTreeMap::new(),
        ))
    }

    /// Writes a fresh journal holding the header and `records`, durably, under a temporary
    /// name first so a torn write never looks like a journal.
    fn create(path: &Path, header: &[u8], records: &[u8]) -> Result<File> {
        let io_error = |what: &str, error| {
            Error::local_io(format!("{what} journal {}", path.display()), error)
        };
        let temporary = path.with_extension("journal.tmp");
        let mut fresh = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(|error| io_error("cannot create", error))?;
        fresh
            .write_all(header)
            .and_then(|()| fresh.write_all(records))
            .map_err(|error| io_error("cannot write", error))?;
        fresh
            .sync_data()
            .map_err(|error| io_error("cannot sync", error))?;
        std::fs::rename(&temporary, path).map_err(|error| io_error("cannot install", error))?;
        // The descriptor follows the file to its new name; appends go on at its end.
        Ok(fresh)
    }

    /// Records blocks whose data is already durable, and makes the records durable too.
    pub fn append(&mut self, blocks: &[(u64, BlockHash)]) -> Result<()> {
        if blocks.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(blocks.len() * RECORD_LEN);
        for (index, hash) in blocks {
            bytes.extend_from_slice(&journal::encode_record(*index, hash));
        }
        let file = match &mut self.file {
            Backing::Open(file) => file,
            Backing::Fresh(header) => {
                self.file = Backing::Open(JournalFile::create(&self.path, header, &bytes)?);
                return Ok(());
            }
        };
        file.write_all(&bytes)
            .and_then(|()| file.sync_data())
            .map_err(|error| {
                Error::local_io(
                    format!("cannot append to journal {}", self.path.display()),
                    error,
                )
            })
    }

    /// The transfer of the file is verified: the journal has served its purpose.
    pub fn remove(self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(Error::local_io(
                format!("cannot remove journal {}", self.path.display()),
                error,
            )),
        }
    }
}

/// Removes a journal that is no longer wanted (the file turned out to be up to date).
pub fn discard_journal(path: &Path) {
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(size: u64) -> JournalHeader {
        JournalHeader {
            block_size: 4096,
            file_size: size,
            source_mtime_seconds: 1_700_000_000,
            source_mtime_nanos: 0,
            source_id: "box:22:/data/a".into(),
            destination_id: "/tmp/a".into(),
        }
    }

    #[test]
    fn records_survive_reopening_and_stale_journals_are_dropped() {
        let directory = tempfile::tempdir().unwrap();
        let state = StateDir::at(directory.path().join("state")).unwrap();
        let path = state.journal_path("pull", "box:22:/data/a", "/tmp/a");
        let (mut journal, blocks) = JournalFile::open(&path, &header(10_000)).unwrap();
        assert!(blocks.is_empty());
        // Nothing recorded yet: nothing written (and no sync paid).
        assert!(!path.exists());
        journal.append(&[(0, [1; 32]), (2, [3; 32])]).unwrap();
        assert!(path.exists());
        drop(journal);

        let (journal, blocks) = JournalFile::open(&path, &header(10_000)).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[&2], [3; 32]);
        drop(journal);

        // A torn last record is cut off and the rest kept.
        let length = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(length - 3)
            .unwrap();
        let (mut journal, blocks) = JournalFile::open(&path, &header(10_000)).unwrap();
        assert_eq!(blocks.keys().copied().collect::<Vec<_>>(), vec![0]);
        journal.append(&[(1, [2; 32])]).unwrap();
        drop(journal);
        let (_, blocks) = JournalFile::open(&path, &header(10_000)).unwrap();
        assert_eq!(blocks.keys().copied().collect::<Vec<_>>(), vec![0, 1]);

        // The source changed size: nothing is trusted, and the stale journal is gone even
        // before anything new is recorded.
        let (_, blocks) = JournalFile::open(&path, &header(20_000)).unwrap();
        assert!(blocks.is_empty());
        assert!(!path.exists());
        let (_, blocks) = JournalFile::open(&path, &header(10_000)).unwrap();
        assert!(blocks.is_empty());

        // Garbage is ignored, not trusted.
        std::fs::write(&path, b"not a journal at all").unwrap();
        let (_, blocks) = JournalFile::open(&path, &header(20_000)).unwrap();
        assert!(blocks.is_empty());
    }

    #[test]
    fn state_keys_separate_their_parts() {
        assert_ne!(state_key(&["ab", "c"]), state_key(&["a", "bc"]));
        assert_eq!(state_key(&["a"]).len(), 32);
    }
}
