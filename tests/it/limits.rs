//! Hosts that limit connections, against a real OpenSSH sshd: `MaxStartups 2:30:4` (sshd
//! drops new unauthenticated connections past two at once) and `MaxSessions 1` (one channel
//! per connection). Pulls and pushes of a tree of many directories with `--retries 0` must
//! succeed and end identical, a push must need no retry, and `doctor` must report such a host
//! correctly.

use crate::support::{
    Proxy, ProxyMode, Sshd, assert_succeeded, files_digest, pattern, run_with_timeout,
    xfer_command_in,
};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// Every run is bounded: a hang fails the test instead of holding it.
const LIMIT: Duration = Duration::from_secs(120);
/// Runs of each transfer on the host that limits start-ups: one reset in a run fails it.
const REPETITIONS: usize = 5;
/// Directories in the tree: each is a unit with its own connection.
const DIRECTORIES: usize = 10;

/// A tree of `DIRECTORIES` directories of a few small files each, plus a loose file.
fn make_tree(root: &Path, seed: u64) {
    for directory in 0..DIRECTORIES {
        for file in 0..3 {
            let path = root.join(format!("dir-{directory:02}/file-{file}.bin"));
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            let length = 1000 + directory * 4096 + file * 131;
            fs::write(
                &path,
                pattern(seed + (directory * 10 + file) as u64, length),
            )
            .unwrap();
        }
    }
    fs::write(root.join("top.txt"), pattern(seed, 777)).unwrap();
}

struct Host {
    sshd: Sshd,
    config: PathBuf,
    work: tempfile::TempDir,
    _proxy: Option<Proxy>,
}

fn host(sshd_lines: &str) -> Host {
    let sshd = Sshd::builder().extra_config(sshd_lines).start();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("ssh_config");
    sshd.append_client_config(&config, "limited", &[]);
    Host {
        sshd,
        config,
        work,
        _proxy: None,
    }
}

/// A host behind a link of `round_trip`, emulated by a proxy in front of its sshd.
fn far_host(sshd_lines: &str, round_trip: Duration) -> Host {
    let sshd = Sshd::builder().extra_config(sshd_lines).start();
    let proxy = Proxy::start(sshd.port());
    proxy.set_mode(ProxyMode::Delay(round_trip / 2));
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("ssh_config");
    let port = format!("Port {}", proxy.port());
    sshd.append_client_config(&config, "limited", &[&port]);
    Host {
        sshd,
        config,
        work,
        _proxy: Some(proxy),
    }
}

impl Host {
    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// Runs `xfer ARGUMENTS -F CONFIG ...` with a fresh state directory.
    fn xfer(&self, command: &str, arguments: &[&str]) -> Output {
        let state = tempfile::tempdir().unwrap();
        let mut xfer = xfer_command_in(state.path());
        xfer.arg(command)
            .arg("-F")
            .arg(&self.config)
            .args(arguments);
        run_with_timeout(&mut xfer, LIMIT)
    }

    /// `xfer pull --json VERBOSITY -j 4 --retries 0` of `source` into `copy`.
    fn pull_without_retries(&self, verbosity: &str, copy: &Path) -> Output {
        self.xfer(
            "pull",
            &[
                "--json",
                verbosity,
                "-j",
                "4",
                "--retries",
                "0",
                &self.remote("source"),
                copy.to_str().unwrap(),
            ],
        )
    }

    fn remote(&self, name: &str) -> String {
        format!("limited:{}", self.path(name).display())
    }
}

fn describe(output: &Output) -> String {
    format!(
        "{:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The `--json` summary's units.
fn units(output: &Output) -> Vec<Value> {
    let summary: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("no JSON summary ({error}): {}", describe(output)));
    summary["units"].as_array().cloned().unwrap_or_default()
}

/// Fails unless every unit of the summary took one attempt.
fn assert_no_retry(output: &Output, what: &str) {
    let units = units(output);
    assert_eq!(units.len(), DIRECTORIES + 1, "{what}: {}", describe(output));
    for unit in &units {
        assert_eq!(unit["attempts"], 1, "{what}: a unit was retried: {unit}");
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("retrying"), "{what}: {stderr}");
}

#[test]
fn pull_and_push_without_retries_succeed_where_sshd_limits_start_ups() {
    let host = host("MaxStartups 2:30:4");
    make_tree(&host.path("source"), 1);
    for run in 0..REPETITIONS {
        let copy = host.path(&format!("copy-{run}"));
        let output = host.pull_without_retries("-v", &copy);
        assert_succeeded(&output, &format!("pull {run}"));
        assert_eq!(
            files_digest(&host.path("source")),
            files_digest(&copy),
            "pull {run}"
        );
        assert_no_retry(&output, &format!("pull {run}"));

        let target = format!("pushed-{run}");
        let output = host.xfer(
            "push",
            &[
                "--json",
                "-v",
                "-j",
                "4",
                "--retries",
                "0",
                host.path("source").to_str().unwrap(),
                &host.remote(&target),
            ],
        );
        assert_succeeded(&output, &format!("push {run}"));
        assert_eq!(
            files_digest(&host.path("source")),
            files_digest(&host.path(&target)),
            "push {run}"
        );
        assert_no_retry(&output, &format!("push {run}"));
    }
    // Pacing keeps most runs under the limit; the drops that happened anyway were ridden out.
    eprintln!(
        "sshd dropped {} connections past MaxStartups",
        host.sshd.log().matches("past MaxStartups").count()
    );
}

#[test]
fn a_host_that_drops_every_second_start_up_is_seen_as_limited_and_paced() {
    // A new connection is dropped whenever another has not logged in yet: two opened at once
    // always see one dropped, and xfer must take that for the host's limit.
    let host = host("MaxStartups 1:100:1");
    make_tree(&host.path("source"), 3);
    let copy = host.path("copy");
    let output = host.pull_without_retries("-v", &copy);
    assert_succeeded(&output, "pull");
    assert_eq!(files_digest(&host.path("source")), files_digest(&copy));
    assert_no_retry(&output, "pull");
    let stderr = String::from_utf8_lossy(&output.stderr);
    if host.sshd.log().contains("past MaxStartups") {
        assert!(
            stderr.contains("the host limits new connections"),
            "sshd dropped connections but -v did not say so: {}",
            describe(&output)
        );
    }
}

#[test]
fn a_far_host_that_limits_start_ups_drops_the_connections_opened_together_and_they_come_back() {
    // Over a far link, once the first login is in, a pull into nothing opens its whole budget
    // (twice -j 4) together rather than on a ramp; sshd keeps two start-ups at most and drops
    // the rest, which must be ridden out without a retry of any unit.
    let host = far_host("MaxStartups 2:30:4", Duration::from_millis(40));
    make_tree(&host.path("source"), 5);
    let copy = host.path("copy");
    let output = host.pull_without_retries("-vv", &copy);
    assert_succeeded(&output, "pull");
    assert_eq!(files_digest(&host.path("source")), files_digest(&copy));
    assert_no_retry(&output, "pull");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("a far link: connections open up to"),
        "{}",
        describe(&output)
    );
    let dropped = host.sshd.log().matches("past MaxStartups").count();
    assert!(
        dropped > 0,
        "sshd dropped nothing: the connections were not opened together"
    );
    assert!(
        stderr.contains("the host limits new connections"),
        "{}",
        describe(&output)
    );
}

#[test]
fn pull_push_and_doctor_work_with_one_session_per_connection() {
    let host = host("MaxSessions 1");
    make_tree(&host.path("source"), 2);
    // Large enough for a whole-file digest, which SFTP asks of an exec channel beside its own.
    fs::write(
        host.path("source").join("dir-00/large.bin"),
        pattern(99, 9 << 20),
    )
    .unwrap();
    for (name, agent) in [("agent", None), ("sftp", Some("--no-agent"))] {
        let copy = host.path(&format!("copy-{name}"));
        let mut arguments = vec!["--json", "-v", "-j", "4", "--retries", "0"];
        arguments.extend(agent);
        let source = host.remote("source");
        let mut pull = arguments.clone();
        pull.extend([source.as_str(), copy.to_str().unwrap()]);
        let output = host.xfer("pull", &pull);
        assert_succeeded(&output, &format!("pull ({name})"));
        assert_eq!(
            files_digest(&host.path("source")),
            files_digest(&copy),
            "pull ({name})"
        );
        assert_no_retry(&output, &format!("pull ({name})"));

        let target = host.remote(&format!("pushed-{name}"));
        let local = host.path("source");
        let mut push = arguments.clone();
        push.extend([local.to_str().unwrap(), target.as_str()]);
        let output = host.xfer("push", &push);
        assert_succeeded(&output, &format!("push ({name})"));
        assert_eq!(
            files_digest(&host.path("source")),
            files_digest(&host.path(&format!("pushed-{name}"))),
            "push ({name})"
        );
        assert_no_retry(&output, &format!("push ({name})"));
    }
    // The host really refused the channels xfer asked for beside another one.
    assert!(
        host.sshd.log().contains("no more sessions"),
        "sshd never refused a session"
    );

    let output = host.xfer("doctor", &["--json", "limited"]);
    assert_succeeded(&output, "doctor");
    let reports: Value = serde_json::from_slice(&output.stdout).unwrap();
    let report = &reports[0];
    assert_eq!(report["passed"], true, "{report:#}");
    assert_eq!(report["exec"], "allowed", "{report:#}");
    assert_eq!(report["sftp"], "allowed", "{report:#}");
}
