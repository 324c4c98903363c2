//! Every file of the fuzz targets' committed corpora, run through the same
//! checks `cargo fuzz` runs (fuzz/checks.rs), as an ordinary test: the
//! parsers' coverage stays in the test command without libFuzzer's nightly
//! sanitizer build. Fuzzing for time is `bash fuzz/run`.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

/// One fuzz target's check.
type Check = fn(&[u8]);

/// Runs `check` on every file in `fuzz/corpus/<target>`; returns how many.
fn run_corpus(target: &str, check: Check) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    for file in &files {
        let data = std::fs::read(file).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "fuzz target {target} fails on {}", file.display());
    }
    files.len()
}

#[test]
fn every_corpus_file_passes_its_fuzz_check() {
    let targets: [(&str, Check); 8] = [
        ("xml", checks::xml),
        ("notify", checks::notify),
        ("notify_v3", checks::notify_v3),
        ("json_bodies", checks::json_bodies),
        ("config", checks::config),
        ("csv", checks::csv),
        ("platform", checks::platform),
        ("bill", checks::bill),
    ];
    for (target, check) in targets {
        let ran = run_corpus(target, check);
        assert!(ran > 0, "fuzz/corpus/{target} is empty");
    }
}
