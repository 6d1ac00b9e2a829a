//! A minimal HTTP/1.0 client over `std::net`, enough to probe servers
//! (`/health`, `/version`) and to call etcd's v3 JSON gateway in tests.
//!
//! HTTP/1.0 with `Connection: close` means the body is simply everything the
//! server sends before closing: no chunked encoding, no keep-alive.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::error::{FixtureError, Result};

/// How long connecting, and then each read or write, may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The body, decoded as UTF-8 (invalid sequences replaced).
    pub body: String,
}

impl HttpResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .map_err(|e| FixtureError::Usage(format!("response body is not JSON ({e}): {}", self.body)))
    }
}

/// `GET endpoint + path`, e.g. `http_get("http://127.0.0.1:2379", "/health")`.
pub fn http_get(endpoint: &str, path: &str) -> Result<HttpResponse> {
    request(endpoint, "GET", path, None)
}

/// `POST endpoint + path` with a JSON body, e.g. to etcd's `/v3/kv/put`.
pub fn http_post_json(endpoint: &str, path: &str, body: &str) -> Result<HttpResponse> {
    request(endpoint, "POST", path, Some(body))
}

fn request(endpoint: &str, method: &str, path: &str, body: Option<&str>) -> Result<HttpResponse> {
    let url = format!("{endpoint}{path}");
    let context = |doing: &str| format!("{method} {url}: {doing}");
    let authority = endpoint
        .strip_prefix("http://")
        .map(|rest| rest.split('/').next().unwrap_or(rest))
        .filter(|authority| !authority.is_empty())
        .ok_or_else(|| FixtureError::Usage(format!("{endpoint:?} is not an http:// endpoint")))?;
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| FixtureError::io(context("resolving the address"), e))?
        .next()
        .ok_or_else(|| FixtureError::Usage(context("the address resolves to nothing")))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| FixtureError::io(context("connecting"), e))?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| FixtureError::io(context("setting a timeout"), e))?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(|e| FixtureError::io(context("setting a timeout"), e))?;

    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n");
    if let Some(body) = body {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).map_err(|e| FixtureError::io(context("sending the request"), e))?;
    if let Some(body) = body {
        stream.write_all(body.as_bytes()).map_err(|e| FixtureError::io(context("sending the body"), e))?;
    }
    let raw = read_response(&mut stream).map_err(|e| FixtureError::io(context("reading the response"), e))?;
    parse_response(&raw).ok_or_else(|| {
        FixtureError::Usage(context(&format!("malformed response: {:?}", String::from_utf8_lossy(&raw))))
    })
}

/// Reads until the server closes the connection or, when the response has a
/// `Content-Length`, until the body is complete: some servers (etcd's peer
/// port) keep the connection open for a while even after `Connection: close`.
fn read_response(stream: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0; 8192];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(raw);
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]);
            let length = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                if name.trim().eq_ignore_ascii_case("content-length") {
                    value.trim().parse::<usize>().ok()
                } else {
                    None
                }
            });
            if length.is_some_and(|length| raw.len() >= split + 4 + length) {
                raw.truncate(split + 4 + length.unwrap_or_default());
                return Ok(raw);
            }
        }
    }
}

fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let status_line = head.lines().next()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let body = String::from_utf8_lossy(&raw[split + 4..]).into_owned();
    Some(HttpResponse { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn parses_a_response() {
        let raw = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{\"health\":\"true\"}";
        let response = parse_response(raw).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.json().unwrap()["health"], "true");
        assert!(parse_response(b"nonsense").is_none());
    }

    #[test]
    fn talks_to_a_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0; 1024];
            while !String::from_utf8_lossy(&request).contains("{}") {
                let n = conn.read(&mut buf).unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 404 Not Found\r\n\r\nnope").unwrap();
            String::from_utf8(request).unwrap()
        });
        let response = http_post_json(&endpoint, "/v3/kv/put", "{}").unwrap();
        assert_eq!(response, HttpResponse { status: 404, body: "nope".into() });
        assert!(!response.is_success());
        let request = server.join().unwrap();
        assert!(request.starts_with("POST /v3/kv/put HTTP/1.0\r\n"), "{request}");
        assert!(request.contains("Content-Length: 2\r\n"), "{request}");
    }

    #[test]
    fn stops_reading_at_the_end_of_a_sized_body() {
        let mut input: &[u8] = b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA";
        assert_eq!(read_response(&mut input).unwrap(), b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok");
        let mut unsized_body: &[u8] = b"HTTP/1.0 200 OK\r\n\r\nall of it";
        assert!(read_response(&mut unsized_body).unwrap().ends_with(b"all of it"));
    }

    #[test]
    fn refuses_other_schemes() {
        assert!(http_get("https://127.0.0.1:1", "/").is_err());
    }
}
