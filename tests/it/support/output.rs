//! Reading what a command the tests ran printed, and the assertions on it that the test
//! modules share.

use std::process::Output;

/// Bytes as text, invalid UTF-8 replaced.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What the command wrote to stderr, as text.
pub fn stderr(output: &Output) -> String {
    text(&output.stderr)
}

/// stdout and stderr together, each under a heading: for messages, and for checks of what a
/// command said on either (`secret push` reports a host's failure on stdout).
pub fn said(output: &Output) -> String {
    format!(
        "--- stdout ---\n{}--- stderr ---\n{}",
        text(&output.stdout),
        text(&output.stderr)
    )
}

/// Fails, showing what it said, unless the xfer run of `output` succeeded.
pub fn assert_success(output: &Output) {
    assert_succeeded(output, "xfer");
}

/// Fails, showing what it said, unless the command of `output` (`what`, for the message)
/// succeeded.
pub fn assert_succeeded(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}",
        output.status,
        said(output)
    );
}

/// Fails, showing what it said, if xfer fell back to SFTP: `what` (for the message) was to use
/// the agent.
pub fn assert_agent_used(output: &Output, what: &str) {
    assert!(
        !stderr(output).contains("using SFTP"),
        "{what} did not use the agent:\n{}",
        said(output)
    );
}

/// The JSON summary that `--json` prints on stdout; fails if there is none.
pub fn summary(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("no JSON summary ({error}):\n{}", said(output)))
}

/// At most the last `limit` bytes of `text`, cut at a character boundary.
pub fn tail(text: &str, limit: usize) -> &str {
    let mut start = text.len().saturating_sub(limit);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}
