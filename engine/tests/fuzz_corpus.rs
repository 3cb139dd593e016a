//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`: the seeds
//! and every input the fuzzers kept or crashed on) through the same entry
//! point the fuzz targets call, on stable Rust, with the normal tests. A
//! crash the fuzzers found stays fixed once its input is in the corpus.

use qala_engine::fuzzing::{TARGETS, limits, run};
use std::path::Path;
use std::sync::Mutex;

/// Panics raised in our own code while replaying, as the fuzz targets'
/// hook (`abort_on_own_panics`) sees them: the engine contains every panic,
/// so only a hook can tell a bug of ours from a contained foreign one.
static OWN_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[test]
fn every_corpus_input_walks_without_a_panic_of_ours() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let max_objects = limits().max_objects;
    let mut total = 0;
    std::panic::set_hook(Box::new(|info| {
        if info.location().is_some_and(|l| !l.file().contains("/.cargo/registry/")) {
            OWN_PANICS.lock().unwrap().push(info.to_string());
        }
    }));
    for (target, _) in TARGETS {
        let dir = corpus.join(target);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (every fuzz target needs seeds)", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{target}: empty corpus");
        for input in &inputs {
            let data = std::fs::read(input).unwrap();
            let report = std::panic::catch_unwind(|| run(target, &data))
                .unwrap_or_else(|_| panic!("{}: a panic escaped the engine", input.display()))
                .expect("known target");
            assert!(report.objects_scanned <= max_objects, "{}: {report:?}", input.display());
            assert_eq!(report.size, data.len() as u64);
            let own = std::mem::take(&mut *OWN_PANICS.lock().unwrap());
            assert!(own.is_empty(), "{}: panicked in our code (contained): {own:?}", input.display());
        }
        total += inputs.len();
    }
    // Nothing in the corpus belongs to a target that no longer exists.
    for entry in std::fs::read_dir(&corpus).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(TARGETS.iter().any(|(t, _)| *t == name), "fuzz/corpus/{name} matches no target");
    }
    eprintln!("replayed {total} corpus inputs over {} targets", TARGETS.len());
}
