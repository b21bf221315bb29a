//! Which certificate names may answer an SNI name, against a model written from RFC 6125: a
//! wildcard stands for exactly one whole, non-empty leftmost label.
#![no_main]

use arbitrary::Arbitrary;
use berth_proxy::tls::store::covers;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    sans: Vec<String>,
    name: String,
}

fn model(san: &str, name: &str) -> bool {
    match san.strip_prefix("*.") {
        Some(base) => {
            let labels: Vec<&str> = name.split('.').collect();
            labels.len() >= 2 && !labels[0].is_empty() && labels[1..].join(".") == base
        }
        None => san == name,
    }
}

fuzz_target!(|input: Input| {
    let expected = input.sans.iter().any(|san| model(san, &input.name));
    assert_eq!(covers(&input.sans, &input.name), expected, "{input:?}");
});
