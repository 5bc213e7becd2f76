//! The logins of the harness that need something typed (`support::pam`), checked with OpenSSH's
//! own client before xfer is pointed at them:
//!
//! - the password login: the password, given by an askpass program, logs in and runs a command,
//!   asked once; a wrong one is refused, by the password check; with password authentication
//!   off, only keyboard-interactive carries it, and sshd's log shows PAM asking for it there;
//!   typed on a terminal when ssh's prompt appears, it logs in without being echoed; after the
//!   key, when the server asks for both, it logs in to the login's own home;
//! - the key-then-code login: the key and the current TOTP code log in, the code asked exactly
//!   once, by keyboard-interactive after a partial success of the key; a wrong code is refused
//!   after the key was accepted; without the key, the code is never asked; and the machine's
//!   own PAM stack never sees the one bound over it for that server.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::pam::{Askpass, PASSWORD_USER, PasswordLogin, TotpLogin};
use crate::support::{Conversation, Sshd, current_user, run_with_timeout, said, text};

/// Bound on one ssh run: a login on loopback takes well under a second, a refused password
/// about two (pam_unix's delay), but CI machines are small and busy.
const LIMIT: Duration = Duration::from_secs(30);
/// Bound on one thing a terminal session is waited for.
const WAIT: Duration = Duration::from_secs(20);
/// Bound on waiting for a line of sshd's log.
const LOG_WAIT: Duration = Duration::from_secs(10);

/// `ssh -F config alias remote_command`, with no agent, nothing on stdin, and no askpass from
/// the environment the tests run in.
fn ssh(config: &Path, alias: &str, remote_command: &str) -> Command {
    let mut command = Command::new("ssh");
    command
        .arg("-F")
        .arg(config)
        .arg(alias)
        .arg(remote_command)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("SSH_ASKPASS")
        .env_remove("SSH_ASKPASS_REQUIRE")
        .stdin(Stdio::null());
    command
}

/// Runs `ssh -F config alias true`, answered by `askpass`.
fn run_answered(askpass: &Askpass, config: &Path, alias: &str) -> Output {
    run_with_timeout(askpass.configure(&mut ssh(config, alias, "true")), LIMIT)
}

/// Where `needle` first appears in `sshd`'s log, waiting up to [`LOG_WAIT`] for it: sshd may
/// write a line a moment after the client has seen the outcome, and on a busy machine that
/// moment is long. Panics with the log if it never appears.
fn logged(sshd: &Sshd, needle: &str) -> usize {
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let log = sshd.log();
        if let Some(at) = log.find(needle) {
            return at;
        }
        if Instant::now() >= deadline {
            panic!("{needle:?} is not in sshd's log after {LOG_WAIT:?}:\n{log}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn password_from_askpass_logs_in_and_runs_a_command() {
    let login = PasswordLogin::start();
    let config = login.client_config("password", &["PreferredAuthentications password"]);
    let askpass = Askpass::answering(login.password());
    let output = run_answered(&askpass, &config, "password");
    let log = login.sshd().log();
    assert!(output.status.success(), "{}\n{log}", said(&output));
    let prompts = askpass.prompts();
    assert!(
        prompts.len() == 1 && prompts[0].contains(&format!("{PASSWORD_USER}@127.0.0.1's password")),
        "asked {prompts:?}"
    );
    logged(
        login.sshd(),
        &format!("Accepted password for {PASSWORD_USER} from 127.0.0.1"),
    );
}

#[test]
fn wrong_password_is_refused_by_the_password_check() {
    let login = PasswordLogin::start();
    let config = login.client_config("wrong-password", &["PreferredAuthentications password"]);
    let askpass = Askpass::answering(&format!("{}-wrong", login.password()));
    let output = run_answered(&askpass, &config, "wrong-password");
    let log = login.sshd().log();
    assert!(
        !output.status.success() && said(&output).contains("Permission denied"),
        "{}\n{log}",
        said(&output)
    );
    assert_eq!(askpass.calls(), 1, "asked {:?}", askpass.prompts());
    logged(
        login.sshd(),
        &format!("Failed password for {PASSWORD_USER} from 127.0.0.1"),
    );
    let log = login.sshd().log();
    assert!(!log.contains("Accepted password"), "{log}");
}

#[test]
fn without_password_authentication_keyboard_interactive_carries_the_password() {
    let login = PasswordLogin::builder()
        .password_authentication(false)
        .log_level("DEBUG3")
        .start();

    // Password authentication is refused before anything is asked.
    let config = login.client_config("password-only", &["PreferredAuthentications password"]);
    let askpass = Askpass::answering(login.password());
    let output = run_answered(&askpass, &config, "password-only");
    assert!(
        !output.status.success()
            && said(&output).contains("Permission denied (keyboard-interactive)"),
        "{}\n{}",
        said(&output),
        login.sshd().log()
    );
    assert_eq!(askpass.calls(), 0, "asked {:?}", askpass.prompts());

    // Keyboard-interactive asks PAM's own question, once, and logs in.
    let config = login.client_config(
        "keyboard-interactive",
        &["PreferredAuthentications keyboard-interactive"],
    );
    let askpass = Askpass::answering(login.password());
    let output = run_answered(&askpass, &config, "keyboard-interactive");
    let log = login.sshd().log();
    assert!(output.status.success(), "{}\n{log}", said(&output));
    let prompts = askpass.prompts();
    assert!(
        prompts.len() == 1 && prompts[0].contains("Password:"),
        "asked {prompts:?}"
    );
    let asked = logged(login.sshd(), "PAM: sshpam_respond entering, 1 responses");
    let accepted = logged(
        login.sshd(),
        &format!("Accepted keyboard-interactive/pam for {PASSWORD_USER} from 127.0.0.1"),
    );
    let log = login.sshd().log();
    assert!(asked < accepted, "{log}");
    assert!(!log.contains("Accepted password"), "{log}");
}

#[test]
fn password_typed_on_a_terminal_logs_in_unechoed() {
    let login = PasswordLogin::start();
    let config = login.client_config("terminal", &["PreferredAuthentications password"]);
    let mut terminal =
        Conversation::start_on_terminal(&ssh(&config, "terminal", "echo logged-in-as-$(id -un)"));
    terminal.expect(
        format!("{PASSWORD_USER}@127.0.0.1's password: ").as_bytes(),
        WAIT,
    );
    terminal.send(format!("{}\n", login.password()).as_bytes());
    terminal.expect(format!("logged-in-as-{PASSWORD_USER}").as_bytes(), WAIT);
    let status = terminal.finish(WAIT);
    assert!(status.success(), "{status}\n{}", terminal.transcript());
    assert!(
        !text(&terminal.stdout()).contains(login.password()),
        "the password was echoed:\n{}",
        terminal.transcript()
    );
    logged(
        login.sshd(),
        &format!("Accepted password for {PASSWORD_USER} from 127.0.0.1"),
    );
}

#[test]
fn key_then_current_code_logs_in_asking_the_code_once() {
    let login = TotpLogin::builder().log_level("DEBUG3").start();
    let config = login.client_config("totp", &[]);
    let askpass = Askpass::totp(login.secret());
    let output = run_answered(&askpass, &config, "totp");
    let log = login.sshd().log();
    assert!(output.status.success(), "{}\n{log}", said(&output));
    let prompts = askpass.prompts();
    assert!(
        prompts.len() == 1 && prompts[0].contains("Verification code:"),
        "asked {prompts:?}"
    );
    let user = current_user();
    let key = logged(
        login.sshd(),
        &format!("Partial publickey for {user} from 127.0.0.1"),
    );
    let code = logged(
        login.sshd(),
        &format!("Accepted keyboard-interactive/pam for {user} from 127.0.0.1"),
    );
    assert!(key < code, "{}", login.sshd().log());

    // The stack that asked lives in this server's mount namespace only.
    let stack = fs::read_to_string(login.pam_stack()).unwrap();
    let machine = fs::read_to_string("/etc/pam.d/sshd").unwrap();
    let secret_line = stack
        .lines()
        .find(|line| line.starts_with("auth "))
        .expect("the stack has an auth line");
    assert!(!machine.contains(secret_line), "{machine}");
}

#[test]
fn key_then_wrong_code_is_refused() {
    let login = TotpLogin::start();
    let wrong = login.wrong_code();
    let current = login.current_code();
    assert!(
        wrong != current && wrong.len() == 6 && wrong.bytes().all(|byte| byte.is_ascii_digit()),
        "wrong {wrong}, current {current}"
    );
    let config = login.client_config("wrong-code", &[]);
    let askpass = Askpass::answering(&wrong);
    let output = run_answered(&askpass, &config, "wrong-code");
    let log = login.sshd().log();
    assert!(
        !output.status.success() && said(&output).contains("Permission denied"),
        "{}\n{log}",
        said(&output)
    );
    assert_eq!(askpass.calls(), 1, "asked {:?}", askpass.prompts());
    let user = current_user();
    let key = logged(
        login.sshd(),
        &format!("Partial publickey for {user} from 127.0.0.1"),
    );
    let code = logged(
        login.sshd(),
        &format!("Failed keyboard-interactive/pam for {user} from 127.0.0.1"),
    );
    let log = login.sshd().log();
    assert!(key < code, "{log}");
    assert!(!log.contains("Accepted keyboard-interactive"), "{log}");
}

#[test]
fn code_without_the_key_is_never_asked() {
    let login = TotpLogin::start();
    let config = login.client_config("no-key", &["PubkeyAuthentication no"]);
    let askpass = Askpass::totp(login.secret());
    let output = run_answered(&askpass, &config, "no-key");
    assert!(
        !output.status.success() && said(&output).contains("Permission denied (publickey)"),
        "{}\n{}",
        said(&output),
        login.sshd().log()
    );
    assert_eq!(askpass.calls(), 0, "asked {:?}", askpass.prompts());
}

#[test]
fn key_then_password_logs_in_with_both() {
    let login = PasswordLogin::builder()
        .authentication_methods("publickey,password")
        .start();
    let config = login.client_config("key-then-password", &[]);
    let askpass = Askpass::answering(login.password());
    let output = run_with_timeout(
        askpass.configure(&mut ssh(&config, "key-then-password", "echo \"$HOME\"")),
        LIMIT,
    );
    let log = login.sshd().log();
    assert!(output.status.success(), "{}\n{log}", said(&output));
    // The login's own home from passwd, not the harness's shared one.
    assert_eq!(
        text(&output.stdout).trim_end(),
        login.user().home.display().to_string()
    );
    assert_eq!(askpass.calls(), 1, "asked {:?}", askpass.prompts());
    let key = logged(
        login.sshd(),
        &format!("Partial publickey for {PASSWORD_USER} from 127.0.0.1"),
    );
    let password = logged(
        login.sshd(),
        &format!("Accepted password for {PASSWORD_USER} from 127.0.0.1"),
    );
    assert!(key < password, "{}", login.sshd().log());
}
