//! [`Remote`] through a running `xfer agent`: the same operations as SFTP, plus what SFTP
//! cannot do (block hashes and whole-file BLAKE3 computed where the data is, a small file in one
//! request).
//!
//! The agent's protocol and its request multiplexer live in `crate::agent`; starting or
//! deploying the agent on a host lives in `deploy`. This module only maps the engine's calls
//! onto the client and the agent's answers onto xfer's errors: a stream that ended, or an agent
//! that stalled, is a connection failure (transient, retried on a fresh connection), an error
//! the agent reports about a path is the remote's (permanent).

use crate::agent::client::{AgentClient, AgentError};
use crate::agent::protocol::{self, ErrorCode};
use crate::blocks::{BlockHash, BlockLayout};
use crate::error::{Error, Result};
use crate::remote::{
    EntryKind, LISTING_HINT, ListingLimits, Remote, RemoteDigest, RemoteEntry, SetAttributes,
    SmallFile, SmallPut,
};
use crate::ssh::connect::Connection;
use std::sync::Arc;

/// Reads and writes carried by one request: larger than SFTP's 255 KiB, so a 1 MiB block is
/// one request, and far below the protocol's frame bound.
const IO_SIZE: u32 = 1 << 20;
/// Block hashes asked for in one request (the protocol's bound per frame).
const HASHES_PER_REQUEST: u64 = 65_536;

/// A running agent on an authenticated connection.
pub struct AgentRemote {
    client: AgentClient,
    connection: Arc<Connection>,
    label: String,
}

/// An open file on the agent's side: its handle, and the path for messages.
#[derive(Debug, Clone)]
pub struct AgentFile {
    handle: u64,
    path: Arc<str>,
}

impl AgentRemote {
    pub fn new(client: AgentClient, connection: Arc<Connection>) -> AgentRemote {
        let label = connection.label().to_string();
        AgentRemote {
            client,
            connection,
            label,
        }
    }

    pub fn connection(&self) -> &Arc<Connection> {
        &self.connection
    }

    fn error(&self, action: &str, error: AgentError) -> Error {
        agent_error(&self.label, action, error)
    }
}

/// Maps what the agent client reports to an xfer error.
pub fn agent_error(label: &str, action: &str, error: AgentError) -> Error {
    match error {
        AgentError::Remote { code, message } => {
            let what = match code {
                ErrorCode::NotFound => "no such file or directory".to_string(),
                ErrorCode::PermissionDenied => "permission denied".to_string(),
                _ => crate::terminal::printable(&message),
            };
            let error = Error::remote(format!("{label}: {action}: {what}"));
            if code == ErrorCode::NoSpace {
                error.with_hint("the remote is out of disk space or quota: free some, then re-run the same command (xfer doctor ALIAS --path PATH shows free space)")
            } else {
                error
            }
        }
        AgentError::Closed => Error::connect(format!(
            "{label}: {action}: the connection to the xfer agent closed"
        )),
        error @ AgentError::Stalled { .. } => Error::connect(format!("{label}: {action}: {error}"))
            .with_hint("the agent on the host stopped answering; the work is retried on a new connection (--no-agent uses SFTP instead; XFER_AGENT_TIMEOUT gives a slow host longer)"),
        AgentError::Io(error) => Error::connect(format!(
            "{label}: {action}: the connection to the xfer agent failed: {error}"
        )),
        other => Error::remote(format!("{label}: {action}: xfer agent: {other}"))
            .with_hint("re-run with --no-agent to use SFTP, and report this"),
    }
}

fn entry_from(entry: protocol::Entry) -> RemoteEntry {
    RemoteEntry {
        name: String::from_utf8_lossy(&entry.name).into_owned(),
        kind: match entry.kind {
            protocol::EntryKind::File => EntryKind::File,
            protocol::EntryKind::Directory => EntryKind::Directory,
            protocol::EntryKind::Symlink => EntryKind::Symlink,
            protocol::EntryKind::Special => EntryKind::Special,
        },
        size: entry.size,
        mtime: entry.mtime,
        mode: entry.mode & 0o7777,
    }
}

impl Remote for AgentRemote {
    type File = AgentFile;

    fn label(&self) -> &str {
        &self.label
    }

    fn max_io_size(&self) -> u32 {
        IO_SIZE
    }

    async fn stat(&self, path: &str, follow: bool) -> Result<Option<RemoteEntry>> {
        self.client
            .stat(path, follow)
            .await
            .map(|entry| entry.map(entry_from))
            .map_err(|error| self.error(&format!("stat {path}"), error))
    }

    async fn list(&self, path: &str) -> Result<Vec<RemoteEntry>> {
        // The same caps as over SFTP.
        let entries = self
            .client
            .list(path, ListingLimits::DEFAULT)
            .await
            .map_err(|error| {
                let too_large = error.code() == Some(ErrorCode::TooLarge);
                let error = self.error(&format!("listing {path}"), error);
                if too_large {
                    error.with_hint(LISTING_HINT)
                } else {
                    error
                }
            })?;
        Ok(entries.into_iter().map(entry_from).collect())
    }

    async fn read_link(&self, path: &str) -> Result<String> {
        self.client
            .read_link(path)
            .await
            .map_err(|error| self.error(&format!("reading link {path}"), error))
    }

    async fn open_read(&self, path: &str) -> Result<AgentFile> {
        let handle = self
            .client
            .open_read(path)
            .await
            .map_err(|error| self.error(&format!("opening {path}"), error))?;
        Ok(AgentFile {
            handle,
            path: path.into(),
        })
    }

    async fn read_at(&self, file: &AgentFile, offset: u64, length: u32) -> Result<Vec<u8>> {
        self.client
            .read(file.handle, offset, length.min(IO_SIZE))
            .await
            .map_err(|error| self.error(&format!("reading {}", file.path), error))
    }

    fn hashes_reads(&self) -> bool {
        self.client.version() >= 4
    }

    async fn read_at_hashed(
        &self,
        file: &AgentFile,
        offset: u64,
        length: u32,
    ) -> Result<(Vec<u8>, Option<BlockHash>)> {
        if !self.hashes_reads() {
            return super::read_unhashed(self, file, offset, length).await;
        }
        self.client
            .read_hashed(file.handle, offset, length.min(IO_SIZE))
            .await
            .map(|(data, hash)| (data, Some(hash)))
            .map_err(|error| self.error(&format!("reading {}", file.path), error))
    }

    async fn open_write(&self, path: &str) -> Result<AgentFile> {
        let handle = self
            .client
            .open_write(path)
            .await
            .map_err(|error| self.error(&format!("opening {path} for writing"), error))?;
        Ok(AgentFile {
            handle,
            path: path.into(),
        })
    }

    async fn write_at(&self, file: &AgentFile, offset: u64, data: Vec<u8>) -> Result<()> {
        self.client
            .write(file.handle, offset, data)
            .await
            .map_err(|error| self.error(&format!("writing {}", file.path), error))
    }

    async fn sync(&self, file: &AgentFile) -> Result<()> {
        self.client
            .sync(file.handle)
            .await
            .map_err(|error| self.error(&format!("syncing {}", file.path), error))
    }

    fn puts_small(&self) -> bool {
        self.client.version() >= 5
    }

    async fn put_small(&self, path: &str, file: SmallPut) -> Result<()> {
        self.client
            .put_file(path, file.data, file.hash, file.mode, file.mtime)
            .await
            .map_err(|error| self.error(&format!("writing {path}"), error))
    }

    async fn sync_grouped(&self, file: &AgentFile) -> Result<()> {
        if self.client.version() < 5 {
            return self.sync(file).await;
        }
        self.client
            .sync_filesystem(file.handle)
            .await
            .map_err(|error| self.error(&format!("syncing {}", file.path), error))
    }

    async fn close(&self, file: AgentFile) -> Result<()> {
        self.client
            .close(file.handle)
            .await
            .map_err(|error| self.error(&format!("closing {}", file.path), error))
    }

    async fn set_attributes(&self, path: &str, attributes: SetAttributes) -> Result<()> {
        self.client
            .set_attributes(path, attributes.size, attributes.mode, attributes.mtime)
            .await
            .map_err(|error| self.error(&format!("setting attributes of {path}"), error))
    }

    async fn set_file_attributes(&self, file: &AgentFile, attributes: SetAttributes) -> Result<()> {
        self.client
            .set_file_attributes(
                file.handle,
                &file.path,
                attributes.size,
                attributes.mode,
                attributes.mtime,
            )
            .await
            .map_err(|error| self.error(&format!("setting attributes of {}", file.path), error))
    }

    async fn make_directory(&self, path: &str, mode: u32) -> Result<()> {
        self.client
            .make_directory(path, mode)
            .await
            .map_err(|error| self.error(&format!("creating directory {path}"), error))
    }

    async fn make_symlink(&self, path: &str, target: &str) -> Result<()> {
        self.client
            .make_symlink(path, target)
            .await
            .map_err(|error| self.error(&format!("creating symlink {path}"), error))
    }

    async fn remove_file(&self, path: &str) -> Result<()> {
        self.client
            .remove(path)
            .await
            .map_err(|error| self.error(&format!("removing {path}"), error))
    }

    async fn digest(&self, path: &str) -> Result<Option<RemoteDigest>> {
        let hash = self
            .client
            .digest(path)
            .await
            .map_err(|error| self.error(&format!("hashing {path}"), error))?;
        Ok(Some(RemoteDigest::Blake3(hash)))
    }

    fn hashes_blocks(&self) -> bool {
        true
    }

    fn is_closed(&self) -> bool {
        self.client.is_closed() || self.connection.is_closed()
    }

    async fn block_hashes(
        &self,
        path: &str,
        layout: &BlockLayout,
        blocks: std::ops::Range<u64>,
    ) -> Result<Option<Vec<BlockHash>>> {
        let count = blocks.end.min(layout.block_count());
        let mut first = blocks.start;
        let mut hashes =
            Vec::with_capacity(count.saturating_sub(first).min(HASHES_PER_REQUEST) as usize);
        while first < count {
            let asked = (count - first).min(HASHES_PER_REQUEST);
            let batch = self
                .client
                .block_hashes(path, layout.block_size(), first, asked as u32)
                .await
                .map_err(|error| self.error(&format!("hashing the blocks of {path}"), error))?;
            let got = batch.len() as u64;
            if got > asked {
                return Err(Error::remote(format!(
                    "{}: hashing the blocks of {path}: the agent sent more hashes than asked",
                    self.label
                )));
            }
            hashes.extend(batch);
            if got < asked {
                // The file is shorter than the layout: the answer ends with its last block.
                break;
            }
            first += asked;
        }
        Ok(Some(hashes))
    }

    async fn read_small(&self, path: &str, max_length: u32) -> Result<Option<SmallFile>> {
        let max_length = max_length.min(IO_SIZE);
        let read = if self.client.version() >= 2 {
            self.client
                .read_file_hashed(path, max_length)
                .await
                .map(|(data, hash)| SmallFile {
                    data,
                    block_hash: Some(hash),
                })
        } else {
            self.client
                .read_file(path, max_length)
                .await
                .map(|data| SmallFile {
                    data,
                    block_hash: None,
                })
        };
        read.map(Some)
            .map_err(|error| self.error(&format!("reading {path}"), error))
    }
}
