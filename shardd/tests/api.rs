//! The HTTP API end to end: a real server on 127.0.0.1:0 with the embedded
//! store (`LocalStore`, in memory or on disk), called with a real HTTP client.

mod common;

use std::time::Duration;

use common::{PASSWORD, TestServer, memory_config, shard, users_keyspace};
use reqwest::StatusCode;
use serde_json::json;
use shardd::config::Secret;

#[tokio::test]
async fn status_and_health() {
    let server = TestServer::memory().await;
    let (status, body) = server.get("/v1/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["cluster"], "test");
    assert_eq!(body["member_id"], "m1");
    assert_eq!(body["role"], "leader");
    assert_eq!(body["leader"]["member_id"], "m1");
    assert_eq!(body["leader"]["address"], server.url);
    assert_eq!(body["members"], json!([{"member_id": "m1", "address": server.url}]));
    assert_eq!(body["store"], "memory");
    assert_eq!(body["ready"], true);

    let (status, body) = server.get("/health/live").await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "live"})));
    let (status, body) = server.get("/health/ready").await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ready", "role": "leader"})));

    let (status, body) = server.get("/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = server.put("/v1/status", json!({})).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"]["code"], "method_not_allowed");
    server.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn keyspaces_are_created_listed_and_refused_when_invalid() {
    let server = TestServer::memory().await;
    let (status, body) = server.post("/v1/keyspaces", json!({"name": "users", "keyspace": users_keyspace()})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["name"], "users");
    let version = body["version"].as_u64().unwrap();
    assert_eq!(body["epoch"].as_u64(), Some(version));
    assert_eq!(body["keyspace"]["shards"][0]["primary"], "postgres://app:***@db0/users");
    assert_eq!(body["keyspace"]["shards"][0]["replicas"][0]["dsn"], "postgres://ro:***@r0/users");
    assert_eq!(body["keyspace"]["shards"][1]["primary"], "host=db1 user=app password=*** dbname=users");

    let (status, body) = server.get("/v1/keyspaces").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["keyspaces"],
        json!([{"name": "users", "algorithm": "hash_range", "shard_count": 2, "range_count": 2, "version": version}])
    );
    assert!(body["epoch"].as_u64().unwrap() >= version);

    let (status, body) = server.get("/v1/keyspaces/users").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["version"].as_u64(), Some(version));
    assert_eq!(body["keyspace"]["partitioning"]["ranges"][1], json!({"range": "80-", "shard": "s1"}));

    let (status, body) = server.post("/v1/keyspaces", json!({"name": "users", "keyspace": users_keyspace()})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("keyspace_exists")));

    // A gap in the ranges: 400 naming the range; nothing written.
    let mut gap = users_keyspace();
    gap["partitioning"]["ranges"][1]["range"] = json!("90-");
    let (status, body) = server.post("/v1/keyspaces", json!({"name": "orders", "keyspace": gap})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_topology");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("orders") && message.contains("80"), "{message}");

    // A malformed range name: 400 naming the field.
    let mut bad = users_keyspace();
    bad["partitioning"]["ranges"][0]["range"] = json!("-8g");
    let (status, body) = server.post("/v1/keyspaces", json!({"name": "orders", "keyspace": bad})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_input");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("keyspace.partitioning") && message.contains("-8g"), "{message}");

    for (body, needle) in [
        (json!({"name": "a/b", "keyspace": users_keyspace()}), "name"),
        (json!({"name": "orders"}), "keyspace"),
        (json!({"name": "orders", "keyspace": users_keyspace(), "extra": 1}), "extra"),
    ] {
        let (status, answer) = server.post("/v1/keyspaces", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains(needle), "{answer}");
    }
    let raw = server.client.post(format!("{}/v1/keyspaces", server.url)).body("{not json").send().await.unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);

    let (status, body) = server.get("/v1/keyspaces/orders").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("keyspace_not_found")));
    let (status, _) = server.get("/v1/keyspaces/bad%20name").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    server.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn shards_are_added_drained_and_removed() {
    let server = TestServer::memory().await;
    server.post("/v1/keyspaces", json!({"name": "users", "keyspace": users_keyspace()})).await;

    let (status, body) = server.post("/v1/keyspaces/users/shards", shard("s2")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["shard"]["id"], "s2");
    assert_eq!(body["shard"]["state"], "serving");
    assert_eq!(body["shard"]["ranges"], json!([]), "a new shard of a range keyspace owns nothing");
    assert_eq!(body["shard"]["primary"], "postgres://app:***@s2/users");

    let (status, body) = server.post("/v1/keyspaces/users/shards", shard("s2")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("shard_exists")));
    let (status, body) = server.post("/v1/keyspaces/users/shards", json!({"id": "s3", "primary": ""})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_topology")));
    let (status, _) = server.post("/v1/keyspaces/nope/shards", shard("s3")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = server.get("/v1/keyspaces/users/shards").await;
    assert_eq!(status, StatusCode::OK);
    let ranges: Vec<_> = body["shards"].as_array().unwrap().iter().map(|s| s["ranges"].clone()).collect();
    assert_eq!(ranges, [json!(["-80"]), json!(["80-"]), json!([])]);

    // Removing a shard that owns ranges: 409 naming them.
    let (status, body) = server.put("/v1/keyspaces/users/shards/s0/state", json!({"state": "removed"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "shard_owns_ranges");
    assert_eq!(body["error"]["details"]["ranges"], json!(["-80"]));
    assert!(body["error"]["message"].as_str().unwrap().contains("-80"));

    let (status, body) = server.put("/v1/keyspaces/users/shards/s2/state", json!({"state": "removed"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["shard"]["state"], "removed");
    let version = body["version"].clone();
    // The same state again changes nothing.
    let (status, body) = server.put("/v1/keyspaces/users/shards/s2/state", json!({"state": "removed"})).await;
    assert_eq!((status, body["version"].clone()), (StatusCode::OK, version));

    let (status, body) = server.put("/v1/keyspaces/users/shards/s0/state", json!({"state": "draining"})).await;
    assert_eq!((status, body["shard"]["state"].as_str()), (StatusCode::OK, Some("draining")));

    for (path, body, code) in [
        ("/v1/keyspaces/users/shards/s9/state", json!({"state": "draining"}), "shard_not_found"),
        ("/v1/keyspaces/users/shards/s0/state", json!({"state": "gone"}), "invalid_input"),
        ("/v1/keyspaces/users/shards/s0/state", json!({}), "invalid_input"),
        ("/v1/keyspaces/users/shards/a%2Fb/state", json!({"state": "serving"}), "invalid_input"),
    ] {
        let (_, answer) = server.put(path, body).await;
        assert_eq!(answer["error"]["code"], code, "{path}: {answer}");
    }
    server.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn only_empty_keyspaces_are_deleted() {
    let server = TestServer::memory().await;
    server.post("/v1/keyspaces", json!({"name": "users", "keyspace": users_keyspace()})).await;
    let (status, body) = server.delete("/v1/keyspaces/users").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "keyspace_not_empty");
    assert_eq!(body["error"]["details"]["serving_shards"], json!(["s0", "s1"]));

    for id in ["s0", "s1"] {
        let (status, _) =
            server.put(&format!("/v1/keyspaces/users/shards/{id}/state"), json!({"state": "draining"})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, body) = server.delete("/v1/keyspaces/users").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "users");
    let (status, _) = server.get("/v1/keyspaces/users").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = server.delete("/v1/keyspaces/users").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("keyspace_not_found")));
    server.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn topology_is_read_now_and_at_an_epoch() {
    let server = TestServer::memory().await;
    let (_, created) = server.post("/v1/keyspaces", json!({"name": "users", "keyspace": users_keyspace()})).await;
    let first = created["epoch"].as_u64().unwrap();
    server.post("/v1/keyspaces/users/shards", shard("s2")).await;

    let (status, now) = server.get("/v1/topology").await;
    assert_eq!(status, StatusCode::OK);
    assert!(now["epoch"].as_u64().unwrap() > first);
    assert_eq!(now["topology"]["cluster"], "test");
    assert_eq!(now["topology"]["keyspaces"]["users"]["shards"].as_array().unwrap().len(), 3);
    assert_eq!(now["versions"]["users"], now["epoch"]);

    let (status, then) = server.get(&format!("/v1/topology?epoch={first}")).await;
    assert_eq!(status, StatusCode::OK, "{then}");
    assert_eq!(then["epoch"].as_u64(), Some(first));
    assert_eq!(then["topology"]["keyspaces"]["users"]["shards"].as_array().unwrap().len(), 2);

    let (status, body) = server.get("/v1/topology?epoch=999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = server.get("/v1/topology?epoch=soon").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_input")));
    server.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_token_guards_every_v1_route() {
    let mut config = memory_config();
    config.api_token = Some(Secret::new("t0ken"));
    let server = TestServer::start(config).await;
    let url = &server.url;
    let client = &server.client;
    for path in ["/v1/status", "/v1/keyspaces", "/v1/topology", "/v1/watch"] {
        let response = client.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
        let response = client.get(format!("{url}{path}")).bearer_auth("wrong").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let response = client.post(format!("{url}/v1/keyspaces")).json(&json!({})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let (status, _) = server.get("/v1/status").await;
    assert_eq!(status, StatusCode::OK);
    for open in ["/health/live", "/health/ready", "/metrics"] {
        assert_eq!(client.get(format!("{url}{open}")).send().await.unwrap().status(), StatusCode::OK, "{open}");
    }
    server.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn metrics_count_requests_and_report_leadership() {
    let server = TestServer::memory().await;
    server.post("/v1/keyspaces", json!({"name": "users", "keyspace": users_keyspace()})).await;
    server.get("/v1/keyspaces/users").await;
    server.get("/v1/keyspaces/nope").await;
    let response = server.client.get(format!("{}/metrics", server.url)).send().await.unwrap();
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.unwrap();
    for line in [
        "shardd_leader 1",
        "shardd_watchers 0",
        "shardd_http_requests_total{route=\"/v1/keyspaces\",status=\"201\"} 1",
        "shardd_http_requests_total{route=\"/v1/keyspaces/{name}\",status=\"200\"} 1",
        "shardd_http_requests_total{route=\"/v1/keyspaces/{name}\",status=\"404\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("shardd_http_request_duration_seconds_bucket{"));
    let epoch = text.lines().find_map(|l| l.strip_prefix("shardd_topology_epoch ")).unwrap();
    assert!(epoch.parse::<u64>().unwrap() >= 1, "{text}");
    assert!(text.contains("# TYPE shardd_store_errors_total counter"));
    assert!(text.lines().any(|l| l == "shardd_store_errors_total{kind=\"fenced\"} 0"), "{text}");
    server.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_local_store_persists_and_is_locked_against_a_second_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("topology.json");
    let config = shardd::Config {
        store: shardd::StoreKind::Local,
        local: shardd::config::LocalOptions { path: path.clone() },
        ..memory_config()
    };
    let server = TestServer::start(config.clone()).await;
    let (status, _) = server.post("/v1/keyspaces", json!({"name": "users", "keyspace": users_keyspace()})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, status_body) = server.get("/v1/status").await;
    assert_eq!(status_body["store"], "local");

    let second = shardd::Server::start(config.clone()).await;
    assert!(second.is_err(), "a second server must not open the same file");
    server.handle.shutdown().await.unwrap();

    // The file holds the real DSNs (it is the store); the API never shows them.
    assert!(std::fs::read_to_string(&path).unwrap().contains(PASSWORD));
    let restarted = TestServer::start(config).await;
    let (status, body) = restarted.get("/v1/keyspaces/users").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    restarted.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_finishes_quickly_with_open_watch_streams() {
    let server = TestServer::memory().await;
    let stream = server.client.get(format!("{}/v1/watch", server.url)).send().await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    common::wait_until("the watch is counted", || server.handle.metrics().render().contains("shardd_watchers 1")).await;
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), server.handle.shutdown()).await.expect("shutdown finishes").unwrap();
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
    let rest = tokio::time::timeout(Duration::from_secs(5), stream.text()).await.expect("the stream ends");
    assert!(rest.is_ok());
}

/// Writers racing on one keyspace: compare-and-set with retries loses none
/// of their changes (each conflict is someone else's success, so with eight
/// writers and eight attempts every one of them gets through).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_not_lost() {
    let server = std::sync::Arc::new(TestServer::memory().await);
    server.post("/v1/keyspaces", json!({"name": "users", "keyspace": users_keyspace()})).await;
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let server = server.clone();
            tokio::spawn(async move { server.post("/v1/keyspaces/users/shards", shard(&format!("n{i}"))).await })
        })
        .collect();
    for writer in writers {
        let (status, body) = writer.await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (_, body) = server.get("/v1/keyspaces/users/shards").await;
    assert_eq!(body["shards"].as_array().unwrap().len(), 10);
    let server = std::sync::Arc::into_inner(server).unwrap();
    server.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let mut config = memory_config();
    config.max_body_bytes = 1024;
    let server = TestServer::start(config).await;
    let mut big = users_keyspace();
    big["tables"] = json!([{"name": "t".repeat(2000), "key_columns": ["id"]}]);
    let (status, body) = server.post("/v1/keyspaces", json!({"name": "users", "keyspace": big})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")));
    let (_, body) = server.get("/v1/keyspaces").await;
    assert_eq!(body["keyspaces"], json!([]));
    server.handle.shutdown().await.unwrap();
}
