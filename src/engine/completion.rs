//! Completion records: how a re-run knows a unit is done without reading any file data.
//!
//! A unit whose every file is verified gets a record of the listing it matched (names, kinds,
//! sizes, mtimes, modes, link targets), kept in the state directory under the unit's source and
//! destination. A re-run plans from metadata only (listings and lstat); a unit whose plan finds
//! everything up to date and whose listing equals the record is skipped as complete. A unit
//! that ends with any failure loses its record.

use crate::blocks::record::{CompletionEntry, CompletionRecord, MAX_NAME_LEN, MAX_RECORD_LEN};
use crate::engine::Summary;
use crate::engine::discovery::Unit;
use crate::engine::plan::{Action, Direction, Endpoints, Plan, PlanItem};
use crate::engine::state::StateFile;
use crate::engine::units::Transfer;
use crate::remote::EntryKind;

/// The meaning of a completion record written by this version (which checks made it complete).
const RECORD_VERSION: u32 = 1;

/// Where the completion record of `unit` lives.
pub(super) fn record_file(transfer: &Transfer, endpoints: &Endpoints, unit: &Unit) -> StateFile {
    let (source, destination) = match transfer.direction {
        Direction::Pull => (
            format!("{}:{}", endpoints.remote_id, unit.source),
            transfer
                .local_path
                .join(unit.relative.to_raw_string())
                .display()
                .to_string(),
        ),
        Direction::Push => (
            unit.source.clone(),
            format!("{}:{}", endpoints.remote_id, unit.target),
        ),
    };
    transfer
        .state
        .unit_file(transfer.direction.as_str(), &source, &destination)
}

/// The listing a unit's plan saw, as a completion record.
pub(super) fn completion_record(unit: &Unit, plan: &Plan) -> CompletionRecord {
    let entries = plan
        .items
        .iter()
        .filter_map(|item: &PlanItem| {
            let kind = match item.kind {
                EntryKind::Special => return None,
                kind => kind,
            };
            Some(CompletionEntry {
                name: item.path.clone(),
                kind,
                size: item.size,
                mtime_seconds: item.mtime,
                mtime_nanos: 0,
                mode: item.mode,
                symlink_target: item.link_target.clone(),
                content_hash: None,
            })
        })
        .collect();
    CompletionRecord {
        version: RECORD_VERSION,
        unit_id: unit.source.chars().take(MAX_NAME_LEN / 4).collect(),
        entries,
    }
}

/// Whether `plan` finds the unit exactly as a run that completed it left it: everything up to
/// date, nothing it could not examine, and the same listing as the record.
pub(super) fn found_complete(plan: &Plan, record: &CompletionRecord, file: &StateFile) -> bool {
    let everything_current = plan.problems.is_empty()
        && plan
            .items
            .iter()
            .all(|item| item.action == Action::UpToDate);
    everything_current
        && file
            .read(MAX_RECORD_LEN as u64)
            .ok()
            .flatten()
            .and_then(|bytes| CompletionRecord::decode(&bytes).ok())
            .as_ref()
            == Some(record)
}

/// The summary of a unit skipped as complete.
pub(super) fn complete_summary(plan: &Plan) -> Summary {
    let count = |kind: EntryKind| plan.items.iter().filter(|item| item.kind == kind).count() as u64;
    Summary {
        files: count(EntryKind::File),
        files_up_to_date: count(EntryKind::File),
        directories: count(EntryKind::Directory),
        symlinks: count(EntryKind::Symlink),
        bytes_reused: plan.total_file_bytes(),
        skipped: plan.skipped.clone(),
        ..Summary::default()
    }
}

/// Keeps `record` for the unit when every file of it verified, and removes any record when
/// not. A record not written only costs a re-run its check.
pub(super) fn settle(file: &StateFile, record: &CompletionRecord, complete: bool, name: &str) {
    if !complete {
        let _ = file.remove();
        return;
    }
    let written = record
        .encode()
        .map_err(|error| error.to_string())
        .and_then(|bytes| {
            file.replace(&[&bytes], false)
                .map_err(|error| error.to_string())
        });
    if let Err(error) = written {
        tracing::debug!(%error, "no completion record for {name}");
    }
}
