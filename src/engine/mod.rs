//! The transfer engine: plan a pull or a push, then execute the plan block by block.
//!
//! - [`plan`]: what to move and why, from metadata only; `--dry-run` prints it.
//! - [`pull`] and [`push`]: execute a plan over a [`crate::remote::Remote`], writing in place,
//!   recording synced blocks in a journal, verifying every file whole before it counts as done.
//! - [`units`]: the transfer split per directory, one connection each, several at once, retried.
//! - [`budget`]: the bound on what the units and plans hold of what the peer listed.
//! - [`delta`]: what a file present on both sides must move, block by block and piece by piece.
//! - [`early`]: hashing the local copy of a single large file while connecting.
//! - [`lanes`]: extra connections a large file borrows from the same budget.
//! - [`state`]: where journals live and how they are read and appended.
//! - [`verify`]: reading files back.
//! - `settle`: when a copy may take its source's mtime and pass the quick check with it (a
//!   source written again within the same second would otherwise look current).
//!
//! One failing item is reported and the others go on; the [`Summary`] lists what failed, and
//! whether re-running the same command can help.

mod ahead;
pub mod budget;
mod checksum;
mod completion;
pub mod crlf;
pub mod delta;
mod discovery;
pub mod early;
pub mod job;
pub mod lanes;
pub mod plan;
pub mod pull;
pub mod push;
mod settle;
pub mod shared_source;
pub mod state;
pub mod units;
pub mod verify;

use crate::error::{Error, ErrorKind, Result};
use serde::Serialize;

/// How hard the engine pushes.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Read or write requests in flight on one connection, at most: `bytes_in_flight` bounds
    /// them too ([`Options::requests_for`]), so large requests count fewer.
    pub requests_in_flight: usize,
    /// Bytes of requests in flight on one connection: [`BYTES_IN_FLIGHT`], less when several
    /// hosts share the client's memory ([`Options::for_hosts_at_once`]).
    pub bytes_in_flight: u64,
    /// Files transferred at once (hides per-file round trips for trees of small files).
    pub files_in_flight: usize,
    /// A pull's small files waiting at once, each holding its file open, for the sync that
    /// makes them durable, beside those moving data: the more wait, the fewer syncs
    /// ([`Options::within_open_files`] keeps them within the process's open-file limit).
    pub files_waiting_for_sync: usize,
    /// Ask the remote for a whole-file digest (b3sum or sha256sum over exec) and compare.
    pub remote_digest: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            requests_in_flight: 32,
            bytes_in_flight: BYTES_IN_FLIGHT,
            files_in_flight: 16,
            files_waiting_for_sync: FEWEST_WAITING_FOR_SYNC,
            remote_digest: true,
        }
    }
}

/// Bytes of reads or writes in flight on one connection: enough for a 100 ms link at 40 MB/s
/// per connection (a large file spreads over `-j` of them), little to lose when a link drops,
/// and four connections' worth stays well under the 64 MiB memory bound (each reply may sit
/// once in the SSH layer and once decoded).
pub const BYTES_IN_FLIGHT: u64 = 4 << 20;

/// Bytes in flight on all the connections of hosts transferred at once: a fleet of eight
/// with `-j 4` would otherwise hold 32 times [`BYTES_IN_FLIGHT`], twice over (in the SSH
/// layer and in xfer's buffers). Each host's share still covers a fleet link's round trip:
/// 1 MiB per connection, 4 MiB per host with `-j 4`, is 100 MB/s at 40 ms.
pub const FLEET_BYTES_IN_FLIGHT: u64 = 32 << 20;

/// The least a connection keeps in flight, however many hosts share the client.
pub const MIN_BYTES_IN_FLIGHT: u64 = 1 << 20;

/// A unit's small files waiting at once for their sync, where open files allow: each sync
/// then covers hundreds of files, so tens of thousands of them cost tens of syncs, not
/// thousands (a sync takes milliseconds to tens of them, whatever it covers).
pub const MOST_WAITING_FOR_SYNC: usize = 512;
/// A unit's small files waiting for their sync when open files are scarce (or not known).
pub const FEWEST_WAITING_FOR_SYNC: usize = 64;
/// Open files left for everything but the files being written: connections, journals, the
/// state directory, the runtime's own.
pub const DESCRIPTORS_KEPT: u64 = 256;

impl Options {
    /// Requests in flight on one connection whose requests carry `io_size` bytes each.
    pub fn requests_for(&self, io_size: u32) -> usize {
        // One request at least; a single host's default share holds four of the largest.
        let by_bytes = (self.bytes_in_flight / u64::from(io_size.max(1))).max(1) as usize;
        by_bytes.min(self.requests_in_flight.max(1))
    }

    /// The options for a process that may hold `open_files` descriptors with `units` units
    /// running at once (every host's): each unit's files waiting for a sync get an even share
    /// of what is left beside [`DESCRIPTORS_KEPT`] and the files moving data, between
    /// [`FEWEST_WAITING_FOR_SYNC`] and [`MOST_WAITING_FOR_SYNC`]. Below the fewest, a low
    /// limit still gets the fewest: it is what every run used before it was counted.
    pub fn within_open_files(self, open_files: u64, units: usize) -> Options {
        let share = open_files.saturating_sub(DESCRIPTORS_KEPT) / units.max(1) as u64;
        let waiting = share.saturating_sub(self.files_in_flight as u64);
        Options {
            files_waiting_for_sync: usize::try_from(waiting)
                .unwrap_or(usize::MAX)
                .clamp(FEWEST_WAITING_FOR_SYNC, MOST_WAITING_FOR_SYNC),
            ..self
        }
    }

    /// The options for each of `hosts` transfers running at once with `jobs` connections
    /// each: together they keep [`FLEET_BYTES_IN_FLIGHT`] in flight, but no connection fewer
    /// than [`MIN_BYTES_IN_FLIGHT`] nor more than one alone would.
    pub fn for_hosts_at_once(self, hosts: usize, jobs: usize) -> Options {
        let connections = (hosts.max(1) as u64).saturating_mul(jobs.max(1) as u64);
        Options {
            bytes_in_flight: (FLEET_BYTES_IN_FLIGHT / connections).clamp(
                MIN_BYTES_IN_FLIGHT,
                self.bytes_in_flight.max(MIN_BYTES_IN_FLIGHT),
            ),
            ..self
        }
    }
}

/// Files smaller than this are not digested on the remote: one exec per small file would cost
/// more than the file, the SSH MAC already protects the bytes in transit, and every file is
/// read back locally against its block hashes anyway.
pub const REMOTE_DIGEST_MIN_SIZE: u64 = 8 << 20;

/// A push journals the blocks the server acknowledged every this many bytes (and whenever the
/// link fails), so a flaky link that drops every few MiB still makes progress.
pub const JOURNAL_INTERVAL: u64 = 4 << 20;

/// Data at least this size is synced and journaled every this many bytes: a crash loses at
/// most this much work per file, and syncing less often would not be measurably faster.
pub const SYNC_INTERVAL: u64 = 64 << 20;

/// An item that failed.
#[derive(Debug, Clone, Serialize)]
pub struct ItemError {
    /// Terminal-safe path relative to the transfer root.
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
    /// Whether re-running the same command may succeed (a dropped link, a timeout).
    pub transient: bool,
    #[serde(skip)]
    pub kind: Option<ErrorKind>,
}

impl ItemError {
    pub fn new(path: &str, error: &Error) -> Self {
        ItemError {
            path: crate::terminal::printable(path),
            message: error.to_string(),
            hint: error.hint().map(str::to_string),
            transient: error.is_transient(),
            kind: Some(error.kind()),
        }
    }
}

/// What a transfer did, for the final line, `--json`, and the exit code.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub files: u64,
    pub files_transferred: u64,
    pub files_up_to_date: u64,
    pub files_failed: u64,
    pub directories: u64,
    pub symlinks: u64,
    /// File data moved over the link this run (payload bytes, without SSH framing).
    pub bytes_moved: u64,
    /// File data that was already in place (resumed blocks, up-to-date files).
    pub bytes_reused: u64,
    pub skipped: Vec<plan::Skipped>,
    pub errors: Vec<ItemError>,
    /// Per unit (directory) of the transfer: done, skipped as complete, or failed after N tries.
    pub units: Vec<units::UnitReport>,
    pub seconds: f64,
}

impl Summary {
    /// The error that ends the run, if any: "partly done" when some items failed for a reason
    /// a re-run can fix, otherwise the class of the first failure.
    pub fn outcome(&self) -> Option<Error> {
        let first = self.errors.first()?;
        let count = self.errors.len();
        let any_transient = self.errors.iter().any(|error| error.transient);
        let kind = if any_transient {
            ErrorKind::Partial
        } else {
            first.kind.unwrap_or(ErrorKind::Partial)
        };
        let message = if first.path.is_empty() {
            format!("{count} item(s) failed; first: {}", first.message)
        } else {
            format!(
                "{count} item(s) failed; first: {}: {}",
                first.path, first.message
            )
        };
        let hint = if any_transient {
            "re-run the same command to resume; finished files are skipped and partial ones resume"
                .to_string()
        } else {
            first
                .hint
                .clone()
                .unwrap_or_else(|| "fix the cause above, then re-run the same command".to_string())
        };
        Some(
            Error::new(kind, message)
                .with_hint(hint)
                .transient(any_transient),
        )
    }
}

/// What a task the engine spawned came to; one that panicked or was cancelled is a local error
/// naming `what` it was doing.
pub(crate) async fn finished<T>(task: tokio::task::JoinHandle<Result<T>>, what: &str) -> Result<T> {
    task.await
        .map_err(|error| Error::internal(format!("{what} task failed: {error}")))?
}

#[cfg(test)]
mod tests;
