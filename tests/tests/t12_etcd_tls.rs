//! etcd over TLS, end to end: a real etcd serving `https://` client URLs
//! with throwaway certificates made by the `openssl` CLI at test time.
//!
//! - The store works over TLS (write, snapshot, watch, a client
//!   registration), and over mutual TLS with a client certificate.
//! - A server certificate from another CA, a name it was not issued for,
//!   and a missing or foreign client certificate are refused with errors
//!   that say the TLS handshake failed.
//! - User and password authentication works over TLS; a wrong password is
//!   `StoreError::Unauthorized`, and the password appears in no message.
//! - shardd, configured with `etcd.ca_file`, `cert_file`, `key_file` and a
//!   user allowed only the cluster's prefix, connects its store and its
//!   election over mutual TLS and leads.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::json;
use shardkit_tests::{ClientTls, EtcdOptions, EtcdServer};
use shardlib::KeyspaceName;
use shardlib::store::etcd::{EtcdConfig, EtcdStore, TlsConfig};
use shardlib::store::{Expect, Fence, StoreError, TopologyStore};
use shardlib::topology::Topology;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The longest any single step may take on a loaded machine.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// A throwaway public key infrastructure in a temporary directory: CAs,
/// and certificates they sign, made with the `openssl` CLI.
struct Pki {
    dir: tempfile::TempDir,
}

/// A certificate and its key, as PEM files.
struct Issued {
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new() -> Result<Pki, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Pki { dir: tempfile::tempdir()? })
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// A self-signed CA named `name` (ECDSA P-256, valid for a day).
    fn ca(&self, name: &str) -> Issued {
        let issued = Issued { cert: self.path(&format!("{name}.pem")), key: self.path(&format!("{name}.key")) };
        let options = format!(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN={name} \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
        );
        openssl(&options, &[("-keyout", &issued.key), ("-out", &issued.cert)]);
        issued
    }

    /// A certificate for `name`, signed by `ca`, good for servers and
    /// clients, valid for 127.0.0.1 and localhost.
    fn issue(&self, ca: &Issued, name: &str) -> Issued {
        let issued = Issued { cert: self.path(&format!("{name}.pem")), key: self.path(&format!("{name}.key")) };
        let request = self.path(&format!("{name}.csr"));
        let extensions = self.path(&format!("{name}.ext"));
        std::fs::write(
            &extensions,
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("the extensions file is written");
        let options = format!("req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN={name}");
        openssl(&options, &[("-keyout", &issued.key), ("-out", &request)]);
        let paths = [
            ("-in", request.as_path()),
            ("-CA", &ca.cert),
            ("-CAkey", &ca.key),
            ("-extfile", &extensions),
            ("-out", &issued.cert),
        ];
        openssl("x509 -req -days 1 -CAcreateserial", &paths);
        issued
    }
}

/// Runs `openssl` with the space-separated `options` and the `paths`
/// (flag, file) after them; panics with its output when it fails.
fn openssl(options: &str, paths: &[(&str, &Path)]) {
    let mut command = Command::new("openssl");
    command.args(options.split_whitespace());
    for (flag, path) in paths {
        command.arg(flag).arg(path);
    }
    let output = command.output().unwrap_or_else(|e| {
        panic!("cannot run openssl ({e}): install Debian's openssl package (scripts/test.sh does)")
    });
    assert!(output.status.success(), "openssl {options} failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// Starts a lone etcd member serving TLS with `server`, requiring client
/// certificates signed by `client_ca` when given.
async fn etcd_tls(
    server: &Issued,
    client_ca: Option<&Path>,
) -> Result<EtcdServer, Box<dyn std::error::Error + Send + Sync>> {
    let tls = ClientTls {
        cert_file: server.cert.clone(),
        key_file: server.key.clone(),
        client_ca_file: client_ca.map(Path::to_path_buf),
    };
    let options = EtcdOptions { client_tls: Some(tls), ..EtcdOptions::default() };
    let etcd = tokio::task::spawn_blocking(move || EtcdServer::start_with(&options)).await??;
    assert!(etcd.endpoint().starts_with("https://127.0.0.1:"), "{}", etcd.endpoint());
    Ok(etcd)
}

/// A configuration for `etcd` with TLS settings and short timeouts.
fn config(etcd: &EtcdServer, tls: TlsConfig) -> EtcdConfig {
    let mut config = EtcdConfig::new([etcd.endpoint()], "t12").with_tls(tls);
    config.connect_timeout = Duration::from_secs(5);
    config.request_timeout = Duration::from_secs(10);
    config
}

/// Connects, expecting a refusal whose message says the TLS handshake
/// failed (or, `closed`, that etcd closed the TLS connection: with TLS 1.3
/// a refused client certificate shows only so); returns the message.
async fn refused(config: EtcdConfig, closed: bool) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let endpoint = config.endpoints[0].clone();
    match tokio::time::timeout(STEP_TIMEOUT, EtcdStore::connect(config)).await? {
        Err(StoreError::Unavailable { message }) => {
            assert!(message.contains(&endpoint), "the endpoint is named: {message}");
            let named = message.contains("tls handshake failed")
                || (closed && message.contains("etcd closed the tls connection at once: it may have refused"));
            assert!(named, "the cause is named: {message}");
            Ok(message)
        }
        other => Err(format!("expected a refused tls handshake, got {other:?}").into()),
    }
}

fn name(name: &str) -> KeyspaceName {
    KeyspaceName::new(name).expect("a valid keyspace name")
}

/// A small valid keyspace.
fn keyspace() -> shardlib::topology::Keyspace {
    let topology = Topology::from_toml(
        r#"
        cluster = "t12"
        [keyspaces.users]
        shards = [{ id = "s0", primary = "postgres://app:secret@db0/users" }]
        partitioning = { algorithm = "hash_range", ranges = [{ range = "-", shard = "s0" }] }
        "#,
    )
    .expect("a valid topology");
    topology.keyspace("users").expect("users").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_over_tls_works_and_strangers_are_refused() -> TestResult {
    let pki = Pki::new()?;
    let ca = pki.ca("shardkit-ca");
    let other_ca = pki.ca("other-ca");
    let server = pki.issue(&ca, "etcd-server");
    let etcd = etcd_tls(&server, None).await?;

    // Put, snapshot and watch over TLS.
    let store = EtcdStore::connect(config(&etcd, TlsConfig::new(&ca.cert))).await?;
    let mut watch = store.watch(store.snapshot().await?.topology.epoch);
    let epoch = store.put_keyspace(&name("users"), &keyspace(), Expect::Absent, &Fence::None).await?;
    let snapshot = store.snapshot().await?;
    assert_eq!(snapshot.versions[&name("users")], epoch);
    let event = tokio::time::timeout(STEP_TIMEOUT, watch.next()).await?.ok_or("the watch ended")??;
    assert_eq!(event.snapshot.topology.epoch, epoch);
    let registration = store.register_client("tls-client", json!({"epoch": epoch}), Duration::from_secs(10)).await?;
    assert_eq!(store.list_clients().await?[0].value["epoch"], epoch.0);
    registration.close().await?;

    // The name in the server's certificate can be given when the endpoint
    // does not carry it; a name it was not issued for is refused.
    EtcdStore::connect(config(&etcd, TlsConfig::new(&ca.cert).with_domain("localhost"))).await?;
    let message = refused(config(&etcd, TlsConfig::new(&ca.cert).with_domain("etcd.elsewhere")), false).await?;
    assert!(message.contains("NotValidForName") || message.contains("name"), "{message}");

    // A server certificate from another CA.
    let message = refused(config(&etcd, TlsConfig::new(&other_ca.cert)), false).await?;
    assert!(message.contains("UnknownIssuer") || message.contains("issuer"), "{message}");

    // https without TLS settings, and TLS with a plain endpoint, are
    // configuration errors, found before connecting.
    let plain = EtcdStore::connect(EtcdConfig::new([etcd.endpoint()], "t12")).await;
    assert!(matches!(&plain, Err(StoreError::Config { message }) if message.contains("tls.ca_file")), "{plain:?}");
    let mixed = EtcdConfig::new([etcd.endpoint().replace("https", "http")], "t12").with_tls(TlsConfig::new(&ca.cert));
    let mixed = EtcdStore::connect(mixed).await;
    assert!(matches!(&mixed, Err(StoreError::Config { message }) if message.contains("plain http")), "{mixed:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_work_over_tls_and_wrong_ones_are_not_printed() -> TestResult {
    let pki = Pki::new()?;
    let ca = pki.ca("shardkit-ca");
    let server = pki.issue(&ca, "etcd-server");
    let etcd = etcd_tls(&server, None).await?;

    // Authentication on, through the store's own client over TLS.
    let admin = EtcdStore::connect(config(&etcd, TlsConfig::new(&ca.cert))).await?;
    let mut client = admin.client();
    client.user_add("root", "right-password", None).await?;
    client.user_grant_role("root", "root").await?;
    client.user_add("shardd", "shardd-password", None).await?;
    client.role_add("shardkit").await?;
    let prefix = shardlib::store::etcd::etcd_client::Permission::read_write("/t12/").with_prefix();
    client.role_grant_permission("shardkit", prefix).await?;
    client.user_grant_role("shardd", "shardkit").await?;
    client.auth_enable().await?;

    let user = config(&etcd, TlsConfig::new(&ca.cert)).with_user("shardd", "shardd-password");
    let store = EtcdStore::connect(user).await?;
    let epoch = store.put_keyspace(&name("users"), &keyspace(), Expect::Absent, &Fence::None).await?;
    assert_eq!(store.snapshot().await?.versions[&name("users")], epoch);

    let wrong = config(&etcd, TlsConfig::new(&ca.cert)).with_user("shardd", "wrong-password");
    assert!(!format!("{wrong:?}").contains("wrong-password"));
    match EtcdStore::connect(wrong).await {
        Err(e @ StoreError::Unauthorized { .. }) => {
            let text = format!("{e} {e:?}");
            assert!(!text.contains("wrong-password") && !text.contains("shardd-password"), "{text}");
        }
        other => return Err(format!("expected unauthorized, got {other:?}").into()),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_a_client_certificate_from_the_ca() -> TestResult {
    let pki = Pki::new()?;
    let ca = pki.ca("shardkit-ca");
    let other_ca = pki.ca("other-ca");
    let server = pki.issue(&ca, "etcd-server");
    let client = pki.issue(&ca, "shardkit-client");
    let stranger = pki.issue(&other_ca, "stranger");
    let etcd = etcd_tls(&server, Some(&ca.cert)).await?;

    let mutual = TlsConfig::new(&ca.cert).with_client_cert(&client.cert, &client.key);
    let store = EtcdStore::connect(config(&etcd, mutual)).await?;
    let epoch = store.put_keyspace(&name("users"), &keyspace(), Expect::Absent, &Fence::None).await?;
    assert_eq!(store.snapshot().await?.topology.epoch, epoch);

    // etcd refuses a client without a certificate, or with one from
    // another CA, during the handshake.
    refused(config(&etcd, TlsConfig::new(&ca.cert)), true).await?;
    refused(config(&etcd, TlsConfig::new(&ca.cert).with_client_cert(&stranger.cert, &stranger.key)), true).await?;

    // A key file that holds no key is named before anything is sent.
    let swapped = TlsConfig::new(&ca.cert).with_client_cert(&client.cert, &client.cert);
    let result = EtcdStore::connect(config(&etcd, swapped)).await;
    assert!(matches!(&result, Err(StoreError::Config { message }) if message.contains("client key")), "{result:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shardd_leads_over_mutual_tls_with_a_password() -> TestResult {
    let pki = Pki::new()?;
    let ca = pki.ca("shardkit-ca");
    let server = pki.issue(&ca, "etcd-server");
    let client = pki.issue(&ca, "shardd");
    let etcd = etcd_tls(&server, Some(&ca.cert)).await?;
    let mutual = TlsConfig::new(&ca.cert).with_client_cert(&client.cert, &client.key);
    let mut root = EtcdStore::connect(config(&etcd, mutual)).await?.client();
    root.user_add("root", "root-password", None).await?;
    root.user_grant_role("root", "root").await?;
    // shardd's own user may only read and write the cluster's prefix.
    root.user_add("shardd", "shardd-password", None).await?;
    root.role_add("shardkit").await?;
    let prefix = shardlib::store::etcd::etcd_client::Permission::read_write("/t12/").with_prefix();
    root.role_grant_permission("shardkit", prefix).await?;
    root.user_grant_role("shardd", "shardkit").await?;
    root.auth_enable().await?;
    let password_file = pki.path("etcd-password");
    std::fs::write(&password_file, "shardd-password\n")?;

    let mut config = shardd::Config {
        store: shardd::StoreKind::Etcd,
        cluster: "t12".into(),
        member_id: Some("m1".into()),
        listen: "127.0.0.1:0".parse()?,
        lease_ttl: shardd::config::HumanDuration::from_secs(5),
        ..shardd::Config::default()
    };
    config.etcd.endpoints = vec![etcd.endpoint()];
    config.etcd.username = Some("shardd".into());
    config.etcd.password_file = Some(password_file);
    config.etcd.ca_file = Some(ca.cert.clone());
    config.etcd.cert_file = Some(client.cert.clone());
    config.etcd.key_file = Some(client.key.clone());
    let handle = tokio::time::timeout(STEP_TIMEOUT, shardd::Server::start(config)).await??;
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    while !handle.is_leader() {
        assert!(tokio::time::Instant::now() < deadline, "shardd did not lead over tls within {STEP_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let status = tokio::task::spawn_blocking({
        let url = handle.url();
        move || shardkit_tests::http_get(&url, "/v1/status")
    })
    .await??;
    let status = status.json()?;
    assert_eq!((status["role"].as_str(), status["store"].as_str()), (Some("leader"), Some("etcd")), "{status}");
    let body = status.to_string();
    assert!(!body.contains("shardd-password"), "{body}");
    handle.shutdown().await?;
    Ok(())
}
