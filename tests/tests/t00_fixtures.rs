//! Tests of the fixtures themselves, against real etcd and PostgreSQL
//! servers. The harness runs them in parallel, which also shows that
//! concurrent fixtures do not clash over ports.

use std::collections::HashSet;
use std::error::Error;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use shardkit_tests::{
    EtcdCluster, EtcdOptions, EtcdServer, PostgresOptions, PostgresServer, http_get, http_post_json, wait_for,
};

type TestResult = Result<(), Box<dyn Error>>;

/// Puts `key` = `value` through etcd's v3 JSON gateway.
fn etcd_put(endpoint: &str, key: &str, value: &str) -> TestResult {
    let body = serde_json::json!({ "key": BASE64.encode(key), "value": BASE64.encode(value) }).to_string();
    let response = http_post_json(endpoint, "/v3/kv/put", &body)?;
    if !response.is_success() {
        return Err(format!("put {key} at {endpoint}: {} {}", response.status, response.body).into());
    }
    Ok(())
}

/// Gets `key` through etcd's v3 JSON gateway.
fn etcd_get(endpoint: &str, key: &str) -> Result<Option<String>, Box<dyn Error>> {
    let body = serde_json::json!({ "key": BASE64.encode(key) }).to_string();
    let response = http_post_json(endpoint, "/v3/kv/range", &body)?;
    if !response.is_success() {
        return Err(format!("range {key} at {endpoint}: {} {}", response.status, response.body).into());
    }
    let json = response.json()?;
    let Some(value) = json["kvs"][0]["value"].as_str() else { return Ok(None) };
    Ok(Some(String::from_utf8(BASE64.decode(value)?)?))
}

/// Whether a process with this pid still runs with `marker` in its command line.
fn runs_with(pid: u32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
}

#[test]
fn etcd_answers_version_and_health() -> TestResult {
    let started = Instant::now();
    let etcd = EtcdServer::start()?;
    eprintln!("etcd single member started in {:?}", started.elapsed());

    let endpoint = etcd.endpoint();
    assert_eq!(endpoint, format!("http://127.0.0.1:{}", etcd.client_port()));
    let version = http_get(&endpoint, "/version")?;
    assert_eq!(version.status, 200, "{version:?}");
    let server_version = version.json()?["etcdserver"].as_str().map(str::to_owned);
    assert!(server_version.as_deref().is_some_and(|v| v.starts_with("3.")), "{version:?}");
    assert!(etcd.is_healthy());
    Ok(())
}

#[test]
fn etcd_keeps_its_data_across_kill_and_restart() -> TestResult {
    let mut etcd = EtcdServer::start()?;
    let endpoint = etcd.endpoint();
    etcd_put(&endpoint, "/shardkit/a", "one")?;

    etcd.kill()?;
    assert!(!etcd.is_running());
    assert!(etcd.pid().is_none());
    assert!(http_get(&endpoint, "/health").is_err(), "a killed etcd must not answer");

    etcd.restart()?;
    assert_eq!(etcd.endpoint(), endpoint, "restart keeps the ports");
    assert_eq!(etcd_get(&endpoint, "/shardkit/a")?.as_deref(), Some("one"));

    // A graceful stop and a restart from the stopped state keep data too.
    etcd_put(&endpoint, "/shardkit/b", "two")?;
    etcd.stop()?;
    assert!(etcd.stop().is_err(), "stopping a stopped server is an error");
    etcd.restart()?;
    assert_eq!(etcd_get(&endpoint, "/shardkit/a")?.as_deref(), Some("one"));
    assert_eq!(etcd_get(&endpoint, "/shardkit/b")?.as_deref(), Some("two"));

    // Restarting a running server stops it first.
    etcd.restart()?;
    assert_eq!(etcd_get(&endpoint, "/shardkit/b")?.as_deref(), Some("two"));
    Ok(())
}

#[test]
fn etcd_cluster_survives_losing_its_leader() -> TestResult {
    let started = Instant::now();
    let mut cluster = EtcdCluster::start(3)?;
    eprintln!("etcd cluster of 3 started in {:?}", started.elapsed());

    let endpoints = cluster.endpoints();
    assert_eq!(endpoints.iter().collect::<HashSet<_>>().len(), 3);
    for endpoint in &endpoints {
        let health = http_get(endpoint, "/health")?;
        assert_eq!(health.json()?["health"], "true", "{endpoint}: {health:?}");
    }
    let members = http_post_json(&endpoints[0], "/v3/cluster/member/list", "{}")?.json()?;
    let names: HashSet<&str> =
        members["members"].as_array().into_iter().flatten().filter_map(|m| m["name"].as_str()).collect();
    assert_eq!(names, HashSet::from(["etcd-0", "etcd-1", "etcd-2"]));

    etcd_put(&endpoints[0], "/shardkit/before", "1")?;
    let leader = cluster.leader()?;
    cluster.kill_member(leader)?;
    let new_leader = cluster.leader()?;
    assert_ne!(new_leader, leader);
    let survivor = &endpoints[new_leader];
    // The first request after an election may still fail: retry briefly.
    wait_for(Duration::from_secs(30), "a put after the leader change", || etcd_put(survivor, "/shardkit/after", "2"))?;

    cluster.restart_member(leader)?;
    let rejoined = cluster.member(leader).endpoint();
    assert_eq!(etcd_get(&rejoined, "/shardkit/before")?.as_deref(), Some("1"));
    assert_eq!(etcd_get(&rejoined, "/shardkit/after")?.as_deref(), Some("2"));

    // A full-cluster restart keeps the data.
    cluster.restart_all()?;
    assert!(cluster.members().iter().all(EtcdServer::is_healthy));
    assert_eq!(etcd_get(&endpoints[2], "/shardkit/after")?.as_deref(), Some("2"));
    Ok(())
}

#[test]
fn postgres_serves_queries_across_restart_and_crash() -> TestResult {
    let started = Instant::now();
    let mut pg = PostgresServer::start()?;
    eprintln!("postgres started in {:?}", started.elapsed());

    assert_eq!(pg.dsn("shard_a"), format!("postgres://postgres@127.0.0.1:{}/shard_a", pg.port()));
    pg.create_database("shard_a")?;
    assert_eq!(pg.psql("shard_a", "SELECT 1")?, "1");
    assert_eq!(pg.psql("shard_a", "SHOW max_connections")?, "200");
    assert_eq!(pg.psql("shard_a", "SHOW fsync")?, "off");
    assert_eq!(pg.psql("shard_a", "SELECT current_user")?, "postgres");
    assert_eq!(pg.psql("shard_a", "SELECT inet_server_addr()")?, "127.0.0.1");
    pg.psql("shard_a", "CREATE TABLE t (id bigint PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)")?;

    pg.restart()?;
    assert_eq!(pg.psql("shard_a", "SELECT count(*) FROM t")?, "100");

    pg.psql("shard_a", "INSERT INTO t VALUES (101)")?;
    pg.kill()?;
    assert!(!pg.is_running());
    assert!(pg.psql("shard_a", "SELECT 1").is_err(), "a killed server must not answer");
    pg.restart()?;
    assert_eq!(pg.psql("shard_a", "SELECT count(*) FROM t")?, "101");
    assert!(pg.log_tail(200).contains("not properly shut down"), "crash recovery ran:\n{}", pg.log_tail(200));

    // Errors carry psql's message and the server log.
    let err = pg.psql("shard_a", "SELECT * FROM no_such_table").unwrap_err().to_string();
    assert!(err.contains("relation \"no_such_table\" does not exist"), "{err}");
    assert!(err.contains("--- last lines of"), "{err}");
    assert!(pg.create_database("bad-name").is_err());
    Ok(())
}

#[test]
fn many_servers_start_in_parallel() -> TestResult {
    let (etcds, pgs) = std::thread::scope(|s| {
        let etcds: Vec<_> = (0..4).map(|_| s.spawn(EtcdServer::start)).collect();
        let pgs: Vec<_> = (0..2).map(|_| s.spawn(PostgresServer::start)).collect();
        let etcds = etcds.into_iter().map(|h| h.join().expect("etcd thread")).collect::<Result<Vec<_>, _>>();
        let pgs = pgs.into_iter().map(|h| h.join().expect("postgres thread")).collect::<Result<Vec<_>, _>>();
        (etcds, pgs)
    });
    let (etcds, pgs) = (etcds?, pgs?);

    let mut ports: Vec<u16> =
        etcds.iter().map(EtcdServer::client_port).chain(pgs.iter().map(PostgresServer::port)).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 6, "every server has its own port");
    for (i, etcd) in etcds.iter().enumerate() {
        etcd_put(&etcd.endpoint(), "/whoami", &i.to_string())?;
    }
    for (i, etcd) in etcds.iter().enumerate() {
        assert_eq!(etcd_get(&etcd.endpoint(), "/whoami")?, Some(i.to_string()));
    }
    for pg in &pgs {
        assert_eq!(pg.psql("postgres", &format!("SELECT {}", pg.port()))?, pg.port().to_string());
    }
    Ok(())
}

#[test]
fn dropping_a_fixture_ends_the_server_and_removes_its_directory() -> TestResult {
    let etcd = EtcdServer::start()?;
    let pg = PostgresServer::start()?;
    let etcd_pid = etcd.pid().ok_or("etcd has no pid")?;
    let pg_pid = pg.pid().ok_or("postgres has no pid")?;
    let etcd_dir: PathBuf = etcd.data_dir().parent().ok_or("no parent")?.to_owned();
    let pg_dir: PathBuf = pg.data_dir().parent().ok_or("no parent")?.to_owned();
    let etcd_marker = etcd.data_dir().to_string_lossy().into_owned();
    let pg_marker = pg.data_dir().to_string_lossy().into_owned();
    assert!(runs_with(etcd_pid, &etcd_marker) && runs_with(pg_pid, &pg_marker));

    drop(etcd);
    drop(pg);
    assert!(!etcd_dir.exists(), "{} was not removed", etcd_dir.display());
    assert!(!pg_dir.exists(), "{} was not removed", pg_dir.display());
    assert!(!runs_with(etcd_pid, &etcd_marker), "etcd still runs");
    assert!(!runs_with(pg_pid, &pg_marker), "postgres still runs");
    Ok(())
}

#[test]
fn start_failures_show_the_server_log() {
    let options = EtcdOptions { extra_args: vec!["--no-such-flag".into()], ..EtcdOptions::default() };
    let err = EtcdServer::start_with(&options).unwrap_err().to_string();
    assert!(err.contains("exited with"), "{err}");
    assert!(err.contains("--- last lines of") && err.contains("no-such-flag"), "{err}");

    let options =
        PostgresOptions { settings: vec![("shared_buffers".into(), "lots".into())], ..PostgresOptions::default() };
    let err = PostgresServer::start_with(&options).unwrap_err().to_string();
    assert!(err.contains("exited with"), "{err}");
    assert!(err.contains("--- last lines of") && err.contains("shared_buffers"), "{err}");
}

#[test]
fn a_taken_port_is_reported_as_such() -> TestResult {
    // Occupy a port and make etcd listen on it: every attempt on fresh ports
    // still clashes, so the start fails after its retries, saying why.
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", taken.local_addr()?);
    let options = EtcdOptions {
        extra_args: vec![format!("--listen-client-urls={url}"), format!("--advertise-client-urls={url}")],
        ..EtcdOptions::default()
    };
    let err = EtcdServer::start_with(&options).unwrap_err().to_string();
    assert!(err.contains("address already in use"), "{err}");
    Ok(())
}
