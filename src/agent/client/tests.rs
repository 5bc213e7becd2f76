//! The client against a real agent on in-process pipes, and against a fake agent the tests play
//! frame by frame: every operation, batching, concurrency, versions, broken and silent agents.

use super::*;
use crate::agent::FrameReader;
use crate::agent::protocol::{BuildId, MAGIC, MAX_LIST_BATCH};
use crate::agent::server::{LIST_BATCH_BYTES, serve, serve_versions};
use crate::blocks::{file_hash_of, hash_block};
use crate::remote::EntryKind;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, DuplexStream, duplex};
use tokio::task::JoinHandle;

const PROMPTLY: Duration = Duration::from_secs(10);

fn build() -> BuildId {
    BuildId {
        version: "0.0.0-test".into(),
        executable_blake3: [9; 32],
        os: "linux".into(),
        arch: "x86_64".into(),
    }
}

#[test]
fn client_is_shareable() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<AgentClient>();
    fn sendable<T: Send + 'static>() {}
    sendable::<AgentError>();
    sendable::<Startup>();
}

/// A client talking to a real server over two in-process pipes.
async fn connect_versions(
    client: (u16, u16),
    server: (u16, u16),
) -> (Result<Startup, AgentError>, JoinHandle<io::Result<()>>) {
    let (client_out, server_in) = duplex(1 << 20);
    let (server_out, client_in) = duplex(1 << 20);
    let server = tokio::spawn(serve_versions(server_in, server_out, build(), server));
    let startup = AgentClient::start_versions(client_in, client_out, client).await;
    (startup, server)
}

async fn connect() -> (AgentClient, JoinHandle<io::Result<()>>) {
    let (client_out, server_in) = duplex(1 << 20);
    let (server_out, client_in) = duplex(1 << 20);
    let server = tokio::spawn(serve(server_in, server_out, build()));
    match AgentClient::start(client_in, client_out).await {
        Ok(Startup::Agent(client, hello)) => {
            assert_eq!(hello.build, build());
            assert_eq!(client.hello(), &hello);
            assert_eq!(client.version(), PROTOCOL_MAX);
            (client, server)
        }
        other => panic!("no agent: {other:?}"),
    }
}

fn path(directory: &tempfile::TempDir, name: &str) -> String {
    directory
        .path()
        .join(name)
        .to_str()
        .expect("utf-8 temp path")
        .to_owned()
}

fn code(result: Result<impl fmt::Debug, AgentError>) -> ErrorCode {
    match result {
        Err(AgentError::Remote { code, .. }) => code,
        other => panic!("expected a remote error, got {other:?}"),
    }
}

async fn shutdown(client: AgentClient, server: JoinHandle<io::Result<()>>) {
    drop(client);
    tokio::time::timeout(PROMPTLY, server)
        .await
        .expect("the agent ends when the last client is dropped")
        .expect("no panic")
        .expect("a clean end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_operation_against_a_directory() {
    let directory = tempfile::tempdir().expect("tempdir");
    std::fs::write(directory.path().join("a.txt"), b"alpha").expect("write");
    std::fs::create_dir(directory.path().join("d")).expect("mkdir");
    std::os::unix::fs::symlink("a.txt", directory.path().join("l")).expect("symlink");
    let (client, server) = connect().await;
    let root = directory.path().to_str().expect("utf-8");

    // List and stat.
    let mut entries = client
        .list(root, ListingLimits::DEFAULT)
        .await
        .expect("list");
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<(&[u8], EntryKind)> = entries
        .iter()
        .map(|entry| (entry.name.as_slice(), entry.kind))
        .collect();
    assert_eq!(
        names,
        [
            (&b"a.txt"[..], EntryKind::File),
            (b"d", EntryKind::Directory),
            (b"l", EntryKind::Symlink)
        ]
    );
    assert_eq!(entries[0].size, 5);
    let a = client
        .stat(&path(&directory, "a.txt"), false)
        .await
        .expect("stat")
        .expect("exists");
    assert_eq!(a, entries[0]);
    assert_eq!(a.to_remote_entry().name, "a.txt");
    let link = client
        .stat(&path(&directory, "l"), false)
        .await
        .expect("stat");
    assert_eq!(link.expect("exists").kind, EntryKind::Symlink);
    let followed = client
        .stat(&path(&directory, "l"), true)
        .await
        .expect("stat");
    let followed = followed.expect("exists");
    assert_eq!((followed.kind, followed.size), (EntryKind::File, 5));
    assert_eq!(followed.name, b"l");
    assert_eq!(
        client
            .stat(&path(&directory, "missing"), false)
            .await
            .expect("stat"),
        None
    );
    assert_eq!(
        client
            .stat(&path(&directory, "a.txt/below"), true)
            .await
            .expect("stat"),
        None
    );
    assert_eq!(
        code(
            client
                .list(&path(&directory, "missing"), ListingLimits::DEFAULT)
                .await
        ),
        ErrorCode::NotFound
    );

    // Writes at offsets, sync, read back.
    let new = path(&directory, "new");
    let handle = client.open_write(&new).await.expect("open");
    client
        .write(handle, 10, b"world".to_vec())
        .await
        .expect("write");
    client
        .write(handle, 0, b"hello".to_vec())
        .await
        .expect("write");
    client.sync(handle).await.expect("sync");
    let expected = b"hello\0\0\0\0\0world".to_vec();
    assert_eq!(client.read(handle, 0, 100).await.expect("read"), expected);
    assert_eq!(client.read(handle, 3, 4).await.expect("read"), b"lo\0\0");
    assert_eq!(client.read(handle, 15, 4).await.expect("read"), b"");
    assert_eq!(client.read(handle, 1 << 40, 4).await.expect("read"), b"");
    client.close(handle).await.expect("close");
    assert_eq!(code(client.close(handle).await), ErrorCode::BadHandle);
    assert_eq!(code(client.read(handle, 0, 1).await), ErrorCode::BadHandle);
    assert_eq!(code(client.sync(9999).await), ErrorCode::BadHandle);
    assert_eq!(std::fs::read(&new).expect("read"), expected);
    let mode = std::fs::metadata(&new).expect("stat").permissions().mode();
    assert_eq!(mode & 0o7777, 0o600);
    // Opening for writing again never truncates; handles are not reused.
    let again = client.open_write(&new).await.expect("open");
    assert_ne!(again, handle);
    assert_eq!(client.read(again, 0, 100).await.expect("read"), expected);
    client.close(again).await.expect("close");
    // A read-only handle refuses writes.
    let reading = client.open_read(&new).await.expect("open");
    assert_eq!(
        code(client.write(reading, 0, b"x".to_vec()).await),
        ErrorCode::BadHandle
    );
    client.close(reading).await.expect("close");
    assert_eq!(
        code(client.open_read(&path(&directory, "missing")).await),
        ErrorCode::NotFound
    );
    assert_eq!(code(client.open_read(root).await), ErrorCode::Invalid);

    // Whole files in one round trip.
    assert_eq!(client.read_file(&new, 100).await.expect("read"), expected);
    assert_eq!(client.read_file(&new, 15).await.expect("read"), expected);
    assert_eq!(code(client.read_file(&new, 14).await), ErrorCode::TooLarge);
    assert_eq!(
        code(client.read_file(&path(&directory, "missing"), 1).await),
        ErrorCode::NotFound
    );

    // Block hashes and digests.
    let data: Vec<u8> = (0..3 * 4096 + 1234).map(|i| (i * 7 % 253) as u8).collect();
    let big = path(&directory, "big");
    std::fs::write(&big, &data).expect("write");
    let blocks: Vec<[u8; 32]> = data.chunks(4096).map(hash_block).collect();
    assert_eq!(
        client
            .block_hashes(&big, 4096, 0, 100)
            .await
            .expect("hashes"),
        blocks
    );
    assert_eq!(
        client.block_hashes(&big, 4096, 2, 1).await.expect("hashes"),
        blocks[2..3]
    );
    assert!(
        client
            .block_hashes(&big, 4096, 4, 1)
            .await
            .expect("hashes")
            .is_empty()
    );
    assert_eq!(
        code(client.block_hashes(&big, 1000, 0, 1).await),
        ErrorCode::Invalid
    );
    assert_eq!(
        client.digest(&big).await.expect("digest"),
        file_hash_of(&data)
    );
    assert_eq!(
        code(client.digest(&path(&directory, "missing")).await),
        ErrorCode::NotFound
    );

    // Attributes.
    client
        .set_attributes(&big, Some(3), Some(0o640), Some(1_600_000_000))
        .await
        .expect("set attributes");
    let entry = client
        .stat(&big, false)
        .await
        .expect("stat")
        .expect("exists");
    assert_eq!(
        (entry.size, entry.mode, entry.mtime),
        (3, 0o640, 1_600_000_000)
    );
    assert_eq!(entry.mtime_nanoseconds, 0);
    client
        .set_attributes(
            &path(&directory, "d"),
            None,
            Some(0o700),
            Some(1_500_000_000),
        )
        .await
        .expect("set attributes of a directory");
    let entry = client
        .stat(&path(&directory, "d"), false)
        .await
        .expect("stat")
        .expect("d");
    assert_eq!((entry.mode, entry.mtime), (0o700, 1_500_000_000));
    assert_eq!(
        code(
            client
                .set_attributes(&path(&directory, "missing"), None, Some(0o600), None)
                .await
        ),
        ErrorCode::NotFound
    );

    // Directories, symlinks, renames, removals.
    let made = path(&directory, "made");
    client.make_directory(&made, 0o750).await.expect("mkdir");
    client
        .make_directory(&made, 0o750)
        .await
        .expect("mkdir again");
    let entry = client
        .stat(&made, false)
        .await
        .expect("stat")
        .expect("made");
    assert_eq!((entry.kind, entry.mode), (EntryKind::Directory, 0o750));
    assert_eq!(
        code(client.make_directory(&big, 0o755).await),
        ErrorCode::AlreadyExists
    );
    let link = path(&directory, "link");
    client.make_symlink(&link, "a.txt").await.expect("symlink");
    assert_eq!(client.read_link(&link).await.expect("readlink"), "a.txt");
    client
        .make_symlink(&link, "elsewhere")
        .await
        .expect("replace symlink");
    assert_eq!(
        client.read_link(&link).await.expect("readlink"),
        "elsewhere"
    );
    client
        .make_symlink(&new, "a.txt")
        .await
        .expect("replace a file");
    assert_eq!(client.read_link(&new).await.expect("readlink"), "a.txt");
    assert!(
        client.make_symlink(&made, "a.txt").await.is_err(),
        "a directory stays"
    );
    assert_eq!(code(client.read_link(&big).await), ErrorCode::Invalid);
    let renamed = path(&directory, "renamed");
    client.rename(&big, &renamed).await.expect("rename");
    assert_eq!(client.stat(&big, false).await.expect("stat"), None);
    assert_eq!(
        client.read_file(&renamed, 10).await.expect("read"),
        &data[..3]
    );
    client.remove(&renamed).await.expect("remove");
    assert_eq!(client.stat(&renamed, false).await.expect("stat"), None);
    assert_eq!(code(client.remove(&renamed).await), ErrorCode::NotFound);
    assert_eq!(
        code(client.rename(&renamed, &big).await),
        ErrorCode::NotFound
    );
    // No temporary names were left behind.
    let mut names: Vec<String> = std::fs::read_dir(directory.path())
        .expect("list")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .into_string()
                .expect("utf-8")
        })
        .collect();
    names.sort();
    assert_eq!(names, ["a.txt", "d", "l", "link", "made", "new"]);

    // Requests the client cannot encode fail alone.
    let long = "x".repeat(5000);
    assert!(matches!(
        client.stat(&long, false).await,
        Err(AgentError::Protocol(_))
    ));
    assert!(!client.is_closed());
    assert!(client.stat(root, false).await.expect("stat").is_some());

    shutdown(client, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_directories_come_in_batches() {
    let directory = tempfile::tempdir().expect("tempdir");
    // Long names, so the answer takes several batches without thousands of files.
    let count = 1500;
    let prefix = "n".repeat(200);
    assert!(
        count * (prefix.len() + 6) > LIST_BATCH_BYTES,
        "two batches at least"
    );
    assert!(count < MAX_LIST_BATCH);
    for index in 0..count {
        std::fs::write(directory.path().join(format!("{prefix}-{index:05}")), b"").expect("write");
    }
    let (client, server) = connect().await;
    let root = directory.path().to_str().expect("utf-8");
    // Exactly at both caps: every name counts its bytes and the overhead.
    let exact = ListingLimits {
        entries: count,
        bytes: (0..count)
            .map(|index| ListingLimits::entry_bytes(format!("{prefix}-{index:05}").len()))
            .sum(),
    };
    let entries = client.list(root, exact).await.expect("list");
    assert_eq!(entries.len(), count);
    // Over the caller's caps, in entries or in bytes: refused, and the rest of the answer
    // is discarded quietly.
    let over = [
        ListingLimits {
            entries: count - 1,
            ..exact
        },
        ListingLimits {
            entries: 10,
            ..exact
        },
        ListingLimits {
            bytes: exact.bytes - 1,
            ..exact
        },
        ListingLimits {
            bytes: 1000,
            ..exact
        },
    ];
    for limits in over {
        assert_eq!(code(client.list(root, limits).await), ErrorCode::TooLarge);
    }
    let error = client
        .list(root, over[2])
        .await
        .expect_err("over the byte cap");
    assert!(
        error.to_string().contains("names take more than"),
        "{error}"
    );
    assert_eq!(client.list(root, exact).await.expect("list").len(), count);
    assert!(!client.is_closed());
    shutdown(client, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_reads_from_many_tasks() {
    let directory = tempfile::tempdir().expect("tempdir");
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let file = path(&directory, "data");
    std::fs::write(&file, &data).expect("write");
    let data = Arc::new(data);
    let (client, server) = connect().await;
    let handle = client.open_read(&file).await.expect("open");
    let mut tasks = Vec::new();
    for index in 0..200u64 {
        let client = client.clone();
        let data = Arc::clone(&data);
        tasks.push(tokio::spawn(async move {
            let offset = index * 5021 % (1 << 20);
            let length = 4096 + index as u32 * 37;
            let read = client.read(handle, offset, length).await.expect("read");
            let start = offset as usize;
            let end = (start + length as usize).min(data.len());
            assert_eq!(read, data[start..end]);
        }));
    }
    for task in tasks {
        task.await.expect("no panic");
    }
    client.close(handle).await.expect("close");
    shutdown(client, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_file_comes_with_the_agents_hash_of_it() {
    let directory = tempfile::tempdir().expect("tempdir");
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = path(&directory, "small");
    std::fs::write(&file, &data).expect("write");
    let (client, server) = connect().await;
    let (read, hash) = client.read_file_hashed(&file, 5000).await.expect("read");
    assert_eq!(read, data);
    assert_eq!(hash, hash_block(&data));
    assert_eq!(
        code(client.read_file_hashed(&file, 4999).await),
        ErrorCode::TooLarge
    );
    shutdown(client, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_written_at_once_share_a_sync_of_their_filesystem() {
    let directory = tempfile::tempdir().expect("tempdir");
    let (client, server) = connect().await;
    let mut handles = Vec::new();
    for index in 0..20u8 {
        let handle = client
            .open_write(&path(&directory, &format!("f{index}")))
            .await
            .expect("open");
        client
            .write(handle, 0, vec![index; 100])
            .await
            .expect("write");
        handles.push(handle);
    }
    let mut syncs = tokio::task::JoinSet::new();
    for &handle in &handles {
        let client = client.clone();
        syncs.spawn(async move { client.sync_filesystem(handle).await });
    }
    while let Some(synced) = syncs.join_next().await {
        synced.expect("no panic").expect("synced");
    }
    for handle in handles {
        client.close(handle).await.expect("close");
    }
    // A handle that is not open is an error, as for Sync.
    assert_eq!(
        code(client.sync_filesystem(999).await),
        ErrorCode::BadHandle
    );
    // A version 4 session refuses it, and goes on.
    shutdown(client, server).await;
    let (startup, server) = connect_versions((1, PROTOCOL_MAX), (1, 4)).await;
    let Ok(Startup::Agent(client, _)) = startup else {
        panic!("no agent: {startup:?}");
    };
    let handle = client
        .open_write(&path(&directory, "old"))
        .await
        .expect("open");
    assert_eq!(
        code(client.sync_filesystem(handle).await),
        ErrorCode::Invalid
    );
    client.sync(handle).await.expect("a plain sync");
    shutdown(client, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_file_is_put_whole_and_marked_done_only_when_it_checks() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let directory = tempfile::tempdir().expect("tempdir");
    let (client, server) = connect().await;
    let data = b"a small file".to_vec();
    let file = path(&directory, "put");
    client
        .put_file(&file, data.clone(), hash_block(&data), 0o640, 1_600_000_000)
        .await
        .expect("put");
    let metadata = std::fs::metadata(&file).expect("metadata");
    assert_eq!(std::fs::read(&file).expect("read"), data);
    assert_eq!(metadata.permissions().mode() & 0o7777, 0o640);
    assert_eq!(metadata.mtime(), 1_600_000_000);
    // A hash that is not of the data: an error, and the file stays one byte too long, with
    // neither the mode nor the mtime asked for.
    let other = path(&directory, "other");
    assert_eq!(
        code(
            client
                .put_file(
                    &other,
                    data.clone(),
                    hash_block(b"else"),
                    0o644,
                    1_600_000_000
                )
                .await
        ),
        ErrorCode::Other
    );
    let metadata = std::fs::metadata(&other).expect("metadata");
    assert_eq!(metadata.len(), data.len() as u64 + 1);
    assert_ne!(metadata.mtime(), 1_600_000_000);
    assert_eq!(metadata.permissions().mode() & 0o7777, 0o600);
    // A version 4 session refuses it.
    shutdown(client, server).await;
    let (startup, server) = connect_versions((1, PROTOCOL_MAX), (1, 4)).await;
    let Ok(Startup::Agent(client, _)) = startup else {
        panic!("no agent: {startup:?}");
    };
    assert_eq!(
        code(
            client
                .put_file(
                    &path(&directory, "old"),
                    data.clone(),
                    hash_block(&data),
                    0o644,
                    0
                )
                .await
        ),
        ErrorCode::Invalid
    );
    assert!(!directory.path().join("old").exists());
    shutdown(client, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_read_comes_with_the_agents_hash_of_what_it_read() {
    let directory = tempfile::tempdir().expect("tempdir");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let file = path(&directory, "large");
    std::fs::write(&file, &data).expect("write");
    let (client, server) = connect().await;
    let handle = client.open_read(&file).await.expect("open");
    let (read, hash) = client
        .read_hashed(handle, 65536, 131072)
        .await
        .expect("read");
    assert_eq!(read, data[65536..196608]);
    assert_eq!(hash, hash_block(&read));
    // At the end of the file: the bytes there are, and the hash of just those.
    let (tail, hash) = client
        .read_hashed(handle, 250_000, 131072)
        .await
        .expect("read");
    assert_eq!(tail, data[250_000..]);
    assert_eq!(hash, hash_block(&tail));
    client.close(handle).await.expect("close");
    // A version 3 session refuses it, and goes on.
    shutdown(client, server).await;
    let (startup, server) = connect_versions((1, PROTOCOL_MAX), (1, 3)).await;
    let Ok(Startup::Agent(client, _)) = startup else {
        panic!("no agent: {startup:?}");
    };
    let handle = client.open_read(&file).await.expect("open");
    assert_eq!(
        code(client.read_hashed(handle, 0, 100).await),
        ErrorCode::Invalid
    );
    assert_eq!(
        client.read(handle, 0, 100).await.expect("read"),
        data[..100]
    );
    shutdown(client, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_session_refuses_what_version_2_added() {
    let directory = tempfile::tempdir().expect("tempdir");
    let file = path(&directory, "small");
    std::fs::write(&file, b"content").expect("write");
    let (startup, server) = connect_versions((1, PROTOCOL_MAX), (1, 1)).await;
    let Ok(Startup::Agent(client, _)) = startup else {
        panic!("no agent: {startup:?}");
    };
    assert_eq!(client.version(), 1);
    assert_eq!(
        code(client.read_file_hashed(&file, 100).await),
        ErrorCode::Invalid
    );
    // The session goes on, and what version 1 has works.
    assert_eq!(
        client.read_file(&file, 100).await.expect("read"),
        b"content"
    );
    shutdown(client, server).await;
}

#[tokio::test]
async fn versions_meet_at_the_highest_common() {
    let (startup, server) = connect_versions((1, 3), (1, 2)).await;
    let Ok(Startup::Agent(client, hello)) = startup else {
        panic!("no agent: {startup:?}");
    };
    assert_eq!((hello.min_version, hello.max_version), (1, 2));
    assert_eq!(client.version(), 2);
    let directory = tempfile::tempdir().expect("tempdir");
    let root = directory.path().to_str().expect("utf-8");
    assert!(client.stat(root, true).await.expect("stat").is_some());
    shutdown(client, server).await;

    let (startup, server) = connect_versions((3, 4), (1, 2)).await;
    match startup {
        Err(AgentError::VersionMismatch { ours, theirs }) => {
            assert_eq!((ours, theirs), ((3, 4), (1, 2)));
        }
        other => panic!("expected a version mismatch, got {other:?}"),
    }
    // The client closed the agent's stdin: the agent ends cleanly.
    tokio::time::timeout(PROMPTLY, server)
        .await
        .expect("prompt")
        .expect("no panic")
        .expect("clean end");
}

#[tokio::test]
async fn text_instead_of_the_magic_is_not_an_agent() {
    let startup = AgentClient::start(&b"Linux\nx86_64\n"[..], tokio::io::sink())
        .await
        .expect("startup");
    match startup {
        Startup::NotAgent(output) => assert_eq!(output, b"Linux\nx86_64\n"),
        other => panic!("expected not an agent, got {other:?}"),
    }
    let startup = AgentClient::start(&b""[..], tokio::io::sink())
        .await
        .expect("startup");
    assert!(matches!(startup, Startup::NotAgent(output) if output.is_empty()));
    let long: &'static [u8] = Box::leak(vec![b'x'; 10_000].into_boxed_slice());
    let startup = AgentClient::start(long, tokio::io::sink())
        .await
        .expect("startup");
    assert!(matches!(startup, Startup::NotAgent(output) if output.len() == NOT_AGENT_CAP));
    // The magic and then garbage instead of a hello.
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 5, 0x86, 0, 0, 0, 0]);
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    let startup = AgentClient::start(bytes, tokio::io::sink()).await;
    assert!(
        matches!(startup, Err(AgentError::Protocol(_))),
        "{startup:?}"
    );
    let startup = AgentClient::start(&MAGIC[..], tokio::io::sink()).await;
    assert!(matches!(startup, Err(AgentError::Closed)), "{startup:?}");
}

#[tokio::test]
async fn a_greeting_of_other_versions_is_a_mismatch() {
    let greeting = crate::agent::protocol::test_server_hello(9, 9);
    let greeting: &'static [u8] = Box::leak(greeting.into_boxed_slice());
    let error = AgentClient::start(greeting, tokio::io::sink())
        .await
        .expect_err("no common version");
    assert!(
        matches!(
            error,
            AgentError::VersionMismatch {
                ours: (PROTOCOL_MIN, PROTOCOL_MAX),
                theirs: (9, 9)
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("version"), "{error}");
    assert!(!error.is_transient());
}

/// An agent played by the test, frame by frame.
struct FakeAgent {
    from_client: FrameReader<DuplexStream>,
    to_client: DuplexStream,
}

impl FakeAgent {
    async fn start() -> (FakeAgent, AgentClient) {
        let (client_out, from_client) = duplex(1 << 20);
        let (mut to_client, client_in) = duplex(1 << 20);
        to_client.write_all(&MAGIC).await.expect("magic");
        let hello = ServerHello {
            min_version: 1,
            max_version: 1,
            build: build(),
        };
        to_client
            .write_all(&hello.encode().expect("hello"))
            .await
            .expect("hello");
        // The default bound, whatever the environment says.
        let startup = AgentClient::start_limited(
            client_in,
            client_out,
            (PROTOCOL_MIN, PROTOCOL_MAX),
            StallLimit::default(),
        )
        .await;
        let Ok(Startup::Agent(client, _)) = startup else {
            panic!("no agent: {startup:?}");
        };
        let mut fake = FakeAgent {
            from_client: FrameReader::new(from_client),
            to_client,
        };
        let body = fake
            .from_client
            .read_frame()
            .await
            .expect("read")
            .expect("hello")
            .into_whole();
        let frame = Frame::parse(&body).expect("frame");
        assert_eq!(ClientHello::decode(&frame), Ok(ClientHello { version: 1 }));
        (fake, client)
    }

    async fn request(&mut self) -> Option<(u32, Request)> {
        let body = self.from_client.read_frame().await.expect("read")?;
        Some(Request::decode_parts(body).expect("request"))
    }

    async fn answer(&mut self, id: u32, response: Response) {
        let frame = response.encode(id).expect("encodable");
        self.to_client.write_all(&frame).await.expect("answer");
    }
}

#[tokio::test]
async fn a_vanished_agent_fails_every_request_promptly() {
    let (mut fake, client) = FakeAgent::start().await;
    let mut waiting = Vec::new();
    for index in 0..5 {
        let client = client.clone();
        waiting.push(tokio::spawn(async move {
            client.stat(&format!("/x/{index}"), false).await
        }));
    }
    for _ in 0..5 {
        fake.request().await.expect("a request");
    }
    // The agent goes away mid-flight.
    drop(fake);
    for task in waiting {
        let result = tokio::time::timeout(PROMPTLY, task)
            .await
            .expect("prompt")
            .expect("no panic");
        assert!(matches!(result, Err(AgentError::Closed)), "{result:?}");
    }
    assert!(client.is_closed());
    let later = tokio::time::timeout(PROMPTLY, client.stat("/y", false))
        .await
        .expect("prompt");
    assert!(matches!(later, Err(AgentError::Closed)));
    assert!(later.expect_err("closed").is_transient());
}

#[tokio::test]
async fn answers_to_no_request_or_of_the_wrong_type_end_the_session() {
    // The wrong type.
    let (mut fake, client) = FakeAgent::start().await;
    let stat = tokio::spawn({
        let client = client.clone();
        async move { client.stat("/a", false).await }
    });
    let (id, request) = fake.request().await.expect("request");
    assert!(matches!(request, Request::Stat { .. }));
    fake.answer(id, Response::Done).await;
    let result = tokio::time::timeout(PROMPTLY, stat)
        .await
        .expect("prompt")
        .expect("no panic");
    assert!(matches!(result, Err(AgentError::Protocol(_))), "{result:?}");
    assert!(client.is_closed());
    // The client closed the agent's stdin.
    assert!(fake.request().await.is_none());

    // An unknown id.
    let (mut fake, client) = FakeAgent::start().await;
    let stat = tokio::spawn({
        let client = client.clone();
        async move { client.stat("/a", false).await }
    });
    let (id, _) = fake.request().await.expect("request");
    fake.answer(id + 1, Response::Entry(None)).await;
    let result = tokio::time::timeout(PROMPTLY, stat)
        .await
        .expect("prompt")
        .expect("no panic");
    assert!(matches!(result, Err(AgentError::Protocol(_))), "{result:?}");
    assert!(matches!(client.sync(1).await, Err(AgentError::Protocol(_))));

    // A protocol-level error from the agent.
    let (mut fake, client) = FakeAgent::start().await;
    fake.answer(
        0,
        Response::Error {
            code: ErrorCode::Invalid,
            message: "bad".into(),
        },
    )
    .await;
    let result = tokio::time::timeout(PROMPTLY, client.sync(1))
        .await
        .expect("prompt");
    match result {
        Err(AgentError::Protocol(message)) => assert!(message.contains("bad"), "{message}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_request_given_up_keeps_its_id_until_answered() {
    let (mut fake, client) = FakeAgent::start().await;
    // Give up on a read the agent has not answered yet.
    let given_up = tokio::time::timeout(Duration::from_millis(50), client.read(7, 0, 10)).await;
    assert!(given_up.is_err(), "timed out");
    let (first, _) = fake.request().await.expect("the read");
    // The next request gets another id, and the late answer is discarded quietly.
    let sync = tokio::spawn({
        let client = client.clone();
        async move { client.sync(7).await }
    });
    let (second, request) = fake.request().await.expect("the sync");
    assert_ne!(first, second);
    assert_eq!(request, Request::Sync { handle: 7 });
    fake.answer(first, Response::Data(b"late".to_vec())).await;
    fake.answer(second, Response::Done).await;
    tokio::time::timeout(PROMPTLY, sync)
        .await
        .expect("prompt")
        .expect("no panic")
        .expect("done");
    assert!(!client.is_closed());
    // A List given up after its first batch: the remaining batches are discarded.
    let list = tokio::spawn({
        let client = client.clone();
        async move {
            let limits = ListingLimits {
                entries: 1,
                ..ListingLimits::DEFAULT
            };
            client.list("/d", limits).await
        }
    });
    let (id, _) = fake.request().await.expect("the list");
    let entry = Entry {
        name: b"n".to_vec(),
        kind: EntryKind::File,
        size: 0,
        mtime: 0,
        mtime_nanoseconds: 0,
        mode: 0o644,
    };
    let batch = |last| Response::EntryBatch {
        entries: vec![entry.clone(), entry.clone()],
        last,
    };
    fake.answer(id, batch(false)).await;
    assert_eq!(code(list.await.expect("no panic")), ErrorCode::TooLarge);
    fake.answer(id, batch(false)).await;
    fake.answer(id, batch(true)).await;
    let stat = tokio::spawn({
        let client = client.clone();
        async move { client.stat("/s", true).await }
    });
    let (id, _) = fake.request().await.expect("the stat");
    fake.answer(id, Response::Entry(Some(entry.clone()))).await;
    assert_eq!(stat.await.expect("no panic").expect("stat"), Some(entry));
    assert!(!client.is_closed());
}

fn file_entry(size: u64) -> Entry {
    Entry {
        name: b"f".to_vec(),
        kind: EntryKind::File,
        size,
        mtime: 0,
        mtime_nanoseconds: 0,
        mode: 0o644,
    }
}

#[test]
fn the_silence_allowed_grows_with_the_work_up_to_a_cap() {
    let limit = StallLimit::default();
    assert_eq!(limit.allowed(0), STALL_TIMEOUT);
    assert_eq!(
        limit.allowed(10 * SLOWEST_DISK_RATE),
        STALL_TIMEOUT + Duration::from_secs(10)
    );
    assert_eq!(limit.allowed(u64::MAX), MAX_SILENCE);
    let lowered = StallLimit {
        base: Duration::from_secs(2),
        bytes_per_second: 0,
    };
    assert_eq!(lowered.allowed(0), Duration::from_secs(2));
    assert_eq!(lowered.allowed(u64::MAX), MAX_SILENCE);
    let raised = StallLimit {
        base: Duration::from_secs(u64::MAX),
        bytes_per_second: SLOWEST_DISK_RATE,
    };
    assert_eq!(raised.allowed(0), MAX_SILENCE);
}

// The tests below run on the paused clock: the runtime jumps to the next timer whenever
// every task waits, so a silence of minutes passes at once.

#[tokio::test(start_paused = true)]
async fn an_agent_silent_after_its_hello_is_given_up() {
    let (mut fake, client) = FakeAgent::start().await;
    let stat = tokio::spawn({
        let client = client.clone();
        async move { client.stat("/a", false).await }
    });
    fake.request().await.expect("the stat");
    // Just short of the bound, the request still waits.
    tokio::time::sleep(STALL_TIMEOUT - Duration::from_secs(1)).await;
    assert!(!stat.is_finished());
    assert!(!client.is_closed());
    let result = tokio::time::timeout(PROMPTLY, stat)
        .await
        .expect("the stall ends the wait")
        .expect("no panic");
    match result {
        Err(error @ AgentError::Stalled { .. }) => assert!(error.is_transient()),
        other => panic!("expected a stall, got {other:?}"),
    }
    // The session is dead: later requests fail at once, and the agent's stdin is closed.
    assert!(client.is_closed());
    assert!(matches!(
        client.stat("/b", false).await,
        Err(AgentError::Stalled { .. })
    ));
    assert!(fake.request().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn an_agent_that_keeps_answering_is_never_given_up() {
    let (mut fake, client) = FakeAgent::start().await;
    let mut waiting = Vec::new();
    for index in 0..5 {
        let client = client.clone();
        waiting.push(tokio::spawn(async move {
            client.stat(&format!("/x/{index}"), false).await
        }));
    }
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(fake.request().await.expect("a request").0);
    }
    // The last answer comes long after the bound, but every answer comes within it.
    let gap = STALL_TIMEOUT - Duration::from_secs(5);
    for id in ids {
        tokio::time::sleep(gap).await;
        fake.answer(id, Response::Entry(None)).await;
    }
    for task in waiting {
        assert!(matches!(task.await.expect("no panic"), Ok(None)));
    }
    assert!(!client.is_closed());
    // An agent that owes nothing may be silent for ever.
    tokio::time::sleep(STALL_TIMEOUT * 10).await;
    assert!(!client.is_closed());
    // A request to an idle agent counts the silence from when it was sent.
    let stat = tokio::spawn({
        let client = client.clone();
        async move { client.stat("/y", false).await }
    });
    let (id, _) = fake.request().await.expect("the stat");
    tokio::time::sleep(gap).await;
    fake.answer(id, Response::Entry(None)).await;
    assert!(matches!(stat.await.expect("no panic"), Ok(None)));
    assert!(!client.is_closed());
}

#[tokio::test(start_paused = true)]
async fn a_large_answer_trickling_in_is_progress() {
    let (mut fake, client) = FakeAgent::start().await;
    let length = 1 << 20;
    let read = tokio::spawn({
        let client = client.clone();
        async move { client.read(1, 0, length).await }
    });
    let (id, _) = fake.request().await.expect("the read");
    let frame = Response::Data(vec![7; length as usize])
        .encode(id)
        .expect("encodable");
    // The whole answer takes many bounds to arrive; its bytes never pause that long.
    let chunks = 16;
    for chunk in frame.chunks(frame.len().div_ceil(chunks)) {
        tokio::time::sleep(STALL_TIMEOUT / 2).await;
        fake.to_client.write_all(chunk).await.expect("a chunk");
    }
    let data = read.await.expect("no panic").expect("the data");
    assert_eq!(data.len(), length as usize);
    assert!(!client.is_closed());
}

#[tokio::test(start_paused = true)]
async fn silent_work_on_many_bytes_is_allowed_its_time() {
    let (mut fake, client) = FakeAgent::start().await;
    // Four GiB of blocks, a silence the base bound alone would not allow.
    let (block_size, count) = (1u32 << 20, 4096u32);
    let silence = STALL_TIMEOUT * 5;
    assert!(StallLimit::default().allowed(u64::from(block_size) * u64::from(count)) > silence);
    let hashes = tokio::spawn({
        let client = client.clone();
        async move { client.block_hashes("/f", block_size, 0, count).await }
    });
    let (id, _) = fake.request().await.expect("the block hashes");
    tokio::time::sleep(silence).await;
    fake.answer(id, Response::Hashes(vec![[1; 32]])).await;
    assert_eq!(hashes.await.expect("no panic").expect("hashes").len(), 1);

    // A digest goes out behind a Stat, whose size allows for the hashing.
    let digest = tokio::spawn({
        let client = client.clone();
        async move { client.digest("/f").await }
    });
    let (stat_id, stat) = fake.request().await.expect("the stat");
    assert_eq!(
        stat,
        Request::Stat {
            path: "/f".into(),
            follow: true
        }
    );
    let (digest_id, request) = fake.request().await.expect("the digest");
    assert_eq!(request, Request::Digest { path: "/f".into() });
    fake.answer(stat_id, Response::Entry(Some(file_entry(4 << 30))))
        .await;
    tokio::time::sleep(silence).await;
    fake.answer(digest_id, Response::Hash([7; 32])).await;
    assert_eq!(digest.await.expect("no panic").expect("digest"), [7; 32]);

    // A sync of a file opened for writing, likewise.
    let opened = tokio::spawn({
        let client = client.clone();
        async move { client.open_write("/w").await }
    });
    let (id, _) = fake.request().await.expect("the open");
    fake.answer(id, Response::Handle(3)).await;
    assert_eq!(opened.await.expect("no panic").expect("handle"), 3);
    let sync = tokio::spawn({
        let client = client.clone();
        async move { client.sync(3).await }
    });
    let (stat_id, stat) = fake.request().await.expect("the stat");
    assert!(matches!(stat, Request::Stat { path, .. } if path == "/w"));
    let (sync_id, request) = fake.request().await.expect("the sync");
    assert_eq!(request, Request::Sync { handle: 3 });
    fake.answer(stat_id, Response::Entry(Some(file_entry(4 << 30))))
        .await;
    tokio::time::sleep(silence).await;
    fake.answer(sync_id, Response::Done).await;
    sync.await.expect("no panic").expect("synced");
    assert!(!client.is_closed());

    // A small file is allowed no more than any request.
    let digest = tokio::spawn({
        let client = client.clone();
        async move { client.digest("/small").await }
    });
    let (stat_id, _) = fake.request().await.expect("the stat");
    fake.request().await.expect("the digest");
    fake.answer(stat_id, Response::Entry(Some(file_entry(1000))))
        .await;
    let result = tokio::time::timeout(silence, digest)
        .await
        .expect("stalled within the base bound")
        .expect("no panic");
    assert!(
        matches!(result, Err(AgentError::Stalled { .. })),
        "{result:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn requests_waiting_on_an_agent_that_stopped_reading_are_released() {
    // The agent never reads: the pipe, the writer's buffer and the queue fill, and later
    // requests wait for room.
    let (fake, client) = FakeAgent::start().await;
    let mut writes = Vec::new();
    for index in 0..64u64 {
        let client = client.clone();
        writes.push(tokio::spawn(async move {
            client.write(1, index << 20, vec![0; 1 << 20]).await
        }));
    }
    let bound = StallLimit::default().allowed(64 << 20) + PROMPTLY;
    for write in writes {
        let result = tokio::time::timeout(bound, write)
            .await
            .expect("released by the stall")
            .expect("no panic");
        assert!(
            matches!(result, Err(AgentError::Stalled { .. })),
            "{result:?}"
        );
    }
    assert!(client.is_closed());
    drop(fake);
}
