//! Local users for tests of a shared remote host: a victim login and a third party who share a
//! supplementary group, and logins whose shell is tcsh, fish, zsh or dash (which the shell-only
//! tests log in as too). This module owns creating them (once per test process, idempotently,
//! under a lock file so test processes of other checkouts running at once do not race
//! `useradd`), giving a test clean directories of its own in their homes, resetting a login's
//! agent cache (with the lock that keeps a test from changing a cache another test is using),
//! running a process as one of them, and waiting until the processes of an sshd's sessions are
//! gone. The password login of `super::pam` is created with the same helper, under the same
//! lock.
//!
//! Creating users needs root, as in CI; a test that uses this module fails saying so otherwise.

use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Group, Uid, User};

use super::{Sshd, run_with_timeout, running_as_root};

/// The supplementary group the victim and the third party share.
pub const SHARED_GROUP: &str = "xfer-shared";
/// The login whose files and secrets the tests protect.
pub const VICTIM: &str = "xfer-victim";
/// Another login on the same host, in the shared group, who attacks.
pub const THIRD_PARTY: &str = "xfer-third";
/// A login whose shell is tcsh, which refuses a quoted string spanning lines.
pub const TCSH_USER: &str = "xfer-tcsh";
/// A login whose shell is fish, which is not a POSIX shell.
pub const FISH_USER: &str = "xfer-fish";
/// A login whose shell is zsh, which has startup files and prompt escapes of its own.
pub const ZSH_USER: &str = "xfer-zsh";
/// A login whose shell is dash by that name (the third party's `/bin/sh` is dash too on
/// Debian, but that login is the attacker's).
pub const DASH_USER: &str = "xfer-dash";

/// Each user and its login shell. The shells must be installed (.ci/run installs tcsh, fish
/// and zsh).
const USERS: [(&str, &str); 6] = [
    (VICTIM, "/bin/bash"),
    (THIRD_PARTY, "/bin/sh"),
    (TCSH_USER, "/usr/bin/tcsh"),
    (FISH_USER, "/usr/bin/fish"),
    (ZSH_USER, "/usr/bin/zsh"),
    (DASH_USER, "/bin/dash"),
];

/// Held while creating users, so that test processes running at once do not both run
/// `useradd` for the same name. Under /run, where only root can create files.
const LOCK_FILE: &str = "/run/xfer-test-users.lock";
/// How long `useradd` and friends may take.
const TOOL_LIMIT: Duration = Duration::from_secs(60);

/// A local user as passwd describes it.
#[derive(Clone, Debug)]
pub struct LocalUser {
    pub name: String,
    pub uid: u32,
    /// The primary group: the user's own.
    pub gid: u32,
    pub home: PathBuf,
    pub shell: PathBuf,
}

/// The users of the shared-host tests; see [`local_users`].
#[derive(Debug)]
pub struct LocalUsers {
    pub victim: LocalUser,
    pub third_party: LocalUser,
    pub tcsh: LocalUser,
    pub fish: LocalUser,
    pub zsh: LocalUser,
    pub dash: LocalUser,
    /// The gid of [`SHARED_GROUP`].
    pub shared_gid: u32,
}

/// The shared-host users, created on first use: each in [`SHARED_GROUP`] besides its own
/// group, with its shell, a password field that locks out passwords but not keys (`*`; sshd
/// without PAM refuses a login whose password field starts with `!`), and a home of mode 0711
/// (others may pass through to directories a test shares, but not list it).
/// Panics with the reason if not running as root or if a shell is missing.
pub fn local_users() -> &'static LocalUsers {
    static CREATED: OnceLock<LocalUsers> = OnceLock::new();
    CREATED.get_or_init(create_users)
}

fn create_users() -> LocalUsers {
    assert!(
        running_as_root(),
        "the shared-host tests create local users ({}) and log in as them: run them as root, as CI does",
        USERS.map(|(name, _)| name).join(", ")
    );
    for (_, shell) in USERS {
        assert!(
            Path::new(shell).is_file(),
            "{shell} is missing: install its package (.ci/run installs tcsh, fish and zsh)"
        );
    }
    let lock = lock_user_creation();

    if Group::from_name(SHARED_GROUP).ok().flatten().is_none() {
        tool(Command::new("groupadd").arg(SHARED_GROUP));
    }
    let shared = Group::from_name(SHARED_GROUP)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("groupadd {SHARED_GROUP} left no such group"));
    let mut created = Vec::new();
    for (name, shell) in USERS {
        created.push(ensure_user(name, shell, Some(SHARED_GROUP)));
    }
    drop(lock);

    let mut created = created.into_iter();
    let mut next = || created.next().expect("one per entry of USERS");
    LocalUsers {
        victim: next(),
        third_party: next(),
        tcsh: next(),
        fish: next(),
        zsh: next(),
        dash: next(),
        shared_gid: shared.gid.as_raw(),
    }
}

/// Holds the lock under which local users are created (see [`LOCK_FILE`]) until dropped.
pub(super) fn lock_user_creation() -> File {
    super::lock_exclusively(Path::new(LOCK_FILE))
}

/// Creates the user if it is missing and corrects what an earlier run (or a person) may have
/// left different, then checks the result: its shell, membership of `supplementary` (a group
/// that must exist), a password field that does not lock it out of sshd, and a home of mode
/// 0711. Call it under [`lock_user_creation`].
pub(super) fn ensure_user(name: &str, shell: &str, supplementary: Option<&str>) -> LocalUser {
    if User::from_name(name).ok().flatten().is_none() {
        let mut command = Command::new("useradd");
        command
            .args(["--create-home", "--shell", shell])
            .args(["--password", "*"]);
        if let Some(group) = supplementary {
            command.args(["--groups", group]);
        }
        // A group of the user's name may be left from a user removed by hand.
        if Group::from_name(name).ok().flatten().is_some() {
            command.args(["--gid", name]);
        } else {
            command.arg("--user-group");
        }
        tool(command.arg(name));
    }
    let user = User::from_name(name)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("useradd {name} left no such user"));
    if user.shell != Path::new(shell) {
        tool(Command::new("usermod").args(["--shell", shell, name]));
    }
    if let Some(group) = supplementary
        && !member_of(group, name)
    {
        tool(Command::new("usermod").args(["--append", "--groups", group, name]));
    }
    if password_field(name).is_none_or(|field| field.starts_with('!')) {
        tool(Command::new("usermod").args(["--password", "*", name]));
    }

    let user = User::from_name(name).ok().flatten().expect("just checked");
    assert_eq!(user.shell, Path::new(shell), "the shell of {name}");
    if let Some(group) = supplementary {
        assert!(member_of(group, name), "{name} is not in {group}");
    }
    assert!(
        password_field(name).is_some_and(|field| !field.starts_with('!')),
        "{name}'s password field still locks it out of sshd"
    );
    fs::create_dir_all(&user.dir)
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", user.dir.display()));
    chown(&user.dir, user.uid.as_raw(), user.gid.as_raw());
    chmod(&user.dir, 0o711);
    LocalUser {
        name: name.to_owned(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        home: user.dir,
        shell: user.shell,
    }
}

/// Whether the group database lists `name` in `group` (a supplementary member).
fn member_of(group: &str, name: &str) -> bool {
    Group::from_name(group)
        .ok()
        .flatten()
        .is_some_and(|group| group.mem.iter().any(|member| member == name))
}

/// The user's password field in /etc/shadow, if it has a line there.
fn password_field(name: &str) -> Option<String> {
    let shadow = fs::read_to_string("/etc/shadow").ok()?;
    shadow.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(name)).then(|| fields.next().unwrap_or_default().to_owned())
    })
}

fn tool(command: &mut Command) {
    let output = run_with_timeout(command, TOOL_LIMIT);
    assert!(
        output.status.success(),
        "{command:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Changes the owner of `path` itself (a symlink, not what it points to).
pub fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|error| panic!("cannot chown {}: {error}", path.display()));
}

/// Sets the permission bits of `path` (including setgid and sticky) to `mode`.
pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|error| panic!("cannot chmod {}: {error}", path.display()));
}

/// Removes whatever `path` is (a file, a symlink without following it, or a tree); nothing if
/// it is missing.
pub fn remove_any(path: &Path) {
    let result = match fs::symlink_metadata(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return,
        Err(error) => Err(error),
        Ok(metadata) if metadata.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    };
    result.unwrap_or_else(|error| panic!("cannot remove {}: {error}", path.display()));
}

/// Removes the entries of `parent` named `<name>-<pid>` whose process is gone: what earlier
/// test processes left, named apart so processes running at once do not meet.
pub fn remove_stale(parent: &Path, name: &str) {
    let prefix = format!("{name}-");
    for entry in fs::read_dir(parent).into_iter().flatten().flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = file_name
            .strip_prefix(&prefix)
            .and_then(|pid| pid.parse::<u32>().ok())
            && !Path::new("/proc").join(pid.to_string()).exists()
        {
            remove_any(&entry.path());
        }
    }
}

impl LocalUser {
    /// A fresh, empty directory for one test: `~/xfer-tests/<name>-<pid>`, owned by the user
    /// (its own group), mode 0755. The process id keeps test processes of other checkouts that
    /// run the same test apart; directories of processes that are gone are removed, so tests
    /// should use distinct names.
    pub fn fresh_dir(&self, name: &str) -> PathBuf {
        let parent = self.home.join("xfer-tests");
        if !parent.is_dir() {
            fs::create_dir_all(&parent)
                .unwrap_or_else(|error| panic!("cannot create {}: {error}", parent.display()));
        }
        chown(&parent, self.uid, self.gid);
        chmod(&parent, 0o755);
        remove_stale(&parent, name);
        let dir = parent.join(format!("{name}-{}", std::process::id()));
        remove_any(&dir);
        fs::create_dir(&dir)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", dir.display()));
        self.own(&dir);
        chmod(&dir, 0o755);
        dir
    }

    /// Makes the user the owner of `path` (its own group), not following a symlink.
    pub fn own(&self, path: &Path) {
        chown(path, self.uid, self.gid);
    }

    /// Makes the user the owner of everything under `root`, `root` included.
    pub fn own_tree(&self, root: &Path) {
        for entry in walkdir::WalkDir::new(root) {
            let entry =
                entry.unwrap_or_else(|error| panic!("cannot walk {}: {error}", root.display()));
            self.own(entry.path());
        }
    }

    /// Writes `content` to `path` as a file owned by the user with `mode`.
    pub fn write_file(&self, path: &Path, content: &[u8], mode: u32) {
        fs::write(path, content)
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
        self.own(path);
        chmod(path, mode);
    }

    /// A `Command` running `program` as this user: its uid, its primary group and all its
    /// supplementary groups (so the third party really is in [`SHARED_GROUP`]), an environment
    /// of HOME, USER, LOGNAME, SHELL and PATH only, the home as working directory, stdin from
    /// /dev/null. Run it with the harness's run helpers or [`Background`], which bound it.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let name = CString::new(self.name.as_str()).expect("user names have no NUL");
        let groups = nix::unistd::getgrouplist(&name, Gid::from_raw(self.gid))
            .unwrap_or_else(|error| panic!("cannot list the groups of {}: {error}", self.name));
        let (uid, gid) = (Uid::from_raw(self.uid), Gid::from_raw(self.gid));
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .env("SHELL", &self.shell)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .current_dir(&self.home)
            .stdin(Stdio::null());
        // Not Command::uid and gid: std then drops every supplementary group, and the shared
        // group is the point. Groups first, while still root; the uid last.
        unsafe {
            command.pre_exec(move || {
                nix::unistd::setgroups(&groups)?;
                nix::unistd::setgid(gid)?;
                nix::unistd::setuid(uid)?;
                Ok(())
            });
        }
        command
    }

    /// `~/.cache/xfer`, where xfer caches its agent.
    pub fn agent_cache(&self) -> PathBuf {
        self.home.join(".cache/xfer")
    }

    /// The agent's path in the cache, under the name this build of xfer looks for.
    pub fn agent_path(&self) -> PathBuf {
        self.agent_cache().join(agent_name())
    }

    /// Returns `~/.cache` to what a careful user has: the user's own, mode 0700, and holding
    /// only the agent cache (0700) with this build's agent in it (0700) when `with_agent`, so
    /// no test waits for a deployment it does not test.
    pub fn reset_cache(&self, with_agent: bool) {
        // The places xfer puts the agent when the home's cache cannot serve hold the user's
        // copies across tests too: a test that starts from an empty cache empties them.
        for fallback in [
            PathBuf::from(format!("/tmp/xfer-agent-{}", self.uid)),
            PathBuf::from(format!("/dev/shm/xfer-agent-{}", self.uid)),
        ] {
            remove_any(&fallback);
        }
        let cache = self.home.join(".cache");
        remove_any(&cache);
        fs::create_dir(&cache)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", cache.display()));
        self.own(&cache);
        chmod(&cache, 0o700);
        if with_agent {
            let agents = self.agent_cache();
            fs::create_dir(&agents)
                .unwrap_or_else(|error| panic!("cannot create {}: {error}", agents.display()));
            self.own(&agents);
            chmod(&agents, 0o700);
            let agent = self.agent_path();
            fs::copy(env!("CARGO_BIN_EXE_xfer"), &agent).unwrap_or_else(|error| {
                panic!("cannot copy the agent to {}: {error}", agent.display())
            });
            self.own(&agent);
            chmod(&agent, 0o700);
        }
    }

    /// The `Host alias` block reaching `sshd` as this user, appended to `sshd`'s ssh_config;
    /// returns that file's path.
    pub fn client_config(&self, sshd: &Sshd, alias: &str) -> PathBuf {
        sshd.write_client_config(alias, &[&format!("User {}", self.name)])
    }
}

/// The agent's file name in a remote cache for this build: `agent-VERSION-OS-ARCH-HASH`.
pub fn agent_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let binary = fs::read(env!("CARGO_BIN_EXE_xfer"))
            .unwrap_or_else(|error| panic!("cannot read the xfer binary: {error}"));
        xfer::remote::bundle::cache_name(
            env!("CARGO_PKG_VERSION"),
            &xfer::remote::bundle::Platform::this(),
            &xfer::blocks::file_hash_of(&binary),
        )
    })
}

/// Locks a user's agent cache: shared by tests that log in as the user and expect the cache as
/// [`LocalUser::reset_cache`] leaves it, exclusively by a test that changes it (modes, symlinks,
/// planted files, an empty cache). A lock file (`/run/xfer-test-cache-<user>.lock`) rather than
/// a lock in memory, because test processes of other checkouts on the machine log in as the
/// same users: flock(2) locks of separate opens exclude each other within a process as across
/// processes.
fn lock_cache(user: &LocalUser, exclusive: bool) -> File {
    let path = format!("/run/xfer-test-cache-{}.lock", user.name);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|error| panic!("cannot open {path}: {error}"));
    if exclusive {
        file.lock()
    } else {
        file.lock_shared()
    }
    .unwrap_or_else(|error| panic!("cannot lock {path}: {error}"));
    file
}

/// A shared hold on a user's agent cache: no test changes it until this is dropped.
pub struct CacheUnchanged {
    _lock: File,
}

/// Holds `user`'s agent cache unchanged for a test that uses it. The first hold for `user` in
/// this process resets the cache (with the agent) first, whatever a killed run left there.
pub fn cache_unchanged(user: &LocalUser) -> CacheUnchanged {
    static RESET: Mutex<Vec<String>> = Mutex::new(Vec::new());
    {
        let mut reset = RESET
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !reset.contains(&user.name) {
            let _exclusive = lock_cache(user, true);
            user.reset_cache(true);
            reset.push(user.name.clone());
        }
    }
    CacheUnchanged {
        _lock: lock_cache(user, false),
    }
}

/// An exclusive hold on `user`'s agent cache, for a test that changes it: the cache is reset
/// (with the agent) when taken and again when dropped, even if the test panics.
pub struct CacheChange {
    user: LocalUser,
    _lock: File,
}

impl CacheChange {
    pub fn take(user: &LocalUser) -> CacheChange {
        let lock = lock_cache(user, true);
        user.reset_cache(true);
        CacheChange {
            user: user.clone(),
            _lock: lock,
        }
    }
}

impl Drop for CacheChange {
    fn drop(&mut self) {
        // Before the lock is released: fields are dropped after this.
        self.user.reset_cache(true);
    }
}

/// A process a test runs beside xfer (an attacker's loop): killed by its pid when dropped, so
/// a failing test leaves nothing running.
pub struct Background {
    child: Option<Child>,
    what: String,
}

impl Background {
    /// Starts `command` with stdout and stderr going to files under `log_dir`, read by
    /// [`Background::finish`].
    pub fn start(command: &mut Command, log_dir: &Path, what: &str) -> Background {
        let stdout = File::create(log_dir.join(format!("{what}.stdout")))
            .unwrap_or_else(|error| panic!("cannot create {what}'s stdout file: {error}"));
        let stderr = File::create(log_dir.join(format!("{what}.stderr")))
            .unwrap_or_else(|error| panic!("cannot create {what}'s stderr file: {error}"));
        let child = command
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {what} ({command:?}): {error}"));
        Background {
            child: Some(child),
            what: what.to_owned(),
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Waits up to `limit` for it to exit by itself (it was told to stop), then kills it; panics
    /// if it had to be killed or exited with an error. Returns what it wrote to stdout.
    pub fn finish(mut self, log_dir: &Path, limit: Duration) -> String {
        let mut child = self.child.take().expect("finished once");
        let deadline = Instant::now() + limit;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{} did not stop within {limit:?}", self.what);
                }
            }
        };
        let read = |stream: &str| {
            fs::read_to_string(log_dir.join(format!("{}.{stream}", self.what))).unwrap_or_default()
        };
        assert!(
            status.success(),
            "{} failed ({status}): {}",
            self.what,
            read("stderr")
        );
        read("stdout")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until no process started for a session of `sshd` is left (found by the
/// SSH_CONNECTION that sshd gives a session and its children inherit), for up to `limit`.
/// A remote shell can outlive the connection it came from: only once it is gone is what it
/// left on disk final. Returns whether they all ended.
pub fn wait_for_sessions_to_end(sshd: &Sshd, limit: Duration) -> bool {
    let port = sshd.port().to_string();
    let deadline = Instant::now() + limit;
    loop {
        let remaining = fs::read_dir("/proc")
            .map(|entries| {
                entries.flatten().any(|entry| {
                    let Ok(environment) = fs::read(entry.path().join("environ")) else {
                        return false;
                    };
                    environment.split(|byte| *byte == 0).any(|variable| {
                        variable
                            .strip_prefix(b"SSH_CONNECTION=")
                            .and_then(|value| std::str::from_utf8(value).ok())
                            .is_some_and(|value| value.split(' ').nth(3) == Some(port.as_str()))
                    })
                })
            })
            .unwrap_or(false);
        if !remaining {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
