//! Where `~user` is on a host: asked once, before a transfer plans anything.
//!
//! `host:~user/x` names another account's home, which only the host knows. OpenSSH's
//! sftp-server answers `expand-path@openssh.com` (as scp does it); where SFTP or that extension
//! is missing, a fixed script asks the account database (`getent`, or `/etc/passwd` where
//! there is no `getent`), the user name travelling on stdin.

use crate::error::{Error, Result};
use crate::remote::sftp::SftpRemote;
use crate::ssh::connect::Connection;
use crate::ssh::exec::{self, ExecLimits};
use std::sync::Arc;
use std::time::Duration;

/// Prints the home directory of the user named on stdin's first line.
const HOME_SCRIPT: &str = r#"IFS= read -r user || exit 64
case $user in ""|-*|*[!A-Za-z0-9._-]*) exit 64 ;; esac
home=
if command -v getent >/dev/null 2>&1; then
  home=$(getent passwd "$user" | cut -d: -f6)
fi
if [ -z "$home" ] && [ -r /etc/passwd ]; then
  home=$(awk -F: -v user="$user" "\$1 == user { print \$6; exit }" /etc/passwd)
fi
[ -n "$home" ] || exit 67
printf "%s\n" "$home"
"#;

/// The home directory of `user` on the host behind `connection`.
pub async fn user_home(connection: &Arc<Connection>, user: &str) -> Result<String> {
    let label = connection.label().to_string();
    crate::target::check_user_name(user)?;
    // The SFTP session ends before the script runs: a host may allow one session per
    // connection (sshd MaxSessions 1).
    let expanded = match SftpRemote::open(connection.clone()).await {
        Ok(sftp) => sftp.expand_path(&format!("~{user}")).await,
        Err(_) => None,
    };
    if let Some(home) = expanded {
        return Ok(home);
    }
    let output = exec::run(
        connection,
        HOME_SCRIPT,
        format!("{user}\n").as_bytes(),
        ExecLimits {
            max_output: 4096,
            timeout: Duration::from_secs(30),
        },
    )
    .await?;
    let home = output.stdout_text();
    let home = home.lines().next().unwrap_or("").trim();
    if output.success() && home.starts_with('/') {
        return Ok(home.to_string());
    }
    Err(Error::remote(format!(
        "{label}: cannot find the home directory of ~{}",
        crate::terminal::printable(user)
    ))
    .with_hint("check the user name, or give the absolute path")
    .transient(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_parses_and_finds_a_home() {
        exec::assert_parses(HOME_SCRIPT);
        let output = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(HOME_SCRIPT)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().expect("stdin").write_all(b"root\n")?;
                child.wait_with_output()
            })
            .unwrap();
        assert!(output.status.success());
        assert_eq!(String::from_utf8_lossy(&output.stdout), "/root\n");
    }
}
