//! The handshake: the magic the agent writes first, its ServerHello (the versions it speaks and
//! the build it is), the client's ClientHello (the version chosen, [`choose_version`]). Both
//! hellos carry request id 0, and their build strings are capped like any other field.

use super::frame::{Cursor, ProtocolError, Writer};
use super::{Frame, kind};

/// What the agent writes before anything else.
pub const MAGIC: [u8; 8] = *b"XFERAGT\n";
/// The oldest protocol version this build speaks.
pub const PROTOCOL_MIN: u16 = 1;
/// The newest protocol version this build speaks.
pub const PROTOCOL_MAX: u16 = 5;

/// The longest build version string, in bytes.
pub const MAX_BUILD_VERSION: usize = 64;
/// The longest os or arch string of a build, in bytes.
pub const MAX_BUILD_PLATFORM: usize = 32;

/// Which build of xfer an agent is: the agent's version, the BLAKE3 of its executable, and the
/// platform it was built for. The client uses it to decide whether to upload another build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildId {
    /// The crate version, ≤ [`MAX_BUILD_VERSION`] bytes.
    pub version: String,
    /// Plain BLAKE3 of the running executable's bytes.
    pub executable_blake3: [u8; 32],
    /// `std::env::consts::OS`, ≤ [`MAX_BUILD_PLATFORM`] bytes.
    pub os: String,
    /// `std::env::consts::ARCH`, ≤ [`MAX_BUILD_PLATFORM`] bytes.
    pub arch: String,
}

/// The agent's first frame: which versions it speaks and which build it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHello {
    pub min_version: u16,
    pub max_version: u16,
    pub build: BuildId,
}

/// The client's first frame: the version both sides will speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHello {
    pub version: u16,
}

/// The highest version in both ranges `(min, max)`, or None when they do not meet.
pub fn choose_version(ours: (u16, u16), theirs: (u16, u16)) -> Option<u16> {
    let low = ours.0.max(theirs.0);
    let high = ours.1.min(theirs.1);
    (low <= high).then_some(high)
}

fn expect_kind(frame: &Frame<'_>, kind: u8, expected: &'static str) -> Result<(), ProtocolError> {
    if frame.kind == kind {
        Ok(())
    } else {
        Err(ProtocolError::UnexpectedType {
            kind: frame.kind,
            expected,
        })
    }
}

fn expect_hello_id(frame: &Frame<'_>) -> Result<(), ProtocolError> {
    if frame.id == 0 {
        Ok(())
    } else {
        Err(ProtocolError::Invalid {
            what: "hello request id",
            value: u64::from(frame.id),
        })
    }
}

impl ServerHello {
    /// The ServerHello frame (request id 0).
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut out = Writer::new(kind::SERVER_HELLO, 0, 128);
        out.u16(self.min_version);
        out.u16(self.max_version);
        out.bytes(
            "build version",
            self.build.version.as_bytes(),
            MAX_BUILD_VERSION,
        )?;
        out.raw(&self.build.executable_blake3);
        out.bytes("build os", self.build.os.as_bytes(), MAX_BUILD_PLATFORM)?;
        out.bytes("build arch", self.build.arch.as_bytes(), MAX_BUILD_PLATFORM)?;
        out.finish()
    }

    pub fn decode(frame: &Frame<'_>) -> Result<ServerHello, ProtocolError> {
        expect_kind(frame, kind::SERVER_HELLO, "the agent's hello")?;
        expect_hello_id(frame)?;
        let mut input = Cursor::new(frame.payload, "server hello");
        let min_version = input.u16()?;
        let max_version = input.u16()?;
        let version = input.string("build version", MAX_BUILD_VERSION)?;
        let executable_blake3 = input.array()?;
        let os = input.string("build os", MAX_BUILD_PLATFORM)?;
        let arch = input.string("build arch", MAX_BUILD_PLATFORM)?;
        input.finish()?;
        Ok(ServerHello {
            min_version,
            max_version,
            build: BuildId {
                version,
                executable_blake3,
                os,
                arch,
            },
        })
    }
}

impl ClientHello {
    /// The ClientHello frame (request id 0).
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut out = Writer::new(kind::CLIENT_HELLO, 0, 2);
        out.u16(self.version);
        out.finish()
    }

    pub fn decode(frame: &Frame<'_>) -> Result<ClientHello, ProtocolError> {
        expect_kind(frame, kind::CLIENT_HELLO, "the client's hello")?;
        expect_hello_id(frame)?;
        let mut input = Cursor::new(frame.payload, "client hello");
        let version = input.u16()?;
        input.finish()?;
        Ok(ClientHello { version })
    }
}

/// The greeting of an agent speaking versions `min_version..=max_version`: the magic and a
/// ServerHello with a placeholder build. For tests of how clients meet other agents.
#[doc(hidden)]
pub fn test_server_hello(min_version: u16, max_version: u16) -> Vec<u8> {
    let hello = ServerHello {
        min_version,
        max_version,
        build: BuildId {
            version: "0.0.0-test".to_string(),
            executable_blake3: [0; 32],
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
        },
    };
    let mut greeting = MAGIC.to_vec();
    // A fixed hello well under every cap always encodes.
    if let Ok(frame) = hello.encode() {
        greeting.extend_from_slice(&frame);
    }
    greeting
}
