//! Getting a secret into a private file on a remote disk, and checking it there, without the
//! value ever appearing on a command line, in an environment, a log or an error.
//!
//! Each operation is one fixed POSIX sh script run over an exec channel. Everything variable
//! travels on the channel's stdin: first the target path and the options, one per line, then
//! (for a write) the value itself to the end of the input. The script runs under `umask 077`, so
//! the parent directory (if made) is 0700 and the temporary file is 0600 from its first byte;
//! the value is written to that temporary file beside the target, synced, and renamed over the
//! target, so no reader ever sees it half-written or with wider permissions. Before writing, the
//! script asks `stat -f` what filesystem the directory is on and refuses shared and network
//! filesystems (NFS, SMB, 9p, FUSE, Ceph, Lustre, ...), where other machines' users or admins
//! could read the file, unless the caller allows it.

use crate::error::{Error, ErrorKind, Result};
use crate::ssh::connect::Connection;
use crate::ssh::exec::{self, ExecLimits, ExecOutput};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use std::time::Duration;

/// The largest secret or remote secret file xfer handles; tokens and netrc files are tiny.
pub const MAX_SECRET_SIZE: usize = 1 << 20;

const LIMITS: ExecLimits = ExecLimits {
    max_output: MAX_SECRET_SIZE + 4096,
    timeout: Duration::from_secs(60),
};

/// Shared and network filesystem types as `stat -f -c %T` names them.
const SHARED_FILESYSTEMS: &str = "nfs*|cifs|smb*|9p|v9fs|fuse*|ceph|lustre|gpfs|glusterfs|afs|beegfs|orangefs|ocfs2|gfs2|panfs|wekafs|pvfs2|cvfs|fhgfs";

/// Resolves the target (relative paths and `~/` from the login directory) and reports the
/// filesystem of its directory; shared by all scripts.
macro_rules! preamble {
    () => {
        r#"set -u
umask 077
IFS= read -r target || exit 64
IFS= read -r allow_shared || exit 64
case $target in
  "~") target=$HOME ;;
  "~/"*) target=$HOME/${target#"~/"} ;;
  /*) ;;
  *) target=$HOME/$target ;;
esac
dir=$(dirname -- "$target")
"#
    };
}

/// Writes stdin's remainder to the target, privately and atomically.
const WRITE_SCRIPT: &str = concat!(
    preamble!(),
    r#"mkdir -p -- "$dir" || { echo "error mkdir"; exit 73; }
fs=$(stat -f -c %T -- "$dir" 2>/dev/null) || fs=unknown
case $fs in
  nfs*|cifs|smb*|9p|v9fs|fuse*|ceph|lustre|gpfs|glusterfs|afs|beegfs|orangefs|ocfs2|gfs2|panfs|wekafs|pvfs2|cvfs|fhgfs)
    if [ "$allow_shared" != 1 ]; then echo "shared $fs"; exit 65; fi ;;
esac
tmp=$dir/.xfer-secret.$$
trap "rm -f -- \"\$tmp\"" EXIT
cat > "$tmp" || { echo "error write"; exit 74; }
sync -- "$tmp" 2>/dev/null || sync
mv -f -- "$tmp" "$target" || { echo "error rename"; exit 75; }
trap - EXIT
echo "ok $fs"
"#
);

/// Prints the target's content (for a netrc merge), or `missing`.
const READ_SCRIPT: &str = concat!(
    preamble!(),
    r#"if [ -e "$target" ] || [ -L "$target" ]; then
  [ -f "$target" ] && [ ! -L "$target" ] || { echo "notfile"; exit 66; }
  printf "present\n"
  cat -- "$target" || exit 74
else
  echo "missing"
fi
"#
);

/// Reports what a check needs: kind, mode, owner, filesystem, and a SHA-256 of the content;
/// never the content.
const INSPECT_SCRIPT: &str = concat!(
    preamble!(),
    r#"if [ -L "$target" ]; then echo "kind symlink"; exit 0; fi
if [ ! -e "$target" ]; then echo "kind missing"; exit 0; fi
if [ ! -f "$target" ]; then echo "kind other"; exit 0; fi
echo "kind file"
echo "mode $(stat -c %a -- "$target")"
if [ -O "$target" ]; then echo "owned yes"; else echo "owned no"; fi
echo "fs $(stat -f -c %T -- "$target" 2>/dev/null || echo unknown)"
if command -v openssl >/dev/null 2>&1; then
  echo "sha256 $(openssl dgst -sha256 -r < "$target" | cut -c1-64)"
elif command -v sha256sum >/dev/null 2>&1; then
  echo "sha256 $(sha256sum < "$target" | cut -c1-64)"
fi
"#
);

/// Where a secret went.
#[derive(Debug, Clone)]
pub struct Written {
    pub filesystem: String,
}

/// What `xfer secret check` learns about a remote secret file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspection {
    pub exists: bool,
    pub regular_file: bool,
    pub mode: Option<u32>,
    pub owned_by_user: bool,
    pub filesystem: Option<String>,
    pub sha256: Option<[u8; 32]>,
}

impl Inspection {
    pub fn on_shared_filesystem(&self) -> bool {
        self.filesystem.as_deref().is_some_and(is_shared_filesystem)
    }
}

/// Whether `stat -f -c %T` names a shared or network filesystem (mirrors the scripts' list).
pub fn is_shared_filesystem(name: &str) -> bool {
    SHARED_FILESYSTEMS
        .split('|')
        .any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == pattern,
        })
}

/// Refuses paths the line-based protocol cannot carry.
fn check_path(path: &str) -> Result<()> {
    if path.is_empty() || path.contains('\n') || path.contains('\0') {
        return Err(Error::usage(
            "the remote path must be non-empty and contain no newline or NUL",
        ));
    }
    Ok(())
}

fn header(path: &str, allow_shared_fs: bool) -> Vec<u8> {
    format!("{path}\n{}\n", u8::from(allow_shared_fs)).into_bytes()
}

fn failure(connection: &Connection, path: &str, output: &ExecOutput) -> Error {
    let label = connection.label();
    let answer = output.stdout_text();
    let first = answer.lines().next().unwrap_or("").trim();
    // Only the script's own fixed words and the filesystem name are ever shown.
    let (message, hint) = match (output.status, first) {
        (Some(65), line) => (
            format!(
                "{label}: {path} is on a shared filesystem ({}); a secret there can be read from other machines",
                crate::target::printable(line.strip_prefix("shared ").unwrap_or("unknown"))
            ),
            "choose a path on the machine's own disk with --to, or pass --allow-shared-fs if you accept the risk",
        ),
        (Some(73), _) => (
            format!("{label}: cannot create the directory of {path}"),
            "check the path and the permissions of its parent directories",
        ),
        (Some(74), _) => (
            format!("{label}: writing {path} failed (the remote disk may be full)"),
            "free space on the remote (xfer doctor ALIAS --path DIR shows it), then re-run",
        ),
        (Some(75), _) => (
            format!("{label}: could not move the new file over {path}"),
            "check that the target is not a directory and that its directory is writable",
        ),
        (Some(66), _) => (
            format!("{label}: {path} exists and is not a regular file"),
            "choose another path with --to",
        ),
        (status, _) => (
            format!("{label}: the remote script failed for {path} (status {status:?})"),
            "check that the login has a POSIX sh, and see xfer doctor ALIAS",
        ),
    };
    Error::new(ErrorKind::Remote, message).with_hint(hint)
}

/// Writes `content` to `path` on the remote, privately and atomically.
pub async fn write(
    connection: &Connection,
    path: &str,
    content: &SecretSlice<u8>,
    allow_shared_fs: bool,
) -> Result<Written> {
    check_path(path)?;
    if content.expose_secret().len() > MAX_SECRET_SIZE {
        return Err(Error::usage(
            "the secret is larger than 1 MiB; xfer carries tokens and credentials, not files",
        ));
    }
    let mut input = header(path, allow_shared_fs);
    input.extend_from_slice(content.expose_secret());
    let input = SecretSlice::from(input);
    let output = exec::run(connection, WRITE_SCRIPT, input.expose_secret(), LIMITS).await?;
    let answer = output.stdout_text();
    match answer.lines().last() {
        Some(line) if output.success() && line.starts_with("ok ") => Ok(Written {
            filesystem: crate::target::printable(line.trim_start_matches("ok ").trim()),
        }),
        _ => Err(failure(connection, path, &output)),
    }
}

/// Reads a remote secret file (for a netrc merge); None when it does not exist.
pub async fn read(connection: &Connection, path: &str) -> Result<Option<SecretString>> {
    check_path(path)?;
    let output = exec::run(connection, READ_SCRIPT, &header(path, false), LIMITS).await?;
    if !output.success() {
        return Err(failure(connection, path, &output));
    }
    let stdout = SecretSlice::from(output.stdout);
    let bytes = stdout.expose_secret();
    if bytes.starts_with(b"missing\n") {
        return Ok(None);
    }
    let Some(content) = bytes.strip_prefix(b"present\n") else {
        return Err(Error::remote(format!(
            "{}: unexpected answer while reading {path}",
            connection.label()
        )));
    };
    if content.len() > MAX_SECRET_SIZE {
        return Err(Error::remote(format!(
            "{}: {path} is larger than 1 MiB; refusing to merge into it",
            connection.label()
        )));
    }
    match std::str::from_utf8(content) {
        Ok(text) => Ok(Some(SecretString::from(text.to_string()))),
        Err(_) => Err(Error::remote(format!(
            "{}: {path} is not UTF-8 text; refusing to merge into it",
            connection.label()
        ))),
    }
}

/// Inspects a remote secret file without reading its content back.
pub async fn inspect(connection: &Connection, path: &str) -> Result<Inspection> {
    check_path(path)?;
    let output = exec::run(connection, INSPECT_SCRIPT, &header(path, false), LIMITS).await?;
    if !output.success() {
        return Err(failure(connection, path, &output));
    }
    let mut inspection = Inspection::default();
    for line in output.stdout_text().lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        match key {
            "kind" => {
                inspection.exists = value != "missing";
                inspection.regular_file = value == "file";
            }
            "mode" => inspection.mode = u32::from_str_radix(value.trim(), 8).ok(),
            "owned" => inspection.owned_by_user = value == "yes",
            "fs" => inspection.filesystem = Some(crate::target::printable(value.trim())),
            "sha256" => inspection.sha256 = crate::remote::parse_digest_hex(value.trim()),
            _ => {}
        }
    }
    Ok(inspection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_parse() {
        for script in [WRITE_SCRIPT, READ_SCRIPT, INSPECT_SCRIPT] {
            exec::assert_parses(script);
        }
    }

    #[test]
    fn the_scripts_and_the_checker_agree_on_shared_filesystems() {
        assert!(WRITE_SCRIPT.contains(SHARED_FILESYSTEMS));
        for name in [
            "nfs",
            "nfs4",
            "cifs",
            "smb2",
            "fuseblk",
            "fuse.sshfs",
            "ceph",
            "lustre",
            "v9fs",
        ] {
            assert!(is_shared_filesystem(name), "{name}");
        }
        for name in ["ext2/ext3", "xfs", "btrfs", "tmpfs", "overlayfs", "zfs"] {
            assert!(!is_shared_filesystem(name), "{name}");
        }
    }

    #[test]
    fn paths_that_break_the_protocol_are_refused() {
        assert!(check_path("a\nb").is_err());
        assert!(check_path("").is_err());
        assert!(check_path("~/.config/x y").is_ok());
    }
}
