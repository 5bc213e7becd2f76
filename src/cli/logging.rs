//! Logging to stderr through `tracing`, at the level `-v`/`-q` ask for (or `XFER_LOG`).

use crate::cli::settings::Verbosity;
use tracing_subscriber::EnvFilter;

pub fn init(verbosity: Verbosity) {
    let default = match verbosity {
        Verbosity::Quiet => "error",
        Verbosity::Normal => "warn",
        Verbosity::Verbose(1) => "xfer=info,warn",
        Verbosity::Verbose(2) => "xfer=debug,info",
        Verbosity::Verbose(_) => "trace",
    };
    let filter = xfer::env::var(xfer::env::XFER_LOG).unwrap_or_else(|| default.to_string());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only on a terminal, and never when NO_COLOR is set.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && xfer::env::var(xfer::env::NO_COLOR).is_none();
    // Debugging output says when, from the start (where a slow run spends its time); normal
    // warnings do not.
    let detailed = matches!(verbosity, Verbosity::Verbose(level) if level >= 2)
        || xfer::env::var(xfer::env::XFER_LOG).is_some();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .with_target(matches!(verbosity, Verbosity::Verbose(level) if level >= 2))
        .with_timer(Clock(detailed.then(tracing_subscriber::fmt::time::uptime)))
        .try_init();
}

/// Seconds since the start, or nothing.
struct Clock(Option<tracing_subscriber::fmt::time::Uptime>);

impl tracing_subscriber::fmt::time::FormatTime for Clock {
    fn format_time(
        &self,
        writer: &mut tracing_subscriber::fmt::format::Writer<'_>,
    ) -> std::fmt::Result {
        match &self.0 {
            Some(uptime) => uptime.format_time(writer),
            None => Ok(()),
        }
    }
}
