//! The `shardd` binary: configuration, logging, then [`shardd::run`] until
//! SIGTERM or SIGINT. Exit codes: 0 after a clean shutdown, 2 for a bad
//! configuration (or an invalid stored topology), 1 for other failures.

use std::process::ExitCode;

use shardd::{Config, ConfigError};

fn main() -> ExitCode {
    let config = match Config::load() {
        Ok(config) => config,
        Err(ConfigError::Cli(error)) => error.exit(),
        Err(error) => {
            eprintln!("shardd: {error}");
            return ExitCode::from(2);
        }
    };
    if config.check_config {
        print!("{}", config.to_redacted_toml());
        return ExitCode::SUCCESS;
    }
    if let Err(error) = shardd::logging::init(&config.log) {
        eprintln!("shardd: {error}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("shardd: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(shardd::run(config, shardd::shutdown::signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "shardd failed");
            eprintln!("shardd: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
