//! What the requests and the session's tasks share ([`Link`]): the requests in flight and the
//! channel each one's answers go to, the free request ids, why the session ended, and when the
//! agent was last heard. The reader task routes every answer frame through it; the writer task
//! sends the queued request frames.

use super::{AgentError, MAX_IN_FLIGHT, StallLimit};
use crate::agent::connection::{FrameReader, FrameWriter, ReadError};
use crate::agent::protocol::{EncodedFrame, FrameBody, ProtocolError, Response, ResponseKind};
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// What the requests, the reader task, the writer task and the watchdog share.
pub(super) struct Link {
    pub(super) state: Mutex<State>,
    /// Tells the writer task to close the agent's stdin and stop.
    stop: Notify,
    /// Wakes every task waiting for the session to end.
    pub(super) ended: Notify,
    /// Tells the watchdog that the agent, idle until now, owes an answer.
    pub(super) busy: Notify,
    /// When the session started: the origin of `heard`.
    started: Instant,
    /// When the agent last sent a byte, in nanoseconds since `started`. Kept apart from the
    /// state's lock, which a read of every chunk should not take.
    heard: AtomicU64,
}

pub(super) struct State {
    pending: HashMap<u32, Pending>,
    last_id: u32,
    pub(super) closed: Option<Closure>,
    /// When the agent last went from owing nothing to owing an answer.
    busy_since: Instant,
    /// The bytes of work that the requests in flight cover.
    pub(super) owed_bytes: u64,
    /// The path each handle opened for writing was opened at, for the size a sync covers.
    pub(super) written_paths: HashMap<u64, String>,
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
pub(super) enum Closure {
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

    pub(super) fn error(&self) -> AgentError {
        match self {
            Closure::Closed => AgentError::Closed,
            Closure::Protocol(message) => AgentError::Protocol(message.clone()),
            Closure::Stalled(silence) => AgentError::Stalled { silence: *silence },
        }
    }
}

impl Link {
    pub(super) fn new() -> Link {
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

    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the session: every request in flight and every later one fails with `closure` (or
    /// with the reason the session ended first).
    pub(super) fn close(&self, closure: Closure) {
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
    pub(super) async fn ended(&self) {
        let notified = self.ended.notified();
        tokio::pin!(notified);
        // Registered before the check, so a close between the two still wakes it.
        notified.as_mut().enable();
        if self.state().closed.is_some() {
            return;
        }
        notified.await;
    }

    pub(super) fn closure_error(&self) -> AgentError {
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
    pub(super) fn stall_deadline(&self, limit: &StallLimit) -> Option<Instant> {
        let heard = self.started + Duration::from_nanos(self.heard.load(Ordering::Relaxed));
        let state = self.state();
        if state.pending.is_empty() || state.closed.is_some() {
            return None;
        }
        Some(state.busy_since.max(heard) + limit.allowed(state.owed_bytes))
    }

    /// Takes a free request id for a request answered by `expect` whose answer takes `work`
    /// bytes of work.
    pub(super) fn register(
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
    pub(super) fn add_work(&self, id: u32, bytes: u64) {
        let mut state = self.state();
        if let Some(pending) = state.pending.get_mut(&id) {
            pending.work = pending.work.saturating_add(bytes);
            state.owed_bytes = state.owed_bytes.saturating_add(bytes);
        }
    }

    /// Hands one answer frame to the request waiting for it; `Err` ends the session.
    fn route(&self, body: FrameBody) -> Result<(), Closure> {
        let (id, response) = Response::decode_parts(body).map_err(Closure::malformed)?;
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
pub(super) struct Registration<'a> {
    pub(super) link: &'a Link,
    pub(super) id: u32,
    pub(super) sent: bool,
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
pub(super) struct Heard<R> {
    pub(super) inner: R,
    pub(super) link: Arc<Link>,
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
pub(super) async fn read_responses<R: AsyncRead + Unpin>(
    mut reader: FrameReader<R>,
    link: Arc<Link>,
) {
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

/// Sends the queued request frames, each burst with one flush, until the session stops or every
/// sender is gone; then closes the agent's stdin.
pub(super) async fn write_requests<W: AsyncWrite + Unpin>(
    mut writer: FrameWriter<W>,
    mut requests: mpsc::Receiver<EncodedFrame>,
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
