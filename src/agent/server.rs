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
//! A malformed frame ends the session: the agent sends an Error frame with request id 0, waits
//! for the running requests, and [`serve`] returns an `InvalidData` error. The end of its input
//! ends the session cleanly once the running requests are answered. Nothing the client sends can
//! make the agent panic.

use super::connection::{Connection, FrameReader, FrameWriter, ReadError};
use super::protocol::{
    BuildId, ClientHello, Entry, ErrorCode, Frame, MAX_LIST_BATCH, PROTOCOL_MAX, PROTOCOL_MIN,
    Request, Response, ServerHello, cap_message,
};
use crate::blocks::is_valid_block_size;
use crate::file_hashing;
use crate::file_writing;
use crate::remote::EntryKind;
use nix::errno::Errno;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
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

/// The plain BLAKE3 of everything in `file` (read as [`file_hashing`] reads).
fn hash_whole(file: &File) -> io::Result<[u8; 32]> {
    let (_, blake3, _) = file_hashing::whole_file_digests(file, u64::MAX, true, false)?;
    Ok(blake3.unwrap_or_default())
}

/// This build's identity: the crate version, the plain BLAKE3 of the running executable and the
/// platform.
pub fn own_build_id() -> io::Result<BuildId> {
    let executable = std::env::current_exe()?;
    let hash = hash_whole(&File::open(executable)?)?;
    Ok(BuildId {
        version: env!("CARGO_PKG_VERSION").to_string(),
        executable_blake3: hash,
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
    })
}

/// Runs the agent on stdin and stdout until its input ends, speaking protocol versions up to
/// `protocol_max` (this build's newest when None or newer). The exit code: 0 when the input
/// ended cleanly (or the client found no common version and closed it), 2 on a protocol error,
/// 1 when the streams or the runtime failed.
pub fn run_stdio(protocol_max: Option<u16>) -> i32 {
    let newest = protocol_max.map_or(PROTOCOL_MAX, |max| max.min(PROTOCOL_MAX));
    let build = match own_build_id() {
        Ok(build) => build,
        Err(error) => {
            eprintln!("xfer agent: cannot hash its own executable: {error}");
            return 1;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("xfer agent: cannot start the runtime: {error}");
            return 1;
        }
    };
    let result = runtime.block_on(async {
        let (reader, writer) = stdio();
        serve_versions(reader, writer, build, (PROTOCOL_MIN, newest)).await
    });
    // A read of stdin may still be parked on the blocking pool: do not wait for it.
    runtime.shutdown_timeout(Duration::from_secs(1));
    exit_code(result)
}

/// The agent's exit code for how its session ended, saying on stderr why when it failed.
fn exit_code(result: io::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(error) if error.kind() == io::ErrorKind::InvalidData => {
            eprintln!("xfer agent: protocol error: {error}");
            2
        }
        Err(error) => {
            eprintln!("xfer agent: {error}");
            1
        }
    }
}

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// Stdin and stdout as streams the runtime polls itself. `tokio::io::stdin` and `stdout` hand
/// every read and write to a blocking-pool thread, two thread switches each, and a pull of many
/// small files makes a request and an answer per file: those switches would set its pace.
/// sshd gives its child pipes or a socket; anything else (a terminal, a file) keeps tokio's
/// blocking streams.
fn stdio() -> (Reader, Writer) {
    use std::os::fd::AsFd;
    let reader = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| polled_reader(fd).ok())
        .unwrap_or_else(|| Box::new(tokio::io::stdin()));
    let writer = io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| polled_writer(fd).ok())
        .unwrap_or_else(|| Box::new(tokio::io::stdout()));
    (reader, writer)
}

/// Whether `fd` is a socket (else a pipe is tried).
fn is_socket(fd: &std::os::fd::OwnedFd) -> io::Result<bool> {
    let status = nix::sys::stat::fstat(fd)?;
    Ok(nix::sys::stat::SFlag::from_bits_truncate(status.st_mode)
        .contains(nix::sys::stat::SFlag::S_IFSOCK))
}

fn polled_reader(fd: std::os::fd::OwnedFd) -> io::Result<Reader> {
    if is_socket(&fd)? {
        let stream = std::os::unix::net::UnixStream::from(fd);
        stream.set_nonblocking(true)?;
        Ok(Box::new(tokio::net::UnixStream::from_std(stream)?))
    } else {
        let _ = widen_pipe(&fd);
        Ok(Box::new(tokio::net::unix::pipe::Receiver::from_owned_fd(
            fd,
        )?))
    }
}

fn polled_writer(fd: std::os::fd::OwnedFd) -> io::Result<Writer> {
    if is_socket(&fd)? {
        let stream = std::os::unix::net::UnixStream::from(fd);
        stream.set_nonblocking(true)?;
        Ok(Box::new(tokio::net::UnixStream::from_std(stream)?))
    } else {
        let _ = widen_pipe(&fd);
        Ok(Box::new(tokio::net::unix::pipe::Sender::from_owned_fd(fd)?))
    }
}

/// What the pipes to and from sshd are widened to, where the system allows it. Through Linux's
/// default 64 KiB pipe, sshd and the agent take turns every 64 KiB, each waking the other many
/// times per block of a push; a pipe that holds a whole 1 MiB block lets each side move a block
/// per turn.
const PIPE_SIZE: i32 = 1 << 20;

/// Asks for a [`PIPE_SIZE`] buffer on `fd` and returns the size the pipe has then; a system
/// that refuses (a user over `/proc/sys/fs/pipe-max-size` or over its share of pipe memory)
/// keeps the pipe as it is.
#[cfg(target_os = "linux")]
fn widen_pipe(fd: &std::os::fd::OwnedFd) -> Option<i32> {
    match nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE)) {
        Ok(size) => {
            tracing::debug!(size, "pipe widened");
            Some(size)
        }
        Err(error) => {
            tracing::debug!(%error, "pipe not widened");
            None
        }
    }
}

/// Other systems have no call for it.
#[cfg(not(target_os = "linux"))]
fn widen_pipe(_fd: &std::os::fd::OwnedFd) -> Option<i32> {
    None
}

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
fn protocol_error_frame(error: &io::Error) -> Option<Vec<u8>> {
    if error.kind() != io::ErrorKind::InvalidData {
        return None;
    }
    Response::Error {
        code: ErrorCode::Invalid,
        message: cap_message(format!("malformed frame: {error}")),
    }
    .encode(0)
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
    let (output, frames) = mpsc::channel::<Vec<u8>>(OUTPUT_QUEUE);
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
    output: &mpsc::Sender<Vec<u8>>,
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
        let (id, request) = Request::decode_body(body).map_err(invalid_data)?;
        spawn_job(session, id, request, permit, output);
    }
}

/// Writes answer frames in the order they come, flushing whenever none is waiting; shuts the
/// stream down when every sender is gone.
async fn write_frames<W: AsyncWrite + Unpin>(
    mut writer: FrameWriter<W>,
    mut frames: mpsc::Receiver<Vec<u8>>,
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
}

impl Session {
    fn new(version: u16) -> Self {
        Session {
            version,
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            heavy: Arc::new(Semaphore::new(HEAVY_JOBS)),
            temporaries: AtomicU64::new(0),
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
    output: &mpsc::Sender<Vec<u8>>,
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
    output: mpsc::Sender<Vec<u8>>,
}

impl Answers {
    /// Queues an answer (from the blocking pool); false when nobody listens any more.
    fn send(&self, response: Response) -> bool {
        let frame = response.encode(self.id).or_else(|error| {
            Response::Error {
                code: ErrorCode::TooLarge,
                message: cap_message(format!("the answer cannot be sent: {error}")),
            }
            .encode(self.id)
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

/// Opens a regular file without blocking on a fifo or taking a terminal, and refuses anything
/// else.
fn open_regular(path: &str, options: &OpenOptions) -> Result<File, Failure> {
    let mut options = options.clone();
    options.custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits() | nix::fcntl::OFlag::O_NOCTTY.bits());
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(Failure::new(
            ErrorCode::Invalid,
            format!("{path} is not a regular file"),
        ));
    }
    Ok(file)
}

fn entry(name: Vec<u8>, metadata: &fs::Metadata) -> Entry {
    let file_type = metadata.file_type();
    let kind = if file_type.is_file() {
        EntryKind::File
    } else if file_type.is_dir() {
        EntryKind::Directory
    } else if file_type.is_symlink() {
        EntryKind::Symlink
    } else {
        EntryKind::Special
    };
    Entry {
        name,
        kind,
        size: metadata.size(),
        mtime: metadata.mtime(),
        mtime_nanoseconds: u32::try_from(metadata.mtime_nsec())
            .ok()
            .filter(|nanoseconds| *nanoseconds < 1_000_000_000)
            .unwrap_or(0),
        mode: metadata.mode() & 0o7777,
    }
}

fn stat(path: &str, follow: bool) -> Result<Option<Entry>, Failure> {
    let metadata = if follow {
        fs::metadata(path)
    } else {
        fs::symlink_metadata(path)
    };
    let metadata = match metadata {
        Ok(metadata) => metadata,
        Err(error) if error_code(&error) == ErrorCode::NotFound => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    // The last component, never the whole path: an entry's name is one component (`..` or `/`
    // for a path ending in one), within the protocol's name cap.
    let name = Path::new(path)
        .components()
        .next_back()
        .map(|name| name.as_os_str().as_encoded_bytes().to_vec())
        .unwrap_or_default();
    Ok(Some(entry(name, &metadata)))
}

/// Sends a directory's entries in batches of at most [`MAX_LIST_BATCH`] entries and about
/// [`LIST_BATCH_BYTES`] bytes, the last one marked.
fn list(path: &str, answers: &Answers) -> Result<(), Failure> {
    let mut batch = Vec::new();
    let mut batch_bytes = 0;
    for item in fs::read_dir(path)? {
        let item = item?;
        // fstatat on the directory without following links: an lstat of the entry.
        let metadata = match item.metadata() {
            Ok(metadata) => metadata,
            // Gone between readdir and lstat.
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error.into()),
        };
        let name = item.file_name().into_vec();
        batch_bytes += name.len() + 40;
        batch.push(entry(name, &metadata));
        if batch.len() == MAX_LIST_BATCH || batch_bytes >= LIST_BATCH_BYTES {
            let entries = std::mem::take(&mut batch);
            batch_bytes = 0;
            if !answers.send(Response::EntryBatch {
                entries,
                last: false,
            }) {
                return Ok(());
            }
        }
    }
    answers.send(Response::EntryBatch {
        entries: batch,
        last: true,
    });
    Ok(())
}

/// Reads up to `buffer.len()` bytes at `offset`, fewer only at the end of the file.
fn read_full(file: &File, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        let Some(at) = offset.checked_add(filled as u64) else {
            break;
        };
        match file.read_at(&mut buffer[filled..], at) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

fn read_at(file: &File, offset: u64, length: u32) -> io::Result<Vec<u8>> {
    let mut wanted = length as usize;
    let metadata = file.metadata()?;
    if metadata.is_file() {
        // Never allocate more than the file holds past the offset.
        let available = metadata.len().saturating_sub(offset);
        wanted = wanted.min(usize::try_from(available).unwrap_or(usize::MAX));
    }
    let mut buffer = vec![0u8; wanted];
    let filled = read_full(file, &mut buffer, offset)?;
    buffer.truncate(filled);
    Ok(buffer)
}

fn read_file(path: &str, max_length: u32) -> Result<Vec<u8>, Failure> {
    let file = open_regular(path, OpenOptions::new().read(true))?;
    let too_large = || {
        Failure::new(
            ErrorCode::TooLarge,
            format!("{path} has more than {max_length} bytes"),
        )
    };
    let size = file.metadata()?.len();
    if size > u64::from(max_length) {
        return Err(too_large());
    }
    // The size was checked against max_length ≤ MAX_DATA, so it fits.
    let mut data = Vec::with_capacity(size as usize);
    (&file)
        .take(u64::from(max_length) + 1)
        .read_to_end(&mut data)?;
    if data.len() > max_length as usize {
        return Err(too_large());
    }
    Ok(data)
}

/// The flags of every open by name that must not follow a final symlink, block on a fifo or
/// take a terminal.
fn no_follow_flags() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
        | nix::fcntl::OFlag::O_NONBLOCK.bits()
        | nix::fcntl::OFlag::O_NOCTTY.bits()
}

/// Opens the regular file at `path` for reading and writing, creating it (0600) when missing.
/// On a shared host another account may have put a symlink there, or a hard link to one of the
/// user's other files: writing through either would change a file that is not the transfer's.
/// So the final component is never followed, and a name that holds a symlink or a file with
/// other links is replaced by a new file (the other names keep their content, as rsync leaves
/// them), created exclusively so that a name planted meanwhile makes the open fail instead.
fn open_for_writing(path: &str) -> Result<File, Failure> {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(no_follow_flags());
    match options.clone().create(true).open(path) {
        Ok(file) => {
            let metadata = file.metadata()?;
            if !metadata.is_file() {
                return Err(Failure::new(
                    ErrorCode::Invalid,
                    format!("{path} is not a regular file"),
                ));
            }
            if metadata.nlink() == 1 {
                return Ok(file);
            }
        }
        Err(error) if error.raw_os_error() == Some(nix::libc::ELOOP) => {}
        Err(error) => return Err(error.into()),
    }
    fs::remove_file(path)?;
    Ok(options.create_new(true).open(path)?)
}

/// Sets attributes of what `path` names without following a final symlink: opened with
/// O_NOFOLLOW, then changed through the descriptor, so a name swapped after the open changes
/// nothing.
fn set_attributes(
    path: &str,
    size: Option<u64>,
    mode: Option<u32>,
    mtime: Option<i64>,
) -> Result<(), Failure> {
    let mut options = OpenOptions::new();
    if size.is_some() {
        options.write(true);
    } else {
        options.read(true);
    }
    let file = match options.custom_flags(no_follow_flags()).open(path) {
        Ok(file) => file,
        Err(error) if error.raw_os_error() == Some(nix::libc::ELOOP) => {
            return set_symlink_attributes(path, size, mode, mtime);
        }
        Err(error) => return Err(error.into()),
    };
    apply_attributes(&file, size, mode, mtime)
}

/// Attributes of a symlink: only its own times can be set (as rsync -a does), never anything
/// through it.
fn set_symlink_attributes(
    path: &str,
    size: Option<u64>,
    mode: Option<u32>,
    mtime: Option<i64>,
) -> Result<(), Failure> {
    let (None, None, Some(mtime)) = (size, mode, mtime) else {
        return Err(Failure::new(
            ErrorCode::Invalid,
            format!("{path} is a symlink; not changing what it points to"),
        ));
    };
    let time = timespec(mtime)?;
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &time,
        &time,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(())
}

/// Sets the size (a regular file only), the permission bits and both times of an open file.
fn apply_attributes(
    file: &File,
    size: Option<u64>,
    mode: Option<u32>,
    mtime: Option<i64>,
) -> Result<(), Failure> {
    if let Some(size) = size {
        if !file.metadata()?.is_file() {
            return Err(Failure::new(
                ErrorCode::Invalid,
                "only a regular file has a size to set",
            ));
        }
        file.set_len(size)?;
    }
    if let Some(mode) = mode {
        file.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
    }
    if let Some(mtime) = mtime {
        let time = timespec(mtime)?;
        nix::sys::stat::futimens(file, &time, &time)?;
    }
    Ok(())
}

fn timespec(mtime: i64) -> Result<nix::sys::time::TimeSpec, Failure> {
    let seconds = nix::libc::time_t::try_from(mtime)
        .map_err(|_| Failure::new(ErrorCode::Invalid, format!("mtime {mtime} is out of range")))?;
    Ok(nix::sys::time::TimeSpec::new(seconds, 0))
}

fn make_directory(path: &str, mode: u32) -> Result<(), Failure> {
    match fs::DirBuilder::new().mode(mode & 0o7777).create(path) {
        Ok(()) => Ok(()),
        Err(error)
            // A symlink to a directory is not one: files written below it would land
            // wherever it points.
            if error.kind() == io::ErrorKind::AlreadyExists
                && fs::symlink_metadata(path).is_ok_and(|metadata| metadata.is_dir()) =>
        {
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// Made under a temporary name and renamed over the final one, so the name is never missing or
/// half-made; a directory there is not replaced (rename refuses).
fn make_symlink(session: &Session, path: &str, target: &str) -> Result<(), Failure> {
    let temporary = format!(
        "{path}.xfer-link-{}-{}",
        std::process::id(),
        session.temporaries.fetch_add(1, Ordering::Relaxed)
    );
    std::os::unix::fs::symlink(target, &temporary)?;
    if let Err(error) = fs::rename(&temporary, path) {
        let _ = fs::remove_file(&temporary);
        return Err(error.into());
    }
    Ok(())
}

fn digest(path: &str) -> Result<[u8; 32], Failure> {
    let file = open_regular(path, OpenOptions::new().read(true))?;
    Ok(hash_whole(&file)?)
}

/// The hashes of blocks `first..first + count`, none past the end of the file. The blocks are
/// read and hashed by several threads; if the file shrinks meanwhile, the list ends with the
/// first block that came up short.
fn block_hashes(
    path: &str,
    block_size: u32,
    first: u64,
    count: u32,
) -> Result<Vec<[u8; 32]>, Failure> {
    if !is_valid_block_size(block_size) {
        return Err(Failure::new(
            ErrorCode::Invalid,
            format!("block size {block_size} is not a power of two between 4 KiB and 64 MiB"),
        ));
    }
    let file = open_regular(path, OpenOptions::new().read(true))?;
    let size = file.metadata()?.len();
    let Some(range) = BlockRange::within(size, block_size, first, count) else {
        return Ok(Vec::new());
    };
    let hashed = hash_blocks(&file, &range)?;
    hashes_in_order(&range, hashed)
}

/// The blocks a BlockHashes request covers in a file of `size` bytes: from `first`, `blocks`
/// of them, none past the end of the file.
struct BlockRange {
    size: u64,
    block_size: u32,
    first: u64,
    blocks: usize,
}

impl BlockRange {
    /// Blocks `first..first + count`, cut at the end of the file; None when none is left.
    fn within(size: u64, block_size: u32, first: u64, count: u32) -> Option<BlockRange> {
        let end = first
            .saturating_add(u64::from(count))
            .min(size.div_ceil(u64::from(block_size)));
        (first < end).then(|| BlockRange {
            size,
            block_size,
            first,
            // At most `count` ≤ MAX_HASHES blocks.
            blocks: (end - first) as usize,
        })
    }

    /// The offset and length of the range's `index`th block: a whole block, or what is left of
    /// the file.
    fn block(&self, index: usize) -> (u64, usize) {
        let block = u64::from(self.block_size);
        let offset = (self.first + index as u64) * block;
        // Within the file: the block is at most block_size long.
        (offset, self.size.saturating_sub(offset).min(block) as usize)
    }

    /// How many threads hash the range: one per core, never more than there are blocks, nor
    /// more than [`HASH_MEMORY_PER_JOB`] has room for (each thread holds one block).
    fn threads(&self) -> usize {
        crate::cores::available()
            .min(self.blocks)
            .min((HASH_MEMORY_PER_JOB / self.block_size as usize).max(1))
            .max(1)
    }
}

/// One hashed block: its index among those asked for, how many bytes were read, its hash.
type HashedBlock = (usize, usize, [u8; 32]);

/// Hashes every block of `range` on [`BlockRange::threads`] threads, each taking the next block
/// no other has taken; the blocks come in no particular order.
fn hash_blocks(file: &File, range: &BlockRange) -> io::Result<Vec<HashedBlock>> {
    // The longest block asked for: a small file's one block, not the whole block size (a
    // pull of many small files asks for one hash per file).
    let longest = range.block(0).1;
    let next = AtomicUsize::new(0);
    let worker = || -> io::Result<Vec<HashedBlock>> {
        let mut buffer = file_hashing::buffer_for(longest as u64);
        let mut done = Vec::new();
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            if index >= range.blocks {
                return Ok(done);
            }
            let (offset, length) = range.block(index);
            let (read, hash) =
                file_hashing::hash_block_at(file, offset, length as u64, &mut buffer)?;
            done.push((index, read as usize, hash));
        }
    };
    let threads = range.threads();
    if threads <= 1 {
        // One thread: this one (no thread to start per request).
        return worker();
    }
    let mut hashed = Vec::with_capacity(range.blocks);
    for result in run_on_threads(threads, &worker) {
        hashed.extend(result?);
    }
    Ok(hashed)
}

/// Runs `worker` on up to `threads` scoped threads and collects what each returned, in the
/// order they started. When the system refuses a thread, those already running take the whole
/// work; when it refuses the first, that is the error.
fn run_on_threads<T: Send>(
    threads: usize,
    worker: &(impl Fn() -> io::Result<T> + Sync),
) -> Vec<io::Result<T>> {
    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(threads);
        let mut results = Vec::with_capacity(threads);
        for _ in 0..threads {
            match std::thread::Builder::new()
                .name("xfer-agent-hash".into())
                .spawn_scoped(scope, worker)
            {
                Ok(handle) => handles.push(handle),
                Err(error) if !handles.is_empty() => {
                    tracing::debug!(%error, "fewer hashing threads");
                    break;
                }
                Err(error) => {
                    results.push(Err(error));
                    break;
                }
            }
        }
        for handle in handles {
            results.push(
                handle
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("a hashing thread panicked"))),
            );
        }
        results
    })
}

/// The hashes in block order, ending after the first block that came up short (the file
/// shrank while it was read) or before the first that was empty.
fn hashes_in_order(range: &BlockRange, hashed: Vec<HashedBlock>) -> Result<Vec<[u8; 32]>, Failure> {
    let mut by_index: Vec<Option<(usize, [u8; 32])>> = vec![None; range.blocks];
    for (index, read, hash) in hashed {
        if let Some(slot) = by_index.get_mut(index) {
            *slot = Some((read, hash));
        }
    }
    let mut hashes = Vec::with_capacity(range.blocks);
    for (index, slot) in by_index.into_iter().enumerate() {
        let Some((read, hash)) = slot else {
            return Err(Failure::new(ErrorCode::Other, "a block was not hashed"));
        };
        if read == 0 {
            break;
        }
        hashes.push(hash);
        if read < range.block(index).1 {
            break;
        }
    }
    Ok(hashes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::Opening;
    use crate::agent::protocol::MAX_FRAME;
    use crate::blocks::hash_block;
    use tokio::io::{AsyncWriteExt, DuplexStream, duplex};

    /// The user's own file that a third party tries to have xfer write or chmod through a
    /// symlink or a hard link planted at the transfer's name.
    fn victim(directory: &Path) -> std::path::PathBuf {
        let victim = directory.join("secretkey");
        fs::write(&victim, b"private").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        victim
    }

    fn unchanged(victim: &Path) {
        assert_eq!(fs::read(victim).unwrap(), b"private");
        let metadata = fs::metadata(victim).unwrap();
        assert_eq!(metadata.mode() & 0o7777, 0o600);
    }

    #[test]
    fn opening_for_writing_replaces_a_symlink_or_a_hard_link_instead_of_writing_through_it() {
        let directory = tempfile::tempdir().unwrap();
        let victim = victim(directory.path());
        let target = directory.path().join("pushed");
        for plant in [
            |victim: &Path, target: &Path| std::os::unix::fs::symlink(victim, target),
            |victim: &Path, target: &Path| fs::hard_link(victim, target),
        ] {
            plant(&victim, &target).unwrap();
            let file = open_for_writing(target.to_str().unwrap()).unwrap();
            file.write_all_at(b"pushed data", 0).unwrap();
            apply_attributes(&file, Some(6), Some(0o644), Some(1_000_000)).unwrap();
            drop(file);
            unchanged(&victim);
            let metadata = fs::symlink_metadata(&target).unwrap();
            assert!(metadata.is_file());
            assert_eq!(metadata.nlink(), 1);
            assert_eq!(metadata.mode() & 0o7777, 0o644);
            assert_eq!(metadata.mtime(), 1_000_000);
            assert_eq!(fs::read(&target).unwrap(), b"pushed");
            fs::remove_file(&target).unwrap();
        }
    }

    #[test]
    fn an_existing_file_of_one_link_is_written_in_place() {
        let directory = tempfile::tempdir().unwrap();
        let target = directory.path().join("partial");
        fs::write(&target, b"resumable").unwrap();
        let before = fs::metadata(&target).unwrap().ino();
        let file = open_for_writing(target.to_str().unwrap()).unwrap();
        file.write_all_at(b"R", 0).unwrap();
        assert_eq!(fs::metadata(&target).unwrap().ino(), before);
        assert_eq!(fs::read(&target).unwrap(), b"Resumable");
    }

    #[test]
    fn attributes_by_name_never_follow_a_symlink() {
        let directory = tempfile::tempdir().unwrap();
        let victim = victim(directory.path());
        let link = directory.path().join("swapped");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let refused = set_attributes(link.to_str().unwrap(), Some(100), Some(0o666), Some(5));
        assert!(refused.is_err());
        unchanged(&victim);
        // Its own time can be set: the link's, not the file's.
        let before = fs::metadata(&victim).unwrap().mtime();
        set_attributes(link.to_str().unwrap(), None, None, Some(12345)).unwrap();
        assert_eq!(fs::symlink_metadata(&link).unwrap().mtime(), 12345);
        assert_eq!(fs::metadata(&victim).unwrap().mtime(), before);
        unchanged(&victim);
        // A directory's attributes are set through a descriptor of the directory itself.
        let inner = directory.path().join("inner");
        fs::create_dir(&inner).unwrap();
        set_attributes(inner.to_str().unwrap(), None, Some(0o750), Some(7)).unwrap();
        let metadata = fs::metadata(&inner).unwrap();
        assert_eq!((metadata.mode() & 0o7777, metadata.mtime()), (0o750, 7));
    }

    #[test]
    fn a_symlink_to_a_directory_is_not_an_existing_directory() {
        let directory = tempfile::tempdir().unwrap();
        let elsewhere = directory.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let link = directory.path().join("made");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        assert!(make_directory(link.to_str().unwrap(), 0o755).is_err());
    }

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
            .expect("hello");
        ServerHello::decode(&Frame::parse(&body).expect("frame")).expect("hello")
    }

    async fn read_response(from_server: &mut FrameReader<DuplexStream>) -> Option<(u32, Response)> {
        let body = from_server.read_frame().await.expect("frame")?;
        let frame = Frame::parse(&body).expect("frame");
        Some((frame.id, Response::decode(&frame).expect("response")))
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
    fn stat_names_one_component_whatever_the_path() {
        // A path longer than a name, ending in `..`: the answer names `..`, not the whole path,
        // so it stays within the protocol's name cap and can be sent.
        let directory = tempfile::tempdir().expect("tempdir");
        let deep = directory.path().join("n".repeat(200)).join("m".repeat(200));
        fs::create_dir_all(&deep).expect("mkdir");
        let path = format!("{}/..", deep.display());
        let entry = stat(&path, true).expect("stat").expect("exists");
        assert_eq!(entry.name, b"..");
        assert!(Response::Entry(Some(entry)).encode(1).is_ok());
        let root = stat("/", true).expect("stat").expect("exists");
        assert_eq!(
            (root.name.as_slice(), root.kind),
            (&b"/"[..], EntryKind::Directory)
        );
        let inner = stat(deep.to_str().expect("utf-8"), true)
            .expect("stat")
            .expect("exists");
        assert_eq!(inner.name, "m".repeat(200).as_bytes());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn pipes_are_widened_where_the_system_allows() {
        let (reader, _writer) = nix::unistd::pipe().expect("pipe");
        let size_now = |fd: &std::os::fd::OwnedFd| {
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETPIPE_SZ).expect("F_GETPIPE_SZ")
        };
        let before = size_now(&reader);
        assert!(before < PIPE_SIZE, "a new pipe has {before} bytes already");
        match widen_pipe(&reader) {
            Some(size) => {
                assert!(size >= PIPE_SIZE, "asked for {PIPE_SIZE}, got {size}");
                assert_eq!(size_now(&reader), size);
            }
            None => {
                // Only an unprivileged user over the system's limits is refused.
                assert!(!nix::unistd::geteuid().is_root(), "root was refused");
                assert_eq!(size_now(&reader), before);
            }
        }
    }

    #[test]
    fn build_id_hashes_the_running_executable() {
        let build = own_build_id().expect("build id");
        let executable = fs::read(std::env::current_exe().expect("exe")).expect("read");
        assert_eq!(
            build.executable_blake3,
            crate::blocks::file_hash_of(&executable)
        );
        assert_eq!(build.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(build.os, std::env::consts::OS);
        assert_eq!(build.arch, std::env::consts::ARCH);
        // It fits a hello.
        let hello = ServerHello {
            min_version: PROTOCOL_MIN,
            max_version: PROTOCOL_MAX,
            build,
        };
        assert!(hello.encode().is_ok());
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

    #[test]
    fn block_hashes_stop_at_the_end_of_the_file() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("f");
        let data: Vec<u8> = (0..3 * 4096 + 100).map(|i| (i % 251) as u8).collect();
        fs::write(&path, &data).expect("write");
        let path = path.to_str().expect("utf-8");
        let expected: Vec<[u8; 32]> = data.chunks(4096).map(hash_block).collect();
        assert_eq!(block_hashes(path, 4096, 0, 100).expect("hashes"), expected);
        assert_eq!(
            block_hashes(path, 4096, 1, 2).expect("hashes"),
            expected[1..3]
        );
        assert_eq!(
            block_hashes(path, 4096, 3, 1).expect("hashes"),
            expected[3..]
        );
        assert!(block_hashes(path, 4096, 4, 10).expect("hashes").is_empty());
        assert!(
            block_hashes(path, 4096, u64::MAX, 10)
                .expect("hashes")
                .is_empty()
        );
        assert_eq!(
            block_hashes(path, 1 << 16, 0, 10).expect("hashes"),
            vec![hash_block(&data)]
        );
        assert_eq!(
            block_hashes(path, 4095, 0, 1).expect_err("bad size").code,
            ErrorCode::Invalid
        );
        let empty = directory.path().join("empty");
        fs::write(&empty, b"").expect("write");
        assert!(
            block_hashes(empty.to_str().expect("utf-8"), 4096, 0, 5)
                .expect("hashes")
                .is_empty()
        );
    }
}
