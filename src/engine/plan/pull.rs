//! The pull planner: where a pull lands, and remote listings compared with the local disk.
//!
//! The remote tree is listed breadth first, metadata only; every name is validated before it
//! becomes a path, links pointing out of the tree are skipped, a directory that cannot be
//! listed below the top is one problem of the run. Each entry is compared with the local
//! destination through the directory handle of its parent.

use super::{
    Action, Direction, Endpoints, Existing, MAX_TREE_DEPTH, MAX_TREE_ENTRIES, Plan, PlanItem,
    REFUSED_NAME_CHARS, Skipped, action_for,
};
use crate::engine::budget::{ALLOCATION_OVERHEAD, text_bytes};
use crate::engine::settle;
use crate::engine::state::StateDir;
use crate::error::{Error, Result};
use crate::local::{
    self, Destination, Lookup, RelativePath, symlink_target_is_contained, validate_component,
};
use crate::remote::{self, EntryKind, Remote};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

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

/// What one pull plan covers and where it lands.
#[derive(Debug, Clone, Copy)]
pub struct PullScope<'a> {
    /// The remote path of the plan's top.
    pub source: &'a str,
    /// The destination as the command named it, for messages.
    pub destination_text: &'a str,
    /// The local directory plan paths are relative to.
    pub destination_root: &'a Path,
    /// The destination, None when it does not exist yet and this is a dry run (all is new).
    pub destination: Option<&'a Destination>,
    /// The plan path of the source's top.
    pub top: &'a RelativePath,
    /// Only the top directory and what is directly in it but its subdirectories.
    pub shallow: bool,
    /// The most the plan may hold of the transfer's memory budget (`usize::MAX`: as much as
    /// the budget has left).
    pub held_at_most: usize,
}

/// Builds the plan of a pull: lists the remote tree (metadata only), breadth first, validates
/// every name, and compares with what the destination holds.
pub async fn plan_pull<R: Remote>(
    remote: &R,
    scope: &PullScope<'_>,
    state: &StateDir,
    endpoints: &Endpoints,
) -> Result<Plan> {
    let label = remote.label().to_string();
    let source = scope.source;
    let root_entry = remote.stat(source, true).await?.ok_or_else(|| {
        Error::remote(format!("{label}: {source}: no such file or directory")).with_hint(
            "check the remote path (it is relative to the login directory unless it starts with /)",
        )
    })?;
    let mut walk = PullWalk {
        remote,
        label,
        scope,
        plan: Plan::new(
            Direction::Pull,
            format!("{}:{source}", endpoints.remote_id),
            scope.destination_text.to_string(),
            scope.held_at_most,
        ),
        queue: VecDeque::new(),
    };
    walk.enqueue((source.to_string(), scope.top.clone(), root_entry))?;
    let mut seen = 0usize;
    let mut local_directory = LocalDirectory::default();
    while let Some(queued) = walk.queue.pop_front() {
        // What the entry held in the queue, it holds in the plan from now on, or not at all.
        walk.plan.held.give_back(queued_bytes(&queued));
        let (remote_path, relative, entry) = queued;
        seen += 1;
        if seen > MAX_TREE_ENTRIES || relative.components().len() > MAX_TREE_DEPTH {
            return Err(Error::remote(format!(
                "{}: {source} has more than {MAX_TREE_ENTRIES} entries or is deeper than {MAX_TREE_DEPTH} levels; refusing to plan it",
                walk.label
            ))
            .with_hint("pull a smaller part of the tree")
            .transient(false));
        }
        let link_target = match entry.kind {
            EntryKind::Special => {
                walk.plan.add_skipped(Skipped {
                    path: relative.to_string(),
                    reason: "special file (device, socket or fifo)".into(),
                })?;
                continue;
            }
            EntryKind::Symlink => match walk.link_target(&remote_path, &relative).await? {
                Some(target) => Some(target),
                None => continue,
            },
            EntryKind::Directory => {
                if !walk.enqueue_children(&remote_path, &relative).await? {
                    continue;
                }
                None
            }
            EntryKind::File => None,
        };
        let mut item = PlanItem {
            path: relative.to_raw_string(),
            source: remote_path,
            target: scope
                .destination_root
                .join(relative.to_raw_string())
                .display()
                .to_string(),
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
        if let Some(destination) = scope.destination {
            let existing = local_directory.metadata(destination, &relative)?;
            item.action = local_action(destination, existing, &relative, &item, state, endpoints)?;
        }
        walk.plan.add_item(item)?;
    }
    walk.plan.finish_refusals()?;
    Ok(walk.plan)
}

/// A pull plan being built: the plan so far and the entries still to visit.
struct PullWalk<'a, R: Remote> {
    remote: &'a R,
    label: String,
    scope: &'a PullScope<'a>,
    plan: Plan,
    queue: VecDeque<Queued>,
}

impl<R: Remote> PullWalk<'_, R> {
    fn enqueue(&mut self, queued: Queued) -> Result<()> {
        self.plan.hold(queued_bytes(&queued))?;
        self.queue.push_back(queued);
        Ok(())
    }

    /// A symlink's target, if it stays inside the tree; one that cannot be read (a problem
    /// of the run) or points out (skipped) is recorded and gives None.
    async fn link_target(
        &mut self,
        remote_path: &str,
        relative: &RelativePath,
    ) -> Result<Option<String>> {
        let target = match self.remote.read_link(remote_path).await {
            Ok(target) => target,
            Err(error) if error.kind() == crate::ErrorKind::Remote => {
                self.plan.add_problem(crate::engine::ItemError::new(
                    &relative.to_raw_string(),
                    &error,
                ))?;
                return Ok(None);
            }
            Err(error) => return Err(error),
        };
        if !symlink_target_is_contained(relative, &target) {
            self.plan.add_skipped(Skipped {
                path: relative.to_string(),
                reason: format!(
                    "symlink to {} points outside the tree",
                    crate::terminal::printable_cut(target.as_bytes(), REFUSED_NAME_CHARS)
                ),
            })?;
            return Ok(None);
        }
        Ok(Some(target))
    }

    /// Lists a directory and queues its entries (refused names recorded); false when a
    /// directory below the top cannot be listed, which is recorded as one problem of the run.
    async fn enqueue_children(
        &mut self,
        remote_path: &str,
        relative: &RelativePath,
    ) -> Result<bool> {
        let top = self.scope.top;
        let mut children = match self.remote.list(remote_path).await {
            Ok(children) => children,
            // The root must list; below it, one unreadable directory is one failure.
            Err(error)
                if error.kind() == crate::ErrorKind::Remote
                    && !relative.is_root()
                    && relative != top =>
            {
                self.plan.add_problem(crate::engine::ItemError::new(
                    &relative.to_raw_string(),
                    &error,
                ))?;
                return Ok(false);
            }
            Err(error) => return Err(error),
        };
        children.sort_by(|a, b| a.name.cmp(&b.name));
        self.drop_duplicates(&mut children, remote_path);
        for child in children {
            let valid = validate_component(child.name.as_bytes());
            // A shallow plan covers the top directory and what is directly in it but its
            // subdirectories, which are units of their own. (A refused name still falls
            // through, to be reported.)
            if self.scope.shallow
                && relative == top
                && child.kind == EntryKind::Directory
                && valid.is_ok()
            {
                continue;
            }
            match valid {
                Ok(name) => {
                    let Ok(child_relative) = relative.join(name) else {
                        continue;
                    };
                    let child_remote = remote::join(remote_path, name);
                    self.enqueue((child_remote, child_relative, child))?;
                }
                Err(error) => {
                    self.plan
                        .refuse_name(relative, child.name.as_bytes(), error)?;
                }
            }
        }
        Ok(true)
    }

    /// Keeps the first of each name a sorted listing repeats: a name listed twice would be
    /// transferred twice, by two tasks at once. Said once per directory, however many the
    /// server repeats.
    fn drop_duplicates(&self, children: &mut Vec<crate::remote::RemoteEntry>, remote_path: &str) {
        let mut duplicates = 0usize;
        let mut first_duplicate = None;
        children.dedup_by(|later, earlier| {
            let duplicate = later.name == earlier.name;
            if duplicate {
                duplicates += 1;
                first_duplicate.get_or_insert_with(|| {
                    crate::terminal::printable_cut(later.name.as_bytes(), REFUSED_NAME_CHARS)
                });
            }
            duplicate
        });
        let label = &self.label;
        if let Some(first) = first_duplicate {
            match duplicates {
                1 => tracing::warn!("{label}: {remote_path} lists {first} twice; using the first"),
                more => tracing::warn!(
                    "{label}: {remote_path} lists {first} and {} more names more than once; using the first of each",
                    more - 1
                ),
            }
        }
    }
}

/// An entry waiting in a plan's queue: its remote path, its relative path and what the
/// listing said.
type Queued = (String, RelativePath, crate::remote::RemoteEntry);

/// What a queued entry takes in memory, about: each component of its relative path is a
/// string of its own, so a deep tree costs more per entry than a flat one.
pub(super) fn queued_bytes((remote_path, relative, entry): &Queued) -> usize {
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
    let kind = EntryKind::from(existing.kind);
    // A link is up to date only if it points where the source's does.
    let link_target = if kind == EntryKind::Symlink && item.kind == EntryKind::Symlink {
        destination
            .read_symlink(relative)?
            .and_then(|target| target.to_str().map(str::to_string))
    } else {
        None
    };
    let existing = Existing {
        kind,
        size: existing.size,
        mtime: existing.modified.seconds,
        link_target,
        racy: existing.modified.nanoseconds == settle::RACY_NANOSECONDS,
    };
    Ok(action_for(
        item,
        Some(existing),
        Direction::Pull,
        state,
        endpoints,
    ))
}
