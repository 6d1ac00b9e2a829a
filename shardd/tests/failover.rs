//! Failover of real `shardd` processes over a real three-member etcd
//! cluster (no mocks): the issue's requirement "SIGKILL of the leader
//! shardd: a standby takes over and the old leader's late writes are
//! rejected", plus a graceful handover on SIGTERM and an etcd member restart
//! under a leader.
//!
//! Each test starts its own etcd cluster ([`EtcdCluster`]) and `shardd`
//! binaries on free ports with `--store etcd` and a lease of 3 s (the SIGTERM
//! test: 30 s, so that a handover cannot be mistaken for a lease expiry),
//! and talks to them over HTTP (`/v1/status`, the keyspace API). The
//! fencing checks use the store itself ([`EtcdStore`]) with the fence the
//! leader wrote with, read from the election before the leader dies.
//!
//! The tests run in parallel on a small, loaded machine: every wait polls
//! with a 60 s deadline, nothing sleeps to synchronise, and every process
//! is killed when its guard ([`Shardd`], the fixtures) is dropped, also when
//! a test fails. Takeover times are printed (`--nocapture` shows them).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use serde_json::{Value, json};
use shardkit_tests::{EtcdCluster, POLL_INTERVAL, free_port, http_get, http_post_json, log_tail, wait_for};
use shardlib::KeyspaceName;
use shardlib::store::etcd::{EtcdConfig, EtcdStore};
use shardlib::store::{Expect, LeaderInfo, Snapshot, StoreError, TopologyStore};

/// The longest any one step may take on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(60);
/// The lease TTL of the SIGKILL and etcd restart tests.
const SHORT_TTL: Duration = Duration::from_secs(3);
/// What a takeover after SIGKILL may take beyond the TTL: etcd's lease
/// expiry check, the standby's campaign, a loaded machine.
const TAKEOVER_MARGIN: Duration = Duration::from_secs(12);
/// The cluster (etcd key prefix) of every test; each has its own etcd.
const CLUSTER: &str = "failover";

/// A `shardd` process. Dropping it kills it (SIGKILL) and reaps it.
struct Shardd {
    member_id: String,
    url: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Shardd {
    /// Starts `shardd --store etcd` as `member_id` on a free port, and waits
    /// until its API answers. Starts again on a new port if the port was
    /// taken meanwhile.
    fn start(dir: &Path, member_id: &str, endpoints: &[String], ttl: Duration) -> Shardd {
        let log = dir.join(format!("{member_id}.log"));
        for _attempt in 0..5 {
            let port = free_port().expect("a free port");
            let out = File::options().create(true).append(true).open(&log).expect("the log file opens");
            let err = out.try_clone().expect("the log file handle duplicates");
            let mut command = Command::new(env!("CARGO_BIN_EXE_shardd"));
            // The test process's own SHARDD_* variables must not leak in.
            for (key, _) in std::env::vars_os() {
                if key.to_str().is_some_and(|key| key.starts_with("SHARDD_") || key == "RUST_LOG") {
                    command.env_remove(key);
                }
            }
            command
                .args(["--store", "etcd", "--cluster", CLUSTER, "--member-id", member_id])
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--etcd-endpoints", &endpoints.join(",")])
                .args(["--lease-ttl", &format!("{}s", ttl.as_secs())])
                .args(["--shutdown-timeout", "10s", "--log-filter", "info,shardlib=debug"])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err);
            let child = command.spawn().expect("shardd starts");
            let url = format!("http://127.0.0.1:{port}");
            let mut shardd = Shardd { member_id: member_id.to_owned(), url, log: log.clone(), child: Some(child) };
            match shardd.wait_live() {
                Ok(()) => return shardd,
                Err(status) if log_tail(&log, 20).contains("cannot listen") => {
                    eprintln!("{member_id}: port {port} was taken ({status}); starting again on another");
                }
                Err(status) => panic!("{member_id} exited at start ({status}):\n{}", shardd.log_tail()),
            }
        }
        panic!("{member_id}: no free port in 5 attempts")
    }

    /// Waits until `/health/live` answers; the exit status if the process
    /// exits first.
    fn wait_live(&mut self) -> Result<(), ExitStatus> {
        let what = format!("{} to answer /health/live", self.member_id);
        let live = wait_for(DEADLINE, &what, || {
            if let Some(status) = self.exited() {
                return Ok(Err(status));
            }
            http_get(&self.url, "/health/live")
                .and_then(|r| if r.is_success() { Ok(Ok(())) } else { Err(unexpected(&r)) })
        });
        live.unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()))
    }

    /// The exit status, once the process has exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|child| child.try_wait().expect("the child can be waited for"))
    }

    /// `GET /v1/status`.
    fn status(&self) -> Result<Value, String> {
        let response = http_get(&self.url, "/v1/status").map_err(|e| e.to_string())?;
        if !response.is_success() {
            return Err(format!("{}: /v1/status answered {}: {}", self.member_id, response.status, response.body));
        }
        response.json().map_err(|e| e.to_string())
    }

    /// Kills the process with SIGKILL, as a crash would, and reaps it.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("the process runs");
        child.kill().expect("SIGKILL is sent");
        child.wait().expect("the killed process is reaped");
    }

    /// Sends SIGTERM; returns the exit status once the process has exited.
    fn terminate(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("the process runs");
        let pid = i32::try_from(child.id()).ok().and_then(Pid::from_raw).expect("a valid pid");
        rustix::process::kill_process(pid, Signal::TERM).expect("SIGTERM is sent");
        let what = format!("{} to exit after SIGTERM", self.member_id);
        let status = wait_for(DEADLINE, &what, || self.exited().ok_or("still running"));
        let status = status.unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()));
        self.child = None;
        status
    }

    fn log_tail(&self) -> String {
        format!("--- {} ({}) ---\n{}", self.member_id, self.log.display(), log_tail(&self.log, 40))
    }
}

impl Drop for Shardd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A test's etcd cluster, `shardd` members and a store client of its own.
/// Fields drop in order: the members are killed before etcd stops, the
/// store client goes before its runtime, the logs' directory goes last.
struct Fixture {
    members: Vec<Shardd>,
    store: EtcdStore,
    etcd: EtcdCluster,
    runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

impl Fixture {
    /// A three-member etcd cluster and `count` shardd members `m1`, `m2`, …
    /// with a lease of `ttl`; returns once one of them leads and all agree.
    fn start(count: usize, ttl: Duration) -> Fixture {
        let etcd = EtcdCluster::start(3).expect("the etcd cluster starts");
        let dir = tempfile::Builder::new().prefix("shardd-failover-").tempdir().expect("a temporary directory");
        let endpoints = etcd.endpoints();
        let members = (1..=count).map(|i| Shardd::start(dir.path(), &format!("m{i}"), &endpoints, ttl)).collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the store client");
        let store =
            runtime.block_on(EtcdStore::connect(EtcdConfig::new(endpoints, CLUSTER))).expect("the store connects");
        let fixture = Fixture { members, store, etcd, runtime, dir };
        fixture.wait_for_leader("one member to lead, and every member to know it", None);
        fixture
    }

    /// The running members.
    fn running(&self) -> impl Iterator<Item = &Shardd> {
        self.members.iter().filter(|m| m.child.is_some())
    }

    /// Waits until exactly one running member reports `role: leader` and
    /// every running member names it as the leader; with `not`, until that
    /// leader is someone other than `not`. Returns the leader's index.
    fn wait_for_leader(&self, what: &str, not: Option<&str>) -> usize {
        let found = wait_for(DEADLINE, what, || {
            let mut leaders = Vec::new();
            let mut named = Vec::new();
            for member in self.running() {
                let status = member.status()?;
                if status["role"] == "leader" {
                    leaders.push(member.member_id.clone());
                }
                named.push(status["leader"]["member_id"].as_str().unwrap_or("?").to_owned());
            }
            match leaders.as_slice() {
                [leader] if named.iter().all(|n| n == leader) && not != Some(leader.as_str()) => {
                    Ok(self.members.iter().position(|m| &m.member_id == leader).expect("a member"))
                }
                _ => Err(format!("leaders {leaders:?}, members name {named:?}")),
            }
        });
        found.unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    /// The election's leader as the store reports it.
    fn store_leader(&self) -> LeaderInfo {
        let leader = self.retry(|| self.store.leader()).expect("the store answers");
        leader.expect("the election has a leader")
    }

    fn snapshot(&self) -> Snapshot {
        self.retry(|| self.store.snapshot()).expect("the store answers")
    }

    /// Runs a call of the test's own store client, again (for at most
    /// [`DEADLINE`]) while it fails with a transient error, such as a
    /// connection that broke when an etcd member restarted.
    fn retry<T, F: Future<Output = Result<T, StoreError>>>(
        &self,
        mut call: impl FnMut() -> F,
    ) -> Result<T, StoreError> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.runtime.block_on(call()) {
                Err(error) if error.is_transient() && Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
                result => return result,
            }
        }
    }

    /// `POST path` on member `index`; the status and JSON body.
    fn post(&self, index: usize, path: &str, body: &Value) -> (u16, Value) {
        let member = &self.members[index];
        let response = http_post_json(&member.url, path, &body.to_string())
            .unwrap_or_else(|e| panic!("POST {path} to {}: {e}\n{}", member.member_id, self.logs()));
        (response.status, response.json().unwrap_or(Value::String(response.body)))
    }

    /// Adds shard `id` to `users` through member `index`, which must answer 201.
    fn add_shard(&self, index: usize, id: &str) {
        let body = json!({"id": id, "primary": format!("postgres://app@{id}/users")});
        let (status, body) = self.post(index, "/v1/keyspaces/users/shards", &body);
        let member = &self.members[index].member_id;
        assert_eq!(status, 201, "adding {id} through {member}: {body}\n{}", self.logs());
    }

    /// Like [`Fixture::add_shard`], but retries while the member answers
    /// 503 `store_unavailable` (the documented "retry shortly": e.g. the
    /// store's client meets a connection that broke when an etcd member
    /// restarted). A retry may find the shard added by an attempt whose
    /// answer was lost; the caller checks the data afterwards.
    fn add_shard_retrying(&self, index: usize, id: &str) {
        let body = json!({"id": id, "primary": format!("postgres://app@{id}/users")});
        let member = &self.members[index].member_id;
        let mut unavailable = 0;
        let added = wait_for(DEADLINE, &format!("{member} to add {id}"), || {
            match self.post(index, "/v1/keyspaces/users/shards", &body) {
                (201, _) => Ok(()),
                (409, body) if unavailable > 0 && body["error"]["code"] == "shard_exists" => Ok(()),
                (503, body) if body["error"]["code"] == "store_unavailable" => {
                    unavailable += 1;
                    Err(body.to_string())
                }
                (status, body) => panic!("adding {id} through {member}: {status} {body}\n{}", self.logs()),
            }
        });
        added.unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
        if unavailable > 0 {
            eprintln!("adding {id} through {member}: {unavailable} transient store_unavailable answers");
        }
    }

    /// Checks that every running member and the store hold `users` with
    /// exactly the shards `ids`, its two ranges, at one version.
    fn assert_users_intact(&self, ids: &[&str]) {
        let snapshot = self.snapshot();
        let users = snapshot.topology.keyspace("users").expect("users is stored");
        let stored: Vec<&str> = users.shards.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(stored, ids, "the store's shards of users");
        let version = snapshot.versions[&KeyspaceName::new("users").expect("a name")];
        for member in self.running() {
            let response = http_get(&member.url, "/v1/keyspaces/users").expect("the member answers");
            assert_eq!(response.status, 200, "{}: {}", member.member_id, response.body);
            let body = response.json().expect("JSON");
            let shards: Vec<&str> = body["keyspace"]["shards"]
                .as_array()
                .expect("shards")
                .iter()
                .filter_map(|s| s["id"].as_str())
                .collect();
            assert_eq!(shards, ids, "the shards of users as {} serves them", member.member_id);
            assert_eq!(body["version"].as_u64(), Some(version.0), "{} serves the stored version", member.member_id);
            let ranges = body["keyspace"]["partitioning"]["ranges"].as_array().map(Vec::len);
            assert_eq!(ranges, Some(2), "{}: {body}", member.member_id);
        }
    }

    /// The log tails of every member, for failure messages.
    fn logs(&self) -> String {
        let tails: Vec<String> = self.members.iter().map(Shardd::log_tail).collect();
        format!("{}\n(logs in {})", tails.join("\n"), self.dir.path().display())
    }
}

/// The keyspace every test creates: shards s0 (`-80`) and s1 (`80-`).
fn users_keyspace() -> Value {
    json!({
        "name": "users",
        "keyspace": {
            "key_type": "u64",
            "tables": [{"name": "users", "key_columns": ["user_id"]}],
            "shards": [
                {"id": "s0", "primary": "postgres://app@db0/users"},
                {"id": "s1", "primary": "postgres://app@db1/users"}
            ],
            "partitioning": {"algorithm": "hash_range", "ranges": [
                {"range": "-80", "shard": "s0"},
                {"range": "80-", "shard": "s1"}
            ]}
        }
    })
}

fn unexpected(response: &shardkit_tests::HttpResponse) -> shardkit_tests::FixtureError {
    shardkit_tests::FixtureError::Usage(format!("answered {}: {}", response.status, response.body))
}

/// The requirement: SIGKILL of the leader; a standby leads within
/// the lease TTL (plus a margin), writes through every member succeed, the
/// data is intact, and the dead leader's fence is refused by the store.
#[test]
fn sigkill_of_the_leader_a_standby_takes_over_and_late_writes_are_rejected() {
    let mut fixture = Fixture::start(3, SHORT_TTL);
    let leader = fixture.wait_for_leader("a leader", None);
    let follower = (leader + 1) % fixture.members.len();
    let (status, body) = fixture.post(follower, "/v1/keyspaces", &users_keyspace());
    assert_eq!(status, 201, "creating users through a follower: {body}\n{}", fixture.logs());

    // One election: the store sees shardd's leader, and cannot lead beside it.
    let elected = fixture.store_leader();
    let old_id = fixture.members[leader].member_id.clone();
    let candidate: Value = serde_json::from_str(&elected.candidate).expect("shardd's election value is JSON");
    assert_eq!(candidate["member_id"], json!(old_id), "the store reports shardd's leader");
    assert!(elected.key.starts_with("leader/"), "{elected:?}");
    let intruder = fixture.retry(|| fixture.store.try_lead("intruder", SHORT_TTL)).expect("the store answers");
    assert!(intruder.is_none(), "try_lead must not win while shardd leads");
    // The dead leader's fence, and proof that it is the fence that wrote.
    let old_fence = elected.fence();
    let probe = json!({"written": "before the kill"});
    fixture
        .retry(|| fixture.store.put_document("probes", "before", &probe, Expect::Absent, &old_fence))
        .expect("the leader's fence writes while it leads");

    let killed = Instant::now();
    fixture.members[leader].kill();
    let new_leader = fixture.wait_for_leader("a standby to take over", Some(&old_id));
    let takeover = killed.elapsed();
    eprintln!(
        "sigkill: {} took over from {old_id} after {takeover:?} (lease ttl {SHORT_TTL:?})",
        fixture.members[new_leader].member_id
    );
    assert!(takeover <= SHORT_TTL + TAKEOVER_MARGIN, "takeover took {takeover:?}\n{}", fixture.logs());

    // The old leader's late writes are refused and change nothing.
    let users = KeyspaceName::new("users").expect("a name");
    let before = fixture.snapshot();
    let current = before.topology.keyspace("users").expect("users").clone();
    let mut changed = current.clone();
    changed.shards[1].weight += 1;
    let version = before.versions[&users];
    let doc = json!({"written": "after the takeover"});
    let late = [
        fixture.retry(|| fixture.store.put_keyspace(&users, &changed, Expect::Version(version), &old_fence)),
        fixture.retry(|| fixture.store.delete_keyspace(&users, Expect::Version(version), &old_fence)),
        fixture.retry(|| fixture.store.put_document("probes", "late", &doc, Expect::Any, &old_fence)),
    ];
    for result in late {
        assert!(matches!(result, Err(StoreError::Fenced { .. })), "a late write of the old leader: {result:?}");
    }
    let after = fixture.snapshot();
    assert_eq!(after.topology.keyspaces, before.topology.keyspaces, "the fenced writes changed nothing");
    assert_eq!(after.versions, before.versions);
    let late_doc = fixture.retry(|| fixture.store.get_document("probes", "late")).expect("the store answers");
    assert_eq!(late_doc, None);
    let next = fixture.store_leader();
    assert!(next.token > elected.token && next.key != elected.key, "a new election key: {next:?} after {elected:?}");
    assert_ne!(next.fence(), old_fence);

    // Writes through every surviving member succeed; the data is intact.
    let survivors: Vec<usize> = (0..fixture.members.len()).filter(|&i| i != leader).collect();
    for (n, &index) in survivors.iter().enumerate() {
        fixture.add_shard(index, &format!("s{}", n + 2));
    }
    fixture.assert_users_intact(&["s0", "s1", "s2", "s3"]);
}

/// SIGTERM: the leader resigns, so a standby leads at once, far sooner than
/// the lease TTL; the old leader exits cleanly and its fence is refused.
#[test]
fn sigterm_of_the_leader_hands_over_at_once() {
    // A long lease, so that a takeover by lease expiry cannot pass for one
    // by resignation.
    let ttl = Duration::from_secs(30);
    let mut fixture = Fixture::start(2, ttl);
    let leader = fixture.wait_for_leader("a leader", None);
    let (status, body) = fixture.post(leader, "/v1/keyspaces", &users_keyspace());
    assert_eq!(status, 201, "{body}");
    let elected = fixture.store_leader();
    let old_id = fixture.members[leader].member_id.clone();

    let signalled = Instant::now();
    let exit = fixture.members[leader].terminate();
    assert!(exit.success(), "{old_id} exits cleanly after SIGTERM: {exit}\n{}", fixture.logs());
    let new_leader = fixture.wait_for_leader("the standby to take over", Some(&old_id));
    let takeover = signalled.elapsed();
    eprintln!(
        "sigterm: {} took over from {old_id} after {takeover:?} (lease ttl {ttl:?})",
        fixture.members[new_leader].member_id
    );
    assert!(takeover < ttl / 2, "a resigned leader is replaced at once, not at lease expiry: {takeover:?}");

    let users = KeyspaceName::new("users").expect("a name");
    let keyspace = fixture.snapshot().topology.keyspace("users").expect("users").clone();
    let old_fence = elected.fence();
    let late = fixture.retry(|| fixture.store.put_keyspace(&users, &keyspace, Expect::Any, &old_fence));
    assert!(matches!(late, Err(StoreError::Fenced { .. })), "the resigned leader's fence: {late:?}");
    fixture.add_shard(new_leader, "s2");
    fixture.assert_users_intact(&["s0", "s1", "s2"]);
}

/// Each etcd member in turn is killed and restarted under a leader with a
/// short lease: the same leader keeps leading (same election key and fencing
/// token), writes go on, and nothing is lost.
#[test]
fn etcd_member_restarts_keep_the_leader_and_the_data() {
    let mut fixture = Fixture::start(2, SHORT_TTL);
    let leader = fixture.wait_for_leader("a leader", None);
    let follower = 1 - leader;
    let (status, body) = fixture.post(follower, "/v1/keyspaces", &users_keyspace());
    assert_eq!(status, 201, "{body}");
    let elected = fixture.store_leader();
    let mut shards = vec!["s0".to_owned(), "s1".to_owned()];

    for member in 0..3 {
        fixture.etcd.kill_member(member).expect("the etcd member is killed");
        fixture.etcd.restart_member(member).expect("the etcd member restarts");
        let same = fixture.wait_for_leader("a leader after an etcd member restart", None);
        assert_eq!(
            same,
            leader,
            "the leader kept leading through the restart of etcd member {member}\n{}",
            fixture.logs()
        );
        let now = fixture.store_leader();
        assert_eq!(
            (&now.key, now.token),
            (&elected.key, elected.token),
            "the same election key and token\n{}",
            fixture.logs()
        );
        let id = format!("s{}", shards.len());
        fixture.add_shard_retrying([leader, follower][member % 2], &id);
        shards.push(id);
    }
    let ids: Vec<&str> = shards.iter().map(String::as_str).collect();
    fixture.assert_users_intact(&ids);
    let (fence, probe) = (elected.fence(), json!({"written": "after the restarts"}));
    let fenced = fixture.retry(|| fixture.store.put_document("probes", "p", &probe, Expect::Any, &fence));
    assert!(fenced.is_ok(), "the leader's fence still writes: {fenced:?}");
}
