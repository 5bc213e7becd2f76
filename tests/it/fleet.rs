//! Fleet transfers (`xfer push LOCAL node-[1-4]:PATH`, `xfer pull node-[1-4]:PATH LOCAL`)
//! against several real sshds ([`Fleet`]), each with its own directory at one common path, as
//! the machines of a cluster have: a tree pushed to four hosts ends identical on each; a pull
//! gathers each host's own tree into `LOCAL/HOST`; a host that is down fails alone and a re-run
//! moves only its data; a host whose link is cut mid-transfer resumes within the run; the
//! source is read about once however many hosts it goes to; host lists that collide, repeat
//! or do not parse are refused before anything connects; `--hosts FILE` and `--hosts-at-once`;
//! `doctor` and `secret push`/`check` over host lists.
//!
//! The first tests check the fixture itself with OpenSSH's own client: each host sees its own
//! directory at the common path, a stopped host comes back with its port, key and directory,
//! a proxied host is reached through its proxy.

use crate::support::{
    Fleet, ProxyMode, assert_succeeded, assert_success, pattern, run_with_timeout, said, set_mtime,
    stderr, summary, text, tree_digest, write_file, xfer_command_in,
};
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long one xfer run may take: four hosts share two cores with the other tests.
const LIMIT: Duration = Duration::from_secs(300);
const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// The fixture.

#[test]
fn each_host_sees_its_own_directory_at_the_common_path() {
    let fleet = Fleet::builder(3).private_dirs().start();
    let common = fleet.common_path().display().to_string();
    for index in 1..=3 {
        fs::write(
            fleet.host_dir(index).join("planted"),
            format!("planted for node-{index}\n"),
        )
        .unwrap();
    }
    for index in 1..=3 {
        let output = fleet.ssh(
            index,
            &format!("cat {common}/planted && echo written by node-{index} > {common}/written"),
        );
        assert_succeeded(&output, "ssh");
        assert_eq!(text(&output.stdout), format!("planted for node-{index}\n"));
        assert_eq!(
            fs::read_to_string(fleet.host_dir(index).join("written")).unwrap(),
            format!("written by node-{index}\n")
        );
    }
    // Outside the hosts' namespaces the common path is the empty directory it was.
    assert!(
        fs::read_dir(fleet.common_path()).unwrap().next().is_none(),
        "a host's mount leaked out of its namespace"
    );
}

#[test]
fn a_stopped_host_comes_back_on_its_port_with_its_key_and_directory() {
    let mut fleet = Fleet::builder(2).private_dirs().start();
    let common = fleet.common_path().display().to_string();
    fs::write(fleet.host_dir(2).join("planted"), "still here\n").unwrap();
    // unshare and the mounting shell both exec: the process the fixture stops is sshd itself,
    // in a mount namespace that is not the tests'.
    let pid = fleet.sshd(2).pid().expect("running");
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        Path::new("/usr/sbin/sshd")
    );
    assert_ne!(
        fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap(),
        fs::read_link("/proc/self/ns/mnt").unwrap()
    );

    fleet.stop(2);
    let output = fleet.ssh(2, "true");
    assert!(
        !output.status.success() && stderr(&output).contains("Connection refused"),
        "a stopped host still answered:\n{}",
        said(&output)
    );
    assert_succeeded(&fleet.ssh(1, "true"), "ssh to the host still up");

    fleet.start_again(2);
    // StrictHostKeyChecking yes and one known_hosts: the same key answers on the same port.
    let output = fleet.ssh(2, &format!("cat {common}/planted"));
    assert_succeeded(&output, "ssh after start_again");
    assert_eq!(text(&output.stdout), "still here\n");
}

#[test]
fn a_proxied_host_is_reached_through_its_proxy() {
    let fleet = Fleet::builder(2).proxy_in_front(2).start();
    assert_succeeded(&fleet.ssh(1, "true"), "ssh to node-1");
    assert_eq!(
        fleet.proxy(2).connections(),
        0,
        "node-1 went through the proxy"
    );
    let output = fleet.ssh(2, "echo through");
    assert_succeeded(&output, "ssh to node-2");
    assert_eq!(text(&output.stdout), "through\n");
    assert!(fleet.proxy(2).connections() >= 1 && fleet.proxy(2).bytes_down() > 0);
    // The proxy decides: cut at the first byte, node-2 is unreachable.
    fleet.proxy(2).set_mode(ProxyMode::CutEachAfter(0));
    assert!(!fleet.ssh(2, "true").status.success());
    assert!(fleet.proxy(2).cuts() >= 1);
}

// ---------------------------------------------------------------------------------------------
// Helpers of the transfer tests.

/// A state directory kept across the runs of a test (so they resume) and a working directory.
struct Local {
    state: tempfile::TempDir,
    work: tempfile::TempDir,
}

impl Local {
    fn new() -> Local {
        Local {
            state: tempfile::tempdir().unwrap(),
            work: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// `xfer ARGUMENTS -F CONFIG` with this state directory.
    fn xfer(&self, fleet: &Fleet, arguments: &[&str]) -> Command {
        let mut command = xfer_command_in(self.state.path());
        command.args(arguments).arg("-F").arg(fleet.config());
        command
    }

    fn run(&self, fleet: &Fleet, arguments: &[&str]) -> Output {
        run_with_timeout(&mut self.xfer(fleet, arguments), LIMIT)
    }
}

/// A dataset like a small checkpoint directory, 20 files: 4 step directories of 4 files
/// (64 KiB to 300 KiB), a config, an executable, an empty file, and `big` bytes in
/// `weights.bin`; modes and mtimes vary, as do the contents with `seed`. Returns the bytes of
/// file data.
fn make_dataset(root: &Path, seed: u64, big: usize) -> u64 {
    let mut total = 0;
    for step in 0..4u64 {
        for part in 0..4u64 {
            let number = step * 4 + part;
            let length = 64 * 1024 + ((seed + number) % 7) as usize * 37 * 1024 + number as usize;
            let mode = if part == 3 { 0o600 } else { 0o644 };
            write_file(
                &root.join(format!("step-{step}/part-{part}.bin")),
                seed * 100 + number,
                length,
                mode,
                1_700_000_000 + number as i64 * 10,
            );
            total += length as u64;
        }
    }
    write_file(
        &root.join("config.json"),
        seed * 100 + 50,
        1234,
        0o644,
        1_700_001_000,
    );
    write_file(
        &root.join("bin/tool"),
        seed * 100 + 51,
        4321,
        0o755,
        1_700_001_100,
    );
    write_file(&root.join("EMPTY"), 0, 0, 0o444, 1_700_001_200);
    write_file(
        &root.join("weights.bin"),
        seed * 100 + 99,
        big,
        0o640,
        1_700_001_300,
    );
    total += 1234 + 4321 + big as u64;
    // Directory modes and mtimes last: writing their files changed the mtimes.
    fs::set_permissions(root.join("step-1"), fs::Permissions::from_mode(0o750)).unwrap();
    for (index, directory) in ["step-0", "step-1", "step-2", "step-3", "bin"]
        .iter()
        .enumerate()
    {
        set_mtime(&root.join(directory), 1_700_002_000 + index as i64);
    }
    total
}

const DATASET_FILES: u64 = 20;

/// `node-[1-N]:PATH`.
fn host_list(fleet: &Fleet, path: &Path) -> String {
    format!("node-[1-{}]:{}", fleet.host_count(), path.display())
}

/// The fleet summary's host entries; fails unless they are `names`, in that order.
fn hosts_in_order(report: &Value, names: &[String]) -> Vec<Value> {
    let hosts = report["hosts"]
        .as_array()
        .unwrap_or_else(|| panic!("no hosts array in {report:#}"))
        .clone();
    let found: Vec<&str> = hosts
        .iter()
        .map(|host| host["host"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(found, names, "the hosts of {report:#}");
    hosts
}

/// Fails unless `host` is done: state done, exit code 0, no error, a summary.
fn assert_done(host: &Value) {
    assert_eq!(host["state"], "done", "{host:#}");
    assert_eq!(host["exit_code"], 0, "{host:#}");
    assert!(host["last_error"].is_null(), "{host:#}");
    assert!(host["summary"].is_object(), "{host:#}");
}

fn bytes_moved(value: &Value) -> u64 {
    value["bytes_moved"]
        .as_u64()
        .unwrap_or_else(|| panic!("no bytes_moved in {value:#}"))
}

// ---------------------------------------------------------------------------------------------
// Transfers.

#[test]
fn a_tree_pushed_to_four_hosts_ends_identical_on_each() {
    let fleet = Fleet::builder(4).private_dirs().start();
    let local = Local::new();
    let source = local.path("dataset");
    let total = make_dataset(&source, 1, 8 * MIB);
    let destination = fleet.common_path().join("data");
    let output = local.run(
        &fleet,
        &[
            "push",
            "--json",
            source.to_str().unwrap(),
            &host_list(&fleet, &destination),
        ],
    );
    assert_success(&output);
    let report = summary(&output);
    let expected = tree_digest(&source);
    for (index, host) in hosts_in_order(&report, &fleet.aliases()).iter().enumerate() {
        let index = index + 1;
        assert_done(host);
        assert_eq!(
            tree_digest(&fleet.host_dir(index).join("data")),
            expected,
            "node-{index}'s copy"
        );
        assert_eq!(bytes_moved(host), total, "{host:#}");
        assert_eq!(host["summary"]["files"], DATASET_FILES, "{host:#}");
        assert_eq!(
            host["summary"]["files_transferred"], DATASET_FILES,
            "{host:#}"
        );
    }
    assert_eq!(report["hosts_done"], 4, "{report:#}");
    assert_eq!(report["hosts_partly"], 0, "{report:#}");
    assert_eq!(report["hosts_failed"], 0, "{report:#}");
    assert_eq!(bytes_moved(&report), 4 * total, "{report:#}");
    // Without a terminal, stderr tells of every host.
    let said = stderr(&output);
    for alias in fleet.aliases() {
        assert!(
            said.contains(&alias),
            "stderr does not name {alias}:\n{said}"
        );
    }
}

#[test]
fn a_pull_from_four_hosts_gathers_each_hosts_tree_under_its_name() {
    let fleet = Fleet::builder(4).private_dirs().start();
    for index in 1..=4 {
        let data = fleet.host_dir(index).join("data");
        make_dataset(&data, 10 + index as u64, MIB);
        // Not only the contents differ: each host has a file of its own.
        write_file(
            &data.join(format!("only-on-node-{index}.txt")),
            index as u64,
            100,
            0o644,
            1_700_003_000,
        );
    }
    let local = Local::new();
    // LOCAL does not exist yet: the pull creates it, with a directory per host inside.
    let gathered = local.path("gathered");
    let output = local.run(
        &fleet,
        &[
            "pull",
            "--json",
            &host_list(&fleet, &fleet.common_path().join("data")),
            gathered.to_str().unwrap(),
        ],
    );
    assert_success(&output);
    let report = summary(&output);
    for (index, host) in hosts_in_order(&report, &fleet.aliases()).iter().enumerate() {
        let index = index + 1;
        assert_done(host);
        assert!(
            host["destination"]
                .as_str()
                .is_some_and(|path| path.ends_with(&format!("/node-{index}"))),
            "{host:#}"
        );
        assert_eq!(
            tree_digest(&gathered.join(format!("node-{index}"))),
            tree_digest(&fleet.host_dir(index).join("data")),
            "node-{index}'s tree"
        );
    }
    assert_eq!(report["hosts_done"], 4, "{report:#}");
    let mut entries: Vec<String> = fs::read_dir(&gathered)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, fleet.aliases());
}

#[test]
fn a_host_that_is_down_fails_alone_and_the_rerun_moves_only_its_data() {
    let mut fleet = Fleet::builder(4).private_dirs().start();
    let local = Local::new();
    let source = local.path("dataset");
    let total = make_dataset(&source, 2, MIB);
    let destination = fleet.common_path().join("data");
    let list = host_list(&fleet, &destination);
    // Few, short retries: node-3 stays down for the whole first run.
    let arguments = [
        "push",
        "--json",
        "--retries",
        "1",
        "--retry-wait",
        "0.05",
        source.to_str().unwrap(),
        &list,
    ];
    fleet.stop(3);
    let output = local.run(&fleet, &arguments);
    assert_eq!(
        output.status.code(),
        Some(1),
        "a host that is down is a transient failure:\n{}",
        said(&output)
    );
    let report = summary(&output);
    let expected = tree_digest(&source);
    let hosts = hosts_in_order(&report, &fleet.aliases());
    for (index, host) in hosts.iter().enumerate() {
        let index = index + 1;
        if index == 3 {
            assert_eq!(host["state"], "failed", "{host:#}");
            // The host's own code is the class of its failure, a connection's, as a push to it
            // alone would end; the run's code says that class is transient.
            assert_eq!(host["exit_code"], 3, "{host:#}");
            assert!(
                host["last_error"]
                    .as_str()
                    .is_some_and(|error| !error.is_empty()),
                "{host:#}"
            );
            assert!(host["summary"].is_null(), "{host:#}");
            assert!(!fleet.host_dir(3).join("data").exists());
        } else {
            assert_done(host);
            assert_eq!(tree_digest(&fleet.host_dir(index).join("data")), expected);
        }
    }
    assert_eq!(report["hosts_done"], 3, "{report:#}");
    assert_eq!(report["hosts_failed"], 1, "{report:#}");

    fleet.start_again(3);
    let output = local.run(&fleet, &arguments);
    assert_success(&output);
    let report = summary(&output);
    for (index, host) in hosts_in_order(&report, &fleet.aliases()).iter().enumerate() {
        let index = index + 1;
        assert_done(host);
        let moved = if index == 3 { total } else { 0 };
        assert_eq!(bytes_moved(host), moved, "node-{index}: {host:#}");
        assert_eq!(tree_digest(&fleet.host_dir(index).join("data")), expected);
    }
    assert_eq!(report["hosts_done"], 4, "{report:#}");
    assert_eq!(bytes_moved(&report), total, "{report:#}");
}

#[test]
fn a_host_cut_mid_transfer_resumes_within_the_run() {
    let fleet = Fleet::builder(4).private_dirs().proxy_in_front(2).start();
    let local = Local::new();
    let size = 32 * MIB;
    let source = local.path("big.bin");
    write_file(&source, 7, size, 0o644, 1_700_000_000);
    let destination = fleet.common_path().join("big.bin");
    // Every connection node-2 has open is cut once half the file has gone through its proxy.
    fleet
        .proxy(2)
        .set_mode(ProxyMode::CutAllAfter(size as u64 / 2));
    let output = local.run(
        &fleet,
        &[
            "push",
            "--json",
            "--retry-wait",
            "0.1",
            source.to_str().unwrap(),
            &host_list(&fleet, &destination),
        ],
    );
    assert_success(&output);
    assert!(
        fleet.proxy(2).cuts() >= 1,
        "the proxy never cut node-2's link"
    );
    let report = summary(&output);
    let content = fs::read(&source).unwrap();
    let hosts = hosts_in_order(&report, &fleet.aliases());
    for (index, host) in hosts.iter().enumerate() {
        let index = index + 1;
        assert_done(host);
        assert!(
            fs::read(fleet.host_dir(index).join("big.bin")).unwrap() == content,
            "node-{index}'s copy differs"
        );
    }
    // What was cut resumed: the retry reused what had landed before the cut and moved the
    // rest; a restart from zero would have moved the whole file twice.
    let moved = bytes_moved(&hosts[1]);
    let reused = hosts[1]["summary"]["bytes_reused"].as_u64().unwrap_or(0);
    println!(
        "node-2 moved {moved} bytes and reused {reused} for a file of {size}; the proxy cut {} connection(s)",
        fleet.proxy(2).cuts()
    );
    assert!(
        reused > 0 && moved >= size as u64 - reused && moved < 2 * size as u64,
        "node-2 moved {moved} bytes and reused {reused} for a file of {size}: {:#}",
        hosts[1]
    );
}

/// Runs `command` to its end within `limit` and returns its output and `rchar` from its
/// `/proc/PID/io`: every byte it read with read(2), pread(2) and their kin, from files and
/// sockets alike. The process is waited for without being reaped (`WNOWAIT`), so its
/// `/proc/PID` stays, holding the totals of all its threads, until it is read; then it is
/// reaped. Output goes to files, so the command never blocks on a pipe nobody reads.
fn run_counting_reads(command: &mut Command, limit: Duration) -> (Output, u64) {
    let out = tempfile::tempfile().unwrap();
    let err = tempfile::tempfile().unwrap();
    command
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .stdin(Stdio::null())
        .process_group(0);
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
    let pid = Pid::from_raw(child.id() as i32);
    let deadline = Instant::now() + limit;
    let read_back = |mut file: &fs::File| {
        use std::io::{Read, Seek};
        let mut bytes = Vec::new();
        file.rewind().unwrap();
        file.read_to_end(&mut bytes).unwrap();
        bytes
    };
    loop {
        match waitid(
            Id::Pid(pid),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG,
        ) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => {}
            Err(error) => panic!("cannot wait for {command:?}: {error}"),
        }
        if Instant::now() >= deadline {
            // The group is the one spawned here; nothing else is in it.
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = child.wait();
            panic!(
                "timed out after {limit:?}, killed: {command:?}\n--- stderr ---\n{}",
                text(&read_back(&err))
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
    let io = fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_else(|error| panic!("cannot read /proc/{pid}/io: {error}"));
    let rchar = io
        .lines()
        .find_map(|line| line.strip_prefix("rchar:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rchar in /proc/{pid}/io:\n{io}"));
    let status = child.wait().unwrap();
    let output = Output {
        status,
        stdout: read_back(&out),
        stderr: read_back(&err),
    };
    (output, rchar)
}

/// A push to four hosts reads its source about once, not once per host.
///
/// `rchar` counts every byte the xfer process read from anything: the source file, but also
/// its own executable (it hashes itself once per run to name its agent), its config and key
/// files, and its sockets. So it is an upper bound on the source bytes read. A small push to
/// the same hosts measures what does not depend on the data, which is taken off; what the
/// sockets bring back in a push (acknowledgements, block hashes of a fresh destination) is a
/// small fraction of the data and stays in, making the bound looser, never tighter.
#[test]
fn a_push_to_four_hosts_reads_its_source_about_once() {
    let fleet = Fleet::builder(4).private_dirs().start();
    let local = Local::new();
    let small = local.path("warm-up.bin");
    // As large as needs the same machinery as the big file (the agent, which xfer names by
    // hashing its own executable), and small beside it.
    let small_size = 2 * MIB;
    write_file(&small, 3, small_size, 0o644, 1_700_000_000);
    let size = 48 * MIB;
    let source = local.path("big.bin");
    write_file(&source, 8, size, 0o644, 1_700_000_000);

    // The warm-up: every host's agent is put in place if it was not (an upload reads the
    // executable again), then the same push once more gives the baseline.
    // Each warm-up goes to a new destination, so that it sends its file rather than finding
    // it complete.
    let warm_up = |name: &str| {
        run_counting_reads(
            &mut local.xfer(
                &fleet,
                &[
                    "push",
                    small.to_str().unwrap(),
                    &host_list(&fleet, &fleet.common_path().join(name)),
                ],
            ),
            LIMIT,
        )
    };
    assert_success(&warm_up("first-warm-up.bin").0);
    let (output, baseline) = warm_up("second-warm-up.bin");
    assert_success(&output);

    let (output, rchar) = run_counting_reads(
        &mut local.xfer(
            &fleet,
            &[
                "push",
                "--json",
                source.to_str().unwrap(),
                &host_list(&fleet, &fleet.common_path().join("big.bin")),
            ],
        ),
        LIMIT,
    );
    assert_success(&output);
    let content = fs::read(&source).unwrap();
    for index in 1..=4 {
        assert!(
            fs::read(fleet.host_dir(index).join("big.bin")).unwrap() == content,
            "node-{index}'s copy differs"
        );
    }
    assert_eq!(summary(&output)["hosts_done"], 4);
    // The baseline read its own source once, at most: what is left of it is the fixed cost.
    let fixed = baseline.saturating_sub(small_size as u64);
    let read = rchar.saturating_sub(fixed);
    let ratio = read as f64 / size as f64;
    println!(
        "a push of {} MiB to 4 hosts read {read} bytes beyond the fixed {fixed} ({ratio:.3} x the file)",
        size / MIB
    );
    // At least once: the measurement sees the source being read at all.
    assert!(
        read >= (size - MIB) as u64,
        "only {read} bytes read for a {size}-byte source: is rchar measured?"
    );
    assert!(
        ratio < 1.2,
        "the push read {ratio:.2} x its source for 4 hosts ({read} bytes)"
    );

    // A delta to the four: each host compares its copy with the source's block hashes, which
    // are computed once for all of them (a full read); then each host hashes the pieces of
    // the three changed blocks (3 MiB each), and the changed pieces are read to be sent. So
    // about 1.3 x the file, where hashing per host would read it 4 times.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = fs::OpenOptions::new().write(true).open(&source).unwrap();
        for block in [3u64, 20, 41] {
            file.seek(SeekFrom::Start(block * MIB as u64 + 1000))
                .unwrap();
            file.write_all(&pattern(block, 5000)).unwrap();
        }
    }
    set_mtime(&source, 1_700_000_500);
    let (output, rchar) = run_counting_reads(
        &mut local.xfer(
            &fleet,
            &[
                "push",
                "--json",
                source.to_str().unwrap(),
                &host_list(&fleet, &fleet.common_path().join("big.bin")),
            ],
        ),
        LIMIT,
    );
    assert_success(&output);
    let report = summary(&output);
    let content = fs::read(&source).unwrap();
    for (index, host) in hosts_in_order(&report, &fleet.aliases()).iter().enumerate() {
        assert!(
            fs::read(fleet.host_dir(index + 1).join("big.bin")).unwrap() == content,
            "node-{}'s copy differs after the delta",
            index + 1
        );
        assert!(
            bytes_moved(host) < (4 * MIB) as u64,
            "node-{} was sent more than the changed blocks: {host:#}",
            index + 1
        );
    }
    let read = rchar.saturating_sub(fixed);
    let ratio = read as f64 / size as f64;
    println!(
        "a delta push of {} MiB to 4 hosts read {ratio:.3} x the file",
        size / MIB
    );
    assert!(
        ratio < 1.5,
        "the delta push read {ratio:.2} x its source for 4 hosts ({read} bytes)"
    );
}

/// A config whose every `node-N` reaches one listener that never accepts: a run that connects
/// anywhere leaves a connection in its queue, which `nothing_connected` finds.
struct Nowhere {
    listener: std::net::TcpListener,
    dir: tempfile::TempDir,
}

impl Nowhere {
    fn new() -> Nowhere {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut config = String::new();
        for index in 1..=4 {
            config.push_str(&format!(
                "Host node-{index}\n    HostName 127.0.0.1\n    Port {port}\n    BatchMode yes\n    ConnectTimeout 5\n"
            ));
        }
        fs::write(dir.path().join("ssh_config"), config).unwrap();
        fs::write(dir.path().join("source.bin"), pattern(1, 1000)).unwrap();
        Nowhere { listener, dir }
    }

    /// Runs xfer with `arguments` against this config; fails unless it exits with 2 before
    /// connecting, saying `names`.
    fn assert_refused(&self, arguments: &[&str], names: &str) {
        let state = tempfile::tempdir().unwrap();
        let mut command = xfer_command_in(state.path());
        command
            .current_dir(self.dir.path())
            .args(arguments)
            .arg("-F")
            .arg(self.dir.path().join("ssh_config"));
        let output = run_with_timeout(&mut command, Duration::from_secs(60));
        assert_eq!(
            output.status.code(),
            Some(2),
            "{arguments:?} was not refused as a usage error:\n{}",
            said(&output)
        );
        assert!(
            stderr(&output).contains(names),
            "{arguments:?}: the error does not name {names:?}:\n{}",
            said(&output)
        );
        match self.listener.accept() {
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("{arguments:?} connected (from {peer}) before refusing"),
            Err(error) => panic!("cannot check the listener: {error}"),
        }
    }
}

#[test]
fn colliding_repeated_and_malformed_host_lists_are_refused_before_connecting() {
    let nowhere = Nowhere::new();
    // Two sources would both be gathered into gathered/node-1.
    nowhere.assert_refused(&["pull", "node-1:/a", "node-1:/b", "gathered"], "node-1");
    nowhere.assert_refused(
        &["pull", "node-[1-3]:/data", "node-2:/data", "gathered"],
        "node-2",
    );
    // One host twice, also where only the expansion shows it: a list with a comma, and
    // padded numbers that keep their zeros.
    nowhere.assert_refused(
        &["push", "source.bin", "node-[1-2]:/p", "node-2:/p"],
        "node-2",
    );
    nowhere.assert_refused(
        &["push", "source.bin", "node-[1,3-4]:/p", "node-4:/p"],
        "node-4",
    );
    nowhere.assert_refused(
        &[
            "push",
            "source.bin",
            "rack[1-2]-gpu[01-02]:/p",
            "rack2-gpu02:/p",
        ],
        "rack2-gpu02",
    );
    // Lists that do not parse, each named in the error.
    for list in ["node-[3-1]", "node-[1-", "node-[]", "node-[a-b]"] {
        nowhere.assert_refused(&["push", "source.bin", &format!("{list}:/p")], list);
        nowhere.assert_refused(&["pull", &format!("{list}:/p"), "gathered"], list);
    }
    assert!(!nowhere.dir.path().join("gathered").exists());
}

#[test]
fn hosts_from_a_file_and_one_host_at_a_time() {
    let fleet = Fleet::builder(4).private_dirs().start();
    let local = Local::new();
    for index in 1..=2 {
        make_dataset(&fleet.host_dir(index).join("data"), 20 + index as u64, 0);
    }
    let hosts = local.path("hosts");
    fs::write(&hosts, "# the first two nodes\nnode-1\n\nnode-2\n").unwrap();
    let gathered = local.path("gathered");
    fs::create_dir(&gathered).unwrap();
    let output = local.run(
        &fleet,
        &[
            "pull",
            "--json",
            "--hosts",
            hosts.to_str().unwrap(),
            &fleet.common("data"),
            gathered.to_str().unwrap(),
        ],
    );
    assert_success(&output);
    hosts_in_order(&summary(&output), &fleet.aliases()[..2]);
    for index in 1..=2 {
        assert_eq!(
            tree_digest(&gathered.join(format!("node-{index}"))),
            tree_digest(&fleet.host_dir(index).join("data")),
            "node-{index}'s tree"
        );
    }
    assert_eq!(fs::read_dir(&gathered).unwrap().count(), 2);

    // A line of the file may be a host list; one host at a time still reaches all four.
    let all = local.path("all-hosts");
    fs::write(&all, "# every node\nnode-[1-4]\n").unwrap();
    let source = local.path("dataset");
    make_dataset(&source, 3, 2 * MIB);
    let output = local.run(
        &fleet,
        &[
            "push",
            "--json",
            "--hosts-at-once",
            "1",
            "--hosts",
            all.to_str().unwrap(),
            source.to_str().unwrap(),
            &fleet.common("pushed"),
        ],
    );
    assert_success(&output);
    let report = summary(&output);
    for host in hosts_in_order(&report, &fleet.aliases()) {
        assert_done(&host);
    }
    let expected = tree_digest(&source);
    for index in 1..=4 {
        assert_eq!(
            tree_digest(&fleet.host_dir(index).join("pushed")),
            expected,
            "node-{index}'s copy"
        );
    }
}

#[test]
fn doctor_and_secrets_take_host_lists() {
    let fleet = Fleet::builder(4).private_dirs().start();
    let local = Local::new();
    let output = local.run(&fleet, &["doctor", "--json", "node-[1-4]"]);
    assert_success(&output);
    let reports: Vec<Value> = summary(&output)
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no array of reports:\n{}", said(&output)));
    let names: Vec<&str> = reports
        .iter()
        .map(|report| report["host"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(names, fleet.aliases());
    for (index, report) in reports.iter().enumerate() {
        assert_eq!(report["passed"], true, "{report:#}");
        assert_eq!(report["port"], fleet.sshd(index + 1).port(), "{report:#}");
    }

    let target = fleet.common("secret");
    let mut push = local.xfer(
        &fleet,
        &[
            "secret",
            "push",
            "--from-env",
            "XFER_TEST_SECRET",
            "--to",
            &target,
            "node-[1-4]",
        ],
    );
    push.env("XFER_TEST_SECRET", "fleet-secret-value");
    let output = run_with_timeout(&mut push, LIMIT);
    assert_success(&output);
    for index in 1..=4 {
        let file = fleet.host_dir(index).join("secret");
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            "fleet-secret-value",
            "node-{index}"
        );
        assert_eq!(
            fs::metadata(&file).unwrap().mode() & 0o777,
            0o600,
            "node-{index}"
        );
    }

    // Checked through a hosts file: all four agree until node-2's copy changes.
    let hosts = local.path("hosts");
    fs::write(&hosts, "node-[1-4]\n").unwrap();
    let check = |expect_success: bool| {
        let mut command = local.xfer(
            &fleet,
            &[
                "secret",
                "check",
                "--from-env",
                "XFER_TEST_SECRET",
                "--to",
                &target,
                "--hosts",
                hosts.to_str().unwrap(),
            ],
        );
        command.env("XFER_TEST_SECRET", "fleet-secret-value");
        let output = run_with_timeout(&mut command, LIMIT);
        assert_eq!(output.status.success(), expect_success, "{}", said(&output));
        output
    };
    check(true);
    fs::write(fleet.host_dir(2).join("secret"), "changed-on-node-2").unwrap();
    let output = check(false);
    assert!(
        text(&output.stdout)
            .lines()
            .any(|line| line.starts_with("node-2")),
        "{}",
        said(&output)
    );
}

#[test]
fn a_dry_run_plans_every_host_and_changes_nothing() {
    let fleet = Fleet::builder(2).private_dirs().start();
    let local = Local::new();
    let source = local.path("dataset");
    make_dataset(&source, 5, MIB);
    // node-2 already holds the data: its plan has nothing to send.
    let pushed = local.run(
        &fleet,
        &[
            "push",
            source.to_str().unwrap(),
            &format!("node-2:{}", fleet.common("data")),
        ],
    );
    assert_success(&pushed);
    let destination = fleet.common_path().join("data");
    let output = local.run(
        &fleet,
        &[
            "push",
            "--dry-run",
            "--json",
            source.to_str().unwrap(),
            &host_list(&fleet, &destination),
        ],
    );
    assert_success(&output);
    let report = summary(&output);
    let hosts = hosts_in_order(&report, &fleet.aliases());
    let to_send = |host: &Value| -> usize {
        host["plan"]["items"]
            .as_array()
            .unwrap_or_else(|| panic!("no plan items in {host:#}"))
            .iter()
            .filter(|item| item["action"] != "up-to-date")
            .count()
    };
    assert!(
        to_send(&hosts[0]) >= DATASET_FILES as usize,
        "{:#}",
        hosts[0]
    );
    assert_eq!(to_send(&hosts[1]), 0, "{:#}", hosts[1]);
    assert!(
        !fleet.host_dir(1).join("data").exists(),
        "the dry run wrote node-1"
    );

    // As text, each plan comes under its host's name.
    let output = local.run(
        &fleet,
        &[
            "push",
            "--dry-run",
            source.to_str().unwrap(),
            &host_list(&fleet, &destination),
        ],
    );
    assert_success(&output);
    let shown = text(&output.stdout);
    let first = shown
        .find("== node-1 ==")
        .unwrap_or_else(|| panic!("{shown}"));
    let second = shown
        .find("== node-2 ==")
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(first < second, "{shown}");
    assert!(
        !fleet.host_dir(1).join("data").exists(),
        "the dry run wrote node-1"
    );
}

/// A fleet reached through one login host whose sshd drops connections still being set up
/// past two at once (`MaxStartups 2:30:4`, as hardened bastions are tuned): every host's
/// connections open a jump connection to it, sixteen in all for four hosts with `-j 4`. Those
/// are paced as the login host's own start-ups, shared by all the hosts of the run, so the push
/// completes with no retries (a start-up the gate drops anyway is ridden out, not counted).
/// Before the jump connections were paced, two of the four hosts failed here.
#[test]
fn a_fleet_behind_a_login_host_that_limits_start_ups_completes() {
    let fleet = Fleet::builder(4).private_dirs().start();
    let gate = crate::support::Sshd::builder()
        .extra_config("MaxStartups 2:30:4")
        .start();
    let local = Local::new();
    let config = local.path("ssh_config");
    let mut through_gate = String::new();
    for line in fs::read_to_string(fleet.config()).unwrap().lines() {
        through_gate.push_str(line);
        through_gate.push('\n');
        if line.trim_start().starts_with("Host node-") {
            through_gate.push_str("    ProxyJump gate\n");
        }
    }
    fs::write(&config, through_gate).unwrap();
    gate.append_client_config(&config, "gate", &[]);
    let source = local.path("dataset");
    make_dataset(&source, 9, MIB);
    let mut command = xfer_command_in(local.state.path());
    command
        .args(["push", "--json", "-j", "4", "--retries", "0", "-F"])
        .arg(&config)
        .arg(&source)
        .arg(host_list(&fleet, &fleet.common_path().join("data")));
    let output = run_with_timeout(&mut command, LIMIT);
    assert_success(&output);
    let expected = tree_digest(&source);
    for (index, host) in hosts_in_order(&summary(&output), &fleet.aliases())
        .iter()
        .enumerate()
    {
        assert_done(host);
        assert_eq!(
            tree_digest(&fleet.host_dir(index + 1).join("data")),
            expected,
            "node-{}'s copy",
            index + 1
        );
    }
    // Every connection went through the gate: it accepted one per connection xfer made.
    let accepted = gate.log().matches("Accepted publickey").count();
    assert!(
        accepted >= 4,
        "the gate logged {accepted} logins:\n{}",
        gate.log()
    );
    eprintln!(
        "the gate took {accepted} logins and dropped {} start-ups past MaxStartups",
        gate.log().matches("past MaxStartups").count()
    );
}
