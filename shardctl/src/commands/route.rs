//! `shardctl route`: compute the shard of keys offline, exactly as the
//! library does, so that routing can be checked from outside.

use std::io::{self, BufRead, Write};

use anyhow::{Context, bail};
use serde::Serialize;
use shardlib::algo::Placement;
use shardlib::algo::jump::Jump;
use shardlib::algo::jumpback::JumpBack;
use shardlib::algo::maglev::Maglev;
use shardlib::algo::rendezvous::Rendezvous;
use shardlib::algo::ring::HashRing;
use shardlib::range::{KeyRange, RangeMap};
use shardlib::router::RouteRange;
use shardlib::{Key, KeyType, KeyspaceId, KeyspaceRouter, Router, ShardKey, Topology};

use super::{Online, Outcome};
use crate::cli::{Algorithm, OutputFormat, RouteArgs};
use crate::output::{JsonArrayWriter, TextTable};

/// One routed key, as printed.
#[derive(Debug, Serialize)]
struct Row {
    key: String,
    keyspace_id: u64,
    shard: ShardCell,
    #[serde(skip_serializing_if = "Option::is_none")]
    range: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    frozen: bool,
}

/// Numbered shards print as numbers, named shards as strings.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum ShardCell {
    Number(u32),
    Name(String),
}

/// Where routing decisions come from.
enum Source {
    /// An algorithm over shards numbered 0..n-1.
    Numbered { placement: Box<dyn Placement>, seed: u64 },
    /// A keyspace of a topology file.
    Topology { router: Router, keyspace: String, key_type: KeyType },
}

/// Routes offline: through an algorithm over numbered shards, or a topology file.
pub fn run_offline(args: &RouteArgs, format: OutputFormat) -> anyhow::Result<Outcome> {
    emit(&Source::from_args(args)?, args, format)
}

/// Routes through shardd's live topology (`--keyspace` without a file).
pub async fn run_online(args: &RouteArgs, online: &Online) -> anyhow::Result<Outcome> {
    let keyspace = args.keyspace.clone().expect("clap requires --keyspace for online routing");
    let answer = online.client.get("/v1/topology").await?;
    // DSNs arrive redacted; routing does not need them.
    let topology: Topology = serde_json::from_value(answer["topology"].clone())
        .context("shardd sent a topology this shardctl cannot read")?;
    let key_type = topology.keyspace(&keyspace)?.key_type;
    let router = Router::compile(&topology).context("shardd's topology does not compile")?;
    emit(&Source::Topology { router, keyspace, key_type }, args, online.format)
}

fn emit(source: &Source, args: &RouteArgs, format: OutputFormat) -> anyhow::Result<Outcome> {
    let key_type = args.key_type.unwrap_or(match &source {
        Source::Numbered { .. } => KeyType::Str,
        Source::Topology { key_type, .. } => *key_type,
    });

    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut sink = RowSink::new(format, &mut out)?;
    let route_one = |text: &str| -> anyhow::Result<Row> {
        let key = key_type.parse(text)?;
        Ok(source.route(&key, text))
    };
    if args.keys.is_empty() || args.keys == ["-"] {
        for (index, line) in io::stdin().lock().lines().enumerate() {
            let line = line.context("cannot read keys from standard input")?;
            let text = line.strip_suffix('\r').unwrap_or(&line);
            sink.push(route_one(text).with_context(|| format!("standard input, line {}", index + 1))?)?;
        }
    } else {
        for text in &args.keys {
            sink.push(route_one(text)?)?;
        }
    }
    sink.finish()?;
    Ok(Outcome::Success)
}

impl Source {
    fn from_args(args: &RouteArgs) -> anyhow::Result<Source> {
        if let Some(path) = &args.topology {
            let topology = Topology::load(path)?;
            let keyspace = match &args.keyspace {
                Some(name) => {
                    topology.keyspace(name)?;
                    name.clone()
                }
                None => match topology.keyspaces.keys().collect::<Vec<_>>().as_slice() {
                    [only] => only.to_string(),
                    [] => bail!("topology file {} has no keyspaces", path.display()),
                    names => bail!(
                        "topology file {} has {} keyspaces ({}); choose one with --keyspace",
                        path.display(),
                        names.len(),
                        names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                },
            };
            let key_type = topology.keyspace(&keyspace)?.key_type;
            let router = Router::compile(&topology).with_context(|| format!("topology file {}", path.display()))?;
            return Ok(Source::Topology { router, keyspace, key_type });
        }
        let algorithm = args.algorithm.expect("clap requires --algorithm or --topology");
        let shards = args.shards.expect("clap requires --shards with --algorithm");
        if shards == 0 {
            bail!("--shards must be at least 1");
        }
        Ok(Source::Numbered { placement: numbered_placement(algorithm, shards, args)?, seed: args.seed })
    }

    fn route(&self, key: &Key, text: &str) -> Row {
        match self {
            Source::Numbered { placement, seed } => {
                let id = key.keyspace_id(*seed);
                Row {
                    key: text.to_owned(),
                    keyspace_id: id.0,
                    shard: ShardCell::Number(placement.place(id)),
                    range: None,
                    frozen: false,
                }
            }
            Source::Topology { router, keyspace, .. } => {
                let keyspace: &KeyspaceRouter = router.keyspace(keyspace).expect("checked when loading");
                let route = keyspace.lookup(key);
                Row {
                    key: text.to_owned(),
                    keyspace_id: route.keyspace_id.0,
                    shard: ShardCell::Name(route.shard.to_string()),
                    range: route.range.as_ref().map(RouteRange::to_string),
                    frozen: route.frozen,
                }
            }
        }
    }
}

/// Shards of `--algorithm … --shards N` are named "0" … "N-1": the same as a
/// topology whose shard ids are those numbers, in that order.
fn numbered_placement(algorithm: Algorithm, shards: u32, args: &RouteArgs) -> anyhow::Result<Box<dyn Placement>> {
    let names: Vec<String> = (0..shards).map(|i| i.to_string()).collect();
    let weighted = || names.iter().map(|n| (n.as_str(), 1u32));
    Ok(match algorithm {
        Algorithm::Jump => Box::new(Jump::new(shards)?),
        Algorithm::JumpBack => Box::new(JumpBack::new(shards)?),
        Algorithm::Ring => Box::new(HashRing::new(weighted(), args.vnodes)?),
        Algorithm::Rendezvous => Box::new(Rendezvous::new(names.iter().map(|n| (n.as_str(), 1.0)))?),
        Algorithm::Maglev => Box::new(Maglev::new(weighted(), args.table_size)?),
        Algorithm::HashRange => {
            Box::new(EqualRanges(RangeMap::new(KeyRange::uniform(shards).into_iter().zip(0..shards).collect())?))
        }
    })
}

/// A range map of equal ranges seen as a numbered placement.
struct EqualRanges(RangeMap<u32>);

impl Placement for EqualRanges {
    fn place(&self, id: KeyspaceId) -> u32 {
        *self.0.lookup(id)
    }

    fn buckets(&self) -> u32 {
        self.0.len() as u32
    }
}

/// Collects rows into a table (its columns chosen by the first row), or
/// streams them as JSON.
enum RowSink<'w, W: Write> {
    Table { table: Option<TextTable>, out: &'w mut W },
    Json(JsonArrayWriter<&'w mut W>),
}

impl<'w, W: Write> RowSink<'w, W> {
    fn new(format: OutputFormat, out: &'w mut W) -> io::Result<Self> {
        Ok(match format {
            OutputFormat::Table => RowSink::Table { table: None, out },
            OutputFormat::Json => RowSink::Json(JsonArrayWriter::new(out)?),
        })
    }

    fn push(&mut self, row: Row) -> anyhow::Result<()> {
        match self {
            RowSink::Table { table, .. } => {
                let has_range = row.range.is_some();
                let table = table.get_or_insert_with(|| {
                    let headers: &[&str] = if has_range {
                        &["key", "keyspace_id", "shard", "range", "state"]
                    } else {
                        &["key", "keyspace_id", "shard"]
                    };
                    let mut table = TextTable::new(headers);
                    table.align_right(1);
                    table
                });
                let shard = match row.shard {
                    ShardCell::Number(n) => n.to_string(),
                    ShardCell::Name(name) => name,
                };
                let mut cells = vec![row.key, row.keyspace_id.to_string(), shard];
                if has_range {
                    cells.push(row.range.unwrap_or_default());
                    cells.push(if row.frozen { "frozen" } else { "serving" }.to_owned());
                }
                table.row(cells);
            }
            RowSink::Json(writer) => writer.element(&row)?,
        }
        Ok(())
    }

    fn finish(self) -> io::Result<()> {
        match self {
            RowSink::Table { table, out } => {
                if let Some(table) = table {
                    table.print(out)?;
                }
                out.flush()
            }
            RowSink::Json(writer) => writer.finish(),
        }
    }
}
