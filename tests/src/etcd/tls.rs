//! TLS on the client URLs of the etcd members the fixtures start
//! ([`EtcdOptions::client_tls`](super::EtcdOptions::client_tls)), for the
//! etcd TLS tests (`t12_etcd_tls`).

use std::path::PathBuf;

/// TLS on a member's client URLs
/// ([`EtcdOptions::client_tls`](super::EtcdOptions::client_tls)): the
/// member serves `https://127.0.0.1:PORT` with this certificate, and
/// `/health` on a plain-http metrics URL (`--listen-metrics-urls`) for the
/// fixture's own checks. Peer traffic stays plain.
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// `--cert-file`: the server certificate (PEM), valid for `127.0.0.1`.
    pub cert_file: PathBuf,
    /// `--key-file`: its private key (PEM).
    pub key_file: PathBuf,
    /// `--trusted-ca-file` with `--client-cert-auth`: clients must present a
    /// certificate signed by this CA. `None`: any client may connect.
    pub client_ca_file: Option<PathBuf>,
}

impl ClientTls {
    /// The member's TLS arguments, with `/health` on `metrics_port`.
    pub(super) fn args(&self, metrics_port: u16) -> Vec<String> {
        let mut args = vec![
            format!("--cert-file={}", self.cert_file.display()),
            format!("--key-file={}", self.key_file.display()),
            format!("--listen-metrics-urls=http://127.0.0.1:{metrics_port}"),
        ];
        if let Some(ca) = &self.client_ca_file {
            args.push(format!("--trusted-ca-file={}", ca.display()));
            args.push("--client-cert-auth=true".to_owned());
        }
        args
    }
}
