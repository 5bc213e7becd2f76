//! The wire protocol of `xfer agent`: frames and messages, their encoding and decoding. No IO:
//! the server and the client read and write the bytes, this module only turns them into
//! messages and back, checking a cap on every size before it allocates anything.
//!
//! # Startup
//!
//! The agent speaks first. It writes the 8 bytes of [`MAGIC`] (`XFERAGT\n`) and then a
//! ServerHello frame carrying the range of protocol versions it speaks and its [`BuildId`]. A
//! client that reads anything else than the magic is not talking to an agent (the remote start
//! script printed text instead). Otherwise it answers with a ClientHello frame carrying the
//! version it chose, the highest version in both ranges ([`choose_version`]), or closes the
//! agent's stdin when there is none. An agent that receives a version outside its own range sends
//! a protocol-level Error frame and exits. This build speaks versions [`PROTOCOL_MIN`] to
//! [`PROTOCOL_MAX`]. Both hello frames carry request id 0.
//!
//! # Frames
//!
//! Every message, in either direction, is one frame:
//!
//! | bytes | field                                                        |
//! |-------|--------------------------------------------------------------|
//! | 4     | u32 big-endian length of everything that follows (≥ 5)       |
//! | 1     | u8 message type                                              |
//! | 4     | u32 big-endian request id                                    |
//! | rest  | payload, as the message type says                            |
//!
//! The length is checked against [`MAX_FRAME`] (= [`MAX_DATA`] + 64 KiB) before anything is
//! allocated for the frame. Inside payloads, integers are big-endian (`i64` two's complement), a
//! `bool` is one byte 0 or 1, an `Option<T>` is one byte 0 (absent) or 1 followed by `T`, and a
//! byte string or string is a u32 length followed by that many bytes. Every length and count is
//! checked against its cap before the bytes are read; a payload that ends early or has bytes left
//! over, an unknown message type, a flag that is not 0 or 1, a string that is not UTF-8 where
//! UTF-8 is required: each is a decode error, which ends the session (never a panic).
//!
//! Paths travel as raw bytes (Unix paths are bytes). Requests carry UTF-8 paths (`String`);
//! names in [`Entry`] and link targets in [`Response::Text`] are raw bytes, so a name that is
//! not UTF-8 arrives intact and the client decides what to do with it.
//!
//! Caps: paths and link targets [`MAX_PATH`] bytes, entry names [`MAX_NAME`] bytes (a name is
//! one path component, and Linux refuses components longer than `NAME_MAX`, 255), error
//! messages [`MAX_MESSAGE`] bytes, build version [`MAX_BUILD_VERSION`], os and arch
//! [`MAX_BUILD_PLATFORM`], data [`MAX_DATA`] bytes, entries per batch [`MAX_LIST_BATCH`], hashes
//! per frame [`MAX_HASHES`]. The largest EntryBatch (MAX_LIST_BATCH entries of MAX_NAME-byte
//! names) fits in one frame.
//!
//! # Messages
//!
//! Request id 0 is reserved: the hellos use it, and an Error frame with id 0 is a protocol-level
//! error that precedes the agent exiting on a malformed frame. Requests use any other id; the
//! client chooses them and never reuses one still in flight.
//!
//! | type | message (client → agent)   | payload                                              | answer       |
//! |------|----------------------------|------------------------------------------------------|--------------|
//! | 0x7f | ClientHello                | version u16                                          |              |
//! | 0x01 | Stat                       | path, follow bool                                    | Entry        |
//! | 0x02 | List                       | path                                                 | EntryBatch…  |
//! | 0x03 | ReadLink                   | path                                                 | Text         |
//! | 0x04 | OpenRead                   | path                                                 | Handle       |
//! | 0x05 | OpenWrite                  | path                                                 | Handle       |
//! | 0x06 | Read                       | handle u64, offset u64, length u32 (≤ MAX_DATA)      | Data         |
//! | 0x07 | Write                      | handle u64, offset u64, data (≤ MAX_DATA)            | Done         |
//! | 0x08 | Sync                       | handle u64                                           | Done         |
//! | 0x09 | Close                      | handle u64                                           | Done         |
//! | 0x0a | ReadFile                   | path, max_length u32 (≤ MAX_DATA)                    | Data         |
//! | 0x0b | SetAttributes              | path, size `Option<u64>`, mode `Option<u32>`, mtime `Option<i64>` | Done |
//! | 0x0c | MakeDirectory              | path, mode u32                                       | Done         |
//! | 0x0d | MakeSymlink                | path, target                                         | Done         |
//! | 0x0e | Remove                     | path                                                 | Done         |
//! | 0x0f | Rename                     | from, to                                             | Done         |
//! | 0x10 | Digest                     | path                                                 | Hash         |
//! | 0x11 | BlockHashes                | path, block_size u32, first u64, count u32 (≤ MAX_HASHES) | Hashes  |
//! | 0x12 | ReadFileHashed (version 2) | path, max_length u32 (≤ MAX_DATA)                    | HashedData   |
//! | 0x13 | SetFileAttributes (version 3) | handle u64, size `Option<u64>`, mode `Option<u32>`, mtime `Option<i64>` | Done |
//!
//! | type | message (agent → client)   | payload                                              |
//! |------|----------------------------|------------------------------------------------------|
//! | 0xff | ServerHello                | min_version u16, max_version u16, build: version string, executable_blake3 [32], os string, arch string |
//! | 0x80 | Error                      | code u8, message string                              |
//! | 0x81 | Entry                      | `Option<entry>`                                      |
//! | 0x82 | EntryBatch                 | count u32 (≤ MAX_LIST_BATCH), entries, last bool     |
//! | 0x83 | Text                       | bytes (≤ MAX_PATH)                                   |
//! | 0x84 | Handle                     | u64                                                  |
//! | 0x85 | Data                       | bytes (≤ MAX_DATA)                                   |
//! | 0x86 | Done                       | nothing                                              |
//! | 0x87 | Hash                       | [32]                                                 |
//! | 0x88 | Hashes                     | count u32 (≤ MAX_HASHES), count × [32]               |
//! | 0x89 | HashedData (version 2)     | hash [32], bytes (≤ MAX_DATA)                        |
//!
//! An entry is: name bytes (≤ MAX_NAME, one path component), kind u8 (0 file, 1 directory,
//! 2 symlink, 3 special), size u64, mtime i64 seconds, mtime_nanoseconds u32 (< 10⁹), mode u32
//! (≤ 0o7777). A frame carrying a longer name is a decode error, like any other cap.
//! Error codes are the discriminants of [`ErrorCode`] (1 to 8).
//!
//! Every request is answered by exactly one frame with its id, except List: one or more
//! EntryBatch frames, the last with `last` set. An Error frame answers any request and ends it
//! (also a List after some batches). What each request does is described on [`Request`].
//!
//! # Versions
//!
//! Version 1 is every message above but ReadFileHashed and HashedData. Version 2 adds them: a
//! small file and its block hash in one round trip, where version 1 takes a ReadFile and a
//! BlockHashes (a pull of 10,000 small files spent a fifth of its time on the second request).
//! Version 3 adds SetFileAttributes, so a push sets size, mode and times through the handle it
//! wrote, never by a name that another account on the host could swap; from version 3 on,
//! OpenWrite and SetAttributes never follow a final symlink either.
//! An agent answers a request newer than the session's version with an Error.

/// What kind of filesystem object an [`Entry`] is: the engine's own kinds.
pub use crate::remote::EntryKind;

/// What the agent writes before anything else.
pub const MAGIC: [u8; 8] = *b"XFERAGT\n";
/// The oldest protocol version this build speaks.
pub const PROTOCOL_MIN: u16 = 1;
/// The newest protocol version this build speaks.
pub const PROTOCOL_MAX: u16 = 3;

/// The most bytes of file data in one Read answer, Write request or ReadFile answer: 8 MiB.
pub const MAX_DATA: u32 = 8 << 20;
/// The largest frame length (what follows the length field): the largest data plus 64 KiB.
pub const MAX_FRAME: u32 = MAX_DATA + (64 << 10);
/// The longest path or link target, in bytes.
pub const MAX_PATH: usize = 4096;
/// The longest entry name, in bytes: one path component, at most Linux's `NAME_MAX`. A listing
/// holds up to millions of names, so their cap, not the path cap, decides what one costs.
pub const MAX_NAME: usize = 255;
/// The longest error message, in bytes.
pub const MAX_MESSAGE: usize = 1024;
/// The longest build version string, in bytes.
pub const MAX_BUILD_VERSION: usize = 64;
/// The longest os or arch string of a build, in bytes.
pub const MAX_BUILD_PLATFORM: usize = 32;
/// The most entries in one EntryBatch frame.
pub const MAX_LIST_BATCH: usize = 4096;
/// The most hashes in one Hashes frame, and the most blocks one BlockHashes request asks for.
pub const MAX_HASHES: u32 = 65536;

/// Bytes in the length field of a frame.
pub const LENGTH_LEN: usize = 4;
/// Bytes of message type and request id that open every frame after its length.
pub const FRAME_HEADER_LEN: usize = 5;

/// The message type bytes.
mod kind {
    pub const STAT: u8 = 0x01;
    pub const LIST: u8 = 0x02;
    pub const READ_LINK: u8 = 0x03;
    pub const OPEN_READ: u8 = 0x04;
    pub const OPEN_WRITE: u8 = 0x05;
    pub const READ: u8 = 0x06;
    pub const WRITE: u8 = 0x07;
    pub const SYNC: u8 = 0x08;
    pub const CLOSE: u8 = 0x09;
    pub const READ_FILE: u8 = 0x0a;
    pub const SET_ATTRIBUTES: u8 = 0x0b;
    pub const MAKE_DIRECTORY: u8 = 0x0c;
    pub const MAKE_SYMLINK: u8 = 0x0d;
    pub const REMOVE: u8 = 0x0e;
    pub const RENAME: u8 = 0x0f;
    pub const DIGEST: u8 = 0x10;
    pub const BLOCK_HASHES: u8 = 0x11;
    pub const READ_FILE_HASHED: u8 = 0x12;
    pub const SET_FILE_ATTRIBUTES: u8 = 0x13;
    pub const CLIENT_HELLO: u8 = 0x7f;

    pub const ERROR: u8 = 0x80;
    pub const ENTRY: u8 = 0x81;
    pub const ENTRY_BATCH: u8 = 0x82;
    pub const TEXT: u8 = 0x83;
    pub const HANDLE: u8 = 0x84;
    pub const DATA: u8 = 0x85;
    pub const DONE: u8 = 0x86;
    pub const HASH: u8 = 0x87;
    pub const HASHES: u8 = 0x88;
    pub const HASHED_DATA: u8 = 0x89;
    pub const SERVER_HELLO: u8 = 0xff;
}

/// Why bytes were refused as a frame or message, or a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("a frame of {length} bytes is over the cap of {MAX_FRAME}")]
    FrameTooLarge { length: u32 },
    #[error("a frame of {length} bytes cannot hold a message type and request id")]
    FrameTooShort { length: u32 },
    #[error("truncated {what}")]
    Truncated { what: &'static str },
    #[error("{count} bytes left over after a {what}")]
    TrailingBytes { what: &'static str, count: usize },
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    #[error("message type {kind:#04x} where {expected} was expected")]
    UnexpectedType { kind: u8, expected: &'static str },
    #[error("{what} of {length} bytes is over the cap of {cap}")]
    TooLong {
        what: &'static str,
        length: u64,
        cap: u64,
    },
    #[error("{count} {what} is over the cap of {cap}")]
    TooMany {
        what: &'static str,
        count: u64,
        cap: u64,
    },
    #[error("invalid {what}: {value}")]
    Invalid { what: &'static str, value: u64 },
    #[error("{what} is not UTF-8")]
    NotUtf8 { what: &'static str },
}

/// Which build of xfer an agent is: the agent's version, the BLAKE3 of its executable, and the
/// platform it was built for. The client uses it to decide whether to upload another build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildId {
    /// The crate version, ≤ [`MAX_BUILD_VERSION`] bytes.
    pub version: String,
    /// Plain BLAKE3 of the running executable's bytes.
    pub executable_blake3: [u8; 32],
    /// `std::env::consts::OS`, ≤ [`MAX_BUILD_PLATFORM`] bytes.
    pub os: String,
    /// `std::env::consts::ARCH`, ≤ [`MAX_BUILD_PLATFORM`] bytes.
    pub arch: String,
}

/// The agent's first frame: which versions it speaks and which build it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHello {
    pub min_version: u16,
    pub max_version: u16,
    pub build: BuildId,
}

/// The client's first frame: the version both sides will speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHello {
    pub version: u16,
}

/// The highest version in both ranges `(min, max)`, or None when they do not meet.
pub fn choose_version(ours: (u16, u16), theirs: (u16, u16)) -> Option<u16> {
    let low = ours.0.max(theirs.0);
    let high = ours.1.min(theirs.1);
    (low <= high).then_some(high)
}

/// One filesystem object as the agent describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Raw bytes: the directory entry's name for List, the final path component for Stat
    /// (`/`, `.` or `..` when the path ends in one). ≤ [`MAX_NAME`] bytes.
    pub name: Vec<u8>,
    pub kind: EntryKind,
    pub size: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// The nanoseconds part of the modification time, < 10⁹.
    pub mtime_nanoseconds: u32,
    /// Permission bits, ≤ 0o7777.
    pub mode: u32,
}

impl Entry {
    /// The name as text, with anything not UTF-8 replaced by U+FFFD.
    pub fn name_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.name)
    }

    /// The entry as the transfer engine sees remote entries: the name decoded lossily, the
    /// modification time in whole seconds.
    pub fn to_remote_entry(&self) -> crate::remote::RemoteEntry {
        crate::remote::RemoteEntry {
            name: self.name_lossy().into_owned(),
            kind: self.kind,
            size: self.size,
            mtime: self.mtime,
            mode: self.mode,
        }
    }
}

/// Why a request failed on the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No such file or directory (or a path component is not a directory).
    NotFound = 1,
    PermissionDenied = 2,
    /// The filesystem is full or the quota is exhausted (ENOSPC, EDQUOT).
    NoSpace = 3,
    AlreadyExists = 4,
    /// ReadFile of a file larger than its `max_length`, or an answer over a cap.
    TooLarge = 5,
    /// A request the agent cannot carry out as asked (bad block size, bad offset, ...).
    Invalid = 6,
    /// A handle that is not open (never was, or closed), or not open for that operation.
    BadHandle = 7,
    Other = 8,
}

impl ErrorCode {
    fn from_byte(byte: u8) -> Option<ErrorCode> {
        Some(match byte {
            1 => ErrorCode::NotFound,
            2 => ErrorCode::PermissionDenied,
            3 => ErrorCode::NoSpace,
            4 => ErrorCode::AlreadyExists,
            5 => ErrorCode::TooLarge,
            6 => ErrorCode::Invalid,
            7 => ErrorCode::BadHandle,
            8 => ErrorCode::Other,
            _ => return None,
        })
    }
}

/// A request from the client to the agent. Each is answered with the id it was sent with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Metadata of `path`, following a final symlink only if `follow`. Answer:
    /// `Entry(None)` when it does not exist.
    Stat { path: String, follow: bool },
    /// The entries of a directory without `.` and `..`, in one or more EntryBatch frames.
    List { path: String },
    /// The target of a symlink. Answer: Text.
    ReadLink { path: String },
    /// Opens a file for reading. Answer: Handle.
    OpenRead { path: String },
    /// Opens a file for reading and writing, creating it with mode 0600 when missing and never
    /// truncating it. Answer: Handle.
    OpenWrite { path: String },
    /// Reads up to `length` (≤ [`MAX_DATA`]) bytes at `offset`: fewer at the end of the file,
    /// none past it. Answer: Data.
    Read {
        handle: u64,
        offset: u64,
        length: u32,
    },
    /// Writes all of `data` (≤ [`MAX_DATA`] bytes) at `offset`. Answer: Done.
    Write {
        handle: u64,
        offset: u64,
        data: Vec<u8>,
    },
    /// fsync. Answer: Done.
    Sync { handle: u64 },
    /// Forgets a handle. Answer: Done.
    Close { handle: u64 },
    /// The whole file in one answer (Data), or an error TooLarge when it has more than
    /// `max_length` (≤ [`MAX_DATA`]) bytes.
    ReadFile { path: String, max_length: u32 },
    /// Sets the size, then the permission bits, then the access and modification times (both
    /// to `mtime`) of what `path` names, never following a final symlink (version 3 agents;
    /// earlier ones follow it). None leaves a field alone. Answer: Done.
    SetAttributes {
        path: String,
        size: Option<u64>,
        mode: Option<u32>,
        mtime: Option<i64>,
    },
    /// Creates one directory; an existing directory is not an error. Answer: Done.
    MakeDirectory { path: String, mode: u32 },
    /// Makes `path` a symlink to `target`, replacing a symlink or file there. Answer: Done.
    MakeSymlink { path: String, target: String },
    /// Unlinks a file, symlink or special file (not a directory). Answer: Done.
    Remove { path: String },
    /// rename(2): replaces `to` if it exists. Answer: Done.
    Rename { from: String, to: String },
    /// Plain BLAKE3 of the whole file, as `b3sum`. Answer: Hash.
    Digest { path: String },
    /// The block hashes (`crate::blocks::hash_block`) of blocks `first..first + count` of the
    /// file cut in `block_size` blocks: the last block possibly short, none past the end of the
    /// file. `count` ≤ [`MAX_HASHES`]. Answer: Hashes.
    BlockHashes {
        path: String,
        block_size: u32,
        first: u64,
        count: u32,
    },
    /// Version 2: ReadFile, answered with the data and its block hash
    /// (`crate::blocks::hash_block`, computed by the agent over the bytes it read). Answer:
    /// HashedData.
    ReadFileHashed { path: String, max_length: u32 },
    /// Version 3: SetAttributes on the file open under `handle`, not on a name another account
    /// could have swapped since. Answer: Done.
    SetFileAttributes {
        handle: u64,
        size: Option<u64>,
        mode: Option<u32>,
        mtime: Option<i64>,
    },
}

/// An answer from the agent, with the id of the request it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Answers Stat; None when the path does not exist.
    Entry(Option<Entry>),
    /// Answers List, in one or more frames; the last has `last` set.
    EntryBatch { entries: Vec<Entry>, last: bool },
    /// Answers ReadLink: the link target's raw bytes.
    Text(Vec<u8>),
    /// Answers OpenRead and OpenWrite.
    Handle(u64),
    /// Answers Read and ReadFile.
    Data(Vec<u8>),
    /// Answers Write, Sync, Close, SetAttributes, MakeDirectory, MakeSymlink, Remove, Rename.
    Done,
    /// Answers Digest.
    Hash([u8; 32]),
    /// Answers BlockHashes.
    Hashes(Vec<[u8; 32]>),
    /// Answers ReadFileHashed: the block hash of `data`, and `data`.
    HashedData { hash: [u8; 32], data: Vec<u8> },
    /// Answers any request; with request id 0, a protocol-level error before the agent exits.
    Error { code: ErrorCode, message: String },
}

/// The kinds of [`Response`], to match answers with requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseKind {
    Entry,
    EntryBatch,
    Text,
    Handle,
    Data,
    Done,
    Hash,
    Hashes,
    HashedData,
    Error,
}

/// One frame, split but not yet decoded: its message type, request id and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: u8,
    pub id: u32,
    pub payload: &'a [u8],
}

/// The length a frame's 4-byte length field announces, checked against [`MAX_FRAME`] and the
/// smallest frame, so the caller can allocate it safely.
pub fn frame_length(prefix: [u8; LENGTH_LEN]) -> Result<usize, ProtocolError> {
    let length = u32::from_be_bytes(prefix);
    if length > MAX_FRAME {
        return Err(ProtocolError::FrameTooLarge { length });
    }
    if (length as usize) < FRAME_HEADER_LEN {
        return Err(ProtocolError::FrameTooShort { length });
    }
    Ok(length as usize)
}

impl<'a> Frame<'a> {
    /// Splits a frame body: everything after the length field, exactly as long as it said.
    pub fn parse(body: &'a [u8]) -> Result<Frame<'a>, ProtocolError> {
        let length = u32::try_from(body.len()).unwrap_or(u32::MAX);
        if length > MAX_FRAME {
            return Err(ProtocolError::FrameTooLarge { length });
        }
        let Some((header, payload)) = body.split_first_chunk::<FRAME_HEADER_LEN>() else {
            return Err(ProtocolError::FrameTooShort { length });
        };
        let [kind, id @ ..] = *header;
        Ok(Frame {
            kind,
            id: u32::from_be_bytes(id),
            payload,
        })
    }

    /// The first frame in `bytes`, with how many bytes it takes (length field included); None
    /// when `bytes` holds only the beginning of a frame.
    pub fn split(bytes: &'a [u8]) -> Result<Option<(Frame<'a>, usize)>, ProtocolError> {
        let Some((prefix, rest)) = bytes.split_first_chunk::<LENGTH_LEN>() else {
            return Ok(None);
        };
        let length = frame_length(*prefix)?;
        let Some(body) = rest.get(..length) else {
            return Ok(None);
        };
        Ok(Some((Frame::parse(body)?, LENGTH_LEN + length)))
    }
}

/// A cursor over an untrusted payload: every read is bounds-checked and answers an error
/// instead of panicking.
struct Cursor<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn new(payload: &'a [u8], what: &'static str) -> Self {
        Cursor {
            rest: payload,
            what,
        }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], ProtocolError> {
        if len > self.rest.len() {
            return Err(ProtocolError::Truncated { what: self.what });
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let Some((head, tail)) = self.rest.split_first_chunk::<N>() else {
            return Err(ProtocolError::Truncated { what: self.what });
        };
        self.rest = tail;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, ProtocolError> {
        self.array::<1>().map(|[byte]| byte)
    }

    fn u16(&mut self) -> Result<u16, ProtocolError> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, ProtocolError> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, ProtocolError> {
        self.array().map(u64::from_be_bytes)
    }

    fn i64(&mut self) -> Result<i64, ProtocolError> {
        self.array().map(i64::from_be_bytes)
    }

    /// One byte that must be 0 or 1.
    fn flag(&mut self, what: &'static str) -> Result<bool, ProtocolError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(ProtocolError::Invalid {
                what,
                value: u64::from(other),
            }),
        }
    }

    /// A u32 count checked against `cap` before anything is read or allocated for it.
    fn count(&mut self, what: &'static str, cap: usize) -> Result<usize, ProtocolError> {
        let count = self.u32()?;
        if count as usize > cap {
            return Err(ProtocolError::TooMany {
                what,
                count: u64::from(count),
                cap: cap as u64,
            });
        }
        Ok(count as usize)
    }

    /// A length-prefixed byte string of at most `cap` bytes.
    fn bytes(&mut self, what: &'static str, cap: usize) -> Result<&'a [u8], ProtocolError> {
        let len = self.u32()?;
        if len as usize > cap {
            return Err(ProtocolError::TooLong {
                what,
                length: u64::from(len),
                cap: cap as u64,
            });
        }
        self.take(len as usize)
    }

    /// A length-prefixed UTF-8 string of at most `cap` bytes.
    fn string(&mut self, what: &'static str, cap: usize) -> Result<String, ProtocolError> {
        let bytes = self.bytes(what, cap)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ProtocolError::NotUtf8 { what })
    }

    fn path(&mut self) -> Result<String, ProtocolError> {
        self.string("path", MAX_PATH)
    }

    /// The payload of ReadFile and ReadFileHashed: a path and a maximum length ≤ MAX_DATA.
    fn read_file(&mut self) -> Result<(String, u32), ProtocolError> {
        let path = self.path()?;
        let max_length = self.u32()?;
        if max_length > MAX_DATA {
            return Err(ProtocolError::TooLong {
                what: "read-file maximum length",
                length: u64::from(max_length),
                cap: u64::from(MAX_DATA),
            });
        }
        Ok((path, max_length))
    }

    fn option<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, ProtocolError>,
    ) -> Result<Option<T>, ProtocolError> {
        if self.flag("option flag")? {
            read(self).map(Some)
        } else {
            Ok(None)
        }
    }

    fn entry(&mut self) -> Result<Entry, ProtocolError> {
        let name = self.bytes("entry name", MAX_NAME)?.to_vec();
        let kind = match self.u8()? {
            0 => EntryKind::File,
            1 => EntryKind::Directory,
            2 => EntryKind::Symlink,
            3 => EntryKind::Special,
            other => {
                return Err(ProtocolError::Invalid {
                    what: "entry kind",
                    value: u64::from(other),
                });
            }
        };
        let size = self.u64()?;
        let mtime = self.i64()?;
        let mtime_nanoseconds = self.u32()?;
        if mtime_nanoseconds >= 1_000_000_000 {
            return Err(ProtocolError::Invalid {
                what: "mtime nanoseconds",
                value: u64::from(mtime_nanoseconds),
            });
        }
        let mode = self.u32()?;
        if mode > 0o7777 {
            return Err(ProtocolError::Invalid {
                what: "entry mode",
                value: u64::from(mode),
            });
        }
        Ok(Entry {
            name,
            kind,
            size,
            mtime,
            mtime_nanoseconds,
            mode,
        })
    }

    /// Checks that the whole payload was read.
    fn finish(self) -> Result<(), ProtocolError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::TrailingBytes {
                what: self.what,
                count: self.rest.len(),
            })
        }
    }
}

/// Builds one frame: the length is filled in by [`Writer::finish`].
struct Writer {
    buffer: Vec<u8>,
}

impl Writer {
    fn new(kind: u8, id: u32, capacity: usize) -> Self {
        let mut buffer = Vec::with_capacity(LENGTH_LEN + FRAME_HEADER_LEN + capacity);
        buffer.extend_from_slice(&[0; LENGTH_LEN]);
        buffer.push(kind);
        buffer.extend_from_slice(&id.to_be_bytes());
        Writer { buffer }
    }

    fn u8(&mut self, value: u8) {
        self.buffer.push(value);
    }

    fn u16(&mut self, value: u16) {
        self.buffer.extend_from_slice(&value.to_be_bytes());
    }

    fn u32(&mut self, value: u32) {
        self.buffer.extend_from_slice(&value.to_be_bytes());
    }

    fn u64(&mut self, value: u64) {
        self.buffer.extend_from_slice(&value.to_be_bytes());
    }

    fn i64(&mut self, value: i64) {
        self.buffer.extend_from_slice(&value.to_be_bytes());
    }

    fn flag(&mut self, value: bool) {
        self.u8(u8::from(value));
    }

    fn count(&mut self, what: &'static str, count: usize, cap: usize) -> Result<(), ProtocolError> {
        if count > cap {
            return Err(ProtocolError::TooMany {
                what,
                count: count as u64,
                cap: cap as u64,
            });
        }
        // cap ≤ u32::MAX for every caller, so the count fits.
        self.u32(count as u32);
        Ok(())
    }

    fn bytes(&mut self, what: &'static str, data: &[u8], cap: usize) -> Result<(), ProtocolError> {
        if data.len() > cap {
            return Err(ProtocolError::TooLong {
                what,
                length: data.len() as u64,
                cap: cap as u64,
            });
        }
        // cap ≤ MAX_DATA, so the length fits a u32.
        self.u32(data.len() as u32);
        self.buffer.extend_from_slice(data);
        Ok(())
    }

    fn path(&mut self, path: &str) -> Result<(), ProtocolError> {
        self.bytes("path", path.as_bytes(), MAX_PATH)
    }

    fn option<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match value {
            Some(value) => {
                self.flag(true);
                write(self, value);
            }
            None => self.flag(false),
        }
    }

    fn entry(&mut self, entry: &Entry) -> Result<(), ProtocolError> {
        self.bytes("entry name", &entry.name, MAX_NAME)?;
        self.u8(match entry.kind {
            EntryKind::File => 0,
            EntryKind::Directory => 1,
            EntryKind::Symlink => 2,
            EntryKind::Special => 3,
        });
        self.u64(entry.size);
        self.i64(entry.mtime);
        if entry.mtime_nanoseconds >= 1_000_000_000 {
            return Err(ProtocolError::Invalid {
                what: "mtime nanoseconds",
                value: u64::from(entry.mtime_nanoseconds),
            });
        }
        self.u32(entry.mtime_nanoseconds);
        if entry.mode > 0o7777 {
            return Err(ProtocolError::Invalid {
                what: "entry mode",
                value: u64::from(entry.mode),
            });
        }
        self.u32(entry.mode);
        Ok(())
    }

    /// The whole frame, length field included; refused when over [`MAX_FRAME`].
    fn finish(self) -> Result<Vec<u8>, ProtocolError> {
        self.finish_before(0)
    }

    /// The frame up to a tail of `tail` bytes sent after it, the length field counting both;
    /// refused when the whole is over [`MAX_FRAME`].
    fn finish_before(mut self, tail: usize) -> Result<Vec<u8>, ProtocolError> {
        let length = (self.buffer.len() - LENGTH_LEN).saturating_add(tail);
        let Ok(length) = u32::try_from(length) else {
            return Err(ProtocolError::FrameTooLarge { length: u32::MAX });
        };
        if length > MAX_FRAME {
            return Err(ProtocolError::FrameTooLarge { length });
        }
        self.buffer[..LENGTH_LEN].copy_from_slice(&length.to_be_bytes());
        Ok(self.buffer)
    }
}

fn expect_kind(frame: &Frame<'_>, kind: u8, expected: &'static str) -> Result<(), ProtocolError> {
    if frame.kind == kind {
        Ok(())
    } else {
        Err(ProtocolError::UnexpectedType {
            kind: frame.kind,
            expected,
        })
    }
}

fn expect_hello_id(frame: &Frame<'_>) -> Result<(), ProtocolError> {
    if frame.id == 0 {
        Ok(())
    } else {
        Err(ProtocolError::Invalid {
            what: "hello request id",
            value: u64::from(frame.id),
        })
    }
}

impl ServerHello {
    /// The ServerHello frame (request id 0).
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut out = Writer::new(kind::SERVER_HELLO, 0, 128);
        out.u16(self.min_version);
        out.u16(self.max_version);
        out.bytes(
            "build version",
            self.build.version.as_bytes(),
            MAX_BUILD_VERSION,
        )?;
        out.buffer.extend_from_slice(&self.build.executable_blake3);
        out.bytes("build os", self.build.os.as_bytes(), MAX_BUILD_PLATFORM)?;
        out.bytes("build arch", self.build.arch.as_bytes(), MAX_BUILD_PLATFORM)?;
        out.finish()
    }

    pub fn decode(frame: &Frame<'_>) -> Result<ServerHello, ProtocolError> {
        expect_kind(frame, kind::SERVER_HELLO, "the agent's hello")?;
        expect_hello_id(frame)?;
        let mut input = Cursor::new(frame.payload, "server hello");
        let min_version = input.u16()?;
        let max_version = input.u16()?;
        let version = input.string("build version", MAX_BUILD_VERSION)?;
        let executable_blake3 = input.array()?;
        let os = input.string("build os", MAX_BUILD_PLATFORM)?;
        let arch = input.string("build arch", MAX_BUILD_PLATFORM)?;
        input.finish()?;
        Ok(ServerHello {
            min_version,
            max_version,
            build: BuildId {
                version,
                executable_blake3,
                os,
                arch,
            },
        })
    }
}

impl ClientHello {
    /// The ClientHello frame (request id 0).
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut out = Writer::new(kind::CLIENT_HELLO, 0, 2);
        out.u16(self.version);
        out.finish()
    }

    pub fn decode(frame: &Frame<'_>) -> Result<ClientHello, ProtocolError> {
        expect_kind(frame, kind::CLIENT_HELLO, "the client's hello")?;
        expect_hello_id(frame)?;
        let mut input = Cursor::new(frame.payload, "client hello");
        let version = input.u16()?;
        input.finish()?;
        Ok(ClientHello { version })
    }
}

fn request_id(id: u32) -> Result<u32, ProtocolError> {
    if id == 0 {
        Err(ProtocolError::Invalid {
            what: "request id",
            value: 0,
        })
    } else {
        Ok(id)
    }
}

/// A Write's frame up to its data of `length` bytes (the frame's length field counting them),
/// or why it cannot be sent (more than [`MAX_DATA`]).
fn write_head(id: u32, handle: u64, offset: u64, length: usize) -> Result<Vec<u8>, ProtocolError> {
    if length > MAX_DATA as usize {
        return Err(ProtocolError::TooLong {
            what: "write data",
            length: length as u64,
            cap: u64::from(MAX_DATA),
        });
    }
    let mut out = Writer::new(kind::WRITE, id, 20);
    out.u64(handle);
    out.u64(offset);
    // Bounded by MAX_DATA just above, so the length fits a u32.
    out.u32(length as u32);
    out.finish_before(length)
}

/// A request's frame in two parts: `head` then `data` (empty but for a Write) make the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRequest {
    pub head: Vec<u8>,
    pub data: Vec<u8>,
}

impl Request {
    /// The first protocol version with this request.
    pub fn since_version(&self) -> u16 {
        match self {
            Request::ReadFileHashed { .. } => 2,
            Request::SetFileAttributes { .. } => 3,
            _ => 1,
        }
    }

    /// The kind of response that answers this request (an Error answers any).
    pub fn response_kind(&self) -> ResponseKind {
        match self {
            Request::Stat { .. } => ResponseKind::Entry,
            Request::List { .. } => ResponseKind::EntryBatch,
            Request::ReadLink { .. } => ResponseKind::Text,
            Request::OpenRead { .. } | Request::OpenWrite { .. } => ResponseKind::Handle,
            Request::Read { .. } | Request::ReadFile { .. } => ResponseKind::Data,
            Request::Digest { .. } => ResponseKind::Hash,
            Request::BlockHashes { .. } => ResponseKind::Hashes,
            Request::ReadFileHashed { .. } => ResponseKind::HashedData,
            Request::Write { .. }
            | Request::Sync { .. }
            | Request::Close { .. }
            | Request::SetAttributes { .. }
            | Request::SetFileAttributes { .. }
            | Request::MakeDirectory { .. }
            | Request::MakeSymlink { .. }
            | Request::Remove { .. }
            | Request::Rename { .. } => ResponseKind::Done,
        }
    }

    /// The request's frame with request id `id` as [`Request::encode`] makes it, in two parts
    /// sent one after the other: a Write's data is moved in, not copied behind its fields (a
    /// copy of up to 1 MiB per block pushed).
    pub fn encode_owned(self, id: u32) -> Result<EncodedRequest, ProtocolError> {
        match self {
            Request::Write {
                handle,
                offset,
                data,
            } => Ok(EncodedRequest {
                head: write_head(request_id(id)?, handle, offset, data.len())?,
                data,
            }),
            other => Ok(EncodedRequest {
                head: other.encode(id)?,
                data: Vec::new(),
            }),
        }
    }

    /// The request's frame with request id `id` (not 0), or why it cannot be sent (a string or
    /// count over its cap).
    pub fn encode(&self, id: u32) -> Result<Vec<u8>, ProtocolError> {
        let id = request_id(id)?;
        let out = match self {
            Request::Stat { path, follow } => {
                let mut out = Writer::new(kind::STAT, id, path.len() + 5);
                out.path(path)?;
                out.flag(*follow);
                out
            }
            Request::List { path } => path_only(kind::LIST, id, path)?,
            Request::ReadLink { path } => path_only(kind::READ_LINK, id, path)?,
            Request::OpenRead { path } => path_only(kind::OPEN_READ, id, path)?,
            Request::OpenWrite { path } => path_only(kind::OPEN_WRITE, id, path)?,
            Request::Read {
                handle,
                offset,
                length,
            } => {
                if *length > MAX_DATA {
                    return Err(ProtocolError::TooLong {
                        what: "read length",
                        length: u64::from(*length),
                        cap: u64::from(MAX_DATA),
                    });
                }
                let mut out = Writer::new(kind::READ, id, 20);
                out.u64(*handle);
                out.u64(*offset);
                out.u32(*length);
                out
            }
            Request::Write {
                handle,
                offset,
                data,
            } => {
                let mut frame = write_head(id, *handle, *offset, data.len())?;
                frame.extend_from_slice(data);
                return Ok(frame);
            }
            Request::Sync { handle } => handle_only(kind::SYNC, id, *handle),
            Request::Close { handle } => handle_only(kind::CLOSE, id, *handle),
            Request::ReadFile { path, max_length } => {
                read_file(kind::READ_FILE, id, path, *max_length)?
            }
            Request::ReadFileHashed { path, max_length } => {
                read_file(kind::READ_FILE_HASHED, id, path, *max_length)?
            }
            Request::SetAttributes {
                path,
                size,
                mode,
                mtime,
            } => {
                let mut out = Writer::new(kind::SET_ATTRIBUTES, id, path.len() + 27);
                out.path(path)?;
                out.option(*size, Writer::u64);
                out.option(*mode, Writer::u32);
                out.option(*mtime, Writer::i64);
                out
            }
            Request::SetFileAttributes {
                handle,
                size,
                mode,
                mtime,
            } => {
                let mut out = Writer::new(kind::SET_FILE_ATTRIBUTES, id, 35);
                out.u64(*handle);
                out.option(*size, Writer::u64);
                out.option(*mode, Writer::u32);
                out.option(*mtime, Writer::i64);
                out
            }
            Request::MakeDirectory { path, mode } => {
                let mut out = Writer::new(kind::MAKE_DIRECTORY, id, path.len() + 8);
                out.path(path)?;
                out.u32(*mode);
                out
            }
            Request::MakeSymlink { path, target } => {
                let mut out = Writer::new(kind::MAKE_SYMLINK, id, path.len() + target.len() + 8);
                out.path(path)?;
                out.bytes("link target", target.as_bytes(), MAX_PATH)?;
                out
            }
            Request::Remove { path } => path_only(kind::REMOVE, id, path)?,
            Request::Rename { from, to } => {
                let mut out = Writer::new(kind::RENAME, id, from.len() + to.len() + 8);
                out.path(from)?;
                out.path(to)?;
                out
            }
            Request::Digest { path } => path_only(kind::DIGEST, id, path)?,
            Request::BlockHashes {
                path,
                block_size,
                first,
                count,
            } => {
                if *count > MAX_HASHES {
                    return Err(ProtocolError::TooMany {
                        what: "blocks to hash",
                        count: u64::from(*count),
                        cap: u64::from(MAX_HASHES),
                    });
                }
                let mut out = Writer::new(kind::BLOCK_HASHES, id, path.len() + 20);
                out.path(path)?;
                out.u32(*block_size);
                out.u64(*first);
                out.u32(*count);
                out
            }
        };
        out.finish()
    }

    /// Decodes a request frame, refusing anything but a request with a non-zero id and a
    /// payload exactly as its type says.
    /// [`Request::decode`] of a frame body the caller owns, with the frame's id. A Write's data
    /// is the tail of the body and is moved out of it, not copied: a push sends its data in
    /// Write requests of a block each, and copying every block into fresh memory cost the
    /// agent page faults and zeroing as well as the copy.
    pub fn decode_body(mut body: Vec<u8>) -> Result<(u32, Request), ProtocolError> {
        let (id, header) = {
            let frame = Frame::parse(&body)?;
            if frame.kind != kind::WRITE {
                return Request::decode(&frame).map(|request| (frame.id, request));
            }
            request_id(frame.id)?;
            let mut input = Cursor::new(frame.payload, "request");
            let handle = input.u64()?;
            let offset = input.u64()?;
            let length = input.bytes("write data", MAX_DATA as usize)?.len();
            input.finish()?;
            (frame.id, (handle, offset, body.len() - length))
        };
        let (handle, offset, start) = header;
        body.drain(..start);
        Ok((
            id,
            Request::Write {
                handle,
                offset,
                data: body,
            },
        ))
    }

    pub fn decode(frame: &Frame<'_>) -> Result<Request, ProtocolError> {
        request_id(frame.id)?;
        let mut input = Cursor::new(frame.payload, "request");
        let request = match frame.kind {
            kind::STAT => Request::Stat {
                path: input.path()?,
                follow: input.flag("follow flag")?,
            },
            kind::LIST => Request::List {
                path: input.path()?,
            },
            kind::READ_LINK => Request::ReadLink {
                path: input.path()?,
            },
            kind::OPEN_READ => Request::OpenRead {
                path: input.path()?,
            },
            kind::OPEN_WRITE => Request::OpenWrite {
                path: input.path()?,
            },
            kind::READ => {
                let handle = input.u64()?;
                let offset = input.u64()?;
                let length = input.u32()?;
                if length > MAX_DATA {
                    return Err(ProtocolError::TooLong {
                        what: "read length",
                        length: u64::from(length),
                        cap: u64::from(MAX_DATA),
                    });
                }
                Request::Read {
                    handle,
                    offset,
                    length,
                }
            }
            kind::WRITE => Request::Write {
                handle: input.u64()?,
                offset: input.u64()?,
                data: input.bytes("write data", MAX_DATA as usize)?.to_vec(),
            },
            kind::SYNC => Request::Sync {
                handle: input.u64()?,
            },
            kind::CLOSE => Request::Close {
                handle: input.u64()?,
            },
            kind::READ_FILE => {
                let (path, max_length) = input.read_file()?;
                Request::ReadFile { path, max_length }
            }
            kind::READ_FILE_HASHED => {
                let (path, max_length) = input.read_file()?;
                Request::ReadFileHashed { path, max_length }
            }
            kind::SET_ATTRIBUTES => Request::SetAttributes {
                path: input.path()?,
                size: input.option(Cursor::u64)?,
                mode: input.option(Cursor::u32)?,
                mtime: input.option(Cursor::i64)?,
            },
            kind::SET_FILE_ATTRIBUTES => Request::SetFileAttributes {
                handle: input.u64()?,
                size: input.option(Cursor::u64)?,
                mode: input.option(Cursor::u32)?,
                mtime: input.option(Cursor::i64)?,
            },
            kind::MAKE_DIRECTORY => Request::MakeDirectory {
                path: input.path()?,
                mode: input.u32()?,
            },
            kind::MAKE_SYMLINK => Request::MakeSymlink {
                path: input.path()?,
                target: input.string("link target", MAX_PATH)?,
            },
            kind::REMOVE => Request::Remove {
                path: input.path()?,
            },
            kind::RENAME => Request::Rename {
                from: input.path()?,
                to: input.path()?,
            },
            kind::DIGEST => Request::Digest {
                path: input.path()?,
            },
            kind::BLOCK_HASHES => {
                let path = input.path()?;
                let block_size = input.u32()?;
                let first = input.u64()?;
                let count = input.u32()?;
                if count > MAX_HASHES {
                    return Err(ProtocolError::TooMany {
                        what: "blocks to hash",
                        count: u64::from(count),
                        cap: u64::from(MAX_HASHES),
                    });
                }
                Request::BlockHashes {
                    path,
                    block_size,
                    first,
                    count,
                }
            }
            other => return Err(ProtocolError::UnknownType(other)),
        };
        input.finish()?;
        Ok(request)
    }
}

fn path_only(kind: u8, id: u32, path: &str) -> Result<Writer, ProtocolError> {
    let mut out = Writer::new(kind, id, path.len() + 4);
    out.path(path)?;
    Ok(out)
}

fn read_file(kind: u8, id: u32, path: &str, max_length: u32) -> Result<Writer, ProtocolError> {
    if max_length > MAX_DATA {
        return Err(ProtocolError::TooLong {
            what: "read-file maximum length",
            length: u64::from(max_length),
            cap: u64::from(MAX_DATA),
        });
    }
    let mut out = Writer::new(kind, id, path.len() + 8);
    out.path(path)?;
    out.u32(max_length);
    Ok(out)
}

fn handle_only(kind: u8, id: u32, handle: u64) -> Writer {
    let mut out = Writer::new(kind, id, 8);
    out.u64(handle);
    out
}

impl Response {
    pub fn kind(&self) -> ResponseKind {
        match self {
            Response::Entry(_) => ResponseKind::Entry,
            Response::EntryBatch { .. } => ResponseKind::EntryBatch,
            Response::Text(_) => ResponseKind::Text,
            Response::Handle(_) => ResponseKind::Handle,
            Response::Data(_) => ResponseKind::Data,
            Response::Done => ResponseKind::Done,
            Response::Hash(_) => ResponseKind::Hash,
            Response::Hashes(_) => ResponseKind::Hashes,
            Response::HashedData { .. } => ResponseKind::HashedData,
            Response::Error { .. } => ResponseKind::Error,
        }
    }

    /// The response's frame with request id `id` (0 only for Error), or why it cannot be sent
    /// (a string or count over its cap, or a batch of entries too large for one frame).
    pub fn encode(&self, id: u32) -> Result<Vec<u8>, ProtocolError> {
        if !matches!(self, Response::Error { .. }) {
            request_id(id)?;
        }
        let out = match self {
            Response::Entry(entry) => {
                let mut out = Writer::new(kind::ENTRY, id, 64);
                match entry {
                    Some(entry) => {
                        out.flag(true);
                        out.entry(entry)?;
                    }
                    None => out.flag(false),
                }
                out
            }
            Response::EntryBatch { entries, last } => {
                let mut out = Writer::new(kind::ENTRY_BATCH, id, entries.len() * 48 + 5);
                out.count("entries in a batch", entries.len(), MAX_LIST_BATCH)?;
                for entry in entries {
                    out.entry(entry)?;
                }
                out.flag(*last);
                out
            }
            Response::Text(text) => {
                let mut out = Writer::new(kind::TEXT, id, text.len() + 4);
                out.bytes("link target", text, MAX_PATH)?;
                out
            }
            Response::Handle(handle) => handle_only(kind::HANDLE, id, *handle),
            Response::Data(data) => {
                let mut out = Writer::new(kind::DATA, id, data.len() + 4);
                out.bytes("data", data, MAX_DATA as usize)?;
                out
            }
            Response::Done => Writer::new(kind::DONE, id, 0),
            Response::Hash(hash) => {
                let mut out = Writer::new(kind::HASH, id, 32);
                out.buffer.extend_from_slice(hash);
                out
            }
            Response::Hashes(hashes) => {
                let mut out = Writer::new(kind::HASHES, id, hashes.len() * 32 + 4);
                out.count("hashes", hashes.len(), MAX_HASHES as usize)?;
                for hash in hashes {
                    out.buffer.extend_from_slice(hash);
                }
                out
            }
            Response::HashedData { hash, data } => {
                let mut out = Writer::new(kind::HASHED_DATA, id, data.len() + 36);
                out.buffer.extend_from_slice(hash);
                out.bytes("data", data, MAX_DATA as usize)?;
                out
            }
            Response::Error { code, message } => {
                let mut out = Writer::new(kind::ERROR, id, message.len() + 5);
                out.u8(*code as u8);
                out.bytes("error message", message.as_bytes(), MAX_MESSAGE)?;
                out
            }
        };
        out.finish()
    }

    /// Decodes a response frame. Request id 0 is accepted only for Error.
    /// [`Response::decode`] of a frame body the caller owns, with the frame's id; a Data
    /// answer's bytes are moved out of the body, not copied (see [`Request::decode_body`]).
    pub fn decode_body(mut body: Vec<u8>) -> Result<(u32, Response), ProtocolError> {
        let (id, start) = {
            let frame = Frame::parse(&body)?;
            if frame.kind != kind::DATA {
                return Response::decode(&frame).map(|response| (frame.id, response));
            }
            request_id(frame.id)?;
            let mut input = Cursor::new(frame.payload, "response");
            let length = input.bytes("data", MAX_DATA as usize)?.len();
            input.finish()?;
            (frame.id, body.len() - length)
        };
        body.drain(..start);
        Ok((id, Response::Data(body)))
    }

    pub fn decode(frame: &Frame<'_>) -> Result<Response, ProtocolError> {
        if frame.kind != kind::ERROR {
            request_id(frame.id)?;
        }
        let mut input = Cursor::new(frame.payload, "response");
        let response = match frame.kind {
            kind::ENTRY => Response::Entry(input.option(Cursor::entry)?),
            kind::ENTRY_BATCH => {
                let count = input.count("entries in a batch", MAX_LIST_BATCH)?;
                // An entry takes at least 29 bytes: never reserve more than the payload holds.
                let mut entries = Vec::with_capacity(count.min(input.rest.len() / 29));
                for _ in 0..count {
                    entries.push(input.entry()?);
                }
                Response::EntryBatch {
                    entries,
                    last: input.flag("last flag")?,
                }
            }
            kind::TEXT => Response::Text(input.bytes("link target", MAX_PATH)?.to_vec()),
            kind::HANDLE => Response::Handle(input.u64()?),
            kind::DATA => Response::Data(input.bytes("data", MAX_DATA as usize)?.to_vec()),
            kind::DONE => Response::Done,
            kind::HASH => Response::Hash(input.array()?),
            kind::HASHES => {
                let count = input.count("hashes", MAX_HASHES as usize)?;
                if input.rest.len() < count * 32 {
                    return Err(ProtocolError::Truncated { what: "response" });
                }
                let mut hashes = Vec::with_capacity(count);
                for _ in 0..count {
                    hashes.push(input.array()?);
                }
                Response::Hashes(hashes)
            }
            kind::HASHED_DATA => Response::HashedData {
                hash: input.array()?,
                data: input.bytes("data", MAX_DATA as usize)?.to_vec(),
            },
            kind::ERROR => {
                let byte = input.u8()?;
                let code = ErrorCode::from_byte(byte).ok_or(ProtocolError::Invalid {
                    what: "error code",
                    value: u64::from(byte),
                })?;
                Response::Error {
                    code,
                    message: input.string("error message", MAX_MESSAGE)?,
                }
            }
            other => return Err(ProtocolError::UnknownType(other)),
        };
        input.finish()?;
        Ok(response)
    }
}

/// The greeting of an agent speaking versions `min_version..=max_version`: the magic and a
/// ServerHello with a placeholder build. For tests of how clients meet other agents.
#[doc(hidden)]
pub fn test_server_hello(min_version: u16, max_version: u16) -> Vec<u8> {
    let hello = ServerHello {
        min_version,
        max_version,
        build: BuildId {
            version: "0.0.0-test".to_string(),
            executable_blake3: [0; 32],
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
        },
    };
    let mut greeting = MAGIC.to_vec();
    // A fixed hello well under every cap always encodes.
    if let Ok(frame) = hello.encode() {
        greeting.extend_from_slice(&frame);
    }
    greeting
}

/// `message` cut to at most [`MAX_MESSAGE`] bytes, at a character boundary.
pub fn cap_message(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn body(frame: &[u8]) -> &[u8] {
        &frame[LENGTH_LEN..]
    }

    fn decode_request(bytes: &[u8]) -> Result<Request, ProtocolError> {
        Request::decode(&Frame::parse(body(bytes))?)
    }

    fn decode_response(bytes: &[u8]) -> Result<Response, ProtocolError> {
        Response::decode(&Frame::parse(body(bytes))?)
    }

    /// A frame with the given type, id and raw payload, length field included.
    fn raw_frame(kind: u8, id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Writer::new(kind, id, payload.len());
        out.buffer.extend_from_slice(payload);
        out.finish().expect("small frame")
    }

    fn text(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>(), 0..max)
            .prop_map(|chars| chars.into_iter().collect::<String>())
            .prop_filter("within the path cap", |text| text.len() <= MAX_PATH)
    }

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..max)
    }

    fn entry() -> impl Strategy<Value = Entry> {
        (
            bytes(64),
            0u8..4,
            any::<u64>(),
            any::<i64>(),
            0u32..1_000_000_000,
            0u32..=0o7777,
        )
            .prop_map(|(name, kind, size, mtime, mtime_nanoseconds, mode)| Entry {
                name,
                kind: [
                    EntryKind::File,
                    EntryKind::Directory,
                    EntryKind::Symlink,
                    EntryKind::Special,
                ][kind as usize],
                size,
                mtime,
                mtime_nanoseconds,
                mode,
            })
    }

    fn error_code() -> impl Strategy<Value = ErrorCode> {
        (1u8..=8).prop_map(|byte| ErrorCode::from_byte(byte).expect("valid code"))
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            (text(40), any::<bool>()).prop_map(|(path, follow)| Request::Stat { path, follow }),
            text(40).prop_map(|path| Request::List { path }),
            text(40).prop_map(|path| Request::ReadLink { path }),
            text(40).prop_map(|path| Request::OpenRead { path }),
            text(40).prop_map(|path| Request::OpenWrite { path }),
            (any::<u64>(), any::<u64>(), 0..=MAX_DATA).prop_map(|(handle, offset, length)| {
                Request::Read {
                    handle,
                    offset,
                    length,
                }
            }),
            (any::<u64>(), any::<u64>(), bytes(300)).prop_map(|(handle, offset, data)| {
                Request::Write {
                    handle,
                    offset,
                    data,
                }
            }),
            any::<u64>().prop_map(|handle| Request::Sync { handle }),
            any::<u64>().prop_map(|handle| Request::Close { handle }),
            (text(40), 0..=MAX_DATA)
                .prop_map(|(path, max_length)| Request::ReadFile { path, max_length }),
            (text(40), 0..=MAX_DATA)
                .prop_map(|(path, max_length)| Request::ReadFileHashed { path, max_length }),
            (
                any::<u64>(),
                any::<Option<u64>>(),
                any::<Option<u32>>(),
                any::<Option<i64>>()
            )
                .prop_map(|(handle, size, mode, mtime)| Request::SetFileAttributes {
                    handle,
                    size,
                    mode,
                    mtime,
                }),
            (
                text(40),
                any::<Option<u64>>(),
                any::<Option<u32>>(),
                any::<Option<i64>>()
            )
                .prop_map(|(path, size, mode, mtime)| Request::SetAttributes {
                    path,
                    size,
                    mode,
                    mtime,
                }),
            (text(40), any::<u32>()).prop_map(|(path, mode)| Request::MakeDirectory { path, mode }),
            (text(40), text(40)).prop_map(|(path, target)| Request::MakeSymlink { path, target }),
            text(40).prop_map(|path| Request::Remove { path }),
            (text(40), text(40)).prop_map(|(from, to)| Request::Rename { from, to }),
            text(40).prop_map(|path| Request::Digest { path }),
            (text(40), any::<u32>(), any::<u64>(), 0..=MAX_HASHES).prop_map(
                |(path, block_size, first, count)| Request::BlockHashes {
                    path,
                    block_size,
                    first,
                    count,
                }
            ),
        ]
    }

    fn response() -> impl Strategy<Value = Response> {
        prop_oneof![
            proptest::option::of(entry()).prop_map(Response::Entry),
            (proptest::collection::vec(entry(), 0..20), any::<bool>())
                .prop_map(|(entries, last)| Response::EntryBatch { entries, last }),
            bytes(100).prop_map(Response::Text),
            any::<u64>().prop_map(Response::Handle),
            bytes(500).prop_map(Response::Data),
            Just(Response::Done),
            any::<[u8; 32]>().prop_map(Response::Hash),
            proptest::collection::vec(any::<[u8; 32]>(), 0..40).prop_map(Response::Hashes),
            (any::<[u8; 32]>(), bytes(500))
                .prop_map(|(hash, data)| Response::HashedData { hash, data }),
            (error_code(), text(60).prop_map(cap_message))
                .prop_map(|(code, message)| Response::Error { code, message }),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(request in request(), id in 1u32..) {
            let frame = request.encode(id).expect("encodable");
            let (split, used) = Frame::split(&frame).expect("valid").expect("whole");
            prop_assert_eq!(used, frame.len());
            prop_assert_eq!(split.id, id);
            prop_assert_eq!(Request::decode(&split).expect("decodes"), request.clone());
            // The frame in two parts is the same bytes.
            let parts = request.clone().encode_owned(id).expect("encodable");
            prop_assert_eq!([parts.head, parts.data].concat(), frame.clone());
            // Decoding an owned body (a Write's data moved out of it) gives the same.
            prop_assert_eq!(
                Request::decode_body(frame[LENGTH_LEN..].to_vec()),
                Ok((id, request.clone()))
            );
            // A request is never mistaken for a response or a hello.
            prop_assert!(Response::decode(&split).is_err());
            prop_assert!(ClientHello::decode(&split).is_err());
            // Every proper prefix is incomplete, never a frame.
            for cut in [0, 1, 3, 4, frame.len() / 2, frame.len() - 1] {
                prop_assert_eq!(Frame::split(&frame[..cut]), Ok(None));
            }
            prop_assert_ne!(request.response_kind(), ResponseKind::Error);
        }

        #[test]
        fn responses_round_trip(response in response(), id in 1u32..) {
            let frame = response.encode(id).expect("encodable");
            let (split, used) = Frame::split(&frame).expect("valid").expect("whole");
            prop_assert_eq!(used, frame.len());
            let decoded = Response::decode(&split).expect("decodes");
            prop_assert_eq!(decoded.kind(), response.kind());
            prop_assert_eq!(decoded, response.clone());
            prop_assert_eq!(
                Response::decode_body(frame[LENGTH_LEN..].to_vec()),
                Ok((id, response.clone()))
            );
            prop_assert!(Request::decode(&split).is_err());
            prop_assert!(ServerHello::decode(&split).is_err());
        }

        #[test]
        fn hellos_round_trip(
            min_version in any::<u16>(),
            max_version in any::<u16>(),
            version in "[0-9a-z.+-]{0,64}",
            executable_blake3 in any::<[u8; 32]>(),
            os in "[a-z0-9_]{0,32}",
            arch in "[a-z0-9_]{0,32}",
        ) {
            let hello = ServerHello {
                min_version,
                max_version,
                build: BuildId { version, executable_blake3, os, arch },
            };
            let frame = hello.encode().expect("encodable");
            let (split, _) = Frame::split(&frame).expect("valid").expect("whole");
            prop_assert_eq!(ServerHello::decode(&split).expect("decodes"), hello);
            let client = ClientHello { version: min_version };
            let frame = client.encode().expect("encodable");
            prop_assert_eq!(decode_client_hello(&frame), Ok(client));
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in bytes(200)) {
            let _ = Frame::split(&data);
            if let Ok(frame) = Frame::parse(&data) {
                if let Ok(request) = Request::decode(&frame) {
                    // Decoding is canonical: only the encoding of a request decodes to it.
                    let encoded = request.encode(frame.id).expect("re-encodes");
                    prop_assert_eq!(&encoded[LENGTH_LEN..], &data[..]);
                }
                if let Ok(response) = Response::decode(&frame) {
                    let encoded = response.encode(frame.id).expect("re-encodes");
                    prop_assert_eq!(&encoded[LENGTH_LEN..], &data[..]);
                }
            }
        }
    }

    fn decode_client_hello(bytes: &[u8]) -> Result<ClientHello, ProtocolError> {
        ClientHello::decode(&Frame::parse(body(bytes))?)
    }

    #[test]
    fn versions_meet_at_the_highest_common() {
        assert_eq!(choose_version((1, 3), (1, 2)), Some(2));
        assert_eq!(choose_version((1, 1), (1, 1)), Some(1));
        assert_eq!(choose_version((2, 5), (1, 3)), Some(3));
        assert_eq!(choose_version((3, 4), (1, 2)), None);
        assert_eq!(choose_version((2, 1), (1, 2)), None);
    }

    #[test]
    fn oversized_lengths_are_refused_from_the_prefix_alone() {
        for length in [MAX_FRAME + 1, u32::MAX] {
            let prefix = length.to_be_bytes();
            assert_eq!(
                frame_length(prefix),
                Err(ProtocolError::FrameTooLarge { length })
            );
            // Only the length field is there: refused before anything else is needed.
            assert_eq!(
                Frame::split(&prefix),
                Err(ProtocolError::FrameTooLarge { length })
            );
        }
        assert_eq!(
            frame_length(MAX_FRAME.to_be_bytes()),
            Ok(MAX_FRAME as usize)
        );
        for length in 0..FRAME_HEADER_LEN as u32 {
            assert_eq!(
                frame_length(length.to_be_bytes()),
                Err(ProtocolError::FrameTooShort { length })
            );
        }
        // The largest data fits a frame; one byte more does not encode.
        let data = vec![7u8; MAX_DATA as usize];
        let frame = Response::Data(data.clone()).encode(1).expect("fits");
        assert_eq!(decode_response(&frame), Ok(Response::Data(data)));
        let mut data = vec![7u8; MAX_DATA as usize + 1];
        assert!(Response::Data(data.clone()).encode(1).is_err());
        data.pop();
        assert!(
            Request::Write {
                handle: 1,
                offset: 0,
                data
            }
            .encode(1)
            .is_ok()
        );
    }

    #[test]
    fn truncated_and_trailing_payloads_are_refused() {
        let request = Request::Rename {
            from: "a".into(),
            to: "bc".into(),
        };
        let frame = request.encode(9).expect("encodable");
        let whole = body(&frame);
        for cut in FRAME_HEADER_LEN..whole.len() {
            let frame = Frame::parse(&whole[..cut]).expect("header is there");
            assert_eq!(
                Request::decode(&frame),
                Err(ProtocolError::Truncated { what: "request" })
            );
        }
        let mut longer = whole.to_vec();
        longer.push(0);
        assert_eq!(
            Request::decode(&Frame::parse(&longer).expect("frame")),
            Err(ProtocolError::TrailingBytes {
                what: "request",
                count: 1
            })
        );
        let mut payload = Response::Done.encode(3).expect("encodable");
        payload.push(1);
        payload[..4].copy_from_slice(&6u32.to_be_bytes());
        assert_eq!(
            decode_response(&payload),
            Err(ProtocolError::TrailingBytes {
                what: "response",
                count: 1
            })
        );
        // A hashes frame claiming more hashes than it holds.
        let mut payload = 3u32.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0; 64]);
        assert_eq!(
            decode_response(&raw_frame(kind::HASHES, 1, &payload)),
            Err(ProtocolError::Truncated { what: "response" })
        );
    }

    #[test]
    fn bad_types_flags_and_ids_are_refused() {
        assert_eq!(
            decode_request(&raw_frame(0x55, 1, &[])),
            Err(ProtocolError::UnknownType(0x55))
        );
        assert_eq!(
            decode_response(&raw_frame(kind::STAT, 1, &[])),
            Err(ProtocolError::UnknownType(kind::STAT))
        );
        assert!(decode_request(&raw_frame(kind::DONE, 1, &[])).is_err());
        // Request id 0 is reserved.
        assert!(decode_request(&raw_frame(kind::SYNC, 0, &[0; 8])).is_err());
        assert!(decode_response(&raw_frame(kind::DONE, 0, &[])).is_err());
        assert!(
            decode_response(&raw_frame(kind::ERROR, 0, &[6, 0, 0, 0, 1, b'x'])).is_ok(),
            "a protocol-level error uses id 0"
        );
        assert!(Request::Sync { handle: 1 }.encode(0).is_err());
        // Flags are 0 or 1.
        let mut stat = Request::Stat {
            path: "x".into(),
            follow: true,
        }
        .encode(1)
        .expect("encodable");
        *stat.last_mut().expect("flag") = 2;
        assert_eq!(
            decode_request(&stat),
            Err(ProtocolError::Invalid {
                what: "follow flag",
                value: 2
            })
        );
        // Unknown error codes and entry kinds.
        assert!(decode_response(&raw_frame(kind::ERROR, 1, &[9, 0, 0, 0, 0])).is_err());
        assert!(decode_response(&raw_frame(kind::ERROR, 1, &[0, 0, 0, 0, 0])).is_err());
        let entry = Entry {
            name: b"n".to_vec(),
            kind: EntryKind::File,
            size: 1,
            mtime: 2,
            mtime_nanoseconds: 3,
            mode: 0o644,
        };
        let mut frame = Response::Entry(Some(entry.clone()))
            .encode(1)
            .expect("encodable");
        // The kind byte follows the option flag and the 5-byte name.
        frame[LENGTH_LEN + FRAME_HEADER_LEN + 1 + 5] = 4;
        assert_eq!(
            decode_response(&frame),
            Err(ProtocolError::Invalid {
                what: "entry kind",
                value: 4
            })
        );
        for bad in [
            Entry {
                mtime_nanoseconds: 1_000_000_000,
                ..entry.clone()
            },
            Entry {
                mode: 0o10000,
                ..entry.clone()
            },
        ] {
            assert!(Response::Entry(Some(bad)).encode(1).is_err());
        }
        // Strings that must be UTF-8.
        let mut payload = 1u32.to_be_bytes().to_vec();
        payload.push(0xff);
        assert_eq!(
            decode_request(&raw_frame(kind::LIST, 1, &payload)),
            Err(ProtocolError::NotUtf8 { what: "path" })
        );
        // A hello with a request id.
        let mut hello = ClientHello { version: 1 }.encode().expect("encodable");
        hello[8] = 1;
        assert!(decode_client_hello(&hello).is_err());
    }

    #[test]
    fn counts_and_strings_over_their_caps_are_refused() {
        // Caps are checked on the announced length, before the bytes are looked for.
        let over = |cap: usize| (cap as u32 + 1).to_be_bytes().to_vec();
        assert_eq!(
            decode_request(&raw_frame(kind::LIST, 1, &over(MAX_PATH))),
            Err(ProtocolError::TooLong {
                what: "path",
                length: MAX_PATH as u64 + 1,
                cap: MAX_PATH as u64
            })
        );
        assert!(matches!(
            decode_response(&raw_frame(
                kind::ERROR,
                1,
                &[[1].as_slice(), &over(MAX_MESSAGE)].concat()
            )),
            Err(ProtocolError::TooLong {
                what: "error message",
                ..
            })
        ));
        assert!(matches!(
            decode_response(&raw_frame(kind::ENTRY_BATCH, 1, &over(MAX_LIST_BATCH))),
            Err(ProtocolError::TooMany {
                what: "entries in a batch",
                ..
            })
        ));
        assert!(matches!(
            decode_response(&raw_frame(kind::HASHES, 1, &over(MAX_HASHES as usize))),
            Err(ProtocolError::TooMany { what: "hashes", .. })
        ));
        assert!(matches!(
            decode_response(&raw_frame(kind::DATA, 1, &over(MAX_DATA as usize))),
            Err(ProtocolError::TooLong { what: "data", .. })
        ));
        assert!(matches!(
            decode_response(&raw_frame(kind::TEXT, 1, &over(MAX_PATH))),
            Err(ProtocolError::TooLong {
                what: "link target",
                ..
            })
        ));
        let mut read = vec![0u8; 16];
        read.extend_from_slice(&(MAX_DATA + 1).to_be_bytes());
        assert!(matches!(
            decode_request(&raw_frame(kind::READ, 1, &read)),
            Err(ProtocolError::TooLong {
                what: "read length",
                ..
            })
        ));
        let mut hashes = 0u32.to_be_bytes().to_vec();
        hashes.extend_from_slice(&4096u32.to_be_bytes());
        hashes.extend_from_slice(&0u64.to_be_bytes());
        hashes.extend_from_slice(&(MAX_HASHES + 1).to_be_bytes());
        assert!(matches!(
            decode_request(&raw_frame(kind::BLOCK_HASHES, 1, &hashes)),
            Err(ProtocolError::TooMany {
                what: "blocks to hash",
                ..
            })
        ));
        let mut hello = [1u16.to_be_bytes(), 1u16.to_be_bytes()].concat();
        hello.extend_from_slice(&over(MAX_BUILD_VERSION));
        assert!(
            ServerHello::decode(&Frame {
                kind: kind::SERVER_HELLO,
                id: 0,
                payload: &hello
            })
            .is_err()
        );
        // And the encoders refuse what the decoders would.
        let long = "x".repeat(MAX_PATH + 1);
        assert!(Request::List { path: long.clone() }.encode(1).is_err());
        assert!(
            Request::List {
                path: long[1..].to_string()
            }
            .encode(1)
            .is_ok()
        );
        assert!(
            Response::Error {
                code: ErrorCode::Other,
                message: "x".repeat(MAX_MESSAGE + 1)
            }
            .encode(1)
            .is_err()
        );
        assert_eq!(cap_message("é".repeat(MAX_MESSAGE)).len(), MAX_MESSAGE);
        assert!(
            Response::Hashes(vec![[0; 32]; MAX_HASHES as usize + 1])
                .encode(1)
                .is_err()
        );
        assert!(
            Response::Hashes(vec![[0; 32]; MAX_HASHES as usize])
                .encode(1)
                .is_ok()
        );
        // The largest batch the caps allow fits one frame.
        let entry = Entry {
            name: vec![b'n'; MAX_NAME],
            kind: EntryKind::File,
            size: 0,
            mtime: 0,
            mtime_nanoseconds: 0,
            mode: 0,
        };
        let largest = Response::EntryBatch {
            entries: vec![entry; MAX_LIST_BATCH],
            last: true,
        };
        let frame = largest.encode(1).expect("the largest batch fits a frame");
        assert_eq!(decode_response(&frame), Ok(largest));
    }

    /// A frame answering a List with one entry named `name` (nothing checked on the way out).
    fn batch_of_one(name: &[u8]) -> Vec<u8> {
        let mut payload = 1u32.to_be_bytes().to_vec();
        payload.extend_from_slice(&(name.len() as u32).to_be_bytes());
        payload.extend_from_slice(name);
        // File kind, size, mtime, nanoseconds, mode; then the last flag.
        payload.push(0);
        payload.extend_from_slice(&[0; 8 + 8 + 4]);
        payload.extend_from_slice(&0o644u32.to_be_bytes());
        payload.push(1);
        raw_frame(kind::ENTRY_BATCH, 1, &payload)
    }

    #[test]
    fn entry_names_are_capped_at_one_path_component() {
        // 255 bytes, NAME_MAX, is a name; one more is a protocol error, in a batch or alone.
        let longest = vec![b'n'; MAX_NAME];
        match decode_response(&batch_of_one(&longest)) {
            Ok(Response::EntryBatch { entries, last }) => {
                assert!(last);
                assert_eq!(entries.len(), 1);
                assert_eq!(entries[0].name, longest);
            }
            other => panic!("a {MAX_NAME}-byte name is refused: {other:?}"),
        }
        let over = vec![b'n'; MAX_NAME + 1];
        let too_long = ProtocolError::TooLong {
            what: "entry name",
            length: MAX_NAME as u64 + 1,
            cap: MAX_NAME as u64,
        };
        assert_eq!(decode_response(&batch_of_one(&over)), Err(too_long.clone()));
        // The cap is checked on the announced length, before the bytes are looked for.
        let mut announced = batch_of_one(b"");
        let at = LENGTH_LEN + FRAME_HEADER_LEN + 4;
        announced[at..at + 4].copy_from_slice(&(MAX_PATH as u32).to_be_bytes());
        assert!(matches!(
            decode_response(&announced),
            Err(ProtocolError::TooLong {
                what: "entry name",
                ..
            })
        ));
        // A Stat answer's entry has the same cap, and the encoders refuse what is refused.
        let entry = |name: Vec<u8>| Entry {
            name,
            kind: EntryKind::Directory,
            size: 0,
            mtime: 0,
            mtime_nanoseconds: 0,
            mode: 0o755,
        };
        let frame = Response::Entry(Some(entry(longest.clone())))
            .encode(1)
            .expect("a name of NAME_MAX bytes encodes");
        assert_eq!(
            decode_response(&frame),
            Ok(Response::Entry(Some(entry(longest))))
        );
        assert_eq!(
            Response::Entry(Some(entry(over.clone()))).encode(1).err(),
            Some(too_long)
        );
        assert!(
            Response::EntryBatch {
                entries: vec![entry(over)],
                last: true
            }
            .encode(1)
            .is_err()
        );
    }
}
