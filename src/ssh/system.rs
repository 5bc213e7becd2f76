//! The local OpenSSH client as the transport (`--ssh-command ssh`, `-e ssh`).
//!
//! Where the native client cannot log in (Kerberos, a FIDO key that must be touched, PKCS#11,
//! `Match exec`, a site's own ssh wrapper), the user's `ssh` can: every channel a run opens is
//! then an `ssh` process, the agent over `ssh HOST 'exec ...'`, SFTP over `ssh -s HOST sftp`, a
//! shell-only endpoint over `ssh -tt HOST`, with the user's config and the command line's `-F`,
//! `-p`, `-i`, `-J` and `-o` passed through. ssh checks the host key and authenticates, as it
//! would for `ssh HOST`.
//!
//! One login per run: the first connection to a host starts a master (`ssh -M -N`) and every
//! channel after it goes through that master's socket, so a second factor is asked for once,
//! not once per channel. When the user's config already names a master (`ControlMaster` and
//! `ControlPath`), that one is used, or started the way the config says (with its
//! `ControlPersist`, a later run asks nothing); otherwise xfer runs its own in a private
//! directory for the run. The price is that the run's streams share one TCP connection: a drop
//! takes all of them, and the retry logs in again.
//!
//! [`SystemChannel`] makes a process look like an SSH channel to the code above: requests
//! queue their answers, the process's stdout and stderr arrive as data and extended data, its
//! exit as an exit status. When ssh itself fails (its exit status 255 and one of its own
//! messages on stderr) no exit status is given, as on a connection that dropped, and the
//! message is kept for the error.

use crate::error::{Error, ErrorKind, Result};
use crate::ssh::config::{HostConfig, StrictHostKeyChecking};
use bytes::Bytes;
use russh::ChannelMsg;
use std::collections::VecDeque;
use std::fmt;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Notify, mpsc};

/// How long `ssh -G` may take: it reads files and may run `Match exec` commands.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a master may take to log in: a person may be typing a code or touching a key, so
/// this is the time a person needs, not a machine.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(300);
/// How often a starting master's socket is asked whether it is up.
const MASTER_POLL: Duration = Duration::from_millis(50);
/// What is kept of an ssh process's stderr for messages.
const STDERR_LIMIT: usize = 16 * 1024;
/// The largest piece of stdout handed on at once.
const READ_SIZE: usize = 64 * 1024;
/// Pieces of output waiting for the reader: a bound on what a slow reader makes xfer hold.
const QUEUED_PIECES: usize = 32;

/// What a config may ask for `ssh HOST` that would break or burden a transfer's channels: a
/// command of its own instead of xfer's (`RemoteCommand`, which ssh refuses beside a command),
/// forwardings (a `LocalForward` whose port is taken ends the master under
/// `ExitOnForwardFailure`), a local command after login, X11. After the command line's own
/// options, so a `-o` given to xfer still wins.
const WITHOUT_EXTRAS: &[&str] = &[
    "-o",
    "RemoteCommand=none",
    "-o",
    "ClearAllForwardings=yes",
    "-o",
    "PermitLocalCommand=no",
    "-x",
];

/// The command that runs ssh, as the user gave it (`--ssh-command`, `XFER_SSH_COMMAND`).
#[derive(Clone, PartialEq, Eq)]
pub struct SystemSsh {
    words: Vec<String>,
}

impl fmt::Debug for SystemSsh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SystemSsh({})", self.words.join(" "))
    }
}

impl SystemSsh {
    /// Splits `command` as a POSIX shell would split words (quotes kept together), without
    /// running a shell: `ssh -o 'ProxyCommand foo %h'` is two options and a program.
    pub fn parse(command: &str) -> Result<SystemSsh> {
        let words = shlex::split(command)
            .ok_or_else(|| Error::usage(format!("--ssh-command {command:?}: unbalanced quotes")))?;
        if words.is_empty() {
            return Err(Error::usage("--ssh-command is empty")
                .with_hint("name the ssh program, e.g. --ssh-command ssh"));
        }
        Ok(SystemSsh { words })
    }

    /// The command as words, for `doctor` and messages.
    pub fn describe(&self) -> String {
        self.words.join(" ")
    }

    fn program(&self) -> &str {
        &self.words[0]
    }
}

/// How one host is reached with the system ssh: the command, the arguments, the destination.
#[derive(Debug, Clone)]
pub struct Route {
    pub ssh: SystemSsh,
    pub arguments: Vec<String>,
    /// `[user@]host` as given.
    pub destination: String,
    /// Environment variables ssh must not inherit (a secret's variable: ssh's `SendEnv` could
    /// otherwise forward it).
    pub scrubbed: Vec<String>,
}

impl Route {
    fn command(&self, extra: &[&str]) -> Command {
        let mut command = Command::new(self.ssh.program());
        command
            .args(&self.ssh.words[1..])
            .args(&self.arguments)
            .args(WITHOUT_EXTRAS)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for name in &self.scrubbed {
            command.env_remove(name);
        }
        command
    }

    fn spawn_error(&self, error: std::io::Error) -> Error {
        Error::config(format!(
            "cannot run the ssh command {:?}: {error}",
            self.ssh.program()
        ))
        .with_hint("install the OpenSSH client (on Debian and Ubuntu: openssh-client) or name it with --ssh-command")
        .transient(false)
    }

    /// What `ssh -G` prints for the destination: every setting, resolved. Blocks for as long
    /// as ssh reads its files (and runs `Match exec` commands), at most `RESOLVE_TIMEOUT`.
    pub fn dump(&self) -> Result<String> {
        let mut command = std::process::Command::new(self.ssh.program());
        command
            .args(&self.ssh.words[1..])
            .args(&self.arguments)
            .args(["-G", "--", &self.destination])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for name in &self.scrubbed {
            command.env_remove(name);
        }
        let child = command.spawn().map_err(|error| self.spawn_error(error))?;
        let output = wait_bounded(child, RESOLVE_TIMEOUT).ok_or_else(|| {
            Error::config(format!(
                "{}: `ssh -G` did not finish within {} s",
                self.destination,
                RESOLVE_TIMEOUT.as_secs()
            ))
            .with_hint("a `Match exec` command in your ssh_config may hang")
        })?;
        if !output.status.success() {
            return Err(Error::config(format!(
                "{}: ssh cannot read its configuration: {}",
                self.destination,
                last_lines(&output.stderr)
            ))
            .with_hint("run `ssh -G HOST` to see what ssh says"));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The host part of the destination, as given.
    pub fn host(&self) -> &str {
        match self.destination.rsplit_once('@') {
            Some((_, host)) => host,
            None => &self.destination,
        }
    }
}

/// Runs `child` to its end within `limit` (its output read meanwhile, so a full pipe cannot
/// stall it), killing it after.
fn wait_bounded(child: std::process::Child, limit: Duration) -> Option<std::process::Output> {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(limit) {
        Ok(output) => output.ok(),
        Err(_) => {
            // Not reaped yet (the thread still waits on it), so the pid is still this child's.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            None
        }
    }
}

/// A [`HostConfig`] from the lines `ssh -G` prints (`keyword value`, keywords in lower case).
/// Only what xfer uses of a host reached through ssh is read: names and port for messages and
/// records, known_hosts files for `forget-host`, BatchMode and the master settings.
pub fn host_config_from_dump(
    dump: &str,
    original_host: &str,
    home: &Path,
    command_line: Vec<String>,
) -> HostConfig {
    let mut config = HostConfig {
        original_host: original_host.to_string(),
        hostname: original_host.to_string(),
        port: 22,
        user: String::new(),
        identity_files: Vec::new(),
        identity_files_are_defaults: true,
        identities_only: false,
        certificate_files: Vec::new(),
        proxy_jump: Vec::new(),
        proxy_command: None,
        server_alive_interval: 0,
        server_alive_count_max: 3,
        connect_timeout: None,
        user_known_hosts_files: Vec::new(),
        global_known_hosts_files: Vec::new(),
        strict_host_key_checking: StrictHostKeyChecking::Ask,
        batch_mode: false,
        password_authentication: true,
        keyboard_interactive_authentication: true,
        preferred_authentications: None,
        number_of_password_prompts: 3,
        identity_agent: None,
        hash_known_hosts: false,
        tcp_keepalive: true,
        host_key_alias: None,
        command_line,
    };
    let expand = |path: &str| -> PathBuf {
        match path.strip_prefix("~/") {
            Some(rest) => home.join(rest),
            None => PathBuf::from(path),
        }
    };
    for line in dump.lines() {
        let Some((keyword, value)) = line.split_once(' ') else {
            continue;
        };
        let value = value.trim();
        let yes = value == "yes" || value == "true";
        match keyword {
            "hostname" => config.hostname = value.to_string(),
            "port" => config.port = value.parse().unwrap_or(22),
            "user" => config.user = value.to_string(),
            "identityfile" => config.identity_files.push(expand(value)),
            "identitiesonly" => config.identities_only = yes,
            "serveraliveinterval" => config.server_alive_interval = value.parse().unwrap_or(0),
            "serveralivecountmax" => config.server_alive_count_max = value.parse().unwrap_or(3),
            "connecttimeout" => config.connect_timeout = value.parse().ok(),
            "userknownhostsfile" => {
                config.user_known_hosts_files = value.split_whitespace().map(expand).collect()
            }
            "globalknownhostsfile" => {
                config.global_known_hosts_files = value.split_whitespace().map(expand).collect()
            }
            "stricthostkeychecking" => {
                config.strict_host_key_checking = match value {
                    "true" | "yes" => StrictHostKeyChecking::Yes,
                    "accept-new" => StrictHostKeyChecking::AcceptNew,
                    "false" | "no" | "off" => StrictHostKeyChecking::No,
                    _ => StrictHostKeyChecking::Ask,
                }
            }
            "batchmode" => config.batch_mode = yes,
            "passwordauthentication" => config.password_authentication = yes,
            "kbdinteractiveauthentication" => config.keyboard_interactive_authentication = yes,
            "preferredauthentications" => {
                config.preferred_authentications = Some(value.to_string())
            }
            "numberofpasswordprompts" => {
                config.number_of_password_prompts = value.parse().unwrap_or(3)
            }
            "hashknownhosts" => config.hash_known_hosts = yes,
            "tcpkeepalive" => config.tcp_keepalive = yes,
            "hostkeyalias" => config.host_key_alias = Some(value.to_lowercase()),
            // For `doctor` to show the way: ssh, not xfer, follows them.
            "proxyjump" if value != "none" => {
                config.proxy_jump = crate::ssh::config::parse_jump_hosts(value).unwrap_or_default()
            }
            "proxycommand" if value != "none" => config.proxy_command = Some(value.to_string()),
            _ => {}
        }
    }
    config
}

/// Whether the dump names a master the user set up (`ControlMaster` other than no, and a
/// `ControlPath`).
pub fn names_master(dump: &str) -> bool {
    let value = |keyword: &str| {
        dump.lines()
            .find_map(|line| line.strip_prefix(keyword)?.strip_prefix(' '))
            .map(str::trim)
    };
    let master = value("controlmaster").unwrap_or("false");
    let path = value("controlpath").unwrap_or("none");
    master != "false" && master != "no" && path != "none"
}

/// The master connection every channel to a host goes through.
enum Master {
    /// xfer's own, for this run: its socket in a private directory, the process its child.
    Own {
        socket: PathBuf,
        directory: PathBuf,
        process: Mutex<Child>,
    },
    /// The user's (their ControlPath); the process, when xfer started it and it did not go to
    /// the background (no ControlPersist), is kept so it ends with the run.
    Theirs { process: Mutex<Option<Child>> },
}

/// One host reached through the system ssh, with its master up.
pub struct SystemHost {
    route: Route,
    master: Master,
    /// A channel found the master gone (ssh could not reach it, or the link under it dropped):
    /// the run's next connection logs in again rather than keep trying this one.
    lost: Arc<AtomicBool>,
}

impl fmt::Debug for SystemHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemHost")
            .field("destination", &self.route.destination)
            .finish()
    }
}

impl Drop for SystemHost {
    fn drop(&mut self) {
        if let Master::Own { directory, .. } = &self.master {
            // The process is killed as its handle drops (kill_on_drop); what it leaves goes too.
            remove_directory(directory);
        }
    }
}

impl SystemHost {
    /// Logs in to the host through ssh: finds or starts its master, and waits for it to be up.
    /// ssh asks what it must ask (a password, a code, a touch) on the terminal or through
    /// `SSH_ASKPASS`; its refusal comes back as an error of the kind it is. `names_master`:
    /// whether the user's config names a master for the host ([`names_master`]).
    pub async fn log_in(route: Route, names_master: bool, label: &str) -> Result<SystemHost> {
        if names_master {
            if check_master(&route, &[]).await {
                tracing::debug!(%label, "using the running ssh master the config names");
                return Ok(SystemHost {
                    route,
                    master: Master::Theirs {
                        process: Mutex::new(None),
                    },
                    lost: Arc::default(),
                });
            }
            let child = start_master(&route, &["-o", "ControlMaster=yes"], label)?;
            let child = wait_for_master(&route, &[], child, label).await?;
            return Ok(SystemHost {
                route,
                master: Master::Theirs {
                    process: Mutex::new(child),
                },
                lost: Arc::default(),
            });
        }
        let directory = private_directory()?;
        let socket = directory.join(SOCKET_NAME);
        let path_option = format!("ControlPath={}", socket.display());
        let child = start_master(
            &route,
            &[
                "-o",
                "ControlMaster=yes",
                "-o",
                &path_option,
                "-o",
                "ControlPersist=no",
            ],
            label,
        );
        let child = match child {
            Ok(child) => child,
            Err(error) => {
                remove_directory(&directory);
                return Err(error);
            }
        };
        let host_options = ["-o", "ControlMaster=no", "-o", &path_option];
        match wait_for_master(&route, &host_options, child, label).await {
            Ok(Some(child)) => Ok(SystemHost {
                route,
                master: Master::Own {
                    socket,
                    directory,
                    process: Mutex::new(child),
                },
                lost: Arc::default(),
            }),
            Ok(None) => {
                remove_directory(&directory);
                Err(Error::connect(format!(
                    "{label}: the ssh master went to the background, which xfer's own master must not do"
                ))
                .with_hint("remove ControlPersist from the ssh command's options"))
            }
            Err(error) => {
                remove_directory(&directory);
                Err(error)
            }
        }
    }

    /// Whether the master is gone: the run's channels to the host can no longer open.
    pub fn is_closed(&self) -> bool {
        if self.lost.load(Ordering::Relaxed) {
            return true;
        }
        let exited = |child: &mut Child| !matches!(child.try_wait(), Ok(None));
        match &self.master {
            Master::Own { process, .. } => {
                exited(&mut process.lock().unwrap_or_else(PoisonError::into_inner))
            }
            // A master of the user's may have been started by another program and outlive
            // this run; its channels say when it is gone (`lost`).
            Master::Theirs { process } => process
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_mut()
                .is_some_and(exited),
        }
    }

    /// The options that send a channel through the master. A channel never becomes a master
    /// itself and never asks (BatchMode): with the master gone, ssh would otherwise log in on
    /// its own and ask again in the middle of the run, once per channel; failing instead marks
    /// the login lost, and the run's next connection logs in once.
    fn channel_options(&self) -> Vec<String> {
        let mut options: Vec<String> = ["-o", "ControlMaster=no", "-o", "BatchMode=yes"]
            .map(String::from)
            .to_vec();
        if let Master::Own { socket, .. } = &self.master {
            options.push("-o".into());
            options.push(format!("ControlPath={}", socket.display()));
        }
        options
    }

    /// A channel to the host; nothing runs until a request starts it.
    pub fn channel(self: &Arc<Self>) -> SystemChannel {
        SystemChannel {
            host: self.clone(),
            pending: VecDeque::new(),
            terminal: None,
            running: None,
            ended: false,
        }
    }

    /// The words of `ssh ... DESTINATION REMOTE...` for a channel of this host.
    fn channel_command(&self, flags: &[&str], remote: &[&str]) -> Command {
        let options = self.channel_options();
        let mut extra: Vec<&str> = options.iter().map(String::as_str).collect();
        extra.extend_from_slice(flags);
        extra.push("--");
        extra.push(&self.route.destination);
        extra.extend_from_slice(remote);
        self.route.command(&extra)
    }
}

/// The directories of xfer's masters this process made and has not removed yet: a run that
/// ends with connections still held (a failure, Ctrl-C) removes them on its way out
/// ([`clean_up`]).
static DIRECTORIES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// The longest directory a master's socket goes in: a socket path holds about 100 bytes, and
/// the socket's name and ssh's temporary suffix while it binds take some.
const MAX_DIRECTORY_LENGTH: usize = 64;

/// A new directory only this user can enter, for the master's socket: in `$TMPDIR` when its
/// path is short enough for a socket, else in `/tmp`.
fn private_directory() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = crate::env::var_path(crate::env::TMPDIR)
        .filter(|base| base.is_absolute() && base.as_os_str().len() <= MAX_DIRECTORY_LENGTH - 26)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let failed = |error: std::io::Error| {
        Error::new(
            ErrorKind::LocalIo,
            format!(
                "cannot create a directory for the ssh master's socket in {}: {error}",
                base.display()
            ),
        )
        .with_hint("set TMPDIR to a short directory you can write")
    };
    for _ in 0..16 {
        let directory = base.join(format!("xfer-ssh-{:016x}", rand::random::<u64>()));
        match std::fs::DirBuilder::new().mode(0o700).create(&directory) {
            Ok(()) => {
                DIRECTORIES
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(directory.clone());
                return Ok(directory);
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(failed(error)),
        }
    }
    Err(failed(std::io::ErrorKind::AlreadyExists.into()))
}

/// Removes a master's directory and what the master left in it.
fn remove_directory(directory: &Path) {
    let _ = std::fs::remove_file(directory.join(SOCKET_NAME));
    let _ = std::fs::remove_dir(directory);
    DIRECTORIES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|kept| kept != directory);
}

/// Removes the directories of masters still held as the process ends. The masters themselves
/// end with the runtime's threads (see `ends_with_this_process`).
pub fn clean_up() {
    let left = std::mem::take(&mut *DIRECTORIES.lock().unwrap_or_else(PoisonError::into_inner));
    for directory in left {
        remove_directory(&directory);
    }
}

/// The master's socket, in its private directory.
const SOCKET_NAME: &str = "master";

/// Starts `ssh -N` as a master with `options`.
fn start_master(route: &Route, options: &[&str], label: &str) -> Result<Child> {
    let mut extra: Vec<&str> = options.to_vec();
    extra.extend_from_slice(&["-N", "--", &route.destination]);
    let mut command = route.command(&extra);
    ends_with_this_process(&mut command);
    tracing::debug!(%label, "starting an ssh master");
    command.spawn().map_err(|error| route.spawn_error(error))
}

/// On Linux, the master is told to end (SIGTERM) when xfer ends, even killed: otherwise a run
/// killed with SIGKILL would leave a logged-in connection behind. (Started from a runtime
/// thread, which lives as long as the run.) A master the user's ControlPersist sends to the
/// background is a new process that keeps living, as the user asked.
fn ends_with_this_process(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: the closure only makes one async-signal-safe system call.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
    }
    // Other systems (macOS) have no parent-death signal. A run that ends, an error included,
    // still stops the master: its handle kills it as it drops (kill_on_drop, see SystemHost's
    // Drop); only a run killed outright (SIGKILL) leaves it behind.
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// Whether a master answers on the socket `options` name (the config's when empty).
async fn check_master(route: &Route, options: &[&str]) -> bool {
    let mut extra: Vec<&str> = options.to_vec();
    extra.extend_from_slice(&["-O", "check", "--", &route.destination]);
    let mut command = route.command(&extra);
    command.stderr(Stdio::null());
    match command.spawn() {
        Ok(mut child) => matches!(
            tokio::time::timeout(Duration::from_secs(10), child.wait()).await,
            Ok(Ok(status)) if status.success()
        ),
        Err(_) => false,
    }
}

/// Waits until the master answers on its socket, or fails. The process comes back when it is
/// still running as the master; None when it went to the background (ControlPersist).
async fn wait_for_master(
    route: &Route,
    options: &[&str],
    mut child: Child,
    label: &str,
) -> Result<Option<Child>> {
    let mut stderr = child.stderr.take();
    let collected = Arc::new(Mutex::new(Vec::new()));
    if let Some(mut pipe) = stderr.take() {
        let collected = collected.clone();
        tokio::spawn(async move {
            let mut buffer = [0u8; 4096];
            while let Ok(read) = pipe.read(&mut buffer).await {
                if read == 0 {
                    break;
                }
                let mut kept = collected.lock().unwrap_or_else(PoisonError::into_inner);
                append_capped(&mut kept, &buffer[..read]);
            }
        });
    }
    let started = tokio::time::Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            if status.success() && check_master(route, options).await {
                return Ok(None);
            }
            // The stderr reader has the rest of what ssh said once the pipe closes.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let said = collected
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            return Err(login_error(label, &said));
        }
        if check_master(route, options).await {
            let said = collected
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if !said.is_empty() {
                tracing::debug!(%label, ssh = %String::from_utf8_lossy(&said).trim(), "the ssh master said");
            }
            return Ok(Some(child));
        }
        if started.elapsed() > LOGIN_TIMEOUT {
            let _ = child.start_kill();
            return Err(Error::connect(format!(
                "{label}: ssh did not log in within {} s",
                LOGIN_TIMEOUT.as_secs()
            ))
            .with_hint("run `ssh HOST` by hand to see where it stops"));
        }
        tokio::time::sleep(MASTER_POLL).await;
    }
}

/// The error for a login ssh gave up on, of the kind its message tells.
pub fn login_error(label: &str, stderr: &[u8]) -> Error {
    let text = String::from_utf8_lossy(stderr);
    let said = last_lines(stderr);
    let said = if said.is_empty() {
        "ssh ended without a message".to_string()
    } else {
        said
    };
    let has = |needle: &str| text.contains(needle);
    if has("Permission denied") || has("Too many authentication failures") {
        return Error::auth(format!("{label}: ssh could not log in: {said}")).with_hint(
            "run `ssh HOST` to see how it logs in there; xfer uses the same ssh, config and agent",
        );
    }
    if has("Host key verification failed") || has("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        return Error::host_key(format!("{label}: ssh refused the host key: {said}"))
            .with_hint("run `ssh HOST` to see and settle the host key, as ssh says above");
    }
    if has("Could not resolve hostname") {
        return Error::connect(format!("{label}: {said}"))
            .with_hint("check the host name, or the HostName in your ssh_config")
            .transient(false);
    }
    Error::connect(format!("{label}: ssh could not connect: {said}"))
}

/// The last few lines of what ssh printed, made printable, for a message.
fn last_lines(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let start = lines.len().saturating_sub(3);
    crate::terminal::printable(lines[start..].join("; "))
}

fn append_capped(buffer: &mut Vec<u8>, data: &[u8]) {
    let room = STDERR_LIMIT.saturating_sub(buffer.len());
    buffer.extend_from_slice(&data[..data.len().min(room)]);
}

/// Whether an ssh process's end was ssh's own failure rather than the remote command's exit:
/// 255, with one of the messages ssh gives when the connection or the master fails.
fn ssh_failed(code: Option<i32>, stderr: &[u8]) -> bool {
    if code != Some(255) {
        return false;
    }
    let text = String::from_utf8_lossy(stderr);
    [
        "Control socket connect",
        "mux_client",
        "Connection closed by",
        "Connection reset",
        "Connection refused",
        "Connection timed out",
        "Broken pipe",
        "Permission denied",
        "Host key verification failed",
        "Could not resolve hostname",
        "kex_exchange_identification",
        "ssh: connect to host",
        "Timeout, server",
        "client_loop: send disconnect",
        "subsystem request failed",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// A running ssh process seen as a channel.
struct Running {
    stdin: Option<ChildStdin>,
    events: mpsc::Receiver<ChannelMsg>,
    stop: Arc<Notify>,
    failure: Arc<Mutex<Option<String>>>,
}

/// A channel of a [`SystemHost`]: an ssh process once a request starts it.
pub struct SystemChannel {
    host: Arc<SystemHost>,
    /// Answers to requests, given before anything the process says.
    pending: VecDeque<ChannelMsg>,
    /// The terminal type a PTY request asked for: the shell is then started with `-tt`.
    terminal: Option<String>,
    running: Option<Running>,
    ended: bool,
}

impl SystemChannel {
    /// `exec`: runs `command` on the host.
    pub fn exec(&mut self, want_reply: bool, command: &[u8]) -> std::io::Result<()> {
        let command = String::from_utf8_lossy(command).into_owned();
        let process = self.host.channel_command(&["-T"], &[&command]);
        self.start(process, want_reply)
    }

    /// `subsystem`: `ssh -s HOST NAME`.
    pub fn request_subsystem(&mut self, want_reply: bool, name: &str) -> std::io::Result<()> {
        let process = self.host.channel_command(&["-T", "-s"], &[name]);
        self.start(process, want_reply)
    }

    /// `pty-req`: remembered; the shell that follows gets a terminal on the host.
    pub fn request_pty(&mut self, want_reply: bool, term: &str) {
        self.terminal = Some(term.to_string());
        if want_reply {
            self.pending.push_back(ChannelMsg::Success);
        }
    }

    /// `shell`: the login shell, on a terminal when one was asked for.
    pub fn request_shell(&mut self, want_reply: bool) -> std::io::Result<()> {
        let process = match &self.terminal {
            Some(term) => {
                let mut process = self.host.channel_command(&["-tt"], &[]);
                process.env("TERM", term);
                process
            }
            None => self.host.channel_command(&["-T"], &[]),
        };
        self.start(process, want_reply)
    }

    fn start(&mut self, mut process: Command, want_reply: bool) -> std::io::Result<()> {
        if self.running.is_some() || self.ended {
            return Err(std::io::Error::other("this channel already runs a process"));
        }
        process
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = process.spawn()?;
        // Wide pipes: see `widen_pipe`. The process's data runs through them.
        for pipe in [
            child.stdout.as_ref().map(|pipe| pipe.as_fd()),
            child.stdin.as_ref().map(|pipe| pipe.as_fd()),
        ]
        .into_iter()
        .flatten()
        {
            let _ = crate::agent::server::stdio::widen_pipe(pipe);
        }
        let stdin = child.stdin.take();
        let (sender, events) = mpsc::channel(QUEUED_PIECES);
        let stop = Arc::new(Notify::new());
        let failure = Arc::new(Mutex::new(None));
        tokio::spawn(pump(
            child,
            sender,
            stop.clone(),
            failure.clone(),
            self.host.lost.clone(),
            self.host.route.destination.clone(),
        ));
        if want_reply {
            self.pending.push_back(ChannelMsg::Success);
        }
        self.running = Some(Running {
            stdin,
            events,
            stop,
            failure,
        });
        Ok(())
    }

    /// Writes to the process's stdin.
    pub async fn data(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self
            .running
            .as_mut()
            .and_then(|running| running.stdin.as_mut())
        {
            Some(stdin) => stdin.write_all(bytes).await,
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    /// Closes the process's stdin: the remote command reads its end.
    pub async fn eof(&mut self) -> std::io::Result<()> {
        if let Some(running) = self.running.as_mut() {
            running.stdin.take();
        }
        Ok(())
    }

    /// The next thing the channel says; None once it is closed.
    pub async fn wait(&mut self) -> Option<ChannelMsg> {
        if let Some(message) = self.pending.pop_front() {
            return Some(message);
        }
        match self.running.as_mut() {
            Some(running) => running.events.recv().await,
            None => None,
        }
    }

    /// Ends the process (the channel's close).
    pub fn close(&self) {
        if let Some(running) = &self.running {
            running.stop.notify_one();
        }
    }

    /// ssh's own message when it, not the remote command, ended the channel.
    pub fn failure(&self) -> Option<String> {
        self.running.as_ref().and_then(|running| {
            running
                .failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
    }

    /// Splits into the half that reads what the channel says and the half that writes.
    pub fn split(mut self) -> (SystemReader, SystemWriter) {
        let running = self.running.take();
        let (stdin, events, stop, failure) = match running {
            Some(running) => (
                running.stdin,
                Some(running.events),
                Some(running.stop),
                Some(running.failure),
            ),
            None => (None, None, None, None),
        };
        (
            SystemReader {
                pending: std::mem::take(&mut self.pending),
                events,
                stop,
                failure,
            },
            SystemWriter { stdin },
        )
    }

    /// The channel as a byte stream: stdout to read, stdin to write (shutdown is EOF).
    pub fn into_stream(self) -> SystemStream {
        let (reader, writer) = self.split();
        SystemStream {
            reader,
            writer,
            piece: Bytes::new(),
            ended: false,
        }
    }
}

/// Moves a process's output into events until it ends, or until the channel is dropped or
/// closed, when the process is killed: no ssh process outlives its channel.
async fn pump(
    mut child: Child,
    sender: mpsc::Sender<ChannelMsg>,
    stop: Arc<Notify>,
    failure: Arc<Mutex<Option<String>>>,
    lost: Arc<AtomicBool>,
    destination: String,
) {
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let said = Arc::new(Mutex::new(Vec::new()));
    let work = async {
        let out = async {
            if let Some(mut stdout) = stdout {
                loop {
                    let mut buffer = vec![0u8; READ_SIZE];
                    match stdout.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(read) => {
                            buffer.truncate(read);
                            let data = Bytes::from(buffer);
                            if sender.send(ChannelMsg::Data { data }).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
            let _ = sender.send(ChannelMsg::Eof).await;
        };
        let error = async {
            if let Some(mut stderr) = stderr {
                let mut buffer = vec![0u8; 8192];
                loop {
                    match stderr.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(read) => {
                            append_capped(
                                &mut said.lock().unwrap_or_else(PoisonError::into_inner),
                                &buffer[..read],
                            );
                            let data = Bytes::copy_from_slice(&buffer[..read]);
                            let message = ChannelMsg::ExtendedData { data, ext: 1 };
                            if sender.send(message).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        };
        tokio::join!(out, error);
        let status = child.wait().await;
        let code = status.ok().and_then(|status| status.code());
        let said = said.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if ssh_failed(code, &said) {
            tracing::debug!(%destination, ssh = %String::from_utf8_lossy(&said).trim(), "ssh ended the channel");
            // A refused subsystem is the host's answer; anything else, the way there is gone.
            if !String::from_utf8_lossy(&said).contains("subsystem request failed") {
                lost.store(true, Ordering::Relaxed);
            }
            *failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(last_lines(&said));
        } else if let Some(code) = code {
            let _ = sender
                .send(ChannelMsg::ExitStatus {
                    exit_status: code as u32,
                })
                .await;
        }
        let _ = sender.send(ChannelMsg::Close).await;
    };
    tokio::select! {
        () = work => {}
        () = sender.closed() => {}
        () = stop.notified() => {}
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// What a [`SystemChannel`] says, after a split.
pub struct SystemReader {
    pending: VecDeque<ChannelMsg>,
    events: Option<mpsc::Receiver<ChannelMsg>>,
    stop: Option<Arc<Notify>>,
    failure: Option<Arc<Mutex<Option<String>>>>,
}

impl SystemReader {
    pub async fn wait(&mut self) -> Option<ChannelMsg> {
        if let Some(message) = self.pending.pop_front() {
            return Some(message);
        }
        self.events.as_mut()?.recv().await
    }

    /// ssh's own message when it, not the remote command, ended the channel.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .as_ref()?
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for SystemReader {
    fn drop(&mut self) {
        if let Some(stop) = &self.stop {
            stop.notify_one();
        }
    }
}

/// The writing half of a [`SystemChannel`].
pub struct SystemWriter {
    stdin: Option<ChildStdin>,
}

impl SystemWriter {
    pub async fn data(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self.stdin.as_mut() {
            Some(stdin) => stdin.write_all(bytes).await,
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    pub async fn eof(&mut self) -> std::io::Result<()> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.shutdown().await;
        }
        Ok(())
    }
}

/// A [`SystemChannel`] as bytes: reading gives stdout (stderr goes to the log), writing feeds
/// stdin.
pub struct SystemStream {
    reader: SystemReader,
    writer: SystemWriter,
    piece: Bytes,
    ended: bool,
}

impl AsyncRead for SystemStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.piece.is_empty() {
                let take = this.piece.len().min(buffer.remaining());
                buffer.put_slice(&this.piece.split_to(take));
                return Poll::Ready(Ok(()));
            }
            if this.ended {
                return Poll::Ready(Ok(()));
            }
            let message = match this.reader.pending.pop_front() {
                Some(message) => Some(message),
                None => match this.reader.events.as_mut() {
                    Some(events) => match events.poll_recv(context) {
                        Poll::Ready(message) => message,
                        Poll::Pending => return Poll::Pending,
                    },
                    None => None,
                },
            };
            match message {
                Some(ChannelMsg::Data { data }) => this.piece = data,
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    tracing::debug!(stderr = %String::from_utf8_lossy(&data).trim(), "the remote command said");
                }
                Some(ChannelMsg::Eof | ChannelMsg::Close) | None => this.ended = true,
                Some(_) => {}
            }
        }
    }
}

impl AsyncWrite for SystemStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.writer.stdin.as_mut() {
            Some(stdin) => Pin::new(stdin).poll_write(context, bytes),
            None => Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.writer.stdin.as_mut() {
            Some(stdin) => Pin::new(stdin).poll_flush(context),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        let result = match self.writer.stdin.as_mut() {
            Some(stdin) => Pin::new(stdin).poll_shutdown(context),
            None => return Poll::Ready(Ok(())),
        };
        if result.is_ready() {
            self.writer.stdin = None;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_words_split_like_a_shell() {
        let ssh = SystemSsh::parse("ssh -o 'ProxyCommand nc %h %p' -x").unwrap();
        assert_eq!(ssh.words, ["ssh", "-o", "ProxyCommand nc %h %p", "-x"]);
        assert!(SystemSsh::parse("").is_err());
        assert!(SystemSsh::parse("ssh 'unclosed").is_err());
    }

    #[test]
    fn a_dump_gives_the_names_and_files() {
        let dump = "host box\nuser me\nhostname 10.0.0.5\nport 2222\nbatchmode yes\n\
                    userknownhostsfile ~/.ssh/known_hosts ~/.ssh/known_hosts2\n\
                    controlmaster false\ncontrolpath none\n";
        let config = host_config_from_dump(dump, "box", Path::new("/home/me"), Vec::new());
        assert_eq!(config.user, "me");
        assert_eq!(config.hostname, "10.0.0.5");
        assert_eq!(config.port, 2222);
        assert!(config.batch_mode);
        assert_eq!(
            config.user_known_hosts_files,
            [
                PathBuf::from("/home/me/.ssh/known_hosts"),
                PathBuf::from("/home/me/.ssh/known_hosts2")
            ]
        );
        assert!(!names_master(dump));
        assert!(names_master("controlmaster auto\ncontrolpath /tmp/cm-%C\n"));
        assert!(!names_master("controlmaster auto\ncontrolpath none\n"));
    }

    #[test]
    fn login_errors_are_of_the_kind_ssh_says() {
        let auth = login_error(
            "box",
            b"me@box: Permission denied (publickey,keyboard-interactive).\n",
        );
        assert_eq!(auth.kind(), ErrorKind::Auth);
        assert!(auth.message().contains("Permission denied"));
        let key = login_error("box", b"Host key verification failed.\n");
        assert_eq!(key.kind(), ErrorKind::HostKey);
        let down = login_error(
            "box",
            b"ssh: connect to host box port 22: Connection refused\n",
        );
        assert_eq!(down.kind(), ErrorKind::Connect);
        assert!(down.is_transient());
        let name = login_error(
            "box",
            b"ssh: Could not resolve hostname nope: Name or service not known\n",
        );
        assert!(!name.is_transient());
        assert!(
            login_error("box", b"")
                .message()
                .contains("without a message")
        );
    }

    #[test]
    fn only_ssh_failures_hide_the_exit_status() {
        assert!(ssh_failed(
            Some(255),
            b"Control socket connect(/x): Connection refused"
        ));
        assert!(!ssh_failed(Some(255), b"the remote script said so"));
        assert!(!ssh_failed(Some(1), b"Connection closed by 1.2.3.4"));
        assert!(!ssh_failed(None, b""));
    }

    #[test]
    fn messages_are_printable_and_short() {
        let said = last_lines(b"one\ntwo\n\x1b[31mthree\nfour\n");
        assert!(!said.contains('\x1b'));
        assert!(!said.contains("one"));
        assert!(said.contains("four"));
    }
}
