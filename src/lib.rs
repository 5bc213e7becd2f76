//! xfer: move large files and secrets to and from remote machines over SSH, and keep working
//! when the link does not.
//!
//! The library holds everything but the command line: `ssh` reaches hosts exactly as OpenSSH
//! would, `target` parses `alias:path` arguments, `doctor` checks hosts. The `xfer` binary parses
//! arguments, builds settings and dispatches here.

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
pub mod local;
pub mod progress;
pub mod remote;
pub mod secret;
pub mod ssh;
pub mod target;
pub mod terminal;

pub use error::{Error, ErrorKind, Result};
