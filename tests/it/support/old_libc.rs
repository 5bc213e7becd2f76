//! An OpenSSH sshd whose sessions run on an older C library than the machine's, for tests that
//! an agent runs on hosts older than the one it was built on. This module owns the Debian
//! bullseye root (glibc 2.31) those sessions run in: built once per machine with `debootstrap`
//! under [`CACHE_DIR`], by whichever test process gets [`LOCK_FILE`] first; and
//! [`OldLibcSshd`], an [`Sshd`] with `ChrootDirectory` at that root, which its sessions see
//! read-only, with /proc bound inside it and a fresh, writable home and /tmp of its own bound
//! over the root's, all in sshd's own mount namespace: the machine and other tests see none of
//! it, and no session changes the root the next test gets.
//!
//! It needs root (debootstrap, chroot, the mount namespace) and the package debootstrap, as
//! `.ci/run` installs; the first build downloads the root (about 180 MB unpacked).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{Sshd, SshdBuilder, run_with_timeout, running_as_root};

/// Where the root is kept, machine-wide: every checkout and test process shares one build.
pub const CACHE_DIR: &str = "/var/cache/xfer-tests";
/// The Debian release of the root, and the root's name in [`CACHE_DIR`].
const SUITE: &str = "bullseye";
/// flock(2)ed exclusively while a process checks or builds the root, so it is built once.
const LOCK_FILE: &str = "/var/cache/xfer-tests/bullseye.lock";
/// Names of unfinished builds in [`CACHE_DIR`]: built there, beside the root, so that the
/// finished one is renamed into place on the same filesystem, all at once.
const BUILD_PREFIX: &str = "bullseye.build-";
const DEBOOTSTRAP: &str = "/usr/sbin/debootstrap";
/// A download of the base system and its unpacking: about a minute on a good link, but CI
/// machines and mirrors are sometimes slow.
const BUILD_LIMIT: Duration = Duration::from_secs(20 * 60);
/// What the agent's scripts and these tests run on the remote; minbase has them all.
const REMOTE_TOOLS: &[&str] = &[
    "sh",
    "stat",
    "id",
    "uname",
    "cat",
    "mkdir",
    "chmod",
    "mv",
    "rm",
    "dd",
    "sha256sum",
    "cksum",
    "ldd",
];
/// The login's home inside the root: sshd takes root's passwd entry from the machine, and the
/// tests run as root.
const HOME_INSIDE: &str = "/root";

/// The bullseye root, built if this machine has none yet, and the glibc version in it.
struct OldRoot {
    path: PathBuf,
    glibc_version: String,
}

/// The root, checked once per test process.
fn old_root() -> &'static OldRoot {
    static ROOT: OnceLock<OldRoot> = OnceLock::new();
    ROOT.get_or_init(|| {
        assert!(
            running_as_root(),
            "the old-libc fixture builds a {SUITE} root with debootstrap and chroots sshd's sessions into it: run the tests as root, as CI does"
        );
        assert!(
            Path::new(DEBOOTSTRAP).is_file(),
            "{DEBOOTSTRAP} is missing: install the package debootstrap (.ci/run does)"
        );
        let path = Path::new(CACHE_DIR).join(SUITE);
        ensure_root(&path);
        check_chroot_rules(&path);
        check_tools(&path);
        let glibc_version = glibc_version(&path);
        OldRoot {
            path,
            glibc_version,
        }
    })
}

/// Builds the root at `path` unless it is there, under [`LOCK_FILE`]: a process that waited
/// for another's build finds it finished.
fn ensure_root(path: &Path) {
    fs::create_dir_all(CACHE_DIR)
        .and_then(|()| fs::set_permissions(CACHE_DIR, fs::Permissions::from_mode(0o755)))
        .unwrap_or_else(|error| panic!("cannot create {CACHE_DIR}: {error}"));
    // Blocking: a build in another process ends within its own BUILD_LIMIT.
    let _lock = super::lock_exclusively(Path::new(LOCK_FILE));
    if path.is_dir() {
        return;
    }
    remove_unfinished_builds();
    let build = tempfile::Builder::new()
        .prefix(BUILD_PREFIX)
        .tempdir_in(CACHE_DIR)
        .unwrap_or_else(|error| panic!("cannot create a build directory in {CACHE_DIR}: {error}"));
    let started = Instant::now();
    // No mirror argument: debootstrap's default.
    let output = run_with_timeout(
        Command::new(DEBOOTSTRAP)
            .args(["--variant=minbase", SUITE])
            .arg(build.path()),
        BUILD_LIMIT,
    );
    if !output.status.success() {
        let log = fs::read_to_string(build.path().join("debootstrap/debootstrap.log"))
            .unwrap_or_default();
        panic!(
            "debootstrap --variant=minbase {SUITE} failed ({}):\n{}{}\n--- debootstrap.log ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            tail_lines(&log, 40)
        );
    }
    eprintln!(
        "built the {SUITE} root for the old-libc fixture in {:.0?}",
        started.elapsed()
    );
    // The downloaded packages (about 36 MB) are never used again.
    remove_packages(&build.path().join("var/cache/apt/archives"));
    // A temporary directory is 0700; a system's root is 0755, as sessions expect.
    let built = build.keep();
    fs::set_permissions(&built, fs::Permissions::from_mode(0o755))
        .and_then(|()| fs::rename(&built, path))
        .unwrap_or_else(|error| {
            panic!(
                "cannot move the built root {} to {}: {error}",
                built.display(),
                path.display()
            )
        });
}

/// Removes what a build stopped half-way (a killed test process) left. Only under the lock,
/// where no other build is running.
fn remove_unfinished_builds() {
    let entries =
        fs::read_dir(CACHE_DIR).unwrap_or_else(|error| panic!("cannot list {CACHE_DIR}: {error}"));
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(BUILD_PREFIX)
        {
            let path = entry.path();
            fs::remove_dir_all(&path).unwrap_or_else(|error| {
                panic!(
                    "cannot remove the unfinished build {}: {error}",
                    path.display()
                )
            });
        }
    }
}

/// Deletes the `.deb` files debootstrap leaves in the root's apt cache.
fn remove_packages(archives: &Path) {
    let Ok(entries) = fs::read_dir(archives) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|extension| extension == "deb") {
            fs::remove_file(&path)
                .unwrap_or_else(|error| panic!("cannot remove {}: {error}", path.display()));
        }
    }
}

/// sshd refuses a `ChrootDirectory` any component of which is not owned by root or is
/// writable by group or others; saying so here names the directory, which sshd's log does not
/// show the test.
fn check_chroot_rules(root: &Path) {
    for directory in root.ancestors() {
        let metadata = fs::metadata(directory)
            .unwrap_or_else(|error| panic!("cannot stat {}: {error}", directory.display()));
        assert!(
            metadata.uid() == 0 && metadata.mode() & 0o022 == 0,
            "sshd cannot chroot into {}: {} is owned by uid {} with mode {:o}, and must be root's and writable by nobody else",
            root.display(),
            directory.display(),
            metadata.uid(),
            metadata.mode() & 0o7777
        );
    }
}

/// A root left by an older version of this module may lack something added since.
fn check_tools(root: &Path) {
    let script = format!(
        "for tool in {}; do command -v \"$tool\" >/dev/null || echo \"$tool\"; done",
        REMOTE_TOOLS.join(" ")
    );
    let output = run_with_timeout(
        Command::new("chroot")
            .arg(root)
            .args(["/bin/sh", "-c", &script]),
        Duration::from_secs(30),
    );
    let missing = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && missing.trim().is_empty(),
        "the {SUITE} root {} lacks {} ({}): remove it and the tests build it again\n{}",
        root.display(),
        missing.split_whitespace().collect::<Vec<_>>().join(", "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The upstream version of the root's libc6 package, e.g. `2.31` for `2.31-13+deb11u11`, from
/// dpkg's database: read without running anything in the root.
fn glibc_version(root: &Path) -> String {
    let status_path = root.join("var/lib/dpkg/status");
    let status = fs::read_to_string(&status_path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", status_path.display()));
    let version = status
        .split("\n\n")
        .find(|paragraph| paragraph.lines().any(|line| line == "Package: libc6"))
        .and_then(|paragraph| {
            paragraph
                .lines()
                .find_map(|line| line.strip_prefix("Version: "))
        })
        .unwrap_or_else(|| panic!("{} names no libc6 version", status_path.display()));
    // [epoch:]upstream-revision
    let upstream = version.rsplit_once(':').map_or(version, |(_, rest)| rest);
    upstream
        .split_once('-')
        .map_or(upstream, |(upstream, _)| upstream)
        .to_owned()
}

fn tail_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// An [`Sshd`] whose sessions (commands, and sftp through `internal-sftp`) run chrooted in the
/// bullseye root, as root, with a home and a /tmp of their own. Dropping it stops sshd and
/// removes both.
pub struct OldLibcSshd {
    sshd: Sshd,
    // Holds `home` and `tmp`. Declared after sshd so that it is removed once sshd is gone.
    dir: TempDir,
}

impl OldLibcSshd {
    /// With the harness's default settings.
    pub fn start() -> OldLibcSshd {
        OldLibcSshd::start_with(Sshd::builder())
    }

    /// With `builder`'s settings (a log level, more configuration), to which this adds the
    /// chroot, its mounts and the home.
    pub fn start_with(builder: SshdBuilder) -> OldLibcSshd {
        let root = old_root();
        let dir = tempfile::Builder::new()
            .prefix("xfer-old-libc-")
            .tempdir()
            .unwrap_or_else(|error| {
                panic!("cannot create a directory for the old-libc sshd: {error}")
            });
        // The modes of a system's own: /root is its owner's alone, /tmp everyone's, sticky.
        for (name, mode) in [("home", 0o700), ("tmp", 0o1777)] {
            let path = dir.path().join(name);
            fs::create_dir(&path)
                .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(mode)))
                .unwrap_or_else(|error| panic!("cannot create {}: {error}", path.display()));
        }
        let sshd = builder
            // HostKey and AuthorizedKeysFile keep the machine's paths: sshd reads them before
            // it chroots.
            .extra_config(&format!(
                "ChrootDirectory {}\n\
                 SetEnv HOME={HOME_INSIDE}\n\
                 Subsystem sftp internal-sftp",
                root.path.display()
            ))
            // Sessions run as root: only a read-only mount keeps them from changing the root
            // every later test, and every checkout on the machine, shares.
            .private_mount_read_only(&root.path, &root.path)
            // The agent finds itself through /proc/self/exe.
            .private_mount(Path::new("/proc"), &root.path.join("proc"))
            // Over the root's own: tests never see each other's files, and can write where
            // programs expect to.
            .private_mount(
                &dir.path().join("home"),
                &root.path.join(HOME_INSIDE.trim_start_matches('/')),
            )
            .private_mount(&dir.path().join("tmp"), &root.path.join("tmp"))
            .start();
        OldLibcSshd { sshd, dir }
    }

    pub fn sshd(&self) -> &Sshd {
        &self.sshd
    }

    /// The root the sessions run in, as the machine sees it.
    pub fn root(&self) -> &Path {
        &old_root().path
    }

    /// The glibc version inside the root, e.g. `2.31`.
    pub fn glibc_version(&self) -> &str {
        &old_root().glibc_version
    }

    /// The sessions' home (`/root` to them), as the machine sees it: put files here for a
    /// session to find, and read what it wrote.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The sessions' /tmp, as the machine sees it.
    pub fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    /// The sessions' home as they see it.
    pub fn home_inside(&self) -> &'static Path {
        Path::new(HOME_INSIDE)
    }

    /// A `Host alias` block reaching this server, appended to its ssh_config; returns that
    /// file's path (see [`Sshd::write_client_config`]).
    pub fn client_config(&self, alias: &str, extra: &[&str]) -> PathBuf {
        self.sshd.write_client_config(alias, extra)
    }
}
