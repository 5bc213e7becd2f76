//! Where xfer's fixed remote scripts run: an exec channel of the connection, or the driver on
//! a shell-only endpoint's terminal ([`TerminalSession`]). Both give the script its stdin as
//! data, never on a command line, and return its output and exit status alike.

use crate::error::Result;
use crate::remote::shell_only::TerminalSession;
use crate::ssh::connect::Connection;
use crate::ssh::exec::{self, ExecLimits, ExecOutput};
use std::sync::Arc;

/// The way to run a script on one host.
pub enum Runner<'a> {
    Exec(&'a Connection),
    Terminal(&'a mut TerminalSession),
}

impl Runner<'_> {
    pub fn label(&self) -> &str {
        match self {
            Runner::Exec(connection) => connection.label(),
            Runner::Terminal(session) => session.label(),
        }
    }

    pub async fn run(
        &mut self,
        script: &'static str,
        stdin: &[u8],
        limits: ExecLimits,
    ) -> Result<ExecOutput> {
        match self {
            Runner::Exec(connection) => exec::run(connection, script, stdin, limits).await,
            Runner::Terminal(session) => session.run(script, stdin, limits).await,
        }
    }

    /// [`Runner::run`] with stdin in parts (an executable of many megabytes, not copied).
    pub async fn run_parts(
        &mut self,
        script: &'static str,
        stdin: &[&[u8]],
        limits: ExecLimits,
    ) -> Result<ExecOutput> {
        match self {
            Runner::Exec(connection) => exec::run_parts(connection, script, stdin, limits).await,
            Runner::Terminal(session) => session.run_parts(script, stdin, limits).await,
        }
    }
}

/// Where a host runs xfer's scripts, found once per connection: exec when the login runs
/// commands, else the driver on the terminal of a shell-only endpoint.
pub enum Shell {
    Exec,
    Terminal(TerminalSession),
}

/// Runs nothing but proves that exec runs scripts.
const RUNS_SCRIPTS: &str = "exit 0";

impl Shell {
    /// Asks the host: a script over exec first; where the login refuses it and gives a
    /// terminal instead, that terminal. A login that gives neither keeps exec, whose own
    /// failure then says what the login refuses.
    pub async fn find(connection: &Arc<Connection>) -> Result<Shell> {
        let limits = ExecLimits {
            max_output: 4096,
            timeout: crate::remote::shell_only::LOGIN_TIMEOUT,
        };
        match exec::run(connection, RUNS_SCRIPTS, b"", limits).await {
            Ok(output) if output.success() => return Ok(Shell::Exec),
            Err(error) if error.is_transient() || connection.is_closed() => return Err(error),
            _ => {}
        }
        match TerminalSession::open(connection).await {
            Ok(session) => {
                tracing::info!(label = %connection.label(), "a shell-only endpoint: scripts run through the terminal");
                Ok(Shell::Terminal(session))
            }
            Err(error) if error.is_transient() && connection.is_closed() => Err(error),
            Err(error) => {
                tracing::debug!(label = %connection.label(), %error, "no terminal either");
                Ok(Shell::Exec)
            }
        }
    }

    pub fn runner<'a>(&'a mut self, connection: &'a Connection) -> Runner<'a> {
        match self {
            Shell::Exec => Runner::Exec(connection),
            Shell::Terminal(session) => Runner::Terminal(session),
        }
    }
}
