//! A byte stream through an interactive terminal, for hosts that give nothing else.
//!
//! Some SSH endpoints (a rental platform's relay) refuse exec and SFTP and give only a shell
//! on a terminal. A terminal is no clean pipe: its line discipline or a relay may act on the
//! interrupt character, flow-control characters, CR and LF, or strip the eighth bit. The xfer
//! agent's protocol crosses it inside checked frames ([`frame`]), in an encoding each direction
//! agrees on after probing what passes ([`handshake`]), through stream adapters both ends use
//! ([`stream`]). Getting to the point where the agent runs on that terminal is the client's
//! business (`remote::shell_only`); the agent's side is `agent::server::stdio`.

pub mod frame;
pub mod handshake;
pub mod stream;

pub use frame::Encoding;
pub use handshake::Agreed;
pub use stream::{LinkReader, LinkWriter};
