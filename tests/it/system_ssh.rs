//! The system ssh as the transport (`--ssh-command ssh`, `-e ssh`, `XFER_SSH_COMMAND`) against a
//! real OpenSSH sshd: pulls, pushes, deltas and re-runs end identical; a cut link resumes; one
//! login per run (xfer's own master, or the user's ControlMaster kept for the next run); a
//! secret still travels only on stdin; ssh's own configuration (`Match exec`, which xfer's own
//! client refuses) works; ssh's refusals come back as xfer's errors with their exit codes; and
//! no ssh process outlives the run, even when xfer is killed.

use crate::support::{
    Proxy, ProxyMode, Setup, assert_agent_used, assert_success, said, summary, tree_digest,
    write_file, xfer_command_in,
};
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);

/// A small tree: two directories, files of a few sizes, one empty.
fn make_tree(root: &Path) {
    for (index, (name, size)) in [
        ("a/one.bin", 300_000),
        ("a/two.bin", 1_200_000),
        ("b/c/three.bin", 70_000),
        ("b/empty", 0),
        ("top.txt", 10),
    ]
    .iter()
    .enumerate()
    {
        let path = root.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        write_file(&path, index as u64 + 1, *size, 0o644, 1_700_000_000);
    }
}

/// Runs `xfer ARGUMENTS -F CONFIG -e ssh` with the setup's state, and `TMPDIR` (where xfer's
/// master keeps its socket) in the setup's working directory.
fn run_system(setup: &Setup, config: &Path, arguments: &[&str]) -> Output {
    let mut command = xfer_command_in(setup.state.path());
    command
        .args(arguments)
        .arg("-F")
        .arg(config)
        .args(["-e", "ssh"])
        .env("TMPDIR", temporary(setup));
    crate::support::run_with_timeout(&mut command, LIMIT)
}

/// The setup's `TMPDIR` for xfer.
fn temporary(setup: &Setup) -> std::path::PathBuf {
    let directory = setup.path("tmp");
    fs::create_dir_all(&directory).unwrap();
    directory
}

/// What xfer's masters left in the setup's `TMPDIR`: nothing, once a run has ended (unless it
/// was killed).
fn master_directories_left(setup: &Setup) -> Vec<String> {
    fs::read_dir(temporary(setup))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("xfer-ssh-"))
        .collect()
}

/// How many logins sshd accepted so far.
fn logins(setup: &Setup) -> usize {
    setup.sshd.log().matches("Accepted publickey").count()
}

/// Processes whose command line mentions `needle` (the test's own config path, so only this
/// test's ssh processes count).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        if let Ok(line) = fs::read(entry.path().join("cmdline")) {
            let line = String::from_utf8_lossy(&line).replace('\0', " ");
            if line.contains(needle) {
                found.push(line);
            }
        }
    }
    found
}

/// Waits (bounded) until no process mentions `needle`; the ones left when time is up.
fn gone_within(needle: &str, limit: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        let left = processes_mentioning(needle);
        if left.is_empty() || start.elapsed() > limit {
            return left;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn pull_push_and_deltas_through_the_system_ssh_log_in_once() {
    let setup = Setup::start();
    make_tree(&setup.path("source"));
    let before = logins(&setup);

    let output = run_system(
        &setup,
        &setup.config,
        &[
            "pull",
            "--json",
            "-j",
            "4",
            &setup.remote("source"),
            setup.path("pulled").to_str().unwrap(),
        ],
    );
    assert_success(&output);
    assert_eq!(
        tree_digest(&setup.path("pulled")),
        tree_digest(&setup.path("source"))
    );
    // -j 4 and a planner: five channels, one login (xfer's master).
    assert_eq!(logins(&setup) - before, 1, "{}", setup.sshd.log());
    assert_agent_used(&output, "a pull through the system ssh");

    // A re-run moves nothing.
    let output = run_system(
        &setup,
        &setup.config,
        &[
            "pull",
            "--json",
            &setup.remote("source"),
            setup.path("pulled").to_str().unwrap(),
        ],
    );
    assert_success(&output);
    assert_eq!(summary(&output)["bytes_moved"], 0, "{}", said(&output));

    // A push, then a delta push of one changed block.
    let output = run_system(
        &setup,
        &setup.config,
        &[
            "push",
            "--json",
            setup.path("pulled").to_str().unwrap(),
            &setup.remote("pushed"),
        ],
    );
    assert_success(&output);
    assert_eq!(
        tree_digest(&setup.path("pushed")),
        tree_digest(&setup.path("source"))
    );
    let changed = setup.path("pulled/a/two.bin");
    let mut bytes = fs::read(&changed).unwrap();
    bytes[600_000] ^= 0xff;
    fs::write(&changed, &bytes).unwrap();
    let output = run_system(
        &setup,
        &setup.config,
        &[
            "push",
            "--json",
            setup.path("pulled").to_str().unwrap(),
            &setup.remote("pushed"),
        ],
    );
    assert_success(&output);
    assert_eq!(
        tree_digest(&setup.path("pushed")),
        tree_digest(&setup.path("pulled"))
    );
    let moved = summary(&output)["bytes_moved"].as_u64().unwrap();
    assert!(
        moved > 0 && moved < 1_200_000 / 2,
        "a one-byte change moved {moved} bytes"
    );
    assert!(
        gone_within(setup.config.to_str().unwrap(), Duration::from_secs(5)).is_empty(),
        "ssh processes outlived the run"
    );
    assert!(master_directories_left(&setup).is_empty());
}

#[test]
fn the_environment_names_the_ssh_command_and_doctor_says_which_was_used() {
    let setup = Setup::start();
    let mut command = xfer_command_in(setup.state.path());
    command
        .env("XFER_SSH_COMMAND", "ssh -o LogLevel=ERROR")
        .args(["doctor", "--json", "-F"])
        .arg(&setup.config)
        .arg("box");
    let output = crate::support::run_with_timeout(&mut command, LIMIT);
    assert_success(&output);
    let reports: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let report = &reports[0];
    assert_eq!(report["transport"], "system ssh (ssh -o LogLevel=ERROR)");
    assert_eq!(report["auth_summary"], "system ssh");
    assert_eq!(report["exec"], "allowed");
    assert_eq!(report["sftp"], "allowed");

    // Without it, xfer's own client, and doctor's table says so too.
    let output = setup.run(&["doctor", "box"]);
    assert_success(&output);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("connections: native"),
        "{}",
        said(&output)
    );
}

#[test]
fn a_cut_link_resumes_through_the_system_ssh() {
    let setup = Setup::start();
    let (proxy, config) = setup.via_proxy();
    let size = 24 << 20;
    write_file(&setup.path("big.bin"), 7, size, 0o644, 1_700_000_000);
    let source = format!("via:{}", setup.path("big.bin").display());
    let destination = setup.path("copy.bin");
    proxy.set_mode(ProxyMode::CutAllAfter(size as u64 / 2));
    let output = run_system(
        &setup,
        &config,
        &[
            "pull",
            "--retries",
            "0",
            &source,
            destination.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{}", said(&output));
    // A run that ends at a failure leaves no master's directory behind either.
    assert!(
        master_directories_left(&setup).is_empty(),
        "{:?}",
        master_directories_left(&setup)
    );
    proxy.set_mode(ProxyMode::Pass);
    let output = run_system(
        &setup,
        &config,
        &["pull", "--json", &source, destination.to_str().unwrap()],
    );
    assert_success(&output);
    assert_eq!(
        fs::read(&destination).unwrap(),
        fs::read(setup.path("big.bin")).unwrap()
    );
    let result = summary(&output);
    assert!(
        result["bytes_reused"].as_u64().unwrap() > 0,
        "the re-run kept nothing of the first: {result}"
    );

    // Within one run: the link drops and the retry logs in again and finishes.
    fs::remove_file(&destination).unwrap();
    proxy.set_mode(ProxyMode::CutAllAfter(size as u64 / 3));
    let output = run_system(
        &setup,
        &config,
        &["pull", &source, destination.to_str().unwrap()],
    );
    assert_success(&output);
    assert_eq!(
        fs::read(&destination).unwrap(),
        fs::read(setup.path("big.bin")).unwrap()
    );
    assert!(proxy.cuts() > 0, "the proxy never cut the link");
    assert!(master_directories_left(&setup).is_empty());
}

#[test]
fn a_killed_run_leaves_no_ssh_behind_and_resumes() {
    let setup = Setup::start();
    let (proxy, config) = setup.via_proxy();
    let size = 16 << 20;
    write_file(&setup.path("big.bin"), 9, size, 0o644, 1_700_000_000);
    proxy.set_mode(ProxyMode::Throttle {
        bytes_per_second: 4 << 20,
    });
    let source = format!("via:{}", setup.path("big.bin").display());
    let destination = setup.path("copy.bin");
    let mut command = xfer_command_in(setup.state.path());
    command
        .args(["pull", "-F"])
        .arg(&config)
        .args(["-e", "ssh", &source, destination.to_str().unwrap()])
        .env("TMPDIR", temporary(&setup))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    // Killed once data flows.
    let start = Instant::now();
    while proxy.bytes_down() < 2 << 20 && start.elapsed() < LIMIT {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(proxy.bytes_down() >= 2 << 20, "no data moved");
    child.kill().unwrap();
    child.wait().unwrap();
    let left = gone_within(config.to_str().unwrap(), Duration::from_secs(10));
    assert!(
        left.is_empty(),
        "ssh processes outlived a killed xfer: {left:?}"
    );
    // The killed run could not remove its master's directory; the master, ended by SIGTERM,
    // took its socket with it.
    for name in master_directories_left(&setup) {
        let inside: Vec<_> = fs::read_dir(temporary(&setup).join(&name))
            .unwrap()
            .collect();
        assert!(inside.is_empty(), "{name} still holds {inside:?}");
    }

    proxy.set_mode(ProxyMode::Pass);
    let output = run_system(
        &setup,
        &config,
        &["pull", &source, destination.to_str().unwrap()],
    );
    assert_success(&output);
    assert_eq!(
        fs::read(&destination).unwrap(),
        fs::read(setup.path("big.bin")).unwrap()
    );
}

#[test]
fn the_users_control_master_is_used_and_outlives_the_run_as_configured() {
    let setup = Setup::start();
    make_tree(&setup.path("source"));
    let socket_directory = tempfile::Builder::new()
        .prefix("cm")
        .tempdir_in("/tmp")
        .unwrap();
    let control_path = socket_directory.path().join("%C");
    let config = setup.path("master_config");
    setup.sshd.append_client_config(
        &config,
        "box",
        &[
            "ControlMaster auto",
            &format!("ControlPath {}", control_path.display()),
            "ControlPersist 60",
        ],
    );
    let master_check = |operation: &str| {
        Command::new("ssh")
            .args(["-F", config.to_str().unwrap(), "-O", operation, "box"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    let before = logins(&setup);
    let output = run_system(
        &setup,
        &config,
        &[
            "pull",
            "-j",
            "3",
            &setup.remote("source"),
            setup.path("first").to_str().unwrap(),
        ],
    );
    assert_success(&output);
    assert_eq!(logins(&setup) - before, 1, "{}", setup.sshd.log());
    assert!(
        master_check("check"),
        "the configured master did not persist"
    );

    // The next run asks nothing: it rides the running master.
    let output = run_system(
        &setup,
        &config,
        &[
            "pull",
            &setup.remote("source"),
            setup.path("second").to_str().unwrap(),
        ],
    );
    assert_success(&output);
    assert_eq!(
        tree_digest(&setup.path("second")),
        tree_digest(&setup.path("source"))
    );
    assert_eq!(logins(&setup) - before, 1, "the second run logged in again");
    assert!(master_check("exit"));
}

#[test]
fn ssh_reads_its_own_configuration_match_exec_and_interactive_settings_included() {
    let setup = Setup::start();
    fs::write(setup.path("file"), b"through ssh's own config\n").unwrap();
    let config = setup.path("match_config");
    // xfer's own client refuses `Match exec` (it would run a command to read a config);
    // the system ssh runs it. What a config may set up for interactive logins (a command of
    // its own, a terminal, a forwarding whose port is taken and must not fail) must not get in
    // the way of the transfer's channels.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let forward = format!(
        "LocalForward 127.0.0.1:{} 127.0.0.1:22",
        taken.local_addr().unwrap().port()
    );
    let block = setup.sshd.client_config_block(
        "box",
        &[
            "RemoteCommand exec bash -l",
            "RequestTTY yes",
            &forward,
            "ExitOnForwardFailure yes",
        ],
    );
    fs::write(
        &config,
        format!("Match exec \"true\"\n    ServerAliveInterval 7\n{block}"),
    )
    .unwrap();
    let native = {
        let mut command = xfer_command_in(setup.state.path());
        command
            .args(["pull", "-F"])
            .arg(&config)
            .arg(setup.remote("file"))
            .arg(setup.path("native-copy"));
        crate::support::run_with_timeout(&mut command, LIMIT)
    };
    assert_eq!(native.status.code(), Some(2), "{}", said(&native));
    let output = run_system(
        &setup,
        &config,
        &[
            "pull",
            &setup.remote("file"),
            setup.path("copy").to_str().unwrap(),
        ],
    );
    assert_success(&output);
    assert_eq!(
        fs::read(setup.path("copy")).unwrap(),
        fs::read(setup.path("file")).unwrap()
    );
}

#[test]
fn ssh_refusals_are_xfers_errors_with_their_exit_codes() {
    let setup = Setup::start();
    // A key the server does not know.
    let stranger = crate::support::keygen(setup.work.path(), "stranger", "ed25519", None);
    let config = setup.path("stranger_config");
    setup.sshd.append_client_config(
        &config,
        "box",
        &[&format!("IdentityFile {}", stranger.display())],
    );
    let output = run_system(
        &setup,
        &config,
        &[
            "pull",
            &setup.remote("x"),
            setup.path("y").to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(4), "{}", said(&output));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("ssh could not log in") && error.contains("Permission denied"),
        "{error}"
    );

    // Nothing listens: a connection error, exit 3, with ssh's words.
    let closed = Proxy::start(setup.sshd.port());
    let port = closed.port();
    drop(closed);
    let config = setup.path("down_config");
    setup
        .sshd
        .append_client_config(&config, "box", &[&format!("Port {port}")]);
    let output = run_system(
        &setup,
        &config,
        &[
            "pull",
            "--retries",
            "0",
            &setup.remote("x"),
            setup.path("y").to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(3), "{}", said(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Connection refused"),
        "{}",
        said(&output)
    );

    // An ssh command that does not exist.
    let output = {
        let mut command = xfer_command_in(setup.state.path());
        command
            .args(["pull", "-e", "no-such-ssh-program", "-F"])
            .arg(&setup.config)
            .arg(setup.remote("x"))
            .arg(setup.path("y"));
        crate::support::run_with_timeout(&mut command, LIMIT)
    };
    assert_eq!(output.status.code(), Some(2), "{}", said(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no-such-ssh-program"),
        "{}",
        said(&output)
    );
}

#[test]
fn a_secret_travels_only_on_stdin_through_the_system_ssh() {
    let sshd = crate::support::Sshd::builder().log_level("DEBUG3").start();
    let config = sshd.write_client_config("box", &[]);
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("token");
    let value = crate::secret::canary();
    let mut command = crate::support::xfer_command();
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
        .arg("box");
    let output = crate::secret::run_watched(&mut command, &value);
    assert_success(&output);
    assert_eq!(fs::read_to_string(&target).unwrap(), value);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!printed.contains(&value), "xfer printed the value");
    assert!(printed.contains("DEBUG") || printed.contains("TRACE"));
    assert!(!sshd.log().contains(&value), "sshd logged the value");
    assert!(sshd.log().contains("debug3"));
}

#[test]
fn a_shell_only_endpoint_works_through_the_system_ssh_terminal() {
    use crate::support::shell_only::{LoginShell, ShellOnly};
    crate::support::remote_home();
    let endpoint = ShellOnly::builder(LoginShell::Bash).start();
    let work = tempfile::tempdir().unwrap();
    make_tree(&work.path().join("source"));
    let source = format!("pod:{}", work.path().join("source").display());
    let pulled = work.path().join("pulled");
    let mut command = crate::support::xfer_command();
    command
        .args(["pull", "-e", "ssh", &source, pulled.to_str().unwrap(), "-F"])
        .arg(endpoint.config());
    let output = crate::support::run_with_timeout(&mut command, Duration::from_secs(240));
    assert_success(&output);
    assert!(
        said(&output).contains("transfers go through the terminal"),
        "{}",
        said(&output)
    );
    assert_eq!(
        tree_digest(&pulled),
        tree_digest(&work.path().join("source"))
    );
}

#[test]
fn the_command_lines_port_key_jump_and_options_reach_ssh() {
    let setup = Setup::start();
    fs::write(setup.path("file"), b"passed through\n").unwrap();
    // A config that names the host only: the port, the key, a jump host and the known hosts
    // come from xfer's command line, and ssh must get them.
    // (ssh reaches a jump host with the config file alone, so it has a block of its own.)
    let config = setup.path("bare_config");
    let port = setup.sshd.port().to_string();
    let key = setup.sshd.client_key();
    let known = format!("UserKnownHostsFile={}", setup.sshd.known_hosts().display());
    // The jump host is the same sshd by another name (ssh refuses a jump to itself).
    let jump_known = setup.path("jump_known_hosts");
    fs::write(
        &jump_known,
        format!(
            "{}\n",
            setup.sshd.known_hosts_line("localhost", setup.sshd.port())
        ),
    )
    .unwrap();
    fs::write(
        &config,
        format!(
            "Host bare\n    HostName 127.0.0.1\n    BatchMode yes\n\
             Host localhost\n    IdentityFile {}\n    UserKnownHostsFile {}\n    BatchMode yes\n",
            key.display(),
            jump_known.display()
        ),
    )
    .unwrap();
    let user = format!("User={}", setup.sshd.user());
    let jump = format!("{}@localhost:{port}", setup.sshd.user());
    let mut command = xfer_command_in(setup.state.path());
    command
        .args(["pull", "-e", "ssh", "-F"])
        .arg(&config)
        .args(["-p", &port, "-i"])
        .arg(&key)
        .args(["-o", &known, "-o", &user, "-o", "StrictHostKeyChecking=yes"])
        .args(["-J", &jump])
        .arg(format!("bare:{}", setup.path("file").display()))
        .arg(setup.path("copy"));
    let output = crate::support::run_with_timeout(&mut command, LIMIT);
    assert_success(&output);
    assert_eq!(
        fs::read(setup.path("copy")).unwrap(),
        fs::read(setup.path("file")).unwrap()
    );
    // Two logins: the jump host's and the target's, both through the arguments.
    assert_eq!(logins(&setup), 2, "{}", setup.sshd.log());
}

#[test]
fn an_sftp_only_login_works_through_the_system_ssh_over_sftp() {
    let sshd = crate::support::Sshd::builder()
        .extra_config("ForceCommand internal-sftp")
        .start();
    let setup = Setup::with(sshd, tempfile::tempdir().unwrap(), None);
    make_tree(&setup.path("source"));
    let output = run_system(
        &setup,
        &setup.config,
        &[
            "pull",
            &setup.remote("source"),
            setup.path("pulled").to_str().unwrap(),
        ],
    );
    assert_success(&output);
    assert!(said(&output).contains("using SFTP"), "{}", said(&output));
    assert_eq!(
        tree_digest(&setup.path("pulled")),
        tree_digest(&setup.path("source"))
    );
    let output = run_system(
        &setup,
        &setup.config,
        &[
            "push",
            setup.path("pulled").to_str().unwrap(),
            &setup.remote("pushed"),
        ],
    );
    assert_success(&output);
    assert_eq!(
        tree_digest(&setup.path("pushed")),
        tree_digest(&setup.path("source"))
    );
    // A secret needs commands: said in one line, not a hang.
    let mut command = xfer_command_in(setup.state.path());
    command
        .env("TOKEN_FOR_SFTP_ONLY", "x")
        .args([
            "secret",
            "push",
            "-e",
            "ssh",
            "--from-env",
            "TOKEN_FOR_SFTP_ONLY",
            "--to",
        ])
        .arg(setup.path("token"))
        .arg("-F")
        .arg(&setup.config)
        .arg("box");
    let output = crate::support::run_with_timeout(&mut command, LIMIT);
    assert_eq!(output.status.code(), Some(6), "{}", said(&output));
    assert!(!setup.path("token").exists());
}
