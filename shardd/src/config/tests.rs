//! Precedence and validation. Environment variables are tested by running
//! the binary (`tests/cli.rs`): a test cannot set them safely in-process.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn load(args: &[&str]) -> Result<Config, ConfigError> {
    Config::load_from(std::iter::once("shardd").chain(args.iter().copied()))
}

#[test]
fn defaults_are_the_documented_ones() {
    let config = Config::default();
    assert_eq!(config.cluster, "default");
    assert_eq!(config.listen, "127.0.0.1:7070".parse::<SocketAddr>().unwrap());
    assert_eq!(config.lease_ttl.get(), Duration::from_secs(10));
    assert_eq!(config.store, StoreKind::Local);
    assert_eq!(config.local.path, PathBuf::from("./shardd-data/topology.json"));
    assert_eq!(config.etcd.endpoints, vec!["http://127.0.0.1:2379".to_owned()]);
    assert_eq!(config.etcd.dial_timeout.get(), Duration::from_secs(5));
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.api_token, None);
    assert_eq!(config.member_id, None);
    config.validate().unwrap();
}

#[test]
fn file_overrides_defaults_and_flags_override_the_file() {
    let f = file(
        r#"
        cluster = "from-file"
        lease_ttl = "4s"
        store = "etcd"
        [etcd]
        endpoints = ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        dial_timeout = 2
        [log]
        format = "json"
        "#,
    );
    let path = f.path().to_str().unwrap();

    let config = load(&["--config", path]).unwrap();
    assert_eq!(config.cluster, "from-file");
    assert_eq!(config.lease_ttl, HumanDuration::from_secs(4));
    assert_eq!(config.store, StoreKind::Etcd);
    assert_eq!(config.etcd.endpoints.len(), 2);
    assert_eq!(config.etcd.dial_timeout, HumanDuration::from_secs(2));
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.listen, Config::default().listen, "unset keys keep their defaults");
    assert_eq!(config.config_file.as_deref(), Some(f.path()));

    let config = load(&[
        "--config",
        path,
        "--cluster",
        "from-flag",
        "--etcd-endpoints",
        "http://a:1,http://b:2,http://c:3",
        "--log-format",
        "text",
    ])
    .unwrap();
    assert_eq!(config.cluster, "from-flag");
    assert_eq!(config.etcd.endpoints, ["http://a:1", "http://b:2", "http://c:3"]);
    assert_eq!(config.log.format, LogFormat::Text, "a flag equal to the default still wins over the file");
    assert_eq!(config.lease_ttl, HumanDuration::from_secs(4), "the file still wins over defaults");
}

#[test]
fn file_errors_name_the_key_and_line() {
    let f = file("cluster = \"x\"\nlease_tll = \"3s\"\n");
    let err = load(&["--config", f.path().to_str().unwrap()]).unwrap_err().to_string();
    assert!(err.contains("lease_tll") && err.contains("line 2"), "{err}");

    let f = file("[etcd]\ndial_timeout = \"soon\"\n");
    let err = load(&["--config", f.path().to_str().unwrap()]).unwrap_err().to_string();
    assert!(err.contains("dial_timeout") && err.contains("duration"), "{err}");

    let err = load(&["--config", "/nonexistent/shardd.toml"]).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/shardd.toml"), "{err}");
}

#[test]
fn invalid_options_are_named() {
    let cases: &[(&[&str], &str)] = &[
        (&["--cluster", "a/b"], "cluster"),
        (&["--lease-ttl", "1s"], "lease_ttl"),
        (&["--lease-ttl", "2500ms"], "lease_ttl"),
        (&["--member-id", "has space"], "member_id"),
        (&["--advertise", "https://x:1"], "advertise"),
        (&["--advertise", "http://x:1/path"], "advertise"),
        (&["--api-token", "t", "--api-token-file", "/etc/hostname"], "api_token"),
        (&["--api-token-file", "/nonexistent"], "api_token_file"),
        (&["--store", "etcd", "--etcd-endpoints", "127.0.0.1:2379"], "etcd.endpoints"),
        (&["--store", "etcd", "--etcd-endpoints", "https://e:2379"], "etcd.ca_file"),
        (&["--store", "etcd", "--etcd-username", "root"], "etcd.username"),
        (
            &["--store", "etcd", "--etcd-cert-file", "/etc/hostname"],
            if cfg!(feature = "etcd-tls") { "etcd.cert_file" } else { "etcd.ca_file" },
        ),
        (&["--log-filter", "shardd=loud"], "log.filter"),
        (&["--watch-keep-alive", "0s"], "watch_keep_alive"),
    ];
    for (args, key) in cases {
        match load(args) {
            Err(ConfigError::Invalid { key: got, .. }) => assert_eq!(&got, key, "{args:?}"),
            other => panic!("{args:?}: expected an invalid {key}, got {other:?}"),
        }
    }
    let tls = load(&["--store", "etcd", "--etcd-endpoints", "https://e:2379", "--etcd-ca-file", "/etc/hostname"]);
    assert_eq!(tls.is_ok(), cfg!(feature = "etcd-tls"), "{tls:?}");
    if cfg!(feature = "etcd-tls") {
        let plain = load(&["--store", "etcd", "--etcd-ca-file", "/etc/hostname"]).unwrap_err().to_string();
        assert!(plain.contains("etcd.endpoints") && plain.contains("http://127.0.0.1:2379 is plain http"), "{plain}");
        let domain = load(&["--store", "etcd", "--etcd-tls-domain", "etcd.internal"]).unwrap_err().to_string();
        assert!(domain.contains("etcd.ca_file") && domain.contains("etcd.tls_domain"), "{domain}");
    }
    let err = load(&["--lease-ttl", "1s"]).unwrap_err().to_string();
    assert!(err.contains("--lease-ttl") && err.contains("SHARDD_LEASE_TTL"), "{err}");
}

#[test]
fn malformed_flags_are_cli_errors() {
    for args in [&["--lease-ttl", "soon"][..], &["--store", "zookeeper"], &["--no-such-flag"]] {
        assert!(matches!(load(args), Err(ConfigError::Cli(_))), "{args:?}");
    }
}

#[test]
fn secrets_come_from_files_and_never_print() {
    let mut token = tempfile::NamedTempFile::new().unwrap();
    writeln!(token, "  s3cret-token  ").unwrap();
    let config = load(&["--api-token-file", token.path().to_str().unwrap()]).unwrap();
    assert_eq!(config.api_token().unwrap().unwrap().expose(), "s3cret-token");

    let config =
        load(&["--api-token", "s3cret-token", "--store", "etcd", "--etcd-username", "u", "--etcd-password", "pw"])
            .unwrap();
    assert_eq!(config.etcd_password().unwrap().unwrap().expose(), "pw");
    let shown = config.to_redacted_toml();
    assert!(!shown.contains("s3cret") && !shown.contains("\"pw\""), "{shown}");
    assert!(shown.contains("api_token = \"***\""), "{shown}");
    assert!(!format!("{config:?}").contains("s3cret"));
    // The redacted form is itself a valid configuration file.
    let _: Config = toml::from_str(&shown).unwrap();
}

#[test]
fn advertise_url_defaults_to_the_bound_address() {
    let bound: SocketAddr = "127.0.0.1:45678".parse().unwrap();
    assert_eq!(Config::default().advertise_url(bound), "http://127.0.0.1:45678");
    let v6: SocketAddr = "[::1]:7070".parse().unwrap();
    assert_eq!(Config::default().advertise_url(v6), "http://[::1]:7070");
    let wildcard: SocketAddr = "0.0.0.0:7070".parse().unwrap();
    assert!(!Config::default().advertise_url(wildcard).contains("0.0.0.0"));
    let config = Config { advertise: Some("db-ctl-1:7070/".into()), ..Config::default() };
    assert_eq!(config.advertise_url(bound), "http://db-ctl-1:7070");
}

#[test]
fn member_id_defaults_to_host_and_pid() {
    let id = Config::default().member_id();
    assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}");
    let config = Config { member_id: Some("m1".into()), ..Config::default() };
    assert_eq!(config.member_id(), "m1");
}
