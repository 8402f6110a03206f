//! grit: placeholder entry point while the crate is scaffolded.
#![allow(dead_code, unused_imports)]
mod sandbox;

fn main() {}
