//! The shell-only endpoints of the harness behave like a provider's relay, checked with
//! OpenSSH's own clients before xfer is pointed at them:
//!
//! - the sshd endpoint (`support::shell_only`), for each login shell (dash, bash, zsh, fish),
//!   logged in as the user running the tests and as a local user whose own shell it is: a
//!   command is refused, SFTP is refused, a shell without a terminal is refused, and `ssh -tt`
//!   gets the chosen shell, as a login shell, which runs a typed line; noisy, it prints its
//!   coloured banner and a coloured prompt.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::shell_only::{
    ALIAS, BANNER, COMMAND_REFUSED, LoginShell, NO_TERMINAL_REFUSED, PROMPT_HOST, ShellOnly,
};
use crate::support::users::{LocalUser, local_users};
use crate::support::{Conversation, current_user, run_with_input, run_with_timeout, said};

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
