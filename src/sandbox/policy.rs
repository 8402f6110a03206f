//! The sandbox policy of one step. The manifest module owns the type (step keys over
//! `[pipeline]` defaults); the sandbox consumes it as plain data.

pub use crate::manifest::{Policy, SandboxMode};
