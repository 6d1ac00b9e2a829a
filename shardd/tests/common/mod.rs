//! Shared helpers of shardd's in-process tests: a server on 127.0.0.1:0
//! with the embedded store, and a real HTTP client.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shardd::{Config, Handle, Server, StoreKind};

/// The password every test DSN carries; no API answer may contain it.
pub const PASSWORD: &str = "s3cret-pw";

/// A server and a client for it.
pub struct TestServer {
    pub handle: Handle,
    pub client: reqwest::Client,
    pub url: String,
    pub token: Option<String>,
}

/// The configuration of an in-memory test server.
pub fn memory_config() -> Config {
    Config {
        store: StoreKind::Memory,
        listen: "127.0.0.1:0".parse().unwrap(),
        cluster: "test".into(),
        member_id: Some("m1".into()),
        watch_keep_alive: shardd::config::HumanDuration::from_millis(200),
        shutdown_timeout: shardd::config::HumanDuration::from_secs(5),
        ..Config::default()
    }
}

impl TestServer {
    /// Starts a server with `config` and waits until it leads.
    pub async fn start(config: Config) -> TestServer {
        let token = config.api_token.as_ref().map(|t| t.expose().to_owned());
        let handle = Server::start(config).await.expect("server starts");
        wait_until("the server leads", || handle.is_leader()).await;
        let url = handle.url();
        TestServer { handle, client: reqwest::Client::new(), url, token }
    }

    /// Starts an in-memory server.
    pub async fn memory() -> TestServer {
        TestServer::start(memory_config()).await
    }

    /// Sends a request (with the token, if any) and returns status and JSON body.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.url));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.expect("body read");
        assert!(!text.contains(PASSWORD), "an API answer leaked a password: {text}");
        let json =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }
}

/// A `hash_range` keyspace over shards s0 (`-80`) and s1 (`80-`), whose
/// DSNs carry [`PASSWORD`].
pub fn users_keyspace() -> Value {
    json!({
        "key_type": "u64",
        "tables": [{"name": "users", "key_columns": ["user_id"]}],
        "shards": [
            {"id": "s0", "primary": format!("postgres://app:{PASSWORD}@db0/users"),
             "replicas": [{"dsn": format!("postgres://ro:{PASSWORD}@r0/users")}]},
            {"id": "s1", "primary": format!("host=db1 user=app password={PASSWORD} dbname=users")}
        ],
        "partitioning": {"algorithm": "hash_range", "ranges": [
            {"range": "-80", "shard": "s0"},
            {"range": "80-", "shard": "s1"}
        ]}
    })
}

/// A new shard whose DSN carries [`PASSWORD`].
pub fn shard(id: &str) -> Value {
    json!({"id": id, "primary": format!("postgres://app:{PASSWORD}@{id}/users")})
}

/// Polls `condition` every 10 ms for up to 10 s.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
