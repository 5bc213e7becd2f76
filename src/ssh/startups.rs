//! Pacing the connections one run opens to a host, so that a host which limits connections
//! still being set up is not handed more of them than it takes.
//!
//! sshd drops a new connection while too many others have not logged in yet (`MaxStartups`,
//! `10:30:100` by default, as low as `2:30:4` on hardened hosts): the dropped one sees its TCP
//! connection closed or reset before the SSH handshake ends. A run opening `-j` connections at
//! once to such a host would have some of them dropped. So the first connection to a host is
//! opened alone (it also finds out whether the host is there at all); from then on, as TCP's
//! slow start grows its window, each login the host accepts lets two more connections be opened
//! at once, up to [`MOST_AT_ONCE`] (see [`at_once`]). A login takes several round trips, half a
//! second on a 100 ms link, so a fixed two at a time would keep most of a far run's connections
//! waiting for seconds. Over a link known to be far ([`Startups::far`]) even that ramp costs a
//! login's round trips per step, a second or more in all: once the host has accepted one
//! connection, [`MOST_AT_ONCE`] are opened together, and a host that limits start-ups is
//! found out by its early closes as below. When a connection to a host that has already accepted one of this
//! run's is closed before it logged in, that is the host's limit, not a failure: the connect is
//! tried again after a backoff with jitter, without counting against `--retries`, at most
//! [`MAX_EARLY_CLOSES`] times, and from then on connections to that host are opened one at a
//! time. A first connection closed that way is an error like any other: nothing says the host
//! would ever take one.
//!
//! A connect marks such an error with [`ClosedBeforeLogin`] as its source; every wait here is
//! bounded (by the connects it waits for, and by the backoff's cap and count) and runs on the
//! tokio clock, so tests drive it with paused time.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;

/// The most connections being opened to one host at once, however large `-j` and however many
/// logins it took: below OpenSSH's default `MaxStartups` of 10, leaving room for other logins.
pub const MOST_AT_ONCE: usize = 8;
/// Early closes one connect rides out before its error stands.
pub const MAX_EARLY_CLOSES: u32 = 8;
/// The first wait after an early close; each next one doubles, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between two tries of one connect.
pub const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// The source of an error for a connection the host closed (or reset) before it logged in. It
/// says nothing of its own: the error's message says what happened.
#[derive(Debug, Clone, Copy)]
pub struct ClosedBeforeLogin;

impl std::fmt::Display for ClosedBeforeLogin {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Ok(())
    }
}

impl std::error::Error for ClosedBeforeLogin {}

/// Whether `error` is a connection the host closed before it logged in.
pub fn closed_before_login(error: &Error) -> bool {
    error.source_is::<ClosedBeforeLogin>()
}

/// The wait before the next try of a connect the host closed `early_closes` times:
/// `FIRST_BACKOFF * 2^(early_closes-1)`, capped, scaled by a jitter factor in [0.5, 1.5) so that
/// the connects cut at the same moment do not come back together.
pub fn backoff(early_closes: u32, jitter: f64) -> Duration {
    let exponent = early_closes.saturating_sub(1).min(16);
    let base = FIRST_BACKOFF
        .saturating_mul(1u32 << exponent)
        .min(MAX_BACKOFF);
    base.mul_f64(0.5 + jitter.clamp(0.0, 1.0))
}

/// The start-ups of one run, host by host.
#[derive(Default)]
pub struct Startups {
    hosts: Mutex<HashMap<String, Arc<Host>>>,
}

/// What the run knows of one host's start-ups.
#[derive(Default)]
struct Host {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Connections of this run the host accepted (they logged in).
    accepted: u64,
    /// Connections being opened now.
    opening: usize,
    /// The host closed one before login after accepting others: one at a time from then on.
    limited: bool,
    /// The link to the host is far: no ramp once it accepted one.
    far: bool,
}

impl State {
    fn at_once(&self) -> usize {
        if self.limited {
            1
        } else if self.far && self.accepted > 0 {
            MOST_AT_ONCE
        } else {
            at_once(self.accepted)
        }
    }
}

/// Connections that may be opened at once to a host that has accepted `accepted` of this run's
/// and not closed one early: one while none got in, then twice the logins it took, up to
/// [`MOST_AT_ONCE`]. A host that drops start-ups past two (`MaxStartups 2:...`) sees only two
/// at first; when it drops one of the next, larger lot it is paced one at a time from then on.
pub fn at_once(accepted: u64) -> usize {
    usize::try_from(accepted.saturating_mul(2))
        .unwrap_or(usize::MAX)
        .clamp(1, MOST_AT_ONCE)
}

/// A place among the connections being opened to a host; dropping it gives the place up.
struct Ticket {
    host: Arc<Host>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.host.lock();
        state.opening = state.opening.saturating_sub(1);
        drop(state);
        self.host.changed.notify_waiters();
    }
}

impl Host {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a place among the connections being opened.
    async fn admit(self: &Arc<Self>) -> Ticket {
        loop {
            // Registered before the check, so a place given up in between is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.lock();
                if state.opening < state.at_once() {
                    state.opening += 1;
                    return Ticket { host: self.clone() };
                }
            }
            changed.await;
        }
    }
}

impl Startups {
    pub fn new() -> Self {
        Self::default()
    }

    fn host(&self, key: &str) -> Arc<Host> {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        hosts.entry(key.to_string()).or_default().clone()
    }

    /// The link to the host `key` is far (its round trip was timed): from its first accepted
    /// login on, connections are opened [`MOST_AT_ONCE`] at a time, without the ramp, unless
    /// the host limits them.
    pub fn far(&self, key: &str, label: &str) {
        let host = self.host(key);
        if !std::mem::replace(&mut host.lock().far, true) {
            tracing::debug!(%label, "a far link: connections open up to {MOST_AT_ONCE} at once");
        }
        host.changed.notify_waiters();
    }

    /// Opens one connection to the host `key` with `attempt` (which logs in), paced as the
    /// module says; `label` names the host in messages.
    pub async fn open<T, Attempt, Opening>(
        &self,
        key: &str,
        label: &str,
        mut attempt: Attempt,
    ) -> Result<T>
    where
        Attempt: FnMut() -> Opening,
        Opening: Future<Output = Result<T>>,
    {
        let host = self.host(key);
        let mut early_closes = 0;
        loop {
            let ticket = host.admit().await;
            let error = match attempt().await {
                Ok(connection) => {
                    host.lock().accepted += 1;
                    drop(ticket);
                    return Ok(connection);
                }
                Err(error) => error,
            };
            // The place goes to the next connect while this one waits: after a close the
            // host takes one at a time, whichever it is.
            drop(ticket);
            let newly_limited = {
                let mut state = host.lock();
                let limit = state.accepted > 0
                    && closed_before_login(&error)
                    && early_closes < MAX_EARLY_CLOSES;
                if !limit {
                    return Err(error);
                }
                !std::mem::replace(&mut state.limited, true)
            };
            if newly_limited {
                tracing::info!(
                    "{label}: the host limits new connections (sshd MaxStartups); using 1 at a time from now on"
                );
            }
            early_closes += 1;
            let wait = backoff(early_closes, rand::random::<f64>());
            tracing::debug!(
                %label,
                early_closes,
                ?wait,
                "connecting again after the host closed a new connection: {error}"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Whether the host `key` has limited this run's new connections.
    #[cfg(test)]
    fn limited(&self, key: &str) -> bool {
        self.host(key).lock().limited
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
    use tokio::time::Instant;

    fn early_close() -> Error {
        Error::connect("host: the connection closed during the SSH handshake")
            .with_source(ClosedBeforeLogin)
    }

    /// Counts the attempts running at once, and the most there were.
    #[derive(Default)]
    struct Gauge {
        running: AtomicUsize,
        most: AtomicUsize,
    }

    impl Gauge {
        /// One attempt of `length`, ending as `outcome` says.
        async fn attempt(&self, length: Duration, outcome: Result<()>) -> Result<()> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(length).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            outcome
        }

        fn most(&self) -> usize {
            self.most.load(Ordering::SeqCst)
        }
    }

    /// Opens `count` connections of 100 ms each to `h:22` at once, each succeeding; the time
    /// they took together.
    async fn open_at_once(startups: &Arc<Startups>, gauge: &Arc<Gauge>, count: usize) -> Duration {
        let mut opens = tokio::task::JoinSet::new();
        for _ in 0..count {
            let (startups, gauge) = (startups.clone(), gauge.clone());
            opens.spawn(async move {
                startups
                    .open("h:22", "h", || {
                        gauge.attempt(Duration::from_millis(100), Ok(()))
                    })
                    .await
            });
        }
        let started = Instant::now();
        while let Some(joined) = opens.join_next().await {
            assert!(joined.expect("no panic").is_ok());
        }
        started.elapsed()
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        assert_eq!(backoff(1, 0.5), FIRST_BACKOFF);
        assert_eq!(backoff(2, 0.5), FIRST_BACKOFF * 2);
        assert_eq!(backoff(3, 0.5), FIRST_BACKOFF * 4);
        assert_eq!(backoff(30, 0.5), MAX_BACKOFF);
        assert_eq!(backoff(1, 0.0), FIRST_BACKOFF / 2);
        assert!(backoff(1, 0.999) < FIRST_BACKOFF * 3 / 2);
        assert_eq!(backoff(u32::MAX, 7.0), MAX_BACKOFF.mul_f64(1.5));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_connection_is_opened_alone_then_more_at_once_as_logins_succeed() {
        let startups = Arc::new(Startups::new());
        let gauge = Arc::new(Gauge::default());
        let elapsed = open_at_once(&startups, &gauge, 20).await;
        // One alone, then 2 (3 logins in), 6 (9 in), 8, the most (17 in), and the last 3.
        assert_eq!(elapsed, Duration::from_millis(500));
        assert_eq!(gauge.most(), MOST_AT_ONCE);
        assert!(!startups.limited("h:22"));
    }

    #[tokio::test(start_paused = true)]
    async fn over_a_far_link_the_most_are_opened_at_once_after_the_first_login() {
        let startups = Arc::new(Startups::new());
        let gauge = Arc::new(Gauge::default());
        startups
            .open("h:22", "h", || {
                gauge.attempt(Duration::from_millis(100), Ok(()))
            })
            .await
            .expect("the first connection");
        startups.far("h:22", "h");
        let elapsed = open_at_once(&startups, &gauge, MOST_AT_ONCE + 2).await;
        // The most at once, then the two left: no ramp of 2, then 6.
        assert_eq!(gauge.most(), MOST_AT_ONCE);
        assert_eq!(elapsed, Duration::from_millis(200));
        // Another host is not far for it.
        assert!(!startups.host("other:22").lock().far);
    }

    #[tokio::test(start_paused = true)]
    async fn a_far_host_is_still_opened_to_alone_until_it_takes_a_login() {
        let startups = Arc::new(Startups::new());
        startups.far("h:22", "h");
        let gauge = Arc::new(Gauge::default());
        let elapsed = open_at_once(&startups, &gauge, 3).await;
        // One alone, then the other two together.
        assert_eq!(elapsed, Duration::from_millis(200));
        assert_eq!(gauge.most(), 2);
    }

    #[test]
    fn connections_at_once_grow_with_the_logins_taken_up_to_the_most() {
        assert_eq!(at_once(0), 1);
        assert_eq!(at_once(1), 2);
        assert_eq!(at_once(3), 6);
        assert_eq!(at_once(4), MOST_AT_ONCE);
        assert_eq!(at_once(u64::MAX), MOST_AT_ONCE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_that_closes_early_after_accepting_is_waited_for_and_paced() {
        let startups = Arc::new(Startups::new());
        let gauge = Arc::new(Gauge::default());
        startups
            .open("h:22", "h", || {
                gauge.attempt(Duration::from_millis(10), Ok(()))
            })
            .await
            .expect("the first connection");
        // The next three attempts, whoever makes them, are closed before login.
        let closes = Arc::new(AtomicU32::new(3));
        let attempts = Arc::new(AtomicU32::new(0));
        let mut opens = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (startups, gauge) = (startups.clone(), gauge.clone());
            let (closes, attempts) = (closes.clone(), attempts.clone());
            opens.spawn(async move {
                startups
                    .open("h:22", "h", || {
                        attempts.fetch_add(1, Ordering::SeqCst);
                        let closed = closes
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                                left.checked_sub(1)
                            })
                            .is_ok();
                        let outcome = if closed { Err(early_close()) } else { Ok(()) };
                        gauge.attempt(Duration::from_millis(10), outcome)
                    })
                    .await
            });
        }
        while let Some(joined) = opens.join_next().await {
            assert!(joined.expect("no panic").is_ok(), "every connect succeeds");
        }
        assert_eq!(attempts.load(Ordering::SeqCst), 4 + 3);
        assert!(startups.limited("h:22"));
        // Two at most, the two opened before the limit was known; then one at a time.
        assert_eq!(gauge.most.swap(0, Ordering::SeqCst), at_once(1));
        let mut opens = tokio::task::JoinSet::new();
        for _ in 0..3 {
            let (startups, gauge) = (startups.clone(), gauge.clone());
            opens.spawn(async move {
                startups
                    .open("h:22", "h", || {
                        gauge.attempt(Duration::from_millis(10), Ok(()))
                    })
                    .await
            });
        }
        while let Some(joined) = opens.join_next().await {
            assert!(joined.expect("no panic").is_ok());
        }
        assert_eq!(gauge.most(), 1);
        // Another host is paced on its own.
        assert!(!startups.limited("other:22"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_early_close_of_the_first_connection_is_an_error() {
        let startups = Startups::new();
        let attempts = AtomicU32::new(0);
        let result: Result<()> = startups
            .open("h:22", "h", || {
                attempts.fetch_add(1, Ordering::SeqCst);
                async { Err(early_close()) }
            })
            .await;
        assert!(result.is_err_and(|error| closed_before_login(&error)));
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        assert!(!startups.limited("h:22"));
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_are_not_tried_again() {
        let startups = Startups::new();
        startups
            .open("h:22", "h", || async { Ok(()) })
            .await
            .expect("the first connection");
        let attempts = AtomicU32::new(0);
        let result: Result<()> = startups
            .open("h:22", "h", || {
                attempts.fetch_add(1, Ordering::SeqCst);
                async { Err(Error::connect("h: connection refused")) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_that_keeps_closing_early_is_given_up_within_the_bound() {
        let startups = Startups::new();
        startups
            .open("h:22", "h", || async { Ok(()) })
            .await
            .expect("the first connection");
        let attempts = AtomicU32::new(0);
        let started = Instant::now();
        let result: Result<()> = startups
            .open("h:22", "h", || {
                attempts.fetch_add(1, Ordering::SeqCst);
                async { Err(early_close()) }
            })
            .await;
        assert!(result.is_err_and(|error| closed_before_login(&error)));
        assert_eq!(attempts.load(Ordering::SeqCst), MAX_EARLY_CLOSES + 1);
        let bound: Duration = (1..=MAX_EARLY_CLOSES)
            .map(|closes| backoff(closes, 1.0))
            .sum();
        assert!(started.elapsed() <= bound, "{:?}", started.elapsed());
    }
}
