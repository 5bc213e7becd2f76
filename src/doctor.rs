//! `xfer doctor`: checks that hosts are reachable and usable, several at once.
//!
//! For each host it resolves the config, connects (host key, authentication), measures the
//! round trip, asks the remote for its name, system, clock and free disk through one fixed
//! script, and probes which channels the login allows: exec, SFTP (started, not just asked
//! for: Dropbear accepts the request even with no SFTP server to run), a shell. A
//! login that gives a shell but refuses SFTP and exec is a shell-only endpoint (a provider's
//! relay): scp, sftp and rsync cannot use it, xfer works through its terminal. For such a host
//! the facts and the agent's place are found through the terminal too, and the terminal's raw
//! throughput is measured each way; the report gives the mode.

use crate::error::Result;
use crate::remote::bundle::{Platform, Source};
use crate::remote::deploy::AgentPlace;
use crate::remote::runner::Runner;
use crate::remote::sftp;
use crate::remote::shell_only::TerminalSession;
use crate::ssh::connect::{Connection, Connector, label_of};
use crate::ssh::exec::{ExecLimits, ExecOutput};
use crate::target::HostSpec;
use crate::terminal::printable;
use russh::ChannelMsg;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Clock skew beyond this is reported as a problem: it breaks mtime comparisons and tokens.
const SKEW_LIMIT_SECONDS: i64 = 60;
/// How long starting SFTP may take before doctor reports it as not working.
const SFTP_CHECK_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest value kept from the remote's answers.
const MAX_FIELD_LENGTH: usize = 256;

/// The fixed script that reports facts about the remote; the path to measure comes on stdin.
const FACTS_SCRIPT: &str = r#"IFS= read -r target || target=
[ -n "$target" ] || target="$HOME"
echo "hostname=$(hostname 2>/dev/null || uname -n)"
echo "uname=$(uname -sm)"
echo "time=$(date +%s)"
echo "free=$(df -Pk -- "$target" 2>/dev/null | awk "NR==2{print \$(NF-2)}")"
echo "path=$target""#;

#[derive(Debug, Clone, Default)]
pub struct DoctorOptions {
    /// Where to measure free disk space; the login directory when None.
    pub path: Option<String>,
}

/// Whether a kind of channel is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    Allowed,
    Refused,
    NotChecked,
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Capability::Allowed => "yes",
            Capability::Refused => "no",
            Capability::NotChecked => "-",
        })
    }
}

/// Everything doctor found out about one host.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub host: String,
    /// Which SSH client reached the host: xfer's own, or the system ssh (`--ssh-command`).
    pub transport: String,
    pub hostname: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub proxy_jump: Option<String>,
    pub proxy_command: Option<String>,
    pub auth_method: Option<String>,
    pub auth_summary: Option<String>,
    pub host_key: Option<String>,
    pub host_key_summary: Option<String>,
    pub host_key_fingerprint: Option<String>,
    pub latency_ms: Option<f64>,
    pub remote_hostname: Option<String>,
    pub uname: Option<String>,
    pub clock_skew_seconds: Option<i64>,
    pub exec: Capability,
    pub sftp: Capability,
    pub shell: Capability,
    /// How transfers reach the host's files: `exec` (the xfer agent), `sftp`, or
    /// [`SHELL_ONLY_MODE`] (the agent through a terminal); None when nothing works.
    pub mode: Option<String>,
    /// A shell-only endpoint's terminal, measured each way.
    pub terminal_down_bytes_per_second: Option<f64>,
    pub terminal_up_bytes_per_second: Option<f64>,
    /// The host's platform in Rust's names, as agent bundle files name it: `linux-aarch64`.
    pub platform: Option<String>,
    /// Where transfers would run the xfer agent from: `cached`, `upload` (none cached yet, a
    /// transfer puts it there first), `none` (no place on the host can hold it: SFTP) or
    /// `unavailable` (xfer has no agent for the host's platform: SFTP; a warning says which
    /// bundle file would be needed).
    pub agent: Option<String>,
    /// Which executable serves as the agent there: `this executable`, or the bundle file's
    /// path.
    pub agent_from: Option<String>,
    pub free_bytes: Option<u64>,
    pub free_path: Option<String>,
    /// What is wrong, one sentence each; empty when the host passed.
    pub problems: Vec<String>,
    /// What works for xfer but is worth knowing (other tools may fail there), one sentence each.
    pub warnings: Vec<String>,
    /// What to do about the problems.
    pub hints: Vec<String>,
    pub passed: bool,
}

impl HostReport {
    fn new(host: &str) -> Self {
        HostReport {
            host: host.to_string(),
            transport: String::new(),
            hostname: None,
            port: None,
            user: None,
            proxy_jump: None,
            proxy_command: None,
            auth_method: None,
            auth_summary: None,
            host_key: None,
            host_key_summary: None,
            host_key_fingerprint: None,
            latency_ms: None,
            remote_hostname: None,
            uname: None,
            platform: None,
            agent_from: None,
            clock_skew_seconds: None,
            exec: Capability::NotChecked,
            sftp: Capability::NotChecked,
            shell: Capability::NotChecked,
            mode: None,
            terminal_down_bytes_per_second: None,
            terminal_up_bytes_per_second: None,
            free_bytes: None,
            free_path: None,
            agent: None,
            problems: Vec::new(),
            warnings: Vec::new(),
            hints: Vec::new(),
            passed: false,
        }
    }

    fn fail(&mut self, error: &crate::Error) {
        self.problems.push(error.to_string());
        if let Some(hint) = error.hint() {
            self.hints.push(hint.to_string());
        }
    }
}

/// Checks every host concurrently; the reports come back in the order given.
pub async fn check_hosts(
    connector: Arc<Connector>,
    hosts: Vec<HostSpec>,
    at_once: usize,
    options: DoctorOptions,
) -> Vec<HostReport> {
    let names: Vec<String> = hosts.iter().map(ToString::to_string).collect();
    let reports = crate::fleet::for_each_host(hosts, at_once, |_, spec| {
        let (connector, options) = (connector.clone(), options.clone());
        async move { check_host(&connector, &spec, &options).await }
    })
    .await;
    reports
        .into_iter()
        .zip(names)
        .map(|(report, name)| {
            report.unwrap_or_else(|error| {
                tracing::error!(%error, "a doctor check crashed");
                let mut report = HostReport::new(&name);
                report.problems.push(error.to_string());
                report
            })
        })
        .collect()
}

pub async fn check_host(
    connector: &Connector,
    spec: &HostSpec,
    options: &DoctorOptions,
) -> HostReport {
    let mut report = HostReport::new(&spec.to_string());
    report.transport = connector.transport().describe();
    let config = match connector.resolve(spec) {
        Ok(config) => config,
        Err(error) => {
            report.fail(&error);
            return report;
        }
    };
    report.hostname = Some(config.hostname.clone());
    report.port = Some(config.port);
    report.user = Some(config.user.clone());
    if !config.proxy_jump.is_empty() {
        let hops: Vec<String> = config
            .proxy_jump
            .iter()
            .map(|hop| {
                let mut text = String::new();
                if let Some(user) = &hop.user {
                    text.push_str(user);
                    text.push('@');
                }
                text.push_str(&hop.host);
                if let Some(port) = hop.port {
                    text.push_str(&format!(":{port}"));
                }
                text
            })
            .collect();
        report.proxy_jump = Some(hops.join(","));
    } else {
        report.proxy_command = config.expand_proxy_command();
    }
    let label = label_of(&config);
    let connection = match connector.connect_resolved(Arc::new(config)).await {
        Ok(connection) => Arc::new(connection),
        Err(error) => {
            report.fail(&error);
            return report;
        }
    };
    report.auth_method = Some(connection.auth_method().to_string());
    report.auth_summary = Some(connection.auth_summary().to_string());
    report.host_key = Some(connection.host_key().to_string());
    report.host_key_summary = Some(connection.host_key().summary().to_string());
    report.host_key_fingerprint = Some(connection.host_key_fingerprint().to_string());

    let mut sftp_failure = None;
    match probe(&connection, &mut report, &mut sftp_failure, options).await {
        Ok(()) => {}
        Err(error) => report.fail(&error),
    }
    if report.exec == Capability::Allowed {
        report.mode = Some("exec".into());
        check_agent(&mut Runner::Exec(&connection), &label, &mut report).await;
    } else if report.sftp == Capability::Allowed {
        report.mode = Some("sftp".into());
    }
    if report.exec == Capability::Refused && report.sftp == Capability::Refused {
        if report.shell == Capability::Allowed {
            check_terminal(&connection, &label, &mut report, options).await;
        } else {
            report.problems.push(format!(
                "{label} refuses exec, SFTP and shell: nothing can be run there"
            ));
        }
    } else if report.sftp == Capability::Refused {
        let until_then = "until then xfer pull and push still work through the xfer agent (exec is allowed), but --no-agent, scp and sftp do not";
        match sftp_failure {
            Some(error) if sftp::is_no_sftp_server(&error) => {
                report.problems.push(error.message().to_string());
                report.hints.push(format!(
                    "install an SFTP server on the host (on Debian and Ubuntu: openssh-sftp-server, which Dropbear runs too); {until_then}"
                ));
            }
            Some(error) if error.kind() != crate::ErrorKind::Remote => {
                report.problems.push(error.to_string());
            }
            _ => {
                report
                    .problems
                    .push(format!("{label} refuses the SFTP subsystem"));
                report.hints.push(format!(
                    "enable 'Subsystem sftp internal-sftp' in the remote sshd_config; {until_then}"
                ));
            }
        }
    } else if report.exec == Capability::Refused {
        report
            .problems
            .push(format!("{label} refuses exec channels"));
    }
    if let Some(skew) = report.clock_skew_seconds
        && skew.abs() > SKEW_LIMIT_SECONDS
    {
        report.problems.push(format!(
            "{label}: clock differs from this machine's by {skew} s"
        ));
        report.hints.push(
            "run NTP (e.g. systemd-timesyncd or chrony) on the machine whose clock is off".into(),
        );
    }
    report.passed = report.problems.is_empty();
    if let Ok(connection) = Arc::try_unwrap(connection) {
        connection.close().await;
    }
    report
}

/// How much doctor sends each way to measure a terminal: 64 KiB blocks.
const MEASURE_BLOCKS: usize = 32;

/// A shell-only endpoint: what xfer finds through its terminal, as transfers would use it
/// (facts, the agent's place, the terminal's throughput each way), changing nothing.
async fn check_terminal(
    connection: &Arc<Connection>,
    label: &str,
    report: &mut HostReport,
    options: &DoctorOptions,
) {
    let mut session = match TerminalSession::open(connection).await {
        Ok(session) => session,
        Err(error) => {
            report.problems.push(format!(
                "{label} gives a shell but refuses exec and SFTP, and xfer could not work through its terminal: {}",
                error.message()
            ));
            if let Some(hint) = error.hint() {
                report.hints.push(hint.to_string());
            }
            return;
        }
    };
    report.mode = Some(SHELL_ONLY_MODE.into());
    let (facts, local_time) = run_facts(&mut Runner::Terminal(&mut session), options).await;
    match facts {
        Ok(output) if output.success() => read_facts(&output.stdout_text(), local_time, report),
        Ok(_) => report
            .problems
            .push(format!("{label}: the check script failed on the terminal")),
        Err(error) => report.fail(&error),
    }
    let throughput = match session.measure(MEASURE_BLOCKS).await {
        Ok((down, up)) => {
            report.terminal_down_bytes_per_second = Some(down);
            report.terminal_up_bytes_per_second = Some(up);
            format!(
                "; the terminal carries {} from the host, {} to it",
                rate(down),
                rate(up)
            )
        }
        Err(error) => {
            tracing::debug!(%label, %error, "measuring the terminal failed");
            String::new()
        }
    };
    report.warnings.push(format!(
        "{label}: {SHELL_ONLY_MODE}{throughput}. It refuses exec and SFTP, so scp, sftp and rsync cannot use it"
    ));
    check_agent(&mut Runner::Terminal(&mut session), label, report).await;
}

/// What doctor calls a shell-only endpoint's mode.
pub const SHELL_ONLY_MODE: &str = "shell-only: transfers through the terminal";

fn rate(bytes_per_second: f64) -> String {
    format!("{:.1} MB/s", bytes_per_second / 1e6)
}

/// Where transfers would run the agent from, found without changing anything on the host. A
/// host where no place can hold it still transfers over SFTP (a warning); without SFTP either,
/// nothing can move (a problem).
async fn check_agent(runner: &mut Runner<'_>, label: &str, report: &mut HostReport) {
    let Some((system, machine)) = report
        .uname
        .as_deref()
        .and_then(|uname| uname.split_once(' '))
    else {
        return;
    };
    let platform = Platform::from_uname(system, machine);
    report.platform = Some(crate::terminal::printable(platform.key()));
    let catalog = match crate::remote::deploy::catalog() {
        Ok(catalog) => catalog,
        Err(reason) => {
            tracing::debug!(%label, %reason, "no agent to deploy");
            return;
        }
    };
    let agent = match catalog.for_platform(&platform) {
        Ok(agent) => agent,
        Err(reason) => {
            report.agent = Some("unavailable".into());
            report.warnings.push(format!(
                "{label}: {reason}; transfers use SFTP there (no deltas, no end-to-end block checks)"
            ));
            report.hints.push(
                "build the agent bundle for that platform with scripts/release.sh (README: Platforms)"
                    .into(),
            );
            return;
        }
    };
    report.agent_from = Some(match agent.source {
        Source::ThisExecutable => "this executable".into(),
        Source::Bundle => agent.path.display().to_string(),
    });
    match crate::remote::deploy::inspect(runner, agent).await {
        Ok(AgentPlace::Cached(_)) => report.agent = Some("cached".into()),
        Ok(AgentPlace::Upload(directory)) => {
            report.agent = Some("upload".into());
            tracing::debug!(%label, %directory, "a transfer would upload the agent here");
        }
        Ok(AgentPlace::Nowhere(reasons)) => {
            report.agent = Some("none".into());
            let sentence = format!(
                "{label}: no place on the host can hold the xfer agent ({reasons}); transfers use SFTP (no deltas, no end-to-end block checks)"
            );
            if report.sftp == Capability::Allowed {
                report.warnings.push(sentence);
            } else {
                report.problems.push(sentence);
            }
            report.hints.push(
                "make ~ and ~/.cache yours and not writable by others (chmod go-w), or free space there"
                    .into(),
            );
        }
        Err(error) => {
            tracing::debug!(%label, %error, "the agent check did not run");
        }
    }
}

/// Fills in what the login allows; why SFTP does not work, when it does not, goes to
/// `sftp_failure`.
async fn probe(
    connection: &Connection,
    report: &mut HostReport,
    sftp_failure: &mut Option<crate::Error>,
    options: &DoctorOptions,
) -> Result<()> {
    // Round trip: opening a channel is one request and one reply, with no process started.
    // (Through the system ssh, a channel opens with the command it runs: no round trip alone.)
    if !connection.is_system() {
        let started = Instant::now();
        let channel = connection.open_session().await?;
        report.latency_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        let _ = channel.close().await;
    }
    let (facts, local_time) = run_facts(&mut Runner::Exec(connection), options).await;
    let mut check_shell = false;
    match facts {
        Ok(output) if output.success() => {
            report.exec = Capability::Allowed;
            if !output.preamble.is_empty() {
                report.warnings.push(format!(
                    "{}: the login shell prints {} bytes before every command (from ~/.bashrc, ~/.profile or similar); xfer skips them, but scp, sftp and rsync can break on such a host (fix: print only in interactive shells, e.g. behind `case $- in *i*)`)",
                    connection.label(),
                    output.preamble.len()
                ));
            }
            read_facts(&output.stdout_text(), local_time, report);
            if report.free_bytes.is_none() {
                report.problems.push(format!(
                    "{}: cannot measure free space at {}",
                    connection.label(),
                    report.free_path.as_deref().unwrap_or("the login directory")
                ));
            }
        }
        Ok(output) if !output.started => {
            // The server took the exec request but ran something else (ForceCommand
            // internal-sftp, a restricted shell, a relay's refusal): commands do not run for
            // this login.
            report.exec = Capability::Refused;
            check_shell = true;
        }
        Ok(output) => {
            report.exec = Capability::Allowed;
            let status = match (output.status, &output.signal) {
                (Some(status), _) => format!("exit status {status}"),
                (None, Some(signal)) => format!("signal {}", printable(signal)),
                (None, None) => "no exit status".to_string(),
            };
            report.problems.push(format!(
                "{}: the check script failed ({status}): {}",
                connection.label(),
                output.stderr_text()
            ));
        }
        Err(error) if error.kind() == crate::ErrorKind::Remote => {
            report.exec = Capability::Refused;
            check_shell = true;
        }
        Err(error) => return Err(error),
    }

    // SFTP is started, not just asked for: a server may accept the subsystem request and then
    // have nothing to run (Dropbear without an sftp-server). After the exec check: its server
    // exits as it ends, and Dropbear before 2024.86 closes a channel just opened on the same
    // connection when any process of the session exits.
    report.sftp = match tokio::time::timeout(SFTP_CHECK_TIMEOUT, sftp::check(connection)).await {
        Ok(Ok(())) => Capability::Allowed,
        Ok(Err(error)) => {
            *sftp_failure = Some(error);
            Capability::Refused
        }
        Err(_) => {
            *sftp_failure = Some(crate::Error::connect(format!(
                "{}: SFTP did not start within {} s",
                connection.label(),
                SFTP_CHECK_TIMEOUT.as_secs()
            )));
            Capability::Refused
        }
    };
    // When the server refuses exec, whether the login gives a shell tells a shell-only
    // endpoint. Asked last: the shell it starts ends as the channel closes.
    if check_shell {
        let channel = connection.open_session().await?;
        report.shell = shell_accepted(channel).await;
    }
    Ok(())
}

/// Runs [`FACTS_SCRIPT`] (the path to measure on its stdin); also returns this machine's clock
/// in the middle of the run, to compare with the host's.
async fn run_facts(runner: &mut Runner<'_>, options: &DoctorOptions) -> (Result<ExecOutput>, f64) {
    let mut stdin = options.path.clone().unwrap_or_default().into_bytes();
    stdin.push(b'\n');
    let limits = ExecLimits {
        max_output: 64 * 1024,
        timeout: Duration::from_secs(30),
    };
    let before = unix_now();
    let facts = runner.run(FACTS_SCRIPT, &stdin, limits).await;
    (facts, (before + unix_now()) / 2.0)
}

/// Fills in the facts [`FACTS_SCRIPT`] printed; `local_time` is this machine's clock in the
/// middle of the run.
fn read_facts(text: &str, local_time: f64, report: &mut HostReport) {
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value: String = printable(value.trim())
            .chars()
            .take(MAX_FIELD_LENGTH)
            .collect();
        match key {
            "hostname" => report.remote_hostname = Some(value),
            "uname" => report.uname = Some(value),
            "time" => {
                if let Ok(remote) = value.parse::<f64>() {
                    report.clock_skew_seconds = Some((remote - local_time).round() as i64);
                }
            }
            "free" => {
                report.free_bytes = value
                    .parse::<u64>()
                    .ok()
                    .map(|kib| kib.saturating_mul(1024))
            }
            "path" => report.free_path = Some(value),
            _ => {}
        }
    }
}

/// Asks for a terminal and a shell, as xfer would use them (a relay may give a shell only with
/// a terminal), the shell with want-reply, and reads the verdict, bounded in time.
async fn shell_accepted(mut channel: crate::ssh::channel::Channel) -> Capability {
    if channel.request_pty(false, "dumb", 80, 24).await.is_err()
        || channel.request_shell(true).await.is_err()
    {
        return Capability::Refused;
    }
    let verdict = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(message) = channel.wait().await {
            match message {
                ChannelMsg::Success => return Capability::Allowed,
                ChannelMsg::Failure | ChannelMsg::Close | ChannelMsg::Eof => {
                    return Capability::Refused;
                }
                _ => {}
            }
        }
        Capability::Refused
    })
    .await
    .unwrap_or(Capability::Refused);
    let _ = channel.close().await;
    // The server's close comes once the session is over: the next probe's channel is opened
    // only then, for a host that allows one session per connection (sshd MaxSessions 1).
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while channel.wait().await.is_some() {}
    })
    .await;
    verdict
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs_f64())
        .unwrap_or(0.0)
}
