//! Copy rate of a range move between two PostgreSQL servers, side by side
//! with the raw baseline of a `psql | psql` pipe on the same data.
//!
//! The program starts two PostgreSQL servers (A and B, `shardkit-tests`'
//! fixture: free ports, temporary directories removed at the end) and
//! shardd in-process (embedded memory store; the store only holds the
//! topology and the job document, written about once a second), then:
//!
//! 1. **Load** once, into database `seed` on A: `--rows` rows of table
//!    `users (id BIGINT, payload TEXT, keyspace_id BIGINT)`, about 100 bytes
//!    of column values each (8 + 8 + an 84-character payload by default):
//!
//!    ```sql
//!    INSERT INTO users (id, keyspace_id, payload)
//!    SELECT i, ('x' || substr(md5(i::text), 1, 16))::bit(64)::bigint,
//!           substr(repeat(md5(i::text), 3), 1, 84)
//!    FROM generate_series(1, 1000000) AS i
//!    ```
//!
//!    The keyspace id is the first 64 bits of the MD5 of the id's text:
//!    deterministic, spread evenly over the whole `BIGINT` space and
//!    uncorrelated with the insertion order (as real keyspace ids are).
//!    Then the primary key and the `(keyspace_id, id)` index, and
//!    `VACUUM (FREEZE, ANALYZE)`, so that no reader pays for hint bits.
//! 2. **Runs**, `--runs` times, each on a fresh copy of `seed`
//!    (`CREATE DATABASE src_N TEMPLATE seed`, so every run copies the same
//!    rows, laid out the same way, into an empty target):
//!    - **baseline**: a real shell pipe between two `psql` processes,
//!      `psql A/seed -c "COPY (SELECT id, payload, keyspace_id FROM users
//!      WHERE keyspace_id BETWEEN lo AND hi) TO STDOUT" | psql B/base_N -c
//!      "COPY users (…) FROM STDIN"`, with lo..hi the whole range, into an
//!      empty table of the same schema (primary key and index included);
//!      timed from spawn to exit.
//!    - **ours**: keyspace `copy-N` with shards `s1` (A/src_N) and `s2`
//!      (B/dst_N, empty, same schema), range `-` on `s1`; a move job of
//!      `-` to `s2` (`POST /v1/keyspaces/copy-N/jobs`, `batch_rows` =
//!      `--batch-rows`), polled every 50 ms until it ends. Capture triggers
//!      are installed on the source, as in production. The *copy rate* is
//!      `rows_copied` over the `copy` phase's span in the job's `phases`;
//!      the *whole job* rate is the rows over `created_at_ms` →
//!      `finished_at_ms` (precheck, capture, copy, catch-up, verification,
//!      fence, hand-over and the deletion of the moved rows on the source).
//!
//!    The order alternates: odd runs baseline first, even runs ours first.
//!    Both targets are checked to hold exactly `--rows` rows afterwards.
//!
//! # Usage
//!
//! ```text
//! cargo build --release -p shardkit-benches --bins
//! target/release/copy_rate [--rows 1000000] [--runs 3] [--batch-rows 10000]
//!     [--payload 84] [--shared-buffers 128MB] [--pg-settings NAME=VALUE,…] [--keep-logs DIR]
//!     [--unix-sockets] [--json]
//! ```
//!
//! Markdown tables go to stdout (`--json`: one JSON document instead),
//! progress to stderr; `RUST_LOG=shardd=debug` shows shardd's log. Exit
//! status: 0 done, 1 the run failed, 2 bad flags.

use std::collections::BTreeMap;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shardkit_benches::moving::{
    Api, Error, MOVE_PHASES, Transport, constraints_sql, create_empty, create_table_sql, describe_postgres,
    init_logging, keep_logs, keyspace_json, parse_pg_settings, phase_ms, postgres_options, spans, start_shardd,
    verdict,
};
use shardkit_benches::system::{FlagError, Flags, load_average, machine, median};
use shardkit_tests::PostgresServer;
use shardlib::KeyRange;

const USAGE: &str = "usage: copy_rate [--rows N] [--runs N] [--batch-rows N] [--payload N] [--shared-buffers SIZE]
                 [--pg-settings NAME=VALUE,…] [--keep-logs DIR] [--unix-sockets] [--json]

  --rows            rows moved (1000000)
  --runs            baseline + move pairs, each on a fresh copy of the data (3)
  --batch-rows      the job's rows per copy chunk (10000, shardd's default)
  --payload         characters of the payload column (84: 100 bytes of values a row)
  --shared-buffers  PostgreSQL shared_buffers of both servers (128MB, PostgreSQL's default)
  --pg-settings     more postgresql.conf settings of both servers, name=value,… (for diagnosis)
  --keep-logs       copy both servers' logs into this directory at the end
  --unix-sockets    reach the servers (job and baseline) by their Unix sockets, not TCP (for diagnosis)
  --json            print one JSON document instead of the tables";

/// The target ratio ours / baseline of the copy rate.
const TARGET_RATIO: f64 = 0.7;

/// Rows per `INSERT … SELECT` while loading (each one psql call).
const LOAD_SLICE: u64 = 1_000_000;

/// How long one job may take.
const JOB_TIMEOUT: Duration = Duration::from_secs(1800);

/// How often the job is polled.
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
struct Settings {
    rows: u64,
    runs: usize,
    batch_rows: u64,
    payload: usize,
    shared_buffers: String,
    pg_settings: Vec<(String, String)>,
    keep_logs: Option<std::path::PathBuf>,
    transport: Transport,
    json: bool,
}

impl Settings {
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Settings>, FlagError> {
        let mut flags = Flags::parse(args)?;
        if flags.switch("help")? {
            return Ok(None);
        }
        let settings = Settings {
            rows: flags.value("rows", 1_000_000)?,
            runs: flags.value("runs", 3)?,
            batch_rows: flags.value("batch-rows", 10_000)?,
            payload: flags.value("payload", 84)?,
            shared_buffers: flags.text("shared-buffers")?.unwrap_or_else(|| "128MB".to_owned()),
            pg_settings: parse_pg_settings(&flags.text("pg-settings")?.unwrap_or_default())?,
            keep_logs: flags.text("keep-logs")?.map(Into::into),
            transport: if flags.switch("unix-sockets")? { Transport::Unix } else { Transport::Tcp },
            json: flags.switch("json")?,
        };
        flags.finish()?;
        if settings.rows == 0 || settings.runs == 0 || settings.batch_rows == 0 {
            return Err(FlagError("--rows, --runs and --batch-rows must be at least 1".to_owned()));
        }
        if settings.payload > 96 {
            return Err(FlagError("--payload is at most 96 (three MD5s)".to_owned()));
        }
        Ok(Some(settings))
    }
}

fn main() -> ExitCode {
    let settings = match Settings::parse(std::env::args().skip(1)) {
        Ok(Some(settings)) => settings,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("copy_rate: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    init_logging();
    match run(&settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("copy_rate: {e}");
            ExitCode::from(1)
        }
    }
}

/// What the load found.
struct Loaded {
    took: Duration,
    table_mib: f64,
    total_mib: f64,
    avg_row_bytes: f64,
    copy_text_bytes: f64,
    plan: String,
}

/// One run: the baseline and the job.
#[derive(Debug, Clone)]
struct RunResult {
    baseline_first: bool,
    baseline_s: f64,
    copy_s: f64,
    rows_copied: u64,
    job_s: f64,
    job_wall_s: f64,
    phases: BTreeMap<String, f64>,
    job_id: String,
}

impl RunResult {
    fn baseline_rate(&self, rows: u64) -> f64 {
        rows as f64 / self.baseline_s
    }
    fn copy_rate(&self) -> f64 {
        self.rows_copied as f64 / self.copy_s
    }
    fn job_rate(&self, rows: u64) -> f64 {
        rows as f64 / self.job_s
    }
}

fn run(settings: &Settings) -> Result<(), Error> {
    let started = Instant::now();
    let machine = machine();
    let load_at_start = load_average().unwrap_or_default();
    let options = postgres_options(&settings.shared_buffers, &settings.pg_settings);
    eprintln!("copy_rate: starting two PostgreSQL servers");
    let a = PostgresServer::start_with(&options)?;
    let b = PostgresServer::start_with(&options)?;
    let postgres = describe_postgres(&a);
    eprintln!("copy_rate: {postgres}; A on port {}, B on port {}", a.port(), b.port());

    eprintln!("copy_rate: loading {} rows into A/seed", settings.rows);
    let loaded = load(&a, settings)?;
    eprintln!(
        "copy_rate: loaded in {:.1} s: table {:.0} MiB, with indexes {:.0} MiB",
        loaded.took.as_secs_f64(),
        loaded.table_mib,
        loaded.total_mib
    );

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut config = shardd::Config {
        store: shardd::StoreKind::Memory,
        cluster: "copy-rate".into(),
        listen: "127.0.0.1:0".parse()?,
        ..shardd::Config::default()
    };
    config.mover.batch_rows = settings.batch_rows;
    let server = start_shardd(&runtime, config)?;
    let api = Api::new(server.url());

    let mut results = Vec::with_capacity(settings.runs);
    for n in 1..=settings.runs {
        let result = one_run(&runtime, &api, &a, &b, settings, n)?;
        eprintln!(
            "copy_rate: run {n}: baseline {:.2} s ({:.0} rows/s), copy phase {:.2} s ({:.0} rows/s, {:.2} of the baseline), whole job {:.2} s",
            result.baseline_s,
            result.baseline_rate(settings.rows),
            result.copy_s,
            result.copy_rate(),
            result.copy_rate() / result.baseline_rate(settings.rows),
            result.job_s
        );
        results.push(result);
    }
    runtime.block_on(server.shutdown())?;
    drop(runtime);
    if let Some(dir) = &settings.keep_logs {
        keep_logs(dir, &[("postgres-a", &a), ("postgres-b", &b)])?;
    }
    let load_at_end = load_average().unwrap_or_default();
    if settings.json {
        print_json(settings, &machine, &postgres, &loaded, &results);
    } else {
        print_tables(settings, &machine, &postgres, &loaded, &results, &load_at_start, &load_at_end);
    }
    eprintln!("copy_rate: done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Loads `seed` on `a` and measures what was loaded.
fn load(a: &PostgresServer, settings: &Settings) -> Result<Loaded, Error> {
    let started = Instant::now();
    a.create_database("seed")?;
    a.psql("seed", &create_table_sql()?)?;
    let mut first = 1;
    while first <= settings.rows {
        let last = (first + LOAD_SLICE - 1).min(settings.rows);
        a.psql(
            "seed",
            &format!(
                "INSERT INTO users (id, keyspace_id, payload) \
                 SELECT i, ('x' || substr(md5(i::text), 1, 16))::bit(64)::bigint, substr(repeat(md5(i::text), 3), 1, {}) \
                 FROM generate_series({first}, {last}) AS i",
                settings.payload
            ),
        )?;
        first = last + 1;
    }
    for statement in constraints_sql()? {
        a.psql("seed", &statement)?;
    }
    a.psql("seed", "VACUUM (FREEZE, ANALYZE) users")?;
    a.psql("seed", "CHECKPOINT")?;
    let took = started.elapsed();
    let number = |text: String| text.trim().parse::<f64>().map_err(|e| format!("{text:?}: {e}"));
    let table_mib = number(a.psql("seed", "SELECT pg_table_size('users') / 1048576.0")?)?;
    let total_mib = number(a.psql("seed", "SELECT pg_total_relation_size('users') / 1048576.0")?)?;
    let avg_row_bytes = number(a.psql("seed", "SELECT avg(pg_column_size(u.*)) FROM users u")?)?;
    // The length of the COPY text the baseline sends: the columns as text,
    // tab-separated, one newline per row.
    let copy_text_bytes = number(
        a.psql("seed", "SELECT avg(length(id::text) + length(payload) + length(keyspace_id::text) + 3) FROM users")?,
    )?;
    let (lo, hi) = shardlib::sql::schema::sql_bounds(KeyRange::FULL);
    let plan = a.psql(
        "seed",
        &format!("EXPLAIN SELECT id, payload, keyspace_id FROM users WHERE keyspace_id BETWEEN {lo} AND {hi}"),
    )?;
    let plan = plan.lines().next().unwrap_or("").trim().to_owned();
    Ok(Loaded { took, table_mib, total_mib, avg_row_bytes, copy_text_bytes, plan })
}

fn count(server: &PostgresServer, db: &str) -> Result<u64, Error> {
    let text = server.psql(db, "SELECT count(*) FROM users")?;
    Ok(text.trim().parse()?)
}

/// A fresh copy of `seed` as `db`. `STRATEGY FILE_COPY` (PostgreSQL 15+)
/// copies the files instead of logging every block; older servers copy
/// files anyway.
fn copy_seed(a: &PostgresServer, db: &str) -> Result<(), Error> {
    if a.psql("postgres", &format!("CREATE DATABASE {db} TEMPLATE seed STRATEGY FILE_COPY")).is_err() {
        a.psql("postgres", &format!("CREATE DATABASE {db} TEMPLATE seed"))?;
    }
    a.psql("postgres", "CHECKPOINT")?;
    Ok(())
}

fn one_run(
    runtime: &tokio::runtime::Runtime,
    api: &Api,
    a: &PostgresServer,
    b: &PostgresServer,
    settings: &Settings,
    n: usize,
) -> Result<RunResult, Error> {
    let (src, dst, base) = (format!("src_{n}"), format!("dst_{n}"), format!("base_{n}"));
    eprintln!("copy_rate: run {n}: preparing A/{src} (copy of seed), B/{dst} and B/{base} (empty)");
    copy_seed(a, &src)?;
    create_empty(b, &dst)?;
    create_empty(b, &base)?;
    b.psql("postgres", "CHECKPOINT")?;
    let keyspace = format!("copy-{n}");
    let (src_dsn, dst_dsn) = (settings.transport.dsn(a, &src), settings.transport.dsn(b, &dst));
    runtime.block_on(
        api.create_keyspace(&keyspace, keyspace_json(&[("s1", &src_dsn), ("s2", &dst_dsn)], &[("-", "s1")])),
    )?;

    let baseline_first = n % 2 == 1;
    let mut baseline_s = 0.0;
    let mut job = None;
    for step in 0..2 {
        if (step == 0) == baseline_first {
            eprintln!("copy_rate: run {n}: baseline psql | psql");
            baseline_s = baseline(a, b, &base, settings.transport)?.as_secs_f64();
        } else {
            eprintln!("copy_rate: run {n}: move job");
            job = Some(runtime.block_on(move_job(api, &keyspace, settings.batch_rows))?);
        }
    }
    let (job, wall) = job.ok_or("the job did not run")?;
    for (server, db) in [(b, &base), (b, &dst)] {
        let rows = count(server, db)?;
        if rows != settings.rows {
            return Err(format!("run {n}: B/{db} holds {rows} rows, expected {}", settings.rows).into());
        }
    }
    let left = count(a, &src)?;
    if left != 0 {
        return Err(format!("run {n}: the job left {left} rows on the source").into());
    }
    let phases = phase_ms(&job);
    let copy_ms = *phases.get("copy").ok_or("the job has no copy phase")?;
    let created = job["created_at_ms"].as_u64().ok_or("no created_at_ms")?;
    let finished = job["finished_at_ms"].as_u64().ok_or("no finished_at_ms")?;
    let result = RunResult {
        baseline_first,
        baseline_s,
        copy_s: copy_ms / 1e3,
        rows_copied: job["progress"]["rows_copied"].as_u64().unwrap_or(0),
        job_s: finished.saturating_sub(created) as f64 / 1e3,
        job_wall_s: wall.as_secs_f64(),
        phases,
        job_id: job["id"].as_str().unwrap_or("").to_owned(),
    };
    if result.rows_copied != settings.rows {
        eprintln!("copy_rate: run {n}: the job reports {} rows copied", result.rows_copied);
    }
    // Free the disk: the databases of this run are not needed any more.
    for (server, db) in [(a, &src), (b, &dst), (b, &base)] {
        server.psql("postgres", &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))?;
    }
    Ok(result)
}

/// The raw baseline: `psql … COPY … TO STDOUT | psql … COPY … FROM STDIN`
/// through a real shell pipe (bash, `pipefail`).
fn baseline(a: &PostgresServer, b: &PostgresServer, base: &str, transport: Transport) -> Result<Duration, Error> {
    let (lo, hi) = shardlib::sql::schema::sql_bounds(KeyRange::FULL);
    let command = format!(
        "{} --command \"COPY (SELECT id, payload, keyspace_id FROM users WHERE keyspace_id BETWEEN {lo} AND {hi}) TO STDOUT\" \
         | {} --command \"COPY users (id, payload, keyspace_id) FROM STDIN\"",
        transport.psql_args(a, "seed"),
        transport.psql_args(b, base)
    );
    let mut shell = Command::new("bash");
    // Take nothing from the caller's PG* variables.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PG")) {
            shell.env_remove(key);
        }
    }
    shell.args(["-o", "pipefail", "-c", &command]).stdin(Stdio::null()).stdout(Stdio::null());
    let started = Instant::now();
    let status = shell.status()?;
    let took = started.elapsed();
    if !status.success() {
        return Err(format!("the baseline pipe failed ({status}): {command}").into());
    }
    Ok(took)
}

/// Runs a move of the whole range to `s2`; returns the finished job and
/// the wall time from the request to the end seen by polling.
async fn move_job(api: &Api, keyspace: &str, batch_rows: u64) -> Result<(Value, Duration), Error> {
    let started = Instant::now();
    let request = json!({ "kind": "move", "ranges": ["-"], "to": "s2", "batch_rows": batch_rows });
    let id = api.create_job(keyspace, &request).await?;
    let (job, ended) = api.wait_finished("copy_rate", &id, POLL, JOB_TIMEOUT).await?;
    if job["status"] != "succeeded" {
        return Err(format!("job {id} ended {}: {}", job["status"], job["error"]).into());
    }
    if spans(&job).is_empty() {
        return Err(format!("job {id} has no phase history: {job}").into());
    }
    Ok((job, ended - started))
}

fn med(values: impl IntoIterator<Item = f64>) -> f64 {
    median(&values.into_iter().collect::<Vec<_>>()).unwrap_or(f64::NAN)
}

/// Rows per second, grouped in thousands (`412k`).
fn rate(rows_per_second: f64) -> String {
    format!("{:.0}k", rows_per_second / 1e3)
}

fn print_tables(
    settings: &Settings,
    machine: &str,
    postgres: &str,
    loaded: &Loaded,
    results: &[RunResult],
    load_at_start: &str,
    load_at_end: &str,
) {
    let rows = settings.rows;
    println!("## Copy rate: {rows} rows moved between two PostgreSQL servers\n");
    println!("Machine: {machine}. Load average at start: {load_at_start}; at the end: {load_at_end}.\n");
    println!("Servers: two local {postgres}, reached by {}.\n", settings.transport.describe());
    println!(
        "Data: {rows} rows `(id BIGINT, payload TEXT, keyspace_id BIGINT)`, {} + 16 bytes of column values a row \
         ({:.0} bytes a row on disk, {:.0} bytes a row as COPY text); table {:.0} MiB, {:.0} MiB with the primary key \
         and the `(keyspace_id, id)` index; loaded in {:.1} s. Keyspace id = first 64 bits of `md5(id::text)`. \
         The baseline's plan: `{}`.\n",
        settings.payload,
        loaded.avg_row_bytes,
        loaded.copy_text_bytes,
        loaded.table_mib,
        loaded.total_mib,
        loaded.took.as_secs_f64(),
        loaded.plan
    );
    println!("Job: move of range `-` (all rows), `batch_rows` {}.\n", settings.batch_rows);
    println!(
        "| run | first | baseline `psql \\| psql` | baseline rows/s | **copy phase** | **copy rows/s** | **copy / baseline** | whole job | whole job rows/s |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (i, r) in results.iter().enumerate() {
        println!(
            "| {} | {} | {:.2} s | {} | {:.2} s | {} | {:.2} | {:.2} s | {} |",
            i + 1,
            if r.baseline_first { "baseline" } else { "job" },
            r.baseline_s,
            rate(r.baseline_rate(rows)),
            r.copy_s,
            rate(r.copy_rate()),
            r.copy_rate() / r.baseline_rate(rows),
            r.job_s,
            rate(r.job_rate(rows)),
        );
    }
    let m = Medians::of(settings, results);
    println!(
        "| **median** | | **{:.2} s** | **{}** | **{:.2} s** | **{}** | **{:.2}** | **{:.2} s** | **{}** |",
        m.baseline_s,
        rate(m.baseline_rate),
        m.copy_s,
        rate(m.copy_rate),
        m.ratio,
        m.job_s,
        rate(m.job_rate)
    );
    println!(
        "\nRatio of the medians (copy rows/s ÷ baseline rows/s): **{:.2}**; whole job ÷ baseline: {:.2}.\n",
        m.copy_rate / m.baseline_rate,
        m.job_rate / m.baseline_rate
    );

    println!("### Where the job's time goes (ms per phase)\n");
    let runs: Vec<String> = (1..=results.len()).map(|i| format!("run {i}")).collect();
    println!("| phase | {} | median |", runs.join(" | "));
    println!("|---|{}---:|", "---:|".repeat(results.len()));
    for phase in MOVE_PHASES {
        let values: Vec<f64> = results.iter().map(|r| r.phases.get(phase).copied().unwrap_or(0.0)).collect();
        let each: Vec<String> = values.iter().map(|v| format!("{v:.0}")).collect();
        println!("| {phase} | {} | {:.0} |", each.join(" | "), med(values.iter().copied()));
    }
    let wall: Vec<String> = results.iter().map(|r| format!("{:.0}", r.job_wall_s * 1e3)).collect();
    println!(
        "| (request → end seen by polling) | {} | {:.0} |",
        wall.join(" | "),
        med(results.iter().map(|r| r.job_wall_s * 1e3))
    );
    let ids: Vec<&str> = results.iter().map(|r| r.job_id.as_str()).collect();
    println!("\nJobs: {}.\n", ids.join(", "));

    println!("### Target\n");
    println!("| target | measured (median) | |");
    println!("|---|---:|---|");
    println!("| copy rate ≥ {TARGET_RATIO} × baseline | {:.2} × | {} |\n", m.ratio, verdict(m.ratio >= TARGET_RATIO));
}

struct Medians {
    baseline_s: f64,
    baseline_rate: f64,
    copy_s: f64,
    copy_rate: f64,
    ratio: f64,
    job_s: f64,
    job_rate: f64,
}

impl Medians {
    fn of(settings: &Settings, results: &[RunResult]) -> Medians {
        let rows = settings.rows;
        Medians {
            baseline_s: med(results.iter().map(|r| r.baseline_s)),
            baseline_rate: med(results.iter().map(|r| r.baseline_rate(rows))),
            copy_s: med(results.iter().map(|r| r.copy_s)),
            copy_rate: med(results.iter().map(RunResult::copy_rate)),
            ratio: med(results.iter().map(|r| r.copy_rate() / r.baseline_rate(rows))),
            job_s: med(results.iter().map(|r| r.job_s)),
            job_rate: med(results.iter().map(|r| r.job_rate(rows))),
        }
    }
}

fn print_json(settings: &Settings, machine: &str, postgres: &str, loaded: &Loaded, results: &[RunResult]) {
    let rows = settings.rows;
    let m = Medians::of(settings, results);
    let runs: Vec<Value> = results
        .iter()
        .map(|r| {
            json!({
                "first": if r.baseline_first { "baseline" } else { "job" },
                "baseline_s": r.baseline_s,
                "baseline_rows_per_s": r.baseline_rate(rows),
                "copy_s": r.copy_s,
                "copy_rows_per_s": r.copy_rate(),
                "rows_copied": r.rows_copied,
                "ratio": r.copy_rate() / r.baseline_rate(rows),
                "job_s": r.job_s,
                "job_rows_per_s": r.job_rate(rows),
                "job_wall_s": r.job_wall_s,
                "phases_ms": r.phases,
                "job_id": r.job_id,
            })
        })
        .collect();
    let doc = json!({
        "benchmark": "copy_rate",
        "machine": machine,
        "postgres": postgres,
        "transport": settings.transport.describe(),
        "rows": rows,
        "batch_rows": settings.batch_rows,
        "payload_chars": settings.payload,
        "load": {
            "seconds": loaded.took.as_secs_f64(),
            "table_mib": loaded.table_mib,
            "total_mib": loaded.total_mib,
            "avg_row_bytes": loaded.avg_row_bytes,
            "copy_text_bytes_per_row": loaded.copy_text_bytes,
            "baseline_plan": loaded.plan,
        },
        "runs": runs,
        "median": {
            "baseline_s": m.baseline_s,
            "baseline_rows_per_s": m.baseline_rate,
            "copy_s": m.copy_s,
            "copy_rows_per_s": m.copy_rate,
            "ratio": m.ratio,
            "job_s": m.job_s,
            "job_rows_per_s": m.job_rate,
        },
        "target_ratio": TARGET_RATIO,
        "target_met": m.ratio >= TARGET_RATIO,
    });
    println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
}
