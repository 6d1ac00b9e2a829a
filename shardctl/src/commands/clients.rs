//! `shardctl clients`: the services registered in the store, the epoch each
//! reports and whether it lags behind the topology (`GET /v1/clients`).

use super::{Online, Outcome, text};
use crate::output::TextTable;

pub async fn run(online: &Online) -> anyhow::Result<Outcome> {
    let list = online.client.get("/v1/clients").await?;
    online.print(&list, |out| {
        let palette = &online.palette;
        let mut table = TextTable::new(&["client", "epoch", "behind", "age", "ttl", "value"]);
        table.align_right(1).align_right(3).align_right(4);
        for client in list["clients"].as_array().into_iter().flatten() {
            let behind = match client["behind"].as_bool() {
                Some(true) => palette.bad("yes"),
                Some(false) => palette.good("no"),
                None => "-".to_owned(),
            };
            let age = client["age_seconds"].as_f64().map_or("-".to_owned(), |s| format!("{s:.1}s"));
            let ttl = client["ttl_seconds"].as_u64().map_or("-".to_owned(), |s| format!("{s}s"));
            table.row(vec![text(client, "id"), text(client, "epoch"), behind, age, ttl, client["value"].to_string()]);
        }
        table.print(out)?;
        writeln!(out, "\ntopology epoch {}", text(&list, "topology_epoch"))
    })?;
    Ok(Outcome::Success)
}
