//! [`Remote`] over SFTP (russh-sftp), plus whole-file digests through a fixed exec script.
//!
//! The SFTP subsystem is requested on its own channel and refused cleanly when the server does
//! not offer it (a proxied shell-only endpoint says so in the error), or offers it with no SFTP
//! server behind it (Dropbear without an sftp-server: the channel ends as SFTP starts, told
//! apart from a dropped connection by a round trip on the connection). Every request is bounded
//! in time (a stalled link becomes a transient error), every reply is bounded in size by the
//! packet limit, and a directory listing is capped in entries and in bytes
//! ([`ListingLimits`]), so a hostile server can neither hang xfer nor make it allocate without
//! bound.

use crate::error::{Error, ErrorKind, Result};
use crate::remote::{EntryKind, ListingLimits, Remote, RemoteDigest, RemoteEntry, SetAttributes};
use crate::ssh::connect::{Connection, channel_refused, russh_error};
use crate::ssh::exec::{self, ExecLimits};
use futures::future::join_all;
use russh::ChannelMsg;
use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, Name, OpenFlags, StatusCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// The largest read or write request xfer sends. OpenSSH's sftp-server answers up to 255 KiB
/// and advertises that through limits@openssh.com; we never ask for more than a server says.
const PREFERRED_IO_SIZE: u32 = 255 * 1024;
/// Reply packets larger than this are refused (a little more than the largest read reply).
const MAX_PACKET_LENGTH: u32 = 512 * 1024;
pub use crate::remote::MAX_DIRECTORY_ENTRIES;
/// One SFTP request may take this long before the link is considered stalled.
const REQUEST_TIMEOUT_SECONDS: u64 = 60;

/// The most readdirs of one directory sent before their replies come back.
pub const MAX_READDIRS_AHEAD: usize = 8;

type SftpResult<T> = std::result::Result<T, SftpError>;

/// Whether exec works on this connection, learned on first use.
const EXEC_UNKNOWN: u8 = 0;
const EXEC_ALLOWED: u8 = 1;
const EXEC_REFUSED: u8 = 2;

/// An SFTP session on an authenticated connection.
pub struct SftpRemote {
    session: Arc<RawSftpSession>,
    connection: Arc<Connection>,
    label: String,
    io_size: u32,
    exec: AtomicU8,
}

/// One directory's listing as its readdir replies arrive, held to [`ListingLimits`].
///
/// Readdirs are pipelined: OpenSSH's server answers a hundred entries per reply, so a
/// directory of a thousand would otherwise cost eleven round trips one after another. Each
/// reply takes the next entries of the directory whatever order the server answers in, and
/// every request after the end gets the end again, so the replies of a round hold the whole
/// listing once any of them is the end.
struct Listing<'a> {
    label: &'a str,
    path: &'a str,
    limits: ListingLimits,
    entries: Vec<RemoteEntry>,
    bytes: usize,
}

impl<'a> Listing<'a> {
    fn new(label: &'a str, path: &'a str) -> Self {
        Listing {
            label,
            path,
            limits: ListingLimits::DEFAULT,
            entries: Vec::new(),
            bytes: 0,
        }
    }

    /// Takes a round's replies, in the order sent; true if the directory has ended. What a
    /// request sent after the end fails with is not an error of the listing: some servers
    /// answer a readdir past the end with a failure rather than the end again.
    fn take_round(&mut self, replies: Vec<SftpResult<Name>>) -> Result<bool> {
        let mut ended = false;
        for reply in replies {
            if ended && reply.is_err() {
                continue;
            }
            ended |= self.take(reply)?;
        }
        Ok(ended)
    }

    /// Takes one reply; true if it is the end of the directory.
    fn take(&mut self, reply: SftpResult<Name>) -> Result<bool> {
        let name = match reply {
            Ok(name) => name,
            Err(error) if is_status(&error, StatusCode::Eof) => return Ok(true),
            Err(error) => {
                return Err(sftp_error(
                    self.label,
                    &format!("listing {}", self.path),
                    error,
                ));
            }
        };
        let before = self.entries.len();
        for file in name.files {
            if file.filename == "." || file.filename == ".." {
                continue;
            }
            // Counted before it is kept: one reply may hold hundreds of long names.
            self.bytes = self
                .bytes
                .saturating_add(ListingLimits::entry_bytes(file.filename.len()));
            if let Err(too_large) = self.limits.check(self.entries.len() + 1, self.bytes) {
                return Err(too_large.into_error(self.label, self.path));
            }
            self.entries.push(entry_from(file.filename, &file.attrs));
        }
        // A batch with no entries (empty, or only `.` and `..` again) is taken as the end:
        // OpenSSH never sends one, and a server that did would otherwise keep us listing
        // forever.
        Ok(self.entries.len() == before)
    }
}

/// An open remote file: the SFTP handle and the path (for messages).
#[derive(Debug, Clone)]
pub struct SftpFile {
    handle: String,
    path: Arc<str>,
}

impl SftpRemote {
    /// Starts the SFTP subsystem on a new channel of `connection`.
    pub async fn open(connection: Arc<Connection>) -> Result<SftpRemote> {
        let (session, io_size) = start(&connection).await?;
        let label = connection.label().to_string();
        tracing::debug!(%label, io_size, "SFTP session started");
        Ok(SftpRemote {
            session: Arc::new(session),
            connection,
            label,
            io_size,
            exec: AtomicU8::new(EXEC_UNKNOWN),
        })
    }

    /// The server's expansion of a `~` path (`expand-path@openssh.com`), None where it has
    /// none or refuses.
    pub async fn expand_path(&self, path: &str) -> Option<String> {
        let name = self.call(self.session.expand_path(path)).await.ok()?;
        let expanded = name.files.into_iter().next()?.filename;
        (expanded.starts_with('/') && !expanded.contains('\0')).then_some(expanded)
    }

    pub fn connection(&self) -> &Arc<Connection> {
        &self.connection
    }

    /// Runs one SFTP request, failing it at once if the SSH connection under it has died.
    /// (russh-sftp would otherwise leave it waiting for its full request timeout.)
    async fn call<T>(
        &self,
        request: impl std::future::Future<Output = Result<T, SftpError>>,
    ) -> Result<T, SftpError> {
        tokio::select! {
            result = request => result,
            () = self.connection_closed() => Err(SftpError::UnexpectedBehavior("the SSH connection closed".into())),
        }
    }

    async fn connection_closed(&self) {
        while !self.connection.is_closed() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // Replies that arrived before the end may still be on their way up: let them land.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    /// `count` readdirs of `handle`, sent in order without waiting between them (each is sent
    /// when first polled, and `join_all` polls in order), and their replies in the order sent.
    async fn readdir_round(&self, handle: &str, count: usize) -> Vec<SftpResult<Name>> {
        let round = join_all((0..count).map(|_| self.session.readdir(handle)));
        match self.call(async { Ok(round.await) }).await {
            Ok(replies) => replies,
            Err(closed) => {
                let reason = closed.to_string();
                (0..count)
                    .map(|_| Err(SftpError::UnexpectedBehavior(reason.clone())))
                    .collect()
            }
        }
    }

    /// Closes `handle` without waiting for the answer: nothing waits on it, and a failed
    /// close of a directory handle leaves nothing to undo.
    fn close_later(&self, handle: String) {
        let session = self.session.clone();
        tokio::spawn(async move {
            let _ = session.close(handle).await;
        });
    }

    /// Sends a `posix-rename@openssh.com`, which replaces the target atomically (plain SFTP
    /// rename refuses an existing target on OpenSSH).
    async fn posix_rename(&self, from: &str, to: &str) -> Result<()> {
        let mut data = Vec::with_capacity(8 + from.len() + to.len());
        for text in [from, to] {
            data.extend_from_slice(&(text.len() as u32).to_be_bytes());
            data.extend_from_slice(text.as_bytes());
        }
        match self
            .call(self.session.extended("posix-rename@openssh.com", data))
            .await
        {
            Ok(_) => Ok(()),
            Err(error) => Err(sftp_error(
                &self.label,
                &format!("renaming {from} to {to}"),
                error,
            )),
        }
    }
}

/// Whether SFTP works on `connection`, tried the way a transfer starts it: the subsystem
/// request, then the version exchange. For `xfer doctor`, which must not take a server's word
/// that it has SFTP: Dropbear says yes to the request and only then finds it has no
/// sftp-server to run.
pub async fn check(connection: &Connection) -> Result<()> {
    start(connection).await.map(drop)
}

/// What the server said to a subsystem request.
enum Answer {
    Accepted(crate::ssh::channel::Channel),
    Refused,
    /// The channel closed with no answer (see [`exec::UNANSWERED_ATTEMPTS`]).
    Unanswered,
}

/// Asks for the SFTP subsystem on a new channel.
async fn request_sftp(connection: &Connection) -> Result<Answer> {
    let label = connection.label();
    let mut channel = connection.open_session().await?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(|error| russh_error(label, error))?;
    let answer = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(message) = channel.wait().await {
            match message {
                ChannelMsg::Success => return Some(true),
                ChannelMsg::Failure => return Some(false),
                ChannelMsg::Close | ChannelMsg::Eof => return None,
                _ => {}
            }
        }
        None
    })
    .await
    .map_err(|_| Error::connect(format!("{label}: no answer to the SFTP subsystem request")))?;
    Ok(match answer {
        Some(true) => Answer::Accepted(channel),
        Some(false) => Answer::Refused,
        None => Answer::Unanswered,
    })
}

/// Starts SFTP on a new channel of `connection`: the subsystem request, the version exchange,
/// and the server's limits. Returns the session and the largest read or write to send.
async fn start(connection: &Connection) -> Result<(RawSftpSession, u32)> {
    let label = connection.label();
    let mut attempt = 1;
    let channel = loop {
        match request_sftp(connection).await? {
            Answer::Accepted(channel) => break channel,
            Answer::Unanswered
                if attempt < exec::UNANSWERED_ATTEMPTS && !connection.is_closed() =>
            {
                tracing::debug!(%label, attempt, "the server closed the SFTP channel without answering; trying a new one");
                attempt += 1;
            }
            Answer::Refused | Answer::Unanswered => {
                return Err(Error::remote(format!(
                    "{label}: the server refuses the SFTP subsystem"
                ))
                .with_hint(
                    "if this is a provider's proxied SSH endpoint that only gives a shell, use the box's direct SSH address; xfer doctor ALIAS tells what the login allows",
                )
                .transient(false));
            }
        }
    };
    let config = russh_sftp::client::Config {
        max_packet_len: MAX_PACKET_LENGTH,
        request_timeout_secs: REQUEST_TIMEOUT_SECONDS,
        ..Default::default()
    };
    let (stream, heard) = crate::ssh::greeting::Recorded::new(channel.into_stream());
    let session = RawSftpSession::new_with_config(stream, config);
    session.set_timeout(REQUEST_TIMEOUT_SECONDS);
    if let Err(error) = session.init().await {
        return Err(start_failed(connection, &heard, error).await);
    }
    let mut io_size = PREFERRED_IO_SIZE;
    if let Ok(limits) = session.limits().await {
        // A server's own limits win; zero means "no limit given".
        for limit in [limits.max_read_len, limits.max_write_len] {
            if limit > 0 && limit < u64::from(io_size) {
                io_size = limit as u32;
            }
        }
    } else {
        // Without the extension only 32 KiB is guaranteed by the draft.
        io_size = 32 * 1024;
    }
    Ok((session, io_size.max(4096)))
}

/// What the user can do about a host with no SFTP server.
pub const NO_SFTP_SERVER_HINT: &str = "install an SFTP server on the host (on Debian and Ubuntu: openssh-sftp-server, which Dropbear runs too), or leave out --no-agent so xfer's agent carries the files; xfer doctor ALIAS tells what the login allows";

/// Whether `error` is the one starting SFTP gives on a host with no SFTP server.
pub fn is_no_sftp_server(error: &Error) -> bool {
    error.kind() == ErrorKind::Remote && error.hint() == Some(NO_SFTP_SERVER_HINT)
}

/// Why the version exchange that starts SFTP failed.
///
/// A server that accepts the subsystem request and then ends the channel without a byte has no
/// SFTP server to run (Dropbear without one runs a fixed path that is not there): a fault of
/// the host that no retry cures. A connection that dropped at that moment ends the channel the
/// same way, and is worth a retry. So the connection is asked: a channel opened (and closed) on
/// it is a round trip, which a dead connection cannot make. A timeout, or an answer that is
/// not SFTP, is what it says.
async fn start_failed(
    connection: &Connection,
    heard: &crate::ssh::greeting::Heard,
    error: SftpError,
) -> Error {
    let label = connection.label();
    let ended_silent = heard.ended_silent();
    if !ended_silent
        || matches!(
            error,
            SftpError::Status(_) | SftpError::Timeout | SftpError::Limited(_)
        )
        || !connection_answers(connection).await
    {
        return sftp_error(label, "starting SFTP", error);
    }
    tracing::debug!(%label, %error, "the SFTP channel ended as it started");
    Error::remote(format!(
        "{label}: no SFTP server on the host (it accepts the SFTP subsystem, then ends it before answering)"
    ))
    .with_hint(NO_SFTP_SERVER_HINT)
    .transient(false)
}

/// Whether the SSH connection is alive: a session channel opens on it (then closes).
async fn connection_answers(connection: &Connection) -> bool {
    if connection.is_closed() {
        return false;
    }
    match connection.open_session().await {
        Ok(channel) => {
            let _ = channel.close().await;
            !connection.is_closed()
        }
        Err(_) => false,
    }
}

/// Maps an SFTP failure to an xfer error: a status from the server is a remote error
/// (permanent), a timeout or a dropped session is a connection error (transient).
pub fn sftp_error(label: &str, action: &str, error: SftpError) -> Error {
    match error {
        SftpError::Status(status) => {
            let what = match status.status_code {
                StatusCode::NoSuchFile => "no such file or directory".to_string(),
                StatusCode::PermissionDenied => "permission denied".to_string(),
                StatusCode::OpUnsupported => "operation not supported by the server".to_string(),
                code => format!(
                    "{code}: {}",
                    crate::terminal::printable(&status.error_message)
                ),
            };
            let error = Error::remote(format!("{label}: {action}: {what}"));
            if status.status_code == StatusCode::Failure {
                // OpenSSH's generic failure is also what a full disk looks like.
                error.with_hint("the remote may be out of disk space or quota (xfer doctor ALIAS --path PATH shows free space)")
            } else {
                error
            }
        }
        SftpError::Timeout => Error::connect(format!(
            "{label}: {action}: the server did not answer within {REQUEST_TIMEOUT_SECONDS} s"
        )),
        SftpError::Limited(text) => Error::remote(format!("{label}: {action}: {text}")),
        other => Error::connect(format!("{label}: {action}: SFTP session failed: {other}")),
    }
}

fn is_status(error: &SftpError, code: StatusCode) -> bool {
    matches!(error, SftpError::Status(status) if status.status_code == code)
}

/// File type bits of a POSIX mode.
const TYPE_MASK: u32 = 0o170000;
const TYPE_REGULAR: u32 = 0o100000;
const TYPE_DIRECTORY: u32 = 0o040000;
const TYPE_SYMLINK: u32 = 0o120000;

/// SFTP v3 attributes for a change: both times set together, as v3 does.
fn sftp_attributes(attributes: SetAttributes) -> FileAttributes {
    let mtime = attributes
        .mtime
        .map(|mtime| mtime.clamp(0, i64::from(u32::MAX)) as u32);
    FileAttributes {
        size: attributes.size,
        permissions: attributes.mode,
        atime: mtime,
        mtime,
        ..Default::default()
    }
}

/// The SFTP v3 ATTRS encoding (flags, then the fields present), for extended requests that
/// carry attributes.
fn encode_attributes(out: &mut Vec<u8>, attributes: &FileAttributes) {
    const SIZE: u32 = 0x1;
    const PERMISSIONS: u32 = 0x4;
    const TIMES: u32 = 0x8;
    let times = attributes.atime.zip(attributes.mtime);
    let mut flags = 0;
    if attributes.size.is_some() {
        flags |= SIZE;
    }
    if attributes.permissions.is_some() {
        flags |= PERMISSIONS;
    }
    if times.is_some() {
        flags |= TIMES;
    }
    out.extend_from_slice(&flags.to_be_bytes());
    if let Some(size) = attributes.size {
        out.extend_from_slice(&size.to_be_bytes());
    }
    if let Some(permissions) = attributes.permissions {
        out.extend_from_slice(&permissions.to_be_bytes());
    }
    if let Some((atime, mtime)) = times {
        out.extend_from_slice(&atime.to_be_bytes());
        out.extend_from_slice(&mtime.to_be_bytes());
    }
}

/// Whether an open file's attributes are those its name showed just before the open: SFTP v3
/// carries no inode number, so owner, group, size and mode stand in for one. Not the times:
/// the other connections writing the same file (a large file's lanes) change them, never its
/// size, which is set before any block is written.
fn same_file_attributes(before: &FileAttributes, opened: &FileAttributes) -> bool {
    before.uid == opened.uid
        && before.gid == opened.gid
        && before.size == opened.size
        && before.permissions == opened.permissions
}

fn entry_from(name: String, attributes: &FileAttributes) -> RemoteEntry {
    let permissions = attributes.permissions.unwrap_or(0);
    let kind = match permissions & TYPE_MASK {
        TYPE_REGULAR => EntryKind::File,
        TYPE_DIRECTORY => EntryKind::Directory,
        TYPE_SYMLINK => EntryKind::Symlink,
        _ => EntryKind::Special,
    };
    RemoteEntry {
        name,
        kind,
        size: attributes.size.unwrap_or(0),
        mtime: i64::from(attributes.mtime.unwrap_or(0)),
        mode: permissions & 0o7777,
    }
}

/// The fixed script that hashes one file; the path arrives on stdin, whole (any bytes but NUL),
/// so nothing of it is ever parsed by the remote shell. OpenSSL comes before coreutils'
/// sha256sum, which does not use the CPU's SHA instructions and is several times slower.
const DIGEST_SCRIPT: &str = r#"p=$(cat; printf x); p=${p%x}
[ -f "$p" ] && [ -r "$p" ] || exit 66
if command -v b3sum >/dev/null 2>&1; then
  echo "blake3 $(b3sum < "$p" | cut -c1-64)"
elif command -v openssl >/dev/null 2>&1; then
  echo "sha256 $(openssl dgst -sha256 -r < "$p" | cut -c1-64)"
elif command -v sha256sum >/dev/null 2>&1; then
  echo "sha256 $(sha256sum < "$p" | cut -c1-64)"
else
  exit 69
fi"#;

fn parse_digest(text: &str) -> Option<RemoteDigest> {
    let (kind, hex) = text.trim().split_once(' ')?;
    let bytes = crate::remote::parse_digest_hex(hex)?;
    match kind {
        "blake3" => Some(RemoteDigest::Blake3(bytes)),
        "sha256" => Some(RemoteDigest::Sha256(bytes)),
        _ => None,
    }
}

impl Remote for SftpRemote {
    type File = SftpFile;

    fn is_closed(&self) -> bool {
        self.connection.is_closed()
    }

    fn label(&self) -> &str {
        &self.label
    }

    fn max_io_size(&self) -> u32 {
        self.io_size
    }

    async fn stat(&self, path: &str, follow: bool) -> Result<Option<RemoteEntry>> {
        let result = if follow {
            self.call(self.session.stat(path)).await
        } else {
            self.call(self.session.lstat(path)).await
        };
        match result {
            Ok(attributes) => Ok(Some(entry_from(String::new(), &attributes.attrs))),
            Err(error) if is_status(&error, StatusCode::NoSuchFile) => Ok(None),
            Err(error) => Err(sftp_error(&self.label, &format!("stat {path}"), error)),
        }
    }

    async fn list(&self, path: &str) -> Result<Vec<RemoteEntry>> {
        let handle = self
            .call(self.session.opendir(path))
            .await
            .map_err(|error| sftp_error(&self.label, &format!("listing {path}"), error))?
            .handle;
        let mut listing = Listing::new(&self.label, path);
        // Readdirs are sent in rounds without waiting for each reply (see `Listing`): a round
        // of two covers a directory of one batch and its end; larger ones double the round.
        let mut round = 2;
        let outcome = loop {
            match listing.take_round(self.readdir_round(&handle, round).await) {
                Ok(false) => round = (round * 2).min(MAX_READDIRS_AHEAD),
                Ok(true) => break Ok(()),
                Err(error) => break Err(error),
            }
        };
        self.close_later(handle);
        outcome.map(|()| listing.entries)
    }

    async fn read_link(&self, path: &str) -> Result<String> {
        let name = self
            .call(self.session.readlink(path))
            .await
            .map_err(|error| sftp_error(&self.label, &format!("reading link {path}"), error))?;
        name.files
            .into_iter()
            .next()
            .map(|file| file.filename)
            .ok_or_else(|| {
                Error::remote(format!("{}: reading link {path}: empty answer", self.label))
            })
    }

    async fn open_read(&self, path: &str) -> Result<SftpFile> {
        let handle = self
            .call(
                self.session
                    .open(path, OpenFlags::READ, FileAttributes::default()),
            )
            .await
            .map_err(|error| sftp_error(&self.label, &format!("opening {path}"), error))?;
        Ok(SftpFile {
            handle: handle.handle,
            path: path.into(),
        })
    }

    async fn read_at(&self, file: &SftpFile, offset: u64, length: u32) -> Result<Vec<u8>> {
        let length = length.min(self.io_size);
        match self
            .call(self.session.read(file.handle.as_str(), offset, length))
            .await
        {
            Ok(data) => {
                if data.data.len() > length as usize {
                    return Err(Error::remote(format!(
                        "{}: reading {}: the server sent {} bytes for a {length}-byte read",
                        self.label,
                        file.path,
                        data.data.len()
                    ))
                    .transient(false));
                }
                Ok(data.data)
            }
            Err(error) if is_status(&error, StatusCode::Eof) => Ok(Vec::new()),
            Err(error) => Err(sftp_error(
                &self.label,
                &format!("reading {}", file.path),
                error,
            )),
        }
    }

    async fn open_write(&self, path: &str) -> Result<SftpFile> {
        // SFTP's open follows a final symlink and cannot be told not to. So a missing name is
        // created exclusively (O_EXCL never follows), a symlink or special file is removed
        // first, and an existing file is opened only if the open file's attributes are those
        // the name had just before: a symlink or another file swapped in between shows as
        // another owner, size, mode or time, and is closed unwritten.
        let before = match self.call(self.session.lstat(path)).await {
            Ok(attributes) => Some(attributes.attrs),
            Err(error) if is_status(&error, StatusCode::NoSuchFile) => None,
            Err(error) => return Err(sftp_error(&self.label, &format!("stat {path}"), error)),
        };
        let regular = before.as_ref().is_some_and(|attributes| {
            attributes.permissions.unwrap_or(0) & TYPE_MASK == TYPE_REGULAR
        });
        if before.is_some() && !regular {
            self.remove_file(path).await?;
        }
        let flags = if regular {
            OpenFlags::READ | OpenFlags::WRITE
        } else {
            OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE
        };
        let attributes = FileAttributes {
            permissions: Some(0o600),
            ..Default::default()
        };
        let handle = self
            .call(self.session.open(path, flags, attributes))
            .await
            .map_err(|error| {
                let error = sftp_error(&self.label, &format!("opening {path} for writing"), error);
                if regular {
                    error
                } else {
                    error.with_hint(
                        "the name was taken between two steps: if another account can write that directory, push somewhere only you can write",
                    )
                }
            })?;
        let file = SftpFile {
            handle: handle.handle,
            path: path.into(),
        };
        if let Some(before) = before.filter(|_| regular) {
            let opened = self
                .call(self.session.fstat(file.handle.as_str()))
                .await
                .map(|attributes| attributes.attrs);
            let same = opened
                .as_ref()
                .is_ok_and(|opened| same_file_attributes(&before, opened));
            if !same {
                let _ = self.close(file).await;
                return Err(Error::remote(format!(
                    "{}: {path} changed while it was being opened for writing (another account may be swapping it); not writing through it",
                    self.label
                ))
                .with_hint("push into a directory only you can write")
                .transient(false));
            }
        }
        Ok(file)
    }

    async fn write_at(&self, file: &SftpFile, offset: u64, data: Vec<u8>) -> Result<()> {
        self.call(self.session.write(file.handle.as_str(), offset, data))
            .await
            .map(|_| ())
            .map_err(|error| sftp_error(&self.label, &format!("writing {}", file.path), error))
    }

    async fn sync(&self, file: &SftpFile) -> Result<()> {
        match self.call(self.session.fsync(file.handle.as_str())).await {
            Ok(_) => Ok(()),
            Err(error) if is_status(&error, StatusCode::OpUnsupported) => {
                tracing::debug!(label = %self.label, "the server has no fsync@openssh.com");
                Ok(())
            }
            Err(error) => Err(sftp_error(
                &self.label,
                &format!("syncing {}", file.path),
                error,
            )),
        }
    }

    async fn close(&self, file: SftpFile) -> Result<()> {
        self.call(self.session.close(file.handle))
            .await
            .map(|_| ())
            .map_err(|error| sftp_error(&self.label, &format!("closing {}", file.path), error))
    }

    async fn set_attributes(&self, path: &str, attributes: SetAttributes) -> Result<()> {
        // lsetstat@openssh.com never follows a final symlink; plain setstat does, so without
        // the extension a path that is a symlink when looked at is refused.
        let mut data = Vec::with_capacity(64 + path.len());
        data.extend_from_slice(&(path.len() as u32).to_be_bytes());
        data.extend_from_slice(path.as_bytes());
        encode_attributes(&mut data, &sftp_attributes(attributes));
        match self
            .call(self.session.extended("lsetstat@openssh.com", data))
            .await
        {
            Ok(_) => return Ok(()),
            Err(error) if !is_status(&error, StatusCode::OpUnsupported) => {
                return Err(sftp_error(
                    &self.label,
                    &format!("setting attributes of {path}"),
                    error,
                ));
            }
            Err(_) => {}
        }
        if let Some(entry) = self.stat(path, false).await?
            && entry.kind == EntryKind::Symlink
        {
            return Err(Error::remote(format!(
                "{}: {path} is a symlink; not changing what it points to",
                self.label
            ))
            .transient(false));
        }
        self.call(self.session.setstat(path, sftp_attributes(attributes)))
            .await
            .map(|_| ())
            .map_err(|error| {
                sftp_error(&self.label, &format!("setting attributes of {path}"), error)
            })
    }

    async fn set_file_attributes(&self, file: &SftpFile, attributes: SetAttributes) -> Result<()> {
        self.call(
            self.session
                .fsetstat(file.handle.as_str(), sftp_attributes(attributes)),
        )
        .await
        .map(|_| ())
        .map_err(|error| {
            sftp_error(
                &self.label,
                &format!("setting attributes of {}", file.path),
                error,
            )
        })
    }

    async fn make_directory(&self, path: &str, mode: u32) -> Result<()> {
        let attributes = FileAttributes {
            permissions: Some(mode & 0o7777),
            ..Default::default()
        };
        match self.call(self.session.mkdir(path, attributes)).await {
            Ok(_) => Ok(()),
            Err(error) => match self.stat(path, false).await {
                Ok(Some(entry)) if entry.kind == EntryKind::Directory => Ok(()),
                _ => Err(sftp_error(
                    &self.label,
                    &format!("creating directory {path}"),
                    error,
                )),
            },
        }
    }

    async fn make_symlink(&self, path: &str, target: &str) -> Result<()> {
        // Made under a temporary name and renamed over the final one, so the name is never
        // missing or half-made.
        let temporary = format!("{path}.xfer-link-{}", std::process::id());
        let _ = self.call(self.session.remove(temporary.as_str())).await;
        // OpenSSH's sftp-server swaps SSH_FXP_SYMLINK's arguments: the first is the target.
        self.call(self.session.symlink(target, temporary.as_str()))
            .await
            .map_err(|error| sftp_error(&self.label, &format!("creating symlink {path}"), error))?;
        self.posix_rename(&temporary, path).await
    }

    async fn remove_file(&self, path: &str) -> Result<()> {
        self.call(self.session.remove(path))
            .await
            .map(|_| ())
            .map_err(|error| sftp_error(&self.label, &format!("removing {path}"), error))
    }

    async fn digest(&self, path: &str) -> Result<Option<RemoteDigest>> {
        if self.exec.load(Ordering::Relaxed) == EXEC_REFUSED {
            return Ok(None);
        }
        let limits = ExecLimits {
            max_output: 4096,
            // Generous: reading a very large file through a slow disk takes minutes.
            timeout: Duration::from_secs(3600),
        };
        match exec::run(&self.connection, DIGEST_SCRIPT, path.as_bytes(), limits).await {
            Ok(output) => {
                self.exec.store(EXEC_ALLOWED, Ordering::Relaxed);
                if !output.success() {
                    tracing::debug!(label = %self.label, status = ?output.status, "no remote digest");
                    return Ok(None);
                }
                Ok(parse_digest(&output.stdout_text()))
            }
            // Refused, or no second channel beside this one (sshd MaxSessions 1).
            Err(error) if error.kind() == ErrorKind::Remote || channel_refused(&error) => {
                self.exec.store(EXEC_REFUSED, Ordering::Relaxed);
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_strictly() {
        let hex = "00".repeat(31) + "ff";
        let Some(RemoteDigest::Blake3(bytes)) = parse_digest(&format!("blake3 {hex}\n")) else {
            panic!("not parsed");
        };
        assert_eq!(bytes[31], 0xff);
        assert!(matches!(
            parse_digest(&format!("sha256 {hex}")),
            Some(RemoteDigest::Sha256(_))
        ));
        assert_eq!(parse_digest("sha256 abc"), None);
        assert_eq!(parse_digest(&format!("md5 {hex}")), None);
        assert_eq!(parse_digest(&format!("blake3 {}", "zz".repeat(32))), None);
        assert_eq!(parse_digest(""), None);
    }

    fn batch(names: &[&str]) -> SftpResult<Name> {
        let attributes = FileAttributes {
            size: Some(7),
            permissions: Some(TYPE_REGULAR | 0o644),
            ..FileAttributes::default()
        };
        Ok(Name {
            id: 0,
            files: names
                .iter()
                .map(|name| russh_sftp::protocol::File::new(*name, attributes.clone()))
                .collect(),
        })
    }

    fn status(code: StatusCode) -> SftpResult<Name> {
        Err(SftpError::Status(russh_sftp::protocol::Status {
            id: 0,
            status_code: code,
            error_message: String::new(),
            language_tag: String::new(),
        }))
    }

    fn names<'a>(listing: &'a Listing<'a>) -> Vec<&'a str> {
        listing
            .entries
            .iter()
            .map(|entry| entry.name.as_str())
            .collect()
    }

    #[test]
    fn a_pipelined_listing_gathers_every_batch_until_the_end() {
        let mut listing = Listing::new("host", "/d");
        let round = vec![batch(&[".", "..", "a", "b"]), batch(&["c"])];
        assert!(!listing.take_round(round).expect("taken"), "ended early");
        let round = vec![
            batch(&["d"]),
            batch(&["e", "f"]),
            status(StatusCode::Eof),
            status(StatusCode::Eof),
        ];
        assert!(listing.take_round(round).expect("taken"), "did not end");
        assert_eq!(names(&listing), ["a", "b", "c", "d", "e", "f"]);
        assert!(listing.entries.iter().all(|entry| entry.size == 7));
    }

    #[test]
    fn a_failure_past_the_end_is_not_the_listings() {
        // Some servers answer a readdir after the end with a failure, not the end again.
        let mut listing = Listing::new("host", "/d");
        let round = vec![
            batch(&["a"]),
            status(StatusCode::Eof),
            status(StatusCode::Failure),
            Err(SftpError::UnexpectedBehavior("gone".into())),
        ];
        assert!(listing.take_round(round).expect("taken"));
        assert_eq!(names(&listing), ["a"]);
    }

    #[test]
    fn a_failure_before_the_end_fails_the_listing() {
        let mut listing = Listing::new("host", "/d");
        let round = vec![
            batch(&["a"]),
            status(StatusCode::PermissionDenied),
            status(StatusCode::Eof),
        ];
        let error = listing.take_round(round).expect_err("a failure was taken");
        assert!(error.to_string().contains("listing /d"), "{error}");
    }

    #[test]
    fn a_batch_of_nothing_new_ends_the_listing() {
        // OpenSSH never sends one; a server that did would otherwise be listed forever.
        let mut listing = Listing::new("host", "/d");
        assert!(
            listing
                .take_round(vec![batch(&["a"]), batch(&[".", ".."])])
                .expect("taken")
        );
        assert!(
            Listing::new("host", "/d")
                .take_round(vec![batch(&[])])
                .expect("taken")
        );
    }

    #[test]
    fn a_pipelined_listing_keeps_to_its_caps() {
        let mut listing = Listing::new("host", "/d");
        listing.limits = ListingLimits {
            entries: 3,
            bytes: usize::MAX,
        };
        let round = vec![
            batch(&["a", "b"]),
            batch(&["c", "d"]),
            status(StatusCode::Eof),
        ];
        let error = listing.take_round(round).expect_err("over the cap");
        assert!(error.to_string().contains("more than 3 entries"), "{error}");
        assert_eq!(listing.entries.len(), 3);
    }

    #[test]
    fn the_digest_script_parses() {
        exec::assert_parses(DIGEST_SCRIPT);
    }
}
