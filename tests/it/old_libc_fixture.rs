//! The old-libc fixture (`support::old_libc`), checked with OpenSSH's own client before the
//! portable agent is tested on it:
//!
//! - a session runs in the bullseye root, not on the machine: its `ldd` reports the root's
//!   glibc, older than the machine's, and /proc is there for a program to find itself;
//! - a program built on this machine cannot start there: this test binary's own xfer, which
//!   runs here, fails in a session for want of a newer `GLIBC_2.x` symbol version;
//! - sftp works there, and what it writes lands in that fixture's own home, which another
//!   fixture does not share and the shared root never sees;
//! - sessions cannot change the shared root, but write to their own /tmp.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::old_libc::OldLibcSshd;
use crate::support::{run_with_timeout, said, text};

/// Bound on one ssh or sftp run: well under a second on loopback, but CI machines are small
/// and busy.
const LIMIT: Duration = Duration::from_secs(30);

/// `ssh -F config alias remote_command`, with no agent and nothing on stdin.
fn ssh(config: &Path, alias: &str, remote_command: &str) -> Output {
    run_with_timeout(
        Command::new("ssh")
            .arg("-F")
            .arg(config)
            .arg(alias)
            .arg(remote_command)
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null()),
        LIMIT,
    )
}

/// `sftp -F config -b batch alias`: the batch's commands, stopping at the first that fails.
fn sftp(config: &Path, alias: &str, batch: &Path) -> Output {
    run_with_timeout(
        Command::new("sftp")
            .arg("-F")
            .arg(config)
            .arg("-b")
            .arg(batch)
            .arg(alias)
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null()),
        LIMIT,
    )
}

/// The version at the end of `ldd --version`'s first line, e.g. `2.31` of
/// `ldd (Debian GLIBC 2.31-13+deb11u11) 2.31`.
fn ldd_version(output: &str) -> String {
    output
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().last())
        .unwrap_or_default()
        .to_owned()
}

/// `2.31` as `(2, 31)`, for comparing versions.
fn major_minor(version: &str) -> (u32, u32) {
    let mut parts = version.split('.').map(|part| {
        part.parse::<u32>()
            .unwrap_or_else(|_| panic!("{version:?}"))
    });
    (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    )
}

#[test]
fn sessions_run_on_the_roots_older_glibc() {
    let server = OldLibcSshd::start();
    assert_eq!(server.glibc_version(), "2.31");
    let config = server.client_config("old-libc", &[]);

    let output = ssh(&config, "old-libc", "ldd --version");
    assert!(
        output.status.success(),
        "{}\n{}",
        said(&output),
        server.sshd().log()
    );
    let remote = ldd_version(&text(&output.stdout));
    assert_eq!(remote, server.glibc_version(), "{}", said(&output));

    // Without the chroot the session would report the machine's own.
    let host = run_with_timeout(Command::new("ldd").arg("--version"), LIMIT);
    let host = ldd_version(&text(&host.stdout));
    assert!(
        major_minor(&host) > major_minor(&remote),
        "the machine's glibc {host} is not newer than the root's {remote}"
    );

    // What the agent reads to find its own executable.
    let output = ssh(&config, "old-libc", "readlink /proc/self/exe");
    assert!(output.status.success(), "{}", said(&output));
    assert_eq!(text(&output.stdout).trim_end(), "/usr/bin/readlink");
}

#[test]
fn a_program_built_here_cannot_start_there() {
    let server = OldLibcSshd::start();
    let built = Path::new(env!("CARGO_BIN_EXE_xfer"));
    let here = run_with_timeout(Command::new(built).arg("--version"), LIMIT);
    assert!(here.status.success(), "{}", said(&here));

    let copy = server.home().join("xfer");
    fs::copy(built, &copy)
        .and_then(|_| fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)))
        .unwrap_or_else(|error| panic!("cannot copy xfer to {}: {error}", copy.display()));
    let config = server.client_config("old-libc", &[]);
    let inside = server.home_inside().join("xfer");
    let output = ssh(
        &config,
        "old-libc",
        &format!("{} --version", inside.display()),
    );
    // e.g. "/root/xfer: /lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.34' not found
    // (required by /root/xfer)": the loader found the program, and the root's libc is too old.
    let message = text(&output.stderr);
    assert!(
        !output.status.success()
            && message.contains(&format!("{}: ", inside.display()))
            && message.contains("version `GLIBC_2.")
            && message.contains("' not found"),
        "{}",
        said(&output)
    );
}

#[test]
fn sftp_writes_land_in_each_fixtures_own_home() {
    let first = OldLibcSshd::start();
    let second = OldLibcSshd::start();
    let local = tempfile::tempdir().expect("a local directory");

    for (index, server) in [&first, &second].into_iter().enumerate() {
        let alias = format!("old-libc-{index}");
        let config = server.client_config(&alias, &[]);
        // Before anything is written: were the session not in this fixture's home, sftp's
        // writes would land in the machine's own /root.
        fs::write(server.home().join("marker"), format!("fixture {index}\n"))
            .expect("write the marker");
        let output = ssh(&config, &alias, "cat /root/marker");
        assert_eq!(
            text(&output.stdout),
            format!("fixture {index}\n"),
            "{}",
            said(&output)
        );

        let name = format!("upload-{index}");
        let contents = format!("written through sftp to fixture {index}\n");
        let sent = local.path().join(&name);
        let back = local.path().join(format!("{name}.back"));
        fs::write(&sent, &contents).expect("write the file to upload");
        let batch = local.path().join(format!("{name}.batch"));
        fs::write(
            &batch,
            format!(
                "put {} {name}\nget {name} {}\n",
                sent.display(),
                back.display()
            ),
        )
        .expect("write the sftp batch");
        let output = sftp(&config, &alias, &batch);
        assert!(
            output.status.success(),
            "{}\n{}",
            said(&output),
            server.sshd().log()
        );
        assert_eq!(
            fs::read_to_string(&back).expect("the file got back"),
            contents
        );
        // In the session's home, /root to it, which is this fixture's own directory.
        assert_eq!(
            fs::read_to_string(server.home().join(&name)).expect("the file in the home"),
            contents
        );
        let output = ssh(&config, &alias, &format!("cat /root/{name}"));
        assert_eq!(text(&output.stdout), contents, "{}", said(&output));
    }

    for (server, other) in [(&first, "upload-1"), (&second, "upload-0")] {
        assert!(
            !server.home().join(other).exists(),
            "{} holds {other}, written through the other fixture",
            server.home().display()
        );
    }
    // Every session wrote to a home bound over the root's /root, never to the root itself,
    // whose /root holds what debootstrap put there and nothing else.
    let shared = first.root().join("root");
    let left: Vec<_> = fs::read_dir(&shared)
        .expect("list the root's /root")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| !matches!(name.as_str(), ".bashrc" | ".profile"))
        .collect();
    assert!(left.is_empty(), "{} holds {left:?}", shared.display());
}

#[test]
fn sessions_cannot_change_the_shared_root_but_write_their_own_tmp() {
    let server = OldLibcSshd::start();
    let config = server.client_config("old-libc", &[]);
    let output = ssh(&config, "old-libc", "touch /etc/xfer-old-libc-test");
    assert!(
        !output.status.success() && text(&output.stderr).contains("Read-only file system"),
        "{}",
        said(&output)
    );
    assert!(!server.root().join("etc/xfer-old-libc-test").exists());

    let output = ssh(&config, "old-libc", "echo scratch > /tmp/scratch");
    assert!(output.status.success(), "{}", said(&output));
    assert_eq!(
        fs::read_to_string(server.tmp().join("scratch")).expect("the file in the fixture's /tmp"),
        "scratch\n"
    );
    assert!(!server.root().join("tmp/scratch").exists());
}
