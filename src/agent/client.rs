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

use super::connection::{Connection, FrameReader, FrameWriter, Opening, ReadError};
use super::protocol::{
    ClientHello, EncodedRequest, Entry, ErrorCode, Frame, PROTOCOL_MAX, PROTOCOL_MIN,
    ProtocolError, Request, Response, ResponseKind, ServerHello, choose_version,
};
use crate::remote::ListingLimits;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// Request frames waiting for the writer task.
const REQUEST_QUEUE: usize = 32;
/// How much of what a non-agent printed is kept for the message.
pub const NOT_AGENT_CAP: usize = 4096;
/// The most requests in flight on one client.
pub const MAX_IN_FLIGHT: usize = 1 << 20;
/// The silence allowed to an agent that owes answers, before the bytes of its work are counted:
/// as long as an SFTP request may take.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The slowest rate, in bytes per second, at which an agent is assumed to read, hash or sync
/// the bytes its requests cover: below a busy spinning disk or a congested network filesystem,
/// so work that is merely slow is never taken for a stall.
pub const SLOWEST_DISK_RATE: u64 = 8 << 20;
/// The longest silence ever allowed, however many bytes the work covers: keeps the arithmetic
/// finite whatever sizes an agent claims.
pub const MAX_SILENCE: Duration = Duration::from_secs(24 * 60 * 60);

/// How long an agent that owes answers may send nothing before its session is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StallLimit {
    /// The silence allowed for any work at all.
    pub base: Duration,
    /// Bytes per second of the slowest work allowed for on top of `base`.
    pub bytes_per_second: u64,
}

impl Default for StallLimit {
    fn default() -> StallLimit {
        StallLimit {
            base: STALL_TIMEOUT,
            bytes_per_second: SLOWEST_DISK_RATE,
        }
    }
}

impl StallLimit {
    /// The default, with `base` in whole seconds from `XFER_AGENT_TIMEOUT` when set (tests lower
    /// it; a user on a link slower than the default allows for raises it).
    pub fn from_environment() -> StallLimit {
        let mut limit = StallLimit::default();
        if let Some(value) = crate::env::var(crate::env::XFER_AGENT_TIMEOUT) {
            match value.parse::<u64>() {
                Ok(seconds) if seconds > 0 => limit.base = Duration::from_secs(seconds),
                _ => tracing::warn!(
                    "ignoring {}={value:?}: not a whole number of seconds above 0",
                    crate::env::XFER_AGENT_TIMEOUT
                ),
            }
        }
        limit
    }

    /// The silence allowed while the requests in flight cover `bytes` bytes of work, at most
    /// [`MAX_SILENCE`] (whatever `base` says).
    pub fn allowed(&self, bytes: u64) -> Duration {
        let work = Duration::from_secs(bytes / self.bytes_per_second.max(1));
        self.base.saturating_add(work).min(MAX_SILENCE)
    }
}

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
    requests: mpsc::Sender<EncodedRequest>,
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

/// What the requests, the reader task, the writer task and the watchdog share.
struct Link {
    state: Mutex<State>,
    /// Tells the writer task to close the agent's stdin and stop.
    stop: Notify,
    /// Wakes every task waiting for the session to end.
    ended: Notify,
    /// Tells the watchdog that the agent, idle until now, owes an answer.
    busy: Notify,
    /// When the session started: the origin of `heard`.
    started: Instant,
    /// When the agent last sent a byte, in nanoseconds since `started`. Kept apart from the
    /// state's lock, which a read of every chunk should not take.
    heard: AtomicU64,
}

struct State {
    pending: HashMap<u32, Pending>,
    last_id: u32,
    closed: Option<Closure>,
    /// When the agent last went from owing nothing to owing an answer.
    busy_since: Instant,
    /// The bytes of work that the requests in flight cover.
    owed_bytes: u64,
    /// The path each handle opened for writing was opened at, for the size a sync covers.
    written_paths: HashMap<u64, String>,
}

/// A request in flight.
struct Pending {
    expect: ResponseKind,
    /// The bytes the agent reads, hashes, writes or syncs to answer it.
    work: u64,
    /// Dropped by the reader once the last answer is routed; sending fails (and the answer is
    /// discarded) when the caller gave up.
    answers: mpsc::UnboundedSender<Response>,
}

/// Why the session ended.
#[derive(Debug, Clone)]
enum Closure {
    Closed,
    Protocol(String),
    Stalled(Duration),
}

impl Closure {
    /// The agent sent a frame that does not decode.
    fn malformed(error: ProtocolError) -> Closure {
        Closure::Protocol(error.to_string())
    }

    /// The agent ended the session with a frame of request id 0 (a protocol-level Error).
    fn ended_by_agent(response: Response) -> Closure {
        let message = match response {
            Response::Error { message, .. } => message,
            other => format!("{:?}", other.kind()),
        };
        Closure::Protocol(format!("the agent ended the session: {message}"))
    }

    /// Why a frame could not be read: a refused length is the agent breaking the protocol; a
    /// stream that broke or ended inside a frame is a lost connection.
    fn unreadable(error: ReadError) -> Closure {
        match error {
            ReadError::Refused(error) => Closure::malformed(error),
            ReadError::Io(error) if error.kind() == io::ErrorKind::InvalidData => {
                Closure::Protocol(error.to_string())
            }
            ReadError::Truncated { .. } | ReadError::Io(_) => Closure::Closed,
        }
    }

    fn error(&self) -> AgentError {
        match self {
            Closure::Closed => AgentError::Closed,
            Closure::Protocol(message) => AgentError::Protocol(message.clone()),
            Closure::Stalled(silence) => AgentError::Stalled { silence: *silence },
        }
    }
}

impl Link {
    fn new() -> Link {
        let now = Instant::now();
        Link {
            state: Mutex::new(State {
                pending: HashMap::new(),
                last_id: 0,
                closed: None,
                busy_since: now,
                owed_bytes: 0,
                written_paths: HashMap::new(),
            }),
            stop: Notify::new(),
            ended: Notify::new(),
            busy: Notify::new(),
            started: now,
            heard: AtomicU64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the session: every request in flight and every later one fails with `closure` (or
    /// with the reason the session ended first).
    fn close(&self, closure: Closure) {
        let pending = {
            let mut state = self.state();
            if state.closed.is_none() {
                state.closed = Some(closure);
            }
            state.owed_bytes = 0;
            std::mem::take(&mut state.pending)
        };
        // Dropping the senders wakes every waiting request.
        drop(pending);
        self.stop.notify_one();
        self.ended.notify_waiters();
    }

    /// Returns once the session has ended.
    async fn ended(&self) {
        let notified = self.ended.notified();
        tokio::pin!(notified);
        // Registered before the check, so a close between the two still wakes it.
        notified.as_mut().enable();
        if self.state().closed.is_some() {
            return;
        }
        notified.await;
    }

    fn closure_error(&self) -> AgentError {
        self.state()
            .closed
            .as_ref()
            .map_or(AgentError::Closed, Closure::error)
    }

    /// Notes that the agent sent something.
    fn hear(&self) {
        let since = Instant::now().saturating_duration_since(self.started);
        let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
        self.heard.fetch_max(nanos, Ordering::Relaxed);
    }

    /// When the agent's silence becomes a stall; None while it owes nothing.
    fn stall_deadline(&self, limit: &StallLimit) -> Option<Instant> {
        let heard = self.started + Duration::from_nanos(self.heard.load(Ordering::Relaxed));
        let state = self.state();
        if state.pending.is_empty() || state.closed.is_some() {
            return None;
        }
        Some(state.busy_since.max(heard) + limit.allowed(state.owed_bytes))
    }

    /// Takes a free request id for a request answered by `expect` whose answer takes `work`
    /// bytes of work.
    fn register(
        &self,
        expect: ResponseKind,
        work: u64,
    ) -> Result<(u32, mpsc::UnboundedReceiver<Response>), AgentError> {
        let mut state = self.state();
        if let Some(closure) = &state.closed {
            return Err(closure.error());
        }
        if state.pending.len() >= MAX_IN_FLIGHT {
            return Err(AgentError::Protocol(format!(
                "more than {MAX_IN_FLIGHT} requests in flight"
            )));
        }
        let id = loop {
            state.last_id = state.last_id.wrapping_add(1);
            if state.last_id != 0 && !state.pending.contains_key(&state.last_id) {
                break state.last_id;
            }
        };
        if state.pending.is_empty() {
            // The agent's silence counts from now, not from its last answer.
            state.busy_since = Instant::now();
            self.busy.notify_one();
        }
        let (answers, receiver) = mpsc::unbounded_channel();
        state.owed_bytes = state.owed_bytes.saturating_add(work);
        state.pending.insert(
            id,
            Pending {
                expect,
                work,
                answers,
            },
        );
        Ok((id, receiver))
    }

    /// Removes a request from those in flight.
    fn forget(state: &mut State, id: u32) -> Option<Pending> {
        let pending = state.pending.remove(&id)?;
        state.owed_bytes = state.owed_bytes.saturating_sub(pending.work);
        Some(pending)
    }

    /// Widens the silence allowed while request `id` is in flight by `bytes` of work.
    fn add_work(&self, id: u32, bytes: u64) {
        let mut state = self.state();
        if let Some(pending) = state.pending.get_mut(&id) {
            pending.work = pending.work.saturating_add(bytes);
            state.owed_bytes = state.owed_bytes.saturating_add(bytes);
        }
    }

    /// Hands one answer frame to the request waiting for it; `Err` ends the session.
    fn route(&self, body: Vec<u8>) -> Result<(), Closure> {
        let (id, response) = Response::decode_body(body).map_err(Closure::malformed)?;
        if id == 0 {
            return Err(Closure::ended_by_agent(response));
        }
        if let Some(answers) = self.answers_for(id, &response)? {
            // The caller may have given up: its answer is dropped.
            let _ = answers.send(response);
        }
        Ok(())
    }

    /// Where an answer to request `id` goes. The request must be in flight and expect this kind
    /// of answer (or an Error); its last answer takes it off the requests in flight.
    fn answers_for(
        &self,
        id: u32,
        response: &Response,
    ) -> Result<Option<mpsc::UnboundedSender<Response>>, Closure> {
        let mut state = self.state();
        let Some(pending) = state.pending.get(&id) else {
            return Err(Closure::Protocol(format!(
                "an answer to request {id}, which is not in flight"
            )));
        };
        let kind = response.kind();
        if kind != ResponseKind::Error && kind != pending.expect {
            return Err(Closure::Protocol(format!(
                "a {kind:?} answer to request {id}, which expects {:?}",
                pending.expect
            )));
        }
        let last = match response {
            Response::EntryBatch { last, .. } => *last,
            _ => true,
        };
        if last {
            Ok(Link::forget(&mut state, id).map(|pending| pending.answers))
        } else {
            Ok(Some(pending.answers.clone()))
        }
    }
}

/// Frees a request id whose frame never left: the caller gave up before it was queued.
struct Registration<'a> {
    link: &'a Link,
    id: u32,
    sent: bool,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if !self.sent {
            Link::forget(&mut self.link.state(), self.id);
        }
    }
}

/// The agent's output, noting on the link when each chunk of it arrives: a byte is progress,
/// whether or not it completes a frame (a large answer on a slow link takes a while).
struct Heard<R> {
    inner: R,
    link: Arc<Link>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Heard<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buffer.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(context, buffer);
        if buffer.filled().len() > before {
            self.link.hear();
        }
        polled
    }
}

/// Routes every answer frame to its request until the stream ends or the agent breaks the
/// protocol; then ends the session.
async fn read_responses<R: AsyncRead + Unpin>(mut reader: FrameReader<R>, link: Arc<Link>) {
    let closure = loop {
        match reader.read_frame().await {
            Ok(Some(body)) => {
                if let Err(closure) = link.route(body) {
                    break closure;
                }
            }
            Ok(None) => break Closure::Closed,
            Err(error) => break Closure::unreadable(error),
        }
    };
    link.close(closure);
}

/// Ends the session when the agent owes answers and has been silent longer than `limit`
/// allows. A task of its own rather than a timer around each read: a read cut short by a
/// timer would lose the part of a frame it had taken.
async fn watch_for_stalls(link: Arc<Link>, limit: StallLimit) {
    loop {
        let Some(deadline) = link.stall_deadline(&limit) else {
            tokio::select! {
                () = link.busy.notified() => continue,
                () = link.ended() => return,
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = link.ended() => return,
        }
        // Something may have arrived, or more work been asked for, while it slept.
        if let Some(deadline) = link.stall_deadline(&limit)
            && deadline <= Instant::now()
        {
            let silence = limit.allowed(link.state().owed_bytes);
            tracing::debug!(?silence, "the xfer agent stalled");
            link.close(Closure::Stalled(silence));
            return;
        }
    }
}

/// Sends the queued request frames, each burst with one flush, until the session stops or every
/// sender is gone; then closes the agent's stdin.
async fn write_requests<W: AsyncWrite + Unpin>(
    mut writer: FrameWriter<W>,
    mut requests: mpsc::Receiver<EncodedRequest>,
    link: Arc<Link>,
) {
    let written: io::Result<()> = async {
        loop {
            let frame = tokio::select! {
                frame = requests.recv() => frame,
                () = link.stop.notified() => None,
            };
            let Some(frame) = frame else {
                break;
            };
            writer.write_burst(frame, &mut requests).await?;
        }
        writer.shutdown().await
    }
    .await;
    if written.is_err() {
        link.close(Closure::Closed);
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
        Request::Write { data, .. } => data.len() as u64,
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

    /// Writes all of `data` (≤ `MAX_DATA` bytes) at `offset`.
    pub async fn write(&self, handle: u64, offset: u64, data: Vec<u8>) -> Result<(), AgentError> {
        self.call_done(Request::Write {
            handle,
            offset,
            data,
        })
        .await
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
mod tests {
    use super::*;
    use crate::agent::protocol::MAGIC;
    use crate::agent::protocol::{BuildId, MAX_LIST_BATCH};
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
            std::fs::write(directory.path().join(format!("{prefix}-{index:05}")), b"")
                .expect("write");
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
                .expect("hello");
            let frame = Frame::parse(&body).expect("frame");
            assert_eq!(ClientHello::decode(&frame), Ok(ClientHello { version: 1 }));
            (fake, client)
        }

        async fn request(&mut self) -> Option<(u32, Request)> {
            let body = self.from_client.read_frame().await.expect("read")?;
            let frame = Frame::parse(&body).expect("frame");
            Some((frame.id, Request::decode(&frame).expect("request")))
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
}
