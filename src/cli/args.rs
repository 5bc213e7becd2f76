//! The raw command line, as clap parses it. Nothing here is validated beyond its syntax; the
//! `settings` module turns it into what the library takes.

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;
use xfer::ssh::config::CommandLineArgument;

#[derive(Debug, Parser)]
#[command(
    name = "xfer",
    version,
    about = "Move large files and secrets to and from remote machines over SSH, resumably",
    long_about = None,
    after_help = "Exit codes: 0 done; 1 partly done (re-run the same command to resume); 2 usage or config; \
                  3 connection; 4 authentication or host key; 5 local I/O; 6 remote error; 7 a check failed."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy a remote file or tree here: xfer pull HOST:PATH LOCAL; from several hosts
    /// (gpu-[1-8]:PATH, or HOST:PATH...) into LOCAL/HOST. Re-run to resume.
    Pull(TransferArgs),
    /// Copy a local file or tree to hosts: xfer push LOCAL HOST:PATH [HOST:PATH...], or
    /// gpu-[1-8]:PATH. Re-run to resume.
    Push(TransferArgs),
    /// Put a token or a netrc stanza into a private file on remote hosts, leaking it nowhere.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Check that hosts are reachable and usable: config, auth, host key, latency, clock, disk.
    Doctor(DoctorArgs),
    /// Remove a host's keys from known_hosts (after a machine was re-created), keeping a backup.
    ForgetHost(ForgetHostArgs),
    /// Serve the xfer agent protocol on stdin/stdout. xfer starts this on remote hosts itself.
    #[command(hide = true)]
    Agent(AgentArgs),
}

/// `xfer agent`: nothing a user sets.
#[derive(Debug, Args, Clone, Default)]
pub struct AgentArgs {
    /// Speak protocol versions up to this one only, as an older agent would (for tests).
    #[arg(long, hide = true, value_name = "VERSION")]
    pub protocol_max: Option<u16>,
}

/// Options every command that reaches a host takes, with ssh's meaning. As for ssh, `-p`, `-i`,
/// `-J` and `-o` count in the order given (the first value of a setting wins), so clap only
/// collects them; [`Cli::parse_in_order`] puts them in `in_order`.
#[derive(Debug, Args, Clone, Default)]
pub struct ConnectionArgs {
    /// Read this ssh_config instead of ~/.ssh/config and /etc/ssh/ssh_config (as ssh -F;
    /// -F none or -F /dev/null: no file).
    #[arg(short = 'F', value_name = "CONFIG")]
    pub config: Option<PathBuf>,
    /// Identity (private key) file, tried before those of the config (as ssh -i). Repeatable.
    #[arg(short = 'i', value_name = "IDENTITY")]
    pub identity: Vec<String>,
    /// Port to connect to, or a service name (as ssh -p; the first -p or -o Port wins).
    #[arg(short = 'p', value_name = "PORT")]
    pub port: Vec<String>,
    /// Jump hosts, comma separated (as ssh -J).
    #[arg(short = 'J', value_name = "[USER@]HOST[:PORT][,...]")]
    pub jump: Vec<String>,
    /// An ssh_config option, as ssh -o (e.g. -o StrictHostKeyChecking=accept-new). Repeatable;
    /// the first value of a setting wins, as in ssh.
    #[arg(short = 'o', value_name = "KEY=VALUE")]
    pub option: Vec<String>,
    /// Run this ssh command for every connection instead of xfer's own SSH client (as rsync
    /// -e): for logins only ssh makes (Kerberos, FIDO keys, PKCS#11, ControlMaster). -F, -p,
    /// -i, -J and -o are passed on to it. Default: $XFER_SSH_COMMAND.
    #[arg(short = 'e', long = "ssh-command", value_name = "COMMAND")]
    pub ssh_command: Option<String>,
    /// `-p`, `-i`, `-J` and `-o` in command-line order.
    #[arg(skip)]
    pub in_order: Vec<CommandLineArgument>,
}

impl Cli {
    /// Parses the command line (exiting with clap's message on an error, as `parse` does) and
    /// records the order of the connection arguments, which clap's fields lose.
    pub fn parse_in_order() -> Cli {
        let matches = Cli::command().get_matches();
        Cli::from_matches_in_order(&matches).unwrap_or_else(|error| error.exit())
    }

    fn from_matches_in_order(matches: &ArgMatches) -> Result<Cli, clap::Error> {
        let mut cli = Cli::from_arg_matches(matches)?;
        let mut leaf = matches;
        while let Some((_, inner)) = leaf.subcommand() {
            leaf = inner;
        }
        if let Some(connection) = cli.command.connection_mut() {
            connection.in_order = connection_arguments_in_order(leaf);
        }
        Ok(cli)
    }
}

impl Command {
    fn connection_mut(&mut self) -> Option<&mut ConnectionArgs> {
        match self {
            Command::Pull(args) | Command::Push(args) => Some(&mut args.connection),
            Command::Doctor(args) => Some(&mut args.connection),
            Command::ForgetHost(args) => Some(&mut args.connection),
            Command::Secret(SecretCommand::Push(args)) => Some(&mut args.connection),
            Command::Secret(SecretCommand::Check(args)) => Some(&mut args.connection),
            Command::Agent(_) => None,
        }
    }
}

/// The values of `-p`, `-i`, `-J` and `-o`, merged by their position on the command line.
fn connection_arguments_in_order(matches: &ArgMatches) -> Vec<CommandLineArgument> {
    type Make = fn(String) -> CommandLineArgument;
    let kinds: [(&str, Make); 4] = [
        ("port", CommandLineArgument::Port),
        ("identity", CommandLineArgument::Identity),
        ("jump", CommandLineArgument::Jump),
        ("option", CommandLineArgument::Option),
    ];
    let mut positioned = Vec::new();
    for (id, make) in kinds {
        let (Ok(Some(values)), Some(indices)) =
            (matches.try_get_many::<String>(id), matches.indices_of(id))
        else {
            continue;
        };
        for (value, index) in values.zip(indices) {
            positioned.push((index, make(value.clone())));
        }
    }
    positioned.sort_by_key(|(index, _)| *index);
    positioned
        .into_iter()
        .map(|(_, argument)| argument)
        .collect()
}

#[derive(Debug, Args, Clone, Default)]
pub struct OutputArgs {
    /// More detail on stderr; repeat for more (-vvv traces the SSH protocol).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print only errors.
    #[arg(short = 'q', long = "quiet", conflicts_with = "verbose")]
    pub quiet: bool,
}

/// Which hosts a command that takes several works on, and how many at once.
#[derive(Debug, Args, Clone)]
pub struct HostsArgs {
    /// Hosts from this file, one per line (lists allowed, # comments; - reads stdin).
    #[arg(long = "hosts", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Hosts worked on at once.
    #[arg(long, value_name = "N", default_value_t = xfer::fleet::DEFAULT_HOSTS_AT_ONCE)]
    pub hosts_at_once: usize,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Hosts to check: ssh_config aliases, HOST or USER@HOST, or lists (gpu-[1-8,10]).
    #[arg(value_name = "HOST", required_unless_present = "file")]
    pub hosts: Vec<String>,
    #[command(flatten)]
    pub host_list: HostsArgs,
    /// Measure free disk space at this remote path (default: the login directory).
    #[arg(long, value_name = "REMOTE_PATH")]
    pub path: Option<String>,
    /// Print the reports as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ForgetHostArgs {
    /// The host whose keys to forget: an ssh_config alias, HOST or USER@HOST.
    #[arg(value_name = "HOST")]
    pub host: String,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct TransferArgs {
    /// pull: HOST:PATH... then a local path; push: a local path then HOST:PATH.... The
    /// destination becomes the copy itself (a tree's root or the file); a file sent onto an
    /// existing directory goes inside it. HOST may be a list (gpu-[1-8,10], a,b); from several
    /// hosts a pull writes LOCAL/HOST. With --hosts, the remote side is a path alone.
    #[arg(value_name = "LOCATION", required = true, num_args = 2..)]
    pub locations: Vec<String>,
    /// Hosts from this file, one per line (lists allowed, # comments; - reads stdin).
    #[arg(long, value_name = "FILE")]
    pub hosts: Option<PathBuf>,
    /// Hosts transferred at once when several are named; each opens up to -j connections.
    #[arg(long, value_name = "N", default_value_t = xfer::fleet::DEFAULT_HOSTS_AT_ONCE)]
    pub hosts_at_once: usize,
    /// Print what would be transferred and why, and change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Print a machine-readable summary (or plan, with --dry-run) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Do not ask the remote for whole-file digests (b3sum/sha256sum over exec).
    #[arg(long)]
    pub no_remote_digest: bool,
    /// Push: convert shell scripts with CRLF (Windows) line endings to LF on the way (without
    /// it they are sent as they are, with a warning).
    #[arg(long)]
    pub fix_crlf: bool,
    /// Use SFTP only: never start (or upload) the xfer agent on the host.
    #[arg(long, conflicts_with = "agent")]
    pub no_agent: bool,
    /// Run the agent from this remote executable instead of xfer's cached copy of itself.
    #[arg(long, value_name = "REMOTE_PATH")]
    pub agent: Option<String>,
    /// Directories transferred at once, each over its own SSH connection (on a far link, a round
    /// trip of 20 ms or more, a large file may borrow as many more).
    #[arg(short = 'j', long, value_name = "N", default_value_t = 4)]
    pub jobs: usize,
    /// Further attempts of a directory after a transient failure (dropped link, stall, timeout).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub retries: u32,
    /// Seconds before the first retry; each further retry waits twice as long (with jitter).
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub retry_wait: f64,
    /// Verify files that look up to date (same size and mtime) by whole-file hash on both sides.
    #[arg(short = 'c', long)]
    pub checksum: bool,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Write the secret to a 0600 file on each host (atomically, never on a shared filesystem).
    Push(SecretPushArgs),
    /// Check each host's copy: a regular 0600 file of yours, on a local disk, with the same
    /// content (compared by hash; the value is never sent back).
    Check(SecretCheckArgs),
}

/// Where the secret comes from: exactly one. There is deliberately no option that takes the
/// value itself, which would put it in the shell history and in `ps`.
#[derive(Debug, Args, Clone)]
#[group(required = true, multiple = false)]
pub struct SecretSourceArgs {
    /// The value of this environment variable.
    #[arg(long, value_name = "VAR")]
    pub from_env: Option<String>,
    /// This machine's stanza (login, password, account) from the local netrc.
    #[arg(long, value_name = "MACHINE")]
    pub from_netrc: Option<String>,
    /// An entry of the system keyring (Secret Service, or the kernel keyutils on a headless box;
    /// the login keychain on macOS).
    #[arg(long, value_name = "SERVICE[/USER]")]
    pub from_keyring: Option<String>,
    /// Read the value from standard input (prompted without echo on a terminal).
    #[arg(long)]
    pub stdin: bool,
}

#[derive(Debug, Args)]
pub struct SecretPushArgs {
    #[command(flatten)]
    pub source: SecretSourceArgs,
    /// The netrc file to read with --from-netrc (default $NETRC, else ~/.netrc).
    #[arg(long, value_name = "FILE", requires = "from_netrc")]
    pub netrc: Option<std::path::PathBuf>,
    /// Remote path (default ~/.config/xfer/secrets/NAME for a value, ~/.netrc for a stanza).
    #[arg(long, value_name = "REMOTE_PATH")]
    pub to: Option<String>,
    /// Write even onto a shared, network or unrecognised filesystem (NFS, SMB, 9p, FUSE, Ceph,
    /// Lustre, virtiofs, ...).
    #[arg(long)]
    pub allow_shared_fs: bool,
    /// Write even into a directory that another account can change (writable by group or
    /// others without the sticky bit, or owned by another user), where it could swap the file.
    #[arg(long)]
    pub allow_writable_dir: bool,
    /// Hosts to write to (lists allowed: gpu-[1-8,10]).
    #[arg(value_name = "HOST", required_unless_present = "file")]
    pub hosts: Vec<String>,
    #[command(flatten)]
    pub host_list: HostsArgs,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct SecretCheckArgs {
    #[command(flatten)]
    pub source: SecretSourceArgs,
    /// The netrc file to read with --from-netrc (default $NETRC, else ~/.netrc).
    #[arg(long, value_name = "FILE", requires = "from_netrc")]
    pub netrc: Option<std::path::PathBuf>,
    /// Remote path to check (the same default as push).
    #[arg(long, value_name = "REMOTE_PATH")]
    pub to: Option<String>,
    /// Hosts to check (lists allowed: gpu-[1-8,10]).
    #[arg(value_name = "HOST", required_unless_present = "file")]
    pub hosts: Vec<String>,
    #[command(flatten)]
    pub host_list: HostsArgs,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_order(arguments: &[&str]) -> Vec<CommandLineArgument> {
        let matches = Cli::command()
            .try_get_matches_from(arguments)
            .expect("parses");
        let mut cli = Cli::from_matches_in_order(&matches).expect("parses");
        cli.command
            .connection_mut()
            .map(|connection| connection.in_order.clone())
            .unwrap_or_default()
    }

    #[test]
    fn connection_arguments_keep_their_order() {
        use CommandLineArgument::{Identity, Jump, Option, Port};
        assert_eq!(
            in_order(&[
                "xfer",
                "doctor",
                "-p",
                "2042",
                "-oPort=2041",
                "-i",
                "k1",
                "-J",
                "j",
                "-p2043",
                "-i",
                "k2",
                "host",
            ]),
            vec![
                Port("2042".into()),
                Option("Port=2041".into()),
                Identity("k1".into()),
                Jump("j".into()),
                Port("2043".into()),
                Identity("k2".into()),
            ]
        );
        assert_eq!(
            in_order(&["xfer", "pull", "-o", "Port=1", "h:/x", "./x", "-p", "2"]),
            vec![Option("Port=1".into()), Port("2".into())]
        );
        assert_eq!(
            in_order(&[
                "xfer", "secret", "check", "--stdin", "-J", "a", "-J", "b", "h"
            ]),
            vec![Jump("a".into()), Jump("b".into())]
        );
    }
}
