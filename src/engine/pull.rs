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

use crate::blocks::delta::covered;
use crate::blocks::{BlockHash, BlockLayout, BlockSet, DEFAULT_BLOCK_SIZE, hash_block};
use crate::engine::delta;
use crate::engine::job::{self, Context, FileTotals, Setup, Side};
use crate::engine::lanes::{Arrivals, Paths, borrow_for_file, close_late, next_arrival};
use crate::engine::plan::{Action, Direction, Plan, PlanItem};
use crate::engine::settle;
use crate::engine::state::{JournalFile, open_journal};
use crate::engine::verify::{WholeFileDigests, hash_blocks_parallel, still_matching, verify_file};
use crate::engine::{REMOTE_DIGEST_MIN_SIZE, SYNC_INTERVAL, Summary, finished};
use crate::error::{Error, ErrorKind, Result};
use crate::file_writing;
use crate::local::{Destination, RelativePath, Timestamp};
use crate::progress::Reporter;
use crate::remote::{Remote, RemoteDigest, read_unhashed};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::task::JoinSet;

/// A pull's context: the local destination beside what every transfer shares.
type PullContext<R> = Context<R, Arc<Destination>>;

/// Executes `plan` over `remote`: see [`job`] for the phases.
pub async fn execute<R: Remote>(
    remote: Arc<R>,
    plan: &Plan,
    destination: Arc<Destination>,
    setup: Setup<R>,
) -> Summary {
    let context = Arc::new(Context::new(remote, destination, setup));
    job::execute(context, plan).await
}

/// A pull writes the local destination.
impl<R: Remote> Side for PullContext<R> {
    fn reporter(&self) -> &Arc<dyn Reporter> {
        &self.setup.reporter
    }

    /// The files moving data ([`Context::moving`]) and those waiting for the sync that makes
    /// them durable, each holding its file open.
    fn files_in_flight(&self) -> usize {
        self.setup.options.files_in_flight + self.setup.options.files_waiting_for_sync
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
async fn pull_file<R: Remote>(context: &PullContext<R>, item: &PlanItem) -> Result<FileTotals> {
    let moving = context
        .moving
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Error::internal("the transfer's file slots are closed"))?;
    let (mut pull, remote_task) = PullFile::open(context, item).await?;
    let remote_hashes = pull.find_delta(remote_task).await?;
    let reused = item.size.saturating_sub(pull.blocks.bytes_needed());
    context
        .setup
        .reporter
        .file_started(&item.path, item.size, reused);
    let remote_hashes = pull.fetch(remote_hashes).await?;
    pull.check_block_hashes(remote_hashes.as_deref())?;
    // Without block hashes, the remote digests the whole file instead.
    let digest = match remote_hashes {
        Some(_) => None,
        None => pull.remote_digest().await,
    };
    pull.read_back(digest).await?;
    // Its data has moved: the next file may start while this one waits for its sync.
    drop(moving);
    pull.make_durable().await?;
    pull.finish()?;
    Ok(FileTotals {
        moved: item.size - reused,
        reused,
    })
}

/// One file being pulled: the local file its bytes go to, its journal, and what is known of
/// its blocks.
struct PullFile<'a, R: Remote> {
    context: &'a PullContext<R>,
    item: &'a PlanItem,
    relative: RelativePath,
    /// The local path, for messages.
    display: String,
    layout: BlockLayout,
    file: File,
    /// The bytes the local file held when it was opened.
    existing_length: u64,
    /// None for a file of one block or less: nothing to resume inside it.
    journal: Option<JournalFile>,
    blocks: BlockSet,
    /// The local file's block hashes computed while connecting, if this is the file they are
    /// of (checked before this run changed it).
    early: BTreeMap<u64, BlockHash>,
    /// The remote's hashes of the blocks it sent whole with a hashed read.
    read_hashes: BTreeMap<u64, BlockHash>,
    /// When this run started reading the source, on this machine's clock ([`settle`]).
    read_from: SystemTime,
}

/// The remote's block hashes: known already, or still being computed.
enum RemoteHashes {
    Ready(Option<Vec<BlockHash>>),
    Pending(delta::RemoteTask),
    /// A file of one block: its hash comes with the data (see [`PullFile::fetch_small`]).
    WithData,
    /// Every block travels: each read of a whole block comes with the remote's hash of it
    /// (see [`Remote::hashes_reads`]).
    WithReads,
}

impl<'a, R: Remote> PullFile<'a, R> {
    /// Opens the journal and the local file (with room for the whole file), and keeps the
    /// journaled blocks whose bytes on disk still hash to what was recorded. With an agent and
    /// data here already, also starts the remote hashing its copy, returned.
    async fn open(
        context: &'a PullContext<R>,
        item: &'a PlanItem,
    ) -> Result<(Self, Option<delta::RemoteTask>)> {
        let relative = item.relative()?;
        let read_from = SystemTime::now();
        let destination = &context.destination;
        let display = destination.display_path(&relative);
        let layout = BlockLayout::new(item.size, DEFAULT_BLOCK_SIZE).map_err(|error| {
            Error::remote(format!(
                "{}: {}: {error}",
                context.remote.label(),
                item.source
            ))
        })?;
        let (journal, recorded) = open_journal(
            &context.setup.state,
            Direction::Pull,
            &context.setup.endpoints,
            item,
            &layout,
        )?;

        // Bytes already in a local file of that name: with an agent, a delta compares them. A
        // link or anything else in the way is removed.
        let (file, existing_length) = destination.open_write_replacing(&relative)?;
        // With an agent and data here already, the remote starts hashing now: that says which
        // blocks need not travel, and checks every block end to end.
        let remote_task = (context.remote.hashes_blocks() && existing_length > 0)
            .then(|| delta::remote_hashes_task(&context.remote, &item.source, layout));
        let early = match &context.setup.early {
            Some(early) if existing_length > 0 => early.for_file(&file, &layout).await,
            _ => BTreeMap::new(),
        };
        let incomplete_size = crate::engine::plan::size_while_incomplete(item.size);
        if layout.block_count() > 1 {
            // One block fails on its write as clearly as here.
            ensure_room(&file, incomplete_size, &display)?;
        }
        destination.set_len(&file, &relative, incomplete_size)?;
        // Trust a recorded block only if its bytes on disk still hash to what was recorded;
        // those were just read, so they are not read back again.
        let mut blocks = BlockSet::new(layout);
        blocks.hold_all_checked(still_matching(&file, &layout, recorded, &early));
        let pull = PullFile {
            context,
            item,
            relative,
            display,
            layout,
            file,
            existing_length,
            journal,
            blocks,
            early,
            read_hashes: BTreeMap::new(),
            read_from,
        };
        Ok((pull, remote_task))
    }

    /// The delta: where an agent hashes the remote copy, the blocks (and the pieces of blocks)
    /// the local file already holds do not travel, and every block received is checked end to
    /// end against the remote's hashes. Returns those hashes, or where they will come from.
    async fn find_delta(&mut self, remote_task: Option<delta::RemoteTask>) -> Result<RemoteHashes> {
        let remote = &self.context.remote;
        let one_block = self.layout.block_count() == 1 && self.blocks.holds_none();
        let Some(remote_task) = remote_task else {
            let hashes = if !remote.hashes_blocks() {
                RemoteHashes::Ready(None)
            } else if one_block {
                // One block, read whole: its hash comes with the data.
                RemoteHashes::WithData
            } else if remote.hashes_reads() && self.blocks.holds_none() {
                // Nothing here to compare, so every block travels, each with the remote's
                // hash of it: the remote reads the file once, where a separate pass for its
                // hashes would read it twice (from disk, for a file larger than its memory).
                RemoteHashes::WithReads
            } else {
                let task = delta::remote_hashes_task(remote, &self.item.source, self.layout);
                RemoteHashes::Pending(task)
            };
            return Ok(hashes);
        };
        // Blocks worth comparing: local data the journal does not vouch for. A resumed file is
        // its journaled blocks and a hole: with nothing to compare, the remote hashes while the
        // data travels instead of before.
        let candidates: Vec<u64> =
            delta::blocks_with_data(&self.file, &self.layout, self.existing_length)
                .into_iter()
                .filter(|&index| {
                    !self.blocks.holds(index)
                        && self.layout.range(index).end <= self.existing_length
                })
                .collect();
        if candidates.is_empty() {
            return Ok(RemoteHashes::Pending(remote_task));
        }
        // Needed before fetching: they say what need not travel.
        let compared = delta::compare(
            remote,
            &self.item.source,
            &self.file,
            self.layout,
            candidates,
            &self.early,
            remote_task,
        )
        .await?;
        let Some(found) = compared else {
            return Ok(RemoteHashes::Ready(None));
        };
        tracing::debug!(
            path = %self.item.path,
            same = found.same.len(),
            pieces = found.pieces.len(),
            "delta"
        );
        // Equal on both sides: the local bytes were just read and hashed.
        self.blocks.hold_all_checked(found.same);
        self.blocks.set_pieces(found.pieces);
        Ok(RemoteHashes::Ready(Some(found.remote_hashes)))
    }

    /// Fetches every block not held; returns the remote's block hashes, when it has them.
    async fn fetch(&mut self, remote_hashes: RemoteHashes) -> Result<Option<Vec<BlockHash>>> {
        let mut small_hash = None;
        if self.context.remote.hashes_blocks()
            && self.layout.block_count() == 1
            && self.blocks.holds_none()
        {
            small_hash = self.fetch_small().await?;
        } else {
            // A few blocks into data that was here already: written durably one by one (see
            // Fetch::new), rather than synced with whatever else of the file is dirty.
            let synchronous =
                self.existing_length > 0 && self.blocks.bytes_needed() <= SYNC_INTERVAL;
            let hashed_reads = matches!(remote_hashes, RemoteHashes::WithReads);
            self.fetch_large(synchronous, hashed_reads).await?;
        }
        tracing::debug!(path = %self.item.path, "fetched");
        Ok(match remote_hashes {
            RemoteHashes::Ready(hashes) => hashes,
            RemoteHashes::Pending(task) => delta::join(task).await?,
            RemoteHashes::WithReads => self.hashes_from_reads().await?,
            RemoteHashes::WithData => match small_hash {
                Some(hash) => Some(vec![hash]),
                // The remote sent the data without its hash: ask for it now.
                None => {
                    let remote = &self.context.remote;
                    let task = delta::remote_hashes_task(remote, &self.item.source, self.layout);
                    delta::join(task).await?
                }
            },
        })
    }

    /// The remote's hashes of every block, from its hashed reads; where some block came
    /// without one (over a borrowed connection without an agent, or read in pieces), the
    /// remote hashes the whole file instead.
    async fn hashes_from_reads(&mut self) -> Result<Option<Vec<BlockHash>>> {
        let read_hashes = std::mem::take(&mut self.read_hashes);
        if read_hashes.len() as u64 == self.layout.block_count() {
            // One hash per block index below the count: every block, in order.
            return Ok(Some(read_hashes.into_values().collect()));
        }
        let remote = &self.context.remote;
        let task = delta::remote_hashes_task(remote, &self.item.source, self.layout);
        delta::join(task).await
    }

    /// A file of one block, in one request (the agent reads it whole): no open, no close.
    /// Returns the remote's hash of the block when it came with the data.
    async fn fetch_small(&mut self) -> Result<Option<BlockHash>> {
        let (context, item) = (self.context, self.item);
        // One byte more than the size, so a file that grew is told from one that did not.
        let asked = u32::try_from(item.size.saturating_add(1)).unwrap_or(u32::MAX);
        let Some(small) = context.remote.read_small(&item.source, asked).await? else {
            self.fetch_large(false, false).await?;
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
        file_writing::write_all_at(&self.file, &data, 0)
            .map_err(|error| Error::local_io(format!("cannot write {}", item.target), error))?;
        context
            .setup
            .reporter
            .bytes_moved(&item.path, data.len() as u64);
        self.blocks.hold(0, hash_block(&data));
        Ok(small.block_hash)
    }

    /// Opens the remote file, fetches the blocks not held, and checks the file ends where its
    /// size said. `synchronous`: write each block durably (see [`Fetch::new`]); `hashed_reads`:
    /// ask for the remote's hash of each read (see [`RemoteHashes::WithReads`]).
    async fn fetch_large(&mut self, synchronous: bool, hashed_reads: bool) -> Result<()> {
        let (context, item) = (self.context, self.item);
        let handle = context.remote.open_read(&item.source).await?;
        // The size was a promise: more bytes past it means the stat lied or the file grew.
        // Asked now, alongside the data, so small files cost no extra round trip.
        let beyond = {
            let remote = context.remote.clone();
            let handle = handle.clone();
            let size = item.size;
            tokio::spawn(async move { remote.read_at(&handle, size, 1).await })
        };
        // A large file also travels over borrowed connections, each with the file open; they
        // join as they come up, while the unit's own connection is already fetching.
        let source = item.source.clone();
        let (arrivals, lanes_task) = borrow_for_file(
            context.setup.lanes.as_ref(),
            &self.layout,
            self.blocks.bytes_needed(),
            move |remote: Arc<R>| {
                let source = source.clone();
                async move { remote.open_read(&source).await }
            },
        );
        let fetched = Fetch::new(self, handle.clone(), arrivals, synchronous, hashed_reads)
            .run()
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

    /// Fails the file when the blocks read disagree with the remote's hashes of them: the
    /// source changed under the transfer. What arrived is kept; the re-run hashes again and
    /// fetches only what differs.
    fn check_block_hashes(&mut self, remote_hashes: Option<&[BlockHash]>) -> Result<()> {
        let Some(hashes) = remote_hashes else {
            return Ok(());
        };
        let differing = self.blocks.count_differing(hashes);
        if differing == 0 {
            return Ok(());
        }
        // Blocks hashed and blocks read disagree: the source changed under the transfer (or
        // the peer sent other bytes than it hashes). What arrived is kept, but the journal no
        // longer vouches for it: the re-run compares every block with the remote's hashes
        // again and fetches only what differs, instead of trusting the journal and failing
        // here forever.
        if let Some(journal) = self.journal.take() {
            journal.remove()?;
        }
        Err(Error::remote(format!(
            "{}: {differing} block(s) differ from the remote's hashes of {}: the source changed during the transfer",
            self.display, self.item.source
        ))
        .with_hint("re-run the same command once the file stops changing")
        .transient(true))
    }

    /// The remote's digest of the whole file, where it can give one and the file is worth it.
    async fn remote_digest(&self) -> Option<RemoteDigest> {
        let item = self.item;
        if !self.context.setup.options.remote_digest || item.size < REMOTE_DIGEST_MIN_SIZE {
            return None;
        }
        let remote = self.context.remote.clone();
        let path = item.source.clone();
        match tokio::spawn(async move { remote.digest(&path).await }).await {
            Ok(Ok(digest)) => digest,
            Ok(Err(error)) => {
                tracing::debug!(%error, "no remote digest for {}", item.source);
                None
            }
            Err(_) => None,
        }
    }

    /// Reads the whole file back against the block hashes held, and against the remote's
    /// whole-file `digest` when there is one.
    async fn read_back(&mut self, digest: Option<RemoteDigest>) -> Result<()> {
        let wanted = WholeFileDigests {
            blake3: matches!(digest, Some(RemoteDigest::Blake3(_))),
            sha256: matches!(digest, Some(RemoteDigest::Sha256(_))),
        };
        let verification = if self.layout.block_count() <= 1 {
            // One block just written, in the page cache: reading it back costs less than
            // handing it to another thread, which a pull of many small files would do once
            // per file.
            verify_file(&self.file, &self.blocks, wanted, &self.display)?
        } else {
            let file = self.file.try_clone().map_err(|error| {
                Error::local_io(format!("cannot reopen {}", self.display), error)
            })?;
            let blocks = self.blocks.clone();
            let display = self.display.clone();
            let task =
                tokio::task::spawn_blocking(move || verify_file(&file, &blocks, wanted, &display));
            finished(task, "a verification").await?
        };
        tracing::debug!(path = %self.item.path, "read back");
        if let Some(&first) = verification.mismatched.first() {
            return Err(Error::new(
                ErrorKind::LocalIo,
                format!(
                    "{}: {} block(s) read back differ from what was written (first at offset {}); the disk or another program changed the file",
                    self.display,
                    verification.mismatched.len(),
                    self.layout.range(first).start
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
            if let Some(journal) = self.journal.take() {
                journal.remove()?;
            }
            return Err(Error::remote(format!(
                "{}: the whole-file digest differs from the remote's {}: the source changed during the transfer",
                self.display, self.item.source
            ))
            .with_hint("re-run the same command; the file will be fetched again")
            .transient(true));
        }
        Ok(())
    }

    /// A file of one block has no journal, so nothing synced it on the way: it waits for a
    /// sync of its filesystem shared with the other small files (see [`GroupSync`]) before the
    /// mode and mtime that mark it done. Larger files were synced before their blocks were
    /// journaled, or written durably.
    ///
    /// [`GroupSync`]: crate::local::GroupSync
    async fn make_durable(&self) -> Result<()> {
        if self.layout.block_count() > 1 || self.item.size == 0 {
            return Ok(());
        }
        self.context
            .setup
            .group_sync
            .sync(&self.file)
            .await
            .map_err(|error| Error::local_io(format!("cannot sync {}", self.display), error))
    }

    /// Verified: the real size, then the mode and mtime that mark the file done, marked for a
    /// check of its content by the next run where the source may change unseen ([`settle`]).
    fn finish(self) -> Result<()> {
        let destination = &self.context.destination;
        destination.set_len(&self.file, &self.relative, self.item.size)?;
        let mut mtime = timestamp(self.item.mtime);
        if settle::pulled_copy_may_be_racy(self.item.mtime, self.read_from) {
            mtime.nanoseconds = settle::RACY_NANOSECONDS;
        }
        destination.set_file_permissions_and_times(
            &self.file,
            &self.relative,
            self.item.mode,
            mtime,
        )?;
        if let Some(journal) = self.journal {
            journal.remove()?;
        }
        Ok(())
    }

    /// Records settled blocks: journals them (they are durable and read back good) and holds
    /// them. A block that read back differently is not recorded (it is fetched again on the
    /// next attempt) and fails the file.
    fn record(&mut self, settled: Settled) -> Result<()> {
        if let Some(journal) = self.journal.as_mut() {
            journal.append(&settled.verified)?;
        }
        self.blocks.hold_all_checked(settled.verified);
        match settled.differing {
            Some(index) => Err(Error::new(
                ErrorKind::LocalIo,
                format!(
                    "{}: the block at offset {} read back differs from what was written; the disk or another program changed the file",
                    self.item.target,
                    self.layout.range(index).start
                ),
            )
            .with_hint("re-run the same command to fetch it again")
            .transient(true)),
            None => Ok(()),
        }
    }

    /// Makes the pending blocks durable (`sync`: by syncing the file), reads them back and
    /// records them on this thread: the hash read back is the one journaled and compared with
    /// the remote's, and must equal the hash of what arrived when that was computed.
    fn commit(&mut self, sync: bool) -> Result<()> {
        if self.blocks.pending().is_empty() {
            return Ok(());
        }
        let pending = self.blocks.take_pending();
        let settled = settle(&self.file, &self.layout, sync, pending, &self.item.target)?;
        self.record(settled)
    }
}

/// The bytes this user may still write on a filesystem.
#[allow(
    clippy::useless_conversion,
    reason = "the block count is u64 on Linux, u32 on macOS"
)]
fn available_bytes(status: &nix::sys::statvfs::Statvfs) -> u64 {
    u64::from(status.blocks_available()).saturating_mul(u64::from(status.fragment_size()))
}

/// Refuses a file the local filesystem has no room for, before anything is written: a clear
/// message now beats "no space left" halfway through (and a lying size costs nothing).
fn ensure_room(file: &File, size: u64, display: &str) -> Result<()> {
    let current = file.metadata().map(|metadata| metadata.len()).unwrap_or(0);
    let Ok(status) = nix::sys::statvfs::fstatvfs(file) else {
        return Ok(());
    };
    let available = available_bytes(&status);
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

/// A finished read: the connection it went over, block index, offset, length asked, data and
/// the remote's hash of it (when asked for and given).
type ReadDone = (usize, u64, u64, u32, Result<(Vec<u8>, Option<BlockHash>)>);

/// A block being assembled from several reads.
struct Assembly {
    data: Vec<u8>,
    filled: usize,
}

/// Fetching the blocks of one file that are not held, with many reads in flight, and writing
/// each whole block in place. Requests are made only as slots free up, so memory does not
/// grow with the file's (claimed) size. Blocks written so far are synced and journaled even
/// when this fails, so a dropped link loses only what was in flight.
struct Fetch<'p, 'a, R: Remote> {
    pull: &'p mut PullFile<'a, R>,
    /// The connections this file is fetched over, with their reads in flight; borrowed ones
    /// (kept alive by their lane) join as they arrive. Each read goes to the least busy one.
    paths: Paths<R>,
    arrivals: Option<Arrivals<R>>,
    /// Reads in flight per connection.
    per_connection: usize,
    /// The largest read the remote serves.
    chunk: u64,
    /// Where to look for the next block not held.
    next_block: u64,
    /// Reads to make; short reads put their remainders here, ahead of new blocks.
    requests: VecDeque<(u64, u64, u32)>,
    in_flight: JoinSet<ReadDone>,
    assemblies: HashMap<u64, Assembly>,
    /// Buffers of finished blocks, reused for the next assemblies.
    spare: Vec<Vec<u8>>,
    /// The batch being synced and read back in the background, at most one.
    settling: Option<tokio::task::JoinHandle<Result<Settled>>>,
    durable: Option<DurableWrites>,
    /// Whether the file is synced before its blocks are journaled.
    sync: bool,
    /// Whether the remote hashes blocks: its hashes are then the reference for what arrived.
    remote_hashes_blocks: bool,
    /// Whether reads ask for the remote's hash of what they read (see
    /// [`RemoteHashes::WithReads`]).
    hashed_reads: bool,
    /// After the first failure no new reads go out, but replies that already arrived are
    /// still written: on a dropped link that is everything the server managed to send.
    first_error: Option<Error>,
}

impl<'p, 'a, R: Remote> Fetch<'p, 'a, R> {
    /// `synchronous`: a few blocks into a file that held data already (a delta): each is
    /// written through a descriptor opened with O_DSYNC, durable when its write returns, so no
    /// fdatasync writes back what another program left dirty in the file (the old copy just
    /// made, say) on this transfer's clock. Bulk writes stay buffered and are synced every
    /// [`SYNC_INTERVAL`].
    fn new(
        pull: &'p mut PullFile<'a, R>,
        handle: R::File,
        arrivals: Option<Arrivals<R>>,
        synchronous: bool,
        hashed_reads: bool,
    ) -> Self {
        let context = pull.context;
        let chunk = u64::from(context.remote.max_io_size());
        let durable = if synchronous {
            synchronous_writer(&pull.file).map(DurableWrites::new)
        } else {
            None
        };
        Fetch {
            paths: Paths::new(context.remote.clone(), handle),
            arrivals,
            per_connection: context.setup.options.requests_for(chunk as u32),
            chunk,
            next_block: 0,
            requests: VecDeque::new(),
            in_flight: JoinSet::new(),
            assemblies: HashMap::new(),
            spare: Vec::new(),
            settling: None,
            sync: pull.journal.is_some() && durable.is_none(),
            durable,
            remote_hashes_blocks: context.remote.hashes_blocks(),
            hashed_reads,
            first_error: None,
            pull,
        }
    }

    /// Fetches, then keeps every whole block written so far, whatever happened.
    async fn run(mut self) -> Result<()> {
        let outcome = self.exchange().await;
        self.in_flight.abort_all();
        close_late(self.arrivals.take()).await;
        self.paths.close_borrowed().await;
        // Every durable write still running is waited for: what it wrote is committed below.
        let written = self.finish_durable_writes().await;
        let background = match self.settling.take() {
            Some(task) => finished(task, "a sync")
                .await
                .and_then(|settled| self.pull.record(settled)),
            None => Ok(()),
        };
        let committed = self.pull.commit(self.sync);
        outcome.and(written).and(background).and(committed)
    }

    /// Reads go out as slots free up; each reply is written once its block is whole.
    async fn exchange(&mut self) -> Result<()> {
        loop {
            self.send_reads().await;
            if self.in_flight.is_empty() {
                break;
            }
            let joined = tokio::select! {
                joined = self.in_flight.join_next() => joined,
                (lane, opened) = next_arrival(&mut self.arrivals) => {
                    if self.first_error.is_none() {
                        self.paths.join(lane, opened);
                    } else {
                        let _ = lane.remote.close(opened).await;
                    }
                    continue;
                }
            };
            let Some(joined) = joined else { break };
            let (lane, index, offset, length, result) =
                joined.map_err(|error| Error::internal(format!("a read task failed: {error}")))?;
            self.paths.answered(lane);
            match result {
                Ok((data, hash)) => self.arrived(index, offset, length, data, hash).await?,
                Err(error) => {
                    self.first_error.get_or_insert(error);
                }
            }
            self.settle_if_due().await?;
        }
        match self.first_error.take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Sends reads while a connection has room and there is something to read.
    async fn send_reads(&mut self) {
        let context = self.pull.context;
        while self.first_error.is_none() {
            let Some(lane) = self.paths.least_busy(self.per_connection) else {
                break;
            };
            if self.requests.is_empty() && !self.queue_next_block() {
                break;
            }
            let Some((index, offset, length)) = self.requests.pop_front() else {
                break;
            };
            let Some((remote, handle, permit)) = self.paths.request(lane, &context.requests).await
            else {
                break;
            };
            let hashed = self.hashed_reads;
            self.in_flight.spawn(async move {
                let result = if hashed {
                    remote.read_at_hashed(&handle, offset, length).await
                } else {
                    read_unhashed(&*remote, &handle, offset, length).await
                };
                drop(permit);
                (lane, index, offset, length, result)
            });
        }
    }

    /// Queues the reads of the next block not held: the whole block, or only its pieces that
    /// differ from the local bytes. False when every block has been asked for.
    fn queue_next_block(&mut self) -> bool {
        let Some(index) = self.pull.blocks.next_missing(self.next_block) else {
            self.next_block = self.pull.layout.block_count();
            return false;
        };
        for range in self.pull.blocks.ranges_to_move(index) {
            let mut offset = range.start;
            while offset < range.end {
                let length = self.chunk.min(range.end - offset) as u32;
                self.requests.push_back((index, offset, length));
                offset += u64::from(length);
            }
        }
        self.next_block = index + 1;
        true
    }

    /// A read of `length` bytes at `offset` of block `index` returned `data`, and the remote's
    /// `hash` of it when asked for.
    async fn arrived(
        &mut self,
        index: u64,
        offset: u64,
        length: u32,
        data: Vec<u8>,
        hash: Option<BlockHash>,
    ) -> Result<()> {
        let (context, item) = (self.pull.context, self.pull.item);
        if data.is_empty() {
            return Err(Error::remote(format!(
                "{} {}: the file ends before byte {offset}, short of the {} bytes its size said (it shrank while being read?)",
                context.remote.label(),
                item.source,
                item.size
            ))
            .with_hint("re-run the same command once the file stops changing"));
        }
        let range = self.pull.layout.range(index);
        // A read that is the whole block (the agent's reads are) is the block itself: no
        // assembly buffer and no copy.
        let whole_read = offset == range.start
            && data.len() as u64 == range.end - range.start
            && self.pull.blocks.pieces_of(index).is_none()
            && !self.assemblies.contains_key(&index);
        if whole_read {
            if let Some(hash) = hash {
                // The hash of exactly the block's bytes: the reference for what arrived.
                self.pull.read_hashes.insert(index, hash);
            }
            context
                .setup
                .reporter
                .bytes_moved(&item.path, data.len() as u64);
            let block = Block {
                index,
                data,
                pieces: None,
            };
            // The read's own buffer: not kept for assemblies.
            return self.put_block(block, false).await;
        }
        self.assemble(index, offset, length, data).await
    }

    /// Adds a read's `data` to its block's assembly; writes the block once it is whole.
    async fn assemble(
        &mut self,
        index: u64,
        offset: u64,
        length: u32,
        data: Vec<u8>,
    ) -> Result<()> {
        let (context, item) = (self.pull.context, self.pull.item);
        let range = self.pull.layout.range(index);
        if !self.assemblies.contains_key(&index) {
            let assembly = self.start_assembly(index)?;
            self.assemblies.insert(index, assembly);
        }
        let Some(assembly) = self.assemblies.get_mut(&index) else {
            return Ok(());
        };
        let start = (offset - range.start) as usize;
        let Some(slot) = assembly.data.get_mut(start..start + data.len()) else {
            return Err(Error::remote(format!(
                "{} {}: a read returned more than was asked",
                context.remote.label(),
                item.source
            )));
        };
        slot.copy_from_slice(&data);
        assembly.filled += data.len();
        context
            .setup
            .reporter
            .bytes_moved(&item.path, data.len() as u64);
        if (data.len() as u32) < length {
            // A short read is legal; ask for the rest.
            let done = data.len() as u64;
            self.requests
                .push_front((index, offset + done, length - done as u32));
        }
        if assembly.filled < assembly.data.len() {
            return Ok(());
        }
        let Some(assembly) = self.assemblies.remove(&index) else {
            return Ok(());
        };
        let block = Block {
            index,
            data: assembly.data,
            pieces: self.pull.blocks.pieces_of(index).map(<[_]>::to_vec),
        };
        self.put_block(block, true).await
    }

    /// A buffer for block `index`, reusing a finished block's (no allocation or zeroing per
    /// block).
    fn start_assembly(&mut self, index: u64) -> Result<Assembly> {
        let range = self.pull.layout.range(index);
        let mut data = self.spare.pop().unwrap_or_default();
        data.resize((range.end - range.start) as usize, 0);
        let mut filled = 0;
        if let Some(ranges) = self.pull.blocks.pieces_of(index) {
            // Only some pieces travel: the rest of the block is the local bytes, which only
            // the hash of what arrived needs (with an agent the remote's block hash is the
            // reference, and they are not read).
            if !self.remote_hashes_blocks {
                self.pull
                    .file
                    .read_exact_at(&mut data, range.start)
                    .map_err(|error| {
                        Error::local_io(format!("cannot read {}", self.pull.item.target), error)
                    })?;
            }
            filled = data.len().saturating_sub(covered(ranges) as usize);
        }
        Ok(Assembly { data, filled })
    }

    /// Writes a finished block: through the durable writer when the file's writes go there,
    /// else in place now; queues it to be synced and journaled once written. `keep_buffer`:
    /// its buffer then goes back to the spare ones, for the next assembly.
    async fn put_block(&mut self, block: Block, keep_buffer: bool) -> Result<()> {
        let (target, layout) = (&self.pull.item.target, self.pull.layout);
        let Some(durable) = self.durable.as_mut() else {
            let (hash, bytes) = write_block(
                &self.pull.file,
                target,
                &layout,
                &block,
                self.remote_hashes_blocks,
                false,
            )?;
            self.pull.blocks.queue(block.index, hash, bytes);
            if keep_buffer {
                self.spare.push(block.data);
            }
            return Ok(());
        };
        durable.start(
            target,
            layout,
            block,
            self.remote_hashes_blocks,
            keep_buffer,
        );
        // Waits for earlier writes while too many are running.
        while let Some(durable) = self.durable.as_mut().filter(|durable| durable.is_full()) {
            if let Some(done) = durable.running.join_next().await {
                self.durable_write_ended(done)?;
            }
        }
        Ok(())
    }

    /// A durable write ended: its block is queued when it succeeded, and its buffer kept when
    /// it was asked to be.
    fn durable_write_ended(
        &mut self,
        done: std::result::Result<DurableWrite, tokio::task::JoinError>,
    ) -> Result<()> {
        let (block, keep, result) = done.map_err(write_task_failed)?;
        let (hash, bytes) = result?;
        self.pull.blocks.queue(block.index, hash, bytes);
        if keep {
            self.spare.push(block.data);
        }
        Ok(())
    }

    /// Waits for every durable write still running: what it wrote is committed afterwards.
    /// Returns the first failure.
    async fn finish_durable_writes(&mut self) -> Result<()> {
        let mut first_error = None;
        while let Some(done) = match self.durable.as_mut() {
            Some(durable) => durable.running.join_next().await,
            None => None,
        } {
            if let Err(error) = self.durable_write_ended(done) {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Every [`SYNC_INTERVAL`] of blocks written: their sync and read-back run on another
    /// thread while more arrive; the previous batch is recorded first (it is done by now
    /// unless the disk is slower than the link).
    async fn settle_if_due(&mut self) -> Result<()> {
        if self.pull.blocks.pending_bytes() < SYNC_INTERVAL {
            return Ok(());
        }
        if let Some(task) = self.settling.take() {
            let settled = finished(task, "a sync").await?;
            self.pull.record(settled)?;
        }
        let pending = self.pull.blocks.take_pending();
        let task = settle_in_background(
            &self.pull.file,
            self.pull.layout,
            self.sync,
            pending,
            self.pull.item,
        )?;
        self.settling = Some(task);
        Ok(())
    }
}

/// A second descriptor of `file` whose writes are durable when they return (O_DSYNC), opened
/// through /proc/self/fd (the same file, whatever its name now); None where that is not
/// possible, and the caller syncs as usual.
#[cfg(target_os = "linux")]
fn synchronous_writer(file: &File) -> Option<File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_DSYNC.bits())
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .ok()
}

/// Elsewhere there is no reopening a descriptor with other flags: macOS's /dev/fd/N only
/// duplicates it, O_DSYNC ignored. The caller then syncs as usual.
#[cfg(not(target_os = "linux"))]
fn synchronous_writer(_file: &File) -> Option<File> {
    None
}

/// Blocks synced and read back, waiting to be recorded.
struct Settled {
    /// Blocks whose bytes on disk hash as expected, with that hash.
    verified: Vec<(u64, BlockHash)>,
    /// The first block that read back differently.
    differing: Option<u64>,
}

/// Syncs `file` (when its blocks are journaled) and reads back the blocks `unsynced`: what
/// [`PullFile::commit`] does before it records, on the calling thread.
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

/// A whole block to write: the data of its whole range, of which only `pieces` (when given)
/// arrived; the rest is the local bytes, on disk already.
struct Block {
    index: u64,
    data: Vec<u8>,
    pieces: Option<Vec<Range<u64>>>,
}

/// Writes a finished block in place. Returns what [`PullFile::commit`] checks its read-back against
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

/// Durable writes running at once, each holding its block's buffer. Each O_DSYNC write waits
/// for its data and a disk cache flush (and on a journaling filesystem a journal commit);
/// writes waiting together share them, where one after another would pay for each in turn.
const DURABLE_WRITES_IN_FLIGHT: usize = 16;

/// Blocks written through a descriptor opened with O_DSYNC (see [`synchronous_writer`]),
/// several at once on the blocking pool. A block is queued to be journaled once its write has
/// returned, that is once it is durable.
struct DurableWrites {
    writer: Arc<File>,
    running: JoinSet<DurableWrite>,
}

/// A durable write that ended: its block, whether to keep the block's buffer, and
/// [`write_block`]'s answer.
type DurableWrite = (Block, bool, Result<(Option<BlockHash>, u64)>);

impl DurableWrites {
    fn new(writer: File) -> Self {
        DurableWrites {
            writer: Arc::new(writer),
            running: JoinSet::new(),
        }
    }

    /// Starts writing `block`; `keep`: its buffer is wanted back once written.
    fn start(
        &mut self,
        target: &str,
        layout: BlockLayout,
        block: Block,
        remote_hashes_blocks: bool,
        keep: bool,
    ) {
        let writer = self.writer.clone();
        let target = target.to_string();
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
    }

    /// Whether as many writes are running as may.
    fn is_full(&self) -> bool {
        self.running.len() >= DURABLE_WRITES_IN_FLIGHT
    }
}

fn write_task_failed(error: tokio::task::JoinError) -> Error {
    Error::internal(format!("a write task failed: {error}"))
}
