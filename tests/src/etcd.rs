//! Real etcd servers: one member ([`EtcdServer`]) or a cluster
//! ([`EtcdCluster`]), each member with its own data directory in a temporary
//! directory and its client and peer URLs on free 127.0.0.1 ports.
//!
//! The `etcd` binary is `$ETCD_BIN` if set, else `etcd` on `$PATH`, else
//! `/usr/bin/etcd` (Debian's `etcd-server` package, version 3.4).
//!
//! Client URLs are plain `http://` unless [`EtcdOptions::client_tls`] asks
//! for TLS ([`ClientTls`]: `https://` client URLs, optionally requiring
//! client certificates).

mod tls;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::process::Signal;
use tempfile::TempDir;

pub use self::tls::ClientTls;
use crate::error::{FixtureError, Result};
use crate::http::{http_get, http_post_json};
use crate::ports::free_port;
use crate::process::{self, LOG_TAIL_LINES};
use crate::wait::{Step, poll};

/// How many times a server or cluster is started on fresh ports when a port
/// turned out to be taken.
const PORT_ATTEMPTS: usize = 5;

/// How long a graceful stop may take before the process is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Settings for the etcd servers the fixtures start.
///
/// The defaults suit tests on a small, busy machine. In a cluster, leader
/// elections are fast (a 500 ms election timeout) but not so fast that a
/// loaded machine causes spurious leader changes. A lone member never loses
/// its leadership, so it gets a 100 ms election timeout, which only shortens
/// its start. Auto-compaction is off, so that tests decide when to compact;
/// the request size limit is etcd's default (1.5 MiB), as in production.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// `--heartbeat-interval`; `None`: 10 ms for a lone member, 50 ms in a cluster.
    pub heartbeat_interval: Option<Duration>,
    /// `--election-timeout`; `None`: 100 ms for a lone member, 500 ms in a cluster.
    pub election_timeout: Option<Duration>,
    /// `--log-level` (`debug`, `info`, `warn`, `error`, …).
    pub log_level: String,
    /// How long a start or restart may take until every member is healthy.
    pub startup_timeout: Duration,
    /// More command-line arguments, appended after the fixture's own.
    pub extra_args: Vec<String>,
    /// TLS on the client URLs; `None` (the default): plain `http://`.
    pub client_tls: Option<ClientTls>,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            heartbeat_interval: None,
            election_timeout: None,
            log_level: "error".to_owned(),
            startup_timeout: Duration::from_secs(60),
            extra_args: Vec::new(),
            client_tls: None,
        }
    }
}

/// One running (or stopped) etcd member.
///
/// Dropping it kills the process with SIGKILL, waits for it, and removes its
/// directory. The client port, peer port and data directory stay the same
/// across [`stop`](Self::stop), [`kill`](Self::kill) and
/// [`restart`](Self::restart).
///
/// The fixtures are synchronous and block while a server starts; in a
/// `#[tokio::test]` that is harmless, or call them in `spawn_blocking`.
#[derive(Debug)]
pub struct EtcdServer {
    name: String,
    binary: PathBuf,
    client_port: u16,
    peer_port: u16,
    /// With [`EtcdOptions::client_tls`]: a plain-http port serving
    /// `/health`, for the fixture's own checks.
    metrics_port: Option<u16>,
    base_dir: PathBuf,
    args: Vec<String>,
    options: EtcdOptions,
    child: Option<Child>,
    /// The temporary directory, if this member owns it (a lone server does;
    /// cluster members live in their cluster's). Dropped after the process is
    /// killed, since fields drop after `Drop::drop` runs.
    _own_dir: Option<TempDir>,
}

impl EtcdServer {
    /// Starts a single-member etcd with default [`EtcdOptions`] and waits
    /// until it reports healthy.
    pub fn start() -> Result<EtcdServer> {
        EtcdServer::start_with(&EtcdOptions::default())
    }

    /// Starts a single-member etcd with the given options and waits until it
    /// reports healthy.
    pub fn start_with(options: &EtcdOptions) -> Result<EtcdServer> {
        let binary = etcd_binary()?;
        retry_on_port_clash(|| {
            let dir = temp_dir("shardkit-etcd-")?;
            let (client_port, peer_port) = (free_port()?, free_port()?);
            let name = "etcd-0".to_owned();
            let initial_cluster = format!("{name}={}", peer_url(peer_port));
            let spec = MemberSpec { name, client_port, peer_port, base_dir: dir.path().to_owned() };
            let mut server = EtcdServer::prepare(&binary, spec, &initial_cluster, &cluster_token(), options)?;
            server._own_dir = Some(dir);
            server.spawn()?;
            server.wait_healthy()?;
            Ok(server)
        })
    }

    fn prepare(
        binary: &Path,
        spec: MemberSpec,
        initial_cluster: &str,
        token: &str,
        options: &EtcdOptions,
    ) -> Result<EtcdServer> {
        let MemberSpec { name, client_port, peer_port, base_dir } = spec;
        fs::create_dir_all(&base_dir)
            .map_err(|e| FixtureError::io(format!("creating the directory {}", base_dir.display()), e))?;
        let lone = !initial_cluster.contains(',');
        let heartbeat = options.heartbeat_interval.unwrap_or(Duration::from_millis(if lone { 10 } else { 50 }));
        let election = options.election_timeout.unwrap_or(Duration::from_millis(if lone { 100 } else { 500 }));
        let client_url = client_url(options, client_port);
        let peer_url = peer_url(peer_port);
        let data_dir = base_dir.join("data");
        let mut args: Vec<String> = [
            ("--name", name.as_str()),
            ("--data-dir", &data_dir.to_string_lossy()),
            ("--listen-client-urls", &client_url),
            ("--advertise-client-urls", &client_url),
            ("--listen-peer-urls", &peer_url),
            ("--initial-advertise-peer-urls", &peer_url),
            ("--initial-cluster", initial_cluster),
            ("--initial-cluster-token", token),
            ("--initial-cluster-state", "new"),
            ("--heartbeat-interval", &heartbeat.as_millis().to_string()),
            ("--election-timeout", &election.as_millis().to_string()),
            ("--auto-compaction-retention", "0"),
            ("--logger", "zap"),
            ("--log-outputs", "stderr"),
            ("--log-level", &options.log_level),
        ]
        .into_iter()
        .map(|(flag, value)| format!("{flag}={value}"))
        .collect();
        let metrics_port = match &options.client_tls {
            Some(tls) => {
                let metrics_port = free_port()?;
                args.extend(tls.args(metrics_port));
                Some(metrics_port)
            }
            None => None,
        };
        args.extend(options.extra_args.iter().cloned());
        Ok(EtcdServer {
            name,
            binary: binary.to_owned(),
            client_port,
            peer_port,
            metrics_port,
            base_dir,
            args,
            options: options.clone(),
            child: None,
            _own_dir: None,
        })
    }

    /// The member's name, e.g. `etcd-0`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client URL, e.g. `http://127.0.0.1:41234` (`https://` with
    /// [`EtcdOptions::client_tls`]), for etcd clients.
    pub fn endpoint(&self) -> String {
        client_url(&self.options, self.client_port)
    }

    /// Where the fixture asks for `/health`: the client URL, or with TLS
    /// the plain-http metrics URL.
    fn health_endpoint(&self) -> String {
        match self.metrics_port {
            Some(port) => format!("http://127.0.0.1:{port}"),
            None => self.endpoint(),
        }
    }

    /// The client port on 127.0.0.1.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The peer URL, e.g. `http://127.0.0.1:41235`.
    pub fn peer_url(&self) -> String {
        peer_url(self.peer_port)
    }

    /// The data directory (`--data-dir`).
    pub fn data_dir(&self) -> PathBuf {
        self.base_dir.join("data")
    }

    /// The file that receives etcd's standard output and error, across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.base_dir.join("etcd.log")
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        process::log_tail(&self.log_path(), lines)
    }

    /// The process id, while the fixture considers the process running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running (it has not exited and was not stopped).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Whether the member answers `GET /health` with `{"health":"true"}`,
    /// which needs a leader, so a member without quorum is not healthy.
    pub fn is_healthy(&self) -> bool {
        health(&self.health_endpoint()).is_ok()
    }

    /// Waits until the member reports healthy, for at most the options'
    /// startup timeout. Fails at once, with the log tail, if etcd exits.
    pub fn wait_healthy(&mut self) -> Result<()> {
        let what = format!("{} to report healthy", self.describe());
        poll(self.options.startup_timeout, &what, || self.check()).map_err(|e| self.fail(e))
    }

    /// Waits until the member answers on its peer URL.
    fn wait_serving_peers(&mut self) -> Result<()> {
        let what = format!("{} to serve its peers at {}", self.describe(), self.peer_url());
        let peer_url = self.peer_url();
        poll(self.options.startup_timeout, &what, || {
            if let Step::Abort(err) = self.check_running() {
                return Step::Abort(err);
            }
            match http_get(&peer_url, "/members") {
                Ok(_) => Step::Done(()),
                Err(err) => Step::Retry(Some(err.to_string())),
            }
        })
        .map_err(|e| self.fail(e))
    }

    /// Stops the member gracefully (SIGTERM), killing it if it has not exited
    /// within 30 s. Fails if it had already exited on its own.
    pub fn stop(&mut self) -> Result<()> {
        self.end(|child, what| process::terminate(child, Signal::TERM, STOP_GRACE, what).map(drop))
    }

    /// Kills the member with SIGKILL, as a crash would, and waits for it.
    /// Fails if it had already exited on its own.
    pub fn kill(&mut self) -> Result<()> {
        self.end(process::kill_and_reap)
    }

    /// Starts the member again with the same ports and data directory
    /// (stopping it first if it runs), and waits until it is healthy.
    ///
    /// In a cluster this needs a quorum: restarting one member while most of
    /// the others are down times out; see [`EtcdCluster::restart_all`].
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.stop()?;
        }
        self.spawn()?;
        self.wait_healthy()
    }

    fn end(&mut self, how: impl FnOnce(&mut Child, &str) -> Result<()>) -> Result<()> {
        let what = self.describe();
        let Some(mut child) = self.child.take() else {
            return Err(FixtureError::Usage(format!("{what} is not running")));
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Err(self.fail(FixtureError::Exited { what: "it was expected to be running".into(), status }));
        }
        how(&mut child, &what).map_err(|e| self.fail(e))
    }

    fn spawn(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Err(FixtureError::Usage(format!("{} is already running", self.describe())));
        }
        let log = self.log_path();
        process::append_marker(&log, &format!("starting {}", self.describe()));
        let mut cmd = Command::new(&self.binary);
        cmd.args(&self.args).current_dir(&self.base_dir);
        // etcd reads any ETCD_* variable as a flag: keep the caller's out.
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("ETCD_") && k != "ETCD_UNSUPPORTED_ARCH") {
                cmd.env_remove(key);
            }
        }
        self.child = Some(process::spawn_logged(&mut cmd, &log).map_err(|e| self.fail(e))?);
        Ok(())
    }

    /// One check for [`poll`]: done when healthy, abort when exited.
    fn check(&mut self) -> Step<()> {
        if let Step::Abort(err) = self.check_running() {
            return Step::Abort(err);
        }
        match health(&self.health_endpoint()) {
            Ok(()) => Step::Done(()),
            Err(reason) => Step::Retry(Some(format!("{}: {reason}", self.name))),
        }
    }

    /// Aborts if the process is not running; else retries.
    fn check_running(&mut self) -> Step<()> {
        let Some(child) = self.child.as_mut() else {
            return Step::Abort(FixtureError::Usage(format!("{} is not running", self.name)));
        };
        match child.try_wait() {
            Ok(None) => Step::Retry(None),
            Ok(Some(status)) => {
                Step::Abort(FixtureError::Exited { what: format!("{} was starting", self.name), status })
            }
            Err(e) => Step::Abort(FixtureError::io("checking the etcd process", e)),
        }
    }

    fn describe(&self) -> String {
        format!("etcd member `{}` ({})", self.name, self.endpoint())
    }

    /// Wraps `cause` with this member's name and log tail.
    fn fail(&self, cause: FixtureError) -> FixtureError {
        if matches!(cause, FixtureError::Server { .. }) {
            return cause;
        }
        FixtureError::Server {
            server: self.describe(),
            cause: Box::new(cause),
            log: self.log_path(),
            log_tail: self.log_tail(LOG_TAIL_LINES),
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = process::kill_and_reap(&mut child, &self.name);
        }
    }
}

/// A cluster of etcd members on 127.0.0.1, all in one temporary directory.
///
/// Members are numbered from 0; each can be stopped, killed and restarted on
/// its own ([`member_mut`](Self::member_mut) or the `*_member` shortcuts).
/// Dropping the cluster kills every member and removes the directory.
#[derive(Debug)]
pub struct EtcdCluster {
    // Declared before `dir` so that members are killed before it is removed.
    members: Vec<EtcdServer>,
    options: EtcdOptions,
    dir: TempDir,
}

impl EtcdCluster {
    /// Starts a cluster of `members` members with default [`EtcdOptions`] and
    /// waits until every member is healthy.
    pub fn start(members: usize) -> Result<EtcdCluster> {
        EtcdCluster::start_with(members, &EtcdOptions::default())
    }

    /// Starts a cluster of `members` members with the given options and
    /// waits until every member is healthy.
    pub fn start_with(members: usize, options: &EtcdOptions) -> Result<EtcdCluster> {
        if members == 0 {
            return Err(FixtureError::Usage("an etcd cluster needs at least one member".into()));
        }
        let binary = etcd_binary()?;
        retry_on_port_clash(|| {
            let dir = temp_dir("shardkit-etcd-cluster-")?;
            let mut specs = Vec::with_capacity(members);
            for i in 0..members {
                let name = format!("etcd-{i}");
                let base_dir = dir.path().join(&name);
                specs.push(MemberSpec { name, client_port: free_port()?, peer_port: free_port()?, base_dir });
            }
            let initial_cluster: Vec<String> =
                specs.iter().map(|s| format!("{}={}", s.name, peer_url(s.peer_port))).collect();
            let initial_cluster = initial_cluster.join(",");
            let token = cluster_token();
            let members = specs
                .into_iter()
                .map(|spec| EtcdServer::prepare(&binary, spec, &initial_cluster, &token, options))
                .collect::<Result<Vec<_>>>()?;
            let mut cluster = EtcdCluster { members, options: options.clone(), dir };
            // Start the members one by one, each once the previous one
            // serves its peers: a new member first asks its peers whether
            // the cluster exists, and a peer that has bound its port but
            // does not answer yet costs it a one-second timeout per peer.
            for member in &mut cluster.members {
                member.spawn()?;
                member.wait_serving_peers()?;
            }
            cluster.wait_healthy()?;
            Ok(cluster)
        })
    }

    /// The client URLs of all members, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdServer::endpoint).collect()
    }

    /// All members, in order.
    pub fn members(&self) -> &[EtcdServer] {
        &self.members
    }

    /// Member `index`. Panics if there is no such member.
    pub fn member(&self, index: usize) -> &EtcdServer {
        &self.members[index]
    }

    /// Member `index`, to stop, kill or restart it. Panics if there is no
    /// such member.
    pub fn member_mut(&mut self, index: usize) -> &mut EtcdServer {
        &mut self.members[index]
    }

    /// Stops member `index` gracefully; see [`EtcdServer::stop`].
    pub fn stop_member(&mut self, index: usize) -> Result<()> {
        self.member_mut(index).stop()
    }

    /// Kills member `index` with SIGKILL; see [`EtcdServer::kill`].
    pub fn kill_member(&mut self, index: usize) -> Result<()> {
        self.member_mut(index).kill()
    }

    /// Restarts member `index` and waits until it is healthy; see
    /// [`EtcdServer::restart`].
    pub fn restart_member(&mut self, index: usize) -> Result<()> {
        self.member_mut(index).restart()
    }

    /// Stops every running member, starts all of them again, and waits until
    /// all are healthy: a full-cluster restart.
    pub fn restart_all(&mut self) -> Result<()> {
        for member in &mut self.members {
            if member.child.is_some() {
                member.stop()?;
            }
        }
        for member in &mut self.members {
            member.spawn()?;
        }
        self.wait_healthy()
    }

    /// Waits until every member that the fixture runs reports healthy. Fails
    /// at once, with that member's log tail, if one of them exits.
    pub fn wait_healthy(&mut self) -> Result<()> {
        let what = format!("all running members of {} to report healthy", self.describe());
        let members = &mut self.members;
        poll(self.options.startup_timeout, &what, || {
            let mut pending = None;
            for member in members.iter_mut().filter(|m| m.child.is_some()) {
                match member.check() {
                    Step::Done(()) => {}
                    Step::Retry(reason) => pending = pending.or(reason),
                    Step::Abort(cause) => return Step::Abort(member.fail(cause)),
                }
            }
            match pending {
                None => Step::Done(()),
                Some(reason) => Step::Retry(Some(reason)),
            }
        })
        .map_err(|e| self.fail(e))
    }

    /// The index of the current leader, as the running members report it
    /// (`/v3/maintenance/status`). Waits for one, for at most the startup
    /// timeout. Needs plain-http client URLs (no [`EtcdOptions::client_tls`]).
    pub fn leader(&self) -> Result<usize> {
        let what = format!("a leader among the running members of {}", self.describe());
        poll(self.options.startup_timeout, &what, || {
            let mut seen = Vec::new();
            for (index, member) in self.members.iter().enumerate().filter(|(_, m)| m.child.is_some()) {
                match member_status(&member.endpoint()) {
                    Ok((id, leader)) if id == leader => return Step::Done(index),
                    Ok((_, leader)) => seen.push(format!("{} follows {leader}", member.name)),
                    Err(reason) => seen.push(format!("{}: {reason}", member.name)),
                }
            }
            Step::Retry(Some(format!("no running member is the leader: {}", seen.join("; "))))
        })
        .map_err(|e| self.fail(e))
    }

    fn describe(&self) -> String {
        format!("etcd cluster of {} members in {}", self.members.len(), self.dir.path().display())
    }

    /// Wraps `cause` with the log tails of all members.
    fn fail(&self, cause: FixtureError) -> FixtureError {
        if matches!(cause, FixtureError::Server { .. }) {
            return cause;
        }
        let lines = (LOG_TAIL_LINES / self.members.len()).max(10);
        let log_tail = self.members.iter().map(|m| format!("[{}]\n{}", m.name, m.log_tail(lines))).collect();
        FixtureError::Server {
            server: self.describe(),
            cause: Box::new(cause),
            log: self.dir.path().join("*").join("etcd.log"),
            log_tail,
        }
    }
}

/// What differs between the members of a cluster.
struct MemberSpec {
    name: String,
    client_port: u16,
    peer_port: u16,
    base_dir: PathBuf,
}

fn client_url(options: &EtcdOptions, port: u16) -> String {
    let scheme = if options.client_tls.is_some() { "https" } else { "http" };
    format!("{scheme}://127.0.0.1:{port}")
}

fn peer_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// A cluster token no other cluster on this machine uses, so that members of
/// different clusters never mistake each other for peers.
fn cluster_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("shardkit-{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn temp_dir(prefix: &str) -> Result<TempDir> {
    tempfile::Builder::new().prefix(prefix).tempdir().map_err(|e| {
        FixtureError::io(format!("creating a temporary directory in {}", std::env::temp_dir().display()), e)
    })
}

/// Runs `start` again, on new ports, while it fails because a port was taken.
fn retry_on_port_clash<T>(mut start: impl FnMut() -> Result<T>) -> Result<T> {
    let mut attempt = 1;
    loop {
        match start() {
            Err(err) if err.is_address_in_use() && attempt < PORT_ATTEMPTS => attempt += 1,
            result => return result,
        }
    }
}

/// Ok when `GET /health` says `{"health":"true"}`; else what it said.
fn health(endpoint: &str) -> Result<(), String> {
    let response = http_get(endpoint, "/health").map_err(|e| e.to_string())?;
    let healthy = response.is_success() && response.json().is_ok_and(|json| json["health"] == "true");
    if healthy { Ok(()) } else { Err(format!("/health answered {}: {}", response.status, response.body.trim())) }
}

/// The member id and the leader id that a member reports.
fn member_status(endpoint: &str) -> Result<(String, String), String> {
    let response = http_post_json(endpoint, "/v3/maintenance/status", "{}").map_err(|e| e.to_string())?;
    let json = response.json().map_err(|e| e.to_string())?;
    let id = json["header"]["member_id"].as_str();
    let leader = json["leader"].as_str();
    match (id, leader) {
        (Some(id), Some(leader)) => Ok((id.to_owned(), leader.to_owned())),
        _ => Err(format!("unexpected status answer {}: {}", response.status, response.body.trim())),
    }
}

/// The etcd binary: `$ETCD_BIN`, else `etcd` on `$PATH`, else the usual places.
pub fn etcd_binary() -> Result<PathBuf> {
    const HINT: &str = "install Debian's etcd-server package (scripts/test.sh does) or set ETCD_BIN";
    if let Some(path) = std::env::var_os("ETCD_BIN") {
        let path = PathBuf::from(path);
        return if process::is_executable(&path) {
            Ok(path)
        } else {
            Err(FixtureError::ProgramNotFound {
                program: "etcd".into(),
                searched: format!("ETCD_BIN={}", path.display()),
                hint: "ETCD_BIN must name the etcd executable".into(),
            })
        };
    }
    let fallbacks = ["/usr/bin/etcd", "/usr/local/bin/etcd"];
    process::find_in_path("etcd")
        .or_else(|| fallbacks.iter().map(PathBuf::from).find(|p| process::is_executable(p)))
        .ok_or_else(|| FixtureError::ProgramNotFound {
            program: "etcd".into(),
            searched: format!("$ETCD_BIN (unset), $PATH, {}", fallbacks.join(", ")),
            hint: HINT.into(),
        })
}
