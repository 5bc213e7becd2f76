//! Secrets: where values come from and how they reach a remote file without leaking.

pub mod deliver;
pub mod netrc;
pub mod process;
pub mod source;
