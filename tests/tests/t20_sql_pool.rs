//! Shard pools (`shardlib::sql`) against real databases: two PostgreSQL
//! servers and SQLite files. Every wait is bounded by a generous deadline
//! or driven by an event; nothing sleeps to synchronize.

use std::error::Error;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::Poll;
use std::time::Duration;

use shardkit_tests::PostgresServer;
use shardlib::sql::{self, Credentials, PoolOptions, ShardedPool, SqlError, schema};
use shardlib::topology::Table;
use shardlib::{KeyRange, ShardId, Topology};
use tokio::sync::Notify;

type TestResult = Result<(), Box<dyn Error>>;

/// A `users` keyspace over `shards` (id, DSN) and `ranges` (range, owner, frozen).
fn topology(epoch: u64, shards: &[(&str, &str)], ranges: &[(&str, &str, bool)]) -> Topology {
    let shards: Vec<_> = shards.iter().map(|(id, dsn)| serde_json::json!({ "id": id, "primary": dsn })).collect();
    let ranges: Vec<_> = ranges
        .iter()
        .map(|(range, shard, frozen)| {
            let mut r = serde_json::json!({ "range": range, "shard": shard });
            if *frozen {
                r["state"] = "frozen".into();
            }
            r
        })
        .collect();
    let json = serde_json::json!({
        "cluster": "t20",
        "epoch": epoch,
        "keyspaces": { "users": {
            "tables": [{ "name": "users", "key_columns": ["id"] }],
            "shards": shards,
            "partitioning": { "algorithm": "hash_range", "ranges": ranges },
        }},
    });
    Topology::from_json(&json.to_string()).unwrap()
}

fn users_table() -> Table {
    Table { name: "users".into(), key_columns: vec!["id".into()], keyspace_id_column: "keyspace_id".into() }
}

fn sqlite_dsn(dir: &Path, name: &str) -> String {
    format!("sqlite://{}?mode=rwc", dir.join(name).display())
}

/// Creates the `users` table, with the keyspace_id column and index, on a shard.
async fn create_users(pools: &ShardedPool, shard: &str) -> TestResult {
    let table = users_table();
    let pool = pools.shard("users", &ShardId::new(shard)?)?;
    let create = format!(
        "CREATE TABLE IF NOT EXISTS users (id BIGINT PRIMARY KEY, name TEXT NOT NULL, {})",
        schema::keyspace_id_column(&table)?
    );
    sqlx::query(sqlx::AssertSqlSafe(create)).execute(pool.pool()).await.map_err(|e| pool.error(e))?;
    let index = schema::keyspace_id_index(&table, &[])?;
    sqlx::query(sqlx::AssertSqlSafe(index)).execute(pool.pool()).await.map_err(|e| pool.error(e))?;
    Ok(())
}

/// Inserts user `id` through the routed write helper.
async fn insert_user(pools: &ShardedPool, id: u64) -> Result<(), SqlError> {
    pools
        .execute_for_key("users", &id, |mut tx, keyspace_id| async move {
            let insert = schema::insert_statement(&users_table(), &["id", "name"]).unwrap();
            sqlx::query(sqlx::AssertSqlSafe(insert))
                .bind(keyspace_id)
                .bind(id as i64)
                .bind(format!("user-{id}"))
                .execute(&mut *tx)
                .await?;
            Ok((tx, ()))
        })
        .await
}

/// Rows of `users` on a shard whose keyspace_id falls in `range`.
async fn count_in(pools: &ShardedPool, shard: &str, range: &str) -> Result<i64, Box<dyn Error>> {
    let (lo, hi) = schema::sql_bounds(range.parse::<KeyRange>()?);
    let pool = pools.shard("users", &ShardId::new(shard)?)?;
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM users WHERE keyspace_id BETWEEN $1 AND $2")
        .bind(lo)
        .bind(hi)
        .fetch_one(pool.pool())
        .await?;
    Ok(count)
}

async fn count_all(pools: &ShardedPool, shard: &str) -> Result<i64, Box<dyn Error>> {
    let pool = pools.shard("users", &ShardId::new(shard)?)?;
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM users").fetch_one(pool.pool()).await?;
    Ok(count)
}

fn options(write_wait: Duration) -> PoolOptions {
    PoolOptions {
        max_connections: 4,
        connect_timeout: Duration::from_secs(30),
        acquire_timeout: Duration::from_secs(30),
        write_wait,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_land_on_the_owning_shard_with_order_preserving_keyspace_ids() -> TestResult {
    let (a, b) = tokio::task::spawn_blocking(|| -> Result<_, String> {
        let a = PostgresServer::start().map_err(|e| e.to_string())?;
        let b = PostgresServer::start().map_err(|e| e.to_string())?;
        a.create_database("app").map_err(|e| e.to_string())?;
        b.create_database("app").map_err(|e| e.to_string())?;
        Ok((a, b))
    })
    .await??;
    let dir = tempfile::tempdir()?;
    let (dsn_a, dsn_b, dsn_c) = (a.dsn("app"), b.dsn("app"), sqlite_dsn(dir.path(), "s2.db"));
    let shards = [("s0", dsn_a.as_str()), ("s1", dsn_b.as_str()), ("s2", dsn_c.as_str())];
    let ranges = [("-80", "s0", false), ("80-c0", "s1", false), ("c0-", "s2", false)];
    let pools = ShardedPool::new(&topology(1, &shards, &ranges), options(Duration::from_secs(2)), Credentials::none())?;
    assert_eq!(pools.shards().len(), 3);
    for shard in ["s0", "s1", "s2"] {
        create_users(&pools, shard).await?;
    }

    let keys: Vec<u64> = (0..300).collect();
    let router = pools.router();
    let users = router.keyspace("users")?;
    for &key in &keys {
        insert_user(&pools, key).await?;
        assert_eq!(pools.pool_for("users", &key)?.shard(), users.route(&key));
        assert_eq!(pools.read_pool_for("users", &key)?.shard(), users.route(&key), "no replicas: primary");
    }
    for (range, owner, _) in ranges {
        let parsed: KeyRange = range.parse()?;
        let expected = keys.iter().filter(|k| parsed.contains(users.keyspace_id(*k))).count() as i64;
        assert!(expected > 50, "range {range} gets a fair share of 300 keys, got {expected}");
        assert_eq!(count_in(&pools, owner, range).await?, expected, "range {range} on {owner}");
        assert_eq!(count_all(&pools, owner).await?, expected, "only range {range} on {owner}");
    }
    // Checked independently of sqlx, with psql on each server.
    for (server, range) in [(&a, "-80"), (&b, "80-c0")] {
        let (lo, hi) = schema::sql_bounds(range.parse()?);
        let parsed: KeyRange = range.parse()?;
        let expected = keys.iter().filter(|k| parsed.contains(users.keyspace_id(*k))).count();
        let sql = format!("SELECT count(*) FROM users WHERE keyspace_id BETWEEN {lo} AND {hi}");
        assert_eq!(server.psql("app", &sql)?.trim(), expected.to_string(), "psql on the owner of {range}");
        let sql = format!("SELECT count(*) FROM users WHERE keyspace_id NOT BETWEEN {lo} AND {hi}");
        assert_eq!(server.psql("app", &sql)?.trim(), "0");
    }
    // Every stored id decodes back to the key's keyspace id.
    let pool = pools.pool_for("users", &7u64)?;
    let (stored,): (i64,) = sqlx::query_as("SELECT keyspace_id FROM users WHERE id = 7").fetch_one(pool.pool()).await?;
    assert_eq!(shardlib::KeyspaceId::from_sql(stored), users.keyspace_id(&7u64));

    // A PostgreSQL fence (SQLSTATE SK001) rejects the write loudly when no
    // newer topology moves the range: nothing lands on the fenced shard.
    a.psql(
        "app",
        "CREATE FUNCTION fence() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         RAISE EXCEPTION 'shardkit fenced: range -80' USING ERRCODE = 'SK001'; END $$; \
         CREATE TRIGGER fence BEFORE INSERT OR UPDATE OR DELETE ON users FOR EACH ROW EXECUTE FUNCTION fence();",
    )?;
    let fenced_pools =
        ShardedPool::new(&topology(1, &shards, &ranges), options(Duration::from_millis(300)), Credentials::none())?;
    let key = (1000u64..).find(|k| users.route(k).as_str() == "s0").unwrap();
    let error = insert_user(&fenced_pools, key).await.unwrap_err();
    assert!(matches!(error, SqlError::Fenced { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("s0") && message.contains("-80") && message.contains("fenced"), "{message}");
    assert_eq!(count_all(&pools, "s0").await?, count_in(&pools, "s0", "-80").await?);
    assert_eq!(a.psql("app", &format!("SELECT count(*) FROM users WHERE id = {key}"))?.trim(), "0");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_open_close_and_reopen_as_the_topology_changes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (d0, d1, d2, d1b) = (
        sqlite_dsn(dir.path(), "s0.db"),
        sqlite_dsn(dir.path(), "s1.db"),
        sqlite_dsn(dir.path(), "s2.db"),
        sqlite_dsn(dir.path(), "s1-new.db"),
    );
    let two = [("s0", d0.as_str()), ("s1", d1.as_str())];
    let three = [("s0", d0.as_str()), ("s1", d1.as_str()), ("s2", d2.as_str())];
    let pools = ShardedPool::new(
        &topology(1, &two, &[("-80", "s0", false), ("80-", "s1", false)]),
        options(Duration::from_secs(2)),
        Credentials::none(),
    )?;
    assert_eq!(pools.shards().iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(), ["s0", "s1"]);

    let split = [("-80", "s0", false), ("80-c0", "s1", false), ("c0-", "s2", false)];
    let report = pools.apply(&topology(2, &three, &split))?;
    assert_eq!(report.opened.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(), ["s2"]);
    assert!(report.closed.is_empty() && report.reopened.is_empty());
    for shard in ["s0", "s1", "s2"] {
        create_users(&pools, shard).await?;
    }
    let key = (0u64..).find(|k| pools.router().keyspace("users").unwrap().route(k).as_str() == "s2").unwrap();
    insert_user(&pools, key).await?;
    let s2 = pools.pool_for("users", &key)?;
    assert_eq!(s2.shard().as_str(), "s2");
    assert_eq!(count_all(&pools, "s2").await?, 1);

    // s2 leaves: its pool closes, and its range routes to s1.
    let s1_before = pools.shard("users", &ShardId::new("s1")?)?;
    let report = pools.apply(&topology(3, &two, &[("-80", "s0", false), ("80-", "s1", false)]))?;
    assert_eq!(report.closed.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(), ["s2"]);
    assert!(s2.is_closed(), "the removed shard's pool is closed");
    assert!(!s1_before.is_closed(), "unchanged shards keep their pools");
    assert!(matches!(pools.shard("users", &ShardId::new("s2")?), Err(SqlError::NoPool { .. })));
    assert_eq!(pools.pool_for("users", &key)?.shard().as_str(), "s1");

    // s1's DSN changes: its pool reopens on the new database.
    let moved = [("s0", d0.as_str()), ("s1", d1b.as_str())];
    let report = pools.apply(&topology(4, &moved, &[("-80", "s0", false), ("80-", "s1", false)]))?;
    assert_eq!(report.reopened.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(), ["s1"]);
    assert!(s1_before.is_closed());
    create_users(&pools, "s1").await?;
    assert_eq!(count_all(&pools, "s1").await?, 0, "the new database is empty");

    // Older epochs are refused.
    let stale = pools.apply(&topology(3, &two, &[("-", "s0", false)])).unwrap_err();
    assert!(matches!(stale, SqlError::StaleEpoch { .. }), "{stale}");
    assert_eq!(pools.epoch().0, 4);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_frozen_range_waits_for_the_unfrozen_epoch() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (d0, d1) = (sqlite_dsn(dir.path(), "s0.db"), sqlite_dsn(dir.path(), "s1.db"));
    let shards = [("s0", d0.as_str()), ("s1", d1.as_str())];
    let frozen = [("-80", "s0", false), ("80-", "s0", true)];
    // Generous: the thaw below is driven by the test, not by the clock.
    let pools =
        ShardedPool::new(&topology(1, &shards, &frozen), options(Duration::from_secs(60)), Credentials::none())?;
    create_users(&pools, "s0").await?;
    create_users(&pools, "s1").await?;
    let users = pools.router();
    let key = (0u64..).find(|k| users.keyspace("users").unwrap().lookup(k).frozen).unwrap();
    let other = (0u64..).find(|k| !users.keyspace("users").unwrap().lookup(k).frozen).unwrap();
    insert_user(&pools, other).await?;

    let mut write = pin!(insert_user(&pools, key));
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    assert!(first.is_pending(), "the write waits while its range is frozen");
    // The move hands the range to s1 in a new, unfrozen epoch.
    pools.apply(&topology(2, &shards, &[("-80", "s0", false), ("80-", "s1", false)]))?;
    write.await?;
    assert_eq!(count_all(&pools, "s1").await?, 1, "the write went to the new owner");
    assert_eq!(count_in(&pools, "s0", "80-").await?, 0, "never to the old one");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_range_that_stays_frozen_times_out_naming_the_range() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d0 = sqlite_dsn(dir.path(), "s0.db");
    let shards = [("s0", d0.as_str())];
    let pools = ShardedPool::new(
        &topology(1, &shards, &[("-80", "s0", false), ("80-", "s0", true)]),
        options(Duration::from_millis(200)),
        Credentials::none(),
    )?;
    create_users(&pools, "s0").await?;
    let key = (0u64..).find(|k| pools.router().keyspace("users").unwrap().lookup(k).frozen).unwrap();
    // Writes run in spawned tasks too (the future is `Send`).
    let spawned = tokio::spawn({
        let pools = pools.clone();
        async move { insert_user(&pools, key).await }
    });
    let error = spawned.await?.unwrap_err();
    assert!(matches!(error, SqlError::Frozen { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("range 80-") && message.contains("frozen"), "{message}");
    assert_eq!(count_all(&pools, "s0").await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_write_retries_once_on_the_owner_of_a_newer_epoch() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (d0, d1) = (sqlite_dsn(dir.path(), "s0.db"), sqlite_dsn(dir.path(), "s1.db"));
    let shards = [("s0", d0.as_str()), ("s1", d1.as_str())];
    let pools = ShardedPool::new(
        &topology(1, &shards, &[("-80", "s0", false), ("80-", "s0", false)]),
        options(Duration::from_secs(60)),
        Credentials::none(),
    )?;
    create_users(&pools, "s0").await?;
    create_users(&pools, "s1").await?;
    // The mover's fence on s0 for range 80- (stored keyspace ids >= 0).
    let s0 = pools.shard("users", &ShardId::new("s0")?)?;
    sqlx::query(
        "CREATE TRIGGER fence BEFORE INSERT ON users WHEN NEW.keyspace_id >= 0 \
         BEGIN SELECT RAISE(ABORT, 'shardkit fenced: range 80-'); END",
    )
    .execute(s0.pool())
    .await?;
    let key = (0u64..).find(|k| pools.router().keyspace("users").unwrap().keyspace_id(k).0 >= 1 << 63).unwrap();

    let fenced = Notify::new();
    let attempts = AtomicU32::new(0);
    let (fenced_ref, attempts_ref) = (&fenced, &attempts);
    let write = pools.execute_for_key("users", &key, |mut tx, keyspace_id| async move {
        attempts_ref.fetch_add(1, Ordering::SeqCst);
        let result = sqlx::query("INSERT INTO users (id, name, keyspace_id) VALUES ($1, 'x', $2)")
            .bind(key as i64)
            .bind(keyspace_id)
            .execute(&mut *tx)
            .await;
        if let Err(error) = &result {
            assert!(sql::is_fence_error(error), "{error}");
            fenced_ref.notify_one();
        }
        result.map(|_| (tx, ()))
    });
    let hand_over = async {
        fenced.notified().await;
        pools.apply(&topology(2, &shards, &[("-80", "s0", false), ("80-", "s1", false)]))
    };
    let (written, applied) = tokio::join!(write, hand_over);
    written?;
    applied?;
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "fenced once, retried once");
    assert_eq!(count_all(&pools, "s1").await?, 1);
    assert_eq!(count_all(&pools, "s0").await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_names_the_shard_without_the_password() -> TestResult {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    };
    let dir = tempfile::tempdir()?;
    let d0 = sqlite_dsn(dir.path(), "s0.db");
    let d1 = format!("postgres://app@127.0.0.1:{port}/app");
    let shards = [("s0", d0.as_str()), ("s1", d1.as_str())];
    let options = PoolOptions {
        max_connections: 2,
        connect_timeout: Duration::from_secs(30),
        acquire_timeout: Duration::from_secs(3),
        write_wait: Duration::from_secs(2),
    };
    let secret = "hunter2-very-secret";
    let credentials = Credentials::from_fn(move |_, shard, _| (shard.as_str() == "s1").then(|| secret.to_owned()));
    let pools =
        ShardedPool::new(&topology(1, &shards, &[("-80", "s0", false), ("80-", "s1", false)]), options, credentials)?;
    let key = (0u64..).find(|k| pools.router().keyspace("users").unwrap().route(k).as_str() == "s1").unwrap();

    let ping = pools.pool_for("users", &key)?.ping().await.unwrap_err();
    let write = insert_user(&pools, key).await.unwrap_err();
    let errors = pools.connect_all().await;
    assert_eq!(errors.len(), 1, "only s1 is unreachable: {errors:?}");
    for error in [ping, write, errors.into_iter().next().unwrap()] {
        let shown = format!("{error} / {error:?}");
        assert!(shown.contains("s1") && shown.contains(&format!("127.0.0.1:{port}")), "{shown}");
        assert!(!shown.contains(secret), "password leaked: {shown}");
        eprintln!("{error}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_follow_a_watcher_and_a_frozen_write_thaws_with_the_store() -> TestResult {
    use shardlib::store::local::LocalStore;
    use shardlib::store::{Expect, Fence, TopologyStore};
    use shardlib::watch::{Source, TopologyWatcher, WatchOptions};

    let dir = tempfile::tempdir()?;
    let (d0, d1, d2) =
        (sqlite_dsn(dir.path(), "s0.db"), sqlite_dsn(dir.path(), "s1.db"), sqlite_dsn(dir.path(), "s2.db"));
    let two = [("s0", d0.as_str()), ("s1", d1.as_str())];
    let three = [("s0", d0.as_str()), ("s1", d1.as_str()), ("s2", d2.as_str())];
    let users = shardlib::KeyspaceName::new("users")?;
    let store = Arc::new(LocalStore::in_memory("t20")?);
    let publish = async |topology: Topology| {
        let keyspace = topology.keyspaces.get(&users).unwrap().clone();
        store.put_keyspace(&users, &keyspace, Expect::Any, &Fence::None).await
    };
    publish(topology(0, &two, &[("-80", "s0", false), ("80-", "s0", true)])).await?;
    let watch_options = WatchOptions { initial_load_timeout: Duration::from_secs(60), ..WatchOptions::named("t20") };
    let watcher = TopologyWatcher::start(Source::Store(store.clone()), watch_options).await?;
    let pools = ShardedPool::new(&watcher.current().topology, options(Duration::from_secs(60)), Credentials::none())?;
    let following = pools.follow(&watcher);
    create_users(&pools, "s0").await?;
    create_users(&pools, "s1").await?;

    // A key of 80-c0, which the cutover below hands to s1.
    let moving: KeyRange = "80-c0".parse()?;
    let key = (0u64..).find(|k| moving.contains(pools.router().keyspace("users").unwrap().keyspace_id(k))).unwrap();
    assert!(pools.router().keyspace("users")?.lookup(&key).frozen);
    let mut write = pin!(insert_user(&pools, key));
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    assert!(first.is_pending(), "the write waits while its range is frozen");
    // The cutover: 80- goes to s1, unfrozen, and a shard s2 joins.
    let epoch =
        publish(topology(0, &three, &[("-80", "s0", false), ("80-c0", "s1", false), ("c0-", "s2", false)])).await?;
    write.await?;
    assert!(pools.epoch() >= epoch);
    assert_eq!(count_in(&pools, "s0", "80-").await?, 0, "nothing on the old owner");
    assert_eq!(pools.pool_for("users", &key)?.shard().as_str(), "s1");
    assert_eq!(count_all(&pools, "s1").await?, 1, "the write landed on the new owner");
    assert!(pools.shards().iter().any(|(_, s)| s.as_str() == "s2"), "the new shard got a pool");

    watcher.shutdown().await;
    tokio::time::timeout(Duration::from_secs(60), following).await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_complete_password_less_dsns() -> TestResult {
    use std::os::unix::fs::PermissionsExt as _;

    // A server that trusts only the superuser: `app` needs its password.
    let hba_dir = tempfile::tempdir()?;
    std::fs::set_permissions(hba_dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let hba = hba_dir.path().join("pg_hba.conf");
    std::fs::write(
        &hba,
        "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
    )?;
    std::fs::set_permissions(&hba, std::fs::Permissions::from_mode(0o644))?;
    let settings = vec![("hba_file".to_owned(), hba.display().to_string())];
    let server = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let options = shardkit_tests::PostgresOptions { settings, ..Default::default() };
        let server = PostgresServer::start_with(&options).map_err(|e| e.to_string())?;
        server.create_database("app").map_err(|e| e.to_string())?;
        server.psql("app", "CREATE ROLE app LOGIN PASSWORD 'pw:s3cret/@x'").map_err(|e| e.to_string())?;
        server.psql("app", "GRANT ALL ON SCHEMA public TO app").map_err(|e| e.to_string())?;
        Ok(server)
    })
    .await??;
    let dsn = format!("postgres://app@127.0.0.1:{}/app", server.port());
    let shards = [("s0", dsn.as_str())];
    let ranges = [("-", "s0", false)];

    let without =
        ShardedPool::new(&topology(1, &shards, &ranges), options(Duration::from_secs(2)), Credentials::none())?;
    let error = without.pool_for("users", &1u64)?.ping().await.unwrap_err();
    assert!(error.to_string().contains("shard s0"), "{error}");

    let passwords = [(ShardId::new("s0")?, "pw:s3cret/@x".to_owned())].into_iter().collect();
    let pools = ShardedPool::new(
        &topology(1, &shards, &ranges),
        options(Duration::from_secs(2)),
        Credentials::passwords(passwords),
    )?;
    pools.pool_for("users", &1u64)?.ping().await?;
    create_users(&pools, "s0").await?;
    insert_user(&pools, 1).await?;
    assert_eq!(server.psql("app", "SELECT count(*) FROM users")?.trim(), "1");
    assert!(!format!("{pools:?}").contains("s3cret"), "no password in Debug output");
    Ok(())
}
