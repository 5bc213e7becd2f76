//! Executing a push plan: local data onto the remote, in place, resumably.
//!
//! The mirror of `pull`: remote directories are made before any write, files are sent several
//! at a time with many offset writes in flight (a large file's also over borrowed connections,
//! see [`crate::engine::lanes`]); blocks the server acknowledged are journaled
//! locally every [`JOURNAL_INTERVAL`] and whenever the link fails, and the remote file is
//! synced while it travels (with an agent back to back, see `WRITEBACK_STEP`; over SFTP
//! every [`SYNC_INTERVAL`], fsync@openssh.com) and at the end.
//! On a re-run, a journaled block is trusted only if the local bytes still hash to what was
//! sent and the remote file still has the size xfer gave it; where the remote can hash
//! (b3sum or sha256sum over exec), every finished file is checked end to end, and a mismatch
//! throws the journal away so the next run sends everything again.

use crate::blocks::delta::covered;
use crate::blocks::{BlockHash, BlockLayout, BlockSet, DEFAULT_BLOCK_SIZE, hash_block};
use crate::engine::delta;
use crate::engine::job::{self, Context, FileTotals, Setup, Side};
use crate::engine::lanes::{Arrivals, Paths, borrow_for_file, close_late, next_arrival};
use crate::engine::plan::{Action, Direction, Plan, PlanItem};
use crate::engine::settle;
use crate::engine::shared_source::{REMEMBERED_HASHES_MIN_SIZE, SourceReader};
use crate::engine::state::{JournalFile, open_journal};
use crate::engine::verify::{
    Verification, WholeFileDigests, buffer_size, still_matching, verify_file,
};
use crate::engine::{JOURNAL_INTERVAL, REMOTE_DIGEST_MIN_SIZE, SYNC_INTERVAL, Summary, finished};
use crate::error::{Error, ErrorKind, Result};
use crate::local::FileIdentity;
use crate::progress::Reporter;
use crate::remote::{EntryKind, Remote, RemoteDigest, SetAttributes, SmallPut};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::task::JoinSet;

/// Executes `plan` over `remote`: see [`job`] for the phases.
pub async fn execute<R: Remote>(remote: Arc<R>, plan: &Plan, setup: Setup<R>) -> Summary {
    let context = Arc::new(Context::new(remote, (), setup));
    job::execute(context, plan).await
}

/// A push writes the remote.
impl<R: Remote> Side for Context<R> {
    fn reporter(&self) -> &Arc<dyn Reporter> {
        &self.setup.reporter
    }

    fn files_in_flight(&self) -> usize {
        self.setup.options.files_in_flight
    }

    /// Every parent of the destination first (mkdir -p), so no write meets a missing directory.
    async fn prepare(&self, plan: &Plan) -> Result<()> {
        let Some(first) = plan.items.first() else {
            return Ok(());
        };
        let parent = match first.target.rsplit_once('/') {
            Some((parent, _)) => parent,
            None => "",
        };
        make_parents(&*self.remote, parent).await
    }

    async fn make_directory(&self, item: &PlanItem) -> Result<()> {
        match item.action {
            Action::UpToDate => Ok(()),
            // Something else is in the way.
            Action::Update { .. } => {
                self.remote.remove_file(&item.target).await?;
                self.remote
                    .make_directory(&item.target, item.mode | 0o700)
                    .await
            }
            _ => {
                self.remote
                    .make_directory(&item.target, item.mode | 0o700)
                    .await
            }
        }
    }

    async fn transfer_file(self: Arc<Self>, item: PlanItem) -> Result<FileTotals> {
        push_file(&self, &item).await
    }

    async fn make_symlink(&self, item: &PlanItem) -> Result<()> {
        let target = item.link_target.as_deref().unwrap_or_default();
        self.remote.make_symlink(&item.target, target).await?;
        // The link's own mtime, as a pull keeps it and rsync -a compares it. A server that
        // cannot set a link's times without following it (SFTP without lsetstat) leaves it.
        let mtime = SetAttributes {
            mtime: Some(item.mtime),
            ..SetAttributes::default()
        };
        if let Err(error) = self.remote.set_attributes(&item.target, mtime).await {
            tracing::debug!(path = %item.path, %error, "the link's mtime was not set");
        }
        Ok(())
    }

    async fn finish_directory(&self, item: &PlanItem) -> Result<()> {
        let attributes = SetAttributes {
            size: None,
            mode: Some(item.mode),
            mtime: Some(item.mtime),
        };
        self.remote.set_attributes(&item.target, attributes).await
    }
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

/// Transfers one file; returns what moved.
async fn push_file<R: Remote>(context: &Context<R>, item: &PlanItem) -> Result<FileTotals> {
    if item.action == Action::Create
        && item.size <= u64::from(DEFAULT_BLOCK_SIZE)
        && context.remote.puts_small()
    {
        return put_small(context, item).await;
    }
    let (mut push, recorded) = PushFile::open(context, item)?;
    let remote_task = push.look_at_remote(recorded).await?;
    push.find_delta(remote_task).await?;
    let reused = item.size.saturating_sub(push.blocks.bytes_needed());
    let needed: Vec<u64> = push.blocks.missing().collect();
    let pieces = push.blocks.blocks_in_pieces();
    tracing::debug!(path = %item.path, reused, pieces, "delta");
    context
        .setup
        .reporter
        .file_started(&item.path, item.size, reused);

    let handle = push.open_remote().await?;
    if let Err(error) = push.send(&handle, needed).await {
        let _ = context.remote.close(handle).await;
        return Err(error);
    }
    tracing::debug!(path = %item.path, "sent");
    let finished = push.check_and_finish(&handle).await;
    let closed = context.remote.close(handle).await;
    finished?;
    closed?;
    Ok(FileTotals {
        moved: item.size - reused,
        reused,
    })
}

/// The error for a source whose bytes changed while they were being sent.
fn changed_while_sent(item: &PlanItem) -> Error {
    Error::new(
        ErrorKind::LocalIo,
        format!("{} changed while it was being sent", item.source),
    )
    .with_hint("re-run the same command once the file stops changing")
    .transient(true)
}

/// Waits until the source may give its copy its mtime ([`settle`]), then checks that it is
/// still what was read, through the handle the bytes were read from.
async fn settle_source(file: &File, opened: FileIdentity, item: &PlanItem) -> Result<()> {
    let wait = settle::wait_before_settled(item.mtime, SystemTime::now());
    if wait.is_zero() {
        return Ok(());
    }
    tracing::debug!(path = %item.path, ?wait, "written in this second: waiting for the next");
    tokio::time::sleep(wait).await;
    if FileIdentity::of_file(file) != Some(opened) {
        return Err(changed_while_sent(item));
    }
    Ok(())
}

/// A new file of one block, whole in one request ([`Remote::put_small`]): read and hashed
/// here, unchanged from its open to the end of the read; written, synced with the other files
/// being written, checked against the hash and given its mode and mtime there. Where a push
/// of many small files took eight requests for each, it takes one.
async fn put_small<R: Remote>(context: &Context<R>, item: &PlanItem) -> Result<FileTotals> {
    let (file, opened) = open_source(item)?;
    // open_source checked the size against the plan, and the plan bounds it by one block.
    let mut data = vec![0; usize::try_from(item.size).unwrap_or(0)];
    file.read_exact_at(&mut data, 0)
        .map_err(|error| Error::local_io(format!("cannot read {}", item.source), error))?;
    if FileIdentity::of_file(&file) != Some(opened) {
        return Err(changed_while_sent(item));
    }
    // The request gives the copy its mtime too.
    settle_source(&file, opened, item).await?;
    let reporter = &context.setup.reporter;
    reporter.file_started(&item.path, item.size, 0);
    let put = SmallPut {
        hash: hash_block(&data),
        data,
        mode: item.mode,
        mtime: item.mtime,
    };
    context.remote.put_small(&item.target, put).await?;
    reporter.bytes_moved(&item.path, item.size);
    Ok(FileTotals {
        moved: item.size,
        reused: 0,
    })
}

/// One file being pushed: the local source, its journal, and what is known of its blocks
/// (held: the remote has them; checked: the local bytes were read and found good in this run;
/// confirmed: the remote hashed them in this run and agreed).
struct PushFile<'a, R: Remote> {
    context: &'a Context<R>,
    item: &'a PlanItem,
    layout: BlockLayout,
    file: File,
    /// The source's identity when it was opened: the same at the end, the bytes are too.
    opened: FileIdentity,
    /// None for a file of one block or less: nothing to resume inside it.
    journal: Option<JournalFile>,
    blocks: BlockSet,
    /// Local block hashes computed earlier in this run: while connecting, if this is the file
    /// they are of, then by the delta. The blocks sent are not hashed again as they are read
    /// (the read-back check still reads them, so a file that changes meanwhile is caught).
    known: BTreeMap<u64, BlockHash>,
}

/// The remote's hashes of the data its copy holds, being computed, and that data's length.
type RemoteCopy = (u64, delta::RemoteTask);

impl<'a, R: Remote> PushFile<'a, R> {
    /// Opens the source and the journal; returns the blocks the journal records.
    fn open(
        context: &'a Context<R>,
        item: &'a PlanItem,
    ) -> Result<(Self, BTreeMap<u64, BlockHash>)> {
        let (file, opened) = open_source(item)?;
        let layout = BlockLayout::new(item.size, DEFAULT_BLOCK_SIZE)
            .map_err(|error| Error::new(ErrorKind::LocalIo, format!("{}: {error}", item.source)))?;
        let (journal, recorded) = open_journal(
            &context.setup.state,
            Direction::Push,
            &context.setup.endpoints,
            item,
            &layout,
        )?;
        let push = PushFile {
            context,
            item,
            layout,
            file,
            opened,
            journal,
            blocks: BlockSet::new(layout),
            known: BTreeMap::new(),
        };
        Ok((push, recorded))
    }

    /// Looks at what the remote holds: the journal's `recorded` blocks are trusted only if the
    /// remote file still has the size this transfer gave it and the local bytes still hash to
    /// what was sent. Anything but a file in the way is removed. With an agent and data there
    /// already, starts the remote hashing it, returned.
    async fn look_at_remote(
        &mut self,
        recorded: BTreeMap<u64, BlockHash>,
    ) -> Result<Option<RemoteCopy>> {
        let (remote, item, layout) = (&self.context.remote, self.item, self.layout);
        let existing = remote.stat(&item.target, false).await?;
        let existing_data = existing
            .as_ref()
            .filter(|entry| entry.kind == EntryKind::File && entry.size > 0)
            .map(|entry| entry.size);
        // With an agent and data there already, the remote starts hashing it now: that finds
        // the delta, and checks the journal's blocks end to end.
        let remote_task = existing_data
            .filter(|_| remote.hashes_blocks())
            .map(|size| {
                (
                    size,
                    delta::remote_hashes_task(remote, &item.target, layout),
                )
            });
        // The early hashes are waited for only where they are compared, a delta or a
        // journal; a file sent whole starts at once with the blocks hashed so far, and the
        // hashing stops.
        self.known = match &self.context.setup.early {
            Some(early) if existing_data.is_some() || !recorded.is_empty() => {
                early.for_file(&self.file, &layout).await
            }
            Some(early) => early.for_file_so_far(&self.file, &layout).await,
            None => BTreeMap::new(),
        };
        let remote_intact = existing.as_ref().is_some_and(|entry| {
            entry.kind == EntryKind::File
                && entry.size == crate::engine::plan::size_while_incomplete(item.size)
        });
        if remote_intact && !recorded.is_empty() {
            self.hash_once(recorded.keys().copied().collect()).await?;
            // Their local bytes were just read (or hashed early): not read back again.
            let matching = still_matching(&self.file, &layout, recorded, &self.known);
            self.blocks.hold_all_checked(matching);
        }
        if existing
            .as_ref()
            .is_some_and(|entry| entry.kind != EntryKind::File)
        {
            remote.remove_file(&item.target).await?;
        }
        Ok(remote_task)
    }

    /// The delta: an agent hashes the blocks the remote file already holds, whatever wrote
    /// them; those equal to the local blocks do not travel, nor do the equal pieces of the
    /// others. The journal's blocks are checked end to end too: one the remote no longer holds
    /// travels again.
    async fn find_delta(&mut self, remote_copy: Option<RemoteCopy>) -> Result<()> {
        let Some((existing_size, remote_task)) = remote_copy else {
            return Ok(());
        };
        let layout = self.layout;
        let candidates: Vec<u64> = self
            .blocks
            .missing()
            .filter(|&index| layout.range(index).end <= existing_size)
            .collect();
        self.hash_once(candidates.clone()).await?;
        let found = delta::compare(
            &self.context.remote,
            &self.item.target,
            &self.file,
            layout,
            candidates,
            &self.known,
            remote_task,
        )
        .await?;
        let Some(found) = found else {
            return Ok(());
        };
        self.blocks.retain_held(|index, hash| {
            usize::try_from(index)
                .ok()
                .and_then(|at| found.remote_hashes.get(at))
                == Some(hash)
        });
        self.blocks.hold_all_checked(found.same);
        // Every block held now was compared with the remote's hash of it.
        self.blocks.confirm_held();
        self.blocks.set_pieces(found.pieces);
        self.known.extend(found.local);
        Ok(())
    }

    /// Pushed to several hosts, a large file's blocks `wanted` are hashed once for all of
    /// them: under the file's hash memory, this host hashes those no host hashed yet, and
    /// takes the others' from it. Alone, nothing happens here: the comparison hashes what it
    /// needs.
    async fn hash_once(&mut self, wanted: Vec<u64>) -> Result<()> {
        let Some(host) = self
            .context
            .setup
            .shared_source
            .as_ref()
            .filter(|_| self.item.size >= REMEMBERED_HASHES_MIN_SIZE)
        else {
            return Ok(());
        };
        let memory = host.hash_memory(self.opened);
        let mut remembered = memory.lock().await;
        let missing: Vec<u64> = wanted
            .iter()
            .copied()
            .filter(|index| !remembered.contains_key(index) && !self.known.contains_key(index))
            .collect();
        let hashed = delta::hash_on_thread(&self.file, self.layout, missing).await?;
        remembered.extend(hashed);
        for index in wanted {
            if let Some(hash) = remembered.get(&index) {
                self.known.insert(index, *hash);
            } else if let Some(hash) = self.known.get(&index) {
                remembered.insert(index, *hash);
            }
        }
        Ok(())
    }

    /// Opens the remote file for writing and gives it its size while incomplete. Every
    /// attribute is then set through this handle, never by the name: on a shared host another
    /// account may swap the name for a symlink to one of the user's other files between two
    /// steps, and a change by name would land there.
    async fn open_remote(&self) -> Result<R::File> {
        let remote = &self.context.remote;
        let handle = remote.open_write(&self.item.target).await?;
        let sized = remote
            .set_file_attributes(
                &handle,
                // One byte long until verified (see plan::size_while_incomplete).
                SetAttributes {
                    size: Some(crate::engine::plan::size_while_incomplete(self.item.size)),
                    ..SetAttributes::default()
                },
            )
            .await;
        if let Err(error) = sized {
            let _ = remote.close(handle).await;
            return Err(error);
        }
        Ok(handle)
    }

    /// Sends the `needed` blocks through `handle` (and borrowed connections), then syncs the
    /// remote file.
    async fn send(&mut self, handle: &R::File, needed: Vec<u64>) -> Result<()> {
        let context = self.context;
        // A large file also travels over borrowed connections, each with the file open for
        // writing (it exists now, with its size set); they join as they come up.
        let target = self.item.target.clone();
        let (arrivals, lanes_task) = borrow_for_file(
            context.setup.lanes.as_ref(),
            &self.layout,
            self.blocks.bytes_needed(),
            move |remote: Arc<R>| {
                let target = target.clone();
                async move { remote.open_write(&target).await }
            },
        );
        let sent = Sending::new(self, handle.clone(), arrivals, needed)
            .run()
            .await;
        if let Some(task) = lanes_task {
            task.abort();
        }
        // Blocks the remote hashed as they landed, equal to what was sent.
        for (index, hash) in sent? {
            self.blocks.confirm(index, &hash);
        }
        // A file of one block is one of many small ones, as often as not: a flush of the
        // remote disk for each would be most of their time, so they share syncs there.
        if self.layout.block_count() <= 1 {
            context.remote.sync_grouped(handle).await
        } else {
            context.remote.sync(handle).await
        }
    }

    /// Journals the acknowledged blocks and holds them (a local append and sync; the remote is
    /// not involved).
    fn record(&mut self) -> Result<()> {
        if self.blocks.pending().is_empty() {
            return Ok(());
        }
        if let Some(journal) = self.journal.as_mut() {
            journal.append(&self.blocks.pending_hashes())?;
        }
        self.blocks.hold_pending();
        Ok(())
    }

    /// Once every block is written and synced: the real size, the end-to-end check of what
    /// the remote holds against the source, then mode and mtime, each through the open handle.
    /// A check that fails throws the journal away, so the next run sends everything again.
    async fn check_and_finish(&mut self, handle: &R::File) -> Result<()> {
        let (remote, item) = (&self.context.remote, self.item);
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
        // Which digest the remote will give is not known until it answers, so both are
        // computed locally when one is wanted (on a second core, overlapping the block check).
        let want_digest = self.wants_digest();
        let wanted = WholeFileDigests {
            blake3: want_digest,
            sha256: want_digest,
        };
        let unconfirmed: Vec<u64> = self.blocks.unconfirmed().collect();
        let (remote_check, verification) =
            tokio::join!(self.remote_check(&unconfirmed), self.local_check(wanted));
        tracing::debug!(path = %item.path, "checked");
        let verification = verification?;
        if !verification.mismatched.is_empty() {
            self.discard_journal()?;
            return Err(changed_while_sent(item));
        }
        let agrees = match remote_check? {
            Some(RemoteCheck::Digest(RemoteDigest::Blake3(remote))) => {
                Some(remote) == verification.blake3
            }
            Some(RemoteCheck::Digest(RemoteDigest::Sha256(remote))) => {
                Some(remote) == verification.sha256
            }
            Some(RemoteCheck::Blocks(hashes)) => unconfirmed.iter().all(|index| {
                hashes.contains_key(index) && hashes.get(index) == self.blocks.hash_of(*index)
            }),
            None => true,
        };
        if !agrees {
            self.discard_journal()?;
            return Err(Error::remote(format!(
                "{}: {}: the remote copy's digest differs from the local file's",
                remote.label(),
                item.target
            ))
            .with_hint("re-run the same command; the file will be sent again")
            .transient(true));
        }
        settle_source(&self.file, self.opened, item).await?;
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
        self.discard_journal()
    }

    fn discard_journal(&mut self) -> Result<()> {
        match self.journal.take() {
            Some(journal) => journal.remove(),
            None => Ok(()),
        }
    }

    /// Whether the remote digests the whole file: where it cannot hash blocks, a tool for it
    /// is allowed, and the file is worth the exec.
    fn wants_digest(&self) -> bool {
        !self.context.remote.hashes_blocks()
            && self.context.setup.options.remote_digest
            && self.item.size >= REMOTE_DIGEST_MIN_SIZE
    }

    /// What the remote says it holds: with an agent, its hashes of the `unconfirmed` blocks
    /// (compared with what was sent); otherwise a whole-file digest where it is wanted.
    async fn remote_check(&self, unconfirmed: &[u64]) -> Result<Option<RemoteCheck>> {
        let (remote, target) = (&self.context.remote, &self.item.target);
        if remote.hashes_blocks() {
            return delta::remote_hashes_of(remote, target, &self.layout, unconfirmed)
                .await
                .map(|hashes| hashes.map(RemoteCheck::Blocks));
        }
        if self.wants_digest() {
            return Ok(remote
                .digest(target)
                .await
                .unwrap_or(None)
                .map(RemoteCheck::Digest));
        }
        Ok(None)
    }

    /// Reads the source back against the block hashes held, and computes the whole-file
    /// digests `wanted`. Every held hash is of bytes read from this file since it was opened
    /// (as they were sent, by the early hashing, or from a journal's blocks), and the remote
    /// checks what it holds against them. Reading the whole source again would only tell
    /// whether it changed meanwhile, which its identity tells without reading (a second pass
    /// of reads and hashing, most of the time after the last byte was sent). It is read again
    /// when the identity changed, to name the blocks that differ, or for a whole-file digest.
    async fn local_check(&self, wanted: WholeFileDigests) -> Result<Verification> {
        let unchanged = !wanted.blake3
            && !wanted.sha256
            && FileIdentity::of_file(&self.file) == Some(self.opened);
        if unchanged {
            return Ok(Verification::default());
        }
        let source = self.item.source.clone();
        let file = self
            .file
            .try_clone()
            .map_err(|error| Error::local_io(format!("cannot reopen {source}"), error))?;
        let blocks = self.blocks.clone();
        finished(
            tokio::task::spawn_blocking(move || verify_file(&file, &blocks, wanted, &source)),
            "a verification",
        )
        .await
    }
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

/// With an agent, a remote sync starts once this many bytes were acknowledged since the last
/// one started and that one has finished: syncs follow each other as fast as the remote disk
/// takes them, so the disk writes the file while it travels and the sync that ends the file
/// finds little left to write. A host with memory to spare writes nothing back by itself: with
/// no sync until the end, that last sync writes the whole file while the transfer waits, and
/// syncs as far apart as [`SYNC_INTERVAL`] make the writes wait for the disk in bursts. Small
/// steps back to back avoid both; how small matters little.
const WRITEBACK_STEP: u64 = 4 << 20;

/// Block checks in flight while sending: the remote hashes a block as soon as all its writes
/// are acknowledged, so the end-to-end check overlaps the transfer instead of following it.
const CHECKS_IN_FLIGHT: usize = 16;

/// A finished write: the connection it went over, block index, bytes written, outcome.
type WriteDone = (usize, u64, u64, Result<()>);

/// A block whose writes are in flight.
struct Outstanding {
    hash: BlockHash,
    /// Bytes not yet acknowledged.
    unacknowledged: u64,
    /// Bytes it sends (all of it, or its differing pieces).
    travels: u64,
}

/// Sending the needed blocks of one file with many writes in flight. Blocks acknowledged so
/// far are synced on the remote and journaled even when this fails. Where the remote hashes
/// blocks, it checks each block as it lands (never the last block: the file is one byte longer
/// until it is verified); the others are checked afterwards.
struct Sending<'p, 'a, R: Remote> {
    push: &'p mut PushFile<'a, R>,
    /// The unit's own handle of the remote file, which syncs it.
    handle: R::File,
    /// The connections the file goes over, with their writes in flight: its unit's own, then
    /// borrowed ones (kept alive by their lane) as they arrive. Each write goes to the least
    /// busy one.
    paths: Paths<R>,
    arrivals: Option<Arrivals<R>>,
    /// Writes in flight per connection.
    per_connection: usize,
    /// The largest write the remote takes.
    chunk: u64,
    /// Blocks not read yet, in order.
    waiting: VecDeque<u64>,
    /// Writes of the blocks read, waiting for a slot.
    requests: VecDeque<(u64, u64, Vec<u8>)>,
    in_flight: JoinSet<WriteDone>,
    outstanding: HashMap<u64, Outstanding>,
    /// Whether the remote hashes blocks, and so checks each as it lands.
    check_early: bool,
    checks: JoinSet<BlockCheck>,
    /// The remote's hashes of the blocks it checked as they landed.
    checked: BTreeMap<u64, BlockHash>,
    /// Bytes acknowledged since the last remote sync started.
    since_sync: u64,
    /// With an agent: the remote sync running beside the writes, at most one.
    syncing: Option<tokio::task::JoinHandle<Result<()>>>,
    /// One block of the source, read to be hashed.
    buffer: Vec<u8>,
    /// Pushed to several hosts: this host's reading of the blocks they share.
    shared: Option<SourceReader>,
}

impl<'p, 'a, R: Remote> Sending<'p, 'a, R> {
    fn new(
        push: &'p mut PushFile<'a, R>,
        handle: R::File,
        arrivals: Option<Arrivals<R>>,
        needed: Vec<u64>,
    ) -> Self {
        let remote = &push.context.remote;
        Sending {
            paths: Paths::new(remote.clone(), handle.clone()),
            handle,
            arrivals,
            per_connection: push
                .context
                .setup
                .options
                .requests_for(remote.max_io_size()),
            chunk: u64::from(remote.max_io_size()),
            waiting: needed.into(),
            requests: VecDeque::new(),
            in_flight: JoinSet::new(),
            outstanding: HashMap::new(),
            check_early: remote.hashes_blocks(),
            checks: JoinSet::new(),
            checked: BTreeMap::new(),
            since_sync: 0,
            syncing: None,
            shared: push
                .context
                .setup
                .shared_source
                .as_ref()
                .map(|host| host.reader(push.opened)),
            // Made when first needed: a block from the shared window or one hashed already
            // never passes through it.
            buffer: Vec::new(),
            push,
        }
    }

    /// Sends, records what was acknowledged whatever happened, and returns the remote's hashes
    /// of the blocks it checked as they landed.
    async fn run(mut self) -> Result<BTreeMap<u64, BlockHash>> {
        let outcome = self.exchange().await;
        self.in_flight.abort_all();
        close_late(self.arrivals.take()).await;
        // The borrowed connections' handles are closed before the unit's connection syncs the
        // file: every write they carried has been acknowledged (or the file failed).
        self.paths.close_borrowed().await;
        // Every acknowledged block is recorded, whatever happened: the server has it (a
        // dropped link does not lose acknowledged writes; a crash of the server is caught by
        // the size check and the end-to-end digest).
        let recorded = self.push.record();
        let synced = match self.syncing.take() {
            Some(task) => finished(task, "a sync").await,
            None => Ok(()),
        };
        outcome.and(recorded).and(synced)?;
        while let Some(joined) = self.checks.join_next().await {
            take_check(&mut self.checked, joined);
        }
        Ok(std::mem::take(&mut self.checked))
    }

    /// Writes go out as slots free up; each acknowledged block is recorded.
    async fn exchange(&mut self) -> Result<()> {
        loop {
            self.send_writes().await?;
            if self.in_flight.is_empty() {
                return Ok(());
            }
            let joined = tokio::select! {
                joined = self.in_flight.join_next() => joined,
                (lane, opened) = next_arrival(&mut self.arrivals) => {
                    self.paths.join(lane, opened);
                    continue;
                }
            };
            let Some(joined) = joined else {
                return Ok(());
            };
            let (lane, index, length, result) =
                joined.map_err(|error| Error::internal(format!("a write task failed: {error}")))?;
            self.paths.answered(lane);
            result?;
            let push = &self.push;
            push.context
                .setup
                .reporter
                .bytes_moved(&push.item.path, length);
            self.acknowledged(index, length).await?;
        }
    }

    /// Sends writes while a connection has room and there is something to send.
    async fn send_writes(&mut self) -> Result<()> {
        let context = self.push.context;
        while let Some(lane) = self.paths.least_busy(self.per_connection) {
            if self.requests.is_empty() && self.waiting.is_empty() {
                break;
            }
            // The next block is read only once a write of it can go out: files waiting for
            // the connection hold no data (a tree sends many files at once, and a fleet
            // many trees).
            let Some((remote, handle, permit)) = self.paths.request(lane, &context.requests).await
            else {
                break;
            };
            if self.requests.is_empty() && !self.read_next_block()? {
                self.paths.answered(lane);
                break;
            }
            let Some((index, offset, data)) = self.requests.pop_front() else {
                self.paths.answered(lane);
                break;
            };
            self.in_flight.spawn(async move {
                let length = data.len() as u64;
                let result = remote.write_at(&handle, offset, data).await;
                drop(permit);
                (lane, index, length, result)
            });
        }
        Ok(())
    }

    /// Reads the next block to send and queues its writes: the whole block, or only its
    /// pieces that differ from the remote's bytes. False when every block has been read.
    fn read_next_block(&mut self) -> Result<bool> {
        let Some(index) = self.waiting.pop_front() else {
            return Ok(false);
        };
        let push = &*self.push;
        let range = push.layout.range(index);
        let ranges = push.blocks.ranges_to_move(index);
        let read_error =
            |error| Error::local_io(format!("cannot read {}", push.item.source), error);
        // Pushed to several hosts, a block comes whole from the window they share: read and
        // hashed once for all of them. Otherwise a block hashed already is read only where it
        // travels, straight into the buffers that go out (a small delta reads its changed
        // pieces, not the blocks around them); any other is read whole to be hashed.
        let shared_block = match &self.shared {
            Some(reader) => Some(
                reader
                    .block(&push.file, &push.layout, index)
                    .map_err(read_error)?,
            ),
            None => None,
        };
        let (hash, whole_block) = match (&shared_block, push.known.get(&index)) {
            (Some(block), _) => (block.hash, Some(&block.data[..])),
            (None, Some(hash)) => (*hash, None),
            (None, None) => {
                if self.buffer.is_empty() {
                    self.buffer = vec![0u8; buffer_size(&push.layout)];
                }
                let slice = &mut self.buffer[..(range.end - range.start) as usize];
                push.file
                    .read_exact_at(slice, range.start)
                    .map_err(read_error)?;
                (hash_block(slice), Some(&*slice))
            }
        };
        for part in &ranges {
            let mut offset = part.start;
            while offset < part.end {
                let end = part.end.min(offset + self.chunk);
                let data = match whole_block {
                    Some(slice) => slice
                        [(offset - range.start) as usize..(end - range.start) as usize]
                        .to_vec(),
                    None => {
                        let mut data = vec![0u8; (end - offset) as usize];
                        push.file
                            .read_exact_at(&mut data, offset)
                            .map_err(read_error)?;
                        data
                    }
                };
                self.requests.push_back((index, offset, data));
                offset = end;
            }
        }
        let travels = covered(&ranges);
        let block = Outstanding {
            hash,
            unacknowledged: travels,
            travels,
        };
        self.outstanding.insert(index, block);
        Ok(true)
    }

    /// The remote acknowledged `length` bytes of block `index`. Once all of them are, the
    /// block is queued to be journaled, checked where the remote can, and counted towards the
    /// next sync.
    async fn acknowledged(&mut self, index: u64, length: u64) -> Result<()> {
        let Some(block) = self.outstanding.get_mut(&index) else {
            return Ok(());
        };
        block.unacknowledged = block.unacknowledged.saturating_sub(length);
        if block.unacknowledged > 0 {
            return Ok(());
        }
        let Some(block) = self.outstanding.remove(&index) else {
            return Ok(());
        };
        self.check_landed(index);
        // Intervals count the bytes that travelled: a delta of scattered pieces is not synced
        // and journaled once per few blocks it touched.
        self.push
            .blocks
            .queue(index, Some(block.hash), block.travels);
        self.since_sync += block.travels;
        self.sync_if_due().await?;
        // Acknowledged blocks are journaled often, so a dropped link loses little.
        if self.push.blocks.pending_bytes() >= JOURNAL_INTERVAL {
            self.push.record()?;
        }
        Ok(())
    }

    /// Has the remote hash block `index`, just landed, while the others travel (when it can,
    /// and not too many at once); keeps the answers that came meanwhile.
    fn check_landed(&mut self, index: u64) {
        while let Some(joined) = self.checks.try_join_next() {
            take_check(&mut self.checked, joined);
        }
        let layout = self.push.layout;
        if self.check_early
            && index + 1 < layout.block_count()
            && self.checks.len() < CHECKS_IN_FLIGHT
        {
            let remote = self.push.context.remote.clone();
            let path = self.push.item.target.clone();
            self.checks.spawn(async move {
                (
                    index,
                    remote.block_hashes(&path, &layout, index..index + 1).await,
                )
            });
        }
    }

    /// Syncs the remote file when enough was acknowledged since the last sync.
    async fn sync_if_due(&mut self) -> Result<()> {
        let remote = &self.push.context.remote;
        if self.check_early {
            // An agent re-hashes every journaled block before it is trusted again, so a block
            // a crash of the server lost is found and sent again: the writes never wait for a
            // sync. Syncs still run beside them, back to back, so the remote disk writes the
            // file while it travels (see WRITEBACK_STEP).
            if self.since_sync >= WRITEBACK_STEP
                && self.syncing.as_ref().is_none_or(|task| task.is_finished())
            {
                if let Some(task) = self.syncing.take() {
                    finished(task, "a sync").await?;
                }
                let remote = remote.clone();
                let handle = self.handle.clone();
                self.syncing = Some(tokio::spawn(async move { remote.sync(&handle).await }));
                self.since_sync = 0;
            }
        } else if self.since_sync >= SYNC_INTERVAL {
            // Without an agent the sync bounds what the journal may claim after a crash of the
            // server.
            remote.sync(&self.handle).await?;
            self.since_sync = 0;
        }
        Ok(())
    }
}
