//! Finding programs, running helper commands with a deadline, and managing
//! server processes: spawning with a log file, signalling, reaping.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;

use rustix::process::{Pid, Signal};

use crate::error::{FixtureError, Result};
use crate::wait::{Step, poll};

/// How many log lines an error shows.
pub(crate) const LOG_TAIL_LINES: usize = 40;

/// Whether `path` is a file that someone may execute.
pub(crate) fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first executable `name` in the directories of `$PATH`.
pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| is_executable(candidate))
}

/// The last `lines` lines of the file at `path` (at most its last 64 KiB),
/// or a note saying why it could not be read.
pub fn log_tail(path: &Path, lines: usize) -> String {
    const MAX_BYTES: u64 = 64 * 1024;
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) if text.trim().is_empty() => "(the log is empty)\n".to_owned(),
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let mut tail = all[all.len().saturating_sub(lines)..].join("\n");
            tail.push('\n');
            tail
        }
        Err(err) => format!("(could not read the log: {err})\n"),
    }
}

/// A command line as text, for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `cmd` to completion with its output captured, killing it if it runs
/// longer than `timeout`. Fails unless it exits successfully.
pub(crate) fn run(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let command = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| FixtureError::io(format!("starting `{command}`"), e))?;
    // Read both pipes on their own threads so that a chatty child never
    // blocks on a full pipe while we wait for it.
    let stdout = child.stdout.take().map(read_all_in_background);
    let stderr = child.stderr.take().map(read_all_in_background);
    let waited = wait_for_exit(&mut child, timeout, &command);
    let outcome = match waited {
        Ok(status) if status.success() => None,
        Ok(status) => Some(format!("exited with {status}")),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Some(format!("did not finish within {timeout:?} and was killed"))
        }
    };
    let stdout = stdout.map(|h| h.join().unwrap_or_default()).unwrap_or_default();
    let stderr = stderr.map(|h| h.join().unwrap_or_default()).unwrap_or_default();
    match outcome {
        None => Ok(stdout),
        Some(outcome) => Err(FixtureError::CommandFailed { command, outcome, stdout, stderr }),
    }
}

fn read_all_in_background(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Starts `cmd` as a server: standard input closed, standard output and
/// error appended to the file at `log`.
pub(crate) fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Child> {
    let open = || OpenOptions::new().create(true).append(true).open(log);
    let stdout = open().map_err(|e| FixtureError::io(format!("opening the log file {}", log.display()), e))?;
    let stderr = stdout.try_clone().map_err(|e| FixtureError::io("duplicating the log file handle", e))?;
    cmd.stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|e| FixtureError::io(format!("starting `{}`", describe(cmd)), e))
}

/// Sends `signal` to the process `pid`.
pub(crate) fn send_signal(pid: u32, signal: Signal) -> Result<()> {
    let raw = i32::try_from(pid).ok().and_then(Pid::from_raw);
    let pid = raw.ok_or_else(|| FixtureError::Usage(format!("{pid} is not a valid process id")))?;
    rustix::process::kill_process(pid, signal)
        .map_err(|e| FixtureError::io(format!("sending {signal:?} to process {pid:?}"), e.into()))
}

/// Waits at most `timeout` for `child` to exit, and reaps it.
pub(crate) fn wait_for_exit(child: &mut Child, timeout: Duration, what: &str) -> Result<ExitStatus> {
    poll(timeout, &format!("{what} (pid {}) to exit", child.id()), || match child.try_wait() {
        Ok(Some(status)) => Step::Done(status),
        Ok(None) => Step::Retry(None),
        Err(e) => Step::Abort(FixtureError::io("waiting for a child process", e)),
    })
}

/// Sends `signal` to `child` and waits up to `grace` for it to exit; then
/// kills it with SIGKILL and reaps it. Returns whether it exited within the
/// grace period.
pub(crate) fn terminate(child: &mut Child, signal: Signal, grace: Duration, what: &str) -> Result<bool> {
    if terminate_no_kill(child, signal, grace) {
        return Ok(true);
    }
    kill_and_reap(child, what)?;
    Ok(false)
}

/// Sends `signal` to `child` unless it has exited, and waits up to `grace`
/// for it to exit. Returns whether it has exited (and was reaped).
pub(crate) fn terminate_no_kill(child: &mut Child, signal: Signal, grace: Duration) -> bool {
    match child.try_wait() {
        Ok(Some(_)) => return true,
        Ok(None) => {}
        Err(_) => return false,
    }
    // The process may exit between the check and the signal: ignore ESRCH.
    let _ = send_signal(child.id(), signal);
    wait_for_exit(child, grace, "a process").is_ok()
}

/// Writes a line into a server's log, so that restarts are easy to spot.
pub(crate) fn append_marker(log: &Path, text: &str) {
    if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(log) {
        let _ = writeln!(file, "=== shardkit-tests: {text} ===");
    }
}

/// Kills `child` with SIGKILL and reaps it.
pub(crate) fn kill_and_reap(child: &mut Child, what: &str) -> Result<()> {
    match child.kill() {
        Ok(()) => {}
        // Already exited (and perhaps reaped): nothing to kill.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {}
        Err(e) => return Err(FixtureError::io(format!("killing {what}"), e)),
    }
    // SIGKILL cannot be caught: the kernel ends the process promptly.
    wait_for_exit(child, Duration::from_secs(60), what).map(drop)
}

/// The ids of the live processes whose parent is `parent`, from `/proc`.
pub(crate) fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| proc_stat(pid).is_some_and(|(state, ppid)| ppid == parent && state != 'Z'))
        .collect()
}

/// Whether the process `pid` exists and is not a zombie.
pub(crate) fn is_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// The state letter and parent id of process `pid`, from `/proc/PID/stat`.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses "PID (COMM) STATE PPID ..." where COMM may hold spaces and parentheses.
fn parse_stat(stat: &str) -> Option<(char, u32)> {
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Runs `id ARG USER` and parses the number it prints.
pub(crate) fn user_id(flag: &str, user: &str) -> Result<u32> {
    let out = run(Command::new("id").args([OsStr::new(flag), OsStr::new(user)]), Duration::from_secs(30))?;
    out.trim().parse().map_err(|_| FixtureError::Usage(format!("`id {flag} {user}` printed {out:?}, not a number")))
}

/// Whether this process runs with effective user id 0.
pub(crate) fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_awkward_names() {
        assert_eq!(parse_stat("42 (postgres: a (b) c) S 7 42 42 0"), Some(('S', 7)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn finds_our_own_children() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        assert!(children_of(std::process::id()).contains(&child.id()));
        assert!(is_alive(child.id()));
        kill_and_reap(&mut child, "sleep").unwrap();
        assert!(!is_alive(child.id()));
    }

    #[test]
    fn run_reports_failures_with_output() {
        let err = run(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]), Duration::from_secs(30))
            .unwrap_err()
            .to_string();
        assert!(err.contains("exited with exit status: 3"), "{err}");
        assert!(err.contains("--- stdout ---\nout") && err.contains("--- stderr ---\nerr"), "{err}");
    }

    #[test]
    fn run_kills_commands_that_overrun() {
        let err = run(Command::new("sleep").arg("30"), Duration::from_millis(100)).unwrap_err().to_string();
        assert!(err.contains("did not finish within"), "{err}");
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        fs::write(&path, (1..=100).map(|i| format!("line {i}\n")).collect::<String>()).unwrap();
        assert_eq!(log_tail(&path, 2), "line 99\nline 100\n");
        assert!(log_tail(&dir.path().join("missing"), 2).starts_with("(could not read the log"));
    }
}
