//! When a copy may take its source's mtime, and pass the quick check with it.
//!
//! A re-run's quick check compares sizes and whole-second mtimes (all SFTP v3 carries). A
//! source written again within the second of its mtime, after xfer read it, keeps both its size
//! and that second: a re-run would take the stale copy as current, for good. Git calls such an
//! entry racily clean.
//!
//! - A push reads its source on this machine's clock. So a copy gets its source's mtime only
//!   once the clock has left that second and the source, still open, is seen unchanged: any
//!   later write then gives the source a later second. The wait is at most about a second, and
//!   only for sources written in the second the copy finishes.
//! - A pull's source is on the remote's clock, and a remote file's second-granular stat cannot
//!   tell a write within the same second. So a copy whose source was written within
//!   [`REMOTE_CLOCK_BEHIND`] of when its reading started (or up to [`REMOTE_CLOCK_AHEAD`]
//!   after: the remote's clock may be ahead) is marked, in the sub-second part of its mtime
//!   that SFTP never carries ([`RACY_NANOSECONDS`]), and the next run checks its content
//!   instead of trusting the quick check. That run, once the source is older, clears the mark.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far past the end of the mtime's second the wait goes: file timestamps come from the
/// kernel's coarse clock, which lags the clock read here by up to a tick (4 ms at 250 Hz).
pub const COARSE_CLOCK_MARGIN: Duration = Duration::from_millis(20);

/// How long to wait, at `now`, before a source whose mtime is `mtime_seconds` can pass for
/// settled. Zero once that second is over (with the margin), and zero for an mtime ahead of
/// the clock's second: a later write gets the clock's time, which is another second (waiting
/// for a clock to reach an mtime set in the future could take any time).
pub fn wait_before_settled(mtime_seconds: i64, now: SystemTime) -> Duration {
    let Ok(since_epoch) = now.duration_since(UNIX_EPOCH) else {
        return Duration::ZERO;
    };
    let Ok(mtime) = u64::try_from(mtime_seconds) else {
        // Before 1970: long over.
        return Duration::ZERO;
    };
    if mtime > since_epoch.as_secs() {
        return Duration::ZERO;
    }
    let settled = Duration::from_secs(mtime.saturating_add(1)) + COARSE_CLOCK_MARGIN;
    settled.saturating_sub(since_epoch)
}

/// The sub-second part of a pulled copy's mtime that says its content is to be checked
/// again: one nanosecond past the source's second, which `ls` and every second-granular
/// comparison show as the source's mtime. (A file that has it by chance is checked once.)
pub const RACY_NANOSECONDS: u32 = 1;

/// How far the remote's clock may lag this machine's for a pulled copy's race to be caught.
/// A clock further behind hides the race, as it does from rsync (synced clocks differ by
/// milliseconds).
pub const REMOTE_CLOCK_BEHIND: Duration = Duration::from_secs(10);

/// How far the remote's clock may be ahead of this machine's. An mtime further in the future
/// was set on purpose or by a wrong clock, and a new write would give the source another one.
pub const REMOTE_CLOCK_AHEAD: Duration = Duration::from_secs(60);

/// Whether a pulled copy of a source whose mtime is `mtime_seconds`, read from `read_from`
/// on (this machine's clock), may be racily current: the source may have been written again
/// within its mtime's second after the read, where a remote clock within
/// [`REMOTE_CLOCK_BEHIND`] and [`REMOTE_CLOCK_AHEAD`] of this one has it.
pub fn pulled_copy_may_be_racy(mtime_seconds: i64, read_from: SystemTime) -> bool {
    let Ok(since_epoch) = read_from.duration_since(UNIX_EPOCH) else {
        return true;
    };
    let (now, behind, ahead) = (
        i128::from(since_epoch.as_secs()),
        i128::from(REMOTE_CLOCK_BEHIND.as_secs()),
        i128::from(REMOTE_CLOCK_AHEAD.as_secs()),
    );
    let mtime = i128::from(mtime_seconds);
    // The read's second on a remote clock `behind` seconds slow is `now - behind`, and the
    // source is racy there when its mtime is that second or later.
    mtime >= now - behind && mtime <= now + ahead
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64, milliseconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_millis(milliseconds)
    }

    #[test]
    fn a_source_written_in_the_current_second_waits_for_the_next_one_and_the_margin() {
        assert_eq!(
            wait_before_settled(1_000, at(1_000, 0)),
            Duration::from_millis(1_020)
        );
        assert_eq!(
            wait_before_settled(1_000, at(1_000, 700)),
            Duration::from_millis(320)
        );
        assert_eq!(
            wait_before_settled(1_000, at(1_001, 5)),
            Duration::from_millis(15)
        );
    }

    #[test]
    fn a_source_written_in_an_earlier_second_does_not_wait() {
        assert_eq!(wait_before_settled(1_000, at(1_001, 20)), Duration::ZERO);
        assert_eq!(wait_before_settled(999, at(1_000, 20)), Duration::ZERO);
        // Just past the second, a write may still be stamped with it by the coarse clock.
        assert_eq!(
            wait_before_settled(999, at(1_000, 0)),
            Duration::from_millis(20)
        );
        assert_eq!(wait_before_settled(-5, at(1_000, 0)), Duration::ZERO);
    }

    #[test]
    fn an_mtime_ahead_of_the_clock_does_not_wait() {
        assert_eq!(wait_before_settled(1_001, at(1_000, 999)), Duration::ZERO);
        assert_eq!(wait_before_settled(i64::MAX, at(1_000, 0)), Duration::ZERO);
    }

    #[test]
    fn a_pulled_copy_is_racy_when_its_source_was_written_near_the_read() {
        let read_from = at(1_000, 500);
        assert!(pulled_copy_may_be_racy(1_000, read_from));
        assert!(pulled_copy_may_be_racy(990, read_from));
        assert!(pulled_copy_may_be_racy(1_060, read_from));
        assert!(!pulled_copy_may_be_racy(989, read_from));
        assert!(!pulled_copy_may_be_racy(1_061, read_from));
        assert!(!pulled_copy_may_be_racy(i64::MIN, read_from));
        assert!(!pulled_copy_may_be_racy(i64::MAX, read_from));
    }

    #[test]
    fn a_clock_before_the_epoch_does_not_wait() {
        let before = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(wait_before_settled(0, before), Duration::ZERO);
    }
}
