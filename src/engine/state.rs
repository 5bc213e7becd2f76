//! xfer's own state on the local disk: where it lives, and the resume journals in it.
//!
//! All state sits under one directory (`XFER_STATE_DIR`, else `$XDG_STATE_HOME/xfer`, else
//! `~/.local/state/xfer`), never inside a transfer's source or destination, so it is never
//! transferred and never mistaken for user data. A journal is named by a hash of the transfer's
//! direction, source and destination, and holds the block codec's header followed by one
//! record per block that was written and synced. Records are appended after the data they
//! describe is durable, so a journal never claims a block that is not on disk; a damaged or
//! stale journal is detected by the codec and ignored, never trusted.
//!
//! The directory is private, as what is in it decides what a resume trusts: it and its
//! subdirectories are created with mode 0700, and a directory another user owns or that group or
//! others may write is refused. It is held open, and every file is reached beneath a directory
//! handle ([`StateFile`]): opened with `O_NOFOLLOW`, written under a temporary name created with
//! `O_EXCL` and mode 0600 and renamed into place, removed with `unlinkat`, so a symbolic link at
//! a file's name is never followed.

use crate::blocks::BlockHash;
use crate::blocks::journal::{self, JournalHeader, RECORD_LEN};
use crate::env;
use crate::error::{Error, ErrorKind, Result};
use crate::local::mode;
use nix::errno::Errno;
use nix::fcntl::{self, OFlag};
use nix::sys::stat::{self, Mode};
use nix::unistd::{self, UnlinkatFlags};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The subdirectories xfer keeps its files in.
const JOURNALS: &str = "journals";
const UNITS: &str = "units";
const CONVERTED: &str = "converted";
/// Mode of the state directory and the subdirectories xfer creates.
const DIRECTORY_MODE: u32 = 0o700;
/// Mode of every file xfer writes there.
const FILE_MODE: u32 = 0o600;

/// The state directory of this user, held open: every file in it is reached by name beneath a
/// directory handle checked once, never by a path resolved again.
#[derive(Debug, Clone)]
pub struct StateDir {
    journals: Arc<Directory>,
    units: Arc<Directory>,
    converted: Arc<Directory>,
}

/// An open directory of the state, and its path for messages.
#[derive(Debug)]
struct Directory {
    handle: OwnedFd,
    path: PathBuf,
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

    /// Opens the state directory at `root`, creating it and its subdirectories with mode 0700
    /// when missing. Refuses (permanently) a directory another user owns or that group or
    /// others may write: whoever can write there could plant links or forge the journals that
    /// decide what a resume trusts. The root may be reached through links the user made; its
    /// subdirectories may not.
    pub fn at(root: PathBuf) -> Result<StateDir> {
        let open_error = |path: &Path, error| {
            Error::local_io(
                format!(
                    "cannot create or open the state directory {}",
                    path.display()
                ),
                error,
            )
            .with_hint("set XFER_STATE_DIR to a directory xfer may write")
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIRECTORY_MODE)
            .create(&root)
            .map_err(|error| open_error(&root, error))?;
        let handle = fcntl::openat(
            fcntl::AT_FDCWD,
            &root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| open_error(&root, io::Error::from(errno)))?;
        let top = Directory {
            handle,
            path: root.clone(),
        };
        top.check_private()?;
        let open = |name: &str| -> Result<Arc<Directory>> {
            let path = root.join(name);
            match stat::mkdirat(&top.handle, name, mode::permissions(DIRECTORY_MODE)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(errno) => return Err(open_error(&path, io::Error::from(errno))),
            }
            let handle = fcntl::openat(
                &top.handle,
                name,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|errno| match errno {
                Errno::ELOOP | Errno::ENOTDIR => refused(
                    &path,
                    "it is not a directory (a symbolic link or a file is there)",
                ),
                errno => open_error(&path, io::Error::from(errno)),
            })?;
            let directory = Directory { handle, path };
            directory.check_private()?;
            Ok(Arc::new(directory))
        };
        Ok(StateDir {
            journals: open(JOURNALS)?,
            units: open(UNITS)?,
            converted: open(CONVERTED)?,
        })
    }

    /// The journal file for one destination file of one transfer.
    pub fn journal_file(
        &self,
        direction: &str,
        source_id: &str,
        destination_id: &str,
    ) -> StateFile {
        StateFile {
            directory: Arc::clone(&self.journals),
            name: format!(
                "{}.journal",
                state_key(&[direction, source_id, destination_id])
            ),
        }
    }

    /// Where a file converted on the way (`--fix-crlf`) is staged: the converted bytes are
    /// what is sent, resumed and verified.
    pub fn converted_file(&self, source: &str) -> StateFile {
        StateFile {
            directory: Arc::clone(&self.converted),
            name: format!("{}.lf", state_key(&["crlf", source])),
        }
    }

    /// The completion record file for one unit of a transfer.
    pub fn unit_file(&self, direction: &str, source_id: &str, destination_id: &str) -> StateFile {
        StateFile {
            directory: Arc::clone(&self.units),
            name: format!(
                "{}.done",
                state_key(&[direction, source_id, destination_id])
            ),
        }
    }
}

/// A state directory xfer will not use, and why.
fn refused(path: &Path, reason: &str) -> Error {
    Error::new(
        ErrorKind::LocalIo,
        format!("refusing the state directory {}: {reason}", path.display()),
    )
    .with_hint(
        "xfer's state directory must be yours and writable only by you: chown it to yourself and chmod 700 it, or set XFER_STATE_DIR to a directory of your own",
    )
    .transient(false)
}

impl Directory {
    /// Refuses the directory unless this user owns it and nobody else may write it.
    fn check_private(&self) -> Result<()> {
        let status = stat::fstat(&self.handle).map_err(|errno| {
            Error::local_io(
                format!("cannot inspect the state directory {}", self.path.display()),
                io::Error::from(errno),
            )
        })?;
        let user = unistd::geteuid().as_raw();
        if status.st_uid != user {
            return Err(refused(
                &self.path,
                &format!(
                    "it belongs to user id {}, not to you ({user})",
                    status.st_uid
                ),
            ));
        }
        if status.st_mode & 0o022 != 0 {
            return Err(refused(
                &self.path,
                &format!(
                    "its mode {:04o} lets group or others write it",
                    status.st_mode & 0o7777
                ),
            ));
        }
        Ok(())
    }
}

/// One file of the state directory: the handle of its directory and its name there. Every
/// operation acts beneath the handle and never follows a symbolic link at the name.
#[derive(Debug, Clone)]
pub struct StateFile {
    directory: Arc<Directory>,
    name: String,
}

impl StateFile {
    /// The file's path, for messages (and for a converted copy, as the source to send).
    pub fn path(&self) -> PathBuf {
        self.directory.path.join(&self.name)
    }

    /// Opens the file when it is there, for reading and, if `write`, appending. A symbolic link
    /// or anything but a regular file at the name is an error, never followed. A file others
    /// may read is made private first.
    pub fn open(&self, write: bool) -> io::Result<Option<File>> {
        let access = if write {
            OFlag::O_RDWR
        } else {
            OFlag::O_RDONLY
        };
        let flags = access | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let handle = match fcntl::openat(
            &self.directory.handle,
            self.name.as_str(),
            flags,
            Mode::empty(),
        ) {
            Ok(handle) => handle,
            Err(Errno::ENOENT) => return Ok(None),
            Err(errno) => return Err(errno.into()),
        };
        let status = stat::fstat(&handle)?;
        if status.st_mode & nix::libc::S_IFMT != nix::libc::S_IFREG {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a regular file",
            ));
        }
        // Blocking again: a regular file's reads never wait anyway.
        fcntl::fcntl(&handle, fcntl::FcntlArg::F_SETFL(access))?;
        if write && status.st_mode & 0o077 != 0 {
            stat::fchmod(&handle, mode::permissions(FILE_MODE))?;
        }
        Ok(Some(File::from(handle)))
    }

    /// The whole file when it is there, refused beyond `cap` bytes.
    pub fn read(&self, cap: u64) -> io::Result<Option<Vec<u8>>> {
        let Some(file) = self.open(false)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        file.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > cap {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {cap} bytes"),
            ));
        }
        Ok(Some(bytes))
    }

    /// Replaces the file with `parts` written one after the other, mode 0600, synced first
    /// when `durable`. The bytes go to a temporary name created afresh (`O_EXCL`, so nothing
    /// there is followed or reused), which is then renamed over the name: a torn write never
    /// shows under the name, and a link there is replaced, never written through. Returns the
    /// new file, open for reading and appending.
    pub fn replace(&self, parts: &[&[u8]], durable: bool) -> io::Result<File> {
        let directory = &self.directory.handle;
        let temporary = format!("{}.tmp", self.name);
        // Left by a run that died mid-write.
        match unistd::unlinkat(directory, temporary.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(errno) => return Err(errno.into()),
        }
        let handle = fcntl::openat(
            directory,
            temporary.as_str(),
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            mode::permissions(FILE_MODE),
        )?;
        let mut file = File::from(handle);
        let written = parts
            .iter()
            .try_for_each(|part| file.write_all(part))
            .and_then(|()| if durable { file.sync_data() } else { Ok(()) })
            .and_then(|()| {
                fcntl::renameat(directory, temporary.as_str(), directory, self.name.as_str())
                    .map_err(io::Error::from)
            });
        if let Err(error) = written {
            // Best effort: the error that matters is the write's.
            let _ = unistd::unlinkat(directory, temporary.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(error);
        }
        // The descriptor follows the file to its new name; appends go on at its end.
        Ok(file)
    }

    /// Removes the file (a link at the name is removed itself); absent is not an error.
    pub fn remove(&self) -> io::Result<()> {
        match unistd::unlinkat(
            &self.directory.handle,
            self.name.as_str(),
            UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(errno) => Err(errno.into()),
        }
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
/// mode, for every file's dirty data; without a journal, behind the queue that writeback keeps
/// full), so a pull into a file copied a moment earlier would wait for that copy before fetching
/// anything. A journal never written records nothing, as an absent one does.
pub struct JournalFile {
    place: StateFile,
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
    /// Opens the journal `place` for a transfer described by `header`. Returns the blocks a
    /// previous run recorded, or none if there was no journal or it was damaged or stale (it is
    /// removed then, and a fresh journal replaces it atomically on the first append).
    pub fn open(
        place: &StateFile,
        header: &JournalHeader,
    ) -> Result<(JournalFile, BTreeMap<u64, BlockHash>)> {
        let path = place.path();
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
        let cap = journal_cap(&layout);
        // Anything but a regular file at the name (a link, say) is not a journal: it is
        // removed below, never followed.
        if let Ok(Some(mut existing)) = place.open(true) {
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
                                    place: place.clone(),
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
        place
            .remove()
            .map_err(|error| io_error("cannot remove", error))?;
        let header = journal::encode_header(header).map_err(|error| {
            Error::new(
                crate::ErrorKind::LocalIo,
                format!("cannot encode a journal header: {error}"),
            )
        })?;
        Ok((
            JournalFile {
                place: place.clone(),
                file: Backing::Fresh(header),
            },
            BTreeMap::new(),
        ))
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
                // Written durably under a temporary name first, so a torn write never looks
                // like a journal.
                let file = self
                    .place
                    .replace(&[header, &bytes], true)
                    .map_err(|error| {
                        Error::local_io(
                            format!("cannot create journal {}", self.place.path().display()),
                            error,
                        )
                    })?;
                self.file = Backing::Open(file);
                return Ok(());
            }
        };
        file.write_all(&bytes)
            .and_then(|()| file.sync_data())
            .map_err(|error| {
                Error::local_io(
                    format!("cannot append to journal {}", self.place.path().display()),
                    error,
                )
            })
    }

    /// The transfer of the file is verified: the journal has served its purpose.
    pub fn remove(self) -> Result<()> {
        self.place.remove().map_err(|error| {
            Error::local_io(
                format!("cannot remove journal {}", self.place.path().display()),
                error,
            )
        })
    }
}

/// The most bytes a journal for `layout` can need: its header and a few records per block.
pub fn journal_cap(layout: &crate::blocks::BlockLayout) -> u64 {
    64 * 1024
        + layout
            .block_count()
            .saturating_mul(RECORD_LEN as u64)
            .saturating_mul(4)
}

/// The journal of one file's transfer in `direction`, with the blocks it records; none for a
/// file of one block or less, which has nothing to resume inside it (no journal, no syncs).
pub fn open_journal(
    state: &StateDir,
    direction: crate::engine::plan::Direction,
    endpoints: &crate::engine::plan::Endpoints,
    item: &crate::engine::plan::PlanItem,
    layout: &crate::blocks::BlockLayout,
) -> Result<(Option<JournalFile>, BTreeMap<u64, BlockHash>)> {
    if layout.block_count() <= 1 {
        return Ok((None, BTreeMap::new()));
    }
    let header = crate::engine::plan::journal_header(direction, endpoints, item);
    let place = state.journal_file(
        direction.as_str(),
        &header.source_id,
        &header.destination_id,
    );
    let (journal, recorded) = JournalFile::open(&place, &header)?;
    Ok((Some(journal), recorded))
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
        let place = state.journal_file("pull", "box:22:/data/a", "/tmp/a");
        let path = place.path();
        let (mut journal, blocks) = JournalFile::open(&place, &header(10_000)).unwrap();
        assert!(blocks.is_empty());
        // Nothing recorded yet: nothing written (and no sync paid).
        assert!(!path.exists());
        journal.append(&[(0, [1; 32]), (2, [3; 32])]).unwrap();
        assert!(path.exists());
        drop(journal);

        let (journal, blocks) = JournalFile::open(&place, &header(10_000)).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[&2], [3; 32]);
        drop(journal);

        // A torn last record is cut off and the rest kept.
        let length = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(length - 3)
            .unwrap();
        let (mut journal, blocks) = JournalFile::open(&place, &header(10_000)).unwrap();
        assert_eq!(blocks.keys().copied().collect::<Vec<_>>(), vec![0]);
        journal.append(&[(1, [2; 32])]).unwrap();
        drop(journal);
        let (_, blocks) = JournalFile::open(&place, &header(10_000)).unwrap();
        assert_eq!(blocks.keys().copied().collect::<Vec<_>>(), vec![0, 1]);

        // The source changed size: nothing is trusted, and the stale journal is gone even
        // before anything new is recorded.
        let (_, blocks) = JournalFile::open(&place, &header(20_000)).unwrap();
        assert!(blocks.is_empty());
        assert!(!path.exists());
        let (_, blocks) = JournalFile::open(&place, &header(10_000)).unwrap();
        assert!(blocks.is_empty());

        // Garbage is ignored, not trusted.
        std::fs::write(&path, b"not a journal at all").unwrap();
        let (_, blocks) = JournalFile::open(&place, &header(20_000)).unwrap();
        assert!(blocks.is_empty());
    }

    #[test]
    fn state_keys_separate_their_parts() {
        assert_ne!(state_key(&["ab", "c"]), state_key(&["a", "bc"]));
        assert_eq!(state_key(&["a"]).len(), 32);
    }

    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn assert_refused(result: Result<StateDir>, what: &str) {
        match result {
            Err(error) => {
                assert!(error.message().contains("refusing"), "{error}");
                assert!(error.message().contains(what), "{error}");
                assert!(!error.is_transient());
                assert!(error.hint().is_some());
            }
            Ok(state) => panic!("accepted {state:?}"),
        }
    }

    #[test]
    fn a_fresh_state_directory_and_its_files_are_private() {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path().join("new/state");
        let state = StateDir::at(root.clone()).unwrap();
        for path in [
            &root,
            &root.join(JOURNALS),
            &root.join(UNITS),
            &root.join(CONVERTED),
        ] {
            assert_eq!(mode_of(path), 0o700, "{}", path.display());
        }
        let place = state.journal_file("pull", "a", "b");
        let (mut journal, _) = JournalFile::open(&place, &header(10_000)).unwrap();
        journal.append(&[(0, [1; 32])]).unwrap();
        assert_eq!(mode_of(&place.path()), 0o600);
        let record = state.unit_file("pull", "a", "b");
        record.replace(&[b"record"], false).unwrap();
        assert_eq!(mode_of(&record.path()), 0o600);
        assert_eq!(record.read(100).unwrap().unwrap(), b"record");
        let converted = state.converted_file("/src/run.sh");
        converted.replace(&[b"#!/bin/sh\n"], false).unwrap();
        assert_eq!(mode_of(&converted.path()), 0o600);
        // Opening it again finds it as it is.
        StateDir::at(root).unwrap();

        // A journal left readable by others (an older build) is made private when reopened.
        set_mode(&place.path(), 0o644);
        JournalFile::open(&place, &header(10_000)).unwrap();
        assert_eq!(mode_of(&place.path()), 0o600);
    }

    #[test]
    fn a_state_directory_others_may_write_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path().join("state");
        std::fs::create_dir(&root).unwrap();
        set_mode(&root, 0o777);
        assert_refused(StateDir::at(root.clone()), "group or others");
        set_mode(&root, 0o770);
        assert_refused(StateDir::at(root.clone()), "group or others");
        set_mode(&root, 0o755);
        StateDir::at(root.clone()).unwrap();

        // A subdirectory, likewise.
        set_mode(&root.join(JOURNALS), 0o757);
        assert_refused(StateDir::at(root.clone()), "group or others");
        set_mode(&root.join(JOURNALS), 0o700);
        StateDir::at(root.clone()).unwrap();

        // A link in place of a subdirectory is not followed, even to a private directory.
        let elsewhere = directory.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        set_mode(&elsewhere, 0o700);
        std::fs::remove_dir(root.join(UNITS)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join(UNITS)).unwrap();
        assert_refused(StateDir::at(root), "not a directory");
    }

    #[test]
    fn a_state_directory_of_another_user_is_refused() {
        if !unistd::geteuid().is_root() {
            // Only root can give a directory away; anyone else finds one of root's.
            assert_refused(StateDir::at("/".into()), "belongs to user id 0");
            return;
        }
        let nobody = Some(unistd::Uid::from_raw(65534));
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path().join("state");
        StateDir::at(root.clone()).unwrap();
        unistd::chown(&root, nobody, None).unwrap();
        assert_refused(StateDir::at(root.clone()), "belongs to user id 65534");
        unistd::chown(&root, Some(unistd::geteuid()), None).unwrap();
        StateDir::at(root.clone()).unwrap();
        unistd::chown(&root.join(UNITS), nobody, None).unwrap();
        assert_refused(StateDir::at(root), "belongs to user id 65534");
    }

    #[test]
    fn links_at_the_names_of_state_files_are_never_followed() {
        let directory = tempfile::tempdir().unwrap();
        let state = StateDir::at(directory.path().join("state")).unwrap();
        let victim = directory.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        set_mode(&victim, 0o644);
        let untouched = || {
            assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
            assert_eq!(mode_of(&victim), 0o644);
        };
        let plant = |path: &Path| std::os::unix::fs::symlink(&victim, path).unwrap();
        let is_regular_file = |path: &Path| {
            std::fs::symlink_metadata(path)
                .unwrap()
                .file_type()
                .is_file()
        };

        // A journal: the link is not read as one, and the first record replaces it.
        let place = state.journal_file("pull", "a", "b");
        plant(&place.path());
        plant(&place.path().with_extension("journal.tmp"));
        let (mut journal, blocks) = JournalFile::open(&place, &header(10_000)).unwrap();
        assert!(blocks.is_empty());
        untouched();
        journal.append(&[(0, [1; 32])]).unwrap();
        untouched();
        assert!(is_regular_file(&place.path()));
        assert_eq!(mode_of(&place.path()), 0o600);
        drop(journal);
        let (_, blocks) = JournalFile::open(&place, &header(10_000)).unwrap();
        assert_eq!(blocks.len(), 1);

        // A completion record: not read through the link, replaced rather than written
        // through it, and removing it removes the link.
        let record = state.unit_file("push", "a", "b");
        plant(&record.path());
        assert!(record.read(100).is_err());
        record.remove().unwrap();
        untouched();
        assert!(std::fs::symlink_metadata(record.path()).is_err());
        plant(&record.path());
        plant(&record.path().with_extension("done.tmp"));
        record.replace(&[b"new ", b"record"], false).unwrap();
        untouched();
        assert!(is_regular_file(&record.path()));
        assert_eq!(std::fs::read(record.path()).unwrap(), b"new record");
        assert!(std::fs::symlink_metadata(record.path().with_extension("done.tmp")).is_err());
    }
}
