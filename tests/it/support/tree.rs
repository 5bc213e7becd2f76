//! Digests of local trees, to compare a copy with its source (or a tree before and after).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Everything a copy must keep: per path below `root` (`""` for `root` itself), the kind, and
/// for a file its size, mode, mtime and content hash, for a directory its mode and mtime (not
/// the root's mtime, which is the destination's business), for a symlink its target. Does not
/// follow symlinks.
pub fn tree_digest(root: &Path) -> BTreeMap<String, String> {
    tree_digest_skipping(root, None)
}

/// [`tree_digest`] without the subtree at `skip` (a path below `root`), if given.
pub fn tree_digest_skipping(root: &Path, skip: Option<&Path>) -> BTreeMap<String, String> {
    let mut digest = BTreeMap::new();
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| Some(entry.path()) != skip);
    for entry in walker {
        let entry = entry.unwrap();
        let relative = entry
            .path()
            .strip_prefix(root)
            .unwrap()
            .display()
            .to_string();
        let metadata = entry.path().symlink_metadata().unwrap();
        let value = if metadata.file_type().is_symlink() {
            format!("link -> {}", fs::read_link(entry.path()).unwrap().display())
        } else if metadata.is_dir() {
            let mtime = if relative.is_empty() {
                0
            } else {
                metadata.mtime()
            };
            format!("dir {:o} {mtime}", metadata.mode() & 0o7777)
        } else if metadata.is_file() {
            let hash = blake3::hash(&fs::read(entry.path()).unwrap());
            format!(
                "file {} {:o} {} {}",
                metadata.len(),
                metadata.mode() & 0o7777,
                metadata.mtime(),
                hash.to_hex()
            )
        } else {
            format!("other {:o}", metadata.mode())
        };
        digest.insert(relative, value);
    }
    digest
}

/// The regular files below `root` only: per path, size, mode, mtime and content hash.
pub fn files_digest(root: &Path) -> BTreeMap<String, (u64, u32, i64, String)> {
    let mut map = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
        let entry = entry.unwrap();
        let metadata = entry.path().symlink_metadata().unwrap();
        if metadata.is_file() {
            let relative = entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .display()
                .to_string();
            let hash = blake3::hash(&fs::read(entry.path()).unwrap())
                .to_hex()
                .to_string();
            map.insert(
                relative,
                (
                    metadata.len(),
                    metadata.mode() & 0o7777,
                    metadata.mtime(),
                    hash,
                ),
            );
        }
    }
    map
}

/// The regular files below `root` (not following symlinks) whose content contains `needle`.
pub fn files_containing(root: &Path, needle: &str) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .flatten()
        .filter(|entry| entry.file_type().is_file())
        .filter(|entry| {
            fs::read(entry.path()).is_ok_and(|bytes| {
                bytes
                    .windows(needle.len())
                    .any(|window| window == needle.as_bytes())
            })
        })
        .map(|entry| entry.path().to_path_buf())
        .collect()
}
