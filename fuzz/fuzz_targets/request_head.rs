//! The request-head gate that runs before Pingora, against Pingora's own HTTP/1 parser on the
//! same bytes followed by the end of the connection: where the gate says "complete", Pingora
//! does not ask for more bytes (it parses the head, or refuses what the head says); where the
//! gate says "needs more", Pingora asks for more too; where the gate says "invalid", Pingora
//! refuses the bytes too. A head the gate handed over while Pingora still wanted bytes would
//! be read by Pingora alone, outside berth's header timeout and size limit (the hole of a
//! request line Pingora repairs by escaping); a head the gate refused while Pingora accepts it
//! would be a needless 400.
#![no_main]

use std::io::Cursor;

use berth_proxy::connections::{parse_head, Parsed};
use libfuzzer_sys::fuzz_target;
use pingora_core::protocols::http::v1::server::HttpSession;
use pingora_error::ErrorType;

/// What Pingora makes of `buf` followed by the end of the connection.
#[derive(Debug, PartialEq)]
enum Pingora {
    /// A whole head was parsed and accepted.
    Head,
    /// The connection ended before the head did.
    NeedsMore,
    /// Refused: not a head, or a head whose content Pingora does not accept.
    Refused,
}

fn pingora(buf: &[u8], runtime: &tokio::runtime::Runtime) -> Pingora {
    let mut session = HttpSession::new(Box::new(Cursor::new(buf.to_vec())));
    match runtime.block_on(session.read_request()) {
        Ok(Some(_)) => Pingora::Head,
        Ok(None) => Pingora::NeedsMore,
        Err(e) if e.etype() == &ErrorType::ConnectionClosed => Pingora::NeedsMore,
        Err(_) => Pingora::Refused,
    }
}

fuzz_target!(|buf: &[u8]| {
    if buf.is_empty() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let gate = parse_head(buf);
    let theirs = pingora(buf, &runtime);
    let agrees = matches!(
        (&gate, &theirs),
        (Parsed::Complete(_), Pingora::Head | Pingora::Refused)
            | (Parsed::Partial, Pingora::NeedsMore)
            | (Parsed::Invalid, Pingora::Refused)
    );
    assert!(
        agrees,
        "gate {gate:?}, Pingora {theirs:?}: {:?}",
        String::from_utf8_lossy(buf)
    );
    if let Parsed::Complete(n) = gate {
        // Complete at one place only: the head alone is complete, one byte less is not.
        assert!(n <= buf.len(), "{n} > {}", buf.len());
        assert_eq!(parse_head(&buf[..n]), Parsed::Complete(n));
        assert!(
            !matches!(parse_head(&buf[..n - 1]), Parsed::Complete(_)),
            "a prefix of a complete head is complete too"
        );
    }
});
