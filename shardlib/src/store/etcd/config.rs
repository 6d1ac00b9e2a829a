//! [`EtcdConfig`]: how to reach etcd (endpoints, credentials, TLS), and the
//! etcd client options every connection of a configuration shares.
//!
//! # TLS
//!
//! `https://` endpoints need the crate feature `etcd-tls` (rustls with the
//! `ring` provider, through etcd-client's `tls` feature) and a
//! [`TlsConfig`] naming the CA certificate that signed etcd's server
//! certificates; a client certificate and key add mutual TLS (etcd's
//! `--client-cert-auth`). No system trust roots are used: etcd clusters
//! are almost always served by a private CA. With TLS every endpoint must
//! be `https://`. Anything else is refused before connecting, with a
//! [`StoreError::Config`] that says what to change.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::store::StoreError;
use crate::topology::redact;

/// How to reach etcd, and which cluster to keep there.
#[derive(Clone)]
pub struct EtcdConfig {
    /// Client URLs of the etcd members, e.g. `http://10.0.0.1:2379`, or
    /// `https://…` with [`EtcdConfig::tls`].
    pub endpoints: Vec<String>,
    /// The cluster's name: the key prefix `/<cluster>/`.
    pub cluster: String,
    /// User name, when etcd has authentication enabled.
    pub username: Option<String>,
    /// Password of `username`. Never printed.
    pub password: Option<String>,
    /// TLS settings, required for (and only allowed with) `https://`
    /// endpoints. Needs the feature `etcd-tls`.
    pub tls: Option<TlsConfig>,
    /// How long connecting to an endpoint may take.
    pub connect_timeout: Duration,
    /// How long one request may take.
    pub request_timeout: Duration,
}

/// TLS files for `https://` endpoints (feature `etcd-tls`; without it,
/// [`EtcdStore::connect`](super::EtcdStore::connect) refuses TLS settings
/// with a [`StoreError::Config`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// CA certificate (PEM) that etcd's server certificates are verified
    /// with. The only trusted root.
    pub ca_file: PathBuf,
    /// Client certificate (PEM), for mutual TLS; with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM); with `cert_file`.
    pub key_file: Option<PathBuf>,
    /// The name expected in the servers' certificates, when it is not the
    /// endpoints' host (e.g. endpoints given by IP address, certificates
    /// issued for `etcd.internal`).
    pub domain: Option<String>,
}

impl TlsConfig {
    /// Server verification with the CA certificate in `ca_file` (PEM).
    pub fn new(ca_file: impl Into<PathBuf>) -> Self {
        TlsConfig { ca_file: ca_file.into(), cert_file: None, key_file: None, domain: None }
    }

    /// Adds a client certificate and its key (PEM), for mutual TLS.
    pub fn with_client_cert(mut self, cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        self.cert_file = Some(cert_file.into());
        self.key_file = Some(key_file.into());
        self
    }

    /// Expects `domain` in the servers' certificates instead of the
    /// endpoints' host.
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }
}

impl EtcdConfig {
    /// Default connect timeout.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default request timeout.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

    /// A configuration with default timeouts, no credentials and no TLS.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>, cluster: impl Into<String>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            cluster: cluster.into(),
            username: None,
            password: None,
            tls: None,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Sets the credentials.
    pub fn with_user(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }

    /// Sets the TLS settings (for `https://` endpoints).
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Whether this build can speak TLS to etcd (feature `etcd-tls`).
    pub const fn tls_supported() -> bool {
        cfg!(feature = "etcd-tls")
    }

    /// Adds this configuration's credentials and TLS settings to `base`:
    /// what every etcd client of the configuration needs, whatever its
    /// timeouts (shardd's election client uses it too).
    ///
    /// Fails with [`StoreError::Config`] when the endpoints and the TLS
    /// settings do not go together (`https://` without TLS settings, TLS
    /// with an `http://` endpoint, a certificate without its key), when
    /// TLS is asked of a build without the feature `etcd-tls`, and when a
    /// TLS file cannot be read or holds no PEM data of the expected kind.
    pub fn client_options(&self, base: etcd_client::ConnectOptions) -> Result<etcd_client::ConnectOptions, StoreError> {
        let mut options = base;
        if let Some(username) = &self.username {
            options = options.with_user(username.clone(), self.password.clone().unwrap_or_default());
        }
        let https = self.endpoints.iter().find(|e| e.starts_with("https://"));
        let Some(tls) = &self.tls else {
            return match https {
                Some(endpoint) => Err(config_error(format!(
                    "the etcd endpoint {} uses https: give a CA certificate (tls.ca_file) to verify it{}",
                    redact(endpoint),
                    if Self::tls_supported() { "" } else { ", in a build with the feature etcd-tls" }
                ))),
                None => Ok(options),
            };
        };
        if !Self::tls_supported() {
            return Err(config_error(
                "tls is configured for etcd, but this build has no tls support: enable the feature etcd-tls \
                 (shardd: --features etcd-tls)",
            ));
        }
        if let Some(plain) = self.endpoints.iter().find(|e| e.starts_with("http://")) {
            return Err(config_error(format!(
                "tls is configured for etcd, but the endpoint {} is plain http: use https:// endpoints",
                redact(plain)
            )));
        }
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err(config_error("a tls client certificate (cert_file) and its key (key_file) go together"));
        }
        with_tls(options, tls)
    }

    /// The endpoints for messages, with any password in a URL redacted.
    pub(super) fn endpoints_text(&self) -> String {
        self.endpoints.iter().map(|e| redact(e)).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(feature = "etcd-tls")]
fn with_tls(options: etcd_client::ConnectOptions, tls: &TlsConfig) -> Result<etcd_client::ConnectOptions, StoreError> {
    use etcd_client::{Certificate, Identity, TlsOptions};
    let ca = read_pem(&tls.ca_file, "ca certificate", "CERTIFICATE-----")?;
    let mut settings = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        let cert = read_pem(cert, "client certificate", "CERTIFICATE-----")?;
        let key = read_pem(key, "client key", "PRIVATE KEY-----")?;
        settings = settings.identity(Identity::from_pem(cert, key));
    }
    if let Some(domain) = &tls.domain {
        settings = settings.domain_name(domain.clone());
    }
    Ok(options.with_tls(settings))
}

#[cfg(not(feature = "etcd-tls"))]
fn with_tls(
    _options: etcd_client::ConnectOptions,
    _tls: &TlsConfig,
) -> Result<etcd_client::ConnectOptions, StoreError> {
    Err(config_error("this build has no tls support: enable the feature etcd-tls"))
}

/// Reads a PEM file, checking that it holds a block whose label ends with
/// `label_end` (so that a swapped or empty file is named now, not as an
/// obscure handshake failure later). Small files, read once at connect.
#[cfg_attr(not(feature = "etcd-tls"), allow(dead_code))]
fn read_pem(path: &Path, what: &str, label_end: &str) -> Result<Vec<u8>, StoreError> {
    let bytes = std::fs::read(path)
        .map_err(|e| config_error(format!("cannot read the etcd tls {what} {}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    let has_block = text
        .match_indices("-----BEGIN ")
        .any(|(at, _)| text[at..].lines().next().is_some_and(|line| line.trim_end().ends_with(label_end)));
    if !has_block {
        return Err(config_error(format!(
            "the etcd tls {what} {} holds no PEM block ending in {label_end:?}",
            path.display()
        )));
    }
    Ok(bytes)
}

fn config_error(message: impl Into<String>) -> StoreError {
    StoreError::Config { message: message.into() }
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints_text())
            .field("cluster", &self.cluster)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(config: &EtcdConfig) -> Result<(), StoreError> {
        config.client_options(etcd_client::ConnectOptions::new()).map(drop)
    }

    fn message(result: Result<(), StoreError>) -> String {
        match result {
            Err(StoreError::Config { message }) => message,
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn plain_endpoints_need_no_tls() {
        let config = EtcdConfig::new(["http://127.0.0.1:2379"], "c").with_user("u", "p");
        options(&config).unwrap();
    }

    #[test]
    fn https_without_tls_settings_is_refused_by_name() {
        let config = EtcdConfig::new(["https://op:hunter2@etcd:2379"], "c");
        let text = message(options(&config));
        assert!(text.contains("https://op:***@etcd:2379") && text.contains("tls.ca_file"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn tls_settings_are_checked_before_connecting() {
        let dir = std::env::temp_dir().join(format!("shardlib-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let tls = TlsConfig::new(&not_pem);
        if !EtcdConfig::tls_supported() {
            let config = EtcdConfig::new(["https://etcd:2379"], "c").with_tls(tls);
            assert!(message(options(&config)).contains("feature etcd-tls"));
            return;
        }
        let mixed = EtcdConfig::new(["https://a:2379", "http://b:2379"], "c").with_tls(tls.clone());
        assert!(message(options(&mixed)).contains("http://b:2379 is plain http"));
        let half = EtcdConfig::new(["https://a:2379"], "c")
            .with_tls(TlsConfig { cert_file: Some(not_pem.clone()), ..tls.clone() });
        assert!(message(options(&half)).contains("go together"));
        let bad = EtcdConfig::new(["https://a:2379"], "c").with_tls(tls);
        assert!(message(options(&bad)).contains("holds no PEM block"));
        let missing = EtcdConfig::new(["https://a:2379"], "c").with_tls(TlsConfig::new(dir.join("absent.pem")));
        assert!(message(options(&missing)).contains("cannot read the etcd tls ca certificate"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
