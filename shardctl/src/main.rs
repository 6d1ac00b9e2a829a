//! `shardctl`: the operator's command-line tool. See `shardctl --help`.
//!
//! `main` only parses arguments, runs the command and turns its outcome into
//! an exit code: 0 success, 1 a negative answer, 2 an error, 130 when Ctrl-C
//! stops the waiting for a job. A closed output pipe (`shardctl route … |
//! head`) ends the program quietly with 0.

mod cli;
mod client;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse_from(cli::with_ranges_readable(std::env::args_os()));
    match commands::run(cli) {
        Ok(outcome) => outcome.exit_code(),
        Err(err) if output::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
