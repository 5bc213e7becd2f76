//! A shell-only SSH relay, in process ([`Relay`]): russh on 127.0.0.1 accepts the fixture's
//! client key and, on a session channel, only a `pty-req` followed by `shell`. It runs a login
//! shell in a real pseudo-terminal and pumps bytes between the channel and the terminal, the way
//! a provider's relay (`ssh POD@ssh.provider.io`) gives an interactive shell and nothing else:
//! exec, subsystems (SFTP), environment, X11, agent and port forwarding are all refused.
//!
//! Shells run as the user running the tests, with a home of the relay's ([`Relay::home`]) and
//! the TERM of the `pty-req`. Its terminal modes are not applied: the terminal starts as the
//! kernel makes it (echo on, canonical input, CR to LF in, LF to CRLF out), as a relay that does
//! not forward them leaves it. The client's EOF is ignored (a terminal cannot be half closed);
//! the session ends when the shell exits (exit status, EOF, close) or when the client goes (the
//! terminal is hung up).
//!
//! The pumps can damage the bytes as some relays do ([`RelayBuilder::strip_eighth_bit`],
//! [`RelayBuilder::translate_newlines`]), count them in each direction, and cut every
//! connection after a number of bytes sent to the client ([`Relay::cut_down_after`]). The relay
//! records every channel request ([`Relay::requests`]), so a test can tell what a client tried.
//!
//! Like the hostile-server tests' `FakeServer`, it runs on its own thread and tokio runtime, so
//! tests stay synchronous and drive real clients against it. Dropping it ends every
//! connection, every shell and whatever the shells left running.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::libc;
use nix::pty::Winsize;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use russh::keys::PrivateKey;
use russh::keys::ssh_key::PublicKey;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelMsg, ChannelWriteHalf, Pty};
use tempfile::TempDir;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use super::sshd::{ClientEnd, client_config_block, known_hosts_line};
use super::{current_user, keygen, public_key_path};

/// How long the relay may take to start listening.
const START_LIMIT: Duration = Duration::from_secs(10);
/// After the shell exits, how long the relay keeps forwarding what is left in the terminal: a
/// process the shell left behind may hold the terminal open for ever.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// After the client goes, how long a hung-up shell has to exit before it is killed.
const HANGUP_LIMIT: Duration = Duration::from_secs(2);
/// How long the relay waits for what it stops: its tasks when it is dropped, a cut
/// connection's session, the processes its shells left running.
const STOP_LIMIT: Duration = Duration::from_secs(2);

/// Options for a [`Relay`]; start one with [`RelayBuilder::start`].
#[derive(Clone, Debug)]
pub struct RelayBuilder {
    shell: PathBuf,
    strip_eighth_bit: bool,
    translate_newlines: bool,
}

impl RelayBuilder {
    /// The login shell sessions get (started as `-NAME`), `/bin/bash` unless set.
    pub fn shell(mut self, path: impl Into<PathBuf>) -> Self {
        self.shell = path.into();
        self
    }

    /// Clears the top bit of every byte, both ways, like a 7-bit relay.
    pub fn strip_eighth_bit(mut self) -> Self {
        self.strip_eighth_bit = true;
        self
    }

    /// Turns LF into CRLF on the way to the client and CR into LF on the way to the shell, like
    /// a relay doing a terminal's newline translation on top of the shell's terminal.
    pub fn translate_newlines(mut self) -> Self {
        self.translate_newlines = true;
        self
    }

    pub fn start(self) -> Relay {
        Relay::launch(self)
    }
}

/// What the relay saw and counted; shared by every connection.
struct Shared {
    settings: RelayBuilder,
    /// The only key the relay accepts.
    client_key: PublicKey,
    home: PathBuf,
    /// Bytes sent to clients, after the relay's changes.
    bytes_down: AtomicU64,
    /// Bytes written to shells' terminals, after the relay's changes.
    bytes_up: AtomicU64,
    shells_started: AtomicU64,
    /// Shells started and not yet waited for.
    running_shells: AtomicU64,
    /// The session of every shell started (its process id: each leads one), for
    /// [`end_leftovers`].
    sessions: Mutex<Vec<i32>>,
    /// Every channel request, as "pty-req xterm", "shell", "exec COMMAND", "subsystem sftp"...
    requests: Mutex<Vec<String>>,
    /// Bytes still allowed down before every connection is cut, when a cut is armed.
    cut_after: Mutex<Option<u64>>,
    /// Bumped by each cut; every connection open at that moment watches it.
    cuts: watch::Sender<u64>,
    /// Bytes still to go down before one byte is changed, when a change is armed.
    damage_after: Mutex<Option<u64>>,
    /// Bytes changed so far.
    damaged: AtomicU64,
}

impl Shared {
    /// Changes one byte of `bytes` if an armed damage falls in them.
    fn damage(&self, bytes: &mut [u8]) {
        let mut damage_after = self.damage_after.lock().unwrap();
        if let Some(left) = *damage_after {
            if (left as usize) < bytes.len() {
                bytes[left as usize] ^= 0x01;
                *damage_after = None;
                self.damaged.fetch_add(1, Ordering::SeqCst);
            } else {
                *damage_after = Some(left - bytes.len() as u64);
            }
        }
    }

    fn note(&self, request: String) {
        self.requests.lock().unwrap().push(request);
    }

    /// How many of `wanted` bytes a session that started after `cuts` cuts may send down:
    /// none once another cut has happened (its connection is being closed), and no more than
    /// an armed cut allows, which fires when they reach its limit.
    fn allow_down(&self, wanted: usize, cuts: u64) -> usize {
        // Under this lock, so that no session slips bytes in between a cut and its count.
        let mut cut_after = self.cut_after.lock().unwrap();
        if *self.cuts.borrow() != cuts {
            return 0;
        }
        let Some(remaining) = *cut_after else {
            return wanted;
        };
        let allowed = wanted.min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let remaining = remaining - allowed as u64;
        if remaining == 0 {
            *cut_after = None;
            self.cuts.send_modify(|cuts| *cuts += 1);
        } else {
            *cut_after = Some(remaining);
        }
        allowed
    }
}

/// A running relay: listening on 127.0.0.1 until dropped, which also ends every shell it
/// started and removes its directory.
pub struct Relay {
    port: u16,
    /// The host key as a known_hosts line takes it: `ssh-ed25519 AAAA...`.
    host_key: String,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
    // Declared last, so that it is removed after the shells are gone.
    dir: TempDir,
}

impl Relay {
    pub fn builder() -> RelayBuilder {
        RelayBuilder {
            shell: PathBuf::from("/bin/bash"),
            strip_eighth_bit: false,
            translate_newlines: false,
        }
    }

    /// A relay with the default settings: `/bin/bash`, bytes passed unchanged.
    pub fn start() -> Relay {
        Relay::builder().start()
    }

    fn launch(settings: RelayBuilder) -> Relay {
        assert!(
            settings.shell.is_file(),
            "{} is missing: the relay's login shell",
            settings.shell.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("xfer-relay-")
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot create a directory for the relay: {error}"));
        let home = dir.path().join("home");
        fs::create_dir(&home)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", home.display()));
        let client_key = keygen(dir.path(), "client_key", "ed25519", None);
        let public_key = fs::read_to_string(public_key_path(&client_key))
            .ok()
            .and_then(|text| PublicKey::from_openssh(text.trim()).ok())
            .expect("ssh-keygen wrote a public key russh reads");

        // As FakeServer: a seed from rand 0.8 makes the key russh's own `random` would.
        let key = PrivateKey::from(Ed25519Keypair::from_seed(&rand::random::<[u8; 32]>()));
        let host_key = key
            .public_key()
            .to_openssh()
            .expect("an ed25519 public key encodes");
        let config = Arc::new(russh::server::Config {
            auth_rejection_time: Duration::ZERO,
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: vec![key],
            nodelay: true,
            ..Default::default()
        });
        let shared = Arc::new(Shared {
            settings,
            client_key: public_key,
            home,
            bytes_down: AtomicU64::new(0),
            damage_after: Mutex::new(None),
            damaged: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            shells_started: AtomicU64::new(0),
            running_shells: AtomicU64::new(0),
            sessions: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            cut_after: Mutex::new(None),
            cuts: watch::Sender::new(0),
        });
        let (port_sender, port_receiver) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel();
        let serving = shared.clone();
        let thread = thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
            runtime.block_on(serve(config, serving, port_sender, stopped));
            // Dropping the tasks still running kills their shells (see `ShellProcess`).
            runtime.shutdown_timeout(STOP_LIMIT);
        });
        let port = port_receiver
            .recv_timeout(START_LIMIT)
            .expect("the relay listens");
        Relay {
            port,
            host_key,
            shared,
            stop: Some(stop),
            thread: Some(thread),
            dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host key as `"ssh-ed25519 AAAA..."`.
    pub fn host_key(&self) -> &str {
        &self.host_key
    }

    /// The known_hosts line for the relay as reached at 127.0.0.1.
    pub fn known_hosts_line(&self) -> String {
        known_hosts_line(&self.host_key, "127.0.0.1", self.port)
    }

    /// The private key (ed25519, mode 0600) the relay accepts, from any user name.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// The home of every shell the relay starts (`HOME`, and the working directory).
    pub fn home(&self) -> &Path {
        &self.shared.home
    }

    /// Appends a `Host alias` block reaching the relay to `<dir>/ssh_config` (with the relay's
    /// host key added to `<dir>/known_hosts`) and returns that file's path. The block is the
    /// one an sshd of the harness gets: see `super::sshd::client_config_block`.
    pub fn write_client_config(&self, alias: &str, extra: &[&str]) -> PathBuf {
        let path = self.dir.path().join("ssh_config");
        let block = client_config_block(
            &ClientEnd {
                port: self.port,
                user: current_user(),
                client_key: self.client_key(),
                known_hosts: self.dir.path().join("known_hosts"),
                host_public_key: self.host_key.clone(),
            },
            alias,
            extra,
        );
        super::sshd::append(&path, &block);
        path
    }

    /// Bytes sent to clients so far, all sessions together, after the relay's changes.
    pub fn bytes_down(&self) -> u64 {
        self.shared.bytes_down.load(Ordering::SeqCst)
    }

    /// Bytes written to the shells' terminals so far, after the relay's changes.
    pub fn bytes_up(&self) -> u64 {
        self.shared.bytes_up.load(Ordering::SeqCst)
    }

    /// Shells started so far.
    pub fn shells_started(&self) -> u64 {
        self.shared.shells_started.load(Ordering::SeqCst)
    }

    /// Shells started and not yet ended (exited, or hung up and killed if need be, when their
    /// client went).
    pub fn running_shells(&self) -> u64 {
        self.shared.running_shells.load(Ordering::SeqCst)
    }

    /// Every channel request clients made, in order, as "pty-req TERM", "shell", "exec
    /// COMMAND", "subsystem NAME", "env NAME", ...
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Once `bytes` more bytes have gone down (any sessions), closes every connection open at
    /// that moment, like a relay dropping its clients: their TCP connections end without an
    /// SSH goodbye and their shells are hung up. No more than those bytes are sent first, and
    /// the last of them may be lost with the connection, as on a real network (for a cut at
    /// an exact byte of the TCP stream, put a `super::Proxy` in front). It happens once:
    /// connections opened afterwards pass, until this is called again. 0 cuts at once.
    pub fn cut_down_after(&self, bytes: u64) {
        let mut cut_after = self.shared.cut_after.lock().unwrap();
        if bytes == 0 {
            *cut_after = None;
            self.shared.cuts.send_modify(|cuts| *cuts += 1);
        } else {
            *cut_after = Some(bytes);
        }
    }

    /// How many cuts have happened.
    pub fn cuts(&self) -> u64 {
        *self.shared.cuts.borrow()
    }

    /// Once `bytes` more bytes have gone down (any sessions), flips the lowest bit of the next
    /// one, once, like a relay that damages what it carries.
    pub fn damage_down_after(&self, bytes: u64) {
        *self.shared.damage_after.lock().unwrap() = Some(bytes);
    }

    /// How many bytes the relay has changed on purpose so far.
    pub fn damaged(&self) -> u64 {
        self.shared.damaged.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let sessions = self.shared.sessions.lock().unwrap().clone();
        end_leftovers(&sessions, &self.shared.home);
    }
}

/// Kills what the relay's shells left running (a job that ignores hangups, a daemon): every
/// process in one of their `sessions` whose HOME is still the relay's `home`. Both, because a
/// session's number can be another's once all its processes are gone. Bounded: a process
/// forking as fast as it is killed is left after [`STOP_LIMIT`].
fn end_leftovers(sessions: &[i32], home: &Path) {
    if sessions.is_empty() {
        return;
    }
    let home = format!("HOME={}", home.display()).into_bytes();
    let deadline = std::time::Instant::now() + STOP_LIMIT;
    loop {
        let mut found = false;
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<i32>().ok())
            else {
                continue;
            };
            // The session is the fourth field after the command's name, which may hold spaces
            // and parentheses itself.
            let Some(session) =
                fs::read_to_string(entry.path().join("stat"))
                    .ok()
                    .and_then(|stat| {
                        let (_, fields) = stat.rsplit_once(')')?;
                        fields.split_whitespace().nth(3)?.parse::<i32>().ok()
                    })
            else {
                continue;
            };
            if !sessions.contains(&session) {
                continue;
            }
            // A zombie's environment reads as empty: it is dead already.
            let environment = fs::read(entry.path().join("environ")).unwrap_or_default();
            if environment
                .split(|byte| *byte == 0)
                .any(|variable| variable == home.as_slice())
            {
                found = true;
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if !found || std::time::Instant::now() >= deadline {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

async fn serve(
    config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
    port_sender: std::sync::mpsc::Sender<u16>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port on 127.0.0.1");
    let port = listener.local_addr().expect("a bound address").port();
    port_sender.send(port).expect("the test waits for the port");
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                let Ok((socket, _)) = accepted else { continue };
                // As in FakeServer: russh's `run_stream` does not apply `Config::nodelay`.
                let _ = socket.set_nodelay(true);
                tokio::spawn(connection(config.clone(), shared.clone(), socket));
            }
        }
    }
}

/// One client connection, until it ends or a cut ends it.
async fn connection(
    config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
    socket: tokio::net::TcpStream,
) {
    // Watching from now: a cut that happened before this connection is not for it.
    let mut cuts = shared.cuts.subscribe();
    // A second handle on the socket, to shut it down under russh's feet on a cut.
    let Ok(socket) = socket.into_std() else {
        return;
    };
    let Ok(keeper) = socket.try_clone() else {
        return;
    };
    let Ok(socket) = tokio::net::TcpStream::from_std(socket) else {
        return;
    };
    let handler = Connection {
        shared,
        channels: HashMap::new(),
    };
    let Ok(session) = russh::server::run_stream(config, socket, handler).await else {
        return;
    };
    tokio::pin!(session);
    tokio::select! {
        _ = &mut session => {}
        _ = cuts.changed() => {
            let _ = keeper.shutdown(Shutdown::Both);
            // The session sees its socket end, and its channels' readers see it go.
            let _ = tokio::time::timeout(STOP_LIMIT, session).await;
        }
    }
}

/// A session channel before its shell starts.
struct Opened {
    channel: Channel<Msg>,
    terminal: Option<Terminal>,
}

/// What a `pty-req` asked for.
#[derive(Clone, Debug)]
struct Terminal {
    term: String,
    size: Winsize,
}

/// One SSH connection: the client's key, then session channels with a terminal and a shell.
struct Connection {
    shared: Arc<Shared>,
    channels: HashMap<ChannelId, Opened>,
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if key.public_key.key_data() == self.shared.client_key.key_data() {
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(
            channel.id(),
            Opened {
                channel,
                terminal: None,
            },
        );
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // A channel with a shell is its pumps' to close.
        self.channels.remove(&channel);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        _modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.shared.note(format!("pty-req {term}"));
        match self.channels.get_mut(&channel) {
            Some(opened) if opened.terminal.is_none() => {
                opened.terminal = Some(Terminal {
                    term: term.to_owned(),
                    size: window_size(col_width, row_height, pix_width, pix_height),
                });
                session.channel_success(channel)
            }
            _ => session.channel_failure(channel),
        }
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Once the shell runs, its pumps get the change as a channel message and apply it.
        if let Some(Opened {
            terminal: Some(terminal),
            ..
        }) = self.channels.get_mut(&channel)
        {
            terminal.size = window_size(col_width, row_height, pix_width, pix_height);
        }
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.shared.note("shell".to_owned());
        let Some(Opened {
            terminal: Some(terminal),
            ..
        }) = self.channels.get(&channel)
        else {
            // No terminal asked for first: a relay of interactive shells has nothing to give.
            return session.channel_failure(channel);
        };
        match start_shell(&self.shared, terminal) {
            Ok((master, shell)) => {
                let opened = self.channels.remove(&channel).expect("just looked it up");
                self.shared.shells_started.fetch_add(1, Ordering::SeqCst);
                self.shared.running_shells.fetch_add(1, Ordering::SeqCst);
                if let Some(pid) = shell.child.id() {
                    self.shared.sessions.lock().unwrap().push(pid as i32);
                }
                session.channel_success(channel)?;
                tokio::spawn(run_session(
                    self.shared.clone(),
                    opened.channel,
                    master,
                    shell,
                ));
                Ok(())
            }
            Err(error) => {
                self.shared.note(format!("shell failed: {error}"));
                session.channel_failure(channel)
            }
        }
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        command: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.shared
            .note(format!("exec {}", String::from_utf8_lossy(command)));
        session.channel_failure(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.shared.note(format!("subsystem {name}"));
        session.channel_failure(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.shared.note(format!("env {variable_name}"));
        session.channel_failure(channel)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.shared.note("x11-req".to_owned());
        session.channel_failure(channel)
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.shared.note("auth-agent-req".to_owned());
        // russh answers failure for us.
        Ok(false)
    }
}

fn window_size(columns: u32, rows: u32, pixel_width: u32, pixel_height: u32) -> Winsize {
    let narrow = |value: u32| u16::try_from(value).unwrap_or(u16::MAX);
    Winsize {
        ws_row: narrow(rows),
        ws_col: narrow(columns),
        ws_xpixel: narrow(pixel_width),
        ws_ypixel: narrow(pixel_height),
    }
}

/// A shell the relay started; dropping it before it has been waited for kills its process
/// group, so that no shell outlives the relay. (What the shell started in groups of their own
/// is for [`end_leftovers`].)
struct ShellProcess {
    child: tokio::process::Child,
}

impl ShellProcess {
    /// Its process group (the shell leads its own session and group), while it has not been
    /// reaped: after that the number may belong to someone else.
    fn group(&self) -> Option<Pid> {
        self.child.id().map(|pid| Pid::from_raw(pid as i32))
    }

    fn signal(&self, signal: Signal) {
        if let Some(group) = self.group() {
            let _ = killpg(group, signal);
        }
    }
}

impl Drop for ShellProcess {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// Opens a pseudo-terminal of `terminal`'s size and starts the login shell on it, as the user
/// running the tests with the relay's home. Returns the terminal's master side, nonblocking.
fn start_shell(
    shared: &Shared,
    terminal: &Terminal,
) -> io::Result<(AsyncFd<OwnedFd>, ShellProcess)> {
    // Close-on-exec from the start: a process another test starts meanwhile must not inherit
    // the master, or the terminal would not hang up when the shell exits.
    let master = nix::pty::posix_openpt(
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
    )?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let slave_path = nix::pty::ptsname_r(&master)?;
    // std opens with O_CLOEXEC; the child gets the slave as its stdin, stdout and stderr.
    let slave: OwnedFd = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&slave_path)?
        .into();
    // SAFETY: the descriptor comes from `into_raw_fd`, so nothing else owns it.
    let master = unsafe { OwnedFd::from_raw_fd(master.into_raw_fd()) };
    set_window_size(&master, &terminal.size)?;

    let shell = &shared.settings.shell;
    let name = shell
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sh".to_owned());
    let term = if terminal.term.is_empty() {
        "dumb"
    } else {
        &terminal.term
    };
    let user = current_user();
    let mut command = tokio::process::Command::new(shell);
    command
        .arg0(format!("-{name}"))
        .env_clear()
        .env("HOME", &shared.home)
        .env("USER", &user)
        .env("LOGNAME", &user)
        .env("SHELL", shell)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("TERM", term)
        .current_dir(&shared.home)
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    // SAFETY: only async-signal-safe calls (setsid, ioctl) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            // A session of its own, with the terminal (its stdin by now) as the controlling one,
            // so that job control works and a hangup reaches it.
            nix::unistd::setsid()?;
            if libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    let shell = ShellProcess { child };
    // SAFETY: an OwnedFd names the same open descriptor for as long as it lives.
    let master = unsafe { AsyncFd::register(master) }?;
    Ok((master, shell))
}

fn set_window_size(master: &impl AsRawFd, size: &Winsize) -> io::Result<()> {
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, size as *const Winsize) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How a session ended.
enum Ending {
    /// The shell exited.
    Exited(io::Result<ExitStatus>),
    /// The client closed the channel or went away (or a cut took it).
    ClientGone,
}

/// Pumps bytes both ways between `channel` and the shell's terminal until the shell exits
/// (then: what is left in the terminal, exit-status, EOF, close) or the client goes (then the
/// shell is hung up, and killed if it does not exit).
async fn run_session(
    shared: Arc<Shared>,
    channel: Channel<Msg>,
    master: AsyncFd<OwnedFd>,
    mut shell: ShellProcess,
) {
    let master = Arc::new(master);
    let (mut reader, writer) = channel.split();
    let writer = Arc::new(writer);

    // Up: the channel is read at once into an unbounded queue, so that a shell that is not
    // reading its terminal never stops russh's session loop (which waits on a full channel),
    // which would stop the output the shell is blocked on too.
    let (typed, mut to_type) = mpsc::unbounded_channel::<Vec<u8>>();
    let (gone, mut client_gone) = oneshot::channel::<()>();
    let listener = {
        let master = master.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            while let Some(message) = reader.wait().await {
                match message {
                    ChannelMsg::Data { data } => {
                        let queued = typed.send(transform_up(&shared.settings, &data));
                        if queued.is_err() {
                            break;
                        }
                    }
                    ChannelMsg::WindowChange {
                        col_width,
                        row_height,
                        pix_width,
                        pix_height,
                    } => {
                        let size = window_size(col_width, row_height, pix_width, pix_height);
                        let _ = set_window_size(master.get_ref(), &size);
                    }
                    // A terminal cannot be half closed: as sshd does, ignore the client's EOF
                    // and go on until the shell exits.
                    ChannelMsg::Eof => {}
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            let _ = gone.send(());
        })
    };
    let typist = {
        let master = master.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            while let Some(bytes) = to_type.recv().await {
                if write_all(&master, &bytes).await.is_err() {
                    return;
                }
                shared
                    .bytes_up
                    .fetch_add(bytes.len() as u64, Ordering::SeqCst);
            }
        })
    };
    let mut output = tokio::spawn(pump_down(shared.clone(), master.clone(), writer.clone()));

    let ending = tokio::select! {
        status = shell.child.wait() => Ending::Exited(status),
        _ = &mut client_gone => Ending::ClientGone,
    };
    // Its last words may still be in the terminal; the pump stops at the hangup.
    let drained = matches!(ending, Ending::Exited(_))
        && tokio::time::timeout(DRAIN_LIMIT, &mut output).await.is_ok();
    // Waited for, so that nothing holds the terminal but `master` once they are done.
    let mut tasks = vec![listener, typist];
    if !drained {
        tasks.push(output);
    }
    for task in tasks {
        task.abort();
        let _ = task.await;
    }
    match ending {
        Ending::Exited(status) => {
            let code = match status {
                Ok(status) => status
                    .code()
                    .or_else(|| {
                        std::os::unix::process::ExitStatusExt::signal(&status)
                            .map(|signal| 128 + signal)
                    })
                    .unwrap_or(255),
                Err(_) => 255,
            };
            let _ = writer.exit_status(code as u32).await;
            let _ = writer.eof().await;
            let _ = writer.close().await;
        }
        Ending::ClientGone => {
            // Closing the terminal hangs it up, as sshd's closing it does: the kernel sends
            // SIGHUP to the shell and to the job in the foreground.
            drop(master);
            if tokio::time::timeout(HANGUP_LIMIT, shell.child.wait())
                .await
                .is_err()
            {
                shell.signal(Signal::SIGKILL);
                let _ = shell.child.wait().await;
            }
        }
    }
    shared.running_shells.fetch_sub(1, Ordering::SeqCst);
}

/// Forwards what the shell writes to its terminal to the client, until the terminal hangs up
/// (every process holding it has closed it) or the client is gone.
async fn pump_down(
    shared: Arc<Shared>,
    master: Arc<AsyncFd<OwnedFd>>,
    writer: Arc<ChannelWriteHalf<Msg>>,
) {
    let cuts = *shared.cuts.borrow();
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        let count = match read_some(&master, &mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(count) => count,
        };
        let mut bytes = transform_down(&shared.settings, &buffer[..count]);
        shared.damage(&mut bytes);
        let allowed = shared.allow_down(bytes.len(), cuts);
        if allowed == 0 {
            return;
        }
        bytes.truncate(allowed);
        if writer.data_bytes(bytes).await.is_err() {
            return;
        }
        shared
            .bytes_down
            .fetch_add(allowed as u64, Ordering::SeqCst);
    }
}

/// One read from the nonblocking master, waiting until there is something. A hung-up terminal
/// reads as EIO, which is the end here like any other error.
async fn read_some(master: &AsyncFd<OwnedFd>, buffer: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut ready = master.readable().await?;
        match ready
            .try_io(|fd| nix::unistd::read(fd.get_ref().as_fd(), buffer).map_err(io::Error::from))
        {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

async fn write_all(master: &AsyncFd<OwnedFd>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let mut ready = master.writable().await?;
        match ready
            .try_io(|fd| nix::unistd::write(fd.get_ref().as_fd(), bytes).map_err(io::Error::from))
        {
            Ok(Ok(written)) => bytes = &bytes[written..],
            Ok(Err(error)) => return Err(error),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

/// What the relay does to bytes on their way to the shell.
fn transform_up(settings: &RelayBuilder, bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .map(|&byte| {
            let byte = if settings.strip_eighth_bit {
                byte & 0x7f
            } else {
                byte
            };
            if settings.translate_newlines && byte == b'\r' {
                b'\n'
            } else {
                byte
            }
        })
        .collect()
}

/// What the relay does to bytes on their way to the client.
fn transform_down(settings: &RelayBuilder, bytes: &[u8]) -> Vec<u8> {
    let mut changed = Vec::with_capacity(bytes.len() + bytes.len() / 8);
    for &byte in bytes {
        let byte = if settings.strip_eighth_bit {
            byte & 0x7f
        } else {
            byte
        };
        if settings.translate_newlines && byte == b'\n' {
            changed.push(b'\r');
        }
        changed.push(byte);
    }
    changed
}
