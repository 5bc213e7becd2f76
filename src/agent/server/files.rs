//! The filesystem side of the requests: stat and list, reads, the open for writing that never
//! writes through a planted link, attributes set through a descriptor, directories and
//! symlinks. Each answers what the protocol says of its request, or a [`Failure`].

use super::{Answers, Failure, LIST_BATCH_BYTES, Session, error_code};
use crate::agent::protocol::{Entry, ErrorCode, MAX_LIST_BATCH, Response};
use crate::remote::EntryKind;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;

/// Opens a regular file without blocking on a fifo or taking a terminal, and refuses anything
/// else.
pub(super) fn open_regular(path: &str, options: &OpenOptions) -> Result<File, Failure> {
    let mut options = options.clone();
    options.custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits() | nix::fcntl::OFlag::O_NOCTTY.bits());
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(Failure::new(
            ErrorCode::Invalid,
            format!("{path} is not a regular file"),
        ));
    }
    Ok(file)
}

fn entry(name: Vec<u8>, metadata: &fs::Metadata) -> Entry {
    let kind = EntryKind::from_file_type(metadata.file_type());
    Entry {
        name,
        kind,
        size: metadata.size(),
        mtime: metadata.mtime(),
        mtime_nanoseconds: u32::try_from(metadata.mtime_nsec())
            .ok()
            .filter(|nanoseconds| *nanoseconds < 1_000_000_000)
            .unwrap_or(0),
        mode: metadata.mode() & 0o7777,
    }
}

pub(super) fn stat(path: &str, follow: bool) -> Result<Option<Entry>, Failure> {
    let metadata = if follow {
        fs::metadata(path)
    } else {
        fs::symlink_metadata(path)
    };
    let metadata = match metadata {
        Ok(metadata) => metadata,
        Err(error) if error_code(&error) == ErrorCode::NotFound => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    // The last component, never the whole path: an entry's name is one component (`..` or `/`
    // for a path ending in one), within the protocol's name cap.
    let name = Path::new(path)
        .components()
        .next_back()
        .map(|name| name.as_os_str().as_encoded_bytes().to_vec())
        .unwrap_or_default();
    Ok(Some(entry(name, &metadata)))
}

/// Sends a directory's entries in batches of at most [`MAX_LIST_BATCH`] entries and about
/// [`LIST_BATCH_BYTES`] bytes, the last one marked.
pub(super) fn list(path: &str, answers: &Answers) -> Result<(), Failure> {
    let mut batch = Vec::new();
    let mut batch_bytes = 0;
    for item in fs::read_dir(path)? {
        let item = item?;
        // fstatat on the directory without following links: an lstat of the entry.
        let metadata = match item.metadata() {
            Ok(metadata) => metadata,
            // Gone between readdir and lstat.
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error.into()),
        };
        let name = item.file_name().into_vec();
        batch_bytes += name.len() + 40;
        batch.push(entry(name, &metadata));
        if batch.len() == MAX_LIST_BATCH || batch_bytes >= LIST_BATCH_BYTES {
            let entries = std::mem::take(&mut batch);
            batch_bytes = 0;
            if !answers.send(Response::EntryBatch {
                entries,
                last: false,
            }) {
                return Ok(());
            }
        }
    }
    answers.send(Response::EntryBatch {
        entries: batch,
        last: true,
    });
    Ok(())
}

/// Reads up to `buffer.len()` bytes at `offset`, fewer only at the end of the file.
fn read_full(file: &File, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        let Some(at) = offset.checked_add(filled as u64) else {
            break;
        };
        match file.read_at(&mut buffer[filled..], at) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

pub(super) fn read_at(file: &File, offset: u64, length: u32) -> io::Result<Vec<u8>> {
    let mut wanted = length as usize;
    let metadata = file.metadata()?;
    if metadata.is_file() {
        // Never allocate more than the file holds past the offset.
        let available = metadata.len().saturating_sub(offset);
        wanted = wanted.min(usize::try_from(available).unwrap_or(usize::MAX));
    }
    let mut buffer = vec![0u8; wanted];
    let filled = read_full(file, &mut buffer, offset)?;
    buffer.truncate(filled);
    Ok(buffer)
}

pub(super) fn read_file(path: &str, max_length: u32) -> Result<Vec<u8>, Failure> {
    let file = open_regular(path, OpenOptions::new().read(true))?;
    let too_large = || {
        Failure::new(
            ErrorCode::TooLarge,
            format!("{path} has more than {max_length} bytes"),
        )
    };
    let size = file.metadata()?.len();
    if size > u64::from(max_length) {
        return Err(too_large());
    }
    // The size was checked against max_length ≤ MAX_DATA, so it fits.
    let mut data = Vec::with_capacity(size as usize);
    (&file)
        .take(u64::from(max_length) + 1)
        .read_to_end(&mut data)?;
    if data.len() > max_length as usize {
        return Err(too_large());
    }
    Ok(data)
}

/// The flags of every open by name that must not follow a final symlink, block on a fifo or
/// take a terminal.
fn no_follow_flags() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
        | nix::fcntl::OFlag::O_NONBLOCK.bits()
        | nix::fcntl::OFlag::O_NOCTTY.bits()
}

/// Opens the regular file at `path` for reading and writing, creating it (0600) when missing.
/// On a shared host another account may have put a symlink there, or a hard link to one of the
/// user's other files: writing through either would change a file that is not the transfer's.
/// So the final component is never followed, and a name that holds a symlink or a file with
/// other links is replaced by a new file (the other names keep their content, as rsync leaves
/// them), created exclusively so that a name planted meanwhile makes the open fail instead.
pub(super) fn open_for_writing(path: &str) -> Result<File, Failure> {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(no_follow_flags());
    match options.clone().create(true).open(path) {
        Ok(file) => {
            let metadata = file.metadata()?;
            if !metadata.is_file() {
                return Err(Failure::new(
                    ErrorCode::Invalid,
                    format!("{path} is not a regular file"),
                ));
            }
            if metadata.nlink() == 1 {
                return Ok(file);
            }
        }
        Err(error) if error.raw_os_error() == Some(nix::libc::ELOOP) => {}
        Err(error) => return Err(error.into()),
    }
    fs::remove_file(path)?;
    Ok(options.create_new(true).open(path)?)
}

/// Sets attributes of what `path` names without following a final symlink: opened with
/// O_NOFOLLOW, then changed through the descriptor, so a name swapped after the open changes
/// nothing.
pub(super) fn set_attributes(
    path: &str,
    size: Option<u64>,
    mode: Option<u32>,
    mtime: Option<i64>,
) -> Result<(), Failure> {
    let mut options = OpenOptions::new();
    if size.is_some() {
        options.write(true);
    } else {
        options.read(true);
    }
    let file = match options.custom_flags(no_follow_flags()).open(path) {
        Ok(file) => file,
        Err(error) if error.raw_os_error() == Some(nix::libc::ELOOP) => {
            return set_symlink_attributes(path, size, mode, mtime);
        }
        Err(error) => return Err(error.into()),
    };
    apply_attributes(&file, size, mode, mtime)
}

/// Attributes of a symlink: only its own times can be set (as rsync -a does), never anything
/// through it.
fn set_symlink_attributes(
    path: &str,
    size: Option<u64>,
    mode: Option<u32>,
    mtime: Option<i64>,
) -> Result<(), Failure> {
    let (None, None, Some(mtime)) = (size, mode, mtime) else {
        return Err(Failure::new(
            ErrorCode::Invalid,
            format!("{path} is a symlink; not changing what it points to"),
        ));
    };
    let time = timespec(mtime)?;
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &time,
        &time,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(())
}

/// Sets the size (a regular file only), the permission bits and both times of an open file.
pub(super) fn apply_attributes(
    file: &File,
    size: Option<u64>,
    mode: Option<u32>,
    mtime: Option<i64>,
) -> Result<(), Failure> {
    if let Some(size) = size {
        if !file.metadata()?.is_file() {
            return Err(Failure::new(
                ErrorCode::Invalid,
                "only a regular file has a size to set",
            ));
        }
        file.set_len(size)?;
    }
    if let Some(mode) = mode {
        file.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
    }
    if let Some(mtime) = mtime {
        let time = timespec(mtime)?;
        nix::sys::stat::futimens(file, &time, &time)?;
    }
    Ok(())
}

fn timespec(mtime: i64) -> Result<nix::sys::time::TimeSpec, Failure> {
    let seconds = nix::libc::time_t::try_from(mtime)
        .map_err(|_| Failure::new(ErrorCode::Invalid, format!("mtime {mtime} is out of range")))?;
    Ok(nix::sys::time::TimeSpec::new(seconds, 0))
}

pub(super) fn make_directory(path: &str, mode: u32) -> Result<(), Failure> {
    match fs::DirBuilder::new().mode(mode & 0o7777).create(path) {
        Ok(()) => Ok(()),
        Err(error)
            // A symlink to a directory is not one: files written below it would land
            // wherever it points.
            if error.kind() == io::ErrorKind::AlreadyExists
                && fs::symlink_metadata(path).is_ok_and(|metadata| metadata.is_dir()) =>
        {
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// Made under a temporary name and renamed over the final one, so the name is never missing or
/// half-made; a directory there is not replaced (rename refuses).
pub(super) fn make_symlink(session: &Session, path: &str, target: &str) -> Result<(), Failure> {
    let temporary = format!(
        "{path}.xfer-link-{}-{}",
        std::process::id(),
        session.temporaries.fetch_add(1, Ordering::Relaxed)
    );
    std::os::unix::fs::symlink(target, &temporary)?;
    if let Err(error) = fs::rename(&temporary, path) {
        let _ = fs::remove_file(&temporary);
        return Err(error.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The user's own file that a third party tries to have xfer write or chmod through a
    /// symlink or a hard link planted at the transfer's name.
    fn victim(directory: &Path) -> std::path::PathBuf {
        let victim = directory.join("secretkey");
        fs::write(&victim, b"private").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        victim
    }

    fn unchanged(victim: &Path) {
        assert_eq!(fs::read(victim).unwrap(), b"private");
        let metadata = fs::metadata(victim).unwrap();
        assert_eq!(metadata.mode() & 0o7777, 0o600);
    }

    #[test]
    fn opening_for_writing_replaces_a_symlink_or_a_hard_link_instead_of_writing_through_it() {
        let directory = tempfile::tempdir().unwrap();
        let victim = victim(directory.path());
        let target = directory.path().join("pushed");
        for plant in [
            |victim: &Path, target: &Path| std::os::unix::fs::symlink(victim, target),
            |victim: &Path, target: &Path| fs::hard_link(victim, target),
        ] {
            plant(&victim, &target).unwrap();
            let file = open_for_writing(target.to_str().unwrap()).unwrap();
            file.write_all_at(b"pushed data", 0).unwrap();
            apply_attributes(&file, Some(6), Some(0o644), Some(1_000_000)).unwrap();
            drop(file);
            unchanged(&victim);
            let metadata = fs::symlink_metadata(&target).unwrap();
            assert!(metadata.is_file());
            assert_eq!(metadata.nlink(), 1);
            assert_eq!(metadata.mode() & 0o7777, 0o644);
            assert_eq!(metadata.mtime(), 1_000_000);
            assert_eq!(fs::read(&target).unwrap(), b"pushed");
            fs::remove_file(&target).unwrap();
        }
    }

    #[test]
    fn an_existing_file_of_one_link_is_written_in_place() {
        let directory = tempfile::tempdir().unwrap();
        let target = directory.path().join("partial");
        fs::write(&target, b"resumable").unwrap();
        let before = fs::metadata(&target).unwrap().ino();
        let file = open_for_writing(target.to_str().unwrap()).unwrap();
        file.write_all_at(b"R", 0).unwrap();
        assert_eq!(fs::metadata(&target).unwrap().ino(), before);
        assert_eq!(fs::read(&target).unwrap(), b"Resumable");
    }

    #[test]
    fn attributes_by_name_never_follow_a_symlink() {
        let directory = tempfile::tempdir().unwrap();
        let victim = victim(directory.path());
        let link = directory.path().join("swapped");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let refused = set_attributes(link.to_str().unwrap(), Some(100), Some(0o666), Some(5));
        assert!(refused.is_err());
        unchanged(&victim);
        // Its own time can be set: the link's, not the file's.
        let before = fs::metadata(&victim).unwrap().mtime();
        set_attributes(link.to_str().unwrap(), None, None, Some(12345)).unwrap();
        assert_eq!(fs::symlink_metadata(&link).unwrap().mtime(), 12345);
        assert_eq!(fs::metadata(&victim).unwrap().mtime(), before);
        unchanged(&victim);
        // A directory's attributes are set through a descriptor of the directory itself.
        let inner = directory.path().join("inner");
        fs::create_dir(&inner).unwrap();
        set_attributes(inner.to_str().unwrap(), None, Some(0o750), Some(7)).unwrap();
        let metadata = fs::metadata(&inner).unwrap();
        assert_eq!((metadata.mode() & 0o7777, metadata.mtime()), (0o750, 7));
    }

    #[test]
    fn a_symlink_to_a_directory_is_not_an_existing_directory() {
        let directory = tempfile::tempdir().unwrap();
        let elsewhere = directory.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let link = directory.path().join("made");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        assert!(make_directory(link.to_str().unwrap(), 0o755).is_err());
    }

    #[test]
    fn stat_names_one_component_whatever_the_path() {
        // A path longer than a name, ending in `..`: the answer names `..`, not the whole path,
        // so it stays within the protocol's name cap and can be sent.
        let directory = tempfile::tempdir().expect("tempdir");
        let deep = directory.path().join("n".repeat(200)).join("m".repeat(200));
        fs::create_dir_all(&deep).expect("mkdir");
        let path = format!("{}/..", deep.display());
        let entry = stat(&path, true).expect("stat").expect("exists");
        assert_eq!(entry.name, b"..");
        assert!(Response::Entry(Some(entry)).encode(1).is_ok());
        let root = stat("/", true).expect("stat").expect("exists");
        assert_eq!(
            (root.name.as_slice(), root.kind),
            (&b"/"[..], EntryKind::Directory)
        );
        let inner = stat(deep.to_str().expect("utf-8"), true)
            .expect("stat")
            .expect("exists");
        assert_eq!(inner.name, "m".repeat(200).as_bytes());
    }
}
