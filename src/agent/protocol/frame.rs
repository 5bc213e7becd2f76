//! Frames: the length field and its cap, the message type and request id that open every
//! frame, and the payload's field encoding (`Cursor` to read, `Writer` to write) that every
//! message family uses. Nothing here knows one message from another: a frame is split and its
//! fields are read or written, each checked against the cap its caller names before anything is
//! allocated for it. The errors of every layer of the protocol are [`ProtocolError`]s.

/// The most bytes of file data in one Read answer, Write request or ReadFile answer: 8 MiB.
pub const MAX_DATA: u32 = 8 << 20;
/// The largest frame length (what follows the length field): the largest data plus 64 KiB.
pub const MAX_FRAME: u32 = MAX_DATA + (64 << 10);

/// Bytes in the length field of a frame.
pub const LENGTH_LEN: usize = 4;
/// Bytes of message type and request id that open every frame after its length.
pub const FRAME_HEADER_LEN: usize = 5;

/// Why bytes were refused as a frame or message, or a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("a frame of {length} bytes is over the cap of {MAX_FRAME}")]
    FrameTooLarge { length: u32 },
    #[error("a frame of {length} bytes cannot hold a message type and request id")]
    FrameTooShort { length: u32 },
    #[error("truncated {what}")]
    Truncated { what: &'static str },
    #[error("{count} bytes left over after a {what}")]
    TrailingBytes { what: &'static str, count: usize },
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    #[error("message type {kind:#04x} where {expected} was expected")]
    UnexpectedType { kind: u8, expected: &'static str },
    #[error("{what} of {length} bytes is over the cap of {cap}")]
    TooLong {
        what: &'static str,
        length: u64,
        cap: u64,
    },
    #[error("{count} {what} is over the cap of {cap}")]
    TooMany {
        what: &'static str,
        count: u64,
        cap: u64,
    },
    #[error("invalid {what}: {value}")]
    Invalid { what: &'static str, value: u64 },
    #[error("{what} is not UTF-8")]
    NotUtf8 { what: &'static str },
}

/// One frame, split but not yet decoded: its message type, request id and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: u8,
    pub id: u32,
    pub payload: &'a [u8],
}

/// A frame in two parts: `head` then `data` make the frame. `data` is the file data of a
/// message that carries some, moved in rather than copied behind its fields (empty for the
/// others).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    pub head: Vec<u8>,
    pub data: Vec<u8>,
}

/// A frame body (everything after its length field) as it was read: `head`, the message type,
/// request id and fields, and `bulk`, the file data of a message that carries some, read into a
/// buffer of its own so that it is handed on without being moved. `bulk` is empty for other
/// messages, whose whole body is `head`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameBody {
    pub head: Vec<u8>,
    pub bulk: Vec<u8>,
}

impl FrameBody {
    /// A body read in one piece.
    pub fn whole(body: Vec<u8>) -> FrameBody {
        FrameBody {
            head: body,
            bulk: Vec::new(),
        }
    }

    /// The body in one piece.
    pub fn into_whole(self) -> Vec<u8> {
        let FrameBody { mut head, bulk } = self;
        if bulk.is_empty() {
            return head;
        }
        head.extend_from_slice(&bulk);
        head
    }
}

/// The length a frame's 4-byte length field announces, checked against [`MAX_FRAME`] and the
/// smallest frame, so the caller can allocate it safely.
pub fn frame_length(prefix: [u8; LENGTH_LEN]) -> Result<usize, ProtocolError> {
    let length = u32::from_be_bytes(prefix);
    if length > MAX_FRAME {
        return Err(ProtocolError::FrameTooLarge { length });
    }
    if (length as usize) < FRAME_HEADER_LEN {
        return Err(ProtocolError::FrameTooShort { length });
    }
    Ok(length as usize)
}

impl<'a> Frame<'a> {
    /// Splits a frame body: everything after the length field, exactly as long as it said.
    pub fn parse(body: &'a [u8]) -> Result<Frame<'a>, ProtocolError> {
        let length = u32::try_from(body.len()).unwrap_or(u32::MAX);
        if length > MAX_FRAME {
            return Err(ProtocolError::FrameTooLarge { length });
        }
        let Some((header, payload)) = body.split_first_chunk::<FRAME_HEADER_LEN>() else {
            return Err(ProtocolError::FrameTooShort { length });
        };
        let [kind, id @ ..] = *header;
        Ok(Frame {
            kind,
            id: u32::from_be_bytes(id),
            payload,
        })
    }

    /// The first frame in `bytes`, with how many bytes it takes (length field included); None
    /// when `bytes` holds only the beginning of a frame.
    pub fn split(bytes: &'a [u8]) -> Result<Option<(Frame<'a>, usize)>, ProtocolError> {
        let Some((prefix, rest)) = bytes.split_first_chunk::<LENGTH_LEN>() else {
            return Ok(None);
        };
        let length = frame_length(*prefix)?;
        let Some(body) = rest.get(..length) else {
            return Ok(None);
        };
        Ok(Some((Frame::parse(body)?, LENGTH_LEN + length)))
    }
}

/// A request id as a request or its answer must carry it: never 0, which the hellos and
/// protocol-level errors use.
pub(super) fn request_id(id: u32) -> Result<u32, ProtocolError> {
    if id == 0 {
        Err(ProtocolError::Invalid {
            what: "request id",
            value: 0,
        })
    } else {
        Ok(id)
    }
}

/// A cursor over an untrusted payload: every read is bounds-checked and answers an error
/// instead of panicking.
pub(super) struct Cursor<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(payload: &'a [u8], what: &'static str) -> Self {
        Cursor {
            rest: payload,
            what,
        }
    }

    pub(super) fn take(&mut self, len: usize) -> Result<&'a [u8], ProtocolError> {
        if len > self.rest.len() {
            return Err(ProtocolError::Truncated { what: self.what });
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let Some((head, tail)) = self.rest.split_first_chunk::<N>() else {
            return Err(ProtocolError::Truncated { what: self.what });
        };
        self.rest = tail;
        Ok(*head)
    }

    pub(super) fn u8(&mut self) -> Result<u8, ProtocolError> {
        self.array::<1>().map(|[byte]| byte)
    }

    pub(super) fn u16(&mut self) -> Result<u16, ProtocolError> {
        self.array().map(u16::from_be_bytes)
    }

    pub(super) fn u32(&mut self) -> Result<u32, ProtocolError> {
        self.array().map(u32::from_be_bytes)
    }

    pub(super) fn u64(&mut self) -> Result<u64, ProtocolError> {
        self.array().map(u64::from_be_bytes)
    }

    pub(super) fn i64(&mut self) -> Result<i64, ProtocolError> {
        self.array().map(i64::from_be_bytes)
    }

    /// One byte that must be 0 or 1.
    pub(super) fn flag(&mut self, what: &'static str) -> Result<bool, ProtocolError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(ProtocolError::Invalid {
                what,
                value: u64::from(other),
            }),
        }
    }

    /// A u32 count checked against `cap` before anything is read or allocated for it.
    pub(super) fn count(&mut self, what: &'static str, cap: usize) -> Result<usize, ProtocolError> {
        let count = self.u32()?;
        if count as usize > cap {
            return Err(ProtocolError::TooMany {
                what,
                count: u64::from(count),
                cap: cap as u64,
            });
        }
        Ok(count as usize)
    }

    /// A length-prefixed byte string of at most `cap` bytes.
    pub(super) fn bytes(
        &mut self,
        what: &'static str,
        cap: usize,
    ) -> Result<&'a [u8], ProtocolError> {
        let len = self.u32()?;
        if len as usize > cap {
            return Err(ProtocolError::TooLong {
                what,
                length: u64::from(len),
                cap: cap as u64,
            });
        }
        self.take(len as usize)
    }

    /// A length-prefixed UTF-8 string of at most `cap` bytes.
    pub(super) fn string(
        &mut self,
        what: &'static str,
        cap: usize,
    ) -> Result<String, ProtocolError> {
        let bytes = self.bytes(what, cap)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ProtocolError::NotUtf8 { what })
    }

    pub(super) fn option<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, ProtocolError>,
    ) -> Result<Option<T>, ProtocolError> {
        if self.flag("option flag")? {
            read(self).map(Some)
        } else {
            Ok(None)
        }
    }

    /// How many bytes of the payload are left to read.
    pub(super) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Checks that the whole payload was read.
    /// The length field of a message's file data whose bytes came apart from its fields
    /// (`bulk`, see [`FrameBody`]): it must say `bulk`'s length, within `cap`.
    pub(super) fn bulk_length(
        &mut self,
        what: &'static str,
        bulk: &[u8],
        cap: usize,
    ) -> Result<(), ProtocolError> {
        let length = self.u32()? as usize;
        if length > cap {
            return Err(ProtocolError::TooLong {
                what,
                length: length as u64,
                cap: cap as u64,
            });
        }
        // The errors a frame read in one piece gets: its payload ends early, or goes on.
        match length.cmp(&bulk.len()) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Greater => Err(ProtocolError::Truncated { what: self.what }),
            std::cmp::Ordering::Less => Err(ProtocolError::TrailingBytes {
                what: self.what,
                count: bulk.len() - length,
            }),
        }
    }

    pub(super) fn finish(self) -> Result<(), ProtocolError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::TrailingBytes {
                what: self.what,
                count: self.rest.len(),
            })
        }
    }
}

/// Builds one frame: the length is filled in by [`Writer::finish`].
pub(super) struct Writer {
    buffer: Vec<u8>,
}

impl Writer {
    pub(super) fn new(kind: u8, id: u32, capacity: usize) -> Self {
        let mut buffer = Vec::with_capacity(LENGTH_LEN + FRAME_HEADER_LEN + capacity);
        buffer.extend_from_slice(&[0; LENGTH_LEN]);
        buffer.push(kind);
        buffer.extend_from_slice(&id.to_be_bytes());
        Writer { buffer }
    }

    pub(super) fn u8(&mut self, value: u8) {
        self.buffer.push(value);
    }

    pub(super) fn u16(&mut self, value: u16) {
        self.buffer.extend_from_slice(&value.to_be_bytes());
    }

    pub(super) fn u32(&mut self, value: u32) {
        self.buffer.extend_from_slice(&value.to_be_bytes());
    }

    pub(super) fn u64(&mut self, value: u64) {
        self.buffer.extend_from_slice(&value.to_be_bytes());
    }

    pub(super) fn i64(&mut self, value: i64) {
        self.buffer.extend_from_slice(&value.to_be_bytes());
    }

    /// Bytes written as they are, without a length (a hash, a payload made elsewhere).
    pub(super) fn raw(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    pub(super) fn flag(&mut self, value: bool) {
        self.u8(u8::from(value));
    }

    pub(super) fn count(
        &mut self,
        what: &'static str,
        count: usize,
        cap: usize,
    ) -> Result<(), ProtocolError> {
        if count > cap {
            return Err(ProtocolError::TooMany {
                what,
                count: count as u64,
                cap: cap as u64,
            });
        }
        // cap ≤ u32::MAX for every caller, so the count fits.
        self.u32(count as u32);
        Ok(())
    }

    pub(super) fn bytes(
        &mut self,
        what: &'static str,
        data: &[u8],
        cap: usize,
    ) -> Result<(), ProtocolError> {
        if data.len() > cap {
            return Err(ProtocolError::TooLong {
                what,
                length: data.len() as u64,
                cap: cap as u64,
            });
        }
        // cap ≤ MAX_DATA, so the length fits a u32.
        self.u32(data.len() as u32);
        self.buffer.extend_from_slice(data);
        Ok(())
    }

    pub(super) fn option<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match value {
            Some(value) => {
                self.flag(true);
                write(self, value);
            }
            None => self.flag(false),
        }
    }

    /// A frame whose payload is one u64 (a handle).
    pub(super) fn single_u64(kind: u8, id: u32, value: u64) -> Self {
        let mut out = Writer::new(kind, id, 8);
        out.u64(value);
        out
    }

    /// The whole frame, length field included; refused when over [`MAX_FRAME`].
    pub(super) fn finish(self) -> Result<Vec<u8>, ProtocolError> {
        self.finish_before(0)
    }

    /// The frame up to a tail of `tail` bytes sent after it, the length field counting both;
    /// refused when the whole is over [`MAX_FRAME`].
    pub(super) fn finish_before(mut self, tail: usize) -> Result<Vec<u8>, ProtocolError> {
        let length = (self.buffer.len() - LENGTH_LEN).saturating_add(tail);
        let Ok(length) = u32::try_from(length) else {
            return Err(ProtocolError::FrameTooLarge { length: u32::MAX });
        };
        if length > MAX_FRAME {
            return Err(ProtocolError::FrameTooLarge { length });
        }
        self.buffer[..LENGTH_LEN].copy_from_slice(&length.to_be_bytes());
        Ok(self.buffer)
    }
}
