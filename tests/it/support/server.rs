//! What the SSH servers the harness runs ([`super::Sshd`], [`super::Dropbear`]) share about
//! their process: a free port of 127.0.0.1 (another one if something takes it first), waiting
//! until the server listens, and stopping it with SIGTERM, then SIGKILL if it lingers.

use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::sshd::free_port;

/// Fresh ports to try when another process takes the chosen one before the server binds it.
const PORT_ATTEMPTS: usize = 5;
/// How long a server may take to start listening.
pub(super) const START_LIMIT: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM before it gets SIGKILL.
const STOP_LIMIT: Duration = Duration::from_secs(3);

/// How starting a server on one port went.
pub(super) enum Startup {
    /// It listens; this is its process.
    Ready(Child),
    /// It exited because the port was taken: try another.
    PortTaken,
    /// It failed otherwise: the panic message.
    Failed(String),
}

/// Starts a server on a free port with `spawn`, trying other ports while the chosen one turns
/// out taken; returns the port and the server's process. Panics with `report()` if every
/// attempt found its port taken.
pub(super) fn start_on_free_port(
    server: &str,
    mut spawn: impl FnMut(u16) -> Startup,
    report: impl FnOnce() -> String,
) -> (u16, Child) {
    let mut attempts = Vec::new();
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port();
        match spawn(port) {
            Startup::Ready(child) => return (port, child),
            Startup::PortTaken => attempts.push(port),
            Startup::Failed(report) => panic!("{report}"),
        }
    }
    panic!(
        "{server} could not bind any of the ports {attempts:?}\n{}",
        report()
    );
}

/// Waits up to [`START_LIMIT`] until the just started `child` is `listening()` on `port`. If it
/// exits first, `port_taken(status)` tells whether that was because of the port; `report()`
/// is what the panic message of a failure shows. A server that never listens is stopped.
pub(super) fn wait_until_listening(
    server: &str,
    child: Child,
    port: u16,
    mut listening: impl FnMut() -> bool,
    port_taken: impl FnOnce(ExitStatus) -> bool,
    report: impl Fn() -> String,
) -> Startup {
    let mut child = Some(child);
    let deadline = Instant::now() + START_LIMIT;
    loop {
        let running = child.as_mut().expect("stopped only on return");
        if let Ok(Some(status)) = running.try_wait() {
            if port_taken(status) {
                return Startup::PortTaken;
            }
            return Startup::Failed(format!(
                "{server} exited ({status}) instead of listening on port {port}\n{}",
                report()
            ));
        }
        if listening() {
            return Startup::Ready(child.take().expect("still there"));
        }
        if Instant::now() >= deadline {
            stop(&mut child);
            return Startup::Failed(format!(
                "{server} did not listen on port {port} within {START_LIMIT:?}\n{}",
                report()
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Stops the server process the harness started, if any: SIGTERM, then SIGKILL if it lingers.
pub(super) fn stop(child: &mut Option<Child>) {
    let Some(mut child) = child.take() else {
        return;
    };
    if let Ok(None) = child.try_wait() {
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_LIMIT;
        while let Ok(None) = child.try_wait() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
    let _ = child.wait();
}
