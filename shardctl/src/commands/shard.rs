//! `shardctl shard add|list|drain|remove` (drain moves the shard's ranges
//! away through [`super::rebalance`]).

use serde_json::{Value, json};

use super::{Online, Outcome, segment, text};
use crate::cli::ShardCommand;
use crate::output::TextTable;

pub async fn run(command: ShardCommand, online: &Online) -> anyhow::Result<Outcome> {
    match command {
        ShardCommand::Add { id, keyspace, primary, weight, zone, datacenter } => {
            let mut labels = serde_json::Map::new();
            if let Some(zone) = zone {
                labels.insert("zone".into(), Value::String(zone));
            }
            if let Some(datacenter) = datacenter {
                labels.insert("datacenter".into(), Value::String(datacenter));
            }
            let shard = json!({ "id": id, "primary": primary, "weight": weight, "labels": labels });
            let added = online.client.post(&format!("/v1/keyspaces/{}/shards", segment(&keyspace)), &shard).await?;
            online.print(&added, |out| {
                writeln!(out, "added shard {id} to keyspace {keyspace} at epoch {}", text(&added, "epoch"))
            })?;
        }
        ShardCommand::List { keyspace } => {
            let list = online.client.get(&format!("/v1/keyspaces/{}/shards", segment(&keyspace))).await?;
            online.print(&list, |out| {
                let mut table = TextTable::new(&["shard", "state", "weight", "zone", "ranges", "primary"]);
                table.align_right(2);
                for shard in list["shards"].as_array().into_iter().flatten() {
                    let ranges: Vec<&str> =
                        shard["ranges"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    table.row(vec![
                        text(shard, "id"),
                        online.palette.state(&text(shard, "state")),
                        text(shard, "weight"),
                        text(&shard["labels"], "zone"),
                        if ranges.is_empty() { "-".to_owned() } else { ranges.join(" ") },
                        text(shard, "primary"),
                    ]);
                }
                table.print(out)
            })?;
        }
        ShardCommand::Drain(args) if args.no_move => set_state(online, &args.keyspace, &args.id, "draining").await?,
        ShardCommand::Drain(args) => return super::rebalance::run_drain(&args, online).await,
        ShardCommand::Remove { id, keyspace } => set_state(online, &keyspace, &id, "removed").await?,
    }
    Ok(Outcome::Success)
}

async fn set_state(online: &Online, keyspace: &str, id: &str, state: &str) -> anyhow::Result<()> {
    let path = format!("/v1/keyspaces/{}/shards/{}/state", segment(keyspace), segment(id));
    let changed = online.client.put(&path, &json!({ "state": state })).await?;
    online.print(&changed, |out| {
        writeln!(out, "shard {id} of keyspace {keyspace} is now {state} (epoch {})", text(&changed, "epoch"))
    })
}
