//! The bound on an agent's silence: [`StallLimit`], how long an agent that owes answers may
//! send nothing (longer while its requests cover many bytes of silent work), and the watchdog
//! task that ends a session whose agent stays silent longer.

use super::link::{Closure, Link};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The silence allowed to an agent that owes answers, before the bytes of its work are counted:
/// as long as an SFTP request may take.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The slowest rate, in bytes per second, at which an agent is assumed to read, hash or sync
/// the bytes its requests cover: below a busy spinning disk or a congested network filesystem,
/// so work that is merely slow is never taken for a stall.
pub const SLOWEST_DISK_RATE: u64 = 8 << 20;
/// The longest silence ever allowed, however many bytes the work covers: keeps the arithmetic
/// finite whatever sizes an agent claims.
pub const MAX_SILENCE: Duration = Duration::from_secs(24 * 60 * 60);

/// How long an agent that owes answers may send nothing before its session is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StallLimit {
    /// The silence allowed for any work at all.
    pub base: Duration,
    /// Bytes per second of the slowest work allowed for on top of `base`.
    pub bytes_per_second: u64,
}

impl Default for StallLimit {
    fn default() -> StallLimit {
        StallLimit {
            base: STALL_TIMEOUT,
            bytes_per_second: SLOWEST_DISK_RATE,
        }
    }
}

impl StallLimit {
    /// The default, with `base` in whole seconds from `XFER_AGENT_TIMEOUT` when set (tests lower
    /// it; a user on a link slower than the default allows for raises it).
    pub fn from_environment() -> StallLimit {
        let mut limit = StallLimit::default();
        if let Some(value) = crate::env::var(crate::env::XFER_AGENT_TIMEOUT) {
            match value.parse::<u64>() {
                Ok(seconds) if seconds > 0 => limit.base = Duration::from_secs(seconds),
                _ => tracing::warn!(
                    "ignoring {}={value:?}: not a whole number of seconds above 0",
                    crate::env::XFER_AGENT_TIMEOUT
                ),
            }
        }
        limit
    }

    /// The silence allowed while the requests in flight cover `bytes` bytes of work, at most
    /// [`MAX_SILENCE`] (whatever `base` says).
    pub fn allowed(&self, bytes: u64) -> Duration {
        let work = Duration::from_secs(bytes / self.bytes_per_second.max(1));
        self.base.saturating_add(work).min(MAX_SILENCE)
    }
}

/// Ends the session when the agent owes answers and has been silent longer than `limit`
/// allows. A task of its own rather than a timer around each read: a read cut short by a
/// timer would lose the part of a frame it had taken.
pub(super) async fn watch_for_stalls(link: Arc<Link>, limit: StallLimit) {
    loop {
        let Some(deadline) = link.stall_deadline(&limit) else {
            tokio::select! {
                () = link.busy.notified() => continue,
                () = link.ended() => return,
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = link.ended() => return,
        }
        // Something may have arrived, or more work been asked for, while it slept.
        if let Some(deadline) = link.stall_deadline(&limit)
            && deadline <= Instant::now()
        {
            let silence = limit.allowed(link.state().owed_bytes);
            tracing::debug!(?silence, "the xfer agent stalled");
            link.close(Closure::Stalled(silence));
            return;
        }
    }
}
