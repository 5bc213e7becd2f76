//! Opening an authenticated SSH connection to a host, the way `ssh alias` would.
//!
//! A [`Connector`] holds what every connection of one run shares: the config source and
//! command-line overrides, the local user, whether prompts are allowed and the keys decrypted so
//! far. [`Connector::connect`] resolves the host, builds the transport (TCP, a ProxyCommand's
//! stdio, or a direct-tcpip channel through each ProxyJump hop), checks the host key against
//! known_hosts under StrictHostKeyChecking, and authenticates. Every wait is bounded: the
//! handshake by ConnectTimeout (20 s by default), each authentication step, and the live
//! session by keepalives (ServerAliveInterval, or 15 s x 3 when unset), so a silent peer
//! becomes a transient error and never a hang.
//!
//! Connections of one run to a host are opened at the pace `startups` sets, so a host that
//! drops connections still being set up (sshd MaxStartups) gets few of them at once; a
//! connection closed during the handshake is marked as such for it to decide. A channel the
//! server refuses on a live connection (sshd MaxSessions) is an error marked [`ChannelRefused`],
//! after a few short tries: a host allowing one session per connection frees a closed
//! session's place only a moment after the channel closed.

use crate::env;
use crate::error::{Error, Result};
use crate::ssh::auth::{Authenticated, Authenticator, Interaction, KeyStore};
use crate::ssh::channel::Channel;
use crate::ssh::config::{
    self, CommandLineArgument, ConfigSource, HostConfig, JumpHost, LocalContext, Overrides,
    StrictHostKeyChecking,
};
use crate::ssh::known_hosts::{self, HostKeyStatus};
use crate::ssh::startups::{ClosedBeforeLogin, Startups, closed_before_login};
use crate::ssh::system::{self, Route, SystemHost, SystemSsh};
use crate::target::HostSpec;
use russh::client::{self, Handle};
use russh::keys::ssh_key::public::KeyData;
use russh::keys::{PublicKey, PublicKeyOrCertificate};
use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

/// How long a timed global request waits for its answer ([`Connection::round_trip`]).
pub const ROUND_TRIP_WAIT: Duration = Duration::from_secs(5);

/// ConnectTimeout when the config sets none: long enough for a slow login host, short enough
/// that a black-holed address is reported while the user still waits.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Keepalive when ServerAliveInterval is unset: a dead peer is noticed within 60 s.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
pub const DEFAULT_KEEPALIVE_COUNT: u32 = 3;
/// ProxyJump chains longer than this are a configuration loop.
const MAX_JUMP_DEPTH: usize = 8;
/// How much of a ProxyCommand's stderr is kept for the error message.
const PROXY_STDERR_LIMIT: usize = 4096;
/// Upper bound on opening a channel on a live connection.
pub const CHANNEL_OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// The waits before opening a refused channel again. sshd frees a session's place when the
/// process behind it has been reaped, which may be a moment after its channel closed, so on a
/// host allowing one session per connection (MaxSessions 1) the next channel can be refused
/// for that moment; a second channel really open at the same time is refused after all of them.
pub const CHANNEL_REFUSED_WAITS: [Duration; 4] = [
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(200),
];

/// What every connection of one run shares.
pub struct Connector {
    source: ConfigSource,
    overrides: Overrides,
    local: LocalContext,
    keys: KeyStore,
    /// Tuning for data transfer: window and packet sizes.
    tuning: Tuning,
    /// Environment variables ProxyCommand children must not inherit (a secret's variable).
    scrubbed: Vec<String>,
    /// How many connections to each host are being opened at once.
    startups: Startups,
    /// xfer's own client, or the system ssh.
    transport: Transport,
    /// Logins later connections share, by host (see [`Shared`]).
    shared: Mutex<HashMap<String, Shared>>,
    /// Whether the user's config names an ssh master for a destination, as `ssh -G` said when
    /// the host was resolved, so that logging in does not run it again.
    names_master: Mutex<HashMap<String, bool>>,
}

/// SSH transport settings that matter for throughput.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    pub window_size: u32,
    pub maximum_packet_size: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        // A large window keeps a far link full (russh ignores window adjustments from the
        // handler, so the initial window is what we get); 64 KiB packets halve per-packet costs.
        Tuning {
            window_size: 64 << 20,
            maximum_packet_size: 65535,
        }
    }
}

/// The outcome of host key checking for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyVerdict {
    /// Found in a known_hosts file.
    Known { file: PathBuf, line: usize },
    /// Was unknown and has just been recorded.
    Learned { file: PathBuf },
    /// Was unknown and accepted without recording (StrictHostKeyChecking=no with no file).
    AcceptedUnrecorded,
    /// A host certificate signed by the `@cert-authority` at this line.
    Certified { file: PathBuf, line: usize },
    /// Refused; the error explains why.
    Refused,
    /// The system ssh checked it, against the files its config names.
    CheckedBySsh,
}

impl HostKeyVerdict {
    /// One word for a table column.
    pub fn summary(&self) -> &'static str {
        match self {
            HostKeyVerdict::Known { .. } => "known",
            HostKeyVerdict::Certified { .. } => "certified",
            HostKeyVerdict::Learned { .. } => "recorded",
            HostKeyVerdict::AcceptedUnrecorded => "accepted",
            HostKeyVerdict::Refused => "refused",
            HostKeyVerdict::CheckedBySsh => "by ssh",
        }
    }
}

impl fmt::Display for HostKeyVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostKeyVerdict::Known { file, line } => write!(f, "known ({}:{line})", file.display()),
            HostKeyVerdict::Certified { file, line } => {
                write!(f, "certified by the CA at {}:{line}", file.display())
            }
            HostKeyVerdict::Learned { file } => write!(f, "new, recorded in {}", file.display()),
            HostKeyVerdict::AcceptedUnrecorded => f.write_str("new, accepted without recording"),
            HostKeyVerdict::Refused => f.write_str("refused"),
            HostKeyVerdict::CheckedBySsh => f.write_str("checked by the system ssh"),
        }
    }
}

/// An authenticated connection. Dropping it closes the session and ends any proxy it used,
/// once no other [`Connection`] shares it (see [`Connector::connect_resolved`]).
pub struct Connection {
    link: Arc<Link>,
    config: Arc<HostConfig>,
    label: String,
    authenticated: Authenticated,
    host_key: HostKeyVerdict,
    host_key_fingerprint: String,
}

/// What carries a connection's channels.
// One per login, behind an Arc: the size of the native variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Link {
    /// xfer's own SSH client, and what its transport depends on.
    Native {
        handle: Handle<ClientHandler>,
        _transport: TransportGuard,
    },
    /// The system ssh, through its master for the host.
    System(Arc<SystemHost>),
}

/// How a run reaches hosts: xfer's own SSH client, or the system's `ssh` command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Transport {
    #[default]
    Native,
    System(SystemSsh),
}

impl Transport {
    /// For `doctor` and `-v`: which client carried the connection.
    pub fn describe(&self) -> String {
        match self {
            Transport::Native => "native (xfer's own SSH client)".to_string(),
            Transport::System(ssh) => format!("system ssh ({})", ssh.describe()),
        }
    }
}

/// One host's login that later connections of the run share: a host that asked a person for
/// answers is logged in to once, and the system ssh's master serves every channel.
type Shared = Arc<tokio::sync::Mutex<HostLogins>>;

/// What the run knows of its logins to one host.
#[derive(Default)]
struct HostLogins {
    /// The login its connections share, once one asked a person (or went through the system
    /// ssh).
    shared: Option<SharedLogin>,
    /// A login to the host has succeeded.
    logged_in: bool,
    /// A login to the host asked a person: the next one will too.
    asked: bool,
}

/// What a shared login keeps to make more [`Connection`]s of it; it does not keep the login
/// alive (the connections do).
struct SharedLogin {
    link: Weak<Link>,
    config: Arc<HostConfig>,
    label: String,
    authenticated: Authenticated,
    host_key: HostKeyVerdict,
    host_key_fingerprint: String,
}

impl SharedLogin {
    fn of(connection: &Connection) -> SharedLogin {
        SharedLogin {
            link: Arc::downgrade(&connection.link),
            config: connection.config.clone(),
            label: connection.label.clone(),
            authenticated: connection.authenticated.clone(),
            host_key: connection.host_key.clone(),
            host_key_fingerprint: connection.host_key_fingerprint.clone(),
        }
    }

    /// Another connection on the login, while it is up.
    fn connection(&self) -> Option<Connection> {
        let link = self.link.upgrade()?;
        if link.is_closed() {
            return None;
        }
        Some(Connection {
            link,
            config: self.config.clone(),
            label: self.label.clone(),
            authenticated: self.authenticated.clone(),
            host_key: self.host_key.clone(),
            host_key_fingerprint: self.host_key_fingerprint.clone(),
        })
    }
}

impl Link {
    fn is_closed(&self) -> bool {
        match self {
            Link::Native { handle, .. } => handle.is_closed(),
            Link::System(host) => host.is_closed(),
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("label", &self.label)
            .finish()
    }
}

/// Keeps alive what the transport depends on: a jump connection, or the proxy command.
enum TransportGuard {
    Direct,
    Jump { _connection: Box<Connection> },
    Command(tokio::process::Child, Arc<Mutex<Vec<u8>>>),
}

type BoxedStream = Pin<Box<dyn AsyncStream>>;
trait AsyncStream: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> AsyncStream for T {}

impl Connector {
    pub fn new(source: ConfigSource, overrides: Overrides, local: LocalContext) -> Self {
        Connector {
            source,
            overrides,
            local,
            keys: KeyStore::default(),
            tuning: Tuning::default(),
            scrubbed: Vec::new(),
            startups: Startups::new(),
            transport: Transport::Native,
            shared: Mutex::new(HashMap::new()),
            names_master: Mutex::new(HashMap::new()),
        }
    }

    /// Asks authentication's questions (passwords, codes, passphrases) through `answerer`
    /// instead of straight on the terminal.
    pub fn with_answerer(mut self, answerer: Arc<dyn crate::ssh::prompt::Answerer>) -> Self {
        self.keys = KeyStore::with_answerer(answerer);
        self
    }

    /// Reaches hosts through `transport` instead of xfer's own client.
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Keeps these environment variables from every process a connection starts
    /// (ProxyCommand), e.g. the variable a secret was read from.
    pub fn without_environment(mut self, names: Vec<String>) -> Self {
        self.scrubbed = names;
        self
    }

    /// Resolves a command-line host the way `ssh -G` would (by running it, for the system
    /// ssh: its configuration is its own, `Match exec` and all).
    pub fn resolve(&self, spec: &HostSpec) -> Result<HostConfig> {
        let mut overrides = self.overrides.clone();
        if spec.user.is_some() {
            overrides.user = spec.user.clone();
        }
        match &self.transport {
            Transport::Native => config::resolve(&spec.host, &overrides, &self.source, &self.local),
            Transport::System(ssh) => {
                let dump = self.route(ssh, spec).dump()?;
                Ok(self.system_config(&dump, spec))
            }
        }
    }

    /// The [`HostConfig`] of `spec` from what `ssh -G` printed for it.
    fn system_config(&self, dump: &str, spec: &HostSpec) -> HostConfig {
        if let Transport::System(ssh) = &self.transport {
            self.names_master
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(
                    self.route(ssh, spec).destination,
                    system::names_master(dump),
                );
        }
        let mut overrides = self.overrides.clone();
        overrides.user = spec.user.clone();
        let mut words = config::argument_words(Some(&self.source), &overrides);
        words.push(spec.to_string());
        system::host_config_from_dump(dump, &spec.host, &self.local.home, words)
    }

    /// How the system ssh reaches `spec`.
    fn route(&self, ssh: &SystemSsh, spec: &HostSpec) -> Route {
        Route {
            ssh: ssh.clone(),
            arguments: config::argument_words(Some(&self.source), &self.overrides),
            destination: match &spec.user {
                Some(user) => format!("{user}@{}", spec.host),
                None => spec.host.clone(),
            },
            scrubbed: self.scrubbed.clone(),
        }
    }

    /// The login to the host named `key` that connections share, if any.
    fn shared(&self, key: &str) -> Shared {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    pub async fn connect(&self, spec: &HostSpec) -> Result<Connection> {
        let config = match &self.transport {
            Transport::Native => self.resolve(spec)?,
            // `ssh -G` may run the config's `Match exec` commands: off the runtime's threads.
            Transport::System(ssh) => {
                let route = self.route(ssh, spec);
                let dump = tokio::task::spawn_blocking(move || route.dump())
                    .await
                    .map_err(|_| Error::config(format!("{spec}: `ssh -G` did not finish")))??;
                self.system_config(&dump, spec)
            }
        };
        self.connect_resolved(Arc::new(config)).await
    }

    /// The link to `connection`'s host is far: the run's next connections to it are opened
    /// together rather than on a ramp (see `startups`).
    pub fn link_is_far(&self, connection: &Connection) {
        self.startups
            .far(&startup_key(connection.config()), connection.label());
    }

    /// Connects at the pace the host takes new connections (see `startups`).
    ///
    /// A host whose login asked a person for answers (a password, a one-time code) is logged
    /// in to once per run: later connections are channels of the first connection, so a `-j 4`
    /// run asks once, not four times; the streams then share that connection's bandwidth and
    /// its fate. The system ssh always logs in once per host (its master).
    pub async fn connect_resolved(&self, config: Arc<HostConfig>) -> Result<Connection> {
        let key = startup_key(&config);
        let label = label_of(&config);
        let shared = self.shared(&key);
        if let Transport::System(ssh) = &self.transport {
            // Held while logging in, so the run's other connections to the host wait for this
            // login instead of starting logins (and prompts) of their own.
            let mut login = shared.lock().await;
            if let Some(connection) = login.shared.as_ref().and_then(SharedLogin::connection) {
                return Ok(connection);
            }
            let connection = self
                .startups
                .open(&key, &label, || self.connect_system(ssh, config.clone()))
                .await?;
            login.shared = Some(SharedLogin::of(&connection));
            return Ok(connection);
        }
        // The first login to a host, and every login to a host that asked a person, holds
        // the host's place: connections opened at once (a retry of several streams after a
        // drop) then wait for one login and share it, rather than each asking again. Other
        // hosts' logins, once one went without questions, run side by side.
        let login = shared.lock().await;
        if let Some(connection) = login.shared.as_ref().and_then(SharedLogin::connection) {
            tracing::debug!(%label, "a new channel of the connection this run logged in with");
            return Ok(connection);
        }
        let hold = !login.logged_in || login.asked;
        let held = if hold {
            Some(login)
        } else {
            drop(login);
            None
        };
        let connection = self
            .startups
            .open(&key, &label, || {
                self.connect_at_depth(config.clone(), 0, vec![key.clone()])
            })
            .await?;
        let mut login = match held {
            Some(login) => login,
            None => shared.lock().await,
        };
        login.logged_in = true;
        if connection.authenticated.interactive {
            login.asked = true;
            login.shared = Some(SharedLogin::of(&connection));
        }
        Ok(connection)
    }

    /// Logs in to the host through the system ssh (see `system`).
    async fn connect_system(&self, ssh: &SystemSsh, config: Arc<HostConfig>) -> Result<Connection> {
        let label = label_of(&config);
        let spec = HostSpec {
            user: config
                .command_line
                .last()
                .and_then(|destination| destination.rsplit_once('@'))
                .map(|(user, _)| user.to_string()),
            host: config.original_host.clone(),
        };
        let route = self.route(ssh, &spec);
        let known = self
            .names_master
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&route.destination)
            .copied();
        let names_master = match known {
            Some(names_master) => names_master,
            // Resolved elsewhere (a config given ready-made): ask ssh now.
            None => {
                let route = route.clone();
                let dump = tokio::task::spawn_blocking(move || route.dump())
                    .await
                    .map_err(|_| Error::connect(format!("{label}: `ssh -G` did not finish")))??;
                system::names_master(&dump)
            }
        };
        let host = SystemHost::log_in(route, names_master, &label).await?;
        Ok(Connection {
            link: Arc::new(Link::System(Arc::new(host))),
            config,
            label,
            authenticated: Authenticated {
                method: format!("by {}", ssh.describe()),
                summary: "system ssh".into(),
                interactive: false,
            },
            host_key: HostKeyVerdict::CheckedBySsh,
            host_key_fingerprint: String::new(),
        })
    }

    /// Connects to `config`, `depth` jumps in; `pacing` holds the start-up keys whose places
    /// the connects this one is part of hold already (see `open_transport`).
    fn connect_at_depth<'a>(
        &'a self,
        config: Arc<HostConfig>,
        depth: usize,
        pacing: Vec<String>,
    ) -> Pin<Box<dyn Future<Output = Result<Connection>> + Send + 'a>> {
        Box::pin(async move {
            let label = label_of(&config);
            if depth > MAX_JUMP_DEPTH {
                return Err(Error::config(format!(
                    "{label}: ProxyJump chain deeper than {MAX_JUMP_DEPTH} hops"
                ))
                .with_hint("check ProxyJump in your ssh_config for a loop"));
            }
            let timeout = config
                .connect_timeout
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
            let verdict = Arc::new(Mutex::new(None));
            let interaction = Interaction::detect(config.batch_mode);
            let handler = ClientHandler {
                config: config.clone(),
                verdict: verdict.clone(),
                fingerprint: Arc::new(Mutex::new(String::new())),
                interaction,
                label: label.clone(),
            };
            let fingerprint = handler.fingerprint.clone();
            let ssh_config = Arc::new(self.client_config(&config));

            let mut heard = None;
            let handshake = async {
                let (stream, guard) = self.open_transport(&config, depth, &label, &pacing).await?;
                let (stream, recorded) = crate::ssh::greeting::Recorded::new(stream);
                heard = Some(recorded);
                let handle = client::connect_stream(ssh_config, stream, handler).await;
                Ok::<_, Error>((handle, guard))
            };
            let (handle, mut guard) = match tokio::time::timeout(timeout, handshake).await {
                Err(_) => {
                    return Err(Error::connect(format!(
                        "{label}: no SSH handshake within {} s",
                        timeout.as_secs()
                    ))
                    .with_hint("check that the host is up and reachable; raise ConnectTimeout for a slow link"));
                }
                Ok(result) => result?,
            };
            let mut handle = match handle {
                Ok(handle) => handle,
                Err(error) => {
                    let refused = verdict.lock().ok().and_then(|mut v| v.take());
                    if let Some(Err(host_key_error)) = refused {
                        return Err(host_key_error);
                    }
                    let seen = heard.map(|heard| heard.first_bytes()).unwrap_or_default();
                    return Err(describe_handshake_failure(&label, error, &mut guard, &seen).await);
                }
            };
            let host_key = match verdict.lock().ok().and_then(|mut v| v.take()) {
                Some(Ok(host_key)) => host_key,
                Some(Err(error)) => return Err(error),
                None => {
                    return Err(Error::connect(format!(
                        "{label}: the handshake ended without a host key"
                    )));
                }
            };
            let agent_socket = agent_socket(&config, &self.local);
            let authenticator = Authenticator {
                config: &config,
                keys: &self.keys,
                interaction,
                agent_socket,
            };
            let authenticated = authenticator.authenticate(&mut handle, &label).await?;
            tracing::debug!(%label, method = %authenticated.method, "authenticated");
            let host_key_fingerprint = fingerprint.lock().map(|f| f.clone()).unwrap_or_default();
            Ok(Connection {
                link: Arc::new(Link::Native {
                    handle,
                    _transport: guard,
                }),
                config,
                label,
                authenticated,
                host_key,
                host_key_fingerprint,
            })
        })
    }

    fn client_config(&self, config: &HostConfig) -> client::Config {
        let (interval, count) = if config.server_alive_interval > 0 {
            (
                Duration::from_secs(config.server_alive_interval),
                config.server_alive_count_max,
            )
        } else {
            (DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_COUNT)
        };
        let mut preferred = russh::Preferred::default();
        // Ask for the host key types already on file first, as ssh does, so a server with
        // several keys shows the one we can check.
        let files: Vec<PathBuf> = config
            .user_known_hosts_files
            .iter()
            .chain(config.global_known_hosts_files.iter())
            .cloned()
            .collect();
        if let Ok(known) = known_hosts::known_key_algorithms(&files, &config.host_key_name())
            && !known.is_empty()
        {
            let mut order: Vec<russh::keys::Algorithm> = Vec::new();
            for algorithm in known.iter().chain(preferred.key.iter()) {
                // An RSA key on file can be shown with any of the RSA signature hashes.
                let expanded: Vec<russh::keys::Algorithm> = if algorithm.clone().is_rsa() {
                    preferred
                        .key
                        .iter()
                        .filter(|a| (*a).clone().is_rsa())
                        .cloned()
                        .collect()
                } else {
                    vec![algorithm.clone()]
                };
                for candidate in expanded {
                    if preferred.key.contains(&candidate) && !order.contains(&candidate) {
                        order.push(candidate);
                    }
                }
            }
            preferred.key = std::borrow::Cow::Owned(order);
        }
        // An @cert-authority line for the host: ask for its host certificate first, as ssh
        // does (ssh-rsa certificates signed with SHA-1 are not offered, as in ssh 9.2).
        let lookup = known_hosts::HostKeyLookup::new(
            &config.hostname,
            config.port,
            config.host_key_alias.as_deref(),
        );
        if known_hosts::has_certificate_authority(&files, &lookup).unwrap_or(false) {
            preferred.host_key_certificates = std::borrow::Cow::Owned(
                preferred
                    .key
                    .iter()
                    .filter(|algorithm| {
                        !matches!(algorithm, russh::keys::Algorithm::Rsa { hash: None })
                    })
                    .cloned()
                    .collect(),
            );
        }
        // AES-GCM first: with the CPU's AES instructions it outruns ChaCha20-Poly1305, which
        // comes next for CPUs without them.
        preferred.cipher = std::borrow::Cow::Owned(vec![
            russh::cipher::AES_256_GCM,
            russh::cipher::AES_128_GCM,
            russh::cipher::CHACHA20_POLY1305,
            russh::cipher::AES_256_CTR,
            russh::cipher::AES_192_CTR,
            russh::cipher::AES_128_CTR,
        ]);
        client::Config {
            keepalive_interval: Some(interval),
            keepalive_max: count.max(1) as usize,
            window_size: self.tuning.window_size,
            maximum_packet_size: self.tuning.maximum_packet_size,
            nodelay: true,
            preferred,
            ..Default::default()
        }
    }

    async fn open_transport(
        &self,
        config: &HostConfig,
        depth: usize,
        label: &str,
        pacing: &[String],
    ) -> Result<(BoxedStream, TransportGuard)> {
        if let Some((last, earlier)) = config.proxy_jump.split_last() {
            let jump_config = Arc::new(self.resolve_jump(last, earlier)?);
            let jump_label = label_of(&jump_config);
            // Paced as a host of its own: the connections of a run to many hosts behind one
            // login host all start up there, and it limits them (MaxStartups) as any host. A
            // chain that passes the same host twice (`-J gate,gate`) holds its place already:
            // waiting for it again would wait for itself.
            let jump_key = startup_key(&jump_config);
            let jump = if pacing.contains(&jump_key) {
                self.connect_at_depth(jump_config.clone(), depth + 1, pacing.to_vec())
                    .await
            } else {
                let mut inner = pacing.to_vec();
                inner.push(jump_key.clone());
                self.startups
                    .open(&jump_key, &jump_label, || {
                        self.connect_at_depth(jump_config.clone(), depth + 1, inner.clone())
                    })
                    .await
            };
            let jump = jump.map_err(|error| {
                let kind = error.kind();
                let hint = error.hint().map(str::to_string);
                let mut wrapped =
                    Error::new(kind, format!("{label}: via jump host: {}", error.message()))
                        .transient(error.is_transient());
                if let Some(hint) = hint {
                    wrapped = wrapped.with_hint(hint);
                }
                // A jump host dropping a connection it is still setting up is a limit too.
                if closed_before_login(&error) {
                    wrapped = wrapped.with_source(ClosedBeforeLogin);
                }
                wrapped
            })?;
            let channel = tokio::time::timeout(
                CHANNEL_OPEN_TIMEOUT,
                jump.native_handle()?
                    .channel_open_direct_tcpip(config.hostname.clone(), u32::from(config.port), "127.0.0.1", 0),
            )
            .await
            .map_err(|_| Error::connect(format!("{label}: jump host {jump_label} did not answer a forwarding request")))?
            .map_err(|error| {
                Error::connect(format!(
                    "{label}: jump host {jump_label} could not open a connection to {}:{}: {error}",
                    config.hostname, config.port
                ))
                .with_hint("check that the target address is right as seen from the jump host, and that the jump host allows TCP forwarding (AllowTcpForwarding)")
            })?;
            let stream: BoxedStream = Box::pin(channel.into_stream());
            return Ok((
                stream,
                TransportGuard::Jump {
                    _connection: Box::new(jump),
                },
            ));
        }
        if let Some(command) = config.expand_proxy_command() {
            return spawn_proxy_command(&command, label, &self.scrubbed);
        }
        let stream = connect_tcp(&config.hostname, config.port, label).await?;
        Ok((Box::pin(stream), TransportGuard::Direct))
    }

    /// A jump host is resolved through the config like any host (ssh runs `ssh -J` recursively):
    /// the last hop of a chain is reached through the hops before it.
    fn resolve_jump(&self, hop: &JumpHost, earlier: &[JumpHost]) -> Result<HostConfig> {
        // ssh reaches a jump host as `ssh -l USER -p PORT -F CONFIG HOST`: no -o, -i or -J.
        let overrides = Overrides {
            user: hop.user.clone(),
            arguments: hop
                .port
                .map(|port| CommandLineArgument::Port(port.to_string()))
                .into_iter()
                .collect(),
        };
        let mut resolved = config::resolve(&hop.host, &overrides, &self.source, &self.local)?;
        if !earlier.is_empty() {
            resolved.proxy_jump = earlier.to_vec();
            resolved.proxy_command = None;
        }
        Ok(resolved)
    }
}

/// `alias (user@address:port)`, the name every message uses for a host.
pub fn label_of(config: &HostConfig) -> String {
    let address = if config.hostname.contains(':') {
        format!("[{}]", config.hostname)
    } else {
        config.hostname.clone()
    };
    if config.original_host == config.hostname {
        format!("{}@{address}:{}", config.user, config.port)
    } else {
        format!(
            "{} ({}@{address}:{})",
            config.original_host, config.user, config.port
        )
    }
}

fn agent_socket(config: &HostConfig, local: &LocalContext) -> Option<PathBuf> {
    match config.identity_agent.as_deref() {
        Some("none") => None,
        None | Some("SSH_AUTH_SOCK") => env::var_path(env::SSH_AUTH_SOCK),
        Some(value) => {
            if let Some(name) = value.strip_prefix('$') {
                return std::env::var_os(name).map(PathBuf::from);
            }
            match value.strip_prefix("~/") {
                Some(rest) => Some(local.home.join(rest)),
                None => Some(PathBuf::from(value)),
            }
        }
    }
}

async fn connect_tcp(host: &str, port: u16, label: &str) -> Result<tokio::net::TcpStream> {
    let addresses: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|error| {
            Error::connect(format!(
                "{label}: cannot resolve host name '{host}': {error}"
            ))
            .with_hint("check the HostName in your ssh_config or the spelling of the host")
            .transient(false)
        })?
        .collect();
    let mut last_error = None;
    for address in &addresses {
        match tokio::net::TcpStream::connect(address).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(error) => last_error = Some((address, error)),
        }
    }
    match last_error {
        Some((address, error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => Err(
            Error::connect(format!("{label}: connection refused at {address}")).with_hint(
                "no SSH server listens there: check the host's Port and that sshd is running",
            ),
        ),
        Some((address, error)) => Err(Error::connect(format!(
            "{label}: cannot connect to {address}: {error}"
        ))
        .with_hint("check the network path to the host (VPN, firewall, the machine being up)")),
        None => Err(
            Error::connect(format!("{label}: '{host}' resolved to no address")).transient(false),
        ),
    }
}

/// Runs a ProxyCommand through `sh -c` as ssh does, its stdio becoming the transport. The child
/// is killed when the connection is dropped.
fn spawn_proxy_command(
    command: &str,
    label: &str,
    scrubbed: &[String],
) -> Result<(BoxedStream, TransportGuard)> {
    let mut builder = tokio::process::Command::new("/bin/sh");
    for name in scrubbed {
        builder.env_remove(name);
    }
    let mut child = builder
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| {
            Error::connect(format!("{label}: cannot start ProxyCommand: {error}")).transient(false)
        })?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(Error::connect(format!(
            "{label}: ProxyCommand has no stdio"
        )));
    };
    // Drain stderr all along, or a chatty proxy fills the pipe and blocks; keep the tail for
    // the error message.
    let tail = Arc::new(Mutex::new(Vec::new()));
    if let Some(mut stderr) = child.stderr.take() {
        let tail = tail.clone();
        tokio::spawn(async move {
            let mut buffer = [0u8; 4096];
            while let Ok(read) = stderr.read(&mut buffer).await {
                if read == 0 {
                    break;
                }
                tracing::debug!(target: "xfer::proxy_command", "{}", String::from_utf8_lossy(&buffer[..read]).trim_end());
                if let Ok(mut tail) = tail.lock() {
                    tail.extend_from_slice(&buffer[..read]);
                    let excess = tail.len().saturating_sub(PROXY_STDERR_LIMIT);
                    tail.drain(..excess);
                }
            }
        });
    }
    let stream: BoxedStream = Box::pin(tokio::io::join(stdout, stdin));
    Ok((stream, TransportGuard::Command(child, tail)))
}

/// Explains why the SSH handshake failed, including a proxy command's exit status and stderr.
async fn describe_handshake_failure(
    label: &str,
    error: russh::Error,
    guard: &mut TransportGuard,
    seen: &[u8],
) -> Error {
    if let TransportGuard::Command(child, tail) = guard {
        let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
        // Give the stderr task a moment to collect the last words.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stderr_text = tail
            .lock()
            .map(|tail| String::from_utf8_lossy(&tail).trim().to_string())
            .unwrap_or_default();
        if let Ok(Ok(status)) = status {
            let mut message = format!(
                "{label}: ProxyCommand exited with {status} before the SSH handshake finished"
            );
            if !stderr_text.is_empty() {
                message.push_str(&format!(": {}", crate::terminal::printable(&stderr_text)));
            }
            return Error::connect(message)
                .with_hint("run the ProxyCommand by hand to see why it fails (ssh -G ALIAS | grep proxycommand)");
        }
    }
    // Something answered, but not SSH: trying again would meet the same.
    if let Some(first_line) = crate::ssh::greeting::not_ssh(seen) {
        return Error::connect(format!(
            "{label}: the server there does not speak SSH; it sent \"{first_line}\""
        ))
        .with_hint(
            "check the host and port (Port in ssh_config, or -p): another service answers there",
        )
        .transient(false);
    }
    if closed_during_handshake(&error) {
        let detail = match &error {
            russh::Error::IO(error) => format!(" ({error})"),
            _ => String::new(),
        };
        return Error::connect(format!(
            "{label}: the host closed the connection during the SSH handshake{detail}"
        ))
        .with_hint("the host may limit connections being set up at once (sshd MaxStartups) or be busy; try again, or with fewer connections (-j)")
        .with_source(ClosedBeforeLogin);
    }
    russh_error(label, error)
}

/// Whether a handshake failed because the host closed or reset the connection: what sshd does
/// to a connection past its MaxStartups (after a line saying so).
fn closed_during_handshake(error: &russh::Error) -> bool {
    use std::io::ErrorKind as Io;
    match error {
        russh::Error::Disconnect | russh::Error::HUP => true,
        russh::Error::IO(error) => matches!(
            error.kind(),
            Io::ConnectionReset | Io::ConnectionAborted | Io::UnexpectedEof | Io::BrokenPipe
        ),
        _ => false,
    }
}

/// Which connections share a pace: those to one address and port.
fn startup_key(config: &HostConfig) -> String {
    format!("{}:{}", config.hostname, config.port)
}

/// The source of an error for a channel the server refused to open on a live connection. It
/// says nothing of its own: the error's message says what happened.
#[derive(Debug, Clone, Copy)]
pub struct ChannelRefused;

impl fmt::Display for ChannelRefused {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        Ok(())
    }
}

impl std::error::Error for ChannelRefused {}

/// Whether `error` is a channel the server refused to open.
pub fn channel_refused(error: &Error) -> bool {
    error.source_is::<ChannelRefused>()
}

/// Why the server refused a channel, in words.
fn refusal_reason(reason: &russh::ChannelOpenFailure) -> String {
    use russh::ChannelOpenFailure as Reason;
    match reason {
        Reason::AdministrativelyProhibited => "administratively prohibited".into(),
        Reason::ConnectFailed => "open failed".into(),
        Reason::UnknownChannelType => "unknown channel type".into(),
        Reason::ResourceShortage => "resource shortage".into(),
        Reason::Other { code, .. } => format!("reason code {code}"),
    }
}

/// Opens a channel with `open`, again after each of `waits` while the server refuses it.
async fn open_refused_again<T, Open, Opening>(waits: &[Duration], mut open: Open) -> Result<T>
where
    Open: FnMut() -> Opening,
    Opening: Future<Output = Result<T>>,
{
    let mut waits = waits.iter();
    loop {
        match open().await {
            Err(error) if channel_refused(&error) => match waits.next() {
                Some(wait) => tokio::time::sleep(*wait).await,
                None => return Err(error),
            },
            other => return other,
        }
    }
}

/// Maps a russh error on a live or opening connection to an xfer error.
pub fn russh_error(label: &str, error: russh::Error) -> Error {
    use russh::Error as E;
    match error {
        E::KeepaliveTimeout => Error::connect(format!(
            "{label}: the server stopped answering keepalives (link stalled or host down)"
        ))
        .with_hint("re-run the same command to resume; ServerAliveInterval/ServerAliveCountMax set how fast this is noticed"),
        E::InactivityTimeout | E::ConnectionTimeout => Error::connect(format!("{label}: connection timed out")),
        E::HUP | E::Disconnect | E::IO(_) | E::SendError | E::RecvError => {
            Error::connect(format!("{label}: connection lost: {error}"))
                .with_hint("re-run the same command to resume")
        }
        E::NoCommonAlgo { .. } => Error::connect(format!("{label}: no common SSH algorithm: {error}")).transient(false),
        E::UnknownKey => Error::host_key(format!("{label}: host key refused")),
        other => Error::connect(format!("{label}: SSH protocol error: {other}")),
    }
}

impl Connection {
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn config(&self) -> &Arc<HostConfig> {
        &self.config
    }

    pub fn auth_method(&self) -> &str {
        &self.authenticated.method
    }

    pub fn auth_summary(&self) -> &str {
        &self.authenticated.summary
    }

    /// How the connection logged in, and whether the person typed answers for it.
    pub fn authenticated(&self) -> &Authenticated {
        &self.authenticated
    }

    pub fn host_key(&self) -> &HostKeyVerdict {
        &self.host_key
    }

    pub fn host_key_fingerprint(&self) -> &str {
        &self.host_key_fingerprint
    }

    pub fn is_closed(&self) -> bool {
        self.link.is_closed()
    }

    /// The SSH handle of a native connection (a jump host's, to forward through).
    fn native_handle(&self) -> Result<&Handle<ClientHandler>> {
        match &*self.link {
            Link::Native { handle, .. } => Ok(handle),
            Link::System(_) => Err(Error::new(
                crate::ErrorKind::Internal,
                format!(
                    "{}: a system ssh connection used as a jump host",
                    self.label
                ),
            )),
        }
    }

    /// The link's round trip, timed on SSH global requests (`keepalive@openssh.com`, which
    /// every server answers, if only to refuse it): None where the system ssh carries the
    /// connection, or when an answer does not come within [`ROUND_TRIP_WAIT`].
    ///
    /// The shorter of two, one after the other: right after a login the server may still be
    /// busy with it (PAM sessions, a slow directory service) and answer the first late, which
    /// would make a near host look far.
    pub async fn round_trip(&self) -> Option<Duration> {
        let Link::Native { handle, .. } = &*self.link else {
            return None;
        };
        let mut shortest: Option<Duration> = None;
        for _ in 0..2 {
            let started = tokio::time::Instant::now();
            match tokio::time::timeout(ROUND_TRIP_WAIT, handle.send_ping()).await {
                // A connection that closed meanwhile answers at once, and tells nothing.
                Ok(Ok(())) if !self.is_closed() => {
                    let took = started.elapsed();
                    shortest = Some(shortest.map_or(took, |shortest| shortest.min(took)));
                }
                _ => return None,
            }
        }
        shortest
    }

    /// Whether the system ssh carries this connection.
    pub fn is_system(&self) -> bool {
        matches!(&*self.link, Link::System(_))
    }

    /// Opens a session channel, bounded in time. A refusal is tried again after each of
    /// [`CHANNEL_REFUSED_WAITS`], then is an error marked [`ChannelRefused`]: on a host that
    /// allows one session per connection, the caller's other channel is still open.
    pub async fn open_session(&self) -> Result<Channel> {
        let handle = match &*self.link {
            Link::Native { handle, .. } => handle,
            // A process started by the request that follows; ssh opens its channel then.
            Link::System(host) => return Ok(Channel::System(host.channel())),
        };
        open_refused_again(&CHANNEL_REFUSED_WAITS, || self.open_session_once(handle))
            .await
            .map(Channel::Native)
    }

    async fn open_session_once(
        &self,
        handle: &Handle<ClientHandler>,
    ) -> Result<russh::Channel<client::Msg>> {
        match tokio::time::timeout(CHANNEL_OPEN_TIMEOUT, handle.channel_open_session()).await {
            Err(_) => Err(Error::connect(format!(
                "{}: the server did not open a channel",
                self.label
            ))),
            Ok(Err(russh::Error::ChannelOpenFailure(reason))) => Err(Error::connect(format!(
                "{}: the server refused to open another channel on this connection ({})",
                self.label,
                refusal_reason(&reason)
            ))
            .with_hint("the host may allow only one session per connection (sshd MaxSessions 1) or none for this login; xfer doctor ALIAS tells what the login allows")
            .with_source(ChannelRefused)),
            Ok(Err(error)) => Err(russh_error(&self.label, error)),
            Ok(Ok(channel)) => Ok(channel),
        }
    }

    /// Ends the session politely, unless other connections of the run share it; errors are
    /// irrelevant at this point.
    pub async fn close(self) {
        if Arc::strong_count(&self.link) > 1 {
            return;
        }
        if let Link::Native { handle, .. } = &*self.link {
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
        }
    }
}

/// The russh callbacks: host key checking, and nothing else.
pub struct ClientHandler {
    config: Arc<HostConfig>,
    verdict: Arc<Mutex<Option<Result<HostKeyVerdict>>>>,
    fingerprint: Arc<Mutex<String>>,
    interaction: Interaction,
    label: String,
}

impl client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // A certificate is kept whole: it is checked against the @cert-authority lines.
        let presented = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(certificate) => {
                PublicKey::new(KeyData::Certificate(Box::new(certificate.clone())), "")
            }
        };
        if let Ok(mut fingerprint) = self.fingerprint.lock() {
            *fingerprint = known_hosts::fingerprint(&plain_key(&presented));
        }
        let outcome = verify_host_key(&self.config, &presented, self.interaction, &self.label);
        let accepted = matches!(outcome, Ok(ref v) if *v != HostKeyVerdict::Refused);
        if let Ok(mut verdict) = self.verdict.lock() {
            *verdict = Some(outcome);
        }
        Ok(accepted)
    }
}

/// The key inside a certificate, or the key itself.
fn plain_key(key: &PublicKey) -> PublicKey {
    match key.key_data() {
        KeyData::Certificate(certificate) => PublicKey::new(certificate.public_key().clone(), ""),
        _ => key.clone(),
    }
}

/// Decides whether to trust a server's host key (or host certificate), following
/// StrictHostKeyChecking.
pub fn verify_host_key(
    config: &HostConfig,
    presented: &PublicKey,
    interaction: Interaction,
    label: &str,
) -> Result<HostKeyVerdict> {
    let files: Vec<PathBuf> = config
        .user_known_hosts_files
        .iter()
        .chain(config.global_known_hosts_files.iter())
        .cloned()
        .collect();
    // HostKeyAlias replaces host and port here, as in ssh: keys are looked up and recorded
    // under the alias only.
    let lookup = known_hosts::HostKeyLookup::new(
        &config.hostname,
        config.port,
        config.host_key_alias.as_deref(),
    );
    let name = lookup.name.clone();
    let key = plain_key(presented);
    let fingerprint = known_hosts::fingerprint(&key);
    let key_type = key.algorithm().as_str().to_string();
    // Advice repeats the -F, -p, -i, -J and -o that reached this host, so it can be pasted.
    let forget = config.advice("forget-host", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let checked = known_hosts::check_host(&files, &lookup, presented, now)?;
    // Why the server's certificate did not settle it, for the messages about its plain key.
    let certificate_note = checked
        .certificate_refusal
        .as_ref()
        .map(|refusal| format!("; {refusal}"))
        .unwrap_or_default();
    match checked.status {
        HostKeyStatus::Known { file, line } => Ok(HostKeyVerdict::Known { file, line }),
        HostKeyStatus::Certified { file, line } => Ok(HostKeyVerdict::Certified { file, line }),
        HostKeyStatus::Revoked { file, line } => Err(Error::host_key(format!(
            "{label}: the host key {fingerprint} is marked @revoked in {}:{line}",
            file.display()
        ))
        .with_hint("this key must not be trusted; ask the host's administrator")),
        HostKeyStatus::Changed {
            file,
            line,
            old_fingerprint,
            key_type: old_type,
        } => Err(Error::host_key(format!(
            "{label}: HOST KEY CHANGED for {name}. {}:{line} holds {old_type} key {old_fingerprint}, the server now shows {key_type} key {fingerprint}. \
             Someone could be intercepting the connection, or the machine was re-created{certificate_note}",
            file.display()
        ))
        .with_hint(format!(
            "if the machine was re-created (a new rental box on the same address), forget the old key with: {forget}"
        ))),
        HostKeyStatus::Unknown => {
            // A host on file with keys of other types showing a key we have never seen is
            // what an interceptor without the real key looks like: never learn it silently.
            let other_types = known_hosts::known_key_algorithms(&files, &name)?;
            if !other_types.is_empty() {
                let names: Vec<&str> = other_types.iter().map(|a| a.as_str()).collect();
                return Err(Error::host_key(format!(
                    "{label}: {name} is on file with {} key(s), but the server now shows a {key_type} key {fingerprint} instead{certificate_note}",
                    names.join(", ")
                ))
                .with_hint(format!(
                    "if the machine was re-created, forget the old keys with: {forget}"
                )));
            }
            let record_file = config.user_known_hosts_files.first().cloned();
            let record = |file: Option<PathBuf>| -> Result<HostKeyVerdict> {
                if let Some(refusal) = &checked.certificate_refusal {
                    // ssh too records the plain key after saying why the certificate failed.
                    tracing::warn!("{label}: {refusal}");
                }
                match file {
                    Some(file) => {
                        known_hosts::add_hashed(&file, &name, &key)?;
                        tracing::info!("{label}: recorded host key {fingerprint} in {}", file.display());
                        Ok(HostKeyVerdict::Learned { file })
                    }
                    None => Ok(HostKeyVerdict::AcceptedUnrecorded),
                }
            };
            let accept_hint = format!(
                "if {fingerprint} is the key you expect, record it with: {}",
                config.advice("doctor", &["-o", "StrictHostKeyChecking=accept-new"])
            );
            match config.strict_host_key_checking {
                StrictHostKeyChecking::AcceptNew | StrictHostKeyChecking::No => record(record_file),
                StrictHostKeyChecking::Yes => Err(Error::host_key(format!(
                    "{label}: host key for {name} is not known ({key_type} {fingerprint}) and StrictHostKeyChecking is yes{certificate_note}"
                ))
                .with_hint(accept_hint)),
                StrictHostKeyChecking::Ask => {
                    if interaction == Interaction::Batch {
                        let why = if config.batch_mode {
                            "BatchMode is yes, so xfer does not ask"
                        } else {
                            "there is no terminal to confirm it"
                        };
                        return Err(Error::host_key(format!(
                            "{label}: host key for {name} is not known ({key_type} {fingerprint}) and {why}{certificate_note}"
                        ))
                        .with_hint(accept_hint));
                    }
                    if ask_to_trust(&name, &key_type, &fingerprint) {
                        record(record_file)
                    } else {
                        Err(Error::host_key(format!("{label}: host key not accepted")).transient(false))
                    }
                }
            }
        }
    }
}

/// Asks on the terminal, as ssh does; only an explicit "yes" or the fingerprint itself accepts.
fn ask_to_trust(name: &str, key_type: &str, fingerprint: &str) -> bool {
    let Ok(mut tty) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    else {
        return false;
    };
    let question = format!(
        "The authenticity of host '{name}' can't be established.\n{key_type} key fingerprint is {fingerprint}.\n\
         Are you sure you want to continue connecting (yes/no/[fingerprint])? "
    );
    for _ in 0..3 {
        if tty.write_all(question.as_bytes()).is_err() {
            return false;
        }
        let mut answer = String::new();
        let mut reader = std::io::BufReader::new(&tty);
        if std::io::BufRead::read_line(&mut reader, &mut answer).is_err() {
            return false;
        }
        let answer = answer.trim();
        match answer.to_ascii_lowercase().as_str() {
            "yes" => return true,
            "no" | "" => return false,
            _ if answer == fingerprint => return true,
            _ => {
                let _ = tty.write_all(b"Please type 'yes', 'no' or the fingerprint: ");
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::time::Instant;

    fn refused() -> Error {
        Error::connect("h: the server refused to open another channel on this connection")
            .with_source(ChannelRefused)
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_channel_is_opened_again_after_short_waits() {
        let tries = AtomicU32::new(0);
        let started = Instant::now();
        let opened = open_refused_again(&CHANNEL_REFUSED_WAITS, || {
            let refuse = tries.fetch_add(1, Ordering::SeqCst) < 2;
            async move { if refuse { Err(refused()) } else { Ok(7) } }
        })
        .await;
        assert_eq!(opened.ok(), Some(7));
        assert_eq!(tries.load(Ordering::SeqCst), 3);
        assert_eq!(
            started.elapsed(),
            CHANNEL_REFUSED_WAITS[0] + CHANNEL_REFUSED_WAITS[1]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_channel_refused_every_time_is_an_error_within_the_bound() {
        let tries = AtomicU32::new(0);
        let started = Instant::now();
        let opened: Result<()> = open_refused_again(&CHANNEL_REFUSED_WAITS, || {
            tries.fetch_add(1, Ordering::SeqCst);
            async { Err(refused()) }
        })
        .await;
        assert!(opened.is_err_and(|error| channel_refused(&error)));
        assert_eq!(
            tries.load(Ordering::SeqCst) as usize,
            CHANNEL_REFUSED_WAITS.len() + 1
        );
        assert_eq!(
            started.elapsed(),
            CHANNEL_REFUSED_WAITS.iter().sum::<Duration>()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn other_channel_errors_are_not_tried_again() {
        let tries = AtomicU32::new(0);
        let opened: Result<()> = open_refused_again(&CHANNEL_REFUSED_WAITS, || {
            tries.fetch_add(1, Ordering::SeqCst);
            async { Err(Error::connect("h: connection lost")) }
        })
        .await;
        assert!(opened.is_err_and(|error| !channel_refused(&error)));
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_reset_or_eof_during_the_handshake_is_a_close_before_login() {
        let io = |kind| russh::Error::IO(std::io::Error::from(kind));
        assert!(closed_during_handshake(&io(
            std::io::ErrorKind::ConnectionReset
        )));
        assert!(closed_during_handshake(&io(
            std::io::ErrorKind::UnexpectedEof
        )));
        assert!(closed_during_handshake(&russh::Error::Disconnect));
        assert!(!closed_during_handshake(&io(
            std::io::ErrorKind::ConnectionRefused
        )));
        assert!(!closed_during_handshake(&russh::Error::KeepaliveTimeout));
        assert!(!closed_during_handshake(&russh::Error::UnknownKey));
    }

    #[test]
    fn the_marks_survive_as_sources_and_add_no_text() {
        let error = Error::connect("h: closed").with_source(ClosedBeforeLogin);
        assert!(closed_before_login(&error));
        assert!(!channel_refused(&error));
        assert_eq!(error.to_string(), "h: closed");
        assert!(channel_refused(&refused()));
        assert_eq!(
            refusal_reason(&russh::ChannelOpenFailure::ConnectFailed),
            "open failed"
        );
    }
}
