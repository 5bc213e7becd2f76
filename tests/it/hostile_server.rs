//! xfer is safe against a lying server. Each test starts an in-process SSH server (russh, with
//! its own SFTP handler serving a fake tree from memory, see `hostile/`) that lies in one way,
//! runs the real `xfer pull` against it, and proves that xfer does not panic, writes nothing
//! outside the destination, prints what it refuses only in terminal-safe form, fails a lying
//! file without presenting partial data as complete (the remote mtime is set only after
//! verification) while the honest files still arrive, does not allocate what a claimed size
//! asks for, and stops when a listing or a tree never ends. Where a listing is what the server
//! makes large (endless, huge names, a deep tree of long names), the tests also measure xfer's
//! peak resident memory.

use crate::support;
use crate::support::{tail, text};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::hostile::{
    DEFAULT_MTIME, FakeFile, FakeServer, Listed, Listing, LyingAgent, Node, TYPE_DIRECTORY,
    TYPE_FILE, TYPE_SYMLINK, Tree, attributes,
};
use russh_sftp::protocol::StatusCode;
use tempfile::TempDir;
use xfer::engine::plan::{MAX_REFUSED_SHOWN, REFUSED_NAME_CHARS};
use xfer::local::{printable, printable_cut};
use xfer::remote::sftp::MAX_READDIRS_AHEAD;
use xfer::remote::{ENTRY_OVERHEAD, MAX_LISTING_BYTES};

/// The remote root every fake tree is served at.
const REMOTE_ROOT: &str = "/tree";

/// Long enough for a debug build on a busy machine; a pull of a few small files takes well
/// under a second.
const PULL_LIMIT: Duration = Duration::from_secs(60);

/// Address space xfer may use, in KiB: 2 GiB. A pull's memory must not grow with the sizes a
/// server claims; this is over twenty times what a pull of these trees needs (64 MiB is
/// enough), and keeps a runaway allocation from taking the whole machine (xfer aborts
/// instead, which the tests report).
const ADDRESS_SPACE_LIMIT_KIB: u64 = 2 << 20;

/// Resident memory a server may make xfer use while it refuses what it lists, in KiB: 256 MiB.
const MEMORY_BOUND_KIB: u64 = 256 << 10;

/// The mtime the lying files claim, so a test can tell whether xfer marked them complete.
const LYING_MTIME: u32 = 1_234_567_890;

const GOOD: &[u8] = b"good content, byte for byte\n";
const INNER: &[u8] = b"a file one directory down\n";
const BAIT: &[u8] = b"this must never be written anywhere\n";

/// One test's world: a scratch directory holding the client's keys and config and, a few
/// levels down, the destination (so that `..` from it still lands inside the scratch
/// directory, where a snapshot sees it); and the fake server.
struct Scene {
    scratch: TempDir,
    config: PathBuf,
    destination: PathBuf,
    server: FakeServer,
    before: BTreeMap<PathBuf, Seen>,
    passwd: Vec<String>,
}

/// /etc/passwd but the accounts the harness adds (`xfer-...`, `support::users`), which tests
/// running beside this one may add meanwhile: what a write by xfer would change is the rest.
fn passwd_but_harness_accounts() -> Vec<String> {
    String::from_utf8_lossy(&fs::read("/etc/passwd").unwrap_or_default())
        .lines()
        .filter(|line| !line.starts_with("xfer-"))
        .map(str::to_string)
        .collect()
}

impl Scene {
    fn new(tree: Tree) -> Scene {
        Scene::with_server(FakeServer::start(tree))
    }

    fn with_server(server: FakeServer) -> Scene {
        let scratch = tempfile::tempdir().expect("a scratch directory");
        let keys = scratch.path().join("keys");
        fs::create_dir(&keys).expect("the keys directory");
        let key = support::keygen(&keys, "client", "ed25519", None);
        let known_hosts = keys.join("known_hosts");
        fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{} {}\n", server.port, server.host_key),
        )
        .expect("known_hosts");
        let config = keys.join("ssh_config");
        fs::write(
            &config,
            format!(
                "Host evil\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  \
                 IdentitiesOnly yes\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n  \
                 BatchMode yes\n",
                server.port,
                support::current_user(),
                key.display(),
                known_hosts.display()
            ),
        )
        .expect("ssh_config");
        // Made beforehand, so that making it does not change its parent: any change there
        // is then something escaping.
        let destination = scratch.path().join("a/b/c/dest");
        fs::create_dir_all(&destination).expect("the destination");
        fs::write(scratch.path().join("a/b/outside.txt"), BAIT).expect("a file outside");
        let before = snapshot(scratch.path(), &destination);
        let passwd = passwd_but_harness_accounts();
        assert!(
            !Path::new("/etc/evil").exists(),
            "/etc/evil exists before the test"
        );
        Scene {
            scratch,
            config,
            destination,
            server,
            before,
            passwd,
        }
    }

    /// `xfer pull -F CONFIG --no-remote-digest evil:/tree DEST`, within `limit`.
    fn pull(&self, limit: Duration) -> Output {
        self.pull_with(&[], limit)
    }

    /// [`Scene::pull`] with more options.
    fn pull_with(&self, options: &[&str], limit: Duration) -> Output {
        self.pull_measured(options, limit).0
    }

    /// [`Scene::pull_with`], also returning xfer's peak resident memory in KiB.
    fn pull_measured(&self, options: &[&str], limit: Duration) -> (Output, u64) {
        let source = format!("evil:{REMOTE_ROOT}");
        let mut arguments: Vec<&OsStr> = vec![
            "pull".as_ref(),
            "-F".as_ref(),
            self.config.as_os_str(),
            "--no-remote-digest".as_ref(),
        ];
        arguments.extend(options.iter().map(OsStr::new));
        arguments.extend([OsStr::new(&source), self.destination.as_os_str()]);
        let started = Instant::now();
        let (output, peak_kib) =
            support::run_measuring_memory(&mut limited(support::xfer_command(), &arguments), limit);
        eprintln!(
            "xfer exited with {} after {:.1} s, peak resident memory {} MiB\n--- stderr ---\n{}--- stdout ---\n{}",
            output.status,
            started.elapsed().as_secs_f64(),
            peak_kib / 1024,
            tail(&shown(&output.stderr), 6000),
            tail(&shown(&output.stdout), 2000)
        );
        (output, peak_kib)
    }

    fn local(&self, relative: &str) -> PathBuf {
        self.destination.join(relative)
    }

    /// Nothing outside the destination changed: not in the scratch directory (where every
    /// `..` from the destination lands), not at the absolute paths the server named.
    fn assert_nothing_outside_changed(&self) {
        let after = snapshot(self.scratch.path(), &self.destination);
        for (path, seen) in &after {
            match self.before.get(path) {
                None => panic!("{} appeared outside the destination", path.display()),
                Some(before) => assert_eq!(
                    before,
                    seen,
                    "{} changed outside the destination",
                    path.display()
                ),
            }
        }
        for path in self.before.keys() {
            assert!(
                after.contains_key(path),
                "{} vanished outside the destination",
                path.display()
            );
        }
        assert!(!Path::new("/etc/evil").exists(), "/etc/evil was created");
        assert_eq!(
            passwd_but_harness_accounts(),
            self.passwd,
            "/etc/passwd changed"
        );
    }

    /// Every path below the destination, relative to it, links not followed.
    fn destination_entries(&self) -> Vec<String> {
        let mut entries: Vec<String> = snapshot(&self.destination, Path::new(""))
            .into_keys()
            .map(|path| path.display().to_string())
            .collect();
        entries.sort();
        entries
    }
}

/// `command` (the xfer binary, with its environment) run through `sh` with its address space
/// limited, so a runaway allocation fails inside xfer instead of exhausting the machine.
fn limited(command: Command, arguments: &[&OsStr]) -> Command {
    let mut wrapped = Command::new("sh");
    wrapped
        .arg("-c")
        .arg("ulimit -v \"$0\" && exec \"$@\"")
        .arg(ADDRESS_SPACE_LIMIT_KIB.to_string())
        .arg(command.get_program())
        .args(arguments)
        // glibc reserves 64 MiB of address space per malloc arena, up to eight per core;
        // that reservation is not memory xfer asked for, and would make the limit depend on
        // the machine.
        .env("MALLOC_ARENA_MAX", "2")
        .stdin(Stdio::null());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    wrapped
}

/// What a snapshot records of one entry.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    kind: &'static str,
    mode: u32,
    size: u64,
    mtime: (i64, i64),
    content: Vec<u8>,
    link_target: Option<PathBuf>,
}

/// Every entry below `root` except `skip` and what is below it, links not followed.
fn snapshot(root: &Path, skip: &Path) -> BTreeMap<PathBuf, Seen> {
    let mut seen = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(directory) = pending.pop() {
        for entry in fs::read_dir(&directory).expect("a readable directory") {
            let path = entry.expect("a directory entry").path();
            if path == skip {
                continue;
            }
            let metadata = fs::symlink_metadata(&path).expect("metadata");
            let kind = if metadata.file_type().is_symlink() {
                "link"
            } else if metadata.is_dir() {
                pending.push(path.clone());
                "directory"
            } else if metadata.is_file() {
                "file"
            } else {
                "special"
            };
            // Contents are compared only for small files: a lying size can leave a sparse
            // file of terabytes in the destination.
            let content = if kind == "file" && metadata.len() <= 1 << 20 {
                fs::read(&path).expect("file content")
            } else {
                Vec::new()
            };
            let relative = path
                .strip_prefix(root)
                .expect("below the root")
                .to_path_buf();
            seen.insert(
                relative,
                Seen {
                    kind,
                    mode: metadata.mode(),
                    size: if kind == "directory" {
                        0
                    } else {
                        metadata.len()
                    },
                    mtime: (metadata.mtime(), metadata.mtime_nsec()),
                    content,
                    link_target: fs::read_link(&path).ok(),
                },
            );
        }
    }
    seen
}

/// `bytes` with line breaks kept and everything else a terminal would act on escaped, for
/// echoing what xfer printed without trusting it.
fn shown(bytes: &[u8]) -> String {
    bytes
        .split(|&byte| byte == b'\n')
        .map(printable)
        .collect::<Vec<_>>()
        .join("\n")
}

/// xfer ended on its own: not by a signal (an abort on a failed allocation, a kill), not by a
/// panic.
fn assert_no_crash(output: &Output) {
    let stderr = shown(&output.stderr);
    assert!(
        output.status.code().is_some(),
        "xfer was killed by a signal ({}); stderr:\n{stderr}",
        output.status
    );
    assert_ne!(
        output.status.code(),
        Some(101),
        "xfer panicked; stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "xfer panicked; stderr:\n{stderr}"
    );
}

/// Nothing xfer printed can act on a terminal.
fn assert_terminal_safe(output: &Output) {
    for (stream, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        assert!(
            !bytes.contains(&0x1b),
            "a raw ESC byte reached {stream}: {}",
            printable(bytes)
        );
        assert!(
            !bytes.contains(&0),
            "a raw NUL byte reached {stream}: {}",
            printable(bytes)
        );
    }
}

/// xfer said it failed (the tests that expect this have already ruled out a crash).
fn assert_failed(output: &Output) {
    assert_ne!(output.status.code(), Some(0), "xfer reported success");
}

/// A file xfer marked complete (its mtime is the one the server claimed) holds exactly
/// `content`; a file that is absent or unmarked was not presented as complete.
fn assert_complete_only_if_correct(path: &Path, content: &[u8], claimed_mtime: u32) {
    let Ok(metadata) = fs::symlink_metadata(path) else {
        return;
    };
    if metadata.mtime() == i64::from(claimed_mtime) {
        assert!(
            metadata.is_file() && metadata.len() == content.len() as u64,
            "{} is marked complete (mtime {claimed_mtime}) but is {} bytes, not {}",
            path.display(),
            metadata.len(),
            content.len()
        );
        assert_eq!(
            fs::read(path).expect("readable"),
            content,
            "{} is marked complete but its content is wrong",
            path.display()
        );
    }
}

/// The file arrived whole and marked complete.
fn assert_arrived(path: &Path, content: &[u8]) {
    let bytes = fs::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    assert_eq!(bytes, content, "{} differs", path.display());
    let metadata = fs::symlink_metadata(path).expect("metadata");
    assert_eq!(
        metadata.mtime(),
        i64::from(DEFAULT_MTIME),
        "{} was not marked complete",
        path.display()
    );
}

fn file_attributes(size: u64) -> russh_sftp::protocol::FileAttributes {
    attributes(TYPE_FILE | 0o644, size, DEFAULT_MTIME)
}

fn directory_attributes() -> russh_sftp::protocol::FileAttributes {
    attributes(TYPE_DIRECTORY | 0o755, 4096, DEFAULT_MTIME)
}

/// A tree with `good.txt` and `sub/inner.txt`, honest.
fn honest_tree() -> Tree {
    let mut tree = Tree::new(REMOTE_ROOT);
    tree.add("", "good.txt", Node::file(GOOD))
        .add("", "sub", Node::directory())
        .add("sub", "inner.txt", Node::file(INNER));
    tree
}

/// A file that lies about its size (and claims [`LYING_MTIME`]).
fn lying(content: &[u8], claimed_size: u64, extra_bytes_per_read: u32) -> Node {
    Node::File(FakeFile {
        content: content.to_vec(),
        claimed_size,
        mode: 0o644,
        mtime: LYING_MTIME,
        extra_bytes_per_read,
    })
}

#[test]
fn the_scene_pulls_an_honest_tree() {
    // Proves the fake server and the scene, so that the other tests' failures are xfer's.
    let scene = Scene::new(honest_tree());
    let output = scene.pull(PULL_LIMIT);
    assert!(output.status.success(), "xfer failed on an honest tree");
    assert_arrived(&scene.local("good.txt"), GOOD);
    assert_arrived(&scene.local("sub/inner.txt"), INNER);
    assert_eq!(
        scene.destination_entries(),
        ["good.txt", "sub", "sub/inner.txt"]
    );
    scene.assert_nothing_outside_changed();
}

#[test]
fn hostile_names_are_refused_and_the_good_files_arrive() {
    let long_name = "n".repeat(300);
    let refused = [
        "../escape",
        "../../../../escape-far",
        "/etc/evil",
        "a/b",
        "sub/../../escape",
        "a\\b",
        "..\\escape",
        "bad\x1b[2Jname",
        "bell\x07\x1b]0;title\x07",
        "nul\0name",
        "   ",
        long_name.as_str(),
    ];
    let mut tree = honest_tree();
    // A real server lists `.` and `..`; this one claims they are files with content.
    tree.add("", ".", Node::file(BAIT))
        .add("", "..", Node::file(BAIT));
    for name in refused {
        tree.add("", name, Node::file(BAIT));
    }
    // A refused directory must not be entered either.
    tree.add("", "../evil-dir", Node::directory())
        .add("../evil-dir", "payload", Node::file(BAIT));

    // Permission bits a server may not plant: set-user-ID and set-group-ID.
    tree.add(
        "",
        "setuid",
        Node::File(FakeFile {
            content: GOOD.to_vec(),
            claimed_size: GOOD.len() as u64,
            mode: 0o6755,
            mtime: DEFAULT_MTIME,
            extra_bytes_per_read: 0,
        }),
    );

    let scene = Scene::new(tree);
    // The plan, as text and as JSON, shows the refused names too.
    for options in [&["--dry-run"][..], &["--dry-run", "--json"]] {
        let dry_run = scene.pull_with(options, PULL_LIMIT);
        assert_no_crash(&dry_run);
        assert_terminal_safe(&dry_run);
        assert!(dry_run.status.success(), "the dry run failed");
        // In JSON, the backslash of the escape is itself escaped.
        let expected = if options.contains(&"--json") {
            r"bad\\x1b[2Jname"
        } else {
            r"bad\x1b[2Jname"
        };
        assert!(
            text(&dry_run.stdout).contains(expected),
            "the plan does not show the refused name as {expected}"
        );
    }
    assert_eq!(scene.destination_entries(), Vec::<String>::new());

    let output = scene.pull(PULL_LIMIT);
    assert_no_crash(&output);
    assert_terminal_safe(&output);
    assert_arrived(&scene.local("good.txt"), GOOD);
    assert_arrived(&scene.local("sub/inner.txt"), INNER);
    assert_arrived(&scene.local("setuid"), GOOD);
    let mode = fs::symlink_metadata(scene.local("setuid"))
        .expect("metadata")
        .mode();
    assert_eq!(mode & 0o7777, 0o755, "setuid has mode {mode:o}");
    assert_eq!(
        scene.destination_entries(),
        ["good.txt", "setuid", "sub", "sub/inner.txt"]
    );
    scene.assert_nothing_outside_changed();

    let stderr = text(&output.stderr);
    for name in refused.iter().copied().chain(["../evil-dir"]) {
        // A long name is shown cut short.
        let shown = printable_cut(name.as_bytes(), REFUSED_NAME_CHARS);
        assert!(
            stderr.contains(&shown),
            "the refusal of {shown} is not reported"
        );
    }
    assert!(!stderr.contains(&long_name), "a long name is shown whole");
    // Refused names are never even asked for.
    let allowed = ["", "/good.txt", "/setuid", "/sub", "/sub/inner.txt"]
        .map(|path| format!("{REMOTE_ROOT}{path}"));
    for request in scene.server.requests() {
        let (_, path) = request.split_once(' ').expect("request and path");
        assert!(
            allowed.iter().any(|allowed| allowed == path),
            "xfer asked the server for {}",
            printable(request.as_bytes())
        );
    }
    // Skipping is reported, but what was asked for was done.
    assert_eq!(output.status.code(), Some(0), "exit status");
}

#[test]
fn links_out_of_the_tree_are_skipped_and_links_inside_are_kept() {
    let mut tree = honest_tree();
    tree.add("", "ok", Node::symlink("good.txt"))
        .add("", "link", Node::symlink("../../outside"))
        .add("", "abs", Node::symlink("/etc/passwd"))
        .add("", "sneaky", Node::symlink("sub/../../outside.txt"))
        .add("", "parent", Node::symlink(".."))
        .add(
            "",
            "loud",
            Node::symlink("/etc/\x1b[2J\x1b]0;owned\x07passwd"),
        )
        .add("sub", "up", Node::symlink("../good.txt"))
        .add("sub", "climb", Node::symlink("../../outside.txt"));
    let scene = Scene::new(tree);
    let output = scene.pull(PULL_LIMIT);
    assert_no_crash(&output);
    assert_terminal_safe(&output);
    assert_arrived(&scene.local("good.txt"), GOOD);
    for (link, target) in [("ok", "good.txt"), ("sub/up", "../good.txt")] {
        let metadata = fs::symlink_metadata(scene.local(link))
            .unwrap_or_else(|error| panic!("{link} was not made: {error}"));
        assert!(metadata.file_type().is_symlink(), "{link} is not a link");
        assert_eq!(
            fs::read_link(scene.local(link)).expect("a link target"),
            Path::new(target)
        );
    }
    let stderr = text(&output.stderr);
    for link in ["link", "abs", "sneaky", "parent", "loud", "sub/climb"] {
        assert!(
            fs::symlink_metadata(scene.local(link)).is_err(),
            "{link}, pointing outside the tree, was made"
        );
        assert!(
            stderr
                .lines()
                .any(|line| line.contains(link) && line.contains("outside the tree")),
            "no warning names {link}"
        );
    }
    assert_eq!(
        scene.destination_entries(),
        ["good.txt", "ok", "sub", "sub/inner.txt", "sub/up"]
    );
    scene.assert_nothing_outside_changed();
    assert_eq!(output.status.code(), Some(0), "exit status");
}

#[test]
fn a_directory_that_answers_as_a_link_becomes_a_real_directory() {
    // The listing says `sub` is a directory; lstat says it is a link to elsewhere, and
    // listing and reading through it follow that link (as a server racing a swap would).
    let mut tree = Tree::new(REMOTE_ROOT);
    tree.add("", "good.txt", Node::file(GOOD))
        .list("", "sub", Some(directory_attributes()))
        .set("sub", Node::symlink("/elsewhere"))
        .set_absolute("/elsewhere", Node::directory())
        .add_absolute("/elsewhere", "secret.txt", Node::file(INNER));
    let scene = Scene::new(tree);
    let output = scene.pull(PULL_LIMIT);
    assert_no_crash(&output);
    assert_terminal_safe(&output);
    assert_arrived(&scene.local("good.txt"), GOOD);
    let metadata = fs::symlink_metadata(scene.local("sub")).expect("sub was made");
    assert!(
        metadata.is_dir() && !metadata.file_type().is_symlink(),
        "sub is not a real directory"
    );
    assert_arrived(&scene.local("sub/secret.txt"), INNER);
    scene.assert_nothing_outside_changed();
}

#[test]
fn a_directory_that_cannot_be_listed_fails_cleanly() {
    // The listing says `sub` is a directory; the server then refuses to list it, once with a
    // message full of terminal escapes, once because it is in fact a file.
    let refusals = [
        Node::Directory(Listing::Refused(
            StatusCode::Failure,
            "Not a directory\x1b[2J\x1b]0;owned\x07".to_string(),
        )),
        Node::file(BAIT),
    ];
    for refusal in refusals {
        let mut tree = Tree::new(REMOTE_ROOT);
        tree.add("", "good.txt", Node::file(GOOD))
            .list("", "sub", Some(directory_attributes()))
            .set("sub", refusal);
        let scene = Scene::new(tree);
        let output = scene.pull(PULL_LIMIT);
        assert_no_crash(&output);
        assert_terminal_safe(&output);
        assert_failed(&output);
        assert!(
            text(&output.stderr).contains(&format!("{REMOTE_ROOT}/sub")),
            "the error does not name the directory"
        );
        assert_complete_only_if_correct(&scene.local("good.txt"), GOOD, DEFAULT_MTIME);
        assert!(
            fs::symlink_metadata(scene.local("sub")).map_or(true, |metadata| metadata.is_dir()),
            "sub is something other than a directory"
        );
        scene.assert_nothing_outside_changed();
    }
}

#[test]
fn a_root_that_changes_kind_between_stats_stays_inside() {
    let file = attributes(TYPE_FILE | 0o644, GOOD.len() as u64, DEFAULT_MTIME);
    let directory = directory_attributes();
    let link = attributes(TYPE_SYMLINK | 0o777, 2, DEFAULT_MTIME);
    let scripts = [
        vec![directory.clone(), file.clone()],
        vec![file.clone(), directory.clone()],
        vec![directory.clone(), link.clone()],
        vec![link, directory.clone(), file],
    ];
    for script in scripts {
        let mut tree = honest_tree();
        tree.answer_stats("", script);
        let scene = Scene::new(tree);
        let output = scene.pull(PULL_LIMIT);
        assert_no_crash(&output);
        assert_terminal_safe(&output);
        let metadata = fs::symlink_metadata(&scene.destination).expect("the destination");
        assert!(
            metadata.is_dir() && !metadata.file_type().is_symlink(),
            "the destination is no longer a directory"
        );
        for entry in scene.destination_entries() {
            let path = scene.local(&entry);
            let metadata = fs::symlink_metadata(&path).expect("metadata");
            if metadata.file_type().is_symlink() {
                let target = fs::read_link(&path).expect("a target");
                panic!("{entry} is a link to {}", target.display());
            }
        }
        scene.assert_nothing_outside_changed();
    }
}

#[test]
fn duplicate_names_in_one_listing_stay_inside() {
    let mut tree = honest_tree();
    // The same file twice; a name that is a directory and a file; one that is a link to a
    // directory and, listed again, that directory itself (listing it follows the link).
    tree.list("", "good.txt", None)
        .list("", "sub", Some(file_attributes(INNER.len() as u64)))
        .add("", "mixed", Node::symlink("sub"))
        .list("", "mixed", Some(directory_attributes()));
    let scene = Scene::new(tree);
    let output = scene.pull(PULL_LIMIT);
    assert_no_crash(&output);
    assert_terminal_safe(&output);
    assert_arrived(&scene.local("good.txt"), GOOD);
    assert_arrived(&scene.local("sub/inner.txt"), INNER);
    assert_complete_only_if_correct(&scene.local("mixed/inner.txt"), INNER, DEFAULT_MTIME);
    if let Ok(target) = fs::read_link(scene.local("mixed")) {
        assert_eq!(target, Path::new("sub"), "mixed points elsewhere");
    }
    scene.assert_nothing_outside_changed();
}

#[test]
fn a_file_that_is_a_directory_fails_alone() {
    let mut tree = honest_tree();
    tree.list("", "data", Some(file_attributes(10)))
        .set("data", Node::directory())
        .add("data", "hidden.txt", Node::file(BAIT));
    let scene = Scene::new(tree);
    let output = scene.pull(PULL_LIMIT);
    assert_no_crash(&output);
    assert_terminal_safe(&output);
    assert_failed(&output);
    assert_arrived(&scene.local("good.txt"), GOOD);
    assert_arrived(&scene.local("sub/inner.txt"), INNER);
    assert!(
        text(&output.stderr)
            .lines()
            .any(|line| line.contains("data") && line.contains("failed")),
        "no failure names data"
    );
    assert_complete_only_if_correct(&scene.local("data"), b"", DEFAULT_MTIME);
    assert!(
        !scene.local("data/hidden.txt").exists(),
        "xfer descended into what the listing called a file"
    );
    scene.assert_nothing_outside_changed();
}

#[test]
fn files_whose_size_lies_fail_alone_and_are_never_marked_complete() {
    let grown: Vec<u8> = (0..5000u32).map(|index| index as u8).collect();
    let mut tree = honest_tree();
    tree.add("", "grows.bin", lying(&grown, 1000, 0))
        .add("", "shrinks.bin", lying(b"ten bytes!", 1_000_000, 0))
        .add("", "overlong.bin", lying(&grown[..100], 100, 100))
        .add("", "not-empty.bin", lying(&grown[..50], 0, 0));
    let scene = Scene::new(tree);
    let output = scene.pull(PULL_LIMIT);
    assert_no_crash(&output);
    assert_terminal_safe(&output);
    assert_failed(&output);
    // A failing file does not stop the others.
    assert_arrived(&scene.local("good.txt"), GOOD);
    assert_arrived(&scene.local("sub/inner.txt"), INNER);
    let stderr = text(&output.stderr);
    for name in ["grows.bin", "shrinks.bin", "overlong.bin", "not-empty.bin"] {
        assert!(
            stderr
                .lines()
                .any(|line| line.contains(name) && line.contains("failed")),
            "no failure names {name}"
        );
        let path = scene.local(name);
        if let Ok(metadata) = fs::symlink_metadata(&path) {
            assert_ne!(
                metadata.mtime(),
                i64::from(LYING_MTIME),
                "{name} was marked complete"
            );
        }
    }
    scene.assert_nothing_outside_changed();
}

#[test]
fn a_huge_claimed_size_is_refused_without_allocating_it() {
    let mut tree = honest_tree();
    tree.add("", "huge.bin", lying(b"ten bytes!", 1 << 60, 0));
    let scene = Scene::new(tree);
    // Refusing takes no time; trying to allocate or fetch it would not finish in this.
    let output = scene.pull(Duration::from_secs(30));
    assert_no_crash(&output);
    assert_terminal_safe(&output);
    assert_failed(&output);
    assert_arrived(&scene.local("good.txt"), GOOD);
    assert!(
        text(&output.stderr)
            .lines()
            .any(|line| line.contains("huge.bin") && line.contains("failed")),
        "no failure names huge.bin"
    );
    assert_complete_only_if_correct(&scene.local("huge.bin"), b"ten bytes!", LYING_MTIME);
    scene.assert_nothing_outside_changed();
}

#[test]
fn claimed_sizes_that_add_up_past_the_largest_number_do_not_crash() {
    let mut tree = honest_tree();
    tree.add("", "max-1.bin", lying(b"ten bytes!", u64::MAX, 0))
        .add("", "max-2.bin", lying(b"ten bytes!", u64::MAX, 0));
    let scene = Scene::new(tree);
    // The plan totals the bytes to move, too.
    let dry_run = scene.pull_with(&["--dry-run"], PULL_LIMIT);
    assert_no_crash(&dry_run);
    assert_terminal_safe(&dry_run);
    let output = scene.pull(PULL_LIMIT);
    assert_no_crash(&output);
    assert_terminal_safe(&output);
    assert_failed(&output);
    assert_arrived(&scene.local("good.txt"), GOOD);
    for name in ["max-1.bin", "max-2.bin"] {
        assert!(
            text(&output.stderr)
                .lines()
                .any(|line| line.contains(name) && line.contains("failed")),
            "no failure names {name}"
        );
        assert_complete_only_if_correct(&scene.local(name), b"ten bytes!", LYING_MTIME);
    }
    scene.assert_nothing_outside_changed();
}

#[test]
fn a_claimed_size_the_disk_can_hold_sparse_is_fetched_in_bounded_memory() {
    // 8 TiB: under the block-count cap, and a size ext4, XFS and btrfs all accept for a sparse
    // file, so nothing refuses it before the fetch starts. The data ends after ten bytes.
    let mut tree = honest_tree();
    tree.add("", "sparse.bin", lying(b"ten bytes!", 1 << 43, 0));
    let scene = Scene::new(tree);
    let output = scene.pull(PULL_LIMIT);
    assert_no_crash(&output);
    assert_terminal_safe(&output);
    assert_failed(&output);
    assert_arrived(&scene.local("good.txt"), GOOD);
    assert!(
        text(&output.stderr)
            .lines()
            .any(|line| line.contains("sparse.bin") && line.contains("failed")),
        "no failure names sparse.bin"
    );
    assert_complete_only_if_correct(&scene.local("sparse.bin"), b"ten bytes!", LYING_MTIME);
    scene.assert_nothing_outside_changed();
}

#[test]
fn a_listing_that_never_ends_stops_at_its_cap() {
    // The names are `endless-` and nine digits: the cap on bytes comes before the one on
    // entries.
    let name_bytes = "endless-000000000".len() + ENTRY_OVERHEAD;
    let cap = (MAX_LISTING_BYTES / name_bytes) as u64;
    assert!(cap < xfer::remote::MAX_DIRECTORY_ENTRIES as u64);
    // Big batches reach the cap in a few thousand replies (seconds, even in a debug build).
    const BATCH: usize = 1000;
    let mut tree = Tree::new(REMOTE_ROOT);
    tree.set("", Node::Directory(Listing::Endless { batch: BATCH }));
    let scene = Scene::new(tree);
    let (output, peak_kib) = scene.pull_measured(&[], PULL_LIMIT);
    assert_no_crash(&output);
    assert_terminal_safe(&output);
    assert_failed(&output);
    // The most entries the caps let through, each short: what a listing weighs at most.
    assert!(
        peak_kib < MEMORY_BOUND_KIB,
        "xfer's resident memory peaked at {} MiB",
        peak_kib >> 10
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "listing {REMOTE_ROOT}: its names take more than 128 MiB"
        )),
        "the error does not say which cap the listing went over"
    );
    let listed = scene.server.record.names_listed.load(Ordering::Relaxed);
    assert!(
        listed <= cap + (MAX_READDIRS_AHEAD * BATCH) as u64,
        "xfer read {listed} names, well past the cap"
    );
    scene.assert_nothing_outside_changed();
}

/// A name of 4,000 bytes, each different: the shape of the listing that once took 3 GiB.
fn huge_name(number: u64) -> String {
    let mut name = format!("{number:09}");
    name.extend(std::iter::repeat_n('n', 4000 - name.len()));
    name
}

#[test]
fn a_listing_of_huge_names_fails_its_directory_in_bounded_memory() {
    // Endless batches of 4,000-byte names in one directory: under the entry cap for a long
    // time, but not under the cap on bytes. That directory fails; the rest of the tree arrives.
    const BATCH: usize = 50;
    let mut tree = honest_tree();
    tree.add("", "huge", Node::directory()).set(
        "huge",
        Node::Directory(Listing::Generated {
            batch: BATCH,
            name: huge_name,
            total: None,
        }),
    );
    let scene = Scene::new(tree);
    let (output, peak_kib) = scene.pull_measured(&[], PULL_LIMIT);
    assert_no_crash(&output);
    assert_terminal_safe(&output);
    assert_failed(&output);
    assert_arrived(&scene.local("good.txt"), GOOD);
    assert_arrived(&scene.local("sub/inner.txt"), INNER);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "127.0.0.1:{}): listing {REMOTE_ROOT}/huge: its names take more than 128 MiB",
            scene.server.port
        )),
        "the error does not name the host, the directory and the cap"
    );
    assert!(
        stderr.contains("xfer holds a directory's whole listing in memory"),
        "the error does not say what to do"
    );
    let cap = (MAX_LISTING_BYTES / (4000 + ENTRY_OVERHEAD)) as u64;
    let listed = scene.server.record.names_listed.load(Ordering::Relaxed);
    assert!(
        listed <= cap + (MAX_READDIRS_AHEAD * BATCH) as u64,
        "xfer read {listed} names, past the cap of {cap}"
    );
    assert!(
        peak_kib < MEMORY_BOUND_KIB,
        "xfer's resident memory peaked at {} MiB",
        peak_kib >> 10
    );
    scene.assert_nothing_outside_changed();
}

/// A name the plan refuses (a control character), 200 bytes long, each different.
fn refused_name(number: u64) -> String {
    format!("bad\x1b[2J{number:09}{}", "x".repeat(188))
}

#[test]
fn many_refused_names_are_reported_briefly() {
    // 5,000 names with a terminal escape: each is refused, a few are shown, cut short, and
    // the others counted.
    const REFUSED: u64 = 5000;
    let mut tree = honest_tree();
    tree.add("", "names", Node::directory()).set(
        "names",
        Node::Directory(Listing::Generated {
            batch: 500,
            name: refused_name,
            total: Some(REFUSED),
        }),
    );
    let scene = Scene::new(tree);
    let output = scene.pull(PULL_LIMIT);
    assert_no_crash(&output);
    assert_terminal_safe(&output);
    assert_eq!(output.status.code(), Some(0), "refusals are not failures");
    assert_arrived(&scene.local("good.txt"), GOOD);
    let stderr = text(&output.stderr);
    let shown: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("bad\\x1b[2J"))
        .collect();
    assert_eq!(
        shown.len(),
        MAX_REFUSED_SHOWN,
        "refused names shown:\n{}",
        shown.join("\n")
    );
    for line in &shown {
        assert!(
            line.contains("...: refused name from the server"),
            "a refused name is not cut short: {line}"
        );
        assert!(line.len() < 300, "a refusal line is {} bytes", line.len());
    }
    let more = REFUSED - MAX_REFUSED_SHOWN as u64;
    assert!(
        stderr.contains(&format!("and {more} more names refused from the server")),
        "the names not shown are not counted"
    );
    scene.assert_nothing_outside_changed();
}

/// A listing whose every reply holds `names` and never the end of the directory.
fn pull_a_repeating_listing(names: &[&str]) {
    let mut tree = Tree::new(REMOTE_ROOT);
    tree.set(
        "",
        Node::Directory(Listing::Repeating(
            names.iter().map(|name| name.to_string()).collect(),
        )),
    );
    let scene = Scene::new(tree);
    // Each reply is prompt and well formed, so no timeout fires; only xfer's own limits can
    // end this. Ending with an error, or taking the directory as empty, are both fine.
    let output = scene.pull(PULL_LIMIT);
    assert_no_crash(&output);
    assert_terminal_safe(&output);
    assert_eq!(
        scene.destination_entries(),
        Vec::<String>::new(),
        "entries appeared from a listing of nothing"
    );
    scene.assert_nothing_outside_changed();
}

#[test]
fn a_listing_of_empty_replies_that_never_ends_stops() {
    pull_a_repeating_listing(&[]);
}

#[test]
fn a_listing_of_only_dot_and_dot_dot_that_never_ends_stops() {
    pull_a_repeating_listing(&[".", ".."]);
}

#[test]
fn a_tree_that_never_ends_in_depth_stops() {
    // Every directory holds one directory `d`, forever; each listing is small and prompt.
    let deeper = || {
        Node::Directory(Listing::Names(vec![Listed {
            name: "d".to_string(),
            claimed: Some(directory_attributes()),
        }]))
    };
    let mut tree = Tree::new(REMOTE_ROOT);
    tree.set("", deeper()).fallback(Arc::new(move |path: &str| {
        path.starts_with(&format!("{REMOTE_ROOT}/d")).then(deeper)
    }));
    let scene = Scene::new(tree);
    let output = scene.pull(PULL_LIMIT);
    assert_no_crash(&output);
    assert_terminal_safe(&output);
    assert_failed(&output);
    scene.assert_nothing_outside_changed();
}

#[test]
fn a_shell_only_endpoint_is_explained_not_hung_on() {
    let scene = Scene::with_server(FakeServer::start_shell_only(honest_tree()));
    let mut command = support::xfer_command();
    command
        .args(["doctor", "--json", "-F"])
        .arg(&scene.config)
        .arg("evil");
    let started = Instant::now();
    let output = support::run_with_timeout(&mut command, Duration::from_secs(60));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "doctor took {:?}",
        started.elapsed()
    );
    assert_eq!(output.status.code(), Some(7), "{}", text(&output.stderr));
    let reports: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let report = &reports[0];
    assert_eq!(report["exec"], "refused", "{report}");
    assert_eq!(report["sftp"], "refused", "{report}");
    assert_eq!(report["shell"], "allowed", "{report}");
    // Its "shell" reads nothing: xfer tries the terminal, as on a real shell-only endpoint,
    // and says in one line why that did not work.
    let problem = report["problems"][0].as_str().unwrap_or_default();
    assert!(
        problem.contains("could not work through its terminal")
            && problem.contains("no shell seems to read it"),
        "{report}"
    );
    assert_eq!(report["mode"], serde_json::Value::Null, "{report}");

    let output = scene.pull(Duration::from_secs(60));
    assert_eq!(output.status.code(), Some(6), "{}", text(&output.stderr));
    let message = text(&output.stderr);
    assert!(
        message.contains("refuses the SFTP subsystem") && message.contains("xfer doctor"),
        "{message}"
    );
}

/// One level of an endless tree: 100 files and one directory, every name as long as a name may
/// be (255 bytes); the directory's name is `directory`.
fn long_level(directory: &str) -> Node {
    let files = (0..100).map(|index| Listed {
        name: format!("{index:03}{}", "f".repeat(252)),
        claimed: Some(file_attributes(0)),
    });
    let below = Listed {
        name: directory.to_string(),
        claimed: Some(directory_attributes()),
    };
    Node::Directory(Listing::Names(files.chain([below]).collect()))
}

#[test]
fn a_deep_tree_of_long_names_stops_at_the_transfer_budget() {
    // Each entry holds its whole path, several times over, so what a plan of this tree holds
    // grows with the square of its depth: a thousand levels, the depth cap, would be tens of
    // gigabytes. Each listing is small and honest-looking.
    let directory = "d".repeat(255);
    let mut tree = Tree::new(REMOTE_ROOT);
    tree.add("", &directory, long_level(&directory));
    let prefix = format!("{REMOTE_ROOT}/{directory}");
    tree.fallback(Arc::new(move |path: &str| {
        path.starts_with(&prefix)
            .then(|| path.rsplit('/').next() == Some(directory.as_str()))
            .filter(|&is_directory| is_directory)
            .map(|_| long_level(&directory))
    }));
    let scene = Scene::new(tree);
    let (output, peak_kib) = scene.pull_measured(&[], Duration::from_secs(300));
    assert_no_crash(&output);
    assert_terminal_safe(&output);
    assert_failed(&output);
    let stderr = text(&output.stderr);
    let budget = xfer::engine::budget::MAX_TRANSFER_BYTES;
    assert!(
        stderr.contains(&format!(
            "the transfer would hold more than {} MiB for the names and paths it lists",
            budget >> 20
        )),
        "the error does not name the budget"
    );
    assert!(
        stderr.contains("transfer a smaller part of the tree at a time"),
        "the error does not say what to do"
    );
    assert!(
        peak_kib < MEMORY_BOUND_KIB,
        "xfer's resident memory peaked at {} MiB",
        peak_kib >> 10
    );
    scene.assert_nothing_outside_changed();
}

#[test]
fn the_summary_keeps_a_bounded_number_of_skipped_entries() {
    // 60 directories with 25 refused names each: every directory's plan keeps 20 of them and a
    // count of the others, and the summary of the run keeps the first thousand entries of all.
    const DIRECTORIES: usize = 60;
    let mut tree = honest_tree();
    for index in 0..DIRECTORIES {
        let name = format!("names-{index:02}");
        tree.add("", &name, Node::directory()).set(
            &name,
            Node::Directory(Listing::Generated {
                batch: 25,
                name: refused_name,
                total: Some(25),
            }),
        );
    }
    let scene = Scene::new(tree);
    let output = scene.pull_with(&["--json"], PULL_LIMIT);
    assert_no_crash(&output);
    assert_terminal_safe(&output);
    assert_eq!(output.status.code(), Some(0), "refusals are not failures");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let skipped = summary["skipped"]
        .as_array()
        .expect("a list of skipped entries");
    let kept = xfer::engine::units::MAX_SKIPPED_KEPT;
    assert_eq!(skipped.len(), kept + 1);
    let left_out = DIRECTORIES * (MAX_REFUSED_SHOWN + 1) - kept;
    assert_eq!(
        skipped[kept]["reason"],
        format!("and {left_out} more skipped entries, not listed")
    );
    scene.assert_nothing_outside_changed();
}

/// `--agent PATH` runs whatever agent answers at PATH, whatever its build: a lying server can
/// run one of its own.
const AGENT_OPTIONS: [&str; 2] = ["--agent", "/opt/xfer/agent"];

#[test]
fn an_agent_listing_the_longest_names_forever_stops_at_the_byte_cap() {
    // Names of 255 bytes, the most the protocol carries, in batches as large as it allows.
    let agent = LyingAgent {
        name_length: 255,
        batch: 4096,
    };
    let scene = Scene::with_server(FakeServer::start_agent(agent));
    let (output, peak_kib) = scene.pull_measured(&AGENT_OPTIONS, PULL_LIMIT);
    assert_no_crash(&output);
    assert_terminal_safe(&output);
    assert_failed(&output);
    assert!(
        scene
            .server
            .requests()
            .contains(&format!("list {REMOTE_ROOT}")),
        "xfer did not list over the agent"
    );
    assert!(
        text(&output.stderr).contains(&format!(
            "listing {REMOTE_ROOT}: its names take more than 128 MiB"
        )),
        "the error does not say which cap the listing went over"
    );
    assert!(
        peak_kib < MEMORY_BOUND_KIB,
        "xfer's resident memory peaked at {} MiB",
        peak_kib >> 10
    );
    scene.assert_nothing_outside_changed();
}

#[test]
fn an_agent_sending_a_name_over_the_cap_breaks_the_protocol() {
    // One name of 4,000 bytes is not a path component: the frame is refused as it is decoded.
    let agent = LyingAgent {
        name_length: 4000,
        batch: 10,
    };
    let scene = Scene::with_server(FakeServer::start_agent(agent));
    let (output, peak_kib) = scene.pull_measured(&AGENT_OPTIONS, PULL_LIMIT);
    assert_no_crash(&output);
    assert_terminal_safe(&output);
    assert_failed(&output);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("listing {REMOTE_ROOT}: xfer agent: "))
            && stderr.contains("entry name of 4000 bytes is over the cap of 255"),
        "the error does not say the agent sent a name over the cap"
    );
    assert!(
        peak_kib < MEMORY_BOUND_KIB,
        "xfer's resident memory peaked at {} MiB",
        peak_kib >> 10
    );
    scene.assert_nothing_outside_changed();
}
