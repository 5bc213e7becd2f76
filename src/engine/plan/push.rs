//! The push planner: a walk of the local tree, compared with remote listings.
//!
//! The walk is depth first and never follows links; each directory's remote listing is fetched
//! once, when the walk first needs it, and dropped when the walk leaves it. Names that SFTP
//! cannot carry (not UTF-8) and special files are skipped with a reason. Shell scripts with
//! CRLF line endings are flagged, or converted on the way with `--fix-crlf`.

use super::{
    Action, Direction, Endpoints, Existing, Plan, PlanItem, Skipped, action_for, parse_relative,
};
use crate::engine::budget::{self, ALLOCATION_OVERHEAD, Held, text_bytes};
use crate::engine::state::StateDir;
use crate::error::{Error, Result};
use crate::local::RelativePath;
use crate::remote::{self, EntryKind, Remote, RemoteEntry};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    let path = crate::terminal::printable(item.path.as_bytes());
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

/// What one push plan covers and where it lands.
#[derive(Debug, Clone, Copy)]
pub struct PushScope<'a> {
    /// The local path of the plan's top.
    pub source: &'a Path,
    /// The remote path it goes to (inside it, for a file onto a directory).
    pub destination: &'a str,
    /// Only the top directory and what is directly in it but its subdirectories.
    pub shallow: bool,
    /// Convert shell scripts with CRLF line endings (`--fix-crlf`).
    pub fix_crlf: bool,
    /// The most the plan may hold of the transfer's memory budget (`usize::MAX`: as much as
    /// the budget has left).
    pub held_at_most: usize,
}

/// Builds the plan of a push: walks the local tree (never following links) and compares with
/// remote listings, one per directory.
pub async fn plan_push<R: Remote>(
    remote: &R,
    scope: &PushScope<'_>,
    state: &StateDir,
    endpoints: &Endpoints,
) -> Result<Plan> {
    let source = scope.source;
    let metadata = std::fs::symlink_metadata(source)
        .map_err(|error| Error::local_io(format!("cannot read {}", source.display()), error))?;
    let destination_root = destination_root(
        remote,
        source,
        scope.destination,
        EntryKind::from_file_type(metadata.file_type()),
    )
    .await?;
    let mut walk = PushWalk {
        remote,
        plan: Plan::new(
            Direction::Push,
            source.display().to_string(),
            format!("{}:{destination_root}", endpoints.remote_id),
            scope.held_at_most,
        ),
        listings: BTreeMap::new(),
        listings_held: Held::new(&budget::TRANSFER),
    };
    let mut walker = walkdir::WalkDir::new(source)
        .follow_links(false)
        .sort_by_file_name();
    if scope.shallow {
        walker = walker.max_depth(1);
    }
    for entry in walker {
        let Some((relative, metadata, path)) = walk.examine(source, entry)? else {
            continue;
        };
        let kind = EntryKind::from_file_type(metadata.file_type());
        if scope.shallow && kind == EntryKind::Directory && !relative.is_root() {
            continue;
        }
        let Some(mut item) = walk.item(&relative, &path, &metadata, &destination_root)? else {
            continue;
        };
        if kind == EntryKind::File
            && crate::engine::crlf::may_be_script(&item.path, item.mode, item.size)
            && let Some(warning) = check_crlf(&mut item, state, scope.fix_crlf)?
        {
            walk.plan.warnings.push(warning);
        }
        let existing = walk.existing(&item).await?;
        item.action = action_for(&item, existing, Direction::Push, state, endpoints);
        walk.plan.add_item(item)?;
    }
    Ok(walk.plan)
}

/// Where the top of a push lands: a file pushed onto an existing remote directory, or onto a
/// path that ends in `/` (a directory to be made), goes inside it, as with cp, scp and rsync.
async fn destination_root<R: Remote>(
    remote: &R,
    source: &Path,
    destination: &str,
    kind: EntryKind,
) -> Result<String> {
    if kind == EntryKind::Directory
        || !(destination.ends_with('/')
            || remote
                .stat(destination, true)
                .await?
                .is_some_and(|existing| existing.kind == EntryKind::Directory))
    {
        return Ok(destination.to_string());
    }
    let name = source
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| Error::usage(format!("{} has no usable file name", source.display())))?;
    Ok(remote::join(destination, name))
}

/// A push plan being built: the plan so far and the remote listings the walk is below.
struct PushWalk<'a, R: Remote> {
    remote: &'a R,
    plan: Plan,
    /// Remote listings by directory, fetched once per directory the walk enters, and kept
    /// while the walk is below it: the walk goes depth first, so it never comes back to the
    /// others.
    listings: BTreeMap<String, BTreeMap<String, RemoteEntry>>,
    listings_held: Held,
}

impl<R: Remote> PushWalk<'_, R> {
    /// An entry of the walk with its path below the source and its metadata; one that cannot
    /// be read or named over SFTP is recorded as skipped and gives None.
    fn examine(
        &mut self,
        source: &Path,
        entry: walkdir::Result<walkdir::DirEntry>,
    ) -> Result<Option<(RelativePath, std::fs::Metadata, PathBuf)>> {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                let path = error
                    .path()
                    .map(|path| path.display().to_string())
                    .unwrap_or_default();
                self.skip(path, format!("cannot read: {error}"))?;
                return Ok(None);
            }
        };
        let relative_os = entry.path().strip_prefix(source).unwrap_or(Path::new(""));
        let Some(relative_text) = relative_os.to_str() else {
            self.skip(
                crate::terminal::printable(relative_os.as_os_str().as_encoded_bytes()),
                "name is not UTF-8, which SFTP cannot carry".into(),
            )?;
            return Ok(None);
        };
        let relative = match parse_relative(relative_text) {
            Ok(relative) => relative,
            Err(error) => {
                self.skip(
                    crate::terminal::printable(relative_text.as_bytes()),
                    error.message().to_string(),
                )?;
                return Ok(None);
            }
        };
        match entry.path().symlink_metadata() {
            Ok(metadata) => Ok(Some((relative, metadata, entry.into_path()))),
            Err(error) => {
                self.skip(relative.to_string(), format!("cannot read: {error}"))?;
                Ok(None)
            }
        }
    }

    fn skip(&mut self, path: String, reason: String) -> Result<()> {
        self.plan.add_skipped(Skipped { path, reason })
    }

    /// The plan item of a local entry (its action still to be decided); None for what a push
    /// skips: special files, links whose target is not UTF-8.
    fn item(
        &mut self,
        relative: &RelativePath,
        path: &Path,
        metadata: &std::fs::Metadata,
        destination_root: &str,
    ) -> Result<Option<PlanItem>> {
        use std::os::unix::fs::MetadataExt;
        let kind = EntryKind::from_file_type(metadata.file_type());
        let link_target = match kind {
            EntryKind::Special => {
                self.skip(
                    relative.to_string(),
                    "special file (device, socket or fifo)".into(),
                )?;
                return Ok(None);
            }
            EntryKind::Symlink => {
                let target = std::fs::read_link(path)
                    .ok()
                    .and_then(|target| target.to_str().map(str::to_string));
                if target.is_none() {
                    self.skip(relative.to_string(), "link target is not UTF-8".into())?;
                    return Ok(None);
                }
                target
            }
            _ => None,
        };
        let target = if relative.is_root() {
            destination_root.to_string()
        } else {
            remote::join(destination_root, &relative.to_raw_string())
        };
        Ok(Some(PlanItem {
            path: relative.to_raw_string(),
            source: path.display().to_string(),
            target,
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
        }))
    }

    /// What the remote holds where `item` goes, from its parent's listing.
    async fn existing(&mut self, item: &PlanItem) -> Result<Option<Existing>> {
        let (parent, name) = match item.target.rsplit_once('/') {
            Some(("", name)) => ("/", name),
            Some((parent, name)) => (parent, name),
            None => (".", item.target.as_str()),
        };
        if !self.listings.contains_key(parent) {
            self.enter(parent).await?;
        }
        let Some(entry) = self
            .listings
            .get(parent)
            .and_then(|listing| listing.get(name))
        else {
            return Ok(None);
        };
        let link_target = if entry.kind == EntryKind::Symlink && item.kind == EntryKind::Symlink {
            self.remote.read_link(&item.target).await.ok()
        } else {
            None
        };
        Ok(Some(Existing {
            kind: entry.kind,
            size: entry.size,
            mtime: entry.mtime,
            link_target,
            // A pushed copy's race is settled before it gets its mtime.
            racy: false,
        }))
    }

    /// Lists the remote directory `parent` (empty where it is not one), forgetting the
    /// listings the walk has left.
    async fn enter(&mut self, parent: &str) -> Result<()> {
        let held = &mut self.listings_held;
        self.listings.retain(|directory, listing| {
            let keep = is_within(parent, directory);
            if !keep {
                held.give_back(listing_bytes(listing));
            }
            keep
        });
        let listing: BTreeMap<String, RemoteEntry> = match self.remote.stat(parent, true).await? {
            Some(entry) if entry.kind == EntryKind::Directory => self
                .remote
                .list(parent)
                .await?
                .into_iter()
                .map(|entry| (entry.name.clone(), entry))
                .collect(),
            _ => BTreeMap::new(),
        };
        self.listings_held
            .take(listing_bytes(&listing))
            .map_err(|error| self.plan.over_budget(error))?;
        self.listings.insert(parent.to_string(), listing);
        Ok(())
    }
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
fn listing_bytes(listing: &BTreeMap<String, RemoteEntry>) -> usize {
    listing
        .keys()
        .map(|name| {
            std::mem::size_of::<(String, crate::remote::RemoteEntry)>()
                + 2 * text_bytes(name.len())
                + ALLOCATION_OVERHEAD
        })
        .sum()
}
