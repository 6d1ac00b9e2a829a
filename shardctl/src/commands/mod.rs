//! One module per subcommand; [`run`] dispatches.

mod route;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// How a command ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The command did what was asked (exit code 0).
    Success,
    /// The command ran, and the answer to its question is "no" (exit code 1).
    #[allow(dead_code)] // used by `status`-style commands
    Negative,
}

impl Outcome {
    /// The process exit code for this outcome.
    pub fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Success => ExitCode::SUCCESS,
            Outcome::Negative => ExitCode::from(1),
        }
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Route(args) => route::run(&args, cli.output),
    }
}
