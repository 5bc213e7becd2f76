//! Plan, then execute: what a transfer will do, decided before any data moves.
//!
//! A [`Plan`] is a plain value: every directory, file and symlink of the source with the action
//! it needs at the destination (create, update, resume with N of M blocks already in place, or
//! nothing because it is up to date), plus what was skipped and why (hostile names, special
//! files, links pointing out of the tree). `--dry-run` prints it; the executor follows it; tests
//! snapshot it. Building a plan reads metadata only (remote listings, local lstat, journal
//! headers), never file data.
//!
//! "Up to date" is rsync's quick check: same kind, same size and same modification time (whole
//! seconds, which is all SFTP v3 carries). xfer sets a file's mtime only after the file is
//! verified, so a partial file never passes it.
//!
//! What a plan holds grows with what the peer lists, so it is counted against the transfer's
//! [`budget`] as it grows, and a plan over it fails. Refused names are the peer's words too: a
//! plan keeps the first [`MAX_REFUSED_SHOWN`] of them, cut short, and counts the rest.
//!
//! - `pull`: where a pull lands, and its planner (remote listings against the local disk).
//! - `push`: the push planner (a local walk against remote listings), and `--fix-crlf`.

mod pull;
mod push;

pub use pull::{PullScope, PullTarget, plan_pull, pull_target};
pub use push::{PushScope, plan_push};

use crate::blocks::DEFAULT_BLOCK_SIZE;
use crate::blocks::journal::{self, JournalHeader};
use crate::engine::budget::{self, Held, OverBudget, text_bytes};
use crate::engine::state::StateDir;
use crate::error::{Error, ErrorKind, Result};
use crate::local::{self, RelativePath};
use crate::remote::EntryKind;
use serde::Serialize;
use std::io::Read;

/// A tree deeper than this is refused: no real tree is, and a lying server could make one
/// endless.
pub const MAX_TREE_DEPTH: usize = 1024;
/// A tree with more entries than this is refused rather than planned into memory.
pub const MAX_TREE_ENTRIES: usize = 20_000_000;
/// Refused names a plan shows; the others are only counted.
pub const MAX_REFUSED_SHOWN: usize = 20;
/// Characters of a refused name shown: enough to find it on the server.
pub const REFUSED_NAME_CHARS: usize = 80;

/// Which way the data goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    Pull,
    Push,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Pull => "pull",
            Direction::Push => "push",
        }
    }
}

/// What one item needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Not at the destination yet.
    Create,
    /// At the destination but different (size or mtime, or another kind of entry).
    Update { reason: String },
    /// A previous run left `have` of `total` blocks recorded in its journal.
    Resume { have: u64, total: u64 },
    /// Nothing to do.
    UpToDate,
}

/// One directory, file or symlink of the source.
#[derive(Debug, Clone, Serialize)]
pub struct PlanItem {
    /// Where it goes, relative to the destination root (`""` for the root itself).
    pub path: String,
    /// Where it is on the source side (a remote path for pull, a local one for push).
    pub source: String,
    /// Where it goes on the destination side (a local path for pull, a remote one for push).
    pub target: String,
    pub kind: EntryKind,
    pub size: u64,
    pub mtime: i64,
    pub mode: u32,
    pub link_target: Option<String>,
    #[serde(flatten)]
    pub action: Action,
}

impl PlanItem {
    pub fn relative(&self) -> Result<RelativePath> {
        parse_relative(&self.path)
    }

    /// What the item takes in memory, about.
    fn held_bytes(&self) -> usize {
        let reason = match &self.action {
            Action::Update { reason } => reason.len(),
            _ => 0,
        };
        std::mem::size_of::<PlanItem>()
            + [
                self.path.len(),
                self.source.len(),
                self.target.len(),
                self.link_target.as_ref().map_or(0, String::len),
                reason,
            ]
            .into_iter()
            .map(text_bytes)
            .sum::<usize>()
    }
}

/// Parses a plan path; `""` is the destination root.
pub fn parse_relative(text: &str) -> Result<RelativePath> {
    if text.is_empty() {
        return Ok(RelativePath::root());
    }
    RelativePath::parse(text).map_err(|error| error.into_error(text))
}

/// Something in the source that will not be transferred, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// Terminal-safe.
    pub path: String,
    pub reason: String,
}

impl Skipped {
    fn held_bytes(&self) -> usize {
        std::mem::size_of::<Skipped>() + text_bytes(self.path.len()) + text_bytes(self.reason.len())
    }
}

#[derive(Debug, Serialize)]
pub struct Plan {
    pub direction: Direction,
    /// `host:path` or a local path, for messages.
    pub source: String,
    pub destination: String,
    pub items: Vec<PlanItem>,
    pub skipped: Vec<Skipped>,
    /// Transferred, but worth a word (a shell script with CRLF line endings).
    pub warnings: Vec<Skipped>,
    /// Entries that could not be examined (a listing or a link that failed): they count as
    /// failures of the run, but do not stop the rest of it.
    pub problems: Vec<crate::engine::ItemError>,
    /// What the plan takes of the transfer's budget, given back when it is dropped.
    #[serde(skip)]
    held: Held,
    /// Refused names kept in `skipped`.
    #[serde(skip)]
    refused_shown: usize,
    /// Names refused past the first [`MAX_REFUSED_SHOWN`]: counted, not kept.
    #[serde(skip)]
    refused_unshown: u64,
}

/// Why a refused name is skipped, before the rule it breaks.
const REFUSED_REASON: &str = "refused name from the server";

impl Plan {
    /// An empty plan, which may hold at most `held_at_most` bytes of the transfer's budget.
    fn new(direction: Direction, source: String, destination: String, held_at_most: usize) -> Plan {
        Plan {
            direction,
            source,
            destination,
            items: Vec::new(),
            skipped: Vec::new(),
            warnings: Vec::new(),
            problems: Vec::new(),
            held: Held::new(&budget::TRANSFER).at_most(held_at_most),
            refused_shown: 0,
            refused_unshown: 0,
        }
    }

    /// The error that ends a plan over the budget.
    fn over_budget(&self, error: OverBudget) -> Error {
        let kind = match self.direction {
            Direction::Pull => ErrorKind::Remote,
            Direction::Push => ErrorKind::LocalIo,
        };
        let over = Error::new(
            kind,
            format!(
                "{}: {error}; refusing to plan more of it",
                crate::terminal::printable(self.source.as_bytes())
            ),
        )
        .with_hint("transfer a smaller part of the tree at a time, e.g. one subdirectory per run, or raise XFER_PLAN_MEMORY (MiB) for a directory of very many files")
        .transient(false);
        if error.share {
            over.with_source(budget::OverShare)
        } else {
            over
        }
    }

    /// Takes `bytes` more of the budget for what the plan is about to hold.
    fn hold(&mut self, bytes: usize) -> Result<()> {
        self.held
            .take(bytes)
            .map_err(|error| self.over_budget(error))
    }

    fn add_item(&mut self, item: PlanItem) -> Result<()> {
        self.hold(item.held_bytes())?;
        self.items.push(item);
        Ok(())
    }

    fn add_skipped(&mut self, skipped: Skipped) -> Result<()> {
        self.hold(skipped.held_bytes())?;
        self.skipped.push(skipped);
        Ok(())
    }

    fn add_problem(&mut self, problem: crate::engine::ItemError) -> Result<()> {
        self.hold(
            std::mem::size_of::<crate::engine::ItemError>()
                + text_bytes(problem.path.len())
                + text_bytes(problem.message.len())
                + text_bytes(problem.hint.as_ref().map_or(0, String::len)),
        )?;
        self.problems.push(problem);
        Ok(())
    }

    /// Records a name the server sent that is refused, in `directory`: shown cut short while
    /// fewer than [`MAX_REFUSED_SHOWN`] are, counted after.
    fn refuse_name(
        &mut self,
        directory: &RelativePath,
        name: &[u8],
        error: local::NameError,
    ) -> Result<()> {
        if self.refused_shown >= MAX_REFUSED_SHOWN {
            self.refused_unshown += 1;
            return Ok(());
        }
        self.refused_shown += 1;
        self.add_skipped(Skipped {
            path: format!(
                "{directory}/{}",
                crate::terminal::printable_cut(name, REFUSED_NAME_CHARS)
            ),
            reason: format!("{REFUSED_REASON}: {error}"),
        })
    }

    /// Adds the count of the refused names not shown, once the plan is complete.
    fn finish_refusals(&mut self) -> Result<()> {
        if self.refused_unshown > 0 {
            let more = self.refused_unshown;
            self.refused_unshown = 0;
            self.add_skipped(Skipped {
                path: "...".into(),
                reason: format!("and {more} more names refused from the server, not listed"),
            })?;
        }
        Ok(())
    }

    /// Takes in a unit's plan, as a dry run shows a transfer whole: its entries, skipped
    /// entries, warnings and problems, with paths placed below `prefix` (a push plans each unit
    /// from its own top; a pull's plans already name paths from the transfer's root). Once every
    /// unit is in, [`Plan::sort_as_walked`] puts the entries in order.
    pub fn absorb(&mut self, unit: Plan, prefix: &RelativePath) -> Result<()> {
        let placed = |path: &str| -> String {
            match (prefix.is_root(), path.is_empty()) {
                (true, _) => path.to_string(),
                (false, true) => prefix.to_string(),
                (false, false) => format!("{prefix}/{path}"),
            }
        };
        let Plan {
            items,
            skipped,
            warnings,
            problems,
            ..
        } = unit;
        for mut item in items {
            item.path = placed(&item.path);
            self.add_item(item)?;
        }
        for mut entry in skipped {
            if entry.path != "..." {
                entry.path = placed(&entry.path);
            }
            self.add_skipped(entry)?;
        }
        for mut warning in warnings {
            warning.path = placed(&warning.path);
            self.hold(warning.held_bytes())?;
            self.warnings.push(warning);
        }
        for mut problem in problems {
            problem.path = placed(&problem.path);
            self.add_problem(problem)?;
        }
        Ok(())
    }

    /// Puts the entries in the order a depth-first walk of the source, by name, visits them.
    pub fn sort_as_walked(&mut self) {
        self.items
            .sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
    }

    /// Bytes of file data the plan will move (resumed files count their missing blocks).
    pub fn bytes_to_move(&self) -> u64 {
        self.items
            .iter()
            .filter(|item| item.kind == EntryKind::File)
            .map(|item| match &item.action {
                Action::Create | Action::Update { .. } => item.size,
                Action::Resume { have, .. } => item
                    .size
                    .saturating_sub(have.saturating_mul(u64::from(DEFAULT_BLOCK_SIZE))),
                Action::UpToDate => 0,
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Sizes as the peer claims them: added without overflow, whatever they say.
    pub fn total_file_bytes(&self) -> u64 {
        self.files()
            .map(|item| item.size)
            .fold(0u64, u64::saturating_add)
    }

    pub fn files(&self) -> impl Iterator<Item = &PlanItem> {
        self.items
            .iter()
            .filter(|item| item.kind == EntryKind::File)
    }

    /// The `--dry-run` text: a summary line, then one line per item that needs work and per
    /// skipped entry.
    /// The plan as `--dry-run` prints it: the summary line, then what would change (every
    /// entry, up-to-date ones included, when `all`), then warnings and skipped entries.
    pub fn render(&self, all: bool) -> String {
        let count = |wanted: fn(&Action) -> bool| {
            self.items
                .iter()
                .filter(|item| wanted(&item.action))
                .count()
        };
        let mut out = format!(
            "{} {} -> {}: {} to create, {} to update, {} to resume, {} up to date, {} skipped; {} to move\n",
            self.direction.as_str(),
            crate::terminal::printable(self.source.as_bytes()),
            crate::terminal::printable(self.destination.as_bytes()),
            count(|a| matches!(a, Action::Create)),
            count(|a| matches!(a, Action::Update { .. })),
            count(|a| matches!(a, Action::Resume { .. })),
            count(|a| matches!(a, Action::UpToDate)),
            self.skipped.len(),
            human_bytes(self.bytes_to_move()),
        );
        for item in self
            .items
            .iter()
            .filter(|item| all || item.action != Action::UpToDate)
        {
            let shown = if item.path.is_empty() {
                ".".to_string()
            } else {
                crate::terminal::printable(item.path.as_bytes())
            };
            let kind = match item.kind {
                EntryKind::Directory => "dir",
                EntryKind::File => "file",
                EntryKind::Symlink => "link",
                EntryKind::Special => "special",
            };
            let what = match &item.action {
                Action::Create => "new".to_string(),
                Action::Update { reason } => format!("changed ({reason})"),
                Action::Resume { have, total } => {
                    format!("resume ({have} of {total} blocks in place)")
                }
                Action::UpToDate => "up to date".to_string(),
            };
            let size = if item.kind == EntryKind::File {
                human_bytes(item.size)
            } else {
                String::new()
            };
            out.push_str(&format!("{what:<40} {kind:<4} {size:>10}  {shown}\n"));
        }
        for warning in &self.warnings {
            out.push_str(&format!("warning: {}: {}\n", warning.path, warning.reason));
        }
        for skipped in &self.skipped {
            out.push_str(&format!(
                "{:<40} {:<4} {:>10}  {}\n",
                format!("skip ({})", skipped.reason),
                "",
                "",
                skipped.path
            ));
        }
        out
    }
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A file being written is one byte longer than its source until it is verified, then cut to
/// its size just before its mode and mtime are set. So rsync's quick check (size and mtime) can
/// never take a partial file for a finished one, whenever xfer was stopped, even when the
/// source changed in the same second as the copy was written.
pub fn size_while_incomplete(size: u64) -> u64 {
    size.saturating_add(1)
}

/// What identifies the two ends of a transfer in journals and completion records.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// `user@host:port`, the remote end.
    pub remote_id: String,
}

/// The journal header a file's transfer uses: any change of source size or mtime, or of the
/// paths, makes an old journal stale.
pub fn journal_header(
    direction: Direction,
    endpoints: &Endpoints,
    item: &PlanItem,
) -> JournalHeader {
    let (source_id, destination_id) = match direction {
        Direction::Pull => (
            format!("{}:{}", endpoints.remote_id, item.source),
            item.target.clone(),
        ),
        Direction::Push => (
            item.source.clone(),
            format!("{}:{}", endpoints.remote_id, item.target),
        ),
    };
    JournalHeader {
        block_size: DEFAULT_BLOCK_SIZE,
        file_size: item.size,
        source_mtime_seconds: item.mtime,
        source_mtime_nanos: 0,
        source_id: truncate_id(source_id),
        destination_id: truncate_id(destination_id),
    }
}

fn truncate_id(mut id: String) -> String {
    if id.len() > journal::MAX_ID_LEN {
        // Long paths still get distinct journals (the file name hashes the full ids); the
        // header only needs to be a faithful prefix.
        let mut cut = journal::MAX_ID_LEN;
        while !id.is_char_boundary(cut) {
            cut -= 1;
        }
        id.truncate(cut);
    }
    id
}

/// How many blocks a usable journal for this item vouches for, without trusting them yet.
pub fn journal_blocks(state: &StateDir, direction: Direction, header: &JournalHeader) -> u64 {
    let place = state.journal_file(
        direction.as_str(),
        &header.source_id,
        &header.destination_id,
    );
    let Ok(Some(file)) = place.open(false) else {
        return 0;
    };
    let Ok(layout) = header.layout() else {
        return 0;
    };
    let cap = crate::engine::state::journal_cap(&layout);
    let mut bytes = Vec::new();
    if file.take(cap).read_to_end(&mut bytes).is_err() {
        return 0;
    }
    match journal::decode(&bytes) {
        Ok(decoded) if decoded.matches(header) => decoded.blocks().len() as u64,
        _ => 0,
    }
}

/// What the destination holds where an item goes, as far as the quick check needs.
pub(crate) struct Existing {
    pub kind: EntryKind,
    pub size: u64,
    pub mtime: i64,
    /// Its target, read where it and the item are both symlinks.
    pub link_target: Option<String>,
    /// A pulled copy marked as possibly racily current (`engine::settle`): its
    /// content is checked whatever the quick check says.
    pub racy: bool,
}

/// The action an item needs, given what the destination holds there: rsync's quick check
/// (same kind, size and mtime), link targets compared, and a file whose journal holds blocks
/// resumed rather than updated.
pub(crate) fn action_for(
    item: &PlanItem,
    existing: Option<Existing>,
    direction: Direction,
    state: &StateDir,
    endpoints: &Endpoints,
) -> Action {
    let Some(existing) = existing else {
        return Action::Create;
    };
    if existing.kind != item.kind {
        return Action::Update {
            reason: format!("a {:?} is there", existing.kind).to_lowercase(),
        };
    }
    match item.kind {
        EntryKind::Directory => Action::UpToDate,
        EntryKind::Symlink if existing.link_target == item.link_target => Action::UpToDate,
        EntryKind::Symlink => Action::Update {
            reason: "link target differs".into(),
        },
        EntryKind::File | EntryKind::Special => {
            let looks_current = existing.size == item.size && existing.mtime == item.mtime;
            if looks_current && !existing.racy {
                return Action::UpToDate;
            }
            let header = journal_header(direction, endpoints, item);
            let have = journal_blocks(state, direction, &header);
            if have > 0 {
                let total = header
                    .layout()
                    .map(|layout| layout.block_count())
                    .unwrap_or(0);
                return Action::Resume { have, total };
            }
            let reason = if existing.size != item.size {
                format!("size {} -> {}", existing.size, item.size)
            } else if looks_current {
                "copied within seconds of its source's last change: content checked".to_string()
            } else {
                "modification time differs".to_string()
            };
            Action::Update { reason }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::NameError;
    use pull::queued_bytes;

    #[test]
    fn refused_names_are_shown_cut_short_then_counted() {
        let mut plan = Plan::new(
            Direction::Pull,
            "h:/source".into(),
            "destination".into(),
            usize::MAX,
        );
        let directory = RelativePath::parse("d").expect("a path");
        let extra = 5;
        for index in 0..MAX_REFUSED_SHOWN + extra {
            let name = format!("{index:03}\x1b{}", "x".repeat(4000));
            plan.refuse_name(&directory, name.as_bytes(), NameError::Slash)
                .expect("within the budget");
        }
        plan.finish_refusals().expect("within the budget");
        assert_eq!(plan.skipped.len(), MAX_REFUSED_SHOWN + 1);
        for skipped in &plan.skipped[..MAX_REFUSED_SHOWN] {
            assert!(skipped.path.starts_with("d/"), "{}", skipped.path);
            assert!(skipped.path.contains("\\x1b"), "{}", skipped.path);
            assert!(skipped.path.ends_with("..."), "{}", skipped.path);
            assert!(skipped.path.chars().count() <= 2 + REFUSED_NAME_CHARS + 3);
            assert!(skipped.reason.starts_with(REFUSED_REASON));
        }
        let last = &plan.skipped[MAX_REFUSED_SHOWN];
        assert_eq!(
            (last.path.as_str(), last.reason.as_str()),
            (
                "...",
                "and 5 more names refused from the server, not listed"
            )
        );
        // Only what is kept is counted against the budget.
        let kept: usize = plan.skipped.iter().map(Skipped::held_bytes).sum();
        assert_eq!(plan.held.bytes(), kept);
        // Nothing is counted twice by a second finish.
        plan.finish_refusals().expect("nothing to add");
        assert_eq!(plan.skipped.len(), MAX_REFUSED_SHOWN + 1);
    }

    #[test]
    fn what_an_entry_holds_grows_with_its_path() {
        let entry = |name: &str| crate::remote::RemoteEntry {
            name: name.to_string(),
            kind: EntryKind::File,
            size: 0,
            mtime: 0,
            mode: 0o644,
        };
        let name = "n".repeat(255);
        let shallow = RelativePath::root().join(&name).expect("a name");
        let mut deep = RelativePath::root();
        for _ in 0..100 {
            deep = deep.join(&name).expect("a name");
        }
        let queued = |relative: &RelativePath| {
            let remote = format!("/r/{}", relative.to_raw_string());
            queued_bytes(&(remote, relative.clone(), entry(&name)))
        };
        // A hundred levels down, an entry holds a hundred names in each of its two paths.
        assert!(queued(&shallow) < 1000);
        assert!(queued(&deep) > 2 * 100 * 255);
        let item = |relative: &RelativePath| PlanItem {
            path: relative.to_raw_string(),
            source: format!("/r/{}", relative.to_raw_string()),
            target: format!("/l/{}", relative.to_raw_string()),
            kind: EntryKind::File,
            size: 0,
            mtime: 0,
            mode: 0o644,
            link_target: None,
            action: Action::Create,
        };
        assert!(item(&shallow).held_bytes() < 1000);
        assert!(item(&deep).held_bytes() > 3 * 100 * 255);
        // Held bytes go into the plan's share of the budget with the item.
        let mut plan = Plan::new(Direction::Pull, "h:/r".into(), "/l".into(), usize::MAX);
        plan.add_item(item(&deep)).expect("within the budget");
        assert_eq!(plan.held.bytes(), item(&deep).held_bytes());
    }
}
