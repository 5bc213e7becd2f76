//! How `xfer agent` runs as a process: its build identity, its runtime, its exit code, and
//! stdin and stdout made into streams the runtime polls (with the pipes from sshd widened where
//! the system allows).

use super::hashing::hash_whole;
use super::serve_versions;
use crate::agent::protocol::{BuildId, PROTOCOL_MAX, PROTOCOL_MIN};
use std::fs::File;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// This build's identity: the crate version, the plain BLAKE3 of the running executable and the
/// platform.
pub fn own_build_id() -> io::Result<BuildId> {
    build_id_of(&std::env::current_exe()?)
}

/// The identity of `executable` as an agent of this build: the crate version, the plain
/// BLAKE3 of its bytes and this platform.
pub fn build_id_of(executable: &std::path::Path) -> io::Result<BuildId> {
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
        match terminal_streams() {
            Some((reader, writer)) => {
                serve_terminal(reader, writer, build, (PROTOCOL_MIN, newest)).await
            }
            None => {
                let (reader, writer) = stdio();
                serve_versions(reader, writer, build, (PROTOCOL_MIN, newest)).await
            }
        }
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

/// How long the client may take to answer the terminal link's probe.
const LINK_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// When stdin is a terminal (the agent was started through a shell-only endpoint's login,
/// see `terminal_link`), the terminal made raw and polled for both directions, with stderr
/// sent to /dev/null: on a terminal it would land in the middle of the link's frames. None
/// when stdin is no terminal.
fn terminal_streams() -> Option<(Reader, Writer)> {
    use std::os::fd::AsFd;
    let stdin = io::stdin();
    let terminal = stdin.as_fd();
    if !nix::unistd::isatty(terminal).unwrap_or(false) {
        return None;
    }
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stderr(&null);
    }
    if let Ok(mut modes) = nix::sys::termios::tcgetattr(terminal) {
        nix::sys::termios::cfmakeraw(&mut modes);
        let _ = nix::sys::termios::tcsetattr(terminal, nix::sys::termios::SetArg::TCSANOW, &modes);
    }
    let polled = || -> io::Result<(Reader, Writer)> {
        let reading = terminal.try_clone_to_owned()?;
        let writing = io::stdout().as_fd().try_clone_to_owned()?;
        // Both are the same terminal; non-blocking lets the runtime poll it.
        let flags = nix::fcntl::fcntl(&reading, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&reading, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        nix::fcntl::fcntl(&writing, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        Ok((
            Box::new(tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(
                reading,
            )?),
            Box::new(tokio::net::unix::pipe::Sender::from_owned_fd_unchecked(
                writing,
            )?),
        ))
    };
    Some(polled().unwrap_or_else(|_| (Box::new(tokio::io::stdin()), Box::new(tokio::io::stdout()))))
}

/// Serves through a terminal: agrees on the link's encodings, then speaks the protocol inside
/// its frames.
async fn serve_terminal(
    mut reader: Reader,
    mut writer: Writer,
    build: BuildId,
    versions: (u16, u16),
) -> io::Result<()> {
    let agreed = tokio::time::timeout(
        LINK_HANDSHAKE_TIMEOUT,
        crate::terminal_link::handshake::as_agent(&mut reader, &mut writer),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer to the link's probe"))??;
    let reader = crate::terminal_link::LinkReader::new(reader, agreed.read, &agreed.early)?;
    let writer = crate::terminal_link::LinkWriter::new(writer, agreed.write);
    serve_versions(reader, writer, build, versions).await
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

/// What the pipes to and from sshd (and, on the client, to and from the system ssh) are
/// widened to, where the system allows it. Through Linux's default 64 KiB pipe, the two ends
/// take turns every 64 KiB, each waking the other many times per block; a pipe that holds a
/// whole 1 MiB block lets each side move a block per turn.
#[cfg(target_os = "linux")]
const PIPE_SIZE: i32 = 1 << 20;

/// Asks for a [`PIPE_SIZE`] buffer on `fd` and returns the size the pipe has then; a system
/// that refuses (a user over `/proc/sys/fs/pipe-max-size` or over its share of pipe memory)
/// keeps the pipe as it is.
#[cfg(target_os = "linux")]
pub(crate) fn widen_pipe(fd: impl std::os::fd::AsFd) -> Option<i32> {
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

/// Other systems (macOS) have no call to size a pipe: it keeps the system's size.
#[cfg(not(target_os = "linux"))]
pub(crate) fn widen_pipe(_fd: impl std::os::fd::AsFd) -> Option<i32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::protocol::ServerHello;
    use std::fs;

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
}
