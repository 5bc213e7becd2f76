//! `xfer doctor HOST...`: runs the checks and prints a table (or JSON), then what is wrong
//! with each failing host and what to do about it.

use crate::cli::args::DoctorArgs;
use crate::cli::output::out;
use crate::cli::settings::ConnectionSettings;
use std::sync::Arc;
use xfer::doctor::{DoctorOptions, HostReport, check_hosts};
use xfer::engine::plan::human_bytes;
use xfer::error::{Error, ErrorKind, Result};
// The report holds pieces already escaped where they came from a host: guard, do not re-escape.
use xfer::terminal::printable_message;

pub async fn run(args: &DoctorArgs) -> Result<()> {
    let settings = ConnectionSettings::from_args(&args.connection)?;
    let connector = Arc::new(settings.connector()?);
    let hosts = crate::cli::settings::hosts(&args.hosts, &args.host_list)?;
    let options = DoctorOptions {
        path: args.path.clone(),
    };
    let reports = check_hosts(
        connector.clone(),
        hosts,
        args.host_list.hosts_at_once,
        options,
    )
    .await;
    if args.json {
        crate::cli::output::print_json(&reports)?;
    } else {
        out!("{}", render_table(&reports));
        out!("connections: {}", connector.transport().describe());
        out!("{}", render_problems(&reports));
    }
    let failed = reports.iter().filter(|report| !report.passed).count();
    if failed > 0 {
        return Err(Error::new(
            ErrorKind::CheckFailed,
            format!("{failed} of {} host(s) failed the checks", reports.len()),
        ));
    }
    Ok(())
}

fn or_dash<T: ToString>(value: &Option<T>) -> String {
    value
        .as_ref()
        .map(|v| printable_message(&v.to_string()))
        .unwrap_or_else(|| "-".into())
}

pub fn render_table(reports: &[HostReport]) -> String {
    let header = [
        "HOST", "ADDRESS", "USER", "VIA", "AUTH", "HOST KEY", "RTT", "REMOTE", "SYSTEM", "SKEW",
        "EXEC", "SFTP", "AGENT", "FREE", "STATUS",
    ];
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|report| {
            let address = match (&report.hostname, report.port) {
                (Some(host), Some(port)) if host.contains(':') => format!("[{host}]:{port}"),
                (Some(host), Some(port)) => format!("{host}:{port}"),
                _ => "-".into(),
            };
            let via = match (&report.proxy_jump, &report.proxy_command) {
                (Some(jump), _) => format!("jump {jump}"),
                (None, Some(_)) => "command".into(),
                (None, None) => "direct".into(),
            };
            vec![
                printable_message(&report.host),
                printable_message(&address),
                or_dash(&report.user),
                printable_message(&via),
                or_dash(&report.auth_summary),
                or_dash(&report.host_key_summary),
                report
                    .latency_ms
                    .map(|ms| format!("{ms:.1} ms"))
                    .unwrap_or_else(|| "-".into()),
                or_dash(&report.remote_hostname),
                or_dash(&report.uname),
                report
                    .clock_skew_seconds
                    .map(|s| format!("{s:+} s"))
                    .unwrap_or_else(|| "-".into()),
                report.exec.to_string(),
                report.sftp.to_string(),
                or_dash(&report.agent),
                report
                    .free_bytes
                    .map(human_bytes)
                    .unwrap_or_else(|| "-".into()),
                if report.passed {
                    "ok".into()
                } else {
                    "FAILED".into()
                },
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: Vec<String>| {
        let line: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    };
    push_row(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        push_row(row);
    }
    out
}

pub fn render_problems(reports: &[HostReport]) -> String {
    let mut out = String::new();
    for report in reports
        .iter()
        .filter(|report| !report.passed || !report.warnings.is_empty())
    {
        out.push_str(&format!("\n{}:\n", printable_message(&report.host)));
        for warning in &report.warnings {
            out.push_str(&format!("  warning: {}\n", printable_message(warning)));
        }
        for problem in &report.problems {
            for (index, line) in problem.lines().enumerate() {
                let lead = if index == 0 { "  - " } else { "    " };
                out.push_str(&format!("{lead}{}\n", printable_message(line)));
            }
        }
        for hint in &report.hints {
            out.push_str(&format!("    hint: {}\n", printable_message(hint)));
        }
    }
    out
}
