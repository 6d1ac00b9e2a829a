//! Real PostgreSQL servers: `initdb` into a temporary directory, then the
//! `postgres` server on a free 127.0.0.1 port, with its Unix socket in that
//! directory too.
//!
//! The programs come from `$PG_BIN` (a directory) if set, else from the
//! directory of `initdb` on `$PATH`, else from the newest
//! `/usr/lib/postgresql/*/bin` (Debian's layout).
//!
//! # Root
//!
//! `initdb` and `postgres` refuse to run as root, and CI runs as root. When
//! this process's effective uid is 0, the fixture runs them as the OS user
//! `postgres` (the Debian packages create it): the temporary directory is
//! handed to that user with `chown`, and the processes are spawned with
//! [`CommandExt::uid`]/[`CommandExt::gid`] (which also drop root's
//! supplementary groups), so no `su`/`runuser` wrapper stands between the
//! fixture and the server process it signals. Otherwise they run as the
//! current user. Either way the database superuser is called `postgres`
//! and trusts every local connection, so DSNs carry no password. `psql`
//! runs as the current user: it does not mind root.

use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use rustix::process::Signal;
use tempfile::TempDir;

use crate::error::{FixtureError, Result};
use crate::ports::free_port;
use crate::process::{self, LOG_TAIL_LINES};
use crate::wait::{Step, poll, wait_until};

/// The database superuser the fixture creates.
pub const SUPERUSER: &str = "postgres";

/// The OS user that runs PostgreSQL when the tests run as root.
const OS_USER_WHEN_ROOT: &str = "postgres";

/// How many times a start is retried on a new port when the port was taken.
const PORT_ATTEMPTS: usize = 5;

/// How long `initdb` or a `psql` call may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a fast shutdown may take before the server is killed.
const STOP_GRACE: Duration = Duration::from_secs(60);

/// How long an immediate shutdown may take, when the fixture is dropped.
const DROP_GRACE: Duration = Duration::from_secs(10);

/// Settings for the PostgreSQL servers the fixtures start.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// More `postgresql.conf` settings as (name, value); they override the
    /// fixture's own. Values are written quoted, e.g. `("work_mem", "4MB")`.
    pub settings: Vec<(String, String)>,
    /// How long a start or restart may take until the server accepts
    /// connections.
    pub startup_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions { settings: Vec::new(), startup_timeout: Duration::from_secs(60) }
    }
}

/// The settings the fixture writes for every server: loopback only, enough
/// connections for pools in parallel tests, little memory, and no flushing
/// to disk. `fsync` and `full_page_writes` only protect against an
/// operating-system crash, which a test server never lives through; a
/// committed transaction still survives [`PostgresServer::kill`], as in
/// production. (`synchronous_commit` stays on: off, a kill loses the last
/// commits.)
const BASE_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "127.0.0.1"),
    ("max_connections", "200"),
    ("shared_buffers", "16MB"),
    ("fsync", "off"),
    ("full_page_writes", "off"),
    ("jit", "off"),
    ("timezone", "UTC"),
    ("log_timezone", "UTC"),
    ("log_line_prefix", "%m [%p] %q%u@%d "),
];

/// A running (or stopped) PostgreSQL server in a temporary directory.
///
/// Dropping it shuts the server down at once (like `pg_ctl stop -m
/// immediate`), waits for it, and removes the directory. The port and data
/// directory stay the same across [`stop`](Self::stop),
/// [`kill`](Self::kill) and [`restart`](Self::restart).
///
/// The fixtures are synchronous and block while a server starts; in a
/// `#[tokio::test]` that is harmless, or call them in `spawn_blocking`.
#[derive(Debug)]
pub struct PostgresServer {
    bin_dir: PathBuf,
    port: u16,
    /// (uid, gid) to run initdb and postgres as, when we are root.
    run_as: Option<(u32, u32)>,
    options: PostgresOptions,
    child: Option<Child>,
    // Last, so that it is removed after `Drop::drop` stopped the server.
    dir: TempDir,
}

impl PostgresServer {
    /// Initialises and starts a server with default [`PostgresOptions`], and
    /// waits until it accepts connections.
    pub fn start() -> Result<PostgresServer> {
        PostgresServer::start_with(&PostgresOptions::default())
    }

    /// Initialises and starts a server with the given options, and waits
    /// until it accepts connections.
    pub fn start_with(options: &PostgresOptions) -> Result<PostgresServer> {
        let bin_dir = pg_bin_dir()?;
        let run_as = if process::running_as_root() {
            let ids = process::user_id("-u", OS_USER_WHEN_ROOT).and_then(|uid| {
                let gid = process::user_id("-g", OS_USER_WHEN_ROOT)?;
                Ok((uid, gid))
            });
            Some(ids.map_err(|e| {
                FixtureError::Usage(format!(
                    "running as root, PostgreSQL must run as the OS user `{OS_USER_WHEN_ROOT}`, which could not \
                     be looked up (install Debian's postgresql package, which creates it): {e}"
                ))
            })?)
        } else {
            None
        };
        let dir = tempfile::Builder::new().prefix("shardkit-pg-").tempdir().map_err(|e| {
            FixtureError::io(format!("creating a temporary directory in {}", std::env::temp_dir().display()), e)
        })?;
        if let Some((uid, gid)) = run_as {
            check_reachable(dir.path(), uid, gid)?;
        }
        let mut server = PostgresServer { bin_dir, port: 0, run_as, options: options.clone(), child: None, dir };
        server.init()?;
        let mut attempt = 1;
        loop {
            server.port = free_port()?;
            server.spawn()?;
            match server.wait_ready() {
                Ok(()) => return Ok(server),
                Err(err) if err.is_address_in_use() && attempt < PORT_ATTEMPTS => {
                    attempt += 1;
                    if let Some(mut child) = server.child.take() {
                        process::kill_and_reap(&mut child, "postgres")?;
                    }
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Runs `initdb` and writes the settings.
    fn init(&mut self) -> Result<()> {
        let base = self.dir.path().to_owned();
        let socket_dir = self.socket_dir();
        fs::create_dir(&socket_dir)
            .map_err(|e| FixtureError::io(format!("creating the directory {}", socket_dir.display()), e))?;
        if let Some((uid, gid)) = self.run_as {
            for path in [&base, &socket_dir] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| {
                    FixtureError::io(format!("handing {} to the `{OS_USER_WHEN_ROOT}` user", path.display()), e)
                })?;
            }
        }
        let mut initdb = self.command("initdb");
        initdb.arg("--pgdata").arg(self.data_dir()).args([
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
        ]);
        process::run(&mut initdb, COMMAND_TIMEOUT)?;

        let mut conf = String::from("\n# Added by shardkit-tests.\n");
        let socket_dir = socket_dir.to_string_lossy();
        let fixture = BASE_SETTINGS.iter().copied().chain([("unix_socket_directories", socket_dir.as_ref())]);
        let user = self.options.settings.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        for (name, value) in fixture.chain(user) {
            conf.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
        }
        let conf_path = self.data_dir().join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .and_then(|mut file| file.write_all(conf.as_bytes()))
            .map_err(|e| FixtureError::io(format!("writing {}", conf_path.display()), e))
    }

    /// A command for program `name` from the bin directory, run as the
    /// PostgreSQL OS user, in the temporary directory, in the C locale.
    fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(name));
        cmd.current_dir(self.dir.path()).env("LC_ALL", "C").env("HOME", self.dir.path());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host to connect to: `127.0.0.1`.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// The superuser to connect as: [`SUPERUSER`]. It needs no password.
    pub fn user(&self) -> &str {
        SUPERUSER
    }

    /// A connection string for database `dbname`:
    /// `postgres://postgres@127.0.0.1:PORT/dbname`.
    pub fn dsn(&self, dbname: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{dbname}", self.port)
    }

    /// The directory holding `initdb`, `postgres` and `psql`.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// The file that receives the server's log, across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        process::log_tail(&self.log_path(), lines)
    }

    /// The postmaster's process id, while the fixture considers it running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the postmaster is running (it has not exited and was not stopped).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Runs `sql` in database `dbname` with `psql` and returns its output:
    /// rows one per line, columns separated by `|`, no headers, trailing
    /// whitespace trimmed. Stops at the first error and fails with psql's
    /// message and the server's log tail.
    ///
    /// The text is sent as one query string, so several statements run in
    /// one implicit transaction (and `CREATE DATABASE` must be sent alone).
    pub fn psql(&self, dbname: &str, sql: &str) -> Result<String> {
        let mut cmd = Command::new(self.bin_dir.join("psql"));
        // Take nothing from the caller's PG* variables (PGOPTIONS, PGSERVICE, …).
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("PG")) {
                cmd.env_remove(key);
            }
        }
        cmd.env("PGCONNECT_TIMEOUT", "10")
            .args(["--no-psqlrc", "--quiet", "--no-align", "--tuples-only", "--set", "ON_ERROR_STOP=1"])
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string(), "--username", SUPERUSER])
            .args(["--dbname", dbname, "--command", sql]);
        let out = process::run(&mut cmd, COMMAND_TIMEOUT).map_err(|e| self.fail(e))?;
        Ok(out.trim_end().to_owned())
    }

    /// Creates database `name`, which must be a plain identifier (letters,
    /// digits and `_`, not starting with a digit, at most 63 bytes).
    pub fn create_database(&self, name: &str) -> Result<()> {
        if !is_plain_identifier(name) {
            return Err(FixtureError::Usage(format!(
                "{name:?} is not a plain identifier (letters, digits, _, not starting with a digit, at most 63 bytes)"
            )));
        }
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\"")).map(drop)
    }

    /// Stops the server with a fast shutdown (SIGINT: clients are
    /// disconnected, a checkpoint is written), killing it if it has not
    /// exited within 60 s. Fails if it had already exited on its own.
    pub fn stop(&mut self) -> Result<()> {
        self.end(|child| process::terminate(child, Signal::INT, STOP_GRACE, "postgres").map(drop))
    }

    /// Crashes the server: SIGKILL to the postmaster and to every process it
    /// had started, as a power loss would; the next start runs crash
    /// recovery. Fails if it had already exited on its own.
    pub fn kill(&mut self) -> Result<()> {
        self.end(crash)
    }

    /// Starts the server again with the same port and data directory
    /// (stopping it first if it runs) and waits until it accepts connections.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.stop()?;
        }
        self.spawn()?;
        self.wait_ready()
    }

    fn end(&mut self, how: impl FnOnce(&mut Child) -> Result<()>) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Err(FixtureError::Usage(format!("{} is not running", self.describe())));
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Err(self.fail(FixtureError::Exited { what: "it was expected to be running".into(), status }));
        }
        how(&mut child).map_err(|e| self.fail(e))
    }

    fn spawn(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Err(FixtureError::Usage(format!("{} is already running", self.describe())));
        }
        let log = self.log_path();
        process::append_marker(&log, &format!("starting {}", self.describe()));
        let mut cmd = self.command("postgres");
        cmd.arg("-D").arg(self.data_dir()).arg("-p").arg(self.port.to_string());
        self.child = Some(process::spawn_logged(&mut cmd, &log).map_err(|e| self.fail(e))?);
        Ok(())
    }

    /// Waits until `postmaster.pid` says "ready", as `pg_ctl start -w` does.
    fn wait_ready(&mut self) -> Result<()> {
        let what = format!("{} to accept connections", self.describe());
        let pid_file = self.data_dir().join("postmaster.pid");
        let Some(child) = self.child.as_mut() else {
            return Err(FixtureError::Usage(format!("{what}: not running")));
        };
        let pid = child.id().to_string();
        poll(self.options.startup_timeout, &what, || {
            match child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    return Step::Abort(FixtureError::Exited { what: "waiting for it to start".into(), status });
                }
                Err(e) => return Step::Abort(FixtureError::io("checking the postgres process", e)),
            }
            let Ok(text) = fs::read_to_string(&pid_file) else {
                return Step::Retry(Some("no postmaster.pid yet".into()));
            };
            let lines: Vec<&str> = text.lines().collect();
            match (lines.first(), lines.get(7).map(|status| status.trim())) {
                (Some(&first), Some("ready")) if first == pid => Step::Done(()),
                (_, status) => Step::Retry(Some(format!("postmaster.pid status {status:?}"))),
            }
        })
        .map_err(|e| self.fail(e))
    }

    fn describe(&self) -> String {
        format!("postgres on 127.0.0.1:{} in {}", self.port, self.dir.path().display())
    }

    /// Wraps `cause` with the server's log tail.
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

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Immediate shutdown (SIGQUIT): the postmaster ends its children
            // and exits without a checkpoint.
            let exited = process::terminate_no_kill(&mut child, Signal::QUIT, DROP_GRACE);
            if !exited {
                let _ = crash(&mut child);
            }
        }
    }
}

/// SIGKILLs the postmaster `child` and all its children, reaps the
/// postmaster and waits until the children are gone.
fn crash(child: &mut Child) -> Result<()> {
    let postmaster = child.id();
    // Freeze the postmaster first, so that it starts no new children between
    // listing them and killing it.
    let _ = process::send_signal(postmaster, Signal::STOP);
    let children = process::children_of(postmaster);
    process::kill_and_reap(child, "postgres")?;
    for &pid in &children {
        let _ = process::send_signal(pid, Signal::KILL);
    }
    wait_until(
        Duration::from_secs(60),
        &format!("the processes {children:?} of postmaster {postmaster} to exit"),
        || !children.iter().any(|&pid| process::is_alive(pid)),
    )
}

/// Fails, saying what to do, unless the user `uid` (group `gid`) may enter
/// every directory above `dir`: PostgreSQL, run as that user, must reach its
/// data directory.
fn check_reachable(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    for ancestor in dir.ancestors().skip(1) {
        let meta = fs::metadata(ancestor)
            .map_err(|e| FixtureError::io(format!("reading the permissions of {}", ancestor.display()), e))?;
        let bit = if meta.uid() == uid {
            0o100
        } else if meta.gid() == gid {
            0o010
        } else {
            0o001
        };
        if meta.mode() & bit == 0 {
            return Err(FixtureError::Usage(format!(
                "PostgreSQL runs as the OS user `{OS_USER_WHEN_ROOT}` because the tests run as root, and that user \
                 cannot enter {}; point TMPDIR at a directory it can reach, such as /tmp",
                ancestor.display()
            )));
        }
    }
    Ok(())
}

/// Whether `name` is safe to use as an unquoted-looking SQL identifier.
fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The directory with PostgreSQL's programs: `$PG_BIN`, else that of
/// `initdb` on `$PATH`, else the newest `/usr/lib/postgresql/*/bin`.
pub fn pg_bin_dir() -> Result<PathBuf> {
    const PROGRAMS: [&str; 3] = ["initdb", "postgres", "psql"];
    let complete = |dir: &Path| PROGRAMS.iter().all(|p| process::is_executable(&dir.join(p)));
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        return if complete(&dir) {
            Ok(dir)
        } else {
            Err(FixtureError::ProgramNotFound {
                program: PROGRAMS.join(", "),
                searched: format!("PG_BIN={}", dir.display()),
                hint: "PG_BIN must name a directory holding initdb, postgres and psql".into(),
            })
        };
    }
    // Debian links only some programs onto $PATH: follow initdb's link to
    // the directory that has them all.
    let from_path = process::find_in_path("initdb")
        .and_then(|initdb| fs::canonicalize(initdb).ok())
        .and_then(|initdb| initdb.parent().map(Path::to_owned))
        .filter(|dir| complete(dir));
    if let Some(dir) = from_path {
        return Ok(dir);
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = parse_version(entry.file_name().to_str()?)?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| complete(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir).ok_or_else(|| FixtureError::ProgramNotFound {
        program: PROGRAMS.join(", "),
        searched: "$PG_BIN (unset), initdb on $PATH, /usr/lib/postgresql/*/bin".into(),
        hint: "install Debian's postgresql package (scripts/test.sh does) or set PG_BIN".into(),
    })
}

/// "15" → [15], "9.6" → [9, 6]; None for anything else.
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_identifiers() {
        for ok in ["shard_0", "_x", "S1", &"a".repeat(63)] {
            assert!(is_plain_identifier(ok), "{ok}");
        }
        for bad in ["", "0shard", "a-b", "a\"b", "a b", "é", &"a".repeat(64)] {
            assert!(!is_plain_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn unreachable_directories_are_reported() {
        use std::os::unix::fs::PermissionsExt;
        let outer = tempfile::tempdir().unwrap();
        let inner = outer.path().join("inner");
        fs::create_dir(&inner).unwrap();
        // A user that owns nothing here and is in no group that does.
        let (uid, gid) = (u32::MAX - 1, u32::MAX - 1);
        fs::set_permissions(outer.path(), fs::Permissions::from_mode(0o711)).unwrap();
        check_reachable(&inner, uid, gid).unwrap();
        fs::set_permissions(outer.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let err = check_reachable(&inner, uid, gid).unwrap_err().to_string();
        assert!(err.contains("cannot enter") && err.contains("TMPDIR"), "{err}");
    }

    #[test]
    fn versions_sort_numerically() {
        let mut versions = ["9.6", "15", "10"].map(|v| parse_version(v).unwrap());
        versions.sort();
        assert_eq!(versions.last().unwrap(), &vec![15]);
        assert_eq!(parse_version("15beta"), None);
    }
}
