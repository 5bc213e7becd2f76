//! FIDO security keys held in ssh-agent (`sk-ssh-ed25519@openssh.com`,
//! `sk-ecdsa-sha2-nistp256@openssh.com`) with xfer's native transport, against a real OpenSSH
//! sshd, which verifies their signatures and their user-presence flag. The token is the
//! in-process [`FakeAgent`]: first held against ssh-key's own verifier, then, in each test
//! against sshd, against OpenSSH's own client, so that a failure points at xfer, not at the
//! double. Then: pulls with each kind of key, an agent that does not sign (nobody touched the
//! token), a signature without user presence that sshd refuses, and a security key's file
//! that the agent does not hold, which xfer cannot sign with and skips for the next key.

use crate::support::{
    FakeAgent, SecurityKey, Setup, Sshd, SshdBuilder, Touch, assert_success, public_key_path,
    run_with_timeout, said, stderr, write_file,
};
use russh::keys::agent::client::AgentClient;
use russh::keys::signature::Verifier;
use russh::keys::ssh_key::private::{KeypairData, SkEd25519 as SecurityKeyHandle};
use russh::keys::ssh_key::public::KeyData;
use russh::keys::ssh_key::{HashAlg, LineEnding, PrivateKey, Signature};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long one run of ssh or xfer may take.
const LIMIT: Duration = Duration::from_secs(60);

/// A refusal must come well within xfer's own 30-second limit on one authentication step: a
/// run that long waited for something that never came.
const PROMPT: Duration = Duration::from_secs(20);

/// The host alias whose only key is the agent's security key.
const ALIAS: &str = "fido";

/// The user-presence flag of a security key's signature (PROTOCOL.u2f).
const USER_PRESENCE: u8 = 0x01;

/// An sshd that authorizes the fake agent's security key, and a client config that reaches it
/// as [`ALIAS`] with that key only.
struct Fixture {
    setup: Setup,
    agent: FakeAgent,
}

impl Fixture {
    /// `options` go before the key in authorized_keys (e.g. `no-touch-required`).
    fn start(sshd: SshdBuilder, kind: SecurityKey, options: &str) -> Fixture {
        let agent = FakeAgent::start(kind);
        let setup = Setup::with(sshd.start(), tempfile::tempdir().unwrap(), None);
        let authorized = setup.path("security_key.authorized");
        agent.write_public_key(&authorized, options);
        setup.sshd.authorize(&authorized);
        // As `ssh-keygen -t ed25519-sk` leaves it: a key file whose public half is beside it.
        // Here only the `.pub` exists: the agent alone can sign, and with IdentitiesOnly (the
        // harness's default) no other key is offered, the sshd's own client key included.
        let identity = setup.path("id_security_key");
        agent.write_public_key(&public_key_path(&identity), "");
        setup.sshd.append_client_config(
            &setup.config,
            ALIAS,
            &[&format!("IdentityFile {}", identity.display())],
        );
        Fixture { setup, agent }
    }

    /// OpenSSH's own client, with the fake agent, runs `true` on the host.
    fn ssh(&self) -> Output {
        self.ssh_to(ALIAS, Some(self.agent.socket()))
    }

    /// OpenSSH's own client runs `true` on `alias`, with the agent at `agent` if any.
    fn ssh_to(&self, alias: &str, agent: Option<&Path>) -> Output {
        let mut command = Command::new("ssh");
        command
            .arg("-F")
            .arg(&self.setup.config)
            .args(["-o", "ConnectTimeout=10", alias, "true"])
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null());
        if let Some(agent) = agent {
            command.env("SSH_AUTH_SOCK", agent);
        }
        run_with_timeout(&mut command, LIMIT)
    }

    /// `xfer pull` of `name` in the working directory to `name.copy`, with the fake agent;
    /// the output and how long the run took.
    fn pull(&self, name: &str) -> (Output, Duration) {
        self.pull_from(ALIAS, name, Some(self.agent.socket()))
    }

    /// `xfer pull` of `name` from `alias`, with the agent at `agent` if any.
    fn pull_from(&self, alias: &str, name: &str, agent: Option<&Path>) -> (Output, Duration) {
        let source = format!("{alias}:{}", self.setup.path(name).display());
        let destination = self.setup.path(&format!("{name}.copy"));
        let mut command = self
            .setup
            .xfer(&["pull", &source, destination.to_str().unwrap()]);
        if let Some(agent) = agent {
            command.env("SSH_AUTH_SOCK", agent);
        }
        let started = Instant::now();
        let output = run_with_timeout(&mut command, LIMIT);
        (output, started.elapsed())
    }

    /// How many logins sshd accepted with the security key.
    fn logins(&self) -> usize {
        self.logins_with(&self.agent.fingerprint())
    }

    /// How many logins sshd accepted with the key of this fingerprint.
    fn logins_with(&self, fingerprint: &str) -> usize {
        self.setup
            .sshd
            .log()
            .lines()
            .filter(|line| line.contains("Accepted publickey") && line.contains(fingerprint))
            .count()
    }

    /// Asserts that OpenSSH's own client logs in with the fake agent, so that the double is
    /// sound before xfer is held against it.
    fn assert_ssh_logs_in(&self) {
        let output = self.ssh();
        assert!(
            output.status.success(),
            "ssh refused the fake agent's {} key, so the double is wrong, not xfer:\n{}\n--- sshd log ---\n{}",
            self.agent.algorithm(),
            said(&output),
            self.setup.sshd.log()
        );
    }

    /// OpenSSH's own client logs in with the key (proving the double), then xfer pulls a file
    /// with it, intact, having had the agent sign.
    fn assert_pull_works(&self) {
        self.assert_ssh_logs_in();
        assert_eq!(self.logins(), 1, "{}", self.setup.sshd.log());
        let asked = self.agent.sign_requests();

        write_file(
            &self.setup.path("data.bin"),
            7,
            3 << 20,
            0o644,
            1_600_000_000,
        );
        let (output, _) = self.pull("data.bin");
        assert_success(&output);
        assert_eq!(
            fs::read(self.setup.path("data.bin.copy")).unwrap(),
            fs::read(self.setup.path("data.bin")).unwrap(),
            "the pulled file differs"
        );
        assert!(
            self.agent.sign_requests() > asked,
            "xfer never asked the agent to sign:\n{}",
            said(&output)
        );
        assert!(
            self.logins() > 1,
            "sshd did not log xfer's login with the security key:\n{}",
            self.setup.sshd.log()
        );
    }
}

/// The double on its own, through the agent client xfer uses: one identity, the security key;
/// a signature that ssh-key's verifier (written to PROTOCOL.u2f, apart from the double)
/// accepts for the message signed and no other, carrying the flags the token was set to and a
/// counter that grows; and SSH_AGENT_FAILURE when the token is not touched.
#[test]
fn the_fake_agent_signs_as_a_security_key_does() {
    for kind in [SecurityKey::Ed25519, SecurityKey::EcdsaP256] {
        let agent = FakeAgent::start(kind);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let mut client = tokio::time::timeout(LIMIT, AgentClient::connect_uds(agent.socket()))
                .await
                .expect("the agent answers in time")
                .expect("the agent accepts a connection");
            let identities = tokio::time::timeout(LIMIT, client.request_identities())
                .await
                .expect("the agent answers in time")
                .expect("the agent lists its keys");
            assert_eq!(identities.len(), 1, "{kind:?}");
            let identity = &identities[0];
            assert_eq!(
                identity.public_key().key_data(),
                agent.public_key().key_data()
            );

            let mut counters = Vec::new();
            for (touch, flags) in [(Touch::Given, USER_PRESENCE), (Touch::Omitted, 0)] {
                agent.set_touch(touch);
                let message = b"session identifier and userauth request".to_vec();
                let signed = tokio::time::timeout(
                    LIMIT,
                    client.sign_request(identity, None, message.clone()),
                )
                .await
                .expect("the agent answers in time")
                .unwrap_or_else(|error| panic!("{kind:?} {touch:?}: no signature: {error}"));
                // russh hands back the message followed by the signature as a string.
                let encoded = &signed[message.len() + 4..];
                let signature = Signature::try_from(encoded)
                    .unwrap_or_else(|error| panic!("{kind:?}: not a signature: {error}"));
                assert_eq!(signature.algorithm(), agent.public_key().algorithm());
                let trailer = &signature.as_bytes()[signature.as_bytes().len() - 5..];
                assert_eq!(trailer[0], flags, "{kind:?} {touch:?}");
                counters.push(u32::from_be_bytes(trailer[1..].try_into().unwrap()));
                let public = agent.public_key().key_data();
                public
                    .verify(&message, &signature)
                    .unwrap_or_else(|error| panic!("{kind:?} {touch:?}: does not verify: {error}"));
                assert!(
                    public.verify(b"another message", &signature).is_err(),
                    "{kind:?}: a signature that verifies for any message proves nothing"
                );
            }
            assert!(counters[1] > counters[0], "{kind:?}: {counters:?}");

            agent.set_touch(Touch::Refused);
            let refused = tokio::time::timeout(
                LIMIT,
                client.sign_request(identity, None, b"message".to_vec()),
            )
            .await
            .expect("the agent answers in time");
            assert!(
                matches!(refused, Err(russh::keys::Error::AgentFailure)),
                "{kind:?}: {refused:?}"
            );
            assert_eq!(agent.sign_requests(), 3);
        });
    }
}

#[test]
fn pull_with_an_ed25519_security_key_in_the_agent() {
    Fixture::start(Sshd::builder(), SecurityKey::Ed25519, "").assert_pull_works();
}

#[test]
fn pull_with_an_ecdsa_security_key_in_the_agent() {
    Fixture::start(Sshd::builder(), SecurityKey::EcdsaP256, "").assert_pull_works();
}

/// A token nobody touches: the agent answers SSH_AGENT_FAILURE. xfer fails at once with exit
/// code 4, naming the key by type and fingerprint, saying the agent did not sign (not that
/// the server refused), and what to do.
#[test]
fn an_agent_that_does_not_sign_is_named_with_what_to_do() {
    let fixture = Fixture::start(Sshd::builder(), SecurityKey::Ed25519, "");
    fixture.assert_ssh_logs_in();
    fixture.agent.set_touch(Touch::Refused);
    let asked = fixture.agent.sign_requests();

    write_file(
        &fixture.setup.path("data.bin"),
        8,
        4096,
        0o644,
        1_600_000_000,
    );
    let (output, took) = fixture.pull("data.bin");
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(4), "{}", said(&output));
    assert!(took < PROMPT, "the refusal took {took:?}:\n{text}");
    assert!(
        fixture.agent.sign_requests() > asked,
        "xfer never asked the agent to sign:\n{text}"
    );
    let line = text
        .lines()
        .find(|line| line.contains(&fixture.agent.fingerprint()))
        .unwrap_or_else(|| panic!("the key's fingerprint is not named:\n{text}"));
    for words in [
        fixture.agent.algorithm().as_str(),
        "the agent did not sign",
        "touch",
        "--ssh-command ssh",
    ] {
        assert!(line.contains(words), "no {words:?} in {line:?}:\n{text}");
    }
    assert!(
        !line.contains("refused by the server"),
        "the server never saw a signature: {line:?}"
    );
    // The closing hint is about the token, not about authorizing the key.
    let hint = text
        .lines()
        .find(|line| line.starts_with("hint:"))
        .unwrap_or_else(|| panic!("no hint:\n{text}"));
    assert!(
        hint.contains("touch") && !hint.contains("authorized_keys"),
        "{hint}"
    );
    assert!(!fixture.setup.path("data.bin.copy").exists());
    assert_eq!(
        fixture.logins(),
        1,
        "only ssh's login: {}",
        fixture.setup.sshd.log()
    );
}

/// `PubkeyAuthOptions touch-required` on the server: a signature without user presence is
/// refused even for a key authorized with `no-touch-required` (which another sshd, without the
/// option, shows is then all that stands in the way), and xfer says so promptly with exit
/// code 4; the same key touched gets in.
#[test]
fn a_signature_without_user_presence_is_refused_where_touch_is_required() {
    let relaxed = Fixture::start(Sshd::builder(), SecurityKey::Ed25519, "no-touch-required");
    relaxed.agent.set_touch(Touch::Omitted);
    relaxed.assert_pull_works();

    let strict = Fixture::start(
        Sshd::builder().extra_config("PubkeyAuthOptions touch-required"),
        SecurityKey::Ed25519,
        "no-touch-required",
    );
    strict.agent.set_touch(Touch::Omitted);
    let output = strict.ssh();
    assert!(
        !output.status.success(),
        "sshd let ssh in without user presence:\n{}",
        strict.setup.sshd.log()
    );
    let asked = strict.agent.sign_requests();

    write_file(
        &strict.setup.path("data.bin"),
        9,
        4096,
        0o644,
        1_600_000_000,
    );
    let (output, took) = strict.pull("data.bin");
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(4), "{}", said(&output));
    assert!(took < PROMPT, "the refusal took {took:?}:\n{text}");
    assert!(
        strict.agent.sign_requests() > asked,
        "xfer never asked the agent to sign:\n{text}"
    );
    assert!(
        strict
            .setup
            .sshd
            .log()
            .contains("user presence (authenticator touch) requirement not met"),
        "sshd refused for another reason:\n{}",
        strict.setup.sshd.log()
    );
    let line = text
        .lines()
        .find(|line| line.contains(&strict.agent.fingerprint()))
        .unwrap_or_else(|| panic!("the key's fingerprint is not named:\n{text}"));
    assert!(
        line.contains(strict.agent.algorithm().as_str()) && line.contains("refused by the server"),
        "{line:?}:\n{text}"
    );
    assert_eq!(strict.logins(), 0, "{}", strict.setup.sshd.log());

    strict.agent.set_touch(Touch::Given);
    let (output, _) = strict.pull("data.bin");
    assert_success(&output);
    assert_eq!(strict.logins(), 1, "{}", strict.setup.sshd.log());
}

/// A security key's file that the agent does not hold (as `ssh-keygen -t ed25519-sk` leaves
/// it: a handle for the token) cannot be signed with by xfer itself, and must not end the
/// connection: it is skipped and the next key gets in, as with ssh, which finds no token and
/// goes on.
#[test]
fn a_security_key_file_outside_the_agent_is_skipped_for_the_next_key() {
    let fixture = Fixture::start(Sshd::builder(), SecurityKey::Ed25519, "");
    let KeyData::SkEd25519(public) = fixture.agent.public_key().key_data().clone() else {
        panic!("the fake agent holds an sk-ssh-ed25519 key");
    };
    let handle = SecurityKeyHandle::new(public, 0x01, vec![7; 64]).unwrap();
    let key_file = fixture.setup.path("id_ed25519_sk");
    let text = PrivateKey::new(KeypairData::SkEd25519(handle), "token")
        .and_then(|key| key.to_openssh(LineEnding::LF))
        .unwrap();
    fs::write(&key_file, text.as_bytes()).unwrap();
    fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600)).unwrap();
    // The security key first: sshd, which authorizes it, asks for its signature.
    let client_key = fixture.setup.sshd.client_key();
    fixture.setup.sshd.append_client_config(
        &fixture.setup.config,
        "files",
        &[
            &format!("IdentityFile {}", key_file.display()),
            &format!("IdentityFile {}", client_key.display()),
        ],
    );
    let client_key_fingerprint = PrivateKey::read_openssh_file(&client_key)
        .unwrap()
        .public_key()
        .fingerprint(HashAlg::Sha256)
        .to_string();

    let output = fixture.ssh_to("files", None);
    assert!(output.status.success(), "{}", said(&output));
    assert_eq!(fixture.logins_with(&client_key_fingerprint), 1);

    write_file(
        &fixture.setup.path("data.bin"),
        10,
        4096,
        0o644,
        1_600_000_000,
    );
    let (output, _) = fixture.pull_from("files", "data.bin", None);
    assert_success(&output);
    assert_eq!(
        fs::read(fixture.setup.path("data.bin.copy")).unwrap(),
        fs::read(fixture.setup.path("data.bin")).unwrap()
    );
    assert!(
        fixture.logins_with(&client_key_fingerprint) > 1,
        "{}",
        fixture.setup.sshd.log()
    );
    assert_eq!(
        fixture.logins(),
        0,
        "no token, no login with the security key"
    );
}
