//! The invariants the fuzz targets in `fuzz/libfuzzer/` check, one module per target.
//!
//! Each `check` takes the raw fuzzer input, runs the code under test on it and
//! panics (an `assert!`) when an invariant is broken. The libFuzzer targets
//! call them, and so does `tests/replay_corpora.rs`, which runs every file of
//! `fuzz/corpus/<target>/` through them in the normal test run, without
//! libFuzzer. Where a property compares the core's lazy parsing with a full
//! parser, the reference is hickory-proto (an independent implementation), or
//! a small model written here.
//!
//! Inputs are bytes; a target that needs parameters (a limit, a block size,
//! split points) reads them from the first bytes, as its module says.

#![forbid(unsafe_code)]

pub mod admission;
pub mod answer;
pub mod cache;
pub mod deframer;
pub mod ini;
pub mod packed;
pub mod padding;
pub mod query;
pub mod record;
pub mod truncate;
mod wire;

/// A target's check: runs the code under test on one input, panics if an
/// invariant does not hold.
pub type Check = fn(&[u8]);

/// Every target: its name (the fuzz target and its corpus directory) and its
/// check.
pub const TARGETS: &[(&str, Check)] = &[
    ("deframer", deframer::check),
    ("query", query::check),
    ("answer", answer::check),
    ("truncate", truncate::check),
    ("padding", padding::check),
    ("ini", ini::check),
    ("admission", admission::check),
    ("cache", cache::check),
    ("record", record::check),
    ("packed", packed::check),
];
