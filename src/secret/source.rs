//! Where a secret comes from: an environment variable, one netrc stanza, a keyring entry, or
//! standard input. The value is held in a `secrecy` type from the moment it is read; nothing
//! here formats it, and every error names the source, never the value.

use crate::env;
use crate::error::{Error, ErrorKind, Result};
use crate::secret::netrc::{self, Stanza};
use secrecy::{ExposeSecret, SecretString};
use std::io::{IsTerminal, Read};
use std::path::PathBuf;

/// One place a secret can be read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Environment(String),
    Netrc {
        machine: String,
        file: Option<PathBuf>,
    },
    Keyring {
        service: String,
        user: Option<String>,
    },
    Stdin,
}

/// A secret read from a source.
pub enum Secret {
    /// A single value (a token, a key).
    Token(SecretString),
    /// One machine's netrc stanza.
    Stanza(Stanza),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Token(_) => f.write_str("Secret::Token([REDACTED])"),
            Secret::Stanza(stanza) => write!(f, "Secret::Stanza({stanza:?})"),
        }
    }
}

impl Source {
    /// Parses `SERVICE[/USER]`.
    pub fn keyring(spec: &str) -> Result<Source> {
        let (service, user) = match spec.split_once('/') {
            Some((service, user)) => (service, Some(user.to_string())),
            None => (spec, None),
        };
        if service.is_empty() || user.as_deref() == Some("") {
            return Err(Error::usage("--from-keyring takes SERVICE or SERVICE/USER"));
        }
        Ok(Source::Keyring {
            service: service.to_string(),
            user,
        })
    }

    /// How messages name the source (never its value).
    pub fn describe(&self) -> String {
        match self {
            Source::Environment(name) => format!("environment variable {name}"),
            Source::Netrc { machine, file } => format!(
                "netrc machine {machine} in {}",
                netrc_path(file.as_ref())
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "~/.netrc".into())
            ),
            Source::Keyring { service, user } => match user {
                Some(user) => format!("keyring entry {service}/{user}"),
                None => format!("keyring entry {service}"),
            },
            Source::Stdin => "standard input".to_string(),
        }
    }

    /// The remote path a secret from this source goes to when `--to` is not given.
    pub fn default_destination(&self) -> Option<String> {
        let file_name = |name: &str| -> String {
            let name: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            // Never `.` or `..`, which would name a directory instead of a file.
            if name.chars().all(|c| c == '.') {
                name.replace('.', "_")
            } else {
                name
            }
        };
        match self {
            Source::Environment(name) => {
                Some(format!("~/.config/xfer/secrets/{}", file_name(name)))
            }
            Source::Keyring { service, .. } => {
                Some(format!("~/.config/xfer/secrets/{}", file_name(service)))
            }
            Source::Netrc { .. } => Some("~/.netrc".to_string()),
            Source::Stdin => None,
        }
    }

    /// Reads the secret. `local_user` is the default keyring user.
    pub fn read(&self, local_user: &str) -> Result<Secret> {
        match self {
            Source::Environment(name) => read_environment(name).map(Secret::Token),
            Source::Netrc { machine, file } => {
                read_netrc(machine, file.as_ref()).map(Secret::Stanza)
            }
            Source::Keyring { service, user } => {
                read_keyring(service, user.as_deref().unwrap_or(local_user)).map(Secret::Token)
            }
            Source::Stdin => read_stdin().map(Secret::Token),
        }
    }
}

fn read_environment(name: &str) -> Result<SecretString> {
    let Some(value) = env::user_named(name) else {
        return Err(
            Error::usage(format!("environment variable {name} is not set")).with_hint(format!(
                "export {name} first, or use --stdin to type the value"
            )),
        );
    };
    let Ok(value) = value.into_string() else {
        return Err(Error::usage(format!(
            "environment variable {name} is not valid UTF-8"
        )));
    };
    let value = SecretString::from(value);
    if value.expose_secret().is_empty() {
        return Err(Error::usage(format!(
            "environment variable {name} is set but empty"
        )));
    }
    Ok(value)
}

fn netrc_path(file: Option<&PathBuf>) -> Option<PathBuf> {
    file.cloned()
        .or_else(|| env::var_path(env::NETRC))
        .or_else(|| env::var_path(env::HOME).map(|home| home.join(".netrc")))
}

fn read_netrc(machine: &str, file: Option<&PathBuf>) -> Result<Stanza> {
    let path = netrc_path(file).ok_or_else(|| {
        Error::config("no netrc file: HOME is not set").with_hint("name the file with --netrc FILE")
    })?;
    let metadata = std::fs::metadata(&path).map_err(|error| {
        Error::local_io(format!("cannot read netrc file {}", path.display()), error)
    })?;
    if metadata.len() > crate::secret::deliver::MAX_SECRET_SIZE as u64 {
        return Err(Error::config(format!(
            "{} is larger than 1 MiB; not a netrc file",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(&path)
        .map(SecretString::from)
        .map_err(|error| {
            Error::local_io(format!("cannot read netrc file {}", path.display()), error)
        })?;
    let parsed = netrc::parse(text.expose_secret())
        .map_err(|error| Error::config(format!("{}: {error}", path.display())))?;
    parsed.machine(machine).ok_or_else(|| {
        Error::config(format!("no machine {machine} in {}", path.display()))
            .with_hint("check the machine name (it must match exactly, e.g. api.wandb.ai)")
    })
}

fn read_stdin() -> Result<SecretString> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let value = rpassword::prompt_password("Secret value (not echoed): ")
            .map(SecretString::from)
            .map_err(|error| Error::local_io("cannot read the secret from the terminal", error))?;
        if value.expose_secret().is_empty() {
            return Err(Error::usage("no value was typed"));
        }
        return Ok(value);
    }
    let mut bytes = Vec::new();
    stdin
        .lock()
        .take(crate::secret::deliver::MAX_SECRET_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| Error::local_io("cannot read the secret from standard input", error))?;
    let bytes = secrecy::SecretSlice::from(bytes);
    if bytes.expose_secret().len() > crate::secret::deliver::MAX_SECRET_SIZE {
        return Err(Error::usage(
            "the secret on standard input is larger than 1 MiB",
        ));
    }
    let Ok(text) = std::str::from_utf8(bytes.expose_secret()) else {
        return Err(Error::usage(
            "the secret on standard input is not UTF-8 text",
        ));
    };
    // `echo $TOKEN | xfer ...` adds one newline that is not part of the value.
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return Err(Error::usage("standard input was empty"));
    }
    Ok(SecretString::from(text.to_string()))
}

/// Linux: the Secret Service when a desktop session bus is there, then the kernel's keyutils.
#[cfg(target_os = "linux")]
fn read_keyring(service: &str, user: &str) -> Result<SecretString> {
    use keyring_core::Error as KeyringError;
    let mut tried = Vec::new();
    // A desktop session has the Secret Service; a headless box has the kernel's keyutils.
    if env::var(env::DBUS_SESSION_BUS_ADDRESS).is_some() {
        match zbus_secret_service_keyring_store::Store::new() {
            Ok(store) => {
                keyring_core::set_default_store(store);
                match keyring_core::Entry::new(service, user).and_then(|entry| entry.get_password())
                {
                    Ok(value) => return Ok(SecretString::from(value)),
                    Err(KeyringError::NoEntry) => tried.push("Secret Service: no such entry"),
                    // Other errors may carry the secret's bytes (BadEncoding): never print them.
                    Err(_) => tried.push("Secret Service: not usable"),
                }
            }
            Err(_) => tried.push("Secret Service: not available"),
        }
    }
    // Before the keyring store: it may give the process a session keyring of its own, after
    // which the user keyring is no longer this process's to search.
    if let Some(value) = read_user_keyring(service, user) {
        return Ok(value);
    }
    match linux_keyutils_keyring_store::Store::new() {
        Ok(store) => {
            keyring_core::set_default_store(store);
            match keyring_core::Entry::new(service, user).and_then(|entry| entry.get_password()) {
                Ok(value) => return Ok(SecretString::from(value)),
                Err(KeyringError::NoEntry) => {
                    tried.push("kernel keyutils session keyring: no such entry")
                }
                Err(_) => tried.push("kernel keyutils: not usable in this session"),
            }
        }
        Err(_) => tried.push("kernel keyutils: not available"),
    }
    Err(Error::new(
        ErrorKind::Config,
        format!("no keyring entry for service {service}, user {user} ({})", tried.join("; ")),
    )
    .with_hint(format!(
        "store it first: on a desktop, secret-tool or your keyring app; on a headless box: keyctl padd user 'keyring:{user}@{service}' @u (the value on its stdin; your user keyring, which later processes of yours see)"
    )))
}

/// macOS: the user's login keychain, a generic password whose service and account are
/// `service` and `user` (as `security add-generic-password -s SERVICE -a USER -w` stores it).
#[cfg(target_os = "macos")]
fn read_keyring(service: &str, user: &str) -> Result<SecretString> {
    use keyring_core::Error as KeyringError;
    let tried = match apple_native_keyring_store::keychain::Store::new() {
        Ok(store) => {
            keyring_core::set_default_store(store);
            match keyring_core::Entry::new(service, user).and_then(|entry| entry.get_password()) {
                Ok(value) => return Ok(SecretString::from(value)),
                Err(KeyringError::NoEntry) => "login keychain: no such entry",
                // Other errors may carry the secret's bytes (BadEncoding): never print them.
                Err(_) => "login keychain: not usable",
            }
        }
        Err(_) => "login keychain: not available",
    };
    Err(Error::new(
        ErrorKind::Config,
        format!("no keyring entry for service {service}, user {user} ({tried})"),
    )
    .with_hint(format!(
        "store it first: security add-generic-password -s '{service}' -a '{user}' -w (it asks for the value), or with Keychain Access"
    )))
}

/// Elsewhere xfer knows no system keyring: the other sources still work.
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn read_keyring(service: &str, user: &str) -> Result<SecretString> {
    Err(Error::new(
        ErrorKind::Config,
        format!(
            "cannot read keyring entry for service {service}, user {user}: no keyring store on this platform"
        ),
    )
    .with_hint("pass the secret with --from-env, --from-netrc or --stdin instead"))
}

/// The entry as `keyctl padd user 'keyring:USER@SERVICE' @u` stores it, read straight from the
/// user keyring: in a plain shell, with no session keyring of its own, the keyring store
/// (which links what it reads into the session keyring) is refused.
#[cfg(target_os = "linux")]
fn read_user_keyring(service: &str, user: &str) -> Option<SecretString> {
    use linux_keyutils::{KeyRing, KeyRingIdentifier};
    let keyring = KeyRing::from_special_id(KeyRingIdentifier::User, false)
        .inspect_err(|error| tracing::debug!(%error, "no user keyring"))
        .ok()?;
    let key = keyring
        .search(&format!("keyring:{user}@{service}"))
        .inspect_err(|error| tracing::debug!(%error, "no entry in the user keyring"))
        .ok()?;
    let bytes = secrecy::SecretSlice::from(
        key.read_to_vec()
            .inspect_err(
                |error| tracing::debug!(%error, "the user keyring's entry is not readable"),
            )
            .ok()?,
    );
    // A value that is not text is not ours to guess at; the caller says no entry was usable.
    let text = std::str::from_utf8(bytes.expose_secret()).ok()?;
    Some(SecretString::from(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyring_specs() {
        assert_eq!(
            Source::keyring("wandb/me").unwrap(),
            Source::Keyring {
                service: "wandb".into(),
                user: Some("me".into())
            }
        );
        assert_eq!(
            Source::keyring("wandb").unwrap(),
            Source::Keyring {
                service: "wandb".into(),
                user: None
            }
        );
        assert!(Source::keyring("/me").is_err());
        assert!(Source::keyring("svc/").is_err());
    }

    #[test]
    fn default_destinations_are_plain_names_under_home() {
        assert_eq!(
            Source::Environment("WANDB_API_KEY".into())
                .default_destination()
                .unwrap(),
            "~/.config/xfer/secrets/WANDB_API_KEY"
        );
        assert_eq!(
            Source::Keyring {
                service: "a/../b c".into(),
                user: None
            }
            .default_destination()
            .unwrap(),
            "~/.config/xfer/secrets/a_.._b_c"
        );
        assert_eq!(Source::Stdin.default_destination(), None);
        assert_eq!(
            Source::Keyring {
                service: "..".into(),
                user: None
            }
            .default_destination()
            .unwrap(),
            "~/.config/xfer/secrets/__"
        );
    }

    #[test]
    fn tokens_never_print() {
        let secret = Secret::Token(SecretString::from("canary-123".to_string()));
        assert!(!format!("{secret:?}").contains("canary"));
    }
}
