//! What kind of filesystem object an entry is, in the terms a transfer deals in: both ends'
//! listings, the plan, the agent protocol and the completion records all use [`EntryKind`].
//! Local lookups below a destination keep a finer kind of their own
//! ([`crate::local::EntryKind`]) to name the exact special file in a refusal.

/// What kind of filesystem object an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
    /// Devices, sockets, fifos: skipped with a warning, as rsync -a without -D.
    Special,
}

impl EntryKind {
    /// The kind of a local entry, from `symlink_metadata` (a link is never followed).
    pub fn from_file_type(file_type: std::fs::FileType) -> EntryKind {
        if file_type.is_symlink() {
            EntryKind::Symlink
        } else if file_type.is_dir() {
            EntryKind::Directory
        } else if file_type.is_file() {
            EntryKind::File
        } else {
            EntryKind::Special
        }
    }
}

impl From<crate::local::EntryKind> for EntryKind {
    fn from(kind: crate::local::EntryKind) -> EntryKind {
        use crate::local::EntryKind as Local;
        match kind {
            Local::File => EntryKind::File,
            Local::Directory => EntryKind::Directory,
            Local::Symlink => EntryKind::Symlink,
            Local::Fifo
            | Local::Socket
            | Local::CharacterDevice
            | Local::BlockDevice
            | Local::Unknown => EntryKind::Special,
        }
    }
}
