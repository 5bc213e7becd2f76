//! A byte stream over a terminal: [`LinkWriter`] frames what is written to it, [`LinkReader`]
//! checks and unframes what is read. Both ends of a link use them, the client on the SSH
//! channel and the agent on its terminal.

use super::frame::{Decoder, Encoder, Encoding, FrameError, MAX_DATA};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much encoded input one read of the terminal takes.
const READ_SIZE: usize = 64 * 1024;

/// A frame that fails its checks means the terminal changed what it carried: the link is as
/// good as dropped (a new one may well be clean), so it reads as a connection that broke, not
/// as a peer that broke the protocol. The request in flight then fails as transient and is
/// retried on a new connection.
fn broken(error: FrameError) -> io::Error {
    tracing::debug!(%error, "the terminal link broke");
    io::Error::new(io::ErrorKind::ConnectionAborted, error)
}

/// Reads frames from `inner` and yields their data.
pub struct LinkReader<R> {
    inner: R,
    decoder: Decoder,
    raw: Vec<u8>,
    decoded: Vec<u8>,
    /// How much of `decoded` was read already.
    consumed: usize,
}

impl<R> LinkReader<R> {
    /// `early` is encoded input already read from `inner` while looking for the link's start.
    pub fn new(inner: R, encoding: Encoding, early: &[u8]) -> io::Result<LinkReader<R>> {
        let mut decoder = Decoder::new(encoding);
        let mut decoded = Vec::new();
        decoder.feed(early, &mut decoded).map_err(broken)?;
        Ok(LinkReader {
            inner,
            decoder,
            raw: vec![0; READ_SIZE],
            decoded,
            consumed: 0,
        })
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for LinkReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.consumed < this.decoded.len() {
                let available = &this.decoded[this.consumed..];
                let length = available.len().min(buffer.remaining());
                buffer.put_slice(&available[..length]);
                this.consumed += length;
                if this.consumed == this.decoded.len() {
                    this.decoded.clear();
                    this.consumed = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut raw = ReadBuf::new(&mut this.raw);
            ready!(Pin::new(&mut this.inner).poll_read(context, &mut raw))?;
            let read = raw.filled();
            if read.is_empty() {
                if this.decoder.in_frame() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the terminal closed in the middle of a frame",
                    )));
                }
                return Poll::Ready(Ok(()));
            }
            let read = read.len();
            this.decoder
                .feed(&this.raw[..read], &mut this.decoded)
                .map_err(broken)?;
        }
    }
}

/// Frames what is written to it and writes the frames to `inner`. Small writes are gathered
/// into one frame until a flush or [`MAX_DATA`] bytes, so callers must flush.
pub struct LinkWriter<W> {
    inner: W,
    encoder: Encoder,
    /// Data not yet framed.
    plain: Vec<u8>,
    /// Frames not yet written to `inner`, from `sent` on.
    encoded: Vec<u8>,
    sent: usize,
}

impl<W> LinkWriter<W> {
    pub fn new(inner: W, encoding: Encoding) -> LinkWriter<W> {
        LinkWriter {
            inner,
            encoder: Encoder::new(encoding),
            plain: Vec::with_capacity(MAX_DATA),
            encoded: Vec::new(),
            sent: 0,
        }
    }
}

impl<W: AsyncWrite + Unpin> LinkWriter<W> {
    /// Writes out every encoded frame; Ready once none is left.
    fn poll_drain(&mut self, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.encoded.len() {
            let written =
                ready!(Pin::new(&mut self.inner).poll_write(context, &self.encoded[self.sent..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += written;
        }
        self.encoded.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    fn frame_plain(&mut self) {
        if !self.plain.is_empty() {
            self.encoder.encode(&self.plain, &mut self.encoded);
            self.plain.clear();
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for LinkWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.plain.len() >= MAX_DATA {
            ready!(this.poll_drain(context))?;
            this.frame_plain();
        }
        let length = data.len().min(MAX_DATA - this.plain.len());
        this.plain.extend_from_slice(&data[..length]);
        if this.plain.len() >= MAX_DATA && this.encoded.is_empty() {
            this.frame_plain();
            // Start sending now; what does not fit waits for the next write or the flush.
            if let Poll::Ready(Err(error)) = this.poll_drain(context) {
                return Poll::Ready(Err(error));
            }
        }
        Poll::Ready(Ok(length))
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(context))?;
        this.frame_plain();
        ready!(this.poll_drain(context))?;
        Pin::new(&mut this.inner).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(context))?;
        Pin::new(&mut self.get_mut().inner).poll_shutdown(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_stream_crosses_a_pipe_in_both_encodings() {
        for encoding in [Encoding::Escaped, Encoding::Base64] {
            let (near, far) = tokio::io::duplex(4096);
            let data: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
            let sent = data.clone();
            let writer = tokio::spawn(async move {
                let mut writer = LinkWriter::new(near, encoding);
                for piece in sent.chunks(1000) {
                    writer.write_all(piece).await.unwrap();
                }
                writer.shutdown().await.unwrap();
            });
            let mut reader = LinkReader::new(far, encoding, b"").unwrap();
            let mut received = Vec::new();
            reader.read_to_end(&mut received).await.unwrap();
            writer.await.unwrap();
            assert_eq!(received, data);
        }
    }

    #[tokio::test]
    async fn a_corrupted_stream_is_an_error_not_data() {
        let mut wire = Vec::new();
        Encoder::new(Encoding::Escaped).encode(b"some data", &mut wire);
        wire[3] = b'X';
        let mut reader = LinkReader::new(&wire[..], Encoding::Escaped, b"").unwrap();
        let mut received = Vec::new();
        let error = reader.read_to_end(&mut received).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);
        assert!(received.is_empty());
    }
}
