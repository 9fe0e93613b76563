//! A gateway's listeners: one `BIND_PORT` listener (`0.0.0.0_8080`) per port
//! of the servers of the Gateways that select the proxy ([`super::servers`]).
//!
//! - Plain HTTP servers share one chain: connection manager with RDS
//!   `http.PORT`, `use_remote_address` (the gateway is the edge).
//! - HTTPS servers that terminate TLS get a chain each, matched on SNI (the
//!   server's hosts; none for `*`), with a `DownstreamTlsContext` and RDS
//!   `https.PORT.PORTNAME.GATEWAY.NAMESPACE`. Certificates from
//!   `credentialName` are inlined from the Kubernetes Secret in the registry
//!   (pilot serves no SDS yet; Istio would reference `kubernetes://NAME`); a
//!   server whose Secret is missing is left out with a warning. Certificates
//!   given as files are read by Envoy. ISTIO_MUTUAL uses the agent's SDS.
//! - TLS PASSTHROUGH servers get a chain per `tls` rule of a bound
//!   VirtualService, matched on the rule's SNI hosts (within the server's
//!   hosts), with a TCP proxy to the rule's destinations.
//! - TCP servers (and TLS servers that terminate) forward to the first `tcp`
//!   rule of a bound VirtualService whose hosts meet the server's.
//!
//! Every connection manager starts with the gateway's authentication and
//! authorization HTTP filters, every TCP proxy is preceded by its network
//! RBAC filters ([`authz`]). Ports whose servers produce no chain get no
//! listener.

use std::collections::BTreeSet;

use common::istio::networking::{ServerTlsMode, ServerTlsSettings};
use envoy_types::pb::envoy::config::core::v3::{
    TrafficDirection, TransportSocket, transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch, Listener};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext,
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
};

use super::servers::{GatewayServer, PortServers, ServerKind, port_servers};
use super::sidecar::l4_clusters;
use super::{Routes, chain, http_connection_manager_with, tcp_proxy, tls_inspector};
use crate::model::fqdn;
use crate::xds::authz;
use crate::xds::cluster::tls::{
    TLS_TRANSPORT_SOCKET, file_certificate, file_source, find_ca, find_secret, inline_certificate,
    inline_source, san_matchers, tls_params,
};
use crate::xds::route::scope::{Scope, namespace};
use crate::xds::route::util::{any, boolv, labels_match, sds_grpc};

/// The gateway's listeners, by port.
pub fn listeners(scope: &Scope<'_>) -> Vec<Listener> {
    port_servers(scope)
        .iter()
        .filter_map(|group| listener(scope, group))
        .collect()
}

fn listener(scope: &Scope<'_>, group: &PortServers<'_>) -> Option<Listener> {
    let stat_prefix = format!("outbound_{}", group.listener_name());
    let authz = authz::filters(scope.snapshot, scope.proxy);
    let hcm = |routes: Routes| {
        http_connection_manager_with(&stat_prefix, routes, true, true, authz.http.clone())
    };
    let tcp = |clusters: &[(String, u32)]| {
        let mut filters = authz.tcp.clone();
        filters.push(tcp_proxy(&stat_prefix, clusters, None));
        filters
    };
    let mut chains: Vec<FilterChain> = Vec::new();
    let mut seen: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut sni = false;
    let mut add = |c: FilterChain, chains: &mut Vec<FilterChain>| {
        let names = c
            .filter_chain_match
            .as_ref()
            .map(|m| m.server_names.clone())
            .unwrap_or_default();
        if seen.insert(names) {
            chains.push(c);
        }
    };
    for server in &group.servers {
        match server.kind {
            ServerKind::Http => {
                if chains.is_empty() {
                    chains.push(chain(
                        &group.listener_name(),
                        None,
                        hcm(Routes::Rds(group.http_route_name())),
                    ));
                }
            }
            ServerKind::Https => {
                let Some(tls) = server.server.tls.as_ref() else {
                    continue;
                };
                let Some(socket) = downstream_tls(scope, server, tls, true) else {
                    continue;
                };
                sni = true;
                let mut c = chain(
                    &server.https_route_name(),
                    sni_match(&server.plain_hosts()),
                    hcm(Routes::Rds(server.https_route_name())),
                );
                c.transport_socket = Some(socket);
                add(c, &mut chains);
            }
            ServerKind::TlsTerminated => {
                let Some(tls) = server.server.tls.as_ref() else {
                    continue;
                };
                let Some(clusters) = tcp_destinations(scope, server) else {
                    continue;
                };
                let Some(socket) = downstream_tls(scope, server, tls, false) else {
                    continue;
                };
                sni = true;
                let mut c = chain(
                    &format!("{}_{}", stat_prefix, server.gateway_key()),
                    sni_match(&server.plain_hosts()),
                    tcp_proxy(&stat_prefix, &clusters, None),
                );
                c.filters = tcp(&clusters);
                c.transport_socket = Some(socket);
                add(c, &mut chains);
            }
            ServerKind::TlsPassthrough => {
                sni = true;
                for (names, clusters) in passthrough_routes(scope, server) {
                    let mut c = chain(
                        &format!("{stat_prefix}_{}", names.join(",")),
                        sni_match(&names),
                        tcp_proxy(&stat_prefix, &clusters, None),
                    );
                    c.filters = tcp(&clusters);
                    add(c, &mut chains);
                }
            }
            ServerKind::Tcp => {
                if !chains.is_empty() {
                    continue;
                }
                if let Some(clusters) = tcp_destinations(scope, server) {
                    let mut c = chain(&stat_prefix, None, tcp_proxy(&stat_prefix, &clusters, None));
                    c.filters = tcp(&clusters);
                    chains.push(c);
                }
            }
        }
    }
    if chains.is_empty() {
        return None;
    }
    let address = super::bind_address(&group.bind, group.port)?;
    Some(Listener {
        name: group.listener_name(),
        address: Some(address),
        filter_chains: chains,
        listener_filters: if sni {
            vec![tls_inspector()]
        } else {
            Vec::new()
        },
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    })
}

/// SNI match on `hosts`; none (any SNI) when one of them is `*`.
fn sni_match(hosts: &[String]) -> Option<FilterChainMatch> {
    if hosts.is_empty() || hosts.iter().any(|h| h == "*") {
        return None;
    }
    let mut names: Vec<String> = hosts.to_vec();
    names.dedup();
    Some(FilterChainMatch {
        server_names: names,
        ..Default::default()
    })
}

/// The destinations of the first `tcp` rule (applying to this port and
/// gateway) of a VirtualService bound to the server's Gateway whose hosts meet
/// the server's.
fn tcp_destinations(scope: &Scope<'_>, server: &GatewayServer<'_>) -> Option<Vec<(String, u32)>> {
    let gateway = server.gateway_key();
    let port = server.server.port.number;
    for (resource, vs) in scope.gateway_virtual_services(&gateway) {
        let ns = namespace(resource);
        let vs_hosts: Vec<String> = vs.hosts.iter().map(|h| fqdn(h, ns)).collect();
        if crate::xds::route::gateway_intersection(&server.hosts_for_namespace(ns), &vs_hosts)
            .is_empty()
        {
            continue;
        }
        let route = vs.tcp.iter().find(|r| {
            r.r#match.is_empty()
                || r.r#match.iter().any(|m| {
                    m.port.is_none_or(|p| p == port)
                        && labels_match(&m.source_labels, &scope.proxy.labels)
                        && (m.gateways.is_empty()
                            || m.gateways.iter().any(|g| {
                                crate::xds::route::scope::normalize_gateway(g, ns) == gateway
                            }))
                })
        });
        if let Some(r) = route.filter(|r| !r.route.is_empty()) {
            return Some(l4_clusters(&r.route, ns, port, scope));
        }
    }
    None
}

/// SNI names and the weighted clusters they go to.
type SniRoute = (Vec<String>, Vec<(String, u32)>);

/// One `(SNI names, destinations)` per `tls` rule match of the VirtualServices
/// bound to a passthrough server, SNI names limited to the server's hosts.
fn passthrough_routes(scope: &Scope<'_>, server: &GatewayServer<'_>) -> Vec<SniRoute> {
    let gateway = server.gateway_key();
    let port = server.server.port.number;
    let mut out = Vec::new();
    for (resource, vs) in scope.gateway_virtual_services(&gateway) {
        let ns = namespace(resource);
        let server_hosts = server.hosts_for_namespace(ns);
        for rule in vs.tls.iter().filter(|r| !r.route.is_empty()) {
            for m in &rule.r#match {
                let applies = m.port.is_none_or(|p| p == port)
                    && (m.gateways.is_empty()
                        || m.gateways.iter().any(|g| {
                            crate::xds::route::scope::normalize_gateway(g, ns) == gateway
                        }));
                if !applies {
                    continue;
                }
                let names = crate::xds::route::gateway_intersection(&server_hosts, &m.sni_hosts);
                if names.is_empty() {
                    continue;
                }
                out.push((names, l4_clusters(&rule.route, ns, port, scope)));
            }
        }
    }
    out
}

/// The server's `DownstreamTlsContext` as a transport socket; `None` (with a
/// warning) when its certificate cannot be found.
fn downstream_tls(
    scope: &Scope<'_>,
    server: &GatewayServer<'_>,
    tls: &ServerTlsSettings,
    http: bool,
) -> Option<TransportSocket> {
    let mode = tls.mode.unwrap_or(ServerTlsMode::Simple);
    let mut common = CommonTlsContext {
        tls_params: tls_params(
            tls.min_protocol_version,
            tls.max_protocol_version,
            &tls.cipher_suites,
        ),
        alpn_protocols: if http {
            vec!["h2".into(), "http/1.1".into()]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    let mut require_client = false;
    if mode == ServerTlsMode::IstioMutual {
        common.tls_certificate_sds_secret_configs = vec![sds_grpc("default")];
        common.validation_context_type = Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext {
                    match_typed_subject_alt_names: san_matchers(&tls.subject_alt_names),
                    ..Default::default()
                }),
                validation_context_sds_secret_config: Some(sds_grpc("ROOTCA")),
                ..Default::default()
            },
        ));
        require_client = true;
    } else {
        let mut credentials: Vec<&str> = tls.credential_names.iter().map(String::as_str).collect();
        if credentials.is_empty()
            && let Some(c) = tls.credential_name.as_deref()
        {
            credentials.push(c);
        }
        for name in &credentials {
            match find_secret(scope.snapshot, scope.proxy, name) {
                Some(secret) => common.tls_certificates.push(inline_certificate(secret)),
                None => {
                    tracing::warn!(
                        gateway = %server.gateway_key(),
                        port = server.server.port.number,
                        credential = %name,
                        "credentialName names no kubernetes.io/tls Secret in the gateway's namespace; server left out"
                    );
                    return None;
                }
            }
        }
        if credentials.is_empty() {
            for c in &tls.tls_certificates {
                if let (Some(cert), Some(key)) = (&c.server_certificate, &c.private_key) {
                    common.tls_certificates.push(file_certificate(cert, key));
                }
            }
            if let (Some(cert), Some(key)) = (&tls.server_certificate, &tls.private_key) {
                common.tls_certificates.push(file_certificate(cert, key));
            }
        }
        if common.tls_certificates.is_empty() {
            tracing::warn!(
                gateway = %server.gateway_key(),
                port = server.server.port.number,
                "TLS server has no certificate (credentialName or serverCertificate/privateKey); server left out"
            );
            return None;
        }
        if matches!(mode, ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual) {
            let ca = credentials
                .first()
                .and_then(|c| find_ca(scope.snapshot, scope.proxy, c))
                .or_else(|| {
                    tls.ca_cert_credential_name
                        .as_deref()
                        .and_then(|c| find_ca(scope.snapshot, scope.proxy, c))
                })
                .map(|pem| inline_source(&pem))
                .or_else(|| tls.ca_certificates.as_deref().map(file_source));
            if ca.is_none() && mode == ServerTlsMode::Mutual {
                tracing::warn!(
                    gateway = %server.gateway_key(),
                    port = server.server.port.number,
                    "MUTUAL server has no CA (ca.crt, NAME-cacert Secret or caCertificates); server left out"
                );
                return None;
            }
            common.validation_context_type = Some(ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: ca,
                    match_typed_subject_alt_names: san_matchers(&tls.subject_alt_names),
                    verify_certificate_spki: tls.verify_certificate_spki.clone(),
                    verify_certificate_hash: tls.verify_certificate_hash.clone(),
                    crl: tls.ca_crl.as_deref().map(file_source),
                    ..Default::default()
                },
            ));
            require_client = mode == ServerTlsMode::Mutual;
        }
    }
    let ctx = DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: boolv(require_client),
        ..Default::default()
    };
    Some(TransportSocket {
        name: TLS_TRANSPORT_SOCKET.into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&ctx))),
    })
}
