//! `xfer forget-host HOST`: the `ssh-keygen -R '[host]:port'` of the re-created rental box,
//! applied to every user known_hosts file the host's config names.

use crate::cli::args::ForgetHostArgs;
use crate::cli::settings::ConnectionSettings;
use xfer::error::Result;
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
            println!(
                "removed {} key(s) for {name} from {}{backup}",
                result.removed,
                result.file.display()
            );
        }
    }
    if total == 0 && !quiet {
        let files: Vec<String> = config
            .user_known_hosts_files
            .iter()
            .map(|path| path.display().to_string())
            .collect();
        println!("no keys for {name} in {}", files.join(", "));
    }
    Ok(())
}
