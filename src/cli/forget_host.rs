//! `xfer forget-host HOST`: the `ssh-keygen -R '[host]:port'` (or `-R alias` under HostKeyAlias)
//! of the re-created rental box, applied to every user known_hosts file the host's config names.
//! Forgetting nothing is an error (exit code 4), unlike ssh-keygen, which only warns.

use crate::cli::args::ForgetHostArgs;
use crate::cli::output::outln;
use crate::cli::settings::ConnectionSettings;
use xfer::error::{Error, Result};
use xfer::ssh::known_hosts;
use xfer::target::parse_host;

pub fn run(args: &ForgetHostArgs, quiet: bool) -> Result<()> {
    let settings = ConnectionSettings::from_args(&args.connection)?;
    let connector = settings.connector()?;
    let spec = parse_host(&args.host)?;
    let config = connector.resolve(&spec)?;
    // Under the HostKeyAlias when one is set, as ssh records it.
    let name = config.host_key_name();
    let results = known_hosts::forget(&config.user_known_hosts_files, &name)?;
    let mut total = 0;
    for result in &results {
        total += result.removed;
        if result.removed > 0 && !quiet {
            let backup = result
                .backup
                .as_ref()
                .map(|path| format!(" (previous version kept as {})", path.display()))
                .unwrap_or_default();
            outln!(
                "removed {} key(s) for {name} from {}{backup}",
                result.removed,
                result.file.display()
            );
        }
    }
    if total == 0 {
        // ssh-keygen -R only warns when the host is not in a file; a forget that forgot nothing
        // usually means a different name reached the host (another -F, -p or HostKeyAlias), so
        // say so and fail, for scripts as for people.
        let files: Vec<String> = config
            .user_known_hosts_files
            .iter()
            .map(|path| path.display().to_string())
            .collect();
        let message = if files.is_empty() {
            format!("nothing to forget for {name}: UserKnownHostsFile is none")
        } else {
            format!(
                "nothing to forget: no keys for {name} in {}",
                files.join(", ")
            )
        };
        return Err(Error::host_key(message).with_hint(format!(
            "give the -F, -p and -o that reach the host, as for `xfer doctor`; \
             `ssh-keygen -F '{name}' -f FILE` shows what a file holds for that name"
        )));
    }
    Ok(())
}
