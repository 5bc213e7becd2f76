//! Modes between the `u32` xfer carries them in (std's `PermissionsExt`, the agent protocol)
//! and the system's `mode_t`, which nix takes and gives: `u32` on Linux, `u16` on macOS. The
//! type and permission bits fit in 16 bits, so nothing a mode says is lost either way; on Linux
//! both conversions are no-ops.

use nix::libc::mode_t;
use nix::sys::stat::Mode;

/// The permission bits of `bits` (setuid, setgid and sticky included) as nix takes them.
#[allow(clippy::unnecessary_cast, reason = "mode_t is u32 on Linux only")]
pub(crate) fn permissions(bits: u32) -> Mode {
    Mode::from_bits_truncate((bits & 0o7777) as mode_t)
}

/// A `mode_t` as xfer carries modes.
#[allow(clippy::useless_conversion, reason = "mode_t is u32 on Linux only")]
pub(crate) fn widen(mode: mode_t) -> u32 {
    u32::from(mode)
}
