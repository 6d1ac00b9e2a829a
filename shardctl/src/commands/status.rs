//! `shardctl status`: who leads, who is there, which epoch.

use serde_json::Value;

use super::{Online, Outcome, text};
use crate::output::TextTable;

pub async fn run(online: &Online) -> anyhow::Result<Outcome> {
    let status = online.client.get("/v1/status").await?;
    let has_leader = status.get("leader").is_some_and(|l| !l.is_null());
    online.print(&status, |out| {
        let palette = &online.palette;
        writeln!(out, "cluster   {}", text(&status, "cluster"))?;
        writeln!(out, "store     {}", text(&status, "store"))?;
        writeln!(out, "epoch     {}", text(&status, "epoch"))?;
        let leader = match status.get("leader").filter(|l| !l.is_null()) {
            Some(leader) => format!("{} {}", palette.good(&text(leader, "member_id")), text(leader, "address")),
            None => palette.bad("none"),
        };
        writeln!(out, "leader    {leader}")?;
        writeln!(
            out,
            "answered  {} ({}, {})",
            text(&status, "member_id"),
            palette.state(&text(&status, "role")),
            if status["ready"] == Value::Bool(true) { palette.good("ready") } else { palette.bad("not ready") }
        )?;
        if let Some(members) = status["members"].as_array().filter(|m| !m.is_empty()) {
            writeln!(out)?;
            let mut table = TextTable::new(&["member", "address"]);
            for member in members {
                table.row(vec![text(member, "member_id"), text(member, "address")]);
            }
            table.print(out)?;
        }
        Ok(())
    })?;
    Ok(if has_leader { Outcome::Success } else { Outcome::Negative })
}
