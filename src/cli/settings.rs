//! Validated settings, built from the raw command line. This is where a bad `-o` or an unusable
//! `-F` path becomes a usage error, before anything connects.

use crate::cli::args::{ConnectionArgs, HostsArgs, OutputArgs};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::Path;
use std::sync::Arc;
use xfer::error::{Error, Result};
use xfer::ssh::config::{CommandLineArgument, ConfigSource, LocalContext, Overrides};
use xfer::ssh::connect::{Connector, Transport};
use xfer::ssh::system::SystemSsh;

/// How much to say on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose(u8),
}

impl Verbosity {
    pub fn from_args(output: &OutputArgs) -> Self {
        if output.quiet {
            Verbosity::Quiet
        } else if output.verbose > 0 {
            Verbosity::Verbose(output.verbose)
        } else {
            Verbosity::Normal
        }
    }
}

/// Everything needed to reach hosts.
pub struct ConnectionSettings {
    pub source: ConfigSource,
    pub overrides: Overrides,
    pub transport: Transport,
}

impl ConnectionSettings {
    pub fn from_args(args: &ConnectionArgs) -> Result<Self> {
        let source = match &args.config {
            Some(path) => {
                // `-F none` means no config file at all, as for ssh; `-F /dev/null` (the usual
                // way to say so in scripts) reads as an empty file.
                if path.as_os_str() != "none" && !path.is_file() && !is_null_device(path) {
                    return Err(Error::usage(format!(
                        "config file {} does not exist or is not a file",
                        path.display()
                    ))
                    .with_hint("give -F an ssh_config file, or -F none for no file"));
                }
                ConfigSource::File(path.clone())
            }
            None => ConfigSource::Default,
        };
        for argument in &args.in_order {
            let CommandLineArgument::Option(option) = argument else {
                continue;
            };
            let valid = option
                .split_once(['=', ' ', '\t'])
                .is_some_and(|(key, value)| !key.trim().is_empty() && !value.trim().is_empty());
            if !valid {
                return Err(Error::usage(format!(
                    "-o {option:?} is not of the form Key=Value"
                )));
            }
        }
        let ssh_command = args
            .ssh_command
            .clone()
            .or_else(|| xfer::env::var(xfer::env::XFER_SSH_COMMAND));
        let transport = match ssh_command {
            Some(command) => Transport::System(SystemSsh::parse(&command)?),
            None => Transport::Native,
        };
        Ok(ConnectionSettings {
            source,
            overrides: Overrides {
                user: None,
                arguments: args.in_order.clone(),
            },
            transport,
        })
    }

    pub fn connector(&self) -> Result<Connector> {
        let local = LocalContext::current()?;
        Ok(
            Connector::new(self.source.clone(), self.overrides.clone(), local)
                .with_transport(self.transport.clone())
                .with_answerer(Arc::new(crate::cli::progress::PausingTerminal)),
        )
    }
}

/// Whether `path` is the null device, under any name.
fn is_null_device(path: &Path) -> bool {
    match (std::fs::metadata(path), std::fs::metadata("/dev/null")) {
        (Ok(given), Ok(null)) => given.file_type().is_char_device() && given.rdev() == null.rdev(),
        _ => false,
    }
}

/// The hosts a doctor or secret command names (arguments and `--hosts FILE`, lists expanded,
/// none twice), checked as host names before anything connects.
pub fn hosts(arguments: &[String], list: &HostsArgs) -> Result<Vec<xfer::target::HostSpec>> {
    if list.hosts_at_once == 0 {
        return Err(Error::usage("--hosts-at-once takes at least 1"));
    }
    xfer::host_list::hosts_named(arguments, list.file.as_deref())?
        .iter()
        .map(|host| xfer::target::parse_host(host))
        .collect()
}
