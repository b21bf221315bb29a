//! `auth.anonymous-read` lets a request through without credentials only when its target is
//! a registry read spelled exactly as the registry API spells it. For any target: one that
//! is let through is already in the one spelling the route table uses (no escape, no `//`,
//! no dot segment), starts with `/v2/`, and is never the login probe `/v2/`; only GET and
//! HEAD are let through; and `auth.methods` lets through exactly the standard methods,
//! spelled exactly, that it does not list.

#![no_main]

use berth_core::path::route_path;
use berth_core::route::{registry_read, OpenAccess, METHODS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, &str)| {
    let (m, target) = input;
    let methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get", "MKCOL"];
    let method = methods[usize::from(m) % methods.len()];
    let open = OpenAccess::RegistryReads;
    if open.lets_through(method, target) {
        assert!(method == "GET" || method == "HEAD", "{method} {target:?}");
        assert!(registry_read(target));
    }
    if registry_read(target) {
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        assert!(path.starts_with("/v2/") && path != "/v2/", "{target:?}");
        assert_eq!(route_path(path), path, "{target:?} is not in its routed spelling");
        assert!(!path.contains('%') && !path.contains("//"), "{target:?}");
        assert!(!path.split('/').any(|s| s == "." || s == ".."), "{target:?}");
    }
    // Fails closed: only a standard method, spelled exactly, that is not listed.
    let listed = OpenAccess::MethodsOtherThan(vec!["POST".into(), "DELETE".into()]);
    assert_eq!(
        listed.lets_through(method, target),
        METHODS.contains(&method) && method != "POST" && method != "DELETE",
        "{method}"
    );
});
