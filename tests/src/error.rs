//! The one error type of the fixtures.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// The result of a fixture operation.
pub type Result<T, E = FixtureError> = std::result::Result<T, E>;

/// Why a fixture operation failed.
///
/// Errors about a server ([`FixtureError::Server`]) carry the last lines of
/// that server's log, so that a failure in CI can be diagnosed from the test
/// output alone. `Debug` prints the same text as `Display`, so `unwrap()` and
/// tests returning `Result` show readable messages rather than escaped
/// strings.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum FixtureError {
    /// A program the fixture needs (etcd, initdb, postgres, psql) was not found.
    #[error("could not find {program} (looked at: {searched}); {hint}")]
    ProgramNotFound {
        /// The program that was looked for.
        program: String,
        /// Where it was looked for.
        searched: String,
        /// How to make it available.
        hint: String,
    },

    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A helper program ran but did not succeed.
    #[error("`{command}` {outcome}{}", output_section(.stdout, .stderr))]
    CommandFailed {
        /// The command line, for the reader.
        command: String,
        /// How it ended, e.g. "exited with exit status: 1" or "timed out after 60s".
        outcome: String,
        /// Its standard output.
        stdout: String,
        /// Its standard error.
        stderr: String,
    },

    /// A condition did not hold before its deadline.
    #[error("timed out after {waited:.1?} waiting for {what}{}", last_section(.last))]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        waited: Duration,
        /// The last observation that was not yet the awaited one.
        last: Option<String>,
    },

    /// A server process exited while it was expected to run.
    #[error("the process exited with {status} while {what}")]
    Exited {
        /// What the fixture was doing or waiting for.
        what: String,
        /// The exit status of the process.
        status: ExitStatus,
    },

    /// The fixture was asked for something it cannot do.
    #[error("{0}")]
    Usage(String),

    /// An error concerning a server, with the end of that server's log.
    #[error("{server}: {cause}\n--- last lines of {} ---\n{log_tail}--- end of log ---", .log.display())]
    Server {
        /// Which server, e.g. "etcd member `etcd-0` (http://127.0.0.1:41235)".
        server: String,
        /// What went wrong.
        cause: Box<FixtureError>,
        /// The server's log file.
        log: PathBuf,
        /// The last lines of that log file.
        log_tail: String,
    },
}

impl fmt::Debug for FixtureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FixtureError {
    /// An [`FixtureError::Io`] error with the given context.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        FixtureError::Io { context: context.into(), source }
    }

    /// Whether the server failed because one of its ports was taken, so that
    /// starting it again on other ports may succeed.
    pub(crate) fn is_address_in_use(&self) -> bool {
        match self {
            FixtureError::Server { log_tail, cause, .. } => {
                log_tail.to_ascii_lowercase().contains("address already in use") || cause.is_address_in_use()
            }
            FixtureError::Io { source, .. } => source.kind() == io::ErrorKind::AddrInUse,
            _ => false,
        }
    }
}

fn output_section(stdout: &str, stderr: &str) -> String {
    let mut out = String::new();
    for (name, text) in [("stdout", stdout), ("stderr", stderr)] {
        let text = text.trim_end();
        if !text.is_empty() {
            out.push_str(&format!("\n--- {name} ---\n{text}"));
        }
    }
    out
}

fn last_section(last: &Option<String>) -> String {
    match last {
        Some(last) => format!(" (last: {last})"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_error_shows_cause_and_log_tail() {
        let err = FixtureError::Server {
            server: "etcd `a`".into(),
            cause: Box::new(FixtureError::Usage("boom".into())),
            log: PathBuf::from("/tmp/x/etcd.log"),
            log_tail: "line one\nline two\n".into(),
        };
        let text = format!("{err:?}");
        assert!(
            text.starts_with("etcd `a`: boom\n--- last lines of /tmp/x/etcd.log ---\nline one\nline two\n"),
            "{text}"
        );
    }

    #[test]
    fn address_in_use_is_found_in_the_log_tail() {
        let err = FixtureError::Server {
            server: "s".into(),
            cause: Box::new(FixtureError::Usage("exited".into())),
            log: PathBuf::new(),
            log_tail: "listen tcp 127.0.0.1:1: bind: address already in use\n".into(),
        };
        assert!(err.is_address_in_use());
        assert!(!FixtureError::Usage("x".into()).is_address_in_use());
    }

    #[test]
    fn timeout_mentions_the_last_observation() {
        let err = FixtureError::Timeout {
            what: "etcd to be healthy".into(),
            waited: Duration::from_millis(1500),
            last: Some("connection refused".into()),
        };
        assert_eq!(err.to_string(), "timed out after 1.5s waiting for etcd to be healthy (last: connection refused)");
    }
}
