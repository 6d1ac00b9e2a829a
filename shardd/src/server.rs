//! Starting and stopping the daemon in-process: [`Server::start`] returns a
//! [`Handle`]; [`run`] is what the binary calls.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use shardlib::store::TopologyStore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState, forward::Forwarder};
use crate::backend::{self, ServerError};
use crate::config::Config;
use crate::leader::{LeaderHandle, Member};
use crate::metrics::Metrics;
use crate::watcher::{self, WatchStatus};

/// The daemon.
pub struct Server;

/// A running server.
pub struct Handle {
    addr: SocketAddr,
    store: Arc<dyn TopologyStore>,
    member: Member,
    leader: LeaderHandle,
    watch_status: WatchStatus,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Server {
    /// Validates `config`, opens the store, joins the election, binds the
    /// API and serves it in the background.
    pub async fn start(config: Config) -> Result<Handle, ServerError> {
        config.validate()?;
        let store = backend::open_store(&config).await?;
        Server::serve(config, store, false).await
    }

    /// Like [`Server::start`] with a store opened by the caller, for tests
    /// and embedding: the election is the store's own
    /// ([`TopologyStore::try_lead`]), whatever `config.store` says, so that
    /// several servers sharing one in-process store elect one leader and
    /// the others forward writes to it.
    pub async fn start_with_store(config: Config, store: Arc<dyn TopologyStore>) -> Result<Handle, ServerError> {
        config.validate()?;
        Server::serve(config, store, true).await
    }

    async fn serve(config: Config, store: Arc<dyn TopologyStore>, store_election: bool) -> Result<Handle, ServerError> {
        let token = config.api_token()?;
        let metrics = Arc::new(Metrics::new());
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Bind { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: config.listen, source })?;
        let member = Member { member_id: config.member_id(), address: config.advertise_url(addr) };
        let election = if store_election {
            crate::leader::Election::start_with_store(
                store.clone(),
                member.clone(),
                config.lease_ttl.get(),
                metrics.clone(),
            )
        } else {
            backend::start_election(&config, store.clone(), member.clone(), metrics.clone()).await?
        };
        let background = CancellationToken::new();
        let (watch_status, watch_task) = watcher::start(store.clone(), metrics.clone(), background.clone());
        let shutdown = CancellationToken::new();
        let leader = election.handle().clone();
        let service = crate::service::TopologyService::new(
            store.clone(),
            config.cluster.clone(),
            leader.clone(),
            metrics.clone(),
        );
        let (mover, mover_task) = crate::mover::Mover::start(
            crate::mover::runner::Context {
                store: store.clone(),
                service: service.clone(),
                leader: leader.clone(),
                metrics: metrics.clone(),
                options: config.mover.clone(),
            },
            background.clone(),
        );
        let auto_rebalance = crate::rebalance::start_auto(
            mover.clone(),
            service.clone(),
            leader.clone(),
            config.rebalance.clone(),
            background.clone(),
        );
        let state = Arc::new(AppState {
            cluster: config.cluster.clone(),
            store_kind: config.store,
            service,
            leader: leader.clone(),
            watch_status: watch_status.clone(),
            metrics: metrics.clone(),
            token,
            forwarder: Forwarder::new(config.forward_timeout.get(), config.max_body_bytes)?,
            mover,
            keep_alive: config.watch_keep_alive.get(),
            shutdown: shutdown.clone(),
        });
        let app = api::router(state, config.max_body_bytes);
        tracing::info!(
            %addr,
            member_id = %member.member_id,
            advertise = %member.address,
            cluster = %config.cluster,
            store = config.store.as_str(),
            auth = config.api_token.is_some() || config.api_token_file.is_some(),
            "shardd listening"
        );
        let grace = config.shutdown_timeout.get();
        let serve_shutdown = shutdown.clone();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(serve_shutdown.clone().cancelled_owned());
            let mut serving = tokio::spawn(async move { serve.await });
            // 1. Stop accepting; event streams end with the same token.
            tokio::select! {
                result = &mut serving => tracing::error!(?result, "the API server stopped by itself"),
                () = serve_shutdown.cancelled() => {}
            }
            // 2. Finish in-flight requests, up to the grace period.
            if !serving.is_finished() {
                match tokio::time::timeout(grace, &mut serving).await {
                    Ok(_) => tracing::info!("in-flight requests finished"),
                    Err(_) => {
                        tracing::warn!(grace = ?grace, "requests still running after the grace period; closing them");
                        serving.abort();
                    }
                }
            }
            // 3. Stop the job runners at their next check (their jobs stay
            //    stored; the next leader resumes them), then resign, so
            //    that a standby takes over at once.
            background.cancel();
            mover_task.await.map_err(|e| ServerError::Task(e.to_string()))?;
            if let Some(task) = auto_rebalance {
                task.await.map_err(|e| ServerError::Task(e.to_string()))?;
            }
            election.resign().await;
            // 4. Background tasks.
            watch_task.await.map_err(|e| ServerError::Task(e.to_string()))?;
            tracing::info!("shardd stopped");
            Ok(())
        });
        Ok(Handle { addr, store, member, leader, watch_status, metrics, shutdown, task })
    }
}

impl Handle {
    /// The address the API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API's base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The topology store this server uses (writes made through it bypass
    /// the API's validation of changes and its fencing).
    pub fn store(&self) -> &Arc<dyn TopologyStore> {
        &self.store
    }

    /// This member's id and advertised address.
    pub fn member(&self) -> &Member {
        &self.member
    }

    /// The election as this member sees it.
    pub fn leader(&self) -> &LeaderHandle {
        &self.leader
    }

    /// Whether this member leads now.
    pub fn is_leader(&self) -> bool {
        self.leader.is_leader()
    }

    /// The state of this member's own watch of the store.
    pub fn watch_status(&self) -> &WatchStatus {
        &self.watch_status
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A token that shuts the server down when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Shuts down gracefully (see [`shutdown`](crate::shutdown)) and waits.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the server has stopped (after its shutdown token is
    /// cancelled).
    pub async fn wait(self) -> Result<(), ServerError> {
        self.task.await.map_err(|e| ServerError::Task(e.to_string()))?
    }
}

/// Runs the daemon until `signal` resolves, then shuts down gracefully.
pub async fn run(config: Config, signal: impl Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
    let handle = Server::start(config).await?;
    let waiter = crate::shutdown::cancel_on(handle.shutdown_token(), signal);
    let result = handle.wait().await;
    waiter.abort();
    result
}
