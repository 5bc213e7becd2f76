//! The process that holds a secret: what it does to itself so the value cannot leave through a
//! core dump or be read out of its memory by another process of the same user.

use crate::error::{Error, ErrorKind, Result};
use rustix::process::{Resource, Rlimit, setrlimit};

/// Makes this process fit to hold a secret, for the rest of its life; called before a secret is
/// first read. A crash must not write the value to disk in a core file, so the core size limit
/// becomes 0, the hard limit too so that only a privileged process could raise it again
/// (children inherit it). On Linux the
/// process also stops being dumpable: the kernel then writes no core whatever the limit (a
/// `core_pattern` that pipes to a handler ignores the limit), and other processes of the same
/// user can no longer attach to it or read its memory through `/proc`. Failing to do either is
/// an error: the secret is then not read at all.
pub fn protect_from_dumps() -> Result<()> {
    let refused = |what: &str, error: rustix::io::Errno| {
        Error::new(
            ErrorKind::LocalIo,
            format!("cannot {what} before reading the secret: {error}"),
        )
        .with_hint("xfer reads a secret only once it cannot leak into a core dump; report this")
    };
    let none = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    setrlimit(Resource::Core, none).map_err(|error| refused("turn core dumps off", error))?;
    #[cfg(target_os = "linux")]
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(|error| refused("make the process undumpable", error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::process::getrlimit;
    // The dumpable flag is Linux's: elsewhere only the core limit is checked.
    #[cfg(target_os = "linux")]
    use rustix::process::{DumpableBehavior, dumpable_behavior};

    /// What the test below runs in a child process: it changes this whole process for good.
    #[test]
    #[ignore = "run in a child process by a_process_that_reads_a_secret_cannot_be_dumped"]
    fn protecting_this_process() {
        // Core files allowed and the process dumpable at first, so what follows is the
        // function's doing.
        let before = getrlimit(Resource::Core);
        if before.maximum != Some(0) {
            let allowed = before
                .maximum
                .map_or(1 << 20, |maximum| maximum.min(1 << 20));
            setrlimit(
                Resource::Core,
                Rlimit {
                    current: Some(allowed),
                    maximum: before.maximum,
                },
            )
            .expect("raise the soft limit");
            assert_ne!(getrlimit(Resource::Core).current, Some(0));
        }
        #[cfg(target_os = "linux")]
        assert_eq!(dumpable_behavior(), Ok(DumpableBehavior::Dumpable));

        protect_from_dumps().expect("protected");
        #[cfg(target_os = "linux")]
        assert_eq!(dumpable_behavior(), Ok(DumpableBehavior::NotDumpable));
        assert_eq!(
            getrlimit(Resource::Core),
            Rlimit {
                current: Some(0),
                maximum: Some(0)
            }
        );
        // For good: the limit cannot be raised again.
        let raised = setrlimit(
            Resource::Core,
            Rlimit {
                current: Some(1),
                maximum: Some(1),
            },
        );
        if !rustix::process::geteuid().is_root() {
            assert!(raised.is_err());
        }
    }

    #[test]
    fn a_process_that_reads_a_secret_cannot_be_dumped() {
        let name = "secret::process::tests::protecting_this_process";
        let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", name, "--ignored", "--test-threads=1"])
            .output()
            .expect("run the test binary");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // The filter matched: the test ran rather than nothing.
        assert!(stdout.contains("1 passed"), "{stdout}");
        // This process was left alone.
        #[cfg(target_os = "linux")]
        assert_eq!(dumpable_behavior(), Ok(DumpableBehavior::Dumpable));
    }
}
