//! # shardd
//!
//! The shardkit daemon. Several copies run; one is the **leader**, the only
//! writer of the topology. Every copy serves the HTTP/JSON API that
//! `shardctl` uses (followers forward writes to the leader), `/metrics`
//! and health checks.
//!
//! ```text
//!  shardctl ──HTTP/JSON──► api (axum, /v1, bearer token)
//!                           │ reads: snapshot, watch (SSE)
//!                           │ writes: service ── validate, CAS + retry, fence
//!                           ▼
//!                  TopologyStore (shardlib): etcd | local file | memory
//!                           ▲
//!  leader ── etcd election API (own client, lease, fencing token)
//! ```
//!
//! Modules, in the order a request meets them:
//!
//! - [`config`]: one struct from TOML file, `SHARDD_*` variables and flags
//!   (flags > environment > file > defaults), validated at start.
//! - [`api`]: routes, JSON errors, bearer auth, forwarding of writes from
//!   followers, the `/v1/watch` event stream, redacted views of the model.
//! - [`service`]: topology operations — validation, read-modify-CAS with a
//!   bounded retry on conflict, fencing by leadership.
//! - [`leader`]: the election (etcd's election API; the local store's own
//!   leadership) and the fencing token.
//! - [`mover`]: the jobs that move, split and merge ranges between shard
//!   databases while services keep writing (leader only).
//! - [`planner`]: the rebalance planner, a pure function from sizes, load,
//!   weights and constraints to a plan of splits, moves and merges.
//! - [`rebalance`]: measure ranges (database sizes, reported load), plan,
//!   and start the plan's jobs.
//! - [`watcher`]: the daemon's own watch of the store (epoch, readiness).
//! - [`metrics`], [`logging`], [`shutdown`].
//!
//! In tests, run the daemon in-process ([`Server::start`]; or
//! [`Server::start_with_store`] for several servers sharing one embedded
//! store, where one leads and the others forward writes to it):
//!
//! ```no_run
//! # async fn example() -> Result<(), shardd::ServerError> {
//! use shardd::{Config, Server, StoreKind};
//!
//! let config = Config { store: StoreKind::Memory, listen: "127.0.0.1:0".parse().unwrap(), ..Config::default() };
//! let server = Server::start(config).await?;
//! println!("API at {}", server.url());
//! server.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod api;
mod backend;
pub mod config;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod mover;
pub mod planner;
pub mod rebalance;
mod server;
pub mod service;
pub mod shutdown;
pub mod watcher;

pub use backend::ServerError;
pub use config::{Config, ConfigError, StoreKind};
pub use server::{Handle, Server, run};
