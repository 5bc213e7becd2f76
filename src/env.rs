//! Every environment variable xfer reads, declared in one place.
//!
//! Reading the environment anywhere else is a bug: this list is what the README documents.

/// The ssh-agent socket, as for ssh.
pub const SSH_AUTH_SOCK: &str = "SSH_AUTH_SOCK";
/// Where xfer keeps its state (journals, completion records); default `~/.local/state/xfer`.
pub const XFER_STATE_DIR: &str = "XFER_STATE_DIR";
/// Base of the state directory when XFER_STATE_DIR is unset (XDG Base Directory spec).
pub const XDG_STATE_HOME: &str = "XDG_STATE_HOME";
/// The home directory, for the default state directory.
pub const HOME: &str = "HOME";
/// Log filter for `-v` output, in `tracing` syntax (e.g. `xfer=trace`); overrides `-v`.
pub const XFER_LOG: &str = "XFER_LOG";
/// Seconds the remote xfer agent may stay silent while answers are due before its session is
/// given up (before the time allowed for the bytes its requests cover); default 60.
pub const XFER_AGENT_TIMEOUT: &str = "XFER_AGENT_TIMEOUT";
/// MiB a transfer may hold for the names and paths of what it plans at once (default 160,
/// which keeps xfer under 256 MiB whatever a server lists); raise it for a single directory of
/// more than half a million files.
pub const XFER_PLAN_MEMORY: &str = "XFER_PLAN_MEMORY";
/// The `ssh` binary used by tests and `xfer doctor --compare`; never needed to transfer.
pub const XFER_SSH_BINARY: &str = "XFER_SSH_BINARY";
/// The ssh command every connection runs when `--ssh-command` is not given (as rsync's
/// RSYNC_RSH); unset, xfer uses its own SSH client.
pub const XFER_SSH_COMMAND: &str = "XFER_SSH_COMMAND";
/// Where xfer's own ssh master keeps its socket (with `--ssh-command`), when short enough for
/// a socket path; `/tmp` otherwise.
pub const TMPDIR: &str = "TMPDIR";
/// The agent bundle: the directory with xfer agents for other platforms than xfer's own and
/// their `MANIFEST.b3`; default `../lib/xfer/agents` from the directory holding xfer.
pub const XFER_AGENT_BUNDLE: &str = "XFER_AGENT_BUNDLE";
/// The netrc file to read stanzas from when `--netrc` is not given (as curl and Python do).
pub const NETRC: &str = "NETRC";
/// Whether a desktop session bus (and so perhaps a Secret Service keyring) is reachable.
pub const DBUS_SESSION_BUS_ADDRESS: &str = "DBUS_SESSION_BUS_ADDRESS";
/// Disables colour, as everywhere.
pub const NO_COLOR: &str = "NO_COLOR";

/// Reads a variable, treating an empty value as unset.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// Reads a variable as an OS path, treating an empty value as unset.
pub fn var_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os(name)
        .filter(|value| !value.is_empty())
        .map(std::path::PathBuf::from)
}

/// Reads a variable the user named on the command line (`xfer secret push --from-env NAME`):
/// the one kind of variable not declared above. Unset is None; an empty value is returned as
/// is, so the caller can say "set but empty".
pub fn user_named(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name)
}
