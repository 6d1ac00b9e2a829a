//! The `shardd` binary: configuration layers (including the environment,
//! which a test cannot set in-process), exit codes, logs and SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn shardd() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shardd"));
    // The test process's own SHARDD_* variables must not leak in.
    for (key, _) in std::env::vars() {
        if key.starts_with("SHARDD_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command
}

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

#[test]
fn flags_beat_the_environment_which_beats_the_file() {
    let file =
        config_file("cluster = \"from-file\"\nmember_id = \"file-member\"\nlease_ttl = \"7s\"\nstore = \"memory\"\n");
    let output = shardd()
        .args(["--config", file.path().to_str().unwrap(), "--check-config", "--member-id", "flag-member"])
        .env("SHARDD_CLUSTER", "from-env")
        .env("SHARDD_MEMBER_ID", "env-member")
        .env("SHARDD_API_TOKEN", "t0p-s3cret")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed = String::from_utf8(output.stdout).unwrap();
    let config: toml::Table = printed.parse().unwrap();
    assert_eq!(config["cluster"].as_str(), Some("from-env"));
    assert_eq!(config["member_id"].as_str(), Some("flag-member"));
    assert_eq!(config["lease_ttl"].as_str(), Some("7s"));
    assert_eq!(config["store"].as_str(), Some("memory"));
    assert_eq!(config["listen"].as_str(), Some("127.0.0.1:7070"));
    assert_eq!(config["api_token"].as_str(), Some("***"));
    assert!(!printed.contains("t0p-s3cret"));
}

#[test]
fn bad_configuration_exits_2_naming_the_option() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        (&["--lease-ttl", "1s"], &[], "lease_ttl"),
        (&[], &[("SHARDD_STORE", "etcd"), ("SHARDD_ETCD_ENDPOINTS", "nope")], "etcd.endpoints"),
        (&["--no-such-flag"], &[], "--no-such-flag"),
        (&[], &[("SHARDD_LEASE_TTL", "soon")], "soon"),
    ];
    for (args, env, needle) in cases {
        let output = shardd().args(*args).envs(env.iter().copied()).arg("--check-config").output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    let file = config_file("[etcd]\nendpoint = \"x\"\n");
    let output = shardd().args(["--config", file.path().to_str().unwrap()]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("endpoint") && stderr.contains("line 2"), "{stderr}");
}

#[test]
fn an_invalid_stored_topology_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topology.json");
    // Well-formed, but the ranges leave a gap.
    let file = serde_json::json!({
        "format": 1, "cluster": "default", "revision": 2, "topology_epoch": 2,
        "keyspaces": {"users": {"version": 2, "keyspace": {
            "shards": [{"id": "s0", "primary": "sqlite:///tmp/s0.db"}],
            "partitioning": {"algorithm": "hash_range", "ranges": [{"range": "-80", "shard": "s0"}]}
        }}}
    });
    std::fs::write(&path, file.to_string()).unwrap();
    let output = shardd()
        .args(["--store", "local", "--local-path", path.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("users"), "{stderr}");
}

#[test]
fn sigterm_shuts_down_cleanly_and_logs_hold_no_secret() {
    let mut child = shardd()
        .args(["--store", "memory", "--listen", "127.0.0.1:0", "--log-format", "json", "--member-id", "cli-1"])
        .env("SHARDD_API_TOKEN", "t0p-s3cret")
        .env("SHARDD_LOG_FILTER", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let addr = loop {
        let line = rx.recv_timeout(Duration::from_secs(20)).expect("shardd logs that it listens");
        let json: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
        lines.push(line);
        if json["message"] == "shardd listening" {
            break json["addr"].as_str().unwrap().to_owned();
        }
    };
    let status = probe(&addr, "/health/live");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let status = probe(&addr, "/v1/status");
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let exit = wait(&mut child, Duration::from_secs(15));
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    let all = lines.join("\n");
    assert_eq!(exit.code(), Some(0), "{all}");
    assert!(!all.contains("t0p-s3cret"), "a log line leaked the token:\n{all}");
    for message in ["became leader", "shutting down", "resigned leadership", "shardd stopped"] {
        assert!(all.contains(message), "no {message:?} in\n{all}");
    }
}

/// `GET path` over a plain socket; returns the status line.
fn probe(addr: &str, path: &str) -> String {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or_default().to_owned()
}

fn wait(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("shardd did not exit within {timeout:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
