//! Log output: `tracing` with an `EnvFilter`, as text or JSON lines.
//!
//! Messages are lowercase with values in fields (`keyspace = users`), and
//! never carry a secret: DSNs are written through their redacting
//! `Display`, tokens and passwords are never logged.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogOptions};

/// The filter used when neither `log.filter` nor `RUST_LOG` is set.
pub const DEFAULT_FILTER: &str = "info";

/// Installs the global subscriber (once per process; the binary calls it).
pub fn init(options: &LogOptions) -> Result<(), String> {
    let directives = options
        .filter
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| DEFAULT_FILTER.to_owned());
    let filter = EnvFilter::try_new(&directives).map_err(|e| format!("invalid log filter {directives:?}: {e}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match options.format {
        // Colors only on a terminal: log files and pipes get plain text.
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
    installed.map_err(|e| format!("cannot install the logger: {e}"))
}
