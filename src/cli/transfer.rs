//! `xfer pull` and `xfer push`: parse the two ends, connect, plan, print the plan (dry run) or
//! execute it with progress, then print a summary (or JSON) and turn failures into an exit
//! code.

use crate::cli::args::TransferArgs;
use crate::cli::output::{errln, out, outln};
use crate::cli::progress::TerminalReporter;
use crate::cli::settings::{ConnectionSettings, Verbosity};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use xfer::engine::plan::{Direction, Plan, human_bytes};
use xfer::engine::state::StateDir;
use xfer::engine::units::{self, Transfer, UnitOptions, UnitOutcome};
use xfer::engine::{Options, Summary};
use xfer::error::{Error, ErrorKind, Result};
use xfer::progress::{NoProgress, Reporter};
use xfer::remote::deploy::AgentMode;
use xfer::remote::pool::SessionPool;
use xfer::ssh::connect::Connector;
use xfer::target::{HostSpec, Location, RemotePath, parse_location};

pub async fn run(args: &TransferArgs, direction: Direction, verbosity: Verbosity) -> Result<()> {
    let request = Request::from_args(args, direction, verbosity)?;
    let connector = Arc::new(request.connection.connector()?);
    let remote_path = resolve(&connector, &request.host, &request.remote_path).await?;
    let transfer = Transfer {
        direction,
        remote_path,
        local_path: request.local_path,
        state: StateDir::locate()?,
        reporter: Arc::new(NoProgress),
        options: request.options,
    };
    let (host, agent) = (request.host, request.agent);
    if request.dry_run {
        // Planned as a run plans, over SFTP where the host has it: that changes nothing on
        // the host, not even the agent's cache. Where it has none, the plan comes through the
        // agent, started as a real run starts it, which may put it into its private cache on
        // the host first: a dry run that fails where the real run works is no preview, and
        // what it may add is xfer's own file in xfer's own cache, which the real run puts
        // there anyway. The one line on stderr says when it went through the agent.
        let reporter = Arc::new(Warnings {
            quiet: request.quiet,
        });
        let pool = SessionPool::for_planning(connector, host, agent, reporter).await?;
        let plan = units::plan_only(&transfer, &pool).await?;
        return show_plan(&plan, request.json, request.verbose);
    }
    let reporter = Arc::new(TerminalReporter::new(request.verbose, request.quiet));
    let connect = |eager| SessionPool::connect(connector, host, agent, reporter.clone(), eager);
    let summary = execute(transfer, connect, &reporter).await?;
    report(&summary, request.json, request.quiet)?;
    match summary.outcome() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// A pull or push as the command line asks for it, checked before anything connects.
struct Request {
    host: HostSpec,
    /// As given: `~` and `~user` are resolved on the host.
    remote_path: String,
    local_path: PathBuf,
    connection: ConnectionSettings,
    agent: AgentMode,
    options: UnitOptions,
    dry_run: bool,
    json: bool,
    quiet: bool,
    verbose: bool,
}

impl Request {
    fn from_args(args: &TransferArgs, direction: Direction, verbosity: Verbosity) -> Result<Self> {
        let source = parse_location(&args.source)?;
        let destination = parse_location(&args.destination)?;
        let (host, remote_path, local_path) = match (direction, source, destination) {
            (Direction::Pull, Location::Remote { host, path }, Location::Local(local)) => {
                (host, path, local)
            }
            (Direction::Push, Location::Local(local), Location::Remote { host, path }) => {
                (host, path, local)
            }
            (Direction::Pull, _, _) => {
                return Err(Error::usage(
                    "pull takes HOST:PATH then a local path (xfer pull gpu:/ckpt ./ckpt)",
                ));
            }
            (Direction::Push, _, _) => {
                return Err(Error::usage(
                    "push takes a local path then HOST:PATH (xfer push ./out gpu:/data)",
                ));
            }
        };
        if args.jobs == 0 {
            return Err(Error::usage("-j takes at least 1"));
        }
        if !(0.0..=3600.0).contains(&args.retry_wait) {
            return Err(Error::usage("--retry-wait takes 0 to 3600 seconds"));
        }
        let connection = ConnectionSettings::from_args(&args.connection)?;
        if args.fix_crlf && direction == Direction::Pull {
            return Err(Error::usage(
                "--fix-crlf converts scripts on their way to a host: it applies to push",
            ));
        }
        let agent = match (&args.agent, args.no_agent) {
            (_, true) => AgentMode::Off,
            (Some(path), false) if path.is_empty() => {
                return Err(Error::usage("--agent takes a remote path"));
            }
            (Some(path), false) => AgentMode::Path(path.clone()),
            (None, false) => AgentMode::Auto,
        };
        let options = UnitOptions {
            jobs: args.jobs,
            retries: args.retries,
            retry_wait: Duration::from_secs_f64(args.retry_wait),
            checksum: args.checksum,
            fix_crlf: args.fix_crlf,
            engine: Options {
                remote_digest: !args.no_remote_digest,
                ..Options::default()
            },
        };
        Ok(Request {
            host,
            remote_path,
            local_path,
            connection,
            agent,
            options,
            dry_run: args.dry_run,
            json: args.json,
            quiet: verbosity == Verbosity::Quiet,
            verbose: matches!(verbosity, Verbosity::Verbose(_)),
        })
    }
}

/// The remote path with `~user` resolved on the host (`~` and relative paths need no lookup:
/// they start at the login directory).
async fn resolve(connector: &Connector, host: &HostSpec, path: &str) -> Result<String> {
    match xfer::target::remote_path(path) {
        RemotePath::Ready(path) => Ok(path),
        RemotePath::UserHome { user, rest } => {
            let connection = Arc::new(connector.connect(host).await?);
            let home = xfer::remote::home::user_home(&connection, &user).await;
            if let Ok(connection) = Arc::try_unwrap(connection) {
                connection.close().await;
            }
            Ok(xfer::remote::join(&home?, &rest))
        }
    }
}

/// Runs the transfer with progress on the terminal, until it ends or Ctrl-C or SIGTERM stops
/// it.
async fn execute<Connect, Connecting>(
    mut transfer: Transfer,
    connect: Connect,
    reporter: &Arc<TerminalReporter>,
) -> Result<Summary>
where
    Connect: FnOnce(bool) -> Connecting,
    Connecting: Future<Output = Result<SessionPool>>,
{
    transfer.reporter = reporter.clone();
    let summary = tokio::select! {
        summary = units::run(transfer, connect) => summary,
        kind = interrupted() => {
            // What is on disk is recorded as it lands (journals hold only synced blocks, as
            // after a SIGKILL), so stopping here loses only the bytes in flight.
            reporter.finish();
            let (done, planned) = reporter.files();
            return Err(Error::new(
                kind,
                format!(
                    "interrupted: {done} of {planned} file(s) done; re-run the same command to resume"
                ),
            )
            .transient(true));
        }
    };
    reporter.finish();
    summary
}

/// A dry run's reporter: planning says nothing but warnings.
struct Warnings {
    quiet: bool,
}

impl Reporter for Warnings {
    fn warning(&self, message: &str) {
        if !self.quiet {
            errln!("warning: {}", xfer::terminal::printable_message(message));
        }
    }
}

/// Prints a dry run's plan: what would change, and with `-v` what is already up to date.
fn show_plan(plan: &Plan, json: bool, verbose: bool) -> Result<()> {
    if json {
        let text = serde_json::to_string_pretty(plan).map_err(|error| {
            Error::new(ErrorKind::LocalIo, format!("cannot encode JSON: {error}"))
        })?;
        outln!("{text}");
    } else {
        out!("{}", plan.render(verbose));
    }
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM and says which. A second one while xfer winds down ends it at
/// once, with the same exit code.
async fn interrupted() -> ErrorKind {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without signal handlers the default action still stops xfer; nothing to wait for.
        return std::future::pending().await;
    };
    let kind = tokio::select! {
        _ = interrupt.recv() => ErrorKind::Interrupted,
        _ = terminate.recv() => ErrorKind::Terminated,
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        std::process::exit(kind.exit_code());
    });
    kind
}

/// How a unit is named to a person: its directory, or the top of the transfer.
fn unit_name(relative: &str) -> String {
    if relative.is_empty() || relative == "." {
        "the top directory".to_string()
    } else {
        format!("directory {}", xfer::terminal::printable(relative))
    }
}

fn report(summary: &Summary, json: bool, quiet: bool) -> Result<()> {
    if json {
        let text = serde_json::to_string_pretty(summary).map_err(|error| {
            Error::new(ErrorKind::LocalIo, format!("cannot encode JSON: {error}"))
        })?;
        outln!("{text}");
        return Ok(());
    }
    if quiet {
        return Ok(());
    }
    let rate = if summary.seconds > 0.0 {
        format!(
            "{}/s",
            human_bytes((summary.bytes_moved as f64 / summary.seconds) as u64)
        )
    } else {
        "-".into()
    };
    // Files of a unit that failed before it reached them are neither done nor failed.
    let not_reached = summary.files.saturating_sub(
        summary.files_transferred + summary.files_up_to_date + summary.files_failed,
    );
    let not_reached = match not_reached {
        0 => String::new(),
        count => format!(", {count} not reached"),
    };
    errln!(
        "{} file(s): {} transferred, {} up to date, {} failed{not_reached}; {} moved ({rate}), {} already in place; {:.1} s",
        summary.files,
        summary.files_transferred,
        summary.files_up_to_date,
        summary.files_failed,
        human_bytes(summary.bytes_moved),
        human_bytes(summary.bytes_reused),
        summary.seconds
    );
    // Each cause is said once: a unit's last error is often also its items' error, and many
    // items can fail the same way (a directory that cannot be made fails all below it).
    let mut said: Vec<String> = Vec::new();
    for unit in summary
        .units
        .iter()
        .filter(|unit| unit.outcome == UnitOutcome::Failed)
    {
        let message = unit.last_error.as_deref().unwrap_or("no error recorded");
        errln!(
            "  {} failed after {} attempt(s): {}",
            unit_name(&unit.unit),
            unit.attempts,
            xfer::terminal::printable_lines(message)
        );
        said.push(message.to_string());
    }
    if summary.units.len() > 1 {
        let skipped = summary
            .units
            .iter()
            .filter(|unit| unit.outcome == UnitOutcome::SkippedComplete)
            .count();
        let done = summary
            .units
            .iter()
            .filter(|unit| unit.outcome == UnitOutcome::Done)
            .count();
        errln!(
            "  directories: {done} done, {skipped} skipped as complete, {} failed",
            summary.units.len() - done - skipped
        );
    }
    let mut alike: Vec<(&xfer::engine::ItemError, usize)> = Vec::new();
    for error in &summary.errors {
        let whole = format!("{}: {}", error.path, error.message);
        if said
            .iter()
            .any(|told| *told == error.message || *told == whole)
        {
            continue;
        }
        match alike
            .iter_mut()
            .find(|(first, _)| first.message == error.message)
        {
            Some((_, count)) => *count += 1,
            None => alike.push((error, 0)),
        }
    }
    for (error, more) in alike {
        let path = if error.path.is_empty() {
            String::new()
        } else {
            format!(" {}", error.path)
        };
        let more = match more {
            0 => String::new(),
            more => format!(" (and {more} more with the same error)"),
        };
        errln!(
            "  failed{path}: {}{more}",
            xfer::terminal::printable_lines(&error.message)
        );
    }
    Ok(())
}
