//! The one error type of xfer.
//!
//! Every failure says what failed (the message names the host, address or path), whether
//! trying again can help (`transient`), and what the user can do next (`hint`). The error
//! kind decides the process exit code, which is documented in the README; nothing else in the
//! crate chooses exit codes.

use std::fmt;

/// What class of failure this is. It decides the exit code and the default retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The command line is wrong (unknown option, bad target).
    Usage,
    /// A configuration file cannot be read or says something xfer refuses (`Match exec`).
    Config,
    /// Name resolution, TCP connect, proxy, timeout, keepalive, a dropped link.
    Connect,
    /// The server refused every key, or a key cannot be used.
    Auth,
    /// The server's host key is unknown or changed and the policy refuses it.
    HostKey,
    /// The remote side answered with an error (no such file, permission denied, ...).
    Remote,
    /// Reading or writing a local file failed.
    LocalIo,
    /// Some work finished and some did not: running the same command again resumes.
    Partial,
    /// A check (such as `xfer doctor`) ran and found problems.
    CheckFailed,
    /// xfer broke one of its own rules (a task panicked, a state it never enters): a bug to
    /// report, not something the user or the remote did.
    Internal,
    /// Ctrl-C (SIGINT) stopped the run; what was done is kept and a re-run resumes.
    Interrupted,
    /// SIGTERM stopped the run; what was done is kept and a re-run resumes.
    Terminated,
}

impl ErrorKind {
    /// The process exit code for a run that ends with this error. See README "Exit codes".
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Partial => 1,
            ErrorKind::Usage | ErrorKind::Config => 2,
            ErrorKind::Connect => 3,
            ErrorKind::Auth | ErrorKind::HostKey => 4,
            ErrorKind::LocalIo => 5,
            ErrorKind::Remote => 6,
            ErrorKind::CheckFailed => 7,
            // EX_SOFTWARE of sysexits.h: an internal software error.
            ErrorKind::Internal => 70,
            // 128 + the signal's number, as shells report a process a signal ended.
            ErrorKind::Interrupted => 130,
            ErrorKind::Terminated => 143,
        }
    }

    /// Whether the same operation, tried again on a fresh connection, may succeed.
    pub fn default_transient(self) -> bool {
        matches!(self, ErrorKind::Connect | ErrorKind::Partial)
    }
}

/// An error with the context a person needs to act on it.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    hint: Option<String>,
    transient: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            hint: None,
            transient: kind.default_transient(),
            source: None,
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Usage, message)
    }

    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    pub fn connect(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Connect, message)
    }

    pub fn auth(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Auth, message)
    }

    pub fn host_key(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::HostKey, message)
    }

    pub fn remote(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Remote, message)
    }

    /// xfer broke one of its own rules: a bug, said as one with what to do about it.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message).with_hint(
            "this is a bug in xfer: please report it with the command and the output of a re-run with -v; re-running may get past it",
        )
    }

    pub fn local_io(message: impl Into<String>, source: std::io::Error) -> Self {
        Self::new(ErrorKind::LocalIo, message).with_source(source)
    }

    /// Adds what the user can do about it.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Overrides the kind's default: a remote error caused by a dropped link is transient,
    /// a connect error caused by a refused proxy command may not be.
    pub fn transient(mut self, transient: bool) -> Self {
        self.transient = transient;
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// Whether the source attached with [`Error::with_source`] is a `T`: how a module lets its
    /// callers tell apart a condition it marks that way (a connection closed before it logged
    /// in, a channel the server refused) from other errors of the same kind.
    pub fn source_is<T: std::error::Error + 'static>(&self) -> bool {
        self.source
            .as_deref()
            .is_some_and(|source| source.is::<T>())
    }

    /// Prefixes the message with where it happened, e.g. `gpu-1 (10.0.0.5:22)`.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            let text = source.to_string();
            if !text.is_empty() && !self.message.contains(&text) {
                write!(f, ": {text}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_per_class() {
        let kinds = [
            ErrorKind::Partial,
            ErrorKind::Usage,
            ErrorKind::Connect,
            ErrorKind::Auth,
            ErrorKind::LocalIo,
            ErrorKind::Remote,
            ErrorKind::CheckFailed,
            ErrorKind::Internal,
            ErrorKind::Interrupted,
            ErrorKind::Terminated,
        ];
        let mut codes: Vec<i32> = kinds.iter().map(|k| k.exit_code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), kinds.len());
        assert!(!codes.contains(&0));
    }

    #[test]
    fn display_includes_source_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let error = Error::local_io("reading /x", io).with_hint("check the path");
        assert_eq!(error.to_string(), "reading /x: gone");
        assert_eq!(error.hint(), Some("check the path"));
        assert!(!error.is_transient());
        assert!(Error::connect("reset").is_transient());
    }
}
