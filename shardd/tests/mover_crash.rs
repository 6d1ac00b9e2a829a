//! Crashes and cancels at every step of a move, with real `shardd`
//! processes on a real etcd and shards on two real PostgreSQL servers.
//!
//! A step is reached exactly with shardd's failpoints
//! (`SHARDD_FAILPOINTS`, docs/MIGRATION.md): the runner stops there and
//! logs "failpoint reached". Then:
//!
//! - crash: the leader is killed with SIGKILL while writers keep writing;
//!   the standby takes over (2 s lease), resumes the job and completes it;
//!   afterwards every row exists exactly once, on its owner, with the last
//!   acknowledged content;
//! - cancel: the job is cancelled there; afterwards the source holds
//!   exactly the rows it had, the target none, no trigger of the job is
//!   left, and the topology is as before. After hand-over a cancel is
//!   refused and the job completes.
//!
//! Every wait polls with a deadline; nothing sleeps to synchronise.

#[path = "../../tests/tests/mover_support/mod.rs"]
mod mover_support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mover_support::*;
use serde_json::json;
use shardkit_tests::{EtcdServer, PostgresServer, free_port, log_tail};
use shardlib::sql::sqlx;

const CLUSTER: &str = "mover-crash";

/// A `shardd` process; killed when dropped.
struct Shardd {
    name: String,
    url: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Shardd {
    fn start(dir: &Path, name: &str, etcd: &str, failpoint: Option<&str>) -> TestResult<Shardd> {
        let log = dir.join(format!("{name}.log"));
        let port = free_port()?;
        let out = File::options().create(true).append(true).open(&log)?;
        let err = out.try_clone()?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_shardd"));
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|key| key.starts_with("SHARDD_") || key == "RUST_LOG") {
                command.env_remove(key);
            }
        }
        if let Some(point) = failpoint {
            command.env("SHARDD_FAILPOINTS", point);
        }
        command
            .args(["--store", "etcd", "--cluster", CLUSTER, "--member-id", name])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--etcd-endpoints", etcd, "--lease-ttl", "2s", "--shutdown-timeout", "10s"])
            .args(["--mover-batch-rows", "500", "--log-filter", "info"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = command.spawn()?;
        Ok(Shardd { name: name.into(), url: format!("http://127.0.0.1:{port}"), log, child: Some(child) })
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_tail(&self) -> String {
        format!("--- {} ---\n{}", self.name, log_tail(&self.log, 30))
    }

    /// Waits until its log says the failpoint was reached.
    async fn wait_failpoint(&self) -> TestResult {
        let deadline = Instant::now() + DEADLINE;
        while !std::fs::read_to_string(&self.log).unwrap_or_default().contains("failpoint reached") {
            if Instant::now() > deadline {
                return Err(format!("failpoint never reached\n{}", self.log_tail()).into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for Shardd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `shardd` leads (its /v1/status says so).
async fn wait_leader(api: &Api, member: &str) -> TestResult {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok((200, status)) = api.get("/v1/status").await
            && status["leader"]["member_id"] == member
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{member} never led").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Servers {
    etcd: EtcdServer,
    a: PostgresServer,
    b: PostgresServer,
    dir: tempfile::TempDir,
}

async fn servers() -> TestResult<Servers> {
    let etcd = blocking(EtcdServer::start).await?;
    let (a, b) = blocking(|| Ok((PostgresServer::start()?, PostgresServer::start()?))).await?;
    Ok(Servers { etcd, a, b, dir: tempfile::tempdir()? })
}

/// A keyspace `ks` with s1 on server a and s2 on server b, `rows` users on s1.
async fn keyspace_on(servers: &Servers, api: &Api, ks: &str, rows: i64) -> TestResult<Vec<(&'static str, String)>> {
    let (db1, db2) = (format!("{ks}_s1"), format!("{ks}_s2"));
    {
        let (a, b) = (&servers.a, &servers.b);
        a.create_database(&db1)?;
        b.create_database(&db2)?;
    }
    let shards = vec![("s1", servers.a.dsn(&db1)), ("s2", servers.b.dsn(&db2))];
    for (_, dsn) in &shards {
        create_users(dsn).await?;
    }
    let ids: Vec<i64> = (0..rows).collect();
    preload(&shards[0].1, &ids).await?;
    let refs: Vec<(&str, &str)> = shards.iter().map(|(id, dsn)| (*id, dsn.as_str())).collect();
    api.create_keyspace(ks, keyspace(&refs, &[("-80", "s1"), ("80-", "s1")])).await?;
    Ok(shards)
}

/// `(id, name)` of every user, sorted.
async fn dump(dsn: &str) -> TestResult<Vec<(i64, String)>> {
    let pool = any_pool(dsn).await?;
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, name FROM users ORDER BY id").fetch_all(&pool).await?;
    pool.close().await;
    Ok(rows)
}

/// Names of the shardkit triggers of job `job` in the database at `dsn`.
async fn job_triggers(dsn: &str, job: &str) -> TestResult<Vec<String>> {
    let pool = any_pool(dsn).await?;
    let names: Vec<(String,)> =
        sqlx::query_as("SELECT tgname::text FROM pg_trigger WHERE NOT tgisinternal AND tgname::text LIKE $1")
            .bind(format!("%{job}%"))
            .fetch_all(&pool)
            .await?;
    pool.close().await;
    Ok(names.into_iter().map(|(n,)| n).collect())
}

const CRASH_POINTS: [&str; 10] = [
    "before:precheck",
    "before:capture",
    "before:copy",
    "copy:chunk",
    "before:catch_up",
    "before:verify",
    "before:fence",
    "fence:frozen",
    "hand_over:written",
    "before:cleanup",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_leader_at_each_step_the_standby_completes_the_move() -> TestResult {
    let servers = servers().await?;
    let endpoint = servers.etcd.endpoint();
    let rows = 3_000;
    for (n, point) in CRASH_POINTS.iter().enumerate() {
        let started = Instant::now();
        let ks = format!("crash{n}");
        let mut leader = Shardd::start(servers.dir.path(), &format!("leader{n}"), &endpoint, Some(point))?;
        let leader_api = Api::new(leader.url.clone());
        wait_leader(&leader_api, &leader.name).await.map_err(|e| format!("{e}\n{}", leader.log_tail()))?;
        let standby = Shardd::start(servers.dir.path(), &format!("standby{n}"), &endpoint, None)?;
        let standby_api = Api::new(standby.url.clone());
        let shards = keyspace_on(&servers, &leader_api, &ks, rows).await?;

        let (watcher, pools) = follow(&endpoint, CLUSTER, &format!("writers{n}")).await?;
        let spec = WorkloadSpec { keyspace: ks.clone(), writers: 4, keys: 0..rows + 500, ops_per_second: 300 };
        let workload = Workload::start(pools, spec, &initial_model(0..rows));
        let id = leader_api.create_job(&ks, json!({ "kind": "move", "ranges": ["80-"], "to": "s2" })).await?;
        leader.wait_failpoint().await?;
        leader.kill();
        let job = standby_api.wait_finished(&id).await.map_err(|e| format!("{e}\n{}", standby.log_tail()))?;
        assert_eq!(job["status"], "succeeded", "{point}: {job:#}\n{}", standby.log_tail());
        let (model, ops, _) = workload.stop().await?;
        let snapshot = {
            use shardlib::store::TopologyStore;
            let store = shardlib::store::etcd::EtcdStore::connect(shardlib::store::etcd::EtcdConfig::new(
                vec![endpoint.clone()],
                CLUSTER,
            ))
            .await?;
            store.snapshot().await?
        };
        let refs: Vec<(&str, &str)> = shards.iter().map(|(id, dsn)| (*id, dsn.as_str())).collect();
        let checked = check_exactly_once(&snapshot.topology, &ks, SEED, &refs, &model)
            .await
            .map_err(|e| format!("after SIGKILL at {point}: {e}"))?;
        let left: Vec<String> =
            job_triggers(&shards[0].1, &id).await?.into_iter().filter(|t| !t.contains("fence")).collect();
        assert!(left.is_empty(), "{point}: capture triggers left on the source: {left:?}");
        eprintln!(
            "SIGKILL at {point}: standby completed the job; {ops} writes, {checked} rows exactly once ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
        watcher.shutdown().await;
        drop(standby);
    }
    Ok(())
}

const CANCEL_POINTS: [&str; 8] = [
    "before:precheck",
    "before:capture",
    "before:copy",
    "copy:chunk",
    "before:catch_up",
    "before:verify",
    "before:fence",
    "fence:frozen",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_at_each_step_leaves_the_source_intact_and_the_target_clean() -> TestResult {
    let servers = servers().await?;
    let endpoint = servers.etcd.endpoint();
    let rows = 3_000;
    for (n, point) in CANCEL_POINTS.iter().enumerate() {
        let ks = format!("cancel{n}");
        let shardd = Shardd::start(servers.dir.path(), &format!("cancel{n}"), &endpoint, Some(point))?;
        let api = Api::new(shardd.url.clone());
        wait_leader(&api, &shardd.name).await.map_err(|e| format!("{e}\n{}", shardd.log_tail()))?;
        let shards = keyspace_on(&servers, &api, &ks, rows).await?;
        let source_before = dump(&shards[0].1).await?;
        let (_, before) = api.get(&format!("/v1/keyspaces/{ks}")).await?;

        let id = api.create_job(&ks, json!({ "kind": "move", "ranges": ["80-"], "to": "s2" })).await?;
        shardd.wait_failpoint().await?;
        let (status, body) = api.post(&format!("/v1/jobs/{id}/cancel"), &json!({})).await?;
        assert_eq!(status, 202, "{point}: {body}");
        let job = api.wait_finished(&id).await?;
        assert_eq!(job["status"], "cancelled", "{point}: {job:#}\n{}", shardd.log_tail());

        assert_eq!(dump(&shards[0].1).await?, source_before, "{point}: the source changed");
        assert_eq!(dump(&shards[1].1).await?, Vec::new(), "{point}: rows left on the target");
        assert_eq!(job_triggers(&shards[0].1, &id).await?, Vec::<String>::new(), "{point}: triggers left");
        let (_, after) = api.get(&format!("/v1/keyspaces/{ks}")).await?;
        assert_eq!(after["keyspace"]["partitioning"], before["keyspace"]["partitioning"], "{point}");
        // Writes to the range work again on the source (no fence left).
        let (watcher, pools) = follow(&endpoint, CLUSTER, &format!("after-cancel{n}")).await?;
        let key = (rows..rows + 1_000).find(|id| kid(*id).0 >= 0x8000_0000_0000_0000).unwrap();
        apply(&pools, &ks, key, Some("after cancel")).await?;
        watcher.shutdown().await;
        eprintln!("cancel at {point}: source intact, target clean");
    }

    // After hand-over a cancel is refused, and the job completes.
    let shardd = Shardd::start(servers.dir.path(), "late-cancel", &endpoint, Some("hand_over:written"))?;
    let api = Api::new(shardd.url.clone());
    wait_leader(&api, &shardd.name).await?;
    let shards = keyspace_on(&servers, &api, "late", rows).await?;
    let id = api.create_job("late", json!({ "kind": "move", "ranges": ["80-"], "to": "s2" })).await?;
    shardd.wait_failpoint().await?;
    let (status, body) = api.post(&format!("/v1/jobs/{id}/cancel"), &json!({})).await?;
    // The job's document may not know about the hand-over yet: either the
    // cancel is refused, or it is accepted and the runner finishes anyway.
    assert!(status == 409 || status == 202, "{body}");
    let job = api.wait_finished(&id).await?;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    let moved = dump(&shards[1].1).await?.len();
    assert!(moved > 0);
    Ok(())
}
