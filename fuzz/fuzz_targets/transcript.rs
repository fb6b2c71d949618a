//! A session transcript file, as the sessions API lists and reads it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| claude_code_sdk_fuzz::transcript(data));
