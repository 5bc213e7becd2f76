//! A remote seen only through its reading half: what a dry run plans over.
//!
//! [`ReadOnly`] passes stat, list, read and hash requests to the remote it wraps and refuses
//! every request that would change the remote, as a bug: the planner a dry run shares with real
//! runs then cannot change a host, whatever it is asked.

use crate::blocks::{BlockHash, BlockLayout};
use crate::error::{Error, Result};
use crate::remote::{Remote, RemoteDigest, RemoteEntry, SetAttributes, SmallFile};
use std::sync::Arc;

/// The remote `R` with every change refused.
pub struct ReadOnly<R: Remote> {
    inner: Arc<R>,
}

impl<R: Remote> ReadOnly<R> {
    pub fn new(inner: Arc<R>) -> Self {
        ReadOnly { inner }
    }

    fn refuse<T>(&self, what: &str, path: &str) -> Result<T> {
        Err(Error::internal(format!(
            "{}: a dry run was about to {what} {path}; nothing was changed",
            self.inner.label()
        )))
    }
}

impl<R: Remote> Remote for ReadOnly<R> {
    type File = R::File;

    fn label(&self) -> &str {
        self.inner.label()
    }

    fn max_io_size(&self) -> u32 {
        self.inner.max_io_size()
    }

    async fn stat(&self, path: &str, follow: bool) -> Result<Option<RemoteEntry>> {
        self.inner.stat(path, follow).await
    }

    async fn list(&self, path: &str) -> Result<Vec<RemoteEntry>> {
        self.inner.list(path).await
    }

    async fn read_link(&self, path: &str) -> Result<String> {
        self.inner.read_link(path).await
    }

    async fn open_read(&self, path: &str) -> Result<R::File> {
        self.inner.open_read(path).await
    }

    async fn read_at(&self, file: &R::File, offset: u64, length: u32) -> Result<Vec<u8>> {
        self.inner.read_at(file, offset, length).await
    }

    fn hashes_reads(&self) -> bool {
        self.inner.hashes_reads()
    }

    async fn read_at_hashed(
        &self,
        file: &R::File,
        offset: u64,
        length: u32,
    ) -> Result<(Vec<u8>, Option<BlockHash>)> {
        self.inner.read_at_hashed(file, offset, length).await
    }

    async fn open_write(&self, path: &str) -> Result<R::File> {
        self.refuse("open for writing", path)
    }

    async fn write_at(&self, _file: &R::File, _offset: u64, _data: Vec<u8>) -> Result<()> {
        self.refuse("write", "a file")
    }

    async fn sync(&self, _file: &R::File) -> Result<()> {
        self.refuse("sync", "a file")
    }

    async fn close(&self, file: R::File) -> Result<()> {
        self.inner.close(file).await
    }

    async fn set_attributes(&self, path: &str, _attributes: SetAttributes) -> Result<()> {
        self.refuse("set the attributes of", path)
    }

    async fn set_file_attributes(&self, _file: &R::File, _attributes: SetAttributes) -> Result<()> {
        self.refuse("set the attributes of", "a file")
    }

    async fn make_directory(&self, path: &str, _mode: u32) -> Result<()> {
        self.refuse("make the directory", path)
    }

    async fn make_symlink(&self, path: &str, _target: &str) -> Result<()> {
        self.refuse("make the symlink", path)
    }

    async fn remove_file(&self, path: &str) -> Result<()> {
        self.refuse("remove", path)
    }

    async fn digest(&self, path: &str) -> Result<Option<RemoteDigest>> {
        self.inner.digest(path).await
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn hashes_blocks(&self) -> bool {
        self.inner.hashes_blocks()
    }

    async fn block_hashes(
        &self,
        path: &str,
        layout: &BlockLayout,
        blocks: std::ops::Range<u64>,
    ) -> Result<Option<Vec<BlockHash>>> {
        self.inner.block_hashes(path, layout, blocks).await
    }

    async fn read_small(&self, path: &str, max_length: u32) -> Result<Option<SmallFile>> {
        self.inner.read_small(path, max_length).await
    }
}
