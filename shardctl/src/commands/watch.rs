//! `shardctl watch`: every topology change as it happens.

use std::io::{self, Write};

use serde_json::Value;

use super::{Online, Outcome, text};
use crate::cli::{OutputFormat, WatchArgs};

pub async fn run(args: &WatchArgs, online: &Online) -> anyhow::Result<Outcome> {
    let path = match args.after {
        Some(after) => format!("/v1/watch?after={after}"),
        None => "/v1/watch".to_owned(),
    };
    let mut seen = 0u64;
    let limit = args.count;
    online
        .client
        .events(&path, |_id, data| {
            let event: Value = serde_json::from_str(data)?;
            let stdout = io::stdout();
            let mut out = stdout.lock();
            match online.format {
                // One compact JSON object per line, without the topology:
                // `shardctl topology show --epoch N` has it.
                OutputFormat::Json => {
                    let line = serde_json::json!({
                        "epoch": event["epoch"],
                        "time": event["time"],
                        "changes": event["changes"],
                        "resync": event.get("resync").cloned().unwrap_or(Value::Bool(false)),
                    });
                    writeln!(out, "{line}")?;
                }
                OutputFormat::Table => {
                    let changes: Vec<String> = event["changes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| format!("{} {}", describe(&text(c, "kind")), text(c, "keyspace")))
                        .collect();
                    let what = if changes.is_empty() { "current topology".to_owned() } else { changes.join(", ") };
                    writeln!(out, "{}  epoch {:>8}  {what}", text(&event, "time"), text(&event, "epoch"))?;
                }
            }
            out.flush()?;
            seen += 1;
            Ok(limit.is_none_or(|limit| seen < limit))
        })
        .await?;
    Ok(Outcome::Success)
}

fn describe(kind: &str) -> &str {
    match kind {
        "keyspace_created" => "created",
        "keyspace_updated" => "updated",
        "keyspace_deleted" => "deleted",
        other => other,
    }
}
