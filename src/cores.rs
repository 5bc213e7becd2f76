//! How many threads this machine runs at once, asked once per process.
//!
//! `std::thread::available_parallelism` reads the cgroup files under /proc and /sys on every
//! call (a dozen system calls), and hashing asks before every file: a pull of many small files
//! would pay that once per file on each side.

use std::sync::OnceLock;

/// The threads available to this process (at least 1).
pub fn available() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}
