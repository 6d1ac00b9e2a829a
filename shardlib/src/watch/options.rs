//! What a watcher reads, and how patiently.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::WatchError;
use crate::store::TopologyStore;

/// Where a [`TopologyWatcher`](super::TopologyWatcher) reads the topology.
#[derive(Clone)]
#[non_exhaustive]
pub enum Source {
    /// A [`TopologyStore`]: etcd ([`EtcdStore`](crate::store::etcd::EtcdStore),
    /// feature `etcd`) or the embedded [`LocalStore`](crate::store::local::LocalStore).
    /// The watcher reads a snapshot, then watches from the next epoch.
    Store(Arc<dyn TopologyStore>),
    /// shardd's `GET /v1/watch?after=N` server-sent-event stream (feature
    /// `shardd-source`): for services that cannot reach the store
    /// themselves, such as with shardd's embedded store. shardd redacts the
    /// passwords of connection strings: routing works, but credentials for
    /// the shard databases must come from elsewhere.
    #[cfg(feature = "shardd-source")]
    Shardd {
        /// shardd's base URL, e.g. `http://127.0.0.1:7070`.
        url: String,
        /// A bearer token for the API, if shardd requires one.
        token: Option<String>,
    },
    /// A topology file (TOML if its name ends in `.toml`, JSON otherwise),
    /// read at start and on each [`reload`](super::TopologyWatcher::reload).
    File(PathBuf),
}

impl Source {
    /// A store source.
    pub fn store(store: impl TopologyStore) -> Self {
        Source::Store(Arc::new(store))
    }

    /// A file source.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Source::File(path.into())
    }

    /// A shardd source.
    #[cfg(feature = "shardd-source")]
    pub fn shardd(url: impl Into<String>, token: Option<String>) -> Self {
        Source::Shardd { url: url.into(), token }
    }

    /// The kind of source: `store`, `shardd` or `file` (a metric label and
    /// log field).
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Store(_) => "store",
            #[cfg(feature = "shardd-source")]
            Source::Shardd { .. } => "shardd",
            Source::File(_) => "file",
        }
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Store(_) => f.write_str("Source::Store"),
            #[cfg(feature = "shardd-source")]
            Source::Shardd { url, token } => f
                .debug_struct("Source::Shardd")
                .field("url", &crate::topology::redact(url))
                .field("token", &token.as_ref().map(|_| "***"))
                .finish(),
            Source::File(path) => f.debug_tuple("Source::File").field(path).finish(),
        }
    }
}

/// How a watcher loads, reconnects and reports. [`Default`] suits
/// production; tests shorten or lengthen the timeouts.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// The watcher's name: the `watcher` label of its metrics and a field
    /// of its log lines. Give each watcher of a process its own.
    pub name: String,
    /// How long [`TopologyWatcher::start`](super::TopologyWatcher::start)
    /// tries to load the first topology before it fails (30 s).
    pub initial_load_timeout: Duration,
    /// How long one request to the source may take: a store read or probe,
    /// or the response headers of shardd's stream (10 s).
    pub request_timeout: Duration,
    /// The first delay before reconnecting after a failure (50 ms). Each
    /// further failure doubles it, with jitter, up to `backoff_max`.
    pub backoff_min: Duration,
    /// The longest delay between two reconnection attempts (5 s).
    pub backoff_max: Duration,
    /// A connection that stayed healthy this long resets the delay to
    /// `backoff_min` when it fails (10 s).
    pub backoff_reset_after: Duration,
    /// Store source: when the watch stream has been quiet this long, ask the
    /// store something cheap, so that a silently dead connection is noticed
    /// (10 s). `None` relies on the watch stream alone to report failures.
    pub health_check_interval: Option<Duration>,
    /// shardd source: a stream that sends nothing (not even a keep-alive
    /// comment) this long is treated as lost, so that a silently dead
    /// connection is noticed (60 s: four of shardd's default 15 s keep-alive
    /// intervals). Keep it above shardd's `watch_keep_alive`. `None` never
    /// gives up on a quiet stream.
    pub idle_timeout: Option<Duration>,
    /// How many updates [`TopologyWatcher::updates`](super::TopologyWatcher::updates)
    /// buffers for a slow receiver before it lags (1024).
    pub update_buffer: usize,
    /// Store source: register the watcher as a client of the store under
    /// this id (`/<cluster>/clients/<id>` in etcd), reporting
    /// `{"watcher": <name>, "epoch": <installed epoch>}` after every
    /// install, so that operators see which services lag (shardd's
    /// `GET /v1/clients`). A name: 1 to 64 characters from
    /// `[A-Za-z0-9_.-]`; give each process its own (e.g. service name and
    /// host). `None` (the default) registers nothing. Other sources refuse
    /// it.
    pub register_as: Option<String>,
    /// How long a registration outlives a process that died without
    /// removing it (10 s; whole seconds).
    pub registration_ttl: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            name: "default".to_owned(),
            initial_load_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            backoff_reset_after: Duration::from_secs(10),
            health_check_interval: Some(Duration::from_secs(10)),
            idle_timeout: Some(Duration::from_secs(60)),
            update_buffer: 1024,
            register_as: None,
            registration_ttl: Duration::from_secs(10),
        }
    }
}

impl WatchOptions {
    /// The default options with this name.
    pub fn named(name: impl Into<String>) -> Self {
        WatchOptions { name: name.into(), ..WatchOptions::default() }
    }

    /// Checks that the options make sense together.
    pub fn validate(&self) -> Result<(), WatchError> {
        let invalid = |reason: &str| Err(WatchError::InvalidOptions { reason: reason.to_owned() });
        if self.name.trim().is_empty() {
            return invalid("the name is empty");
        }
        if self.request_timeout.is_zero() {
            return invalid("request_timeout is zero");
        }
        if self.backoff_min.is_zero() {
            return invalid("backoff_min is zero");
        }
        if self.backoff_min > self.backoff_max {
            return invalid("backoff_min is larger than backoff_max");
        }
        if self.health_check_interval.is_some_and(|d| d.is_zero()) {
            return invalid("health_check_interval is zero");
        }
        if self.idle_timeout.is_some_and(|d| d.is_zero()) {
            return invalid("idle_timeout is zero");
        }
        if self.update_buffer == 0 {
            return invalid("update_buffer is zero");
        }
        if let Some(Err(error)) = self.register_as.as_deref().map(|id| crate::id::validate_name("register_as", id)) {
            return invalid(&error.to_string());
        }
        if self.registration_ttl < Duration::from_secs(1) {
            return invalid("registration_ttl is shorter than 1s");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_contradictions_are_named() {
        WatchOptions::default().validate().unwrap();
        let options = WatchOptions { backoff_min: Duration::from_secs(9), ..WatchOptions::named("w") };
        let err = options.validate().unwrap_err();
        assert_eq!(err.to_string(), "invalid watcher options: backoff_min is larger than backoff_max");
        let options = WatchOptions { update_buffer: 0, ..WatchOptions::default() };
        assert!(options.validate().is_err());
        assert!(WatchOptions::named(" ").validate().is_err());
        let options = WatchOptions { register_as: Some("users api".into()), ..WatchOptions::default() };
        assert!(options.validate().unwrap_err().to_string().contains("register_as"));
    }

    #[test]
    fn debug_hides_tokens_and_passwords() {
        assert_eq!(format!("{:?}", Source::file("/tmp/t.toml")), "Source::File(\"/tmp/t.toml\")");
        #[cfg(feature = "shardd-source")]
        {
            let source = Source::shardd("http://op:hunter2@shardd:7070", Some("s3cret".into()));
            let text = format!("{source:?}");
            assert!(!text.contains("hunter2") && !text.contains("s3cret"), "{text}");
        }
    }
}
