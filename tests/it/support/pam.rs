//! Logins that need something typed: a password, or a key and then a one-time code, for tests
//! of password and keyboard-interactive authentication. This module owns the local login
//! [`PASSWORD_USER`] and its password (set once per test process to a random value with
//! `chpasswd`, and held unchanged while a test uses it, since test processes of other checkouts
//! set their own); an sshd that takes that password through PAM ([`PasswordLogin`]); an sshd
//! that takes a key and then a TOTP code from `pam_google_authenticator` ([`TotpLogin`]), whose
//! PAM stack is bound over /etc/pam.d/sshd in that server's mount namespace alone, so the
//! machine's own stays as it is; and `SSH_ASKPASS` programs that answer ssh's questions without
//! a terminal and note each one ([`Askpass`]).
//!
//! It needs root (creating the login, setting its password, the mount namespace) and the
//! packages libpam-google-authenticator and oathtool, as `.ci/run` installs.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

use super::users::{self, LocalUser};
use super::{Sshd, SshdBuilder, current_user, run_with_input, run_with_timeout, running_as_root};

/// The local login whose password the tests type.
pub const PASSWORD_USER: &str = "xfer-password";
/// Its login shell.
const PASSWORD_SHELL: &str = "/bin/bash";
/// Names the test process whose password [`PASSWORD_USER`] has now, and is flock(2)ed: shared
/// while a test uses the password, exclusively to change it. Under /run, where only root can
/// create files.
const PASSWORD_LOCK: &str = "/run/xfer-test-password.lock";
/// How long a test may wait for test processes of other checkouts to finish with their
/// password before it gives up.
const PASSWORD_WAIT: Duration = Duration::from_secs(120);
/// sshd's PAM stack, which [`TotpLogin`] replaces in its own mount namespace.
const SSHD_PAM_STACK: &str = "/etc/pam.d/sshd";
/// The PAM module of libpam-google-authenticator.
const GOOGLE_AUTHENTICATOR: &str = "pam_google_authenticator.so";
/// Codes accepted around the current one: 17 is eight 30-second steps either side, so a code
/// computed a few minutes early or late (a slow CI machine) still counts.
const WINDOW_SIZE: u32 = 17;
/// The TOTP step, pam_google_authenticator's default and oathtool's.
const TIME_STEP: u64 = 30;
/// How long chpasswd or oathtool may take.
const TOOL_LIMIT: Duration = Duration::from_secs(30);

/// A random value from the kernel, for passwords and secrets nobody else can guess.
fn random_bytes(count: usize) -> Vec<u8> {
    let mut bytes = vec![0; count];
    File::open("/dev/urandom")
        .and_then(|mut source| source.read_exact(&mut bytes))
        .unwrap_or_else(|error| panic!("cannot read /dev/urandom: {error}"));
    bytes
}

/// `length` random letters and digits: nothing that a shell, `chpasswd`'s `name:password`
/// line or a terminal would treat specially.
fn random_word(length: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    random_bytes(length)
        .into_iter()
        .map(|byte| char::from(ALPHABET[usize::from(byte) % ALPHABET.len()]))
        .collect()
}

/// RFC 4648 base32 without padding, as pam_google_authenticator and `oathtool -b` read secrets.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut text = String::new();
    let (mut buffer, mut bits) = (0u32, 0);
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            text.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        text.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    text
}

/// [`PASSWORD_USER`] and what this test process set as its password.
struct PasswordState {
    user: LocalUser,
    password: String,
    /// Written into [`PASSWORD_LOCK`] by whoever set the password: this process's own, random,
    /// since a process id can come back after a run that was killed.
    token: String,
}

/// Creates [`PASSWORD_USER`] once per test process (as `users` creates its logins, under its
/// lock) and draws this process's password; [`hold_password`] sets it.
fn password_state() -> &'static PasswordState {
    static STATE: OnceLock<PasswordState> = OnceLock::new();
    STATE.get_or_init(|| {
        assert!(
            running_as_root(),
            "the password tests create the local user {PASSWORD_USER} and set its password: run them as root, as CI does"
        );
        assert!(
            Path::new(PASSWORD_SHELL).is_file(),
            "{PASSWORD_SHELL} is missing"
        );
        let lock = users::lock_user_creation();
        let user = users::ensure_user(PASSWORD_USER, PASSWORD_SHELL, None);
        drop(lock);
        PasswordState {
            user,
            password: random_word(24),
            token: random_word(16),
        }
    })
}

/// A shared hold on [`PASSWORD_LOCK`] while it names this process: no other test process
/// changes the password until it is dropped.
struct PasswordHold {
    _lock: File,
}

fn open_password_lock() -> File {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(PASSWORD_LOCK)
        .unwrap_or_else(|error| panic!("cannot open {PASSWORD_LOCK}: {error}"))
}

/// Waits (polling, within [`PASSWORD_WAIT`]) for a shared or an exclusive flock of `file`.
fn lock_within(file: &File, exclusive: bool, deadline: Instant) {
    loop {
        let attempt = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match attempt {
            Ok(()) => return,
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(20))
            }
            Err(std::fs::TryLockError::WouldBlock) => panic!(
                "{PASSWORD_LOCK} stayed locked for {PASSWORD_WAIT:?}: other test processes are using {PASSWORD_USER}'s password"
            ),
            Err(std::fs::TryLockError::Error(error)) => {
                panic!("cannot lock {PASSWORD_LOCK}: {error}")
            }
        }
    }
}

/// Makes [`PASSWORD_USER`]'s password this process's and holds it so. A shared flock cannot
/// be turned into an exclusive one without letting go, so: hold it shared and look whose
/// password is set; if another process's, let go, take it exclusively, set ours, and look
/// again.
fn hold_password(state: &PasswordState) -> PasswordHold {
    let deadline = Instant::now() + PASSWORD_WAIT;
    let owner = || fs::read_to_string(PASSWORD_LOCK).unwrap_or_default();
    loop {
        // Locks that come at once but find another process's password each time must not
        // keep a test going either.
        assert!(
            Instant::now() < deadline,
            "{PASSWORD_USER}'s password kept being changed by other test processes for {PASSWORD_WAIT:?}"
        );
        let shared = open_password_lock();
        lock_within(&shared, false, deadline);
        if owner() == state.token {
            return PasswordHold { _lock: shared };
        }
        drop(shared);

        let exclusive = open_password_lock();
        lock_within(&exclusive, true, deadline);
        // Another test of this process may have set it in between.
        if owner() != state.token {
            let line = format!("{}:{}\n", state.user.name, state.password);
            let output = run_with_input(&mut Command::new("chpasswd"), line.as_bytes(), TOOL_LIMIT);
            assert!(
                output.status.success(),
                "chpasswd for {PASSWORD_USER} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            exclusive
                .set_len(0)
                .and_then(|()| exclusive.write_all_at(state.token.as_bytes(), 0))
                .unwrap_or_else(|error| panic!("cannot write {PASSWORD_LOCK}: {error}"));
        }
    }
}

/// The caller's `extra` lines, then `ours`: ssh takes the first value it reads, so the
/// caller's win.
fn client_lines<'a>(extra: &[&'a str], ours: &[&'a str]) -> Vec<&'a str> {
    extra.iter().chain(ours).copied().collect()
}

/// What a client of these servers needs besides the harness's defaults: `BatchMode no`, since
/// batch mode turns off every question, askpass too; `NumberOfPasswordPrompts 1`, so a wrong
/// answer fails after one question instead of three and the questions can be counted.
const CLIENT_LINES: [&str; 2] = ["BatchMode no", "NumberOfPasswordPrompts 1"];

/// Options for a [`PasswordLogin`]; start one with [`PasswordLoginBuilder::start`].
#[derive(Clone, Debug)]
pub struct PasswordLoginBuilder {
    password_authentication: bool,
    authentication_methods: Option<String>,
    log_level: String,
}

impl PasswordLoginBuilder {
    /// `false`: `PasswordAuthentication no`, so only keyboard-interactive (PAM's own
    /// conversation) carries the password.
    pub fn password_authentication(mut self, enabled: bool) -> Self {
        self.password_authentication = enabled;
        self
    }

    /// sshd's `AuthenticationMethods`, e.g. `"publickey,password"`. By default
    /// `"password keyboard-interactive"` (either one), or `"keyboard-interactive"` without
    /// password authentication: never publickey alone, since the harness's client key is
    /// authorized for every login of an [`Sshd`].
    pub fn authentication_methods(mut self, methods: &str) -> Self {
        self.authentication_methods = Some(methods.to_owned());
        self
    }

    /// sshd's `LogLevel` (DEBUG1 by default; DEBUG3 shows the PAM conversation).
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.to_owned();
        self
    }

    pub fn start(self) -> PasswordLogin {
        PasswordLogin::launch(self)
    }
}

/// An sshd that logs [`PASSWORD_USER`] in with its password through PAM (the machine's own
/// /etc/pam.d/sshd: pam_unix), by password authentication, keyboard-interactive, or both.
/// Holds the password unchanged until dropped.
pub struct PasswordLogin {
    // Dropped first: no login can start once the password may change.
    sshd: Sshd,
    _hold: PasswordHold,
}

impl PasswordLogin {
    /// Password and keyboard-interactive authentication, either one, LogLevel DEBUG1, until the
    /// builder says otherwise.
    pub fn builder() -> PasswordLoginBuilder {
        PasswordLoginBuilder {
            password_authentication: true,
            authentication_methods: None,
            log_level: "DEBUG1".to_owned(),
        }
    }

    /// `PasswordLogin::builder().start()`.
    pub fn start() -> PasswordLogin {
        PasswordLogin::builder().start()
    }

    fn launch(settings: PasswordLoginBuilder) -> PasswordLogin {
        let state = password_state();
        let hold = hold_password(state);
        let password_authentication = if settings.password_authentication {
            "yes"
        } else {
            "no"
        };
        let methods = settings.authentication_methods.unwrap_or_else(|| {
            if settings.password_authentication {
                "password keyboard-interactive".to_owned()
            } else {
                "keyboard-interactive".to_owned()
            }
        });
        let sshd = SshdBuilder::new()
            .local_users()
            .log_level(&settings.log_level)
            .extra_config(&format!(
                "UsePAM yes\nKbdInteractiveAuthentication yes\nPasswordAuthentication {password_authentication}\nAuthenticationMethods {methods}"
            ))
            .start();
        PasswordLogin { sshd, _hold: hold }
    }

    pub fn sshd(&self) -> &Sshd {
        &self.sshd
    }

    /// The login: [`PASSWORD_USER`].
    pub fn user(&self) -> &'static LocalUser {
        &password_state().user
    }

    /// Its password, this test process's own.
    pub fn password(&self) -> &'static str {
        &password_state().password
    }

    /// A `Host alias` block reaching the server as [`PASSWORD_USER`], ready to be asked a
    /// password (see [`CLIENT_LINES`]), appended to the server's ssh_config; returns that
    /// file's path. `extra` lines come first and win.
    pub fn client_config(&self, alias: &str, extra: &[&str]) -> PathBuf {
        let user = format!("User {PASSWORD_USER}");
        let mut ours = CLIENT_LINES.to_vec();
        ours.push(&user);
        self.sshd
            .write_client_config(alias, &client_lines(extra, &ours))
    }
}

/// Options for a [`TotpLogin`]; start one with [`TotpLoginBuilder::start`].
#[derive(Clone, Debug)]
pub struct TotpLoginBuilder {
    log_level: String,
}

impl TotpLoginBuilder {
    /// sshd's `LogLevel` (DEBUG1 by default; DEBUG3 shows the PAM conversation).
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.to_owned();
        self
    }

    pub fn start(self) -> TotpLogin {
        TotpLogin::launch(self)
    }
}

/// An sshd that logs the user running the tests in with the harness's client key and then a
/// TOTP code: `AuthenticationMethods publickey,keyboard-interactive`, and a PAM stack whose
/// only `auth` module is pam_google_authenticator, reading a secret file the fixture writes.
/// That stack is bound over /etc/pam.d/sshd in this sshd's mount namespace only.
///
/// The secret file has neither `DISALLOW_REUSE` (which refuses a code used twice, so a second
/// login within 30 seconds would fail) nor `RATE_LIMIT` (which refuses logins past a count),
/// and a window of [`WINDOW_SIZE`] codes; `noskewadj` keeps the module from rewriting it to
/// follow a clock it believes skewed, so every login sees the same file.
pub struct TotpLogin {
    // Dropped first: the server goes before the files it reads.
    sshd: Sshd,
    secret: String,
    dir: TempDir,
}

impl TotpLogin {
    /// Key then code, LogLevel DEBUG1, until the builder says otherwise.
    pub fn builder() -> TotpLoginBuilder {
        TotpLoginBuilder {
            log_level: "DEBUG1".to_owned(),
        }
    }

    /// `TotpLogin::builder().start()`.
    pub fn start() -> TotpLogin {
        TotpLogin::builder().start()
    }

    fn launch(settings: TotpLoginBuilder) -> TotpLogin {
        assert!(
            running_as_root(),
            "the TOTP login binds its own PAM stack over {SSHD_PAM_STACK} in a mount namespace: run the tests as root, as CI does"
        );
        assert!(
            google_authenticator_installed(),
            "{GOOGLE_AUTHENTICATOR} is missing: install libpam-google-authenticator (.ci/run does)"
        );
        assert!(
            Path::new(SSHD_PAM_STACK).is_file(),
            "{SSHD_PAM_STACK} is missing: install openssh-server"
        );
        let dir = tempfile::Builder::new()
            .prefix("xfer-totp-")
            .tempdir()
            .unwrap_or_else(|error| {
                panic!("cannot create a directory for the TOTP login: {error}")
            });
        // 160 bits, the size google-authenticator itself draws.
        let secret = base32(&random_bytes(20));
        let secrets = dir.path().join("secrets");
        fs::create_dir(&secrets)
            .and_then(|()| fs::set_permissions(&secrets, fs::Permissions::from_mode(0o700)))
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", secrets.display()));
        // The module refuses a secret file that others may read, or that is not owned by the
        // user it reads it as (root, as `user=root` says).
        write_private(
            &secrets.join(current_user()),
            &format!("{secret}\n\" TOTP_AUTH\n\" WINDOW_SIZE {WINDOW_SIZE}\n"),
            0o400,
        );
        // PAM splits a module's options at white space.
        assert!(
            !secrets.display().to_string().contains(char::is_whitespace),
            "the temporary directory {} has white space in its path",
            secrets.display()
        );
        let stack = pam_stack_path(dir.path());
        write_private(
            &stack,
            &format!(
                "# Written by the xfer test harness: sshd's PAM stack for one test server, bound over\n\
                 # {SSHD_PAM_STACK} in that server's mount namespace only.\n\
                 # No nullok: a login with no secret file is refused instead of let in on its key.\n\
                 auth required {GOOGLE_AUTHENTICATOR} secret={}/${{USER}} user=root noskewadj\n\
                 # Only authentication is under test; the machine's account and session modules\n\
                 # (loginuid, systemd, motd) would add nothing but differences between machines.\n\
                 account required pam_permit.so\n\
                 session required pam_permit.so\n\
                 password required pam_deny.so\n",
                secrets.display()
            ),
            0o644,
        );
        let sshd = SshdBuilder::new()
            .log_level(&settings.log_level)
            .extra_config(
                "UsePAM yes\nKbdInteractiveAuthentication yes\nPasswordAuthentication no\nAuthenticationMethods publickey,keyboard-interactive",
            )
            .private_mount(&stack, Path::new(SSHD_PAM_STACK))
            .start();
        TotpLogin { sshd, secret, dir }
    }

    pub fn sshd(&self) -> &Sshd {
        &self.sshd
    }

    /// The shared secret, base32, as an authenticator app would be given it.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The PAM stack bound over /etc/pam.d/sshd for this server.
    pub fn pam_stack(&self) -> PathBuf {
        pam_stack_path(self.dir.path())
    }

    /// The code an authenticator shows now: `oathtool --totp -b SECRET`.
    pub fn current_code(&self) -> String {
        oathtool(&self.secret, None, 0)
            .into_iter()
            .next()
            .expect("oathtool printed a code")
    }

    /// A well-formed code the server refuses: six digits that are none of the codes from
    /// [`WINDOW_SIZE`] steps before now to as many after, twice the window the server
    /// accepts, so it stays wrong however long the test takes to send it.
    pub fn wrong_code(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is past 1970")
            .as_secs();
        let steps = u64::from(WINDOW_SIZE);
        let near = oathtool(&self.secret, Some(now - steps * TIME_STEP), 2 * steps);
        let current: u32 = self.current_code().parse().expect("a code is digits");
        (1..)
            .map(|offset| format!("{:06}", (current + offset) % 1_000_000))
            .find(|code| !near.contains(code))
            .expect("a million codes are not all near")
    }

    /// A `Host alias` block reaching the server as the user running the tests with the
    /// harness's client key, ready to be asked a code (see [`CLIENT_LINES`]), appended to the
    /// server's ssh_config; returns that file's path. `extra` lines come first and win.
    pub fn client_config(&self, alias: &str, extra: &[&str]) -> PathBuf {
        self.sshd
            .write_client_config(alias, &client_lines(extra, &CLIENT_LINES))
    }
}

/// Where a [`TotpLogin`] whose directory is `dir` writes its PAM stack.
fn pam_stack_path(dir: &Path) -> PathBuf {
    dir.join("pam-sshd")
}

/// Whether libpam-google-authenticator's module is where PAM looks for modules (a multiarch
/// directory such as /usr/lib/x86_64-linux-gnu/security, or /usr/lib/security).
fn google_authenticator_installed() -> bool {
    ["/usr/lib", "/lib", "/usr/lib64", "/lib64"]
        .iter()
        .any(|root| {
            let root = Path::new(root);
            root.join("security").join(GOOGLE_AUTHENTICATOR).is_file()
                || fs::read_dir(root)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|entry| {
                        entry
                            .path()
                            .join("security")
                            .join(GOOGLE_AUTHENTICATOR)
                            .is_file()
                    })
        })
}

/// `oathtool --totp -b SECRET`, at `at` (seconds since 1970; now if `None`), printing the
/// code then `following` more: one code a line.
fn oathtool(secret: &str, at: Option<u64>, following: u64) -> Vec<String> {
    let mut command = Command::new("oathtool");
    command.args(["--totp", "-b"]);
    if let Some(at) = at {
        command.arg(format!("--now=@{at}"));
    }
    if following > 0 {
        command.arg(format!("--window={following}"));
    }
    command.arg(secret);
    let output = run_with_timeout(&mut command, TOOL_LIMIT);
    assert!(
        output.status.success(),
        "{command:?} failed (is oathtool installed? .ci/run installs it): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let codes: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(
        !codes.is_empty()
            && codes
                .iter()
                .all(|code| code.len() == 6 && code.bytes().all(|byte| byte.is_ascii_digit())),
        "{command:?} printed no codes: {codes:?}"
    );
    codes
}

/// An `SSH_ASKPASS` program in a directory of its own: ssh runs it for each question it would
/// ask on a terminal (a password, a keyboard-interactive prompt), with the prompt as its
/// argument, and takes what it prints as the answer. It notes every prompt, one a line, so a
/// test can see how many questions were asked and which.
pub struct Askpass {
    dir: TempDir,
}

impl Askpass {
    /// Answers every question with `answer`.
    pub fn answering(answer: &str) -> Askpass {
        let askpass = Askpass::empty();
        let file = askpass.dir.path().join("answer");
        write_private(&file, &format!("{answer}\n"), 0o600);
        askpass.write_script(&format!("exec cat {}", quoted(&file)));
        askpass
    }

    /// Answers every question with the TOTP code current when asked, from `secret` (base32),
    /// as an authenticator app would show it: `oathtool --totp -b SECRET`.
    pub fn totp(secret: &str) -> Askpass {
        let askpass = Askpass::empty();
        let file = askpass.dir.path().join("secret");
        write_private(&file, secret, 0o600);
        askpass.write_script(&format!(
            "exec oathtool --totp -b \"$(cat {})\"",
            quoted(&file)
        ));
        askpass
    }

    fn empty() -> Askpass {
        Askpass {
            dir: tempfile::Builder::new()
                .prefix("xfer-askpass-")
                .tempdir()
                .unwrap_or_else(|error| panic!("cannot create a directory for askpass: {error}")),
        }
    }

    /// The program: notes the prompt (newlines made spaces, so one question is one line),
    /// then runs `answer`.
    fn write_script(&self, answer: &str) {
        let log = quoted(&self.log_path());
        write_private(
            &self.script(),
            &format!(
                "#!/bin/sh\n\
                 # Written by the xfer test harness: answers ssh's question without a terminal.\n\
                 printf '%s' \"$1\" | tr '\\n' ' ' >> {log}\n\
                 printf '\\n' >> {log}\n\
                 {answer}\n"
            ),
            0o700,
        );
    }

    /// The program's path.
    pub fn script(&self) -> PathBuf {
        self.dir.path().join("askpass")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("asked")
    }

    /// Makes ssh (or xfer) run by `command` ask this program: `SSH_ASKPASS` and
    /// `SSH_ASKPASS_REQUIRE=force`, which uses it even with a terminal and without a display;
    /// `DISPLAY` is removed to show that none is needed.
    pub fn configure<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        command
            .env("SSH_ASKPASS", self.script())
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env_remove("DISPLAY")
    }

    /// The prompt of every question asked so far, in order.
    pub fn prompts(&self) -> Vec<String> {
        fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// How many questions were asked so far.
    pub fn calls(&self) -> usize {
        self.prompts().len()
    }
}

/// `path` as one word of a shell command line. Temporary directories have no quotes in their
/// names; one that had would break the script, so it is refused.
fn quoted(path: &Path) -> String {
    let text = path.display().to_string();
    assert!(!text.contains('\''), "a quote in {text}");
    format!("'{text}'")
}

/// Writes `text` to a new file that has `mode` from the start, so a secret is never readable
/// by others even for a moment.
fn write_private(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
}
