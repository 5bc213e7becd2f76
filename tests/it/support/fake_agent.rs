//! [`FakeAgent`]: an ssh-agent of the test's own, in process, holding one software "security
//! key", so that FIDO keys can be tested without hardware.
//!
//! It listens on a Unix socket in a temporary directory and speaks the part of the agent
//! protocol that a client authenticating with it uses: SSH_AGENTC_REQUEST_IDENTITIES lists one
//! key, an `sk-ssh-ed25519@openssh.com` or `sk-ecdsa-sha2-nistp256@openssh.com` public key with
//! the application `ssh:`, and SSH_AGENTC_SIGN_REQUEST is answered as ssh-agent answers for a
//! FIDO token, per OpenSSH's PROTOCOL.u2f: the signature covers sha256(application) || flags ||
//! counter (big-endian u32) || sha256(message) (Ed25519 directly, ECDSA P-256 over its
//! SHA-256), and the reply carries the flags byte and the counter after it. How the "token"
//! answers is the test's to set ([`Touch`]): touched (flags with user presence), signing
//! without user presence (flags 0, which sshd refuses unless told not to require it), or not at
//! all (SSH_AGENT_FAILURE, as ssh-agent answers when nobody touched the token in time). Every
//! other request, and a signature asked of another key, gets SSH_AGENT_FAILURE. It counts the
//! signatures asked of it, so a test can tell its key was used. Dropping it stops it.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use russh::keys::signature::Signer;
use russh::keys::ssh_key::public::{EcdsaPublicKey, KeyData, SkEcdsaSha2NistP256, SkEd25519};
use russh::keys::{Algorithm, EcdsaCurve, HashAlg, PrivateKey, PublicKey};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// The agent protocol's message numbers (draft-miller-ssh-agent).
const SSH_AGENT_FAILURE: u8 = 5;
const SSH_AGENTC_REQUEST_IDENTITIES: u8 = 11;
const SSH_AGENT_IDENTITIES_ANSWER: u8 = 12;
const SSH_AGENTC_SIGN_REQUEST: u8 = 13;
const SSH_AGENT_SIGN_RESPONSE: u8 = 14;

/// The flag a FIDO token sets when someone touched it (PROTOCOL.u2f, "user presence").
const USER_PRESENCE: u8 = 0x01;

/// The FIDO application of keys `ssh-keygen -t ed25519-sk` makes by default.
const APPLICATION: &str = "ssh:";

/// Largest request read; real ones are a few KiB, and a bigger length is a broken client.
const MAX_MESSAGE_SIZE: usize = 256 * 1024;

/// How long a connection may stay silent before the agent drops it, so that a client that
/// never closes cannot keep a handler thread alive past the test.
const IDLE_LIMIT: Duration = Duration::from_secs(120);

/// Which kind of security key the agent holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityKey {
    /// `sk-ssh-ed25519@openssh.com`, as `ssh-keygen -t ed25519-sk` makes.
    Ed25519,
    /// `sk-ecdsa-sha2-nistp256@openssh.com`, as `ssh-keygen -t ecdsa-sk` makes.
    EcdsaP256,
}

/// How the "token" answers a request to sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touch {
    /// Someone touched it: the signature's flags carry user presence.
    Given,
    /// It signs without anyone touching it, flags 0, as a token whose key was made with
    /// `no-touch-required` does.
    Omitted,
    /// Nobody touched it in time: the agent answers SSH_AGENT_FAILURE.
    Refused,
}

/// The agent's key and what the test told it, shared with the threads serving connections.
struct Shared {
    private: PrivateKey,
    /// The security key's public half, as listed and as sshd's authorized_keys holds it.
    public: PublicKey,
    /// `public` in the wire encoding a sign request names it by.
    blob: Vec<u8>,
    touch: Mutex<Touch>,
    /// The token's signature counter: it grows with every signature, as a real token's does.
    counter: AtomicU32,
    sign_requests: AtomicUsize,
    stopping: AtomicBool,
    /// The connections open, to shut down when the agent stops.
    connections: Mutex<Vec<UnixStream>>,
    /// The threads serving them, to wait for when the agent stops.
    handlers: Mutex<Vec<JoinHandle<()>>>,
}

/// A fake ssh-agent holding one software security key; see the module's description.
pub struct FakeAgent {
    shared: Arc<Shared>,
    socket: PathBuf,
    listener: Option<JoinHandle<()>>,
    // Declared last so that it is removed after the agent has stopped.
    _dir: TempDir,
}

impl FakeAgent {
    /// Starts an agent holding a new security key of `kind` that signs when touched
    /// ([`Touch::Given`]).
    pub fn start(kind: SecurityKey) -> FakeAgent {
        let algorithm = match kind {
            SecurityKey::Ed25519 => Algorithm::Ed25519,
            SecurityKey::EcdsaP256 => Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
        };
        // russh's generator: ssh-key wants its rand_core, newer than the one of this crate's rand.
        let private = PrivateKey::random(&mut russh::keys::key::safe_rng(), algorithm)
            .unwrap_or_else(|error| panic!("cannot make a {kind:?} key: {error}"));
        let key_data = match private.public_key().key_data() {
            KeyData::Ed25519(public) => KeyData::SkEd25519(SkEd25519::new(*public, APPLICATION)),
            KeyData::Ecdsa(EcdsaPublicKey::NistP256(point)) => {
                KeyData::SkEcdsaSha2NistP256(SkEcdsaSha2NistP256::new(*point, APPLICATION))
            }
            other => panic!("a {kind:?} key has public key data {other:?}"),
        };
        let public = PublicKey::new(key_data, "fake-security-key");
        let blob = public
            .to_bytes()
            .unwrap_or_else(|error| panic!("cannot encode the security key: {error}"));

        let dir = tempfile::Builder::new()
            .prefix("xfer-fake-agent-")
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot create a directory for the agent: {error}"));
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket)
            .unwrap_or_else(|error| panic!("cannot listen on {}: {error}", socket.display()));
        let shared = Arc::new(Shared {
            private,
            public,
            blob,
            touch: Mutex::new(Touch::Given),
            counter: AtomicU32::new(0),
            sign_requests: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
            handlers: Mutex::new(Vec::new()),
        });
        let accepting = Arc::clone(&shared);
        let listener = thread::spawn(move || accept(listener, accepting));
        FakeAgent {
            shared,
            socket,
            listener: Some(listener),
            _dir: dir,
        }
    }

    /// The socket to use as `SSH_AUTH_SOCK`.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The security key's public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.shared.public
    }

    /// The key's type as OpenSSH names it, e.g. `sk-ssh-ed25519@openssh.com`.
    pub fn algorithm(&self) -> String {
        self.shared.public.algorithm().as_str().to_owned()
    }

    /// The key's fingerprint as ssh and sshd print it: `SHA256:...`.
    pub fn fingerprint(&self) -> String {
        self.shared.public.fingerprint(HashAlg::Sha256).to_string()
    }

    /// Writes the public key as one OpenSSH line to `path` (an authorized_keys entry with
    /// `options` before it when they are not empty, e.g. `no-touch-required`).
    pub fn write_public_key(&self, path: &Path, options: &str) {
        let line = self
            .shared
            .public
            .to_openssh()
            .unwrap_or_else(|error| panic!("cannot encode the security key: {error}"));
        let text = if options.is_empty() {
            format!("{line}\n")
        } else {
            format!("{options} {line}\n")
        };
        std::fs::write(path, text)
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
    }

    /// How the token answers the sign requests from now on.
    pub fn set_touch(&self, touch: Touch) {
        *self.shared.touch.lock().unwrap() = touch;
    }

    /// How many signatures with its key the agent was asked for, refused ones included.
    pub fn sign_requests(&self) -> usize {
        self.shared.sign_requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // A connection of our own wakes the accepting thread, which then sees `stopping`.
        let _ = UnixStream::connect(&self.socket);
        if let Some(listener) = self.listener.take() {
            let _ = listener.join();
        }
        for connection in self.shared.connections.lock().unwrap().drain(..) {
            let _ = connection.shutdown(std::net::Shutdown::Both);
        }
        let handlers: Vec<_> = self.shared.handlers.lock().unwrap().drain(..).collect();
        for handler in handlers {
            let _ = handler.join();
        }
    }
}

/// Accepts connections until the agent stops, serving each on a thread of its own: xfer and ssh
/// may hold several at once.
fn accept(listener: UnixListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let Ok(kept) = stream.try_clone() else {
            continue;
        };
        shared.connections.lock().unwrap().push(kept);
        let serving = Arc::clone(&shared);
        let handler = thread::spawn(move || serve(stream, &serving));
        shared.handlers.lock().unwrap().push(handler);
    }
}

/// Answers one connection's requests until the client closes it (or goes silent too long).
fn serve(mut stream: UnixStream, shared: &Shared) {
    if stream.set_read_timeout(Some(IDLE_LIMIT)).is_err() {
        return;
    }
    while let Some(request) = read_message(&mut stream) {
        let reply = answer(shared, &request);
        let mut framed = Vec::with_capacity(4 + reply.len());
        framed.extend_from_slice(&(reply.len() as u32).to_be_bytes());
        framed.extend_from_slice(&reply);
        if stream.write_all(&framed).is_err() {
            return;
        }
    }
}

/// One length-prefixed message, or `None` at the end of the connection or on a malformed
/// length.
fn read_message(stream: &mut UnixStream) -> Option<Vec<u8>> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).ok()?;
    let length = u32::from_be_bytes(length) as usize;
    if length == 0 || length > MAX_MESSAGE_SIZE {
        return None;
    }
    let mut message = vec![0u8; length];
    stream.read_exact(&mut message).ok()?;
    Some(message)
}

/// The reply to one request (without its length).
fn answer(shared: &Shared, request: &[u8]) -> Vec<u8> {
    match request.split_first() {
        Some((&SSH_AGENTC_REQUEST_IDENTITIES, _)) => {
            let mut reply = vec![SSH_AGENT_IDENTITIES_ANSWER];
            reply.extend_from_slice(&1u32.to_be_bytes());
            put_string(&mut reply, &shared.blob);
            put_string(&mut reply, shared.public.comment().as_bytes());
            reply
        }
        Some((&SSH_AGENTC_SIGN_REQUEST, mut body)) => {
            // key blob, data, flags (the flags only choose RSA hashes; none apply here).
            let (Some(blob), Some(data)) = (take_string(&mut body), take_string(&mut body)) else {
                return vec![SSH_AGENT_FAILURE];
            };
            if blob != shared.blob.as_slice() {
                return vec![SSH_AGENT_FAILURE];
            }
            shared.sign_requests.fetch_add(1, Ordering::SeqCst);
            let flags = match *shared.touch.lock().unwrap() {
                Touch::Given => USER_PRESENCE,
                Touch::Omitted => 0,
                Touch::Refused => return vec![SSH_AGENT_FAILURE],
            };
            let mut reply = vec![SSH_AGENT_SIGN_RESPONSE];
            put_string(&mut reply, &sign(shared, data, flags));
            reply
        }
        // session-bind@openssh.com and the rest: a token-only agent need not know them, and
        // ssh carries on when the agent refuses.
        _ => vec![SSH_AGENT_FAILURE],
    }
}

/// A security key's signature of `message` in its wire encoding (PROTOCOL.u2f): string
/// algorithm, string signature, byte flags, uint32 counter. The token signs
/// sha256(application) || flags || counter || sha256(message), with no extensions.
fn sign(shared: &Shared, message: &[u8], flags: u8) -> Vec<u8> {
    let counter = shared.counter.fetch_add(1, Ordering::SeqCst) + 1;
    let mut signed = Vec::with_capacity(32 + 1 + 4 + 32);
    signed.extend_from_slice(&Sha256::digest(APPLICATION.as_bytes()));
    signed.push(flags);
    signed.extend_from_slice(&counter.to_be_bytes());
    signed.extend_from_slice(&Sha256::digest(message));
    // Ed25519 signs these bytes as they are; ECDSA P-256 signs their SHA-256, as ES256 does.
    // ssh-key encodes the ECDSA signature as OpenSSH does, mpint r then mpint s.
    let signature = shared
        .private
        .key_data()
        .try_sign(&signed)
        .unwrap_or_else(|error| panic!("the security key cannot sign: {error}"));
    let mut encoded = Vec::new();
    put_string(&mut encoded, shared.public.algorithm().as_str().as_bytes());
    put_string(&mut encoded, signature.as_bytes());
    encoded.push(flags);
    encoded.extend_from_slice(&counter.to_be_bytes());
    encoded
}

fn put_string(buffer: &mut Vec<u8>, bytes: &[u8]) {
    buffer.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    buffer.extend_from_slice(bytes);
}

/// Takes one length-prefixed string off the front of `body`.
fn take_string<'b>(body: &mut &'b [u8]) -> Option<&'b [u8]> {
    let length = u32::from_be_bytes(body.get(..4)?.try_into().ok()?) as usize;
    let string = body.get(4..4 + length)?;
    *body = &body[4 + length..];
    Some(string)
}
