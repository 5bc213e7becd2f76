//! What a server sent first on a stream, and whether the stream ended: what tells a server that
//! does not speak SSH (an HTTP port, a wrong port forward, a TLS service) from a connection that
//! dropped, and an SFTP subsystem with no server behind it (it ends without a byte).
//!
//! The stream is wrapped so that the first bytes read from it are kept (a few hundred: an SSH
//! server's version line comes within them, RFC 4253 allowing some lines before it). When an
//! SSH handshake fails, [`not_ssh`] says whether those bytes hold no SSH version line, and what
//! the server said instead, made printable.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much of what the server sends first is kept.
const KEPT: usize = 512;

/// What a [`Recorded`] stream read first, and whether it ended.
#[derive(Debug, Default)]
pub struct Heard {
    first: Mutex<Vec<u8>>,
    ended: AtomicBool,
}

impl Heard {
    /// The first bytes read (at most a few hundred).
    pub fn first_bytes(&self) -> Vec<u8> {
        self.first
            .lock()
            .map(|first| first.clone())
            .unwrap_or_default()
    }

    /// Whether the stream ended (or failed) without a single byte read.
    pub fn ended_silent(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
            && self
                .first
                .lock()
                .map(|first| first.is_empty())
                .unwrap_or(false)
    }
}

/// A stream that keeps the first `KEPT` bytes read from it, and notes its end.
pub struct Recorded<S> {
    inner: S,
    heard: Arc<Heard>,
}

impl<S> Recorded<S> {
    pub fn new(inner: S) -> (Recorded<S>, Arc<Heard>) {
        let heard = Arc::new(Heard::default());
        (
            Recorded {
                inner,
                heard: heard.clone(),
            },
            heard,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buffer.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(context, buffer);
        match &polled {
            Poll::Ready(Ok(())) if buffer.filled().len() > before => {
                if let Ok(mut first) = self.heard.first.lock()
                    && first.len() < KEPT
                {
                    let new = &buffer.filled()[before..];
                    let room = KEPT - first.len();
                    first.extend_from_slice(&new[..new.len().min(room)]);
                }
            }
            Poll::Ready(_) => self.heard.ended.store(true, Ordering::Relaxed),
            Poll::Pending => {}
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(context, data)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}

/// When the server sent something and none of it is an SSH version line: its first line, made
/// printable and cut short. None for silence (a drop, not another protocol) and for sshd's own
/// words before it drops a connection over its MaxStartups, which is a limit, not a stranger.
pub fn not_ssh(seen: &[u8]) -> Option<String> {
    if seen.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(seen);
    if text.lines().any(|line| line.starts_with("SSH-")) || text.contains("MaxStartups") {
        return None;
    }
    let first = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("");
    let shown: String = crate::terminal::printable(first).chars().take(80).collect();
    Some(shown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn other_protocols_are_told_apart_from_ssh_and_from_silence() {
        assert_eq!(
            not_ssh(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").as_deref(),
            Some("HTTP/1.1 400 Bad Request")
        );
        assert_eq!(
            not_ssh(b"\x15\x03\x01\x00\x02\x02\x50").map(|s| s.is_empty()),
            Some(false)
        );
        assert_eq!(not_ssh(b""), None);
        assert_eq!(not_ssh(b"SSH-2.0-OpenSSH_9.2\r\n"), None);
        // Lines before the version line are allowed.
        assert_eq!(not_ssh(b"Welcome\r\nSSH-2.0-dropbear\r\n"), None);
        assert_eq!(not_ssh(b"Exceeded MaxStartups\r\n"), None);
    }

    #[tokio::test]
    async fn the_first_bytes_read_are_kept_and_passed_on() {
        let data = vec![b'x'; 2000];
        let (mut recorded, heard) = Recorded::new(&data[..]);
        let mut all = Vec::new();
        recorded.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, data);
        assert_eq!(heard.first_bytes().len(), KEPT);
        assert!(!heard.ended_silent());
    }

    /// What tells a missing SFTP server: the stream ended with nothing said. A stream that
    /// carried something (an answer that is not SFTP) is not that.
    #[tokio::test]
    async fn a_stream_that_ends_silent_is_told_from_one_that_spoke() {
        for (content, spoke) in [(&b""[..], false), (&b"hello"[..], true)] {
            let (mut stream, heard) = Recorded::new(content);
            let mut buffer = Vec::new();
            stream.read_to_end(&mut buffer).await.unwrap();
            assert_eq!(buffer, content);
            assert_eq!(heard.ended_silent(), !spoke);
        }
    }
}
