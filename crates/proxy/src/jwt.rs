//! Envoy's JWT authentication filter (`envoy.filters.http.jwt_authn`):
//! owns the compiled providers and requirement rules ([`JwtAuthn`], from
//! [`compile`]) and the check of one request ([`JwtAuthn::check`]); the
//! connection manager (`crate::http::auth`) runs it ahead of the RBAC
//! filters and turns a failure into Envoy's local reply. One token's parsing
//! and verification is [`token`].
//!
//! A request's way through, as in Envoy: CORS preflights pass when
//! `bypass_cors_preflight`; the first rule whose route match fits picks the
//! requirement (none: the request passes unchecked). A provider looks for
//! tokens in its `from_headers` (with `value_prefix`), `from_params` and
//! `from_cookies`, by default `Authorization: Bearer` and the
//! `access_token` parameter; no token is "missing", every token found must
//! verify against the provider's `local_jwks` (issuer, `nbf`/`exp` with
//! `clock_skew_seconds`, default 60 s, audiences, signature). `requires_any`
//! passes when a child passes; otherwise its status is the last child's that
//! is not "missing", and `allow_missing` turns a missing token into a pass
//! (`allow_missing_or_failed`: every failure). On success each verified
//! token's payload goes to the dynamic metadata under
//! `payload_in_metadata`, its claims to `claim_to_headers`, the payload to
//! `forward_payload_header`, and without `forward` its header is removed.

use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use http::header::HeaderName;
use serde_json::Value;

use crate::rbac::DynamicMetadata;
use crate::route::{RequestView, RouteMatcher};

pub mod compile;
#[cfg(test)]
mod tests;
pub mod token;

pub use compile::{JWT_AUTHN_TYPE, filter};
pub use token::Status;

/// The filter name its dynamic metadata is written under.
pub const JWT_FILTER: &str = "envoy.filters.http.jwt_authn";

/// A compiled `JwtAuthentication`.
#[derive(Debug)]
pub struct JwtAuthn {
    providers: Vec<Provider>,
    rules: Vec<(RouteMatcher, Option<Requirement>)>,
    bypass_cors_preflight: bool,
}

/// A compiled `JwtProvider`.
#[derive(Debug)]
struct Provider {
    issuer: String,
    /// Normalized audiences.
    audiences: Vec<String>,
    /// `None`: the JWKS did not parse (tokens fail).
    keys: Option<Vec<token::Key>>,
    locations: Vec<Location>,
    forward: bool,
    forward_payload_header: Option<HeaderName>,
    pad_forward_payload_header: bool,
    payload_in_metadata: Option<String>,
    claim_to_headers: Vec<(HeaderName, Vec<String>)>,
    clock_skew: u64,
}

#[derive(Debug)]
enum Location {
    Header { name: HeaderName, prefix: String },
    Param(String),
    Cookie(String),
}

/// A compiled `JwtRequirement`.
#[derive(Debug)]
enum Requirement {
    Provider(usize, Option<Vec<String>>),
    Any {
        children: Vec<Requirement>,
        allow_missing: bool,
        allow_missing_or_failed: bool,
    },
    All(Vec<Requirement>),
    AllowMissing,
    AllowMissingOrFailed,
}

/// What the filter decided for a request.
#[derive(Debug)]
pub enum Outcome {
    /// No requirement applied (or a CORS preflight bypassed it).
    Skipped {
        /// Whether it was a bypassed CORS preflight.
        preflight: bool,
    },
    /// The requirement is met; the request changes to apply.
    Allowed(Changes),
    /// The request is refused with this status.
    Denied(Status),
}

/// What a verified request changes: metadata, headers to set and remove.
#[derive(Debug, Default)]
pub struct Changes {
    /// Payloads under `payload_in_metadata`.
    pub metadata: DynamicMetadata,
    /// Headers to set.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Headers to remove (`forward: false`).
    pub remove: Vec<HeaderName>,
    /// Tokens verified (`jwt_cache_miss`: Envoy's cache is off by default).
    pub verified: u64,
}

/// One provider's verdict on a request.
struct Verdict<'r> {
    status: Result<(), Status>,
    tokens: Vec<(usize, &'r Location, String)>,
}

impl JwtAuthn {
    /// Checks the request `view` (its path already normalized).
    pub fn check(&self, view: &RequestView<'_>) -> Outcome {
        if self.bypass_cors_preflight
            && view.method == "OPTIONS"
            && view.headers.contains_key(http::header::ORIGIN)
            && view
                .headers
                .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return Outcome::Skipped { preflight: true };
        }
        let path = crate::route::path_only(view.path_and_query);
        let Some((_, Some(req))) = self
            .rules
            .iter()
            .find(|(m, _)| m.matches(view, path).is_some())
        else {
            return Outcome::Skipped { preflight: false };
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut ok = Vec::new();
        let mut verified = 0;
        match self.requirement(req, view, now, &mut ok, &mut verified) {
            Err(status) => Outcome::Denied(status),
            Ok(()) => Outcome::Allowed(self.changes(ok, verified)),
        }
    }

    /// Evaluates `req`; verified tokens (provider, location, token) go to `ok`.
    fn requirement<'r>(
        &'r self,
        req: &Requirement,
        view: &RequestView<'_>,
        now: u64,
        ok: &mut Vec<(usize, &'r Location, String)>,
        verified: &mut u64,
    ) -> Result<(), Status> {
        match req {
            Requirement::Provider(i, audiences) => {
                let v = self.provider(*i, audiences.as_deref(), view, now, verified);
                if v.status.is_ok() {
                    ok.extend(v.tokens);
                }
                v.status
            }
            Requirement::Any {
                children,
                allow_missing,
                allow_missing_or_failed,
            } => {
                let mut last = Status::Missed;
                for c in children {
                    match self.requirement(c, view, now, ok, verified) {
                        Ok(()) => return Ok(()),
                        Err(Status::Missed) => {}
                        Err(s) => last = s,
                    }
                }
                if *allow_missing_or_failed || (*allow_missing && last == Status::Missed) {
                    return Ok(());
                }
                Err(last)
            }
            Requirement::All(children) => {
                for c in children {
                    self.requirement(c, view, now, ok, verified)?;
                }
                Ok(())
            }
            Requirement::AllowMissing => self.all_tokens(view, now, ok, verified, false),
            Requirement::AllowMissingOrFailed => self.all_tokens(view, now, ok, verified, true),
        }
    }

    /// Every provider's tokens: missing passes, a failure fails unless
    /// `lenient`; the verified ones go to `ok`.
    fn all_tokens<'r>(
        &'r self,
        view: &RequestView<'_>,
        now: u64,
        ok: &mut Vec<(usize, &'r Location, String)>,
        verified: &mut u64,
        lenient: bool,
    ) -> Result<(), Status> {
        for i in 0..self.providers.len() {
            if ok.iter().any(|(p, _, _)| *p == i) {
                continue;
            }
            let v = self.provider(i, None, view, now, verified);
            match v.status {
                Ok(()) => ok.extend(v.tokens),
                Err(Status::Missed | Status::UnknownIssuer) => {}
                Err(s) if !lenient => return Err(s),
                Err(_) => {}
            }
        }
        Ok(())
    }

    fn provider<'r>(
        &'r self,
        i: usize,
        audiences: Option<&[String]>,
        view: &RequestView<'_>,
        now: u64,
        verified: &mut u64,
    ) -> Verdict<'r> {
        let p = &self.providers[i];
        let tokens: Vec<(usize, &Location, String)> = p
            .locations
            .iter()
            .flat_map(|l| extract(l, view).into_iter().map(move |t| (i, l, t)))
            .collect();
        if tokens.is_empty() {
            return Verdict {
                status: Err(Status::Missed),
                tokens,
            };
        }
        let audiences = audiences.unwrap_or(&p.audiences);
        for (_, _, t) in &tokens {
            *verified += 1;
            if let Err(s) = p.verify(t, audiences, now) {
                return Verdict {
                    status: Err(s),
                    tokens: Vec::new(),
                };
            }
        }
        Verdict {
            status: Ok(()),
            tokens,
        }
    }

    fn changes(&self, ok: Vec<(usize, &Location, String)>, verified: u64) -> Changes {
        let mut out = Changes {
            verified,
            ..Changes::default()
        };
        for (i, location, t) in ok {
            let p = &self.providers[i];
            let Ok(jwt) = token::Jwt::parse(&t) else {
                continue;
            };
            if let Some(key) = &p.payload_in_metadata {
                out.metadata
                    .set(JWT_FILTER, key, Value::Object(jwt.payload.clone()));
            }
            if let Some(h) = &p.forward_payload_header {
                let v = if p.pad_forward_payload_header {
                    token::pad(jwt.payload_b64)
                } else {
                    jwt.payload_b64.to_string()
                };
                if let Ok(v) = HeaderValue::from_str(&v) {
                    out.set.push((h.clone(), v));
                }
            }
            for (h, path) in &p.claim_to_headers {
                let mut v = jwt.payload.get(&path[0]);
                for k in &path[1..] {
                    v = v.and_then(|x| x.get(k));
                }
                let text = match v {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    Some(Value::Bool(b)) => b.to_string(),
                    _ => continue,
                };
                if let Ok(v) = HeaderValue::from_str(&text) {
                    out.set.push((h.clone(), v));
                }
            }
            if !p.forward
                && let Location::Header { name, .. } = location
            {
                out.remove.push(name.clone());
            }
        }
        out
    }
}

impl Provider {
    fn verify(&self, t: &str, audiences: &[String], now: u64) -> Result<(), Status> {
        let jwt = token::Jwt::parse(t)?;
        if !self.issuer.is_empty() && jwt.issuer() != self.issuer {
            return Err(Status::UnknownIssuer);
        }
        jwt.check_time(now, self.clock_skew)?;
        if !jwt.audience_allowed(audiences) {
            return Err(Status::AudienceNotAllowed);
        }
        jwt.verify(self.keys.as_deref().ok_or(Status::JwksFetchFail)?)
    }
}

/// The tokens at `location` of the request.
fn extract(location: &Location, view: &RequestView<'_>) -> Vec<String> {
    match location {
        Location::Header { name, prefix } => {
            let values: Vec<&str> = view
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if values.is_empty() {
                return Vec::new();
            }
            let joined = values.join(",");
            let rest = if prefix.is_empty() {
                joined.as_str()
            } else {
                match joined.find(prefix.as_str()) {
                    Some(at) => &joined[at + prefix.len()..],
                    None => return Vec::new(),
                }
            };
            let token = rest.trim().split([' ', '\t']).next().unwrap_or_default();
            if token.is_empty() {
                Vec::new()
            } else {
                vec![token.to_string()]
            }
        }
        Location::Param(name) => {
            let query = view.path_and_query.split_once('?').map_or("", |(_, q)| q);
            query
                .split('&')
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    (k == name && !v.is_empty()).then(|| percent_decode(v))
                })
                .take(1)
                .collect()
        }
        Location::Cookie(name) => view
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| {
                let (k, v) = c.trim().split_once('=')?;
                (k == name && !v.is_empty()).then(|| v.trim_matches('"').to_string())
            })
            .take(1)
            .collect(),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
