//! Where xfer's fixed remote scripts run: an exec channel of the connection, or the driver on
//! a shell-only endpoint's terminal ([`TerminalSession`]). Both give the script its stdin as
//! data, never on a command line, and return its output and exit status alike.

use crate::error::Result;
use crate::remote::shell_only::TerminalSession;
use crate::ssh::connect::Connection;
use crate::ssh::exec::{self, ExecLimits, ExecOutput};

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
