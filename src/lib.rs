//! grit runs data pipelines made of shell scripts: sandboxed, content-addressed, incremental.
//!
//! The crate is a library with thin clients (DESIGN §3): the `grit` binary (`src/main.rs`) only
//! parses the command line and maps the outcome to an exit code; everything else lives here, so
//! that other clients (a server, a cluster executor) drive the same engine over the same store.
//!
//! # Layout
//!
//! The modules follow the data flow, in one direction:
//! manifest → store → engine → executor (sandbox + capture) → store, and reporting subscribes to
//! the engine's events.
//!
//! - [`manifest`]: the TOML model, its dialects, validation with line:column errors, and the
//!   version hash of each step (what makes a task's result reusable).
//! - [`store`]: SQLite (schema, migrations, one writer thread), the content-addressed objects,
//!   staging, the lock, liveness, gc and the read models. Everything durable lives here, and so
//!   does [`store::decide`], the one rule of which tasks a run executes and why, which both the
//!   engine's scheduling and the dry-run plan follow.
//! - [`engine`]: the dataflow scheduler of one run: pulls pending tasks from the store, hands them
//!   to the executor, publishes their outputs in one transaction each, and lets gather steps see
//!   complete sets. It emits [`engine::events::Event`]s and never prints, exits or handles signals;
//!   a run is stopped from outside through a cancellation token.
//! - [`executor`]: the [`executor::Executor`] trait the engine runs every task through (given in
//!   its inputs), and [`executor::process::ProcessExecutor`], which runs a task's script as a
//!   process on this machine, sandboxed or not. A cluster executor or a test's fake plugs in here.
//! - [`sandbox`]: the per-task sandbox (namespaces, landlock, capabilities, rlimits): the policy as
//!   plain data, the mount plan, and the zygote that forks tasks, owned by a [`sandbox::Sandbox`]
//!   (one per process executor; nothing of it is global).
//! - [`cancel`]: the [`CancelToken`] that stops a run from outside (the engine stops the run, the
//!   executor its tasks).
//! - [`capture`]: turns what a script wrote into `OUTPUT_DIR` into hashed, staged files (FUSE, or
//!   a plain directory).
//! - [`launch`]: the set-up of one run on an open store (warnings, output capture, engine inputs),
//!   shared by `grit run` and `grit serve`.
//! - [`serve`]: `grit serve`, a long-running service: its config, the auth of its HTTP API, the
//!   wait list of runs (in each pipeline's store), one worker thread per pipeline that drives the
//!   engine, and the API handlers. Clients (`grit trigger`, `grit runs`) speak HTTP to it.
//! - [`report`]: logging, progress, the run summary and other human and JSON output. It only
//!   subscribes to engine events; it never drives the engine.
//! - [`memory`]: the allocator settings the `grit` binary applies to itself before anything runs.
//! - [`cli`]: the command line (clap), including GRIT's `-manifest x -db y -run` spelling.
//! - [`commands`]: one file per subcommand, gluing the above together, and [`commands::exit`], the
//!   mapping from outcomes and errors to exit codes: 0 ok, 1 a task failed, 2 usage or manifest
//!   error, 3 store locked, 4 store damaged, 5 environment error, 130/143 interrupted.

pub mod cancel;
pub mod capture;
pub mod cli;
pub mod commands;
pub mod engine;
pub mod executor;
pub mod image;
pub mod launch;
pub mod manifest;
pub mod memory;
pub mod report;
pub mod sandbox;
pub mod serve;
pub mod store;

// The embedding API in one place: start a run with `engine::run` (its tasks run on the
// `Executor` given in `RunInputs`, e.g. a `ProcessExecutor`), watch it through an `Observer`,
// stop it with a `CancelToken`, read the outcome from the `RunReport`.
pub use engine::events::{Event, Observer};
pub use engine::{CancelReason, CancelToken, RunInputs, RunOptions, RunReport};
pub use executor::Executor;
pub use executor::process::ProcessExecutor;
