//! `xfer pull` and `xfer push`: parse the two ends, connect, plan, print the plan (dry run) or
//! execute it with progress, then print a summary (or JSON) and turn failures into an exit
//! code.

use crate::cli::args::TransferArgs;
use crate::cli::progress::TerminalReporter;
use crate::cli::settings::{ConnectionSettings, Verbosity};
use std::sync::Arc;
use xfer::engine::plan::{self, Direction, Endpoints, Plan, human_bytes};
use xfer::engine::state::StateDir;
use xfer::engine::{Options, Summary, pull, push};
use xfer::error::{Error, ErrorKind, Result};
use xfer::local::Destination;
use xfer::remote::Remote;
use xfer::remote::sftp::SftpRemote;
use xfer::target::{HostSpec, Location, parse_location};

pub async fn run(args: &TransferArgs, direction: Direction, verbosity: Verbosity) -> Result<()> {
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
    let settings = ConnectionSettings::from_args(&args.connection)?;
    let connector = settings.connector()?;
    let state = StateDir::locate()?;
    let remote = open_remote(&connector, &host).await?;
    let config = remote.connection().config().clone();
    let endpoints = Endpoints {
        remote_id: format!("{}@{}:{}", config.user, config.hostname, config.port),
    };
    let options = Options {
        remote_digest: !args.no_remote_digest,
        ..Options::default()
    };
    let remote = Arc::new(remote);
    let quiet = verbosity == Verbosity::Quiet;
    let verbose = matches!(verbosity, Verbosity::Verbose(_));
    let reporter = Arc::new(TerminalReporter::new(verbose, quiet));

    let summary = match direction {
        Direction::Pull => {
            let root_entry = remote.stat(&remote_path, true).await?.ok_or_else(|| {
                Error::remote(format!(
                    "{}: {remote_path}: no such file or directory",
                    remote.label()
                ))
                .with_hint("check the remote path (relative paths start at the login directory)")
            })?;
            let target = plan::pull_target(&remote_path, root_entry.kind, &local_path)?;
            let destination = match Destination::open(&target.root, !args.dry_run) {
                Ok(destination) => Some(destination),
                Err(_) if args.dry_run => None,
                Err(error) => return Err(error),
            };
            let plan = plan::plan_pull(
                &*remote,
                &remote_path,
                &local_path.display().to_string(),
                &target.root,
                destination.as_ref(),
                &target.top,
                &state,
                &endpoints,
            )
            .await?;
            if args.dry_run {
                return show_plan(&plan, args.json);
            }
            let Some(destination) = destination else {
                return Err(Error::new(ErrorKind::LocalIo, "no destination"));
            };
            pull::execute(
                remote.clone(),
                &plan,
                Arc::new(destination),
                state,
                endpoints,
                reporter.clone(),
                options,
            )
            .await
        }
        Direction::Push => {
            let plan =
                plan::plan_push(&*remote, &local_path, &remote_path, &state, &endpoints).await?;
            if args.dry_run {
                return show_plan(&plan, args.json);
            }
            push::execute(
                remote.clone(),
                &plan,
                state,
                endpoints,
                reporter.clone(),
                options,
            )
            .await
        }
    };
    reporter.finish();
    report(&summary, args.json, quiet)?;
    match summary.outcome() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

async fn open_remote(
    connector: &xfer::ssh::connect::Connector,
    host: &HostSpec,
) -> Result<SftpRemote> {
    let connection = Arc::new(connector.connect(host).await?);
    SftpRemote::open(connection).await
}

fn show_plan(plan: &Plan, json: bool) -> Result<()> {
    if json {
        let text = serde_json::to_string_pretty(plan).map_err(|error| {
            Error::new(ErrorKind::LocalIo, format!("cannot encode JSON: {error}"))
        })?;
        println!("{text}");
    } else {
        print!("{}", plan.render());
    }
    Ok(())
}

fn report(summary: &Summary, json: bool, quiet: bool) -> Result<()> {
    if json {
        let text = serde_json::to_string_pretty(summary).map_err(|error| {
            Error::new(ErrorKind::LocalIo, format!("cannot encode JSON: {error}"))
        })?;
        println!("{text}");
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
    eprintln!(
        "{} file(s): {} transferred, {} up to date, {} failed; {} moved ({rate}), {} already in place; {:.1} s",
        summary.files,
        summary.files_transferred,
        summary.files_up_to_date,
        summary.files_failed,
        human_bytes(summary.bytes_moved),
        human_bytes(summary.bytes_reused),
        summary.seconds
    );
    for error in &summary.errors {
        eprintln!(
            "  failed {}: {}",
            error.path,
            xfer::target::printable_lines(&error.message)
        );
    }
    Ok(())
}
