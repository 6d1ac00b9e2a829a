//! Helpers of the whole-system programs `src/bin/propagation.rs` and
//! `src/bin/scale.rs`: command-line flags, percentiles, the process's
//! memory as the kernel reports it, a temporary directory, and a
//! description of the machine for the report.
//!
//! These programs measure shardlib end to end against a real etcd (started
//! with `shardkit-tests`' fixture); they print Markdown tables, not
//! criterion reports, because what they measure (a write reaching a hundred
//! processes' routers, a million ranges loaded from etcd) is one event of
//! a whole system, not a function called in a loop.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Command-line flags `--name value`, `--name=value` and bare `--name`,
/// taken one by one by the program; [`Flags::finish`] rejects leftovers.
#[derive(Debug)]
pub struct Flags {
    values: BTreeMap<String, Option<String>>,
}

/// A command line that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagError(pub String);

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FlagError {}

impl Flags {
    /// Parses `args` (without the program name). A flag followed by an
    /// argument that is not itself a flag takes it as its value.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Flags, FlagError> {
        let mut values = BTreeMap::new();
        let mut args = args.into_iter().peekable();
        while let Some(arg) = args.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                return Err(FlagError(format!("unexpected argument {arg:?}")));
            };
            let (name, value) = match flag.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => {
                    let value = args.next_if(|next| !next.starts_with("--"));
                    (flag.to_owned(), value)
                }
            };
            if values.insert(name.clone(), value).is_some() {
                return Err(FlagError(format!("--{name} given twice")));
            }
        }
        Ok(Flags { values })
    }

    /// Whether the bare flag `--name` was given (and takes it).
    pub fn switch(&mut self, name: &str) -> Result<bool, FlagError> {
        match self.values.remove(name) {
            None => Ok(false),
            Some(None) => Ok(true),
            Some(Some(value)) => Err(FlagError(format!("--{name} takes no value, got {value:?}"))),
        }
    }

    /// The value of `--name`, if given.
    pub fn text(&mut self, name: &str) -> Result<Option<String>, FlagError> {
        match self.values.remove(name) {
            None => Ok(None),
            Some(Some(value)) => Ok(Some(value)),
            Some(None) => Err(FlagError(format!("--{name} needs a value"))),
        }
    }

    /// The value of `--name` parsed as a `T`, else `default`.
    pub fn value<T: FromStr>(&mut self, name: &str, default: T) -> Result<T, FlagError>
    where
        T::Err: fmt::Display,
    {
        match self.text(name)? {
            None => Ok(default),
            Some(text) => text.parse().map_err(|e| FlagError(format!("--{name} {text:?}: {e}"))),
        }
    }

    /// Fails if a flag was given that the program did not take.
    pub fn finish(self) -> Result<(), FlagError> {
        match self.values.keys().next() {
            None => Ok(()),
            Some(name) => Err(FlagError(format!("unknown flag --{name}"))),
        }
    }
}

/// `later - earlier` in milliseconds, negative when `later` is earlier.
pub fn signed_ms(later: Instant, earlier: Instant) -> f64 {
    match later.checked_duration_since(earlier) {
        Some(d) => d.as_secs_f64() * 1e3,
        None => -(earlier.duration_since(later).as_secs_f64() * 1e3),
    }
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Percentiles of a sample (nearest rank: the p-th percentile is the
/// smallest value with at least p % of the sample at or below it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// The number of values.
    pub count: usize,
    /// The smallest value.
    pub min: f64,
    /// The median.
    pub p50: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The largest value.
    pub max: f64,
}

impl Summary {
    /// Summarizes `values` (sorted in place); `None` when empty.
    pub fn of(values: &mut [f64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        Some(Summary {
            count: values.len(),
            min: values[0],
            p50: percentile(values, 50.0),
            p99: percentile(values, 99.0),
            max: values[values.len() - 1],
        })
    }
}

/// The nearest-rank `p`-th percentile of sorted, non-empty `values`.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of `values` (the lower middle value for an even count);
/// `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len().saturating_sub(1) / 2).copied()
}

/// This process's memory as `/proc/self/status` reports it, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the most ever resident (the peak so far).
    pub hwm_kib: u64,
}

impl Memory {
    /// Reads `/proc/self/status`; `None` where it does not exist (not Linux).
    pub fn now() -> Option<Memory> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let field = |name: &str| {
            let line = status.lines().find(|l| l.starts_with(name))?;
            line[name.len()..].trim().trim_end_matches("kB").trim().parse::<u64>().ok()
        };
        Some(Memory { rss_kib: field("VmRSS:")?, hwm_kib: field("VmHWM:")? })
    }
}

/// CPU time (user + system, all threads) used so far by the process `pid`
/// (`None`: this process), from `/proc/<pid>/stat`. Counted in clock ticks
/// of 10 ms (Linux's `USER_HZ` is 100 everywhere it matters), so only long
/// intervals are meaningful.
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces: count fields after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The load averages over 1, 5 and 15 minutes, from `/proc/loadavg`.
pub fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// KiB as MiB, for tables.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A directory removed (with its content) when dropped.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh directory `<tmp>/<prefix><pid>-<n>`.
    pub fn new(prefix: &str) -> std::io::Result<TempDir> {
        let base = std::env::temp_dir();
        for n in 0..1000 {
            let path = base.join(format!("{prefix}{}-{n}", std::process::id()));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other("no free temporary directory name"))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// One line describing the machine: CPUs, CPU model, kernel, rustc.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_owned();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let rustc = Command::new("rustc")
        .arg("-V")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "rustc unknown".to_owned());
    format!("{cpus} CPUs ({model}), Linux {}, {rustc}", kernel.trim())
}

/// The shard ids `s000`, `s001`, … of the whole-system programs.
pub fn shard_ids(shards: u32) -> Result<Vec<shardlib::ShardId>, shardlib::id::InvalidName> {
    (0..shards).map(|i| shardlib::ShardId::new(format!("s{i:03}"))).collect()
}

/// A `hash_range` keyspace of `ranges` equal ranges over `shards` shards
/// ([`shard_ids`]), range `i` on shard `i % shards`.
pub fn uniform_keyspace(ranges: u32, shards: u32) -> Result<shardlib::topology::Keyspace, shardlib::id::InvalidName> {
    use shardlib::topology::{Dsn, Keyspace, Labels, Partitioning, RangeAssignment, RangeState, Shard, ShardState};
    let ids = shard_ids(shards)?;
    let shards = ids
        .iter()
        .map(|id| Shard {
            id: id.clone(),
            primary: Dsn::new(format!("postgres://app@{id}.db.invalid:5432/users")),
            replicas: Vec::new(),
            labels: Labels::default(),
            weight: 1,
            capacity_bytes: None,
            state: ShardState::Serving,
        })
        .collect();
    let ranges = shardlib::KeyRange::uniform(ranges)
        .into_iter()
        .enumerate()
        .map(|(i, range)| RangeAssignment { range, shard: ids[i % ids.len()].clone(), state: RangeState::Serving })
        .collect();
    Ok(Keyspace {
        seed: 0,
        key_type: Default::default(),
        tables: Vec::new(),
        shards,
        partitioning: Partitioning::HashRange { ranges },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(line: &str) -> Result<Flags, FlagError> {
        Flags::parse(line.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn flags_take_values_switches_and_reject_leftovers() {
        let mut f = flags("--watchers 10 --burst --ranges=64").unwrap();
        assert_eq!(f.value("watchers", 100usize).unwrap(), 10);
        assert_eq!(f.value("writes", 200usize).unwrap(), 200);
        assert_eq!(f.value("ranges", 0u32).unwrap(), 64);
        assert!(f.switch("burst").unwrap());
        f.finish().unwrap();
        let mut f = flags("--watchers x --extra").unwrap();
        assert!(f.value("watchers", 1usize).is_err());
        assert_eq!(f.finish().unwrap_err().0, "unknown flag --extra");
        assert!(flags("stray").is_err());
        assert!(flags("--a 1 --a 2").is_err());
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut values: Vec<f64> = (1..=200).rev().map(f64::from).collect();
        let s = Summary::of(&mut values).unwrap();
        assert_eq!((s.count, s.min, s.p50, s.p99, s.max), (200, 1.0, 100.0, 198.0, 200.0));
        assert_eq!(Summary::of(&mut []), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn signed_milliseconds_go_both_ways() {
        let a = Instant::now();
        let b = a + Duration::from_millis(3);
        assert!((signed_ms(b, a) - 3.0).abs() < 1e-9);
        assert!((signed_ms(a, b) + 3.0).abs() < 1e-9);
    }

    #[test]
    fn proc_files_are_read() {
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(cpu_time(None).is_some());
            assert!(load_average().is_some_and(|l| l.split(' ').count() == 3));
            let memory = Memory::now().unwrap();
            assert!(memory.hwm_kib >= memory.rss_kib && memory.rss_kib > 0);
        }
    }
}
