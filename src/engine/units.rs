//! One SSH connection per directory: a transfer split into units, several at once, each retried.
//!
//! A tree is cut into units: every top-level subdirectory of the source (with everything below
//! it), and one unit for the top directory itself and the loose files and links in it; a pull
//! makes the units' directories before any unit runs, as rsync makes a level's directories
//! before its files (it decides where ext4 puts the files, see `make_unit_directory`). Up to
//! `jobs` workers take units from a queue; each holds its own connection (its own TCP and SSH
//! session) and keeps it for the next unit while it is healthy, so a dropped connection loses
//! only the blocks in flight on it. A unit that fails for a transient reason (reset, EOF,
//! keepalive timeout, stall, request timeout) is planned again and resumed on a fresh connection
//! after an exponential backoff with jitter, up to `retries` times; a permanent failure (auth,
//! host key, no such file, permission denied, disk full) is not retried. One unit failing does
//! not stop the others. A unit whose every file is verified gets a completion record of the
//! listing it matched; a re-run plans from metadata only (listings and lstat), so a unit that is
//! unchanged on both sides is skipped without reading any file data.

use crate::blocks::record::{CompletionEntry, CompletionRecord, EntryKind as RecordKind};
use crate::engine::budget::{self, Held, text_bytes};
use crate::engine::early::EarlyHashes;
use crate::engine::lanes::Lanes;
use crate::engine::plan::{self, Action, Direction, Endpoints, Plan, PlanItem};
use crate::engine::state::{StateDir, StateFile};
use crate::engine::{ItemError, Options, Summary, finished, pull, push};
use crate::error::{Error, Result};
use crate::local::{Destination, RelativePath, Timestamp, validate_component};
use crate::progress::Reporter;
use crate::remote::pool::Pool;
use crate::remote::read_only::ReadOnly;
use crate::remote::{self, EntryKind, Remote, SetAttributes};
use serde::Serialize;
use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The meaning of a completion record written by this version (which checks made it complete).
const RECORD_VERSION: u32 = 1;

/// How a transfer is split and retried.
#[derive(Debug, Clone, Copy)]
pub struct UnitOptions {
    /// Units (and connections) at once.
    pub jobs: usize,
    /// Further attempts of a unit after a transient failure.
    pub retries: u32,
    /// The first backoff; each retry doubles it, up to [`MAX_BACKOFF`], with ±50% jitter.
    pub retry_wait: Duration,
    /// Verify files that look up to date by whole-file hash on both sides.
    pub checksum: bool,
    /// Push: convert shell scripts with CRLF line endings to LF on the way.
    pub fix_crlf: bool,
    pub engine: Options,
}

impl Default for UnitOptions {
    fn default() -> Self {
        UnitOptions {
            jobs: 4,
            retries: 10,
            retry_wait: Duration::from_secs(1),
            checksum: false,
            fix_crlf: false,
            engine: Options::default(),
        }
    }
}

/// The longest wait between two attempts of a unit.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Skipped entries the summary of a run keeps, all units together; the others are counted.
/// What a peer lists decides how many there are, and the summary lives to the end of the run.
pub const MAX_SKIPPED_KEPT: usize = 1000;

/// The wait before attempt `failures + 1`: `first * 2^(failures-1)`, capped, scaled by a jitter
/// factor in [0.5, 1.5) so that units cut by the same outage do not reconnect in lockstep.
pub fn backoff(first: Duration, failures: u32, jitter: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let base = first.saturating_mul(1u32 << exponent).min(MAX_BACKOFF);
    base.mul_f64(0.5 + jitter.clamp(0.0, 1.0))
}

/// How one unit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitOutcome {
    /// Every file verified.
    Done,
    /// Unchanged on both sides since a run that completed it: nothing was read.
    SkippedComplete,
    /// Out of attempts, or failed for a reason a retry cannot cure.
    Failed,
}

impl UnitOutcome {
    /// The word `--json` and messages use.
    pub fn as_str(self) -> &'static str {
        match self {
            UnitOutcome::Done => "done",
            UnitOutcome::SkippedComplete => "skipped-complete",
            UnitOutcome::Failed => "failed",
        }
    }
}

/// What became of one unit.
#[derive(Debug, Clone, Serialize)]
pub struct UnitReport {
    /// The unit's directory relative to the transfer root (`.` for the top unit).
    pub unit: String,
    pub outcome: UnitOutcome,
    pub attempts: u32,
    pub files_transferred: u64,
    pub bytes_moved: u64,
    pub last_error: Option<String>,
}

/// One unit: where it is on the source side and where it goes.
#[derive(Debug, Clone)]
struct Unit {
    /// Relative path of the unit's top below the destination root (pull) or the source
    /// root (push); empty for the top unit.
    relative: RelativePath,
    /// Source path of the unit's top (remote for pull, local for push).
    source: String,
    /// Destination path of the unit's top (remote for push).
    target: String,
    /// Only the top directory and its non-directory entries.
    shallow: bool,
    /// A subdirectory found by listing its parent (so it must still be a directory).
    listed_directory: bool,
}

impl Unit {
    /// What the unit takes in memory, about.
    fn held_bytes(&self) -> usize {
        let components: usize = self
            .relative
            .components()
            .iter()
            .map(|component| std::mem::size_of::<String>() + text_bytes(component.len()))
            .sum();
        std::mem::size_of::<Unit>()
            + components
            + text_bytes(self.source.len())
            + text_bytes(self.target.len())
    }
}

/// A pull or a push, as the command line gave it.
pub struct Transfer {
    pub direction: Direction,
    pub remote_path: String,
    pub local_path: PathBuf,
    pub state: StateDir,
    pub reporter: Arc<dyn Reporter>,
    pub options: UnitOptions,
}

/// Shared by the workers.
struct Shared<P: Pool> {
    transfer: Transfer,
    pool: Arc<P>,
    endpoints: Endpoints,
    destination: Option<Arc<Destination>>,
    /// Where a pull's plans say the destination is.
    local_root: PathBuf,
    queue: Mutex<VecDeque<Unit>>,
    results: Mutex<Vec<(UnitReport, Summary)>>,
    /// The `-j` connection budget: one slot per running unit, the rest lent to large files.
    lanes: Arc<Lanes<P::Remote>>,
    /// Hashes of the single local file the command names, computed while connecting.
    early: Option<Arc<EarlyHashes>>,
    /// The first connection's listing session: discovery, and every unit's first plan.
    planner: Arc<P::Remote>,
    /// What the discovered units take of the transfer's budget, until the end of the run.
    _units_held: Held,
    /// Skipped entries kept in the units' summaries so far, and those left out.
    skipped_kept: AtomicUsize,
    skipped_left_out: AtomicU64,
    /// Units discovered, and those planned or found complete so far: once all are, the plan's
    /// totals are final.
    units_total: usize,
    units_settled: AtomicUsize,
}

impl<P: Pool> Shared<P> {
    /// One more unit is planned (or will never be); the last one makes the plan complete.
    fn unit_settled(&self) {
        if self.units_settled.fetch_add(1, Ordering::AcqRel) + 1 == self.units_total {
            self.transfer.reporter.plan_complete();
        }
    }
}

/// The one local file whose hashes a transfer will want first, if the command names one: the
/// existing destination file of a pull (the path itself, or the remote name inside a local
/// directory), the source file of a push.
fn early_candidate(transfer: &Transfer) -> Option<PathBuf> {
    let local = &transfer.local_path;
    let metadata = std::fs::symlink_metadata(local).ok()?;
    if metadata.is_file() {
        return Some(local.clone());
    }
    if transfer.direction == Direction::Pull && metadata.is_dir() {
        let name = transfer
            .remote_path
            .trim_end_matches('/')
            .rsplit('/')
            .next()?;
        if !name.is_empty() && name != "." && name != ".." {
            return Some(local.join(name));
        }
    }
    None
}

/// Runs a whole transfer: connects with `connect` (told whether data will most likely move,
/// so it can start a data session at once), discovers the units over the planner, then runs
/// them.
pub async fn run<P, Connect, Connecting>(transfer: Transfer, connect: Connect) -> Result<Summary>
where
    P: Pool,
    Connect: FnOnce(bool) -> Connecting,
    Connecting: Future<Output = Result<P>>,
{
    let started = Instant::now();
    let early = early_candidate(&transfer).and_then(|path| EarlyHashes::start(&path));
    let pool = Arc::new(connect(early.is_some()).await?);
    let first = pool.planner();
    let endpoints = Endpoints {
        remote_id: pool.remote_id().to_string(),
    };
    let discovery = discover(&transfer, &*first, Discover::ToTransfer).await?;
    let data_expected = discovery.data_expected;
    tracing::debug!(units = discovery.units.len(), data_expected, "discovered");
    let budget = transfer.options.jobs.clamp(1, 64);
    let jobs = budget.min(discovery.units.len().max(1));
    let lanes = {
        let pool = pool.clone();
        Lanes::new(
            budget,
            Box::new(move || {
                let pool = pool.clone();
                Box::pin(async move { pool.open().await })
            }),
        )
    };
    let root = discovery.root;
    let shared = Arc::new(Shared {
        transfer,
        pool,
        endpoints,
        destination: discovery.destination,
        local_root: discovery.local_root,
        units_total: discovery.units.len(),
        units_settled: AtomicUsize::new(0),
        queue: Mutex::new(discovery.units.into_iter().collect()),
        results: Mutex::new(Vec::new()),
        lanes,
        early,
        planner: first.clone(),
        _units_held: discovery.held,
        skipped_kept: AtomicUsize::new(0),
        skipped_left_out: AtomicU64::new(0),
    });
    // On a far link a connection takes a second or more to come up: when data is sure to move,
    // the workers' connections (and the data session on the first one) are opened now, while
    // the units are planned, and so are the ones for the slots no unit will use, which are lent
    // to large files.
    if data_expected {
        shared.pool.expect_data(jobs - 1);
        for _ in jobs..budget {
            let lanes = shared.lanes.clone();
            tokio::spawn(async move { drop(lanes.borrow_one(true).await) });
        }
    }
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..jobs {
        let shared = shared.clone();
        workers.spawn(async move { worker(shared).await });
    }
    while let Some(joined) = workers.join_next().await {
        if let Err(error) = joined {
            return Err(Error::internal(format!("a worker failed: {error}")));
        }
    }
    let mut results = std::mem::take(
        &mut *shared
            .results
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    results.sort_by(|a, b| a.0.unit.cmp(&b.0.unit));

    // The top directory's own mode and mtime last: every unit wrote into it.
    let mut root_error = None;
    if let Some((mode, mtime)) = root {
        let result = match shared.transfer.direction {
            Direction::Pull => match &shared.destination {
                Some(destination) => {
                    let top = pull_top(&shared.transfer, EntryKind::Directory)?;
                    destination.set_permissions_and_times(
                        &top,
                        mode,
                        Timestamp {
                            seconds: mtime,
                            nanoseconds: 0,
                        },
                    )
                }
                None => Ok(()),
            },
            Direction::Push => finish_remote_root(&shared, first.clone(), mode, mtime).await,
        };
        root_error = result.err();
    }

    let mut summary = Summary::default();
    for (report, unit_summary) in results {
        summary.files += unit_summary.files;
        summary.files_transferred += unit_summary.files_transferred;
        summary.files_up_to_date += unit_summary.files_up_to_date;
        summary.files_failed += unit_summary.files_failed;
        summary.directories += unit_summary.directories;
        summary.symlinks += unit_summary.symlinks;
        summary.bytes_moved = summary.bytes_moved.saturating_add(report.bytes_moved);
        summary.bytes_reused = summary
            .bytes_reused
            .saturating_add(unit_summary.bytes_reused);
        summary.skipped.extend(unit_summary.skipped);
        summary.errors.extend(unit_summary.errors);
        summary.units.push(report);
    }
    let left_out = shared.skipped_left_out.load(Ordering::Relaxed);
    if left_out > 0 {
        summary.skipped.push(plan::Skipped {
            path: "...".into(),
            reason: format!("and {left_out} more skipped entries, not listed"),
        });
    }
    if let Some(error) = root_error {
        summary.errors.push(ItemError::new("", &error));
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Sets the remote top directory's mode and mtime, on a healthy connection, retried like a
/// unit: the discovery connection may have died long ago.
async fn finish_remote_root<P: Pool>(
    shared: &Shared<P>,
    first: Arc<P::Remote>,
    mode: u32,
    mtime: i64,
) -> Result<()> {
    let options = shared.transfer.options;
    let mut remote = Some(first);
    let mut failures = 0;
    loop {
        let result = async {
            let current = match remote.as_ref().filter(|remote| !remote.is_closed()) {
                Some(current) => current.clone(),
                None => shared.pool.open().await?,
            };
            remote = Some(current.clone());
            let root = push_root(&shared.transfer, &*current).await?;
            current
                .set_attributes(
                    &root,
                    SetAttributes {
                        size: None,
                        mode: Some(mode),
                        mtime: Some(mtime),
                    },
                )
                .await
        }
        .await;
        match result {
            Err(error) if error.is_transient() && failures < options.retries => {
                failures += 1;
                remote = None;
                tokio::time::sleep(backoff(options.retry_wait, failures, rand::random::<f64>()))
                    .await;
            }
            other => return other,
        }
    }
}

fn pull_top(transfer: &Transfer, kind: EntryKind) -> Result<RelativePath> {
    Ok(plan::pull_target(&transfer.remote_path, kind, &transfer.local_path)?.top)
}

/// The remote path a push's top lands at (inside an existing directory for a file).
async fn push_root<R: Remote>(transfer: &Transfer, remote: &R) -> Result<String> {
    let metadata = std::fs::symlink_metadata(&transfer.local_path).map_err(|error| {
        Error::local_io(
            format!("cannot read {}", transfer.local_path.display()),
            error,
        )
    })?;
    // As plan::plan_push decides: inside an existing directory, or one a trailing `/` names.
    if !metadata.is_dir()
        && (transfer.remote_path.ends_with('/')
            || remote
                .stat(&transfer.remote_path, true)
                .await?
                .is_some_and(|existing| existing.kind == EntryKind::Directory))
    {
        let name = transfer
            .local_path
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| {
                Error::usage(format!(
                    "{} has no usable file name",
                    transfer.local_path.display()
                ))
            })?;
        return Ok(remote::join(&transfer.remote_path, name));
    }
    Ok(transfer.remote_path.clone())
}

/// What discovery found: the units and what running them needs.
struct Discovery {
    units: Vec<Unit>,
    /// The local destination of a pull (None for a push, and for a dry run's pull into a
    /// destination that does not exist yet).
    destination: Option<Arc<Destination>>,
    /// Where a pull's plans say the destination is (the path the command gave, resolved).
    local_root: PathBuf,
    /// The source's top directory's mode and mtime, set last on the destination.
    root: Option<(u32, i64)>,
    /// Whether data is sure to move, so the connections it will need can be opened while the
    /// units are planned: a pull into a destination that does not exist yet, or of a single
    /// large file that is not at least half here (a resume or a delta seldom needs extra
    /// connections; if it does, it opens them when it knows), or a push of a single large
    /// file the remote does not hold at its size. A re-run with nothing to do opens none.
    data_expected: bool,
    /// What the units take of the transfer's budget: a remote directory may list as many
    /// subdirectories as it likes.
    held: Held,
}

/// What discovery is for: a transfer prepares the local destination (its root and the units'
/// directories); a dry run only looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Discover {
    ToTransfer,
    ToPlan,
}

async fn discover<R: Remote>(
    transfer: &Transfer,
    remote: &R,
    purpose: Discover,
) -> Result<Discovery> {
    match transfer.direction {
        Direction::Pull => discover_pull(transfer, remote, purpose).await,
        Direction::Push => discover_push(transfer, remote).await,
    }
}

/// Adds a discovered unit, counted against the transfer's budget.
fn add_unit(units: &mut Vec<Unit>, held: &mut Held, unit: Unit, label: &str) -> Result<()> {
    held.take(unit.held_bytes()).map_err(|error| {
        Error::remote(format!("{label}: {error}; refusing to go on with it"))
            .with_hint(
                "transfer a smaller part of the tree at a time, e.g. one subdirectory per run, or raise XFER_PLAN_MEMORY (MiB) for a directory of very many files",
            )
            .transient(false)
    })?;
    units.push(unit);
    Ok(())
}

async fn discover_pull<R: Remote>(
    transfer: &Transfer,
    remote: &R,
    purpose: Discover,
) -> Result<Discovery> {
    let path = &transfer.remote_path;
    let root = remote.stat(path, true).await?.ok_or_else(|| {
        Error::remote(format!(
            "{}: {path}: no such file or directory",
            remote.label()
        ))
        .with_hint("check the remote path (relative paths start at the login directory)")
    })?;
    let target = plan::pull_target(path, root.kind, &transfer.local_path)?;
    // Opening the destination creates its root, so whether it was there is asked first.
    let root_absent = std::fs::symlink_metadata(&target.root).is_err();
    let destination = match purpose {
        Discover::ToTransfer => Some(Arc::new(Destination::open(&target.root, true)?)),
        // What is not there yet plans as all new.
        Discover::ToPlan => Destination::open(&target.root, false).ok().map(Arc::new),
    };
    let prepare = purpose == Discover::ToTransfer;
    let top = Unit {
        relative: target.top.clone(),
        source: path.clone(),
        target: String::new(),
        shallow: root.kind == EntryKind::Directory,
        listed_directory: false,
    };
    if root.kind != EntryKind::Directory {
        let mostly_here = destination
            .as_ref()
            .and_then(|destination| destination.metadata(&top.relative).ok().flatten())
            .is_some_and(|local| local.size >= root.size / 2);
        // A small file moves over the first connection alone.
        let large = root.size >= crate::engine::lanes::LANE_MIN_SIZE;
        return Ok(Discovery {
            units: vec![top],
            destination,
            local_root: target.root,
            root: None,
            data_expected: large && !mostly_here,
            held: Held::new(&budget::TRANSFER),
        });
    }
    let absent = root_absent
        || destination
            .as_ref()
            .is_none_or(|destination| matches!(destination.metadata(&top.relative), Ok(None)));
    if let Some(destination) = destination.as_ref().filter(|_| prepare) {
        make_unit_directory(destination, &top.relative, root.mode);
    }
    let mut units = Vec::new();
    let mut held = Held::new(&budget::TRANSFER);
    let label = format!("{}: {path}", remote.label());
    add_unit(&mut units, &mut held, top, &label)?;
    let mut children = remote.list(path).await?;
    children.sort_by(|a, b| a.name.cmp(&b.name));
    children.dedup_by(|later, earlier| later.name == earlier.name);
    for child in children
        .into_iter()
        .filter(|child| child.kind == EntryKind::Directory)
    {
        // Refused names are reported by the top unit's plan, which lists them too.
        let Ok(name) = validate_component(child.name.as_bytes()) else {
            continue;
        };
        let Ok(relative) = target.top.join(name) else {
            continue;
        };
        if let Some(destination) = destination.as_ref().filter(|_| prepare) {
            make_unit_directory(destination, &relative, child.mode);
        }
        let unit = Unit {
            relative,
            source: remote::join(path, name),
            target: String::new(),
            shallow: false,
            listed_directory: true,
        };
        add_unit(&mut units, &mut held, unit, &label)?;
    }
    Ok(Discovery {
        units,
        destination,
        local_root: target.root,
        root: Some((root.mode, root.mtime)),
        data_expected: absent,
        held,
    })
}

/// Creates a unit's directory (owner-writable, like the pull does) before any unit runs, in
/// listing order, the way rsync makes every directory of a level before the files in them.
/// Made as the units reach them instead, interleaved with thousands of file creations, their
/// files landed in inode groups crowded with the slots of files deleted moments before, and
/// ext4 without a journal scans past every recently deleted inode on each allocation: 10,000
/// small files right after deleting a previous copy took 6-7 s this way and 3-3.8 s with the
/// directories made first (rsync 2.9-4.4 s on the same disk). Best effort: what is in the
/// way, or a listing that lied, is the unit's plan to handle and report.
fn make_unit_directory(destination: &Destination, relative: &RelativePath, mode: u32) {
    if let Ok(None) = destination.metadata(relative)
        && let Err(error) = destination.create_dir_all(relative, mode | 0o700)
    {
        tracing::debug!(%error, "unit directory not made ahead");
    }
}

async fn discover_push<R: Remote>(transfer: &Transfer, remote: &R) -> Result<Discovery> {
    use std::os::unix::fs::MetadataExt;
    let source = &transfer.local_path;
    let metadata = std::fs::symlink_metadata(source)
        .map_err(|error| Error::local_io(format!("cannot read {}", source.display()), error))?;
    let root_target = push_root(transfer, remote).await?;
    let top = Unit {
        relative: RelativePath::root(),
        source: source.display().to_string(),
        target: root_target.clone(),
        shallow: metadata.is_dir(),
        listed_directory: false,
    };
    if !metadata.is_dir() {
        // A large file the remote does not hold yet, at that size, will move: its extra
        // connections are opened while it is planned.
        let large = metadata.len() >= crate::engine::lanes::LANE_MIN_SIZE;
        let data_expected = large
            && remote
                .stat(&root_target, false)
                .await?
                .is_none_or(|existing| existing.size != metadata.len());
        return Ok(Discovery {
            units: vec![top],
            destination: None,
            local_root: source.clone(),
            root: None,
            data_expected,
            held: Held::new(&budget::TRANSFER),
        });
    }
    let mut units = vec![top];
    let mut entries: Vec<_> = std::fs::read_dir(source)
        .map_err(|error| Error::local_io(format!("cannot list {}", source.display()), error))?
        .flatten()
        .collect();
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if !file_type.is_dir() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Ok(relative) = RelativePath::root().join(&name) else {
            continue;
        };
        units.push(Unit {
            relative,
            source: entry.path().display().to_string(),
            target: remote::join(&root_target, &name),
            shallow: false,
            listed_directory: true,
        });
    }
    // The units of a push are the local tree's: nothing the peer said is held for them.
    Ok(Discovery {
        units,
        destination: None,
        local_root: source.clone(),
        root: Some((metadata.mode() & 0o7777, metadata.mtime())),
        data_expected: false,
        held: Held::new(&budget::TRANSFER),
    })
}

/// Takes units from the queue until it is empty. The worker's slot is held across units, so a
/// large file's borrowing never delays the next unit; once the queue is empty the worker's
/// connection is left to the lanes before its slot is given up, and the files still running
/// get it without a new handshake.
async fn worker<P: Pool>(shared: Arc<Shared<P>>) {
    let mut connection = None;
    let slot = shared.lanes.hold_slot().await;
    loop {
        let unit = shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        let Some(unit) = unit else { break };
        let (report, mut summary) = run_unit(&shared, &unit, &mut connection).await;
        let count = summary.skipped.len();
        let kept_before = shared.skipped_kept.fetch_add(count, Ordering::Relaxed);
        let room = MAX_SKIPPED_KEPT.saturating_sub(kept_before);
        if count > room {
            summary.skipped.truncate(room);
            summary.skipped.shrink_to_fit();
            shared
                .skipped_left_out
                .fetch_add((count - room) as u64, Ordering::Relaxed);
        }
        shared
            .results
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((report, summary));
    }
    if let Some(connection) = connection {
        shared.lanes.add_idle(connection);
    }
    drop(slot);
}

fn unit_name(unit: &Unit) -> String {
    if unit.relative.is_root() {
        ".".to_string()
    } else {
        unit.relative.to_string()
    }
}

/// Runs one unit to completion or to its last attempt.
async fn run_unit<P: Pool>(
    shared: &Shared<P>,
    unit: &Unit,
    connection: &mut Option<Arc<P::Remote>>,
) -> (UnitReport, Summary) {
    let mut planned = false;
    let outcome = attempt_until_done(shared, unit, connection, &mut planned).await;
    // Found complete, or failed before it was planned: it adds nothing more to the plan.
    if !planned {
        shared.unit_settled();
    }
    outcome
}

/// Attempts one unit until it is done, found complete, or out of retries.
async fn attempt_until_done<P: Pool>(
    shared: &Shared<P>,
    unit: &Unit,
    connection: &mut Option<Arc<P::Remote>>,
    planned: &mut bool,
) -> (UnitReport, Summary) {
    let transfer = &shared.transfer;
    let options = transfer.options;
    let mut report = UnitReport {
        unit: unit_name(unit),
        outcome: UnitOutcome::Failed,
        attempts: 0,
        files_transferred: 0,
        bytes_moved: 0,
        last_error: None,
    };
    let mut last_summary = Summary::default();
    // Failures since an attempt last moved data: the backoff grows with these only, so a link
    // that drops every few minutes but moves data between drops waits the first wait each time.
    let mut failures_in_a_row = 0;
    loop {
        report.attempts += 1;
        let first_attempt = report.attempts == 1;
        let attempt = attempt_unit(shared, unit, connection, first_attempt, planned).await;
        let retry = match attempt {
            Ok(Attempt::SkippedComplete(summary)) => {
                report.outcome = UnitOutcome::SkippedComplete;
                return (report, summary);
            }
            Ok(Attempt::Executed(mut summary)) => {
                report.bytes_moved = report.bytes_moved.saturating_add(summary.bytes_moved);
                report.files_transferred += summary.files_transferred;
                if summary.bytes_moved > 0 || summary.files_transferred > 0 {
                    failures_in_a_row = 0;
                }
                // What moved in every attempt, not only the last: a unit cut three times
                // moved its data over four.
                summary.bytes_moved = report.bytes_moved;
                summary.files_transferred = report.files_transferred;
                if summary.errors.is_empty() {
                    report.outcome = UnitOutcome::Done;
                    report.last_error = None;
                    return (report, summary);
                }
                let transient = summary.errors.iter().any(|error| error.transient);
                report.last_error = summary
                    .errors
                    .first()
                    .map(|error| match error.path.as_str() {
                        "" => error.message.clone(),
                        path => format!("{path}: {}", error.message),
                    });
                last_summary = summary;
                transient
            }
            Err(error) => {
                report.last_error = Some(error.to_string());
                let transient = error.is_transient();
                last_summary.errors = vec![ItemError::new(&report.unit, &error)];
                transient
            }
        };
        if !retry || report.attempts > options.retries {
            return (report, last_summary);
        }
        // The connection may be what failed: the next attempt gets a fresh one.
        *connection = None;
        failures_in_a_row += 1;
        let wait = backoff(options.retry_wait, failures_in_a_row, rand::random::<f64>());
        tracing::info!(unit = %report.unit, attempt = report.attempts, ?wait, "retrying after: {}", report.last_error.as_deref().unwrap_or(""));
        transfer.reporter.warning(&format!(
            "{}: retrying in {:.1} s after: {}",
            report.unit,
            wait.as_secs_f64(),
            report.last_error.as_deref().unwrap_or("")
        ));
        tokio::time::sleep(wait).await;
    }
}

/// Passes every event on, counting the bytes moved.
struct CountingReporter {
    inner: Arc<dyn Reporter>,
    bytes: AtomicU64,
}

impl Reporter for CountingReporter {
    fn planned(&self, files: u64, bytes: u64) {
        self.inner.planned(files, bytes);
    }
    fn file_started(&self, path: &str, size: u64, reused: u64) {
        self.inner.file_started(path, size, reused);
    }
    fn bytes_moved(&self, path: &str, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.inner.bytes_moved(path, bytes);
    }
    fn file_finished(&self, path: &str, result: std::result::Result<(), &str>) {
        self.inner.file_finished(path, result);
    }
    fn warning(&self, message: &str) {
        self.inner.warning(message);
    }
}

enum Attempt {
    SkippedComplete(Summary),
    Executed(Summary),
}

async fn attempt_unit<P: Pool>(
    shared: &Shared<P>,
    unit: &Unit,
    connection: &mut Option<Arc<P::Remote>>,
    first_attempt: bool,
    planned: &mut bool,
) -> Result<Attempt> {
    let transfer = &shared.transfer;
    // A unit is planned over the first connection's listing session, so a unit with nothing
    // to do never opens a connection of its own. A retry plans over its fresh connection (the
    // first one may be what failed), and --checksum hashes, which wants the data session.
    let remote = if first_attempt && !transfer.options.checksum && !shared.planner.is_closed() {
        shared.planner.clone()
    } else {
        data_session(shared, connection).await?
    };
    let mut plan = plan_unit(
        transfer,
        &*remote,
        unit,
        shared.destination.as_deref(),
        &shared.local_root,
        &shared.endpoints,
    )
    .await?;
    if transfer.options.checksum {
        verify_by_checksum(
            &mut plan,
            &*remote,
            shared.destination.as_deref(),
            transfer.direction,
        )
        .await?;
    }
    let record_file = record_file(shared, unit);
    let record = completion_record(unit, &plan);
    let everything_current = plan.problems.is_empty()
        && plan
            .items
            .iter()
            .all(|item| item.action == Action::UpToDate);
    if everything_current {
        let recorded = record_file
            .read(crate::blocks::record::MAX_RECORD_LEN as u64)
            .ok()
            .flatten()
            .and_then(|bytes| CompletionRecord::decode(&bytes).ok());
        if recorded.as_ref() == Some(&record) {
            let mut summary = Summary {
                files: plan.files().count() as u64,
                files_up_to_date: plan.files().count() as u64,
                bytes_reused: plan.total_file_bytes(),
                skipped: plan.skipped.clone(),
                ..Summary::default()
            };
            summary.directories = plan
                .items
                .iter()
                .filter(|item| item.kind == EntryKind::Directory)
                .count() as u64;
            summary.symlinks = plan
                .items
                .iter()
                .filter(|item| item.kind == EntryKind::Symlink)
                .count() as u64;
            return Ok(Attempt::SkippedComplete(summary));
        }
    }
    let remote = data_session(shared, connection).await?;
    // Counts what this attempt moved, failed files included: the summary says what moved over
    // every attempt, and an attempt that moved anything resets the retry backoff.
    let counting = Arc::new(CountingReporter {
        inner: transfer.reporter.clone(),
        bytes: AtomicU64::new(0),
    });
    let reporter: Arc<dyn Reporter> = counting.clone();
    if !*planned {
        transfer
            .reporter
            .planned(plan.files().count() as u64, plan.total_file_bytes());
        *planned = true;
        shared.unit_settled();
    }
    let summary = match transfer.direction {
        Direction::Pull => {
            let destination = shared
                .destination
                .clone()
                .ok_or_else(|| Error::internal("a pull without a destination"))?;
            pull::execute(
                remote.clone(),
                &plan,
                destination,
                transfer.state.clone(),
                shared.endpoints.clone(),
                reporter.clone(),
                transfer.options.engine,
                Some(shared.lanes.clone()),
                shared.early.clone(),
            )
            .await
        }
        Direction::Push => {
            push::execute(
                remote.clone(),
                &plan,
                transfer.state.clone(),
                shared.endpoints.clone(),
                reporter.clone(),
                transfer.options.engine,
                Some(shared.lanes.clone()),
                shared.early.clone(),
            )
            .await
        }
    };
    let mut summary = summary;
    summary.bytes_moved = counting.bytes.load(Ordering::Relaxed);
    if summary.errors.is_empty() {
        // Every file verified: record the listing this unit matched.
        match record.encode() {
            Ok(bytes) => {
                // A record not written only costs a re-run its check.
                if let Err(error) = record_file.replace(&[&bytes], false) {
                    tracing::debug!(%error, "no completion record for {}", unit_name(unit));
                }
            }
            Err(error) => tracing::debug!(%error, "no completion record for {}", unit_name(unit)),
        }
    } else {
        let _ = record_file.remove();
    }
    Ok(Attempt::Executed(summary))
}

/// Plans one unit over `remote`, as a run and a dry run both do. `destination` is a pull's
/// local destination (None where it does not exist yet), `local_root` where it is.
async fn plan_unit<R: Remote>(
    transfer: &Transfer,
    remote: &R,
    unit: &Unit,
    destination: Option<&Destination>,
    local_root: &Path,
    endpoints: &Endpoints,
) -> Result<Plan> {
    let plan = match transfer.direction {
        Direction::Pull => {
            plan::plan_pull(
                remote,
                &unit.source,
                &transfer.local_path.display().to_string(),
                local_root,
                destination,
                &unit.relative,
                &transfer.state,
                endpoints,
                unit.shallow,
            )
            .await?
        }
        Direction::Push => {
            plan::plan_push(
                remote,
                Path::new(&unit.source),
                &unit.target,
                &transfer.state,
                endpoints,
                unit.shallow,
                transfer.options.fix_crlf,
            )
            .await?
        }
    };
    // A directory unit must still be a directory: the listing that made it a unit may lie.
    // (The plan's first item is the unit's top, as the remote stat it just now.)
    if transfer.direction == Direction::Pull
        && unit.listed_directory
        && plan
            .items
            .first()
            .is_none_or(|top| top.kind != EntryKind::Directory)
    {
        return Err(Error::remote(format!(
            "{}: {} was listed as a directory but is not one now",
            remote.label(),
            unit.source
        )));
    }
    Ok(plan)
}

/// Plans a transfer as a run plans it, unit by unit, over the pool's planner seen through
/// [`ReadOnly`], and prepares nothing locally: nothing changes on either side. The units'
/// plans come back as one, in the order a walk of the source visits its entries.
pub async fn plan_only<P: Pool>(transfer: &Transfer, pool: &P) -> Result<Plan> {
    let planner = ReadOnly::new(pool.planner());
    let endpoints = Endpoints {
        remote_id: pool.remote_id().to_string(),
    };
    let discovery = discover(transfer, &planner, Discover::ToPlan).await?;
    let mut whole: Option<Plan> = None;
    for unit in &discovery.units {
        let plan = plan_unit(
            transfer,
            &planner,
            unit,
            discovery.destination.as_deref(),
            &discovery.local_root,
            &endpoints,
        )
        .await?;
        match whole.as_mut() {
            None => whole = Some(plan),
            Some(whole) => {
                let prefix = match transfer.direction {
                    Direction::Pull => RelativePath::root(),
                    Direction::Push => unit.relative.clone(),
                };
                whole.absorb(plan, &prefix)?;
            }
        }
    }
    whole.ok_or_else(|| Error::internal("a transfer with no unit to plan"))
}

/// The worker's own connection for moving data: the one it holds while healthy, else one from
/// the pool.
async fn data_session<P: Pool>(
    shared: &Shared<P>,
    connection: &mut Option<Arc<P::Remote>>,
) -> Result<Arc<P::Remote>> {
    if let Some(remote) = connection.as_ref().filter(|remote| !remote.is_closed()) {
        return Ok(remote.clone());
    }
    let remote = shared.pool.for_data().await?;
    *connection = Some(remote.clone());
    Ok(remote)
}

fn record_file<P: Pool>(shared: &Shared<P>, unit: &Unit) -> StateFile {
    let transfer = &shared.transfer;
    let (source, destination) = match transfer.direction {
        Direction::Pull => (
            format!("{}:{}", shared.endpoints.remote_id, unit.source),
            transfer
                .local_path
                .join(unit.relative.to_raw_string())
                .display()
                .to_string(),
        ),
        Direction::Push => (
            unit.source.clone(),
            format!("{}:{}", shared.endpoints.remote_id, unit.target),
        ),
    };
    transfer
        .state
        .unit_file(transfer.direction.as_str(), &source, &destination)
}

/// The listing a unit's plan saw, as a completion record.
fn completion_record(unit: &Unit, plan: &Plan) -> CompletionRecord {
    let entries = plan
        .items
        .iter()
        .filter_map(|item: &PlanItem| {
            let kind = match item.kind {
                EntryKind::File => RecordKind::File,
                EntryKind::Directory => RecordKind::Dir,
                EntryKind::Symlink => RecordKind::Symlink,
                EntryKind::Special => return None,
            };
            Some(CompletionEntry {
                name: item.path.clone(),
                kind,
                size: item.size,
                mtime_seconds: item.mtime,
                mtime_nanos: 0,
                mode: item.mode,
                symlink_target: item.link_target.clone(),
                content_hash: None,
            })
        })
        .collect();
    CompletionRecord {
        version: RECORD_VERSION,
        unit_id: unit
            .source
            .chars()
            .take(crate::blocks::record::MAX_NAME_LEN / 4)
            .collect(),
        entries,
    }
}

/// `--checksum`: a file that passes the quick check must also have the same whole-file digest
/// on both sides, or it is transferred again.
async fn verify_by_checksum<R: Remote>(
    plan: &mut Plan,
    remote: &R,
    destination: Option<&Destination>,
    direction: Direction,
) -> Result<()> {
    for item in plan.items.iter_mut() {
        if item.kind != EntryKind::File || item.action != Action::UpToDate {
            continue;
        }
        let remote_path = match direction {
            Direction::Pull => &item.source,
            Direction::Push => &item.target,
        };
        let digest = remote.digest(remote_path).await?;
        let local = match direction {
            Direction::Pull => {
                let Some(destination) = destination else {
                    continue;
                };
                destination.open_read(&item.relative()?)?
            }
            Direction::Push => std::fs::File::open(&item.source)
                .map_err(|error| Error::local_io(format!("cannot read {}", item.source), error))?,
        };
        let checksum = tokio::task::spawn_blocking(move || -> Result<Option<bool>> {
            let Some(digest) = digest else {
                return Ok(None);
            };
            let by_blake3 = matches!(digest, remote::RemoteDigest::Blake3(_));
            let (_, blake3, sha256) =
                crate::file_hashing::whole_file_digests(&local, u64::MAX, by_blake3, !by_blake3)
                    .map_err(|error| Error::local_io("cannot read a file to checksum it", error))?;
            Ok(Some(match digest {
                remote::RemoteDigest::Blake3(expected) => blake3 == Some(expected),
                remote::RemoteDigest::Sha256(expected) => sha256 == Some(expected),
            }))
        });
        let same = finished(checksum, "a checksum").await?;
        match same {
            Some(true) => {}
            Some(false) => item.action = Action::Update { reason: "content differs (--checksum)".into() },
            None => {
                item.action = Action::Update {
                    reason: "the remote cannot hash it, so it is transferred and verified again (--checksum)".into(),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let first = Duration::from_secs(1);
        assert_eq!(backoff(first, 1, 0.5), Duration::from_secs(1));
        assert_eq!(backoff(first, 2, 0.5), Duration::from_secs(2));
        assert_eq!(backoff(first, 4, 0.5), Duration::from_secs(8));
        assert_eq!(backoff(first, 30, 0.5), MAX_BACKOFF);
        assert_eq!(backoff(first, 1, 0.0), Duration::from_millis(500));
        assert!(backoff(first, 1, 0.999) < Duration::from_millis(1500));
        assert_eq!(backoff(first, u32::MAX, 1.0), MAX_BACKOFF.mul_f64(1.5));
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_sleeps_are_driven_by_the_runtime_clock() {
        // With the clock paused, ten retries' worth of waiting takes no real time.
        let started = tokio::time::Instant::now();
        let real = std::time::Instant::now();
        for failures in 1..=10 {
            tokio::time::sleep(backoff(Duration::from_secs(1), failures, 0.5)).await;
        }
        assert!(started.elapsed() >= Duration::from_secs(1 + 2 + 4 + 8 + 16 + 32 + 60 * 4));
        assert!(real.elapsed() < Duration::from_secs(5));
    }
}
