//! `GET /v1/watch`: server-sent events over a real HTTP connection.

mod common;

use std::time::Duration;

use common::{PASSWORD, TestServer, shard, users_keyspace};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// One server-sent event (or a comment).
#[derive(Debug, Default)]
struct SseEvent {
    id: Option<String>,
    event: Option<String>,
    data: String,
    comment: Option<String>,
}

impl SseEvent {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap()
    }
}

/// Reads events from an SSE response.
struct SseReader {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<axum::body::Bytes>>,
    buffer: String,
}

impl SseReader {
    fn new(response: reqwest::Response) -> Self {
        SseReader { body: response.bytes_stream().boxed(), buffer: String::new() }
    }

    /// The next event or comment (within 10 s); `None` when the stream ends.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                assert!(!block.contains(PASSWORD), "an event leaked a password: {block}");
                let mut event = SseEvent::default();
                for line in block.lines() {
                    if let Some(comment) = line.strip_prefix(':') {
                        event.comment = Some(comment.trim().to_owned());
                    } else if let Some((field, value)) = line.split_once(':') {
                        let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
                        match field {
                            "id" => event.id = Some(value),
                            "event" => event.event = Some(value),
                            "data" => event.data.push_str(&value),
                            _ => {}
                        }
                    }
                }
                return Some(event);
            }
            let chunk =
                tokio::time::timeout(Duration::from_secs(10), self.body.next()).await.expect("an event in time");
            match chunk {
                Some(Ok(bytes)) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                _ => return None,
            }
        }
    }

    /// The next event that is not a comment.
    async fn next_event(&mut self) -> SseEvent {
        loop {
            let event = self.next().await.expect("the stream goes on");
            if event.comment.is_none() {
                return event;
            }
        }
    }
}

async fn open(server: &TestServer, query: &str, last_event_id: Option<u64>) -> SseReader {
    let mut request = server.client.get(format!("{}/v1/watch{query}", server.url));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    SseReader::new(response)
}

#[tokio::test]
async fn changes_stream_as_events_with_the_whole_topology() {
    let server = TestServer::memory().await;
    let mut watch = open(&server, "", None).await;
    let first = watch.next_event().await;
    assert_eq!(first.event.as_deref(), Some("topology"));
    let body = first.json();
    assert_eq!(body["changes"], json!([]));
    assert_eq!(body["topology"]["keyspaces"], json!({}));
    assert_eq!(first.id, Some(body["epoch"].to_string()));

    let (_, created) = server.post("/v1/keyspaces", json!({"name": "users", "keyspace": users_keyspace()})).await;
    let event = watch.next_event().await;
    let body = event.json();
    assert_eq!(body["epoch"], created["epoch"]);
    assert_eq!(event.id, Some(created["epoch"].to_string()));
    assert_eq!(body["changes"], json!([{"kind": "keyspace_created", "keyspace": "users"}]));
    assert_eq!(body["topology"]["keyspaces"]["users"]["shards"][0]["primary"], "postgres://app:***@db0/users");
    let time = body["time"].as_str().unwrap();
    assert!(time.len() == 24 && time.ends_with('Z'), "{time}");

    server.post("/v1/keyspaces/users/shards", shard("s2")).await;
    let body = watch.next_event().await.json();
    assert_eq!(body["changes"], json!([{"kind": "keyspace_updated", "keyspace": "users"}]));

    // While nothing changes: keep-alive comments (every 200 ms in tests).
    let comment = watch.next().await.unwrap();
    assert_eq!(comment.comment.as_deref(), Some("keep-alive"));
    let (status, body) = server.get("/v1/status").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(server.handle.metrics().render().lines().any(|l| l == "shardd_watchers 1"));
    drop(watch);
    server.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_watch_resumes_after_an_epoch() {
    let server = TestServer::memory().await;
    let (_, created) = server.post("/v1/keyspaces", json!({"name": "users", "keyspace": users_keyspace()})).await;
    let created_at = created["epoch"].as_u64().unwrap();
    let (_, added) = server.post("/v1/keyspaces/users/shards", shard("s2")).await;
    let (_, drained) = server.put("/v1/keyspaces/users/shards/s2/state", json!({"state": "draining"})).await;

    let mut watch = open(&server, &format!("?after={created_at}"), None).await;
    assert_eq!(watch.next_event().await.json()["epoch"], added["epoch"]);
    assert_eq!(watch.next_event().await.json()["epoch"], drained["epoch"]);

    // Last-Event-ID wins over `after`, as on an SSE client's reconnection.
    let added_at = added["epoch"].as_u64().unwrap();
    let mut watch = open(&server, &format!("?after={created_at}"), Some(added_at)).await;
    let event = watch.next_event().await;
    assert_eq!(event.json()["epoch"], drained["epoch"]);
    assert_eq!(event.json()["topology"]["keyspaces"]["users"]["shards"][2]["state"], "draining");

    let response = server.client.get(format!("{}/v1/watch?after=x", server.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response =
        server.client.get(format!("{}/v1/watch", server.url)).header("Last-Event-ID", "x").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    server.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_watch_older_than_the_history_resyncs() {
    let server = TestServer::memory().await;
    let (_, created) = server.post("/v1/keyspaces", json!({"name": "users", "keyspace": users_keyspace()})).await;
    let (_, added) = server.post("/v1/keyspaces/users/shards", shard("s2")).await;
    let now = added["epoch"].as_u64().unwrap();
    // Forget the history, as etcd's compaction does.
    server.handle.store().compact(shardlib::Epoch(now)).await.unwrap();
    let (status, body) = server.get(&format!("/v1/topology?epoch={}", created["epoch"])).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::GONE, Some("compacted")));

    let mut watch = open(&server, &format!("?after={}", created["epoch"]), None).await;
    let event = watch.next_event().await.json();
    assert_eq!(event["resync"], true);
    assert_eq!(event["epoch"].as_u64(), Some(now));
    assert_eq!(event["topology"]["keyspaces"]["users"]["shards"].as_array().unwrap().len(), 3);
    // And it goes on from there.
    let (_, drained) = server.put("/v1/keyspaces/users/shards/s2/state", json!({"state": "draining"})).await;
    let event = watch.next_event().await.json();
    assert_eq!(event["epoch"], drained["epoch"]);
    assert!(event.get("resync").is_none());
    server.handle.shutdown().await.unwrap();
}
