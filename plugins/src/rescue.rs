//! One mapping from an error to what the client sees: a status and a short fixed body.
//! Error text from inside berth or the upstream is logged, never sent to the client.

use http::StatusCode;
use pingora_error::{Error, ErrorSource, ErrorType};

use crate::plugin::Reply;

/// The reply for an error that ended a request, or `None` when the client is gone (its
/// connection failed) and nothing can be sent.
pub fn rescue(error: &Error) -> Option<Reply> {
    use ErrorType::*;
    let (status, detail) = match (error.esource(), error.etype()) {
        (_, HTTPStatus(code)) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, status.canonical_reason().unwrap_or("error"))
        }
        (ErrorSource::Upstream, ConnectTimedout) => (
            StatusCode::GATEWAY_TIMEOUT,
            "the upstream did not accept a connection in time",
        ),
        (ErrorSource::Upstream, ReadTimedout | WriteTimedout) => (
            StatusCode::GATEWAY_TIMEOUT,
            "the upstream stayed silent longer than the route's timeout",
        ),
        (ErrorSource::Upstream, _) => (StatusCode::BAD_GATEWAY, "the upstream is unavailable"),
        (ErrorSource::Downstream, ReadTimedout) => (
            StatusCode::REQUEST_TIMEOUT,
            "the client stayed silent longer than the route's timeout",
        ),
        (ErrorSource::Downstream, ReadError | WriteError | ConnectionClosed | WriteTimedout) => {
            return None
        }
        (ErrorSource::Downstream, _) => (StatusCode::BAD_REQUEST, "malformed request"),
        (ErrorSource::Internal | ErrorSource::Unset, _) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    };
    Some(Reply::text(status, detail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorType::*;

    #[test]
    fn errors_map_to_one_status_each() {
        let up = ErrorSource::Upstream;
        let down = ErrorSource::Downstream;
        let cases = [
            (HTTPStatus(413), up.clone(), Some(413)),
            (ConnectTimedout, up.clone(), Some(504)),
            (ReadTimedout, up.clone(), Some(504)),
            (ConnectRefused, up.clone(), Some(502)),
            (ConnectionClosed, up.clone(), Some(502)),
            (ReadTimedout, down.clone(), Some(408)),
            (ConnectionClosed, down.clone(), None),
            (InvalidHTTPHeader, down.clone(), Some(400)),
            (InternalError, ErrorSource::Internal, Some(500)),
        ];
        for (etype, source, expected) in cases {
            let e = Error::create(etype.clone(), source.clone(), None, None);
            let got = rescue(&e).map(|r| r.status.as_u16());
            assert_eq!(got, expected, "{etype:?} from {source:?}");
        }
    }

    #[test]
    fn upstream_detail_never_reaches_the_client() {
        let e = Error::explain(ConnectRefused, "secret internal address 10.9.8.7");
        let mut e = *e;
        e.esource = ErrorSource::Upstream;
        let reply = rescue(&e).expect("reply");
        assert!(!String::from_utf8_lossy(&reply.body).contains("10.9.8.7"));
    }
}
