//! Executing a push plan: local data onto the remote, in place, resumably.
//!
//! The mirror of `pull`: remote directories are made before any write, files are sent several
//! at a time with many offset writes in flight; blocks the server acknowledged are journaled
//! locally every [`JOURNAL_INTERVAL`] and whenever the link fails, and every [`SYNC_INTERVAL`]
//! and at the end the remote file is synced (fsync@openssh.com).
//! On a re-run, a journaled block is trusted only if the local bytes still hash to what was
//! sent and the remote file still has the size xfer gave it; where the remote can hash
//! (b3sum or sha256sum over exec), every finished file is checked end to end, and a mismatch
//! throws the journal away so the next run sends everything again.

use crate::blocks::{BlockHash, BlockLayout, DEFAULT_BLOCK_SIZE, hash_block};
use crate::engine::plan::{Action, Direction, Endpoints, Plan, PlanItem, journal_header};
use crate::engine::state::{JournalFile, StateDir};
use crate::engine::verify::{WholeFileDigests, buffer_size, hash_blocks, verify_file};
use crate::engine::{
    FileTotals, ItemError, JOURNAL_INTERVAL, Options, REMOTE_DIGEST_MIN_SIZE, SYNC_INTERVAL,
    Summary, below_any, starting_summary, transfer_files,
};
use crate::error::{Error, ErrorKind, Result};
use crate::progress::Reporter;
use crate::remote::{EntryKind, Remote, RemoteDigest, SetAttributes};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinSet;

struct Context<R: Remote> {
    remote: Arc<R>,
    /// Writes in flight on this connection, whatever file they belong to: bounds the memory
    /// they hold and what a dropped link loses.
    writes: Arc<tokio::sync::Semaphore>,
    state: StateDir,
    endpoints: Endpoints,
    reporter: Arc<dyn Reporter>,
    options: Options,
}

pub async fn execute<R: Remote>(
    remote: Arc<R>,
    plan: &Plan,
    state: StateDir,
    endpoints: Endpoints,
    reporter: Arc<dyn Reporter>,
    options: Options,
) -> Summary {
    let started = Instant::now();
    let mut summary = starting_summary(plan, &*reporter);
    let context = Arc::new(Context {
        writes: Arc::new(tokio::sync::Semaphore::new(
            options.requests_for(remote.max_io_size()),
        )),
        remote,
        state,
        endpoints,
        reporter,
        options,
    });

    // Every parent of the destination first (mkdir -p), so no write meets a missing directory.
    if let Some(first) = plan.items.first() {
        let parent = match first.target.rsplit_once('/') {
            Some((parent, _)) => parent.to_string(),
            None => String::new(),
        };
        if let Err(error) = make_parents(&*context.remote, &parent).await {
            summary.errors.push(ItemError::new("", &error));
            summary.seconds = started.elapsed().as_secs_f64();
            return summary;
        }
    }
    let mut failed_directories: Vec<String> = Vec::new();
    for item in plan
        .items
        .iter()
        .filter(|item| item.kind == EntryKind::Directory)
    {
        summary.directories += 1;
        if item.action == Action::UpToDate {
            continue;
        }
        let result = async {
            if matches!(item.action, Action::Update { .. }) {
                context.remote.remove_file(&item.target).await?;
            }
            context
                .remote
                .make_directory(&item.target, item.mode | 0o700)
                .await
        }
        .await;
        if let Err(error) = result {
            failed_directories.push(item.path.clone());
            summary.errors.push(ItemError::new(&item.path, &error));
        }
    }
    let under_failed = |item: &PlanItem| below_any(&failed_directories, &item.path);

    transfer_files(
        plan.files().filter(|item| !under_failed(item)),
        context.options.files_in_flight,
        context.reporter.clone(),
        &mut summary,
        |item| {
            let context = context.clone();
            async move { push_file(&context, &item).await }
        },
    )
    .await;

    for item in plan
        .items
        .iter()
        .filter(|item| item.kind == EntryKind::Symlink)
    {
        summary.symlinks += 1;
        if item.action == Action::UpToDate || under_failed(item) {
            continue;
        }
        let target = item.link_target.as_deref().unwrap_or_default();
        if let Err(error) = context.remote.make_symlink(&item.target, target).await {
            summary.errors.push(ItemError::new(&item.path, &error));
        }
    }

    for item in plan
        .items
        .iter()
        .rev()
        .filter(|item| item.kind == EntryKind::Directory)
    {
        if failed_directories.contains(&item.path) {
            continue;
        }
        let attributes = SetAttributes {
            size: None,
            mode: Some(item.mode),
            mtime: Some(item.mtime),
        };
        if let Err(error) = context
            .remote
            .set_attributes(&item.target, attributes)
            .await
        {
            summary.errors.push(ItemError::new(&item.path, &error));
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    summary
}

/// Creates every missing directory of `path` on the remote, like `mkdir -p`.
async fn make_parents<R: Remote>(remote: &R, path: &str) -> Result<()> {
    if path.is_empty() || path == "/" || path == "." {
        return Ok(());
    }
    let mut prefix = String::new();
    for (position, component) in path.split('/').enumerate() {
        if component.is_empty() {
            if position == 0 {
                prefix.push('/');
            }
            continue;
        }
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        prefix.push_str(component);
        match remote.stat(&prefix, true).await? {
            Some(entry) if entry.kind == EntryKind::Directory => {}
            Some(_) => {
                return Err(Error::remote(format!(
                    "{}: {prefix} exists and is not a directory",
                    remote.label()
                )));
            }
            None => remote.make_directory(&prefix, 0o755).await?,
        }
    }
    Ok(())
}

fn open_source(item: &PlanItem) -> Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&item.source)
        .map_err(|error| Error::local_io(format!("cannot open {}", item.source), error))?;
    let metadata = file
        .metadata()
        .map_err(|error| Error::local_io(format!("cannot stat {}", item.source), error))?;
    if metadata.len() != item.size || metadata.mtime() != item.mtime {
        return Err(Error::new(
            ErrorKind::LocalIo,
            format!("{} changed since the transfer was planned", item.source),
        )
        .with_hint("re-run the same command once the file stops changing")
        .transient(true));
    }
    Ok(file)
}

async fn push_file<R: Remote>(context: &Context<R>, item: &PlanItem) -> Result<FileTotals> {
    let remote = &context.remote;
    let file = open_source(item)?;
    let layout = BlockLayout::new(item.size, DEFAULT_BLOCK_SIZE)
        .map_err(|error| Error::new(ErrorKind::LocalIo, format!("{}: {error}", item.source)))?;
    let journaled = layout.block_count() > 1;
    let header = journal_header(Direction::Push, &context.endpoints, item);
    let journal_path =
        context
            .state
            .journal_path("push", &header.source_id, &header.destination_id);
    let (mut journal, recorded) = if journaled {
        let (journal, recorded) = JournalFile::open(&journal_path, &header)?;
        (Some(journal), recorded)
    } else {
        (None, BTreeMap::new())
    };

    // What the remote holds is trusted only if it still has the size this transfer gave it.
    let existing = remote.stat(&item.target, false).await?;
    let remote_intact = existing.as_ref().is_some_and(|entry| {
        entry.kind == EntryKind::File
            && entry.size == crate::engine::plan::size_while_incomplete(item.size)
    });
    let mut have: BTreeMap<u64, BlockHash> = if remote_intact && !recorded.is_empty() {
        let local = hash_blocks(&file, &layout, recorded.keys().copied());
        recorded
            .into_iter()
            .filter(|(index, hash)| local.get(index) == Some(hash))
            .collect()
    } else {
        BTreeMap::new()
    };
    if existing
        .as_ref()
        .is_some_and(|entry| entry.kind != EntryKind::File)
    {
        remote.remove_file(&item.target).await?;
    }
    // The delta: an agent hashes the blocks the remote file already holds, whatever wrote
    // them; those equal to the local blocks do not travel.
    if remote.hashes_blocks()
        && let Some(entry) = existing
            .as_ref()
            .filter(|entry| entry.kind == EntryKind::File && entry.size > 0)
        && let Some(remote_hashes) = remote.block_hashes(&item.target, &layout).await?
    {
        crate::engine::verify::reuse_matching_blocks(
            &file,
            &layout,
            entry.size,
            &remote_hashes,
            &mut have,
        )
        .await?;
    }
    let reused: u64 = have
        .keys()
        .map(|&index| u64::from(layout.len_of(index)))
        .fold(0u64, u64::saturating_add);
    let needed: Vec<u64> = (0..layout.block_count())
        .filter(|index| !have.contains_key(index))
        .collect();
    context.reporter.file_started(&item.path, item.size, reused);

    let handle = remote.open_write(&item.target).await?;
    let sized = remote
        .set_attributes(
            &item.target,
            // One byte long until verified (see plan::size_while_incomplete).
            SetAttributes {
                size: Some(crate::engine::plan::size_while_incomplete(item.size)),
                ..SetAttributes::default()
            },
        )
        .await;
    if let Err(error) = sized {
        let _ = remote.close(handle).await;
        return Err(error);
    }
    let sent = send_blocks(
        context,
        item,
        &handle,
        &file,
        &layout,
        &needed,
        journal.as_mut(),
        &mut have,
    )
    .await;
    let synced = match sent {
        Ok(()) => remote.sync(&handle).await,
        Err(error) => Err(error),
    };
    let closed = remote.close(handle).await;
    synced?;
    closed?;

    // Everything is written and synced: the real size (digests and checks cover exactly it).
    remote
        .set_attributes(
            &item.target,
            SetAttributes {
                size: Some(item.size),
                ..SetAttributes::default()
            },
        )
        .await?;
    // The remote hashes what it holds while the local file is read back; both are needed.
    // An agent hashes every block (checked against what was sent, below); otherwise a
    // whole-file digest where the remote has a tool for it.
    let by_blocks = remote.hashes_blocks();
    let want_digest =
        !by_blocks && context.options.remote_digest && item.size >= REMOTE_DIGEST_MIN_SIZE;
    let remote_digest = async {
        if by_blocks {
            return remote
                .block_hashes(&item.target, &layout)
                .await
                .map(|hashes| hashes.map(RemoteCheck::Blocks));
        }
        if want_digest {
            return Ok(remote
                .digest(&item.target)
                .await
                .unwrap_or(None)
                .map(RemoteCheck::Digest));
        }
        Ok(None)
    };
    // Which digest the remote will give is not known until it answers, so both are computed
    // locally when one is wanted (on a second core, overlapping the block check).
    let wanted = WholeFileDigests {
        blake3: want_digest,
        sha256: want_digest,
    };
    let local_check = {
        let file = file
            .try_clone()
            .map_err(|error| Error::local_io(format!("cannot reopen {}", item.source), error))?;
        let have = have.clone();
        let source = item.source.clone();
        tokio::task::spawn_blocking(move || verify_file(&file, &layout, &have, wanted, &source))
    };
    let (digest, verification) = tokio::join!(remote_digest, local_check);
    let verification = verification.map_err(|error| {
        Error::new(
            ErrorKind::LocalIo,
            format!("verification task failed: {error}"),
        )
    })??;
    if !verification.mismatched.is_empty() {
        if let Some(journal) = journal.take() {
            journal.remove()?;
        }
        return Err(Error::new(
            ErrorKind::LocalIo,
            format!("{} changed while it was being sent", item.source),
        )
        .with_hint("re-run the same command once the file stops changing")
        .transient(true));
    }
    let agrees = match digest? {
        Some(RemoteCheck::Digest(RemoteDigest::Blake3(remote))) => {
            Some(remote) == verification.blake3
        }
        Some(RemoteCheck::Digest(RemoteDigest::Sha256(remote))) => {
            Some(remote) == verification.sha256
        }
        Some(RemoteCheck::Blocks(hashes)) => {
            hashes.len() as u64 == layout.block_count()
                && hashes
                    .iter()
                    .enumerate()
                    .all(|(index, hash)| have.get(&(index as u64)) == Some(hash))
        }
        None => true,
    };
    if !agrees {
        if let Some(journal) = journal.take() {
            journal.remove()?;
        }
        return Err(Error::remote(format!(
            "{}: {}: the remote copy's digest differs from the local file's",
            remote.label(),
            item.target
        ))
        .with_hint("re-run the same command; the file will be sent again")
        .transient(true));
    }
    remote
        .set_attributes(
            &item.target,
            SetAttributes {
                size: Some(item.size),
                mode: Some(item.mode),
                mtime: Some(item.mtime),
            },
        )
        .await?;
    if let Some(journal) = journal {
        journal.remove()?;
    }
    Ok(FileTotals {
        moved: item.size - reused,
        reused,
    })
}

/// What the remote says it holds once a file is written.
enum RemoteCheck {
    Digest(RemoteDigest),
    Blocks(Vec<BlockHash>),
}

/// Sends `needed` blocks with many writes in flight. Blocks acknowledged so far are synced on
/// the remote and journaled even when this fails.
#[allow(clippy::too_many_arguments)]
async fn send_blocks<R: Remote>(
    context: &Context<R>,
    item: &PlanItem,
    handle: &R::File,
    file: &File,
    layout: &BlockLayout,
    needed: &[u64],
    mut journal: Option<&mut JournalFile>,
    have: &mut BTreeMap<u64, BlockHash>,
) -> Result<()> {
    let chunk = u64::from(context.remote.max_io_size());
    let mut pending_blocks: VecDeque<u64> = needed.iter().copied().collect();
    let mut requests: VecDeque<(u64, u64, Vec<u8>)> = VecDeque::new();
    // Per block: its hash and how many bytes are still unacknowledged.
    let mut outstanding: HashMap<u64, (BlockHash, u64)> = HashMap::new();
    let mut in_flight: JoinSet<(u64, u64, Result<()>)> = JoinSet::new();
    let mut unsynced: Vec<(u64, BlockHash)> = Vec::new();
    let mut unsynced_bytes = 0u64;
    let mut since_sync = 0u64;
    let mut buffer = vec![0u8; buffer_size(layout)];

    let outcome: Result<()> = async {
        loop {
            while in_flight.len() < context.options.requests_for(context.remote.max_io_size()) {
                if requests.is_empty() {
                    // Read the next block only when its writes can go out, to bound memory.
                    let Some(index) = pending_blocks.pop_front() else {
                        break;
                    };
                    let range = layout.range(index);
                    let length = (range.end - range.start) as usize;
                    let slice = &mut buffer[..length];
                    file.read_exact_at(slice, range.start).map_err(|error| {
                        Error::local_io(format!("cannot read {}", item.source), error)
                    })?;
                    outstanding.insert(index, (hash_block(slice), length as u64));
                    for (position, piece) in slice.chunks(chunk as usize).enumerate() {
                        requests.push_back((
                            index,
                            range.start + position as u64 * chunk,
                            piece.to_vec(),
                        ));
                    }
                }
                let Some((index, offset, data)) = requests.pop_front() else {
                    break;
                };
                let Ok(permit) = context.writes.clone().acquire_owned().await else {
                    break;
                };
                let remote = context.remote.clone();
                let handle = handle.clone();
                in_flight.spawn(async move {
                    let length = data.len() as u64;
                    let result = remote.write_at(&handle, offset, data).await;
                    drop(permit);
                    (index, length, result)
                });
            }
            let Some(joined) = in_flight.join_next().await else {
                break;
            };
            let (index, length, result) = joined.map_err(|error| {
                Error::new(ErrorKind::LocalIo, format!("a write task failed: {error}"))
            })?;
            result?;
            context.reporter.bytes_moved(&item.path, length);
            let Some(entry) = outstanding.get_mut(&index) else {
                continue;
            };
            entry.1 = entry.1.saturating_sub(length);
            if entry.1 == 0 {
                let hash = entry.0;
                outstanding.remove(&index);
                unsynced.push((index, hash));
                unsynced_bytes += u64::from(layout.len_of(index));
                since_sync += u64::from(layout.len_of(index));
                // The remote disk is synced now and then; acknowledged blocks are journaled
                // often, so a dropped link loses little (they are re-checked end to end).
                if since_sync >= SYNC_INTERVAL {
                    context.remote.sync(handle).await?;
                    since_sync = 0;
                }
                if unsynced_bytes >= JOURNAL_INTERVAL {
                    record(journal.as_deref_mut(), &mut unsynced, have)?;
                    unsynced_bytes = 0;
                }
            }
        }
        Ok(())
    }
    .await;
    in_flight.abort_all();
    // Every acknowledged block is recorded, whatever happened: the server has it (a dropped
    // link does not lose acknowledged writes; a crash of the server is caught by the size check
    // and the end-to-end digest).
    let recorded = record(journal, &mut unsynced, have);
    outcome.and(recorded)
}

/// Journals acknowledged blocks (a local append and sync; the remote is not involved).
fn record(
    journal: Option<&mut JournalFile>,
    unsynced: &mut Vec<(u64, BlockHash)>,
    have: &mut BTreeMap<u64, BlockHash>,
) -> Result<()> {
    if unsynced.is_empty() {
        return Ok(());
    }
    if let Some(journal) = journal {
        journal.append(unsynced)?;
    }
    have.extend(unsynced.drain(..));
    Ok(())
}
