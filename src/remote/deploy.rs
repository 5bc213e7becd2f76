//! Starting `xfer agent` on a host, and putting it there first when it is missing.
//!
//! The agent is an xfer executable for the host's platform ([`bundle`]: xfer's own executable
//! for its own platform, the agent bundle's file for others). On the remote it lives in a
//! per-user cache, `~/.cache/xfer/agent-VERSION-OS-ARCH-HASH` (HASH: the first 16 hex digits of
//! the executable's BLAKE3), so different builds never run each other's agent. One exec
//! channel both looks for it and, when it is there, becomes it (`exec`), so a cached agent
//! costs no extra round trip: the client sends the name of its agent for every platform it
//! has one for, and the script runs the one matching the host's `uname -s` and `uname -m`; when
//! none is cached, the same script answers with the host's platform instead. A missing or
//! corrupted agent is replaced: the executable streams over exec stdin into `cat` (so hosts
//! that refuse SFTP still get it), lands in a file created exclusively under a random name with
//! `umask 077` and is renamed into place; the started agent then reports the BLAKE3 of its own
//! executable, which must equal the one the client uploaded. Every failure (a platform without
//! an agent, no exec, an agent that does not start, no common protocol version) is a
//! [`Outcome::Fallback`] with one line saying why: the caller then uses SFTP.
//!
//! On a shared host another account may try to make xfer run its program as the user. The
//! BLAKE3 handshake cannot stop that: it proves the file that answered holds our bytes, not
//! that nobody ran first (a wrapper that records and then execs the genuine agent passes it).
//! So nothing is run or written unless every component from `$HOME` down to the agent is a
//! real directory or file (not a symlink), owned by the user and writable by no one else,
//! checked with `stat`; otherwise the reason is given and SFTP is used.
//!
//! Scripts are constants; the variables (the agents' file names, a random upload name, or the
//! path given with `--agent`) travel on stdin, never on the command line.
//!
//! A shell-only endpoint refuses exec: [`start_through_terminal`] does the same there through
//! the terminal (`shell_only`): the same start script with the terminal as its stdin and
//! stdout, the same upload script fed through the terminal's driver, the same BLAKE3 check.

use crate::agent::client::{AgentClient, AgentError, Startup};
use crate::error::{Error, Result};
use crate::remote::agent::AgentRemote;
use crate::remote::bundle::{self, Agent, Catalog, Platform};
use crate::remote::runner::Runner;
use crate::remote::shell_only::{TerminalLaunch, TerminalSession};
use crate::ssh::connect::{Connection, russh_error};
use crate::ssh::exec::{self, ExecLimits};
use russh::ChannelMsg;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Which agent a connection uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AgentMode {
    /// The cached agent, deployed when missing; SFTP when that cannot work.
    #[default]
    Auto,
    /// SFTP only (`--no-agent`).
    Off,
    /// A remote executable given with `--agent PATH`, never uploaded.
    Path(String),
}

/// What starting the agent came to.
pub enum Outcome {
    Ready(AgentRemote),
    /// SFTP it is; the reason, in one line.
    Fallback(String),
}

/// Exit status of the upload script when a write failed and stdin is used up.
const FULL: u32 = 92;
/// Exit status of the upload script when the written file is not what was sent.
const CHANGED: u32 = 94;
/// Exit status of the upload script when the executable cannot start on the host at all (a C
/// library too old, a loader missing): no other place would do better.
const WONT_START: u32 = 95;

/// The upload script's fourth line: the executable's SHA-256, POSIX cksum CRC and length.
fn expected_sums(executable: &[u8]) -> String {
    use sha2::Digest;
    let sha = sha2::Sha256::digest(executable);
    format!(
        "{} {} {}",
        crate::blocks::to_hex(&sha.into()),
        crate::remote::shell_only::posix_cksum(executable),
        executable.len()
    )
}
/// How long starting (or uploading) may take before the agent is given up.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// An upload may take this long, plus a second for every [`UPLOAD_RATE_FLOOR`] bytes: a link
/// slower than that floor is better served by SFTP than by waiting for the agent.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(30);
const UPLOAD_RATE_FLOOR: usize = 256 * 1024;

/// Shell functions shared by the scripts that touch the cache.
///
/// `private DIR` holds when DIR is a real directory (not a symlink), owned by the login user
/// and writable by nobody else, so no other account can rename, replace or add anything in it.
/// `shared_root DIR` holds for a directory like `/tmp`: root's, sticky, so nobody can rename
/// or remove what another user made in it. `$HOME` and `$TMPDIR` may be symlinks (`/home/x ->
/// /data/x` is common), so they are checked through `DIR/.`. `stat -c` is GNU and BusyBox;
/// where it is missing nothing counts as private and the agent is not used.
///
/// The agent lives in the first usable of these caches, in order: `~/.cache/xfer`;
/// `$XDG_RUNTIME_DIR/xfer`; `${TMPDIR:-/tmp}/xfer-agent-UID`; `/dev/shm/xfer-agent-UID`. A
/// cache is usable when the directories above it pass their check (`chain N`) and it is itself
/// private, so a home that is read-only, full, shared with a group or mounted `noexec` costs
/// the agent nothing but a place further down the list.
macro_rules! cache_checks {
    () => {
        r#"private() {
  [ -d "$1" ] && [ ! -L "$1" ] && [ -O "$1" ] || return 1
  mode=$(stat -c %a -- "$1" 2>/dev/null) || return 1
  case $mode in ""|*[!0-7]*|*[2367]?|*[2367]) return 1;; esac
  return 0
}
shared_root() {
  [ -d "$1" ] && [ ! -L "$1" ] || return 1
  [ "$(stat -c %u -- "$1" 2>/dev/null)" = 0 ] || return 1
  case $(stat -c %a -- "$1" 2>/dev/null) in [1357]???) return 0;; esac
  return 1
}
missing() { [ ! -e "$1" ] && [ ! -L "$1" ]; }
home=${HOME:-/nonexistent}
uid=$(id -u 2>/dev/null) || uid=
tmp_base=${TMPDIR:-/tmp}
case $tmp_base in /*) ;; *) tmp_base=/tmp;; esac
runtime=${XDG_RUNTIME_DIR:-}
case $runtime in /*) ;; *) runtime=;; esac
cache() {
  case $1 in
    1) echo "$home/.cache/xfer" ;;
    2) [ -n "$runtime" ] && echo "$runtime/xfer" ;;
    3) [ -n "$uid" ] && echo "$tmp_base/xfer-agent-$uid" ;;
    4) [ -n "$uid" ] && echo "/dev/shm/xfer-agent-$uid" ;;
  esac
}
chain() {
  case $1 in
    1) private "$home/." && { missing "$home/.cache" || private "$home/.cache"; } ;;
    2) private "$runtime/." ;;
    3) private "$tmp_base/." || shared_root "$tmp_base/." ;;
    4) shared_root /dev/shm ;;
  esac
}
"#
    };
}

/// Runs the cached agent for the host's platform, or prints why not. Stdin starts with a
/// table, one line `SYSTEM MACHINE NAME` per way an agent's platform spells itself in `uname`,
/// ended by an empty line; the agent is the first name whose line matches the host, run from
/// the first usable cache that holds it.
const START_CACHED: &str = concat!(
    cache_checks!(),
    r#"system=$(uname -s 2>/dev/null) || system=
machine=$(uname -m 2>/dev/null) || machine=
name=
lines=0
while IFS=' ' read -r s m n; do
  [ -n "$s" ] || break
  lines=$((lines + 1))
  [ "$lines" -le 256 ] || exit 96
  if [ -z "$name" ] && [ "$s" = "$system" ] && [ "$m" = "$machine" ]; then name=$n; fi
done
case $name in */*|.*) exit 96;; esac
for n in 1 2 3 4; do
  [ -n "$name" ] || break
  dir=$(cache $n) || continue
  [ -n "$dir" ] && chain $n && private "$dir" || continue
  agent=$dir/$name
  if [ -f "$agent" ] && [ ! -L "$agent" ] && [ -O "$agent" ] && [ -x "$agent" ]; then
    mode=$(stat -c %a -- "$agent" 2>/dev/null) || mode=
    case $mode in ""|*[!0-7]*|*[2367]?|*[2367]) ;; *) exec "$agent" agent;; esac
  fi
done
printf "XFER-NO-AGENT\n%s\n%s\n" "$system" "$machine"
"#
);

/// Runs the agent at the path on the first line of stdin (`--agent PATH`), or prints why not.
const START_PATH: &str = r#"IFS= read -r agent || exit 96
case $agent in "~/"*) agent="${HOME:-/nonexistent}/${agent#"~/"}";; esac
if [ -f "$agent" ] && [ -x "$agent" ]; then exec "$agent" agent; fi
printf "XFER-NO-AGENT\n%s\n%s\nmissing\n" "$(uname -s 2>/dev/null)" "$(uname -m 2>/dev/null)"
"#;

/// Writes the executable on stdin (after the name, nonce, first-cache and expected-sums lines)
/// into the first usable cache, from the one numbered on the third line on, where it also runs.
/// Missing cache directories are made private (0700); the upload lands in a file created
/// exclusively under a random name (noclobber: never an existing file, never through a
/// symlink), written through that descriptor, checked whole against the fourth line (`SHA256
/// CRC LENGTH`: `sha256sum` where the host has it, POSIX `cksum` otherwise) before it ever
/// runs (exit 94 when it differs), started once to see that the mount allows programs, and
/// renamed into place.
/// The executable is read from stdin into the first place that takes it; a place further down
/// copies it from there. A write that fails (a full disk, a quota) has used up stdin: the
/// script says `full N` (exit 92) and the client sends it again for the places after N.
/// Prints `ok DIR`, or why each place could not be used (exit 93).
const UPLOAD: &str = concat!(
    cache_checks!(),
    r#"IFS= read -r name || exit 96
IFS= read -r nonce || exit 96
IFS= read -r first || exit 96
IFS=' ' read -r want_sha want_crc want_length || exit 96
case $name in ""|*/*|.*) exit 96;; esac
case $nonce in ""|*[!0-9a-f]*) exit 96;; esac
case $first in [1-4]) ;; *) exit 96;; esac
case $want_sha$want_crc$want_length in ""|*[!0-9a-f]*) exit 96;; esac
whole() {
  if sum=$(sha256sum < "$1" 2>/dev/null) && [ -n "$sum" ]; then
    [ "${sum%% *}" = "$want_sha" ]
  else
    [ "$(cksum < "$1")" = "$want_crc $want_length" ]
  fi
}
umask 077
reasons=
copy=
for n in 1 2 3 4; do
  [ "$n" -ge "$first" ] || continue
  dir=$(cache $n) || dir=
  if [ -z "$dir" ]; then continue; fi
  if ! chain $n; then reasons="$reasons; $dir: a directory above it is a symlink, not yours, or writable by others"; continue; fi
  if [ $n = 1 ] && missing "$home/.cache"; then mkdir -m 700 -- "$home/.cache" 2>/dev/null; fi
  if missing "$dir"; then mkdir -m 700 -- "$dir" 2>/dev/null || { reasons="$reasons; $dir: cannot be created (read-only, full or not writable)"; continue; }; fi
  if ! private "$dir"; then reasons="$reasons; $dir: a symlink, not yours, or writable by others"; continue; fi
  tmp=$dir/.upload-$nonce
  set -C
  if ! { command exec 3>"$tmp"; } 2>/dev/null; then set +C; reasons="$reasons; $dir: cannot create a file there"; continue; fi
  set +C
  if [ -z "$copy" ]; then
    if ! cat >&3; then exec 3>&-; rm -f -- "$tmp"; echo "full $n ${reasons#; }"; exit 92; fi
    copy=$tmp
  elif ! cat < "$copy" >&3; then
    exec 3>&-; rm -f -- "$tmp"; reasons="$reasons; $dir: writing failed (full or over quota)"; continue
  fi
  exec 3>&-
  if ! whole "$tmp"; then
    rm -f -- "$tmp"
    [ "$tmp" = "$copy" ] || rm -f -- "$copy"
    echo "the executable arrived changed"
    exit 94
  fi
  chmod 700 -- "$tmp" || { reasons="$reasons; $dir: chmod failed"; continue; }
  said=$("$tmp" agent </dev/null 2>&1 | dd bs=512 count=1 2>/dev/null | tr -d '\n' | tr -c ' -~' '?')
  case $said in
    XFERAGT*) ;;
    *)
      if [ -z "$said" ]; then said="programs cannot run there (mounted noexec?)"; fi
      case $said in *GLIBC_*|*"not found"*) exit_why=libc;; *) exit_why=;; esac
      [ "$tmp" = "$copy" ] || rm -f -- "$tmp"
      if [ "$exit_why" = libc ]; then rm -f -- "$copy"; echo "start $said"; exit 95; fi
      reasons="$reasons; $dir: the agent does not start there: $said"
      continue
      ;;
  esac
  [ "$tmp" = "$copy" ] || rm -f -- "$copy"
  mv -f -- "$tmp" "$dir/$name" || { rm -f -- "$tmp"; reasons="$reasons; $dir: rename failed"; continue; }
  for old in "$dir/${name%-*}"-*; do
    [ "$old" = "$dir/$name" ] || rm -f -- "$old"
  done
  echo "ok $dir"
  exit 0
done
if [ -n "$copy" ]; then rm -f -- "$copy"; else cat > /dev/null; fi
echo "${reasons#; }"
exit 93
"#
);

/// Looks, changing nothing, for where the agent would run from: prints `cached DIR` when a
/// private cache holds a copy under the name on stdin, else `upload DIR` for the first place
/// an upload would try, else `none REASONS`. Whether a mount allows programs to run, or has
/// room, shows only when something is written and run, which this never does.
const INSPECT: &str = concat!(
    cache_checks!(),
    r#"IFS= read -r name || exit 96
case $name in ""|*/*|.*) exit 96;; esac
place=
reasons=
for n in 1 2 3 4; do
  dir=$(cache $n) || dir=
  [ -n "$dir" ] || continue
  if ! chain $n; then reasons="$reasons; $dir: a directory above it is a symlink, not yours, or writable by others"; continue; fi
  if missing "$dir"; then
    parent=${dir%/*}
    if [ $n = 1 ] && missing "$parent"; then parent=$home; fi
    if [ -w "$parent" ]; then [ -n "$place" ] || place=$dir; else reasons="$reasons; $dir: cannot be created (not writable)"; fi
    continue
  fi
  if ! private "$dir"; then reasons="$reasons; $dir: a symlink, not yours, or writable by others"; continue; fi
  agent=$dir/$name
  if [ -f "$agent" ] && [ ! -L "$agent" ] && [ -O "$agent" ] && [ -x "$agent" ]; then
    echo "cached $dir"
    exit 0
  fi
  if [ -w "$dir" ]; then [ -n "$place" ] || place=$dir; else reasons="$reasons; $dir: not writable"; fi
done
if [ -n "$place" ]; then echo "upload $place"; else echo "none ${reasons#; }"; fi
"#
);

/// Where the agent would come from on a host, as [`inspect`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentPlace {
    /// A copy under this build's name in a private cache (its bytes are checked when it starts).
    Cached(String),
    /// None cached; a transfer uploads it here first.
    Upload(String),
    /// No place can hold it: transfers use SFTP; the reasons, one per place.
    Nowhere(String),
}

/// Finds where a transfer would run `agent` from on the host `runner` reaches, changing
/// nothing there. `Err` when the host does not run the script (no exec).
pub async fn inspect(runner: &mut Runner<'_>, agent: &Agent) -> Result<AgentPlace> {
    let output = runner
        .run(
            INSPECT,
            format!("{}\n", agent.name).as_bytes(),
            ExecLimits {
                max_output: 4096,
                timeout: START_TIMEOUT,
            },
        )
        .await?;
    let answer = output.stdout_text();
    let answer = answer.trim();
    let place = |prefix: &str| answer.strip_prefix(prefix).map(crate::terminal::printable);
    match (
        output.success(),
        place("cached "),
        place("upload "),
        place("none "),
    ) {
        (true, Some(directory), _, _) => Ok(AgentPlace::Cached(directory)),
        (true, _, Some(directory), _) => Ok(AgentPlace::Upload(directory)),
        (true, _, _, Some(reasons)) => Ok(AgentPlace::Nowhere(reasons)),
        _ => Err(Error::remote(format!(
            "{}: the agent check did not run",
            runner.label()
        ))),
    }
}

/// Prints the host's platform.
const PROBE: &str = r#"printf "%s\n%s\n" "$(uname -s)" "$(uname -m)""#;

/// The executable that serves `agent`, as the program using this library declared it with
/// [`serve_agent_from`]: the xfer binary declares itself. Without a declaration there is no
/// agent to deploy, and an automatic agent falls back to SFTP: uploading whatever program is
/// running and starting it with the argument `agent` would run something that takes that word
/// for anything else (a test harness takes it for a filter and runs tests on the host).
static AGENT_EXECUTABLE: OnceLock<std::path::PathBuf> = OnceLock::new();

/// Declares `executable` (an xfer binary of this build) as the agent to deploy to hosts.
/// The first declaration of a process stands.
pub fn serve_agent_from(executable: std::path::PathBuf) {
    let _ = AGENT_EXECUTABLE.set(executable);
}

fn agent_executable() -> std::result::Result<&'static std::path::Path, String> {
    AGENT_EXECUTABLE
        .get()
        .map(std::path::PathBuf::as_path)
        .ok_or_else(|| "this program declares no xfer agent to deploy".to_string())
}

/// The agents this process deploys (its own executable, hashed once, and the bundle's), or
/// why it has none.
pub fn catalog() -> std::result::Result<&'static Catalog, String> {
    static CATALOG: OnceLock<std::result::Result<Catalog, String>> = OnceLock::new();
    CATALOG
        .get_or_init(|| {
            let executable = agent_executable()?;
            let build = crate::agent::server::build_id_of(executable)
                .map_err(|error| format!("cannot read xfer's own executable: {error}"))?;
            let bundle_dir = crate::env::var_path(crate::env::XFER_AGENT_BUNDLE)
                .or_else(|| bundle::default_bundle_dir(executable));
            Ok(Catalog::load(
                Some((executable.to_path_buf(), build.executable_blake3)),
                bundle_dir,
            ))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Starts the agent on `connection` as `mode` says. `Err` only when the connection itself
/// failed (transient: the caller retries); anything else wrong is a fallback.
pub async fn start_agent(connection: &Arc<Connection>, mode: &AgentMode) -> Result<Outcome> {
    let outcome = match mode {
        AgentMode::Off => Ok(Outcome::Fallback("--no-agent".into())),
        AgentMode::Path(path) => start_at_path(connection, path).await,
        AgentMode::Auto => start_cached(connection).await,
    };
    match outcome {
        Err(error) if !connection.is_closed() && !error.is_transient() => {
            Ok(Outcome::Fallback(error.message().to_string()))
        }
        other => other,
    }
}

async fn start_at_path(connection: &Arc<Connection>, path: &str) -> Result<Outcome> {
    if path.contains(['\n', '\0']) {
        return Ok(Outcome::Fallback(
            "the --agent path contains a newline".into(),
        ));
    }
    match launch(connection, START_PATH, path).await? {
        Launch::Agent(client) => Ok(Outcome::Ready(AgentRemote::new(client, connection.clone()))),
        Launch::NotAgent(_) => Ok(Outcome::Fallback(format!(
            "no runnable xfer agent at {}",
            crate::terminal::printable(path)
        ))),
        Launch::Refused(reason) | Launch::Failed(reason) => Ok(Outcome::Fallback(reason)),
    }
}

async fn start_cached(connection: &Arc<Connection>) -> Result<Outcome> {
    let catalog = match catalog() {
        Ok(catalog) => catalog,
        Err(reason) => return Ok(Outcome::Fallback(reason)),
    };
    let platform = match launch(connection, START_CACHED, &catalog.start_table()).await? {
        Launch::Agent(client) if is_ours(&client, catalog) => {
            return Ok(Outcome::Ready(AgentRemote::new(client, connection.clone())));
        }
        // Same name, other bytes: a damaged or tampered copy. Replace it.
        Launch::Agent(_) | Launch::Refused(_) => probe(&mut Runner::Exec(connection)).await?,
        Launch::Failed(reason) => return Ok(Outcome::Fallback(reason)),
        Launch::NotAgent(text) => match parse_no_agent(&text) {
            Some(answer) if answer.platform.is_none() => {
                return Ok(Outcome::Fallback(
                    "the host has no uname, so which agent it runs is unknown".into(),
                ));
            }
            Some(answer) => answer.platform,
            // No answer at all: an agent was there but could not run. Replace it.
            None => probe(&mut Runner::Exec(connection)).await?,
        },
    };
    let Some(platform) = platform else {
        return Ok(Outcome::Fallback("the host does not run commands".into()));
    };
    let agent = match catalog.for_platform(&platform) {
        Ok(agent) => agent,
        Err(reason) => return Ok(Outcome::Fallback(reason)),
    };
    if let Some(reason) = upload_once(connection, &mut Runner::Exec(connection), agent).await? {
        return Ok(Outcome::Fallback(reason));
    }
    match launch(connection, START_CACHED, &catalog.start_table()).await? {
        Launch::Agent(client) if is_the(&client, agent) => {
            Ok(Outcome::Ready(AgentRemote::new(client, connection.clone())))
        }
        Launch::Agent(_) => Ok(Outcome::Fallback(
            "the uploaded agent's hash differs from the one xfer sent".into(),
        )),
        Launch::NotAgent(_) => Ok(Outcome::Fallback(
            "the uploaded agent does not start on the host".into(),
        )),
        Launch::Refused(reason) | Launch::Failed(reason) => Ok(Outcome::Fallback(reason)),
    }
}

/// Uploads the agent unless another connection of this run did it already for the host: the
/// connections of one run find the agent missing at the same moment, so one uploads while the
/// others to that host wait, then they start the copy it left; uploads to different hosts go
/// on at once. A failed upload is remembered too, so the others do not each wait for it
/// again. Some(reason) when it failed for good.
async fn upload_once(
    connection: &Connection,
    runner: &mut Runner<'_>,
    agent: &Agent,
) -> Result<Option<String>> {
    type Uploaded = Arc<tokio::sync::Mutex<Option<Option<String>>>>;
    static UPLOADS: std::sync::Mutex<Vec<(String, Uploaded)>> = std::sync::Mutex::new(Vec::new());
    let host = connection.label().to_string();
    let this_host = {
        let mut uploads = UPLOADS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match uploads.iter().find(|(label, _)| *label == host) {
            Some((_, uploaded)) => uploaded.clone(),
            None => {
                let uploaded = Uploaded::default();
                uploads.push((host, uploaded.clone()));
                uploaded
            }
        }
    };
    let mut uploaded = this_host.lock().await;
    if let Some(failed) = &*uploaded {
        return Ok(failed.clone());
    }
    let failed = match upload(runner, connection, agent).await {
        Ok(()) => None,
        Err(error) if error.is_transient() => return Err(error),
        Err(error) => Some(error.message().to_string()),
    };
    *uploaded = Some(failed.clone());
    Ok(failed)
}

/// Starts the agent through a terminal, for a host that refuses exec and SFTP but gives a
/// shell on a PTY (see `shell_only`): the cached agent when it is there, else the executable
/// uploaded through the terminal first, as over exec. `Err` when no terminal session could be
/// had (permanent when the host refuses one or its login never runs xfer's line); anything
/// else is a fallback with its reason.
pub async fn start_through_terminal(connection: &Arc<Connection>) -> Result<Outcome> {
    let catalog = match catalog() {
        Ok(catalog) => catalog,
        Err(reason) => return Ok(Outcome::Fallback(reason)),
    };
    let table = catalog.start_table();
    let session = TerminalSession::open(connection).await?;
    let (platform, mut session) = match session.start_agent(START_CACHED, &table).await? {
        TerminalLaunch::Agent(client) if is_ours(&client, catalog) => {
            return Ok(Outcome::Ready(AgentRemote::new(client, connection.clone())));
        }
        // Same name, other bytes (a damaged copy), or an agent that would not talk: replaced
        // from a new terminal, the session it started being its own now.
        TerminalLaunch::Agent(_) | TerminalLaunch::Refused(_) => {
            let mut session = TerminalSession::open(connection).await?;
            (probe(&mut Runner::Terminal(&mut session)).await?, session)
        }
        TerminalLaunch::NotAgent(text, session) => match parse_no_agent(&text) {
            Some(answer) => (answer.platform, session),
            None => {
                return Ok(Outcome::Fallback(format!(
                    "the start script on the terminal did not answer: {}",
                    crate::terminal::printable(String::from_utf8_lossy(&text).trim())
                )));
            }
        },
    };
    let Some(platform) = platform else {
        return Ok(Outcome::Fallback(
            "the host has no uname, so which agent it runs is unknown".into(),
        ));
    };
    let agent = match catalog.for_platform(&platform) {
        Ok(agent) => agent,
        Err(reason) => return Ok(Outcome::Fallback(reason)),
    };
    if let Some(reason) =
        upload_once(connection, &mut Runner::Terminal(&mut session), agent).await?
    {
        return Ok(Outcome::Fallback(reason));
    }
    Ok(match session.start_agent(START_CACHED, &table).await? {
        TerminalLaunch::Agent(client) if is_the(&client, agent) => {
            Outcome::Ready(AgentRemote::new(client, connection.clone()))
        }
        TerminalLaunch::Agent(_) => {
            Outcome::Fallback("the uploaded agent's hash differs from the one xfer sent".into())
        }
        TerminalLaunch::NotAgent(..) => {
            Outcome::Fallback("the uploaded agent does not start on the host".into())
        }
        TerminalLaunch::Refused(reason) => Outcome::Fallback(reason),
    })
}

enum Launch {
    Agent(AgentClient),
    /// What the script printed instead of the agent's greeting.
    NotAgent(Vec<u8>),
    /// The agent answered but no protocol version is common, or its greeting was malformed.
    Refused(String),
    /// Nothing to try again here: the server refused exec, or did not answer in time.
    Failed(String),
}

/// Runs `script` with `line` as the first line of its stdin and, when an agent answers, keeps
/// the channel as the agent's stream.
async fn launch(connection: &Arc<Connection>, script: &'static str, line: &str) -> Result<Launch> {
    let label = connection.label().to_string();
    let work = async {
        // The script and the first line go out with the request, not a round trip later.
        let mut first = exec::script_input(script).to_vec();
        first.extend_from_slice(line.as_bytes());
        first.push(b'\n');
        let mut attempt = 0;
        let (channel, early) = 'channel: loop {
            attempt += 1;
            let mut channel = connection.open_session().await?;
            channel
                .exec(true, exec::command_line(script))
                .await
                .map_err(|error| russh_error(&label, error))?;
            channel
                .data(&first[..])
                .await
                .map_err(|error| russh_error(&label, error))?;
            // The server's answer to the exec request comes first; output that raced ahead
            // of it is kept for the stream.
            loop {
                match channel.wait().await {
                    Some(ChannelMsg::Success) => break 'channel (channel, Vec::new()),
                    Some(ChannelMsg::Failure) => {
                        return Ok(Launch::Failed(
                            "the server does not allow running commands (exec)".into(),
                        ));
                    }
                    Some(ChannelMsg::Data { data }) => break 'channel (channel, data.to_vec()),
                    // Closed without an answer: Dropbear before 2024.86 does that to a channel
                    // opened just as another process of the session exits (see
                    // exec::UNANSWERED_ATTEMPTS). The same request on a new channel runs.
                    Some(ChannelMsg::Eof | ChannelMsg::Close) | None
                        if attempt < exec::UNANSWERED_ATTEMPTS && !connection.is_closed() =>
                    {
                        tracing::debug!(%label, attempt, "the server closed the agent's channel without answering; trying a new one");
                        continue 'channel;
                    }
                    Some(ChannelMsg::Eof | ChannelMsg::Close) | None => {
                        return Ok(Launch::NotAgent(Vec::new()));
                    }
                    Some(_) => {}
                }
            }
        };
        let (mut reader, writer) = tokio::io::split(channel.into_stream());
        // What the login shell prints before every command comes first: skip to the line the
        // command line prints before the script.
        let mut seen = early;
        let start = loop {
            if let Some(start) = exec::find_marker(&seen) {
                break start;
            }
            if seen.len() > exec::MAX_PREAMBLE {
                return Ok(Launch::Failed(
                    "the login shell printed more than 64 KiB before running the command".into(),
                ));
            }
            let mut buffer = [0u8; 4096];
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) if !connection.is_closed() => {
                    return Ok(Launch::NotAgent(Vec::new()));
                }
                Ok(0) | Err(_) => {
                    return Err(Error::connect(format!(
                        "{label}: the connection closed while starting the xfer agent"
                    )));
                }
                Ok(read) => seen.extend_from_slice(&buffer[..read]),
            }
        };
        if start > exec::BEGIN_MARKER.len() {
            tracing::debug!(%label, bytes = start - exec::BEGIN_MARKER.len(), "the login shell printed before the command");
        }
        let reader = std::io::Cursor::new(seen.split_off(start)).chain(reader);
        match AgentClient::start(reader, writer).await {
            Ok(Startup::Agent(client, _)) => Ok(Launch::Agent(client)),
            Ok(Startup::NotAgent(text)) => Ok(Launch::NotAgent(text)),
            Err(AgentError::Closed | AgentError::Io(_)) if !connection.is_closed() => {
                Ok(Launch::NotAgent(Vec::new()))
            }
            Err(error @ (AgentError::Closed | AgentError::Io(_))) => Err(Error::connect(format!(
                "{label}: starting the xfer agent: {error}"
            ))),
            Err(error) => Ok(Launch::Refused(format!(
                "the xfer agent on the host: {error}"
            ))),
        }
    };
    match tokio::time::timeout(START_TIMEOUT, work).await {
        Ok(result) => result,
        Err(_) if !connection.is_closed() => Ok(Launch::Failed(format!(
            "the xfer agent did not answer within {} s",
            START_TIMEOUT.as_secs()
        ))),
        Err(_) => Err(Error::connect(format!(
            "{label}: the xfer agent did not answer within {} s",
            START_TIMEOUT.as_secs()
        ))),
    }
}

/// What the start script printed when it did not find a usable agent.
struct NoAgent {
    platform: Option<Platform>,
}

fn parse_no_agent(text: &[u8]) -> Option<NoAgent> {
    let text = String::from_utf8_lossy(text);
    let mut lines = text.lines();
    if lines.next()? != "XFER-NO-AGENT" {
        return None;
    }
    let os = lines.next().unwrap_or("").trim().to_string();
    let machine = lines.next().unwrap_or("").trim().to_string();
    Some(NoAgent {
        platform: (!os.is_empty() && !machine.is_empty())
            .then(|| Platform::from_uname(&os, &machine)),
    })
}

/// The host's platform from its `uname -s` and `uname -m`, None when it has no uname or runs
/// no commands.
async fn probe(runner: &mut Runner<'_>) -> Result<Option<Platform>> {
    let limits = ExecLimits {
        max_output: 4096,
        timeout: START_TIMEOUT,
    };
    let output = runner.run(PROBE, b"", limits).await?;
    if !output.success() {
        return Ok(None);
    }
    let text = output.stdout_text();
    let mut lines = text.lines().map(str::trim);
    match (lines.next(), lines.next()) {
        (Some(os), Some(machine)) if !os.is_empty() && !machine.is_empty() => {
            Ok(Some(Platform::from_uname(os, machine)))
        }
        _ => Ok(None),
    }
}

/// Whether the agent that answered runs one of the catalog's executables.
fn is_ours(client: &AgentClient, catalog: &Catalog) -> bool {
    catalog.holds(&client.hello().build.executable_blake3)
}

/// Whether the agent that answered runs exactly `agent`'s executable.
fn is_the(client: &AgentClient, agent: &Agent) -> bool {
    client.hello().build.executable_blake3 == agent.blake3
}

/// An agent's bytes, read once for the uploads running at the same time (a fleet command
/// uploads to many hosts at once) and let go when the last of them ends.
fn agent_bytes(agent: &Agent) -> std::result::Result<Arc<Vec<u8>>, String> {
    type Shared = Vec<(std::path::PathBuf, std::sync::Weak<Vec<u8>>)>;
    static SHARED: std::sync::Mutex<Shared> = std::sync::Mutex::new(Vec::new());
    let mut shared = SHARED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    shared.retain(|(_, bytes)| bytes.strong_count() > 0);
    if let Some(bytes) = shared
        .iter()
        .find(|(path, _)| *path == agent.path)
        .and_then(|(_, bytes)| bytes.upgrade())
    {
        return Ok(bytes);
    }
    let catalog = catalog()?;
    let bytes = Arc::new(catalog.read(agent)?);
    shared.push((agent.path.clone(), Arc::downgrade(&bytes)));
    Ok(bytes)
}

async fn upload(runner: &mut Runner<'_>, connection: &Connection, agent: &Agent) -> Result<()> {
    let executable = agent_bytes(agent).map_err(|reason| Error::remote(reason).transient(false))?;
    tracing::info!(label = %connection.label(), bytes = executable.len(), platform = %agent.platform, "uploading the xfer agent");
    let timeout =
        UPLOAD_TIMEOUT + Duration::from_secs((executable.len() / UPLOAD_RATE_FLOOR) as u64);
    // Places whose disk filled up while the executable streamed in: tried no more.
    let mut full = Vec::new();
    let mut first = 1;
    loop {
        let header = format!(
            "{}\n{}\n{first}\n{}\n",
            agent.name,
            random_nonce(),
            expected_sums(&executable)
        )
        .into_bytes();
        let output = runner
            .run_parts(
                UPLOAD,
                &[&header, &executable],
                ExecLimits {
                    max_output: 4096,
                    timeout,
                },
            )
            .await
            .map_err(|error| {
                // A slow or stalled upload over a live connection: SFTP it is (the caller falls
                // back on a permanent error), rather than a retry that waits as long again.
                if connection.is_closed() {
                    error
                } else {
                    Error::remote(format!(
                        "uploading the xfer agent did not finish within {} s",
                        timeout.as_secs()
                    ))
                    .transient(false)
                }
            })?;
        let answer = output.stdout_text();
        let answer = answer.trim();
        match output.status {
            Some(0) if output.success() => {
                tracing::debug!(label = %connection.label(), "{}", crate::terminal::printable(answer));
                return Ok(());
            }
            Some(CHANGED) => {
                return Err(Error::connect(format!(
                    "{}: the xfer agent's executable arrived changed on the host",
                    connection.label()
                )));
            }
            Some(WONT_START) => {
                // `start MESSAGE`: the system's own words, the loader's as a rule.
                let said = answer.strip_prefix("start ").unwrap_or(answer);
                let said = crate::terminal::printable_cut(said, 240);
                let libc = if said.contains("GLIBC_") {
                    "; the host's C library is older than this build of xfer needs: a release build (scripts/release.sh) needs glibc 2.17 or newer"
                } else {
                    ""
                };
                return Err(Error::remote(format!(
                    "the xfer agent for {} does not start on the host: {said}{libc}",
                    agent.platform
                ))
                .transient(false));
            }
            Some(FULL) => {
                // `full N REASONS`: the place numbered N ran out of room.
                let mut words = answer.splitn(3, ' ');
                let place = words.nth(1).and_then(|word| word.parse::<u32>().ok());
                if let Some(place) = place.filter(|place| (first..4).contains(place)) {
                    full.push(format!(
                        "cache {place}: writing failed (full or over quota)"
                    ));
                    first = place + 1;
                    continue;
                }
            }
            _ => {}
        }
        let mut reasons = full;
        if !answer.is_empty() {
            reasons.push(crate::terminal::printable(answer));
        } else if !output.started {
            reasons.push("the login did not run the upload script".into());
        }
        return Err(Error::remote(format!(
            "no place on the host can hold and run the xfer agent: {}",
            reasons.join("; ")
        ))
        .with_hint("free space in ~/.cache, or make ~, ~/.cache and ~/.cache/xfer yours and not writable by others (chmod go-w)")
        .transient(false));
    }
}

/// 128 random bits in hex: a temporary name on the remote that no one can create first.
pub fn random_nonce() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_parse() {
        for script in [START_CACHED, START_PATH, UPLOAD, INSPECT, PROBE] {
            exec::assert_parses(script);
        }
    }

    #[test]
    fn no_agent_answers() {
        let answer = parse_no_agent(b"XFER-NO-AGENT\nLinux\nx86_64\n").unwrap();
        assert_eq!(
            answer.platform,
            Some(Platform::from_uname("Linux", "x86_64"))
        );
        assert_eq!(
            parse_no_agent(b"XFER-NO-AGENT\n\n\n").unwrap().platform,
            None
        );
        assert!(parse_no_agent(b"").is_none());
        assert!(parse_no_agent(b"hello\n").is_none());
    }

    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    /// A stand-in for the executable: it greets like an agent.
    const FAKE_AGENT: &[u8] = b"#!/bin/sh\necho XFERAGT\n";

    /// Runs a deploy script here as the remote would, with HOME and TMPDIR set and stdin given.
    fn run_here(script: &str, home: &Path, tmp: &Path, stdin: &[u8]) -> (i32, String) {
        use std::io::Write;
        let mut child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .env("HOME", home)
            .env("TMPDIR", tmp)
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let output = child.wait_with_output().unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    }

    fn private_directory(path: &Path) {
        std::fs::create_dir_all(path).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
    }

    /// A name of its own for each test's agent: /dev/shm, the last place, is the machine's.
    fn test_name() -> String {
        format!("agent-test-{}", random_nonce())
    }

    fn upload_input(name: &str, first: u32) -> Vec<u8> {
        upload_input_of(name, first, FAKE_AGENT)
    }

    fn upload_input_of(name: &str, first: u32, executable: &[u8]) -> Vec<u8> {
        let mut input = format!(
            "{name}\n{}\n{first}\n{}\n",
            random_nonce(),
            expected_sums(executable)
        )
        .into_bytes();
        input.extend_from_slice(executable);
        input
    }

    /// The start script's table naming `name` for this machine's platform, as the client sends
    /// it.
    fn start_input(name: &str) -> Vec<u8> {
        let mut table = String::new();
        for (system, machine) in Platform::this().uname_spellings() {
            table.push_str(&format!("{system} {machine} {name}\n"));
        }
        table.push('\n');
        table.into_bytes()
    }

    #[test]
    fn the_start_script_runs_the_agent_for_the_hosts_platform_only() {
        let work = tempfile::tempdir().unwrap();
        let (home, tmp) = (work.path().join("home"), work.path().join("tmp"));
        private_directory(&home);
        private_directory(&tmp);
        // Agents of two platforms in a shared home (an upload removes older agents of its own
        // platform only): the other platform's is listed first.
        let ours = format!("agent-test-ours-{}", random_nonce());
        let other = format!("agent-test-other-{}", random_nonce());
        for (name, agent) in [
            (&ours, FAKE_AGENT),
            (&other, b"#!/bin/sh\necho XFERAGT-OTHER\n"),
        ] {
            let (status, output) = run_here(UPLOAD, &home, &tmp, &upload_input_of(name, 1, agent));
            assert_eq!(status, 0, "{output}");
        }
        let mut table = format!("Linux riscv64 {other}\nDarwin arm64 {other}\n").into_bytes();
        table.extend_from_slice(&start_input(&ours));
        let (status, output) = run_here(START_CACHED, &home, &tmp, &table);
        assert_eq!((status, output.as_str()), (0, "XFERAGT\n"));

        // Only the other platform listed: nothing runs, and the host's platform is given.
        let table = format!("Linux riscv64 {other}\n\n");
        let (status, output) = run_here(START_CACHED, &home, &tmp, table.as_bytes());
        assert_eq!(status, 0);
        let platform = parse_no_agent(output.as_bytes()).unwrap().platform;
        assert_eq!(platform, Some(Platform::this()), "{output}");
    }

    #[test]
    fn an_agent_the_hosts_c_library_cannot_load_is_reported_in_the_loaders_words() {
        let work = tempfile::tempdir().unwrap();
        let (home, tmp) = (work.path().join("home"), work.path().join("tmp"));
        private_directory(&home);
        private_directory(&tmp);
        // What the dynamic loader prints for a binary built against a newer glibc.
        let agent: &[u8] = b"#!/bin/sh\necho \"$0: /lib64/libc.so.6: version \\`GLIBC_2.34' not found (required by $0)\" >&2\nexit 1\n";
        let name = test_name();
        let (status, output) = run_here(UPLOAD, &home, &tmp, &upload_input_of(&name, 1, agent));
        assert_eq!(status, 95, "{output}");
        assert!(output.starts_with("start "), "{output}");
        assert!(output.contains("`GLIBC_2.34' not found"), "{output}");
        // Nothing is left behind, and no other place was tried.
        let cache = home.join(".cache/xfer");
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    }

    #[test]
    fn an_executable_that_arrived_changed_never_runs_and_is_removed() {
        let work = tempfile::tempdir().unwrap();
        let (home, tmp) = (work.path().join("home"), work.path().join("tmp"));
        private_directory(&home);
        private_directory(&tmp);
        let name = test_name();
        let mut input = upload_input(&name, 1);
        // One byte of the executable changed on the way; it would print a different greeting.
        let last = input.len() - 2;
        input[last] = b'Z';
        let (status, output) = run_here(UPLOAD, &home, &tmp, &input);
        assert_eq!(
            (status, output.trim()),
            (94, "the executable arrived changed")
        );
        let cache = home.join(".cache/xfer");
        assert_eq!(
            std::fs::read_dir(&cache).unwrap().count(),
            0,
            "something was left"
        );
    }

    #[test]
    fn without_sha256sum_the_posix_checksum_decides() {
        let work = tempfile::tempdir().unwrap();
        let (home, tmp) = (work.path().join("home"), work.path().join("tmp"));
        private_directory(&home);
        private_directory(&tmp);
        // A host whose sha256sum is missing: a PATH with the rest of the tools only.
        let tools = work.path().join("bin");
        std::fs::create_dir_all(&tools).unwrap();
        for tool in [
            "cat", "cksum", "stat", "id", "mkdir", "chmod", "mv", "rm", "dd", "sh", "tr", "uname",
        ] {
            let found = ["/usr/bin", "/bin"]
                .iter()
                .map(|dir| Path::new(dir).join(tool))
                .find(|path| path.exists())
                .unwrap();
            std::os::unix::fs::symlink(found, tools.join(tool)).unwrap();
        }
        let script = format!("PATH={}\n{UPLOAD}", tools.display());
        let script: &'static str = Box::leak(script.into_boxed_str());
        let name = test_name();
        let (status, output) = run_here(script, &home, &tmp, &upload_input(&name, 1));
        assert_eq!(status, 0, "{output}");
        let mut input = upload_input(&name, 1);
        let last = input.len() - 2;
        input[last] = b'Z';
        let (status, _) = run_here(script, &home, &tmp, &input);
        assert_eq!(status, 94);
    }

    #[test]
    fn the_upload_goes_to_the_home_cache_when_it_is_private() {
        let work = tempfile::tempdir().unwrap();
        let (home, tmp) = (work.path().join("home"), work.path().join("tmp"));
        private_directory(&home);
        private_directory(&tmp);
        let name = test_name();
        let (status, output) = run_here(UPLOAD, &home, &tmp, &upload_input(&name, 1));
        assert_eq!(status, 0, "{output}");
        let agent = home.join(".cache/xfer").join(&name);
        assert_eq!(std::fs::read(&agent).unwrap(), FAKE_AGENT);
        let mode = std::fs::metadata(home.join(".cache"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        // The start script finds it there (it runs it: the fake prints its greeting).
        let (status, output) = run_here(START_CACHED, &home, &tmp, &start_input(&name));
        assert_eq!((status, output.as_str()), (0, "XFERAGT\n"));
    }

    #[test]
    fn a_home_cache_others_can_change_is_passed_over_for_a_private_temporary_one() {
        let work = tempfile::tempdir().unwrap();
        let (home, tmp) = (work.path().join("home"), work.path().join("tmp"));
        private_directory(&home);
        private_directory(&tmp);
        std::fs::create_dir_all(home.join(".cache")).unwrap();
        std::fs::set_permissions(home.join(".cache"), std::fs::Permissions::from_mode(0o775))
            .unwrap();
        // A copy planted in the unsafe cache is never run.
        std::fs::create_dir_all(home.join(".cache/xfer")).unwrap();
        let name = test_name();
        let planted = home.join(".cache/xfer").join(&name);
        std::fs::write(&planted, b"#!/bin/sh\necho PLANTED\n").unwrap();
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o700)).unwrap();
        let start = start_input(&name);
        let (status, output) = run_here(START_CACHED, &home, &tmp, &start);
        assert_eq!(status, 0);
        assert!(output.starts_with("XFER-NO-AGENT\n"), "{output}");

        let (status, output) = run_here(UPLOAD, &home, &tmp, &upload_input(&name, 1));
        assert_eq!(status, 0, "{output}");
        let uid = nix::unistd::geteuid();
        let cache = tmp.join(format!("xfer-agent-{uid}"));
        assert_eq!(output.trim(), format!("ok {}", cache.display()));
        assert_eq!(std::fs::read(cache.join(&name)).unwrap(), FAKE_AGENT);
        let (_, output) = run_here(START_CACHED, &home, &tmp, &start);
        assert_eq!(output, "XFERAGT\n");
    }

    #[test]
    fn inspecting_finds_the_cached_copy_or_the_place_an_upload_would_use_changing_nothing() {
        let work = tempfile::tempdir().unwrap();
        let (home, tmp) = (work.path().join("home"), work.path().join("tmp"));
        private_directory(&home);
        private_directory(&tmp);
        let name = test_name();
        let line = format!("{name}\n");
        let (status, output) = run_here(INSPECT, &home, &tmp, line.as_bytes());
        let cache = home.join(".cache/xfer");
        assert_eq!(
            (status, output.trim()),
            (0, format!("upload {}", cache.display()).as_str())
        );
        assert!(!home.join(".cache").exists(), "inspecting made a directory");
        let (status, output) = run_here(UPLOAD, &home, &tmp, &upload_input(&name, 1));
        assert_eq!(status, 0, "{output}");
        let (_, output) = run_here(INSPECT, &home, &tmp, line.as_bytes());
        assert_eq!(output.trim(), format!("cached {}", cache.display()));
    }

    #[test]
    fn a_symlinked_cache_is_never_followed() {
        let work = tempfile::tempdir().unwrap();
        let (home, tmp) = (work.path().join("home"), work.path().join("tmp"));
        private_directory(&home);
        private_directory(&tmp);
        let elsewhere = work.path().join("elsewhere");
        private_directory(&elsewhere);
        std::fs::create_dir_all(home.join(".cache")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, home.join(".cache/xfer")).unwrap();
        let (status, output) = run_here(UPLOAD, &home, &tmp, &upload_input(&test_name(), 1));
        assert_eq!(status, 0, "{output}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn with_no_usable_place_every_reason_is_given() {
        let work = tempfile::tempdir().unwrap();
        let (home, tmp) = (work.path().join("home"), work.path().join("tmp"));
        private_directory(&home);
        private_directory(&tmp);
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o777)).unwrap();
        // From the third place on: the temporary directory, and /dev/shm.
        let name = test_name();
        let (status, output) = run_here(UPLOAD, &home, &tmp, &upload_input(&name, 1));
        let shared = format!("/dev/shm/xfer-agent-{}", nix::unistd::geteuid());
        if status == 0 {
            // This machine's /dev/shm (root's, sticky) is the last place, and took it.
            assert_eq!(output.trim(), format!("ok {shared}"));
            std::fs::remove_file(format!("{shared}/{name}")).unwrap();
        } else {
            assert_eq!(status, 93, "{output}");
            assert!(output.contains(&shared), "{output}");
        }
        assert!(!home.join(".cache").exists());
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    }
}
