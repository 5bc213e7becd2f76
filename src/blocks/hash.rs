//! Hashes: BLAKE3 of one block (keyed, so it can never be mistaken for a whole-file hash) and
//! streaming BLAKE3 of a whole file (plain, so it matches `b3sum`).
//!
//! Block hashes are keyed with a key derived from [`BLOCK_HASH_CONTEXT`]: a one-block file has
//! the same bytes as its only block, and without the key its block hash would equal its file
//! hash, inviting code that compares one with the other.

use std::sync::LazyLock;

/// The BLAKE3 hash of one block, keyed as [`hash_block`] does.
pub type BlockHash = [u8; 32];

/// The plain BLAKE3 hash of a whole file, as `b3sum` prints it (in hex).
pub type FileHash = [u8; 32];

/// The BLAKE3 key-derivation context of block hashes. Changing it changes every block hash and
/// so invalidates every journal: bump the version in it only with the journal format version.
pub const BLOCK_HASH_CONTEXT: &str = "xfer block hash v1";

static BLOCK_KEY: LazyLock<[u8; 32]> =
    LazyLock::new(|| blake3::derive_key(BLOCK_HASH_CONTEXT, b""));

/// The hash of one block's bytes: keyed BLAKE3 under a key derived from
/// [`BLOCK_HASH_CONTEXT`]. Blocks of different lengths never collide in practice, since BLAKE3
/// commits to the length.
pub fn hash_block(data: &[u8]) -> BlockHash {
    blake3::keyed_hash(&BLOCK_KEY, data).into()
}

/// A streaming hasher producing [`hash_block`] hashes, for blocks fed in pieces.
pub fn block_hasher() -> blake3::Hasher {
    blake3::Hasher::new_keyed(&BLOCK_KEY)
}

/// The whole-file BLAKE3 hash of `data`, the same as [`FileHasher`] fed it in one piece.
pub fn file_hash_of(data: &[u8]) -> FileHash {
    blake3::hash(data).into()
}

/// Streaming whole-file hash: plain BLAKE3, equal to what `b3sum` prints for the same bytes.
/// Feed it the file's bytes in order, in pieces of any size.
#[derive(Debug, Clone, Default)]
pub struct FileHasher {
    inner: blake3::Hasher,
}

impl FileHasher {
    pub fn new() -> Self {
        FileHasher::default()
    }

    /// Feeds the next bytes of the file.
    pub fn update(&mut self, data: &[u8]) -> &mut Self {
        self.inner.update(data);
        self
    }

    /// The hash of everything fed so far. The hasher can keep being fed afterwards.
    pub fn finish(&self) -> FileHash {
        self.inner.finalize().into()
    }
}

/// Lowercase hex of a hash, as `b3sum` prints it.
pub fn to_hex(hash: &[u8; 32]) -> String {
    blake3::Hash::from_bytes(*hash).to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn file_hash_matches_b3sum() {
        // `b3sum` of the empty input and of "abc", from the BLAKE3 reference.
        assert_eq!(
            to_hex(&FileHasher::new().finish()),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(
            to_hex(&file_hash_of(b"abc")),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
    }

    #[test]
    fn block_hash_is_not_a_file_hash() {
        for data in [&b""[..], b"abc", &[7u8; 5000]] {
            assert_ne!(hash_block(data), file_hash_of(data));
            assert_eq!(hash_block(data), hash_block(data));
        }
        assert_ne!(hash_block(b""), hash_block(b"\0"));
    }

    proptest! {
        #[test]
        fn hashers_ignore_chunking(data in proptest::collection::vec(any::<u8>(), 0..5000), cut in any::<usize>()) {
            let (head, tail) = data.split_at(cut % (data.len() + 1));
            let mut file = FileHasher::new();
            file.update(head).update(tail);
            prop_assert_eq!(file.finish(), file_hash_of(&data));
            let mut block = block_hasher();
            block.update(head);
            block.update(tail);
            prop_assert_eq!(<[u8; 32]>::from(block.finalize()), hash_block(&data));
        }
    }
}
