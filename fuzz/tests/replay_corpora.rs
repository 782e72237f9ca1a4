//! Replays every file of `fuzz/corpus/<target>/` through the target's checks,
//! and of `fuzz/regressions/<target>/` (inputs that once broke an invariant),
//! without libFuzzer, so the normal test run keeps what fuzzing found.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn replay(target: &str) {
    let check = fuzz_checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, check)| *check)
        .expect("a known target");
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let corpus = files(&fuzz.join("corpus").join(target));
    assert!(!corpus.is_empty(), "the {target} corpus is empty");
    // Inputs that once broke an invariant, kept whatever minimisation drops.
    let regressions = files(&fuzz.join("regressions").join(target));
    let mut failed = Vec::new();
    for file in corpus.iter().chain(&regressions) {
        let data = fs::read(file).expect("readable corpus file");
        if panic::catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} {target} inputs break an invariant: {failed:#?}",
        failed.len(),
        corpus.len() + regressions.len()
    );
}

/// The files of `dir`, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("readable directory").path())
        .collect();
    files.sort();
    files
}

#[test]
fn deframer_corpus_keeps_framing_invariants() {
    replay("deframer");
}

#[test]
fn query_corpus_keeps_admission_and_reply_invariants() {
    replay("query");
}

#[test]
fn answer_corpus_keeps_question_match_invariants() {
    replay("answer");
}

#[test]
fn truncate_corpus_keeps_udp_truncation_invariants() {
    replay("truncate");
}

#[test]
fn padding_corpus_keeps_padding_and_strip_invariants() {
    replay("padding");
}

#[test]
fn ini_corpus_keeps_reader_invariants() {
    replay("ini");
}

#[test]
fn admission_corpus_keeps_edge_invariants() {
    replay("admission");
}

#[test]
fn cache_corpus_keeps_kept_and_served_answer_invariants() {
    replay("cache");
}

#[test]
fn record_corpus_keeps_record_protection_invariants() {
    replay("record");
}

#[test]
fn packed_corpus_keeps_datagram_layout_invariants() {
    replay("packed");
}

/// The fuzz targets, the checks and the corpora name the same targets, so a
/// new target cannot go without its replay.
#[test]
fn every_fuzz_target_has_checks_and_a_corpus() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let stems = |dir: &str, ext: Option<&str>| {
        let mut names: Vec<String> = fs::read_dir(fuzz.join(dir))
            .expect("readable directory")
            .map(|entry| entry.expect("readable directory").path())
            .filter(|path| ext.is_none() || path.extension().and_then(|e| e.to_str()) == ext)
            .filter_map(|path| Some(path.file_stem()?.to_str()?.to_owned()))
            .collect();
        names.sort();
        names
    };
    let mut checks: Vec<String> = fuzz_checks::TARGETS
        .iter()
        .map(|(name, _)| (*name).to_owned())
        .collect();
    checks.sort();
    assert_eq!(stems("libfuzzer/fuzz_targets", Some("rs")), checks);
    assert_eq!(stems("corpus", None), checks);
    // One replay test per target, above.
    assert_eq!(checks.len(), 10);
}
