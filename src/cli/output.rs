//! Writing to stdout and stderr when the reader may have gone away.
//!
//! `xfer pull -n ... | head -2` closes the pipe while xfer still prints. `println!` panics on
//! that; these macros drop what cannot be written instead, as ripgrep and coreutils end
//! quietly, and xfer finishes with the exit code its work earned. A transfer never stops because
//! nobody reads its messages.

use std::io::Write;

/// Writes to stdout; a closed or failing stdout is ignored.
pub fn write_stdout(arguments: std::fmt::Arguments<'_>) {
    let _ = std::io::stdout().lock().write_fmt(arguments);
}

/// Writes to stderr; a closed or failing stderr is ignored.
pub fn write_stderr(arguments: std::fmt::Arguments<'_>) {
    let _ = std::io::stderr().lock().write_fmt(arguments);
}

/// `print!` that never panics.
macro_rules! out {
    ($($argument:tt)*) => {
        $crate::cli::output::write_stdout(format_args!($($argument)*))
    };
}

/// `println!` that never panics.
macro_rules! outln {
    ($($argument:tt)*) => {
        $crate::cli::output::write_stdout(format_args!("{}\n", format_args!($($argument)*)))
    };
}

/// `eprintln!` that never panics.
macro_rules! errln {
    ($($argument:tt)*) => {
        $crate::cli::output::write_stderr(format_args!("{}\n", format_args!($($argument)*)))
    };
}

pub(crate) use {errln, out, outln};

/// Prints `value` as pretty JSON on stdout, as every `--json` does.
pub fn print_json(value: &impl serde::Serialize) -> xfer::error::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|error| {
        xfer::error::Error::new(
            xfer::error::ErrorKind::LocalIo,
            format!("cannot encode JSON: {error}"),
        )
    })?;
    write_stdout(format_args!("{text}\n"));
    Ok(())
}
