//! How the two ends of a terminal link agree on their encodings.
//!
//! A terminal may pass every byte, or strip the eighth bit, or mangle bytes above 0x7F (a
//! relay that insists on UTF-8), and each direction may differ. So each end sends the other a
//! probe of every byte [`Encoding::Escaped`] sends as it is, and the receiver of a probe picks
//! the encoding for the direction it came from: escaped when the probe arrived intact, base64
//! otherwise. The agent starts:
//!
//! 1. agent: `XFERLINK1:` PROBE `:XFEREND`
//! 2. client: `XFERLINK1:` LETTER PROBE `:XFEREND`, LETTER the encoding the agent writes in
//! 3. agent: `XFERLINK1:` LETTER `:XFEREND`, the encoding the client writes in
//!
//! and frames follow. The markers are ASCII, so a message survives any of these terminals;
//! what a terminal prints before the first marker (a login's leftovers) is skipped, bounded.

use super::frame::Encoding;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Starts every handshake message.
pub const START: &[u8] = b"XFERLINK1:";
/// Ends every handshake message.
pub const STOP: &[u8] = b":XFEREND";
/// The longest handshake message.
const MAX_MESSAGE: usize = 1024;

/// Every byte the escaped encoding sends as it is, and its own markers' bytes.
pub fn probe() -> Vec<u8> {
    (0x20..=0x7e).chain(0x80..=0xff).collect()
}

fn verdict(received: &[u8]) -> Encoding {
    if received == probe() {
        Encoding::Escaped
    } else {
        Encoding::Base64
    }
}

/// The encodings one end reads and writes in, and the framed bytes read past the handshake.
#[derive(Debug)]
pub struct Agreed {
    pub read: Encoding,
    pub write: Encoding,
    pub early: Vec<u8>,
}

/// Where the bytes read so far stand against the markers.
pub enum Found {
    /// A whole message: its content, and what came after it.
    Message(Vec<u8>, Vec<u8>),
    /// One of the caller's other markers came first: everything read up to and including it.
    Other(Vec<u8>),
}

/// Reads until a whole handshake message or one of `others` arrives, skipping at most `skip`
/// bytes before the message's start.
pub async fn read_message<R: AsyncRead + Unpin>(
    reader: &mut R,
    seen: &mut Vec<u8>,
    others: &[&[u8]],
    skip: usize,
) -> io::Result<Found> {
    loop {
        let start = find(seen, START);
        if let Some(start) = start {
            let content = start + START.len();
            if let Some(stop) = find(&seen[content..], STOP) {
                let message = seen[content..content + stop].to_vec();
                let rest = seen[content + stop + STOP.len()..].to_vec();
                return Ok(Found::Message(message, rest));
            }
            if seen.len() - content > MAX_MESSAGE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the terminal link's handshake message has no end",
                ));
            }
        } else {
            let other = others
                .iter()
                .filter_map(|marker| find(seen, marker).map(|at| at + marker.len()))
                .min();
            if let Some(end) = other {
                return Ok(Found::Other(seen[..end].to_vec()));
            }
            if seen.len() > skip + START.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the terminal printed too much before the xfer agent's link started",
                ));
            }
        }
        let mut buffer = [0; 4096];
        let read = reader.read(&mut buffer).await?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        seen.extend_from_slice(&buffer[..read]);
    }
}

/// Where `needle` first starts in `haystack`: the markers a terminal's output is searched for.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

async fn send<W: AsyncWrite + Unpin>(writer: &mut W, content: &[&[u8]]) -> io::Result<()> {
    let mut message = START.to_vec();
    for part in content {
        message.extend_from_slice(part);
    }
    message.extend_from_slice(STOP);
    writer.write_all(&message).await?;
    writer.flush().await
}

fn unexpected(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the terminal link's handshake: {what}"),
    )
}

/// The agent's end: probes, reads the client's choice and probe, answers.
pub async fn as_agent<R, W>(reader: &mut R, writer: &mut W) -> io::Result<Agreed>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    send(writer, &[&probe()]).await?;
    let mut seen = Vec::new();
    let (message, early) = match read_message(reader, &mut seen, &[], 64 * 1024).await? {
        Found::Message(message, early) => (message, early),
        Found::Other(_) => return Err(unexpected("no answer")),
    };
    let (&letter, received) = message
        .split_first()
        .ok_or_else(|| unexpected("an empty answer"))?;
    let write = Encoding::from_letter(letter).ok_or_else(|| unexpected("an unknown encoding"))?;
    let read = verdict(received);
    send(writer, &[&[read.letter()]]).await?;
    Ok(Agreed { read, write, early })
}

/// The client's end, once the agent's probe arrived as `probe` with `seen` read after it.
pub async fn as_client<R, W>(
    reader: &mut R,
    writer: &mut W,
    probe: &[u8],
    after: Vec<u8>,
) -> io::Result<Agreed>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let read = verdict(probe);
    send(writer, &[&[read.letter()], &self::probe()]).await?;
    let mut seen = after;
    let (message, early) = match read_message(reader, &mut seen, &[], 0).await? {
        Found::Message(message, early) => (message, early),
        Found::Other(_) => return Err(unexpected("no answer")),
    };
    let write = match message.as_slice() {
        [letter] => Encoding::from_letter(*letter),
        _ => None,
    }
    .ok_or_else(|| unexpected("an unknown encoding"))?;
    Ok(Agreed { read, write, early })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs both ends over a pipe whose bytes pass through `mangle` in each direction.
    async fn agree(to_client: fn(u8) -> u8, to_agent: fn(u8) -> u8) -> (Agreed, Agreed) {
        let (agent_side, relay_agent) = tokio::io::duplex(1 << 16);
        let (client_side, relay_client) = tokio::io::duplex(1 << 16);
        let (mut agent_relay_read, mut agent_relay_write) = tokio::io::split(relay_agent);
        let (mut client_relay_read, mut client_relay_write) = tokio::io::split(relay_client);
        tokio::spawn(async move {
            let mut buffer = [0; 1024];
            while let Ok(read @ 1..) = agent_relay_read.read(&mut buffer).await {
                let mangled: Vec<u8> = buffer[..read].iter().map(|&byte| to_client(byte)).collect();
                if client_relay_write.write_all(&mangled).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            let mut buffer = [0; 1024];
            while let Ok(read @ 1..) = client_relay_read.read(&mut buffer).await {
                let mangled: Vec<u8> = buffer[..read].iter().map(|&byte| to_agent(byte)).collect();
                if agent_relay_write.write_all(&mangled).await.is_err() {
                    break;
                }
            }
        });
        let agent = tokio::spawn(async move {
            let (mut reader, mut writer) = tokio::io::split(agent_side);
            as_agent(&mut reader, &mut writer).await.unwrap()
        });
        let (mut reader, mut writer) = tokio::io::split(client_side);
        let mut seen = b"Welcome to the pod\r\n$ ".to_vec();
        let Found::Message(probe, after) = read_message(&mut reader, &mut seen, &[], 4096)
            .await
            .unwrap()
        else {
            panic!("no probe");
        };
        let client = as_client(&mut reader, &mut writer, &probe, after)
            .await
            .unwrap();
        (agent.await.unwrap(), client)
    }

    #[tokio::test]
    async fn a_clean_terminal_is_escaped_both_ways() {
        let (agent, client) = agree(|byte| byte, |byte| byte).await;
        assert_eq!(
            (agent.read, agent.write),
            (Encoding::Escaped, Encoding::Escaped)
        );
        assert_eq!(
            (client.read, client.write),
            (Encoding::Escaped, Encoding::Escaped)
        );
    }

    #[tokio::test]
    async fn a_direction_that_strips_the_eighth_bit_gets_base64() {
        let (agent, client) = agree(|byte| byte & 0x7f, |byte| byte).await;
        assert_eq!(
            (agent.write, client.read),
            (Encoding::Base64, Encoding::Base64)
        );
        assert_eq!(
            (agent.read, client.write),
            (Encoding::Escaped, Encoding::Escaped)
        );
        let (agent, client) = agree(|byte| byte, |byte| byte & 0x7f).await;
        assert_eq!(
            (agent.read, client.write),
            (Encoding::Base64, Encoding::Base64)
        );
        assert_eq!(
            (agent.write, client.read),
            (Encoding::Escaped, Encoding::Escaped)
        );
    }

    #[tokio::test]
    async fn other_markers_stop_the_wait() {
        let mut seen = b"XFER-NO-AGENT\nLinux\n".to_vec();
        let mut empty: &[u8] = b"";
        match read_message(&mut empty, &mut seen, &[b"XFER-NO-AGENT\n"], 4096)
            .await
            .unwrap()
        {
            Found::Other(text) => assert_eq!(text, b"XFER-NO-AGENT\n"),
            Found::Message(..) => panic!("a message"),
        }
    }
}
