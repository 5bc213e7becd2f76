//! A real OpenSSH sshd on 127.0.0.1, one per test, owning a temporary directory with its keys,
//! configuration, log and the client-side files (ssh_config, known_hosts) that reach it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::server::{self, START_LIMIT, Startup};
use super::{current_user, keygen, public_key_path, read_lossy, running_as_root};

/// Absolute, because sshd re-executes itself and refuses to start from a relative path.
const SSHD_BINARY: &str = "/usr/sbin/sshd";
/// sshd's privilege separation directory, which it checks for when started as root.
const PRIVSEP_DIR: &str = "/run/sshd";
/// Started by `unshare` in sshd's new mount namespace (see [`SshdBuilder::private_mount`]):
/// for each triple of arguments before `--` (`rw` or `ro`, source, path), in order, binds the
/// source over the path, read-only for `ro`, then becomes sshd with the arguments after `--`.
/// Exit 97: a mount failed (its message is in sshd.stderr).
const PRIVATE_MOUNT: &str = r#"while [ "$1" != -- ]; do
  mount --bind "$2" "$3" || exit 97
  if [ "$1" = ro ]; then mount -o remount,bind,ro "$3" || exit 97; fi
  shift 3
done
shift
exec "$@""#;

/// Options for an [`Sshd`]; start one with [`SshdBuilder::start`].
#[derive(Clone, Debug)]
pub struct SshdBuilder {
    host_key_type: String,
    sftp: bool,
    extra_config: String,
    log_level: String,
    local_users: bool,
    /// A CA's private key and the ssh-keygen options (principals, validity) to sign the host
    /// key with, for a `HostCertificate`.
    host_certificate: Option<(PathBuf, Vec<String>)>,
    /// Directories or files to bind over paths in a mount namespace of sshd's own, in order.
    private_mounts: Vec<PrivateMount>,
}

/// One bind mount of [`SshdBuilder::private_mount`]: `source` over `over`.
#[derive(Clone, Debug)]
struct PrivateMount {
    source: PathBuf,
    over: PathBuf,
    read_only: bool,
}

impl Default for SshdBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl SshdBuilder {
    /// An ed25519 host key, sftp enabled, LogLevel DEBUG1 (which logs forwarding, for ProxyJump
    /// tests, and says why a login failed).
    pub fn new() -> SshdBuilder {
        SshdBuilder {
            host_key_type: "ed25519".to_owned(),
            sftp: true,
            extra_config: String::new(),
            log_level: "DEBUG1".to_owned(),
            local_users: false,
            host_certificate: None,
            private_mounts: Vec::new(),
        }
    }

    /// `ed25519`, `rsa` or `ecdsa`.
    pub fn host_key_type(mut self, key_type: &str) -> Self {
        self.host_key_type = key_type.to_owned();
        self
    }

    /// `false` leaves out the `Subsystem sftp` line, so the server refuses sftp.
    pub fn sftp(mut self, enabled: bool) -> Self {
        self.sftp = enabled;
        self
    }

    /// sshd_config lines, added to those given before. They take precedence over the harness's
    /// defaults for the same keyword (the default line is left out); a `Match` block is kept
    /// at the end of the file where it belongs. `Port` and `ListenAddress` cannot be changed.
    pub fn extra_config(mut self, lines: &str) -> Self {
        self.extra_config.push_str(lines);
        self.extra_config.push('\n');
        self
    }

    /// sshd's `LogLevel`, e.g. `DEBUG3`.
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.to_owned();
        self
    }

    /// For logins as local users other than the one running the tests (see `super::users`):
    /// sshd reads authorized_keys with the login's privileges, so the server's directory
    /// becomes 0711 and authorized_keys 0644; and sessions keep the home sshd gives the login
    /// (from passwd) instead of the harness's shared remote home, which is not theirs.
    pub fn local_users(mut self) -> Self {
        self.local_users = true;
        self
    }

    /// Presents a host certificate: the host key signed by the CA whose private key is
    /// `ca_key`, with these `ssh-keygen` options (e.g. `["-n", "box.example", "-V", "-5m:+1h"]`).
    pub fn host_certificate(mut self, ca_key: &Path, options: &[&str]) -> Self {
        self.host_certificate = Some((
            ca_key.to_path_buf(),
            options.iter().map(|option| option.to_string()).collect(),
        ));
        self
    }

    /// Runs sshd (and so every session it serves) in a mount namespace of its own in which the
    /// directory `source` is bind-mounted over the existing directory `over` (or the file
    /// `source` over the existing file `over`): sshd and its sessions see `source` at `over`,
    /// and nothing else on the machine does. So several servers can each have their own files
    /// at one path, as the machines of a fleet do, or one server its own PAM stack at
    /// /etc/pam.d/sshd (`super::pam`). Called again, it adds a mount: they are made in the
    /// order given, so a later one may land inside an earlier one (a fresh home inside a
    /// chroot, `super::old_libc`). Needs root.
    pub fn private_mount(mut self, source: &Path, over: &Path) -> Self {
        self.private_mounts.push(PrivateMount {
            source: source.to_path_buf(),
            over: over.to_path_buf(),
            read_only: false,
        });
        self
    }

    /// Like [`SshdBuilder::private_mount`], but nothing can be written through the mount; a
    /// later mount inside it is writable as its own source is. Binding a directory over
    /// itself so makes a shared tree read-only for sshd's sessions alone.
    pub fn private_mount_read_only(mut self, source: &Path, over: &Path) -> Self {
        self.private_mounts.push(PrivateMount {
            source: source.to_path_buf(),
            over: over.to_path_buf(),
            read_only: true,
        });
        self
    }

    pub fn start(self) -> Sshd {
        Sshd::launch(self)
    }
}

/// A running sshd. Dropping it stops the sshd process it started (sessions already open
/// end when their clients disconnect) and removes its directory.
pub struct Sshd {
    settings: SshdBuilder,
    port: u16,
    child: Option<Child>,
    // Declared last so that it is removed after the process is gone.
    dir: TempDir,
}

impl Sshd {
    /// An sshd with the default settings (`SshdBuilder::new().start()`).
    pub fn start() -> Sshd {
        SshdBuilder::new().start()
    }

    pub fn builder() -> SshdBuilder {
        SshdBuilder::new()
    }

    fn launch(settings: SshdBuilder) -> Sshd {
        if running_as_root() {
            ensure_privsep_dir();
        }
        if let Some(PrivateMount { source, over, .. }) = settings.private_mounts.first() {
            assert!(
                running_as_root(),
                "an sshd that binds {} over {} in a mount namespace of its own needs root: run the tests as root, as CI does",
                source.display(),
                over.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("xfer-sshd-")
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot create a directory for sshd: {error}"));
        let mut sshd = Sshd {
            settings,
            port: 0,
            child: None,
            dir,
        };
        sshd.make_host_key();
        sshd.sign_host_key();
        let client_key = keygen(sshd.dir(), "client_key", "ed25519", None);
        sshd.authorize(&public_key_path(&client_key));
        if sshd.settings.local_users {
            use std::os::unix::fs::PermissionsExt;
            // Passable but not listable: the private keys inside stay 0600.
            for (path, mode) in [
                (sshd.dir().to_path_buf(), 0o711),
                (sshd.authorized_keys(), 0o644),
            ] {
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .unwrap_or_else(|error| panic!("cannot chmod {}: {error}", path.display()));
            }
        }

        let (port, child) =
            server::start_on_free_port("sshd", |port| sshd.spawn(port), || sshd.report());
        sshd.port = port;
        sshd.child = Some(child);
        fs::write(
            sshd.known_hosts(),
            sshd.known_hosts_line("127.0.0.1", port) + "\n",
        )
        .unwrap_or_else(|error| panic!("cannot write known_hosts: {error}"));
        sshd
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory holding keys, configuration and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The login user: whoever runs the tests.
    pub fn user(&self) -> String {
        current_user()
    }

    /// A private ed25519 key (mode 0600) authorized on this server.
    pub fn client_key(&self) -> PathBuf {
        self.dir().join("client_key")
    }

    /// The host key in use as `"<type> <base64>"`, e.g. `"ssh-ed25519 AAAA..."`.
    pub fn host_public_key(&self) -> String {
        let path = public_key_path(&self.host_key_path());
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
        text.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A known_hosts line for this server's current host key as reached at `host:port`:
    /// `"[127.0.0.1]:PORT ssh-ed25519 AAAA..."` (no brackets for port 22).
    pub fn known_hosts_line(&self, host: &str, port: u16) -> String {
        known_hosts_line(&self.host_public_key(), host, port)
    }

    /// `<dir>/known_hosts`, which holds the host key the server had when it started.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir().join("known_hosts")
    }

    /// Appends a public key file's contents to the server's authorized_keys.
    pub fn authorize(&self, public_key_path: &Path) {
        let key = fs::read_to_string(public_key_path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", public_key_path.display()));
        append(&self.authorized_keys(), &ensure_newline(key));
    }

    /// Appends a `Host alias` block reaching this server to `<dir>/ssh_config` and returns that
    /// file's path. See [`Sshd::client_config_block`] for what the block says.
    pub fn write_client_config(&self, alias: &str, extra: &[&str]) -> PathBuf {
        let path = self.dir().join("ssh_config");
        self.append_client_config(&path, alias, extra);
        path
    }

    /// Appends the `Host alias` block to any file, e.g. another server's ssh_config, so that
    /// one file can name both ends of a ProxyJump.
    pub fn append_client_config(&self, path: &Path, alias: &str, extra: &[&str]) {
        append(path, &self.client_config_block(alias, extra));
    }

    /// The text of a `Host alias` block reaching this server: see [`client_config_block`].
    pub fn client_config_block(&self, alias: &str, extra: &[&str]) -> String {
        client_config_block(
            &ClientEnd {
                port: self.port,
                user: self.user(),
                client_key: self.client_key(),
                known_hosts: self.known_hosts(),
                host_public_key: self.host_public_key(),
            },
            alias,
            extra,
        )
    }

    /// Everything sshd has logged so far (its `-E` file), across restarts.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path())
    }

    /// Replaces the host key with a new one of the same type and restarts sshd on the same
    /// port, as when a rented machine is re-created. `known_hosts()` keeps the old key.
    pub fn regenerate_host_key(&mut self) {
        self.stop();
        self.make_host_key();
        self.sign_host_key();
        self.start_again();
    }

    /// The process id of the running sshd (the listener, parent of every session), if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops sshd, as when its machine goes down: SIGTERM, then SIGKILL if it lingers.
    /// Connections then find the port closed; sessions already open end when their clients
    /// disconnect. [`Sshd::start_again`] brings it back.
    pub fn stop(&mut self) {
        server::stop(&mut self.child);
    }

    /// Starts sshd again on the same port with the same host key and settings (after
    /// [`Sshd::stop`]; stops it first if it is still running), as when a machine comes back.
    pub fn start_again(&mut self) {
        self.stop();
        let deadline = Instant::now() + START_LIMIT;
        loop {
            match self.spawn(self.port) {
                Startup::Ready(child) => {
                    self.child = Some(child);
                    return;
                }
                // The old listener is gone, but give the kernel a moment if it disagrees.
                Startup::PortTaken if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(100))
                }
                Startup::PortTaken => panic!(
                    "sshd could not bind port {} again\n{}",
                    self.port,
                    self.report()
                ),
                Startup::Failed(report) => panic!("{report}"),
            }
        }
    }

    fn host_key_path(&self) -> PathBuf {
        self.dir()
            .join(format!("ssh_host_{}_key", self.settings.host_key_type))
    }

    fn make_host_key(&self) {
        let name = format!("ssh_host_{}_key", self.settings.host_key_type);
        keygen(self.dir(), &name, &self.settings.host_key_type, None);
    }

    /// `<host key>-cert.pub`, signed as [`SshdBuilder::host_certificate`] asked.
    fn sign_host_key(&self) {
        let Some((ca_key, options)) = &self.settings.host_certificate else {
            return;
        };
        let output = Command::new("ssh-keygen")
            .args(["-q", "-h", "-I", "xfer-test-host", "-s"])
            .arg(ca_key)
            .args(options)
            .arg(public_key_path(&self.host_key_path()))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("cannot run ssh-keygen -s: {error}"));
        assert!(
            output.status.success(),
            "ssh-keygen -s failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn host_certificate_path(&self) -> PathBuf {
        self.dir().join(format!(
            "ssh_host_{}_key-cert.pub",
            self.settings.host_key_type
        ))
    }

    fn authorized_keys(&self) -> PathBuf {
        self.dir().join("authorized_keys")
    }

    fn config_path(&self) -> PathBuf {
        self.dir().join("sshd_config")
    }

    fn log_path(&self) -> PathBuf {
        self.dir().join("sshd.log")
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir().join("sshd.stderr")
    }

    /// The sshd_config text for listening on `port`.
    fn config_text(&self, port: u16) -> String {
        let dir = self.dir().display();
        // A Match block lasts to the end of the file, so it has to come after everything else.
        let extra: Vec<&str> = self.settings.extra_config.lines().map(str::trim).collect();
        let match_start = extra
            .iter()
            .position(|line| keyword(line).eq_ignore_ascii_case("Match"))
            .unwrap_or(extra.len());
        let (global, matches) = extra.split_at(match_start);
        let overridden = |name: &str| {
            global
                .iter()
                .any(|line| keyword(line).eq_ignore_ascii_case(name))
        };

        let mut defaults = vec![
            ("HostKey", self.host_key_path().display().to_string()),
            ("PidFile", format!("{dir}/sshd.pid")),
            ("LogLevel", self.settings.log_level.clone()),
            ("StrictModes", "no".to_owned()),
            ("UsePAM", "no".to_owned()),
            ("PermitRootLogin", "yes".to_owned()),
            ("PubkeyAuthentication", "yes".to_owned()),
            ("PasswordAuthentication", "no".to_owned()),
            ("KbdInteractiveAuthentication", "no".to_owned()),
            (
                "AuthorizedKeysFile",
                self.authorized_keys().display().to_string(),
            ),
            ("MaxStartups", "100:30:200".to_owned()),
            ("MaxSessions", "100".to_owned()),
            ("PrintMotd", "no".to_owned()),
            ("AllowTcpForwarding", "yes".to_owned()),
            ("X11Forwarding", "no".to_owned()),
            ("UseDNS", "no".to_owned()),
        ];
        if !self.settings.local_users {
            // The remote's home, where the xfer agent is cached: the harness's, never the
            // user's, with the agent already there (see `remote_home`).
            defaults.push(("SetEnv", format!("HOME={}", super::remote_home().display())));
        }
        if self.settings.sftp {
            defaults.push(("Subsystem", "sftp internal-sftp".to_owned()));
        }
        if self.settings.host_certificate.is_some() {
            defaults.push((
                "HostCertificate",
                self.host_certificate_path().display().to_string(),
            ));
        }

        let mut text =
            format!("# Written by the xfer test harness.\nPort {port}\nListenAddress 127.0.0.1\n");
        for line in global {
            if !line.is_empty() {
                text.push_str(&format!("{line}\n"));
            }
        }
        for (name, value) in defaults {
            if !overridden(name) {
                text.push_str(&format!("{name} {value}\n"));
            }
        }
        for line in matches {
            text.push_str(&format!("{line}\n"));
        }
        text
    }

    /// Whether sshd will log "Server listening", which is how readiness is seen without
    /// connecting (a probe connection could reach another process on a stolen port).
    fn logs_listening(&self, config: &str) -> bool {
        let level = config
            .lines()
            .find(|line| keyword(line).eq_ignore_ascii_case("LogLevel"))
            .map(|line| argument(line).to_ascii_uppercase())
            .unwrap_or_default();
        !matches!(level.as_str(), "QUIET" | "FATAL" | "ERROR")
    }

    /// Starts sshd on `port` and waits until it listens.
    fn spawn(&self, port: u16) -> Startup {
        let config = self.config_text(port);
        fs::write(self.config_path(), &config)
            .unwrap_or_else(|error| panic!("cannot write sshd_config: {error}"));
        let log_start = fs::metadata(self.log_path()).map_or(0, |meta| meta.len() as usize);
        let stderr_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .unwrap_or_else(|error| panic!("cannot open sshd's stderr file: {error}"));
        let mut command = if self.settings.private_mounts.is_empty() {
            Command::new(SSHD_BINARY)
        } else {
            // unshare and sh both exec, so the child's pid stays sshd's own.
            let mut command = Command::new("unshare");
            command
                .args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(PRIVATE_MOUNT)
                .arg("sh");
            for mount in &self.settings.private_mounts {
                command
                    .arg(if mount.read_only { "ro" } else { "rw" })
                    .arg(&mount.source)
                    .arg(&mount.over);
            }
            command.arg("--").arg(SSHD_BINARY);
            command
        };
        let child = command
            .arg("-D")
            .arg("-f")
            .arg(self.config_path())
            .arg("-E")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr_file)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {SSHD_BINARY} ({command:?}): {error}"));

        let listening = format!("Server listening on 127.0.0.1 port {port}.");
        let watch_log = self.logs_listening(&config);
        server::wait_until_listening(
            "sshd",
            child,
            port,
            || {
                if watch_log {
                    let log = read_lossy(&self.log_path());
                    log.get(log_start..).unwrap_or("").contains(&listening)
                } else {
                    let address = SocketAddr::from(([127, 0, 0, 1], port));
                    TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
                }
            },
            |_| {
                let log = read_lossy(&self.log_path());
                let said = log.get(log_start..).unwrap_or(&log).to_owned()
                    + &read_lossy(&self.stderr_path());
                said.contains("Bind to port")
                    || said.contains("Cannot bind any address")
                    || said.contains("Address already in use")
            },
            || self.report(),
        )
    }

    /// The configuration, log and stderr of sshd, for panic messages.
    fn report(&self) -> String {
        format!(
            "--- {} ---\n{}--- sshd log ---\n{}--- sshd stderr ---\n{}",
            self.config_path().display(),
            read_lossy(&self.config_path()),
            self.log(),
            read_lossy(&self.stderr_path())
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a client's `Host` block needs to reach a server the harness started (an [`Sshd`], or
/// a `super::Dropbear`).
pub struct ClientEnd {
    pub port: u16,
    pub user: String,
    /// A private key the server authorizes for `user`.
    pub client_key: PathBuf,
    /// The known_hosts file the block names; lines for the names it reaches are added to it.
    pub known_hosts: PathBuf,
    /// The server's host key as `"<type> <base64>"`.
    pub host_public_key: String,
}

/// A known_hosts line for `key` as reached at `host:port` (no brackets for port 22).
pub fn known_hosts_line(key: &str, host: &str, port: u16) -> String {
    if port == 22 {
        format!("{host} {key}")
    } else {
        format!("[{host}]:{port} {key}")
    }
}

/// The text of a `Host alias` block: HostName 127.0.0.1, Port, User, IdentityFile
/// client_key, IdentitiesOnly yes, UserKnownHostsFile known_hosts, StrictHostKeyChecking yes,
/// BatchMode yes.
///
/// The `extra` lines come first in the block, and a default whose keyword an extra line
/// uses is left out: ssh takes the first value it reads, and `IdentityFile` would
/// otherwise add to the default rather than replace it. When the extra lines change
/// HostName or Port (to go through a [`super::Proxy`], say), the host key is also trusted
/// under that name and port in the known_hosts file.
pub fn client_config_block(server: &ClientEnd, alias: &str, extra: &[&str]) -> String {
    let extra: Vec<&str> = extra
        .iter()
        .flat_map(|lines| lines.lines())
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let overridden = |name: &str| {
        extra
            .iter()
            .any(|line| keyword(line).eq_ignore_ascii_case(name))
    };
    let value_of = |name: &str| {
        extra
            .iter()
            .find(|line| keyword(line).eq_ignore_ascii_case(name))
            .map(|line| argument(line).to_owned())
    };

    if !overridden("UserKnownHostsFile") {
        let host = value_of("HostName").unwrap_or_else(|| "127.0.0.1".to_owned());
        let port = value_of("Port")
            .map(|port| {
                port.parse::<u16>()
                    .expect("Port in extra lines is a number")
            })
            .unwrap_or(server.port);
        let line = known_hosts_line(&server.host_public_key, &host, port);
        let pattern = line.split(' ').next().unwrap_or_default().to_owned() + " ";
        // A name already known keeps its key, even after regenerate_host_key.
        if !read_lossy(&server.known_hosts)
            .lines()
            .any(|known| known.starts_with(&pattern))
        {
            append(&server.known_hosts, &format!("{line}\n"));
        }
    }

    let defaults = [
        ("HostName", "127.0.0.1".to_owned()),
        ("Port", server.port.to_string()),
        ("User", server.user.clone()),
        ("IdentityFile", server.client_key.display().to_string()),
        ("IdentitiesOnly", "yes".to_owned()),
        (
            "UserKnownHostsFile",
            server.known_hosts.display().to_string(),
        ),
        ("StrictHostKeyChecking", "yes".to_owned()),
        ("BatchMode", "yes".to_owned()),
    ];
    let mut block = format!("\nHost {alias}\n");
    for line in &extra {
        block.push_str(&format!("    {line}\n"));
    }
    for (name, value) in defaults {
        if !overridden(name) {
            block.push_str(&format!("    {name} {value}\n"));
        }
    }
    block
}

/// A port that was free a moment ago: bind port 0, read the port, close.
pub fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|error| panic!("cannot find a free port on 127.0.0.1: {error}"))
}

fn ensure_privsep_dir() {
    match fs::create_dir(PRIVSEP_DIR) {
        Ok(()) => {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(PRIVSEP_DIR, fs::Permissions::from_mode(0o755));
        }
        // Another test created it first.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => panic!("cannot create {PRIVSEP_DIR}: {error}"),
    }
}

/// The keyword of a config line (`Port 22`, `Port=22`).
fn keyword(line: &str) -> &str {
    line.trim_start()
        .split(|c: char| c.is_whitespace() || c == '=')
        .next()
        .unwrap_or("")
}

/// The rest of a config line after its keyword and separator.
fn argument(line: &str) -> &str {
    let line = line.trim_start();
    let rest = &line[keyword(line).len()..];
    rest.trim_start_matches(|c: char| c.is_whitespace() || c == '=')
        .trim_end()
}

fn ensure_newline(mut text: String) -> String {
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

pub fn append(path: &Path, text: &str) {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .unwrap_or_else(|error| panic!("cannot append to {}: {error}", path.display()));
}
