//! Logins that need a person: a password, or a key and then a one-time code (real sshds with
//! PAM, `support::pam`).
//!
//! - xfer's own client, driven through a terminal: a password typed once carries a `-j 4` tree
//!   pull and a push (one login, its streams channels of it); a key then a code asks the code
//!   once, and a wrong code fails with exit 4 and says so; `BatchMode yes` and a missing
//!   terminal ask nothing and say what to do; `PreferredAuthentications` decides between a key
//!   and a password.
//! - The system ssh (`-e ssh`) with the user's `ControlMaster`: the first run asks once (through
//!   `SSH_ASKPASS`), the next asks nothing; pull, push, a delta re-run and a resume after a cut
//!   work; a secret leaks nowhere.

use crate::support::Conversation;
use crate::support::pam::{Askpass, PasswordLogin, TotpLogin};
use crate::support::{
    Proxy, ProxyMode, assert_success, run_with_timeout, said, summary, tree_digest, write_file,
    xfer_command_in,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(180);

/// A small tree in two directories, so a pull has several units.
fn make_tree(root: &Path) {
    for (index, (name, size)) in [
        ("a/one.bin", 900_000),
        ("a/two.bin", 2_000_000),
        ("b/three.bin", 50_000),
        ("c/four.txt", 12),
    ]
    .iter()
    .enumerate()
    {
        write_file(
            &root.join(name),
            40 + index as u64,
            *size,
            0o644,
            1_700_000_000,
        );
    }
}

/// A directory for control sockets: short, since a socket path has about 100 bytes.
fn socket_directory() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("cm")
        .tempdir_in("/tmp")
        .unwrap()
}

/// The lines that make ssh keep a master for the host, its socket in `directory`.
fn master_lines(directory: &Path) -> [String; 3] {
    [
        "ControlMaster auto".to_string(),
        format!("ControlPath {}/%C", directory.display()),
        "ControlPersist 120".to_string(),
    ]
}

/// Ends the master `config` names for `alias`, if one runs.
fn end_master(config: &Path, alias: &str) {
    let _ = Command::new("ssh")
        .args(["-F", config.to_str().unwrap(), "-O", "exit", alias])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `xfer ARGUMENTS -F CONFIG -e ssh`, its questions answered by `askpass`.
fn system_run(state: &Path, config: &Path, askpass: &Askpass, arguments: &[&str]) -> Output {
    let mut command = xfer_command_in(state);
    command
        .args(arguments)
        .arg("-F")
        .arg(config)
        .args(["-e", "ssh"]);
    askpass.configure(&mut command);
    run_with_timeout(&mut command, LIMIT)
}

struct MasterGuard(PathBuf, &'static str);

impl Drop for MasterGuard {
    fn drop(&mut self) {
        end_master(&self.0, self.1);
    }
}

#[test]
fn through_the_system_ssh_a_code_is_asked_once_and_the_next_run_asks_nothing() {
    let totp = TotpLogin::builder().log_level("DEBUG3").start();
    let sockets = socket_directory();
    let lines = master_lines(sockets.path());
    let extra: Vec<&str> = lines.iter().map(String::as_str).collect();
    let config = totp.client_config("mfa", &extra);
    let _master = MasterGuard(config.clone(), "mfa");
    let askpass = Askpass::totp(totp.secret());
    let work = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    make_tree(&source);
    let remote = |path: &Path| format!("mfa:{}", path.display());

    // A tree pull over four streams and a planner: one question.
    let pulled = work.path().join("pulled");
    let output = system_run(
        state.path(),
        &config,
        &askpass,
        &[
            "pull",
            "-j",
            "4",
            &remote(&source),
            pulled.to_str().unwrap(),
        ],
    );
    assert_success(&output);
    assert_eq!(tree_digest(&pulled), tree_digest(&source));
    assert_eq!(askpass.calls(), 1, "asked: {:?}", askpass.prompts());
    assert!(
        askpass.prompts()[0].contains("Verification code"),
        "{:?}",
        askpass.prompts()
    );

    // The next runs ride the master the config keeps: no question.
    let pushed = work.path().join("pushed");
    let output = system_run(
        state.path(),
        &config,
        &askpass,
        &["push", pulled.to_str().unwrap(), &remote(&pushed)],
    );
    assert_success(&output);
    assert_eq!(tree_digest(&pushed), tree_digest(&source));
    let changed = pulled.join("a/two.bin");
    let mut bytes = fs::read(&changed).unwrap();
    bytes[1_000_000] ^= 1;
    fs::write(&changed, &bytes).unwrap();
    let output = system_run(
        state.path(),
        &config,
        &askpass,
        &["push", "--json", pulled.to_str().unwrap(), &remote(&pushed)],
    );
    assert_success(&output);
    assert_eq!(tree_digest(&pushed), tree_digest(&pulled));
    let moved = summary(&output)["bytes_moved"].as_u64().unwrap();
    assert!(moved < 1_000_000, "a one-byte change moved {moved} bytes");

    // A secret: only on stdin, nowhere else, and still no question.
    let target = work.path().join("token");
    let value = crate::secret::canary();
    let mut command = xfer_command_in(state.path());
    command
        .env("CANARY_TOKEN", &value)
        .args([
            "secret",
            "push",
            "-vvv",
            "-e",
            "ssh",
            "--from-env",
            "CANARY_TOKEN",
            "--to",
        ])
        .arg(&target)
        .arg("-F")
        .arg(&config)
        .arg("mfa");
    askpass.configure(&mut command);
    let output = crate::secret::run_watched(&mut command, &value);
    assert_success(&output);
    assert_eq!(fs::read_to_string(&target).unwrap(), value);
    assert!(!said(&output).contains(&value), "xfer printed the value");
    assert!(!totp.sshd().log().contains(&value), "sshd logged the value");
    assert!(totp.sshd().log().contains("debug3"));
    assert_eq!(askpass.calls(), 1, "asked again: {:?}", askpass.prompts());
}

#[test]
fn through_the_system_ssh_a_cut_resumes_and_asks_again_only_for_the_new_login() {
    let totp = TotpLogin::start();
    let proxy = Proxy::start(totp.sshd().port());
    let sockets = socket_directory();
    let [master, path, persist] = master_lines(sockets.path());
    let port = format!("Port {}", proxy.port());
    let config = totp.client_config("via", &[&port, &master, &path, &persist]);
    let _master = MasterGuard(config.clone(), "via");
    let askpass = Askpass::totp(totp.secret());
    let work = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let size = 24 << 20;
    let file = work.path().join("big.bin");
    write_file(&file, 3, size, 0o644, 1_700_000_000);
    let source = format!("via:{}", file.display());
    let copy = work.path().join("copy.bin");

    // The link drops at half; without retries the run stops there.
    proxy.set_mode(ProxyMode::CutAllAfter(size as u64 / 2));
    let output = system_run(
        state.path(),
        &config,
        &askpass,
        &["pull", "--retries", "0", &source, copy.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(1), "{}", said(&output));
    assert_eq!(askpass.calls(), 1);
    proxy.set_mode(ProxyMode::Pass);

    // The re-run logs in again (the master died with the link), once, and keeps what arrived.
    let output = system_run(
        state.path(),
        &config,
        &askpass,
        &["pull", "--json", &source, copy.to_str().unwrap()],
    );
    assert_success(&output);
    assert_eq!(fs::read(&copy).unwrap(), fs::read(&file).unwrap());
    assert!(summary(&output)["bytes_reused"].as_u64().unwrap() > 0);
    assert_eq!(askpass.calls(), 2, "asked: {:?}", askpass.prompts());

    // Within one run: the link drops, the retry logs in once more and finishes.
    end_master(&config, "via");
    fs::remove_file(&copy).unwrap();
    proxy.set_mode(ProxyMode::CutAllAfter(size as u64 / 3));
    let output = system_run(
        state.path(),
        &config,
        &askpass,
        &["pull", &source, copy.to_str().unwrap()],
    );
    assert_success(&output);
    assert_eq!(fs::read(&copy).unwrap(), fs::read(&file).unwrap());
    assert_eq!(askpass.calls(), 4, "asked: {:?}", askpass.prompts());
}

/// `xfer ARGUMENTS -F CONFIG` on a terminal of its own, with `state` as its state directory.
fn on_terminal(state: &Path, config: &Path, arguments: &[&str]) -> Conversation {
    let mut command = xfer_command_in(state);
    command.args(arguments).arg("-F").arg(config);
    Conversation::start_on_terminal(&command)
}

/// How many times `needle` appears in what the conversation's program wrote.
fn count(conversation: &Conversation, needle: &str) -> usize {
    String::from_utf8_lossy(&conversation.stdout())
        .matches(needle)
        .count()
}

/// How many times sshd logged `needle`, waiting a moment for a line still on its way.
fn logged(login: &crate::support::Sshd, needle: &str, at_least: usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = login.log().matches(needle).count();
        if found >= at_least || std::time::Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_password_typed_once_carries_a_four_stream_pull_and_a_push() {
    // Keyboard-interactive alone carries the password, through PAM.
    let login = PasswordLogin::builder()
        .password_authentication(false)
        .start();
    let config = login.client_config("pw", &[]);
    let source = login.user().fresh_dir("interactive-source");
    make_tree(&source);
    let work = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let pulled = work.path().join("pulled");
    let before = logged(login.sshd(), "Accepted keyboard-interactive/pam", 0);

    let remote = format!("pw:{}", source.display());
    let mut run = on_terminal(
        state.path(),
        &config,
        &["pull", "-j", "4", &remote, pulled.to_str().unwrap()],
    );
    run.expect(b"Password:", LIMIT);
    run.send(format!("{}\n", login.password()).as_bytes());
    let status = run.finish(LIMIT);
    assert!(status.success(), "{}", run.transcript());
    assert_eq!(tree_digest(&pulled), tree_digest(&source));
    assert_eq!(count(&run, "Password:"), 1, "{}", run.transcript());
    assert!(
        !String::from_utf8_lossy(&run.stdout()).contains(login.password()),
        "the password was echoed"
    );
    // One login carried the planner and the four streams.
    assert_eq!(
        logged(
            login.sshd(),
            "Accepted keyboard-interactive/pam",
            before + 1
        ) - before,
        1,
        "{}",
        login.sshd().log()
    );

    // A push the same way: one question, the tree lands whole.
    let pushed = login.user().fresh_dir("interactive-pushed");
    let remote = format!("pw:{}", pushed.join("tree").display());
    let mut run = on_terminal(
        state.path(),
        &config,
        &["push", pulled.to_str().unwrap(), &remote],
    );
    run.expect(b"Password:", LIMIT);
    run.send(format!("{}\n", login.password()).as_bytes());
    let status = run.finish(LIMIT);
    assert!(status.success(), "{}", run.transcript());
    assert_eq!(tree_digest(&pushed.join("tree")), tree_digest(&source));
    assert_eq!(count(&run, "Password:"), 1, "{}", run.transcript());
}

#[test]
fn a_key_then_a_code_asks_the_code_once_and_a_wrong_code_is_exit_4() {
    let totp = TotpLogin::start();
    let config = totp.client_config("mfa", &[]);
    let work = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    make_tree(&source);
    let remote = format!("mfa:{}", source.display());

    let pulled = work.path().join("pulled");
    let mut run = on_terminal(
        state.path(),
        &config,
        &["pull", "-j", "4", &remote, pulled.to_str().unwrap()],
    );
    run.expect(b"Verification code", LIMIT);
    run.send(format!("{}\n", totp.current_code()).as_bytes());
    let status = run.finish(LIMIT);
    assert!(status.success(), "{}", run.transcript());
    assert_eq!(tree_digest(&pulled), tree_digest(&source));
    assert_eq!(count(&run, "Verification code"), 1, "{}", run.transcript());
    assert_eq!(
        logged(totp.sshd(), "Accepted keyboard-interactive/pam", 1),
        1,
        "{}",
        totp.sshd().log()
    );

    // A wrong code: refused, exit 4, and the message says what was refused.
    let mut run = on_terminal(
        state.path(),
        &config,
        &["pull", &remote, work.path().join("again").to_str().unwrap()],
    );
    run.expect(b"Verification code", LIMIT);
    run.send(format!("{}\n", totp.wrong_code()).as_bytes());
    let status = run.finish(LIMIT);
    assert_eq!(status.code(), Some(4), "{}", run.transcript());
    let transcript = run.transcript();
    assert!(
        transcript.contains("keyboard-interactive") && transcript.contains("refused"),
        "{transcript}"
    );
    assert!(!work.path().join("again").exists());
}

#[test]
fn batch_mode_and_a_missing_terminal_ask_nothing_and_say_what_to_do() {
    let login = PasswordLogin::start();
    let config = login.client_config("pw", &[]);
    let work = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let remote = format!("pw:{}", work.path().display());
    let copy = work.path().join("copy");

    // BatchMode on a terminal: no question.
    let mut run = on_terminal(
        state.path(),
        &config,
        &[
            "pull",
            "-o",
            "BatchMode=yes",
            &remote,
            copy.to_str().unwrap(),
        ],
    );
    let status = run.finish(LIMIT);
    assert_eq!(status.code(), Some(4), "{}", run.transcript());
    let transcript = run.transcript();
    assert!(
        !transcript.contains("Password:") && !transcript.contains("'s password: "),
        "asked under BatchMode: {transcript}"
    );
    assert!(transcript.contains("BatchMode"), "{transcript}");

    // No terminal at all (a new session, as under cron): no question, and the way out.
    let mut command = Command::new("setsid");
    command
        .arg("-w")
        .arg(env!("CARGO_BIN_EXE_xfer"))
        .env("XFER_STATE_DIR", state.path())
        .env_remove("SSH_AUTH_SOCK")
        .args(["pull", &remote, copy.to_str().unwrap(), "-F"])
        .arg(&config)
        .stdin(Stdio::null());
    let output = run_with_timeout(&mut command, LIMIT);
    assert_eq!(output.status.code(), Some(4), "{}", said(&output));
    assert!(
        said(&output).contains("no terminal") && said(&output).contains("--ssh-command ssh"),
        "{}",
        said(&output)
    );
}

#[test]
fn preferred_authentications_chooses_between_the_key_and_the_password() {
    // The server takes either the key or the password.
    let login = PasswordLogin::builder()
        .authentication_methods("publickey password")
        .start();
    let source = login.user().fresh_dir("preferred-source");
    write_file(&source.join("file"), 5, 1000, 0o644, 1_700_000_000);
    let remote = format!("pw:{}", source.join("file").display());
    let work = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();

    // Password first: asked, though the key would do.
    let config = login.client_config("pw", &["PreferredAuthentications password,publickey"]);
    let before = logged(login.sshd(), "Accepted password", 0);
    let mut run = on_terminal(
        state.path(),
        &config,
        &["pull", &remote, work.path().join("one").to_str().unwrap()],
    );
    run.expect(b"password:", LIMIT);
    run.send(format!("{}\n", login.password()).as_bytes());
    let status = run.finish(LIMIT);
    assert!(status.success(), "{}", run.transcript());
    assert_eq!(
        logged(login.sshd(), "Accepted password", before + 1),
        before + 1
    );

    // Key first: nothing asked. (Another alias: the file holds the first one's block, and
    // ssh reads the first value of a setting.)
    let config = login.client_config("key", &["PreferredAuthentications publickey,password"]);
    let keys_before = logged(login.sshd(), "Accepted publickey", 0);
    let remote = format!("key:{}", source.join("file").display());
    let mut run = on_terminal(
        state.path(),
        &config,
        &["pull", &remote, work.path().join("two").to_str().unwrap()],
    );
    let status = run.finish(LIMIT);
    assert!(status.success(), "{}", run.transcript());
    assert!(
        !run.transcript().contains("password:"),
        "{}",
        run.transcript()
    );
    assert_eq!(
        logged(login.sshd(), "Accepted publickey", keys_before + 1),
        keys_before + 1
    );
    assert_eq!(
        fs::read(work.path().join("two")).unwrap(),
        fs::read(source.join("file")).unwrap()
    );
}

#[test]
fn a_dropped_link_mid_run_asks_once_more_and_the_run_finishes() {
    let login = PasswordLogin::builder()
        .password_authentication(false)
        .start();
    let proxy = Proxy::start(login.sshd().port());
    let config = login.client_config("pw", &[&format!("Port {}", proxy.port())]);
    let source = login.user().fresh_dir("interactive-drop");
    let size = 24 << 20;
    write_file(&source.join("big.bin"), 11, size, 0o644, 1_700_000_000);
    let work = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let copy = work.path().join("copy.bin");
    let remote = format!("pw:{}", source.join("big.bin").display());

    proxy.set_mode(ProxyMode::CutAllAfter(size as u64 / 2));
    let mut run = on_terminal(
        state.path(),
        &config,
        &["pull", "-j", "2", &remote, copy.to_str().unwrap()],
    );
    run.expect(b"Password:", LIMIT);
    run.send(format!("{}\n", login.password()).as_bytes());
    // The link drops mid-file, with the progress bars up: the retry's login asks again, once,
    // its question whole on the terminal.
    run.expect(b"Password:", LIMIT);
    run.send(format!("{}\n", login.password()).as_bytes());
    let status = run.finish(LIMIT);
    assert!(status.success(), "{}", run.transcript());
    assert_eq!(count(&run, "Password:"), 2, "{}", run.transcript());
    assert!(proxy.cuts() > 0, "the link was never cut");
    assert_eq!(
        fs::read(&copy).unwrap(),
        fs::read(source.join("big.bin")).unwrap()
    );
}
