//! Shared harness for xfer's integration tests: a real OpenSSH server on 127.0.0.1 ([`Sshd`]) and a
//! real Dropbear ([`Dropbear`]), an ssh-agent ([`Agent`]), a fake one in process holding a
//! software FIDO security key ([`FakeAgent`]), a byte-counting TCP proxy that can cut
//! or stall links ([`Proxy`]), key generation, a way to run the built `xfer` binary that can never
//! hang a test (and can measure its peak memory, [`run_measuring_memory`]), one sshd with its
//! client config and directories ([`Setup`]), several sshds standing for the machines of a cluster,
//! each with its own directory at one common path ([`Fleet`]), what the tests check a run's output
//! and a tree with ([`assert_success`], [`tree_digest`] and their kin), local users for tests of a
//! shared host ([`users`]), shell-only endpoints that give nothing but an interactive shell on a
//! terminal (a real sshd, [`shell_only`], and an in-process relay, [`Relay`]), a way to drive a
//! terminal session line by line ([`Conversation`]), and logins that need a password or a key
//! and a one-time code, with askpass programs that answer for a test ([`pam`]), and an sshd whose
//! sessions run on an older C library than the machine's ([`old_libc`]).
//!
//! The integration test binary (`tests/it/main.rs`) declares it once; its test modules use it
//! as `crate::support`.

mod agent;
mod conversation;
mod dropbear;
mod fake_agent;
mod fleet;
pub mod old_libc;
mod output;
pub mod pam;
pub mod portable;
mod proxy;
mod relay;
mod server;
mod setup;
pub mod shell_only;
mod sshd;
mod tree;
pub mod users;

pub use agent::Agent;
pub use conversation::Conversation;
pub use dropbear::Dropbear;
pub use fake_agent::{FakeAgent, SecurityKey, Touch};
pub use fleet::Fleet;
pub use output::{
    assert_agent_used, assert_succeeded, assert_success, said, stderr, summary, tail, text,
};
pub use proxy::{Proxy, ProxyMode};
pub use relay::Relay;
pub use setup::Setup;
pub use sshd::{Sshd, SshdBuilder};
pub use tree::{files_containing, files_digest, tree_digest, tree_digest_skipping};

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How long key generation or ssh-add may take before the harness gives up.
const TOOL_LIMIT: Duration = Duration::from_secs(30);

/// Generates a key pair with `ssh-keygen` as `<dir>/<name>` and `<dir>/<name>.pub`, replacing
/// any existing pair, and returns the private key's path (mode 0600).
/// `key_type` is `ed25519`, `rsa` (3072 bits) or `ecdsa`; `None` means no passphrase.
pub fn keygen(dir: &Path, name: &str, key_type: &str, passphrase: Option<&str>) -> PathBuf {
    let private = dir.join(name);
    // ssh-keygen asks before overwriting, and nobody is there to answer.
    for stale in [private.clone(), public_key_path(&private)] {
        match fs::remove_file(&stale) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => panic!("cannot remove {}: {error}", stale.display()),
        }
    }
    let mut command = Command::new("ssh-keygen");
    command.args(["-q", "-t", key_type]);
    if key_type == "rsa" {
        command.args(["-b", "3072"]);
    }
    command
        .arg("-N")
        .arg(passphrase.unwrap_or(""))
        .arg("-C")
        .arg(name)
        .arg("-f")
        .arg(&private)
        .stdin(Stdio::null());
    let output = run_with_timeout(&mut command, TOOL_LIMIT);
    assert!(
        output.status.success(),
        "ssh-keygen -t {key_type} -f {} failed: {}",
        private.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    fs::set_permissions(&private, fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|error| panic!("cannot chmod {}: {error}", private.display()));
    private
}

/// The `.pub` file that `ssh-keygen` writes beside a private key.
pub fn public_key_path(private_key: &Path) -> PathBuf {
    let mut name = private_key.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// The name of the user running the tests, who is also the login user on every [`Sshd`].
pub fn current_user() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => std::env::var("USER").unwrap_or_else(|_| panic!("no user name for uid {uid}")),
    }
}

/// True when the tests run as root (as in CI).
pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The home directory sshd gives sessions (`SetEnv HOME`), shared by every test of a run:
/// `target/tmp/remote-home`, with the agent of the built `xfer` already in its cache, as a
/// host xfer has reached before would have it. So tests that count bytes count the transfer,
/// not a deployment; the tests of deployment give sshd a home of their own.
pub fn remote_home() -> &'static Path {
    static HOME: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    HOME.get_or_init(|| {
        let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("remote-home");
        install_agent(&home);
        home
    })
}

/// Puts the built `xfer` into `home`'s agent cache under the name xfer looks for.
pub fn install_agent(home: &Path) {
    let binary = fs::read(env!("CARGO_BIN_EXE_xfer"))
        .unwrap_or_else(|error| panic!("cannot read the xfer binary: {error}"));
    let name = xfer::remote::bundle::cache_name(
        env!("CARGO_PKG_VERSION"),
        &xfer::remote::bundle::Platform::this(),
        &xfer::blocks::file_hash_of(&binary),
    );
    let cache = home.join(".cache/xfer");
    fs::create_dir_all(&cache)
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", cache.display()));
    for dir in [home, &home.join(".cache"), &cache] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|error| panic!("cannot chmod {}: {error}", dir.display()));
    }
    let path = cache.join(&name);
    if fs::read(&path).is_ok_and(|existing| existing == binary) {
        return;
    }
    // Written aside and renamed: test processes running at once may install it together.
    let temporary = cache.join(format!(".install-{}", std::process::id()));
    fs::write(&temporary, &binary)
        .and_then(|()| fs::set_permissions(&temporary, fs::Permissions::from_mode(0o700)))
        .and_then(|()| fs::rename(&temporary, &path))
        .unwrap_or_else(|error| panic!("cannot install the agent in {}: {error}", cache.display()));
}

/// A `Command` for the built `xfer` binary with a fresh, empty state directory, no ssh-agent
/// and stdin from /dev/null.
///
/// The state directory lives under Cargo's scratch directory for tests
/// (`target/tmp/xfer-state`, or the system temporary directory if that is not writable) and
/// is not removed, so a failed test's journals can be read afterwards. Tests that run xfer
/// more than once against the same state (resuming), or that want it removed, keep a
/// `tempfile::TempDir` and use [`xfer_command_in`] instead.
pub fn xfer_command() -> Command {
    let fresh_in = |root: PathBuf| {
        fs::create_dir_all(&root)?;
        tempfile::Builder::new().prefix("state-").tempdir_in(&root)
    };
    let state = fresh_in(Path::new(env!("CARGO_TARGET_TMPDIR")).join("xfer-state"))
        .or_else(|_| fresh_in(std::env::temp_dir().join("xfer-state")))
        .unwrap_or_else(|error| panic!("cannot create a state directory: {error}"))
        .keep();
    xfer_command_in(&state)
}

/// A `Command` for the built `xfer` binary using `state_dir` (kept alive by the caller) as
/// `XFER_STATE_DIR`, with no ssh-agent and stdin from /dev/null.
pub fn xfer_command_in(state_dir: &Path) -> Command {
    xfer_binary_command_in(Path::new(env!("CARGO_BIN_EXE_xfer")), state_dir)
}

/// [`xfer_command_in`] for another xfer executable (the portable release build). No agent
/// bundle but the one a test names: the environment's `XFER_AGENT_BUNDLE` is removed.
pub fn xfer_binary_command_in(binary: &Path, state_dir: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("XFER_AGENT_BUNDLE")
        .env("XFER_STATE_DIR", state_dir)
        .stdin(Stdio::null());
    command
}

/// An exclusive flock(2) on `path`, created if missing, waited for; released when the file is
/// dropped. Test processes and checkouts that build or change one shared thing take turns.
pub fn lock_exclusively(path: &Path) -> fs::File {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|error| panic!("cannot open {}: {error}", path.display()));
    file.lock()
        .unwrap_or_else(|error| panic!("cannot lock {}: {error}", path.display()));
    file
}

/// Runs `command` to completion and returns its output, capturing stdout and stderr.
/// If it takes longer than `limit`, kills it (and everything in its process group) and panics
/// with what it wrote to stderr, so that a test can never hang.
pub fn run_with_timeout(command: &mut Command, limit: Duration) -> Output {
    run(command, None, limit)
}

/// Like [`run_with_timeout`], feeding `input` to the command's stdin and then closing it.
pub fn run_with_input(command: &mut Command, input: &[u8], limit: Duration) -> Output {
    run(command, Some(input), limit)
}

/// The Python that measures a command's peak memory for [`run_measuring_memory`].
const PYTHON: &str = "/usr/bin/python3";

/// Run by [`PYTHON`] with a report file and a command: forks, runs the command in the child
/// (with SIGPIPE and SIGXFSZ back to their defaults, which Python ignores), reaps it with
/// wait4, writes its `ru_maxrss` (KiB) to the report file, and ends as the command ended.
const MEASURE: &str = r#"
import os, signal, sys
report, argv = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        for name in ("SIGPIPE", "SIGXFSZ"):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        os.execvp(argv[0], argv)
    except OSError as error:
        print(f"cannot run {argv[0]}: {error}", file=sys.stderr)
    os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(report, "w") as file:
    file.write(str(usage.ru_maxrss))
if os.WIFSIGNALED(status):
    number = os.WTERMSIG(status)
    try:
        signal.signal(number, signal.SIG_DFL)
    except (OSError, ValueError):
        pass
    os.kill(os.getpid(), number)
os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)
"#;

/// Like [`run_with_timeout`] (with stdin from /dev/null), also returning the command's peak
/// resident memory in KiB: its `ru_maxrss` as the kernel reports it when the process is
/// reaped, so a peak just before the exit counts too. (A command that replaces itself with
/// `exec` is measured as what it ran.)
///
/// A process's `ru_maxrss` starts from the resident memory of the process that forked it, and
/// the test process, which runs every integration test at once, grows large: so the command
/// is forked by a small Python process ([`PYTHON`]) that reaps it and reports its peak.
pub fn run_measuring_memory(command: &mut Command, limit: Duration) -> (Output, u64) {
    assert!(
        Path::new(PYTHON).is_file(),
        "{PYTHON} is missing: install python3 (.ci/run installs it)"
    );
    let report = tempfile::NamedTempFile::new()
        .unwrap_or_else(|error| panic!("cannot create a file for the peak memory: {error}"));
    let mut measured = Command::new(PYTHON);
    measured
        .arg("-I")
        .arg("-c")
        .arg(MEASURE)
        .arg(report.path())
        .arg(command.get_program())
        .args(command.get_args())
        .stdin(Stdio::null());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => measured.env(key, value),
            None => measured.env_remove(key),
        };
    }
    if let Some(directory) = command.get_current_dir() {
        measured.current_dir(directory);
    }
    let output = run_reaping(&mut measured, None, limit);
    let peak = fs::read_to_string(report.path())
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no peak memory reported for {command:?}:\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    (output, peak)
}

fn run(command: &mut Command, input: Option<&[u8]>, limit: Duration) -> Output {
    run_reaping(command, input, limit)
}

fn run_reaping(command: &mut Command, input: Option<&[u8]>, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        command.stdin(Stdio::piped());
    }
    // Its own process group, so a timeout also ends helpers it started (ssh, ProxyCommand)
    // that would otherwise keep the output pipes open.
    command.process_group(0);
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
    let group = Pid::from_raw(child.id() as i32);

    let writer = input.map(|input| {
        let mut stdin = child.stdin.take().expect("stdin was piped");
        let input = input.to_vec();
        // A command that exits without reading all its input is not an error here.
        thread::spawn(move || drop(stdin.write_all(&input)))
    });
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let readers = [
        collect(child.stdout.take().expect("stdout was piped"), &stdout),
        collect(child.stderr.take().expect("stderr was piped"), &stderr),
    ];

    let timed_out = |what: &str| -> ! {
        // The group is the one this function created; nothing else is in it.
        let _ = killpg(group, Signal::SIGKILL);
        // A moment for the killed group's pipes to close, so the readers catch its last words.
        thread::sleep(Duration::from_millis(50));
        let stderr = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
        let stdout = String::from_utf8_lossy(&stdout.lock().unwrap()).into_owned();
        panic!(
            "timed out after {limit:?} ({what}), killed: {command:?}\n--- stderr ---\n{stderr}\n--- stdout (last 2000 bytes) ---\n{}",
            tail(&stdout, 2000)
        );
    };

    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(error) => panic!("cannot wait for {command:?}: {error}"),
        }
        if Instant::now() >= deadline {
            let _ = killpg(group, Signal::SIGKILL);
            let _ = child.wait();
            timed_out("still running");
        }
        thread::sleep(Duration::from_millis(5));
    };
    // Something the command started may still hold its stdout or stderr open.
    while !readers.iter().all(|reader| reader.is_finished()) {
        if Instant::now() >= deadline {
            timed_out("its output stayed open after it exited");
        }
        thread::sleep(Duration::from_millis(5));
    }
    for reader in readers {
        reader.join().expect("output reader panicked");
    }
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let stdout = std::mem::take(&mut *stdout.lock().unwrap());
    let stderr = std::mem::take(&mut *stderr.lock().unwrap());
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Copies everything from `source` into `sink` as it arrives, so that a timeout can still
/// report what was written so far.
fn collect(
    mut source: impl Read + Send + 'static,
    sink: &Arc<Mutex<Vec<u8>>>,
) -> thread::JoinHandle<()> {
    let sink = Arc::clone(sink);
    thread::spawn(move || {
        let mut buffer = [0u8; 64 * 1024];
        loop {
            match source.read(&mut buffer) {
                Ok(0) => return,
                Ok(count) => sink.lock().unwrap().extend_from_slice(&buffer[..count]),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    })
}

/// Reads a file that may not exist yet as text ("" if missing).
fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// Deterministic incompressible bytes (xorshift): the same data on every run and machine.
pub fn pattern(seed: u64, length: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut bytes = Vec::with_capacity(length + 8);
    while bytes.len() < length {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(length);
    bytes
}

/// Sets a path's access and modification times to `seconds`, without following a link.
pub fn set_mtime(path: &Path, seconds: i64) {
    let time = nix::sys::time::TimeSpec::new(seconds, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &time,
        &time,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap_or_else(|error| panic!("cannot set the mtime of {}: {error}", path.display()));
}

/// Writes [`pattern`]`(seed, length)` to `path` (creating its parent directories) with `mode`
/// and `mtime`.
pub fn write_file(path: &Path, seed: u64, length: usize, mode: u32, mtime: i64) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, pattern(seed, length)).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    set_mtime(path, mtime);
}
