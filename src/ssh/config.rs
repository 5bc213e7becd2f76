//! Resolving a host from OpenSSH client configuration exactly as `ssh -G host` does (OpenSSH
//! 9.2p1 as shipped by Debian 12, security backports included). This module owns reading
//! `~/.ssh/config` and `/etc/ssh/ssh_config` (or the `-F` file), `Host` and `Match` blocks,
//! `Include`, first-value-wins, command-line overrides, defaults, and `~`, `%` and `${VAR}`
//! expansion. It produces a [`HostConfig`]; it never connects, runs commands or writes files.
//!
//! Where xfer deliberately differs from ssh:
//! - ssh validates the value of every keyword it knows; xfer validates only the directives it
//!   reads. Like ssh, it refuses a keyword ssh does not know (a typo, or a byte order mark before
//!   the first one) unless `IgnoreUnknown` lists it, in files and in `-o` alike, so that a block
//!   under a mistyped `Host` never applies to every host.
//! - `Match exec` is refused (an error naming the file and line) wherever ssh would run the
//!   command; where ssh would skip it because an earlier criterion failed, so does xfer.
//! - No DNS canonicalisation: `CanonicalizeHostname` only causes the second ("final") reading of
//!   the configuration, as in ssh; `CanonicalDomains` suffixes are never tried.
//! - A leading `~` in an `Include` glob is the passwd home directory (`LocalContext::home`);
//!   glob(3), which ssh uses, would prefer `$HOME`.
//! - `%` tokens in `ProxyCommand` are checked when resolving, not when connecting.
//! - A `${VAR}` whose value is empty counts as unset (an error); ssh expands it to nothing.
//! - Debian accepts a group-writable configuration file when the group is the owner's private
//!   group; xfer checks that with the group entry only, not by enumerating every user.
//! - Scoped IPv6 literals (`fe80::1%eth0`) are kept as written rather than canonicalised.
//! - Files are read only if they are regular files, directories (read as empty, as ssh ends up
//!   doing) or `/dev/null`, of at most 16 MiB; a FIFO or device would block or never end.

use std::fmt::Write as _;
use std::io::Read as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ssh::glob;
use crate::ssh::pattern::{self, Case, ListMatch, match_hostname};

/// The system-wide configuration read after the user's, as ssh does without `-F`.
const SYSTEM_CONFIG: &str = "/etc/ssh/ssh_config";
/// Where relative `Include` paths of the system configuration live (ssh's `SSHDIR`).
const SYSTEM_CONFIG_DIRECTORY: &str = "/etc/ssh";
/// ssh's `READCONF_MAX_DEPTH`: deeper nesting means an `Include` loop.
const MAX_INCLUDE_DEPTH: u32 = 16;
/// ssh's `SSH_MAX_IDENTITY_FILES` and `SSH_MAX_CERTIFICATE_FILES`.
const MAX_KEY_FILES: usize = 100;
/// ssh's `SSH_MAX_HOSTS_FILES`.
const MAX_KNOWN_HOSTS_FILES: usize = 32;
/// No real configuration file comes near this size.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Bounds the work of glob fan-out combined with nesting (16 levels of `Include *`).
const MAX_TOTAL_BYTES: u64 = 64 * 1024 * 1024;
const MAX_FILES_READ: usize = 4096;
const MAX_GLOB_MATCHES: usize = 4096;
/// glibc's `PATH_MAX`, which bounds ssh's tilde expansion.
const PATH_MAX: usize = 4096;
/// Whitespace as ssh's configuration tokenizer sees it.
const WHITESPACE: &[u8] = b" \t\r\n";
/// The default identities, in ssh's order (`fill_default_options`).
const DEFAULT_IDENTITY_FILES: [&str; 7] = [
    "~/.ssh/id_rsa",
    "~/.ssh/id_ecdsa",
    "~/.ssh/id_ecdsa_sk",
    "~/.ssh/id_ed25519",
    "~/.ssh/id_ed25519_sk",
    "~/.ssh/id_xmss",
    "~/.ssh/id_dsa",
];
const DEFAULT_USER_KNOWN_HOSTS: [&str; 2] = ["~/.ssh/known_hosts", "~/.ssh/known_hosts2"];
const DEFAULT_GLOBAL_KNOWN_HOSTS: [&str; 2] =
    ["/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"];
/// The authentication methods in the order ssh tries them when `PreferredAuthentications` is
/// unset (sshconnect2.c's `authmethods` table).
pub const DEFAULT_AUTHENTICATION_ORDER: [&str; 5] = [
    "gssapi-with-mic",
    "hostbased",
    "publickey",
    "keyboard-interactive",
    "password",
];
const CONFIG_HINT: &str =
    "fix or remove that line; OpenSSH refuses it too (`ssh -G <host>` shows the same complaint)";

/// The local account and machine that `~` and `%d %u %i %l %L` refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalContext {
    pub user: String,
    pub uid: u32,
    pub home: PathBuf,
    pub hostname: String,
}

impl LocalContext {
    /// The current user from the passwd database (not `$HOME`, exactly as ssh does) and the
    /// machine's host name.
    pub fn current() -> Result<Self> {
        let uid = nix::unistd::getuid();
        let entry = nix::unistd::User::from_uid(uid)
            .map_err(|errno| {
                Error::config(format!(
                    "cannot look up user id {uid} in the passwd database"
                ))
                .with_source(std::io::Error::from(errno))
            })?
            .ok_or_else(|| {
                Error::config(format!("no user exists for uid {uid}"))
                    .with_hint("xfer, like ssh, needs a passwd entry for the user running it")
            })?;
        let hostname = nix::unistd::gethostname().map_err(|errno| {
            Error::config("cannot read this machine's host name")
                .with_source(std::io::Error::from(errno))
        })?;
        Ok(LocalContext {
            user: entry.name,
            uid: uid.as_raw(),
            home: entry.dir,
            hostname: hostname.to_string_lossy().into_owned(),
        })
    }
}

/// How unknown host keys are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrictHostKeyChecking {
    Yes,
    AcceptNew,
    No,
    Ask,
}

/// What the command line says; it takes precedence like ssh's options.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// From `user@host`: it counts after every argument, as `user@host` after ssh's options.
    pub user: Option<String>,
    /// `-p`, `-i`, `-J` and `-o` in the order they were given. ssh applies them in that order
    /// before reading any file, and the first value of each setting wins (`-p 2042 -o Port=1`
    /// is port 2042, `-o Port=1 -p 2042` port 1); `-i` files accumulate in order.
    pub arguments: Vec<CommandLineArgument>,
}

/// One of the command-line arguments that set ssh_config options, raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLineArgument {
    /// `-p PORT`: a number or a service name, as for ssh.
    Port(String),
    /// `-i FILE`: tried before the configured identity files.
    Identity(String),
    /// `-J [USER@]HOST[:PORT][,...]` or `-J none`.
    Jump(String),
    /// `-o Key=Value` or `-o 'Key Value'`.
    Option(String),
}

/// Which configuration files to read.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// `~/.ssh/config`, then `/etc/ssh/ssh_config`.
    Default,
    /// `-F path`: only that file; `-F none` reads nothing.
    File(PathBuf),
}

/// One hop of a `ProxyJump` chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpHost {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

/// Everything xfer uses about a host, resolved as `ssh -G` resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// The host as given (`%n`).
    pub original_host: String,
    /// `HostName` with `%h` expanded, lowercased unless it is an address (`%h`).
    pub hostname: String,
    pub port: u16,
    pub user: String,
    /// Expanded (`~`, `%C %d %h %i %k %L %l %n %p %r %u %%`, `${VAR}`), in ssh's order, without
    /// `none` entries; the defaults when no `IdentityFile` or `-i` was given.
    pub identity_files: Vec<PathBuf>,
    /// True when no `IdentityFile`/`-i` was given: authentication skips missing defaults.
    pub identity_files_are_defaults: bool,
    pub identities_only: bool,
    /// Expanded like `identity_files`.
    pub certificate_files: Vec<PathBuf>,
    /// Empty when there is none; otherwise the hops in the order they are reached.
    pub proxy_jump: Vec<JumpHost>,
    /// `None` when unset, `none`, or superseded by `ProxyJump`; raw text otherwise (except that
    /// `%k` is already replaced when `HostKeyAlias` is set). See [`Self::expand_proxy_command`].
    pub proxy_command: Option<String>,
    /// Seconds, 0 = off; Debian's ssh defaults it to 300 when `BatchMode` is on.
    pub server_alive_interval: u64,
    pub server_alive_count_max: u32,
    /// Seconds; `None` = unset.
    pub connect_timeout: Option<u64>,
    /// Expanded like `identity_files`; empty for `none`.
    pub user_known_hosts_files: Vec<PathBuf>,
    /// `~` expanded (ssh expands no `%` tokens here); empty for `none`.
    pub global_known_hosts_files: Vec<PathBuf>,
    pub strict_host_key_checking: StrictHostKeyChecking,
    pub batch_mode: bool,
    /// `PasswordAuthentication`: whether a password may be asked for and sent.
    pub password_authentication: bool,
    /// `KbdInteractiveAuthentication` (or its older names `ChallengeResponseAuthentication`,
    /// `SkeyAuthentication`, `TisAuthentication`): whether keyboard-interactive prompts may be
    /// answered.
    pub keyboard_interactive_authentication: bool,
    /// `PreferredAuthentications` as written (a comma-separated list of method names); `None`
    /// when unset, which means ssh's own order. See [`Self::authentication_order`].
    pub preferred_authentications: Option<String>,
    /// `NumberOfPasswordPrompts`: how many times a password is asked for, and how many
    /// keyboard-interactive exchanges are started, before the method is given up.
    pub number_of_password_prompts: u32,
    /// `IdentityAgent` as ssh prints it: `~`, `%` tokens and `${VAR}` expanded; the special
    /// values `none`, `SSH_AUTH_SOCK` and `$VAR` are left verbatim for the agent code.
    pub identity_agent: Option<String>,
    pub hash_known_hosts: bool,
    pub tcp_keepalive: bool,
    /// `HostKeyAlias`, lowercased as ssh lowercases it: the name the host's keys are looked up,
    /// recorded and forgotten under, instead of the host name and port.
    pub host_key_alias: Option<String>,
    /// The xfer arguments that reached this host, for advice to repeat: `-F` when one was
    /// given, the `-p`, `-i`, `-J` and `-o` of the command line in their order, and the host
    /// as given (`user@` included when the user came with it). See [`Self::advice`].
    pub command_line: Vec<String>,
}

impl HostConfig {
    /// A command a person can paste to act on this host: `xfer SUBCOMMAND`, the `first`
    /// arguments (before the others, so that an `-o` there wins over the same option given
    /// again, as for ssh), then [`Self::command_line`], each quoted for a POSIX shell.
    pub fn advice(&self, subcommand: &str, first: &[&str]) -> String {
        let mut words = vec!["xfer".to_string(), subcommand.to_string()];
        words.extend(first.iter().map(|word| word.to_string()));
        words.extend(self.command_line.iter().cloned());
        words
            .iter()
            .map(|word| shell_word(word))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The name known_hosts files hold this host's keys under, as ssh forms it.
    pub fn host_key_name(&self) -> String {
        crate::ssh::known_hosts::host_key_name(
            &self.hostname,
            self.port,
            self.host_key_alias.as_deref(),
        )
    }

    /// The authentication methods to try, in order: `PreferredAuthentications`, or ssh's default
    /// order when it is unset. Names are kept as written; ssh matches them exactly.
    pub fn authentication_order(&self) -> Vec<&str> {
        match &self.preferred_authentications {
            Some(list) => list.split(',').filter(|name| !name.is_empty()).collect(),
            None => DEFAULT_AUTHENTICATION_ORDER.to_vec(),
        }
    }

    /// The proxy command with `%h %k %n %p %r %%` expanded as ssh does before running it.
    /// ssh runs the result as `exec <command>` through `$SHELL -c` (falling back to `/bin/sh`).
    pub fn expand_proxy_command(&self) -> Option<String> {
        let command = self.proxy_command.as_deref()?;
        let port = self.port.to_string();
        let tokens = [
            ('h', self.hostname.as_str()),
            ('k', self.original_host.as_str()),
            ('n', self.original_host.as_str()),
            ('p', port.as_str()),
            ('r', self.user.as_str()),
        ];
        // The tokens were checked when resolving, so this cannot fail; keep the text if it does.
        Some(percent_expand(command, &tokens, false).unwrap_or_else(|_| command.to_string()))
    }
}

/// Resolves `host` as `ssh -G [-F file] [overrides] host` would.
pub fn resolve(
    host: &str,
    overrides: &Overrides,
    source: &ConfigSource,
    local: &LocalContext,
) -> Result<HostConfig> {
    resolve_with_system_config(host, overrides, source, local, Path::new(SYSTEM_CONFIG))
}

/// [`resolve`] with another system-wide configuration file, so that tests need not depend on
/// the machine's `/etc/ssh/ssh_config`.
#[doc(hidden)]
pub fn resolve_with_system_config(
    host: &str,
    overrides: &Overrides,
    source: &ConfigSource,
    local: &LocalContext,
    system_config: &Path,
) -> Result<HostConfig> {
    let input = match source {
        ConfigSource::Default => Input::Default { system_config },
        ConfigSource::File(path) if is_none_path(path) => Input::Nothing,
        ConfigSource::File(path) => Input::File(path),
    };
    let mut config = Resolver::new(host, local)?.run(overrides, &input)?;
    config.command_line = command_line(Some(source), overrides, host);
    Ok(config)
}

/// Resolves `host` from configuration text held in memory, read as a `-F` file called `name`
/// would be. `Include` lines still read the files they name. This is the fuzzing entry point.
pub fn resolve_from_text(
    host: &str,
    overrides: &Overrides,
    name: &str,
    text: &str,
    local: &LocalContext,
) -> Result<HostConfig> {
    let mut config = Resolver::new(host, local)?.run(overrides, &Input::Text { name, text })?;
    config.command_line = command_line(None, overrides, host);
    Ok(config)
}

/// The arguments that give `xfer` this source, these overrides and this host.
fn command_line(source: Option<&ConfigSource>, overrides: &Overrides, host: &str) -> Vec<String> {
    let mut words = argument_words(source, overrides);
    // As xfer's own host arguments are written: IPv6 addresses in brackets.
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    words.push(match &overrides.user {
        Some(user) => format!("{user}@{host}"),
        None => host,
    });
    words
}

/// `-F` (for a file `source`), then `-p`, `-i`, `-J` and `-o` in the order given: the
/// arguments that carry the command line's choices, as ssh takes them too.
pub fn argument_words(source: Option<&ConfigSource>, overrides: &Overrides) -> Vec<String> {
    let mut words = Vec::new();
    if let Some(ConfigSource::File(path)) = source {
        words.push("-F".to_string());
        words.push(path.display().to_string());
    }
    for argument in &overrides.arguments {
        let (flag, value) = match argument {
            CommandLineArgument::Port(value) => ("-p", value),
            CommandLineArgument::Identity(value) => ("-i", value),
            CommandLineArgument::Jump(value) => ("-J", value),
            CommandLineArgument::Option(value) => ("-o", value),
        };
        words.push(flag.to_string());
        words.push(value.clone());
    }
    words
}

/// `word` as a POSIX shell reads it back: as it is when it holds nothing the shell would
/// interpret, else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&byte));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Parses a `-J` argument: `[user@]host[:port]`, `ssh://[user@]host[:port]` and `[v6addr]:port`
/// hops separated by commas, or `none` (an empty chain). Host and user names are checked for
/// shell metacharacters as ssh checks command-line ones.
pub fn parse_jump_hosts(spec: &str) -> Result<Vec<JumpHost>> {
    if spec.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let chain = jump_chain_text(spec);
    let mut hops = Vec::new();
    for segment in chain.split(',') {
        let hop = parse_jump_segment(segment, true).map_err(|why| {
            Error::usage(format!("invalid jump host \"{spec}\": {why}")).with_hint(
                "use [user@]host[:port] hops separated by commas, e.g. -J admin@bastion:2222,inner",
            )
        })?;
        hops.push(hop.into_jump_host());
    }
    Ok(hops)
}

// ---------------------------------------------------------------------------------------------
// Resolution state.

/// Where configuration comes from for one resolution.
enum Input<'a> {
    Default { system_config: &'a Path },
    File(&'a Path),
    Nothing,
    Text { name: &'a str, text: &'a str },
}

/// Which configuration a key file came from. ssh keeps the same path twice when it comes from
/// two of these (its `userprovided` flag), so duplicates are only dropped within one origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyOrigin {
    SystemConfig,
    IdentityOption,
    UserConfig,
}

#[derive(Debug, Clone)]
struct KeyFile {
    path: String,
    origin: KeyOrigin,
}

/// ssh's jump host fields: `port` is -1 when unset and 0 for `ProxyJump none`.
#[derive(Debug, Clone)]
struct Jump {
    user: Option<String>,
    host: String,
    port: i32,
    /// The hops before the last, as written.
    extra: Option<String>,
}

/// The values gathered so far; `None` means unset, so the first value found wins.
#[derive(Debug, Default)]
struct Options {
    hostname: Option<String>,
    host_key_alias: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    identity_files: Vec<KeyFile>,
    certificate_files: Vec<KeyFile>,
    identities_only: Option<bool>,
    proxy_command: Option<String>,
    jump: Option<Jump>,
    server_alive_interval: Option<u32>,
    server_alive_count_max: Option<u32>,
    connect_timeout: Option<u32>,
    user_known_hosts: Vec<String>,
    global_known_hosts: Vec<String>,
    strict_host_key_checking: Option<StrictHostKeyChecking>,
    batch_mode: Option<bool>,
    password_authentication: Option<bool>,
    keyboard_interactive_authentication: Option<bool>,
    preferred_authentications: Option<String>,
    number_of_password_prompts: Option<u32>,
    identity_agent: Option<String>,
    hash_known_hosts: Option<bool>,
    tcp_keepalive: Option<bool>,
    canonicalize_hostname: Option<bool>,
    /// `IgnoreUnknown`: patterns of keywords that are skipped instead of refused.
    ignore_unknown: Option<String>,
}

/// How a file is read (ssh's `SSHCONF_*` flags).
#[derive(Debug, Clone, Copy)]
struct ReadFlags {
    /// User configuration: relative includes live in `~/.ssh`, `~` is allowed.
    user_config: bool,
    /// Refuse files others can write.
    check_permissions: bool,
    /// Included from an inactive block: parse, but never apply.
    never_match: bool,
}

/// Where a line comes from, for error messages.
struct Origin<'a> {
    file: &'a str,
    line: usize,
    /// The `-o` argument when the line comes from the command line.
    command_line: Option<&'a str>,
}

impl Origin<'_> {
    fn error(&self, message: impl std::fmt::Display) -> Error {
        match self.command_line {
            Some(option) => Error::usage(format!("-o '{option}': {message}"))
                .with_hint("fix the -o option; ssh refuses it too"),
            None => Error::config(format!("{} line {}: {message}", self.file, self.line))
                .with_hint(CONFIG_HINT),
        }
    }
}

struct Resolver<'a> {
    local: &'a LocalContext,
    /// The host as given: `%n`, what `Match originalhost` tests.
    original_host: String,
    /// What `Host` lines test: the host as given on the first pass, the final host name on the
    /// final pass.
    match_host: String,
    final_pass: bool,
    want_final_pass: bool,
    options: Options,
    files_read: usize,
    bytes_read: u64,
}

impl<'a> Resolver<'a> {
    fn new(host: &str, local: &'a LocalContext) -> Result<Self> {
        if host.is_empty() {
            return Err(Error::usage("no host name given").with_hint("name a host or an alias"));
        }
        if !valid_hostname(host) {
            return Err(Error::usage(format!(
                "host name \"{}\" contains invalid characters",
                host.escape_debug()
            ))
            .with_hint("ssh refuses shell metacharacters, spaces and commas in host names"));
        }
        Ok(Resolver {
            local,
            original_host: host.to_string(),
            match_host: host.to_string(),
            final_pass: false,
            want_final_pass: false,
            options: Options::default(),
            files_read: 0,
            bytes_read: 0,
        })
    }

    fn run(mut self, overrides: &Overrides, input: &Input<'_>) -> Result<HostConfig> {
        self.apply_overrides(overrides)?;
        self.read_input(input)?;

        // ssh.c: take HostName into use, then lowercase names (but not addresses).
        let mut host = self.original_host.clone();
        if let Some(hostname) = &self.options.hostname {
            host = percent_expand(hostname, &[('h', &host)], false).map_err(|why| {
                Error::config(format!("HostName \"{hostname}\": {why}"))
                    .with_hint("HostName accepts only the %h and %% tokens")
            })?;
            self.options.hostname = Some(host.clone());
        }
        if is_address(&host) {
            // Like ssh, keep the address as written when only its case differs.
            if let Some(canonical) = canonical_address(&host)
                && !canonical.eq_ignore_ascii_case(&host)
            {
                host = canonical;
            }
        } else {
            host.make_ascii_lowercase();
        }
        if self.options.canonicalize_hostname == Some(true) {
            self.want_final_pass = true;
        }
        if self.want_final_pass {
            tracing::debug!(host = %host, "re-reading the configuration for the final pass");
            self.options.hostname = Some(host.clone());
            self.match_host = host.clone();
            self.final_pass = true;
            self.read_input(input)?;
        }
        self.finish(host)
    }

    /// Applies the command line the way ssh's option parsing does, argument by argument in
    /// the order given, before any file is read.
    fn apply_overrides(&mut self, overrides: &Overrides) -> Result<()> {
        for argument in &overrides.arguments {
            match argument {
                CommandLineArgument::Option(option) => self.apply_option(option)?,
                CommandLineArgument::Port(text) => self.apply_port(text)?,
                CommandLineArgument::Identity(raw) => self.apply_identity(raw)?,
                CommandLineArgument::Jump(spec) => self.apply_jump_argument(spec)?,
            }
        }
        if self.options.user.is_none() {
            self.options.user.clone_from(&overrides.user);
        }
        if let Some(user) = &self.options.user
            && !valid_remote_user(user)
        {
            return Err(Error::usage(format!(
                "remote user name \"{}\" contains invalid characters",
                user.escape_debug()
            ))
            .with_hint("ssh refuses shell metacharacters in user names from the command line"));
        }
        Ok(())
    }

    /// `-o`: a configuration line from the command line.
    fn apply_option(&mut self, option: &str) -> Result<()> {
        let flags = ReadFlags {
            user_config: true,
            check_permissions: false,
            never_match: false,
        };
        let origin = Origin {
            file: "command-line",
            line: 0,
            command_line: Some(option),
        };
        self.process_line(option.as_bytes(), &origin, None, flags, 0)
    }

    /// `-p`: checked only when it is the first port given, as ssh checks it.
    fn apply_port(&mut self, text: &str) -> Result<()> {
        if self.options.port.is_some() {
            return Ok(());
        }
        match u16::try_from(port_number(text)) {
            Ok(port) if port > 0 => {
                self.options.port = Some(port);
                Ok(())
            }
            _ => Err(Error::usage(format!("bad port '{text}'"))
                .with_hint("give -p a port from 1 to 65535 or a service name")),
        }
    }

    /// `-i`: ssh warns about and skips a file it cannot stat.
    fn apply_identity(&mut self, raw: &str) -> Result<()> {
        let path = tilde_expand(raw, self.local)
            .map_err(|why| Error::usage(format!("identity file {raw}: {why}")))?;
        if let Err(error) = std::fs::metadata(&path) {
            tracing::warn!("identity file {path} not accessible: {error}");
            return Ok(());
        }
        if self.options.identity_files.len() >= MAX_KEY_FILES {
            return Err(Error::usage(format!(
                "too many identity files specified (max {MAX_KEY_FILES})"
            )));
        }
        add_key_file(
            &mut self.options.identity_files,
            path,
            KeyOrigin::IdentityOption,
        );
        Ok(())
    }

    /// `-J`: refused after another jump or a proxy command, from `-J` or `-o`, as ssh does.
    fn apply_jump_argument(&mut self, spec: &str) -> Result<()> {
        if self.options.jump.is_some() {
            return Err(Error::usage(
                "only a single -J option is permitted (use commas to separate multiple jump hops)",
            )
            .with_hint("a ProxyJump given with -o before -J counts as one; keep one of them"));
        }
        if self.options.proxy_command.is_some() {
            return Err(Error::usage("cannot specify -J with ProxyCommand")
                .with_hint("a ProxyCommand given with -o before -J wins; drop one of them"));
        }
        self.apply_proxy_jump(spec, true, true).map_err(|why| {
            Error::usage(format!("invalid -J argument \"{spec}\": {why}"))
                .with_hint("use [user@]host[:port] hops separated by commas")
        })
    }

    fn read_input(&mut self, input: &Input<'_>) -> Result<()> {
        let user_flags = ReadFlags {
            user_config: true,
            check_permissions: false,
            never_match: false,
        };
        match input {
            Input::Default { system_config } => {
                let user_config = self.local.home.join(".ssh").join("config");
                let mut active = true;
                // ssh silently skips a user configuration it cannot open.
                let _ = self.read_config_file(
                    &user_config,
                    ReadFlags {
                        check_permissions: true,
                        ..user_flags
                    },
                    &mut active,
                    0,
                )?;
                let mut active = true;
                let _ = self.read_config_file(
                    system_config,
                    ReadFlags {
                        user_config: false,
                        ..user_flags
                    },
                    &mut active,
                    0,
                )?;
            }
            Input::File(path) => {
                let mut active = true;
                if let Err(error) = self.read_config_file(path, user_flags, &mut active, 0)? {
                    return Err(Error::config(format!(
                        "can't open config file {}: {error}",
                        path.display()
                    ))
                    .with_hint("check the path given with -F"));
                }
            }
            Input::Nothing => {}
            Input::Text { name, text } => {
                let mut active = true;
                self.process_text(name, text.as_bytes(), user_flags, &mut active, 0)?;
            }
        }
        Ok(())
    }

    /// Reads one file. The inner error is a failure to open it, which callers treat as ssh
    /// does (fatal for `-F`, ignored for the default files, ignored when missing for includes).
    fn read_config_file(
        &mut self,
        path: &Path,
        flags: ReadFlags,
        active: &mut bool,
        depth: u32,
    ) -> Result<std::result::Result<(), std::io::Error>> {
        if depth > MAX_INCLUDE_DEPTH {
            return Err(Error::config(format!(
                "too many nested Include levels (more than {MAX_INCLUDE_DEPTH}) reading {}",
                path.display()
            ))
            .with_hint("look for a file that includes itself"));
        }
        self.files_read += 1;
        if self.files_read > MAX_FILES_READ {
            return Err(Error::config(format!(
                "reading {} makes more than {MAX_FILES_READ} configuration file reads",
                path.display()
            ))
            .with_hint("look for Include globs that match far too many files"));
        }
        let contents = match read_bounded(path, flags.check_permissions, self.local)? {
            Ok(contents) => contents,
            Err(error) => return Ok(Err(error)),
        };
        self.bytes_read += contents.len() as u64;
        if self.bytes_read > MAX_TOTAL_BYTES {
            return Err(Error::config(format!(
                "configuration read through Include exceeds {MAX_TOTAL_BYTES} bytes at {}",
                path.display()
            ))
            .with_hint("look for Include globs that match far too many files"));
        }
        tracing::debug!(path = %path.display(), depth, "reading configuration");
        let name = path.display().to_string();
        self.process_text(&name, &contents, flags, active, depth)?;
        Ok(Ok(()))
    }

    fn process_text(
        &mut self,
        name: &str,
        contents: &[u8],
        flags: ReadFlags,
        active: &mut bool,
        depth: u32,
    ) -> Result<()> {
        let text = String::from_utf8_lossy(contents);
        for (index, line) in text.as_bytes().split(|&byte| byte == b'\n').enumerate() {
            let origin = Origin {
                file: name,
                line: index + 1,
                command_line: None,
            };
            self.process_line(line, &origin, Some(&mut *active), flags, depth)?;
        }
        Ok(())
    }

    /// One configuration line, tokenised exactly as ssh's `process_config_line` does. `active`
    /// is `None` for a `-o` option.
    fn process_line(
        &mut self,
        raw: &[u8],
        origin: &Origin<'_>,
        active: Option<&mut bool>,
        flags: ReadFlags,
        depth: u32,
    ) -> Result<()> {
        let Some((name, rest)) = split_keyword(raw, origin)? else {
            return Ok(());
        };
        let keyword = Keyword::from_name(&name);
        if keyword.is_none() {
            self.check_unused_keyword(&name, origin)?;
        }
        let Some(arguments) = split_arguments(&rest) else {
            return Err(origin.error("invalid quotes"));
        };
        let Some(keyword) = keyword else {
            return Ok(());
        };
        let mut line = Line {
            name,
            rest,
            arguments: Arguments::new(arguments),
            origin,
            active: active.as_deref().copied().unwrap_or(true),
        };
        let options = &mut self.options;
        match keyword {
            Keyword::Host => {
                self.host_line(&mut line, block_state(active, "Host", origin)?, flags)?
            }
            Keyword::Match => {
                let active = block_state(active, "Match", origin)?;
                self.match_block(&mut line, active, flags)?;
            }
            Keyword::Include => {
                let active = block_state(active, "Include", origin)?;
                while let Some(argument) = line.arguments.next() {
                    self.include(&argument, origin, active, flags, depth)?;
                }
            }
            Keyword::HostName => line.set_string(&mut options.hostname)?,
            Keyword::HostKeyAlias => line.set_string(&mut options.host_key_alias)?,
            Keyword::User => line.set_string(&mut options.user)?,
            Keyword::Port => line.set_port(&mut options.port)?,
            Keyword::IdentityFile => {
                line.add_key_file(&mut options.identity_files, "identity", flags)?;
            }
            Keyword::CertificateFile => {
                line.add_key_file(&mut options.certificate_files, "certificate", flags)?;
            }
            Keyword::IdentitiesOnly => line.set_flag(&mut options.identities_only)?,
            Keyword::BatchMode => line.set_flag(&mut options.batch_mode)?,
            Keyword::PasswordAuthentication => {
                line.set_flag(&mut options.password_authentication)?;
            }
            Keyword::KeyboardInteractiveAuthentication => {
                line.set_flag(&mut options.keyboard_interactive_authentication)?;
            }
            // One word, unchecked: ssh skips the names it does not know when authenticating.
            Keyword::PreferredAuthentications => {
                line.set_string(&mut options.preferred_authentications)?;
            }
            Keyword::NumberOfPasswordPrompts => {
                line.set_count(&mut options.number_of_password_prompts)?;
            }
            Keyword::HashKnownHosts => line.set_flag(&mut options.hash_known_hosts)?,
            Keyword::TcpKeepAlive => line.set_flag(&mut options.tcp_keepalive)?,
            Keyword::StrictHostKeyChecking => {
                line.set_multistate(&mut options.strict_host_key_checking, |text| {
                    Some(match text.to_ascii_lowercase().as_str() {
                        "true" | "yes" => StrictHostKeyChecking::Yes,
                        "false" | "no" | "off" => StrictHostKeyChecking::No,
                        "ask" => StrictHostKeyChecking::Ask,
                        "accept-new" => StrictHostKeyChecking::AcceptNew,
                        _ => return None,
                    })
                })?
            }
            Keyword::IgnoreUnknown => line.set_string(&mut options.ignore_unknown)?,
            Keyword::CanonicalizeHostname => {
                line.set_multistate(&mut options.canonicalize_hostname, |text| {
                    match text.to_ascii_lowercase().as_str() {
                        "true" | "yes" | "always" => Some(true),
                        "false" | "no" => Some(false),
                        _ => None,
                    }
                })?;
            }
            Keyword::ConnectTimeout => line.set_time(&mut options.connect_timeout)?,
            Keyword::ServerAliveInterval => line.set_time(&mut options.server_alive_interval)?,
            Keyword::ServerAliveCountMax => line.set_count(&mut options.server_alive_count_max)?,
            Keyword::UserKnownHostsFile => line.add_known_hosts(&mut options.user_known_hosts)?,
            Keyword::GlobalKnownHostsFile => {
                line.add_known_hosts(&mut options.global_known_hosts)?;
            }
            Keyword::IdentityAgent => line.set_identity_agent(&mut options.identity_agent)?,
            Keyword::ProxyCommand => {
                // The command is the raw rest of the line, quotes and comments included.
                let command = line.raw_rest();
                set_first(&mut options.proxy_command, command, line.active);
            }
            Keyword::ProxyJump => {
                let spec = line.raw_rest();
                let strict = origin.command_line.is_some();
                self.apply_proxy_jump(&spec, strict, line.active)
                    .map_err(|why| origin.error(format!("Invalid ProxyJump \"{spec}\": {why}")))?;
            }
        }
        line.check_all_used()
    }

    /// `Host patterns...`: the block applies when a pattern matches and no negated one does.
    fn host_line(
        &self,
        line: &mut Line<'_, '_>,
        active: &mut bool,
        flags: ReadFlags,
    ) -> Result<()> {
        *active = false;
        while let Some(argument) = line.arguments.next() {
            if argument.is_empty() {
                return Err(line.empty_argument());
            }
            if flags.never_match {
                line.arguments.consume_all();
                break;
            }
            let (negated, pattern) = match argument.strip_prefix('!') {
                Some(pattern) => (true, pattern),
                None => (false, argument.as_str()),
            };
            if pattern::matches(self.match_host.as_bytes(), pattern.as_bytes()) {
                if negated {
                    *active = false;
                    line.arguments.consume_all();
                    break;
                }
                *active = true;
            }
        }
        Ok(())
    }

    /// `Match criteria...`, read by [`Self::match_line`] from the raw rest of the line.
    fn match_block(
        &mut self,
        line: &mut Line<'_, '_>,
        active: &mut bool,
        flags: ReadFlags,
    ) -> Result<()> {
        let (matched, consumed_all) = self.match_line(&line.rest, line.origin)?;
        *active = !flags.never_match && matched;
        if consumed_all {
            line.arguments.consume_all();
        }
        Ok(())
    }

    /// A keyword xfer does not read: skipped when ssh knows it (ssh would use it; xfer has no
    /// use for it) or `IgnoreUnknown` lists it, refused otherwise, as ssh's `parse_token` does.
    fn check_unused_keyword(&self, name: &str, origin: &Origin<'_>) -> Result<()> {
        if SSH_KEYWORDS.binary_search(&name).is_ok() {
            tracing::debug!("{} line {}: ignoring \"{name}\"", origin.file, origin.line);
            return Ok(());
        }
        if let Some(patterns) = &self.options.ignore_unknown
            && pattern::match_list(name.as_bytes(), patterns.as_bytes(), Case::FoldPatterns)
                == ListMatch::Positive
        {
            tracing::debug!(
                "{} line {}: ignoring unknown \"{name}\" (IgnoreUnknown)",
                origin.file,
                origin.line
            );
            return Ok(());
        }
        // A byte order mark is invisible in an editor: name it, or the message makes no sense.
        if let Some(after_mark) = name.strip_prefix('\u{feff}') {
            return Err(origin
                .error(format!(
                    "Bad configuration option: a UTF-8 byte order mark (bytes EF BB BF) \
                     comes before the keyword \"{}\"",
                    after_mark.escape_debug()
                ))
                .with_hint(
                    "save the file as UTF-8 without a byte order mark; ssh refuses it too",
                ));
        }
        Err(origin
            .error(format!(
                "Bad configuration option: \"{}\" is not an ssh_config keyword",
                name.escape_debug()
            ))
            .with_hint(
                "fix the spelling (see `man ssh_config`); ssh refuses it too. A keyword meant \
                 for another program can be listed in IgnoreUnknown",
            ))
    }

    /// ssh's `parse_jump`: the first of `ProxyJump` and `ProxyCommand` wins, `none` included.
    fn apply_proxy_jump(
        &mut self,
        spec: &str,
        strict: bool,
        active: bool,
    ) -> std::result::Result<(), String> {
        if spec.eq_ignore_ascii_case("none") {
            if active && self.options.jump.is_none() {
                self.options.jump = Some(Jump {
                    user: None,
                    host: "none".to_string(),
                    port: 0,
                    extra: None,
                });
            }
            return Ok(());
        }
        let chain = jump_chain_text(spec);
        let active = active && self.options.proxy_command.is_none() && self.options.jump.is_none();
        let mut last = None;
        // ssh checks the hops from the last to the first.
        for segment in chain.rsplit(',') {
            let hop = parse_jump_segment(segment, strict)?;
            last.get_or_insert(hop);
        }
        if let (true, Some(last)) = (active, last) {
            let extra = chain.rfind(',').map(|comma| chain[..comma].to_string());
            self.options.jump = Some(Jump {
                user: last.user,
                host: last.host,
                port: last.port,
                extra,
            });
            self.options.proxy_command = Some("none".to_string());
        }
        Ok(())
    }

    /// ssh's `match_cfg_line`. Returns whether the block applies and whether every argument
    /// was used.
    fn match_line(&mut self, rest: &[u8], origin: &Origin<'_>) -> Result<(bool, bool)> {
        let bad = |message: String| origin.error(format!("{message}: bad Match condition"));
        let host = if self.final_pass {
            self.options.hostname.clone().unwrap_or_default()
        } else if let Some(hostname) = &self.options.hostname {
            percent_expand(hostname, &[('h', &self.match_host)], false)
                .map_err(|why| origin.error(format!("HostName \"{hostname}\": {why}")))?
        } else {
            self.match_host.clone()
        };
        let remote_user = self
            .options
            .user
            .clone()
            .unwrap_or_else(|| self.local.user.clone());

        let mut buffer = rest.to_vec();
        buffer.push(0);
        let mut cursor = Some(0);
        let mut result = true;
        let mut attributes = 0;
        while let Some(start) = next_token(&mut buffer, &mut cursor, true) {
            let written = String::from_utf8_lossy(c_string(&buffer, start)).into_owned();
            if written.is_empty() {
                break;
            }
            if written.starts_with('#') {
                cursor = None;
                break;
            }
            let (negate, attribute) = match written.strip_prefix('!') {
                Some(attribute) => (true, attribute.to_ascii_lowercase()),
                None => (false, written.to_ascii_lowercase()),
            };
            if attribute == "all" {
                let next = next_token(&mut buffer, &mut cursor, true)
                    .map(|start| c_string(&buffer, start).to_vec());
                let has_more = next
                    .as_ref()
                    .is_some_and(|next| !next.is_empty() && next[0] != b'#');
                if attributes > 1 || has_more {
                    return Err(bad(format!(
                        "'{written}' cannot be combined with other Match attributes"
                    )));
                }
                if next.is_some_and(|next| next.first() == Some(&b'#')) {
                    cursor = None;
                }
                if result {
                    result = !negate;
                }
                return Ok((result, all_used(&buffer, cursor)));
            }
            attributes += 1;
            if attribute == "canonical" || attribute == "final" {
                if attribute == "final" {
                    self.want_final_pass = true;
                }
                if self.final_pass == negate {
                    result = false;
                }
                continue;
            }
            let criteria = next_token(&mut buffer, &mut cursor, true)
                .map(|start| String::from_utf8_lossy(c_string(&buffer, start)).into_owned());
            let Some(criteria) = criteria.filter(|text| !text.is_empty() && !text.starts_with('#'))
            else {
                return Err(bad(format!("Missing Match criteria for {attribute}")));
            };
            let matched = match attribute.as_str() {
                "host" => match_hostname(&host, &criteria) == ListMatch::Positive,
                "originalhost" => {
                    match_hostname(&self.original_host, &criteria) == ListMatch::Positive
                }
                "user" => {
                    pattern::match_list(
                        remote_user.as_bytes(),
                        criteria.as_bytes(),
                        Case::Sensitive,
                    ) == ListMatch::Positive
                }
                "localuser" => {
                    pattern::match_list(
                        self.local.user.as_bytes(),
                        criteria.as_bytes(),
                        Case::Sensitive,
                    ) == ListMatch::Positive
                }
                "exec" => {
                    // ssh expands the command (failing on unknown tokens) before deciding
                    // whether an earlier criterion lets it run.
                    check_tokens(&criteria, b"CLdhklnpriu")
                        .map_err(|why| origin.error(format!("Match exec \"{criteria}\": {why}")))?;
                    if result {
                        return Err(Error::config(format!(
                            "{} line {}: xfer does not run `Match exec` commands (\"{criteria}\")",
                            origin.file, origin.line
                        ))
                        .with_hint(
                            "put these settings in a Host or `Match host` block, \
                             or pass them with -o",
                        ));
                    }
                    continue;
                }
                _ => return Err(bad(format!("Unsupported Match attribute {attribute}"))),
            };
            if matched == negate {
                result = false;
            }
        }
        if attributes == 0 {
            return Err(bad("One or more attributes required for Match".to_string()));
        }
        Ok((result, all_used(&buffer, cursor)))
    }

    /// One `Include` argument: a glob, relative to `~/.ssh` (user configuration) or `/etc/ssh`.
    fn include(
        &mut self,
        argument: &str,
        origin: &Origin<'_>,
        active: &mut bool,
        flags: ReadFlags,
        depth: u32,
    ) -> Result<()> {
        if argument.is_empty() {
            return Err(origin.error("keyword include empty argument"));
        }
        if argument.starts_with('~') && !flags.user_config {
            return Err(origin.error(format!("bad include path {argument}.")));
        }
        let pattern = if argument.starts_with('/') || argument.starts_with('~') {
            argument.to_string()
        } else if flags.user_config {
            format!("~/.ssh/{argument}")
        } else {
            format!("{SYSTEM_CONFIG_DIRECTORY}/{argument}")
        };
        let home = self.local.home.as_os_str().as_bytes();
        let paths = glob::expand(pattern.as_bytes(), home, MAX_GLOB_MATCHES)
            .map_err(|why| origin.error(format!("glob failed for {pattern}: {why}")))?;
        if paths.is_empty() {
            tracing::debug!(
                "{} line {}: include {pattern} matched no files",
                origin.file,
                origin.line
            );
        }
        let outer_active = *active;
        for path in paths {
            let include_flags = ReadFlags {
                user_config: flags.user_config,
                check_permissions: true,
                never_match: flags.never_match || !outer_active,
            };
            match self.read_config_file(&path, include_flags, active, depth + 1)? {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(origin.error(format!(
                        "can't open included file {}: {error}",
                        path.display()
                    )));
                }
            }
            // A Host or Match inside the included file does not change this file's state.
            *active = outer_active;
        }
        Ok(())
    }

    /// Defaults and expansions, as ssh.c does after reading the configuration.
    fn finish(self, host: String) -> Result<HostConfig> {
        let local = self.local;
        let options = self.options;
        let user = options.user.unwrap_or_else(|| local.user.clone());
        let port = options.port.unwrap_or_else(default_ssh_port);
        let jump = options
            .jump
            .filter(|jump| !(jump.host == "none" && jump.port == 0 && jump.user.is_none()));
        let proxy_command = options
            .proxy_command
            .filter(|command| !command.eq_ignore_ascii_case("none"));
        let proxy_jump = match &jump {
            Some(jump) => jump_hosts(jump, &host, port, &user, proxy_command.is_some())?,
            None => Vec::new(),
        };
        let key_alias = options
            .host_key_alias
            .as_ref()
            .map(|alias| alias.to_ascii_lowercase());
        let tokens = Tokens::new(
            local,
            &self.original_host,
            &host,
            port,
            &user,
            key_alias.as_deref(),
        );

        let identity_files_are_defaults = options.identity_files.is_empty();
        let identity_files = identity_files(&options.identity_files, &tokens)?;
        let certificate_files = options
            .certificate_files
            .iter()
            .map(|file| {
                tokens
                    .expand("CertificateFile", &file.path)
                    .map(PathBuf::from)
            })
            .collect::<Result<Vec<_>>>()?;
        let user_known_hosts_files = known_hosts_files(
            &options.user_known_hosts,
            &DEFAULT_USER_KNOWN_HOSTS,
            |raw| tokens.expand("UserKnownHostsFile", raw),
        )?;
        // ssh expands only `~` in the global files.
        let global_known_hosts_files = known_hosts_files(
            &options.global_known_hosts,
            &DEFAULT_GLOBAL_KNOWN_HOSTS,
            |raw| {
                tilde_expand(raw, local)
                    .map_err(|why| Error::config(format!("GlobalKnownHostsFile \"{raw}\": {why}")))
            },
        )?;
        let identity_agent = match &options.identity_agent {
            Some(raw) => Some(tokens.expand("IdentityAgent", raw)?),
            None => None,
        };
        let proxy_command = match proxy_command {
            Some(command) if jump.is_none() => {
                Some(expand_proxy_command_tokens(command, key_alias.as_deref())?)
            }
            _ => None,
        };

        Ok(HostConfig {
            original_host: self.original_host,
            hostname: host,
            port,
            user,
            identity_files,
            identity_files_are_defaults,
            identities_only: options.identities_only.unwrap_or(false),
            certificate_files,
            proxy_jump,
            proxy_command,
            // Debian: in batch mode the interval defaults to five minutes.
            server_alive_interval: u64::from(options.server_alive_interval.unwrap_or(
                if options.batch_mode == Some(true) {
                    300
                } else {
                    0
                },
            )),
            server_alive_count_max: options.server_alive_count_max.unwrap_or(3),
            connect_timeout: options.connect_timeout.map(u64::from),
            user_known_hosts_files,
            global_known_hosts_files,
            strict_host_key_checking: options
                .strict_host_key_checking
                .unwrap_or(StrictHostKeyChecking::Ask),
            batch_mode: options.batch_mode.unwrap_or(false),
            password_authentication: options.password_authentication.unwrap_or(true),
            keyboard_interactive_authentication: options
                .keyboard_interactive_authentication
                .unwrap_or(true),
            preferred_authentications: options.preferred_authentications,
            number_of_password_prompts: options.number_of_password_prompts.unwrap_or(3),
            identity_agent,
            hash_known_hosts: options.hash_known_hosts.unwrap_or(false),
            tcp_keepalive: options.tcp_keepalive.unwrap_or(true),
            host_key_alias: key_alias,
            command_line: Vec::new(),
        })
    }
}

/// The hops of `ProxyJump`, first to last, for a connection to `host`; refused when the jump
/// is the destination itself or `ProxyCommand` is set too, as ssh refuses them.
fn jump_hosts(
    jump: &Jump,
    host: &str,
    port: u16,
    user: &str,
    has_proxy_command: bool,
) -> Result<Vec<JumpHost>> {
    let jump_user = jump.user.as_deref().unwrap_or(user);
    let jump_port = if jump.port <= 0 {
        i32::from(default_ssh_port())
    } else {
        jump.port
    };
    if jump.host == host && i32::from(port) == jump_port && user == jump_user {
        return Err(Error::config(format!("jump host loop via {}", jump.host))
            .with_hint("ProxyJump names the destination itself; check the Host blocks"));
    }
    if has_proxy_command {
        return Err(Error::config(
            "inconsistent options: ProxyCommand+ProxyJump",
        ));
    }
    let mut hops = Vec::new();
    if let Some(extra) = &jump.extra {
        for segment in extra.split(',') {
            let hop = parse_jump_segment(segment, false).map_err(|why| {
                Error::config(format!("invalid ProxyJump hop \"{segment}\": {why}"))
            })?;
            hops.push(hop.into_jump_host());
        }
    }
    hops.push(JumpHost {
        user: jump.user.clone(),
        host: jump.host.clone(),
        port: u16::try_from(jump.port).ok().filter(|&port| port > 0),
    });
    Ok(hops)
}

/// The identity files configured, or ssh's defaults, expanded; `none` entries dropped.
fn identity_files(configured: &[KeyFile], tokens: &Tokens<'_>) -> Result<Vec<PathBuf>> {
    let raw: Vec<&str> = if configured.is_empty() {
        DEFAULT_IDENTITY_FILES.to_vec()
    } else {
        configured.iter().map(|file| file.path.as_str()).collect()
    };
    raw.into_iter()
        .filter(|raw| !raw.eq_ignore_ascii_case("none"))
        .map(|raw| tokens.expand("IdentityFile", raw).map(PathBuf::from))
        .collect()
}

/// The known_hosts files of one kind: those configured, or the defaults; none for `none`.
fn known_hosts_files(
    configured: &[String],
    defaults: &[&str],
    expand: impl Fn(&str) -> Result<String>,
) -> Result<Vec<PathBuf>> {
    let raw: Vec<String> = if configured.is_empty() {
        defaults.iter().map(|path| path.to_string()).collect()
    } else {
        configured.to_vec()
    };
    if is_none_list(&raw) {
        return Ok(Vec::new());
    }
    raw.iter()
        .map(|raw| expand(raw).map(PathBuf::from))
        .collect()
}

/// `ProxyCommand` checked for the tokens ssh allows there, with `%k` replaced now (the others
/// are replaced when the command runs, see [`HostConfig::expand_proxy_command`]).
fn expand_proxy_command_tokens(command: String, key_alias: Option<&str>) -> Result<String> {
    check_tokens(&command, b"hknpr").map_err(|why| {
        Error::config(format!("ProxyCommand \"{command}\": {why}"))
            .with_hint("ProxyCommand accepts the tokens %h %k %n %p %r and %%")
    })?;
    Ok(match key_alias {
        Some(alias) => replace_token(&command, 'k', alias),
        None => command,
    })
}

/// The values of the `%` tokens paths in the configuration may use, as ssh.c sets them once
/// the host, port and user are known.
struct Tokens<'a> {
    local: &'a LocalContext,
    values: [(char, String); 11],
}

impl<'a> Tokens<'a> {
    fn new(
        local: &'a LocalContext,
        original_host: &str,
        host: &str,
        port: u16,
        user: &str,
        key_alias: Option<&str>,
    ) -> Self {
        let port = port.to_string();
        let short_host = local.hostname.split('.').next().unwrap_or_default();
        Tokens {
            local,
            values: [
                ('C', connection_hash(&local.hostname, host, &port, user)),
                ('L', short_host.to_string()),
                ('i', local.uid.to_string()),
                ('k', key_alias.unwrap_or(original_host).to_string()),
                ('l', local.hostname.clone()),
                ('n', original_host.to_string()),
                ('p', port),
                ('d', local.home.to_string_lossy().into_owned()),
                ('h', host.to_string()),
                ('r', user.to_string()),
                ('u', local.user.clone()),
            ],
        }
    }

    /// `raw` (the value of the option `what`) with `~` and the `%` tokens and `${VAR}`
    /// expanded.
    fn expand(&self, what: &str, raw: &str) -> Result<String> {
        let path = tilde_expand(raw, self.local)
            .map_err(|why| Error::config(format!("{what} \"{raw}\": {why}")))?;
        let tokens: Vec<(char, &str)> = self
            .values
            .iter()
            .map(|(token, value)| (*token, value.as_str()))
            .collect();
        percent_expand(&path, &tokens, true).map_err(|why| {
            Error::config(format!("{what} \"{raw}\": {why}")).with_hint(
                "use only the %-tokens ssh supports there (%C %d %h %i %k %L %l %n %p %r %u %%) \
                 and environment variables that are set",
            )
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Keywords and argument parsing.

/// Every keyword ssh 9.2p1 (Debian 12) accepts in ssh_config, lowercase and sorted: the
/// `keywords` table of OpenSSH's readconf.c (deprecated and unsupported ones included, which ssh
/// skips with a message) plus Debian's additions (the GSSAPI key exchange options,
/// `protocolkeepalives`, `setuptimeout`, `useblacklistedkeys`). A keyword outside this list is
/// refused unless `IgnoreUnknown` lists it; one inside it that xfer does not read is skipped.
/// tests/it/config_parity.rs checks the list against the installed `ssh -G`.
#[doc(hidden)]
pub const SSH_KEYWORDS: [&str; 131] = [
    "addkeystoagent",
    "addressfamily",
    "afstokenpassing",
    "batchmode",
    "bindaddress",
    "bindinterface",
    "canonicaldomains",
    "canonicalizefallbacklocal",
    "canonicalizehostname",
    "canonicalizemaxdots",
    "canonicalizepermittedcnames",
    "casignaturealgorithms",
    "certificatefile",
    "challengeresponseauthentication",
    "checkhostip",
    "cipher",
    "ciphers",
    "clearallforwardings",
    "compression",
    "compressionlevel",
    "connectionattempts",
    "connecttimeout",
    "controlmaster",
    "controlpath",
    "controlpersist",
    "dsaauthentication",
    "dynamicforward",
    "enableescapecommandline",
    "enablesshkeysign",
    "escapechar",
    "exitonforwardfailure",
    "fallbacktorsh",
    "fingerprinthash",
    "forkafterauthentication",
    "forwardagent",
    "forwardx11",
    "forwardx11timeout",
    "forwardx11trusted",
    "gatewayports",
    "globalknownhostsfile",
    "globalknownhostsfile2",
    "gssapiauthentication",
    "gssapiclientidentity",
    "gssapidelegatecredentials",
    "gssapikexalgorithms",
    "gssapikeyexchange",
    "gssapirenewalforcesrekey",
    "gssapiserveridentity",
    "gssapitrustdns",
    "hashknownhosts",
    "host",
    "hostbasedacceptedalgorithms",
    "hostbasedauthentication",
    "hostbasedkeytypes",
    "hostkeyalgorithms",
    "hostkeyalias",
    "hostname",
    "identitiesonly",
    "identityagent",
    "identityfile",
    "identityfile2",
    "ignoreunknown",
    "include",
    "ipqos",
    "kbdinteractiveauthentication",
    "kbdinteractivedevices",
    "keepalive",
    "kerberosauthentication",
    "kerberostgtpassing",
    "kexalgorithms",
    "knownhostscommand",
    "localcommand",
    "localforward",
    "loglevel",
    "logverbose",
    "macs",
    "match",
    "nohostauthenticationforlocalhost",
    "numberofpasswordprompts",
    "passwordauthentication",
    "permitlocalcommand",
    "permitremoteopen",
    "pkcs11provider",
    "port",
    "preferredauthentications",
    "protocol",
    "protocolkeepalives",
    "proxycommand",
    "proxyjump",
    "proxyusefdpass",
    "pubkeyacceptedalgorithms",
    "pubkeyacceptedkeytypes",
    "pubkeyauthentication",
    "rekeylimit",
    "remotecommand",
    "remoteforward",
    "requesttty",
    "requiredrsasize",
    "revokedhostkeys",
    "rhostsauthentication",
    "rhostsrsaauthentication",
    "rsaauthentication",
    "securitykeyprovider",
    "sendenv",
    "serveralivecountmax",
    "serveraliveinterval",
    "sessiontype",
    "setenv",
    "setuptimeout",
    "skeyauthentication",
    "smartcarddevice",
    "stdinnull",
    "streamlocalbindmask",
    "streamlocalbindunlink",
    "stricthostkeychecking",
    "syslogfacility",
    "tcpkeepalive",
    "tisauthentication",
    "tunnel",
    "tunneldevice",
    "updatehostkeys",
    "useblacklistedkeys",
    "useprivilegedport",
    "user",
    "userknownhostsfile",
    "userknownhostsfile2",
    "useroaming",
    "usersh",
    "verifyhostkeydns",
    "visualhostkey",
    "xauthlocation",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    Host,
    Match,
    Include,
    HostName,
    HostKeyAlias,
    Port,
    User,
    IdentityFile,
    CertificateFile,
    IdentitiesOnly,
    ProxyCommand,
    ProxyJump,
    ServerAliveInterval,
    ServerAliveCountMax,
    ConnectTimeout,
    UserKnownHostsFile,
    GlobalKnownHostsFile,
    StrictHostKeyChecking,
    BatchMode,
    PasswordAuthentication,
    KeyboardInteractiveAuthentication,
    PreferredAuthentications,
    NumberOfPasswordPrompts,
    IdentityAgent,
    HashKnownHosts,
    TcpKeepAlive,
    CanonicalizeHostname,
    IgnoreUnknown,
}

/// The directives xfer reads, by ssh's lowercase names (aliases included).
const KEYWORD_NAMES: [(&str, Keyword); 35] = [
    ("host", Keyword::Host),
    ("match", Keyword::Match),
    ("include", Keyword::Include),
    ("hostname", Keyword::HostName),
    ("hostkeyalias", Keyword::HostKeyAlias),
    ("port", Keyword::Port),
    ("user", Keyword::User),
    ("identityfile", Keyword::IdentityFile),
    ("identityfile2", Keyword::IdentityFile),
    ("certificatefile", Keyword::CertificateFile),
    ("identitiesonly", Keyword::IdentitiesOnly),
    ("proxycommand", Keyword::ProxyCommand),
    ("proxyjump", Keyword::ProxyJump),
    ("serveraliveinterval", Keyword::ServerAliveInterval),
    // Debian's keepalive patch adds these two names.
    ("protocolkeepalives", Keyword::ServerAliveInterval),
    ("setuptimeout", Keyword::ServerAliveInterval),
    ("serveralivecountmax", Keyword::ServerAliveCountMax),
    ("connecttimeout", Keyword::ConnectTimeout),
    ("userknownhostsfile", Keyword::UserKnownHostsFile),
    ("globalknownhostsfile", Keyword::GlobalKnownHostsFile),
    ("stricthostkeychecking", Keyword::StrictHostKeyChecking),
    ("batchmode", Keyword::BatchMode),
    ("passwordauthentication", Keyword::PasswordAuthentication),
    (
        "kbdinteractiveauthentication",
        Keyword::KeyboardInteractiveAuthentication,
    ),
    // ssh 9.2 reads all three older names as KbdInteractiveAuthentication.
    (
        "challengeresponseauthentication",
        Keyword::KeyboardInteractiveAuthentication,
    ),
    (
        "skeyauthentication",
        Keyword::KeyboardInteractiveAuthentication,
    ),
    (
        "tisauthentication",
        Keyword::KeyboardInteractiveAuthentication,
    ),
    (
        "preferredauthentications",
        Keyword::PreferredAuthentications,
    ),
    ("numberofpasswordprompts", Keyword::NumberOfPasswordPrompts),
    ("identityagent", Keyword::IdentityAgent),
    ("hashknownhosts", Keyword::HashKnownHosts),
    ("tcpkeepalive", Keyword::TcpKeepAlive),
    ("keepalive", Keyword::TcpKeepAlive),
    ("canonicalizehostname", Keyword::CanonicalizeHostname),
    ("ignoreunknown", Keyword::IgnoreUnknown),
];

impl Keyword {
    fn from_name(name: &str) -> Option<Self> {
        KEYWORD_NAMES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, keyword)| *keyword)
    }
}

/// The arguments of one line, taken in order; left-overs are an error, as in ssh.
struct Arguments {
    values: Vec<String>,
    next: usize,
}

impl Arguments {
    fn new(values: Vec<Vec<u8>>) -> Self {
        Arguments {
            values: values
                .into_iter()
                .map(|value| String::from_utf8_lossy(&value).into_owned())
                .collect(),
            next: 0,
        }
    }

    fn next(&mut self) -> Option<String> {
        let value = self.values.get(self.next).cloned();
        if value.is_some() {
            self.next += 1;
        }
        value
    }

    fn remaining(&self) -> usize {
        self.values.len().saturating_sub(self.next)
    }

    fn consume_all(&mut self) {
        self.next = self.values.len();
    }
}

fn set_first<T>(slot: &mut Option<T>, value: T, active: bool) {
    if active && slot.is_none() {
        *slot = Some(value);
    }
}

fn string_argument(arguments: &mut Arguments, origin: &Origin<'_>) -> Result<String> {
    match arguments.next() {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(origin.error("Missing argument.")),
    }
}

fn multistate_argument<T>(
    arguments: &mut Arguments,
    origin: &Origin<'_>,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T> {
    let Some(value) = arguments.next().filter(|value| !value.is_empty()) else {
        return Err(origin.error("missing argument."));
    };
    parse(&value).ok_or_else(|| origin.error(format!("unsupported option \"{value}\".")))
}

fn flag_argument(arguments: &mut Arguments, origin: &Origin<'_>) -> Result<bool> {
    multistate_argument(arguments, origin, |text| {
        match text.to_ascii_lowercase().as_str() {
            "true" | "yes" => Some(true),
            "false" | "no" => Some(false),
            _ => None,
        }
    })
}

/// A time value; `None` for `none`, which (as in ssh) leaves the option unset.
fn time_argument(arguments: &mut Arguments, origin: &Origin<'_>) -> Result<Option<u32>> {
    let Some(value) = arguments.next().filter(|value| !value.is_empty()) else {
        return Err(origin.error("missing time value."));
    };
    if value == "none" {
        return Ok(None);
    }
    parse_time(&value)
        .map(Some)
        .ok_or_else(|| origin.error(format!("invalid time value \"{value}\".")))
}

/// Adds a key file unless the same path already came from the same kind of configuration.
fn add_key_file(list: &mut Vec<KeyFile>, path: String, origin: KeyOrigin) {
    if !list
        .iter()
        .any(|file| file.origin == origin && file.path == path)
    {
        list.push(KeyFile { path, origin });
    }
}

fn is_none_list(list: &[String]) -> bool {
    list.first()
        .is_some_and(|first| first.eq_ignore_ascii_case("none"))
}

fn is_none_path(path: &Path) -> bool {
    path.to_str()
        .is_some_and(|text| text.eq_ignore_ascii_case("none"))
}

/// The keyword of a configuration line, lowercased, and the rest of the line after the
/// separating blanks or `=`; `None` for a blank line or a comment.
fn split_keyword(raw: &[u8], origin: &Origin<'_>) -> Result<Option<(String, Vec<u8>)>> {
    // getline() keeps NUL bytes but every later step stops at the first one.
    let end = raw.iter().position(|&byte| byte == 0).unwrap_or(raw.len());
    let mut line = raw[..end].to_vec();
    if line.is_empty() {
        return Ok(None);
    }
    // Trailing whitespace goes, except the very first character (ssh's loop stops at 1).
    let mut length = line.len();
    while length > 1 && b" \t\r\n\x0c".contains(&line[length - 1]) {
        length -= 1;
    }
    line.truncate(length);
    line.push(0);

    let mut cursor = Some(0);
    let Some(mut keyword_start) = next_token(&mut line, &mut cursor, true) else {
        return Ok(None);
    };
    if line.get(keyword_start) == Some(&0) {
        match next_token(&mut line, &mut cursor, true) {
            Some(start) => keyword_start = start,
            None => return Ok(None),
        }
    }
    let keyword_bytes = c_string(&line, keyword_start);
    if keyword_bytes.is_empty() || keyword_bytes[0] == b'\n' || keyword_bytes[0] == b'#' {
        return Ok(None);
    }
    let name = String::from_utf8_lossy(keyword_bytes).to_ascii_lowercase();
    let rest_start = cursor.map(|start| start + span(&line, start, WHITESPACE));
    match rest_start {
        Some(start) if line.get(start).is_some_and(|&byte| byte != 0) => {
            Ok(Some((name, c_string(&line, start).to_vec())))
        }
        _ => Err(origin.error(format!("no argument after keyword \"{name}\""))),
    }
}

/// The block state a `Host`, `Match` or `Include` line changes or reads; none on the command
/// line, where ssh refuses those keywords.
fn block_state<'b>(
    active: Option<&'b mut bool>,
    keyword: &str,
    origin: &Origin<'_>,
) -> Result<&'b mut bool> {
    active.ok_or_else(|| {
        origin.error(format!(
            "{keyword} is not supported as a command-line option"
        ))
    })
}

/// One keyword's line being applied: its arguments, where it comes from, and whether the
/// block it is in applies (settings outside an applying block are parsed, checked, and
/// dropped, as ssh does).
struct Line<'l, 'o> {
    /// The keyword, lowercased, as error messages name it.
    name: String,
    /// Everything after the keyword, for the keywords that read it raw.
    rest: Vec<u8>,
    arguments: Arguments,
    origin: &'l Origin<'o>,
    active: bool,
}

impl Line<'_, '_> {
    fn set_string(&mut self, slot: &mut Option<String>) -> Result<()> {
        let value = string_argument(&mut self.arguments, self.origin)?;
        set_first(slot, value, self.active);
        Ok(())
    }

    fn set_flag(&mut self, slot: &mut Option<bool>) -> Result<()> {
        let value = flag_argument(&mut self.arguments, self.origin)?;
        set_first(slot, value, self.active);
        Ok(())
    }

    fn set_multistate<T>(
        &mut self,
        slot: &mut Option<T>,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<()> {
        let value = multistate_argument(&mut self.arguments, self.origin, parse)?;
        set_first(slot, value, self.active);
        Ok(())
    }

    /// A time; `none` leaves the option unset, as in ssh.
    fn set_time(&mut self, slot: &mut Option<u32>) -> Result<()> {
        if let Some(value) = time_argument(&mut self.arguments, self.origin)? {
            set_first(slot, value, self.active);
        }
        Ok(())
    }

    fn set_port(&mut self, slot: &mut Option<u16>) -> Result<()> {
        let value = string_argument(&mut self.arguments, self.origin)?;
        let port = match u16::try_from(port_number(&value)) {
            Ok(port) if port > 0 => port,
            _ => return Err(self.origin.error(format!("Bad port '{value}'."))),
        };
        set_first(slot, port, self.active);
        Ok(())
    }

    /// A non-negative `int`, as ssh reads `ServerAliveCountMax` and `NumberOfPasswordPrompts`.
    fn set_count(&mut self, slot: &mut Option<u32>) -> Result<()> {
        let argument = self.arguments.next().unwrap_or_default();
        let Some(value) = parse_decimal(&argument, 0, i64::from(i32::MAX)) else {
            let why = if argument.is_empty() {
                "missing"
            } else {
                "invalid"
            };
            return Err(self.origin.error(format!("integer value {why}.")));
        };
        set_first(slot, u32::try_from(value).unwrap_or(u32::MAX), self.active);
        Ok(())
    }

    /// `IdentityFile` or `CertificateFile` (`what`): files accumulate, up to ssh's limit.
    fn add_key_file(
        &mut self,
        list: &mut Vec<KeyFile>,
        what: &str,
        flags: ReadFlags,
    ) -> Result<()> {
        let value = string_argument(&mut self.arguments, self.origin)?;
        if !self.active {
            return Ok(());
        }
        if list.len() >= MAX_KEY_FILES {
            return Err(self.origin.error(format!(
                "Too many {what} files specified (max {MAX_KEY_FILES})."
            )));
        }
        let key_origin = if flags.user_config {
            KeyOrigin::UserConfig
        } else {
            KeyOrigin::SystemConfig
        };
        add_key_file(list, value, key_origin);
        Ok(())
    }

    /// `UserKnownHostsFile` or `GlobalKnownHostsFile`: several files on one line; the first
    /// line that applies sets the list; `none` only alone.
    fn add_known_hosts(&mut self, list: &mut Vec<String>) -> Result<()> {
        let was_empty = list.is_empty();
        let mut count = 0;
        while let Some(argument) = self.arguments.next() {
            if argument.is_empty() {
                return Err(self.empty_argument());
            }
            if argument.eq_ignore_ascii_case("none")
                && (count > 0 || self.arguments.remaining() > 0)
            {
                return Err(self.origin.error(format!(
                    "keyword {} \"none\" argument must appear alone.",
                    self.name
                )));
            }
            count += 1;
            if self.active && was_empty {
                if list.len() >= MAX_KNOWN_HOSTS_FILES {
                    return Err(self
                        .origin
                        .error(format!("too many {} entries.", self.name)));
                }
                list.push(argument);
            }
        }
        Ok(())
    }

    /// `IdentityAgent`: a path, `none`, `SSH_AUTH_SOCK`, or `$NAME` of a variable.
    fn set_identity_agent(&mut self, slot: &mut Option<String>) -> Result<()> {
        let value = string_argument(&mut self.arguments, self.origin)?;
        if dollar_expand(&value).is_err() {
            return Err(self
                .origin
                .error(format!("Invalid environment expansion {value}.")));
        }
        let bytes = value.as_bytes();
        if bytes.first() == Some(&b'$')
            && bytes.get(1) != Some(&b'{')
            && !valid_environment_name(&value[1..])
        {
            return Err(self
                .origin
                .error(format!("Invalid environment name {value}.")));
        }
        set_first(slot, value, self.active);
        Ok(())
    }

    /// The rest of the line after the separator, unparsed (`ProxyCommand`, `ProxyJump`); it
    /// uses up every argument.
    fn raw_rest(&mut self) -> String {
        let skip = span(&self.rest, 0, b" \t\r\n=");
        self.arguments.consume_all();
        String::from_utf8_lossy(&self.rest[skip..]).into_owned()
    }

    fn empty_argument(&self) -> Error {
        self.origin
            .error(format!("keyword {} empty argument", self.name))
    }

    /// ssh refuses arguments a keyword did not use.
    fn check_all_used(&self) -> Result<()> {
        if self.arguments.remaining() > 0 {
            return Err(self.origin.error(format!(
                "keyword {} extra arguments at end of line",
                self.name
            )));
        }
        Ok(())
    }
}

/// Whether `cursor` ended at the end of the line, i.e. nothing was left over.
fn all_used(buffer: &[u8], cursor: Option<usize>) -> bool {
    match cursor {
        None => true,
        Some(position) => buffer.get(position).is_none_or(|&byte| byte == 0),
    }
}

// ---------------------------------------------------------------------------------------------
// Tokenizers. Both work on a NUL-terminated buffer exactly as ssh's C code does, so that odd
// quoting and `=` placement are read the same way.

/// The bytes from `start` up to the next NUL.
fn c_string(buffer: &[u8], start: usize) -> &[u8] {
    let tail = buffer.get(start..).unwrap_or_default();
    let end = tail
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(tail.len());
    &tail[..end]
}

/// `strspn`: how many bytes from `start` are in `set` (stopping at NUL).
fn span(buffer: &[u8], start: usize, set: &[u8]) -> usize {
    c_string(buffer, start)
        .iter()
        .take_while(|byte| set.contains(byte))
        .count()
}

/// `strpbrk`: the first byte at or after `start` that is in `set`, before the NUL.
fn find_any(buffer: &[u8], start: usize, set: &[u8]) -> Option<usize> {
    c_string(buffer, start)
        .iter()
        .position(|byte| set.contains(byte))
        .map(|offset| start + offset)
}

/// ssh's `strdelim`: the next word, split on whitespace or (with `split_equals`) one `=`;
/// a double-quoted word may contain spaces. Returns where the word starts; the word ends at the
/// NUL written into `buffer`. `cursor` becomes `None` at the end of the line.
fn next_token(
    buffer: &mut Vec<u8>,
    cursor: &mut Option<usize>,
    split_equals: bool,
) -> Option<usize> {
    let old = (*cursor)?;
    let delimiters: &[u8] = if split_equals {
        b" \t\r\n\"="
    } else {
        b" \t\r\n\""
    };
    let Some(mut position) = find_any(buffer, old, delimiters) else {
        *cursor = None;
        return Some(old);
    };
    if buffer[position] == b'"' {
        buffer.remove(position);
        return match find_any(buffer, position, b"\"") {
            None => {
                *cursor = None;
                None
            }
            Some(close) => {
                buffer[close] = 0;
                *cursor = Some(close + 1 + span(buffer, close + 1, WHITESPACE));
                Some(old)
            }
        };
    }
    let skipped_equals = split_equals && buffer[position] == b'=';
    buffer[position] = 0;
    position += 1 + span(buffer, position + 1, WHITESPACE);
    if split_equals && buffer.get(position) == Some(&b'=') && !skipped_equals {
        position += 1 + span(buffer, position + 1, WHITESPACE);
    }
    *cursor = Some(position);
    Some(old)
}

/// ssh's `argv_split` (stopping at `#`): words split on spaces and tabs, with `"..."` and
/// `'...'` quoting and `\"`, `\'`, `\\` and (unquoted) `\ ` escapes. `None` for an unclosed
/// quote.
fn split_arguments(input: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut arguments = Vec::new();
    let mut index = 0;
    while index < input.len() {
        let byte = input[index];
        if byte == b' ' || byte == b'\t' {
            index += 1;
            continue;
        }
        if byte == b'#' {
            break;
        }
        let mut quote = 0u8;
        let mut argument = Vec::new();
        while let Some(&byte) = input.get(index) {
            let next = input.get(index + 1).copied();
            if byte == b'\\' {
                if matches!(next, Some(b'\'' | b'"' | b'\\')) || (quote == 0 && next == Some(b' '))
                {
                    index += 1;
                    argument.push(input[index]);
                } else {
                    argument.push(byte);
                }
            } else if quote == 0 && (byte == b' ' || byte == b'\t') {
                break;
            } else if quote == 0 && (byte == b'"' || byte == b'\'') {
                quote = byte;
            } else if quote != 0 && byte == quote {
                quote = 0;
            } else {
                argument.push(byte);
            }
            index += 1;
        }
        arguments.push(argument);
        if index >= input.len() {
            if quote != 0 {
                return None;
            }
            break;
        }
        index += 1;
    }
    Some(arguments)
}

/// C's `isspace` in the C locale.
fn is_c_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

// ---------------------------------------------------------------------------------------------
// Numbers, ports and times, with the leniency of the C functions ssh uses.

/// `strtonum(text, min, max)`: optional leading whitespace and sign, then decimal digits only.
fn parse_decimal(text: &str, min: i64, max: i64) -> Option<i64> {
    let bytes = text.as_bytes();
    let mut index = bytes.iter().take_while(|&&byte| is_c_space(byte)).count();
    let negative = match bytes.get(index) {
        Some(b'+') => {
            index += 1;
            false
        }
        Some(b'-') => {
            index += 1;
            true
        }
        _ => false,
    };
    let digits = &bytes[index..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut value: i128 = 0;
    for digit in digits {
        value = value
            .saturating_mul(10)
            .saturating_add(i128::from(digit - b'0'));
    }
    let value = if negative { -value } else { value };
    if value < i128::from(min) || value > i128::from(max) {
        return None;
    }
    i64::try_from(value).ok()
}

/// ssh's `a2port`: a number from 0 to 65535 or a TCP service name; -1 when neither.
fn port_number(text: &str) -> i32 {
    if let Some(port) = parse_decimal(text, 0, 65535) {
        return i32::try_from(port).unwrap_or(-1);
    }
    service_port(text).map_or(-1, i32::from)
}

/// The port of the `ssh` service, 22 unless `/etc/services` says otherwise.
fn default_ssh_port() -> u16 {
    service_port("ssh").unwrap_or(22)
}

/// `getservbyname(name, "tcp")` from `/etc/services`.
fn service_port(name: &str) -> Option<u16> {
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    let file = std::fs::File::open("/etc/services").ok()?;
    let mut contents = Vec::new();
    file.take(1024 * 1024).read_to_end(&mut contents).ok()?;
    let contents = String::from_utf8_lossy(&contents);
    for line in contents.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let (Some(service), Some(port_protocol)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some((port, "tcp")) = port_protocol.split_once('/') else {
            continue;
        };
        if service == name || fields.any(|alias| alias == name) {
            return port.parse().ok();
        }
    }
    None
}

/// ssh's `convtime`: `90`, `90s`, `1h30m`, `2d`, `1w`; at most `INT_MAX` seconds.
fn parse_time(text: &str) -> Option<u32> {
    let limit = i64::from(i32::MAX);
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return None;
    }
    let mut total: i64 = 0;
    let mut index = 0;
    while index < bytes.len() {
        // strtol: whitespace, a sign, then digits.
        index += bytes[index..]
            .iter()
            .take_while(|&&byte| is_c_space(byte))
            .count();
        let negative = match bytes.get(index) {
            Some(b'+') => {
                index += 1;
                false
            }
            Some(b'-') => {
                index += 1;
                true
            }
            _ => false,
        };
        let digits = bytes[index..]
            .iter()
            .take_while(|byte| byte.is_ascii_digit())
            .count();
        if digits == 0 {
            return None;
        }
        let mut seconds: i64 = 0;
        for digit in &bytes[index..index + digits] {
            seconds = seconds
                .saturating_mul(10)
                .saturating_add(i64::from(digit - b'0'));
        }
        index += digits;
        if negative && seconds != 0 {
            return None;
        }
        let multiplier = match bytes.get(index) {
            None => 1,
            Some(unit) => {
                index += 1;
                match unit {
                    b's' | b'S' => 1,
                    b'm' | b'M' => 60,
                    b'h' | b'H' => 60 * 60,
                    b'd' | b'D' => 24 * 60 * 60,
                    b'w' | b'W' => 7 * 24 * 60 * 60,
                    _ => return None,
                }
            }
        };
        if seconds > limit / multiplier {
            return None;
        }
        seconds *= multiplier;
        if total > limit - seconds {
            return None;
        }
        total += seconds;
    }
    u32::try_from(total).ok()
}

// ---------------------------------------------------------------------------------------------
// Name checks ssh applies to what comes from the command line.

/// ssh's `ssh_valid_hostname`.
fn valid_hostname(host: &str) -> bool {
    !host.starts_with('-')
        && !host.bytes().any(|byte| {
            b"'`\"$\\;&<>|(){},".contains(&byte) || is_c_space(byte) || byte.is_ascii_control()
        })
}

/// ssh's `ssh_valid_ruser`.
fn valid_remote_user(user: &str) -> bool {
    let bytes = user.as_bytes();
    if bytes.first() == Some(&b'-') {
        return false;
    }
    for (index, &byte) in bytes.iter().enumerate() {
        let next = bytes.get(index + 1).copied();
        if byte.is_ascii_control() || b"'`\";&<>|(){}".contains(&byte) {
            return false;
        }
        // A word starting with '-' could be taken for an option.
        if is_c_space(byte) && next == Some(b'-') {
            return false;
        }
        if byte == b'\\' && next.is_none() {
            return false;
        }
    }
    true
}

fn valid_environment_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

// ---------------------------------------------------------------------------------------------
// Jump hosts.

/// A hop as ssh parses it: `port` is -1 when not given.
struct ParsedHop {
    user: Option<String>,
    host: String,
    port: i32,
}

impl ParsedHop {
    fn into_jump_host(self) -> JumpHost {
        JumpHost {
            user: self.user,
            host: self.host,
            port: u16::try_from(self.port).ok().filter(|&port| port > 0),
        }
    }
}

/// The part of a `ProxyJump` value ssh reads: up to a `#`, and (a quirk of its `rtrim`) up to
/// the first whitespace after the first character.
fn jump_chain_text(spec: &str) -> String {
    let mut text = spec.split('#').next().unwrap_or_default().to_string();
    if let Some(offset) = text.bytes().skip(1).position(is_c_space) {
        text.truncate(offset + 1);
    }
    text
}

/// One hop: `ssh://[user@]host[:port]` or `[user@]host[:port]`, `[...]` around IPv6 addresses.
fn parse_jump_segment(segment: &str, strict: bool) -> std::result::Result<ParsedHop, String> {
    let hop = match parse_ssh_uri(segment)? {
        Some(hop) => hop,
        None => parse_user_host_port(segment)?,
    };
    if strict {
        if !valid_hostname(&hop.host) {
            return Err(format!("invalid host name \"{}\"", hop.host));
        }
        if let Some(user) = &hop.user
            && !valid_remote_user(user)
        {
            return Err(format!("invalid user name \"{user}\""));
        }
    }
    Ok(hop)
}

/// ssh's `parse_user_host_port`.
fn parse_user_host_port(text: &str) -> std::result::Result<ParsedHop, String> {
    let (user, rest) = match text.rfind('@') {
        Some(0) => return Err(format!("empty user name in \"{text}\"")),
        Some(at) => (Some(text[..at].to_string()), &text[at + 1..]),
        None => (None, text),
    };
    let (host, port_text, delimiter) =
        split_host_port(rest).ok_or_else(|| format!("cannot parse host in \"{text}\""))?;
    if delimiter == Some('/') || host.is_empty() {
        return Err(format!("cannot parse host in \"{text}\""));
    }
    let port = match port_text {
        Some(port_text) if !port_text.is_empty() => match port_number(port_text) {
            port if port > 0 => port,
            _ => return Err(format!("bad port \"{port_text}\"")),
        },
        _ => -1,
    };
    Ok(ParsedHop {
        user,
        host: clean_hostname(host).to_string(),
        port,
    })
}

/// ssh's `parse_ssh_uri`: `None` when the text is not an `ssh://` URI.
fn parse_ssh_uri(text: &str) -> std::result::Result<Option<ParsedHop>, String> {
    let Some(rest) = text.strip_prefix("ssh://") else {
        return Ok(None);
    };
    let invalid = || format!("invalid ssh:// URI \"{text}\"");
    let (user, rest) = match rest.find('@') {
        Some(at) => {
            let info = &rest[..at];
            // Connection parameters after ';' are ignored, as in ssh.
            let name = info.split(';').next().unwrap_or_default();
            if name.is_empty() {
                return Err(invalid());
            }
            let user = url_decode(name).ok_or_else(invalid)?;
            if user.contains('\0') {
                return Err(invalid());
            }
            (Some(user), &rest[at + 1..])
        }
        None => (None, rest),
    };
    let (host, after, delimiter) = split_host_port(rest).ok_or_else(invalid)?;
    if host.is_empty() {
        return Err(invalid());
    }
    let host = clean_hostname(host).to_string();
    if !valid_domain(&host) {
        return Err(invalid());
    }
    let mut port = -1;
    if let Some(after) = after.filter(|after| !after.is_empty()) {
        let mut path = Some(after);
        if delimiter == Some(':') {
            let (port_text, rest) = match after.split_once('/') {
                Some((port_text, rest)) => (port_text, Some(rest)),
                None => (after, None),
            };
            port = port_number(port_text);
            if port <= 0 {
                return Err(invalid());
            }
            path = rest;
        }
        if path.is_some_and(|path| !path.is_empty()) {
            return Err(format!("a path is not allowed in \"{text}\""));
        }
    }
    Ok(Some(ParsedHop { user, host, port }))
}

/// ssh's `hpdelim2`: the host (brackets kept), what follows the delimiter, and the delimiter.
fn split_host_port(text: &str) -> Option<(&str, Option<&str>, Option<char>)> {
    let end = if text.starts_with('[') {
        text.find(']')? + 1
    } else {
        text.find([':', '/']).unwrap_or(text.len())
    };
    match text[end..].chars().next() {
        None => Some((text, None, None)),
        Some(delimiter @ (':' | '/')) => {
            Some((&text[..end], Some(&text[end + 1..]), Some(delimiter)))
        }
        Some(_) => None,
    }
}

/// Strips the brackets of `[address]`.
fn clean_hostname(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host)
}

/// ssh's `valid_domain` (without lowercasing).
fn valid_domain(name: &str) -> bool {
    let bytes = name.as_bytes();
    let Some(first) = bytes.first() else {
        return false;
    };
    if !first.is_ascii_alphanumeric() {
        return false;
    }
    let mut last = 0u8;
    for &byte in bytes {
        let byte = byte.to_ascii_lowercase();
        if last == b'.' && byte == b'.' {
            return false;
        }
        if byte != b'.' && byte != b'-' && byte != b'_' && !byte.is_ascii_alphanumeric() {
            return false;
        }
        last = byte;
    }
    true
}

fn url_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => decoded.push(b' '),
            b'%' => {
                let hex = bytes.get(index + 1..index + 3)?;
                // Exactly two hex digits: from_str_radix alone would also take a sign.
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                decoded.push(u8::from_str_radix(hex, 16).ok()?);
                index += 2;
            }
            byte => decoded.push(byte),
        }
        index += 1;
    }
    Some(String::from_utf8_lossy(&decoded).into_owned())
}

// ---------------------------------------------------------------------------------------------
// Expansion.

/// ssh's `percent_expand` (and, with `dollar`, `percent_dollar_expand`): `%x` for the tokens
/// given, `%%`, and `${VAR}` from the environment. Unknown tokens and unset variables are
/// errors, as in ssh.
fn percent_expand(
    text: &str,
    tokens: &[(char, &str)],
    dollar: bool,
) -> std::result::Result<String, String> {
    let mut expanded = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(character) = rest.chars().next() {
        if dollar && rest.starts_with("${") {
            let (value, after) = environment_value(&rest[2..])?;
            expanded.push_str(&value);
            rest = after;
            continue;
        }
        rest = &rest[character.len_utf8()..];
        if character != '%' {
            expanded.push(character);
            continue;
        }
        let Some(token) = rest.chars().next() else {
            return Err("a lone '%' at the end".to_string());
        };
        rest = &rest[token.len_utf8()..];
        if token == '%' {
            expanded.push('%');
            continue;
        }
        match tokens.iter().find(|(name, _)| *name == token) {
            Some((_, value)) => expanded.push_str(value),
            None => return Err(format!("unknown token %{token}")),
        }
    }
    Ok(expanded)
}

/// ssh's `dollar_expand`: only `${VAR}`, `%` left alone.
fn dollar_expand(text: &str) -> std::result::Result<String, String> {
    let mut expanded = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        expanded.push_str(&rest[..start]);
        let (value, after) = environment_value(&rest[start + 2..])?;
        expanded.push_str(&value);
        rest = after;
    }
    expanded.push_str(rest);
    Ok(expanded)
}

/// The value of `NAME}` at the start of `body` (just after `${`) and the text after the `}`.
fn environment_value(body: &str) -> std::result::Result<(String, &str), String> {
    let Some(end) = body.find('}') else {
        return Err(format!(
            "environment variable '{body}' missing closing '}}'"
        ));
    };
    let name = &body[..end];
    if name.is_empty() {
        return Err("zero-length environment variable".to_string());
    }
    match crate::env::var(name) {
        Some(value) => Ok((value, &body[end + 1..])),
        None => Err(format!("environment variable ${{{name}}} is not set")),
    }
}

/// Checks that `text` uses only the `%` tokens in `allowed` (and `%%`).
fn check_tokens(text: &str, allowed: &[u8]) -> std::result::Result<(), String> {
    let placeholders: Vec<(char, &str)> = allowed
        .iter()
        .map(|&token| (char::from(token), ""))
        .collect();
    percent_expand(text, &placeholders, false).map(|_| ())
}

/// Replaces `%<token>` but leaves every other `%` sequence for a later expansion.
fn replace_token(text: &str, token: char, value: &str) -> String {
    let mut replaced = String::with_capacity(text.len());
    let mut characters = text.chars();
    while let Some(character) = characters.next() {
        if character != '%' {
            replaced.push(character);
            continue;
        }
        match characters.next() {
            Some(next) if next == token => replaced.push_str(&value.replace('%', "%%")),
            Some(next) => {
                replaced.push('%');
                replaced.push(next);
            }
            None => replaced.push('%'),
        }
    }
    replaced
}

/// ssh's `tilde_expand`: `~`, `~/path`, `~user/path`; the home directory always ends up
/// followed by one `/`.
fn tilde_expand(path: &str, local: &LocalContext) -> std::result::Result<String, String> {
    let Some(rest) = path.strip_prefix('~') else {
        return Ok(path.to_string());
    };
    let (user, tail) = match rest.find('/') {
        Some(slash) => (&rest[..slash], rest[slash..].trim_start_matches('/')),
        None => (rest, ""),
    };
    let home = if user.is_empty() {
        local.home.to_string_lossy().into_owned()
    } else {
        match nix::unistd::User::from_name(user) {
            Ok(Some(entry)) => entry.dir.to_string_lossy().into_owned(),
            _ => return Err(format!("no such user {user}")),
        }
    };
    let separator = if home.ends_with('/') { "" } else { "/" };
    let expanded = format!("{home}{separator}{tail}");
    if expanded.len() >= PATH_MAX {
        return Err("path too long".to_string());
    }
    Ok(expanded)
}

/// `%C`: the SHA-1 of local host name, host name, port and user, in hex.
fn connection_hash(local_host: &str, host: &str, port: &str, user: &str) -> String {
    use sha1::Digest as _;
    let mut hasher = sha1::Sha1::new();
    for part in [local_host, host, port, user] {
        hasher.update(part.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .fold(String::with_capacity(40), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

// ---------------------------------------------------------------------------------------------
// Addresses: ssh leaves addresses' case alone and rewrites them in canonical form.

/// ssh's `is_addr`.
fn is_address(name: &str) -> bool {
    name.contains('%')
        || name.contains(':')
        || name
            .bytes()
            .all(|byte| byte.is_ascii_digit() || byte == b'.')
        || parse_ipv4_numeric(name).is_some()
        || name.parse::<std::net::Ipv6Addr>().is_ok()
}

/// The address as getnameinfo(NI_NUMERICHOST) prints it, when `name` is a numeric address.
fn canonical_address(name: &str) -> Option<String> {
    if name.contains('%') {
        return None;
    }
    if let Some(address) = parse_ipv4_numeric(name) {
        return Some(address.to_string());
    }
    name.parse::<std::net::Ipv6Addr>().ok().map(format_ipv6)
}

/// glibc's `inet_aton` as getaddrinfo uses it: one to four parts, each decimal, octal (`0`) or
/// hex (`0x`), the last filling the remaining bytes.
fn parse_ipv4_numeric(text: &str) -> Option<std::net::Ipv4Addr> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        let bytes = part.as_bytes();
        if !bytes.first().is_some_and(u8::is_ascii_digit) {
            return None;
        }
        let (digits, radix) =
            if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
                (hex, 16)
            } else if part.len() > 1 && part.starts_with('0') {
                (&part[1..], 8)
            } else {
                (*part, 10)
            };
        let value = if digits.is_empty() {
            0
        } else {
            if !digits.chars().all(|digit| digit.is_digit(radix)) {
                return None;
            }
            u64::from_str_radix(digits, radix).ok()?
        };
        if value > u64::from(u32::MAX) {
            return None;
        }
        values.push(value);
    }
    let (last, leading) = values.split_last()?;
    let mut address: u64 = 0;
    for (index, value) in leading.iter().enumerate() {
        if *value > 0xff {
            return None;
        }
        address |= value << (24 - 8 * index);
    }
    let last_bits = 32 - 8 * leading.len();
    if last_bits < 32 && *last >= (1u64 << last_bits) {
        return None;
    }
    address |= last;
    u32::try_from(address).ok().map(std::net::Ipv4Addr::from)
}

/// glibc's `inet_ntop` for IPv6: the longest run of two or more zero groups becomes `::`, and
/// IPv4-compatible and -mapped addresses end in dotted quad.
fn format_ipv6(address: std::net::Ipv6Addr) -> String {
    let groups = address.segments();
    let mut best: Option<(usize, usize)> = None;
    let mut current: Option<(usize, usize)> = None;
    for (index, &group) in groups.iter().enumerate() {
        if group == 0 {
            let run = current.map_or((index, 1), |(start, length)| (start, length + 1));
            current = Some(run);
            if best.is_none_or(|(_, length)| run.1 > length) {
                best = Some(run);
            }
        } else {
            current = None;
        }
    }
    let best = best.filter(|&(_, length)| length >= 2);
    let mut text = String::new();
    let mut index = 0;
    while index < 8 {
        if let Some((start, length)) = best
            && index == start
        {
            if index == 0 {
                text.push(':');
            }
            text.push(':');
            index += length;
            continue;
        }
        if index == 6
            && let Some((0, length)) = best
            && (length == 6 || (length == 5 && groups[5] == 0xffff))
        {
            let octets = address.octets();
            let _ = write!(
                text,
                "{}.{}.{}.{}",
                octets[12], octets[13], octets[14], octets[15]
            );
            break;
        }
        let _ = write!(text, "{:x}", groups[index]);
        if index < 7 {
            text.push(':');
        }
        index += 1;
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Files: bounded reads and ssh's permission check.

/// Reads a configuration file. The inner error is a failure to open it; the outer one is a
/// file xfer refuses (bad permissions, not a file, too large).
fn read_bounded(
    path: &Path,
    check_permissions: bool,
    local: &LocalContext,
) -> Result<std::result::Result<Vec<u8>, std::io::Error>> {
    // Look before opening: opening a FIFO would block.
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) => return Ok(Err(error)),
    };
    let file_type = metadata.file_type();
    let is_dev_null = file_type.is_char_device()
        && std::fs::metadata("/dev/null").is_ok_and(|null| null.rdev() == metadata.rdev());
    if !(file_type.is_file() || file_type.is_dir() || is_dev_null) {
        return Err(
            Error::config(format!("{} is not a regular file", path.display()))
                .with_hint("configuration and Include must name regular files"),
        );
    }
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) => return Ok(Err(error)),
    };
    let metadata = file
        .metadata()
        .map_err(|error| Error::local_io(format!("cannot inspect {}", path.display()), error))?;
    if check_permissions && !secure_permissions(&metadata, local.uid) {
        return Err(
            Error::config(format!("bad owner or permissions on {}", path.display())).with_hint(
                format!(
                    "make it owned by you or root and not writable by others: chmod go-w {}",
                    path.display()
                ),
            ),
        );
    }
    if metadata.is_dir() {
        // ssh opens a directory and reads no lines from it.
        return Ok(Ok(Vec::new()));
    }
    let mut contents = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut contents)
        .map_err(|error| Error::local_io(format!("reading {}", path.display()), error))?;
    if contents.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::config(format!(
            "{} is larger than {MAX_FILE_BYTES} bytes",
            path.display()
        ))
        .with_hint("that is not an ssh configuration file; check Include lines"));
    }
    Ok(Ok(contents))
}

/// ssh's check (with Debian's allowance for a private group): owned by root or the user, not
/// writable by others, group-writable only when the group is the owner's own.
fn secure_permissions(metadata: &std::fs::Metadata, uid: u32) -> bool {
    if metadata.uid() != 0 && metadata.uid() != uid {
        return false;
    }
    let mode = metadata.mode();
    if mode & 0o002 != 0 {
        return false;
    }
    if mode & 0o020 == 0 {
        return true;
    }
    let gid = nix::unistd::Gid::from_raw(metadata.gid());
    let owner = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(metadata.uid()));
    let group = nix::unistd::Group::from_gid(gid);
    match (owner, group) {
        (Ok(Some(owner)), Ok(Some(group))) => {
            owner.gid == gid && group.mem.iter().all(|member| *member == owner.name)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn local_with_home(home: &Path) -> LocalContext {
        LocalContext {
            user: "alice".to_string(),
            uid: nix::unistd::getuid().as_raw(),
            home: home.to_path_buf(),
            hostname: "laptop.example.org".to_string(),
        }
    }

    fn fake_local() -> LocalContext {
        local_with_home(Path::new("/nonexistent/xfer-test-home"))
    }

    fn with_options(options: &[&str]) -> Overrides {
        Overrides {
            arguments: options
                .iter()
                .map(|option| CommandLineArgument::Option(option.to_string()))
                .collect(),
            ..Overrides::default()
        }
    }

    fn from_text(host: &str, text: &str) -> Result<HostConfig> {
        resolve_from_text(
            host,
            &Overrides::default(),
            "test.conf",
            text,
            &fake_local(),
        )
    }

    fn write(path: &Path, text: &str) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create directory");
        }
        std::fs::write(path, text).expect("write file");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }

    #[test]
    fn match_exec_is_refused_naming_file_and_line() {
        let error = from_text(
            "web",
            "Host *\n  Port 2\n\nMatch host web exec \"test -f /x\"\n  User x\n",
        )
        .expect_err("Match exec must be refused");
        assert_eq!(error.kind(), crate::ErrorKind::Config);
        assert!(
            error.message().contains("test.conf line 4"),
            "{}",
            error.message()
        );
        assert!(
            error.message().contains("Match exec"),
            "{}",
            error.message()
        );
        assert!(error.hint().is_some_and(|hint| hint.contains("-o")));
    }

    #[test]
    fn match_exec_after_a_failed_criterion_is_skipped_as_ssh_skips_it() {
        let config =
            from_text("web", "Match host db exec \"false\"\n  Port 2\n").expect("resolves");
        assert_eq!(config.port, 22);
        // ssh still expands the command first, so unknown tokens fail even then.
        assert!(from_text("web", "Match host db exec \"%Z\"\n  Port 2\n").is_err());
    }

    #[test]
    fn relative_include_resolves_against_home_ssh_directory() {
        let home = tempfile::tempdir().expect("tempdir");
        let local = local_with_home(home.path());
        write(
            &home.path().join(".ssh/config"),
            "Include conf.d/*.conf\nHost *\n  User fallback\n",
        );
        write(
            &home.path().join(".ssh/conf.d/10-web.conf"),
            "Host web\n  HostName web.internal\n  Port 2200\n",
        );
        write(
            &home.path().join(".ssh/conf.d/20-all.conf"),
            "Host *\n  User from-include\n",
        );
        let system = home.path().join("system_config");
        write(&system, "Host *\n  Port 9\n  ServerAliveInterval 30\n");
        let config = resolve_with_system_config(
            "web",
            &Overrides::default(),
            &ConfigSource::Default,
            &local,
            &system,
        )
        .expect("resolves");
        assert_eq!(config.hostname, "web.internal");
        assert_eq!(config.port, 2200);
        assert_eq!(config.user, "from-include");
        assert_eq!(config.server_alive_interval, 30);
        let expected_identity = home.path().join(".ssh/id_rsa");
        assert_eq!(config.identity_files.first(), Some(&expected_identity));
        assert!(config.identity_files_are_defaults);
    }

    #[test]
    fn tilde_include_in_user_config_uses_passwd_home() {
        let home = tempfile::tempdir().expect("tempdir");
        let local = local_with_home(home.path());
        write(&home.path().join("extra.conf"), "Port 4242\n");
        let config = resolve_from_text(
            "h",
            &Overrides::default(),
            "t",
            "Include ~/extra.conf\n",
            &local,
        )
        .expect("resolves");
        assert_eq!(config.port, 4242);
    }

    #[test]
    fn system_config_may_not_include_tilde_paths() {
        let home = tempfile::tempdir().expect("tempdir");
        let local = local_with_home(home.path());
        let system = home.path().join("system_config");
        write(&system, "Include ~/x.conf\n");
        let error = resolve_with_system_config(
            "h",
            &Overrides::default(),
            &ConfigSource::Default,
            &local,
            &system,
        )
        .expect_err("refused");
        assert!(error.message().contains("line 1"), "{}", error.message());
    }

    #[test]
    fn default_source_ignores_missing_files() {
        let local = fake_local();
        let config = resolve_with_system_config(
            "h",
            &Overrides::default(),
            &ConfigSource::Default,
            &local,
            Path::new("/nonexistent/ssh_config"),
        )
        .expect("resolves");
        assert_eq!(config.port, 22);
        assert_eq!(config.user, "alice");
        assert_eq!(
            config.user_known_hosts_files,
            vec![
                PathBuf::from("/nonexistent/xfer-test-home/.ssh/known_hosts"),
                PathBuf::from("/nonexistent/xfer-test-home/.ssh/known_hosts2"),
            ]
        );
    }

    #[test]
    fn missing_file_given_with_dash_f_is_an_error_and_none_reads_nothing() {
        let local = fake_local();
        let missing = ConfigSource::File(PathBuf::from("/nonexistent/config"));
        assert!(resolve("h", &Overrides::default(), &missing, &local).is_err());
        let none = ConfigSource::File(PathBuf::from("none"));
        let config = resolve("h", &Overrides::default(), &none, &local).expect("resolves");
        assert_eq!(config.hostname, "h");
    }

    #[test]
    fn self_include_is_bounded() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("loop.conf");
        write(&path, &format!("Include {}\n", path.display()));
        let error = resolve(
            "h",
            &Overrides::default(),
            &ConfigSource::File(path),
            &fake_local(),
        )
        .expect_err("loop refused");
        assert!(
            error.message().contains("nested Include"),
            "{}",
            error.message()
        );
    }

    #[test]
    fn writable_included_file_is_refused() {
        let directory = tempfile::tempdir().expect("tempdir");
        let included = directory.path().join("open.conf");
        write(&included, "Port 5\n");
        std::fs::set_permissions(&included, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let error =
            from_text("h", &format!("Include {}\n", included.display())).expect_err("refused");
        assert!(
            error.message().contains("permissions"),
            "{}",
            error.message()
        );
    }

    #[test]
    fn include_of_directory_and_fifo() {
        let directory = tempfile::tempdir().expect("tempdir");
        let config = from_text(
            "h",
            &format!("Include {}\nPort 3\n", directory.path().display()),
        )
        .expect("a directory reads as empty");
        assert_eq!(config.port, 3);
        let fifo = directory.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        assert!(from_text("h", &format!("Include {}\n", fifo.display())).is_err());
    }

    #[test]
    fn directives_ssh_knows_but_xfer_does_not_use_are_skipped() {
        let config = from_text(
            "h",
            "Ciphers not-a-cipher\nProtocol 2\nRSAAuthentication no\nGSSAPIKeyExchange yes\nHost h\n  Port 7\n",
        )
        .expect("skipped");
        assert_eq!(config.port, 7);
    }

    #[test]
    fn unknown_keywords_are_refused_naming_file_and_line() {
        // A mistyped Host would otherwise let the block below it apply to every host.
        let error = from_text("other", "Port 5\nHots gpu\n  Port 2222\n").expect_err("refused");
        assert_eq!(error.kind(), crate::ErrorKind::Config);
        assert!(
            error.message().contains("test.conf line 2")
                && error.message().contains("Bad configuration option")
                && error.message().contains("\"hots\""),
            "{}",
            error.message()
        );
        assert!(
            error
                .hint()
                .is_some_and(|hint| hint.contains("IgnoreUnknown"))
        );
        // Inside a block that does not apply, too, as ssh does.
        assert!(from_text("h", "Host nothing\n  Frobnicate yes\n").is_err());
        // A keyword without an argument is refused before it is looked up, as in ssh.
        assert!(from_text("h", "Compression\n").is_err());
    }

    #[test]
    fn ignore_unknown_lists_keywords_to_skip() {
        let config = from_text(
            "h",
            "IgnoreUnknown UseKeychain,Xfer*\nUseKeychain yes\nXferThing 1\nPort 9\n",
        )
        .expect("skipped");
        assert_eq!(config.port, 9);
        // Only from where it is set on, only when active, and the first value wins.
        assert!(from_text("h", "UseKeychain yes\nIgnoreUnknown UseKeychain\n").is_err());
        assert!(
            from_text(
                "h",
                "Host x\n  IgnoreUnknown UseKeychain\nHost *\n  UseKeychain yes\n"
            )
            .is_err()
        );
        assert!(
            from_text(
                "h",
                "IgnoreUnknown Other\nIgnoreUnknown UseKeychain\nUseKeychain yes\n"
            )
            .is_err()
        );
        assert!(from_text("h", "IgnoreUnknown a b\n").is_err());
        let overrides = with_options(&["IgnoreUnknown=UseKeychain", "UseKeychain=yes"]);
        assert!(resolve_from_text("h", &overrides, "t", "", &fake_local()).is_ok());
    }

    #[test]
    fn byte_order_mark_is_refused_and_named() {
        let error = from_text("h", "\u{feff}Host h\n  Port 7\n").expect_err("refused");
        assert!(
            error.message().contains("test.conf line 1")
                && error.message().contains("byte order mark"),
            "{}",
            error.message()
        );
    }

    #[test]
    fn unknown_command_line_option_is_a_usage_error() {
        let overrides = with_options(&["Hots=x"]);
        let source = ConfigSource::File(PathBuf::from("none"));
        let error = resolve("h", &overrides, &source, &fake_local()).expect_err("refused");
        assert_eq!(error.kind(), crate::ErrorKind::Usage);
        assert!(
            error.message().contains("-o 'Hots=x'"),
            "{}",
            error.message()
        );
    }

    #[test]
    fn keyword_list_is_sorted_and_holds_every_keyword_xfer_reads() {
        assert!(SSH_KEYWORDS.windows(2).all(|pair| pair[0] < pair[1]));
        for name in SSH_KEYWORDS {
            assert_eq!(name.to_ascii_lowercase(), name);
        }
        for (name, _) in KEYWORD_NAMES {
            assert!(SSH_KEYWORDS.binary_search(&name).is_ok(), "{name}");
        }
    }

    #[test]
    fn command_line_refuses_host_and_bad_values() {
        let local = fake_local();
        let source = ConfigSource::File(PathBuf::from("none"));
        for option in [
            "Host=x",
            "Match all",
            "Include /x",
            "Port=abc",
            "BatchMode maybe",
        ] {
            let overrides = with_options(&[option]);
            let error = resolve("h", &overrides, &source, &local).expect_err(option);
            assert_eq!(error.kind(), crate::ErrorKind::Usage, "{option}");
        }
    }

    #[test]
    fn command_line_arguments_count_in_the_order_given() {
        let source = ConfigSource::File(PathBuf::from("none"));
        let local = fake_local();
        let resolve_with = |arguments: Vec<CommandLineArgument>| {
            let overrides = Overrides {
                arguments,
                ..Overrides::default()
            };
            resolve("h", &overrides, &source, &local)
        };
        use CommandLineArgument::{Jump, Option, Port};
        let port_first = resolve_with(vec![Port("2042".into()), Option("Port=2041".into())]);
        assert_eq!(port_first.expect("resolves").port, 2042);
        let option_first = resolve_with(vec![Option("Port=2041".into()), Port("2042".into())]);
        assert_eq!(option_first.expect("resolves").port, 2041);
        // A bad -p is refused only when it is the port that counts, as ssh does.
        assert!(resolve_with(vec![Port("0".into())]).is_err());
        assert!(resolve_with(vec![Option("Port=5".into()), Port("0".into())]).is_ok());
        assert_eq!(
            resolve_with(vec![Port("ssh".into())])
                .expect("service")
                .port,
            22
        );
        // -J then -o ProxyCommand or ProxyJump: the first wins; the other way round is refused.
        let jump_first = resolve_with(vec![
            Jump("bastion".into()),
            Option("ProxyCommand=nc %h %p".into()),
        ])
        .expect("resolves");
        assert_eq!(jump_first.proxy_jump.len(), 1);
        assert_eq!(jump_first.proxy_command, None);
        let jump_twice =
            resolve_with(vec![Jump("a".into()), Option("ProxyJump=b".into())]).expect("resolves");
        assert_eq!(jump_twice.proxy_jump[0].host, "a");
        assert!(resolve_with(vec![Option("ProxyCommand=nc".into()), Jump("a".into())]).is_err());
        assert!(resolve_with(vec![Option("ProxyJump=b".into()), Jump("a".into())]).is_err());
        let none_first = resolve_with(vec![Jump("none".into()), Option("ProxyCommand=nc".into())])
            .expect("resolves");
        assert!(none_first.proxy_jump.is_empty());
        assert_eq!(none_first.proxy_command.as_deref(), Some("nc"));
    }

    #[test]
    fn advice_repeats_what_reached_the_host_quoted_for_a_shell() {
        let overrides = Overrides {
            user: Some("ann".to_string()),
            arguments: vec![
                CommandLineArgument::Port("2042".into()),
                CommandLineArgument::Option("BatchMode yes".into()),
                CommandLineArgument::Identity("~/keys/it's".into()),
                CommandLineArgument::Jump("bastion:2200".into()),
            ],
        };
        let source = ConfigSource::File(PathBuf::from("/etc/xfer test/config"));
        let config = resolve(
            "::1",
            &overrides,
            &ConfigSource::File(PathBuf::from("none")),
            &fake_local(),
        )
        .expect("resolves");
        assert_eq!(
            config.advice("forget-host", &[]),
            "xfer forget-host -F none -p 2042 -o 'BatchMode yes' -i '~/keys/it'\\''s' -J bastion:2200 'ann@[::1]'"
        );
        let words = command_line(Some(&source), &Overrides::default(), "web");
        assert_eq!(words, ["-F", "/etc/xfer test/config", "web"]);
        let config = from_text("web", "").expect("resolves");
        assert_eq!(
            config.advice("doctor", &["-o", "StrictHostKeyChecking=accept-new"]),
            "xfer doctor -o StrictHostKeyChecking=accept-new web"
        );
    }

    #[test]
    fn identity_option_skips_missing_files_like_ssh() {
        let directory = tempfile::tempdir().expect("tempdir");
        let key = directory.path().join("key");
        write(&key, "not really a key\n");
        let overrides = Overrides {
            arguments: vec![
                CommandLineArgument::Identity("/nonexistent/key".to_string()),
                CommandLineArgument::Identity(key.display().to_string()),
            ],
            ..Overrides::default()
        };
        let config = resolve_from_text(
            "h",
            &overrides,
            "t",
            "IdentityFile /cfg/key\n",
            &fake_local(),
        )
        .expect("resolves");
        assert_eq!(config.identity_files, vec![key, PathBuf::from("/cfg/key")]);
        assert!(!config.identity_files_are_defaults);
    }

    #[test]
    fn identity_file_none_means_no_files_and_no_defaults() {
        let config = from_text("h", "IdentityFile none\n").expect("resolves");
        assert!(config.identity_files.is_empty());
        assert!(!config.identity_files_are_defaults);
    }

    #[test]
    fn tokens_expand_in_identity_files() {
        let config = from_text("web", "Host web\n  HostName Web.Example\n  User bob\n  Port 2222\n  IdentityFile ~/%d/%u/%h/%r/%p/%n/%l/%L/%i/%%\n")
            .expect("resolves");
        let uid = nix::unistd::getuid().as_raw();
        assert_eq!(
            config.identity_files,
            vec![PathBuf::from(format!(
                "/nonexistent/xfer-test-home//nonexistent/xfer-test-home/alice/web.example/bob/2222/web/laptop.example.org/laptop/{uid}/%"
            ))]
        );
        assert!(from_text("h", "IdentityFile ~/%Q\n").is_err());
    }

    #[test]
    fn proxy_command_expansion() {
        let config = from_text("web", "Host web\n  HostName 10.0.0.5\n  User bob\n  Port 2200\n  ProxyCommand nc -X connect %h:%p # %r@%n %%\n")
            .expect("resolves");
        assert_eq!(
            config.expand_proxy_command().as_deref(),
            Some("nc -X connect 10.0.0.5:2200 # bob@web %")
        );
        let with_alias = from_text("web", "HostKeyAlias Alias%x\nProxyCommand connect %k %h\n")
            .expect("resolves");
        assert_eq!(
            with_alias.expand_proxy_command().as_deref(),
            Some("connect alias%x web")
        );
        assert!(from_text("web", "ProxyCommand nc %d\n").is_err());
        assert_eq!(
            from_text("web", "ProxyCommand none\n")
                .expect("resolves")
                .proxy_command,
            None
        );
    }

    #[test]
    fn jump_host_specs() {
        let hops =
            parse_jump_hosts("alice@bastion:2222,ssh://bob@inner.example:23,[fe80::1]:2022,plain")
                .expect("parses");
        assert_eq!(
            hops,
            vec![
                JumpHost {
                    user: Some("alice".into()),
                    host: "bastion".into(),
                    port: Some(2222)
                },
                JumpHost {
                    user: Some("bob".into()),
                    host: "inner.example".into(),
                    port: Some(23)
                },
                JumpHost {
                    user: None,
                    host: "fe80::1".into(),
                    port: Some(2022)
                },
                JumpHost {
                    user: None,
                    host: "plain".into(),
                    port: None
                },
            ]
        );
        assert_eq!(parse_jump_hosts("none").expect("none"), Vec::new());
        assert_eq!(
            parse_jump_hosts("ssh://a%40b+c@host").expect("url-decoded user")[0]
                .user
                .as_deref(),
            Some("a@b c")
        );
        for bad in [
            "",
            "a,",
            "@host",
            "host:0",
            "host:99999",
            "[::1",
            "ssh://[::1]:22",
            "ssh://h/path",
            "a;b",
            "h$(x)",
            "-oProxyCommand=x",
        ] {
            assert!(parse_jump_hosts(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn proxy_jump_chain_in_config_keeps_order_and_first_wins_against_proxy_command() {
        let config = from_text("h", "ProxyJump a@one:1,two,[::1]:3\nProxyCommand nc %h\n")
            .expect("resolves");
        let hosts: Vec<&str> = config
            .proxy_jump
            .iter()
            .map(|hop| hop.host.as_str())
            .collect();
        assert_eq!(hosts, ["one", "two", "::1"]);
        assert_eq!(config.proxy_command, None);
        let config = from_text("h", "ProxyCommand nc %h\nProxyJump one\n").expect("resolves");
        assert!(config.proxy_jump.is_empty());
        assert_eq!(config.proxy_command.as_deref(), Some("nc %h"));
        // Configuration files may use characters the command line may not.
        assert!(from_text("h", "ProxyJump a;b\n").is_ok());
        assert!(from_text("h", "ProxyJump h\n").is_err(), "loop via itself");
    }

    #[test]
    fn tokenizer_reads_lines_like_ssh() {
        let mut line = b"  HostName\t= \"a b\" rest\0".to_vec();
        let mut cursor = Some(0);
        let first = next_token(&mut line, &mut cursor, true).expect("token");
        assert_eq!(c_string(&line, first), b"");
        let keyword = next_token(&mut line, &mut cursor, true).expect("token");
        assert_eq!(c_string(&line, keyword), b"HostName");
        let value = next_token(&mut line, &mut cursor, true).expect("token");
        assert_eq!(c_string(&line, value), b"a b");
        assert_eq!(
            split_arguments(br#"one "two three" 'four' fi\ ve \"six # comment"#),
            Some(vec![
                b"one".to_vec(),
                b"two three".to_vec(),
                b"four".to_vec(),
                b"fi ve".to_vec(),
                b"\"six".to_vec()
            ])
        );
        assert_eq!(split_arguments(b"\"open"), None);
    }

    #[test]
    fn times_ports_and_numbers() {
        assert_eq!(parse_time("90"), Some(90));
        assert_eq!(parse_time("1h30m"), Some(5400));
        assert_eq!(parse_time("1W"), Some(604_800));
        assert_eq!(parse_time("-0"), Some(0));
        assert_eq!(parse_time("5x"), None);
        assert_eq!(parse_time("-5"), None);
        assert_eq!(parse_time("99999999999"), None);
        assert_eq!(parse_time(""), None);
        assert_eq!(port_number("+22"), 22);
        assert_eq!(port_number("65536"), -1);
        assert_eq!(parse_decimal(" 7", 0, 10), Some(7));
        assert_eq!(parse_decimal("7 ", 0, 10), None);
    }

    #[test]
    fn addresses_are_canonical_and_keep_case() {
        assert_eq!(
            from_text("127.1", "").expect("resolves").hostname,
            "127.0.0.1"
        );
        assert_eq!(
            from_text("1234", "").expect("resolves").hostname,
            "0.0.4.210"
        );
        assert_eq!(
            from_text("0x7f.1", "").expect("resolves").hostname,
            "127.0.0.1"
        );
        assert_eq!(
            from_text("FE80::1", "").expect("resolves").hostname,
            "FE80::1"
        );
        assert_eq!(from_text("::0001", "").expect("resolves").hostname, "::1");
        assert_eq!(
            from_text("Web.Example", "").expect("resolves").hostname,
            "web.example"
        );
        assert_eq!(
            format_ipv6("::ffff:1.2.3.4".parse().expect("v6")),
            "::ffff:1.2.3.4"
        );
        assert_eq!(format_ipv6("::1.2.3.4".parse().expect("v6")), "::1.2.3.4");
        assert_eq!(
            format_ipv6("1:0:0:2:0:0:0:3".parse().expect("v6")),
            "1:0:0:2::3"
        );
        assert_eq!(parse_ipv4_numeric("256.1.1.1"), None);
        assert_eq!(parse_ipv4_numeric("08"), None);
    }

    #[test]
    fn command_line_host_and_user_are_checked() {
        let local = fake_local();
        let source = ConfigSource::File(PathBuf::from("none"));
        assert!(resolve("a;b", &Overrides::default(), &source, &local).is_err());
        assert!(resolve("-oProxyCommand=x", &Overrides::default(), &source, &local).is_err());
        let overrides = Overrides {
            user: Some("a`b`".to_string()),
            ..Overrides::default()
        };
        assert!(resolve("h", &overrides, &source, &local).is_err());
        // A configured user is not checked, as in ssh.
        assert_eq!(from_text("h", "User a;b\n").expect("resolves").user, "a;b");
    }

    #[test]
    fn final_pass_rereads_with_the_final_host_name() {
        let config = from_text(
            "short",
            "Host short\n  HostName Long.Example\nHost long.example\n  Port 2022\nMatch final host long.example\n  User late\n",
        )
        .expect("resolves");
        assert_eq!(config.hostname, "long.example");
        assert_eq!(config.port, 2022);
        assert_eq!(config.user, "late");
    }

    #[test]
    fn environment_variables_expand_where_ssh_expands_them() {
        let home = crate::env::var("HOME");
        let result = from_text("h", "UserKnownHostsFile ${HOME}/kh\n");
        match home {
            Some(home) => assert_eq!(
                result.expect("resolves").user_known_hosts_files,
                vec![PathBuf::from(format!("{home}/kh"))]
            ),
            None => assert!(result.is_err()),
        }
        assert!(from_text("h", "IdentityAgent ${XFER_SURELY_UNSET_VARIABLE}\n").is_err());
        assert!(from_text("h", "IdentityAgent $bad-name\n").is_err());
        assert_eq!(
            from_text("h", "IdentityAgent SSH_AUTH_SOCK\n")
                .expect("resolves")
                .identity_agent
                .as_deref(),
            Some("SSH_AUTH_SOCK")
        );
    }

    #[test]
    fn interactive_authentication_settings_default_as_in_ssh() {
        let config = from_text("h", "").expect("resolves");
        assert!(config.password_authentication);
        assert!(config.keyboard_interactive_authentication);
        assert_eq!(config.preferred_authentications, None);
        assert_eq!(config.number_of_password_prompts, 3);
        assert_eq!(
            config.authentication_order(),
            [
                "gssapi-with-mic",
                "hostbased",
                "publickey",
                "keyboard-interactive",
                "password"
            ]
        );
    }

    #[test]
    fn interactive_authentication_settings_are_read_first_value_wins() {
        let config = from_text(
            "h",
            "Host h\n  PasswordAuthentication no\n  KbdInteractiveAuthentication no\n  \
             PreferredAuthentications password,keyboard-interactive\n  \
             NumberOfPasswordPrompts 1\n\
             Host *\n  PasswordAuthentication yes\n  NumberOfPasswordPrompts 5\n",
        )
        .expect("resolves");
        assert!(!config.password_authentication);
        assert!(!config.keyboard_interactive_authentication);
        assert_eq!(config.number_of_password_prompts, 1);
        assert_eq!(
            config.authentication_order(),
            ["password", "keyboard-interactive"]
        );
        // The older names set the same option, and the first of them wins.
        for alias in [
            "ChallengeResponseAuthentication",
            "SkeyAuthentication",
            "TisAuthentication",
        ] {
            let text = format!("{alias} no\nKbdInteractiveAuthentication yes\n");
            let config = from_text("h", &text).expect("resolves");
            assert!(!config.keyboard_interactive_authentication, "{alias}");
        }
        let config = from_text(
            "h",
            "KbdInteractiveAuthentication yes\nChallengeResponseAuthentication no\n",
        )
        .expect("resolves");
        assert!(config.keyboard_interactive_authentication);
        // A command-line -o comes first, as ssh applies it before reading any file.
        let config = resolve_from_text(
            "h",
            &with_options(&["PasswordAuthentication=no", "NumberOfPasswordPrompts 0"]),
            "test.conf",
            "PasswordAuthentication yes\nNumberOfPasswordPrompts 4\n",
            &fake_local(),
        )
        .expect("resolves");
        assert!(!config.password_authentication);
        assert_eq!(config.number_of_password_prompts, 0);
    }

    #[test]
    fn interactive_authentication_values_are_checked_as_ssh_checks_them() {
        for text in [
            "PasswordAuthentication maybe\n",
            "KbdInteractiveAuthentication\n",
            "NumberOfPasswordPrompts -1\n",
            "NumberOfPasswordPrompts three\n",
            "NumberOfPasswordPrompts 0x5\n",
            // One word: a space after the comma leaves a second argument, which ssh refuses.
            "PreferredAuthentications password, publickey\n",
        ] {
            assert!(from_text("h", text).is_err(), "{text}");
        }
        // The names themselves are not checked: ssh skips those it does not know.
        let config = from_text("h", "PreferredAuthentications foo,,Password\n").expect("resolves");
        assert_eq!(config.authentication_order(), ["foo", "Password"]);
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(text in "\\PC{0,400}", host in "[a-zA-Z0-9.:%_-]{1,20}") {
            let _ = from_text(&host, &text);
        }

        #[test]
        fn directive_soup_never_panics(lines in proptest::collection::vec(
            "(Host|Match|Include|HostName|Port|User|IdentityFile|ProxyJump|ProxyCommand|UserKnownHostsFile|ConnectTimeout|StrictHostKeyChecking)[ =]{1,2}[ -~]{0,30}",
            0..12,
        )) {
            let _ = from_text("web", &lines.join("\n"));
            let _ = parse_jump_hosts(&lines.join(","));
        }
    }
}
