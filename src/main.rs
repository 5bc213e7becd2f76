//! The `xfer` binary: parse arguments, build settings, dispatch, and turn the outcome into a
//! message and an exit code. Everything else lives in the library.

mod cli;

use cli::args::{Cli, Command, SecretCommand};
use cli::output::errln;
use cli::settings::Verbosity;
use std::process::ExitCode;
use xfer::engine::plan::Direction;
use xfer::terminal::{printable_lines, printable_message};

fn main() -> ExitCode {
    let cli = Cli::parse_in_order();
    if let Command::Agent(args) = &cli.command {
        // Its stdout is the protocol: no logging setup, no messages.
        return ExitCode::from(xfer::agent::server::run_stdio(args.protocol_max) as u8);
    }
    let output = match &cli.command {
        Command::Pull(args) | Command::Push(args) => &args.output,
        Command::Doctor(args) => &args.output,
        Command::Secret(SecretCommand::Push(args)) => &args.output,
        Command::Secret(SecretCommand::Check(args)) => &args.output,
        Command::ForgetHost(args) => &args.output,
        Command::Agent(_) => return ExitCode::from(2),
    };
    let verbosity = Verbosity::from_args(output);
    cli::logging::init(verbosity);
    // This binary is the agent it deploys to hosts.
    if let Ok(executable) = std::env::current_exe() {
        xfer::remote::deploy::serve_agent_from(executable);
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            errln!("xfer: cannot start the async runtime: {error}");
            return ExitCode::from(5);
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Pull(args) => cli::transfer::run(args, Direction::Pull, verbosity).await,
            Command::Push(args) => cli::transfer::run(args, Direction::Push, verbosity).await,
            Command::Doctor(args) => cli::doctor::run(args).await,
            Command::Secret(SecretCommand::Push(args)) => cli::secret::push(args).await,
            Command::Secret(SecretCommand::Check(args)) => cli::secret::check(args).await,
            Command::ForgetHost(args) => cli::forget_host::run(args, verbosity == Verbosity::Quiet),
            Command::Agent(_) => Ok(()),
        }
    });
    // Proxy commands and jump connections end with the runtime; do not wait on stragglers.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    xfer::ssh::system::clean_up();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            errln!("xfer: {}", printable_lines(&error.to_string()));
            if let Some(hint) = error.hint() {
                errln!("hint: {}", printable_message(hint));
            }
            ExitCode::from(error.kind().exit_code() as u8)
        }
    }
}
