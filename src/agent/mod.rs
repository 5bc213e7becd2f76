//! The remote xfer agent: `xfer agent` runs on the remote host over an SSH exec channel and
//! answers filesystem requests (stat, list, offset reads and writes, attributes, whole-file
//! digests and block hashes) in a small versioned binary protocol on its stdin and stdout, so
//! delta transfers can compare block hashes where the data lives instead of moving it.
//!
//! This module owns that protocol and both of its ends, and nothing about SSH:
//! - [`protocol`]: frames and messages, their encoding and decoding, the caps on every size
//!   (no IO).
//! - [`server`]: the agent itself, serving requests from any reader and writer
//!   ([`server::serve`]) or from stdin and stdout ([`server::run_stdio`]).
//! - [`client`]: [`client::AgentClient`], the multiplexer that many tasks share to send requests
//!   to one agent, whatever stream carries it.

pub mod client;
pub mod protocol;
pub mod server;

use std::io;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How much of a frame body is allocated ahead of the bytes actually arriving: a block of data
/// and its frame's fields, so a frame carrying a 1 MiB block is one allocation (growing it
/// for its last few bytes copied the whole block).
const READ_STEP: usize = (1 << 20) + (64 << 10);

/// Reads one frame body (everything after the length field). `Ok(None)` at a clean end of the
/// stream, before the first byte of a frame. A length over the cap is an `InvalidData` error
/// before anything is allocated; a stream that ends inside a frame is `UnexpectedEof`. Memory
/// grows with the bytes received, never more than [`READ_STEP`] ahead of them.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> io::Result<Option<Vec<u8>>> {
    let mut prefix = [0u8; protocol::LENGTH_LEN];
    let mut filled = 0;
    while filled < prefix.len() {
        let read = reader.read(&mut prefix[filled..]).await?;
        if read == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the stream ended inside a frame length",
            ));
        }
        filled += read;
    }
    let length = protocol::frame_length(prefix)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
    let mut body = Vec::new();
    while body.len() < length {
        let step = (length - body.len()).min(READ_STEP);
        body.reserve_exact(step);
        // Into the spare capacity, never past the frame: no zeroing of what is overwritten.
        let read = (&mut *reader).take(step as u64).read_buf(&mut body).await?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the stream ended inside a frame",
            ));
        }
    }
    Ok(Some(body))
}
