//! One connection's way to the remote's files: the xfer agent when it can run there, SFTP
//! otherwise.
//!
//! [`Session`] is what the engine's connections hold. Opening one asks `deploy` for the agent
//! (unless `--no-agent`); when that falls back, the reason comes back alongside the SFTP
//! session so the caller can say it once. A host that refuses SFTP too is tried as a shell-only
//! endpoint: the agent through a terminal (`deploy::start_through_terminal`), after which the
//! run's later connections to it go there straight; where that fails too, one error names
//! every reason. A dry run opens the other way round: SFTP first, the agent only where the
//! host has no SFTP ([`Session::open_for_planning`]).

use crate::blocks::{BlockHash, BlockLayout};
use crate::error::Result;
use crate::remote::agent::{AgentFile, AgentRemote};
use crate::remote::deploy::{self, AgentMode, Outcome};
use crate::remote::sftp::{self, SftpFile, SftpRemote};
use crate::remote::{Remote, RemoteDigest, RemoteEntry, SetAttributes, SmallFile, SmallPut};
use crate::ssh::connect::Connection;
use std::sync::Arc;

/// What to do about a host with neither an SFTP server nor a usable agent.
const NO_SFTP_SERVER_NOR_AGENT_HINT: &str = "install an SFTP server on the host (on Debian and Ubuntu: openssh-sftp-server), or fix what keeps the xfer agent from starting there (the reason above)";

/// A connection's remote: agent or SFTP.
pub enum Session {
    Agent(AgentRemote),
    Sftp(SftpRemote),
}

/// An open file of either kind.
#[derive(Debug, Clone)]
pub enum SessionFile {
    Agent(AgentFile),
    Sftp(SftpFile),
}

impl Session {
    /// Opens the remote side of `connection`. The string is a line to say once per run about
    /// how the host is reached, when it is not the agent over exec: why SFTP serves instead, or
    /// that the host is a shell-only endpoint whose agent runs through a terminal.
    pub async fn open(
        connection: Arc<Connection>,
        mode: &AgentMode,
    ) -> Result<(Session, Option<String>)> {
        if *mode == AgentMode::Auto && is_shell_only(connection.label()) {
            return match deploy::start_through_terminal(&connection).await? {
                Outcome::Ready(agent) => Ok((Session::Agent(agent), None)),
                Outcome::Fallback(reason) => Err(crate::Error::remote(format!(
                    "{}: the xfer agent does not start through the terminal: {reason}",
                    connection.label()
                ))),
            };
        }
        let reason = match deploy::start_agent(&connection, mode).await? {
            Outcome::Ready(agent) => return Ok((Session::Agent(agent), None)),
            Outcome::Fallback(reason) => reason,
        };
        let notice = (*mode != AgentMode::Off).then(|| reason.clone());
        let error = match SftpRemote::open(connection.clone()).await {
            Ok(sftp) => {
                let notice = notice.map(|reason| format!("using SFTP, no xfer agent: {reason}"));
                return Ok((Session::Sftp(sftp), notice));
            }
            Err(error) => error,
        };
        let Some(reason) = notice else {
            return Err(error);
        };
        if *mode != AgentMode::Auto || error.is_transient() || connection.is_closed() {
            return Err(with_agent_reason(error, &reason));
        }
        through_terminal(&connection, error, &reason).await
    }

    /// Opens a remote for looking only (stat, list, read links), as a dry run plans: SFTP
    /// where the host has it, which starts no shell there and writes nothing, not even the
    /// agent's cache. Where SFTP is missing (Dropbear without an sftp-server, an sshd without
    /// the subsystem) the agent `mode` allows plans instead, as it would carry a real run; the
    /// string then says why SFTP was not used. `--no-agent` demands SFTP and gets its error.
    pub async fn open_for_planning(
        connection: Arc<Connection>,
        mode: &AgentMode,
    ) -> Result<(Session, Option<String>)> {
        let missing = match SftpRemote::open(connection.clone()).await {
            Ok(sftp) => return Ok((Session::Sftp(sftp), None)),
            Err(error)
                if *mode == AgentMode::Off || error.is_transient() || connection.is_closed() =>
            {
                return Err(error);
            }
            Err(error) => error,
        };
        let reason = match deploy::start_agent(&connection, mode).await? {
            Outcome::Ready(agent) => return Ok((Session::Agent(agent), Some(missing.to_string()))),
            Outcome::Fallback(reason) => reason,
        };
        if *mode != AgentMode::Auto || connection.is_closed() {
            return Err(with_agent_reason(missing, &reason));
        }
        through_terminal(&connection, missing, &reason).await
    }

    pub fn connection(&self) -> &Arc<Connection> {
        match self {
            Session::Agent(agent) => agent.connection(),
            Session::Sftp(sftp) => sftp.connection(),
        }
    }

    /// "agent" or "sftp", for messages and summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            Session::Agent(_) => "agent",
            Session::Sftp(_) => "sftp",
        }
    }
}

/// The last way to a host that refuses exec (the agent did not start: `reason`) and SFTP
/// (`no_sftp`): a shell-only endpoint's terminal, if the login gives one. Remembered for the
/// run's later connections when it works; otherwise the SFTP error, with every reason.
async fn through_terminal(
    connection: &Arc<Connection>,
    no_sftp: crate::Error,
    reason: &str,
) -> Result<(Session, Option<String>)> {
    match deploy::start_through_terminal(connection).await {
        Ok(Outcome::Ready(agent)) => {
            remember_shell_only(connection.label());
            Ok((Session::Agent(agent), Some(SHELL_ONLY_NOTICE.to_string())))
        }
        Ok(Outcome::Fallback(terminal)) => Err(with_agent_reason(
            no_sftp,
            &format!("{reason}; through a terminal: {terminal}"),
        )),
        Err(terminal) if terminal.is_transient() => Err(terminal),
        Err(terminal) => {
            tracing::debug!(label = %connection.label(), error = %terminal, "no agent through a terminal either");
            Err(with_agent_reason(no_sftp, reason))
        }
    }
}

/// Said once per run when a host turns out to be a shell-only endpoint.
pub const SHELL_ONLY_NOTICE: &str =
    "a shell-only endpoint (no exec, no SFTP): transfers go through the terminal";

/// Hosts (by label) found to be shell-only in this run: their later connections go straight
/// to the terminal instead of asking for exec and SFTP again.
fn shell_only_hosts() -> std::sync::MutexGuard<'static, Vec<String>> {
    static HOSTS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    HOSTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn is_shell_only(label: &str) -> bool {
    shell_only_hosts().iter().any(|host| host == label)
}

fn remember_shell_only(label: &str) {
    let mut hosts = shell_only_hosts();
    if !hosts.iter().any(|host| host == label) {
        hosts.push(label.to_string());
    }
}

/// An SFTP failure on a host where the agent was wanted too and did not start: says why not.
fn with_agent_reason(error: crate::Error, reason: &str) -> crate::Error {
    let error = error.context(format!("no xfer agent ({reason}) and"));
    // Leaving out --no-agent, as the error alone advises, is no help here.
    if sftp::is_no_sftp_server(&error) {
        error.with_hint(NO_SFTP_SERVER_NOR_AGENT_HINT)
    } else {
        error
    }
}

/// Calls the same method on whichever remote this is.
macro_rules! both {
    ($self:expr, $remote:ident => $call:expr) => {
        match $self {
            Session::Agent($remote) => $call,
            Session::Sftp($remote) => $call,
        }
    };
}

fn mismatched() -> crate::Error {
    crate::Error::internal("a file handle of one remote kind was used with another")
}

impl Remote for Session {
    type File = SessionFile;

    fn label(&self) -> &str {
        both!(self, remote => remote.label())
    }

    fn max_io_size(&self) -> u32 {
        both!(self, remote => remote.max_io_size())
    }

    async fn stat(&self, path: &str, follow: bool) -> Result<Option<RemoteEntry>> {
        both!(self, remote => remote.stat(path, follow).await)
    }

    async fn list(&self, path: &str) -> Result<Vec<RemoteEntry>> {
        both!(self, remote => remote.list(path).await)
    }

    async fn read_link(&self, path: &str) -> Result<String> {
        both!(self, remote => remote.read_link(path).await)
    }

    async fn open_read(&self, path: &str) -> Result<SessionFile> {
        match self {
            Session::Agent(agent) => agent.open_read(path).await.map(SessionFile::Agent),
            Session::Sftp(sftp) => sftp.open_read(path).await.map(SessionFile::Sftp),
        }
    }

    async fn read_at(&self, file: &SessionFile, offset: u64, length: u32) -> Result<Vec<u8>> {
        match (self, file) {
            (Session::Agent(agent), SessionFile::Agent(file)) => {
                agent.read_at(file, offset, length).await
            }
            (Session::Sftp(sftp), SessionFile::Sftp(file)) => {
                sftp.read_at(file, offset, length).await
            }
            _ => Err(mismatched()),
        }
    }

    fn hashes_reads(&self) -> bool {
        both!(self, remote => remote.hashes_reads())
    }

    async fn read_at_hashed(
        &self,
        file: &SessionFile,
        offset: u64,
        length: u32,
    ) -> Result<(Vec<u8>, Option<BlockHash>)> {
        match (self, file) {
            (Session::Agent(agent), SessionFile::Agent(file)) => {
                agent.read_at_hashed(file, offset, length).await
            }
            (Session::Sftp(sftp), SessionFile::Sftp(file)) => {
                sftp.read_at_hashed(file, offset, length).await
            }
            _ => Err(mismatched()),
        }
    }

    async fn open_write(&self, path: &str) -> Result<SessionFile> {
        match self {
            Session::Agent(agent) => agent.open_write(path).await.map(SessionFile::Agent),
            Session::Sftp(sftp) => sftp.open_write(path).await.map(SessionFile::Sftp),
        }
    }

    async fn write_at(&self, file: &SessionFile, offset: u64, data: Vec<u8>) -> Result<()> {
        match (self, file) {
            (Session::Agent(agent), SessionFile::Agent(file)) => {
                agent.write_at(file, offset, data).await
            }
            (Session::Sftp(sftp), SessionFile::Sftp(file)) => {
                sftp.write_at(file, offset, data).await
            }
            _ => Err(mismatched()),
        }
    }

    async fn sync(&self, file: &SessionFile) -> Result<()> {
        match (self, file) {
            (Session::Agent(agent), SessionFile::Agent(file)) => agent.sync(file).await,
            (Session::Sftp(sftp), SessionFile::Sftp(file)) => sftp.sync(file).await,
            _ => Err(mismatched()),
        }
    }

    fn puts_small(&self) -> bool {
        match self {
            Session::Agent(agent) => agent.puts_small(),
            Session::Sftp(sftp) => sftp.puts_small(),
        }
    }

    async fn put_small(&self, path: &str, file: SmallPut) -> Result<()> {
        match self {
            Session::Agent(agent) => agent.put_small(path, file).await,
            Session::Sftp(sftp) => sftp.put_small(path, file).await,
        }
    }

    async fn sync_grouped(&self, file: &SessionFile) -> Result<()> {
        match (self, file) {
            (Session::Agent(agent), SessionFile::Agent(file)) => agent.sync_grouped(file).await,
            (Session::Sftp(sftp), SessionFile::Sftp(file)) => sftp.sync_grouped(file).await,
            _ => Err(mismatched()),
        }
    }

    async fn close(&self, file: SessionFile) -> Result<()> {
        match (self, file) {
            (Session::Agent(agent), SessionFile::Agent(file)) => agent.close(file).await,
            (Session::Sftp(sftp), SessionFile::Sftp(file)) => sftp.close(file).await,
            _ => Err(mismatched()),
        }
    }

    async fn set_attributes(&self, path: &str, attributes: SetAttributes) -> Result<()> {
        both!(self, remote => remote.set_attributes(path, attributes).await)
    }

    async fn set_file_attributes(
        &self,
        file: &SessionFile,
        attributes: SetAttributes,
    ) -> Result<()> {
        match (self, file) {
            (Session::Agent(agent), SessionFile::Agent(file)) => {
                agent.set_file_attributes(file, attributes).await
            }
            (Session::Sftp(sftp), SessionFile::Sftp(file)) => {
                sftp.set_file_attributes(file, attributes).await
            }
            _ => Err(mismatched()),
        }
    }

    async fn make_directory(&self, path: &str, mode: u32) -> Result<()> {
        both!(self, remote => remote.make_directory(path, mode).await)
    }

    async fn make_symlink(&self, path: &str, target: &str) -> Result<()> {
        both!(self, remote => remote.make_symlink(path, target).await)
    }

    async fn remove_file(&self, path: &str) -> Result<()> {
        both!(self, remote => remote.remove_file(path).await)
    }

    async fn digest(&self, path: &str) -> Result<Option<RemoteDigest>> {
        both!(self, remote => remote.digest(path).await)
    }

    fn hashes_blocks(&self) -> bool {
        both!(self, remote => remote.hashes_blocks())
    }

    fn is_closed(&self) -> bool {
        both!(self, remote => remote.is_closed())
    }

    async fn block_hashes(
        &self,
        path: &str,
        layout: &BlockLayout,
        blocks: std::ops::Range<u64>,
    ) -> Result<Option<Vec<BlockHash>>> {
        both!(self, remote => remote.block_hashes(path, layout, blocks).await)
    }

    async fn read_small(&self, path: &str, max_length: u32) -> Result<Option<SmallFile>> {
        both!(self, remote => remote.read_small(path, max_length).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_sftp_server_nor_agent_the_hint_does_not_advise_leaving_out_no_agent() {
        let missing = crate::Error::remote("box (u@h:22): no SFTP server on the host")
            .with_hint(sftp::NO_SFTP_SERVER_HINT)
            .transient(false);
        assert!(sftp::is_no_sftp_server(&missing));
        let error = with_agent_reason(missing, "the host does not run commands");
        assert_eq!(
            error.message(),
            "no xfer agent (the host does not run commands) and: box (u@h:22): no SFTP server on the host"
        );
        assert_eq!(error.hint(), Some(NO_SFTP_SERVER_NOR_AGENT_HINT));
        assert!(!error.is_transient());
        // Another SFTP failure keeps its own hint.
        let refused = crate::Error::remote("box: the server refuses the SFTP subsystem")
            .with_hint("use the direct address");
        assert!(!sftp::is_no_sftp_server(&refused));
        let error = with_agent_reason(refused, "reason");
        assert_eq!(error.hint(), Some("use the direct address"));
    }
}
