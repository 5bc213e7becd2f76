//! Where the engine gets its connections: opening them, handing them out, opening them ahead.
//!
//! [`Pool`] is all the engine knows of connections: a planner remote for listings, a remote for
//! moving data, a fresh one, and a way to say that data is sure to move so connections can be
//! opened while units are planned. [`SessionPool`] is the SSH one: each remote is a
//! [`Session`] (the xfer agent, or SFTP) on a connection of its own. `memory::MemoryPool` is the
//! in-memory one the engine's unit tests use.
//!
//! The first connection serves two sessions. Discovery and planning need only listings, which
//! SFTP answers without starting a shell on the remote (on many hosts the login shell's startup
//! files cost more than the whole listing), so the planner is an SFTP session, and the agent is
//! started on the same connection only when a unit has data to move: a re-run with nothing to
//! do never starts it. When data will most likely move (`eager`: the command names a large local
//! file, so a delta, a resume or a big push, or a pull's destination does not exist yet) the
//! agent is started at once, beside the planner, since starting it is the longest wait of such
//! a run. A host that refuses SFTP plans over the
//! agent.
//!
//! The first connection times the link's round trip as soon as it has logged in, beside the
//! planner's start ([`Eager`]): over a far link, where every connection takes many round trips
//! to come up, the connections a likely transfer wants are opened at that moment.

use crate::error::{Error, ErrorKind, Result};
use crate::progress::Reporter;
use crate::remote::Remote;
use crate::remote::deploy::AgentMode;
use crate::remote::session::Session;
use crate::remote::sftp::SftpRemote;
use crate::ssh::connect::{Connection, Connector, channel_refused};
use crate::target::HostSpec;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The engine's source of remotes.
pub trait Pool: Send + Sync + 'static {
    type Remote: Remote;

    /// `user@host:port`: names the remote in journals and completion records.
    fn remote_id(&self) -> &str;

    /// The remote that lists and plans (the first connection's).
    fn planner(&self) -> Arc<Self::Remote>;

    /// A remote for moving data: the first connection's data session (once), else one opened
    /// ahead, else a new one.
    fn for_data(&self) -> impl Future<Output = Result<Arc<Self::Remote>>> + Send;

    /// A remote on a connection of its own, not used before: one opened ahead, else a new one.
    fn open(&self) -> impl Future<Output = Result<Arc<Self::Remote>>> + Send;

    /// Data is sure to move: start the first connection's data session, and connections now
    /// until `more` in all were opened ahead, for the workers and the large files that will
    /// want them.
    fn expect_data(&self, more: usize);

    /// The link's round trip, where the pool timed it while connecting.
    fn round_trip(&self) -> Option<Duration>;

    /// The scouts' listing session beside the planner's, the same one for all of them, once
    /// it is up: an SFTP server answers one request after another, so two sessions (two server
    /// processes on the host) list a large tree side by side. The first call starts opening it
    /// and answers None, as every call does until it is up or where the host gives none: the
    /// scouts plan over the planner meanwhile rather than wait (over a far link the session
    /// takes round trips to open).
    fn lister(&self) -> Option<Arc<Self::Remote>> {
        None
    }
}

/// How long the round trip's timing may go on once the planner is up ([`SessionPool::connect`]).
const ROUND_TRIP_GRACE: Duration = Duration::from_millis(500);

/// What a transfer's connect is told before its first connection is up.
#[derive(Debug, Clone, Copy, Default)]
pub struct Eager {
    /// Data will most likely move: the first connection's data session starts at once, and a
    /// far link opens [`Eager::ahead_when_far`] more connections as soon as its round trip is
    /// known, each of which takes many round trips to come up.
    pub data_likely: bool,
    /// A round trip at least this long makes the link far.
    pub far: Duration,
    /// Connections opened ahead over a far link when data is likely.
    pub ahead_when_far: usize,
}

/// A data session being opened while other work goes on.
type Opening = tokio::task::JoinHandle<Result<Arc<Session>>>;

/// The first connection's data session, until a unit that moves data takes it.
enum Pending {
    /// Already open (the planner serves data too).
    Ready(Arc<Session>),
    /// Not started: the agent is started only when a unit has data to move.
    Connection(Arc<Connection>),
    /// Being started while the planner works (data is expected to move).
    Starting(Opening),
}

/// What opening a session needs, shared with the tasks that open ahead.
#[derive(Clone)]
struct Opener {
    connector: Arc<Connector>,
    host: HostSpec,
    agent: AgentMode,
    reporter: Arc<dyn Reporter>,
    /// Why the agent is not used is said once per run, not once per connection.
    fallback_said: Arc<AtomicBool>,
}

impl Opener {
    async fn open(&self) -> Result<Arc<Session>> {
        let connection = Arc::new(self.connector.connect(&self.host).await?);
        self.start(connection).await
    }

    /// Opens the remote side (agent or SFTP) of an established connection.
    async fn start(&self, connection: Arc<Connection>) -> Result<Arc<Session>> {
        let (session, fallback) = Session::open(connection, &self.agent).await?;
        if let Some(notice) = fallback
            && !self.fallback_said.swap(true, Ordering::Relaxed)
        {
            self.reporter
                .warning(&format!("{}: {notice}", session.label()));
        }
        tracing::debug!(label = %session.label(), kind = session.kind(), "remote session open");
        Ok(Arc::new(session))
    }

    /// Starts the remote side on `connection` (or on a new connection) in the background.
    fn open_ahead(&self, connection: Option<Arc<Connection>>) -> Opening {
        let opener = self.clone();
        tokio::spawn(async move {
            match connection {
                Some(connection) => opener.start(connection).await,
                None => opener.open().await,
            }
        })
    }
}

/// What a session opened ahead came to: the session if it is up, an error if it failed for a
/// reason a new connection would not cure, None if a new one is worth trying.
async fn came_up(opening: Opening) -> Result<Option<Arc<Session>>> {
    match opening.await {
        Ok(Ok(remote)) if !remote.is_closed() => Ok(Some(remote)),
        Ok(Err(error)) if !error.is_transient() => Err(error),
        _ => Ok(None),
    }
}

/// SSH connections to one host, each with its xfer agent or SFTP session.
pub struct SessionPool {
    opener: Opener,
    remote_id: String,
    planner: Arc<Session>,
    first_data: Mutex<Option<Pending>>,
    /// Data sessions being opened ahead of the workers that will want them.
    opening: Mutex<Vec<Opening>>,
    /// Connections opened ahead so far, taken or not.
    ahead_asked: AtomicUsize,
    /// The round trip timed while connecting.
    round_trip: Option<Duration>,
    /// A dry run's pool: it plans and never moves data.
    planning_only: bool,
    /// The scouts' listing session ([`Pool::lister`]).
    lister: Arc<Mutex<Lister>>,
}

/// Where the scouts' listing session is.
enum Lister {
    Unasked,
    Opening(tokio::task::JoinHandle<()>),
    Up(Arc<Session>),
    /// The host gives none: the scouts stay on the planner.
    Unavailable,
}

impl Drop for SessionPool {
    fn drop(&mut self) {
        // A session still being opened holds the connection: the run is over without it.
        if let Lister::Opening(opening) =
            &*self.lister.lock().unwrap_or_else(PoisonError::into_inner)
        {
            opening.abort();
        }
    }
}

impl SessionPool {
    /// Connects to `host` for a transfer: the planner, and where data is likely (`eager`, see
    /// the module's opening) the first connection's data session started at once, and over a
    /// far link more connections opened ahead.
    pub async fn connect(
        connector: Arc<Connector>,
        host: HostSpec,
        agent: AgentMode,
        reporter: Arc<dyn Reporter>,
        eager: Eager,
    ) -> Result<SessionPool> {
        let opener = Opener {
            connector,
            host,
            agent,
            reporter,
            fallback_said: Arc::new(AtomicBool::new(false)),
        };
        let connection = Arc::new(opener.connector.connect(&opener.host).await?);
        // The round trip is timed beside the first sessions' start, and a far link's
        // connections are opened the moment it is known rather than once the planner is up.
        let (planner_up, planner_is_up) = tokio::sync::oneshot::channel::<()>();
        let timing = async {
            // A server slow to answer global requests (each waits up to ROUND_TRIP_WAIT) must
            // not hold the run back: once the planner is up, the timing gets a moment more,
            // then the engine times a request of its own instead.
            let given_up = async {
                let _ = planner_is_up.await;
                tokio::time::sleep(ROUND_TRIP_GRACE).await;
            };
            let round_trip = tokio::select! {
                round_trip = connection.round_trip() => round_trip,
                () = given_up => None,
            };
            let far = round_trip.is_some_and(|round_trip| round_trip >= eager.far);
            if far {
                opener.connector.link_is_far(&connection);
            }
            let ahead = if eager.data_likely && far {
                eager.ahead_when_far
            } else {
                0
            };
            let opening: Vec<Opening> = (0..ahead).map(|_| opener.open_ahead(None)).collect();
            (round_trip, opening)
        };
        let starting = async {
            let sessions = first_sessions(&opener, connection.clone(), eager.data_likely).await;
            let _ = planner_up.send(());
            sessions
        };
        let ((round_trip, opening), sessions) = tokio::join!(timing, starting);
        let (planner, pending) = match sessions {
            Ok(sessions) => sessions,
            Err(error) => {
                for ahead in opening {
                    ahead.abort();
                }
                return Err(error);
            }
        };
        tracing::debug!(?round_trip, ahead = opening.len(), "first connection up");
        Ok(SessionPool {
            remote_id: remote_id(&planner),
            opener,
            planner,
            first_data: Mutex::new(Some(pending)),
            ahead_asked: AtomicUsize::new(opening.len()),
            opening: Mutex::new(opening),
            planning_only: false,
            round_trip,
            lister: Arc::new(Mutex::new(Lister::Unasked)),
        })
    }

    /// Connects for a dry run: one planner that changes nothing on the host (see
    /// [`Session::open_for_planning`]), and no data sessions. The planner comes through the
    /// agent only where the host has no SFTP; then one line says so.
    pub async fn for_planning(
        connector: Arc<Connector>,
        host: HostSpec,
        agent: AgentMode,
        reporter: Arc<dyn Reporter>,
    ) -> Result<SessionPool> {
        let connection = Arc::new(connector.connect(&host).await?);
        let (planner, no_sftp) = Session::open_for_planning(connection, &agent).await?;
        if let Some(reason) = no_sftp {
            reporter.warning(&format!(
                "{reason}; planning through the xfer agent instead (it may be put into its cache on the host first; nothing else there changes)"
            ));
        }
        let planner = Arc::new(planner);
        Ok(SessionPool {
            remote_id: remote_id(&planner),
            opener: Opener {
                connector,
                host,
                agent,
                reporter,
                fallback_said: Arc::new(AtomicBool::new(false)),
            },
            planner,
            first_data: Mutex::new(None),
            opening: Mutex::new(Vec::new()),
            ahead_asked: AtomicUsize::new(0),
            planning_only: true,
            round_trip: None,
            lister: Arc::new(Mutex::new(Lister::Unasked)),
        })
    }

    fn refuse_data(&self) -> Result<()> {
        if self.planning_only {
            return Err(Error::new(
                ErrorKind::Internal,
                "a dry run asked for a connection to move data",
            ));
        }
        Ok(())
    }

    /// A session opened ahead that came up, if any is left: whoever asks first, a worker or a
    /// large file borrowing, takes it, so none is opened twice.
    async fn opened_ahead(&self) -> Result<Option<Arc<Session>>> {
        loop {
            let ahead = self
                .opening
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let Some(ahead) = ahead else {
                return Ok(None);
            };
            if let Some(remote) = came_up(ahead).await? {
                return Ok(Some(remote));
            }
        }
    }

    /// The first connection's data session, if it is still to be had.
    async fn first_data(&self) -> Result<Option<Arc<Session>>> {
        let first = self
            .first_data
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        Ok(match first {
            Some(Pending::Ready(remote)) if !remote.is_closed() => Some(remote),
            Some(Pending::Connection(connection)) if !connection.is_closed() => {
                let label = connection.label().to_string();
                match self.opener.start(connection).await {
                    Ok(remote) => Some(remote),
                    // The host allows one channel per connection (sshd MaxSessions 1) and the
                    // planner's holds the first one's: the data goes over connections of their own.
                    Err(error) if channel_refused(&error) => {
                        tracing::info!(
                            "{label}: the host allows one channel per connection; data moves over connections of its own"
                        );
                        None
                    }
                    Err(error) => return Err(error),
                }
            }
            Some(Pending::Starting(starting)) => came_up(starting).await?,
            _ => None,
        })
    }
}

/// `user@host:port` of the host `session` reached.
fn remote_id(session: &Session) -> String {
    let config = session.connection().config();
    format!("{}@{}:{}", config.user, config.hostname, config.port)
}

/// The first connection's planner and data session (see the module's opening).
async fn first_sessions(
    opener: &Opener,
    connection: Arc<Connection>,
    eager: bool,
) -> Result<(Arc<Session>, Pending)> {
    if opener.agent != AgentMode::Off {
        let starting = eager.then(|| opener.open_ahead(Some(connection.clone())));
        match SftpRemote::open(connection.clone()).await {
            Ok(sftp) => {
                let pending = match starting {
                    Some(starting) => Pending::Starting(starting),
                    None => Pending::Connection(connection),
                };
                return Ok((Arc::new(Session::Sftp(sftp)), pending));
            }
            Err(error) if connection.is_closed() => return Err(error),
            Err(_) => {
                if let Some(starting) = starting
                    && let Ok(Some(session)) = came_up(starting).await
                {
                    return Ok((session.clone(), Pending::Ready(session)));
                }
            }
        }
    }
    let session = opener.start(connection).await?;
    Ok((session.clone(), Pending::Ready(session)))
}

impl Pool for SessionPool {
    type Remote = Session;

    fn remote_id(&self) -> &str {
        &self.remote_id
    }

    fn planner(&self) -> Arc<Session> {
        self.planner.clone()
    }

    async fn for_data(&self) -> Result<Arc<Session>> {
        self.refuse_data()?;
        let remote = match self.first_data().await? {
            Some(remote) => Some(remote),
            None => self.opened_ahead().await?,
        };
        match remote {
            Some(remote) => Ok(remote),
            None => self.opener.open().await,
        }
    }

    async fn open(&self) -> Result<Arc<Session>> {
        self.refuse_data()?;
        match self.opened_ahead().await? {
            Some(remote) => Ok(remote),
            None => self.opener.open().await,
        }
    }

    fn expect_data(&self, more: usize) {
        if self.planning_only {
            return;
        }
        {
            let mut first_data = self
                .first_data
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(Pending::Connection(connection)) = &*first_data {
                let starting = self.opener.open_ahead(Some(connection.clone()));
                *first_data = Some(Pending::Starting(starting));
            }
        }
        let asked = self.ahead_asked.fetch_max(more, Ordering::AcqRel);
        self.opening
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend((asked..more).map(|_| self.opener.open_ahead(None)));
    }

    fn round_trip(&self) -> Option<Duration> {
        self.round_trip
    }

    /// A second SFTP session on the first connection, beside the planner's, opened in the
    /// background. Where the planner is the agent (a host without SFTP), or the host refuses a
    /// second channel (sshd `MaxSessions 1`), the scouts stay on the planner.
    fn lister(&self) -> Option<Arc<Session>> {
        let mut lister = self.lister.lock().unwrap_or_else(PoisonError::into_inner);
        match &*lister {
            Lister::Up(session) if !session.is_closed() => return Some(session.clone()),
            Lister::Unasked => {}
            _ => return None,
        }
        if !matches!(&*self.planner, Session::Sftp(_)) {
            *lister = Lister::Unavailable;
            return None;
        }
        let connection = self.planner.connection().clone();
        let state = self.lister.clone();
        *lister = Lister::Opening(tokio::spawn(async move {
            let opened = match SftpRemote::open(connection).await {
                Ok(sftp) => Lister::Up(Arc::new(Session::Sftp(sftp))),
                Err(error) => {
                    tracing::debug!("no second listing session: {error}");
                    Lister::Unavailable
                }
            };
            *state.lock().unwrap_or_else(PoisonError::into_inner) = opened;
        }));
        None
    }
}
