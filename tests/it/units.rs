//! One SSH session per directory, against a real sshd behind a byte-counting proxy: a link cut
//! over and over still ends byte-identical in one invocation with little waste; without retries
//! the failed directories are reported and a re-run moves nothing of the finished ones; a no-op
//! re-run of 10,000 files reads no file data; a stalled link is detected and retried; a deleted
//! local file is all a re-run fetches; the top-level directories exist before the first file.

use crate::support::{
    Proxy, ProxyMode, Sshd, assert_success, files_digest, pattern, run_with_timeout, set_mtime,
    summary, xfer_command_in,
};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(240);
const MIB: usize = 1 << 20;

/// Writes a source file as if an hour ago: a pull of a file written within seconds of it is
/// checked again by the next run (`engine::settle`), and these tests count what re-runs do.
fn write(path: &Path, seed: u64, length: usize) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, pattern(seed, length)).unwrap();
    set_mtime(path, an_hour_ago());
}

fn an_hour_ago() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    now.as_secs() as i64 - 3600
}

/// A checkpoint-like tree: `dirs` step directories of files, plus loose files at the top.
fn make_tree(root: &Path, dirs: usize, files: usize, size: usize) -> u64 {
    let mut total = 0;
    for dir in 0..dirs {
        for file in 0..files {
            let length = size + dir * 1000 + file * 17;
            write(
                &root.join(format!("step-{dir:03}/part-{file}.bin")),
                (dir * 100 + file) as u64,
                length,
            );
            total += length as u64;
        }
    }
    write(&root.join("config.json"), 7, 1234);
    total + 1234
}

struct Bench {
    sshd: Sshd,
    proxy: Proxy,
    config: PathBuf,
    state: tempfile::TempDir,
    work: tempfile::TempDir,
}

fn bench(extra: &[&str]) -> Bench {
    let sshd = Sshd::start();
    let proxy = Proxy::start(sshd.port());
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("ssh_config");
    let mut lines = vec![format!("Port {}", proxy.port())];
    lines.extend(extra.iter().map(|line| line.to_string()));
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    sshd.append_client_config(&config, "flaky", &lines);
    Bench {
        sshd,
        proxy,
        config,
        state: tempfile::tempdir().unwrap(),
        work,
    }
}

impl Bench {
    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    fn pull(&self, extra: &[&str]) -> Output {
        let mut command = xfer_command_in(self.state.path());
        command
            .args(["pull", "--json", "--retry-wait", "0.05", "-F"])
            .arg(&self.config)
            .args(extra)
            .arg(format!("flaky:{}", self.path("source").display()))
            .arg(self.path("copy"));
        run_with_timeout(&mut command, LIMIT)
    }
}

#[test]
fn a_link_cut_over_and_over_still_ends_identical_in_one_run() {
    let bench = bench(&[]);
    let data = make_tree(&bench.path("source"), 4, 3, 10 * MIB);
    // Every connection dies after 32 MiB (both ways), a quarter of the 120 MiB of data. Each cut
    // loses what was in flight (a few MiB in socket buffers and half-assembled blocks), so the
    // bound below needs the data to be several times the cut length.
    bench
        .proxy
        .set_mode(ProxyMode::CutEachAfter(32 * MIB as u64));
    let output = bench.pull(&["-j", "2"]);
    assert_success(&output);
    assert_eq!(
        files_digest(&bench.path("source")),
        files_digest(&bench.path("copy"))
    );
    let result = summary(&output);
    let retried: u64 = result["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|unit| unit["attempts"].as_u64().unwrap() - 1)
        .sum();
    assert!(
        retried >= 2,
        "the cuts should have forced retries: {result}"
    );
    assert!(
        bench.proxy.connections() >= 4,
        "{} connections",
        bench.proxy.connections()
    );
    let wire = bench.proxy.bytes_total();
    eprintln!(
        "{} connections, {retried} retries, wire / data = {:.3}",
        bench.proxy.connections(),
        wire as f64 / data as f64
    );
    assert!(
        (wire as f64) < data as f64 * 1.15,
        "{wire} bytes on the wire for {data} bytes of data"
    );
}

#[test]
fn without_retries_failures_are_reported_and_a_rerun_skips_finished_units() {
    let bench = bench(&[]);
    make_tree(&bench.path("source"), 4, 2, 4 * MIB);
    bench
        .proxy
        .set_mode(ProxyMode::CutEachAfter(6 * MIB as u64));
    let output = bench.pull(&["-j", "4", "--retries", "0"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let first = summary(&output);
    let units = first["units"].as_array().unwrap().clone();
    let failed: Vec<String> = units
        .iter()
        .filter(|unit| unit["outcome"] == "failed")
        .map(|unit| unit["unit"].as_str().unwrap().to_string())
        .collect();
    let done: Vec<String> = units
        .iter()
        .filter(|unit| unit["outcome"] == "done")
        .map(|unit| unit["unit"].as_str().unwrap().to_string())
        .collect();
    assert!(!failed.is_empty(), "nothing failed: {first}");
    assert!(!done.is_empty(), "nothing finished: {first}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("re-run the same command"));

    bench.proxy.set_mode(ProxyMode::Pass);
    let output = bench.pull(&["-j", "4"]);
    assert_success(&output);
    assert_eq!(
        files_digest(&bench.path("source")),
        files_digest(&bench.path("copy"))
    );
    let second = summary(&output);
    for unit in second["units"].as_array().unwrap() {
        let name = unit["unit"].as_str().unwrap().to_string();
        if done.contains(&name) {
            assert_eq!(unit["outcome"], "skipped-complete", "{unit}");
            assert_eq!(unit["bytes_moved"], 0, "{unit}");
        }
    }
}

/// SFTP sessions the host has started so far (its log names each one's subsystem).
fn sftp_sessions(sshd: &Sshd) -> usize {
    sshd.log().matches("subsystem 'sftp'").count()
}

#[test]
fn a_noop_rerun_of_ten_thousand_files_reads_no_file_data() {
    let bench = bench(&[]);
    let source = bench.path("source");
    let mut data = 0u64;
    for dir in 0..100 {
        for file in 0..100 {
            let length = 1024 + (dir * 100 + file) % 2048;
            write(
                &source.join(format!("d{dir:02}/f{file:03}")),
                (dir * 1000 + file) as u64,
                length,
            );
            data += length as u64;
        }
    }
    assert_success(&bench.pull(&[]));
    assert_eq!(files_digest(&source), files_digest(&bench.path("copy")));
    bench.proxy.reset_counters();
    let sessions_before = sftp_sessions(&bench.sshd);
    let started = Instant::now();
    let output = bench.pull(&[]);
    let took = started.elapsed();
    assert_success(&output);
    let result = summary(&output);
    assert_eq!(result["bytes_moved"], 0);
    assert_eq!(result["files_up_to_date"], 10_000);
    // One connection, whose two SFTP sessions (the planner's and the scouts') list side by
    // side; no agent started.
    assert_eq!(bench.proxy.connections(), 1);
    assert_eq!(sftp_sessions(&bench.sshd) - sessions_before, 2);
    let skipped = result["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|unit| unit["outcome"] == "skipped-complete")
        .count();
    assert_eq!(skipped, 101, "{result}");
    // Listings only: a few hundred bytes per file would already be the whole data.
    let wire = bench.proxy.bytes_total();
    assert!(
        wire < data / 8,
        "{wire} bytes on the wire for a no-op over {data} bytes of files"
    );
    eprintln!("no-op re-run of 10,000 files: {took:?}, {wire} bytes on the wire");
}

#[test]
fn directories_of_every_size_around_the_listings_batches_arrive_whole() {
    // OpenSSH answers a readdir with at most 100 names, and xfer sends its readdirs in rounds
    // of 2, 4, then 8 before the answers come back: sizes on each side of a batch and of a
    // round, so a name lost or listed twice between batches shows.
    const SIZES: [usize; 13] = [
        0, 1, 99, 100, 101, 199, 200, 201, 600, 601, 1400, 1401, 2150,
    ];
    let bench = bench(&[]);
    let source = bench.path("source");
    let mut files = 0;
    for (dir, &size) in SIZES.iter().enumerate() {
        let directory = source.join(format!("d{dir:02}-{size}"));
        fs::create_dir_all(&directory).unwrap();
        for file in 0..size {
            write(
                &directory.join(format!("f{file:04}")),
                file as u64,
                file % 61,
            );
        }
        files += size;
    }
    let output = bench.pull(&[]);
    assert_success(&output);
    assert_eq!(summary(&output)["files_transferred"], files);
    assert_eq!(files_digest(&source), files_digest(&bench.path("copy")));
    for (dir, &size) in SIZES.iter().enumerate() {
        let copied = fs::read_dir(bench.path("copy").join(format!("d{dir:02}-{size}")))
            .unwrap()
            .count();
        assert_eq!(copied, size, "directory {dir} of {size} files");
    }
    let output = bench.pull(&[]);
    assert_success(&output);
    let result = summary(&output);
    assert_eq!(result["files_up_to_date"], files, "{result}");
    assert_eq!(result["bytes_moved"], 0, "{result}");
}

/// The `-vv` line of a run on its first connection: the round trip timed, connections ahead.
fn first_connection_line(output: &Output) -> String {
    let log = String::from_utf8_lossy(&output.stderr);
    log.lines()
        .find(|line| line.contains("first connection up"))
        .unwrap_or_else(|| panic!("no line on the first connection:\n{log}"))
        .to_string()
}

#[test]
fn a_far_link_opens_its_connections_as_soon_as_its_round_trip_is_timed() {
    // A round trip of 40 ms or more: far (20 ms). A first pull: data is likely, so the budget
    // (twice -j 4) is opened when the first connection has logged in and timed its round
    // trip, beside the planner's start, not after it.
    let bench = bench(&[]);
    make_tree(&bench.path("source"), 2, 1, 1000);
    bench
        .proxy
        .set_mode(ProxyMode::Delay(Duration::from_millis(20)));
    let output = bench.pull(&["-vv"]);
    assert_success(&output);
    assert_eq!(
        files_digest(&bench.path("source")),
        files_digest(&bench.path("copy"))
    );
    let line = first_connection_line(&output);
    assert!(
        line.contains("round_trip=Some(") && line.contains("ahead=7"),
        "{line}"
    );
    assert_eq!(bench.proxy.connections(), 8);

    // Over the same link undelayed, a re-run of a complete tree: nothing opened ahead.
    bench.proxy.set_mode(ProxyMode::Pass);
    let output = bench.pull(&["-vv"]);
    assert_success(&output);
    let line = first_connection_line(&output);
    assert!(
        line.contains("round_trip=Some(") && line.contains("ahead=0"),
        "{line}"
    );
}

#[test]
fn a_stalled_link_is_detected_and_retried() {
    let bench = bench(&["ServerAliveInterval 1", "ServerAliveCountMax 2"]);
    let data = make_tree(&bench.path("source"), 2, 2, 8 * MIB);
    // Every connection goes silent after 12 MiB while keeping its socket open.
    bench
        .proxy
        .set_mode(ProxyMode::StallEachAfter(12 * MIB as u64));
    let started = Instant::now();
    let output = bench.pull(&["-j", "2"]);
    assert_success(&output);
    assert_eq!(
        files_digest(&bench.path("source")),
        files_digest(&bench.path("copy"))
    );
    let result = summary(&output);
    let retried: u64 = result["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|unit| unit["attempts"].as_u64().unwrap() - 1)
        .sum();
    assert!(retried >= 1, "{result}");
    assert!(
        started.elapsed() < Duration::from_secs(180),
        "took {:?}",
        started.elapsed()
    );
    assert!(data > 0);
}

#[test]
fn deleting_one_local_file_makes_the_rerun_fetch_just_that_file() {
    let bench = bench(&[]);
    make_tree(&bench.path("source"), 3, 2, MIB);
    assert_success(&bench.pull(&[]));
    let victim = bench.path("copy/step-001/part-1.bin");
    let size = fs::metadata(&victim).unwrap().len();
    fs::remove_file(&victim).unwrap();
    // A truncated file elsewhere is noticed too.
    let truncated = bench.path("copy/step-002/part-0.bin");
    let truncated_size = fs::metadata(&truncated).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(10)
        .unwrap();
    let output = bench.pull(&[]);
    assert_success(&output);
    assert_eq!(
        files_digest(&bench.path("source")),
        files_digest(&bench.path("copy"))
    );
    let result = summary(&output);
    assert_eq!(result["files_transferred"], 2, "{result}");
    assert_eq!(
        result["bytes_moved"].as_u64().unwrap(),
        size + truncated_size,
        "{result}"
    );
    let outcomes: BTreeMap<String, String> = result["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|unit| {
            (
                unit["unit"].as_str().unwrap().to_string(),
                unit["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(outcomes["step-000"], "skipped-complete");
    assert_eq!(outcomes["step-001"], "done");
    assert_eq!(outcomes["step-002"], "done");
}

#[test]
fn a_changed_source_file_is_noticed_even_within_a_complete_unit() {
    let bench = bench(&[]);
    make_tree(&bench.path("source"), 2, 2, MIB);
    assert_success(&bench.pull(&[]));
    // Same size, new content and mode, an mtime a few seconds on.
    let changed = bench.path("source/step-000/part-0.bin");
    let before = fs::metadata(&changed).unwrap();
    fs::write(&changed, pattern(999, before.len() as usize)).unwrap();
    fs::set_permissions(&changed, fs::Permissions::from_mode(0o600)).unwrap();
    set_mtime(&changed, before.mtime() + 5);
    let output = bench.pull(&[]);
    assert_success(&output);
    assert_eq!(
        files_digest(&bench.path("source")),
        files_digest(&bench.path("copy"))
    );
    assert_eq!(summary(&output)["files_transferred"], 1);
}

#[test]
fn a_source_rewritten_within_the_second_the_pull_read_it_is_fetched_again() {
    let bench = bench(&[]);
    let source = bench.path("source/step/part.bin");
    fs::create_dir_all(source.parent().unwrap()).unwrap();
    fs::write(&source, pattern(1, 3 * MIB)).unwrap();
    assert_success(&bench.pull(&[]));
    // Written again after the pull read it, as within the same second: same size, same mtime.
    let before = fs::metadata(&source).unwrap();
    fs::write(&source, pattern(2, 3 * MIB)).unwrap();
    set_mtime(&source, before.mtime());
    let output = bench.pull(&[]);
    assert_success(&output);
    assert_eq!(
        files_digest(&bench.path("source")),
        files_digest(&bench.path("copy"))
    );
    assert_eq!(summary(&output)["files_transferred"], 1);
}

#[test]
fn checksum_catches_a_change_that_keeps_size_and_mtime() {
    let bench = bench(&[]);
    make_tree(&bench.path("source"), 2, 2, 9 * MIB);
    assert_success(&bench.pull(&[]));
    // The blind spot of any size-and-mtime check: same size, same mtime, other bytes.
    let changed = bench.path("source/step-001/part-1.bin");
    let before = fs::metadata(&changed).unwrap();
    fs::write(&changed, pattern(4242, before.len() as usize)).unwrap();
    set_mtime(&changed, before.mtime());
    let output = bench.pull(&[]);
    assert_success(&output);
    assert_eq!(
        summary(&output)["files_transferred"],
        0,
        "the quick check cannot see it, as documented"
    );
    let output = bench.pull(&["--checksum"]);
    assert_success(&output);
    assert_eq!(summary(&output)["files_transferred"], 1);
    assert_eq!(
        files_digest(&bench.path("source")),
        files_digest(&bench.path("copy"))
    );
}

#[test]
fn push_with_cuts_and_retries_ends_identical() {
    let bench = bench(&[]);
    make_tree(&bench.path("source"), 3, 2, 4 * MIB);
    bench
        .proxy
        .set_mode(ProxyMode::CutEachAfter(8 * MIB as u64));
    let mut command = xfer_command_in(bench.state.path());
    command
        .args(["push", "--json", "--retry-wait", "0.05", "-j", "3", "-F"])
        .arg(&bench.config)
        .arg(bench.path("source"))
        .arg(format!("flaky:{}", bench.path("pushed").display()))
        .stdout(Stdio::piped());
    let output = run_with_timeout(&mut command, LIMIT);
    assert_success(&output);
    assert_eq!(
        files_digest(&bench.path("source")),
        files_digest(&bench.path("pushed"))
    );
    let _ = &bench.sshd;
}

/// A file of `size` bytes went over several connections: none carried three quarters of it.
fn assert_spread(bench: &Bench, size: u64) {
    let busiest = bench.proxy.busiest_connection();
    assert!(
        busiest < size * 3 / 4,
        "one connection carried {busiest} bytes of {size} ({} connections)",
        bench.proxy.connections()
    );
}

#[test]
fn a_large_pushed_file_travels_over_several_connections_and_survives_cuts() {
    // The push side of the same: the file's writes are spread over the borrowed connections,
    // each with the remote file open for writing.
    let bench = bench(&[]);
    let source = bench.path("source.bin");
    write(&source, 78, 80 * MIB);
    // At loopback speed 80 MiB can be gone before the borrowed connections have started their
    // agents (on a loaded machine, a login shell each): a link of 40 MiB/s leaves them time.
    bench.proxy.set_mode(ProxyMode::Throttle {
        bytes_per_second: 40 << 20,
    });
    let pushed = bench.path("pushed.bin");
    let push = |bench: &Bench| {
        let mut command = xfer_command_in(bench.state.path());
        command
            .args(["push", "--json", "--retry-wait", "0.05", "-j", "4", "-F"])
            .arg(&bench.config)
            .arg(&source)
            .arg(format!("flaky:{}", pushed.display()))
            .stdout(Stdio::piped());
        run_with_timeout(&mut command, LIMIT)
    };
    let output = push(&bench);
    assert_success(&output);
    assert_eq!(fs::read(&source).unwrap(), fs::read(&pushed).unwrap());
    assert_spread(&bench, 80 * MIB as u64);

    // Every connection cut after 12 MiB: retried, resumed, identical, little waste.
    fs::remove_file(&pushed).unwrap();
    bench.proxy.reset_counters();
    bench
        .proxy
        .set_mode(ProxyMode::CutEachAfter(12 * MIB as u64));
    let output = push(&bench);
    assert_success(&output);
    assert_eq!(fs::read(&source).unwrap(), fs::read(&pushed).unwrap());
    let wire = bench.proxy.bytes_total();
    assert!(
        wire < (80 * MIB as u64) * 3 / 2,
        "{wire} bytes on the wire for 80 MiB"
    );
    assert!(bench.proxy.cuts() > 0, "the link was never cut");
}

#[test]
fn a_tree_never_opens_more_connections_than_jobs() {
    // A large file in one directory wants more connections while small directories still wait
    // in the queue: the workers keep their slots for the queued units, and once the queue is
    // empty a finished worker's connection is lent to the large file, not a new one opened.
    let bench = bench(&[]);
    let source = bench.path("source");
    write(&source.join("aa/large.bin"), 91, 70 * MIB);
    for (index, name) in ["bb", "cc", "dd", "ee"].iter().enumerate() {
        for file in 0..3 {
            write(
                &source.join(format!("{name}/small-{file}.bin")),
                (index * 10 + file) as u64,
                20_000 + file,
            );
        }
    }
    let output = bench.pull(&["-j", "2"]);
    assert_success(&output);
    assert_eq!(files_digest(&source), files_digest(&bench.path("copy")));
    assert!(
        bench.proxy.connections() <= 2,
        "{} connections with -j 2",
        bench.proxy.connections()
    );
}

#[test]
fn a_large_file_travels_over_several_connections_and_survives_cuts() {
    // One big file is one unit; the rest of the -j budget carries its blocks too.
    let bench = bench(&[]);
    let source = bench.path("source");
    write(&source, 77, 80 * MIB);
    // As for the push below: a link of 40 MiB/s, so the borrowed connections come up in time.
    bench.proxy.set_mode(ProxyMode::Throttle {
        bytes_per_second: 40 << 20,
    });
    let output = bench.pull(&["-j", "4"]);
    assert_success(&output);
    assert_eq!(
        fs::read(&source).unwrap(),
        fs::read(bench.path("copy")).unwrap()
    );
    assert_spread(&bench, 80 * MIB as u64);

    // Every connection cut after 12 MiB: retried, resumed, identical, little waste.
    fs::remove_file(bench.path("copy")).unwrap();
    bench.proxy.reset_counters();
    bench
        .proxy
        .set_mode(ProxyMode::CutEachAfter(12 * MIB as u64));
    let output = bench.pull(&["-j", "4"]);
    assert_success(&output);
    assert_eq!(
        fs::read(&source).unwrap(),
        fs::read(bench.path("copy")).unwrap()
    );
    let wire = bench.proxy.bytes_total();
    assert!(
        wire < (80 * MIB as u64) * 3 / 2,
        "{wire} bytes on the wire for 80 MiB"
    );
}

#[test]
fn every_top_level_directory_is_made_before_the_first_file() {
    // ext4 places a file's inode by its directory's; made as the units reach them, interleaved
    // with thousands of file creations, directories (and so their files) landed where a copy
    // deleted moments before had left slots the allocator must scan past. With one job and a
    // slow link, the last unit would not start for many seconds: its directory must be there
    // when the first file is.
    let bench = bench(&[]);
    let source = bench.path("source");
    make_tree(&source, 5, 2, MIB);
    bench.proxy.set_mode(ProxyMode::Throttle {
        bytes_per_second: 200_000,
    });
    let copy = bench.path("copy");
    let mut command = xfer_command_in(bench.state.path());
    command
        .args(["pull", "-q", "-j", "1", "-F"])
        .arg(&bench.config)
        .arg(format!("flaky:{}", source.display()))
        .arg(&copy)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + LIMIT;
    let first_file = loop {
        let found = walkdir::WalkDir::new(&copy)
            .into_iter()
            .filter_map(|entry| entry.ok())
            .find(|entry| entry.file_type().is_file());
        if let Some(found) = found {
            break found.into_path();
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "xfer ended before writing any file"
        );
        assert!(Instant::now() < deadline, "no file arrived in {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(5));
    };
    let missing: Vec<String> = (0..5)
        .map(|dir| format!("step-{dir:03}"))
        .filter(|name| !copy.join(name).is_dir())
        .collect();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        missing.is_empty(),
        "when {} appeared, these directories were missing: {missing:?}",
        first_file.display()
    );
}

/// What a reporter was told, in order.
#[derive(Debug, Clone, PartialEq)]
enum Told {
    Planned(u64),
    PlanComplete,
}

#[derive(Default)]
struct Recording(std::sync::Mutex<Vec<Told>>);

impl xfer::progress::Reporter for Recording {
    fn planned(&self, files: u64, _bytes: u64) {
        self.0.lock().unwrap().push(Told::Planned(files));
    }
    fn plan_complete(&self) {
        self.0.lock().unwrap().push(Told::PlanComplete);
    }
}

/// The progress the engine reports never shows a total that later grows: the plan is told
/// complete once, after every unit's share is in, and the shares add up to every file; a
/// re-run where most units are found complete tells it too.
#[test]
fn the_plan_is_told_complete_once_after_every_unit_is_planned() {
    use xfer::engine::units::{Transfer, UnitOptions};
    // The agent this in-process run deploys is the xfer binary, as the command line declares
    // it; this test binary would take `agent` for a filter and run tests on the host.
    xfer::remote::deploy::serve_agent_from(PathBuf::from(env!("CARGO_BIN_EXE_xfer")));
    let sshd = Sshd::start();
    let config = sshd.write_client_config("box", &[]);
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    make_tree(&source, 12, 3, 2000);
    let state = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for run in ["first", "re-run"] {
        let recording = std::sync::Arc::new(Recording::default());
        let connector = std::sync::Arc::new(xfer::ssh::connect::Connector::new(
            xfer::ssh::config::ConfigSource::File(config.clone()),
            xfer::ssh::config::Overrides::default(),
            xfer::ssh::config::LocalContext::current().unwrap(),
        ));
        let transfer = Transfer {
            direction: xfer::engine::plan::Direction::Pull,
            remote_path: source.display().to_string(),
            local_path: work.path().join("copy"),
            state: xfer::engine::state::StateDir::at(state.path().join("state")).unwrap(),
            reporter: recording.clone(),
            options: UnitOptions {
                jobs: 2,
                retries: 0,
                retry_wait: Duration::from_millis(100),
                checksum: false,
                fix_crlf: false,
                engine: xfer::engine::Options::default(),
            },
            shared_source: None,
            group_sync: std::sync::Arc::new(xfer::local::GroupSync::new()),
        };
        let connect = |eager| {
            xfer::remote::pool::SessionPool::connect(
                connector,
                xfer::target::parse_host("box").unwrap(),
                xfer::remote::deploy::AgentMode::Auto,
                recording.clone(),
                eager,
            )
        };
        let summary = runtime
            .block_on(xfer::engine::units::run(transfer, connect))
            .unwrap();
        assert!(summary.errors.is_empty(), "{run}: {:?}", summary.errors);
        let told = recording.0.lock().unwrap().clone();
        let complete: Vec<usize> = told
            .iter()
            .enumerate()
            .filter(|(_, told)| **told == Told::PlanComplete)
            .map(|(index, _)| index)
            .collect();
        assert_eq!(complete, vec![told.len() - 1], "{run}: {told:?}");
        if run == "first" {
            let planned: u64 = told
                .iter()
                .map(|told| match told {
                    Told::Planned(files) => *files,
                    Told::PlanComplete => 0,
                })
                .sum();
            assert_eq!(planned, summary.files, "{run}: {told:?}");
        }
    }
}
