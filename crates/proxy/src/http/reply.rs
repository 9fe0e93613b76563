//! The responses the proxy makes itself (Envoy's local replies): their
//! response flags for telemetry, and their gRPC form for gRPC callers.

use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::body::Body;

pub(super) const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Envoy's response flags of a local reply (`NR`, `UH`, `UF`, ...), carried
/// in the response's extensions to the metrics.
#[derive(Debug, Clone, Copy)]
pub struct ResponseFlags(pub &'static str);

/// `resp` marked with Envoy's response flags `flags`.
pub fn flagged(mut resp: Response<Body>, flags: &'static str) -> Response<Body> {
    resp.extensions_mut().insert(ResponseFlags(flags));
    resp
}

/// Marks a response the proxy made itself ([`local_reply`]).
#[derive(Debug, Clone, Copy)]
struct LocalReply;

/// A local reply: `status`, a `text/plain` body when not empty.
pub fn local_reply(status: u16, body: &str) -> Response<Body> {
    let mut resp = Response::new(Body::full(body.to_string()));
    resp.extensions_mut().insert(LocalReply);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if !body.is_empty() {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    resp
}

/// An error the proxy answers to a gRPC request, as Envoy answers it: a
/// trailers-only response, `200` with `content-type: application/grpc`,
/// `grpc-status` from the HTTP status (gRPC's mapping: 400 INTERNAL, 401
/// UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 UNIMPLEMENTED, 429/502/503/504
/// UNAVAILABLE, others UNKNOWN) and the reply's text as `grpc-message`
/// (percent-encoded). Upstream answers and local replies below 400 pass as
/// they are.
pub(super) fn grpc_local_reply(resp: Response<Body>) -> Response<Body> {
    let status = resp.status().as_u16();
    if status < 400 || resp.extensions().get::<LocalReply>().is_none() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let code: u16 = match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    };
    parts.status = StatusCode::OK;
    let headers = &mut parts.headers;
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(GRPC_STATUS, HeaderValue::from(code));
    if let Body::Full(Some(text)) = &body
        && !text.is_empty()
        && let Ok(v) = HeaderValue::from_str(&grpc_message(text))
    {
        headers.insert(GRPC_MESSAGE, v);
    }
    headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::Empty)
}

/// gRPC's `grpc-message` encoding: bytes outside printable ASCII, and `%`,
/// percent-encoded.
fn grpc_message(text: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use hyper::body::Body as _;

    use super::*;

    #[test]
    fn grpc_errors_become_trailers_only_answers() {
        let timeout = grpc_local_reply(flagged(local_reply(504, "upstream request timeout"), "UT"));
        assert_eq!(timeout.status(), StatusCode::OK);
        let h = timeout.headers();
        assert_eq!(h[header::CONTENT_TYPE], "application/grpc");
        assert_eq!(h[GRPC_STATUS], "14");
        assert_eq!(h[GRPC_MESSAGE], "upstream request timeout");
        assert!(timeout.body().is_end_stream());
        assert!(timeout.extensions().get::<ResponseFlags>().is_some());
        for (status, code) in [
            (400, "13"),
            (401, "16"),
            (403, "7"),
            (404, "12"),
            (503, "14"),
            (500, "2"),
        ] {
            let r = grpc_local_reply(local_reply(status, ""));
            assert_eq!(r.headers()[GRPC_STATUS], code, "{status}");
            assert!(
                r.headers().get(GRPC_MESSAGE).is_none(),
                "no text, no message"
            );
        }
        // What the upstream answered, and local replies that are not
        // errors, pass as they are.
        let mut upstream = Response::new(Body::Empty);
        *upstream.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(grpc_local_reply(upstream).status(), 503);
        assert_eq!(grpc_local_reply(local_reply(301, "")).status(), 301);
        assert_eq!(
            grpc_message("50% ünïcode\n".as_bytes()),
            "50%25 %C3%BCn%C3%AFcode%0A"
        );
    }
}
