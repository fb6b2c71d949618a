//! The CLI's stdout, as the reader task frames and classifies it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| claude_code_sdk_fuzz::wire_lines(data));
