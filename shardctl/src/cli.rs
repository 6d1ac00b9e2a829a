//! Command-line arguments, parsed once by clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use shardlib::KeyType;

/// Route keys to shards and manage a sharded cluster.
#[derive(Debug, Parser)]
#[command(name = "shardctl", version, about, propagate_version = true)]
pub struct Cli {
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// JSON for programs.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compute the shard of each key offline, from an algorithm and a shard
    /// count or from a topology file. Keys come from the arguments, or from
    /// standard input one per line when none are given (or given as "-").
    Route(RouteArgs),
}

/// Arguments of `shardctl route`.
#[derive(Debug, Args)]
pub struct RouteArgs {
    /// Keys to route; none or "-" reads keys from standard input, one per line.
    pub keys: Vec<String>,

    /// Placement algorithm over numbered shards 0..N-1 (needs --shards).
    #[arg(short, long, value_enum, conflicts_with = "topology", requires = "shards")]
    pub algorithm: Option<Algorithm>,

    /// Number of shards for --algorithm.
    #[arg(short = 'n', long)]
    pub shards: Option<u32>,

    /// Route through the partitioning of a topology file (JSON, or TOML if
    /// the name ends in .toml).
    #[arg(short, long, value_name = "FILE", required_unless_present = "algorithm")]
    pub topology: Option<PathBuf>,

    /// Keyspace of the topology to route in (may be left out when the
    /// topology has exactly one).
    #[arg(short, long, requires = "topology")]
    pub keyspace: Option<String>,

    /// How the keys are written: str (UTF-8 text), u64, i64, hex (bytes), uuid.
    /// Defaults to the keyspace's key_type with --topology, str otherwise.
    #[arg(long, value_name = "TYPE")]
    pub key_type: Option<KeyType>,

    /// Hash seed for --algorithm (a topology's keyspaces carry their own).
    #[arg(long, default_value_t = 0, conflicts_with = "topology")]
    pub seed: u64,

    /// Virtual nodes per shard for --algorithm ring.
    #[arg(long, default_value_t = shardlib::topology::DEFAULT_VNODES, conflicts_with = "topology")]
    pub vnodes: u32,

    /// Lookup-table size (a prime) for --algorithm maglev.
    #[arg(long, default_value_t = shardlib::topology::DEFAULT_MAGLEV_TABLE_SIZE, conflicts_with = "topology")]
    pub table_size: u32,
}

/// Placement algorithms available to `shardctl route --algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Algorithm {
    /// Jump consistent hash (Lamping & Veach).
    Jump,
    /// Constant-time jump-family hash (JumpBackHash).
    JumpBack,
    /// Consistent-hash ring with virtual nodes.
    Ring,
    /// Rendezvous (highest random weight) hashing.
    Rendezvous,
    /// Maglev hashing.
    Maglev,
    /// N equal ranges of the keyspace-id space.
    HashRange,
}
