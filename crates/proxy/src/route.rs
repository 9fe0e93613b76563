//! The HTTP routing table: an RDS `RouteConfiguration` compiled once, when it
//! arrives, into a [`RouteTable`] the data path asks, per request, which route
//! applies ([`RouteTable::select`]). Pure logic: no I/O, no clock, no global
//! randomness (the caller passes [`RequestView::random`]).
//!
//! Path of a config update: `compile` (virtual hosts, domains, matches),
//! `compile/actions` (forward, redirect, direct response) and `compile/filters`
//! (header mutations, per-filter configs) build the table, collecting every
//! refusal with the field's path; [`RouteValidator`] turns them into the NACK.
//!
//! Path of a request, top-down: the authority picks the virtual host
//! (`matcher::DomainIndex`), the virtual host's routes are tried in order and
//! the first whose `match` holds wins (`matcher::RouteMatcher`), and its action
//! (`action`) names the cluster (one, or one of a weighted set), a redirect or
//! a direct response, with the timeouts, retries, mirrors, rewrites, header
//! mutations, fault and CORS policy that go with it.
//!
//! # Envoy semantics implemented
//! - Virtual hosts: exact domain, then suffix wildcards (`*.example.com`,
//!   longest first, the `*` matching at least one character), then prefix
//!   wildcards (`foo.*`, longest first), then `*`; case-insensitive. The
//!   authority's port is ignored when `ignore_port_in_host_matching` is set or
//!   when no domain of the table names a port (Envoy's `strip_any_host_port`);
//!   otherwise the authority is matched as is, port included.
//! - `require_tls` (`ALL`, or `EXTERNAL_ONLY`, treated as `ALL`): a request whose
//!   scheme is not `https` gets a 301 to `https`.
//! - Route match: `prefix`, `path`, `safe_regex` (full match, `regex` crate),
//!   `path_separated_prefix`, `case_sensitive` (default true; not applied to
//!   regexes), all on the path without its query; `headers` (string_match and
//!   the legacy exact/prefix/suffix/contains/safe_regex, `present_match`,
//!   `range_match`, `invert_match`, `treat_missing_header_as_empty`; a header
//!   present several times is matched on its values joined with `,`; the
//!   pseudo-headers `:method`, `:authority`, `:path`, `:scheme` are the
//!   request's), `query_parameters` (first value, percent-decoded;
//!   string_match or present_match), `grpc` (content-type `application/grpc…`)
//!   and `runtime_fraction` (its default value, against `random`).
//! - Actions: `route` with `cluster` or `weighted_clusters` (pick
//!   `random % total`, total = sum of weights; a `total_weight` that disagrees is
//!   refused), `timeout` (default 15 s, 0 = none), `idle_timeout`,
//!   `max_stream_duration.grpc_timeout_header_max`, `retry_policy` (route, else
//!   virtual host), `request_mirror_policies`, `prefix_rewrite`,
//!   `regex_rewrite`, `host_rewrite_literal`, `auto_host_rewrite`; `redirect`
//!   (see [`Selected::redirect_location`]); `direct_response` (inline body).
//! - Header mutations of weighted cluster, route, virtual host and
//!   configuration, listed in [`Selected::header_ops`] in the order Envoy
//!   applies them: most specific first unless `most_specific_header_mutations_wins`
//!   reverses it (the level applied last wins an overwrite).
//! - `hash_policy` (`header` with `regex_rewrite`, `cookie` with `ttl`,
//!   `path` and `attributes`, `connection_properties.source_ip`,
//!   `query_parameter`; `terminal`): [`Selected::hash`] computes the request
//!   hash as Envoy's `generateHash` does and [`Selected::cookies_to_set`]
//!   the cookies a cookie policy with a `ttl` generates (module `hash`).
//! - `typed_per_filter_config` for `envoy.filters.http.fault` (`HTTPFault`,
//!   most specific level wins) and `envoy.filters.http.cors` (`CorsPolicy`,
//!   merged field by field, most specific level first, as Envoy's CORS filter
//!   reads them); other keys are kept by name only
//!   ([`Selected::filter_configs`]) for the filters that will read them.
//! - CORS behaviour, as pure functions of the effective policy
//!   ([`Selected::cors`], forwarding routes only): [`Cors::preflight`] tells
//!   whether to answer a preflight locally (with its headers) or forward it,
//!   and [`Cors::response_headers`] lists the headers to set on the response
//!   of an allowed cross-origin request (module `cors`; `filter_enabled` is
//!   drawn against the caller's random value, `shadow_enabled` only feeds
//!   Envoy's statistics and changes nothing).
//!
//! # Refused by [`compile`] (each error names the field's path)
//! Invalid regexes and matchers; `vhds`, `vhost_header`, cluster specifier
//! plugins, config- and virtual-host-level mirrors, virtual host `matcher`,
//! `rate_limits`, `hedge_policy`, typed retry policies; route match on
//! `path_match_policy`, `connect_matcher`, `cookies`, `dynamic_metadata`,
//! `filter_state`, `tls_context`; `filter_action` and `non_forwarding_action`;
//! `cluster_header` (route, weighted cluster, mirror), weighted-cluster
//! `random_value_specifier`, per-cluster host rewrite and
//! `typed_per_filter_config`; `filter_state` hash policies;
//! `host_rewrite_header`,
//! `host_rewrite_path_regex`, `path_rewrite_policy`, `internal_redirect_policy`,
//! `retriable_headers`, `retriable_request_headers`,
//! `rate_limited_retry_back_off`, unknown `retry_on` conditions; direct
//! response bodies from files or environment variables and `body_format`;
//! `HTTPFault` `header_delay`, `header_abort`, `headers`, `downstream_nodes`,
//! `upstream_cluster`, `response_rate_limit`; per-filter config for filters
//! this proxy has no implementation of (`lua`, `wasm`, `ext_proc`,
//! `ratelimit`, `ext_authz`). Informational fields (metadata, decorator,
//! tracing, stat prefixes, virtual clusters, buffer limits,
//! `validate_clusters`, upgrade configs) are accepted and ignored.

use std::collections::BTreeMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

mod action;
mod compile;
mod cors;
mod hash;
mod matcher;
#[cfg(test)]
mod tests;

pub use action::{
    Action, AppendAction, ClusterChoice, DirectResponse, Fault, FaultAbort, Forward, Fraction,
    HeaderAdd, HeaderOps, HostRewrite, Mirror, PathRedirect, Redirect, RetryPolicy,
    WeightedCluster,
};
pub use compile::{CORS_FILTER, FAULT_FILTER, compile};
pub use cors::{Cors, OriginMatch, Preflight};
pub use hash::{CookiePolicy, HashPolicy, HashSource, SetCookie};

pub(crate) use compile::{compile_header_match, compile_route_match, compile_string_match};
use matcher::DomainIndex;
/// Envoy's matchers, shared with the filters that take them (RBAC, JWT rules).
pub(crate) use matcher::{HeaderMatch, RouteMatcher, StringMatch, path_only};

/// The default upstream timeout of a route action without `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// A compiled `RouteConfiguration`.
#[derive(Debug)]
pub struct RouteTable {
    name: String,
    vhosts: Vec<VirtualHost>,
    domains: DomainIndex,
    headers: HeaderOps,
    most_specific_wins: bool,
    filters: FilterConfigs,
}

/// One compiled virtual host.
#[derive(Debug)]
struct VirtualHost {
    name: String,
    routes: Vec<Route>,
    headers: HeaderOps,
    require_tls: bool,
    retry: Option<RetryPolicy>,
    filters: FilterConfigs,
}

/// One compiled route.
#[derive(Debug)]
struct Route {
    name: String,
    matcher: RouteMatcher,
    action: Action,
    /// The effective CORS policy: the levels' policies merged.
    cors: Option<Cors>,
    headers: HeaderOps,
    filters: FilterConfigs,
}

/// The `typed_per_filter_config` of one level.
#[derive(Debug, Default)]
struct FilterConfigs {
    fault: Option<Fault>,
    cors: Option<Cors>,
    /// Keys of other filters' configs, with their type URLs.
    other: BTreeMap<String, String>,
}

/// What the data path knows of a request when it routes it.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// `:authority` (or `Host`), possibly with a port.
    pub authority: &'a str,
    /// `:method`.
    pub method: &'a str,
    /// `:path`, query included.
    pub path_and_query: &'a str,
    /// `:scheme` (`http` or `https`), for `require_tls` and redirects.
    pub scheme: &'a str,
    /// The request headers.
    pub headers: &'a hyper::HeaderMap,
    /// A random value for this request: it drives `runtime_fraction` matches
    /// and the weighted-cluster pick (the same value for both, as in Envoy).
    pub random: u64,
}

/// The route chosen for a request, and everything that goes with it.
#[derive(Debug, Clone)]
pub struct Selected<'a> {
    /// The matched virtual host's name.
    pub virtual_host: &'a str,
    /// The matched route's name (may be empty).
    pub route_name: &'a str,
    /// What to do with the request.
    pub action: SelectedAction<'a>,
    /// The route's forwarding policy, when the action forwards.
    pub forward: Option<&'a Forward>,
    /// The retry policy: the route's, else the virtual host's.
    pub retry: Option<&'a RetryPolicy>,
    /// Header mutations in the order they are to be applied.
    pub header_ops: Vec<&'a HeaderOps>,
    /// The fault to inject (most specific level wins).
    pub fault: Option<&'a Fault>,
    /// The CORS policy, its fields merged from the route, virtual host and
    /// configuration levels (most specific first); `None` for redirects and
    /// direct responses, which Envoy's CORS filter leaves alone.
    pub cors: Option<&'a Cors>,
    /// Other filters' per-route configs, by filter name to type URL (most
    /// specific level wins).
    pub filter_configs: BTreeMap<&'a str, &'a str>,
    matched_prefix_len: Option<usize>,
}

/// The outcome of [`RouteTable::select`].
#[derive(Debug, Clone, Copy)]
pub enum SelectedAction<'a> {
    /// Forward to this cluster.
    Cluster(&'a str),
    /// Answer with a redirect (see [`Selected::redirect_location`]).
    Redirect(&'a Redirect),
    /// Answer directly.
    DirectResponse(&'a DirectResponse),
    /// `require_tls`: answer 301 with this `https` location.
    RequireTls,
}

impl RouteTable {
    /// The `RouteConfiguration`'s name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The route for `req`, or `None` (Envoy answers 404).
    pub fn select(&self, req: &RequestView<'_>) -> Option<Selected<'_>> {
        let vh = &self.vhosts[self.domains.find(req.authority)?];
        let path = matcher::path_only(req.path_and_query);
        let (route, prefix_len) = vh
            .routes
            .iter()
            .find_map(|r| r.matcher.matches(req, path).map(|len| (r, len)))?;
        let mut header_ops = Vec::with_capacity(4);
        let (action, forward) = if vh.require_tls && !req.scheme.eq_ignore_ascii_case("https") {
            (SelectedAction::RequireTls, None)
        } else {
            match &route.action {
                Action::Forward(f) => {
                    let name = match &f.clusters {
                        ClusterChoice::Single(name) => name.as_str(),
                        ClusterChoice::Weighted { clusters, total } => {
                            let mut pick = req.random % total;
                            let mut chosen = &clusters[clusters.len() - 1];
                            for c in clusters {
                                if pick < c.weight {
                                    chosen = c;
                                    break;
                                }
                                pick -= c.weight;
                            }
                            header_ops.push(&chosen.headers);
                            chosen.name.as_str()
                        }
                    };
                    (SelectedAction::Cluster(name), Some(&**f))
                }
                Action::Redirect(r) => (SelectedAction::Redirect(r), None),
                Action::DirectResponse(d) => (SelectedAction::DirectResponse(d), None),
            }
        };
        header_ops.extend([&route.headers, &vh.headers, &self.headers]);
        if self.most_specific_wins {
            header_ops.reverse();
        }
        let levels = [&route.filters, &vh.filters, &self.filters];
        let mut filter_configs = BTreeMap::new();
        for level in levels.iter().rev() {
            for (k, v) in &level.other {
                filter_configs.insert(k.as_str(), v.as_str());
            }
        }
        Some(Selected {
            virtual_host: &vh.name,
            route_name: &route.name,
            action,
            forward,
            retry: forward
                .and_then(|f| f.retry.as_ref())
                .or(vh.retry.as_ref().filter(|_| forward.is_some())),
            header_ops,
            fault: levels.iter().find_map(|l| l.fault.as_ref()),
            cors: route.cors.as_ref().filter(|_| forward.is_some()),
            filter_configs,
            matched_prefix_len: prefix_len,
        })
    }
}

impl Selected<'_> {
    /// The upstream timeout (`None`: no timeout).
    pub fn timeout(&self) -> Option<Duration> {
        self.forward.and_then(|f| f.timeout)
    }

    /// The `:path` to send upstream after `prefix_rewrite` or `regex_rewrite`,
    /// or `None` when the route rewrites nothing.
    pub fn rewritten_path(&self, path_and_query: &str) -> Option<String> {
        let f = self.forward?;
        action::rewrite_path(
            path_and_query,
            f.prefix_rewrite.as_deref(),
            f.regex_rewrite.as_ref(),
            self.matched_prefix_len,
        )
    }

    /// The `Location` of a redirect (`Redirect` or `RequireTls`), built from
    /// the request as Envoy does, or `None` for other actions.
    pub fn redirect_location(&self, req: &RequestView<'_>) -> Option<String> {
        match self.action {
            SelectedAction::Redirect(r) => Some(r.location(req, self.matched_prefix_len)),
            SelectedAction::RequireTls => Some(Redirect::https().location(req, None)),
            _ => None,
        }
    }

    /// The request hash of the route's `hash_policy` for a ring hash or
    /// maglev pick, or `None` when no policy yields a value (the balancer
    /// then draws a random host). `source_ip` is the downstream address's
    /// IP. See the `hash` module for the semantics.
    pub fn hash(&self, req: &RequestView<'_>, source_ip: Option<std::net::IpAddr>) -> Option<u64> {
        hash::generate(&self.forward?.hash_policies, req, source_ip).0
    }

    /// The cookies to set on the response (`Set-Cookie`, see
    /// [`SetCookie::header_value`]): one per cookie hash policy with a `ttl`
    /// whose cookie the request lacks, among the policies evaluated before a
    /// terminal stop. Same arguments as [`Selected::hash`]; Envoy sets them
    /// only when the cluster's balancer asked for the hash.
    pub fn cookies_to_set(
        &self,
        req: &RequestView<'_>,
        source_ip: Option<std::net::IpAddr>,
    ) -> Vec<SetCookie> {
        match self.forward {
            Some(f) => hash::generate(&f.hash_policies, req, source_ip).1,
            None => Vec::new(),
        }
    }

    /// The status of a redirect or direct response.
    pub fn response_status(&self) -> Option<u16> {
        match self.action {
            SelectedAction::Redirect(r) => Some(r.status),
            SelectedAction::RequireTls => Some(301),
            SelectedAction::DirectResponse(d) => Some(d.status),
            SelectedAction::Cluster(_) => None,
        }
    }
}

/// The RDS [`Handler`](crate::xds::Handler): a route configuration that does
/// not [`compile`] is NACKed with every reason.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteValidator;

impl crate::xds::Handler<RouteConfiguration> for RouteValidator {
    fn validate(&self, _name: &str, resource: &RouteConfiguration) -> Result<(), String> {
        compile(resource)
            .map(drop)
            .map_err(|errors| errors.join("; "))
    }
}
