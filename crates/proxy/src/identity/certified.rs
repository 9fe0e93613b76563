//! A checked workload certificate: chain, key and mesh roots, in both PEM and
//! DER, with the identity and validity read from the leaf.
//!
//! [`Certified`] values are only built here, by [`Certified::from_parts`], which
//! checks that the key is the leaf's, and (when roots are given) that the chain
//! verifies to them now. The CA path adds the identity check
//! ([`Certified::expect_identity`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::ParsedCertificate;
use rustls_pki_types::pem::PemObject;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{Error, Result};

/// A workload certificate ready for TLS.
pub struct Certified {
    /// Our chain in PEM, leaf first (leaf and intermediates; the root is in
    /// `roots_pem`).
    pub chain_pem: String,
    /// Our private key in PEM (PKCS#8 when generated here).
    pub key_pem: String,
    /// The mesh roots in PEM: what peers' chains are verified against.
    pub roots_pem: String,
    /// The leaf's first `spiffe://` URI SAN; empty only for an SDS certificate
    /// that has none (e.g. a gateway credential).
    pub spiffe_id: String,
    /// Start of the leaf's validity.
    pub not_before: SystemTime,
    /// End of the leaf's validity.
    pub not_after: SystemTime,
    /// Our chain in DER, leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// Our private key in DER.
    pub key: PrivateKeyDer<'static>,
    /// The mesh roots in DER.
    pub roots: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for Certified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certified")
            .field("spiffe_id", &self.spiffe_id)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("chain_len", &self.certs.len())
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

impl Certified {
    /// Checks and assembles a certificate: `chain` (leaf first) must be
    /// non-empty, `key` must be the leaf's private key, and when `roots` is not
    /// empty the chain must verify to them at the current time. `key_pem` is
    /// kept as given (pass the PEM `key` was read from).
    pub fn from_parts(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        key_pem: String,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Certified> {
        let leaf_der = chain.first().ok_or_else(|| Error::Pem {
            what: "the certificate chain".into(),
            detail: "holds no certificate".into(),
        })?;
        let leaf = Leaf::parse(leaf_der)?;
        check_key_matches(&key, &leaf.spki)?;
        if !roots.is_empty() {
            verify_chain(&chain, &roots, SystemTime::now())?;
        }
        Ok(Certified {
            chain_pem: chain.iter().map(|c| pem("CERTIFICATE", c)).collect(),
            key_pem,
            roots_pem: roots.iter().map(|c| pem("CERTIFICATE", c)).collect(),
            spiffe_id: leaf
                .uris
                .into_iter()
                .find(|u| is_spiffe(u))
                .unwrap_or_default(),
            not_before: leaf.not_before,
            not_after: leaf.not_after,
            certs: chain,
            key,
            roots,
        })
    }

    /// Fails unless the leaf's URI SAN is exactly `spiffe_id`.
    pub fn expect_identity(&self, spiffe_id: &str) -> Result<()> {
        let uris = Leaf::parse(&self.certs[0])?.uris;
        if uris.len() == 1 && uris[0] == spiffe_id {
            return Ok(());
        }
        Err(Error::Response(format!(
            "the certificate names {uris:?}, but {spiffe_id} was asked for"
        )))
    }

    /// When to renew: `ratio` of the way from `not_before` to `not_after`.
    pub fn renew_at(&self, ratio: f64) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life.mul_f64(ratio.clamp(0.0, 1.0))
    }

    /// Whether the leaf is valid at `now`.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

/// What the checks need from a leaf certificate.
pub(crate) struct Leaf {
    pub(crate) uris: Vec<String>,
    pub(crate) spki: Vec<u8>,
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
}

impl Leaf {
    pub(crate) fn parse(der: &[u8]) -> Result<Leaf> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| Error::Pem {
            what: "the leaf certificate".into(),
            detail: format!("not DER X.509: {e}"),
        })?;
        let time = |t: x509_parser::time::ASN1Time| {
            let secs = t.timestamp();
            if secs >= 0 {
                UNIX_EPOCH + Duration::from_secs(secs as u64)
            } else {
                UNIX_EPOCH
            }
        };
        Ok(Leaf {
            uris: uri_sans(&cert),
            spki: cert.public_key().raw.to_vec(),
            not_before: time(cert.validity().not_before),
            not_after: time(cert.validity().not_after),
        })
    }
}

/// The URI SANs of a certificate, in order.
pub(crate) fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                if let GeneralName::URI(uri) = name {
                    out.push(uri.to_string());
                }
            }
        }
    }
    out
}

/// Whether a URI is a SPIFFE ID (scheme compared case-insensitively).
pub(crate) fn is_spiffe(uri: &str) -> bool {
    uri.get(..9)
        .is_some_and(|s| s.eq_ignore_ascii_case("spiffe://"))
}

/// The crypto provider every identity config uses (aws-lc-rs), independent of
/// the process default.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The private key must be the one the leaf certifies.
fn check_key_matches(key: &PrivateKeyDer<'static>, leaf_spki: &[u8]) -> Result<()> {
    let signing = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|source| Error::Tls {
            what: "the private key is not usable",
            source,
        })?;
    match signing.public_key() {
        Some(spki) if spki.as_ref() == leaf_spki => Ok(()),
        Some(_) => Err(Error::Pem {
            what: "the private key".into(),
            detail: "does not match the leaf certificate's public key".into(),
        }),
        None => Err(Error::Pem {
            what: "the private key".into(),
            detail: "its public key cannot be derived to compare with the leaf's".into(),
        }),
    }
}

/// Verifies `chain` (leaf first) up to one of `roots` at `now`, as a TLS
/// server certificate would be, without a name check.
pub(crate) fn verify_chain(
    chain: &[CertificateDer<'_>],
    roots: &[CertificateDer<'static>],
    now: SystemTime,
) -> Result<()> {
    let store = root_store(roots)?;
    let leaf = ParsedCertificate::try_from(&chain[0]).map_err(|source| Error::Tls {
        what: "the leaf certificate cannot be parsed",
        source,
    })?;
    let now = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &leaf,
        &store,
        &chain[1..],
        now,
        provider().signature_verification_algorithms.all,
    )
    .map_err(|source| Error::Tls {
        what: "the certificate chain does not verify to the mesh roots",
        source,
    })
}

/// A rustls root store from DER roots; a root that is not a CA certificate is
/// an error.
pub(crate) fn root_store(roots: &[CertificateDer<'static>]) -> Result<rustls::RootCertStore> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).map_err(|source| Error::Tls {
            what: "a mesh root is not a usable trust anchor",
            source,
        })?;
    }
    if store.is_empty() {
        return Err(Error::Pem {
            what: "the mesh roots".into(),
            detail: "no root certificate".into(),
        });
    }
    Ok(store)
}

/// Every certificate in PEM text (any number of blocks).
pub(crate) fn certs_from_pem(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            what: what.into(),
            detail: format!("not valid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(Error::Pem {
            what: what.into(),
            detail: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

/// A private key from PEM text (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn key_from_pem(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| Error::Pem {
        what: what.into(),
        detail: format!("no usable private key: {e}"),
    })
}

/// PEM text of one DER object, with 64-character lines and LF endings.
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]);
            } else {
                b64.push(b'=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_matches_rcgen() {
        for len in 0..5 {
            let mut p = rcgen::CertificateParams::new(vec!["a".repeat(len + 1)]).unwrap();
            p.distinguished_name = rcgen::DistinguishedName::new();
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = p.self_signed(&key).unwrap();
            assert_eq!(
                pem("CERTIFICATE", cert.der()),
                cert.pem().replace("\r\n", "\n")
            );
        }
        assert_eq!(
            pem("X", b"ab"),
            "-----BEGIN X-----\nYWI=\n-----END X-----\n"
        );
        assert_eq!(pem("X", b"a"), "-----BEGIN X-----\nYQ==\n-----END X-----\n");
    }

    #[test]
    fn a_key_that_is_not_the_leafs_is_refused() {
        let key = rcgen::KeyPair::generate().unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://cluster.local/ns/a/sa/b".try_into().unwrap(),
        )];
        let cert = p.self_signed(&key).unwrap();
        let der = |k: &rcgen::KeyPair| PrivateKeyDer::Pkcs8(k.serialize_der().into());
        let ok = Certified::from_parts(
            vec![cert.der().clone()],
            der(&key),
            key.serialize_pem(),
            vec![],
        )
        .unwrap();
        assert_eq!(ok.spiffe_id, "spiffe://cluster.local/ns/a/sa/b");
        ok.expect_identity("spiffe://cluster.local/ns/a/sa/b")
            .unwrap();
        assert!(
            ok.expect_identity("spiffe://cluster.local/ns/a/sa/c")
                .is_err()
        );
        let err = Certified::from_parts(
            vec![cert.der().clone()],
            der(&other),
            other.serialize_pem(),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("does not match"), "{err}");
    }
}
