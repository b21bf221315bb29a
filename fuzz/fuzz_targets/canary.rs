//! Crashes on purpose on any input that starts with `crash`: `scripts/fuzz` runs it first
//! with such an input and requires the run to fail, proving that a crash in a real target
//! would fail the test command too. It is never run as a target of its own.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert!(
        !data.starts_with(b"crash"),
        "the canary crashes on this input, as it must"
    );
});
