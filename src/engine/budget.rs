//! The bytes a transfer holds because of what the peer listed: the units a discovery found and
//! the plans of the units in flight, counted against one budget for the whole process.
//!
//! Each listing is capped on its own ([`crate::remote::ListingLimits`]); this is the bound across
//! listings. Without it a peer could make a plan grow with every directory it lists, or
//! quadratically with a deep tree of long names (every entry holds its whole path, several
//! times). Entries are counted at about what they take in memory: the bytes of the names and
//! paths they hold plus the fixed size of the structures holding them. Units plan side by side
//! on several connections, so they share the budget; a plan gives back what it took when it is
//! dropped. One transfer runs per process, so the budget is the process's ([`TRANSFER`]).

use std::sync::atomic::{AtomicUsize, Ordering};

/// The most bytes the transfer may hold at once for discovered units and plans, unless
/// `XFER_PLAN_MEMORY` says otherwise. Whatever a peer lists, xfer's whole process then stays
/// under 256 MiB resident. An entry counts its relative, remote and local paths (a few dozen
/// bytes each) and the 144-byte plan item, about 330 bytes for a 40-byte name: so about half a
/// million entries can be planned at once, which a tree of many directories never nears (only
/// the units in flight plan), but one directory of a million files does; its error says to
/// raise `XFER_PLAN_MEMORY`.
pub const MAX_TRANSFER_BYTES: usize = 160 << 20;

/// What one heap allocation costs besides its bytes: the allocator's header and rounding.
pub const ALLOCATION_OVERHEAD: usize = 16;

/// A budget of bytes, taken and given back by [`Held`].
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    cap: usize,
}

/// The process's budget for discovered units and plans.
pub static TRANSFER: std::sync::LazyLock<Budget> = std::sync::LazyLock::new(|| {
    let cap = crate::env::var(crate::env::XFER_PLAN_MEMORY)
        .and_then(|mib| mib.parse::<usize>().ok())
        .filter(|&mib| mib > 0)
        .map_or(MAX_TRANSFER_BYTES, |mib| mib.saturating_mul(1 << 20));
    Budget::new(cap)
});

impl Budget {
    pub const fn new(cap: usize) -> Budget {
        Budget {
            used: AtomicUsize::new(0),
            cap,
        }
    }

    /// Bytes held now, by everyone.
    #[cfg(test)]
    fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Whether less than a quarter of the cap is held: room to plan ahead of need.
    pub fn mostly_free(&self) -> bool {
        self.used.load(Ordering::Relaxed) <= self.cap / 4
    }

    /// Takes `bytes` if the total stays within the cap.
    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.cap)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// The budget would go over its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the transfer would hold more than {} MiB for the names and paths it lists", .cap >> 20)]
pub struct OverBudget {
    pub cap: usize,
    /// The holder's own limit was passed (see [`Held::at_most`]), not the whole budget's cap:
    /// another holder with more room may succeed.
    pub share: bool,
}

/// The source of a plan's error when the plan passed its own share of the budget
/// ([`Held::at_most`]) rather than the budget's cap: planned with more room, it may succeed. It
/// says nothing of its own: the error's message says what happened.
#[derive(Debug, Clone, Copy)]
pub struct OverShare;

impl std::fmt::Display for OverShare {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Ok(())
    }
}

impl std::error::Error for OverShare {}

/// Bytes taken from a budget by one holder (a plan, a discovery's units), given back when it is
/// dropped.
#[derive(Debug)]
pub struct Held {
    budget: &'static Budget,
    bytes: usize,
    /// The most this holder may take, whatever the budget has left.
    limit: usize,
}

impl Held {
    pub fn new(budget: &'static Budget) -> Held {
        Held {
            budget,
            bytes: 0,
            limit: usize::MAX,
        }
    }

    /// The same holder, never taking more than `limit` bytes in all.
    pub fn at_most(self, limit: usize) -> Held {
        Held { limit, ..self }
    }

    /// Takes `bytes` more; nothing is taken when the budget cannot spare them or the holder's
    /// own limit would be passed.
    pub fn take(&mut self, bytes: usize) -> Result<(), OverBudget> {
        if self.bytes.saturating_add(bytes) > self.limit {
            return Err(OverBudget {
                cap: self.limit,
                share: true,
            });
        }
        if self.budget.take(bytes) {
            self.bytes += bytes;
            Ok(())
        } else {
            Err(OverBudget {
                cap: self.budget.cap,
                share: false,
            })
        }
    }

    /// Gives back `bytes` of what this holder took (what it no longer holds).
    pub fn give_back(&mut self, bytes: usize) {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        self.budget.give_back(bytes);
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// What a string of `length` bytes costs in memory besides its own fixed size.
pub fn text_bytes(length: usize) -> usize {
    if length == 0 {
        0
    } else {
        length + ALLOCATION_OVERHEAD
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_share_the_cap_and_give_back_when_dropped() {
        static BUDGET: Budget = Budget::new(1000);
        let mut first = Held::new(&BUDGET);
        let mut second = Held::new(&BUDGET);
        assert_eq!(first.take(600), Ok(()));
        assert_eq!(
            second.take(401),
            Err(OverBudget {
                cap: 1000,
                share: false
            })
        );
        let mut limited = Held::new(&BUDGET).at_most(300);
        assert_eq!(limited.take(200), Ok(()));
        assert_eq!(
            limited.take(101),
            Err(OverBudget {
                cap: 300,
                share: true
            })
        );
        assert_eq!(limited.take(100), Ok(()));
        drop(limited);
        // A refusal takes nothing.
        assert_eq!((second.bytes(), BUDGET.used()), (0, 600));
        assert_eq!(second.take(400), Ok(()));
        assert_eq!(BUDGET.used(), 1000);
        assert!(first.take(1).is_err());
        first.give_back(100);
        assert_eq!((first.bytes(), BUDGET.used()), (500, 900));
        // Never more than was taken.
        second.give_back(10_000);
        assert_eq!((second.bytes(), BUDGET.used()), (0, 500));
        assert_eq!(
            second.take(usize::MAX),
            Err(OverBudget {
                cap: 1000,
                share: false
            })
        );
        drop(first);
        assert_eq!(BUDGET.used(), 0);
        assert!(
            OverBudget {
                cap: 512 << 20,
                share: false
            }
            .to_string()
            .contains("more than 512 MiB")
        );
    }

    #[test]
    fn texts_count_their_allocation() {
        assert_eq!(text_bytes(0), 0);
        assert_eq!(text_bytes(40), 40 + ALLOCATION_OVERHEAD);
    }
}
