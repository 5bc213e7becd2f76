//! xfer against a real Dropbear server, with an sftp-server and without one (as on hosts that
//! run Dropbear with no OpenSSH installed). Logged in as the shared-host tests' victim login,
//! each case runs the built xfer and checks what ssh and scp users would:
//!
//! - pull and push of a small tree (files, an empty file, an empty directory, a symlink) end
//!   identical, through the agent (deployed over exec where SFTP is missing) and, where there is
//!   an sftp-server, over SFTP too (`--no-agent`);
//! - a re-run after a 4-byte change moves well under 1 MiB, both ways (counted by the proxy);
//! - `--dry-run` plans on both, changing nothing on the host; without SFTP it plans through the
//!   agent and says so, and deploys it into its cache when it is missing there;
//! - `doctor` reports EXEC and SFTP as they are: SFTP `no` where the subsystem is accepted and
//!   then dies;
//! - `secret push` then `secret check`;
//! - without an sftp-server, `--no-agent` fails at once with exit 6 and one line naming the host.
//!
//! The server and its login come from `support::Dropbear` and `support::users` (the tests run as
//! root, as CI does).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::users::{CacheChange, CacheUnchanged, LocalUser, cache_unchanged, local_users};
use crate::support::{
    Dropbear, Proxy, assert_agent_used, assert_succeeded, run_with_timeout, said, set_mtime, text,
    tree_digest, write_file, xfer_command_in,
};

/// Bound on one run of xfer (a small tree, or a deployment of the agent).
const LIMIT: Duration = Duration::from_secs(180);
/// Bound on a run that must fail at once (no SFTP server and `--no-agent`): no waiting for a
/// timeout of any kind.
const QUICK: Duration = Duration::from_secs(30);
const BLOCK: usize = 1 << 20;

/// A Dropbear logged in as the victim, an ssh_config with `box` (direct) and `via` (through a
/// counting proxy), a fresh remote directory of the victim's, and local scratch and state.
struct Host {
    server: Dropbear,
    proxy: Proxy,
    config: PathBuf,
    /// On the host (this machine): the victim's own directory for this test.
    remote: PathBuf,
    local: tempfile::TempDir,
    state: tempfile::TempDir,
    // Dropped last: the agent cache stays as the test expects it until the end.
    _cache: Option<CacheUnchanged>,
}

/// The host for `test`, with this build's agent already cached on it (so byte counts count the
/// transfer, not a deployment), or without touching the cache when `cache` is false (the test
/// holds it itself).
fn host_with(sftp_server: bool, test: &str, cache: bool) -> Host {
    let victim = &local_users().victim;
    let cache = cache.then(|| cache_unchanged(victim));
    let server = Dropbear::start(victim, sftp_server);
    let proxy = Proxy::start(server.port());
    let config = server.write_client_config("box", &[]);
    server.write_client_config("via", &[&format!("Port {}", proxy.port())]);
    let variant = if sftp_server { "sftp" } else { "no-sftp" };
    let remote = victim.fresh_dir(&format!("dropbear-{test}-{variant}"));
    Host {
        server,
        proxy,
        config,
        remote,
        local: tempfile::tempdir().unwrap(),
        state: tempfile::tempdir().unwrap(),
        _cache: cache,
    }
}

fn host(sftp_server: bool, test: &str) -> Host {
    host_with(sftp_server, test, true)
}

impl Host {
    fn victim(&self) -> &LocalUser {
        self.server.user()
    }

    fn xfer(&self, arguments: &[&str]) -> Command {
        let mut command = xfer_command_in(self.state.path());
        command.args(arguments).arg("-F").arg(&self.config);
        command
    }

    fn run(&self, arguments: &[&str]) -> Output {
        run_with_timeout(&mut self.xfer(arguments), LIMIT)
    }

    /// A local path of the test's own.
    fn local(&self, name: &str) -> PathBuf {
        self.local.path().join(name)
    }

    /// A path in the victim's directory on the host.
    fn remote(&self, name: &str) -> PathBuf {
        self.remote.join(name)
    }

    /// `alias:PATH` for a path in the victim's directory on the host.
    fn target(&self, alias: &str, name: &str) -> String {
        format!("{alias}:{}", self.remote(name).display())
    }

    /// Runs xfer through the proxy, from zero: its output and the bytes it put on the wire.
    fn counted(&self, arguments: &[&str]) -> (Output, u64) {
        self.proxy.reset_counters();
        let output = self.run(arguments);
        (output, self.proxy.bytes_total())
    }

    /// Everything of the victim's that a dry run must leave as it was: the test's directory and
    /// the agent cache.
    fn host_state(&self) -> BTreeMap<String, String> {
        let mut state = tree_digest(&self.remote);
        let cache = self.victim().agent_cache();
        if fs::symlink_metadata(&cache).is_ok() {
            for (path, value) in tree_digest(&cache) {
                state.insert(format!("cache/{path}"), value);
            }
        }
        state
    }
}

/// Nothing of Rust's debug formatting reaches the user.
fn assert_no_debug_text(message: &str) {
    for debug in ["Some(", "None", "Ok(", "Err(", "sender dropped"] {
        assert!(!message.contains(debug), "{debug:?} in:\n{message}");
    }
}

/// A small tree: an empty file, files around the block size, a deeper file, an empty
/// directory and a symlink.
fn make_tree(root: &Path) {
    write_file(&root.join("empty.bin"), 1, 0, 0o644, 1_600_000_000);
    write_file(&root.join("small.txt"), 2, 3000, 0o640, 1_600_000_100);
    write_file(
        &root.join("a/block.bin"),
        3,
        BLOCK + 5,
        0o600,
        1_600_000_200,
    );
    write_file(&root.join("a/b/deep.sh"), 4, 100, 0o755, 1_600_000_300);
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::os::unix::fs::symlink("a/block.bin", root.join("latest")).unwrap();
}

/// Push then pull of a small tree, through the agent and (with an sftp-server) over SFTP.
fn trees_end_identical(sftp_server: bool) {
    let host = host(sftp_server, "trees");
    let source = host.local("source");
    make_tree(&source);
    // The system ssh as the transport reaches Dropbear too (OpenSSH's client, Dropbear's
    // server), the agent and SFTP alike.
    let mut modes = vec!["", "--ssh-command=ssh"];
    if sftp_server {
        modes.push("--no-agent");
    }
    for (index, mode) in modes.into_iter().enumerate() {
        let pushed = format!("pushed-{index}");
        let mut push = vec!["push"];
        push.extend([mode].into_iter().filter(|mode| !mode.is_empty()));
        let target = host.target("box", &pushed);
        push.extend([source.to_str().unwrap(), target.as_str()]);
        let output = host.run(&push);
        assert_succeeded(&output, &format!("push {mode}"));
        if mode != "--no-agent" {
            assert_agent_used(&output, "push");
        }
        assert_eq!(
            tree_digest(&source),
            tree_digest(&host.remote(&pushed)),
            "push {mode}"
        );
        // Written by the login, as scp would.
        let owner = fs::metadata(host.remote(&pushed).join("a/block.bin"))
            .unwrap()
            .uid();
        assert_eq!(owner, host.victim().uid);

        let pulled = host.local(&format!("pulled-{index}"));
        let mut pull = vec!["pull"];
        pull.extend([mode].into_iter().filter(|mode| !mode.is_empty()));
        pull.extend([target.as_str(), pulled.to_str().unwrap()]);
        let output = host.run(&pull);
        assert_succeeded(&output, &format!("pull {mode}"));
        if mode != "--no-agent" {
            assert_agent_used(&output, "pull");
        }
        assert_eq!(tree_digest(&source), tree_digest(&pulled), "pull {mode}");
    }
}

#[test]
fn trees_end_identical_with_an_sftp_server() {
    trees_end_identical(true);
}

#[test]
fn trees_end_identical_without_an_sftp_server() {
    trees_end_identical(false);
}

/// Overwrites 4 bytes of `path` in its fourth block and moves its mtime on, so the quick check
/// sees the change whatever the clock did.
fn change_four_bytes(path: &Path) {
    let mut data = fs::read(path).unwrap();
    data[3 * BLOCK + 10..3 * BLOCK + 14].copy_from_slice(b"edit");
    let mtime = fs::metadata(path).unwrap().mtime();
    // Rewritten in place: the owner (the victim, on the host) stays.
    fs::write(path, &data).unwrap();
    set_mtime(path, mtime + 100);
}

/// A 4-byte change moves a piece of a block, not the file, in both directions.
fn a_small_change_moves_little(sftp_server: bool) {
    let host = host(sftp_server, "delta");
    let local = host.local("data.bin");
    write_file(&local, 5, 8 * BLOCK, 0o644, 1_600_000_000);
    let target = host.target("via", "data.bin");
    assert_succeeded(
        &host.run(&["push", local.to_str().unwrap(), &target]),
        "first push",
    );

    change_four_bytes(&local);
    let (output, wire) = host.counted(&["push", local.to_str().unwrap(), &target]);
    assert_succeeded(&output, "push after the change");
    assert_agent_used(&output, "push after the change");
    assert_eq!(
        fs::read(&local).unwrap(),
        fs::read(host.remote("data.bin")).unwrap()
    );
    assert!(
        wire < 1 << 20,
        "{wire} bytes on the wire for a 4-byte change pushed"
    );

    // And back: the host's copy changes, the local one is brought up to date.
    let remote = host.remote("data.bin");
    let mut edited = fs::read(&remote).unwrap();
    edited[5 * BLOCK + 7..5 * BLOCK + 11].copy_from_slice(b"back");
    let mtime = fs::metadata(&remote).unwrap().mtime();
    fs::write(&remote, &edited).unwrap();
    set_mtime(&remote, mtime + 100);
    let (output, wire) = host.counted(&["pull", &target, local.to_str().unwrap()]);
    assert_succeeded(&output, "pull after the change");
    assert_agent_used(&output, "pull after the change");
    assert_eq!(fs::read(&local).unwrap(), edited);
    assert!(
        wire < 1 << 20,
        "{wire} bytes on the wire for a 4-byte change pulled"
    );
}

#[test]
fn a_small_change_moves_little_with_an_sftp_server() {
    a_small_change_moves_little(true);
}

#[test]
fn a_small_change_moves_little_without_an_sftp_server() {
    a_small_change_moves_little(false);
}

/// The line a dry run prints when it plans through the agent.
const PLANNING_THROUGH_AGENT: &str = "planning through the xfer agent";

/// A dry run of a push and of a pull: the plan is right, and nothing changes on either side.
fn dry_runs_change_nothing(sftp_server: bool) {
    let host = host(sftp_server, "dry-run");
    let source = host.local("source");
    make_tree(&source);
    let target = host.target("box", "tree");
    assert_succeeded(
        &host.run(&["push", source.to_str().unwrap(), &target]),
        "first push",
    );
    // One file changes and one is new: the plan says so.
    write_file(&source.join("small.txt"), 20, 3001, 0o640, 1_600_000_500);
    write_file(&source.join("a/new.txt"), 21, 10, 0o644, 1_600_000_600);

    let before = host.host_state();
    let output = host.run(&[
        "push",
        "--dry-run",
        "--json",
        source.to_str().unwrap(),
        &target,
    ]);
    assert_succeeded(&output, "push --dry-run");
    let stderr = text(&output.stderr);
    if sftp_server {
        assert!(
            !stderr.contains(PLANNING_THROUGH_AGENT),
            "{}",
            said(&output)
        );
    } else {
        // One line, naming the host, saying why and what it does instead.
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|line| line.contains(PLANNING_THROUGH_AGENT))
            .collect();
        assert_eq!(lines.len(), 1, "{}", said(&output));
        assert!(
            lines[0].contains("box (") && lines[0].contains("no SFTP server"),
            "{}",
            lines[0]
        );
        assert_no_debug_text(&stderr);
    }
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("no JSON plan ({error}):\n{}", said(&output)));
    let action = |path: &str| {
        plan["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|item| item["path"] == path)
            .map(|item| item["action"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{path} is not in the plan:\n{plan:#}"))
    };
    assert_eq!(action("small.txt"), "update");
    assert_eq!(action("a/new.txt"), "create");
    assert_eq!(action("a/block.bin"), "up-to-date");
    assert_eq!(
        host.host_state(),
        before,
        "the push's dry run changed the host"
    );

    let copy = host.local("copy");
    let output = host.run(&["pull", "--dry-run", &target, copy.to_str().unwrap()]);
    assert_succeeded(&output, "pull --dry-run");
    assert!(
        text(&output.stdout).contains("to create"),
        "{}",
        said(&output)
    );
    assert!(!copy.exists(), "the pull's dry run made {}", copy.display());
    assert_eq!(
        host.host_state(),
        before,
        "the pull's dry run changed the host"
    );
}

#[test]
fn dry_runs_change_nothing_with_an_sftp_server() {
    dry_runs_change_nothing(true);
}

#[test]
fn dry_runs_change_nothing_without_an_sftp_server() {
    dry_runs_change_nothing(false);
}

/// The value of the column `name` in the first row of doctor's table.
fn column(table: &str, name: &str) -> String {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    let start = header
        .find(name)
        .unwrap_or_else(|| panic!("no {name} column:\n{table}"));
    let row = lines.next().unwrap_or_default();
    row.get(start..)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default()
        .to_string()
}

fn doctor_reports_what_the_login_allows(sftp_server: bool) {
    let host = host(sftp_server, "doctor");
    let output = host.run(&["doctor", "--json", "box"]);
    let reports: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("no JSON report ({error}):\n{}", said(&output)));
    let report = &reports[0];
    assert_eq!(report["exec"], "allowed", "{report:#}");
    let problems = report["problems"].to_string();
    if sftp_server {
        assert_succeeded(&output, "doctor");
        assert_eq!(report["sftp"], "allowed", "{report:#}");
        assert_eq!(report["passed"], true, "{report:#}");
    } else {
        assert_eq!(output.status.code(), Some(7), "{}", said(&output));
        assert_eq!(report["sftp"], "refused", "{report:#}");
        assert!(
            problems.contains("no SFTP server on the host"),
            "{problems}"
        );
        assert!(
            report["hints"].to_string().contains("openssh-sftp-server"),
            "{report:#}"
        );
    }

    let output = host.run(&["doctor", "box"]);
    let table = text(&output.stdout);
    assert_eq!(column(&table, "EXEC"), "yes", "{table}");
    assert_eq!(
        column(&table, "SFTP"),
        if sftp_server { "yes" } else { "no" },
        "{table}"
    );
    assert_no_debug_text(&table);
}

#[test]
fn doctor_reports_what_the_login_allows_with_an_sftp_server() {
    doctor_reports_what_the_login_allows(true);
}

#[test]
fn doctor_reports_what_the_login_allows_without_an_sftp_server() {
    doctor_reports_what_the_login_allows(false);
}

fn secrets_land_and_check(sftp_server: bool) {
    let host = host(sftp_server, "secret");
    let token = host.remote("token");
    for action in ["push", "check"] {
        let mut command = host.xfer(&[
            "secret",
            action,
            "--from-env",
            "DROPBEAR_TOKEN",
            "--to",
            token.to_str().unwrap(),
            "box",
        ]);
        command.env("DROPBEAR_TOKEN", "dr0pb3ar-t0ken");
        let output = run_with_timeout(&mut command, LIMIT);
        assert_succeeded(&output, &format!("secret {action}"));
        assert!(
            !said(&output).contains("dr0pb3ar-t0ken"),
            "the value was printed"
        );
    }
    assert_eq!(fs::read_to_string(&token).unwrap(), "dr0pb3ar-t0ken");
    let metadata = fs::metadata(&token).unwrap();
    assert_eq!(metadata.mode() & 0o777, 0o600);
    assert_eq!(metadata.uid(), host.victim().uid);
}

#[test]
fn secrets_land_and_check_with_an_sftp_server() {
    secrets_land_and_check(true);
}

#[test]
fn secrets_land_and_check_without_an_sftp_server() {
    secrets_land_and_check(false);
}

/// Where only SFTP is wanted and the host has no SFTP server, xfer says so in one line naming
/// the host, exits 6 (a remote fault, not a connection's), and does so at once: no retries, no
/// waiting out a timeout.
#[test]
fn no_agent_without_an_sftp_server_says_so_at_once() {
    let host = host(false, "no-agent");
    let source = host.local("source");
    make_tree(&source);
    let copy = host.local("copy");
    let target = host.target("box", "tree");
    for arguments in [
        vec!["pull", "--no-agent", &target, copy.to_str().unwrap()],
        vec!["push", "--no-agent", source.to_str().unwrap(), &target],
        vec![
            "pull",
            "--no-agent",
            "--dry-run",
            &target,
            copy.to_str().unwrap(),
        ],
    ] {
        let output = run_with_timeout(&mut host.xfer(&arguments), QUICK);
        let stderr = text(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(6),
            "{arguments:?}\n{}",
            said(&output)
        );
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|line| line.starts_with("xfer: "))
            .collect();
        assert_eq!(errors.len(), 1, "{arguments:?}\n{stderr}");
        assert!(
            errors[0].starts_with(&format!(
                "xfer: box (xfer-victim@127.0.0.1:{}): no SFTP server on the host",
                host.server.port()
            )),
            "{stderr}"
        );
        let hint = stderr
            .lines()
            .find(|line| line.starts_with("hint: "))
            .unwrap_or_else(|| panic!("no hint:\n{stderr}"));
        assert!(
            hint.contains("sftp-server") && hint.contains("--no-agent"),
            "{hint}"
        );
        assert_no_debug_text(&stderr);
        assert!(!copy.exists());
        assert!(!host.remote("tree").exists());
    }
}

/// On a host with no SFTP server and no agent in its cache, a dry run deploys the agent over
/// exec to plan (and says so), changing nothing else; the real run then uses that agent.
#[test]
fn without_an_sftp_server_a_dry_run_deploys_the_agent_to_plan() {
    let victim = &local_users().victim;
    let _change = CacheChange::take(victim);
    fs::remove_file(victim.agent_path()).unwrap();
    let host = host_with(false, "deploy", false);
    let source = host.local("source");
    make_tree(&source);
    let target = host.target("box", "tree");

    let output = host.run(&["push", "--dry-run", source.to_str().unwrap(), &target]);
    assert_succeeded(&output, "push --dry-run");
    assert!(
        text(&output.stderr).contains(PLANNING_THROUGH_AGENT),
        "{}",
        said(&output)
    );
    assert!(
        text(&output.stdout).contains("to create"),
        "{}",
        said(&output)
    );
    assert!(!host.remote("tree").exists(), "the dry run pushed");
    // The agent is in its cache, as the victim's, and private.
    let agent = fs::metadata(victim.agent_path()).unwrap();
    assert_eq!(agent.uid(), victim.uid);
    assert_eq!(agent.mode() & 0o777, 0o700);
    assert_eq!(
        fs::read(victim.agent_path()).unwrap(),
        fs::read(env!("CARGO_BIN_EXE_xfer")).unwrap()
    );

    let output = host.run(&["push", source.to_str().unwrap(), &target]);
    assert_succeeded(&output, "push");
    assert_agent_used(&output, "push");
    assert_eq!(tree_digest(&source), tree_digest(&host.remote("tree")));
}
