//! A TCP proxy on 127.0.0.1 in front of a local port, on plain threads, that counts the bytes
//! it forwards and can cut, stall or throttle its connections to imitate a failing network.
//!
//! Every connection is two pumps (client to server, server to client). Before forwarding what
//! it has read, a pump reserves an allowance under the proxy's one lock, so that limits hold
//! exactly even with both directions and many connections moving at once; counters grow only
//! by what was actually written.

use std::cmp::min;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What the proxy does to the bytes it carries. Limits count both directions together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward everything.
    Pass,
    /// Close each connection (both sockets shut down) once it has carried this many bytes
    /// since it opened or since the mode was set, whichever is later.
    CutEachAfter(u64),
    /// Once this many bytes have passed in total since the mode was set, close every
    /// connection open at that moment. It happens once: connections opened afterwards pass,
    /// until the mode is set again.
    CutAllAfter(u64),
    /// After a connection has carried this many bytes (counted as for `CutEachAfter`), it stops
    /// forwarding and reading in both directions but keeps both sockets open, like a silent
    /// peer. A stalled connection stays stalled until the proxy is dropped.
    StallEachAfter(u64),
    /// Every open and every new connection goes silent, as for `StallEachAfter`.
    StallNow,
    /// Forward everything, but no faster than this many bytes per second over all connections
    /// and both directions together, like one slow shared link (a rate of 0 is taken as 1).
    Throttle { bytes_per_second: u64 },
    /// Forward everything, each chunk this long after it was read, in each direction: a far
    /// link's round trip of at least twice the delay (a chunk behind another waits for it too).
    Delay(Duration),
}

/// A byte-counting proxy; dropping it closes the listener and every connection.
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    target: SocketAddr,
    state: Mutex<State>,
    /// Signalled whenever a connection is closed, for pumps waiting out a stall.
    closed: Condvar,
}

struct State {
    mode: ProxyMode,
    /// Bumped by `set_mode`, so each connection knows to start counting afresh.
    generation: u64,
    /// Bytes reserved across all connections since the mode was set (for `CutAllAfter`).
    mode_bytes: u64,
    /// Whether `CutAllAfter` has fired since the mode was set.
    cut_all_done: bool,
    /// When the throttled link is next free: bytes reserved so far in `Throttle` are sent by
    /// then. Cleared by `set_mode`.
    throttle_free_at: Option<Instant>,
    bytes_up: u64,
    bytes_down: u64,
    /// The most bytes (both ways) one connection has carried since the counters were reset.
    busiest: u64,
    connections: u64,
    /// Connections closed because a mode's limit was reached (or a zero limit was set).
    cuts: u64,
    /// Connections that went silent under a stall mode.
    stalls: u64,
    next_id: u64,
    links: HashMap<u64, Link>,
    stopping: bool,
}

/// One proxied connection, as the pumps and the proxy see it.
struct Link {
    /// Clones of the two sockets, kept to shut them down from anywhere.
    client: TcpStream,
    server: TcpStream,
    generation: u64,
    /// Bytes reserved in both directions since `generation` began.
    carried: u64,
    /// Bytes written in both directions since the counters were reset.
    written: u64,
    stalled: bool,
    closed: bool,
    /// Pumps still running; the link is forgotten when both are done.
    pumps: u8,
}

impl Link {
    /// Closes both sockets in both directions: the peers see EOF, and blocked pumps wake.
    fn shut(&mut self) {
        self.closed = true;
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }
}

#[derive(Clone, Copy, Debug)]
enum Direction {
    Up,
    Down,
}

/// What a pump does once it has written its allowance.
enum Next {
    Continue,
    /// This link reached its limit: shut it.
    Cut,
    /// The total reached its limit: shut every link marked closed at that moment.
    CutAll,
    /// Wait without reading until the link is closed.
    Stall,
    /// Someone else closed the link.
    Stop,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards each connection to
    /// 127.0.0.1:`target_port`, in [`ProxyMode::Pass`].
    pub fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .unwrap_or_else(|error| panic!("proxy cannot listen on 127.0.0.1: {error}"));
        let port = listener.local_addr().expect("bound listener").port();
        let shared = Arc::new(Shared {
            target: SocketAddr::from(([127, 0, 0, 1], target_port)),
            state: Mutex::new(State {
                mode: ProxyMode::Pass,
                generation: 0,
                mode_bytes: 0,
                cut_all_done: false,
                throttle_free_at: None,
                bytes_up: 0,
                bytes_down: 0,
                busiest: 0,
                connections: 0,
                cuts: 0,
                stalls: 0,
                next_id: 0,
                links: HashMap::new(),
                stopping: false,
            }),
            closed: Condvar::new(),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || accept_loop(listener, shared))
        };
        Proxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Bytes forwarded from clients to the server.
    pub fn bytes_up(&self) -> u64 {
        self.shared.lock().bytes_up
    }

    /// Bytes forwarded from the server to clients.
    pub fn bytes_down(&self) -> u64 {
        self.shared.lock().bytes_down
    }

    /// The most bytes (both ways) any one connection has carried since the counters were reset.
    pub fn busiest_connection(&self) -> u64 {
        self.shared.lock().busiest
    }

    pub fn bytes_total(&self) -> u64 {
        let state = self.shared.lock();
        state.bytes_up + state.bytes_down
    }

    /// Connections accepted.
    pub fn connections(&self) -> u64 {
        self.shared.lock().connections
    }

    /// Connections the proxy closed because a cut mode's limit was reached (each counted
    /// once), since the start or the last `reset_counters`.
    pub fn cuts(&self) -> u64 {
        self.shared.lock().cuts
    }

    /// Connections that went silent under a stall mode (each counted once), since the start or
    /// the last `reset_counters`.
    pub fn stalls(&self) -> u64 {
        self.shared.lock().stalls
    }

    /// Zeroes the byte, connection, cut and stall counters (not the mode's own count).
    pub fn reset_counters(&self) {
        let mut state = self.shared.lock();
        state.bytes_up = 0;
        state.bytes_down = 0;
        state.busiest = 0;
        for link in state.links.values_mut() {
            link.written = 0;
        }
        state.connections = 0;
        state.cuts = 0;
        state.stalls = 0;
    }

    /// Switches mode for new and open connections; limits count from now.
    pub fn set_mode(&self, mode: ProxyMode) {
        let mut state = self.shared.lock();
        state.mode = mode;
        state.generation += 1;
        state.mode_bytes = 0;
        state.cut_all_done = false;
        state.throttle_free_at = None;
        // Zero budgets act at once rather than waiting for the next byte.
        match mode {
            ProxyMode::StallNow | ProxyMode::StallEachAfter(0) => {
                let mut stalled = 0;
                for link in state.links.values_mut() {
                    if !link.stalled && !link.closed {
                        stalled += 1;
                    }
                    link.stalled = true;
                }
                state.stalls += stalled;
            }
            ProxyMode::CutEachAfter(0) | ProxyMode::CutAllAfter(0) => {
                state.cut_all_done = mode == ProxyMode::CutAllAfter(0);
                let mut cut = 0;
                for link in state.links.values_mut() {
                    if !link.closed {
                        cut += 1;
                    }
                    link.shut();
                }
                state.cuts += cut;
                self.shared.closed.notify_all();
            }
            _ => {}
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.stopping = true;
            for link in state.links.values_mut() {
                link.shut();
            }
            self.shared.closed.notify_all();
        }
        // Wake the acceptor, which then sees `stopping` and returns, closing the listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking pump must not take every later assertion down with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.lock().stopping {
            return;
        }
        let client = match client {
            Ok(client) => client,
            Err(_) => {
                // Out of descriptors or similar: do not spin.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        shared.lock().connections += 1;
        let server = match TcpStream::connect_timeout(&shared.target, Duration::from_secs(5)) {
            Ok(server) => server,
            // Nothing listens behind the proxy: the client sees its connection close.
            Err(_) => continue,
        };
        // Small writes (keepalives, acknowledgements) must not wait on Nagle's algorithm.
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(client_copy), Ok(server_copy)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        let id = {
            let mut state = shared.lock();
            if state.stopping {
                return;
            }
            let id = state.next_id;
            state.next_id += 1;
            let stalled = matches!(
                state.mode,
                ProxyMode::StallNow | ProxyMode::StallEachAfter(0)
            );
            if stalled {
                state.stalls += 1;
            }
            let link = Link {
                client: client_copy,
                server: server_copy,
                generation: state.generation,
                carried: 0,
                written: 0,
                stalled,
                closed: false,
                pumps: 2,
            };
            state.links.insert(id, link);
            id
        };
        let (Ok(client_reader), Ok(server_reader)) = (client.try_clone(), server.try_clone())
        else {
            let mut state = shared.lock();
            if let Some(mut link) = state.links.remove(&id) {
                link.shut();
            }
            continue;
        };
        for (source, sink, direction) in [
            (client_reader, server, Direction::Up),
            (server_reader, client, Direction::Down),
        ] {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                pump(&shared, id, source, sink, direction);
                let mut state = shared.lock();
                if let Some(link) = state.links.get_mut(&id) {
                    link.pumps -= 1;
                    if link.pumps == 0 {
                        state.links.remove(&id);
                    }
                }
            });
        }
    }
}

/// Forwards `source` to `sink` for link `id` until the link ends, following the mode.
fn pump(
    shared: &Shared,
    id: u64,
    mut source: TcpStream,
    mut sink: TcpStream,
    direction: Direction,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        // A stalled link is not read at all, so that the sender's TCP window fills up.
        if shared.lock().links.get(&id).is_none_or(|link| link.stalled) {
            wait_until_closed(shared, id);
            return;
        }
        let count = match source.read(&mut buffer) {
            Ok(count) => count,
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                close(shared, id);
                return;
            }
        };
        if count == 0 {
            end_of_stream(shared, id, &sink);
            return;
        }
        let (allowed, next, pace) = reserve(shared, id, count);
        if let Some(until) = pace {
            // Throttled: these bytes leave when the shared link has carried the ones before.
            // Delayed: they leave once the link's delay has passed.
            thread::sleep(until.saturating_duration_since(Instant::now()));
        }
        let mut written = 0;
        while written < allowed {
            match sink.write(&buffer[written..allowed]) {
                Ok(0) => break,
                Ok(wrote) => {
                    written += wrote;
                    let mut state = shared.lock();
                    match direction {
                        Direction::Up => state.bytes_up += wrote as u64,
                        Direction::Down => state.bytes_down += wrote as u64,
                    }
                    let carried = state.links.get_mut(&id).map_or(0, |link| {
                        link.written += wrote as u64;
                        link.written
                    });
                    state.busiest = state.busiest.max(carried);
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if written < allowed {
            close(shared, id);
            return;
        }
        match next {
            Next::Continue => {}
            Next::Cut => {
                close(shared, id);
                return;
            }
            Next::CutAll => {
                let mut state = shared.lock();
                for link in state.links.values_mut().filter(|link| link.closed) {
                    link.shut();
                }
                shared.closed.notify_all();
                return;
            }
            Next::Stall => {
                wait_until_closed(shared, id);
                return;
            }
            Next::Stop => return,
        }
    }
}

/// Decides how many of the `count` bytes just read may be forwarded, what comes after, and
/// (when throttled) the moment before which they must not be written.
fn reserve(shared: &Shared, id: u64, count: usize) -> (usize, Next, Option<Instant>) {
    let (allowed, next) = reserve_bytes(shared, id, count);
    if !matches!(next, Next::Continue) || allowed == 0 {
        return (allowed, next, None);
    }
    let mut state = shared.lock();
    let now = Instant::now();
    let bytes_per_second = match state.mode {
        ProxyMode::Throttle { bytes_per_second } => bytes_per_second,
        ProxyMode::Delay(delay) => return (allowed, next, Some(now + delay)),
        _ => return (allowed, next, None),
    };
    let start = state.throttle_free_at.map_or(now, |free| free.max(now));
    let takes = Duration::from_secs_f64(allowed as f64 / bytes_per_second.max(1) as f64);
    state.throttle_free_at = Some(start + takes);
    (allowed, next, Some(start + takes))
}

fn reserve_bytes(shared: &Shared, id: u64, count: usize) -> (usize, Next) {
    let mut guard = shared.lock();
    let state = &mut *guard;
    let Some(link) = state.links.get_mut(&id) else {
        return (0, Next::Stop);
    };
    if link.closed {
        return (0, Next::Stop);
    }
    if link.stalled {
        return (0, Next::Stall);
    }
    if link.generation != state.generation {
        link.generation = state.generation;
        link.carried = 0;
    }
    let wanted = count as u64;
    match state.mode {
        ProxyMode::Pass | ProxyMode::Throttle { .. } | ProxyMode::Delay(_) => {
            (count, Next::Continue)
        }
        ProxyMode::CutEachAfter(limit) | ProxyMode::StallEachAfter(limit) => {
            let allowed = min(wanted, limit.saturating_sub(link.carried));
            link.carried += allowed;
            let next = if link.carried < limit {
                Next::Continue
            } else if matches!(state.mode, ProxyMode::CutEachAfter(_)) {
                // Closed now, so that the other pump forwards nothing more.
                link.closed = true;
                state.cuts += 1;
                Next::Cut
            } else {
                link.stalled = true;
                state.stalls += 1;
                Next::Stall
            };
            (allowed as usize, next)
        }
        ProxyMode::CutAllAfter(_) if state.cut_all_done => (count, Next::Continue),
        ProxyMode::CutAllAfter(limit) => {
            let allowed = min(wanted, limit.saturating_sub(state.mode_bytes));
            state.mode_bytes += allowed;
            if state.mode_bytes < limit {
                return (allowed as usize, Next::Continue);
            }
            // Everything open now is doomed; this pump shuts it all once its bytes are out.
            state.cut_all_done = true;
            let mut cut = 0;
            for link in state.links.values_mut() {
                if !link.closed {
                    cut += 1;
                }
                link.closed = true;
            }
            state.cuts += cut;
            (allowed as usize, Next::CutAll)
        }
        ProxyMode::StallNow => {
            link.stalled = true;
            state.stalls += 1;
            (0, Next::Stall)
        }
    }
}

/// The source said EOF: pass the half-close on, unless the link is silent or gone.
fn end_of_stream(shared: &Shared, id: u64, sink: &TcpStream) {
    let stalled = {
        let state = shared.lock();
        match state.links.get(&id) {
            None => return,
            Some(link) if link.closed => return,
            Some(link) => link.stalled || state.mode == ProxyMode::StallNow,
        }
    };
    if stalled {
        wait_until_closed(shared, id);
    } else {
        let _ = sink.shutdown(Shutdown::Write);
    }
}

/// Shuts link `id` (an error, or its limit reached) and wakes pumps waiting on it.
fn close(shared: &Shared, id: u64) {
    let mut state = shared.lock();
    if let Some(link) = state.links.get_mut(&id) {
        link.shut();
    }
    shared.closed.notify_all();
}

fn wait_until_closed(shared: &Shared, id: u64) {
    let mut state = shared.lock();
    while state.links.get(&id).is_some_and(|link| !link.closed) {
        state = shared
            .closed
            .wait(state)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
    }
}
