//! htpasswd files and `Authorization: Basic` headers: never a panic, errors never quote a
//! hash, and credentials survive an encode/decode round trip.
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine;
use berth_plugins::builtin::{parse_basic, parse_htpasswd};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    file: String,
    header: Vec<u8>,
    user: String,
    password: Vec<u8>,
    secret: [u8; 16],
}

fuzz_target!(|input: Input| {
    // A line whose hash is bad and unmistakable: no error may repeat it.
    let secret: String = input.secret.iter().map(|b| format!("{b:02x}")).collect();
    let file = format!("{}\nsomeone:$2y$05${secret}\n", input.file);
    match parse_htpasswd(&file) {
        Ok(_) => panic!("a 41-character hash passed as bcrypt"),
        Err(errors) => {
            for e in errors {
                assert!(e.starts_with("line "), "{e}");
                // (Unless the fuzzer wrote the same digits elsewhere in the file, say as a
                // user name, which errors do name.)
                assert!(!e.contains(&secret) || input.file.contains(&secret), "{e}");
            }
        }
    }
    if let Ok(users) = parse_htpasswd(&input.file) {
        assert!(users.len() <= input.file.lines().count());
    }
    let _ = parse_basic(&input.header);
    if !input.user.contains(':') {
        let mut raw = input.user.clone().into_bytes();
        raw.push(b':');
        raw.extend_from_slice(&input.password);
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(&raw)
        );
        let (user, password) = parse_basic(header.as_bytes()).expect("round trip");
        assert_eq!(user, input.user);
        assert_eq!(password, input.password);
    }
});
