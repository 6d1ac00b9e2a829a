//! What the online shardctl tests share: shardd in-process on the embedded
//! file store, the built shardctl run against it, SQLite shard files.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use shardd::config::{Config, Secret, StoreKind};
use shardlib::sql::sqlx;
use shardlib::{KeyspaceId, ShardKey};

/// shardd in-process on the embedded file store, with a bearer token, and
/// helpers that run the built shardctl against it.
pub struct Cluster {
    /// The running shardd.
    pub handle: shardd::Handle,
    token: &'static str,
    _store: tempfile::TempDir,
}

impl Cluster {
    /// Starts shardd as cluster `name`, requiring `token`, and waits until it leads.
    pub async fn start(name: &str, token: &'static str) -> Cluster {
        let store = tempfile::tempdir().unwrap();
        let mut config = Config {
            store: StoreKind::Local,
            listen: "127.0.0.1:0".parse().unwrap(),
            cluster: name.into(),
            member_id: Some("m1".into()),
            api_token: Some(Secret::new(token)),
            ..Config::default()
        };
        config.local.path = store.path().join("topology.json");
        let handle = shardd::Server::start(config).await.expect("shardd starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !handle.is_leader() {
            assert!(Instant::now() < deadline, "shardd did not lead within 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Cluster { handle, token, _store: store }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shardctl"));
        command
            .args(["--endpoint", &self.handle.url(), "--color", "never"])
            .args(args)
            .env("SHARDCTL_TOKEN", self.token)
            .env_remove("SHARDCTL_ENDPOINT");
        command
    }

    /// Runs shardctl (off the async runtime); standard error is not a
    /// terminal, so waiting prints plain lines.
    pub async fn run(&self, args: &[&str]) -> Output {
        let mut command = self.command(args);
        tokio::task::spawn_blocking(move || command.output().expect("shardctl runs")).await.unwrap()
    }

    /// Runs shardctl, expecting exit code `code`; returns stdout and stderr.
    pub async fn expect(&self, code: i32, args: &[&str]) -> (String, String) {
        let output = self.run(args).await;
        let stdout = String::from_utf8(output.stdout).unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(code), "shardctl {args:?}:\n{stdout}\n{stderr}");
        assert!(!stdout.contains(self.token) && !stderr.contains(self.token), "token leaked");
        (stdout, stderr)
    }

    pub async fn ok(&self, args: &[&str]) -> (String, String) {
        self.expect(0, args).await
    }

    pub async fn json(&self, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.extend(["-o", "json"]);
        let (stdout, _) = self.ok(&with_json).await;
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("shardctl {args:?} printed no JSON ({e}): {stdout}"))
    }

    /// Runs shardctl expecting exit code 2; returns standard error.
    pub async fn fails(&self, args: &[&str]) -> String {
        self.expect(2, args).await.1
    }

    /// The ranges each shard owns, from `shard list`.
    pub async fn ranges(&self) -> BTreeMap<String, Vec<String>> {
        let list = self.json(&["shard", "list", "-k", "users"]).await;
        list["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|shard| {
                let ranges = shard["ranges"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned());
                (shard["id"].as_str().unwrap().to_owned(), ranges.collect())
            })
            .collect()
    }
}

/// The DSN of shard `shard`'s SQLite file in `dir`.
pub fn dsn(dir: &Path, shard: &str) -> String {
    format!("sqlite://{}?mode=rwc", dir.join(format!("{shard}.db")).display())
}

/// A one-connection pool on `dsn`.
pub async fn pool(dsn: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::pool::PoolOptions::<sqlx::Any>::new().max_connections(1).connect(dsn).await.unwrap()
}

/// The keyspace id of user `id` (seed 0).
pub fn keyspace_id(id: i64) -> KeyspaceId {
    id.keyspace_id(0)
}
