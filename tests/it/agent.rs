//! The remote xfer agent against a real OpenSSH sshd: deployed into an empty cache, reused,
//! replaced when corrupted, refused from a cache others can write, skipped (with one line) on a
//! host of another platform or with an agent of another protocol version; pull and push
//! through it when the server refuses SFTP; deltas that move only the changed blocks (counted
//! at a proxy) and leave both sides identical for random mutations; SIGKILL of xfer, or of the
//! agent, in the middle of a delta, then a re-run; an agent that greets and then goes silent is
//! given up within the (lowered) stall bound.

use crate::support;
use crate::support::{
    Proxy, Setup, Sshd, SshdBuilder, assert_agent_used, assert_success, pattern, run_with_timeout,
    set_mtime, stderr, summary, tree_digest, xfer_command_in,
};
use proptest::prelude::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);
const BLOCK: usize = 1 << 20;

/// An sshd whose sessions get `home` as HOME (an empty agent cache unless the test fills it),
/// and `extra` sshd_config lines.
pub(crate) fn setup_with(
    builder: SshdBuilder,
    own_home: bool,
    path_prefix: Option<&Path>,
) -> Setup {
    let work = tempfile::tempdir().unwrap();
    let home = own_home.then(|| {
        let home = work.path().join("home");
        fs::create_dir_all(&home).unwrap();
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
        home
    });
    let mut builder = builder;
    let home_value = home
        .clone()
        .unwrap_or_else(|| support::remote_home().to_path_buf());
    // A temporary directory of the test's own: the agent's fallback cache lives there, and one
    // test's must not serve another's.
    let tmp = work.path().join("tmp");
    fs::create_dir_all(&tmp).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700)).unwrap();
    let mut line = format!(
        "SetEnv HOME={} TMPDIR={}",
        home_value.display(),
        tmp.display()
    );
    if let Some(prefix) = path_prefix {
        line.push_str(&format!(" PATH={}:/usr/bin:/bin", prefix.display()));
    }
    builder = builder.extra_config(&line);
    Setup::with(builder.start(), work, home)
}

fn setup() -> Setup {
    setup_with(Sshd::builder(), false, None)
}

/// A small tree: files around the block size, an empty file, a symlink, an empty directory.
pub(crate) fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::write(root.join("empty.bin"), b"").unwrap();
    fs::write(root.join("small.txt"), pattern(1, 3000)).unwrap();
    fs::write(root.join("a/block.bin"), pattern(2, BLOCK)).unwrap();
    fs::write(root.join("a/b/several.bin"), pattern(3, 3 * BLOCK + 77)).unwrap();
    fs::set_permissions(
        root.join("a/b/several.bin"),
        fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    std::os::unix::fs::symlink("a/block.bin", root.join("latest")).unwrap();
}

fn xfer_binary() -> Vec<u8> {
    fs::read(env!("CARGO_BIN_EXE_xfer")).unwrap()
}

#[test]
fn deploys_into_an_empty_cache_then_reuses_it() {
    let setup = setup_with(Sshd::builder(), true, None);
    make_tree(&setup.path("source"));
    let output = setup.run(&[
        "pull",
        &setup.remote("source"),
        setup.path("copy").to_str().unwrap(),
    ]);
    assert_success(&output);
    assert_agent_used(&output, "xfer");
    assert_eq!(
        tree_digest(&setup.path("source")),
        tree_digest(&setup.path("copy"))
    );

    let agents = setup.cached_agents();
    assert_eq!(agents.len(), 1, "one agent in the cache: {agents:?}");
    let agent = &agents[0];
    let name = agent.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("agent-{}-", env!("CARGO_PKG_VERSION"))),
        "{name}"
    );
    assert_eq!(fs::read(agent).unwrap(), xfer_binary());
    assert_eq!(
        fs::metadata(agent).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        fs::metadata(setup.cache()).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // Reused: the cached file is not written again.
    let before = fs::metadata(agent).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let output = setup.run(&[
        "push",
        setup.path("source").to_str().unwrap(),
        &setup.remote("pushed"),
    ]);
    assert_success(&output);
    assert_agent_used(&output, "xfer");
    assert_eq!(
        tree_digest(&setup.path("source")),
        tree_digest(&setup.path("pushed"))
    );
    let after = fs::metadata(agent).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(before.ino(), after.ino());
    assert_eq!(before.mtime_nsec(), after.mtime_nsec());
    assert_eq!(setup.cached_agents().len(), 1);
}

#[test]
fn a_corrupted_cached_agent_is_replaced() {
    let setup = setup_with(Sshd::builder(), true, None);
    support::install_agent(setup.home.as_ref().unwrap());
    let agent = setup.cached_agents().pop().unwrap();
    // Same size, a few bytes flipped in the middle: it may even still run.
    let mut bytes = fs::read(&agent).unwrap();
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 16] {
        *byte ^= 0x5a;
    }
    fs::write(&agent, &bytes).unwrap();
    make_tree(&setup.path("source"));
    let output = setup.run(&[
        "pull",
        &setup.remote("source"),
        setup.path("copy").to_str().unwrap(),
    ]);
    assert_success(&output);
    assert_agent_used(&output, "xfer");
    assert_eq!(
        tree_digest(&setup.path("source")),
        tree_digest(&setup.path("copy"))
    );
    assert_eq!(fs::read(&agent).unwrap(), xfer_binary());

    // Cut short (not even an executable any more): replaced too.
    fs::write(&agent, &xfer_binary()[..4096]).unwrap();
    let output = setup.run(&[
        "pull",
        &setup.remote("source"),
        setup.path("copy2").to_str().unwrap(),
    ]);
    assert_success(&output);
    assert_agent_used(&output, "xfer");
    assert_eq!(fs::read(&agent).unwrap(), xfer_binary());
}

#[test]
fn another_platform_falls_back_to_sftp_in_one_line() {
    // A host that says it is a riscv64 machine: nothing is uploaded there.
    let fake = tempfile::tempdir().unwrap();
    let uname = fake.path().join("uname");
    fs::write(
        &uname,
        "#!/bin/sh\ncase \"$1\" in -m) echo riscv64;; *) echo Linux;; esac\n",
    )
    .unwrap();
    fs::set_permissions(&uname, fs::Permissions::from_mode(0o755)).unwrap();
    let setup = setup_with(Sshd::builder(), true, Some(fake.path()));
    make_tree(&setup.path("source"));
    let output = setup.run(&[
        "pull",
        &setup.remote("source"),
        setup.path("copy").to_str().unwrap(),
    ]);
    assert_success(&output);
    assert_eq!(
        tree_digest(&setup.path("source")),
        tree_digest(&setup.path("copy"))
    );
    let text = stderr(&output);
    let notices: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("using SFTP"))
        .collect();
    assert_eq!(notices.len(), 1, "one line says why:\n{text}");
    assert!(notices[0].contains("riscv64"), "{text}");
    assert!(setup.cached_agents().is_empty());
}

/// A cache another account could change is never used: not run from, not written to. The
/// agent goes to the next private place instead (here the test's own TMPDIR), and works.
#[test]
fn a_cache_others_can_write_is_passed_over_for_a_private_one() {
    let setup = setup_with(Sshd::builder(), true, None);
    fs::create_dir_all(setup.cache()).unwrap();
    fs::set_permissions(setup.cache(), fs::Permissions::from_mode(0o777)).unwrap();
    make_tree(&setup.path("source"));
    let output = setup.run(&[
        "pull",
        &setup.remote("source"),
        setup.path("copy").to_str().unwrap(),
    ]);
    assert_success(&output);
    assert_agent_used(&output, "xfer");
    assert!(setup.cached_agents().is_empty());
    let uid = nix::unistd::geteuid();
    let fallback = setup.path(&format!("tmp/xfer-agent-{uid}"));
    let agents: Vec<_> = fs::read_dir(&fallback).unwrap().collect();
    assert_eq!(agents.len(), 1, "{}", fallback.display());
    assert_eq!(
        tree_digest(&setup.path("source")),
        tree_digest(&setup.path("copy"))
    );
}

#[test]
fn an_agent_of_another_protocol_version_falls_back() {
    let setup = setup();
    // An "agent" that greets with protocol versions 9 to 9 only.
    let hello = xfer::agent::protocol::test_server_hello(9, 9);
    let greeting = setup.path("hello.bin");
    fs::write(&greeting, hello).unwrap();
    let fake = setup.path("fake-agent");
    fs::write(
        &fake,
        format!("#!/bin/sh\ncat {}\ncat >/dev/null\n", greeting.display()),
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    make_tree(&setup.path("source"));
    let output = setup.run(&[
        "pull",
        "--agent",
        fake.to_str().unwrap(),
        &setup.remote("source"),
        setup.path("copy").to_str().unwrap(),
    ]);
    assert_success(&output);
    let text = stderr(&output);
    assert!(
        text.contains("using SFTP") && text.contains("version"),
        "{text}"
    );
    assert_eq!(
        tree_digest(&setup.path("source")),
        tree_digest(&setup.path("copy"))
    );
}

#[test]
fn an_agent_of_protocol_version_1_serves_a_newer_client() {
    let setup = setup();
    // The same build, speaking only what version 1 had (no small file with its hash in one
    // answer): the client must not ask for what the agent lacks.
    let older = setup.path("older-agent");
    fs::write(
        &older,
        format!(
            "#!/bin/sh\nexec {} agent --protocol-max 1\n",
            env!("CARGO_BIN_EXE_xfer")
        ),
    )
    .unwrap();
    fs::set_permissions(&older, fs::Permissions::from_mode(0o755)).unwrap();
    make_tree(&setup.path("source"));
    for (number, seed) in (0..20u64).enumerate() {
        fs::write(
            setup.path("source").join(format!("small-{number}")),
            pattern(seed, 100 + 97 * number),
        )
        .unwrap();
    }
    let output = setup.run(&[
        "pull",
        "--agent",
        older.to_str().unwrap(),
        &setup.remote("source"),
        setup.path("copy").to_str().unwrap(),
    ]);
    assert_success(&output);
    assert!(
        !stderr(&output).contains("using SFTP"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        tree_digest(&setup.path("source")),
        tree_digest(&setup.path("copy"))
    );
}

/// Seconds of silence the stalled-agent test allows the agent (`XFER_AGENT_TIMEOUT`).
const LOWERED_STALL_SECONDS: u64 = 2;

#[test]
fn an_agent_that_goes_silent_after_its_hello_is_given_up() {
    use xfer::agent::protocol::{BuildId, MAGIC, PROTOCOL_MAX, PROTOCOL_MIN, ServerHello};
    let setup = setup();
    // The real agent, of which only the greeting reaches xfer: the rest of its output is
    // drained, so it goes on serving (into nothing) and ends, closing the channel, only when
    // xfer closes its input.
    let hello = ServerHello {
        min_version: PROTOCOL_MIN,
        max_version: PROTOCOL_MAX,
        build: BuildId {
            version: env!("CARGO_PKG_VERSION").to_string(),
            executable_blake3: [0; 32],
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
        },
    }
    .encode()
    .unwrap();
    let greeting = MAGIC.len() + hello.len();
    let stalling = setup.path("stalling-agent");
    fs::write(
        &stalling,
        format!(
            "#!/bin/sh\n{} \"$@\" | {{ head -c {greeting}; cat >/dev/null; }}\n",
            env!("CARGO_BIN_EXE_xfer")
        ),
    )
    .unwrap();
    fs::set_permissions(&stalling, fs::Permissions::from_mode(0o755)).unwrap();
    make_tree(&setup.path("source"));
    let started = Instant::now();
    let output = run_with_timeout(
        setup
            .xfer(&[
                "pull",
                "--agent",
                stalling.to_str().unwrap(),
                "--retries",
                "1",
                "--retry-wait",
                "0.1",
                &setup.remote("source"),
                setup.path("copy").to_str().unwrap(),
            ])
            .env("XFER_AGENT_TIMEOUT", LOWERED_STALL_SECONDS.to_string()),
        LIMIT,
    );
    let text = stderr(&output);
    // Every unit failed on a connection error, after its one retry stalled as well: exit
    // code 1 (README "Exit codes": items failed for a reason a re-run can fix, such as a
    // dropped link), since the listing itself went through.
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("retrying"), "{text}");
    assert!(
        text.contains("failed after 2 attempt(s)") && text.contains("sent nothing for 2 s"),
        "{text}"
    );
    assert!(text.contains(" 0 transferred"), "{text}");
    // Two stalls and a retry, far within the harness's limit: the bound, not the harness,
    // ended the run.
    assert!(started.elapsed() < LIMIT / 2, "{:?}", started.elapsed());
}

#[test]
fn without_sftp_pull_and_push_go_through_the_agent() {
    let setup = setup_with(Sshd::builder().sftp(false), false, None);
    make_tree(&setup.path("source"));
    let output = setup.run(&[
        "pull",
        &setup.remote("source"),
        setup.path("copy").to_str().unwrap(),
    ]);
    assert_success(&output);
    assert_eq!(
        tree_digest(&setup.path("source")),
        tree_digest(&setup.path("copy"))
    );
    let output = setup.run(&[
        "push",
        setup.path("source").to_str().unwrap(),
        &setup.remote("pushed"),
    ]);
    assert_success(&output);
    assert_eq!(
        tree_digest(&setup.path("source")),
        tree_digest(&setup.path("pushed"))
    );

    // A delta of one large file: the agent is started beside the planner (the command names a
    // large local file) and, SFTP being refused, plans too.
    let large = setup.path("large.bin");
    fs::write(&large, pattern(31, 20 * BLOCK + 5)).unwrap();
    let pulled = setup.path("large-copy.bin");
    // Shorter, so the size says it changed whatever the mtimes, and one block rewritten.
    let mut old = pattern(31, 20 * BLOCK + 5);
    old.truncate(17 * BLOCK);
    old[7 * BLOCK..8 * BLOCK].fill(0);
    fs::write(&pulled, old).unwrap();
    let output = setup.run(&["pull", &setup.remote("large.bin"), pulled.to_str().unwrap()]);
    assert_success(&output);
    assert_agent_used(&output, "xfer");
    assert_eq!(fs::read(&large).unwrap(), fs::read(&pulled).unwrap());
    let output = setup.run(&[
        "push",
        large.to_str().unwrap(),
        &setup.remote("large-pushed.bin"),
    ]);
    assert_success(&output);
    assert_eq!(
        fs::read(&large).unwrap(),
        fs::read(setup.path("large-pushed.bin")).unwrap()
    );

    // SFTP only is refused with the reason.
    let output = setup.run(&[
        "pull",
        "--no-agent",
        &setup.remote("source"),
        setup.path("copy3").to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("SFTP"), "{}", stderr(&output));
}

#[test]
fn deploys_without_sftp() {
    let setup = setup_with(Sshd::builder().sftp(false), true, None);
    make_tree(&setup.path("source"));
    let output = setup.run(&[
        "pull",
        &setup.remote("source"),
        setup.path("copy").to_str().unwrap(),
    ]);
    assert_success(&output);
    assert_eq!(
        tree_digest(&setup.path("source")),
        tree_digest(&setup.path("copy"))
    );
    assert_eq!(setup.cached_agents().len(), 1);
}

/// Rewrites whole blocks `indexes` of `path` with new bytes, keeping its size.
fn rewrite_blocks(path: &Path, indexes: &[usize], seed: u64) {
    let mut data = fs::read(path).unwrap();
    for &index in indexes {
        let start = index * BLOCK;
        let end = ((index + 1) * BLOCK).min(data.len());
        data[start..end].copy_from_slice(&pattern(seed + index as u64, end - start));
    }
    fs::write(path, data).unwrap();
    // A change that keeps the size must move the mtime's second for the quick check to see it
    // (the same-second blind spot is documented; --checksum covers it): a fast run would
    // otherwise rewrite the file within the second of the transfer before.
    let seconds = fs::metadata(path).unwrap().mtime();
    set_mtime(path, seconds + 100);
}

fn run_via(setup: &Setup, config: &Path, arguments: &[&str]) -> Output {
    let mut command = xfer_command_in(setup.state.path());
    command.args(arguments).arg("-F").arg(config);
    run_with_timeout(&mut command, LIMIT)
}

/// Runs xfer through the counting proxy from zero, expecting success through the agent;
/// returns its output and the bytes it put on the wire.
fn counted_run(setup: &Setup, proxy: &Proxy, config: &Path, arguments: &[&str]) -> (Output, u64) {
    proxy.reset_counters();
    let output = run_via(setup, config, arguments);
    assert_success(&output);
    assert_agent_used(&output, "xfer");
    (output, proxy.bytes_total())
}

#[test]
fn a_delta_pull_moves_only_the_changed_blocks() {
    let setup = setup();
    let source = setup.path("big.bin");
    fs::write(&source, pattern(10, 48 * BLOCK + 1234)).unwrap();
    let copy = setup.path("copy.bin");
    let remote = format!("via:{}", source.display());
    let (proxy, config) = setup.via_proxy();
    assert_success(&run_via(
        &setup,
        &config,
        &["pull", &remote, copy.to_str().unwrap()],
    ));
    assert_eq!(fs::read(&source).unwrap(), fs::read(&copy).unwrap());

    // Three blocks change on the remote (the last, short one among them).
    rewrite_blocks(&source, &[3, 20, 48], 99);
    let (output, wire) = counted_run(
        &setup,
        &proxy,
        &config,
        &["pull", "--json", &remote, copy.to_str().unwrap()],
    );
    assert_eq!(fs::read(&source).unwrap(), fs::read(&copy).unwrap());
    let changed = (2 * BLOCK + 1234) as u64;
    assert!(
        wire < changed + 512 * 1024,
        "{wire} bytes on the wire for {changed} changed"
    );
    assert_eq!(summary(&output)["bytes_moved"], changed);
}

#[test]
fn a_delta_push_moves_only_the_changed_blocks() {
    let setup = setup();
    let source = setup.path("big.bin");
    fs::write(&source, pattern(11, 40 * BLOCK)).unwrap();
    let target = setup.path("remote.bin");
    let remote = format!("via:{}", target.display());
    let (proxy, config) = setup.via_proxy();
    assert_success(&run_via(
        &setup,
        &config,
        &["push", source.to_str().unwrap(), &remote],
    ));
    assert_eq!(fs::read(&source).unwrap(), fs::read(&target).unwrap());

    rewrite_blocks(&source, &[0, 17, 39], 7);
    proxy.reset_counters();
    let output = run_via(
        &setup,
        &config,
        &["push", "--json", source.to_str().unwrap(), &remote],
    );
    assert_success(&output);
    assert_eq!(fs::read(&source).unwrap(), fs::read(&target).unwrap());
    let changed = 3 * BLOCK as u64;
    let wire = proxy.bytes_total();
    assert!(
        wire < changed + 512 * 1024,
        "{wire} bytes on the wire for {changed} changed"
    );
    // The destination changed under a file xfer had finished: only a delta fixes it too.
    let mut remote_copy = fs::read(&target).unwrap();
    remote_copy[5 * BLOCK + 3] ^= 1;
    fs::write(&target, &remote_copy).unwrap();
    // Same size and mtime as the source would make it look up to date: --checksum looks.
    proxy.reset_counters();
    let output = run_via(
        &setup,
        &config,
        &["push", "--checksum", source.to_str().unwrap(), &remote],
    );
    assert_success(&output);
    assert_eq!(fs::read(&source).unwrap(), fs::read(&target).unwrap());
    assert!(proxy.bytes_total() < 2 * BLOCK as u64 + 512 * 1024);
}

/// The 32 KiB pieces a delta compares a differing block in.
const PIECE: usize = 32 << 10;

/// Small edits inside three blocks: the second straddles two pieces. Returns the bytes of the
/// pieces they touch.
fn edit_pieces(path: &Path) -> u64 {
    let before = fs::metadata(path).unwrap().modified().unwrap();
    let mut data = fs::read(path).unwrap();
    for (offset, length) in [
        (3 * BLOCK + 100, 8),
        (7 * BLOCK + PIECE - 2, 4),
        (12 * BLOCK + 500_000, 1),
    ] {
        for byte in &mut data[offset..offset + length] {
            *byte ^= 0x5a;
        }
    }
    fs::write(path, data).unwrap();
    // A later mtime, whatever the clock did: the quick check must see a change.
    let file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_modified(before + Duration::from_secs(10)).unwrap();
    4 * PIECE as u64
}

#[test]
fn small_edits_move_only_the_pieces_they_touch_both_ways() {
    let setup = setup();
    let (proxy, config) = setup.via_proxy();
    let data = pattern(21, 16 * BLOCK + 777);

    // Pull: the remote file is edited after a first copy.
    let source = setup.path("pulled-source.bin");
    fs::write(&source, &data).unwrap();
    let copy = setup.path("pulled.bin");
    let remote = format!("via:{}", source.display());
    assert_success(&run_via(
        &setup,
        &config,
        &["pull", &remote, copy.to_str().unwrap()],
    ));
    let pieces = edit_pieces(&source);
    let (output, wire) = counted_run(
        &setup,
        &proxy,
        &config,
        &["pull", "--json", &remote, copy.to_str().unwrap()],
    );
    assert_eq!(fs::read(&source).unwrap(), fs::read(&copy).unwrap());
    assert_eq!(summary(&output)["bytes_moved"], pieces);
    assert!(
        wire < pieces + 256 * 1024,
        "{wire} bytes on the wire for {pieces} in pieces"
    );

    // Push: the local file is edited after a first copy.
    let local = setup.path("pushed-source.bin");
    fs::write(&local, &data).unwrap();
    let target = setup.path("pushed.bin");
    let remote = format!("via:{}", target.display());
    assert_success(&run_via(
        &setup,
        &config,
        &["push", local.to_str().unwrap(), &remote],
    ));
    let pieces = edit_pieces(&local);
    let (output, wire) = counted_run(
        &setup,
        &proxy,
        &config,
        &["push", "--json", local.to_str().unwrap(), &remote],
    );
    assert_eq!(fs::read(&local).unwrap(), fs::read(&target).unwrap());
    assert_eq!(summary(&output)["bytes_moved"], pieces);
    assert!(
        wire < pieces + 256 * 1024,
        "{wire} bytes on the wire for {pieces} in pieces"
    );
}

/// One random change to a file: bytes overwritten, the file cut short, or grown.
#[derive(Debug, Clone)]
enum Mutation {
    Overwrite { at: usize, length: usize, seed: u64 },
    Truncate { to: usize },
    Append { length: usize, seed: u64 },
}

fn apply(data: &mut Vec<u8>, mutation: &Mutation) {
    match *mutation {
        Mutation::Overwrite { at, length, seed } => {
            if data.is_empty() {
                return;
            }
            let at = at % data.len();
            let end = (at + length).min(data.len());
            data[at..end].copy_from_slice(&pattern(seed, end - at));
        }
        Mutation::Truncate { to } => {
            let to = to % (data.len() + 1);
            data.truncate(to);
        }
        Mutation::Append { length, seed } => data.extend(pattern(seed, length)),
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (0usize..8 * BLOCK, 1usize..2 * BLOCK, any::<u64>())
            .prop_map(|(at, length, seed)| Mutation::Overwrite { at, length, seed }),
        1 => (0usize..8 * BLOCK).prop_map(|to| Mutation::Truncate { to }),
        1 => (1usize..BLOCK + 10, any::<u64>())
            .prop_map(|(length, seed)| Mutation::Append { length, seed }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever changed on the source side since the last transfer, a delta in either
    /// direction leaves the two sides identical.
    #[test]
    fn deltas_leave_both_sides_identical(
        size in 0usize..6 * BLOCK,
        seed in any::<u64>(),
        mutations in proptest::collection::vec(mutation(), 1..5),
        push in any::<bool>(),
    ) {
        let setup = setup();
        let local = setup.path("local.bin");
        let remote_path = setup.path("remote.bin");
        let remote = format!("box:{}", remote_path.display());
        let (source, destination) = if push { (&local, &remote_path) } else { (&remote_path, &local) };
        fs::write(source, pattern(seed, size)).unwrap();
        let transfer = || {
            let arguments: Vec<&str> = if push {
                vec!["push", local.to_str().unwrap(), &remote]
            } else {
                vec!["pull", &remote, local.to_str().unwrap()]
            };
            let output = setup.run(&arguments);
            assert_success(&output);
            assert_agent_used(&output, "xfer");
        };
        transfer();
        prop_assert_eq!(fs::read(source).unwrap(), fs::read(destination).unwrap());
        let mut data = fs::read(source).unwrap();
        for mutation in &mutations {
            apply(&mut data, mutation);
        }
        fs::write(source, &data).unwrap();
        // A new mtime, as any writer would leave.
        support::set_mtime(source, 1_700_000_000 + (seed % 1000) as i64);
        transfer();
        prop_assert_eq!(fs::read(source).unwrap(), fs::read(destination).unwrap());
    }
}

/// Processes whose command line is a cached agent serving (`.../agent-... agent`).
fn agent_processes(home: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline);
        if text.starts_with(&*home.join(".cache/xfer/agent-").to_string_lossy()) {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn sigkill_of_xfer_or_of_the_agent_mid_delta_then_a_rerun() {
    let setup = setup_with(Sshd::builder(), true, None);
    support::install_agent(setup.home.as_ref().unwrap());
    let source = setup.path("big.bin");
    fs::write(&source, pattern(20, 64 * BLOCK)).unwrap();
    let copy = setup.path("copy.bin");
    let remote = setup.remote("big.bin");
    assert_success(&setup.run(&["pull", &remote, copy.to_str().unwrap()]));

    // Every other block changes: a long delta.
    let changed: Vec<usize> = (0..64).step_by(2).collect();
    rewrite_blocks(&source, &changed, 5);
    let (proxy, config) = setup.via_proxy();
    // A slow link, so the kill lands mid-transfer.
    proxy.set_mode(support::ProxyMode::Throttle {
        bytes_per_second: 8 << 20,
    });
    let via = format!("via:{}", source.display());

    // SIGKILL xfer mid-delta.
    let mut child = xfer_command_in(setup.state.path())
        .args(["pull", &via, copy.to_str().unwrap(), "-F"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(|| proxy.bytes_total() > 6 << 20);
    assert!(
        child.try_wait().unwrap().is_none(),
        "finished before the kill"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // SIGKILL the agent mid-delta: the unit is retried on a fresh connection.
    let child = xfer_command_in(setup.state.path())
        .args([
            "pull",
            "--retry-wait",
            "0.1",
            &via,
            copy.to_str().unwrap(),
            "-F",
        ])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let home = setup.home.clone().unwrap();
    proxy.reset_counters();
    wait_for(|| proxy.bytes_total() > 4 << 20 && !agent_processes(&home).is_empty());
    for pid in agent_processes(&home) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    proxy.set_mode(support::ProxyMode::Pass);
    let output = child.wait_with_output().unwrap();
    assert_success(&output);
    // The kill landed mid-transfer: the unit was retried on a fresh connection.
    assert!(stderr(&output).contains("retrying"), "{}", stderr(&output));
    assert_eq!(fs::read(&source).unwrap(), fs::read(&copy).unwrap());
}

fn wait_for(mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < LIMIT, "timed out waiting");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A login shell that prints before every command, as cloud images' `.bashrc` and `conda init`
/// do (bash reads `~/.bashrc` for every command sshd runs): the banner lands on stdout ahead of
/// every remote command xfer runs, and may even contain the agent's magic. The agent is still
/// deployed and used (a small change moves a small delta), a secret still lands, and doctor
/// says the shell prints.
#[test]
fn a_login_shell_that_prints_keeps_the_agent_secrets_and_doctor_working() {
    let setup = setup_with(Sshd::builder(), true, None);
    let home = setup.home.clone().unwrap();
    fs::write(
        home.join(".bashrc"),
        "echo 'Welcome to the GPU cloud! XFERAGT'\nprintf 'conda init: done\\n' >&2\necho '(base) '\n",
    )
    .unwrap();
    let source = setup.path("data.bin");
    fs::write(&source, pattern(5, 8 * BLOCK)).unwrap();
    let target = setup.path("copy.bin");
    let remote = format!("via:{}", target.display());
    let (proxy, config) = setup.via_proxy();
    counted_run(
        &setup,
        &proxy,
        &config,
        &["push", source.to_str().unwrap(), &remote],
    );
    assert_eq!(fs::read(&source).unwrap(), fs::read(&target).unwrap());
    assert_eq!(setup.cached_agents().len(), 1, "the agent was deployed");

    let mut data = fs::read(&source).unwrap();
    data[3 * BLOCK + 10..3 * BLOCK + 14].copy_from_slice(b"edit");
    fs::write(&source, &data).unwrap();
    let seconds = fs::metadata(&source).unwrap().mtime();
    set_mtime(&source, seconds + 100);
    let (_, wire) = counted_run(
        &setup,
        &proxy,
        &config,
        &["push", source.to_str().unwrap(), &remote],
    );
    assert_eq!(fs::read(&source).unwrap(), fs::read(&target).unwrap());
    assert!(
        wire < 1 << 20,
        "{wire} bytes on the wire for a 4-byte change"
    );

    let token = setup.path("token");
    let mut secret = setup.xfer(&[
        "secret",
        "push",
        "--from-env",
        "NOISY_TOKEN",
        "--to",
        token.to_str().unwrap(),
        "box",
    ]);
    secret.env("NOISY_TOKEN", "t0ken");
    assert_success(&run_with_timeout(&mut secret, LIMIT));
    assert_eq!(fs::read_to_string(&token).unwrap(), "t0ken");

    let doctor = setup.run(&["doctor", "box"]);
    assert_success(&doctor);
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        report.contains("warning") && report.contains("prints"),
        "{report}"
    );
}
