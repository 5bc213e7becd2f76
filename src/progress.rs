//! How the engine tells the outside world what it is doing.
//!
//! The engine calls a [`Reporter`]; every method has a no-op default, so a caller implements only
//! what it shows. The CLI's implementation draws indicatif bars on a terminal and plain lines
//! elsewhere; tests and library users pass [`NoProgress`]. The engine never prints.

/// Progress events of a transfer. Paths are relative to the transfer's root and already
/// validated; they are still to be made terminal-safe by whoever prints them.
pub trait Reporter: Send + Sync {
    /// More of the plan is known: this many more files and bytes (called once per unit).
    fn planned(&self, _files: u64, _bytes: u64) {}
    /// Every unit is planned or found complete: the totals given to `planned` are final.
    fn plan_complete(&self) {}
    /// A file's transfer starts; `reused` of its `size` bytes are already in place.
    fn file_started(&self, _path: &str, _size: u64, _reused: u64) {}
    /// More bytes of a file arrived (or were sent) and were written.
    fn bytes_moved(&self, _path: &str, _bytes: u64) {}
    /// A file is finished: verified and complete, or failed with a message.
    fn file_finished(&self, _path: &str, _result: std::result::Result<(), &str>) {}
    /// Something the user should know that does not stop the transfer.
    fn warning(&self, _message: &str) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Reporter for NoProgress {}
