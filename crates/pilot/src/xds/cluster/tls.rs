//! Upstream TLS from a DestinationRule's `tls` (ClientTLSSettings), and the TLS
//! pieces downstream contexts share (gateways: certificates, validation, SAN
//! matchers, protocol versions; sidecars' inbound mTLS: [`istio_mutual_common`]).
//!
//! - `DISABLE`: plain text.
//! - `SIMPLE`: verify the server against `caCertificates` (a file), or the
//!   system trust store (`/etc/ssl/certs/ca-certificates.crt`, Istio's
//!   "system" default) unless `insecureSkipVerify`.
//! - `MUTUAL`: as SIMPLE plus a client certificate from files, or from
//!   `credentialName`: inlined from the Secret in the registry when known
//!   (pilot serves no SDS yet), otherwise referenced as the SDS secret
//!   `kubernetes://NAME` over ADS, which Istio serves from istiod.
//! - `ISTIO_MUTUAL`: the workload certificate `default` and the trust bundle
//!   `ROOTCA` over SDS from the `sds-grpc` bootstrap cluster (served by the
//!   proxy's agent, not by pilot: an Envoy without `sds-grpc` in its bootstrap
//!   rejects such clusters), SNI `outbound_.PORT_.SUBSET_.HOST`, ALPN
//!   `istio-peer-exchange,istio`, SANs the service's SPIFFE identities.
//!
//! Without TLS settings in a DestinationRule, Istio's auto mTLS applies
//! ([`auto_mtls_matches`]): the cluster gets two `transport_socket_matches`,
//! ISTIO_MUTUAL for endpoints whose metadata says `tlsMode: istio` (pods with a
//! sidecar, labelled `security.istio.io/tlsMode: istio`) and plain text for the
//! rest. As in Istio, not for mesh-external services, passthrough clusters, or a
//! destination namespace whose PeerAuthentication is DISABLE; and, unlike
//! Istio, only when the service has at least one such endpoint, so an Envoy
//! without the `sds-grpc` bootstrap cluster is not sent mTLS it cannot use.

use std::collections::BTreeSet;

use common::istio::networking::{ClientTlsMode, ClientTlsSettings, TlsProtocol};
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, TransportSocket, data_source::Specifier, transport_socket::ConfigType,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SubjectAltNameMatcher, TlsCertificate,
    TlsParameters, UpstreamTlsContext,
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    subject_alt_name_matcher::SanType,
    tls_parameters::TlsProtocol as EnvoyTlsProtocol,
};

use envoy_types::pb::envoy::config::cluster::v3::cluster::TransportSocketMatch;
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

use crate::model::{Service, Snapshot, TlsSecret};
use crate::proxy::Proxy;
use crate::xds::route::util::{any, exact_matcher, sds_ads, sds_grpc};

/// Envoy's TLS transport socket name.
pub const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";

/// The system trust store Istio falls back to for SIMPLE/MUTUAL without
/// `caCertificates`.
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The trust domain of SPIFFE identities (`spiffe://cluster.local/ns/NS/sa/SA`).
pub const TRUST_DOMAIN: &str = "cluster.local";

/// ALPN Istio offers on in-mesh mTLS connections.
pub const ALPN_IN_MESH: &[&str] = &["istio-peer-exchange", "istio"];

/// What the upstream TLS context is built for.
#[derive(Debug, Clone, Copy)]
pub struct Upstream<'a> {
    /// The snapshot (secrets, endpoints for SPIFFE identities).
    pub snapshot: &'a Snapshot,
    /// The proxy (namespace of `credentialName` secrets).
    pub proxy: &'a Proxy,
    /// The destination service.
    pub service: &'a Service,
    /// The service port.
    pub port: u32,
    /// The subset, if the cluster is a subset's.
    pub subset: Option<&'a str>,
    /// Whether the port speaks HTTP/2 (adds `h2` to ALPN).
    pub http2: bool,
}

/// Whether Istio's auto mTLS applies to `up`'s cluster (see the module's
/// description).
pub fn auto_mtls_applies(up: Upstream<'_>) -> bool {
    use crate::model::Resolution;
    use common::istio::security::MutualTlsMode;
    if up.service.mesh_external || up.service.resolution == Resolution::Passthrough {
        return false;
    }
    let has_sidecars = up
        .snapshot
        .endpoints
        .get(&up.service.hostname)
        .is_some_and(|by_port| by_port.values().flatten().any(|e| e.mesh_tls));
    if !has_sidecars {
        return false;
    }
    // The destination namespace's mode (mesh and namespace policies).
    let destination = Proxy {
        namespace: up.service.namespace.clone(),
        labels: Default::default(),
        ..up.proxy.clone()
    };
    crate::xds::listener::mtls::InboundMtls::of(up.snapshot, &destination).workload
        != MutualTlsMode::Disable
}

/// Istio's auto mTLS sockets: `tlsMode-istio` (ISTIO_MUTUAL, as a
/// DestinationRule's would be) for endpoints with `tlsMode: istio` metadata,
/// `tlsMode-disabled` (plain text) for every other.
pub fn auto_mtls_matches(up: Upstream<'_>) -> Vec<TransportSocketMatch> {
    let settings = ClientTlsSettings {
        mode: Some(ClientTlsMode::IstioMutual),
        ..Default::default()
    };
    let Some(mtls) = upstream_transport_socket(&settings, up) else {
        return Vec::new();
    };
    let string = |v: &str| Value {
        kind: Some(Kind::StringValue(v.to_string())),
    };
    vec![
        TransportSocketMatch {
            name: "tlsMode-istio".into(),
            r#match: Some(Struct {
                fields: [("tlsMode".to_string(), string("istio"))].into(),
            }),
            transport_socket: Some(mtls),
        },
        TransportSocketMatch {
            name: "tlsMode-disabled".into(),
            r#match: Some(Struct::default()),
            transport_socket: Some(TransportSocket {
                name: "envoy.transport_sockets.raw_buffer".into(),
                config_type: Some(ConfigType::TypedConfig(any(&RawBuffer::default()))),
            }),
        },
    ]
}

/// The cluster's transport socket for `tls`, or `None` for plain text.
pub fn upstream_transport_socket(
    tls: &ClientTlsSettings,
    up: Upstream<'_>,
) -> Option<TransportSocket> {
    let ctx = upstream_context(tls, up)?;
    Some(TransportSocket {
        name: TLS_TRANSPORT_SOCKET.to_string(),
        config_type: Some(ConfigType::TypedConfig(any(&ctx))),
    })
}

/// The `UpstreamTlsContext` for `tls`, or `None` for DISABLE.
pub fn upstream_context(tls: &ClientTlsSettings, up: Upstream<'_>) -> Option<UpstreamTlsContext> {
    let mode = tls.mode.unwrap_or_default();
    let mut common = CommonTlsContext::default();
    let mut sni = tls.sni.clone().unwrap_or_default();
    match mode {
        ClientTlsMode::Disable => return None,
        ClientTlsMode::IstioMutual => {
            let mut sans = tls.subject_alt_names.clone();
            if sans.is_empty() {
                sans = service_identities(up.snapshot, up.service, up.port);
            }
            common = istio_mutual_common(&sans, ALPN_IN_MESH);
            if up.http2 {
                common.alpn_protocols.push("h2".into());
            }
            if sni.is_empty() {
                sni = format!(
                    "outbound_.{}_.{}_.{}",
                    up.port,
                    up.subset.unwrap_or(""),
                    up.service.hostname
                );
            }
        }
        ClientTlsMode::Simple | ClientTlsMode::Mutual => {
            let secret = tls
                .credential_name
                .as_deref()
                .filter(|_| mode == ClientTlsMode::Mutual)
                .map(|name| (name, find_secret(up.snapshot, up.proxy, name)));
            if mode == ClientTlsMode::Mutual {
                match &secret {
                    Some((_, Some(s))) => common.tls_certificates = vec![inline_certificate(s)],
                    Some((name, None)) => {
                        common.tls_certificate_sds_secret_configs =
                            vec![sds_ads(&format!("kubernetes://{name}"))]
                    }
                    None => {
                        if let (Some(cert), Some(key)) = (&tls.client_certificate, &tls.private_key)
                        {
                            common.tls_certificates = vec![file_certificate(cert, key)];
                        }
                    }
                }
            }
            if !tls.insecure_skip_verify.unwrap_or(false) {
                let ca = match (&tls.ca_certificates, &secret) {
                    (Some(file), _) => Some(file_source(file)),
                    (None, Some((_, Some(s)))) if s.ca_cert.is_some() => {
                        s.ca_cert.as_deref().map(inline_source)
                    }
                    _ => Some(file_source(SYSTEM_CA_FILE)),
                };
                common.validation_context_type = Some(ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: ca,
                        match_typed_subject_alt_names: san_matchers(&tls.subject_alt_names),
                        crl: tls.ca_crl.as_deref().map(file_source),
                        ..Default::default()
                    },
                ));
            }
            if sni.is_empty() && !up.service.hostname.starts_with('*') {
                sni = up.service.hostname.clone();
            }
        }
    }
    Some(UpstreamTlsContext {
        common_tls_context: Some(common),
        sni,
        ..Default::default()
    })
}

/// The common TLS context of Istio's mesh mTLS, upstream (ISTIO_MUTUAL) and
/// inbound (PeerAuthentication) alike: the workload certificate `default` and
/// the trust bundle `ROOTCA` over SDS from `sds-grpc`, the peer's SANs checked
/// against `sans` (none: any certificate the root signed), ALPN `alpn`.
pub fn istio_mutual_common(sans: &[String], alpn: &[&str]) -> CommonTlsContext {
    CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![sds_grpc("default")],
        validation_context_type: Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext {
                    match_typed_subject_alt_names: san_matchers(sans),
                    ..Default::default()
                }),
                validation_context_sds_secret_config: Some(sds_grpc("ROOTCA")),
                ..Default::default()
            },
        )),
        alpn_protocols: alpn.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// The SPIFFE identities of a service's endpoints on a port.
fn service_identities(snapshot: &Snapshot, service: &Service, port: u32) -> Vec<String> {
    let set: BTreeSet<String> = snapshot
        .endpoints_of(&service.hostname, port)
        .iter()
        .filter(|e| !e.service_account.is_empty())
        .map(|e| {
            format!(
                "spiffe://{TRUST_DOMAIN}/ns/{}/sa/{}",
                e.namespace, e.service_account
            )
        })
        .collect();
    set.into_iter().collect()
}

/// A `credentialName` secret: `namespace/name`, or `name` in the proxy's namespace.
pub fn find_secret<'a>(snapshot: &'a Snapshot, proxy: &Proxy, name: &str) -> Option<&'a TlsSecret> {
    let key = if name.contains('/') {
        name.to_string()
    } else {
        format!("{}/{name}", proxy.namespace)
    };
    snapshot.secrets.get(&key)
}

/// The CA bundle for a credential: its own `ca.crt`, else the `NAME-cacert`
/// Secret's (Istio's convention for MUTUAL gateways).
pub fn find_ca(snapshot: &Snapshot, proxy: &Proxy, name: &str) -> Option<String> {
    if let Some(ca) = find_secret(snapshot, proxy, name).and_then(|s| s.ca_cert.clone()) {
        return Some(ca);
    }
    find_secret(snapshot, proxy, &format!("{name}-cacert"))
        .map(|s| s.ca_cert.clone().unwrap_or_else(|| s.cert_chain.clone()))
}

/// A certificate and key inlined from a Secret.
pub fn inline_certificate(secret: &TlsSecret) -> TlsCertificate {
    TlsCertificate {
        certificate_chain: Some(inline_source(&secret.cert_chain)),
        private_key: Some(inline_source(&secret.private_key)),
        ..Default::default()
    }
}

/// A certificate and key read by Envoy from files.
pub fn file_certificate(cert: &str, key: &str) -> TlsCertificate {
    TlsCertificate {
        certificate_chain: Some(file_source(cert)),
        private_key: Some(file_source(key)),
        ..Default::default()
    }
}

/// A file data source.
pub fn file_source(path: &str) -> DataSource {
    DataSource {
        specifier: Some(Specifier::Filename(path.to_string())),
        ..Default::default()
    }
}

/// An inline PEM data source.
pub fn inline_source(pem: &str) -> DataSource {
    DataSource {
        specifier: Some(Specifier::InlineString(pem.to_string())),
        ..Default::default()
    }
}

/// Exact SAN matchers: `spiffe://` identities as URI SANs, the rest as DNS SANs.
pub fn san_matchers(sans: &[String]) -> Vec<SubjectAltNameMatcher> {
    sans.iter()
        .map(|san| SubjectAltNameMatcher {
            san_type: if san.starts_with("spiffe://") {
                SanType::Uri as i32
            } else {
                SanType::Dns as i32
            },
            matcher: Some(exact_matcher(san)),
            ..Default::default()
        })
        .collect()
}

/// TLS protocol bounds and cipher suites, when any is set.
pub fn tls_params(
    min: Option<TlsProtocol>,
    max: Option<TlsProtocol>,
    ciphers: &[String],
) -> Option<TlsParameters> {
    if min.is_none() && max.is_none() && ciphers.is_empty() {
        return None;
    }
    let v = |p: Option<TlsProtocol>| {
        (match p.unwrap_or_default() {
            TlsProtocol::TlsAuto => EnvoyTlsProtocol::TlsAuto,
            TlsProtocol::TlsV1_0 => EnvoyTlsProtocol::TlSv10,
            TlsProtocol::TlsV1_1 => EnvoyTlsProtocol::TlSv11,
            TlsProtocol::TlsV1_2 => EnvoyTlsProtocol::TlSv12,
            TlsProtocol::TlsV1_3 => EnvoyTlsProtocol::TlSv13,
        }) as i32
    };
    Some(TlsParameters {
        tls_minimum_protocol_version: v(min),
        tls_maximum_protocol_version: v(max),
        cipher_suites: ciphers.to_vec(),
        ..Default::default()
    })
}
