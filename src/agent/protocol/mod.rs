//! The wire protocol of `xfer agent`: frames and messages, their encoding and decoding. No IO:
//! [`Connection`](super::Connection) reads and writes the bytes, this module only turns them
//! into messages and back, checking a cap on every size before it allocates anything.
//!
//! - [`frame`]: the length field and its cap, a frame's type and request id, and the field
//!   encoding every message uses.
//! - [`hello`]: the magic, the two hellos and the choice of a version.
//! - [`requests`]: what the client asks.
//! - [`responses`]: what the agent answers.
//!
//! Everything public is re-exported here, so callers name `protocol::Request`, not the file it
//! lives in.
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
//! | 0x14 | ReadHashed (version 4)     | handle u64, offset u64, length u32 (≤ MAX_DATA)      | HashedData   |
//! | 0x15 | SyncFilesystem (version 5) | handle u64                                           | Done         |
//! | 0x16 | PutFile (version 5)        | path, mode u32, mtime i64, hash \[32\], data (≤ MAX_DATA) | Done     |
//!
//! | type | message (agent → client)   | payload                                              |
//! |------|----------------------------|------------------------------------------------------|
//! | 0xff | ServerHello                | min_version u16, max_version u16, build: version string, executable_blake3 \[32\], os string, arch string |
//! | 0x80 | Error                      | code u8, message string                              |
//! | 0x81 | Entry                      | `Option<entry>`                                      |
//! | 0x82 | EntryBatch                 | count u32 (≤ MAX_LIST_BATCH), entries, last bool     |
//! | 0x83 | Text                       | bytes (≤ MAX_PATH)                                   |
//! | 0x84 | Handle                     | u64                                                  |
//! | 0x85 | Data                       | bytes (≤ MAX_DATA)                                   |
//! | 0x86 | Done                       | nothing                                              |
//! | 0x87 | Hash                       | \[32\]                                                 |
//! | 0x88 | Hashes                     | count u32 (≤ MAX_HASHES), count × \[32\]               |
//! | 0x89 | HashedData (version 2)     | hash \[32\], bytes (≤ MAX_DATA)                        |
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
//! small file and its block hash in one round trip, where version 1 takes a ReadFile and then a
//! BlockHashes, a second round trip for every small file a pull reads.
//! Version 3 adds SetFileAttributes, so a push sets size, mode and times through the handle it
//! wrote, never by a name that another account on the host could swap; from version 3 on,
//! OpenWrite and SetAttributes never follow a final symlink either.
//! Version 4 adds ReadHashed: a block of a large file and the agent's hash of it in one
//! answer, so a full pull needs no separate pass of the agent over the file for its block
//! hashes (a second read of it from disk, where the file is larger than the host's memory).
//! Version 5 adds SyncFilesystem: answered once a sync of the whole filesystem the file is on
//! (`syncfs`), started after the request arrived, has finished. Files waiting at once share
//! one sync, so a push of many small files costs a sync per lot rather than an fsync each.
//! It also adds PutFile: a small file written, synced that way, checked against its hash and
//! marked done in one round trip, where a push took eight requests for each.
//! An agent answers a request newer than the session's version with an Error.

pub mod frame;
pub mod hello;
pub mod requests;
pub mod responses;

pub use frame::{
    EncodedFrame, FRAME_HEADER_LEN, Frame, FrameBody, LENGTH_LEN, MAX_DATA, MAX_FRAME,
    ProtocolError, frame_length,
};
pub use hello::{
    BuildId, ClientHello, MAGIC, MAX_BUILD_PLATFORM, MAX_BUILD_VERSION, PROTOCOL_MAX, PROTOCOL_MIN,
    ServerHello, choose_version, test_server_hello,
};
pub use requests::{MAX_HASHES, MAX_PATH, Request};
pub use responses::{
    Entry, EntryKind, ErrorCode, MAX_LIST_BATCH, MAX_MESSAGE, MAX_NAME, Response, ResponseKind,
    cap_message,
};

/// Where the file data starts in the body (what follows the length field) of a frame of
/// message type `kind`: past the type, the request id, the fixed fields and the data's 4-byte
/// length, for the messages that carry file data (Data, HashedData, Write); None for the
/// others. A reader puts the data in a buffer of its own ([`FrameBody`]).
pub fn bulk_offset(kind: u8) -> Option<usize> {
    let fields = match kind {
        kind::DATA => 0,
        kind::HASHED_DATA => 32,
        kind::WRITE => 16,
        _ => return None,
    };
    Some(FRAME_HEADER_LEN + fields + 4)
}

/// A whole frame body split as a reader splits it while reading ([`bulk_offset`]): for
/// decoders' tests and fuzzing, which start from whole frames.
pub fn split_body(body: &[u8]) -> FrameBody {
    let split = body
        .first()
        .and_then(|&kind| bulk_offset(kind))
        .filter(|&offset| offset <= body.len())
        .unwrap_or(body.len());
    FrameBody {
        head: body[..split].to_vec(),
        bulk: body[split..].to_vec(),
    }
}

/// The message type bytes of every family, in one list so that no two messages share one:
/// requests below 0x80 (the ClientHello at 0x7f), answers from 0x80 (the ServerHello at 0xff).
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
    pub const READ_HASHED: u8 = 0x14;
    pub const SYNC_FILESYSTEM: u8 = 0x15;
    pub const PUT_FILE: u8 = 0x16;
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

#[cfg(test)]
mod tests;
