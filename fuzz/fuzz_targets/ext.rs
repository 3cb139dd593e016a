#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    qala_engine::fuzzing::abort_on_own_panics();
    qala_engine::fuzzing::run("ext", data);
});
