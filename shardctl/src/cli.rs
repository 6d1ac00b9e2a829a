//! Command-line arguments, parsed once by clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use shardlib::KeyType;

/// Route keys to shards and manage a sharded cluster through shardd.
///
/// Exit codes: 0 success, 1 a negative answer (e.g. `status` with no leader),
/// 2 an error. A closed output pipe exits 0.
#[derive(Debug, Parser)]
#[command(name = "shardctl", version, about, propagate_version = true)]
pub struct Cli {
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// shardd's API address.
    #[arg(long, global = true, env = "SHARDCTL_ENDPOINT", default_value = "http://127.0.0.1:7070")]
    pub endpoint: String,

    /// Bearer token for shardd's API (never printed).
    #[arg(long, global = true, env = "SHARDCTL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// When to color the output; NO_COLOR in the environment means never for `auto`.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

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

/// When to use colors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compute the shard of each key: offline from an algorithm and a shard
    /// count (--algorithm) or a topology file (--topology), or online through
    /// shardd's live topology (--keyspace alone). Keys come from the
    /// arguments, or from standard input one per line when none are given
    /// (or given as "-").
    Route(RouteArgs),
    /// Create, list, show and delete keyspaces.
    #[command(subcommand)]
    Keyspace(KeyspaceCommand),
    /// Add, list, drain and remove shards.
    #[command(subcommand)]
    Shard(ShardCommand),
    /// Show the topology.
    #[command(subcommand)]
    Topology(TopologyCommand),
    /// Show the cluster: leader, members, epoch. Exits 1 when there is no leader.
    Status,
    /// List the services registered in the store (e.g. watchers started
    /// with register_as): the epoch each reports, whether it lags behind
    /// the latest topology change, and when it last reported.
    Clients,
    /// Print every topology change as it happens: epoch, what changed, when.
    Watch(WatchArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
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
    #[arg(short, long, value_name = "FILE")]
    pub topology: Option<PathBuf>,

    /// Keyspace to route in: of the topology file (may be left out when it
    /// has exactly one), or of shardd's live topology when no --topology or
    /// --algorithm is given.
    #[arg(short, long, conflicts_with = "algorithm", required_unless_present_any = ["algorithm", "topology"])]
    pub keyspace: Option<String>,

    /// How the keys are written: str (UTF-8 text), u64, i64, hex (bytes), uuid.
    /// Defaults to the keyspace's key_type with a topology, str otherwise.
    #[arg(long, value_name = "TYPE")]
    pub key_type: Option<KeyType>,

    /// Hash seed for --algorithm (a topology's keyspaces carry their own).
    #[arg(long, default_value_t = 0, requires = "algorithm")]
    pub seed: u64,

    /// Virtual nodes per shard for --algorithm ring.
    #[arg(long, default_value_t = shardlib::topology::DEFAULT_VNODES, requires = "algorithm")]
    pub vnodes: u32,

    /// Lookup-table size (a prime) for --algorithm maglev.
    #[arg(long, default_value_t = shardlib::topology::DEFAULT_MAGLEV_TABLE_SIZE, requires = "algorithm")]
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

/// `shardctl keyspace …`
#[derive(Debug, Subcommand)]
pub enum KeyspaceCommand {
    /// Create a keyspace from a file in the topology's keyspace shape (TOML
    /// if the name ends in .toml, JSON otherwise): seed, key_type, tables,
    /// shards, partitioning.
    Create {
        /// The keyspace's name.
        name: String,
        /// The keyspace definition.
        #[arg(short, long, value_name = "FILE")]
        file: PathBuf,
    },
    /// List the keyspaces.
    List,
    /// Show one keyspace.
    Show {
        /// The keyspace.
        name: String,
    },
    /// Delete a keyspace that owns no data (every shard removed).
    Delete {
        /// The keyspace.
        name: String,
    },
}

/// `shardctl shard …`
#[derive(Debug, Subcommand)]
pub enum ShardCommand {
    /// Add a shard to a keyspace (in a range keyspace it owns nothing yet).
    Add {
        /// The new shard's id.
        id: String,
        /// The keyspace.
        #[arg(short, long)]
        keyspace: String,
        /// Connection string of its primary (the password is never printed).
        #[arg(long)]
        primary: String,
        /// Relative capacity.
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// Availability zone.
        #[arg(long)]
        zone: Option<String>,
        /// Data center or region.
        #[arg(long)]
        datacenter: Option<String>,
    },
    /// List the shards of a keyspace with the ranges they own.
    List {
        /// The keyspace.
        #[arg(short, long)]
        keyspace: String,
    },
    /// Mark a shard draining: it keeps serving what it owns, and nothing new
    /// is placed on it.
    Drain {
        /// The shard.
        id: String,
        /// The keyspace.
        #[arg(short, long)]
        keyspace: String,
    },
    /// Mark a shard removed (refused while it still owns ranges).
    Remove {
        /// The shard.
        id: String,
        /// The keyspace.
        #[arg(short, long)]
        keyspace: String,
    },
}

/// `shardctl topology …`
#[derive(Debug, Subcommand)]
pub enum TopologyCommand {
    /// Show the whole topology (connection passwords redacted).
    Show {
        /// Show it as it was at this epoch.
        #[arg(long)]
        epoch: Option<u64>,
    },
}

/// Arguments of `shardctl watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Start after this epoch (replaying what changed since); default: now.
    #[arg(long)]
    pub after: Option<u64>,
    /// Stop after this many changes.
    #[arg(long)]
    pub count: Option<u64>,
}
