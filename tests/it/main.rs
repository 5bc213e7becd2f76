//! xfer's integration tests, in one test binary (`cargo test --test it`): one module per area,
//! all sharing one harness ([`support`]) and the lying SSH server of the hostile-server tests
//! ([`hostile`]). Run one area with its module path, e.g. `cargo test --test it transfer::`.
//!
//! Linux only: the harness runs sshd, Dropbear and PAM, switches users (setgroups), opens
//! terminals and uses the kernel keyring. Elsewhere the binary is empty.
#![cfg(target_os = "linux")]

mod hostile;
mod support;

mod agent;
mod config_parity;
mod connect;
mod dropbear;
mod fido;
mod fleet;
mod harness;
mod hostile_server;
mod interactive_logins;
mod keepalive;
mod limits;
mod local_safety;
mod netrc_golden;
mod old_libc_fixture;
mod pam_fixture;
mod portable;
mod secret;
mod shared_host;
mod shell_only;
mod shell_only_transfers;
mod soak;
mod system_ssh;
mod transfer;
mod units;
