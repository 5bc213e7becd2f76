//! The local write path against a lying server and a racing local user, without SSH: hostile
//! names are refused, links planted inside the destination (before or during the transfer) are
//! never followed, nothing outside the destination changes, and errors come back instead of
//! panics (scp CVE-2019-6111 and CVE-2018-20685, rsync CVE-2024-12087, CVE-2024-12088 and
//! CVE-2024-12747).

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tempfile::TempDir;
use xfer::local::{
    Destination, EntryKind, NameError, RelativePath, Timestamp, printable,
    symlink_target_is_contained, validate_component,
};

fn path(text: &str) -> RelativePath {
    RelativePath::parse(text).expect("test paths are valid")
}

const EPOCH_2001: Timestamp = Timestamp {
    seconds: 1_000_000_000,
    nanoseconds: 0,
};

/// A scratch area holding `dest` (the destination) and `outside` (which must never change).
struct Scene {
    _scratch: TempDir,
    destination: Destination,
    root: PathBuf,
    outside: PathBuf,
}

fn scene() -> Scene {
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let root = scratch.path().join("dest");
    let outside = scratch.path().join("outside");
    fs::create_dir(&outside).expect("the outside directory");
    let destination = Destination::open(&root, true).expect("the destination opens");
    Scene {
        _scratch: scratch,
        destination,
        root,
        outside,
    }
}

/// Names, modes, sizes, contents and modification times of everything in `directory`.
fn snapshot(directory: &Path) -> Vec<(String, u32, u64, i64, i64, Vec<u8>)> {
    let mut entries: Vec<_> = fs::read_dir(directory)
        .expect("readable")
        .map(|entry| {
            let entry = entry.expect("an entry");
            let metadata = fs::symlink_metadata(entry.path()).expect("metadata");
            let content = if metadata.is_file() {
                fs::read(entry.path()).expect("content")
            } else {
                Vec::new()
            };
            (
                entry.file_name().to_string_lossy().into_owned(),
                metadata.mode(),
                metadata.size(),
                metadata.mtime(),
                metadata.mtime_nsec(),
                content,
            )
        })
        .collect();
    entries.sort();
    entries
}

fn directory_state(directory: &Path) -> (u32, i64, i64) {
    let metadata = fs::symlink_metadata(directory).expect("metadata");
    (metadata.mode(), metadata.mtime(), metadata.mtime_nsec())
}

// ---------------------------------------------------------------------------------------------
// Names

#[test]
fn every_hostile_name_is_refused() {
    let long = vec![b'x'; 256];
    let hostile: Vec<&[u8]> = vec![
        b"..",
        b".",
        b"a/b",
        b"/etc",
        b"a\\b",
        b"\0",
        b"a\0b",
        b"\x1b[2J",
        b"\n",
        b"name\r",
        b"\x7f",
        "\u{9b}".as_bytes(),
        b"",
        &long,
        b"\xff",
        b"caf\xe9",
        b"   ",
    ];
    for name in hostile {
        let refused = validate_component(name);
        assert!(refused.is_err(), "accepted {}", printable(name));
        // The reason is printable too, and mentions the rule.
        let reason = refused
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(!reason.chars().any(char::is_control), "{reason:?}");
        assert!(RelativePath::root().join(name).is_err());
    }
    assert_eq!(
        validate_component(&long),
        Err(NameError::TooLong { length: 256 })
    );
    assert!(matches!(
        validate_component(b"caf\xe9"),
        Err(NameError::NotUtf8 { offset: 3 })
    ));
}

#[test]
fn ordinary_names_are_accepted() {
    let longest = "x".repeat(255);
    for name in [
        "file.txt",
        "my report (final).pdf",
        " spaced ",
        ".hidden",
        "a..b",
        "..a",
        "Ünïcødé – 日本語 🚀",
        longest.as_str(),
    ] {
        assert_eq!(validate_component(name.as_bytes()), Ok(name));
    }
}

#[test]
fn printed_names_cannot_drive_the_terminal() {
    let shown = printable(b"\x1b]0;owned\x07\x1b[2J\xff\xfe\xc2\x9b1m");
    assert_eq!(shown, "\\x1b]0;owned\\x07\\x1b[2J\\xff\\xfe\\u{9b}1m");
    assert!(!shown.chars().any(char::is_control));
}

// ---------------------------------------------------------------------------------------------
// Symlink policy

#[test]
fn link_targets_are_judged_from_the_link_directory() {
    let cases = [
        ("a", "b", true),
        ("d/a", "../b", true),
        ("a", "./b", true),
        ("d/e/a", "../../b", true),
        ("a", "../x", false),
        ("a", "/etc/passwd", false),
        ("d/a", "../../x", false),
        ("a", "b/../../x", false),
        ("a", "", false),
    ];
    for (link, target, inside) in cases {
        assert_eq!(
            symlink_target_is_contained(&path(link), target),
            inside,
            "{link} -> {target}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A link planted inside the destination

#[test]
fn a_planted_directory_link_is_never_followed() {
    let scene = scene();
    fs::write(scene.outside.join("f"), b"outside content").expect("outside file");
    fs::set_permissions(scene.outside.join("f"), fs::Permissions::from_mode(0o640)).expect("chmod");
    symlink(&scene.outside, scene.root.join("sub")).expect("the link is planted");
    let before = snapshot(&scene.outside);
    let directory_before = directory_state(&scene.outside);
    let destination = &scene.destination;

    let errors = [
        destination.create_dir_all(&path("sub"), 0o755).err(),
        destination.create_dir_all(&path("sub/x/y"), 0o755).err(),
        destination.open_write(&path("sub/f")).err(),
        destination.open_write(&path("sub/new")).err(),
        destination.open_read(&path("sub/f")).err(),
        destination.metadata(&path("sub/f")).err(),
        destination.create_symlink(&path("sub/l"), "anything").err(),
        destination
            .set_permissions_and_times(&path("sub/f"), 0o777, EPOCH_2001)
            .err(),
        destination.remove_file(&path("sub/f")).err(),
        destination.read_symlink(&path("sub/f")).err(),
        destination.rename(&path("sub/f"), &path("g")).err(),
    ];
    for (index, error) in errors.into_iter().enumerate() {
        let error = error.unwrap_or_else(|| panic!("operation {index} went through the link"));
        assert!(
            error.message().contains("sub is a symbolic link"),
            "operation {index}: {error}"
        );
        // The full destination path is named.
        let full = format!("{}/sub", scene.root.display());
        assert!(
            error.message().contains(&full),
            "operation {index}: {error}"
        );
        assert!(error.hint().is_some());
    }

    // Renaming something into the linked directory is refused too.
    fs::write(scene.root.join("g"), b"inside").expect("inside file");
    assert!(destination.rename(&path("g"), &path("sub/g")).is_err());

    // On the link itself, only the link's own time may change; never the directory it names.
    destination
        .set_permissions_and_times(&path("sub"), 0o777, EPOCH_2001)
        .expect("a link's own time can be set");
    let link = fs::symlink_metadata(scene.root.join("sub")).expect("the link");
    assert!(link.file_type().is_symlink());
    assert_eq!(link.mtime(), EPOCH_2001.seconds);

    assert_eq!(snapshot(&scene.outside), before);
    assert_eq!(directory_state(&scene.outside), directory_before);
}

#[test]
fn a_link_at_the_final_name_is_refused_and_its_target_unchanged() {
    let scene = scene();
    let target = scene.outside.join("passwd");
    fs::write(&target, b"root:x:0:0").expect("outside file");
    symlink(&target, scene.root.join("f")).expect("link to a file");
    symlink(scene.outside.join("created"), scene.root.join("dangling")).expect("dangling link");
    let before = snapshot(&scene.outside);
    let destination = &scene.destination;

    for name in ["f", "dangling"] {
        let error = destination
            .open_write(&path(name))
            .expect_err("a link at the final name is refused");
        assert!(
            error.message().contains("is a symbolic link"),
            "{name}: {error}"
        );
        assert!(destination.open_read(&path(name)).is_err());
    }
    assert_eq!(
        destination
            .metadata(&path("f"))
            .ok()
            .flatten()
            .map(|metadata| metadata.kind),
        Some(EntryKind::Symlink)
    );
    // Replacing or removing the link touches the link, not its target.
    destination
        .create_symlink(&path("f"), "elsewhere")
        .expect("the link is replaced");
    assert!(destination.remove_file(&path("dangling")).expect("removed"));
    assert_eq!(snapshot(&scene.outside), before);
}

#[test]
fn other_kinds_at_the_final_name_are_refused_without_blocking() {
    let scene = scene();
    let destination = &scene.destination;
    nix::unistd::mkfifo(
        &scene.root.join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("a named pipe");
    let _socket =
        std::os::unix::net::UnixListener::bind(scene.root.join("socket")).expect("a socket");
    fs::create_dir(scene.root.join("directory")).expect("a directory");

    for (name, kind) in [
        ("pipe", "a named pipe"),
        ("socket", "a socket"),
        ("directory", "a directory"),
    ] {
        let error = destination
            .open_write(&path(name))
            .expect_err("only regular files are written");
        assert!(error.message().contains(kind), "{name}: {error}");
        assert!(destination.open_read(&path(name)).is_err());
    }
    let error = destination
        .create_dir_all(&path("pipe/x"), 0o755)
        .expect_err("a pipe is not a directory");
    assert!(
        error
            .message()
            .contains("is a named pipe, where xfer needs a directory")
    );
}

// ---------------------------------------------------------------------------------------------
// The race: a directory swapped for a link while xfer writes beneath it

/// The races need `renameat2(RENAME_EXCHANGE)`, which nix offers with glibc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod races {
    use super::*;
    use std::time::{Duration, Instant};

    /// Exchanges `first` and `second` atomically (`renameat2(RENAME_EXCHANGE)`) until `stop`;
    /// returns how many exchanges happened.
    fn swap_until(
        first: PathBuf,
        second: PathBuf,
        stop: Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<u64> {
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                renameat2(
                    AT_FDCWD,
                    &first,
                    AT_FDCWD,
                    &second,
                    RenameFlags::RENAME_EXCHANGE,
                )
                .expect("the exchange works");
                swaps += 1;
            }
            swaps
        })
    }

    /// Runs `round` for at least two seconds (the windows being raced are a few microseconds
    /// wide, so catching a regression takes many attempts) and until it has both succeeded and
    /// failed often enough, for at most 20 seconds; returns how many operations succeeded and
    /// failed.
    fn race(mut round: impl FnMut(u32) -> Vec<xfer::Result<()>>) -> (u32, u32) {
        let (mut landed, mut refused) = (0u32, 0u32);
        let start = Instant::now();
        let mut count = 0u32;
        while (start.elapsed() < Duration::from_secs(2) || landed < 50 || refused < 50)
            && start.elapsed() < Duration::from_secs(20)
        {
            count = count.wrapping_add(1);
            for outcome in round(count) {
                match outcome {
                    Ok(()) => landed += 1,
                    Err(_) => refused += 1,
                }
            }
        }
        (landed, refused)
    }

    fn write_all(
        destination: &Destination,
        file: &RelativePath,
        content: &[u8],
    ) -> xfer::Result<()> {
        let mut opened = destination.open_write(file)?;
        opened
            .write_all(content)
            .map_err(|error| xfer::Error::local_io("writing", error))?;
        destination.set_file_permissions_and_times(&opened, file, 0o777, EPOCH_2001)
    }

    #[test]
    fn a_directory_swapped_for_a_link_never_leads_outside() {
        let scene = scene();
        let destination = &scene.destination;
        let keep = scene.outside.join("keep");
        fs::write(&keep, b"must not change").expect("a file outside");
        fs::set_permissions(&keep, fs::Permissions::from_mode(0o600)).expect("chmod");
        let before = snapshot(&scene.outside);

        // `d` and `spare` trade places atomically, all the time: at any instant, `d` is either the
        // real directory or a link to the outside directory.
        fs::create_dir(scene.root.join("d")).expect("the real directory");
        symlink(&scene.outside, scene.root.join("spare")).expect("the link");
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = swap_until(
            scene.root.join("d"),
            scene.root.join("spare"),
            Arc::clone(&stop),
        );

        let (landed, refused) = race(|round| {
            let file = path(&format!("d/f{}", round % 20));
            vec![
                write_all(destination, &file, b"payload"),
                destination.open_write(&path("d/keep")).map(drop),
                destination.set_permissions_and_times(&path("d/keep"), 0o777, EPOCH_2001),
                destination.remove_file(&path("d/keep")).map(drop),
                destination.create_dir_all(&path(&format!("d/sub{}/deeper", round % 5)), 0o755),
                destination.create_symlink(&path(&format!("d/l{}", round % 5)), "target"),
                destination.rename(&file, &path("d/renamed")),
            ]
        });
        stop.store(true, Ordering::Relaxed);
        let swaps = swapper.join().expect("the swapper thread ends");

        assert_eq!(
            snapshot(&scene.outside),
            before,
            "the outside directory changed"
        );
        assert!(swaps > 100, "only {swaps} swaps happened");
        assert!(
            landed > 0 && refused > 0,
            "landed {landed}, refused {refused}"
        );
        // What did land is in the real directory, under whichever name it has now.
        let real = if fs::symlink_metadata(scene.root.join("d"))
            .expect("d")
            .is_dir()
        {
            scene.root.join("d")
        } else {
            scene.root.join("spare")
        };
        assert!(fs::read_dir(real).expect("the real directory").count() > 0);
    }

    #[test]
    fn a_file_swapped_for_a_link_never_leads_outside() {
        let scene = scene();
        let destination = &scene.destination;
        let target = scene.outside.join("target");
        fs::write(&target, b"must not change").expect("a file outside");
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).expect("chmod");
        let before = snapshot(&scene.outside);

        // `f` is a real file or a link to the outside file, swapped all the time.
        fs::write(scene.root.join("f"), b"").expect("the real file");
        symlink(&target, scene.root.join("spare")).expect("the link");
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = swap_until(
            scene.root.join("f"),
            scene.root.join("spare"),
            Arc::clone(&stop),
        );

        let file = path("f");
        let (landed, refused) = race(|_| {
            vec![
                write_all(destination, &file, b"payload"),
                destination.set_permissions_and_times(&file, 0o777, EPOCH_2001),
                destination
                    .open_write(&file)
                    .and_then(|opened| destination.set_len(&opened, &file, 0)),
            ]
        });
        stop.store(true, Ordering::Relaxed);
        let swaps = swapper.join().expect("the swapper thread ends");

        assert_eq!(snapshot(&scene.outside), before, "the outside file changed");
        assert!(swaps > 100, "only {swaps} swaps happened");
        assert!(
            landed > 0 && refused > 0,
            "landed {landed}, refused {refused}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Ordinary behaviour

#[test]
fn open_write_never_truncates() {
    let scene = scene();
    let destination = &scene.destination;
    destination
        .create_dir_all(&path("a/b"), 0o755)
        .expect("directories");
    let file = path("a/b/data.bin");
    {
        let mut opened = destination.open_write(&file).expect("created");
        opened.write_all(b"hello world").expect("written");
    }
    let created = fs::metadata(scene.root.join("a/b/data.bin")).expect("exists");
    assert_eq!(
        created.mode() & 0o077,
        0,
        "new files are private until the end"
    );
    {
        let mut opened = destination.open_write(&file).expect("reopened");
        opened.seek(SeekFrom::Start(0)).expect("seek");
        opened.write_all(b"J").expect("written at an offset");
    }
    let mut content = String::new();
    destination
        .open_read(&file)
        .expect("readable")
        .read_to_string(&mut content)
        .expect("read");
    assert_eq!(content, "Jello world");

    let opened = destination.open_write(&file).expect("reopened");
    destination.set_len(&opened, &file, 5).expect("cut");
    assert_eq!(
        fs::read(scene.root.join("a/b/data.bin")).ok(),
        Some(b"Jello".to_vec())
    );
}

#[test]
fn create_symlink_replaces_atomically() {
    let scene = scene();
    let destination = &scene.destination;
    let link = path("link");
    destination.create_symlink(&link, "first").expect("created");
    let link_path = scene.root.join("link");

    // A reader watching the name must always see a link: old or new, never nothing.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = Arc::clone(&stop);
        let link_path = link_path.clone();
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let target = fs::read_link(&link_path).expect("the link is always there");
                assert!(target == Path::new("first") || target == Path::new("second"));
                reads += 1;
            }
            reads
        })
    };
    for round in 0..500 {
        let target = if round % 2 == 0 { "second" } else { "first" };
        destination.create_symlink(&link, target).expect("replaced");
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().expect("the reader saw no gap") > 0);
    assert_eq!(fs::read_link(&link_path).ok(), Some(PathBuf::from("first")));

    // A file and an empty directory are replaced; a non-empty directory is refused.
    fs::write(scene.root.join("file"), b"x").expect("a file");
    destination
        .create_symlink(&path("file"), "t")
        .expect("replaces a file");
    fs::create_dir(scene.root.join("empty")).expect("an empty directory");
    destination
        .create_symlink(&path("empty"), "t")
        .expect("replaces an empty directory");
    fs::create_dir_all(scene.root.join("full/inner")).expect("a full directory");
    let error = destination
        .create_symlink(&path("full"), "t")
        .expect_err("a non-empty directory stays");
    assert!(error.message().contains("not empty"), "{error}");
    assert!(scene.root.join("full/inner").is_dir());

    assert_eq!(
        destination.read_symlink(&path("file")).ok().flatten(),
        Some(PathBuf::from("t"))
    );
    assert_eq!(destination.read_symlink(&path("missing")).ok(), Some(None));
    let error = destination
        .read_symlink(&path("full"))
        .expect_err("a directory is not a link");
    assert!(error.message().contains("is a directory"), "{error}");

    // No temporary names are left behind.
    let mut names: Vec<String> = fs::read_dir(&scene.root)
        .expect("readable")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["empty", "file", "full", "link"]);
}

#[test]
fn directories_files_and_links_get_modes_and_times() {
    let scene = scene();
    let destination = &scene.destination;
    destination.create_dir_all(&path("d"), 0o700).expect("made");
    destination.open_write(&path("d/f")).expect("made");
    destination.create_symlink(&path("d/l"), "f").expect("made");
    let when = Timestamp {
        seconds: 1_234_567_890,
        nanoseconds: 500,
    };
    destination
        .set_permissions_and_times(&path("d/f"), 0o4644, when)
        .expect("file");
    destination
        .set_permissions_and_times(&path("d/l"), 0o777, EPOCH_2001)
        .expect("link");
    destination
        .set_permissions_and_times(&path("d"), 0o750, when)
        .expect("directory");

    let file = destination
        .metadata(&path("d/f"))
        .expect("ok")
        .expect("there");
    assert_eq!((file.mode, file.modified), (0o644, when), "no set-user-ID");
    let link = destination
        .metadata(&path("d/l"))
        .expect("ok")
        .expect("there");
    assert_eq!(link.modified, EPOCH_2001);
    let directory = destination
        .metadata(&path("d"))
        .expect("ok")
        .expect("there");
    assert_eq!(
        (directory.kind, directory.mode),
        (EntryKind::Directory, 0o750)
    );
    assert_eq!(directory.modified, when);
}

#[test]
fn removal_and_rename_stay_inside() {
    let scene = scene();
    let destination = &scene.destination;
    destination.create_dir_all(&path("a"), 0o755).expect("made");
    destination.open_write(&path("a/partial")).expect("made");
    destination
        .rename(&path("a/partial"), &path("final"))
        .expect("renamed");
    assert!(scene.root.join("final").is_file());
    assert!(destination.remove_file(&path("final")).expect("removed"));
    assert!(
        !destination
            .remove_file(&path("final"))
            .expect("nothing there")
    );
    assert!(
        !destination
            .remove_file(&path("missing/dir/x"))
            .expect("nothing there")
    );
    let error = destination
        .remove_file(&path("a"))
        .expect_err("directories are not removed");
    assert!(error.message().contains("is a directory"), "{error}");
}

#[test]
fn the_destination_root_is_the_users_choice() {
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let missing = scratch.path().join("no/such/dir");
    let error = Destination::open(&missing, false).expect_err("not created without asking");
    assert!(error.message().contains("does not exist"), "{error}");
    assert!(error.hint().is_some());

    // A link the user made to reach the root is followed; it is their path.
    let real = scratch.path().join("real");
    fs::create_dir(&real).expect("real");
    let alias = scratch.path().join("alias");
    symlink(&real, &alias).expect("the user's link");
    let destination = Destination::open(&alias, false).expect("opened through the user's link");
    destination.open_write(&path("f")).expect("written");
    assert!(real.join("f").is_file());

    let file = scratch.path().join("plain-file");
    fs::write(&file, b"").expect("a file");
    let error = Destination::open(&file, false).expect_err("a file is no destination");
    assert!(error.message().contains("not a directory"), "{error}");

    let created = Destination::open(&missing, true).expect("created with parents");
    assert!(created.root_path().is_dir());
}

#[test]
fn errors_name_the_full_path_terminal_safely() {
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let root = scratch.path().join("dest\x1b[2J");
    let destination = Destination::open(&root, true).expect("opened");
    fs::write(root.join("file"), b"").expect("a file");
    let error = destination
        .create_dir_all(&path("file/below"), 0o755)
        .expect_err("a file is not a directory");
    let message = error.message();
    assert!(!message.contains('\x1b'), "{message:?}");
    assert!(
        message.contains("dest\\x1b[2J/file is a regular file, where xfer needs a directory"),
        "{message}"
    );
}
