//! The shell-only endpoints of the harness behave like a provider's relay, checked with
//! OpenSSH's own clients before xfer is pointed at them:
//!
//! - the sshd endpoint (`support::shell_only`), for each login shell (dash, bash, zsh, fish),
//!   logged in as the user running the tests and as a local user whose own shell it is: a
//!   command is refused, SFTP is refused, a shell without a terminal is refused, and `ssh -tt`
//!   gets the chosen shell, as a login shell, which runs a typed line; noisy, it prints its
//!   coloured banner and a coloured prompt;
//! - the in-process relay (`support::Relay`): exec, SFTP and a shell without a terminal are
//!   refused; a shell on a terminal runs typed lines, with its exit status passed on and its
//!   bytes counted exactly; stripping the eighth bit and translating newlines really change
//!   the bytes, both ways (a plain relay, checked the same way, does not); a cut ends the
//!   connection after no more than the bytes allowed, hanging up its shell; and dropping the
//!   relay ends its connections, its shells and what they left running.

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::shell_only::{
    ALIAS, BANNER, COMMAND_REFUSED, LoginShell, NO_TERMINAL_REFUSED, PROMPT_HOST, ShellOnly,
};
use crate::support::users::{LocalUser, local_users};
use crate::support::{Conversation, Relay, current_user, run_with_input, run_with_timeout, said};

/// Bound on one ssh or sftp run that is refused.
const LIMIT: Duration = Duration::from_secs(30);
/// Bound on one thing a terminal session is waited for.
const WAIT: Duration = Duration::from_secs(20);

/// Prints, from a program the shell starts, the command line of its parent (the shell):
/// `SHELL=-bash` for a login bash. Written so that every shell here reads it the same way,
/// fish too, and so that its echo does not hold what it prints.
const SHELL_PROBE: &str = r#"awk 'BEGIN { getline stat < "/proc/self/stat"; split(stat, field, " "); getline line < ("/proc/" field[4] "/cmdline"); print "SHELL" "=" line }'"#;

/// `ssh -F CONFIG ARGUMENTS`, with the escape character off (a typed `~.` must not end a
/// session) and TERM as given.
fn ssh(config: &Path, term: Option<&str>, arguments: &[&str]) -> Command {
    let mut command = Command::new("ssh");
    command
        .arg("-F")
        .arg(config)
        .args(["-e", "none"])
        .args(arguments);
    match term {
        Some(term) => command.env("TERM", term),
        None => command.env_remove("TERM"),
    };
    command
}

/// `ssh -tt` to `alias`: a terminal is asked for although stdin is a pipe.
fn terminal(config: &Path, alias: &str, term: Option<&str>) -> Conversation {
    Conversation::start(&mut ssh(config, term, &["-tt", alias]))
}

/// A command, sftp and a shell without a terminal are refused by the endpoint's script (not
/// by a login that failed), and nothing hangs.
fn assert_refuses_all_but_a_terminal(endpoint: &ShellOnly) {
    let config = endpoint.config();
    let context = || {
        format!(
            "{:?} endpoint on port {} ({})\n--- sshd log ---\n{}",
            endpoint.shell(),
            endpoint.port(),
            endpoint.script().display(),
            endpoint.log()
        )
    };

    // With a terminal and without: the command is refused either way, for being a command.
    for arguments in [&[ALIAS, "true"][..], &["-tt", ALIAS, "true"]] {
        let output = run_with_timeout(&mut ssh(config, Some("xterm"), arguments), LIMIT);
        assert!(
            !output.status.success() && said(&output).contains(COMMAND_REFUSED),
            "ssh {arguments:?}: the command was not refused:\n{}\n{}",
            said(&output),
            context()
        );
    }

    let output = run_with_timeout(&mut ssh(config, Some("xterm"), &["-T", ALIAS]), LIMIT);
    assert!(
        !output.status.success() && said(&output).contains(NO_TERMINAL_REFUSED),
        "a shell without a terminal was not refused:\n{}\n{}",
        said(&output),
        context()
    );

    let mut sftp = Command::new("sftp");
    sftp.arg("-F").arg(config).args(["-b", "-", ALIAS]);
    let output = run_with_input(&mut sftp, b"pwd\n", LIMIT);
    assert!(
        !output.status.success(),
        "sftp was not refused:\n{}\n{}",
        said(&output),
        context()
    );
    assert!(
        endpoint
            .log()
            .contains("subsystem request for sftp by user"),
        "sshd did not refuse the sftp subsystem (sftp failed for another reason):\n{}\n{}",
        said(&output),
        context()
    );
}

/// `ssh -tt` gets the endpoint's shell, started as a login shell, and it runs what is typed,
/// typed before the shell has even started; TERM is the client's. Returns what the session
/// printed.
fn assert_shell_runs_a_typed_line(endpoint: &ShellOnly, term: &str) -> Vec<u8> {
    let mut session = terminal(endpoint.config(), endpoint.alias(), Some(term));
    session.send(format!("{SHELL_PROBE}\necho XFER\"\"OK-$(id -un)-$TERM; exit\n").as_bytes());
    session.expect(
        format!("SHELL=-{}", endpoint.shell().name()).as_bytes(),
        WAIT,
    );
    session.expect(
        format!("XFEROK-{}-{term}", endpoint.user()).as_bytes(),
        WAIT,
    );
    let status = session.finish(WAIT);
    assert!(
        status.success(),
        "the session did not end with the shell's exit ({status})\n{}",
        session.transcript()
    );
    session.stdout()
}

fn assert_shell_only(endpoint: &ShellOnly) {
    assert_refuses_all_but_a_terminal(endpoint);
    let stdout = assert_shell_runs_a_typed_line(endpoint, "xterm");
    let text = String::from_utf8_lossy(&stdout);
    assert!(
        !text.contains(BANNER) && !text.contains(&format!("@{PROMPT_HOST}")),
        "a quiet endpoint printed the noisy banner or prompt:\n{text:?}"
    );
}

#[test]
fn dash_endpoint_refuses_commands_and_sftp_and_runs_a_typed_line() {
    assert_shell_only(&ShellOnly::builder(LoginShell::Dash).start());
}

#[test]
fn bash_endpoint_refuses_commands_and_sftp_and_runs_a_typed_line() {
    assert_shell_only(&ShellOnly::builder(LoginShell::Bash).start());
}

#[test]
fn zsh_endpoint_refuses_commands_and_sftp_and_runs_a_typed_line() {
    assert_shell_only(&ShellOnly::builder(LoginShell::Zsh).start());
}

#[test]
fn fish_endpoint_refuses_commands_and_sftp_and_runs_a_typed_line() {
    assert_shell_only(&ShellOnly::builder(LoginShell::Fish).start());
}

/// As a local user whose own login shell is the endpoint's: sshd runs the endpoint's script
/// through that shell (`fish -c` for fish), and the session has that user's name.
#[test]
fn endpoints_serve_local_users_whose_own_shell_they_start() {
    let users = local_users();
    let cases: [(LoginShell, &LocalUser); 4] = [
        (LoginShell::Dash, &users.dash),
        (LoginShell::Bash, &users.victim),
        (LoginShell::Zsh, &users.zsh),
        (LoginShell::Fish, &users.fish),
    ];
    for (shell, user) in cases {
        assert_eq!(user.shell, shell.path(), "the login shell of {}", user.name);
        let endpoint = ShellOnly::builder(shell).login_as(user).start();
        assert_eq!(endpoint.user(), user.name);
        assert_shell_only(&endpoint);
    }
}

/// A client that names no terminal type gets a dumb terminal, not an empty TERM. (Dash: bash
/// would make up a TERM of its own.)
#[test]
fn endpoint_gives_a_dumb_terminal_when_the_client_names_none() {
    let endpoint = ShellOnly::builder(LoginShell::Dash).start();
    let mut session = terminal(endpoint.config(), ALIAS, None);
    session.send(b"echo XFER\"\"OK-$TERM; exit\n");
    session.expect(b"XFEROK-dumb", WAIT);
    assert!(session.finish(WAIT).success());
}

/// A noisy endpoint prints its coloured banner before the shell and a coloured prompt, in every
/// shell, even on a dumb terminal, and the typed line still runs.
#[test]
fn noisy_endpoints_print_a_coloured_banner_and_prompt() {
    let user = current_user();
    for shell in LoginShell::ALL {
        let endpoint = ShellOnly::builder(shell).noisy().start();
        let stdout = assert_shell_runs_a_typed_line(&endpoint, "dumb");
        let shown = String::from_utf8_lossy(&stdout).into_owned();
        assert!(
            shown.contains(&format!("\x1b[1;36m=== {BANNER} ===\x1b[0m")),
            "{shell:?}: no coloured banner in {shown:?}"
        );
        // The prompt's colour comes right before `user@pod`: bold green, as each shell writes
        // it (`\e[1;32m`, or zsh's `\e[1m\e[32m`).
        let prompt = format!("32m{user}@{PROMPT_HOST}");
        assert!(
            shown.contains(&format!("\x1b[{prompt}"))
                || shown.contains(&format!("\x1b[1;{prompt}")),
            "{shell:?}: no coloured prompt in {shown:?}"
        );
    }
}

/// Waits up to [`WAIT`] until the relay has no shell running.
fn assert_shells_end(relay: &Relay) {
    let deadline = Instant::now() + WAIT;
    while relay.running_shells() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} shell(s) still running after {WAIT:?}; requests: {:?}",
            relay.running_shells(),
            relay.requests()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn relay_refuses_exec_sftp_and_a_shell_without_a_terminal() {
    let relay = Relay::start();
    let config = relay.write_client_config("relay", &[]);
    let known_hosts = std::fs::read_to_string(config.with_file_name("known_hosts")).unwrap();
    assert!(
        known_hosts
            .lines()
            .any(|line| line == relay.known_hosts_line())
            && relay.known_hosts_line()
                == format!("[127.0.0.1]:{} {}", relay.port(), relay.host_key()),
        "the relay's client config does not trust its host key: {known_hosts}"
    );

    let output = run_with_timeout(&mut ssh(&config, Some("xterm"), &["relay", "true"]), LIMIT);
    assert!(
        !output.status.success(),
        "exec was not refused:\n{}",
        said(&output)
    );
    let output = run_with_timeout(&mut ssh(&config, Some("xterm"), &["-T", "relay"]), LIMIT);
    assert!(
        !output.status.success(),
        "a shell without a terminal was not refused:\n{}",
        said(&output)
    );
    let mut sftp = Command::new("sftp");
    sftp.arg("-F").arg(&config).args(["-b", "-", "relay"]);
    let output = run_with_input(&mut sftp, b"pwd\n", LIMIT);
    assert!(
        !output.status.success(),
        "sftp was not refused:\n{}",
        said(&output)
    );

    // Refused by the relay, after a login that worked, and no shell started.
    let requests = relay.requests();
    for request in ["exec true", "shell", "subsystem sftp"] {
        assert!(
            requests.iter().any(|made| made == request),
            "the relay did not see {request:?}: {requests:?}"
        );
    }
    assert_eq!(relay.shells_started(), 0, "requests: {requests:?}");
}

/// What the eighth-bit check prints: `<XFEROK>` with the top bit of every letter set.
const HIGH_PRINTF: &str = r"printf '<\330\306\305\322\317\313>\n'";
/// What [`HIGH_PRINTF`] prints, as the shell writes it.
const HIGH_BYTES: &[u8] = &[b'<', 0xd8, 0xc6, 0xc5, 0xd2, 0xcf, 0xcb, b'>'];
/// Prints two lines with the terminal's LF-to-CRLF turned off for them.
const BARE_NEWLINES: &str = r"stty -onlcr; printf 'NL1\nNL2\n'; stty onlcr";
/// Reads three typed bytes with the terminal's CR-to-LF turned off, after saying READY, and
/// prints them in octal.
const THREE_TYPED: &str = "stty -icrnl; echo RE\"\"ADY; head -c 3 | od -An -to1; stty icrnl";

/// A plain relay: a login bash on a terminal with the client's TERM and the relay's home runs
/// typed lines; bytes pass both ways as the terminal gives them (so the checks of the relay's
/// changes below can fail); the exit status is passed on; the counters are exact; the shell is
/// gone afterwards.
#[test]
fn relay_runs_a_login_shell_and_passes_bytes_unchanged() {
    let relay = Relay::start();
    let config = relay.write_client_config("relay", &[]);
    let mut session = terminal(&config, "relay", Some("xterm"));
    let mut typed = Vec::new();
    let mut type_line = |session: &mut Conversation, line: &[u8]| {
        session.send(line);
        typed.extend_from_slice(line);
    };

    type_line(
        &mut session,
        format!("{SHELL_PROBE}\necho XFER\"\"OK-$TERM-$HOME\n").as_bytes(),
    );
    session.expect(b"SHELL=-bash", WAIT);
    session.expect(
        format!("XFEROK-xterm-{}", relay.home().display()).as_bytes(),
        WAIT,
    );
    type_line(&mut session, format!("{HIGH_PRINTF}\n").as_bytes());
    session.expect(HIGH_BYTES, WAIT);
    type_line(&mut session, format!("{BARE_NEWLINES}\n").as_bytes());
    session.expect(b"NL1\nNL2\n", WAIT);
    type_line(&mut session, format!("{THREE_TYPED}\n").as_bytes());
    session.expect(b"READY", WAIT);
    type_line(&mut session, b"a\rb\n");
    session.expect(b"141 015 142", WAIT);
    type_line(&mut session, b"exit 3\n");
    let status = session.finish(WAIT);
    assert_eq!(status.code(), Some(3), "{}", session.transcript());

    assert_eq!(relay.shells_started(), 1);
    assert_eq!(relay.bytes_up(), typed.len() as u64, "bytes typed");
    // Everything the relay sent reached ssh's stdout before the channel closed.
    assert_eq!(
        relay.bytes_down(),
        session.stdout().len() as u64,
        "bytes printed"
    );
    assert_shells_end(&relay);
}

/// A 7-bit relay clears the top bit of what the shell prints and of what is typed.
#[test]
fn relay_strips_the_eighth_bit_both_ways() {
    let relay = Relay::builder()
        .shell("/bin/dash")
        .strip_eighth_bit()
        .start();
    let config = relay.write_client_config("relay", &[]);
    let mut session = terminal(&config, "relay", Some("xterm"));
    session.send(format!("{SHELL_PROBE}\n{HIGH_PRINTF}\n").as_bytes());
    session.expect(b"SHELL=-dash", WAIT);
    session.expect(b"<XFEROK>", WAIT);
    // Typed with the top bit set: X and F arrive.
    session.send(b"echo RE\"\"ADY; head -c 2 | od -An -to1\n");
    session.expect(b"READY", WAIT);
    session.send(&[0xd8, 0xc6, b'\n']);
    session.expect(b"130 106", WAIT);
    session.send(b"exit\n");
    assert!(session.finish(WAIT).success(), "{}", session.transcript());
    assert!(
        session.stdout().iter().all(|byte| *byte < 0x80),
        "a byte with the top bit set came through:\n{}",
        session.transcript()
    );
}

/// A relay translating newlines sends CRLF for the shell's LF and types LF for the client's CR.
#[test]
fn relay_translates_newlines_both_ways() {
    let relay = Relay::builder().translate_newlines().start();
    let config = relay.write_client_config("relay", &[]);
    let mut session = terminal(&config, "relay", Some("xterm"));
    session.send(format!("{BARE_NEWLINES}\n").as_bytes());
    session.expect(b"NL1\r\nNL2\r\n", WAIT);
    session.send(format!("{THREE_TYPED}\n").as_bytes());
    session.expect(b"READY", WAIT);
    session.send(b"a\rb\n");
    session.expect(b"141 012 142", WAIT);
    session.send(b"exit\n");
    assert!(session.finish(WAIT).success(), "{}", session.transcript());
}

/// A cut ends the connection once the bytes allowed have gone down, no more of them reach the
/// client, the shell is hung up, and the next connection passes.
#[test]
fn relay_cut_ends_the_connection_after_the_bytes_allowed() {
    const ALLOWED: u64 = 100;
    let relay = Relay::start();
    // A prompt to wait for, so that nothing is on its way down when the cut is armed.
    std::fs::write(relay.home().join(".bash_profile"), "PS1='relay$ '\n").unwrap();
    let config = relay.write_client_config("relay", &[]);
    let mut session = terminal(&config, "relay", Some("xterm"));
    session.send(b"echo XFER\"\"OK\n");
    session.expect(b"XFEROK", WAIT);
    session.expect(b"relay$ ", WAIT);

    let sent_before = relay.bytes_down();
    let heard_before = session.stdout().len();
    relay.cut_down_after(ALLOWED);
    // Far more than allowed.
    session.send(b"head -c 5000 /dev/zero | tr '\\0' x\n");
    let status = session.finish(WAIT);
    assert!(
        !status.success(),
        "ssh did not see the cut ({status}):\n{}",
        session.transcript()
    );
    assert_eq!(relay.cuts(), 1);
    let sent = relay.bytes_down() - sent_before;
    let heard = session.stdout().len() - heard_before;
    assert!(
        sent <= ALLOWED && heard as u64 <= ALLOWED,
        "after the cut was armed, {sent} bytes were sent and {heard} arrived:\n{}",
        session.transcript()
    );
    assert_shells_end(&relay);

    let mut again = terminal(&config, "relay", Some("xterm"));
    again.send(b"echo XFER\"\"OK-again; exit\n");
    again.expect(b"XFEROK-again", WAIT);
    assert!(again.finish(WAIT).success(), "{}", again.transcript());
}

/// The processes whose environment has `HOME=home`.
fn processes_with_home(home: &Path) -> Vec<u32> {
    let wanted = format!("HOME={}", home.display()).into_bytes();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let environment = std::fs::read(entry.path().join("environ")).ok()?;
            environment
                .split(|byte| *byte == 0)
                .any(|variable| variable == wanted.as_slice())
                .then_some(pid)
        })
        .collect()
}

/// Dropping the relay ends the connections and the shells it started, mid-session, and what
/// they left running that a hangup does not end.
#[test]
fn relay_dropped_ends_its_connections_and_shells() {
    let relay = Relay::start();
    let home = relay.home().to_path_buf();
    let config = relay.write_client_config("relay", &[]);
    let mut session = terminal(&config, "relay", Some("xterm"));
    session.send(b"nohup sleep 600 >/dev/null 2>&1 &\necho XFER\"\"OK\n");
    session.expect(b"XFEROK", WAIT);
    // The job may still be `nohup`, not yet `sleep`, when the shell has answered.
    let deadline = Instant::now() + WAIT;
    while !processes_with_home(&home).into_iter().any(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|name| name == "sleep\n")
    }) {
        assert!(
            Instant::now() < deadline,
            "the shell's job is not found by its HOME"
        );
        thread::sleep(Duration::from_millis(10));
    }

    drop(relay);
    let status = session.finish(WAIT);
    assert!(!status.success(), "{}", session.transcript());
    let deadline = Instant::now() + WAIT;
    loop {
        let left = processes_with_home(&home);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "processes {left:?} outlived the relay"
        );
        thread::sleep(Duration::from_millis(10));
    }
}
