//! `xfer secret push` and `xfer secret check` against a real OpenSSH sshd: a canary value never
//! appears in any process's command line or environment (but xfer's own), in sshd's DEBUG3 log,
//! in xfer's output at -vvv, or in any file but the target; the target is never visible with
//! wider permissions; netrc stanzas merge into a remote netrc byte-exactly; several hosts at
//! once fail independently; and every error (unset variable, missing netrc machine, empty
//! keyring, full disk, shared filesystem) is clear; and xfer turns core dumps off before it
//! reads the secret.

use crate::support::{
    Sshd, files_containing, run_with_input, run_with_timeout, text, xfer_command,
};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

pub(crate) fn canary() -> String {
    format!(
        "canary-{}-{:x}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ 0x5eed_f00d
    )
}

/// Every process's command line and environment, sampled until stopped: (pid, what) for each
/// sighting of the needle.
/// A process where the watcher saw the value.
#[derive(Debug, Clone)]
struct Sighting {
    pid: u32,
    what: String,
    /// The process ran xfer's executable before and after the read: xfer itself, or a child
    /// of it between fork and exec (still xfer's memory).
    in_xfer: bool,
}

struct Watcher {
    stop: Arc<AtomicBool>,
    sightings: Arc<Mutex<Vec<Sighting>>>,
    samples: Arc<Mutex<u64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(needle: &str) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let sightings = Arc::new(Mutex::new(Vec::new()));
        let samples = Arc::new(Mutex::new(0));
        let needle = needle.as_bytes().to_vec();
        let xfer_binary = fs::canonicalize(env!("CARGO_BIN_EXE_xfer")).unwrap();
        let thread = {
            let (stop, sightings, samples) = (stop.clone(), sightings.clone(), samples.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for entry in fs::read_dir("/proc").unwrap().flatten() {
                        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                            continue;
                        };
                        let contains = |what: &str| {
                            fs::read(entry.path().join(what)).is_ok_and(|bytes| {
                                bytes
                                    .windows(needle.len())
                                    .any(|window| window == needle.as_slice())
                            })
                        };
                        let image = || fs::read_link(entry.path().join("exe")).ok();
                        for what in ["cmdline", "environ"] {
                            let before = image();
                            if !contains(what) {
                                continue;
                            }
                            let after = image();
                            // A child between fork and exec still runs xfer's image and shows
                            // xfer's own memory: that is xfer. Once it has exec'd, what it
                            // shows is its own, and must not hold the value.
                            let xfer_image = |image: &Option<PathBuf>| {
                                image.as_deref() == Some(xfer_binary.as_path())
                            };
                            let in_xfer = xfer_image(&before) && xfer_image(&after);
                            if xfer_image(&before) && !in_xfer && !contains(what) {
                                // It exec'd while being read; what it shows now is clean.
                                continue;
                            }
                            let comm =
                                fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                            sightings.lock().unwrap().push(Sighting {
                                pid,
                                what: format!("{what} of {}", comm.trim()),
                                in_xfer,
                            });
                        }
                    }
                    *samples.lock().unwrap() += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        Watcher {
            stop,
            sightings,
            samples,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (Vec<Sighting>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        let sightings = self.sightings.lock().unwrap().clone();
        let samples = *self.samples.lock().unwrap();
        (sightings, samples)
    }
}

/// Runs `command` with its output captured while a [`Watcher`] looks for `value` in every
/// process, and fails the test if any process but xfer itself showed it, or if the watcher
/// never saw it where it must be (xfer's own environment).
pub(crate) fn run_watched(command: &mut Command, value: &str) -> Output {
    let watcher = Watcher::start(value);
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let xfer_pid = child.id();
    let output = child.wait_with_output().unwrap();
    let (sightings, samples) = watcher.finish();
    assert!(samples > 5, "only {samples} samples");
    assert!(
        sightings
            .iter()
            .any(|sighting| sighting.pid == xfer_pid && sighting.what.starts_with("environ")),
        "the watcher never saw xfer's own environment"
    );
    let leaks: Vec<_> = sightings
        .iter()
        .filter(|sighting| sighting.pid != xfer_pid && !sighting.in_xfer)
        .collect();
    assert!(
        leaks.is_empty(),
        "the value was visible in other processes: {leaks:?}"
    );
    output
}

#[test]
fn a_canary_appears_nowhere_but_in_the_target() {
    let sshd = Sshd::builder().log_level("DEBUG3").start();
    let config = sshd.write_client_config("direct", &[]);
    // Through a ProxyCommand, so xfer has a child process whose environment could inherit it.
    let proxy = format!("ProxyCommand ssh -F {} -W %h:%p direct", config.display());
    sshd.append_client_config(&config, "proxied", &[&proxy]);
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
        .arg(&config)
        .arg("proxied");
    let output = run_watched(&mut command, &value);

    assert!(
        output.status.success(),
        "{}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    assert_eq!(fs::read_to_string(&target).unwrap(), value);
    assert_eq!(
        fs::metadata(&target).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    assert_eq!(
        fs::metadata(target.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    assert!(
        !text(&output.stdout).contains(&value) && !text(&output.stderr).contains(&value),
        "xfer printed the value"
    );
    assert!(
        text(&output.stderr).contains("TRACE") || text(&output.stderr).contains("DEBUG"),
        "-vvv logged nothing"
    );
    assert!(!sshd.log().contains(&value), "sshd logged the value");
    assert!(sshd.log().contains("debug3"), "sshd did not log at DEBUG3");
    for root in [
        sshd.dir(),
        work.path(),
        Path::new(env!("CARGO_TARGET_TMPDIR")),
    ] {
        let found: Vec<_> = files_containing(root, &value)
            .into_iter()
            .filter(|path| *path != target)
            .collect();
        assert!(found.is_empty(), "the value is in {found:?}");
    }

    // A check says match, by hash, without echoing the value.
    let mut command = xfer_command();
    command
        .env("CANARY_TOKEN", &value)
        .args(["secret", "check", "--from-env", "CANARY_TOKEN", "--to"])
        .arg(&target)
        .arg("-F")
        .arg(&config)
        .arg("direct");
    let output = run_with_timeout(&mut command, LIMIT);
    assert!(output.status.success(), "{}", text(&output.stdout));
    assert!(text(&output.stdout).contains("content matches"));
    assert!(!text(&output.stdout).contains(&value));
    // A different local value is a mismatch, and still not echoed.
    let mut command = xfer_command();
    command
        .env("CANARY_TOKEN", "something-else")
        .args(["secret", "check", "--from-env", "CANARY_TOKEN", "--to"])
        .arg(&target)
        .arg("-F")
        .arg(&config)
        .arg("direct");
    let output = run_with_timeout(&mut command, LIMIT);
    assert_eq!(output.status.code(), Some(7));
    assert!(
        text(&output.stdout).contains("content does not match"),
        "{}",
        text(&output.stdout)
    );
}

#[test]
fn the_target_is_never_visible_with_wider_permissions() {
    let sshd = Sshd::start();
    let config = sshd.write_client_config("box", &[]);
    let work = tempfile::tempdir().unwrap();
    let directory = work.path().join("private");
    let target = directory.join("token");
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<BTreeSet<(String, u32)>>> = Arc::new(Mutex::new(BTreeSet::new()));
    let watcher = {
        let (stop, seen, directory) = (stop.clone(), seen.clone(), directory.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(entries) = fs::read_dir(&directory) {
                    for entry in entries.flatten() {
                        if let Ok(metadata) = entry.metadata() {
                            let name = entry.file_name().to_string_lossy().into_owned();
                            let kind = if name.starts_with(".xfer-secret") {
                                "temporary".to_string()
                            } else {
                                name
                            };
                            seen.lock()
                                .unwrap()
                                .insert((kind, metadata.permissions().mode() & 0o7777));
                        }
                    }
                }
                std::thread::yield_now();
            }
        })
    };
    for round in 0..15 {
        let mut command = xfer_command();
        command
            .args(["secret", "push", "--stdin", "--to"])
            .arg(&target)
            .arg("-F")
            .arg(&config)
            .arg("box");
        let value = format!("value-{round}-{}\n", "x".repeat(200_000));
        let output = run_with_input(&mut command, value.as_bytes(), LIMIT);
        assert!(output.status.success(), "{}", text(&output.stdout));
        assert_eq!(fs::read_to_string(&target).unwrap(), value.trim_end());
    }
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(seen.contains(&("token".to_string(), 0o600)), "{seen:?}");
    for (name, mode) in &seen {
        assert_eq!(*mode, 0o600, "{name} was visible with mode {mode:o}");
    }
}

#[test]
fn netrc_stanzas_merge_into_the_remote_netrc() {
    let sshd = Sshd::start();
    let config = sshd.write_client_config("box", &[]);
    let work = tempfile::tempdir().unwrap();
    let local = work.path().join("local-netrc");
    fs::write(
        &local,
        "machine api.wandb.ai\n  login me\n  password new-secret-1\n",
    )
    .unwrap();
    fs::set_permissions(&local, fs::Permissions::from_mode(0o600)).unwrap();
    let remote = work.path().join("remote/.netrc");
    fs::create_dir_all(remote.parent().unwrap()).unwrap();
    // A macro first (curl would read one after an entry as part of it), then entries.
    let before = "# my machines\nmacdef init\nmachine in a macro body\n\nmachine github.com login octo password gh-token\n\nmachine api.wandb.ai\n  login me\n  password old-secret\n\ndefault login anonymous password guest\n";
    fs::write(&remote, before).unwrap();
    let mut command = xfer_command();
    command
        .args(["secret", "push", "--from-netrc", "api.wandb.ai", "--netrc"])
        .arg(&local)
        .arg("--to")
        .arg(&remote)
        .arg("-F")
        .arg(&config)
        .arg("box");
    let output = run_with_timeout(&mut command, LIMIT);
    assert!(output.status.success(), "{}", text(&output.stdout));
    let after = fs::read_to_string(&remote).unwrap();
    assert!(after.starts_with("# my machines\nmacdef init\nmachine in a macro body\n\nmachine github.com login octo password gh-token\n"), "{after}");
    assert!(
        after.contains("new-secret-1") && !after.contains("old-secret"),
        "{after}"
    );
    assert!(
        after
            .trim_end()
            .ends_with("default login anonymous password guest"),
        "{after}"
    );
    assert_eq!(
        fs::metadata(&remote).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    assert!(
        !text(&output.stdout).contains("new-secret-1")
            && !text(&output.stderr).contains("new-secret-1")
    );

    // A missing remote netrc is created.
    let fresh = work.path().join("fresh/.netrc");
    let mut command = xfer_command();
    command
        .args(["secret", "push", "--from-netrc", "api.wandb.ai", "--netrc"])
        .arg(&local)
        .arg("--to")
        .arg(&fresh)
        .arg("-F")
        .arg(&config)
        .arg("box");
    assert!(run_with_timeout(&mut command, LIMIT).status.success());
    assert_eq!(
        fs::read_to_string(&fresh).unwrap(),
        "machine api.wandb.ai\n  login me\n  password new-secret-1\n"
    );
}

#[test]
fn several_hosts_at_once_and_one_unreachable_fails_alone() {
    let sshd = Sshd::start();
    let config = sshd.write_client_config("one", &[]);
    sshd.append_client_config(&config, "two", &[]);
    sshd.append_client_config(&config, "three", &[]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    sshd.append_client_config(&config, "gone", &[&format!("Port {closed}")]);
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("token");
    let mut command = xfer_command();
    command
        .env("SOME_TOKEN", "multi-host-value")
        .args(["secret", "push", "--from-env", "SOME_TOKEN", "--to"])
        .arg(&target)
        .arg("-F")
        .arg(&config)
        .args(["one", "two", "gone", "three"]);
    let output = run_with_timeout(&mut command, LIMIT);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stdout));
    let lines: Vec<String> = text(&output.stdout).lines().map(str::to_string).collect();
    for host in ["one", "two", "three"] {
        assert!(
            lines
                .iter()
                .any(|line| line.starts_with(&format!("{host}: wrote"))),
            "{lines:?}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("gone: FAILED") && line.contains("connection refused")),
        "{lines:?}"
    );
    assert_eq!(fs::read_to_string(&target).unwrap(), "multi-host-value");
}

fn push_error(arguments: &[&str], environment: &[(&str, &str)], config: &Path) -> Output {
    let mut command = xfer_command();
    command
        .args(["secret", "push"])
        .args(arguments)
        .arg("-F")
        .arg(config);
    for (key, value) in environment {
        command.env(key, value);
    }
    run_with_timeout(&mut command, LIMIT)
}

#[test]
fn errors_say_what_is_wrong() {
    let sshd = Sshd::start();
    let config = sshd.write_client_config("box", &[]);
    let work = tempfile::tempdir().unwrap();
    let to = work.path().join("t").display().to_string();

    let output = push_error(
        &["--from-env", "XFER_TEST_UNSET_VARIABLE", "--to", &to, "box"],
        &[],
        &config,
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("XFER_TEST_UNSET_VARIABLE is not set"),
        "{}",
        text(&output.stderr)
    );

    let output = push_error(
        &["--from-env", "EMPTY_ONE", "--to", &to, "box"],
        &[("EMPTY_ONE", "")],
        &config,
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("set but empty"));

    let netrc = work.path().join("netrc");
    fs::write(&netrc, "machine known login a password secret-in-netrc\n").unwrap();
    let output = push_error(
        &[
            "--from-netrc",
            "unknown.example",
            "--netrc",
            netrc.to_str().unwrap(),
            "--to",
            &to,
            "box",
        ],
        &[],
        &config,
    );
    assert_eq!(output.status.code(), Some(2));
    let message = text(&output.stderr);
    assert!(message.contains("no machine unknown.example"), "{message}");
    assert!(!message.contains("secret-in-netrc"));

    // No keyring entry (the test runs in no desktop session and an empty keyutils session).
    let mut command = Command::new("keyctl");
    command
        .args(["session", "-"])
        .arg(env!("CARGO_BIN_EXE_xfer"));
    command
        .args([
            "secret",
            "push",
            "--from-keyring",
            "xfer-test-service/nobody",
            "--to",
            &to,
            "-F",
        ])
        .arg(&config)
        .arg("box");
    command.env_remove("DBUS_SESSION_BUS_ADDRESS");
    let output = run_with_timeout(&mut command, LIMIT);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("no keyring entry for service xfer-test-service"),
        "{}",
        text(&output.stderr)
    );

    // Option misuse: there is no way to pass the value itself, and sources are exclusive.
    let output = push_error(&["--from-env", "A", "--stdin", "box"], &[], &config);
    assert_eq!(output.status.code(), Some(2));
    let output = push_error(&["--stdin", "box"], &[], &config);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("--stdin needs --to"));
}

#[test]
fn a_keyring_entry_is_read_on_a_headless_box() {
    let sshd = Sshd::start();
    let config = sshd.write_client_config("box", &[]);
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("from-keyring");
    let value_file = work.path().join("value");
    fs::write(&value_file, "keyring-value-42").unwrap();
    // A fresh session keyring holding the entry, then xfer in that session.
    let script = format!(
        "keyctl padd user keyring:tester@xfer-test @s < '{}' > /dev/null && exec '{}' secret push --from-keyring xfer-test/tester --to '{}' -F '{}' box",
        value_file.display(),
        env!("CARGO_BIN_EXE_xfer"),
        target.display(),
        config.display()
    );
    let mut command = Command::new("keyctl");
    command
        .args(["session", "-", "sh", "-c", &script])
        .env_remove("DBUS_SESSION_BUS_ADDRESS");
    let output = run_with_timeout(&mut command, LIMIT);
    assert!(
        output.status.success(),
        "{}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    assert_eq!(fs::read_to_string(&target).unwrap(), "keyring-value-42");
}

/// The command the hint gives for a missing entry works as printed, from a plain shell: the
/// key it stores is one that the next, separate xfer process finds.
#[test]
fn the_keyring_hint_works_from_a_plain_shell() {
    let sshd = Sshd::start();
    let config = sshd.write_client_config("box", &[]);
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("from-hint");
    let service = format!("xfer-hint-{}", std::process::id());
    let mut command = xfer_command();
    command
        .args(["secret", "push", "--from-keyring"])
        .arg(format!("{service}/tester"))
        .arg("--to")
        .arg(&target)
        .arg("-F")
        .arg(&config)
        .arg("box")
        .env_remove("DBUS_SESSION_BUS_ADDRESS");
    let output = run_with_timeout(&mut command, LIMIT);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    let said = text(&output.stderr);
    let hint = said
        .split("keyctl ")
        .nth(1)
        .and_then(|rest| rest.split(" (").next())
        .unwrap_or_else(|| panic!("no keyctl command in the hint: {said}"));
    // Run exactly the printed command, in a shell of its own, the value on stdin.
    let mut store = Command::new("sh");
    store
        .arg("-c")
        .arg(format!("keyctl {hint} > /dev/null"))
        .stdin(Stdio::piped());
    let mut child = store.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"hint-value-7").unwrap();
    assert!(child.wait().unwrap().success(), "keyctl {hint}");
    let output = run_with_timeout(&mut command, LIMIT);
    // The key is the user's until removed: remove it whatever happened.
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "keyctl unlink $(keyctl search @u user 'keyring:tester@{service}') @u"
        ))
        .output();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(fs::read_to_string(&target).unwrap(), "hint-value-7");
}

#[test]
fn a_full_remote_disk_is_reported() {
    let sshd = Sshd::start();
    let config = sshd.write_client_config("box", &[]);
    let mount_point = tempfile::tempdir().unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"])
        .arg(mount_point.path())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "this test needs to mount a small tmpfs (run as root)"
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount_point.path().to_path_buf());
    let mut command = xfer_command();
    command
        .args(["secret", "push", "--stdin", "--to"])
        .arg(mount_point.path().join("token"))
        .arg("-F")
        .arg(&config)
        .arg("box");
    let output = run_with_input(&mut command, "y".repeat(200_000).as_bytes(), LIMIT);
    assert_eq!(output.status.code(), Some(6), "{}", text(&output.stdout));
    assert!(
        text(&output.stdout).contains("disk may be full"),
        "{}",
        text(&output.stdout)
    );
    // Nothing half-written is left behind.
    assert!(fs::read_dir(mount_point.path()).unwrap().next().is_none());
}

#[test]
fn shared_and_unknown_filesystems_are_refused_unless_allowed() {
    for (reported, shown) in [
        ("nfs", "filesystem (nfs)"),
        ("virtiofs", "filesystem (virtiofs)"),
        // What GNU stat prints for a filesystem it has no name for: refused, failing closed.
        ("UNKNOWN (0x1234abcd)", "filesystem (UNKNOWN (0x1234abcd))"),
    ] {
        // The remote's `stat -f` reports `reported`: a stand-in earlier on the server's PATH.
        let fake_bin = tempfile::tempdir().unwrap();
        let fake_stat = fake_bin.path().join("stat");
        fs::write(
            &fake_stat,
            format!(
                "#!/bin/sh\ncase \"$1\" in -f) echo '{reported}' ;; *) exec /usr/bin/stat \"$@\" ;; esac\n"
            ),
        )
        .unwrap();
        fs::set_permissions(&fake_stat, fs::Permissions::from_mode(0o755)).unwrap();
        let sshd = Sshd::builder()
            .extra_config(&format!(
                "SetEnv PATH={}:/usr/bin:/bin",
                fake_bin.path().display()
            ))
            .start();
        let config = sshd.write_client_config("box", &[]);
        let work = tempfile::tempdir().unwrap();
        let target = work.path().join("token");
        let mut command = xfer_command();
        command
            .env("SHARED_TOKEN", "value-on-nfs")
            .args(["secret", "push", "--from-env", "SHARED_TOKEN", "--to"])
            .arg(&target)
            .arg("-F")
            .arg(&config)
            .arg("box");
        let output = run_with_timeout(&mut command, LIMIT);
        assert_eq!(output.status.code(), Some(6), "{}", text(&output.stdout));
        assert!(
            text(&output.stdout).contains(shown),
            "{reported}: {}",
            text(&output.stdout)
        );
        assert!(!target.exists());
        command.arg("--allow-shared-fs");
        let output = run_with_timeout(&mut command, LIMIT);
        assert!(output.status.success(), "{}", text(&output.stdout));
        assert_eq!(fs::read_to_string(&target).unwrap(), "value-on-nfs");
    }
}

#[test]
fn the_filesystem_is_reported_by_its_mount_type() {
    let sshd = Sshd::start();
    let config = sshd.write_client_config("box", &[]);
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("token");
    let mut command = xfer_command();
    command
        .env("SOME_TOKEN", "value")
        .args(["secret", "push", "--from-env", "SOME_TOKEN", "--to"])
        .arg(&target)
        .arg("-F")
        .arg(&config)
        .arg("box");
    let output = run_with_timeout(&mut command, LIMIT);
    assert!(output.status.success(), "{}", text(&output.stdout));
    // df -T names the mount's own type (ext4, not stat's ext2/ext3 for every ext version).
    let df = Command::new("df")
        .args(["-P", "-T"])
        .arg(work.path())
        .output()
        .unwrap();
    let mount_type = text(&df.stdout)
        .lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().nth(1).map(str::to_string))
        .unwrap();
    assert!(
        text(&output.stdout).contains(&format!("filesystem {mount_type})")),
        "{mount_type}: {}",
        text(&output.stdout)
    );
}

/// An SFTP-only account (`ForceCommand internal-sftp`): a secret needs a command, and the
/// message says so in words, with no debug text; doctor reports that exec is not allowed.
#[test]
fn an_sftp_only_account_is_told_that_secrets_need_commands() {
    let sshd = Sshd::builder()
        .extra_config("ForceCommand internal-sftp")
        .start();
    let config = sshd.write_client_config("box", &[]);
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("token");
    let output = push_error(
        &[
            "--from-env",
            "SFTP_ONLY_TOKEN",
            "--to",
            target.to_str().unwrap(),
            "box",
        ],
        &[("SFTP_ONLY_TOKEN", "value")],
        &config,
    );
    let said = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(6), "{said}");
    assert!(said.contains("runs no commands"), "{said}");
    assert!(!said.contains("Some(") && !said.contains("None"), "{said}");
    assert!(!target.exists());

    let mut doctor = xfer_command();
    doctor.args(["doctor", "--json", "box", "-F"]).arg(&config);
    let output = run_with_timeout(&mut doctor, LIMIT);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report[0]["exec"], "refused", "{report}");
    assert_eq!(report[0]["sftp"], "allowed", "{report}");

    // Transfers go over SFTP, saying once why there is no agent.
    let source = work.path().join("data.bin");
    fs::write(&source, vec![7u8; 3 << 20]).unwrap();
    let copy = work.path().join("copy.bin");
    let mut push = xfer_command();
    push.arg("push")
        .arg(&source)
        .arg(format!("box:{}", copy.display()))
        .arg("-F")
        .arg(&config);
    let output = run_with_timeout(&mut push, LIMIT);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(fs::read(&copy).unwrap(), fs::read(&source).unwrap());
    let said = text(&output.stderr);
    assert_eq!(said.matches("using SFTP").count(), 1, "{said}");
    assert!(!said.contains("Some(") && !said.contains("None"), "{said}");
}

/// The soft and hard core size limits in a `/proc/PID/limits` text.
fn core_limits(limits: &str) -> Option<(String, String)> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max core file size"))?;
    let mut fields = line["Max core file size".len()..].split_whitespace();
    Some((fields.next()?.to_string(), fields.next()?.to_string()))
}

#[test]
fn core_dumps_are_off_before_the_secret_is_read() {
    // Started with core files allowed (the shell execs xfer only once the limit is set), so a
    // limit of 0 is xfer's own doing; it then waits for the secret on a stdin that never
    // brings it.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "ulimit -c 4096 && exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_xfer"),
            "secret",
            "push",
            "--stdin",
            "--to",
            "/nonexistent/secret",
            "box",
        ])
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let limits = PathBuf::from(format!("/proc/{}/limits", child.id()));
    let started = Instant::now();
    loop {
        if let Some(exited) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            panic!("xfer ended ({exited}) before reading its secret: {stderr}");
        }
        let core = fs::read_to_string(&limits)
            .ok()
            .and_then(|text| core_limits(&text));
        if core == Some(("0".to_string(), "0".to_string())) {
            break;
        }
        assert!(
            started.elapsed() < LIMIT,
            "core dumps still allowed: {core:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The secret has not been given yet: xfer still waits for it.
    assert!(child.try_wait().unwrap().is_none());
    child.kill().unwrap();
    child.wait().unwrap();
}
