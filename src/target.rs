//! Command-line locations: `alias:path`, `user@host:path`, `user@[::1]:path`, or a local path.
//!
//! The rules follow scp and rsync: an argument is remote when it has a `:` and no `/` comes
//! before that first `:` (so `./a:b` and `/tmp/x:y` are local). An IPv6 address goes in
//! brackets. Host and user names are checked here, once, because they later reach ProxyCommand
//! token expansion and error messages: anything that could be read as a shell word or an option
//! is refused.

use crate::error::{Error, Result};
use crate::terminal::printable;
use std::fmt;
use std::path::PathBuf;

/// Who to log in as on which host, as written on the command line (before ssh_config applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    pub user: Option<String>,
    /// An alias, a name or an address; IPv6 without its brackets.
    pub host: String,
}

impl fmt::Display for HostSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)
        } else {
            f.write_str(&self.host)
        }
    }
}

/// One side of a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    /// A path on a host; an empty path means the login directory, as with scp.
    Remote {
        host: HostSpec,
        path: String,
    },
}

/// Longest argument accepted; a target is typed by a person or a script, not a document.
const MAX_ARGUMENT_LENGTH: usize = 64 * 1024;

/// Parses a transfer argument.
pub fn parse_location(argument: &str) -> Result<Location> {
    if argument.is_empty() {
        return Err(Error::usage("empty path"));
    }
    if argument.len() > MAX_ARGUMENT_LENGTH {
        return Err(Error::usage("argument too long"));
    }
    let Some(split) = remote_split(argument) else {
        return Ok(Location::Local(PathBuf::from(argument)));
    };
    let (host_part, path) = (&argument[..split], &argument[split + 1..]);
    let host = parse_host(host_part)?;
    if path.contains('\0') {
        return Err(Error::usage(format!(
            "remote path on {host} contains a NUL byte"
        )));
    }
    Ok(Location::Remote {
        host,
        path: path.to_string(),
    })
}

/// A remote path as scp and sftp read it, before anything is asked of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemotePath {
    /// Absolute, or relative to the login directory (where both sftp-server and the agent
    /// start): `host:`, `host:~`, `host:~/x` and `host:x` all become login-relative.
    Ready(String),
    /// `~user` or `~user/rest`: that user's home must be asked of the host first.
    UserHome { user: String, rest: String },
}

/// Reads `~`, `~/x`, `~user/x` and the empty path the way scp does. A `~` that a shell would
/// have expanded locally never reaches here, so any `~` left is the remote's.
pub fn remote_path(path: &str) -> RemotePath {
    let Some(after) = path.strip_prefix('~') else {
        return RemotePath::Ready(if path.is_empty() {
            ".".to_string()
        } else {
            path.to_string()
        });
    };
    let (user, rest) = after.split_once('/').unwrap_or((after, ""));
    let rest = rest.trim_start_matches('/');
    if user.is_empty() {
        return RemotePath::Ready(if rest.is_empty() {
            ".".to_string()
        } else {
            rest.to_string()
        });
    }
    RemotePath::UserHome {
        user: user.to_string(),
        rest: rest.to_string(),
    }
}

/// Finds the `:` that separates host from path, if the argument is remote at all.
fn remote_split(argument: &str) -> Option<usize> {
    // A bracketed IPv6 address: `[::1]:path` or `user@[::1]:path`.
    let after_user = argument.find('@').filter(|&at| {
        let before = &argument[..at];
        !before.contains('/') && !before.contains(':')
    });
    let host_start = after_user.map_or(0, |at| at + 1);
    if argument[host_start..].starts_with('[') {
        let close = argument[host_start..].find(']')? + host_start;
        let rest = &argument[close + 1..];
        return rest.starts_with(':').then_some(close + 1);
    }
    let colon = argument.find(':')?;
    if argument[..colon].contains('/') || colon == 0 {
        return None;
    }
    Some(colon)
}

/// Parses a host argument: `alias`, `user@host`, `user@[::1]` or `[::1]`.
pub fn parse_host(argument: &str) -> Result<HostSpec> {
    if argument.is_empty() {
        return Err(Error::usage("empty host name"));
    }
    if argument.len() > MAX_ARGUMENT_LENGTH {
        return Err(Error::usage("host argument too long"));
    }
    let (user, host) = match argument.rfind('@') {
        Some(at) => (Some(&argument[..at]), &argument[at + 1..]),
        None => (None, argument),
    };
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').ok_or_else(|| {
            Error::usage(format!(
                "host '{}' opens a '[' it does not close",
                printable(host)
            ))
        })?,
        None => host,
    };
    check_host_name(host)?;
    if let Some(user) = user {
        check_user_name(user)?;
    }
    Ok(HostSpec {
        user: user.map(str::to_string),
        host: host.to_string(),
    })
}

/// Refuses host names that could be taken as an option or a shell word once they reach a
/// ProxyCommand, the way OpenSSH refuses them.
pub fn check_host_name(host: &str) -> Result<()> {
    if host.is_empty() {
        return Err(Error::usage("empty host name"));
    }
    if host.starts_with('-') {
        return Err(Error::usage(format!(
            "host name '{}' starts with '-'",
            printable(host)
        )));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-:%".contains(c);
    if let Some(bad) = host.chars().find(|&c| !allowed(c)) {
        return Err(Error::usage(format!(
            "host name '{}' contains the character {:?}, which no host name has",
            printable(host),
            bad
        ))
        .with_hint("use an alias from your ssh_config, a DNS name or an IP address"));
    }
    Ok(())
}

/// Refuses user names with characters that are special to a shell or to ssh_config tokens.
pub fn check_user_name(user: &str) -> Result<()> {
    if user.is_empty() {
        return Err(Error::usage("empty user name before '@'"));
    }
    if user.starts_with('-') {
        return Err(Error::usage(format!(
            "user name '{}' starts with '-'",
            printable(user)
        )));
    }
    let forbidden =
        |c: char| c.is_control() || c.is_whitespace() || "'\"`$;&|<>()\\*?[]{}!#~/@".contains(c);
    if let Some(bad) = user.chars().find(|&c| forbidden(c)) {
        return Err(Error::usage(format!(
            "user name '{}' contains the character {:?}",
            printable(user),
            bad
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{RemotePath, remote_path};

    #[test]
    fn remote_paths_read_as_scp_reads_them() {
        let ready = |path: &str| RemotePath::Ready(path.to_string());
        assert_eq!(remote_path(""), ready("."));
        assert_eq!(remote_path("~"), ready("."));
        assert_eq!(remote_path("~/"), ready("."));
        assert_eq!(remote_path("~/data/x"), ready("data/x"));
        assert_eq!(remote_path("~//data"), ready("data"));
        assert_eq!(remote_path("data/x"), ready("data/x"));
        assert_eq!(remote_path("/abs/~x"), ready("/abs/~x"));
        assert_eq!(
            remote_path("~alice/x/y"),
            RemotePath::UserHome {
                user: "alice".into(),
                rest: "x/y".into()
            }
        );
        assert_eq!(
            remote_path("~alice"),
            RemotePath::UserHome {
                user: "alice".into(),
                rest: String::new()
            }
        );
    }

    use super::*;

    fn remote(user: Option<&str>, host: &str, path: &str) -> Location {
        Location::Remote {
            host: HostSpec {
                user: user.map(str::to_string),
                host: host.to_string(),
            },
            path: path.to_string(),
        }
    }

    #[test]
    fn remote_forms() {
        assert_eq!(
            parse_location("gpu:/ckpt").unwrap(),
            remote(None, "gpu", "/ckpt")
        );
        assert_eq!(
            parse_location("me@gpu.example:data/x").unwrap(),
            remote(Some("me"), "gpu.example", "data/x")
        );
        assert_eq!(
            parse_location("me@[::1]:/tmp/a:b").unwrap(),
            remote(Some("me"), "::1", "/tmp/a:b")
        );
        assert_eq!(parse_location("[::1]:").unwrap(), remote(None, "::1", ""));
        assert_eq!(parse_location("box:").unwrap(), remote(None, "box", ""));
    }

    #[test]
    fn local_forms() {
        // An unclosed bracket has no host part, so like any colon after a '/' it is local.
        for argument in [
            "./a:b",
            "/tmp/x:y",
            "plain",
            "dir/file",
            "me@host",
            ":x",
            "me@[::1:/x",
        ] {
            assert_eq!(
                parse_location(argument).unwrap(),
                Location::Local(PathBuf::from(argument)),
                "{argument}"
            );
        }
    }

    #[test]
    fn hostile_hosts_are_refused() {
        for argument in [
            "-oProxyCommand=x:/a",
            "a;b:/x",
            "a b:/x",
            "$(id):/x",
            "`x`@h:/x",
            "-l@h:/x",
            "h\u{1b}[2J:/x",
        ] {
            assert!(parse_location(argument).is_err(), "{argument:?} accepted");
        }
    }

    #[test]
    fn host_specs() {
        assert_eq!(
            parse_host("me@[fe80::1%eth0]").unwrap(),
            HostSpec {
                user: Some("me".into()),
                host: "fe80::1%eth0".into()
            }
        );
        assert_eq!(parse_host("me@h").unwrap().to_string(), "me@h");
        assert_eq!(parse_host("[::1]").unwrap().to_string(), "[::1]");
        assert!(parse_host("").is_err());
        assert!(parse_host("me@").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(argument in ".{0,64}") {
            let _ = parse_location(&argument);
            let _ = parse_host(&argument);
        }
    }
}
