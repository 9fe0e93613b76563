//! TLS for the ADS connection itself: pilot's mTLS port (Istio's 15012), as the
//! bootstrap's ADS cluster `transport_socket` (an `UpstreamTlsContext`) says.
//!
//! It owns reading that context into an [`XdsTls`] (refusing by field path what
//! cannot be honoured) and turning it into tonic's TLS settings at each connect.
//! Supported, as istio-agent's and Envoy's bootstraps write them:
//! - the client certificate from `tls_certificates[0]` (`certificate_chain` and
//!   `private_key` as a file, inline bytes or an inline string), or from SDS
//!   `default` on the `sds-grpc` cluster: the proxy's own workload certificate
//!   (`--ca-addr`), whichever is current when the connection opens, so a
//!   reconnect after rotation presents the new one; none at all is allowed too;
//! - the roots from `validation_context.trusted_ca` (or the default validation
//!   context of a `combined_validation_context`), or from SDS `ROOTCA`: the
//!   mesh roots of the workload certificate;
//! - the server name: `sni`, else the one DNS SAN exact matcher, else the ADS
//!   cluster's host. It is sent and verified (the DNS SAN pilot's serving
//!   certificate carries).
//!
//! Refused: URI or other SAN matchers and several DNS ones (only one server name
//! is verified), more than one certificate, SDS names other than `default` and
//! `ROOTCA`, SDS from anything but `sds-grpc`.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, SdsSecretConfig, UpstreamTlsContext,
    subject_alt_name_matcher::SanType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::identity::{CertManager, read_data_source};
use crate::secrets::{ROOT_CA, SDS_GRPC, WORKLOAD_CERT};

/// Where a PEM comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pem<T> {
    /// Read from the bootstrap (a file is read when the bootstrap is).
    Fixed(T),
    /// The proxy's workload certificate (SDS `default` / `ROOTCA` on `sds-grpc`).
    Workload,
}

/// The ADS connection's TLS, read from the ADS cluster's `UpstreamTlsContext`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdsTls {
    /// The server name sent (SNI) and verified against the server's DNS SANs.
    pub server_name: String,
    /// The client certificate (chain and key), if any.
    pub client: Option<Pem<(String, String)>>,
    /// The roots the server's certificate must chain to.
    pub roots: Pem<String>,
}

impl XdsTls {
    /// Reads `ctx`; `host` is the ADS cluster's address host, the server name
    /// when neither `sni` nor a DNS SAN matcher gives one. Errors name the field
    /// under `transport_socket.typed_config`.
    pub fn from_context(ctx: &UpstreamTlsContext, host: &str) -> Result<XdsTls, String> {
        let common = ctx.common_tls_context.clone().unwrap_or_default();
        let client = match (
            common.tls_certificates.as_slice(),
            common.tls_certificate_sds_secret_configs.as_slice(),
        ) {
            ([], []) => None,
            ([cert], []) => {
                let field = "common_tls_context.tls_certificates[0]";
                let chain = pem(cert.certificate_chain.as_ref(), field, "certificate_chain")?;
                let key = pem(cert.private_key.as_ref(), field, "private_key")?;
                Some(Pem::Fixed((chain, key)))
            }
            ([], [sds]) => {
                workload_sds(
                    sds,
                    WORKLOAD_CERT,
                    "common_tls_context.tls_certificate_sds_secret_configs[0]",
                )?;
                Some(Pem::Workload)
            }
            _ => {
                return Err(
                    "common_tls_context: the ADS connection presents one certificate; \
                     set one tls_certificates entry or one tls_certificate_sds_secret_configs entry"
                        .into(),
                );
            }
        };
        let (roots, dns_names) = match &common.validation_context_type {
            Some(ValidationContextType::ValidationContext(v)) => (
                fixed_roots(v, "common_tls_context.validation_context")?,
                dns_sans(v, "common_tls_context.validation_context")?,
            ),
            Some(ValidationContextType::CombinedValidationContext(c)) => {
                let field = "common_tls_context.combined_validation_context";
                let default = c.default_validation_context.clone().unwrap_or_default();
                let names = dns_sans(&default, &format!("{field}.default_validation_context"))?;
                let roots = match &c.validation_context_sds_secret_config {
                    Some(sds) => {
                        workload_sds(
                            sds,
                            ROOT_CA,
                            &format!("{field}.validation_context_sds_secret_config"),
                        )?;
                        Pem::Workload
                    }
                    None => fixed_roots(&default, &format!("{field}.default_validation_context"))?,
                };
                (roots, names)
            }
            Some(ValidationContextType::ValidationContextSdsSecretConfig(sds)) => {
                workload_sds(
                    sds,
                    ROOT_CA,
                    "common_tls_context.validation_context_sds_secret_config",
                )?;
                (Pem::Workload, Vec::new())
            }
            Some(_) => {
                return Err("common_tls_context: this kind of validation context is not supported for ADS; use validation_context.trusted_ca or SDS ROOTCA".into());
            }
            None => {
                return Err("common_tls_context: the ADS server must be verified; set validation_context.trusted_ca or SDS ROOTCA".into());
            }
        };
        let server_name = if !ctx.sni.is_empty() {
            if let Some(name) = dns_names.iter().find(|n| **n != ctx.sni) {
                return Err(format!(
                    "sni {:?} and the DNS SAN matcher {name:?} differ: the ADS connection verifies the name it sends; make them the same",
                    ctx.sni
                ));
            }
            ctx.sni.clone()
        } else {
            dns_names
                .first()
                .cloned()
                .unwrap_or_else(|| host.to_owned())
        };
        Ok(XdsTls {
            server_name,
            client,
            roots,
        })
    }

    /// True when the workload certificate is needed (`--ca-addr`).
    pub fn needs_workload(&self) -> bool {
        matches!(self.client, Some(Pem::Workload)) || self.roots == Pem::Workload
    }

    /// tonic's settings for one connection, with the workload certificate
    /// current now.
    pub fn client_config(
        &self,
        identity: Option<&Arc<CertManager>>,
    ) -> Result<ClientTlsConfig, String> {
        let workload = if self.needs_workload() {
            let manager = identity.ok_or(NO_IDENTITY)?;
            Some(manager.current().ok_or_else(|| {
                format!(
                    "no workload certificate yet for ADS over TLS{}",
                    manager
                        .last_error()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                )
            })?)
        } else {
            None
        };
        let roots = match (&self.roots, &workload) {
            (Pem::Fixed(pem), _) => pem.clone(),
            (Pem::Workload, Some(cert)) => cert.roots_pem.clone(),
            (Pem::Workload, None) => return Err(NO_IDENTITY.into()),
        };
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(roots))
            .domain_name(self.server_name.clone());
        match (&self.client, &workload) {
            (None, _) => {}
            (Some(Pem::Fixed((chain, key))), _) => {
                config = config.identity(Identity::from_pem(chain, key));
            }
            (Some(Pem::Workload), Some(cert)) => {
                config = config.identity(Identity::from_pem(&cert.chain_pem, &cert.key_pem));
            }
            (Some(Pem::Workload), None) => return Err(NO_IDENTITY.into()),
        }
        Ok(config)
    }
}

const NO_IDENTITY: &str = "the ADS cluster's TLS names the workload certificate (SDS default/ROOTCA) \
     but the proxy has none: start it with --ca-addr";

fn pem(ds: Option<&DataSource>, field: &str, part: &str) -> Result<String, String> {
    let ds = ds.ok_or_else(|| format!("{field}.{part}: is required"))?;
    let bytes = read_data_source(ds).map_err(|e| format!("{field}.{part}: {e}"))?;
    String::from_utf8(bytes).map_err(|_| format!("{field}.{part}: is not PEM text"))
}

fn fixed_roots(v: &CertificateValidationContext, field: &str) -> Result<Pem<String>, String> {
    Ok(Pem::Fixed(pem(v.trusted_ca.as_ref(), field, "trusted_ca")?))
}

fn dns_sans(v: &CertificateValidationContext, field: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for (i, m) in v.match_typed_subject_alt_names.iter().enumerate() {
        let exact = match m.matcher.as_ref().and_then(|m| m.match_pattern.as_ref()) {
            Some(MatchPattern::Exact(e)) => Some(e.clone()),
            _ => None,
        };
        match (SanType::try_from(m.san_type), exact) {
            (Ok(SanType::Dns), Some(name)) => names.push(name),
            _ => {
                return Err(format!(
                    "{field}.match_typed_subject_alt_names[{i}]: the ADS server is verified by one DNS name; only `san_type: DNS` with an `exact` matcher is supported"
                ));
            }
        }
    }
    #[allow(deprecated)] // read only to refuse it
    let legacy = !v.match_subject_alt_names.is_empty();
    if legacy {
        return Err(format!(
            "{field}.match_subject_alt_names: not supported for ADS; use match_typed_subject_alt_names with san_type DNS"
        ));
    }
    if names.len() > 1 {
        return Err(format!(
            "{field}.match_typed_subject_alt_names: one DNS name is verified for ADS; keep one"
        ));
    }
    Ok(names)
}

fn workload_sds(sds: &SdsSecretConfig, name: &str, field: &str) -> Result<(), String> {
    use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
    use envoy_types::pb::envoy::config::core::v3::grpc_service::TargetSpecifier;
    if sds.name != name {
        return Err(format!(
            "{field}.name: {:?} is not served to the ADS connection; use {name:?} (the workload certificate)",
            sds.name
        ));
    }
    let cluster = match sds
        .sds_config
        .as_ref()
        .and_then(|c| c.config_source_specifier.as_ref())
    {
        Some(ConfigSourceSpecifier::ApiConfigSource(api)) => {
            api.grpc_services
                .first()
                .and_then(|g| match &g.target_specifier {
                    Some(TargetSpecifier::EnvoyGrpc(e)) => Some(e.cluster_name.clone()),
                    _ => None,
                })
        }
        _ => None,
    };
    if cluster.as_deref() != Some(SDS_GRPC) {
        return Err(format!(
            "{field}.sds_config: the ADS connection's certificate comes from the `{SDS_GRPC}` cluster (the proxy's own identity)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
    use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
    use envoy_types::pb::envoy::config::core::v3::grpc_service::{EnvoyGrpc, TargetSpecifier};
    use envoy_types::pb::envoy::config::core::v3::{ApiConfigSource, ConfigSource, GrpcService};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        CommonTlsContext, SubjectAltNameMatcher, TlsCertificate,
    };
    use envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher;

    use super::*;

    fn inline(text: &str) -> Option<DataSource> {
        Some(DataSource {
            specifier: Some(Specifier::InlineString(text.into())),
            ..Default::default()
        })
    }

    fn sds(name: &str, cluster: &str) -> SdsSecretConfig {
        SdsSecretConfig {
            name: name.into(),
            sds_config: Some(ConfigSource {
                config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(
                    ApiConfigSource {
                        grpc_services: vec![GrpcService {
                            target_specifier: Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc {
                                cluster_name: cluster.into(),
                                ..Default::default()
                            })),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
        }
    }

    fn san(kind: SanType, exact: &str) -> SubjectAltNameMatcher {
        SubjectAltNameMatcher {
            san_type: kind as i32,
            matcher: Some(StringMatcher {
                match_pattern: Some(MatchPattern::Exact(exact.into())),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn context(common: CommonTlsContext, sni: &str) -> UpstreamTlsContext {
        UpstreamTlsContext {
            sni: sni.into(),
            common_tls_context: Some(common),
            ..Default::default()
        }
    }

    fn roots(sans: Vec<SubjectAltNameMatcher>) -> Option<ValidationContextType> {
        Some(ValidationContextType::ValidationContext(
            CertificateValidationContext {
                trusted_ca: inline("ROOTS"),
                match_typed_subject_alt_names: sans,
                ..Default::default()
            },
        ))
    }

    #[test]
    fn certificate_files_and_a_dns_san_give_a_fixed_mtls_config() {
        let common = CommonTlsContext {
            tls_certificates: vec![TlsCertificate {
                certificate_chain: inline("CHAIN"),
                private_key: inline("KEY"),
                ..Default::default()
            }],
            validation_context_type: roots(vec![san(SanType::Dns, "istiod.istio-system.svc")]),
            ..Default::default()
        };
        let tls = XdsTls::from_context(&context(common, ""), "10.0.0.1").unwrap();
        assert_eq!(
            tls,
            XdsTls {
                server_name: "istiod.istio-system.svc".into(),
                client: Some(Pem::Fixed(("CHAIN".into(), "KEY".into()))),
                roots: Pem::Fixed("ROOTS".into()),
            }
        );
        assert!(!tls.needs_workload());
        assert!(tls.client_config(None).is_ok());
    }

    #[test]
    fn sds_default_and_rootca_name_the_workload_certificate() {
        let common = CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds(WORKLOAD_CERT, SDS_GRPC)],
            validation_context_type: Some(ValidationContextType::ValidationContextSdsSecretConfig(
                sds(ROOT_CA, SDS_GRPC),
            )),
            ..Default::default()
        };
        let tls = XdsTls::from_context(&context(common, ""), "pilot.example").unwrap();
        assert_eq!(tls.server_name, "pilot.example");
        assert_eq!(tls.client, Some(Pem::Workload));
        assert_eq!(tls.roots, Pem::Workload);
        let err = tls.client_config(None).unwrap_err();
        assert!(err.contains("--ca-addr"), "{err}");
    }

    #[test]
    fn what_cannot_be_verified_or_presented_is_refused_by_field() {
        let uri = CommonTlsContext {
            validation_context_type: roots(vec![san(SanType::Uri, "spiffe://x/ns/a/sa/b")]),
            ..Default::default()
        };
        let err = XdsTls::from_context(&context(uri, ""), "h").unwrap_err();
        assert!(
            err.starts_with(
                "common_tls_context.validation_context.match_typed_subject_alt_names[0]"
            ),
            "{err}"
        );

        let unverified = CommonTlsContext::default();
        let err = XdsTls::from_context(&context(unverified, ""), "h").unwrap_err();
        assert!(err.contains("must be verified"), "{err}");

        let mismatch = CommonTlsContext {
            validation_context_type: roots(vec![san(SanType::Dns, "a.example")]),
            ..Default::default()
        };
        let err = XdsTls::from_context(&context(mismatch, "b.example"), "h").unwrap_err();
        assert!(err.starts_with("sni"), "{err}");

        let other_cluster = CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds(WORKLOAD_CERT, "elsewhere")],
            validation_context_type: roots(vec![]),
            ..Default::default()
        };
        let err = XdsTls::from_context(&context(other_cluster, ""), "h").unwrap_err();
        assert!(
            err.starts_with("common_tls_context.tls_certificate_sds_secret_configs[0].sds_config"),
            "{err}"
        );

        let missing_key = CommonTlsContext {
            tls_certificates: vec![TlsCertificate {
                certificate_chain: inline("CHAIN"),
                ..Default::default()
            }],
            validation_context_type: roots(vec![]),
            ..Default::default()
        };
        let err = XdsTls::from_context(&context(missing_key, ""), "h").unwrap_err();
        assert_eq!(
            err,
            "common_tls_context.tls_certificates[0].private_key: is required"
        );
    }
}
