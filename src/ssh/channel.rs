//! A session channel of either transport: a channel of the native SSH connection, or an `ssh`
//! process of the system client (`system`).
//!
//! The code that runs commands, SFTP and the agent speaks to [`Channel`] as it would to an SSH
//! channel: requests, data, the messages the other side sends, a byte stream. Both transports
//! give the same messages (russh's [`ChannelMsg`]), so that code has one path.

use crate::ssh::system::{SystemChannel, SystemReader, SystemStream, SystemWriter};
use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A session channel.
pub enum Channel {
    Native(russh::Channel<Msg>),
    System(SystemChannel),
}

fn io_error(error: std::io::Error) -> russh::Error {
    russh::Error::IO(error)
}

impl Channel {
    pub async fn exec(
        &mut self,
        want_reply: bool,
        command: impl Into<Vec<u8>>,
    ) -> Result<(), russh::Error> {
        match self {
            Channel::Native(channel) => channel.exec(want_reply, command).await,
            Channel::System(channel) => channel.exec(want_reply, &command.into()).map_err(io_error),
        }
    }

    pub async fn request_subsystem(
        &mut self,
        want_reply: bool,
        name: &str,
    ) -> Result<(), russh::Error> {
        match self {
            Channel::Native(channel) => channel.request_subsystem(want_reply, name).await,
            Channel::System(channel) => channel
                .request_subsystem(want_reply, name)
                .map_err(io_error),
        }
    }

    /// A terminal of `columns` by `rows` of type `term`, in cooked mode.
    pub async fn request_pty(
        &mut self,
        want_reply: bool,
        term: &str,
        columns: u32,
        rows: u32,
    ) -> Result<(), russh::Error> {
        match self {
            Channel::Native(channel) => {
                channel
                    .request_pty(want_reply, term, columns, rows, 0, 0, &[])
                    .await
            }
            Channel::System(channel) => {
                channel.request_pty(want_reply, term);
                Ok(())
            }
        }
    }

    pub async fn request_shell(&mut self, want_reply: bool) -> Result<(), russh::Error> {
        match self {
            Channel::Native(channel) => channel.request_shell(want_reply).await,
            Channel::System(channel) => channel.request_shell(want_reply).map_err(io_error),
        }
    }

    pub async fn data(&mut self, bytes: &[u8]) -> Result<(), russh::Error> {
        match self {
            Channel::Native(channel) => channel.data(bytes).await,
            Channel::System(channel) => channel.data(bytes).await.map_err(io_error),
        }
    }

    pub async fn wait(&mut self) -> Option<ChannelMsg> {
        match self {
            Channel::Native(channel) => channel.wait().await,
            Channel::System(channel) => channel.wait().await,
        }
    }

    pub async fn close(&self) -> Result<(), russh::Error> {
        match self {
            Channel::Native(channel) => channel.close().await,
            Channel::System(channel) => {
                channel.close();
                Ok(())
            }
        }
    }

    /// Why the transport, not the other side, ended the channel: the system ssh's own message.
    pub fn failure(&self) -> Option<String> {
        match self {
            Channel::Native(_) => None,
            Channel::System(channel) => channel.failure(),
        }
    }

    pub fn split(self) -> (ChannelReader, ChannelWriter) {
        match self {
            Channel::Native(channel) => {
                let (reader, writer) = channel.split();
                (ChannelReader::Native(reader), ChannelWriter::Native(writer))
            }
            Channel::System(channel) => {
                let (reader, writer) = channel.split();
                (ChannelReader::System(reader), ChannelWriter::System(writer))
            }
        }
    }

    pub fn into_stream(self) -> ChannelStream {
        match self {
            Channel::Native(channel) => ChannelStream::Native(channel.into_stream()),
            Channel::System(channel) => ChannelStream::System(channel.into_stream()),
        }
    }
}

/// What a split channel says.
pub enum ChannelReader {
    Native(ChannelReadHalf),
    System(SystemReader),
}

impl ChannelReader {
    pub async fn wait(&mut self) -> Option<ChannelMsg> {
        match self {
            ChannelReader::Native(reader) => reader.wait().await,
            ChannelReader::System(reader) => reader.wait().await,
        }
    }

    /// See [`Channel::failure`].
    pub fn failure(&self) -> Option<String> {
        match self {
            ChannelReader::Native(_) => None,
            ChannelReader::System(reader) => reader.failure(),
        }
    }
}

/// The writing half of a split channel.
pub enum ChannelWriter {
    Native(ChannelWriteHalf<Msg>),
    System(SystemWriter),
}

impl ChannelWriter {
    pub async fn data(&mut self, bytes: &[u8]) -> Result<(), russh::Error> {
        match self {
            ChannelWriter::Native(writer) => writer.data(bytes).await,
            ChannelWriter::System(writer) => writer.data(bytes).await.map_err(io_error),
        }
    }

    pub async fn eof(&mut self) -> Result<(), russh::Error> {
        match self {
            ChannelWriter::Native(writer) => writer.eof().await,
            ChannelWriter::System(writer) => writer.eof().await.map_err(io_error),
        }
    }
}

/// A channel as a byte stream: what the other side writes to read, and its input to write.
pub enum ChannelStream {
    Native(russh::ChannelStream<Msg>),
    System(SystemStream),
}

impl AsyncRead for ChannelStream {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ChannelStream::Native(stream) => Pin::new(stream).poll_read(context, buffer),
            ChannelStream::System(stream) => Pin::new(stream).poll_read(context, buffer),
        }
    }
}

impl AsyncWrite for ChannelStream {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ChannelStream::Native(stream) => Pin::new(stream).poll_write(context, bytes),
            ChannelStream::System(stream) => Pin::new(stream).poll_write(context, bytes),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ChannelStream::Native(stream) => Pin::new(stream).poll_flush(context),
            ChannelStream::System(stream) => Pin::new(stream).poll_flush(context),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ChannelStream::Native(stream) => Pin::new(stream).poll_shutdown(context),
            ChannelStream::System(stream) => Pin::new(stream).poll_shutdown(context),
        }
    }
}
