//! Certificate signing requests: the untrusted input of the CA.
//!
//! [`parse`] takes the PEM text from the request and returns a [`Csr`] only when
//! everything the CA relies on holds: the text is within [`MAX_CSR_BYTES`], holds
//! exactly one `CERTIFICATE REQUEST` block of well-formed PKCS#10, its signature
//! verifies with its own public key (the requester holds the private key), and that
//! key is of an accepted algorithm and size. The requested SANs are returned for the
//! caller-identity check; every other requested attribute (subject, key usages,
//! extensions) is ignored, because the CA decides what a workload certificate holds.

use std::net::IpAddr;

use rustls_pki_types::pem::{PemObject, SectionKind};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

/// The largest CSR accepted, in bytes of PEM text. A P-256 CSR is under 1 KiB and an
/// RSA-4096 one under 4 KiB.
pub const MAX_CSR_BYTES: usize = 32 * 1024;

/// A parsed, signature-checked CSR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csr {
    /// The requester's public key as DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// The key's algorithm for the ledger, e.g. `ECDSA-P256` or `RSA-2048`.
    pub key_algorithm: String,
    /// The subject alternative names requested, in order.
    pub sans: Vec<San>,
}

/// A requested subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    /// A URI, e.g. a SPIFFE ID.
    Uri(String),
    /// A DNS name.
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
    /// An e-mail address.
    Email(String),
    /// Any other kind, described.
    Other(String),
}

impl std::fmt::Display for San {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            San::Uri(u) => write!(f, "URI:{u}"),
            San::Dns(d) => write!(f, "DNS:{d}"),
            San::Ip(ip) => write!(f, "IP:{ip}"),
            San::Email(e) => write!(f, "email:{e}"),
            San::Other(o) => write!(f, "{o}"),
        }
    }
}

/// Why a CSR was refused. Each message says what to send instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    /// The request carried no CSR.
    #[error("the request has no CSR: set `csr` to a PEM-encoded PKCS#10 certificate request")]
    Empty,
    /// The CSR is larger than [`MAX_CSR_BYTES`].
    #[error("the CSR is {0} bytes, over the limit of {MAX_CSR_BYTES}")]
    TooLarge(usize),
    /// The text is not one PEM `CERTIFICATE REQUEST` block.
    #[error("the CSR is not PEM: {0}; send one `-----BEGIN CERTIFICATE REQUEST-----` block")]
    Pem(String),
    /// The DER inside is not PKCS#10.
    #[error("the CSR is not a valid PKCS#10 request: {0}")]
    Der(String),
    /// The CSR's signature does not verify with its own public key.
    #[error("the CSR's signature does not verify with its public key")]
    Signature,
    /// The key algorithm or size is not accepted.
    #[error("the CSR's key is {0}; use ECDSA P-256 or P-384, or RSA of 2048 to 4096 bits")]
    Key(String),
}

/// Parses and verifies a PEM CSR.
pub fn parse(pem: &str) -> Result<Csr, CsrError> {
    if pem.trim().is_empty() {
        return Err(CsrError::Empty);
    }
    if pem.len() > MAX_CSR_BYTES {
        return Err(CsrError::TooLarge(pem.len()));
    }
    let der = single_csr_block(pem.as_bytes())?;
    let (rest, req) =
        X509CertificationRequest::from_der(&der).map_err(|e| CsrError::Der(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Der(format!(
            "{} bytes after the request",
            rest.len()
        )));
    }
    req.verify_signature().map_err(|_| CsrError::Signature)?;

    let info = &req.certification_request_info;
    let key_algorithm = key_algorithm(&info.subject_pki)?;
    let mut sans = Vec::new();
    if let Some(extensions) = req.requested_extensions() {
        for ext in extensions {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                sans.extend(san.general_names.iter().map(san_of));
            }
        }
    }
    Ok(Csr {
        spki_der: info.subject_pki.raw.to_vec(),
        key_algorithm,
        sans,
    })
}

fn single_csr_block(pem: &[u8]) -> Result<Vec<u8>, CsrError> {
    let mut found = None;
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        let (kind, der) = section.map_err(|e| CsrError::Pem(e.to_string()))?;
        if kind != SectionKind::Csr {
            return Err(CsrError::Pem(format!("found a {kind:?} block")));
        }
        if found.replace(der).is_some() {
            return Err(CsrError::Pem(
                "more than one CERTIFICATE REQUEST block".into(),
            ));
        }
    }
    found.ok_or_else(|| CsrError::Pem("no CERTIFICATE REQUEST block".into()))
}

fn key_algorithm(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<String, CsrError> {
    match spki.parsed() {
        Ok(PublicKey::EC(ec)) => match ec.key_size() {
            256 => Ok("ECDSA-P256".into()),
            384 => Ok("ECDSA-P384".into()),
            n => Err(CsrError::Key(format!("an EC key of {n} bits"))),
        },
        Ok(PublicKey::RSA(rsa)) => match rsa.key_size() {
            n @ 2048..=4096 => Ok(format!("RSA-{n}")),
            n => Err(CsrError::Key(format!("an RSA key of {n} bits"))),
        },
        Ok(other) => Err(CsrError::Key(
            format!("{other:?}").chars().take(40).collect(),
        )),
        Err(e) => Err(CsrError::Key(format!("unreadable ({e})"))),
    }
}

fn san_of(name: &GeneralName<'_>) -> San {
    match name {
        GeneralName::URI(u) => San::Uri((*u).to_string()),
        GeneralName::DNSName(d) => San::Dns((*d).to_string()),
        GeneralName::RFC822Name(e) => San::Email((*e).to_string()),
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => San::Ip(IpAddr::from(<[u8; 4]>::try_from(*bytes).expect("4 bytes"))),
            16 => San::Ip(IpAddr::from(
                <[u8; 16]>::try_from(*bytes).expect("16 bytes"),
            )),
            n => San::Other(format!("IP of {n} bytes")),
        },
        other => San::Other(format!("{other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    fn csr_pem(key: &KeyPair, sans: Vec<SanType>) -> String {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn reads_key_and_sans() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pem = csr_pem(
            &key,
            vec![
                SanType::URI("spiffe://cluster.local/ns/a/sa/b".try_into().unwrap()),
                SanType::DnsName("b.a.svc".try_into().unwrap()),
                SanType::IpAddress("10.0.0.1".parse().unwrap()),
            ],
        );
        let csr = parse(&pem).unwrap();
        assert_eq!(csr.key_algorithm, "ECDSA-P256");
        assert_eq!(
            csr.sans,
            vec![
                San::Uri("spiffe://cluster.local/ns/a/sa/b".into()),
                San::Dns("b.a.svc".into()),
                San::Ip("10.0.0.1".parse().unwrap()),
            ]
        );
        assert!(csr.spki_der.ends_with(key.public_key_raw()));
    }

    #[test]
    fn refuses_tampered_and_malformed_input() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let pem = csr_pem(
            &key,
            vec![SanType::URI("spiffe://x/ns/a/sa/b".try_into().unwrap())],
        );
        assert_eq!(parse(&pem).unwrap().key_algorithm, "ECDSA-P384");

        // Flip one byte of the SAN inside the signed part: the signature breaks.
        let der = single_csr_block(pem.as_bytes()).unwrap();
        let at = der.windows(6).position(|w| w == b"spiffe").unwrap();
        let mut bad = der.clone();
        bad[at] = b'S';
        let tampered_pem = pem_of(&bad);
        assert_eq!(parse(&tampered_pem), Err(CsrError::Signature));

        assert_eq!(parse(""), Err(CsrError::Empty));
        assert!(matches!(parse("hello"), Err(CsrError::Pem(_))));
        assert!(matches!(
            parse(&format!("{pem}{pem}")),
            Err(CsrError::Pem(_))
        ));
        assert!(matches!(
            parse(&pem_of(b"\x30\x03\x02\x01\x00")),
            Err(CsrError::Der(_))
        ));
        let huge = "A".repeat(MAX_CSR_BYTES + 1);
        assert_eq!(parse(&huge), Err(CsrError::TooLarge(MAX_CSR_BYTES + 1)));
        let cert = rcgen::CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .pem();
        assert!(matches!(parse(&cert), Err(CsrError::Pem(m)) if m.contains("Certificate")));
    }

    fn pem_of(der: &[u8]) -> String {
        use std::fmt::Write;
        let b64 = base64_encode(der);
        let mut out = String::from("-----BEGIN CERTIFICATE REQUEST-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            writeln!(out, "{}", std::str::from_utf8(chunk).unwrap()).unwrap();
        }
        out.push_str("-----END CERTIFICATE REQUEST-----\n");
        out
    }

    fn base64_encode(data: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in data.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= c.len() {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(s in "\\PC{0,200}") {
            let _ = parse(&s);
        }

        #[test]
        fn never_panics_on_arbitrary_der(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&pem_of(&bytes));
        }
    }
}
