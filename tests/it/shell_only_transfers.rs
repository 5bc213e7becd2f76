//! xfer through shell-only endpoints (`support::shell_only`, an OpenSSH sshd that refuses exec
//! and SFTP and gives a login shell on a terminal only; `support::Relay`, an in-process relay
//! that may strip the eighth bit or translate newlines):
//!
//! - a tree (a large file, small files, an empty directory, a symlink) pulls and pushes
//!   byte-identical, over several terminal sessions at once, with the one-line notice; a dry
//!   run plans through the terminal and changes nothing;
//! - a transfer cut mid-way resumes on the re-run, moving about what was missing, and a 4-byte
//!   change moves well under 1 MiB (bytes counted at a proxy); connections that go silent are
//!   given up and the units resumed on new ones; a re-run after SIGKILL ends identical;
//! - the agent is uploaded through the terminal once, and a re-run starts the cached copy;
//! - noisy logins (a coloured banner and prompt) in dash, bash, zsh and fish are seen past;
//! - relays that strip the eighth bit or translate newlines still carry the data whole (the
//!   link picks base64 where the probe came back damaged), and a byte a relay changes fails
//!   the request, which is retried, never the file;
//! - `secret push` and `check` work there, and the value appears in no other process's argv or
//!   environment, not in sshd's DEBUG3 log, not in `-vvv` output, not in any history file;
//! - `doctor` reports the mode and the terminal's throughput.

use crate::secret::{canary, run_watched};
use crate::support::shell_only::{LoginShell, ShellOnly};
use crate::support::users::{CacheChange, local_users};
use crate::support::{
    Proxy, ProxyMode, Relay, files_containing, install_agent, remote_home, run_with_timeout, said,
    tree_digest, write_file, xfer_command, xfer_command_in,
};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

/// Bound on one xfer run through a terminal: an upload of the debug build's executable through
/// base64 included.
const LIMIT: Duration = Duration::from_secs(240);
/// What xfer says once per run about such a host.
const NOTICE: &str = "a shell-only endpoint (no exec, no SFTP): transfers go through the terminal";

fn xfer(config: &Path, arguments: &[&str]) -> Output {
    let mut command = xfer_command();
    command.args(arguments).arg("-F").arg(config);
    run_with_timeout(&mut command, LIMIT)
}

/// `xfer pull EXTRA pod:SOURCE DESTINATION -F CONFIG`.
fn pull(config: &Path, extra: &[&str], source: &Path, destination: &Path) -> Output {
    let mut arguments = vec!["pull"];
    arguments.extend_from_slice(extra);
    let source = remote_path(source);
    arguments.push(&source);
    arguments.push(destination.to_str().unwrap());
    xfer(config, &arguments)
}

/// `xfer push SOURCE pod:DESTINATION -F CONFIG`.
fn push(config: &Path, source: &Path, destination: &Path) -> Output {
    let destination = remote_path(destination);
    xfer(config, &["push", source.to_str().unwrap(), &destination])
}

fn assert_ok(output: &Output, what: &str) {
    assert!(output.status.success(), "{what} failed:\n{}", said(output));
}

/// A tree with what a checkpoint directory holds: a large file, small files in several
/// directories (so several units run at once), an empty directory and a relative symlink.
fn make_tree(root: &Path) {
    write_file(
        &root.join("weights/model.bin"),
        1,
        3 << 20,
        0o644,
        1_700_000_000,
    );
    for index in 0..12 {
        write_file(
            &root.join(format!("shards/part-{index:02}")),
            10 + index,
            1000 + 777 * index as usize,
            0o640,
            1_700_000_100,
        );
    }
    write_file(&root.join("logs/train.log"), 99, 4096, 0o600, 1_700_000_200);
    fs::create_dir_all(root.join("empty")).unwrap();
    std::os::unix::fs::symlink("weights/model.bin", root.join("latest")).unwrap();
}

fn remote_path(path: &Path) -> String {
    format!("pod:{}", path.display())
}

#[test]
fn a_tree_pulls_and_pushes_through_the_terminal_byte_identical() {
    remote_home();
    let endpoint = ShellOnly::builder(LoginShell::Bash).start();
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    make_tree(&source);

    let pulled = work.path().join("pulled");
    // A dry run plans through the terminal too, and changes nothing here.
    let output = pull(endpoint.config(), &["--dry-run"], &source, &pulled);
    assert_ok(&output, "the dry run");
    assert!(said(&output).contains("model.bin"), "{}", said(&output));
    assert!(!pulled.exists(), "the dry run made the destination");

    let sessions_before = endpoint.log().matches("on pts/").count();
    let output = pull(endpoint.config(), &[], &source, &pulled);
    assert_ok(&output, "the pull");
    assert_eq!(
        said(&output).matches(NOTICE).count(),
        1,
        "the notice, once:\n{}",
        said(&output)
    );
    assert_eq!(tree_digest(&pulled), tree_digest(&source));
    // Several terminal sessions carried it at once, each a login of its own.
    let sessions = endpoint.log().matches("on pts/").count() - sessions_before;
    assert!(
        sessions >= 2,
        "{sessions} terminal session(s):\n{}",
        endpoint.log()
    );

    let pushed = work.path().join("pushed");
    let output = push(endpoint.config(), &source, &pushed);
    assert_ok(&output, "the push");
    assert_eq!(tree_digest(&pushed), tree_digest(&source));

    // A re-run finds everything in place.
    let output = pull(endpoint.config(), &[], &source, &pulled);
    assert_ok(&output, "the re-run");
    assert!(said(&output).contains("0 transferred"), "{}", said(&output));

    // doctor reports the mode and the terminal's throughput, and passes.
    let output = xfer(endpoint.config(), &["doctor", "--json", "pod"]);
    assert_ok(&output, "doctor");
    let reports: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let report = &reports[0];
    assert_eq!(
        report["mode"], "shell-only: transfers through the terminal",
        "{report}"
    );
    assert_eq!(
        (report["exec"].as_str(), report["sftp"].as_str()),
        (Some("refused"), Some("refused"))
    );
    for direction in [
        "terminal_down_bytes_per_second",
        "terminal_up_bytes_per_second",
    ] {
        assert!(
            report[direction].as_f64().is_some_and(|rate| rate > 0.0),
            "{report}"
        );
    }
    assert_eq!(report["agent"], "cached", "{report}");
}

#[test]
fn a_cut_transfer_resumes_and_a_small_change_moves_little() {
    remote_home();
    let endpoint = ShellOnly::builder(LoginShell::Bash).start();
    let proxy = Proxy::start(endpoint.port());
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("proxy_config");
    endpoint
        .sshd()
        .append_client_config(&config, "pod", &[&format!("Port {}", proxy.port())]);
    let source = work.path().join("source");
    let size = 48usize << 20;
    write_file(&source.join("big.bin"), 7, size, 0o644, 1_700_000_000);
    let local = work.path().join("local");
    let pull_once = || pull(&config, &["--retries", "0"], &source, &local);

    // Cut every connection once half the file went down.
    proxy.set_mode(ProxyMode::CutAllAfter(size as u64 / 2));
    let output = pull_once();
    assert!(
        !output.status.success(),
        "the cut run succeeded:\n{}",
        said(&output)
    );
    assert!(proxy.cuts() >= 1, "nothing was cut:\n{}", said(&output));

    proxy.set_mode(ProxyMode::Pass);
    proxy.reset_counters();
    let output = pull_once();
    assert_ok(&output, "the re-run");
    assert_eq!(
        fs::read(local.join("big.bin")).unwrap(),
        fs::read(source.join("big.bin")).unwrap()
    );
    // The escaped link costs an eighth more than the data, and what was in flight or not yet
    // synced at the cut is fetched again: the re-run still moves well under the whole file.
    let moved = proxy.bytes_down();
    assert!(
        moved < (size as u64) * 85 / 100,
        "the re-run moved {moved} bytes of a {size}-byte file"
    );

    // Four bytes change on the host: the re-run moves well under 1 MiB.
    let mut changed = fs::read(source.join("big.bin")).unwrap();
    changed[size / 2..size / 2 + 4].copy_from_slice(b"XFER");
    fs::write(source.join("big.bin"), &changed).unwrap();
    proxy.reset_counters();
    let output = pull_once();
    assert_ok(&output, "the delta re-run");
    assert_eq!(fs::read(local.join("big.bin")).unwrap(), changed);
    let moved = proxy.bytes_total();
    assert!(moved < 1 << 20, "a 4-byte change moved {moved} bytes");
}

#[test]
fn a_stalled_terminal_and_a_killed_xfer_both_end_byte_identical() {
    remote_home();
    let endpoint = ShellOnly::builder(LoginShell::Bash).start();
    let proxy = Proxy::start(endpoint.port());
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("proxy_config");
    // Keepalives find a silent connection in seconds.
    endpoint.sshd().append_client_config(
        &config,
        "pod",
        &[
            &format!("Port {}", proxy.port()),
            "ServerAliveInterval 1",
            "ServerAliveCountMax 2",
        ],
    );
    let source = work.path().join("source");
    for directory in ["one", "two"] {
        write_file(
            &source.join(directory).join("part.bin"),
            directory.len() as u64,
            8 << 20,
            0o644,
            1_700_000_000,
        );
    }
    let state = tempfile::tempdir().unwrap();
    let pull = |destination: &Path, extra: &[&str]| {
        let mut command = xfer_command_in(state.path());
        command
            .args(["pull", "--json", "-j", "2"])
            .args(extra)
            .arg(remote_path(&source))
            .arg(destination)
            .arg("-F")
            .arg(&config);
        command
    };

    // Every connection goes silent after 5 MiB, its socket left open: each directory needs a
    // second connection, which resumes.
    proxy.set_mode(ProxyMode::StallEachAfter(5 << 20));
    let stalled = work.path().join("stalled");
    let output = run_with_timeout(&mut pull(&stalled, &[]), LIMIT);
    assert_ok(&output, "the pull over stalling connections");
    assert_eq!(tree_digest(&stalled), tree_digest(&source));
    let result = crate::support::summary(&output);
    let retried: u64 = result["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|unit| unit["attempts"].as_u64().unwrap() - 1)
        .sum();
    assert!(retried >= 1, "{result}");
    assert!(proxy.stalls() >= 1);

    // SIGKILL mid-transfer over a slow link; the same command again ends identical.
    proxy.set_mode(ProxyMode::Throttle {
        bytes_per_second: 4 << 20,
    });
    proxy.reset_counters();
    let killed = work.path().join("killed");
    let mut child = pull(&killed, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + LIMIT;
    while proxy.bytes_total() < 6 << 20 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "finished before the kill"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    proxy.set_mode(ProxyMode::Pass);
    let output = run_with_timeout(&mut pull(&killed, &[]), LIMIT);
    assert_ok(&output, "the re-run after SIGKILL");
    assert_eq!(tree_digest(&killed), tree_digest(&source));
}

#[test]
fn the_agent_is_uploaded_through_the_terminal_once() {
    let users = local_users();
    let user = &users.zsh;
    let _change = CacheChange::take(user);
    user.reset_cache(false);
    let endpoint = ShellOnly::builder(LoginShell::Zsh).login_as(user).start();
    let source = user.fresh_dir("shell-only-upload");
    user.write_file(
        &source.join("data.bin"),
        &crate::support::pattern(5, 300_000),
        0o644,
    );
    let work = tempfile::tempdir().unwrap();

    let first = work.path().join("first");
    let output = pull(endpoint.config(), &["-v"], &source, &first);
    assert_ok(&output, "the first pull");
    assert!(
        said(&output).contains("uploading the xfer agent"),
        "{}",
        said(&output)
    );
    let agent = user.agent_path();
    let uploaded = fs::metadata(&agent).unwrap_or_else(|error| {
        panic!("no agent at {} after the upload: {error}", agent.display())
    });
    assert_eq!(
        fs::read(&agent).unwrap(),
        fs::read(env!("CARGO_BIN_EXE_xfer")).unwrap(),
        "the uploaded agent differs from xfer's executable"
    );
    assert_eq!(uploaded.mode() & 0o777, 0o700);
    assert_eq!(tree_digest(&first), tree_digest(&source));

    let second = work.path().join("second");
    let output = pull(endpoint.config(), &["-v"], &source, &second);
    assert_ok(&output, "the second pull");
    assert!(
        !said(&output).contains("uploading the xfer agent"),
        "{}",
        said(&output)
    );
    assert_eq!(
        fs::metadata(&agent).unwrap().ino(),
        uploaded.ino(),
        "uploaded again"
    );
    assert_eq!(tree_digest(&second), tree_digest(&source));
}

#[test]
fn noisy_logins_in_every_shell_carry_a_pull_and_a_push() {
    remote_home();
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    write_file(&source.join("a/one.bin"), 3, 200_000, 0o644, 1_700_000_000);
    write_file(&source.join("b/two.txt"), 4, 1000, 0o600, 1_700_000_000);
    for shell in LoginShell::ALL {
        let endpoint = ShellOnly::builder(shell).noisy().start();
        let pulled = work.path().join(format!("pulled-{}", shell.name()));
        let output = pull(endpoint.config(), &[], &source, &pulled);
        assert_ok(
            &output,
            &format!("the pull through a noisy {} login", shell.name()),
        );
        assert_eq!(
            tree_digest(&pulled),
            tree_digest(&source),
            "{}",
            shell.name()
        );
        let pushed = work.path().join(format!("pushed-{}", shell.name()));
        let output = push(endpoint.config(), &source, &pushed);
        assert_ok(
            &output,
            &format!("the push through a noisy {} login", shell.name()),
        );
        assert_eq!(
            tree_digest(&pushed),
            tree_digest(&source),
            "{}",
            shell.name()
        );
    }
}

/// A tree with every byte value pulled and pushed through `relay`, a delta re-run, a dry run,
/// doctor and a secret; returns the -vv output of the delta pull.
fn through_relay(relay: &Relay, work: &Path) -> String {
    let config = relay.write_client_config("pod", &[]);
    let source = work.join("source");
    let every_byte: Vec<u8> = (0..=255u8).cycle().take(700_000).collect();
    fs::create_dir_all(source.join("bytes")).unwrap();
    fs::write(source.join("bytes/all.bin"), &every_byte).unwrap();
    write_file(
        &source.join("other/random.bin"),
        8,
        500_000,
        0o644,
        1_700_000_000,
    );
    let pulled = work.join("pulled");
    let output = pull(&config, &["-vv"], &source, &pulled);
    assert_ok(&output, "the pull through the relay");
    assert_eq!(tree_digest(&pulled), tree_digest(&source));
    let pushed = work.join("pushed");
    let output = push(&config, &source, &pushed);
    assert_ok(&output, "the push through the relay");
    assert_eq!(tree_digest(&pushed), tree_digest(&source));

    // A 4-byte change moves well under 1 MiB down, logins included.
    let mut changed = fs::read(source.join("other/random.bin")).unwrap();
    changed[250_000..250_004].copy_from_slice(b"XFER");
    fs::write(source.join("other/random.bin"), &changed).unwrap();
    let before = relay.bytes_down();
    let output = pull(&config, &["-vv"], &source, &pulled);
    assert_ok(&output, "the delta pull through the relay");
    assert_eq!(tree_digest(&pulled), tree_digest(&source));
    let moved = relay.bytes_down() - before;
    assert!(moved < 1 << 20, "a 4-byte change moved {moved} bytes down");
    let log = crate::support::stderr(&output);

    // A dry run changes nothing; doctor sees the mode.
    let planned = work.join("planned");
    let output = pull(&config, &["--dry-run"], &source, &planned);
    assert_ok(&output, "the dry run through the relay");
    assert!(!planned.exists());
    let output = xfer(&config, &["doctor", "--json", "pod"]);
    assert_ok(&output, "doctor through the relay");
    let reports: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        reports[0]["mode"],
        "shell-only: transfers through the terminal"
    );

    // A secret arrives, and checks out.
    let target = work.join("secret/token");
    let value = canary();
    for action in ["push", "check"] {
        let mut command = xfer_command();
        command
            .env("CANARY_TOKEN", &value)
            .args(["secret", action, "--from-env", "CANARY_TOKEN", "--to"])
            .arg(&target)
            .arg("-F")
            .arg(&config)
            .arg("pod");
        let output = run_with_timeout(&mut command, LIMIT);
        assert_ok(&output, &format!("secret {action} through the relay"));
        assert!(!said(&output).contains(&value));
    }
    assert_eq!(fs::read_to_string(&target).unwrap(), value);
    log
}

#[test]
fn a_relay_that_strips_the_eighth_bit_gets_base64_and_the_data_whole() {
    // The agent is uploaded through this relay: base64 text, which the stripping spares.
    let relay = Relay::builder().strip_eighth_bit().start();
    let work = tempfile::tempdir().unwrap();
    let log = through_relay(&relay, work.path());
    assert!(
        log.contains("the terminal link is up") && log.contains("read=Base64 write=Base64"),
        "{log}"
    );
    assert!(!log.contains("read=Escaped"), "{log}");
}

#[test]
fn a_relay_that_translates_newlines_carries_the_data_whole() {
    let relay = Relay::builder().translate_newlines().start();
    install_agent(relay.home());
    let work = tempfile::tempdir().unwrap();
    let log = through_relay(&relay, work.path());
    // No frame holds a raw CR or LF, so the escaped encoding survives the translation.
    assert!(log.contains("read=Escaped write=Escaped"), "{log}");
}

#[test]
fn a_byte_the_relay_changes_fails_the_request_never_the_file() {
    let relay = Relay::start();
    install_agent(relay.home());
    let config = relay.write_client_config("pod", &[]);
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    let size = 8usize << 20;
    write_file(&source.join("big.bin"), 21, size, 0o644, 1_700_000_000);
    // Past the login and the link's start, in the middle of the file's blocks.
    relay.damage_down_after(size as u64 / 2);
    let pulled = work.path().join("pulled");
    let output = pull(&config, &[], &source, &pulled);
    assert_eq!(
        relay.damaged(),
        1,
        "the relay changed nothing:\n{}",
        said(&output)
    );
    assert_ok(&output, "the pull through a damaging relay");
    assert_eq!(
        fs::read(pulled.join("big.bin")).unwrap(),
        fs::read(source.join("big.bin")).unwrap()
    );
    // The damaged frame failed its session, which was retried on a new login.
    assert!(relay.shells_started() >= 2, "{}", said(&output));
}

#[test]
fn a_secret_goes_through_the_terminal_and_leaks_nowhere() {
    remote_home();
    let endpoint = ShellOnly::builder(LoginShell::Bash)
        .log_level("DEBUG3")
        .start();
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("secrets/token");
    let value = canary();

    let mut command = xfer_command();
    command
        .env("CANARY_TOKEN", &value)
        .args([
            "secret",
            "push",
            "-vvv",
            "--from-env",
            "CANARY_TOKEN",
            "--to",
        ])
        .arg(&target)
        .arg("-F")
        .arg(endpoint.config())
        .arg("pod");
    let output = run_watched(&mut command, &value);
    assert_ok(&output, "secret push");
    assert_eq!(fs::read_to_string(&target).unwrap(), value);
    assert_eq!(fs::metadata(&target).unwrap().mode() & 0o7777, 0o600);
    let printed = said(&output);
    assert!(
        printed.contains("scripts run through the terminal"),
        "{printed}"
    );
    assert!(
        printed.contains("DEBUG") || printed.contains("TRACE"),
        "-vvv logged nothing"
    );
    assert!(!printed.contains(&value), "xfer printed the value");
    assert!(
        endpoint.log().contains("debug3"),
        "sshd did not log at DEBUG3"
    );
    assert!(!endpoint.log().contains(&value), "sshd logged the value");
    // Not in any file but the target: the shells' startup and history files, the remote
    // home, the sshd's directory, the test's.
    for root in [
        endpoint.files(),
        endpoint.sshd().dir(),
        remote_home(),
        work.path(),
    ] {
        let found: Vec<PathBuf> = files_containing(root, &value)
            .into_iter()
            .filter(|path| *path != target)
            .collect();
        assert!(found.is_empty(), "the value is in {found:?}");
    }

    // A check says it matches, through the terminal, without echoing the value.
    let mut command = xfer_command();
    command
        .env("CANARY_TOKEN", &value)
        .args(["secret", "check", "--from-env", "CANARY_TOKEN", "--to"])
        .arg(&target)
        .arg("-F")
        .arg(endpoint.config())
        .arg("pod");
    let output = run_with_timeout(&mut command, LIMIT);
    assert_ok(&output, "secret check");
    assert!(
        said(&output).contains("content matches"),
        "{}",
        said(&output)
    );
    assert!(!said(&output).contains(&value));
}
