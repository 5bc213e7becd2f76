//! Running xfer's fixed scripts, and the agent, through an interactive terminal: the way into
//! a shell-only endpoint, which refuses exec and SFTP but gives a login shell on a PTY.
//!
//! A [`TerminalSession`] asks for a PTY and a shell, waits until the login has printed its
//! banner, MOTD and prompt (bounded), and types one shell-neutral line, like the exec path's
//! command line ([`crate::ssh::exec::command_line`]): it replaces the login shell with `/bin/sh`, makes the
//! terminal raw with echo off, prints a marker the typed line's echo cannot contain, and reads
//! the driver script (`DRIVER`) from the terminal. The driver runs each of xfer's fixed
//! scripts on request, as exec would: the script's stdin arrives in chunks, each checked
//! (`cksum`: length and CRC) before it is decoded (`base64 -d`, or `printf %b` where the host
//! has no base64), and its output and exit status return as hex (`od`), which no terminal
//! alters. So a value (a secret, the agent's executable) is data read by a running script,
//! never typed as a command: not echoed, not in a history file, not in any argv.
//!
//! [`TerminalSession::start_agent`] ends the driver's life the way the exec path ends an exec
//! channel's: the cached agent starts on the terminal, the two ends agree on the link's
//! encodings (`terminal_link`) and the agent protocol runs inside its frames.

use crate::agent::client::{AgentClient, AgentError, Startup};
use crate::error::{Error, Result};
use crate::ssh::connect::{Connection, russh_error};
use crate::ssh::exec::{ExecLimits, ExecOutput};
use crate::terminal_link::handshake::{self, Found, find};
use crate::terminal_link::{LinkReader, LinkWriter};
use russh::ChannelMsg;
use secrecy::zeroize::Zeroize;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

type Stream = crate::ssh::channel::ChannelStream;

/// How long the login may take to print its banner, MOTD and prompt and to run the typed line.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the login's output must pause before the line is typed: a prompt is waiting.
const QUIET: Duration = Duration::from_millis(300);
/// How long to wait for a login that prints nothing at all before typing anyway.
const SILENT_LOGIN: Duration = Duration::from_secs(3);
/// How long the agent may take to start on the terminal and agree on the link.
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long measuring the terminal's throughput may take.
const MEASURE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the second answer (to the shell request) may lag the first.
const UNANSWERED_REQUEST: Duration = Duration::from_secs(2);
/// How long a terminal may stay silent after the start line is typed: a shell echoes what is
/// typed or prints an error at once, so a terminal silent for this long runs no shell.
const NO_ECHO_LIMIT: Duration = Duration::from_secs(15);
/// The most a login may print before the driver is ready.
const MAX_LOGIN_OUTPUT: usize = 1 << 20;
/// Encoded stdin per checked chunk: one shell variable on the remote. Larger chunks cost the
/// remote shell fewer processes; a damaged one is sent again only by a whole new run.
const CHUNK: usize = 1024 * 1024;
/// Stdin at least this large crosses the terminal gzipped where the host has gzip: the agent's
/// executable, not a secret (a few bytes, which compression would not shrink).
const COMPRESS_FROM: usize = 1 << 20;

/// The terminal the PTY request names: no colours or cursor tricks from prompts that check.
const TERM: &str = "dumb";

/// Read by `/bin/sh` from the terminal once the typed line made it raw. Prints which decoder
/// it has and whether gzip works, then runs one command per line:
/// - `run LENGTH CHUNKS [gzip]`: reads a script of LENGTH bytes, then runs it in a subshell
///   whose stdin is CHUNKS checked chunks (each `ENCODED-LENGTH CRC` on a line, then the
///   encoded bytes), gunzipped when asked, printing `XFER-OUT`, the output and `XFER-STATUS N`
///   in hex, then `XFER-DONE`.
///   A chunk that fails its check ends the script's input and prints `XFER-BAD-CHUNK`. Every
///   chunk is read off the terminal even when the script stopped reading early (it refused,
///   or its disk is full), so the next command line is a command line.
/// - `agent LENGTH`: reads a script and runs it with the terminal as stdin and stdout, so
///   that the agent it starts owns the terminal; prints `XFER-DONE` if it returns.
/// - `pace BLOCKS` prints `XFER-OUT`, BLOCKS times 64 KiB of `a`, then `XFER-DONE`; `sink
///   LENGTH` reads LENGTH bytes, then prints `XFER-DONE`: the terminal's raw throughput each
///   way, for `xfer doctor`.
const DRIVER: &str = r#"unset HISTFILE
PS1=
PS2=
if [ "$(printf abc | head -c 2 2>/dev/null)" = ab ]; then
  take() { head -c "$1"; }
else
  take() { dd bs=1 count="$1" 2>/dev/null; }
fi
if [ "$(printf QUJD | base64 -d 2>/dev/null)" = ABC ]; then
  decoder=base64
  decode() { base64 -d; }
else
  decoder=octal
  decode() { printf %b "$(cat)"; }
fi
if [ "$(printf xfer | gzip -c 2>/dev/null | gzip -dc 2>/dev/null)" = xfer ]; then
  inflater=gzip
else
  inflater=none
fi
feed() {
  left=$1
  status=0
  while [ "$left" -gt 0 ]; do
    IFS= read -r header || return 1
    length=${header%% *}
    sum=${header#* }
    case $length in ""|*[!0-9]*) echo XFER-BAD-CHUNK >&4; return 1 ;; esac
    chunk=$(take "$length")
    if [ "$status" != 0 ]; then
      :
    elif [ "$(printf %s "$chunk" | cksum)" != "$sum $length" ]; then
      echo XFER-BAD-CHUNK >&4
      status=1
    else
      printf %s "$chunk" | decode 2>/dev/null || status=1
    fi
    left=$((left - 1))
  done
  chunk=
  return $status
}
exec 4>&1
echo "XFER-DRIVER-1 $decoder $inflater"
while IFS= read -r command; do
  set -- $command
  case $1 in
    run)
      script=$(take "$2")
      echo XFER-OUT
      if [ "${4:-}" = gzip ]; then
        { feed "$3" | gzip -dc 2>/dev/null | ( eval "$script" ) 2>&1; echo "XFER-STATUS $?"; } | od -An -v -tx1
      else
        { feed "$3" | ( eval "$script" ) 2>&1; echo "XFER-STATUS $?"; } | od -An -v -tx1
      fi
      echo XFER-DONE
      ;;
    agent)
      script=$(take "$2")
      ( eval "$script" )
      echo XFER-DONE
      ;;
    pace)
      echo XFER-OUT
      dd if=/dev/zero bs=65536 count="$2" 2>/dev/null | tr '\000' a
      echo XFER-DONE
      ;;
    sink)
      take "$2" >/dev/null
      echo XFER-DONE
      ;;
    *) exit 0 ;;
  esac
done
"#;

/// How the driver decodes a script's stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decoder {
    Base64,
    /// `printf %b` of `\0NNN` escapes.
    Octal,
}

/// A login shell's terminal with the driver running in it.
pub struct TerminalSession {
    label: String,
    connection: Arc<Connection>,
    reader: ReadHalf<Stream>,
    writer: WriteHalf<Stream>,
    /// Read from the terminal and not yet used.
    seen: Vec<u8>,
    decoder: Decoder,
    /// Whether the host's gzip inflates.
    gzip: bool,
}

/// What [`TerminalSession::start_agent`] came to.
pub enum TerminalLaunch {
    Agent(AgentClient),
    /// The start script's output instead of an agent; the session can still run scripts.
    NotAgent(Vec<u8>, TerminalSession),
    /// An agent answered and broke the protocol or shares no version with this build.
    Refused(String),
}

impl TerminalSession {
    /// Opens a shell on a PTY on `connection` and starts the driver in it. A server that
    /// refuses the PTY or the shell, or a login that never runs the typed line, is an error
    /// marked permanent (`Remote`); a dropped connection is transient.
    pub async fn open(connection: &Arc<Connection>) -> Result<TerminalSession> {
        let label = connection.label().to_string();
        let work = async {
            let (channel, early) = open_shell(connection, &label).await?;
            let (reader, writer) = tokio::io::split(channel.into_stream());
            let mut session = TerminalSession {
                label: label.clone(),
                connection: connection.clone(),
                reader,
                writer,
                seen: early,
                decoder: Decoder::Base64,
                gzip: false,
            };
            session.start_driver().await?;
            Ok(session)
        };
        match tokio::time::timeout(LOGIN_TIMEOUT, work).await {
            Ok(result) => result,
            Err(_) if connection.is_closed() => Err(Error::connect(format!(
                "{label}: the connection closed while logging in on a terminal"
            ))),
            Err(_) => Err(Error::remote(format!(
                "{label}: the login on a terminal did not run xfer's start line within {} s",
                LOGIN_TIMEOUT.as_secs()
            ))
            .with_hint("log in with ssh and check that the login reaches a shell prompt without asking anything")),
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Reads what the terminal has; false at its end.
    async fn read_some(&mut self) -> Result<bool> {
        let mut buffer = [0u8; 16 * 1024];
        match self.reader.read(&mut buffer).await {
            Ok(0) | Err(_) => Ok(false),
            Ok(read) => {
                answer_cursor_queries(&buffer[..read], &mut self.writer).await;
                self.seen.extend_from_slice(&buffer[..read]);
                Ok(true)
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let label = self.label.clone();
        let connection = self.connection.clone();
        self.writer
            .write_all(bytes)
            .await
            .map_err(|_| closed(&connection, &label, "while writing to the terminal"))?;
        self.writer
            .flush()
            .await
            .map_err(|_| closed(&connection, &label, "while writing to the terminal"))
    }

    /// Waits for the login to go quiet, types the start line, and reads the driver's hello.
    async fn start_driver(&mut self) -> Result<()> {
        let login_started = tokio::time::Instant::now();
        loop {
            let pause = if self.seen.is_empty() {
                SILENT_LOGIN.saturating_sub(login_started.elapsed())
            } else {
                QUIET
            };
            match tokio::time::timeout(pause, self.read_some()).await {
                Err(_) => break,
                Ok(Ok(true)) => {}
                Ok(_) => {
                    return Err(closed(&self.connection, &self.label, "during the login"));
                }
            }
            if self.seen.len() > MAX_LOGIN_OUTPUT {
                break;
            }
        }
        tracing::debug!(label = %self.label, bytes = self.seen.len(), "the login printed before the start line");
        let nonce = crate::remote::deploy::random_nonce();
        self.seen.clear();
        self.write(start_line(&nonce).as_bytes()).await?;
        let ready = format!("XFER-TTY-{nonce}");
        match tokio::time::timeout(NO_ECHO_LIMIT, self.read_some()).await {
            Ok(Ok(true)) => {}
            Ok(_) => return Err(closed(&self.connection, &self.label, "during the login")),
            Err(_) => {
                return Err(Error::remote(format!(
                    "{}: the terminal showed nothing for {} s after xfer typed its start line: no shell seems to read it",
                    self.label,
                    NO_ECHO_LIMIT.as_secs()
                ))
                .with_hint("log in with ssh -tt and check that the login reaches a shell prompt"));
            }
        }
        self.wait_for(ready.as_bytes()).await?;
        self.write(DRIVER.as_bytes()).await?;
        self.wait_for(b"XFER-DRIVER-1 ").await?;
        let line = self.wait_for(b"\n").await?;
        let line = String::from_utf8_lossy(&line);
        let mut words = line.split_whitespace();
        self.decoder = match words.next() {
            Some("octal") => Decoder::Octal,
            _ => Decoder::Base64,
        };
        self.gzip = words.next() == Some("gzip");
        tracing::debug!(label = %self.label, decoder = ?self.decoder, gzip = self.gzip, "the terminal's driver runs");
        Ok(())
    }

    /// Reads until `marker`; returns what came before it and keeps what came after.
    async fn wait_for(&mut self, marker: &[u8]) -> Result<Vec<u8>> {
        loop {
            if let Some(at) = find(&self.seen, marker) {
                let rest = self.seen.split_off(at + marker.len());
                let mut before = std::mem::replace(&mut self.seen, rest);
                before.truncate(at);
                return Ok(before);
            }
            if self.seen.len() > MAX_LOGIN_OUTPUT {
                return Err(Error::remote(format!(
                    "{}: the terminal printed more than {} KiB without the answer xfer waits for",
                    self.label,
                    MAX_LOGIN_OUTPUT >> 10
                )));
            }
            if !self.read_some().await? {
                return Err(closed(
                    &self.connection,
                    &self.label,
                    "while xfer waited for the terminal",
                ));
            }
        }
    }

    /// Runs `script` with `stdin` (given in parts) as exec would, through the driver.
    pub async fn run_parts(
        &mut self,
        script: &'static str,
        stdin: &[&[u8]],
        limits: ExecLimits,
    ) -> Result<ExecOutput> {
        let label = self.label.clone();
        match tokio::time::timeout(limits.timeout, self.run_unbounded(script, stdin, limits)).await
        {
            Ok(result) => result,
            Err(_) => Err(Error::connect(format!(
                "{label}: remote command did not finish within {} s",
                limits.timeout.as_secs()
            ))),
        }
    }

    pub async fn run(
        &mut self,
        script: &'static str,
        stdin: &[u8],
        limits: ExecLimits,
    ) -> Result<ExecOutput> {
        self.run_parts(script, &[stdin], limits).await
    }

    async fn run_unbounded(
        &mut self,
        script: &'static str,
        stdin: &[&[u8]],
        limits: ExecLimits,
    ) -> Result<ExecOutput> {
        let length: usize = stdin.iter().map(|part| part.len()).sum();
        let compressed = (self.gzip && length >= COMPRESS_FROM)
            .then(|| gzip(stdin))
            .flatten();
        let mut chunks = match &compressed {
            Some(compressed) => encode_chunks(&[compressed], self.decoder),
            None => encode_chunks(stdin, self.decoder),
        };
        let result = self
            .run_chunks(script, &chunks, compressed.is_some(), limits)
            .await;
        // The chunks may hold a secret's value.
        chunks.iter_mut().for_each(|chunk| chunk.zeroize());
        result
    }

    async fn run_chunks(
        &mut self,
        script: &'static str,
        chunks: &[Vec<u8>],
        gzipped: bool,
        limits: ExecLimits,
    ) -> Result<ExecOutput> {
        self.seen.clear();
        let command = run_request(script, chunks.len(), gzipped);
        self.write(command.as_bytes()).await?;
        self.wait_for(b"XFER-OUT").await?;
        // Chunks go out while the output comes back: a script that stops reading early has
        // its answer read, not a send that waits for window forever.
        let (sent, answer) = {
            let TerminalSession {
                reader,
                writer,
                seen,
                ..
            } = self;
            let send = async {
                for chunk in chunks {
                    writer.write_all(chunk).await?;
                }
                writer.flush().await
            };
            let receive = async {
                let mut buffer = [0u8; 16 * 1024];
                let cap = 3 * limits.max_output + 4096;
                loop {
                    if let Some(at) = find(seen, b"XFER-DONE") {
                        return Some(at);
                    }
                    if seen.len() > cap {
                        return None;
                    }
                    match reader.read(&mut buffer).await {
                        Ok(0) | Err(_) => return None,
                        Ok(read) => seen.extend_from_slice(&buffer[..read]),
                    }
                }
            };
            tokio::join!(send, receive)
        };
        let Some(done) = answer else {
            return Err(closed(
                &self.connection,
                &self.label,
                "while a script ran on the terminal",
            ));
        };
        if sent.is_err() {
            return Err(closed(
                &self.connection,
                &self.label,
                "while writing to the terminal",
            ));
        }
        let rest = self.seen.split_off(done + b"XFER-DONE".len());
        let mut text = std::mem::replace(&mut self.seen, rest);
        let changed = find(&text[..done], b"XFER-BAD-CHUNK").is_some();
        let mut output = parse_output(&text[..done], limits.max_output);
        // The output may hold a secret's value (a remote secret file read back).
        text.zeroize();
        if changed {
            return Err(Error::connect(format!(
                "{}: data sent through the terminal arrived changed",
                self.label
            )));
        }
        output.started = true;
        Ok(output)
    }

    /// Measures the terminal's raw throughput, in bytes per second, from the host and to it,
    /// with `blocks` times 64 KiB each way.
    pub async fn measure(&mut self, blocks: usize) -> Result<(f64, f64)> {
        let label = self.label.clone();
        tokio::time::timeout(MEASURE_TIMEOUT, self.measure_unbounded(blocks))
            .await
            .unwrap_or_else(|_| {
                Err(Error::remote(format!(
                    "{label}: measuring the terminal took over {} s",
                    MEASURE_TIMEOUT.as_secs()
                )))
            })
    }

    async fn measure_unbounded(&mut self, blocks: usize) -> Result<(f64, f64)> {
        let length = blocks * 65536;
        self.seen.clear();
        self.write(format!("pace {blocks}\n").as_bytes()).await?;
        self.wait_for(b"XFER-OUT").await?;
        let started = tokio::time::Instant::now();
        let mut received = self.seen.len();
        // Counted, not kept: a marker split across two reads is looked for in the joined tail.
        let mut tail = std::mem::take(&mut self.seen);
        loop {
            if let Some(at) = find(&tail, b"XFER-DONE") {
                self.seen = tail.split_off(at + b"XFER-DONE".len());
                break;
            }
            let keep = tail.len().saturating_sub(b"XFER-DONE".len());
            tail.drain(..keep);
            let mut buffer = [0u8; 64 * 1024];
            match self.reader.read(&mut buffer).await {
                Ok(0) | Err(_) => {
                    return Err(closed(&self.connection, &self.label, "while measuring"));
                }
                Ok(read) => {
                    received += read;
                    tail.extend_from_slice(&buffer[..read]);
                }
            }
            if received > 2 * length + 4096 {
                return Err(Error::remote(format!(
                    "{}: the terminal sent more than was asked for",
                    self.label
                )));
            }
        }
        let down = length as f64 / started.elapsed().as_secs_f64().max(1e-6);
        let started = tokio::time::Instant::now();
        let mut sent = format!("sink {length}\n").into_bytes();
        sent.resize(sent.len() + length, b'a');
        self.write(&sent).await?;
        self.wait_for(b"XFER-DONE").await?;
        let up = length as f64 / started.elapsed().as_secs_f64().max(1e-6);
        Ok((down, up))
    }

    /// Runs `script` (which reads `line` from its stdin and either starts the agent or prints
    /// why not) with the terminal as its stdin and stdout, and when an agent answers, agrees on
    /// the link and starts the protocol inside it.
    pub async fn start_agent(self, script: &'static str, line: &str) -> Result<TerminalLaunch> {
        let connection = self.connection.clone();
        let label = self.label.clone();
        match tokio::time::timeout(
            AGENT_START_TIMEOUT,
            self.start_agent_unbounded(script, line),
        )
        .await
        {
            Ok(result) => result,
            Err(_) if connection.is_closed() => {
                Err(closed(&connection, &label, "while the xfer agent started"))
            }
            Err(_) => Ok(TerminalLaunch::Refused(format!(
                "the xfer agent did not answer on the terminal within {} s",
                AGENT_START_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn start_agent_unbounded(
        mut self,
        script: &'static str,
        line: &str,
    ) -> Result<TerminalLaunch> {
        self.seen.clear();
        let command = format!("agent {}\n{script}{line}\n", script.len());
        self.write(command.as_bytes()).await?;
        let label = self.label.clone();
        let connection = self.connection.clone();
        let mut seen = std::mem::take(&mut self.seen);
        let found = handshake::read_message(
            &mut self.reader,
            &mut seen,
            &[b"XFER-DONE"],
            MAX_LOGIN_OUTPUT,
        )
        .await;
        let (probe, after) = match found {
            Ok(Found::Message(probe, after)) => (probe, after),
            Ok(Found::Other(text)) => {
                let text = text[..text.len() - b"XFER-DONE".len()].to_vec();
                return Ok(TerminalLaunch::NotAgent(text, self));
            }
            Err(_) => {
                return Err(closed(&connection, &label, "while the xfer agent started"));
            }
        };
        let TerminalSession {
            mut reader,
            mut writer,
            ..
        } = self;
        let agreed = match handshake::as_client(&mut reader, &mut writer, &probe, after).await {
            Ok(agreed) => agreed,
            Err(_) if connection.is_closed() => {
                return Err(closed(&connection, &label, "while the xfer agent started"));
            }
            Err(error) => {
                return Ok(TerminalLaunch::Refused(format!(
                    "the xfer agent's terminal link: {error}"
                )));
            }
        };
        tracing::debug!(%label, read = ?agreed.read, write = ?agreed.write, "the terminal link is up");
        let reader = LinkReader::new(reader, agreed.read, &agreed.early)
            .map_err(|error| Error::connect(format!("{label}: the terminal link: {error}")))?;
        let writer = LinkWriter::new(writer, agreed.write);
        match AgentClient::start(reader, writer).await {
            Ok(Startup::Agent(client, _)) => Ok(TerminalLaunch::Agent(client)),
            Ok(Startup::NotAgent(_)) => Ok(TerminalLaunch::Refused(
                "the program on the terminal link is not an xfer agent".into(),
            )),
            Err(AgentError::Closed | AgentError::Io(_)) => {
                Err(closed(&connection, &label, "while the xfer agent started"))
            }
            Err(error) => Ok(TerminalLaunch::Refused(format!(
                "the xfer agent on the host: {error}"
            ))),
        }
    }
}

/// A session channel with a PTY and a shell granted, and what the shell printed meanwhile.
async fn open_shell(
    connection: &Connection,
    label: &str,
) -> Result<(crate::ssh::channel::Channel, Vec<u8>)> {
    let mut channel = connection.open_session().await?;
    channel
        .request_pty(true, TERM, 400, 40)
        .await
        .map_err(|error| russh_error(label, error))?;
    channel
        .request_shell(true)
        .await
        .map_err(|error| russh_error(label, error))?;
    let mut early = Vec::new();
    // Both requests want replies, which come in order: the second success grants the shell.
    let mut granted = 0;
    while granted < 2 {
        // A server that never answers the PTY request: its one success was the shell's.
        let message = if granted == 1 {
            match tokio::time::timeout(UNANSWERED_REQUEST, channel.wait()).await {
                Ok(message) => message,
                Err(_) => break,
            }
        } else {
            channel.wait().await
        };
        match message {
            Some(ChannelMsg::Success) => granted += 1,
            Some(ChannelMsg::Failure) => {
                return Err(Error::remote(format!(
                    "{label}: the server refuses a terminal and a shell too"
                )));
            }
            Some(ChannelMsg::Data { data }) => early.extend_from_slice(&data),
            Some(ChannelMsg::Eof | ChannelMsg::Close) | None => {
                return Err(closed(connection, label, "before the shell started"));
            }
            Some(_) => {}
        }
    }
    Ok((channel, early))
}

fn closed(connection: &Connection, label: &str, when: &str) -> Error {
    if connection.is_closed() {
        Error::connect(format!("{label}: the connection closed {when}"))
    } else {
        Error::connect(format!("{label}: the terminal session ended {when}"))
    }
}

/// The driver's `run` line for `script` with `chunks` chunks of stdin, then the script.
fn run_request(script: &str, chunks: usize, gzipped: bool) -> String {
    let inflate = if gzipped { " gzip" } else { "" };
    format!("run {} {chunks}{inflate}\n{script}", script.len())
}

/// The line typed into the login shell. Every login shell (sh, bash, zsh, fish, tcsh) runs it
/// the same way: it holds no `!`, backslash or nested single quote. It holds nothing secret,
/// but it should not clutter the user's history either: the leading space keeps it out of
/// fish's and of shells set to ignore such lines, and `unset HISTFILE` keeps bash and zsh from
/// saving it as they are replaced (fish says it has no `unset` and goes on). The
/// marker it prints is split by `""` on the typed line, so the echo of the line never
/// matches it. `icrnl` stays on so a relay that turns LF into CR still ends lines; the link's
/// frames never hold a raw CR or LF. Enter is CR, as a terminal sends it.
fn start_line(nonce: &str) -> String {
    format!(
        " unset HISTFILE; exec /bin/sh -c 'stty raw -echo icrnl 2>/dev/null; echo XFER-TTY-\"\"{nonce}; eval \"$(dd bs=1 count={} 2>/dev/null)\"'\r",
        DRIVER.len()
    )
}

/// Answers a prompt's cursor position query (`ESC [ 6 n`), which some fancy prompts wait for.
async fn answer_cursor_queries(output: &[u8], writer: &mut WriteHalf<Stream>) {
    if find(output, b"\x1b[6n").is_some() {
        let _ = writer.write_all(b"\x1b[1;1R").await;
        let _ = writer.flush().await;
    }
}

/// `parts` as one gzip stream, at the fastest level: the terminal, not the compressor, is
/// what is slow.
fn gzip(parts: &[&[u8]]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for part in parts {
        encoder.write_all(part).ok()?;
    }
    encoder.finish().ok()
}

/// Stdin as the driver's checked chunks: `LENGTH CRC` on a line, then the encoded bytes.
fn encode_chunks(stdin: &[&[u8]], decoder: Decoder) -> Vec<Vec<u8>> {
    let mut encoded = Vec::new();
    for part in stdin {
        match decoder {
            Decoder::Base64 => {
                use base64::Engine;
                // Whole base64 groups per chunk: each decodes on its own.
                for piece in part.chunks(CHUNK / 4 * 3) {
                    encoded.push(
                        base64::engine::general_purpose::STANDARD
                            .encode(piece)
                            .into_bytes(),
                    );
                }
            }
            Decoder::Octal => {
                for piece in part.chunks(CHUNK / 5) {
                    let mut text = Vec::with_capacity(piece.len() * 5);
                    for byte in piece {
                        text.extend_from_slice(format!("\\0{byte:03o}").as_bytes());
                    }
                    encoded.push(text);
                }
            }
        }
    }
    encoded
        .into_iter()
        .map(|text| {
            let mut chunk = format!("{} {}\n", text.len(), posix_cksum(&text)).into_bytes();
            chunk.extend_from_slice(&text);
            chunk
        })
        .collect()
}

/// Reads the driver's hex answer: the script's output, then `XFER-STATUS N`.
fn parse_output(text: &[u8], max_output: usize) -> ExecOutput {
    let mut bytes = Vec::with_capacity(text.len() / 3);
    let mut high = None;
    for &character in text {
        let digit = match character {
            b'0'..=b'9' => character - b'0',
            b'a'..=b'f' => character - b'a' + 10,
            _ => continue,
        };
        match high.take() {
            None => high = Some(digit),
            Some(high) => bytes.push(high << 4 | digit),
        }
    }
    let mut output = ExecOutput::default();
    if let Some(at) = bytes
        .windows(b"XFER-STATUS ".len())
        .rposition(|window| window == b"XFER-STATUS ")
    {
        let status = String::from_utf8_lossy(&bytes[at + b"XFER-STATUS ".len()..]);
        output.status = status.trim().parse().ok();
        bytes.truncate(at);
    }
    bytes.truncate(max_output);
    output.stdout = bytes;
    output
}

/// What POSIX `cksum` prints first for `bytes`: the CRC-32 (polynomial 0x04C11DB7, most
/// significant bit first) of the bytes followed by their length, complemented.
pub fn posix_cksum(bytes: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u32; 256];
        for (index, entry) in table.iter_mut().enumerate() {
            let mut crc = (index as u32) << 24;
            for _ in 0..8 {
                crc = if crc & 0x8000_0000 != 0 {
                    (crc << 1) ^ 0x04C1_1DB7
                } else {
                    crc << 1
                };
            }
            *entry = crc;
        }
        table
    });
    let mut crc = 0u32;
    let mut add = |byte: u8| {
        crc = (crc << 8) ^ table[((crc >> 24) as u8 ^ byte) as usize];
    };
    bytes.iter().for_each(|&byte| add(byte));
    let mut length = bytes.len();
    while length > 0 {
        add(length as u8);
        length >>= 8;
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::Path;
    use std::process::{Command, Stdio};

    fn system_cksum(bytes: &[u8]) -> String {
        let mut child = Command::new("cksum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
    }

    #[test]
    fn the_checksum_is_the_one_cksum_prints() {
        for bytes in [
            &b""[..],
            b"a",
            b"hello world\n",
            &[0u8; 70_000],
            &[0xffu8; 300],
        ] {
            assert_eq!(
                system_cksum(bytes).trim(),
                format!("{} {}", posix_cksum(bytes), bytes.len())
            );
        }
    }

    #[test]
    fn scripts_parse() {
        crate::ssh::exec::assert_parses(DRIVER);
        // The typed line, as /bin/sh would run it.
        let line = start_line("0123");
        let output = Command::new("/bin/sh")
            .arg("-n")
            .arg("-c")
            .arg(line.trim_end_matches('\r'))
            .output()
            .unwrap();
        assert!(output.status.success());
    }

    #[test]
    fn the_start_line_is_the_same_to_every_login_shell() {
        let line = start_line("00ff");
        assert!(!line.contains('!') && !line.contains('\\') && !line.contains('\n'));
        assert!(!line.contains("XFER-TTY-00ff"), "the echo would match");
        // Inside the single quotes, no single quote.
        let inner = &line[line.find('\'').unwrap() + 1..line.rfind('\'').unwrap()];
        assert!(!inner.contains('\''));
    }

    /// Runs the driver here on a pipe (no terminal) with `input` then `quit`, the programs on
    /// `path` first, and returns everything it printed.
    fn run_driver(mut input: Vec<u8>, path: Option<&Path>) -> Vec<u8> {
        input.extend_from_slice(b"quit\n");
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(DRIVER);
        if let Some(path) = path {
            let inherited = std::env::var("PATH").unwrap_or_default();
            command.env("PATH", format!("{}:{inherited}", path.display()));
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child_stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || child_stdin.write_all(&input));
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        output.stdout
    }

    /// A `run` request as the client sends it.
    fn request(script: &str, chunks: &[Vec<u8>], gzipped: bool) -> Vec<u8> {
        let mut input = run_request(script, chunks.len(), gzipped).into_bytes();
        chunks
            .iter()
            .for_each(|chunk| input.extend_from_slice(chunk));
        input
    }

    /// Runs one `run` request through the driver here and reads its answer the way the client
    /// does.
    fn drive(decoder_missing: bool, script: &'static str, stdin: &[u8]) -> ExecOutput {
        let shim = tempfile::tempdir().unwrap();
        if decoder_missing {
            // A host without base64: a base64 that fails.
            let fake = shim.path().join("base64");
            std::fs::write(&fake, "#!/bin/sh\nexit 127\n").unwrap();
            std::fs::set_permissions(
                &fake,
                <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
            )
            .unwrap();
        }
        let decoder = if decoder_missing {
            Decoder::Octal
        } else {
            Decoder::Base64
        };
        let chunks = encode_chunks(&[stdin], decoder);
        let text = run_driver(
            request(script, &chunks, false),
            decoder_missing.then_some(shim.path()),
        );
        let hello = format!(
            "XFER-DRIVER-1 {} gzip\n",
            if decoder_missing { "octal" } else { "base64" }
        );
        assert!(
            text.starts_with(hello.as_bytes()),
            "{}",
            String::from_utf8_lossy(&text)
        );
        let start = find(&text, b"XFER-OUT").unwrap() + b"XFER-OUT".len();
        let done = find(&text, b"XFER-DONE").unwrap();
        parse_output(&text[start..done], 1 << 20)
    }

    /// Runs `requests` (each a script and its stdin, the last one's chunks passed through
    /// `damage`) through the driver here and returns its whole output.
    fn drive_many(requests: &[(&'static str, &[u8])], damage: fn(&mut Vec<u8>)) -> Vec<u8> {
        let mut input = Vec::new();
        for (index, (script, stdin)) in requests.iter().enumerate() {
            let mut chunks = encode_chunks(&[stdin], Decoder::Base64);
            if index + 1 == requests.len() {
                chunks.iter_mut().for_each(damage);
            }
            input.extend(request(script, &chunks, false));
        }
        run_driver(input, None)
    }

    fn answers(text: &[u8]) -> Vec<(ExecOutput, bool)> {
        let mut answers = Vec::new();
        let mut rest = text;
        while let Some(start) = find(rest, b"XFER-OUT") {
            let done = find(rest, b"XFER-DONE").unwrap();
            let answer = &rest[start + b"XFER-OUT".len()..done];
            answers.push((
                parse_output(answer, 1 << 20),
                find(answer, b"XFER-BAD-CHUNK").is_some(),
            ));
            rest = &rest[done + b"XFER-DONE".len()..];
        }
        answers
    }

    #[test]
    fn a_gzipped_stdin_is_inflated_on_the_host() {
        let stdin: Vec<u8> = (0..=255u8).cycle().take(3 << 20).collect();
        let compressed = gzip(&[&stdin[..1000], &stdin[1000..]]).unwrap();
        assert!(compressed.len() < stdin.len() / 10);
        let chunks = encode_chunks(&[&compressed], Decoder::Base64);
        let output = run_driver(request("cksum", &chunks, true), None);
        let answers = answers(&output);
        assert_eq!(answers.len(), 1);
        assert_eq!(
            String::from_utf8_lossy(&answers[0].0.stdout),
            format!("{} {}\n", posix_cksum(&stdin), stdin.len())
        );
    }

    #[test]
    fn a_script_that_stops_reading_early_leaves_the_driver_ready_for_the_next() {
        let big = vec![7u8; 1 << 20];
        let text = drive_many(&[("exit 3", &big), ("cat", b"second")], |_| {});
        let answers = answers(&text);
        assert_eq!(answers.len(), 2, "{}", String::from_utf8_lossy(&text));
        assert_eq!(answers[0].0.status, Some(3));
        assert_eq!(answers[1].0.status, Some(0));
        assert_eq!(answers[1].0.stdout, b"second");
    }

    #[test]
    fn a_changed_chunk_is_reported_and_never_reaches_the_script() {
        let text = drive_many(&[("cat", b"first"), ("cat", b"value")], |chunk| {
            let last = chunk.len() - 1;
            chunk[last] ^= 0x01;
        });
        let answers = answers(&text);
        assert_eq!(answers.len(), 2, "{}", String::from_utf8_lossy(&text));
        assert_eq!(
            (answers[0].0.stdout.as_slice(), answers[0].1),
            (&b"first"[..], false)
        );
        assert!(answers[1].1, "the damage went unnoticed");
        assert!(answers[1].0.stdout.is_empty());
    }

    #[test]
    fn the_driver_runs_a_script_with_every_byte_on_stdin_and_returns_its_status() {
        let stdin: Vec<u8> = (0..=255u8).cycle().take(600_000).collect();
        for decoder_missing in [false, true] {
            let output = drive(
                decoder_missing,
                "cksum; echo \"line one\"; printf 'no newline'; exit 7",
                &stdin,
            );
            assert_eq!(output.status, Some(7));
            let expected = format!(
                "{} {}\nline one\nno newline",
                posix_cksum(&stdin),
                stdin.len()
            );
            assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
        }
    }
}
