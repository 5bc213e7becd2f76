//! Cutting a transfer into units: what the source's top holds, and where each unit goes.
//!
//! A tree is cut into units: every top-level subdirectory of the source (with everything below
//! it), and one unit for the top directory itself and the loose files and links in it. A
//! pull makes the units' directories before any unit runs, as rsync makes a level's directories
//! before its files (see [`make_unit_directory`]); a dry run only looks. Discovery also says
//! whether data is sure to move, so connections can be opened while units are planned, and
//! counts the units against the transfer's memory budget: a remote directory may list as many
//! subdirectories as it likes.

use crate::engine::budget::{self, Held, text_bytes};
use crate::engine::plan::{self, Direction};
use crate::engine::units::Transfer;
use crate::error::{Error, Result};
use crate::local::{Destination, RelativePath, validate_component};
use crate::remote::{self, EntryKind, Remote};
use std::path::PathBuf;
use std::sync::Arc;

/// One unit: where it is on the source side and where it goes.
#[derive(Debug, Clone)]
pub(super) struct Unit {
    /// Relative path of the unit's top below the destination root (pull) or the source
    /// root (push); empty for the top unit.
    pub(super) relative: RelativePath,
    /// Source path of the unit's top (remote for pull, local for push).
    pub(super) source: String,
    /// Destination path of the unit's top (remote for push).
    pub(super) target: String,
    /// Only the top directory and its non-directory entries.
    pub(super) shallow: bool,
    /// A subdirectory found by listing its parent (so it must still be a directory).
    pub(super) listed_directory: bool,
}

impl Unit {
    /// What the unit takes in memory, about.
    fn held_bytes(&self) -> usize {
        let components: usize = self
            .relative
            .components()
            .iter()
            .map(|component| std::mem::size_of::<String>() + text_bytes(component.len()))
            .sum();
        std::mem::size_of::<Unit>()
            + components
            + text_bytes(self.source.len())
            + text_bytes(self.target.len())
    }
}

/// The one local file whose hashes a transfer will want first, if the command names one: the
/// existing destination file of a pull (the path itself, or the remote name inside a local
/// directory), the source file of a push.
pub(super) fn early_candidate(transfer: &Transfer) -> Option<PathBuf> {
    let local = &transfer.local_path;
    let metadata = std::fs::symlink_metadata(local).ok()?;
    if metadata.is_file() {
        return Some(local.clone());
    }
    if transfer.direction == Direction::Pull && metadata.is_dir() {
        let name = transfer
            .remote_path
            .trim_end_matches('/')
            .rsplit('/')
            .next()?;
        if !name.is_empty() && name != "." && name != ".." {
            return Some(local.join(name));
        }
    }
    None
}

/// Whether a pull's destination does not exist yet: such a pull will all but surely move data,
/// so its first connection starts the agent beside the planner rather than after it. An
/// existing directory says nothing (a tree lands in it, a file inside it), and a re-run with
/// nothing to do must not start the agent.
pub(super) fn pull_into_nothing(transfer: &Transfer) -> bool {
    transfer.direction == Direction::Pull
        && matches!(
            std::fs::symlink_metadata(&transfer.local_path),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound
        )
}

pub(super) fn pull_top(transfer: &Transfer, kind: EntryKind) -> Result<RelativePath> {
    Ok(plan::pull_target(&transfer.remote_path, kind, &transfer.local_path)?.top)
}

/// The remote path a push's top lands at (inside an existing directory for a file).
pub(super) async fn push_root<R: Remote>(transfer: &Transfer, remote: &R) -> Result<String> {
    let metadata = std::fs::symlink_metadata(&transfer.local_path).map_err(|error| {
        Error::local_io(
            format!("cannot read {}", transfer.local_path.display()),
            error,
        )
    })?;
    // As plan::plan_push decides: inside an existing directory, or one a trailing `/` names.
    if !metadata.is_dir()
        && (transfer.remote_path.ends_with('/')
            || remote
                .stat(&transfer.remote_path, true)
                .await?
                .is_some_and(|existing| existing.kind == EntryKind::Directory))
    {
        let name = transfer
            .local_path
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| {
                Error::usage(format!(
                    "{} has no usable file name",
                    transfer.local_path.display()
                ))
            })?;
        return Ok(remote::join(&transfer.remote_path, name));
    }
    Ok(transfer.remote_path.clone())
}

/// What discovery found: the units and what running them needs.
pub(super) struct Discovery {
    pub(super) units: Vec<Unit>,
    /// The local destination of a pull (None for a push, and for a dry run's pull into a
    /// destination that does not exist yet).
    pub(super) destination: Option<Arc<Destination>>,
    /// Where a pull's plans say the destination is (the path the command gave, resolved).
    pub(super) local_root: PathBuf,
    /// The source's top directory's mode and mtime, set last on the destination.
    pub(super) root: Option<(u32, i64)>,
    /// Whether data is sure to move, so the connections it will need can be opened while the
    /// units are planned: a pull into a destination that does not exist yet, or of a single
    /// large file that is not at least half here (a resume or a delta seldom needs extra
    /// connections; if it does, it opens them when it knows), or a push of a single large
    /// file the remote does not hold at its size. A re-run with nothing to do opens none.
    pub(super) data_expected: bool,
    /// What the units take of the transfer's budget: a remote directory may list as many
    /// subdirectories as it likes.
    pub(super) held: Held,
}

/// What discovery is for: a transfer prepares the local destination (its root and the units'
/// directories); a dry run only looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Discover {
    ToTransfer,
    ToPlan,
}

pub(super) async fn discover<R: Remote>(
    transfer: &Transfer,
    remote: &R,
    purpose: Discover,
) -> Result<Discovery> {
    match transfer.direction {
        Direction::Pull => discover_pull(transfer, remote, purpose).await,
        Direction::Push => discover_push(transfer, remote).await,
    }
}

/// Adds a discovered unit, counted against the transfer's budget.
pub(super) fn add_unit(
    units: &mut Vec<Unit>,
    held: &mut Held,
    unit: Unit,
    label: &str,
) -> Result<()> {
    held.take(unit.held_bytes()).map_err(|error| {
        Error::remote(format!("{label}: {error}; refusing to go on with it"))
            .with_hint(
                "transfer a smaller part of the tree at a time, e.g. one subdirectory per run, or raise XFER_PLAN_MEMORY (MiB) for a directory of very many files",
            )
            .transient(false)
    })?;
    units.push(unit);
    Ok(())
}

pub(super) async fn discover_pull<R: Remote>(
    transfer: &Transfer,
    remote: &R,
    purpose: Discover,
) -> Result<Discovery> {
    let path = &transfer.remote_path;
    let root = remote.stat(path, true).await?.ok_or_else(|| {
        Error::remote(format!(
            "{}: {path}: no such file or directory",
            remote.label()
        ))
        .with_hint("check the remote path (relative paths start at the login directory)")
    })?;
    let target = plan::pull_target(path, root.kind, &transfer.local_path)?;
    // Opening the destination creates its root, so whether it was there is asked first.
    let root_absent = std::fs::symlink_metadata(&target.root).is_err();
    let destination = match purpose {
        Discover::ToTransfer => Some(Arc::new(Destination::open(&target.root, true)?)),
        // What is not there yet plans as all new.
        Discover::ToPlan => Destination::open(&target.root, false).ok().map(Arc::new),
    };
    let prepare = purpose == Discover::ToTransfer;
    let top = Unit {
        relative: target.top.clone(),
        source: path.clone(),
        target: String::new(),
        shallow: root.kind == EntryKind::Directory,
        listed_directory: false,
    };
    if root.kind != EntryKind::Directory {
        let mostly_here = destination
            .as_ref()
            .and_then(|destination| destination.metadata(&top.relative).ok().flatten())
            .is_some_and(|local| local.size >= root.size / 2);
        // A small file moves over the first connection alone.
        let large = root.size >= crate::engine::lanes::LANE_MIN_SIZE;
        return Ok(Discovery {
            units: vec![top],
            destination,
            local_root: target.root,
            root: None,
            data_expected: large && !mostly_here,
            held: Held::new(&budget::TRANSFER),
        });
    }
    let absent = root_absent
        || destination
            .as_ref()
            .is_none_or(|destination| matches!(destination.metadata(&top.relative), Ok(None)));
    if let Some(destination) = destination.as_ref().filter(|_| prepare) {
        make_unit_directory(destination, &top.relative, root.mode);
    }
    let mut units = Vec::new();
    let mut held = Held::new(&budget::TRANSFER);
    let label = format!("{}: {path}", remote.label());
    add_unit(&mut units, &mut held, top, &label)?;
    let mut children = remote.list(path).await?;
    children.sort_by(|a, b| a.name.cmp(&b.name));
    children.dedup_by(|later, earlier| later.name == earlier.name);
    for child in children
        .into_iter()
        .filter(|child| child.kind == EntryKind::Directory)
    {
        // Refused names are reported by the top unit's plan, which lists them too.
        let Ok(name) = validate_component(child.name.as_bytes()) else {
            continue;
        };
        let Ok(relative) = target.top.join(name) else {
            continue;
        };
        if let Some(destination) = destination.as_ref().filter(|_| prepare) {
            make_unit_directory(destination, &relative, child.mode);
        }
        let unit = Unit {
            relative,
            source: remote::join(path, name),
            target: String::new(),
            shallow: false,
            listed_directory: true,
        };
        add_unit(&mut units, &mut held, unit, &label)?;
    }
    Ok(Discovery {
        units,
        destination,
        local_root: target.root,
        root: Some((root.mode, root.mtime)),
        data_expected: absent,
        held,
    })
}

/// Creates a unit's directory (owner-writable, like the pull does) before any unit runs, in
/// listing order, the way rsync makes every directory of a level before the files in them.
/// Made as the units reach them instead, interleaved with thousands of file creations, their
/// files would land in inode groups crowded with the slots of files deleted moments before,
/// and ext4 without a journal scans past every recently deleted inode on each allocation, so
/// re-copying a tree of many small files would be much slower. Best effort: what is in the
/// way, or a listing that lied, is the unit's plan to handle and report.
pub(super) fn make_unit_directory(destination: &Destination, relative: &RelativePath, mode: u32) {
    if let Ok(None) = destination.metadata(relative)
        && let Err(error) = destination.create_dir_all(relative, mode | 0o700)
    {
        tracing::debug!(%error, "unit directory not made ahead");
    }
}

pub(super) async fn discover_push<R: Remote>(transfer: &Transfer, remote: &R) -> Result<Discovery> {
    use std::os::unix::fs::MetadataExt;
    let source = &transfer.local_path;
    let metadata = std::fs::symlink_metadata(source)
        .map_err(|error| Error::local_io(format!("cannot read {}", source.display()), error))?;
    let root_target = push_root(transfer, remote).await?;
    let top = Unit {
        relative: RelativePath::root(),
        source: source.display().to_string(),
        target: root_target.clone(),
        shallow: metadata.is_dir(),
        listed_directory: false,
    };
    if !metadata.is_dir() {
        // A large file the remote does not hold yet, at that size, will move: its extra
        // connections are opened while it is planned.
        let large = metadata.len() >= crate::engine::lanes::LANE_MIN_SIZE;
        let data_expected = large
            && remote
                .stat(&root_target, false)
                .await?
                .is_none_or(|existing| existing.size != metadata.len());
        return Ok(Discovery {
            units: vec![top],
            destination: None,
            local_root: source.clone(),
            root: None,
            data_expected,
            held: Held::new(&budget::TRANSFER),
        });
    }
    let mut units = vec![top];
    let mut entries: Vec<_> = std::fs::read_dir(source)
        .map_err(|error| Error::local_io(format!("cannot list {}", source.display()), error))?
        .flatten()
        .collect();
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if !file_type.is_dir() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Ok(relative) = RelativePath::root().join(&name) else {
            continue;
        };
        units.push(Unit {
            relative,
            source: entry.path().display().to_string(),
            target: remote::join(&root_target, &name),
            shallow: false,
            listed_directory: true,
        });
    }
    // The units of a push are the local tree's: nothing the peer said is held for them.
    Ok(Discovery {
        units,
        destination: None,
        local_root: source.clone(),
        root: Some((metadata.mode() & 0o7777, metadata.mtime())),
        data_expected: false,
        held: Held::new(&budget::TRANSFER),
    })
}

pub(super) fn unit_name(unit: &Unit) -> String {
    if unit.relative.is_root() {
        ".".to_string()
    } else {
        unit.relative.to_string()
    }
}
