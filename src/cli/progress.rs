//! The terminal side of progress: indicatif bars on a terminal, plain lines elsewhere.
//!
//! One bar for the whole job (bytes done of total, rate, ETA, files) and one line per file in
//! flight. Bytes already in place count toward the total at once and are shown as reused, so
//! the rate is the link's. Without a terminal there are no bars: `-v` prints a line per
//! finished file, and the summary comes at the end. Every path is made terminal-safe here.

use crate::cli::output::errln;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use xfer::progress::Reporter;
use xfer::ssh::prompt::{Answerer, Asking, Echo, Terminal};
use xfer::terminal::{printable, printable_message};

/// The bars on the terminal now, if any: a question asked in the middle of a run (a login
/// after a dropped connection) hides them while it is on the terminal, so they do not draw
/// over it.
static SHOWN: Mutex<Option<MultiProgress>> = Mutex::new(None);

fn show(multi: &MultiProgress) {
    *SHOWN.lock().unwrap_or_else(PoisonError::into_inner) = Some(multi.clone());
}

/// The terminal for authentication's questions, with the bars out of the way while one is
/// asked.
pub struct PausingTerminal;

/// Hides the bars for as long as it lives.
struct Paused(Option<MultiProgress>);

impl Paused {
    fn now() -> Paused {
        let shown = SHOWN.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(multi) = &shown {
            let _ = multi.clear();
            multi.set_draw_target(ProgressDrawTarget::hidden());
        }
        Paused(shown)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if let Some(multi) = &self.0 {
            multi.set_draw_target(ProgressDrawTarget::stderr());
        }
    }
}

impl Answerer for PausingTerminal {
    fn show<'a>(&'a self, text: &'a str) -> Asking<'a, ()> {
        Box::pin(async move {
            let _paused = Paused::now();
            Terminal.show(text).await
        })
    }

    fn ask<'a>(&'a self, prompt: &'a str, echo: Echo) -> Asking<'a, secrecy::SecretString> {
        Box::pin(async move {
            let _paused = Paused::now();
            Terminal.ask(prompt, echo).await
        })
    }
}

pub struct TerminalReporter {
    bars: Option<Bars>,
    verbose: bool,
    quiet: bool,
    files_done: AtomicU64,
    files_total: AtomicU64,
    reused: AtomicU64,
}

struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    files: Mutex<HashMap<String, ProgressBar>>,
}

/// Lines shown for files in flight; more would scroll the terminal.
const MAX_FILE_LINES: usize = 8;

impl TerminalReporter {
    pub fn new(verbose: bool, quiet: bool) -> Self {
        let bars = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            show(&multi);
            let total = multi.add(ProgressBar::new(0));
            // Until every unit is planned the total is not known: the bar counts what moved,
            // with no share of a total and no ETA, which would only be wrong.
            total.set_style(
                ProgressStyle::with_template(
                    "{spinner} {bytes} so far, {binary_bytes_per_sec}, still planning {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            Bars {
                multi,
                total,
                files: Mutex::new(HashMap::new()),
            }
        });
        TerminalReporter {
            bars,
            verbose,
            quiet,
            files_done: AtomicU64::new(0),
            files_total: AtomicU64::new(0),
            reused: AtomicU64::new(0),
        }
    }

    fn update_message(&self) {
        if let Some(bars) = &self.bars {
            let reused = self.reused.load(Ordering::Relaxed);
            let mut message = format!(
                "files {}/{}",
                self.files_done.load(Ordering::Relaxed),
                self.files_total.load(Ordering::Relaxed)
            );
            if reused > 0 {
                message.push_str(&format!(", {} reused", indicatif::HumanBytes(reused)));
            }
            bars.total.set_message(message);
        }
    }

    /// Files finished (done or failed) and files planned so far.
    pub fn files(&self) -> (u64, u64) {
        (
            self.files_done.load(Ordering::Relaxed),
            self.files_total.load(Ordering::Relaxed),
        )
    }

    /// Removes the bars before the summary is printed.
    pub fn finish(&self) {
        if let Some(bars) = &self.bars {
            if let Ok(mut files) = bars.files.lock() {
                for (_, bar) in files.drain() {
                    bar.finish_and_clear();
                }
            }
            bars.total.finish_and_clear();
            let _ = bars.multi.clear();
        }
    }
}

impl Reporter for TerminalReporter {
    fn plan_complete(&self) {
        if let Some(bars) = &self.bars {
            bars.total.set_style(
                ProgressStyle::with_template(
                    "{bar:30.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
        }
    }

    fn planned(&self, files: u64, bytes: u64) {
        // Units are planned one by one: each adds to the totals.
        self.files_total.fetch_add(files, Ordering::Relaxed);
        if let Some(bars) = &self.bars {
            bars.total.inc_length(bytes);
        }
        self.update_message();
    }

    fn file_started(&self, path: &str, size: u64, reused: u64) {
        self.reused.fetch_add(reused, Ordering::Relaxed);
        if let Some(bars) = &self.bars {
            bars.total.inc(reused);
            if let Ok(mut files) = bars.files.lock()
                && files.len() < MAX_FILE_LINES
            {
                let bar = bars.multi.add(ProgressBar::new(size));
                bar.set_style(
                    ProgressStyle::with_template("  {bytes:>10}/{total_bytes:<10} {wide_msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_position(reused);
                bar.set_message(printable(path.as_bytes()));
                files.insert(path.to_string(), bar);
            }
        }
        self.update_message();
    }

    fn bytes_moved(&self, path: &str, bytes: u64) {
        if let Some(bars) = &self.bars {
            bars.total.inc(bytes);
            if let Ok(files) = bars.files.lock()
                && let Some(bar) = files.get(path)
            {
                bar.inc(bytes);
            }
        }
    }

    fn file_finished(&self, path: &str, result: Result<(), &str>) {
        let _ = self.quiet;
        self.files_done.fetch_add(1, Ordering::Relaxed);
        if let Some(bars) = &self.bars
            && let Ok(mut files) = bars.files.lock()
            && let Some(bar) = files.remove(path)
        {
            bar.finish_and_clear();
        }
        let shown = printable(path.as_bytes());
        match result {
            Ok(()) if self.verbose => self.print(&format!("done {shown}")),
            // Failures are listed once, in the summary.
            _ => {}
        }
        self.update_message();
    }

    fn warning(&self, message: &str) {
        if !self.quiet {
            self.print(&format!("warning: {}", printable_message(message)));
        }
    }
}

impl TerminalReporter {
    fn print(&self, line: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.multi.println(line);
            }
            None => errln!("{line}"),
        }
    }
}

/// Progress of a pull or push on several hosts: on a terminal, one bar for the whole job and a
/// line per host at work (state, bytes, rate); a line per host as it finishes, on a terminal
/// or not.
pub struct FleetProgress {
    bars: Option<FleetBars>,
    quiet: bool,
    verbose: bool,
    hosts: usize,
    finished: AtomicU64,
    /// The longest host name, to align the lines.
    width: usize,
}

struct FleetBars {
    multi: MultiProgress,
    total: ProgressBar,
}

impl FleetProgress {
    pub fn new(names: &[String], verbose: bool, quiet: bool) -> Self {
        let bars = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            show(&multi);
            let total = multi.add(ProgressBar::new(0));
            total.set_style(
                ProgressStyle::with_template(
                    "{bar:30.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            FleetBars { multi, total }
        });
        let fleet = FleetProgress {
            bars,
            quiet,
            verbose,
            hosts: names.len(),
            finished: AtomicU64::new(0),
            width: names
                .iter()
                .map(|name| printable(name.as_bytes()).chars().count())
                .max()
                .unwrap_or(0)
                .min(40),
        };
        fleet.update_message();
        fleet
    }

    fn update_message(&self) {
        if let Some(bars) = &self.bars {
            bars.total.set_message(format!(
                "hosts {}/{} finished",
                self.finished.load(Ordering::Relaxed),
                self.hosts
            ));
        }
    }

    /// Host `name` starts: its reporter, which draws its line while it works.
    pub fn host_started(self: &Arc<Self>, name: &str) -> Arc<HostProgress> {
        let shown = printable(name.as_bytes());
        let line = self.bars.as_ref().map(|bars| {
            let line = bars.multi.add(ProgressBar::new(0));
            line.set_style(
                ProgressStyle::with_template(&format!(
                    "  {{prefix:<{}}} {{bytes:>10}}/{{total_bytes:<10}} {{binary_bytes_per_sec:>12}} {{msg}}",
                    self.width
                ))
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            line.set_prefix(shown.clone());
            line.set_message("connecting");
            line
        });
        Arc::new(HostProgress {
            fleet: self.clone(),
            name: shown,
            line,
        })
    }

    /// Host `name` is finished: its line goes, and a line says how it ended (with `-q`, only
    /// when it failed).
    pub fn host_finished(&self, host: &HostProgress, line: &str, failed: bool) {
        self.finished.fetch_add(1, Ordering::Relaxed);
        if let Some(bar) = &host.line {
            bar.finish_and_clear();
            if let Some(bars) = &self.bars {
                bars.multi.remove(bar);
            }
        }
        if !self.quiet || failed {
            self.print(line);
        }
        self.update_message();
    }

    /// Hosts finished so far.
    pub fn finished(&self) -> u64 {
        self.finished.load(Ordering::Relaxed)
    }

    /// Removes the bars before the summary is printed.
    pub fn finish(&self) {
        if let Some(bars) = &self.bars {
            bars.total.finish_and_clear();
            let _ = bars.multi.clear();
        }
    }

    fn print(&self, line: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.multi.println(line);
            }
            None => errln!("{line}"),
        }
    }
}

/// One host's reporter in a fleet: feeds its line and the job's bar.
pub struct HostProgress {
    fleet: Arc<FleetProgress>,
    /// Terminal-safe.
    name: String,
    line: Option<ProgressBar>,
}

impl Reporter for HostProgress {
    fn planned(&self, _files: u64, bytes: u64) {
        if let Some(line) = &self.line {
            line.inc_length(bytes);
            line.set_message("transferring");
        }
        if let Some(bars) = &self.fleet.bars {
            bars.total.inc_length(bytes);
        }
    }

    fn file_started(&self, _path: &str, _size: u64, reused: u64) {
        self.bytes_moved("", reused);
    }

    fn bytes_moved(&self, _path: &str, bytes: u64) {
        if let Some(line) = &self.line {
            line.inc(bytes);
        }
        if let Some(bars) = &self.fleet.bars {
            bars.total.inc(bytes);
        }
    }

    fn file_finished(&self, path: &str, result: Result<(), &str>) {
        if result.is_ok() && self.fleet.verbose {
            self.fleet.print(&format!(
                "{}: done {}",
                self.name,
                printable(path.as_bytes())
            ));
        }
    }

    fn warning(&self, message: &str) {
        if !self.fleet.quiet {
            self.fleet.print(&format!(
                "{}: warning: {}",
                self.name,
                printable_message(message)
            ));
        }
    }
}
