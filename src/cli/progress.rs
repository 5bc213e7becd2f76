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
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use xfer::progress::Reporter;
use xfer::terminal::{printable, printable_message};

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
