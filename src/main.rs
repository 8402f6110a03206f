//! grit: placeholder entry point while the crate is scaffolded.
#[allow(dead_code)] // the engine wires the capture in; until then only tests use it
mod capture;

fn main() {}
