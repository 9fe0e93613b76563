//! What a route does: forward (with its policies), redirect, or answer; and
//! the header mutations and faults attached to routes.

use std::time::Duration;

use regex::Regex;

use super::RequestView;
use super::hash::HashPolicy;
use super::matcher::{path_only, strip_port};

/// A route's action.
#[derive(Debug)]
pub enum Action {
    /// `route`: forward upstream (boxed: it is by far the largest).
    Forward(Box<Forward>),
    /// `redirect`.
    Redirect(Redirect),
    /// `direct_response`.
    DirectResponse(DirectResponse),
}

/// A compiled `RouteAction`.
#[derive(Debug)]
pub struct Forward {
    /// The cluster(s).
    pub clusters: ClusterChoice,
    /// Upstream timeout; `None` means none (`timeout: 0s`).
    pub timeout: Option<Duration>,
    /// Stream idle timeout override.
    pub idle_timeout: Option<Duration>,
    /// `max_stream_duration.grpc_timeout_header_max`: honour `grpc-timeout`
    /// up to this (zero: unbounded).
    pub grpc_timeout_header_max: Option<Duration>,
    /// The route's own retry policy (the virtual host's applies otherwise).
    pub retry: Option<RetryPolicy>,
    /// Shadow traffic.
    pub mirrors: Vec<Mirror>,
    /// `prefix_rewrite`.
    pub prefix_rewrite: Option<String>,
    /// `regex_rewrite`: pattern and substitution (in `regex` syntax).
    pub regex_rewrite: Option<(Regex, String)>,
    /// Host rewrite.
    pub host_rewrite: HostRewrite,
    /// `hash_policy`, in order (see [`Selected::hash`](super::Selected::hash)).
    pub hash_policies: Vec<HashPolicy>,
}

/// `cluster` or `weighted_clusters`.
#[derive(Debug)]
pub enum ClusterChoice {
    /// One cluster.
    Single(String),
    /// A weighted split.
    Weighted {
        /// Clusters with a weight above zero.
        clusters: Vec<WeightedCluster>,
        /// Sum of the weights (above zero).
        total: u64,
    },
}

/// One cluster of a weighted split.
#[derive(Debug)]
pub struct WeightedCluster {
    /// Cluster name.
    pub name: String,
    /// Weight.
    pub weight: u64,
    /// Header mutations of this cluster.
    pub headers: HeaderOps,
}

/// Rewrite of the `:authority` sent upstream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HostRewrite {
    /// Keep it.
    #[default]
    None,
    /// `host_rewrite_literal`.
    Literal(String),
    /// `auto_host_rewrite`: the upstream host's hostname.
    Auto,
}

/// A compiled `RetryPolicy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// `retry_on` conditions.
    pub retry_on: Vec<String>,
    /// Retries (default 1).
    pub num_retries: u32,
    /// Per-attempt timeout.
    pub per_try_timeout: Option<Duration>,
    /// Per-attempt idle timeout.
    pub per_try_idle_timeout: Option<Duration>,
    /// Status codes for `retriable-status-codes`.
    pub retriable_status_codes: Vec<u32>,
    /// Avoid hosts already tried (`envoy.retry_host_predicates.previous_hosts`).
    pub previous_hosts: bool,
    /// Host selection attempts per retry.
    pub host_selection_max_attempts: i64,
    /// Back-off base and maximum (Envoy's defaults: 25 ms, 10 × base).
    pub back_off: (Duration, Duration),
}

/// A compiled `RequestMirrorPolicy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The shadow cluster.
    pub cluster: String,
    /// The share of requests mirrored (all when `None`).
    pub fraction: Option<Fraction>,
}

/// A fraction `numerator / denominator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fraction {
    /// Numerator.
    pub numerator: u64,
    /// 100, 10,000 or 1,000,000.
    pub denominator: u64,
}

impl Fraction {
    /// Whether a request drawing `random` falls in the fraction (Envoy's
    /// `random % denominator < numerator`).
    pub fn hits(&self, random: u64) -> bool {
        random % self.denominator < self.numerator
    }

    /// The fraction as a percentage.
    pub fn percent(&self) -> f64 {
        self.numerator as f64 * 100.0 / self.denominator as f64
    }
}

/// A compiled `RedirectAction`.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// `https_redirect` or `scheme_redirect`.
    pub scheme: Option<String>,
    /// `host_redirect`.
    pub host: Option<String>,
    /// `port_redirect`.
    pub port: Option<u32>,
    /// The path part.
    pub path: PathRedirect,
    /// `strip_query`.
    pub strip_query: bool,
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
}

/// How a redirect rewrites the path.
#[derive(Debug, Clone)]
pub enum PathRedirect {
    /// Keep it.
    Keep,
    /// `path_redirect` (its own query, if any, replaces the request's).
    Path(String),
    /// `prefix_rewrite` of the matched prefix.
    Prefix(String),
    /// `regex_rewrite`.
    Regex(Regex, String),
}

impl Redirect {
    /// The redirect of `require_tls`.
    pub(super) fn https() -> Redirect {
        Redirect {
            scheme: Some("https".into()),
            host: None,
            port: None,
            path: PathRedirect::Keep,
            strip_query: false,
            status: 301,
        }
    }

    /// The `Location` for `req`; `prefix_len` is the length of the path the
    /// route's prefix matched.
    pub(super) fn location(&self, req: &RequestView<'_>, prefix_len: Option<usize>) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(req.scheme);
        let scheme_changed = !scheme.eq_ignore_ascii_case(req.scheme);
        let mut host = self
            .host
            .clone()
            .unwrap_or_else(|| req.authority.to_string());
        if let Some(port) = self.port {
            host = format!("{}:{port}", strip_port(&host));
        } else if scheme_changed {
            // Envoy drops a default port when the scheme changes.
            let bare = strip_port(&host);
            if matches!(&host[bare.len()..], ":80" | ":443") {
                host = bare.to_string();
            }
        }
        let full = req.path_and_query;
        let path = path_only(full);
        let query = &full[path.len()..];
        let (new_path, own_query) = match &self.path {
            PathRedirect::Keep => (path.to_string(), false),
            PathRedirect::Path(p) => (p.clone(), p.contains('?')),
            PathRedirect::Prefix(p) => {
                let cut = prefix_len.unwrap_or(0).min(path.len());
                let cut = if path.is_char_boundary(cut) { cut } else { 0 };
                (format!("{p}{}", &path[cut..]), false)
            }
            PathRedirect::Regex(re, sub) => {
                (re.replace_all(path, sub.as_str()).into_owned(), false)
            }
        };
        let query = if own_query || self.strip_query {
            ""
        } else {
            query
        };
        format!("{scheme}://{host}{new_path}{query}")
    }
}

/// The upstream `:path` after a prefix or regex rewrite.
pub(super) fn rewrite_path(
    path_and_query: &str,
    prefix: Option<&str>,
    regex: Option<&(Regex, String)>,
    prefix_len: Option<usize>,
) -> Option<String> {
    let path = path_only(path_and_query);
    let rest = &path_and_query[path.len()..];
    if let Some(p) = prefix {
        let cut = prefix_len.unwrap_or(0).min(path.len());
        let cut = if path.is_char_boundary(cut) { cut } else { 0 };
        return Some(format!("{p}{}{rest}", &path[cut..]));
    }
    let (re, sub) = regex?;
    Some(format!("{}{rest}", re.replace_all(path, sub.as_str())))
}

/// A compiled `DirectResponseAction`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectResponse {
    /// Status code.
    pub status: u16,
    /// Body (inline).
    pub body: Option<bytes::Bytes>,
}

/// How a header is added (`HeaderValueOption.append_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendAction {
    /// Append to existing values, or add.
    AppendIfExistsOrAdd,
    /// Add only when absent.
    AddIfAbsent,
    /// Replace existing values, or add.
    OverwriteIfExistsOrAdd,
    /// Replace only when present.
    OverwriteIfExists,
}

/// One header to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderAdd {
    /// Lowercase name.
    pub name: String,
    /// Value (Envoy's `%…%` substitutions are not expanded here).
    pub value: String,
    /// How.
    pub action: AppendAction,
    /// Add even when the value is empty.
    pub keep_empty_value: bool,
}

/// The header mutations of one level (cluster, route, host or config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderOps {
    /// `request_headers_to_add`.
    pub request_add: Vec<HeaderAdd>,
    /// `request_headers_to_remove`.
    pub request_remove: Vec<String>,
    /// `response_headers_to_add`.
    pub response_add: Vec<HeaderAdd>,
    /// `response_headers_to_remove`.
    pub response_remove: Vec<String>,
}

impl HeaderOps {
    /// True when this level mutates nothing.
    pub fn is_empty(&self) -> bool {
        self.request_add.is_empty()
            && self.request_remove.is_empty()
            && self.response_add.is_empty()
            && self.response_remove.is_empty()
    }
}

/// A decoded `HTTPFault` (per-route config of `envoy.filters.http.fault`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fault {
    /// Fixed delay and the share of requests delayed.
    pub delay: Option<(Duration, Fraction)>,
    /// Abort and the share of requests aborted.
    pub abort: Option<(FaultAbort, Fraction)>,
    /// `max_active_faults`.
    pub max_active_faults: Option<u32>,
}

/// How a fault aborts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAbort {
    /// With this HTTP status.
    Http(u16),
    /// With this gRPC status.
    Grpc(u32),
}
