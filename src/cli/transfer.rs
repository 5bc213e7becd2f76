//! `xfer pull` and `xfer push`: parse the two ends, connect, plan, print the plan (dry run) or
//! execute it with progress, then print a summary (or JSON) and turn failures into an exit
//! code.

use crate::cli::args::TransferArgs;
use crate::cli::output::{errln, out};
use crate::cli::progress::TerminalReporter;
use crate::cli::settings::{ConnectionSettings, Verbosity};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use xfer::engine::plan::{Direction, Plan, human_bytes};
use xfer::engine::state::StateDir;
use xfer::engine::units::{self, Transfer, UnitOptions, UnitOutcome};
use xfer::engine::{Options, Summary};
use xfer::error::{Error, ErrorKind, Result};
use xfer::local::GroupSync;
use xfer::progress::{NoProgress, Reporter};
use xfer::remote::deploy::AgentMode;
use xfer::remote::pool::{Eager, SessionPool};
use xfer::ssh::connect::Connector;
use xfer::target::{HostSpec, Location, RemotePath, parse_host, parse_location};

pub async fn run(args: &TransferArgs, direction: Direction, verbosity: Verbosity) -> Result<()> {
    let mut request = Request::from_args(args, direction, verbosity)?;
    if let Some(open_files) = crate::cli::open_files::raise() {
        let hosts = match request.fleet {
            true => request.hosts_at_once.min(request.targets.len()).max(1),
            false => 1,
        };
        request.options.engine = request
            .options
            .engine
            .within_open_files(open_files, hosts.saturating_mul(request.options.jobs));
    }
    if request.fleet {
        return crate::cli::fleet::run(request).await;
    }
    let connector = Arc::new(request.connection.connector()?);
    let Some(target) = request.targets.first().cloned() else {
        return Err(Error::usage("no host to transfer with"));
    };
    let remote_path = resolve(&connector, &target.host, &target.remote_path).await?;
    let transfer = Transfer {
        direction,
        remote_path,
        local_path: target.local_path,
        state: StateDir::locate()?,
        reporter: Arc::new(NoProgress),
        options: request.options,
        shared_source: None,
        group_sync: Arc::new(GroupSync::new()),
    };
    let (host, agent) = (target.host, request.agent);
    if request.dry_run {
        // Planned as a run plans, over SFTP where the host has it: that changes nothing on
        // the host, not even the agent's cache. Where it has none, the plan comes through the
        // agent, started as a real run starts it, which may put it into its private cache on
        // the host first: a dry run that fails where the real run works is no preview, and
        // what it may add is xfer's own file in xfer's own cache, which the real run puts
        // there anyway. The one line on stderr says when it went through the agent.
        let reporter = Arc::new(Warnings {
            quiet: request.quiet,
            host: None,
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

/// One host's side of a pull or push, as the command line named it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The host as written, after list expansion: a pull from several hosts writes into a
    /// directory of this name.
    pub name: String,
    pub host: HostSpec,
    /// As given: `~` and `~user` are resolved on the host.
    pub remote_path: String,
    pub local_path: PathBuf,
}

/// A pull or push as the command line asks for it, checked before anything connects.
pub struct Request {
    pub direction: Direction,
    pub targets: Vec<Target>,
    /// Several hosts (or a host list, or --hosts): each host is reported on its own, and a
    /// pull writes into `LOCAL/HOST`.
    pub fleet: bool,
    pub hosts_at_once: usize,
    /// The local side as given: a pull's parent of the per-host directories, a push's source.
    pub local_path: PathBuf,
    pub connection: ConnectionSettings,
    pub agent: AgentMode,
    pub options: UnitOptions,
    pub dry_run: bool,
    pub json: bool,
    pub quiet: bool,
    pub verbose: bool,
}

impl Request {
    fn from_args(args: &TransferArgs, direction: Direction, verbosity: Verbosity) -> Result<Self> {
        let (local_path, remotes) = split_locations(&args.locations, direction)?;
        let (fleet, targets) = targets(direction, &local_path, &remotes, args.hosts.as_deref())?;
        if args.jobs == 0 {
            return Err(Error::usage("-j takes at least 1"));
        }
        if args.hosts_at_once == 0 {
            return Err(Error::usage("--hosts-at-once takes at least 1"));
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
            direction,
            targets,
            fleet,
            hosts_at_once: args.hosts_at_once,
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

/// The local path and the remote arguments: a pull names its sources first and the local
/// path last, a push the local path first.
fn split_locations(locations: &[String], direction: Direction) -> Result<(PathBuf, Vec<String>)> {
    let usage = || match direction {
        Direction::Pull => Error::usage(
            "pull takes HOST:PATH (one or more) then a local path (xfer pull gpu:/ckpt ./ckpt)",
        ),
        Direction::Push => Error::usage(
            "push takes a local path then HOST:PATH (one or more) (xfer push ./out gpu:/data)",
        ),
    };
    let (local, remotes) = match direction {
        Direction::Pull => match locations.split_last() {
            Some((local, remotes)) if !remotes.is_empty() => (local, remotes),
            _ => return Err(usage()),
        },
        Direction::Push => match locations.split_first() {
            Some((local, remotes)) if !remotes.is_empty() => (local, remotes),
            _ => return Err(usage()),
        },
    };
    match parse_location(local)? {
        Location::Local(path) => Ok((path, remotes.to_vec())),
        Location::Remote { .. } => Err(usage()),
    }
}

/// Every host's side of the transfer, lists and a hosts file expanded, and whether the
/// command is a fleet command. Refuses a host named twice, and a pull where two sources would
/// land in the same local directory.
fn targets(
    direction: Direction,
    local: &Path,
    remotes: &[String],
    hosts_file: Option<&Path>,
) -> Result<(bool, Vec<Target>)> {
    let mut named: Vec<(HostSpec, String)> = Vec::new();
    let mut listed = false;
    match hosts_file {
        Some(file) => {
            let [path] = remotes else {
                return Err(Error::usage(
                    "with --hosts, give one remote path (without a host) and the local path",
                ));
            };
            if let Location::Remote { .. } = parse_location(path)? {
                return Err(Error::usage(format!(
                    "with --hosts, give the remote path without a host ('{}' names one)",
                    xfer::terminal::printable(path)
                )));
            }
            for host in xfer::host_list::read_file(file)? {
                named.push((parse_host(&host)?, path.clone()));
            }
            listed = true;
        }
        None => {
            for argument in remotes {
                let (hosts, path, is_list) = expand_remote(argument, direction)?;
                listed |= is_list;
                named.extend(hosts.into_iter().map(|host| (host, path.clone())));
            }
        }
    }
    if named.len() > xfer::host_list::MAX_HOSTS {
        return Err(Error::usage(format!(
            "more than {} hosts named",
            xfer::host_list::MAX_HOSTS
        )));
    }
    let fleet = listed || named.len() > 1;
    let mut targets: Vec<Target> = Vec::with_capacity(named.len());
    for (host, remote_path) in named {
        let name = host.to_string();
        let local_path = match (fleet, direction) {
            (true, Direction::Pull) => {
                if name == "." || name == ".." {
                    return Err(Error::usage(format!(
                        "a pull from several hosts writes into LOCAL/HOST, and '{name}' cannot be a directory's name"
                    )));
                }
                local.join(&name)
            }
            _ => local.to_path_buf(),
        };
        let clash = targets.iter().find(|other| match direction {
            // Directory names compared without case: on a client whose filesystem ignores it,
            // gpu-1 and GPU-1 are one directory.
            Direction::Pull => other.name.eq_ignore_ascii_case(&name),
            Direction::Push => other.name == name && other.remote_path == remote_path,
        });
        if let Some(other) = clash {
            let shown = xfer::terminal::printable(&name);
            return Err(match direction {
                Direction::Pull => Error::usage(format!(
                    "{shown} and {} would both be pulled into {}: a pull from several hosts writes each into LOCAL/HOST",
                    xfer::terminal::printable(&other.name),
                    local_path.display()
                ))
                .with_hint("pull a second path of one host with a second command"),
                Direction::Push => {
                    Error::usage(format!("{shown} is named twice with the same path"))
                }
            });
        }
        targets.push(Target {
            name,
            host,
            remote_path,
            local_path,
        });
    }
    Ok((fleet, targets))
}

/// A remote argument's hosts (its list expanded), its path, and whether it was a list.
fn expand_remote(argument: &str, direction: Direction) -> Result<(Vec<HostSpec>, String, bool)> {
    let not_remote = || {
        Error::usage(format!(
            "'{}' is not HOST:PATH: {} takes the local path {}",
            xfer::terminal::printable(argument),
            if direction == Direction::Pull {
                "pull"
            } else {
                "push"
            },
            if direction == Direction::Pull {
                "last"
            } else {
                "first"
            },
        ))
    };
    // A host list's brackets and commas are no host name's characters: the list is taken
    // apart first, then every host is checked as one.
    if let Some((hosts, path)) = list_split(argument)
        && xfer::host_list::is_list(hosts)
    {
        let hosts = xfer::host_list::expand(hosts)?
            .iter()
            .map(|host| parse_host(host))
            .collect::<Result<Vec<_>>>()?;
        if path.contains('\0') {
            return Err(Error::usage("a remote path contains a NUL byte"));
        }
        return Ok((hosts, path.to_string(), true));
    }
    match parse_location(argument)? {
        Location::Remote { host, path } => Ok((vec![host], path, false)),
        Location::Local(_) => Err(not_remote()),
    }
}

/// Splits `LIST:PATH` at the first `:` outside brackets, if no `/` comes before it.
fn list_split(argument: &str) -> Option<(&str, &str)> {
    let mut depth = 0usize;
    for (at, character) in argument.char_indices() {
        match character {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            '/' if depth == 0 => return None,
            ':' if depth == 0 => return Some((&argument[..at], &argument[at + 1..])),
            _ => {}
        }
    }
    None
}

/// The remote path with `~user` resolved on the host (`~` and relative paths need no lookup:
/// they start at the login directory).
pub async fn resolve(connector: &Connector, host: &HostSpec, path: &str) -> Result<String> {
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
    Connect: FnOnce(Eager) -> Connecting,
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

/// A dry run's reporter: planning says nothing but warnings (with the host's name, when a
/// command plans for several).
pub struct Warnings {
    pub quiet: bool,
    pub host: Option<String>,
}

impl Reporter for Warnings {
    fn warning(&self, message: &str) {
        if self.quiet {
            return;
        }
        let message = xfer::terminal::printable_message(message);
        match &self.host {
            Some(host) => errln!("{}: warning: {message}", xfer::terminal::printable(host)),
            None => errln!("warning: {message}"),
        }
    }
}

/// Prints a dry run's plan: what would change, and with `-v` what is already up to date.
pub fn show_plan(plan: &Plan, json: bool, verbose: bool) -> Result<()> {
    if json {
        crate::cli::output::print_json(&plan)?;
    } else {
        out!("{}", plan.render(verbose));
    }
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM and says which. A second one while xfer winds down ends it at
/// once, with the same exit code.
pub async fn interrupted() -> ErrorKind {
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
        xfer::ssh::system::clean_up();
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
        crate::cli::output::print_json(&summary)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each target's name, remote path and local path.
    type Layout = Vec<(String, String, PathBuf)>;

    fn layout(direction: Direction, arguments: &[&str]) -> Result<(bool, Layout)> {
        let arguments: Vec<String> = arguments.iter().map(|text| text.to_string()).collect();
        let (local, remotes) = split_locations(&arguments, direction)?;
        let (fleet, targets) = targets(direction, &local, &remotes, None)?;
        Ok((
            fleet,
            targets
                .into_iter()
                .map(|target| (target.name, target.remote_path, target.local_path))
                .collect(),
        ))
    }

    fn target(name: &str, path: &str, local: &str) -> (String, String, PathBuf) {
        (name.to_string(), path.to_string(), PathBuf::from(local))
    }

    #[test]
    fn one_host_is_not_a_fleet() {
        assert_eq!(
            layout(Direction::Pull, &["gpu:/ckpt", "./ckpt"]).expect("parses"),
            (false, vec![target("gpu", "/ckpt", "./ckpt")])
        );
        assert_eq!(
            layout(Direction::Push, &["./out", "me@gpu:data"]).expect("parses"),
            (false, vec![target("me@gpu", "data", "./out")])
        );
    }

    #[test]
    fn a_pull_from_several_hosts_writes_local_slash_host() {
        assert_eq!(
            layout(
                Direction::Pull,
                &["gpu-[1-2]:/ckpt", "me@head:~/ckpt", "out"]
            )
            .expect("parses"),
            (
                true,
                vec![
                    target("gpu-1", "/ckpt", "out/gpu-1"),
                    target("gpu-2", "/ckpt", "out/gpu-2"),
                    target("me@head", "~/ckpt", "out/me@head"),
                ]
            )
        );
        // A list of one host is still a fleet: the layout does not depend on the count.
        assert_eq!(
            layout(Direction::Pull, &["gpu-[7]:/ckpt", "out"]).expect("parses"),
            (true, vec![target("gpu-7", "/ckpt", "out/gpu-7")])
        );
        assert_eq!(
            layout(Direction::Pull, &["[::1]:/x", "a,b:/y", "out"]).expect("parses"),
            (
                true,
                vec![
                    target("[::1]", "/x", "out/[::1]"),
                    target("a", "/y", "out/a"),
                    target("b", "/y", "out/b"),
                ]
            )
        );
    }

    #[test]
    fn a_push_goes_to_every_destination() {
        assert_eq!(
            layout(Direction::Push, &["./data", "n[1-2]:/data", "n1:/backup"]).expect("parses"),
            (
                true,
                vec![
                    target("n1", "/data", "./data"),
                    target("n2", "/data", "./data"),
                    target("n1", "/backup", "./data"),
                ]
            )
        );
    }

    #[test]
    fn layouts_that_write_one_place_twice_are_refused() {
        for (direction, arguments) in [
            (Direction::Pull, &["n1:/a", "n1:/b", "out"][..]),
            (Direction::Pull, &["n[1-2]:/a", "N2:/a", "out"][..]),
            (Direction::Push, &["./d", "n[1-3]:/a", "n2:/a"][..]),
            // A host named `..` would put its copy beside LOCAL, not in it.
            (Direction::Pull, &["..:/a", "n1:/a", "out"][..]),
        ] {
            let error = layout(direction, arguments).expect_err("refused");
            assert_eq!(error.kind(), xfer::ErrorKind::Usage, "{arguments:?}");
        }
    }

    #[test]
    fn arguments_on_the_wrong_side_are_refused() {
        for (direction, arguments) in [
            (Direction::Pull, &["n1:/a", "n2:/b"][..]),
            (Direction::Pull, &["n1:/a", "./x", "out"][..]),
            (Direction::Push, &["n1:/a", "n2:/b"][..]),
            (Direction::Push, &["./x", "n1:/a", "./y"][..]),
            (Direction::Push, &["./x", "n[2-1]:/a"][..]),
        ] {
            assert!(layout(direction, arguments).is_err(), "{arguments:?}");
        }
    }

    #[test]
    fn host_lists_split_at_the_colon_outside_brackets() {
        assert_eq!(list_split("gpu-[1-2]:/d"), Some(("gpu-[1-2]", "/d")));
        assert_eq!(list_split("me@[::1]:/d"), Some(("me@[::1]", "/d")));
        assert_eq!(list_split("./a:b"), None);
        assert_eq!(list_split("plain"), None);
    }
}
