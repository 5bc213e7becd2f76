//! Running a fixed remote script over an exec channel.
//!
//! Remote commands are constants of this crate. The server hands an exec request's command to
//! the user's login shell, which may be bash, dash, zsh, fish, tcsh or csh, and these disagree on
//! quoting, newlines and `!`. So the command line is one fixed, shell-neutral line that starts
//! `/bin/sh` and has it read the script itself from the start of stdin, byte by byte (`dd
//! bs=1`, so not one byte of what follows is consumed): see [`command_line`]. Anything variable
//! (paths, values) travels on stdin after the script. So a path with spaces, quotes or newlines
//! can never change what the remote shell runs, and no value appears in the remote `ps`. Output
//! is capped, and every wait is bounded. A channel the server closes without answering the
//! request is tried again on a new one ([`UNANSWERED_ATTEMPTS`]): Dropbear before 2024.86 does
//! that when another process of the connection exits at the wrong moment.

use crate::error::{Error, Result};
use crate::ssh::connect::{Connection, russh_error};
use russh::ChannelMsg;
use std::time::Duration;

/// Printed by the command line before the script starts, so that what a login shell prints
/// before every command (a banner from `.bashrc`, `conda init` output) is told apart from the
/// script's own output: everything before this line is the login's, not the script's.
pub const BEGIN_MARKER: &[u8] = b"XFER-BEGIN-5f3a9c\n";

/// The most a login shell may print before [`BEGIN_MARKER`] that a stream waits through.
pub const MAX_PREAMBLE: usize = 64 << 10;

/// What a remote script produced.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    /// None when the server sent no exit status (e.g. the command was killed by a signal).
    pub status: Option<u32>,
    pub signal: Option<String>,
    /// Whether the script started: [`BEGIN_MARKER`] arrived.
    pub started: bool,
    /// What the login printed before the script started (its own output is in `stdout`).
    pub preamble: Vec<u8>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.started && self.status == Some(0)
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        crate::terminal::printable(String::from_utf8_lossy(&self.stderr).trim())
    }
}

/// How long output may still arrive after the exit status.
const AFTER_EXIT: Duration = Duration::from_secs(2);

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

/// The exact command line sent for a fixed script: every login shell runs it the same way
/// (it holds no newline, backslash, `!` or nested quote, and only literal text inside single
/// quotes), and `/bin/sh` then reads the script's `script.len()` bytes from stdin, which must
/// start with [`script_input`]. `$(...)` drops the script's trailing newlines, which changes
/// nothing a script means.
pub fn command_line(script: &'static str) -> String {
    format!(
        "exec /bin/sh -c 'echo XFER-BEGIN-5f3a9c; eval \"$(dd bs=1 count={} 2>/dev/null)\"'",
        script.len()
    )
}

/// What stdin must start with for [`command_line`]: the script itself.
pub fn script_input(script: &'static str) -> &'static [u8] {
    script.as_bytes()
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

/// [`run`] with standard input given in parts, each sent as the channel's window allows
/// without going through a small copy buffer (an executable of many megabytes).
pub async fn run_parts(
    connection: &Connection,
    script: &'static str,
    stdin: &[&[u8]],
    limits: ExecLimits,
) -> Result<ExecOutput> {
    execute(connection, script, Stdin::Parts(stdin), limits).await
}

#[derive(Clone, Copy)]
enum Stdin<'a> {
    Borrowed(&'a [u8]),
    Parts(&'a [&'a [u8]]),
}

/// How many channels a run may take when the server closes them without answering the exec
/// request. Dropbear before 2024.86 closes a session channel that is open but not yet running
/// a command whenever another process of the same connection exits (its sftp-server ending,
/// a script finishing): a channel opened at that moment ends without a word. No server closes
/// a channel that way otherwise, and the same request on a new channel runs.
pub const UNANSWERED_ATTEMPTS: u32 = 3;

/// What one channel came to.
enum Attempt {
    Ran(ExecOutput),
    /// Closed by the server with no answer to the exec request and nothing else said.
    Unanswered,
}

async fn execute(
    connection: &Connection,
    script: &'static str,
    stdin: Stdin<'_>,
    limits: ExecLimits,
) -> Result<ExecOutput> {
    let label = connection.label().to_string();
    let work = async {
        for attempt in 1..=UNANSWERED_ATTEMPTS {
            match execute_once(connection, &label, script, stdin, limits).await? {
                Attempt::Ran(output) => return Ok(output),
                Attempt::Unanswered => {
                    tracing::debug!(%label, attempt, "the server closed an exec channel without answering; trying a new one");
                }
            }
        }
        // What it looked like: nothing ran.
        Ok(ExecOutput::default())
    };
    match tokio::time::timeout(limits.timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(Error::connect(format!(
            "{label}: remote command did not finish within {} s",
            limits.timeout.as_secs()
        ))),
    }
}

async fn execute_once(
    connection: &Connection,
    label: &str,
    script: &'static str,
    stdin: Stdin<'_>,
    limits: ExecLimits,
) -> Result<Attempt> {
    let mut channel = connection.open_session().await?;
    channel
        .exec(true, command_line(script))
        .await
        .map_err(|error| russh_error(label, error))?;
    // Stdin goes out while the answer comes in: a script that ends early (it refused, or
    // its disk is full) stops reading, and waiting for window to send the rest would wait
    // for the whole bound.
    let (mut reader, mut writer) = channel.split();
    let send = async {
        writer.data(script_input(script)).await?;
        match stdin {
            Stdin::Borrowed(bytes) => writer.data(bytes).await?,
            // Streamed from the caller's buffer as the window opens, never copied whole: an
            // upload of the agent to many hosts at once would otherwise hold one copy each.
            Stdin::Parts(parts) => {
                for part in parts {
                    writer.data(part).await?;
                }
            }
        }
        writer.eof().await
    };
    tokio::pin!(send);
    let mut sending = true;
    let mut send_error = None;
    let mut output = ExecOutput::default();
    let mut refused = false;
    // Whether the server said anything on the channel: an answer to the request, output.
    let mut answered = false;
    loop {
        let exited = output.status.is_some() || output.signal.is_some();
        let message = tokio::select! {
            sent = &mut send, if sending => {
                sending = false;
                if let Err(error) = sent {
                    send_error = Some(error);
                }
                continue;
            }
            // Once the exit status is in, the output still on its way gets a short while,
            // not the whole bound: a server that never closes the channel after the exit
            // status (or whose close is lost) must not hold the run.
            message = async {
                if exited {
                    tokio::time::timeout(AFTER_EXIT, reader.wait()).await.ok()
                } else {
                    Some(reader.wait().await)
                }
            } => match message {
                Some(message) => message,
                None => break,
            },
        };
        let Some(message) = message else { break };
        match message {
            ChannelMsg::Data { data } => {
                answered = true;
                append_capped(&mut output.stdout, &data, limits.max_output)
            }
            ChannelMsg::ExtendedData { data, .. } => {
                answered = true;
                append_capped(&mut output.stderr, &data, limits.max_output)
            }
            ChannelMsg::ExitStatus { exit_status } => output.status = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                output.signal = Some(format!("{signal_name:?}"))
            }
            ChannelMsg::Success => answered = true,
            ChannelMsg::Failure => {
                // The exec request was refused: nothing will run on this channel, and a server
                // (a relay) may leave it open rather than close it.
                answered = true;
                refused = true;
                break;
            }
            _ => {}
        }
    }
    let exited = output.status.is_some() || output.signal.is_some();
    // The system ssh gave up on the channel (its master is gone, the link dropped): what a
    // dropped connection is, with ssh's own words.
    if let Some(failure) = reader.failure()
        && !exited
    {
        return Err(Error::connect(format!("{label}: ssh: {failure}")));
    }
    if !answered && !exited && !connection.is_closed() {
        return Ok(Attempt::Unanswered);
    }
    // A send that failed matters only when the script gave no answer.
    if let Some(error) = send_error
        && !exited
        && !refused
    {
        return Err(russh_error(label, error));
    }
    match find_marker(&output.stdout) {
        Some(end) => {
            output.started = true;
            let stdout = output.stdout.split_off(end);
            output.preamble = std::mem::replace(&mut output.stdout, stdout);
            output
                .preamble
                .truncate(output.preamble.len() - BEGIN_MARKER.len());
        }
        None => output.preamble = std::mem::take(&mut output.stdout),
    }
    if refused && output.status.is_none() {
        return Err(Error::remote(format!(
            "{label}: the server refused to run a command (exec is not allowed for this login)"
        ))
        .with_hint("the host may be a shell-only endpoint; check with: xfer doctor ALIAS"));
    }
    Ok(Attempt::Ran(output))
}

/// Where the script's own output starts in `bytes`: just after [`BEGIN_MARKER`].
pub fn find_marker(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(BEGIN_MARKER.len())
        .position(|window| window == BEGIN_MARKER)
        .map(|start| start + BEGIN_MARKER.len())
}

fn append_capped(buffer: &mut Vec<u8>, data: &[u8], cap: usize) {
    let room = cap.saturating_sub(buffer.len());
    buffer.extend_from_slice(&data[..data.len().min(room)]);
}

/// Fails the test if `/bin/sh -n` finds a syntax error in `script`.
#[cfg(test)]
pub fn assert_parses(script: &'static str) {
    let output = std::process::Command::new("/bin/sh")
        .arg("-n")
        .arg("-c")
        .arg(script)
        .output()
        .expect("run /bin/sh -n");
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "{script}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_one_shell_neutral_line() {
        let line = command_line("echo 'hi'\necho there\n");
        assert_eq!(
            line,
            "exec /bin/sh -c 'echo XFER-BEGIN-5f3a9c; eval \"$(dd bs=1 count=21 2>/dev/null)\"'"
        );
        // What a csh, fish or a POSIX shell would read differently.
        assert!(!line.contains(['\n', '\\', '!']));
        assert_eq!(line.matches('\'').count(), 2);
    }

    /// Runs the command line through each login shell installed here, as sshd would
    /// (`SHELL -c LINE`), with the script and then data on stdin.
    #[test]
    fn every_login_shell_runs_the_script_and_leaves_the_rest_of_stdin() {
        const SCRIPT: &str = "IFS= read -r first\nprintf \"[%s]\" \"$first\"\ncat\n";
        let mut ran = 0;
        for shell in [
            "/bin/sh",
            "/bin/bash",
            "/bin/dash",
            "/usr/bin/tcsh",
            "/bin/csh",
            "/usr/bin/fish",
            "/usr/bin/zsh",
        ] {
            if !std::path::Path::new(shell).exists() {
                continue;
            }
            let mut child = std::process::Command::new(shell)
                .arg("-c")
                .arg(command_line(SCRIPT))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("start a shell");
            let mut input = script_input(SCRIPT).to_vec();
            input.extend_from_slice(b"a 'b' $c!\nrest");
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(&input)
                .expect("write");
            let output = child.wait_with_output().expect("wait");
            let start = find_marker(&output.stdout).expect("the marker");
            assert_eq!(
                String::from_utf8_lossy(&output.stdout[start..]),
                "[a 'b' $c!]rest",
                "{shell}"
            );
            ran += 1;
        }
        assert!(ran >= 2, "no login shell to try");
    }

    #[test]
    fn the_script_output_starts_after_the_marker() {
        let mut bytes = b"Welcome to the cluster\nXFER-BEGIN-5f3a9c\n".to_vec();
        let start = find_marker(&bytes).unwrap();
        bytes.extend_from_slice(b"ok\n");
        assert_eq!(&bytes[start..], b"ok\n");
        assert_eq!(find_marker(b"XFER-BEGIN-5f3a9"), None);
    }

    #[test]
    fn output_is_capped() {
        let mut buffer = Vec::new();
        append_capped(&mut buffer, b"abcdef", 4);
        append_capped(&mut buffer, b"gh", 4);
        assert_eq!(buffer, b"abcd");
    }
}
