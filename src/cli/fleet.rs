//! `xfer pull` and `xfer push` on several hosts: each host's transfer runs on its own (its
//! connections, retries, journals), a bounded number at once; a push reads its source once
//! for all of them. Prints a line per host as it finishes, then a table (or JSON), and turns
//! the hosts' outcomes into one exit code.

use crate::cli::output::{errln, outln};
use crate::cli::progress::{FleetProgress, HostProgress};
use crate::cli::transfer::{Request, Target, Warnings, interrupted, resolve, show_plan};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;
use xfer::engine::Summary;
use xfer::engine::plan::{Direction, human_bytes};
use xfer::engine::shared_source::{DEFAULT_WINDOW, SharedSource};
use xfer::engine::state::StateDir;
use xfer::engine::units::{self, Transfer, UnitOptions};
use xfer::error::{Error, Result};
use xfer::fleet::{HostOutcome, HostState, fleet_error, for_each_host};
use xfer::local::GroupSync;
use xfer::remote::deploy::AgentMode;
use xfer::remote::pool::SessionPool;
use xfer::ssh::connect::Connector;
use xfer::terminal::{printable, printable_lines};

pub async fn run(request: Request) -> Result<()> {
    let connector = Arc::new(request.connection.connector()?);
    if request.direction == Direction::Pull && !request.dry_run {
        // The hosts' directories go inside it.
        std::fs::create_dir_all(&request.local_path).map_err(|error| {
            Error::local_io(
                format!("cannot create {}", request.local_path.display()),
                error,
            )
        })?;
    }
    if request.dry_run {
        return plan_each(&request, connector).await;
    }
    let names: Vec<String> = request
        .targets
        .iter()
        .map(|target| target.name.clone())
        .collect();
    let progress = Arc::new(FleetProgress::new(&names, request.verbose, request.quiet));
    let state = StateDir::locate()?;
    let at_once = request.hosts_at_once.min(request.targets.len()).max(1);
    let shared_source =
        (request.direction == Direction::Push).then(|| Arc::new(SharedSource::new(DEFAULT_WINDOW)));
    let started = Instant::now();
    let mut options = request.options;
    options.engine = options.engine.for_hosts_at_once(at_once, options.jobs);
    let host = HostRun {
        direction: request.direction,
        connector,
        agent: request.agent.clone(),
        options,
        state,
        shared_source: shared_source.clone(),
        group_sync: Arc::new(GroupSync::new()),
    };
    let work = for_each_host(request.targets.clone(), at_once, |_, target| {
        let (host, progress) = (host.clone(), progress.clone());
        async move {
            let reporter = progress.host_started(&target.name);
            let began = Instant::now();
            let result = host.run(&target, reporter.clone()).await;
            let outcome = host.outcome(&target, result, began);
            let failed = outcome.state != HostState::Done;
            progress.host_finished(&reporter, &finished_line(&outcome), failed);
            outcome
        }
    });
    let results = tokio::select! {
        results = work => results,
        kind = interrupted() => {
            // Every host's journals hold what landed (as after a SIGKILL): a re-run resumes.
            progress.finish();
            return Err(Error::new(
                kind,
                format!(
                    "interrupted: {} of {} host(s) finished; re-run the same command to resume",
                    progress.finished(),
                    request.targets.len()
                ),
            )
            .transient(true));
        }
    };
    progress.finish();
    let outcomes: Vec<HostOutcome> = results
        .into_iter()
        .zip(&request.targets)
        .map(|(result, target)| {
            result.unwrap_or_else(|error| host.outcome(target, Err(error), started))
        })
        .collect();
    if let Some(source) = &shared_source {
        tracing::debug!(
            bytes = source.bytes_read(),
            "source bytes read for all hosts"
        );
    }
    report(
        &outcomes,
        started.elapsed().as_secs_f64(),
        request.json,
        request.quiet,
    )?;
    match fleet_error(&outcomes) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// What every host's transfer shares.
#[derive(Clone)]
struct HostRun {
    direction: Direction,
    connector: Arc<Connector>,
    agent: AgentMode,
    options: UnitOptions,
    state: StateDir,
    shared_source: Option<Arc<SharedSource>>,
    /// Every host's pull writes to the same disks: their small files share syncs.
    group_sync: Arc<GroupSync>,
}

impl HostRun {
    /// One host's whole transfer, as a single-host command runs it.
    async fn run(&self, target: &Target, reporter: Arc<HostProgress>) -> Result<Summary> {
        let remote_path = resolve(&self.connector, &target.host, &target.remote_path).await?;
        let transfer = Transfer {
            direction: self.direction,
            remote_path,
            local_path: target.local_path.clone(),
            state: self.state.clone(),
            reporter: reporter.clone(),
            options: self.options,
            // Blocks are kept for this host from now until its transfer ends.
            shared_source: self
                .shared_source
                .as_ref()
                .map(|source| Arc::new(source.host())),
            group_sync: self.group_sync.clone(),
        };
        let (connector, host, agent) = (
            self.connector.clone(),
            target.host.clone(),
            self.agent.clone(),
        );
        let connect = |eager| SessionPool::connect(connector, host, agent, reporter, eager);
        units::run(transfer, connect).await
    }

    fn outcome(&self, target: &Target, result: Result<Summary>, began: Instant) -> HostOutcome {
        let local = target.local_path.display().to_string();
        let remote = format!("{}:{}", target.host, target.remote_path);
        let (source, destination) = match self.direction {
            Direction::Pull => (remote, local),
            Direction::Push => (local, remote),
        };
        // A connection error names the host already; a file's does not.
        let result = result.map_err(|error| {
            if error.to_string().contains(&target.host.host) {
                error
            } else {
                error.context(&target.name)
            }
        });
        HostOutcome::new(
            target.name.clone(),
            source,
            destination,
            result,
            began.elapsed().as_secs_f64(),
        )
    }
}

/// The line a host gets as it finishes.
fn finished_line(outcome: &HostOutcome) -> String {
    let host = printable(&outcome.host);
    let rate = rate(outcome.bytes_moved, outcome.seconds);
    match (&outcome.state, &outcome.summary) {
        (HostState::Done, Some(summary)) => format!(
            "{host}: done: {} file(s), {} moved{rate} in {:.1} s",
            summary.files,
            human_bytes(outcome.bytes_moved),
            outcome.seconds
        ),
        _ => format!(
            "{host}: {}: {}",
            outcome.state.as_str(),
            printable_lines(outcome.last_error.as_deref().unwrap_or("no error recorded"))
        ),
    }
}

fn rate(bytes: u64, seconds: f64) -> String {
    if bytes == 0 || seconds <= 0.0 {
        return String::new();
    }
    format!(" ({}/s)", human_bytes((bytes as f64 / seconds) as u64))
}

/// `--json` for several hosts.
#[derive(Serialize)]
struct FleetReport<'a> {
    hosts: &'a [HostOutcome],
    hosts_done: usize,
    hosts_partly: usize,
    hosts_failed: usize,
    bytes_moved: u64,
    seconds: f64,
}

fn report(outcomes: &[HostOutcome], seconds: f64, json: bool, quiet: bool) -> Result<()> {
    let count = |state| {
        outcomes
            .iter()
            .filter(|outcome| outcome.state == state)
            .count()
    };
    let bytes_moved = outcomes.iter().map(|outcome| outcome.bytes_moved).sum();
    if json {
        let report = FleetReport {
            hosts: outcomes,
            hosts_done: count(HostState::Done),
            hosts_partly: count(HostState::Partly),
            hosts_failed: count(HostState::Failed),
            bytes_moved,
            seconds,
        };
        crate::cli::output::print_json(&report)?;
        return Ok(());
    }
    if quiet {
        return Ok(());
    }
    errln!("{}", render_table(outcomes));
    errln!(
        "{} host(s): {} done, {} partly, {} failed; {} moved{} in {seconds:.1} s",
        outcomes.len(),
        count(HostState::Done),
        count(HostState::Partly),
        count(HostState::Failed),
        human_bytes(bytes_moved),
        rate(bytes_moved, seconds)
    );
    Ok(())
}

/// The summary table: host, state, bytes moved, time, last error.
fn render_table(outcomes: &[HostOutcome]) -> String {
    let rows: Vec<[String; 5]> = outcomes
        .iter()
        .map(|outcome| {
            [
                printable(&outcome.host),
                outcome.state.as_str().to_string(),
                human_bytes(outcome.bytes_moved),
                format!("{:.1} s", outcome.seconds),
                outcome
                    .last_error
                    .as_deref()
                    .map(|error| printable(error.lines().next().unwrap_or_default()))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = ["HOST", "STATE", "MOVED", "TIME", "LAST ERROR"];
    let mut widths = header.map(|title| title.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut text = String::new();
        for (column, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if column == 4 {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.trim_end().to_string()
    };
    let mut table = line(header);
    for row in &rows {
        table.push('\n');
        table.push_str(&line(row.each_ref().map(String::as_str)));
    }
    table
}

/// A dry run on several hosts: each host's plan, under its name, in the order given.
async fn plan_each(request: &Request, connector: Arc<Connector>) -> Result<()> {
    let at_once = request.hosts_at_once.max(1);
    let (direction, agent, options, quiet) = (
        request.direction,
        request.agent.clone(),
        request.options,
        request.quiet,
    );
    let state = StateDir::locate()?;
    let plans = for_each_host(request.targets.clone(), at_once, |_, target| {
        let (connector, agent, state) = (connector.clone(), agent.clone(), state.clone());
        async move {
            let reporter = Arc::new(Warnings {
                quiet,
                host: Some(target.name.clone()),
            });
            let remote_path = resolve(&connector, &target.host, &target.remote_path).await?;
            let transfer = Transfer {
                direction,
                remote_path,
                local_path: target.local_path.clone(),
                state,
                reporter: reporter.clone(),
                options,
                shared_source: None,
                group_sync: Arc::new(GroupSync::new()),
            };
            let pool =
                SessionPool::for_planning(connector, target.host.clone(), agent, reporter).await?;
            units::plan_only(&transfer, &pool).await
        }
    })
    .await;
    let plans: Vec<Result<xfer::engine::plan::Plan>> = plans
        .into_iter()
        .map(|result| result.and_then(|plan| plan))
        .collect();
    if request.json {
        #[derive(Serialize)]
        struct HostPlan<'a> {
            host: &'a str,
            plan: Option<&'a xfer::engine::plan::Plan>,
            error: Option<String>,
        }
        let hosts: Vec<HostPlan> = request
            .targets
            .iter()
            .zip(&plans)
            .map(|(target, plan)| HostPlan {
                host: &target.name,
                plan: plan.as_ref().ok(),
                error: plan.as_ref().err().map(ToString::to_string),
            })
            .collect();
        crate::cli::output::print_json(&serde_json::json!({ "hosts": hosts }))?;
    } else {
        for (target, plan) in request.targets.iter().zip(&plans) {
            outln!("== {} ==", printable(&target.name));
            match plan {
                Ok(plan) => show_plan(plan, false, request.verbose)?,
                Err(error) => outln!("cannot plan: {}", printable_lines(&error.to_string())),
            }
        }
    }
    let failures: Vec<&Error> = plans
        .iter()
        .filter_map(|plan| plan.as_ref().err())
        .collect();
    match xfer::fleet::failure_kind(&failures) {
        None => Ok(()),
        Some(kind) => Err(Error::new(
            kind,
            format!(
                "{} of {} host(s) could not be planned",
                failures.len(),
                plans.len()
            ),
        )),
    }
}
