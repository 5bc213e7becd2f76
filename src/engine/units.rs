//! One connection per directory: a transfer's units run several at once, each retried.
//!
//! [`run`] connects through a [`Pool`], cuts the transfer into units (`discovery`), and
//! schedules them: up to `jobs` workers take units from a queue; each holds a connection of its
//! own and keeps it for the next unit while it is healthy, so a dropped connection loses only
//! the blocks in flight on it. A unit that fails for a transient reason (reset, EOF, keepalive
//! timeout, stall, request timeout) is planned again and resumed on a fresh connection after an
//! exponential backoff with jitter, up to `retries` times; a permanent failure (auth, host key,
//! no such file, permission denied, disk full) is not retried. One unit failing does not stop
//! the others. A unit unchanged since a run completed it is skipped without reading any file
//! data (`completion`); scouts plan units ahead of the workers (`ahead`), since planning needs
//! no connection of its own and a re-run is mostly plans. [`plan_only`] is the dry run: the
//! same discovery and per-unit planning over a read-only planner, with nothing executed.

use crate::engine::ahead::{Next, Scouted, UnitQueue};
use crate::engine::budget::{self, Held};
use crate::engine::checksum::verify_by_checksum;
use crate::engine::completion;
use crate::engine::discovery::{
    Discover, Unit, discover, early_candidate, pull_into_nothing, pull_top, push_root, unit_name,
};
use crate::engine::early::EarlyHashes;
use crate::engine::job::Setup;
use crate::engine::lanes::{self, Lanes};
use crate::engine::plan::{self, Direction, Endpoints, Plan, PullScope, PushScope};
use crate::engine::shared_source::SourceHost;
use crate::engine::state::StateDir;
use crate::engine::{ItemError, Options, Summary, pull, push};
use crate::error::{Error, Result};
use crate::local::{Destination, GroupSync, RelativePath, Timestamp};
use crate::progress::Reporter;
use crate::remote::pool::{Eager, Pool};
use crate::remote::read_only::ReadOnly;
use crate::remote::{EntryKind, Remote, SetAttributes};
use futures::StreamExt;
use serde::Serialize;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

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

/// Units planned at once, workers and scouts together (see `engine::ahead`): on a
/// far link each plan waits several round trips, and a re-run of a tree of many directories
/// is mostly plans.
pub const PLANNED_AT_ONCE: usize = 16;
/// The same over a far link ([`lanes::FAR_ROUND_TRIP`]), where a plan is mostly waiting: a
/// unit's plan is three round trips or more (its stat, the opendir, the readdirs).
pub const PLANNED_AT_ONCE_FAR: usize = 64;

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

/// A pull or a push, as the command line gave it.
pub struct Transfer {
    pub direction: Direction,
    pub remote_path: String,
    pub local_path: PathBuf,
    pub state: StateDir,
    pub reporter: Arc<dyn Reporter>,
    pub options: UnitOptions,
    /// A push to several hosts: this host's part in reading the source once for all of them.
    pub shared_source: Option<Arc<SourceHost>>,
    /// The syncs that make a pull's small files durable: one for every transfer writing to
    /// the same disks (the hosts of a fleet pull share it), so they share the syncs.
    pub group_sync: Arc<GroupSync>,
}

/// Shared by the workers.
struct Shared<P: Pool> {
    transfer: Transfer,
    pool: Arc<P>,
    endpoints: Endpoints,
    destination: Option<Arc<Destination>>,
    /// Where a pull's plans say the destination is.
    local_root: PathBuf,
    /// Units waiting for a worker, and those scouts planned ahead (`ahead`).
    queue: UnitQueue<Unit, (Unit, Plan)>,
    results: Mutex<Vec<(UnitReport, Summary)>>,
    /// The connection budget (`-j`, twice that on a far link): one slot per running unit, the
    /// rest lent to large files.
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

/// Runs a whole transfer: connects with `connect` (told whether data will most likely move,
/// so it can start a data session at once, and what to open ahead over a far link), discovers
/// the units over the planner, then runs them.
pub async fn run<P, Connect, Connecting>(transfer: Transfer, connect: Connect) -> Result<Summary>
where
    P: Pool,
    Connect: FnOnce(Eager) -> Connecting,
    Connecting: Future<Output = Result<P>>,
{
    let started = Instant::now();
    // A fleet push reads each block once for every host (`shared_source`); hashing the file
    // while connecting would read it a second time, for hashes only a delta or a resume uses,
    // and those hash what they need as they go.
    let early = early_candidate(&transfer)
        .filter(|_| transfer.shared_source.is_none())
        .and_then(|path| EarlyHashes::start(&path));
    let eager = early.is_some() || pull_into_nothing(&transfer);
    let jobs = transfer.options.jobs.clamp(1, 64);
    let pool = Arc::new(
        connect(Eager {
            data_likely: eager,
            far: lanes::FAR_ROUND_TRIP,
            ahead_when_far: lanes::connection_budget(jobs, lanes::FAR_ROUND_TRIP) - 1,
        })
        .await?,
    );
    let first = pool.planner();
    let endpoints = Endpoints {
        remote_id: pool.remote_id().to_string(),
    };
    let round_trip = match pool.round_trip() {
        Some(round_trip) => round_trip,
        None => round_trip(&*first, &transfer.remote_path).await,
    };
    let budget = lanes::connection_budget(jobs, round_trip);
    tracing::debug!(?round_trip, budget, "connections");
    // On a far link every connection takes a second or more to come up, longer than the
    // discovery: when data will most likely move, the whole budget is opened now, beside it.
    // Workers and large files take these before opening any of their own.
    let opened_early = eager && round_trip >= lanes::FAR_ROUND_TRIP;
    if opened_early {
        pool.expect_data(budget - 1);
    }
    let discovery = discover(&transfer, &*first, Discover::ToTransfer).await?;
    let data_expected = discovery.data_expected;
    tracing::debug!(units = discovery.units.len(), data_expected, "discovered");
    let jobs = jobs.min(discovery.units.len().max(1));
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
        queue: UnitQueue::new(discovery.units),
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
        if !opened_early {
            shared.pool.expect_data(jobs - 1);
        }
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
    // --checksum plans over the data sessions (it hashes): no scouts then.
    let planned_at_once = if round_trip >= lanes::FAR_ROUND_TRIP {
        PLANNED_AT_ONCE_FAR
    } else {
        PLANNED_AT_ONCE
    };
    let scouts = planned_at_once.saturating_sub(jobs);
    if !shared.transfer.options.checksum && scouts > 0 {
        let share = budget::TRANSFER.cap() / 2 / scouts;
        for _ in 0..scouts {
            let shared = shared.clone();
            workers.spawn(async move { scout(shared, jobs, share).await });
        }
    }
    while let Some(joined) = workers.join_next().await {
        if let Err(error) = joined {
            return Err(Error::internal(format!("a worker failed: {error}")));
        }
    }
    // The top directory's own mode and mtime last: every unit wrote into it.
    let root_error = match root {
        Some((mode, mtime)) => finish_root(&shared, first, mode, mtime).await.err(),
        None => None,
    };
    let mut summary = gather(&shared);
    if let Some(error) = root_error {
        summary.errors.push(ItemError::new("", &error));
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// How long one small request over the planner takes: the link's round trip, near enough
/// (the time of the host's answer is small beside a far link's). Measured on the clock tests
/// can pause; a failure counts as a near link.
async fn round_trip<R: Remote>(planner: &R, path: &str) -> Duration {
    let started = tokio::time::Instant::now();
    match planner.stat(path, false).await {
        Ok(_) => started.elapsed(),
        Err(_) => Duration::ZERO,
    }
}

/// The units' reports and summaries as one summary, units in order of their names.
fn gather<P: Pool>(shared: &Shared<P>) -> Summary {
    let mut results = std::mem::take(
        &mut *shared
            .results
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    results.sort_by(|a, b| a.0.unit.cmp(&b.0.unit));
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
    summary
}

/// Sets the mode and mtime of the transfer's top directory on the destination.
async fn finish_root<P: Pool>(
    shared: &Shared<P>,
    first: Arc<P::Remote>,
    mode: u32,
    mtime: i64,
) -> Result<()> {
    match shared.transfer.direction {
        Direction::Pull => match &shared.destination {
            Some(destination) => {
                let top = pull_top(&shared.transfer, EntryKind::Directory)?;
                let time = Timestamp {
                    seconds: mtime,
                    nanoseconds: 0,
                };
                destination.set_permissions_and_times(&top, mode, time)
            }
            None => Ok(()),
        },
        Direction::Push => finish_remote_root(shared, first, mode, mtime).await,
    }
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

/// Takes units from the queue until it is empty, those scouts planned first. The worker's
/// slot is held across units, so a large file's borrowing never delays the next unit; once the
/// queue is empty the worker's connection is left to the lanes before its slot is given up,
/// and the files still running get it without a new handshake.
async fn worker<P: Pool>(shared: Arc<Shared<P>>) {
    let mut connection = None;
    let slot = shared.lanes.hold_slot().await;
    while let Some(next) = shared.queue.next_for_worker().await {
        let (unit, plan) = match next {
            Next::Planned((unit, plan)) => (unit, Some(plan)),
            Next::Unplanned(unit) => (unit, None),
        };
        let (report, summary) = run_unit(&shared, &unit, &mut connection, plan).await;
        record_result(&shared, report, summary);
    }
    if let Some(connection) = connection {
        shared.lanes.add_idle(connection);
    }
    drop(slot);
}

/// Plans units ahead of the workers (see [`crate::engine::ahead`]) over the pool's listing
/// session beside the planner's ([`Pool::lister`]), else over the planner: a unit found
/// complete is done here, and so is one whose planning failed for a reason a worker would meet
/// again; one with work is handed to the workers with its plan.
///
/// What planning ahead costs is memory, which must never make a worker's plan fail: the
/// scouts' plans together hold at most half the transfer's budget (`share` each), a scout
/// waits while `jobs` planned units wait for a worker, and ends when a quarter of the budget
/// is held. A unit too large for a scout's share is given back to the workers, and the scouts
/// stop: the tree's units are large, and listing them twice would cost more than planning
/// ahead saves.
async fn scout<P: Pool>(shared: Arc<Shared<P>>, jobs: usize, share: usize) {
    while !shared.planner.is_closed()
        && budget::TRANSFER.mostly_free()
        && let Some(unit) = shared.queue.next_for_scout(jobs).await
    {
        // The lister once it is up (the first ask starts it), the planner until then.
        let remote = shared
            .pool
            .lister()
            .unwrap_or_else(|| shared.planner.clone());
        let outcome = match check_unit(&shared, &remote, &unit, share).await {
            Ok(Checked::Complete(summary)) => {
                settled_by_scout(&shared, &unit, UnitOutcome::SkippedComplete, None, summary)
            }
            Ok(Checked::Work(plan)) => Scouted::Planned((unit, plan)),
            // Planned again by a worker, which retries what is transient and has the room
            // a scout's share lacked.
            Err(error) if error.is_transient() || error.source_is::<budget::OverShare>() => {
                shared.queue.stop_scouting();
                Scouted::GiveBack(unit)
            }
            // A worker would meet it again (a listing past its cap, a directory it may not
            // read): planning it twice would only double what a server made xfer read.
            Err(error) => {
                let summary = Summary {
                    errors: vec![ItemError::new(&unit_name(&unit), &error)],
                    ..Summary::default()
                };
                settled_by_scout(
                    &shared,
                    &unit,
                    UnitOutcome::Failed,
                    Some(error.to_string()),
                    summary,
                )
            }
        };
        shared.queue.scouted(outcome);
    }
}

/// Records a unit a scout settled on its one plan (found complete, or failed for good).
fn settled_by_scout<P: Pool>(
    shared: &Shared<P>,
    unit: &Unit,
    outcome: UnitOutcome,
    last_error: Option<String>,
    summary: Summary,
) -> Scouted<Unit, (Unit, Plan)> {
    let report = UnitReport {
        unit: unit_name(unit),
        outcome,
        attempts: 1,
        files_transferred: 0,
        bytes_moved: 0,
        last_error,
    };
    record_result(shared, report, summary);
    shared.unit_settled();
    Scouted::Complete
}

/// Keeps a unit's report and summary for the end of the run, and as many of its skipped
/// entries as the run keeps.
fn record_result<P: Pool>(shared: &Shared<P>, report: UnitReport, mut summary: Summary) {
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

/// Runs one unit to completion or to its last attempt; `ready` is its plan when a scout made
/// it (the first attempt runs on it).
async fn run_unit<P: Pool>(
    shared: &Shared<P>,
    unit: &Unit,
    connection: &mut Option<Arc<P::Remote>>,
    ready: Option<Plan>,
) -> (UnitReport, Summary) {
    let mut planned = false;
    let outcome = attempt_until_done(shared, unit, connection, &mut planned, ready).await;
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
    mut ready: Option<Plan>,
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
        let attempt = attempt_unit(
            shared,
            unit,
            connection,
            first_attempt,
            planned,
            ready.take(),
        )
        .await;
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
    ready: Option<Plan>,
) -> Result<Attempt> {
    let transfer = &shared.transfer;
    let plan = match ready {
        Some(plan) => plan,
        None => {
            // A unit is planned over the first connection's listing session, so a unit with
            // nothing to do never opens a connection of its own. A retry plans over its fresh
            // connection (the first one may be what failed), and --checksum hashes, which
            // wants the data session.
            let remote =
                if first_attempt && !transfer.options.checksum && !shared.planner.is_closed() {
                    shared.planner.clone()
                } else {
                    data_session(shared, connection).await?
                };
            match check_unit(shared, &*remote, unit, usize::MAX).await? {
                Checked::Complete(summary) => return Ok(Attempt::SkippedComplete(summary)),
                Checked::Work(plan) => plan,
            }
        }
    };
    let record_file = completion::record_file(transfer, &shared.endpoints, unit);
    let record = completion::completion_record(unit, &plan);
    let remote = data_session(shared, connection).await?;
    if !*planned {
        transfer
            .reporter
            .planned(plan.files().count() as u64, plan.total_file_bytes());
        *planned = true;
        shared.unit_settled();
    }
    // Counts what this attempt moved, failed files included: the summary says what moved over
    // every attempt, and an attempt that moved anything resets the retry backoff.
    let counting = Arc::new(CountingReporter {
        inner: transfer.reporter.clone(),
        bytes: AtomicU64::new(0),
    });
    let mut summary = execute(shared, remote, &plan, counting.clone()).await?;
    summary.bytes_moved = counting.bytes.load(Ordering::Relaxed);
    completion::settle(
        &record_file,
        &record,
        summary.errors.is_empty(),
        &unit_name(unit),
    );
    Ok(Attempt::Executed(summary))
}

/// A unit found complete (its summary), or its plan.
enum Checked {
    Complete(Summary),
    Work(Plan),
}

/// Plans `unit` over `remote`, holding at most `held_at_most` bytes of the transfer's budget,
/// and tells whether a run completed it and nothing changed since.
async fn check_unit<P: Pool>(
    shared: &Shared<P>,
    remote: &P::Remote,
    unit: &Unit,
    held_at_most: usize,
) -> Result<Checked> {
    let transfer = &shared.transfer;
    let mut plan = plan_unit(
        transfer,
        remote,
        unit,
        shared.destination.as_deref(),
        &shared.local_root,
        &shared.endpoints,
        held_at_most,
    )
    .await?;
    if transfer.options.checksum {
        verify_by_checksum(
            &mut plan,
            remote,
            shared.destination.as_deref(),
            transfer.direction,
        )
        .await?;
    }
    let record_file = completion::record_file(transfer, &shared.endpoints, unit);
    let record = completion::completion_record(unit, &plan);
    Ok(
        if completion::found_complete(&plan, &record, &record_file) {
            Checked::Complete(completion::complete_summary(&plan))
        } else {
            Checked::Work(plan)
        },
    )
}

/// Executes a unit's plan over `remote`, reporting to `reporter`.
async fn execute<P: Pool>(
    shared: &Shared<P>,
    remote: Arc<P::Remote>,
    plan: &Plan,
    reporter: Arc<dyn Reporter>,
) -> Result<Summary> {
    let transfer = &shared.transfer;
    let setup = Setup {
        state: transfer.state.clone(),
        endpoints: shared.endpoints.clone(),
        reporter,
        options: transfer.options.engine,
        lanes: Some(shared.lanes.clone()),
        early: shared.early.clone(),
        shared_source: transfer.shared_source.clone(),
        group_sync: transfer.group_sync.clone(),
    };
    Ok(match transfer.direction {
        Direction::Pull => {
            let destination = shared
                .destination
                .clone()
                .ok_or_else(|| Error::internal("a pull without a destination"))?;
            pull::execute(remote, plan, destination, setup).await
        }
        Direction::Push => push::execute(remote, plan, setup).await,
    })
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
    held_at_most: usize,
) -> Result<Plan> {
    let (state, local_text) = (&transfer.state, transfer.local_path.display().to_string());
    let plan = match transfer.direction {
        Direction::Pull => {
            let scope = PullScope {
                source: &unit.source,
                destination_text: &local_text,
                destination_root: local_root,
                destination,
                top: &unit.relative,
                shallow: unit.shallow,
                held_at_most,
            };
            plan::plan_pull(remote, &scope, state, endpoints).await?
        }
        Direction::Push => {
            let scope = PushScope {
                source: Path::new(&unit.source),
                destination: &unit.target,
                shallow: unit.shallow,
                fix_crlf: transfer.options.fix_crlf,
                held_at_most,
            };
            plan::plan_push(remote, &scope, state, endpoints).await?
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
    // Planned as a run plans them, several at once (each waits round trips), and taken in the
    // units' order: the first unit's plan is the whole one's.
    let (planner, endpoints) = (&planner, &endpoints);
    let (destination, local_root) = (discovery.destination.as_deref(), &discovery.local_root);
    let units = &discovery.units;
    // By index: a closure over borrowed units would not be `Send` for every lifetime.
    let mut plans = futures::stream::iter(0..units.len())
        .map(|index| async move {
            let unit = &units[index];
            let plan = plan_unit(
                transfer,
                planner,
                unit,
                destination,
                local_root,
                endpoints,
                usize::MAX,
            )
            .await;
            (unit, plan)
        })
        .buffered(PLANNED_AT_ONCE);
    let mut whole: Option<Plan> = None;
    while let Some((unit, plan)) = plans.next().await {
        let plan = plan?;
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
    let mut whole = whole.ok_or_else(|| Error::internal("a transfer with no unit to plan"))?;
    whole.sort_as_walked();
    Ok(whole)
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
