//! Authentication against an in-process russh server over an in-memory stream, with answers
//! from a [`Script`] instead of a person: method order, partial success, prompts and their
//! bounds, batch mode, and the refusal's words.

use super::*;
use crate::ssh::config::{LocalContext, Overrides, resolve_from_text};
use crate::ssh::prompt::Script;
use russh::keys::PublicKeyOrCertificate;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData, SkEd25519};
use russh::server::{Auth, VerifiedPublicKey};
use std::borrow::Cow;
use std::os::unix::fs::PermissionsExt as _;

/// A keyboard-interactive request the test server sends.
#[derive(Clone, Default)]
struct Request {
    name: String,
    instructions: String,
    /// Each prompt and whether its answer is echoed.
    prompts: Vec<(String, bool)>,
}

fn request(prompts: &[(&str, bool)]) -> Request {
    Request {
        prompts: prompts
            .iter()
            .map(|(text, echo)| (text.to_string(), *echo))
            .collect(),
        ..Request::default()
    }
}

/// How the test server authenticates.
#[derive(Clone, Default)]
struct Policy {
    /// What the server takes, as its refusals name it.
    methods: Vec<MethodKind>,
    none_accepted: bool,
    /// The one client key it knows.
    key: Option<PublicKey>,
    password: Option<String>,
    /// The keyboard-interactive conversation, and the answers (all requests' in order) that
    /// pass it.
    conversation: Vec<Request>,
    expected: Vec<String>,
    /// Zero-prompt requests, on and on.
    endless: bool,
    /// Never answers the responses to its first request.
    stalls: bool,
    /// Per method: accepted only in part, the server then wanting these.
    then: Vec<(MethodKind, Vec<MethodKind>)>,
}

impl Policy {
    /// A refusal naming every method, as sshd's do (russh's own would drop the method
    /// refused).
    fn refusal(&self) -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(MethodSet::from(&self.methods[..])),
            partial_success: false,
        }
    }

    fn verdict(&self, method: MethodKind) -> Auth {
        match self.then.iter().find(|(kind, _)| *kind == method) {
            Some((_, next)) => Auth::Reject {
                proceed_with_methods: Some(MethodSet::from(&next[..])),
                partial_success: true,
            },
            None => Auth::Accept,
        }
    }
}

/// The server side of one connection; `log` says what was asked of it, in order (never an
/// answer's value).
struct Server {
    policy: Policy,
    log: Arc<Mutex<Vec<String>>>,
    step: usize,
    answers: Vec<String>,
}

impl Server {
    fn note(&self, line: &str) {
        if let Ok(mut log) = self.log.lock() {
            log.push(line.to_string());
        }
    }

    fn ask(&self) -> Auth {
        let request = self.policy.conversation[self.step].clone();
        Auth::Partial {
            name: Cow::Owned(request.name),
            instructions: Cow::Owned(request.instructions),
            prompts: Cow::Owned(
                request
                    .prompts
                    .into_iter()
                    .map(|(text, echo)| (Cow::Owned(text), echo))
                    .collect(),
            ),
        }
    }
}

impl russh::server::Handler for Server {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        self.note("none");
        Ok(if self.policy.none_accepted {
            Auth::Accept
        } else {
            self.policy.refusal()
        })
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        self.note("publickey");
        let known = self
            .policy
            .key
            .as_ref()
            .is_some_and(|known| known.key_data() == key.public_key.key_data());
        Ok(if known {
            self.policy.verdict(MethodKind::PublicKey)
        } else {
            self.policy.refusal()
        })
    }

    async fn auth_password(&mut self, _user: &str, password: &str) -> Result<Auth, Self::Error> {
        self.note("password");
        Ok(if self.policy.password.as_deref() == Some(password) {
            self.policy.verdict(MethodKind::Password)
        } else {
            self.policy.refusal()
        })
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        _user: &str,
        _submethods: &str,
        response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        if self.policy.endless {
            self.note("keyboard-interactive request");
            return Ok(Auth::Partial {
                name: Cow::Borrowed(""),
                instructions: Cow::Borrowed(""),
                prompts: Cow::Borrowed(&[]),
            });
        }
        let Some(response) = response else {
            self.note("keyboard-interactive");
            self.step = 0;
            self.answers.clear();
            if self.policy.conversation.is_empty() {
                return Ok(self.policy.refusal());
            }
            return Ok(self.ask());
        };
        if self.policy.stalls {
            std::future::pending::<()>().await;
        }
        self.answers
            .extend(response.map(|answer| String::from_utf8_lossy(&answer).into_owned()));
        self.step += 1;
        if self.step < self.policy.conversation.len() {
            return Ok(self.ask());
        }
        Ok(if self.answers == self.policy.expected {
            self.policy.verdict(MethodKind::KeyboardInteractive)
        } else {
            self.policy.refusal()
        })
    }
}

/// Trusts any host key: host keys are not what these tests are about.
struct Client;

impl russh::client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(&mut self, _: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

fn random_key() -> PrivateKey {
    // russh's own `PrivateKey::random` wants a newer rand_core than this crate's rand.
    PrivateKey::from(Ed25519Keypair::from_seed(&rand::random::<[u8; 32]>()))
}

/// A home directory with one identity file, `id_test`, for configurations to name.
struct Home {
    directory: tempfile::TempDir,
    key: PrivateKey,
}

impl Home {
    fn new() -> Home {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let key = random_key();
        let path = directory.path().join("id_test");
        let text = key
            .to_openssh(LineEnding::LF)
            .expect("an ed25519 key encodes");
        std::fs::write(&path, text.as_bytes()).expect("write the key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        Home { directory, key }
    }

    fn public(&self) -> PublicKey {
        self.key.public_key().clone()
    }

    /// `box` as alice at `host`, with `id_test` as its identity and `lines` before the rest.
    fn config(&self, host: &str, lines: &str) -> HostConfig {
        let local = LocalContext {
            user: "alice".to_string(),
            uid: nix::unistd::getuid().as_raw(),
            home: self.directory.path().to_path_buf(),
            hostname: "laptop".to_string(),
        };
        let text = format!(
            "{lines}\nHost *\n  HostName {host}\n  User alice\n  IdentityFile {}\n",
            self.directory.path().join("id_test").display()
        );
        resolve_from_text("box", &Overrides::default(), "test.conf", &text, &local)
            .expect("the test configuration resolves")
    }
}

/// Logs in to a server following `policy`, asking through `keys`; the outcome, and what the
/// server was asked in order.
async fn login(
    policy: Policy,
    config: &HostConfig,
    keys: &KeyStore,
    interaction: Interaction,
) -> (Result<Authenticated>, Vec<String>) {
    let (client_side, server_side) = tokio::io::duplex(1 << 16);
    let server_config = Arc::new(russh::server::Config {
        auth_rejection_time: Duration::ZERO,
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![random_key()],
        methods: MethodSet::from(&policy.methods[..]),
        ..Default::default()
    });
    let log = Arc::new(Mutex::new(Vec::new()));
    let server = Server {
        policy,
        log: log.clone(),
        step: 0,
        answers: Vec::new(),
    };
    tokio::spawn(async move {
        if let Ok(session) = russh::server::run_stream(server_config, server_side, server).await {
            let _ = session.await;
        }
    });
    let mut handle = russh::client::connect_stream(
        Arc::new(russh::client::Config::default()),
        client_side,
        Client,
    )
    .await
    .expect("the handshake with the test server");
    let authenticator = Authenticator {
        config,
        keys,
        interaction,
        agent_socket: None,
    };
    let outcome = authenticator.authenticate(&mut handle, "box").await;
    let log = log.lock().map(|log| log.clone()).unwrap_or_default();
    (outcome, log)
}

fn scripted(answers: &[&str]) -> (Arc<Script>, KeyStore) {
    let script = Arc::new(Script::new(answers));
    let keys = KeyStore::with_answerer(script.clone());
    (script, keys)
}

/// The whole text of an error: message and hint.
fn said(error: &Error) -> String {
    format!(
        "{}\nhint: {}",
        error.message(),
        error.hint().unwrap_or_default()
    )
}

const CODE_PROMPT: &str = "(alice@box.example) Verification code: ";

#[tokio::test]
async fn a_key_accepted_in_part_goes_on_with_keyboard_interactive() {
    let home = Home::new();
    let policy = Policy {
        methods: vec![MethodKind::PublicKey],
        key: Some(home.public()),
        then: vec![(MethodKind::PublicKey, vec![MethodKind::KeyboardInteractive])],
        conversation: vec![request(&[("Verification code: ", false)])],
        expected: vec!["123456".into()],
        ..Policy::default()
    };
    let (script, keys) = scripted(&["123456"]);
    let config = home.config("box.example", "");
    let (outcome, log) = login(policy, &config, &keys, Interaction::Terminal).await;
    let authenticated = outcome.expect("logged in");
    assert_eq!(log, ["none", "publickey", "keyboard-interactive"]);
    assert!(
        authenticated.method.starts_with("publickey (key file ")
            && authenticated.method.ends_with(") + keyboard-interactive"),
        "{}",
        authenticated.method
    );
    assert_eq!(authenticated.summary, "key id_test + keyboard-interactive");
    assert!(authenticated.interactive);
    assert_eq!(script.transcript(), [format!("ask hidden: {CODE_PROMPT}")]);
}

#[tokio::test]
async fn a_key_accepted_in_part_without_a_terminal_says_what_else_is_wanted() {
    let home = Home::new();
    let policy = Policy {
        methods: vec![MethodKind::PublicKey],
        key: Some(home.public()),
        then: vec![(MethodKind::PublicKey, vec![MethodKind::KeyboardInteractive])],
        conversation: vec![request(&[("Verification code: ", false)])],
        expected: vec!["123456".into()],
        ..Policy::default()
    };
    let (script, keys) = scripted(&[]);
    let config = home.config("box.example", "");
    let (outcome, log) = login(policy, &config, &keys, Interaction::Batch).await;
    let error = outcome.expect_err("no one to answer");
    assert_eq!(error.kind(), crate::ErrorKind::Auth);
    let text = said(&error);
    assert_eq!(log, ["none", "publickey"]);
    assert!(
        text.contains("(the server accepts: keyboard-interactive)")
            && text.contains("(ssh-ed25519 SHA256:")
            && text.contains("accepted, and the server then asks for more: keyboard-interactive")
            && text.contains(
                "- keyboard-interactive: the server asks for answers (keyboard-interactive), and there is no terminal to ask them"
            ),
        "{text}"
    );
    assert!(
        text.contains(
            "the server wants typed answers besides what it accepted: run xfer from a terminal"
        ) && text.contains("--ssh-command ssh")
            && !text.contains("a key the server accepts on its own"),
        "{text}"
    );
    assert!(script.transcript().is_empty());
}

#[tokio::test]
async fn batch_mode_keeps_xfer_from_asking_and_says_so() {
    let home = Home::new();
    let policy = Policy {
        methods: vec![MethodKind::KeyboardInteractive, MethodKind::Password],
        password: Some("secret".into()),
        ..Policy::default()
    };
    let (script, keys) = scripted(&["secret"]);
    let config = home.config("box.example", "BatchMode yes");
    let (outcome, log) = login(policy, &config, &keys, Interaction::Batch).await;
    let text = said(&outcome.expect_err("nothing asked"));
    assert_eq!(log, ["none"]);
    assert!(
        text.contains("- keyboard-interactive: the server asks for answers (keyboard-interactive), and BatchMode is yes, so xfer does not ask them")
            && text.contains("- password: the server asks for a password, and BatchMode is yes, so xfer does not ask for it")
            && text.contains("from a terminal with -o BatchMode=no")
            && text.contains("--ssh-command ssh")
            && text.contains("or use a key the server accepts on its own"),
        "{text}"
    );
    assert!(script.transcript().is_empty());
}

#[tokio::test]
async fn wrong_answers_end_in_an_auth_error_after_the_configured_tries() {
    let home = Home::new();
    let policy = Policy {
        methods: vec![MethodKind::KeyboardInteractive],
        conversation: vec![request(&[("Password: ", false)])],
        expected: vec!["right".into()],
        ..Policy::default()
    };
    let (script, keys) = scripted(&["wrong-1", "wrong-2", "wrong-3", "right"]);
    let config = home.config("box.example", "");
    let (outcome, log) = login(policy.clone(), &config, &keys, Interaction::Terminal).await;
    let error = outcome.expect_err("three wrong answers");
    assert_eq!(error.kind(), crate::ErrorKind::Auth);
    assert_eq!(error.kind().exit_code(), 4);
    let text = said(&error);
    assert!(
        text.contains(
            "- keyboard-interactive: the server refused the answers to its keyboard-interactive prompts (3 tries)"
        ) && text.contains("check the user name ('alice')"),
        "{text}"
    );
    assert!(!text.contains("wrong-"), "an answer in the message: {text}");
    assert_eq!(log.len(), 4, "{log:?}");
    assert_eq!(script.transcript().len(), 3);

    // NumberOfPasswordPrompts sets the tries.
    let (script, keys) = scripted(&["wrong", "wrong", "wrong"]);
    let config = home.config("box.example", "NumberOfPasswordPrompts 1");
    let (outcome, _) = login(policy, &config, &keys, Interaction::Terminal).await;
    let text = said(&outcome.expect_err("one wrong answer"));
    assert!(text.contains("prompts (1 try)"), "{text}");
    assert_eq!(script.transcript().len(), 1);
}

#[tokio::test]
async fn a_password_is_asked_as_ssh_asks_it_and_again_after_a_refusal() {
    let home = Home::new();
    let policy = Policy {
        methods: vec![MethodKind::PublicKey, MethodKind::Password],
        password: Some("right".into()),
        ..Policy::default()
    };
    let (script, keys) = scripted(&["wrong", "right"]);
    let config = home.config("box.example", "");
    let (outcome, log) = login(policy, &config, &keys, Interaction::Terminal).await;
    let authenticated = outcome.expect("the second password is right");
    assert_eq!(authenticated.method, "password");
    assert_eq!(authenticated.summary, "password");
    assert!(authenticated.interactive);
    // The key was offered first and refused; then the password, twice.
    assert_eq!(log, ["none", "publickey", "password", "password"]);
    assert_eq!(
        script.transcript(),
        [
            "ask hidden: alice@box.example's password: ",
            "show: Permission denied, please try again.",
            "ask hidden: alice@box.example's password: ",
        ]
    );
}

#[tokio::test]
async fn a_password_accepted_in_part_goes_on_with_keyboard_interactive() {
    let home = Home::new();
    let policy = Policy {
        methods: vec![MethodKind::Password],
        password: Some("right".into()),
        then: vec![(MethodKind::Password, vec![MethodKind::KeyboardInteractive])],
        conversation: vec![request(&[("Verification code: ", false)])],
        expected: vec!["123456".into()],
        ..Policy::default()
    };
    let (script, keys) = scripted(&["right", "123456"]);
    let config = home.config("box.example", "");
    let (outcome, log) = login(policy, &config, &keys, Interaction::Terminal).await;
    let authenticated = outcome.expect("logged in");
    assert_eq!(log, ["none", "password", "keyboard-interactive"]);
    assert_eq!(authenticated.method, "password + keyboard-interactive");
    assert!(authenticated.interactive);
    assert_eq!(
        script.transcript(),
        [
            "ask hidden: alice@box.example's password: ".to_string(),
            format!("ask hidden: {CODE_PROMPT}"),
        ]
    );
}

#[tokio::test]
async fn no_answer_typed_ends_the_method_without_sending_anything() {
    let home = Home::new();
    // A password not typed: the method is given up, and nothing is sent.
    let policy = Policy {
        methods: vec![MethodKind::Password],
        password: Some("right".into()),
        ..Policy::default()
    };
    let (_, keys) = scripted(&[]);
    let config = home.config("box.example", "");
    let (outcome, log) = login(policy, &config, &keys, Interaction::Terminal).await;
    let text = said(&outcome.expect_err("no password"));
    assert!(
        text.contains("- password: no password was typed (end of input)"),
        "{text}"
    );
    assert_eq!(log, ["none"]);

    // Answers not typed: the server waits for them, so the round ends there.
    let policy = Policy {
        methods: vec![MethodKind::KeyboardInteractive, MethodKind::Password],
        password: Some("right".into()),
        conversation: vec![request(&[("Password: ", false)])],
        expected: vec!["right".into()],
        ..Policy::default()
    };
    let (_, keys) = scripted(&[]);
    let (outcome, log) = login(policy, &config, &keys, Interaction::Terminal).await;
    let error = outcome.expect_err("no answer");
    assert_eq!(error.kind(), crate::ErrorKind::Auth);
    let text = said(&error);
    assert!(
        text.contains("- keyboard-interactive: no answer was typed (end of input)"),
        "{text}"
    );
    assert_eq!(log, ["none", "keyboard-interactive"]);
}

#[tokio::test]
async fn wrong_passwords_end_in_an_auth_error_naming_the_tries() {
    let home = Home::new();
    let policy = Policy {
        methods: vec![MethodKind::Password],
        password: Some("right".into()),
        ..Policy::default()
    };
    let (_, keys) = scripted(&["hunter1", "hunter2", "hunter3"]);
    let config = home.config("box.example", "");
    let (outcome, log) = login(policy, &config, &keys, Interaction::Terminal).await;
    let error = outcome.expect_err("three wrong passwords");
    assert_eq!(error.kind(), crate::ErrorKind::Auth);
    let text = said(&error);
    assert!(
        text.contains("- password: the server refused the password (3 tries)"),
        "{text}"
    );
    assert!(
        !text.contains("hunter"),
        "a password in the message: {text}"
    );
    assert_eq!(log, ["none", "password", "password", "password"]);
}

#[tokio::test]
async fn preferred_authentications_and_the_switches_choose_the_order() {
    let home = Home::new();
    let policy = Policy {
        methods: vec![
            MethodKind::PublicKey,
            MethodKind::KeyboardInteractive,
            MethodKind::Password,
        ],
        key: Some(home.public()),
        password: Some("right".into()),
        conversation: vec![request(&[("Password: ", false)])],
        expected: vec!["right".into()],
        ..Policy::default()
    };
    let cases = [
        ("", vec!["none", "publickey"], "key id_test"),
        (
            "PreferredAuthentications password,publickey",
            vec!["none", "password"],
            "password",
        ),
        (
            "PreferredAuthentications gssapi-with-mic,keyboard-interactive,password",
            vec!["none", "keyboard-interactive"],
            "keyboard-interactive",
        ),
        (
            "PreferredAuthentications keyboard-interactive,password\nKbdInteractiveAuthentication no",
            vec!["none", "password"],
            "password",
        ),
    ];
    for (lines, expected_log, summary) in cases {
        let (_, keys) = scripted(&["right"]);
        let config = home.config("box.example", lines);
        let (outcome, log) = login(policy.clone(), &config, &keys, Interaction::Terminal).await;
        let authenticated = outcome.unwrap_or_else(|error| panic!("{lines}: {}", said(&error)));
        assert_eq!(log, expected_log, "{lines}");
        assert_eq!(authenticated.summary, summary, "{lines}");
    }

    // Everything the server takes switched off or left out: nothing is asked, and the refusal
    // says why each was not tried.
    let (script, keys) = scripted(&["right"]);
    let config = home.config(
        "box.example",
        "PreferredAuthentications publickey,password\nPasswordAuthentication no",
    );
    let mut policy = policy;
    policy.key = None;
    let (outcome, _) = login(policy, &config, &keys, Interaction::Terminal).await;
    let text = said(&outcome.expect_err("nothing to try"));
    assert!(
        text.contains("- keyboard-interactive: not tried: PreferredAuthentications leaves it out")
            && text.contains("- password: not tried: PasswordAuthentication is no"),
        "{text}"
    );
    assert!(script.transcript().is_empty());
}

#[tokio::test]
async fn methods_xfer_cannot_do_point_to_the_system_ssh() {
    let home = Home::new();
    let policy = Policy {
        methods: vec![MethodKind::GssapiWithMic, MethodKind::HostBased],
        ..Policy::default()
    };
    let (script, keys) = scripted(&[]);
    let config = home.config("box.example", "");
    let (outcome, log) = login(policy, &config, &keys, Interaction::Terminal).await;
    let error = outcome.expect_err("nothing xfer can do");
    assert_eq!(error.kind(), crate::ErrorKind::Auth);
    let text = said(&error);
    assert_eq!(log, ["none"]);
    assert!(
        text.contains("(the server accepts: gssapi-with-mic, hostbased)")
            && text.contains("- hostbased: not tried: xfer does not do this method itself")
            && text.contains(
                "xfer does not do gssapi-with-mic, hostbased itself; --ssh-command ssh logs in with the system's ssh instead"
            )
            && !text.contains("no key was available"),
        "{text}"
    );
    assert!(script.transcript().is_empty());
}

#[tokio::test]
async fn requests_without_prompts_are_answered_empty_and_ask_no_one() {
    let home = Home::new();
    let policy = Policy {
        methods: vec![MethodKind::KeyboardInteractive],
        conversation: vec![request(&[]), request(&[])],
        expected: Vec::new(),
        ..Policy::default()
    };
    let (script, keys) = scripted(&[]);
    let config = home.config("box.example", "");
    let (outcome, _) = login(policy, &config, &keys, Interaction::Terminal).await;
    let authenticated = outcome.expect("logged in without a question");
    assert_eq!(authenticated.method, "keyboard-interactive");
    assert!(!authenticated.interactive);
    assert!(script.transcript().is_empty());
}

#[tokio::test]
async fn a_server_that_takes_no_authentication_lets_the_user_in() {
    let home = Home::new();
    let policy = Policy {
        methods: vec![MethodKind::Password],
        none_accepted: true,
        ..Policy::default()
    };
    let (script, keys) = scripted(&[]);
    let config = home.config("box.example", "");
    let (outcome, log) = login(policy, &config, &keys, Interaction::Terminal).await;
    let authenticated = outcome.expect("logged in");
    assert_eq!(authenticated.summary, "none");
    assert!(!authenticated.interactive);
    assert_eq!(log, ["none"]);
    assert!(script.transcript().is_empty());
}

#[tokio::test]
async fn a_server_asking_on_and_on_is_given_up() {
    let home = Home::new();
    let policy = Policy {
        methods: vec![MethodKind::KeyboardInteractive],
        endless: true,
        ..Policy::default()
    };
    let (_, keys) = scripted(&[]);
    let config = home.config("box.example", "");
    let (outcome, log) = login(policy, &config, &keys, Interaction::Terminal).await;
    let error = outcome.expect_err("given up");
    assert_eq!(error.kind(), crate::ErrorKind::Auth);
    assert!(
        error
            .message()
            .contains("more than 16 requests in one exchange"),
        "{}",
        error.message()
    );
    assert_eq!(log.len(), 1 + MAX_INFO_REQUESTS + 1, "{log:?}");

    // Too many prompts at once: given up before the first is asked.
    let prompts: Vec<(String, bool)> = (0..=MAX_PROMPTS)
        .map(|index| (format!("Question {index}: "), true))
        .collect();
    let policy = Policy {
        methods: vec![MethodKind::KeyboardInteractive],
        conversation: vec![Request {
            prompts,
            ..Request::default()
        }],
        ..Policy::default()
    };
    let (script, keys) = scripted(&["x"]);
    let (outcome, _) = login(policy, &config, &keys, Interaction::Terminal).await;
    let error = outcome.expect_err("given up");
    assert!(
        error.message().contains("33 prompts in one request"),
        "{}",
        error.message()
    );
    assert!(script.transcript().is_empty());
}

#[tokio::test]
async fn a_server_always_wanting_one_more_method_is_given_up() {
    let home = Home::new();
    let policy = Policy {
        methods: vec![MethodKind::KeyboardInteractive],
        conversation: vec![request(&[])],
        then: vec![(
            MethodKind::KeyboardInteractive,
            vec![MethodKind::KeyboardInteractive],
        )],
        ..Policy::default()
    };
    let (script, keys) = scripted(&[]);
    let config = home.config("box.example", "NumberOfPasswordPrompts 1000");
    let (outcome, log) = login(policy, &config, &keys, Interaction::Terminal).await;
    let error = outcome.expect_err("given up");
    assert_eq!(error.kind(), crate::ErrorKind::Auth);
    assert!(
        error
            .message()
            .contains("accepted 9 methods in part and still wants more"),
        "{}",
        error.message()
    );
    assert_eq!(log.len(), 1 + MAX_PARTIAL_SUCCESSES + 1, "{log:?}");
    assert!(script.transcript().is_empty());
}

#[tokio::test]
async fn the_servers_text_reaches_the_terminal_printable() {
    let home = Home::new();
    let policy = Policy {
        methods: vec![MethodKind::KeyboardInteractive],
        conversation: vec![Request {
            name: "\u{1b}]0;owned\u{7}Login".into(),
            instructions: "First line\r\nSecond \u{1b}[2J line\n\n".into(),
            prompts: vec![
                ("User \u{1b}[31mname: ".into(), true),
                ("Your code expires.\r\nCode\u{202e}: ".into(), false),
            ],
        }],
        expected: vec!["alice".into(), "42".into()],
        ..Policy::default()
    };
    let (script, keys) = scripted(&["alice", "42"]);
    let config = home.config("box.example", "");
    let (outcome, _) = login(policy, &config, &keys, Interaction::Terminal).await;
    assert!(outcome.expect("logged in").interactive);
    assert_eq!(
        script.transcript(),
        [
            "show: \\x1b]0;owned\\x07Login",
            "show: First line\nSecond \\x1b[2J line",
            "ask shown: (alice@box.example) User \\x1b[31mname: ",
            "ask hidden: (alice@box.example) Your code expires.\nCode\\u{202e}: ",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn typing_may_take_longer_than_a_step_but_the_server_may_not() {
    let home = Home::new();
    let policy = Policy {
        methods: vec![MethodKind::KeyboardInteractive],
        conversation: vec![request(&[("Verification code: ", false)])],
        expected: vec!["123456".into()],
        ..Policy::default()
    };
    let script = Arc::new(Script::new(&["123456"]).typing_for(AUTH_STEP_TIMEOUT * 3));
    let keys = KeyStore::with_answerer(script.clone());
    let config = home.config("box.example", "");
    let (outcome, _) = login(policy.clone(), &config, &keys, Interaction::Terminal).await;
    assert!(outcome.expect("a slow typist logs in").interactive);

    let stalling = Policy {
        stalls: true,
        ..policy
    };
    let (_, keys) = scripted(&["123456"]);
    let started = tokio::time::Instant::now();
    let (outcome, _) = login(stalling, &config, &keys, Interaction::Terminal).await;
    let error = outcome.expect_err("the server never answers");
    assert_eq!(error.kind(), crate::ErrorKind::Connect);
    assert!(
        error.message().contains("stopped answering"),
        "{}",
        error.message()
    );
    assert!(started.elapsed() < AUTH_STEP_TIMEOUT * 2);
}

#[tokio::test(start_paused = true)]
async fn connections_authenticating_at_once_ask_one_after_the_other() {
    let home = Home::new();
    let policy = Policy {
        methods: vec![MethodKind::KeyboardInteractive],
        conversation: vec![
            request(&[("Password: ", false)]),
            request(&[("Verification code: ", false)]),
        ],
        expected: vec!["pw".into(), "code".into()],
        ..Policy::default()
    };
    // Each answer takes a while, so that without turns the second connection's questions
    // would come between the first one's.
    let script =
        Arc::new(Script::new(&["pw", "code", "pw", "code"]).typing_for(Duration::from_secs(5)));
    let keys = KeyStore::with_answerer(script.clone());
    let first = home.config("first.example", "");
    let second = home.config("second.example", "");
    let ((one, _), (two, _)) = tokio::join!(
        login(policy.clone(), &first, &keys, Interaction::Terminal),
        login(policy, &second, &keys, Interaction::Terminal),
    );
    assert!(one.is_ok() && two.is_ok());
    let transcript = script.transcript();
    let hosts: Vec<&str> = transcript
        .iter()
        .map(|line| {
            if line.contains("first.example") {
                "first"
            } else {
                "second"
            }
        })
        .collect();
    assert!(
        hosts == ["first", "first", "second", "second"]
            || hosts == ["second", "second", "first", "first"],
        "{transcript:?}"
    );
}

#[test]
fn the_next_method_follows_the_order_among_what_the_server_takes() {
    let home = Home::new();
    let config = home.config("box.example", "");
    let order = config.authentication_order();
    let server = MethodSet::from(
        &[
            MethodKind::Password,
            MethodKind::GssapiWithMic,
            MethodKind::PublicKey,
            MethodKind::KeyboardInteractive,
        ][..],
    );
    let mut position = 0;
    let mut tried = Vec::new();
    while let Some(method) = next_method(&order, &mut position, &server, &config, &[]) {
        tried.push(method);
    }
    assert_eq!(
        tried,
        [
            Method::PublicKey,
            Method::KeyboardInteractive,
            Method::Password
        ]
    );
    // Given up, or not taken by the server: skipped.
    let mut position = 0;
    let only_password = MethodSet::from(&[MethodKind::Password][..]);
    assert_eq!(
        next_method(&order, &mut position, &only_password, &config, &[]),
        Some(Method::Password)
    );
    let mut position = 0;
    assert_eq!(
        next_method(
            &order,
            &mut position,
            &only_password,
            &config,
            &[Method::Password]
        ),
        None
    );
    // Switched off in the configuration.
    let config = home.config(
        "box.example",
        "PasswordAuthentication no\nKbdInteractiveAuthentication no",
    );
    let mut position = 0;
    assert_eq!(
        next_method(&order, &mut position, &server, &config, &[]),
        Some(Method::PublicKey)
    );
    assert_eq!(
        next_method(&order, &mut position, &server, &config, &[]),
        None
    );
}

#[test]
fn shown_prompts_keep_their_lines_and_spaces_and_end_with_the_question() {
    assert_eq!(shown_prompt("Password: "), "Password: ");
    assert_eq!(
        shown_prompt("Notice: read me\nPassword: "),
        "Notice: read me\nPassword: "
    );
    assert_eq!(shown_prompt("a\u{1b}[2J\r\nb: "), "a\\x1b[2J\nb: ");
    let long = format!("{}Question: ", "x\n".repeat(MAX_SHOWN_LINES + 5));
    let shown = shown_prompt(&long);
    assert_eq!(shown.lines().count(), MAX_SHOWN_LINES + 1);
    assert!(shown.starts_with("(6 lines before)\n"), "{shown}");
    assert!(shown.ends_with("\nQuestion: "), "{shown}");
}

#[test]
fn shown_lines_are_printable_trimmed_and_bounded() {
    assert_eq!(shown_lines(""), None);
    assert_eq!(shown_lines("\r\n\n"), None);
    assert_eq!(
        shown_lines("Password expires in 3 days.\r\n").as_deref(),
        Some("Password expires in 3 days.")
    );
    assert_eq!(
        shown_lines("a\n\nb\u{1b}[2J\n").as_deref(),
        Some("a\n\nb\\x1b[2J")
    );
    let long = "x\n".repeat(MAX_SHOWN_LINES + 5);
    let shown = shown_lines(&long).expect("something to show");
    assert_eq!(shown.lines().count(), MAX_SHOWN_LINES + 1);
    assert!(shown.ends_with("(5 more lines)"));
    let wide = "y".repeat(MAX_SHOWN_CHARACTERS * 2);
    let shown = shown_lines(&wide).expect("something to show");
    assert_eq!(shown.chars().count(), MAX_SHOWN_CHARACTERS + 3);
}

fn write_key(path: &Path, key: &PrivateKey) {
    let text = key.to_openssh(LineEnding::LF).expect("the key encodes");
    std::fs::write(path, text.as_bytes()).expect("write the key");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// A security key's file is skipped with a word on the agent, before any attempt to read or
/// sign with it; an ordinary key file beside it still loads.
#[tokio::test]
async fn a_security_key_file_is_left_to_the_agent() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let keypair = Ed25519Keypair::from_seed(&[7; 32]);
    // As `ssh-keygen -t ed25519-sk` writes it: the public key, flags (user presence) and the
    // token's key handle.
    let public = russh::keys::ssh_key::public::SkEd25519::new(keypair.public, "ssh:");
    let handle = SkEd25519::new(public, 0x01, vec![9; 64]).expect("a key handle");
    let security_key = dir.path().join("id_ed25519_sk");
    write_key(
        &security_key,
        &PrivateKey::new(KeypairData::SkEd25519(handle), "token").expect("a security key"),
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
    let config = resolve_from_text("box", &Overrides::default(), "test.conf", "", &local)
        .expect("the configuration resolves");
    let keys = KeyStore::default();
    let authenticator = Authenticator {
        config: &config,
        keys: &keys,
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
            .await
            .is_none()
    );
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert!(
        attempts[0].what.contains("sk-ssh-ed25519@openssh.com"),
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
            .await
            .is_some(),
        "{attempts:?}"
    );
}
