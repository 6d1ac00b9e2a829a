//! Online range moves: the jobs that move, split and merge ranges while
//! services keep reading and writing.
//!
//! ```text
//!  API ── create (checks + precheck) ──► job document in the store (`jobs`)
//!                                             │
//!  leader: manager ── runs ≤ max_jobs ──► runner: phase by phase, state saved
//!                                             │   after each step
//!                                             ▼
//!                         engine: capture · copy · replay · verify · fence
//!                                 · cleanup, in the shard databases
//! ```
//!
//! - [`job`]: the job document (also the API's view).
//! - [`create`]: request → job, with every check that can be made before
//!   anything changes.
//! - [`manager`]: runs jobs while this process leads, resumes a previous
//!   leader's jobs, passes cancel requests on.
//! - [`runner`]: one job's state machine.
//! - [`engine`]: the SQL side, for PostgreSQL and SQLite.
//!
//! docs/MIGRATION.md describes the protocol and why no write is lost,
//! duplicated or left on the wrong shard.

pub mod create;
pub mod engine;
pub mod failpoint;
pub mod job;
pub mod manager;
pub mod runner;

pub use create::{CreateError, JobRequest};
pub use job::{Job, JobKind, Phase, Status};
pub use manager::{CancelError, Mover};
