//! The CORS policy of a route (`envoy.filters.http.cors` per-filter config)
//! and what Envoy's CORS filter does with it, as pure functions the HTTP
//! layer calls: [`Cors::preflight`] when the request arrives and
//! [`Cors::response_headers`] when the upstream response comes back.
//!
//! Levels merge field by field as in Envoy's filter: each field is taken from
//! the most specific level (route, then virtual host, then configuration)
//! that sets it; `filter_enabled` and `shadow_enabled` come from the most
//! specific level that has a policy at all. The merge happens at compile
//! time ([`Cors::merged`]), so [`Selected::cors`](super::Selected::cors) is
//! the effective policy.
//!
//! `shadow_enabled` changes nothing here: when the policy is not enabled for
//! a request but shadow-enabled, Envoy only checks the origin to count it in
//! its statistics and leaves request and response alone, as these functions
//! do.

use super::RequestView;
use super::action::Fraction;
use super::matcher::{StringMatch, header_value};

/// A decoded `CorsPolicy` (per-route config of `envoy.filters.http.cors`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cors {
    /// `allow_origin_string_match`.
    pub allow_origins: Vec<OriginMatch>,
    /// `allow_methods` (`*`: the preflight's requested method).
    pub allow_methods: String,
    /// `allow_headers` (`*`: the preflight's requested headers).
    pub allow_headers: String,
    /// `expose_headers`.
    pub expose_headers: String,
    /// `max_age`.
    pub max_age: String,
    /// `allow_credentials`.
    pub allow_credentials: Option<bool>,
    /// `allow_private_network_access`.
    pub allow_private_network_access: Option<bool>,
    /// Share of requests the policy is enforced on (all when `None`).
    pub filter_enabled: Option<Fraction>,
    /// Share evaluated in shadow mode (statistics only; see the module doc).
    pub shadow_enabled: Option<Fraction>,
    /// `forward_not_matching_preflights` (default true).
    pub forward_not_matching_preflights: Option<bool>,
}

/// One `allow_origin_string_match` entry.
#[derive(Debug, Clone)]
pub struct OriginMatch {
    /// `exact`, `prefix`, `suffix`, `contains` or `regex`.
    pub kind: &'static str,
    /// The pattern as configured.
    pub pattern: String,
    /// `ignore_case` (regexes ignore it, as in Envoy).
    pub ignore_case: bool,
    matcher: StringMatch,
}

impl PartialEq for OriginMatch {
    fn eq(&self, other: &Self) -> bool {
        (self.kind, &self.pattern, self.ignore_case)
            == (other.kind, &other.pattern, other.ignore_case)
    }
}

impl Eq for OriginMatch {}

impl OriginMatch {
    pub(super) fn new(
        kind: &'static str,
        pattern: String,
        ignore_case: bool,
        matcher: StringMatch,
    ) -> OriginMatch {
        OriginMatch {
            kind,
            pattern,
            ignore_case,
            matcher,
        }
    }

    /// Whether `origin` matches (a full match for regexes).
    pub fn matches(&self, origin: &str) -> bool {
        self.matcher.matches(origin)
    }
}

/// What to do with a request when it arrives ([`Cors::preflight`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preflight {
    /// A CORS preflight: answer it locally with status 200, no body, and
    /// these headers (complete: do not add [`Cors::response_headers`]).
    Answer(Vec<(&'static str, String)>),
    /// A preflight whose origin is not allowed, with
    /// `forward_not_matching_preflights` (the default): forward it upstream
    /// untouched; its response gets no CORS headers.
    Forward,
    /// Not a preflight this policy acts on (not `OPTIONS`, no `Origin` or
    /// `Access-Control-Request-Method`, or the policy not enabled for this
    /// request): route it as usual, then add [`Cors::response_headers`].
    NotPreflight,
}

impl Cors {
    /// The effective policy of a route from its levels, most specific first
    /// (route, virtual host, configuration); `None` when no level has one.
    pub(super) fn merged(levels: [Option<&Cors>; 3]) -> Option<Cors> {
        let levels: Vec<&Cors> = levels.into_iter().flatten().collect();
        let first = *levels.first()?;
        let text = |f: fn(&Cors) -> &String| {
            levels
                .iter()
                .map(|c| f(c))
                .find(|s| !s.is_empty())
                .cloned()
                .unwrap_or_default()
        };
        let flag = |f: fn(&Cors) -> Option<bool>| levels.iter().find_map(|c| f(c));
        Some(Cors {
            allow_origins: levels
                .iter()
                .map(|c| &c.allow_origins)
                .find(|o| !o.is_empty())
                .cloned()
                .unwrap_or_default(),
            allow_methods: text(|c| &c.allow_methods),
            allow_headers: text(|c| &c.allow_headers),
            expose_headers: text(|c| &c.expose_headers),
            max_age: text(|c| &c.max_age),
            allow_credentials: flag(|c| c.allow_credentials),
            allow_private_network_access: flag(|c| c.allow_private_network_access),
            filter_enabled: first.filter_enabled,
            shadow_enabled: first.shadow_enabled,
            forward_not_matching_preflights: flag(|c| c.forward_not_matching_preflights),
        })
    }

    /// Whether the policy is enforced for a request drawing `random`.
    pub fn enabled(&self, random: u64) -> bool {
        self.filter_enabled.is_none_or(|f| f.hits(random))
    }

    /// Whether `origin` is allowed: a matcher accepts it, or accepts `*`
    /// (Envoy's wildcard: e.g. `exact: "*"` or `safe_regex: ".*"`).
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.allow_origins
            .iter()
            .any(|m| m.matches("*") || m.matches(origin))
    }

    /// Envoy's CORS filter on the request: a preflight is `OPTIONS` with a
    /// non-empty `Origin` and `Access-Control-Request-Method`, on a request
    /// the policy is enabled for (`filter_enabled` against `random`). With an
    /// allowed origin, or with `forward_not_matching_preflights: false`, it
    /// is answered locally (200) with `access-control-allow-origin` (the
    /// request's origin, only when allowed), `-allow-credentials: true`
    /// (when `allow_credentials`), `-allow-methods`, `-allow-headers`,
    /// `-max-age` (each when set), `-allow-private-network: true` (when
    /// allowed and the request sends
    /// `access-control-request-private-network: true`) and, when the origin
    /// is allowed, `-expose-headers` (Envoy's filter adds it on the way out,
    /// local replies included). Otherwise it is forwarded.
    pub fn preflight(&self, req: &RequestView<'_>, random: u64) -> Preflight {
        if !self.enabled(random) || req.method != "OPTIONS" {
            return Preflight::NotPreflight;
        }
        let Some(origin) = header_value(req, "origin").filter(|o| !o.is_empty()) else {
            return Preflight::NotPreflight;
        };
        let method = header_value(req, "access-control-request-method").unwrap_or_default();
        if method.is_empty() {
            return Preflight::NotPreflight;
        }
        let allowed = self.origin_allowed(&origin);
        if !allowed && self.forward_not_matching_preflights.unwrap_or(true) {
            return Preflight::Forward;
        }
        let mut out = Vec::with_capacity(7);
        if allowed {
            out.push(("access-control-allow-origin", origin.to_string()));
        }
        if self.allow_credentials == Some(true) {
            out.push(("access-control-allow-credentials", "true".to_string()));
        }
        match self.allow_methods.as_str() {
            "" => {}
            "*" => out.push(("access-control-allow-methods", method.into_owned())),
            m => out.push(("access-control-allow-methods", m.to_string())),
        }
        match self.allow_headers.as_str() {
            "" => {}
            "*" => {
                let requested =
                    header_value(req, "access-control-request-headers").unwrap_or_default();
                out.push(("access-control-allow-headers", requested.into_owned()));
            }
            h => out.push(("access-control-allow-headers", h.to_string())),
        }
        if !self.max_age.is_empty() {
            out.push(("access-control-max-age", self.max_age.clone()));
        }
        if self.allow_private_network_access == Some(true)
            && header_value(req, "access-control-request-private-network").as_deref()
                == Some("true")
        {
            out.push(("access-control-allow-private-network", "true".to_string()));
        }
        if allowed && !self.expose_headers.is_empty() {
            out.push(("access-control-expose-headers", self.expose_headers.clone()));
        }
        Preflight::Answer(out)
    }

    /// Envoy's CORS filter on the response of a request that was not
    /// answered as a preflight: when the policy is enabled for `random` (the
    /// same value given to [`Cors::preflight`]) and the request's `Origin` is
    /// allowed, `access-control-allow-origin` (that origin),
    /// `access-control-allow-credentials: true` (when `allow_credentials`)
    /// and `access-control-expose-headers` (when set), each replacing any
    /// upstream value; nothing otherwise.
    pub fn response_headers(
        &self,
        req: &RequestView<'_>,
        random: u64,
    ) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !self.enabled(random) {
            return out;
        }
        let Some(origin) = header_value(req, "origin").filter(|o| !o.is_empty()) else {
            return out;
        };
        if !self.origin_allowed(&origin) {
            return out;
        }
        out.push(("access-control-allow-origin", origin.into_owned()));
        if self.allow_credentials == Some(true) {
            out.push(("access-control-allow-credentials", "true".to_string()));
        }
        if !self.expose_headers.is_empty() {
            out.push(("access-control-expose-headers", self.expose_headers.clone()));
        }
        out
    }
}
