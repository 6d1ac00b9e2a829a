//! Command-line arguments, parsed once by clap.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use shardlib::KeyType;
use shardlib::range::KeyRange;

/// Route keys to shards and manage a sharded cluster through shardd.
///
/// Exit codes: 0 success, 1 a negative answer (e.g. `status` with no leader,
/// a job that failed or was cancelled), 2 an error, 130 when Ctrl-C stops
/// the waiting for a job (which keeps running). A closed output pipe exits 0.
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
    /// Move ranges to another shard: copy their rows, catch up, verify, hand
    /// over, clean up (a job run by shardd). Waits for the job and shows its
    /// progress unless --detach is given; exits 0 when it succeeded, 1 when it
    /// failed or was cancelled, 130 on Ctrl-C (the job keeps running).
    Move(MoveArgs),
    /// Split a range in two at a point (default: the median of its rows'
    /// keyspace ids), optionally moving the right half to another shard.
    /// Waits like `move` unless --detach is given.
    Split(SplitArgs),
    /// Merge two neighbouring ranges into one; if different shards own them,
    /// the right one's rows first move to the left one's shard. Waits like
    /// `move` unless --detach is given.
    Merge(MergeArgs),
    /// Balance a keyspace: measure every range (rows and bytes from the
    /// shard databases, load reported by services), plan the splits, moves
    /// and merges that bring each shard's cost within the threshold of its
    /// share, and run them as jobs. Waits for all of them with their progress
    /// unless --detach is given; exits 0 when all succeeded, 1 when one
    /// failed or was cancelled, 130 on Ctrl-C (the jobs keep running).
    /// When the jobs have succeeded and a new plan still has steps, starts
    /// that one too (see --max-rounds). --dry-run only prints the plan.
    Rebalance(RebalanceArgs),
    /// Spread a keyspace over more shards: split ranges at the median of
    /// their rows until the keyspace has at least --shards ranges, and
    /// balance them over the serving shards. Add the new shards first
    /// (`shardctl shard add`): reshard only uses shards that exist. Waits
    /// like `rebalance`.
    Reshard(ReshardArgs),
    /// List, show, cancel and wait for data-movement jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
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
    /// Mark a shard draining (it keeps serving what it owns, and nothing new
    /// is placed on it), then move all its ranges to the other shards with a
    /// rebalance, waiting like `rebalance`. Afterwards the shard owns nothing
    /// and can be removed (`shard remove`). --no-move only sets the state.
    Drain(DrainArgs),
    /// Mark a shard removed (refused while it still owns ranges).
    Remove {
        /// The shard.
        id: String,
        /// The keyspace.
        #[arg(short, long)]
        keyspace: String,
    },
}

/// Arguments of `shardctl shard drain`.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The shard.
    pub id: String,
    /// The keyspace.
    #[arg(short, long)]
    pub keyspace: String,
    /// Only mark the shard draining; move none of its ranges.
    #[arg(long, conflicts_with_all = ["dry_run", "detach"])]
    pub no_move: bool,
    /// Print the plan that would empty the shard; change nothing (the
    /// shard's state included).
    #[arg(long, conflicts_with = "detach")]
    pub dry_run: bool,
    /// How to plan.
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Copy and job options.
    #[command(flatten)]
    pub run: PlanRunArgs,
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

/// Arguments of `shardctl move`.
#[derive(Debug, Args)]
pub struct MoveArgs {
    /// The keyspace.
    #[arg(short, long)]
    pub keyspace: String,
    /// Ranges to move, by name (e.g. 80-c0); all must live on one shard.
    #[arg(value_name = "RANGE", required = true, value_parser = parse_range)]
    pub ranges: Vec<KeyRange>,
    /// The shard that receives the ranges.
    #[arg(long, value_name = "SHARD")]
    pub to: String,
    /// Copy and job options.
    #[command(flatten)]
    pub job: JobOptions,
}

/// Arguments of `shardctl split`.
#[derive(Debug, Args)]
pub struct SplitArgs {
    /// The keyspace.
    #[arg(short, long)]
    pub keyspace: String,
    /// The range to split (e.g. 80-c0).
    #[arg(value_name = "RANGE", value_parser = parse_range)]
    pub range: KeyRange,
    /// Where to split: `median` (the median keyspace id of the range's rows,
    /// computed by shardd) or a hex keyspace-id point inside the range,
    /// left-aligned like a range bound (a0 = a000000000000000).
    #[arg(long, value_name = "median|POINT", default_value = "median", value_parser = parse_split_at)]
    pub at: SplitAt,
    /// Move the right half to this shard (default: both halves stay).
    #[arg(long, value_name = "SHARD")]
    pub to: Option<String>,
    /// Copy and job options.
    #[command(flatten)]
    pub job: JobOptions,
}

/// Arguments of `shardctl merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The keyspace.
    #[arg(short, long)]
    pub keyspace: String,
    /// The left range (e.g. 80-a0).
    #[arg(value_name = "LEFT", value_parser = parse_range)]
    pub left: KeyRange,
    /// The right range, starting where LEFT ends (e.g. a0-c0).
    #[arg(value_name = "RIGHT", value_parser = parse_range)]
    pub right: KeyRange,
    /// Copy and job options.
    #[command(flatten)]
    pub job: JobOptions,
}

/// Options shared by `move`, `split` and `merge`.
#[derive(Debug, Args)]
pub struct JobOptions {
    /// Rows copied per batch (default: shardd's).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_rows: Option<u64>,
    /// Copy at most this many rows per second (default: unthrottled).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub rows_per_second: Option<u64>,
    /// Print the created job and return at once instead of waiting for it.
    #[arg(long)]
    pub detach: bool,
}

/// Arguments of `shardctl rebalance`.
#[derive(Debug, Args)]
pub struct RebalanceArgs {
    /// The keyspace.
    #[arg(short, long)]
    pub keyspace: String,
    /// Print the plan (steps, data moved, imbalance before and after);
    /// start nothing.
    #[arg(long, conflicts_with = "detach")]
    pub dry_run: bool,
    /// How to plan.
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Copy and job options.
    #[command(flatten)]
    pub run: PlanRunArgs,
}

/// Arguments of `shardctl reshard`.
#[derive(Debug, Args)]
pub struct ReshardArgs {
    /// The keyspace.
    #[arg(short, long)]
    pub keyspace: String,
    /// Split until the keyspace has at least this many ranges (usually the
    /// number of shards, once the new ones are added).
    #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub shards: u64,
    /// Print the (first) plan; start nothing.
    #[arg(long, conflicts_with = "detach")]
    pub dry_run: bool,
    /// How to plan.
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Copy and job options.
    #[command(flatten)]
    pub run: PlanRunArgs,
}

/// How shardd plans a rebalance (every option defaults to shardd's).
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// What to balance: rows, bytes, load (operations per second reported by
    /// services) or mix (of bytes and load) [default: rows].
    #[arg(long, value_enum)]
    pub cost: Option<CostKind>,
    /// With --cost mix: the weight of bytes [default: 0.5].
    #[arg(long, value_name = "W", value_parser = parse_weight)]
    pub bytes_weight: Option<f64>,
    /// With --cost mix: the weight of load [default: 0.5].
    #[arg(long, value_name = "W", value_parser = parse_weight)]
    pub load_weight: Option<f64>,
    /// Plan only when the imbalance (the largest cost over fair share; peak
    /// over mean with equal weights) is above this [default: 1.10].
    #[arg(long, value_name = "RATIO", value_parser = parse_ratio)]
    pub threshold: Option<f64>,
    /// Balance down to this (at most the threshold) [default: 1.05, or the
    /// threshold if lower].
    #[arg(long, value_name = "RATIO", value_parser = parse_ratio)]
    pub target: Option<f64>,
    /// Plan at most this many steps [default: 256].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_steps: Option<u64>,
    /// Where ranges may go: any shard, or only shards in the zone of the
    /// range's shard [default: any].
    #[arg(long, value_enum)]
    pub zones: Option<ZoneChoice>,
    /// Also merge runs of neighbouring ranges on one shard that each cost
    /// less than this fraction of a shard's fair share (e.g. 0.1).
    #[arg(long, value_name = "FRACTION", value_parser = parse_fraction)]
    pub merge_below: Option<f64>,
}

/// Options of the jobs a plan starts, and whether to wait for them.
#[derive(Debug, Args)]
pub struct PlanRunArgs {
    /// Rows copied per batch, in each job (default: shardd's).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_rows: Option<u64>,
    /// Copy at most this many rows per second, in each job (default:
    /// unthrottled).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub rows_per_second: Option<u64>,
    /// Print the plan and the started jobs and return at once instead of
    /// waiting for them.
    #[arg(long)]
    pub detach: bool,
    /// Run at most this many plans: once a plan's jobs have all succeeded,
    /// shardctl measures again and starts the next plan while there is one
    /// (a plan splits each range at most once, so evening out a big range or
    /// doubling the range count can take more than one).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_rounds: u64,
}

/// `--cost` of `rebalance`, `reshard` and `shard drain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CostKind {
    /// Rows.
    Rows,
    /// Bytes.
    Bytes,
    /// Operations per second reported by services.
    Load,
    /// A weighted mix of bytes and load, each as a share of its total.
    Mix,
}

impl CostKind {
    /// The API's name.
    pub fn api_value(self) -> &'static str {
        match self {
            CostKind::Rows => "rows",
            CostKind::Bytes => "bytes",
            CostKind::Load => "load",
            CostKind::Mix => "mix",
        }
    }
}

/// `--zones` of `rebalance`, `reshard` and `shard drain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ZoneChoice {
    /// Ranges may go to any shard.
    Any,
    /// Ranges stay in the zone of their shard.
    SameZone,
}

impl ZoneChoice {
    /// The API's name.
    pub fn api_value(self) -> &'static str {
        match self {
            ZoneChoice::Any => "any",
            ZoneChoice::SameZone => "same_zone",
        }
    }
}

/// `shardctl jobs …`
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List the jobs, oldest first.
    List {
        /// Only the jobs of this keyspace.
        #[arg(short, long)]
        keyspace: Option<String>,
    },
    /// Show one job: what it moves, its status, progress and phases.
    Show {
        /// The job's id.
        id: String,
    },
    /// Ask shardd to cancel a job (refused once it is past the hand-over).
    /// With --wait, waits until it ends and exits 0 only if it ended cancelled.
    Cancel {
        /// The job's id.
        id: String,
        /// Wait until the job has ended.
        #[arg(long)]
        wait: bool,
    },
    /// Wait for a job to end, showing its progress; exits 0 when it
    /// succeeded, 1 when it failed or was cancelled, 130 on Ctrl-C (the job
    /// keeps running).
    Wait {
        /// The job's id.
        id: String,
    },
}

/// Where `shardctl split` cuts a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitAt {
    /// At the median keyspace id of the range's rows, chosen by shardd.
    Median,
    /// At this keyspace id: the right half starts there.
    Point(u64),
}

impl SplitAt {
    /// The API's form: `median`, or the point as a canonical range bound
    /// (`a0` for 0xa000000000000000).
    pub fn api_value(self) -> String {
        match self {
            SplitAt::Median => "median".to_owned(),
            SplitAt::Point(point) => hex_bound(point),
        }
    }
}

/// A keyspace id written as a canonical range bound: lowercase hex bytes,
/// trailing zero bytes dropped (`a0`, `a0ff`, `0000000000000001`).
pub fn hex_bound(point: u64) -> String {
    match KeyRange::new(point, None) {
        Ok(range) => range.to_string().trim_end_matches('-').to_owned(),
        Err(_) => unreachable!("a range to the end of the space is never empty"),
    }
}

/// The command line with range names that start with `-` (`-80`, `-c0`)
/// made readable to clap, which would take them for short options: after
/// `move`, `split` and `merge`, such a word becomes the same range with an
/// explicit start (`00-80`). Option values and words after `--` are left
/// alone.
pub fn with_ranges_readable(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    const VALUED: [&str; 13] = [
        "-o",
        "--output",
        "--endpoint",
        "--token",
        "--color",
        "-k",
        "--keyspace",
        "--to",
        "--at",
        "--batch-rows",
        "--rows-per-second",
        "--after",
        "--count",
    ];
    let mut args: Vec<OsString> = args.into_iter().collect();
    let mut in_job_command = false;
    let mut after_valued = false;
    for arg in args.iter_mut().skip(1) {
        let Some(text) = arg.to_str() else {
            after_valued = false;
            continue;
        };
        if text == "--" {
            break;
        }
        let is_value = std::mem::replace(&mut after_valued, VALUED.contains(&text));
        if is_value {
            continue;
        }
        if !in_job_command {
            if !text.starts_with('-') {
                if !matches!(text, "move" | "split" | "merge") {
                    break;
                }
                in_job_command = true;
            }
            continue;
        }
        let range_from_zero =
            text.len() > 1 && text.starts_with('-') && text[1..].bytes().all(|b| b.is_ascii_hexdigit());
        if range_from_zero {
            *arg = OsString::from(format!("00{text}"));
        }
    }
    args
}

/// Reads a ratio of `--threshold` and `--target`: a number of at least 1.
pub fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(ratio) if ratio.is_finite() && ratio >= 1.0 => Ok(ratio),
        Ok(_) => Err(format!("{text} is below 1: a ratio to the fair share is at least 1 (e.g. 1.10)")),
        Err(_) => Err(format!("{text:?} is not a number (e.g. 1.10)")),
    }
}

/// Reads `--merge-below`: a positive fraction.
pub fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(fraction) if fraction.is_finite() && fraction > 0.0 => Ok(fraction),
        Ok(_) => Err(format!("{text} is not positive: give a fraction of a shard's fair share (e.g. 0.1)")),
        Err(_) => Err(format!("{text:?} is not a number (e.g. 0.1)")),
    }
}

/// Reads `--bytes-weight` and `--load-weight`: a number ≥ 0.
pub fn parse_weight(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(weight) if weight.is_finite() && weight >= 0.0 => Ok(weight),
        Ok(_) => Err(format!("{text} is negative: a weight is at least 0")),
        Err(_) => Err(format!("{text:?} is not a number (e.g. 0.5)")),
    }
}

/// Reads a range name such as `80-c0`, `-80` or `c0-`.
pub fn parse_range(name: &str) -> Result<KeyRange, String> {
    name.parse::<KeyRange>().map_err(|e| e.to_string())
}

/// Reads `--at`: `median`, or a hex point: 1 to 16 hex digits,
/// left-aligned like range bounds (`a0` is 0xa000000000000000).
pub fn parse_split_at(text: &str) -> Result<SplitAt, String> {
    if text.eq_ignore_ascii_case("median") {
        return Ok(SplitAt::Median);
    }
    let usage = "expected `median` or a hex keyspace-id point such as a0 or a000000000000000";
    let why = if text.is_empty() {
        Some("empty")
    } else if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Some("not hexadecimal")
    } else if text.len() > 16 {
        Some("more than 16 hex digits")
    } else {
        None
    };
    if let Some(why) = why {
        return Err(format!("{text:?} is {why}: {usage}"));
    }
    let value = u64::from_str_radix(text, 16).map_err(|e| format!("{text:?}: {e}: {usage}"))?;
    let point = value << (4 * (16 - text.len()));
    if point == 0 {
        return Err(format!("{text:?} is the start of the keyspace-id space, where nothing can be split off"));
    }
    Ok(SplitAt::Point(point))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_at_reads_median_and_hex_points() {
        assert_eq!(parse_split_at("median"), Ok(SplitAt::Median));
        assert_eq!(parse_split_at("MEDIAN"), Ok(SplitAt::Median));
        assert_eq!(parse_split_at("a0"), Ok(SplitAt::Point(0xa0 << 56)));
        assert_eq!(parse_split_at("a000000000000000"), Ok(SplitAt::Point(0xa0 << 56)));
        assert_eq!(parse_split_at("A0FF"), Ok(SplitAt::Point(0xa0ff << 48)));
        assert_eq!(parse_split_at("0000000000000001"), Ok(SplitAt::Point(1)));
        // Like shardd, an odd number of digits is fine: `8` is `80`.
        assert_eq!(parse_split_at("8"), Ok(SplitAt::Point(0x80 << 56)));
        assert_eq!(SplitAt::Point(0x80 << 56).api_value(), "80");
        assert_eq!(SplitAt::Point(0xa0 << 56).api_value(), "a0");
        assert_eq!(SplitAt::Point(0xa0ff << 48).api_value(), "a0ff");
        assert_eq!(SplitAt::Point(1).api_value(), "0000000000000001");
        assert_eq!(SplitAt::Median.api_value(), "median");
    }

    #[test]
    fn split_at_rejects_what_is_not_a_point() {
        for (bad, why) in [
            ("", "is empty"),
            ("xy", "not hexadecimal"),
            ("a0-", "not hexadecimal"),
            ("-a0", "not hexadecimal"),
            (" a0", "not hexadecimal"),
            ("00112233445566778899", "more than 16"),
            ("00", "start of the keyspace-id space"),
            ("mean", "not hexadecimal"),
        ] {
            let err = parse_split_at(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    fn args(line: &str) -> Vec<String> {
        let words = line.split_whitespace().map(OsString::from);
        with_ranges_readable(words).into_iter().map(|w| w.into_string().unwrap()).collect()
    }

    #[test]
    fn ranges_that_start_with_a_hyphen_are_not_options() {
        assert_eq!(
            args("shardctl move -k users -80 -c0 --to s2"),
            ["shardctl", "move", "-k", "users", "00-80", "00-c0", "--to", "s2"]
        );
        assert_eq!(
            args("shardctl -o json split -80 -k u --at 40"),
            ["shardctl", "-o", "json", "split", "00-80", "-k", "u", "--at", "40"]
        );
        assert_eq!(
            args("shardctl --endpoint http://x merge -k u -40 40-80"),
            ["shardctl", "--endpoint", "http://x", "merge", "-k", "u", "00-40", "40-80"]
        );
        // Options, option values, words after `--` and other commands stay.
        assert_eq!(
            args("shardctl move -k u - --batch-rows -5 --to s2 -h"),
            ["shardctl", "move", "-k", "u", "-", "--batch-rows", "-5", "--to", "s2", "-h"]
        );
        assert_eq!(
            args("shardctl move -k u --to s2 -- -80"),
            ["shardctl", "move", "-k", "u", "--to", "s2", "--", "-80"]
        );
        assert_eq!(args("shardctl route -a jump -n 3 -80"), ["shardctl", "route", "-a", "jump", "-n", "3", "-80"]);
        assert_eq!(args("shardctl jobs list -k -80"), ["shardctl", "jobs", "list", "-k", "-80"]);
        let cli = Cli::try_parse_from(args("shardctl move -k users -80 -c0 --to s2 -o json")).unwrap();
        let Command::Move(moved) = cli.command else { panic!("not move") };
        assert_eq!(moved.ranges.iter().map(ToString::to_string).collect::<Vec<_>>(), ["-80", "-c0"]);
        assert_eq!(cli.output, OutputFormat::Json);
        let cli = Cli::try_parse_from(args("shardctl merge -k users -40 40-80")).unwrap();
        let Command::Merge(merged) = cli.command else { panic!("not merge") };
        assert_eq!(merged.left.to_string(), "-40");
    }

    #[test]
    fn the_command_line_parses() {
        let cli = Cli::try_parse_from(["shardctl", "move", "-k", "users", "80-c0", "c0-", "--to", "s3"]).unwrap();
        let Command::Move(args) = cli.command else { panic!("not move") };
        assert_eq!(args.ranges.iter().map(ToString::to_string).collect::<Vec<_>>(), ["80-c0", "c0-"]);
        assert!(!args.job.detach);
        let cli = Cli::try_parse_from(["shardctl", "split", "-k", "users", "80-c0"]).unwrap();
        let Command::Split(args) = cli.command else { panic!("not split") };
        assert_eq!(args.at, SplitAt::Median);
        assert!(Cli::try_parse_from(["shardctl", "move", "-k", "users", "80-c0"]).is_err(), "--to is required");
        assert!(Cli::try_parse_from(["shardctl", "move", "-k", "users", "--to", "s1"]).is_err(), "a range is required");
        assert!(Cli::try_parse_from(["shardctl", "move", "-k", "u", "80-c", "--to", "s1"]).is_err());
        assert!(
            Cli::try_parse_from(["shardctl", "move", "-k", "u", "80-", "--to", "s1", "--batch-rows", "0"]).is_err()
        );
        assert!(Cli::try_parse_from(["shardctl", "split", "-k", "u", "80-c0", "--at", "zz"]).is_err());
        assert!(Cli::try_parse_from(["shardctl", "merge", "-k", "u", "80-a0"]).is_err());
        assert!(Cli::try_parse_from(["shardctl", "jobs", "cancel", "j1", "--wait"]).is_ok());
    }
}
