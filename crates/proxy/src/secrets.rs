//! Where TLS chains and clusters get their certificates: Envoy's SDS secret
//! references, resolved the way a sidecar's are.
//!
//! - Secrets from the `sds-grpc` cluster (istio-agent's SDS server in Istio):
//!   `default` is the workload certificate and `ROOTCA` the mesh roots; the
//!   proxy plays the agent's part itself, with its [`CertManager`] (off unless
//!   `--ca-addr` is given, and then such chains and clusters cannot carry
//!   traffic: the connection is closed and the reason logged).
//! - Secrets over ADS (a gateway's `kubernetes://NAME` credentials): the
//!   `Secret` resources the xDS client holds.
//!
//! rustls configurations are built once per certificate and cached until the
//! certificate rotates.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret, UpstreamTlsContext,
    common_tls_context::ValidationContextType,
};
use prost::Message;

use crate::identity::{CertManager, Certified, tls};

/// The SDS cluster istio-agent serves workload certificates from.
pub const SDS_GRPC: &str = "sds-grpc";
/// The workload certificate's SDS name.
pub const WORKLOAD_CERT: &str = "default";
/// The mesh roots' SDS name.
pub const ROOT_CA: &str = "ROOTCA";

const DOWNSTREAM_TLS: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const UPSTREAM_TLS: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";

/// A secret reference: its name and whether the proxy's identity serves it
/// (`sds-grpc`) or ADS does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// The SDS name.
    pub name: String,
    /// From `sds-grpc` (the workload identity) rather than ADS.
    pub workload: bool,
}

/// A compiled `DownstreamTlsContext`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// `require_client_certificate`.
    pub require_client_cert: bool,
    /// ALPN offered.
    pub alpn: Vec<String>,
    /// The certificate.
    pub cert: SecretRef,
    /// The validation context (client certificates' roots).
    pub validation: Option<SecretRef>,
}

/// A compiled `UpstreamTlsContext`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// SNI sent.
    pub sni: String,
    /// ALPN offered.
    pub alpn: Vec<String>,
    /// Accepted server identities (URI SANs); empty: any from the roots.
    pub sans: Vec<String>,
    /// The client certificate.
    pub cert: SecretRef,
    /// The roots verifying the server.
    pub validation: Option<SecretRef>,
}

fn sds_ref(c: &SdsSecretConfig, field: &str) -> Result<SecretRef, String> {
    let workload = match c.sds_config.as_ref().and_then(|s| s.config_source_specifier.as_ref()) {
        Some(
            envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier::Ads(_),
        ) => false,
        Some(
            envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier::ApiConfigSource(api),
        ) => {
            let cluster = api.grpc_services.first().and_then(|g| match &g.target_specifier {
                Some(envoy_types::pb::envoy::config::core::v3::grpc_service::TargetSpecifier::EnvoyGrpc(e)) => Some(e.cluster_name.as_str()),
                _ => None,
            });
            if cluster != Some(SDS_GRPC) {
                return Err(format!(
                    "{field}: SDS from {cluster:?} not supported; use ADS or the `{SDS_GRPC}` cluster"
                ));
            }
            true
        }
        _ => return Err(format!("{field}: sds_config must be ADS or the `{SDS_GRPC}` cluster")),
    };
    Ok(SecretRef {
        name: c.name.clone(),
        workload,
    })
}

fn common(ctx: &CommonTlsContext) -> Result<(SecretRef, Option<SecretRef>, Vec<String>), String> {
    if !ctx.tls_certificates.is_empty() {
        return Err(
            "common_tls_context.tls_certificates: inline certificates not supported yet; send them over SDS"
                .into(),
        );
    }
    let cert = match ctx.tls_certificate_sds_secret_configs.as_slice() {
        [one] => sds_ref(one, "common_tls_context.tls_certificate_sds_secret_configs[0]")?,
        [] => return Err("common_tls_context: no certificate (tls_certificate_sds_secret_configs)".into()),
        _ => return Err("common_tls_context.tls_certificate_sds_secret_configs: only one certificate is supported".into()),
    };
    let (validation, sans) = match &ctx.validation_context_type {
        None => (None, Vec::new()),
        Some(ValidationContextType::ValidationContextSdsSecretConfig(c)) => (
            Some(sds_ref(
                c,
                "common_tls_context.validation_context_sds_secret_config",
            )?),
            Vec::new(),
        ),
        Some(ValidationContextType::CombinedValidationContext(c)) => {
            let sans = c
                .default_validation_context
                .as_ref()
                .map(|d| {
                    d.match_typed_subject_alt_names
                        .iter()
                        .filter_map(|m| m.matcher.as_ref())
                        .filter_map(|m| match &m.match_pattern {
                            Some(envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern::Exact(e)) => Some(e.clone()),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            let v = c
                .validation_context_sds_secret_config
                .as_ref()
                .map(|s| sds_ref(s, "common_tls_context.combined_validation_context.validation_context_sds_secret_config"))
                .transpose()?;
            (v, sans)
        }
        Some(_) => {
            return Err(
                "common_tls_context: inline validation_context not supported yet; send it over SDS"
                    .into(),
            );
        }
    };
    let _ = &ctx.alpn_protocols;
    Ok((cert, validation, sans))
}

/// Compiles a listener chain's `transport_socket`.
pub fn server_tls(any: &envoy_types::pb::google::protobuf::Any) -> Result<ServerTls, String> {
    if any.type_url != DOWNSTREAM_TLS {
        return Err(format!("transport_socket: {} not supported", any.type_url));
    }
    let ctx = DownstreamTlsContext::decode(any.value.as_slice())
        .map_err(|e| format!("transport_socket: {e}"))?;
    let common_ctx = ctx.common_tls_context.unwrap_or_default();
    let (cert, validation, _) = common(&common_ctx)?;
    Ok(ServerTls {
        require_client_cert: ctx.require_client_certificate.is_some_and(|b| b.value),
        alpn: common_ctx.alpn_protocols.clone(),
        cert,
        validation,
    })
}

/// Compiles a cluster's `transport_socket`.
pub fn client_tls(any: &envoy_types::pb::google::protobuf::Any) -> Result<ClientTls, String> {
    if any.type_url != UPSTREAM_TLS {
        return Err(format!("transport_socket: {} not supported", any.type_url));
    }
    let ctx = UpstreamTlsContext::decode(any.value.as_slice())
        .map_err(|e| format!("transport_socket: {e}"))?;
    let common_ctx = ctx.common_tls_context.unwrap_or_default();
    let (cert, validation, sans) = common(&common_ctx)?;
    Ok(ClientTls {
        sni: ctx.sni,
        alpn: common_ctx.alpn_protocols.clone(),
        sans,
        cert,
        validation,
    })
}

/// What a cached server configuration was built for: client certificate
/// required, ALPN.
type ServerKey = (bool, Vec<String>);
/// What a cached client configuration was built for: accepted SANs, ALPN.
type ClientKey = (Vec<String>, Vec<String>);
/// Configurations built per certificate, dropped once it rotates away.
type Cache<K, C> = Mutex<Vec<(Arc<Certified>, K, Arc<C>)>>;

/// Resolves secret references to certificates and rustls configurations.
#[derive(Default)]
pub struct Secrets {
    identity: Option<Arc<CertManager>>,
    xds: ArcSwap<BTreeMap<String, Arc<Secret>>>,
    servers: Cache<ServerKey, rustls::ServerConfig>,
    clients: Cache<ClientKey, rustls::ClientConfig>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("identity", &self.identity.as_ref().map(|i| i.spiffe_id()))
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// Secrets from `identity` (the workload's) and ADS.
    pub fn new(identity: Option<Arc<CertManager>>) -> Secrets {
        Secrets {
            identity,
            ..Secrets::default()
        }
    }

    /// Replaces the ADS secrets.
    pub fn set_xds(&self, secrets: BTreeMap<String, Arc<Secret>>) {
        self.xds.store(Arc::new(secrets));
    }

    /// The workload identity, when the proxy has one.
    pub fn identity(&self) -> Option<&Arc<CertManager>> {
        self.identity.as_ref()
    }

    fn certified(
        &self,
        cert: &SecretRef,
        validation: Option<&SecretRef>,
    ) -> Result<Arc<Certified>, String> {
        if cert.workload {
            let Some(identity) = &self.identity else {
                return Err(format!(
                    "secret `{}` comes from the workload identity (sds-grpc), and this proxy has none: start it with --ca-addr",
                    cert.name
                ));
            };
            return identity.current().ok_or_else(|| {
                format!(
                    "no workload certificate yet from the CA ({}); last error: {}",
                    identity.spiffe_id(),
                    identity.last_error().unwrap_or_else(|| "none".into())
                )
            });
        }
        let xds = self.xds.load();
        let c = xds
            .get(&cert.name)
            .ok_or_else(|| format!("secret `{}` has not arrived over ADS", cert.name))?;
        let v = match validation {
            Some(v) if !v.workload => Some(
                xds.get(&v.name)
                    .ok_or_else(|| format!("secret `{}` has not arrived over ADS", v.name))?,
            ),
            _ => None,
        };
        tls::from_sds(c, v.map(|v| &**v))
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }

    /// The rustls server configuration of a chain.
    pub fn server_config(&self, t: &ServerTls) -> Result<Arc<rustls::ServerConfig>, String> {
        let cert = self.certified(&t.cert, t.validation.as_ref())?;
        let key: ServerKey = (t.require_client_cert, t.alpn.clone());
        let mut cache = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, _, c)) = cache
            .iter()
            .find(|(c, k, _)| Arc::ptr_eq(c, &cert) && *k == key)
        {
            return Ok(Arc::clone(c));
        }
        let alpn: Vec<&str> = t.alpn.iter().map(String::as_str).collect();
        let config =
            tls::server_config(&cert, t.require_client_cert, &alpn).map_err(|e| e.to_string())?;
        cache.retain(|(c, _, _)| Arc::strong_count(c) > 1);
        cache.push((cert, key, Arc::clone(&config)));
        Ok(config)
    }

    /// The rustls client configuration of a cluster.
    pub fn client_config(&self, t: &ClientTls) -> Result<Arc<rustls::ClientConfig>, String> {
        let cert = self.certified(&t.cert, t.validation.as_ref())?;
        let key: ClientKey = (t.sans.clone(), t.alpn.clone());
        let mut cache = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, _, c)) = cache
            .iter()
            .find(|(c, k, _)| Arc::ptr_eq(c, &cert) && *k == key)
        {
            return Ok(Arc::clone(c));
        }
        let alpn: Vec<&str> = t.alpn.iter().map(String::as_str).collect();
        let config = tls::client_config(&cert, &t.sans, &alpn).map_err(|e| e.to_string())?;
        cache.retain(|(c, _, _)| Arc::strong_count(c) > 1);
        cache.push((cert, key, Arc::clone(&config)));
        Ok(config)
    }
}
