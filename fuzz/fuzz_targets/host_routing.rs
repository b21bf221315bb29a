//! Host patterns, `Host` header parsing and route lookup against a plain model: whatever
//! route the table picks must match the host and cover the path, and when it picks none, no
//! route may match both.
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use berth_plugins::route::HostPattern;
use berth_plugins::routing::host_of;
use berth_plugins::table::{Routable, RouteTable};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    routes: Vec<(String, String)>,
    authority: String,
    path: String,
}

struct R {
    host: HostPattern,
    path: String,
}

impl Routable for R {
    fn host(&self) -> &HostPattern {
        &self.host
    }
    fn path(&self) -> &str {
        &self.path
    }
}

fuzz_target!(|input: Input| {
    let Some(host) = host_of(&input.authority) else {
        return;
    };
    assert_eq!(host, host.to_ascii_lowercase(), "{:?}", input.authority);
    assert!(!host.is_empty() && !host.ends_with('.'), "{host:?}");
    let routes: Vec<Arc<R>> = input
        .routes
        .iter()
        .take(16)
        .filter(|(pattern, _)| pattern.len() <= 64)
        .filter_map(|(pattern, path)| {
            let host = HostPattern::parse(pattern).ok()?;
            let path = format!("/{}", path.trim_start_matches('/'));
            Some(Arc::new(R { host, path }))
        })
        .collect();
    let table = RouteTable::new(routes.iter().cloned());
    let covers = |r: &R| r.host.matches(&host) && input.path.starts_with(&r.path);
    match table.lookup(&host, &input.path) {
        Some(r) => assert!(
            covers(r),
            "{host:?} {:?} took {}{}",
            input.path,
            r.host,
            r.path
        ),
        None => assert!(
            routes.iter().all(|r| !covers(r)),
            "{host:?} {:?} found no route",
            input.path
        ),
    }
});
