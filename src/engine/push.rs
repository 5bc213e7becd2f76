//! Executing a push plan: local data onto the remote, in place, resumably.
//!
//! The mirror of `pull`: remote directories are made before any write, files are sent several
//! at a time with many offset writes in flight (a large file's also over borrowed connections,
//! see [`crate::engine::lanes`]); blocks the server acknowledged are journaled
//! locally every [`JOURNAL_INTERVAL`] and whenever the link fails, and the remote file is
//! synced while it travels (with an agent back to back, see [`WRITEBACK_STEP`]; over SFTP
//! every [`SYNC_INTERVAL`], fsync@openssh.com) and at the end.
//! On a re-run, a journaled block is trusted only if the local bytes still hash to what was
//! sent and the remote file still has the size xfer gave it; where the remote can hash
//! (b3sum or sha256sum over exec), every finished file is checked end to end, and a mismatch
//! throws the journal away so the next run sends everything again.

use crate::blocks::delta::covered;
use crate::blocks::{BlockHash, BlockLayout, BlockSet, DEFAULT_BLOCK_SIZE, hash_block};
use crate::engine::delta;
use crate::engine::early::EarlyHashes;
use crate::engine::lanes::{Arrivals, Lanes, Paths, borrow_for_file, close_late, next_arrival};
use crate::engine::plan::{Action, Direction, Endpoints, Plan, PlanItem, journal_header};
use crate::engine::state::{JournalFile, StateDir};
use crate::engine::verify::{
    Verification, WholeFileDigests, buffer_size, still_matching, verify_file,
};
use crate::engine::{
    FileTotals, ItemError, JOURNAL_INTERVAL, Options, REMOTE_DIGEST_MIN_SIZE, SYNC_INTERVAL,
    Summary, below_any, finished, starting_summary, transfer_files,
};
use crate::error::{Error, ErrorKind, Result};
use crate::local::FileIdentity;
use crate::progress::Reporter;
use crate::remote::{EntryKind, Remote, RemoteDigest, SetAttributes};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::File;
use std::ops::Range;
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
    /// Extra connections a large file may borrow.
    lanes: Option<Arc<Lanes<R>>>,
    /// The local file's hashes, computed while connecting.
    early: Option<Arc<EarlyHashes>>,
}

#[allow(clippy::too_many_arguments)]
pub async fn execute<R: Remote>(
    remote: Arc<R>,
    plan: &Plan,
    state: StateDir,
    endpoints: Endpoints,
    reporter: Arc<dyn Reporter>,
    options: Options,
    lanes: Option<Arc<Lanes<R>>>,
    early: Option<Arc<EarlyHashes>>,
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
        lanes,
        early,
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
            continue;
        }
        // The link's own mtime, as a pull keeps it and rsync -a compares it. A server that
        // cannot set a link's times without following it (SFTP without lsetstat) leaves it.
        let mtime = SetAttributes {
            mtime: Some(item.mtime),
            ..SetAttributes::default()
        };
        if let Err(error) = context.remote.set_attributes(&item.target, mtime).await {
            tracing::debug!(path = %item.path, %error, "the link's mtime was not set");
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

/// Opens the source and checks it is what was planned; returns it with its identity now.
fn open_source(item: &PlanItem) -> Result<(File, FileIdentity)> {
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
    Ok((file, FileIdentity::of(&metadata)))
}

async fn push_file<R: Remote>(context: &Context<R>, item: &PlanItem) -> Result<FileTotals> {
    let remote = &context.remote;
    let (file, opened) = open_source(item)?;
    let layout = BlockLayout::new(item.size, DEFAULT_BLOCK_SIZE)
        .map_err(|error| Error::new(ErrorKind::LocalIo, format!("{}: {error}", item.source)))?;
    let journaled = layout.block_count() > 1;
    let header = journal_header(Direction::Push, &context.endpoints, item);
    let journal_file =
        context
            .state
            .journal_file("push", &header.source_id, &header.destination_id);
    let (mut journal, recorded) = if journaled {
        let (journal, recorded) = JournalFile::open(&journal_file, &header)?;
        (Some(journal), recorded)
    } else {
        (None, BTreeMap::new())
    };

    // What the remote holds is trusted only if it still has the size this transfer gave it.
    let existing = remote.stat(&item.target, false).await?;
    let existing_data = existing
        .as_ref()
        .filter(|entry| entry.kind == EntryKind::File && entry.size > 0)
        .map(|entry| entry.size);
    // With an agent and data there already, the remote starts hashing it now: that finds the
    // delta, and checks the journal's blocks end to end.
    let remote_task = existing_data
        .filter(|_| remote.hashes_blocks())
        .map(|size| {
            (
                size,
                delta::remote_hashes_task(remote, &item.target, layout),
            )
        });
    // Local block hashes computed earlier in this run: while connecting, if this is the file
    // they are of (waited for only where they are compared, a delta or a journal; a file sent
    // whole starts at once with the blocks hashed so far, and the hashing stops), then by the
    // delta. The blocks sent are not hashed again as they are read (the read-back check below
    // still reads them, so a file that changes meanwhile is caught).
    let mut known = match &context.early {
        Some(early) if existing_data.is_some() || !recorded.is_empty() => {
            early.for_file(&file, &layout).await
        }
        Some(early) => early.for_file_so_far(&file, &layout).await,
        None => BTreeMap::new(),
    };
    let remote_intact = existing.as_ref().is_some_and(|entry| {
        entry.kind == EntryKind::File
            && entry.size == crate::engine::plan::size_while_incomplete(item.size)
    });
    let mut have: BTreeMap<u64, BlockHash> = if remote_intact && !recorded.is_empty() {
        still_matching(&file, &layout, recorded, &known)
    } else {
        BTreeMap::new()
    };
    if existing
        .as_ref()
        .is_some_and(|entry| entry.kind != EntryKind::File)
    {
        remote.remove_file(&item.target).await?;
    }
    // Blocks whose local bytes were read and found good in this run: not read back again.
    let mut checked: BTreeSet<u64> = have.keys().copied().collect();
    // Blocks the remote hashed in this run and found equal to the local ones: not asked again.
    let mut confirmed: BTreeSet<u64> = BTreeSet::new();
    let mut pieces = BTreeMap::new();
    // The delta: an agent hashes the blocks the remote file already holds, whatever wrote
    // them; those equal to the local blocks do not travel, nor do the equal pieces of the
    // others.
    if let Some((existing_size, remote_task)) = remote_task {
        let candidates = (0..layout.block_count())
            .filter(|&index| !have.contains_key(&index) && layout.range(index).end <= existing_size)
            .collect();
        if let Some(found) = delta::compare(
            remote,
            &item.target,
            &file,
            layout,
            candidates,
            &known,
            remote_task,
        )
        .await?
        {
            // The journal's blocks are checked end to end now: one the remote no longer
            // holds travels again.
            have.retain(|index, hash| found.remote_hashes.get(*index as usize) == Some(hash));
            confirmed.extend(have.keys().copied());
            confirmed.extend(found.same.keys().copied());
            checked.extend(found.same.keys().copied());
            have.extend(found.same);
            pieces = found.pieces;
            known.extend(found.local);
        }
    }
    let reused = item
        .size
        .saturating_sub(bytes_needed(&layout, &have, &pieces));
    let needed: Vec<u64> = (0..layout.block_count())
        .filter(|index| !have.contains_key(index))
        .collect();
    tracing::debug!(path = %item.path, reused, pieces = pieces.len(), "delta");
    context.reporter.file_started(&item.path, item.size, reused);

    // Every attribute below is set through this handle, never by the name: on a shared host
    // another account may swap the name for a symlink to one of the user's other files between
    // two steps, and a change by name would land there.
    let handle = remote.open_write(&item.target).await?;
    let sized = remote
        .set_file_attributes(
            &handle,
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
    // A large file also travels over borrowed connections, each with the file open for
    // writing (it exists now, with its size set); they join as they come up.
    let target = item.target.clone();
    let (arrivals, lanes_task) = borrow_for_file(
        context.lanes.as_ref(),
        &layout,
        bytes_needed(&layout, &have, &pieces),
        move |remote: Arc<R>| {
            let target = target.clone();
            async move { remote.open_write(&target).await }
        },
    );
    let sent = send_blocks(
        context,
        item,
        (&handle, arrivals),
        &file,
        &layout,
        (&needed, &pieces, &known),
        journal.as_mut(),
        &mut have,
    )
    .await;
    if let Some(task) = lanes_task {
        task.abort();
    }
    let synced = match sent {
        Ok(checked_early) => {
            // Blocks the remote hashed as they landed, equal to what was sent.
            confirmed.extend(
                checked_early
                    .into_iter()
                    .filter(|(index, hash)| have.get(index) == Some(hash))
                    .map(|(index, _)| index),
            );
            remote.sync(&handle).await
        }
        Err(error) => Err(error),
    };
    if let Err(error) = synced {
        let _ = remote.close(handle).await;
        return Err(error);
    }
    tracing::debug!(path = %item.path, "sent");
    let finished = check_and_finish(
        context,
        item,
        &handle,
        &file,
        opened,
        layout,
        (have, checked, confirmed),
        journal,
    )
    .await;
    let closed = remote.close(handle).await;
    finished?;
    closed?;
    Ok(FileTotals {
        moved: item.size - reused,
        reused,
    })
}

/// The blocks a file's push knows about: held by the remote, read and found good locally,
/// and hashed by the remote in this run.
type KnownBlocks = (BTreeMap<u64, BlockHash>, BTreeSet<u64>, BTreeSet<u64>);

/// Once every block is written and synced: the real size, the end-to-end check of what the
/// remote holds against the source, then mode and mtime, each through the open handle.
#[allow(clippy::too_many_arguments)]
async fn check_and_finish<R: Remote>(
    context: &Context<R>,
    item: &PlanItem,
    handle: &R::File,
    file: &File,
    opened: FileIdentity,
    layout: BlockLayout,
    (have, checked, confirmed): KnownBlocks,
    mut journal: Option<JournalFile>,
) -> Result<()> {
    let remote = &context.remote;
    // The real size (digests and checks cover exactly it).
    remote
        .set_file_attributes(
            handle,
            SetAttributes {
                size: Some(item.size),
                ..SetAttributes::default()
            },
        )
        .await?;
    // The remote hashes what it holds while the local file is read back; both are needed.
    // An agent hashes every block not yet confirmed (checked against what was sent, below);
    // otherwise a whole-file digest where the remote has a tool for it.
    let by_blocks = remote.hashes_blocks();
    let want_digest =
        !by_blocks && context.options.remote_digest && item.size >= REMOTE_DIGEST_MIN_SIZE;
    let unconfirmed: Vec<u64> = (0..layout.block_count())
        .filter(|index| !confirmed.contains(index))
        .collect();
    let remote_digest = async {
        if by_blocks {
            return delta::remote_hashes_of(remote, &item.target, &layout, &unconfirmed)
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
    // Every hash in `have` is of bytes read from this file since it was opened (as they were
    // sent, by the early hashing, or from a journal's blocks), and the remote checks what it
    // holds against them. Reading the whole source again would only tell whether it changed
    // meanwhile, which its identity tells without reading (1 GiB: a second pass of reads and
    // BLAKE3, 0.4 s of CPU and most of the time after the last byte was sent). It is read
    // again when the identity changed, to name the blocks that differ, or for a whole-file
    // digest.
    let unchanged = !wanted.blake3 && !wanted.sha256 && FileIdentity::of_file(file) == Some(opened);
    let local_check = async {
        if unchanged {
            return Ok(Verification::default());
        }
        let file = file
            .try_clone()
            .map_err(|error| Error::local_io(format!("cannot reopen {}", item.source), error))?;
        let mut blocks = BlockSet::new(layout);
        for (&index, &hash) in &have {
            if checked.contains(&index) {
                blocks.hold_checked(index, hash);
            } else {
                blocks.hold(index, hash);
            }
        }
        let source = item.source.clone();
        finished(
            tokio::task::spawn_blocking(move || verify_file(&file, &blocks, wanted, &source)),
            "a verification",
        )
        .await
    };
    let (digest, verification) = tokio::join!(remote_digest, local_check);
    tracing::debug!(path = %item.path, "checked");
    let verification = verification?;
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
        Some(RemoteCheck::Blocks(hashes)) => unconfirmed
            .iter()
            .all(|index| hashes.contains_key(index) && hashes.get(index) == have.get(index)),
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
        .set_file_attributes(
            handle,
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
    Ok(())
}

/// What the remote says it holds once a file is written.
enum RemoteCheck {
    Digest(RemoteDigest),
    Blocks(BTreeMap<u64, BlockHash>),
}

/// One block hashed by the remote: its index and the answer.
type BlockCheck = (u64, Result<Option<Vec<BlockHash>>>);

/// Keeps the remote's hash of one block, if it gave one.
fn take_check(
    checked: &mut BTreeMap<u64, BlockHash>,
    joined: std::result::Result<BlockCheck, tokio::task::JoinError>,
) {
    if let Ok((index, Ok(Some(hashes)))) = joined
        && let [hash] = hashes[..]
    {
        checked.insert(index, hash);
    }
}

/// What [`send_blocks`] sends: the blocks needed, the pieces of those that differ only in
/// some, and local block hashes already known.
type ToSend<'a> = (
    &'a [u64],
    &'a BTreeMap<u64, Vec<Range<u64>>>,
    &'a BTreeMap<u64, BlockHash>,
);

/// With an agent, a remote sync starts once this many bytes were acknowledged since the last
/// one started and that one has finished: syncs follow each other as fast as the remote disk
/// takes them, and the sync that ends the file finds little left to write. A host with memory
/// to spare writes nothing back by itself, and writes that waited for a sync every 64 MiB
/// moved at the disk's pace. A 1 GiB push on the benchmark machine, interleaved runs, medians:
/// 3.92 s syncing every 64 MiB, 3.47-3.54 s syncing back to back every 1, 4 or 16 MiB (scp,
/// which never syncs, 3.48 s); with no sync until the end the data was sent in 2.6 s and the
/// last sync then took 1.3 s.
const WRITEBACK_STEP: u64 = 4 << 20;

/// Block checks in flight while sending: the remote hashes a block as soon as all its writes
/// are acknowledged, so the end-to-end check overlaps the transfer instead of following it.
const CHECKS_IN_FLIGHT: usize = 16;

/// Sends `needed` blocks with many writes in flight. Blocks acknowledged so far are synced on
/// the remote and journaled even when this fails. Where the remote hashes blocks, returns the
/// remote's hashes of the blocks it could check while they were sent (never the last block:
/// the file is one byte longer until it is verified); the others are checked afterwards.
#[allow(clippy::too_many_arguments)]
async fn send_blocks<R: Remote>(
    context: &Context<R>,
    item: &PlanItem,
    (handle, mut arrivals): (&R::File, Option<Arrivals<R>>),
    file: &File,
    layout: &BlockLayout,
    (needed, pieces, known): ToSend<'_>,
    mut journal: Option<&mut JournalFile>,
    have: &mut BTreeMap<u64, BlockHash>,
) -> Result<BTreeMap<u64, BlockHash>> {
    let chunk = u64::from(context.remote.max_io_size());
    let check_early = context.remote.hashes_blocks();
    let mut checks: JoinSet<BlockCheck> = JoinSet::new();
    let mut checked = BTreeMap::new();
    let mut pending_blocks: VecDeque<u64> = needed.iter().copied().collect();
    let mut requests: VecDeque<(u64, u64, Vec<u8>)> = VecDeque::new();
    // Per block: its hash and how many bytes are still unacknowledged.
    let mut outstanding: HashMap<u64, (BlockHash, u64)> = HashMap::new();
    // Per block: the bytes it sends (all of it, or its differing pieces).
    let mut sent_of: HashMap<u64, u64> = HashMap::new();
    // The connections the file goes over, with their writes in flight: its unit's own, then
    // borrowed ones (kept alive by their lane) as they arrive. Each write goes to the least
    // busy one.
    let per_connection = context.options.requests_for(context.remote.max_io_size());
    let mut paths = Paths::new(context.remote.clone(), handle.clone());
    let mut in_flight: JoinSet<(usize, u64, u64, Result<()>)> = JoinSet::new();
    let mut unsynced: Vec<(u64, BlockHash)> = Vec::new();
    let mut unsynced_bytes = 0u64;
    let mut since_sync = 0u64;
    // With an agent: the remote sync running beside the writes, at most one.
    let mut syncing: Option<tokio::task::JoinHandle<Result<()>>> = None;
    let mut buffer = vec![0u8; buffer_size(layout)];

    let outcome: Result<()> = async {
        loop {
            while let Some(lane) = paths.least_busy(per_connection) {
                if requests.is_empty() {
                    // Read the next block only when its writes can go out, to bound memory.
                    let Some(index) = pending_blocks.pop_front() else {
                        break;
                    };
                    let range = layout.range(index);
                    // The whole block, or only its pieces that differ from the remote's bytes.
                    let whole = [range.clone()];
                    let ranges = pieces.get(&index).map_or(&whole[..], |ranges| &ranges[..]);
                    let read_error =
                        |error| Error::local_io(format!("cannot read {}", item.source), error);
                    // A block hashed already is read only where it travels, straight into the
                    // buffers that go out (a 1% delta reads 10 MiB, not 150); any other is read
                    // whole to be hashed.
                    let (hash, whole_block) = match known.get(&index) {
                        Some(hash) => (*hash, None),
                        None => {
                            let slice = &mut buffer[..(range.end - range.start) as usize];
                            file.read_exact_at(slice, range.start).map_err(read_error)?;
                            (hash_block(slice), Some(&*slice))
                        }
                    };
                    for part in ranges {
                        let mut offset = part.start;
                        while offset < part.end {
                            let end = part.end.min(offset + chunk);
                            let data = match whole_block {
                                Some(slice) => slice
                                    [(offset - range.start) as usize..(end - range.start) as usize]
                                    .to_vec(),
                                None => {
                                    let mut data = vec![0u8; (end - offset) as usize];
                                    file.read_exact_at(&mut data, offset).map_err(read_error)?;
                                    data
                                }
                            };
                            requests.push_back((index, offset, data));
                            offset = end;
                        }
                    }
                    outstanding.insert(index, (hash, covered(ranges)));
                    sent_of.insert(index, covered(ranges));
                }
                let Some((index, offset, data)) = requests.pop_front() else {
                    break;
                };
                let Some((remote, handle, permit)) = paths.request(lane, &context.writes).await
                else {
                    break;
                };
                in_flight.spawn(async move {
                    let length = data.len() as u64;
                    let result = remote.write_at(&handle, offset, data).await;
                    drop(permit);
                    (lane, index, length, result)
                });
            }
            if in_flight.is_empty() {
                break;
            }
            let joined = tokio::select! {
                joined = in_flight.join_next() => joined,
                (lane, opened) = next_arrival(&mut arrivals) => {
                    paths.join(lane, opened);
                    continue;
                }
            };
            let Some(joined) = joined else {
                break;
            };
            let (lane, index, length, result) = joined.map_err(|error| {
                Error::new(ErrorKind::LocalIo, format!("a write task failed: {error}"))
            })?;
            paths.answered(lane);
            result?;
            context.reporter.bytes_moved(&item.path, length);
            let Some(entry) = outstanding.get_mut(&index) else {
                continue;
            };
            entry.1 = entry.1.saturating_sub(length);
            if entry.1 == 0 {
                let hash = entry.0;
                outstanding.remove(&index);
                while let Some(joined) = checks.try_join_next() {
                    take_check(&mut checked, joined);
                }
                if check_early
                    && index + 1 < layout.block_count()
                    && checks.len() < CHECKS_IN_FLIGHT
                {
                    let remote = context.remote.clone();
                    let path = item.target.clone();
                    let layout = *layout;
                    checks.spawn(async move {
                        (
                            index,
                            remote.block_hashes(&path, &layout, index..index + 1).await,
                        )
                    });
                }
                unsynced.push((index, hash));
                // Intervals count the bytes that travelled: a delta of scattered pieces is
                // not synced and journaled once per few blocks it touched.
                let sent = sent_of.remove(&index).unwrap_or(0);
                unsynced_bytes += sent;
                since_sync += sent;
                if check_early {
                    // An agent re-hashes every journaled block before it is trusted again, so
                    // a block a crash of the server lost is found and sent again: the writes
                    // never wait for a sync. Syncs still run beside them, back to back, so the
                    // remote disk writes the file while it travels (see WRITEBACK_STEP).
                    if since_sync >= WRITEBACK_STEP
                        && syncing.as_ref().is_none_or(|task| task.is_finished())
                    {
                        if let Some(task) = syncing.take() {
                            finished(task, "a sync").await?;
                        }
                        let remote = context.remote.clone();
                        let handle = handle.clone();
                        syncing = Some(tokio::spawn(async move { remote.sync(&handle).await }));
                        since_sync = 0;
                    }
                } else if since_sync >= SYNC_INTERVAL {
                    // Without an agent the sync bounds what the journal may claim after a
                    // crash of the server.
                    context.remote.sync(handle).await?;
                    since_sync = 0;
                }
                // Acknowledged blocks are journaled often, so a dropped link loses little.
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
    close_late(arrivals).await;
    // The borrowed connections' handles are closed before the unit's connection syncs the
    // file: every write they carried has been acknowledged (or the file failed).
    paths.close_borrowed().await;
    // Every acknowledged block is recorded, whatever happened: the server has it (a dropped
    // link does not lose acknowledged writes; a crash of the server is caught by the size check
    // and the end-to-end digest).
    let recorded = record(journal, &mut unsynced, have);
    let synced = match syncing.take() {
        Some(task) => finished(task, "a sync").await,
        None => Ok(()),
    };
    outcome.and(recorded).and(synced)?;
    while let Some(joined) = checks.join_next().await {
        take_check(&mut checked, joined);
    }
    Ok(checked)
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

/// Bytes that must travel for the blocks `have` lacks: whole blocks, or their differing pieces.
fn bytes_needed(
    layout: &BlockLayout,
    have: &BTreeMap<u64, BlockHash>,
    pieces: &BTreeMap<u64, Vec<Range<u64>>>,
) -> u64 {
    let mut blocks = BlockSet::new(*layout);
    for (&index, &hash) in have {
        blocks.hold(index, hash);
    }
    blocks.set_pieces(pieces.clone());
    blocks.bytes_needed()
}
