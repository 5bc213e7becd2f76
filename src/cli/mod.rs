//! The command line: raw arguments (`args`), validated settings (`settings`), one module per
//! subcommand that runs it and prints for a person or a script, and logging setup. Only this
//! layer knows about the terminal.

pub mod args;
pub mod doctor;
pub mod fleet;
pub mod forget_host;
pub mod logging;
pub mod open_files;
pub mod output;
pub mod progress;
pub mod secret;
pub mod settings;
pub mod transfer;
