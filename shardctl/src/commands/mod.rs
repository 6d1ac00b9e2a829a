//! One module per subcommand; [`run`] dispatches.

mod clients;
mod job_view;
mod jobs;
mod keyspace;
mod plan_view;
mod rebalance;
mod route;
mod shard;
mod status;
mod topology;
mod watch;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::CommandFactory;
use serde_json::Value;

use crate::cli::{Cli, Command, OutputFormat};
use crate::client::ApiClient;
use crate::output::{Palette, print_json};

/// How a command ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The command did what was asked (exit code 0).
    Success,
    /// The command ran, and the answer to its question is "no" (exit code 1).
    Negative,
    /// The user stopped the command with Ctrl-C (exit code 130, as for SIGINT).
    Interrupted,
}

impl Outcome {
    /// The process exit code for this outcome.
    pub fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Success => ExitCode::SUCCESS,
            Outcome::Negative => ExitCode::from(1),
            Outcome::Interrupted => ExitCode::from(130),
        }
    }
}

/// What the online commands share: the API client and how to print.
pub struct Online {
    /// The shardd client.
    pub client: ApiClient,
    /// Table or JSON.
    pub format: OutputFormat,
    /// Colors, if any.
    pub palette: Palette,
}

impl Online {
    /// Prints `value` as JSON, or calls `table` to print it for people.
    pub fn print(&self, value: &Value, table: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> anyhow::Result<()> {
        let stdout = io::stdout();
        let mut out = io::BufWriter::new(stdout.lock());
        match self.format {
            OutputFormat::Json => print_json(&mut out, value)?,
            OutputFormat::Table => table(&mut out)?,
        }
        out.flush()?;
        Ok(())
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let palette = Palette::new(cli.color);
    let command = match cli.command {
        Command::Route(args) if args.algorithm.is_some() || args.topology.is_some() => {
            return route::run_offline(&args, cli.output);
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "shardctl", &mut io::stdout());
            return Ok(Outcome::Success);
        }
        online => online,
    };
    let online = Online { client: ApiClient::new(&cli.endpoint, cli.token)?, format: cli.output, palette };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        match command {
            Command::Route(args) => route::run_online(&args, &online).await,
            Command::Keyspace(command) => keyspace::run(command, &online).await,
            Command::Shard(command) => shard::run(command, &online).await,
            Command::Topology(command) => topology::run(command, &online).await,
            Command::Status => status::run(&online).await,
            Command::Clients => clients::run(&online).await,
            Command::Watch(args) => watch::run(&args, &online).await,
            Command::Move(args) => jobs::run_move(&args, &online).await,
            Command::Split(args) => jobs::run_split(&args, &online).await,
            Command::Merge(args) => jobs::run_merge(&args, &online).await,
            Command::Rebalance(args) => rebalance::run_rebalance(&args, &online).await,
            Command::Reshard(args) => rebalance::run_reshard(&args, &online).await,
            Command::Jobs(command) => jobs::run(command, &online).await,
            Command::Completions { .. } => unreachable!("handled above"),
        }
    })
}

/// `value[key]` as text (numbers and strings), or "-" when absent.
pub fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}

/// Percent-encodes a path segment (ids are restricted, but keep URLs sound).
pub fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One row per keyspace of a topology (as the API shows it): name,
/// algorithm, shard and range counts, and version.
pub fn keyspace_summary_rows(topology: &Value, versions: &Value) -> crate::output::TextTable {
    let mut table = crate::output::TextTable::new(&["keyspace", "algorithm", "shards", "ranges", "version"]);
    table.align_right(2).align_right(3).align_right(4);
    for (name, keyspace) in topology["keyspaces"].as_object().into_iter().flatten() {
        let partitioning = &keyspace["partitioning"];
        let shards = keyspace["shards"].as_array().map_or(0, Vec::len);
        let ranges = partitioning["ranges"].as_array().map_or("-".to_owned(), |r| r.len().to_string());
        table.row(vec![
            name.clone(),
            text(partitioning, "algorithm"),
            shards.to_string(),
            ranges,
            text(versions, name),
        ]);
    }
    table
}
