//! The destination directory: the only way a transfer writes to the local filesystem.
//!
//! [`Destination`] holds the root directory open and reaches everything below it one component
//! at a time, with `openat(parent, name, O_NOFOLLOW | O_DIRECTORY)`: a symbolic link anywhere
//! inside the tree, planted before the transfer or swapped in during it, makes the operation
//! fail instead of being followed (rsync CVE-2024-12087, CVE-2024-12088, CVE-2024-12747). The
//! last component is never followed either: files are opened with `O_NOFOLLOW`, metadata is read
//! with `AT_SYMLINK_NOFOLLOW`, links are replaced with `renameat`, removed with `unlinkat`.
//!
//! On Linux, reaching a directory that already exists first tries a single
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, which gives the same guarantee in one call.
//! When that call is missing (kernels before 5.6, seccomp filters) or fails for any reason, the
//! per-component walk runs; it is the one that decides and words every error.
//!
//! The root path itself is the user's choice and may be reached through links the user made.
//! Every error names the full path (root joined with the relative path, terminal-safe).

use crate::error::{Error, ErrorKind, Result};
use crate::local::mode;
use crate::local::names::RelativePath;
use crate::terminal::printable;
use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, FcntlArg, OFlag};
use nix::sys::stat::{self, FileStat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{self, UnlinkatFlags};
use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Permission bits xfer applies. Set-user-ID and set-group-ID are left out on purpose: a server
/// must not be able to plant a privileged executable (xfer may run as root).
const APPLIED_MODE_BITS: u32 = 0o1777;

/// Mode of a file when `open_write` creates it; the engine sets the final mode at the end.
const NEW_FILE_MODE: u32 = 0o600;

/// What kind of entry a name refers to, as `lstat` sees it: finer than [`crate::entry::EntryKind`],
/// whose `Special` this splits, so that a refusal names the exact kind of file in the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharacterDevice,
    BlockDevice,
    Unknown,
}

impl EntryKind {
    fn from_mode(mode: nix::libc::mode_t) -> EntryKind {
        let format = SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits());
        match format {
            SFlag::S_IFREG => EntryKind::File,
            SFlag::S_IFDIR => EntryKind::Directory,
            SFlag::S_IFLNK => EntryKind::Symlink,
            SFlag::S_IFIFO => EntryKind::Fifo,
            SFlag::S_IFSOCK => EntryKind::Socket,
            SFlag::S_IFCHR => EntryKind::CharacterDevice,
            SFlag::S_IFBLK => EntryKind::BlockDevice,
            _ => EntryKind::Unknown,
        }
    }

    fn with_article(self) -> &'static str {
        match self {
            EntryKind::File => "a regular file",
            EntryKind::Directory => "a directory",
            EntryKind::Symlink => "a symbolic link",
            EntryKind::Fifo => "a named pipe",
            EntryKind::Socket => "a socket",
            EntryKind::CharacterDevice => "a character device",
            EntryKind::BlockDevice => "a block device",
            EntryKind::Unknown => "an entry of unknown type",
        }
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.with_article();
        let without_article = text.split_once(' ').map_or(text, |(_, rest)| rest);
        f.write_str(without_article)
    }
}

/// A modification time: seconds since the Unix epoch and nanoseconds within that second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp {
    pub seconds: i64,
    pub nanoseconds: u32,
}

impl Timestamp {
    fn to_timespec(self) -> TimeSpec {
        TimeSpec::new(self.seconds, i64::from(self.nanoseconds.min(999_999_999)))
    }
}

/// What `lstat` says about an entry (links are described, never followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryMetadata {
    pub kind: EntryKind,
    pub size: u64,
    /// Permission bits, `0o7777` at most (no file type bits).
    pub mode: u32,
    pub modified: Timestamp,
    pub uid: u32,
}

impl EntryMetadata {
    fn from_stat(status: &FileStat) -> EntryMetadata {
        EntryMetadata {
            kind: EntryKind::from_mode(status.st_mode),
            size: u64::try_from(status.st_size).unwrap_or(0),
            mode: mode::widen(status.st_mode & 0o7777),
            modified: Timestamp {
                seconds: status.st_mtime,
                nanoseconds: u32::try_from(status.st_mtime_nsec).unwrap_or(0),
            },
            uid: status.st_uid,
        }
    }
}

/// The destination root, held open; every local write of a transfer goes through it.
#[derive(Debug)]
pub struct Destination {
    root: OwnedFd,
    root_path: PathBuf,
}

/// A directory reached below the root: the root itself (borrowed) or one opened on the way.
enum Directory<'a> {
    Root(BorrowedFd<'a>),
    Opened(OwnedFd),
}

impl AsFd for Directory<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Directory::Root(fd) => fd.as_fd(),
            Directory::Opened(fd) => fd.as_fd(),
        }
    }
}

/// An open directory of the destination, from [`Destination::lookup`].
pub struct Lookup<'d> {
    destination: &'d Destination,
    directory: Directory<'d>,
    components: Vec<String>,
}

impl Lookup<'_> {
    /// What is at `name` in this directory, as [`Destination::metadata`] answers.
    pub fn metadata(&self, name: &str) -> Result<Option<EntryMetadata>> {
        match stat::fstatat(&self.directory, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(status) => Ok(Some(EntryMetadata::from_stat(&status))),
            Err(Errno::ENOENT) => Ok(None),
            Err(errno) => {
                let mut path = self.components.clone();
                path.push(name.to_string());
                Err(self.destination.failure("inspect", &path, errno))
            }
        }
    }
}

impl Destination {
    /// Opens the destination root `root`, creating it and its parents first if `create`.
    /// Links in `root` itself are followed: that path is the user's choice.
    pub fn open(root: &Path, create: bool) -> Result<Destination> {
        let shown = printable(root.as_os_str().as_bytes());
        if create {
            std::fs::create_dir_all(root).map_err(|error| {
                Error::local_io(
                    format!("cannot create the destination directory {shown}"),
                    error,
                )
                .with_hint("check the path and the permissions of its parent directories")
            })?;
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let opened = match fcntl::openat(fcntl::AT_FDCWD, root, flags, Mode::empty()) {
            // A directory we may enter but not list (mode 0311) can still be written below.
            Err(Errno::EACCES) => match PATH_ONLY {
                Some(path_only) => fcntl::openat(
                    fcntl::AT_FDCWD,
                    root,
                    path_only | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                ),
                None => Err(Errno::EACCES),
            },
            other => other,
        };
        let root_fd = opened.map_err(|errno| {
            let error = io_error(errno);
            match errno {
                Errno::ENOENT => Error::local_io(
                    format!("the destination directory {shown} does not exist"),
                    error,
                )
                .with_hint("create it first, or check the path"),
                Errno::ENOTDIR => {
                    Error::local_io(format!("the destination {shown} is not a directory"), error)
                        .with_hint("give a directory as the destination")
                }
                _ => with_errno_hint(
                    Error::local_io(
                        format!("cannot open the destination directory {shown}"),
                        error,
                    ),
                    errno,
                ),
            }
        })?;
        Ok(Destination {
            root: root_fd,
            root_path: root.to_path_buf(),
        })
    }

    /// The root path as the user gave it.
    pub fn root_path(&self) -> &Path {
        &self.root_path
    }

    /// `path` below the root, as every error shows it: root joined with the path,
    /// terminal-safe.
    pub fn display_path(&self, path: &RelativePath) -> String {
        self.display(path.components())
    }

    /// Creates every missing directory of `path` with `mode` (before the umask). Each existing
    /// component must be a real directory: a link or anything else there is an error, never
    /// followed.
    pub fn create_dir_all(&self, path: &RelativePath, mode: u32) -> Result<()> {
        let mode = mode::permissions(mode & APPLIED_MODE_BITS);
        self.directory(path.components(), Some(mode)).map(drop)
    }

    /// Opens the regular file at `path` for writing (and reading back) at offsets, creating it
    /// with mode 0600 if missing. Existing content is kept (never truncated; see [`Destination::set_len`]). Its
    /// directory must exist. Refuses a link, directory, named pipe, device or socket at that
    /// name, and a file with other hard links (writing in place would change them too, and they
    /// may be outside the destination).
    pub fn open_write(&self, path: &RelativePath) -> Result<File> {
        self.open_write_as(path, false).map(|(file, _)| file)
    }

    /// [`Destination::open_write`], but a link, named pipe, device or socket at that name is
    /// removed first (never followed or opened), and the length of the regular file that was
    /// there comes back too (0 for a new file): what a pull needs, in one walk to the directory.
    pub fn open_write_replacing(&self, path: &RelativePath) -> Result<(File, u64)> {
        self.open_write_as(path, true)
    }

    fn open_write_as(&self, path: &RelativePath, replace: bool) -> Result<(File, u64)> {
        let (parent_components, name) = self.split(path, "open for writing")?;
        let parent = self.directory(parent_components, None)?;
        // Most files of a first pull are new: created exclusively, the file is a new, empty,
        // regular one of ours with no other link, whatever was done to the name before, so
        // none of the checks below are needed (four system calls of the eight a small file
        // costs here). Anything at the name, a file to resume or a link, pipe or device, fails
        // the create and gets the look below.
        let exclusive = OFlag::O_RDWR
            | OFlag::O_CREAT
            | OFlag::O_EXCL
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY;
        match fcntl::openat(&parent, name, exclusive, mode::permissions(NEW_FILE_MODE)) {
            Ok(fd) => return Ok((File::from(fd), 0)),
            Err(Errno::EEXIST) => {}
            Err(errno) => return Err(self.entry_error(&parent, path, "open for writing", errno)),
        }
        // Look before opening: opening a named pipe can block and opening a device can act.
        match stat::fstatat(&parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(status)
                if replace
                    && !matches!(
                        EntryKind::from_mode(status.st_mode),
                        EntryKind::File | EntryKind::Directory
                    ) =>
            {
                match unistd::unlinkat(&parent, name, UnlinkatFlags::NoRemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(errno) => return Err(self.failure("remove", path.components(), errno)),
                }
            }
            Ok(status) => self.require_writable_file(path, &status)?,
            Err(Errno::ENOENT) => {}
            Err(errno) => return Err(self.failure("inspect", path.components(), errno)),
        }
        // O_NONBLOCK: a named pipe swapped in after the look fails to open instead of blocking.
        // O_RDWR: the engine reads back what it wrote through this same descriptor.
        let flags = OFlag::O_RDWR
            | OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY
            | OFlag::O_NONBLOCK;
        let fd = fcntl::openat(&parent, name, flags, mode::permissions(NEW_FILE_MODE))
            .map_err(|errno| self.entry_error(&parent, path, "open for writing", errno))?;
        let status =
            stat::fstat(&fd).map_err(|errno| self.failure("inspect", path.components(), errno))?;
        self.require_writable_file(path, &status)?;
        let length = u64::try_from(status.st_size).unwrap_or(0);
        Ok((self.blocking_file(fd, path)?, length))
    }

    /// Opens the regular file at `path` for reading, without following a link there.
    pub fn open_read(&self, path: &RelativePath) -> Result<File> {
        let (parent_components, name) = self.split(path, "open for reading")?;
        let parent = self.directory(parent_components, None)?;
        match stat::fstatat(&parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(status) => self.require_kind(path, &status, EntryKind::File)?,
            Err(errno) => return Err(self.failure("open for reading", path.components(), errno)),
        }
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY
            | OFlag::O_NONBLOCK;
        let fd = fcntl::openat(&parent, name, flags, Mode::empty())
            .map_err(|errno| self.entry_error(&parent, path, "open for reading", errno))?;
        let status =
            stat::fstat(&fd).map_err(|errno| self.failure("inspect", path.components(), errno))?;
        self.require_kind(path, &status, EntryKind::File)?;
        self.blocking_file(fd, path)
    }

    /// What is at `path`, without following a link there; `None` when nothing is (or a
    /// directory on the way is missing). A link on the way is an error, as everywhere.
    pub fn metadata(&self, path: &RelativePath) -> Result<Option<EntryMetadata>> {
        let Some((name, parent_components)) = path.components().split_last() else {
            let status =
                stat::fstat(&self.root).map_err(|errno| self.failure("inspect", &[], errno))?;
            return Ok(Some(EntryMetadata::from_stat(&status)));
        };
        let Some(parent) = self.walk(parent_components, None, true)? else {
            return Ok(None);
        };
        match stat::fstatat(&parent, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(status) => Ok(Some(EntryMetadata::from_stat(&status))),
            Err(Errno::ENOENT) => Ok(None),
            Err(errno) => Err(self.failure("inspect", path.components(), errno)),
        }
    }

    /// The directory `path`, held open to look up many of its entries without walking to it
    /// again for each (a plan compares every entry of a directory); `None` when it (or a
    /// directory on the way) is missing.
    pub fn lookup(&self, path: &RelativePath) -> Result<Option<Lookup<'_>>> {
        Ok(self
            .walk(path.components(), None, true)?
            .map(|directory| Lookup {
                destination: self,
                directory,
                components: path.components().to_vec(),
            }))
    }

    /// Sets the length of `file` (opened by [`Destination::open_write`] for `path`), cutting or
    /// extending it with zeros; `path` is only used to name the file in an error.
    pub fn set_len(&self, file: &File, path: &RelativePath, length: u64) -> Result<()> {
        file.set_len(length).map_err(|error| {
            let errno = error.raw_os_error().map(Errno::from_raw);
            let error = Error::local_io(
                format!(
                    "cannot set the length of {} to {length} bytes",
                    self.display_path(path)
                ),
                error,
            );
            match errno {
                Some(errno) => with_errno_hint(error, errno),
                None => error,
            }
        })
    }

    /// Sets the permission bits and modification time of `file`, opened by
    /// [`Destination::open_write`] for `path`, through its descriptor (no name is resolved).
    /// Set-user-ID and set-group-ID bits are never applied; the access time is left alone.
    pub fn set_file_permissions_and_times(
        &self,
        file: &File,
        path: &RelativePath,
        mode: u32,
        modified: Timestamp,
    ) -> Result<()> {
        self.apply_permissions_and_times(file.as_fd(), path, mode, modified)
    }

    /// Sets the permission bits and modification time of the entry at `path`, whatever it is,
    /// without following a link there: a directory through its own descriptor, a regular file
    /// through a descriptor opened with `O_NOFOLLOW` (refused if it has other hard links), a
    /// link with `utimensat(AT_SYMLINK_NOFOLLOW)` and no mode (Linux links have none).
    /// Set-user-ID and set-group-ID bits are never applied; the access time is left alone.
    pub fn set_permissions_and_times(
        &self,
        path: &RelativePath,
        mode: u32,
        modified: Timestamp,
    ) -> Result<()> {
        let Some((name, parent_components)) = path.components().split_last() else {
            return self.apply_permissions_and_times(self.root.as_fd(), path, mode, modified);
        };
        let name = name.as_str();
        let parent = self.directory(parent_components, None)?;
        let status = stat::fstatat(&parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|errno| self.failure("inspect", path.components(), errno))?;
        let flags = match EntryKind::from_mode(status.st_mode) {
            EntryKind::Symlink => {
                return stat::utimensat(
                    &parent,
                    name,
                    &TimeSpec::UTIME_OMIT,
                    &modified.to_timespec(),
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(|errno| {
                    self.failure("set the modification time of", path.components(), errno)
                });
            }
            EntryKind::Directory => OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            EntryKind::File => OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
            other => {
                return Err(self.found(path.components(), other, "a file, directory or link"));
            }
        };
        let fd = fcntl::openat(
            &parent,
            name,
            flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| self.entry_error(&parent, path, "open", errno))?;
        // The entry may have been swapped since the look: check what was actually opened.
        let opened =
            stat::fstat(&fd).map_err(|errno| self.failure("inspect", path.components(), errno))?;
        match EntryKind::from_mode(opened.st_mode) {
            EntryKind::Directory => {}
            EntryKind::File => self.require_writable_file(path, &opened)?,
            other => return Err(self.found(path.components(), other, "a file or directory")),
        }
        self.apply_permissions_and_times(fd.as_fd(), path, mode, modified)
    }

    /// Creates a link at `path` pointing to `target` (stored as given, never resolved). The
    /// link is made under a temporary name in the same directory and renamed over `path`, so
    /// an existing link or file there is replaced atomically; an empty directory there is
    /// removed first, a non-empty one is refused. Whether `target` is acceptable is the
    /// caller's policy (see [`crate::local::symlink_target_is_contained`]).
    pub fn create_symlink(&self, path: &RelativePath, target: &str) -> Result<()> {
        let (parent_components, name) = self.split(path, "replace with a symbolic link")?;
        if target.is_empty() || target.contains('\0') {
            return Err(Error::new(
                ErrorKind::Remote,
                format!(
                    "the symbolic link {} has an invalid target \"{}\"",
                    self.display_path(path),
                    printable(target.as_bytes())
                ),
            )
            .with_hint("a link target must be non-empty and contain no NUL byte"));
        }
        let parent = self.directory(parent_components, None)?;
        let temporary = self.symlink_at_temporary_name(&parent, path, target)?;
        let renamed = match fcntl::renameat(&parent, temporary.as_str(), &parent, name) {
            // rename(2) cannot put a non-directory over a directory.
            Err(Errno::EISDIR) => self.remove_empty_directory(&parent, path).and_then(|()| {
                fcntl::renameat(&parent, temporary.as_str(), &parent, name)
                    .map_err(|errno| self.failure("replace", path.components(), errno))
            }),
            Err(errno) => Err(self.failure("replace", path.components(), errno)),
            Ok(()) => Ok(()),
        };
        if renamed.is_err() {
            // Best effort: the error that matters is the one about `path`.
            let _ = unistd::unlinkat(&parent, temporary.as_str(), UnlinkatFlags::NoRemoveDir);
        }
        renamed
    }

    /// The target of the link at `path`, as stored (not resolved); `None` when nothing is
    /// there (or a directory on the way is missing). Anything else than a link is an error.
    /// Use this rather than `std::fs::read_link` on a joined path, which follows links on the
    /// way and may read outside the destination.
    pub fn read_symlink(&self, path: &RelativePath) -> Result<Option<PathBuf>> {
        let (parent_components, name) = self.split(path, "read as a symbolic link")?;
        let Some(parent) = self.walk(parent_components, None, true)? else {
            return Ok(None);
        };
        match fcntl::readlinkat(&parent, name) {
            Ok(target) => Ok(Some(PathBuf::from(target))),
            Err(Errno::ENOENT) => Ok(None),
            Err(Errno::EINVAL) => {
                match stat::fstatat(&parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(status) => Err(self.found(
                        path.components(),
                        EntryKind::from_mode(status.st_mode),
                        "a symbolic link",
                    )),
                    Err(errno) => {
                        Err(self.failure("read the symbolic link", path.components(), errno))
                    }
                }
            }
            Err(errno) => Err(self.failure("read the symbolic link", path.components(), errno)),
        }
    }

    /// Removes the file or link at `path` (a link is removed, not followed). Returns whether
    /// there was one; a directory there is an error.
    pub fn remove_file(&self, path: &RelativePath) -> Result<bool> {
        let (parent_components, name) = self.split(path, "remove")?;
        let Some(parent) = self.walk(parent_components, None, true)? else {
            return Ok(false);
        };
        match unistd::unlinkat(&parent, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(Errno::EISDIR) => {
                Err(self.found(path.components(), EntryKind::Directory, "a file or link"))
            }
            Err(errno) => Err(self.failure("remove", path.components(), errno)),
        }
    }

    /// Renames `from` to `to`, both below the root, replacing what `to` names (a link there is
    /// replaced, not followed). Both parent directories must exist.
    pub fn rename(&self, from: &RelativePath, to: &RelativePath) -> Result<()> {
        let (from_components, from_name) = self.split(from, "rename")?;
        let (to_components, to_name) = self.split(to, "replace")?;
        let from_parent = self.directory(from_components, None)?;
        let to_parent = self.directory(to_components, None)?;
        fcntl::renameat(&from_parent, from_name, &to_parent, to_name).map_err(|errno| {
            with_errno_hint(
                Error::local_io(
                    format!(
                        "cannot rename {} to {}",
                        self.display_path(from),
                        self.display_path(to)
                    ),
                    io_error(errno),
                ),
                errno,
            )
        })
    }

    /// Reaches the directory `components` below the root, creating missing ones with `create`.
    fn directory(&self, components: &[String], create: Option<Mode>) -> Result<Directory<'_>> {
        match self.walk(components, create, false)? {
            Some(directory) => Ok(directory),
            // `walk` only answers `None` when asked to; kept as an error rather than a panic.
            None => Err(self.failure("open directory", components, Errno::ENOENT)),
        }
    }

    /// The directory walk. With `missing_is_none`, a missing component answers `Ok(None)`
    /// instead of an error (only meaningful without `create`).
    fn walk(
        &self,
        components: &[String],
        create: Option<Mode>,
        missing_is_none: bool,
    ) -> Result<Option<Directory<'_>>> {
        if components.is_empty() {
            return Ok(Some(Directory::Root(self.root.as_fd())));
        }
        if let Some(fd) = open_beneath(self.root.as_fd(), components) {
            return Ok(Some(Directory::Opened(fd)));
        }
        self.walk_components(components, create, missing_is_none)
    }

    /// One `openat(O_NOFOLLOW | O_DIRECTORY)` per component: the authority on what is allowed.
    fn walk_components(
        &self,
        components: &[String],
        create: Option<Mode>,
        missing_is_none: bool,
    ) -> Result<Option<Directory<'_>>> {
        let mut current = Directory::Root(self.root.as_fd());
        for (index, name) in components.iter().enumerate() {
            let walked = &components[..=index];
            let name = name.as_str();
            let next = match (open_directory_at(&current, name), create) {
                (Ok(fd), _) => fd,
                (Err(Errno::ENOENT), Some(mode)) => {
                    match stat::mkdirat(&current, name, mode) {
                        // Someone else made it meanwhile: fine if it is a real directory,
                        // which the open below checks.
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(errno) => return Err(self.failure("create directory", walked, errno)),
                    }
                    open_directory_at(&current, name)
                        .map_err(|errno| self.directory_error(&current, walked, errno))?
                }
                (Err(Errno::ENOENT), None) if missing_is_none => return Ok(None),
                (Err(errno), _) => return Err(self.directory_error(&current, walked, errno)),
            };
            current = Directory::Opened(next);
        }
        Ok(Some(current))
    }

    /// The parent components and the last name of `path`; the root has no name to act on.
    fn split<'p>(&self, path: &'p RelativePath, action: &str) -> Result<(&'p [String], &'p str)> {
        match path.components().split_last() {
            Some((name, parent)) => Ok((parent, name.as_str())),
            None => Err(Error::new(
                ErrorKind::LocalIo,
                format!(
                    "cannot {action} {}: it is the destination directory itself",
                    self.display(&[])
                ),
            )),
        }
    }

    fn apply_permissions_and_times(
        &self,
        fd: BorrowedFd<'_>,
        path: &RelativePath,
        mode: u32,
        modified: Timestamp,
    ) -> Result<()> {
        stat::fchmod(fd, mode::permissions(mode & APPLIED_MODE_BITS))
            .map_err(|errno| self.failure("set the permissions of", path.components(), errno))?;
        stat::futimens(fd, &TimeSpec::UTIME_OMIT, &modified.to_timespec())
            .map_err(|errno| self.failure("set the modification time of", path.components(), errno))
    }

    /// Makes a link to `target` under a fresh hidden name in `parent`; returns that name.
    fn symlink_at_temporary_name(
        &self,
        parent: &Directory<'_>,
        path: &RelativePath,
        target: &str,
    ) -> Result<String> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut attempts = 0;
        loop {
            let count = COUNTER.fetch_add(1, Ordering::Relaxed);
            let temporary = format!(".xfer-symlink.{}.{count}", std::process::id());
            match unistd::symlinkat(target, parent, temporary.as_str()) {
                Ok(()) => return Ok(temporary),
                // A leftover of another run with the same process id: take the next name.
                Err(Errno::EEXIST) if attempts < 100 => attempts += 1,
                Err(errno) => {
                    return Err(self.failure("create the symbolic link", path.components(), errno));
                }
            }
        }
    }

    /// Removes the directory at `path` if it is empty; a non-empty one is refused.
    fn remove_empty_directory(&self, parent: &Directory<'_>, path: &RelativePath) -> Result<()> {
        let name = path.file_name().unwrap_or_default();
        match unistd::unlinkat(parent, name, UnlinkatFlags::RemoveDir) {
            Ok(()) => Ok(()),
            Err(Errno::ENOTEMPTY | Errno::EEXIST) => Err(Error::new(
                ErrorKind::LocalIo,
                format!(
                    "{} is a directory that is not empty; xfer does not replace it with a \
                     symbolic link",
                    self.display_path(path)
                ),
            )
            .with_hint("remove or rename that directory if the link should replace it")),
            Err(errno) => Err(self.failure("replace", path.components(), errno)),
        }
    }

    fn require_kind(
        &self,
        path: &RelativePath,
        status: &FileStat,
        wanted: EntryKind,
    ) -> Result<()> {
        let kind = EntryKind::from_mode(status.st_mode);
        if kind == wanted {
            Ok(())
        } else {
            Err(self.found(path.components(), kind, wanted.with_article()))
        }
    }

    /// A regular file with no other hard link: writing or changing it in place cannot touch
    /// anything outside the destination.
    fn require_writable_file(&self, path: &RelativePath, status: &FileStat) -> Result<()> {
        self.require_kind(path, status, EntryKind::File)?;
        if status.st_nlink > 1 {
            return Err(Error::new(
                ErrorKind::LocalIo,
                format!(
                    "{} has {} hard links; changing it in place would also change the other \
                     names, which may be outside the destination",
                    self.display_path(path),
                    status.st_nlink
                ),
            )
            .with_hint("remove it (xfer will transfer it again) or replace it with a copy"));
        }
        Ok(())
    }

    /// Turns a descriptor opened with `O_NONBLOCK` (only there to keep a swapped-in named pipe
    /// from blocking the open) into an ordinary blocking `File`.
    fn blocking_file(&self, fd: OwnedFd, path: &RelativePath) -> Result<File> {
        let flags = fcntl::fcntl(&fd, FcntlArg::F_GETFL)
            .map_err(|errno| self.failure("open", path.components(), errno))?;
        let blocking = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
        fcntl::fcntl(&fd, FcntlArg::F_SETFL(blocking))
            .map_err(|errno| self.failure("open", path.components(), errno))?;
        Ok(File::from(fd))
    }

    /// The error for a failed open of a directory component: says what is there instead when
    /// that is the reason (a link, a file), else the system error.
    fn directory_error(&self, parent: &Directory<'_>, walked: &[String], errno: Errno) -> Error {
        let name = walked.last().map(String::as_str).unwrap_or_default();
        if matches!(errno, Errno::ELOOP | Errno::ENOTDIR)
            && let Ok(status) = stat::fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        {
            let kind = EntryKind::from_mode(status.st_mode);
            if kind != EntryKind::Directory {
                return self.found(walked, kind, "a directory");
            }
        }
        self.failure("open directory", walked, errno)
    }

    /// The error for a failed open of the last component, worded like `directory_error`.
    fn entry_error(
        &self,
        parent: &Directory<'_>,
        path: &RelativePath,
        action: &str,
        errno: Errno,
    ) -> Error {
        let name = path.file_name().unwrap_or_default();
        if matches!(
            errno,
            Errno::ELOOP | Errno::ENOTDIR | Errno::EISDIR | Errno::ENXIO
        ) && let Ok(status) = stat::fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        {
            let kind = EntryKind::from_mode(status.st_mode);
            if kind != EntryKind::File {
                return self.found(path.components(), kind, "a regular file");
            }
        }
        self.failure(action, path.components(), errno)
    }

    /// "X is a symbolic link" / "X is a named pipe, where xfer needs a regular file".
    fn found(&self, components: &[String], kind: EntryKind, wanted: &str) -> Error {
        let shown = self.display(components);
        if kind == EntryKind::Symlink {
            Error::new(
                ErrorKind::LocalIo,
                format!(
                    "{shown} is a symbolic link; xfer never follows symbolic links inside the \
                     destination"
                ),
            )
            .with_hint(
                "xfer refused to write through it; remove it if it should not be there, or \
                 choose another destination directory",
            )
        } else {
            Error::new(
                ErrorKind::LocalIo,
                format!(
                    "{shown} is {}, where xfer needs {wanted}",
                    kind.with_article()
                ),
            )
            .with_hint("remove or rename it, or choose another destination directory")
        }
    }

    /// "cannot <action> <full path>: <system error>", with a hint where one helps.
    fn failure(&self, action: &str, components: &[String], errno: Errno) -> Error {
        with_errno_hint(
            Error::local_io(
                format!("cannot {action} {}", self.display(components)),
                io_error(errno),
            ),
            errno,
        )
    }

    fn display(&self, components: &[String]) -> String {
        let mut shown = printable(self.root_path.as_os_str().as_bytes());
        for component in components {
            if !shown.ends_with('/') {
                shown.push('/');
            }
            shown.push_str(&printable(component.as_bytes()));
        }
        shown
    }
}

/// The flag that opens a directory one may enter but not list (mode 0311), to work beneath it:
/// Linux's O_PATH.
#[cfg(target_os = "linux")]
const PATH_ONLY: Option<OFlag> = Some(OFlag::O_PATH);

/// Elsewhere (macOS has no O_PATH) such a directory cannot be opened: it is refused with the
/// EACCES of the first open, worded as any other permission error.
#[cfg(not(target_os = "linux"))]
const PATH_ONLY: Option<OFlag> = None;

/// Opens the directory `name` in `parent` without following a link there.
fn open_directory_at(parent: &impl AsFd, name: &str) -> std::result::Result<OwnedFd, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match fcntl::openat(parent, name, flags, Mode::empty()) {
        // A directory we may enter but not list (mode 0311): O_PATH is enough to walk through.
        Err(Errno::EACCES) => {
            let Some(path_only) = PATH_ONLY else {
                return Err(Errno::EACCES);
            };
            let path_only = path_only | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let fd = fcntl::openat(parent, name, path_only, Mode::empty())?;
            // O_PATH | O_NOFOLLOW can open a link itself; O_DIRECTORY should prevent that, and
            // this makes sure of it.
            let status = stat::fstat(&fd)?;
            if EntryKind::from_mode(status.st_mode) == EntryKind::Directory {
                Ok(fd)
            } else {
                Err(Errno::ENOTDIR)
            }
        }
        other => other,
    }
}

/// Set once `openat2` turns out to be unusable here, so the walk is used without trying again.
#[cfg(target_os = "linux")]
static OPENAT2_UNAVAILABLE: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Opens an existing directory several components below `root` in one call, refusing any link
/// on the way. `None` means "use the walk": `openat2` is missing, or the open failed for a
/// reason the walk will find and word.
#[cfg(target_os = "linux")]
fn open_beneath(root: BorrowedFd<'_>, components: &[String]) -> Option<OwnedFd> {
    use nix::fcntl::{OpenHow, ResolveFlag};
    // For one component, the walk is a single openat already.
    if components.len() < 2 || OPENAT2_UNAVAILABLE.load(Ordering::Relaxed) {
        return None;
    }
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    match fcntl::openat2(root, components.join("/").as_str(), how) {
        Ok(fd) => Some(fd),
        // No such system call (Linux before 5.6), refused by a seccomp filter, or an open_how
        // this kernel does not understand.
        Err(Errno::ENOSYS | Errno::EPERM | Errno::EINVAL | Errno::E2BIG) => {
            OPENAT2_UNAVAILABLE.store(true, Ordering::Relaxed);
            None
        }
        Err(_) => None,
    }
}

/// Elsewhere no single call gives that guarantee (openat2 is Linux's): the walk, one
/// `openat(O_NOFOLLOW)` per component, is always used.
#[cfg(not(target_os = "linux"))]
fn open_beneath(_root: BorrowedFd<'_>, _components: &[String]) -> Option<OwnedFd> {
    None
}

fn io_error(errno: Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(errno as i32)
}

fn with_errno_hint(error: Error, errno: Errno) -> Error {
    let hint = match errno {
        Errno::EACCES | Errno::EPERM => {
            "check the owner and permissions of the destination directory and what is in it"
        }
        Errno::ENOSPC => {
            "free some space on the destination filesystem, then run the same command again to \
             resume"
        }
        Errno::EDQUOT => {
            "your disk quota on the destination filesystem is used up; free some space, then run \
             the same command again to resume"
        }
        Errno::EROFS => "the destination filesystem is read-only; choose another destination",
        Errno::ENOENT => {
            "check that it exists; if something removed it while xfer was running, run the same \
             command again to resume"
        }
        _ => return error,
    };
    error.with_hint(hint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, symlink};

    fn path(text: &str) -> RelativePath {
        RelativePath::parse(text).expect("test paths are valid")
    }

    fn setup() -> (tempfile::TempDir, Destination) {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let destination =
            Destination::open(&directory.path().join("dest"), true).expect("the destination opens");
        (directory, destination)
    }

    #[test]
    fn walk_and_openat2_agree_on_real_directories() {
        let (_directory, destination) = setup();
        destination
            .create_dir_all(&path("a/b/c"), 0o755)
            .expect("directories are created");
        let components = path("a/b/c").components().to_vec();
        let walked = destination
            .walk_components(&components, None, false)
            .expect("the walk reaches a real directory")
            .map(|directory| stat::fstat(&directory).map(|status| status.st_ino));
        let direct = stat::fstat(destination.directory(&components, None).expect("reached"))
            .map(|status| status.st_ino);
        assert_eq!(walked, Some(direct));
    }

    #[test]
    fn the_walk_refuses_a_link_in_the_middle() {
        let (directory, destination) = setup();
        let outside = directory.path().join("outside");
        std::fs::create_dir_all(outside.join("b")).expect("outside exists");
        symlink(&outside, destination.root_path().join("a")).expect("the link is planted");
        let components = path("a/b").components().to_vec();
        let error = destination
            .walk_components(&components, Some(Mode::from_bits_truncate(0o700)), false)
            .err()
            .expect("the walk refuses the link");
        assert!(error.message().contains("is a symbolic link"), "{error}");
        assert!(open_beneath(destination.root.as_fd(), &components).is_none());
        assert_eq!(
            std::fs::read_dir(outside.join("b"))
                .map(Iterator::count)
                .ok(),
            Some(0)
        );
    }

    #[test]
    fn a_directory_without_read_permission_can_still_be_walked() {
        let (_directory, destination) = setup();
        destination
            .create_dir_all(&path("locked/inner"), 0o700)
            .expect("directories are created");
        let locked = destination.root_path().join("locked");
        std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o300))
            .expect("chmod");
        let mut file = destination
            .open_write(&path("locked/inner/f"))
            .expect("a search-only directory can be walked");
        file.write_all(b"x").expect("written");
        std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("chmod back");
    }

    #[test]
    fn opening_for_a_pull_replaces_what_is_not_a_file_and_keeps_what_is() {
        let (directory, destination) = setup();
        let root = destination.root_path().to_path_buf();
        let outside = directory.path().join("outside");
        std::fs::write(&outside, b"not yours").expect("outside exists");

        let (_, length) = destination
            .open_write_replacing(&path("new"))
            .expect("a new file");
        assert_eq!(length, 0);

        std::fs::write(root.join("kept"), b"12345").expect("a file");
        let (_, length) = destination
            .open_write_replacing(&path("kept"))
            .expect("a file is opened in place");
        assert_eq!(length, 5);
        assert_eq!(std::fs::read(root.join("kept")).expect("read"), b"12345");

        // A link is removed, never followed: what it pointed to is untouched.
        symlink(&outside, root.join("link")).expect("the link is planted");
        let (mut file, length) = destination
            .open_write_replacing(&path("link"))
            .expect("the link is replaced");
        assert_eq!(length, 0);
        file.write_all(b"mine").expect("written");
        assert!(
            root.join("link")
                .symlink_metadata()
                .expect("stat")
                .is_file()
        );
        assert_eq!(std::fs::read(&outside).expect("read"), b"not yours");
        // A dangling link is no way out either: the exclusive create does not follow it.
        let missing = directory.path().join("missing");
        symlink(&missing, root.join("dangling")).expect("the link is planted");
        let (mut file, length) = destination
            .open_write_replacing(&path("dangling"))
            .expect("the dangling link is replaced");
        assert_eq!(length, 0);
        file.write_all(b"mine").expect("written");
        assert!(!missing.exists(), "the write went through the link");
        let status = root.join("dangling").symlink_metadata().expect("stat");
        assert!(status.is_file());
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&status.permissions()) & 0o777,
            0o600
        );

        // A named pipe is removed without being opened (opening it would block).
        nix::unistd::mkfifo(&root.join("pipe"), Mode::from_bits_truncate(0o600)).expect("fifo");
        destination
            .open_write_replacing(&path("pipe"))
            .expect("the pipe is replaced");
        assert!(
            root.join("pipe")
                .symlink_metadata()
                .expect("stat")
                .is_file()
        );

        // A directory, or a file with other names, is an error and stays.
        std::fs::create_dir(root.join("directory")).expect("a directory");
        assert!(
            destination
                .open_write_replacing(&path("directory"))
                .is_err()
        );
        assert!(root.join("directory").is_dir());
        std::fs::hard_link(root.join("kept"), root.join("other-name")).expect("hard link");
        assert!(destination.open_write_replacing(&path("kept")).is_err());
        // Plain open_write never removes anything.
        symlink(&outside, root.join("link2")).expect("the link is planted");
        assert!(destination.open_write(&path("link2")).is_err());
        assert!(
            root.join("link2")
                .symlink_metadata()
                .expect("stat")
                .is_symlink()
        );
    }

    #[test]
    fn metadata_describes_without_following() {
        let (_directory, destination) = setup();
        let mut file = destination.open_write(&path("f")).expect("created");
        file.write_all(b"hello").expect("written");
        let modified = Timestamp {
            seconds: 1_600_000_000,
            nanoseconds: 123_456_789,
        };
        destination
            .set_file_permissions_and_times(&file, &path("f"), 0o6755, modified)
            .expect("mode and time are set");
        let metadata = destination
            .metadata(&path("f"))
            .expect("inspected")
            .expect("present");
        assert_eq!(metadata.kind, EntryKind::File);
        assert_eq!(metadata.size, 5);
        assert_eq!(metadata.mode, 0o755, "set-id bits are never applied");
        assert_eq!(metadata.modified, modified);
        assert_eq!(
            metadata.uid,
            std::fs::metadata(destination.root_path())
                .expect("root")
                .uid()
        );
        destination
            .create_symlink(&path("l"), "/nowhere")
            .expect("link created");
        let link = destination
            .metadata(&path("l"))
            .expect("inspected")
            .expect("present");
        assert_eq!(link.kind, EntryKind::Symlink);
        assert_eq!(destination.metadata(&path("missing/x")).ok(), Some(None));
        assert_eq!(
            destination
                .metadata(&RelativePath::root())
                .ok()
                .flatten()
                .map(|metadata| metadata.kind),
            Some(EntryKind::Directory)
        );
    }

    #[test]
    fn hard_linked_files_are_not_changed_in_place() {
        let (directory, destination) = setup();
        let outside = directory.path().join("outside-file");
        std::fs::write(&outside, b"secret").expect("outside file");
        std::fs::hard_link(&outside, destination.root_path().join("h")).expect("hard link");
        let error = destination
            .open_write(&path("h"))
            .expect_err("a hard-linked file is refused");
        assert!(error.message().contains("hard links"), "{error}");
        let error = destination
            .set_permissions_and_times(
                &path("h"),
                0o777,
                Timestamp {
                    seconds: 0,
                    nanoseconds: 0,
                },
            )
            .expect_err("a hard-linked file is refused");
        assert!(error.message().contains("hard links"), "{error}");
        let status = std::fs::metadata(&outside).expect("outside");
        assert_ne!(status.mode() & 0o777, 0o777);
        assert_eq!(std::fs::read(&outside).ok(), Some(b"secret".to_vec()));
    }

    #[test]
    fn the_root_is_not_a_file() {
        let (_directory, destination) = setup();
        let error = destination
            .open_write(&RelativePath::root())
            .expect_err("the root is a directory");
        assert!(error.message().contains("destination directory itself"));
        destination
            .create_dir_all(&RelativePath::root(), 0o700)
            .expect("nothing to create");
    }

    #[test]
    fn kinds_display_without_article() {
        assert_eq!(EntryKind::Symlink.to_string(), "symbolic link");
        assert_eq!(EntryKind::Fifo.to_string(), "named pipe");
    }
}
