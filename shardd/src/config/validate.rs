//! The rules a configuration must follow, checked before anything starts.

use std::path::Path;
use std::time::Duration;

use super::{Config, ConfigError, StoreKind};

/// Shortest lease TTL: etcd refuses (or silently raises) shorter leases.
const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
/// Longest lease TTL: a dead leader would block writes for this long.
const MAX_LEASE_TTL: Duration = Duration::from_secs(3600);
/// Longest member id, in bytes.
const MAX_MEMBER_ID_LEN: usize = 128;

impl Config {
    /// Checks every option and the combinations of options. The error names
    /// the option (its file key, flag and variable) and says what is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        shardlib::id::validate_name("cluster name", &self.cluster)
            .map_err(|e| ConfigError::invalid("cluster", e.to_string()))?;
        if let Some(id) = &self.member_id {
            validate_member_id(id)?;
        }
        if let Some(advertise) = &self.advertise {
            validate_advertise(advertise)?;
        }
        if self.api_token.is_some() && self.api_token_file.is_some() {
            return Err(ConfigError::invalid("api_token", "give api_token or api_token_file, not both"));
        }
        if self.api_token.as_ref().is_some_and(|t| t.expose().trim().is_empty()) {
            return Err(ConfigError::invalid("api_token", "is empty"));
        }
        check_file("api_token_file", self.api_token_file.as_deref())?;
        let ttl = self.lease_ttl.get();
        if ttl < MIN_LEASE_TTL || ttl > MAX_LEASE_TTL || ttl.subsec_nanos() != 0 {
            return Err(ConfigError::invalid(
                "lease_ttl",
                format!("must be whole seconds between 2s and 1h, got {}", self.lease_ttl),
            ));
        }
        positive("watch_keep_alive", self.watch_keep_alive.get())?;
        positive("forward_timeout", self.forward_timeout.get())?;
        if self.mover.batch_rows == 0 || self.mover.batch_rows > 1_000_000 {
            return Err(ConfigError::invalid("mover.batch_rows", "must be between 1 and 1000000"));
        }
        if self.mover.max_jobs == 0 {
            return Err(ConfigError::invalid("mover.max_jobs", "must be at least 1"));
        }
        positive("mover.connect_timeout", self.mover.connect_timeout.get())?;
        if !(self.rebalance.threshold.is_finite() && self.rebalance.threshold > 1.0) {
            return Err(ConfigError::invalid("rebalance.threshold", "must be a ratio above 1, e.g. 1.25"));
        }
        if !["rows", "bytes", "load", "mix"].contains(&self.rebalance.cost.as_str()) {
            return Err(ConfigError::invalid("rebalance.cost", "must be rows, bytes, load or mix"));
        }
        positive("rebalance.interval", self.rebalance.interval.get())?;
        positive("mover.retry_for", self.mover.retry_for.get())?;
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::invalid("max_body_bytes", "must be at least 1024"));
        }
        if self.log.filter.as_deref().is_some_and(|f| f.trim().is_empty()) {
            return Err(ConfigError::invalid("log.filter", "is empty"));
        }
        if let Some(filter) = &self.log.filter {
            tracing_subscriber::EnvFilter::try_new(filter)
                .map_err(|e| ConfigError::invalid("log.filter", e.to_string()))?;
        }
        match self.store {
            StoreKind::Local => {
                if self.local.path.as_os_str().is_empty() || self.local.path.is_dir() {
                    return Err(ConfigError::invalid("local.path", "must name a file"));
                }
                Ok(())
            }
            StoreKind::Etcd => self.validate_etcd(),
            StoreKind::Memory => Ok(()),
        }
    }

    fn validate_etcd(&self) -> Result<(), ConfigError> {
        let etcd = &self.etcd;
        if etcd.endpoints.is_empty() {
            return Err(ConfigError::invalid(
                "etcd.endpoints",
                "at least one endpoint is required with store = \"etcd\"",
            ));
        }
        for endpoint in &etcd.endpoints {
            let rest = endpoint.strip_prefix("http://").or_else(|| endpoint.strip_prefix("https://"));
            if rest.is_none_or(|authority| authority.is_empty() || authority.contains(char::is_whitespace)) {
                return Err(ConfigError::invalid(
                    "etcd.endpoints",
                    format!("{endpoint:?} is not a URL such as http://127.0.0.1:2379"),
                ));
            }
            if endpoint.starts_with("https://") && etcd.ca_file.is_none() {
                return Err(ConfigError::invalid(
                    "etcd.ca_file",
                    format!("is required for the https endpoint {endpoint}"),
                ));
            }
        }
        if let Some(plain) = etcd.endpoints.iter().find(|e| e.starts_with("http://"))
            && etcd.ca_file.is_some()
        {
            return Err(ConfigError::invalid(
                "etcd.endpoints",
                format!("{plain} is plain http while etcd.ca_file enables TLS: use https:// endpoints"),
            ));
        }
        let wants_tls = etcd.ca_file.is_some()
            || etcd.cert_file.is_some()
            || etcd.tls_domain.is_some()
            || etcd.endpoints.iter().any(|e| e.starts_with("https://"));
        if wants_tls && !cfg!(feature = "etcd-tls") {
            return Err(ConfigError::invalid(
                "etcd.ca_file",
                "this build of shardd has no TLS support for etcd (build it with --features etcd-tls)",
            ));
        }
        if etcd.password.is_some() && etcd.password_file.is_some() {
            return Err(ConfigError::invalid("etcd.password", "give etcd.password or etcd.password_file, not both"));
        }
        let has_password = etcd.password.is_some() || etcd.password_file.is_some();
        if etcd.username.as_deref().is_some_and(|u| u.trim().is_empty()) {
            return Err(ConfigError::invalid("etcd.username", "is empty"));
        }
        if etcd.username.is_some() != has_password {
            return Err(ConfigError::invalid("etcd.username", "a user name and a password go together"));
        }
        check_file("etcd.password_file", etcd.password_file.as_deref())?;
        check_file("etcd.ca_file", etcd.ca_file.as_deref())?;
        check_file("etcd.cert_file", etcd.cert_file.as_deref())?;
        check_file("etcd.key_file", etcd.key_file.as_deref())?;
        if etcd.cert_file.is_some() != etcd.key_file.is_some() {
            return Err(ConfigError::invalid("etcd.cert_file", "a client certificate and its key go together"));
        }
        if etcd.cert_file.is_some() && etcd.ca_file.is_none() {
            return Err(ConfigError::invalid("etcd.ca_file", "is required with a client certificate"));
        }
        if let Some(domain) = &etcd.tls_domain {
            if domain.trim().is_empty() {
                return Err(ConfigError::invalid("etcd.tls_domain", "is empty"));
            }
            if etcd.ca_file.is_none() {
                return Err(ConfigError::invalid("etcd.ca_file", "is required with etcd.tls_domain"));
            }
        }
        positive("etcd.dial_timeout", etcd.dial_timeout.get())
    }
}

fn validate_member_id(id: &str) -> Result<(), ConfigError> {
    if id.is_empty() || id.len() > MAX_MEMBER_ID_LEN {
        return Err(ConfigError::invalid("member_id", "must be 1 to 128 bytes long"));
    }
    if id.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
        return Err(ConfigError::invalid("member_id", format!("{id:?} contains a space, a control character or '/'")));
    }
    Ok(())
}

fn validate_advertise(url: &str) -> Result<(), ConfigError> {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(ConfigError::invalid("advertise", format!("scheme {scheme:?} is not supported: use http://")));
        }
        None => url,
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', ' ']) || !authority.contains(':') {
        return Err(ConfigError::invalid(
            "advertise",
            format!("{url:?} is not a base URL such as http://10.0.0.5:7070 (host and port, no path)"),
        ));
    }
    Ok(())
}

fn check_file(key: &'static str, path: Option<&Path>) -> Result<(), ConfigError> {
    match path {
        Some(path) if !path.is_file() => {
            Err(ConfigError::invalid(key, format!("{} does not exist or is not a file", path.display())))
        }
        _ => Ok(()),
    }
}

fn positive(key: &'static str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() { Err(ConfigError::invalid(key, "must be longer than 0")) } else { Ok(()) }
}
