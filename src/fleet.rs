//! Many hosts in one command: the same work on each, a bounded number at once, each host on
//! its own.
//!
//! [`for_each_host`] runs one task per host, at most `at_once` of them at a time, so that a
//! 64-node command does not open every connection at the same moment (and trip `MaxStartups`
//! on a shared login host). One host failing, or its task panicking, never stops the others;
//! results come back in the order the hosts were given. [`HostOutcome`] is what a pull or push
//! made of one host, and [`fleet_error`] turns the outcomes into the command's error: none
//! when every host is done, "partly done" when every failure can be cured by running the same
//! command again, otherwise the first permanent failure's class.

use crate::engine::Summary;
use crate::error::{Error, ErrorKind};
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;

/// Hosts worked on at once unless the command line says otherwise: with the default `-j 4`,
/// 32 connections, well under OpenSSH's default `MaxStartups` of a login host that relays them
/// as long as they do not all start in the same second, which per-host connection setup
/// already staggers.
pub const DEFAULT_HOSTS_AT_ONCE: usize = 8;

/// Runs `work` for every host, at most `at_once` at a time; the results are in the order of
/// `hosts`. A task that panicked gives an internal error for its host.
pub async fn for_each_host<T, R, F, Fut>(
    hosts: Vec<T>,
    at_once: usize,
    work: F,
) -> Vec<Result<R, Error>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(usize, T) -> Fut,
    Fut: Future<Output = R> + Send + 'static,
{
    let count = hosts.len();
    let slots = Arc::new(tokio::sync::Semaphore::new(at_once.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut positions = std::collections::HashMap::new();
    for (index, host) in hosts.into_iter().enumerate() {
        let slots = slots.clone();
        let future = work(index, host);
        let handle = tasks.spawn(async move {
            // The semaphore is never closed, so this waits for a slot and nothing else.
            let _slot = slots.acquire_owned().await;
            future.await
        });
        positions.insert(handle.id(), index);
    }
    let mut results: Vec<Option<Result<R, Error>>> = (0..count).map(|_| None).collect();
    while let Some(joined) = tasks.join_next_with_id().await {
        let (id, result) = match joined {
            Ok((id, result)) => (id, Ok(result)),
            Err(error) => (
                error.id(),
                Err(Error::internal(format!(
                    "the task of a host failed: {error}"
                ))),
            ),
        };
        if let Some(&index) = positions.get(&id) {
            results[index] = Some(result);
        }
    }
    results
        .into_iter()
        .map(|result| result.unwrap_or_else(|| Err(Error::internal("a host's task vanished"))))
        .collect()
}

/// How one host's transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostState {
    /// Every file verified (or found complete).
    Done,
    /// The transfer ran, and some of it failed.
    Partly,
    /// The host could not be reached, or nothing could be planned.
    Failed,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Done => "done",
            HostState::Partly => "partly",
            HostState::Failed => "failed",
        }
    }
}

/// What a pull or push did on one host, for the per-host line, the table and `--json`.
#[derive(Debug, Serialize)]
pub struct HostOutcome {
    /// The host as the command line named it (after list expansion).
    pub host: String,
    pub source: String,
    pub destination: String,
    pub state: HostState,
    pub bytes_moved: u64,
    pub seconds: f64,
    /// What this host alone would have exited with.
    pub exit_code: i32,
    pub last_error: Option<String>,
    /// The host's own summary, when its transfer ran.
    pub summary: Option<Summary>,
    /// The error behind `last_error`, for the command's exit code.
    #[serde(skip)]
    pub error: Option<Error>,
}

impl HostOutcome {
    /// One host's result: a summary (which may hold failures) or an error that stopped it.
    pub fn new(
        host: String,
        source: String,
        destination: String,
        result: Result<Summary, Error>,
        seconds: f64,
    ) -> HostOutcome {
        let (state, summary, error) = match result {
            Ok(summary) => match summary.outcome() {
                None => (HostState::Done, Some(summary), None),
                Some(error) => (HostState::Partly, Some(summary), Some(error)),
            },
            Err(error) => (HostState::Failed, None, Some(error)),
        };
        let last_error = error.as_ref().map(|error| match error.hint() {
            Some(hint) => format!("{error} (hint: {hint})"),
            None => error.to_string(),
        });
        HostOutcome {
            host,
            source,
            destination,
            state,
            bytes_moved: summary.as_ref().map_or(0, |summary| summary.bytes_moved),
            seconds: summary.as_ref().map_or(seconds, |summary| summary.seconds),
            exit_code: error.as_ref().map_or(0, |error| error.kind().exit_code()),
            last_error,
            summary,
            error,
        }
    }
}

/// The command's error for these outcomes: none when every host is done; "partly done"
/// (exit code 1) when every failure is transient, so running the same command again resumes;
/// otherwise the class of the first permanent failure, in the order the hosts were given.
pub fn fleet_error(outcomes: &[HostOutcome]) -> Option<Error> {
    let failures: Vec<&Error> = outcomes
        .iter()
        .filter_map(|outcome| outcome.error.as_ref())
        .collect();
    let done = outcomes.len() - failures.len();
    let summary = format!(
        "{done} of {} host(s) done, {} not",
        outcomes.len(),
        failures.len()
    );
    match failure_kind(&failures)? {
        ErrorKind::Partial => {
            Some(Error::new(ErrorKind::Partial, summary).with_hint(
                "re-run the same command: complete hosts are skipped, the others resume",
            ))
        }
        kind => Some(Error::new(kind, summary).transient(false)),
    }
}

/// The kind a command over several hosts ends with when `failures` is not empty: partly done
/// when every failure is transient, otherwise the first permanent failure's.
pub fn failure_kind(failures: &[&Error]) -> Option<ErrorKind> {
    if failures.is_empty() {
        return None;
    }
    Some(
        failures
            .iter()
            .find(|error| !error.is_transient())
            .map_or(ErrorKind::Partial, |permanent| permanent.kind()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn outcome(result: Result<Summary, Error>) -> HostOutcome {
        HostOutcome::new("h".into(), "s".into(), "d".into(), result, 1.0)
    }

    #[tokio::test]
    async fn at_most_at_once_hosts_run_together_and_results_keep_their_order() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let results = for_each_host((0..12u64).collect(), 3, |index, host| {
            let (running, most) = (running.clone(), most.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // Later hosts finish first, so the order cannot come from completion.
                tokio::time::sleep(std::time::Duration::from_millis(20 - host)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                (index, host * 10)
            }
        })
        .await;
        let values: Vec<(usize, u64)> = results
            .into_iter()
            .map(|result| result.expect("ran"))
            .collect();
        assert_eq!(
            values,
            (0..12).map(|at| (at, at as u64 * 10)).collect::<Vec<_>>()
        );
        assert_eq!(most.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_panicking_host_does_not_stop_the_others() {
        let results = for_each_host(vec![1, 2, 3], 2, |_, host| async move {
            assert_ne!(host, 2, "host two breaks");
            host
        })
        .await;
        assert_eq!(results[0].as_ref().ok(), Some(&1));
        assert!(results[1].is_err());
        assert_eq!(results[2].as_ref().ok(), Some(&3));
    }

    #[test]
    fn states_follow_the_host_results() {
        assert_eq!(outcome(Ok(Summary::default())).state, HostState::Done);
        let failed = outcome(Err(Error::connect("node-3: connection refused")));
        assert_eq!(failed.state, HostState::Failed);
        assert_eq!(failed.exit_code, 3);
        assert!(
            failed
                .last_error
                .as_deref()
                .is_some_and(|text| text.contains("refused"))
        );
        let mut summary = Summary::default();
        summary.errors.push(crate::engine::ItemError::new(
            "a",
            &Error::remote("no space left").transient(false),
        ));
        let partly = outcome(Ok(summary));
        assert_eq!(partly.state, HostState::Partly);
        assert_eq!(partly.exit_code, 6);
    }

    #[test]
    fn the_exit_code_is_partial_only_when_every_failure_is_transient() {
        let done = || outcome(Ok(Summary::default()));
        assert!(fleet_error(&[done(), done()]).is_none());
        let transient = || outcome(Err(Error::connect("refused")));
        let error = fleet_error(&[done(), transient(), transient()]).expect("fails");
        assert_eq!(error.kind(), ErrorKind::Partial);
        assert_eq!(error.kind().exit_code(), 1);
        assert!(error.to_string().contains("1 of 3 host(s) done"));
        let auth = || outcome(Err(Error::auth("no key accepted")));
        let local = || outcome(Err(Error::new(ErrorKind::LocalIo, "disk full")));
        let error = fleet_error(&[transient(), auth(), local()]).expect("fails");
        assert_eq!(error.kind(), ErrorKind::Auth);
        assert!(!error.is_transient());
    }
}
