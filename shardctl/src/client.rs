//! A small client of shardd's HTTP API.
//!
//! Answers are JSON; errors come back as `{"error": {"code", "message"}}`
//! and are turned into messages that say what failed and where. The bearer
//! token is sent but never printed.

use anyhow::{Context, anyhow};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::Value;

/// The API client: the endpoint and an optional bearer token.
pub struct ApiClient {
    http: reqwest::Client,
    endpoint: String,
    token: Option<String>,
}

impl ApiClient {
    /// A client of the shardd at `endpoint` (e.g. `http://127.0.0.1:7070`).
    pub fn new(endpoint: &str, token: Option<String>) -> anyhow::Result<Self> {
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            anyhow::bail!("--endpoint {endpoint:?} must start with http:// or https://");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(ApiClient { http, endpoint, token })
    }

    /// `GET path`, decoded as JSON.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, None::<&Value>).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &impl Serialize) -> anyhow::Result<Value> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, body: &impl Serialize) -> anyhow::Result<Value> {
        self.call(Method::PUT, path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::DELETE, path, None::<&Value>).await
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.endpoint));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<&impl Serialize>) -> anyhow::Result<Value> {
        let mut request = self.request(method.clone(), path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.unreachable(e))?;
        if status.is_success() {
            return serde_json::from_str(&text)
                .with_context(|| format!("shardd answered {method} {path} with something that is not JSON"));
        }
        Err(api_error(status, &text))
    }

    /// Opens `GET path` as a server-sent event stream; calls `on_event` with
    /// each event's id and data until it returns `false` or the stream ends.
    pub async fn events(
        &self,
        path: &str,
        mut on_event: impl FnMut(Option<&str>, &str) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let response = self
            .request(Method::GET, path)
            .header("accept", "text/event-stream")
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(api_error(status, &text));
        }
        let mut body = response.bytes_stream();
        let mut buffer = Vec::new();
        let mut event = SseEvent::default();
        while let Some(chunk) = body.next().await {
            buffer.extend_from_slice(&chunk.map_err(|e| self.unreachable(e))?);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line = String::from_utf8_lossy(&buffer[..end]).trim_end_matches('\r').to_owned();
                buffer.drain(..=end);
                if line.is_empty() {
                    if !event.data.is_empty() && !on_event(event.id.as_deref(), &event.data)? {
                        return Ok(());
                    }
                    event = SseEvent::default();
                } else if let Some(data) = line.strip_prefix("data:") {
                    if !event.data.is_empty() {
                        event.data.push('\n');
                    }
                    event.data.push_str(data.strip_prefix(' ').unwrap_or(data));
                } else if let Some(id) = line.strip_prefix("id:") {
                    event.id = Some(id.trim().to_owned());
                }
            }
        }
        Err(anyhow!("shardd at {} closed the watch stream", self.endpoint))
    }

    fn unreachable(&self, err: reqwest::Error) -> anyhow::Error {
        let what = if err.is_connect() {
            "cannot connect"
        } else if err.is_timeout() {
            "timed out"
        } else {
            "request failed"
        };
        anyhow!("{what} to shardd at {}: {}", self.endpoint, error_chain(&err))
    }
}

#[derive(Default)]
struct SseEvent {
    id: Option<String>,
    data: String,
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Turns an error answer into a message: shardd's own message when it sent
/// one, else the status line.
fn api_error(status: StatusCode, body: &str) -> anyhow::Error {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    match error.and_then(|e| e.get("message")).and_then(Value::as_str) {
        Some(message) => {
            let code = error.and_then(|e| e.get("code")).and_then(Value::as_str).unwrap_or("error");
            anyhow!("shardd refused ({} {code}): {message}", status.as_u16())
        }
        None => anyhow!("shardd answered {status}"),
    }
}
