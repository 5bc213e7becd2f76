//! A real Dropbear server on 127.0.0.1, one per test, logged in as a local test user: the
//! harness's other SSH server, for the hosts (routers, small images, some clouds) that run it
//! instead of OpenSSH. This module owns starting and stopping it, its host key, the client key
//! it authorizes (in the login user's `~/.ssh/authorized_keys`, the only place Dropbear reads)
//! and the client-side files (ssh_config, known_hosts) that reach it.
//!
//! Dropbear serves the SFTP subsystem by running the fixed path `/usr/lib/sftp-server`. Without
//! an sftp-server it still accepts the subsystem request, then the channel closes at once. To
//! be such a host without uninstalling anything, the server is started in a mount namespace of
//! its own in which `/dev/null` is bound over that path: the exec fails there and only there.
//!
//! Needs root (Dropbear switches to the login user; the namespace and the mount), as in CI, and
//! the Debian package dropbear-bin (.ci/run installs it).

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tempfile::TempDir;

use super::server::{self, Startup};
use super::sshd::{ClientEnd, append, client_config_block};
use super::users::{LocalUser, chmod};
use super::{keygen, public_key_path, read_lossy, run_with_timeout, running_as_root};

const DROPBEAR_BINARY: &str = "/usr/sbin/dropbear";
/// The path Dropbear runs for the SFTP subsystem (a Debian build; OpenSSH's there).
pub const SFTP_SERVER: &str = "/usr/lib/sftp-server";
/// How long dropbearkey or ssh-keygen may take.
const TOOL_LIMIT: Duration = Duration::from_secs(30);
/// Held while changing a login's authorized_keys, which test processes of other checkouts
/// (each with its own client key) change too. Under /run, where only root can create files.
const AUTHORIZED_KEYS_LOCK: &str = "/run/xfer-test-dropbear-keys.lock";

/// Started in the new mount namespace: covers the sftp-server when told to (`$1` = `hide`),
/// then becomes Dropbear with the rest of the arguments. Exit 97: the mount failed.
const LAUNCH: &str = r#"if [ "$1" = hide ]; then mount --bind /dev/null "$2" || exit 97; fi
shift 2
exec "$@""#;

/// A running Dropbear. Dropping it stops the server process (sessions already open end when
/// their clients disconnect) and removes its directory.
pub struct Dropbear {
    port: u16,
    user: LocalUser,
    sftp_server: bool,
    child: Option<Child>,
    // Declared last so that it is removed after the process is gone.
    dir: TempDir,
}

impl Dropbear {
    /// A Dropbear on a free port of 127.0.0.1 that lets `user` log in with
    /// [`Dropbear::client_key`], with a working sftp-server (`sftp_server`) or as a host that
    /// has none.
    pub fn start(user: &LocalUser, sftp_server: bool) -> Dropbear {
        assert!(
            running_as_root(),
            "the Dropbear tests start a server that logs in as {} and covers {SFTP_SERVER} in a mount namespace: run them as root, as CI does",
            user.name
        );
        assert!(
            Path::new(DROPBEAR_BINARY).is_file(),
            "{DROPBEAR_BINARY} is missing: install dropbear-bin (.ci/run installs it)"
        );
        if sftp_server {
            assert!(
                Path::new(SFTP_SERVER).exists(),
                "{SFTP_SERVER} is missing: install openssh-sftp-server"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("xfer-dropbear-")
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot create a directory for Dropbear: {error}"));
        let mut server = Dropbear {
            port: 0,
            user: user.clone(),
            sftp_server,
            child: None,
            dir,
        };
        server.make_host_key();
        authorize(user, &public_key_path(client_key()));
        let (port, child) =
            server::start_on_free_port("Dropbear", |port| server.spawn(port), || server.log());
        server.port = port;
        server.child = Some(child);
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The login user.
    pub fn user(&self) -> &LocalUser {
        &self.user
    }

    /// The temporary directory holding the host key, the log and the client-side files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A private ed25519 key (mode 0600) the login user authorizes.
    pub fn client_key(&self) -> PathBuf {
        client_key().to_path_buf()
    }

    /// The host key as `"ssh-ed25519 AAAA..."`.
    pub fn host_public_key(&self) -> String {
        read_lossy(&self.dir().join("host_key.pub"))
            .trim()
            .to_owned()
    }

    /// `<dir>/known_hosts`: the host key under every name a client block reaches it by.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir().join("known_hosts")
    }

    /// Appends a `Host alias` block reaching this server as its login user to
    /// `<dir>/ssh_config` and returns that file's path; `extra` lines as for
    /// [`super::Sshd::write_client_config`] (`Port N` to go through a [`super::Proxy`]).
    pub fn write_client_config(&self, alias: &str, extra: &[&str]) -> PathBuf {
        let path = self.dir().join("ssh_config");
        self.append_client_config(&path, alias, extra);
        path
    }

    /// Appends the `Host alias` block to any file.
    pub fn append_client_config(&self, path: &Path, alias: &str, extra: &[&str]) {
        let end = ClientEnd {
            port: self.port,
            user: self.user.name.clone(),
            client_key: self.client_key(),
            known_hosts: self.known_hosts(),
            host_public_key: self.host_public_key(),
        };
        append(path, &client_config_block(&end, alias, extra));
    }

    /// Everything Dropbear has logged so far (its stderr: `-E`).
    pub fn log(&self) -> String {
        read_lossy(&self.log_path())
    }

    fn log_path(&self) -> PathBuf {
        self.dir().join("dropbear.log")
    }

    fn pid_path(&self) -> PathBuf {
        self.dir().join("dropbear.pid")
    }

    fn make_host_key(&self) {
        let key = self.dir().join("host_key");
        let output = run_with_timeout(
            Command::new("dropbearkey")
                .args(["-t", "ed25519", "-f"])
                .arg(&key)
                .stdin(Stdio::null()),
            TOOL_LIMIT,
        );
        assert!(
            output.status.success(),
            "dropbearkey -t ed25519 failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let output = run_with_timeout(
            Command::new("dropbearkey")
                .args(["-y", "-f"])
                .arg(&key)
                .stdin(Stdio::null()),
            TOOL_LIMIT,
        );
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let public = text
            .lines()
            .find(|line| line.starts_with("ssh-ed25519 "))
            .map(|line| {
                line.split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|| panic!("dropbearkey -y printed no public key:\n{text}"));
        fs::write(self.dir().join("host_key.pub"), format!("{public}\n"))
            .unwrap_or_else(|error| panic!("cannot write the host's public key: {error}"));
    }

    /// Starts Dropbear on `port` in its own mount namespace and waits until it listens: it
    /// writes its pid file only after binding.
    fn spawn(&self, port: u16) -> Startup {
        let _ = fs::remove_file(self.pid_path());
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|error| panic!("cannot open Dropbear's log: {error}"));
        let log_start = fs::metadata(self.log_path()).map_or(0, |meta| meta.len() as usize);
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                LAUNCH,
                "sh",
            ])
            .arg(if self.sftp_server { "keep" } else { "hide" })
            .arg(SFTP_SERVER)
            .arg(DROPBEAR_BINARY)
            // Foreground, log to stderr, no passwords, no motd.
            .args(["-F", "-E", "-s", "-m"])
            .arg("-p")
            .arg(format!("127.0.0.1:{port}"))
            .arg("-r")
            .arg(self.dir().join("host_key"))
            .arg("-P")
            .arg(self.pid_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run unshare (util-linux): {error}"));
        // unshare and sh both exec: the child is Dropbear itself.
        let pid = child.id();
        server::wait_until_listening(
            "Dropbear",
            child,
            port,
            || read_lossy(&self.pid_path()).trim() == pid.to_string(),
            |_| {
                let log = self.log();
                log.get(log_start..)
                    .unwrap_or(&log)
                    .contains("Address already in use")
            },
            || self.log(),
        )
    }

    /// Stops the Dropbear process this harness started: SIGTERM, then SIGKILL if it lingers.
    fn stop(&mut self) {
        server::stop(&mut self.child);
    }
}

impl Drop for Dropbear {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The client key every Dropbear of this checkout authorizes, made once:
/// `target/tmp/dropbear-client/client_key`. One key rather than one per server, because they
/// all land in the same login's authorized_keys, which would otherwise grow by a line a test.
fn client_key() -> &'static Path {
    static KEY: OnceLock<PathBuf> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dropbear-client");
        fs::create_dir_all(&dir)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", dir.display()));
        chmod(&dir, 0o700);
        // Test binaries of this checkout running at once make it once.
        let _lock = super::lock_exclusively(&dir.join(".lock"));
        let key = dir.join("client_key");
        if !(key.is_file() && public_key_path(&key).is_file()) {
            keygen(&dir, "client_key", "ed25519", None);
        }
        key
    })
}

/// Adds the public key at `public_key` to `user`'s `~/.ssh/authorized_keys` unless it is there,
/// with the modes Dropbear insists on: `~/.ssh` 0700 and the file 0600, both the user's.
fn authorize(user: &LocalUser, public_key: &Path) {
    let key = fs::read_to_string(public_key)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", public_key.display()));
    let key = key.trim();
    let _lock = super::lock_exclusively(Path::new(AUTHORIZED_KEYS_LOCK));
    let ssh = user.home.join(".ssh");
    if !ssh.is_dir() {
        fs::create_dir(&ssh)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", ssh.display()));
    }
    user.own(&ssh);
    chmod(&ssh, 0o700);
    let authorized = ssh.join("authorized_keys");
    if !read_lossy(&authorized)
        .lines()
        .any(|line| line.trim() == key)
    {
        append(&authorized, &format!("{key}\n"));
    }
    user.own(&authorized);
    chmod(&authorized, 0o600);
}
