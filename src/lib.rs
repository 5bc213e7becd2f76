//! xfer: move large files and secrets to and from remote machines over SSH, and keep working
//! when the link does not.
//!
//! The library holds everything but the command line, which lives in the binary (`src/cli/`:
//! arguments, then settings, then one runner per command). Its modules:
//!
//! - [`ssh`]: reaching a host exactly as OpenSSH would (config, known_hosts, keys, proxies).
//! - [`remote`]: the [`remote::Remote`] trait the engine uses, over SFTP or the agent, the
//!   connection pool, the agent's deployment, an in-memory remote for tests, and the way into
//!   a shell-only endpoint's terminal.
//! - [`terminal_link`]: the agent's byte stream through a terminal: checked frames, encodings,
//!   the probe that picks them.
//! - [`agent`]: the remote xfer agent: its protocol, server and client.
//! - [`engine`]: plan, then execute: units, planners, pull and push, journals, verification.
//! - [`blocks`]: block layout, hashes, the block set, journal and record formats; no IO.
//! - [`local`]: the one safety boundary on this machine: names, writes below the destination.
//! - [`secret`]: secret sources, netrc, delivery to a host without leaking the value.
//! - [`doctor`]: `xfer doctor`'s checks of hosts.
//! - [`target`]: `alias:path` arguments; [`host_list`]: `gpu-[1-8]` lists and hosts files.
//! - [`fleet`]: one piece of work per host for many hosts, a bounded number at once.
//! - [`terminal`]: text from peers, files and users made safe to print.
//! - [`entry`]: the kind of a filesystem entry, as listings, plans and records name it.
//! - [`progress`]: the [`progress::Reporter`] trait the engine reports through.
//! - [`error`]: the error type: kind (exit code), transient or permanent, hint.
//! - [`mod@env`]: every environment variable xfer reads.
//! - [`file_hashing`], [`file_writing`], [`cores`]: reading, writing and hashing files on this
//!   machine, for the engine and the agent alike.

pub mod agent;
pub mod blocks;
pub mod cores;
pub mod doctor;
pub mod engine;
pub mod entry;
pub mod env;
pub mod error;
pub mod file_hashing;
pub mod file_writing;
pub mod fleet;
pub mod host_list;
pub mod local;
pub mod progress;
pub mod remote;
pub mod secret;
pub mod ssh;
pub mod target;
pub mod terminal;
pub mod terminal_link;

pub use error::{Error, ErrorKind, Result};
