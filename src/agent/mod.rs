//! The remote xfer agent: `xfer agent` runs on the remote host over an SSH exec channel and
//! answers filesystem requests (stat, list, offset reads and writes, attributes, whole-file
//! digests and block hashes) in a small versioned binary protocol on its stdin and stdout, so
//! delta transfers can compare block hashes where the data lives instead of moving it.
//!
//! This module owns that protocol and both of its ends, and nothing about SSH:
//! - [`protocol`]: frames and messages, their encoding and decoding, the caps on every size
//!   (no IO). Its documentation is the protocol's specification.
//! - [`Connection`]: frames over a byte stream, for both ends: buffering, the length cap checked
//!   before a frame is allocated, a clean end told from a truncated frame.
//! - [`server`]: the agent itself, serving requests from any reader and writer
//!   ([`server::serve`]) or from stdin and stdout ([`server::run_stdio`]).
//! - [`client`]: [`client::AgentClient`], the multiplexer that many tasks share to send requests
//!   to one agent, whatever stream carries it.

pub mod client;
mod connection;
pub mod protocol;
pub mod server;

pub use connection::{
    Connection, FrameReader, FrameWriter, Opening, Outgoing, ReadError, STREAM_BUFFER,
};
