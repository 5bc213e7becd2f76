//! Getting a secret into a private file on a remote disk, and checking it there, without the
//! value ever appearing on a command line, in an environment, a log or an error, and without
//! another account on the host being able to read or redirect it.
//!
//! Each operation is one fixed POSIX sh script run over an exec channel. Everything variable
//! travels on the channel's stdin: first the target path and the options, one per line, then
//! (for a write) the value itself to the end of the input. A write:
//! - refuses a target that is a directory, and a target directory that another account could
//!   change (writable by group or others without the sticky bit, or owned by another user
//!   other than root) unless the caller accepts it: such an account could swap names under the
//!   script;
//! - asks `stat -f` what filesystem the directory is on and accepts only local disk
//!   filesystems it knows; shared, network and unrecognised ones (NFS, SMB, 9p, FUSE, Ceph,
//!   Lustre, virtiofs, `UNKNOWN (0x...)`, ...), where other machines' users or admins could
//!   read the file, are refused unless the caller allows them;
//! - creates the temporary file beside the target exclusively (noclobber) under a random name
//!   from the client, under `umask 077`, and writes the value through that descriptor only;
//! - commits only if exactly the announced number of bytes arrived with the announced SHA-256
//!   (a link cut mid-value leaves the previous file as it was), the file synced without error,
//!   and the name still is that same regular 0600 file of the user; then renames it over the
//!   target.

use crate::error::{Error, ErrorKind, Result};
use crate::remote::runner::Runner;
use crate::ssh::exec::{ExecLimits, ExecOutput};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::Digest;
use std::time::Duration;

/// The largest secret or remote secret file xfer handles; tokens and netrc files are tiny.
pub const MAX_SECRET_SIZE: usize = 1 << 20;

const LIMITS: ExecLimits = ExecLimits {
    max_output: MAX_SECRET_SIZE + 4096,
    timeout: Duration::from_secs(60),
};

/// Local disk filesystems as GNU `stat -f -c %T` names them (`ext2/ext3` is every ext
/// version; the script asks `df -T` for the precise one). Anything else counts as shared.
const LOCAL_FILESYSTEMS: &str = "ext2/ext3|ext2|ext3|ext4|xfs|btrfs|tmpfs|ramfs|zfs|overlayfs|overlay|f2fs|jfs|reiserfs|bcachefs|nilfs|nilfs2|vfat|msdos|exfat|ntfs|ntfs3|hfs|hfsplus|udf|devtmpfs|aufs";

/// Resolves the target (relative paths and `~/` from the login directory); shared by all
/// scripts.
macro_rules! preamble {
    () => {
        r#"set -u
umask 077
IFS= read -r target || exit 64
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

/// The filesystem of `$dir` in `$fs`, refined from `ext2/ext3` to the mount's own type.
macro_rules! filesystem {
    () => {
        r#"fs=$(stat -f -c %T -- "$dir" 2>/dev/null) || fs=
[ -n "$fs" ] || fs=unknown
if [ "$fs" = ext2/ext3 ]; then
  precise=$(df -P -T -- "$dir" 2>/dev/null | awk "NR==2 {print \$2}")
  case $precise in ext2|ext3|ext4) fs=$precise ;; esac
fi
local=no
case $fs in
  ext2/ext3|ext2|ext3|ext4|xfs|btrfs|tmpfs|ramfs|zfs|overlayfs|overlay|f2fs|jfs|reiserfs|bcachefs|nilfs|nilfs2|vfat|msdos|exfat|ntfs|ntfs3|hfs|hfsplus|udf|devtmpfs|aufs) local=yes ;;
esac
"#
    };
}

/// Writes the value (the rest of stdin after six header lines) to the target, privately and
/// atomically. Exit statuses name what went wrong; see [`failure`].
const WRITE_SCRIPT: &str = concat!(
    preamble!(),
    r#"IFS= read -r allow_shared || exit 64
IFS= read -r allow_writable || exit 64
IFS= read -r nonce || exit 64
IFS= read -r length || exit 64
IFS= read -r expected || exit 64
case $nonce in ""|*[!0-9a-f]*) exit 64 ;; esac
case $length in ""|*[!0-9]*) exit 64 ;; esac
if [ -d "$target" ]; then echo "directory"; exit 77; fi
mkdir -p -- "$dir" || { echo "error mkdir"; exit 73; }
"#,
    filesystem!(),
    r#"if [ "$local" != yes ] && [ "$allow_shared" != 1 ]; then echo "shared $fs"; exit 65; fi
mode=$(stat -L -c %a -- "$dir" 2>/dev/null) || mode=
owner=$(stat -L -c %u -- "$dir" 2>/dev/null) || owner=
case $mode in
  ""|*[!0-7]*) open=unknown ;;
  [1357]???) open=no ;;
  *[2367]?|*[2367]) open=yes ;;
  *) open=no ;;
esac
if [ "$owner" != 0 ] && [ "$owner" != "$(id -u)" ]; then open=yes; fi
if [ "$open" != no ] && [ "$allow_writable" != 1 ]; then echo "writable $open"; exit 78; fi
tmp=$dir/.xfer-secret.$nonce
set -C
{ command exec 3>"$tmp"; } 2>/dev/null || { echo "error create"; exit 74; }
set +C
trap "rm -f -- \"\$tmp\"" EXIT
cat >&3 || { echo "error write"; exit 74; }
identity() { stat -c "%u %a %i %s %F" -- "$1" 2>/dev/null; }
created=$(stat -L -c %i "/proc/$$/fd/3" 2>/dev/null) || created=
now=$(identity "$tmp") || now=
exec 3>&-
set -- $now
[ "$#" -ge 5 ] || { echo "changed"; exit 79; }
[ "$4" = "$length" ] || { echo "short $4"; exit 80; }
[ "$5" = regular ] || { echo "changed"; exit 79; }
[ "$1 $2" = "$(id -u) 600" ] || { echo "changed"; exit 79; }
[ -z "$created" ] || [ "$3" = "$created" ] || { echo "changed"; exit 79; }
sum=
if command -v sha256sum >/dev/null 2>&1; then
  sum=$(sha256sum < "$tmp" | cut -c1-64)
elif command -v openssl >/dev/null 2>&1; then
  sum=$(openssl dgst -sha256 -r < "$tmp" | cut -c1-64)
fi
[ -z "$sum" ] || [ "$sum" = "$expected" ] || { echo "mismatch"; exit 80; }
sync -- "$tmp" 2>/dev/null || { echo "error sync"; exit 76; }
[ "$(identity "$tmp")" = "$now" ] || { echo "changed"; exit 79; }
mv -f -- "$tmp" "$target" || { echo "error rename"; exit 75; }
trap - EXIT
sync -- "$dir" 2>/dev/null
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
    filesystem!(),
    r#"if [ -L "$target" ]; then echo "kind symlink"; exit 0; fi
if [ ! -e "$target" ]; then echo "kind missing"; exit 0; fi
if [ ! -f "$target" ]; then echo "kind other"; exit 0; fi
echo "kind file"
echo "mode $(stat -c %a -- "$target")"
if [ -O "$target" ]; then echo "owned yes"; else echo "owned no"; fi
echo "fs $fs"
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
    /// Shared, network or unrecognised: anything but a local disk filesystem xfer knows.
    pub fn on_shared_filesystem(&self) -> bool {
        self.filesystem
            .as_deref()
            .is_none_or(|name| !is_local_filesystem(name))
    }
}

/// Whether `stat -f -c %T` (or `df -T`) names a local disk filesystem (mirrors the scripts'
/// list). Secrets go only there unless the user allows otherwise: an unknown name counts as
/// shared.
pub fn is_local_filesystem(name: &str) -> bool {
    LOCAL_FILESYSTEMS.split('|').any(|local| local == name)
}

/// What a write accepts beyond a private file on a local disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// A shared, network or unrecognised filesystem (`--allow-shared-fs`).
    pub allow_shared_fs: bool,
    /// A target directory another account can change (`--allow-writable-dir`).
    pub allow_writable_dir: bool,
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

fn header(path: &str) -> Vec<u8> {
    format!("{path}\n").into_bytes()
}

fn failure(label: &str, path: &str, output: &ExecOutput) -> Error {
    let path = crate::terminal::printable(path);
    let answer = output.stdout_text();
    let first = answer.lines().next().unwrap_or("").trim();
    if output.status.is_none() && output.signal.is_none() {
        return Error::connect(format!(
            "{label}: the connection dropped before the remote side finished with {path}; a secret file there is unchanged"
        ))
        .with_hint("re-run the same command when the host is reachable")
        .transient(true);
    }
    if !output.started {
        return Error::remote(format!(
            "{label}: this login runs no commands (an SFTP-only account, e.g. ForceCommand internal-sftp, or a restricted shell), and writing {path} needs one"
        ))
        .with_hint("xfer secret runs a small sh script on the host; use a login that may run commands (pull and push still work over SFTP)")
        .transient(false);
    }
    // Only the script's own fixed words and the filesystem name are ever shown.
    let (message, hint) = match (output.status, first) {
        (Some(65), line) => (
            format!(
                "{label}: {path} is on a shared, network or unrecognised filesystem ({}); a secret there may be readable from other machines",
                crate::terminal::printable(line.strip_prefix("shared ").unwrap_or("unknown"))
            ),
            "choose a path on the machine's own disk with --to, or pass --allow-shared-fs if you accept the risk",
        ),
        (Some(78), line) => (
            format!(
                "{label}: the directory of {path} is {} another account, which could swap the file under xfer",
                if line == "writable unknown" {
                    "of unknown ownership or mode, perhaps writable by"
                } else {
                    "writable by (or owned by)"
                }
            ),
            "choose a private directory with --to (chmod go-w on the directory), or pass --allow-writable-dir if you accept the risk",
        ),
        (Some(77), _) => (
            format!("{label}: {path} is a directory"),
            "name the file to write with --to, e.g. --to DIR/token",
        ),
        (Some(73), _) => (
            format!("{label}: cannot create the directory of {path}"),
            "check the path and the permissions of its parent directories",
        ),
        (Some(74), _) => (
            format!(
                "{label}: writing a new file beside {path} failed (the remote disk may be full, or the directory not writable)"
            ),
            "free space on the remote (xfer doctor ALIAS --path DIR shows it), then re-run",
        ),
        (Some(76), _) => (
            format!(
                "{label}: the new file for {path} could not be synced to disk; the previous file is unchanged"
            ),
            "check the remote disk (dmesg, free space), then re-run",
        ),
        (Some(79), _) => (
            format!(
                "{label}: the temporary file beside {path} was changed by someone else before it was committed; nothing was written"
            ),
            "another account can change that directory: choose a private directory with --to",
        ),
        (Some(80), _) => (
            format!(
                "{label}: the value did not arrive whole at {path} (the connection dropped?); the previous file is unchanged"
            ),
            "re-run the same command",
        ),
        (Some(75), _) => (
            format!("{label}: could not move the new file over {path}"),
            "check that the target is not a directory and that its directory is writable",
        ),
        (Some(66), _) => (
            format!("{label}: {path} exists and is not a regular file"),
            "choose another path with --to",
        ),
        (Some(126 | 127), _) => (
            format!("{label}: the login could not run /bin/sh for {path}"),
            "xfer secret needs a host that runs commands with a POSIX /bin/sh; see xfer doctor ALIAS",
        ),
        (Some(status), _) => (
            format!("{label}: the remote script for {path} failed with exit status {status}"),
            "see xfer doctor ALIAS",
        ),
        (None, _) => (
            format!(
                "{label}: the remote script for {path} was killed by signal {}",
                crate::terminal::printable(output.signal.as_deref().unwrap_or("unknown"))
            ),
            "see xfer doctor ALIAS",
        ),
    };
    let cut = output.status == Some(80);
    let kind = if cut {
        ErrorKind::Connect
    } else {
        ErrorKind::Remote
    };
    Error::new(kind, message).with_hint(hint).transient(cut)
}

/// Writes `content` to `path` on the remote, privately and atomically.
pub async fn write(
    runner: &mut Runner<'_>,
    path: &str,
    content: &SecretSlice<u8>,
    options: WriteOptions,
) -> Result<Written> {
    check_path(path)?;
    let value = content.expose_secret();
    if value.len() > MAX_SECRET_SIZE {
        return Err(Error::usage(
            "the secret is larger than 1 MiB; xfer carries tokens and credentials, not files",
        ));
    }
    // The digest of a secret is no secret worth hiding from its own host: it lets the script
    // refuse a value that did not arrive whole.
    let digest: [u8; 32] = sha2::Sha256::digest(value).into();
    let mut input = format!(
        "{path}\n{}\n{}\n{}\n{}\n{}\n",
        u8::from(options.allow_shared_fs),
        u8::from(options.allow_writable_dir),
        crate::remote::deploy::random_nonce(),
        value.len(),
        crate::blocks::to_hex(&digest),
    )
    .into_bytes();
    input.extend_from_slice(value);
    let input = SecretSlice::from(input);
    let output = runner
        .run(WRITE_SCRIPT, input.expose_secret(), LIMITS)
        .await?;
    let answer = output.stdout_text();
    match answer.lines().last() {
        Some(line) if output.success() && line.starts_with("ok ") => Ok(Written {
            filesystem: crate::terminal::printable(line.trim_start_matches("ok ").trim()),
        }),
        _ => Err(failure(runner.label(), path, &output)),
    }
}

/// Reads a remote secret file (for a netrc merge); None when it does not exist.
pub async fn read(runner: &mut Runner<'_>, path: &str) -> Result<Option<SecretString>> {
    check_path(path)?;
    let output = runner.run(READ_SCRIPT, &header(path), LIMITS).await?;
    if !output.success() {
        return Err(failure(runner.label(), path, &output));
    }
    let stdout = SecretSlice::from(output.stdout);
    let bytes = stdout.expose_secret();
    if bytes.starts_with(b"missing\n") {
        return Ok(None);
    }
    let Some(content) = bytes.strip_prefix(b"present\n") else {
        return Err(Error::remote(format!(
            "{}: unexpected answer while reading {path}",
            runner.label()
        )));
    };
    if content.len() > MAX_SECRET_SIZE {
        return Err(Error::remote(format!(
            "{}: {path} is larger than 1 MiB; refusing to merge into it",
            runner.label()
        )));
    }
    match std::str::from_utf8(content) {
        Ok(text) => Ok(Some(SecretString::from(text.to_string()))),
        Err(_) => Err(Error::remote(format!(
            "{}: {path} is not UTF-8 text; refusing to merge into it",
            runner.label()
        ))),
    }
}

/// Inspects a remote secret file without reading its content back.
pub async fn inspect(runner: &mut Runner<'_>, path: &str) -> Result<Inspection> {
    check_path(path)?;
    let output = runner.run(INSPECT_SCRIPT, &header(path), LIMITS).await?;
    if !output.success() {
        return Err(failure(runner.label(), path, &output));
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
            "fs" => inspection.filesystem = Some(crate::terminal::printable(value.trim())),
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
            crate::ssh::exec::assert_parses(script);
        }
    }

    #[test]
    fn the_scripts_and_the_checker_agree_on_local_filesystems() {
        for script in [WRITE_SCRIPT, INSPECT_SCRIPT] {
            assert!(script.contains(&format!("  {LOCAL_FILESYSTEMS}) local=yes ;;")));
        }
        for name in [
            "ext2/ext3",
            "ext4",
            "xfs",
            "btrfs",
            "tmpfs",
            "overlayfs",
            "zfs",
        ] {
            assert!(is_local_filesystem(name), "{name}");
        }
        // Names GNU stat prints for shared, network and unknown filesystems.
        for name in [
            "nfs",
            "nfs4",
            "cifs",
            "smb2",
            "fuseblk",
            "fuse.sshfs",
            "fuse",
            "ceph",
            "lustre",
            "v9fs",
            "gfs/gfs2",
            "k-afs",
            "afs",
            "coda",
            "vboxsf",
            "vmhgfs",
            "prl_fs",
            "acfs",
            "virtiofs",
            "gpfs",
            "UNKNOWN (0x12345678)",
            "unknown",
            "",
        ] {
            assert!(!is_local_filesystem(name), "{name}");
        }
        assert!(Inspection::default().on_shared_filesystem());
    }

    /// Runs the write script here with `/bin/sh`, as the remote would: header lines, then
    /// `value`. Returns the exit status and the script's output.
    fn write_here(
        target: &std::path::Path,
        writable: bool,
        length: usize,
        value: &[u8],
    ) -> (i32, String) {
        use std::io::Write;
        let digest: [u8; 32] = sha2::Sha256::digest(value).into();
        let mut input = format!(
            "{}\n0\n{}\n{}\n{length}\n{}\n",
            target.display(),
            u8::from(writable),
            crate::remote::deploy::random_nonce(),
            crate::blocks::to_hex(&digest)
        )
        .into_bytes();
        input.extend_from_slice(value);
        let mut child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(WRITE_SCRIPT)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&input).unwrap();
        let output = child.wait_with_output().unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    }

    fn leftovers(directory: &std::path::Path) -> Vec<String> {
        std::fs::read_dir(directory)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(".xfer-secret"))
            .collect()
    }

    #[test]
    fn the_write_script_commits_only_a_whole_value_in_a_private_directory() {
        use std::os::unix::fs::PermissionsExt;
        let directory = tempfile::tempdir().unwrap();
        let target = directory.path().join("token");
        let (status, output) = write_here(&target, false, 5, b"first");
        assert_eq!(status, 0, "{output}");
        assert_eq!(std::fs::read(&target).unwrap(), b"first");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o600);

        // A value cut short (fewer bytes than announced) leaves the previous file.
        let (status, output) = write_here(&target, false, 100, b"second");
        assert_eq!(status, 80, "{output}");
        assert_eq!(std::fs::read(&target).unwrap(), b"first");
        assert!(leftovers(directory.path()).is_empty());

        // A directory others can write is refused, and accepted only when asked.
        std::fs::set_permissions(directory.path(), std::fs::Permissions::from_mode(0o775)).unwrap();
        let (status, output) = write_here(&target, false, 6, b"second");
        assert_eq!((status, output.trim()), (78, "writable yes"));
        assert_eq!(std::fs::read(&target).unwrap(), b"first");
        let (status, output) = write_here(&target, true, 6, b"second");
        assert_eq!(status, 0, "{output}");
        assert_eq!(std::fs::read(&target).unwrap(), b"second");
        // The sticky bit keeps others from renaming or removing the user's files.
        std::fs::set_permissions(directory.path(), std::fs::Permissions::from_mode(0o1777))
            .unwrap();
        let (status, output) = write_here(&target, false, 5, b"third");
        assert_eq!(status, 0, "{output}");

        // A target that is a directory is refused, nothing made inside it.
        let inner = directory.path().join("inner");
        std::fs::create_dir(&inner).unwrap();
        let (status, output) = write_here(&inner, false, 5, b"value");
        assert_eq!((status, output.trim()), (77, "directory"));
        assert_eq!(std::fs::read_dir(&inner).unwrap().count(), 0);
        assert!(leftovers(directory.path()).is_empty());
    }

    #[test]
    fn the_write_script_replaces_a_symlink_at_the_target_without_following_it() {
        let directory = tempfile::tempdir().unwrap();
        let elsewhere = directory.path().join("elsewhere");
        std::fs::write(&elsewhere, b"keep").unwrap();
        let target = directory.path().join("token");
        std::os::unix::fs::symlink(&elsewhere, &target).unwrap();
        let (status, output) = write_here(&target, false, 5, b"value");
        assert_eq!(status, 0, "{output}");
        assert_eq!(std::fs::read(&elsewhere).unwrap(), b"keep");
        assert!(
            !std::fs::symlink_metadata(&target)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"value");
    }

    #[test]
    fn paths_that_break_the_protocol_are_refused() {
        assert!(check_path("a\nb").is_err());
        assert!(check_path("").is_err());
        assert!(check_path("~/.config/x y").is_ok());
    }
}
