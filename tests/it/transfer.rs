//! `xfer pull` and `xfer push` against a real OpenSSH sshd: whole trees end identical (content,
//! modes, mtimes, symlinks, empty directories); a re-run moves nothing; a run killed with
//! SIGKILL at seeded moments, or cut by a proxy at half the data, resumes to a byte-identical
//! result moving only what was missing; damaged partial blocks are fetched again; a source that
//! changed between runs is transferred again, never spliced.

use crate::support::{
    Proxy, ProxyMode, Setup, assert_success, pattern, run_with_timeout, set_mtime, summary,
    tree_digest, write_file, xfer_command_in,
};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);
const BLOCK: u64 = 1 << 20;

/// A small tree with every kind of entry the engine handles.
fn make_tree(root: &Path) {
    write_file(&root.join("empty.bin"), 1, 0, 0o644, 1_600_000_000);
    write_file(&root.join("tiny.txt"), 2, 4095, 0o640, 1_600_000_100);
    write_file(
        &root.join("a/one-block-plus.bin"),
        3,
        BLOCK as usize + 3,
        0o600,
        1_600_000_200,
    );
    write_file(
        &root.join("a/b/five.bin"),
        4,
        5 * BLOCK as usize + 17,
        0o755,
        1_600_000_300,
    );
    write_file(&root.join("a/b/c/deep.txt"), 5, 100, 0o444, 1_600_000_400);
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::os::unix::fs::symlink("a/b/five.bin", root.join("latest")).unwrap();
    fs::set_permissions(root.join("a/b"), fs::Permissions::from_mode(0o750)).unwrap();
    set_mtime(&root.join("a/b"), 1_600_001_000);
    set_mtime(&root.join("empty-dir"), 1_600_002_000);
}

#[test]
fn pull_a_tree_then_a_rerun_moves_nothing() {
    let setup = Setup::start();
    make_tree(&setup.path("source"));
    let destination = setup.path("copy");
    let output = setup.run(&[
        "pull",
        "--json",
        &setup.remote("source"),
        destination.to_str().unwrap(),
    ]);
    assert_success(&output);
    assert_eq!(
        tree_digest(&setup.path("source")),
        tree_digest(&destination)
    );
    let first = summary(&output);
    assert_eq!(first["files"], 5);
    assert_eq!(first["files_transferred"], 5);
    assert_eq!(first["symlinks"], 1);

    let output = setup.run(&[
        "pull",
        "--json",
        &setup.remote("source"),
        destination.to_str().unwrap(),
    ]);
    assert_success(&output);
    let again = summary(&output);
    assert_eq!(again["bytes_moved"], 0);
    assert_eq!(again["files_up_to_date"], 5);
    assert_eq!(
        tree_digest(&setup.path("source")),
        tree_digest(&destination)
    );
    // State lives in the state directory, never in the destination.
    assert!(fs::read_dir(&destination).unwrap().all(|entry| {
        !entry
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("xfer")
    }));
}

#[test]
fn push_a_tree_into_a_missing_remote_directory() {
    let setup = Setup::start();
    make_tree(&setup.path("source"));
    let remote_copy = setup.path("remote/deeper/copy");
    let target = format!("box:{}", remote_copy.display());
    let output = setup.run(&[
        "push",
        "--json",
        setup.path("source").to_str().unwrap(),
        &target,
    ]);
    assert_success(&output);
    assert_eq!(
        tree_digest(&setup.path("source")),
        tree_digest(&remote_copy)
    );
    let output = setup.run(&[
        "push",
        "--json",
        setup.path("source").to_str().unwrap(),
        &target,
    ]);
    assert_success(&output);
    assert_eq!(summary(&output)["bytes_moved"], 0);
}

#[test]
fn single_files_and_missing_destination_parents() {
    let setup = Setup::start();
    write_file(
        &setup.path("one.bin"),
        9,
        3 * BLOCK as usize + 1,
        0o640,
        1_650_000_000,
    );
    let nested = setup.path("x/y/z/one-copy.bin");
    assert_success(&setup.run(&["pull", &setup.remote("one.bin"), nested.to_str().unwrap()]));
    assert_eq!(
        fs::read(&nested).unwrap(),
        fs::read(setup.path("one.bin")).unwrap()
    );
    assert_eq!(fs::metadata(&nested).unwrap().mtime(), 1_650_000_000);
    // Into an existing directory, a file keeps its name.
    fs::create_dir_all(setup.path("into")).unwrap();
    assert_success(&setup.run(&[
        "pull",
        &setup.remote("one.bin"),
        setup.path("into").to_str().unwrap(),
    ]));
    assert_eq!(
        fs::read(setup.path("into/one.bin")).unwrap(),
        fs::read(setup.path("one.bin")).unwrap()
    );
    // A push of a file onto an existing remote directory lands inside it too.
    fs::create_dir_all(setup.path("remote-dir")).unwrap();
    assert_success(&setup.run(&[
        "push",
        setup.path("one.bin").to_str().unwrap(),
        &setup.remote("remote-dir"),
    ]));
    assert_eq!(
        fs::read(setup.path("remote-dir/one.bin")).unwrap(),
        fs::read(setup.path("one.bin")).unwrap()
    );
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let setup = Setup::start();
    make_tree(&setup.path("source"));
    let destination = setup.path("copy");
    let output = setup.run(&[
        "pull",
        "--dry-run",
        "--json",
        &setup.remote("source"),
        destination.to_str().unwrap(),
    ]);
    assert_success(&output);
    assert!(!destination.exists(), "a dry run created the destination");
    let plan = summary(&output);
    let actions: BTreeMap<String, String> = plan["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item["path"].as_str().unwrap().to_string(),
                item["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: BTreeMap<String, String> = [
        "",
        "a",
        "empty-dir",
        "empty.bin",
        "latest",
        "tiny.txt",
        "a/b",
        "a/one-block-plus.bin",
        "a/b/c",
        "a/b/five.bin",
        "a/b/c/deep.txt",
    ]
    .iter()
    .map(|path| (path.to_string(), "create".to_string()))
    .collect();
    assert_eq!(actions, expected);

    assert_success(&setup.run(&[
        "pull",
        &setup.remote("source"),
        destination.to_str().unwrap(),
    ]));
    // One file changes size, one only its mtime.
    write_file(
        &setup.path("source/tiny.txt"),
        2,
        5000,
        0o640,
        1_600_000_100,
    );
    set_mtime(&setup.path("source/a/b/c/deep.txt"), 1_700_000_000);
    let output = setup.run(&[
        "pull",
        "--dry-run",
        &setup.remote("source"),
        destination.to_str().unwrap(),
    ]);
    assert_success(&output);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("0 to create, 2 to update, 0 to resume, 9 up to date"),
        "{text}"
    );
    assert!(
        text.contains("changed (size 4095 -> 5000)") && text.contains("tiny.txt"),
        "{text}"
    );
    assert!(
        text.contains("changed (modification time differs)"),
        "{text}"
    );
    // Only the changes are listed (and the summary line); -v adds the up-to-date entries.
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(!text.contains("  up to date"), "{text}");
    let output = setup.run(&[
        "pull",
        "--dry-run",
        "-v",
        &setup.remote("source"),
        destination.to_str().unwrap(),
    ]);
    assert_success(&output);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        text.lines()
            .filter(|line| line.starts_with("up to date"))
            .count(),
        9,
        "{text}"
    );
}

/// Large enough that a kill or a cut lands in the middle of the data.
fn make_big_source(root: &Path) {
    for index in 0..4u64 {
        write_file(
            &root.join(format!("part-{index}.bin")),
            100 + index,
            12 * BLOCK as usize + 1234 * index as usize,
            0o644,
            1_690_000_000 + index as i64,
        );
    }
}

fn kill_after(command: &mut Command, delay: Duration) -> bool {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let finished = child.try_wait().unwrap().is_some();
    let _ = child.kill();
    let _ = child.wait();
    !finished
}

/// Seeded delays in milliseconds: the same moments on every run.
fn kill_points(seed: u64, count: usize, spread_ms: u64) -> Vec<u64> {
    let bytes = pattern(seed, count * 8);
    bytes
        .chunks(8)
        .map(|chunk| 5 + u64::from_le_bytes(chunk.try_into().unwrap()) % spread_ms)
        .collect()
}

#[test]
fn pull_killed_at_seeded_moments_resumes_to_identical() {
    let setup = Setup::start();
    make_big_source(&setup.path("source"));
    let expected = tree_digest(&setup.path("source"));
    let mut interrupted = 0;
    for (round, delay) in kill_points(7, 10, 400).into_iter().enumerate() {
        let destination = setup.path(&format!("copy-{round}"));
        let mut command = setup.xfer(&[
            "pull",
            &setup.remote("source"),
            destination.to_str().unwrap(),
        ]);
        if kill_after(&mut command, Duration::from_millis(delay)) {
            interrupted += 1;
        }
        let output = setup.run(&[
            "pull",
            &setup.remote("source"),
            destination.to_str().unwrap(),
        ]);
        assert_success(&output);
        assert_eq!(
            tree_digest(&destination),
            expected,
            "round {round}, killed after {delay} ms"
        );
    }
    assert!(
        interrupted >= 5,
        "only {interrupted} kills landed before the pull finished"
    );
}

#[test]
fn push_killed_at_seeded_moments_resumes_to_identical() {
    let setup = Setup::start();
    make_big_source(&setup.path("source"));
    let expected = tree_digest(&setup.path("source"));
    let mut interrupted = 0;
    for (round, delay) in kill_points(11, 10, 400).into_iter().enumerate() {
        let target = setup.remote(&format!("pushed-{round}"));
        let mut command = setup.xfer(&["push", setup.path("source").to_str().unwrap(), &target]);
        if kill_after(&mut command, Duration::from_millis(delay)) {
            interrupted += 1;
        }
        let output = setup.run(&["push", setup.path("source").to_str().unwrap(), &target]);
        assert_success(&output);
        assert_eq!(
            tree_digest(&setup.path(&format!("pushed-{round}"))),
            expected,
            "round {round}"
        );
    }
    assert!(
        interrupted >= 5,
        "only {interrupted} kills landed before the push finished"
    );
}

#[test]
fn a_source_rewritten_while_pushed_is_reported_and_the_rerun_matches_it() {
    // The push trusts the bytes it sent only while the source's identity (size, mtimes, ctime)
    // holds; rewritten in place halfway, the remote holds old blocks and new ones, and the
    // file must fail as "changed", never be set complete, and the re-run must end equal to
    // the new content.
    let setup = Setup::start();
    let (proxy, config) = setup.via_proxy();
    let size = 24 << 20;
    let source = setup.path("big.bin");
    write_file(&source, 5, size, 0o644, 1_700_000_000);
    let remote = setup.path("pushed.bin");
    proxy.set_mode(ProxyMode::Throttle {
        bytes_per_second: 4_000_000,
    });
    let mut command = xfer_command_in(setup.state.path());
    command
        // No retries: a retry would send the changed blocks again and end complete.
        .args(["push", "-q", "--retries", "0", "-F"])
        .arg(&config)
        .arg(&source)
        .arg(format!("via:{}", remote.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().unwrap();
    let deadline = Instant::now() + LIMIT;
    // Some blocks are on their way (read before this): rewrite every byte of the source in
    // place.
    while proxy.bytes_up() < 4 << 20 {
        assert!(Instant::now() < deadline, "the push never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    let new_content = pattern(6, size);
    fs::OpenOptions::new()
        .write(true)
        .open(&source)
        .unwrap()
        .write_all_at(&new_content, 0)
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("changed while it was being sent"),
        "{stderr}"
    );
    assert_ne!(
        fs::metadata(&remote).unwrap().mtime(),
        1_700_000_000,
        "an unverified copy must not get the mtime that marks it complete"
    );

    proxy.set_mode(ProxyMode::Pass);
    let rerun = setup.run(&[
        "push",
        source.to_str().unwrap(),
        &setup.remote("pushed.bin"),
    ]);
    assert_success(&rerun);
    assert!(
        fs::read(&remote).unwrap() == new_content,
        "the re-run must end equal to the new source"
    );
}

/// Pulls one file through a proxy that cuts the link at half the file.
fn cut_pull(setup: &Setup, proxy: &Proxy, config: &Path, size: usize) -> PathBuf {
    write_file(&setup.path("big.bin"), 42, size, 0o644, 1_700_000_000);
    let destination = setup.path("big-copy.bin");
    proxy.set_mode(ProxyMode::CutAllAfter(size as u64 / 2));
    let mut command = xfer_command_in(setup.state.path());
    command
        // No retries: this run must end at the cut, as when the whole link is down.
        .args(["pull", "--no-remote-digest", "--retries", "0", "-F"])
        .arg(config)
        .arg(format!("via:{}", setup.path("big.bin").display()))
        .arg(&destination);
    let output = run_with_timeout(&mut command, LIMIT);
    assert!(
        !output.status.success(),
        "the cut did not interrupt the pull"
    );
    assert_eq!(
        output.status.code(),
        Some(1),
        "a dropped link is 'partly done': {}",
        String::from_utf8_lossy(&output.stderr)
    );
    proxy.set_mode(ProxyMode::Pass);
    proxy.reset_counters();
    destination
}

fn pull_via(setup: &Setup, config: &Path, extra: &[&str]) -> Output {
    let mut command = xfer_command_in(setup.state.path());
    command
        .args(["pull", "--json", "-F"])
        .arg(config)
        .args(extra)
        .arg(format!("via:{}", setup.path("big.bin").display()))
        .arg(setup.path("big-copy.bin"));
    run_with_timeout(&mut command, LIMIT)
}

/// A link that drops every few MiB but moves data between drops: every retry waits the first
/// wait (the backoff starts again after progress), and the summary counts the bytes of every
/// attempt.
#[test]
fn retries_after_progress_wait_the_first_wait_and_all_bytes_are_counted() {
    let setup = Setup::start();
    let (proxy, config) = setup.via_proxy();
    let size = 24 * BLOCK as usize;
    write_file(&setup.path("big.bin"), 21, size, 0o644, 1_700_000_000);
    // Each connection is cut after 5 MiB: the file takes several attempts, each moving data.
    proxy.set_mode(ProxyMode::CutEachAfter(5 << 20));
    let output = pull_via(
        &setup,
        &config,
        &["-j", "1", "--retries", "20", "--retry-wait", "0.4"],
    );
    assert_success(&output);
    assert_eq!(
        fs::read(setup.path("big-copy.bin")).unwrap(),
        fs::read(setup.path("big.bin")).unwrap()
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let waits: Vec<f64> = stderr
        .lines()
        .filter_map(|line| line.split("retrying in ").nth(1))
        .filter_map(|rest| rest.split(" s").next())
        .filter_map(|number| number.parse().ok())
        .collect();
    assert!(waits.len() >= 3, "expected several retries:\n{stderr}");
    // The first wait is 0.4 s with jitter between half and one and a half of it; a doubled
    // one would be at least 0.4 s after two failures in a row, 0.8 s after three.
    assert!(
        waits.iter().all(|&wait| wait <= 0.6 + 0.05),
        "a wait grew although every attempt moved data: {waits:?}"
    );
    let moved = summary(&output)["bytes_moved"].as_u64().unwrap();
    assert!(
        moved >= size as u64,
        "the summary says {moved} bytes moved for {size} pulled"
    );
}

#[test]
fn a_cut_at_half_resumes_moving_only_the_missing_half() {
    let setup = Setup::start();
    let (proxy, config) = setup.via_proxy();
    let size = 128 * BLOCK as usize;
    let destination = cut_pull(&setup, &proxy, &config, size);
    // What the first run kept: blocks verified on disk and journaled.
    let plan = summary(&pull_via(&setup, &config, &["--dry-run"]));
    let item = plan["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["kind"] == "file")
        .unwrap()
        .clone();
    let kept = item["have"].as_u64().unwrap() * BLOCK;
    // Lost at the cut: at most the reads in flight (8 MiB) and what died in socket buffers
    // with the link; never more than a few MiB beyond that.
    assert!(
        kept + 12 * BLOCK >= size as u64 / 2,
        "kept only {kept} bytes of the {} that arrived",
        size / 2
    );
    proxy.reset_counters();
    let output = pull_via(&setup, &config, &["--no-remote-digest"]);
    assert_success(&output);
    assert_eq!(
        fs::read(&destination).unwrap(),
        fs::read(setup.path("big.bin")).unwrap()
    );
    let result = summary(&output);
    let missing = size as u64 - kept;
    assert_eq!(result["bytes_moved"].as_u64().unwrap(), missing, "{result}");
    assert_eq!(result["bytes_reused"].as_u64().unwrap(), kept, "{result}");
    // Everything the server sent, SSH and SFTP framing and the handshake included, is the
    // missing part plus at most 1% and a little.
    let on_wire = proxy.bytes_down();
    let bound = missing + missing / 100 + 64 * 1024;
    assert!(
        on_wire <= bound,
        "{on_wire} bytes on the wire for {missing} missing bytes"
    );
}

#[test]
fn flipped_bytes_in_a_partial_file_are_fetched_again() {
    let setup = Setup::start();
    let (proxy, config) = setup.via_proxy();
    let size = 32 * BLOCK as usize;
    let destination = cut_pull(&setup, &proxy, &config, size);
    // How many blocks the journal vouches for.
    let plan = summary(&pull_via(&setup, &config, &["--dry-run"]));
    let item = plan["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["kind"] == "file")
        .unwrap()
        .clone();
    assert_eq!(item["action"], "resume", "{item}");
    let have = item["have"].as_u64().unwrap();
    assert!(have >= 4, "only {have} blocks were kept");
    // Damage the middle of the second block, which the journal says is done.
    let mut bytes = fs::read(&destination).unwrap();
    for byte in &mut bytes[(BLOCK + BLOCK / 2) as usize..(BLOCK + BLOCK / 2 + 100) as usize] {
        *byte ^= 0xff;
    }
    fs::write(&destination, &bytes).unwrap();
    // SFTP: the journal alone decides (the agent's delta would also find the blocks written
    // after the last journal record, and this test is about what the journal vouches for).
    let output = pull_via(&setup, &config, &["--no-agent", "--no-remote-digest"]);
    assert_success(&output);
    assert_eq!(
        fs::read(&destination).unwrap(),
        fs::read(setup.path("big.bin")).unwrap()
    );
    let reused = summary(&output)["bytes_reused"].as_u64().unwrap();
    assert_eq!(
        reused,
        (have - 1) * BLOCK,
        "the damaged block was trusted or good ones were dropped"
    );
}

#[test]
fn a_source_changed_between_runs_is_fetched_again_not_spliced() {
    let setup = Setup::start();
    let (proxy, config) = setup.via_proxy();
    let size = 32 * BLOCK as usize;
    let destination = cut_pull(&setup, &proxy, &config, size);
    // Same size, new content and mtime.
    write_file(&setup.path("big.bin"), 4242, size, 0o644, 1_700_000_500);
    let output = pull_via(&setup, &config, &[]);
    assert_success(&output);
    assert_eq!(
        fs::read(&destination).unwrap(),
        fs::read(setup.path("big.bin")).unwrap()
    );
    assert_eq!(summary(&output)["bytes_reused"], 0);
    // A different size too.
    write_file(&setup.path("big.bin"), 77, size / 3, 0o600, 1_700_000_900);
    assert_success(&pull_via(&setup, &config, &[]));
    assert_eq!(
        fs::read(&destination).unwrap(),
        fs::read(setup.path("big.bin")).unwrap()
    );
    assert_eq!(fs::metadata(&destination).unwrap().mode() & 0o777, 0o600);
}

#[test]
fn a_missing_remote_path_is_a_clear_remote_error() {
    let setup = Setup::start();
    let output = setup.run(&[
        "pull",
        &setup.remote("nope"),
        setup.path("x").to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(6));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(
        text.contains("no such file or directory") && text.contains("nope"),
        "{text}"
    );
    let started = Instant::now();
    let output = setup.run(&["pull", "box:/x", "box:/y"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// `xfer pull -n ... | head -2`: the reader goes away mid-plan, and xfer ends quietly with its
/// own exit code, no panic.
#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    use std::io::Read;
    let setup = Setup::start();
    let source = setup.path("many");
    for index in 0..3000 {
        write_file(
            &source.join(format!("d{}/file-{index}.txt", index % 10)),
            index,
            10,
            0o644,
            1_600_000_000,
        );
    }
    let mut command = setup.xfer(&[
        "pull",
        "-n",
        &setup.remote("many"),
        setup.path("copy").to_str().unwrap(),
    ]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let mut stderr = child.stderr.take().unwrap();
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "xfer did not end");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut said = String::new();
    stderr.read_to_string(&mut said).unwrap();
    assert_eq!(status.code(), Some(0), "{said}");
    assert!(
        !said.contains("panicked") && !said.contains("Broken pipe"),
        "{said}"
    );
}

/// Ctrl-C and SIGTERM in the middle of a pull: one line saying how far it got and that a
/// re-run resumes, exit 130 / 143, and the re-run ends identical, moving only what was missing.
#[test]
fn an_interrupted_pull_says_so_once_and_the_rerun_resumes() {
    for (signal, code) in [
        (nix::sys::signal::Signal::SIGINT, 130),
        (nix::sys::signal::Signal::SIGTERM, 143),
    ] {
        let setup = Setup::start();
        let (proxy, config) = setup.via_proxy();
        let size = 24 << 20;
        let source = setup.path("big.bin");
        write_file(&source, 7, size, 0o644, 1_700_000_000);
        write_file(&setup.path("tree/small.txt"), 8, 100, 0o644, 1_700_000_000);
        fs::rename(&source, setup.path("tree/big.bin")).unwrap();
        let copy = setup.path("copy");
        proxy.set_mode(ProxyMode::Throttle {
            bytes_per_second: 4_000_000,
        });
        let mut command = xfer_command_in(setup.state.path());
        command
            .args(["pull", "-q", "-F"])
            .arg(&config)
            .arg(format!("via:{}", setup.path("tree").display()))
            .arg(&copy)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = command.spawn().unwrap();
        let deadline = Instant::now() + LIMIT;
        while proxy.bytes_down() < 6 << 20 {
            assert!(Instant::now() < deadline, "the pull never got going");
            std::thread::sleep(Duration::from_millis(10));
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{signal}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{signal}: one line expected:\n{stderr}"
        );
        assert!(
            stderr.contains("interrupted:") && stderr.contains("re-run the same command"),
            "{signal}: {stderr}"
        );

        proxy.set_mode(ProxyMode::Pass);
        proxy.reset_counters();
        let mut again = xfer_command_in(setup.state.path());
        again
            .args(["pull", "-F"])
            .arg(&config)
            .arg(format!("via:{}", setup.path("tree").display()))
            .arg(&copy);
        let rerun = run_with_timeout(&mut again, LIMIT);
        assert_success(&rerun);
        assert_eq!(
            tree_digest(&setup.path("tree")),
            tree_digest(&copy),
            "{signal}"
        );
        assert!(
            proxy.bytes_down() < size as u64 - (4 << 20),
            "{signal}: the re-run moved {} bytes of {size}",
            proxy.bytes_down()
        );
    }
}

/// A trailing `/` names a directory, as with cp, scp and rsync: a file pushed or pulled there
/// lands inside it, the directories made as needed.
#[test]
fn a_trailing_slash_names_a_directory_both_ways() {
    let setup = Setup::start();
    let file = setup.path("weights.bin");
    write_file(&file, 12, 3 << 20, 0o640, 1_700_000_000);
    for (index, extra) in [&[][..], &["--no-agent"][..]].into_iter().enumerate() {
        let remote_dir = setup.path(&format!("remote-{index}/a/new/dir"));
        let mut arguments = vec!["push", file.to_str().unwrap()];
        let target = format!("box:{}/", remote_dir.display());
        arguments.push(&target);
        arguments.extend_from_slice(extra);
        assert_success(&setup.run(&arguments));
        assert_eq!(
            fs::read(remote_dir.join("weights.bin")).unwrap(),
            fs::read(&file).unwrap()
        );

        let local_dir = setup.path(&format!("local-{index}/missing"));
        let source = setup.remote("weights.bin");
        let destination = format!("{}/", local_dir.display());
        let mut arguments = vec!["pull", &source, &destination];
        arguments.extend_from_slice(extra);
        assert_success(&setup.run(&arguments));
        assert!(local_dir.is_dir());
        assert_eq!(
            fs::read(local_dir.join("weights.bin")).unwrap(),
            fs::read(&file).unwrap()
        );
    }
}

/// A push keeps a symlink's own mtime, as a pull does (rsync -a compares it), through the
/// agent and over SFTP.
#[test]
fn a_pushed_symlink_keeps_its_own_mtime() {
    let setup = Setup::start();
    let source = setup.path("with-link");
    write_file(&source.join("data.txt"), 3, 10, 0o644, 1_600_000_000);
    std::os::unix::fs::symlink("data.txt", source.join("link")).unwrap();
    let time = nix::sys::time::TimeSpec::new(1_650_000_000, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &source.join("link"),
        &time,
        &time,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    for (index, extra) in [&[][..], &["--no-agent"][..]].into_iter().enumerate() {
        let target = setup.path(&format!("pushed-{index}"));
        let remote = format!("box:{}", target.display());
        let mut arguments = vec!["push", source.to_str().unwrap(), &remote];
        arguments.extend_from_slice(extra);
        assert_success(&setup.run(&arguments));
        let link = fs::symlink_metadata(target.join("link")).unwrap();
        assert!(link.file_type().is_symlink());
        assert_eq!(link.mtime(), 1_650_000_000, "{extra:?}");
        assert_eq!(
            fs::metadata(target.join("data.txt")).unwrap().mtime(),
            1_600_000_000
        );
    }
}

/// A failure names the unit and the path, says each cause once, and has no empty names.
#[test]
fn failures_name_the_unit_and_the_path_once() {
    let setup = Setup::start();
    let blocker = setup.path("a-file");
    fs::write(&blocker, b"not a directory").unwrap();
    let source = setup.path("tree");
    fs::create_dir_all(source.join("sub")).unwrap();
    fs::write(source.join("top.txt"), b"top").unwrap();
    fs::write(source.join("sub/inner.txt"), b"inner").unwrap();
    let remote = format!("box:{}/below/dest", blocker.display());
    let output = setup.run(&["push", source.to_str().unwrap(), &remote]);
    assert_eq!(output.status.code(), Some(6));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains(&blocker.display().to_string()), "{text}");
    assert!(text.contains("the top directory failed"), "{text}");
    assert!(text.contains("not reached"), "{text}");
    for bad in [": :", "unit .", "failed :", "Some(", "None"] {
        assert!(!text.contains(bad), "{bad:?} in:\n{text}");
    }
    // The cause is told in the unit lines and the final line, never listed again per item.
    let cause = "exists and is not a directory";
    let told = text.lines().filter(|line| line.contains(cause)).count();
    let units = text
        .lines()
        .filter(|line| line.contains("failed after"))
        .count();
    assert_eq!(told, units + 1, "{text}");
}

#[test]
fn shell_scripts_with_crlf_are_warned_about_or_converted() {
    let setup = Setup::start();
    let source = setup.path("job");
    fs::create_dir_all(&source).unwrap();
    let script = b"#!/bin/bash\r\nset -e\r\necho training\r\n".to_vec();
    fs::write(source.join("train.sh"), &script).unwrap();
    fs::set_permissions(source.join("train.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    // Not a script: bytes that happen to hold CRLF are never touched.
    let data = b"\x00\x01\r\n\x02 binary\r\n".to_vec();
    fs::write(source.join("weights.bin"), &data).unwrap();
    let remote = setup.remote("remote-job");
    let target = setup.path("remote-job");

    let output = setup.run(&["push", source.to_str().unwrap(), &remote]);
    assert_success(&output);
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        text.contains("train.sh") && text.contains("CRLF") && text.contains("--fix-crlf"),
        "{text}"
    );
    assert!(!text.contains("weights.bin"), "{text}");
    assert_eq!(fs::read(target.join("train.sh")).unwrap(), script);

    let output = setup.run(&[
        "push",
        "--fix-crlf",
        "--json",
        source.to_str().unwrap(),
        &remote,
    ]);
    assert_success(&output);
    assert_eq!(
        fs::read(target.join("train.sh")).unwrap(),
        b"#!/bin/bash\nset -e\necho training\n"
    );
    assert_eq!(
        fs::metadata(target.join("train.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    assert_eq!(fs::read(target.join("weights.bin")).unwrap(), data);
    // The local file is left as it is.
    assert_eq!(fs::read(source.join("train.sh")).unwrap(), script);
    // Converted once: a re-run finds the remote up to date.
    let output = setup.run(&[
        "push",
        "--fix-crlf",
        "--json",
        source.to_str().unwrap(),
        &remote,
    ]);
    assert_success(&output);
    assert_eq!(summary(&output)["bytes_moved"], 0);

    // Pull has nothing to convert.
    let output = setup.run(&[
        "pull",
        "--fix-crlf",
        &remote,
        setup.path("back").to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2));
}
