//! Property tests: the parser never panics, errors are always located, and [`glob_match`]
//! agrees with SQLite's GLOB.
