//! Responses, agent to client: [`Response`], one variant per message type, with the
//! [`Entry`] a Stat or List describes and the [`ErrorCode`] an Error carries; their encoding and
//! decoding (a Data answer's bytes moved out of an owned body, never copied). Every name, count,
//! message and length is checked against its cap on the way in and on the way out.

use super::frame::{
    Cursor, EncodedFrame, Frame, FrameBody, MAX_DATA, ProtocolError, Writer, request_id,
};
use super::kind;
use super::requests::{MAX_HASHES, MAX_PATH};

/// What kind of filesystem object an [`Entry`] is: the engine's own kinds.
pub use crate::remote::EntryKind;

/// The longest entry name, in bytes: one path component, at most Linux's `NAME_MAX`. A listing
/// holds up to millions of names, so their cap, not the path cap, decides what one costs.
pub const MAX_NAME: usize = 255;
/// The longest error message, in bytes.
pub const MAX_MESSAGE: usize = 1024;
/// The most entries in one EntryBatch frame.
pub const MAX_LIST_BATCH: usize = 4096;

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
    pub(super) fn from_byte(byte: u8) -> Option<ErrorCode> {
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
    /// Answers ReadFileHashed and ReadHashed: the block hash of `data`, and `data`.
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

/// Refuses file data over [`MAX_DATA`], as [`Writer::bytes`] does.
fn check_data(data: &[u8]) -> Result<(), ProtocolError> {
    if data.len() > MAX_DATA as usize {
        return Err(ProtocolError::TooLong {
            what: "data",
            length: data.len() as u64,
            cap: u64::from(MAX_DATA),
        });
    }
    Ok(())
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

    /// The response's frame with request id `id` as [`Response::encode`] makes it, in two
    /// parts sent one after the other: the data of a Data or HashedData answer is moved in, not
    /// copied behind its fields (a copy of up to 1 MiB per block pulled).
    pub fn encode_owned(self, id: u32) -> Result<EncodedFrame, ProtocolError> {
        let (head, data) = match self {
            Response::Data(data) => {
                check_data(&data)?;
                let out = Writer::new(kind::DATA, request_id(id)?, 4);
                (out, data)
            }
            Response::HashedData { hash, data } => {
                check_data(&data)?;
                let mut out = Writer::new(kind::HASHED_DATA, request_id(id)?, 36);
                out.raw(&hash);
                (out, data)
            }
            other => {
                return Ok(EncodedFrame {
                    head: other.encode(id)?,
                    data: Vec::new(),
                });
            }
        };
        let mut head = head;
        // Checked against MAX_DATA just above, so the length fits a u32.
        head.u32(data.len() as u32);
        Ok(EncodedFrame {
            head: head.finish_before(data.len())?,
            data,
        })
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
                        write_entry(&mut out, entry)?;
                    }
                    None => out.flag(false),
                }
                out
            }
            Response::EntryBatch { entries, last } => {
                let mut out = Writer::new(kind::ENTRY_BATCH, id, entries.len() * 48 + 5);
                out.count("entries in a batch", entries.len(), MAX_LIST_BATCH)?;
                for entry in entries {
                    write_entry(&mut out, entry)?;
                }
                out.flag(*last);
                out
            }
            Response::Text(text) => {
                let mut out = Writer::new(kind::TEXT, id, text.len() + 4);
                out.bytes("link target", text, MAX_PATH)?;
                out
            }
            Response::Handle(handle) => Writer::single_u64(kind::HANDLE, id, *handle),
            Response::Data(data) => {
                let mut out = Writer::new(kind::DATA, id, data.len() + 4);
                out.bytes("data", data, MAX_DATA as usize)?;
                out
            }
            Response::Done => Writer::new(kind::DONE, id, 0),
            Response::Hash(hash) => {
                let mut out = Writer::new(kind::HASH, id, 32);
                out.raw(hash);
                out
            }
            Response::Hashes(hashes) => {
                let mut out = Writer::new(kind::HASHES, id, hashes.len() * 32 + 4);
                out.count("hashes", hashes.len(), MAX_HASHES as usize)?;
                for hash in hashes {
                    out.raw(hash);
                }
                out
            }
            Response::HashedData { hash, data } => {
                let mut out = Writer::new(kind::HASHED_DATA, id, data.len() + 36);
                out.raw(hash);
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

    /// Decodes a frame body as a reader gave it: the file data of a Data or HashedData answer,
    /// read into a buffer of its own ([`FrameBody::bulk`]), becomes the answer's data without
    /// being moved. Returns the frame's id with the response.
    pub fn decode_parts(body: FrameBody) -> Result<(u32, Response), ProtocolError> {
        if body.bulk.is_empty() {
            let frame = Frame::parse(&body.head)?;
            return Response::decode(&frame).map(|response| (frame.id, response));
        }
        let (id, hash) = {
            let frame = Frame::parse(&body.head)?;
            if frame.kind != kind::DATA && frame.kind != kind::HASHED_DATA {
                let whole = body.into_whole();
                let frame = Frame::parse(&whole)?;
                return Response::decode(&frame).map(|response| (frame.id, response));
            }
            request_id(frame.id)?;
            let mut input = Cursor::new(frame.payload, "response");
            let hash = if frame.kind == kind::HASHED_DATA {
                Some(input.array::<32>()?)
            } else {
                None
            };
            input.bulk_length("data", &body.bulk, MAX_DATA as usize)?;
            input.finish()?;
            (frame.id, hash)
        };
        let data = body.bulk;
        Ok((
            id,
            match hash {
                Some(hash) => Response::HashedData { hash, data },
                None => Response::Data(data),
            },
        ))
    }

    /// Decodes a response frame. Request id 0 is accepted only for Error.
    pub fn decode(frame: &Frame<'_>) -> Result<Response, ProtocolError> {
        if frame.kind != kind::ERROR {
            request_id(frame.id)?;
        }
        let mut input = Cursor::new(frame.payload, "response");
        let response = match frame.kind {
            kind::ENTRY => Response::Entry(input.option(read_entry)?),
            kind::ENTRY_BATCH => {
                let count = input.count("entries in a batch", MAX_LIST_BATCH)?;
                // An entry takes at least 29 bytes: never reserve more than the payload holds.
                let mut entries = Vec::with_capacity(count.min(input.remaining() / 29));
                for _ in 0..count {
                    entries.push(read_entry(&mut input)?);
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
                if input.remaining() < count * 32 {
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

/// An entry: name (≤ [`MAX_NAME`]), kind, size, mtime, nanoseconds (< 10⁹), mode (≤ 0o7777).
fn read_entry(input: &mut Cursor<'_>) -> Result<Entry, ProtocolError> {
    let name = input.bytes("entry name", MAX_NAME)?.to_vec();
    let kind = match input.u8()? {
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
    let size = input.u64()?;
    let mtime = input.i64()?;
    let mtime_nanoseconds = input.u32()?;
    if mtime_nanoseconds >= 1_000_000_000 {
        return Err(ProtocolError::Invalid {
            what: "mtime nanoseconds",
            value: u64::from(mtime_nanoseconds),
        });
    }
    let mode = input.u32()?;
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

fn write_entry(out: &mut Writer, entry: &Entry) -> Result<(), ProtocolError> {
    out.bytes("entry name", &entry.name, MAX_NAME)?;
    out.u8(match entry.kind {
        EntryKind::File => 0,
        EntryKind::Directory => 1,
        EntryKind::Symlink => 2,
        EntryKind::Special => 3,
    });
    out.u64(entry.size);
    out.i64(entry.mtime);
    if entry.mtime_nanoseconds >= 1_000_000_000 {
        return Err(ProtocolError::Invalid {
            what: "mtime nanoseconds",
            value: u64::from(entry.mtime_nanoseconds),
        });
    }
    out.u32(entry.mtime_nanoseconds);
    if entry.mode > 0o7777 {
        return Err(ProtocolError::Invalid {
            what: "entry mode",
            value: u64::from(entry.mode),
        });
    }
    out.u32(entry.mode);
    Ok(())
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
