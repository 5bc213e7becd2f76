//! The agent on the remotes users have. The release build (`scripts/release.sh`, glibc 2.17)
//! needs no newer C library symbol than 2.17 and starts with every symbol bound at once; on a
//! host whose C library is older than this machine's (sessions chrooted into Debian 11), a
//! client built here falls back to SFTP quoting the loader, while the release build deploys
//! itself and pulls, pushes and deltas go through it. The aarch64 agent of the same release
//! serves them too, run by qemu-aarch64 on an arm64 Debian 11 C library. A host reporting
//! another architecture (a `uname` on sshd's PATH that says so) gets the agent bundle's file
//! for it, checked by hash; a packaged client finds its bundle beside its `bin` directory; a
//! platform the bundle lacks, or a bundle file that does not match its manifest, falls back
//! to SFTP in one line naming the file; `doctor` reports the platform and where its agent
//! comes from, or why there is none.

use crate::agent::{make_tree, setup_with};
use crate::support::old_libc::OldLibcSshd;
use crate::support::portable::{
    aarch64_agent, emulated_aarch64_agent, highest_glibc_version, portable_xfer,
};
use crate::support::{
    Setup, Sshd, assert_agent_used, assert_success, pattern, run_with_timeout, set_mtime, stderr,
    summary, tree_digest, xfer_binary_command_in,
};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);
const VERSION: &str = env!("CARGO_PKG_VERSION");
const BLOCK: usize = 1 << 20;

#[test]
fn the_agent_xfer_deploys_needs_no_c_library_newer_than_glibc_2_17() {
    let portable = portable_xfer();
    let highest = highest_glibc_version(portable);
    assert!(
        highest <= (2, 17),
        "{} needs GLIBC_{}.{}: a dependency pulled in a newer C library symbol",
        portable.display(),
        highest.0,
        highest.1
    );
    // Every symbol bound at start, as an old loader would have to: a missing one fails here.
    let output = run_with_timeout(
        std::process::Command::new(portable)
            .arg("agent")
            .env("LD_BIND_NOW", "1")
            .stdin(Stdio::null()),
        LIMIT,
    );
    assert!(
        output.stdout.starts_with(b"XFERAGT"),
        "the portable agent did not greet: {}",
        stderr(&output)
    );
}

#[test]
fn the_aarch64_agent_needs_glibc_2_17_and_serves_transfers_under_emulation() {
    let agent = aarch64_agent();
    let bytes = fs::read(agent).unwrap();
    // An ELF executable for EM_AARCH64 (183).
    assert!(bytes.starts_with(b"\x7fELF"), "not ELF");
    assert_eq!(
        u16::from_le_bytes([bytes[18], bytes[19]]),
        183,
        "not aarch64"
    );
    let highest = highest_glibc_version(agent);
    assert!(
        highest <= (2, 17),
        "the aarch64 agent needs GLIBC_{highest:?}"
    );

    // The host runs it through qemu-aarch64 on an arm64 Debian 11 C library, as `--agent`.
    let setup = setup_with(Sshd::builder(), true, None);
    let wrapper = emulated_aarch64_agent(setup.work.path());
    let agent_option = format!("--agent={}", wrapper.display());
    make_tree(&setup.path("source"));
    let copy = setup.path("copy");
    let output = setup.run(&[
        "pull",
        &agent_option,
        &setup.remote("source"),
        copy.to_str().unwrap(),
    ]);
    assert_success(&output);
    assert_agent_used(&output, "the pull");
    assert_eq!(tree_digest(&setup.path("source")), tree_digest(&copy));

    let run = |arguments: &[&str]| {
        let mut with_agent = vec![arguments[0], agent_option.as_str()];
        with_agent.extend_from_slice(&arguments[1..]);
        setup.run(&with_agent)
    };
    let pushed = setup.path("pushed");
    push_then_delta_push(run, &copy, &setup.remote("pushed"), &pushed, 7);
}

#[test]
fn the_release_agent_runs_where_the_c_library_is_older_than_the_build_machines() {
    let server = OldLibcSshd::start();
    let config = server.client_config("old", &[]);
    let work = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    // The host's files live in the fixture's home, which its sessions see as /root.
    let source = server.home().join("source");
    make_tree(&source);
    let run = |binary: &Path, arguments: &[&str]| {
        let mut command = xfer_binary_command_in(binary, state.path());
        command.args(arguments).arg("-F").arg(&config);
        run_with_timeout(&mut command, LIMIT)
    };
    let cached = || -> Vec<PathBuf> {
        match fs::read_dir(server.home().join(".cache/xfer")) {
            Ok(entries) => entries.map(|entry| entry.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    };

    // A client built on this machine is its own agent, which the host's glibc cannot load:
    // SFTP it is, in one line quoting the loader, and nothing is left in the cache.
    let here = Path::new(env!("CARGO_BIN_EXE_xfer"));
    assert!(
        highest_glibc_version(here) > (2, 31),
        "this machine's build would run there"
    );
    let copy = work.path().join("copy-over-sftp");
    let output = run(here, &["pull", "old:/root/source", copy.to_str().unwrap()]);
    assert_success(&output);
    assert_eq!(tree_digest(&source), tree_digest(&copy));
    let lines = notices(&output);
    assert_eq!(lines.len(), 1, "one line says why:\n{}", stderr(&output));
    assert!(
        lines[0].contains("GLIBC_2.") && lines[0].contains("not found"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("glibc 2.17"), "{}", lines[0]);
    assert!(cached().is_empty(), "{:?}", cached());

    // The release build deploys itself there and everything goes through the agent.
    let portable = portable_xfer();
    let copy = work.path().join("copy");
    let output = run(
        portable,
        &["pull", "old:/root/source", copy.to_str().unwrap()],
    );
    assert_success(&output);
    assert_agent_used(&output, "the pull");
    assert_eq!(tree_digest(&source), tree_digest(&copy));
    let agents = cached();
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert_eq!(fs::read(&agents[0]).unwrap(), fs::read(portable).unwrap());

    // Deltas both ways: one byte changed moves one block, not the file.
    push_then_delta_push(
        |arguments| run(portable, arguments),
        &copy,
        "old:/root/pushed",
        &server.home().join("pushed"),
        2 * BLOCK + 5,
    );

    // The pull puts back the byte the push changed and brings one changed on the host.
    let remote = source.join("a/b/several.bin");
    flip_byte(&remote, 100);
    // Both copies were written this second: a different mtime tells the pull they differ.
    set_mtime(&remote, 1_700_000_000);
    let output = run(
        portable,
        &["pull", "--json", "old:/root/source", copy.to_str().unwrap()],
    );
    assert_success(&output);
    assert_agent_used(&output, "the delta pull");
    assert_eq!(tree_digest(&source), tree_digest(&copy));
    assert_one_block_moved(&output);
}

/// A `uname` for sshd's PATH that says the host is `machine`.
fn uname_saying(machine: &str) -> tempfile::TempDir {
    let shim = tempfile::tempdir().unwrap();
    let uname = shim.path().join("uname");
    fs::write(
        &uname,
        format!(
            "#!/bin/sh\ncase \"$1\" in -m) echo {machine};; -sm) echo Linux {machine};; *) echo Linux;; esac\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&uname, fs::Permissions::from_mode(0o755)).unwrap();
    shim
}

/// An agent bundle holding `agent` as the aarch64 Linux agent, listed in its manifest with
/// the BLAKE3 of `listed` (the agent's own bytes, unless a test makes them differ).
fn bundle_with(dir: &Path, agent: &[u8], listed: &[u8]) -> PathBuf {
    let bundle = dir.join("agents");
    fs::create_dir_all(&bundle).unwrap();
    let name = format!("xfer-agent-{VERSION}-linux-aarch64");
    fs::write(bundle.join(&name), agent).unwrap();
    let hash = xfer::blocks::to_hex(&xfer::blocks::file_hash_of(listed));
    fs::write(bundle.join("MANIFEST.b3"), format!("{hash}  {name}\n")).unwrap();
    for path in [&bundle, &bundle.join(&name), &bundle.join("MANIFEST.b3")] {
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    bundle
}

fn run_with_bundle(setup: &Setup, bundle: &Path, arguments: &[&str]) -> Output {
    let mut command = setup.xfer(arguments);
    command.env("XFER_AGENT_BUNDLE", bundle);
    run_with_timeout(&mut command, LIMIT)
}

fn notices(output: &Output) -> Vec<String> {
    stderr(output)
        .lines()
        .filter(|line| line.contains("using SFTP"))
        .map(str::to_string)
        .collect()
}

/// Pushes `copy` to `remote` (the host's `pushed`), then changes one byte of a 3 MiB file in
/// it at `offset` and pushes again: both runs go through the agent and leave `pushed`
/// identical, and the second moves one block, not the file. `run` runs one xfer command.
fn push_then_delta_push(
    run: impl Fn(&[&str]) -> Output,
    copy: &Path,
    remote: &str,
    pushed: &Path,
    offset: usize,
) {
    let output = run(&["push", copy.to_str().unwrap(), remote]);
    assert_success(&output);
    assert_agent_used(&output, "the push");
    assert_eq!(tree_digest(copy), tree_digest(pushed));

    flip_byte(&copy.join("a/b/several.bin"), offset);
    let output = run(&["push", "--json", copy.to_str().unwrap(), remote]);
    assert_success(&output);
    assert_agent_used(&output, "the delta push");
    assert_eq!(tree_digest(copy), tree_digest(pushed));
    assert_one_block_moved(&output);
}

fn flip_byte(file: &Path, offset: usize) {
    let mut bytes = fs::read(file).unwrap();
    bytes[offset] ^= 0x5a;
    fs::write(file, &bytes).unwrap();
}

/// One byte changed: one block moves (the layout's block, at most 1 MiB), not the file.
fn assert_one_block_moved(output: &Output) {
    let moved = summary(output)["bytes_moved"].as_u64().unwrap();
    assert!(moved > 0 && moved <= BLOCK as u64, "{moved} bytes moved");
}

/// Pulls a file of `length` bytes from a host whose agent cannot be had and returns the one
/// line that says why SFTP serves instead.
fn pull_without_agent(setup: &Setup, bundle: &Path, seed: u64, length: usize) -> String {
    fs::write(setup.path("file.bin"), pattern(seed, length)).unwrap();
    let copy = setup.path("copy.bin");
    let output = run_with_bundle(
        setup,
        bundle,
        &["pull", &setup.remote("file.bin"), copy.to_str().unwrap()],
    );
    assert_success(&output);
    let lines = notices(&output);
    assert_eq!(lines.len(), 1, "one line says why:\n{}", stderr(&output));
    lines[0].clone()
}

#[test]
fn a_host_of_another_architecture_gets_the_bundles_agent_checked_by_hash() {
    let shim = uname_saying("aarch64");
    let setup = setup_with(Sshd::builder(), true, Some(shim.path()));
    // The portable build stands in for the aarch64 agent: this machine runs it, and its bytes
    // differ from the client's, so the agent that answers shows which one was deployed.
    let agent = fs::read(portable_xfer()).unwrap();
    let client = fs::read(env!("CARGO_BIN_EXE_xfer")).unwrap();
    assert_ne!(agent, client);
    let bundle = bundle_with(setup.work.path(), &agent, &agent);
    make_tree(&setup.path("source"));

    let copy = setup.path("copy");
    let output = run_with_bundle(
        &setup,
        &bundle,
        &["pull", &setup.remote("source"), copy.to_str().unwrap()],
    );
    assert_success(&output);
    assert_agent_used(&output, "the pull");
    assert_eq!(tree_digest(&setup.path("source")), tree_digest(&copy));
    let hash = xfer::blocks::to_hex(&xfer::blocks::file_hash_of(&agent));
    let cached = setup.cached_agents();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert_eq!(
        cached[0].file_name().unwrap().to_string_lossy(),
        format!("agent-{VERSION}-linux-aarch64-{}", &hash[..16])
    );
    assert_eq!(fs::read(&cached[0]).unwrap(), agent);

    // A push of a tree through it, then a delta push of one changed block.
    push_then_delta_push(
        |arguments| run_with_bundle(&setup, &bundle, arguments),
        &copy,
        &setup.remote("pushed"),
        &setup.path("pushed"),
        BLOCK + 17,
    );
    // Still the one agent: the cached copy served the later runs.
    assert_eq!(setup.cached_agents().len(), 1);
}

#[test]
fn a_platform_the_bundle_lacks_falls_back_to_sftp_in_one_line_naming_the_file() {
    let shim = uname_saying("aarch64");
    let setup = setup_with(Sshd::builder(), true, Some(shim.path()));
    let bundle = setup.work.path().join("agents");
    fs::create_dir_all(&bundle).unwrap();
    fs::write(bundle.join("MANIFEST.b3"), "").unwrap();
    let line = pull_without_agent(&setup, &bundle, 5, 3 * BLOCK + 9);
    assert_eq!(
        fs::read(setup.path("file.bin")).unwrap(),
        fs::read(setup.path("copy.bin")).unwrap()
    );
    let needed = bundle.join(format!("xfer-agent-{VERSION}-linux-aarch64"));
    assert!(line.contains(&needed.display().to_string()), "{line}");
    assert!(setup.cached_agents().is_empty());
}

#[test]
fn a_bundle_file_that_does_not_match_its_manifest_is_never_uploaded() {
    let shim = uname_saying("arm64");
    let setup = setup_with(Sshd::builder(), true, Some(shim.path()));
    let client = fs::read(env!("CARGO_BIN_EXE_xfer")).unwrap();
    // Listed with one hash, holding other bytes (replaced after the release was made).
    let mut replaced = client.clone();
    replaced.extend_from_slice(b"appended after the manifest was written");
    let bundle = bundle_with(setup.work.path(), &replaced, &client);
    let line = pull_without_agent(&setup, &bundle, 6, BLOCK);
    assert!(line.contains("does not match its BLAKE3"), "{line}");
    assert!(setup.cached_agents().is_empty(), "nothing was uploaded");
}

#[test]
fn doctor_reports_the_platform_and_where_its_agent_comes_from() {
    let shim = uname_saying("aarch64");
    let setup = setup_with(Sshd::builder(), true, Some(shim.path()));
    let client = fs::read(env!("CARGO_BIN_EXE_xfer")).unwrap();
    let mut agent = client.clone();
    agent.extend_from_slice(b"another build");
    let bundle = bundle_with(setup.work.path(), &agent, &agent);

    let output = run_with_bundle(&setup, &bundle, &["doctor", "--json", "box"]);
    let report = &summary(&output)[0];
    assert_eq!(report["platform"], "linux-aarch64", "{report}");
    assert_eq!(report["agent"], "upload", "{report}");
    let file = bundle.join(format!("xfer-agent-{VERSION}-linux-aarch64"));
    assert_eq!(report["agent_from"], file.display().to_string(), "{report}");

    // Without a bundle: unavailable, and a warning naming what would be needed.
    let empty = setup.work.path().join("no-bundle");
    let output = run_with_bundle(&setup, &empty, &["doctor", "--json", "box"]);
    let report = &summary(&output)[0];
    assert_eq!(report["agent"], "unavailable", "{report}");
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains(&format!("xfer-agent-{VERSION}-linux-aarch64")),
        "{warnings}"
    );

    // The host's own platform: this executable.
    let plain = setup_with(Sshd::builder(), true, None);
    let output = run_with_bundle(&plain, &bundle, &["doctor", "--json", "box"]);
    let report = &summary(&output)[0];
    assert_eq!(report["agent_from"], "this executable", "{report}");
    assert_eq!(
        report["platform"],
        format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
    );
}

#[test]
fn a_packaged_client_finds_its_bundle_beside_its_bin_directory() {
    // The x86_64 package: its bundle holds the aarch64 agent, and not its own platform's,
    // which is the client itself.
    let client = portable_xfer();
    let package = client.parent().unwrap().parent().unwrap();
    let bundle = package.join("lib/xfer/agents");
    let manifest = fs::read_to_string(bundle.join("MANIFEST.b3")).unwrap();
    assert!(!manifest.contains("linux-x86_64"), "{manifest}");
    let aarch64 = bundle.join(format!("xfer-agent-{VERSION}-linux-aarch64"));
    assert_eq!(
        fs::read(&aarch64).unwrap(),
        fs::read(aarch64_agent()).unwrap()
    );

    let shim = uname_saying("aarch64");
    let setup = setup_with(Sshd::builder(), true, Some(shim.path()));
    let doctor = |machine_bundle: Option<&Path>| {
        let mut command = xfer_binary_command_in(client, setup.state.path());
        command
            .args(["doctor", "--json", "box", "-F"])
            .arg(&setup.config);
        if let Some(dir) = machine_bundle {
            command.env("XFER_AGENT_BUNDLE", dir);
        }
        let output = run_with_timeout(&mut command, LIMIT);
        summary(&output)[0].clone()
    };
    let report = doctor(None);
    assert_eq!(report["agent"], "upload", "{report}");
    assert_eq!(
        report["agent_from"],
        aarch64.display().to_string(),
        "{report}"
    );

    // XFER_AGENT_BUNDLE overrides it: an empty one has no aarch64 agent.
    let empty = setup.work.path().join("empty-bundle");
    let report = doctor(Some(&empty));
    assert_eq!(report["agent"], "unavailable", "{report}");
    let needed = empty.join(format!("xfer-agent-{VERSION}-linux-aarch64"));
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains(&needed.display().to_string()),
        "{warnings}"
    );
}
