//! `--checksum`: files that look up to date are compared by whole-file digest on both sides.

use crate::engine::finished;
use crate::engine::plan::{Action, Direction, Plan};
use crate::error::{Error, Result};
use crate::local::Destination;
use crate::remote::{self, EntryKind, Remote};

/// `--checksum`: a file that passes the quick check must also have the same whole-file digest
/// on both sides, or it is transferred again.
pub(super) async fn verify_by_checksum<R: Remote>(
    plan: &mut Plan,
    remote: &R,
    destination: Option<&Destination>,
    direction: Direction,
) -> Result<()> {
    for item in plan.items.iter_mut() {
        if item.kind != EntryKind::File || item.action != Action::UpToDate {
            continue;
        }
        let remote_path = match direction {
            Direction::Pull => &item.source,
            Direction::Push => &item.target,
        };
        let digest = remote.digest(remote_path).await?;
        let local = match direction {
            Direction::Pull => {
                let Some(destination) = destination else {
                    continue;
                };
                destination.open_read(&item.relative()?)?
            }
            Direction::Push => std::fs::File::open(&item.source)
                .map_err(|error| Error::local_io(format!("cannot read {}", item.source), error))?,
        };
        let checksum = tokio::task::spawn_blocking(move || -> Result<Option<bool>> {
            let Some(digest) = digest else {
                return Ok(None);
            };
            let by_blake3 = matches!(digest, remote::RemoteDigest::Blake3(_));
            let (_, blake3, sha256) =
                crate::file_hashing::whole_file_digests(&local, u64::MAX, by_blake3, !by_blake3)
                    .map_err(|error| Error::local_io("cannot read a file to checksum it", error))?;
            Ok(Some(match digest {
                remote::RemoteDigest::Blake3(expected) => blake3 == Some(expected),
                remote::RemoteDigest::Sha256(expected) => sha256 == Some(expected),
            }))
        });
        let same = finished(checksum, "a checksum").await?;
        match same {
            Some(true) => {}
            Some(false) => item.action = Action::Update { reason: "content differs (--checksum)".into() },
            None => {
                item.action = Action::Update {
                    reason: "the remote cannot hash it, so it is transferred and verified again (--checksum)".into(),
                }
            }
        }
    }
    Ok(())
}
