//! Reading the layers: defaults < file < environment < flags.
//!
//! clap gives flags, environment and defaults, and tells for each argument
//! where its value came from. The file is parsed on its own first (so that
//! its errors carry line numbers), then every value that came from a flag or
//! a variable is written over it, by key path: the argument id of the file
//! key `etcd.endpoints` is `etcd_endpoints`.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use super::{Config, ConfigError, Secret};

/// The defaults alone (clap's default values, environment ignored).
pub(super) fn defaults() -> Config {
    let command = Config::command().mut_args(|arg| arg.env(None));
    let matches = command.get_matches_from(["shardd"]);
    Config::from_arg_matches(&matches).expect("the defaults parse")
}

pub(super) fn load<I, T>(args: I) -> Result<Config, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = Config::command().try_get_matches_from(args)?;
    let cli = Config::from_arg_matches(&matches)?;
    let Some(path) = cli.config_file.clone() else {
        return Ok(cli);
    };
    let file_error = |message: String| ConfigError::File { path: path.clone(), message };
    let text = std::fs::read_to_string(&path).map_err(|e| file_error(e.to_string()))?;
    // The file alone, over the defaults: errors name the key, line and column.
    let from_file: Config = toml::from_str(&text).map_err(|e| file_error(e.to_string().trim_end().to_owned()))?;

    let mut merged = toml::Table::try_from(&from_file).map_err(|e| file_error(e.to_string()))?;
    let given = toml::Table::try_from(&cli).map_err(|e| file_error(e.to_string()))?;
    let known: HashSet<String> = Config::command().get_arguments().map(|a| a.get_id().to_string()).collect();
    overlay(&mut merged, given, "", &matches, &known);
    let mut config: Config = merged.try_into().map_err(|e: toml::de::Error| file_error(e.to_string()))?;
    config.config_file = cli.config_file;
    config.check_config = cli.check_config;
    Ok(config)
}

/// Writes every value of `given` that the user set with a flag or a
/// variable over `base`.
fn overlay(base: &mut toml::Table, given: toml::Table, prefix: &str, matches: &ArgMatches, known: &HashSet<String>) {
    for (key, value) in given {
        let id = if prefix.is_empty() { key.clone() } else { format!("{prefix}_{key}") };
        if let (Some(toml::Value::Table(section)), toml::Value::Table(inner)) = (base.get_mut(&key), &value) {
            overlay(section, inner.clone(), &id, matches, known);
            continue;
        }
        let set_by_user = known.contains(&id)
            && matches!(matches.value_source(&id), Some(ValueSource::CommandLine | ValueSource::EnvVariable));
        if set_by_user {
            base.insert(key, value);
        }
    }
}

/// `--flag, SHARDD_VARIABLE` for a file key such as `etcd.dial_timeout`.
pub(super) fn flag_and_env(key: &str) -> String {
    let flag = key.replace(['.', '_'], "-");
    let env = key.replace('.', "_").to_ascii_uppercase();
    format!("--{flag}, SHARDD_{env}")
}

/// A secret given directly or in a file (not both: validation refuses that).
pub(super) fn secret(
    value: Option<&Secret>,
    file: Option<&Path>,
    file_key: &'static str,
) -> Result<Option<Secret>, ConfigError> {
    if let Some(value) = value {
        return Ok(Some(value.clone()));
    }
    let Some(path) = file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::invalid(file_key, format!("cannot read {}: {e}", path.display())))?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ConfigError::invalid(file_key, format!("{} is empty", path.display())));
    }
    Ok(Some(Secret::new(trimmed)))
}

/// This machine's host name, or `localhost` if it cannot be read.
pub(super) fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .chain(std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
