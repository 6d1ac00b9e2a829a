//! shardd's configuration: one struct read from a TOML file, `SHARDD_*`
//! environment variables and command-line flags.
//!
//! Precedence is flags > environment > file > defaults. The defaults are
//! written once, as the clap `default_value`s below; the file is read over
//! them ([`Config::load_from`]) and [`Config::validate`] checks the result
//! before anything starts. Every option, its flag, variable and default is
//! listed in `docs/OPERATIONS.md` ("shardd configuration").
//!
//! A key `a.b` of the file is the flag `--a-b` and the variable `SHARDD_A_B`
//! (`etcd.dial_timeout` is `--etcd-dial-timeout` and `SHARDD_ETCD_DIAL_TIMEOUT`).

mod load;
mod types;
mod validate;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser};
use serde::{Deserialize, Serialize};

pub use types::{HumanDuration, InvalidDuration, LogFormat, Secret, StoreKind};

/// Everything shardd can be told at start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Parser)]
#[command(name = "shardd", version, about = "The shardkit daemon: topology store, leader election, HTTP API.")]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Read options from this TOML file (flags and SHARDD_* variables override it).
    #[arg(long = "config", env = "SHARDD_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config_file: Option<PathBuf>,

    /// Check the configuration, print it (secrets redacted) and exit.
    #[arg(long)]
    #[serde(skip)]
    pub check_config: bool,

    /// Name of the cluster: the etcd key prefix and the topology's cluster.
    #[arg(long, env = "SHARDD_CLUSTER", default_value = "default")]
    pub cluster: String,

    /// This process's id in the election and in logs [default: HOSTNAME-PID].
    #[arg(long, env = "SHARDD_MEMBER_ID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,

    /// Address the HTTP API listens on.
    #[arg(long, env = "SHARDD_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,

    /// Base URL other members use to reach this API (forwarded writes)
    /// [default: http://LISTEN, with the host name if LISTEN is a wildcard].
    #[arg(long, env = "SHARDD_ADVERTISE", value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,

    /// Bearer token required on every /v1 endpoint (prefer the variable or a
    /// file: flags are visible to other users of the machine).
    #[arg(long, env = "SHARDD_API_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_token: Option<Secret>,

    /// Read the bearer token from this file (surrounding whitespace is ignored).
    #[arg(long, env = "SHARDD_API_TOKEN_FILE", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_token_file: Option<PathBuf>,

    /// Leader lease time to live: a standby takes over this long after the
    /// leader dies (whole seconds, at least 2s).
    #[arg(long, env = "SHARDD_LEASE_TTL", default_value = "10s", value_name = "DURATION")]
    pub lease_ttl: HumanDuration,

    /// Where the topology is kept: local, etcd or memory.
    #[arg(long, env = "SHARDD_STORE", default_value = "local", value_enum)]
    pub store: StoreKind,

    /// The local store (store = "local").
    #[command(flatten)]
    pub local: LocalOptions,

    /// The etcd store and election (store = "etcd").
    #[command(flatten)]
    pub etcd: EtcdOptions,

    /// Logging.
    #[command(flatten)]
    pub log: LogOptions,

    /// Data moves (jobs).
    #[command(flatten)]
    pub mover: MoverOptions,

    /// Automatic rebalancing (off by default).
    #[command(flatten)]
    pub rebalance: RebalanceOptions,

    /// Interval of keep-alive comments on /v1/watch streams.
    #[arg(long, env = "SHARDD_WATCH_KEEP_ALIVE", default_value = "15s", value_name = "DURATION")]
    pub watch_keep_alive: HumanDuration,

    /// Timeout of a write forwarded from a follower to the leader.
    #[arg(long, env = "SHARDD_FORWARD_TIMEOUT", default_value = "30s", value_name = "DURATION")]
    pub forward_timeout: HumanDuration,

    /// How long shutdown waits for in-flight requests before closing them.
    #[arg(long, env = "SHARDD_SHUTDOWN_TIMEOUT", default_value = "30s", value_name = "DURATION")]
    pub shutdown_timeout: HumanDuration,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "SHARDD_MAX_BODY_BYTES", default_value = "67108864", value_name = "BYTES")]
    pub max_body_bytes: usize,
}

/// Options of the local store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Args)]
#[serde(default, deny_unknown_fields)]
pub struct LocalOptions {
    /// The JSON file holding the topology (created with its directory if missing).
    #[arg(id = "local_path", long = "local-path", env = "SHARDD_LOCAL_PATH")]
    #[arg(default_value = "./shardd-data/topology.json", value_name = "FILE")]
    pub path: PathBuf,
}

/// Options of the etcd store and of the leader election.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Args)]
#[serde(default, deny_unknown_fields)]
pub struct EtcdOptions {
    /// etcd client URLs, comma-separated.
    #[arg(id = "etcd_endpoints", long = "etcd-endpoints", env = "SHARDD_ETCD_ENDPOINTS", value_delimiter = ',')]
    #[arg(default_value = "http://127.0.0.1:2379", value_name = "URLS")]
    pub endpoints: Vec<String>,

    /// etcd user name (with a password).
    #[arg(id = "etcd_username", long = "etcd-username", env = "SHARDD_ETCD_USERNAME", value_name = "USER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,

    /// etcd password (prefer the variable or a file).
    #[arg(id = "etcd_password", long = "etcd-password", env = "SHARDD_ETCD_PASSWORD", hide_env_values = true)]
    #[arg(value_name = "PASSWORD")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,

    /// Read the etcd password from this file.
    #[arg(id = "etcd_password_file", long = "etcd-password-file", env = "SHARDD_ETCD_PASSWORD_FILE")]
    #[arg(value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,

    /// CA certificate (PEM) to verify etcd's TLS certificate; enables TLS
    /// (builds with the `etcd-tls` feature, on by default); every endpoint
    /// must then be `https://`.
    #[arg(id = "etcd_ca_file", long = "etcd-ca-file", env = "SHARDD_ETCD_CA_FILE", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,

    /// Client certificate (PEM) for TLS client authentication (with a key).
    #[arg(id = "etcd_cert_file", long = "etcd-cert-file", env = "SHARDD_ETCD_CERT_FILE", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,

    /// Private key (PEM) of the client certificate.
    #[arg(id = "etcd_key_file", long = "etcd-key-file", env = "SHARDD_ETCD_KEY_FILE", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,

    /// Name expected in etcd's server certificates when it is not the
    /// endpoints' host (e.g. endpoints given by IP address).
    #[arg(id = "etcd_tls_domain", long = "etcd-tls-domain", env = "SHARDD_ETCD_TLS_DOMAIN", value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_domain: Option<String>,

    /// How long connecting to etcd may take.
    #[arg(id = "etcd_dial_timeout", long = "etcd-dial-timeout", env = "SHARDD_ETCD_DIAL_TIMEOUT")]
    #[arg(default_value = "5s", value_name = "DURATION")]
    pub dial_timeout: HumanDuration,
}

/// Settings of the mover, the leader's runner of data-moving jobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Args)]
#[serde(default, deny_unknown_fields)]
pub struct MoverOptions {
    /// Rows per copy chunk, replay batch, verification chunk and cleanup
    /// batch (a job can ask for its own).
    #[arg(id = "mover_batch_rows", long = "mover-batch-rows", env = "SHARDD_MOVER_BATCH_ROWS")]
    #[arg(default_value = "10000", value_name = "ROWS")]
    pub batch_rows: u64,

    /// Copy throttle in rows per second per job; 0 means unthrottled (a
    /// job can ask for its own).
    #[arg(id = "mover_rows_per_second", long = "mover-rows-per-second", env = "SHARDD_MOVER_ROWS_PER_SECOND")]
    #[arg(default_value = "0", value_name = "ROWS")]
    pub rows_per_second: u64,

    /// How many jobs run at once; more wait in the queue.
    #[arg(id = "mover_max_jobs", long = "mover-max-jobs", env = "SHARDD_MOVER_MAX_JOBS")]
    #[arg(default_value = "2", value_name = "N")]
    pub max_jobs: usize,

    /// The change-log backlog small enough to fence and cut over.
    #[arg(id = "mover_cutover_backlog", long = "mover-cutover-backlog", env = "SHARDD_MOVER_CUTOVER_BACKLOG")]
    #[arg(default_value = "500", value_name = "ENTRIES")]
    pub cutover_backlog: u64,

    /// How long connecting to a shard database may take.
    #[arg(id = "mover_connect_timeout", long = "mover-connect-timeout", env = "SHARDD_MOVER_CONNECT_TIMEOUT")]
    #[arg(default_value = "10s", value_name = "DURATION")]
    pub connect_timeout: HumanDuration,

    /// How long a failing step is retried (with backoff) before the job fails.
    #[arg(id = "mover_retry_for", long = "mover-retry-for", env = "SHARDD_MOVER_RETRY_FOR")]
    #[arg(default_value = "60s", value_name = "DURATION")]
    pub retry_for: HumanDuration,
}

impl Default for MoverOptions {
    fn default() -> Self {
        Config::default().mover
    }
}

/// Automatic rebalancing: the leader plans every `interval`; when a
/// keyspace's imbalance stays above `threshold` for `sustain`, it starts the
/// plan's jobs, at most once per `min_gap` per keyspace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Args)]
#[serde(default, deny_unknown_fields)]
pub struct RebalanceOptions {
    /// Turn automatic rebalancing on.
    #[arg(id = "rebalance_auto", long = "rebalance-auto", env = "SHARDD_REBALANCE_AUTO")]
    #[arg(default_value = "false", value_name = "BOOL", action = clap::ArgAction::Set)]
    pub auto: bool,

    /// How often to measure and plan.
    #[arg(id = "rebalance_interval", long = "rebalance-interval", env = "SHARDD_REBALANCE_INTERVAL")]
    #[arg(default_value = "1m", value_name = "DURATION")]
    pub interval: HumanDuration,

    /// The imbalance (largest cost/share) above which to act.
    #[arg(id = "rebalance_threshold", long = "rebalance-threshold", env = "SHARDD_REBALANCE_THRESHOLD")]
    #[arg(default_value = "1.25", value_name = "RATIO")]
    pub threshold: f64,

    /// How long the imbalance must stay above the threshold.
    #[arg(id = "rebalance_sustain", long = "rebalance-sustain", env = "SHARDD_REBALANCE_SUSTAIN")]
    #[arg(default_value = "10m", value_name = "DURATION")]
    pub sustain: HumanDuration,

    /// The least time between two automatic rebalances of a keyspace.
    #[arg(id = "rebalance_min_gap", long = "rebalance-min-gap", env = "SHARDD_REBALANCE_MIN_GAP")]
    #[arg(default_value = "1h", value_name = "DURATION")]
    pub min_gap: HumanDuration,

    /// What to balance: rows, bytes, load or mix.
    #[arg(id = "rebalance_cost", long = "rebalance-cost", env = "SHARDD_REBALANCE_COST")]
    #[arg(default_value = "rows", value_name = "COST")]
    pub cost: String,
}

impl Default for RebalanceOptions {
    fn default() -> Self {
        Config::default().rebalance
    }
}

/// Logging options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Args)]
#[serde(default, deny_unknown_fields)]
pub struct LogOptions {
    /// Log line format: text or json.
    #[arg(id = "log_format", long = "log-format", env = "SHARDD_LOG_FORMAT", default_value = "text", value_enum)]
    #[arg(value_name = "FORMAT")]
    pub format: LogFormat,

    /// Which log lines to write, as an EnvFilter directive such as
    /// `info,shardd=debug` [default: $RUST_LOG, else info].
    #[arg(id = "log_filter", long = "log-filter", env = "SHARDD_LOG_FILTER", value_name = "DIRECTIVES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

impl Default for Config {
    /// The defaults alone: no file, no flags, no environment.
    fn default() -> Self {
        load::defaults()
    }
}

impl Default for LocalOptions {
    fn default() -> Self {
        Config::default().local
    }
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Config::default().etcd
    }
}

impl Default for LogOptions {
    fn default() -> Self {
        Config::default().log
    }
}

/// The configuration is unusable. shardd exits with code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The command line is malformed (or `--help`/`--version` was asked for:
    /// [`clap::Error::exit`] prints it with the right exit code).
    #[error(transparent)]
    Cli(#[from] clap::Error),
    /// The configuration file cannot be read or parsed.
    #[error("configuration file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column where known.
        message: String,
    },
    /// An option has a wrong value.
    #[error("invalid option {key} ({}): {message}", load::flag_and_env(key))]
    Invalid {
        /// The option's key in the file, e.g. `etcd.endpoints`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    fn invalid(key: &'static str, message: impl Into<String>) -> Self {
        ConfigError::Invalid { key, message: message.into() }
    }
}

impl Config {
    /// Reads the configuration of this process: its command line, its
    /// `SHARDD_*` environment and the `--config` file; then validates it.
    pub fn load() -> Result<Config, ConfigError> {
        Config::load_from(std::env::args_os())
    }

    /// Like [`Config::load`] with these arguments (the first is the program
    /// name). The environment is still read.
    pub fn load_from<I, T>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let config = load::load(args)?;
        config.validate()?;
        Ok(config)
    }

    /// This member's id: `member_id`, else `HOSTNAME-PID`.
    pub fn member_id(&self) -> String {
        match &self.member_id {
            Some(id) => id.clone(),
            None => format!("{}-{}", load::hostname(), std::process::id()),
        }
    }

    /// The base URL other members reach this API at, given the address the
    /// API is bound to (which differs from `listen` when its port is 0).
    pub fn advertise_url(&self, bound: SocketAddr) -> String {
        if let Some(advertise) = &self.advertise {
            let url = advertise.trim_end_matches('/');
            return if url.contains("://") { url.to_owned() } else { format!("http://{url}") };
        }
        let host = match bound.ip() {
            ip if ip.is_unspecified() => load::hostname(),
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        };
        format!("http://{host}:{}", bound.port())
    }

    /// The API bearer token, from `api_token` or read from `api_token_file`.
    pub fn api_token(&self) -> Result<Option<Secret>, ConfigError> {
        load::secret(self.api_token.as_ref(), self.api_token_file.as_deref(), "api_token_file")
    }

    /// The etcd password, from `etcd.password` or read from `etcd.password_file`.
    pub fn etcd_password(&self) -> Result<Option<Secret>, ConfigError> {
        load::secret(self.etcd.password.as_ref(), self.etcd.password_file.as_deref(), "etcd.password_file")
    }

    /// The configuration as TOML, with secrets shown as `***`: for
    /// `--check-config` and for logs.
    pub fn to_redacted_toml(&self) -> String {
        let mut copy = self.clone();
        let hide = |s: &mut Option<Secret>| {
            if s.is_some() {
                *s = Some(Secret::new("***"));
            }
        };
        hide(&mut copy.api_token);
        hide(&mut copy.etcd.password);
        toml::to_string(&copy).unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }
}

#[cfg(test)]
mod tests;
