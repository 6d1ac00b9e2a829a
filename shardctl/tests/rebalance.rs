//! `shardctl rebalance|reshard|shard drain` against a real shardd
//! (in-process, on the embedded file store) whose shards are SQLite files:
//! the plans really run, and the files are counted afterwards.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;
use shardlib::KeyRange;
use shardlib::sql::sqlx;

mod support;

use support::{Cluster, dsn, keyspace_id, pool};

const TOKEN: &str = "t0ken-for-rebalance";
/// Every shard file the tests may use; s1..s4 start with the data.
const SHARDS: [&str; 8] = ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8"];
/// The starting layout and how many rows each range holds: skewed, so
/// that s1 and s4 carry four times what s2 and s3 do.
const LAYOUT: [(&str, &str, usize); 4] =
    [("-40", "s1", 800), ("40-80", "s2", 200), ("80-c0", "s3", 200), ("c0-", "s4", 800)];

/// What these tests add to the shared cluster.
trait ClusterExt {
    async fn add_shard(&self, dir: &Path, id: &str);
    async fn unfinished_jobs(&self) -> Vec<String>;
}

impl ClusterExt for Cluster {
    async fn add_shard(&self, dir: &Path, id: &str) {
        self.ok(&["shard", "add", id, "-k", "users", "--primary", &dsn(dir, id)]).await;
    }

    /// The jobs of the keyspace that have not ended.
    async fn unfinished_jobs(&self) -> Vec<String> {
        let list = self.json(&["jobs", "list", "-k", "users"]).await;
        let jobs = list["jobs"].as_array().unwrap();
        jobs.iter()
            .filter(|j| !matches!(j["status"].as_str(), Some("succeeded" | "failed" | "cancelled")))
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn range(name: &str) -> KeyRange {
    name.parse().unwrap()
}

/// The ids of the rows: the first ids whose keyspace ids fall in each
/// range of [`LAYOUT`], as many as it says.
fn row_ids() -> Vec<i64> {
    let mut wanted: Vec<(KeyRange, usize)> = LAYOUT.iter().map(|(r, _, n)| (range(r), *n)).collect();
    let mut ids = Vec::new();
    let mut id = 0;
    while wanted.iter().any(|(_, n)| *n > 0) {
        id += 1;
        let slot = wanted.iter_mut().find(|(r, _)| r.contains(keyspace_id(id))).unwrap();
        if slot.1 > 0 {
            slot.1 -= 1;
            ids.push(id);
        }
    }
    ids
}

/// Eight SQLite shard files with the table (s5..s8 empty), the rows on
/// s1..s4 as [`LAYOUT`] says, and the keyspace file of s1..s4.
async fn create_databases(dir: &Path) -> PathBuf {
    let ids = row_ids();
    for shard in SHARDS {
        let pool = pool(&dsn(dir, shard)).await;
        sqlx::query("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, keyspace_id BIGINT NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("CREATE INDEX users_keyspace_id_idx ON users (keyspace_id, id)").execute(&pool).await.unwrap();
        let mut tx = pool.begin().await.unwrap();
        for id in &ids {
            let kid = keyspace_id(*id);
            let owner = LAYOUT.iter().find(|(r, _, _)| range(r).contains(kid)).unwrap().1;
            if owner == shard {
                sqlx::query("INSERT INTO users (id, name, keyspace_id) VALUES ($1, $2, $3)")
                    .bind(*id)
                    .bind(format!("user {id}"))
                    .bind(kid.to_sql())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
        }
        tx.commit().await.unwrap();
        pool.close().await;
    }
    let keyspace = json!({
        "key_type": "i64",
        "tables": [{"name": "users", "key_columns": ["id"]}],
        "shards": SHARDS[..4].iter().map(|s| json!({"id": s, "primary": dsn(dir, s)})).collect::<Vec<_>>(),
        "partitioning": {"algorithm": "hash_range",
                         "ranges": LAYOUT.iter().map(|(r, s, _)| json!({"range": r, "shard": s})).collect::<Vec<_>>()}
    });
    let path = dir.join("users.json");
    std::fs::write(&path, serde_json::to_string_pretty(&keyspace).unwrap()).unwrap();
    path
}

/// The ids in each shard's file.
async fn ids_by_shard(dir: &Path) -> BTreeMap<&'static str, Vec<i64>> {
    let mut found = BTreeMap::new();
    for shard in SHARDS {
        let pool = pool(&dsn(dir, shard)).await;
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM users ORDER BY id").fetch_all(&pool).await.unwrap();
        pool.close().await;
        found.insert(shard, ids);
    }
    found
}

/// Every row sits on the shard that owns its keyspace id, once; returns
/// the row count of each shard that takes part in the keyspace.
async fn assert_rows_follow_ranges(cluster: &Cluster, dir: &Path) -> BTreeMap<String, usize> {
    let ranges = cluster.ranges().await;
    let owners: Vec<(KeyRange, &str)> =
        ranges.iter().flat_map(|(shard, names)| names.iter().map(move |r| (range(r), shard.as_str()))).collect();
    let found = ids_by_shard(dir).await;
    for (shard, ids) in &found {
        for id in ids {
            let kid = keyspace_id(*id);
            let owner = owners.iter().find(|(r, _)| r.contains(kid)).map(|(_, s)| *s);
            assert_eq!(owner, Some(*shard), "row {id} (keyspace id {kid:?}) is on {shard}; ranges {ranges:?}");
        }
    }
    let all: usize = found.values().map(Vec::len).sum();
    assert_eq!(all, row_ids().len(), "every row is somewhere, once");
    ranges.keys().map(|shard| (shard.clone(), found[shard.as_str()].len())).collect()
}

/// Peak over mean of the rows of these shards.
fn peak_to_mean(rows: &BTreeMap<String, usize>, shards: &[&str]) -> f64 {
    let counts: Vec<usize> = shards.iter().map(|s| rows[*s]).collect();
    let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    *counts.iter().max().unwrap() as f64 / mean
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_reshard_and_drain_move_rows_where_they_belong() {
    let cluster = Cluster::start("rebalance-test", TOKEN).await;
    let files = tempfile::tempdir().unwrap();
    let keyspace_file = create_databases(files.path()).await;
    cluster.ok(&["keyspace", "create", "users", "--file", keyspace_file.to_str().unwrap()]).await;
    cluster.add_shard(files.path(), "s5").await;
    let before_rows = ids_by_shard(files.path()).await;
    let before_ranges = cluster.ranges().await;

    // A dry run prints the plan and changes nothing.
    let (plan, _) = cluster.ok(&["rebalance", "-k", "users", "--dry-run"]).await;
    assert!(plan.starts_with("plan for keyspace users: "), "{plan}");
    assert!(plan.contains("\nSTEP  KIND "), "{plan}");
    assert!(plan.contains("\nimbalance  2.00 → "), "{plan}");
    assert!(plan.contains("\nmoving     "), "{plan}");
    let shards: Vec<Vec<&str>> =
        plan.lines().skip_while(|l| !l.starts_with("SHARD")).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(shards[0], ["SHARD", "ROWS", "BEFORE", "ROWS", "AFTER"], "{plan}");
    assert_eq!(shards[1][..2], ["s1", "800"], "{plan}");
    assert_eq!(shards[5][..2], ["s5", "0"], "{plan}");
    let dry = cluster.json(&["rebalance", "-k", "users", "--dry-run"]).await;
    let steps = dry["plan"]["steps"].as_array().unwrap();
    assert!(!steps.is_empty(), "{dry}");
    assert_eq!(dry["ranges"].as_array().unwrap().len(), 4, "{dry}");
    assert!(dry["jobs"].as_array().unwrap().is_empty(), "{dry}");
    assert_eq!(cluster.ranges().await, before_ranges, "a dry run changes nothing");
    assert_eq!(ids_by_shard(files.path()).await, before_rows);
    assert!(cluster.unfinished_jobs().await.is_empty());

    // Rebalance for real: waits for every job (plain lines on stderr).
    let (stdout, stderr) = cluster.ok(&["rebalance", "-k", "users", "--batch-rows", "100"]).await;
    let started = format!("started {} jobs in keyspace users: imbalance 2.00 → ", steps.len());
    assert!(stderr.starts_with(&started), "{stderr}");
    assert!(stderr.lines().any(|l| l.starts_with("job j") && l.contains(" succeeded, phase done")), "{stderr}");
    assert!(stderr.contains("all jobs: "), "{stderr}");
    // Maybe more than one plan: a plan splits each range at most once.
    let succeeded = stdout.lines().find_map(|l| l.strip_prefix("jobs       ")).unwrap_or_else(|| panic!("{stdout}"));
    let succeeded: usize = succeeded.strip_suffix(" succeeded, 0 failed").unwrap().parse().unwrap();
    assert!(succeeded >= steps.len(), "{stdout}");
    assert!(stdout.contains("\nrows       "), "{stdout}");
    assert!(stdout.contains("\nimbalance  2.00 → 1.0"), "{stdout}");
    assert!(stdout.contains("(measured after the jobs; planned 1.0"), "{stdout}");
    let rows = assert_rows_follow_ranges(&cluster, files.path()).await;
    let ratio = peak_to_mean(&rows, &SHARDS[..5]);
    assert!(ratio <= 1.1, "peak over mean {ratio:.3}: {rows:?}");

    // Balanced now: nothing more to do.
    let (stdout, _) = cluster.ok(&["rebalance", "-k", "users", "--dry-run"]).await;
    assert!(stdout.starts_with("balanced: imbalance 1.0"), "{stdout}");
    assert!(stdout.ends_with(" ≤ threshold 1.10; nothing to do\n"), "{stdout}");
    let (stdout, _) = cluster.ok(&["rebalance", "-k", "users"]).await;
    assert!(stdout.starts_with("balanced: "), "{stdout}");

    // Three more shards, then reshard to 8: at least 8 ranges over 8 shards.
    for shard in ["s6", "s7", "s8"] {
        cluster.add_shard(files.path(), shard).await;
    }
    let resharded = cluster.json(&["reshard", "-k", "users", "--shards", "8"]).await;
    let jobs = resharded["jobs"].as_array().unwrap();
    assert!(!jobs.is_empty() && jobs.iter().all(|j| j["status"] == "succeeded"), "{resharded}");
    assert!(resharded["measured"]["imbalance"].is_number(), "{resharded}");
    let ranges = cluster.ranges().await;
    assert!(ranges.values().map(Vec::len).sum::<usize>() >= 8, "{ranges:?}");
    assert!(SHARDS.iter().all(|s| !ranges[*s].is_empty()), "every shard owns a range: {ranges:?}");
    assert_rows_follow_ranges(&cluster, files.path()).await;

    // Drain s5: it ends up owning nothing, its file empty; then remove it.
    let s5_ranges = ranges["s5"].clone();
    let (plan, _) = cluster.ok(&["shard", "drain", "s5", "-k", "users", "--dry-run"]).await;
    assert!(plan.starts_with("plan for keyspace users: "), "{plan}");
    assert_eq!(cluster.json(&["shard", "list", "-k", "users"]).await["shards"][4]["state"], "serving");
    let (stdout, stderr) = cluster.ok(&["shard", "drain", "s5", "-k", "users"]).await;
    assert!(stdout.starts_with("shard s5 of keyspace users is now draining (epoch "), "{stdout}");
    assert!(stderr.starts_with("started "), "{stderr}");
    for moved in &s5_ranges {
        assert!(stderr.contains(&format!(" {moved} s5 → ")), "{moved} moves away: {stderr}");
    }
    assert!(stdout.contains(" succeeded, 0 failed\n"), "{stdout}");
    assert!(
        stdout.contains("\nshard      s5 owns nothing now: remove it with `shardctl shard remove s5 -k users`"),
        "{stdout}"
    );
    assert!(cluster.ranges().await["s5"].is_empty());
    let rows = assert_rows_follow_ranges(&cluster, files.path()).await;
    assert_eq!(rows["s5"], 0);
    // Draining it again has nothing to move.
    let (stdout, _) = cluster.ok(&["shard", "drain", "s5", "-k", "users"]).await;
    assert!(
        stdout.ends_with("it owns no ranges: nothing to move; remove it with `shardctl shard remove s5 -k users`\n"),
        "{stdout}"
    );
    cluster.ok(&["shard", "remove", "s5", "-k", "users"]).await;

    cluster.handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_ctrl_c_and_detach() {
    let cluster = Cluster::start("rebalance-test", TOKEN).await;
    let files = tempfile::tempdir().unwrap();
    let keyspace_file = create_databases(files.path()).await;
    cluster.ok(&["keyspace", "create", "users", "--file", keyspace_file.to_str().unwrap()]).await;
    cluster.add_shard(files.path(), "s5").await;
    let before_rows = ids_by_shard(files.path()).await;
    let before_ranges = cluster.ranges().await;

    // Bad input: exit 2, a clear message, nothing changed.
    for args in [
        &["rebalance", "-k", "nope"][..],
        &["rebalance", "-k", "nope", "--dry-run"],
        &["reshard", "-k", "nope", "-n", "8"],
    ] {
        let err = cluster.fails(args).await;
        assert!(err.contains("404") && err.contains("nope"), "{args:?}: {err}");
    }
    for args in [&["shard", "drain", "s9", "-k", "users"][..], &["shard", "drain", "s9", "-k", "users", "--dry-run"]] {
        let err = cluster.fails(args).await;
        assert!(err.contains("keyspace users has no shard s9 (its shards: s1, s2, s3, s4, s5)"), "{args:?}: {err}");
    }
    let err = cluster.fails(&["rebalance", "-k", "users", "--target", "1.5"]).await;
    assert!(err.contains("--target 1.5 is above the threshold 1.1"), "{err}");
    assert_eq!(cluster.ranges().await, before_ranges);
    assert!(cluster.unfinished_jobs().await.is_empty());

    // A slow rebalance (20 rows per second per job): Ctrl-C only detaches.
    let mut waiting = cluster.command(&["rebalance", "-k", "users", "--batch-rows", "10", "--rows-per-second", "20"]);
    let (status, head, rest) = tokio::task::spawn_blocking(move || {
        let mut waiting = waiting.stderr(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let mut stderr = BufReader::new(waiting.stderr.take().unwrap());
        // Up to the first progress line: shardctl polls, with its Ctrl-C handler.
        let mut head = String::new();
        loop {
            let mut line = String::new();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "stderr ended: {head}");
            head.push_str(&line);
            if line.starts_with("job j") {
                break;
            }
        }
        let interrupted = Command::new("kill").args(["-INT", &waiting.id().to_string()]).status().unwrap();
        assert!(interrupted.success());
        let status = waiting.wait().unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
        (status, head, rest)
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(130), "{head}{rest}");
    assert!(head.starts_with("started "), "{head}");
    let unfinished = cluster.unfinished_jobs().await;
    assert!(!unfinished.is_empty(), "the jobs keep running");
    let detached = rest.lines().find(|l| l.starts_with("detached: ")).unwrap_or_else(|| panic!("{rest}"));
    assert!(detached.contains(" keep running in shardd ("), "{detached}");
    assert!(detached.contains("; follow with `shardctl jobs wait j"), "{detached}");
    for id in &unfinished {
        assert!(detached.contains(id.as_str()), "{id} in {detached}");
    }

    // While they run, another rebalance is refused; a dry run is not.
    let err = cluster.fails(&["rebalance", "-k", "users"]).await;
    assert!(err.contains("409 range_busy") && err.contains("unfinished jobs"), "{err}");
    cluster.ok(&["rebalance", "-k", "users", "--dry-run"]).await;

    // Cancel them: every row stays where it was.
    for id in &unfinished {
        let (stdout, _) = cluster.ok(&["jobs", "cancel", id, "--wait"]).await;
        assert!(stdout.contains("status    cancelled"), "{stdout}");
    }
    // (A cancelled split may have split its range already: both halves stay.)
    assert_eq!(ids_by_shard(files.path()).await, before_rows, "cancelled jobs leave every row where it was");
    assert_rows_follow_ranges(&cluster, files.path()).await;

    // --detach prints the plan and the jobs, and returns; they run to the end.
    let (stdout, _) = cluster.ok(&["rebalance", "-k", "users", "--detach"]).await;
    assert!(stdout.starts_with("plan for keyspace users: "), "{stdout}");
    assert!(stdout.contains("\nstarted "), "{stdout}");
    assert!(stdout.contains("follow them with `shardctl jobs wait j"), "{stdout}");
    let ids: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("  j"))
        .map(|l| format!("j{}", l.split_whitespace().next().unwrap()))
        .collect();
    assert!(!ids.is_empty(), "{stdout}");
    for id in &ids {
        let (stdout, _) = cluster.ok(&["jobs", "wait", id]).await;
        assert!(stdout.contains("status    succeeded"), "{stdout}");
    }
    let rows = assert_rows_follow_ranges(&cluster, files.path()).await;
    assert!(rows["s5"] > 0, "the new shard took rows: {rows:?}");

    cluster.handle.shutdown().await.unwrap();
}
