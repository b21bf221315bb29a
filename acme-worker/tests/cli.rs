//! `berth-acme --help` says what the worker does, with examples; `--version` prints it.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn berth_acme(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_berth-acme"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn help_says_what_berth_acme_does_with_examples_and_version_prints_it() {
    let help = berth_acme(&["--help"]);
    for needle in [
        "obtains and renews the certificates berth serves",
        "LETSENCRYPT_HOST",
        "tls.certs-dir",
        "Examples:",
        "berth-acme --config /etc/berth/berth.toml once",
        "docs/certificates.md",
    ] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
    assert!(help.lines().count() <= 40, "more than a screen:\n{help}");
    assert!(berth_acme(&["once", "--help"]).contains("then exit"));
    assert_eq!(
        berth_acme(&["--version"]).trim(),
        format!("berth-acme {}", env!("CARGO_PKG_VERSION"))
    );
}
