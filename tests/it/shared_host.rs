//! Trust on a shared remote host: no third party on the host can redirect a write, read a
//! secret or run code as the user. Every case runs the built xfer against a real sshd, logged
//! in as a victim login, while a third-party login that shares a group with it attacks:
//!
//! - a push into a directory they share, while the third party swaps the target name with a
//!   symlink to the victim's private key file (and with one already there), with the agent and
//!   over SFTP: the key file is never written, truncated or chmodded;
//! - `xfer secret push` into a group-writable directory (refused unless allowed), among planted
//!   files and symlinks at the temporary names, onto a directory, and cut mid-value;
//! - an agent cache the third party could replace (a group-writable `~/.cache`, a symlinked
//!   cache, a symlinked agent): no agent runs from it;
//! - logins whose shell is tcsh or fish: pull, push and `secret push` still go through the
//!   agent and the fixed scripts;
//! - remote paths with `~`, `~user`, relative and empty, as scp reads them, for a login that is
//!   not root;
//! - homes that cannot hold the agent (read-only to the login, another account's, full): the
//!   agent goes to the next private place and the transfer goes on;
//! - the server matrix: for each login shell (bash, dash, tcsh, fish) and each such home, pull,
//!   push, a delta re-run counted at a proxy, a dry run, doctor, and a secret pushed and
//!   checked.
//!
//! The users come from `support::users` (created on first use; the tests run as root).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::users::{
    Background, CacheChange, LocalUser, LocalUsers, agent_name, cache_unchanged, chmod, chown,
    local_users, remove_any, remove_stale, wait_for_sessions_to_end,
};
use crate::support::{
    Proxy, ProxyMode, Sshd, assert_agent_used, assert_succeeded, files_containing, pattern,
    run_with_input, run_with_timeout, said, set_mtime, text, xfer_command,
};

/// Bound on one run of xfer (a push of a few MiB, or a deployment of the agent).
const LIMIT: Duration = Duration::from_secs(120);
/// Bound on the remote processes of a session ending after xfer exits, and on an attacker
/// stopping once told to.
const SETTLE: Duration = Duration::from_secs(30);
/// Pushes raced by the attacker, per mode.
const RACE_RUNS: u64 = 20;
/// Pulls raced by the attacker swapping agent caches: the window between xfer's checks and
/// its start of the agent is narrower than a push's, so it takes more tries to hit.
const CACHE_RACE_RUNS: u64 = 40;
/// Larger than three blocks: the push is journaled and sets attributes by path.
const RACE_FILE_SIZE: usize = 3 * (1 << 20) + 4321;

/// An sshd that lets the shared-host users log in, and an ssh_config with a `Host` per user:
/// `victim`, `third`, `tcsh`, `fish`.
struct Host {
    users: &'static LocalUsers,
    sshd: Sshd,
    config: PathBuf,
}

fn host() -> Host {
    let users = local_users();
    let sshd = Sshd::builder().local_users().start();
    let config = users.victim.client_config(&sshd, "victim");
    for (alias, user) in [
        ("third", &users.third_party),
        ("tcsh", &users.tcsh),
        ("fish", &users.fish),
    ] {
        user.client_config(&sshd, alias);
    }
    Host {
        users,
        sshd,
        config,
    }
}

impl Host {
    fn xfer(&self, arguments: &[&str]) -> Command {
        let mut command = xfer_command();
        command.args(arguments).arg("-F").arg(&self.config);
        command
    }

    fn run(&self, arguments: &[&str]) -> Output {
        run_with_timeout(&mut self.xfer(arguments), LIMIT)
    }

    /// `xfer secret push` of `value` (through the environment) to `to` on `alias`.
    fn push_secret(&self, alias: &str, value: &str, to: &Path, extra: &[&str]) -> Output {
        let mut command = xfer_command();
        command
            .env("XFER_SHARED_HOST_SECRET", value)
            .args([
                "secret",
                "push",
                "--from-env",
                "XFER_SHARED_HOST_SECRET",
                "--to",
            ])
            .arg(to)
            .args(extra)
            .arg("-F")
            .arg(&self.config)
            .arg(alias);
        run_with_timeout(&mut command, LIMIT)
    }

    /// Waits for what the remote side of every session still does after xfer exits (a shell
    /// can go on after its connection dropped), so that what the test reads is final.
    fn settle(&self) {
        assert!(
            wait_for_sessions_to_end(&self.sshd, SETTLE),
            "processes of sshd's sessions were still running {SETTLE:?} after xfer exited"
        );
    }
}

/// A failure that is an answer, not a crash: a non-zero exit other than a panic's, and a
/// message that names `path`.
fn assert_clear_failure(output: &Output, path: &Path, what: &str) {
    let message = said(output);
    assert!(
        output
            .status
            .code()
            .is_some_and(|code| code != 0 && code != 101)
            && !message.contains("panicked"),
        "{what} ended badly ({}):\n{message}",
        output.status
    );
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(
        message.contains(name.as_ref()),
        "{what} failed without naming {}:\n{message}",
        path.display()
    );
}

/// What `path` is, for messages: kind, owner, mode and size, without following a symlink.
fn describe(path: &Path) -> String {
    match fs::symlink_metadata(path) {
        Err(error) => format!("{}: {error}", path.display()),
        Ok(metadata) => {
            let kind = if metadata.file_type().is_symlink() {
                format!(
                    "symlink to {}",
                    fs::read_link(path).unwrap_or_default().display()
                )
            } else if metadata.is_dir() {
                "directory".to_owned()
            } else {
                "file".to_owned()
            };
            format!(
                "{}: {kind}, uid {}, mode {:o}, {} bytes",
                path.display(),
                metadata.uid(),
                metadata.mode() & 0o7777,
                metadata.len()
            )
        }
    }
}

/// Whether `path` itself is a regular file owned by `user` holding exactly `content`.
fn holds(path: &Path, user: &LocalUser, content: &[u8]) -> bool {
    fs::symlink_metadata(path)
        .is_ok_and(|metadata| metadata.is_file() && metadata.uid() == user.uid)
        && fs::read(path).is_ok_and(|bytes| bytes == content)
}

/// A directory in the victim's test directory that the victim shares with the group: owned by
/// the victim, group [`support::users::SHARED_GROUP`], mode 2770 (no sticky bit), so the third
/// party may create, rename and remove names in it.
fn shared_dir(users: &LocalUsers, parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    fs::create_dir(&dir).unwrap();
    chown(&dir, users.victim.uid, users.shared_gid);
    chmod(&dir, 0o2770);
    dir
}

/// A private file of the victim's, `~/secretkey-<test>`: the file an attacker wants xfer to
/// write through a symlink, truncate or chmod.
struct SecretKey {
    path: PathBuf,
    content: Vec<u8>,
    uid: u32,
}

impl SecretKey {
    fn plant(victim: &LocalUser, test: &str) -> SecretKey {
        // The process id: test processes of other checkouts may run the same test at once.
        let name = format!("secretkey-{test}");
        remove_stale(&victim.home, &name);
        let path = victim.home.join(format!("{name}-{}", std::process::id()));
        remove_any(&path);
        let content = format!("-----BEGIN KEY of {test}-----\n")
            .into_bytes()
            .into_iter()
            .chain(pattern(7, 4000))
            .collect::<Vec<u8>>();
        victim.write_file(&path, &content, 0o600);
        SecretKey {
            path,
            content,
            uid: victim.uid,
        }
    }

    /// The key file is as planted: a regular file, the victim's, mode 0600, same bytes.
    fn assert_intact(&self, when: &str) {
        let metadata = fs::symlink_metadata(&self.path)
            .unwrap_or_else(|error| panic!("{when}: {}: {error}", self.path.display()));
        assert!(
            metadata.is_file()
                && metadata.uid() == self.uid
                && metadata.mode() & 0o7777 == 0o600
                && metadata.len() == self.content.len() as u64,
            "{when}: the victim's key file changed: {} (was a file of {} bytes, mode 600)",
            describe(&self.path),
            self.content.len()
        );
        assert!(
            fs::read(&self.path).unwrap() == self.content,
            "{when}: the victim's key file was written through"
        );
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        // Left for a look when the test failed.
        if !std::thread::panicking() {
            remove_any(&self.path);
        }
    }
}

/// The third party's loop, run as the third party: swaps the target name with a symlink to the
/// victim's key file, atomically (renameat2 RENAME_EXCHANGE), over and over, so that every
/// look at the name sees the victim's file or the symlink in turn; when nothing is at the name
/// the symlink takes it. Nothing the victim wrote is ever removed, only moved to the spare
/// name, so a finished push can be found afterwards. Prints `ready` once started and the number
/// of swaps when the stop file appears (or after ten minutes, should the test be gone).
const SWAPPER: &str = r#"
import ctypes, errno, os, sys, time
target, spare, link_to, stop = sys.argv[1:5]
libc = ctypes.CDLL(None, use_errno=True)
libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
AT_FDCWD, RENAME_NOREPLACE, RENAME_EXCHANGE = -100, 1, 2
def renameat2(old, new, flags):
    if libc.renameat2(AT_FDCWD, old.encode(), AT_FDCWD, new.encode(), flags) == 0:
        return 0
    return ctypes.get_errno()
swaps = 0
deadline = time.monotonic() + 600
print("ready", flush=True)
while not os.path.exists(stop) and time.monotonic() < deadline:
    if not os.path.lexists(spare):
        try:
            os.symlink(link_to, spare)
        except FileExistsError:
            pass
    error = renameat2(spare, target, RENAME_EXCHANGE)
    if error == errno.ENOENT:
        error = renameat2(spare, target, RENAME_NOREPLACE)
        if error in (errno.ENOENT, errno.EEXIST):
            continue
    if error:
        sys.exit("renameat2: " + os.strerror(error))
    swaps += 1
    time.sleep(0.0002)
print(swaps, flush=True)
"#;

/// A running [`SWAPPER`] and its stop file.
struct Swapper {
    process: Background,
    stop: PathBuf,
    logs: PathBuf,
}

impl Swapper {
    /// Starts the loop as the third party and waits until it runs.
    fn start(
        third_party: &LocalUser,
        target: &Path,
        spare: &Path,
        link_to: &Path,
        control: &Path,
        logs: &Path,
    ) -> Swapper {
        let stop = control.join("stop");
        remove_any(&stop);
        let mut command = third_party.command("/usr/bin/python3");
        command
            .args(["-c", SWAPPER])
            .arg(target)
            .arg(spare)
            .arg(link_to)
            .arg(&stop);
        let mut process = Background::start(&mut command, logs, "swapper");
        let deadline = Instant::now() + SETTLE;
        while !fs::read_to_string(logs.join("swapper.stdout"))
            .is_ok_and(|out| out.starts_with("ready"))
        {
            assert!(
                process.running() && Instant::now() < deadline,
                "the third party's loop did not start: {}",
                fs::read_to_string(logs.join("swapper.stderr")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Swapper {
            process,
            stop,
            logs: logs.to_path_buf(),
        }
    }

    /// Stops the loop; returns how many swaps it made.
    fn stop(self) -> u64 {
        fs::write(&self.stop, b"").unwrap();
        let out = self.process.finish(&self.logs, SETTLE);
        out.lines()
            .nth(1)
            .and_then(|line| line.trim().parse().ok())
            .unwrap_or_else(|| panic!("the third party's loop printed {out:?}"))
    }
}

/// The victim pushes a file of several blocks into a directory shared with the third party,
/// `RACE_RUNS` times, while the third party swaps the target name with a symlink to the
/// victim's key file. After every run: the key file is untouched; the push either finished
/// (its file, the victim's, holds this run's bytes, at the target or wherever the swapping
/// left it) or failed with a message naming the file.
fn a_swapped_symlink_never_redirects_a_push(test: &str, mode: &[&str]) {
    let host = host();
    let _cache = cache_unchanged(&host.users.victim);
    let (victim, third_party) = (&host.users.victim, &host.users.third_party);
    let dir = victim.fresh_dir(test);
    let shared = shared_dir(host.users, &dir, "shared");
    let control = third_party.fresh_dir(test);
    let key = SecretKey::plant(victim, test);
    let local = tempfile::tempdir().unwrap();
    let source = local.path().join("data.bin");
    let target = shared.join("data.bin");
    let spare = shared.join(".third-party-spare");
    let remote = format!("victim:{}", target.display());
    let push = |seed: u64| {
        let data = pattern(seed, RACE_FILE_SIZE);
        fs::write(&source, &data).unwrap();
        // Same size every run: a distinct mtime keeps the quick check from calling it done.
        set_mtime(&source, 1_600_000_000 + seed as i64);
        let mut arguments = vec!["push", "--retries", "1", "--retry-wait", "0"];
        arguments.extend_from_slice(mode);
        arguments.extend([source.to_str().unwrap(), remote.as_str()]);
        (host.run(&arguments), data)
    };

    // Unattacked, the push works: the runs below cannot pass by failing for another reason.
    let (output, data) = push(1000);
    assert_succeeded(&output, "the push without an attacker");
    assert!(holds(&target, victim, &data), "{}", describe(&target));

    let (mut finished, mut refusals) = (0, Vec::new());
    for run in 1..=RACE_RUNS {
        let swapper = Swapper::start(
            third_party,
            &target,
            &spare,
            &key.path,
            &control,
            local.path(),
        );
        let (output, data) = push(run);
        let swaps = swapper.stop();
        host.settle();
        let when = format!("run {run} ({swaps} swaps)");
        assert!(swaps > 0, "{when}: the third party never swapped");
        key.assert_intact(&when);
        if output.status.success() {
            finished += 1;
            // The last swap may have moved the finished file to the spare name.
            let found = [&target, &spare]
                .into_iter()
                .find(|path| holds(path, victim, &data))
                .unwrap_or_else(|| {
                    panic!(
                        "{when}: the push reported success but no file of the victim's holds its bytes: {}; {}\n{}",
                        describe(&target),
                        describe(&spare),
                        said(&output)
                    )
                });
            if found != &target {
                fs::rename(found, &target).unwrap();
            }
        } else {
            assert_clear_failure(&output, &target, &when);
            refusals.push(said(&output));
        }
        remove_any(&spare);
    }
    eprintln!(
        "{test}: {finished} pushes finished, {} refused under the swapping; the first refusal:\n{}",
        refusals.len(),
        refusals.first().map_or("", String::as_str)
    );
}

#[test]
fn a_symlink_swapped_in_during_a_push_with_the_agent_never_redirects_it() {
    a_swapped_symlink_never_redirects_a_push("swap-race-agent", &[]);
}

#[test]
fn a_symlink_swapped_in_during_a_push_over_sftp_never_redirects_it() {
    a_swapped_symlink_never_redirects_a_push("swap-race-sftp", &["--no-agent"]);
}

/// A symlink to the victim's key file already at the target name, made by the third party:
/// the push replaces it with a regular file or refuses, and never writes through it.
#[test]
fn a_symlink_already_at_the_target_is_replaced_or_refused_never_followed() {
    let host = host();
    let _cache = cache_unchanged(&host.users.victim);
    let (victim, third_party) = (&host.users.victim, &host.users.third_party);
    let dir = victim.fresh_dir("planted-symlink");
    let shared = shared_dir(host.users, &dir, "shared");
    let key = SecretKey::plant(victim, "planted-symlink");
    let local = tempfile::tempdir().unwrap();
    for (number, mode) in [&[][..], &["--no-agent"][..]].into_iter().enumerate() {
        let what = if mode.is_empty() {
            "with the agent"
        } else {
            "over SFTP"
        };
        let source = local.path().join(format!("data-{number}.bin"));
        let data = pattern(50 + number as u64, RACE_FILE_SIZE);
        fs::write(&source, &data).unwrap();
        let target = shared.join(format!("data-{number}.bin"));
        let output = run_with_timeout(
            third_party
                .command("ln")
                .arg("-s")
                .arg(&key.path)
                .arg(&target),
            LIMIT,
        );
        assert_succeeded(&output, "the third party's ln -s");
        let remote = format!("victim:{}", target.display());
        let mut arguments = vec!["push"];
        arguments.extend_from_slice(mode);
        arguments.extend([source.to_str().unwrap(), remote.as_str()]);
        let output = host.run(&arguments);
        host.settle();
        key.assert_intact(what);
        if output.status.success() {
            assert!(
                holds(&target, victim, &data),
                "{what}: the push reported success, but {}",
                describe(&target)
            );
        } else {
            assert_clear_failure(&output, &target, what);
        }
    }
}

/// `secret push` into a directory the group can write (no sticky bit) is refused, saying so,
/// unless `--allow-writable-dir` is given.
#[test]
fn a_secret_into_a_group_writable_directory_is_refused_unless_allowed() {
    let host = host();
    let victim = &host.users.victim;
    let dir = victim.fresh_dir("secret-writable-dir");
    let shared = shared_dir(host.users, &dir, "shared");
    let target = shared.join("token");
    let value = "value-for-a-group-writable-directory";

    let output = host.push_secret("victim", value, &target, &[]);
    assert!(
        !output.status.success() && said(&output).contains("writable"),
        "a secret went into a group-writable directory without a word ({}):\n{}",
        output.status,
        said(&output)
    );
    host.settle();
    assert!(
        fs::symlink_metadata(&target).is_err(),
        "{}",
        describe(&target)
    );
    assert_eq!(files_containing(&shared, value), Vec::<PathBuf>::new());

    let output = host.push_secret("victim", value, &target, &["--allow-writable-dir"]);
    assert_succeeded(&output, "secret push --allow-writable-dir");
    host.settle();
    assert_private_secret(&target, victim, value);
}

/// `path` is a regular file of `user`'s, mode 0600, holding exactly `value`.
fn assert_private_secret(path: &Path, user: &LocalUser, value: &str) {
    let metadata =
        fs::symlink_metadata(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    assert!(
        metadata.is_file() && metadata.uid() == user.uid && metadata.mode() & 0o7777 == 0o600,
        "the secret file is not a 0600 file of {}'s: {}",
        user.name,
        describe(path)
    );
    assert_eq!(fs::read_to_string(path).unwrap(), value);
}

/// Plants, as the third party, in a directory: `.xfer-secret.N` for every N from `first` for
/// `count` numbers (process ids wrap around to 300 past `pid_max`), alternately a file of mode
/// 0666 and a symlink to the bait; and a symlink to the bait at each further name given.
const PLANTER: &str = r#"
import os, sys
directory, bait = sys.argv[1], sys.argv[2]
first, count, pid_max = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
for offset in range(count):
    number = first + offset
    if number > pid_max:
        number = number - pid_max + 300
    path = os.path.join(directory, ".xfer-secret.%d" % number)
    if number % 2:
        os.symlink(bait, path)
    else:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.write(descriptor, b"planted by the third party\n")
        os.fchmod(descriptor, 0o666)
        os.close(descriptor)
for name in sys.argv[6:]:
    os.symlink(bait, os.path.join(directory, name))
"#;

fn read_number(path: &str) -> u64 {
    fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {path}: {error}"))
        .trim()
        .parse()
        .unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// With `--allow-writable-dir`, the third party has planted files (mode 0666) and symlinks (to
/// a file of its own that anyone may write) at the temporary names the old script used
/// (`.xfer-secret.<pid of the remote shell>`, for the next few thousand process ids) and at
/// other likely temporary names. After the push, none of them holds the value, no symlink was
/// written through, and the target is a 0600 file of the victim's with the value.
#[test]
fn planted_temporary_names_are_neither_reused_nor_followed() {
    let host = host();
    let (victim, third_party) = (&host.users.victim, &host.users.third_party);
    let dir = victim.fresh_dir("secret-planted-names");
    let shared = shared_dir(host.users, &dir, "shared");
    let target = shared.join("token");
    let bait_dir = third_party.fresh_dir("secret-planted-names");
    let bait = bait_dir.join("bait");
    let bait_content = b"the third party's file, which anyone may write\n";
    third_party.write_file(&bait, bait_content, 0o666);
    let likely = [
        ".xfer-secret",
        ".xfer-secret.tmp",
        ".token.tmp",
        "token.tmp",
        ".token.new",
        "token.new",
        ".token.xfer-tmp",
        ".token.swp",
        "token~",
    ];
    // The remote shell's process id is among the next ones this machine hands out.
    let first = read_number("/proc/sys/kernel/ns_last_pid") + 1;
    let pid_max = read_number("/proc/sys/kernel/pid_max");
    let count = 4000;
    let mut command = third_party.command("/usr/bin/python3");
    command
        .args(["-c", PLANTER])
        .arg(&shared)
        .arg(&bait)
        .args([first.to_string(), count.to_string(), pid_max.to_string()])
        .args(likely);
    assert_succeeded(&run_with_timeout(&mut command, LIMIT), "planting");
    let planted: Vec<PathBuf> = fs::read_dir(&shared)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(planted.len(), count as usize + likely.len());

    let value = format!("planted-names-value-{}", std::process::id());
    let output = host.push_secret("victim", &value, &target, &["--allow-writable-dir"]);
    assert_succeeded(&output, "secret push --allow-writable-dir");
    host.settle();
    assert_eq!(
        fs::read(&bait).unwrap(),
        bait_content,
        "a planted symlink was written through"
    );
    assert_eq!(
        files_containing(&shared, &value),
        vec![target.clone()],
        "the value is in a file besides the target"
    );
    for path in &planted {
        if let Ok(metadata) = fs::symlink_metadata(path)
            && metadata.is_file()
        {
            assert_eq!(
                metadata.uid(),
                third_party.uid,
                "{} is no longer the third party's",
                path.display()
            );
        }
    }
    assert_private_secret(&target, victim, &value);
}

/// `--to` naming an existing directory is refused; nothing is created inside it.
#[test]
fn a_secret_onto_an_existing_directory_is_refused() {
    let host = host();
    let victim = &host.users.victim;
    let dir = victim.fresh_dir("secret-onto-directory");
    let target = dir.join("existing");
    fs::create_dir(&target).unwrap();
    victim.own(&target);
    chmod(&target, 0o700);
    let value = "value-onto-a-directory";
    let output = host.push_secret("victim", value, &target, &[]);
    host.settle();
    assert!(
        !output.status.success(),
        "a secret pushed onto a directory reported success:\n{}",
        said(&output)
    );
    assert_clear_failure(&output, &target, "secret push onto a directory");
    let inside: Vec<_> = fs::read_dir(&target)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(inside.is_empty(), "files were created inside: {inside:?}");
    assert_eq!(files_containing(&dir, value), Vec::<PathBuf>::new());
}

/// A value cut off mid-stream (the connection dropped by a proxy after K bytes, for several K
/// inside the value) leaves the previous file whole, and the message says the connection was
/// lost, not that the login may lack a POSIX sh.
#[test]
fn a_secret_cut_mid_value_leaves_the_previous_file_whole() {
    const VALUE_SIZE: usize = 900_000;
    let host = host();
    let victim = &host.users.victim;
    let dir = victim.fresh_dir("secret-cut");
    let private = dir.join("private");
    fs::create_dir(&private).unwrap();
    victim.own(&private);
    chmod(&private, 0o700);
    let proxy = Proxy::start(host.sshd.port());
    let via = host.sshd.write_client_config(
        "victim-via-proxy",
        &[
            &format!("User {}", victim.name),
            &format!("Port {}", proxy.port()),
        ],
    );
    // Printable, so the value is valid for any source; different for every attempt. On stdin:
    // an environment variable cannot hold that much.
    let push = |seed: u64, to: &Path| -> Output {
        let value: Vec<u8> = pattern(seed, VALUE_SIZE)
            .iter()
            .map(|byte| b'a' + byte % 26)
            .collect();
        let mut command = xfer_command();
        command
            .args(["secret", "push", "--stdin", "--to"])
            .arg(to)
            .arg("-F")
            .arg(&via)
            .arg("victim-via-proxy");
        run_with_input(&mut command, &value, LIMIT)
    };

    // The bytes of a whole push: the cuts are placed inside the value's share of them.
    let measured = private.join("measured");
    let output = push(1, &measured);
    assert_succeeded(&output, "the push through the proxy");
    let whole = proxy.bytes_total();
    assert!(whole > VALUE_SIZE as u64, "the proxy counted {whole} bytes");
    let overhead = whole - VALUE_SIZE as u64;

    let target = private.join("token");
    let previous = "the previous value, which must survive";
    victim.write_file(&target, previous.as_bytes(), 0o600);
    for (attempt, share) in [0.05, 0.3, 0.5, 0.7, 0.95].into_iter().enumerate() {
        let cut = overhead + (VALUE_SIZE as f64 * share) as u64;
        proxy.set_mode(ProxyMode::CutEachAfter(cut));
        let output = push(10 + attempt as u64, &target);
        proxy.set_mode(ProxyMode::Pass);
        host.settle();
        let when = format!("cut after {cut} of {whole} bytes");
        assert!(proxy.cuts() > 0, "{when}: the proxy cut nothing");
        assert!(
            !output.status.success(),
            "{when}: the push reported success:\n{}",
            said(&output)
        );
        assert!(
            fs::read(&target).unwrap() == previous.as_bytes(),
            "{when}: the previous file was replaced: {}",
            describe(&target)
        );
        assert_eq!(
            fs::metadata(&target).unwrap().permissions().mode() & 0o7777,
            0o600,
            "{when}"
        );
        let message = said(&output).to_lowercase();
        assert!(
            !message.contains("posix sh")
                && message.contains("connection")
                && ["lost", "dropped", "closed", "reset"]
                    .iter()
                    .any(|word| message.contains(word)),
            "{when}: the message does not say the connection was lost:\n{}",
            said(&output)
        );
    }
}

/// A remote tree for pull tests: files around the block size, owned by `user`.
fn remote_tree(user: &LocalUser, root: &Path) {
    fs::create_dir_all(root.join("a/b")).unwrap();
    fs::write(root.join("small.txt"), pattern(1, 3000)).unwrap();
    fs::write(root.join("a/block.bin"), pattern(2, 1 << 20)).unwrap();
    fs::write(root.join("a/b/several.bin"), pattern(3, 3 * (1 << 20) + 77)).unwrap();
    user.own_tree(root);
}

/// Per path under `root`: kind, mode, size and content hash.
fn tree(root: &Path) -> Vec<(String, String)> {
    walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .map(|entry| {
            let entry = entry.unwrap();
            let relative = entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .display()
                .to_string();
            let metadata = entry.path().symlink_metadata().unwrap();
            let value = if metadata.is_dir() {
                "dir".to_owned()
            } else {
                format!(
                    "{:o} {} {}",
                    metadata.mode() & 0o7777,
                    metadata.len(),
                    blake3::hash(&fs::read(entry.path()).unwrap()).to_hex()
                )
            };
            (relative, value)
        })
        .collect()
}

/// A wrapper the third party would like the victim to run as its agent: leaves a marker, then
/// runs the real agent so that the transfer works and nothing looks amiss.
fn agent_wrapper(marker: &Path, real_agent: &Path) -> String {
    format!(
        "#!/bin/sh\necho ran >> '{}'\nexec '{}' \"$@\"\n",
        marker.display(),
        real_agent.display()
    )
}

/// A pull and a push as the victim, which must both work and leave `marker` absent.
fn transfers_run_no_planted_agent(host: &Host, remote_dir: &Path, marker: &Path, when: &str) {
    let local = tempfile::tempdir().unwrap();
    let source = remote_dir.join("source");
    let output = host.run(&[
        "pull",
        &format!("victim:{}", source.display()),
        local.path().join("copy").to_str().unwrap(),
    ]);
    assert_succeeded(&output, &format!("{when}: the pull"));
    assert!(
        fs::symlink_metadata(marker).is_err(),
        "{when}: the pull ran the planted agent"
    );
    assert_eq!(tree(&source), tree(&local.path().join("copy")), "{when}");
    let pushed = remote_dir.join(format!("pushed-{}", when.replace(' ', "-")));
    let output = host.run(&[
        "push",
        local.path().join("copy").to_str().unwrap(),
        &format!("victim:{}", pushed.display()),
    ]);
    assert_succeeded(&output, &format!("{when}: the push"));
    host.settle();
    assert!(
        fs::symlink_metadata(marker).is_err(),
        "{when}: the push ran the planted agent"
    );
    assert_eq!(tree(&source), tree(&pushed), "{when}");
}

/// The victim's directory for a cache test: the remote tree, a copy of the real agent the
/// wrapper runs, and where the wrapper leaves its marker. Returns (directory, marker, wrapper
/// text).
fn cache_test_dir(victim: &LocalUser, test: &str) -> (PathBuf, PathBuf, String) {
    let dir = victim.fresh_dir(test);
    remote_tree(victim, &dir.join("source"));
    let real_agent = dir.join("real-agent");
    fs::copy(env!("CARGO_BIN_EXE_xfer"), &real_agent).unwrap();
    victim.own(&real_agent);
    chmod(&real_agent, 0o755);
    let marker = dir.join("marker");
    let wrapper = agent_wrapper(&marker, &real_agent);
    (dir, marker, wrapper)
}

/// Runs `script` with `sh -c` as `user`, with `arguments` as $1...; panics if it fails.
fn sh_as(user: &LocalUser, script: &str, arguments: &[&Path]) {
    let mut command = user.command("/bin/sh");
    command.args(["-c", script, "sh"]).args(arguments);
    assert_succeeded(
        &run_with_timeout(&mut command, LIMIT),
        &format!("{script} as {}", user.name),
    );
}

/// Makes `~/.cache` the victim's but writable by the shared group, as on a host where group
/// members share a cache.
fn group_writable_cache_parent(host: &Host) {
    let cache_parent = host.users.victim.home.join(".cache");
    chown(&cache_parent, host.users.victim.uid, host.users.shared_gid);
    chmod(&cache_parent, 0o2775);
}

/// The victim's `~/.cache` is writable by the group: the third party moves the victim's agent
/// cache aside and puts its own in its place, with a wrapper at the agent's exact name; then
/// swaps its cache and the victim's in a loop while the victim pulls. No run of xfer runs the
/// wrapper, and every transfer works (by SFTP or from a safe place).
#[test]
fn a_cache_in_a_directory_others_can_write_runs_no_planted_agent() {
    let host = host();
    let (victim, third_party) = (&host.users.victim, &host.users.third_party);
    let _change = CacheChange::take(victim);
    let (dir, marker, wrapper) = cache_test_dir(victim, "cache-parent-writable");
    group_writable_cache_parent(&host);
    let cache = victim.agent_cache();
    let moved = victim.home.join(".cache/xfer-moved-aside");

    // Replaced outright: the third party's directory at the cache's name.
    sh_as(
        third_party,
        "mv \"$1\" \"$2\" && mkdir -m 755 \"$1\" && printf %s \"$3\" > \"$1/$4\" && chmod 755 \"$1/$4\"",
        &[&cache, &moved, Path::new(&wrapper), Path::new(agent_name())],
    );
    transfers_run_no_planted_agent(&host, &dir, &marker, "cache replaced");

    // Swapped back and forth with the victim's own while xfer looks at it and starts it.
    let evil = victim.home.join(".cache/xfer-third-party");
    remove_any(&evil);
    fs::rename(&cache, &evil).unwrap();
    remove_any(&cache);
    fs::rename(&moved, &cache).unwrap();
    let control = third_party.fresh_dir("cache-parent-writable");
    let logs = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let source = dir.join("source/small.txt");
    for run in 0..CACHE_RACE_RUNS {
        let swapper = Swapper::start(third_party, &cache, &evil, &evil, &control, logs.path());
        let copy = local.path().join(format!("copy-{run}"));
        let output = host.run(&[
            "pull",
            &format!("victim:{}", source.display()),
            copy.to_str().unwrap(),
        ]);
        let swaps = swapper.stop();
        host.settle();
        let when = format!("run {run} ({swaps} swaps)");
        assert!(
            fs::symlink_metadata(&marker).is_err(),
            "{when}: the planted agent ran"
        );
        assert_succeeded(&output, &when);
        assert_eq!(
            fs::read(&copy).unwrap(),
            fs::read(&source).unwrap(),
            "{when}"
        );
    }
}

/// `~/.cache/xfer` is a symlink to a directory of the third party's that anyone may write,
/// holding a wrapper at the agent's name: made by the third party through a group-writable
/// `~/.cache`, or left by the victim in a `~/.cache` of its own. It is never followed: no agent
/// runs from it, nothing is written into it, and the transfers work.
#[test]
fn a_cache_symlinked_to_a_third_party_directory_is_not_followed() {
    let host = host();
    let (victim, third_party) = (&host.users.victim, &host.users.third_party);
    let _change = CacheChange::take(victim);
    let (dir, marker, wrapper) = cache_test_dir(victim, "cache-symlinked");
    let evil = third_party.fresh_dir("cache-symlinked").join("cache");
    fs::create_dir(&evil).unwrap();
    let planted = evil.join(agent_name());
    third_party.write_file(&planted, wrapper.as_bytes(), 0o755);
    third_party.own(&evil);
    chmod(&evil, 0o777);
    let cache = victim.agent_cache();
    let listing = |path: &Path| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(path)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };

    group_writable_cache_parent(&host);
    sh_as(
        third_party,
        "mv \"$1\" \"$1-moved-aside\" && ln -s \"$2\" \"$1\"",
        &[&cache, &evil],
    );
    transfers_run_no_planted_agent(&host, &dir, &marker, "symlinked by the third party");
    assert_eq!(listing(&evil), vec![agent_name().to_owned()]);
    assert_eq!(fs::read_to_string(&planted).unwrap(), wrapper);

    victim.reset_cache(false);
    std::os::unix::fs::symlink(&evil, &cache).unwrap();
    victim.own(&cache);
    transfers_run_no_planted_agent(&host, &dir, &marker, "symlinked in a private cache");
    assert_eq!(listing(&evil), vec![agent_name().to_owned()]);
    assert_eq!(fs::read_to_string(&planted).unwrap(), wrapper);
}

/// The agent's file in the victim's own cache is a symlink: to the third party's wrapper, or to
/// a wrapper of the victim's own in a directory the third party can write (so could replace).
/// Neither is executed, and the transfers work.
#[test]
fn a_symlink_at_the_agent_path_is_not_executed() {
    let host = host();
    let (victim, third_party) = (&host.users.victim, &host.users.third_party);
    let _change = CacheChange::take(victim);
    let (dir, marker, wrapper) = cache_test_dir(victim, "cache-agent-symlink");
    let agent = victim.agent_path();

    let theirs = third_party.fresh_dir("cache-agent-symlink").join("agent");
    third_party.write_file(&theirs, wrapper.as_bytes(), 0o755);
    remove_any(&agent);
    std::os::unix::fs::symlink(&theirs, &agent).unwrap();
    victim.own(&agent);
    transfers_run_no_planted_agent(&host, &dir, &marker, "a link to the third party's file");

    victim.reset_cache(true);
    let shared = shared_dir(host.users, &dir, "shared");
    let own_in_shared = shared.join("agent");
    victim.write_file(&own_in_shared, wrapper.as_bytes(), 0o700);
    remove_any(&agent);
    std::os::unix::fs::symlink(&own_in_shared, &agent).unwrap();
    victim.own(&agent);
    transfers_run_no_planted_agent(&host, &dir, &marker, "a link into a shared directory");
}

/// Pull, push (through the agent, deployed through this login shell into an empty cache) and
/// `secret push` for a login whose shell is not the POSIX sh the scripts are written in.
fn a_login_shell_other_than_sh_still_gets_the_agent(user: &LocalUser, alias: &str, test: &str) {
    let host = host();
    // Empty, so the agent is deployed through the login shell too.
    let _change = CacheChange::take(user);
    user.reset_cache(false);
    let dir = user.fresh_dir(test);
    remote_tree(user, &dir.join("source"));
    let local = tempfile::tempdir().unwrap();
    let copy = local.path().join("copy");

    let output = host.run(&[
        "pull",
        &format!("{alias}:{}", dir.join("source").display()),
        copy.to_str().unwrap(),
    ]);
    assert_succeeded(&output, "the pull");
    assert_agent_used(&output, "the pull");
    assert_eq!(tree(&dir.join("source")), tree(&copy));
    let deployed = user.agent_path();
    assert!(
        fs::read(&deployed)
            .is_ok_and(|bytes| bytes == fs::read(env!("CARGO_BIN_EXE_xfer")).unwrap()),
        "the agent was not deployed: {}",
        describe(&deployed)
    );

    let output = host.run(&[
        "push",
        copy.to_str().unwrap(),
        &format!("{alias}:{}", dir.join("pushed").display()),
    ]);
    assert_succeeded(&output, "the push");
    assert_agent_used(&output, "the push");
    assert_eq!(tree(&copy), tree(&dir.join("pushed")));

    let target = dir.join("secrets/token");
    let value = format!("a secret for {alias}");
    let output = host.push_secret(alias, &value, &target, &[]);
    assert_succeeded(&output, "secret push");
    host.settle();
    assert_private_secret(&target, user, &value);
}

#[test]
fn a_tcsh_login_pulls_pushes_and_takes_secrets_through_the_agent() {
    let users = local_users();
    a_login_shell_other_than_sh_still_gets_the_agent(&users.tcsh, "tcsh", "login-shell-tcsh");
}

#[test]
fn a_fish_login_pulls_pushes_and_takes_secrets_through_the_agent() {
    let users = local_users();
    a_login_shell_other_than_sh_still_gets_the_agent(&users.fish, "fish", "login-shell-fish");
}

/// Remote paths mean what they mean to scp and sftp, for a login that is not root, through
/// the agent and over SFTP: `~/x`, `x` (from the login directory), `~user/x`, and `host:` (the
/// login directory itself). None of them makes a directory literally named `~`.
#[test]
fn tilde_relative_and_empty_remote_paths_mean_what_they_mean_to_scp() {
    let host = host();
    let victim = &host.users.victim;
    let _cache = cache_unchanged(victim);
    let dir = victim.fresh_dir("tilde-paths");
    let relative = dir
        .strip_prefix(&victim.home)
        .unwrap()
        .display()
        .to_string();
    let local = tempfile::tempdir().unwrap();
    let source = local.path().join("source.bin");
    fs::write(&source, pattern(41, RACE_FILE_SIZE)).unwrap();
    let source_text = source.to_str().unwrap();
    for (mode, extra) in [("agent", &[][..]), ("sftp", &["--no-agent"][..])] {
        let forms = [
            (format!("~/{relative}/{mode}-home/x"), "home/x"),
            (format!("{relative}/{mode}-relative/x"), "relative/x"),
            (
                format!("~{}/{relative}/{mode}-user/x", victim.name),
                "user/x",
            ),
        ];
        for (form, landed) in &forms {
            let mut arguments = vec!["push", source_text];
            let remote = format!("victim:{form}");
            arguments.push(&remote);
            arguments.extend_from_slice(extra);
            let output = host.run(&arguments);
            assert_succeeded(&output, &format!("push to {remote} ({mode})"));
            let arrived = dir.join(format!("{mode}-{landed}"));
            assert_eq!(
                fs::read(&arrived).ok(),
                Some(fs::read(&source).unwrap()),
                "{remote} did not arrive at {}",
                arrived.display()
            );
        }
        let copy = local.path().join(format!("pulled-{mode}"));
        let remote = format!("victim:~/{relative}/{mode}-home/x");
        let mut arguments = vec!["pull", &remote, copy.to_str().unwrap()];
        arguments.extend_from_slice(extra);
        assert_succeeded(&host.run(&arguments), &format!("pull of {remote} ({mode})"));
        assert_eq!(fs::read(&copy).unwrap(), fs::read(&source).unwrap());
    }
    // `host:` is the login directory.
    let name = format!("xfer-login-directory-{}.bin", std::process::id());
    let named = local.path().join(&name);
    fs::copy(&source, &named).unwrap();
    let output = host.run(&["push", named.to_str().unwrap(), "victim:"]);
    let landed = victim.home.join(&name);
    let arrived = fs::read(&landed).ok();
    remove_any(&landed);
    assert_succeeded(&output, "push to victim:");
    assert_eq!(arrived, Some(fs::read(&source).unwrap()));
    for literal in ["~", &format!("~{}", victim.name)] {
        assert!(
            !victim.home.join(literal).exists() && !dir.join(literal).exists(),
            "a directory named {literal} was made"
        );
    }
}

/// The agent never blocks a transfer: with a home the login cannot use for the agent's cache
/// (read-only to it, full, another account's, or mounted noexec), a pull and a push still succeed, bounded,
/// through an agent in the next private place (here a temporary directory of the test's own),
/// and nothing is written into the unusable home.
#[test]
fn a_home_that_cannot_hold_the_agent_never_blocks_a_transfer() {
    let users = local_users();
    let victim = &users.victim;
    let _cache = cache_unchanged(victim);
    let dir = victim.fresh_dir("unusable-home");
    let local = tempfile::tempdir().unwrap();
    let source = local.path().join("source");
    fs::create_dir_all(source.join("a")).unwrap();
    fs::write(source.join("a/one.bin"), pattern(3, 3 << 20)).unwrap();
    fs::write(source.join("two.txt"), b"two").unwrap();

    // A home the login may read but not write (root's), one a third party owns, and one that
    // is the login's own but has no room.
    let read_only = dir.join("read-only-home");
    fs::create_dir(&read_only).unwrap();
    chmod(&read_only, 0o755);
    let others = dir.join("others-home");
    fs::create_dir(&others).unwrap();
    users.third_party.own(&others);
    chmod(&others, 0o755);
    let full = dir.join("full-home");
    fs::create_dir(&full).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k,mode=0700"])
        .arg("tmpfs")
        .arg(&full)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "cannot mount a tmpfs at {}",
        full.display()
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(full.clone());
    victim.own(&full);
    // Fill it, leaving no room for an executable.
    let _ = fs::write(full.join("filler"), vec![0u8; 16 << 10]);
    // The login's own, with room, but mounted noexec: an agent put there cannot run.
    let noexec = dir.join("noexec-home");
    fs::create_dir(&noexec).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512m,mode=0700,noexec"])
        .arg("tmpfs")
        .arg(&noexec)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "cannot mount a tmpfs at {}",
        noexec.display()
    );
    let _unmount_noexec = Unmount(noexec.clone());
    victim.own(&noexec);

    for (kind, home) in [
        ("read-only", &read_only),
        ("others", &others),
        ("full", &full),
        ("noexec", &noexec),
    ] {
        let tmp = dir.join(format!("tmp-{kind}"));
        fs::create_dir(&tmp).unwrap();
        victim.own(&tmp);
        chmod(&tmp, 0o700);
        let sshd = Sshd::builder()
            .local_users()
            .extra_config(&format!(
                "SetEnv HOME={} TMPDIR={}",
                home.display(),
                tmp.display()
            ))
            .start();
        let config = victim.client_config(&sshd, "victim");
        let run = |arguments: &[&str]| {
            let mut command = xfer_command();
            command.args(arguments).arg("-F").arg(&config);
            run_with_timeout(&mut command, LIMIT)
        };
        // doctor tells where the agent would come from, changing nothing.
        let agent_column = |run: &dyn Fn(&[&str]) -> Output| {
            let output = run(&["doctor", "--json", "victim"]);
            let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            report[0]["agent"].as_str().unwrap_or("").to_string()
        };
        assert_eq!(agent_column(&run), "upload", "{kind}");
        let pushed = dir.join(format!("pushed-{kind}"));
        let output = run(&[
            "push",
            source.to_str().unwrap(),
            &format!("victim:{}", pushed.display()),
        ]);
        assert_succeeded(&output, &format!("push with a {kind} home"));
        assert_eq!(agent_column(&run), "cached", "{kind}");
        assert_agent_used(&output, &format!("push with a {kind} home"));
        assert_eq!(tree(&source), tree(&pushed), "{kind}");
        let pulled = local.path().join(format!("pulled-{kind}"));
        let output = run(&[
            "pull",
            &format!("victim:{}", pushed.display()),
            pulled.to_str().unwrap(),
        ]);
        assert_succeeded(&output, &format!("pull with a {kind} home"));
        assert_eq!(tree(&source), tree(&pulled), "{kind}");
        let cache = tmp.join(format!("xfer-agent-{}", victim.uid));
        assert_eq!(
            fs::read_dir(&cache).map(|entries| entries.count()).ok(),
            Some(1),
            "{kind}: the agent is not in {}",
            cache.display()
        );
        // A full home may keep the empty cache directory the upload made; never a file.
        let in_home = fs::read_dir(home.join(".cache/xfer"))
            .map(|entries| entries.count())
            .unwrap_or(0);
        assert_eq!(in_home, 0, "{kind}: something was left in the home's cache");
        let row = Host {
            users,
            sshd,
            config: config.clone(),
        };
        every_operation_works(&row, "victim", victim, &format!("matrix-home-{kind}"));
    }
}

/// An SFTP-only login locked in a chroot (`ForceCommand internal-sftp`, `ChrootDirectory`), as
/// hosting providers set up: pull and push work over SFTP with paths inside the chroot, a
/// secret is refused in one line that says why, and doctor says exec is not allowed.
#[test]
fn a_chrooted_sftp_only_login_transfers_and_explains_secrets() {
    let users = local_users();
    let victim = &users.victim;
    // sshd wants every component of a chroot owned by root and writable by nobody else.
    let chroot = PathBuf::from(format!("/var/lib/xfer-test-chroot-{}", std::process::id()));
    remove_any(&chroot);
    fs::create_dir_all(chroot.join("data")).unwrap();
    chmod(&chroot, 0o755);
    victim.own(&chroot.join("data"));
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            remove_any(&self.0);
        }
    }
    let _remove = Remove(chroot.clone());
    let sshd = Sshd::builder()
        .local_users()
        .extra_config(&format!(
            "Match User {}\n  ChrootDirectory {}\n  ForceCommand internal-sftp",
            victim.name,
            chroot.display()
        ))
        .start();
    let config = victim.client_config(&sshd, "victim");
    let run = |arguments: &[&str]| {
        let mut command = xfer_command();
        command.args(arguments).arg("-F").arg(&config);
        run_with_timeout(&mut command, LIMIT)
    };
    let local = tempfile::tempdir().unwrap();
    let source = local.path().join("source");
    fs::create_dir_all(source.join("a")).unwrap();
    fs::write(source.join("a/one.bin"), pattern(9, 2 << 20)).unwrap();
    fs::write(source.join("two.txt"), b"two").unwrap();

    let output = run(&["push", source.to_str().unwrap(), "victim:/data/pushed"]);
    assert_succeeded(&output, "push into the chroot");
    assert_eq!(text(&output.stderr).matches("using SFTP").count(), 1);
    assert_eq!(tree(&source), tree(&chroot.join("data/pushed")));
    let copy = local.path().join("copy");
    let output = run(&["pull", "victim:/data/pushed", copy.to_str().unwrap()]);
    assert_succeeded(&output, "pull from the chroot");
    assert_eq!(tree(&source), tree(&copy));

    let mut secret = xfer_command();
    secret
        .env("CHROOT_TOKEN", "value")
        .args([
            "secret",
            "push",
            "--from-env",
            "CHROOT_TOKEN",
            "--to",
            "/data/token",
            "-F",
        ])
        .arg(&config)
        .arg("victim");
    let output = run_with_timeout(&mut secret, LIMIT);
    assert_eq!(output.status.code(), Some(6), "{}", said(&output));
    assert!(
        said(&output).contains("runs no commands"),
        "{}",
        said(&output)
    );
    assert!(!chroot.join("data/token").exists());

    let output = run(&["doctor", "--json", "victim"]);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report[0]["exec"], "refused", "{report}");
    assert_eq!(report[0]["sftp"], "allowed", "{report}");
}

#[test]
fn a_dash_login_pulls_pushes_and_takes_secrets_through_the_agent() {
    let users = local_users();
    assert_eq!(
        fs::canonicalize(&users.third_party.shell).unwrap(),
        fs::canonicalize("/bin/dash").unwrap(),
        "the third party's login shell is dash"
    );
    a_login_shell_other_than_sh_still_gets_the_agent(
        &users.third_party,
        "third",
        "login-shell-dash",
    );
}

/// One row of the server matrix, for a login on `host`: pull, push, a delta re-run counted at a
/// proxy, a dry run, doctor, and a secret pushed and checked, each bounded and checked.
fn every_operation_works(host: &Host, alias: &str, user: &LocalUser, test: &str) {
    let dir = user.fresh_dir(test);
    remote_tree(user, &dir.join("source"));
    let local = tempfile::tempdir().unwrap();
    let copy = local.path().join("copy");
    let output = host.run(&[
        "pull",
        &format!("{alias}:{}", dir.join("source").display()),
        copy.to_str().unwrap(),
    ]);
    assert_succeeded(&output, &format!("{test}: pull"));
    assert_eq!(tree(&dir.join("source")), tree(&copy), "{test}");

    let pushed = dir.join("pushed");
    let remote = format!("{alias}:{}", pushed.display());
    assert_succeeded(
        &host.run(&["push", copy.to_str().unwrap(), &remote]),
        &format!("{test}: push"),
    );
    assert_eq!(tree(&copy), tree(&pushed), "{test}");

    // A 4-byte change moves a small delta, counted at a proxy in front of the server.
    let proxy = Proxy::start(host.sshd.port());
    let via = format!("{alias}-via");
    host.sshd.append_client_config(
        &host.config,
        &via,
        &[
            &format!("User {}", user.name),
            &format!("Port {}", proxy.port()),
        ],
    );
    let big = copy.join("a/b/several.bin");
    let mut data = fs::read(&big).unwrap();
    data[(1 << 20) + 10..(1 << 20) + 14].copy_from_slice(b"edit");
    fs::write(&big, &data).unwrap();
    let seconds = fs::metadata(&big).unwrap().mtime();
    set_mtime(&big, seconds + 100);
    let output = host.run(&[
        "push",
        copy.to_str().unwrap(),
        &format!("{via}:{}", pushed.display()),
    ]);
    assert_succeeded(&output, &format!("{test}: delta push"));
    assert_eq!(tree(&copy), tree(&pushed), "{test}");
    assert!(
        proxy.bytes_total() < 1 << 20,
        "{test}: {} bytes on the wire for a 4-byte change",
        proxy.bytes_total()
    );

    // A dry run lists the change it would make and changes nothing.
    fs::write(copy.join("small.txt"), b"changed").unwrap();
    let before = tree(&pushed);
    let output = host.run(&["push", "--dry-run", copy.to_str().unwrap(), &remote]);
    assert_succeeded(&output, &format!("{test}: dry run"));
    assert!(text(&output.stdout).contains("small.txt"), "{test}");
    assert_eq!(
        tree(&pushed),
        before,
        "{test}: the dry run changed the host"
    );

    let output = host.run(&["doctor", "--json", alias]);
    assert_succeeded(&output, &format!("{test}: doctor"));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report[0]["exec"], "allowed", "{test}: {report}");

    let target = dir.join("secret/token");
    let value = format!("the {test} token");
    assert_succeeded(
        &host.push_secret(alias, &value, &target, &[]),
        &format!("{test}: secret push"),
    );
    host.settle();
    assert_private_secret(&target, user, &value);
    let mut check = xfer_command();
    check
        .env("XFER_SHARED_HOST_SECRET", &value)
        .args([
            "secret",
            "check",
            "--from-env",
            "XFER_SHARED_HOST_SECRET",
            "--to",
        ])
        .arg(&target)
        .arg("-F")
        .arg(&host.config)
        .arg(alias);
    assert_succeeded(
        &run_with_timeout(&mut check, LIMIT),
        &format!("{test}: secret check"),
    );
}

#[test]
fn the_server_matrix_every_login_shell_does_every_operation() {
    let host = host();
    let users = host.users;
    for (alias, user, test) in [
        ("victim", &users.victim, "matrix-bash"),
        ("third", &users.third_party, "matrix-dash"),
        ("tcsh", &users.tcsh, "matrix-tcsh"),
        ("fish", &users.fish, "matrix-fish"),
    ] {
        // From an empty cache, so the agent is deployed through that login shell too.
        let _change = CacheChange::take(user);
        every_operation_works(&host, alias, user, test);
    }
}
