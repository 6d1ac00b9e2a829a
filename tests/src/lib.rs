//! # shardkit-tests
//!
//! Fixtures that start **real** servers for the integration tests of
//! shardlib, shardd and shardctl: no mocks stand in for etcd or PostgreSQL.
//!
//! - [`EtcdServer`] — one etcd member; [`EtcdCluster`] — several members
//!   that form one cluster. `endpoint()`/`endpoints()` give the client URLs.
//! - [`PostgresServer`] — a PostgreSQL server made with `initdb`;
//!   [`PostgresServer::dsn`] gives a connection string,
//!   [`PostgresServer::create_database`] and [`PostgresServer::psql`] run SQL
//!   through `psql`.
//!
//! Every server runs in its own temporary directory, listens on free
//! 127.0.0.1 ports only, and is ready when `start()` returns: the fixture
//! polls the server (etcd's `/health`, PostgreSQL's `postmaster.pid`) until
//! it answers, with a deadline, never with a fixed sleep. Each server can be
//! stopped gracefully, killed with SIGKILL and restarted on the same ports
//! with the same data, for fault tests. Dropping a fixture kills the server,
//! waits for it and removes its directory.
//!
//! Tests run in parallel: ports are never handed out twice by one process,
//! and a start that finds its port taken by another process is retried on
//! new ports. Errors ([`FixtureError`]) say what failed and, for a server,
//! end with the last lines of its log, so that a CI failure can be read from
//! the test output alone.
//!
//! ```no_run
//! use shardkit_tests::{EtcdServer, PostgresServer};
//!
//! let mut etcd = EtcdServer::start()?;
//! let pg = PostgresServer::start()?;
//! pg.create_database("shard_0")?;
//! assert_eq!(pg.psql("shard_0", "SELECT 1")?, "1");
//! let _dsn = pg.dsn("shard_0"); // postgres://postgres@127.0.0.1:PORT/shard_0
//! let _endpoint = etcd.endpoint(); // http://127.0.0.1:PORT
//! etcd.kill()?; // SIGKILL
//! etcd.restart()?; // same ports, same data
//! # Ok::<(), shardkit_tests::FixtureError>(())
//! ```
//!
//! Programs are found through `$ETCD_BIN` (the etcd executable) and
//! `$PG_BIN` (PostgreSQL's bin directory), else on `$PATH` and in Debian's
//! locations. When the tests run as root, PostgreSQL runs as the OS user
//! `postgres`; see [`postgres`].
//!
//! The fixtures are synchronous. In a `#[tokio::test]`, starting one blocks
//! the runtime's thread for a second or so, which is harmless there; use
//! `tokio::task::spawn_blocking` where it is not.

pub mod error;
pub mod etcd;
pub mod http;
pub mod ports;
pub mod postgres;
mod process;
pub mod wait;

pub use error::{FixtureError, Result};
pub use etcd::{ClientTls, EtcdCluster, EtcdOptions, EtcdServer};
pub use http::{HttpResponse, http_get, http_post_json};
pub use ports::free_port;
pub use postgres::{PostgresOptions, PostgresServer};
pub use process::log_tail;
pub use wait::{POLL_INTERVAL, wait_for, wait_until};
