//! Public-key authentication in OpenSSH's order.
//!
//! ssh tries, in turn: certificates named by `CertificateFile`, certificates found beside
//! identity files (`id-cert.pub`), agent keys that match an identity file, the agent's other
//! keys (unless `IdentitiesOnly`), and last the identity files that the agent does not hold.
//! This module does the same and keeps a record of every key it tried, so that a refusal can
//! say exactly what was offered. Decrypted keys are kept in a [`KeyStore`] shared by all
//! connections of one run, so a passphrase is asked for once.

use crate::error::{Error, Result};
use crate::ssh::config::HostConfig;
use crate::terminal::printable;
use russh::client::{Handle, Handler};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{Certificate, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bound on one authentication exchange; a server that stops answering mid-auth must not
/// hang xfer.
const AUTH_STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest key or certificate file read; real ones are a few KiB.
const MAX_KEY_FILE_SIZE: u64 = 1 << 20;

/// How many times a wrong passphrase may be typed, as ssh allows.
const PASSPHRASE_TRIES: usize = 3;

/// Whether xfer may ask the person at the terminal for passphrases and confirmations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    /// A controlling terminal is available and BatchMode is off.
    Terminal,
    /// No prompts: a key that needs a passphrase is skipped with a message.
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

/// Keys decrypted during this run, by file, so every connection after the first authenticates
/// without asking again.
#[derive(Default)]
pub struct KeyStore {
    keys: Mutex<HashMap<PathBuf, Arc<PrivateKey>>>,
}

impl KeyStore {
    fn get(&self, path: &Path) -> Option<Arc<PrivateKey>> {
        self.keys.lock().ok()?.get(path).cloned()
    }

    fn insert(&self, path: &Path, key: Arc<PrivateKey>) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.insert(path.to_path_buf(), key);
        }
    }
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyStore(..)")
    }
}

/// One key offered (or not) to the server, for the error message and `-v` logs.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub key: String,
    pub outcome: String,
}

/// How the connection was authenticated, for `xfer doctor`.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The whole story: method, key source, algorithm and fingerprint.
    pub method: String,
    /// A few words for a table column: "agent", "key id_ed25519", "cert id-cert.pub".
    pub summary: String,
    /// Whether a person answered the server (a password, a one-time code): such a login is
    /// made once per run and shared (see `connect`).
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
    /// Offers keys in ssh's order until the server accepts one; the error lists every key
    /// tried and why each failed.
    pub async fn authenticate<H: Handler>(
        &self,
        handle: &mut Handle<H>,
        label: &str,
    ) -> Result<Authenticated> {
        let mut round = Round::start(self, handle, label).await;
        if let Some(done) = round.offer_certificates().await? {
            return Ok(done);
        }
        if let Some(done) = round.offer_agent_keys().await? {
            return Ok(done);
        }
        if let Some(done) = round.offer_identity_files().await? {
            return Ok(done);
        }
        Err(self.refusal(label, &round.attempts, round.server_methods))
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
                    key: format!("ssh-agent at {}", socket.display()),
                    outcome: "could not connect to the agent".into(),
                });
                None
            }
        }
    }

    /// Loads (and if needed decrypts) a private key file, noting why when it cannot be used.
    fn load_private_key(
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
                key: format!("key file {} ({})", path.display(), describe_public(public)),
                outcome: "skipped: a security key (FIDO) signs only on its token, which xfer reaches through ssh-agent alone: add the key to the agent, or run xfer with --ssh-command ssh".into(),
            });
            return None;
        }
        if let Some(key) = self.keys.get(path) {
            return Some(key);
        }
        let note = |attempts: &mut Vec<Attempt>, outcome: String| {
            attempts.push(Attempt {
                key: format!("key file {}", path.display()),
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
        for _ in 0..PASSPHRASE_TRIES {
            let prompt = format!(
                "Enter passphrase for key '{}': ",
                printable(path.display().to_string())
            );
            let passphrase = match rpassword::prompt_password(prompt) {
                Ok(passphrase) => SecretString::from(passphrase),
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
                Err(_) => eprintln!(
                    "Bad passphrase, try again for {}",
                    printable(path.display().to_string())
                ),
            }
        }
        note(
            attempts,
            "encrypted, and no correct passphrase was given".into(),
        );
        None
    }

    fn refusal(&self, label: &str, attempts: &[Attempt], server_methods: Option<String>) -> Error {
        let mut message = format!("{label}: permission denied for user '{}'", self.config.user);
        if let Some(methods) = &server_methods {
            message.push_str(&format!(" (the server accepts: {methods})"));
        }
        if attempts.is_empty() {
            message.push_str("; no key was available to try (no agent keys, no identity files)");
        } else {
            message.push_str("; tried:");
            for attempt in attempts {
                message.push_str(&format!("\n  - {}: {}", attempt.key, attempt.outcome));
            }
        }
        let needs_agent = attempts.iter().any(|a| a.outcome.contains("ssh-add"));
        let hint = if needs_agent && self.config.batch_mode {
            "load the encrypted key into ssh-agent (eval $(ssh-agent); ssh-add KEY), or run xfer from a terminal with -o BatchMode=no"
                .to_string()
        } else if needs_agent {
            "load the encrypted key into ssh-agent (eval $(ssh-agent); ssh-add KEY) or run xfer from a terminal"
                .to_string()
        } else if server_methods
            .as_deref()
            .is_some_and(|m| !m.contains("publickey"))
        {
            "this server does not take public keys; xfer authenticates with keys only".to_string()
        } else {
            format!(
                "check that one of these public keys is in ~/.ssh/authorized_keys of '{}' on the remote (ssh-copy-id does that), or name the right key with -i or IdentityFile",
                self.config.user
            )
        };
        Error::auth(message).with_hint(hint)
    }
}

/// One server reply to an offered key, within [`AUTH_STEP_TIMEOUT`].
type Reply<E> = std::result::Result<
    std::result::Result<russh::client::AuthResult, E>,
    tokio::time::error::Elapsed,
>;

/// One connection's authentication under way: the keys there are to offer, what was tried, and
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
    attempts: Vec<Attempt>,
    /// The methods the server said may continue, after its last refusal.
    server_methods: Option<String>,
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
        let identities = config
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
                            key: "ssh-agent".into(),
                            outcome: "did not list its keys".into(),
                        });
                        Vec::new()
                    }
                }
            }
            None => Vec::new(),
        };
        Round {
            authenticator,
            handle,
            label,
            user: config.user.clone(),
            rsa_hash,
            identities,
            agent,
            agent_keys,
            attempts,
            server_methods: None,
        }
    }

    /// 1 and 2: certificates from CertificateFile, then beside identity files, each signed
    /// by the agent when it holds the key, else by the identity file's key.
    async fn offer_certificates(&mut self) -> Result<Option<Authenticated>> {
        let mut certificates: Vec<(PathBuf, Certificate)> = Vec::new();
        let certificate_paths = self
            .authenticator
            .config
            .certificate_files
            .iter()
            .cloned()
            .chain(
                self.identities
                    .iter()
                    .map(|identity| with_suffix(&identity.path, "-cert.pub")),
            );
        for path in certificate_paths {
            if let Some(certificate) = read_certificate(&path) {
                certificates.push((path, certificate));
            }
        }
        for (path, certificate) in certificates {
            let public = PublicKey::new(certificate.public_key().clone(), "");
            let description = format!(
                "certificate {} ({})",
                path.display(),
                describe_public(&public)
            );
            let accepted = if let (Some(agent), true) =
                (self.agent.as_mut(), agent_has(&self.agent_keys, &public))
            {
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
            } else if let Some(identity) = identity_of(&self.identities, &public) {
                let Some(key) = self
                    .authenticator
                    .load_private_key(identity, &mut self.attempts)
                else {
                    continue;
                };
                let reply = tokio::time::timeout(
                    AUTH_STEP_TIMEOUT,
                    self.handle
                        .authenticate_openssh_cert(self.user.clone(), key, certificate),
                )
                .await;
                self.settle(reply, &description)?
            } else {
                self.attempts.push(Attempt {
                    key: description,
                    outcome: "skipped: no private key for it in the agent or the identity files"
                        .into(),
                });
                continue;
            };
            if accepted {
                return Ok(Some(Authenticated {
                    method: format!("publickey ({description})"),
                    summary: format!("cert {}", file_name(&path)),
                    interactive: false,
                }));
            }
        }
        Ok(None)
    }

    /// 3 and 4: agent keys, those named in the config first, the others unless
    /// IdentitiesOnly.
    async fn offer_agent_keys(&mut self) -> Result<Option<Authenticated>> {
        let Some(agent) = self.agent.as_mut() else {
            return Ok(None);
        };
        let in_config = |identity: &&AgentIdentity| {
            let public = identity.public_key();
            self.identities.iter().any(|file| {
                file.public
                    .as_ref()
                    .is_some_and(|p| p.key_data() == public.key_data())
            })
        };
        let mut ordered: Vec<AgentIdentity> =
            self.agent_keys.iter().filter(in_config).cloned().collect();
        if !self.authenticator.config.identities_only {
            ordered.extend(
                self.agent_keys
                    .iter()
                    .filter(|identity| !in_config(identity))
                    .cloned(),
            );
        }
        for identity in ordered {
            let public = identity.public_key().into_owned();
            let description = format!("agent key {}", describe_public(&public));
            let hash = hash_for(self.rsa_hash, &public);
            let reply = match identity {
                AgentIdentity::PublicKey { .. } => {
                    tokio::time::timeout(
                        AUTH_STEP_TIMEOUT,
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
                        AUTH_STEP_TIMEOUT,
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
            if settle(
                reply,
                &description,
                self.label,
                &mut self.attempts,
                &mut self.server_methods,
            )? {
                return Ok(Some(Authenticated {
                    method: format!("publickey ({description})"),
                    summary: "agent".into(),
                    interactive: false,
                }));
            }
        }
        Ok(None)
    }

    /// 5: identity files the agent does not hold, decrypted here when they must be.
    async fn offer_identity_files(&mut self) -> Result<Option<Authenticated>> {
        for index in 0..self.identities.len() {
            let identity = &self.identities[index];
            if identity
                .public
                .as_ref()
                .is_some_and(|public| self.agent.is_some() && agent_has(&self.agent_keys, public))
            {
                continue;
            }
            if !identity.path.exists() {
                if identity.explicit {
                    self.attempts.push(Attempt {
                        key: identity.path.display().to_string(),
                        outcome: "no such file".into(),
                    });
                }
                continue;
            }
            let Some(key) = self
                .authenticator
                .load_private_key(identity, &mut self.attempts)
            else {
                continue;
            };
            let path = identity.path.clone();
            let description = format!(
                "key file {} ({})",
                path.display(),
                describe_public(key.public_key())
            );
            let hash = hash_for(self.rsa_hash, key.public_key());
            let reply = tokio::time::timeout(
                AUTH_STEP_TIMEOUT,
                self.handle.authenticate_publickey(
                    self.user.clone(),
                    PrivateKeyWithHashAlg::new(key, hash),
                ),
            )
            .await;
            if self.settle(reply, &description)? {
                return Ok(Some(Authenticated {
                    method: format!("publickey ({description})"),
                    summary: format!("key {}", file_name(&path)),
                    interactive: false,
                }));
            }
        }
        Ok(None)
    }

    fn settle<E: fmt::Display + SignFailure>(
        &mut self,
        reply: Reply<E>,
        description: &str,
    ) -> Result<bool> {
        settle(
            reply,
            description,
            self.label,
            &mut self.attempts,
            &mut self.server_methods,
        )
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

/// Turns one server reply into accepted (`true`) or refused, noting a refusal among the
/// attempts and the methods the server still accepts; an error when the server stopped
/// answering.
fn settle<E: fmt::Display + SignFailure>(
    reply: Reply<E>,
    description: &str,
    label: &str,
    attempts: &mut Vec<Attempt>,
    server_methods: &mut Option<String>,
) -> Result<bool> {
    match reply {
        Err(_) => {
            return Err(Error::connect(format!(
                "{label}: the server stopped answering during authentication"
            )));
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, "an authentication attempt failed locally");
            if let Some(why) = error.agent_did_not_sign() {
                // The server never saw a signature, so "refused by the server" would send the
                // person to authorized_keys. Most often the key is a security key nobody
                // touched in time; ssh, which can also use the token without the agent, is
                // the other way.
                attempts.push(Attempt {
                    key: description.to_string(),
                    outcome: format!(
                        "the agent did not sign ({why}); a security key (FIDO) signs only when touched: check that it is plugged in and touch it when it blinks, or run xfer with --ssh-command ssh"
                    ),
                });
                return Ok(false);
            }
        }
        Ok(Ok(russh::client::AuthResult::Success)) => return Ok(true),
        Ok(Ok(russh::client::AuthResult::Failure {
            remaining_methods, ..
        })) => {
            let names: Vec<&str> = remaining_methods.iter().map(<&str>::from).collect();
            *server_methods = Some(names.join(", "));
        }
    }
    attempts.push(Attempt {
        key: description.to_string(),
        outcome: "refused by the server".into(),
    });
    Ok(false)
}

/// The identity file whose public key is `public`.
fn identity_of<'i>(identities: &'i [IdentityFile], public: &PublicKey) -> Option<&'i IdentityFile> {
    identities.iter().find(|identity| {
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
mod tests {
    use super::*;
    use crate::ssh::config::{LocalContext, Overrides, resolve_from_text};
    use russh::keys::ssh_key::LineEnding;
    use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData, SkEd25519};
    use std::os::unix::fs::PermissionsExt;

    fn write_key(path: &Path, key: &PrivateKey) {
        std::fs::write(path, key.to_openssh(LineEnding::LF).unwrap().as_bytes()).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// A security key's file is skipped with a word on the agent, before any attempt to read or
    /// sign with it; an ordinary key file beside it still loads.
    #[test]
    fn a_security_key_file_is_left_to_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let keypair = Ed25519Keypair::from_seed(&[7; 32]);
        // As `ssh-keygen -t ed25519-sk` writes it: the public key, flags (user presence) and
        // the token's key handle.
        let public = russh::keys::ssh_key::public::SkEd25519::new(keypair.public, "ssh:");
        let handle = SkEd25519::new(public, 0x01, vec![9; 64]).unwrap();
        let security_key = dir.path().join("id_ed25519_sk");
        write_key(
            &security_key,
            &PrivateKey::new(KeypairData::SkEd25519(handle), "token").unwrap(),
        );
        let ordinary = dir.path().join("id_ed25519");
        write_key(
            &ordinary,
            &PrivateKey::from(Ed25519Keypair::from_seed(&[8; 32])),
        );

        let local = LocalContext {
            user: "someone".into(),
            uid: nix::unistd::getuid().as_raw(),
            home: dir.path().to_path_buf(),
            hostname: "here".into(),
        };
        let config =
            resolve_from_text("box", &Overrides::default(), "test.conf", "", &local).unwrap();
        let authenticator = Authenticator {
            config: &config,
            keys: &KeyStore::default(),
            interaction: Interaction::Batch,
            agent_socket: None,
        };
        let identity = |path: &Path| IdentityFile {
            path: path.to_path_buf(),
            public: identity_public_key(path),
            explicit: true,
        };

        let mut attempts = Vec::new();
        assert!(
            authenticator
                .load_private_key(&identity(&security_key), &mut attempts)
                .is_none()
        );
        assert_eq!(attempts.len(), 1, "{attempts:?}");
        assert!(
            attempts[0].key.contains("sk-ssh-ed25519@openssh.com"),
            "{attempts:?}"
        );
        assert!(attempts[0].outcome.contains("ssh-agent"), "{attempts:?}");
        assert!(
            attempts[0].outcome.contains("--ssh-command ssh"),
            "{attempts:?}"
        );

        let mut attempts = Vec::new();
        assert!(
            authenticator
                .load_private_key(&identity(&ordinary), &mut attempts)
                .is_some(),
            "{attempts:?}"
        );
    }
}
