#![no_main]

#[path = "../../agent/tests/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::check("webconfig", data));
