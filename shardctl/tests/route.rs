//! End-to-end tests of `shardctl route`: the real binary, its output
//! formats, its exit codes and its errors.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use shardlib::ShardKey;
use shardlib::algo::jump::jump_consistent_hash;

fn shardctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardctl")).args(args).output().expect("shardctl runs")
}

fn shardctl_with_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardctl"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shardctl starts");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("shardctl finishes");
    writer.join().unwrap().expect("stdin written");
    output
}

fn example_topology() -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/topology.toml");
    root.to_str().unwrap().to_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[test]
fn jump_table_prints_key_id_and_shard() {
    let output = shardctl(&["route", "--algorithm", "jump", "--shards", "1000", "alice", "bob"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["KEY", "KEYSPACE_ID", "SHARD"]);
    // Reference values from docs/HASHING.md (independent Python implementation).
    assert_eq!(lines[1], ["alice", "5593767425381308080", "367"]);
    assert_eq!(lines[2], ["bob", "1442208253991303397", "355"]);
    assert_eq!(lines.len(), 3);
}

#[test]
fn json_output_has_key_keyspace_id_and_shard() {
    let output = shardctl(&["route", "--algorithm", "jump", "--shards", "1000", "-o", "json", "alice", "carol"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(
        rows,
        serde_json::json!([
            {"key": "alice", "keyspace_id": 5593767425381308080u64, "shard": 367},
            {"key": "carol", "keyspace_id": 16356433469892447140u64, "shard": 999},
        ])
    );
}

#[test]
fn keys_from_stdin_are_routed_in_bulk() {
    let keys: Vec<String> = (0..5_000).map(|i| format!("user-{i}")).collect();
    let input = keys.join("\n") + "\n";
    let output = shardctl_with_stdin(&["route", "-a", "jump", "-n", "64", "-o", "json"], &input);
    assert!(output.status.success(), "{}", stderr(&output));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(rows.len(), keys.len());
    for (row, key) in rows.iter().zip(&keys) {
        let id = key.as_str().keyspace_id(0).0;
        assert_eq!(row["key"], key.as_str());
        assert_eq!(row["keyspace_id"], id);
        assert_eq!(row["shard"], jump_consistent_hash(id, 64));
    }
}

#[test]
fn every_algorithm_routes_within_its_shards() {
    for algorithm in ["jump", "jump-back", "ring", "rendezvous", "maglev", "hash-range"] {
        let output = shardctl(&["route", "-a", algorithm, "-n", "7", "-o", "json", "--key-type", "u64", "1", "2", "3"]);
        assert!(output.status.success(), "{algorithm}: {}", stderr(&output));
        let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout(&output)).unwrap();
        assert_eq!(rows.len(), 3);
        for row in rows {
            assert!(row["shard"].as_u64().unwrap() < 7, "{algorithm}: {row}");
        }
    }
}

#[test]
fn topology_file_routes_through_its_ranges() {
    let topology = example_topology();
    let output = shardctl(&["route", "--topology", &topology, "--keyspace", "users", "-o", "json", "alice"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    // 5593767425381308080 = 0x4da1…, inside 40-80, owned by users-1.
    assert_eq!(
        rows,
        serde_json::json!([{"key": "alice", "keyspace_id": 5593767425381308080u64, "shard": "users-1", "range": "40-80"}])
    );
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let overlapping = dir.path().join("overlap.toml");
    std::fs::write(
        &overlapping,
        r#"cluster = "x"
[keyspaces.users]
shards = [{ id = "a", primary = "postgres://u:topsecret@h/db" }]
partitioning = { algorithm = "hash_range", ranges = [{ range = "-80", shard = "a" }, { range = "40-", shard = "a" }] }
"#,
    )
    .unwrap();
    let unknown_shard = dir.path().join("unknown.json");
    std::fs::write(
        &unknown_shard,
        r#"{"cluster": "x", "keyspaces": {"users": {"shards": [{"id": "a", "primary": "postgres://u:topsecret@h/db"}],
            "partitioning": {"algorithm": "hash_range", "ranges": [{"range": "-", "shard": "b"}]}}}}"#,
    )
    .unwrap();
    let overlapping = overlapping.to_str().unwrap();
    let unknown_shard = unknown_shard.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["route", "--algorithm", "nope", "--shards", "3", "k"], "invalid value 'nope'"),
        (&["route", "--algorithm", "jump", "--shards", "0", "k"], "--shards must be at least 1"),
        (&["route", "--algorithm", "jump", "k"], "--shards"),
        (&["route", "k"], "--keyspace"),
        (
            &["route", "--topology", "/nonexistent/topology.json", "k"],
            "cannot read topology file /nonexistent/topology.json",
        ),
        (&["route", "--topology", overlapping, "k"], "keyspace users: ranges -80 and 40- overlap"),
        (&["route", "--topology", unknown_shard, "k"], "keyspace users, range -: unknown shard \"b\""),
        (&["route", "-a", "jump", "-n", "4", "--key-type", "u64", "12", "x1"], "cannot read \"x1\" as a u64 key"),
        (&["route", "-a", "maglev", "-n", "70000", "k"], "maglev"),
    ];
    for (args, expected) in cases {
        let output = shardctl(args);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: stderr {err:?} should contain {expected:?}");
        assert!(!err.contains("topsecret"), "{args:?} leaked a password: {err}");
    }
    let with_topology = example_topology();
    let output = shardctl(&["route", "--topology", &with_topology, "k"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("choose one with --keyspace"), "{}", stderr(&output));
}

#[test]
fn a_bad_key_on_stdin_names_its_line() {
    let output = shardctl_with_stdin(&["route", "-a", "jump", "-n", "4", "--key-type", "i64"], "1\n2\nthree\n");
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("standard input, line 3"), "{}", stderr(&output));
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardctl"))
        .args(["route", "-a", "jump", "-n", "8", "-o", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        // Far more output than a pipe buffers, so shardctl must hit the
        // closed pipe. Our own write may fail once shardctl exits.
        let keys: String = (0..200_000).map(|i| format!("key-{i}\n")).collect();
        let _ = stdin.write_all(keys.as_bytes());
    });
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap(); // then dropped: the pipe closes
    let status = child.wait().unwrap();
    writer.join().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "status {status:?}, stderr {err:?}");
    assert!(err.is_empty(), "{err}");
}
