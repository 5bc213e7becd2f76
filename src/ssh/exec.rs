//! Running a fixed remote script over an exec channel.
//!
//! Remote commands are constants of this crate: the command line sent to the server is always
//! `sh -c '<script>'` with the script checked to contain no single quote, and anything variable
//! (paths, values) travels on the channel's stdin. So a path with spaces, quotes or newlines can
//! never change what the remote shell runs, and no value appears in the remote `ps`. Output is
//! capped, and every wait is bounded.

use crate::error::{Error, Result};
use crate::ssh::connect::{Connection, russh_error};
use russh::ChannelMsg;
use std::time::Duration;

/// What a remote script produced.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    /// None when the server sent no exit status (e.g. the command was killed by a signal).
    pub status: Option<u32>,
    pub signal: Option<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        crate::target::printable(String::from_utf8_lossy(&self.stderr).trim())
    }
}

/// Bounds on one remote run.
#[derive(Debug, Clone, Copy)]
pub struct ExecLimits {
    pub max_output: usize,
    /// How long the whole run may take, from the request to the exit status.
    pub timeout: Duration,
}

impl Default for ExecLimits {
    fn default() -> Self {
        ExecLimits {
            max_output: 1 << 20,
            timeout: Duration::from_secs(60),
        }
    }
}

/// The exact command line sent for a fixed script. Panics (a bug in xfer, caught by tests) if
/// the script contains a single quote, which would end the quoting.
pub fn command_line(script: &'static str) -> String {
    assert!(
        !script.contains('\''),
        "remote scripts must not contain single quotes"
    );
    format!("sh -c '{script}'")
}

/// Runs `script` on the remote with `stdin` as its standard input.
pub async fn run(
    connection: &Connection,
    script: &'static str,
    stdin: &[u8],
    limits: ExecLimits,
) -> Result<ExecOutput> {
    execute(connection, script, Stdin::Borrowed(stdin), limits).await
}

/// [`run`] with standard input given as owned parts, sent one after the other as the
/// channel's window allows, without being copied (an executable of many megabytes).
pub async fn run_owned(
    connection: &Connection,
    script: &'static str,
    stdin: Vec<Vec<u8>>,
    limits: ExecLimits,
) -> Result<ExecOutput> {
    execute(connection, script, Stdin::Owned(stdin), limits).await
}

enum Stdin<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<Vec<u8>>),
}

async fn execute(
    connection: &Connection,
    script: &'static str,
    stdin: Stdin<'_>,
    limits: ExecLimits,
) -> Result<ExecOutput> {
    let label = connection.label().to_string();
    let work = async {
        let mut channel = connection.open_session().await?;
        channel
            .exec(true, command_line(script))
            .await
            .map_err(|error| russh_error(&label, error))?;
        match stdin {
            Stdin::Borrowed(bytes) => channel.data(bytes).await,
            Stdin::Owned(parts) => {
                let mut sent = Ok(());
                for part in parts {
                    sent = channel.data_bytes(part).await;
                    if sent.is_err() {
                        break;
                    }
                }
                sent
            }
        }
        .map_err(|error| russh_error(&label, error))?;
        channel
            .eof()
            .await
            .map_err(|error| russh_error(&label, error))?;
        let mut output = ExecOutput::default();
        let mut refused = false;
        while let Some(message) = channel.wait().await {
            match message {
                ChannelMsg::Data { data } => {
                    append_capped(&mut output.stdout, &data, limits.max_output)
                }
                ChannelMsg::ExtendedData { data, .. } => {
                    append_capped(&mut output.stderr, &data, limits.max_output)
                }
                ChannelMsg::ExitStatus { exit_status } => output.status = Some(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    output.signal = Some(format!("{signal_name:?}"))
                }
                ChannelMsg::Failure => refused = true,
                _ => {}
            }
        }
        if refused && output.status.is_none() {
            return Err(Error::remote(format!(
                "{label}: the server refused to run a command (exec is not allowed for this login)"
            ))
            .with_hint("the host may be a shell-only endpoint; check with: xfer doctor ALIAS"));
        }
        Ok(output)
    };
    match tokio::time::timeout(limits.timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(Error::connect(format!(
            "{label}: remote command did not finish within {} s",
            limits.timeout.as_secs()
        ))),
    }
}

fn append_capped(buffer: &mut Vec<u8>, data: &[u8], cap: usize) {
    let room = cap.saturating_sub(buffer.len());
    buffer.extend_from_slice(&data[..data.len().min(room)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_quotes_the_script() {
        assert_eq!(command_line("echo hi"), "sh -c 'echo hi'");
    }

    #[test]
    #[should_panic(expected = "single quotes")]
    fn command_line_rejects_quotes() {
        command_line("echo 'x'");
    }

    #[test]
    fn output_is_capped() {
        let mut buffer = Vec::new();
        append_capped(&mut buffer, b"abcdef", 4);
        append_capped(&mut buffer, b"gh", 4);
        assert_eq!(buffer, b"abcd");
    }
}
