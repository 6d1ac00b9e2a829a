//! Automatic rebalancing (`rebalance.auto`): with the imbalance above the
//! threshold for `sustain`, the leader starts the plan's jobs by itself;
//! afterwards the keyspace is balanced and, the rate limit holding, no
//! second automatic rebalance follows. SQLite shard files, shardd
//! in-process on the embedded store.

#[path = "../../tests/tests/mover_support/mod.rs"]
mod mover_support;

use std::time::{Duration, Instant};

use mover_support::*;
use serde_json::json;
use shardd::config::HumanDuration;
use shardd::{Config, Server, StoreKind};
use shardlib::sql::sqlx;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imbalance_that_persists_is_rebalanced_automatically() -> TestResult {
    init_logs();
    let dir = tempfile::tempdir()?;
    let shards = [("s1", sqlite_dsn(dir.path(), "s1.db")), ("s2", sqlite_dsn(dir.path(), "s2.db"))];
    for (_, dsn) in &shards {
        create_users(dsn).await?;
    }
    // Every row on s1, which owns the whole space; s2 owns nothing.
    let ids: Vec<i64> = (0..4_000).collect();
    preload(&shards[0].1, &ids).await?;

    let mut config = Config { store: StoreKind::Memory, listen: "127.0.0.1:0".parse()?, ..Config::default() };
    config.rebalance.auto = true;
    config.rebalance.interval = HumanDuration::from_millis(200);
    config.rebalance.sustain = HumanDuration::from_millis(500);
    config.rebalance.min_gap = HumanDuration::from_secs(3600);
    config.rebalance.threshold = 1.2;
    let server = Server::start(config).await?;
    let api = Api::new(server.url());
    let refs: Vec<(&str, &str)> = shards.iter().map(|(id, dsn)| (*id, dsn.as_str())).collect();
    api.create_keyspace("users", keyspace(&refs, &[("-80", "s1"), ("80-", "s1")])).await?;

    // Wait for the leader to start jobs on its own, then for them to end.
    let deadline = Instant::now() + DEADLINE;
    let jobs = loop {
        let (_, body) = api.get("/v1/jobs").await?;
        let jobs = body["jobs"].as_array().cloned().unwrap_or_default();
        if !jobs.is_empty() && jobs.iter().all(|j| j["status"] == "succeeded") {
            break jobs;
        }
        assert!(jobs.iter().all(|j| j["status"] != "failed"), "{jobs:#?}");
        if Instant::now() > deadline {
            return Err(format!("no automatic rebalance within {DEADLINE:?}: {jobs:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut counts = Vec::new();
    for (_, dsn) in &shards {
        let pool = any_pool(dsn).await?;
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM users").fetch_one(&pool).await?;
        counts.push(n);
    }
    assert_eq!(counts.iter().sum::<i64>(), 4_000);
    let ratio = *counts.iter().max().unwrap() as f64 / (4_000.0 / 2.0);
    assert!(ratio <= 1.2, "rows per shard after the automatic rebalance: {counts:?}");
    // Balanced now: a dry run finds nothing to do, and within the rate
    // limit no second automatic rebalance starts.
    let (_, plan) = api.post("/v1/keyspaces/users/rebalance", &json!({ "dry_run": true, "threshold": 1.2 })).await?;
    assert!(plan["plan"]["steps"].as_array().unwrap().is_empty(), "{plan:#}");
    let (_, body) = api.get("/v1/jobs").await?;
    assert_eq!(body["jobs"].as_array().unwrap().len(), jobs.len());
    server.shutdown().await?;
    Ok(())
}
