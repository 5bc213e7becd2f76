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

use crate::blocks::DEFAULT_BLOCK_SIZE;
use crate::blocks::journal::{self, JournalHeader};
use crate::engine::budget::{self, ALLOCATION_OVERHEAD, Held, OverBudget, text_bytes};
use crate::engine::state::StateDir;
use crate::error::{Error, ErrorKind, Result};
use crate::local::{
    self, Destination, Lookup, RelativePath, symlink_target_is_contained, validate_component,
};
use crate::remote::{self, EntryKind, Remote};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};

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

/// A shell script with CRLF line endings: a warning, or (with `fix_crlf`) a converted copy in
/// the state directory that becomes what is sent. Its mtime is the original's, so a re-run
/// finds the remote up to date.
fn check_crlf(item: &mut PlanItem, state: &StateDir, fix_crlf: bool) -> Result<Option<Skipped>> {
    let Ok(content) = std::fs::read(&item.source) else {
        return Ok(None);
    };
    if !crate::engine::crlf::is_crlf_script(&item.path, &content) {
        return Ok(None);
    }
    let path = local::printable(item.path.as_bytes());
    if !fix_crlf {
        return Ok(Some(Skipped {
            path,
            reason: "a shell script with CRLF (Windows) line endings: on Linux it fails with `$'\\r': command not found`; push with --fix-crlf to convert it on the way".into(),
        }));
    }
    let converted = crate::engine::crlf::to_lf(&content);
    let staged = state.converted_file(&item.source);
    let write = || -> std::io::Result<()> {
        let file = staged.replace(&[&converted], false)?;
        let mtime = std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(u64::try_from(item.mtime).unwrap_or(0));
        file.set_times(
            std::fs::FileTimes::new()
                .set_modified(mtime)
                .set_accessed(mtime),
        )
    };
    write().map_err(|error| {
        Error::local_io(
            format!("cannot stage a converted copy of {}", item.source),
            error,
        )
    })?;
    item.source = staged.path().display().to_string();
    item.size = converted.len() as u64;
    Ok(Some(Skipped {
        path,
        reason: "CRLF line endings converted to LF on the way (--fix-crlf)".into(),
    }))
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
    fn new(direction: Direction, source: String, destination: String) -> Plan {
        Plan {
            direction,
            source,
            destination,
            items: Vec::new(),
            skipped: Vec::new(),
            warnings: Vec::new(),
            problems: Vec::new(),
            held: Held::new(&budget::TRANSFER),
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
        Error::new(
            kind,
            format!(
                "{}: {error}; refusing to plan more of it",
                local::printable(self.source.as_bytes())
            ),
        )
        .with_hint("transfer a smaller part of the tree at a time, e.g. one subdirectory per run, or raise XFER_PLAN_MEMORY (MiB) for a directory of very many files")
        .transient(false)
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
                local::printable_cut(name, REFUSED_NAME_CHARS)
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
    /// from its own top; a pull's plans already name paths from the transfer's root). The
    /// entries are put back in the order a walk of the source visits them.
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
        self.items
            .sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
        Ok(())
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
            local::printable(self.source.as_bytes()),
            local::printable(self.destination.as_bytes()),
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
                local::printable(item.path.as_bytes())
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

/// Where a pull writes: the directory that is the destination root, and the item path of the
/// source root inside it (the root itself for a tree, a file name for a single file).
#[derive(Debug, Clone)]
pub struct PullTarget {
    pub root: PathBuf,
    pub top: RelativePath,
}

/// Decides where a pull of `source_kind` lands, the way cp and scp do: a tree becomes the
/// destination path itself; a file goes to the destination path, or inside it if it is an
/// existing directory.
pub fn pull_target(
    source_path: &str,
    source_kind: EntryKind,
    destination: &Path,
) -> Result<PullTarget> {
    if source_kind == EntryKind::Directory {
        return Ok(PullTarget {
            root: destination.to_path_buf(),
            top: RelativePath::root(),
        });
    }
    // A trailing `/` names a directory, made if missing, as with cp, scp and rsync.
    let names_directory = destination.as_os_str().as_encoded_bytes().ends_with(b"/");
    if names_directory || destination.is_dir() {
        let name = source_path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        let name = validate_component(name.as_bytes())
            .map_err(|error| error.into_error(name.as_bytes()))?;
        let top = RelativePath::root()
            .join(name)
            .map_err(|error| error.into_error(name.as_bytes()))?;
        return Ok(PullTarget {
            root: destination.to_path_buf(),
            top,
        });
    }
    let name = destination
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| Error::usage(format!("{} does not name a file", destination.display())))?;
    let top = RelativePath::root()
        .join(name)
        .map_err(|error| error.into_error(name.as_bytes()))?;
    let parent = destination
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok(PullTarget {
        root: parent.to_path_buf(),
        top,
    })
}

/// Builds the plan of a pull: lists the remote tree (metadata only), validates every name,
/// and compares with what the destination holds (`destination` is None when it does not exist
/// yet and this is a dry run: everything is new).
#[allow(clippy::too_many_arguments)]
pub async fn plan_pull<R: Remote>(
    remote: &R,
    source_path: &str,
    destination_text: &str,
    destination_root: &Path,
    destination: Option<&Destination>,
    top: &RelativePath,
    state: &StateDir,
    endpoints: &Endpoints,
    shallow: bool,
) -> Result<Plan> {
    let label = remote.label().to_string();
    let root_entry = remote.stat(source_path, true).await?.ok_or_else(|| {
        Error::remote(format!("{label}: {source_path}: no such file or directory")).with_hint(
            "check the remote path (it is relative to the login directory unless it starts with /)",
        )
    })?;
    let mut plan = Plan::new(
        Direction::Pull,
        format!("{}:{source_path}", endpoints.remote_id),
        destination_text.to_string(),
    );
    let mut queue: VecDeque<Queued> = VecDeque::new();
    let root = (source_path.to_string(), top.clone(), root_entry);
    plan.hold(queued_bytes(&root))?;
    queue.push_back(root);
    let mut seen = 0usize;
    let mut local_directory = LocalDirectory::default();
    while let Some(queued) = queue.pop_front() {
        // What the entry held in the queue, it holds in the plan from now on, or not at all.
        plan.held.give_back(queued_bytes(&queued));
        let (remote_path, relative, entry) = queued;
        seen += 1;
        if seen > MAX_TREE_ENTRIES || relative.components().len() > MAX_TREE_DEPTH {
            return Err(Error::remote(format!(
                "{label}: {source_path} has more than {MAX_TREE_ENTRIES} entries or is deeper than {MAX_TREE_DEPTH} levels; refusing to plan it"
            ))
            .with_hint("pull a smaller part of the tree")
            .transient(false));
        }
        let mut link_target = None;
        match entry.kind {
            EntryKind::Special => {
                plan.add_skipped(Skipped {
                    path: relative.to_string(),
                    reason: "special file (device, socket or fifo)".into(),
                })?;
                continue;
            }
            EntryKind::Symlink => {
                let target = match remote.read_link(&remote_path).await {
                    Ok(target) => target,
                    Err(error) if error.kind() == crate::ErrorKind::Remote => {
                        plan.add_problem(crate::engine::ItemError::new(
                            &relative.to_raw_string(),
                            &error,
                        ))?;
                        continue;
                    }
                    Err(error) => return Err(error),
                };
                if !symlink_target_is_contained(&relative, &target) {
                    plan.add_skipped(Skipped {
                        path: relative.to_string(),
                        reason: format!(
                            "symlink to {} points outside the tree",
                            local::printable_cut(target.as_bytes(), REFUSED_NAME_CHARS)
                        ),
                    })?;
                    continue;
                }
                link_target = Some(target);
            }
            EntryKind::Directory => {
                let mut children = match remote.list(&remote_path).await {
                    Ok(children) => children,
                    // The root must list; below it, one unreadable directory is one failure.
                    Err(error)
                        if error.kind() == crate::ErrorKind::Remote
                            && !relative.is_root()
                            && relative != *top =>
                    {
                        plan.add_problem(crate::engine::ItemError::new(
                            &relative.to_raw_string(),
                            &error,
                        ))?;
                        continue;
                    }
                    Err(error) => return Err(error),
                };
                children.sort_by(|a, b| a.name.cmp(&b.name));
                // A name listed twice would be transferred twice, by two tasks at once: keep
                // the first. Said once per directory, however many the server repeats.
                let mut duplicates = 0usize;
                let mut first_duplicate = None;
                children.dedup_by(|later, earlier| {
                    let duplicate = later.name == earlier.name;
                    if duplicate {
                        duplicates += 1;
                        first_duplicate.get_or_insert_with(|| {
                            local::printable_cut(later.name.as_bytes(), REFUSED_NAME_CHARS)
                        });
                    }
                    duplicate
                });
                if let Some(first) = first_duplicate {
                    match duplicates {
                        1 => tracing::warn!(
                            "{label}: {remote_path} lists {first} twice; using the first"
                        ),
                        more => tracing::warn!(
                            "{label}: {remote_path} lists {first} and {} more names more than once; using the first of each",
                            more - 1
                        ),
                    }
                }
                for child in children {
                    // A shallow plan covers the top directory and what is directly in it but
                    // its subdirectories, which are units of their own.
                    // (A refused name still falls through, to be reported below.)
                    if shallow
                        && relative == *top
                        && child.kind == EntryKind::Directory
                        && validate_component(child.name.as_bytes()).is_ok()
                    {
                        continue;
                    }
                    match validate_component(child.name.as_bytes()) {
                        Ok(name) => {
                            let Ok(child_relative) = relative.join(name) else {
                                continue;
                            };
                            let child_remote = remote::join(&remote_path, name);
                            let queued = (child_remote, child_relative, child);
                            plan.hold(queued_bytes(&queued))?;
                            queue.push_back(queued);
                        }
                        Err(error) => {
                            plan.refuse_name(&relative, child.name.as_bytes(), error)?;
                        }
                    }
                }
            }
            EntryKind::File => {}
        }
        let target = destination_root
            .join(relative.to_raw_string())
            .display()
            .to_string();
        let mut item = PlanItem {
            path: relative.to_raw_string(),
            source: remote_path,
            target,
            kind: entry.kind,
            size: if entry.kind == EntryKind::File {
                entry.size
            } else {
                0
            },
            mtime: entry.mtime,
            mode: entry.mode,
            link_target,
            action: Action::Create,
        };
        item.action = match destination {
            Some(destination) => {
                let existing = local_directory.metadata(destination, &relative)?;
                local_action(destination, existing, &relative, &item, state, endpoints)?
            }
            None => Action::Create,
        };
        plan.add_item(item)?;
    }
    plan.finish_refusals()?;
    Ok(plan)
}

/// An entry waiting in a plan's queue: its remote path, its relative path and what the
/// listing said.
type Queued = (String, RelativePath, crate::remote::RemoteEntry);

/// What a queued entry takes in memory, about: each component of its relative path is a
/// string of its own, so a deep tree costs more per entry than a flat one.
fn queued_bytes((remote_path, relative, entry): &Queued) -> usize {
    let components: usize = relative
        .components()
        .iter()
        .map(|component| std::mem::size_of::<String>() + text_bytes(component.len()))
        .sum();
    std::mem::size_of::<Queued>()
        + text_bytes(remote_path.len())
        + text_bytes(entry.name.len())
        + ALLOCATION_OVERHEAD
        + components
}

/// The local directory whose entries a plan is comparing, held open while it goes through
/// them: one `fstatat` per entry instead of a walk from the root for each.
#[derive(Default)]
struct LocalDirectory<'d> {
    /// The directory's components and its open handle (`None`: it is missing).
    current: Option<(Vec<String>, Option<Lookup<'d>>)>,
}

impl<'d> LocalDirectory<'d> {
    fn metadata(
        &mut self,
        destination: &'d Destination,
        path: &RelativePath,
    ) -> Result<Option<local::EntryMetadata>> {
        let (Some(name), Some(parent)) = (path.file_name(), path.parent()) else {
            return destination.metadata(path);
        };
        let stale = self
            .current
            .as_ref()
            .is_none_or(|(components, _)| components.as_slice() != parent.components());
        if stale {
            self.current = Some((parent.components().to_vec(), destination.lookup(&parent)?));
        }
        match self
            .current
            .as_ref()
            .and_then(|(_, lookup)| lookup.as_ref())
        {
            Some(lookup) => lookup.metadata(name),
            None => Ok(None),
        }
    }
}

/// Compares one source item with what the local destination holds.
fn local_action(
    destination: &Destination,
    existing: Option<local::EntryMetadata>,
    relative: &RelativePath,
    item: &PlanItem,
    state: &StateDir,
    endpoints: &Endpoints,
) -> Result<Action> {
    let Some(existing) = existing else {
        return Ok(Action::Create);
    };
    let existing_kind = match existing.kind {
        local::EntryKind::Directory => EntryKind::Directory,
        local::EntryKind::File => EntryKind::File,
        local::EntryKind::Symlink => EntryKind::Symlink,
        _ => EntryKind::Special,
    };
    if existing_kind != item.kind {
        return Ok(Action::Update {
            reason: format!("a {existing_kind:?} is there").to_lowercase(),
        });
    }
    match item.kind {
        EntryKind::Directory => Ok(Action::UpToDate),
        EntryKind::Symlink => {
            // Compare targets: a link is up to date only if it points where the source's does.
            let current = destination
                .read_symlink(relative)?
                .and_then(|target| target.to_str().map(str::to_string));
            if current.as_deref() == item.link_target.as_deref() {
                Ok(Action::UpToDate)
            } else {
                Ok(Action::Update {
                    reason: "link target differs".into(),
                })
            }
        }
        EntryKind::File => {
            if existing.size == item.size && existing.modified.seconds == item.mtime {
                return Ok(Action::UpToDate);
            }
            let header = journal_header(Direction::Pull, endpoints, item);
            let have = journal_blocks(state, Direction::Pull, &header);
            if have > 0 {
                let total = header
                    .layout()
                    .map(|layout| layout.block_count())
                    .unwrap_or(0);
                return Ok(Action::Resume { have, total });
            }
            let reason = if existing.size != item.size {
                format!("size {} -> {}", existing.size, item.size)
            } else {
                "modification time differs".to_string()
            };
            Ok(Action::Update { reason })
        }
        EntryKind::Special => Ok(Action::Update {
            reason: "special file".into(),
        }),
    }
}

/// A local entry found by walking the push source.
fn local_kind(file_type: std::fs::FileType) -> EntryKind {
    if file_type.is_symlink() {
        EntryKind::Symlink
    } else if file_type.is_dir() {
        EntryKind::Directory
    } else if file_type.is_file() {
        EntryKind::File
    } else {
        EntryKind::Special
    }
}

/// Builds the plan of a push: walks the local tree (never following links) and compares with
/// remote listings, one per directory.
#[allow(clippy::too_many_arguments)]
pub async fn plan_push<R: Remote>(
    remote: &R,
    source: &Path,
    destination_path: &str,
    state: &StateDir,
    endpoints: &Endpoints,
    shallow: bool,
    fix_crlf: bool,
) -> Result<Plan> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::symlink_metadata(source)
        .map_err(|error| Error::local_io(format!("cannot read {}", source.display()), error))?;
    let root_kind = local_kind(metadata.file_type());
    // A file pushed onto an existing remote directory, or onto a path that ends in `/` (a
    // directory to be made), goes inside it, as with cp, scp and rsync.
    let mut destination_root = destination_path.to_string();
    if root_kind != EntryKind::Directory
        && (destination_path.ends_with('/')
            || remote
                .stat(destination_path, true)
                .await?
                .is_some_and(|existing| existing.kind == EntryKind::Directory))
    {
        let name = source
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| Error::usage(format!("{} has no usable file name", source.display())))?;
        destination_root = remote::join(destination_path, name);
    }
    let mut plan = Plan::new(
        Direction::Push,
        source.display().to_string(),
        format!("{}:{destination_root}", endpoints.remote_id),
    );
    // Remote listings by directory, fetched once per directory the walk enters, and kept while
    // the walk is below it: the walk goes depth first, so it never comes back to the others.
    let mut listings: BTreeMap<String, BTreeMap<String, crate::remote::RemoteEntry>> =
        BTreeMap::new();
    let mut listings_held = Held::new(&budget::TRANSFER);
    let mut walker = walkdir::WalkDir::new(source)
        .follow_links(false)
        .sort_by_file_name();
    if shallow {
        walker = walker.max_depth(1);
    }
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                let path = error
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                plan.add_skipped(Skipped {
                    path,
                    reason: format!("cannot read: {error}"),
                })?;
                continue;
            }
        };
        let relative_os = entry.path().strip_prefix(source).unwrap_or(Path::new(""));
        let Some(relative_text) = relative_os.to_str() else {
            plan.add_skipped(Skipped {
                path: local::printable(relative_os.as_os_str().as_encoded_bytes()),
                reason: "name is not UTF-8, which SFTP cannot carry".into(),
            })?;
            continue;
        };
        let relative = match parse_relative(relative_text) {
            Ok(relative) => relative,
            Err(error) => {
                plan.add_skipped(Skipped {
                    path: local::printable(relative_text.as_bytes()),
                    reason: error.message().to_string(),
                })?;
                continue;
            }
        };
        let metadata = match entry.path().symlink_metadata() {
            Ok(metadata) => metadata,
            Err(error) => {
                plan.add_skipped(Skipped {
                    path: relative.to_string(),
                    reason: format!("cannot read: {error}"),
                })?;
                continue;
            }
        };
        let kind = local_kind(metadata.file_type());
        if shallow && kind == EntryKind::Directory && !relative.is_root() {
            continue;
        }
        if kind == EntryKind::Special {
            plan.add_skipped(Skipped {
                path: relative.to_string(),
                reason: "special file (device, socket or fifo)".into(),
            })?;
            continue;
        }
        let mut link_target = None;
        if kind == EntryKind::Symlink {
            let target = std::fs::read_link(entry.path())
                .ok()
                .and_then(|t| t.to_str().map(str::to_string));
            match target {
                Some(target) => link_target = Some(target),
                None => {
                    plan.add_skipped(Skipped {
                        path: relative.to_string(),
                        reason: "link target is not UTF-8".into(),
                    })?;
                    continue;
                }
            }
        }
        let remote_path = if relative.is_root() {
            destination_root.clone()
        } else {
            remote::join(&destination_root, &relative.to_raw_string())
        };
        let mut item = PlanItem {
            path: relative.to_raw_string(),
            source: entry.path().display().to_string(),
            target: remote_path.clone(),
            kind,
            size: if kind == EntryKind::File {
                metadata.len()
            } else {
                0
            },
            mtime: metadata.mtime(),
            mode: metadata.mode() & 0o7777,
            link_target,
            action: Action::Create,
        };
        if kind == EntryKind::File
            && crate::engine::crlf::may_be_script(relative_text, item.mode, item.size)
            && let Some(warning) = check_crlf(&mut item, state, fix_crlf)?
        {
            plan.warnings.push(warning);
        }
        // What the remote holds there: from its parent's listing.
        let (parent, name) = match remote_path.rsplit_once('/') {
            Some((parent, name)) => (
                if parent.is_empty() {
                    "/".to_string()
                } else {
                    parent.to_string()
                },
                name.to_string(),
            ),
            None => (".".to_string(), remote_path.clone()),
        };
        if !listings.contains_key(&parent) {
            listings.retain(|directory, listing| {
                let keep = is_within(&parent, directory);
                if !keep {
                    listings_held.give_back(listing_bytes(listing));
                }
                keep
            });
            let listing = match remote.stat(&parent, true).await? {
                Some(entry) if entry.kind == EntryKind::Directory => remote
                    .list(&parent)
                    .await?
                    .into_iter()
                    .map(|entry| (entry.name.clone(), entry))
                    .collect(),
                _ => BTreeMap::new(),
            };
            listings_held
                .take(listing_bytes(&listing))
                .map_err(|error| plan.over_budget(error))?;
            listings.insert(parent.clone(), listing);
        }
        let existing = listings.get(&parent).and_then(|listing| listing.get(&name));
        item.action = match existing {
            None => Action::Create,
            Some(existing) if existing.kind != item.kind => Action::Update {
                reason: format!("a {:?} is there", existing.kind).to_lowercase(),
            },
            Some(existing) => match item.kind {
                EntryKind::Directory => Action::UpToDate,
                EntryKind::Symlink => {
                    let current = remote.read_link(&remote_path).await.ok();
                    if current == item.link_target {
                        Action::UpToDate
                    } else {
                        Action::Update {
                            reason: "link target differs".into(),
                        }
                    }
                }
                _ => {
                    if existing.size == item.size && existing.mtime == item.mtime {
                        Action::UpToDate
                    } else {
                        let header = journal_header(Direction::Push, endpoints, &item);
                        let have = journal_blocks(state, Direction::Push, &header);
                        if have > 0 {
                            let total = header
                                .layout()
                                .map(|layout| layout.block_count())
                                .unwrap_or(0);
                            Action::Resume { have, total }
                        } else if existing.size != item.size {
                            Action::Update {
                                reason: format!("size {} -> {}", existing.size, item.size),
                            }
                        } else {
                            Action::Update {
                                reason: "modification time differs".into(),
                            }
                        }
                    }
                }
            },
        };
        plan.add_item(item)?;
    }
    Ok(plan)
}

/// Whether the remote `path` is `directory` or below it.
fn is_within(path: &str, directory: &str) -> bool {
    match path.strip_prefix(directory) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || directory.ends_with('/'),
        None => false,
    }
}

/// What a remote listing kept by name takes in memory, about: each entry's name twice (the key
/// and the entry's own) and the map's node around them.
fn listing_bytes(listing: &BTreeMap<String, crate::remote::RemoteEntry>) -> usize {
    listing
        .keys()
        .map(|name| {
            std::mem::size_of::<(String, crate::remote::RemoteEntry)>()
                + 2 * text_bytes(name.len())
                + ALLOCATION_OVERHEAD
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::NameError;

    #[test]
    fn refused_names_are_shown_cut_short_then_counted() {
        let mut plan = Plan::new(Direction::Pull, "h:/source".into(), "destination".into());
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
        let mut plan = Plan::new(Direction::Pull, "h:/r".into(), "/l".into());
        plan.add_item(item(&deep)).expect("within the budget");
        assert_eq!(plan.held.bytes(), item(&deep).held_bytes());
    }
}
