//! Asking a CA for a certificate: the key pair, the CSR, and Istio's
//! `CreateCertificate` call.
//!
//! [`request`] is one whole attempt, whatever the CA: generate a key of the
//! configured [`KeyType`], build a CSR whose only SAN is the SPIFFE ID, hand
//! the PEM CSR to a [`CaClient`], and check the chain it returns into a
//! [`Certified`]. [`IstioCaClient`] is the real transport: a TLS gRPC channel to
//! `istio.v1.auth.IstioCertificateService` with the bearer token (re-read for
//! every call) and the optional `ClusterID` header.

use std::time::Duration;

use common::pb::istio_ca::IstioCertificateRequest;
use common::pb::istio_ca::istio_certificate_service_client::IstioCertificateServiceClient;
use futures::future::BoxFuture;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use super::certified::{Certified, certs_from_pem};
use super::{Error, IdentityConfig, KeyType, Result, TokenSource};

/// How long connecting to the CA may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `CreateCertificate` call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A CA that signs CSRs: the real citadel/istiod over gRPC, or a test double.
pub trait CaClient: Send + Sync {
    /// Sends the PEM `csr` asking for `ttl`; returns the chain the CA signed,
    /// leaf first and root last, one PEM string per element (an element may
    /// hold several certificates).
    fn sign<'a>(&'a self, csr_pem: &'a str, ttl: Duration) -> BoxFuture<'a, Result<Vec<String>>>;
}

/// Istio's CA API over TLS, as istio-agent calls it.
#[derive(Debug, Clone)]
pub struct IstioCaClient {
    addr: String,
    root_pem: Vec<u8>,
    token: TokenSource,
    cluster_id: Option<String>,
}

impl IstioCaClient {
    /// The client a config describes.
    pub fn new(config: &IdentityConfig) -> Self {
        IstioCaClient {
            addr: config.ca_addr.clone(),
            root_pem: config.ca_root_pem.clone(),
            token: config.token.clone(),
            cluster_id: config.cluster_id.clone(),
        }
    }

    /// The address with its scheme: `https://` is added when none is given,
    /// and plain `http://` is refused (the token must not travel in clear).
    fn url(&self) -> Result<String> {
        let addr = self.addr.trim();
        if addr.starts_with("http://") {
            return Err(Error::Config {
                what: "ca_addr",
                reason: format!(
                    "{addr:?} is plaintext; the CA must be reached over TLS, use https://"
                ),
            });
        }
        if addr.is_empty() {
            return Err(Error::Config {
                what: "ca_addr",
                reason: "empty; give the CA's address, e.g. https://istiod.istio-system.svc:15012"
                    .into(),
            });
        }
        Ok(if addr.starts_with("https://") {
            addr.to_string()
        } else {
            format!("https://{addr}")
        })
    }

    async fn call(&self, csr_pem: &str, ttl: Duration) -> Result<Vec<String>> {
        let url = self.url()?;
        let token = self.token.read()?;
        let mut bearer: MetadataValue<_> =
            format!("Bearer {token}")
                .parse()
                .map_err(|_| Error::Config {
                    what: "token",
                    reason: "the token holds characters not allowed in a header value".into(),
                })?;
        bearer.set_sensitive(true);
        if certs_from_pem(&self.root_pem, "ca_root_pem").is_err() {
            return Err(Error::Config {
                what: "ca_root_pem",
                reason: "holds no PEM certificate; give the root that signed the CA's serving certificate".into(),
            });
        }
        let connect_err = |e: tonic::transport::Error| Error::Connect {
            addr: url.clone(),
            detail: error_chain(&e),
        };
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| Error::Config {
                what: "ca_addr",
                reason: format!("{url:?} is not a URI: {e}"),
            })?
            .tls_config(
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.root_pem)),
            )
            .map_err(connect_err)?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        let channel = endpoint.connect().await.map_err(connect_err)?;

        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: csr_pem.to_string(),
            validity_duration: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
            metadata: None,
        });
        request.metadata_mut().insert("authorization", bearer);
        if let Some(cluster) = self.cluster_id.as_deref().filter(|c| !c.is_empty()) {
            let value = cluster.parse().map_err(|_| Error::Config {
                what: "cluster_id",
                reason: format!("{cluster:?} is not a valid header value"),
            })?;
            request
                .metadata_mut()
                .insert(MetadataKey::from_static("clusterid"), value);
        }
        let response = IstioCertificateServiceClient::new(channel)
            .create_certificate(request)
            .await
            .map_err(|status| Error::Rpc {
                addr: url.clone(),
                code: status.code(),
                message: status.message().to_string(),
            })?;
        Ok(response.into_inner().cert_chain)
    }
}

impl CaClient for IstioCaClient {
    fn sign<'a>(&'a self, csr_pem: &'a str, ttl: Duration) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(self.call(csr_pem, ttl))
    }
}

/// An error and its causes on one line (tonic's transport errors hide the
/// useful part, e.g. the certificate problem, in their sources).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// A fresh key pair and a PEM CSR asking for `spiffe_id` as its only SAN.
pub fn generate_csr(spiffe_id: &str, key: KeyType) -> Result<(rcgen::KeyPair, String)> {
    let alg = match key {
        KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyType::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
    };
    let pair = rcgen::KeyPair::generate_for(alg).map_err(Error::KeyGen)?;
    let uri = rcgen::string::Ia5String::try_from(spiffe_id).map_err(|e| Error::Config {
        what: "spiffe_id",
        reason: format!("{spiffe_id:?} cannot be a URI SAN: {e}"),
    })?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
    let csr = params.serialize_request(&pair).map_err(Error::KeyGen)?;
    let pem = csr.pem().map_err(Error::KeyGen)?;
    Ok((pair, pem))
}

/// One whole attempt: key, CSR, the CA's signature, and the checks on the
/// answer (identity, key, chain to the answer's root).
pub async fn request(
    ca: &dyn CaClient,
    spiffe_id: &str,
    key: KeyType,
    ttl: Duration,
) -> Result<Certified> {
    spiffe_id
        .parse::<common::spiffe::Identity>()
        .map_err(|e| Error::Config {
            what: "spiffe_id",
            reason: e.to_string(),
        })?;
    let id = spiffe_id.to_string();
    let (pair, csr) = tokio::task::spawn_blocking(move || generate_csr(&id, key))
        .await
        .map_err(|e| Error::Config {
            what: "key",
            reason: format!("key generation did not finish: {e}"),
        })??;
    let answer = ca.sign(&csr, ttl).await?;
    let mut chain = Vec::new();
    for (i, pem) in answer.iter().enumerate() {
        let certs = certs_from_pem(pem.as_bytes(), &format!("cert_chain[{i}]"))
            .map_err(|e| Error::Response(e.to_string()))?;
        chain.extend(certs);
    }
    from_answer(chain, pair, spiffe_id)
}

/// The CA's chain (leaf first, root last) and our key as a checked
/// [`Certified`]: the root is split off as the mesh root.
fn from_answer(
    mut chain: Vec<CertificateDer<'static>>,
    pair: rcgen::KeyPair,
    spiffe_id: &str,
) -> Result<Certified> {
    if chain.len() < 2 {
        return Err(Error::Response(format!(
            "{} certificate(s) returned; expected the leaf followed by the chain up to the root",
            chain.len()
        )));
    }
    let root = chain.pop().into_iter().collect::<Vec<_>>();
    let key = PrivateKeyDer::Pkcs8(pair.serialize_der().into());
    let certified = Certified::from_parts(chain, key, pair.serialize_pem(), root)
        .map_err(|e| Error::Response(e.to_string()))?;
    certified.expect_identity(spiffe_id)?;
    Ok(certified)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "spiffe://cluster.local/ns/default/sa/reviews";

    /// A CA in memory that signs whatever it is asked, for checking the
    /// client's own checks.
    struct Fake {
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
        root_pem: String,
        san: Option<String>,
        drop_root: bool,
        other_root: Option<String>,
    }

    impl Fake {
        fn new() -> Fake {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut p = rcgen::CertificateParams::default();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let root = p.self_signed(&key).unwrap();
            Fake {
                issuer: rcgen::Issuer::new(p, key),
                root_pem: root.pem(),
                san: None,
                drop_root: false,
                other_root: None,
            }
        }
    }

    impl CaClient for Fake {
        fn sign<'a>(&'a self, csr_pem: &'a str, _: Duration) -> BoxFuture<'a, Result<Vec<String>>> {
            Box::pin(async move {
                let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
                if let Some(san) = &self.san {
                    csr.params.subject_alt_names =
                        vec![rcgen::SanType::URI(san.as_str().try_into().unwrap())];
                }
                let leaf = csr.signed_by(&self.issuer).unwrap();
                let mut out = vec![leaf.pem()];
                if !self.drop_root {
                    out.push(self.other_root.clone().unwrap_or(self.root_pem.clone()));
                }
                Ok(out)
            })
        }
    }

    #[tokio::test]
    async fn both_key_types_make_csrs_the_ca_signs() {
        let ca = Fake::new();
        for key in [KeyType::EcdsaP256, KeyType::Rsa2048] {
            let c = request(&ca, ID, key, Duration::from_secs(60))
                .await
                .unwrap();
            assert_eq!(c.spiffe_id, ID);
            assert_eq!(c.certs.len(), 1);
            assert_eq!(c.roots.len(), 1);
        }
    }

    #[tokio::test]
    async fn answers_for_another_identity_or_without_root_are_refused() {
        let mut ca = Fake::new();
        ca.san = Some("spiffe://cluster.local/ns/default/sa/other".into());
        let err = request(&ca, ID, KeyType::EcdsaP256, Duration::from_secs(60))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("but spiffe://cluster.local/ns/default/sa/reviews was asked for"),
            "{err}"
        );

        let mut ca = Fake::new();
        ca.drop_root = true;
        let err = request(&ca, ID, KeyType::EcdsaP256, Duration::from_secs(60))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("1 certificate(s) returned"), "{err}");

        let mut ca = Fake::new();
        ca.other_root = Some(Fake::new().root_pem);
        let err = request(&ca, ID, KeyType::EcdsaP256, Duration::from_secs(60))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not verify to the mesh roots"), "{err}");

        let err = request(
            &ca,
            "spiffe://cluster.local/ns/x",
            KeyType::EcdsaP256,
            Duration::from_secs(60),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("spiffe_id"), "{err}");
    }
}
