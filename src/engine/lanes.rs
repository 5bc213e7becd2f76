//! Extra connections for one large file, as lftp's `pget -n` does.
//!
//! On a far link one TCP connection carries at most its window per round trip, however fast
//! the link: a 2 MiB window over 100 ms is 20 MB/s. A large file therefore borrows more
//! connections and fetches its blocks over all of them at once. The transfer has one budget of
//! connections (`-j`): a unit's worker holds one while it runs, and a large file borrows only
//! what is left, so a tree of many directories keeps its one connection per directory and a
//! single big file gets them all. A file never waits for a slot: it starts on its unit's own
//! connection and the borrowed ones join as they come up. They go back to an idle list when
//! the file is done, so the next large file does not authenticate again.
//!
//! On a far link (a round trip of [`FAR_ROUND_TRIP`] or more, timed by the pool as the first
//! connection logs in, else on a request before the transfer starts) `-j` connections at their window per round trip may carry less than the link: there
//! the budget is twice `-j` (at most [`FAR_LINK_MOST`]), the extra slots only for large files to
//! borrow, so the number of directories at once stays `-j`.
//!
//! A worker holds its slot for as long as there are units to take, and when the queue is empty
//! it leaves its connection here before giving the slot up: at the end of a transfer the last
//! files are carried by every connection that is still open, not by their unit's alone. A
//! file too small to be worth a new handshake still takes connections that are already open.

use crate::blocks::BlockLayout;
use crate::error::Result;
use crate::remote::Remote;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A file at least this large may open new connections to borrow: below it the handshake
/// costs more than the parallelism saves. Smaller files borrow only open, idle ones.
pub const LANE_MIN_SIZE: u64 = 64 << 20;
/// Blocks each borrowed connection should have to carry, at least.
pub const BLOCKS_PER_LANE: u64 = 16;
/// A round trip at least this long makes a link far: a 2 MiB window per 20 ms is 100 MB/s,
/// about what a gigabit link or one SSH connection's processing carries, so below it more
/// connections than `-j` gain nothing but handshakes.
pub const FAR_ROUND_TRIP: std::time::Duration = std::time::Duration::from_millis(20);
/// The most connections a far link's budget grows to.
pub const FAR_LINK_MOST: usize = 16;

/// The transfer's connection budget for `jobs` (`-j`) over a link whose round trip is
/// `round_trip`: `jobs`, or on a far link twice `jobs` (at most [`FAR_LINK_MOST`], never less
/// than `jobs`).
pub fn connection_budget(jobs: usize, round_trip: std::time::Duration) -> usize {
    let jobs = jobs.max(1);
    if round_trip < FAR_ROUND_TRIP {
        return jobs;
    }
    jobs.saturating_mul(2).min(FAR_LINK_MOST).max(jobs)
}

/// Opens a fresh connection to the transfer's host.
pub type Opener<R> =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Arc<R>>> + Send>> + Send + Sync>;

/// The transfer's connection budget and the connections large files may borrow.
pub struct Lanes<R: Remote> {
    budget: Arc<Semaphore>,
    open: Opener<R>,
    idle: Mutex<Vec<Arc<R>>>,
}

/// One borrowed connection; dropping it gives the connection and its slot back.
pub struct Lane<R: Remote> {
    pub remote: Arc<R>,
    pool: Arc<Lanes<R>>,
    _slot: OwnedSemaphorePermit,
}

impl<R: Remote> Drop for Lane<R> {
    fn drop(&mut self) {
        if !self.remote.is_closed()
            && let Ok(mut idle) = self.pool.idle.lock()
        {
            idle.push(self.remote.clone());
        }
    }
}

impl<R: Remote> Lanes<R> {
    /// A budget of `connections` slots, opening new connections with `open`.
    pub fn new(connections: usize, open: Opener<R>) -> Arc<Lanes<R>> {
        Arc::new(Lanes {
            budget: Arc::new(Semaphore::new(connections.max(1))),
            open,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The slot a worker holds while there are units for it to run.
    pub async fn hold_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.budget.clone().acquire_owned().await.ok()
    }

    /// Leaves an open connection for large files to borrow (a worker with no more units).
    pub fn add_idle(&self, remote: Arc<R>) {
        if !remote.is_closed()
            && let Ok(mut idle) = self.idle.lock()
        {
            idle.push(remote);
        }
    }

    /// One more connection, once a slot is free (a caller that stops wanting it drops the
    /// future): an idle one, else a new one when `may_open`. None when there is none to take.
    pub async fn borrow_one(self: &Arc<Self>, may_open: bool) -> Option<Lane<R>> {
        let slot = self.budget.clone().acquire_owned().await.ok()?;
        let reused = self.idle.lock().ok().and_then(|mut idle| {
            while let Some(remote) = idle.pop() {
                if !remote.is_closed() {
                    return Some(remote);
                }
            }
            None
        });
        let remote = match reused {
            Some(remote) => remote,
            None if !may_open => return None,
            None => match (self.open)().await {
                Ok(remote) => remote,
                Err(error) => {
                    tracing::debug!(%error, "no extra connection for a large file");
                    return None;
                }
            },
        };
        Some(Lane {
            remote,
            pool: self.clone(),
            _slot: slot,
        })
    }
}

/// The connections one file travels over, each with the file open and its requests in flight:
/// the unit's own first, then borrowed ones as they arrive (kept until the file is done).
pub struct Paths<R: Remote> {
    paths: Vec<(Arc<R>, R::File, usize)>,
    borrowed: Vec<Lane<R>>,
}

impl<R: Remote> Paths<R> {
    pub fn new(remote: Arc<R>, file: R::File) -> Self {
        Paths {
            paths: vec![(remote, file, 0)],
            borrowed: Vec::new(),
        }
    }

    /// A borrowed connection joins, with the file open on it.
    pub fn join(&mut self, lane: Lane<R>, file: R::File) {
        self.paths.push((lane.remote.clone(), file, 0));
        self.borrowed.push(lane);
    }

    /// The least busy path with room for another request (fewer than `limit` in flight).
    pub fn least_busy(&self, limit: usize) -> Option<usize> {
        self.paths
            .iter()
            .enumerate()
            .filter(|(_, path)| path.2 < limit)
            .min_by_key(|(_, path)| path.2)
            .map(|(index, _)| index)
    }

    /// A request on path `index`: its connection, the file there, and a slot of `shared` when
    /// it is the unit's own connection (shared with the unit's other files, so its requests are
    /// bounded across them; a borrowed one serves this file alone). None once `shared` closed.
    pub async fn request(
        &mut self,
        index: usize,
        shared: &Arc<Semaphore>,
    ) -> Option<(Arc<R>, R::File, Option<OwnedSemaphorePermit>)> {
        let permit = if index == 0 {
            Some(shared.clone().acquire_owned().await.ok()?)
        } else {
            None
        };
        let path = self.paths.get_mut(index)?;
        path.2 += 1;
        Some((path.0.clone(), path.1.clone(), permit))
    }

    /// A request on path `index` ended.
    pub fn answered(&mut self, index: usize) {
        if let Some(path) = self.paths.get_mut(index) {
            path.2 = path.2.saturating_sub(1);
        }
    }

    /// Closes the file on the borrowed connections (the unit's own keeps it), then gives them
    /// back. The closes go out together: one after another they would cost a round trip per
    /// connection at the end of every large file, most of a second on a far link.
    pub async fn close_borrowed(&mut self) {
        let mut closing = tokio::task::JoinSet::new();
        for (remote, file, _) in self.paths.drain(1..) {
            closing.spawn(async move {
                let _ = remote.close(file).await;
            });
        }
        while closing.join_next().await.is_some() {}
        self.borrowed.clear();
    }
}

/// Borrowed connections with one file open on each, as they come up.
pub type Arrivals<R> = tokio::sync::mpsc::UnboundedReceiver<(Lane<R>, <R as Remote>::File)>;

/// Borrows the connections a file cut by `layout`, `bytes_needed` of which travel, is worth
/// (see [`wanted_for`]), in the background, opening it on each with `open`; each arrives on
/// the receiver as it comes up (a connection that cannot open the file is given back). Abort
/// the task once the file is done: borrowers still waiting stop waiting. Nothing when the file
/// is worth none, or there are no lanes.
pub fn borrow_for_file<R, Open, Opening>(
    lanes: Option<&Arc<Lanes<R>>>,
    layout: &BlockLayout,
    bytes_needed: u64,
    open: Open,
) -> (Option<Arrivals<R>>, Option<tokio::task::JoinHandle<()>>)
where
    R: Remote,
    Open: Fn(Arc<R>) -> Opening + Send + Sync + 'static,
    Opening: Future<Output = Result<R::File>> + Send + 'static,
{
    let blocks_needed = bytes_needed.div_ceil(u64::from(layout.block_size()));
    let wanted = wanted_for(layout.file_size(), blocks_needed);
    let Some(lanes) = lanes.filter(|_| wanted.connections > 0) else {
        return (None, None);
    };
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let lanes = lanes.clone();
    let open = Arc::new(open);
    let task = tokio::spawn(async move {
        let mut opening = tokio::task::JoinSet::new();
        for _ in 0..wanted.connections {
            let lanes = lanes.clone();
            let open = open.clone();
            opening.spawn(async move {
                let lane = lanes.borrow_one(wanted.may_open).await?;
                match open(lane.remote.clone()).await {
                    Ok(opened) => Some((lane, opened)),
                    Err(error) => {
                        tracing::debug!(%error, "a borrowed connection cannot open the file");
                        None
                    }
                }
            });
        }
        while let Some(joined) = opening.join_next().await {
            if let Ok(Some(arrived)) = joined
                && sender.send(arrived).is_err()
            {
                break;
            }
        }
    });
    (Some(receiver), Some(task))
}

/// The next borrowed connection to arrive, or never once none can: a file's transfer selects
/// on it beside its own work.
pub async fn next_arrival<R: Remote>(arrivals: &mut Option<Arrivals<R>>) -> (Lane<R>, R::File) {
    loop {
        match arrivals.as_mut() {
            Some(receiver) => match receiver.recv().await {
                Some(arrived) => return arrived,
                None => *arrivals = None,
            },
            None => std::future::pending().await,
        }
    }
}

/// Stops taking borrowed connections for a file that is done: any that arrived too late have
/// their handle closed and go back to the idle list.
pub async fn close_late<R: Remote>(arrivals: Option<Arrivals<R>>) {
    let Some(mut arrivals) = arrivals else { return };
    arrivals.close();
    while let Some((lane, opened)) = arrivals.recv().await {
        let _ = lane.remote.close(opened).await;
    }
}

/// The extra connections a file of `size` bytes, `blocks_needed` of whose blocks travel,
/// should ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    pub connections: usize,
    /// Whether new connections may be opened for it, or only idle ones taken.
    pub may_open: bool,
}

/// How many extra connections a file should ask for: one per [`BLOCKS_PER_LANE`] blocks to
/// fetch beyond the first lot, at most 7.
pub fn wanted_for(size: u64, blocks_needed: u64) -> Wanted {
    Wanted {
        connections: (blocks_needed / BLOCKS_PER_LANE).saturating_sub(1).min(7) as usize,
        may_open: size >= LANE_MIN_SIZE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_far_link_doubles_the_connections_large_files_may_borrow() {
        let near = FAR_ROUND_TRIP - std::time::Duration::from_millis(1);
        assert_eq!(connection_budget(4, near), 4);
        assert_eq!(connection_budget(4, FAR_ROUND_TRIP), 8);
        assert_eq!(
            connection_budget(1, std::time::Duration::from_millis(150)),
            2
        );
        assert_eq!(connection_budget(12, FAR_ROUND_TRIP), FAR_LINK_MOST);
        assert_eq!(connection_budget(40, FAR_ROUND_TRIP), 40);
        assert_eq!(connection_budget(0, near), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_file_is_closed_on_every_borrowed_connection_in_one_round_trip() {
        use crate::remote::memory::{Faults, MemoryHost};
        let host = MemoryHost::new();
        host.put_file("/model.bin", &[7; 1000]);
        let round_trip = std::time::Duration::from_millis(100);
        let open: Opener<_> = {
            let host = host.clone();
            Box::new(move || {
                let remote = Arc::new(host.connect());
                Box::pin(async move { Ok(remote) })
            })
        };
        let lanes = Lanes::new(8, open);
        let own = Arc::new(host.connect());
        let file = own.open_read("/model.bin").await.expect("the file opens");
        let mut paths = Paths::new(own, file);
        for _ in 0..7 {
            let lane = lanes.borrow_one(true).await.expect("a free slot");
            let file = lane.remote.open_read("/model.bin").await.expect("it opens");
            paths.join(lane, file);
        }
        host.set_faults(Faults {
            round_trip: Some(round_trip),
            ..Faults::default()
        });
        let started = tokio::time::Instant::now();
        paths.close_borrowed().await;
        assert_eq!(started.elapsed(), round_trip);
        // Every borrowed connection went back, open, for the next large file.
        assert_eq!(lanes.idle.lock().expect("not poisoned").len(), 7);
    }

    #[test]
    fn only_large_files_open_connections() {
        let wanted = |size, blocks| {
            let Wanted {
                connections,
                may_open,
            } = wanted_for(size, blocks);
            (connections, may_open)
        };
        assert_eq!(wanted(LANE_MIN_SIZE - 1, 48), (2, false));
        assert_eq!(wanted(LANE_MIN_SIZE, 64), (3, true));
        assert_eq!(wanted(1 << 30, 1024), (7, true));
        assert_eq!(wanted(1 << 30, 40), (1, true));
        assert_eq!(wanted(1 << 30, 10), (0, true));
        assert_eq!(wanted(4 << 20, 4), (0, false));
    }
}
