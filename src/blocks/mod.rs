//! The block core: how a file is cut into blocks, how blocks and files are hashed, what a
//! transfer knows of each block and so which must still travel, and the byte formats of the resume journal and of completion
//! records. It does no IO at all (no files, no async, no clock): the engine reads and writes,
//! this module computes and encodes, so all of it can be property-tested and fuzzed.
//!
//! - [`layout`]: [`BlockLayout`], block size limits.
//! - [`hash`]: [`hash_block`] (keyed BLAKE3), [`FileHasher`] (plain BLAKE3, as `b3sum`).
//! - [`delta`]: the differing pieces inside a differing block.
//! - [`set`]: [`BlockSet`], what one file's transfer knows of each block (held, checked,
//!   confirmed, pending) and what must still travel; [`compare_hashes`].
//! - [`journal`]: the resume journal of one destination file.
//! - [`record`]: completion records of whole units.
//!
//! # Why 1 MiB blocks ([`DEFAULT_BLOCK_SIZE`])
//!
//! The block is the unit of resumption. The engine writes a block in place, then appends its
//! journal record, so after a crash it re-fetches at most the blocks that were in flight plus
//! one (the block whose record was torn): with 1 MiB blocks, a few MiB per crash, however big
//! the file.
//!
//! Each block also costs one journal record: 40 bytes of block index and hash, plus an 8-byte
//! checksum, so 48 bytes per MiB, about 4.6 MB for a 100 GB file (95 367 blocks). That reads
//! and decodes in milliseconds on every resume. Smaller blocks would grow the journal and the
//! block hashes exchanged in proportion for little gain; larger ones would grow the re-fetch after a crash
//! and the memory held per block in flight.
//!
//! A finer block for delta comparison is derived without touching the journal: block sizes
//! are powers of two, so every 1 MiB block is exactly 32 pieces of 32 KiB, and a block that
//! differs is compared again piece by piece ([`delta`]).

mod codec;
pub mod delta;
pub mod hash;
pub mod journal;
pub mod layout;
pub mod record;
pub mod set;

pub use hash::{BlockHash, FileHash, FileHasher, block_hasher, file_hash_of, hash_block, to_hex};
pub use journal::{Journal, JournalError, JournalHeader, TailDamage};
pub use layout::{
    BlockLayout, DEFAULT_BLOCK_SIZE, LayoutError, MAX_BLOCK_COUNT, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE,
    is_valid_block_size,
};
pub use record::{CompletionEntry, CompletionRecord, EntryKind, RecordError};
pub use set::{BlockSet, Comparison, compare_hashes};
