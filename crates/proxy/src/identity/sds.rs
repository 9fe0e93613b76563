//! Certificates sent over SDS: Envoy `Secret` resources as a [`Certified`].
//!
//! Istio's SDS hands a sidecar two secrets: `default` (a `tls_certificate`
//! with the chain and key) and `ROOTCA` (a `validation_context` with the
//! `trusted_ca`). [`from_sds`] reads each `DataSource` (inline bytes, inline
//! string, a file read now, or an environment variable) and builds the same
//! checked value the CA path builds.

use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::secret::Type;

use super::certified::{Certified, certs_from_pem, key_from_pem};
use super::{Error, Result};

/// A [`Certified`] from an SDS `tls_certificate` secret (chain and key) and,
/// optionally, a `validation_context` secret whose `trusted_ca` becomes the
/// roots (the chain is then verified against them). Without `validation`, the
/// roots are empty and the value can present a certificate but not verify
/// peers. Other fields (SAN matchers, CRLs, OCSP) are not read.
pub fn from_sds(cert: &Secret, validation: Option<&Secret>) -> Result<Certified> {
    let err = |name: &str, reason: String| Error::Sds {
        name: name.to_string(),
        reason,
    };
    let name = cert.name.as_str();
    let tls = match &cert.r#type {
        Some(Type::TlsCertificate(tls)) => tls,
        other => {
            return Err(err(
                name,
                format!(
                    "is {}, not a tls_certificate; give the secret holding the certificate chain and key (Istio's `default`)",
                    kind(other)
                ),
            ));
        }
    };
    let chain_pem = match &tls.certificate_chain {
        Some(ds) => read(ds).map_err(|e| err(name, format!("certificate_chain: {e}")))?,
        None => {
            return Err(err(
                name,
                "has no certificate_chain (pkcs12 and private key providers are not supported)"
                    .into(),
            ));
        }
    };
    let key_pem = match &tls.private_key {
        Some(ds) => read(ds).map_err(|e| err(name, format!("private_key: {e}")))?,
        None => {
            return Err(err(
                name,
                "has no private_key (private key providers are not supported)".into(),
            ));
        }
    };
    let chain =
        certs_from_pem(&chain_pem, "certificate_chain").map_err(|e| err(name, e.to_string()))?;
    let key = key_from_pem(&key_pem, "private_key").map_err(|e| err(name, e.to_string()))?;
    let key_text =
        String::from_utf8(key_pem).map_err(|_| err(name, "private_key is not PEM text".into()))?;

    let roots = match validation {
        None => Vec::new(),
        Some(v) => {
            let vname = v.name.as_str();
            let ctx = match &v.r#type {
                Some(Type::ValidationContext(ctx)) => ctx,
                other => {
                    return Err(err(
                        vname,
                        format!(
                            "is {}, not a validation_context; give the secret holding the trusted CA (Istio's `ROOTCA`)",
                            kind(other)
                        ),
                    ));
                }
            };
            let ds = ctx.trusted_ca.as_ref().ok_or_else(|| {
                err(
                    vname,
                    "has no trusted_ca; the mesh roots are needed to verify peers".into(),
                )
            })?;
            let pem = read(ds).map_err(|e| err(vname, format!("trusted_ca: {e}")))?;
            certs_from_pem(&pem, "trusted_ca").map_err(|e| err(vname, e.to_string()))?
        }
    };
    Certified::from_parts(chain, key, key_text, roots).map_err(|e| err(name, e.to_string()))
}

/// The content of a `DataSource`.
pub(crate) fn read(ds: &DataSource) -> std::result::Result<Vec<u8>, String> {
    match &ds.specifier {
        Some(Specifier::InlineBytes(b)) => Ok(b.clone()),
        Some(Specifier::InlineString(s)) => Ok(s.clone().into_bytes()),
        Some(Specifier::Filename(path)) => {
            std::fs::read(path).map_err(|e| format!("cannot read file {path}: {e}"))
        }
        Some(Specifier::EnvironmentVariable(var)) => std::env::var(var)
            .map(String::into_bytes)
            .map_err(|e| format!("environment variable {var}: {e}")),
        None => Err("the data source is empty; set inline_bytes, inline_string or filename".into()),
    }
}

fn kind(t: &Option<Type>) -> &'static str {
    match t {
        None => "empty",
        Some(Type::TlsCertificate(_)) => "a tls_certificate",
        Some(Type::SessionTicketKeys(_)) => "session_ticket_keys",
        Some(Type::ValidationContext(_)) => "a validation_context",
        Some(Type::GenericSecret(_)) => "a generic_secret",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        CertificateValidationContext, TlsCertificate,
    };

    const ID: &str = "spiffe://cluster.local/ns/default/sa/reviews";

    /// (root PEM, leaf chain PEM, leaf key PEM) from a fresh CA.
    fn pki(san: &str) -> (String, String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let root = p.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(p, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut lp = rcgen::CertificateParams::default();
        lp.subject_alt_names = vec![rcgen::SanType::URI(san.try_into().unwrap())];
        let leaf = lp.signed_by(&key, &issuer).unwrap();
        (root.pem(), leaf.pem(), key.serialize_pem())
    }

    fn inline_bytes(s: &str) -> Option<DataSource> {
        Some(DataSource {
            specifier: Some(Specifier::InlineBytes(s.as_bytes().to_vec())),
            ..Default::default()
        })
    }

    fn inline_string(s: &str) -> Option<DataSource> {
        Some(DataSource {
            specifier: Some(Specifier::InlineString(s.into())),
            ..Default::default()
        })
    }

    fn cert_secret(chain: Option<DataSource>, key: Option<DataSource>) -> Secret {
        Secret {
            name: "default".into(),
            r#type: Some(Type::TlsCertificate(TlsCertificate {
                certificate_chain: chain,
                private_key: key,
                ..Default::default()
            })),
        }
    }

    fn root_secret(ca: Option<DataSource>) -> Secret {
        Secret {
            name: "ROOTCA".into(),
            r#type: Some(Type::ValidationContext(CertificateValidationContext {
                trusted_ca: ca,
                ..Default::default()
            })),
        }
    }

    #[test]
    fn inline_secrets_become_a_certified_identity() {
        let (root, chain, key) = pki(ID);
        let c = from_sds(
            &cert_secret(inline_bytes(&chain), inline_string(&key)),
            Some(&root_secret(inline_string(&root))),
        )
        .unwrap();
        assert_eq!(c.spiffe_id, ID);
        assert_eq!(c.certs.len(), 1);
        assert_eq!(c.roots.len(), 1);
        assert_eq!(c.key_pem, key);
        assert_eq!(
            c.roots_pem.replace("\r\n", "\n"),
            root.replace("\r\n", "\n")
        );
        assert!(c.not_before < c.not_after);
        // The result is usable for both TLS sides.
        super::super::tls::client_config(&c, &[ID.into()], &["h2"]).unwrap();
        super::super::tls::server_config(&c, true, &[]).unwrap();

        let without_roots =
            from_sds(&cert_secret(inline_bytes(&chain), inline_bytes(&key)), None).unwrap();
        assert!(without_roots.roots.is_empty());
    }

    #[test]
    fn files_are_read() {
        let (root, chain, key) = pki(ID);
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, body: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            Some(DataSource {
                specifier: Some(Specifier::Filename(p.display().to_string())),
                ..Default::default()
            })
        };
        let c = from_sds(
            &cert_secret(file("cert-chain.pem", &chain), file("key.pem", &key)),
            Some(&root_secret(file("root-cert.pem", &root))),
        )
        .unwrap();
        assert_eq!(c.spiffe_id, ID);

        let missing = DataSource {
            specifier: Some(Specifier::Filename("/nonexistent/cert.pem".into())),
            ..Default::default()
        };
        let err = from_sds(&cert_secret(Some(missing), inline_bytes(&key)), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("default") && err.contains("/nonexistent/cert.pem"),
            "{err}"
        );
    }

    #[test]
    fn bad_secrets_are_refused_with_the_reason() {
        let (root, chain, key) = pki(ID);
        let (other_root, _, other_key) = pki(ID);
        let cases: Vec<(Secret, Option<Secret>, &str)> = vec![
            (
                root_secret(inline_string(&root)),
                None,
                "not a tls_certificate",
            ),
            (
                cert_secret(None, inline_bytes(&key)),
                None,
                "no certificate_chain",
            ),
            (
                cert_secret(inline_bytes(&chain), None),
                None,
                "no private_key",
            ),
            (
                cert_secret(inline_bytes("junk"), inline_bytes(&key)),
                None,
                "no CERTIFICATE block",
            ),
            (
                cert_secret(inline_bytes(&chain), inline_bytes("junk")),
                None,
                "private_key",
            ),
            (
                cert_secret(inline_bytes(&chain), inline_bytes(&other_key)),
                None,
                "does not match",
            ),
            (
                cert_secret(inline_bytes(&chain), inline_bytes(&key)),
                Some(root_secret(inline_string(&other_root))),
                "does not verify to the mesh roots",
            ),
            (
                cert_secret(inline_bytes(&chain), inline_bytes(&key)),
                Some(root_secret(None)),
                "no trusted_ca",
            ),
            (
                cert_secret(inline_bytes(&chain), inline_bytes(&key)),
                Some(cert_secret(inline_bytes(&chain), inline_bytes(&key))),
                "not a validation_context",
            ),
            (
                cert_secret(Some(DataSource::default()), inline_bytes(&key)),
                None,
                "data source is empty",
            ),
        ];
        for (cert, validation, want) in cases {
            let err = from_sds(&cert, validation.as_ref())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "want {want:?} in {err}");
        }
    }
}
