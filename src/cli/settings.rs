//! Validated settings, built from the raw command line. This is where a bad `-o` or an unusable
//! `-F` path becomes a usage error, before anything connects.

use crate::cli::args::{ConnectionArgs, OutputArgs};
use xfer::error::{Error, Result};
use xfer::ssh::config::{ConfigSource, LocalContext, Overrides};
use xfer::ssh::connect::Connector;

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
}

impl ConnectionSettings {
    pub fn from_args(args: &ConnectionArgs) -> Result<Self> {
        let source = match &args.config {
            Some(path) => {
                // `-F none` means no config file at all, as for ssh.
                if path.as_os_str() != "none" && !path.is_file() {
                    return Err(Error::usage(format!(
                        "config file {} does not exist or is not a file",
                        path.display()
                    )));
                }
                ConfigSource::File(path.clone())
            }
            None => ConfigSource::Default,
        };
        for option in &args.option {
            let valid = option
                .split_once(['=', ' ', '\t'])
                .is_some_and(|(key, value)| !key.trim().is_empty() && !value.trim().is_empty());
            if !valid {
                return Err(Error::usage(format!(
                    "-o {option:?} is not of the form Key=Value"
                )));
            }
        }
        if args.port == Some(0) {
            return Err(Error::usage("-p 0 is not a port"));
        }
        Ok(ConnectionSettings {
            source,
            overrides: Overrides {
                user: None,
                port: args.port,
                identity_files: args.identity.clone(),
                proxy_jump: args.jump.clone(),
                options: args.option.clone(),
            },
        })
    }

    pub fn connector(&self) -> Result<Connector> {
        let local = LocalContext::current()?;
        Ok(Connector::new(
            self.source.clone(),
            self.overrides.clone(),
            local,
        ))
    }
}
