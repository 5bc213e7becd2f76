//! Requests, client to agent: [`Request`], one variant per message type, its encoding (in one
//! piece, or in two for a Write so its data is never copied, [`EncodedFrame`]) and its
//! decoding (from a borrowed frame, or from a [`FrameBody`] whose Write data is handed on as it
//! was read). Every path, count and length is checked against its cap on the way in and on the
//! way out.

use super::frame::{
    Cursor, EncodedFrame, Frame, FrameBody, MAX_DATA, ProtocolError, Writer, request_id,
};
use super::kind;
use super::responses::ResponseKind;

/// The longest path or link target, in bytes.
pub const MAX_PATH: usize = 4096;
/// The most hashes in one Hashes frame, and the most blocks one BlockHashes request asks for.
pub const MAX_HASHES: u32 = 65536;

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
    /// Version 4: Read, answered with the data and its block hash (`crate::blocks::hash_block`,
    /// computed by the agent over the bytes it read). Answer: HashedData.
    ReadHashed {
        handle: u64,
        offset: u64,
        length: u32,
    },
    /// Version 5: makes what was written to the file open under `handle` durable with a sync
    /// of its whole filesystem that started after the request arrived, shared with the other
    /// files waiting (where there is no `syncfs`, an fsync of the file). Answer: Done.
    SyncFilesystem { handle: u64 },
    /// Version 5: a whole small file in one request. The agent opens `path` as OpenWrite does
    /// (never following a final symlink; made with mode 0600 when missing), gives it one byte
    /// more than `data` (the size of a file not yet complete), writes `data` at offset 0,
    /// syncs it as SyncFilesystem does, reads it back and compares the block hash of what it
    /// holds with `hash`, and only when they are equal sets its size to `data`'s, its mode and
    /// its mtime. Answer: Done; an Error leaves the file looking incomplete.
    PutFile {
        path: String,
        mode: u32,
        mtime: i64,
        hash: [u8; 32],
        data: Vec<u8>,
    },
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

impl Request {
    /// The first protocol version with this request.
    pub fn since_version(&self) -> u16 {
        match self {
            Request::ReadFileHashed { .. } => 2,
            Request::SetFileAttributes { .. } => 3,
            Request::ReadHashed { .. } => 4,
            Request::SyncFilesystem { .. } | Request::PutFile { .. } => 5,
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
            Request::ReadFileHashed { .. } | Request::ReadHashed { .. } => ResponseKind::HashedData,
            Request::Write { .. }
            | Request::Sync { .. }
            | Request::SyncFilesystem { .. }
            | Request::PutFile { .. }
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
    pub fn encode_owned(self, id: u32) -> Result<EncodedFrame, ProtocolError> {
        match self {
            Request::Write {
                handle,
                offset,
                data,
            } => Ok(EncodedFrame {
                head: write_head(request_id(id)?, handle, offset, data.len())?,
                data,
            }),
            other => Ok(EncodedFrame {
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
                write_path(&mut out, path)?;
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
            } => read_request(kind::READ, id, *handle, *offset, *length)?,
            Request::ReadHashed {
                handle,
                offset,
                length,
            } => read_request(kind::READ_HASHED, id, *handle, *offset, *length)?,
            Request::Write {
                handle,
                offset,
                data,
            } => {
                let mut frame = write_head(id, *handle, *offset, data.len())?;
                frame.extend_from_slice(data);
                return Ok(frame);
            }
            Request::Sync { handle } => Writer::single_u64(kind::SYNC, id, *handle),
            Request::SyncFilesystem { handle } => {
                Writer::single_u64(kind::SYNC_FILESYSTEM, id, *handle)
            }
            Request::PutFile {
                path,
                mode,
                mtime,
                hash,
                data,
            } => {
                let mut out = Writer::new(kind::PUT_FILE, id, path.len() + data.len() + 56);
                write_path(&mut out, path)?;
                out.u32(*mode);
                out.i64(*mtime);
                out.raw(hash);
                out.bytes("file data", data, MAX_DATA as usize)?;
                out
            }
            Request::Close { handle } => Writer::single_u64(kind::CLOSE, id, *handle),
            Request::ReadFile { path, max_length } => {
                read_file_request(kind::READ_FILE, id, path, *max_length)?
            }
            Request::ReadFileHashed { path, max_length } => {
                read_file_request(kind::READ_FILE_HASHED, id, path, *max_length)?
            }
            Request::SetAttributes {
                path,
                size,
                mode,
                mtime,
            } => {
                let mut out = Writer::new(kind::SET_ATTRIBUTES, id, path.len() + 27);
                write_path(&mut out, path)?;
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
                write_path(&mut out, path)?;
                out.u32(*mode);
                out
            }
            Request::MakeSymlink { path, target } => {
                let mut out = Writer::new(kind::MAKE_SYMLINK, id, path.len() + target.len() + 8);
                write_path(&mut out, path)?;
                out.bytes("link target", target.as_bytes(), MAX_PATH)?;
                out
            }
            Request::Remove { path } => path_only(kind::REMOVE, id, path)?,
            Request::Rename { from, to } => {
                let mut out = Writer::new(kind::RENAME, id, from.len() + to.len() + 8);
                write_path(&mut out, from)?;
                write_path(&mut out, to)?;
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
                write_path(&mut out, path)?;
                out.u32(*block_size);
                out.u64(*first);
                out.u32(*count);
                out
            }
        };
        out.finish()
    }

    /// Decodes a frame body as a reader gave it: a Write's data, read into a buffer of its own
    /// ([`FrameBody::bulk`]), becomes the request's data without being moved. Returns the
    /// frame's id with the request.
    pub fn decode_parts(body: FrameBody) -> Result<(u32, Request), ProtocolError> {
        if body.bulk.is_empty() {
            let frame = Frame::parse(&body.head)?;
            return Request::decode(&frame).map(|request| (frame.id, request));
        }
        let (id, handle, offset) = {
            let frame = Frame::parse(&body.head)?;
            if frame.kind != kind::WRITE {
                let whole = body.into_whole();
                let frame = Frame::parse(&whole)?;
                return Request::decode(&frame).map(|request| (frame.id, request));
            }
            request_id(frame.id)?;
            let mut input = Cursor::new(frame.payload, "request");
            let handle = input.u64()?;
            let offset = input.u64()?;
            input.bulk_length("write data", &body.bulk, MAX_DATA as usize)?;
            input.finish()?;
            (frame.id, handle, offset)
        };
        Ok((
            id,
            Request::Write {
                handle,
                offset,
                data: body.bulk,
            },
        ))
    }

    /// Decodes a request frame, refusing anything but a request with a non-zero id and a
    /// payload exactly as its type says.
    pub fn decode(frame: &Frame<'_>) -> Result<Request, ProtocolError> {
        request_id(frame.id)?;
        let mut input = Cursor::new(frame.payload, "request");
        let request = match frame.kind {
            kind::STAT => Request::Stat {
                path: read_path(&mut input)?,
                follow: input.flag("follow flag")?,
            },
            kind::LIST => Request::List {
                path: read_path(&mut input)?,
            },
            kind::READ_LINK => Request::ReadLink {
                path: read_path(&mut input)?,
            },
            kind::OPEN_READ => Request::OpenRead {
                path: read_path(&mut input)?,
            },
            kind::OPEN_WRITE => Request::OpenWrite {
                path: read_path(&mut input)?,
            },
            kind::READ => {
                let (handle, offset, length) = read_fields(&mut input)?;
                Request::Read {
                    handle,
                    offset,
                    length,
                }
            }
            kind::READ_HASHED => {
                let (handle, offset, length) = read_fields(&mut input)?;
                Request::ReadHashed {
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
            kind::SYNC_FILESYSTEM => Request::SyncFilesystem {
                handle: input.u64()?,
            },
            kind::PUT_FILE => Request::PutFile {
                path: read_path(&mut input)?,
                mode: input.u32()?,
                mtime: input.i64()?,
                hash: input.array()?,
                data: input.bytes("file data", MAX_DATA as usize)?.to_vec(),
            },
            kind::CLOSE => Request::Close {
                handle: input.u64()?,
            },
            kind::READ_FILE => {
                let (path, max_length) = read_file_fields(&mut input)?;
                Request::ReadFile { path, max_length }
            }
            kind::READ_FILE_HASHED => {
                let (path, max_length) = read_file_fields(&mut input)?;
                Request::ReadFileHashed { path, max_length }
            }
            kind::SET_ATTRIBUTES => Request::SetAttributes {
                path: read_path(&mut input)?,
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
                path: read_path(&mut input)?,
                mode: input.u32()?,
            },
            kind::MAKE_SYMLINK => Request::MakeSymlink {
                path: read_path(&mut input)?,
                target: input.string("link target", MAX_PATH)?,
            },
            kind::REMOVE => Request::Remove {
                path: read_path(&mut input)?,
            },
            kind::RENAME => Request::Rename {
                from: read_path(&mut input)?,
                to: read_path(&mut input)?,
            },
            kind::DIGEST => Request::Digest {
                path: read_path(&mut input)?,
            },
            kind::BLOCK_HASHES => {
                let path = read_path(&mut input)?;
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
    write_path(&mut out, path)?;
    Ok(out)
}

fn read_file_request(
    kind: u8,
    id: u32,
    path: &str,
    max_length: u32,
) -> Result<Writer, ProtocolError> {
    if max_length > MAX_DATA {
        return Err(ProtocolError::TooLong {
            what: "read-file maximum length",
            length: u64::from(max_length),
            cap: u64::from(MAX_DATA),
        });
    }
    let mut out = Writer::new(kind, id, path.len() + 8);
    write_path(&mut out, path)?;
    out.u32(max_length);
    Ok(out)
}

/// A path field: UTF-8, at most [`MAX_PATH`] bytes.
fn read_path(input: &mut Cursor<'_>) -> Result<String, ProtocolError> {
    input.string("path", MAX_PATH)
}

fn write_path(out: &mut Writer, path: &str) -> Result<(), ProtocolError> {
    out.bytes("path", path.as_bytes(), MAX_PATH)
}

/// A Read or ReadHashed frame: handle, offset and a length ≤ MAX_DATA.
fn read_request(
    kind: u8,
    id: u32,
    handle: u64,
    offset: u64,
    length: u32,
) -> Result<Writer, ProtocolError> {
    check_read_length(length)?;
    let mut out = Writer::new(kind, id, 20);
    out.u64(handle);
    out.u64(offset);
    out.u32(length);
    Ok(out)
}

/// The payload of Read and ReadHashed: handle, offset and a length ≤ MAX_DATA.
fn read_fields(input: &mut Cursor<'_>) -> Result<(u64, u64, u32), ProtocolError> {
    let handle = input.u64()?;
    let offset = input.u64()?;
    let length = input.u32()?;
    check_read_length(length)?;
    Ok((handle, offset, length))
}

fn check_read_length(length: u32) -> Result<(), ProtocolError> {
    if length > MAX_DATA {
        return Err(ProtocolError::TooLong {
            what: "read length",
            length: u64::from(length),
            cap: u64::from(MAX_DATA),
        });
    }
    Ok(())
}

/// The payload of ReadFile and ReadFileHashed: a path and a maximum length ≤ MAX_DATA.
fn read_file_fields(input: &mut Cursor<'_>) -> Result<(String, u32), ProtocolError> {
    let path = read_path(input)?;
    let max_length = input.u32()?;
    if max_length > MAX_DATA {
        return Err(ProtocolError::TooLong {
            what: "read-file maximum length",
            length: u64::from(max_length),
            cap: u64::from(MAX_DATA),
        });
    }
    Ok((path, max_length))
}
