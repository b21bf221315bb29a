//! Config files, durations and sizes: never a panic, and every error names where it is.
#![no_main]

use arbitrary::Arbitrary;
use berth_core::config::parse_config;
use berth_core::config::units::{parse_duration, parse_size};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    value: String,
    /// Either a whole file, or a route table built around `value`.
    file: Option<String>,
    key: u8,
}

const KEYS: [&str; 12] = [
    "read-timeout",
    "connect-timeout",
    "max-body",
    "hsts",
    "https",
    "path",
    "host",
    "allow",
    "auth.htpasswd",
    "auth.forward",
    "auth.forward-cache",
    "rate-limit",
];

fuzz_target!(|input: Input| {
    if let Ok(d) = parse_duration(&input.value) {
        let _ = d.as_secs();
    }
    let _ = parse_size(&input.value);
    let text = input.file.unwrap_or_else(|| {
        format!(
            "[listen]\nhttp = \"127.0.0.1:8080\"\n[[route]]\nhost = \"a.test\"\nupstreams = [\"127.0.0.1:1\"]\n{} = {:?}\n",
            KEYS[input.key as usize % KEYS.len()],
            input.value
        )
    });
    if let Err(errors) = parse_config(&text) {
        assert!(!errors.0.is_empty());
        for e in errors.0 {
            assert!(!e.message.is_empty());
        }
    }
});
