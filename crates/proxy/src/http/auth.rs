//! The connection manager's authentication and authorization filters:
//! `envoy.filters.http.jwt_authn` ([`crate::jwt`]) and
//! `envoy.filters.http.rbac` ([`crate::rbac`]), run in their configured
//! order on a request's headers after path normalization and before routing
//! ([`run`]). A JWT failure is Envoy's `401` (`403` for a refused audience)
//! with the status text as body and a `www-authenticate` challenge; an RBAC
//! denial Envoy's `403 RBAC: access denied` with response flag `RBAC`.
//! Their counters ([`AuthStats`]) are `http.PREFIX.jwt_authn.*` and
//! `http.PREFIX.rbac.*`, shown once a manager with the filter served a
//! connection.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use http::header::{self, HeaderValue};
use http::{Response, request::Parts};

use super::{ConnInfo, flagged, local_reply};
use crate::body::Body;
use crate::jwt::{JwtAuthn, Outcome, Status};
use crate::listener::Hcm;
use crate::rbac::{DENIED_BODY, DENIED_FLAG, DynamicMetadata, HttpRbac, Input, RbacStats};
use crate::route::RequestView;

/// One authentication or authorization HTTP filter, in chain order.
#[derive(Debug, Clone)]
pub enum AuthFilter {
    /// `envoy.filters.http.jwt_authn`.
    Jwt(Arc<JwtAuthn>),
    /// `envoy.filters.http.rbac`.
    Rbac(Arc<HttpRbac>),
}

/// The filters' counters of one connection manager.
#[derive(Debug, Default)]
pub struct AuthStats {
    rbac_seen: AtomicBool,
    jwt_seen: AtomicBool,
    /// `rbac.*` (every RBAC filter of the manager counts here, as in Envoy).
    pub rbac: RbacStats,
    /// `jwt_authn.allowed`.
    pub jwt_allowed: AtomicU64,
    /// `jwt_authn.denied`.
    pub jwt_denied: AtomicU64,
    /// `jwt_authn.cors_preflight_bypassed`.
    pub jwt_preflight: AtomicU64,
    /// `jwt_authn.jwt_cache_miss` (tokens verified; no cache).
    pub jwt_cache_miss: AtomicU64,
}

impl AuthStats {
    /// Notes which filters a manager serving a connection has, so their
    /// counters show.
    pub fn seen(&self, filters: &[AuthFilter]) {
        for f in filters {
            let flag = match f {
                AuthFilter::Jwt(_) => &self.jwt_seen,
                AuthFilter::Rbac(_) => &self.rbac_seen,
            };
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// `(name, value)` pairs under `http.PREFIX.`.
    pub fn render(&self, prefix: &str, out: &mut Vec<(String, u64, bool)>) {
        if self.rbac_seen.load(Ordering::Relaxed) {
            let mut rbac = Vec::new();
            self.rbac.render(&format!("http.{prefix}.rbac."), &mut rbac);
            out.extend(rbac.into_iter().map(|(n, v)| (n, v, false)));
        }
        if self.jwt_seen.load(Ordering::Relaxed) {
            let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
            for (name, v) in [
                ("allowed", get(&self.jwt_allowed)),
                ("cors_preflight_bypassed", get(&self.jwt_preflight)),
                ("denied", get(&self.jwt_denied)),
                ("jwks_fetch_failed", 0),
                ("jwks_fetch_success", 0),
                ("jwt_cache_hit", 0),
                ("jwt_cache_miss", get(&self.jwt_cache_miss)),
            ] {
                out.push((format!("http.{prefix}.jwt_authn.{name}"), v, false));
            }
        }
    }
}

fn count(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Runs `hcm`'s filters on the request `parts` (changing its headers as the
/// JWT filter says); the local reply when one of them stops it.
pub fn run(
    parts: &mut Parts,
    hcm: &Hcm,
    conn: &ConnInfo,
    stats: &AuthStats,
) -> Option<Response<Body>> {
    let mut metadata = DynamicMetadata::default();
    let remote = remote_ip(parts, hcm, conn);
    for f in &hcm.auth {
        let authority = super::authority_of(parts);
        let view = RequestView {
            authority: &authority,
            method: parts.method.as_str(),
            path_and_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            scheme: parts.uri.scheme_str().unwrap_or("http"),
            headers: &parts.headers,
            random: 0,
        };
        match f {
            AuthFilter::Jwt(jwt) => match jwt.check(&view) {
                Outcome::Skipped { preflight } => {
                    if preflight {
                        count(&stats.jwt_preflight);
                    }
                }
                Outcome::Denied(status) => {
                    count(&stats.jwt_denied);
                    return Some(jwt_reply(status, &view));
                }
                Outcome::Allowed(changes) => {
                    count(&stats.jwt_allowed);
                    stats
                        .jwt_cache_miss
                        .fetch_add(changes.verified, Ordering::Relaxed);
                    metadata = changes.metadata;
                    for name in changes.remove {
                        parts.headers.remove(name);
                    }
                    for (name, value) in changes.set {
                        parts.headers.insert(name, value);
                    }
                }
            },
            AuthFilter::Rbac(rbac) => {
                let input = Input {
                    tls: conn.tls,
                    peer_identity: conn.peer_identity.as_deref(),
                    direct_remote: conn.peer.ip(),
                    remote,
                    dst: conn.dst,
                    sni: conn.sni.as_deref(),
                    request: Some(&view),
                    metadata: Some(&metadata),
                };
                if let Some(shadow) = &rbac.shadow {
                    stats.rbac.count_shadow(shadow.evaluate(&input).allowed);
                }
                if let Some(rules) = &rbac.rules {
                    let decision = rules.evaluate(&input);
                    stats.rbac.count(decision.allowed);
                    if !decision.allowed {
                        tracing::debug!(policy = ?decision.policy, "RBAC: request denied");
                        return Some(flagged(local_reply(403, DENIED_BODY), DENIED_FLAG));
                    }
                }
            }
        }
    }
    None
}

/// The client's address as Envoy's connection manager determines it: the
/// peer with `use_remote_address`, else the last `x-forwarded-for` entry
/// (no trusted hops), else the peer.
fn remote_ip(parts: &Parts, hcm: &Hcm, conn: &ConnInfo) -> IpAddr {
    if hcm.use_remote_address {
        return conn.peer.ip();
    }
    parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|ip| ip.trim().parse().ok())
        .unwrap_or(conn.peer.ip())
}

fn jwt_reply(status: Status, view: &RequestView<'_>) -> Response<Body> {
    let code = if status == Status::AudienceNotAllowed {
        403
    } else {
        401
    };
    let mut resp = local_reply(code, status.message());
    let mut challenge = format!(
        "Bearer realm=\"{}://{}{}\"",
        view.scheme, view.authority, view.path_and_query
    );
    if status != Status::Missed {
        challenge.push_str(", error=\"invalid_token\"");
    }
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}
