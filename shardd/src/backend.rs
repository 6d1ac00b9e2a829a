//! Opening the configured store, and the election that goes with it.

use std::sync::Arc;
use std::time::Duration;

use shardlib::store::etcd::{EtcdConfig, EtcdStore, TlsConfig};
use shardlib::store::local::LocalStore;
use shardlib::store::{StoreError, TopologyStore};

use crate::config::{Config, ConfigError, StoreKind};
use crate::leader::{Election, Member, etcd};
use crate::metrics::Metrics;

/// Why the daemon could not start (or stopped with an error).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened or holds an invalid topology.
    #[error("cannot open the {kind} topology store: {source}")]
    Store {
        /// `local`, `etcd` or `memory`.
        kind: &'static str,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The election's etcd client could not be created.
    #[error("cannot connect the election client to etcd: {0}")]
    Election(String),
    /// The API address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client for forwarding could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// A task of the server failed.
    #[error("server task failed: {0}")]
    Task(String),
}

impl ServerError {
    /// The process exit code: 2 for bad configuration (including a store
    /// configuration that cannot work, such as TLS files that cannot be
    /// read) or an invalid stored topology, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServerError::Config(_) => 2,
            ServerError::Store {
                source: StoreError::Invalid(_) | StoreError::InvalidName(_) | StoreError::Config { .. },
                ..
            } => 2,
            _ => 1,
        }
    }
}

/// Opens the store `config` names.
pub(crate) async fn open_store(config: &Config) -> Result<Arc<dyn TopologyStore>, ServerError> {
    let kind = config.store.as_str();
    let wrap = |source| ServerError::Store { kind, source };
    let store: Arc<dyn TopologyStore> = match config.store {
        StoreKind::Local => {
            let path = config.local.path.clone();
            let cluster = config.cluster.clone();
            let opened = tokio::task::spawn_blocking(move || {
                if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend {
                        message: format!("cannot create the directory {}: {e}", dir.display()),
                    })?;
                }
                LocalStore::open(path, &cluster)
            })
            .await
            .map_err(|e| ServerError::Task(e.to_string()))?;
            Arc::new(opened.map_err(wrap)?)
        }
        StoreKind::Memory => Arc::new(LocalStore::in_memory(&config.cluster).map_err(wrap)?),
        StoreKind::Etcd => Arc::new(EtcdStore::connect(etcd_store_config(config)?).await.map_err(wrap)?),
    };
    Ok(store)
}

/// The store's etcd configuration: endpoints, credentials, TLS. The
/// election client is made from it too, so both connect alike.
fn etcd_store_config(config: &Config) -> Result<EtcdConfig, ServerError> {
    let etcd = &config.etcd;
    let mut store = EtcdConfig::new(etcd.endpoints.clone(), config.cluster.clone());
    store.connect_timeout = etcd.dial_timeout.get();
    if let (Some(user), Some(password)) = (&etcd.username, config.etcd_password()?) {
        store = store.with_user(user.clone(), password.expose());
    }
    if let Some(ca_file) = &etcd.ca_file {
        store.tls = Some(TlsConfig {
            ca_file: ca_file.clone(),
            cert_file: etcd.cert_file.clone(),
            key_file: etcd.key_file.clone(),
            domain: etcd.tls_domain.clone(),
        });
    }
    Ok(store)
}

/// Starts the election that fits the store.
pub(crate) async fn start_election(
    config: &Config,
    store: Arc<dyn TopologyStore>,
    me: Member,
    metrics: Arc<Metrics>,
) -> Result<Election, ServerError> {
    let ttl = config.lease_ttl.get();
    match config.store {
        StoreKind::Local | StoreKind::Memory => Ok(Election::start_with_store(store, me, ttl, metrics)),
        StoreKind::Etcd => {
            let client = election_client(config).await?;
            let settings = etcd::Settings { client, cluster: config.cluster.clone(), ttl };
            Ok(Election::start_with_etcd(settings, me, metrics))
        }
    }
}

/// A client for the election alone. No request timeout: a campaign waits
/// as long as another member leads. HTTP/2 keep-alives and
/// `require_leader` make calls fail fast when the etcd member is cut off.
/// Credentials and TLS are the store's ([`EtcdConfig::client_options`]).
async fn election_client(config: &Config) -> Result<etcd_client::Client, ServerError> {
    let etcd = &config.etcd;
    let base = etcd_client::ConnectOptions::new()
        .with_connect_timeout(etcd.dial_timeout.get())
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    let options = etcd_store_config(config)?
        .client_options(base)
        .map_err(|source| ServerError::Store { kind: StoreKind::Etcd.as_str(), source })?;
    let connecting = etcd_client::Client::connect(&etcd.endpoints, Some(options));
    match tokio::time::timeout(etcd.dial_timeout.get() * 2, connecting).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(error)) => Err(ServerError::Election(error.to_string())),
        Err(_) => Err(ServerError::Election(format!("etcd did not answer within {}", etcd.dial_timeout))),
    }
}
