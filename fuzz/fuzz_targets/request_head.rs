//! The request-head gate that runs before Pingora: a head is complete at one place only,
//! and no prefix of it counts as complete.
#![no_main]

use berth_proxy::connections::{parse_head, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|buf: &[u8]| {
    if let Parsed::Complete(n) = parse_head(buf) {
        assert!(n <= buf.len());
        assert_eq!(parse_head(&buf[..n]), Parsed::Complete(n));
        for k in [0, n / 2, n.saturating_sub(1)] {
            if k < n {
                assert!(
                    !matches!(parse_head(&buf[..k]), Parsed::Complete(_)),
                    "{k} {n}"
                );
            }
        }
    }
});
