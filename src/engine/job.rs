//! The phases every transfer of a plan goes through, in either direction, written once.
//!
//! A plan is applied in four phases: directories (parents first, as the plan lists them),
//! files (several at once), symlinks (once what they point to exists), then directory modes and
//! mtimes, deepest first, so writing children does not change them. Nothing is written below a
//! directory that could not be made. A `Side` is the destination's half of the work, the
//! local disk for a pull (`pull`) and the remote for a push (`push`); this module owns the
//! order, the counting and the reporting.

use crate::engine::early::EarlyHashes;
use crate::engine::lanes::Lanes;
use crate::engine::plan::{self, Action, Endpoints, Plan, PlanItem};
use crate::engine::shared_source::SourceHost;
use crate::engine::state::StateDir;
use crate::engine::{ItemError, Options, Summary};
use crate::error::{Error, Result};
use crate::local::GroupSync;
use crate::progress::Reporter;
use crate::remote::{EntryKind, Remote};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

/// What either direction needs besides the remote, the plan (and a pull's destination).
pub struct Setup<R: Remote> {
    pub state: StateDir,
    pub endpoints: Endpoints,
    pub reporter: Arc<dyn Reporter>,
    pub options: Options,
    /// Extra connections a large file may borrow.
    pub lanes: Option<Arc<Lanes<R>>>,
    /// The local file's hashes, computed while connecting.
    pub early: Option<Arc<EarlyHashes>>,
    /// A push to several hosts: this host's part in reading the source once for all of them.
    pub shared_source: Option<Arc<SourceHost>>,
    /// The syncs that make a pull's small files durable (see [`GroupSync`]).
    pub group_sync: Arc<GroupSync>,
}

/// What every file's transfer of one plan shares: the remote, the requests in flight on its
/// connection, and the setup; `destination` is the local destination of a pull (nothing for a
/// push).
pub(crate) struct Context<R: Remote, D = ()> {
    pub remote: Arc<R>,
    /// Reads or writes in flight on this connection, whatever file they belong to: bounds the
    /// memory they hold (and half-assembled blocks) and what a dropped link loses.
    pub requests: Arc<tokio::sync::Semaphore>,
    /// A pull's files moving data at once ([`Options::files_in_flight`]): a pulled file gives
    /// its slot back while it waits for the sync that makes it durable, so the next ones move
    /// meanwhile. A push's files are bounded by [`Side::files_in_flight`] alone.
    pub moving: Arc<tokio::sync::Semaphore>,
    pub destination: D,
    pub setup: Setup<R>,
}

impl<R: Remote, D> Context<R, D> {
    pub fn new(remote: Arc<R>, destination: D, setup: Setup<R>) -> Self {
        Context {
            requests: Arc::new(tokio::sync::Semaphore::new(
                setup.options.requests_for(remote.max_io_size()),
            )),
            moving: Arc::new(tokio::sync::Semaphore::new(
                setup.options.files_in_flight.max(1),
            )),
            remote,
            destination,
            setup,
        }
    }
}

/// What applying a plan needs of the side being written.
pub(crate) trait Side: Send + Sync + Sized + 'static {
    fn reporter(&self) -> &Arc<dyn Reporter>;

    /// Files transferred at once.
    fn files_in_flight(&self) -> usize;

    /// Before any item: what every item needs (a push makes the destination's parents).
    fn prepare(&self, plan: &Plan) -> impl Future<Output = Result<()>> + Send {
        let _ = plan;
        async { Ok(()) }
    }

    /// Makes a directory of the plan (one that is up to date too, where the side needs to).
    fn make_directory(&self, item: &PlanItem) -> impl Future<Output = Result<()>> + Send;

    /// Transfers one file that is not up to date, verified whole before it counts.
    fn transfer_file(
        self: Arc<Self>,
        item: PlanItem,
    ) -> impl Future<Output = Result<FileTotals>> + Send;

    /// Makes a symlink that is not up to date.
    fn make_symlink(&self, item: &PlanItem) -> impl Future<Output = Result<()>> + Send;

    /// Sets a directory's mode and mtime, once everything below it is written.
    fn finish_directory(&self, item: &PlanItem) -> impl Future<Output = Result<()>> + Send;
}

/// Applies `plan` on `side`: the four phases, each item's failure reported and the others
/// going on.
pub(crate) async fn execute<S: Side>(side: Arc<S>, plan: &Plan) -> Summary {
    let started = Instant::now();
    let mut summary = starting_summary(plan, &**side.reporter());
    if let Err(error) = side.prepare(plan).await {
        summary.errors.push(ItemError::new("", &error));
        summary.seconds = started.elapsed().as_secs_f64();
        return summary;
    }
    let directories = || {
        plan.items
            .iter()
            .filter(|item| item.kind == EntryKind::Directory)
    };

    let mut failed_directories: Vec<String> = Vec::new();
    for item in directories() {
        summary.directories += 1;
        if let Err(error) = side.make_directory(item).await {
            failed_directories.push(item.path.clone());
            summary.errors.push(ItemError::new(&item.path, &error));
        }
    }
    let under_failed = |item: &PlanItem| below_any(&failed_directories, &item.path);

    transfer_files(
        plan.files().filter(|item| !under_failed(item)),
        side.files_in_flight(),
        side.reporter().clone(),
        &mut summary,
        |item| side.clone().transfer_file(item),
    )
    .await;

    for item in plan
        .items
        .iter()
        .filter(|item| item.kind == EntryKind::Symlink)
    {
        summary.symlinks += 1;
        if item.action == Action::UpToDate || under_failed(item) {
            continue;
        }
        if let Err(error) = side.make_symlink(item).await {
            summary.errors.push(ItemError::new(&item.path, &error));
        }
    }

    for item in directories().rev() {
        if failed_directories.contains(&item.path) {
            continue;
        }
        if let Err(error) = side.finish_directory(item).await {
            summary.errors.push(ItemError::new(&item.path, &error));
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    summary
}

/// What one file's transfer moved.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FileTotals {
    pub moved: u64,
    pub reused: u64,
}

/// Transfers `files` with at most `in_flight` at once (up-to-date ones are only counted),
/// reports each as it finishes, and adds the outcomes to `summary`: the scheduling shared by
/// pull and push.
pub(crate) async fn transfer_files<'a, F, Fut>(
    files: impl Iterator<Item = &'a PlanItem>,
    in_flight: usize,
    reporter: Arc<dyn Reporter>,
    summary: &mut Summary,
    transfer: F,
) where
    F: Fn(PlanItem) -> Fut,
    Fut: Future<Output = Result<FileTotals>> + Send + 'static,
{
    let mut queue: VecDeque<&PlanItem> = files.collect();
    let mut tasks: tokio::task::JoinSet<(String, Result<FileTotals>)> = tokio::task::JoinSet::new();
    loop {
        while tasks.len() < in_flight.max(1) {
            let Some(item) = queue.pop_front() else { break };
            if item.action == Action::UpToDate {
                summary.files_up_to_date += 1;
                summary.bytes_reused = summary.bytes_reused.saturating_add(item.size);
                continue;
            }
            let path = item.path.clone();
            let work = transfer(item.clone());
            let reporter = reporter.clone();
            tasks.spawn(async move {
                let result = work.await;
                match &result {
                    Ok(_) => reporter.file_finished(&path, Ok(())),
                    Err(error) => reporter.file_finished(&path, Err(&error.to_string())),
                }
                (path, result)
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        match joined {
            Ok((_, Ok(totals))) => {
                summary.files_transferred += 1;
                summary.bytes_moved = summary.bytes_moved.saturating_add(totals.moved);
                summary.bytes_reused = summary.bytes_reused.saturating_add(totals.reused);
            }
            Ok((path, Err(error))) => {
                summary.files_failed += 1;
                summary.errors.push(ItemError::new(&path, &error));
            }
            Err(panic) => {
                summary.files_failed += 1;
                let error = Error::internal(format!("a transfer task failed: {panic}"));
                summary.errors.push(ItemError::new("", &error));
            }
        }
    }
}

/// The summary a pull or push of `plan` starts from: what planning skipped (each reported as a
/// warning) and what it could not examine, and the number of files.
pub(crate) fn starting_summary(plan: &plan::Plan, reporter: &dyn Reporter) -> Summary {
    for warning in &plan.warnings {
        reporter.warning(&format!("{}: {}", warning.path, warning.reason));
    }
    for skipped in &plan.skipped {
        reporter.warning(&format!("skipped {}: {}", skipped.path, skipped.reason));
    }
    Summary {
        files: plan.files().count() as u64,
        skipped: plan.skipped.clone(),
        errors: plan.problems.clone(),
        ..Summary::default()
    }
}

/// Whether `path` lies in (or is) one of the directories that could not be made: nothing is
/// written below those.
pub(crate) fn below_any(directories: &[String], path: &str) -> bool {
    directories
        .iter()
        .any(|directory| directory.is_empty() || path.starts_with(&format!("{directory}/")))
}
