//! [`ShardedPool`]: one sqlx pool per shard, following the topology.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Connection as _};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Credentials, FENCE_MESSAGE_PREFIX, PoolOptions, SqlError, is_fence_error};
use crate::id::{Epoch, KeyspaceName, ShardId};
use crate::key::ShardKey;
use crate::router::Router;
use crate::topology::{Dsn, ShardState, Topology};

/// One database's pool, with the DSN it was opened from (kept to detect a
/// changed DSN and, redacted, to name the database in errors).
#[derive(Clone, Debug)]
struct DbPool {
    dsn: Dsn,
    pool: AnyPool,
}

#[derive(Clone, Debug)]
struct ShardPools {
    primary: DbPool,
    replicas: Vec<DbPool>,
}

/// A transaction on a shard's primary, as [`ShardedPool::execute_for_key`]
/// hands it to the write.
pub type ShardTx = sqlx::Transaction<'static, sqlx::Any>;

/// Every shard's pools, by keyspace and shard.
type PoolMap = HashMap<(KeyspaceName, ShardId), ShardPools>;

/// The installed topology, its router and the pools, swapped as a whole.
#[derive(Debug)]
struct State {
    topology: Arc<Topology>,
    router: Arc<Router>,
    pools: PoolMap,
}

#[derive(Debug)]
struct Inner {
    options: PoolOptions,
    credentials: Credentials,
    state: watch::Sender<Arc<State>>,
    /// Serializes `apply`, so that pools are never opened twice.
    apply_lock: std::sync::Mutex<()>,
    /// Operations per (keyspace, range) since the last load report.
    load: std::sync::Mutex<HashMap<(String, String), u64>>,
}

/// One sqlx pool per shard database of a topology; cheap to clone.
///
/// Pools connect lazily: creating them does no I/O, and an unreachable
/// database shows as an error of the first use (or of
/// [`ShardedPool::connect_all`]) naming the shard, with the DSN redacted.
#[derive(Clone, Debug)]
pub struct ShardedPool {
    inner: Arc<Inner>,
}

/// A shard's pool, as returned by [`ShardedPool::pool_for`].
#[derive(Clone, Debug)]
pub struct ShardPool {
    shard: ShardId,
    dsn: Dsn,
    pool: AnyPool,
    connect_timeout: Duration,
}

/// What [`ShardedPool::apply`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// The installed epoch.
    pub epoch: Epoch,
    /// Shards (keyspace, shard) that got pools.
    pub opened: Vec<(KeyspaceName, ShardId)>,
    /// Shards whose DSNs changed: their pools were reopened.
    pub reopened: Vec<(KeyspaceName, ShardId)>,
    /// Shards whose pools are closing (in-flight connections finish first).
    pub closed: Vec<(KeyspaceName, ShardId)>,
}

impl ShardPool {
    /// The shard.
    pub fn shard(&self) -> &ShardId {
        &self.shard
    }

    /// The DSN, redacted when displayed.
    pub fn dsn(&self) -> &Dsn {
        &self.dsn
    }

    /// The sqlx pool, for queries of your own. Map its errors with
    /// [`ShardPool::error`] to keep the shard's name in them.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Whether the pool was closed (its shard left the topology or changed DSN).
    pub fn is_closed(&self) -> bool {
        self.pool.is_closed()
    }

    /// Wraps a sqlx error with this shard's name and redacted DSN.
    pub fn error(&self, source: sqlx::Error) -> SqlError {
        SqlError::Database { shard: self.shard.clone(), dsn: self.dsn.redacted(), source: Box::new(source) }
    }

    /// Gets a connection.
    pub async fn acquire(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, SqlError> {
        self.pool.acquire().await.map_err(|e| self.error(e))
    }

    /// Begins a transaction.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, SqlError> {
        self.pool.begin().await.map_err(|e| self.error(e))
    }

    /// Opens a connection of its own (bounded by the connect timeout, not
    /// taken from the pool, so that the error says why connecting fails
    /// rather than that the pool timed out), pings and closes it.
    pub async fn ping(&self) -> Result<(), SqlError> {
        let attempt = async {
            let mut conn = sqlx::AnyConnection::connect_with(&self.pool.connect_options()).await?;
            conn.ping().await?;
            conn.close().await
        };
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(result) => result.map_err(|e| self.error(e)),
            Err(_) => Err(SqlError::ConnectTimeout {
                shard: self.shard.clone(),
                dsn: self.dsn.redacted(),
                timeout: self.connect_timeout,
            }),
        }
    }
}

impl ShardedPool {
    /// Pools for every shard of `topology` (connecting lazily).
    pub fn new(topology: &Topology, options: PoolOptions, credentials: Credentials) -> Result<Self, SqlError> {
        sqlx::any::install_default_drivers();
        let (router, pools) =
            Self::build(topology, &options, &credentials, &HashMap::new(), &mut ApplyReport::default())?;
        let state = State { topology: Arc::new(topology.clone()), router: Arc::new(router), pools };
        let (state, _) = watch::channel(Arc::new(state));
        Ok(ShardedPool {
            inner: Arc::new(Inner {
                options,
                credentials,
                state,
                apply_lock: Default::default(),
                load: Default::default(),
            }),
        })
    }

    /// The options.
    pub fn options(&self) -> &PoolOptions {
        &self.inner.options
    }

    /// The installed epoch.
    pub fn epoch(&self) -> Epoch {
        self.inner.state.borrow().router.epoch()
    }

    /// The installed router.
    pub fn router(&self) -> Arc<Router> {
        Arc::clone(&self.inner.state.borrow().router)
    }

    /// The installed topology.
    pub fn topology(&self) -> Arc<Topology> {
        Arc::clone(&self.inner.state.borrow().topology)
    }

    /// The shards that have pools, sorted.
    pub fn shards(&self) -> Vec<(KeyspaceName, ShardId)> {
        let mut shards: Vec<_> = self.inner.state.borrow().pools.keys().cloned().collect();
        shards.sort();
        shards
    }

    /// Installs a topology at least as new as the installed one: opens pools
    /// for new shards, reopens those whose DSN changed and closes those that
    /// left (or were marked removed). Closed pools refuse new connections
    /// at once; in-flight ones finish first (in a background task when
    /// called inside a tokio runtime).
    pub fn apply(&self, topology: &Topology) -> Result<ApplyReport, SqlError> {
        let _serial = self.inner.apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        let current = Arc::clone(&self.inner.state.borrow());
        let installed = current.router.epoch();
        if topology.epoch < installed {
            return Err(SqlError::StaleEpoch { installed, offered: topology.epoch });
        }
        let mut report = ApplyReport { epoch: topology.epoch, ..ApplyReport::default() };
        let (router, pools) =
            Self::build(topology, &self.inner.options, &self.inner.credentials, &current.pools, &mut report)?;
        let mut closing = Vec::new();
        for (key, old) in &current.pools {
            let kept = pools.get(key);
            for db in std::iter::once(&old.primary).chain(&old.replicas) {
                let reused =
                    kept.is_some_and(|new| std::iter::once(&new.primary).chain(&new.replicas).any(|n| n.dsn == db.dsn));
                if !reused {
                    closing.push(db.pool.clone());
                }
            }
            if kept.is_none() {
                report.closed.push(key.clone());
            }
        }
        report.closed.sort();
        self.inner.state.send_replace(Arc::new(State {
            topology: Arc::new(topology.clone()),
            router: Arc::new(router),
            pools,
        }));
        let runtime = tokio::runtime::Handle::try_current().ok();
        for pool in closing {
            // `close()` marks the pool closed at once (new acquires fail);
            // the rest waits for in-flight connections to come back. Outside
            // a runtime, connections close as they are dropped.
            drop(pool.close());
            if let Some(runtime) = &runtime {
                runtime.spawn(async move { pool.close().await });
            }
        }
        Ok(report)
    }

    fn build(
        topology: &Topology,
        options: &PoolOptions,
        credentials: &Credentials,
        previous: &PoolMap,
        report: &mut ApplyReport,
    ) -> Result<(Router, PoolMap), SqlError> {
        let router = Router::compile(topology)?;
        let mut pools = HashMap::new();
        for (ks, keyspace) in &topology.keyspaces {
            for shard in keyspace.shards.iter().filter(|s| s.state != ShardState::Removed) {
                let key = (ks.clone(), shard.id.clone());
                let old = previous.get(&key);
                let old_dbs: Vec<&DbPool> =
                    old.map(|o| std::iter::once(&o.primary).chain(&o.replicas).collect()).unwrap_or_default();
                let open = |dsn: &Dsn| -> Result<DbPool, SqlError> {
                    if let Some(db) = old_dbs.iter().find(|db| &db.dsn == dsn) {
                        return Ok((*db).clone());
                    }
                    let url = credentials.complete(ks, &shard.id, dsn);
                    let pool = AnyPoolOptions::new()
                        .max_connections(options.max_connections)
                        .acquire_timeout(options.acquire_timeout)
                        .connect_lazy(&url)
                        .map_err(|source| SqlError::Open {
                            shard: shard.id.clone(),
                            dsn: dsn.redacted(),
                            source: Box::new(scrub(source)),
                        })?;
                    Ok(DbPool { dsn: dsn.clone(), pool })
                };
                let primary = open(&shard.primary)?;
                let replicas = shard.replicas.iter().map(|r| open(&r.dsn)).collect::<Result<Vec<_>, _>>()?;
                match old {
                    None => report.opened.push(key.clone()),
                    Some(o) if o.primary.dsn != primary.dsn => report.reopened.push(key.clone()),
                    Some(_) => {}
                }
                pools.insert(key, ShardPools { primary, replicas });
            }
        }
        report.opened.sort();
        report.reopened.sort();
        Ok((router, pools))
    }

    /// Follows `watcher`: installs its current topology, then every update,
    /// from a background task that ends when the watcher shuts down.
    /// Updates that fail to apply are logged (without DSNs) and skipped.
    pub fn follow(&self, watcher: &crate::TopologyWatcher) -> tokio::task::JoinHandle<()> {
        let mut updates = watcher.subscribe();
        let this = self.clone();
        let apply = move |update: &crate::TopologyUpdate| {
            if !update.is_loaded() || update.epoch < this.epoch() {
                return;
            }
            if let Err(error) = this.apply(&update.topology) {
                tracing::warn!(epoch = %update.epoch, %error, "cannot apply topology to shard pools");
            }
        };
        let first = Arc::clone(&updates.borrow_and_update());
        apply(&first);
        tokio::spawn(async move {
            while updates.changed().await.is_ok() {
                let update = Arc::clone(&updates.borrow_and_update());
                apply(&update);
            }
        })
    }

    /// Connects every pool once (bounded by the connect timeout each), so
    /// that unreachable shards show at startup. Returns every failure.
    pub async fn connect_all(&self) -> Vec<SqlError> {
        let mut errors = Vec::new();
        let state = Arc::clone(&self.inner.state.borrow());
        let mut shards: Vec<_> = state.pools.iter().collect();
        shards.sort_by(|a, b| a.0.cmp(b.0));
        for ((_, shard), pools) in shards {
            for db in std::iter::once(&pools.primary).chain(&pools.replicas) {
                if let Err(error) = self.shard_pool(shard, db).ping().await {
                    errors.push(error);
                }
            }
        }
        errors
    }

    fn shard_pool(&self, shard: &ShardId, db: &DbPool) -> ShardPool {
        ShardPool {
            shard: shard.clone(),
            dsn: db.dsn.clone(),
            pool: db.pool.clone(),
            connect_timeout: self.inner.options.connect_timeout,
        }
    }

    fn pools_of(&self, state: &State, keyspace: &str, shard: &ShardId) -> Result<ShardPools, SqlError> {
        let name = KeyspaceName::new(keyspace)
            .map_err(|_| crate::RouteError::UnknownKeyspace { keyspace: keyspace.into() })?;
        state
            .pools
            .get(&(name, shard.clone()))
            .cloned()
            .ok_or_else(|| SqlError::NoPool { keyspace: keyspace.to_owned(), shard: shard.clone() })
    }

    /// The pool of the primary of the shard that owns `key` now. This does
    /// not wait for a frozen range to thaw (reads may go on during a
    /// cutover); writes belong in [`ShardedPool::execute_for_key`].
    pub fn pool_for<K: ShardKey + ?Sized>(&self, keyspace: &str, key: &K) -> Result<ShardPool, SqlError> {
        let state = Arc::clone(&self.inner.state.borrow());
        let shard = state.router.keyspace(keyspace)?.route(key).clone();
        let pools = self.pools_of(&state, keyspace, &shard)?;
        Ok(self.shard_pool(&shard, &pools.primary))
    }

    /// The pool of a replica of the shard that owns `key` (chosen by the
    /// key's keyspace id, so a key keeps its replica), else the primary.
    pub fn read_pool_for<K: ShardKey + ?Sized>(&self, keyspace: &str, key: &K) -> Result<ShardPool, SqlError> {
        let state = Arc::clone(&self.inner.state.borrow());
        let router = state.router.keyspace(keyspace)?;
        let route = router.lookup(key);
        let shard = route.shard.clone();
        let pools = self.pools_of(&state, keyspace, &shard)?;
        let db = match pools.replicas.len() {
            0 => &pools.primary,
            n => &pools.replicas[(route.keyspace_id.0 % n as u64) as usize],
        };
        Ok(self.shard_pool(&shard, db))
    }

    /// The pool of the primary of `shard` in `keyspace`.
    pub fn shard(&self, keyspace: &str, shard: &ShardId) -> Result<ShardPool, SqlError> {
        let state = Arc::clone(&self.inner.state.borrow());
        let pools = self.pools_of(&state, keyspace, shard)?;
        Ok(self.shard_pool(shard, &pools.primary))
    }

    /// Runs `write` in a transaction on the primary of the shard that owns
    /// `key`, passing the transaction and the row's `keyspace_id` column
    /// value ([`KeyspaceId::to_sql`](crate::KeyspaceId::to_sql)) to bind.
    /// `write` hands the transaction back with its result, and the
    /// transaction is committed; on an error it is rolled back.
    ///
    /// The transaction is passed by value (rather than as `&mut`) so that
    /// the returned future can be `Send` without higher-ranked closure
    /// bounds: `execute_for_key` works inside `tokio::spawn`.
    ///
    /// A key in a frozen range waits up to [`PoolOptions::write_wait`] for
    /// an epoch that thaws it. A write rejected by a database fence waits
    /// (as long) for a newer epoch and runs once more on that epoch's owner;
    /// see the fence contract in [`super`]. `write` may therefore run twice,
    /// the first run always rolled back.
    ///
    /// ```no_run
    /// # async fn example(pools: shardlib::sql::ShardedPool) -> Result<(), shardlib::sql::SqlError> {
    /// let user_id = 42u64;
    /// pools
    ///     .execute_for_key("users", &user_id, |mut tx, keyspace_id| async move {
    ///         shardlib::sql::sqlx::query("INSERT INTO users (id, keyspace_id) VALUES ($1, $2)")
    ///             .bind(user_id as i64)
    ///             .bind(keyspace_id)
    ///             .execute(&mut *tx)
    ///             .await?;
    ///         Ok((tx, ()))
    ///     })
    ///     .await
    /// # }
    /// ```
    pub async fn execute_for_key<K, T, F, Fut>(&self, keyspace: &str, key: &K, mut write: F) -> Result<T, SqlError>
    where
        K: ShardKey + ?Sized,
        F: FnMut(ShardTx, i64) -> Fut,
        Fut: Future<Output = Result<(ShardTx, T), sqlx::Error>>,
    {
        let mut fenced_at: Option<Epoch> = None;
        loop {
            let target = self.writable_route(keyspace, key, fenced_at).await?;
            let pool = self.shard_pool(&target.shard, &target.primary);
            let attempt = async {
                let tx = pool.pool.begin().await?;
                let (mut tx, value) = write(tx, target.keyspace_id).await?;
                check_fence(&mut tx, target.keyspace_id).await?;
                tx.commit().await?;
                Ok::<T, sqlx::Error>(value)
            };
            match attempt.await {
                Ok(value) => {
                    self.count(keyspace, &target.range);
                    return Ok(value);
                }
                Err(error) if is_fence_error(&error) => {
                    if fenced_at.is_some() {
                        return Err(target.fenced(keyspace, error));
                    }
                    tracing::info!(keyspace, shard = %target.shard, range = %target.range, epoch = %target.epoch,
                        "write fenced by the database; waiting for a newer topology");
                    fenced_at = Some(target.epoch);
                    if self.wait_for_epoch_after(target.epoch).await.is_none() {
                        return Err(target.fenced(keyspace, error));
                    }
                }
                Err(error) => return Err(pool.error(error)),
            }
        }
    }

    fn count(&self, keyspace: &str, range: &str) {
        let mut load = self.inner.load.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *load.entry((keyspace.to_owned(), range.to_owned())).or_insert(0) += 1;
    }

    /// Counts one operation on `key` for the load report (writes through
    /// [`ShardedPool::execute_for_key`] count themselves; call this for
    /// reads you want the rebalancer to see).
    pub fn record<K: ShardKey + ?Sized>(&self, keyspace: &str, key: &K) {
        let state = self.inner.state.borrow().clone();
        if let Ok(router) = state.router.keyspace(keyspace)
            && let Some(range) = router.lookup(key).range
        {
            self.count(keyspace, &range.to_string());
        }
    }

    /// Takes the operation counts since the last call:
    /// `{keyspace: {range: count}}`.
    pub fn take_load(&self) -> HashMap<String, HashMap<String, u64>> {
        let counts = std::mem::take(&mut *self.inner.load.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        let mut by_keyspace: HashMap<String, HashMap<String, u64>> = HashMap::new();
        for ((keyspace, range), count) in counts {
            by_keyspace.entry(keyspace).or_default().insert(range, count);
        }
        by_keyspace
    }

    /// Reports this process's load to shardd's rebalancer: registers as
    /// client `id` in `store` (bound to a lease: it disappears when the
    /// process dies) and every `every` replaces the value with
    /// `{"load": {keyspace: {range: operations per second}}, "window_seconds": s}`
    /// counted since the previous report. The task ends when the returned
    /// handle is aborted (or the registration can no longer be renewed).
    pub fn report_load(
        &self,
        store: Arc<dyn crate::store::TopologyStore>,
        id: String,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let pools = self.clone();
        let every = every.max(Duration::from_millis(100));
        tokio::spawn(async move {
            let ttl = (every * 3).max(Duration::from_secs(2));
            let registration = match store.register_client(&id, serde_json::json!({ "load": {} }), ttl).await {
                Ok(registration) => registration,
                Err(error) => {
                    tracing::warn!(%error, client = %id, "cannot register the load report");
                    return;
                }
            };
            let mut last = Instant::now();
            pools.take_load();
            loop {
                tokio::time::sleep(every).await;
                let window = last.elapsed().as_secs_f64().max(1e-3);
                last = Instant::now();
                let load: serde_json::Map<String, serde_json::Value> = pools
                    .take_load()
                    .into_iter()
                    .map(|(keyspace, ranges)| {
                        let rates: serde_json::Map<String, serde_json::Value> = ranges
                            .into_iter()
                            .map(|(range, n)| (range, serde_json::json!(n as f64 / window)))
                            .collect();
                        (keyspace, serde_json::Value::Object(rates))
                    })
                    .collect();
                let value = serde_json::json!({ "load": load, "window_seconds": window });
                if let Err(error) = registration.update(value).await {
                    tracing::warn!(%error, client = %id, "load report failed");
                    if !registration.is_active() {
                        return;
                    }
                }
            }
        })
    }

    /// Waits (bounded by the write wait) until an epoch newer than `epoch`
    /// is installed.
    async fn wait_for_epoch_after(&self, epoch: Epoch) -> Option<Epoch> {
        let mut states = self.inner.state.subscribe();
        let deadline = Instant::now() + self.inner.options.write_wait;
        loop {
            let installed = states.borrow_and_update().router.epoch();
            if installed > epoch {
                return Some(installed);
            }
            match tokio::time::timeout_at(deadline, states.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// The route of `key` in the first installed epoch (newer than
    /// `after`, if given) in which its range is not frozen.
    async fn writable_route<K: ShardKey + ?Sized>(
        &self,
        keyspace: &str,
        key: &K,
        after: Option<Epoch>,
    ) -> Result<WriteTarget, SqlError> {
        let mut states = self.inner.state.subscribe();
        let started = Instant::now();
        let deadline = started + self.inner.options.write_wait;
        loop {
            let state = Arc::clone(&states.borrow_and_update());
            let epoch = state.router.epoch();
            let route = state.router.keyspace(keyspace)?.lookup(key);
            let range = route.range.map(|r| r.to_string()).unwrap_or_else(|| "-".into());
            if !route.frozen && after.is_none_or(|after| epoch > after) {
                let shard = route.shard.clone();
                let pools = self.pools_of(&state, keyspace, &shard)?;
                return Ok(WriteTarget {
                    shard,
                    primary: pools.primary,
                    keyspace_id: route.keyspace_id.to_sql(),
                    range,
                    epoch,
                });
            }
            if route.frozen {
                tracing::debug!(keyspace, range = %range, epoch = %epoch, "write waits for a frozen range");
            }
            let timed_out = !matches!(tokio::time::timeout_at(deadline, states.changed()).await, Ok(Ok(())));
            if timed_out {
                return Err(SqlError::Frozen {
                    keyspace: keyspace.to_owned(),
                    range,
                    epoch,
                    waited: started.elapsed(),
                });
            }
        }
    }
}

struct WriteTarget {
    shard: ShardId,
    primary: DbPool,
    keyspace_id: i64,
    range: String,
    epoch: Epoch,
}

impl WriteTarget {
    fn fenced(&self, keyspace: &str, source: sqlx::Error) -> SqlError {
        SqlError::Fenced {
            keyspace: keyspace.to_owned(),
            shard: self.shard.clone(),
            range: self.range.clone(),
            epoch: self.epoch,
            source: Box::new(source),
        }
    }
}

/// The check of `shardkit_fences` inside the write's transaction, after
/// its statements (see "The fence contract" in [`super`]): row triggers
/// only fire for rows a statement touches, so an `UPDATE` or `DELETE` that
/// finds no row on an old owner would pass them silently. The mover records
/// every fence in `shardkit_fences` in the transaction that installs the
/// triggers, which waits for writers in flight; a write whose transaction
/// runs this query after that commit sees the fence and rolls back.
/// Databases that never lost a range have no such table.
async fn check_fence(tx: &mut ShardTx, keyspace_id: i64) -> Result<(), sqlx::Error> {
    let exists = if tx.backend_name() == "PostgreSQL" {
        "SELECT CAST(count(*) AS BIGINT) FROM pg_catalog.pg_class WHERE oid = to_regclass('shardkit_fences')"
    } else {
        "SELECT CAST(count(*) AS BIGINT) FROM sqlite_master WHERE type = 'table' AND name = 'shardkit_fences'"
    };
    let (tables,): (i64,) = sqlx::query_as(exists).fetch_one(&mut **tx).await?;
    if tables == 0 {
        return Ok(());
    }
    let (fences,): (i64,) =
        sqlx::query_as("SELECT CAST(count(*) AS BIGINT) FROM shardkit_fences WHERE $1 BETWEEN lo AND hi")
            .bind(keyspace_id)
            .fetch_one(&mut **tx)
            .await?;
    if fences > 0 {
        return Err(sqlx::Error::Protocol(format!(
            "{FENCE_MESSAGE_PREFIX}: keyspace id {keyspace_id} is in a range this shard no longer owns"
        )));
    }
    Ok(())
}

/// sqlx's URL parse errors may quote the URL, which holds the password:
/// keep only the kind of error.
fn scrub(error: sqlx::Error) -> sqlx::Error {
    match error {
        sqlx::Error::Configuration(_) => sqlx::Error::Configuration("invalid database URL".into()),
        other => other,
    }
}
