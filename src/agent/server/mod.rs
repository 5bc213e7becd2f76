//! The agent: serves [`protocol`](super::protocol) requests from one client on a reader and a
//! writer (stdin and stdout when `xfer agent` runs over an SSH exec channel).
//!
//! One task reads frames. Each request runs on the blocking pool (filesystem calls block) and
//! sends its answer frames into a bounded channel drained by one writer task, which flushes
//! whenever the channel is momentarily empty. At most [`MAX_JOBS`] requests run or wait at once:
//! while all are taken the reader stops reading, so a client that sends faster than the disk
//! answers is slowed down instead of making the agent buffer without bound. Whole-file digests
//! and block hashes, which read whole files, also take one of [`HEAVY_JOBS`] slots, and each
//! keeps at most [`HASH_MEMORY_PER_JOB`] bytes of blocks in memory.
//!
//! The filesystem side of each request is in `files`, the hashing of whole files and blocks in
//! `hashing`, and how the agent runs as a process on stdin and stdout in `stdio`.
//!
//! A malformed frame ends the session: the agent sends an Error frame with request id 0, waits
//! for the running requests, and [`serve`] returns an `InvalidData` error. The end of its input
//! ends the session cleanly once the running requests are answered. Nothing the client sends can
//! make the agent panic.

mod files;
mod hashing;
pub(crate) mod stdio;

pub use stdio::{build_id_of, own_build_id, run_stdio};

use super::connection::{Connection, FrameReader, FrameWriter, ReadError};
use super::protocol::{
    BuildId, ClientHello, EncodedFrame, ErrorCode, Frame, PROTOCOL_MAX, PROTOCOL_MIN, Request,
    Response, ServerHello, cap_message,
};
use crate::file_writing;
use crate::local::GroupSync;
use files::{
    apply_attributes, list, make_directory, make_symlink, open_for_writing, open_regular, read_at,
    read_file, set_attributes, stat,
};
use hashing::{block_hashes, digest};
use nix::errno::Errno;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// The most requests running or waiting to run at once.
pub const MAX_JOBS: usize = 64;
/// The most whole-file digests and block-hash requests running at once. Each already uses every
/// core, so more would only hold more memory.
pub const HEAVY_JOBS: usize = 2;
/// The most bytes of blocks one block-hash request holds in memory (one block per thread).
pub const HASH_MEMORY_PER_JOB: usize = 128 << 20;
/// The most open handles in one session.
pub const MAX_OPEN_HANDLES: usize = 4096;
/// Answer frames waiting for the writer.
const OUTPUT_QUEUE: usize = 32;
/// A List batch is sent once its entries take about this many bytes (or it has
/// MAX_LIST_BATCH entries), so a batch of long names stays far below the frame cap.
pub(crate) const LIST_BATCH_BYTES: usize = 256 << 10;

/// Serves one client: the magic and a ServerHello, the client's hello, then requests until the
/// input ends. `Ok` when the input ended cleanly, an `InvalidData` error when the client broke
/// the protocol (after telling it with an Error frame of request id 0), another error when a
/// stream failed.
pub async fn serve<R, W>(reader: R, writer: W, build: BuildId) -> io::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    serve_versions(reader, writer, build, (PROTOCOL_MIN, PROTOCOL_MAX)).await
}

/// [`serve`] speaking the versions `versions.0..=versions.1`.
pub(crate) async fn serve_versions<R, W>(
    reader: R,
    writer: W,
    build: BuildId,
    versions: (u16, u16),
) -> io::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut connection = Connection::new(reader, writer);
    greet(&mut connection, build, versions).await?;
    let version = match read_client_hello(&mut connection, versions).await {
        Ok(Some(version)) => version,
        // The client found no common version and closed our input.
        Ok(None) => return Ok(()),
        Err(error) => return refuse(connection.into_writer(), error).await,
    };
    run_session(connection, version).await
}

/// Opens the agent's output: the magic, then a ServerHello with the versions it speaks and the
/// build it is.
async fn greet<R, W>(
    connection: &mut Connection<R, W>,
    build: BuildId,
    versions: (u16, u16),
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let hello = ServerHello {
        min_version: versions.0,
        max_version: versions.1,
        build,
    }
    .encode()
    .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    let writer = connection.writer();
    writer.write_magic().await?;
    writer.write_frame(&hello).await?;
    writer.flush().await
}

/// The version the client chose in its hello, one of `versions`; None when it closed the
/// agent's input instead (it found no common version). An `InvalidData` error when the first
/// frame is not a ClientHello or chooses a version outside the range.
async fn read_client_hello<R, W>(
    connection: &mut Connection<R, W>,
    versions: (u16, u16),
) -> io::Result<Option<u16>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let body = match connection.read_frame().await {
        Ok(Some(body)) => body,
        Ok(None) => return Ok(None),
        Err(error) => return Err(session_error(error)),
    };
    let body = body.into_whole();
    let hello = Frame::parse(&body)
        .and_then(|frame| ClientHello::decode(&frame))
        .map_err(invalid_data)?;
    if !(versions.0..=versions.1).contains(&hello.version) {
        return Err(invalid_data(format!(
            "the client chose protocol version {}, outside {}..={}",
            hello.version, versions.0, versions.1
        )));
    }
    Ok(Some(hello.version))
}

/// Ends a session that broke before it started: the error frame, then the error.
async fn refuse<W: AsyncWrite + Unpin>(
    mut writer: FrameWriter<W>,
    error: io::Error,
) -> io::Result<()> {
    if let Some(frame) = protocol_error_frame(&error) {
        // The client may be gone already: the error being returned is what matters.
        let _ = writer.write_frame(&frame).await;
        let _ = writer.flush().await;
    }
    let _ = writer.shutdown().await;
    Err(error)
}

fn invalid_data(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// How a frame that could not be read ends the session: a refused length, and a stream that
/// ended inside a frame, are the client breaking the protocol (`InvalidData`); a stream that
/// failed is that failure.
fn session_error(error: ReadError) -> io::Error {
    match error {
        ReadError::Refused(error) => invalid_data(error),
        ReadError::Truncated { .. } => invalid_data(error.to_string()),
        ReadError::Io(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
            invalid_data(error.to_string())
        }
        ReadError::Io(error) => error,
    }
}

/// The Error frame (request id 0) that tells the client why the session ends, for protocol
/// errors only.
fn protocol_error_frame(error: &io::Error) -> Option<EncodedFrame> {
    if error.kind() != io::ErrorKind::InvalidData {
        return None;
    }
    Response::Error {
        code: ErrorCode::Invalid,
        message: cap_message(format!("malformed frame: {error}")),
    }
    .encode_owned(0)
    .ok()
}

/// Serves requests on an agreed version until the input ends; on a protocol error, tells the
/// client before returning it. Returns once every answer has been written.
async fn run_session<R, W>(connection: Connection<R, W>, version: u16) -> io::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (reader, writer) = connection.split();
    let (output, frames) = mpsc::channel::<EncodedFrame>(OUTPUT_QUEUE);
    let writer_task = tokio::spawn(write_frames(writer, frames));
    let session = Arc::new(Session::new(version));
    let outcome = serve_requests(reader, &session, &output).await;
    if let Err(error) = &outcome
        && let Some(frame) = protocol_error_frame(error)
    {
        let _ = output.send(frame).await;
    }
    // The writer ends once every job has sent its answers and dropped its sender.
    drop(output);
    let written = writer_task
        .await
        .unwrap_or_else(|error| Err(io::Error::other(error)));
    outcome.and(written)
}

/// Reads requests and starts a job for each, until the input ends or the writer stops (`Ok`;
/// a writer's failure is its own task's to report) or the client breaks the protocol (`Err`).
async fn serve_requests<R: AsyncRead + Unpin>(
    mut reader: FrameReader<R>,
    session: &Arc<Session>,
    output: &mpsc::Sender<EncodedFrame>,
) -> io::Result<()> {
    let jobs = Arc::new(Semaphore::new(MAX_JOBS));
    loop {
        // Nothing more is read while every job slot is taken.
        let Ok(permit) = Arc::clone(&jobs).acquire_owned().await else {
            return Ok(());
        };
        let body = tokio::select! {
            body = reader.read_frame() => body,
            // Nobody hears the answers any more.
            () = output.closed() => return Ok(()),
        };
        let body = match body {
            Ok(Some(body)) => body,
            Ok(None) => return Ok(()),
            Err(error) => return Err(session_error(error)),
        };
        let (id, request) = Request::decode_parts(body).map_err(invalid_data)?;
        spawn_job(session, id, request, permit, output);
    }
}

/// Writes answer frames in the order they come, flushing whenever none is waiting; shuts the
/// stream down when every sender is gone.
async fn write_frames<W: AsyncWrite + Unpin>(
    mut writer: FrameWriter<W>,
    mut frames: mpsc::Receiver<EncodedFrame>,
) -> io::Result<()> {
    while let Some(frame) = frames.recv().await {
        writer.write_burst(frame, &mut frames).await?;
    }
    writer.shutdown().await
}

/// What one session keeps between requests.
struct Session {
    handles: Mutex<HashMap<u64, Arc<File>>>,
    /// Handle ids count up and are never reused within a session.
    next_handle: AtomicU64,
    heavy: Arc<Semaphore>,
    /// Numbers temporary names.
    temporaries: AtomicU64,
    /// The protocol version agreed on: newer requests are refused.
    version: u16,
    /// The syncs SyncFilesystem requests wait for, shared by the files waiting at once.
    group_sync: GroupSync,
}

impl Session {
    fn new(version: u16) -> Self {
        Session {
            version,
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            heavy: Arc::new(Semaphore::new(HEAVY_JOBS)),
            temporaries: AtomicU64::new(0),
            group_sync: GroupSync::new(),
        }
    }
}

impl Session {
    /// Refuses a request newer than the session's version.
    fn check_version(&self, request: &Request) -> Result<(), Failure> {
        if request.since_version() > self.version {
            return Err(Failure::new(
                ErrorCode::Invalid,
                format!(
                    "this request needs protocol version {}; the session speaks {}",
                    request.since_version(),
                    self.version
                ),
            ));
        }
        Ok(())
    }

    fn insert(&self, file: File) -> Result<u64, Failure> {
        let mut handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        if handles.len() >= MAX_OPEN_HANDLES {
            return Err(Failure::new(
                ErrorCode::Other,
                format!("too many open handles (the cap is {MAX_OPEN_HANDLES})"),
            ));
        }
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        handles.insert(handle, Arc::new(file));
        Ok(handle)
    }

    /// Waits for a sync of `file`'s filesystem that started after this call, shared with the
    /// other files waiting at once (SyncFilesystem, PutFile).
    fn sync_with_others(&self, file: &File) -> Result<(), Failure> {
        // Jobs run on the blocking pool, where a thread may wait on the runtime; the wait
        // lasts one or two syncs of the filesystem.
        tokio::runtime::Handle::current().block_on(self.group_sync.sync(file))?;
        Ok(())
    }

    fn file(&self, handle: u64) -> Result<Arc<File>, Failure> {
        self.handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&handle)
            .cloned()
            .ok_or_else(|| bad_handle(handle))
    }

    /// Forgets a handle; the file closes when the last request using it ends.
    fn close(&self, handle: u64) -> Result<(), Failure> {
        self.handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&handle)
            .map(drop)
            .ok_or_else(|| bad_handle(handle))
    }
}

fn bad_handle(handle: u64) -> Failure {
    Failure::new(ErrorCode::BadHandle, format!("handle {handle} is not open"))
}

fn is_heavy(request: &Request) -> bool {
    matches!(
        request,
        Request::Digest { .. } | Request::BlockHashes { .. }
    )
}

/// Runs one request on the blocking pool; its job slot is released once its answers are queued.
fn spawn_job(
    session: &Arc<Session>,
    id: u32,
    request: Request,
    permit: OwnedSemaphorePermit,
    output: &mpsc::Sender<EncodedFrame>,
) {
    let session = Arc::clone(session);
    let answers = Answers {
        id,
        output: output.clone(),
    };
    if !is_heavy(&request) {
        // Straight to the blocking pool: no task in between to wake when it is done (a pull
        // of many small files makes a request per file).
        tokio::task::spawn_blocking(move || {
            run_job(&session, request, &answers);
            drop(permit);
        });
        return;
    }
    tokio::spawn(async move {
        let _heavy = Arc::clone(&session.heavy).acquire_owned().await.ok();
        let _ = tokio::task::spawn_blocking(move || run_job(&session, request, &answers)).await;
        drop(permit);
    });
}

/// [`handle`], answering even if it panics: a bug, not the client's doing, and the request
/// must not hang.
fn run_job(session: &Session, request: Request, answers: &Answers) {
    let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        handle(session, request, answers)
    }));
    if handled.is_err() {
        answers.send(Response::Error {
            code: ErrorCode::Other,
            message: "internal error in the agent".to_string(),
        });
    }
}

/// Where one request's answers go.
struct Answers {
    id: u32,
    output: mpsc::Sender<EncodedFrame>,
}

impl Answers {
    /// Queues an answer (from the blocking pool); false when nobody listens any more.
    fn send(&self, response: Response) -> bool {
        // A block's data is moved into its frame, not copied.
        let frame = response.encode_owned(self.id).or_else(|error| {
            Response::Error {
                code: ErrorCode::TooLarge,
                message: cap_message(format!("the answer cannot be sent: {error}")),
            }
            .encode_owned(self.id)
        });
        match frame {
            Ok(frame) => self.output.blocking_send(frame).is_ok(),
            Err(_) => false,
        }
    }
}

/// Why a request failed, as the Error answer will say.
#[derive(Debug)]
struct Failure {
    code: ErrorCode,
    message: String,
}

impl Failure {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    fn into_response(self) -> Response {
        Response::Error {
            code: self.code,
            message: cap_message(self.message),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Self {
        Failure {
            code: error_code(&error),
            message: error.to_string(),
        }
    }
}

impl From<Errno> for Failure {
    fn from(errno: Errno) -> Self {
        Failure::from(io::Error::from(errno))
    }
}

/// The protocol's error code for an IO error.
fn error_code(error: &io::Error) -> ErrorCode {
    if let Some(errno) = error.raw_os_error() {
        match Errno::from_raw(errno) {
            Errno::ENOENT | Errno::ENOTDIR => return ErrorCode::NotFound,
            Errno::EACCES | Errno::EPERM => return ErrorCode::PermissionDenied,
            Errno::ENOSPC | Errno::EDQUOT => return ErrorCode::NoSpace,
            Errno::EEXIST => return ErrorCode::AlreadyExists,
            Errno::EBADF => return ErrorCode::BadHandle,
            Errno::EINVAL | Errno::EISDIR => return ErrorCode::Invalid,
            _ => {}
        }
    }
    match error.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => ErrorCode::NotFound,
        io::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => ErrorCode::NoSpace,
        io::ErrorKind::AlreadyExists => ErrorCode::AlreadyExists,
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => ErrorCode::Invalid,
        _ => ErrorCode::Other,
    }
}

/// PutFile (see [`Request::PutFile`]): the file looks incomplete (one byte too long, its
/// mtime the time of writing) until what it holds is durable and checked.
fn put_file(
    session: &Session,
    path: &str,
    mode: u32,
    mtime: i64,
    hash: &[u8; 32],
    data: &[u8],
) -> Result<(), Failure> {
    let file = open_for_writing(path)?;
    let length = data.len() as u64;
    file.set_len(crate::engine::plan::size_while_incomplete(length))?;
    file_writing::write_all_at(&file, data, 0)?;
    session.sync_with_others(&file)?;
    let held = read_at(&file, 0, u32::try_from(data.len()).unwrap_or(u32::MAX))?;
    if held.len() != data.len() || crate::blocks::hash_block(&held) != *hash {
        return Err(Failure::new(
            ErrorCode::Other,
            format!("{path}: what the file holds after writing differs from what was sent"),
        ));
    }
    apply_attributes(&file, Some(length), Some(mode), Some(mtime))
}

/// Carries out one request and queues its answers.
fn handle(session: &Session, request: Request, answers: &Answers) {
    if let Request::List { path } = &request {
        if let Err(failure) = list(path, answers) {
            answers.send(failure.into_response());
        }
        return;
    }
    let response = answer(session, request).unwrap_or_else(Failure::into_response);
    answers.send(response);
}

/// The one answer of every request but List.
fn answer(session: &Session, request: Request) -> Result<Response, Failure> {
    session.check_version(&request)?;
    Ok(match request {
        Request::Stat { path, follow } => Response::Entry(stat(&path, follow)?),
        Request::List { .. } => {
            return Err(Failure::new(ErrorCode::Other, "List has many answers"));
        }
        Request::ReadLink { path } => {
            Response::Text(fs::read_link(&path)?.into_os_string().into_vec())
        }
        Request::OpenRead { path } => {
            Response::Handle(session.insert(open_regular(&path, OpenOptions::new().read(true))?)?)
        }
        Request::OpenWrite { path } => Response::Handle(session.insert(open_for_writing(&path)?)?),
        Request::Read {
            handle,
            offset,
            length,
        } => {
            let file = session.file(handle)?;
            Response::Data(read_at(&file, offset, length)?)
        }
        Request::ReadHashed {
            handle,
            offset,
            length,
        } => {
            let data = read_at(&*session.file(handle)?, offset, length)?;
            Response::HashedData {
                hash: crate::blocks::hash_block(&data),
                data,
            }
        }
        Request::Write {
            handle,
            offset,
            data,
        } => {
            file_writing::write_all_at(&*session.file(handle)?, &data, offset)?;
            Response::Done
        }
        Request::Sync { handle } => {
            session.file(handle)?.sync_all()?;
            Response::Done
        }
        Request::PutFile {
            path,
            mode,
            mtime,
            hash,
            data,
        } => {
            put_file(session, &path, mode, mtime, &hash, &data)?;
            Response::Done
        }
        Request::SyncFilesystem { handle } => {
            session.sync_with_others(&*session.file(handle)?)?;
            Response::Done
        }
        Request::Close { handle } => {
            session.close(handle)?;
            Response::Done
        }
        Request::ReadFile { path, max_length } => Response::Data(read_file(&path, max_length)?),
        Request::ReadFileHashed { path, max_length } => {
            let data = read_file(&path, max_length)?;
            Response::HashedData {
                hash: crate::blocks::hash_block(&data),
                data,
            }
        }
        Request::SetAttributes {
            path,
            size,
            mode,
            mtime,
        } => {
            set_attributes(&path, size, mode, mtime)?;
            Response::Done
        }
        Request::SetFileAttributes {
            handle,
            size,
            mode,
            mtime,
        } => {
            apply_attributes(&*session.file(handle)?, size, mode, mtime)?;
            Response::Done
        }
        Request::MakeDirectory { path, mode } => {
            make_directory(&path, mode)?;
            Response::Done
        }
        Request::MakeSymlink { path, target } => {
            make_symlink(session, &path, &target)?;
            Response::Done
        }
        Request::Remove { path } => {
            fs::remove_file(&path)?;
            Response::Done
        }
        Request::Rename { from, to } => {
            fs::rename(&from, &to)?;
            Response::Done
        }
        Request::Digest { path } => Response::Hash(digest(&path)?),
        Request::BlockHashes {
            path,
            block_size,
            first,
            count,
        } => Response::Hashes(block_hashes(&path, block_size, first, count)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::Opening;
    use crate::agent::protocol::MAX_FRAME;
    use tokio::io::{AsyncWriteExt, DuplexStream, duplex};

    fn build() -> BuildId {
        BuildId {
            version: "test".into(),
            executable_blake3: [1; 32],
            os: "linux".into(),
            arch: "x86_64".into(),
        }
    }

    /// A server on duplex pipes: (its task, our writer to it, our reader from it).
    fn start(
        versions: (u16, u16),
    ) -> (
        tokio::task::JoinHandle<io::Result<()>>,
        DuplexStream,
        FrameReader<DuplexStream>,
    ) {
        let (to_server, server_in) = duplex(1 << 16);
        let (server_out, from_server) = duplex(1 << 16);
        let task = tokio::spawn(serve_versions(server_in, server_out, build(), versions));
        (task, to_server, FrameReader::new(from_server))
    }

    async fn read_hello(from_server: &mut FrameReader<DuplexStream>) -> ServerHello {
        let opening = from_server.read_opening(64).await.expect("magic");
        assert_eq!(opening, Opening::Magic);
        let body = from_server
            .read_frame()
            .await
            .expect("frame")
            .expect("hello")
            .into_whole();
        ServerHello::decode(&Frame::parse(&body).expect("frame")).expect("hello")
    }

    async fn read_response(from_server: &mut FrameReader<DuplexStream>) -> Option<(u32, Response)> {
        let body = from_server.read_frame().await.expect("frame")?;
        Some(Response::decode_parts(body).expect("response"))
    }

    async fn expect_protocol_error(
        task: tokio::task::JoinHandle<io::Result<()>>,
        from_server: &mut FrameReader<DuplexStream>,
    ) {
        let (id, response) = read_response(from_server).await.expect("an error frame");
        assert_eq!(id, 0);
        assert!(
            matches!(
                response,
                Response::Error {
                    code: ErrorCode::Invalid,
                    ..
                }
            ),
            "{response:?}"
        );
        assert_eq!(read_response(from_server).await, None, "then the end");
        let error = task.await.expect("no panic").expect_err("a protocol error");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn garbage_frames_end_the_session_with_an_error() {
        let garbage: [&[u8]; 5] = [
            // A length over the cap: refused before anything is allocated.
            &u32::MAX.to_be_bytes(),
            &(MAX_FRAME + 1).to_be_bytes(),
            // Too short to hold a type and id.
            &[0, 0, 0, 2, 1, 2],
            // An unknown type.
            &[0, 0, 0, 5, 0x55, 0, 0, 0, 1],
            // A request truncated by the end of the stream.
            &[0, 0, 0, 50, 0x01, 0, 0, 0, 1],
        ];
        for bytes in garbage {
            let (task, mut to_server, mut from_server) = start((1, 1));
            read_hello(&mut from_server).await;
            to_server
                .write_all(&ClientHello { version: 1 }.encode().expect("hello"))
                .await
                .expect("write");
            to_server.write_all(bytes).await.expect("write");
            drop(to_server);
            expect_protocol_error(task, &mut from_server).await;
        }
    }

    #[tokio::test]
    async fn requests_before_garbage_are_answered() {
        let (task, mut to_server, mut from_server) = start((1, 1));
        read_hello(&mut from_server).await;
        to_server
            .write_all(&ClientHello { version: 1 }.encode().expect("hello"))
            .await
            .expect("write");
        let close = Request::Close { handle: 5 }.encode(7).expect("request");
        to_server.write_all(&close).await.expect("write");
        // A request frame with a response type.
        to_server
            .write_all(&Response::Done.encode(8).expect("frame"))
            .await
            .expect("write");
        let mut answers = Vec::new();
        while let Some(answer) = read_response(&mut from_server).await {
            answers.push(answer);
        }
        assert_eq!(answers.len(), 2, "{answers:?}");
        assert!(answers.iter().any(|(id, response)| *id == 7
            && matches!(
                response,
                Response::Error {
                    code: ErrorCode::BadHandle,
                    ..
                }
            )));
        assert!(answers.iter().any(|(id, _)| *id == 0));
        let error = task.await.expect("no panic").expect_err("protocol error");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn a_version_outside_the_range_is_refused() {
        for version in [0, 3, u16::MAX] {
            let (task, mut to_server, mut from_server) = start((1, 2));
            let hello = read_hello(&mut from_server).await;
            assert_eq!((hello.min_version, hello.max_version), (1, 2));
            assert_eq!(hello.build, build());
            to_server
                .write_all(&ClientHello { version }.encode().expect("hello"))
                .await
                .expect("write");
            expect_protocol_error(task, &mut from_server).await;
        }
        // A request where the hello should be.
        let (task, mut to_server, mut from_server) = start((1, 2));
        read_hello(&mut from_server).await;
        let request = Request::Sync { handle: 1 }.encode(1).expect("request");
        to_server.write_all(&request).await.expect("write");
        expect_protocol_error(task, &mut from_server).await;
    }

    #[tokio::test]
    async fn closing_before_the_hello_is_a_clean_end() {
        let (task, to_server, mut from_server) = start((1, 1));
        read_hello(&mut from_server).await;
        drop(to_server);
        assert_eq!(read_response(&mut from_server).await, None);
        task.await.expect("no panic").expect("clean end");
    }

    #[test]
    fn io_errors_map_to_codes() {
        let code = |errno: Errno| error_code(&io::Error::from(errno));
        assert_eq!(code(Errno::ENOENT), ErrorCode::NotFound);
        assert_eq!(code(Errno::ENOTDIR), ErrorCode::NotFound);
        assert_eq!(code(Errno::EACCES), ErrorCode::PermissionDenied);
        assert_eq!(code(Errno::ENOSPC), ErrorCode::NoSpace);
        assert_eq!(code(Errno::EDQUOT), ErrorCode::NoSpace);
        assert_eq!(code(Errno::EEXIST), ErrorCode::AlreadyExists);
        assert_eq!(code(Errno::EBADF), ErrorCode::BadHandle);
        assert_eq!(code(Errno::EIO), ErrorCode::Other);
    }
}
