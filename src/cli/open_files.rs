//! The process's limit on open files. A pull of many small files holds each one open until
//! the sync that makes it durable, so the limit decides how many files share one sync. At
//! start the soft limit is raised to the hard one (at most [`MOST_OPEN_FILES`]), as Go's
//! runtime and many servers do, and the engine is told what it came to.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The most open files asked for: a run with `-j 64` and many hosts stays well inside it.
pub const MOST_OPEN_FILES: u64 = 1 << 16;

/// Raises the soft limit on open files as far as the hard limit allows (up to
/// [`MOST_OPEN_FILES`]); returns the soft limit now in force, or None where it cannot be read.
/// A system that refuses the raise (macOS caps it below an unlimited hard limit) keeps the
/// limit it had.
pub fn raise() -> Option<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let wanted = hard.min(MOST_OPEN_FILES);
    if wanted > soft && setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).is_ok() {
        return Some(wanted);
    }
    Some(soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_within_the_hard_one() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("the limit reads");
        let now = raise().expect("the limit reads");
        assert_eq!(now, hard.min(MOST_OPEN_FILES));
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).expect("the limit reads");
        assert_eq!(soft, now);
    }
}
