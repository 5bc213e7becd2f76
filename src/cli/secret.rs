//! `xfer secret push` and `xfer secret check`: read the secret once (in a process that can no
//! longer dump core), then reach every host at once and print one line per host. The value is
//! never printed, logged or put in an error.

use crate::cli::args::{SecretCheckArgs, SecretPushArgs, SecretSourceArgs};
use crate::cli::output::outln;
use crate::cli::settings::ConnectionSettings;
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Digest;
use std::sync::Arc;
use xfer::error::{Error, ErrorKind, Result};
use xfer::remote::runner::Shell;
use xfer::secret::deliver;
use xfer::secret::netrc;
use xfer::secret::source::{Secret, Source};
use xfer::ssh::config::LocalContext;
use xfer::ssh::connect::{Connection, Connector};
use xfer::target::HostSpec;
use xfer::terminal::{printable, printable_message};

fn source_of(args: &SecretSourceArgs, netrc_file: Option<&std::path::PathBuf>) -> Result<Source> {
    if let Some(name) = &args.from_env {
        return Ok(Source::Environment(name.clone()));
    }
    if let Some(machine) = &args.from_netrc {
        return Ok(Source::Netrc {
            machine: machine.clone(),
            file: netrc_file.cloned(),
        });
    }
    if let Some(spec) = &args.from_keyring {
        return Source::keyring(spec);
    }
    if args.stdin {
        return Ok(Source::Stdin);
    }
    Err(Error::usage(
        "name where the secret comes from: --from-env, --from-netrc, --from-keyring or --stdin",
    ))
}

struct Prepared {
    source: Source,
    secret: Secret,
    path: String,
    hosts: Vec<HostSpec>,
    hosts_at_once: usize,
    connector: Arc<Connector>,
}

fn prepare(
    source_args: &SecretSourceArgs,
    netrc_file: Option<&std::path::PathBuf>,
    to: Option<&String>,
    hosts: &[String],
    host_list: &crate::cli::args::HostsArgs,
    connection: &crate::cli::args::ConnectionArgs,
) -> Result<Prepared> {
    let source = source_of(source_args, netrc_file)?;
    let path = match to.cloned().or_else(|| source.default_destination()) {
        Some(path) => path,
        None => {
            return Err(Error::usage(
                "--stdin needs --to REMOTE_PATH: there is no name to derive one from",
            ));
        }
    };
    let hosts = crate::cli::settings::hosts(hosts, host_list)?;
    let local = LocalContext::current()?;
    xfer::secret::process::protect_from_dumps()?;
    let secret = source.read(&local.user)?;
    let settings = ConnectionSettings::from_args(connection)?;
    let mut scrubbed = Vec::new();
    if let Source::Environment(name) = &source {
        scrubbed.push(name.clone());
    }
    let connector = Arc::new(settings.connector()?.without_environment(scrubbed));
    Ok(Prepared {
        source,
        secret,
        path,
        hosts,
        hosts_at_once: host_list.hosts_at_once,
        connector,
    })
}

/// Runs `work` for every host, `--hosts-at-once` at a time, and prints one line per host, in
/// the order given.
async fn for_each_host<F, Fut>(prepared: &Prepared, work: F) -> Result<()>
where
    F: Fn(Arc<Connector>, HostSpec) -> Fut,
    Fut: std::future::Future<Output = Result<String>> + Send + 'static,
{
    let results =
        xfer::fleet::for_each_host(prepared.hosts.clone(), prepared.hosts_at_once, |_, host| {
            work(prepared.connector.clone(), host)
        })
        .await;
    let results: Vec<(usize, Result<String>)> = results
        .into_iter()
        .map(|result| result.and_then(|inner| inner))
        .enumerate()
        .collect();
    let mut first_failure: Option<Error> = None;
    let mut failed = 0;
    for (index, result) in results {
        let host = printable(prepared.hosts[index].to_string());
        match result {
            Ok(line) => outln!("{host}: {line}"),
            Err(error) => {
                failed += 1;
                outln!("{host}: FAILED: {}", printable_message(&error.to_string()));
                if let Some(hint) = error.hint() {
                    outln!("{host}:   hint: {}", printable_message(hint));
                }
                first_failure.get_or_insert(error);
            }
        }
    }
    match first_failure {
        None => Ok(()),
        Some(error) => Err(Error::new(
            error.kind(),
            format!("{failed} of {} host(s) failed", prepared.hosts.len()),
        )),
    }
}

/// Ends a host's session politely once its scripts are done.
async fn close(shell: Shell, connection: Arc<Connection>) {
    // The terminal session holds the connection too.
    drop(shell);
    if let Ok(connection) = Arc::try_unwrap(connection) {
        connection.close().await;
    }
}

pub async fn push(args: &SecretPushArgs) -> Result<()> {
    let prepared = prepare(
        &args.source,
        args.netrc.as_ref(),
        args.to.as_ref(),
        &args.hosts,
        &args.host_list,
        &args.connection,
    )?;
    tracing::info!(
        "pushing the secret from {} to {}",
        prepared.source.describe(),
        prepared.path
    );
    let secret = Arc::new(prepared.secret_bytes_or_stanza());
    let path = prepared.path.clone();
    let options = deliver::WriteOptions {
        allow_shared_fs: args.allow_shared_fs,
        allow_writable_dir: args.allow_writable_dir,
    };
    for_each_host(&prepared, move |connector, host| {
        let secret = secret.clone();
        let path = path.clone();
        async move {
            let connection = Arc::new(connector.connect(&host).await?);
            let mut shell = Shell::find(&connection).await?;
            let mut runner = shell.runner(&connection);
            let content = match &*secret {
                Payload::Bytes(bytes) => SecretSlice::from(bytes.expose_secret().to_vec()),
                Payload::Stanza(stanza) => {
                    let existing = deliver::read(&mut runner, &path).await?;
                    let existing_text = existing
                        .as_ref()
                        .map(|text| text.expose_secret())
                        .unwrap_or("");
                    let merged = netrc::merge(existing_text, stanza).map_err(|error| {
                        Error::remote(format!(
                            "{}: cannot merge into {path}: {error}",
                            connection.label()
                        ))
                        .with_hint("fix or move the remote netrc file, then re-run")
                    })?;
                    SecretSlice::from(merged.expose_secret().as_bytes().to_vec())
                }
            };
            let written = deliver::write(&mut runner, &path, &content, options).await?;
            close(shell, connection).await;
            Ok(format!(
                "wrote {} (mode 0600, filesystem {})",
                printable(&path),
                written.filesystem
            ))
        }
    })
    .await
}

pub async fn check(args: &SecretCheckArgs) -> Result<()> {
    let prepared = prepare(
        &args.source,
        args.netrc.as_ref(),
        args.to.as_ref(),
        &args.hosts,
        &args.host_list,
        &args.connection,
    )?;
    let secret = Arc::new(prepared.secret_bytes_or_stanza());
    let path = prepared.path.clone();
    for_each_host(&prepared, move |connector, host| {
        let secret = secret.clone();
        let path = path.clone();
        async move {
            let connection = Arc::new(connector.connect(&host).await?);
            let mut shell = Shell::find(&connection).await?;
            let mut runner = shell.runner(&connection);
            let inspection = deliver::inspect(&mut runner, &path).await?;
            let mut problems = Vec::new();
            if !inspection.exists {
                problems.push("missing".to_string());
            } else if !inspection.regular_file {
                problems.push("not a regular file".to_string());
            } else {
                if inspection.mode != Some(0o600) {
                    problems.push(match inspection.mode {
                        Some(mode) => format!("mode {mode:04o}, not 0600"),
                        None => "mode unknown".to_string(),
                    });
                }
                if !inspection.owned_by_user {
                    problems.push("not owned by the login user".to_string());
                }
                if inspection.on_shared_filesystem() {
                    problems.push(format!(
                        "on a shared filesystem ({})",
                        inspection.filesystem.clone().unwrap_or_default()
                    ));
                }
                let matches = match &*secret {
                    Payload::Bytes(bytes) => inspection.sha256.map(|remote| {
                        remote == <[u8; 32]>::from(sha2::Sha256::digest(bytes.expose_secret()))
                    }),
                    Payload::Stanza(stanza) => {
                        let existing = deliver::read(&mut runner, &path).await?;
                        let found = existing
                            .as_ref()
                            .and_then(|text| netrc::parse(text.expose_secret()).ok())
                            .and_then(|parsed| parsed.machine(&stanza.machine));
                        Some(found.is_some_and(|found| same_values(&found, stanza)))
                    }
                };
                match matches {
                    Some(true) => {}
                    Some(false) => {
                        problems.push("content does not match the local source".to_string())
                    }
                    None => problems.push(
                        "the remote cannot hash the file (no openssl or sha256sum)".to_string(),
                    ),
                }
            }
            close(shell, connection).await;
            if problems.is_empty() {
                Ok(format!(
                    "ok: {} is a 0600 file of yours on {}, content matches",
                    printable(&path),
                    inspection.filesystem.unwrap_or_default()
                ))
            } else {
                Err(Error::new(
                    ErrorKind::CheckFailed,
                    format!("{}: {}", printable(&path), problems.join("; ")),
                ))
            }
        }
    })
    .await
}

/// What travels: a single value's bytes, or a stanza to merge.
enum Payload {
    Bytes(SecretSlice<u8>),
    Stanza(netrc::Stanza),
}

impl Prepared {
    fn secret_bytes_or_stanza(&self) -> Payload {
        match &self.secret {
            Secret::Token(value) => {
                Payload::Bytes(SecretSlice::from(value.expose_secret().as_bytes().to_vec()))
            }
            Secret::Stanza(stanza) => Payload::Stanza(stanza.clone()),
        }
    }
}

/// Whether two stanzas hold the same login, password and account.
fn same_values(left: &netrc::Stanza, right: &netrc::Stanza) -> bool {
    // Compared in place: no copy of a value outlives this call unzeroized.
    let same = |a: &Option<secrecy::SecretString>, b: &Option<secrecy::SecretString>| match (a, b) {
        (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
        (None, None) => true,
        _ => false,
    };
    left.login == right.login
        && same(&left.password, &right.password)
        && same(&left.account, &right.account)
}
