//! `shardctl keyspace create|list|show|delete`.

use std::io::Write;

use anyhow::Context;
use serde_json::{Value, json};
use shardlib::topology::Keyspace;

use super::{Online, Outcome, segment, text};
use crate::cli::KeyspaceCommand;
use crate::output::TextTable;

pub async fn run(command: KeyspaceCommand, online: &Online) -> anyhow::Result<Outcome> {
    match command {
        KeyspaceCommand::Create { name, file } => {
            let keyspace = read_keyspace(&file)?;
            let created = online.client.post("/v1/keyspaces", &json!({ "name": name, "keyspace": keyspace })).await?;
            online
                .print(&created, |out| writeln!(out, "created keyspace {name} at epoch {}", text(&created, "epoch")))?;
        }
        KeyspaceCommand::List => {
            let list = online.client.get("/v1/keyspaces").await?;
            online.print(&list, |out| {
                let mut table = TextTable::new(&["name", "algorithm", "shards", "ranges", "version"]);
                table.align_right(2).align_right(3).align_right(4);
                for ks in list["keyspaces"].as_array().into_iter().flatten() {
                    table.row(vec![
                        text(ks, "name"),
                        text(ks, "algorithm"),
                        text(ks, "shard_count"),
                        text(ks, "range_count"),
                        text(ks, "version"),
                    ]);
                }
                table.print(out)
            })?;
        }
        KeyspaceCommand::Show { name } => {
            let shown = online.client.get(&format!("/v1/keyspaces/{}", segment(&name))).await?;
            online.print(&shown, |out| print_keyspace(out, &name, &shown, online))?;
        }
        KeyspaceCommand::Delete { name } => {
            let deleted = online.client.delete(&format!("/v1/keyspaces/{}", segment(&name))).await?;
            online
                .print(&deleted, |out| writeln!(out, "deleted keyspace {name} at epoch {}", text(&deleted, "epoch")))?;
        }
    }
    Ok(Outcome::Success)
}

/// Reads and validates a keyspace file before anything is sent, so a typo
/// is reported with its line and nothing changes.
fn read_keyspace(path: &std::path::Path) -> anyhow::Result<Keyspace> {
    let raw = std::fs::read_to_string(path).with_context(|| format!("cannot read keyspace file {}", path.display()))?;
    let keyspace: Keyspace = if path.extension().is_some_and(|e| e == "toml") {
        toml::from_str(&raw).with_context(|| format!("keyspace file {}", path.display()))?
    } else {
        serde_json::from_str(&raw).with_context(|| format!("keyspace file {}", path.display()))?
    };
    Ok(keyspace)
}

fn print_keyspace(out: &mut dyn Write, name: &str, shown: &Value, online: &Online) -> std::io::Result<()> {
    let keyspace = &shown["keyspace"];
    let partitioning = &keyspace["partitioning"];
    writeln!(out, "keyspace   {name}")?;
    writeln!(out, "version    {}", text(shown, "version"))?;
    writeln!(out, "algorithm  {}", text(partitioning, "algorithm"))?;
    writeln!(out, "key type   {}", text(keyspace, "key_type"))?;
    if let Some(tables) = keyspace["tables"].as_array().filter(|t| !t.is_empty()) {
        let names: Vec<String> = tables
            .iter()
            .map(|t| {
                let columns: Vec<String> = t["key_columns"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_str())
                    .map(str::to_owned)
                    .collect();
                format!("{}({})", text(t, "name"), columns.join(", "))
            })
            .collect();
        writeln!(out, "tables     {}", names.join(", "))?;
    }
    writeln!(out)?;
    let mut shards = TextTable::new(&["shard", "state", "weight", "zone", "primary"]);
    shards.align_right(2);
    for shard in keyspace["shards"].as_array().into_iter().flatten() {
        shards.row(vec![
            text(shard, "id"),
            online.palette.state(&text(shard, "state")),
            text(shard, "weight"),
            text(&shard["labels"], "zone"),
            text(shard, "primary"),
        ]);
    }
    shards.print(out)?;
    if let Some(ranges) = partitioning["ranges"].as_array() {
        writeln!(out)?;
        let mut table = TextTable::new(&["range", "shard", "state"]);
        for assignment in ranges {
            let range = match &assignment["range"] {
                Value::String(name) => name.clone(),
                other => other.to_string(),
            };
            let state = assignment.get("state").and_then(Value::as_str).unwrap_or("serving");
            table.row(vec![range, text(assignment, "shard"), online.palette.state(state)]);
        }
        table.print(out)?;
    }
    Ok(())
}
