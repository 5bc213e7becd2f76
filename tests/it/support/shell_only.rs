//! A shell-only SSH endpoint made of a real OpenSSH sshd ([`ShellOnly`]), like the relays of
//! GPU rental providers (`ssh POD@ssh.provider.io`): no SFTP subsystem, exec refused, and an
//! interactive login shell only for a session with a terminal. This module owns the sshd's
//! `ForceCommand` script that enforces that, the startup files that give the chosen shell its
//! prompt (written in a directory of the fixture's, never in a real home), and the client
//! config that reaches the endpoint as [`ALIAS`].
//!
//! The login shell is the fixture's choice ([`LoginShell`]), whatever the login's passwd says,
//! started as a login shell (`-bash`, as sshd starts one). A [`ShellOnlyBuilder::noisy`]
//! endpoint prints a coloured banner before the shell and has a coloured prompt, as a
//! provider's image does: what a client typing through the terminal has to see past.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::users::LocalUser;
use super::{Sshd, current_user};

/// The `Host` alias of the client config that reaches the endpoint.
pub const ALIAS: &str = "pod";

/// A line of the noisy banner, printed (in colour) before the shell starts.
pub const BANNER: &str = "Welcome to the xfer test pod";

/// The host name in a noisy prompt, which reads `USER@pod` (in colour) in every shell.
pub const PROMPT_HOST: &str = "pod";

/// What the endpoint says on stderr when it refuses a command (exec, or sftp if sshd let it
/// through).
pub const COMMAND_REFUSED: &str =
    "this endpoint only gives an interactive shell: commands are refused";
/// What the endpoint says on stderr when it refuses a session without a terminal.
pub const NO_TERMINAL_REFUSED: &str =
    "this endpoint only gives an interactive shell: this session has no terminal";

/// A login shell the endpoint can start, by absolute path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginShell {
    Dash,
    Bash,
    Zsh,
    Fish,
}

impl LoginShell {
    pub const ALL: [LoginShell; 4] = [
        LoginShell::Dash,
        LoginShell::Bash,
        LoginShell::Zsh,
        LoginShell::Fish,
    ];

    pub fn path(self) -> &'static Path {
        Path::new(match self {
            LoginShell::Dash => "/bin/dash",
            LoginShell::Bash => "/bin/bash",
            LoginShell::Zsh => "/usr/bin/zsh",
            LoginShell::Fish => "/usr/bin/fish",
        })
    }

    /// The program's name, which a login shell's `argv[0]` is, after a `-`.
    pub fn name(self) -> &'static str {
        match self {
            LoginShell::Dash => "dash",
            LoginShell::Bash => "bash",
            LoginShell::Zsh => "zsh",
            LoginShell::Fish => "fish",
        }
    }
}

/// Options for a [`ShellOnly`]; start one with [`ShellOnlyBuilder::start`].
#[derive(Clone, Debug)]
pub struct ShellOnlyBuilder {
    shell: LoginShell,
    login: Option<LocalUser>,
    noisy: bool,
    log_level: Option<String>,
}

impl ShellOnlyBuilder {
    /// Logs in as `user` (one of `super::users`), whose home the session has, instead of as
    /// the user running the tests (whose session has the harness's shared remote home).
    pub fn login_as(mut self, user: &LocalUser) -> Self {
        self.login = Some(user.clone());
        self
    }

    /// A coloured banner ([`BANNER`]) before the shell, and a coloured prompt
    /// (`USER@`[`PROMPT_HOST`]) with a window title in it for bash and dash.
    pub fn noisy(mut self) -> Self {
        self.noisy = true;
        self
    }

    /// sshd's LogLevel (DEBUG1 otherwise), e.g. DEBUG3 to show that a secret is not logged.
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = Some(level.to_owned());
        self
    }

    pub fn start(self) -> ShellOnly {
        ShellOnly::launch(self)
    }
}

/// A running shell-only endpoint. Dropping it stops its sshd and removes its files.
pub struct ShellOnly {
    settings: ShellOnlyBuilder,
    sshd: Sshd,
    config: PathBuf,
    // Declared last, so that it is removed after sshd has stopped.
    files: TempDir,
}

impl ShellOnly {
    pub fn builder(shell: LoginShell) -> ShellOnlyBuilder {
        ShellOnlyBuilder {
            shell,
            login: None,
            noisy: false,
            log_level: None,
        }
    }

    fn launch(settings: ShellOnlyBuilder) -> ShellOnly {
        // The script and startup files sit in a directory of their own rather than in the
        // sshd's, because sshd_config has to name the script before the sshd's directory
        // exists.
        let files = tempfile::Builder::new()
            .prefix("xfer-shell-only-")
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot create a directory for the endpoint: {error}"));
        // sshd runs the script as the login, which may not be the user running the tests.
        set_mode(files.path(), 0o755);
        let startup = files.path().join("startup");
        write_startup_files(&startup, settings.shell, settings.noisy);
        if let Some(user) = &settings.login {
            // fish writes its universal variables and history there.
            user.own_tree(&startup);
        }
        let script = files.path().join("force-command");
        fs::write(&script, force_command(&settings, &startup))
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", script.display()));
        set_mode(&script, 0o755);

        let mut builder = Sshd::builder()
            .sftp(false)
            .extra_config(&format!("ForceCommand {}", script.display()))
            // A relay forwards nothing either.
            .extra_config("DisableForwarding yes");
        if settings.login.is_some() {
            builder = builder.local_users();
        }
        if let Some(level) = &settings.log_level {
            builder = builder.log_level(level);
        }
        let sshd = builder.start();
        let config = match &settings.login {
            Some(user) => user.client_config(&sshd, ALIAS),
            None => sshd.write_client_config(ALIAS, &[]),
        };
        ShellOnly {
            settings,
            sshd,
            config,
            files,
        }
    }

    pub fn port(&self) -> u16 {
        self.sshd.port()
    }

    /// The ssh_config that reaches the endpoint as [`ALIAS`] (IdentityFile, known_hosts, port
    /// and user set; BatchMode).
    pub fn config(&self) -> &Path {
        &self.config
    }

    pub fn alias(&self) -> &'static str {
        ALIAS
    }

    /// The login name sessions have.
    pub fn user(&self) -> String {
        match &self.settings.login {
            Some(user) => user.name.clone(),
            None => current_user(),
        }
    }

    pub fn shell(&self) -> LoginShell {
        self.settings.shell
    }

    /// Everything sshd has logged so far.
    pub fn log(&self) -> String {
        self.sshd.log()
    }

    /// The sshd behind the endpoint, e.g. to write a client config through a proxy.
    pub fn sshd(&self) -> &Sshd {
        &self.sshd
    }

    /// The directory of the script and the shells' startup files (bash keeps its history
    /// there).
    pub fn files(&self) -> &Path {
        self.files.path()
    }

    /// The `ForceCommand` script, for messages.
    pub fn script(&self) -> PathBuf {
        self.files.path().join("force-command")
    }
}

/// The `ForceCommand` script: refuses commands and sessions without a terminal, prints the
/// banner if noisy, points the shell at its startup files and replaces itself with the login
/// shell. Bash, whatever the login's own shell is: sshd runs it with `$SHELL -c`, which may be
/// fish or tcsh, and it needs `exec -a` to start a login shell by name.
fn force_command(settings: &ShellOnlyBuilder, startup: &Path) -> String {
    let shell = settings.shell;
    let startup = startup.display();
    let mut script = format!(
        r#"#!/bin/bash
# Written by the xfer test harness: a shell-only endpoint, like a provider's SSH relay.
if [ -n "${{SSH_ORIGINAL_COMMAND+set}}" ]; then
    echo "{COMMAND_REFUSED}" >&2
    exit 1
fi
if ! [ -t 0 ]; then
    echo "{NO_TERMINAL_REFUSED}" >&2
    exit 1
fi
# The client's pty-req names the terminal; one that names none gets a dumb terminal. (Then
# sshd sets no TERM, and bash makes up one it does not export.)
if [ -z "${{TERM:-}}" ]; then
    TERM=dumb
fi
export TERM
"#
    );
    if settings.noisy {
        // As a provider's MOTD does, whatever TERM says.
        script.push_str(&format!(
            r#"printf '\033[1;36m%s\033[0m\n' '=== {BANNER} ==='
printf '\033[33m%s\033[0m \033[2m%s\033[0m\n' 'GPU 0: none' '(exec and SFTP are disabled here)'
printf '\033[32m%s\033[0m\n\n' 'Last login: never'
"#
        ));
    }
    script.push_str(&match shell {
        // A login bash reads ~/.bash_profile and nothing the environment names, so its home
        // is the startup directory until that profile puts the session's home back (its
        // history file stays there too).
        LoginShell::Bash => {
            format!("export XFER_LOGIN_HOME=\"$HOME\"\nexport HOME=\"{startup}/bash\"\n")
        }
        // An interactive dash reads the file $ENV names, after the login's profile.
        LoginShell::Dash if settings.noisy => format!("export ENV=\"{startup}/dash.env\"\n"),
        LoginShell::Dash => String::new(),
        // Also keeps zsh's new-user menu away: it appears when no startup file exists.
        LoginShell::Zsh => format!("export ZDOTDIR=\"{startup}/zsh\"\n"),
        // Its configuration, universal variables and history.
        LoginShell::Fish => format!(
            "export XDG_CONFIG_HOME=\"{startup}/fish-config\" \
             XDG_DATA_HOME=\"{startup}/fish-data\"\n"
        ),
    });
    script.push_str(&format!(
        "exec -a -{} {}\n",
        shell.name(),
        shell.path().display()
    ));
    script
}

/// The startup files of `shell` under `startup`: the prompt when noisy, and otherwise only what
/// keeps the shell from reading or writing a real home's files.
fn write_startup_files(startup: &Path, shell: LoginShell, noisy: bool) {
    let write = |relative: &str, text: &str| {
        let path = startup.join(relative);
        fs::create_dir_all(path.parent().expect("under the startup directory"))
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", path.display()));
        fs::write(&path, text)
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
    };
    fs::create_dir_all(startup)
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", startup.display()));
    match shell {
        LoginShell::Bash => {
            let mut profile = String::from(
                "# Written by the xfer test harness.\n\
                 HOME=$XFER_LOGIN_HOME\nexport HOME\nunset XFER_LOGIN_HOME\n",
            );
            if noisy {
                // A window title, then user@pod in bold green and the directory in blue.
                profile.push_str(&format!(
                    "PS1='\\[\\e]0;\\u@{PROMPT_HOST}: \\w\\a\\]\\[\\e[1;32m\\]\\u@{PROMPT_HOST}\\[\\e[0m\\]:\\[\\e[1;34m\\]\\w\\[\\e[0m\\]\\$ '\n"
                ));
            }
            write("bash/.bash_profile", &profile);
        }
        LoginShell::Dash => {
            if noisy {
                write(
                    "dash.env",
                    &format!(
                        "# Written by the xfer test harness.\n\
                         escape=$(printf '\\033')\n\
                         PS1=\"${{escape}}]0;$(id -un)@{PROMPT_HOST}$(printf '\\007')${{escape}}[1;32m$(id -un)@{PROMPT_HOST}${{escape}}[0m \\$ \"\n\
                         unset escape\n"
                    ),
                );
            }
        }
        LoginShell::Zsh => {
            let mut zshrc = String::from("# Written by the xfer test harness.\n");
            if noisy {
                zshrc.push_str(&format!(
                    "PROMPT='%B%F{{green}}%n@{PROMPT_HOST}%f%b:%F{{blue}}%~%f%# '\n"
                ));
            }
            write("zsh/.zshrc", &zshrc);
        }
        LoginShell::Fish => {
            let mut config = String::from("# Written by the xfer test harness.\n");
            if noisy {
                // Escapes of its own: fish's set_color prints nothing when TERM is dumb.
                config.push_str(&format!(
                    "function fish_prompt\n    \
                     printf '\\e[1;32m%s@{PROMPT_HOST}\\e[0m:\\e[1;34m%s\\e[0m> ' $USER (prompt_pwd)\n\
                     end\n"
                ));
            }
            write("fish-config/fish/config.fish", &config);
            // Present, so that a first start does not leave a process behind generating
            // completions from every man page into it, after the session and the fixture end.
            let completions = startup.join("fish-data/fish/generated_completions");
            fs::create_dir_all(&completions)
                .unwrap_or_else(|error| panic!("cannot create {}: {error}", completions.display()));
        }
    }
    for entry in walkdir::WalkDir::new(startup) {
        let entry = entry.unwrap_or_else(|error| panic!("cannot walk the startup files: {error}"));
        set_mode(
            entry.path(),
            if entry.file_type().is_dir() {
                0o755
            } else {
                0o644
            },
        );
    }
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|error| panic!("cannot chmod {}: {error}", path.display()));
}
