//! Watching shardd's `GET /v1/watch` stream of server-sent events.
//!
//! Each event (`event: topology`) has the epoch as its `id` and a JSON
//! `data` object holding the `epoch`, the `changes` (`[{"kind":
//! "keyspace_updated", "keyspace": "users"}]`), the `time` and the whole
//! `topology`; `"resync": true` marks a complete topology sent because the
//! history to resume from was compacted. The first connection asks for
//! nothing in particular, and shardd starts with the current topology; a
//! reconnection asks for the events after the last epoch seen (`?after=N`
//! and `Last-Event-ID: N`), so no version is missed. Epochs already seen are
//! skipped, so a replay does no harm. An `event: error` (shardd lost its
//! store) is recorded and the stream is reopened with backoff.
//!
//! shardd redacts the passwords of connection strings in what it serves:
//! routing works, but a service that opens database connections needs its
//! credentials from elsewhere.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use tracing::{info, warn};

use super::WatchError;
use super::backoff::Backoff;
use super::sse::{SseEvent, SseParser};
use super::state::{Command, Ctx, Incoming, Signal};
use super::telemetry;
use super::update::UpdateKind;
use crate::id::{Epoch, KeyspaceName};
use crate::store::Change;
use crate::topology::{Topology, redact};

pub(crate) async fn run(url: &str, token: Option<&str>, ctx: &mut Ctx) {
    let base = url.trim_end_matches('/');
    let shown = redact(base);
    let client = reqwest::Client::builder()
        .connect_timeout(ctx.options.request_timeout)
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .build();
    let client = match client {
        Ok(client) => client,
        Err(error) => {
            let message = format!("cannot build the http client: {error}");
            ctx.shared.record_error(WatchError::Shardd { url: shown, message });
            return;
        }
    };
    let mut backoff = Backoff::new(ctx.options.backoff_min, ctx.options.backoff_max);
    loop {
        let Some(failure) = session(&client, base, &shown, token, ctx).await else { return };
        if ctx.set_lost(failure) >= ctx.options.backoff_reset_after {
            backoff.reset();
        }
        if !ctx.pause(backoff.next_delay()).await {
            return;
        }
    }
}

/// One connection: returns why it ended, or `None` to stop the watcher.
async fn session(
    client: &reqwest::Client,
    base: &str,
    shown: &str,
    token: Option<&str>,
    ctx: &mut Ctx,
) -> Option<WatchError> {
    let fail = |message: String| Some(WatchError::Shardd { url: shown.to_owned(), message });
    let after = ctx.position();
    let resume = ctx.current().is_loaded();
    let url = if resume { format!("{base}/v1/watch?after={after}") } else { format!("{base}/v1/watch") };
    let mut request = client.get(url).header(reqwest::header::ACCEPT, "text/event-stream");
    if resume {
        request = request.header("Last-Event-ID", after.to_string());
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let timeout = ctx.options.request_timeout;
    let response = tokio::select! {
        () = until_shutdown(ctx) => return None,
        response = tokio::time::timeout(timeout, request.send()) => response,
    };
    let response = match response {
        Err(_elapsed) => return fail(format!("no answer within {timeout:?}")),
        Ok(Err(error)) => return fail(error.without_url().to_string()),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if !status.is_success() {
        let body = tokio::time::timeout(timeout, response.text()).await.ok().and_then(Result::ok);
        let body: String = body.unwrap_or_default().chars().take(300).collect();
        return fail(format!("answered {status}: {}", body.trim()));
    }
    ctx.set_connected();
    if resume {
        info!(after = after.0, "shardd watch stream resumed");
    } else {
        info!("shardd watch stream open");
    }
    let mut body = response.bytes_stream();
    let mut parser = SseParser::default();
    let idle = ctx.options.idle_timeout;
    loop {
        let quiet_until = tokio::time::Instant::now() + idle.unwrap_or(Duration::MAX / 4);
        let chunk = tokio::select! {
            () = until_shutdown(ctx) => return None,
            _ = tokio::time::sleep_until(quiet_until), if idle.is_some() => {
                return fail(format!("nothing received for {:?}", idle.unwrap_or_default()));
            }
            chunk = body.next() => chunk,
        };
        let bytes = match chunk {
            None => return fail("the event stream ended".to_owned()),
            Some(Err(error)) => return fail(error.without_url().to_string()),
            Some(Ok(bytes)) => bytes,
        };
        let events = match parser.feed(&bytes) {
            Ok(events) => events,
            Err(error) => return fail(error.to_string()),
        };
        for event in events {
            apply(event, shown, ctx).await;
        }
    }
}

/// Waits for shutdown, answering commands meanwhile.
async fn until_shutdown(ctx: &mut Ctx) {
    loop {
        match ctx.next_signal().await {
            Signal::Shutdown => return,
            Signal::Command(Command::Reload(reply)) => {
                let _ = reply.send(Err(WatchError::Unsupported { operation: "reload", source_kind: "shardd" }));
            }
        }
    }
}

/// Installs the topology of one event; logs what cannot be used.
async fn apply(event: SseEvent, shown: &str, ctx: &mut Ctx) {
    if event.event.as_deref() == Some("error") {
        let excerpt: String = event.data.chars().take(300).collect();
        warn!(error = %excerpt, "shardd reported an error on the watch stream");
        let message = format!("shardd reported: {excerpt}");
        ctx.shared.record_error(WatchError::Shardd { url: shown.to_owned(), message });
        return;
    }
    let kind = if ctx.current().is_loaded() { UpdateKind::Change } else { UpdateKind::Initial };
    match decode(&event, kind) {
        Ok(incoming) => {
            match incoming.kind {
                UpdateKind::Initial => telemetry::count_reload(&ctx.shared.name, "initial"),
                UpdateKind::Resync => telemetry::count_reload(&ctx.shared.name, "compacted"),
                _ => {}
            }
            // An invalid topology is skipped inside `install`.
            let _ = ctx.install(incoming).await;
        }
        Err(message) => {
            let excerpt: String = event.data.chars().take(200).collect();
            warn!(event = ?event.event, id = ?event.id, data = %excerpt, error = %message, "ignoring a shardd event");
            ctx.shared.record_error(WatchError::Shardd { url: shown.to_owned(), message });
        }
    }
}

/// The `data` of a watch event.
#[derive(Deserialize)]
struct EventData {
    #[serde(default)]
    epoch: Option<Epoch>,
    topology: Topology,
    #[serde(default)]
    changes: Option<serde_json::Value>,
    #[serde(default)]
    resync: bool,
}

/// The topology of one event. Its epoch is the data's `epoch`, else the
/// event id, else the topology's own. A resync's changes are computed.
fn decode(event: &SseEvent, kind: UpdateKind) -> Result<Incoming, String> {
    let data: EventData = serde_json::from_str(&event.data).map_err(|e| format!("cannot parse the event data: {e}"))?;
    let id = event.id.as_deref().and_then(|id| id.trim().parse().ok()).map(Epoch);
    let mut topology = data.topology;
    topology.epoch = data.epoch.or(id).unwrap_or(topology.epoch);
    let (kind, changes) = match (kind, data.resync) {
        (UpdateKind::Change, true) => (UpdateKind::Resync, None),
        (kind, _) => (kind, data.changes.as_ref().and_then(parse_changes)),
    };
    Ok(Incoming { topology: Arc::new(topology), versions: BTreeMap::new(), changes, kind })
}

/// Reads a list of changes in any of the obvious JSON shapes:
/// `{"kind": "keyspace_created", "keyspace": "users"}`,
/// `{"type": "updated", "name": "users"}` or `{"keyspace_deleted": "users"}`.
/// `None` if any element is not understood (changes are then computed).
fn parse_changes(value: &serde_json::Value) -> Option<Vec<Change>> {
    value.as_array()?.iter().map(parse_change).collect()
}

fn parse_change(value: &serde_json::Value) -> Option<Change> {
    let map = value.as_object()?;
    let (kind, name) = if map.len() == 1 {
        let (kind, name) = map.iter().next()?;
        (kind.as_str(), name.as_str()?)
    } else {
        let kind = ["kind", "type", "op", "change"].iter().find_map(|k| map.get(*k)?.as_str())?;
        let name = ["keyspace", "name"].iter().find_map(|k| map.get(*k)?.as_str())?;
        (kind, name)
    };
    let name = KeyspaceName::new(name).ok()?;
    let kind = kind.to_ascii_lowercase().replace(['_', '-', ' '], "");
    match kind.strip_prefix("keyspace").unwrap_or(&kind) {
        "created" | "create" | "added" => Some(Change::KeyspaceCreated(name)),
        "updated" | "update" | "changed" | "modified" => Some(Change::KeyspaceUpdated(name)),
        "deleted" | "delete" | "removed" => Some(Change::KeyspaceDeleted(name)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> KeyspaceName {
        KeyspaceName::new(s).unwrap()
    }

    #[test]
    fn decodes_an_event_and_takes_its_epoch() {
        let data = serde_json::json!({
            "epoch": 12,
            "time": "2025-01-01T00:00:00Z",
            "changes": [{"kind": "keyspace_updated", "keyspace": "users"}, {"KeyspaceCreated": "orders"}],
            "topology": {"cluster": "c", "epoch": 12, "keyspaces": {}},
        });
        let event = SseEvent { id: Some("12".into()), event: None, data: data.to_string() };
        let incoming = decode(&event, UpdateKind::Change).unwrap();
        assert_eq!(incoming.topology.epoch, Epoch(12));
        assert_eq!(
            incoming.changes,
            Some(vec![Change::KeyspaceUpdated(name("users")), Change::KeyspaceCreated(name("orders"))])
        );
    }

    #[test]
    fn falls_back_to_the_id_and_to_computed_changes() {
        let data = serde_json::json!({"changes": ["users"], "topology": {"cluster": "c"}});
        let event = SseEvent { id: Some("5".into()), event: None, data: data.to_string() };
        let incoming = decode(&event, UpdateKind::Change).unwrap();
        assert_eq!(incoming.topology.epoch, Epoch(5));
        assert_eq!(incoming.changes, None);
        let event = SseEvent { id: None, event: None, data: "compacted".into() };
        assert!(decode(&event, UpdateKind::Change).unwrap_err().starts_with("cannot parse the event data"));
        let data = serde_json::json!({"epoch": 9, "changes": [], "resync": true, "topology": {"cluster": "c"}});
        let event = SseEvent { id: Some("9".into()), event: Some("topology".into()), data: data.to_string() };
        let incoming = decode(&event, UpdateKind::Change).unwrap();
        assert_eq!((incoming.kind, incoming.changes, incoming.topology.epoch), (UpdateKind::Resync, None, Epoch(9)));
    }
}
