//! Inbound mutual TLS on sidecars, from `PeerAuthentication` as Istio applies it.
//!
//! **The mode.** [`InboundMtls::of`] composes the policies of a workload the
//! way Istio's `ComposePeerAuthentication` does. The mesh-wide policy (root
//! namespace `istio-system`, no selector) is overridden by the namespace-wide
//! one (the workload's namespace, no selector), which the workload policy (its
//! namespace, a selector matching its labels) overrides; a selector in the
//! root namespace selects nothing. Within a tier the oldest policy wins
//! (`creationTimestamp`, then name). `UNSET` (or no `mtls`) inherits;
//! when nothing is set the mode is PERMISSIVE. The workload policy's
//! `portLevelMtls` overrides the mode per workload (target) port, `UNSET`
//! there inheriting the workload's mode.
//!
//! **The chains** of one port in one mode ([`chains`]):
//! - STRICT: `transport_protocol: tls`, terminated with [`downstream_tls`];
//!   plaintext matches no chain of the port and Envoy closes the connection.
//! - PERMISSIVE: mesh mTLS (`tls` and one of Istio's in-mesh ALPNs, which
//!   ISTIO_MUTUAL clients offer) terminated as in STRICT; on TCP ports, other
//!   TLS (the application's own) passed through untouched; `raw_buffer`
//!   plaintext.
//! - DISABLE: plaintext, without a transport match (as with no policy).
//!
//! The mTLS context requires a client certificate, serves the SDS certificate
//! `default` and validates peers against `ROOTCA`, both from `sds-grpc`
//! ([`istio_mutual_common`]), TLS 1.2–1.3 with Istio's ciphers, ALPN
//! `h2,http/1.1` on HTTP ports and `istio-peer-exchange,h2,http/1.1` on TCP
//! ports. The connection manager of an mTLS chain forwards the client
//! certificate details (XFCC `APPEND_FORWARD` with subject, URI and DNS).
//!
//! The catch-all chains to InboundPassthroughCluster take the workload's mode
//! (Istio's `ForPassthrough`), and a `portLevelMtls` port that no inbound port
//! covers gets passthrough chains of its own. [`inspector`] is the
//! `tls_inspector` for the listener, off on DISABLE ports.
//!
//! Deviations from Istio: passthrough chains are TCP only (no HTTP inspector
//! and connection manager on inbound); XFCC is set on mTLS chains only (Istio
//! sets it on every inbound connection manager, where a plaintext client could
//! forge it); the SDS configs keep Envoy's 15 s initial fetch timeout (Istio
//! waits forever, `0s`), so a proxy without an SDS server still starts.

use std::collections::{BTreeMap, BTreeSet};

use common::istio::networking::TlsProtocol;
use common::istio::security::{MutualTlsMode, PeerAuthenticationMutualTls, PeerAuthenticationSpec};
use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, ListenerFilter, ListenerFilterChainMatchPredicate,
    filter,
    listener_filter_chain_match_predicate::{MatchSet, Rule},
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager,
    http_connection_manager::{ForwardClientCertDetails, SetCurrentClientCertDetails},
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext;
use envoy_types::pb::envoy::r#type::v3::Int32Range;
use prost::Message;

use super::{HCM_FILTER, tls_inspector};
use crate::model::Snapshot;
use crate::proxy::Proxy;
use crate::xds::cluster::tls::{TLS_TRANSPORT_SOCKET, istio_mutual_common, tls_params};
use crate::xds::route::scope::{ROOT_NAMESPACE, namespace};
use crate::xds::route::util::{any, boolv, labels_match};

/// Envoy's transport protocol of TLS connections (from `tls_inspector`).
pub const TLS: &str = "tls";
/// Envoy's transport protocol of everything else.
pub const RAW_BUFFER: &str = "raw_buffer";

/// The ALPNs of in-mesh mTLS clients (Istio's `allIstioMtlsALPNs`): a
/// PERMISSIVE port tells mesh mTLS from other TLS by them.
pub const ISTIO_MTLS_ALPNS: &[&str] = &[
    "istio",
    "istio-peer-exchange",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];
/// ALPN of the inbound mTLS context on HTTP ports (Istio's `ALPNHttp`).
pub const ALPN_HTTP: &[&str] = &["h2", "http/1.1"];
/// ALPN of the inbound mTLS context on TCP ports (Istio's
/// `ALPNDownstreamWithMxc`).
pub const ALPN_TCP: &[&str] = &["istio-peer-exchange", "h2", "http/1.1"];
/// Istio's default cipher suites for TLS 1.2 (TLS 1.3 suites are not configurable).
pub const CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
];

/// The effective inbound mTLS modes of one workload; never `UNSET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMtls {
    /// The workload's mode (ports without their own, and passthrough).
    pub workload: MutualTlsMode,
    /// The modes of the workload policy's `portLevelMtls`, by workload port.
    pub ports: BTreeMap<u32, MutualTlsMode>,
}

impl InboundMtls {
    /// The modes of `proxy`'s workload from the PeerAuthentications in `snapshot`.
    pub fn of(snapshot: &Snapshot, proxy: &Proxy) -> InboundMtls {
        type Pick<'a> = Option<(PolicyAge, &'a PeerAuthenticationSpec)>;
        let (mut mesh, mut ns, mut workload): (Pick<'_>, Pick<'_>, Pick<'_>) = (None, None, None);
        for (order, (r, spec)) in snapshot.peer_authentications().enumerate() {
            let policy_ns = namespace(r);
            let selector = spec
                .selector
                .as_ref()
                .map(|s| &s.match_labels)
                .filter(|l| !l.is_empty());
            let tier = match selector {
                None if policy_ns == ROOT_NAMESPACE => &mut mesh,
                None if policy_ns == proxy.namespace => &mut ns,
                Some(labels)
                    if policy_ns == proxy.namespace
                        && policy_ns != ROOT_NAMESPACE
                        && labels_match(labels, &proxy.labels) =>
                {
                    &mut workload
                }
                _ => continue,
            };
            let age = PolicyAge {
                undated: r.meta.creation_timestamp.is_none(),
                created: r.meta.creation_timestamp.clone(),
                order,
            };
            if tier.as_ref().is_none_or(|(oldest, _)| age < *oldest) {
                *tier = Some((age, spec));
            }
        }
        let [mesh, ns, workload] = [mesh, ns, workload].map(|p| p.map(|(_, spec)| spec));
        let mut mode = MutualTlsMode::Permissive;
        for spec in [mesh, ns, workload].into_iter().flatten() {
            if let Some(m) = set_mode(spec.mtls.as_ref()) {
                mode = m;
            }
        }
        let ports = workload
            .map(|spec| {
                spec.port_level_mtls
                    .iter()
                    .map(|(port, m)| (*port, set_mode(Some(m)).unwrap_or(mode)))
                    .collect()
            })
            .unwrap_or_default();
        InboundMtls {
            workload: mode,
            ports,
        }
    }

    /// The mode of workload port `port`.
    pub fn port(&self, port: u32) -> MutualTlsMode {
        self.ports.get(&port).copied().unwrap_or(self.workload)
    }
}

/// Istio's "oldest wins": dated before undated, then by date, then snapshot
/// order (by name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PolicyAge {
    undated: bool,
    created: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    order: usize,
}

/// The mode a policy sets, if it sets one (`UNSET` inherits).
fn set_mode(mtls: Option<&PeerAuthenticationMutualTls>) -> Option<MutualTlsMode> {
    mtls.and_then(|m| m.mode)
        .filter(|m| *m != MutualTlsMode::Unset)
}

/// The filter chains of the traffic `base` matches (a destination port; `None`
/// for the catch-all) in `mode`, named `name` (plaintext), `name-mtls` and
/// `name-tls` (other TLS, passed through). `filter` handles the decrypted or
/// plain stream (the network filters in order, the last one terminal);
/// `http` says it ends in a connection manager (ALPN, and no pass-through
/// chain: Istio leaves non-mesh TLS on HTTP ports unmatched).
pub fn chains(
    name: &str,
    base: Option<FilterChainMatch>,
    mode: MutualTlsMode,
    http: bool,
    filter: Vec<Filter>,
) -> Vec<FilterChain> {
    let with = |transport: &str, alpns: &[&str]| {
        Some(FilterChainMatch {
            transport_protocol: transport.to_string(),
            application_protocols: alpns.iter().map(|s| s.to_string()).collect(),
            ..base.clone().unwrap_or_default()
        })
    };
    let chain =
        |name: String, m: Option<FilterChainMatch>, f: Vec<Filter>, tls: bool| FilterChain {
            name,
            filter_chain_match: m,
            filters: f,
            transport_socket: tls.then(|| downstream_tls(http)),
            ..Default::default()
        };
    let mtls_filter = || filter.iter().cloned().map(forward_client_cert).collect();
    match mode {
        MutualTlsMode::Disable => vec![chain(name.to_string(), base.clone(), filter, false)],
        MutualTlsMode::Strict => vec![chain(
            format!("{name}-mtls"),
            with(TLS, &[]),
            mtls_filter(),
            true,
        )],
        MutualTlsMode::Permissive | MutualTlsMode::Unset => {
            let mut out = vec![chain(
                format!("{name}-mtls"),
                with(TLS, ISTIO_MTLS_ALPNS),
                mtls_filter(),
                true,
            )];
            if !http {
                out.push(chain(
                    format!("{name}-tls"),
                    with(TLS, &[]),
                    filter.clone(),
                    false,
                ));
            }
            out.push(chain(
                name.to_string(),
                with(RAW_BUFFER, &[]),
                filter,
                false,
            ));
            out
        }
    }
}

/// The inbound mTLS transport socket: a `DownstreamTlsContext` requiring a
/// client certificate, with the workload certificate and trust bundle over SDS
/// from `sds-grpc`, TLS 1.2–1.3 and Istio's ALPN for HTTP or TCP ports.
pub fn downstream_tls(http: bool) -> TransportSocket {
    let mut common = istio_mutual_common(&[], if http { ALPN_HTTP } else { ALPN_TCP });
    let ciphers: Vec<String> = CIPHER_SUITES.iter().map(|s| s.to_string()).collect();
    common.tls_params = tls_params(
        Some(TlsProtocol::TlsV1_2),
        Some(TlsProtocol::TlsV1_3),
        &ciphers,
    );
    let ctx = DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: boolv(true),
        ..Default::default()
    };
    TransportSocket {
        name: TLS_TRANSPORT_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&ctx))),
    }
}

/// A connection manager that forwards the client certificate's details
/// (Istio's inbound XFCC); any other filter unchanged. The shared builder
/// encodes the manager, so it is decoded, amended and encoded again here.
fn forward_client_cert(f: Filter) -> Filter {
    let Some(filter::ConfigType::TypedConfig(a)) = &f.config_type else {
        return f;
    };
    if f.name != HCM_FILTER {
        return f;
    }
    let Ok(mut hcm) = HttpConnectionManager::decode(a.value.as_slice()) else {
        return f;
    };
    hcm.forward_client_cert_details = ForwardClientCertDetails::AppendForward as i32;
    hcm.set_current_client_cert_details = Some(SetCurrentClientCertDetails {
        subject: boolv(true),
        dns: true,
        uri: true,
        ..Default::default()
    });
    Filter {
        name: f.name,
        config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
    }
}

/// `tls_inspector`, disabled on `plaintext_ports` (DISABLE ports: their chains
/// do not look at the transport, and server-first protocols must not wait for
/// a ClientHello there).
pub fn inspector(plaintext_ports: &BTreeSet<u32>) -> ListenerFilter {
    let mut rules: Vec<ListenerFilterChainMatchPredicate> = plaintext_ports
        .iter()
        .map(|p| ListenerFilterChainMatchPredicate {
            rule: Some(Rule::DestinationPortRange(Int32Range {
                start: *p as i32,
                end: *p as i32 + 1,
            })),
        })
        .collect();
    let disabled = match rules.len() {
        0 => None,
        1 => rules.pop(),
        _ => Some(ListenerFilterChainMatchPredicate {
            rule: Some(Rule::OrMatch(MatchSet { rules })),
        }),
    };
    ListenerFilter {
        filter_disabled: disabled,
        ..tls_inspector()
    }
}

/// Whether the chains match on the transport protocol (and so need
/// `tls_inspector`).
pub fn needs_inspector(chains: &[FilterChain]) -> bool {
    chains.iter().any(|c| {
        c.filter_chain_match
            .as_ref()
            .is_some_and(|m| !m.transport_protocol.is_empty())
    })
}
