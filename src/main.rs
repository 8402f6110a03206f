//! grit: placeholder entry point while the crate is scaffolded.
fn main() {}
