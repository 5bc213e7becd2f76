//! [`AgentClient`]: the client end of the agent protocol, a request multiplexer over one reader
//! and one writer (the SSH exec channel's stdout and stdin).
//!
//! Many tasks share one client (it is a cheap `Clone`) and have requests in flight at once. A
//! writer task sends request frames queued on a bounded channel, flushing when none is waiting;
//! a reader task routes every answer to the request with its id, several frames for a List. Ids
//! are u32, never 0, and skip ids still in flight (including requests whose caller gave up, whose
//! answers are still to come and are then discarded).
//!
//! When the stream ends or breaks, or the agent breaks the protocol (an undecodable frame, an
//! answer to no request in flight, an answer of the wrong type), every request in flight and
//! every later one fails promptly with [`AgentError::Closed`] or [`AgentError::Protocol`], and
//! the agent's stdin is closed. Dropping the last clone closes it too, so the agent sees the end
//! of its input and exits.
//!
//! Every wait on the agent is bounded, because the host runs the agent and may stop it
//! answering. The bound is on silence, not on each request: while the agent owes answers, it
//! must send something (any byte) within [`StallLimit::allowed`] of the last thing it sent, or
//! of the request that woke it from idle; otherwise the session ends as a stall
//! ([`AgentError::Stalled`], transient like a dropped connection). A per-request clock would
//! count the time a request waits behind the others in flight, which grows with the link's
//! slowness and the pipeline's depth; a silence clock is reset by every answer, so a slow but
//! working agent never trips it. Requests that work silently on many bytes (block hashes, a
//! whole-file digest, a sync) widen the allowed silence by the time their bytes take at the
//! slowest disk rate assumed; a digest or sync learns its file's size from a Stat sent with it.
//!
//! This file holds the client's API and its handshake; `link` what the requests and the
//! session's tasks share (requests in flight, routing of answers, the reader and writer tasks);
//! `stall` the bound on silence and the watchdog that enforces it.

mod link;
mod stall;

pub use stall::{MAX_SILENCE, SLOWEST_DISK_RATE, STALL_TIMEOUT, StallLimit};

use super::connection::{Connection, Opening, ReadError};
use super::protocol::{
    ClientHello, EncodedFrame, Entry, ErrorCode, Frame, PROTOCOL_MAX, PROTOCOL_MIN, Request,
    Response, ServerHello, choose_version,
};
use crate::remote::ListingLimits;
use link::{Heard, Link, Registration, read_responses, write_requests};
use stall::watch_for_stalls;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// Request frames waiting for the writer task.
const REQUEST_QUEUE: usize = 32;
/// How much of what a non-agent printed is kept for the message.
pub const NOT_AGENT_CAP: usize = 4096;
/// The most requests in flight on one client.
pub const MAX_IN_FLIGHT: usize = 1 << 20;

/// What answered on the other end of the stream.
#[derive(Debug)]
pub enum Startup {
    /// An agent, which agreed on a version.
    Agent(AgentClient, ServerHello),
    /// Not an agent: the bytes read instead of the magic, plus the rest until the end of the
    /// stream, at most [`NOT_AGENT_CAP`] bytes in all (what the remote start script printed).
    NotAgent(Vec<u8>),
}

/// Why a request to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The stream to the agent ended or broke. Transient: a new connection may succeed.
    #[error("the connection to the xfer agent ended")]
    Closed,
    /// The agent owed answers and sent nothing for this long: the session was given up.
    /// Transient, as a dropped connection is.
    #[error(
        "the xfer agent sent nothing for {} s while answers were due",
        silence.as_secs()
    )]
    Stalled { silence: Duration },
    /// The agent (or this side's request) broke the protocol.
    #[error("xfer agent protocol error: {0}")]
    Protocol(String),
    /// The agent speaks no version this build speaks.
    #[error(
        "the xfer agent speaks protocol versions {}..={}, this xfer speaks {}..={}",
        theirs.0, theirs.1, ours.0, ours.1
    )]
    VersionMismatch {
        ours: (u16, u16),
        theirs: (u16, u16),
    },
    /// The agent carried out the request and it failed there.
    #[error("{message}")]
    Remote { code: ErrorCode, message: String },
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl AgentError {
    /// Whether the same request on a new connection may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, AgentError::Closed | AgentError::Stalled { .. })
    }

    /// The agent's error code, for [`AgentError::Remote`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            AgentError::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A shared handle on one agent session. Clones share it; the session's stdin is closed when the
/// last clone is dropped.
#[derive(Clone)]
pub struct AgentClient {
    shared: Arc<Shared>,
}

struct Shared {
    hello: ServerHello,
    version: u16,
    requests: mpsc::Sender<EncodedFrame>,
    link: Arc<Link>,
    reader: tokio::task::AbortHandle,
    watchdog: tokio::task::AbortHandle,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Nobody can wait for an answer any more. The writer task ends by itself, once it has
        // sent what is queued and closed the agent's stdin.
        self.reader.abort();
        self.watchdog.abort();
    }
}

/// The agent's hello, the first frame after its magic.
async fn read_server_hello<R, W>(
    connection: &mut Connection<R, W>,
) -> Result<ServerHello, AgentError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let refused =
        |error: &dyn fmt::Display| AgentError::Protocol(format!("the agent's hello: {error}"));
    let body = match connection.read_frame().await {
        Ok(Some(body)) => body,
        Ok(None) | Err(ReadError::Truncated { .. }) => return Err(AgentError::Closed),
        Err(ReadError::Refused(error)) => return Err(refused(&error)),
        Err(ReadError::Io(error)) => {
            return Err(match error.kind() {
                io::ErrorKind::InvalidData => refused(&error),
                io::ErrorKind::UnexpectedEof => AgentError::Closed,
                _ => AgentError::Io(error),
            });
        }
    };
    let body = body.into_whole();
    Frame::parse(&body)
        .and_then(|frame| ServerHello::decode(&frame))
        .map_err(|error| refused(&error))
}

/// Answers the agent's hello with the version both sides will speak, the highest in both
/// ranges. When there is none, closes the agent's stdin (it exits when its input ends) and
/// fails with [`AgentError::VersionMismatch`].
async fn answer_hello<R, W>(
    connection: &mut Connection<R, W>,
    ours: (u16, u16),
    hello: &ServerHello,
) -> Result<u16, AgentError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let theirs = (hello.min_version, hello.max_version);
    let Some(version) = choose_version(ours, theirs) else {
        let _ = connection.writer().shutdown().await;
        return Err(AgentError::VersionMismatch { ours, theirs });
    };
    let answer = ClientHello { version }
        .encode()
        .map_err(|error| AgentError::Protocol(error.to_string()))?;
    connection.send_frame(&answer).await?;
    Ok(version)
}

/// The bytes of work the agent does to answer `request`, as far as the request says.
fn work_of(request: &Request) -> u64 {
    match request {
        Request::Read { length, .. } => u64::from(*length),
        Request::Write { data, .. } | Request::PutFile { data, .. } => data.len() as u64,
        Request::ReadFile { max_length, .. } | Request::ReadFileHashed { max_length, .. } => {
            u64::from(*max_length)
        }
        Request::BlockHashes {
            block_size, count, ..
        } => u64::from(*block_size).saturating_mul(u64::from(*count)),
        _ => 0,
    }
}

fn unexpected(response: &Response) -> AgentError {
    AgentError::Protocol(format!("an unexpected {:?} answer", response.kind()))
}

impl fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentClient")
            .field("version", &self.shared.version)
            .field("build", &self.shared.hello.build)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl AgentClient {
    /// Reads the agent's magic and hello from `reader`, answers with the version to speak on
    /// `writer`, and starts the session, bounded by [`StallLimit::from_environment`].
    /// [`Startup::NotAgent`] when something else answered; [`AgentError::VersionMismatch`]
    /// (after closing `writer`) when no version is common. The wait for the hello is the
    /// caller's to bound.
    pub async fn start<R, W>(reader: R, writer: W) -> Result<Startup, AgentError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        Self::start_versions(reader, writer, (PROTOCOL_MIN, PROTOCOL_MAX)).await
    }

    /// [`AgentClient::start`] speaking the versions `ours.0..=ours.1`.
    pub(crate) async fn start_versions<R, W>(
        reader: R,
        writer: W,
        ours: (u16, u16),
    ) -> Result<Startup, AgentError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        Self::start_limited(reader, writer, ours, StallLimit::from_environment()).await
    }

    /// [`AgentClient::start_versions`] with the session bounded by `limit`.
    pub(crate) async fn start_limited<R, W>(
        reader: R,
        writer: W,
        ours: (u16, u16),
        limit: StallLimit,
    ) -> Result<Startup, AgentError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let link = Arc::new(Link::new());
        let reader = Heard {
            inner: reader,
            link: Arc::clone(&link),
        };
        let mut connection = Connection::new(reader, writer);
        if let Opening::Other(printed) = connection.reader().read_opening(NOT_AGENT_CAP).await? {
            return Ok(Startup::NotAgent(printed));
        }
        let hello = read_server_hello(&mut connection).await?;
        let version = answer_hello(&mut connection, ours, &hello).await?;
        let client = AgentClient::run_session(connection, link, hello.clone(), version, limit);
        Ok(Startup::Agent(client, hello))
    }

    /// Starts the tasks of a session whose version is agreed: the writer of requests, the
    /// reader of answers, the watchdog of stalls.
    fn run_session<R, W>(
        connection: Connection<R, W>,
        link: Arc<Link>,
        hello: ServerHello,
        version: u16,
        limit: StallLimit,
    ) -> AgentClient
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (reader, writer) = connection.split();
        let (requests, queue) = mpsc::channel(REQUEST_QUEUE);
        tokio::spawn(write_requests(writer, queue, Arc::clone(&link)));
        let reader = tokio::spawn(read_responses(reader, Arc::clone(&link))).abort_handle();
        let watchdog = tokio::spawn(watch_for_stalls(Arc::clone(&link), limit)).abort_handle();
        AgentClient {
            shared: Arc::new(Shared {
                hello,
                version,
                requests,
                link,
                reader,
                watchdog,
            }),
        }
    }

    /// The agent's hello: its versions and build.
    pub fn hello(&self) -> &ServerHello {
        &self.shared.hello
    }

    /// The protocol version both sides speak.
    pub fn version(&self) -> u16 {
        self.shared.version
    }

    /// Whether the session has ended (every request fails).
    pub fn is_closed(&self) -> bool {
        self.shared.link.state().closed.is_some()
    }

    /// Sends a request; the answers come on the receiver, in flight under the id returned.
    async fn send(
        &self,
        request: Request,
    ) -> Result<(u32, mpsc::UnboundedReceiver<Response>), AgentError> {
        let link = &self.shared.link;
        let (id, answers) = link.register(request.response_kind(), work_of(&request))?;
        let mut registration = Registration {
            link,
            id,
            sent: false,
        };
        let frame = request
            .encode_owned(id)
            .map_err(|error| AgentError::Protocol(format!("cannot send the request: {error}")))?;
        // An agent that stopped reading leaves the queue full: the wait for room ends with the
        // session.
        tokio::select! {
            queued = self.shared.requests.send(frame) => {
                queued.map_err(|_| link.closure_error())?;
            }
            () = link.ended() => return Err(link.closure_error()),
        }
        registration.sent = true;
        Ok((id, answers))
    }

    async fn next_answer(
        &self,
        answers: &mut mpsc::UnboundedReceiver<Response>,
    ) -> Result<Response, AgentError> {
        match answers.recv().await {
            Some(Response::Error { code, message }) => Err(AgentError::Remote { code, message }),
            Some(response) => Ok(response),
            None => Err(self.shared.link.closure_error()),
        }
    }

    /// One request, one answer.
    async fn call(&self, request: Request) -> Result<Response, AgentError> {
        let (_, mut answers) = self.send(request).await?;
        self.next_answer(&mut answers).await
    }

    /// One request whose silent work covers the whole file at `path` (a digest, a sync), sent
    /// right behind a Stat of that file: the size it answers with widens the silence allowed
    /// while the request runs. No round trip is added; a Stat that fails only leaves the
    /// allowance for any request.
    async fn call_covering(&self, request: Request, path: &str) -> Result<Response, AgentError> {
        let (_, mut size) = self
            .send(Request::Stat {
                path: path.to_owned(),
                follow: true,
            })
            .await?;
        let (id, mut answers) = self.send(request).await?;
        if let Ok(Response::Entry(Some(entry))) = self.next_answer(&mut size).await {
            self.shared.link.add_work(id, entry.size);
        }
        self.next_answer(&mut answers).await
    }

    async fn call_done(&self, request: Request) -> Result<(), AgentError> {
        match self.call(request).await? {
            Response::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Metadata of `path`, following a final symlink only if `follow`; None if it does not
    /// exist.
    pub async fn stat(&self, path: &str, follow: bool) -> Result<Option<Entry>, AgentError> {
        let request = Request::Stat {
            path: path.to_owned(),
            follow,
        };
        match self.call(request).await? {
            Response::Entry(entry) => Ok(entry),
            other => Err(unexpected(&other)),
        }
    }

    /// The entries of a directory, without `.` and `..`; an error TooLarge when they are over
    /// `limits`, in entries or in bytes.
    pub async fn list(&self, path: &str, limits: ListingLimits) -> Result<Vec<Entry>, AgentError> {
        let (_, mut answers) = self
            .send(Request::List {
                path: path.to_owned(),
            })
            .await?;
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        loop {
            match self.next_answer(&mut answers).await? {
                Response::EntryBatch {
                    entries: batch,
                    last,
                } => {
                    bytes = batch.iter().fold(bytes, |bytes, entry| {
                        bytes.saturating_add(ListingLimits::entry_bytes(entry.name.len()))
                    });
                    if let Err(too_large) = limits.check(entries.len() + batch.len(), bytes) {
                        // The rest of the answer is discarded as it comes.
                        return Err(AgentError::Remote {
                            code: ErrorCode::TooLarge,
                            message: too_large.to_string(),
                        });
                    }
                    entries.extend(batch);
                    if last {
                        return Ok(entries);
                    }
                }
                other => return Err(unexpected(&other)),
            }
        }
    }

    /// The target of a symlink; an error Invalid when it is not UTF-8.
    pub async fn read_link(&self, path: &str) -> Result<String, AgentError> {
        let request = Request::ReadLink {
            path: path.to_owned(),
        };
        match self.call(request).await? {
            Response::Text(target) => String::from_utf8(target).map_err(|_| AgentError::Remote {
                code: ErrorCode::Invalid,
                message: format!("the target of {path} is not UTF-8"),
            }),
            other => Err(unexpected(&other)),
        }
    }

    async fn call_handle(&self, request: Request) -> Result<u64, AgentError> {
        match self.call(request).await? {
            Response::Handle(handle) => Ok(handle),
            other => Err(unexpected(&other)),
        }
    }

    /// Opens a regular file for reading.
    pub async fn open_read(&self, path: &str) -> Result<u64, AgentError> {
        self.call_handle(Request::OpenRead {
            path: path.to_owned(),
        })
        .await
    }

    /// Opens a regular file for reading and writing at offsets, creating it (mode 0600) if
    /// missing and never truncating it.
    pub async fn open_write(&self, path: &str) -> Result<u64, AgentError> {
        let handle = self
            .call_handle(Request::OpenWrite {
                path: path.to_owned(),
            })
            .await?;
        self.shared
            .link
            .state()
            .written_paths
            .insert(handle, path.to_owned());
        Ok(handle)
    }

    /// Up to `length` (≤ `MAX_DATA`) bytes at `offset`: fewer at the end of the file, none
    /// past it.
    pub async fn read(&self, handle: u64, offset: u64, length: u32) -> Result<Vec<u8>, AgentError> {
        let request = Request::Read {
            handle,
            offset,
            length,
        };
        match self.call(request).await? {
            Response::Data(data) if data.len() <= length as usize => Ok(data),
            Response::Data(data) => Err(AgentError::Protocol(format!(
                "{} bytes in answer to a read of {length}",
                data.len()
            ))),
            other => Err(unexpected(&other)),
        }
    }

    /// [`AgentClient::read`] with the agent's block hash of what it read (protocol version 4).
    pub async fn read_hashed(
        &self,
        handle: u64,
        offset: u64,
        length: u32,
    ) -> Result<(Vec<u8>, [u8; 32]), AgentError> {
        let request = Request::ReadHashed {
            handle,
            offset,
            length,
        };
        match self.call(request).await? {
            Response::HashedData { hash, data } if data.len() <= length as usize => {
                Ok((data, hash))
            }
            Response::HashedData { data, .. } => Err(AgentError::Protocol(format!(
                "{} bytes in answer to a read of {length}",
                data.len()
            ))),
            other => Err(unexpected(&other)),
        }
    }

    /// Writes all of `data` (≤ `MAX_DATA` bytes) at `offset`.
    pub async fn write(&self, handle: u64, offset: u64, data: Vec<u8>) -> Result<(), AgentError> {
        self.call_done(Request::Write {
            handle,
            offset,
            data,
        })
        .await
    }

    /// A whole small file in one request (protocol version 5; see `Request::PutFile`).
    pub async fn put_file(
        &self,
        path: &str,
        data: Vec<u8>,
        hash: [u8; 32],
        mode: u32,
        mtime: i64,
    ) -> Result<(), AgentError> {
        self.call_done(Request::PutFile {
            path: path.to_owned(),
            mode,
            mtime,
            hash,
            data,
        })
        .await
    }

    /// Makes what was written durable with a sync of the file's whole filesystem, shared with
    /// the other files waiting on the agent at once (protocol version 5).
    pub async fn sync_filesystem(&self, handle: u64) -> Result<(), AgentError> {
        self.call_done(Request::SyncFilesystem { handle }).await
    }

    /// Makes what was written durable (fsync).
    pub async fn sync(&self, handle: u64) -> Result<(), AgentError> {
        let request = Request::Sync { handle };
        let path = self.shared.link.state().written_paths.get(&handle).cloned();
        let answer = match path {
            // The data to sync is at most the file.
            Some(path) => self.call_covering(request, &path).await?,
            None => self.call(request).await?,
        };
        match answer {
            Response::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn close(&self, handle: u64) -> Result<(), AgentError> {
        self.shared.link.state().written_paths.remove(&handle);
        self.call_done(Request::Close { handle }).await
    }

    /// The whole file in one round trip; an error TooLarge when it has more than `max_length`
    /// (≤ `MAX_DATA`) bytes.
    pub async fn read_file(&self, path: &str, max_length: u32) -> Result<Vec<u8>, AgentError> {
        let request = Request::ReadFile {
            path: path.to_owned(),
            max_length,
        };
        match self.call(request).await? {
            Response::Data(data) if data.len() <= max_length as usize => Ok(data),
            Response::Data(data) => Err(AgentError::Protocol(format!(
                "{} bytes in answer to a read of at most {max_length}",
                data.len()
            ))),
            other => Err(unexpected(&other)),
        }
    }

    /// [`AgentClient::read_file`] with the agent's block hash of what it read (protocol
    /// version 2).
    pub async fn read_file_hashed(
        &self,
        path: &str,
        max_length: u32,
    ) -> Result<(Vec<u8>, [u8; 32]), AgentError> {
        let request = Request::ReadFileHashed {
            path: path.to_owned(),
            max_length,
        };
        match self.call(request).await? {
            Response::HashedData { hash, data } if data.len() <= max_length as usize => {
                Ok((data, hash))
            }
            Response::HashedData { data, .. } => Err(AgentError::Protocol(format!(
                "{} bytes in answer to a read of at most {max_length}",
                data.len()
            ))),
            other => Err(unexpected(&other)),
        }
    }

    /// Sets the size, then the permission bits, then the access and modification times (both to
    /// `mtime`); None leaves a field alone. A final symlink is never followed (agents of
    /// protocol version 3 on; older ones follow it).
    pub async fn set_attributes(
        &self,
        path: &str,
        size: Option<u64>,
        mode: Option<u32>,
        mtime: Option<i64>,
    ) -> Result<(), AgentError> {
        self.call_done(Request::SetAttributes {
            path: path.to_owned(),
            size,
            mode,
            mtime,
        })
        .await
    }

    /// [`AgentClient::set_attributes`] on the file open under `handle`, which is the file that
    /// was written whatever happened to its name since. An agent older than protocol version 3
    /// has no such request: then by `path`, as it always did.
    pub async fn set_file_attributes(
        &self,
        handle: u64,
        path: &str,
        size: Option<u64>,
        mode: Option<u32>,
        mtime: Option<i64>,
    ) -> Result<(), AgentError> {
        if self.version() < 3 {
            return self.set_attributes(path, size, mode, mtime).await;
        }
        self.call_done(Request::SetFileAttributes {
            handle,
            size,
            mode,
            mtime,
        })
        .await
    }

    /// Creates one directory; an existing directory is not an error.
    pub async fn make_directory(&self, path: &str, mode: u32) -> Result<(), AgentError> {
        self.call_done(Request::MakeDirectory {
            path: path.to_owned(),
            mode,
        })
        .await
    }

    /// Makes `path` a symlink to `target`, replacing a symlink or file there.
    pub async fn make_symlink(&self, path: &str, target: &str) -> Result<(), AgentError> {
        self.call_done(Request::MakeSymlink {
            path: path.to_owned(),
            target: target.to_owned(),
        })
        .await
    }

    /// Unlinks a file, symlink or special file.
    pub async fn remove(&self, path: &str) -> Result<(), AgentError> {
        self.call_done(Request::Remove {
            path: path.to_owned(),
        })
        .await
    }

    /// Renames `from` to `to`, replacing `to`.
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), AgentError> {
        self.call_done(Request::Rename {
            from: from.to_owned(),
            to: to.to_owned(),
        })
        .await
    }

    /// Plain BLAKE3 of the whole file, as `b3sum` prints it.
    pub async fn digest(&self, path: &str) -> Result<[u8; 32], AgentError> {
        let request = Request::Digest {
            path: path.to_owned(),
        };
        match self.call_covering(request, path).await? {
            Response::Hash(hash) => Ok(hash),
            other => Err(unexpected(&other)),
        }
    }

    /// The block hashes (`crate::blocks::hash_block`) of blocks `first..first + count`
    /// (`count` ≤ `MAX_HASHES`) of the file in `block_size` blocks: the last possibly short,
    /// none past the end of the file.
    pub async fn block_hashes(
        &self,
        path: &str,
        block_size: u32,
        first: u64,
        count: u32,
    ) -> Result<Vec<[u8; 32]>, AgentError> {
        let request = Request::BlockHashes {
            path: path.to_owned(),
            block_size,
            first,
            count,
        };
        match self.call(request).await? {
            Response::Hashes(hashes) if hashes.len() <= count as usize => Ok(hashes),
            Response::Hashes(hashes) => Err(AgentError::Protocol(format!(
                "{} hashes in answer to a request for {count}",
                hashes.len()
            ))),
            other => Err(unexpected(&other)),
        }
    }
}

#[cfg(test)]
mod tests;
