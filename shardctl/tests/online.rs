//! `shardctl` against a running shardd: keyspace, shard, topology, status,
//! route and watch, through the real binary and a real shardd (in-process,
//! on the embedded file store — the same store `shardd` uses with no setup).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use shardd::config::{Config, Secret, StoreKind};

const TOKEN: &str = "t0ken-for-tests";

struct Cluster {
    handle: shardd::Handle,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            store: StoreKind::Local,
            listen: "127.0.0.1:0".parse().unwrap(),
            cluster: "cli-test".into(),
            member_id: Some("m1".into()),
            api_token: Some(Secret::new(TOKEN)),
            ..Config::default()
        };
        config.local.path = dir.path().join("topology.json");
        let handle = shardd::Server::start(config).await.expect("shardd starts");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !handle.is_leader() {
            assert!(std::time::Instant::now() < deadline, "shardd did not lead within 60 s");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Cluster { handle, _dir: dir }
    }

    /// Runs shardctl against this shardd (off the async runtime).
    async fn shardctl(&self, args: &[&str]) -> Output {
        let mut full = vec!["--endpoint".to_owned(), self.handle.url(), "--color".into(), "never".into()];
        full.extend(args.iter().map(|a| a.to_string()));
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_shardctl"))
                .args(&full)
                .env("SHARDCTL_TOKEN", TOKEN)
                .env_remove("SHARDCTL_ENDPOINT")
                .output()
                .expect("shardctl runs")
        })
        .await
        .unwrap()
    }

    async fn ok(&self, args: &[&str]) -> String {
        let output = self.shardctl(args).await;
        let stdout = String::from_utf8(output.stdout).unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(output.status.success(), "shardctl {args:?} failed: {stderr}");
        assert!(!stdout.contains("s3cret") && !stderr.contains("s3cret"), "password leaked: {stdout}{stderr}");
        assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN), "token leaked");
        stdout
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&with_json).await).unwrap()
    }

    async fn fails(&self, args: &[&str]) -> String {
        let output = self.shardctl(args).await;
        assert_eq!(output.status.code(), Some(2), "shardctl {args:?} should fail with exit code 2");
        String::from_utf8(output.stderr).unwrap()
    }
}

fn write_keyspace(dir: &Path) -> String {
    let path = dir.join("users.toml");
    std::fs::write(
        &path,
        r#"key_type = "str"
tables = [{ name = "users", key_columns = ["user_name"] }]
shards = [
  { id = "s0", primary = "postgres://app:s3cret@db0/users", labels = { zone = "a" } },
  { id = "s1", primary = "postgres://app:s3cret@db1/users", labels = { zone = "b" } },
]
partitioning = { algorithm = "hash_range", ranges = [{ range = "-80", shard = "s0" }, { range = "80-", shard = "s1" }] }
"#,
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyspaces_and_shards_are_managed_through_shardd() {
    let cluster = Cluster::start().await;
    let files = tempfile::tempdir().unwrap();
    let keyspace_file = write_keyspace(files.path());

    let status = cluster.json(&["status"]).await;
    assert_eq!(status["role"], "leader");
    assert_eq!(status["leader"]["member_id"], "m1");
    assert!(cluster.ok(&["status"]).await.contains("leader    m1"));

    let created = cluster.json(&["keyspace", "create", "users", "--file", &keyspace_file]).await;
    assert_eq!(created["name"], "users");
    let table = cluster.ok(&["keyspace", "list"]).await;
    assert!(
        table.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == ["users", "hash_range", "2", "2", &created["version"].to_string()]),
        "{table}"
    );
    let shown = cluster.ok(&["keyspace", "show", "users"]).await;
    assert!(shown.contains("postgres://app:***@db0/users"), "{shown}");

    cluster
        .ok(&[
            "shard",
            "add",
            "s2",
            "--keyspace",
            "users",
            "--primary",
            "postgres://app:s3cret@db2/users",
            "--zone",
            "c",
        ])
        .await;
    let shards = cluster.json(&["shard", "list", "--keyspace", "users"]).await;
    let ids: Vec<&str> = shards["shards"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["s0", "s1", "s2"]);
    assert_eq!(shards["shards"][2]["ranges"], serde_json::json!([]));

    // A shard that owns ranges cannot be removed; nothing changes.
    let err = cluster.fails(&["shard", "remove", "s0", "--keyspace", "users"]).await;
    assert!(err.contains("409") && err.contains("-80"), "{err}");
    cluster.ok(&["shard", "drain", "s2", "--keyspace", "users"]).await;
    cluster.ok(&["shard", "remove", "s2", "--keyspace", "users"]).await;
    let shards = cluster.json(&["shard", "list", "--keyspace", "users"]).await;
    assert_eq!(shards["shards"][2]["state"], "removed");

    // Online routing agrees with the offline computation.
    let routed = cluster.json(&["route", "--keyspace", "users", "alice", "carol"]).await;
    assert_eq!(routed[0]["shard"], "s0");
    assert_eq!(routed[0]["range"], "-80");
    assert_eq!(routed[1]["shard"], "s1");

    let topology = cluster.json(&["topology", "show"]).await;
    let epoch = topology["epoch"].as_u64().unwrap();
    let old = cluster.json(&["topology", "show", "--epoch", &created["epoch"].to_string()]).await;
    assert_eq!(old["topology"]["keyspaces"]["users"]["shards"].as_array().unwrap().len(), 2);
    assert!(epoch > created["epoch"].as_u64().unwrap());

    // Bad input: clear errors, exit code 2.
    let err = cluster.fails(&["keyspace", "show", "nope"]).await;
    assert!(err.contains("404") && err.contains("nope"), "{err}");
    let err = cluster.fails(&["keyspace", "delete", "users"]).await;
    assert!(err.contains("409"), "{err}");
    let err = cluster.fails(&["keyspace", "create", "bad", "--file", "/nonexistent.toml"]).await;
    assert!(err.contains("cannot read keyspace file /nonexistent.toml"), "{err}");
    let output = Command::new(env!("CARGO_BIN_EXE_shardctl"))
        .args(["--endpoint", &cluster.handle.url(), "--token", "wrong", "status"])
        .output()
        .unwrap();
    let err = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(err.contains("401") && !err.contains("wrong"), "{err}");

    cluster.handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_every_change_as_it_happens() {
    let cluster = Cluster::start().await;
    let files = tempfile::tempdir().unwrap();
    let keyspace_file = write_keyspace(files.path());
    let url = cluster.handle.url();
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_shardctl"))
        .args(["--endpoint", &url, "watch", "--count", "3", "-o", "json"])
        .env("SHARDCTL_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watcher.stdout.take().unwrap();
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let next_line = async |rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>| -> Value {
        let line = tokio::time::timeout(std::time::Duration::from_secs(60), rx.recv())
            .await
            .expect("a watch line within 60 s")
            .expect("watch still running");
        serde_json::from_str(&line).unwrap()
    };
    // The first event is the current topology; then one per change.
    let first = next_line(&mut lines_rx).await;
    assert_eq!(first["changes"], serde_json::json!([]));
    cluster.ok(&["keyspace", "create", "users", "--file", &keyspace_file]).await;
    let created = next_line(&mut lines_rx).await;
    assert_eq!(created["changes"], serde_json::json!([{"kind": "keyspace_created", "keyspace": "users"}]));
    assert!(created["epoch"].as_u64() > first["epoch"].as_u64());
    cluster.ok(&["shard", "add", "s2", "--keyspace", "users", "--primary", "sqlite:///tmp/s2.db"]).await;
    let updated = next_line(&mut lines_rx).await;
    assert_eq!(updated["changes"], serde_json::json!([{"kind": "keyspace_updated", "keyspace": "users"}]));
    assert!(updated["time"].as_str().is_some());
    let status = tokio::task::spawn_blocking(move || watcher.wait().unwrap()).await.unwrap();
    assert!(status.success(), "watch --count 3 exits 0 after three events");
    cluster.handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_shows_who_follows_the_topology_and_who_lags() {
    use shardlib::watch::{Source, TopologyWatcher, WatchOptions};
    let cluster = Cluster::start().await;
    let files = tempfile::tempdir().unwrap();
    let keyspace_file = write_keyspace(files.path());
    let store = cluster.handle.store().clone();
    // A service that follows the store and reports its epoch, and one
    // stuck at epoch 1 (with a connection string in what it reports).
    let options = WatchOptions { register_as: Some("users-api-1".into()), ..WatchOptions::named("users-api") };
    let watcher = TopologyWatcher::start(Source::Store(store.clone()), options).await.unwrap();
    let stuck = serde_json::json!({"epoch": 1, "db": "postgres://app:s3cret@db0/users"});
    let _stuck = store.register_client("batch-7", stuck, std::time::Duration::from_secs(10)).await.unwrap();

    let created = cluster.json(&["keyspace", "create", "users", "--file", &keyspace_file]).await;
    let epoch = created["epoch"].as_u64().unwrap();
    // The watcher reports the new epoch soon after it installs it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let listed = loop {
        let listed = cluster.json(&["clients"]).await;
        let caught_up = listed["topology_epoch"] == epoch && listed["clients"][1]["epoch"] == epoch;
        if caught_up {
            break listed;
        }
        assert!(std::time::Instant::now() < deadline, "the watcher did not report epoch {epoch}: {listed}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let ids: Vec<&str> = listed["clients"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["batch-7", "users-api-1"]);
    assert_eq!(listed["clients"][0]["behind"], true);
    assert_eq!(listed["clients"][1]["behind"], false);
    assert_eq!(listed["clients"][1]["value"]["watcher"], "users-api");
    assert_eq!(listed["clients"][0]["value"]["db"], "postgres://app:***@db0/users");
    let table = cluster.ok(&["clients"]).await;
    let row = |id: &str| table.lines().find(|l| l.starts_with(id)).unwrap_or_default().split_whitespace().take(3);
    assert_eq!(row("batch-7").collect::<Vec<_>>(), ["batch-7", "1", "yes"], "{table}");
    assert_eq!(row("users-api-1").collect::<Vec<_>>(), ["users-api-1", &epoch.to_string(), "no"], "{table}");

    // A watcher that shuts down removes its registration.
    watcher.shutdown().await;
    let listed = cluster.json(&["clients"]).await;
    assert_eq!(listed["clients"].as_array().unwrap().len(), 1, "{listed}");
    cluster.handle.shutdown().await.unwrap();
}

#[test]
fn an_unreachable_shardd_is_a_clear_error() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let output = Command::new(env!("CARGO_BIN_EXE_shardctl"))
        .args(["--endpoint", &format!("http://127.0.0.1:{port}"), "status"])
        .output()
        .unwrap();
    let err = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(err.contains(&format!("cannot connect to shardd at http://127.0.0.1:{port}")), "{err}");
}

#[test]
fn completions_are_generated() {
    let output = Command::new(env!("CARGO_BIN_EXE_shardctl")).args(["completions", "bash"]).output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8(output.stdout).unwrap().contains("shardctl"));
}
