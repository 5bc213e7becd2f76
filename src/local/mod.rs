//! Everything a transfer does to the local filesystem, and the checks that keep it inside the
//! destination directory.
//!
//! A server can lie: it can send names with `..`, `/`, `\`, NUL or terminal escapes, absolute
//! paths, links pointing out of the tree, and it (or a local user) can swap a directory for a
//! link while xfer writes. This module is the single place that defeats those attacks:
//! - [`names`] decides which remote names are acceptable ([`validate_component`]) and builds
//!   [`RelativePath`]s out of them only.
//! - [`symlinks`] decides whether a link the server sends stays inside the tree
//!   ([`symlink_target_is_contained`]).
//! - [`destination`] performs every write below the destination root without ever following a
//!   link ([`Destination`]).
//! - [`identity`] tells whether a local file changed between two moments without reading it
//!   ([`FileIdentity`]).
//! - [`group_sync`] makes many small files durable with one filesystem sync ([`GroupSync`]).
//!
//! The engine never builds a local path itself: it validates names here, then hands the
//! resulting [`RelativePath`] to [`Destination`].

pub mod destination;
pub mod group_sync;
pub mod identity;
pub(crate) mod mode;
pub mod names;
pub mod symlinks;

pub use destination::{Destination, EntryKind, EntryMetadata, Lookup, Timestamp};
pub use group_sync::GroupSync;
pub use identity::FileIdentity;
pub use names::{MAX_NAME_BYTES, NameError, PathError, RelativePath, validate_component};
pub use symlinks::symlink_target_is_contained;
// Where names were shown from before the terminal module; tests and fuzz targets use this path.
pub use crate::terminal::{printable, printable_cut};
