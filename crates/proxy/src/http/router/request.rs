//! The upstream request: what the router makes of the downstream request
//! before any attempt (hop-by-hop headers out; Envoy's `x-forwarded-*`,
//! `x-request-id`, trace and timeout headers in; the route's header
//! mutations, path and host rewrites), and the template each attempt's
//! request is built from.

use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Uri, Version};

use super::super::{ConnInfo, apply, millis};
use crate::body::Body;
use crate::cluster::{Cluster, UpstreamProtocol};
use crate::listener::Hcm;
use crate::route::{HostRewrite, RetryPolicy, Selected};

/// Hop-by-hop headers never forwarded (names, not strings: no parsing per
/// request).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
];

// Header names set or read on every request: constants, not strings parsed
// per request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
const X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-expected-rq-timeout-ms");

/// What the router (`forward_to`) makes of a request before sending it.
pub(super) struct Prepared<'s> {
    pub(super) template: Template,
    pub(super) body: Body,
    pub(super) timeout: Option<Duration>,
    pub(super) retry: Option<&'s RetryPolicy>,
    pub(super) per_try: Option<Duration>,
    pub(super) mirrors: Vec<&'s crate::route::Mirror>,
    pub(super) upgrade: bool,
    pub(super) downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
}

const XFCC: &str = "x-forwarded-client-cert";

/// `x-forwarded-client-cert` as the connection manager's
/// `forward_client_cert_details` says: removed, forwarded, or with this mTLS
/// connection's element (`By=…;Hash=…;Subject="…";URI=…;DNS=…`, Envoy's order)
/// appended or set.
fn forward_client_cert(headers: &mut http::HeaderMap, hcm: &Hcm, conn: &ConnInfo) {
    use crate::listener::XfccMode;
    let mtls = conn.tls && conn.peer_cert.is_some();
    let element = || {
        let cert = conn.peer_cert.as_ref()?;
        let mut parts = Vec::new();
        if let Some(by) = &conn.local_identity {
            parts.push(format!("By={by}"));
        }
        parts.push(format!("Hash={}", cert.hash));
        if hcm.xfcc.subject {
            parts.push(format!("Subject=\"{}\"", cert.subject.replace('"', "\\\"")));
        }
        if hcm.xfcc.uri
            && let Some(uri) = cert.uris.first()
        {
            parts.push(format!("URI={uri}"));
        }
        if hcm.xfcc.dns {
            parts.extend(cert.dns.iter().map(|d| format!("DNS={d}")));
        }
        http::HeaderValue::from_str(&parts.join(";")).ok()
    };
    match hcm.xfcc.mode {
        XfccMode::AlwaysForwardOnly => {}
        XfccMode::ForwardOnly if mtls => {}
        XfccMode::AppendForward if mtls => {
            if let Some(element) = element() {
                let joined = match headers.get(XFCC).and_then(|v| v.to_str().ok()) {
                    Some(existing) if !existing.is_empty() => http::HeaderValue::from_str(
                        &format!("{existing},{}", element.to_str().unwrap_or_default()),
                    )
                    .ok(),
                    _ => Some(element),
                };
                if let Some(v) = joined {
                    headers.insert(XFCC, v);
                }
            }
        }
        XfccMode::SanitizeSet if mtls => {
            headers.remove(XFCC);
            if let Some(element) = element() {
                headers.insert(XFCC, element);
            }
        }
        _ => {
            headers.remove(XFCC);
        }
    }
}

/// The upstream request's template from `req` and the route: hop-by-hop
/// headers out, Envoy's `x-forwarded-*`, `x-request-id`, trace and timeout
/// headers in, the route's header mutations, path and host rewrites.
pub(super) fn prepare<'s>(
    mut req: Request<Body>,
    selected: &Selected<'s>,
    new_path: Option<String>,
    hcm: &Hcm,
    conn: &ConnInfo,
    cluster: &Cluster,
) -> Prepared<'s> {
    let forward = selected.forward;
    let upgrade = hcm.websocket && is_websocket(req.headers());
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();

    // Headers.
    // HTTP/2 has no connection-specific headers (its codec refuses them).
    if parts.version != Version::HTTP_2 {
        strip_hop_by_hop(&mut parts.headers, upgrade);
    }
    if hcm.use_remote_address {
        // The edge: the peer's address joins `x-forwarded-for` and is the
        // external address (Envoy's use_remote_address).
        let ip = conn.peer.ip().to_string();
        let xff = match parts
            .headers
            .get(&X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
        {
            Some(existing) if !existing.is_empty() => format!("{existing}, {ip}"),
            _ => ip.clone(),
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            parts.headers.insert(X_FORWARDED_FOR, v);
        }
        if let Ok(v) = HeaderValue::from_str(&ip) {
            parts.headers.insert("x-envoy-external-address", v);
        }
    }
    forward_client_cert(&mut parts.headers, hcm, conn);
    if !parts.headers.contains_key(&X_FORWARDED_PROTO) {
        parts
            .headers
            .insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if hcm.generate_request_id
        && !parts.headers.contains_key(&X_REQUEST_ID)
        && let Ok(v) = HeaderValue::from_bytes(&request_id())
    {
        parts.headers.insert(X_REQUEST_ID, v);
    }
    // Continue the caller's trace (B3 and W3C), as a child span; with
    // `tracing`, the connection manager already did (W3C only).
    if hcm.tracing.is_none() {
        crate::telemetry::propagate_trace(&mut parts.headers, false, || fastrand::u64(..));
    }
    let mut timeout = selected.timeout();
    if let Some(max) = forward.and_then(|f| f.grpc_timeout_header_max)
        && let Some(t) = parts.headers.get(&GRPC_TIMEOUT).and_then(grpc_timeout)
    {
        timeout = Some(if max.is_zero() { t } else { t.min(max) });
    }
    let retry = selected.retry;
    let per_try = retry.and_then(|r| r.per_try_timeout);
    if let Some(t) = per_try.or(timeout) {
        parts
            .headers
            .insert(X_ENVOY_EXPECTED_RQ_TIMEOUT_MS, HeaderValue::from(millis(t)));
    }
    for op in &selected.header_ops {
        apply(&mut parts.headers, &op.request_remove, &op.request_add);
    }
    // The authority changes only on a rewrite; otherwise the Host header (or
    // HTTP/2's :authority) goes up as it came.
    let rewritten_host = match forward.map(|f| &f.host_rewrite) {
        Some(HostRewrite::Literal(h)) => Some(h.clone()),
        _ => None,
    };
    let path = match new_path {
        Some(p) => p.parse().unwrap_or_else(|_| PathAndQuery::from_static("/")),
        None => parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    };
    let http2 = match cluster.protocol {
        UpstreamProtocol::Http1 => false,
        UpstreamProtocol::Http2 => true,
        UpstreamProtocol::Downstream => parts.version == Version::HTTP_2,
    } && !upgrade;

    let mirrors: Vec<&crate::route::Mirror> = forward
        .map(|f| {
            f.mirrors
                .iter()
                .filter(|m| m.fraction.is_none_or(|fr| fr.hits(fastrand::u64(..))))
                .collect()
        })
        .unwrap_or_default();
    let authority = match rewritten_host {
        Some(h) => Some(h),
        // No Host header (an HTTP/2 request) or an HTTP/2 upstream: name it.
        None if http2 || !parts.headers.contains_key(header::HOST) => {
            Some(super::super::authority_of(&parts))
        }
        None => None,
    };
    Prepared {
        template: Template {
            method: parts.method,
            path,
            authority,
            headers: parts.headers,
            http2,
        },
        body,
        timeout,
        retry,
        per_try,
        mirrors,
        upgrade,
        downstream_upgrade,
    }
}

fn is_websocket(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

pub(super) fn strip_hop_by_hop(headers: &mut http::HeaderMap, upgrade: bool) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        if !(upgrade && n == header::UPGRADE) {
            headers.remove(n);
        }
    }
    for h in &HOP_BY_HOP {
        if upgrade && (h == header::UPGRADE || h == header::CONNECTION) {
            continue;
        }
        if h == header::TE
            && headers
                .get(header::TE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"))
        {
            continue;
        }
        headers.remove(h);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// A fresh `x-request-id` (a random UUID v4), written without the
/// formatting machinery: `{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}`.
fn request_id() -> [u8; 36] {
    fn hex(dst: &mut [u8], mut v: u64) {
        for d in dst.iter_mut().rev() {
            *d = b"0123456789abcdef"[(v & 0xf) as usize];
            v >>= 4;
        }
    }
    let a = fastrand::u64(..);
    let b = fastrand::u64(..);
    let mut id = [b'-'; 36];
    hex(&mut id[0..8], a >> 32);
    hex(&mut id[9..13], (a >> 16) & 0xffff);
    id[14] = b'4';
    hex(&mut id[15..18], a & 0x0fff);
    hex(&mut id[19..23], ((b >> 48) & 0x3fff) | 0x8000);
    hex(&mut id[24..36], b & 0xffff_ffff_ffff);
    id
}

/// `grpc-timeout` (`<digits><unit>`) as a duration.
fn grpc_timeout(v: &HeaderValue) -> Option<Duration> {
    let s = v.to_str().ok()?;
    let (digits, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// What every attempt's request is made from.
pub(super) struct Template {
    pub(super) method: Method,
    /// The upstream path: rewritten, or the request's own.
    pub(super) path: PathAndQuery,
    /// The authority to send when the request's `Host` does not go up as is
    /// (a rewrite, an HTTP/2 upstream, or an HTTP/2 request without `Host`).
    pub(super) authority: Option<String>,
    pub(super) headers: http::HeaderMap,
    pub(super) http2: bool,
}

impl Template {
    /// The request, moving the headers out (for the last use).
    pub(super) fn take(&mut self, body: Body) -> Request<Body> {
        let headers = std::mem::take(&mut self.headers);
        let authority = self.authority.take();
        self.assemble(body, headers, authority)
    }

    /// A copy of the request; `host_suffix` is appended to the authority
    /// (mirrors' `-shadow`).
    pub(super) fn build(&self, body: Body, host_suffix: Option<&str>) -> Request<Body> {
        let authority = match host_suffix {
            Some(s) => {
                let base = match &self.authority {
                    Some(a) => a.clone(),
                    None => self
                        .headers
                        .get(header::HOST)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string(),
                };
                Some(format!("{base}{s}"))
            }
            None => self.authority.clone(),
        };
        self.assemble(body, self.headers.clone(), authority)
    }

    fn assemble(
        &self,
        body: Body,
        headers: http::HeaderMap,
        authority: Option<String>,
    ) -> Request<Body> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.headers_mut() = headers;
        if self.http2 {
            *req.version_mut() = Version::HTTP_2;
            let authority = authority.unwrap_or_default();
            *req.uri_mut() = Uri::builder()
                .scheme("http")
                .authority(authority.as_str())
                .path_and_query(self.path.clone())
                .build()
                .unwrap_or_else(|_| Uri::from_static("/"));
            req.headers_mut().remove(header::HOST);
        } else {
            *req.version_mut() = Version::HTTP_11;
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(self.path.clone());
            *req.uri_mut() = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"));
            if let Some(a) = authority
                && let Ok(v) = HeaderValue::from_str(&a)
            {
                req.headers_mut().insert(header::HOST, v);
            }
        }
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_v4() {
        for _ in 0..100 {
            let id = request_id();
            let id = std::str::from_utf8(&id).expect("ASCII");
            for (i, c) in id.char_indices() {
                match i {
                    8 | 13 | 18 | 23 => assert_eq!(c, '-', "{id}"),
                    14 => assert_eq!(c, '4', "{id}"),
                    19 => assert!("89ab".contains(c), "{id}"),
                    _ => assert!(matches!(c, '0'..='9' | 'a'..='f'), "{id}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod xfcc_tests {
    use std::sync::Arc;

    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, HttpFilter, http_connection_manager::RouteSpecifier,
        http_connection_manager::SetCurrentClientCertDetails,
    };

    use super::{XFCC, forward_client_cert};
    use crate::http::ConnInfo;
    use crate::identity::tls::PeerCert;

    fn hcm(mode: i32) -> crate::listener::Hcm {
        let proto = HttpConnectionManager {
            stat_prefix: "inbound_0.0.0.0_9080".into(),
            route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration::default())),
            http_filters: vec![HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(
                    envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType::TypedConfig(
                        envoy_types::pb::google::protobuf::Any {
                            type_url: "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router".into(),
                            value: Vec::new(),
                        },
                    ),
                ),
                ..Default::default()
            }],
            forward_client_cert_details: mode,
            set_current_client_cert_details: Some(SetCurrentClientCertDetails {
                subject: Some(envoy_types::pb::google::protobuf::BoolValue { value: true }),
                uri: true,
                dns: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        crate::listener::hcm::hcm_config(&proto, 1).expect("a connection manager")
    }

    fn conn(mtls: bool) -> ConnInfo {
        ConnInfo {
            peer: "10.0.0.5:40000".parse().unwrap(),
            dst: "10.0.0.6:9080".parse().unwrap(),
            inbound: true,
            peer_identity: None,
            tls: mtls,
            sni: None,
            peer_cert: mtls.then(|| {
                Arc::new(PeerCert {
                    hash: "ab12".into(),
                    subject: String::new(),
                    uris: vec!["spiffe://cluster.local/ns/default/sa/productpage".into()],
                    dns: vec![],
                })
            }),
            local_identity: Some(Arc::from("spiffe://cluster.local/ns/default/sa/reviews")),
        }
    }

    fn headers(xfcc: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(v) = xfcc {
            h.insert(XFCC, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn istio_inbound_appends_the_peers_element_over_mtls() {
        // APPEND_FORWARD, as pilot sets it on inbound mTLS chains.
        let mut h = headers(Some("By=spiffe://a;URI=spiffe://b"));
        forward_client_cert(&mut h, &hcm(2), &conn(true));
        assert_eq!(
            h[XFCC],
            "By=spiffe://a;URI=spiffe://b,By=spiffe://cluster.local/ns/default/sa/reviews;Hash=ab12;Subject=\"\";URI=spiffe://cluster.local/ns/default/sa/productpage"
        );
        // Plain text: a client's own header is not trusted.
        let mut h = headers(Some("By=forged"));
        forward_client_cert(&mut h, &hcm(2), &conn(false));
        assert!(h.get(XFCC).is_none());
    }

    #[test]
    fn sanitize_removes_and_sanitize_set_replaces() {
        let mut h = headers(Some("By=forged"));
        forward_client_cert(&mut h, &hcm(0), &conn(true));
        assert!(h.get(XFCC).is_none(), "SANITIZE, Envoy's default");
        let mut h = headers(Some("By=forged"));
        forward_client_cert(&mut h, &hcm(3), &conn(true));
        assert!(
            h[XFCC]
                .to_str()
                .unwrap()
                .starts_with("By=spiffe://cluster.local/ns/default/sa/reviews;Hash=ab12")
        );
        let mut h = headers(Some("By=kept"));
        forward_client_cert(&mut h, &hcm(4), &conn(false));
        assert_eq!(h[XFCC], "By=kept", "ALWAYS_FORWARD_ONLY");
    }
}
