//! The units of a transfer waiting for a worker, and those planned ahead of the workers.
//!
//! A worker holds a connection slot, so at most `-j` of them run; but a re-run spends most of
//! its time planning units that turn out complete, over the one listing session, and planning
//! needs no slot. Scouts plan units ahead of the workers: a unit found complete is done there;
//! one with work is handed to the workers with its plan, so it is not listed twice. A worker
//! takes a planned unit first, then an unplanned one, and stops only once nothing is left and no
//! scout is still planning (a scout may yet hand a unit over). Everything is behind one lock, so
//! a worker never sees the queue empty while a unit is between a scout and the plans it hands
//! over.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;

/// Unplanned units (`U`) and units planned ahead (`T`).
pub(super) struct UnitQueue<U, T> {
    state: Mutex<State<U, T>>,
    changed: Notify,
}

struct State<U, T> {
    unplanned: VecDeque<U>,
    planned: VecDeque<T>,
    /// Units a scout has taken and not yet given back, handed over or found complete.
    scouting: usize,
    /// Scouts take no more units.
    stopped: bool,
}

/// Why a wait found nothing to take.
enum Ended {
    /// Nothing will come.
    Yes,
    /// Something may yet.
    NotYet,
}

/// What a worker takes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next<U, T> {
    Planned(T),
    Unplanned(U),
}

/// What became of a unit a scout took.
pub(super) enum Scouted<U, T> {
    /// Settled by the scout (found complete, or failed for good): nothing more to do.
    Complete,
    /// It has work: a worker runs it on this plan.
    Planned(T),
    /// Not planned (its planning failed): a worker plans it again, with retries.
    GiveBack(U),
}

impl<U, T> UnitQueue<U, T> {
    pub(super) fn new(units: impl IntoIterator<Item = U>) -> Self {
        UnitQueue {
            state: Mutex::new(State {
                unplanned: units.into_iter().collect(),
                planned: VecDeque::new(),
                scouting: 0,
                stopped: false,
            }),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State<U, T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until `take` finds something in the state, or says nothing will come (`Err`).
    /// Every change a waiter waits on is told to all of them (`notify_waiters`), and a waiter
    /// registers before it looks, so a change between its look and its wait is not missed.
    async fn wait_for<R>(
        &self,
        mut take: impl FnMut(&mut State<U, T>) -> Result<R, Ended>,
    ) -> Option<R> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match take(&mut self.state()) {
                Ok(taken) => return Some(taken),
                Err(Ended::Yes) => return None,
                Err(Ended::NotYet) => {}
            }
            changed.await;
        }
    }

    /// The next unit for a worker: a planned one first. Waits while scouts are planning and
    /// nothing else is left; None once everything is taken.
    pub(super) async fn next_for_worker(&self) -> Option<Next<U, T>> {
        let next = self
            .wait_for(|state| {
                if let Some(planned) = state.planned.pop_front() {
                    Ok(Next::Planned(planned))
                } else if let Some(unit) = state.unplanned.pop_front() {
                    Ok(Next::Unplanned(unit))
                } else if state.scouting == 0 {
                    Err(Ended::Yes)
                } else {
                    Err(Ended::NotYet)
                }
            })
            .await;
        // A scout waiting for room, or for the last units, has news.
        self.changed.notify_waiters();
        next
    }

    /// The next unit for a scout. Waits while `waiting_at_most` planned units wait for a
    /// worker (each holds its plan in memory until one takes it); None once no unit is left
    /// unplanned, or scouting stopped.
    pub(super) async fn next_for_scout(&self, waiting_at_most: usize) -> Option<U> {
        self.wait_for(|state| {
            if state.stopped || state.unplanned.is_empty() {
                Err(Ended::Yes)
            } else if state.planned.len() >= waiting_at_most {
                Err(Ended::NotYet)
            } else {
                let unit = state.unplanned.pop_front().ok_or(Ended::Yes)?;
                state.scouting += 1;
                Ok(unit)
            }
        })
        .await
    }

    /// Scouts take no more units from now on; the workers take the rest.
    pub(super) fn stop_scouting(&self) {
        self.state().stopped = true;
        self.changed.notify_waiters();
    }

    /// A scout is done with the unit it took.
    pub(super) fn scouted(&self, outcome: Scouted<U, T>) {
        {
            let mut state = self.state();
            state.scouting -= 1;
            match outcome {
                Scouted::Complete => {}
                Scouted::Planned(planned) => state.planned.push_back(planned),
                Scouted::GiveBack(unit) => state.unplanned.push_front(unit),
            }
        }
        self.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn workers_take_planned_units_first() {
        let queue = UnitQueue::new([1, 2, 3]);
        let scouted = queue.next_for_scout(4).await.expect("a unit");
        assert_eq!(scouted, 1);
        queue.scouted(Scouted::Planned("one"));
        assert_eq!(queue.next_for_worker().await, Some(Next::Planned("one")));
        assert_eq!(queue.next_for_worker().await, Some(Next::Unplanned(2)));
        assert_eq!(queue.next_for_worker().await, Some(Next::Unplanned(3)));
        assert_eq!(queue.next_for_worker().await, None);
    }

    /// A scout asking for its next unit (one plan may wait), in a task of its own.
    fn spawn_scout(queue: &Arc<UnitQueue<i32, i32>>) -> tokio::task::JoinHandle<Option<i32>> {
        let queue = queue.clone();
        tokio::spawn(async move { queue.next_for_scout(1).await })
    }

    #[tokio::test(start_paused = true)]
    async fn a_scout_waits_while_enough_plans_wait() {
        let queue: Arc<UnitQueue<i32, i32>> = Arc::new(UnitQueue::new([1, 2, 3, 4]));
        queue.next_for_scout(1).await.expect("a unit");
        queue.scouted(Scouted::Planned(10));
        // A second plan would wait too: the scout waits until a worker takes the first.
        let scout = spawn_scout(&queue);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!scout.is_finished(), "the scout did not wait for room");
        assert_eq!(queue.next_for_worker().await, Some(Next::Planned(10)));
        assert_eq!(scout.await.expect("the scout"), Some(2));
        queue.stop_scouting();
        assert_eq!(queue.next_for_scout(2).await, None, "scouting stopped");
        queue.scouted(Scouted::Complete);
        assert_eq!(queue.next_for_worker().await, Some(Next::Unplanned(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_scout_ends_when_the_workers_take_the_last_unit() {
        let queue: Arc<UnitQueue<i32, i32>> = Arc::new(UnitQueue::new([1, 2]));
        queue.next_for_scout(1).await.expect("a unit");
        queue.scouted(Scouted::Planned(10));
        let scout = spawn_scout(&queue);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(queue.next_for_worker().await, Some(Next::Planned(10)));
        // The worker may take the last unit before the scout wakes; either way the scout ends
        // or takes it, and never waits for ever.
        let (worker, scouted) = (
            queue.next_for_worker().await,
            scout.await.expect("the scout"),
        );
        match scouted {
            Some(unit) => {
                assert_eq!(unit, 2);
                queue.scouted(Scouted::Complete);
            }
            None => assert_eq!(worker, Some(Next::Unplanned(2))),
        }
    }

    #[tokio::test]
    async fn a_unit_given_back_is_next_and_complete_ones_are_gone() {
        let queue: UnitQueue<i32, i32> = UnitQueue::new([1, 2, 3]);
        let first = queue.next_for_scout(4).await.expect("a unit");
        let second = queue.next_for_scout(4).await.expect("a unit");
        queue.scouted(Scouted::Complete);
        queue.scouted(Scouted::GiveBack(first));
        assert_eq!(second, 2);
        assert_eq!(queue.next_for_worker().await, Some(Next::Unplanned(1)));
        assert_eq!(queue.next_for_worker().await, Some(Next::Unplanned(3)));
        assert_eq!(queue.next_for_worker().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_waits_for_the_unit_a_scout_still_plans() {
        let queue: Arc<UnitQueue<i32, &str>> = Arc::new(UnitQueue::new([1]));
        let unit = queue.next_for_scout(4).await.expect("a unit");
        assert_eq!(unit, 1);
        let scout = {
            let queue = queue.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                queue.scouted(Scouted::Planned("planned"));
            })
        };
        // Nothing is left to take, but the scout's unit is still to come.
        assert_eq!(
            queue.next_for_worker().await,
            Some(Next::Planned("planned"))
        );
        scout.await.expect("the scout");
        assert_eq!(queue.next_for_worker().await, None);
    }
}
