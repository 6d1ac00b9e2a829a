//! Two servers sharing one embedded store in this process: one leads, the
//! other forwards writes to it, and takes over when it stops.

mod common;

use std::sync::Arc;

use common::{TestServer, memory_config, shard, users_keyspace, wait_until};
use reqwest::StatusCode;
use serde_json::json;
use shardd::Server;
use shardd::config::Secret;
use shardlib::store::TopologyStore;
use shardlib::store::local::LocalStore;

fn config(member: &str) -> shardd::Config {
    let mut config = memory_config();
    config.member_id = Some(member.to_owned());
    config.api_token = Some(Secret::new("shared-t0ken"));
    config
}

#[tokio::test]
async fn followers_forward_writes_and_take_over() {
    let store: Arc<dyn TopologyStore> = Arc::new(LocalStore::in_memory("test").unwrap());
    let leader = Server::start_with_store(config("m1"), store.clone()).await.unwrap();
    wait_until("m1 leads", || leader.is_leader()).await;
    let follower = Server::start_with_store(config("m2"), store.clone()).await.unwrap();
    wait_until("m2 knows the leader", || follower.leader().remote_leader().is_some()).await;
    assert!(!follower.is_leader());
    let leader_url = leader.url();
    let b = TestServer {
        url: follower.url(),
        handle: follower,
        client: reqwest::Client::new(),
        token: Some("shared-t0ken".into()),
    };

    let (status, body) = b.get("/v1/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["role"], "follower");
    assert_eq!(body["leader"], json!({"member_id": "m1", "address": leader_url}));
    let (status, _) = b.get("/health/ready").await;
    assert_eq!(status, StatusCode::OK);

    // A write to the follower is answered by the leader, token and all.
    let response = b
        .client
        .post(format!("{}/v1/keyspaces", b.url))
        .bearer_auth("shared-t0ken")
        .json(&json!({"name": "users", "keyspace": users_keyspace()}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-shardd-leader"], "m1");
    let (status, body) = b.post("/v1/keyspaces/users/shards", shard("s2")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = b.get("/v1/keyspaces/users").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["keyspace"]["shards"].as_array().unwrap().len(), 3);
    // Errors come back as the leader gave them.
    let (status, body) = b.put("/v1/keyspaces/users/shards/s0/state", json!({"state": "removed"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("shard_owns_ranges")));
    // A wrong token is refused by the follower before anything is forwarded.
    let response = b.client.delete(format!("{}/v1/keyspaces/users", b.url)).bearer_auth("nope").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().get("x-shardd-leader").is_none());

    // A request that was forwarded already is not forwarded again.
    let response = b
        .client
        .post(format!("{}/v1/keyspaces/users/shards", b.url))
        .bearer_auth("shared-t0ken")
        .header("x-shardd-forwarded-by", "m9")
        .json(&shard("s3"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_leader");

    // The leader stops (and resigns): the follower takes over and writes itself.
    leader.shutdown().await.unwrap();
    wait_until("m2 leads", || b.handle.is_leader()).await;
    let response = b
        .client
        .post(format!("{}/v1/keyspaces/users/shards", b.url))
        .bearer_auth("shared-t0ken")
        .json(&shard("s3"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(response.headers().get("x-shardd-leader").is_none());
    let (_, body) = b.get("/v1/status").await;
    assert_eq!((body["role"].as_str(), body["leader"]["member_id"].as_str()), (Some("leader"), Some("m2")));
    b.handle.shutdown().await.unwrap();
}
