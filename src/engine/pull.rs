//! Executing a pull plan: remote data into the local destination, in place, resumably.
//!
//! Directories are made first (writable by the owner until the end), then files are fetched
//! several at a time, then symlinks, and last the directories get their modes and mtimes,
//! deepest first. One file's transfer: open the journal (keeping only blocks whose bytes on
//! disk still hash to what was recorded), fetch the other blocks with many offset reads in
//! flight, write each block at its offset once it is whole, and every [`SYNC_INTERVAL`] sync the
//! file and only then journal the blocks; at the end check the remote did not grow, read the
//! whole file back against the block hashes, compare with the remote's own digest when it can
//! give one, and only then set the mode and mtime that mark the file done.

use crate::blocks::{BlockHash, BlockLayout, DEFAULT_BLOCK_SIZE, hash_block};
use crate::engine::delta;
use crate::engine::early::EarlyHashes;
use crate::engine::job::{self, FileTotals, Setup, Side};
use crate::engine::lanes::{Arrivals, Lanes, Paths, borrow_for_file, close_late, next_arrival};
use crate::engine::plan::{Action, Endpoints, Plan, PlanItem, journal_header};
use crate::engine::state::{JournalFile, StateDir};
use crate::engine::verify::{WholeFileDigests, hash_blocks_parallel, still_matching, verify_file};
use crate::engine::{Options, REMOTE_DIGEST_MIN_SIZE, SYNC_INTERVAL, Summary, finished};
use crate::error::{Error, ErrorKind, Result};
use crate::file_writing;
use crate::local::{Destination, Timestamp};
use crate::progress::Reporter;
use crate::remote::{Remote, RemoteDigest};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use tokio::task::JoinSet;

/// Everything one file's transfer needs, shared by the tasks of a pull.
struct Context<R: Remote> {
    remote: Arc<R>,
    /// Reads in flight on this connection, whatever file they belong to: bounds the bytes
    /// lost when the link drops and the memory held in half-assembled blocks.
    reads: Arc<tokio::sync::Semaphore>,
    destination: Arc<Destination>,
    state: StateDir,
    endpoints: Endpoints,
    reporter: Arc<dyn Reporter>,
    options: Options,
    /// Extra connections a large file may borrow.
    lanes: Option<Arc<Lanes<R>>>,
    /// The local file's hashes, computed while connecting.
    early: Option<Arc<EarlyHashes>>,
}

/// Executes `plan` over `remote`: see [`job`] for the phases.
pub async fn execute<R: Remote>(
    remote: Arc<R>,
    plan: &Plan,
    destination: Arc<Destination>,
    setup: Setup<R>,
) -> Summary {
    let Setup {
        state,
        endpoints,
        reporter,
        options,
        lanes,
        early,
    } = setup;
    let context = Arc::new(Context {
        reads: Arc::new(tokio::sync::Semaphore::new(
            options.requests_for(remote.max_io_size()),
        )),
        remote,
        destination,
        state,
        endpoints,
        reporter,
        options,
        lanes,
        early,
    });
    job::execute(context, plan).await
}

/// A pull writes the local destination.
impl<R: Remote> Side for Context<R> {
    fn reporter(&self) -> &Arc<dyn Reporter> {
        &self.reporter
    }

    fn files_in_flight(&self) -> usize {
        self.options.files_in_flight
    }

    async fn make_directory(&self, item: &PlanItem) -> Result<()> {
        make_directory(&self.destination, item)
    }

    async fn transfer_file(self: Arc<Self>, item: PlanItem) -> Result<FileTotals> {
        pull_file(&self, &item).await
    }

    async fn make_symlink(&self, item: &PlanItem) -> Result<()> {
        let relative = item.relative()?;
        let target = item.link_target.as_deref().unwrap_or_default();
        self.destination.create_symlink(&relative, target)?;
        self.destination
            .set_permissions_and_times(&relative, 0o777, timestamp(item.mtime))
    }

    async fn finish_directory(&self, item: &PlanItem) -> Result<()> {
        self.destination.set_permissions_and_times(
            &item.relative()?,
            item.mode,
            timestamp(item.mtime),
        )
    }
}

fn timestamp(mtime: i64) -> Timestamp {
    Timestamp {
        seconds: mtime,
        nanoseconds: 0,
    }
}

fn make_directory(destination: &Destination, item: &PlanItem) -> Result<()> {
    let relative = item.relative()?;
    if matches!(item.action, Action::Update { .. }) {
        // Something that is not a directory is in the way: a file or a link, never followed.
        destination.remove_file(&relative)?;
    }
    // Owner-writable until the end, whatever the final mode, so the children can be written.
    destination.create_dir_all(&relative, item.mode | 0o700)
}

/// Transfers one file; returns what moved.
async fn pull_file<R: Remote>(context: &Context<R>, item: &PlanItem) -> Result<FileTotals> {
    let relative = item.relative()?;
    let destination = &context.destination;
    let display = destination.display_path(&relative);
    let layout = BlockLayout::new(item.size, DEFAULT_BLOCK_SIZE).map_err(|error| {
        Error::remote(format!(
            "{}: {}: {error}",
            context.remote.label(),
            item.source
        ))
    })?;
    // A file of one block or less has nothing to resume inside it: no journal, no syncs.
    let journaled = layout.block_count() > 1;
    let header = journal_header(
        crate::engine::plan::Direction::Pull,
        &context.endpoints,
        item,
    );
    let journal_file =
        context
            .state
            .journal_file("pull", &header.source_id, &header.destination_id);
    let (mut journal, recorded) = if journaled {
        let (journal, recorded) = JournalFile::open(&journal_file, &header)?;
        (Some(journal), recorded)
    } else {
        (None, BTreeMap::new())
    };

    // Bytes already in a local file of that name: with an agent, a delta compares them. A link
    // or anything else in the way is removed.
    let (file, existing_length) = destination.open_write_replacing(&relative)?;
    // With an agent and data here already, the remote starts hashing now: that says which
    // blocks need not travel, and checks every block end to end.
    let remote_task = (context.remote.hashes_blocks() && existing_length > 0)
        .then(|| delta::remote_hashes_task(&context.remote, &item.source, layout));
    // Hashes computed while connecting, if this is the file they are of (checked before this
    // run changes it).
    let early = match &context.early {
        Some(early) if existing_length > 0 => early.for_file(&file, &layout).await,
        _ => BTreeMap::new(),
    };
    let incomplete_size = crate::engine::plan::size_while_incomplete(item.size);
    if layout.block_count() > 1 {
        // One block fails on its write as clearly as here.
        ensure_room(&file, incomplete_size, &display)?;
    }
    destination.set_len(&file, &relative, incomplete_size)?;
    // Trust a recorded block only if its bytes on disk still hash to what was recorded.
    let mut have = still_matching(&file, &layout, recorded, &early);
    // Blocks whose bytes on disk were read and found good in this run: not read back again.
    let mut checked: BTreeSet<u64> = have.keys().copied().collect();
    // An agent hashes every block where the data is: that finds the blocks (and the pieces of
    // blocks) a local file already holds, and checks every received block end to end.
    let mut pieces = BTreeMap::new();
    // Blocks worth comparing: local data the journal does not vouch for. A resumed file is
    // its journaled blocks and a hole: with nothing to compare, the remote hashes while the
    // data travels instead of before.
    let candidates: Vec<u64> = match remote_task {
        Some(_) => delta::blocks_with_data(&file, &layout, existing_length)
            .into_iter()
            .filter(|&index| {
                !have.contains_key(&index) && layout.range(index).end <= existing_length
            })
            .collect(),
        None => Vec::new(),
    };
    let remote_hashes = match remote_task {
        Some(remote_task) if !candidates.is_empty() => {
            // Needed before fetching: they say what need not travel.
            let compared = delta::compare(
                &context.remote,
                &item.source,
                &file,
                layout,
                candidates,
                &early,
                remote_task,
            )
            .await?;
            match compared {
                Some(delta) => {
                    tracing::debug!(
                        path = %item.path,
                        same = delta.same.len(),
                        pieces = delta.pieces.len(),
                        "delta"
                    );
                    checked.extend(delta.same.keys().copied());
                    have.extend(delta.same);
                    pieces = delta.pieces;
                    RemoteHashes::Ready(Some(delta.remote_hashes))
                }
                None => RemoteHashes::Ready(None),
            }
        }
        // Nothing to compare: the remote hashes while the data travels.
        Some(remote_task) => RemoteHashes::Pending(remote_task),
        // One block, read whole: its hash comes with the data.
        None if context.remote.hashes_blocks() && layout.block_count() == 1 && have.is_empty() => {
            RemoteHashes::WithData
        }
        None if context.remote.hashes_blocks() => RemoteHashes::Pending(delta::remote_hashes_task(
            &context.remote,
            &item.source,
            layout,
        )),
        None => RemoteHashes::Ready(None),
    };
    let needed = delta::bytes_needed(&layout, &have, &pieces);
    let reused = item.size.saturating_sub(needed);
    // A few blocks into data that was here already: written durably one by one (see
    // fetch_blocks), rather than synced with whatever else of the file is dirty.
    let synchronous = existing_length > 0 && needed <= SYNC_INTERVAL;
    context.reporter.file_started(&item.path, item.size, reused);

    let mut small_hash = None;
    if context.remote.hashes_blocks() && layout.block_count() == 1 && have.is_empty() {
        small_hash = fetch_small(context, item, &file, &layout, &mut have).await?;
    } else {
        fetch_large(
            context,
            item,
            (&file, synchronous),
            &layout,
            &pieces,
            journal.as_mut(),
            &mut have,
            &mut checked,
        )
        .await?;
    }
    tracing::debug!(path = %item.path, "fetched");
    let remote_hashes = match remote_hashes {
        RemoteHashes::Ready(hashes) => hashes,
        RemoteHashes::Pending(task) => delta::join(task).await?,
        RemoteHashes::WithData => match small_hash {
            Some(hash) => Some(vec![hash]),
            // An agent of protocol version 1 sends the data alone: ask now.
            None => {
                let task = delta::remote_hashes_task(&context.remote, &item.source, layout);
                delta::join(task).await?
            }
        },
    };
    if let Some(hashes) = &remote_hashes {
        let differing = (0..layout.block_count())
            .filter(|&index| hashes.get(index as usize) != have.get(&index))
            .count();
        if differing > 0 {
            // Blocks hashed and blocks read disagree: the source changed under the transfer
            // (or the peer sent other bytes than it hashes). What arrived is kept, but the
            // journal no longer vouches for it: the re-run compares every block with the
            // remote's hashes again and fetches only what differs, instead of trusting the
            // journal and failing here forever.
            if let Some(journal) = journal.take() {
                journal.remove()?;
            }
            return Err(Error::remote(format!(
                "{display}: {differing} block(s) differ from the remote's hashes of {}: the source changed during the transfer",
                item.source
            ))
            .with_hint("re-run the same command once the file stops changing")
            .transient(true));
        }
    }

    // Without block hashes, the remote hashes the whole file while we fetch it.
    let digest_task = (remote_hashes.is_none()
        && context.options.remote_digest
        && item.size >= REMOTE_DIGEST_MIN_SIZE)
        .then(|| {
            let remote = context.remote.clone();
            let path = item.source.clone();
            tokio::spawn(async move { remote.digest(&path).await })
        });

    let digest = match digest_task {
        Some(task) => match task.await {
            Ok(Ok(digest)) => digest,
            Ok(Err(error)) => {
                tracing::debug!(%error, "no remote digest for {}", item.source);
                None
            }
            Err(_) => None,
        },
        None => None,
    };
    let wanted = WholeFileDigests {
        blake3: matches!(digest, Some(RemoteDigest::Blake3(_))),
        sha256: matches!(digest, Some(RemoteDigest::Sha256(_))),
    };
    let verification = if layout.block_count() <= 1 {
        // One block just written, in the page cache: reading it back costs less than handing
        // it to another thread (a pull of many small files did that once per file).
        verify_file(&file, &layout, &have, &checked, wanted, &display)?
    } else {
        let file = file
            .try_clone()
            .map_err(|error| Error::local_io(format!("cannot reopen {display}"), error))?;
        let have = have.clone();
        let display = display.clone();
        let task = tokio::task::spawn_blocking(move || {
            verify_file(&file, &layout, &have, &checked, wanted, &display)
        });
        finished(task, "a verification").await?
    };
    tracing::debug!(path = %item.path, "read back");
    if !verification.mismatched.is_empty() {
        return Err(Error::new(
            ErrorKind::LocalIo,
            format!(
                "{display}: {} block(s) read back differ from what was written (first at offset {}); the disk or another program changed the file",
                verification.mismatched.len(),
                layout.range(verification.mismatched[0]).start
            ),
        )
        .with_hint("re-run the same command to fetch those blocks again")
        .transient(true));
    }
    let agrees = match digest {
        Some(RemoteDigest::Blake3(remote)) => Some(remote) == verification.blake3,
        Some(RemoteDigest::Sha256(remote)) => Some(remote) == verification.sha256,
        None => true,
    };
    if !agrees {
        // What we hold is consistent with itself but not with the source: never keep it.
        if let Some(journal) = journal.take() {
            journal.remove()?;
        }
        return Err(Error::remote(format!(
            "{display}: the whole-file digest differs from the remote's {}: the source changed during the transfer",
            item.source
        ))
        .with_hint("re-run the same command; the file will be fetched again")
        .transient(true));
    }
    // Verified: the real size, then the mode and mtime that mark it done.
    destination.set_len(&file, &relative, item.size)?;
    destination.set_file_permissions_and_times(
        &file,
        &relative,
        item.mode,
        timestamp(item.mtime),
    )?;
    if let Some(journal) = journal {
        journal.remove()?;
    }
    Ok(FileTotals {
        moved: item.size - reused,
        reused,
    })
}

/// The remote's block hashes: known already, or still being computed.
enum RemoteHashes {
    Ready(Option<Vec<BlockHash>>),
    Pending(delta::RemoteTask),
    /// A file of one block: its hash comes with the data (see [`fetch_small`]).
    WithData,
}

/// A file of one block, in one request (the agent reads it whole): no open, no close. Returns
/// the remote's hash of the block when it came with the data.
async fn fetch_small<R: Remote>(
    context: &Context<R>,
    item: &PlanItem,
    file: &File,
    layout: &BlockLayout,
    have: &mut BTreeMap<u64, BlockHash>,
) -> Result<Option<BlockHash>> {
    // One byte more than the size, so a file that grew is told from one that did not.
    let asked = u32::try_from(item.size.saturating_add(1)).unwrap_or(u32::MAX);
    let Some(small) = context.remote.read_small(&item.source, asked).await? else {
        let mut checked = BTreeSet::new();
        fetch_large(
            context,
            item,
            (file, false),
            layout,
            &BTreeMap::new(),
            None,
            have,
            &mut checked,
        )
        .await?;
        return Ok(None);
    };
    let data = small.data;
    if data.len() as u64 != item.size {
        return Err(Error::remote(format!(
            "{}: {} has {} bytes, not the {} its size said (it changed while being read?)",
            context.remote.label(),
            item.source,
            data.len(),
            item.size
        ))
        .with_hint("re-run the same command once the file stops changing"));
    }
    file_writing::write_all_at(file, &data, 0)
        .map_err(|error| Error::local_io(format!("cannot write {}", item.target), error))?;
    context.reporter.bytes_moved(&item.path, data.len() as u64);
    have.insert(0, hash_block(&data));
    Ok(small.block_hash)
}

/// Opens the remote file, fetches the blocks `have` lacks, and checks the file ends where its
/// size said.
#[allow(clippy::too_many_arguments)]
async fn fetch_large<R: Remote>(
    context: &Context<R>,
    item: &PlanItem,
    (file, synchronous): (&File, bool),
    layout: &BlockLayout,
    pieces: &BTreeMap<u64, Vec<Range<u64>>>,
    journal: Option<&mut JournalFile>,
    have: &mut BTreeMap<u64, BlockHash>,
    checked: &mut BTreeSet<u64>,
) -> Result<()> {
    let handle = context.remote.open_read(&item.source).await?;
    // The size was a promise: more bytes past it means the stat lied or the file grew. Asked
    // now, alongside the data, so small files cost no extra round trip.
    let beyond = {
        let remote = context.remote.clone();
        let handle = handle.clone();
        let size = item.size;
        tokio::spawn(async move { remote.read_at(&handle, size, 1).await })
    };
    // A large file also travels over borrowed connections, each with the file open; they join
    // as they come up, while the unit's own connection is already fetching.
    let source = item.source.clone();
    let (arrivals, lanes_task) = borrow_for_file(
        context.lanes.as_ref(),
        layout,
        delta::bytes_needed(layout, have, pieces),
        move |remote: Arc<R>| {
            let source = source.clone();
            async move { remote.open_read(&source).await }
        },
    );
    let fetched = fetch_blocks(
        context,
        item,
        (context.remote.clone(), handle.clone()),
        arrivals,
        (file, synchronous),
        layout,
        pieces,
        journal,
        have,
        checked,
    )
    .await;
    if let Some(task) = lanes_task {
        task.abort();
    }
    if let Err(error) = fetched {
        beyond.abort();
        let _ = context.remote.close(handle).await;
        return Err(error);
    }
    let beyond = finished(beyond, "a read").await?;
    let _ = context.remote.close(handle).await;
    if !beyond.is_empty() {
        return Err(Error::remote(format!(
            "{}: {} has more than the {} bytes its size said (it grew while being read?)",
            context.remote.label(),
            item.source,
            item.size
        ))
        .with_hint("re-run the same command once the file stops changing"));
    }
    Ok(())
}

/// A finished read: the connection it went over, block index, offset, length asked, data.
type ReadDone = (usize, u64, u64, u32, Result<Vec<u8>>);

/// A block being assembled from several reads.
struct Assembly {
    data: Vec<u8>,
    filled: usize,
}

/// Refuses a file the local filesystem has no room for, before anything is written: a clear
/// message now beats "no space left" halfway through (and a lying size costs nothing).
fn ensure_room(file: &File, size: u64, display: &str) -> Result<()> {
    let current = file.metadata().map(|metadata| metadata.len()).unwrap_or(0);
    let Ok(status) = nix::sys::statvfs::fstatvfs(file) else {
        return Ok(());
    };
    let available = status
        .blocks_available()
        .saturating_mul(status.fragment_size());
    let wanted = size.saturating_sub(current);
    if wanted > available {
        return Err(Error::new(
            ErrorKind::LocalIo,
            format!(
                "{display}: needs {} more bytes but the filesystem has {available} free",
                wanted
            ),
        )
        .with_hint("free some space (or pull to another disk), then re-run the same command"));
    }
    Ok(())
}

/// Fetches the blocks `have` lacks, with many reads in flight, and writes each whole block in
/// place. Requests are made only as slots free up, so memory does not grow with the file's
/// (claimed) size. Blocks written so far are synced and journaled even when this fails, so a
/// dropped link loses only what was in flight.
#[allow(clippy::too_many_arguments)]
async fn fetch_blocks<R: Remote>(
    context: &Context<R>,
    item: &PlanItem,
    primary: (Arc<R>, R::File),
    mut arrivals: Option<Arrivals<R>>,
    (file, synchronous): (&File, bool),
    layout: &BlockLayout,
    pieces: &BTreeMap<u64, Vec<Range<u64>>>,
    mut journal: Option<&mut JournalFile>,
    have: &mut BTreeMap<u64, BlockHash>,
    checked: &mut BTreeSet<u64>,
) -> Result<()> {
    let chunk = u64::from(primary.0.max_io_size());
    let per_connection = context.options.requests_for(chunk as u32);
    // The connections this file is fetched over, with their reads in flight; borrowed ones
    // (kept alive by their lane) join as they arrive. Each read goes to the least busy one.
    let mut paths = Paths::new(primary.0, primary.1);
    let mut next_block = 0u64;
    let block_count = layout.block_count();
    // Short reads put their remainders here, ahead of new blocks.
    let mut requests: VecDeque<(u64, u64, u32)> = VecDeque::new();
    let mut in_flight: JoinSet<ReadDone> = JoinSet::new();
    let mut assemblies: HashMap<u64, Assembly> = HashMap::new();
    let mut spare: Vec<Vec<u8>> = Vec::new();
    let mut unsynced: Vec<(u64, Option<BlockHash>)> = Vec::new();
    let mut unsynced_bytes = 0u64;
    // The batch being synced and read back in the background, at most one.
    let mut settling: Option<tokio::task::JoinHandle<Result<Settled>>> = None;
    // A few blocks into a file that held data already (a delta): each is written through a
    // descriptor opened with O_DSYNC, durable when its write returns, so no fdatasync writes
    // back what another program left dirty in the file (the old copy just made, say) on this
    // transfer's clock. Bulk writes stay buffered and are synced every SYNC_INTERVAL.
    let mut durable = if synchronous {
        synchronous_writer(file).map(DurableWrites::new)
    } else {
        None
    };
    let sync = journal.is_some() && durable.is_none();
    let hashes = context.remote.hashes_blocks();
    let label = context.remote.label().to_string();
    let display = || format!("{label} {}", item.source);

    // After the first failure no new reads go out, but replies that already arrived are still
    // written: on a dropped link that is everything the server managed to send.
    let mut first_error: Option<Error> = None;
    let outcome: Result<()> = async {
        loop {
            while first_error.is_none() {
                let Some(lane) = paths.least_busy(per_connection) else {
                    break;
                };
                if requests.is_empty() {
                    while next_block < block_count && have.contains_key(&next_block) {
                        next_block += 1;
                    }
                    if next_block >= block_count {
                        break;
                    }
                    // The whole block, or only its pieces that differ from the local bytes.
                    let whole = [layout.range(next_block)];
                    let ranges = pieces.get(&next_block).map_or(&whole[..], |ranges| &ranges[..]);
                    for range in ranges {
                        let mut offset = range.start;
                        while offset < range.end {
                            let length = chunk.min(range.end - offset) as u32;
                            requests.push_back((next_block, offset, length));
                            offset += u64::from(length);
                        }
                    }
                    next_block += 1;
                }
                let Some((index, offset, length)) = requests.pop_front() else { break };
                let Some((remote, handle, permit)) = paths.request(lane, &context.reads).await
                else {
                    break;
                };
                in_flight.spawn(async move {
                    let result = remote.read_at(&handle, offset, length).await;
                    drop(permit);
                    (lane, index, offset, length, result)
                });
            }
            if in_flight.is_empty() {
                break;
            }
            let joined = tokio::select! {
                joined = in_flight.join_next() => joined,
                (lane, opened) = next_arrival(&mut arrivals) => {
                    if first_error.is_none() {
                        paths.join(lane, opened);
                    } else {
                        let _ = lane.remote.close(opened).await;
                    }
                    continue;
                }
            };
            let Some(joined) = joined else { break };
            let (lane, index, offset, length, result) =
                joined.map_err(|error| Error::new(ErrorKind::LocalIo, format!("a read task failed: {error}")))?;
            paths.answered(lane);
            let data = match result {
                Ok(data) => data,
                Err(error) => {
                    first_error.get_or_insert(error);
                    continue;
                }
            };
            if data.is_empty() {
                return Err(Error::remote(format!(
                    "{}: the file ends before byte {offset}, short of the {} bytes its size said (it shrank while being read?)",
                    display(),
                    item.size
                ))
                .with_hint("re-run the same command once the file stops changing"));
            }
            let range = layout.range(index);
            // A read that is the whole block (the agent's reads are) is the block itself: no
            // assembly buffer and no copy.
            let whole_read = offset == range.start
                && data.len() as u64 == range.end - range.start
                && !pieces.contains_key(&index)
                && !assemblies.contains_key(&index);
            if whole_read {
                context.reporter.bytes_moved(&item.path, data.len() as u64);
                let block = Block { index, data, pieces: None };
                let queue = (&mut unsynced, &mut unsynced_bytes);
                // The read's own buffer: not kept for assemblies.
                put_block(durable.as_mut(), file, &item.target, layout, block, hashes, queue, None).await?;
            } else {
                let assembly = match assemblies.entry(index) {
                    std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                    std::collections::hash_map::Entry::Vacant(entry) => {
                        // Reuse a finished block's buffer: no allocation or zeroing per block.
                        let mut data = spare.pop().unwrap_or_default();
                        data.resize((range.end - range.start) as usize, 0);
                        let mut filled = 0;
                        if let Some(ranges) = pieces.get(&index) {
                            // Only some pieces travel: the rest of the block is the local
                            // bytes, which only the hash of what arrived needs (with an agent
                            // the remote's block hash is the reference, and they are not read).
                            if !hashes {
                                file.read_exact_at(&mut data, range.start).map_err(|error| {
                                    Error::local_io(format!("cannot read {}", item.target), error)
                                })?;
                            }
                            filled = data
                                .len()
                                .saturating_sub(crate::blocks::delta::covered(ranges) as usize);
                        }
                        entry.insert(Assembly { data, filled })
                    }
                };
                let start = (offset - range.start) as usize;
                let Some(slot) = assembly.data.get_mut(start..start + data.len()) else {
                    return Err(Error::remote(format!("{}: a read returned more than was asked", display())));
                };
                slot.copy_from_slice(&data);
                assembly.filled += data.len();
                context.reporter.bytes_moved(&item.path, data.len() as u64);
                if (data.len() as u32) < length {
                    // A short read is legal; ask for the rest.
                    let done = data.len() as u64;
                    requests.push_front((index, offset + done, length - done as u32));
                }
                if assembly.filled == assembly.data.len() {
                    let Some(assembly) = assemblies.remove(&index) else { continue };
                    let block = Block { index, data: assembly.data, pieces: pieces.get(&index).cloned() };
                    let queue = (&mut unsynced, &mut unsynced_bytes);
                    let spare = Some(&mut spare);
                    put_block(durable.as_mut(), file, &item.target, layout, block, hashes, queue, spare).await?;
                }
            }
            if unsynced_bytes >= SYNC_INTERVAL {
                // The sync and read-back of these blocks run on another thread while more
                // arrive; the previous batch is recorded first (it is done by now unless
                // the disk is slower than the link).
                if let Some(task) = settling.take() {
                    record(finished(task, "a sync").await?, journal.as_deref_mut(), have, checked, item, layout)?;
                }
                settling = Some(settle_in_background(file, *layout, sync, std::mem::take(&mut unsynced), item)?);
                unsynced_bytes = 0;
            }
        }
        match first_error.take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
    .await;
    in_flight.abort_all();
    close_late(arrivals).await;
    paths.close_borrowed().await;
    // Every durable write still running is waited for: what it wrote is committed below.
    let written = match durable.as_mut() {
        Some(durable) => durable.finish((&mut unsynced, &mut unsynced_bytes)).await,
        None => Ok(()),
    };
    // Keep every whole block written so far, whatever happened.
    let background = match settling.take() {
        Some(task) => finished(task, "a sync").await.and_then(|settled| {
            record(settled, journal.as_deref_mut(), have, checked, item, layout)
        }),
        None => Ok(()),
    };
    let committed = commit(
        (file, sync),
        layout,
        journal,
        &mut unsynced,
        have,
        checked,
        item,
    );
    outcome.and(written).and(background).and(committed)
}

/// A second descriptor of `file` whose writes are durable when they return (O_DSYNC), opened
/// through /proc/self/fd (the same file, whatever its name now); None where that is not
/// possible, and the caller syncs as usual.
fn synchronous_writer(file: &File) -> Option<File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_DSYNC.bits())
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .ok()
}

/// Blocks synced and read back, waiting to be recorded.
struct Settled {
    /// Blocks whose bytes on disk hash as expected, with that hash.
    verified: Vec<(u64, BlockHash)>,
    /// The first block that read back differently.
    differing: Option<u64>,
}

/// Syncs `file` (when its blocks are journaled) and reads back the blocks `unsynced`: what
/// [`commit`] does before it records, on the calling thread.
fn settle(
    file: &File,
    layout: &BlockLayout,
    sync: bool,
    unsynced: Vec<(u64, Option<BlockHash>)>,
    target: &str,
) -> Result<Settled> {
    if sync {
        file.sync_data()
            .map_err(|error| Error::local_io(format!("cannot sync {target}"), error))?;
    }
    let indices: Vec<u64> = unsynced.iter().map(|(index, _)| *index).collect();
    let on_disk = hash_blocks_parallel(file, layout, &indices);
    let mut settled = Settled {
        verified: Vec::with_capacity(unsynced.len()),
        differing: None,
    };
    for (index, expected) in unsynced {
        match on_disk.get(&index) {
            Some(hash) if expected.is_none_or(|expected| expected == *hash) => {
                settled.verified.push((index, *hash));
            }
            _ => settled.differing = settled.differing.or(Some(index)),
        }
    }
    Ok(settled)
}

/// [`settle`] on the blocking pool, over a second descriptor of the file.
fn settle_in_background(
    file: &File,
    layout: BlockLayout,
    sync: bool,
    unsynced: Vec<(u64, Option<BlockHash>)>,
    item: &PlanItem,
) -> Result<tokio::task::JoinHandle<Result<Settled>>> {
    let file = file
        .try_clone()
        .map_err(|error| Error::local_io(format!("cannot reopen {}", item.target), error))?;
    let target = item.target.clone();
    Ok(tokio::task::spawn_blocking(move || {
        settle(&file, &layout, sync, unsynced, &target)
    }))
}

/// Records settled blocks: journals them (they are durable and read back good) and counts
/// them as held. A block that read back differently is not recorded (it is fetched again on
/// the next attempt) and fails the file.
fn record(
    settled: Settled,
    journal: Option<&mut JournalFile>,
    have: &mut BTreeMap<u64, BlockHash>,
    checked: &mut BTreeSet<u64>,
    item: &PlanItem,
    layout: &BlockLayout,
) -> Result<()> {
    if let Some(journal) = journal {
        journal.append(&settled.verified)?;
    }
    checked.extend(settled.verified.iter().map(|(index, _)| *index));
    have.extend(settled.verified);
    match settled.differing {
        Some(index) => Err(Error::new(
            ErrorKind::LocalIo,
            format!(
                "{}: the block at offset {} read back differs from what was written; the disk or another program changed the file",
                item.target,
                layout.range(index).start
            ),
        )
        .with_hint("re-run the same command to fetch it again")
        .transient(true)),
        None => Ok(()),
    }
}

/// A whole block to write: the data of its whole range, of which only `pieces` (when given)
/// arrived; the rest is the local bytes, on disk already.
struct Block {
    index: u64,
    data: Vec<u8>,
    pieces: Option<Vec<Range<u64>>>,
}

/// Writes a finished block in place. Returns what [`commit`] checks its read-back against
/// (the hash of what arrived; None when the remote's own block hashes are that reference, and
/// this pass is saved) and the bytes written. `durable`: `file` was opened with O_DSYNC, so
/// every write waits for the disk and each range goes in one; other writes go through the
/// page cache in [`file_writing`]'s pieces.
fn write_block(
    file: &File,
    target: &str,
    layout: &BlockLayout,
    block: &Block,
    remote_hashes_blocks: bool,
    durable: bool,
) -> Result<(Option<BlockHash>, u64)> {
    let range = layout.range(block.index);
    let hash = (!remote_hashes_blocks).then(|| hash_block(&block.data));
    let whole = [range.clone()];
    let written = block.pieces.as_deref().unwrap_or(&whole[..]);
    let mut bytes_written = 0u64;
    for part in written {
        let within = (part.start - range.start) as usize..(part.end - range.start) as usize;
        let Some(bytes) = block.data.get(within) else {
            continue;
        };
        let result = if durable {
            file.write_all_at(bytes, part.start)
        } else {
            file_writing::write_all_at(file, bytes, part.start)
        };
        result.map_err(|error| Error::local_io(format!("cannot write {target}"), error))?;
        bytes_written += bytes.len() as u64;
    }
    Ok((hash, bytes_written))
}

/// Writes a finished block: through `durable` when the file's writes go there, else in place
/// now, its buffer then going back to `spare` (when given) for the next assembly.
#[allow(clippy::too_many_arguments)]
async fn put_block(
    durable: Option<&mut DurableWrites>,
    file: &File,
    target: &str,
    layout: &BlockLayout,
    block: Block,
    remote_hashes_blocks: bool,
    (unsynced, unsynced_bytes): Queue<'_>,
    spare: Option<&mut Vec<Vec<u8>>>,
) -> Result<()> {
    match durable {
        Some(durable) => {
            let queue = (unsynced, unsynced_bytes);
            durable
                .write(target, *layout, block, remote_hashes_blocks, queue, spare)
                .await
        }
        None => {
            let (hash, bytes) =
                write_block(file, target, layout, &block, remote_hashes_blocks, false)?;
            unsynced.push((block.index, hash));
            *unsynced_bytes += bytes;
            if let Some(spare) = spare {
                spare.push(block.data);
            }
            Ok(())
        }
    }
}

/// Durable writes running at once, each holding its block's buffer. Each O_DSYNC write waits
/// for its data and a disk cache flush (and on a journaling filesystem a journal commit);
/// writes waiting together share them. One after
/// another, the 150 blocks of a 1% delta of a 1 GiB file took up to 0.3 s here.
const DURABLE_WRITES_IN_FLIGHT: usize = 16;

/// Blocks written through a descriptor opened with O_DSYNC (see [`synchronous_writer`]),
/// several at once on the blocking pool. A block is queued for [`commit`] once its write has
/// returned, that is once it is durable.
struct DurableWrites {
    writer: Arc<File>,
    running: JoinSet<DurableWrite>,
}

/// A durable write that ended: its block, whether to keep the block's buffer, and
/// [`write_block`]'s answer.
type DurableWrite = (Block, bool, Result<(Option<BlockHash>, u64)>);

/// The queue of written blocks and its byte count, as [`fetch_blocks`] keeps them.
type Queue<'a> = (&'a mut Vec<(u64, Option<BlockHash>)>, &'a mut u64);

impl DurableWrites {
    fn new(writer: File) -> Self {
        DurableWrites {
            writer: Arc::new(writer),
            running: JoinSet::new(),
        }
    }

    /// Starts writing `block`; waits for earlier writes while too many are running. Their
    /// buffers go back to `spare` as [`put_block`]'s do.
    async fn write(
        &mut self,
        target: &str,
        layout: BlockLayout,
        block: Block,
        remote_hashes_blocks: bool,
        (unsynced, unsynced_bytes): Queue<'_>,
        mut spare: Option<&mut Vec<Vec<u8>>>,
    ) -> Result<()> {
        let writer = self.writer.clone();
        let target = target.to_string();
        let keep = spare.is_some();
        self.running.spawn_blocking(move || {
            let written = write_block(
                &writer,
                &target,
                &layout,
                &block,
                remote_hashes_blocks,
                true,
            );
            (block, keep, written)
        });
        while self.running.len() >= DURABLE_WRITES_IN_FLIGHT {
            if let Some(done) = self.running.join_next().await {
                let queue = (&mut *unsynced, &mut *unsynced_bytes);
                written(done, queue, spare.as_deref_mut())?;
            }
        }
        Ok(())
    }

    /// Waits for every write still running; queues those that succeeded, returns the first
    /// failure.
    async fn finish(&mut self, (unsynced, unsynced_bytes): Queue<'_>) -> Result<()> {
        let mut first_error = None;
        while let Some(done) = self.running.join_next().await {
            let queue = (&mut *unsynced, &mut *unsynced_bytes);
            if let Err(error) = written(done, queue, None) {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// A durable write that ended: queued for [`commit`] when it succeeded, its buffer kept in
/// `spare` when it was asked to be.
fn written(
    done: std::result::Result<DurableWrite, tokio::task::JoinError>,
    (unsynced, unsynced_bytes): Queue<'_>,
    spare: Option<&mut Vec<Vec<u8>>>,
) -> Result<()> {
    let (block, keep, result) = done.map_err(write_task_failed)?;
    let (hash, bytes) = result?;
    unsynced.push((block.index, hash));
    *unsynced_bytes += bytes;
    if let (true, Some(spare)) = (keep, spare) {
        spare.push(block.data);
    }
    Ok(())
}

fn write_task_failed(error: tokio::task::JoinError) -> Error {
    Error::new(ErrorKind::LocalIo, format!("a write task failed: {error}"))
}

/// Makes written blocks durable, reads them back and records them: the hash read back is the
/// one journaled and compared with the remote's, and must equal the hash of what arrived when
/// that was computed. A block that reads back differently is not recorded (it is fetched
/// again on the next attempt) and fails the file.
fn commit(
    (file, sync): (&File, bool),
    layout: &BlockLayout,
    journal: Option<&mut JournalFile>,
    unsynced: &mut Vec<(u64, Option<BlockHash>)>,
    have: &mut BTreeMap<u64, BlockHash>,
    checked: &mut BTreeSet<u64>,
    item: &PlanItem,
) -> Result<()> {
    if unsynced.is_empty() {
        return Ok(());
    }
    let settled = settle(file, layout, sync, std::mem::take(unsynced), &item.target)?;
    record(settled, journal, have, checked, item, layout)
}
