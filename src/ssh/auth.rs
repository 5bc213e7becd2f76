//! Authentication in OpenSSH's order: public keys, keyboard-interactive prompts and passwords.
//!
//! Like ssh, xfer first asks the server which methods it takes (a `none` request), then tries
//! them in the order of `PreferredAuthentications` (ssh's own when unset: public keys, then
//! keyboard-interactive, then a password), skipping those the server does not take, those the
//! configuration turns off (`PasswordAuthentication`, `KbdInteractiveAuthentication`) and those
//! xfer cannot do itself (`gssapi-with-mic`, `hostbased`). When the server accepts a method but
//! wants another one as well (sshd's `AuthenticationMethods publickey,keyboard-interactive`: a
//! "partial success"), the round goes on from the top of the order among the methods the server
//! then names, as ssh does.
//!
//! Public keys are offered in ssh's order, each once per round: certificates named by
//! `CertificateFile`, certificates found beside identity files (`id-cert.pub`), agent keys that
//! match an identity file, the agent's other keys (unless `IdentitiesOnly`), and last the
//! identity files that the agent does not hold. A password, and the answers to the server's
//! keyboard-interactive prompts, are asked on the terminal through the run's [`Answerer`], up to
//! `NumberOfPasswordPrompts` times each; never without a terminal or under `BatchMode`. Every
//! attempt is recorded (never what was typed), so that a refusal can say exactly what was
//! tried and what to do.
//!
//! A [`KeyStore`] holds what the connections of one run share: the keys decrypted so far, so a
//! passphrase is asked for once, and the turn at the terminal, so that the questions of
//! connections authenticating at the same time never interleave.

use crate::error::{Error, Result};
use crate::ssh::config::HostConfig;
use crate::ssh::prompt::{Answerer, Echo, Terminal};
use crate::terminal::{printable, printable_cut};
use russh::client::{AuthResult, Handle, Handler, KeyboardInteractiveAuthResponse, Prompt};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{Algorithm, Certificate, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh::{MethodKind, MethodSet};
use secrecy::{ExposeSecret, SecretString};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bound on each wait for the server during authentication; a server that stops
/// answering mid-auth must not hang xfer. It never covers the time a person takes to type.
const AUTH_STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound on a signature by a security key in the agent: the agent waits for a touch,
/// which is a person's time (ssh-agent itself waits without end).
const SECURITY_KEY_STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// Largest key or certificate file read; real ones are a few KiB.
const MAX_KEY_FILE_SIZE: u64 = 1 << 20;

/// Most keyboard-interactive requests answered in one exchange. PAM asks its few questions (a
/// password, a one-time code) one request each, with a request without prompts for its notices;
/// a server asking on and on is broken or hostile, and must not keep xfer there.
const MAX_INFO_REQUESTS: usize = 16;

/// Most prompts in one keyboard-interactive request; real ones have one or two.
const MAX_PROMPTS: usize = 32;

/// Most methods accepted in part in one round: sshd's AuthenticationMethods lists two or three;
/// a server that always wants one more is not going to let anyone in.
const MAX_PARTIAL_SUCCESSES: usize = 8;

/// How much of a server's keyboard-interactive text is shown: lines of a name or instruction,
/// and characters of one such line or of a prompt. Enough for any notice a person reads.
const MAX_SHOWN_LINES: usize = 24;
const MAX_SHOWN_CHARACTERS: usize = 300;

/// Whether xfer may ask the person at the terminal for passphrases, passwords, answers and
/// confirmations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    /// A controlling terminal is available and BatchMode is off.
    Terminal,
    /// No prompts: a key that needs a passphrase is skipped with a message, and so are
    /// passwords and keyboard-interactive.
    Batch,
}

impl Interaction {
    /// A terminal is usable when the process has a controlling terminal it can open.
    pub fn detect(batch_mode: bool) -> Interaction {
        if !batch_mode && std::fs::File::open("/dev/tty").is_ok() {
            Interaction::Terminal
        } else {
            Interaction::Batch
        }
    }
}

/// What the connections of one run share for authentication: keys decrypted so far, by file,
/// so every connection after the first authenticates without asking again; and the terminal,
/// which one connection at a time may ask on.
pub struct KeyStore {
    keys: Mutex<HashMap<PathBuf, Arc<PrivateKey>>>,
    answerer: Arc<dyn Answerer>,
    /// Held while a connection asks (from its first question to the server's verdict on the
    /// answers), so that connections authenticating at once ask one after the other.
    turn: tokio::sync::Mutex<()>,
}

impl Default for KeyStore {
    fn default() -> Self {
        KeyStore::with_answerer(Arc::new(Terminal))
    }
}

impl KeyStore {
    /// A store whose questions go to `answerer` instead of the terminal.
    pub fn with_answerer(answerer: Arc<dyn Answerer>) -> Self {
        KeyStore {
            keys: Mutex::new(HashMap::new()),
            answerer,
            turn: tokio::sync::Mutex::new(()),
        }
    }

    fn get(&self, path: &Path) -> Option<Arc<PrivateKey>> {
        self.keys.lock().ok()?.get(path).cloned()
    }

    fn insert(&self, path: &Path, key: Arc<PrivateKey>) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.insert(path.to_path_buf(), key);
        }
    }

    /// Waits until no other connection is asking; the terminal is this one's until the guard
    /// is dropped.
    async fn take_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.turn.lock().await
    }
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyStore(..)")
    }
}

/// One thing tried with the server (a key, a certificate, a method), or not tried and why, for
/// the error message and `-v` logs. Never holds what was typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub what: String,
    pub outcome: String,
}

/// How the connection was authenticated, for `xfer doctor` and for deciding whether another
/// connection to the host would have to ask the person again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The whole story: each method the server accepted, in order, joined by " + "; for a key
    /// its source, algorithm and fingerprint ("publickey (key file ... (ssh-ed25519 SHA256:...))
    /// + keyboard-interactive").
    pub method: String,
    /// A few words for a table column, joined the same way: "agent", "key id_ed25519",
    /// "cert id-cert.pub", "password", "key id_ed25519 + keyboard-interactive".
    pub summary: String,
    /// Whether the person typed answers for this login (a password, or answers to
    /// keyboard-interactive prompts such as a one-time code): another connection to the host
    /// would ask them again, so such a login is made once per run and shared (see `connect`).
    pub interactive: bool,
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// An identity file with what could be learned of it without decrypting it.
struct IdentityFile {
    path: PathBuf,
    public: Option<PublicKey>,
    explicit: bool,
}

fn describe_public(key: &PublicKey) -> String {
    format!(
        "{} {}",
        key.algorithm().as_str(),
        key.fingerprint(HashAlg::Sha256)
    )
}

/// Whether `key` is a security key's (FIDO: `sk-ssh-ed25519@openssh.com`,
/// `sk-ecdsa-sha2-nistp256@openssh.com`), which only its token can sign with.
fn is_security_key(key: &PublicKey) -> bool {
    key.key_data().is_sk_ed25519() || key.key_data().is_sk_ecdsa_p256()
}

fn read_small(path: &Path) -> std::io::Result<String> {
    let metadata = std::fs::metadata(path)?;
    if metadata.len() > MAX_KEY_FILE_SIZE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "file is too large to be a key",
        ));
    }
    std::fs::read_to_string(path)
}

fn read_public_key(path: &Path) -> Option<PublicKey> {
    let text = read_small(path).ok()?;
    PublicKey::from_openssh(text.trim()).ok()
}

fn read_certificate(path: &Path) -> Option<Certificate> {
    let text = read_small(path).ok()?;
    Certificate::from_openssh(text.trim()).ok()
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut text = path.as_os_str().to_os_string();
    text.push(suffix);
    PathBuf::from(text)
}

/// The public half of an identity file: from `path.pub`, or from the private key file itself
/// (OpenSSH's format keeps the public key in clear even when the private part is encrypted).
fn identity_public_key(path: &Path) -> Option<PublicKey> {
    if let Some(key) = read_public_key(&with_suffix(path, ".pub")) {
        return Some(key);
    }
    let text = read_small(path).ok()?;
    PrivateKey::from_openssh(text.trim())
        .ok()
        .map(|key| key.public_key().clone())
}

/// ssh refuses a private key that others can read, and so do we: someone may have copied it.
fn check_private_key_permissions(path: &Path) -> std::result::Result<(), String> {
    let metadata = std::fs::metadata(path).map_err(|error| error.to_string())?;
    let owned_by_us = metadata.uid() == nix::unistd::getuid().as_raw();
    if owned_by_us && metadata.mode() & 0o077 != 0 {
        return Err(format!(
            "refused: permissions {:04o} are too open (readable by others); fix with: chmod 600 {}",
            metadata.mode() & 0o777,
            path.display()
        ));
    }
    Ok(())
}

/// Runs the authentication of one connection.
pub struct Authenticator<'a> {
    pub config: &'a HostConfig,
    pub keys: &'a KeyStore,
    pub interaction: Interaction,
    /// Where to reach the agent (already resolved from IdentityAgent / SSH_AUTH_SOCK).
    pub agent_socket: Option<PathBuf>,
}

impl Authenticator<'_> {
    /// Tries the methods in ssh's order until the server accepts; the error lists everything
    /// tried and why each failed.
    pub async fn authenticate<H: Handler>(
        &self,
        handle: &mut Handle<H>,
        label: &str,
    ) -> Result<Authenticated> {
        Round::start(self, handle, label).await.run().await
    }

    async fn connect_agent(
        &self,
        attempts: &mut Vec<Attempt>,
    ) -> Option<AgentClient<tokio::net::UnixStream>> {
        let socket = self.agent_socket.as_ref()?;
        match tokio::time::timeout(AUTH_STEP_TIMEOUT, AgentClient::connect_uds(socket)).await {
            Ok(Ok(agent)) => Some(agent),
            _ => {
                attempts.push(Attempt {
                    what: format!("ssh-agent at {}", socket.display()),
                    outcome: "could not connect to the agent".into(),
                });
                None
            }
        }
    }

    /// Why this connection may not ask the person: no terminal, or BatchMode.
    fn no_asking(&self) -> &'static str {
        if self.config.batch_mode {
            "BatchMode is yes, so xfer does not ask"
        } else {
            "there is no terminal to ask"
        }
    }

    /// Loads (and if needed decrypts) a private key file, noting why when it cannot be used.
    async fn load_private_key(
        &self,
        identity: &IdentityFile,
        attempts: &mut Vec<Attempt>,
    ) -> Option<Arc<PrivateKey>> {
        let path = &identity.path;
        // A security key's file holds only a handle for its token, which xfer can ask to sign
        // through ssh-agent alone: russh, given the file, fails to sign and ends the
        // connection, and the keys after it would never be tried.
        if let Some(public) = identity.public.as_ref().filter(|key| is_security_key(key)) {
            attempts.push(Attempt {
                what: format!("key file {} ({})", path.display(), describe_public(public)),
                outcome: "skipped: a security key (FIDO) signs only on its token, which xfer reaches through ssh-agent alone: add the key to the agent, or run xfer with --ssh-command ssh".into(),
            });
            return None;
        }
        if let Some(key) = self.keys.get(path) {
            return Some(key);
        }
        let note = |attempts: &mut Vec<Attempt>, outcome: String| {
            attempts.push(Attempt {
                what: format!("key file {}", path.display()),
                outcome,
            })
        };
        if let Err(problem) = check_private_key_permissions(path) {
            tracing::warn!("{}: {problem}", path.display());
            note(attempts, problem);
            return None;
        }
        let text = match read_small(path) {
            Ok(text) => SecretString::from(text),
            Err(error) => {
                note(attempts, format!("unreadable: {error}"));
                return None;
            }
        };
        match russh::keys::decode_secret_key(text.expose_secret(), None) {
            Ok(key) => {
                let key = Arc::new(key);
                self.keys.insert(path, key.clone());
                return Some(key);
            }
            Err(russh::keys::Error::KeyIsEncrypted) => {}
            Err(error) => {
                note(attempts, format!("not a usable private key: {error}"));
                return None;
            }
        }
        if self.interaction == Interaction::Batch {
            let why = if self.config.batch_mode {
                "BatchMode is yes, so xfer does not ask for its passphrase"
            } else {
                "there is no terminal to ask for its passphrase"
            };
            note(
                attempts,
                format!(
                    "encrypted, and {why}; add it to ssh-agent first: ssh-add {}",
                    path.display()
                ),
            );
            return None;
        }
        // ssh asks as many times as NumberOfPasswordPrompts allows.
        let tries = self.config.number_of_password_prompts;
        if tries == 0 {
            note(
                attempts,
                format!(
                    "encrypted, and NumberOfPasswordPrompts is 0, so xfer does not ask for its passphrase; add it to ssh-agent first: ssh-add {}",
                    path.display()
                ),
            );
            return None;
        }
        let _turn = self.keys.take_turn().await;
        // Another connection may have decrypted it while this one waited for the terminal.
        if let Some(key) = self.keys.get(path) {
            return Some(key);
        }
        let shown_path = printable(path.display().to_string());
        for _ in 0..tries {
            let prompt = format!("Enter passphrase for key '{shown_path}': ");
            let passphrase = match self.keys.answerer.ask(&prompt, Echo::Hidden).await {
                Ok(passphrase) => passphrase,
                Err(error) => {
                    note(
                        attempts,
                        format!("encrypted, and the terminal could not be read: {error}"),
                    );
                    return None;
                }
            };
            if passphrase.expose_secret().is_empty() {
                break;
            }
            match russh::keys::decode_secret_key(
                text.expose_secret(),
                Some(passphrase.expose_secret()),
            ) {
                Ok(key) => {
                    let key = Arc::new(key);
                    self.keys.insert(path, key.clone());
                    return Some(key);
                }
                Err(_) => {
                    let again = format!("Bad passphrase, try again for {shown_path}");
                    if let Err(error) = self.keys.answerer.show(&again).await {
                        tracing::debug!(%error, "could not write to the terminal");
                    }
                }
            }
        }
        note(
            attempts,
            "encrypted, and no correct passphrase was given".into(),
        );
        None
    }
}

/// The methods xfer does itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    PublicKey,
    KeyboardInteractive,
    Password,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::PublicKey => "publickey",
            Method::KeyboardInteractive => "keyboard-interactive",
            Method::Password => "password",
        }
    }

    fn from_name(name: &str) -> Option<Method> {
        [
            Method::PublicKey,
            Method::KeyboardInteractive,
            Method::Password,
        ]
        .into_iter()
        .find(|method| method.name() == name)
    }

    /// Whether the configuration lets xfer use it (ssh has no switch xfer reads for keys).
    fn allowed_by(self, config: &HostConfig) -> bool {
        match self {
            Method::PublicKey => true,
            Method::KeyboardInteractive => config.keyboard_interactive_authentication,
            Method::Password => config.password_authentication,
        }
    }
}

/// The next method to try, ssh's `authmethod_get`: from `position` on in `order` (moving it
/// past the method returned), the first the server takes, the configuration allows, xfer
/// does itself and has not given up.
fn next_method(
    order: &[&str],
    position: &mut usize,
    server: &MethodSet,
    config: &HostConfig,
    given_up: &[Method],
) -> Option<Method> {
    while let Some(name) = order.get(*position) {
        *position += 1;
        let Some(method) = Method::from_name(name) else {
            continue;
        };
        if server_takes(server, name) && method.allowed_by(config) && !given_up.contains(&method) {
            return Some(method);
        }
    }
    None
}

fn server_takes(server: &MethodSet, name: &str) -> bool {
    server.iter().any(|kind| <&str>::from(kind) == name)
}

fn method_names(methods: &MethodSet) -> Vec<&'static str> {
    methods
        .iter()
        .filter(|kind| **kind != MethodKind::None)
        .map(<&str>::from)
        .collect()
}

/// What came of one method's turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Logged in.
    Accepted,
    /// Accepted, and the server wants another method as well (partial success).
    Partial,
    /// Not accepted (or nothing to offer); the round goes on with the next method.
    Refused,
}

/// The server's verdict on one authentication request.
enum Verdict {
    Accepted,
    Partial,
    Refused,
}

/// A key to offer, in ssh's order.
enum Offer {
    /// A certificate, signed by the agent when it holds the key, else by the identity file's key.
    Certificate {
        path: PathBuf,
        certificate: Certificate,
    },
    AgentKey(AgentIdentity),
    /// An identity file, by its index in the round's identities.
    IdentityFile(usize),
}

/// One server reply to an authentication request, within [`AUTH_STEP_TIMEOUT`].
type Reply<T, E> = std::result::Result<std::result::Result<T, E>, tokio::time::error::Elapsed>;

/// How one keyboard-interactive exchange went: the server's verdict, how many requests it
/// sent, and whether the person answered prompts.
struct Exchange {
    verdict: Verdict,
    requests: usize,
    answered: bool,
}

/// What a method the server accepted adds to [`Authenticated`].
struct Success {
    method: String,
    summary: String,
}

/// One connection's authentication under way: what there is to offer, what was tried, and
/// what the server said it accepts.
struct Round<'r, 'a, H: Handler> {
    authenticator: &'r Authenticator<'a>,
    handle: &'r mut Handle<H>,
    label: &'r str,
    user: String,
    /// The signature algorithm for RSA keys, from the server's `server-sig-algs`.
    rsa_hash: Option<HashAlg>,
    identities: Vec<IdentityFile>,
    agent: Option<AgentClient<tokio::net::UnixStream>>,
    agent_keys: Vec<AgentIdentity>,
    /// The keys not offered yet: each key is offered once per round, also after a partial
    /// success, as ssh does.
    offers: VecDeque<Offer>,
    attempts: Vec<Attempt>,
    /// The methods the server said can continue, after its last reply.
    server_methods: Option<MethodSet>,
    /// The methods the server accepted so far, in order.
    accepted: Vec<Success>,
    /// Methods tried to the end (or that cannot be tried): not taken up again after a partial
    /// success.
    given_up: Vec<Method>,
    keyboard_interactive_tries: u32,
    password_tries: u32,
    /// Whether an accepted method needed answers typed by the person.
    interactive: bool,
    /// A password or keyboard-interactive answers were wanted, and there was no one to ask.
    asking_blocked: bool,
    /// The server refused a password or keyboard-interactive answers that were typed.
    answers_refused: bool,
}

impl<'r, 'a, H: Handler> Round<'r, 'a, H> {
    /// Learns what there is to offer: the server's RSA signature algorithm, the identity
    /// files' public keys, and the agent's keys.
    async fn start(
        authenticator: &'r Authenticator<'a>,
        handle: &'r mut Handle<H>,
        label: &'r str,
    ) -> Self {
        let config = authenticator.config;
        let rsa_hash =
            match tokio::time::timeout(AUTH_STEP_TIMEOUT, handle.best_supported_rsa_hash()).await {
                Ok(Ok(Some(hash))) => hash,
                // No server-sig-algs: OpenSSH servers since 7.2 take rsa-sha2-256.
                _ => Some(HashAlg::Sha256),
            };
        let identities: Vec<IdentityFile> = config
            .identity_files
            .iter()
            .map(|path| IdentityFile {
                path: path.clone(),
                public: identity_public_key(path),
                explicit: !config.identity_files_are_defaults,
            })
            .collect();
        let mut attempts = Vec::new();
        let mut agent = authenticator.connect_agent(&mut attempts).await;
        let agent_keys = match agent.as_mut() {
            Some(agent) => {
                match tokio::time::timeout(AUTH_STEP_TIMEOUT, agent.request_identities()).await {
                    Ok(Ok(keys)) => keys,
                    _ => {
                        attempts.push(Attempt {
                            what: "ssh-agent".into(),
                            outcome: "did not list its keys".into(),
                        });
                        Vec::new()
                    }
                }
            }
            None => Vec::new(),
        };
        let offers = key_offers(config, &identities, &agent_keys);
        Round {
            authenticator,
            handle,
            label,
            user: config.user.clone(),
            rsa_hash,
            identities,
            agent,
            agent_keys,
            offers,
            attempts,
            server_methods: None,
            accepted: Vec::new(),
            given_up: Vec::new(),
            keyboard_interactive_tries: 0,
            password_tries: 0,
            interactive: false,
            asking_blocked: false,
            answers_refused: false,
        }
    }

    /// Asks which methods the server takes, then tries them in the configured order.
    async fn run(mut self) -> Result<Authenticated> {
        if self.ask_methods().await? {
            return Ok(self.authenticated());
        }
        let config = self.authenticator.config;
        let order = config.authentication_order();
        let mut position = 0;
        let mut partial_successes = 0;
        loop {
            let server = self.server_methods.clone().unwrap_or_else(MethodSet::empty);
            let Some(method) = next_method(&order, &mut position, &server, config, &self.given_up)
            else {
                break;
            };
            tracing::debug!(label = %self.label, method = method.name(), "trying");
            let step = match method {
                Method::PublicKey => self.offer_keys().await?,
                Method::KeyboardInteractive => self.keyboard_interactive().await?,
                Method::Password => self.password().await?,
            };
            match step {
                Step::Accepted => return Ok(self.authenticated()),
                // The server names what else it wants: from the top of the order, as ssh.
                Step::Partial => {
                    partial_successes += 1;
                    if partial_successes > MAX_PARTIAL_SUCCESSES {
                        self.note(
                            method.name(),
                            format!("given up: the server accepted {partial_successes} methods in part and still wants more"),
                        );
                        break;
                    }
                    position = 0;
                }
                Step::Refused => {}
            }
        }
        Err(self.refusal())
    }

    /// The `none` request ssh starts with: its refusal names the methods the server takes.
    /// True when the server lets the user in without any.
    async fn ask_methods(&mut self) -> Result<bool> {
        let reply = tokio::time::timeout(
            AUTH_STEP_TIMEOUT,
            self.handle.authenticate_none(self.user.clone()),
        )
        .await;
        match self.server_reply(reply)? {
            AuthResult::Success => {
                self.accepted.push(Success {
                    method: "none (the server asks for nothing)".into(),
                    summary: "none".into(),
                });
                Ok(true)
            }
            AuthResult::Failure {
                remaining_methods, ..
            } => {
                tracing::debug!(label = %self.label, methods = ?method_names(&remaining_methods), "the server takes");
                self.server_methods = Some(remaining_methods);
                Ok(false)
            }
        }
    }

    fn authenticated(&self) -> Authenticated {
        let join = |part: fn(&Success) -> &str| {
            self.accepted
                .iter()
                .map(part)
                .collect::<Vec<_>>()
                .join(" + ")
        };
        Authenticated {
            method: join(|success| &success.method),
            summary: join(|success| &success.summary),
            interactive: self.interactive,
        }
    }

    /// The server's reply; an error when the connection is gone or the server stopped
    /// answering.
    fn server_reply<T>(&self, reply: Reply<T, russh::Error>) -> Result<T> {
        match reply {
            Err(_) => Err(self.stopped_answering()),
            Ok(Err(error)) => Err(Error::connect(format!(
                "{}: the connection ended during authentication: {error}",
                self.label
            ))),
            Ok(Ok(reply)) => Ok(reply),
        }
    }

    fn stopped_answering(&self) -> Error {
        Error::connect(format!(
            "{}: the server stopped answering during authentication",
            self.label
        ))
    }

    fn note(&mut self, what: impl Into<String>, outcome: impl Into<String>) {
        self.attempts.push(Attempt {
            what: what.into(),
            outcome: outcome.into(),
        });
    }

    /// Records what the server said of a method, and what the round does next.
    fn conclude(&mut self, verdict: Verdict, method: String, summary: String) -> Step {
        match verdict {
            Verdict::Accepted => {
                self.accepted.push(Success { method, summary });
                Step::Accepted
            }
            Verdict::Partial => {
                self.accepted.push(Success { method, summary });
                Step::Partial
            }
            Verdict::Refused => Step::Refused,
        }
    }

    /// Takes the server's methods from a refusal; a partial success is noted among the
    /// attempts, since the round may still fail on what the server asks next.
    fn refused_with(&mut self, remaining: MethodSet, partial: bool, what: &str) -> Verdict {
        let names = method_names(&remaining).join(", ");
        self.server_methods = Some(remaining);
        if partial {
            self.note(
                what,
                format!("accepted, and the server then asks for more: {names}"),
            );
            Verdict::Partial
        } else {
            Verdict::Refused
        }
    }

    // -----------------------------------------------------------------------------------------
    // Public keys.

    /// Offers the keys not offered yet, in order, until the server accepts one.
    async fn offer_keys(&mut self) -> Result<Step> {
        while let Some(offer) = self.offers.pop_front() {
            let step = match offer {
                Offer::Certificate { path, certificate } => {
                    self.offer_certificate(path, certificate).await?
                }
                Offer::AgentKey(identity) => self.offer_agent_key(identity).await?,
                Offer::IdentityFile(index) => self.offer_identity_file(index).await?,
            };
            if step != Step::Refused {
                return Ok(step);
            }
        }
        Ok(Step::Refused)
    }

    /// 1 and 2: a certificate, signed by the agent when it holds the key, else by the identity
    /// file's key.
    async fn offer_certificate(&mut self, path: PathBuf, certificate: Certificate) -> Result<Step> {
        let public = PublicKey::new(certificate.public_key().clone(), "");
        let description = format!(
            "certificate {} ({})",
            path.display(),
            describe_public(&public)
        );
        let agent_holds_it = agent_has(&self.agent_keys, &public);
        let verdict = if let (Some(agent), true) = (self.agent.as_mut(), agent_holds_it) {
            let hash = hash_for(self.rsa_hash, &public);
            let reply = tokio::time::timeout(
                AUTH_STEP_TIMEOUT,
                self.handle.authenticate_certificate_with(
                    self.user.clone(),
                    certificate,
                    hash,
                    agent,
                ),
            )
            .await;
            self.settle(reply, &description)?
        } else if let Some(index) = identity_index(&self.identities, &public) {
            let Some(key) = self
                .authenticator
                .load_private_key(&self.identities[index], &mut self.attempts)
                .await
            else {
                return Ok(Step::Refused);
            };
            let reply = tokio::time::timeout(
                AUTH_STEP_TIMEOUT,
                self.handle
                    .authenticate_openssh_cert(self.user.clone(), key, certificate),
            )
            .await;
            self.settle(reply, &description)?
        } else {
            self.note(
                description,
                "skipped: no private key for it in the agent or the identity files",
            );
            return Ok(Step::Refused);
        };
        Ok(self.conclude(
            verdict,
            format!("publickey ({description})"),
            format!("cert {}", file_name(&path)),
        ))
    }

    /// 3 and 4: a key the agent holds.
    async fn offer_agent_key(&mut self, identity: AgentIdentity) -> Result<Step> {
        let Some(agent) = self.agent.as_mut() else {
            return Ok(Step::Refused);
        };
        let public = identity.public_key().into_owned();
        let description = format!("agent key {}", describe_public(&public));
        let hash = hash_for(self.rsa_hash, &public);
        // A security key signs once touched: the wait is a person's, and they are told.
        let security_key = matches!(
            public.algorithm(),
            Algorithm::SkEd25519 | Algorithm::SkEcdsaSha2NistP256
        );
        let step = if security_key {
            if self.authenticator.interaction == Interaction::Terminal {
                let notice = format!(
                    "Confirm user presence for key {}: touch the security key",
                    describe_public(&public)
                );
                let _ = self.authenticator.keys.answerer.show(&notice).await;
            }
            SECURITY_KEY_STEP_TIMEOUT
        } else {
            AUTH_STEP_TIMEOUT
        };
        let reply = match identity {
            AgentIdentity::PublicKey { .. } => {
                tokio::time::timeout(
                    step,
                    self.handle.authenticate_publickey_with(
                        self.user.clone(),
                        public.clone(),
                        hash,
                        agent,
                    ),
                )
                .await
            }
            AgentIdentity::Certificate { certificate, .. } => {
                tokio::time::timeout(
                    step,
                    self.handle.authenticate_certificate_with(
                        self.user.clone(),
                        certificate,
                        hash,
                        agent,
                    ),
                )
                .await
            }
        };
        let verdict = self.settle(reply, &description)?;
        Ok(self.conclude(
            verdict,
            format!("publickey ({description})"),
            "agent".into(),
        ))
    }

    /// 5: an identity file the agent does not hold, decrypted here when it must be.
    async fn offer_identity_file(&mut self, index: usize) -> Result<Step> {
        let identity = &self.identities[index];
        if !identity.path.exists() {
            if identity.explicit {
                let what = identity.path.display().to_string();
                self.note(what, "no such file");
            }
            return Ok(Step::Refused);
        }
        let Some(key) = self
            .authenticator
            .load_private_key(&self.identities[index], &mut self.attempts)
            .await
        else {
            return Ok(Step::Refused);
        };
        let path = self.identities[index].path.clone();
        let description = format!(
            "key file {} ({})",
            path.display(),
            describe_public(key.public_key())
        );
        let hash = hash_for(self.rsa_hash, key.public_key());
        let reply = tokio::time::timeout(
            AUTH_STEP_TIMEOUT,
            self.handle
                .authenticate_publickey(self.user.clone(), PrivateKeyWithHashAlg::new(key, hash)),
        )
        .await;
        let verdict = self.settle(reply, &description)?;
        Ok(self.conclude(
            verdict,
            format!("publickey ({description})"),
            format!("key {}", file_name(&path)),
        ))
    }

    /// Turns the server's reply to an offered key into its verdict, noting a refusal among
    /// the attempts; an error when the server stopped answering. A key that could not be
    /// used here (the agent would not sign) counts as refused, and is said so.
    fn settle<E: fmt::Display + SignFailure>(
        &mut self,
        reply: Reply<AuthResult, E>,
        description: &str,
    ) -> Result<Verdict> {
        match reply {
            Err(_) => return Err(self.stopped_answering()),
            Ok(Err(error)) => {
                tracing::debug!(%error, "an authentication attempt failed locally");
                if let Some(why) = error.agent_did_not_sign() {
                    // The server never saw a signature, so "refused by the server" would send
                    // the person to authorized_keys. Most often the key is a security key
                    // nobody touched in time; ssh, which can also use the token without the
                    // agent, is the other way.
                    self.note(
                        description,
                        format!(
                            "the agent did not sign ({why}); a security key (FIDO) signs only when touched: check that it is plugged in and touch it when it blinks, or run xfer with --ssh-command ssh"
                        ),
                    );
                    return Ok(Verdict::Refused);
                }
            }
            Ok(Ok(AuthResult::Success)) => return Ok(Verdict::Accepted),
            Ok(Ok(AuthResult::Failure {
                remaining_methods,
                partial_success,
            })) => {
                let verdict = self.refused_with(remaining_methods, partial_success, description);
                if let Verdict::Partial = verdict {
                    return Ok(verdict);
                }
            }
        }
        self.note(description, "refused by the server");
        Ok(Verdict::Refused)
    }

    /// Whether `method` may ask the person now: not without anyone to ask (the attempt says
    /// `asks`, why not, then `object`), and not past NumberOfPasswordPrompts tries. When it may
    /// not, it is noted and given up for the round.
    fn may_ask(&mut self, method: Method, asks: &str, object: &str, tries_so_far: u32) -> bool {
        let what = match method {
            Method::Password => "password",
            _ => "keyboard-interactive",
        };
        if self.authenticator.interaction == Interaction::Batch {
            let why = self.authenticator.no_asking();
            self.note(what, format!("{asks} {why} {object}"));
            self.asking_blocked = true;
            self.given_up.push(method);
            return false;
        }
        let tries = self.authenticator.config.number_of_password_prompts;
        if let Some(outcome) = out_of_tries(tries_so_far, tries) {
            self.note(what, outcome);
            self.given_up.push(method);
            return false;
        }
        true
    }

    // -----------------------------------------------------------------------------------------
    // Keyboard-interactive.

    /// Answers the server's keyboard-interactive requests, starting the exchange again after
    /// a refusal, up to NumberOfPasswordPrompts times. Without anyone to ask, it is not
    /// started at all (as ssh, which does not try it in batch mode): a request could not be
    /// abandoned once it has prompts, and empty answers would count as failed logins.
    async fn keyboard_interactive(&mut self) -> Result<Step> {
        const WHAT: &str = "keyboard-interactive";
        let tries_so_far = self.keyboard_interactive_tries;
        if !self.may_ask(
            Method::KeyboardInteractive,
            "the server asks for answers (keyboard-interactive), and",
            "them",
            tries_so_far,
        ) {
            return Ok(Step::Refused);
        }
        let tries = self.authenticator.config.number_of_password_prompts;
        // Taken at the first thing to show, and kept until the server's verdict.
        let mut turn = None;
        let mut answered_tries = 0;
        while self.keyboard_interactive_tries < tries {
            self.keyboard_interactive_tries += 1;
            let exchange = self.keyboard_interactive_exchange(&mut turn).await?;
            if exchange.answered {
                answered_tries += 1;
            }
            if let Verdict::Accepted | Verdict::Partial = exchange.verdict {
                // Not given up after a partial success: the server may want another
                // keyboard-interactive exchange (AuthenticationMethods naming it twice).
                self.interactive |= exchange.answered;
                return Ok(self.conclude(exchange.verdict, WHAT.into(), WHAT.into()));
            }
            // As ssh: a server that asked nothing this time will not ask on another try, and
            // one that no longer names the method has said its last word on it.
            if exchange.requests == 0 || !self.server_still_takes(WHAT) {
                break;
            }
        }
        self.given_up.push(Method::KeyboardInteractive);
        if answered_tries > 0 {
            self.answers_refused = true;
            let plural = if answered_tries == 1 { "try" } else { "tries" };
            self.note(
                WHAT,
                format!(
                    "the server refused the answers to its keyboard-interactive prompts ({answered_tries} {plural})"
                ),
            );
        } else {
            self.note(WHAT, "refused by the server without asking anything");
        }
        Ok(Step::Refused)
    }

    /// One keyboard-interactive exchange: the request that starts it, then the server's
    /// requests, each answered, until its verdict. A request that cannot be answered ends the
    /// round with an error: the server waits for the answers, so no other method can follow.
    async fn keyboard_interactive_exchange(
        &mut self,
        turn: &mut Option<tokio::sync::MutexGuard<'a, ()>>,
    ) -> Result<Exchange> {
        const WHAT: &str = "keyboard-interactive";
        let keys: &'a KeyStore = self.authenticator.keys;
        let reply = tokio::time::timeout(
            AUTH_STEP_TIMEOUT,
            self.handle
                .authenticate_keyboard_interactive_start(self.user.clone(), None),
        )
        .await;
        let mut reply = self.server_reply(reply)?;
        let mut requests = 0;
        let mut answered = false;
        loop {
            let (name, instructions, prompts) = match reply {
                KeyboardInteractiveAuthResponse::Success => {
                    let verdict = Verdict::Accepted;
                    return Ok(Exchange {
                        verdict,
                        requests,
                        answered,
                    });
                }
                KeyboardInteractiveAuthResponse::Failure {
                    remaining_methods,
                    partial_success,
                } => {
                    let verdict = self.refused_with(remaining_methods, partial_success, WHAT);
                    return Ok(Exchange {
                        verdict,
                        requests,
                        answered,
                    });
                }
                KeyboardInteractiveAuthResponse::InfoRequest {
                    name,
                    instructions,
                    prompts,
                } => (name, instructions, prompts),
            };
            requests += 1;
            if requests > MAX_INFO_REQUESTS || prompts.len() > MAX_PROMPTS {
                let excess = if prompts.len() > MAX_PROMPTS {
                    format!("{} prompts in one request", prompts.len())
                } else {
                    format!("more than {MAX_INFO_REQUESTS} requests in one exchange")
                };
                self.note(
                    WHAT,
                    format!("given up: the server sent {excess}, more than any real login asks"),
                );
                return Err(self.refusal());
            }
            tracing::debug!(label = %self.label, prompts = prompts.len(), "keyboard-interactive request");
            let answers = if prompts.is_empty() && name.is_empty() && instructions.is_empty() {
                // PAM sends these between questions; they want an empty response.
                Vec::new()
            } else {
                if turn.is_none() {
                    *turn = Some(keys.take_turn().await);
                }
                match self.answer(&name, &instructions, &prompts).await {
                    Ok(answers) => answers,
                    Err(error) => {
                        let outcome = if error.kind() == std::io::ErrorKind::UnexpectedEof {
                            "no answer was typed (end of input)".to_string()
                        } else {
                            format!("the terminal could not be read: {error}")
                        };
                        self.note(WHAT, outcome);
                        return Err(self.refusal());
                    }
                }
            };
            answered |= !prompts.is_empty();
            let responses: Vec<String> = answers
                .iter()
                .map(|answer| answer.expose_secret().to_owned())
                .collect();
            let next = tokio::time::timeout(
                AUTH_STEP_TIMEOUT,
                self.handle
                    .authenticate_keyboard_interactive_respond(responses),
            )
            .await;
            reply = self.server_reply(next)?;
        }
    }

    /// Shows one request as ssh does (its name and instruction, then each prompt after
    /// `(user@host)`), every piece of the server's text made printable, and reads the answers.
    async fn answer(
        &self,
        name: &str,
        instructions: &str,
        prompts: &[Prompt],
    ) -> std::io::Result<Vec<SecretString>> {
        let answerer = &self.authenticator.keys.answerer;
        for text in [name, instructions] {
            if let Some(shown) = shown_lines(text) {
                answerer.show(&shown).await?;
            }
        }
        let mut answers = Vec::with_capacity(prompts.len());
        for prompt in prompts {
            let shown = format!(
                "({}@{}) {}",
                printable(&self.user),
                printable(self.host_name()),
                shown_prompt(&prompt.prompt)
            );
            let echo = if prompt.echo {
                Echo::Shown
            } else {
                Echo::Hidden
            };
            answers.push(answerer.ask(&shown, echo).await?);
        }
        Ok(answers)
    }

    fn server_still_takes(&self, method: &str) -> bool {
        self.server_methods
            .as_ref()
            .is_some_and(|methods| server_takes(methods, method))
    }

    /// The host as ssh names it in prompts: HostKeyAlias, else the host name.
    fn host_name(&self) -> &str {
        let config = self.authenticator.config;
        config.host_key_alias.as_deref().unwrap_or(&config.hostname)
    }

    // -----------------------------------------------------------------------------------------
    // Password.

    /// Asks for the password as ssh does, up to NumberOfPasswordPrompts times in the round.
    async fn password(&mut self) -> Result<Step> {
        const WHAT: &str = "password";
        let tries_so_far = self.password_tries;
        if !self.may_ask(
            Method::Password,
            "the server asks for a password, and",
            "for it",
            tries_so_far,
        ) {
            return Ok(Step::Refused);
        }
        let tries = self.authenticator.config.number_of_password_prompts;
        let keys: &'a KeyStore = self.authenticator.keys;
        let _turn = keys.take_turn().await;
        let prompt = format!(
            "{}@{}'s password: ",
            printable(&self.user),
            printable(self.host_name())
        );
        let mut sent = 0;
        while self.password_tries < tries {
            self.password_tries += 1;
            if sent > 0
                && let Err(error) = keys
                    .answerer
                    .show("Permission denied, please try again.")
                    .await
            {
                tracing::debug!(%error, "could not write to the terminal");
            }
            let password = match keys.answerer.ask(&prompt, Echo::Hidden).await {
                Ok(password) => password,
                Err(error) => {
                    let outcome = if error.kind() == std::io::ErrorKind::UnexpectedEof {
                        "no password was typed (end of input)".to_string()
                    } else {
                        format!("the terminal could not be read: {error}")
                    };
                    self.note(WHAT, outcome);
                    self.given_up.push(Method::Password);
                    return Ok(Step::Refused);
                }
            };
            sent += 1;
            let reply = tokio::time::timeout(
                AUTH_STEP_TIMEOUT,
                self.handle
                    .authenticate_password(self.user.clone(), password.expose_secret()),
            )
            .await;
            let verdict = match self.server_reply(reply)? {
                AuthResult::Success => Verdict::Accepted,
                AuthResult::Failure {
                    remaining_methods,
                    partial_success,
                } => self.refused_with(remaining_methods, partial_success, WHAT),
            };
            if let Verdict::Accepted | Verdict::Partial = verdict {
                self.interactive = true;
                return Ok(self.conclude(verdict, WHAT.into(), WHAT.into()));
            }
            // A server that no longer takes passwords has said its last word on them.
            if !self.server_still_takes(WHAT) {
                break;
            }
        }
        self.given_up.push(Method::Password);
        self.answers_refused = true;
        let plural = if sent == 1 { "try" } else { "tries" };
        self.note(
            WHAT,
            format!("the server refused the password ({sent} {plural})"),
        );
        Ok(Step::Refused)
    }

    // -----------------------------------------------------------------------------------------
    // The refusal.

    /// The error when no method got through: what the server takes, everything tried, and
    /// the likeliest way in.
    fn refusal(&self) -> Error {
        let config = self.authenticator.config;
        let names = self.server_methods.as_ref().map(method_names);
        let mut message = format!(
            "{}: permission denied for user '{}'",
            self.label, config.user
        );
        match names.as_deref() {
            Some([]) => message.push_str(" (the server names no further method xfer knows)"),
            Some(names) => {
                message.push_str(&format!(" (the server accepts: {})", names.join(", ")))
            }
            None => {}
        }
        let mut attempts = self.attempts.clone();
        attempts.extend(untried_methods(
            config,
            names.as_deref().unwrap_or_default(),
            &self.attempts,
        ));
        let takes = |method: &str| {
            names
                .as_deref()
                .is_some_and(|names| names.contains(&method))
        };
        if attempts.is_empty() {
            if names.is_none() || takes("publickey") {
                message
                    .push_str("; no key was available to try (no agent keys, no identity files)");
            }
        } else {
            message.push_str("; tried:");
            for attempt in &attempts {
                message.push_str(&format!("\n  - {}: {}", attempt.what, attempt.outcome));
            }
        }
        let needs_agent = attempts.iter().any(|a| a.outcome.contains("ssh-add"));
        let unsigned = attempts
            .iter()
            .any(|a| a.outcome.starts_with("the agent did not sign"));
        let native = takes("publickey") || takes("keyboard-interactive") || takes("password");
        let hint = if needs_agent && config.batch_mode {
            "load the encrypted key into ssh-agent (eval $(ssh-agent); ssh-add KEY), or run xfer from a terminal with -o BatchMode=no"
                .to_string()
        } else if needs_agent {
            "load the encrypted key into ssh-agent (eval $(ssh-agent); ssh-add KEY) or run xfer from a terminal"
                .to_string()
        } else if unsigned {
            "the agent did not sign with a key above: for a security key (FIDO), check that it is plugged in and touch it when it blinks; or log in with the system's ssh instead (--ssh-command ssh)"
                .to_string()
        } else if self.asking_blocked {
            let terminal = if config.batch_mode {
                "from a terminal with -o BatchMode=no"
            } else {
                "from a terminal"
            };
            if self.accepted.is_empty() {
                format!(
                    "the server wants a password or other typed answers: run xfer {terminal} to type them, log in with the system's ssh instead (--ssh-command ssh), or use a key the server accepts on its own (ssh-copy-id installs one)"
                )
            } else {
                format!(
                    "the server wants typed answers besides what it accepted: run xfer {terminal} to type them, or log in with the system's ssh instead (--ssh-command ssh)"
                )
            }
        } else if self.answers_refused {
            format!(
                "check the user name ('{}') and what was typed; with a key in ~/.ssh/authorized_keys of '{}' on the remote there is nothing to type (ssh-copy-id installs one)",
                config.user, config.user
            )
        } else if let Some(names) = names.as_deref().filter(|_| !native) {
            let methods = if names.is_empty() {
                "the methods this server takes".to_string()
            } else {
                names.join(", ")
            };
            format!(
                "xfer does not do {methods} itself; --ssh-command ssh logs in with the system's ssh instead"
            )
        } else if names.is_some() && !takes("publickey") {
            "this server does not take public keys, and xfer may not use what it takes (see above): allow it with PasswordAuthentication, KbdInteractiveAuthentication or PreferredAuthentications, or log in with the system's ssh (--ssh-command ssh)".to_string()
        } else {
            format!(
                "check that one of these public keys is in ~/.ssh/authorized_keys of '{}' on the remote (ssh-copy-id does that), or name the right key with -i or IdentityFile",
                config.user
            )
        };
        Error::auth(message).with_hint(hint)
    }
}

/// Why a method asking the person is not tried (again), when it is not: NumberOfPasswordPrompts
/// allows none, or the round has used them up.
fn out_of_tries(used: u32, tries: u32) -> Option<String> {
    if tries == 0 {
        Some("not tried: NumberOfPasswordPrompts is 0".into())
    } else if used >= tries {
        Some(format!(
            "not tried again: the {tries} tries NumberOfPasswordPrompts allows are used up"
        ))
    } else {
        None
    }
}

/// Tells the agent's not signing apart from the other local failures of an attempt, which are
/// the connection's.
trait SignFailure {
    /// Why the agent did not sign, when that is what failed.
    fn agent_did_not_sign(&self) -> Option<String>;
}

impl SignFailure for russh::AgentAuthError {
    fn agent_did_not_sign(&self) -> Option<String> {
        match self {
            // SSH_AGENT_FAILURE: the agent's only word for "no", whatever the reason.
            russh::AgentAuthError::Key(russh::keys::Error::AgentFailure) => {
                Some("it refused".into())
            }
            russh::AgentAuthError::Key(error) => Some(error.to_string()),
            russh::AgentAuthError::Send(_) => None,
        }
    }
}

impl SignFailure for russh::Error {
    /// Key files are signed inside russh's session, so its errors are the connection's.
    fn agent_did_not_sign(&self) -> Option<String> {
        None
    }
}

/// The keys of a round in ssh's order: certificates from CertificateFile and beside the
/// identity files, the agent's keys (those named in the config first, the others unless
/// IdentitiesOnly), then the identity files the agent does not hold.
fn key_offers(
    config: &HostConfig,
    identities: &[IdentityFile],
    agent_keys: &[AgentIdentity],
) -> VecDeque<Offer> {
    let mut offers = VecDeque::new();
    let certificate_paths = config.certificate_files.iter().cloned().chain(
        identities
            .iter()
            .map(|identity| with_suffix(&identity.path, "-cert.pub")),
    );
    for path in certificate_paths {
        if let Some(certificate) = read_certificate(&path) {
            offers.push_back(Offer::Certificate { path, certificate });
        }
    }
    let in_config = |identity: &&AgentIdentity| {
        let public = identity.public_key();
        identities.iter().any(|file| {
            file.public
                .as_ref()
                .is_some_and(|p| p.key_data() == public.key_data())
        })
    };
    offers.extend(
        agent_keys
            .iter()
            .filter(in_config)
            .cloned()
            .map(Offer::AgentKey),
    );
    if !config.identities_only {
        offers.extend(
            agent_keys
                .iter()
                .filter(|identity| !in_config(identity))
                .cloned()
                .map(Offer::AgentKey),
        );
    }
    for (index, identity) in identities.iter().enumerate() {
        let held_by_agent = identity
            .public
            .as_ref()
            .is_some_and(|public| agent_has(agent_keys, public));
        if !held_by_agent {
            offers.push_back(Offer::IdentityFile(index));
        }
    }
    offers
}

/// The methods the server takes that were not tried, and why, for the refusal: turned off
/// in the configuration, left out of PreferredAuthentications, or not done by xfer.
fn untried_methods(config: &HostConfig, server: &[&str], attempts: &[Attempt]) -> Vec<Attempt> {
    let order = config.authentication_order();
    server
        .iter()
        .filter(|name| **name != "publickey" && !attempts.iter().any(|a| a.what == **name))
        .map(|name| {
            let outcome = match Method::from_name(name) {
                None => "not tried: xfer does not do this method itself".to_string(),
                Some(_) if !order.contains(name) => {
                    "not tried: PreferredAuthentications leaves it out".to_string()
                }
                Some(Method::Password) if !config.password_authentication => {
                    "not tried: PasswordAuthentication is no".to_string()
                }
                Some(Method::KeyboardInteractive)
                    if !config.keyboard_interactive_authentication =>
                {
                    "not tried: KbdInteractiveAuthentication is no".to_string()
                }
                Some(_) => "not tried".to_string(),
            };
            Attempt {
                what: name.to_string(),
                outcome,
            }
        })
        .collect()
}

/// A server's name or instruction made fit to show: printable line by line, without the
/// empty lines at its end, at most [`MAX_SHOWN_LINES`] lines of [`MAX_SHOWN_CHARACTERS`];
/// `None` when there is nothing to show.
fn shown_lines(text: &str) -> Option<String> {
    let lines: Vec<&str> = text
        .trim_end_matches(['\r', '\n'])
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .collect();
    if lines.iter().all(|line| line.is_empty()) {
        return None;
    }
    let mut shown: Vec<String> = lines
        .iter()
        .take(MAX_SHOWN_LINES)
        .map(|line| printable_cut(line, MAX_SHOWN_CHARACTERS))
        .collect();
    if lines.len() > MAX_SHOWN_LINES {
        shown.push(format!("({} more lines)", lines.len() - MAX_SHOWN_LINES));
    }
    Some(shown.join("\n"))
}

/// A server's prompt made fit to show: printable line by line (sshd puts PAM's notices before
/// the question, on lines of their own), its last [`MAX_SHOWN_LINES`] lines of
/// [`MAX_SHOWN_CHARACTERS`] (the question is at the end), spaces kept.
fn shown_prompt(text: &str) -> String {
    let lines: Vec<&str> = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .collect();
    let skipped = lines.len().saturating_sub(MAX_SHOWN_LINES);
    let mut shown: Vec<String> = Vec::with_capacity(MAX_SHOWN_LINES + 1);
    if skipped > 0 {
        shown.push(format!("({skipped} lines before)"));
    }
    shown.extend(
        lines[skipped..]
            .iter()
            .map(|line| printable_cut(line, MAX_SHOWN_CHARACTERS)),
    );
    shown.join("\n")
}

/// Where the identity file whose public key is `public` is among `identities`.
fn identity_index(identities: &[IdentityFile], public: &PublicKey) -> Option<usize> {
    identities.iter().position(|identity| {
        identity
            .public
            .as_ref()
            .is_some_and(|p| p.key_data() == public.key_data())
    })
}

fn agent_has(agent_keys: &[AgentIdentity], public: &PublicKey) -> bool {
    agent_keys
        .iter()
        .any(|identity| identity.public_key().key_data() == public.key_data())
}

/// The hash to sign with: the server's choice for RSA keys, none for the others.
fn hash_for(rsa_hash: Option<HashAlg>, public: &PublicKey) -> Option<HashAlg> {
    if public.algorithm().is_rsa() {
        rsa_hash
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
