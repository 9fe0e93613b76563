//! Envoy's role-based access control engine (`envoy.config.rbac.v3.RBAC`)
//! for the HTTP filter `envoy.filters.http.rbac` and the network filter
//! `envoy.filters.network.rbac`. Owns the compiled rules ([`Rbac`]), their
//! evaluation against what a connection or request offers ([`Input`]) and
//! the filters' counters ([`RbacStats`]); [`compile`] turns the filters'
//! configs into them and refuses, by field path, what is not implemented.
//! Running the filters is the callers' job: the connection manager
//! (`crate::http::auth`) for HTTP, the server's connection dispatch
//! (`crate::server`) for the network filter.
//!
//! Semantics (Envoy's): a request matches a policy when any of its
//! permissions and any of its principals match; the rules match when any
//! policy does. `ALLOW` lets through what matches, `DENY` what does not,
//! `LOG` everything (counted as allowed, as Envoy 1.40 counts it). Inputs:
//! the peer's SPIFFE id (its first `spiffe://` URI SAN; `authenticated`
//! without `principal_name` matches any TLS connection), the direct and the
//! effective remote address, the (original) destination address and port,
//! the SNI (empty without one), and for HTTP the request headers
//! (pseudo-headers included), the path without query (`url_path`) and the
//! dynamic metadata the JWT filter wrote ([`DynamicMetadata`]). Without a
//! request (network filter) header matchers see no header, `url_path` never
//! matches and metadata is empty.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::route::{HeaderMatch, RequestView, StringMatch};

pub mod compile;
mod metadata;
pub mod network;
#[cfg(test)]
mod tests;

pub use compile::{HttpRbac, NetworkRbac, http_filter, network_filter};
pub use metadata::{DynamicMetadata, MetadataMatch};

/// The HTTP filter's `403` body.
pub const DENIED_BODY: &str = "RBAC: access denied";
/// Envoy's response flag of an RBAC denial.
pub const DENIED_FLAG: &str = "RBAC";

/// `RBAC.Action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Allow what a policy matches, deny the rest.
    Allow,
    /// Deny what a policy matches, allow the rest.
    Deny,
    /// Allow everything; matches are only marked.
    Log,
}

/// Compiled `envoy.config.rbac.v3.RBAC` rules.
#[derive(Debug)]
pub struct Rbac {
    /// What a match means.
    pub action: Action,
    policies: Vec<(String, Policy)>,
}

#[derive(Debug)]
struct Policy {
    permissions: Vec<Permission>,
    principals: Vec<Principal>,
}

/// An address block (`CidrRange`).
#[derive(Debug, Clone, Copy)]
pub struct Cidr {
    ip: IpAddr,
    len: u8,
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        crate::listener::in_range(ip, self.ip, self.len)
    }
}

#[derive(Debug)]
enum Permission {
    Any,
    And(Vec<Permission>),
    Or(Vec<Permission>),
    Not(Box<Permission>),
    Header(HeaderMatch),
    UrlPath(StringMatch),
    DestinationIp(Cidr),
    DestinationPort(u32),
    DestinationPortRange(i32, i32),
    RequestedServerName(StringMatch),
    Metadata(MetadataMatch),
}

#[derive(Debug)]
enum Principal {
    Any,
    And(Vec<Principal>),
    Or(Vec<Principal>),
    Not(Box<Principal>),
    Authenticated(Option<StringMatch>),
    DirectRemoteIp(Cidr),
    RemoteIp(Cidr),
    Header(HeaderMatch),
    UrlPath(StringMatch),
    Metadata(MetadataMatch),
}

/// What a connection (and, for HTTP, a request) offers to the rules.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Whether the downstream connection is TLS.
    pub tls: bool,
    /// The peer's SPIFFE id from its certificate.
    pub peer_identity: Option<&'a str>,
    /// The connection's peer address.
    pub direct_remote: IpAddr,
    /// The client's address as the connection manager determined it
    /// (`x-forwarded-for` without `use_remote_address`); the peer otherwise.
    pub remote: IpAddr,
    /// The (original) destination.
    pub dst: SocketAddr,
    /// The SNI the client sent.
    pub sni: Option<&'a str>,
    /// The request, for the HTTP filter.
    pub request: Option<&'a RequestView<'a>>,
    /// Dynamic metadata of the request's earlier filters.
    pub metadata: Option<&'a DynamicMetadata>,
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    /// Whether the connection or request may continue.
    pub allowed: bool,
    /// The policy that matched, if any.
    pub policy: Option<&'a str>,
}

impl Rbac {
    /// Evaluates the rules against `input`.
    pub fn evaluate<'s>(&'s self, input: &Input<'_>) -> Decision<'s> {
        let policy = self
            .policies
            .iter()
            .find(|(_, p)| p.matches(input))
            .map(|(name, _)| name.as_str());
        let allowed = match self.action {
            Action::Allow => policy.is_some(),
            Action::Deny => policy.is_none(),
            Action::Log => true,
        };
        Decision { allowed, policy }
    }
}

impl Policy {
    fn matches(&self, input: &Input<'_>) -> bool {
        self.permissions.iter().any(|p| p.matches(input))
            && self.principals.iter().any(|p| p.matches(input))
    }
}

fn url_path(m: &StringMatch, input: &Input<'_>) -> bool {
    input
        .request
        .is_some_and(|r| m.matches(crate::route::path_only(r.path_and_query)))
}

fn header(m: &HeaderMatch, input: &Input<'_>) -> bool {
    match input.request {
        Some(r) => m.matches(r),
        None => m.matches_absent(),
    }
}

impl Permission {
    fn matches(&self, input: &Input<'_>) -> bool {
        match self {
            Permission::Any => true,
            Permission::And(all) => all.iter().all(|p| p.matches(input)),
            Permission::Or(any) => any.iter().any(|p| p.matches(input)),
            Permission::Not(p) => !p.matches(input),
            Permission::Header(m) => header(m, input),
            Permission::UrlPath(m) => url_path(m, input),
            Permission::DestinationIp(c) => c.contains(input.dst.ip()),
            Permission::DestinationPort(p) => *p == u32::from(input.dst.port()),
            Permission::DestinationPortRange(start, end) => {
                (*start..*end).contains(&i32::from(input.dst.port()))
            }
            Permission::RequestedServerName(m) => m.matches(input.sni.unwrap_or_default()),
            Permission::Metadata(m) => m.matches(input.metadata),
        }
    }
}

impl Principal {
    fn matches(&self, input: &Input<'_>) -> bool {
        match self {
            Principal::Any => true,
            Principal::And(all) => all.iter().all(|p| p.matches(input)),
            Principal::Or(any) => any.iter().any(|p| p.matches(input)),
            Principal::Not(p) => !p.matches(input),
            Principal::Authenticated(None) => input.tls,
            Principal::Authenticated(Some(m)) => {
                input.peer_identity.is_some_and(|id| m.matches(id))
            }
            Principal::DirectRemoteIp(c) => c.contains(input.direct_remote),
            Principal::RemoteIp(c) => c.contains(input.remote),
            Principal::Header(m) => header(m, input),
            Principal::UrlPath(m) => url_path(m, input),
            Principal::Metadata(m) => m.matches(input.metadata),
        }
    }
}

/// An RBAC filter's counters under Envoy's names (`allowed`, `denied`,
/// `shadow_allowed`, `shadow_denied`), kept by scope so they outlive
/// listener updates.
#[derive(Debug, Default)]
pub struct RbacStats {
    /// `allowed`.
    pub allowed: AtomicU64,
    /// `denied`.
    pub denied: AtomicU64,
    /// `shadow_allowed`.
    pub shadow_allowed: AtomicU64,
    /// `shadow_denied`.
    pub shadow_denied: AtomicU64,
}

impl RbacStats {
    /// Counts an enforced decision.
    pub fn count(&self, allowed: bool) {
        let c = if allowed { &self.allowed } else { &self.denied };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a shadow decision.
    pub fn count_shadow(&self, allowed: bool) {
        let c = if allowed {
            &self.shadow_allowed
        } else {
            &self.shadow_denied
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// `(PREFIX NAME, value)` for each counter; `prefix` ends with `rbac.`.
    pub fn render(&self, prefix: &str, out: &mut Vec<(String, u64)>) {
        for (name, c) in [
            ("allowed", &self.allowed),
            ("denied", &self.denied),
            ("shadow_allowed", &self.shadow_allowed),
            ("shadow_denied", &self.shadow_denied),
        ] {
            out.push((format!("{prefix}{name}"), c.load(Ordering::Relaxed)));
        }
    }
}
