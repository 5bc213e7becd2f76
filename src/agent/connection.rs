//! [`Connection`]: where the agent protocol meets a byte stream, for both ends. It owns the
//! buffering of both directions, the magic that opens the agent's output, and the framing:
//! reading a frame checks its length field against the cap before anything is allocated for it,
//! and tells a stream that ended cleanly between frames from one that ended inside a frame;
//! writing queues whole encoded frames and flushes once per burst. What is inside a frame is
//! [`protocol`](super::protocol)'s business, not this module's.
//!
//! The handshake uses the whole [`Connection`]; a session then splits it ([`Connection::split`])
//! into a [`FrameReader`] and a [`FrameWriter`] for the tasks that read and write concurrently.

use super::protocol::{
    EncodedFrame, FrameBody, LENGTH_LEN, MAGIC, ProtocolError, bulk_offset, frame_length,
};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;

/// The buffer of the writing direction: large enough that a burst of small frames is one
/// write to the stream.
pub const STREAM_BUFFER: usize = 256 << 10;

/// The buffer of the reading direction: many small frames per fill. It is small because what
/// it holds of a block's data is copied twice (into it, then out of it), while reads into a
/// block's own buffer from an empty one go straight there.
const READ_BUFFER: usize = 32 << 10;

/// How much of a frame body is allocated ahead of the bytes actually arriving: a block of data
/// and its frame's fields, so a frame carrying a 1 MiB block is one allocation (growing it
/// for its last few bytes copied the whole block).
const READ_STEP: usize = (1 << 20) + (64 << 10);

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The length field announced a frame the protocol refuses (over [`MAX_FRAME`] or too short
    /// for a type and request id): the peer broke the protocol. Nothing was allocated for it.
    ///
    /// [`MAX_FRAME`]: super::protocol::MAX_FRAME
    #[error(transparent)]
    Refused(#[from] ProtocolError),
    /// The stream ended after the first byte of a frame and before its last (`what` says
    /// whether inside the length field or inside the frame itself).
    #[error("the stream ended inside {what}")]
    Truncated { what: &'static str },
    /// The stream failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The start of a stream that should come from an agent.
#[derive(Debug, PartialEq, Eq)]
pub enum Opening {
    /// The agent's [`MAGIC`]: frames follow.
    Magic,
    /// Something else (a shell's or a start script's output): the bytes read instead of the
    /// magic and after it, up to the cap the caller gave, until the stream ended.
    Other(Vec<u8>),
}

/// The reading half: frames from a buffered stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    stream: BufReader<R>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(stream: R) -> Self {
        FrameReader {
            stream: BufReader::with_capacity(READ_BUFFER, stream),
        }
    }

    /// Reads the first bytes of the agent's output: its [`MAGIC`], or whatever came instead,
    /// kept to at most `cap` bytes. A failure while reading what came instead only ends what is
    /// kept (it only goes into a message); a failure before is an error.
    pub async fn read_opening(&mut self, cap: usize) -> io::Result<Opening> {
        let mut head = Vec::with_capacity(MAGIC.len());
        (&mut self.stream)
            .take(MAGIC.len() as u64)
            .read_to_end(&mut head)
            .await?;
        if head == MAGIC {
            return Ok(Opening::Magic);
        }
        let rest = cap.saturating_sub(head.len()) as u64;
        let _ = (&mut self.stream).take(rest).read_to_end(&mut head).await;
        Ok(Opening::Other(head))
    }

    /// Reads one frame body (everything after the length field), the file data of a message
    /// that carries some into a buffer of its own ([`FrameBody`]). `Ok(None)` at a clean end
    /// of the stream, before the first byte of a frame. A length over the cap is refused
    /// before anything is allocated; memory grows with the bytes received, never more than
    /// `READ_STEP` (a block and its fields) ahead of them.
    pub async fn read_frame(&mut self) -> Result<Option<FrameBody>, ReadError> {
        let Some(prefix) = self.read_length_field().await? else {
            return Ok(None);
        };
        let length = frame_length(prefix)?;
        // A frame holds at least its type (checked by frame_length): the type says where
        // its file data, if any, starts.
        let mut head = Vec::new();
        self.read_more(&mut head, 1).await?;
        let split = bulk_offset(head[0])
            .filter(|&offset| offset <= length)
            .unwrap_or(length);
        self.read_more(&mut head, split - 1).await?;
        let mut bulk = Vec::new();
        self.read_more(&mut bulk, length - split).await?;
        Ok(Some(FrameBody { head, bulk }))
    }

    /// The 4 bytes of a length field; None when the stream ends before the first of them.
    async fn read_length_field(&mut self) -> Result<Option<[u8; LENGTH_LEN]>, ReadError> {
        let mut prefix = [0u8; LENGTH_LEN];
        let mut filled = 0;
        while filled < prefix.len() {
            let read = self.stream.read(&mut prefix[filled..]).await?;
            if read == 0 {
                if filled == 0 {
                    return Ok(None);
                }
                return Err(ReadError::Truncated {
                    what: "a frame length",
                });
            }
            filled += read;
        }
        Ok(Some(prefix))
    }

    /// Appends `length` more bytes of a frame body, whose length field was checked against
    /// the cap, to `body`.
    async fn read_more(&mut self, body: &mut Vec<u8>, length: usize) -> Result<(), ReadError> {
        let end = body.len() + length;
        while body.len() < end {
            let step = (end - body.len()).min(READ_STEP);
            body.reserve_exact(step);
            // Into the spare capacity, never past the frame: no zeroing of what is overwritten.
            let read = (&mut self.stream).take(step as u64).read_buf(body).await?;
            if read == 0 {
                return Err(ReadError::Truncated { what: "a frame" });
            }
        }
        Ok(())
    }
}

/// An encoded frame as it is written: in one piece, or in two (a Write request or a Data
/// answer, whose data is not copied behind its fields) written one after the other.
pub trait Outgoing {
    /// The frame's bytes: the first piece, then the second (empty for a frame in one piece).
    fn pieces(&self) -> (&[u8], &[u8]);
}

impl Outgoing for Vec<u8> {
    fn pieces(&self) -> (&[u8], &[u8]) {
        (self, &[])
    }
}

impl Outgoing for EncodedFrame {
    fn pieces(&self) -> (&[u8], &[u8]) {
        (&self.head, &self.data)
    }
}

/// The writing half: frames into a buffered stream, sent on [`FrameWriter::flush`].
#[derive(Debug)]
pub struct FrameWriter<W> {
    stream: BufWriter<W>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(stream: W) -> Self {
        FrameWriter {
            stream: BufWriter::with_capacity(STREAM_BUFFER, stream),
        }
    }

    /// Queues the agent's [`MAGIC`], which opens its output.
    pub async fn write_magic(&mut self) -> io::Result<()> {
        self.stream.write_all(&MAGIC).await
    }

    /// Queues one encoded frame (length field included).
    pub async fn write_frame(&mut self, frame: &impl Outgoing) -> io::Result<()> {
        let (first, second) = frame.pieces();
        self.stream.write_all(first).await?;
        if !second.is_empty() {
            self.stream.write_all(second).await?;
        }
        Ok(())
    }

    /// Writes `first` and every frame already waiting in `queue`, then flushes once: frames
    /// that come together leave together, and the peer never waits on a frame kept back.
    pub async fn write_burst<T: Outgoing>(
        &mut self,
        first: T,
        queue: &mut mpsc::Receiver<T>,
    ) -> io::Result<()> {
        self.write_frame(&first).await?;
        while let Ok(next) = queue.try_recv() {
            self.write_frame(&next).await?;
        }
        self.flush().await
    }

    /// Sends everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.stream.flush().await
    }

    /// Sends everything queued and closes the stream: the peer reads its end.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }
}

/// Both directions of one stream to the peer, framed: what the handshake uses, before a session
/// splits it between the task that reads and the task that writes.
#[derive(Debug)]
pub struct Connection<R, W> {
    reader: FrameReader<R>,
    writer: FrameWriter<W>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Connection<R, W> {
    /// Frames over `reader` (what the peer sends) and `writer` (what it receives), each
    /// buffered.
    pub fn new(reader: R, writer: W) -> Self {
        Connection {
            reader: FrameReader::new(reader),
            writer: FrameWriter::new(writer),
        }
    }

    pub fn reader(&mut self) -> &mut FrameReader<R> {
        &mut self.reader
    }

    pub fn writer(&mut self) -> &mut FrameWriter<W> {
        &mut self.writer
    }

    /// See [`FrameReader::read_frame`].
    pub async fn read_frame(&mut self) -> Result<Option<FrameBody>, ReadError> {
        self.reader.read_frame().await
    }

    /// Queues one frame and sends it with everything queued before it.
    pub async fn send_frame(&mut self, frame: &impl Outgoing) -> io::Result<()> {
        self.writer.write_frame(frame).await?;
        self.writer.flush().await
    }

    /// The two halves, for tasks that read and write at once.
    pub fn split(self) -> (FrameReader<R>, FrameWriter<W>) {
        (self.reader, self.writer)
    }

    /// The writing half alone, once nothing more is to be read.
    pub fn into_writer(self) -> FrameWriter<W> {
        self.writer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::protocol::{MAX_FRAME, Response};

    async fn frames_of(bytes: &'static [u8]) -> Vec<Result<Option<Vec<u8>>, String>> {
        let mut reader = FrameReader::new(bytes);
        let mut read = Vec::new();
        loop {
            let frame = reader
                .read_frame()
                .await
                .map(|body| body.map(FrameBody::into_whole))
                .map_err(|error| error.to_string());
            let done = !matches!(frame, Ok(Some(_)));
            read.push(frame);
            if done {
                return read;
            }
        }
    }

    #[tokio::test]
    async fn a_clean_end_is_told_from_a_truncated_frame() {
        let frame = Response::Done.encode(1).expect("encodable");
        let whole: &'static [u8] = Box::leak([frame.clone(), frame.clone()].concat().into());
        assert_eq!(
            frames_of(whole).await,
            [
                Ok(Some(frame[LENGTH_LEN..].to_vec())),
                Ok(Some(frame[LENGTH_LEN..].to_vec())),
                Ok(None)
            ]
        );
        assert_eq!(frames_of(b"").await, [Ok(None)]);
        let in_length: &'static [u8] = &[0, 0];
        assert_eq!(
            frames_of(in_length).await,
            [Err("the stream ended inside a frame length".to_string())]
        );
        let in_body: &'static [u8] = Box::leak(frame[..frame.len() - 1].to_vec().into());
        assert_eq!(
            frames_of(in_body).await,
            [Err("the stream ended inside a frame".to_string())]
        );
    }

    #[tokio::test]
    async fn lengths_over_the_cap_are_refused_before_the_body() {
        let over: &'static [u8] = Box::leak((MAX_FRAME + 1).to_be_bytes().to_vec().into());
        let mut reader = FrameReader::new(over);
        assert!(matches!(
            reader.read_frame().await,
            Err(ReadError::Refused(ProtocolError::FrameTooLarge { .. }))
        ));
        let short: &'static [u8] = &[0, 0, 0, 4, 1, 2, 3, 4];
        let mut reader = FrameReader::new(short);
        assert!(matches!(
            reader.read_frame().await,
            Err(ReadError::Refused(ProtocolError::FrameTooShort {
                length: 4
            }))
        ));
    }

    #[tokio::test]
    async fn the_opening_is_the_magic_or_what_came_instead() {
        let mut agent = MAGIC.to_vec();
        agent.extend_from_slice(&Response::Done.encode(1).expect("encodable"));
        let agent: &'static [u8] = Box::leak(agent.into());
        let mut reader = FrameReader::new(agent);
        assert_eq!(reader.read_opening(16).await.expect("read"), Opening::Magic);
        assert!(reader.read_frame().await.expect("a frame").is_some());
        let text: &'static [u8] = b"Linux\nx86_64\nmore than the cap";
        let mut reader = FrameReader::new(text);
        assert_eq!(
            reader.read_opening(12).await.expect("read"),
            Opening::Other(b"Linux\nx86_64".to_vec())
        );
    }

    #[tokio::test]
    async fn a_burst_of_frames_is_written_whole_in_order() {
        let (sending, receiving) = tokio::io::duplex(1 << 16);
        let mut writer = FrameWriter::new(sending);
        let (queue, mut waiting) = mpsc::channel(4);
        let frames: Vec<Vec<u8>> = (1..=3)
            .map(|id| {
                Response::Handle(u64::from(id))
                    .encode(id)
                    .expect("encodable")
            })
            .collect();
        for frame in &frames[1..] {
            queue.try_send(frame.clone()).expect("room");
        }
        writer
            .write_burst(frames[0].clone(), &mut waiting)
            .await
            .expect("written");
        writer.shutdown().await.expect("closed");
        let mut reader = FrameReader::new(receiving);
        for frame in &frames {
            let body = reader.read_frame().await.expect("read").expect("a frame");
            assert_eq!(body.into_whole(), frame[LENGTH_LEN..]);
        }
        assert!(reader.read_frame().await.expect("read").is_none());
    }

    #[tokio::test]
    async fn a_blocks_data_is_read_apart_from_its_fields() {
        let data: Vec<u8> = (0..300_000u32).map(|index| index as u8).collect();
        let frame = Response::Data(data.clone()).encode(9).expect("encodable");
        // A Data frame too short to hold a length for its data is read in one piece (and
        // refused by the decoder), never split past its end.
        let short = [&6u32.to_be_bytes()[..], &frame[LENGTH_LEN..LENGTH_LEN + 6]].concat();
        let stream: &'static [u8] = Box::leak([frame.clone(), short.clone()].concat().into());
        let mut reader = FrameReader::new(stream);
        let body = reader.read_frame().await.expect("read").expect("a frame");
        assert_eq!(body.head, frame[LENGTH_LEN..LENGTH_LEN + 9]);
        assert_eq!(body.bulk, data);
        let body = reader.read_frame().await.expect("read").expect("a frame");
        assert_eq!(body.head, short[LENGTH_LEN..]);
        assert!(body.bulk.is_empty());
        assert!(reader.read_frame().await.expect("read").is_none());
    }
}
