//! `shardctl topology show`.

use super::keyspace_summary_rows;
use super::{Online, Outcome, text};
use crate::cli::TopologyCommand;

pub async fn run(command: TopologyCommand, online: &Online) -> anyhow::Result<Outcome> {
    let TopologyCommand::Show { epoch } = command;
    let path = match epoch {
        Some(epoch) => format!("/v1/topology?epoch={epoch}"),
        None => "/v1/topology".to_owned(),
    };
    let answer = online.client.get(&path).await?;
    online.print(&answer, |out| {
        let topology = &answer["topology"];
        writeln!(out, "cluster {}  epoch {}", text(topology, "cluster"), text(&answer, "epoch"))?;
        writeln!(out)?;
        keyspace_summary_rows(topology, &answer["versions"]).print(out)
    })?;
    Ok(Outcome::Success)
}
