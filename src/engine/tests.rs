//! The engine against the in-memory remote: resume, delta, verification, retry and the unit
//! scheduler, in both directions, with hosts that cut, stall and lie. No SSH and no waits (the
//! clock is paused, so backoffs and stalls pass at once; one test is about the wall clock and
//! waits for it); the real-server tests in `tests/` cover what only a real server shows.

use crate::engine::Summary;
use crate::engine::plan::{Action, Direction};
use crate::engine::state::StateDir;
use crate::engine::units::{self, Transfer, UnitOptions, UnitOutcome};
use crate::error::ErrorKind;
use crate::local::GroupSync;
use crate::progress::NoProgress;
use crate::remote::memory::{Faults, MemoryHost, MemoryPool, Node};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

const MIB: usize = 1 << 20;

/// A host, a local work directory and a state directory.
struct Fixture {
    host: Arc<MemoryHost>,
    work: tempfile::TempDir,
    state: PathBuf,
    group_sync: Arc<GroupSync>,
}

/// Bytes that differ from block to block, so a block in the wrong place shows.
fn data(length: usize, seed: u8) -> Vec<u8> {
    (0..length)
        .map(|index| (index / 997) as u8 ^ (index as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn options(jobs: usize, retries: u32) -> UnitOptions {
    UnitOptions {
        jobs,
        retries,
        retry_wait: Duration::from_millis(100),
        ..UnitOptions::default()
    }
}

impl Fixture {
    fn new() -> Fixture {
        let work = tempfile::tempdir().expect("a temporary directory");
        let state = work.path().join("state");
        Fixture {
            host: MemoryHost::new(),
            work,
            state,
            group_sync: Arc::new(GroupSync::new()),
        }
    }

    fn local(&self, relative: &str) -> PathBuf {
        self.work.path().join(relative)
    }

    /// A tree on the host at `/data`: loose files, three subdirectories (units of their own),
    /// a nested one, an empty one and a symlink.
    fn remote_tree(&self) {
        self.host.put_file("/data/top.txt", b"top level\n");
        self.host
            .put_file("/data/big.bin", &data(5 * MIB + 12345, 1));
        self.host.put_file("/data/a/one.bin", &data(2 * MIB + 7, 2));
        self.host.put_file("/data/a/deep/two.txt", b"two\n");
        self.host.put_file("/data/b/three.bin", &data(300_000, 3));
        self.host.put(
            "/data/b/link",
            Node::Symlink {
                target: "three.bin".into(),
            },
        );
        self.host.put(
            "/data/c",
            Node::Directory {
                mode: 0o750,
                mtime: 1_600_000_000,
            },
        );
    }

    /// The same tree on the local side, at `relative`.
    fn local_tree(&self, relative: &str) -> PathBuf {
        let root = self.local(relative);
        let write = |path: &str, content: &[u8]| {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("a directory");
            std::fs::write(path, content).expect("a file");
        };
        write("top.txt", b"top level\n");
        write("big.bin", &data(5 * MIB + 12345, 1));
        write("a/one.bin", &data(2 * MIB + 7, 2));
        write("a/deep/two.txt", b"two\n");
        write("b/three.bin", &data(300_000, 3));
        std::os::unix::fs::symlink("three.bin", root.join("b/link")).expect("a symlink");
        std::fs::create_dir_all(root.join("c")).expect("a directory");
        root
    }

    fn transfer(&self, direction: Direction, local: &Path, options: UnitOptions) -> Transfer {
        Transfer {
            direction,
            remote_path: "/data".into(),
            local_path: local.to_path_buf(),
            state: StateDir::at(self.state.clone()).expect("a state directory"),
            reporter: Arc::new(NoProgress),
            options,
            shared_source: None,
            group_sync: self.group_sync.clone(),
        }
    }

    async fn run(&self, direction: Direction, local: &Path, options: UnitOptions) -> Summary {
        let transfer = self.transfer(direction, local, options);
        let host = self.host.clone();
        units::run(transfer, |_eager| async move { Ok(MemoryPool::new(host)) })
            .await
            .expect("the transfer runs")
    }

    /// Runs a transfer and says whether the engine told its connect that data will most
    /// likely move (so the agent starts beside the planner).
    async fn eager(&self, direction: Direction, local: &Path) -> bool {
        let transfer = self.transfer(direction, local, options(2, 0));
        let host = self.host.clone();
        let told = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let record = told.clone();
        let summary = units::run(transfer, move |eager| {
            record.store(eager.data_likely, Ordering::Relaxed);
            async move { Ok(MemoryPool::new(host)) }
        })
        .await
        .expect("the transfer runs");
        assert_clean(&summary, "transfer");
        told.load(Ordering::Relaxed)
    }

    async fn pull(&self, options: UnitOptions) -> Summary {
        self.run(Direction::Pull, &self.local("copy"), options)
            .await
    }

    /// The content of a pulled file, `relative` to the copy.
    fn pulled(&self, relative: &str) -> Vec<u8> {
        std::fs::read(self.local("copy").join(relative)).expect("the copy")
    }

    fn bytes_read(&self) -> u64 {
        self.host.counters.bytes_read.load(Ordering::Relaxed)
    }

    fn bytes_written(&self) -> u64 {
        self.host.counters.bytes_written.load(Ordering::Relaxed)
    }
}

/// Every entry below `root`: files by content, symlinks by target, directories as such.
fn local_entries(root: &Path) -> BTreeMap<String, String> {
    walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .map(|entry| entry.expect("a readable tree"))
        .map(|entry| {
            let relative = entry
                .path()
                .strip_prefix(root)
                .expect("below the root")
                .display()
                .to_string();
            let kind = entry.file_type();
            let what = if kind.is_symlink() {
                format!(
                    "link {}",
                    std::fs::read_link(entry.path()).expect("a link").display()
                )
            } else if kind.is_dir() {
                "directory".to_string()
            } else {
                let content = std::fs::read(entry.path()).expect("a file");
                format!("file {}", blake3::hash(&content))
            };
            (relative, what)
        })
        .collect()
}

/// The host's tree below `top`, described as [`local_entries`] describes a local one.
fn remote_entries(host: &MemoryHost, top: &str) -> BTreeMap<String, String> {
    host.tree_below(top)
        .into_iter()
        .map(|(path, node)| {
            let relative = path
                .strip_prefix(top)
                .unwrap_or(&path)
                .trim_start_matches('/')
                .to_string();
            let what = match node {
                Node::File { data, .. } => format!("file {}", blake3::hash(&data)),
                Node::Directory { .. } => "directory".to_string(),
                Node::Symlink { target } => format!("link {target}"),
            };
            (relative, what)
        })
        .collect()
}

fn assert_clean(summary: &Summary, what: &str) {
    assert!(summary.errors.is_empty(), "{what}: {:?}", summary.errors);
}

#[tokio::test(start_paused = true)]
async fn a_pull_copies_the_tree_and_a_rerun_reads_nothing() {
    let fixture = Fixture::new();
    fixture.remote_tree();
    let summary = fixture.pull(options(2, 0)).await;
    assert_clean(&summary, "first run");
    assert_eq!(
        local_entries(&fixture.local("copy")),
        remote_entries(&fixture.host, "/data")
    );
    assert_eq!(summary.files_transferred, 5);
    // The top unit and one per subdirectory.
    assert_eq!(summary.units.len(), 4);
    let read = fixture.bytes_read();

    let again = fixture.pull(options(2, 0)).await;
    assert_clean(&again, "re-run");
    assert_eq!(fixture.bytes_read(), read, "the re-run read file data");
    assert!(
        again
            .units
            .iter()
            .all(|unit| unit.outcome == UnitOutcome::SkippedComplete),
        "{:?}",
        again.units
    );
    assert_eq!(again.files_up_to_date, 5);
}

#[tokio::test(start_paused = true)]
async fn a_unit_cut_mid_file_is_retried_on_a_new_connection_and_ends_identical() {
    let fixture = Fixture::new();
    fixture.remote_tree();
    fixture.host.set_faults(Faults {
        cut_after: Some(MIB as u64 + 1000),
        cuts_left: Some(3),
        ..Faults::default()
    });
    let summary = fixture.pull(options(2, 10)).await;
    assert_clean(&summary, "cut run");
    assert_eq!(
        local_entries(&fixture.local("copy")),
        remote_entries(&fixture.host, "/data")
    );
    let attempts: u32 = summary.units.iter().map(|unit| unit.attempts).sum();
    assert!(
        attempts > summary.units.len() as u32,
        "no unit was retried: {:?}",
        summary.units
    );
}

#[tokio::test(start_paused = true)]
async fn a_rerun_after_a_cut_resumes_without_fetching_what_is_in_place() {
    let fixture = Fixture::new();
    let content = data(12 * MIB + 3, 7);
    fixture.host.put_file("/data/model.bin", &content);
    // One connection, cut after about half the file, and no retries: the run fails.
    fixture.host.set_faults(Faults {
        cut_after: Some(6 * MIB as u64),
        cuts_left: Some(1),
        ..Faults::default()
    });
    let failed = fixture.pull(options(1, 0)).await;
    assert!(!failed.errors.is_empty(), "the cut went unnoticed");
    assert!(failed.errors.iter().all(|error| error.transient));
    assert_eq!(
        failed.outcome().map(|error| error.kind()),
        Some(ErrorKind::Partial)
    );
    let before = fixture.bytes_read();

    let resumed = fixture.pull(options(1, 0)).await;
    assert_clean(&resumed, "resumed run");
    assert_eq!(fixture.pulled("model.bin"), content);
    let fetched = fixture.bytes_read() - before;
    assert!(
        fetched < content.len() as u64 - 4 * MIB as u64,
        "the resume fetched {fetched} of {} bytes",
        content.len()
    );
    assert!(resumed.bytes_reused >= 4 * MIB as u64, "{resumed:?}");
}

#[tokio::test(start_paused = true)]
async fn a_changed_block_is_all_a_delta_pull_fetches() {
    let fixture = Fixture::new();
    let mut content = data(8 * MIB, 9);
    let copy = fixture.local("copy");
    std::fs::create_dir_all(&copy).expect("a directory");
    std::fs::write(copy.join("model.bin"), &content).expect("the old copy");
    // The host's copy differs in one byte of the fourth block, and is newer.
    content[3 * MIB + 100] ^= 0xff;
    fixture.host.put(
        "/data/model.bin",
        Node::File {
            data: content.clone(),
            mode: 0o644,
            mtime: 1_700_000_000,
        },
    );
    let summary = fixture.pull(options(1, 0)).await;
    assert_clean(&summary, "delta");
    assert_eq!(
        std::fs::read(copy.join("model.bin")).expect("the copy"),
        content
    );
    assert!(
        fixture.bytes_read() <= MIB as u64,
        "a one-byte change fetched {} bytes",
        fixture.bytes_read()
    );
}

#[tokio::test(start_paused = true)]
async fn a_host_without_block_hashes_still_resumes_and_verifies() {
    let fixture = Fixture::new();
    let content = data(6 * MIB + 1, 4);
    fixture.host.put_file("/data/model.bin", &content);
    fixture.host.set_faults(Faults {
        cut_after: Some(3 * MIB as u64),
        cuts_left: Some(1),
        no_block_hashes: true,
        no_digest: true,
        ..Faults::default()
    });
    let failed = fixture.pull(options(1, 0)).await;
    assert!(!failed.errors.is_empty(), "the cut went unnoticed");
    let resumed = fixture.pull(options(1, 0)).await;
    assert_clean(&resumed, "resumed run");
    assert_eq!(fixture.pulled("model.bin"), content);
}

#[tokio::test(start_paused = true)]
async fn reads_that_disagree_with_the_hosts_hashes_never_count_as_done() {
    // A large file (each block's hash coming with its read, or from a separate pass of the
    // host over the file) and a small one (read whole with its hash), each read back as
    // other bytes than the host hashes.
    let cases = [
        ("/data/model.bin", false),
        ("/data/model.bin", true),
        ("/data/small.txt", false),
    ];
    for (corrupted, no_hashed_reads) in cases {
        let fixture = Fixture::new();
        fixture.host.put_file("/data/model.bin", &data(9 * MIB, 5));
        fixture.host.put_file("/data/small.txt", b"small file\n");
        fixture.host.set_faults(Faults {
            corrupt_reads: Some(corrupted.into()),
            no_hashed_reads,
            ..Faults::default()
        });
        let summary = fixture.pull(options(1, 2)).await;
        assert_eq!(summary.errors.len(), 1, "{corrupted}: {:?}", summary.errors);
        assert_eq!(summary.units[0].outcome, UnitOutcome::Failed);
        // Once the host answers truly, one run ends identical: what the lie left behind is
        // compared again, not trusted.
        fixture.host.set_faults(Faults::default());
        let summary = fixture.pull(options(1, 0)).await;
        assert_clean(&summary, corrupted);
        assert_eq!(
            local_entries(&fixture.local("copy")),
            remote_entries(&fixture.host, "/data")
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_pull_takes_the_block_hashes_from_its_reads() {
    // Nothing here to compare: the host's hash of each block comes with the block, and the
    // host makes no second pass over the file for its hashes. A host whose reads come
    // without hashes (an older agent) is asked for them, with the same result.
    for no_hashed_reads in [false, true] {
        let fixture = Fixture::new();
        let content = data(9 * MIB + 100, 8);
        fixture.host.put_file("/data/model.bin", &content);
        fixture.host.set_faults(Faults {
            no_hashed_reads,
            ..Faults::default()
        });
        let summary = fixture.pull(options(2, 0)).await;
        assert_clean(&summary, "pull");
        assert_eq!(fixture.pulled("model.bin"), content);
        let hashed = fixture.host.counters.blocks_hashed.load(Ordering::Relaxed);
        if no_hashed_reads {
            assert_eq!(
                hashed, 10,
                "the blocks of the file, hashed in a pass of their own"
            );
        } else {
            assert_eq!(hashed, 0, "the host hashed the file a second time");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn small_files_are_synced_before_they_count_as_done() {
    // Files of one block have no journal, so no sync of their own on the way: before one is
    // marked done it waits for a sync of its filesystem shared with the others.
    let fixture = Fixture::new();
    for index in 0..40 {
        fixture
            .host
            .put_file(&format!("/data/small-{index}.txt"), &data(1000 + index, 9));
    }
    let summary = fixture.pull(options(2, 0)).await;
    assert_clean(&summary, "pull");
    assert_eq!(summary.files_transferred, 40);
    let syncs = fixture.group_sync.syncs_made();
    assert!(
        (1..=40).contains(&syncs),
        "{syncs} syncs for 40 small files"
    );
    // A re-run that moves nothing syncs nothing.
    let again = fixture.pull(options(2, 0)).await;
    assert_clean(&again, "re-run");
    assert_eq!(fixture.group_sync.syncs_made(), syncs);
}

#[tokio::test(start_paused = true)]
async fn sizes_that_lie_end_in_an_error_or_a_true_copy() {
    for lie in [-1000, 1000, 5 * MIB as i64] {
        let fixture = Fixture::new();
        let content = data(3 * MIB + 17, 6);
        fixture.host.put_file("/data/model.bin", &content);
        fixture.host.put_file("/data/small.txt", b"small\n");
        fixture.host.set_faults(Faults {
            size_lie: lie,
            ..Faults::default()
        });
        let summary = fixture.pull(options(1, 1)).await;
        // Whatever the claimed size, a file counted done is the host's true content.
        for (name, truth) in [("model.bin", &content[..]), ("small.txt", b"small\n")] {
            let failed = summary.errors.iter().any(|error| error.path.contains(name));
            if !failed {
                assert_eq!(
                    std::fs::read(fixture.local("copy").join(name)).expect("a copy"),
                    truth,
                    "lie {lie}: {name} counted done with other content"
                );
            }
        }
        assert!(
            !summary.errors.is_empty(),
            "lie {lie}: sizes that disagree with the data went unnoticed"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_pull_into_a_new_destination_starts_the_data_session_at_once_and_a_re_run_does_not() {
    let fixture = Fixture::new();
    fixture.remote_tree();
    let copy = fixture.local("copy");
    assert!(fixture.eager(Direction::Pull, &copy).await, "a first pull");
    assert!(!fixture.eager(Direction::Pull, &copy).await, "a re-run");
    // A small tree pushed: nothing large to hash early, nothing says data will move.
    let source = fixture.local_tree("source");
    std::fs::remove_file(source.join("big.bin")).expect("removed");
    assert!(!fixture.eager(Direction::Push, &source).await, "a push");
}

#[tokio::test(start_paused = true)]
async fn a_stalled_read_fails_over_to_a_new_connection() {
    let fixture = Fixture::new();
    let content = data(4 * MIB + 5, 8);
    fixture.host.put_file("/data/model.bin", &content);
    fixture.host.set_faults(Faults {
        stall_after: Some(3 * MIB as u64),
        ..Faults::default()
    });
    let summary = fixture.pull(options(1, 5)).await;
    assert_clean(&summary, "stalled run");
    assert_eq!(fixture.pulled("model.bin"), content);
}

#[tokio::test(start_paused = true)]
async fn units_run_on_at_most_jobs_connections_and_each_reports_once() {
    let fixture = Fixture::new();
    for unit in 0..7 {
        fixture
            .host
            .put_file(&format!("/data/unit{unit}/file.bin"), &data(200_000, unit));
    }
    let summary = fixture.pull(options(3, 0)).await;
    assert_clean(&summary, "scheduling");
    let names: Vec<&str> = summary
        .units
        .iter()
        .map(|unit| unit.unit.as_str())
        .collect();
    let mut expected = vec!["."];
    let unit_names: Vec<String> = (0..7).map(|unit| format!("unit{unit}")).collect();
    expected.extend(unit_names.iter().map(String::as_str));
    assert_eq!(names, expected);
    // The planner's connection, and one per job.
    let most = fixture
        .host
        .counters
        .most_open_at_once
        .load(Ordering::Relaxed);
    assert!((2..=4).contains(&most), "{most} connections at once");
}

#[tokio::test(start_paused = true)]
async fn a_large_file_borrows_more_connections_over_a_far_link() {
    // With -j 1, a large file has no connection to borrow over a near link; over a far one
    // (its round trip measured before the transfer) the budget doubles, and it borrows one.
    for (round_trip, most_expected) in [(None, 2), (Some(Duration::from_millis(80)), 3)] {
        let fixture = Fixture::new();
        let content = data(80 * MIB, 4);
        fixture.host.put_file("/data/model.bin", &content);
        fixture.host.set_faults(Faults {
            round_trip,
            ..Faults::default()
        });
        let summary = fixture.pull(options(1, 0)).await;
        assert_clean(&summary, "pull");
        assert_eq!(fixture.pulled("model.bin"), content);
        // The planner's connection, the unit's, and the borrowed one over the far link.
        let most = fixture
            .host
            .counters
            .most_open_at_once
            .load(Ordering::Relaxed);
        assert_eq!(most, most_expected, "round trip {round_trip:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_pull_into_a_new_destination_over_a_far_link_opens_its_budget_before_discovery() {
    // -j 2: over a far link the budget is 4. A first pull opens the 3 beyond the first before
    // it knows the units; over a near link it opens only the workers' (-j 2 less the first)
    // once the units say data moves; a re-run into an existing copy opens none ahead.
    for (round_trip, expected) in [(Some(Duration::from_millis(80)), vec![3]), (None, vec![1])] {
        let fixture = Fixture::new();
        fixture.remote_tree();
        fixture.host.set_faults(Faults {
            round_trip,
            ..Faults::default()
        });
        let summary = fixture.pull(options(2, 0)).await;
        assert_clean(&summary, "first pull");
        let asked = std::mem::take(&mut *fixture.host.counters.asked_ahead.lock().expect("lock"));
        assert_eq!(asked, expected, "first pull, round trip {round_trip:?}");
        // The connections opened ahead are used, not opened again: the planner's and the
        // budget's, no more.
        let opened = fixture
            .host
            .counters
            .connections_opened
            .load(Ordering::Relaxed);
        assert!(
            opened <= 1 + 4,
            "{opened} connections, round trip {round_trip:?}"
        );
        assert_eq!(fixture.pulled("big.bin"), data(5 * MIB + 12345, 1));
        fixture.host.put_file("/data/top.txt", b"changed\n");
        let summary = fixture.pull(options(2, 0)).await;
        assert_clean(&summary, "re-run");
        let asked = std::mem::take(&mut *fixture.host.counters.asked_ahead.lock().expect("lock"));
        assert_eq!(
            asked,
            Vec::<usize>::new(),
            "re-run, round trip {round_trip:?}"
        );
        assert_eq!(fixture.pulled("top.txt"), b"changed\n");
    }
}

#[tokio::test(start_paused = true)]
async fn a_rerun_plans_units_ahead_of_the_workers_and_lists_each_once() {
    // 40 directories over a far link, -j 2: a re-run is all planning, which needs no
    // connection of its own, so scouts plan beside the two workers; a unit with work is
    // handed to a worker with its plan, not listed again.
    let fixture = Fixture::new();
    for unit in 0..40 {
        for file in 0..3 {
            fixture.host.put_file(
                &format!("/data/u{unit:02}/f{file}.txt"),
                format!("{unit} {file}\n").as_bytes(),
            );
        }
    }
    fixture.host.set_faults(Faults {
        round_trip: Some(Duration::from_millis(50)),
        ..Faults::default()
    });
    assert_clean(&fixture.pull(options(2, 0)).await, "first pull");
    let counters = &fixture.host.counters;
    let listings = |fixture: &Fixture| fixture.host.counters.listings.swap(0, Ordering::Relaxed);
    listings(&fixture);
    counters.most_listings_at_once.store(0, Ordering::Relaxed);
    let summary = fixture.pull(options(2, 0)).await;
    assert_clean(&summary, "re-run");
    assert_eq!(summary.files_up_to_date, 120);
    assert!(
        summary
            .units
            .iter()
            .all(|unit| unit.outcome == UnitOutcome::SkippedComplete && unit.attempts == 1),
        "{:?}",
        summary.units
    );
    let most = counters.most_listings_at_once.load(Ordering::Relaxed);
    // 41 units (the top and 40 directories), all at once over the far link.
    assert_eq!(most, 41.min(units::PLANNED_AT_ONCE_FAR));
    assert!(
        most > units::PLANNED_AT_ONCE,
        "planned as many at once as near"
    );
    let unchanged = listings(&fixture);
    // Five units change: they move, over the plans the scouts made.
    for unit in [3, 11, 19, 27, 35] {
        fixture
            .host
            .put_file(&format!("/data/u{unit:02}/f1.txt"), b"changed\n");
    }
    let summary = fixture.pull(options(2, 0)).await;
    assert_clean(&summary, "re-run after changes");
    assert_eq!(summary.files_transferred, 5);
    assert_eq!(fixture.pulled("u27/f1.txt"), b"changed\n");
    assert_eq!(fixture.pulled("u28/f1.txt"), b"28 1\n");
    assert_eq!(listings(&fixture), unchanged, "a unit was listed twice");
}

/// `count` directories `/data/uNN`, each holding one small file `f.txt`.
fn one_file_units(fixture: &Fixture, count: usize) {
    for unit in 0..count {
        fixture
            .host
            .put_file(&format!("/data/u{unit:02}/f.txt"), b"f\n");
    }
}

#[tokio::test(start_paused = true)]
async fn a_directory_a_scout_cannot_list_fails_once_and_is_not_listed_again() {
    // -j 1 over a far link: the worker takes the first units, scouts plan the next ones,
    // among them a directory the host refuses to list. A worker planning it again would meet
    // the same refusal: it fails after one attempt, listed once, and the rest arrives.
    let fixture = Fixture::new();
    one_file_units(&fixture, 20);
    fixture.host.set_faults(Faults {
        round_trip: Some(Duration::from_millis(50)),
        unlistable: Some("/data/u06".into()),
        ..Faults::default()
    });
    let summary = fixture.pull(options(1, 3)).await;
    let failed: Vec<_> = summary
        .units
        .iter()
        .filter(|unit| unit.outcome == UnitOutcome::Failed)
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", summary.units);
    assert_eq!(failed[0].unit, "u06");
    assert_eq!(failed[0].attempts, 1);
    assert!(
        failed[0]
            .last_error
            .as_deref()
            .is_some_and(|error| error.contains("permission denied")),
        "{:?}",
        failed[0]
    );
    assert_eq!(summary.errors.len(), 1, "{:?}", summary.errors);
    assert_eq!(
        fixture
            .host
            .counters
            .unlistable_tries
            .load(Ordering::Relaxed),
        1,
        "the directory was listed again"
    );
    assert_eq!(summary.files_transferred, 19);
    assert_eq!(fixture.pulled("u19/f.txt"), b"f\n");
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_is_not_retried_and_other_units_go_on() {
    let fixture = Fixture::new();
    fixture.remote_tree();
    // A local file where the unit `b` needs its directory: a failure no retry cures.
    let copy = fixture.local("copy");
    std::fs::create_dir_all(&copy).expect("a directory");
    std::fs::write(copy.join("b"), b"in the way").expect("a file");
    let summary = fixture.pull(options(2, 5)).await;
    let failed: Vec<_> = summary
        .units
        .iter()
        .filter(|unit| unit.outcome == UnitOutcome::Failed)
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", summary.units);
    assert_eq!(failed[0].unit, "b");
    assert_eq!(failed[0].attempts, 1, "a permanent failure was retried");
    assert_eq!(
        std::fs::read(copy.join("a/one.bin")).expect("another unit's file"),
        data(2 * MIB + 7, 2)
    );
}

#[tokio::test(start_paused = true)]
async fn a_push_copies_the_tree_resumes_after_a_cut_and_reruns_read_nothing() {
    let fixture = Fixture::new();
    let source = fixture.local_tree("source");
    fixture.host.set_faults(Faults {
        cut_after: Some(2 * MIB as u64),
        cuts_left: Some(2),
        ..Faults::default()
    });
    let summary = fixture.run(Direction::Push, &source, options(2, 10)).await;
    assert_clean(&summary, "push");
    assert_eq!(
        remote_entries(&fixture.host, "/data"),
        local_entries(&source)
    );
    let written = fixture.bytes_written();
    let again = fixture.run(Direction::Push, &source, options(2, 0)).await;
    assert_clean(&again, "re-run");
    assert_eq!(fixture.bytes_written(), written, "the re-run wrote data");
    assert!(
        again
            .units
            .iter()
            .all(|unit| unit.outcome == UnitOutcome::SkippedComplete),
        "{:?}",
        again.units
    );
}

/// Sleeps until just after the wall clock's next whole second.
fn start_of_a_second() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970");
    let into_second = Duration::from_nanos(u64::from(now.subsec_nanos()));
    std::thread::sleep(Duration::from_secs(1) - into_second + Duration::from_millis(30));
}

/// Pushes a file of `length` bytes written at the start of a second, rewrites it with other
/// bytes of the same length as soon as the push returns, and pushes again: the copy must end
/// with the new bytes.
async fn push_then_rewrite_at_once(length: usize) {
    let fixture = Fixture::new();
    let source = fixture.local("source");
    std::fs::create_dir_all(&source).expect("a directory");
    let file = source.join("file");
    start_of_a_second();
    std::fs::write(&file, data(length, 1)).expect("a file");
    let summary = fixture.run(Direction::Push, &source, options(2, 0)).await;
    assert_clean(&summary, "push");
    // Within the second of the first write, unless the push waited for it to pass before
    // giving the copy its mtime.
    std::fs::write(&file, data(length, 2)).expect("a file");
    let again = fixture.run(Direction::Push, &source, options(2, 0)).await;
    assert_clean(&again, "re-run");
    assert_eq!(
        remote_entries(&fixture.host, "/data"),
        local_entries(&source)
    );
}

// On the wall clock, not tokio's paused one: the quick check's seconds are the file system's.
#[tokio::test]
async fn a_small_file_rewritten_in_the_second_it_was_pushed_is_pushed_again() {
    // Put whole, with its mtime, in one request.
    push_then_rewrite_at_once(100).await;
}

#[tokio::test]
async fn a_large_file_rewritten_in_the_second_it_was_pushed_is_pushed_again() {
    // Written block by block, then checked and given its mtime.
    push_then_rewrite_at_once(MIB + 10).await;
}

#[tokio::test(start_paused = true)]
async fn a_source_rewritten_in_the_second_it_was_pulled_is_pulled_again() {
    let fixture = Fixture::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs() as i64;
    let file = |seed: u8, length: usize| Node::File {
        data: data(length, seed),
        mode: 0o644,
        mtime: now,
    };
    // One small file and one of several blocks, both written this second.
    fixture.host.put("/data/small.txt", file(1, 100));
    fixture.host.put("/data/large.bin", file(1, MIB + 10));
    let summary = fixture.pull(options(2, 0)).await;
    assert_clean(&summary, "pull");
    // Written again within the same second, after the pull read them: same sizes, same mtimes.
    fixture.host.put("/data/small.txt", file(2, 100));
    fixture.host.put("/data/large.bin", file(2, MIB + 10));
    let again = fixture.pull(options(2, 0)).await;
    assert_clean(&again, "re-run");
    assert_eq!(fixture.pulled("small.txt"), data(100, 2));
    assert_eq!(fixture.pulled("large.bin"), data(MIB + 10, 2));
}

#[tokio::test(start_paused = true)]
async fn a_push_syncs_small_files_together_and_large_ones_alone() {
    // A host that takes no whole small files: they are opened, written and synced.
    let fixture = Fixture::new();
    let source = fixture.local_tree("source");
    fixture.host.set_faults(Faults {
        no_put_small: true,
        ..Faults::default()
    });
    let summary = fixture.run(Direction::Push, &source, options(2, 0)).await;
    assert_clean(&summary, "push");
    let counters = &fixture.host.counters;
    // top.txt, a/deep/two.txt and b/three.bin are of one block; big.bin and a/one.bin are not.
    assert_eq!(counters.syncs_grouped.load(Ordering::Relaxed), 3);
    assert!(counters.syncs_alone.load(Ordering::Relaxed) >= 2);
    assert_eq!(
        remote_entries(&fixture.host, "/data"),
        local_entries(&source)
    );
}

#[tokio::test(start_paused = true)]
async fn a_push_puts_each_new_small_file_whole_and_one_that_does_not_land_stays_incomplete() {
    let fixture = Fixture::new();
    let source = fixture.local_tree("source");
    fixture.host.set_faults(Faults {
        drop_writes: Some("/data/top.txt".into()),
        ..Faults::default()
    });
    let summary = fixture.run(Direction::Push, &source, options(2, 0)).await;
    assert_eq!(summary.errors.len(), 1, "{:?}", summary.errors);
    assert!(
        summary.errors[0].path.contains("top.txt"),
        "{:?}",
        summary.errors
    );
    // The file that did not land looks incomplete: one byte too long, not the source's mtime.
    match fixture.host.node("/data/top.txt") {
        Some(Node::File { data, .. }) => assert_eq!(data.len(), b"top level\n".len() + 1),
        other => panic!("top.txt is {other:?}"),
    }
    // top.txt, a/deep/two.txt and b/three.bin each went in one request.
    let counters = &fixture.host.counters;
    assert_eq!(counters.puts_small.load(Ordering::Relaxed), 3);
    assert_eq!(counters.syncs_grouped.load(Ordering::Relaxed), 0);
    fixture.host.set_faults(Faults::default());
    let summary = fixture.run(Direction::Push, &source, options(2, 0)).await;
    assert_clean(&summary, "honest run");
    assert_eq!(
        remote_entries(&fixture.host, "/data"),
        local_entries(&source)
    );
}

#[tokio::test(start_paused = true)]
async fn a_push_whose_writes_do_not_land_never_counts_as_done() {
    let fixture = Fixture::new();
    let source = fixture.local_tree("source");
    fixture.host.set_faults(Faults {
        drop_writes: Some("/data/big.bin".into()),
        ..Faults::default()
    });
    let summary = fixture.run(Direction::Push, &source, options(2, 1)).await;
    assert_eq!(summary.errors.len(), 1, "{:?}", summary.errors);
    assert!(
        summary.errors[0].path.contains("big.bin"),
        "{:?}",
        summary.errors
    );
    assert_ne!(
        fixture.host.file("/data/big.bin"),
        Some(data(5 * MIB + 12345, 1))
    );
    fixture.host.set_faults(Faults::default());
    let summary = fixture.run(Direction::Push, &source, options(2, 0)).await;
    assert_clean(&summary, "honest run");
    assert_eq!(
        remote_entries(&fixture.host, "/data"),
        local_entries(&source)
    );
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_plans_what_a_run_does_and_changes_nothing() {
    let fixture = Fixture::new();
    fixture.remote_tree();
    let copy = fixture.local("copy");
    let transfer = fixture.transfer(Direction::Pull, &copy, options(2, 0));
    let pool = MemoryPool::new(fixture.host.clone());
    let plan = units::plan_only(&transfer, &pool).await.expect("a plan");
    assert!(!copy.exists(), "the dry run made the destination");
    let planned: Vec<&str> = plan.items.iter().map(|item| item.path.as_str()).collect();
    assert_eq!(
        planned,
        [
            "",
            "a",
            "a/deep",
            "a/deep/two.txt",
            "a/one.bin",
            "b",
            "b/link",
            "b/three.bin",
            "big.bin",
            "c",
            "top.txt"
        ]
    );
    assert!(plan.items.iter().all(|item| item.action == Action::Create));

    // A push's plan, of a tree the host holds half of.
    let source = fixture.local_tree("source");
    let before = remote_entries(&fixture.host, "/data");
    std::fs::write(source.join("a/new.txt"), b"new").expect("a new file");
    let transfer = fixture.transfer(Direction::Push, &source, options(2, 0));
    let plan = units::plan_only(&transfer, &pool).await.expect("a plan");
    assert_eq!(remote_entries(&fixture.host, "/data"), before);
    let new: Vec<&str> = plan
        .items
        .iter()
        .filter(|item| item.action == Action::Create)
        .map(|item| item.path.as_str())
        .collect();
    assert_eq!(new, ["a/new.txt"]);
    assert_eq!(fixture.bytes_written(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_over_a_far_link_plans_units_at_once_and_keeps_their_order() {
    let fixture = Fixture::new();
    one_file_units(&fixture, 30);
    fixture.host.set_faults(Faults {
        round_trip: Some(Duration::from_millis(50)),
        ..Faults::default()
    });
    let copy = fixture.local("copy");
    let transfer = fixture.transfer(Direction::Pull, &copy, options(2, 0));
    let pool = MemoryPool::new(fixture.host.clone());
    let plan = units::plan_only(&transfer, &pool).await.expect("a plan");
    let most = fixture
        .host
        .counters
        .most_listings_at_once
        .load(Ordering::Relaxed);
    assert_eq!(most, units::PLANNED_AT_ONCE);
    let planned: Vec<&str> = plan.items.iter().map(|item| item.path.as_str()).collect();
    let mut expected = vec![String::new()];
    for unit in 0..30 {
        expected.push(format!("u{unit:02}"));
        expected.push(format!("u{unit:02}/f.txt"));
    }
    assert_eq!(planned, expected);
    assert!(!copy.exists(), "the dry run made the destination");
}

#[tokio::test(start_paused = true)]
async fn a_push_to_a_host_without_block_hashes_resumes_and_ends_identical() {
    let fixture = Fixture::new();
    let source = fixture.local_tree("source");
    fixture.host.set_faults(Faults {
        cut_after: Some(3 * MIB as u64),
        cuts_left: Some(1),
        no_block_hashes: true,
        no_digest: true,
        ..Faults::default()
    });
    let failed = fixture.run(Direction::Push, &source, options(1, 0)).await;
    assert!(!failed.errors.is_empty(), "the cut went unnoticed");
    let written = fixture.bytes_written();
    let resumed = fixture.run(Direction::Push, &source, options(1, 0)).await;
    assert_clean(&resumed, "resumed push");
    assert_eq!(
        remote_entries(&fixture.host, "/data"),
        local_entries(&source)
    );
    // What landed before the cut (about 3 MiB of the tree's 7.5) is not all sent again.
    let total: u64 = 5 * MIB as u64 + 12345 + 2 * MIB as u64 + 7 + 300_000 + 14;
    assert!(
        fixture.bytes_written() - written < total - MIB as u64,
        "the resumed push wrote {} bytes of {total}",
        fixture.bytes_written() - written
    );
}

#[test]
fn hosts_at_once_share_the_bytes_in_flight() {
    use crate::engine::{BYTES_IN_FLIGHT, MIN_BYTES_IN_FLIGHT, Options};
    let alone = Options::default();
    assert_eq!(alone.bytes_in_flight, BYTES_IN_FLIGHT);
    // Two hosts with -j 4 keep what one would.
    assert_eq!(
        alone.for_hosts_at_once(2, 4).bytes_in_flight,
        BYTES_IN_FLIGHT
    );
    // Eight with -j 4 share 32 MiB: 1 MiB per connection.
    let eight = alone.for_hosts_at_once(8, 4);
    assert_eq!(eight.bytes_in_flight, 1 << 20);
    assert_eq!(eight.requests_for(256 << 10), 4);
    assert_eq!(eight.requests_for(1 << 20), 1);
    assert_eq!(alone.requests_for(1 << 20), 4);
    // Never below the floor, however many.
    assert_eq!(
        alone.for_hosts_at_once(64, 16).bytes_in_flight,
        MIN_BYTES_IN_FLIGHT
    );
}

#[test]
fn files_waiting_for_a_sync_share_the_open_files() {
    use crate::engine::{
        DESCRIPTORS_KEPT, FEWEST_WAITING_FOR_SYNC, MOST_WAITING_FOR_SYNC, Options,
    };
    let alone = Options::default();
    let waiting = |open_files, units| {
        alone
            .within_open_files(open_files, units)
            .files_waiting_for_sync
    };
    // Plenty: the most, for one unit or sixty-four.
    assert_eq!(waiting(1 << 16, 4), MOST_WAITING_FOR_SYNC);
    assert_eq!(waiting(1 << 16, 64), MOST_WAITING_FOR_SYNC);
    // 1,024 with -j 4: (1024 - kept) / 4 less the 16 moving data.
    assert_eq!(
        waiting(1024, 4),
        ((1024 - DESCRIPTORS_KEPT) / 4) as usize - alone.files_in_flight
    );
    // Scarce, or far too many units: the fewest, what every run used before.
    assert_eq!(waiting(256, 4), FEWEST_WAITING_FOR_SYNC);
    assert_eq!(waiting(1 << 16, 10_000), FEWEST_WAITING_FOR_SYNC);
    assert_eq!(waiting(u64::MAX, 0), MOST_WAITING_FOR_SYNC);
}
