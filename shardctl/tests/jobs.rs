//! `shardctl move|split|merge|jobs` against a real shardd (in-process, on
//! the embedded file store) whose shards are SQLite files: rows really move,
//! and the files are counted afterwards.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use shardlib::KeyRange;
use shardlib::sql::sqlx;

mod support;

use support::{Cluster, dsn, keyspace_id, pool};

const TOKEN: &str = "t0ken-for-jobs";
const ROWS: i64 = 600;
const SHARDS: [&str; 3] = ["s0", "s1", "s2"];

/// Three SQLite shards: s0 owns -80, s1 owns 80-, s2 owns nothing yet.
/// Rows 1..=ROWS sit where the keyspace says.
async fn create_databases(dir: &Path) -> PathBuf {
    for shard in SHARDS {
        let pool = pool(&dsn(dir, shard)).await;
        sqlx::query("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, keyspace_id BIGINT NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("CREATE INDEX users_keyspace_id_idx ON users (keyspace_id, id)").execute(&pool).await.unwrap();
        let mut tx = pool.begin().await.unwrap();
        for id in 1..=ROWS {
            let kid = keyspace_id(id);
            let owner = if kid.0 < 1 << 63 { "s0" } else { "s1" };
            if owner == shard {
                sqlx::query("INSERT INTO users (id, name, keyspace_id) VALUES ($1, $2, $3)")
                    .bind(id)
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
        "shards": SHARDS.iter().map(|s| json!({"id": s, "primary": dsn(dir, s)})).collect::<Vec<_>>(),
        "partitioning": {"algorithm": "hash_range", "ranges": [
            {"range": "-80", "shard": "s0"}, {"range": "80-", "shard": "s1"}
        ]}
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

/// The ids whose keyspace ids fall in `range`.
fn ids_in(range: &str) -> Vec<i64> {
    let range: KeyRange = range.parse().unwrap();
    (1..=ROWS).filter(|id| range.contains(keyspace_id(*id))).collect()
}

fn ids_in_all(ranges: &[String]) -> Vec<i64> {
    let mut ids: Vec<i64> = ranges.iter().flat_map(|r| ids_in(r)).collect();
    ids.sort_unstable();
    ids
}

async fn assert_rows_follow_ranges(cluster: &Cluster, dir: &Path) {
    let ranges = cluster.ranges().await;
    let found = ids_by_shard(dir).await;
    for shard in SHARDS {
        let expected = ids_in_all(ranges.get(shard).map_or(&[][..], Vec::as_slice));
        assert_eq!(found[shard], expected, "rows of {shard} (owning {:?})", ranges.get(shard));
    }
    assert_eq!(found.values().map(Vec::len).sum::<usize>(), ROWS as usize, "every row is somewhere, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_split_and_merge_move_rows_and_report_progress() {
    let cluster = Cluster::start("jobs-test", TOKEN).await;
    let files = tempfile::tempdir().unwrap();
    let keyspace_file = create_databases(files.path()).await;
    cluster.ok(&["keyspace", "create", "users", "--file", keyspace_file.to_str().unwrap()]).await;
    let right_half = ids_in("80-");
    assert!(right_half.len() > 200 && right_half.len() < 400, "{} rows in 80-", right_half.len());

    // Move 80- from s1 to s2, waiting; plain progress lines on stderr.
    let (stdout, stderr) = cluster
        .ok(&["move", "-k", "users", "80-", "--to", "s2", "--batch-rows", "50", "--rows-per-second", "300"])
        .await;
    assert!(stderr.starts_with("started job j"), "{stderr}");
    assert!(stderr.contains("move 80- s1 → s2"), "{stderr}");
    assert!(stderr.contains(", phase copy"), "one line per phase: {stderr}");
    assert!(stderr.lines().any(|l| l.contains(" succeeded, phase done")), "{stderr}");
    assert!(stdout.contains("status    succeeded\n"), "{stdout}");
    let rows = format!("rows      {0} copied of {0}", right_half.len());
    assert!(stdout.contains(&rows), "{stdout}");
    assert!(stdout.contains("duration  ") && stdout.contains("copy "), "{stdout}");
    assert!(stdout.contains("cutover   writes paused "), "{stdout}");
    assert_eq!(cluster.ranges().await["s2"], ["80-"]);
    assert_rows_follow_ranges(&cluster, files.path()).await;
    let found = ids_by_shard(files.path()).await;
    assert!(found["s1"].is_empty() && found["s2"] == right_half);

    // Split 80- at the median of its rows, moving the right half to s1; JSON.
    let split = cluster.json(&["split", "-k", "users", "80-", "--at", "median", "--to", "s1"]).await;
    assert_eq!(split["status"], "succeeded", "{split}");
    assert_eq!(split["kind"], "split");
    let point = split["split_at"].as_str().expect("the chosen point").to_owned();
    let point = u64::from_str_radix(&point, 16).unwrap();
    let left = KeyRange::new(1 << 63, Some(point)).unwrap().to_string();
    let right = KeyRange::new(point, None).unwrap().to_string();
    let ranges = cluster.ranges().await;
    assert_eq!(ranges["s2"], [left.as_str()]);
    assert_eq!(ranges["s1"], [right.as_str()]);
    assert_rows_follow_ranges(&cluster, files.path()).await;
    let (left_rows, right_rows) = (ids_in(&left).len(), ids_in(&right).len());
    assert!(left_rows.abs_diff(right_rows) <= 2, "the median halves the rows: {left_rows} + {right_rows}");

    // Merge the halves back: the right one's rows move to s2.
    let (stdout, stderr) = cluster.ok(&["merge", "-k", "users", &left, &right]).await;
    assert!(stdout.contains("status    succeeded\n"), "{stdout}{stderr}");
    assert!(stderr.contains(&format!("merge {left} + {right} s1 → s2")), "{stderr}");
    let ranges = cluster.ranges().await;
    assert_eq!(ranges["s2"], ["80-"]);
    assert!(ranges["s1"].is_empty());
    assert_rows_follow_ranges(&cluster, files.path()).await;

    // The jobs, oldest first.
    let list = cluster.json(&["jobs", "list", "-k", "users"]).await;
    let jobs = list["jobs"].as_array().unwrap();
    let kinds: Vec<&str> = jobs.iter().map(|j| j["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["move", "split", "merge"]);
    let (table, _) = cluster.ok(&["jobs", "list"]).await;
    let lines: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["ID", "KEYSPACE", "KIND", "RANGES", "SHARDS", "STATUS", "PHASE", "PROGRESS", "AGE"]);
    assert_eq!(lines[1][..8], [jobs[0]["id"].as_str().unwrap(), "users", "move", "80-", "s1", "→", "s2", "succeeded"]);
    assert_eq!(lines[1][9], "100.0%");
    assert_eq!(lines.len(), 4, "{table}");
    let (empty, _) = cluster.ok(&["jobs", "list", "-k", "other"]).await;
    assert_eq!(empty, "no jobs in keyspace other\n");

    let id = jobs[0]["id"].as_str().unwrap();
    let (shown, _) = cluster.ok(&["jobs", "show", id]).await;
    assert!(shown.contains(&format!("job        {id}\n")), "{shown}");
    assert!(shown.contains("status     succeeded\n"), "{shown}");
    assert!(shown.contains("moving     80-\n"), "{shown}");
    let phases: Vec<&str> = shown
        .lines()
        .skip_while(|l| !l.starts_with("PHASE"))
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    for phase in ["precheck", "copy", "verify", "hand_over", "cleanup"] {
        assert!(phases.contains(&phase), "{phase} in {shown}");
    }
    // Waiting for a job that has ended answers at once.
    let (waited, _) = cluster.ok(&["jobs", "wait", id]).await;
    assert!(waited.contains("status    succeeded"), "{waited}");
    let err = cluster.fails(&["jobs", "cancel", id]).await;
    assert!(err.contains("409 job_finished"), "{err}");

    cluster.handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_detaches_and_a_cancelled_job_leaves_the_rows_where_they_were() {
    let cluster = Cluster::start("jobs-test", TOKEN).await;
    let files = tempfile::tempdir().unwrap();
    let keyspace_file = create_databases(files.path()).await;
    cluster.ok(&["keyspace", "create", "users", "--file", keyspace_file.to_str().unwrap()]).await;
    let before = ids_by_shard(files.path()).await;

    // A slow move (20 rows per second): Ctrl-C while waiting only detaches.
    let mut waiting =
        cluster.command(&["move", "-k", "users", "-80", "--to", "s2", "--batch-rows", "10", "--rows-per-second", "20"]);
    let (id, status, rest) = tokio::task::spawn_blocking(move || {
        let mut waiting = waiting.stderr(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let mut stderr = BufReader::new(waiting.stderr.take().unwrap());
        let mut started = String::new();
        stderr.read_line(&mut started).unwrap();
        let id = started.strip_prefix("started job ").and_then(|s| s.split(' ').next()).expect(&started).to_owned();
        // The first progress line: shardctl is polling, with its Ctrl-C handler.
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        assert!(line.starts_with(&format!("job {id} ")), "{line}");
        let interrupted = Command::new("kill").args(["-INT", &waiting.id().to_string()]).status().unwrap();
        assert!(interrupted.success());
        let status = waiting.wait().unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
        (id, status, rest)
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(
        rest.contains(&format!(
            "detached: job {id} keeps running in shardd; follow it with `shardctl jobs wait {id}`, \
             stop it with `shardctl jobs cancel {id}`"
        )),
        "{rest}"
    );

    // It still runs; the range is busy for another job.
    let shown = cluster.json(&["jobs", "show", &id]).await;
    assert!(matches!(shown["status"].as_str(), Some("queued" | "running")), "{shown}");
    let err = cluster.fails(&["move", "-k", "users", "-80", "--to", "s1"]).await;
    assert!(err.contains("409 range_busy") && err.contains(&id), "{err}");

    // Cancel and wait: it ends cancelled (exit 0 for `cancel --wait`),
    // and `jobs wait` then says the job did not succeed (exit 1).
    let (stdout, stderr) = cluster.ok(&["jobs", "cancel", &id, "--wait"]).await;
    assert!(stderr.starts_with(&format!("cancel requested for job {id}")), "{stderr}");
    assert!(stdout.contains("status    cancelled"), "{stdout}");
    let (stdout, stderr) = cluster.expect(1, &["jobs", "wait", &id, "-o", "json"]).await;
    let job: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(job["status"], "cancelled");
    assert!(stderr.contains(&format!("job {id} cancelled")), "{stderr}");
    assert_eq!(ids_by_shard(files.path()).await, before, "a cancelled move leaves every row where it was");
    assert_eq!(cluster.ranges().await["s0"], ["-80"]);

    // --detach prints the job and returns; the job then runs to the end.
    let created = cluster.json(&["move", "-k", "users", "-80", "--to", "s2", "--detach"]).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(matches!(created["status"].as_str(), Some("queued" | "running")), "{created}");
    let (stdout, _) = cluster.ok(&["jobs", "wait", &id]).await;
    assert!(stdout.contains("status    succeeded"), "{stdout}");
    assert_rows_follow_ranges(&cluster, files.path()).await;
    assert_eq!(cluster.ranges().await["s2"], ["-80"]);

    cluster.handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_clear_errors_and_change_nothing() {
    let cluster = Cluster::start("jobs-test", TOKEN).await;
    let files = tempfile::tempdir().unwrap();
    let keyspace_file = create_databases(files.path()).await;
    cluster.ok(&["keyspace", "create", "users", "--file", keyspace_file.to_str().unwrap()]).await;
    let before = cluster.ranges().await;

    // move: unknown range, same target, unknown shard, unknown keyspace.
    let err = cluster.fails(&["move", "-k", "users", "40-60", "--to", "s2"]).await;
    assert!(err.contains("404") && err.contains("40-60"), "{err}");
    let err = cluster.fails(&["move", "-k", "users", "-80", "--to", "s0"]).await;
    assert!(err.contains("400") && err.contains("already owns"), "{err}");
    let err = cluster.fails(&["move", "-k", "users", "-80", "--to", "s9"]).await;
    assert!(err.contains("404 shard_not_found") && err.contains("s9"), "{err}");
    let err = cluster.fails(&["move", "-k", "nope", "-80", "--to", "s2"]).await;
    assert!(err.contains("404") && err.contains("nope"), "{err}");
    let err = cluster.fails(&["move", "-k", "users", "-8", "--to", "s2"]).await;
    assert!(err.contains("odd number of hex digits"), "{err}");

    // split: unknown range, a point outside the range, an unknown shard.
    let err = cluster.fails(&["split", "-k", "users", "40-60"]).await;
    assert!(err.contains("404") && err.contains("40-60"), "{err}");
    let err = cluster.fails(&["split", "-k", "users", "-80", "--at", "c0"]).await;
    assert!(err.contains("--at c0 is not inside range -80"), "{err}");
    let err = cluster.fails(&["split", "-k", "users", "-80", "--at", "median", "--to", "s9"]).await;
    assert!(err.contains("404") && err.contains("s9"), "{err}");
    let err = cluster.fails(&["split", "-k", "users", "-80", "--at", "x1"]).await;
    assert!(err.contains("not hexadecimal"), "{err}");

    // merge: not neighbours, unknown ranges.
    let err = cluster.fails(&["merge", "-k", "users", "-40", "80-"]).await;
    assert!(err.contains("not neighbours"), "{err}");
    let err = cluster.fails(&["merge", "-k", "users", "80-a0", "a0-"]).await;
    assert!(err.contains("404") && err.contains("80-a0"), "{err}");

    // jobs: unknown ids.
    for args in [&["jobs", "show", "j0"][..], &["jobs", "wait", "j0"], &["jobs", "cancel", "j0"]] {
        let err = cluster.fails(args).await;
        assert!(err.contains("404 job_not_found") && err.contains("j0"), "{args:?}: {err}");
    }

    assert_eq!(cluster.ranges().await, before, "nothing changed");
    assert!(cluster.json(&["jobs", "list"]).await["jobs"].as_array().unwrap().is_empty());
    cluster.handle.shutdown().await.unwrap();
}
