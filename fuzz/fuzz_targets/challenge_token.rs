//! ACME challenge paths: only `/.well-known/acme-challenge/<base64url token>` is ever
//! answered from the challenge directory, and nothing outside it is ever read; with a
//! thumbprint (stateless answers), a token without a file is answered `<token>.<thumbprint>`
//! and nothing else.
#![no_main]

use std::sync::OnceLock;

use berth_core::contract::{valid_token, ChallengeDir, CHALLENGE_PREFIX};
use berth_plugins::builtin::{AcmeChallenge, SharedThumbprint};
use libfuzzer_sys::fuzz_target;

const TOKEN: &str = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
const THUMBPRINT: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

struct Setup {
    _dir: std::path::PathBuf,
    challenge: AcmeChallenge,
    stateless: AcmeChallenge,
    rt: tokio::runtime::Runtime,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("berth-fuzz-challenge-{}", std::process::id()));
        let tokens = dir.join(".well-known/acme-challenge");
        std::fs::create_dir_all(&tokens).expect("dir");
        std::fs::write(tokens.join(TOKEN), "key-authorization").expect("token");
        std::fs::write(dir.join("secret"), "never served").expect("secret");
        std::fs::write(dir.join(".well-known/secret"), "never served").expect("secret");
        Setup {
            challenge: AcmeChallenge::new(ChallengeDir::new(&dir), SharedThumbprint::default()),
            stateless: AcmeChallenge::new(
                ChallengeDir::new(&dir),
                std::sync::Arc::new(arc_swap::ArcSwapOption::from_pointee(
                    THUMBPRINT.to_string(),
                )),
            ),
            _dir: dir,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        }
    })
}

fuzz_target!(|path: &str| {
    if valid_token(path) {
        assert!(path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert!(!path.is_empty() && path.len() <= 256);
    }
    let s = setup();
    let reply = s.rt.block_on(s.challenge.answer(path));
    match reply {
        None => assert!(!path.starts_with(CHALLENGE_PREFIX)),
        Some(r) if r.status == 200 => {
            assert_eq!(path, format!("{CHALLENGE_PREFIX}{TOKEN}"));
            assert_eq!(&r.body[..], b"key-authorization");
        }
        Some(r) => {
            assert_eq!(r.status, 404);
            assert!(!r.body.windows(5).any(|w| w == b"never"));
        }
    }
    match s.rt.block_on(s.stateless.answer(path)) {
        None => assert!(!path.starts_with(CHALLENGE_PREFIX)),
        Some(r) if r.status == 200 => {
            let token = &path[CHALLENGE_PREFIX.len()..];
            assert!(valid_token(token), "{path:?}");
            let want = if token == TOKEN {
                "key-authorization".to_string()
            } else {
                format!("{token}.{THUMBPRINT}")
            };
            assert_eq!(&r.body[..], want.as_bytes());
        }
        Some(r) => {
            assert_eq!(r.status, 404);
            assert!(!valid_token(&path[CHALLENGE_PREFIX.len()..]));
        }
    }
});
