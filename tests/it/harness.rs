//! Tests of the test harness itself: each piece of `tests/it/support` is proven with the real
//! OpenSSH client (`ssh -F <generated config> alias ...`) or plain sockets, so that a failing
//! xfer test can be blamed on xfer and not on its scaffolding.

use crate::support;
use std::ffi::OsStr;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{
    Agent, Proxy, ProxyMode, Sshd, assert_succeeded, keygen, public_key_path, run_with_timeout,
    text,
};

/// Generous: ssh on loopback takes well under a second, but CI machines are small and busy.
const SSH_LIMIT: Duration = Duration::from_secs(20);

/// `ssh -F config alias remote_command`, with no agent and nothing on stdin.
fn ssh(config: &Path, alias: &str, remote_command: &str) -> Command {
    let mut command = Command::new("ssh");
    command
        .arg("-F")
        .arg(config)
        .arg(alias)
        .arg(remote_command)
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null());
    command
}

/// Polls `condition` for up to five seconds; counters lag the bytes a reader has seen by
/// the instant between a pump's write and its bookkeeping.
fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn sshd_runs_commands_for_the_ssh_client() {
    let sshd = Sshd::start();
    let config = sshd.write_client_config("box", &[]);
    let output = run_with_timeout(&mut ssh(&config, "box", "echo hello"), SSH_LIMIT);
    assert_succeeded(&output, "ssh box echo hello");
    assert_eq!(text(&output.stdout), "hello\n");
    assert!(sshd.log().contains("Accepted publickey"), "{}", sshd.log());
}

#[test]
fn sshd_offers_each_host_key_type() {
    for (key_type, algorithm) in [("rsa", "ssh-rsa "), ("ecdsa", "ecdsa-sha2-nistp256 ")] {
        let sshd = Sshd::builder().host_key_type(key_type).start();
        assert!(sshd.host_public_key().starts_with(algorithm));
        let line = sshd.known_hosts_line("127.0.0.1", sshd.port());
        assert_eq!(
            line,
            format!("[127.0.0.1]:{} {}", sshd.port(), sshd.host_public_key())
        );
        let config = sshd.write_client_config("box", &[]);
        let output = run_with_timeout(&mut ssh(&config, "box", "true"), SSH_LIMIT);
        assert_succeeded(
            &output,
            &format!("ssh to an sshd with an {key_type} host key"),
        );
    }
}

#[test]
fn extra_sshd_config_overrides_the_defaults() {
    let sshd = Sshd::builder()
        .extra_config("PubkeyAuthentication no")
        .log_level("DEBUG3")
        .start();
    let config = sshd.write_client_config("box", &[]);
    let output = run_with_timeout(&mut ssh(&config, "box", "true"), SSH_LIMIT);
    assert!(!output.status.success(), "logged in without public keys");
    assert!(
        text(&output.stderr).contains("Permission denied"),
        "{}",
        text(&output.stderr)
    );
    assert!(
        sshd.log().contains("debug3:"),
        "LogLevel DEBUG3 not in effect"
    );
}

#[test]
fn client_configs_accumulate_in_one_file() {
    let sshd = Sshd::start();
    let first = sshd.write_client_config("one", &[]);
    let second = sshd.write_client_config("two", &["ConnectTimeout 5"]);
    assert_eq!(first, second);
    for alias in ["one", "two"] {
        let output = run_with_timeout(&mut ssh(&first, alias, "true"), SSH_LIMIT);
        assert_succeeded(&output, alias);
    }
    let written = fs::read_to_string(&first).unwrap();
    assert!(written.contains("Host one\n") && written.contains("Host two\n"));
}

#[test]
fn ssh_through_the_proxy_is_counted_both_ways() {
    let sshd = Sshd::start();
    let proxy = Proxy::start(sshd.port());
    let port = format!("Port {}", proxy.port());
    let config = sshd.write_client_config("proxied", &[&port]);
    let output = run_with_timeout(&mut ssh(&config, "proxied", "echo hello"), SSH_LIMIT);
    assert_succeeded(&output, "ssh through the proxy");
    assert_eq!(text(&output.stdout), "hello\n");
    assert_eq!(proxy.connections(), 1);
    assert!(
        proxy.bytes_up() > 0,
        "nothing counted from client to server"
    );
    assert!(
        proxy.bytes_down() > 0,
        "nothing counted from server to client"
    );
    assert_eq!(proxy.bytes_total(), proxy.bytes_up() + proxy.bytes_down());
    proxy.reset_counters();
    assert_eq!((proxy.bytes_total(), proxy.connections()), (0, 0));
}

#[test]
fn a_cut_proxy_breaks_a_large_transfer() {
    let sshd = Sshd::start();
    let proxy = Proxy::start(sshd.port());
    proxy.set_mode(ProxyMode::CutEachAfter(100_000));
    let port = format!("Port {}", proxy.port());
    let config = sshd.write_client_config("proxied", &[&port]);
    let remote = "head -c 10000000 /dev/zero";
    let output = run_with_timeout(&mut ssh(&config, "proxied", remote), SSH_LIMIT);
    assert!(!output.status.success(), "ssh survived the cut");
    assert!(
        output.stdout.len() < 100_000,
        "got {} bytes",
        output.stdout.len()
    );
    assert!(
        proxy.bytes_total() <= 100_000,
        "forwarded {}",
        proxy.bytes_total()
    );
}

#[test]
fn a_stalled_proxy_makes_ssh_time_out() {
    let sshd = Sshd::start();
    let proxy = Proxy::start(sshd.port());
    proxy.set_mode(ProxyMode::StallEachAfter(100_000));
    let port = format!("Port {}", proxy.port());
    let extra = [&*port, "ServerAliveInterval 1", "ServerAliveCountMax 2"];
    let config = sshd.write_client_config("proxied", &extra);
    let started = Instant::now();
    let remote = "head -c 10000000 /dev/zero";
    let output = run_with_timeout(&mut ssh(&config, "proxied", remote), SSH_LIMIT);
    let elapsed = started.elapsed();
    assert!(
        !output.status.success(),
        "ssh finished through a stalled link"
    );
    assert!(
        text(&output.stderr).contains("Timeout"),
        "{}",
        text(&output.stderr)
    );
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    // Stalled exactly at the limit: the transfer had started, and nothing leaked past it.
    assert_eq!(proxy.bytes_total(), 100_000);
}

#[test]
fn the_agent_alone_authenticates() {
    let sshd = Sshd::start();
    let agent = Agent::start();
    let key = keygen(sshd.dir(), "agent_key", "ed25519", None);
    sshd.authorize(&public_key_path(&key));
    agent.add(&key);
    let nowhere = format!("IdentityFile {}", sshd.dir().join("no_such_key").display());
    let config = sshd.write_client_config("by-agent", &[&nowhere, "IdentitiesOnly no"]);
    let written = fs::read_to_string(&config).unwrap();
    assert!(
        !written.contains("client_key"),
        "the default key would be offered:\n{written}"
    );

    let without = run_with_timeout(&mut ssh(&config, "by-agent", "echo hello"), SSH_LIMIT);
    assert!(
        !without.status.success(),
        "logged in with neither key nor agent"
    );

    let mut command = ssh(&config, "by-agent", "echo hello");
    command.env("SSH_AUTH_SOCK", agent.socket());
    let with = run_with_timeout(&mut command, SSH_LIMIT);
    assert_succeeded(&with, "ssh with the agent");
    assert_eq!(text(&with.stdout), "hello\n");
}

#[test]
fn the_agent_takes_passphrase_protected_keys() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "locked_key", "ed25519", Some("correct horse"));
    let mode = fs::metadata(&key).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    // The key really is encrypted: an empty passphrase does not open it.
    let mut open = Command::new("ssh-keygen");
    open.args([OsStr::new("-y"), OsStr::new("-P"), OsStr::new("")]);
    open.arg("-f").arg(&key).stdin(Stdio::null());
    assert!(!run_with_timeout(&mut open, SSH_LIMIT).status.success());

    let agent = Agent::start();
    agent.add_with_passphrase(&key, "correct horse");
    let mut list = Command::new("ssh-add");
    list.arg("-l").env("SSH_AUTH_SOCK", agent.socket());
    let listed = run_with_timeout(&mut list, SSH_LIMIT);
    assert_succeeded(&listed, "ssh-add -l");
    assert!(
        text(&listed.stdout).contains("locked_key"),
        "{}",
        text(&listed.stdout)
    );
}

#[test]
fn a_regenerated_host_key_fails_verification() {
    let mut sshd = Sshd::start();
    let config = sshd.write_client_config("box", &[]);
    assert_succeeded(
        &run_with_timeout(&mut ssh(&config, "box", "true"), SSH_LIMIT),
        "ssh before regenerating",
    );
    let (old_key, old_port) = (sshd.host_public_key(), sshd.port());
    sshd.regenerate_host_key();
    assert_ne!(sshd.host_public_key(), old_key);
    assert_eq!(sshd.port(), old_port);

    let output = run_with_timeout(&mut ssh(&config, "box", "true"), SSH_LIMIT);
    assert!(!output.status.success(), "ssh accepted a changed host key");
    assert!(
        text(&output.stderr).contains("Host key verification failed"),
        "{}",
        text(&output.stderr)
    );

    // The restarted server itself is fine: trusting its new key lets ssh in.
    let fresh = sshd.dir().join("fresh_known_hosts");
    fs::write(
        &fresh,
        sshd.known_hosts_line("127.0.0.1", sshd.port()) + "\n",
    )
    .unwrap();
    let trust = format!("UserKnownHostsFile {}", fresh.display());
    let config = sshd.write_client_config("renewed", &[&trust]);
    assert_succeeded(
        &run_with_timeout(&mut ssh(&config, "renewed", "true"), SSH_LIMIT),
        "ssh trusting the new key",
    );
}

#[test]
fn sftp_can_be_refused() {
    let sftp = |sshd: &Sshd| {
        let config = sshd.write_client_config("box", &[]);
        let mut command = Command::new("sftp");
        command
            .arg("-F")
            .arg(&config)
            .args(["-b", "/dev/null", "box"])
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null());
        run_with_timeout(&mut command, SSH_LIMIT)
    };
    let with_sftp = Sshd::start();
    assert_succeeded(&sftp(&with_sftp), "sftp to a default sshd");

    let without_sftp = Sshd::builder().sftp(false).start();
    let output = sftp(&without_sftp);
    assert!(!output.status.success(), "sftp worked with sftp(false)");
    assert!(
        text(&output.stderr).contains("subsystem request failed"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn proxy_jump_goes_through_one_sshd_to_another() {
    let jump = Sshd::start();
    let target = Sshd::start();
    let config = target.write_client_config("target", &["ProxyJump jump"]);
    jump.append_client_config(&config, "jump", &[]);
    let output = run_with_timeout(&mut ssh(&config, "target", "echo hello"), SSH_LIMIT);
    assert_succeeded(&output, "ssh -J jump target");
    assert_eq!(text(&output.stdout), "hello\n");
    let forwarded = format!("target 127.0.0.1 port {}", target.port());
    assert!(jump.log().contains(&forwarded), "{}", jump.log());
}

#[test]
#[should_panic(expected = "timed out")]
fn run_with_timeout_kills_a_hung_command() {
    let started = Instant::now();
    let mut sleep = Command::new("sleep");
    sleep.arg("100");
    // If this returned, the panic below would not say "timed out".
    run_with_timeout(&mut sleep, Duration::from_millis(300));
    panic!("returned after {:?}", started.elapsed());
}

#[test]
#[should_panic(expected = "output stayed open")]
fn run_with_timeout_kills_what_holds_the_output_open() {
    let mut shell = Command::new("sh");
    shell.args(["-c", "sleep 100 & exit 0"]);
    run_with_timeout(&mut shell, Duration::from_millis(300));
}

/// The value `command` sets for `name`, if it sets one.
fn env_of(command: &Command, name: &str) -> Option<std::ffi::OsString> {
    command
        .get_envs()
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| value.map(OsStr::to_owned))
}

#[test]
fn xfer_command_is_isolated() {
    let command = support::xfer_command();
    assert_eq!(
        command.get_program(),
        OsStr::new(env!("CARGO_BIN_EXE_xfer"))
    );
    let unset = command
        .get_envs()
        .any(|pair| pair == (OsStr::new("SSH_AUTH_SOCK"), None));
    assert!(unset, "a developer's ssh-agent would leak into tests");
    let state = env_of(&command, "XFER_STATE_DIR").expect("XFER_STATE_DIR is set");
    let entries = fs::read_dir(&state)
        .expect("the state directory exists")
        .count();
    assert_eq!(entries, 0, "the state directory is not fresh");
    let other = env_of(&support::xfer_command(), "XFER_STATE_DIR");
    assert_ne!(Some(state), other, "two commands share a state directory");
}

/// A TCP server on 127.0.0.1 that echoes every connection until the client closes it.
fn echo_server() -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut reader = stream.try_clone().unwrap();
                let mut writer = stream;
                let _ = std::io::copy(&mut reader, &mut writer);
                let _ = writer.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

fn connect(proxy: &Proxy) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// Writes `count` bytes and reads back as many.
fn echo(stream: &mut TcpStream, count: usize) {
    stream.write_all(&vec![7u8; count]).unwrap();
    let mut back = vec![0u8; count];
    stream.read_exact(&mut back).unwrap();
}

/// True if the connection reaches EOF or an error (not a timeout) within its read timeout.
fn is_closed(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(error) => !matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

#[test]
fn proxy_counts_exactly_what_it_forwards() {
    let proxy = Proxy::start(echo_server());
    let mut first = connect(&proxy);
    let mut second = connect(&proxy);
    echo(&mut first, 100_000);
    echo(&mut second, 1_234);
    // Each direction is counted by its own task after it forwards, so an echo can come back
    // before the count of what went up is added: wait for both.
    eventually("all bytes counted", || {
        proxy.bytes_down() == 101_234 && proxy.bytes_up() == 101_234
    });
    assert_eq!(proxy.bytes_up(), 101_234);
    assert_eq!(proxy.bytes_down(), 101_234);
    assert_eq!(proxy.connections(), 2);
}

#[test]
fn proxy_cuts_each_connection_at_its_limit() {
    let proxy = Proxy::start(echo_server());
    proxy.set_mode(ProxyMode::CutEachAfter(1_500));
    let mut stream = connect(&proxy);
    echo(&mut stream, 600);
    // 1_200 carried: of the next 600 bytes only 300 go up, then the link is cut.
    stream.write_all(&[1u8; 600]).unwrap();
    assert!(is_closed(&mut stream), "the connection outlived its limit");
    eventually("cut counted", || proxy.bytes_total() == 1_500);
    assert_eq!((proxy.bytes_up(), proxy.bytes_down()), (900, 600));

    // Each connection has its own budget.
    let mut next = connect(&proxy);
    echo(&mut next, 700);
}

#[test]
fn proxy_cuts_all_connections_once() {
    let proxy = Proxy::start(echo_server());
    proxy.set_mode(ProxyMode::CutAllAfter(1_000));
    let mut first = connect(&proxy);
    let mut second = connect(&proxy);
    echo(&mut first, 400);
    second.write_all(&[1u8; 400]).unwrap();
    assert!(is_closed(&mut first), "an idle connection survived the cut");
    assert!(
        is_closed(&mut second),
        "the connection that crossed the limit survived"
    );
    eventually("cut counted", || proxy.bytes_total() == 1_000);

    // The cut is an event, not a state: a new connection passes.
    let mut later = connect(&proxy);
    echo(&mut later, 5_000);
}

#[test]
fn proxy_stalls_without_closing_or_reading() {
    let proxy = Proxy::start(echo_server());
    let mut stream = connect(&proxy);
    echo(&mut stream, 100);
    eventually("echo counted", || proxy.bytes_total() == 200);
    proxy.set_mode(ProxyMode::StallNow);

    stream.write_all(&[1u8; 100]).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        !is_closed(&mut stream),
        "a stalled connection was closed or answered"
    );
    // Backpressure: the proxy stops reading, so the kernel buffers fill and writes block.
    stream.set_nonblocking(true).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0usize;
    let blocked = loop {
        match stream.write(&chunk) {
            Ok(count) => written += count,
            Err(error) if error.kind() == ErrorKind::WouldBlock => break true,
            Err(error) => panic!("write failed after {written} bytes: {error}"),
        }
        if written > 64 * 1024 * 1024 {
            break false;
        }
    };
    assert!(blocked, "wrote {written} bytes into a stalled connection");
    assert_eq!(proxy.bytes_total(), 200);

    // New connections are silent too.
    let mut late = connect(&proxy);
    late.write_all(b"anyone?").unwrap();
    late.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(!is_closed(&mut late));
    assert_eq!(proxy.bytes_total(), 200);
}
